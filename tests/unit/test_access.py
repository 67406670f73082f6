"""
Tests for L{gatewayd.igd.access}: who may do what.
"""

from __future__ import annotations

from ipaddress import IPv4Network

from twisted.trial.unittest import SynchronousTestCase

from gatewayd.config import UPnPConfig, parseRule
from gatewayd.errors import ActionNotAuthorized
from gatewayd.igd.access import AccessPolicy, Role

RULES = (
    parseRule("r", "allow 1024-65535 192.168.1.0/24 1024-65535"),
    parseRule("r", "allow 80 192.168.1.10/32 80"),
    parseRule("r", "deny 0-65535 0.0.0.0/0 0-65535"),
)


def policy(secure: bool = True) -> AccessPolicy:
    config = UPnPConfig(secureMode=secure, adminHosts=(IPv4Network("192.168.1.2/32"),), rules=RULES)
    return AccessPolicy(config, frozenset({("TCP", 5000), ("UDP", 1900)}))


class RoleTests(SynchronousTestCase):
    def test_adminByAddress(self) -> None:
        """
        Control points in admin_hosts are Admin; everyone else is Public.
        """
        self.assertIs(policy().role("192.168.1.2"), Role.ADMIN)
        self.assertIs(policy().role("192.168.1.20"), Role.PUBLIC)
        self.assertIs(policy().role("::ffff:192.168.1.2"), Role.ADMIN)

    def test_connectionControlIsAdminOnly(self) -> None:
        """
        A Public control point gets 606 for connection control, the timer
        setters and SetDefaultConnectionService; an admin host does not.
        """
        for service, action in [
            ("WANIPConnection", "RequestConnection"),
            ("WANIPConnection", "ForceTermination"),
            ("WANIPConnection", "SetAutoDisconnectTime"),
            ("WANCommonInterfaceConfig", "SetEnabledForInternet"),
            ("Layer3Forwarding", "SetDefaultConnectionService"),
        ]:
            with self.assertRaises(ActionNotAuthorized, msg=action):
                policy().checkAction(service, action, "192.168.1.20")
            policy().checkAction(service, action, "192.168.1.2")

    def test_readingIsOpen(self) -> None:
        """
        Reading status and mappings is open to every LAN control point.
        """
        for action in ["GetStatusInfo", "GetGenericPortMappingEntry", "GetListOfPortMappings", "AddPortMapping"]:
            policy().checkAction("WANIPConnection", action, "192.168.1.20")


class MappingRuleTests(SynchronousTestCase):
    def test_secureModeOwnAddressOnly(self) -> None:
        """
        In secure mode a Public control point maps only to itself; an admin
        host maps for others.
        """
        policy().checkMapping("192.168.1.20", 8080, "192.168.1.20", 8080)
        with self.assertRaises(ActionNotAuthorized):
            policy().checkMapping("192.168.1.20", 8080, "192.168.1.21", 8080)
        policy().checkMapping("192.168.1.2", 8080, "192.168.1.21", 8080)
        policy(secure=False).checkMapping("192.168.1.20", 8080, "192.168.1.21", 8080)

    def test_rulesFirstMatchWins(self) -> None:
        """
        Ports below 1024 are denied unless a rule allows them; the first
        matching rule decides and no match denies.
        """
        with self.assertRaises(ActionNotAuthorized):
            policy().checkMapping("192.168.1.20", 1023, "192.168.1.20", 2000)
        with self.assertRaises(ActionNotAuthorized):
            policy().checkMapping("192.168.1.20", 2000, "192.168.1.20", 22)
        policy().checkMapping("192.168.1.10", 80, "192.168.1.10", 80)
        with self.assertRaises(ActionNotAuthorized):
            policy().checkMapping("10.0.0.5", 2000, "10.0.0.5", 2000)
        self.assertFalse(AccessPolicy(UPnPConfig(rules=())).portAllowed(2000, "192.168.1.20", 2000))

    def test_reservedPortsNotHandedOut(self) -> None:
        """
        AddAnyPortMapping never hands out the gateway's own ports.
        """
        self.assertFalse(policy().externalPortUsable("TCP", 5000, "192.168.1.20", 5000))
        self.assertTrue(policy().externalPortUsable("UDP", 5000, "192.168.1.20", 5000))
        self.assertFalse(policy().externalPortUsable("UDP", 1900, "192.168.1.20", 1900))
