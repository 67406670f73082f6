# -*- test-case-name: tests.unit.test_portmap -*-
"""
One WAN's port-mapping table: the rules of WANIPConnection:2 about mapping
keys, conflicts, the contiguous index and lease expiry.

The table knows nothing of access control (secure mode and permission rules
are the service's), SOAP, the kernel or persistence. Every mutation happens
in two steps so that the caller can keep table, kernel and state file in
step: C{plan*} checks a request against the spec's table rules and returns a
L{Change} without touching anything; L{PortMappingTable.apply} makes it real
(indexes and lease timers); L{PortMappingTable.undo} takes it back if the
NAT backend or the state store then fails.

Choices where the spec leaves room:

  - Figure 3's vendor choice (same port, protocol and client, another remote
    host): both mappings are kept. Only the holder's client matters: a port
    held by another client, whatever its remote host, is a conflict (718).
  - Static mappings (the configuration's, reported with lease 0) are
    read-only to control points: a request on a port they hold answers 729
    (ConflictWithOtherMechanisms), a delete 606 (ActionNotAuthorized). Only
    L{PortMappingTable.restore} (at start) and
    L{PortMappingTable.planConfigure} (on a reload) add, change or remove
    them, and both evict control point mappings on their ports. They do not
    count against the capacity.
  - Index order is creation order; an overwrite or refresh keeps its
    position, and L{PortMappingTable.undo} puts a removed mapping back where
    it was.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from dataclasses import dataclass, field
from heapq import heapify, heappop, heappush
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from twisted.logger import Logger

from gatewayd.errors import (
    ActionNotAuthorized,
    ConflictInMappingEntry,
    ConflictWithOtherMechanisms,
    NoPortMapsAvailable,
    NoSuchEntryInArray,
    SpecifiedArrayIndexInvalid,
)
from gatewayd.interfaces import NATMapping

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from gatewayd.config import StaticMapping

#: The identity of a mapping: C{(remoteHost, externalPort, protocol)};
#: C{remoteHost} C{""} is the wildcard.
Key = tuple[str, int, str]

PROTOCOLS = ("TCP", "UDP")
MIN_PORT, MAX_PORT = 1, 65535

#: Fewer unused index slots than this are never worth compacting.
_COMPACT_SLACK = 1024


def describeKey(key: Key) -> str:
    """
    @return: a key for humans, e.g. C{TCP 8080 from *}.
    """
    remoteHost, externalPort, protocol = key
    return f"{protocol} {externalPort} from {remoteHost or '*'}"


@dataclass(frozen=True)
class PortMapping:
    """
    One port mapping of one WAN.

    @ivar remoteHost: the only source allowed, or C{""} for any.
    @ivar externalPort: the WAN side port, 1-65535.
    @ivar protocol: C{"TCP"} or C{"UDP"}.
    @ivar internalPort: the port on the LAN host, 1-65535.
    @ivar internalClient: the LAN host (dotted quad).
    @ivar enabled: whether it forwards.
    @ivar description: the control point's text.
    @ivar leaseDuration: the seconds granted at creation or the last refresh;
        0 only for static mappings.
    @ivar expiresAt: when the lease runs out, on the table's clock
        (C{clock.seconds()}); L{None} for static mappings.
    @ivar static: the configuration's (out of band): read-only to control
        points, reported with lease 0.
    """

    remoteHost: str
    externalPort: int
    protocol: str
    internalPort: int
    internalClient: str
    enabled: bool = True
    description: str = ""
    leaseDuration: int = 0
    expiresAt: float | None = None
    static: bool = False

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r} is not TCP or UDP")
        for name, port in (("external", self.externalPort), ("internal", self.internalPort)):
            if type(port) is not int or not MIN_PORT <= port <= MAX_PORT:
                raise ValueError(f"{name} port {port!r} is not 1-65535")
        if not self.internalClient:
            raise ValueError("no internal client")
        if self.static:
            if self.expiresAt is not None or self.leaseDuration != 0:
                raise ValueError("a static mapping has no lease")
        elif self.expiresAt is None:
            raise ValueError("a mapping that is not static needs expiresAt")

    @property
    def key(self) -> Key:
        """
        The mapping's identity in its WAN's table.
        """
        return (self.remoteHost, self.externalPort, self.protocol)

    def remaining(self, now: float) -> int:
        """
        @param now: the table clock's C{seconds()}.
        @return: the remaining lease in whole seconds, rounded up, as
            Get*PortMappingEntry report it: never negative, 0 for a static
            mapping.
        """
        if self.expiresAt is None:
            return 0
        return max(0, math.ceil(self.expiresAt - now))

    def natMapping(self, wan: str, interface: str) -> NATMapping:
        """
        @return: this mapping as the NAT backend of C{wan} (on C{interface})
            installs it.
        """
        return NATMapping(
            wan=wan,
            interface=interface,
            protocol=self.protocol,
            externalPort=self.externalPort,
            remoteHost=self.remoteHost,
            internalClient=self.internalClient,
            internalPort=self.internalPort,
            enabled=self.enabled,
        )


def fromConfig(static: StaticMapping) -> PortMapping:
    """
    @return: a configured C{[[wan.static_mapping]]} as a static L{PortMapping}.
    """
    return PortMapping(
        remoteHost=static.remoteHost,
        externalPort=static.externalPort,
        protocol=static.protocol,
        internalPort=static.internalPort,
        internalClient=str(static.internalClient),
        description=static.description,
        static=True,
    )


@dataclass(frozen=True)
class Change:
    """
    What one operation did (or will do) to a table: for the NAT backend, the
    journal and eventing. Mappings in C{removed} go first; a key in both
    C{removed} and C{added} is replaced in place (same index).

    @ivar added: new or replacing mappings (after).
    @ivar removed: removed or replaced mappings (before).
    @ivar reason: C{"add"}, C{"refresh"}, C{"delete"}, C{"expire"} or
        C{"configure"}.
    @ivar ordinals: the table's creation ordinals of C{removed}, in the same
        order; filled in by the table so that L{PortMappingTable.undo} puts
        them back at their index. Callers leave it empty; without it undo
        appends them.
    """

    added: tuple[PortMapping, ...] = ()
    removed: tuple[PortMapping, ...] = ()
    reason: str = "add"
    ordinals: tuple[int, ...] = field(default=(), compare=False, repr=False)


class StaleChange(Exception):
    """
    A change no longer fits the table (it changed since the change was
    planned, or the change was already applied or undone); nothing changed.
    """


class PortMappingTable:
    """
    The port mappings of one WAN, indexed for every action of
    WANIPConnection:2.

    Costs with M{n} mappings: L{get}, L{holder} and L{__len__} O(1);
    L{byIndex} O(log n) (an order-statistic search in a Fenwick tree over the
    creation order); L{inRange} O(log n + k); L{apply} O(log n) per mapping
    plus an O(n) list insertion of a C{(port, remoteHost)} pair (a memmove)
    and, amortised O(1), the compaction of unused index slots and leases.

    Leases wait in a heap under a single timer for the earliest one, rather
    than one timer per mapping: L{twisted.internet.task.Clock} sorts its
    calls on every C{callLater}, which would make each change O(n) in tests
    and benchmarks, and real reactors are spared thousands of timers. When
    the timer fires, every mapping whose C{expiresAt} has come leaves the
    table in one L{Change} (reason C{"expire"}), given to C{expired}.

    @ivar wan: the WAN's name (for logs).
    @ivar capacity: the most mappings control points may hold.
    """

    log = Logger()

    def __init__(
        self,
        wan: str,
        clock: IReactorTime,
        *,
        capacity: int = 4096,
        expired: Callable[[Change], None] = lambda change: None,
    ) -> None:
        """
        @param clock: the time source and scheduler of lease timers.
        @param expired: called with the change (reason C{"expire"}) after
            leases ran out and their mappings left the table; the caller
            removes them from the kernel, journals and events it. Its
            exceptions are logged.
        """
        self.wan = wan
        self.capacity = capacity
        self._clock = clock
        self._expired = expired
        self._mappings: dict[Key, PortMapping] = {}
        # Leases: a heap of (expiresAt, key), stale entries included (they
        # are skipped when they come up), under one timer for the earliest.
        self._leases: list[tuple[float, Key]] = []
        self._timer: IDelayedCall | None = None
        self._timerAt = math.inf
        self._dynamic = 0
        # (protocol, externalPort) -> remote hosts mapped on it
        self._holders: dict[tuple[str, int], set[str]] = {}
        # protocol -> sorted (externalPort, remoteHost)
        self._sorted: dict[str, list[tuple[int, str]]] = {p: [] for p in PROTOCOLS}
        # Index slots 1..len(self._slotKey)-1 in creation order; a removed
        # mapping leaves its slot empty (None) until the next compaction.
        # _tree is a Fenwick tree counting the occupied slots.
        self._slotKey: list[Key | None] = [None]
        self._slotOrdinal: list[int] = [0]
        self._slotOf: dict[Key, int] = {}
        self._tree: list[int] = [0]
        self._nextOrdinal = 1

    def __repr__(self) -> str:
        return f"<PortMappingTable {self.wan!r} with {len(self)} mappings>"

    # Reading

    def __len__(self) -> int:
        return len(self._mappings)

    def __iter__(self) -> Iterator[PortMapping]:
        """
        @return: the mappings in index order (a snapshot).
        """
        mappings = self._mappings
        return iter([mappings[key] for key in self._slotKey if key is not None])

    def __contains__(self, key: object) -> bool:
        return key in self._mappings

    def byIndex(self, index: int) -> PortMapping:
        """
        @return: the mapping at C{index} of the contiguous array that
            GetGenericPortMappingEntry walks.
        @raise SpecifiedArrayIndexInvalid: unless 0 <= C{index} < C{len(self)}.
        """
        if not 0 <= index < len(self._mappings):
            raise SpecifiedArrayIndexInvalid(f"index {index} of {len(self._mappings)}")
        tree, size = self._tree, len(self._tree) - 1
        position, wanted = 0, index + 1
        step = 1 << (size.bit_length() - 1)
        while step:
            following = position + step
            if following <= size and tree[following] < wanted:
                position = following
                wanted -= tree[following]
            step >>= 1
        key = self._slotKey[position + 1]
        assert key is not None
        return self._mappings[key]

    def get(self, key: Key) -> PortMapping | None:
        """
        @return: the mapping with exactly this key, or L{None}. A wildcard
            remote host C{""} finds only the wildcard mapping.
        """
        return self._mappings.get(key)

    def holder(self, externalPort: int, protocol: str) -> list[PortMapping]:
        """
        @return: every mapping on C{(externalPort, protocol)}, whatever its
            remote host, by remote host (the wildcard first).
        """
        hosts = self._holders.get((protocol, externalPort))
        if not hosts:
            return []
        return [self._mappings[(host, externalPort, protocol)] for host in sorted(hosts)]

    def inRange(self, protocol: str, start: int, end: int) -> Iterator[PortMapping]:
        """
        @return: the mappings of C{protocol} with C{start <= externalPort <=
            end}, by external port then remote host (a snapshot: the caller
            may change the table while iterating).
        """
        pairs = self._sorted.get(protocol, [])
        low = bisect_left(pairs, (start, ""))
        high = bisect_left(pairs, (end + 1, ""), low)
        mappings = self._mappings
        return iter([mappings[(host, port, protocol)] for port, host in pairs[low:high]])

    def freePort(
        self, protocol: str, wanted: int, client: str, allowed: Callable[[int], bool]
    ) -> int | None:
        """
        Choose the external port for AddAnyPortMapping (Figure 4).

        C{wanted} itself is returned if C{allowed(wanted)} and every mapping
        on it, if any, belongs to C{client} and is not static: then
        L{planAdd} overwrites C{client}'s mapping or keeps both. Otherwise
        the nearest port that nothing holds and C{allowed} accepts, in the
        order C{wanted + 1, wanted - 1, wanted + 2, ...} within 1-65535.

        @param allowed: the caller's permission rules for an external port.
        @return: the port, or L{None} when there is none (the caller answers
            728, NoPortMapsAvailable).
        """
        if not MIN_PORT <= wanted <= MAX_PORT:
            raise ValueError(f"port {wanted!r} is not 1-65535")
        holders = self._holders
        hosts = holders.get((protocol, wanted))
        if allowed(wanted) and (
            not hosts
            or all(
                not (m := self._mappings[(host, wanted, protocol)]).static
                and m.internalClient == client
                for host in hosts
            )
        ):
            return wanted
        for distance in range(1, MAX_PORT):
            above, below = wanted + distance, wanted - distance
            if above > MAX_PORT and below < MIN_PORT:
                break
            for port in (above, below):
                if (
                    MIN_PORT <= port <= MAX_PORT
                    and (protocol, port) not in holders
                    and allowed(port)
                ):
                    return port
        return None

    # Planning: pure checks against the table rules

    def planAdd(self, mapping: PortMapping) -> Change:
        """
        Check AddPortMapping's table rules (Figure 3) for C{mapping}.

        @return: a L{Change} that adds C{mapping} (reason C{"add"}) or, when
            its key exists with the same client, overwrites it in place
            (reason C{"refresh"}).
        @raise ConflictInMappingEntry: another client holds C{(externalPort,
            protocol)}, with this remote host or any other (718).
        @raise ConflictWithOtherMechanisms: a static mapping holds it (729).
        @raise NoPortMapsAvailable: the key is new and the table holds
            C{capacity} control point mappings (728).
        @raise ValueError: C{mapping} is static (see L{planConfigure}).
        """
        if mapping.static:
            raise ValueError("static mappings come from planConfigure")
        holders = self.holder(mapping.externalPort, mapping.protocol)
        for other in holders:
            if not other.static and other.internalClient != mapping.internalClient:
                raise ConflictInMappingEntry(
                    f"{describeKey(other.key)} is mapped to {other.internalClient}"
                )
        for other in holders:
            if other.static:
                raise ConflictWithOtherMechanisms(
                    f"{describeKey(other.key)} is a configured mapping"
                )
        existing = self._mappings.get(mapping.key)
        if existing is not None:
            return Change(
                added=(mapping,),
                removed=(existing,),
                reason="refresh",
                ordinals=(self._ordinal(existing.key),),
            )
        if self._dynamic >= self.capacity:
            raise NoPortMapsAvailable(f"{self.capacity} mappings on {self.wan}")
        return Change(added=(mapping,), reason="add")

    def planRemove(self, keys: Iterable[Key]) -> Change:
        """
        Check DeletePortMapping (one key) or DeletePortMappingRange (the keys
        the caller may delete) against the table.

        @return: a L{Change} (reason C{"delete"}) removing every key once.
        @raise NoSuchEntryInArray: a key has no mapping (714).
        @raise ActionNotAuthorized: a key is a static mapping, which only the
            configuration removes (606).
        """
        removed: dict[Key, PortMapping] = {}
        for key in keys:
            mapping = self._mappings.get(key)
            if mapping is None:
                raise NoSuchEntryInArray(describeKey(key))
            if mapping.static:
                raise ActionNotAuthorized(f"{describeKey(key)} is a configured mapping")
            removed[key] = mapping
        return Change(
            removed=tuple(removed.values()),
            reason="delete",
            ordinals=tuple(self._ordinal(key) for key in removed),
        )

    def planConfigure(self, statics: Iterable[PortMapping]) -> Change:
        """
        Plan the switch to the configuration's static mappings, e.g. on a
        reload (at start, L{restore} takes them). The configuration wins:
        control point mappings on a port a static mapping takes are removed.

        @return: a L{Change} (reason C{"configure"}), empty when nothing
            differs.
        @raise ValueError: a mapping is not static, or two have one key.
        """
        wanted: dict[Key, PortMapping] = {}
        for mapping in statics:
            if not mapping.static:
                raise ValueError(f"{describeKey(mapping.key)} is not static")
            if mapping.key in wanted:
                raise ValueError(f"{describeKey(mapping.key)} is configured twice")
            wanted[mapping.key] = mapping
        removed: dict[Key, PortMapping] = {
            key: mapping
            for key, mapping in self._mappings.items()
            if mapping.static and wanted.get(key) != mapping
        }
        for mapping in wanted.values():
            for other in self.holder(mapping.externalPort, mapping.protocol):
                if not other.static:
                    removed[other.key] = other
        added = tuple(m for m in wanted.values() if self._mappings.get(m.key) != m)
        return Change(
            added=added,
            removed=tuple(removed.values()),
            reason="configure",
            ordinals=tuple(self._ordinal(key) for key in removed),
        )

    # Mutation

    def apply(self, change: Change) -> None:
        """
        Make C{change} real: indexes, counts and leases (a replaced or
        removed mapping's lease no longer counts; an added one runs out at
        its C{expiresAt} on the table's clock).

        @raise StaleChange: the table does not hold C{change.removed} exactly,
            or holds an added key that is not replaced; nothing changed.
        """
        self._change(change.removed, change.added, ())

    def undo(self, change: Change) -> None:
        """
        Revert an applied C{change}: its added mappings leave, its removed
        ones come back at their index with their lease timers (a lease that
        ran out meanwhile expires at once, through the C{expired} callback).

        @raise StaleChange: the table no longer holds C{change.added}
            exactly; nothing changed.
        """
        ordinals = change.ordinals if len(change.ordinals) == len(change.removed) else ()
        self._change(change.added, change.removed, ordinals)

    def restore(self, mappings: Iterable[PortMapping]) -> list[PortMapping]:
        """
        Load mappings at start, in the given (saved index) order, and start
        their leases: the saved control point mappings and the
        configuration's static ones (pass those, not saved static ones:
        the configuration replaces what was saved). No checks beyond key
        uniqueness, not even the capacity; but the configuration wins, so a
        saved mapping on a port a static mapping holds is dropped.

        @return: the mappings dropped, for the caller to log: the lease
            ended (C{expiresAt <= now}), or the key was taken (by an earlier
            mapping of the list or one in the table), or a static mapping
            holds the port.
        """
        now = self._clock.seconds()
        mappings = list(mappings)
        staticPorts = {(m.protocol, m.externalPort) for m in mappings if m.static}
        staticPorts.update(
            (m.protocol, m.externalPort) for m in self._mappings.values() if m.static
        )
        dropped = []
        for mapping in mappings:
            if mapping.key in self._mappings or not mapping.static and (
                mapping.expiresAt is None
                or mapping.expiresAt <= now
                or (mapping.protocol, mapping.externalPort) in staticPorts
            ):
                dropped.append(mapping)
            else:
                self._insert(mapping, None)
        return dropped

    def stop(self) -> None:
        """
        Cancel the lease timer (the service stops): no lease runs out until
        the next L{apply} or L{restore}, which starts it again. The mappings
        stay, to be saved.
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timerAt = None, math.inf

    # Internals

    def _ordinal(self, key: Key) -> int:
        return self._slotOrdinal[self._slotOf[key]]

    def _change(
        self,
        remove: tuple[PortMapping, ...],
        add: tuple[PortMapping, ...],
        ordinals: tuple[int, ...],
    ) -> None:
        removeKeys = [m.key for m in remove]
        addKeys = [m.key for m in add]
        if len(set(removeKeys)) != len(removeKeys) or len(set(addKeys)) != len(addKeys):
            raise ValueError("a change names a key twice")
        for mapping in remove:
            if self._mappings.get(mapping.key) != mapping:
                raise StaleChange(f"{describeKey(mapping.key)} is not as planned")
        replaced = set(removeKeys)
        for key in addKeys:
            if key not in replaced and key in self._mappings:
                raise StaleChange(f"{describeKey(key)} exists")
        added = set(addKeys)
        for key in removeKeys:
            if key not in added:
                self._delete(key)
        where = dict(zip(addKeys, ordinals))
        for mapping in add:
            if mapping.key in replaced:
                self._replace(mapping)
            else:
                self._insert(mapping, where.get(mapping.key))

    def _insert(self, mapping: PortMapping, ordinal: int | None) -> None:
        """
        Add a mapping whose key is new: at the end of the index, or at the
        slot of C{ordinal} (a mapping coming back).
        """
        key = mapping.key
        self._mappings[key] = mapping
        self._dynamic += not mapping.static
        protocol, port = mapping.protocol, mapping.externalPort
        self._holders.setdefault((protocol, port), set()).add(mapping.remoteHost)
        insort(self._sorted[protocol], (port, mapping.remoteHost))
        if ordinal is None:
            ordinal = self._nextOrdinal
            self._nextOrdinal += 1
        self._place(key, ordinal)
        self._arm(mapping)

    def _delete(self, key: Key) -> None:
        mapping = self._mappings.pop(key)
        self._dynamic -= not mapping.static
        protocol, port = mapping.protocol, mapping.externalPort
        hosts = self._holders[(protocol, port)]
        hosts.discard(mapping.remoteHost)
        if not hosts:
            del self._holders[(protocol, port)]
        pairs = self._sorted[protocol]
        del pairs[bisect_left(pairs, (port, mapping.remoteHost))]
        slot = self._slotOf.pop(key)
        self._slotKey[slot] = None
        self._add(slot, -1)

    def _replace(self, mapping: PortMapping) -> None:
        key = mapping.key
        old = self._mappings[key]
        self._mappings[key] = mapping
        self._dynamic += (not mapping.static) - (not old.static)
        self._arm(mapping)

    def _arm(self, mapping: PortMapping) -> None:
        """
        Follow C{mapping}'s lease. The heap keeps the entries of replaced and
        removed mappings until they come up (or the heap is compacted), so
        replacing and removing cost nothing here.
        """
        expiresAt = mapping.expiresAt
        if expiresAt is None:
            return
        if len(self._leases) > 2 * self._dynamic + _COMPACT_SLACK:
            self._leases = [
                (m.expiresAt, key)
                for key, m in self._mappings.items()
                if m.expiresAt is not None and key != mapping.key
            ]
            heapify(self._leases)
        heappush(self._leases, (expiresAt, mapping.key))
        # The top may be stale, or older than the timer (after stop()): at
        # worst the timer wakes up for nothing and waits for the next lease.
        if (earliest := self._leases[0][0]) < self._timerAt:
            self._schedule(earliest)

    def _schedule(self, at: float) -> None:
        """
        Run L{_expire} at C{at} on the table's clock (at once if past).
        """
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, at - self._clock.seconds())
        self._timer, self._timerAt = self._clock.callLater(delay, self._expire), at

    def _expire(self) -> None:
        """
        Remove every mapping whose lease has run out, as one change, and tell
        the caller; then wait for the next lease.

        Some reactors (asyncio's) run a timer up to their clock's resolution
        early: a mapping still goes exactly at its expiresAt, not before.
        """
        self._timer, self._timerAt = None, math.inf
        now = self._clock.seconds()
        leases, mappings = self._leases, self._mappings
        gone: dict[Key, PortMapping] = {}
        while leases and leases[0][0] <= now:
            expiresAt, key = heappop(leases)
            mapping = mappings.get(key)
            if mapping is not None and mapping.expiresAt == expiresAt and key not in gone:
                gone[key] = mapping
        # The next live lease, dropping stale entries on the way.
        while leases:
            expiresAt, key = leases[0]
            mapping = mappings.get(key)
            if mapping is not None and mapping.expiresAt == expiresAt and key not in gone:
                self._schedule(expiresAt)
                break
            heappop(leases)
        if not gone:
            return
        change = Change(
            removed=tuple(gone.values()),
            reason="expire",
            ordinals=tuple(self._ordinal(key) for key in gone),
        )
        for key in gone:
            self._delete(key)
        try:
            self._expired(change)
        except Exception:
            self.log.failure(
                "Handling the expiry of {count} mappings on {wan} failed",
                count=len(gone),
                wan=self.wan,
            )

    # The index: slots in creation order under a Fenwick tree

    def _add(self, slot: int, delta: int) -> None:
        tree, size = self._tree, len(self._tree) - 1
        while slot <= size:
            tree[slot] += delta
            slot += slot & -slot

    def _place(self, key: Key, ordinal: int) -> None:
        """
        Give C{key} the index slot of C{ordinal}: a new last slot for a new
        ordinal, the empty slot a mapping left, or (after a compaction took
        that slot away) a place found by rebuilding the index.
        """
        slotOrdinal = self._slotOrdinal
        if ordinal > slotOrdinal[-1]:
            if len(slotOrdinal) - 1 > 2 * len(self._mappings) + _COMPACT_SLACK:
                self._rebuild(())
            self._append(key, ordinal)
            return
        slot = bisect_left(slotOrdinal, ordinal, 1)
        if slot < len(slotOrdinal) and slotOrdinal[slot] == ordinal:
            assert self._slotKey[slot] is None
            self._slotKey[slot] = key
            self._slotOf[key] = slot
            self._add(slot, 1)
        else:
            self._rebuild(((ordinal, key),))

    def _append(self, key: Key, ordinal: int) -> None:
        """
        Add a last slot in O(log n): its tree node counts the slots
        C{(slot - lowbit(slot), slot]}, read off the nodes below it.
        """
        tree = self._tree
        slot = len(tree)
        total, below, stop = 1, slot - 1, slot - (slot & -slot)
        while below > stop:
            total += tree[below]
            below -= below & -below
        tree.append(total)
        self._slotKey.append(key)
        self._slotOrdinal.append(ordinal)
        self._slotOf[key] = slot

    def _rebuild(self, extra: tuple[tuple[int, Key], ...]) -> None:
        """
        Compact the slots to the present mappings (plus C{extra}, placed by
        ordinal) and rebuild the tree in O(n).
        """
        entries = [
            (self._slotOrdinal[slot], key)
            for slot, key in enumerate(self._slotKey)
            if key is not None
        ]
        if extra:
            entries.extend(extra)
            entries.sort()
        self._slotKey = [None] + [key for _, key in entries]
        self._slotOrdinal = [0] + [ordinal for ordinal, _ in entries]
        self._slotOf = {key: slot for slot, key in enumerate(self._slotKey) if key is not None}
        size = len(entries)
        tree = [0] + [1] * size
        for slot in range(1, size + 1):
            parent = slot + (slot & -slot)
            if parent <= size:
                tree[parent] += tree[slot]
        self._tree = tree
