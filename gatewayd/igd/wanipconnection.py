# -*- test-case-name: tests.unit.test_wanipconnection -*-
"""
The 21 actions of one WAN's WANIPConnection:2 service.

This module knows the service's rules (WANIPConnection-2.md sections 6 and
7, Table 51) and nothing of sockets or the kernel: the connection state
machine, the WAN's mappings and the access policy are handed in.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any, Callable, Protocol

from lxml import etree
from lxml.builder import ElementMaker

from gatewayd.errors import (
    ActionNotAuthorized,
    ArgumentValueInvalid,
    ConflictWithOtherMechanisms,
    InconsistentParameters,
    InvalidVar,
    NoPortMapsAvailable,
    NoSuchEntryInArray,
    PortMappingNotFound,
    WildCardNotPermittedInExtPort,
    WildCardNotPermittedInIntPort,
    WildCardNotPermittedInSrcIP,
)
from gatewayd.igd.access import AccessPolicy
from gatewayd.igd.mappings import WANMappings
from gatewayd.igd.portmap import PortMapping
from gatewayd.igd.types import MAX_LEASE
from gatewayd.upnp.model import XMLDocument

#: The connection types this gateway's WANs can be (spec Table 3).
POSSIBLE_CONNECTION_TYPES = "IP_Routed"

#: The most entries one GetListOfPortMappings answer holds (NewNumberOfPorts
#: 0 means "all", up to this many; ask again from the next port for more).
LIST_PAGE_SIZE = 1000

PORT_LISTING_NS = "urn:schemas-upnp-org:gw:WANIPConnection"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_P = ElementMaker(namespace=PORT_LISTING_NS, nsmap={"p": PORT_LISTING_NS, "xsi": _XSI})

#: Client quirks at the argument edge: values some control points send for
#: "any remote host" besides the spec's empty string (miniupnpd accepts "*").
WILDCARD_REMOTE_HOSTS = frozenset({"", "*"})


class WANState(Protocol):
    """
    What the IGD services read of one WAN besides its connection.
    """

    wanName: str

    @property
    def carrier(self) -> bool:
        """Whether the physical link is up."""

    def linkSpeed(self) -> int:
        """The link's speed in bit/s, 0 when the kernel does not know it."""


def _ipv4(value: str) -> bool:
    try:
        IPv4Address(value)
    except ValueError:
        return False
    return True


def _remoteHost(value: str) -> str:
    """
    @return: the remote host as stored: C{""} for any.
    @raise ArgumentValueInvalid: not empty and not an IPv4 address.
    """
    value = value.strip()
    if value in WILDCARD_REMOTE_HOSTS:
        return ""
    if not _ipv4(value):
        raise ArgumentValueInvalid(f"RemoteHost {value[:64]!r} is not an IPv4 address")
    return value


class WANIPConnectionService:
    """
    WANIPConnection:2 for one WAN.

    @ivar connection: the WAN's connection state machine.
    @ivar mappings: the WAN's L{WANMappings}.
    @ivar policy: the L{AccessPolicy}.
    """

    def __init__(
        self,
        connection: Any,
        mappings: WANMappings,
        policy: AccessPolicy,
        clock: Any,
        maxLease: int = MAX_LEASE,
    ) -> None:
        self.connection = connection
        self.mappings = mappings
        self.policy = policy
        self._clock = clock
        self._maxLease = maxLease

    # Connection control (section 6).

    def SetConnectionType(self, requester: Any, NewConnectionType: str) -> dict[str, object]:
        self.connection.setConnectionType(NewConnectionType)
        return {}

    def GetConnectionTypeInfo(self, requester: Any) -> dict[str, object]:
        return {
            "NewConnectionType": self.connection.connectionType,
            "NewPossibleConnectionTypes": self.connection.possibleConnectionTypes,
        }

    def RequestConnection(self, requester: Any) -> dict[str, object]:
        self.connection.requestConnection()
        return {}

    def RequestTermination(self, requester: Any) -> dict[str, object]:
        self.connection.requestTermination()
        return {}

    def ForceTermination(self, requester: Any) -> dict[str, object]:
        self.connection.forceTermination()
        return {}

    def SetAutoDisconnectTime(self, requester: Any, NewAutoDisconnectTime: int) -> dict[str, object]:
        self.connection.setAutoDisconnectTime(NewAutoDisconnectTime)
        return {}

    def SetIdleDisconnectTime(self, requester: Any, NewIdleDisconnectTime: int) -> dict[str, object]:
        self.connection.setIdleDisconnectTime(NewIdleDisconnectTime)
        return {}

    def SetWarnDisconnectDelay(self, requester: Any, NewWarnDisconnectDelay: int) -> dict[str, object]:
        self.connection.setWarnDisconnectDelay(NewWarnDisconnectDelay)
        return {}

    def GetStatusInfo(self, requester: Any) -> dict[str, object]:
        return {
            "NewConnectionStatus": self.connection.status,
            "NewLastConnectionError": self.connection.lastConnectionError,
            "NewUptime": self.connection.uptime(),
        }

    def GetAutoDisconnectTime(self, requester: Any) -> dict[str, object]:
        return {"NewAutoDisconnectTime": self.connection.autoDisconnectTime}

    def GetIdleDisconnectTime(self, requester: Any) -> dict[str, object]:
        return {"NewIdleDisconnectTime": self.connection.idleDisconnectTime}

    def GetWarnDisconnectDelay(self, requester: Any) -> dict[str, object]:
        return {"NewWarnDisconnectDelay": self.connection.warnDisconnectDelay}

    def GetNATRSIPStatus(self, requester: Any) -> dict[str, object]:
        return {"NewRSIPAvailable": False, "NewNATEnabled": True}

    def GetExternalIPAddress(self, requester: Any) -> dict[str, object]:
        return {"NewExternalIPAddress": self.connection.externalIPAddress}

    # Port mappings (section 7.2).

    def _entry(self, mapping: PortMapping) -> dict[str, object]:
        return {
            "NewInternalPort": mapping.internalPort,
            "NewInternalClient": mapping.internalClient,
            "NewEnabled": mapping.enabled,
            "NewPortMappingDescription": mapping.description,
            "NewLeaseDuration": mapping.remaining(self._clock.seconds()),
        }

    def GetGenericPortMappingEntry(self, requester: Any, NewPortMappingIndex: int) -> dict[str, object]:
        mapping = self.mappings.table.byIndex(NewPortMappingIndex)
        return {
            "NewRemoteHost": mapping.remoteHost,
            "NewExternalPort": mapping.externalPort,
            "NewProtocol": mapping.protocol,
            **self._entry(mapping),
        }

    def GetSpecificPortMappingEntry(
        self, requester: Any, NewRemoteHost: str, NewExternalPort: int, NewProtocol: str
    ) -> dict[str, object]:
        mapping = self.mappings.table.get((_remoteHost(NewRemoteHost), NewExternalPort, NewProtocol))
        if mapping is None:
            raise NoSuchEntryInArray(f"no mapping of {NewProtocol} {NewExternalPort}")
        return self._entry(mapping)

    def _lease(self, requested: int) -> int:
        """
        Lease 0 means the longest; longer than configured is cut to it (the
        SOAP layer already refused more than the spec's 604800 with 601).
        """
        if requested == 0 or requested > self._maxLease:
            return self._maxLease
        return requested

    def _newMapping(
        self,
        requester: Any,
        remoteHost: str,
        externalPort: int,
        protocol: str,
        internalPort: int,
        internalClient: str,
        enabled: bool,
        description: str,
        lease: int,
        anyPort: bool,
    ) -> PortMapping:
        """
        Check what AddPortMapping and AddAnyPortMapping share, most specific
        error first (WANIPConnection-2.md section 7.2, AddPortMapping).
        """
        internalClient = internalClient.strip()
        if not internalClient:
            raise WildCardNotPermittedInSrcIP("InternalClient must not be empty")
        if externalPort == 0 and not anyPort:
            raise WildCardNotPermittedInExtPort("ExternalPort must not be 0")
        if internalPort == 0:
            raise WildCardNotPermittedInIntPort("InternalPort must not be 0")
        remoteHost = _remoteHost(remoteHost)
        if not _ipv4(internalClient):
            raise ArgumentValueInvalid(f"InternalClient {internalClient[:64]!r} is not an IPv4 address")
        if not self.policy.manages(requester.address, internalClient):
            raise ActionNotAuthorized(f"{requester.address} may only map ports to itself")
        granted = self._lease(lease)
        return PortMapping(
            remoteHost=remoteHost,
            externalPort=externalPort,
            protocol=protocol,
            internalPort=internalPort,
            internalClient=internalClient,
            enabled=enabled,
            description=description,
            leaseDuration=granted,
            expiresAt=self._clock.seconds() + granted,
        )

    async def AddPortMapping(
        self,
        requester: Any,
        NewRemoteHost: str,
        NewExternalPort: int,
        NewProtocol: str,
        NewInternalPort: int,
        NewInternalClient: str,
        NewEnabled: bool,
        NewPortMappingDescription: str,
        NewLeaseDuration: int,
    ) -> dict[str, object]:
        mapping = self._newMapping(
            requester,
            NewRemoteHost,
            NewExternalPort,
            NewProtocol,
            NewInternalPort,
            NewInternalClient,
            NewEnabled,
            NewPortMappingDescription,
            NewLeaseDuration,
            anyPort=False,
        )
        self.policy.checkMapping(
            requester.address, mapping.externalPort, mapping.internalClient, mapping.internalPort
        )
        if (mapping.protocol, mapping.externalPort) in self.policy.reserved:
            raise ConflictWithOtherMechanisms(f"{mapping.protocol} {mapping.externalPort} is the gateway's own")
        await self.mappings.commit(self.mappings.table.planAdd(mapping))
        return {}

    async def AddAnyPortMapping(
        self,
        requester: Any,
        NewRemoteHost: str,
        NewExternalPort: int,
        NewProtocol: str,
        NewInternalPort: int,
        NewInternalClient: str,
        NewEnabled: bool,
        NewPortMappingDescription: str,
        NewLeaseDuration: int,
    ) -> dict[str, object]:
        """
        Like AddPortMapping, but when the port is taken (by another client,
        the gateway itself or the rules) another free port is reserved and
        returned. ExternalPort 0 means "any port" (as miniupnpd reads it).
        """
        # ExternalPort 0 asks for any port: start the search at the
        # internal port (at least 1024), as a mapping cannot hold port 0.
        wanted = NewExternalPort or max(NewInternalPort, 1024)
        mapping = self._newMapping(
            requester,
            NewRemoteHost,
            wanted,
            NewProtocol,
            NewInternalPort,
            NewInternalClient,
            NewEnabled,
            NewPortMappingDescription,
            NewLeaseDuration,
            anyPort=True,
        )
        client, internal, protocol = mapping.internalClient, mapping.internalPort, mapping.protocol
        if not self.policy.anyExternalPortAllowed(client, internal):
            raise ActionNotAuthorized(f"no rule allows mapping to {client}:{internal}")
        table = self.mappings.table
        existing = table.get(mapping.key)

        def usable(port: int) -> bool:
            return self.policy.externalPortUsable(protocol, port, client, internal)

        if not (existing is not None and existing.internalClient == client and usable(wanted)):
            port = table.freePort(protocol, wanted, client, usable)
            if port is None:
                raise NoPortMapsAvailable(f"no free {protocol} port for {client}")
            mapping = replace(mapping, externalPort=port)
        await self.mappings.commit(table.planAdd(mapping))
        return {"NewReservedPort": mapping.externalPort}

    def _deletable(self, requester: Any, mapping: PortMapping) -> bool:
        return not mapping.static and self.policy.manages(requester.address, mapping.internalClient)

    async def DeletePortMapping(
        self, requester: Any, NewRemoteHost: str, NewExternalPort: int, NewProtocol: str
    ) -> dict[str, object]:
        key = (_remoteHost(NewRemoteHost), NewExternalPort, NewProtocol)
        mapping = self.mappings.table.get(key)
        if mapping is None:
            raise NoSuchEntryInArray(f"no mapping of {NewProtocol} {NewExternalPort}")
        if mapping.static:
            raise ActionNotAuthorized("mappings from the configuration are read-only")
        if not self._deletable(requester, mapping):
            raise ActionNotAuthorized(f"{requester.address} may only delete its own mappings")
        await self.mappings.commit(self.mappings.table.planRemove([key]))
        return {}

    def _manageable(self, requester: Any, manage: bool, mapping: PortMapping) -> bool:
        """
        NewManage 0 selects the requester's own mappings; 1 every mapping it
        may manage (in secure mode a Public control point's own, still).
        """
        if manage:
            return self._deletable(requester, mapping)
        return not mapping.static and mapping.internalClient == requester.address

    async def DeletePortMappingRange(
        self, requester: Any, NewStartPort: int, NewEndPort: int, NewProtocol: str, NewManage: bool
    ) -> dict[str, object]:
        if NewStartPort > NewEndPort:
            raise InconsistentParameters(f"{NewStartPort} > {NewEndPort}")
        keys = [
            m.key
            for m in self.mappings.table.inRange(NewProtocol, NewStartPort, NewEndPort)
            if self._manageable(requester, NewManage, m)
        ]
        if not keys:
            raise PortMappingNotFound(f"no {NewProtocol} mapping of yours in {NewStartPort}-{NewEndPort}")
        await self.mappings.commit(self.mappings.table.planRemove(keys))
        return {}

    def GetListOfPortMappings(
        self,
        requester: Any,
        NewStartPort: int,
        NewEndPort: int,
        NewProtocol: str,
        NewManage: bool,
        NewNumberOfPorts: int,
    ) -> dict[str, object]:
        if NewStartPort > NewEndPort:
            raise InconsistentParameters(f"{NewStartPort} > {NewEndPort}")
        limit = min(NewNumberOfPorts or LIST_PAGE_SIZE, LIST_PAGE_SIZE)
        now = self._clock.seconds()
        entries = []
        for mapping in self.mappings.table.inRange(NewProtocol, NewStartPort, NewEndPort):
            if not NewManage and mapping.internalClient != requester.address:
                continue
            entries.append(
                _P.PortMappingEntry(
                    _P.NewRemoteHost(mapping.remoteHost),
                    _P.NewExternalPort(str(mapping.externalPort)),
                    _P.NewProtocol(mapping.protocol),
                    _P.NewInternalPort(str(mapping.internalPort)),
                    _P.NewInternalClient(mapping.internalClient),
                    _P.NewEnabled("1" if mapping.enabled else "0"),
                    _P.NewDescription(mapping.description),
                    _P.NewLeaseTime(str(mapping.remaining(now))),
                )
            )
            if len(entries) >= limit:
                break
        if not entries:
            raise PortMappingNotFound(f"no {NewProtocol} mapping in {NewStartPort}-{NewEndPort}")
        listing = _P.PortMappingList(*entries)
        listing.set(
            f"{{{_XSI}}}schemaLocation",
            f"{PORT_LISTING_NS} http://www.upnp.org/schemas/gw/WANIPConnection-v2.xsd",
        )
        document = '<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(listing, encoding="unicode")
        return {"NewPortListing": XMLDocument(document)}

    # State variables.

    def stateVariables(self) -> dict[str, object]:
        """
        @return: the evented state variables and their current values.
        """
        return {
            "PossibleConnectionTypes": POSSIBLE_CONNECTION_TYPES,
            "ConnectionStatus": self.connection.status,
            "ExternalIPAddress": self.connection.externalIPAddress,
            "PortMappingNumberOfEntries": len(self.mappings.table),
            "SystemUpdateID": self.mappings.systemUpdateID,
        }

    def queryStateVariable(self, name: str) -> object:
        """
        Answer the deprecated QueryStateVariable (still sent by Windows).

        @raise InvalidVar: for a variable this service does not report.
        """
        values = dict(self.stateVariables())
        values.update(
            ConnectionType=self.connection.connectionType,
            Uptime=self.connection.uptime(),
            LastConnectionError=self.connection.lastConnectionError,
            RSIPAvailable=False,
            NATEnabled=True,
        )
        if name not in values:
            raise InvalidVar(name)
        return values[name]
