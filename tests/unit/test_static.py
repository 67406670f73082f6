"""
Tests for L{gatewayd.link.static}, L{gatewayd.link.addressing},
and L{gatewayd.link.capabilities}: what a static WAN puts into the kernel
(through a fake), and when. (The main table's default route is the
multi-WAN router's: tests.unit.test_router.)
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from twisted.internet.task import Clock
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatewayd.connection import ERROR_IP_CONFIGURATION, ERROR_NO_CARRIER, WANConnection
from gatewayd.errors import ConfigError
from gatewayd.interfaces import ILink, ILinkType, INetlinkWriter, InterfaceState, LinkContext
from gatewayd.link.addressing import DEFAULT, RULE_PRIORITY
from gatewayd.link.capabilities import checkCapabilities, missingCapabilities
from gatewayd.link.static import StaticLinkType, StaticSettings
from tests.fakes import FakeKernel

ADDRESS = IPv4Interface("203.0.113.2/24")
GATEWAY = IPv4Address("203.0.113.1")


def kernel(up: bool = False, carrier: bool = False, mtu: int = 1500) -> FakeKernel:
    return FakeKernel([InterfaceState("eth1", 3, up=up, carrier=carrier, mtu=mtu)])


def build(netlink: FakeKernel, onStop: str = "keep", **config: object):  # type: ignore[no-untyped-def]
    linkType = StaticLinkType()
    settings = linkType.checkConfig(
        {"address": str(ADDRESS), "gateway": str(GATEWAY), **config}
    )
    return linkType.buildLink(
        LinkContext(
            wanName="isp1",
            interface="eth1",
            settings=settings,
            netlink=netlink,
            reactor=Clock(),
            stateDir=FilePath("/nonexistent"),
            onStop=onStop,
            table=100,
        )
    )


class ConfigTests(SynchronousTestCase):
    """
    The C{static} link's keys.
    """

    def test_valid(self) -> None:
        """
        Address, gateway, MTU and DNS are parsed.
        """
        settings = StaticLinkType().checkConfig(
            {"address": "203.0.113.2/24", "gateway": "203.0.113.1", "mtu": 1492, "dns": ["9.9.9.9"]}
        )
        self.assertEqual(
            settings, StaticSettings(ADDRESS, GATEWAY, 1492, (IPv4Address("9.9.9.9"),))
        )
        self.assertTrue(verifyObject(ILinkType, StaticLinkType()))

    def test_mistakes(self) -> None:
        """
        Each mistake names its key.
        """
        base = {"address": "203.0.113.2/24", "gateway": "203.0.113.1"}
        cases = [
            ({"gateway": "203.0.113.1"}, "address"),
            ({"address": "203.0.113.2/24"}, "gateway"),
            ({**base, "gateway": "198.51.100.1"}, "gateway"),
            ({**base, "gateway": "203.0.113.2"}, "gateway"),
            ({**base, "mtu": 100}, "mtu"),
            ({**base, "mtu": True}, "mtu"),
            ({**base, "dns": "9.9.9.9"}, "dns"),
            ({**base, "dns": ["nine"]}, "dns[0]"),
            ({**base, "colour": "red"}, "colour"),
        ]
        for config, key in cases:
            with self.assertRaises(ConfigError) as e:
                StaticLinkType().checkConfig(config)
            self.assertEqual(e.exception.path, key, config)


class StaticLinkTests(SynchronousTestCase):
    """
    A static link configures its interface when asked to connect.
    """

    def test_connect(self) -> None:
        """
        Connecting sets the interface up and its MTU, adds the address, the
        WAN table's on-link and default routes and the rule; the link is
        usable once the interface has carrier.
        """
        netlink = kernel()
        link = build(netlink, mtu=1492, dns=["9.9.9.9"])
        self.assertTrue(verifyObject(ILink, link))
        self.assertTrue(verifyObject(INetlinkWriter, netlink))
        link.startService()
        self.assertFalse(link.status.usable)
        self.successResultOf(link.connect())
        state = netlink.interfaceState("eth1")
        assert state is not None
        self.assertEqual((state.up, state.mtu, state.addresses), (True, 1492, (ADDRESS,)))
        self.assertEqual(
            netlink.routes,
            {
                ("eth1", ADDRESS.network, None, 100, ADDRESS.ip),
                ("eth1", DEFAULT, GATEWAY, 100, ADDRESS.ip),
            },
        )
        self.assertEqual(netlink.rules, {(IPv4Network("203.0.113.2/32"), 100, RULE_PRIORITY)})
        self.assertTrue(link.status.usable)
        self.assertEqual(link.status.gateway, GATEWAY)
        self.assertEqual(link.status.dns, (IPv4Address("9.9.9.9"),))

    def test_idempotent(self) -> None:
        """
        Connecting twice changes nothing more.
        """
        netlink = kernel(up=True, carrier=True)
        link = build(netlink)
        link.startService()
        self.successResultOf(link.connect())
        before = (netlink.interfaceState("eth1"), set(netlink.routes), set(netlink.rules))
        self.successResultOf(link.connect())
        self.assertEqual(before, (netlink.interfaceState("eth1"), netlink.routes, netlink.rules))

    def test_carrier(self) -> None:
        """
        Carrier loss makes the link unusable (the address stays); its
        return makes it usable again and puts the routes back.
        """
        netlink = kernel(up=True, carrier=True)
        link = build(netlink)
        link.startService()
        self.successResultOf(link.connect())
        netlink.setCarrier("eth1", False)
        self.assertFalse(link.status.carrier)
        self.assertFalse(link.status.usable)
        netlink.routes.clear()
        netlink.setCarrier("eth1", True)
        self.assertTrue(link.status.usable)
        self.assertEqual(len(netlink.routes), 2)

    def test_disconnect(self) -> None:
        """
        Disconnecting removes rule, routes and address; the interface
        stays up.
        """
        netlink = kernel(up=True, carrier=True)
        link = build(netlink)
        link.startService()
        self.successResultOf(link.connect())
        self.successResultOf(link.disconnect())
        self.assertEqual((netlink.routes, netlink.rules), (set(), set()))
        state = netlink.interfaceState("eth1")
        assert state is not None
        self.assertEqual((state.up, state.addresses), (True, ()))
        self.assertFalse(link.status.usable)

    def test_stopKeep(self) -> None:
        """
        With C{on_stop = "keep"}, stopping leaves everything in place.
        """
        netlink = kernel()
        link = build(netlink)
        link.startService()
        self.successResultOf(link.connect())
        state, routes = netlink.interfaceState("eth1"), set(netlink.routes)
        self.successResultOf(link.stopService())
        self.assertEqual((netlink.interfaceState("eth1"), netlink.routes), (state, routes))

    def test_stopClean(self) -> None:
        """
        With C{on_stop = "clean"}, stopping puts the interface back as it
        was: down, its MTU, no address, route or rule.
        """
        netlink = kernel(mtu=1500)
        before = netlink.interfaceState("eth1")
        link = build(netlink, onStop="clean", mtu=1400)
        link.startService()
        self.successResultOf(link.connect())
        self.successResultOf(link.stopService())
        self.assertEqual(netlink.interfaceState("eth1"), before)
        self.assertEqual((netlink.routes, netlink.rules), (set(), set()))

    def test_cleanKeepsForeignAddress(self) -> None:
        """
        An address the interface had before start is not removed by a
        clean stop: the link removes only what it added.
        """
        netlink = FakeKernel([InterfaceState("eth1", 3, up=True, carrier=True, addresses=(ADDRESS,))])
        link = build(netlink, onStop="clean")
        link.startService()
        self.successResultOf(link.connect())
        self.successResultOf(link.stopService())
        state = netlink.interfaceState("eth1")
        assert state is not None
        self.assertEqual(state.addresses, (ADDRESS,))
        self.assertEqual(netlink.routes, set())

    def test_failure(self) -> None:
        """
        A kernel refusal fails C{connect()}; the connection reports
        C{ERROR_IP_CONFIGURATION} and the failure is logged.
        """
        netlink = kernel(up=True, carrier=True)
        netlink.failWith = PermissionError(1, "Operation not permitted")
        link = build(netlink)
        link.startService()
        connection = WANConnection(link, Clock(), lambda: True)
        connection.start()
        self.assertEqual(connection.status, "Disconnected")
        self.assertEqual(connection.lastConnectionError, ERROR_IP_CONFIGURATION)
        self.assertTrue(self.flushLoggedErrors(PermissionError))

    def test_connection(self) -> None:
        """
        Through the connection: Connected with the address; carrier loss
        gives C{Connecting} with C{ERROR_NO_CARRIER}; RequestTermination
        removes the address; RequestConnection puts it back.
        """
        netlink = kernel(up=True, carrier=True)
        link = build(netlink)
        link.startService()
        connection = WANConnection(link, Clock(), lambda: True)
        seen: list[tuple[str, object]] = []
        connection.addObserver(lambda name, value: seen.append((name, value)))
        connection.start()
        self.assertEqual((connection.status, connection.externalIPAddress), ("Connected", "203.0.113.2"))
        netlink.setCarrier("eth1", False)
        self.assertEqual(connection.status, "Connecting")
        self.assertEqual(connection.lastConnectionError, ERROR_NO_CARRIER)
        netlink.setCarrier("eth1", True)
        self.assertEqual(connection.status, "Connected")
        connection.requestTermination()
        self.assertEqual(connection.status, "Disconnected")
        state = netlink.interfaceState("eth1")
        assert state is not None
        self.assertEqual(state.addresses, ())
        connection.requestConnection()
        self.assertEqual(connection.status, "Connected")
        self.assertIn(("ExternalIPAddress", "203.0.113.2"), seen)


class CapabilityTests(SynchronousTestCase):
    """
    A daemon without the capabilities a link needs says which, for which
    WAN.
    """

    def test_missing(self) -> None:
        """
        The missing capabilities are named, in order.
        """
        netAdmin = 1 << 12
        self.assertEqual(missingCapabilities(["CAP_NET_ADMIN", "CAP_NET_RAW"], netAdmin), ["CAP_NET_RAW"])
        self.assertEqual(missingCapabilities(["CAP_NET_ADMIN"], netAdmin), [])

    def test_check(self) -> None:
        """
        The error names the WAN's link key, the WAN and the capability.
        """
        from gatewayd.link.dhcp import DHCPLinkType
        from gatewayd.link.unmanaged import UnmanagedLinkType

        wans = [
            (0, "isp1", UnmanagedLinkType(), None),
            (1, "isp2", DHCPLinkType(), DHCPLinkType().checkConfig({})),
        ]
        with self.assertRaises(ConfigError) as e:
            checkCapabilities(wans, effective=1 << 12)
        self.assertEqual(e.exception.path, "wan[1].link.type")
        self.assertIn('WAN "isp2"', str(e.exception))
        self.assertIn("CAP_NET_RAW", str(e.exception))
        self.assertNotIn("CAP_NET_ADMIN and", str(e.exception))
        checkCapabilities(wans, effective=(1 << 12) | (1 << 13))
