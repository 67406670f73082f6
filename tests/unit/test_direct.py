"""
Tests for L{gatewayd.upnp.direct}: the direct path answers plain SOAP POSTs
exactly as twisted.web does, hands everything else over, and keeps the
connections' deadlines.
"""

from __future__ import annotations

from ipaddress import IPv4Interface
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gatewayd.interfaces import LANAddress
from gatewayd.upnp.direct import HAND_OVER, Deadlines, readControlHead
from gatewayd.upnp import http
from gatewayd.upnp.http import LANPolicy, LANSite, makeSite
from gatewayd.upnp.soap import ControlResource

from . import test_soap, test_wanipconnection
from .test_description import FakeWANIPConnection, buildTree, wanDevice
from .test_soap import (
    ASYNC_UPNP_CLIENT,
    GUPNP,
    IP1,
    IP2,
    MINIUPNPC,
    envelope,
    post,
    split,
    windows,
)

LIMITS = {"maxSize": 8192, "maxFields": 64, "bodyLimit": 65536}


def head(raw: bytes) -> Any:
    return readControlHead(raw, **LIMITS)


def withHead(*lines: bytes, body: bytes = b"<x/>") -> bytes:
    """
    A POST to the control URL with exactly these header lines.
    """
    return b"POST /ctl/isp1/WANIPConn1 HTTP/1.1\r\n" + b"".join(l + b"\r\n" for l in lines) + b"\r\n" + body


PLAIN = (b"Host: 127.0.0.1:5000", b'SOAPAction: "x#y"', b"Content-Length: 4")


class ReadControlHeadTests(SynchronousTestCase):
    def test_miniupnpc(self) -> None:
        """
        miniupnpc's request is a plain POST: its path, version, fields by
        lower-case name, body length and start; C{Connection: close} means
        the connection closes after the answer.
        """
        found = head(MINIUPNPC)
        self.assertEqual(found.path, b"/ctl/isp1/WANIPConn1")
        self.assertEqual(found.version, b"HTTP/1.1")
        self.assertEqual(found.length, 285)
        self.assertEqual(MINIUPNPC[found.bodyStart :][:5], b"<?xml")
        self.assertEqual(found.fields[b"user-agent"], b"Debian/12 UPnP/1.1 MiniUPnPc/2.2.4")
        self.assertEqual(
            found.fields[b"soapaction"],
            b'"urn:schemas-upnp-org:service:WANIPConnection:1#GetExternalIPAddress"',
        )
        self.assertFalse(found.keepAlive)

    def test_keepAlive(self) -> None:
        """
        HTTP/1.1 keeps the connection unless C{Connection} has the token
        C{close} (any case, in a list); HTTP/1.0 never does (twisted.web does
        not keep HTTP/1.0 connections either).
        """
        cases = [
            ((), True),
            ((b"Connection: Keep-Alive",), True),
            ((b"Connection: closed",), True),
            ((b"Connection: keep-alive, CLOSE",), False),
            ((b"Connection: close",), False),
        ]
        for extra, keepAlive in cases:
            self.assertEqual(head(withHead(*PLAIN, *extra)).keepAlive, keepAlive, extra)
        old = withHead(*PLAIN, b"Connection: keep-alive").replace(b"HTTP/1.1", b"HTTP/1.0", 1)
        self.assertEqual((head(old).version, head(old).keepAlive), (b"HTTP/1.0", False))

    def test_incomplete(self) -> None:
        """
        Every prefix of a plain POST's head needs more bytes.
        """
        end = MINIUPNPC.index(b"\r\n\r\n") + 3
        for n in range(1, end + 1):
            self.assertIsNone(head(MINIUPNPC[:n]), MINIUPNPC[:n])

    def test_notAPost(self) -> None:
        """
        Anything but C{POST /} is handed over from its first telling byte:
        a GET from its first byte.
        """
        for raw in (b"G", b"GET / HTTP/1.1\r\n", b"POSTX", b"POST  /", b"post /", b"PUT /x"):
            self.assertEqual(head(raw), HAND_OVER, raw)

    def test_badRequestLine(self) -> None:
        """
        A request line the direct path does not take is handed over as soon
        as it is complete.
        """
        for line in (
            b"POST /x HTTP/2.0\r\n",
            b"POST /x y HTTP/1.1\r\n",
            b"POST http://127.0.0.1:5000/x HTTP/1.1\r\n",
            b"POST /x HTTP/1.1 \r\n",
        ):
            self.assertEqual(head(line), HAND_OVER, line)

    def test_handedOver(self) -> None:
        """
        Whatever twisted.web might decide differently is handed over:
        transfer codings, C{Expect}, repeated fields that must be single,
        folding, bare line ends, malformed fields, a missing, malformed or
        too large C{Content-Length}.
        """
        cases = [
            withHead(*PLAIN, b"Transfer-Encoding: chunked"),
            withHead(*PLAIN, b"Expect: 100-continue"),
            withHead(*PLAIN, b"Content-Length: 4"),
            withHead(*PLAIN, b"Host: 127.0.0.1"),
            withHead(*PLAIN, b'SOAPAction: "a#b"'),
            withHead(*PLAIN, b"Connection: close", b"Connection: keep-alive"),
            withHead(*PLAIN, b"X-Folded: a", b" b"),
            withHead(*PLAIN, b"X-Bare: a\nX-Other: b"),
            withHead(*PLAIN, b"X-Bare: a\rb"),
            withHead(*PLAIN, b"NoColon"),
            withHead(*PLAIN, b"Space : before colon"),
            withHead(b"Host: 127.0.0.1:5000", b'SOAPAction: "x#y"'),
            withHead(b"Host: 127.0.0.1:5000", b"Content-Length: 4x"),
            withHead(b"Host: 127.0.0.1:5000", b"Content-Length: -4"),
            withHead(b"Host: 127.0.0.1:5000", b"Content-Length: 65537"),
            withHead(*PLAIN, *[b"X-%d: y" % i for i in range(62)]),
            withHead(*PLAIN, b"X-Long: " + b"y" * 8200),
        ]
        for raw in cases:
            self.assertEqual(head(raw), HAND_OVER, raw[:200])
        # Just within the limits: taken.
        self.assertNotEqual(head(withHead(*PLAIN, *[b"X-%d: y" % i for i in range(61)])), HAND_OVER)
        self.assertNotEqual(head(withHead(*PLAIN, b"X-Repeated: 1", b"X-Repeated: 2")), HAND_OVER)

    def test_headTooLargeWhileIncomplete(self) -> None:
        """
        A head that grows past the limit without ending is handed over
        (twisted.web refuses it).
        """
        self.assertEqual(head(b"POST /x HTTP/1.1\r\nX: " + b"y" * 8200), HAND_OVER)


class DeadlinesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.deadlines = Deadlines(self.clock, tick=1.0)
        self.fired: list[str] = []

    def test_passes(self) -> None:
        """
        A deadline fires at the first tick at or after it, once; the timer
        stops at the next tick that finds nothing to watch.
        """
        self.deadlines.set("a", 2.5, lambda: self.fired.append("a"))
        self.clock.advance(2)
        self.assertEqual(self.fired, [])
        self.assertAlmostEqual(self.deadlines.left("a"), 0.5)
        self.clock.advance(1)
        self.assertEqual(self.fired, ["a"])
        self.assertIsNone(self.deadlines.left("a"))
        self.clock.advance(1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_setAgainAndDiscard(self) -> None:
        """
        Setting a key again replaces its deadline; a discarded key never
        fires.
        """
        self.deadlines.set("a", 2, lambda: self.fired.append("a"))
        self.deadlines.set("b", 2, lambda: self.fired.append("b"))
        self.clock.advance(1)
        self.deadlines.set("a", 5, lambda: self.fired.append("a2"))
        self.deadlines.discard("b")
        self.clock.advance(2)
        self.assertEqual(self.fired, [])
        self.clock.advance(3)
        self.assertEqual(self.fired, ["a2"])

    def test_failingHandler(self) -> None:
        """
        A handler that raises is logged; the others still run.
        """
        self.deadlines.set("a", 1, lambda: 1 / 0)
        self.deadlines.set("b", 1, lambda: self.fired.append("b"))
        self.clock.advance(1)
        self.assertEqual(self.fired, ["b"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_stop(self) -> None:
        """
        L{Deadlines.stop} forgets every deadline and leaves no timer.
        """
        self.deadlines.set("a", 1, lambda: self.fired.append("a"))
        self.deadlines.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(5)
        self.assertEqual(self.fired, [])


def site(
    connection: FakeWANIPConnection | None = None, direct: bool = True, **limits: Any
) -> tuple[LANSite, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    lan = LANPolicy()
    lan.setAddresses([LANAddress("lo", 1, IPv4Interface("127.0.0.1/8"))], 5000)
    root = buildTree(wanDevice("isp1", connection), wanDevice("isp2"))
    return makeSite(root, lan, reactor, direct=direct, **limits), reactor


class Connection:
    """
    One TCP connection to a site.
    """

    def __init__(self, site: LANSite) -> None:
        address = IPv4Address("TCP", "127.0.0.1", 40000)
        self.channel = site.buildProtocol(address)
        self.transport = StringTransport(peerAddress=address)
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> bytes:
        self.channel.dataReceived(data)
        return self.transport.value()


def withoutDate(response: bytes) -> bytes:
    return b"\r\n".join(l for l in response.split(b"\r\n") if not l.startswith(b"Date: "))


def responses(raw: bytes) -> list[bytes]:
    """
    Split a stream of responses that all carry C{Content-Length}.
    """
    found = []
    while raw:
        headEnd = raw.index(b"\r\n\r\n") + 4
        length = int(split(raw[:headEnd])[1][b"content-length"])
        found.append(raw[: headEnd + length])
        raw = raw[headEnd + length :]
    return found


class DirectPathTests(SynchronousTestCase):
    def rendered(self) -> list[object]:
        """
        @return: the requests twisted.web renders from now on.
        """
        calls: list[object] = []
        original = ControlResource.render_POST

        def render(resource: ControlResource, request: object) -> object:
            calls.append(request)
            return original(resource, request)

        self.patch(ControlResource, "render_POST", render)
        return calls

    def test_sameAsTwistedWeb(self) -> None:
        """
        Real clients' requests, faults, refusals and hostile bodies get the
        same bytes (but for the date) on the direct path as through
        twisted.web, and only the latter renders a request.
        """
        urn = IP2
        corpus = [
            MINIUPNPC,
            ASYNC_UPNP_CLIENT,
            GUPNP,
            windows(b"ExternalIPAddress"),
            windows(b"NoSuchVariable"),
            post(envelope(IP1, "GetExternalIPAddress"), f'"{IP1}#GetExternalIPAddress"'.encode()),
            post(envelope(urn, "NoSuchAction"), f'"{urn}#NoSuchAction"'.encode()),
            post(envelope(urn, "GetExternalIPAddress"), b'"unbalanced'),
            post(envelope(urn, "GetExternalIPAddress"), None),
            post(envelope(urn, "GetStatusInfo"), f'"{urn}#GetExternalIPAddress"'.encode()),
            post(b"<not xml", f'"{urn}#GetExternalIPAddress"'.encode()),
            post(test_soap.BILLION_LAUGHS, f'"{urn}#GetExternalIPAddress"'.encode()),
            post(
                envelope(urn, "GetSpecificPortMappingEntry", test_soap.specific("9")),
                f'"{urn}#GetSpecificPortMappingEntry"'.encode(),
            ),
        ]
        calls = self.rendered()
        for raw in corpus:
            direct = Connection(site(FakeWANIPConnection())[0]).send(raw)
            self.assertEqual(calls, [])
            web = Connection(site(FakeWANIPConnection(), direct=False)[0]).send(raw)
            self.assertEqual(len(calls), 1)
            del calls[:]
            self.assertEqual(withoutDate(direct), withoutDate(web), raw)
            self.assertTrue(direct.startswith(b"HTTP/1.1 "))

    def test_rememberedReadings(self) -> None:
        """
        Heads and bodies are read once and remembered, which changes no
        answer: a refused body is refused (and logged) every time, the same
        body under another C{SOAPACTION} is still 401, the same head with
        another peer's C{Host} is still refused.
        """
        lanSite = site()[0]
        hostile = post(test_soap.BILLION_LAUGHS, f'"{IP2}#GetExternalIPAddress"'.encode())
        with capturedLogs() as events:
            first = Connection(lanSite).send(hostile)
            second = Connection(lanSite).send(hostile)
        self.assertEqual(first, second)
        self.assertEqual(test_soap.faultCode(first), 402)
        self.assertEqual(len([e for e in events if "Refused a SOAP body" in formatEvent(e)]), 2)
        body = envelope(IP2, "GetExternalIPAddress")
        right = Connection(lanSite).send(post(body, f'"{IP2}#GetExternalIPAddress"'.encode()))
        wrong = Connection(lanSite).send(post(body, f'"{IP2}#GetStatusInfo"'.encode()))
        self.assertEqual(split(right)[0], 200)
        self.assertEqual(test_soap.faultCode(wrong), 401)
        lanSite.lan.setAddresses([LANAddress("lo", 1, IPv4Interface("127.0.0.2/8"))], 5000)
        self.assertEqual(split(Connection(lanSite).send(MINIUPNPC))[0], 403)

    def test_closesOrKeeps(self) -> None:
        """
        After an answer the connection closes if the client said
        C{Connection: close}, and stays open for the next request if not.
        """
        closing = Connection(site()[0])
        closing.send(MINIUPNPC)
        self.assertTrue(closing.transport.disconnecting)
        self.assertIn(b"Connection: close\r\n", closing.transport.value())
        keeping = Connection(site()[0])
        keeping.send(GUPNP)
        self.assertFalse(keeping.transport.disconnecting)
        self.assertNotIn(b"connection", split(keeping.transport.value())[1])

    def test_pipelinedThenHandedOver(self) -> None:
        """
        Requests sent back to back on one kept connection are answered in
        order; a later GET on the same connection is served by twisted.web.
        """
        connection = Connection(site()[0])
        answers = responses(connection.send(GUPNP + ASYNC_UPNP_CLIENT + GUPNP))
        self.assertEqual([split(a)[0] for a in answers], [200, 200, 200])
        self.assertIn(b"GetStatusInfoResponse", answers[0])
        self.assertIn(b"GetSpecificPortMappingEntryResponse", answers[1])
        connection.transport.clear()
        described = connection.send(b"GET /rootDesc.xml HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n\r\n")
        status, headers, body = split(described)
        self.assertEqual(status, 200)
        self.assertIn(b"<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:", body)

    def test_dripped(self) -> None:
        """
        A request that arrives a byte at a time is answered once, when it is
        complete, with the same answer as in one piece.
        """
        connection = Connection(site()[0])
        for i in range(len(MINIUPNPC) - 1):
            self.assertEqual(connection.send(MINIUPNPC[i : i + 1]), b"")
        dripped = connection.send(MINIUPNPC[-1:])
        whole = Connection(site()[0]).send(MINIUPNPC)
        self.assertEqual(withoutDate(dripped), withoutDate(whole))

    def test_headReadOnce(self) -> None:
        """
        While a body arrives in pieces, its head is not read again (a body
        dripped byte by byte costs no more than one in a piece).
        """
        reads: list[object] = []
        original = http.readControlHead

        def counting(*args: Any) -> Any:
            reads.append(args)
            return original(*args)

        self.patch(http, "readControlHead", counting)
        connection = Connection(site()[0])
        headEnd = MINIUPNPC.index(b"\r\n\r\n") + 4
        connection.send(MINIUPNPC[:headEnd])
        for i in range(headEnd, len(MINIUPNPC)):
            connection.send(MINIUPNPC[i : i + 1])
        self.assertEqual(len(reads), 1)
        self.assertEqual(split(connection.transport.value())[0], 200)

    def test_answeredLater(self) -> None:
        """
        While an action answers later, the connection stops reading; the
        requests behind it are answered after it, in order.
        """
        fake = FakeWANIPConnection()
        fake.pending = Deferred()
        connection = Connection(site(fake)[0])
        self.assertEqual(connection.send(ASYNC_UPNP_CLIENT + GUPNP), b"")
        self.assertEqual(connection.transport.producerState, "paused")
        fake.pending.callback(
            {
                "NewInternalPort": 80,
                "NewInternalClient": "192.168.1.20",
                "NewEnabled": True,
                "NewPortMappingDescription": "later",
                "NewLeaseDuration": 0,
            }
        )
        answers = responses(connection.transport.value())
        self.assertEqual(len(answers), 2)
        self.assertIn(b"<NewPortMappingDescription>later</NewPortMappingDescription>", answers[0])
        self.assertIn(b"GetStatusInfoResponse", answers[1])
        self.assertEqual(connection.transport.producerState, "producing")

    def test_clientLeftBeforeTheAnswer(self) -> None:
        """
        A client that hangs up before a later answer gets nothing written,
        and the log says so.
        """
        fake = FakeWANIPConnection()
        fake.pending = Deferred()
        connection = Connection(site(fake)[0])
        connection.send(ASYNC_UPNP_CLIENT)
        connection.channel.connectionLost(Failure(ConnectionError("gone")))
        with capturedLogs() as events:
            fake.pending.callback(
                {
                    "NewInternalPort": 80,
                    "NewInternalClient": "192.168.1.20",
                    "NewEnabled": True,
                    "NewPortMappingDescription": "x",
                    "NewLeaseDuration": 0,
                }
            )
        self.assertEqual(connection.transport.value(), b"")
        self.assertIn("Client 127.0.0.1 left before the answer", [formatEvent(e) for e in events])

    def test_refusalsAreTwistedWebs(self) -> None:
        """
        A POST with a foreign C{Host} or a body over the limit is handed
        over and refused there, with its log line.
        """
        with capturedLogs() as events:
            foreign = Connection(site()[0]).send(MINIUPNPC.replace(b"127.0.0.1:5000", b"evil.example"))
        self.assertEqual(split(foreign)[0], 403)
        self.assertTrue([e for e in events if "DNS rebinding" in formatEvent(e)])
        large = Connection(site(bodyLimit=100)[0]).send(MINIUPNPC)
        self.assertEqual(split(large)[0], 413)


class DirectDeadlineTests(SynchronousTestCase):
    def test_incompleteRequest(self) -> None:
        """
        A POST that does not arrive completely within the request timeout
        gets 408 (within a tick), and is aborted if the client does not
        close.
        """
        lanSite, clock = site(requestTimeout=30.0, idleTimeout=60.0)
        connection = Connection(lanSite)
        clock.advance(10)
        with capturedLogs() as events:
            connection.send(MINIUPNPC[:100])
            clock.advance(29)
            self.assertEqual(connection.transport.value(), b"")
            clock.advance(2)
        self.assertEqual(split(connection.transport.value())[0], 408)
        self.assertTrue(connection.transport.disconnecting)
        self.assertTrue([e for e in events if "no complete request within 30" in formatEvent(e)])
        clock.advance(lanSite.protocol.abortTimeout + 1)
        self.assertTrue(connection.transport.disconnected)

    def test_idle(self) -> None:
        """
        A connection that sends nothing is closed after the idle timeout; so
        is a kept connection idle after its answer.
        """
        lanSite, clock = site(requestTimeout=30.0, idleTimeout=60.0)
        silent = Connection(lanSite)
        clock.advance(30)
        kept = Connection(lanSite)
        kept.send(GUPNP)
        clock.advance(31)
        self.assertTrue(silent.transport.disconnecting)
        self.assertFalse(kept.transport.disconnecting)
        clock.advance(30)
        self.assertTrue(kept.transport.disconnecting)

    def test_answeredButNotRead(self) -> None:
        """
        A client answered and closed that does not even read (its
        connection stays) is aborted once the connection's deadline passes.
        """
        lanSite, clock = site(requestTimeout=30.0, idleTimeout=60.0)
        connection = Connection(lanSite)
        connection.send(MINIUPNPC)
        self.assertTrue(connection.transport.disconnecting)
        clock.advance(59)
        self.assertFalse(connection.transport.disconnected)
        clock.advance(2)
        self.assertTrue(connection.transport.disconnected)

    def test_deadlineSurvivesHandOver(self) -> None:
        """
        A request handed over to twisted.web keeps the deadline of its first
        byte: a client cannot get a second request timeout by sending a head
        the direct path does not take.
        """
        lanSite, clock = site(requestTimeout=30.0, idleTimeout=60.0)
        connection = Connection(lanSite)
        connection.send(b"POST /nowhere HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n")
        clock.advance(20)
        connection.send(b"Content-Length: 10\r\n\r\n")
        clock.advance(11)
        self.assertEqual(split(connection.transport.value())[0], 408)

    def test_noTimersLeft(self) -> None:
        """
        Once the connections are gone, no timer is left within a tick.
        """
        lanSite, clock = site()
        for raw in (MINIUPNPC, GUPNP, b"GET /rootDesc.xml HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n\r\n"):
            connection = Connection(lanSite)
            connection.send(raw)
            connection.channel.connectionLost(Failure(ConnectionError("closed")))
        clock.advance(1)
        self.assertEqual(clock.getDelayedCalls(), [])


# The SOAP and WANIPConnection suites again, through twisted.web: the direct
# path is the default everywhere else, so these show both answer alike.

_lanSite = test_soap.lanSite


def _twistedWebSite(connection: FakeWANIPConnection | None = None) -> LANSite:
    lanSite = _lanSite(connection)
    lanSite.direct = False
    return lanSite


class _TwistedWebSOAP:
    def setUp(self) -> None:
        self.patch(test_soap, "lanSite", _twistedWebSite)  # type: ignore[attr-defined]
        super().setUp()  # type: ignore[misc]


class TwistedWebRealClientTests(_TwistedWebSOAP, test_soap.RealClientTests):
    pass


class TwistedWebFaultTests(_TwistedWebSOAP, test_soap.FaultTests):
    pass


class TwistedWebHostileBodyTests(_TwistedWebSOAP, test_soap.HostileBodyTests):
    pass


class TwistedWebDisconnectTests(_TwistedWebSOAP, test_soap.DisconnectTests):
    pass


class _TwistedWebGateway:
    def http(self, raw: bytes, peer: str = test_wanipconnection.A) -> Any:
        self.reactor.tcpServers[-1][1].direct = False  # type: ignore[attr-defined]
        return super().http(raw, peer)  # type: ignore[misc]


class TwistedWebAddPortMappingTests(_TwistedWebGateway, test_wanipconnection.AddPortMappingTests):
    pass


class TwistedWebDeleteTests(_TwistedWebGateway, test_wanipconnection.DeleteTests):
    pass


class TwistedWebReadTests(_TwistedWebGateway, test_wanipconnection.ReadTests):
    pass


class TwistedWebConnectionActionTests(
    _TwistedWebGateway, test_wanipconnection.ConnectionActionTests
):
    pass
