# -*- test-case-name: tests.unit.test_health -*-
"""
The health of one WAN: its carrier, and probes sent out of that WAN.

L{HealthMonitor} turns two inputs into one verdict, healthy or not:

  - the link (L{HealthMonitor.linkChanged}, fed from netlink): a link that
    loses its carrier or its address makes the WAN unhealthy at once, in
    the same reactor turn, without waiting for probes;
  - probe rounds while the link is usable. A round sends one probe to every
    target at the same time and waits for all of them (at most the probe
    timeout); the round is good if I{any} target answered, so one target
    that is down does not take the WAN with it. The targets are
    C{health.targets}, or the WAN's gateway when none are configured, or
    none at all (a link without a known gateway): then every round is good
    and the health follows the link.

Hysteresis and timing:

  - Rounds start every C{interval} seconds (start to start); the first
    starts as soon as the link is usable. Never more than one round is in
    flight: a probe that the prober does not end in time is cancelled
    after the timeout, which is shorter than the interval.
  - The probe timeout is C{min(0.8 * interval, 3)} seconds unless given.
  - A healthy WAN becomes unhealthy after C{down_after} bad rounds in a
    row; an unhealthy one becomes healthy after C{up_after} good rounds in
    a row. Until the first round ends the state is C{unknown}
    (L{HealthMonitor.healthy} is false); a WAN that has not been healthy
    since start becomes healthy on its first good round.
  - Detection time of an upstream blackout is at most
    C{down_after * interval + timeout}: with the defaults (1 s, 3, 3) and
    0.8 s timeout, between 2.8 and 3.8 s after the last answer.

Flap guard (L{FlapGuard}): a WAN that goes down after having been up for
less than C{window} seconds (60) has flapped. After its first flap it must
answer for C{hold} seconds (10) in a row, in addition to C{up_after} rounds,
before it is healthy again; every further flap doubles that time, up to
C{maxHold} (300). Staying up for C{window} seconds forgets the flaps. The
guard never delays going down: a failing WAN is always left at once.

Probes leave by their WAN whatever the main default route is: they are
sent from the WAN's address with its firewall mark, so the WAN's policy
rules (L{gatewayd.router}) route them through its own table. The real
probers, L{ICMPProber} (echo request) and L{TCPProber} (TCP connect), use
one non-blocking socket per probe, watched by the reactor.
"""

from __future__ import annotations

import errno
import os
import random
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any, Callable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    TimeoutError,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
    IReadDescriptor,
    IWriteDescriptor,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from gatewayd.config import HealthConfig
from gatewayd.interfaces import LinkStatus
from gatewayd.observers import Observers

#: Health states.
UNKNOWN = "unknown"
UP = "up"
DOWN = "down"

#: The share of the interval a probe may take when no timeout is given.
TIMEOUT_SHARE = 0.8
#: The longest probe timeout chosen by default (seconds).
MAX_TIMEOUT = 3.0


class IProber(Interface):
    """
    Sends one probe and says whether it was answered.
    """

    name = Attribute("The probe type as the configuration names it: C{icmp} or C{tcp}.")

    def probe(target: IPv4Address, source: IPv4Address | None, mark: int, timeout: float) -> Any:
        """
        Probe C{target} from C{source} (any local address if L{None}) with
        firewall mark C{mark} (none if 0).

        @return: a L{Deferred} that fires with C{True} if C{target}
            answered within C{timeout} seconds, C{False} otherwise (no
            answer, unreachable, the socket could not be set up). It should
            not fail; a failure counts as no answer. Cancelling it ends the
            probe and frees what it holds.
        """


@dataclass(frozen=True)
class FlapGuard:
    """
    How long a flapping WAN is kept unhealthy.

    @ivar window: a WAN that goes down after less than this many seconds
        up has flapped; one that stays up this long is forgiven.
    @ivar hold: after the first flap, the WAN must answer for this many
        seconds in a row before it is healthy again.
    @ivar maxHold: each further flap doubles the hold, up to this.
    """

    window: float = 60.0
    hold: float = 10.0
    maxHold: float = 300.0

    def holdFor(self, flaps: int) -> float:
        """
        @return: how long a WAN that flapped C{flaps} times in a row must
            answer before it is healthy again (0 if it did not flap).
        """
        if flaps <= 0:
            return 0.0
        return float(min(self.hold * 2 ** min(flaps - 1, 30), self.maxHold))


@dataclass(frozen=True)
class HealthStatus:
    """
    A WAN's health as an admin reads it (the manhole, status pages).

    @ivar wan: the WAN's name.
    @ivar state: C{"unknown"}, C{"up"} or C{"down"}.
    @ivar reason: why it is in that state, e.g. C{"no carrier"} or
        C{"no answer from 9.9.9.9 in 3 rounds"}.
    @ivar since: when it entered that state (reactor seconds).
    @ivar targets: the addresses probed now.
    @ivar answers: each target of the last round, and whether it answered.
    @ivar goodRounds: good rounds in a row (0 after a bad one).
    @ivar badRounds: bad rounds in a row (0 after a good one).
    @ivar flaps: flaps in a row (see L{FlapGuard}).
    @ivar hold: how long it must answer before it is up again, if down.
    """

    wan: str
    state: str
    reason: str
    since: float
    targets: tuple[IPv4Address, ...]
    answers: tuple[tuple[IPv4Address, bool], ...]
    goodRounds: int
    badRounds: int
    flaps: int
    hold: float

    @property
    def healthy(self) -> bool:
        return self.state == UP


def _names(targets: Sequence[IPv4Address]) -> str:
    return ", ".join(str(t) for t in targets)


class HealthMonitor(Service):
    """
    Decides whether one WAN is healthy; see the module docstring.

    @ivar wan: the WAN's name.
    @ivar config: its L{HealthConfig}.
    @ivar mark: the firewall mark its probes carry.
    @ivar timeout: the probe timeout in seconds.
    @ivar flapGuard: the L{FlapGuard}.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        wan: str,
        config: HealthConfig,
        prober: IProber,
        *,
        mark: int = 0,
        timeout: float | None = None,
        flapGuard: FlapGuard = FlapGuard(),
        link: LinkStatus | None = None,
    ) -> None:
        """
        @param link: the link's status now, if known (L{linkChanged} tells
            the monitor about every later one).
        @raise ValueError: if C{timeout} is not shorter than the interval.
        """
        if timeout is None:
            timeout = min(config.interval * TIMEOUT_SHARE, MAX_TIMEOUT)
        if not 0 < timeout < config.interval:
            raise ValueError(
                f"the probe timeout ({timeout} s) must be shorter than the interval "
                f"({config.interval} s)"
            )
        self.wan = wan
        self.config = config
        self.mark = mark
        self.timeout = timeout
        self.flapGuard = flapGuard
        self._clock = clock
        self._prober = prober
        self._link = link if link is not None else LinkStatus()
        self._observers: Observers[[bool, str]] = Observers(f"the health of {wan}")
        self._state = UNKNOWN
        self._reason = "not probed yet"
        self._since = clock.seconds()
        self._everUp = False
        self._upAt: float | None = None
        self._flaps = 0
        self._good = 0
        self._bad = 0
        self._goodSince = 0.0
        self._lastAnswerAt: float | None = None
        self._answers: tuple[tuple[IPv4Address, bool], ...] = ()
        self._tick: IDelayedCall | None = None
        self._rounds = 0
        self._inFlight: int | None = None
        self._probes: list[Deferred[bool]] = []
        self._heldReported = False
        self._noTargetsReported = False

    # Inputs and outputs

    @property
    def healthy(self) -> bool:
        """
        Whether the WAN is healthy now (C{False} while unknown).
        """
        return self._state == UP

    @property
    def state(self) -> str:
        """
        C{"unknown"}, C{"up"} or C{"down"}.
        """
        return self._state

    @property
    def reason(self) -> str:
        """
        Why the WAN is in its state, for logs and status details.
        """
        return self._reason

    def addObserver(self, observer: Callable[[bool, str], None]) -> Callable[[], None]:
        """
        Call C{observer(healthy, reason)} whenever L{healthy} changes.

        @return: a callable that removes the observer.
        """
        return self._observers.add(observer)

    def targets(self) -> tuple[IPv4Address, ...]:
        """
        @return: the addresses probed now: the configured targets, else the
            link's gateway, else none.
        """
        if self.config.targets:
            return self.config.targets
        if self._link.gateway is not None:
            return (self._link.gateway,)
        return ()

    def status(self) -> HealthStatus:
        """
        @return: the health as an admin reads it.
        """
        return HealthStatus(
            wan=self.wan,
            state=self._state,
            reason=self._reason,
            since=self._since,
            targets=self.targets(),
            answers=self._answers,
            goodRounds=self._good,
            badRounds=self._bad,
            flaps=self._flaps,
            hold=self.flapGuard.holdFor(self._flaps),
        )

    def linkChanged(self, status: LinkStatus) -> None:
        """
        The link's status changed: losing the carrier or the address makes
        the WAN unhealthy at once; a usable link (again, or with a new
        address) starts a probe round at once.
        """
        old, self._link = self._link, status
        if not self.running:
            return
        self._checkTargets()
        if not status.usable:
            self._stopProbing()
            self._goDown(self._linkReason(status))
        elif not old.usable or old.address != status.address:
            self._stopProbing()
            self._runRound()

    # IService

    def startService(self) -> None:
        super().startService()
        self._checkTargets()
        if self._link.usable:
            self._runRound()
        else:
            self._goDown(self._linkReason(self._link))

    def stopService(self) -> None:
        super().stopService()
        self._stopProbing()

    def _checkTargets(self) -> None:
        """
        Say once that the WAN has nothing to probe, when that is settled: its
        link is usable (it has its address, and whatever gateway it will
        learn with it) and still no gateway is known. Not at start, when a
        link often has not reported its gateway yet. Said again if it
        becomes true again after targets were known.
        """
        if self.targets():
            self._noTargetsReported = False
        elif self._link.usable and not self._noTargetsReported:
            self._noTargetsReported = True
            self.log.info(
                "WAN {wan} has no probe targets (none configured, no gateway known with "
                "address {address}): its health follows its link",
                wan=self.wan,
                address=self._link.address,
            )

    # Rounds

    @staticmethod
    def _linkReason(status: LinkStatus) -> str:
        return "no carrier" if not status.carrier else "no address"

    def _stopProbing(self) -> None:
        if self._tick is not None:
            if self._tick.active():
                self._tick.cancel()
            self._tick = None
        self._inFlight = None
        probes, self._probes = self._probes, []
        for d in probes:
            d.cancel()

    def _runRound(self) -> None:
        self._tick = self._clock.callLater(self.config.interval, self._runRound)
        if self._inFlight is not None:
            self.log.warn(
                "WAN {wan}: the previous probe round is still running; round skipped",
                wan=self.wan,
            )
            return
        assert self._link.address is not None
        targets = self.targets()
        started = self._clock.seconds()
        self._rounds += 1
        roundId = self._inFlight = self._rounds
        probes = []
        for target in targets:
            d = maybeDeferred(
                self._prober.probe, target, self._link.address.ip, self.mark, self.timeout
            )
            d.addTimeout(self.timeout, self._clock)
            d.addCallbacks(bool, self._probeFailed, errbackArgs=(target,))
            probes.append(d)
        self._probes = probes
        gatherResults(probes).addCallback(self._roundEnded, roundId, started, targets)

    def _probeFailed(self, failure: Failure, target: IPv4Address) -> bool:
        if not failure.check(TimeoutError, CancelledError):
            self.log.failure(
                "WAN {wan}: probing {target} failed", failure, wan=self.wan, target=target
            )
        return False

    def _roundEnded(
        self,
        results: list[bool],
        roundId: int,
        started: float,
        targets: tuple[IPv4Address, ...],
    ) -> None:
        if self._inFlight != roundId:
            return  # cancelled: the link changed or the service stopped
        self._inFlight = None
        self._probes = []
        now = self._clock.seconds()
        self._answers = tuple(zip(targets, results))
        if any(results) or not targets:
            self._lastAnswerAt = now
            self._bad = 0
            if self._good == 0:
                self._goodSince = started
            self._good += 1
            self._judgeGood(now, targets)
        else:
            self._good = 0
            self._bad += 1
            self._judgeBad(targets)

    def _judgeGood(self, now: float, targets: tuple[IPv4Address, ...]) -> None:
        answered = (
            "answered by " + _names([t for t, ok in self._answers if ok])
            if targets
            else "link usable, no probe targets"
        )
        if self._state == UP:
            return
        if self._state == UNKNOWN or not self._everUp:
            self._goUp(f"first good probe round ({answered})")
            return
        if self._good < self.config.upAfter:
            return
        hold = self.flapGuard.holdFor(self._flaps)
        goodFor = now - self._goodSince
        if goodFor < hold:
            if not self._heldReported:
                self._heldReported = True
                self.log.info(
                    "WAN {wan} answers again but flapped {flaps} times: held down until it has "
                    "answered for {hold:.0f} s in a row",
                    wan=self.wan,
                    flaps=self._flaps,
                    hold=hold,
                )
            return
        held = f", after a {hold:.0f} s flap hold" if hold else ""
        self._goUp(f"{self._good} good probe rounds in a row ({answered}){held}")

    def _judgeBad(self, targets: tuple[IPv4Address, ...]) -> None:
        rounds = "round" if self._bad == 1 else "rounds"
        reason = f"no answer from {_names(targets)} in {self._bad} {rounds}"
        if self._state == UNKNOWN:
            self._goDown(reason)
        elif self._state == UP and self._bad >= self.config.downAfter:
            self._goDown(reason)

    # Transitions

    def _goUp(self, reason: str) -> None:
        now = self._clock.seconds()
        previous, duration = self._state, now - self._since
        self._state, self._reason, self._since = UP, reason, now
        self._everUp = True
        self._upAt = now
        self._bad = 0
        self._heldReported = False
        self.log.info(
            "WAN {wan} is healthy: {reason}; it was {previous} for {duration:.1f} s",
            wan=self.wan,
            healthy=True,
            reason=reason,
            previous=previous,
            duration=duration,
        )
        self._observers.notify(True, reason)

    def _goDown(self, reason: str) -> None:
        now = self._clock.seconds()
        previous, duration = self._state, now - self._since
        self._good = 0
        if previous == DOWN:
            if reason != self._reason:
                self._reason = reason
                self.log.info("WAN {wan} is still unhealthy: {reason}", wan=self.wan, reason=reason)
            return
        if previous == UP:
            if self._upAt is not None and now - self._upAt < self.flapGuard.window:
                self._flaps += 1
            else:
                self._flaps = 0
        self._state, self._reason, self._since = DOWN, reason, now
        silent = (
            f"; last answer {now - self._lastAnswerAt:.1f} s ago"
            if self._lastAnswerAt is not None and not reason.startswith("no carrier")
            and not reason.startswith("no address")
            else ""
        )
        flapped = f"; flapped {self._flaps} times in a row" if self._flaps else ""
        # Still coming up (no verdict yet) is news, not a warning.
        emit = self.log.info if previous == UNKNOWN else self.log.warn
        emit(
            "WAN {wan} is unhealthy: {reason}{silent}{flapped}; it was {previous} "
            "for {duration:.1f} s",
            wan=self.wan,
            healthy=False,
            reason=reason,
            silent=silent,
            flapped=flapped,
            previous=previous,
            duration=duration,
        )
        if previous == UP:
            self._observers.notify(False, reason)


# The real probers

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
SO_MARK = getattr(socket, "SO_MARK", 36)
SOL_RAW = 255
ICMP_FILTER = 1
IP_BIND_ADDRESS_NO_PORT = 24
#: Datagrams read from one probe socket per reactor turn, at most.
MAX_READS = 16
#: What follows the 8 random bytes in every echo request.
PAYLOAD = b"gatewayd"

#: errno values that only mean "no path now"; logged at debug level.
_UNREACHABLE = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, errno.ENETDOWN, errno.EHOSTDOWN}
)


def checksum(data: bytes) -> int:
    """
    @return: the Internet checksum (RFC 1071) of C{data}.
    """
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echoRequest(ident: int, sequence: int, payload: bytes) -> bytes:
    """
    @return: an ICMP echo request (without IP header).
    """
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, sequence)
    total = checksum(header + payload)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, total, ident, sequence) + payload


def parseEchoReply(data: bytes, withIPHeader: bool) -> tuple[int, int, bytes] | None:
    """
    @param withIPHeader: whether C{data} starts with the IPv4 header (raw
        sockets) or with the ICMP header (ping sockets).
    @return: C{(ident, sequence, payload)} of an echo reply, or L{None} if
        C{data} is anything else.
    """
    if withIPHeader:
        if len(data) < 20 or data[0] >> 4 != 4:
            return None
        data = data[(data[0] & 0x0F) * 4 :]
    if len(data) < 8:
        return None
    kind, code, _, ident, sequence = struct.unpack("!BBHHH", data[:8])
    if kind != ICMP_ECHO_REPLY or code != 0:
        return None
    return ident, sequence, data[8:]


@implementer(IReadDescriptor, IWriteDescriptor)
class _ProbeSocket:
    """
    One probe's socket, watched by the reactor until it is answered, times
    out or is cancelled; then it is closed and the L{Deferred} fires (or
    fails with L{CancelledError}).
    """

    def __init__(
        self, prober: "_SocketProber", sock: socket.socket, timeout: float, write: bool
    ) -> None:
        self._prober = prober
        self._reactor = prober.reactor
        self.socket = sock
        self._write = write
        self._done = False
        self.deferred: Deferred[bool] = Deferred(self._cancel)
        self._timer = self._reactor.callLater(timeout, self.finish, False)
        if write:
            self._reactor.addWriter(self)
        else:
            self._reactor.addReader(self)

    def fileno(self) -> int:
        return self.socket.fileno()

    def logPrefix(self) -> str:
        return f"{self._prober.name} probe"

    def doRead(self) -> None:
        pass

    def doWrite(self) -> None:
        pass

    def connectionLost(self, reason: object) -> None:
        self.finish(False)

    def _close(self) -> bool:
        if self._done:
            return False
        self._done = True
        if self._timer.active():
            self._timer.cancel()
        if self._write:
            self._reactor.removeWriter(self)
        else:
            self._reactor.removeReader(self)
        self.socket.close()
        self._prober.finished(self)
        return True

    def finish(self, answered: bool) -> None:
        if self._close():
            self.deferred.callback(answered)

    def _cancel(self, d: Deferred[bool]) -> None:
        self._close()


class _SocketProber:
    """
    What both real probers share: a bound on probes in flight, socket
    options that make a probe leave by its WAN, and logging each kind of
    error once until a probe succeeds.
    """

    log = Logger()
    name = ""

    def __init__(self, reactor: Any, maxInFlight: int) -> None:
        self.reactor = reactor
        self.maxInFlight = maxInFlight
        self._inFlight: set[_ProbeSocket] = set()
        self._reported: set[int] = set()

    @property
    def inFlight(self) -> int:
        """
        The number of probes waiting for an answer.
        """
        return len(self._inFlight)

    def finished(self, probe: _ProbeSocket) -> None:
        self._inFlight.discard(probe)

    def _full(self) -> bool:
        if len(self._inFlight) < self.maxInFlight:
            return False
        self.log.warn(
            "{prober} probes: {count} already in flight; probe not sent",
            prober=self.name,
            count=len(self._inFlight),
        )
        return True

    def _prepare(self, sock: socket.socket, source: IPv4Address | None, mark: int) -> None:
        sock.setblocking(False)
        if mark:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        if source is not None:
            sock.bind((str(source), 0))

    def _failed(
        self, error: OSError, target: IPv4Address, source: IPv4Address | None
    ) -> Deferred[bool]:
        code = error.errno or 0
        if code in _UNREACHABLE:
            self.log.debug(
                "{prober} probe {target} from {source}: {error}",
                prober=self.name, target=target, source=source, error=error,
            )
        elif code not in self._reported:
            self._reported.add(code)
            self.log.warn(
                "{prober} probe of {target} from {source} cannot be sent: {error} "
                "(reported once until a probe succeeds)",
                prober=self.name, target=target, source=source, error=error,
            )
        return succeed(False)

    def _track(self, probe: _ProbeSocket) -> Deferred[bool]:
        self._inFlight.add(probe)

        def succeeded(answered: bool) -> bool:
            if answered:
                self._reported.clear()
            return answered

        return probe.deferred.addCallback(succeeded)


class _EchoProbe(_ProbeSocket):
    def __init__(
        self,
        prober: "_SocketProber",
        sock: socket.socket,
        timeout: float,
        target: IPv4Address,
        raw: bool,
        ident: int,
        sequence: int,
        payload: bytes,
    ) -> None:
        self._target = str(target)
        self._raw = raw
        self._expected = (ident, sequence, payload)
        super().__init__(prober, sock, timeout, write=False)

    def doRead(self) -> None:
        for _ in range(MAX_READS):
            if self._done:
                return
            try:
                data, sender = self.socket.recvfrom(2048)
            except BlockingIOError:
                return
            except OSError:
                self.finish(False)  # an ICMP error for our request: unreachable
                return
            if sender[0] != self._target:
                continue
            reply = parseEchoReply(data, self._raw)
            if reply is None:
                continue
            ident, sequence, payload = reply
            wantIdent, wantSequence, wantPayload = self._expected
            # A ping socket's kernel replaces the identifier with its own.
            ours = ident == wantIdent or not self._raw
            if ours and sequence == wantSequence and payload == wantPayload:
                self.finish(True)
                return


@implementer(IProber)
class ICMPProber(_SocketProber):
    """
    ICMP echo probes, one socket per probe: an unprivileged "ping socket"
    (C{SOCK_DGRAM}, allowed by C{net.ipv4.ping_group_range}) when the
    system allows it, else a raw socket (needs C{CAP_NET_RAW}) that only
    receives echo replies (C{ICMP_FILTER}) from the target to the source
    (bound and connected). Replies match by identifier (raw sockets),
    sequence number and 8 random payload bytes. Setting the mark needs
    C{CAP_NET_ADMIN}.

    @ivar kind: C{"auto"}, C{"dgram"} or C{"raw"}; C{"auto"} becomes
        C{"raw"} after the first refused ping socket.
    """

    name = "icmp"

    def __init__(
        self,
        reactor: Any,
        *,
        kind: str = "auto",
        maxInFlight: int = 256,
        random: random.Random = random.SystemRandom(),
    ) -> None:
        if kind not in ("auto", "dgram", "raw"):
            raise ValueError(f"kind must be auto, dgram or raw, not {kind!r}")
        super().__init__(reactor, maxInFlight)
        self.kind = kind
        self._random = random
        self._sequence = random.getrandbits(16)

    def _open(self) -> tuple[socket.socket, bool]:
        if self.kind in ("auto", "dgram"):
            try:
                return socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP), False
            except OSError as e:
                if self.kind == "dgram" or e.errno not in (
                    errno.EACCES, errno.EPERM, errno.EPROTONOSUPPORT
                ):
                    raise
                self.kind = "raw"
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP), True

    def probe(
        self, target: IPv4Address, source: IPv4Address | None, mark: int, timeout: float
    ) -> Deferred[bool]:
        if self._full():
            return succeed(False)
        try:
            sock, raw = self._open()
        except OSError as e:
            return self._failed(e, target, source)
        try:
            self._prepare(sock, source, mark)
            if raw:
                # Let through echo replies (type 0) only.
                blocked = ~(1 << ICMP_ECHO_REPLY) & 0xFFFFFFFF
                sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", blocked))
            sock.connect((str(target), 0))
            ident = self._random.getrandbits(16) if raw else sock.getsockname()[1]
            self._sequence = (self._sequence + 1) & 0xFFFF
            payload = os.urandom(8) + PAYLOAD
            sock.send(echoRequest(ident, self._sequence, payload))
        except OSError as e:
            sock.close()
            return self._failed(e, target, source)
        return self._track(
            _EchoProbe(self, sock, timeout, target, raw, ident, self._sequence, payload)
        )


class _ConnectProbe(_ProbeSocket):
    def __init__(
        self, prober: "TCPProber", sock: socket.socket, timeout: float
    ) -> None:
        self._refusedIsAnswer = prober.refusedIsAnswer
        super().__init__(prober, sock, timeout, write=True)

    def doWrite(self) -> None:
        if self._done:
            return
        error = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self.finish(error == 0 or (error == errno.ECONNREFUSED and self._refusedIsAnswer))


@implementer(IProber)
class TCPProber(_SocketProber):
    """
    TCP connect probes: a non-blocking connect to C{target:port} from the
    WAN's address with its mark; the socket is closed with a reset (no
    TIME_WAIT) as soon as the handshake ends.

    @ivar port: the port connected to (443 by default: answered by the
        public resolvers and most web hosts people pick as targets).
    @ivar refusedIsAnswer: whether a refused connection (a TCP reset from
        the target) counts as an answer; it does by default, because the
        reset proves the path in both directions.
    """

    name = "tcp"

    def __init__(
        self,
        reactor: Any,
        *,
        port: int = 443,
        refusedIsAnswer: bool = True,
        maxInFlight: int = 256,
    ) -> None:
        super().__init__(reactor, maxInFlight)
        self.port = port
        self.refusedIsAnswer = refusedIsAnswer

    def probe(
        self, target: IPv4Address, source: IPv4Address | None, mark: int, timeout: float
    ) -> Deferred[bool]:
        if self._full():
            return succeed(False)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as e:
            return self._failed(e, target, source)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            try:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            except OSError:
                pass
            self._prepare(sock, source, mark)
            error = sock.connect_ex((str(target), self.port))
        except OSError as e:
            sock.close()
            return self._failed(e, target, source)
        if error in (errno.EINPROGRESS, errno.EAGAIN):
            return self._track(_ConnectProbe(self, sock, timeout))
        sock.close()
        if error == 0:
            return succeed(True)
        if error == errno.ECONNREFUSED:
            return succeed(self.refusedIsAnswer)
        return self._failed(OSError(error, os.strerror(error)), target, source)


@implementer(IProber)
class LinkOnlyProber:
    """
    Answers every probe at once: for links without a real interface (the
    C{simulated} link), whose health then follows the link.
    """

    name = "none"

    def probe(
        self, target: IPv4Address, source: IPv4Address | None, mark: int, timeout: float
    ) -> Deferred[bool]:
        return succeed(True)


def proberFor(probe: str, reactor: Any, *, tcpPort: int = 443) -> IProber:
    """
    @param probe: C{health.probe} from the configuration: C{"icmp"} or
        C{"tcp"}.
    @return: a real prober of that type (one can serve every WAN: each probe
        has its own socket, source and mark).
    @raise ValueError: for another type.
    """
    if probe == "icmp":
        return ICMPProber(reactor)
    if probe == "tcp":
        return TCPProber(reactor, port=tcpPort)
    raise ValueError(f"unknown probe type {probe!r}")


__all__ = [
    "proberFor",
    "FlapGuard",
    "HealthMonitor",
    "HealthStatus",
    "ICMPProber",
    "IProber",
    "LinkOnlyProber",
    "TCPProber",
    "UNKNOWN",
    "UP",
    "DOWN",
]
