# -*- test-case-name: tests.unit.test_connection -*-
"""
The connection state machine of one WAN (WANIPConnection:2 section 2.6,
Figure 5): ConnectionStatus, LastConnectionError, Uptime, ExternalIPAddress
and the three disconnect timers, driving the WAN's L{ILink}.

L{WANConnection} is the facade the WANIPConnection:2 actions and the WAN
service call. Each of its methods sends one input to an Automat machine; an
input that the current state refuses raises the spec's L{UPnPError} from
that state's transition, so no caller ever asks "what state are you in?".

Decisions where the specification leaves a choice (see the spec digest,
WANIPConnection-2.md section 6):

  - ConnectionType is always C{IP_Routed}, so 710 InvalidConnectionType is
    never raised. C{SetConnectionType("IP_Routed")} succeeds (changing
    nothing) while Unconfigured or Disconnected and raises 703 in the other
    states; C{IP_Bridged} or C{Unconfigured} raise 731 ReadOnly in every
    state (the type can never change, so 703 would send the client to try
    again in vain); a value outside Table 3 raises 601.
  - Every state is implemented, so every intermediate status is reported:
    a link that is usable at once shows C{Disconnected -> Connecting ->
    Connected}, a termination C{-> Disconnecting -> Disconnected}.
  - The WAN is always on: L{WANConnection.start} requests a connection, and a
    link that fails while C{Connected} sends the connection back to
    C{Connecting} (not to Disconnecting) with LastConnectionError
    C{ERROR_NO_CARRIER} (carrier lost) or C{ERROR_ISP_DISCONNECT} (address
    lost), unless the link names another cause (C{LinkStatus.error}, e.g.
    C{ERROR_IP_CONFIGURATION} when a new address could not be configured).
    After C{setupTimeout} seconds in C{Connecting} the status is
    C{Disconnected} (C{ERROR_NO_CARRIER}, else the link's C{error}, else
    C{ERROR_IP_CONFIGURATION}) but
    the link keeps trying, and the connection becomes C{Connected} as soon
    as the link is usable. RequestTermination and ForceTermination answer
    711 there, as in any C{Disconnected} state; EnabledForInternet = 0 stops
    the link.
  - A failing C{link.connect()} ends the attempt: C{Disconnected} with
    C{ERROR_IP_CONFIGURATION}, and nothing retries until the next
    RequestConnection (or EnabledForInternet going back to 1).
  - AutoDisconnectTime expiry reports C{ERROR_USER_DISCONNECT} (the limit is
    the user's setting), IdleDisconnectTime expiry C{ERROR_IDLE_DISCONNECT}.
    Both go through C{PendingDisconnect} when WarnDisconnectDelay > 0, like
    RequestTermination. LastConnectionError is set when the tear-down
    starts (C{Disconnecting}), and is C{ERROR_NONE} while C{Connected}.
  - Idleness: the traffic counter is read every C{min(idle / 4, 10)}
    seconds while C{Connected}; the connection is idle at the first reading
    that finds it unchanged for C{IdleDisconnectTime} seconds (exactly then
    when IdleDisconnectTime is at most 40 s, at most 10 s later otherwise).
    A failed reading counts as activity.
  - RequestConnection during C{PendingDisconnect} restores C{Connected}
    (Uptime keeps counting; AutoDisconnectTime counts again from then).
  - Set*Time take effect at once: AutoDisconnectTime counts from the moment
    of becoming C{Connected}, WarnDisconnectDelay from entering
    C{PendingDisconnect}; a time already exceeded expires on the next
    reactor turn.

Links that another tool configures (C{link.controllable} is false, e.g.
C{unmanaged}) cannot be cut: the status follows the link (C{Connected}
while it is usable, else C{Disconnected}), RequestTermination and
ForceTermination answer 501 ActionFailed while the link is up or being
waited for, non-zero AutoDisconnectTime and IdleDisconnectTime are refused
with 501, and EnabledForInternet = 0 only makes RequestConnection answer 709.
"""

from __future__ import annotations

from typing import Callable, Protocol

from automat import TypeMachineBuilder
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from gatewayd.errors import (
    ActionFailed,
    ArgumentValueOutOfRange,
    ConnectionAlreadyTerminated,
    ConnectionNotConfigured,
    ConnectionSetupInProgress,
    DisconnectInProgress,
    InactiveConnectionStateRequired,
    InternetAccessDisabled,
    ReadOnly,
    UPnPError,
)
from gatewayd.interfaces import ILink, LinkStatus
from gatewayd.observers import Observers

#: The only connection type a gatewayd WAN has.
IP_ROUTED = "IP_Routed"
#: ConnectionType values of Table 3.
CONNECTION_TYPES = ("Unconfigured", IP_ROUTED, "IP_Bridged")

ERROR_NONE = "ERROR_NONE"
ERROR_NOT_ENABLED_FOR_INTERNET = "ERROR_NOT_ENABLED_FOR_INTERNET"
ERROR_ISP_DISCONNECT = "ERROR_ISP_DISCONNECT"
ERROR_USER_DISCONNECT = "ERROR_USER_DISCONNECT"
ERROR_IDLE_DISCONNECT = "ERROR_IDLE_DISCONNECT"
ERROR_FORCED_DISCONNECT = "ERROR_FORCED_DISCONNECT"
ERROR_NO_CARRIER = "ERROR_NO_CARRIER"
ERROR_IP_CONFIGURATION = "ERROR_IP_CONFIGURATION"

#: The longest pause between two readings of the idle counter (seconds).
MAX_IDLE_POLL = 10.0

_UI4_MAX = 0xFFFFFFFF

Observer = Callable[[str, object], None]


class ConnectionInputs(Protocol):
    """
    Everything that can happen to a WAN connection.
    """

    def configure(self) -> None:
        "The WAN service started: the connection's configuration is valid."

    def unconfigure(self) -> None:
        "The WAN service stopped."

    def requestConnection(self) -> None:
        "RequestConnection, or the always-on WAN wants to connect."

    def requestDisabledConnection(self) -> None:
        "RequestConnection while EnabledForInternet is 0."

    def terminate(self, error: str) -> None:
        "RequestTermination or a disconnect timer, with WarnDisconnectDelay 0."

    def terminateAfterWarning(self, error: str) -> None:
        "RequestTermination or a disconnect timer, with WarnDisconnectDelay > 0."

    def forceTermination(self) -> None:
        "ForceTermination."

    def disable(self) -> None:
        "EnabledForInternet became 0."

    def enable(self) -> None:
        "EnabledForInternet became 1."

    def setConnectionType(self) -> None:
        "SetConnectionType to the type the connection already has."

    def linkUp(self, status: LinkStatus) -> None:
        "The link is usable (carrier and address), or its address changed."

    def linkDown(self, status: LinkStatus) -> None:
        "The link is not usable."

    def setupTimedOut(self) -> None:
        "The set-up took longer than the set-up timeout."

    def setupFailed(self) -> None:
        "link.connect() failed."

    def warningElapsed(self) -> None:
        "WarnDisconnectDelay seconds passed in PendingDisconnect."

    def tornDown(self) -> None:
        "link.disconnect() is done."


def _lostError(status: LinkStatus) -> str:
    """
    @return: why a usable link stopped being usable: no carrier, else what
        the link says (C{LinkStatus.error}), else the ISP took the address.
    """
    if not status.carrier:
        return ERROR_NO_CARRIER
    return status.error or ERROR_ISP_DISCONNECT


def _setupError(status: LinkStatus) -> str:
    """
    @return: why a link did not become usable in time: no carrier, else
        what the link says, else no address could be configured.
    """
    if not status.carrier:
        return ERROR_NO_CARRIER
    return status.error or ERROR_IP_CONFIGURATION


class _Core:
    """
    The machine's memory and side effects: published values, timers and
    requests to the link. Transitions call its methods; it never decides
    which state comes next.
    """

    log = Logger()

    def __init__(
        self,
        link: ILink,
        clock: IReactorTime,
        enabledForInternet: Callable[[], bool],
        setupTimeout: float,
        idleCounter: Callable[[], "Deferred[int] | int"] | None,
    ) -> None:
        self.link = link
        self.clock = clock
        self.enabledForInternet = enabledForInternet
        self.setupTimeout = setupTimeout
        self.idleCounter = idleCounter
        self.controllable = bool(link.controllable)
        self.machine: ConnectionInputs
        self.observers: Observers[[str, object]] = Observers(f"the connection of {link.interface}")
        self.status = "Unconfigured"
        self.externalIPAddress = ""
        self.lastConnectionError = ERROR_NONE
        self.autoDisconnectTime = 0
        self.idleDisconnectTime = 0
        self.warnDisconnectDelay = 0
        self.upSince: float | None = None
        self.connectedSince: float | None = None
        self.pendingSince: float | None = None
        self.pendingError = ERROR_NONE
        self.timers: dict[str, IDelayedCall] = {}
        self.idleLoop: LoopingCall | None = None
        self.idleValue: object = None
        self.idleSince = 0.0
        self.generation = 0

    # Published values.

    def publish(self, status: str, address: str) -> None:
        """
        Make C{status} and C{address} current, then tell the observers what
        changed: ConnectionStatus first, then ExternalIPAddress.
        """
        changes = []
        if status != self.status:
            self.status = status
            changes.append(("ConnectionStatus", status))
        if address != self.externalIPAddress:
            self.externalIPAddress = address
            changes.append(("ExternalIPAddress", address))
        for name, value in changes:
            self.observers.notify(name, value)

    # Timers.

    def startTimer(self, name: str, delay: float, f: Callable[[], None]) -> None:
        self.cancelTimer(name)

        def fire() -> None:
            del self.timers[name]
            f()

        self.timers[name] = self.clock.callLater(max(0.0, delay), fire)

    def cancelTimer(self, name: str) -> None:
        if (call := self.timers.pop(name, None)) is not None:
            call.cancel()

    def cancelAll(self) -> None:
        for name in list(self.timers):
            self.cancelTimer(name)
        self.stopIdle()
        self.connectedSince = None
        self.pendingSince = None

    # Link requests; every Deferred gets an errback.

    def requestLink(self) -> None:
        self.generation += 1
        generation = self.generation

        def failed(failure: Failure) -> None:
            self.log.failure(
                "Bringing up WAN link {interface} failed", failure, interface=self.link.interface
            )
            if generation == self.generation:
                self.machine.setupFailed()

        maybeDeferred(self.link.connect).addErrback(failed)

    def releaseLink(self) -> None:
        self.generation += 1
        generation = self.generation

        def failed(failure: Failure) -> None:
            self.log.failure(
                "Taking down WAN link {interface} failed", failure, interface=self.link.interface
            )

        def done(_: object) -> None:
            if generation == self.generation:
                self.machine.tornDown()

        maybeDeferred(self.link.disconnect).addErrback(failed).addCallback(done).addErrback(
            lambda f: self.log.failure("Finishing a tear-down failed", f)
        )

    # What the transitions do.

    def becomeDisconnected(self, error: str | None = None) -> None:
        self.cancelAll()
        self.upSince = None
        if error is not None:
            self.lastConnectionError = error
        self.publish("Disconnected", "")

    def beginSetup(self, connect: bool) -> None:
        """
        Enter Connecting: arm the set-up timeout, ask the link to connect
        (unless it is already trying) and take a link that is usable at once.
        """
        self.cancelAll()
        self.upSince = None
        self.publish("Connecting", "")
        self.startTimer("setup", self.setupTimeout, self.machine.setupTimedOut)
        if connect:
            self.requestLink()
        if self.link.status.usable:
            self.machine.linkUp(self.link.status)

    def setupTimedOut(self) -> None:
        error = _setupError(self.link.status)
        self.log.warn(
            "WAN link {interface} not up after {timeout} s: {error}",
            interface=self.link.interface,
            timeout=self.setupTimeout,
            error=error,
        )
        self.becomeDisconnected(error)

    def becomeConnected(self, status: LinkStatus, fresh: bool = True) -> None:
        """
        Enter Connected: Uptime starts (unless C{fresh} is false: back from
        PendingDisconnect), the disconnect timers start.
        """
        self.cancelAll()
        now = self.clock.seconds()
        if fresh or self.upSince is None:
            self.upSince = now
        self.connectedSince = now
        self.idleValue, self.idleSince = None, now
        self.lastConnectionError = ERROR_NONE
        address = str(status.address.ip) if status.address is not None else ""
        if fresh:
            self.log.info(
                "WAN link {interface} connected: external address {address}",
                interface=self.link.interface,
                address=address,
            )
        self.publish("Connected", address)
        self.armAuto()
        self.startIdle()

    def addressChanged(self, status: LinkStatus) -> None:
        address = str(status.address.ip) if status.address is not None else ""
        self.publish(self.status, address)

    def linkLost(self, status: LinkStatus) -> None:
        error = _lostError(status)
        self.log.warn(
            "WAN link {interface} lost: {error}", interface=self.link.interface, error=error
        )
        self.lastConnectionError = error

    def beginWarning(self, error: str) -> None:
        self.cancelAll()
        self.pendingSince = self.clock.seconds()
        self.pendingError = error
        self.publish("PendingDisconnect", self.externalIPAddress)
        self.armWarning()

    def beginTeardown(self, error: str) -> None:
        self.cancelAll()
        self.upSince = None
        self.lastConnectionError = error
        self.log.info(
            "WAN link {interface} disconnecting: {error}",
            interface=self.link.interface,
            error=error,
        )
        self.publish("Disconnecting", "")
        self.releaseLink()

    def reset(self) -> None:
        """
        Back to Unconfigured: no timers, every variable at its default, and
        whatever the link still answers is ignored.
        """
        self.cancelAll()
        self.generation += 1
        self.upSince = None
        self.lastConnectionError = ERROR_NONE
        self.publish("Unconfigured", "")

    # The disconnect timers.

    def expire(self, error: str) -> None:
        """
        A disconnect timer ran out: terminate, with the warning if one is set.
        """
        if self.warnDisconnectDelay > 0:
            self.machine.terminateAfterWarning(error)
        else:
            self.machine.terminate(error)

    def armAuto(self) -> None:
        self.cancelTimer("auto")
        if self.connectedSince is None or not self.controllable or not self.autoDisconnectTime:
            return
        remaining = self.connectedSince + self.autoDisconnectTime - self.clock.seconds()
        self.startTimer("auto", remaining, lambda: self.expire(ERROR_USER_DISCONNECT))

    def armWarning(self) -> None:
        if self.pendingSince is None:
            return
        remaining = self.pendingSince + self.warnDisconnectDelay - self.clock.seconds()
        self.startTimer("warn", remaining, self.machine.warningElapsed)

    def startIdle(self) -> None:
        """
        While Connected, read the idle counter every C{min(idle / 4, 10)}
        seconds, starting now.
        """
        self.stopIdle()
        idle, counter = self.idleDisconnectTime, self.idleCounter
        if self.connectedSince is None or not self.controllable or not idle or counter is None:
            return
        loop = self.idleLoop = LoopingCall(self.sampleIdle)
        loop.clock = self.clock
        loop.start(min(idle / 4, MAX_IDLE_POLL), now=True).addErrback(
            lambda f: self.log.failure(
                "Idle detection on {interface} failed", f, interface=self.link.interface
            )
        )

    def stopIdle(self) -> None:
        loop, self.idleLoop = self.idleLoop, None
        if loop is not None and loop.running:
            loop.stop()

    def sampleIdle(self) -> "Deferred[None]":
        loop, counter = self.idleLoop, self.idleCounter
        assert counter is not None
        when = self.clock.seconds()

        def sampled(value: object) -> None:
            if loop is not self.idleLoop:
                return
            if value != self.idleValue:
                self.idleValue, self.idleSince = value, when
            elif when - self.idleSince >= self.idleDisconnectTime:
                self.stopIdle()
                self.expire(ERROR_IDLE_DISCONNECT)

        def failed(failure: Failure) -> None:
            self.log.failure(
                "Reading the traffic counter of {interface} failed",
                failure,
                interface=self.link.interface,
            )
            if loop is self.idleLoop:
                self.idleSince = when

        return maybeDeferred(counter).addCallbacks(sampled, failed)


def _refuse(error: type[UPnPError], detail: str) -> Callable[..., None]:
    def refuse(conn: ConnectionInputs, core: _Core, *args: object) -> None:
        raise error(detail)

    refuse.__name__ = f"refuse{error.code}"
    return refuse


def _build(controllable: bool) -> Callable[[_Core], ConnectionInputs]:
    """
    Build the machine for a link that C{controllable} says gatewayd drives
    (or only watches).
    """
    I = ConnectionInputs
    b = TypeMachineBuilder(ConnectionInputs, _Core)
    unconfigured = b.state("Unconfigured")
    disconnected = b.state("Disconnected")
    connecting = b.state("Connecting")
    connected = b.state("Connected")
    everyConfigured = [disconnected, connecting, connected]

    def refuse(state, inputs, error, detail):  # type: ignore[no-untyped-def]
        for i in inputs:
            state.upon(i).loop()(_refuse(error, detail))

    def ignore(state, *inputs):  # type: ignore[no-untyped-def]
        for i in inputs:
            state.upon(i).loop().returns(None)

    terminations = (I.terminate, I.terminateAfterWarning, I.forceTermination)
    active = InactiveConnectionStateRequired
    connectionRequests = (I.requestConnection, I.requestDisabledConnection)

    # Unconfigured: before start and after stop.
    @unconfigured.upon(I.configure).to(disconnected)
    def configure(conn: ConnectionInputs, core: _Core) -> None:
        core.becomeDisconnected()

    refuse(unconfigured, connectionRequests + terminations, ConnectionNotConfigured, "Unconfigured")
    ignore(
        unconfigured,
        *(I.setConnectionType, I.unconfigure, I.disable, I.enable),
        *(I.linkUp, I.linkDown, I.setupFailed),
    )

    # Disconnected.
    @disconnected.upon(I.requestConnection).to(connecting)
    def connect(conn: ConnectionInputs, core: _Core) -> None:
        core.beginSetup(connect=True)

    refuse(disconnected, terminations, ConnectionAlreadyTerminated, "Disconnected")
    ignore(disconnected, I.setConnectionType, I.disable, I.linkDown, I.setupFailed)

    # Connecting.
    refuse(connecting, (I.requestConnection,), ConnectionSetupInProgress, "Connecting")
    refuse(connecting, (I.setConnectionType,), active, "Connecting")
    ignore(connecting, I.enable, I.linkDown)

    @connecting.upon(I.linkUp).to(connected)
    def up(conn: ConnectionInputs, core: _Core, status: LinkStatus) -> None:
        core.becomeConnected(status)

    @connecting.upon(I.setupFailed).to(disconnected)
    def setupFailed(conn: ConnectionInputs, core: _Core) -> None:
        core.becomeDisconnected(ERROR_IP_CONFIGURATION)

    # Connected.
    ignore(connected, I.requestConnection, I.enable, I.setupFailed)
    refuse(connected, (I.setConnectionType,), active, "Connected")

    @connected.upon(I.linkUp).loop()
    def newAddress(conn: ConnectionInputs, core: _Core, status: LinkStatus) -> None:
        core.addressChanged(status)

    if controllable:
        pending = b.state("PendingDisconnect")
        disconnecting = b.state("Disconnecting")
        # Disconnected after a set-up timeout, the link still trying.
        waiting = b.state("WaitingForLink")
        everyConfigured += [pending, disconnecting, waiting]

        @disconnected.upon(I.enable).to(connecting)
        def reenabled(conn: ConnectionInputs, core: _Core) -> None:
            core.beginSetup(connect=True)

        ignore(disconnected, I.linkUp)

        @waiting.upon(I.requestConnection).to(connecting)
        def retry(conn: ConnectionInputs, core: _Core) -> None:
            core.beginSetup(connect=True)

        refuse(waiting, terminations, ConnectionAlreadyTerminated, "Disconnected")
        ignore(waiting, I.setConnectionType, I.enable, I.linkDown)
        waiting.upon(I.linkUp).to(connected)(up)

        @waiting.upon(I.setupFailed).to(disconnected)
        def lateFailure(conn: ConnectionInputs, core: _Core) -> None:
            core.becomeDisconnected(ERROR_IP_CONFIGURATION)

        @connecting.upon(I.setupTimedOut).to(waiting)
        def timedOut(conn: ConnectionInputs, core: _Core) -> None:
            core.setupTimedOut()

        @connected.upon(I.linkDown).to(connecting)
        def lost(conn: ConnectionInputs, core: _Core, status: LinkStatus) -> None:
            core.linkLost(status)
            core.beginSetup(connect=False)

        @connected.upon(I.terminateAfterWarning).to(pending)
        def warn(conn: ConnectionInputs, core: _Core, error: str) -> None:
            core.beginWarning(error)

        for state in (connecting, connected):

            @state.upon(I.terminate).to(disconnecting)
            def terminate(conn: ConnectionInputs, core: _Core, error: str) -> None:
                core.beginTeardown(error)

        connecting.upon(I.terminateAfterWarning).to(disconnecting)(terminate)

        @pending.upon(I.requestConnection).to(connected)
        def restore(conn: ConnectionInputs, core: _Core) -> None:
            core.becomeConnected(core.link.status, fresh=False)

        refuse(pending, terminations[:2], DisconnectInProgress, "PendingDisconnect")
        refuse(pending, (I.setConnectionType,), active, "PendingDisconnect")
        ignore(pending, I.enable, I.setupFailed)
        pending.upon(I.linkUp).loop()(newAddress)

        @pending.upon(I.linkDown).to(disconnecting)
        def lostWhilePending(conn: ConnectionInputs, core: _Core, status: LinkStatus) -> None:
            core.beginTeardown(_lostError(status))

        @pending.upon(I.warningElapsed).to(disconnecting)
        def warned(conn: ConnectionInputs, core: _Core) -> None:
            core.beginTeardown(core.pendingError)

        for state in (connecting, connected, pending):

            @state.upon(I.forceTermination).to(disconnecting)
            def force(conn: ConnectionInputs, core: _Core) -> None:
                core.beginTeardown(ERROR_FORCED_DISCONNECT)

        for state in (connecting, connected, pending, waiting):

            @state.upon(I.disable).to(disconnecting)
            def disable(conn: ConnectionInputs, core: _Core) -> None:
                core.beginTeardown(ERROR_NOT_ENABLED_FOR_INTERNET)

        busy = (I.requestConnection,) + terminations
        refuse(disconnecting, busy, DisconnectInProgress, "Disconnecting")
        refuse(disconnecting, (I.setConnectionType,), active, "Disconnecting")
        ignore(disconnecting, I.disable, I.enable, I.linkUp, I.linkDown, I.setupFailed)

        @disconnecting.upon(I.tornDown).to(disconnected)
        def tornDown(conn: ConnectionInputs, core: _Core) -> None:
            core.becomeDisconnected()

    else:
        # The link is someone else's: follow it, refuse to cut it.
        ignore(disconnected, I.enable)
        disconnected.upon(I.linkUp).to(connected)(up)

        @connecting.upon(I.setupTimedOut).to(disconnected)
        def timedOutFollowing(conn: ConnectionInputs, core: _Core) -> None:
            core.setupTimedOut()

        @connected.upon(I.linkDown).to(disconnected)
        def lostFollowing(conn: ConnectionInputs, core: _Core, status: LinkStatus) -> None:
            core.linkLost(status)
            core.becomeDisconnected()

        for state in (connecting, connected):
            refuse(state, terminations, ActionFailed, "another tool configures this WAN's link")
            ignore(state, I.disable)

    for state in everyConfigured:
        refuse(state, (I.requestDisabledConnection,), InternetAccessDisabled, "not enabled")

        @state.upon(I.unconfigure).to(unconfigured)
        def unconfigure(conn: ConnectionInputs, core: _Core) -> None:
            core.reset()

    return b.build()


_driving = _build(controllable=True)
_following = _build(controllable=False)


class WANConnection:
    """
    The connection of one WAN, as WANIPConnection:2 describes it.

    @ivar connectionType: always C{"IP_Routed"}.
    @ivar possibleConnectionTypes: always C{"IP_Routed"}.
    """

    connectionType = IP_ROUTED
    possibleConnectionTypes = IP_ROUTED

    def __init__(
        self,
        link: ILink,
        clock: IReactorTime,
        enabledForInternet: Callable[[], bool],
        setupTimeout: float = 60.0,
        idleCounter: Callable[[], "Deferred[int] | int"] | None = None,
    ) -> None:
        """
        @param link: the WAN's link; C{link.controllable} decides whether the
            connection drives it or only follows it.
        @param clock: runs every timer.
        @param enabledForInternet: returns WANCommonInterfaceConfig's
            EnabledForInternet.
        @param setupTimeout: seconds in C{Connecting} before the status says
            C{Disconnected}.
        @param idleCounter: returns a traffic counter that grows with any
            traffic (e.g. rx + tx packets), or a L{Deferred} of one; L{None}
            when idleness cannot be detected.
        """
        self._core = _Core(link, clock, enabledForInternet, setupTimeout, idleCounter)
        self._machine = (_driving if self._core.controllable else _following)(self._core)
        self._core.machine = self._machine
        self._unobserve: Callable[[], None] | None = None

    # Evented and read-only variables.

    @property
    def status(self) -> str:
        """ConnectionStatus (Table 4)."""
        return self._core.status

    @property
    def lastConnectionError(self) -> str:
        """LastConnectionError (Table 5)."""
        return self._core.lastConnectionError

    @property
    def externalIPAddress(self) -> str:
        """The link's address while Connected or PendingDisconnect, else C{""}."""
        return self._core.externalIPAddress

    @property
    def autoDisconnectTime(self) -> int:
        return self._core.autoDisconnectTime

    @property
    def idleDisconnectTime(self) -> int:
        return self._core.idleDisconnectTime

    @property
    def warnDisconnectDelay(self) -> int:
        return self._core.warnDisconnectDelay

    def uptime(self) -> int:
        """
        @return: seconds since the connection became C{Connected}, while it
            is C{Connected} or C{PendingDisconnect}; else 0.
        """
        since = self._core.upSince
        if since is None:
            return 0
        return max(0, int(self._core.clock.seconds() - since))

    def addObserver(self, observer: Observer) -> Callable[[], None]:
        """
        Call C{observer(name, value)} after every change of ConnectionStatus
        or ExternalIPAddress, in order, intermediate states included.

        @return: a callable that removes the observer.
        """
        return self._core.observers.add(observer)

    # The WAN service's calls.

    def start(self) -> None:
        """
        Start watching the link. A WAN whose link gatewayd drives then
        requests a connection (always on), unless EnabledForInternet is 0;
        one whose link another tool configures follows the link.
        """
        if self._unobserve is not None:
            return
        self._unobserve = self._core.link.addObserver(self._linkChanged)
        self._machine.configure()
        if not self._core.controllable:
            self._linkChanged(self._core.link.status)
        elif self._core.enabledForInternet():
            self._machine.requestConnection()

    def stop(self) -> None:
        """
        Stop watching the link and cancel every timer; the status becomes
        C{Unconfigured}. The link is left as it is.
        """
        if self._unobserve is None:
            return
        self._unobserve()
        self._unobserve = None
        self._machine.unconfigure()

    def enabledChanged(self) -> None:
        """
        WANCommonInterfaceConfig's EnabledForInternet changed: 0 tears the
        connection down (C{ERROR_NOT_ENABLED_FOR_INTERNET}), 1 brings a
        C{Disconnected} always-on WAN back up.
        """
        if self._core.enabledForInternet():
            self._machine.enable()
        else:
            self._machine.disable()

    def _linkChanged(self, status: LinkStatus) -> None:
        if status.usable:
            self._machine.linkUp(status)
        else:
            self._machine.linkDown(status)

    # The actions.

    def requestConnection(self) -> None:
        """
        RequestConnection: start the set-up (the outcome is evented), or
        restore C{Connected} from C{PendingDisconnect}.

        @raise ConnectionNotConfigured: 706, Unconfigured.
        @raise InternetAccessDisabled: 709, EnabledForInternet is 0.
        @raise ConnectionSetupInProgress: 705, Connecting.
        @raise DisconnectInProgress: 707, Disconnecting.
        """
        if self._core.enabledForInternet():
            self._machine.requestConnection()
        else:
            self._machine.requestDisabledConnection()

    def requestTermination(self) -> None:
        """
        RequestTermination: through C{PendingDisconnect} when connected and
        WarnDisconnectDelay > 0, else straight to C{Disconnecting}.

        @raise ConnectionNotConfigured: 706, Unconfigured.
        @raise ConnectionAlreadyTerminated: 711, Disconnected.
        @raise DisconnectInProgress: 707, PendingDisconnect or Disconnecting.
        @raise ActionFailed: 501, the link is configured by another tool.
        """
        if self._core.warnDisconnectDelay > 0:
            self._machine.terminateAfterWarning(ERROR_USER_DISCONNECT)
        else:
            self._machine.terminate(ERROR_USER_DISCONNECT)

    def forceTermination(self) -> None:
        """
        ForceTermination: to C{Disconnecting} at once.

        @raise ConnectionNotConfigured: 706, Unconfigured.
        @raise ConnectionAlreadyTerminated: 711, Disconnected.
        @raise DisconnectInProgress: 707, Disconnecting.
        @raise ActionFailed: 501, the link is configured by another tool.
        """
        self._machine.forceTermination()

    def setConnectionType(self, value: str) -> None:
        """
        SetConnectionType: only C{IP_Routed}, which the connection already
        is, and only while Unconfigured or Disconnected.

        @raise ArgumentValueOutOfRange: 601, not a Table 3 value.
        @raise ReadOnly: 731, any other type.
        @raise InactiveConnectionStateRequired: 703, not Unconfigured or
            Disconnected.
        """
        if value not in CONNECTION_TYPES:
            raise ArgumentValueOutOfRange(
                f"ConnectionType must be one of {', '.join(CONNECTION_TYPES)}"
            )
        if value != IP_ROUTED:
            raise ReadOnly(f"this WAN's ConnectionType is always {IP_ROUTED}")
        self._machine.setConnectionType()

    def setAutoDisconnectTime(self, seconds: int) -> None:
        """
        SetAutoDisconnectTime (0 = never), counted from becoming Connected,
        effective for the running connection.

        @raise ArgumentValueOutOfRange: 601, not a ui4.
        @raise ActionFailed: 501, non-zero for a link another tool configures.
        """
        self._core.autoDisconnectTime = self._checkTime(seconds)
        self._core.armAuto()

    def setIdleDisconnectTime(self, seconds: int) -> None:
        """
        SetIdleDisconnectTime (0 = never), effective for the running
        connection (idleness counts from the last traffic seen).

        @raise ArgumentValueOutOfRange: 601, not a ui4.
        @raise ActionFailed: 501, non-zero for a link another tool configures
            or without a traffic counter.
        """
        if seconds and self._core.idleCounter is None:
            raise ActionFailed("idle detection is not available for this WAN")
        self._core.idleDisconnectTime = self._checkTime(seconds)
        self._core.startIdle()

    def setWarnDisconnectDelay(self, seconds: int) -> None:
        """
        SetWarnDisconnectDelay (0 = no warning), effective for a running
        PendingDisconnect too.

        @raise ArgumentValueOutOfRange: 601, not a ui4.
        """
        self._core.warnDisconnectDelay = self._checkTime(seconds, anyLink=True)
        self._core.armWarning()

    def _checkTime(self, seconds: int, anyLink: bool = False) -> int:
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            raise ArgumentValueOutOfRange(f"{seconds!r} is not a number of seconds (ui4)")
        if not 0 <= seconds <= _UI4_MAX:
            raise ArgumentValueOutOfRange(f"{seconds!r} is not a number of seconds (ui4)")
        if seconds and not anyLink and not self._core.controllable:
            raise ActionFailed("this WAN's link is configured by another tool and cannot be cut")
        return seconds
