# -*- test-case-name: tests.unit.test_netlink -*-
"""
The kernel's view of interfaces and addresses, through one pyroute2
C{AsyncIPRoute} socket: the only place gatewayd talks rtnetlink (besides
the DHCP client).

The reading half: a snapshot of every interface (flags, MTU, IPv4
addresses, counters), kept current from link and IPv4 address events;
watchers hear of a change (carrier lost or back, an address added or
removed) as soon as the kernel's event is read, within milliseconds.

The writing half (L{INetlinkWriter}: link state, MTU, addresses, routes in
any table, policy rules; and L{gatewayd.router.IRouteWriter}: the multi-WAN
router's protocol-77 routes and rules, read back and changed in order) sends its requests with L{NetlinkService._call}
through a second socket of the service: a request awaiting its answer on
the subscribed socket would swallow the events that arrive meanwhile. Every write is idempotent: adding what is there
replaces it, removing what is not there succeeds.

pyroute2 runs on asyncio; gatewayd runs on Twisted's asyncio reactor, whose
event loop is the one pyroute2 uses. pyroute2 coroutines run as asyncio
tasks (C{asyncio.ensure_future}) and meet Twisted as
C{Deferred.fromFuture}; awaiting them from a Twisted coroutine fails.
pyroute2 is imported only once the service starts, so importing this module
stays cheap.
"""

from __future__ import annotations

import asyncio
import errno
import os
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from socket import AF_INET
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gatewayd.interfaces import INetlink, INetlinkWriter, InterfaceState, LANAddress
from gatewayd.router import IRouteWriter

_T = TypeVar("_T")

# Kernel ABI constants (linux/rtnetlink.h, linux/if.h); stable, and defined
# here so that importing this module does not import pyroute2.
RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR = 16, 17, 20, 21
RTMGRP_LINK, RTMGRP_IPV4_IFADDR = 0x1, 0x10
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000
AF_UNSPEC = 0

STATS_KEYS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")

RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253

#: Errors that mean "already so" for an add, by request kind.
_ALREADY = {"rule": {errno.EEXIST}}
#: Errors that mean "already gone" for a removal.
_GONE = {
    "address": {errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT},
    "route": {errno.ESRCH, errno.ENODEV, errno.ENOENT},
    "rule": {errno.ENOENT},
}

#: At most this many seconds of writes are let through after stopService
#: (the links' clean-up), checked every DRAIN_STEP seconds.
DRAIN_GRACE, DRAIN_STEP = 5.0, 0.05

#: Seconds to wait before reopening the socket after the reader failed, by
#: consecutive failure; the last one repeats.
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)


class UnknownInterface(KeyError):
    """
    No interface of that name is known (or the service is not running).
    """


class NetlinkNotRunning(Exception):
    """
    The request needs the netlink socket, and the service has not finished
    starting (or has stopped).
    """


class NetlinkSessionEnded(Exception):
    """
    The netlink socket stopped delivering events without an error.
    """


@dataclass
class _Link:
    """
    What the latest RTM_NEWLINK said about one ifindex.
    """

    name: str
    flags: int
    mtu: int
    stats: Mapping[str, int] = field(default_factory=dict)


def _statsOf(msg: Any) -> dict[str, int] | None:
    stats = msg.get("stats64")
    if stats is None:
        return None
    return {key: int(stats.get(key) or 0) for key in STATS_KEYS}


def _parseLink(msg: Any, previous: _Link | None) -> _Link | None:
    """
    @return: the link described by an RTM_NEWLINK message, keeping what the
        message leaves out from C{previous}; L{None} if the message names
        no interface at all.
    """
    name = msg.get("ifname") or (previous.name if previous else None)
    if name is None:
        return None
    mtu = msg.get("mtu")
    stats = _statsOf(msg)
    return _Link(
        name=name,
        flags=int(msg["flags"]),
        mtu=int(mtu) if mtu is not None else (previous.mtu if previous else 0),
        stats=stats if stats is not None else (previous.stats if previous else {}),
    )


def _parseAddress(msg: Any) -> IPv4Interface | None:
    """
    @return: the local address of an RTM_NEWADDR/RTM_DELADDR message. For
        point-to-point links C{IFA_ADDRESS} is the peer, so C{IFA_LOCAL}
        wins.
    """
    address = msg.get("local") or msg.get("address")
    if address is None:
        return None
    return IPv4Interface(f"{address}/{msg['prefixlen']}")


def _routeSpec(
    destination: IPv4Network, gateway: IPv4Address | None, table: int
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "dst": str(destination.network_address),
        "dst_len": destination.prefixlen,
        "table": int(table),
    }
    if gateway is not None:
        spec["gateway"] = str(gateway)
    return spec


def _ruleSpec(source: IPv4Network, table: int, priority: int) -> dict[str, Any]:
    return {
        "family": AF_INET,
        "src": str(source.network_address),
        "src_len": source.prefixlen,
        "table": int(table),
        "priority": int(priority),
    }


_SCOPES = {"universe": RT_SCOPE_UNIVERSE, "link": RT_SCOPE_LINK, "host": 254}
_SCOPE_NAMES = {v: k for k, v in _SCOPES.items()}
#: The kernel's "not set" for a rule's suppress_prefixlength.
_UNSET = 0xFFFFFFFF


def _ruleOf(msg: Any) -> Any:
    """
    @return: the L{gatewayd.router.Rule} an RTM_NEWRULE message describes.
    """
    from gatewayd.router import Rule

    table = msg.get("table")
    if table is None:
        table = msg["table"]
    src = msg.get("src")
    suppress = msg.get("suppress_prefixlen")
    mark = msg.get("fwmark")
    mask = msg.get("fwmask")
    return Rule(
        priority=int(msg.get("priority") or 0),
        table=int(table),
        source=IPv4Network(f"{src}/{msg['src_len']}") if src else None,
        mark=int(mark) if mark is not None else None,
        mask=int(mask) if mark is not None and mask is not None else None,
        suppressPrefixLength=None if suppress in (None, _UNSET) else int(suppress),
        protocol=int(msg.get("protocol") or 0),
    )


def _sansStats(state: InterfaceState | None) -> InterfaceState | None:
    return None if state is None else replace(state, stats={})


@implementer(INetlink, INetlinkWriter, IRouteWriter)
class NetlinkService(Service):
    """
    One rtnetlink socket: a live snapshot of interfaces and their IPv4
    addresses, and watchers told about every change.

    Needs the asyncio reactor and no privileges (reading netlink is open to
    any user).

    Counters in L{InterfaceState.stats} are as of the last link event;
    changing counters alone notify no watcher. L{statistics} reads them
    fresh.

    @ivar netns: the network namespace (name under C{/var/run/netns}) to
        watch, or L{None} for this process's own.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        netns: str | None = None,
        retryDelays: Sequence[float] = RETRY_DELAYS,
    ) -> None:
        """
        @param reactor: the reactor; must be the asyncio reactor once
            started.
        @param netns: see L{netns}.
        @param retryDelays: seconds before reopening the socket after
            consecutive failures; the last one repeats.
        """
        self._reactor = reactor
        self.netns = netns
        self._retryDelays = tuple(retryDelays) or (RETRY_DELAYS[-1],)
        self._failures = 0
        self._links: dict[int, _Link] = {}
        self._addresses: dict[int, list[IPv4Interface]] = {}
        self._states: dict[str, InterfaceState] = {}
        self._watchers: dict[str, list[Callable[[InterfaceState | None], None]]] = {}
        self._ready = False
        self._readyWaiters: list[Deferred[None]] = []
        self._ipr: Any = None
        self._session: asyncio.Future[None] | None = None
        self._requests: set[asyncio.Future[Any]] = set()
        self._retry: IDelayedCall | None = None
        self._drain: IDelayedCall | None = None

    # -- INetlink -----------------------------------------------------------

    def interfaceState(self, name: str) -> InterfaceState | None:
        """
        @return: the last known state of C{name}, or L{None} if there is no
            such interface or the first snapshot is not complete yet.
        """
        return self._states.get(name)

    def watchInterface(
        self, name: str, observer: Callable[[InterfaceState | None], None]
    ) -> Callable[[], None]:
        """
        Call C{observer} with the state of C{name} now (if known) and after
        every change; L{None} means the interface disappeared. Watch each
        LAN interface this way to follow its addresses.

        @return: a callable that stops the watch; calling it twice is
            harmless.
        """
        self._watchers.setdefault(name, []).append(observer)
        state = self._states.get(name)
        if state is not None:
            self._tell(observer, name, state)

        def unwatch() -> None:
            observers = self._watchers.get(name, [])
            if observer in observers:
                observers.remove(observer)
            if not observers:
                self._watchers.pop(name, None)

        return unwatch

    # -- more than INetlink -------------------------------------------------

    def interfaces(self) -> dict[str, InterfaceState]:
        """
        @return: a copy of the snapshot: every known interface by name.
        """
        return dict(self._states)

    def whenReady(self) -> Deferred[None]:
        """
        @return: a new L{Deferred} that fires with L{None} once a complete
            snapshot of interfaces and addresses exists (at once if it
            already does); it fails if the attempt to read it fails, or with
            L{CancelledError} if the service stops first.
        """
        if self._ready:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._readyWaiters.append(d)
        return d

    def lanAddresses(self, names: Sequence[str]) -> list[LANAddress]:
        """
        @return: the IPv4 addresses of the interfaces C{names} that exist
            and are up, in the order of C{names} and then the kernel's.
        """
        result: list[LANAddress] = []
        for name in dict.fromkeys(names):
            state = self._states.get(name)
            if state is not None and state.up:
                result.extend(LANAddress(name, state.index, a) for a in state.addresses)
        return result

    def statistics(self, name: str) -> Deferred[Mapping[str, int]]:
        """
        Read the counters of C{name} from the kernel now.

        @return: a L{Deferred} firing with C{rx_bytes}, C{tx_bytes},
            C{rx_packets} and C{tx_packets}; it fails with
            L{UnknownInterface} if C{name} is not known.
        """
        state = self._states.get(name)
        if state is None or self._ipr is None:
            return fail(UnknownInterface(name))
        index = state.index

        async def read(ipr: Any) -> Mapping[str, int]:
            for msg in await ipr.link("get", index=index):
                stats = _statsOf(msg)
                if stats is not None:
                    return stats
            return dict.fromkeys(STATS_KEYS, 0)

        return self._call(read)

    # -- writing (INetlinkWriter) ----------------------------------------

    def setLinkUp(self, interface: str, up: bool = True) -> Deferred[None]:
        """
        Set C{interface} administratively up (or down).

        @return: a L{Deferred} firing with L{None} once done; it fails with
            L{UnknownInterface} if there is no such interface, with
            L{OSError} if the kernel refuses (C{EPERM} without
            CAP_NET_ADMIN).
        """
        state = "up" if up else "down"
        return self._write(
            "link", interface, False, lambda ipr, index: ipr.link("set", index=index, state=state)
        )

    def setMTU(self, interface: str, mtu: int) -> Deferred[None]:
        """
        Set the MTU of C{interface}.
        """
        return self._write(
            "link", interface, False, lambda ipr, index: ipr.link("set", index=index, mtu=int(mtu))
        )

    def addAddress(self, interface: str, address: IPv4Interface) -> Deferred[None]:
        """
        Add C{address} to C{interface} (replacing it if present: no error,
        lifetimes refreshed).
        """
        return self._write(
            "address",
            interface,
            False,
            lambda ipr, index: ipr.addr(
                "replace",
                index=index,
                address=str(address.ip),
                prefixlen=address.network.prefixlen,
            ),
        )

    def removeAddress(self, interface: str, address: IPv4Interface) -> Deferred[None]:
        """
        Remove C{address} from C{interface}; nothing happens if it has no
        such address (or the interface is gone).
        """
        return self._write(
            "address",
            interface,
            True,
            lambda ipr, index: ipr.addr(
                "del", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
            ),
        )

    def addRoute(
        self,
        interface: str,
        destination: IPv4Network,
        gateway: IPv4Address | None = None,
        table: int = RT_TABLE_MAIN,
        source: IPv4Address | None = None,
    ) -> Deferred[None]:
        """
        Add or replace the route to C{destination} in C{table}: through
        C{gateway} on C{interface}, or on-link (scope link) without one;
        C{source} is the preferred source address.
        """
        spec = _routeSpec(destination, gateway, table)
        spec["scope"] = RT_SCOPE_UNIVERSE if gateway is not None else RT_SCOPE_LINK
        if source is not None:
            spec["prefsrc"] = str(source)
        return self._write(
            "route", interface, False, lambda ipr, index: ipr.route("replace", oif=index, **spec)
        )

    def removeRoute(
        self,
        interface: str,
        destination: IPv4Network,
        gateway: IPv4Address | None = None,
        table: int = RT_TABLE_MAIN,
    ) -> Deferred[None]:
        """
        Remove the route to C{destination} on C{interface} (through
        C{gateway}, if given) from C{table}; nothing happens if there is no
        such route.
        """
        spec = _routeSpec(destination, gateway, table)
        return self._write(
            "route", interface, True, lambda ipr, index: ipr.route("del", oif=index, **spec)
        )

    def addRule(self, source: IPv4Network, table: int, priority: int) -> Deferred[None]:
        """
        Add the rule C{from source lookup table} at C{priority}, unless the
        same rule exists.
        """
        spec = _ruleSpec(source, table, priority)
        return self._write("rule", None, False, lambda ipr, index: ipr.rule("add", **spec))

    def removeRule(self, source: IPv4Network, table: int, priority: int) -> Deferred[None]:
        """
        Remove that rule; nothing happens if it does not exist.
        """
        spec = _ruleSpec(source, table, priority)
        return self._write("rule", None, True, lambda ipr, index: ipr.rule("del", **spec))

    # -- gatewayd's routes and rules (gatewayd.router.IRouteWriter) ------

    def read(self) -> Deferred[Any]:
        """
        Read the IPv4 routes (any table) and rules that carry protocol
        L{gatewayd.router.ROUTE_PROTOCOL}: what gatewayd (this run or an
        earlier one) put there.

        @return: a L{Deferred} firing with a L{gatewayd.router.KernelState}.
        """
        from gatewayd.router import ROUTE_PROTOCOL, KernelState

        if not self.running and (self._ipr is None or not self._ready):
            return fail(NetlinkNotRunning())

        async def read(ipr: Any) -> KernelState:
            routes, rules = [], []
            async with aclosing(await ipr.route("dump", family=AF_INET)) as dump:
                async for msg in dump:
                    if msg.get("proto") == ROUTE_PROTOCOL:
                        route = self._routeOf(msg)
                        if route is not None:
                            routes.append(route)
            async with aclosing(await ipr.rule("dump", family=AF_INET)) as dump:
                async for msg in dump:
                    if msg.get("protocol") == ROUTE_PROTOCOL:
                        rules.append(_ruleOf(msg))
            return KernelState(frozenset(routes), frozenset(rules))

        return self.whenReady().addCallback(lambda _: self._call(read))

    def apply(self, ops: Sequence[Any]) -> Deferred[None]:
        """
        Apply L{gatewayd.router.RouteOp}s in order (see
        L{gatewayd.router.IRouteWriter.apply}): C{add} creates and fails if
        the route's key exists (an identical rule counts as added),
        C{replace} creates or replaces, C{delete} removes and counts what is
        gone as removed. Stops at the first error, an L{OSError} naming the
        operation.
        """
        if not self.running and (self._ipr is None or not self._ready):
            return fail(NetlinkNotRunning())
        ops = list(ops)

        async def applyAll(ipr: Any) -> None:
            from pyroute2.netlink.exceptions import NetlinkError

            for op in ops:
                try:
                    await self._applyOne(ipr, op)
                except NetlinkError as e:
                    isRule = not hasattr(op.item, "destination")
                    if op.action == "delete" and e.code in _GONE["rule" if isRule else "route"]:
                        continue
                    if op.action == "add" and isRule and e.code == errno.EEXIST:
                        continue
                    raise OSError(e.code, f"{op}: {os.strerror(e.code)}") from None

        return self.whenReady().addCallback(lambda _: self._call(applyAll))

    def _routeOf(self, msg: Any) -> Any:
        from gatewayd.router import Route

        link = self._links.get(msg.get("oif"))
        if link is None:
            return None
        table = msg.get("table")
        if table is None:
            table = msg["table"]
        return Route(
            table=int(table),
            destination=IPv4Network(f"{msg.get('dst') or '0.0.0.0'}/{msg['dst_len']}"),
            interface=link.name,
            gateway=IPv4Address(g) if (g := msg.get("gateway")) else None,
            source=IPv4Address(s) if (s := msg.get("prefsrc")) else None,
            metric=int(msg.get("priority") or 0),
            scope=_SCOPE_NAMES.get(msg["scope"], str(msg["scope"])),
            protocol=int(msg["proto"]),
        )

    async def _applyOne(self, ipr: Any, op: Any) -> None:
        item = op.item
        if hasattr(item, "destination"):
            state = self._states.get(item.interface)
            if state is None:
                if op.action == "delete":
                    return
                raise OSError(errno.ENODEV, f"{op}: no interface {item.interface}")
            spec: dict[str, Any] = _routeSpec(item.destination, item.gateway, item.table)
            spec.update(oif=state.index, proto=item.protocol)
            if item.metric:
                spec["priority"] = item.metric
            spec["scope"] = _SCOPES[item.scope]
            if op.action != "delete":
                if item.source is not None:
                    spec["prefsrc"] = str(item.source)
            action = {"add": "add", "replace": "replace", "delete": "del"}[op.action]
            await ipr.route(action, **spec)
            return
        rule: dict[str, Any] = {
            "family": AF_INET,
            "priority": item.priority,
            "table": item.table,
            "protocol": item.protocol,
        }
        if item.source is not None:
            rule.update(src=str(item.source.network_address), src_len=item.source.prefixlen)
        if item.mark is not None:
            rule["fwmark"] = item.mark
            rule["fwmask"] = item.mask if item.mask is not None else 0xFFFFFFFF
        if item.suppressPrefixLength is not None:
            rule["suppress_prefixlen"] = item.suppressPrefixLength
        await ipr.rule("del" if op.action == "delete" else "add", **rule)

    def _write(
        self,
        kind: str,
        interface: str | None,
        removal: bool,
        request: Callable[[Any, int], Awaitable[Any]],
    ) -> Deferred[None]:
        """
        Once the snapshot is ready, find C{interface}'s index and send
        C{request(ipr, index)}, turning the kernel's "already so" answers
        into success and its other errors into L{OSError}.
        """
        if not self.running and (self._ipr is None or not self._ready):
            return fail(NetlinkNotRunning())

        def ready(_: object) -> Deferred[None]:
            index = 0
            if interface is not None:
                state = self._states.get(interface)
                if state is None:
                    if removal:
                        return succeed(None)
                    return fail(UnknownInterface(interface))
                index = state.index

            async def send(ipr: Any) -> None:
                from pyroute2.netlink.exceptions import NetlinkError

                try:
                    await request(ipr, index)
                except NetlinkError as e:
                    harmless = (_GONE if removal else _ALREADY).get(kind, set())
                    if e.code in harmless:
                        return
                    raise OSError(
                        e.code,
                        f"{kind} {'removal' if removal else 'change'} on "
                        f"{interface or 'the rules'}: {os.strerror(e.code)}",
                    ) from None

            return self._call(send)

        return self.whenReady().addCallback(ready)

    # -- service ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        from twisted.internet.asyncioreactor import AsyncioSelectorReactor

        if not isinstance(self._reactor, AsyncioSelectorReactor):
            error = RuntimeError(
                f"NetlinkService needs the asyncio reactor, not {type(self._reactor).__name__}"
            )
            self.log.error("{error}", error=error)
            self._failWaiters(Failure(error))
            return
        self._open()

    def stopService(self) -> Deferred[None]:
        """
        Let the writes that services stopping alongside this one still send
        finish (links clean up on stop; L{DRAIN_GRACE} seconds at most),
        then close the socket and stop reading; the snapshot is forgotten
        (watchers are not told: the interfaces did not go away).

        @return: a L{Deferred} that fires once the reader has ended.
        """
        super().stopService()
        if self._retry is not None:
            if self._retry.active():
                self._retry.cancel()
            self._retry = None
        d: Deferred[None] = Deferred()
        if self._ipr is None and not self._requests:
            self._close(d)
            return d
        deadline = self._reactor.seconds() + DRAIN_GRACE
        quiet = [0]

        def check() -> None:
            quiet[0] = 0 if self._requests else quiet[0] + 1
            if quiet[0] >= 2 or self._reactor.seconds() >= deadline or self.running:
                self._drain = None
                self._close(d)
            else:
                self._drain = self._reactor.callLater(DRAIN_STEP, check)

        check()
        return d

    def _close(self, d: Deferred[None]) -> None:
        if self.running:
            # Started again while draining: nothing to close.
            d.callback(None)
            return
        for request in list(self._requests):
            request.cancel()
        self._ready = False
        self._links, self._addresses, self._states = {}, {}, {}
        self._failWaiters(Failure(CancelledError("netlink service stopped")))
        session, self._session = self._session, None
        if session is None:
            d.callback(None)
            return
        session.add_done_callback(lambda _: d.callback(None))
        session.cancel()

    # -- reading ------------------------------------------------------------

    def _open(self) -> None:
        self._retry = None
        self._session = session = asyncio.ensure_future(self._read())
        Deferred.fromFuture(session).addBoth(self._ended, session)

    async def _read(self) -> None:
        """
        Open the socket, subscribe, dump links and addresses into a
        snapshot, then apply events until cancelled.
        """
        from pyroute2 import AsyncIPRoute

        def open() -> Any:
            if self.netns is None:
                return AsyncIPRoute()
            # flags=0: never create the namespace as a side effect.
            return AsyncIPRoute(netns=self.netns, flags=0)

        ipr = open()
        # Requests (writes, counters) go through a second socket: a request
        # awaiting its answer on the subscribed socket would swallow the
        # events that arrive meanwhile (pyroute2 0.9 drops them).
        requests: Any = None
        try:
            requests = open()
            # Subscribe first: an event racing the dump is applied after it.
            await ipr.bind(RTMGRP_LINK | RTMGRP_IPV4_IFADDR)
            links: dict[int, _Link] = {}
            addresses: dict[int, list[IPv4Interface]] = {}
            async with aclosing(await ipr.link("dump")) as dump:
                async for msg in dump:
                    if (link := _parseLink(msg, None)) is not None:
                        links[msg["index"]] = link
            async with aclosing(await ipr.addr("dump", family=AF_INET)) as dump:
                async for msg in dump:
                    if (address := _parseAddress(msg)) is not None:
                        addresses.setdefault(msg["index"], []).append(address)
            self._ipr = requests
            self._links, self._addresses = links, addresses
            self._publish()
            self._failures = 0
            self._ready = True
            waiters, self._readyWaiters = self._readyWaiters, []
            for waiter in waiters:
                waiter.callback(None)
            while True:
                count = 0
                async with aclosing(ipr.get()) as events:
                    async for msg in events:
                        count += 1
                        self._event(msg)
                if not count:
                    raise NetlinkSessionEnded("the netlink socket was closed")
        finally:
            if self._ipr is requests:
                self._ipr = None
            ipr.close()
            if requests is not None:
                requests.close()

    def _event(self, msg: Any) -> None:
        try:
            kind = msg["header"]["type"]
            index = msg.get("index")
            if kind in (RTM_NEWLINK, RTM_DELLINK):
                # AF_BRIDGE link messages are about bridge ports; RTM_DELLINK
                # with AF_BRIDGE means "left the bridge", not "removed".
                if msg.get("family") != AF_UNSPEC:
                    return
                if kind == RTM_DELLINK:
                    self._links.pop(index, None)
                    self._addresses.pop(index, None)
                elif (link := _parseLink(msg, self._links.get(index))) is not None:
                    self._links[index] = link
            elif kind in (RTM_NEWADDR, RTM_DELADDR):
                if msg.get("family") != AF_INET or (address := _parseAddress(msg)) is None:
                    return
                current = self._addresses.setdefault(index, [])
                if kind == RTM_NEWADDR and address not in current:
                    current.append(address)
                elif kind == RTM_DELADDR and address in current:
                    current.remove(address)
                if not current:
                    del self._addresses[index]
            else:
                return
            self._publish()
        except Exception:
            self.log.failure("Could not apply a netlink message: {msg!r}", msg=msg)

    def _publish(self) -> None:
        """
        Rebuild the snapshot from links and addresses, and tell the watchers
        of every interface whose state changed (counters aside).
        """
        states = {
            link.name: InterfaceState(
                name=link.name,
                index=index,
                up=bool(link.flags & IFF_UP),
                carrier=bool(link.flags & IFF_LOWER_UP),
                addresses=tuple(self._addresses.get(index, ())),
                mtu=link.mtu,
                stats=dict(link.stats),
            )
            for index, link in self._links.items()
        }
        old, self._states = self._states, states
        for name in set(old) | set(states):
            new = states.get(name)
            if _sansStats(old.get(name)) != _sansStats(new):
                for observer in list(self._watchers.get(name, ())):
                    self._tell(observer, name, new)

    def _tell(
        self,
        observer: Callable[[InterfaceState | None], None],
        name: str,
        state: InterfaceState | None,
    ) -> None:
        try:
            observer(state)
        except Exception:
            self.log.failure(
                "Interface watcher {observer!r} failed on {interface}",
                observer=observer,
                interface=name,
            )

    def _ended(self, result: object, session: asyncio.Future[None]) -> None:
        """
        The reader C{session} ended: expected after C{stopService} (which
        forgot it already); otherwise log why, and reopen after a delay.
        """
        if session is not self._session:
            return
        self._session = None
        delay = self._retryDelays[min(self._failures, len(self._retryDelays) - 1)]
        self._failures += 1
        if isinstance(result, Failure):
            self.log.failure(
                "Netlink reader failed; reopening in {delay} s", result, delay=delay
            )
        else:
            self.log.error("Netlink reader ended; reopening in {delay} s", delay=delay)
        self._retry = self._reactor.callLater(delay, self._open)
        # Last: a waiter's callbacks may stop this service.
        if not self._ready:
            reason = result if isinstance(result, Failure) else Failure(NetlinkSessionEnded())
            self._failWaiters(reason)

    def _failWaiters(self, reason: Failure) -> None:
        waiters, self._readyWaiters = self._readyWaiters, []
        for waiter in waiters:
            waiter.errback(reason)

    def _call(self, request: Callable[[Any], Awaitable[_T]]) -> Deferred[_T]:
        """
        Run C{request(ipr)} as an asyncio task on the shared socket.

        @return: a L{Deferred} with its result; cancelled if the service
            stops first.
        """
        if self._ipr is None:
            return fail(NetlinkNotRunning())
        future = asyncio.ensure_future(request(self._ipr))
        self._requests.add(future)
        future.add_done_callback(self._requests.discard)
        return Deferred.fromFuture(future)
