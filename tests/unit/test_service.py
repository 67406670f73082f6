"""
Tests for L{gatewayd.service}: the whole tree built from a configuration,
driven the way a LAN client drives it.
"""

from __future__ import annotations

from ipaddress import IPv4Interface
from pathlib import Path

from lxml import etree

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gatewayd import config
from gatewayd.errors import ConfigError
from gatewayd.interfaces import InterfaceState
from gatewayd.service import makeGateway
from tests.fakes import FakeAgent, FakeNetlink, FakePacketInfoTransport
from tests.support import temporaryPath

CONFIG = """
[gateway]
state_dir = "{state}"
nat = "memory"

[lan]
interfaces = ["br-lan"]
http_port = 5000

[upnp]
friendly_name = "test gateway"

[[wan]]
name = "backup"
interface = "eth2"
priority = 20
link = {{ type = "simulated", address = "198.51.101.2/24" }}

[[wan]]
name = "fibre"
interface = "eth1"
priority = 10
link = {{ type = "unmanaged" }}
"""

LAN = InterfaceState("br-lan", 3, up=True, carrier=True, addresses=(IPv4Interface("192.168.1.1/24"),))
ETH1 = InterfaceState("eth1", 4, up=True, carrier=True, addresses=(IPv4Interface("203.0.114.2/24"),))


class ListeningReactor(MemoryReactorClock):
    """
    A memory reactor that knows which TCP ports are still listening.
    """

    def __init__(self) -> None:
        super().__init__()
        self.listening: set[tuple[str, int]] = set()

    def listenTCP(self, port, factory, backlog=50, interface=""):
        listening = super().listenTCP(port, factory, backlog, interface)
        key = (interface, port)
        self.listening.add(key)
        listening.stopListening = lambda: self.listening.discard(key)
        return listening


def miniupnpc(path: str, urn: str, action: str) -> bytes:
    """
    @return: a request exactly as miniupnpc 2.2.4 sends it.
    """
    body = (
        '<?xml version="1.0"?>\r\n'
        '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">'
        f'<s:Body><u:{action} xmlns:u="{urn}"></u:{action}></s:Body></s:Envelope>\r\n'
    ).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: 192.168.1.1:5000\r\n"
        "User-Agent: Debian/12 UPnP/1.1 MiniUPnPc/2.2.4\r\n"
        f"Content-Length: {len(body)}\r\nContent-Type: text/xml\r\n"
        f'SOAPAction: "{urn}#{action}"\r\nConnection: Close\r\n'
        "Cache-Control: no-cache\r\nPragma: no-cache\r\n\r\n"
    ).encode() + body


class GatewayTests(SynchronousTestCase):
    """
    A gateway with two WANs: one watched through netlink, one simulated.
    """

    def setUp(self) -> None:
        self.state = Path(temporaryPath(self).path)
        self.reactor = ListeningReactor()
        self.netlink = FakeNetlink([LAN, ETH1])
        self.ssdp = FakePacketInfoTransport()
        self.gateway = self.build()

    def build(self):
        parsed = config.parse(CONFIG.format(state=self.state))
        return makeGateway(
            parsed, self.reactor, netlink=self.netlink, ssdpListen=lambda protocol: self.ssdp
        )

    def http(self, raw: bytes, peer: str = "192.168.1.20") -> bytes:
        site = self.reactor.tcpServers[0][1]
        address = IPv4Address("TCP", peer, 40000)
        channel = site.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        return transport.value()

    def test_treeByName(self) -> None:
        """
        Every part is a named child; one C{wan:<name>} per WAN in configured
        order.
        """
        names = [s.name for s in self.gateway]
        self.assertEqual(
            names,
            ["nat", "journal", "wan:backup", "wan:fibre", "router", "events", "http", "ssdp", "lan"],
        )
        self.assertEqual(list(self.gateway.wans), ["backup", "fibre"])

    def test_servesOnLANAddressOnly(self) -> None:
        """
        Once started, HTTP listens on the LAN address, and nothing else.
        """
        self.gateway.startService()
        self.assertEqual(self.reactor.listening, {("192.168.1.1", 5000)})

    def test_primaryWANFirst(self) -> None:
        """
        miniupnpc uses the first WANIPConnection it sees: GetExternalIPAddress
        there gives the preferred WAN's address, and the other WAN's service
        gives its own.
        """
        self.gateway.startService()
        urn = "urn:schemas-upnp-org:service:WANIPConnection:1"
        description = self.http(b"GET /rootDesc.xml HTTP/1.1\r\nHost: 192.168.1.1:5000\r\n\r\n")
        body = description.split(b"\r\n\r\n", 1)[1]
        controls = etree.fromstring(body).xpath(
            "//d:service[d:serviceId='urn:upnp-org:serviceId:WANIPConn1']/d:controlURL/text()",
            namespaces={"d": "urn:schemas-upnp-org:device-1-0"},
        )
        self.assertEqual(controls, ["/ctl/fibre/WANIPConn1", "/ctl/backup/WANIPConn1"])
        answer = self.http(miniupnpc("/ctl/fibre/WANIPConn1", urn, "GetExternalIPAddress"))
        self.assertIn(b"<NewExternalIPAddress>203.0.114.2</NewExternalIPAddress>", answer)
        answer = self.http(miniupnpc("/ctl/backup/WANIPConn1", urn, "GetExternalIPAddress"))
        self.assertIn(b"<NewExternalIPAddress>198.51.101.2</NewExternalIPAddress>", answer)

    def test_statusFollowsCarrier(self) -> None:
        """
        GetStatusInfo says Connected with the uptime; when the cable is
        pulled it says Disconnected with ERROR_NO_CARRIER, the external
        address is empty and PhysicalLinkStatus is Down.
        """
        self.gateway.startService()
        urn = "urn:schemas-upnp-org:service:WANIPConnection:2"
        self.reactor.advance(42)
        answer = self.http(miniupnpc("/ctl/fibre/WANIPConn1", urn, "GetStatusInfo"))
        self.assertIn(b"<NewConnectionStatus>Connected</NewConnectionStatus>", answer)
        self.assertIn(b"<NewLastConnectionError>ERROR_NONE</NewLastConnectionError>", answer)
        self.assertIn(b"<NewUptime>42</NewUptime>", answer)
        self.netlink.setState(InterfaceState("eth1", 4, up=True, carrier=False, addresses=ETH1.addresses))
        answer = self.http(miniupnpc("/ctl/fibre/WANIPConn1", urn, "GetStatusInfo"))
        self.assertIn(b"<NewConnectionStatus>Disconnected</NewConnectionStatus>", answer)
        self.assertIn(b"<NewLastConnectionError>ERROR_NO_CARRIER</NewLastConnectionError>", answer)
        self.assertIn(b"<NewUptime>0</NewUptime>", answer)
        answer = self.http(miniupnpc("/ctl/fibre/WANIPConn1", urn, "GetExternalIPAddress"))
        self.assertIn(b"<NewExternalIPAddress></NewExternalIPAddress>", answer)
        common = "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1"
        answer = self.http(miniupnpc("/ctl/fibre/WANCommonIFC1", common, "GetCommonLinkProperties"))
        self.assertIn(b"<NewPhysicalLinkStatus>Down</NewPhysicalLinkStatus>", answer)
        self.assertIn(b"<NewWANAccessType>Ethernet</NewWANAccessType>", answer)

    def test_readOnlyActions(self) -> None:
        """
        GetConnectionTypeInfo and GetNATRSIPStatus answer what a NAT router
        is; Layer3Forwarding names the preferred WAN's connection service.
        """
        self.gateway.startService()
        urn = "urn:schemas-upnp-org:service:WANIPConnection:2"
        answer = self.http(miniupnpc("/ctl/backup/WANIPConn1", urn, "GetConnectionTypeInfo"))
        self.assertIn(b"<NewConnectionType>IP_Routed</NewConnectionType>", answer)
        self.assertIn(b"<NewPossibleConnectionTypes>IP_Routed</NewPossibleConnectionTypes>", answer)
        answer = self.http(miniupnpc("/ctl/backup/WANIPConn1", urn, "GetNATRSIPStatus"))
        self.assertIn(b"<NewRSIPAvailable>0</NewRSIPAvailable><NewNATEnabled>1</NewNATEnabled>", answer)
        l3f = "urn:schemas-upnp-org:service:Layer3Forwarding:1"
        answer = self.http(miniupnpc("/ctl/L3F", l3f, "GetDefaultConnectionService"))
        fibre = self.gateway.device.devices[0].devices[0].udn
        self.assertIn(
            f"<NewDefaultConnectionService>{fibre}:WANConnectionDevice:2,"
            "urn:upnp-org:serviceId:WANIPConn1</NewDefaultConnectionService>".encode(),
            answer,
        )

    def test_stableUDNs(self) -> None:
        """
        A restart with the same state directory is the same device to
        control points.
        """
        first = [d.udn for d in self.gateway.device.walk()]
        again = [d.udn for d in self.build().device.walk()]
        self.assertEqual(first, again)

    def test_ssdpAnnounces(self) -> None:
        """
        At start SSDP says byebye then alive on the LAN interface, with the
        description's URL on the LAN address.
        """
        self.gateway.startService()
        self.reactor.advance(1)
        sent = [d for d, _, ifindex, source in self.ssdp.sent if ifindex == 3 and source == "192.168.1.1"]
        self.assertTrue(sent)
        self.assertIn(b"NTS: ssdp:byebye", sent[0])
        self.assertTrue(any(b"LOCATION: http://192.168.1.1:5000/rootDesc.xml" in d for d in sent))

    def test_stopLeavesNothing(self) -> None:
        """
        After C{stopService} nothing listens and no timer is pending.
        """
        self.gateway.startService()
        self.reactor.advance(5)
        d = self.gateway.stopService()
        self.reactor.advance(1)
        self.successResultOf(d)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertFalse(self.ssdp.listening)
        self.assertEqual(self.reactor.listening, set())
        self.assertEqual(self.netlink.watching("br-lan"), 0)
        self.assertEqual(self.netlink.watching("eth1"), 0)

    def test_followsLANAddress(self) -> None:
        """
        When the LAN interface's address changes, HTTP moves with it; a LAN
        interface that comes up later is served from then on.
        """
        self.netlink.remove("br-lan")
        self.gateway.startService()
        self.assertEqual(self.reactor.listening, set())
        self.netlink.setState(LAN)
        self.assertEqual(self.reactor.listening, {("192.168.1.1", 5000)})
        self.netlink.setState(
            InterfaceState("br-lan", 3, up=True, carrier=True, addresses=(IPv4Interface("10.0.0.1/24"),))
        )
        self.assertEqual(self.reactor.listening, {("10.0.0.1", 5000)})
        answer = self.http(b"GET /rootDesc.xml HTTP/1.1\r\nHost: 192.168.1.1:5000\r\n\r\n", peer="10.0.0.5")
        self.assertTrue(answer.startswith(b"HTTP/1.1 403"), answer[:40])


class ManholeWiringTests(SynchronousTestCase):
    """
    The manhole is part of the tree when configured, and refuses to start on
    a password file others can read.
    """

    def setUp(self) -> None:
        self.state = Path(temporaryPath(self).path)
        self.state.mkdir()
        self.passwords = self.state / "manhole.passwd"
        self.passwords.write_text("admin:secret\n")

    def build(self):
        text = CONFIG.format(state=self.state) + f'\n[manhole]\nport = 6023\npassword_file = "{self.passwords}"\n'
        return makeGateway(
            config.parse(text),
            ListeningReactor(),
            netlink=FakeNetlink([LAN, ETH1]),
            ssdpListen=lambda protocol: FakePacketInfoTransport(),
        )

    def test_namespaceIsTheLiveTree(self) -> None:
        """
        With C{[manhole] port} set, the tree has a manhole whose namespace
        holds the live WAN services by name.
        """
        self.passwords.chmod(0o600)
        gateway = self.build()
        self.assertEqual(type(gateway.getServiceNamed("manhole")).__name__, "ManholeService")
        namespace = gateway.namespace()
        self.assertEqual(sorted(namespace["wans"]), ["backup", "fibre"])
        self.assertIs(namespace["wans"]["fibre"], gateway.getServiceNamed("wan:fibre"))
        self.assertIs(namespace["gateway"], gateway)

    def test_worldReadable(self) -> None:
        """
        A password file others can read stops startup with one line.
        """
        self.passwords.chmod(0o644)
        with self.assertRaises(ConfigError) as e:
            self.build()
        self.assertEqual(
            str(e.exception),
            f"manhole.password_file: {self.passwords} is readable by other users (mode 0644); chmod 600 it",
        )


class EventingTests(SynchronousTestCase):
    """
    Every evented variable reaches subscribers through the one event bus.
    """

    def setUp(self) -> None:
        self.state = Path(temporaryPath(self).path)
        self.reactor = ListeningReactor()
        self.netlink = FakeNetlink([LAN, ETH1])
        self.agent = FakeAgent()
        from gatewayd.state import runSynchronously

        self.gateway = makeGateway(
            config.parse(CONFIG.format(state=self.state)),
            self.reactor,
            netlink=self.netlink,
            ssdpListen=lambda protocol: FakePacketInfoTransport(),
            runner=runSynchronously,
            agent=self.agent,
        )
        self.gateway.startService()
        self.addCleanup(self.gateway.stopService)

    def http(self, raw: bytes, peer: str = "192.168.1.20") -> bytes:
        site = self.reactor.tcpServers[0][1]
        address = IPv4Address("TCP", peer, 40000)
        channel = site.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        self.reactor.advance(0)  # the journal writes once per reactor turn
        return transport.value()

    def subscribe(self, path: bytes) -> list:
        answer = self.http(
            b"SUBSCRIBE " + path + b" HTTP/1.1\r\nHOST: 192.168.1.1:5000\r\n"
            b"CALLBACK: <http://192.168.1.20:8090/notify>\r\nNT: upnp:event\r\n"
            b"TIMEOUT: Second-1800\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:60])
        self.reactor.advance(0)
        return self.agent.sent

    def latest(self) -> dict[str, str]:
        sent = self.agent.sent[-1]
        sent.answer(200)
        return {name: value for name, value in sent.values()}

    def test_portMappingEvent(self) -> None:
        """
        A subscriber to a WAN's WANIPConnection:2 gets the initial event with
        all five evented variables, then PortMappingNumberOfEntries and
        SystemUpdateID together when a mapping is added.
        """
        self.subscribe(b"/evt/fibre/WANIPConn1")
        self.assertEqual(
            self.latest(),
            {
                "PossibleConnectionTypes": "IP_Routed",
                "ConnectionStatus": "Connected",
                "ExternalIPAddress": "203.0.114.2",
                "PortMappingNumberOfEntries": "0",
                "SystemUpdateID": "1",
            },
        )
        body = (
            '<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
            's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
            '<u:AddPortMapping xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">'
            "<NewRemoteHost></NewRemoteHost><NewExternalPort>18080</NewExternalPort>"
            "<NewProtocol>TCP</NewProtocol><NewInternalPort>8080</NewInternalPort>"
            "<NewInternalClient>192.168.1.20</NewInternalClient><NewEnabled>1</NewEnabled>"
            "<NewPortMappingDescription>t</NewPortMappingDescription>"
            "<NewLeaseDuration>3600</NewLeaseDuration></u:AddPortMapping></s:Body></s:Envelope>\r\n"
        ).encode()
        raw = (
            b"POST /ctl/fibre/WANIPConn1 HTTP/1.1\r\nHost: 192.168.1.1:5000\r\n"
            b"Content-Type: text/xml\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
            b'SOAPAction: "urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping"\r\n\r\n' + body
        )
        self.assertIn(b"200 OK", self.http(raw))
        self.assertEqual(self.latest(), {"PortMappingNumberOfEntries": "1", "SystemUpdateID": "2"})

    def test_connectionAndLinkEvents(self) -> None:
        """
        Pulling the cable sends ConnectionStatus and ExternalIPAddress to
        WANIPConnection subscribers, PhysicalLinkStatus to
        WANCommonInterfaceConfig subscribers, and the default connection
        service moves to the other WAN, which the description lists first.
        """
        self.subscribe(b"/evt/fibre/WANIPConn1")
        self.latest()
        self.subscribe(b"/evt/fibre/WANCommonIFC1")
        self.assertEqual(self.latest(), {"PhysicalLinkStatus": "Up", "EnabledForInternet": "1"})
        self.subscribe(b"/evt/L3F")
        initial = self.latest()["DefaultConnectionService"]
        self.netlink.setState(InterfaceState("eth1", 4, up=True, carrier=False, addresses=ETH1.addresses))
        changes: dict[str, str] = {}
        sids = set()
        for _ in range(10):
            waiting = self.agent.waiting()
            if not waiting:
                break
            for sent in waiting:
                sids.add(sent.sid)
                sent.answer(200)
                changes.update(sent.values())
        self.assertEqual(len(sids), 3, changes)
        self.assertEqual(changes["ConnectionStatus"], "Disconnected")
        self.assertEqual(changes["ExternalIPAddress"], "")
        self.assertEqual(changes["PhysicalLinkStatus"], "Down")
        # The description now lists the backup, the active WAN, first.
        self.assertIn("backup", self.gateway.device.devices[0].friendlyName)
        backup = self.gateway.device.devices[0].devices[0].udn
        self.assertNotEqual(changes["DefaultConnectionService"], initial)
        self.assertTrue(changes["DefaultConnectionService"].startswith(backup))


MULTIWAN = """
[gateway]
state_dir = "{state}"
nat = "memory"

[lan]
interfaces = ["br-lan"]
http_port = 5000

[[wan]]
name = "fibre"
interface = "eth1"
priority = 10
link = {{ type = "unmanaged", gateway = "203.0.114.1" }}

[[wan]]
name = "cable"
interface = "eth2"
priority = 20
link = {{ type = "unmanaged", gateway = "198.51.100.1" }}
"""

ETH2 = InterfaceState("eth2", 5, up=True, carrier=True, addresses=(IPv4Interface("198.51.100.2/24"),))


class ScriptedProber:
    """
    Answers a probe if its target is not in L{silent}; records every probe.
    """

    name = "icmp"

    def __init__(self) -> None:
        self.silent: set[str] = set()
        self.probes: list[tuple[str, str, int]] = []

    def probe(self, target, source, mark, timeout):  # type: ignore[no-untyped-def]
        from twisted.internet.defer import succeed

        self.probes.append((str(target), str(source), mark))
        return succeed(str(target) not in self.silent)


class FailoverTests(SynchronousTestCase):
    """
    Two WANs with gateways, probed: what an upstream blackout and a carrier
    loss change, all together.
    """

    def setUp(self) -> None:
        from gatewayd.state import runSynchronously

        self.state = Path(temporaryPath(self).path)
        self.reactor = ListeningReactor()
        self.netlink = FakeNetlink([LAN, ETH1, ETH2])
        self.prober = ScriptedProber()
        self.ssdp = FakePacketInfoTransport()
        self.gateway = makeGateway(
            config.parse(MULTIWAN.format(state=self.state)),
            self.reactor,
            netlink=self.netlink,
            ssdpListen=lambda protocol: self.ssdp,
            runner=runSynchronously,
            agent=FakeAgent(),
            prober=self.prober,
        )
        self.gateway.startService()
        self.addCleanup(self.gateway.stopService)
        self.router = self.gateway.router

    def controlURLs(self, userAgent: str = "Debian/12 UPnP/1.1 MiniUPnPc/2.2.4") -> list[str]:
        site = self.reactor.tcpServers[0][1]
        address = IPv4Address("TCP", "192.168.1.20", 40000)
        channel = site.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        channel.makeConnection(transport)
        channel.dataReceived(
            b"GET /rootDesc.xml HTTP/1.1\r\nHost: 192.168.1.1:5000\r\nUser-Agent: "
            + userAgent.encode()
            + b"\r\nConnection: close\r\n\r\n"
        )
        body = transport.value().split(b"\r\n\r\n", 1)[1]
        ns = {"d": "urn:schemas-upnp-org:device-1-0"}
        return etree.fromstring(body).xpath(
            "//d:service[d:serviceType='urn:schemas-upnp-org:service:WANIPConnection:2']"
            "/d:controlURL/text()",
            namespaces=ns,
        )

    def test_probesCarryTheWANsSourceAndMark(self) -> None:
        """
        Each WAN's gateway is probed from the WAN's address with the WAN's
        mark (config order: 0x100, 0x200); the preferred WAN is active.
        """
        self.assertIn(("203.0.114.1", "203.0.114.2", 0x100), self.prober.probes)
        self.assertIn(("198.51.100.1", "198.51.100.2", 0x200), self.prober.probes)
        self.assertEqual(self.router.active, "fibre")
        self.assertEqual(self.controlURLs(), ["/ctl/fibre/WANIPConn1", "/ctl/cable/WANIPConn1"])

    def test_blackout(self) -> None:
        """
        When the preferred WAN's gateway stops answering (link up), the
        router moves to the other WAN within down_after rounds; the failed
        WAN stays Connected (a routing state, not a tear-down) but its
        masqueraded connections are forgotten, the description lists the
        active WAN first for miniupnpc and last for async-upnp-client, its
        CONFIGID changes, and the manhole's status says why. When the
        gateway answers again for up_after rounds and the flap guard's
        hold, the router fails back.
        """
        configIds = {self.gateway.getServiceNamed("ssdp")._configId()}
        self.prober.silent.add("203.0.114.1")
        self.reactor.advance(1)
        self.reactor.advance(1)
        self.assertEqual(self.router.active, "fibre")
        self.reactor.advance(1)
        self.assertEqual(self.router.active, "cable")
        fibre = self.gateway.wans["fibre"]
        self.assertEqual(fibre.connection.status, "Connected")
        nat = self.gateway.getServiceNamed("nat")
        self.assertEqual([(w, str(a)) for w, a in nat.forgotten], [("fibre", "203.0.114.2")])
        self.assertEqual(self.controlURLs(), ["/ctl/cable/WANIPConn1", "/ctl/fibre/WANIPConn1"])
        self.assertEqual(
            self.controlURLs("Python/3.11 aiohttp/3.14.5"),
            ["/ctl/fibre/WANIPConn1", "/ctl/cable/WANIPConn1"],
        )
        configIds.add(self.gateway.getServiceNamed("ssdp")._configId())
        self.assertEqual(len(configIds), 2)
        [row] = [r for r in self.gateway.status() if r["name"] == "fibre"]
        self.assertEqual(
            (row["active"], row["connectionStatus"], row["health"]), (False, "Connected", "down")
        )
        self.assertIn("no answer from 203.0.114.1 in 3 rounds", str(row["healthReason"]))
        self.prober.silent.clear()
        # It was up for less than a minute: a flap, so it must answer for
        # the flap guard's 10 s, beyond up_after rounds, before failback.
        waited = 0
        while self.router.active == "cable" and waited < 20:
            self.reactor.advance(1)
            waited += 1
        self.assertEqual(self.router.active, "fibre")
        self.assertIn(waited, (10, 11))
        # Failing back leaves the backup's working connections alone.
        self.assertEqual(len(nat.forgotten), 1)

    def test_carrierLoss(self) -> None:
        """
        Losing the preferred WAN's carrier moves the router at once, in the
        same reactor turn, and takes its Connection out of Connected.
        """
        self.netlink.setState(InterfaceState("eth1", 4, up=True, carrier=False, addresses=ETH1.addresses))
        self.assertEqual(self.router.active, "cable")
        self.assertNotEqual(self.gateway.wans["fibre"].connection.status, "Connected")
        self.assertEqual(self.controlURLs()[0], "/ctl/cable/WANIPConn1")

    def test_natLearnsWANAddresses(self) -> None:
        """
        Each WAN tells the NAT backend its address (for hairpin) when it
        starts and whenever its link changes.
        """
        from ipaddress import IPv4Address as Address

        nat = self.gateway.getServiceNamed("nat")
        self.assertEqual(
            nat.addresses, {"fibre": Address("203.0.114.2"), "cable": Address("198.51.100.2")}
        )
        self.netlink.setState(
            InterfaceState("eth2", 5, up=True, carrier=True, addresses=(IPv4Interface("198.51.100.9/24"),))
        )
        self.assertEqual(nat.addresses["cable"], Address("198.51.100.9"))
        self.netlink.setState(InterfaceState("eth2", 5, up=True, carrier=True, addresses=()))
        self.assertEqual(nat.addresses, {"fibre": Address("203.0.114.2")})


class SimulatedCountersTests(SynchronousTestCase):
    """
    A simulated WAN (whose interface does not exist) answers the traffic
    counter actions, as upnpc -s asks them.
    """

    def test_zeroCounters(self) -> None:
        """
        GetTotalBytesSent on a simulated WAN says 0 instead of a fault.
        """
        state = Path(temporaryPath(self).path)
        reactor = ListeningReactor()
        gateway = makeGateway(
            config.parse(CONFIG.format(state=state)),
            reactor,
            netlink=FakeNetlink([LAN, ETH1]),
            ssdpListen=lambda protocol: FakePacketInfoTransport(),
        )
        gateway.startService()
        self.addCleanup(gateway.stopService)
        site = reactor.tcpServers[0][1]
        address = IPv4Address("TCP", "192.168.1.20", 40000)
        channel = site.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        channel.makeConnection(transport)
        common = "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1"
        channel.dataReceived(miniupnpc("/ctl/backup/WANCommonIFC1", common, "GetTotalBytesSent"))
        reactor.advance(0)
        self.assertIn(b"<NewTotalBytesSent>0</NewTotalBytesSent>", transport.value())
