# -*- test-case-name: tests.unit.test_access -*-
"""
Who may do what: the roles of control points and the permission rules for
port mappings.

gatewayd has no DeviceProtection, so a control point's role comes from its
address: Admin when it lies in C{[upnp] admin_hosts}, Public otherwise
(WANIPConnection-2.md section 5). Each action needs a role (L{ROLES});
mapping actions are further limited by secure mode (a Public control point
may only map to, delete and manage its own address) and by the permission
rules (first match wins, no match is a denial).
"""

from __future__ import annotations

import enum
from ipaddress import IPv4Address, ip_address
from typing import Mapping

from gatewayd.config import UPnPConfig
from gatewayd.errors import ActionNotAuthorized


class Role(enum.IntEnum):
    """
    The roles of IGD:2 that gatewayd can tell apart without
    DeviceProtection (Basic needs authentication, so nobody has it).
    """

    PUBLIC = 0
    ADMIN = 2


#: The role each action needs, per service type name. Actions not listed
#: are open to every LAN control point. Mapping actions are open here and
#: limited per mapping by L{AccessPolicy.checkMapping}.
ROLES: Mapping[str, Mapping[str, Role]] = {
    "WANIPConnection": {
        "SetConnectionType": Role.ADMIN,
        "RequestConnection": Role.ADMIN,
        "RequestTermination": Role.ADMIN,
        "ForceTermination": Role.ADMIN,
        "SetAutoDisconnectTime": Role.ADMIN,
        "SetIdleDisconnectTime": Role.ADMIN,
        "SetWarnDisconnectDelay": Role.ADMIN,
    },
    "WANCommonInterfaceConfig": {
        "SetEnabledForInternet": Role.ADMIN,
    },
    "Layer3Forwarding": {
        "SetDefaultConnectionService": Role.ADMIN,
    },
}


def _address(text: str) -> IPv4Address | None:
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv4Address):
        return address
    return address.ipv4_mapped


class AccessPolicy:
    """
    The configured access rules.

    @ivar reserved: C{(protocol, port)} pairs the gateway itself uses, which
        no mapping may take (729).
    """

    def __init__(self, config: UPnPConfig, reserved: frozenset[tuple[str, int]] = frozenset()) -> None:
        self._config = config
        self.reserved = reserved

    def role(self, requester: str) -> Role:
        """
        @param requester: the control point's address (the TCP peer).
        """
        address = _address(requester)
        if address is not None and any(address in n for n in self._config.adminHosts):
            return Role.ADMIN
        return Role.PUBLIC

    def checkAction(self, serviceType: str, action: str, requester: str) -> None:
        """
        @raise ActionNotAuthorized: C{requester} lacks the role C{action}
            needs.
        """
        needed = ROLES.get(serviceType, {}).get(action, Role.PUBLIC)
        if needed is not Role.PUBLIC and self.role(requester) < needed:
            raise ActionNotAuthorized(f"{action} needs the {needed.name.title()} role")

    def manages(self, requester: str, internalClient: str) -> bool:
        """
        @return: whether C{requester} may change (or delete) a mapping to
            C{internalClient}: its own always; others' only as Admin or with
            secure mode off.
        """
        if not self._config.secureMode or self.role(requester) is Role.ADMIN:
            return True
        return _address(requester) == _address(internalClient)

    def portAllowed(self, externalPort: int, internalClient: str, internalPort: int) -> bool:
        """
        @return: whether the permission rules allow this mapping (the first
            matching rule decides; none matching means no).
        """
        client = _address(internalClient)
        if client is None:
            return False
        for rule in self._config.rules:
            if rule.matches(externalPort, client, internalPort):
                return rule.allow
        return False

    def anyExternalPortAllowed(self, internalClient: str, internalPort: int) -> bool:
        """
        @return: whether some external port may be mapped to
            C{internalClient:internalPort}: the first rule that matches the
            client and internal port for some external port allows it.
        """
        client = _address(internalClient)
        if client is None:
            return False
        for rule in self._config.rules:
            if client in rule.clients and rule.internalPorts[0] <= internalPort <= rule.internalPorts[1]:
                if rule.allow:
                    return True
                if rule.externalPorts == (0, 65535):
                    return False
        return False

    def checkMapping(
        self, requester: str, externalPort: int, internalClient: str, internalPort: int
    ) -> None:
        """
        Check that C{requester} may map C{externalPort} to
        C{internalClient:internalPort}.

        @raise ActionNotAuthorized: secure mode or the rules forbid it.
        """
        if not self.manages(requester, internalClient):
            raise ActionNotAuthorized(f"{requester} may only map ports to itself")
        if not self.portAllowed(externalPort, internalClient, internalPort):
            raise ActionNotAuthorized(
                f"no rule allows {externalPort} -> {internalClient}:{internalPort}"
            )

    def externalPortUsable(self, protocol: str, externalPort: int, internalClient: str, internalPort: int) -> bool:
        """
        @return: whether AddAnyPortMapping may hand out C{externalPort}: not
            one of the gateway's own, and allowed by the rules.
        """
        return (protocol, externalPort) not in self.reserved and self.portAllowed(
            externalPort, internalClient, internalPort
        )
