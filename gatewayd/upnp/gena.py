# -*- test-case-name: tests.unit.test_gena -*-
"""
GENA eventing (UDA-essentials.md section 5): subscriptions on each
service's event URL, and one L{EventBus} that carries every evented state
variable of every service to its subscribers as NOTIFY requests.

Domain code only says what changed (L{EventBus.publish}); the bus formats
the values, coalesces them per subscriber, numbers the messages and
delivers them.

Decisions:
  - Durations: C{TIMEOUT: Second-N} is clamped into C{[minTimeout,
    maxTimeout]} (by default 1800..86400: UDA says the actual duration
    SHOULD be at least 1800 s, as miniupnpd does); C{infinite}, a missing
    or an unparseable TIMEOUT gets C{defaultTimeout} (1800).  A
    subscription is forgotten the moment it expires.
  - Renewal and UNSUBSCRIBE must come from the address that subscribed;
    from anywhere else the SID is unknown (412), so a LAN host that saw a
    SID cannot cancel or keep alive another host's subscription.
  - CallStranger (CVE-2020-12695, WANIPConnection-2.md section 10): every
    CALLBACK URL must be C{http://}, its host the literal IPv4 address of the
    subscribing TCP peer, which must be on a LAN network, and its port at
    least C{minCallbackPort} (1024); at most L{MAX_CALLBACKS} URLs.  Anything
    else is 412 and a log line.  A NOTIFY never follows a redirect.
  - SEQ is taken when a message is sent: 0 for the initial event, then +1
    per message, 4294967295 wrapping to 1.  A message that fails keeps its
    number, so a lost message shows up as a gap (UDA's intent).
  - Delivery: one message at a time per subscriber, each URL of its
    CALLBACK tried in order until one answers 2xx; changes published
    meanwhile are merged (latest value per variable) into the next message.
    The values of a message that fails are carried into the next one, which
    is sent after C{retryDelay}; after C{maxFailures} (3) failed messages in
    a row the subscription is dropped.  Each attempt is bounded by
    C{notifyTimeout} (30 s, UDA's answer time) for connecting, the answer and
    its (capped) body.
  - Limits: C{maxSubscriptions} in total and C{maxPerClient} per
    subscribing address; beyond them SUBSCRIBE gets 503 and a log line.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address
from random import Random
from typing import Any, Callable, Mapping, Sequence

from lxml import etree
from lxml.builder import ElementMaker
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IRequest, IResponse
from twisted.web.resource import IResource, Resource
from zope.interface import implementer

from gatewayd.upnp import model

EVENT_NS = "urn:schemas-upnp-org:event-1-0"
CONTENT_TYPE = b'text/xml; charset="utf-8"'

#: The largest SEQ; the one after it is 1 (0 is the initial event's).
MAX_SEQ = 0xFFFFFFFF

#: The most CALLBACK URLs one subscription may give.
MAX_CALLBACKS = 4

#: The longest CALLBACK header accepted (all URLs together).
MAX_CALLBACK_HEADER = 1024

#: The most bytes of a subscriber's answer body read (and thrown away);
#: beyond that the connection is closed.
MAX_ANSWER_BODY = 16384

_E = ElementMaker(namespace=EVENT_NS, nsmap={"e": EVENT_NS})
_PLAIN = ElementMaker()

_TIMEOUT = re.compile(r"second-(?P<seconds>[0-9]{1,10})", re.IGNORECASE)
_CALLBACK_LIST = re.compile(r"(?:[ \t]*<(?P<url>[^<>]*)>)+[ \t]*")
_CALLBACK_ITEM = re.compile(r"<(?P<url>[^<>]*)>")
_CALLBACK_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://"
    r"(?P<host>\[[^\]/]*\]|[^/:?#@\[\]]*)"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<path>/[!-~]*)?"
)


class Refusal(Exception):
    """
    Answer an event URL request with a bare HTTP status.

    @ivar code: the status.
    @ivar why: for the log.
    """

    def __init__(self, code: int, why: str) -> None:
        super().__init__(code, why)
        self.code = code
        self.why = why


@dataclass(frozen=True)
class Subscribe:
    """
    A new subscription: its delivery URLs and requested duration.

    @ivar callbacks: the CALLBACK URLs, as sent, in order.
    @ivar timeout: seconds requested, or L{None} (none, C{infinite}, or
        unparseable).
    """

    callbacks: tuple[str, ...]
    timeout: int | None


@dataclass(frozen=True)
class Renew:
    sid: str
    timeout: int | None


@dataclass(frozen=True)
class Unsubscribe:
    sid: str


def _single(headers: Headers, name: bytes) -> str | None:
    """
    @return: the value of header C{name}, stripped, or L{None} if absent.
    @raise Refusal: 400 if it is given twice or is not ASCII.
    """
    values = headers.getRawHeaders(name)
    if values is None:
        return None
    if len(values) != 1:
        raise Refusal(400, f"{name.decode('ascii').upper()} given {len(values)} times")
    try:
        return values[0].decode("ascii").strip()
    except UnicodeDecodeError:
        raise Refusal(400, f"{name.decode('ascii').upper()} is not ASCII") from None


def parseTimeout(value: str | None) -> int | None:
    """
    Parse a C{TIMEOUT} header.

    @return: the seconds of C{Second-N} (any case), or L{None} for a missing
        header, C{Second-infinite} (deprecated in UDA 1.1: as if absent) and
        anything unparseable (lenient: the default applies).
    """
    if value is None:
        return None
    match = _TIMEOUT.fullmatch(value)
    if match is None:
        return None
    return int(match["seconds"])


def parseCallbacks(value: str) -> tuple[str, ...]:
    """
    Split a C{CALLBACK} header: one or more URLs, each in angle brackets.

    @raise Refusal: 412 for an empty, malformed or over-long list.
    """
    if len(value) > MAX_CALLBACK_HEADER:
        raise Refusal(412, f"CALLBACK longer than {MAX_CALLBACK_HEADER} characters")
    if _CALLBACK_LIST.fullmatch(value) is None:
        raise Refusal(412, f"CALLBACK {value[:100]!r} is not a list of <URL>s")
    urls = tuple(m["url"].strip() for m in _CALLBACK_ITEM.finditer(value))
    if len(urls) > MAX_CALLBACKS:
        raise Refusal(412, f"{len(urls)} CALLBACK URLs, at most {MAX_CALLBACKS} accepted")
    return urls


def parseRequest(method: bytes, headers: Headers) -> Subscribe | Renew | Unsubscribe:
    """
    Read a SUBSCRIBE or UNSUBSCRIBE request's headers (UDA-essentials.md
    sections 5.1-5.3); what needs state (SIDs, callbacks against the peer,
    limits) is checked by the bus.

    @raise Refusal: 400 for SID with NT or CALLBACK (or a repeated header),
        412 for a missing/invalid NT or CALLBACK or a missing SID.
    """
    sid = _single(headers, b"sid")
    nt = _single(headers, b"nt")
    callback = _single(headers, b"callback")
    timeout = parseTimeout(_single(headers, b"timeout"))
    if method == b"UNSUBSCRIBE":
        if nt is not None or callback is not None:
            raise Refusal(400, "UNSUBSCRIBE with NT or CALLBACK")
        if not sid:
            raise Refusal(412, "UNSUBSCRIBE without SID")
        return Unsubscribe(sid)
    if sid is not None:
        if nt is not None or callback is not None:
            raise Refusal(400, "SID together with NT or CALLBACK")
        if not sid:
            raise Refusal(412, "empty SID")
        return Renew(sid, timeout)
    if nt != "upnp:event":
        raise Refusal(412, "NT missing or not upnp:event" if nt is None else f"NT {nt[:40]!r}")
    if callback is None:
        raise Refusal(412, "no CALLBACK")
    return Subscribe(parseCallbacks(callback), timeout)


@dataclass(frozen=True)
class CallbackURL:
    """
    A checked delivery URL.

    @ivar url: as C{IAgent.request} takes it.
    @ivar host: the IPv4 address.
    @ivar port: the TCP port.
    """

    url: bytes
    host: str
    port: int


def checkCallback(
    url: str, peer: str, peerAllowed: Callable[[str], bool], minPort: int
) -> CallbackURL:
    """
    Accept a CALLBACK URL only if it points back to the subscriber itself
    (CallStranger, CVE-2020-12695).

    @param peer: the subscribing TCP peer's address.
    @param peerAllowed: whether an address is on a LAN network.
    @param minPort: the lowest port accepted.
    @raise Refusal: 412 with the reason.
    """
    match = _CALLBACK_URL.fullmatch(url)
    if match is None:
        raise Refusal(412, f"CALLBACK URL {url[:100]!r} is not a URL")
    if match["scheme"].lower() != "http":
        raise Refusal(412, f"CALLBACK URL {url[:100]!r} is not http://")
    host = match["host"]
    try:
        address = ip_address(host)
    except ValueError:
        raise Refusal(412, f"CALLBACK host {host[:64]!r} is not an IPv4 address") from None
    if not isinstance(address, IPv4Address):  # pragma: no cover - defence in depth
        raise Refusal(412, f"CALLBACK host {host[:64]!r} is not an IPv4 address")
    try:
        source = ip_address(peer)
    except ValueError:
        raise Refusal(412, f"the subscriber's address {peer!r} is not an IP address") from None
    mapped = getattr(source, "ipv4_mapped", None)
    if address != (mapped or source):
        raise Refusal(412, f"CALLBACK host {host} is not the subscriber's address {peer}")
    if not peerAllowed(str(address)):
        raise Refusal(412, f"CALLBACK host {host} is not on a LAN network")
    port = int(match["port"]) if match["port"] else 80
    if not minPort <= port <= 65535:
        raise Refusal(412, f"CALLBACK port {port} is outside {minPort}-65535")
    path = match["path"] or "/"
    return CallbackURL(f"http://{address}:{port}{path}".encode("ascii"), str(address), port)


def propertySet(values: Sequence[tuple[str, str]]) -> bytes:
    """
    @return: the NOTIFY body: one C{e:property} per variable, in the given
        order, the variable element unqualified, its value escaped.
    """
    document = _E.propertyset(*(_E.property(_PLAIN(name, value)) for name, value in values))
    return etree.tostring(document, xml_declaration=True, encoding="utf-8")


def nextSeq(seq: int) -> int:
    """
    @return: the SEQ after C{seq}: +1, 4294967295 wrapping to 1.
    """
    return 1 if seq >= MAX_SEQ else seq + 1


@implementer(IBodyProducer)
class _BytesProducer:
    """
    A request body of known bytes, written at once (no cooperator, no global
    reactor).
    """

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _Discard(Protocol):
    """
    Reads and drops an answer body, closing the connection beyond
    L{MAX_ANSWER_BODY}; C{done} fires when the body ends either way.
    """

    def __init__(self) -> None:
        self.received = 0
        self.done: Deferred[None] = Deferred(lambda d: self._abort())

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > MAX_ANSWER_BODY:
            self._abort()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.done.called:
            self.done.callback(None)


def _discardBody(response: IResponse) -> Deferred[None]:
    if response.length == 0:
        return succeed(None)
    discard = _Discard()
    response.deliverBody(discard)
    return discard.done


class _QuietPool(HTTPConnectionPool):
    """
    A pool whose connection factories do not log "Starting factory" and
    "Stopping factory" for every NOTIFY.
    """

    class _factory(HTTPConnectionPool._factory):  # type: ignore[name-defined,misc]
        noisy = False


def notifyAgent(reactor: Any, connectTimeout: float = 5.0) -> IAgent:
    """
    @return: the agent the bus should send NOTIFYs with: a plain
        L{Agent} (it never follows a redirect), one connection per message,
        connecting for at most C{connectTimeout} seconds, and quiet in the
        log.
    """
    return Agent(reactor, connectTimeout=connectTimeout, pool=_QuietPool(reactor, persistent=False))


class DeliveryFailed(Exception):
    """
    No CALLBACK URL of a subscription took a message.
    """


@dataclass(eq=False)
class _Subscription:
    """
    One subscription and its delivery state.

    @ivar seq: the SEQ of the next message.
    @ivar pending: values to send in the next message (latest per
        variable).
    @ivar busy: the message in flight, or the delayed retry after a failure.
    @ivar ready: the initial event may go (the SUBSCRIBE answer is out).
    @ivar failures: failed messages in a row.
    """

    sid: str
    service: model.Service
    peer: str
    callbacks: tuple[CallbackURL, ...]
    timeout: int
    expiry: IDelayedCall | None = None
    seq: int = 0
    pending: dict[str, str] = field(default_factory=dict)
    busy: Deferred[None] | IDelayedCall | None = None
    start: IDelayedCall | None = None
    ready: bool = False
    failures: int = 0


class EventResource(Resource):
    """
    The event URL of one service: SUBSCRIBE (new or renewal) and
    UNSUBSCRIBE; every other method is 405 with C{Allow: SUBSCRIBE,
    UNSUBSCRIBE}.
    """

    isLeaf = True
    allowedMethods = (b"SUBSCRIBE", b"UNSUBSCRIBE")

    def __init__(self, bus: "EventBus", service: model.Service) -> None:
        super().__init__()
        self._bus = bus
        self._service = service

    def render(self, request: IRequest) -> bytes:
        """
        SUBSCRIBE and UNSUBSCRIBE go to the bus; any other method is 405
        with C{Allow} and no body.
        """
        if request.method in self.allowedMethods:
            return self._bus._answer(self._service, request)
        request.setResponseCode(405)
        request.setHeader(b"allow", b", ".join(self.allowedMethods))
        request.setHeader(b"content-length", b"0")
        return b""


def _peer(request: IRequest) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", address))


class EventBus(Service):
    """
    Every GENA subscription of every service, and delivery of their events.

    Plug L{resource} into L{gatewayd.upnp.http.makeSite} as
    C{eventResource}; report changes with L{publish}; call L{endService}
    when a service goes away.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        agent: IAgent,
        random: Random,
        *,
        peerAllowed: Callable[[str], bool],
        maxSubscriptions: int = 1024,
        maxPerClient: int = 32,
        defaultTimeout: int = 1800,
        minTimeout: int = 1800,
        maxTimeout: int = 86400,
        minCallbackPort: int = 1024,
        notifyTimeout: float = 30.0,
        retryDelay: float = 10.0,
        maxFailures: int = 3,
    ) -> None:
        """
        @param reactor: for timers (a L{Clock} in tests).
        @param agent: sends the NOTIFY requests: L{notifyAgent} (a plain
            L{twisted.web.client.Agent} with a C{connectTimeout}; never one
            that follows redirects).
        @param random: makes the SIDs (use L{random.SystemRandom}: a SID
            lets its holder renew or cancel a subscription).
        @param peerAllowed: whether an address is on a LAN network
            (L{gatewayd.upnp.http.LANPolicy.peerAllowed}).
        @param maxSubscriptions: subscriptions in total (503 beyond).
        @param maxPerClient: subscriptions per subscribing address (503
            beyond).
        @param defaultTimeout: seconds granted without a usable TIMEOUT.
        @param minTimeout: the shortest duration granted.
        @param maxTimeout: the longest duration granted.
        @param minCallbackPort: the lowest CALLBACK port accepted.
        @param notifyTimeout: seconds one delivery attempt may take.
        @param retryDelay: seconds before a failed message's values are sent
            again.
        @param maxFailures: failed messages in a row that end a
            subscription.
        """
        if not minTimeout <= defaultTimeout <= maxTimeout:
            raise ValueError("defaultTimeout must lie within minTimeout..maxTimeout")
        self._reactor = reactor
        self._agent = agent
        self._random = random
        self._peerAllowed = peerAllowed
        self._maxSubscriptions = maxSubscriptions
        self._maxPerClient = maxPerClient
        self._defaultTimeout = defaultTimeout
        self._minTimeout = minTimeout
        self._maxTimeout = maxTimeout
        self._minCallbackPort = minCallbackPort
        self._notifyTimeout = notifyTimeout
        self._retryDelay = retryDelay
        self._maxFailures = maxFailures
        self._subscriptions: dict[str, _Subscription] = {}
        self._byService: dict[str, dict[str, _Subscription]] = {}
        self._perClient: dict[str, int] = {}
        self._ended: set[str] = set()
        self._lastBody: tuple[tuple[tuple[str, str], ...], bytes] = ((), b"")

    # The HTTP side.

    def resource(self, service: model.Service) -> IResource:
        """
        @return: the resource of C{service}'s event URL.
        """
        self._ended.discard(service.eventPath)
        return EventResource(self, service)

    def subscriptions(self, service: model.Service | None = None) -> int:
        """
        @return: how many subscriptions there are (to C{service}, or in
            total), for status pages and the manhole.
        """
        if service is None:
            return len(self._subscriptions)
        return len(self._byService.get(service.eventPath, {}))

    def _answer(self, service: model.Service, request: IRequest) -> bytes:
        peer = _peer(request)
        try:
            parsed = parseRequest(request.method, request.requestHeaders)
            if isinstance(parsed, Subscribe):
                sub = self._subscribe(service, peer, parsed)
            elif isinstance(parsed, Renew):
                sub = self._renew(service, peer, parsed)
            else:
                self._unsubscribe(service, peer, parsed)
                sub = None
        except Refusal as e:
            (self.log.warn if e.code in (412, 503) else self.log.info)(
                "Refused {method} {path} from {peer} with {code}: {why}",
                method=request.method.decode("latin-1"),
                path=service.eventPath,
                peer=peer,
                code=e.code,
                why=e.why,
            )
            request.setResponseCode(e.code)
            request.setHeader(b"content-length", b"0")
            return b""
        if sub is not None:
            request.setHeader(b"sid", sub.sid.encode("ascii"))
            request.setHeader(b"timeout", b"Second-%d" % (sub.timeout,))
            if isinstance(parsed, Subscribe):
                request.notifyFinish().addCallbacks(
                    lambda _: self._answered(sub), lambda _: self._answerLost(sub)
                )
        request.setHeader(b"content-length", b"0")
        return b""

    def _grant(self, requested: int | None) -> int:
        if requested is None:
            return self._defaultTimeout
        return max(self._minTimeout, min(self._maxTimeout, requested))

    def _subscribe(self, service: model.Service, peer: str, request: Subscribe) -> _Subscription:
        if not self.running:
            raise Refusal(503, "events are not running")
        if service.eventPath in self._ended:
            raise Refusal(412, "this service is gone")
        if not service.type.eventedVariables:
            raise Refusal(412, "this service has no evented variables")
        callbacks = tuple(
            checkCallback(url, peer, self._peerAllowed, self._minCallbackPort)
            for url in request.callbacks
        )
        if len(self._subscriptions) >= self._maxSubscriptions:
            raise Refusal(503, f"{len(self._subscriptions)} subscriptions, the limit")
        if self._perClient.get(peer, 0) >= self._maxPerClient:
            raise Refusal(503, f"{self._maxPerClient} subscriptions from {peer}, the limit per client")
        sid = self._newSID()
        sub = _Subscription(sid, service, peer, callbacks, self._grant(request.timeout))
        sub.expiry = self._reactor.callLater(sub.timeout, self._expire, sub)
        self._subscriptions[sid] = sub
        self._byService.setdefault(service.eventPath, {})[sid] = sub
        self._perClient[peer] = self._perClient.get(peer, 0) + 1
        self.log.info(
            "{peer} subscribed to {path} for {timeout} s as {sid}",
            peer=peer,
            path=service.eventPath,
            timeout=sub.timeout,
            sid=sid,
        )
        return sub

    def _newSID(self) -> str:
        for _ in range(16):
            sid = f"uuid:{uuid.UUID(int=self._random.getrandbits(128), version=4)}"
            if sid not in self._subscriptions:
                return sid
        raise Refusal(503, "no unused SID")  # pragma: no cover - a broken random source

    def _find(self, service: model.Service, peer: str, sid: str) -> _Subscription:
        sub = self._subscriptions.get(sid)
        if sub is None or sub.service.eventPath != service.eventPath or sub.peer != peer:
            raise Refusal(412, f"unknown SID {sid[:64]!r}")
        return sub

    def _renew(self, service: model.Service, peer: str, request: Renew) -> _Subscription:
        sub = self._find(service, peer, request.sid)
        sub.timeout = self._grant(request.timeout)
        if sub.expiry is not None and sub.expiry.active():
            sub.expiry.reset(sub.timeout)
        else:  # pragma: no cover - an expired subscription is forgotten
            sub.expiry = self._reactor.callLater(sub.timeout, self._expire, sub)
        self.log.debug("{sid} renewed for {timeout} s", sid=sub.sid, timeout=sub.timeout)
        return sub

    def _unsubscribe(self, service: model.Service, peer: str, request: Unsubscribe) -> None:
        sub = self._find(service, peer, request.sid)
        self.log.info("{peer} unsubscribed {sid}", peer=peer, sid=sub.sid)
        self._forget(sub)

    def _answered(self, sub: _Subscription) -> None:
        """
        The SUBSCRIBE answer is written: the initial event follows on the
        next reactor turn.
        """
        if self._subscriptions.get(sub.sid) is sub:
            sub.start = self._reactor.callLater(0, self._initial, sub)

    def _answerLost(self, sub: _Subscription) -> None:
        if self._subscriptions.get(sub.sid) is sub:
            self.log.info("{sid}: the subscriber left before its answer; forgotten", sid=sub.sid)
            self._forget(sub)

    def _initial(self, sub: _Subscription) -> None:
        sub.start = None
        try:
            current = sub.service.implementation.stateVariables()
        except Exception:
            self.log.failure("{path}: reading the evented variables failed", path=sub.service.eventPath)
            current = {}
        values = self._format(sub.service, current, strict=False)
        values.update(sub.pending)
        sub.pending = values
        sub.ready = True
        self._send(sub)

    def _expire(self, sub: _Subscription) -> None:
        sub.expiry = None
        self.log.info("{sid} ({peer}, {path}) expired", sid=sub.sid, peer=sub.peer, path=sub.service.eventPath)
        self._forget(sub)

    def _forget(self, sub: _Subscription) -> None:
        """
        Forget C{sub}: no timer, no message in flight, nothing more sent.
        """
        if self._subscriptions.get(sub.sid) is not sub:
            return
        del self._subscriptions[sub.sid]
        byService = self._byService.get(sub.service.eventPath, {})
        byService.pop(sub.sid, None)
        if not byService:
            self._byService.pop(sub.service.eventPath, None)
        left = self._perClient.get(sub.peer, 1) - 1
        if left:
            self._perClient[sub.peer] = left
        else:
            self._perClient.pop(sub.peer, None)
        for call in (sub.expiry, sub.start):
            if call is not None and call.active():
                call.cancel()
        sub.expiry = sub.start = None
        busy, sub.busy = sub.busy, None
        if isinstance(busy, Deferred):
            busy.cancel()
        elif busy is not None and busy.active():
            busy.cancel()
        sub.pending = {}

    # The domain side.

    def _format(self, service: model.Service, changes: Mapping[str, object], strict: bool) -> dict[str, str]:
        values: dict[str, str] = {}
        evented = {v.name: v for v in service.type.eventedVariables}
        for name, value in changes.items():
            variable = evented.get(name)
            if variable is None:
                if strict:
                    self.log.error(
                        "{path}: {name} is not an evented variable; not sent",
                        path=service.eventPath,
                        name=name,
                    )
                continue
            values[name] = model.formatValue(variable.dataType, value)
        return values

    def publish(self, service: model.Service, changes: Mapping[str, object]) -> None:
        """
        Tell C{service}'s subscribers that the variables in C{changes}
        changed together (they go out in one message): each value is
        formatted by its variable's data type.  A name that is not an
        evented variable of the service is a programming error: logged,
        not sent.
        """
        subs = self._byService.get(service.eventPath)
        if not subs:
            if self.running:
                self._format(service, changes, strict=True)
            return
        values = self._format(service, changes, strict=True)
        if not values:
            return
        for sub in list(subs.values()):
            sub.pending.update(values)
            self._send(sub)

    def observer(self, service: model.Service) -> Callable[[str, object], None]:
        """
        @return: a C{(name, value)} observer (as the connection and
            WANCommonInterfaceConfig take) that publishes each change of
            C{service}.
        """
        return lambda name, value: self.publish(service, {name: value})

    def endService(self, service: model.Service) -> None:
        """
        C{service} is gone (its WAN was removed): forget its subscriptions
        and refuse new ones.
        """
        self._ended.add(service.eventPath)
        subs = self._byService.get(service.eventPath, {})
        if subs:
            self.log.info(
                "{path} is gone: {count} subscription(s) ended", path=service.eventPath, count=len(subs)
            )
        for sub in list(subs.values()):
            self._forget(sub)

    def stopService(self) -> None:
        """
        Forget every subscription: no timer and no NOTIFY left.
        """
        super().stopService()
        for sub in list(self._subscriptions.values()):
            self._forget(sub)

    # Delivery.

    def _send(self, sub: _Subscription) -> None:
        if sub.busy is not None or not sub.ready or not sub.pending:
            return
        order = [v.name for v in sub.service.type.eventedVariables]
        values = tuple((name, sub.pending[name]) for name in order if name in sub.pending)
        sub.pending = {}
        seq, sub.seq = sub.seq, nextSeq(sub.seq)
        if self._lastBody[0] != values:
            self._lastBody = (values, propertySet(values))
        body = self._lastBody[1]
        d = Deferred.fromCoroutine(self._deliver(sub, seq, body))
        sub.busy = d
        d.addCallbacks(self._delivered, self._failed, (sub,), None, (sub, values, seq))

    async def _deliver(self, sub: _Subscription, seq: int, body: bytes) -> None:
        headers = {
            b"content-type": [CONTENT_TYPE],
            b"nt": [b"upnp:event"],
            b"nts": [b"upnp:propchange"],
            b"sid": [sub.sid.encode("ascii")],
            b"seq": [b"%d" % (seq,)],
        }
        why = "no CALLBACK URL"
        for callback in sub.callbacks:
            attempt = Deferred.fromCoroutine(self._attempt(callback.url, Headers(headers), body))
            attempt.addTimeout(self._notifyTimeout, self._reactor)
            try:
                code = await attempt
            except CancelledError:
                raise
            except Exception as e:
                why = f"{callback.url.decode('ascii')}: {e.__class__.__name__}: {e}"
                continue
            if 200 <= code < 300:
                return
            why = f"{callback.url.decode('ascii')} answered {code}"
            break
        raise DeliveryFailed(why)

    async def _attempt(self, url: bytes, headers: Headers, body: bytes) -> int:
        response = await self._agent.request(b"NOTIFY", url, headers, _BytesProducer(body))
        await _discardBody(response)
        return response.code

    def _delivered(self, _: None, sub: _Subscription) -> None:
        sub.busy = None
        sub.failures = 0
        self._send(sub)

    def _failed(self, failure: Failure, sub: _Subscription, values: tuple[tuple[str, str], ...], seq: int) -> None:
        if failure.check(CancelledError) and sub.busy is None:
            return  # forgotten while in flight
        sub.busy = None
        if self._subscriptions.get(sub.sid) is not sub:
            return
        sub.failures += 1
        why = failure.getErrorMessage() if failure.check(DeliveryFailed) else repr(failure.value)
        if not failure.check(DeliveryFailed):
            self.log.failure("{sid}: delivering SEQ {seq} failed", failure, sid=sub.sid, seq=seq)
        if sub.failures >= self._maxFailures:
            self.log.warn(
                "Dropped {sid} ({peer}, {path}) after {count} failed NOTIFYs in a row; last: {why}",
                sid=sub.sid,
                peer=sub.peer,
                path=sub.service.eventPath,
                count=sub.failures,
                why=why,
            )
            self._forget(sub)
            return
        self.log.info(
            "NOTIFY SEQ {seq} to {sid} ({peer}) failed ({count} in a row), retrying in {delay} s: {why}",
            seq=seq,
            sid=sub.sid,
            peer=sub.peer,
            count=sub.failures,
            delay=self._retryDelay,
            why=why,
        )
        carried = dict(values)
        carried.update(sub.pending)
        sub.pending = carried
        sub.busy = self._reactor.callLater(self._retryDelay, self._retry, sub)

    def _retry(self, sub: _Subscription) -> None:
        sub.busy = None
        self._send(sub)
