"""
Tests for L{gatewayd.router}: the choice of the active WAN, the routes and
rules each state needs, the order of changes, and the service that applies
them one at a time.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatewayd.router import (
    MAIN_TABLE,
    IRouteWriter,
    KernelState,
    MemoryRouteWriter,
    MultiWANRouter,
    Route,
    RouteOp,
    Rule,
    WANState,
    applyOp,
    checkKernel,
    chooseActive,
    desiredState,
    diff,
    WANNumbers,
    numbersFor,
    numbersFromConfig,
    readSysctls,
    sysctlKeys,
)
from tests.support import temporaryPath

ISP1 = WANState(
    "isp1", "eth1", priority=10, connected=True, healthy=True,
    address=IPv4Interface("203.0.113.2/24"), gateway=IPv4Address("203.0.113.1"),
)
ISP2 = WANState(
    "isp2", "eth2", priority=20, connected=True, healthy=True,
    address=IPv4Interface("198.51.100.7/24"), gateway=IPv4Address("198.51.100.1"),
)
ISP3 = WANState(
    "isp3", "eth3", priority=20, connected=True, healthy=True,
    address=IPv4Interface("192.0.2.9/30"), gateway=IPv4Address("192.0.2.10"),
)


def mainDefault(state: KernelState) -> str | None:
    route = state.defaultRoute(MAIN_TABLE)
    return route.interface if route is not None else None


class NumbersTests(SynchronousTestCase):
    def test_fromConfigOrder(self) -> None:
        """
        The first WAN gets table 100 and mark 0x100, the second table 101
        and mark 0x200, with rule priorities 1100+i (mark) and 1200+i
        (source); more than 100 WANs are refused.
        """
        first, second = numbersFor(0), numbersFor(1)
        self.assertEqual(
            (first.table, first.mark, first.markRule, first.sourceRule), (100, 0x100, 1100, 1200)
        )
        self.assertEqual(
            (second.table, second.mark, second.markRule, second.sourceRule),
            (101, 0x200, 1101, 1201),
        )
        self.assertEqual(numbersFor(99).mark, 0x6400)
        self.assertRaises(ValueError, numbersFor, 100)

    def test_fromConfiguration(self) -> None:
        """
        The configuration's C{table} and C{mark} are the WAN's numbers, the
        same ones the NAT backend marks connections with; the router's
        tables and rules use them.
        """
        from gatewayd import config

        parsed = config.parse(
            '[lan]\ninterfaces = ["br-lan"]\n[[wan]]\nname = "isp1"\ninterface = "eth1"\ntable = 150\nmark = 0x300\n'
            'link = { type = "unmanaged" }\n'
            '[[wan]]\nname = "isp2"\ninterface = "eth2"\nlink = { type = "unmanaged" }\n',
            "/etc/gatewayd",
        )
        numbers = numbersFromConfig(parsed.wans)
        self.assertEqual(numbers["isp1"], WANNumbers(150, 0x300, 1100, 1200))
        self.assertEqual(numbers["isp2"], WANNumbers(101, 0x200, 1101, 1201))
        writer = MemoryRouteWriter()
        service = MultiWANRouter(Clock(), [ISP1, ISP2], writer, numbers=numbers)
        service.startService()
        self.assertIn(
            Rule(1100, 150, mark=0x300, mask=0xFF00), writer.state.rules
        )
        self.assertEqual(service.numbers("isp1").table, 150)
        self.assertIsNotNone(writer.state.defaultRoute(150))


class ChooseTests(SynchronousTestCase):
    """
    Which WAN carries the default route.
    """

    def test_priority(self) -> None:
        """
        The healthy connected WAN with the lowest priority value wins,
        whatever the configuration order.
        """
        self.assertEqual(chooseActive([ISP2, ISP1]), ISP1)

    def test_unhealthyOrDisconnected(self) -> None:
        """
        An unhealthy or disconnected WAN is passed over.
        """
        self.assertEqual(chooseActive([replace(ISP1, healthy=False), ISP2]), ISP2)
        self.assertEqual(chooseActive([replace(ISP1, connected=False), ISP2]), ISP2)

    def test_tiesByConfigOrder(self) -> None:
        """
        Among equal priorities the first in the configuration wins.
        """
        self.assertEqual(chooseActive([ISP3, ISP2]), ISP3)
        self.assertEqual(chooseActive([ISP2, ISP3]), ISP2)

    def test_none(self) -> None:
        """
        No WAN, or none healthy and connected: no choice.
        """
        self.assertIsNone(chooseActive([]))
        self.assertIsNone(
            chooseActive([replace(ISP1, healthy=False), replace(ISP2, connected=False)])
        )


class DesiredStateTests(SynchronousTestCase):
    def test_twoWANs(self) -> None:
        """
        Each WAN gets its table (connected subnet and default route from
        its address) and its mark and source rules; one rule lets the main
        table's specific routes win; the main default route goes via the
        active WAN.
        """
        state = desiredState([ISP1, ISP2], "isp2")
        a1, a2 = ISP1.address.ip, ISP2.address.ip  # type: ignore[union-attr]
        self.assertEqual(
            {str(r) for r in state.routes},
            {
                "203.0.113.0/24 dev eth1 src 203.0.113.2 scope link table 100 proto 77",
                "default via 203.0.113.1 dev eth1 src 203.0.113.2 table 100 proto 77",
                "198.51.100.0/24 dev eth2 src 198.51.100.7 scope link table 101 proto 77",
                "default via 198.51.100.1 dev eth2 src 198.51.100.7 table 101 proto 77",
                "default via 198.51.100.1 dev eth2 src 198.51.100.7 table main proto 77",
            },
        )
        self.assertEqual(
            sorted(state.rules),
            [
                Rule(1000, MAIN_TABLE, suppressPrefixLength=0),
                Rule(1100, 100, mark=0x100, mask=0xFF00),
                Rule(1101, 101, mark=0x200, mask=0xFF00),
                Rule(1200, 100, source=IPv4Network(a1)),
                Rule(1201, 101, source=IPv4Network(a2)),
            ],
        )
        self.assertEqual(
            [str(r) for r in sorted(state.rules)],
            [
                "1000: from all lookup main suppress_prefixlength 0 proto 77",
                "1100: from all fwmark 0x100/0xff00 lookup 100 proto 77",
                "1101: from all fwmark 0x200/0xff00 lookup 101 proto 77",
                "1200: from 203.0.113.2 lookup 100 proto 77",
                "1201: from 198.51.100.7 lookup 101 proto 77",
            ],
        )

    def test_unhealthyWANKeepsItsTable(self) -> None:
        """
        An unhealthy or disconnected WAN keeps its table and rules as long
        as it has an address: its probes and its port mappings' replies
        need them.
        """
        sick = replace(ISP1, healthy=False, connected=False)
        self.assertEqual(
            desiredState([sick, ISP2], "isp2"), desiredState([ISP1, ISP2], "isp2")
        )

    def test_noAddress(self) -> None:
        """
        A WAN without an address has no table, no rules and no default
        route; with no table at all the suppress rule goes too.
        """
        self.assertEqual(desiredState([replace(ISP1, address=None)], "isp1"), KernelState())

    def test_unmanaged(self) -> None:
        """
        A WAN whose routes another tool owns gets nothing, even when
        active.
        """
        other = replace(ISP2, managed=False)
        state = desiredState([ISP1, other], "isp2")
        self.assertEqual(state, desiredState([ISP1], None))
        self.assertIsNone(state.defaultRoute())

    def test_linkRoutes(self) -> None:
        """
        A WAN whose link fills its table and adds its source rule itself
        gets only its mark rule and (when active) the main default route
        from the router.
        """
        state = desiredState([replace(ISP1, linkRoutes=True), ISP2], "isp1")
        self.assertEqual(
            sorted(str(r) for r in state.routes if r.interface == "eth1"),
            ["default via 203.0.113.1 dev eth1 src 203.0.113.2 table main proto 77"],
        )
        self.assertEqual(
            sorted(str(r) for r in state.rules if r.table == 100),
            ["1100: from all fwmark 0x100/0xff00 lookup 100 proto 77"],
        )

    def test_pointToPoint(self) -> None:
        """
        A /32 address gets no subnet route, and a WAN without gateway a
        device default route.
        """
        ppp = WANState(
            "ppp", "ppp0", connected=True, healthy=True, address=IPv4Interface("100.64.0.5/32")
        )
        state = desiredState([ppp], "ppp")
        self.assertEqual(
            sorted(str(r) for r in state.routes),
            [
                "default dev ppp0 src 100.64.0.5 scope link table 100 proto 77",
                "default dev ppp0 src 100.64.0.5 scope link table main proto 77",
            ],
        )

    def test_metric(self) -> None:
        """
        The main default route's metric can be chosen.
        """
        route = desiredState([ISP1], "isp1", metric=5).defaultRoute()
        assert route is not None
        self.assertEqual(route.metric, 5)


def walk(old: KernelState, ops: Sequence[RouteOp]) -> list[KernelState]:
    """
    @return: every state on the way from C{old} through C{ops}, as the
        kernel would have it (L{applyOp} refuses to add what exists).
    """
    states = [old]
    for op in ops:
        states.append(applyOp(states[-1], op))
    return states


class DiffTests(SynchronousTestCase):
    """
    The order of kernel changes.
    """

    def assertNeverWithoutDefault(self, old: KernelState, new: KernelState) -> list[RouteOp]:
        ops = diff(old, new)
        states = walk(old, ops)
        self.assertEqual(states[-1], new)
        for state in states:
            self.assertIsNotNone(state.defaultRoute(), ops)
        return ops

    def test_failover(self) -> None:
        """
        Moving the default route to another WAN is one atomic replace:
        there is never a moment without a default route.
        """
        old = desiredState([ISP1, ISP2], "isp1")
        new = desiredState([replace(ISP1, healthy=False), ISP2], "isp2")
        ops = self.assertNeverWithoutDefault(old, new)
        self.assertEqual(
            [str(op) for op in ops],
            [
                "replace route default via 198.51.100.1 dev eth2 src 198.51.100.7 table main "
                "proto 77"
            ],
        )

    def test_addressChange(self) -> None:
        """
        A new address on the active WAN (a new lease): the WAN's table and
        the default route are replaced first, the rule for the new address
        added before the old one is deleted, and the old subnet route goes
        last.
        """
        moved = replace(
            ISP1, address=IPv4Interface("203.0.114.9/24"), gateway=IPv4Address("203.0.114.1")
        )
        old, new = desiredState([ISP1, ISP2], "isp1"), desiredState([moved, ISP2], "isp1")
        ops = self.assertNeverWithoutDefault(old, new)
        self.assertEqual(
            [str(op) for op in ops],
            [
                "add route 203.0.114.0/24 dev eth1 src 203.0.114.9 scope link table 100 proto 77",
                "replace route default via 203.0.114.1 dev eth1 src 203.0.114.9 table 100 proto 77",
                "replace route default via 203.0.114.1 dev eth1 src 203.0.114.9 table main "
                "proto 77",
                "add rule 1200: from 203.0.114.9 lookup 100 proto 77",
                "delete rule 1200: from 203.0.113.2 lookup 100 proto 77",
                "delete route 203.0.113.0/24 dev eth1 src 203.0.113.2 scope link table 100 "
                "proto 77",
            ],
        )

    def test_newWANBeforeRules(self) -> None:
        """
        A WAN that gets an address has its table filled before the rules
        that point at it exist.
        """
        old = desiredState([ISP1, replace(ISP2, address=None)], "isp1")
        ops = diff(old, desiredState([ISP1, ISP2], "isp1"))
        kinds = [(op.action, type(op.item).__name__) for op in ops]
        self.assertEqual(
            kinds, [("add", "Route"), ("add", "Route"), ("add", "Rule"), ("add", "Rule")]
        )

    def test_fromNothingAndBack(self) -> None:
        """
        From nothing everything is added (routes before rules); removing
        everything deletes rules before routes.
        """
        full = desiredState([ISP1, ISP2], "isp1")
        up = diff(KernelState(), full)
        self.assertEqual(walk(KernelState(), up)[-1], full)
        self.assertEqual({op.action for op in up}, {"add"})
        self.assertLess(
            max(i for i, op in enumerate(up) if isinstance(op.item, Route)),
            min(i for i, op in enumerate(up) if isinstance(op.item, Rule)),
        )
        down = diff(full, KernelState())
        self.assertEqual(walk(full, down)[-1], KernelState())
        self.assertLess(
            max(i for i, op in enumerate(down) if isinstance(op.item, Rule)),
            min(i for i, op in enumerate(down) if isinstance(op.item, Route)),
        )

    def test_nothingChanged(self) -> None:
        """
        The same state needs no change.
        """
        state = desiredState([ISP1, ISP2], "isp1")
        self.assertEqual(diff(state, state), [])


@implementer(IRouteWriter)
class ControlledWriter(MemoryRouteWriter):
    """
    A memory writer whose applications end when the test says.
    """

    def __init__(self, state: KernelState = KernelState()) -> None:
        super().__init__(state)
        self.waiting: list[tuple[Sequence[RouteOp], Deferred[None]]] = []

    def apply(self, ops: Sequence[RouteOp]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.waiting.append((ops, d))
        return d

    def finish(self) -> None:
        """
        Apply the oldest waiting change.
        """
        ops, d = self.waiting.pop(0)
        super().apply(ops)
        d.callback(None)

    def fail(self, error: Exception) -> None:
        """
        Fail the oldest waiting change, changing nothing.
        """
        ops, d = self.waiting.pop(0)
        d.errback(error)


def router(
    testCase: SynchronousTestCase,
    wans: Sequence[WANState] = (ISP1, ISP2),
    writer: Any = None,
    **kwargs: Any,
) -> tuple[MultiWANRouter, Clock, Any, list[tuple[str | None, str | None, str]]]:
    clock = Clock()
    writer = writer if writer is not None else MemoryRouteWriter()
    service = MultiWANRouter(clock, wans, writer, **kwargs)
    seen: list[tuple[str | None, str | None, str]] = []
    service.addObserver(lambda *args: seen.append(args))
    service.startService()
    testCase.addCleanup(service.stopService)
    return service, clock, writer, seen


class RouterServiceTests(SynchronousTestCase):
    """
    What an admin sees of the router: the kernel's routes, observers and
    log lines.
    """

    def test_interfaces(self) -> None:
        """
        The memory writer provides L{IRouteWriter}.
        """
        self.assertTrue(verifyObject(IRouteWriter, MemoryRouteWriter()))

    def test_start(self) -> None:
        """
        On start the kernel gets every WAN's table and rules and the
        default route via the preferred WAN, and observers hear it.
        """
        service, clock, writer, seen = router(self)
        self.assertEqual(writer.state, desiredState([ISP1, ISP2], "isp1"))
        self.assertEqual(service.active, "isp1")
        self.assertEqual(seen, [("isp1", None, "gatewayd started")])

    def test_failoverAndFailback(self) -> None:
        """
        When the preferred WAN becomes unhealthy the default route moves
        to the next one; when it is healthy again it moves back. Observers
        hear both, with the cause.
        """
        service, clock, writer, seen = router(self)
        service.wanChanged("isp1", "unhealthy: no answer from 9.9.9.9 in 3 rounds", healthy=False)
        self.assertEqual(mainDefault(writer.state), "eth2")
        service.wanChanged("isp1", "healthy: 3 good probe rounds", healthy=True)
        self.assertEqual(mainDefault(writer.state), "eth1")
        self.assertEqual(
            seen[1:],
            [
                ("isp2", "isp1", "isp1 unhealthy: no answer from 9.9.9.9 in 3 rounds"),
                ("isp1", "isp2", "isp1 healthy: 3 good probe rounds"),
            ],
        )

    def test_connectionLost(self) -> None:
        """
        A WAN whose connection leaves Connected (carrier or lease lost) is
        left too; losing its address removes its table and rules.
        """
        service, clock, writer, seen = router(self)
        service.wanChanged("isp1", "lost its lease", connected=False, address=None, gateway=None)
        self.assertEqual(service.active, "isp2")
        gone = replace(ISP1, connected=False, address=None, gateway=None)
        self.assertEqual(writer.state, desiredState([gone, ISP2], "isp2"))
        self.assertEqual(writer.state.defaultRoute(100), None)

    def test_noHealthyWAN(self) -> None:
        """
        With no healthy WAN left the active WAN is none, but the default
        route stays via the last one, and the log says so.
        """
        service, clock, writer, seen = router(self)
        service.wanChanged("isp2", "unhealthy", healthy=False)
        with capturedLogs() as events:
            service.wanChanged("isp1", "unhealthy", healthy=False)
        self.assertEqual(mainDefault(writer.state), "eth1")
        self.assertEqual(seen[-1], (None, "isp1", "isp1 unhealthy"))
        self.assertIn(
            "no healthy WAN, default route kept via isp1", formatEvent(events[-1])
        )
        service.wanChanged("isp2", "healthy", healthy=True)
        self.assertEqual((service.active, mainDefault(writer.state)), ("isp2", "eth2"))

    def test_noWANAtAll(self) -> None:
        """
        A router without WANs, or whose WANs have no address, changes
        nothing and chooses none.
        """
        service, clock, writer, seen = router(self, wans=())
        self.assertEqual((writer.applied, service.active, seen), ([], None, []))
        bare = [
            replace(ISP1, address=None, connected=False),
            replace(ISP2, address=None, connected=False),
        ]
        service, clock, writer, seen = router(self, wans=bare)
        self.assertEqual((writer.applied, service.active), ([], None))

    def test_unmanagedActive(self) -> None:
        """
        An unmanaged WAN can be the active one (what UPnP clients are
        shown), but gatewayd neither routes through it nor keeps its own
        default route then.
        """
        service, clock, writer, seen = router(self, wans=(replace(ISP1, managed=False), ISP2))
        self.assertEqual(service.active, "isp1")
        self.assertEqual(writer.state, desiredState([replace(ISP1, managed=False), ISP2], None))
        self.assertIsNone(writer.state.defaultRoute(100))

    def test_sameDecisionNoChange(self) -> None:
        """
        A change that alters nothing the router uses applies nothing, and
        a change of a backup WAN's address only touches its table and
        rules, with a log line but no observer call.
        """
        service, clock, writer, seen = router(self)
        applied = len(writer.applied)
        service.wanChanged("isp2", "healthy", healthy=True)
        self.assertEqual(len(writer.applied), applied)
        with capturedLogs() as events:
            service.wanChanged("isp2", "new lease", address=IPv4Interface("198.51.100.8/24"))
        self.assertEqual(len(writer.applied), applied + 1)
        self.assertEqual(len(seen), 1)
        self.assertEqual(
            [formatEvent(e) for e in events],
            ["Routes updated (4 changes) after 0 ms: isp2 new lease"],
        )

    def test_logLine(self) -> None:
        """
        Each change of the active WAN is one log line with the new and old
        WAN, the time from the event to the kernel having it, and the
        cause.
        """
        writer = ControlledWriter()
        service, clock, writer, seen = router(self, writer=writer)
        writer.finish()
        service.wanChanged("isp1", "no carrier", healthy=False)
        clock.advance(0.012)
        with capturedLogs() as events:
            writer.finish()
        self.assertEqual(
            [formatEvent(e) for e in events],
            ["Active WAN isp2 (was isp1) after 12 ms: isp1 no carrier"],
        )

    def test_badChanges(self) -> None:
        """
        An unknown WAN or field is a programming error.
        """
        service, clock, writer, seen = router(self)
        self.assertRaises(KeyError, service.wanChanged, "isp9", "x", healthy=True)
        self.assertRaises(TypeError, service.wanChanged, "isp1", "x", health=True)
        self.assertRaises(TypeError, service.wanChanged, "isp1", "x", name="other")

    def test_status(self) -> None:
        """
        The manhole shows every WAN's state, numbers and which is active.
        """
        service, clock, writer, seen = router(self)
        rows = service.status()
        self.assertEqual(
            rows[1],
            {
                "name": "isp2", "interface": "eth2", "priority": 20, "connected": True,
                "healthy": True, "address": "198.51.100.7/24", "gateway": "198.51.100.1",
                "managed": True, "linkRoutes": False, "table": 101, "mark": "0x200",
                "active": False,
            },
        )
        self.assertTrue(rows[0]["active"])


class SerialisationTests(SynchronousTestCase):
    """
    One application at a time, latest state wins.
    """

    def test_changesWhileApplying(self) -> None:
        """
        Changes that arrive while the kernel is being changed are applied
        after it, together, from the latest states only.
        """
        writer = ControlledWriter()
        service, clock, writer, seen = router(self, writer=writer)
        writer.finish()
        service.wanChanged("isp1", "unhealthy", healthy=False)
        self.assertEqual(len(writer.waiting), 1)
        service.wanChanged("isp1", "healthy", healthy=True)
        service.wanChanged("isp2", "unhealthy", healthy=False)
        self.assertEqual(len(writer.waiting), 1)
        writer.finish()
        self.assertEqual(len(writer.waiting), 1)
        self.assertEqual(mainDefault(writer.state), "eth2")
        writer.finish()
        self.assertEqual(writer.waiting, [])
        self.assertEqual(mainDefault(writer.state), "eth1")
        self.assertEqual(
            seen,
            [
                ("isp1", None, "gatewayd started"),
                ("isp2", "isp1", "isp1 unhealthy"),
                ("isp1", "isp2", "isp1 healthy; isp2 unhealthy"),
            ],
        )
        self.assertEqual(len(writer.applied), 3)

    def test_observersAfterKernel(self) -> None:
        """
        Observers hear of a new active WAN only once the kernel has the new
        default route.
        """
        writer = ControlledWriter()
        service, clock, writer, seen = router(self, writer=writer)
        self.assertEqual(seen, [])
        writer.finish()
        self.assertEqual(len(seen), 1)

    def test_failureRetried(self) -> None:
        """
        A failed change is logged and retried after 5 s from the kernel's
        state as read back, with the changes that came meanwhile.
        """
        writer = ControlledWriter()
        service, clock, writer, seen = router(self, writer=writer)
        writer.finish()
        service.wanChanged("isp1", "unhealthy", healthy=False)
        writer.fail(OSError("RTNETLINK answers: Network is unreachable"))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(service.active, "isp1")
        service.wanChanged("isp2", "new lease", address=IPv4Interface("198.51.100.8/24"))
        self.assertEqual(writer.waiting, [])
        clock.advance(5)
        writer.finish()
        self.assertEqual(service.active, "isp2")
        self.assertEqual(seen[-1], ("isp2", "isp1", "isp1 unhealthy; isp2 new lease"))
        moved = replace(ISP2, address=IPv4Interface("198.51.100.8/24"))
        self.assertEqual(writer.state, desiredState([replace(ISP1, healthy=False), moved], "isp2"))

    def test_changeDuringFailedApply(self) -> None:
        """
        A change that arrives while an application fails is retried with
        it, and the log and observers name both causes.
        """
        writer = ControlledWriter()
        service, clock, writer, seen = router(self, writer=writer)
        writer.finish()
        service.wanChanged("isp1", "unhealthy", healthy=False)
        service.wanChanged("isp2", "new lease", address=IPv4Interface("198.51.100.8/24"))
        writer.fail(OSError("RTNETLINK answers: File exists"))
        self.flushLoggedErrors(OSError)
        clock.advance(5)
        writer.finish()
        self.assertEqual(seen[-1], ("isp2", "isp1", "isp1 unhealthy; isp2 new lease"))

    def test_startReconciles(self) -> None:
        """
        On start the router reads what an earlier gatewayd left: what is
        still right stays, what is stale (a removed WAN's rule, an old
        default route) is replaced or removed, and nothing is added twice.
        """
        stale = Rule(1102, 102, mark=0x300, mask=0xFF00)
        left = desiredState([ISP1, ISP2], "isp2")
        writer = MemoryRouteWriter(replace(left, rules=left.rules | {stale}))
        service, clock, writer, seen = router(self, writer=writer)
        self.assertEqual(writer.state, desiredState([ISP1, ISP2], "isp1"))
        self.assertEqual(
            [str(op) for op in writer.applied[0]],
            [
                "replace route default via 203.0.113.1 dev eth1 src 203.0.113.2 table main "
                "proto 77",
                "delete rule 1102: from all fwmark 0x300/0xff00 lookup 102 proto 77",
            ],
        )

    def test_stopKeeps(self) -> None:
        """
        With C{on_stop = "keep"} stopping leaves the routes and rules, and
        no timer.
        """
        service, clock, writer, seen = router(self)
        before = writer.state
        self.successResultOf(service.stopService())
        self.assertEqual(writer.state, before)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stopCleans(self) -> None:
        """
        With C{on_stop = "clean"} stopping waits for the change in progress
        and then removes every route and rule gatewayd added.
        """
        writer = ControlledWriter()
        service, clock, writer, seen = router(self, writer=writer, onStop="clean")
        d = service.stopService()
        self.assertNoResult(d)
        writer.finish()
        writer.finish()
        self.successResultOf(d)
        self.assertEqual(writer.state, KernelState())

    def test_stopCancelsRetry(self) -> None:
        """
        A retry pending at stop is dropped.
        """
        writer = ControlledWriter()
        service, clock, writer, seen = router(self, writer=writer)
        writer.fail(OSError("no"))
        self.flushLoggedErrors(OSError)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        self.successResultOf(service.stopService())
        self.assertEqual(clock.getDelayedCalls(), [])
        service.wanChanged("isp1", "unhealthy", healthy=False)
        self.assertEqual(writer.waiting, [])


class KernelSettingsTests(SynchronousTestCase):
    """
    The sysctls multi-WAN needs, and what to say when they are wrong.
    """

    GOOD = {
        "net.ipv4.ip_forward": "1",
        "net.ipv4.conf.all.rp_filter": "0",
        "net.ipv4.conf.all.src_valid_mark": "0",
        "net.ipv4.conf.eth1.rp_filter": "2",
        "net.ipv4.conf.eth1.src_valid_mark": "0",
        "net.ipv4.conf.eth2.rp_filter": "0",
        "net.ipv4.conf.eth2.src_valid_mark": "0",
    }

    def check(self, **changes: str) -> list[str]:
        values = dict(self.GOOD)
        for key, value in changes.items():
            key = "net.ipv4." + key.replace("__", ".")
            if value == "":
                del values[key]
            else:
                values[key] = value
        return checkKernel(values, ["eth1", "eth2"])

    def test_table(self) -> None:
        """
        Forwarding off and strict reverse path filtering on a WAN (set on
        the interface or for all) are reported with the fix;
        C{src_valid_mark=1} (for all or the interface) makes strict
        filtering work; loose or no filtering is fine.
        """
        strict = (
            "net.ipv4.conf.eth2.rp_filter=1 (strict) on eth2 drops inbound traffic on a "
            "backup WAN; set it to 2 (loose) or net.ipv4.conf.all.src_valid_mark=1"
        )
        cases: list[tuple[dict[str, str], list[str]]] = [
            ({}, []),
            (
                {"ip_forward": "0"},
                [
                    "net.ipv4.ip_forward=0: the router does not forward LAN traffic to any "
                    "WAN; set it to 1"
                ],
            ),
            ({"conf__eth2__rp_filter": "1"}, [strict]),
            ({"conf__eth2__rp_filter": "1", "conf__all__src_valid_mark": "1"}, []),
            ({"conf__eth2__rp_filter": "1", "conf__eth2__src_valid_mark": "1"}, []),
            (
                {"conf__all__rp_filter": "1"},
                [
                    "net.ipv4.conf.eth2.rp_filter=0 with net.ipv4.conf.all.rp_filter=1 (strict) "
                    "on eth2 drops inbound traffic on a backup WAN; set it to 2 (loose) or "
                    "net.ipv4.conf.all.src_valid_mark=1"
                ],
            ),
            ({"conf__all__rp_filter": "2", "conf__eth2__rp_filter": "1"}, []),
            (
                {"ip_forward": ""},
                ["net.ipv4.ip_forward could not be read; LAN traffic is forwarded only if it is 1"],
            ),
            (
                {"conf__eth1__rp_filter": ""},
                [
                    "net.ipv4.conf.eth1.rp_filter could not be read (is eth1 there?); strict "
                    "reverse path filtering would drop inbound traffic on a backup WAN"
                ],
            ),
        ]
        for changes, expected in cases:
            self.assertEqual(self.check(**changes), expected, changes)

    def test_read(self) -> None:
        """
        Values are read from C{/proc/sys} (here a copy of its layout);
        missing keys are left out.
        """
        root = temporaryPath(self)
        ipv4 = root.child("net").child("ipv4")
        ipv4.child("conf").child("eth1").makedirs()
        ipv4.child("ip_forward").setContent(b"1\n")
        ipv4.child("conf").child("eth1").child("rp_filter").setContent(b"2\n")
        keys = sysctlKeys(["eth1"])
        self.assertEqual(
            keys,
            [
                "net.ipv4.ip_forward",
                "net.ipv4.conf.all.rp_filter",
                "net.ipv4.conf.all.src_valid_mark",
                "net.ipv4.conf.eth1.rp_filter",
                "net.ipv4.conf.eth1.src_valid_mark",
            ],
        )
        self.assertEqual(
            readSysctls(keys, root),
            {"net.ipv4.ip_forward": "1", "net.ipv4.conf.eth1.rp_filter": "2"},
        )

    def test_readProc(self) -> None:
        """
        The real C{/proc/sys} is readable (on Linux).
        """
        values = readSysctls(sysctlKeys(["lo"]))
        self.assertIn(values.get("net.ipv4.ip_forward"), ("0", "1"))
        self.assertIn("net.ipv4.conf.lo.rp_filter", values)
