"""
Tests for L{gatewayd.upnp.gena}: SUBSCRIBE/UNSUBSCRIBE through the real site
with the bytes control points send, timeouts on a clock, NOTIFY ordering,
coalescing, isolation and failure handling through a fake agent, and the
CallStranger checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from random import Random
from typing import Any

from lxml import etree
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatewayd.igd.types import Layer3Forwarding, WANCommonInterfaceConfig, WANIPConnection
from gatewayd.interfaces import LANAddress
from gatewayd.upnp.gena import (
    MAX_ANSWER_BODY,
    MAX_SEQ,
    EventBus,
    Refusal,
    checkCallback,
    nextSeq,
    notifyAgent,
    parseTimeout,
    propertySet,
)
from gatewayd.upnp.http import LANPolicy, LANSite, makeSite
from gatewayd.upnp.model import Device, Service
from tests.fakes import EVENT, FakeAgent, FakeResponse, Sent

BR = LANAddress("br-lan", 3, IPv4Interface("192.168.1.1/24"))
HOST = b"192.168.1.1:5000"
ME = "192.168.1.20"
PATH = b"/evt/isp1/WANIPConn1"
SID = re.compile(rb"uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


class FakeConnectionService:
    """
    A WANIPConnection:2 implementation's evented variables (and one that is
    not evented, which must not be sent).
    """

    def __init__(self) -> None:
        self.values: dict[str, object] = {
            "PossibleConnectionTypes": "IP_Routed",
            "ConnectionStatus": "Connected",
            "ExternalIPAddress": "203.0.113.7",
            "PortMappingNumberOfEntries": 0,
            "SystemUpdateID": 1,
            "Uptime": 42,
        }

    def stateVariables(self) -> dict[str, object]:
        return dict(self.values)


class FakeCommon:
    def stateVariables(self) -> dict[str, object]:
        return {"PhysicalLinkStatus": "Up", "EnabledForInternet": True}


class FakeL3F:
    def stateVariables(self) -> dict[str, object]:
        return {"DefaultConnectionService": "uuid:c:WANConnectionDevice:2,urn:upnp-org:serviceId:WANIPConn1"}


def tree(connection: FakeConnectionService) -> tuple[Device, dict[str, Service]]:
    services = {
        "ip1": Service(WANIPConnection, "/ctl/isp1/WANIPConn1", "/evt/isp1/WANIPConn1", connection),
        "ip2": Service(
            WANIPConnection, "/ctl/isp2/WANIPConn1", "/evt/isp2/WANIPConn1", FakeConnectionService()
        ),
        "common1": Service(
            WANCommonInterfaceConfig, "/ctl/isp1/WANCommonIFC1", "/evt/isp1/WANCommonIFC1", FakeCommon()
        ),
        "l3f": Service(Layer3Forwarding, "/ctl/L3F", "/evt/L3F", FakeL3F()),
    }
    wans = tuple(
        Device(
            "WANDevice",
            2,
            f"uuid:00000000-0000-4000-8000-00000000000{n}",
            f"WAN {name}",
            services=(services["common1"],) if n == 1 else (),
            devices=(
                Device(
                    "WANConnectionDevice",
                    2,
                    f"uuid:00000000-0000-4000-9000-00000000000{n}",
                    f"WAN {name} connection",
                    services=(services[f"ip{n}"],),
                ),
            ),
        )
        for n, name in ((1, "isp1"), (2, "isp2"))
    )
    root = Device(
        "InternetGatewayDevice",
        2,
        "uuid:00000000-0000-4000-8000-000000000001",
        "gatewayd test",
        services=(services["l3f"],),
        devices=wans,
    )
    return root, services


@implementer(IResponse)
def subscribe(
    callback: bytes = b"<http://192.168.1.20:8090/notify>",
    timeout: bytes | None = b"Second-1800",
    path: bytes = PATH,
) -> bytes:
    """
    A new subscription as async-upnp-client (aiohttp) sends it.
    """
    lines = [b"SUBSCRIBE " + path + b" HTTP/1.1", b"HOST: " + HOST, b"NT: upnp:event"]
    if timeout is not None:
        lines.append(b"TIMEOUT: " + timeout)
    lines += [
        b"CALLBACK: " + callback,
        b"Accept: */*",
        b"Accept-Encoding: gzip, deflate",
        b"User-Agent: Python/3.11 aiohttp/3.14.5",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def renew(sid: bytes, timeout: bytes = b"Second-1800", path: bytes = PATH) -> bytes:
    """
    A renewal as async-upnp-client sends it.
    """
    return (
        b"SUBSCRIBE " + path + b" HTTP/1.1\r\nHOST: " + HOST + b"\r\nSID: " + sid
        + b"\r\nTIMEOUT: " + timeout + b"\r\nUser-Agent: Python/3.11 aiohttp/3.14.5\r\n\r\n"
    )


def unsubscribe(sid: bytes, path: bytes = PATH) -> bytes:
    return b"UNSUBSCRIBE " + path + b" HTTP/1.1\r\nHOST: " + HOST + b"\r\nSID: " + sid + b"\r\n\r\n"


#: GUPnP 1.6 (libsoup 3), as gupnp-universal-cp subscribes.
GUPNP = (
    b"SUBSCRIBE /evt/isp1/WANIPConn1 HTTP/1.1\r\n"
    b"Host: 192.168.1.1:5000\r\n"
    b"Callback: <http://192.168.1.20:44321/GUPnP-0b2c1ad6>\r\n"
    b"NT: upnp:event\r\n"
    b"Timeout: Second-300\r\n"
    b"Accept-Language: en-us;q=1, en;q=0.5\r\n"
    b"User-Agent: gupnp-universal-cp GUPnP/1.6.6 DLNADOC/1.50\r\n"
    b"Accept-Encoding: gzip, deflate\r\n"
    b"Connection: Keep-Alive\r\n\r\n"
)

#: Windows 10's UPnP host (upnphost), as it subscribes to an IGD.
WINDOWS = (
    b"SUBSCRIBE /evt/isp1/WANIPConn1 HTTP/1.1\r\n"
    b"HOST: 192.168.1.1:5000\r\n"
    b"CALLBACK: <http://192.168.1.20:2869/upnp/eventing/bscfjyxmlq>\r\n"
    b"NT: upnp:event\r\n"
    b"TIMEOUT: Second-1800\r\n"
    b"USER-AGENT: Microsoft-Windows/10.0 UPnP/1.0\r\n"
    b"Content-Length: 0\r\n\r\n"
)


@dataclass
class Answer:
    code: int
    headers: dict[bytes, bytes]


def parseAnswer(raw: bytes) -> Answer:
    head = raw.split(b"\r\n\r\n", 1)[0]
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status.split()[1]), headers)


class Harness:
    """
    A bus on a clock, its site (on another clock, so the bus's timers are
    alone on its own) and a fake agent.
    """

    def __init__(self, **options: Any) -> None:
        self.clock = Clock()
        self.agent = FakeAgent()
        self.lan = LANPolicy()
        self.lan.setAddresses([BR], 5000)
        self.bus = EventBus(self.clock, self.agent, Random(5), peerAllowed=self.lan.peerAllowed, **options)
        self.bus.startService()
        self.connection = FakeConnectionService()
        self.root, self.services = tree(self.connection)
        self.siteClock = MemoryReactorClock()
        self.site: LANSite = makeSite(self.root, self.lan, self.siteClock, eventResource=self.bus.resource)
        self._port = 40000

    def request(self, raw: bytes, peer: str = ME) -> Answer:
        """
        Send C{raw} on a new connection from C{peer}; the answer.
        """
        self._port += 1
        address = IPv4Address("TCP", peer, self._port)
        channel = self.site.buildProtocol(address)
        assert channel is not None, peer
        transport = StringTransport(peerAddress=address)
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        answer = parseAnswer(transport.value())
        channel.connectionLost(Failure(ConnectionError("closed")))
        return answer

    def subscribed(self, raw: bytes | None = None, peer: str = ME, initial: bool = True) -> bytes:
        """
        Subscribe; answer the initial event (unless not C{initial}).

        @return: the SID.
        """
        answer = self.request(raw or subscribe(f"<http://{peer}:8090/notify>".encode()), peer)
        assert answer.code == 200, answer
        self.clock.advance(0)
        if initial:
            (first,) = [s for s in self.agent.waiting() if s.sid == answer.headers[b"sid"]]
            first.answer()
        return answer.headers[b"sid"]

    def publish(self, **changes: object) -> None:
        self.bus.publish(self.services["ip1"], changes)


def logged(events: list[dict[str, Any]]) -> str:
    return "\n".join(formatEvent(e) for e in events)


class HeaderGrammarTests(SynchronousTestCase):
    """
    SUBSCRIBE and UNSUBSCRIBE as UDA-essentials.md sections 5.1-5.3 define
    them, from raw requests.
    """

    def test_clientsSubscribe(self) -> None:
        """
        async-upnp-client, GUPnP and Windows subscribe with what they send:
        200, a C{uuid:} SID, the granted TIMEOUT (GUPnP's 300 s raised to
        1800), no body, and the usual Server and Date headers.
        """
        for name, raw in [("async-upnp-client", subscribe()), ("GUPnP", GUPNP), ("Windows", WINDOWS)]:
            h = Harness()
            answer = h.request(raw)
            self.assertEqual(answer.code, 200, name)
            self.assertTrue(SID.fullmatch(answer.headers[b"sid"]), name)
            self.assertEqual(answer.headers[b"timeout"], b"Second-1800", name)
            self.assertEqual(answer.headers[b"content-length"], b"0", name)
            self.assertIn(b"UPnP/1.1 gatewayd/", answer.headers[b"server"], name)
            self.assertIn(b"date", answer.headers, name)

    def test_table(self) -> None:
        """
        Every malformed or contradictory request gets the status UDA names:
        400 for SID with NT or CALLBACK (or a repeated header), 412 for a
        missing or bad NT or CALLBACK and for a missing, empty or unknown
        SID; GET and POST are 405 with C{Allow}.
        """
        unknown = b"uuid:00000000-0000-4000-8000-000000000000"
        base = b"SUBSCRIBE /evt/isp1/WANIPConn1 HTTP/1.1\r\nHOST: 192.168.1.1:5000\r\n"
        cb = b"CALLBACK: <http://192.168.1.20:8090/notify>\r\n"
        table: list[tuple[str, bytes, int]] = [
            ("no NT", base + cb + b"\r\n", 412),
            ("NT propchange", base + cb + b"NT: upnp:propchange\r\n\r\n", 412),
            ("NT empty", base + cb + b"NT:\r\n\r\n", 412),
            ("no CALLBACK", base + b"NT: upnp:event\r\n\r\n", 412),
            ("CALLBACK unbracketed", base + b"NT: upnp:event\r\nCALLBACK: http://192.168.1.20:8090/\r\n\r\n", 412),
            ("CALLBACK empty", base + b"NT: upnp:event\r\nCALLBACK: <>\r\n\r\n", 412),
            ("CALLBACK junk between", base + b"NT: upnp:event\r\nCALLBACK: <http://192.168.1.20:8090/>x\r\n\r\n", 412),
            ("five CALLBACKs", subscribe(b"<http://192.168.1.20:8090/>" * 5), 412),
            ("CALLBACK twice", base + cb + cb + b"NT: upnp:event\r\n\r\n", 400),
            ("NT twice", base + cb + b"NT: upnp:event\r\nNT: upnp:event\r\n\r\n", 400),
            ("SID with NT", base + b"SID: " + unknown + b"\r\nNT: upnp:event\r\n\r\n", 400),
            ("SID with CALLBACK", base + b"SID: " + unknown + b"\r\n" + cb + b"\r\n", 400),
            ("SID with both", base + b"SID: " + unknown + b"\r\n" + cb + b"NT: upnp:event\r\n\r\n", 400),
            ("renew unknown SID", renew(unknown), 412),
            ("renew empty SID", base + b"SID: \r\n\r\n", 412),
            ("renew garbage SID", renew(b"not-a-sid"), 412),
            ("unsubscribe without SID", b"UNSUBSCRIBE /evt/isp1/WANIPConn1 HTTP/1.1\r\nHOST: 192.168.1.1:5000\r\n\r\n", 412),
            ("unsubscribe unknown SID", unsubscribe(unknown), 412),
            (
                "unsubscribe with NT",
                b"UNSUBSCRIBE /evt/isp1/WANIPConn1 HTTP/1.1\r\nHOST: 192.168.1.1:5000\r\nSID: "
                + unknown + b"\r\nNT: upnp:event\r\n\r\n",
                400,
            ),
            (
                "unsubscribe with CALLBACK",
                b"UNSUBSCRIBE /evt/isp1/WANIPConn1 HTTP/1.1\r\nHOST: 192.168.1.1:5000\r\nSID: "
                + unknown + b"\r\n" + cb + b"\r\n",
                400,
            ),
            ("GET", b"GET /evt/isp1/WANIPConn1 HTTP/1.1\r\nHOST: 192.168.1.1:5000\r\n\r\n", 405),
            ("POST", b"POST /evt/isp1/WANIPConn1 HTTP/1.1\r\nHOST: 192.168.1.1:5000\r\nContent-Length: 0\r\n\r\n", 405),
            ("two URLs", subscribe(b"<http://192.168.1.20:8090/a> <http://192.168.1.20:8091/b>"), 200),
            ("lower-case NT header name", base + cb.lower().replace(b"<h", b"<h") + b"nt: upnp:event\r\n\r\n", 200),
        ]
        wrong = []
        for name, raw, expected in table:
            h = Harness()
            answer = h.request(raw)
            if answer.code != expected:
                wrong.append((name, answer.code, expected))
            if expected != 200 and (b"sid" in answer.headers or h.bus.subscriptions()):
                wrong.append((name, "subscribed anyway"))
            if expected != 200:
                self.assertEqual(h.agent.sent, [], name)
        self.assertEqual(wrong, [])

    def test_getAllows(self) -> None:
        """
        GET on an event URL says which methods it takes.
        """
        answer = Harness().request(b"GET /evt/L3F HTTP/1.1\r\nHOST: 192.168.1.1:5000\r\n\r\n")
        self.assertEqual((answer.code, answer.headers[b"allow"]), (405, b"SUBSCRIBE, UNSUBSCRIBE"))

    def test_timeoutClamped(self) -> None:
        """
        The granted duration is the request clamped into 1800..86400 s;
        C{infinite}, no TIMEOUT or an unparseable one get 1800 (UDA: never
        grant infinite).
        """
        table = [
            (b"Second-1800", b"Second-1800"),
            (b"Second-3600", b"Second-3600"),
            (b"second-7200", b"Second-7200"),
            (b"SECOND-60", b"Second-1800"),
            (b"Second-0", b"Second-1800"),
            (b"Second-100000", b"Second-86400"),
            (b"Second-99999999999", b"Second-1800"),
            (b"Second-infinite", b"Second-1800"),
            (b"infinite", b"Second-1800"),
            (b"Second-12x", b"Second-1800"),
            (None, b"Second-1800"),
        ]
        granted = [(t, Harness().request(subscribe(timeout=t)).headers[b"timeout"]) for t, _ in table]
        self.assertEqual(granted, table)

    def test_timeoutRange(self) -> None:
        """
        The range and default are the operator's to choose.
        """
        h = Harness(minTimeout=300, maxTimeout=600, defaultTimeout=450)
        self.assertEqual(h.request(subscribe(timeout=b"Second-60")).headers[b"timeout"], b"Second-300")
        self.assertEqual(h.request(subscribe(timeout=None)).headers[b"timeout"], b"Second-450")
        self.assertEqual(h.request(subscribe(timeout=b"Second-9000")).headers[b"timeout"], b"Second-600")
        self.assertRaises(ValueError, EventBus, Clock(), FakeAgent(), Random(), peerAllowed=bool, defaultTimeout=10)

    def test_parseTimeout(self) -> None:
        """
        C{Second-N} in any case is N seconds; anything else means "the
        default".
        """
        self.assertEqual(
            [parseTimeout(v) for v in ["Second-5", "SECOND-5", "Second-infinite", "", "5", None]],
            [5, 5, None, None, None, None],
        )

    def test_sidsFromRandom(self) -> None:
        """
        SIDs come from the random source passed in: distinct UUIDs, the
        same ones for the same seed.
        """
        first = [Harness().request(subscribe()).headers[b"sid"] for _ in range(2)]
        h = Harness()
        second = [h.request(subscribe()).headers[b"sid"] for _ in range(2)]
        self.assertEqual(first[0], second[0])
        self.assertNotEqual(second[0], second[1])


class SubscriptionLifeTests(SynchronousTestCase):
    """
    Renewal, expiry and cancellation on a clock.
    """

    def test_renewalKeepsSIDAndSEQ(self) -> None:
        """
        A renewal answers with the same SID and the new duration, sends no
        new initial event, and the next event continues the SEQ count.
        """
        h = Harness()
        sid = h.subscribed()
        h.publish(ConnectionStatus="Disconnected")
        h.agent.waiting()[0].answer()
        h.clock.advance(1000)
        answer = h.request(renew(sid, b"Second-3600"))
        self.assertEqual((answer.code, answer.headers[b"sid"], answer.headers[b"timeout"]), (200, sid, b"Second-3600"))
        h.clock.advance(0)
        self.assertEqual(h.agent.waiting(), [])
        h.publish(ConnectionStatus="Connected")
        self.assertEqual([s.seq for s in h.agent.sent], [0, 1, 2])

    def test_expiresOnTime(self) -> None:
        """
        A subscription not renewed is forgotten exactly when its duration
        runs out: events stop and renewing it is 412.
        """
        h = Harness()
        sid = h.subscribed()
        h.clock.advance(1799)
        h.publish(ConnectionStatus="Connecting")
        self.assertEqual(len(h.agent.sent), 2)
        h.agent.sent[-1].answer()
        h.clock.advance(1)
        self.assertEqual(h.bus.subscriptions(), 0)
        h.publish(ConnectionStatus="Connected")
        self.assertEqual(len(h.agent.sent), 2)
        self.assertEqual(h.request(renew(sid)).code, 412)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_renewalPostponesExpiry(self) -> None:
        """
        Renewing restarts the duration from the renewal.
        """
        h = Harness()
        sid = h.subscribed()
        h.clock.advance(1700)
        self.assertEqual(h.request(renew(sid)).code, 200)
        h.clock.advance(1799)
        self.assertEqual(h.bus.subscriptions(), 1)
        h.clock.advance(1)
        self.assertEqual(h.bus.subscriptions(), 0)

    def test_unsubscribe(self) -> None:
        """
        UNSUBSCRIBE ends the subscription at once: 200, no more events, a
        second UNSUBSCRIBE is 412, and the expiry timer is gone.
        """
        h = Harness()
        sid = h.subscribed()
        answer = h.request(unsubscribe(sid))
        self.assertEqual((answer.code, answer.headers[b"content-length"]), (200, b"0"))
        h.publish(ConnectionStatus="Connecting")
        self.assertEqual(len(h.agent.sent), 1)
        self.assertEqual(h.request(unsubscribe(sid)).code, 412)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_otherHostCannotUseSID(self) -> None:
        """
        Another LAN host that learnt a SID can neither renew nor cancel it.
        """
        h = Harness()
        sid = h.subscribed()
        self.assertEqual(h.request(renew(sid), peer="192.168.1.30").code, 412)
        self.assertEqual(h.request(unsubscribe(sid), peer="192.168.1.30").code, 412)
        self.assertEqual(h.bus.subscriptions(), 1)

    def test_sidOfAnotherService(self) -> None:
        """
        A SID is valid only on the event URL it was issued for.
        """
        h = Harness()
        sid = h.subscribed()
        self.assertEqual(h.request(renew(sid, path=b"/evt/isp2/WANIPConn1")).code, 412)
        self.assertEqual(h.request(unsubscribe(sid, path=b"/evt/L3F")).code, 412)


class EventTests(SynchronousTestCase):
    """
    What the NOTIFY messages carry.
    """

    def test_initialEvent(self) -> None:
        """
        Right after the SUBSCRIBE answer the subscriber gets SEQ 0 with
        every evented variable of the service in SCPD order, and nothing
        that is not evented.
        """
        h = Harness()
        answer = h.request(subscribe())
        self.assertEqual(h.agent.sent, [])
        h.clock.advance(0)
        (initial,) = h.agent.sent
        self.assertEqual((initial.method, initial.url), (b"NOTIFY", b"http://192.168.1.20:8090/notify"))
        self.assertEqual(initial.header(b"nt"), b"upnp:event")
        self.assertEqual(initial.header(b"nts"), b"upnp:propchange")
        self.assertEqual(initial.header(b"content-type"), b'text/xml; charset="utf-8"')
        self.assertEqual((initial.sid, initial.seq), (answer.headers[b"sid"], 0))
        self.assertEqual(
            initial.values(),
            [
                ("PossibleConnectionTypes", "IP_Routed"),
                ("ConnectionStatus", "Connected"),
                ("ExternalIPAddress", "203.0.113.7"),
                ("PortMappingNumberOfEntries", "0"),
                ("SystemUpdateID", "1"),
            ],
        )

    def test_initialEventOtherServices(self) -> None:
        """
        WANCommonInterfaceConfig's and Layer3Forwarding's subscribers get
        their own variables, booleans as 0/1.
        """
        h = Harness()
        h.subscribed(subscribe(path=b"/evt/isp1/WANCommonIFC1"), initial=False)
        h.subscribed(subscribe(b"<http://192.168.1.20:8091/>", path=b"/evt/L3F"), initial=False)
        self.assertEqual(
            [s.values() for s in h.agent.sent],
            [
                [("PhysicalLinkStatus", "Up"), ("EnabledForInternet", "1")],
                [("DefaultConnectionService", "uuid:c:WANConnectionDevice:2,urn:upnp-org:serviceId:WANIPConn1")],
            ],
        )

    def test_escaping(self) -> None:
        """
        Values with XML's special characters arrive intact.
        """
        h = Harness()
        h.connection.values["ExternalIPAddress"] = "<a & 'b'>\"]]>"
        h.subscribed(initial=False)
        self.assertIn(("ExternalIPAddress", "<a & 'b'>\"]]>"), h.agent.sent[0].values())
        self.assertIn(b"&lt;a &amp; 'b'&gt;\"]]&gt;", h.agent.sent[0].body)

    def test_propertySet(self) -> None:
        """
        The body is the UDA property set: one e:property per variable, the
        variable unqualified.
        """
        self.assertEqual(
            propertySet([("A", "1"), ("B", "x")]),
            b"<?xml version='1.0' encoding='utf-8'?>\n"
            b'<e:propertyset xmlns:e="urn:schemas-upnp-org:event-1-0">'
            b"<e:property><A>1</A></e:property><e:property><B>x</B></e:property></e:propertyset>",
        )

    def test_changesTogether(self) -> None:
        """
        PortMappingNumberOfEntries and SystemUpdateID published together
        arrive in one message with SEQ 1, formatted by their types.
        """
        h = Harness()
        h.subscribed()
        h.publish(PortMappingNumberOfEntries=1, SystemUpdateID=2)
        (event,) = h.agent.waiting()
        self.assertEqual(event.seq, 1)
        self.assertEqual(event.values(), [("PortMappingNumberOfEntries", "1"), ("SystemUpdateID", "2")])

    def test_seqIncrements(self) -> None:
        """
        Each message takes the next SEQ.
        """
        h = Harness()
        h.subscribed()
        for n in range(5):
            h.publish(PortMappingNumberOfEntries=n)
            h.agent.waiting()[0].answer()
        self.assertEqual([s.seq for s in h.agent.sent], [0, 1, 2, 3, 4, 5])

    def test_seqWraps(self) -> None:
        """
        After 4294967295 comes 1: 0 is only ever the initial event.
        """
        self.assertEqual([nextSeq(0), nextSeq(1), nextSeq(MAX_SEQ - 1), nextSeq(MAX_SEQ)], [1, 2, MAX_SEQ, 1])

    def test_unknownVariable(self) -> None:
        """
        Publishing a variable the service does not event is a programming
        error: logged, never sent; the rest of the change goes out.
        """
        h = Harness()
        h.subscribed()
        with capturedLogs() as events:
            h.publish(Uptime=5, ConnectionStatus="Connecting")
        self.assertIn("Uptime is not an evented variable", logged(events))
        self.assertEqual(h.agent.waiting()[0].values(), [("ConnectionStatus", "Connecting")])

    def test_valuesOfEachService(self) -> None:
        """
        A change of one WAN's service reaches only that service's
        subscribers.
        """
        h = Harness()
        h.subscribed()
        h.subscribed(subscribe(b"<http://192.168.1.20:8091/>", path=b"/evt/isp2/WANIPConn1"))
        h.bus.publish(h.services["ip2"], {"ConnectionStatus": "Disconnected"})
        (event,) = h.agent.waiting()
        self.assertEqual(event.url, b"http://192.168.1.20:8091/")

    def test_observer(self) -> None:
        """
        The bus offers the (name, value) observer the domain objects take.
        """
        h = Harness()
        h.subscribed()
        h.bus.observer(h.services["ip1"])("ExternalIPAddress", "198.51.100.1")
        self.assertEqual(h.agent.waiting()[0].values(), [("ExternalIPAddress", "198.51.100.1")])


class DeliveryTests(SynchronousTestCase):
    """
    Ordering, coalescing, isolation, timeouts and failures.
    """

    def test_oneAtATime(self) -> None:
        """
        While a message to a subscriber is unanswered, the next one waits.
        """
        h = Harness()
        h.subscribed(initial=False)
        h.publish(ConnectionStatus="Disconnected")
        self.assertEqual([s.seq for s in h.agent.sent], [0])
        h.agent.sent[0].answer()
        self.assertEqual([s.seq for s in h.agent.sent], [0, 1])

    def test_coalesced(self) -> None:
        """
        Three changes while a message is in flight become one message with
        the latest value of every variable.
        """
        h = Harness()
        h.subscribed(initial=False)
        h.publish(ConnectionStatus="Disconnected")
        h.publish(ConnectionStatus="Connecting", ExternalIPAddress="")
        h.publish(ConnectionStatus="Connected", ExternalIPAddress="198.51.100.1")
        h.agent.sent[0].answer()
        self.assertEqual(len(h.agent.sent), 2)
        self.assertEqual(
            h.agent.sent[1].values(),
            [("ConnectionStatus", "Connected"), ("ExternalIPAddress", "198.51.100.1")],
        )
        h.agent.sent[1].answer()
        self.assertEqual(len(h.agent.sent), 2)

    def test_changeBeforeInitialEvent(self) -> None:
        """
        A change published between the SUBSCRIBE answer and the initial
        event is part of the initial event, not a message before it.
        """
        h = Harness()
        h.request(subscribe())
        h.publish(ConnectionStatus="Disconnected")
        self.assertEqual(h.agent.sent, [])
        h.clock.advance(0)
        (initial,) = h.agent.sent
        self.assertEqual(initial.seq, 0)
        self.assertIn(("ConnectionStatus", "Disconnected"), initial.values())

    def test_isolation(self) -> None:
        """
        One subscriber that never answers does not delay the twenty others:
        each gets every change at once.
        """
        h = Harness(maxPerClient=100)
        silent = h.subscribed(subscribe(b"<http://192.168.1.20:9999/>"), initial=False)
        for n in range(20):
            h.subscribed(subscribe(b"<http://192.168.1.20:%d/>" % (10000 + n,)))
        for value in range(1, 4):
            h.publish(PortMappingNumberOfEntries=value, SystemUpdateID=value + 1)
            others = [s for s in h.agent.waiting() if s.sid != silent]
            self.assertEqual(len(others), 20)
            self.assertTrue(all(s.values()[0] == ("PortMappingNumberOfEntries", str(value)) for s in others))
            for s in others:
                s.answer()
        self.assertEqual(len([s for s in h.agent.sent if s.sid == silent]), 1)

    def test_hungNotifyTimesOut(self) -> None:
        """
        A NOTIFY unanswered for 30 s is abandoned (its connection closed);
        its values go out again 10 s later with the next SEQ, together with
        what changed meanwhile.
        """
        h = Harness()
        h.subscribed(initial=False)
        h.clock.advance(29)
        h.publish(ConnectionStatus="Connecting")
        self.assertEqual(h.agent.sent[0].cancelled, [])
        h.clock.advance(1)
        self.assertEqual(h.agent.sent[0].cancelled, [True])
        self.assertEqual(len(h.agent.sent), 1)
        h.clock.advance(10)
        retry = h.agent.sent[1]
        self.assertEqual(retry.seq, 1)
        self.assertEqual(dict(retry.values())["ConnectionStatus"], "Connecting")
        self.assertEqual(len(retry.values()), 5)
        retry.answer()
        self.assertEqual(h.bus.subscriptions(), 1)

    def test_droppedAfterFailures(self) -> None:
        """
        A subscriber that cannot be reached three messages in a row is
        dropped, with a log line; renewing it is then 412.
        """
        h = Harness()
        with capturedLogs() as events:
            sid = h.subscribed(initial=False)
            h.agent.sent[0].fail()
            h.clock.advance(10)
            h.agent.sent[1].fail()
            h.clock.advance(10)
            self.assertEqual(h.bus.subscriptions(), 1)
            h.agent.sent[2].fail()
        self.assertEqual(h.bus.subscriptions(), 0)
        self.assertIn(f"Dropped {sid.decode()}", logged(events))
        self.assertIn("3 failed NOTIFYs in a row", logged(events))
        h.clock.advance(60)
        self.assertEqual(len(h.agent.sent), 3)
        self.assertEqual(h.request(renew(sid)).code, 412)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_successResetsFailures(self) -> None:
        """
        Failures count only in a row: a delivered message forgives earlier
        ones.
        """
        h = Harness()
        h.subscribed(initial=False)
        for _ in range(3):
            h.agent.waiting()[0].fail()
            h.clock.advance(10)
            h.agent.waiting()[0].answer()
            h.publish(ConnectionStatus="Connecting")
        self.assertEqual(h.bus.subscriptions(), 1)

    def test_nextCallbackURL(self) -> None:
        """
        When the first CALLBACK URL cannot be reached, the same message goes
        to the next one.
        """
        h = Harness()
        h.subscribed(subscribe(b"<http://192.168.1.20:8090/a><http://192.168.1.20:8091/b>"), initial=False)
        h.agent.sent[0].fail()
        second = h.agent.sent[1]
        self.assertEqual((second.url, second.seq), (b"http://192.168.1.20:8091/b", 0))
        second.answer()
        h.publish(ConnectionStatus="Connecting")
        self.assertEqual(h.agent.sent[2].url, b"http://192.168.1.20:8090/a")

    def test_noRedirect(self) -> None:
        """
        A redirect is not followed: the message failed, and nothing is sent
        to the Location or to another CALLBACK URL.
        """
        h = Harness()
        h.subscribed(subscribe(b"<http://192.168.1.20:8090/a><http://192.168.1.20:8091/b>"), initial=False)
        h.agent.sent[0].answer(301, headers=Headers({b"location": [b"http://203.0.113.9/"]}))
        self.assertEqual(len(h.agent.sent), 1)
        h.clock.advance(10)
        self.assertEqual([s.url for s in h.agent.sent], [b"http://192.168.1.20:8090/a"] * 2)

    def test_answerBodyCapped(self) -> None:
        """
        A subscriber answering with an endless body is cut off after
        MAX_ANSWER_BODY bytes; a short body is read to its end.
        """
        h = Harness()
        h.subscribed(initial=False)
        response = h.agent.sent[0].answer(body=b"x" * (MAX_ANSWER_BODY * 4))
        self.assertTrue(response.aborted)
        h.publish(ConnectionStatus="Connecting")
        response = h.agent.sent[1].answer(body=b"<html>ok</html>")
        self.assertFalse(response.aborted)
        self.assertEqual(h.bus.subscriptions(), 1)

    def test_fakeAgent(self) -> None:
        """
        The fake agent provides IAgent.
        """
        self.assertTrue(verifyObject(IAgent, FakeAgent()))

    def test_notifyAgent(self) -> None:
        """
        The agent made for the bus is a plain Agent (no redirects followed)
        whose connections do not log two lines per NOTIFY.
        """
        agent = notifyAgent(MemoryReactorClock(), connectTimeout=5)
        self.assertIsInstance(agent, Agent)
        self.assertTrue(verifyObject(IAgent, agent))
        self.assertFalse(agent._pool._factory.noisy)
        self.assertFalse(agent._pool.persistent)


class CallStrangerTests(SynchronousTestCase):
    """
    CVE-2020-12695: a CALLBACK may only point back at the subscriber.
    """

    def test_refused(self) -> None:
        """
        Every CALLBACK that is not C{http://<the subscriber's own IPv4
        address>:<port >= 1024>/...} is refused with 412 and a log line
        naming the subscriber, and nothing is ever sent there.
        """
        table = [
            ("another LAN host", b"<http://192.168.1.30:8090/>", "not the subscriber's address"),
            ("the WAN side", b"<http://203.0.113.7:8090/>", "not the subscriber's address"),
            ("our own address", b"<http://192.168.1.1:5000/>", "not the subscriber's address"),
            ("loopback", b"<http://127.0.0.1:8090/>", "not the subscriber's address"),
            ("port 80", b"<http://192.168.1.20:80/>", "port 80"),
            ("no port", b"<http://192.168.1.20/notify>", "port 80"),
            ("port 0", b"<http://192.168.1.20:0/>", "port 0"),
            ("port 65536", b"<http://192.168.1.20:65536/>", "port 65536"),
            ("https", b"<https://192.168.1.20:8443/>", "not http://"),
            ("file", b"<file:///etc/passwd>", "not http://"),
            ("gopher", b"<gopher://192.168.1.20:8090/>", "not http://"),
            ("hostname", b"<http://attacker.example:8090/>", "not an IPv4 address"),
            ("IPv6 literal", b"<http://[fe80::1]:8090/>", "not an IPv4 address"),
            ("decimal address", b"<http://3232235796:8090/>", "not an IPv4 address"),
            ("leading zeros", b"<http://192.168.001.020:8090/>", "not an IPv4 address"),
            ("user info", b"<http://x@192.168.1.20:8090/>", "not a URL"),
            ("space in path", b"<http://192.168.1.20:8090/a b>", "not a URL"),
            ("one good, one bad", b"<http://192.168.1.20:8090/><http://192.168.1.30:8090/>", "192.168.1.30"),
        ]
        wrong = []
        for name, callback, why in table:
            h = Harness()
            with capturedLogs() as events:
                answer = h.request(subscribe(callback))
            text = logged(events)
            if answer.code != 412 or why not in text or ME not in text:
                wrong.append((name, answer.code, text))
            h.clock.advance(0)
            if h.agent.sent:
                wrong.append((name, "sent"))
        self.assertEqual(wrong, [])

    def test_lowerPortAllowed(self) -> None:
        """
        An operator may allow lower callback ports.
        """
        h = Harness(minCallbackPort=80)
        h.subscribed(subscribe(b"<http://192.168.1.20/notify>"), initial=False)
        self.assertEqual(h.agent.sent[0].url, b"http://192.168.1.20:80/notify")

    def test_notOnLAN(self) -> None:
        """
        A subscriber's own address is refused too when it is not on a LAN
        network (the site already refuses such peers; this is the second
        lock).
        """
        with self.assertRaises(Refusal) as caught:
            checkCallback("http://10.9.9.9:8090/", "10.9.9.9", lambda peer: False, 1024)
        self.assertEqual(caught.exception.code, 412)
        self.assertEqual(
            checkCallback("http://10.9.9.9:8090/x?y=1", "::ffff:10.9.9.9", lambda peer: True, 1024).url,
            b"http://10.9.9.9:8090/x?y=1",
        )


class LimitTests(SynchronousTestCase):
    """
    Subscriptions per client and in total.
    """

    def test_perClient(self) -> None:
        """
        A client at its limit gets 503 and a log line; others still
        subscribe, and it may again once one of its own ended.
        """
        h = Harness(maxPerClient=2)
        first = h.subscribed()
        h.subscribed()
        with capturedLogs() as events:
            self.assertEqual(h.request(subscribe()).code, 503)
        self.assertIn("the limit per client", logged(events))
        self.assertEqual(h.request(subscribe(b"<http://192.168.1.21:8090/>"), peer="192.168.1.21").code, 200)
        h.request(unsubscribe(first))
        self.assertEqual(h.request(subscribe()).code, 200)

    def test_total(self) -> None:
        """
        Beyond the total limit every client gets 503.
        """
        h = Harness(maxSubscriptions=3)
        for n in range(3):
            h.subscribed(subscribe(b"<http://192.168.1.%d:8090/>" % (30 + n,)), peer=f"192.168.1.{30 + n}")
        with capturedLogs() as events:
            self.assertEqual(h.request(subscribe(b"<http://192.168.1.40:8090/>"), peer="192.168.1.40").code, 503)
        self.assertIn("the limit", logged(events))

    def test_renewalAtLimit(self) -> None:
        """
        Renewing is always possible at the limit: it takes no new room.
        """
        h = Harness(maxSubscriptions=1)
        sid = h.subscribed()
        self.assertEqual(h.request(renew(sid)).code, 200)


class ServiceTests(SynchronousTestCase):
    """
    The bus as a service, and services that go away.
    """

    def test_endService(self) -> None:
        """
        When a WAN is removed, its subscriptions end (a NOTIFY in flight is
        abandoned), new SUBSCRIBEs there are refused, and other services'
        subscribers go on.
        """
        h = Harness()
        h.subscribed(initial=False)
        other = h.subscribed(subscribe(b"<http://192.168.1.20:8091/>", path=b"/evt/isp2/WANIPConn1"))
        h.bus.endService(h.services["ip1"])
        self.assertEqual(h.agent.sent[0].cancelled, [True])
        self.assertEqual(h.bus.subscriptions(h.services["ip1"]), 0)
        self.assertEqual(h.request(subscribe()).code, 412)
        h.bus.publish(h.services["ip2"], {"ConnectionStatus": "Connecting"})
        self.assertEqual([s.sid for s in h.agent.waiting()], [other])
        self.assertEqual(h.bus.subscriptions(h.services["ip2"]), 1)

    def test_stopService(self) -> None:
        """
        Stopping leaves nothing behind: no expiry or retry timer, no
        initial event waiting, no NOTIFY in flight; SUBSCRIBE is then 503.
        """
        h = Harness(maxPerClient=10)
        h.subscribed(initial=False)  # in flight
        h.subscribed(subscribe(b"<http://192.168.1.20:8091/>"), initial=False)
        h.agent.waiting()[-1].fail()  # retry pending
        h.request(subscribe(b"<http://192.168.1.20:8092/>"))  # initial event not yet sent
        h.bus.stopService()
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertEqual(h.agent.waiting(), [])
        self.assertEqual(h.bus.subscriptions(), 0)
        h.clock.advance(100)
        self.assertEqual(len(h.agent.sent), 2)
        self.assertEqual(h.request(subscribe()).code, 503)
