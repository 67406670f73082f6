"""
Tests for L{gatewayd.link.netlink}: the real kernel, through the asyncio
reactor.

These tests wait for the kernel, so they run the global reactor for a
bounded time: under pytest (C{--reactor=asyncio}, pytest-twisted) with
C{pytest_twisted.blockon}, under C{trial --reactor=asyncio} by iterating
the reactor. Interfaces are only ever created inside a network namespace
that the test creates and always removes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from ipaddress import IPv4Interface
from secrets import token_hex
from typing import Any, Callable, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface.verify import verifyObject

from gatewayd.interfaces import INetlink, InterfaceState, LANAddress
from gatewayd.link.netlink import NetlinkService, UnknownInterface
from tests.fakes import FakeNetlink

_T = TypeVar("_T")

TIMEOUT = 5.0


def asyncioReactor() -> Any:
    """
    @return: the global reactor.
    @raise SkipTest: unless it is the asyncio reactor.
    """
    from twisted.internet import reactor
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if not isinstance(reactor, AsyncioSelectorReactor):
        raise SkipTest(
            f"needs the asyncio reactor (pytest --reactor=asyncio or trial --reactor=asyncio), "
            f"not {type(reactor).__name__}"
        )
    return reactor


def waitFor(d: Deferred[_T], timeout: float = TIMEOUT) -> _T:
    """
    Run the global reactor until C{d} fires, for at most C{timeout} seconds.

    @return: C{d}'s result.
    @raise Exception: C{d}'s failure; L{twisted.internet.defer.TimeoutError}
        after C{timeout}.
    """
    reactor = asyncioReactor()
    d.addTimeout(timeout, reactor)
    pytestTwisted = sys.modules.get("pytest_twisted")
    instances = getattr(pytestTwisted, "_instances", None)
    if getattr(instances, "gr_twisted", None) is not None:
        return pytestTwisted.blockon(d)  # type: ignore[union-attr]
    results: list[Any] = []
    d.addBoth(results.append)
    deadline = time.monotonic() + timeout + 1
    while not results and time.monotonic() < deadline:
        reactor.iterate(0.01)
    if not results:
        raise AssertionError("the reactor did not fire the timeout")
    [result] = results
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result  # type: ignore[no-any-return]


def settle() -> None:
    """
    Run the reactor briefly so that callbacks already scheduled run.
    """
    reactor = asyncioReactor()
    d: Deferred[None] = Deferred()
    reactor.callLater(0.05, d.callback, None)
    waitFor(d)


def stateOf(
    netlink: NetlinkService, name: str, predicate: Callable[[InterfaceState | None], bool]
) -> Deferred[InterfaceState | None]:
    """
    @return: a L{Deferred} that fires with the first state of C{name}
        (reported to a watcher) that satisfies C{predicate}.
    """
    d: Deferred[InterfaceState | None] = Deferred()

    def observe(state: InterfaceState | None) -> None:
        if not d.called and predicate(state):
            d.callback(state)

    unwatch = netlink.watchInterface(name, observe)

    def stop(result: object) -> object:
        unwatch()
        return result

    return d.addBoth(stop)


def ip(*argv: str) -> None:
    subprocess.run(("ip",) + argv, check=True, capture_output=True, timeout=10)


def runningTasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks(asyncio.get_event_loop()) if not t.done()}


class NetlinkServiceTests(SynchronousTestCase):
    """
    Things a user notices without a kernel.
    """

    def test_providesINetlink(self) -> None:
        """
        The service and the fake both provide L{INetlink}.
        """
        self.assertTrue(verifyObject(INetlink, NetlinkService(MemoryReactorClock())))
        self.assertTrue(verifyObject(INetlink, FakeNetlink()))

    def test_nothingKnownBeforeStart(self) -> None:
        """
        Before it starts, the service knows no interface, serves no LAN
        address, and cannot read counters; stopping it is immediate.
        """
        netlink = NetlinkService(MemoryReactorClock())
        self.assertIsNone(netlink.interfaceState("lo"))
        self.assertEqual(netlink.lanAddresses(["lo"]), [])
        self.failureResultOf(netlink.statistics("lo"), UnknownInterface)
        self.successResultOf(netlink.stopService())

    def test_needsAsyncioReactor(self) -> None:
        """
        Started on another reactor, the service says it needs the asyncio
        reactor instead of hanging.
        """
        netlink = NetlinkService(MemoryReactorClock())
        ready = netlink.whenReady()
        netlink.startService()
        self.assertIn("asyncio reactor", str(self.failureResultOf(ready, RuntimeError).value))
        self.flushLoggedErrors(RuntimeError)
        self.successResultOf(netlink.stopService())

    def test_stopCancelsWaiters(self) -> None:
        """
        Whoever waits for the first snapshot is told when the service stops
        before it is ready.
        """
        netlink = NetlinkService(MemoryReactorClock())
        ready = netlink.whenReady()
        netlink.stopService()
        self.failureResultOf(ready, CancelledError)


class KernelTests(SynchronousTestCase):
    """
    The service reads the real kernel.
    """

    def setUp(self) -> None:
        self.reactor = asyncioReactor()
        self.tasksBefore = runningTasks()
        self.callsBefore = set(self.reactor.getDelayedCalls())

    def stopAndCheck(self, netlink: NetlinkService) -> None:
        """
        Stop C{netlink} and check that it left nothing running.
        """
        waitFor(netlink.stopService())
        settle()
        self.assertEqual(runningTasks() - self.tasksBefore, set())
        self.assertEqual(
            [c for c in self.reactor.getDelayedCalls() if c not in self.callsBefore], []
        )
        self.assertIsNone(netlink.interfaceState("lo"))
        self.failureResultOf(netlink.statistics("lo"), UnknownInterface)

    def test_loopback(self) -> None:
        """
        Once ready, the service knows C{lo}: up, with carrier and
        127.0.0.1/8, and serves it as a LAN address; a watcher is told its
        state at once; counters can be read; stopping leaves no task, timer
        or snapshot behind.
        """
        netlink = NetlinkService(self.reactor)
        netlink.startService()
        try:
            waitFor(netlink.whenReady())
            lo = netlink.interfaceState("lo")
            assert lo is not None
            self.assertTrue(lo.up)
            self.assertTrue(lo.carrier)
            self.assertIn(IPv4Interface("127.0.0.1/8"), lo.addresses)
            self.assertIn(
                LANAddress("lo", lo.index, IPv4Interface("127.0.0.1/8")),
                netlink.lanAddresses(["lo", "no-such-if"]),
            )
            seen: list[InterfaceState | None] = []
            unwatch = netlink.watchInterface("lo", seen.append)
            unwatch()
            self.assertEqual([s.name if s else s for s in seen], ["lo"])
            stats = waitFor(netlink.statistics("lo"))
            self.assertEqual(
                sorted(stats), ["rx_bytes", "rx_packets", "tx_bytes", "tx_packets"]
            )
            self.assertTrue(all(isinstance(v, int) and v >= 0 for v in stats.values()))
            self.failureResultOf(netlink.statistics("no-such-if"), UnknownInterface)
        finally:
            self.stopAndCheck(netlink)

    def test_namespaceEvents(self) -> None:
        """
        In a network namespace of its own, the service sees a veth pair
        appear, get an address, come up with carrier, lose carrier when its
        peer goes down, regain it, lose the address, and disappear: a
        watcher is told each of these changes, and only of real changes
        (an event that changes nothing the service reports, such as an
        alias, is not passed on).
        """
        if os.geteuid() != 0:
            raise SkipTest("creating a network namespace needs root")
        if shutil.which("ip") is None:
            raise SkipTest("needs the ip command (iproute2)")
        suffix = token_hex(2)
        ns, a, b = f"gwd-test-{suffix}", f"gwdt{suffix}a", f"gwdt{suffix}b"
        ip("netns", "add", ns)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", ns], capture_output=True, timeout=10)
        netlink = NetlinkService(self.reactor, netns=ns)
        netlink.startService()
        try:
            waitFor(netlink.whenReady())
            self.assertEqual(sorted(netlink.interfaces()), ["lo"])

            def step(
                command: tuple[str, ...], check: Callable[[InterfaceState | None], bool]
            ) -> InterfaceState | None:
                d = stateOf(netlink, a, check)
                ip("-n", ns, *command)
                return waitFor(d)

            appeared = step(
                ("link", "add", a, "type", "veth", "peer", "name", b),
                lambda s: s is not None,
            )
            assert appeared is not None
            self.assertEqual(
                (appeared.up, appeared.carrier, appeared.addresses), (False, False, ())
            )
            address = IPv4Interface("198.51.100.1/24")
            step(
                ("addr", "add", str(address), "dev", a),
                lambda s: s is not None and s.addresses == (address,),
            )
            ip("-n", ns, "link", "set", b, "up")
            up = step(("link", "set", a, "up"), lambda s: s is not None and s.up and s.carrier)
            assert up is not None
            self.assertEqual(
                netlink.lanAddresses([a]), [LANAddress(a, up.index, address)]
            )
            step(("link", "set", b, "down"), lambda s: s is not None and s.up and not s.carrier)
            step(("link", "set", b, "up"), lambda s: s is not None and s.carrier)
            seen: list[InterfaceState | None] = []
            unwatch = netlink.watchInterface(a, seen.append)
            ip("-n", ns, "link", "set", a, "alias", "nothing we report")
            step(("link", "set", a, "mtu", "1400"), lambda s: s is not None and s.mtu == 1400)
            unwatch()
            self.assertEqual([s.mtu if s else s for s in seen], [1500, 1400])
            stats = waitFor(netlink.statistics(a))
            self.assertEqual(sorted(stats), ["rx_bytes", "rx_packets", "tx_bytes", "tx_packets"])
            step(
                ("addr", "del", str(address), "dev", a),
                lambda s: s is not None and s.addresses == (),
            )
            peerGone = stateOf(netlink, b, lambda s: s is None)
            step(("link", "del", a), lambda s: s is None)
            waitFor(peerGone)
            self.assertEqual(sorted(netlink.interfaces()), ["lo"])
        finally:
            self.stopAndCheck(netlink)

    def test_missingNamespace(self) -> None:
        """
        Asked to watch a namespace that does not exist, the service fails
        to become ready, logs why, and does not create the namespace.
        """
        if os.geteuid() != 0:
            raise SkipTest("entering a network namespace needs root")
        ns = f"gwd-test-{token_hex(2)}"
        netlink = NetlinkService(self.reactor, netns=ns, retryDelays=[60])
        netlink.startService()
        try:
            with self.assertRaises(Exception):
                waitFor(netlink.whenReady())
            self.assertFalse(os.path.exists(f"/var/run/netns/{ns}"))
            self.assertTrue(self.flushLoggedErrors())
        finally:
            self.stopAndCheck(netlink)
            if os.path.exists(f"/var/run/netns/{ns}"):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


class KernelWriteTests(SynchronousTestCase):
    """
    The writing half changes the real kernel, idempotently, and the
    reading half still sees every event meanwhile.
    """

    def test_writes(self) -> None:
        """
        In a namespace of its own: set a veth up with an MTU, add an
        address, routes in a table and a rule (twice: no error), see the
        address event, then remove everything (twice: no error).
        """
        from ipaddress import IPv4Address, IPv4Network

        reactor = asyncioReactor()
        if os.geteuid() != 0:
            raise SkipTest("creating a network namespace needs root")
        suffix = token_hex(2)
        ns = f"gwd-test-{suffix}"
        ip("netns", "add", ns)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", ns], capture_output=True, timeout=10)
        ip("-n", ns, "link", "add", "wan0", "type", "veth", "peer", "name", "isp0")
        ip("-n", ns, "link", "set", "isp0", "up")
        netlink = NetlinkService(reactor, netns=ns)
        netlink.startService()
        try:
            waitFor(netlink.whenReady())
            address = IPv4Interface("198.51.100.2/24")
            gateway = IPv4Address("198.51.100.1")
            source = IPv4Network("198.51.100.2/32")
            default = IPv4Network("0.0.0.0/0")
            seen = stateOf(netlink, "wan0", lambda s: s is not None and s.carrier and address in s.addresses)
            for _ in range(2):
                waitFor(netlink.setLinkUp("wan0"))
                waitFor(netlink.setMTU("wan0", 1400))
                waitFor(netlink.addAddress("wan0", address))
                waitFor(netlink.addRoute("wan0", address.network, None, 100, address.ip))
                waitFor(netlink.addRoute("wan0", default, gateway, 100, address.ip))
                waitFor(netlink.addRule(source, 100, 10000))
            state = waitFor(seen)
            assert state is not None
            self.assertEqual(state.mtu, 1400)
            routes = subprocess.run(
                ["ip", "-n", ns, "route", "show", "table", "100"], capture_output=True, text=True, timeout=10
            ).stdout
            self.assertIn("default via 198.51.100.1 dev wan0", routes)
            self.assertIn("198.51.100.0/24 dev wan0", routes)
            rules = subprocess.run(["ip", "-n", ns, "rule"], capture_output=True, text=True, timeout=10).stdout
            self.assertEqual(rules.count("from 198.51.100.2 lookup 100"), 1)
            gone = stateOf(netlink, "wan0", lambda s: s is not None and not s.addresses)
            for _ in range(2):
                waitFor(netlink.removeRule(source, 100, 10000))
                waitFor(netlink.removeRoute("wan0", default, gateway, 100))
                waitFor(netlink.removeRoute("wan0", address.network, None, 100))
                waitFor(netlink.removeAddress("wan0", address))
            waitFor(gone)
            waitFor(netlink.removeAddress("no-such-if", address))
            self.failureResultOf(netlink.addAddress("no-such-if", address), UnknownInterface)
            routes = subprocess.run(
                ["ip", "-n", ns, "route", "show", "table", "all"], capture_output=True, text=True, timeout=10
            ).stdout
            self.assertNotIn("table 100", routes)
        finally:
            waitFor(netlink.stopService())


class RouteWriterTests(SynchronousTestCase):
    """
    The service is the multi-WAN router's L{IRouteWriter} on the real
    kernel.
    """

    def test_routerOps(self) -> None:
        """
        In a namespace of its own: the router's routes (WAN table, main
        default route) and rules (fwmark with mask, from address,
        suppress_prefixlength) are added, read back exactly (protocol 77
        only, not the kernel's own), replaced atomically, and deleted
        (twice: deleting what is gone succeeds); adding an existing route
        key fails and stops the rest.
        """
        from ipaddress import IPv4Address, IPv4Network

        from gatewayd.router import (
            MAIN_TABLE,
            IRouteWriter,
            KernelState,
            Route,
            RouteOp,
            Rule,
            WANState,
            desiredState,
            diff,
        )

        reactor = asyncioReactor()
        if os.geteuid() != 0:
            raise SkipTest("creating a network namespace needs root")
        ns = f"gwd-test-{token_hex(2)}"
        ip("netns", "add", ns)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", ns], capture_output=True, timeout=10)
        for wan, isp, address in (("wan0", "isp0", "198.51.100.2/24"), ("wan1", "isp1", "203.0.113.2/24")):
            ip("-n", ns, "link", "add", wan, "type", "veth", "peer", "name", isp)
            ip("-n", ns, "addr", "add", address, "dev", wan)
            ip("-n", ns, "link", "set", isp, "up")
            ip("-n", ns, "link", "set", wan, "up")
        netlink = NetlinkService(reactor, netns=ns)
        self.assertTrue(verifyObject(IRouteWriter, netlink))
        netlink.startService()
        try:
            waitFor(netlink.whenReady())
            wans = [
                WANState("isp1", "wan0", 10, True, True, IPv4Interface("198.51.100.2/24"), IPv4Address("198.51.100.1")),
                WANState("isp2", "wan1", 20, True, True, IPv4Interface("203.0.113.2/24"), None),
            ]
            first = desiredState(wans, "isp1")
            waitFor(netlink.apply(diff(KernelState(), first)))
            self.assertEqual(waitFor(netlink.read()), first)
            rules = subprocess.run(["ip", "-n", ns, "rule"], capture_output=True, text=True, timeout=10).stdout
            self.assertIn("lookup main suppress_prefixlength 0 proto 77", rules)
            self.assertIn("fwmark 0x200/0xff00 lookup 101 proto 77", rules)
            second = desiredState(wans, "isp2")
            ops = diff(first, second)
            self.assertEqual([op.action for op in ops if op.item.table == MAIN_TABLE], ["replace"])
            waitFor(netlink.apply(ops))
            self.assertEqual(waitFor(netlink.read()), second)
            main = subprocess.run(["ip", "-n", ns, "route", "show", "default"], capture_output=True, text=True, timeout=10).stdout
            self.assertEqual(main.strip(), "default dev wan1 proto 77 scope link src 203.0.113.2")
            existing = Route(MAIN_TABLE, IPv4Network("0.0.0.0/0"), "wan0", IPv4Address("198.51.100.1"))
            extra = Rule(1300, 100, source=IPv4Network("10.9.9.9/32"))
            with self.assertRaises(OSError):
                waitFor(netlink.apply([RouteOp("add", existing), RouteOp("add", extra)]))
            self.assertEqual(waitFor(netlink.read()), second)
            for _ in range(2):
                waitFor(netlink.apply(diff(second, KernelState())))
            self.assertEqual(sorted(map(str, waitFor(netlink.read()).routes)), [])
            self.assertEqual(waitFor(netlink.read()), KernelState())
            rules = subprocess.run(["ip", "-n", ns, "rule"], capture_output=True, text=True, timeout=10).stdout
            self.assertNotIn("proto 77", rules)
        finally:
            waitFor(netlink.stopService())
