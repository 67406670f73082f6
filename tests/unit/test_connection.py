"""
Tests for L{gatewayd.connection}: the WAN connection state machine as a
control point sees it through WANIPConnection:2 (status, errors, uptime,
events), driven with a L{Clock}.
"""

from __future__ import annotations

from ipaddress import IPv4Interface
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatewayd.connection import WANConnection
from gatewayd.errors import UPnPError
from gatewayd.interfaces import ILink, InterfaceState, LinkStatus
from gatewayd.link.base import ObservableLink
from gatewayd.link.simulated import SimulatedLink, SimulatedSettings
from gatewayd.link.unmanaged import UnmanagedLink, UnmanagedSettings
from tests.fakes import FakeNetlink

ADDRESS = IPv4Interface("203.0.113.2/24")
OTHER = IPv4Interface("203.0.113.9/24")
UP = LinkStatus(carrier=True, address=ADDRESS)
NO_CARRIER = LinkStatus(carrier=False, address=ADDRESS)
NO_ADDRESS = LinkStatus(carrier=True)


class LinkBroke(Exception):
    """
    What a test's link fails with.
    """


@implementer(ILink)
class ManualLink(ObservableLink):
    """
    A link the test drives by hand: C{connect} and C{disconnect} return
    Deferreds the test fires (or a failure, if C{failConnect} is set), and
    the status changes only through L{setStatus}.
    """

    controllable = True

    def __init__(self, status: LinkStatus = LinkStatus(carrier=True)) -> None:
        super().__init__("eth1", status)
        self.connects: list[Deferred[None]] = []
        self.disconnects: list[Deferred[None]] = []
        self.failConnect = False

    def setStatus(self, status: LinkStatus) -> None:
        self._setStatus(status)

    def connect(self) -> Deferred[None]:
        if self.failConnect:
            return fail(LinkBroke("no DHCP server"))
        self.connects.append(d := Deferred[None]())
        return d

    def disconnect(self) -> Deferred[None]:
        self.disconnects.append(d := Deferred[None]())
        return d


def simulated(carrier: bool = True) -> SimulatedLink:
    return SimulatedLink("eth1", SimulatedSettings(address=ADDRESS, carrier=carrier))


class Harness:
    """
    A L{WANConnection} on a link and a L{Clock}, with every event it reports
    and a switch for EnabledForInternet.
    """

    def __init__(self, link: Any, idleCounter: Callable[[], Any] | None = None, setupTimeout: float = 60.0) -> None:
        self.link = link
        self.clock = Clock()
        self.enabled = True
        self.events: list[tuple[str, object]] = []
        self.connection = WANConnection(
            link, self.clock, lambda: self.enabled, setupTimeout=setupTimeout, idleCounter=idleCounter
        )
        self.connection.addObserver(lambda name, value: self.events.append((name, value)))

    def statuses(self) -> list[object]:
        return [value for name, value in self.events if name == "ConnectionStatus"]

    def addresses(self) -> list[object]:
        return [value for name, value in self.events if name == "ExternalIPAddress"]

    def info(self) -> tuple[str, str, int]:
        """
        @return: what GetStatusInfo answers.
        """
        c = self.connection
        return (c.status, c.lastConnectionError, c.uptime())


def inState(state: str, warn: int = 0) -> Harness:
    """
    A started connection on a L{ManualLink}, brought into C{state} the way
    a control point would see it happen (C{Unconfigured}: not started).
    """
    h = Harness(ManualLink())
    if state == "Unconfigured":
        return h
    h.connection.start()  # Connecting: carrier, no address yet
    if state == "Connecting":
        return h
    h.link.setStatus(UP)
    h.connection.setWarnDisconnectDelay(warn)
    if state == "Connected":
        return h
    if state == "PendingDisconnect":
        h.connection.setWarnDisconnectDelay(warn or 30)
        h.connection.requestTermination()
        return h
    h.connection.forceTermination()
    if state == "Disconnecting":
        return h
    h.link.setStatus(NO_ADDRESS)
    h.link.disconnects[-1].callback(None)
    assert state == "Disconnected", state
    return h


STATES = ("Unconfigured", "Disconnected", "Connecting", "Connected", "PendingDisconnect", "Disconnecting")

#: WANIPConnection-2.md section 6, "Which action is allowed in which state":
#: an error code, or the status that follows (with WarnDisconnectDelay 0).
ALLOWED = {
    "RequestConnection": (706, "Connecting", 705, "Connected", "Connected", 707),
    "RequestTermination": (706, 711, "Disconnecting", "Disconnecting", 707, 707),
    "ForceTermination": (706, 711, "Disconnecting", "Disconnecting", "Disconnecting", 707),
    "SetConnectionType": ("Unconfigured", "Disconnected", 703, 703, 703, 703),
}


def act(h: Harness, action: str) -> object:
    c = h.connection
    calls: dict[str, Callable[[], None]] = {
        "RequestConnection": c.requestConnection,
        "RequestTermination": c.requestTermination,
        "ForceTermination": c.forceTermination,
        "SetConnectionType": lambda: c.setConnectionType("IP_Routed"),
    }
    try:
        calls[action]()
    except UPnPError as e:
        return e.code
    return c.status


class ActionTableTests(SynchronousTestCase):
    """
    Every action in every state answers as the specification's table says.
    """

    def test_table(self) -> None:
        """
        Each cell of the table: the exact error code, or the status the
        connection moves to.
        """
        got = {
            action: tuple(act(inState(state), action) for state in STATES) for action in ALLOWED
        }
        self.assertEqual(got, ALLOWED)

    def test_refusedChangesNothing(self) -> None:
        """
        A refused action leaves status, error and events as they were.
        """
        for state in STATES:
            h = inState(state)
            before = (h.info(), list(h.events))
            for action in ALLOWED:
                if isinstance(ALLOWED[action][STATES.index(state)], int):
                    act(h, action)
            self.assertEqual((h.info(), h.events), before, state)

    def test_requestTerminationWithWarning(self) -> None:
        """
        RequestTermination on a Connected WAN with WarnDisconnectDelay > 0
        goes to PendingDisconnect; from Connecting it skips it.
        """
        self.assertEqual(act(inState("Connected", warn=5), "RequestTermination"), "PendingDisconnect")
        h = inState("Connecting")
        h.connection.setWarnDisconnectDelay(5)
        self.assertEqual(act(h, "RequestTermination"), "Disconnecting")

    def test_connectionTypes(self) -> None:
        """
        The connection is IP_Routed and can be nothing else: SetConnectionType
        to another Table 3 value is 731 ReadOnly in every state, a value
        outside Table 3 is 601.
        """
        for state in STATES:
            c = inState(state).connection
            self.assertEqual((c.connectionType, c.possibleConnectionTypes), ("IP_Routed", "IP_Routed"))
            for value in ("IP_Bridged", "Unconfigured"):
                self.assertEqual(self.failureCode(c.setConnectionType, value), 731)
            self.assertEqual(self.failureCode(c.setConnectionType, "PPPoE_Bridged"), 601)

    def test_disabledForInternet(self) -> None:
        """
        While EnabledForInternet is 0, RequestConnection answers 709 (706
        before the service started).
        """
        for state, code in (("Unconfigured", 706), ("Disconnected", 709)):
            h = inState(state)
            h.enabled = False
            self.assertEqual(act(h, "RequestConnection"), code)

    def test_timerSettings(self) -> None:
        """
        The three timers read back as set; a value that is not a ui4 is 601.
        """
        c = inState("Connected").connection
        c.setAutoDisconnectTime(100)
        c.setWarnDisconnectDelay(7)
        self.assertEqual((c.autoDisconnectTime, c.idleDisconnectTime, c.warnDisconnectDelay), (100, 0, 7))
        for bad in (-1, 2**32):
            self.assertEqual(self.failureCode(c.setWarnDisconnectDelay, bad), 601)
            self.assertEqual(self.failureCode(c.setAutoDisconnectTime, bad), 601)

    def test_idleUnsupported(self) -> None:
        """
        Without a traffic counter, SetIdleDisconnectTime accepts only 0 and
        answers 501 otherwise.
        """
        c = inState("Connected").connection
        c.setIdleDisconnectTime(0)
        self.assertEqual(self.failureCode(c.setIdleDisconnectTime, 30), 501)
        self.assertEqual(c.idleDisconnectTime, 0)

    def failureCode(self, f: Callable[..., None], *args: object) -> int:
        with self.assertRaises(UPnPError) as raised:
            f(*args)
        return raised.exception.code


class TransitionTests(SynchronousTestCase):
    """
    Every transition of the specification's table, as the events and
    GetStatusInfo show it.
    """

    def test_startAlwaysOn(self) -> None:
        """
        Starting the WAN configures the connection (Unconfigured ->
        Disconnected) and requests a connection at once; a link that becomes
        usable makes it Connected with ERROR_NONE, its address and an
        Uptime that counts.
        """
        h = Harness(simulated())
        self.assertEqual(h.info(), ("Unconfigured", "ERROR_NONE", 0))
        h.connection.start()
        self.assertEqual(h.statuses(), ["Disconnected", "Connecting", "Connected"])
        self.assertEqual(h.addresses(), ["203.0.113.2"])
        h.clock.advance(42)
        self.assertEqual(h.info(), ("Connected", "ERROR_NONE", 42))
        self.assertEqual(h.connection.externalIPAddress, "203.0.113.2")

    def test_connectingWaitsForLink(self) -> None:
        """
        RequestConnection asks the link to connect and stays Connecting (with
        no external address) until the link has carrier and an address.
        """
        h = inState("Connecting")
        self.assertEqual(len(h.link.connects), 1)
        self.assertEqual((h.connection.status, h.connection.externalIPAddress), ("Connecting", ""))
        h.link.setStatus(NO_CARRIER)
        self.assertEqual(h.connection.status, "Connecting")
        h.link.setStatus(UP)
        self.assertEqual(h.info(), ("Connected", "ERROR_NONE", 0))

    def test_setupTimeout(self) -> None:
        """
        Connecting for longer than the set-up timeout reports Disconnected,
        not a second earlier, with ERROR_IP_CONFIGURATION when there is
        carrier but no address; the link keeps trying, and the WAN becomes
        Connected when it succeeds.
        """
        h = inState("Connecting")
        h.clock.advance(59)
        self.assertEqual(h.connection.status, "Connecting")
        h.clock.advance(1)
        self.assertEqual(h.info(), ("Disconnected", "ERROR_IP_CONFIGURATION", 0))
        self.assertEqual(h.link.disconnects, [])
        self.assertEqual(act(h, "RequestTermination"), 711)
        h.link.setStatus(UP)
        self.assertEqual(h.info(), ("Connected", "ERROR_NONE", 0))
        self.assertEqual(h.statuses(), ["Disconnected", "Connecting", "Disconnected", "Connected"])

    def test_setupTimeoutNoCarrier(self) -> None:
        """
        A set-up that times out without carrier reports ERROR_NO_CARRIER; a
        new RequestConnection asks the link again.
        """
        h = Harness(ManualLink(LinkStatus()), setupTimeout=10)
        h.connection.start()
        h.clock.advance(10)
        self.assertEqual(h.info(), ("Disconnected", "ERROR_NO_CARRIER", 0))
        self.assertEqual(act(h, "RequestConnection"), "Connecting")
        self.assertEqual(len(h.link.connects), 2)

    def test_connectFails(self) -> None:
        """
        A link that fails to connect ends the attempt: Disconnected with
        ERROR_IP_CONFIGURATION, the failure logged, no timer left.
        """
        link = ManualLink()
        link.failConnect = True
        h = Harness(link)
        h.connection.start()
        self.assertEqual(h.info(), ("Disconnected", "ERROR_IP_CONFIGURATION", 0))
        self.assertEqual(h.statuses(), ["Disconnected", "Connecting", "Disconnected"])
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.flushLoggedErrors(LinkBroke)), 1)

    def test_lateConnectFailure(self) -> None:
        """
        A connect() that fails after the link already came up changes
        nothing but the log.
        """
        h = inState("Connected")
        h.link.connects[0].errback(LinkBroke())
        self.assertEqual(h.info(), ("Connected", "ERROR_NONE", 0))
        self.assertEqual(len(self.flushLoggedErrors(LinkBroke)), 1)

    def test_terminateWhileConnecting(self) -> None:
        """
        RequestTermination and ForceTermination during Connecting go to
        Disconnecting (the link is asked to disconnect), then Disconnected.
        """
        for action, error in (
            ("RequestTermination", "ERROR_USER_DISCONNECT"),
            ("ForceTermination", "ERROR_FORCED_DISCONNECT"),
        ):
            h = inState("Connecting")
            self.assertEqual(act(h, action), "Disconnecting")
            h.link.disconnects[0].callback(None)
            self.assertEqual(h.info(), ("Disconnected", error, 0))
            self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_requestTermination(self) -> None:
        """
        RequestTermination with no warning delay: Connected -> Disconnecting
        -> Disconnected, ERROR_USER_DISCONNECT, Uptime back to 0, and the
        external address gone as soon as the tear-down starts.
        """
        h = inState("Connected")
        h.clock.advance(30)
        h.connection.requestTermination()
        self.assertEqual(h.info(), ("Disconnecting", "ERROR_USER_DISCONNECT", 0))
        self.assertEqual(h.connection.externalIPAddress, "")
        h.link.disconnects[0].callback(None)
        self.assertEqual(h.info(), ("Disconnected", "ERROR_USER_DISCONNECT", 0))
        self.assertEqual(
            h.events,
            [
                ("ConnectionStatus", "Disconnected"),
                ("ConnectionStatus", "Connecting"),
                ("ConnectionStatus", "Connected"),
                ("ExternalIPAddress", "203.0.113.2"),
                ("ConnectionStatus", "Disconnecting"),
                ("ExternalIPAddress", ""),
                ("ConnectionStatus", "Disconnected"),
            ],
        )

    def test_forceIgnoresWarning(self) -> None:
        """
        ForceTermination goes to Disconnecting at once even with a warning
        delay, from Connected and from PendingDisconnect.
        """
        for state in ("Connected", "PendingDisconnect"):
            h = inState(state, warn=30)
            self.assertEqual(act(h, "ForceTermination"), "Disconnecting")
            self.assertEqual(h.connection.lastConnectionError, "ERROR_FORCED_DISCONNECT")
            self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_warning(self) -> None:
        """
        RequestTermination with WarnDisconnectDelay 30: PendingDisconnect,
        still passing traffic (address and Uptime kept) for exactly 30 s,
        then Disconnecting.
        """
        h = inState("Connected", warn=30)
        h.clock.advance(10)
        h.connection.requestTermination()
        h.clock.advance(29)
        self.assertEqual(h.info(), ("PendingDisconnect", "ERROR_NONE", 39))
        self.assertEqual(h.connection.externalIPAddress, "203.0.113.2")
        self.assertEqual(h.link.disconnects, [])
        h.clock.advance(1)
        self.assertEqual(h.info(), ("Disconnecting", "ERROR_USER_DISCONNECT", 0))
        self.assertEqual(len(h.link.disconnects), 1)

    def test_warningChanged(self) -> None:
        """
        SetWarnDisconnectDelay during PendingDisconnect counts from when the
        warning began.
        """
        h = inState("PendingDisconnect", warn=30)
        h.clock.advance(5)
        h.connection.setWarnDisconnectDelay(8)
        h.clock.advance(2)
        self.assertEqual(h.connection.status, "PendingDisconnect")
        h.clock.advance(1)
        self.assertEqual(h.connection.status, "Disconnecting")

    def test_restoreFromWarning(self) -> None:
        """
        RequestConnection during PendingDisconnect restores Connected: the
        tear-down is off and Uptime goes on counting.
        """
        h = inState("Connected", warn=30)
        h.clock.advance(10)
        h.connection.requestTermination()
        h.clock.advance(20)
        h.connection.requestConnection()
        h.clock.advance(100)
        self.assertEqual(h.info(), ("Connected", "ERROR_NONE", 130))
        self.assertEqual(h.link.disconnects, [])
        self.assertEqual(h.statuses()[-2:], ["PendingDisconnect", "Connected"])

    def test_pendingLinkLost(self) -> None:
        """
        A link lost during PendingDisconnect ends the warning: Disconnecting.
        """
        h = inState("PendingDisconnect")
        h.link.setStatus(NO_CARRIER)
        self.assertEqual(h.info(), ("Disconnecting", "ERROR_NO_CARRIER", 0))

    def test_linkLost(self) -> None:
        """
        Carrier or address lost while Connected: back to Connecting (always
        on) with ERROR_NO_CARRIER or ERROR_ISP_DISCONNECT, Uptime 0 and no
        external address; Connected again (Uptime from 0) when the link
        returns.
        """
        for status, error in ((NO_CARRIER, "ERROR_NO_CARRIER"), (NO_ADDRESS, "ERROR_ISP_DISCONNECT")):
            h = inState("Connected")
            h.clock.advance(100)
            h.link.setStatus(status)
            self.assertEqual(h.info(), ("Connecting", error, 0))
            self.assertEqual(h.connection.externalIPAddress, "")
            h.clock.advance(5)
            h.link.setStatus(UP)
            h.clock.advance(3)
            self.assertEqual(h.info(), ("Connected", "ERROR_NONE", 3))
            self.assertEqual(h.addresses(), ["203.0.113.2", "", "203.0.113.2"])

    def test_addressChanges(self) -> None:
        """
        A new address while Connected is evented as ExternalIPAddress alone.
        """
        h = inState("Connected")
        del h.events[:]
        h.link.setStatus(LinkStatus(carrier=True, address=OTHER))
        self.assertEqual(h.events, [("ExternalIPAddress", "203.0.113.9")])
        self.assertEqual(h.connection.status, "Connected")

    def test_disconnectFails(self) -> None:
        """
        A link that fails to disconnect is logged; the connection still ends
        Disconnected.
        """
        h = inState("Disconnecting")
        h.link.disconnects[0].errback(LinkBroke())
        self.assertEqual(h.connection.status, "Disconnected")
        self.assertEqual(len(self.flushLoggedErrors(LinkBroke)), 1)

    def test_enabledForInternet(self) -> None:
        """
        EnabledForInternet set to 0 tears a Connected WAN down
        (ERROR_NOT_ENABLED_FOR_INTERNET) and RequestConnection answers 709;
        set back to 1, the always-on WAN connects again.
        """
        h = Harness(simulated())
        h.connection.start()
        h.enabled = False
        h.connection.enabledChanged()
        self.assertEqual(h.info(), ("Disconnected", "ERROR_NOT_ENABLED_FOR_INTERNET", 0))
        self.assertEqual(h.statuses()[-2:], ["Disconnecting", "Disconnected"])
        self.assertEqual(act(h, "RequestConnection"), 709)
        h.enabled = True
        h.connection.enabledChanged()
        self.assertEqual(h.info(), ("Connected", "ERROR_NONE", 0))

    def test_disabledAtStart(self) -> None:
        """
        A WAN whose EnabledForInternet is 0 at start stays Disconnected.
        """
        h = Harness(simulated())
        h.enabled = False
        h.connection.start()
        self.assertEqual(h.statuses(), ["Disconnected"])

    def test_disableWhileConnecting(self) -> None:
        """
        EnabledForInternet 0 also stops a set-up in progress, or a link still
        trying after the set-up timeout.
        """
        for wait in (0, 60):
            h = inState("Connecting")
            h.clock.advance(wait)
            h.enabled = False
            h.connection.enabledChanged()
            self.assertEqual(h.info(), ("Disconnecting", "ERROR_NOT_ENABLED_FOR_INTERNET", 0))
            self.assertEqual(len(h.link.disconnects), 1)


class TimerTests(SynchronousTestCase):
    """
    AutoDisconnectTime and IdleDisconnectTime on the clock.
    """

    def test_auto(self) -> None:
        """
        AutoDisconnectTime counts from becoming Connected, whatever the
        traffic: Connected until the last second, then the tear-down.
        """
        h = Harness(simulated())
        h.connection.setAutoDisconnectTime(100)
        h.connection.start()
        h.clock.advance(99)
        self.assertEqual(h.connection.status, "Connected")
        h.clock.advance(1)
        self.assertEqual(h.info(), ("Disconnected", "ERROR_USER_DISCONNECT", 0))
        self.assertEqual(h.statuses()[-3:], ["Connected", "Disconnecting", "Disconnected"])

    def test_autoWithWarning(self) -> None:
        """
        With a warning delay, AutoDisconnectTime leads to PendingDisconnect
        first.
        """
        h = Harness(simulated())
        h.connection.setAutoDisconnectTime(100)
        h.connection.setWarnDisconnectDelay(10)
        h.connection.start()
        h.clock.advance(100)
        self.assertEqual(h.connection.status, "PendingDisconnect")
        h.clock.advance(10)
        self.assertEqual(h.info(), ("Disconnected", "ERROR_USER_DISCONNECT", 0))

    def test_autoSetWhileConnected(self) -> None:
        """
        SetAutoDisconnectTime on a running connection counts from when it
        became Connected; a time already past expires on the next turn; 0
        switches it off.
        """
        h = inState("Connected")
        h.clock.advance(50)
        h.connection.setAutoDisconnectTime(60)
        h.clock.advance(9)
        self.assertEqual(h.connection.status, "Connected")
        h.connection.setAutoDisconnectTime(0)
        h.clock.advance(100)
        self.assertEqual(h.connection.status, "Connected")
        h.connection.setAutoDisconnectTime(30)
        h.clock.advance(0)
        self.assertEqual(h.connection.status, "Disconnecting")

    def idleHarness(self, idle: int, warn: int = 0) -> tuple[Harness, list[int], list[float]]:
        counter, reads = [0], []
        h: Harness

        def read() -> int:
            reads.append(h.clock.seconds())
            return counter[0]

        h = Harness(simulated(), idleCounter=read)
        h.connection.setIdleDisconnectTime(idle)
        h.connection.setWarnDisconnectDelay(warn)
        h.connection.start()
        return h, counter, reads

    def test_idle(self) -> None:
        """
        A WAN without traffic for IdleDisconnectTime seconds is torn down
        with ERROR_IDLE_DISCONNECT, not a second earlier; the counter is
        read every min(idle/4, 10) seconds.
        """
        h, counter, reads = self.idleHarness(60)
        h.clock.pump([1] * 59)
        self.assertEqual(h.connection.status, "Connected")
        h.clock.advance(1)
        self.assertEqual(h.info(), ("Disconnected", "ERROR_IDLE_DISCONNECT", 0))
        self.assertEqual(reads, [0, 10, 20, 30, 40, 50, 60])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_trafficKeepsAlive(self) -> None:
        """
        Traffic seen at a reading starts the idle time again.
        """
        h, counter, reads = self.idleHarness(8)
        h.clock.pump([1] * 3)
        counter[0] += 5
        h.clock.advance(1)  # read at 4 sees it
        h.clock.pump([1] * 7)
        self.assertEqual(h.connection.status, "Connected")
        h.clock.advance(1)
        self.assertEqual(h.connection.status, "Disconnected")
        self.assertEqual(reads, [0, 2, 4, 6, 8, 10, 12])

    def test_idleWithWarningAndAsyncCounter(self) -> None:
        """
        A counter read through a Deferred works the same; with a warning
        delay idleness leads to PendingDisconnect.
        """
        h = Harness(simulated(), idleCounter=lambda: succeed(7))
        h.connection.setIdleDisconnectTime(20)
        h.connection.setWarnDisconnectDelay(5)
        h.connection.start()
        h.clock.advance(20)
        self.assertEqual(h.connection.status, "PendingDisconnect")
        h.clock.advance(5)
        self.assertEqual(h.info(), ("Disconnected", "ERROR_IDLE_DISCONNECT", 0))

    def test_idleReadFails(self) -> None:
        """
        A counter that cannot be read never makes the WAN idle; the failures
        are logged.
        """
        h = Harness(simulated(), idleCounter=lambda: fail(LinkBroke()))
        h.connection.setIdleDisconnectTime(8)
        h.connection.start()
        h.clock.pump([1] * 20)
        self.assertEqual(h.connection.status, "Connected")
        self.assertEqual(len(self.flushLoggedErrors(LinkBroke)), 11)

    def test_idleSetWhileConnected(self) -> None:
        """
        SetIdleDisconnectTime takes effect on the running connection.
        """
        h, counter, reads = self.idleHarness(0)
        h.clock.advance(100)
        self.assertEqual(reads, [])
        h.connection.setIdleDisconnectTime(4)
        h.clock.advance(3)
        self.assertEqual(h.connection.status, "Connected")
        h.clock.advance(1)
        self.assertEqual(h.connection.status, "Disconnected")


class ObserverAndLifetimeTests(SynchronousTestCase):
    """
    Events, start and stop.
    """

    def test_observerRemoved(self) -> None:
        """
        A removed observer hears nothing more; one that raises is logged and
        does not stop the others.
        """
        h = Harness(simulated())
        heard: list[object] = []

        def broken(name: str, value: object) -> None:
            raise LinkBroke()

        h.connection.addObserver(broken)
        remove = h.connection.addObserver(lambda name, value: heard.append(value))
        h.connection.start()
        remove()
        remove()
        h.connection.requestTermination()
        self.assertEqual(heard, ["Disconnected", "Connecting", "Connected", "203.0.113.2"])
        self.assertEqual(h.statuses()[-1], "Disconnected")
        self.assertEqual(len(self.flushLoggedErrors(LinkBroke)), 7)

    def test_stopLeavesNothing(self) -> None:
        """
        Stopping in any state leaves no delayed call, no link observer, and
        the connection Unconfigured with every variable at its default; it
        can start again.
        """
        for state in STATES[1:]:
            link = ManualLink()
            idle = Harness(link, idleCounter=lambda: 1)
            idle.connection.setAutoDisconnectTime(500)
            idle.connection.setIdleDisconnectTime(100)
            h = idle
            h.connection.start()
            if state != "Connecting":
                link.setStatus(UP)
            if state == "PendingDisconnect":
                h.connection.setWarnDisconnectDelay(30)
                h.connection.requestTermination()
            elif state in ("Disconnecting", "Disconnected"):
                h.connection.forceTermination()
                if state == "Disconnected":
                    link.disconnects[0].callback(None)
            self.assertEqual(h.connection.status, state)
            h.connection.stop()
            self.assertEqual(h.clock.getDelayedCalls(), [], state)
            self.assertEqual(h.info(), ("Unconfigured", "ERROR_NONE", 0))
            self.assertEqual(h.connection.externalIPAddress, "")
            link.setStatus(LinkStatus())
            self.assertEqual(h.connection.status, "Unconfigured")
            for d in link.disconnects:
                if not d.called:
                    d.callback(None)
            self.assertEqual(h.connection.status, "Unconfigured")
        link.setStatus(UP)
        h.connection.start()
        self.assertEqual(h.connection.status, "Connected")

    def test_fakeVerified(self) -> None:
        """
        The test link is a real L{ILink}.
        """
        self.assertTrue(verifyObject(ILink, ManualLink()))


class UnmanagedTests(SynchronousTestCase):
    """
    A link another tool configures: the status follows it, and it is never
    cut.
    """

    def setUp(self) -> None:
        self.netlink = FakeNetlink([self.eth1()])
        self.link = UnmanagedLink("eth1", self.netlink, UnmanagedSettings())
        self.link.startService()
        self.h = Harness(self.link)

    def eth1(self, **kw: Any) -> InterfaceState:
        values: dict[str, Any] = dict(name="eth1", index=3, up=True, carrier=True, addresses=(ADDRESS,))
        values.update(kw)
        return InterfaceState(**values)

    def test_follows(self) -> None:
        """
        Start reports the link as it is; losing carrier makes it Disconnected
        (ERROR_NO_CARRIER) without a Connecting phase; it is Connected again
        when the carrier returns.
        """
        h = self.h
        h.connection.start()
        self.assertEqual(h.statuses(), ["Disconnected", "Connected"])
        self.netlink.setState(self.eth1(carrier=False))
        self.assertEqual(h.info(), ("Disconnected", "ERROR_NO_CARRIER", 0))
        self.netlink.setState(self.eth1())
        self.assertEqual(h.info(), ("Connected", "ERROR_NONE", 0))
        self.assertEqual(h.statuses(), ["Disconnected", "Connected", "Disconnected", "Connected"])

    def test_startsDown(self) -> None:
        """
        A link without an address at start is Disconnected and does not
        count as a set-up in progress.
        """
        self.netlink.setState(self.eth1(addresses=()))
        self.h.connection.start()
        self.assertEqual(self.h.statuses(), ["Disconnected"])
        self.assertEqual(self.h.clock.getDelayedCalls(), [])

    def test_neverCut(self) -> None:
        """
        RequestTermination and ForceTermination answer 501 while the link is
        up, 711 while it is down; timers that would cut it are refused with
        501; EnabledForInternet 0 only refuses RequestConnection (709).
        """
        h = self.h
        h.connection.start()
        self.assertEqual((act(h, "RequestTermination"), act(h, "ForceTermination")), (501, 501))
        for setter in (h.connection.setAutoDisconnectTime, h.connection.setIdleDisconnectTime):
            with self.assertRaises(UPnPError) as raised:
                setter(10)
            self.assertEqual(raised.exception.code, 501)
        h.connection.setWarnDisconnectDelay(10)
        h.enabled = False
        h.connection.enabledChanged()
        self.assertEqual(h.connection.status, "Connected")
        self.assertEqual(act(h, "RequestConnection"), 709)
        self.netlink.setState(self.eth1(addresses=()))
        self.assertEqual(h.info(), ("Disconnected", "ERROR_ISP_DISCONNECT", 0))
        self.assertEqual((act(h, "RequestTermination"), act(h, "ForceTermination")), (711, 711))

    def test_requestConnectionWaits(self) -> None:
        """
        RequestConnection on a down link waits for it (Connecting) until the
        set-up timeout, and refuses termination meanwhile.
        """
        self.netlink.setState(self.eth1(carrier=False))
        h = self.h
        h.connection.start()
        self.assertEqual(act(h, "RequestConnection"), "Connecting")
        self.assertEqual(act(h, "RequestTermination"), 501)
        h.clock.advance(60)
        self.assertEqual(h.info(), ("Disconnected", "ERROR_NO_CARRIER", 0))
        self.netlink.setState(self.eth1())
        self.assertEqual(h.connection.status, "Connected")
        h.connection.stop()
        self.link.stopService()
        self.assertEqual(self.netlink.watching("eth1"), 0)
