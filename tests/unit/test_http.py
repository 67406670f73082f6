"""
Tests for L{gatewayd.upnp.http}: the resource tree, LAN-only enforcement,
limits and timeouts, and the listening service.
"""

from __future__ import annotations

from ipaddress import IPv4Interface
from typing import Any

from lxml import etree
from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gatewayd.interfaces import LANAddress
from gatewayd.upnp.http import (
    IGD1_USER_AGENTS,
    LANHTTPService,
    LANPolicy,
    LANSite,
    makeSite,
    wantsIGD1,
)

from .test_description import FakeWANIPConnection, buildTree, wanDevice
from .test_soap import MINIUPNPC, split

D = "{urn:schemas-upnp-org:device-1-0}"
S = "{urn:schemas-upnp-org:service-1-0}"
LO = LANAddress("lo", 1, IPv4Interface("127.0.0.1/8"))
BR = LANAddress("br-lan", 3, IPv4Interface("192.168.1.1/24"))


class Client:
    """
    One TCP connection to the site, as STYLE.md section 8 drives it.
    """

    def __init__(self, site: LANSite, peer: str = "127.0.0.1", port: int = 40000) -> None:
        address = IPv4Address("TCP", peer, port)
        self.channel = site.buildProtocol(address)
        self.transport = StringTransport(peerAddress=address)
        #: The site refused the connection (Twisted closes it unanswered).
        self.refused = self.channel is None
        if self.channel is not None:
            self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> bytes:
        if self.channel is not None:
            self.channel.dataReceived(data)
        return self.transport.value()

    def lose(self) -> None:
        self.channel.connectionLost(Failure(ConnectionError("closed")))


def siteAndClock(
    connection: FakeWANIPConnection | None = None, **limits: Any
) -> tuple[LANSite, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    lan = LANPolicy()
    lan.setAddresses([LO], 5000)
    root = buildTree(wanDevice("isp1", connection), wanDevice("isp2"))
    return makeSite(root, lan, reactor, **limits), reactor


def get(
    path: bytes,
    userAgent: bytes = b"Linux/6.1 UPnP/1.1 MiniUPnPc/2.2.4",
    host: bytes = b"127.0.0.1:5000",
) -> bytes:
    return (
        b"GET "
        + path
        + b" HTTP/1.1\r\nHost: "
        + host
        + b"\r\nUser-Agent: "
        + userAgent
        + b"\r\n\r\n"
    )


def fetch(raw: bytes, peer: str = "127.0.0.1") -> tuple[int, dict[bytes, bytes], bytes]:
    site, _ = siteAndClock()
    return split(Client(site, peer).send(raw))


def deviceTypes(body: bytes) -> list[str]:
    return [e.text or "" for e in etree.fromstring(body).iter(D + "deviceType")]


class DescriptionServingTests(SynchronousTestCase):
    def test_rootDescription(self) -> None:
        """
        /rootDesc.xml is the IGD:2 description, text/xml with its length and
        our SERVER header.
        """
        status, headers, body = fetch(get(b"/rootDesc.xml"))
        self.assertEqual(status, 200)
        self.assertEqual(headers[b"content-type"], b'text/xml; charset="utf-8"')
        self.assertEqual(int(headers[b"content-length"]), len(body))
        self.assertRegex(headers[b"server"].decode(), r"^\S+/\S+ UPnP/1\.1 gatewayd/\S+$")
        self.assertEqual(
            deviceTypes(body)[0], "urn:schemas-upnp-org:device:InternetGatewayDevice:2"
        )

    def test_windowsGetsIGD1(self) -> None:
        """
        Windows (User-Agent with Microsoft, any case) and FDSSDP get the
        IGD:1 view, as does anyone asking ?v=1.
        """
        for raw in [
            get(b"/rootDesc.xml", b"Microsoft-Windows/10.0 UPnP/1.0"),
            get(b"/rootDesc.xml", b"MICROSOFT-WINDOWS/6.1 UPNP/1.0"),
            get(b"/rootDesc.xml", b"FDSSDP"),
            get(b"/rootDesc.xml?v=1"),
        ]:
            status, _, body = fetch(raw)
            self.assertEqual(status, 200)
            self.assertEqual(set(t.rsplit(":", 1)[1] for t in deviceTypes(body)), {"1"}, raw)

    def test_igd1Table(self) -> None:
        """
        Each entry of the known-broken table selects the v1 view; other
        clients get v2.
        """
        for marker, _ in IGD1_USER_AGENTS:
            self.assertTrue(wantsIGD1(b"x " + marker.upper().encode() + b" y", {}))
        self.assertFalse(wantsIGD1(b"Linux/6.1 UPnP/1.1 MiniUPnPc/2.2.4", {}))
        self.assertFalse(wantsIGD1(None, {b"v": [b"2"]}))

    def test_scpds(self) -> None:
        """
        Every service type is described at each version up to the
        implemented one; v1 WANIPConnection lacks the v2 actions.
        """
        site, _ = siteAndClock()
        for path in [
            b"/scpd/WANIPConnection2.xml",
            b"/scpd/WANIPConnection1.xml",
            b"/scpd/WANCommonInterfaceConfig1.xml",
            b"/scpd/Layer3Forwarding1.xml",
        ]:
            status, headers, body = split(Client(site).send(get(path)))
            self.assertEqual(
                (status, headers[b"content-type"]), (200, b'text/xml; charset="utf-8"'), path
            )
            self.assertEqual(etree.fromstring(body).tag, S + "scpd")
        v1 = split(Client(site).send(get(b"/scpd/WANIPConnection1.xml")))[2]
        v2 = split(Client(site).send(get(b"/scpd/WANIPConnection2.xml")))[2]
        self.assertNotIn(b"AddAnyPortMapping", v1)
        self.assertIn(b"AddAnyPortMapping", v2)
        self.assertEqual(split(Client(site).send(get(b"/scpd/WANIPConnection3.xml")))[0], 404)

    def test_descriptionURLsResolve(self) -> None:
        """
        Every SCPD URL in both views is served, and every control URL
        answers SOAP.
        """
        site, _ = siteAndClock()
        for query in [b"", b"?v=1"]:
            body = split(Client(site).send(get(b"/rootDesc.xml" + query)))[2]
            for url in etree.fromstring(body).iter(D + "SCPDURL"):
                self.assertEqual(split(Client(site).send(get(url.text.encode())))[0], 200, url.text)
            for url in etree.fromstring(body).iter(D + "controlURL"):
                self.assertEqual(split(Client(site).send(get(url.text.encode())))[0], 405, url.text)

    def test_unknownPath(self) -> None:
        """
        Anything else is 404.
        """
        for path in [
            b"/nothing",
            b"/rootDesc.xml/x",
            b"/ctl/isp3/WANIPConn1",
            b"/scpd/",
            b"/ctl/isp1/WANIPConn1/",
        ]:
            self.assertEqual(fetch(get(path))[0], 404, path)

    def test_presentation(self) -> None:
        """
        The presentationURL / shows the device's name.
        """
        status, headers, body = fetch(get(b"/"))
        self.assertEqual(status, 200)
        self.assertIn(b"gatewayd test", body)

    def test_eventURL(self) -> None:
        """
        Until GENA exists, an event URL says 405 to GET (Allow: SUBSCRIBE,
        UNSUBSCRIBE) and 501 to SUBSCRIBE.
        """
        status, headers, _ = fetch(get(b"/evt/isp1/WANIPConn1"))
        self.assertEqual((status, headers[b"allow"]), (405, b"SUBSCRIBE, UNSUBSCRIBE"))
        raw = (
            b"SUBSCRIBE /evt/isp1/WANIPConn1 HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n"
            b"CALLBACK: <http://127.0.0.1:49152/>\r\nNT: upnp:event\r\nTIMEOUT: Second-1800\r\n\r\n"
        )
        self.assertEqual(fetch(raw)[0], 501)


class LANOnlyTests(SynchronousTestCase):
    def test_nonLANPeer(self) -> None:
        """
        A connection from outside every LAN network (e.g. from the WAN) is
        closed unanswered, and the log names the peer.
        """
        site, _ = siteAndClock()
        with capturedLogs() as events:
            client = Client(site, "198.51.100.7")
        self.assertTrue(client.refused)
        self.assertEqual(client.send(get(b"/rootDesc.xml")), b"")
        self.assertTrue([e for e in events if "198.51.100.7" in formatEvent(e)])

    def test_nonLANPeerOnRequest(self) -> None:
        """
        Should the LAN change while a connection is open, a request from a
        peer that is no longer on it gets 403.
        """
        site, _ = siteAndClock()
        client = Client(site, "127.0.0.1")
        site.lan.setAddresses([], 5000)
        self.assertEqual(split(client.send(get(b"/rootDesc.xml")))[0], 403)

    def test_nonLANPeerCannotControl(self) -> None:
        """
        A SOAP request from outside the LAN never reaches the service.
        """
        connection = FakeWANIPConnection()
        site, _ = siteAndClock(connection)
        self.assertEqual(Client(site, "198.51.100.7").send(MINIUPNPC), b"")
        self.assertEqual(connection.calls, [])

    def test_badHost(self) -> None:
        """
        A Host header that is a name (DNS rebinding), another address or
        another port gets 403, logged.
        """
        for host in [
            b"evil.example:5000",
            b"evil.example",
            b"127.0.0.2:5000",
            b"127.0.0.1:80",
            b"127.0.0.1:",
            b"[::1]:5000",
        ]:
            with capturedLogs() as events:
                status = fetch(get(b"/rootDesc.xml", host=host))[0]
            self.assertEqual(status, 403, host)
            self.assertTrue([e for e in events if "DNS rebinding" in formatEvent(e)], host)

    def test_goodHost(self) -> None:
        """
        Our address with or without the port is accepted.
        """
        for host in [b"127.0.0.1:5000", b"127.0.0.1"]:
            self.assertEqual(fetch(get(b"/rootDesc.xml", host=host))[0], 200, host)

    def test_missingHost(self) -> None:
        """
        HTTP/1.1 without Host is 400; HTTP/1.0 without Host is served.
        """
        self.assertEqual(fetch(b"GET /rootDesc.xml HTTP/1.1\r\n\r\n")[0], 400)
        self.assertEqual(fetch(b"GET /rootDesc.xml HTTP/1.0\r\n\r\n")[0], 200)

    def test_nothingAllowedBeforeAddresses(self) -> None:
        """
        A policy that knows no LAN yet refuses everyone.
        """
        self.assertFalse(LANPolicy().peerAllowed("127.0.0.1"))

    def test_policy(self) -> None:
        """
        Peers inside any LAN network are accepted, v4-mapped too.
        """
        lan = LANPolicy()
        lan.setAddresses([LO, BR], 5000)
        for peer in ["127.1.2.3", "192.168.1.77", "::ffff:192.168.1.77"]:
            self.assertTrue(lan.peerAllowed(peer), peer)
        for peer in ["192.168.2.1", "10.0.0.1", "::1", "junk"]:
            self.assertFalse(lan.peerAllowed(peer), peer)
        self.assertTrue(lan.hostAllowed(b"192.168.1.1:5000"))


def postHead(length: int, extra: bytes = b"") -> bytes:
    return (
        b"POST /ctl/isp1/WANIPConn1 HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n"
        b'SOAPAction: "urn:schemas-upnp-org:service:WANIPConnection:1#GetExternalIPAddress"\r\n'
        b"Content-Type: text/xml\r\n" + extra + b"Content-Length: %d\r\n\r\n" % (length,)
    )


class LimitTests(SynchronousTestCase):
    def test_declaredBodyTooLarge(self) -> None:
        """
        A Content-Length over the limit is answered 413 at once, the
        connection closes, and the body is neither read nor acted upon.
        """
        connection = FakeWANIPConnection()
        site, _ = siteAndClock(connection, bodyLimit=1000)
        client = Client(site)
        with capturedLogs() as events:
            response = client.send(postHead(1001) + b"x" * 500)
        self.assertEqual(split(response)[0], 413)
        self.assertTrue(client.transport.disconnecting)
        client.send(b"y" * 501)
        self.assertEqual(client.transport.value(), response)
        self.assertEqual(connection.calls, [])
        self.assertTrue([e for e in events if "413" in formatEvent(e)])

    def test_noContinueForRefusedBody(self) -> None:
        """
        A client that asked "Expect: 100-continue" for an oversized body is
        told 413 and never invited to send it.
        """
        site, _ = siteAndClock(bodyLimit=1000)
        response = Client(site).send(postHead(10**9, b"Expect: 100-continue\r\n"))
        self.assertEqual(split(response)[0], 413)
        self.assertNotIn(b"100 Continue", response)

    def test_chunkedBodyTooLarge(self) -> None:
        """
        A chunked body that grows past the limit is cut off with 413.
        """
        connection = FakeWANIPConnection()
        site, _ = siteAndClock(connection, bodyLimit=1000)
        client = Client(site)
        head = (
            b"POST /ctl/isp1/WANIPConn1 HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n"
            b'SOAPAction: "urn:schemas-upnp-org:service:WANIPConnection:1#GetExternalIPAddress"\r\n'
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        self.assertEqual(client.send(head + b"200\r\n" + b"x" * 0x200 + b"\r\n"), b"")
        response = client.send(b"200\r\n" + b"x" * 0x200 + b"\r\n0\r\n\r\n")
        self.assertEqual(split(response)[0], 413)
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(connection.calls, [])

    def test_chunkedBodyWithinLimit(self) -> None:
        """
        A chunked body within the limit is served normally.
        """
        site, _ = siteAndClock()
        body = MINIUPNPC.partition(b"\r\n\r\n")[2]
        head = (
            b"POST /ctl/isp1/WANIPConn1 HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n"
            b'SOAPAction: "urn:schemas-upnp-org:service:WANIPConnection:1#GetExternalIPAddress"\r\n'
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        response = Client(site).send(head + b"%x\r\n" % (len(body),) + body + b"\r\n0\r\n\r\n")
        self.assertEqual(split(response)[0], 200)

    def test_tooManyHeaders(self) -> None:
        """
        A request with an absurd number of headers is refused with 400.
        """
        raw = (
            b"GET /rootDesc.xml HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n"
            + b"X-A: b\r\n" * 200
            + b"\r\n"
        )
        self.assertEqual(fetch(raw)[0], 400)


class TimeoutTests(SynchronousTestCase):
    def test_slowClientDropped(self) -> None:
        """
        A client dripping a byte every few seconds is dropped (408) when the
        request deadline passes, while another client is served meanwhile.
        """
        site, clock = siteAndClock(requestTimeout=30.0, idleTimeout=60.0)
        slow = Client(site, port=40001)
        raw = get(b"/rootDesc.xml")
        for i in range(5):
            self.assertEqual(slow.send(raw[i : i + 1]), b"")
            clock.advance(5)
        fast = Client(site, port=40002)
        self.assertEqual(split(fast.send(get(b"/rootDesc.xml")))[0], 200)
        self.assertFalse(slow.transport.disconnecting)
        slow.send(raw[5:6])
        clock.advance(5)
        self.assertEqual(split(slow.transport.value())[0], 408)
        self.assertTrue(slow.transport.disconnecting)
        self.assertFalse(fast.transport.disconnecting)
        slow.lose()
        fast.lose()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_slowClientAborted(self) -> None:
        """
        A slow client that does not even close is aborted.
        """
        site, clock = siteAndClock(requestTimeout=30.0)
        slow = Client(site)
        slow.send(b"GET /")
        clock.advance(30)
        self.assertTrue(slow.transport.disconnecting)
        clock.advance(site.protocol.abortTimeout)
        self.assertTrue(slow.transport.disconnected)

    def test_completeRequestNotDropped(self) -> None:
        """
        The deadline is per request: a kept-alive connection that sends its
        second request later is not cut off.
        """
        site, clock = siteAndClock(requestTimeout=30.0, idleTimeout=60.0)
        client = Client(site)
        client.send(get(b"/rootDesc.xml"))
        clock.advance(45)
        client.transport.clear()
        self.assertEqual(split(client.send(get(b"/rootDesc.xml")))[0], 200)
        clock.advance(29)
        self.assertFalse(client.transport.disconnecting)

    def test_idleConnectionClosed(self) -> None:
        """
        An idle kept-alive connection is closed after the idle timeout.
        """
        site, clock = siteAndClock(idleTimeout=60.0)
        client = Client(site)
        clock.advance(59)
        self.assertFalse(client.transport.disconnecting)
        clock.advance(1)
        self.assertTrue(client.transport.disconnecting)


class _Port:
    def __init__(self, reactor: "_Reactor", port: int, interface: str) -> None:
        self._reactor, self.port, self.interface = reactor, port, interface

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", self.interface, self.port)

    def stopListening(self) -> Any:
        self._reactor.listening.remove(self)
        return succeed(None)


class _Reactor(MemoryReactorClock):
    """
    A memory reactor whose listenTCP picks a port for port 0, as the kernel
    does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.listening: list[_Port] = []

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> _Port:
        listening = _Port(self, port or 49152, interface)
        self.listening.append(listening)
        return listening


class LANHTTPServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = _Reactor()
        self.lan = LANPolicy()
        self.site = makeSite(buildTree(), self.lan, self.reactor)

    def endpoints(self) -> list[tuple[str, int]]:
        return sorted((p.interface, p.port) for p in self.reactor.listening)

    def test_listensOnEveryLANAddress(self) -> None:
        """
        Once started, the service listens on each LAN address, all on the
        port the first bind chose, and logs that port.
        """
        service = LANHTTPService(self.reactor, self.site, 0)
        service.setAddresses([LO, BR])
        self.assertEqual(self.endpoints(), [])
        self.assertIsNone(service.port)
        with capturedLogs() as events:
            service.startService()
        self.assertEqual(self.endpoints(), [("127.0.0.1", 49152), ("192.168.1.1", 49152)])
        self.assertEqual(service.port, 49152)
        self.assertTrue([e for e in events if "49152" in formatEvent(e)])

    def test_addressesFollowed(self) -> None:
        """
        A removed LAN address stops being served, a new one is served on
        the same port, and the policy follows: peers of a removed network
        are refused.
        """
        service = LANHTTPService(self.reactor, self.site, 5000)
        service.setAddresses([LO, BR])
        service.startService()
        self.assertTrue(self.lan.peerAllowed("192.168.1.20"))
        service.setAddresses([LO])
        self.assertEqual(self.endpoints(), [("127.0.0.1", 5000)])
        self.assertFalse(self.lan.peerAllowed("192.168.1.20"))
        self.assertTrue(self.lan.hostAllowed(b"127.0.0.1:5000"))
        other = LANAddress("br-guest", 4, IPv4Interface("10.7.0.1/16"))
        service.setAddresses([LO, other])
        self.assertEqual(self.endpoints(), [("10.7.0.1", 5000), ("127.0.0.1", 5000)])
        self.assertTrue(self.lan.peerAllowed("10.7.3.3"))

    def test_stopService(self) -> None:
        """
        After stopService nothing listens and nothing is accepted.
        """
        service = LANHTTPService(self.reactor, self.site, 5000)
        service.setAddresses([LO, BR])
        service.startService()
        self.successResultOf(service.stopService())
        self.assertEqual(self.endpoints(), [])
        self.assertFalse(self.lan.peerAllowed("127.0.0.1"))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_sameSiteEndToEnd(self) -> None:
        """
        A client on a served LAN gets the description through the site the
        service listens with.
        """
        service = LANHTTPService(self.reactor, self.site, 5000)
        service.setAddresses([BR])
        service.startService()
        raw = get(b"/rootDesc.xml", host=b"192.168.1.1:5000")
        self.assertEqual(split(Client(self.site, "192.168.1.20").send(raw))[0], 200)
        self.assertTrue(Client(self.site, "127.0.0.1").refused)
