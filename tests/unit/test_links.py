"""
Tests for the C{unmanaged} and C{simulated} link types.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface
from typing import Any, Mapping

from twisted.internet.testing import MemoryReactorClock
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatewayd.errors import ConfigError
from gatewayd.interfaces import ILink, InterfaceState, LinkContext, LinkStatus
from gatewayd.link.simulated import SimulatedLink, SimulatedLinkType, SimulatedSettings
from gatewayd.link.unmanaged import UnmanagedLink, UnmanagedLinkType, UnmanagedSettings
from tests.fakes import FakeNetlink

ADDRESS = IPv4Interface("203.0.113.2/24")
GATEWAY = IPv4Address("203.0.113.1")


def context(settings: object, netlink: Any = None, interface: str = "eth1") -> LinkContext:
    return LinkContext(
        wanName="isp1",
        interface=interface,
        settings=settings,
        netlink=netlink if netlink is not None else FakeNetlink(),
        reactor=MemoryReactorClock(),
        stateDir=FilePath("/nonexistent"),
    )


def eth1(**kw: Any) -> InterfaceState:
    values: dict[str, Any] = dict(
        name="eth1", index=3, up=True, carrier=True, addresses=(ADDRESS,), mtu=1500
    )
    values.update(kw)
    return InterfaceState(**values)


class ConfigCheckMixin:
    """
    Table-driven checks of C{checkConfig}.
    """

    linkType: Any

    def assertConfigError(
        self, config: Mapping[str, object], path: str, expected: str
    ) -> None:
        with self.assertRaises(ConfigError) as raised:  # type: ignore[attr-defined]
            self.linkType.checkConfig(config)
        self.assertEqual(  # type: ignore[attr-defined]
            (raised.exception.path, raised.exception.expected), (path, expected)
        )


class UnmanagedConfigTests(ConfigCheckMixin, SynchronousTestCase):
    """
    What the C{unmanaged} link type accepts under C{link}.
    """

    linkType = UnmanagedLinkType()

    def test_good(self) -> None:
        """
        No keys at all, or an IPv4 C{gateway}, are accepted.
        """
        good: list[tuple[dict[str, object], UnmanagedSettings]] = [
            ({}, UnmanagedSettings()),
            ({"gateway": "203.0.113.1"}, UnmanagedSettings(gateway=GATEWAY)),
        ]
        for config, settings in good:
            self.assertEqual(self.linkType.checkConfig(config), settings)

    def test_bad(self) -> None:
        """
        A mistake is reported with its key, relative to the C{link} table,
        and what was expected there.
        """
        ip = 'expected an IPv4 address, e.g. "203.0.113.1"'
        bad: list[tuple[dict[str, object], str, str]] = [
            ({"gateway": "203.0.113.256"}, "gateway", f'{ip}; got a string "203.0.113.256"'),
            ({"gateway": "2001:db8::1"}, "gateway", f'{ip}; got a string "2001:db8::1"'),
            ({"gateway": 1}, "gateway", f"{ip}; got an integer 1"),
            ({"address": "203.0.113.2/24"}, "address", "unknown key"),
            ({"gateway": "203.0.113.1", "mtu": 1500}, "mtu", "unknown key"),
        ]
        for config, path, expected in bad:
            self.assertConfigError(config, path, expected)


class SimulatedConfigTests(ConfigCheckMixin, SynchronousTestCase):
    """
    What the C{simulated} link type accepts under C{link}.
    """

    linkType = SimulatedLinkType()

    def test_good(self) -> None:
        """
        C{address} is required; C{gateway} and C{carrier} (default true) are
        optional.
        """
        good: list[tuple[dict[str, object], SimulatedSettings]] = [
            ({"address": "203.0.113.2/24"}, SimulatedSettings(ADDRESS)),
            (
                {"address": "203.0.113.2/24", "gateway": "203.0.113.1", "carrier": False},
                SimulatedSettings(ADDRESS, GATEWAY, False),
            ),
            (
                {"address": "198.51.100.0/31", "gateway": "198.51.100.1"},
                SimulatedSettings(IPv4Interface("198.51.100.0/31"), IPv4Address("198.51.100.1")),
            ),
        ]
        for config, settings in good:
            self.assertEqual(self.linkType.checkConfig(config), settings)

    def test_bad(self) -> None:
        """
        A mistake is reported with its key, relative to the C{link} table,
        and what was expected there.
        """
        A = "203.0.113.2/24"
        prefixed = 'expected an IPv4 address with prefix, e.g. "203.0.113.2/24"'
        host = "expected a host of 203.0.113.0/24 other than 203.0.113.2"
        bad: list[tuple[dict[str, object], str, str]] = [
            ({}, "address", f"missing; {prefixed}"),
            ({"gateway": "203.0.113.1"}, "address", f"missing; {prefixed}"),
            ({"address": "203.0.113.2"}, "address", f'{prefixed}; got a string "203.0.113.2"'),
            ({"address": "203.0.113.2/33"}, "address", f'{prefixed}; got a string "203.0.113.2/33"'),
            ({"address": "eth1"}, "address", f'{prefixed}; got a string "eth1"'),
            ({"address": [A]}, "address", f"{prefixed}; got an array"),
            (
                {"address": "203.0.113.255/24"},
                "address",
                "expected a host address of 203.0.113.0/24, not its network or broadcast address",
            ),
            ({"address": A, "gateway": "198.51.100.1"}, "gateway", f'{host}; got a string "198.51.100.1"'),
            ({"address": A, "gateway": "203.0.113.2"}, "gateway", f'{host}; got a string "203.0.113.2"'),
            ({"address": A, "gateway": "203.0.113.0"}, "gateway", f'{host}; got a string "203.0.113.0"'),
            (
                {"address": A, "gateway": "gw"},
                "gateway",
                'expected an IPv4 address, e.g. "203.0.113.1"; got a string "gw"',
            ),
            ({"address": A, "carrier": "yes"}, "carrier", 'expected true or false; got a string "yes"'),
            ({"address": A, "carrier": 1}, "carrier", "expected true or false; got an integer 1"),
            ({"address": A, "interface": "eth1"}, "interface", "unknown key"),
        ]
        for config, path, expected in bad:
            self.assertConfigError(config, path, expected)


class UnmanagedLinkTests(SynchronousTestCase):
    """
    An unmanaged link reports what the kernel says about its interface.
    """

    def setUp(self) -> None:
        self.netlink = FakeNetlink([eth1()])
        self.link = UnmanagedLinkType().buildLink(
            context(UnmanagedSettings(gateway=GATEWAY), self.netlink)
        )
        self.seen: list[LinkStatus] = []
        self.link.addObserver(self.seen.append)

    def test_interface(self) -> None:
        """
        The link provides L{ILink}, is about the WAN's interface, and is not
        controllable: connect and disconnect succeed and change nothing.
        """
        self.assertTrue(verifyObject(ILink, self.link))
        self.assertIsInstance(self.link, UnmanagedLink)
        self.assertEqual(self.link.interface, "eth1")
        self.assertFalse(self.link.controllable)
        self.link.startService()
        before = self.link.status
        self.assertIsNone(self.successResultOf(self.link.disconnect()))
        self.assertIsNone(self.successResultOf(self.link.connect()))
        self.assertEqual(self.link.status, before)

    def test_startReportsCurrentState(self) -> None:
        """
        Nothing is known before the link starts; once started it reports
        carrier, the first address and the configured gateway.
        """
        self.assertEqual(self.link.status, LinkStatus())
        self.netlink.setState(eth1(addresses=(ADDRESS, IPv4Interface("198.51.100.7/24"))))
        self.link.startService()
        self.assertEqual(self.seen, [LinkStatus(True, ADDRESS, GATEWAY)])
        self.assertTrue(self.link.status.usable)

    def test_carrierLoss(self) -> None:
        """
        Losing carrier, or being set down, makes the link unusable; the
        address stays.
        """
        self.link.startService()
        self.netlink.setState(eth1(carrier=False))
        self.netlink.setState(eth1())
        self.netlink.setState(eth1(up=False, carrier=True))
        self.assertEqual(
            self.seen,
            [
                LinkStatus(True, ADDRESS, GATEWAY),
                LinkStatus(False, ADDRESS, GATEWAY),
                LinkStatus(True, ADDRESS, GATEWAY),
                LinkStatus(False, ADDRESS, GATEWAY),
            ],
        )

    def test_addressChange(self) -> None:
        """
        A new address is reported; without any address the link has no
        gateway either.
        """
        other = IPv4Interface("198.51.100.7/24")
        self.link.startService()
        self.netlink.setState(eth1(addresses=(other,)))
        self.netlink.setState(eth1(addresses=()))
        self.assertEqual(
            self.seen[1:],
            [LinkStatus(True, other, GATEWAY), LinkStatus(True, None, None)],
        )

    def test_noGatewayConfigured(self) -> None:
        """
        Without a configured gateway the link reports none.
        """
        link = UnmanagedLinkType().buildLink(context(UnmanagedSettings(), self.netlink))
        link.startService()
        self.assertEqual(link.status, LinkStatus(True, ADDRESS, None))

    def test_interfaceRemovedAndBack(self) -> None:
        """
        When the interface disappears the link has neither carrier nor
        address; when it comes back, it is reported again.
        """
        self.link.startService()
        self.netlink.remove("eth1")
        self.netlink.setState(eth1(index=9))
        self.assertEqual(
            self.seen,
            [LinkStatus(True, ADDRESS, GATEWAY), LinkStatus(), LinkStatus(True, ADDRESS, GATEWAY)],
        )

    def test_onceperChange(self) -> None:
        """
        Observers are called once per change of the link's status, not for
        kernel changes the status does not show (MTU, counters); a removed
        observer is not called.
        """
        self.link.startService()
        self.netlink.setState(eth1(mtu=1400))
        self.netlink.setState(eth1(mtu=1400, stats={"rx_bytes": 1}))
        self.assertEqual(len(self.seen), 1)
        later: list[LinkStatus] = []
        remove = self.link.addObserver(later.append)
        remove()
        remove()
        self.netlink.setState(eth1(carrier=False))
        self.assertEqual(later, [])
        self.assertEqual(len(self.seen), 2)

    def test_stop(self) -> None:
        """
        A stopped link no longer follows its interface.
        """
        self.link.startService()
        self.assertEqual(self.netlink.watching("eth1"), 1)
        self.link.stopService()
        self.assertEqual(self.netlink.watching("eth1"), 0)
        self.netlink.setState(eth1(carrier=False))
        self.assertEqual(self.seen, [LinkStatus(True, ADDRESS, GATEWAY)])

    def test_failingObserver(self) -> None:
        """
        An observer that raises is logged and does not keep the others from
        being told.
        """

        def broken(status: LinkStatus) -> None:
            raise ZeroDivisionError()

        self.link.addObserver(broken)
        after: list[LinkStatus] = []
        self.link.addObserver(after.append)
        self.link.startService()
        self.assertEqual(after, [LinkStatus(True, ADDRESS, GATEWAY)])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class SimulatedLinkTests(SynchronousTestCase):
    """
    A simulated link does what it is told, and nothing to the kernel.
    """

    def setUp(self) -> None:
        self.link = SimulatedLinkType().buildLink(context(SimulatedSettings(ADDRESS, GATEWAY)))
        self.seen: list[LinkStatus] = []
        self.link.addObserver(self.seen.append)
        self.link.startService()

    def test_interface(self) -> None:
        """
        The link provides L{ILink}, is about the WAN's interface, and is
        controllable.
        """
        self.assertTrue(verifyObject(ILink, self.link))
        self.assertIsInstance(self.link, SimulatedLink)
        self.assertEqual(self.link.interface, "eth1")
        self.assertTrue(self.link.controllable)

    def test_addressOnlyWhileConnected(self) -> None:
        """
        The link starts with carrier and no address; connect gives it the
        configured address and gateway, disconnect takes them away.
        """
        self.assertEqual(self.link.status, LinkStatus(carrier=True))
        self.assertIsNone(self.successResultOf(self.link.connect()))
        self.assertEqual(self.link.status, LinkStatus(True, ADDRESS, GATEWAY))
        self.assertTrue(self.link.status.usable)
        self.successResultOf(self.link.connect())
        self.assertIsNone(self.successResultOf(self.link.disconnect()))
        self.assertEqual(self.seen, [LinkStatus(True, ADDRESS, GATEWAY), LinkStatus(True)])

    def test_carrierSwitch(self) -> None:
        """
        Unplugging the simulated cable makes the link unusable but keeps
        its address; plugging it back makes it usable again. Setting the
        same carrier twice is one change.
        """
        self.link.connect()
        self.link.setCarrier(False)
        self.link.setCarrier(False)
        self.assertFalse(self.link.status.usable)
        self.link.setCarrier(True)
        self.assertEqual(
            self.seen,
            [
                LinkStatus(True, ADDRESS, GATEWAY),
                LinkStatus(False, ADDRESS, GATEWAY),
                LinkStatus(True, ADDRESS, GATEWAY),
            ],
        )

    def test_configuredWithoutCarrier(self) -> None:
        """
        A link configured with C{carrier = false} starts unplugged: even
        connected, it is not usable until its carrier is set.
        """
        link = SimulatedLinkType().buildLink(context(SimulatedSettings(ADDRESS, carrier=False)))
        link.connect()
        self.assertEqual(link.status, LinkStatus(False, ADDRESS, None))
        link.setCarrier(True)
        self.assertTrue(link.status.usable)

    def test_stop(self) -> None:
        """
        Stopping the link schedules nothing and leaves its status as it was.
        """
        self.link.connect()
        self.link.stopService()
        self.assertFalse(self.link.running)
        self.assertEqual(self.link.status, LinkStatus(True, ADDRESS, GATEWAY))

    def test_wrongSettings(self) -> None:
        """
        Building a link from another type's settings is a programming error.
        """
        self.assertRaises(TypeError, SimulatedLinkType().buildLink, context(UnmanagedSettings()))
        self.assertRaises(
            TypeError, UnmanagedLinkType().buildLink, context(SimulatedSettings(ADDRESS))
        )
