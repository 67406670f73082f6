"""
Tests for L{gatewayd.upnp.ssdp}: parsing searches as real clients send
them, the announcement and answer sets of a multi-WAN IGD:2, message
formats, timing, and LAN-only answering.
"""

from __future__ import annotations

import random
from ipaddress import IPv4Interface

from zope.interface import implementer
from zope.interface.verify import verifyObject

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from gatewayd.igd.types import Layer3Forwarding, WANCommonInterfaceConfig, WANIPConnection
from gatewayd.interfaces import LANAddress
from gatewayd.upnp.model import Device, Service
from tests.fakes import FakePacketInfoTransport
from gatewayd.upnp.ssdp import (
    MAX_PENDING_REPLIES,
    SSDP_GROUP,
    IPacketInfoTransport,
    MalformedSSDP,
    PacketInfoPort,
    Search,
    SSDPProtocol,
    SSDPService,
    alive,
    answers,
    byebye,
    notifications,
    parseSearch,
    searchResponse,
)

ROOT = "uuid:00000000-0000-4000-8000-000000000000"
IGD = "urn:schemas-upnp-org:device:InternetGatewayDevice"
WANIP = "urn:schemas-upnp-org:service:WANIPConnection"


def wanDevice(i: int) -> str:
    return f"uuid:00000000-0000-4000-8000-1000000000{i:02d}"


def connectionDevice(i: int) -> str:
    return f"uuid:00000000-0000-4000-8000-2000000000{i:02d}"


def tree(wans: int = 2) -> Device:
    """
    An IGD:2 with C{wans} WANDevice:2, each with one WANConnectionDevice:2.
    """

    def service(serviceType, path):
        return Service(serviceType, f"/ctl/{path}", f"/evt/{path}")

    return Device(
        "InternetGatewayDevice",
        2,
        ROOT,
        "gatewayd",
        services=(service(Layer3Forwarding, "L3F"),),
        devices=tuple(
            Device(
                "WANDevice",
                2,
                wanDevice(i),
                f"WAN {i}",
                services=(service(WANCommonInterfaceConfig, f"wan{i}/WANCommonIFC1"),),
                devices=(
                    Device(
                        "WANConnectionDevice",
                        2,
                        connectionDevice(i),
                        f"WAN connection {i}",
                        services=(service(WANIPConnection, f"wan{i}/WANIPConn1"),),
                    ),
                ),
            )
            for i in range(wans)
        ),
    )


# M-SEARCHes exactly as real control points send them.
MINIUPNPC = (
    b"M-SEARCH * HTTP/1.1\r\n"
    b"HOST: 239.255.255.250:1900\r\n"
    b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
    b'MAN: "ssdp:discover"\r\n'
    b"MX: 2\r\n"
    b"\r\n"
)
GSSDP = (
    b"M-SEARCH * HTTP/1.1\r\n"
    b"Host: 239.255.255.250:1900\r\n"
    b'Man: "ssdp:discover"\r\n'
    b"ST: urn:schemas-upnp-org:service:WANIPConnection:2\r\n"
    b"MX: 3\r\n"
    b"User-Agent: Linux/6.1.0 UPnP/1.0 GSSDP/1.6.2\r\n"
    b"\r\n"
)
WINDOWS = (
    b"M-SEARCH * HTTP/1.1\r\n"
    b"Host:239.255.255.250:1900\r\n"
    b"ST:urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
    b'Man:"ssdp:discover"\r\n'
    b"MX:3\r\n"
    b"\r\n"
)
ASYNC_UPNP_CLIENT = (
    b"M-SEARCH * HTTP/1.1\r\n"
    b"HOST:239.255.255.250:1900\r\n"
    b'MAN:"ssdp:discover"\r\n'
    b"MX:4\r\n"
    b"ST:ssdp:all\r\n"
    b"\r\n"
)


def search(st: str, mx: int | None = 2, host: str = "239.255.255.250:1900") -> bytes:
    lines = ["M-SEARCH * HTTP/1.1", f"HOST: {host}", 'MAN: "ssdp:discover"', f"ST: {st}"]
    if mx is not None:
        lines.append(f"MX: {mx}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def headers(message: bytes) -> dict[str, str]:
    """
    The headers of a message we sent, by upper-case name.
    """
    text = message.decode("ascii")
    assert text.endswith("\r\n\r\n"), text
    result = {}
    for line in text.split("\r\n")[1:-2]:
        name, _, value = line.partition(":")
        result[name.upper()] = value.strip()
    return result


class ParseSearchTests(SynchronousTestCase):
    """
    Tests for L{parseSearch}.
    """

    def test_realClients(self) -> None:
        """
        The searches of miniupnpc, GUPnP, Windows and async-upnp-client
        (Home Assistant) are understood.
        """
        table = [
            (MINIUPNPC, Search(f"{IGD}:1", 2, '"ssdp:discover"', "239.255.255.250:1900")),
            (
                GSSDP,
                Search(
                    f"{WANIP}:2",
                    3,
                    '"ssdp:discover"',
                    "239.255.255.250:1900",
                    "Linux/6.1.0 UPnP/1.0 GSSDP/1.6.2",
                ),
            ),
            (WINDOWS, Search(f"{IGD}:1", 3, '"ssdp:discover"', "239.255.255.250:1900")),
            (ASYNC_UPNP_CLIENT, Search("ssdp:all", 4, '"ssdp:discover"', "239.255.255.250:1900")),
        ]
        for raw, expected in table:
            self.assertEqual(parseSearch(raw), expected, raw)

    def test_tolerated(self) -> None:
        """
        Lower-case header names, LF line ends, a missing final blank line
        and extra blanks around values are accepted.
        """
        for raw in [
            MINIUPNPC.lower().replace(b"m-search", b"M-SEARCH").replace(b"http/", b"HTTP/"),
            MINIUPNPC.replace(b"\r\n", b"\n"),
            MINIUPNPC[:-2],
            MINIUPNPC[:-4],
            MINIUPNPC.replace(b"MX: 2", b"MX:   2  ").replace(b"ST: ", b"ST:\t "),
        ]:
            self.assertEqual(parseSearch(raw).mx, 2, raw)
            self.assertEqual(parseSearch(raw).st.lower(), f"{IGD}:1".lower(), raw)

    def test_mxAboveFive(self) -> None:
        """
        A searcher asking for up to 120 seconds is answered within 5.
        """
        self.assertEqual(parseSearch(search("ssdp:all", mx=120)).mx, 5)

    def test_unicastWithoutMX(self) -> None:
        """
        A unicast search needs no MX; a multicast one does.
        """
        raw = search("upnp:rootdevice", mx=None, host="192.168.1.1:1900")
        self.assertEqual(parseSearch(raw, multicast=False).mx, None)
        self.assertRaises(MalformedSSDP, parseSearch, raw, multicast=True)

    def test_malformed(self) -> None:
        """
        Datagrams that are not valid searches are refused with a reason:
        they are never answered.
        """
        notify = (
            b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: upnp:rootdevice\r\n"
            b"NTS: ssdp:alive\r\nUSN: uuid:x::upnp:rootdevice\r\n\r\n"
        )
        response = b"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nEXT:\r\n\r\n"
        table = [
            (MINIUPNPC.replace(b'"ssdp:discover"', b"ssdp:discover"), "MAN"),
            (MINIUPNPC.replace(b'"ssdp:discover"', b'"ssdp:update"'), "MAN"),
            (MINIUPNPC.replace(b'MAN: "ssdp:discover"\r\n', b""), "MAN"),
            (search(""), "ST"),
            (MINIUPNPC.replace(b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n", b""),
             "ST"),
            (MINIUPNPC + b"ST: upnp:rootdevice\r\n", ""),  # ignored after the blank line...
            (MINIUPNPC[:-2] + b"ST: upnp:rootdevice\r\n\r\n", "twice"),
            (search("ssdp:all", mx=None), "MX"),
            (MINIUPNPC.replace(b"MX: 2", b"MX: -1"), "MX"),
            (MINIUPNPC.replace(b"MX: 2", b"MX: two"), "MX"),
            (MINIUPNPC.replace(b"MX: 2", b"MX: 2.5"), "MX"),
            (bytes(range(256)) * 4, ""),
            (b"\x00\xff\xfe garbage", ""),
            (MINIUPNPC.replace(b"HOST: ", "HOST: \u00e9".encode()), "ASCII"),
            (MINIUPNPC.replace(b"HOST", b"HO\x01ST"), "header"),
            (MINIUPNPC.replace(b"MX: 2\r\n", b"MX 2\r\n"), "header"),
            (notify, "NOTIFY"),
            (response, "response"),
            (b"M-SEARCH * HTTP/1.0\r\n" + MINIUPNPC.split(b"\r\n", 1)[1], "start line"),
            (b"", "start line"),
            (MINIUPNPC[:-2] + b"X-Padding: " + b"a" * 3000 + b"\r\n\r\n", "too long"),
        ]
        for raw, reason in table:
            if raw == MINIUPNPC + b"ST: upnp:rootdevice\r\n":
                self.assertEqual(parseSearch(raw).st, f"{IGD}:1")  # ...so this is fine
                continue
            with self.assertRaises(MalformedSSDP, msg=raw) as caught:
                parseSearch(raw)
            self.assertIn(reason, str(caught.exception), raw)


class AnswerSetTests(SynchronousTestCase):
    """
    Tests for L{notifications} and L{answers} on a multi-WAN tree.
    """

    def test_announcementSetSize(self) -> None:
        """
        One announcement round is 4 + 6n messages for n WANs, each NT/USN
        pair once, each USN starting with its device's UDN.
        """
        for n in (1, 2, 3):
            rows = notifications(tree(n))
            self.assertEqual(len(rows), 4 + 6 * n)
            self.assertEqual(len(set(rows)), len(rows))
        rows = notifications(tree(2))
        self.assertIn(("upnp:rootdevice", f"{ROOT}::upnp:rootdevice"), rows)
        self.assertIn((ROOT, ROOT), rows)
        self.assertIn((f"{IGD}:2", f"{ROOT}::{IGD}:2"), rows)
        for i in range(2):
            udn = connectionDevice(i)
            self.assertIn((udn, udn), rows)
            self.assertIn((f"{WANIP}:2", f"{udn}::{WANIP}:2"), rows)

    def test_serviceTypeOncePerDevice(self) -> None:
        """
        A device with two services of one type announces that type once.
        """
        twice = (Service(WANIPConnection, "/a", "/b"), Service(WANIPConnection, "/c", "/d"))
        connection = Device("WANConnectionDevice", 2, connectionDevice(0), "c", services=twice)
        wan = Device("WANDevice", 2, wanDevice(0), "w", devices=(connection,))
        root = Device("InternetGatewayDevice", 2, ROOT, "r", devices=(wan,))
        self.assertEqual(
            [nt for nt, usn in notifications(root) if nt.startswith(WANIP)], [f"{WANIP}:2"]
        )

    def test_ssdpAll(self) -> None:
        """
        A search for ssdp:all gets the whole announcement set, with ST set
        to each message's NT.
        """
        self.assertEqual(answers(tree(2), "ssdp:all"), notifications(tree(2)))
        self.assertEqual(len(answers(tree(2), "ssdp:all")), 16)

    def test_miniupnpcSearches(self) -> None:
        """
        miniupnpc's four searches find the IGD:2: the IGD:1 and
        WANIPConnection:1 searches are answered in the version searched,
        once per device; WANPPPConnection finds nothing.
        """
        self.assertEqual(answers(tree(2), f"{IGD}:1"), [(f"{IGD}:1", f"{ROOT}::{IGD}:1")])
        self.assertEqual(
            answers(tree(2), f"{WANIP}:1"),
            [(f"{WANIP}:1", f"{connectionDevice(i)}::{WANIP}:1") for i in range(2)],
        )
        self.assertEqual(answers(tree(2), "urn:schemas-upnp-org:service:WANPPPConnection:1"), [])
        self.assertEqual(
            answers(tree(2), "upnp:rootdevice"),
            [("upnp:rootdevice", f"{ROOT}::upnp:rootdevice")],
        )

    def test_implementedVersion(self) -> None:
        """
        A search for the implemented version is answered with that version.
        """
        self.assertEqual(answers(tree(1), f"{IGD}:2"), [(f"{IGD}:2", f"{ROOT}::{IGD}:2")])
        self.assertEqual(
            answers(tree(1), "urn:schemas-upnp-org:device:WANDevice:2"),
            [("urn:schemas-upnp-org:device:WANDevice:2",
              f"{wanDevice(0)}::urn:schemas-upnp-org:device:WANDevice:2")],
        )
        self.assertEqual(
            answers(tree(1), "urn:schemas-upnp-org:service:Layer3Forwarding:1"),
            [("urn:schemas-upnp-org:service:Layer3Forwarding:1",
              f"{ROOT}::urn:schemas-upnp-org:service:Layer3Forwarding:1")],
        )

    def test_higherVersion(self) -> None:
        """
        A search for a version above the implemented one is not answered.
        """
        self.assertEqual(answers(tree(2), f"{IGD}:3"), [])
        self.assertEqual(answers(tree(2), f"{WANIP}:3"), [])
        self.assertEqual(
            answers(tree(2), "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:2"), []
        )

    def test_uuid(self) -> None:
        """
        A search for a UDN, root or embedded, gets one answer whose USN is
        the UDN alone.
        """
        self.assertEqual(answers(tree(2), ROOT), [(ROOT, ROOT)])
        udn = connectionDevice(1)
        self.assertEqual(answers(tree(2), udn), [(udn, udn)])
        self.assertEqual(answers(tree(2), "uuid:00000000-0000-4000-8000-999999999999"), [])

    def test_unknown(self) -> None:
        """
        Targets that are not ours get no answer: other device types, other
        domains, version zero, garbage.
        """
        for st in [
            "urn:schemas-upnp-org:device:MediaRenderer:1",
            "urn:dial-multiscreen-org:service:dial:1",
            "urn:example-org:device:InternetGatewayDevice:1",
            f"{IGD}:0",
            f"{IGD}:",
            IGD,
            f"{IGD}:1:1",
            "ssdp:allx",
            "roku:ecp",
        ]:
            self.assertEqual(answers(tree(2), st), [], st)


class FormatTests(SynchronousTestCase):
    """
    Tests for L{alive}, L{byebye} and L{searchResponse}.
    """

    def test_alive(self) -> None:
        """
        An alive message carries the headers UDA 1.1 requires, CRLF-ended.
        """
        self.assertEqual(
            alive(
                f"{WANIP}:2",
                f"{ROOT}::{WANIP}:2",
                location="http://192.168.1.1:5000/rootDesc.xml",
                maxAge=1800,
                bootId=1700000000,
                configId=1,
                server="Linux/6.1 UPnP/1.1 gatewayd/0.1",
            ),
            b"NOTIFY * HTTP/1.1\r\n"
            b"HOST: 239.255.255.250:1900\r\n"
            b"CACHE-CONTROL: max-age=1800\r\n"
            b"LOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n"
            b"NT: urn:schemas-upnp-org:service:WANIPConnection:2\r\n"
            b"NTS: ssdp:alive\r\n"
            b"SERVER: Linux/6.1 UPnP/1.1 gatewayd/0.1\r\n"
            b"USN: " + ROOT.encode() + b"::urn:schemas-upnp-org:service:WANIPConnection:2\r\n"
            b"BOOTID.UPNP.ORG: 1700000000\r\n"
            b"CONFIGID.UPNP.ORG: 1\r\n"
            b"\r\n",
        )

    def test_byebye(self) -> None:
        """
        A byebye message has no LOCATION, CACHE-CONTROL or SERVER.
        """
        self.assertEqual(
            byebye(ROOT, ROOT, bootId=7, configId=3),
            b"NOTIFY * HTTP/1.1\r\n"
            b"HOST: 239.255.255.250:1900\r\n"
            b"NT: " + ROOT.encode() + b"\r\n"
            b"NTS: ssdp:byebye\r\n"
            b"USN: " + ROOT.encode() + b"\r\n"
            b"BOOTID.UPNP.ORG: 7\r\n"
            b"CONFIGID.UPNP.ORG: 3\r\n"
            b"\r\n",
        )

    def test_searchResponse(self) -> None:
        """
        A search response has an RFC 1123 DATE, an empty EXT and the ST
        searched.
        """
        self.assertEqual(
            searchResponse(
                f"{IGD}:1",
                f"{ROOT}::{IGD}:1",
                location="http://192.168.1.1:5000/rootDesc.xml",
                maxAge=1800,
                date=1732476600,
                bootId=1700000000,
                configId=1,
                server="Linux/6.1 UPnP/1.1 gatewayd/0.1",
            ),
            b"HTTP/1.1 200 OK\r\n"
            b"CACHE-CONTROL: max-age=1800\r\n"
            b"DATE: Sun, 24 Nov 2024 19:30:00 GMT\r\n"
            b"EXT:\r\n"
            b"LOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n"
            b"SERVER: Linux/6.1 UPnP/1.1 gatewayd/0.1\r\n"
            b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
            b"USN: " + ROOT.encode() + b"::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
            b"BOOTID.UPNP.ORG: 1700000000\r\n"
            b"CONFIGID.UPNP.ORG: 1\r\n"
            b"\r\n",
        )

    def test_defaultServer(self) -> None:
        """
        The SERVER header names the OS, UPnP/1.1 and gatewayd.
        """
        server = headers(searchResponse("a", "b", location="l", maxAge=1, date=0,
                                        bootId=1, configId=1))["SERVER"]
        self.assertRegex(server, r"^Linux/\S+ UPnP/1\.1 gatewayd/\S+$")


LAN = LANAddress("br-lan", 3, IPv4Interface("192.168.1.1/24"))
GUEST = LANAddress("br-guest", 4, IPv4Interface("10.9.0.1/24"))
WAN_ADDRESS = "203.0.113.7"
CLIENT = ("192.168.1.50", 40000)


class Harness:
    """
    An L{SSDPService} on a fake transport, driven by a L{Clock}.
    """

    def __init__(self, wans: int = 2, addresses=(LAN,), **kwargs) -> None:
        self.clock = Clock()
        self.clock.advance(1700000000)
        self.transport = FakePacketInfoTransport()
        self.protocols: list[SSDPProtocol] = []
        self.root = tree(wans)
        self.httpPort = 5000
        kwargs.setdefault("configId", 1)
        self.service = SSDPService(
            self.clock,
            lambda: self.root,
            lambda: self.httpPort,
            random=random.Random(4),
            listen=self.listen,
            **kwargs,
        )
        self.service.setAddresses(addresses)

    def listen(self, protocol: SSDPProtocol) -> FakePacketInfoTransport:
        self.protocols.append(protocol)
        protocol.makeConnection(self.transport)
        return self.transport

    def receive(self, datagram: bytes, addr=CLIENT, ifindex=LAN.index, destination=SSDP_GROUP):
        self.protocols[-1].datagramReceivedOn(datagram, addr, ifindex, destination)

    def take(self) -> list[tuple[dict[str, str], tuple[str, int], int, str]]:
        """
        What was sent since the last call, headers parsed.
        """
        sent, self.transport.sent[:] = list(self.transport.sent), []
        return [(headers(d), addr, ifindex, source) for d, addr, ifindex, source in sent]

    def started(self) -> "Harness":
        self.service.startService()
        return self


def kinds(sent) -> list[str]:
    return [h.get("NTS", "response") for h, *_ in sent]


class AnnouncementTests(SynchronousTestCase):
    """
    Tests for the announcements of L{SSDPService}.
    """

    def test_startByebyeThenAliveTwice(self) -> None:
        """
        On start every message of the set is first withdrawn (byebye), then
        announced after at most 100 ms, and announced again 250 ms later,
        all to the SSDP group from the LAN address, with the description's
        URL on that address.
        """
        h = Harness().started()
        sent = h.take()
        self.assertEqual(kinds(sent), ["ssdp:byebye"] * 16)
        self.assertEqual({(addr, i, s) for _, addr, i, s in sent},
                         {((SSDP_GROUP, 1900), 3, "192.168.1.1")})
        self.assertEqual({(h["NT"], h["USN"]) for h, *_ in sent}, set(notifications(h.root)))
        h.clock.advance(0.1)
        sent = h.take()
        self.assertEqual(kinds(sent), ["ssdp:alive"] * 16)
        self.assertEqual({h["NT"] for h, *_ in sent}, {nt for nt, _ in notifications(h.root)})
        first = sent[0][0]
        self.assertEqual(first["LOCATION"], "http://192.168.1.1:5000/rootDesc.xml")
        self.assertEqual(first["CACHE-CONTROL"], "max-age=1800")
        self.assertEqual(first["BOOTID.UPNP.ORG"], "1700000000")
        self.assertEqual(first["CONFIGID.UPNP.ORG"], "1")
        h.clock.advance(0.25)
        self.assertEqual(kinds(h.take()), ["ssdp:alive"] * 16)
        h.clock.advance(400)
        self.assertEqual(h.take(), [])

    def test_refreshBeforeHalfMaxAge(self) -> None:
        """
        The alive set is sent again at random intervals shorter than half
        of max-age, so no control point forgets the gateway.
        """
        h = Harness(maxAge=1800).started()
        h.clock.advance(1)
        h.take()
        times = []
        for _ in range(500):
            h.clock.advance(10)
            if h.take():
                times.append(h.clock.seconds())
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertGreater(len(times), 3)
        self.assertLess(max(gaps), 900)
        self.assertLess(times[0] - 1700000001, 900)
        self.assertGreater(len(set(gaps)), 1)

    def test_stop(self) -> None:
        """
        On stop every message is withdrawn, the groups are left, the socket
        closed, and nothing stays scheduled, not even pending replies.
        """
        h = Harness().started()
        h.receive(MINIUPNPC)
        h.take()
        h.service.stopService()
        self.assertEqual(kinds(h.take()), ["ssdp:byebye"] * 16)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertEqual(h.transport.groups, set())
        self.assertFalse(h.transport.listening)
        h.clock.advance(3600)
        self.assertEqual(h.take(), [])

    def test_joinsGroupPerLANInterface(self) -> None:
        """
        The SSDP group is joined once on each LAN interface.
        """
        second = LANAddress("br-lan", 3, IPv4Interface("192.168.2.1/24"))
        h = Harness(addresses=(LAN, second, GUEST)).started()
        self.assertEqual(
            h.transport.groups,
            {(SSDP_GROUP, 3, "192.168.1.1"), (SSDP_GROUP, 4, "10.9.0.1")},
        )

    def test_announcesOnEveryLANAddress(self) -> None:
        """
        Each LAN address gets its own announcements, naming itself in
        LOCATION.
        """
        h = Harness(addresses=(LAN, GUEST)).started()
        h.clock.advance(0.1)
        alives = [s for s in h.take() if s[0]["NTS"] == "ssdp:alive"]
        self.assertEqual(
            {(s[2], s[3], s[0]["LOCATION"]) for s in alives},
            {(3, "192.168.1.1", "http://192.168.1.1:5000/rootDesc.xml"),
             (4, "10.9.0.1", "http://10.9.0.1:5000/rootDesc.xml")},
        )
        self.assertEqual(len(alives), 32)

    def test_addressAddedAndRemoved(self) -> None:
        """
        A LAN address added while running is joined and announced on alone;
        one removed gets a byebye and its group is left.
        """
        h = Harness().started()
        h.clock.advance(1)
        h.take()
        h.service.setAddresses([LAN, GUEST])
        self.assertIn((SSDP_GROUP, 4, "10.9.0.1"), h.transport.groups)
        h.clock.advance(1)
        sent = h.take()
        self.assertEqual({s[3] for s in sent}, {"10.9.0.1"})
        self.assertEqual(kinds(sent), ["ssdp:byebye"] * 16 + ["ssdp:alive"] * 32)
        h.service.setAddresses([GUEST])
        sent = h.take()
        self.assertEqual({s[3] for s in sent}, {"192.168.1.1"})
        self.assertEqual(kinds(sent), ["ssdp:byebye"] * 16)
        self.assertEqual(h.transport.groups, {(SSDP_GROUP, 4, "10.9.0.1")})

    def test_addressesBeforeStart(self) -> None:
        """
        Addresses given before start are only used once started.
        """
        h = Harness()
        self.assertEqual(h.protocols, [])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_treeChange(self) -> None:
        """
        When a WAN is removed and the tree's CONFIGID changes, its messages
        are withdrawn and the rest announced with the new CONFIGID.
        """
        configId = [1]
        h = Harness(configId=lambda: configId[0]).started()
        h.clock.advance(1)
        h.take()
        h.root, configId[0] = tree(1), 2
        h.service.reannounce()
        h.clock.advance(0.1)
        sent = h.take()
        byebyes = [s[0] for s in sent if s[0]["NTS"] == "ssdp:byebye"]
        self.assertEqual(
            {b["USN"].split("::")[0] for b in byebyes}, {wanDevice(1), connectionDevice(1)}
        )
        self.assertEqual({b["CONFIGID.UPNP.ORG"] for b in byebyes}, {"1"})
        alives = [s[0] for s in sent if s[0]["NTS"] == "ssdp:alive"]
        self.assertEqual(len(alives), 10)
        self.assertEqual({a["CONFIGID.UPNP.ORG"] for a in alives}, {"2"})

    def test_httpPortReadWhenSending(self) -> None:
        """
        LOCATION names the HTTP port as it is when the message is sent (the
        HTTP service may bind after SSDP starts).
        """
        h = Harness().started()
        h.take()
        h.httpPort = 49152
        h.clock.advance(0.1)
        self.assertEqual({s[0]["LOCATION"] for s in h.take()},
                         {"http://192.168.1.1:49152/rootDesc.xml"})

    def test_httpPortUnknown(self) -> None:
        """
        While the HTTP port is unknown, no alive or response names a
        LOCATION without a port; they start once it is known.
        """
        h = Harness()
        h.httpPort = None
        h.started()
        h.clock.advance(1)
        self.assertEqual(set(kinds(h.take())), {"ssdp:byebye"})
        h.receive(MINIUPNPC)
        h.clock.advance(5)
        self.assertEqual(h.take(), [])
        h.httpPort = 5000
        h.service.reannounce()
        h.clock.advance(1)
        self.assertEqual(set(kinds(h.take())), {"ssdp:alive"})

    def test_bootId(self) -> None:
        """
        BOOTID.UPNP.ORG defaults to the start time, and stays as given.
        """
        h = Harness().started()
        self.assertEqual({s[0]["BOOTID.UPNP.ORG"] for s in h.take()}, {"1700000000"})
        h = Harness(bootId=42).started()
        self.assertEqual({s[0]["BOOTID.UPNP.ORG"] for s in h.take()}, {"42"})

    def test_sendFailureLogged(self) -> None:
        """
        An interface that refuses to send is logged and does not stop the
        announcements on the others.
        """
        h = Harness(addresses=(LAN, GUEST))
        h.transport.failOn.add(3)
        with capturedLogs() as events:
            h.started()
        self.assertEqual({s[3] for s in h.take()}, {"10.9.0.1"})
        self.assertEqual([e["interface"] for e in events if "interface" in e], ["br-lan"])


class SearchTests(SynchronousTestCase):
    """
    Tests for the answers of L{SSDPService}.
    """

    def setUp(self) -> None:
        self.h = Harness().started()
        self.h.clock.advance(1)
        self.h.take()

    def test_multicastWithinMX(self) -> None:
        """
        A multicast search is answered with unicast datagrams to the
        searcher, from the LAN address, none at once and all within MX
        seconds, spread over that window.
        """
        self.h.receive(ASYNC_UPNP_CLIENT)
        self.assertEqual(self.h.take(), [])
        times = []
        for _ in range(40):
            self.h.clock.advance(0.1)
            times.extend(self.h.clock.seconds() for _ in self.h.take())
        self.assertEqual(len(times), 16)
        self.assertLessEqual(max(times) - 1700000001, 4)
        self.assertGreater(len(set(times)), 4)

    def test_miniupnpc(self) -> None:
        """
        miniupnpc's IGD:1 search gets one response naming IGD:1, sent from
        the LAN address to the searcher, within 2 seconds.
        """
        self.h.receive(MINIUPNPC)
        self.h.clock.advance(2)
        [(response, addr, ifindex, source)] = self.h.take()
        self.assertEqual((addr, ifindex, source), (CLIENT, 3, "192.168.1.1"))
        self.assertEqual(response["ST"], f"{IGD}:1")
        self.assertEqual(response["USN"], f"{ROOT}::{IGD}:1")
        self.assertEqual(response["LOCATION"], "http://192.168.1.1:5000/rootDesc.xml")
        self.assertEqual(response["EXT"], "")
        self.assertRegex(response["DATE"], r"^Tue, 14 Nov 2023 22:13:2[123] GMT$")

    def test_mxCapped(self) -> None:
        """
        A search with MX 120 is answered within 5 seconds.
        """
        self.h.receive(search("ssdp:all", mx=120))
        self.h.clock.advance(5)
        self.assertEqual(len(self.h.take()), 16)

    def test_unicastAtOnce(self) -> None:
        """
        A unicast search to the LAN address is answered at once, without
        MX.
        """
        self.h.receive(search(f"{WANIP}:1", mx=None, host="192.168.1.1:1900"),
                       destination="192.168.1.1")
        sent = self.h.take()
        self.assertEqual([s[0]["ST"] for s in sent], [f"{WANIP}:1"] * 2)
        self.assertEqual({s[1:] for s in sent}, {(CLIENT, 3, "192.168.1.1")})

    def test_notFromLANInterface(self) -> None:
        """
        A search arriving on another interface (a WAN) is not answered,
        even from an address inside the LAN's network.
        """
        self.h.receive(MINIUPNPC, ifindex=2)
        self.h.receive(search("ssdp:all", mx=None), ifindex=2, destination="192.168.1.1")
        self.h.clock.advance(10)
        self.assertEqual(self.h.take(), [])

    def test_sourceOutsideLAN(self) -> None:
        """
        A search from outside the LAN interface's network is not answered.
        """
        with capturedLogs() as events:
            self.h.receive(MINIUPNPC, addr=("198.51.100.9", 1900))
        self.h.clock.advance(10)
        self.assertEqual(self.h.take(), [])
        self.assertEqual([e["addr"] for e in events], [("198.51.100.9", 1900)])

    def test_toWANAddress(self) -> None:
        """
        A unicast search sent to the router's WAN address is not answered,
        even when it arrives on the LAN interface from the LAN.
        """
        self.h.receive(search("ssdp:all", mx=None), destination=WAN_ADDRESS)
        self.h.receive(search("ssdp:all", mx=2), destination="192.168.1.255")
        self.h.clock.advance(10)
        self.assertEqual(self.h.take(), [])

    def test_malformedDropped(self) -> None:
        """
        A malformed search is not answered; the log says from whom and why.
        """
        with capturedLogs() as events:
            self.h.receive(MINIUPNPC.replace(b'"ssdp:discover"', b"ssdp:discover"))
        self.h.clock.advance(10)
        self.assertEqual(self.h.take(), [])
        [event] = events
        self.assertEqual(event["addr"], CLIENT)
        self.assertIn("MAN", str(event["why"]))

    def test_addressRemovedBeforeReply(self) -> None:
        """
        Replies pending for a LAN address that goes away are not sent.
        """
        self.h.receive(MINIUPNPC)
        self.h.service.setAddresses([])
        self.h.take()
        self.h.clock.advance(10)
        self.assertEqual(self.h.take(), [])

    def test_floodBounded(self) -> None:
        """
        An M-SEARCH flood cannot make the gateway queue more than
        MAX_PENDING_REPLIES replies; once they are sent, searches are
        answered again.
        """
        with capturedLogs() as events:
            for _ in range(MAX_PENDING_REPLIES):
                self.h.receive(ASYNC_UPNP_CLIENT)
        self.assertLessEqual(len(self.h.clock.getDelayedCalls()), MAX_PENDING_REPLIES + 1)
        self.assertEqual(len([e for e in events if e["log_level"].name == "warn"]), 1)
        self.h.clock.advance(5)
        self.assertEqual(len(self.h.take()), MAX_PENDING_REPLIES // 16 * 16)
        self.h.receive(MINIUPNPC)
        self.h.clock.advance(5)
        self.assertEqual(len(self.h.take()), 1)

    def test_noPacketInfo(self) -> None:
        """
        A datagram whose ingress interface is unknown is not answered.
        """
        self.h.protocols[-1].datagramReceived(MINIUPNPC, CLIENT)
        self.h.clock.advance(10)
        self.assertEqual(self.h.take(), [])


class PacketInfoPortTests(SynchronousTestCase):
    """
    Tests for L{PacketInfoPort} that need no socket.
    """

    def test_interface(self) -> None:
        """
        The port and the test fake both provide L{IPacketInfoTransport}.
        """
        self.assertTrue(IPacketInfoTransport.implementedBy(PacketInfoPort))
        verifyObject(IPacketInfoTransport, FakePacketInfoTransport())
