"""
Tests for L{gatewayd.igd.wanipconnection}, L{gatewayd.igd.mappings},
L{gatewayd.igd.l3forwarding} and the access rules they apply: a whole
gateway built from a configuration, driven over HTTP with the bytes real
clients send, checked on the answers and on what the kernel would hold.
"""

from __future__ import annotations

from ipaddress import IPv4Interface
from pathlib import Path
from xml.sax.saxutils import escape

from lxml import etree

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.python.filepath import FilePath
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gatewayd import config
from gatewayd.igd.portmap import PortMapping
from gatewayd.igd.wanipconnection import LIST_PAGE_SIZE
from gatewayd.interfaces import InterfaceState
from gatewayd.nat.memory import MemoryNATBackend, NATError
from gatewayd.service import makeGateway
from gatewayd.state import runSynchronously
from tests.fakes import FakeNetlink, FakePacketInfoTransport
from tests.support import temporaryPath

V1 = "urn:schemas-upnp-org:service:WANIPConnection:1"
V2 = "urn:schemas-upnp-org:service:WANIPConnection:2"
COMMON = "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1"
L3F = "urn:schemas-upnp-org:service:Layer3Forwarding:1"
CONTROL_NS = "urn:schemas-upnp-org:control-1-0"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
LISTING_NS = "urn:schemas-upnp-org:gw:WANIPConnection"

#: The LAN clients (TCP peers) and the configured admin host.
A, B, ADMIN = "192.168.1.20", "192.168.1.21", "192.168.1.2"

#: Control URLs: fibre (unmanaged, netlink) is preferred, backup simulated.
FIBRE, BACKUP = "/ctl/fibre/WANIPConn1", "/ctl/backup/WANIPConn1"

CONFIG = """
[gateway]
state_dir = "{state}"
nat = "memory"

[lan]
interfaces = ["br-lan"]
http_port = 5000

[upnp]
friendly_name = "test gateway"
admin_hosts = ["192.168.1.2/32"]
{upnp}

[[wan]]
name = "fibre"
interface = "eth1"
priority = 10
link = {{ type = "unmanaged" }}

[[wan.static_mapping]]
protocol = "TCP"
external_port = 2222
internal_client = "192.168.1.10"
internal_port = 22
description = "ssh to the NAS"

{backup}
"""

BACKUP_WAN = """
[[wan]]
name = "backup"
interface = "eth2"
priority = 20
link = { type = "simulated", address = "198.51.101.2/24" }
"""

LAN = InterfaceState("br-lan", 3, up=True, carrier=True, addresses=(IPv4Interface("192.168.1.1/24"),))
ETH1 = InterfaceState("eth1", 4, up=True, carrier=True, addresses=(IPv4Interface("203.0.114.2/24"),))


class ListeningReactor(MemoryReactorClock):
    """
    A memory reactor whose listening ports can be stopped.
    """

    def listenTCP(self, port, factory, backlog=50, interface=""):
        listening = super().listenTCP(port, factory, backlog, interface)
        listening.stopListening = lambda: None
        return listening


class FailingNAT(MemoryNATBackend):
    """
    A memory NAT backend that refuses every change while C{failing} is set,
    as a kernel that rejects an nftables transaction.
    """

    failing = False

    def apply(self, add, remove):
        if self.failing:
            return fail(NATError("the kernel said no"))
        return super().apply(add, remove)


def miniupnpc(path: str, urn: str, action: str, args: list[tuple[str, object]] = ()) -> bytes:
    """
    @return: a request exactly as miniupnpc 2.2.4 sends it (its
        C{simpleUPnPcommand}: arguments on one line, no escaping beyond
        what the caller did).
    """
    arguments = "".join(f"<{k}>{v}</{k}>" for k, v in args)
    body = (
        '<?xml version="1.0"?>\r\n'
        '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">'
        f'<s:Body><u:{action} xmlns:u="{urn}">{arguments}</u:{action}></s:Body></s:Envelope>\r\n'
    ).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: 192.168.1.1:5000\r\n"
        "User-Agent: Debian/12 UPnP/1.1 MiniUPnPc/2.2.4\r\n"
        f"Content-Length: {len(body)}\r\nContent-Type: text/xml\r\n"
        f'SOAPAction: "{urn}#{action}"\r\nConnection: Close\r\n'
        "Cache-Control: no-cache\r\nPragma: no-cache\r\n\r\n"
    ).encode() + body


def addArgs(
    port: object,
    client: str = A,
    internal: object = None,
    protocol: str = "TCP",
    remote: str = "",
    description: str = "libminiupnpc",
    lease: object = 3600,
) -> list[tuple[str, object]]:
    """
    @return: AddPortMapping's arguments in SOAP order, as upnpc -r sends
        them.
    """
    return [
        ("NewRemoteHost", remote),
        ("NewExternalPort", port),
        ("NewProtocol", protocol),
        ("NewInternalPort", port if internal is None else internal),
        ("NewInternalClient", client),
        ("NewEnabled", 1),
        ("NewPortMappingDescription", description),
        ("NewLeaseDuration", lease),
    ]


class Answer:
    """
    An HTTP answer, split into what the tests look at.

    @ivar status: the HTTP status code.
    @ivar body: the body bytes.
    """

    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        self.raw = raw
        self.status = int(head.split(b" ", 2)[1]) if head else 0
        self.headers = head

    def xml(self) -> etree._Element:
        return etree.fromstring(self.body)

    def fault(self) -> tuple[int, str]:
        """
        @return: C{(errorCode, errorDescription)} of a SOAP fault.
        """
        root = self.xml()
        code = root.findtext(f".//{{{CONTROL_NS}}}errorCode")
        description = root.findtext(f".//{{{CONTROL_NS}}}errorDescription")
        assert code is not None, self.raw
        return int(code), description

    def out(self) -> dict[str, str]:
        """
        @return: the response's out arguments by name, in order.
        """
        body = self.xml().find(f"{{{SOAP_NS}}}Body")
        (response,) = list(body)
        return {child.tag: child.text or "" for child in response}

    def response(self) -> etree._Element:
        (response,) = list(self.xml().find(f"{{{SOAP_NS}}}Body"))
        return response


class GatewayHarness(SynchronousTestCase):
    """
    A started gateway: LAN br-lan 192.168.1.1/24, WAN C{fibre} (unmanaged,
    eth1 203.0.114.2, one static mapping TCP 2222 -> 192.168.1.10:22) and
    WAN C{backup} (simulated, 198.51.101.2); admin host 192.168.1.2.
    """

    upnp = ""
    wans = BACKUP_WAN

    def setUp(self) -> None:
        self.state = Path(temporaryPath(self).path)
        self.reactor = ListeningReactor()
        self.reactor.advance(1_000_000)
        self.netlink = FakeNetlink([LAN, ETH1])
        self.nat = FailingNAT()
        self.gateway = self.build()
        self.gateway.startService()
        self.addCleanup(self.stop)

    def build(self, upnp: str | None = None, wans: str | None = None):
        text = CONFIG.format(
            state=self.state,
            upnp=self.upnp if upnp is None else upnp,
            backup=self.wans if wans is None else wans,
        )
        return makeGateway(
            config.parse(text),
            self.reactor,
            netlink=self.netlink,
            nat=self.nat,
            ssdpListen=lambda protocol: FakePacketInfoTransport(),
            runner=runSynchronously,
        )

    def stop(self) -> None:
        if self.gateway.running:
            d = self.gateway.stopService()
            self.reactor.advance(0)
            self.successResultOf(d)

    def restart(self, advance: float = 0, upnp: str | None = None, wans: str | None = None) -> None:
        """
        Stop the gateway, let C{advance} seconds pass, and start a new one
        on the same state directory (the kernel keeps what it had).
        """
        self.stop()
        self.nat.disownServiceParent()
        self.reactor.advance(advance)
        self.gateway = self.build(upnp=upnp, wans=wans)
        self.gateway.startService()

    def http(self, raw: bytes, peer: str = A) -> Answer:
        """
        Send C{raw} from C{peer} as one TCP connection and let the reactor
        finish the turn (the journal's write).
        """
        site = self.reactor.tcpServers[-1][1]
        address = IPv4Address("TCP", peer, 40000)
        channel = site.buildProtocol(address)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "192.168.1.1", 5000), peerAddress=address
        )
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        self.reactor.advance(0)
        return Answer(transport.value())

    def call(self, action: str, args=(), peer: str = A, path: str = FIBRE, urn: str = V2) -> Answer:
        return self.http(miniupnpc(path, urn, action, list(args)), peer)

    def ok(self, action: str, args=(), peer: str = A, path: str = FIBRE, urn: str = V2) -> dict[str, str]:
        """
        Call an action that must succeed; return its out arguments.
        """
        answer = self.call(action, args, peer, path, urn)
        self.assertEqual(answer.status, 200, answer.raw)
        return answer.out()

    def assertFault(self, answer: Answer, code: int, description: str) -> None:
        self.assertEqual(answer.status, 500, answer.raw)
        self.assertEqual(answer.fault(), (code, description))

    def add(self, port: int, peer: str = A, path: str = FIBRE, **kw: object) -> Answer:
        kw.setdefault("client", peer)
        return self.call("AddPortMapping", addArgs(port, **kw), peer, path)

    def kernel(self, wan: str = "fibre") -> list[tuple[str, int, str, str, int]]:
        """
        @return: what the NAT backend holds for C{wan}, without the static
            mapping: C{(protocol, externalPort, remoteHost, internalClient,
            internalPort)}.
        """
        return [
            (m.protocol, m.externalPort, m.remoteHost, m.internalClient, m.internalPort)
            for m in self.nat.mappings(wan)
            if m.externalPort != 2222
        ]

    def saved(self) -> dict[str, object]:
        """
        @return: the records on disk (snapshot, then journal), read without
            touching the files.
        """
        from gatewayd.journal import DELETED, parseJournal, parseSnapshot

        records: dict[str, object] = {}
        snapshot, journal = self.state / "mappings.snapshot", self.state / "mappings.journal"
        if snapshot.exists():
            records.update(parseSnapshot(snapshot.read_bytes())[1])
        if journal.exists():
            for key, value in parseJournal(journal.read_bytes()).changes:
                if value is DELETED:
                    records.pop(key, None)
                else:
                    records[key] = value
        return records

    def variable(self, name: str, path: str = FIBRE) -> str:
        answer = self.http(windowsQuery(path, name))
        self.assertEqual(answer.status, 200, answer.raw)
        return answer.out()["return"]

    def generic(self, index: int, peer: str = A, path: str = FIBRE) -> Answer:
        return self.call("GetGenericPortMappingEntry", [("NewPortMappingIndex", index)], peer, path)

    def specific(self, port: int, remote: str = "", protocol: str = "TCP", peer: str = A) -> Answer:
        return self.call(
            "GetSpecificPortMappingEntry",
            [("NewRemoteHost", remote), ("NewExternalPort", port), ("NewProtocol", protocol)],
            peer,
        )


def windowsQuery(path: str, name: str) -> bytes:
    """
    @return: QueryStateVariable as Windows' UPnP stack sends it (its own
        prefixes, qualified varName), as in tests/unit/test_soap.py.
    """
    body = (
        b'<?xml version="1.0"?>\r\n'
        b'<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" '
        b'SOAP-ENV:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">\r\n<SOAP-ENV:Body>\r\n'
        b'<m:QueryStateVariable xmlns:m="urn:schemas-upnp-org:control-1-0">\r\n'
        b"<m:varName>" + name.encode() + b"</m:varName>\r\n</m:QueryStateVariable>\r\n"
        b"</SOAP-ENV:Body>\r\n</SOAP-ENV:Envelope>\r\n"
    )
    return (
        b"POST " + path.encode() + b" HTTP/1.1\r\n"
        b"Cache-Control: no-cache\r\nConnection: Close\r\nPragma: no-cache\r\n"
        b'Content-Type: text/xml; charset="utf-8"\r\n'
        b"User-Agent: Microsoft-Windows/10.0 UPnP/1.0\r\n"
        b'SOAPAction: "urn:schemas-upnp-org:control-1-0#QueryStateVariable"\r\n'
        b"Content-Length: %d\r\nHost: 192.168.1.1:5000\r\n\r\n" % (len(body),)
    ) + body


class AddPortMappingTests(GatewayHarness):
    """
    AddPortMapping: what upnpc -r, Transmission and games use.
    """

    def test_success(self) -> None:
        """
        A client maps a port to itself: the answer is empty, the kernel has
        the forward, the count and SystemUpdateID move.
        """
        before = int(self.variable("SystemUpdateID"))
        self.assertEqual(self.ok("AddPortMapping", addArgs(51413, internal=6881)), {})
        self.assertEqual(self.kernel(), [("TCP", 51413, "", A, 6881)])
        self.assertEqual(self.variable("PortMappingNumberOfEntries"), "2")
        self.assertEqual(int(self.variable("SystemUpdateID")), before + 1)
        entry = self.specific(51413).out()
        self.assertEqual(entry["NewInternalClient"], A)
        self.assertEqual(entry["NewLeaseDuration"], "3600")
        self.assertEqual(self.kernel("backup"), [])

    def test_overwriteBySameClient(self) -> None:
        """
        The same client adding the same key again replaces it in place: the
        lease starts over, the index stays, the kernel has the new target.
        """
        self.ok("AddPortMapping", addArgs(40000))
        self.ok("AddPortMapping", addArgs(40001))
        self.reactor.advance(1000)
        self.ok("AddPortMapping", addArgs(40000, internal=40100, description="again"))
        entry = self.generic(1).out()
        self.assertEqual(entry["NewExternalPort"], "40000")
        self.assertEqual(entry["NewInternalPort"], "40100")
        self.assertEqual(entry["NewPortMappingDescription"], "again")
        self.assertEqual(entry["NewLeaseDuration"], "3600")
        self.assertEqual(self.generic(2).out()["NewExternalPort"], "40001")
        self.assertEqual(self.kernel(), [("TCP", 40000, "", A, 40100), ("TCP", 40001, "", A, 40001)])

    def test_conflictOtherClient(self) -> None:
        """
        A port another client holds is refused with 718, whether B asks for
        the wildcard or a specific remote host; A's mapping is untouched.
        """
        self.ok("AddPortMapping", addArgs(40000))
        self.assertFault(self.add(40000, peer=B), 718, "ConflictInMappingEntry")
        self.assertFault(self.add(40000, peer=B, remote="198.51.100.7"), 718, "ConflictInMappingEntry")
        self.assertEqual(self.kernel(), [("TCP", 40000, "", A, 40000)])

    def test_leaseZeroIsMaximum(self) -> None:
        """
        Lease 0 (the v1 "permanent") is stored as a week.
        """
        self.ok("AddPortMapping", addArgs(40000, lease=0))
        self.assertEqual(self.specific(40000).out()["NewLeaseDuration"], "604800")

    def test_leaseClampedToMaximum(self) -> None:
        """
        A lease above the maximum but within the spec's range is cut to it.
        """
        self.ok("AddPortMapping", addArgs(40000, lease=604800))
        self.assertEqual(self.specific(40000).out()["NewLeaseDuration"], "604800")

    def test_configuredMaximum(self) -> None:
        """
        With a lower max_lease, lease 0 and longer leases get that maximum.
        """
        self.restart(upnp="max_lease = 7200")
        self.ok("AddPortMapping", addArgs(40000, lease=0))
        self.ok("AddPortMapping", addArgs(40001, lease=10000))
        self.ok("AddPortMapping", addArgs(40002, lease=7199))
        leases = [self.specific(p).out()["NewLeaseDuration"] for p in (40000, 40001, 40002)]
        self.assertEqual(leases, ["7200", "7200", "7199"])

    def test_leaseOutOfRange(self) -> None:
        """
        A lease beyond a week is 601, and nothing is mapped.
        """
        self.assertFault(self.add(40000, lease=604801), 601, "Argument Value Out of Range")
        self.assertEqual(self.kernel(), [])

    def test_wildcards(self) -> None:
        """
        InternalPort 0 is 732, ExternalPort 0 is 716, an empty
        InternalClient is 715.
        """
        self.assertFault(self.add(40000, internal=0), 732, "WildCardNotPermittedInIntPort")
        self.assertFault(self.add(0, internal=40000), 716, "WildCardNotPermittedInExtPort")
        self.assertFault(self.add(40000, client=""), 715, "WildCardNotPermittedInSrcIP")
        self.assertEqual(self.kernel(), [])

    def test_badRemoteHost(self) -> None:
        """
        A remote host that is not an address is 600.
        """
        self.assertFault(self.add(40000, remote="example"), 600, "Argument Value Invalid")

    def test_badProtocol(self) -> None:
        """
        A protocol other than TCP or UDP is 601.
        """
        self.assertFault(self.add(40000, protocol="ICMP"), 601, "Argument Value Out of Range")

    def test_secureMode(self) -> None:
        """
        Client A cannot map a port to B (606), nothing is mapped.
        """
        self.assertFault(self.add(40000, peer=A, client=B), 606, "Action not authorized")
        self.assertEqual(self.kernel(), [])

    def test_adminMapsForOthers(self) -> None:
        """
        The admin host may map a port to another client.
        """
        self.ok("AddPortMapping", addArgs(40000, client=B), peer=ADMIN)
        self.assertEqual(self.kernel(), [("TCP", 40000, "", B, 40000)])

    def test_wellKnownPorts(self) -> None:
        """
        External or internal ports below 1024 are refused by the rules (606).
        """
        self.assertFault(self.add(80, internal=8080), 606, "Action not authorized")
        self.assertFault(self.add(8080, internal=80), 606, "Action not authorized")
        self.assertFault(self.add(1023), 606, "Action not authorized")
        self.assertEqual(self.kernel(), [])

    def test_reservedPorts(self) -> None:
        """
        The gateway's own ports (HTTP 5000/TCP, SSDP 1900/UDP) are 729.
        """
        self.assertFault(self.add(5000), 729, "ConflictWithOtherMechanisms")
        self.assertFault(self.add(1900, protocol="UDP"), 729, "ConflictWithOtherMechanisms")
        self.ok("AddPortMapping", addArgs(1900))
        self.assertEqual(self.kernel(), [("TCP", 1900, "", A, 1900)])

    def test_staticPort(self) -> None:
        """
        A port a configured (static) mapping holds is 729, even for the
        static mapping's own client.
        """
        self.assertFault(self.add(2222, peer="192.168.1.10"), 729, "ConflictWithOtherMechanisms")
        self.assertFault(self.add(2222), 729, "ConflictWithOtherMechanisms")

    def test_capacity(self) -> None:
        """
        With max_mappings = 2 a third mapping is 728; a refresh of one of
        the two still works; the static mapping does not count.
        """
        self.restart(upnp="max_mappings = 2")
        self.ok("AddPortMapping", addArgs(40000))
        self.ok("AddPortMapping", addArgs(40001))
        self.assertFault(self.add(40002), 728, "NoPortMapsAvailable")
        self.ok("AddPortMapping", addArgs(40001, lease=60))
        self.assertEqual(len(self.kernel()), 2)

    def test_natFailure(self) -> None:
        """
        When the kernel refuses the change the answer is 501 and nothing
        changed: not the table, not the kernel, not the journal, not
        SystemUpdateID.
        """
        self.ok("AddPortMapping", addArgs(40000))
        before = (self.variable("SystemUpdateID"), self.saved())
        self.nat.failing = True
        self.assertFault(self.add(40001), 501, "Action Failed")
        self.assertFault(self.add(40000, internal=40500), 501, "Action Failed")
        self.nat.failing = False
        self.assertEqual(self.kernel(), [("TCP", 40000, "", A, 40000)])
        self.assertEqual(self.specific(40000).out()["NewInternalPort"], "40000")
        self.assertFault(self.specific(40001), 714, "NoSuchEntryInArray")
        self.assertEqual((self.variable("SystemUpdateID"), self.saved()), before)
        self.assertEqual(self.variable("PortMappingNumberOfEntries"), "2")
        self.flushLoggedErrors(NATError)

    def test_descriptionEscaped(self) -> None:
        """
        A description with XML specials comes back as it was sent, escaped
        in every answer.
        """
        text = 'Tom & Jerry <"game"> \'x\''
        self.ok("AddPortMapping", addArgs(40000, description=escape(text, {'"': "&quot;"})))
        answer = self.specific(40000)
        self.assertEqual(answer.out()["NewPortMappingDescription"], text)
        self.assertIn(b"Tom &amp; Jerry &lt;", answer.body)
        self.assertEqual(self.generic(1).out()["NewPortMappingDescription"], text)

    def test_missingOrExtraArgument(self) -> None:
        """
        A missing or an unknown argument is 402 Invalid Args.
        """
        self.assertFault(
            self.call("AddPortMapping", addArgs(40000)[:-1]), 402, "Invalid Args"
        )
        self.assertFault(
            self.call("AddPortMapping", addArgs(40000) + [("NewColour", "red")]), 402, "Invalid Args"
        )
        self.assertEqual(self.kernel(), [])


class AddAnyPortMappingTests(GatewayHarness):
    """
    AddAnyPortMapping: the gateway picks another port when the one asked
    for is taken.
    """

    upnp = ""

    def addAny(self, port: object, peer: str = A, **kw: object) -> Answer:
        kw.setdefault("client", peer)
        return self.call("AddAnyPortMapping", addArgs(port, **kw), peer)

    def test_freePort(self) -> None:
        """
        A free port is reserved as asked.
        """
        answer = self.addAny(40000)
        self.assertEqual(answer.out(), {"NewReservedPort": "40000"})
        self.assertEqual(self.kernel(), [("TCP", 40000, "", A, 40000)])

    def test_busyPort(self) -> None:
        """
        When another client holds the port, a nearby free one is reserved,
        returned and really mapped to the requester.
        """
        self.ok("AddPortMapping", addArgs(40000))
        port = int(self.addAny(40000, peer=B).out()["NewReservedPort"])
        self.assertNotEqual(port, 40000)
        self.assertLessEqual(abs(port - 40000), 2)
        self.assertIn(("TCP", port, "", B, 40000), self.kernel())
        self.assertEqual(self.specific(port).out()["NewInternalClient"], B)

    def test_sameClientOverwrites(self) -> None:
        """
        The same client asking again for its own key gets the same port and
        the mapping is refreshed, not duplicated.
        """
        self.addAny(40000)
        self.reactor.advance(100)
        self.assertEqual(self.addAny(40000, internal=40001).out(), {"NewReservedPort": "40000"})
        self.assertEqual(self.kernel(), [("TCP", 40000, "", A, 40001)])
        self.assertEqual(self.specific(40000).out()["NewLeaseDuration"], "3600")

    def test_anyPort(self) -> None:
        """
        ExternalPort 0 means "any": an allowed port of at least 1024.
        """
        port = int(self.addAny(0, internal=80 + 40000).out()["NewReservedPort"])
        self.assertGreaterEqual(port, 1024)
        self.assertEqual(self.kernel(), [("TCP", port, "", A, 40080)])

    def test_noPortLeft(self) -> None:
        """
        When the rules allow two ports and both are taken, 728.
        """
        self.restart(upnp='rules = ["allow 40000-40001 192.168.1.0/24 1024-65535"]')
        self.addAny(40000)
        self.addAny(40001, peer=B)
        self.assertFault(self.addAny(40000, peer=B, internal=5555), 728, "NoPortMapsAvailable")

    def test_otherClient(self) -> None:
        """
        Mapping to another client is 606.
        """
        self.assertFault(self.addAny(40000, client=B), 606, "Action not authorized")

    def test_wildcards(self) -> None:
        """
        InternalPort 0 is 732; an empty InternalClient is 715.
        """
        self.assertFault(self.addAny(40000, internal=0), 732, "WildCardNotPermittedInIntPort")
        self.assertFault(self.addAny(40000, client=""), 715, "WildCardNotPermittedInSrcIP")
        self.assertEqual(self.kernel(), [])


def deleteArgs(port: int, protocol: str = "TCP", remote: str = "") -> list[tuple[str, object]]:
    return [("NewRemoteHost", remote), ("NewExternalPort", port), ("NewProtocol", protocol)]


def rangeArgs(start: int, end: int, protocol: str = "TCP", manage: int = 0) -> list[tuple[str, object]]:
    return [("NewStartPort", start), ("NewEndPort", end), ("NewProtocol", protocol), ("NewManage", manage)]


class DeleteTests(GatewayHarness):
    """
    DeletePortMapping and DeletePortMappingRange.
    """

    def setUp(self) -> None:
        super().setUp()
        for port in (40000, 40001, 40002):
            self.ok("AddPortMapping", addArgs(port))
        self.ok("AddPortMapping", addArgs(40003, client=B), peer=B)
        self.ok("AddPortMapping", addArgs(40004, protocol="UDP"))

    def test_delete(self) -> None:
        """
        A client deletes its mapping: the kernel forward goes, the count
        drops, SystemUpdateID moves.
        """
        before = int(self.variable("SystemUpdateID"))
        self.assertEqual(self.ok("DeletePortMapping", deleteArgs(40001)), {})
        self.assertNotIn(("TCP", 40001, "", A, 40001), self.kernel())
        self.assertEqual(self.variable("PortMappingNumberOfEntries"), "5")
        self.assertEqual(int(self.variable("SystemUpdateID")), before + 1)
        self.assertNotIn("fibre/TCP/40001/", self.saved())

    def test_missing(self) -> None:
        """
        Deleting a mapping that does not exist is 714.
        """
        self.assertFault(self.call("DeletePortMapping", deleteArgs(41000)), 714, "NoSuchEntryInArray")
        self.assertFault(
            self.call("DeletePortMapping", deleteArgs(40000, protocol="UDP")), 714, "NoSuchEntryInArray"
        )

    def test_otherClients(self) -> None:
        """
        A cannot delete B's mapping (606) and it stays in the kernel.
        """
        self.assertFault(self.call("DeletePortMapping", deleteArgs(40003)), 606, "Action not authorized")
        self.assertIn(("TCP", 40003, "", B, 40003), self.kernel())

    def test_static(self) -> None:
        """
        The configured mapping cannot be deleted, even by the admin (606).
        """
        for peer in (A, "192.168.1.10", ADMIN):
            self.assertFault(
                self.call("DeletePortMapping", deleteArgs(2222), peer=peer), 606, "Action not authorized"
            )
        self.assertEqual([m.externalPort for m in self.nat.mappings("fibre")].count(2222), 1)

    def test_adminDeletesOthers(self) -> None:
        """
        The admin host may delete any client's mapping.
        """
        self.ok("DeletePortMapping", deleteArgs(40003), peer=ADMIN)
        self.assertNotIn(("TCP", 40003, "", B, 40003), self.kernel())

    def test_rangeOwnOnly(self) -> None:
        """
        DeletePortMappingRange removes the requester's mappings of that
        protocol in the range, in one step of SystemUpdateID; B's and the
        UDP one survive.
        """
        before = int(self.variable("SystemUpdateID"))
        self.ok("DeletePortMappingRange", rangeArgs(40001, 40004))
        self.assertEqual(
            self.kernel(),
            [("TCP", 40000, "", A, 40000), ("TCP", 40003, "", B, 40003), ("UDP", 40004, "", A, 40004)],
        )
        self.assertEqual(int(self.variable("SystemUpdateID")), before + 1)

    def test_rangeManagePublic(self) -> None:
        """
        NewManage=1 from a Public client in secure mode still deletes only
        its own mappings.
        """
        self.ok("DeletePortMappingRange", rangeArgs(1, 65535, manage=1))
        self.assertEqual(self.kernel(), [("TCP", 40003, "", B, 40003), ("UDP", 40004, "", A, 40004)])

    def test_rangeManageAdmin(self) -> None:
        """
        The admin with NewManage=1 deletes every client's mappings (not the
        static one); with NewManage=0 none of its own exist: 730.
        """
        self.assertFault(
            self.call("DeletePortMappingRange", rangeArgs(1, 65535), peer=ADMIN), 730, "PortMappingNotFound"
        )
        self.ok("DeletePortMappingRange", rangeArgs(1, 65535, manage=1), peer=ADMIN)
        self.assertEqual(self.kernel(), [("UDP", 40004, "", A, 40004)])
        self.assertIn(2222, [m.externalPort for m in self.nat.mappings("fibre")])

    def test_rangeAtomic(self) -> None:
        """
        When the kernel refuses, none of the range is deleted (501).
        """
        self.nat.failing = True
        self.assertFault(self.call("DeletePortMappingRange", rangeArgs(1, 65535)), 501, "Action Failed")
        self.nat.failing = False
        self.assertEqual(len(self.kernel()), 5)
        self.assertEqual(self.variable("PortMappingNumberOfEntries"), "6")
        self.flushLoggedErrors(NATError)

    def test_rangeErrors(self) -> None:
        """
        Start after end is 733; nothing deletable is 730; a bad protocol is
        601.
        """
        self.assertFault(self.call("DeletePortMappingRange", rangeArgs(40002, 40001)), 733, "InconsistentParameters")
        self.assertFault(self.call("DeletePortMappingRange", rangeArgs(40003, 40003)), 730, "PortMappingNotFound")
        self.assertFault(self.call("DeletePortMappingRange", rangeArgs(1, 2, "ICMP")), 601, "Argument Value Out of Range")
        self.assertEqual(len(self.kernel()), 5)


class ReadTests(GatewayHarness):
    """
    GetGenericPortMappingEntry, GetSpecificPortMappingEntry and
    GetListOfPortMappings.
    """

    def test_genericContiguous(self) -> None:
        """
        Indexes run 0..n-1 with the static mapping (lease 0) first; after a
        deletion in the middle they close up; past the end is 713.
        """
        for port in (40000, 40001, 40002):
            self.ok("AddPortMapping", addArgs(port))
        static = self.generic(0).out()
        self.assertEqual(
            (static["NewExternalPort"], static["NewInternalClient"], static["NewLeaseDuration"]),
            ("2222", "192.168.1.10", "0"),
        )
        self.ok("DeletePortMapping", deleteArgs(40001))
        ports = [self.generic(i).out()["NewExternalPort"] for i in range(3)]
        self.assertEqual(ports, ["2222", "40000", "40002"])
        self.assertFault(self.generic(3), 713, "SpecifiedArrayIndexInvalid")

    def test_genericOthersReadable(self) -> None:
        """
        B reads A's entries by index (so upnpc -l lists everything).
        """
        self.ok("AddPortMapping", addArgs(40000))
        entry = self.generic(1, peer=B).out()
        self.assertEqual(entry["NewInternalClient"], A)
        self.assertEqual(list(entry), [
            "NewRemoteHost", "NewExternalPort", "NewProtocol", "NewInternalPort",
            "NewInternalClient", "NewEnabled", "NewPortMappingDescription", "NewLeaseDuration",
        ])

    def test_remainingLease(self) -> None:
        """
        The reported lease counts down with the clock.
        """
        self.ok("AddPortMapping", addArgs(40000, lease=1500))
        self.reactor.advance(500)
        self.assertEqual(self.generic(1).out()["NewLeaseDuration"], "1000")
        self.assertEqual(self.specific(40000).out()["NewLeaseDuration"], "1000")

    def test_specific(self) -> None:
        """
        GetSpecificPortMappingEntry finds a key; 714 for none; "" matches
        only the wildcard mapping, "*" is the wildcard too.
        """
        self.ok("AddPortMapping", addArgs(40000, remote="198.51.100.7"))
        self.assertFault(self.specific(40000), 714, "NoSuchEntryInArray")
        self.assertFault(self.specific(40000, remote="*"), 714, "NoSuchEntryInArray")
        self.assertEqual(self.specific(40000, remote="198.51.100.7").out()["NewInternalClient"], A)
        self.ok("AddPortMapping", addArgs(40000))
        self.assertEqual(self.specific(40000, remote="*").out()["NewEnabled"], "1")
        self.assertFault(self.specific(41000), 714, "NoSuchEntryInArray")

    def listing(self, start=1, end=65535, manage=0, count=0, peer=A, protocol="TCP") -> Answer:
        return self.call(
            "GetListOfPortMappings",
            rangeArgs(start, end, protocol, manage) + [("NewNumberOfPorts", count)],
            peer,
        )

    def entries(self, answer: Answer) -> list[list[tuple[str, str]]]:
        """
        @return: the PortMappingList's entries, as the client parses them
            back out of the CDATA.
        """
        self.assertEqual(answer.status, 200, answer.raw)
        document = answer.out()["NewPortListing"]
        root = etree.fromstring(document.encode())
        self.assertEqual(root.tag, f"{{{LISTING_NS}}}PortMappingList")
        self.assertEqual({entry.tag for entry in root} - {f"{{{LISTING_NS}}}PortMappingEntry"}, set())
        return [[(etree.QName(field).localname, field.text or "") for field in entry] for entry in root]

    def test_list(self) -> None:
        """
        The listing holds the requester's mappings in port order, eight
        fields each, remaining lease; it travels as CDATA.
        """
        self.ok("AddPortMapping", addArgs(40002, description=escape("b & <c>")))
        self.ok("AddPortMapping", addArgs(40000, internal=50000, lease=100))
        self.reactor.advance(40)
        answer = self.listing()
        self.assertIn(b"<NewPortListing><![CDATA[", answer.body)
        self.assertEqual(
            self.entries(answer),
            [
                [("NewRemoteHost", ""), ("NewExternalPort", "40000"), ("NewProtocol", "TCP"),
                 ("NewInternalPort", "50000"), ("NewInternalClient", A), ("NewEnabled", "1"),
                 ("NewDescription", "libminiupnpc"), ("NewLeaseTime", "60")],
                [("NewRemoteHost", ""), ("NewExternalPort", "40002"), ("NewProtocol", "TCP"),
                 ("NewInternalPort", "40002"), ("NewInternalClient", A), ("NewEnabled", "1"),
                 ("NewDescription", "b & <c>"), ("NewLeaseTime", "3560")],
            ],
        )

    def test_listLimitsAndOwnership(self) -> None:
        """
        NewNumberOfPorts limits the answer; NewManage=0 lists only the
        requester's own; NewManage=1 lists everyone's.
        """
        for port in (40000, 40001, 40002):
            self.ok("AddPortMapping", addArgs(port))
        self.ok("AddPortMapping", addArgs(40003, client=B), peer=B)
        ports = lambda answer: [dict(e)["NewExternalPort"] for e in self.entries(answer)]  # noqa: E731
        self.assertEqual(ports(self.listing(count=2)), ["40000", "40001"])
        self.assertEqual(ports(self.listing(peer=B)), ["40003"])
        self.assertEqual(ports(self.listing(manage=1, peer=B)), ["2222", "40000", "40001", "40002", "40003"])

    def test_listPageSize(self) -> None:
        """
        NewNumberOfPorts 0 returns every entry up to LIST_PAGE_SIZE; a
        client pages on from the next port.
        """
        mappings = self.gateway.wans["fibre"].mappings
        now = self.reactor.seconds()
        commits = [
            Deferred.fromCoroutine(
                mappings.commit(
                    mappings.table.planAdd(
                        PortMapping("", port, "UDP", port, A, leaseDuration=3600, expiresAt=now + 3600)
                    )
                )
            )
            for port in range(20000, 20000 + LIST_PAGE_SIZE + 5)
        ]
        self.reactor.advance(0)
        for d in commits:
            self.successResultOf(d)
        first = self.entries(self.listing(protocol="UDP"))
        self.assertEqual(len(first), LIST_PAGE_SIZE)
        self.assertEqual(dict(first[-1])["NewExternalPort"], str(20000 + LIST_PAGE_SIZE - 1))
        rest = self.entries(self.listing(start=20000 + LIST_PAGE_SIZE, protocol="UDP"))
        self.assertEqual(len(rest), 5)
        self.assertEqual(len(self.entries(self.listing(protocol="UDP", count=3))), 3)

    def test_listErrors(self) -> None:
        """
        Nothing in range is 730 (and so is nothing of the requester's);
        start after end is 733.
        """
        self.ok("AddPortMapping", addArgs(40000))
        self.assertFault(self.listing(start=41000, end=42000), 730, "PortMappingNotFound")
        self.assertFault(self.listing(peer=B), 730, "PortMappingNotFound")
        self.assertFault(self.listing(start=2, end=1), 733, "InconsistentParameters")


class ExpiryTests(GatewayHarness):
    """
    Leases run out on the clock.
    """

    def test_goneAtExpiry(self) -> None:
        """
        A 60 s mapping is still there after 59 s and gone at 60 s: from the
        table, the kernel and the journal; the count drops and
        SystemUpdateID moves.
        """
        self.ok("AddPortMapping", addArgs(40000, lease=60))
        before = int(self.variable("SystemUpdateID"))
        self.reactor.advance(59)
        self.assertEqual(self.specific(40000).out()["NewLeaseDuration"], "1")
        self.assertEqual(self.kernel(), [("TCP", 40000, "", A, 40000)])
        self.assertIn("fibre/TCP/40000/", self.saved())
        self.reactor.advance(1)
        self.assertFault(self.specific(40000), 714, "NoSuchEntryInArray")
        self.assertEqual(self.kernel(), [])
        self.assertNotIn("fibre/TCP/40000/", self.saved())
        self.assertEqual(self.variable("PortMappingNumberOfEntries"), "1")
        self.assertEqual(int(self.variable("SystemUpdateID")), before + 1)

    def test_refreshPostpones(self) -> None:
        """
        Refreshing a mapping before it runs out starts its lease over.
        """
        self.ok("AddPortMapping", addArgs(40000, lease=60))
        self.reactor.advance(50)
        self.ok("AddPortMapping", addArgs(40000, lease=60))
        self.reactor.advance(50)
        self.assertEqual(self.kernel(), [("TCP", 40000, "", A, 40000)])
        self.reactor.advance(10)
        self.assertEqual(self.kernel(), [])


class ConnectionActionTests(GatewayHarness):
    """
    Connection control through SOAP: Admin only.
    """

    def test_publicRefused(self) -> None:
        """
        A Public control point gets 606 for every connection-changing action.
        """
        for action, args in [
            ("RequestConnection", []),
            ("RequestTermination", []),
            ("ForceTermination", []),
            ("SetConnectionType", [("NewConnectionType", "IP_Routed")]),
            ("SetAutoDisconnectTime", [("NewAutoDisconnectTime", 60)]),
            ("SetIdleDisconnectTime", [("NewIdleDisconnectTime", 60)]),
            ("SetWarnDisconnectDelay", [("NewWarnDisconnectDelay", 5)]),
        ]:
            self.assertFault(self.call(action, args, path=BACKUP), 606, "Action not authorized")
        self.assertEqual(self.ok("GetStatusInfo", path=BACKUP)["NewConnectionStatus"], "Connected")

    def test_forceTermination(self) -> None:
        """
        The admin cuts the simulated WAN: Disconnecting then Disconnected,
        no external address; RequestConnection brings it back.
        """
        seen = []
        self.gateway.wans["backup"].connection.addObserver(lambda name, value: seen.append((name, value)))
        self.ok("ForceTermination", peer=ADMIN, path=BACKUP)
        statuses = [v for n, v in seen if n == "ConnectionStatus"]
        self.assertEqual(statuses, ["Disconnecting", "Disconnected"])
        self.assertEqual(self.ok("GetExternalIPAddress", path=BACKUP), {"NewExternalIPAddress": ""})
        self.assertEqual(self.ok("GetStatusInfo", path=BACKUP)["NewConnectionStatus"], "Disconnected")
        self.assertFault(self.call("ForceTermination", peer=ADMIN, path=BACKUP), 711, "ConnectionAlreadyTerminated")
        self.ok("RequestConnection", peer=ADMIN, path=BACKUP)
        self.assertEqual(self.ok("GetStatusInfo", path=BACKUP)["NewConnectionStatus"], "Connected")
        self.assertEqual(self.ok("GetExternalIPAddress", path=BACKUP), {"NewExternalIPAddress": "198.51.101.2"})

    def test_unmanagedCannotBeCut(self) -> None:
        """
        A WAN another tool configures cannot be terminated: 501.
        """
        self.assertFault(self.call("ForceTermination", peer=ADMIN), 501, "Action Failed")
        self.assertFault(self.call("RequestTermination", peer=ADMIN), 501, "Action Failed")
        self.assertEqual(self.ok("GetStatusInfo")["NewConnectionStatus"], "Connected")

    def test_timers(self) -> None:
        """
        The admin sets the disconnect timers; anyone reads them.
        """
        self.assertEqual(self.ok("GetAutoDisconnectTime", path=BACKUP), {"NewAutoDisconnectTime": "0"})
        self.ok("SetAutoDisconnectTime", [("NewAutoDisconnectTime", 7200)], peer=ADMIN, path=BACKUP)
        self.ok("SetIdleDisconnectTime", [("NewIdleDisconnectTime", 0)], peer=ADMIN, path=BACKUP)
        self.ok("SetWarnDisconnectDelay", [("NewWarnDisconnectDelay", 30)], peer=ADMIN, path=BACKUP)
        self.assertEqual(self.ok("GetAutoDisconnectTime", path=BACKUP), {"NewAutoDisconnectTime": "7200"})
        self.assertEqual(self.ok("GetIdleDisconnectTime", path=BACKUP), {"NewIdleDisconnectTime": "0"})
        self.assertEqual(self.ok("GetWarnDisconnectDelay", path=BACKUP), {"NewWarnDisconnectDelay": "30"})

    def test_connectionType(self) -> None:
        """
        The connection type is read-only: IP_Bridged is 731.
        """
        self.assertFault(
            self.call("SetConnectionType", [("NewConnectionType", "IP_Bridged")], peer=ADMIN, path=BACKUP),
            731,
            "ReadOnly",
        )
        self.assertEqual(
            self.ok("GetConnectionTypeInfo", path=BACKUP),
            {"NewConnectionType": "IP_Routed", "NewPossibleConnectionTypes": "IP_Routed"},
        )

    def test_enabledForInternet(self) -> None:
        """
        SetEnabledForInternet is Admin only; 0 takes the WAN down and
        RequestConnection then answers 709.
        """
        path = "/ctl/backup/WANCommonIFC1"
        self.ok("SetEnabledForInternet", [("NewEnabledForInternet", 0)], peer=ADMIN, path=path, urn=COMMON)
        self.assertEqual(self.ok("GetEnabledForInternet", path=path, urn=COMMON), {"NewEnabledForInternet": "0"})
        self.assertEqual(self.ok("GetStatusInfo", path=BACKUP)["NewConnectionStatus"], "Disconnected")
        self.assertFault(self.call("RequestConnection", peer=ADMIN, path=BACKUP), 709, "InternetAccessDisabled")


    def test_enabledForInternetPublic(self) -> None:
        """
        A Public control point cannot switch a WAN off (606), and the WAN
        stays up.
        """
        path = "/ctl/backup/WANCommonIFC1"
        self.assertFault(
            self.call("SetEnabledForInternet", [("NewEnabledForInternet", 0)], path=path, urn=COMMON),
            606,
            "Action not authorized",
        )
        self.assertEqual(self.ok("GetStatusInfo", path=BACKUP)["NewConnectionStatus"], "Connected")


class Layer3ForwardingTests(GatewayHarness):
    """
    Layer3Forwarding names the WAN that carries the default route.
    """

    def udn(self, index: int) -> str:
        return self.gateway.device.devices[index].devices[0].udn

    def default(self) -> str:
        return self.ok("GetDefaultConnectionService", path="/ctl/L3F", urn=L3F)["NewDefaultConnectionService"]

    def set(self, value: str, peer: str = ADMIN) -> Answer:
        return self.call(
            "SetDefaultConnectionService", [("NewDefaultConnectionService", value)], peer, "/ctl/L3F", L3F
        )

    def test_preferred(self) -> None:
        """
        By default the highest priority connected WAN is named.
        """
        self.assertEqual(self.default(), f"{self.udn(0)}:WANConnectionDevice:2,urn:upnp-org:serviceId:WANIPConn1")

    def test_set(self) -> None:
        """
        The admin makes the other WAN the default; a Public client is 606.
        """
        backup = f"{self.udn(1)}:WANConnectionDevice:2,urn:upnp-org:serviceId:WANIPConn1"
        self.assertFault(self.set(backup, peer=A), 606, "Action not authorized")
        self.assertEqual(self.set(backup).status, 200)
        self.assertEqual(self.default(), backup)

    def test_errors(self) -> None:
        """
        An unknown device is 720, a wrong service 721, a WAN that is down 723.
        """
        service = "urn:upnp-org:serviceId:WANIPConn1"
        self.assertFault(
            self.set(f"uuid:00000000-0000-0000-0000-000000000000:WANConnectionDevice:2,{service}"),
            720,
            "InvalidDeviceUUID",
        )
        self.assertFault(
            self.set(f"{self.udn(1)}:WANConnectionDevice:2,urn:upnp-org:serviceId:WANPPPConn1"),
            721,
            "InvalidServiceID",
        )
        self.ok("ForceTermination", peer=ADMIN, path=BACKUP)
        self.assertFault(
            self.set(f"{self.udn(1)}:WANConnectionDevice:2,{service}"), 723, "InvalidConnServiceSelection"
        )


class PersistenceTests(GatewayHarness):
    """
    Mappings survive a restart.
    """

    def test_restart(self) -> None:
        """
        After a restart the mappings are back with their remaining leases;
        those that ran out meanwhile are gone, also from the kernel;
        SystemUpdateID does not go back.
        """
        self.ok("AddPortMapping", addArgs(40000, lease=100))
        self.ok("AddPortMapping", addArgs(40001, lease=1000))
        self.ok("AddPortMapping", addArgs(40002, lease=1000), path=BACKUP)
        before = int(self.variable("SystemUpdateID"))
        self.restart(advance=500)
        self.assertFault(self.specific(40000), 714, "NoSuchEntryInArray")
        self.assertEqual(self.specific(40001).out()["NewLeaseDuration"], "500")
        self.assertEqual(self.kernel(), [("TCP", 40001, "", A, 40001)])
        self.assertEqual(self.kernel("backup"), [("TCP", 40002, "", A, 40002)])
        self.assertGreaterEqual(int(self.variable("SystemUpdateID")), before)
        self.ok("AddPortMapping", addArgs(40003))
        self.assertGreater(int(self.variable("SystemUpdateID")), before)

    def test_corruptFiles(self) -> None:
        """
        A damaged journal and snapshot are moved aside and the gateway
        starts with what it can (the static mapping).
        """
        self.ok("AddPortMapping", addArgs(40000))
        self.stop()
        for name in ("mappings.journal", "mappings.snapshot"):
            (self.state / name).write_bytes(b"\x00{not json\n{still not}\n")
        self.restart()
        self.assertEqual(self.variable("PortMappingNumberOfEntries"), "1")
        aside = sorted(p.name for p in self.state.iterdir() if ".corrupt-" in p.name)
        self.assertEqual(len(aside), 2, aside)
        self.ok("AddPortMapping", addArgs(40001))
        self.assertIn("fibre/TCP/40001/", self.saved())

    def test_removedWAN(self) -> None:
        """
        A WAN taken out of the configuration loses its saved mappings.
        """
        self.ok("AddPortMapping", addArgs(40002), path=BACKUP)
        self.assertTrue(any(k.startswith("backup/") for k in self.saved()))
        self.restart(wans="")
        self.reactor.advance(0)
        self.assertEqual([k for k in self.saved() if k.startswith("backup/")], [])


class QueryStateVariableTests(GatewayHarness):
    """
    The deprecated QueryStateVariable, as Windows still sends it.
    """

    def test_values(self) -> None:
        """
        ConnectionStatus and PortMappingNumberOfEntries are answered.
        """
        self.assertEqual(self.variable("ConnectionStatus"), "Connected")
        self.assertEqual(self.variable("PortMappingNumberOfEntries"), "1")
        self.ok("AddPortMapping", addArgs(40000))
        self.assertEqual(self.variable("PortMappingNumberOfEntries"), "2")

    def test_unknown(self) -> None:
        """
        An unknown variable is 404 Invalid Var.
        """
        self.assertFault(self.http(windowsQuery(FIBRE, "NoSuchThing")), 404, "Invalid Var")
