# -*- test-case-name: tests.unit.test_http -*-
"""
The UPnP HTTP server on the LAN: the resource tree (descriptions, SCPDs,
control and event URLs; DESIGN.md "URL layout"), LAN-only enforcement, size
and time limits, and the service that listens on each LAN address.

LAN only is enforced, not assumed: Linux accepts packets for any local
address on any interface, so every request's TCP peer must be inside a LAN
network (403 otherwise), and its C{Host} header must name one of our LAN
addresses (403 otherwise: DNS rebinding; 400 if HTTP/1.1 sends none).

Plain SOAP POSTs take the direct path (L{gatewayd.upnp.direct}) past
twisted.web's request machinery; everything else, and every refusal, is
twisted.web's.
"""

from __future__ import annotations

import platform
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, ip_address
from typing import Callable, Sequence

from lxml import etree
from lxml.builder import ElementMaker
from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTCP, IReactorTime
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.iweb import IRequest
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

import gatewayd
from gatewayd.interfaces import LANAddress
from gatewayd.upnp import model
from gatewayd.upnp.description import (
    configIdOf,
    deviceDescription,
    scpd,
    serviceTypes,
)
from gatewayd.upnp.direct import HAND_OVER, ControlHead, Deadlines, readControlHead, responseBytes
from gatewayd.upnp.soap import CONTENT_TYPE, Answer, ControlResource, Requester

#: The SERVER header of every response (UDA: C{<OS>/<version> UPnP/1.1
#: <product>/<version>}).
SERVER = (
    f"{platform.system() or 'Linux'}/{platform.release() or '0'}"
    f" UPnP/1.1 gatewayd/{gatewayd.__version__}"
)
_SERVER = SERVER.encode("ascii")

#: User-Agent substrings (compared case-insensitively) of control points
#: that break on IGD:2 documents and get the IGD:1 view of C{/rootDesc.xml}
#: (IGD-2-devices.md section 6; miniupnpd does the same).
IGD1_USER_AGENTS: tuple[tuple[str, str], ...] = (
    ("microsoft", "Windows natupnp/hnetcfg, BITS, Xbox: Microsoft-Windows/10.0 UPnP/1.0"),
    ("fdssdp", "Windows Function Discovery SSDP provider: FDSSDP"),
)


#: User-Agent substrings (compared case-insensitively) of control points
#: that keep only the I{last} embedded device of each type: they get the
#: description with the active WAN's WANDevice last instead of first (every
#: other client, miniupnpc included, uses the first WANIPConnection).
ACTIVE_LAST_USER_AGENTS: tuple[tuple[str, str], ...] = (
    ("aiohttp/", "async-upnp-client 0.49 (Home Assistant): one device per type, the last wins"),
)


def wantsActiveLast(userAgent: bytes | None, args: dict[bytes, list[bytes]]) -> bool:
    """
    @return: whether a description request should get the WANs with the
        active one last: its query is C{?order=last}, or its User-Agent is
        in L{ACTIVE_LAST_USER_AGENTS}.
    """
    if args.get(b"order") == [b"last"]:
        return True
    agent = (userAgent or b"").decode("latin-1").lower()
    return any(marker in agent for marker, _ in ACTIVE_LAST_USER_AGENTS)


def activeLast(root: model.Device) -> model.Device:
    """
    @return: C{root} with its first embedded device (the active WAN's
        WANDevice) moved to the end.
    """
    if len(root.devices) < 2:
        return root
    return replace(root, devices=root.devices[1:] + root.devices[:1])


class Descriptions:
    """
    The documents of a device tree that may change (the WANs are listed
    with the active one first): rendered once per tree, on first request.

    The CONFIGID is the one of the current tree (L{configIdOf}), so it
    changes whenever the description does; the active-last variant for
    L{ACTIVE_LAST_USER_AGENTS} lists the same devices and shares it.
    """

    def __init__(self, root: model.Device | Callable[[], model.Device]) -> None:
        self._root: Callable[[], model.Device] = root if callable(root) else (lambda: root)
        self._renderedFor: model.Device | None = None
        self._configId = 0
        self._cache: dict[object, bytes] = {}

    def root(self) -> model.Device:
        """
        @return: the current tree.
        """
        return self._root()

    def _fresh(self) -> None:
        root = self._root()
        if root is not self._renderedFor:
            self._renderedFor = root
            self._configId = configIdOf(root)
            self._cache = {}

    @property
    def configId(self) -> int:
        """
        The CONFIGID of the current tree.
        """
        self._fresh()
        return self._configId

    def description(self, version: int, last: bool = False) -> bytes:
        """
        @return: the device description of the current tree for UDA
            C{version} (C{1}: the IGD:1 view), active WAN first (or last).
        """
        self._fresh()
        key = ("description", version, last)
        if key not in self._cache:
            assert self._renderedFor is not None
            root = activeLast(self._renderedFor) if last else self._renderedFor
            self._cache[key] = deviceDescription(root, version, self._configId)
        return self._cache[key]

    def scpd(self, serviceType: model.ServiceType) -> bytes:
        """
        @return: the SCPD of C{serviceType}, with the current CONFIGID.
        """
        self._fresh()
        key = ("scpd", serviceType.name, serviceType.version)
        if key not in self._cache:
            self._cache[key] = scpd(serviceType, self._configId)
        return self._cache[key]


def wantsIGD1(userAgent: bytes | None, args: dict[bytes, list[bytes]]) -> bool:
    """
    @return: whether a description request should get the IGD:1 view: its
        query is C{?v=1}, or its User-Agent is in L{IGD1_USER_AGENTS}.
    """
    if args.get(b"v") == [b"1"]:
        return True
    agent = (userAgent or b"").decode("latin-1").lower()
    return any(marker in agent for marker, _ in IGD1_USER_AGENTS)


#: How many peers' verdicts L{LANPolicy} remembers (a LAN has few hosts;
#: the cache is dropped when it grows past this, e.g. under a scan).
_PEER_CACHE = 4096


class LANPolicy:
    """
    Which peers and Host headers the HTTP server accepts.

    Until L{setAddresses} is called nothing is accepted.
    """

    log = Logger()

    def __init__(self) -> None:
        self._interfaces: tuple[IPv4Interface, ...] = ()
        self._port = 0
        self._peers: dict[str, bool] = {}
        self._hosts: frozenset[bytes] = frozenset()

    def setAddresses(self, addresses: Sequence[LANAddress], port: int) -> None:
        """
        @param addresses: the LAN addresses we serve on; their networks are
            the peers we accept.
        @param port: the HTTP port, accepted after an address in C{Host}.
        """
        self._interfaces = tuple(a.address for a in addresses)
        self._port = port
        self._peers.clear()
        ips = [str(i.ip).encode("ascii") for i in self._interfaces]
        self._hosts = frozenset(ips + [b"%s:%d" % (ip, port) for ip in ips])

    def peerAllowed(self, peer: str) -> bool:
        """
        @return: whether C{peer} (an IP address) is inside a LAN network.
        """
        known = self._peers.get(peer)
        if known is None:
            known = self._peers[peer] = self._onLAN(peer)
            if len(self._peers) > _PEER_CACHE:
                self._peers.clear()
        return known

    def _onLAN(self, peer: str) -> bool:
        try:
            address = ip_address(peer)
        except ValueError:
            return False
        if not isinstance(address, IPv4Address):
            address = getattr(address, "ipv4_mapped", None)
            if address is None:
                return False
        return any(address in i.network for i in self._interfaces)

    def hostAllowed(self, host: bytes) -> bool:
        """
        @return: whether C{host} (a C{Host} header) is C{<our address>} or
            C{<our address>:<port>}; names never are (DNS rebinding).
        """
        return host in self._hosts

    def refusal(self, request: IRequest) -> tuple[int, str] | None:
        """
        @return: L{None} to serve C{request}, else the HTTP status and the
            reason to refuse it with.
        """
        return self.refusalFor(
            _peer(request), request.requestHeaders.getRawHeaders(b"host"), request.clientproto
        )

    def refusalFor(
        self, peer: str, hosts: Sequence[bytes] | None, version: bytes
    ) -> tuple[int, str] | None:
        """
        @param peer: the TCP peer's address.
        @param hosts: the request's C{Host} headers.
        @param version: the request's HTTP version.
        @return: L{None} to serve the request, else the HTTP status and the
            reason to refuse it with.
        """
        if not self.peerAllowed(peer):
            return 403, f"peer {peer} is not on a LAN"
        if not hosts:
            if version == b"HTTP/1.1":
                return 400, "HTTP/1.1 request without Host"
            return None
        if len(hosts) != 1 or not self.hostAllowed(hosts[0]):
            return 403, f"Host {hosts[-1]!r} is not one of our LAN addresses (DNS rebinding?)"
        return None


def _peer(request: IRequest) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", address))


class LANRequest(Request):
    """
    A request that enforces the site's LAN policy and body limit and
    carries the gatewayd SERVER header.

    The body limit applies to the declared C{Content-Length} before any body
    byte is read, and to chunked bodies as they arrive: either way 413 and
    the connection is closed without reading the rest.
    """

    log = Logger()
    _refused = False
    _received = 0

    @property
    def _limit(self) -> int:
        return getattr(self.channel.site, "bodyLimit", 65536)

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._limit:
            # No "100 Continue" after the refusal: the body is not wanted.
            self.requestHeaders.removeHeader(b"expect")
            self._refuse(413, f"declared body of {length} bytes")
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._limit:
            self._refuse(413, f"body beyond {self._limit} bytes")
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return
        super().requestReceived(command, path, version)

    def _refuse(self, code: int, why: str) -> None:
        """
        Answer C{code} straight away and close the connection, reading no
        more of the request.
        """
        self._refused = True
        peer = _peer(self)
        self.log.warn(
            "Refused a request from {peer} with {code}: {why}", peer=peer, code=code, why=why
        )
        refuse = getattr(self.channel, "refuse", None)
        if refuse is not None:
            refuse(code)
        else:
            self.channel.transport.write(_statusOnly(code))
            self.channel.loseConnection()

    def process(self) -> None:
        lan: LANPolicy | None = getattr(self.channel.site, "lan", None)
        refusal = lan.refusal(self) if lan is not None else None
        if refusal is None:
            super().process()
            return
        code, why = refusal
        self.log.warn(
            "Refused {method} {path} from {peer} with {code}: {why}",
            method=self.method,
            path=self.path,
            peer=_peer(self),
            code=code,
            why=why,
        )
        self.channel.persistent = False
        self.setResponseCode(code)
        self.setHeader(b"content-length", b"0")
        self.setHeader(b"connection", b"close")
        self.write(b"")
        self.finish()

    def write(self, data: bytes) -> None:
        if not self.startedWriting:
            self.setHeader(b"server", _SERVER)
        super().write(data)


_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 413: b"Request Entity Too Large"}


def _statusOnly(code: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\nServer: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % (
        code,
        _REASONS.get(code, b"Error"),
        SERVER.encode("ascii"),
    )


class LANChannel(HTTPChannel):
    """
    An HTTP channel on the LAN.

    It starts on the direct path (L{gatewayd.upnp.direct}): plain SOAP POSTs
    to a control URL are answered without twisted.web's request machinery.
    The first request that is not one hands the connection to
    C{HTTPChannel} for good.

    Either way each request has an absolute deadline for arriving completely
    (head and body), so a client dripping bytes cannot hold a connection
    however often it sends; the idle timeout between requests is the site's
    C{timeout}.
    """

    log = Logger()
    maxHeaders = 64
    totalHeadersSize = 8192
    #: Seconds a request may take to arrive completely (the site overrides).
    requestTimeout = 30.0
    _deadline: IDelayedCall | None = None
    _refusedConnection = False

    #: On the direct path: nothing of C{HTTPChannel} has started yet.
    _direct = False
    #: The bytes received on the direct path and not answered yet.
    _pending: bytes | bytearray = b""
    #: The head of the request in C{_pending}, read while its body arrives,
    #: and the control resource that answers it.
    _waiting: tuple[ControlHead, ControlResource] | None = None
    #: An answer is being worked on (the transport is paused meanwhile).
    _busy = False
    #: Closing after an answer or a deadline: further bytes are ignored.
    _closing = False
    _lost = False
    #: The request now arriving has its deadline set.
    _requestStarted = False

    def connectionMade(self) -> None:
        if self._direct:
            self._deadlines.set(self, self.timeOut or self.requestTimeout, self._idleTimeout)
        else:
            super().connectionMade()

    def startDirect(
        self,
        peer: str,
        control: Callable[[bytes], ControlResource | None],
        lan: LANPolicy,
        bodyLimit: int,
        deadlines: Deadlines,
    ) -> None:
        """
        Start this connection on the direct path (before it is connected).

        @param peer: the TCP peer's address.
        @param control: finds the control resource of a path.
        @param lan: the policy each request must pass.
        @param bodyLimit: the largest request body.
        @param deadlines: keeps this connection's timeouts.
        """
        self._direct = True
        self._peerHost = peer
        self._control = control
        self._lan = lan
        self._bodyLimit = bodyLimit
        self._deadlines = deadlines

    def dataReceived(self, data: bytes) -> None:
        if self._direct:
            if self._closing:
                return
            if not self._pending:
                self._pending = data
            else:
                # A request in pieces: append in place, never copy it all again.
                if isinstance(self._pending, bytes):
                    self._pending = bytearray(self._pending)
                self._pending += data
            if not self._busy:
                self._serveDirect()
            return
        if self._refusedConnection:
            return
        if self._deadline is None and not self._handlingRequest:
            self._deadline = self.callLater(self.requestTimeout, self._tooSlow)
        super().dataReceived(data)

    def _serveDirect(self) -> None:
        """
        Answer the complete plain requests in C{_pending}, one at a time,
        until one is incomplete, one is answered later, the connection
        closes or is handed over.  Each turn consumes a request, so this
        ends.
        """
        while self._pending and not (self._busy or self._closing):
            if self._waiting is None:
                found = readControlHead(
                    self._pending, self.totalHeadersSize, self.maxHeaders, self._bodyLimit
                )
                if found is None:
                    self._awaitRest()
                    return
                control = None if found == HAND_OVER else self._directControl(found)
                if control is None:
                    self._handOver()
                    return
                self._waiting = (found, control)
            head, control = self._waiting
            end = head.bodyStart + head.length
            if len(self._pending) < end:
                self._awaitRest()
                return
            self._waiting = None
            body, self._pending = bytes(self._pending[head.bodyStart : end]), self._pending[end:]
            requester = Requester(
                self._peerHost, head.fields.get(b"user-agent", b"").decode("latin-1")
            )
            outcome = control.answer(head.fields.get(b"soapaction"), body, requester)
            if isinstance(outcome, Answer):
                self._answer(outcome, head)
            else:
                self._busy = True
                self._deadlines.discard(self)
                self.transport.pauseProducing()
                outcome.addCallback(self._answerLater, head)
                outcome.addErrback(lambda f: self.log.failure("Answering a SOAP request failed", f))
                return
            self._requestStarted = False
        if not (self._pending or self._busy or self._closing):
            self._deadlines.set(self, self.timeOut or self.requestTimeout, self._idleTimeout)

    def _awaitRest(self) -> None:
        """
        Part of a request is here: it has C{requestTimeout} seconds from its
        first byte to arrive completely.
        """
        if not self._requestStarted:
            self._requestStarted = True
            self._deadlines.set(self, self.requestTimeout, self._requestTimeout)

    def _directControl(self, head: ControlHead) -> ControlResource | None:
        """
        @return: the control resource that answers C{head} directly, or
            L{None} if twisted.web must (unknown path, or a peer or C{Host}
            the LAN policy refuses: it answers with the refusal).
        """
        control: ControlResource | None = self._control(head.path)
        if control is None:
            return None
        host = head.fields.get(b"host")
        refusal = self._lan.refusalFor(self._peerHost, None if host is None else (host,), head.version)
        return control if refusal is None else None

    def _answer(self, answer: Answer, head: ControlHead) -> None:
        keepAlive = head.keepAlive
        self.transport.write(responseBytes(answer, head.version, keepAlive, _SERVER))
        if not keepAlive:
            self._close()

    def _answerLater(self, answer: Answer, head: ControlHead) -> None:
        if self._lost:
            self.log.info("Client {address} left before the answer", address=self._peerHost)
            return
        self._busy = False
        self._requestStarted = False
        self._answer(answer, head)
        if self._closing:
            self._deadlines.set(self, self.abortTimeout or 0, self.transport.abortConnection)
        else:
            self.transport.resumeProducing()
            self._serveDirect()

    def _close(self) -> None:
        """
        Close after writing what is written.  The deadline already set
        stays: when it passes (L{_idleTimeout}, L{_requestTimeout}) on a
        closing connection, the client did not even read, and the
        connection is aborted.
        """
        self._closing = True
        self._pending = b""
        self.transport.loseConnection()

    def _idleTimeout(self) -> None:
        if self._closing:
            self.transport.abortConnection()
            return
        self.log.info("Closed an idle connection from {peer}", peer=self._peerHost)
        self._close()
        self._deadlines.set(self, self.abortTimeout or 0, self.transport.abortConnection)

    def _requestTimeout(self) -> None:
        if self._closing:
            self.transport.abortConnection()
            return
        self._logTooSlow(self._peerHost)
        self.transport.write(_statusOnly(408))
        self._close()
        self._deadlines.set(self, self.abortTimeout or 0, self.transport.abortConnection)

    def _logTooSlow(self, peer: str) -> None:
        self.log.warn(
            "Dropped {peer}: no complete request within {timeout} seconds",
            peer=peer,
            timeout=self.requestTimeout,
        )

    def _handOver(self) -> None:
        """
        Give the connection to C{HTTPChannel} for good, with what is
        pending and what is left of this request's deadline.
        """
        left = self._deadlines.left(self) if self._requestStarted else self.requestTimeout
        self._deadlines.discard(self)
        self._direct = False
        pending, self._pending = bytes(self._pending), b""
        super().connectionMade()
        if pending:
            self._deadline = self.callLater(max(left or 0.0, 0.0), self._tooSlow)
            self.dataReceived(pending)

    def allContentReceived(self) -> None:
        self._cancelDeadline()
        super().allContentReceived()

    def connectionLost(self, reason: object) -> None:
        if self._direct:
            self._lost = True
            self._deadlines.discard(self)
            return
        self._cancelDeadline()
        super().connectionLost(reason)

    def refuse(self, code: int) -> None:
        """
        Answer C{code} without a body, ignore everything the client still
        sends and close the connection.
        """
        self._cancelDeadline()
        self._refusedConnection = True
        self.transport.write(_statusOnly(code))
        self.loseConnection()

    def _cancelDeadline(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _tooSlow(self) -> None:
        self._deadline = None
        peer = self.transport.getPeer()
        self._logTooSlow(getattr(peer, "host", str(peer)))
        self.refuse(408)
        # Like the idle timeout: abort if the client does not even read.
        self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)


class LANSite(Site):
    """
    The gatewayd site: L{LANChannel}s making L{LANRequest}s.

    @ivar lan: the L{LANPolicy} every request is checked against.
    @ivar bodyLimit: the largest request body accepted.
    @ivar requestTimeout: seconds a request may take to arrive.
    @ivar deadlines: the timeouts of the connections on the direct path.
    @ivar direct: whether new connections start on the direct path
        (L{gatewayd.upnp.direct}); with L{False} twisted.web serves every
        request (the tests run the SOAP suites both ways).
    """

    protocol = LANChannel  # type: ignore[assignment]
    requestFactory = LANRequest

    def __init__(
        self,
        resource: IResource,
        lan: LANPolicy,
        reactor: IReactorTime,
        bodyLimit: int,
        requestTimeout: float,
        idleTimeout: float,
        direct: bool = True,
    ) -> None:
        super().__init__(resource, timeout=idleTimeout, reactor=reactor)
        self.direct = direct
        self.deadlines = Deadlines(reactor)
        self.lan = lan
        self.bodyLimit = bodyLimit
        self.requestTimeout = requestTimeout

    _log = Logger()  # not "log": Site.log writes the access log

    def log(self, request: IRequest) -> None:
        """
        No access log: a gateway answers every LAN host's polling, and a
        line per request costs more than the request (faults, refusals and
        changes are logged where they happen).
        """

    def buildProtocol(self, addr: object) -> LANChannel | None:  # type: ignore[override]
        """
        Refuse connections from outside the LAN networks at once: Linux
        delivers packets for a LAN address that arrive through a WAN, so a
        WAN host must not even get an HTTP answer.
        """
        peer = str(getattr(addr, "host", ""))
        if not self.lan.peerAllowed(peer):
            self._log.warn("Refused an HTTP connection from {peer}: not on a LAN network", peer=peer)
            return None
        channel = super().buildProtocol(addr)
        channel.requestTimeout = self.requestTimeout
        control = getattr(self.resource, "control", None)
        if self.direct and control is not None:
            channel.startDirect(peer, control, self.lan, self.bodyLimit, self.deadlines)
        return channel


class StaticXML(Resource):
    """
    A document rendered once, served with its length.
    """

    isLeaf = True
    allowedMethods = (b"GET", b"HEAD")

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self._body = body

    def render_GET(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE)
        request.setHeader(b"content-length", b"%d" % (len(self._body),))
        return self._body


class RootDescription(Resource):
    """
    C{/rootDesc.xml}: the IGD:2 description of the current tree, or the
    IGD:1 view for the clients L{wantsIGD1} names, or the active-last
    variant for those L{wantsActiveLast} names.
    """

    isLeaf = True
    allowedMethods = (b"GET", b"HEAD")

    def __init__(self, descriptions: Descriptions) -> None:
        super().__init__()
        self._descriptions = descriptions

    def render_GET(self, request: IRequest) -> bytes:
        agent, args = request.getHeader(b"user-agent"), request.args or {}
        if wantsIGD1(agent, args):
            body = self._descriptions.description(1)
        else:
            body = self._descriptions.description(2, wantsActiveLast(agent, args))
        return StaticXML(body).render_GET(request)


class SCPDDocument(Resource):
    """
    One SCPD, with the current CONFIGID.
    """

    isLeaf = True
    allowedMethods = (b"GET", b"HEAD")

    def __init__(self, descriptions: Descriptions, serviceType: model.ServiceType) -> None:
        super().__init__()
        self._descriptions = descriptions
        self._serviceType = serviceType

    def render_GET(self, request: IRequest) -> bytes:
        return StaticXML(self._descriptions.scpd(self._serviceType)).render_GET(request)


class NotYetEvented(Resource):
    """
    An event URL until GENA exists: 405 for GET (C{Allow: SUBSCRIBE,
    UNSUBSCRIBE}), 501 for SUBSCRIBE and UNSUBSCRIBE.
    """

    isLeaf = True
    allowedMethods = (b"SUBSCRIBE", b"UNSUBSCRIBE")

    def __init__(self, service: model.Service) -> None:
        super().__init__()
        self._service = service

    def render_GET(self, request: IRequest) -> bytes:
        request.setResponseCode(405)
        request.setHeader(b"allow", b", ".join(self.allowedMethods))
        request.setHeader(b"content-length", b"0")
        return b""

    render_HEAD = render_GET

    def render_SUBSCRIBE(self, request: IRequest) -> bytes:
        request.setResponseCode(501)
        request.setHeader(b"content-length", b"0")
        return b""

    render_UNSUBSCRIBE = render_SUBSCRIBE


class Presentation(Resource):
    """
    C{/}, the presentationURL: the device's name, for humans.
    """

    isLeaf = True
    allowedMethods = (b"GET", b"HEAD")

    def __init__(self, root: model.Device) -> None:
        super().__init__()
        H = ElementMaker()
        page = H.html(
            H.head(H.title(root.friendlyName)),
            H.body(H.h1(root.friendlyName), H.p(f"{root.modelDescription} ({root.modelName})")),
        )
        self._body = etree.tostring(
            page, method="html", doctype="<!DOCTYPE html>", encoding="utf-8"
        )

    def render_GET(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-length", b"%d" % (len(self._body),))
        return self._body


class PathTable(Resource):
    """
    The root resource: whole paths mapped to leaf resources, everything else
    404.
    """

    def __init__(self, paths: dict[str, IResource], index: IResource) -> None:
        super().__init__()
        self._paths = {p.encode("ascii"): r for p, r in paths.items()}
        self._controls = {p: r for p, r in self._paths.items() if isinstance(r, ControlResource)}
        self._index = index

    def control(self, path: bytes) -> ControlResource | None:
        """
        @return: the control resource at exactly C{path}, if one is there
            (the direct path's lookup).
        """
        return self._controls.get(path)

    def getChild(self, name: bytes, request: IRequest) -> IResource:
        path = b"/" + b"/".join([name, *request.postpath])
        if path == b"/":
            found: IResource | None = self._index
        else:
            found = self._paths.get(path)
        if found is None:
            return notFound()
        request.prepath.extend(request.postpath)
        del request.postpath[:]
        return found

    def paths(self) -> list[str]:
        """
        @return: every served path, for logs and tests.
        """
        return sorted(p.decode("ascii") for p in self._paths)


def resourceTree(
    root: model.Device | Descriptions,
    eventResource: Callable[[model.Service], IResource] = NotYetEvented,
    authorize: Callable[[str, str, str], None] | None = None,
) -> PathTable:
    """
    Build the resource tree of C{root}: a fixed tree, or L{Descriptions}
    whose tree may change order (its services and paths stay the same);
    documents are rendered on first request, once per tree.

    @param eventResource: makes the resource of one service's event URL
        (GENA plugs in here).
    """
    descriptions = root if isinstance(root, Descriptions) else Descriptions(root)
    tree = descriptions.root()
    paths: dict[str, IResource] = {"/rootDesc.xml": RootDescription(descriptions)}
    for name, serviceType in serviceTypes(tree).items():
        for version in range(1, serviceType.version + 1):
            paths[f"/scpd/{name}{version}.xml"] = SCPDDocument(descriptions, serviceType.at(version))
    for service in tree.allServices():
        for path in (service.controlPath, service.eventPath):
            if path in paths:
                raise ValueError(f"{path} is used twice in the device tree")
        paths[service.controlPath] = ControlResource(service, authorize)
        paths[service.eventPath] = eventResource(service)
    return PathTable(paths, Presentation(tree))


def makeSite(
    root: model.Device | Descriptions,
    lan: LANPolicy,
    reactor: IReactorTime,
    *,
    bodyLimit: int = 65536,
    requestTimeout: float = 30.0,
    idleTimeout: float = 60.0,
    eventResource: Callable[[model.Service], IResource] = NotYetEvented,
    authorize: Callable[[str, str, str], None] | None = None,
    direct: bool = True,
) -> LANSite:
    """
    The HTTP site serving C{root} to the LAN.

    @param lan: checked for every request; L{LANHTTPService} keeps it in
        sync with the addresses it listens on.
    @param reactor: for timeouts (a L{Clock} in tests).
    @param bodyLimit: the largest request body (413 beyond).
    @param requestTimeout: seconds a whole request may take to arrive.
    @param idleTimeout: seconds an idle connection is kept.
    @param authorize: checks each action's requester (see L{ControlResource}).
    @param direct: answer plain SOAP POSTs on the direct path
        (L{gatewayd.upnp.direct}).
    """
    return LANSite(
        resourceTree(root, eventResource, authorize),
        lan,
        reactor,
        bodyLimit,
        requestTimeout,
        idleTimeout,
        direct,
    )


class LANHTTPService(Service):
    """
    Listens on every LAN IPv4 address with one site, all on one port.

    It keeps the site's L{LANPolicy} (if the site has one, as L{makeSite}'s
    has) in sync with the addresses it serves: the caller only calls
    L{setAddresses}.

    @ivar port: the bound port, once known (L{None} before the first bind
        when configured with port 0).
    """

    log = Logger()

    def __init__(self, reactor: IReactorTCP, site: Site, port: int) -> None:
        self._reactor = reactor
        self._site = site
        self._configuredPort = port
        self._boundPort: int | None = port or None
        self._wanted: tuple[LANAddress, ...] = ()
        self._listening: dict[str, IListeningPort] = {}

    @property
    def port(self) -> int | None:
        return self._boundPort

    def setAddresses(self, addresses: Sequence[LANAddress]) -> None:
        """
        Serve exactly on C{addresses} (IPv4): listen on new ones and stop
        listening on removed ones (once running).
        """
        self._wanted = tuple(addresses)
        if self.running:
            self._apply()

    def startService(self) -> None:
        super().startService()
        self._apply()

    def stopService(self) -> Deferred[None]:
        """
        Stop every listener.

        @return: a L{Deferred} that fires once none listens.
        """
        super().stopService()
        listening, self._listening = self._listening, {}
        self._syncPolicy()
        d = gatherResults([maybeDeferred(p.stopListening) for p in listening.values()])
        d.addCallback(lambda _: None)
        deadlines = getattr(self._site, "deadlines", None)
        if isinstance(deadlines, Deadlines):
            deadlines.stop()
        return d

    def _apply(self) -> None:
        wanted = {str(a.address.ip) for a in self._wanted}
        for ip in sorted(set(self._listening) - wanted):
            port = self._listening.pop(ip)
            self.log.info("Stopped HTTP on {address}:{port}", address=ip, port=self._boundPort)
            maybeDeferred(port.stopListening).addErrback(
                lambda f: self.log.failure("Stopping HTTP on {address}", f, address=ip)
            )
        for address in self._wanted:
            ip = str(address.address.ip)
            if ip in self._listening:
                continue
            try:
                listening = self._reactor.listenTCP(self._boundPort or 0, self._site, interface=ip)
            except Exception:
                self.log.failure(
                    "Cannot serve HTTP on {address}:{port}", address=ip, port=self._boundPort or 0
                )
                continue
            self._listening[ip] = listening
            if self._boundPort is None:
                self._boundPort = listening.getHost().port
                self.log.info("HTTP port {port} chosen", port=self._boundPort)
            self.log.info("Serving HTTP on {address}:{port}", address=ip, port=self._boundPort)
        self._syncPolicy()

    def _syncPolicy(self) -> None:
        policy = getattr(self._site, "lan", None)
        if isinstance(policy, LANPolicy):
            served = [a for a in self._wanted if str(a.address.ip) in self._listening]
            policy.setAddresses(served, self._boundPort or 0)
