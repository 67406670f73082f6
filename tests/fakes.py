"""
Verified fakes of gatewayd's interfaces, for any test to use.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

from lxml import etree
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse
from zope.interface import implementer

from gatewayd.interfaces import INetlink, InterfaceState, LANAddress
from gatewayd.link.netlink import UnknownInterface
from gatewayd.upnp.ssdp import IPacketInfoTransport


@implementer(INetlink)
class FakeNetlink:
    """
    An L{INetlink} whose interfaces are whatever the test says, like a
    started L{gatewayd.link.netlink.NetlinkService}: set them with
    L{setState} and L{remove}; watchers are told synchronously, and only
    when a state changes (counters aside, as with the real service).
    """

    def __init__(self, states: Sequence[InterfaceState] = ()) -> None:
        self._states: dict[str, InterfaceState] = {s.name: s for s in states}
        self._watchers: dict[str, list[Callable[[InterfaceState | None], None]]] = {}

    def setState(self, state: InterfaceState) -> None:
        """
        Make C{state} the state of the interface C{state.name} (adding it if
        new) and tell its watchers if anything but the counters changed.
        """
        old = self._states.get(state.name)
        self._states[state.name] = state
        if old is None or replace(old, stats={}) != replace(state, stats={}):
            self._tell(state.name, state)

    def remove(self, name: str) -> None:
        """
        Make the interface C{name} disappear; its watchers are told L{None}.
        """
        if self._states.pop(name, None) is not None:
            self._tell(name, None)

    def watching(self, name: str) -> int:
        """
        @return: how many watchers C{name} has.
        """
        return len(self._watchers.get(name, ()))

    def _tell(self, name: str, state: InterfaceState | None) -> None:
        for observer in list(self._watchers.get(name, ())):
            observer(state)

    # INetlink

    def interfaceState(self, name: str) -> InterfaceState | None:
        return self._states.get(name)

    def watchInterface(
        self, name: str, observer: Callable[[InterfaceState | None], None]
    ) -> Callable[[], None]:
        self._watchers.setdefault(name, []).append(observer)
        if (state := self._states.get(name)) is not None:
            observer(state)

        def unwatch() -> None:
            if observer in self._watchers.get(name, []):
                self._watchers[name].remove(observer)

        return unwatch

    # The rest of NetlinkService's reading API.

    def interfaces(self) -> dict[str, InterfaceState]:
        return dict(self._states)

    def whenReady(self) -> Deferred[None]:
        """
        @return: a L{Deferred} that has fired: the fake is always ready.
        """
        return succeed(None)

    def lanAddresses(self, names: Sequence[str]) -> list[LANAddress]:
        """
        @return: the IPv4 addresses of the interfaces C{names} that exist
            and are up, in the order of C{names} and then of the addresses.
        """
        return [
            LANAddress(name, state.index, address)
            for name in dict.fromkeys(names)
            if (state := self._states.get(name)) is not None and state.up
            for address in state.addresses
        ]

    def statistics(self, name: str) -> Deferred[Mapping[str, int]]:
        """
        @return: a L{Deferred} that has fired with the counters of C{name}
            as last set, or failed with L{UnknownInterface}.
        """
        if (state := self._states.get(name)) is None:
            return fail(UnknownInterface(name))
        return succeed(dict(state.stats))


@implementer(IPacketInfoTransport)
class FakePacketInfoTransport:
    """
    Records what is sent and which groups are joined.
    """

    def __init__(self, port: int = 1900) -> None:
        self.port = port
        self.sent: list[tuple[bytes, tuple[str, int], int, str]] = []
        self.groups: set[tuple[str, int, str]] = set()
        self.listening = True
        self.failOn: set[int] = set()

    def sendFrom(self, datagram, addr, ifindex, source):
        if ifindex in self.failOn:
            raise OSError(19, "No such device")
        self.sent.append((datagram, addr, ifindex, source))

    def joinGroupOn(self, group, ifindex, address):
        self.groups.add((group, ifindex, address))

    def leaveGroupOn(self, group, ifindex, address):
        self.groups.remove((group, ifindex, address))

    def getHost(self):
        from twisted.internet.address import IPv4Address

        return IPv4Address("UDP", "0.0.0.0", self.port)

    def stopListening(self):
        self.listening = False


#: The namespace of GENA property sets.
EVENT = "{urn:schemas-upnp-org:event-1-0}"


class FakeResponse:
    """
    An answer to a NOTIFY; with C{body}, it is delivered in chunks to the
    body protocol and C{aborted} tells whether the reader gave up.
    """

    version = (b"HTTP", 1, 1)
    request = None
    previousResponse = None

    def __init__(self, code: int, headers: Headers | None = None, body: bytes = b"") -> None:
        self.code = code
        self.phrase = b"Whatever"
        self.headers = headers or Headers()
        self.length = len(body)
        self._body = body
        self.aborted = False

    def deliverBody(self, protocol: Any) -> None:
        response = self

        class Transport:
            def stopProducing(self) -> None:
                response.aborted = True

        protocol.makeConnection(Transport())
        for start in range(0, len(self._body), 4096):
            if self.aborted:
                break
            protocol.dataReceived(self._body[start : start + 4096])
        protocol.connectionLost(Failure(ConnectionError("done")))

    def setPreviousResponse(self, response: IResponse) -> None:
        pass


@dataclass
class Sent:
    """
    One NOTIFY the bus sent, for the test to answer, fail or leave hanging.
    """

    method: bytes
    url: bytes
    headers: Headers
    body: bytes
    deferred: Deferred[Any]
    cancelled: list[bool] = field(default_factory=list)

    def header(self, name: bytes) -> bytes:
        values = self.headers.getRawHeaders(name)
        assert values is not None and len(values) == 1, (name, values)
        return values[0]

    @property
    def seq(self) -> int:
        return int(self.header(b"seq"))

    @property
    def sid(self) -> bytes:
        return self.header(b"sid")

    def values(self) -> list[tuple[str, str]]:
        root = etree.fromstring(self.body)
        assert root.tag == f"{EVENT}propertyset", root.tag
        out = []
        for prop in root:
            assert prop.tag == f"{EVENT}property", prop.tag
            (variable,) = prop
            out.append((variable.tag, variable.text or ""))
        return out

    def answer(self, code: int = 200, body: bytes = b"", headers: Headers | None = None) -> FakeResponse:
        response = FakeResponse(code, headers, body)
        self.deferred.callback(response)
        return response

    def fail(self) -> None:
        self.deferred.errback(ConnectionRefusedError("refused"))


@implementer(IAgent)
class FakeAgent:
    """
    Records every request; each stays unanswered until the test says.
    """

    def __init__(self) -> None:
        self.sent: list[Sent] = []

    def request(
        self, method: bytes, uri: bytes, headers: Headers | None = None, bodyProducer: Any = None
    ) -> Deferred[Any]:
        chunks: list[bytes] = []

        class Consumer:
            def write(self, data: bytes) -> None:
                chunks.append(data)

        if bodyProducer is not None:
            bodyProducer.startProducing(Consumer())
            assert bodyProducer.length == len(b"".join(chunks))
        cancelled: list[bool] = []
        d: Deferred[Any] = Deferred(lambda d: cancelled.append(True))
        self.sent.append(Sent(method, uri, headers or Headers(), b"".join(chunks), d, cancelled))
        return d

    def waiting(self) -> list[Sent]:
        return [s for s in self.sent if not s.deferred.called]

    def to(self, url: bytes) -> list[Sent]:
        return [s for s in self.sent if s.url == url]


from gatewayd.interfaces import INetlinkWriter  # noqa: E402


@implementer(INetlink, INetlinkWriter)
class FakeKernel(FakeNetlink):
    """
    A L{FakeNetlink} that also takes L{INetlinkWriter} requests, like a
    started L{gatewayd.link.netlink.NetlinkService}: link state, MTU and
    addresses change the interface states (watchers are told); routes and
    rules are kept in L{routes} and L{rules}. Every request succeeds at
    once and is idempotent, unless C{failWith} is set.

    @ivar routes: C{(interface, destination, gateway, table, source)}.
    @ivar rules: C{(source, table, priority)}.
    @ivar requests: every request, as C{(method name, args...)}.
    """

    def __init__(self, states: Sequence[InterfaceState] = ()) -> None:
        super().__init__(states)
        self.routes: set[tuple[Any, ...]] = set()
        self.rules: set[tuple[Any, ...]] = set()
        self.requests: list[tuple[Any, ...]] = []
        self.failWith: Exception | None = None

    def _request(self, *request: Any) -> Deferred[None] | None:
        self.requests.append(request)
        if self.failWith is not None:
            return fail(self.failWith)
        return None

    def _change(self, name: str, **changes: Any) -> Deferred[None]:
        state = self._states.get(name)
        if state is None:
            return fail(UnknownInterface(name))
        self.setState(replace(state, **changes))
        return succeed(None)

    def setLinkUp(self, interface: str, up: bool = True) -> Deferred[None]:
        failed = self._request("setLinkUp", interface, up)
        if failed:
            return failed
        state = self._states.get(interface)
        if state is None:
            return fail(UnknownInterface(interface))
        # A veth's carrier follows its own up flag (the peer is up).
        return self._change(interface, up=up, carrier=up and state.carrier or (up and self.peerUp))

    peerUp = True

    def setMTU(self, interface: str, mtu: int) -> Deferred[None]:
        return self._request("setMTU", interface, mtu) or self._change(interface, mtu=mtu)

    def addAddress(self, interface: str, address: Any) -> Deferred[None]:
        failed = self._request("addAddress", interface, address)
        if failed:
            return failed
        state = self._states.get(interface)
        if state is None:
            return fail(UnknownInterface(interface))
        if address in state.addresses:
            return succeed(None)
        return self._change(interface, addresses=state.addresses + (address,))

    def removeAddress(self, interface: str, address: Any) -> Deferred[None]:
        failed = self._request("removeAddress", interface, address)
        if failed:
            return failed
        state = self._states.get(interface)
        if state is None or address not in state.addresses:
            return succeed(None)
        self.routes = {r for r in self.routes if not (r[0] == interface and r[4] == address.ip)}
        return self._change(
            interface, addresses=tuple(a for a in state.addresses if a != address)
        )

    def addRoute(self, interface, destination, gateway=None, table=254, source=None):
        failed = self._request("addRoute", interface, destination, gateway, table, source)
        if failed:
            return failed
        if interface not in self._states:
            return fail(UnknownInterface(interface))
        self.routes = {r for r in self.routes if r[1:2] + r[3:4] != (destination, table)}
        self.routes.add((interface, destination, gateway, table, source))
        return succeed(None)

    def removeRoute(self, interface, destination, gateway=None, table=254):
        failed = self._request("removeRoute", interface, destination, gateway, table)
        if failed:
            return failed
        self.routes = {
            r
            for r in self.routes
            if not (r[0] == interface and r[1] == destination and r[3] == table and gateway in (None, r[2]))
        }
        return succeed(None)

    def addRule(self, source, table, priority):
        failed = self._request("addRule", source, table, priority)
        if failed:
            return failed
        self.rules.add((source, table, priority))
        return succeed(None)

    def removeRule(self, source, table, priority):
        failed = self._request("removeRule", source, table, priority)
        if failed:
            return failed
        self.rules.discard((source, table, priority))
        return succeed(None)

    def setCarrier(self, name: str, carrier: bool) -> None:
        """
        The peer went down (or came back): carrier follows, if up.
        """
        state = self._states[name]
        self.peerUp = carrier
        self.setState(replace(state, carrier=carrier and state.up))
