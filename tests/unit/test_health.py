"""
Tests for L{gatewayd.health}: the verdict of a WAN's health monitor on a
L{Clock} with a scripted prober, and the real probers on loopback.

The real probers run on a L{MemoryReactorClock}: the test waits for their
socket with C{select} (bounded) and calls C{doRead}/C{doWrite} itself, so
no global reactor runs and both trial and pytest run them. Only loopback
traffic is sent.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatewayd.config import HealthConfig
from gatewayd.health import (
    SO_MARK,
    FlapGuard,
    HealthMonitor,
    ICMPProber,
    IProber,
    TCPProber,
    checksum,
    echoRequest,
    parseEchoReply,
    proberFor,
)
from gatewayd.interfaces import LinkStatus

GATEWAY = IPv4Address("203.0.113.1")
ADDRESS = IPv4Interface("203.0.113.2/24")
QUAD9 = IPv4Address("9.9.9.9")
CLOUDFLARE = IPv4Address("1.1.1.1")
UP_LINK = LinkStatus(carrier=True, address=ADDRESS, gateway=GATEWAY)
LOOPBACK = IPv4Address("127.0.0.1")
TIMEOUT = 2.0


@implementer(IProber)
class ScriptedProber:
    """
    A prober whose targets answer as the test says: C{True} or C{False}
    at once, or C{None}: never (the probe waits until it is cancelled).

    @ivar sent: every probe as C{(target, source, mark, timeout)}.
    @ivar waiting: the probes not answered yet.
    """

    name = "scripted"

    def __init__(self, answers: dict[IPv4Address, bool | None] | None = None) -> None:
        self.answers: dict[IPv4Address, bool | None] = dict(answers or {})
        self.default: bool | None = True
        self.sent: list[tuple[IPv4Address, IPv4Address | None, int, float]] = []
        self.waiting: list[Deferred[bool]] = []
        self.mostWaiting = 0

    def answerAll(self, answer: bool | None) -> None:
        self.default = answer
        self.answers.clear()

    def probe(
        self, target: IPv4Address, source: IPv4Address | None, mark: int, timeout: float
    ) -> Deferred[bool]:
        self.sent.append((target, source, mark, timeout))
        answer = self.answers.get(target, self.default)
        if answer is not None:
            return succeed(answer)
        d: Deferred[bool] = Deferred(lambda d: self.waiting.remove(d))
        self.waiting.append(d)
        self.mostWaiting = max(self.mostWaiting, len(self.waiting))
        return d


def monitor(
    testCase: SynchronousTestCase,
    config: HealthConfig = HealthConfig(targets=(QUAD9,)),
    link: LinkStatus = UP_LINK,
    **kwargs: Any,
) -> tuple[HealthMonitor, Clock, ScriptedProber, list[tuple[bool, str]]]:
    """
    @return: a started monitor on a fresh clock whose prober answers, and
        the list its observer appends C{(healthy, reason)} to.
    """
    clock, prober, seen = Clock(), ScriptedProber(), []
    health = HealthMonitor(clock, "isp1", config, prober, mark=0x100, link=link, **kwargs)
    health.addObserver(lambda healthy, reason: seen.append((healthy, reason)))
    health.startService()
    testCase.addCleanup(health.stopService)
    return health, clock, prober, seen


def rounds(clock: Clock, count: int, interval: float = 1.0) -> None:
    """
    Advance C{clock} one interval at a time (one big step would run a
    repeating call only once).
    """
    for _ in range(count):
        clock.advance(interval)


class ProberInterfaceTests(SynchronousTestCase):
    def test_provided(self) -> None:
        """
        Both real probers and the scripted one provide L{IProber}, named as
        the configuration's C{probe} key names them.
        """
        icmp, tcp = ICMPProber(MemoryReactorClock()), TCPProber(MemoryReactorClock())
        for prober in (icmp, tcp, ScriptedProber()):
            self.assertTrue(verifyObject(IProber, prober))
        self.assertEqual((icmp.name, tcp.name), ("icmp", "tcp"))

    def test_proberFor(self) -> None:
        """
        The configuration's C{probe} value picks the prober; TCP probes go
        to port 443 unless told otherwise.
        """
        reactor = MemoryReactorClock()
        self.assertIsInstance(proberFor("icmp", reactor), ICMPProber)
        tcp = proberFor("tcp", reactor)
        assert isinstance(tcp, TCPProber)
        self.assertEqual(tcp.port, 443)
        self.assertEqual(proberFor("tcp", reactor, tcpPort=53).port, 53)  # type: ignore[attr-defined]
        self.assertRaises(ValueError, proberFor, "http", reactor)


class HysteresisTests(SynchronousTestCase):
    """
    Rounds, counts and the verdict.
    """

    def test_firstRoundDecides(self) -> None:
        """
        A WAN whose target answers is healthy as soon as its first round
        ends, at start, without waiting for C{up_after} rounds.
        """
        health, clock, prober, seen = monitor(self)
        self.assertTrue(health.healthy)
        self.assertEqual(seen, [(True, "first good probe round (answered by 9.9.9.9)")])

    def test_unknownUntilFirstRound(self) -> None:
        """
        Until its first round ends the WAN is neither up nor down, and not
        healthy.
        """
        clock, prober = Clock(), ScriptedProber()
        prober.answerAll(None)
        health = HealthMonitor(clock, "isp1", HealthConfig(targets=(QUAD9,)), prober, link=UP_LINK)
        health.startService()
        self.addCleanup(health.stopService)
        self.assertEqual((health.state, health.healthy), ("unknown", False))
        clock.advance(0.8)
        self.assertEqual((health.state, health.healthy), ("down", False))
        self.assertEqual(health.reason, "no answer from 9.9.9.9 in 1 round")

    def test_probesLeaveByTheirWAN(self) -> None:
        """
        Every probe is sent from the WAN's address with the WAN's mark, and
        times out after 0.8 of the interval.
        """
        health, clock, prober, seen = monitor(self)
        self.assertEqual(prober.sent, [(QUAD9, ADDRESS.ip, 0x100, 0.8)])

    def test_roundEveryInterval(self) -> None:
        """
        Rounds start every C{interval} seconds, one probe per target.
        """
        config = HealthConfig(targets=(QUAD9, CLOUDFLARE), interval=2.0)
        health, clock, prober, seen = monitor(self, config)
        clock.advance(1.9)
        self.assertEqual(len(prober.sent), 2)
        clock.advance(0.1)
        self.assertEqual([p[0] for p in prober.sent], [QUAD9, CLOUDFLARE] * 2)

    def test_downAfterConsecutiveBadRounds(self) -> None:
        """
        A healthy WAN stays healthy through C{down_after - 1} unanswered
        rounds and is unhealthy after the C{down_after}th, with the
        targets and the count in the reason.
        """
        health, clock, prober, seen = monitor(self)
        prober.answerAll(False)
        rounds(clock, 2)
        self.assertTrue(health.healthy)
        rounds(clock, 1)
        self.assertFalse(health.healthy)
        self.assertEqual(seen[-1], (False, "no answer from 9.9.9.9 in 3 rounds"))

    def test_goodRoundResetsBadCount(self) -> None:
        """
        Bad rounds must follow each other: two bad, one good and two bad
        again leave the WAN healthy.
        """
        health, clock, prober, seen = monitor(self)
        for answer in (False, False, True, False, False):
            prober.answerAll(answer)
            rounds(clock, 1)
        self.assertTrue(health.healthy)
        self.assertEqual(len(seen), 1)

    def test_upAfterConsecutiveGoodRounds(self) -> None:
        """
        An unhealthy WAN (that was healthy before) becomes healthy after
        C{up_after} answered rounds in a row, not before; a bad round in
        between starts the count again.
        """
        health, clock, prober, seen = monitor(self, HealthConfig(targets=(QUAD9,), upAfter=3))
        clock.advance(100)  # up long enough not to count as a flap (FlapGuardTests)
        prober.answerAll(False)
        rounds(clock, 3)
        self.assertFalse(health.healthy)
        for answer in (True, True, False, True, True):
            prober.answerAll(answer)
            rounds(clock, 1)
        self.assertFalse(health.healthy)
        rounds(clock, 1)
        self.assertTrue(health.healthy)
        self.assertEqual(seen[-1][0], True)
        self.assertIn("3 good probe rounds in a row (answered by 9.9.9.9)", seen[-1][1])

    def test_anyTargetSuffices(self) -> None:
        """
        A round is good if any target answers: one dead target does not
        make the WAN unhealthy; all of them dead do.
        """
        config = HealthConfig(targets=(QUAD9, CLOUDFLARE))
        health, clock, prober, seen = monitor(self, config)
        prober.answers[QUAD9] = False
        rounds(clock, 5)
        self.assertTrue(health.healthy)
        self.assertEqual(health.status().answers, ((QUAD9, False), (CLOUDFLARE, True)))
        prober.answerAll(False)
        rounds(clock, 3)
        self.assertFalse(health.healthy)
        self.assertEqual(health.reason, "no answer from 9.9.9.9, 1.1.1.1 in 3 rounds")

    def test_unansweredProbeTimesOut(self) -> None:
        """
        A probe the prober never ends counts as unanswered after the
        timeout, and is cancelled then.
        """
        health, clock, prober, seen = monitor(self)
        prober.answerAll(None)
        clock.advance(1.0)
        self.assertEqual(len(prober.waiting), 1)
        clock.advance(0.8)
        self.assertEqual(prober.waiting, [])
        self.assertEqual(health.status().badRounds, 1)

    def test_proberFailureIsNoAnswer(self) -> None:
        """
        A prober that fails instead of answering C{False} is logged and
        counts as no answer.
        """
        health, clock, prober, seen = monitor(self)
        prober.probe = lambda *a: fail(OSError(errno.EPERM, "nope"))  # type: ignore[method-assign]
        with capturedLogs() as events:
            rounds(clock, 3)
        self.assertFalse(health.healthy)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 3)
        self.assertTrue(any("probing 9.9.9.9 failed" in formatEvent(e) for e in events))

    def test_timeoutShorterThanInterval(self) -> None:
        """
        The timeout defaults to 0.8 of the interval, at most 3 s, and one
        that is not shorter than the interval is refused.
        """
        clock, prober = Clock(), ScriptedProber()
        slow = HealthMonitor(clock, "a", HealthConfig(interval=10.0), prober)
        fast = HealthMonitor(clock, "a", HealthConfig(interval=0.5), prober)
        self.assertEqual((slow.timeout, fast.timeout), (3.0, 0.4))
        with self.assertRaises(ValueError):
            HealthMonitor(clock, "a", HealthConfig(interval=1.0), prober, timeout=1.0)


class BlackoutTests(SynchronousTestCase):
    """
    Detection times with the default settings.
    """

    def test_defaultsDetectBlackoutWithinFiveSeconds(self) -> None:
        """
        With the defaults (interval 1 s, down_after 3), an upstream
        blackout that starts at any moment of a round's cycle is detected
        within 5 s: at worst 3.8 s after it starts (just after an answer),
        at best 2.8 s.
        """
        worst, best = 0.0, 99.0
        for tenth in range(10):
            health, clock, prober, seen = monitor(self, HealthConfig(targets=(QUAD9,)))
            for _ in range(50 + tenth):
                clock.advance(0.1)
            start = clock.seconds()
            prober.answerAll(None)  # probes dropped upstream: never answered
            for step in range(1000):
                if not health.healthy:
                    break
                clock.advance(0.01)
            detected = clock.seconds() - start
            worst, best = max(worst, detected), min(best, detected)
            health.stopService()
        self.assertLessEqual(worst, 5.0)
        self.assertTrue(3.75 <= worst <= 3.85, worst)
        self.assertTrue(2.75 <= best <= 2.95, best)


class LinkTests(SynchronousTestCase):
    """
    The link's carrier and address.
    """

    def test_carrierLossImmediate(self) -> None:
        """
        Losing the carrier makes the WAN unhealthy at once, in the same
        call, with reason C{no carrier}; the probe in flight is cancelled
        and no more are sent while the carrier is away.
        """
        health, clock, prober, seen = monitor(self)
        prober.answerAll(None)
        clock.advance(1.0)
        self.assertEqual(len(prober.waiting), 1)
        health.linkChanged(LinkStatus(carrier=False, address=ADDRESS, gateway=GATEWAY))
        self.assertFalse(health.healthy)
        self.assertEqual(seen[-1], (False, "no carrier"))
        self.assertEqual(prober.waiting, [])
        sent = len(prober.sent)
        rounds(clock, 10)
        self.assertEqual(len(prober.sent), sent)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_addressLossImmediate(self) -> None:
        """
        Losing the address (a lease lost) makes the WAN unhealthy at once,
        with reason C{no address}.
        """
        health, clock, prober, seen = monitor(self)
        health.linkChanged(LinkStatus(carrier=True))
        self.assertEqual(seen[-1], (False, "no address"))

    def test_carrierReturns(self) -> None:
        """
        When the carrier returns, a round starts at once, and the WAN is
        healthy again after C{up_after} good rounds.
        """
        health, clock, prober, seen = monitor(self)
        clock.advance(100)
        health.linkChanged(LinkStatus(carrier=False, address=ADDRESS, gateway=GATEWAY))
        sent = len(prober.sent)
        clock.advance(100)
        health.linkChanged(UP_LINK)
        self.assertEqual(len(prober.sent), sent + 1)
        self.assertFalse(health.healthy)
        rounds(clock, 2)
        self.assertTrue(health.healthy)
        self.assertEqual(seen[-1][0], True)

    def test_noCarrierAtStart(self) -> None:
        """
        A WAN without carrier at start is unhealthy (without telling the
        observers: it never was healthy) and sends nothing; it is healthy
        after its first good round once the carrier comes.
        """
        health, clock, prober, seen = monitor(self, link=LinkStatus())
        self.assertEqual((health.state, health.reason), ("down", "no carrier"))
        self.assertEqual((prober.sent, seen), ([], []))
        health.linkChanged(UP_LINK)
        self.assertTrue(health.healthy)

    def test_addressChangeRestartsRound(self) -> None:
        """
        A new address cancels the round in flight (its probes came from the
        old address) and starts one from the new address at once.
        """
        health, clock, prober, seen = monitor(self)
        prober.answerAll(None)
        clock.advance(1.0)
        newAddress = IPv4Interface("198.51.100.7/24")
        health.linkChanged(LinkStatus(carrier=True, address=newAddress, gateway=GATEWAY))
        self.assertEqual(len(prober.waiting), 1)
        self.assertEqual(prober.sent[-1][1], newAddress.ip)
        self.assertEqual(health.status().badRounds, 0)

    def test_gatewayIsDefaultTarget(self) -> None:
        """
        Without configured targets the WAN's gateway is probed, and a new
        gateway from the link is probed from the next round on.
        """
        health, clock, prober, seen = monitor(self, HealthConfig())
        self.assertEqual(prober.sent[-1][0], GATEWAY)
        other = IPv4Address("203.0.113.254")
        health.linkChanged(LinkStatus(carrier=True, address=ADDRESS, gateway=other))
        clock.advance(1.0)
        self.assertEqual(prober.sent[-1][0], other)
        self.assertEqual(health.targets(), (other,))

    def test_noTargetsFollowsLink(self) -> None:
        """
        A WAN with neither targets nor a known gateway sends no probes: it
        is healthy while its link is usable, unhealthy at once without it.
        """
        health, clock, prober, seen = monitor(
            self, HealthConfig(), link=LinkStatus(carrier=True, address=ADDRESS)
        )
        rounds(clock, 3)
        self.assertTrue(health.healthy)
        self.assertEqual(prober.sent, [])
        health.linkChanged(LinkStatus(carrier=False, address=ADDRESS))
        self.assertEqual(seen[-1], (False, "no carrier"))


    def test_noTargetsLoggedOnceSettled(self) -> None:
        """
        "No probe targets" is said only once the link is usable and still
        has no gateway, not at start while the link has not reported one;
        once, however many statuses follow; again if it becomes true again.
        """
        clock, prober = Clock(), ScriptedProber()
        health = HealthMonitor(clock, "isp1", HealthConfig(), prober, link=LinkStatus())
        with capturedLogs() as events:
            health.startService()
            health.linkChanged(LinkStatus(carrier=True))
            health.linkChanged(UP_LINK)
            health.stopService()
        self.assertEqual([e for e in events if "has no probe targets" in formatEvent(e)], [])

        health = HealthMonitor(clock, "isp2", HealthConfig(), prober, link=LinkStatus())
        noGateway = LinkStatus(carrier=True, address=ADDRESS)
        with capturedLogs() as events:
            health.startService()
            health.linkChanged(noGateway)
            health.linkChanged(LinkStatus(carrier=False, address=ADDRESS))
            health.linkChanged(noGateway)
            health.linkChanged(UP_LINK)
            health.linkChanged(noGateway)
            health.stopService()
        lines = [formatEvent(e) for e in events if "has no probe targets" in formatEvent(e)]
        self.assertEqual(
            lines,
            [
                "WAN isp2 has no probe targets (none configured, no gateway known with address "
                "203.0.113.2/24): its health follows its link"
            ]
            * 2,
        )

    def test_noTargetsAtStart(self) -> None:
        """
        A link usable at start without a gateway is said to have no probe
        targets at start; one with configured targets never is.
        """
        clock, prober = Clock(), ScriptedProber()
        link = LinkStatus(carrier=True, address=ADDRESS)
        with capturedLogs() as events:
            health = HealthMonitor(clock, "isp1", HealthConfig(), prober, link=link)
            health.startService()
            health.stopService()
            health = HealthMonitor(clock, "isp2", HealthConfig(targets=(QUAD9,)), prober, link=link)
            health.startService()
            health.stopService()
        lines = [formatEvent(e) for e in events if "has no probe targets" in formatEvent(e)]
        self.assertEqual(len(lines), 1)
        self.assertIn("WAN isp1 ", lines[0])


class FlapGuardTests(SynchronousTestCase):
    """
    A WAN that comes and goes is kept down longer each time.
    """

    def goDown(self, clock: Clock, prober: ScriptedProber, health: HealthMonitor) -> None:
        prober.answerAll(False)
        for _ in range(10):
            if not health.healthy:
                return
            clock.advance(1)
        raise AssertionError("did not go down")

    def upAfter(self, clock: Clock, prober: ScriptedProber, health: HealthMonitor) -> float:
        prober.answerAll(True)
        start = clock.seconds()
        for _ in range(1000):
            clock.advance(1)
            if health.healthy:
                return clock.seconds() - start
        raise AssertionError("did not come up")

    def test_holdDoublesPerFlap(self) -> None:
        """
        Coming back after an ordinary failure takes C{up_after} rounds; a
        WAN that goes down less than 60 s after coming up has flapped and
        must answer for 10 s before it is healthy again, then 20 s, 40 s,
        up to 300 s (plus the second until the first answered round).
        """
        health, clock, prober, seen = monitor(self)
        clock.advance(100)
        self.goDown(clock, prober, health)
        self.assertEqual(self.upAfter(clock, prober, health), 3)
        durations = []
        for _ in range(7):
            self.goDown(clock, prober, health)
            durations.append(self.upAfter(clock, prober, health))
        self.assertEqual(durations, [11, 21, 41, 81, 161, 301, 301])
        self.assertEqual(health.status().flaps, 7)

    def test_stableForgives(self) -> None:
        """
        A WAN that stays up for 60 s is forgiven its flaps.
        """
        health, clock, prober, seen = monitor(self)
        clock.advance(100)
        self.goDown(clock, prober, health)
        self.upAfter(clock, prober, health)
        self.goDown(clock, prober, health)
        self.assertEqual(self.upAfter(clock, prober, health), 11)
        clock.advance(60)
        self.goDown(clock, prober, health)
        self.assertEqual(health.status().flaps, 0)
        self.assertEqual(self.upAfter(clock, prober, health), 3)

    def test_holdNeverDelaysDown(self) -> None:
        """
        A held WAN still goes down after C{down_after} bad rounds, and
        carrier loss still takes it down at once.
        """
        health, clock, prober, seen = monitor(self)
        clock.advance(100)
        self.goDown(clock, prober, health)
        self.upAfter(clock, prober, health)
        self.goDown(clock, prober, health)
        self.upAfter(clock, prober, health)
        prober.answerAll(False)
        rounds(clock, 3)
        self.assertFalse(health.healthy)
        self.upAfter(clock, prober, health)
        health.linkChanged(LinkStatus(carrier=False, address=ADDRESS))
        self.assertFalse(health.healthy)

    def test_carrierFlapping(self) -> None:
        """
        A cable that makes and breaks contact every few seconds moves the
        WAN at most once per hold: over 10 minutes of a carrier that is up
        for 4 s and down for 1 s, the WAN becomes healthy only a handful of
        times.
        """
        health, clock, prober, seen = monitor(self)
        clock.advance(100)
        down = LinkStatus(carrier=False, address=ADDRESS, gateway=GATEWAY)
        for _ in range(120):
            health.linkChanged(down)
            clock.advance(1)
            health.linkChanged(UP_LINK)
            rounds(clock, 4)
        ups = [s for s in seen if s[0]]
        # First one at start, one before the first flap; the holds (10 s,
        # 20 s, ...) are longer than the 4 s the carrier stays up.
        self.assertEqual(len(ups), 2)

    def test_flapGuardConfigurable(self) -> None:
        """
        The guard's window, first hold and longest hold can be chosen.
        """
        guard = FlapGuard(window=30, hold=5, maxHold=12)
        self.assertEqual([guard.holdFor(n) for n in range(5)], [0, 5, 10, 12, 12])

    def test_heldLogged(self) -> None:
        """
        A held WAN says once that it answers again and how long it is held.
        """
        health, clock, prober, seen = monitor(self)
        clock.advance(100)
        self.goDown(clock, prober, health)
        self.upAfter(clock, prober, health)
        self.goDown(clock, prober, health)
        with capturedLogs() as events:
            self.upAfter(clock, prober, health)
        held = [formatEvent(e) for e in events if "held down" in formatEvent(e)]
        self.assertEqual(
            held,
            ["WAN isp1 answers again but flapped 1 times: held down until it has answered "
             "for 10 s in a row"],
        )


class ServiceTests(SynchronousTestCase):
    def test_oneRoundAtATime(self) -> None:
        """
        However slow the targets, never more than one round (one probe per
        target) is in flight.
        """
        config = HealthConfig(targets=(QUAD9, CLOUDFLARE))
        health, clock, prober, seen = monitor(self, config)
        prober.answerAll(None)
        for _ in range(1000):
            clock.advance(0.05)
        self.assertEqual(prober.mostWaiting, 2)

    def test_stopLeavesNothing(self) -> None:
        """
        Stopping cancels the round in flight and the next one: no delayed
        call is left and no probe waits.
        """
        health, clock, prober, seen = monitor(self)
        prober.answerAll(None)
        clock.advance(1)
        health.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(prober.waiting, [])
        health.linkChanged(LinkStatus())
        health.linkChanged(UP_LINK)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_restart(self) -> None:
        """
        A stopped monitor starts probing again when started.
        """
        health, clock, prober, seen = monitor(self)
        health.stopService()
        sent = len(prober.sent)
        health.startService()
        self.assertEqual(len(prober.sent), sent + 1)

    def test_logLines(self) -> None:
        """
        Each change of state is one log line with the WAN, the cause and
        how long the previous state lasted (and, for a blackout, how long
        ago the last answer came).
        """
        clock, prober = Clock(), ScriptedProber()
        health = HealthMonitor(clock, "isp1", HealthConfig(targets=(QUAD9,)), prober, link=UP_LINK)
        with capturedLogs() as events:
            health.startService()
            clock.advance(100)
            prober.answerAll(False)
            rounds(clock, 3)
            health.linkChanged(LinkStatus(carrier=False, address=ADDRESS))
            clock.advance(2)
            prober.answerAll(True)
            health.linkChanged(UP_LINK)
            rounds(clock, 2)
            health.stopService()
        lines = [formatEvent(e) for e in events]
        self.assertEqual(
            lines,
            [
                "WAN isp1 is healthy: first good probe round (answered by 9.9.9.9); "
                "it was unknown for 0.0 s",
                "WAN isp1 is unhealthy: no answer from 9.9.9.9 in 3 rounds; last answer "
                "3.0 s ago; it was up for 103.0 s",
                "WAN isp1 is still unhealthy: no carrier",
                "WAN isp1 is healthy: 3 good probe rounds in a row (answered by 9.9.9.9); "
                "it was down for 4.0 s",
            ],
        )
        self.assertEqual([e.get("healthy") for e in events], [True, False, None, True])

    def test_status(self) -> None:
        """
        The status an admin reads from the manhole says the state, why,
        since when, what is probed and how the last round went.
        """
        health, clock, prober, seen = monitor(self)
        clock.advance(5)
        prober.answerAll(False)
        clock.advance(1)
        status = health.status()
        self.assertEqual(
            (status.wan, status.state, status.healthy, status.since, status.targets),
            ("isp1", "up", True, 0.0, (QUAD9,)),
        )
        self.assertEqual(
            (status.answers, status.goodRounds, status.badRounds), (((QUAD9, False),), 0, 1)
        )


# The real probers, on loopback


def settle(reactor: MemoryReactorClock, d: Deferred[bool]) -> object:
    """
    Let the reactor's readers and writers run (waiting for them with
    C{select}, bounded) until C{d} fires.

    @return: C{d}'s result.
    """
    results: list[object] = []
    d.addBoth(results.append)
    for _ in range(20):
        if results:
            break
        readers, writers = list(reactor.readers), list(reactor.writers)
        readable, writable, _ = select.select(readers, writers, [], TIMEOUT)
        for r in readable:
            r.doRead()
        for w in writable:
            w.doWrite()
    if not results:
        raise AssertionError("the probe did not end")
    return results[0]


def markOf(descriptor: Any) -> int:
    dup = socket.socket(fileno=os.dup(descriptor.fileno()))
    try:
        return dup.getsockopt(socket.SOL_SOCKET, SO_MARK)
    finally:
        dup.close()


def icmpProber(testCase: SynchronousTestCase) -> tuple[ICMPProber, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    prober = ICMPProber(reactor)
    try:
        prober._open()[0].close()
    except OSError as e:
        raise SkipTest(f"no ICMP socket allowed here: {e}")
    return prober, reactor


def needsMark() -> None:
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, SO_MARK, 0x100)
    except OSError as e:
        raise SkipTest(f"setting SO_MARK needs CAP_NET_ADMIN: {e}")


class PacketTests(SynchronousTestCase):
    def test_echoRequest(self) -> None:
        """
        An echo request carries type 8, the identifier, sequence and
        payload, and a checksum that makes the whole sum to zero.
        """
        packet = echoRequest(0x1234, 7, b"gatewayd")
        self.assertEqual(packet[:2], b"\x08\x00")
        self.assertEqual(struct.unpack("!HH", packet[4:8]), (0x1234, 7))
        self.assertEqual(checksum(packet), 0)
        self.assertEqual(checksum(b"\x00\x01\xf2\x03\xf4\xf5\xf6\xf7"), 0x220D)  # RFC 1071

    def test_parseEchoReply(self) -> None:
        """
        Echo replies are read with or without their IPv4 header; anything
        else is not a reply.
        """
        reply = b"\x00\x00\x00\x00\x12\x34\x00\x07payload"
        ip = b"\x45" + bytes(19)
        ipWithOptions = b"\x46" + bytes(23)
        cases = [
            (reply, False, (0x1234, 7, b"payload")),
            (ip + reply, True, (0x1234, 7, b"payload")),
            (ipWithOptions + reply, True, (0x1234, 7, b"payload")),
            (b"\x08" + reply[1:], False, None),  # an echo request
            (b"\x03\x01" + reply[2:], False, None),  # host unreachable
            (reply[:7], False, None),
            (ip[:19], True, None),
            (b"\x60" + bytes(19) + reply, True, None),  # not IPv4
        ]
        for data, withIP, expected in cases:
            self.assertEqual(parseEchoReply(data, withIP), expected, data)


class ICMPProberTests(SynchronousTestCase):
    """
    Echo requests to 127.0.0.1.
    """

    def test_answered(self) -> None:
        """
        127.0.0.1 answers an echo request sent from 127.0.0.1; the socket
        is closed afterwards and no timer is left.
        """
        prober, reactor = icmpProber(self)
        d = prober.probe(LOOPBACK, LOOPBACK, 0, 1.0)
        self.assertEqual(len(reactor.readers), 1)
        self.assertIs(settle(reactor, d), True)
        self.assertEqual((reactor.readers, reactor.getDelayedCalls()), (set(), []))
        self.assertEqual(prober.inFlight, 0)

    def test_marked(self) -> None:
        """
        The probe's socket carries the WAN's mark, so the WAN's rules route
        it.
        """
        needsMark()
        prober, reactor = icmpProber(self)
        d = prober.probe(LOOPBACK, LOOPBACK, 0x200, 1.0)
        [reader] = reactor.readers
        self.assertEqual(markOf(reader), 0x200)
        self.assertIs(settle(reactor, d), True)

    def test_timeout(self) -> None:
        """
        Without an answer within the timeout the probe is unanswered and
        its socket closed.
        """
        prober, reactor = icmpProber(self)
        d = prober.probe(LOOPBACK, LOOPBACK, 0, 1.0)
        [reader] = reactor.readers
        reactor.advance(1.0)
        self.assertIs(self.successResultOf(d), False)
        self.assertEqual(reactor.readers, set())
        self.assertEqual(reader.fileno(), -1)

    def test_cancel(self) -> None:
        """
        A cancelled probe closes its socket and its timer.
        """
        prober, reactor = icmpProber(self)
        d = prober.probe(LOOPBACK, LOOPBACK, 0, 1.0)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual((reactor.readers, reactor.getDelayedCalls()), (set(), []))

    def test_sourceNotLocal(self) -> None:
        """
        A source address the host does not have (the WAN lost it) makes
        the probe unanswered at once.
        """
        prober, reactor = icmpProber(self)
        d = prober.probe(LOOPBACK, IPv4Address("192.0.2.77"), 0, 1.0)
        self.assertIs(self.successResultOf(d), False)
        self.assertEqual(reactor.readers, set())

    def test_bounded(self) -> None:
        """
        Beyond C{maxInFlight} probes waiting, a probe is not sent and is
        unanswered.
        """
        prober, reactor = icmpProber(self)
        prober.maxInFlight = 1
        first = prober.probe(LOOPBACK, LOOPBACK, 0, 1.0)
        self.assertIs(self.successResultOf(prober.probe(LOOPBACK, LOOPBACK, 0, 1.0)), False)
        self.assertIs(settle(reactor, first), True)


class TCPProberTests(SynchronousTestCase):
    """
    Connections to a port on 127.0.0.1.
    """

    def listener(self) -> int:
        server = socket.socket()
        self.addCleanup(server.close)
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        return int(server.getsockname()[1])

    def closedPort(self) -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def test_accepted(self) -> None:
        """
        A listening port answers; the probe's socket is closed afterwards.
        """
        reactor = MemoryReactorClock()
        prober = TCPProber(reactor, port=self.listener())
        d = prober.probe(LOOPBACK, LOOPBACK, 0, 1.0)
        self.assertIs(settle(reactor, d), True)
        self.assertEqual((reactor.writers, reactor.getDelayedCalls()), (set(), []))

    def test_marked(self) -> None:
        """
        The connection carries the WAN's mark.
        """
        needsMark()
        reactor = MemoryReactorClock()
        prober = TCPProber(reactor, port=self.listener())
        d = prober.probe(LOOPBACK, LOOPBACK, 0x300, 1.0)
        [writer] = reactor.writers
        self.assertEqual(markOf(writer), 0x300)
        self.assertIs(settle(reactor, d), True)

    def test_refused(self) -> None:
        """
        A refused connection is an answer (the reset proves the path) by
        default, and not one when so configured.
        """
        for refusedIsAnswer in (True, False):
            reactor = MemoryReactorClock()
            prober = TCPProber(reactor, port=self.closedPort(), refusedIsAnswer=refusedIsAnswer)
            d = prober.probe(LOOPBACK, LOOPBACK, 0, 1.0)
            self.assertIs(settle(reactor, d), refusedIsAnswer)
            self.assertEqual(reactor.writers, set())

    def test_timeout(self) -> None:
        """
        A connection not made within the timeout is unanswered, and its
        socket closed.
        """
        reactor = MemoryReactorClock()
        prober = TCPProber(reactor, port=self.listener())
        d = prober.probe(LOOPBACK, LOOPBACK, 0, 1.0)
        if reactor.writers:
            reactor.advance(1.0)
            self.assertIs(self.successResultOf(d), False)
        self.assertEqual((reactor.writers, reactor.getDelayedCalls()), (set(), []))

    def test_sourceNotLocal(self) -> None:
        """
        A source address the host does not have makes the probe unanswered
        at once.
        """
        reactor = MemoryReactorClock()
        prober = TCPProber(reactor, port=self.listener())
        d = prober.probe(LOOPBACK, IPv4Address("192.0.2.77"), 0, 1.0)
        self.assertIs(self.successResultOf(d), False)
