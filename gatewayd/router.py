# -*- test-case-name: tests.unit.test_router -*-
"""
Multi-WAN routing: which WAN carries the default route, and the policy
routing that lets every WAN work at the same time.

The decision is pure (L{chooseActive}, L{desiredState}, L{diff}); the
L{MultiWANRouter} service holds the WANs' states, recomputes on every
change and applies the difference through an L{IRouteWriter} (the
NetlinkService's writing half), one application at a time.

Numbering (C{[[wan]] table} and C{mark} in the configuration, whose
defaults derive from the WAN's position, index C{i} from 0; L{numbersFor}
and L{numbersFromConfig}): the configuration is the one source of truth,
shared with the NAT backend (which sets the conntrack mark of inbound
connections from its C{wanmark} map and copies it to the packets of both
directions):

  - routing table C{100 + i};
  - firewall mark C{(i + 1) << 8} under mask C{0xff00} (isp1 C{0x100},
    isp2 C{0x200}, ...), so other tools keep the other mark bits.

Kernel state per WAN that has an address (whatever its health, so that its
probes and the replies of its port mappings keep working while another WAN
carries the default route):

  - table C{100+i}: C{<subnet> dev <if> src <addr> scope link} (unless the
    prefix is /32) and C{default via <gw> dev <if> src <addr>}
    (C{default dev <if> src <addr> scope link} without a gateway);
  - rule priority C{1100+i}: C{fwmark <mark>/0xff00 lookup 100+i} (probes,
    and replies of connections that came in by this WAN once conntrack
    restores their mark);
  - rule priority C{1200+i}: C{from <addr> lookup 100+i} (the router's own
    traffic from that address);

(a WAN whose link makes its table and source rule itself, C{static} and
C{dhcp}, gets only the mark rule from the router: L{WANState.linkRoutes})
and, once for all WANs, rule priority C{1000}: C{lookup main
suppress_prefixlength 0}, so that the main table's specific routes (LAN
subnets, connected networks, routes other tools add) still win over the
WAN tables' default routes.

The main table's default route (metric 0 unless given) points at the
active WAN: the healthy, connected WAN with the lowest priority value,
ties broken by configuration order. With no such WAN the active WAN is
L{None} and the default route stays where it was, as long as that WAN
still has an address: nothing better exists, and removing it would only
make other things fail differently.

WANs whose routes another tool owns (C{managed=False}: an unmanaged link
without a C{gateway}) get no table, rules or default route from gatewayd;
they can still be the active WAN (what UPnP clients are shown), but then
gatewayd removes its own default route and the other tool's applies.

Routes and rules carry protocol C{77} (L{ROUTE_PROTOCOL}) so that the
writer can find exactly gatewayd's, at start and to clean up.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any, Callable, Iterable, Mapping, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import Interface, implementer

from gatewayd.config import MARK_MASK
from gatewayd.observers import Observers

#: The kernel's main routing table.
MAIN_TABLE = 254
#: The first WAN's routing table; WAN C{i} uses C{FIRST_TABLE + i}.
FIRST_TABLE = 100
#: Priority of the rule that lets the main table's specific routes win.
RULE_SUPPRESS = 1000
#: Priority of WAN C{i}'s firewall mark rule: C{RULE_MARK + i}.
RULE_MARK = 1100
#: Priority of WAN C{i}'s source address rule: C{RULE_SOURCE + i}.
RULE_SOURCE = 1200
#: At most this many WANs (the mark has 8 bits, the rule blocks 100).
MAX_WANS = 100
#: The routing protocol number on gatewayd's routes and rules.
ROUTE_PROTOCOL = 77

DEFAULT = IPv4Network("0.0.0.0/0")


@dataclass(frozen=True)
class WANNumbers:
    """
    @ivar table: the WAN's routing table id.
    @ivar mark: its firewall mark (within L{MARK_MASK}).
    @ivar markRule: the priority of its mark rule.
    @ivar sourceRule: the priority of its source address rule.
    """

    table: int
    mark: int
    markRule: int
    sourceRule: int


def numbersFor(index: int) -> WANNumbers:
    """
    @param index: the WAN's position in the configuration, from 0.
    @return: its table, mark and rule priorities.
    @raise ValueError: beyond L{MAX_WANS} WANs.
    """
    if not 0 <= index < MAX_WANS:
        raise ValueError(f"at most {MAX_WANS} WANs are supported")
    return WANNumbers(FIRST_TABLE + index, (index + 1) << 8, RULE_MARK + index, RULE_SOURCE + index)


def numbersFromConfig(wans: Sequence[Any]) -> dict[str, WANNumbers]:
    """
    @param wans: the L{gatewayd.config.WANConfig}s, in configuration order.
    @return: each WAN's numbers: table and mark from its configuration,
        rule priorities from its position.
    """
    if len(wans) > MAX_WANS:
        raise ValueError(f"at most {MAX_WANS} WANs are supported")
    return {
        w.name: WANNumbers(w.table, w.mark, RULE_MARK + i, RULE_SOURCE + i)
        for i, w in enumerate(wans)
    }


@dataclass(frozen=True)
class WANState:
    """
    What the router knows about one WAN.

    @ivar name: the WAN's name.
    @ivar interface: its interface.
    @ivar priority: the configured priority (lower is preferred).
    @ivar connected: its Connection is C{Connected}.
    @ivar healthy: its L{gatewayd.health.HealthMonitor} says healthy.
    @ivar address: its address and prefix, if it has one.
    @ivar gateway: its next hop, if known.
    @ivar managed: gatewayd owns its routes (not an unmanaged link without
        a configured gateway).
    @ivar linkRoutes: its link fills its table and adds its source rule
        itself (the C{static} and C{dhcp} links do, see
        L{gatewayd.link.addressing}); the router then adds only its mark
        rule and, when it is active, the main default route.
    """

    name: str
    interface: str
    priority: int = 10
    connected: bool = False
    healthy: bool = False
    address: IPv4Interface | None = None
    gateway: IPv4Address | None = None
    managed: bool = True
    linkRoutes: bool = False

    @property
    def eligible(self) -> bool:
        """
        Whether it may carry the default route: connected and healthy.
        """
        return self.connected and self.healthy

    @property
    def routable(self) -> bool:
        """
        Whether gatewayd can route through it: managed, with an address.
        """
        return self.managed and self.address is not None


@dataclass(frozen=True, order=True)
class Route:
    """
    One route. Its kernel identity is L{key}: table, destination, metric.
    """

    table: int
    destination: IPv4Network
    interface: str
    gateway: IPv4Address | None = None
    source: IPv4Address | None = None
    metric: int = 0
    scope: str = "universe"
    protocol: int = ROUTE_PROTOCOL

    @property
    def key(self) -> tuple[int, IPv4Network, int]:
        return (self.table, self.destination, self.metric)

    def __str__(self) -> str:
        text = "default" if self.destination == DEFAULT else str(self.destination)
        if self.gateway is not None:
            text += f" via {self.gateway}"
        text += f" dev {self.interface}"
        if self.source is not None:
            text += f" src {self.source}"
        if self.scope != "universe":
            text += f" scope {self.scope}"
        if self.metric:
            text += f" metric {self.metric}"
        table = "main" if self.table == MAIN_TABLE else str(self.table)
        return f"{text} table {table} proto {self.protocol}"


@dataclass(frozen=True, order=True)
class Rule:
    """
    One policy routing rule (C{ip rule}); rules are identified by all
    their fields.

    @ivar priority: its preference.
    @ivar table: the table it looks up.
    @ivar source: C{from} selector, if any.
    @ivar mark: C{fwmark} selector, if any (with L{mask}).
    @ivar suppressPrefixLength: ignore routes with this prefix length or
        shorter, if not L{None}.
    """

    priority: int
    table: int
    source: IPv4Network | None = None
    mark: int | None = None
    mask: int | None = None
    suppressPrefixLength: int | None = None
    protocol: int = ROUTE_PROTOCOL

    def __str__(self) -> str:
        text = f"{self.priority}:"
        if self.source is not None:
            host = self.source.prefixlen == 32
            text += f" from {self.source.network_address if host else self.source}"
        else:
            text += " from all"
        if self.mark is not None:
            text += f" fwmark {self.mark:#x}"
            if self.mask is not None:
                text += f"/{self.mask:#x}"
        table = "main" if self.table == MAIN_TABLE else str(self.table)
        text += f" lookup {table}"
        if self.suppressPrefixLength is not None:
            text += f" suppress_prefixlength {self.suppressPrefixLength}"
        return text + f" proto {self.protocol}"


@dataclass(frozen=True)
class KernelState:
    """
    gatewayd's routes and rules (and nothing else in the kernel).
    """

    routes: frozenset[Route] = frozenset()
    rules: frozenset[Rule] = frozenset()

    def defaultRoute(self, table: int = MAIN_TABLE) -> Route | None:
        """
        @return: the default route of C{table}, if gatewayd has one there.
        """
        for route in sorted(self.routes):
            if route.table == table and route.destination == DEFAULT:
                return route
        return None


@dataclass(frozen=True)
class RouteOp:
    """
    One change for the kernel.

    @ivar action: C{"add"} (create; it must not exist), C{"replace"}
        (create or replace the route with the same key, atomically) or
        C{"delete"}.
    @ivar item: the L{Route} or L{Rule}.
    """

    action: str
    item: Route | Rule

    def __str__(self) -> str:
        kind = "route" if isinstance(self.item, Route) else "rule"
        return f"{self.action} {kind} {self.item}"


class IRouteWriter(Interface):
    """
    Changes gatewayd's routes and rules in the kernel (the NetlinkService's
    writing half implements it; L{MemoryRouteWriter} in memory).
    """

    def read() -> Any:
        """
        @return: a L{Deferred} firing with the L{KernelState} of the routes
            (any table) and rules that carry protocol L{ROUTE_PROTOCOL}:
            what an earlier gatewayd left.
        """

    def apply(ops: Sequence[RouteOp]) -> Any:
        """
        Apply C{ops} in order: C{add} is C{RTM_NEWROUTE}/C{RTM_NEWRULE} with
        C{NLM_F_CREATE|NLM_F_EXCL}, C{replace} C{RTM_NEWROUTE} with
        C{NLM_F_CREATE|NLM_F_REPLACE}, C{delete} C{RTM_DELROUTE}/C{RTM_DELRULE}
        (deleting something already gone counts as done). Stops at the first
        error.

        @return: a L{Deferred} that fires with L{None} when all are applied,
            or fails with the first error (the ones before it stay applied).
        """


# The decision


def chooseActive(wans: Sequence[WANState]) -> WANState | None:
    """
    @param wans: the WANs in configuration order.
    @return: the eligible WAN with the lowest priority value, the first in
        configuration order among equals; L{None} if none is eligible.
    """
    best: WANState | None = None
    for wan in wans:
        if wan.eligible and (best is None or wan.priority < best.priority):
            best = wan
    return best


def wanRoutes(wan: WANState, numbers: WANNumbers) -> tuple[list[Route], list[Rule]]:
    """
    @return: the routes of C{wan}'s own table and its two rules; nothing
        unless it is L{routable <WANState.routable>}; only the mark rule if
        its link makes the rest (L{WANState.linkRoutes}).
    """
    if not wan.routable:
        return [], []
    assert wan.address is not None
    address, table = wan.address, numbers.table
    markRule = Rule(numbers.markRule, table, mark=numbers.mark, mask=MARK_MASK)
    if wan.linkRoutes:
        return [], [markRule]
    routes = []
    if address.network.prefixlen < 32:
        routes.append(
            Route(table, address.network, wan.interface, source=address.ip, scope="link")
        )
    routes.append(_defaultVia(wan, table, 0))
    rules = [markRule, Rule(numbers.sourceRule, table, source=IPv4Network(address.ip))]
    return routes, rules


def _defaultVia(wan: WANState, table: int, metric: int) -> Route:
    assert wan.address is not None
    if wan.gateway is None:
        return Route(
            table, DEFAULT, wan.interface, source=wan.address.ip, metric=metric, scope="link"
        )
    return Route(
        table, DEFAULT, wan.interface, gateway=wan.gateway, source=wan.address.ip, metric=metric
    )


def desiredState(
    wans: Sequence[WANState],
    via: str | None,
    metric: int = 0,
    numbers: Callable[[int], WANNumbers] = numbersFor,
) -> KernelState:
    """
    @param wans: the WANs in configuration order.
    @param via: the WAN the main default route points at, or L{None}.
    @param metric: the metric of that default route.
    @return: every route and rule gatewayd wants in the kernel.
    """
    routes: set[Route] = set()
    rules: set[Rule] = set()
    for index, wan in enumerate(wans):
        wanRoutesList, wanRules = wanRoutes(wan, numbers(index))
        routes.update(wanRoutesList)
        rules.update(wanRules)
        if wan.name == via and wan.routable:
            routes.add(_defaultVia(wan, MAIN_TABLE, metric))
    if rules:
        rules.add(Rule(RULE_SUPPRESS, MAIN_TABLE, suppressPrefixLength=0))
    return KernelState(frozenset(routes), frozenset(rules))


def diff(old: KernelState, new: KernelState) -> list[RouteOp]:
    """
    The changes from C{old} to C{new}, ordered so that nothing is ever
    missing that both have: routes of the WAN tables are created or
    replaced first, then the main table's (a change of the default route
    is one atomic C{replace}), then new rules are added, old rules
    deleted, and old routes deleted last (the main table's after the WAN
    tables').

    @return: the operations, in the order to apply them.
    """
    oldRoutes = {r.key: r for r in old.routes}
    newRoutes = {r.key: r for r in new.routes}

    def routeOrder(route: Route) -> tuple[bool, int, int, Route]:
        # WAN tables before main; in a table, longer prefixes first (the
        # subnet that makes the gateway reachable before the default route).
        return (route.table == MAIN_TABLE, route.table, -route.destination.prefixlen, route)

    ops: list[RouteOp] = []
    for route in sorted(new.routes, key=routeOrder):
        previous = oldRoutes.get(route.key)
        if previous is None:
            ops.append(RouteOp("add", route))
        elif previous != route:
            ops.append(RouteOp("replace", route))
    ops.extend(RouteOp("add", rule) for rule in sorted(new.rules - old.rules))
    ops.extend(RouteOp("delete", rule) for rule in sorted(old.rules - new.rules))
    ops.extend(
        RouteOp("delete", route)
        for route in sorted(old.routes, key=routeOrder)
        if route.key not in newRoutes
    )
    return ops


@implementer(IRouteWriter)
class MemoryRouteWriter:
    """
    An L{IRouteWriter} that keeps the state in memory, with the kernel's
    rules: adding an existing route key or rule fails, deleting a missing
    one does not.

    @ivar state: the current L{KernelState}.
    @ivar applied: every list of operations applied, in order.
    """

    def __init__(self, state: KernelState = KernelState()) -> None:
        self.state = state
        self.applied: list[list[RouteOp]] = []

    def read(self) -> Deferred[KernelState]:
        return succeed(self.state)

    def apply(self, ops: Sequence[RouteOp]) -> Deferred[None]:
        self.applied.append(list(ops))
        for op in ops:
            self.state = applyOp(self.state, op)
        return succeed(None)


def applyOp(state: KernelState, op: RouteOp) -> KernelState:
    """
    @return: C{state} after C{op}, as the kernel would do it.
    @raise KeyError: for C{add} of a route key or rule that exists.
    """
    routes, rules = set(state.routes), set(state.rules)
    item = op.item
    if isinstance(item, Route):
        same = {r for r in routes if r.key == item.key}
        if op.action == "add" and same:
            raise KeyError(f"route exists: {item}")
        routes -= same
        if op.action != "delete":
            routes.add(item)
    else:
        if op.action == "add" and item in rules:
            raise KeyError(f"rule exists: {item}")
        rules.discard(item)
        if op.action != "delete":
            rules.add(item)
    return KernelState(frozenset(routes), frozenset(rules))


# The service


class MultiWANRouter(Service):
    """
    Keeps the kernel's routes and rules as L{desiredState} says for the
    current WAN states, and tells observers when the active WAN changes.

    Changes are applied one at a time; a change that arrives while one is
    being applied is applied after it, from the latest states only. A
    failed application is logged and retried after C{retryDelay} seconds,
    starting from the kernel's state as the writer reads it.

    Observers are called with C{(active, previous, reason)} once the
    kernel has the new default route.

    @ivar onStop: C{"keep"} leaves the routes and rules when the service
        stops; C{"clean"} removes them.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        wans: Sequence[WANState],
        writer: IRouteWriter,
        *,
        onStop: str = "keep",
        metric: int = 0,
        retryDelay: float = 5.0,
        numbers: Mapping[str, WANNumbers] | None = None,
        kernelCheck: Callable[[], list[str]] | None = None,
    ) -> None:
        """
        @param wans: every WAN in configuration order (their numbers come
            from this order, see L{numbersFor}, unless C{numbers} is given).
        @param numbers: each WAN's numbers (L{numbersFromConfig}).
        @param kernelCheck: returns the problems of the kernel's settings
            (L{checkKernel}); each is logged as a warning at start.
        """
        if onStop not in ("keep", "clean"):
            raise ValueError(f"onStop must be keep or clean, not {onStop!r}")
        names = [w.name for w in wans]
        if len(set(names)) != len(names):
            raise ValueError("WAN names must be unique")
        if numbers is None:
            self._numbers = {w.name: numbersFor(i) for i, w in enumerate(wans)}
        else:
            self._numbers = {w.name: numbers[w.name] for w in wans}
        self._wans: dict[str, WANState] = {w.name: w for w in wans}
        self._clock = clock
        self._writer = writer
        self._kernelCheck = kernelCheck
        self.onStop = onStop
        self.metric = metric
        self.retryDelay = retryDelay
        self._observers: Observers[[str | None, str | None, str]] = Observers("the active WAN")
        self._active: str | None = None  # applied
        self._via: str | None = None  # the WAN the applied default route uses
        self._current = KernelState()
        self._stale = True
        self._applying: Deferred[None] | None = None
        self._busy = False
        self._pending: tuple[str, float] | None = None
        self._retry: IDelayedCall | None = None

    # Inputs and outputs

    def numbers(self, name: str) -> WANNumbers:
        """
        @return: the table, mark and rule priorities of the WAN C{name}.
        """
        return self._numbers[name]

    @property
    def active(self) -> str | None:
        """
        The WAN that carries the default route (as applied), or L{None}.
        """
        return self._active

    def wans(self) -> list[WANState]:
        """
        @return: the WANs' states, in configuration order.
        """
        return list(self._wans.values())

    def addObserver(
        self, observer: Callable[[str | None, str | None, str], None]
    ) -> Callable[[], None]:
        """
        Call C{observer(active, previous, reason)} after each change of the
        active WAN, once the kernel has it.

        @return: a callable that removes the observer.
        """
        return self._observers.add(observer)

    def wanChanged(self, name: str, reason: str, **changes: Any) -> None:
        """
        Something about the WAN C{name} changed; recompute.

        @param reason: what happened, for the log (e.g. C{"unhealthy: no
            answer from 9.9.9.9 in 3 rounds"}).
        @param changes: new values of L{WANState} fields: C{connected},
            C{healthy}, C{address}, C{gateway}, C{managed}, C{linkRoutes},
            C{priority}.
        @raise KeyError: for an unknown WAN.
        @raise TypeError: for an unknown field.
        """
        old = self._wans[name]
        for key in changes:
            if key in ("name", "interface") or key not in WANState.__dataclass_fields__:
                raise TypeError(f"not a WAN state field: {key}")
        new = dataclasses.replace(old, **changes)
        if new == old:
            return
        self._wans[name] = new
        self._schedule(f"{name} {reason}")

    def status(self) -> list[dict[str, object]]:
        """
        @return: one row per WAN for the manhole: name, interface,
            priority, connected, healthy, address, gateway, managed,
            linkRoutes, table, mark, active.
        """
        return [
            {
                "name": w.name,
                "interface": w.interface,
                "priority": w.priority,
                "connected": w.connected,
                "healthy": w.healthy,
                "address": str(w.address) if w.address else None,
                "gateway": str(w.gateway) if w.gateway else None,
                "managed": w.managed,
                "linkRoutes": w.linkRoutes,
                "table": self._numbers[w.name].table,
                "mark": hex(self._numbers[w.name].mark),
                "active": w.name == self._active,
            }
            for w in self._wans.values()
        ]

    # IService

    def startService(self) -> None:
        super().startService()
        if self._kernelCheck is not None:
            for problem in self._kernelCheck():
                self.log.warn("Kernel setting: {problem}", problem=problem)
        self._stale = True
        self._schedule("gatewayd started")

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._pending = None
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        d = self._applying if self._applying is not None else succeed(None)
        if self.onStop == "clean":
            return d.addCallback(lambda _: self._clean())
        return d

    def _clean(self) -> Deferred[None]:
        ops = diff(self._current, KernelState())
        if not ops:
            return succeed(None)
        self.log.info("Removing gatewayd's {count} routes and rules", count=len(ops))

        def cleaned(_: object) -> None:
            self._current = KernelState()

        def failed(failure: Failure) -> None:
            self.log.failure("Removing gatewayd's routes and rules failed", failure)

        return self._writer.apply(ops).addCallbacks(cleaned, failed)

    # Applying

    def _schedule(self, reason: str) -> None:
        if not self.running:
            return
        if self._busy or (self._retry is not None and self._retry.active()):
            if self._pending is None:
                self._pending = (reason, self._clock.seconds())
            else:
                self._pending = (f"{self._pending[0]}; {reason}", self._pending[1])
            return
        self._start(reason, self._clock.seconds())

    def _start(self, reason: str, started: float) -> None:
        self._busy = True
        d = Deferred.fromCoroutine(self._apply(reason, started))
        self._applying = d
        d.addBoth(self._applied)

    def _applied(self, _: object) -> None:
        self._busy = False
        self._applying = None
        if self._pending is not None and self.running and self._retry is None:
            reason, started = self._pending
            self._pending = None
            self._start(reason, started)

    def _retryNow(self) -> None:
        self._retry = None
        if self._busy:
            return
        reason, started = self._pending or ("retry", self._clock.seconds())
        self._pending = None
        self._start(reason, started)

    async def _apply(self, reason: str, started: float) -> None:
        wans = list(self._wans.values())
        chosen = chooseActive(wans)
        active = chosen.name if chosen is not None else None
        via = active
        if via is not None and not self._wans[via].routable:
            via = None
        if chosen is None and self._via is not None and self._wans[self._via].routable:
            via = self._via  # nothing better: keep the default route where it is
        desired = desiredState(
            wans, via, self.metric, lambda index: self._numbers[wans[index].name]
        )
        try:
            if self._stale:
                self._current = await self._writer.read()
                self._stale = False
            ops = diff(self._current, desired)
            if ops:
                await self._writer.apply(ops)
        except Exception:
            self._stale = True
            self.log.failure(
                "Changing routes failed ({reason}); retrying in {delay} s",
                reason=reason,
                delay=self.retryDelay,
            )
            if self.running:
                if self._pending is not None:
                    reason = f"{reason}; {self._pending[0]}"
                self._pending = (reason, started)
                self._retry = self._clock.callLater(self.retryDelay, self._retryNow)
            return
        self._current = desired
        previous, self._active, self._via = self._active, active, via
        elapsed = (self._clock.seconds() - started) * 1000
        if active != previous:
            kept = (
                f"; no healthy WAN, default route kept via {via}"
                if active is None and via is not None
                else ""
            )
            self.log.info(
                "Active WAN {active} (was {previous}) after {elapsed:.0f} ms: {reason}{kept}",
                active=active or "none",
                previous=previous or "none",
                elapsed=elapsed,
                reason=reason,
                kept=kept,
            )
            self._observers.notify(active, previous, reason)
        elif ops:
            self.log.info(
                "Routes updated ({count} changes) after {elapsed:.0f} ms: {reason}",
                count=len(ops),
                elapsed=elapsed,
                reason=reason,
            )


# Kernel settings


def sysctlKeys(interfaces: Iterable[str]) -> list[str]:
    """
    @return: the sysctl keys L{checkKernel} reads for these WAN interfaces.
    """
    keys = [
        "net.ipv4.ip_forward",
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.all.src_valid_mark",
    ]
    for name in interfaces:
        keys += [f"net.ipv4.conf.{name}.rp_filter", f"net.ipv4.conf.{name}.src_valid_mark"]
    return keys


def readSysctls(keys: Iterable[str], root: FilePath[str] | None = None) -> dict[str, str]:
    """
    Read sysctl values from C{/proc/sys} (procfs reads do not block).

    @return: each readable key's value, stripped; unreadable keys are left
        out.
    """
    base = root if root is not None else FilePath("/proc/sys")
    values = {}
    for key in keys:
        path = base.preauthChild(key.replace(".", "/"))
        try:
            values[key] = path.getContent().decode("ascii", "replace").strip()
        except OSError:
            pass
    return values


def checkKernel(values: Mapping[str, str], interfaces: Sequence[str]) -> list[str]:
    """
    Check the kernel settings multi-WAN routing needs.

    @param values: sysctl values by key, as L{readSysctls} returns them.
    @param interfaces: the WAN interfaces.
    @return: one sentence per problem, saying what breaks and what to set.
    """

    def number(key: str) -> int | None:
        try:
            return int(values[key])
        except (KeyError, ValueError):
            return None

    problems = []
    forward = number("net.ipv4.ip_forward")
    if forward is None:
        problems.append(
            "net.ipv4.ip_forward could not be read; LAN traffic is forwarded only if it is 1"
        )
    elif forward != 1:
        problems.append(
            f"net.ipv4.ip_forward={forward}: the router does not forward LAN traffic to any WAN; "
            "set it to 1"
        )
    allFilter = number("net.ipv4.conf.all.rp_filter") or 0
    allMark = number("net.ipv4.conf.all.src_valid_mark") or 0
    for name in interfaces:
        own = number(f"net.ipv4.conf.{name}.rp_filter")
        if own is None:
            problems.append(
                f"net.ipv4.conf.{name}.rp_filter could not be read (is {name} there?); "
                "strict reverse path filtering would drop inbound traffic on a backup WAN"
            )
            continue
        effective = max(own, allFilter)  # the kernel uses the larger value
        markValid = allMark or number(f"net.ipv4.conf.{name}.src_valid_mark") or 0
        if effective == 1 and not markValid:
            where = f"net.ipv4.conf.{name}.rp_filter={own}" + (
                f" with net.ipv4.conf.all.rp_filter={allFilter}" if allFilter > own else ""
            )
            problems.append(
                f"{where} (strict) on {name} drops inbound traffic on a backup WAN; set it to 2 "
                "(loose) or net.ipv4.conf.all.src_valid_mark=1"
            )
    return problems


__all__ = [
    "IRouteWriter",
    "KernelState",
    "MemoryRouteWriter",
    "MultiWANRouter",
    "Route",
    "RouteOp",
    "Rule",
    "WANNumbers",
    "WANState",
    "checkKernel",
    "chooseActive",
    "desiredState",
    "diff",
    "numbersFor",
    "numbersFromConfig",
    "readSysctls",
    "sysctlKeys",
]
