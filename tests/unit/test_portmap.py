"""
Tests for L{gatewayd.igd.portmap}: the table rules of WANIPConnection:2
(keys, conflicts, the contiguous index) and lease expiry.
"""

from __future__ import annotations

import random
from dataclasses import replace
from ipaddress import IPv4Address

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from gatewayd.config import StaticMapping
from gatewayd.errors import (
    ActionNotAuthorized,
    ConflictInMappingEntry,
    ConflictWithOtherMechanisms,
    NoPortMapsAvailable,
    NoSuchEntryInArray,
    SpecifiedArrayIndexInvalid,
)
from gatewayd.igd import portmap
from gatewayd.igd.portmap import (
    Change,
    PortMapping,
    PortMappingTable,
    StaleChange,
    fromConfig,
)
from gatewayd.interfaces import NATMapping

CLIENT = "192.168.1.10"
OTHER = "192.168.1.11"
REMOTE = "203.0.113.5"


def mapping(
    port: int = 8080,
    client: str = CLIENT,
    remoteHost: str = "",
    protocol: str = "TCP",
    lease: int = 3600,
    now: float = 0.0,
    internalPort: int | None = None,
    description: str = "",
) -> PortMapping:
    """
    @return: a control point's mapping granted C{lease} seconds at C{now}.
    """
    return PortMapping(
        remoteHost=remoteHost,
        externalPort=port,
        protocol=protocol,
        internalPort=port if internalPort is None else internalPort,
        internalClient=client,
        description=description,
        leaseDuration=lease,
        expiresAt=now + lease,
    )


def static(
    port: int = 22, client: str = CLIENT, remoteHost: str = "", protocol: str = "TCP"
) -> PortMapping:
    return PortMapping(remoteHost, port, protocol, port, client, static=True)


class TableTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.expired: list[Change] = []
        self.table = self.makeTable()

    def makeTable(self, capacity: int = 4096) -> PortMappingTable:
        return PortMappingTable("isp1", self.clock, capacity=capacity, expired=self.expired.append)

    def add(self, *mappings: PortMapping) -> Change:
        """
        Plan and apply each mapping; @return: the last change.
        """
        for m in mappings:
            change = self.table.planAdd(m)
            self.table.apply(change)
        return change

    def remove(self, *keys) -> Change:
        change = self.table.planRemove(keys)
        self.table.apply(change)
        return change

    def ports(self) -> list[int]:
        """
        @return: the external ports in index order, as a control point
            walking GetGenericPortMappingEntry sees them.
        """
        return [self.table.byIndex(i).externalPort for i in range(len(self.table))]


class Figure3Tests(TableTestCase):
    """
    AddPortMapping's result matrix (Figure 3), row by row.
    """

    def test_otherProtocol(self) -> None:
        """
        The same port for another protocol is an independent mapping, even
        for another client.
        """
        self.add(mapping(8080, CLIENT, protocol="TCP"))
        change = self.add(mapping(8080, OTHER, protocol="UDP"))
        self.assertEqual(change.reason, "add")
        self.assertEqual(len(self.table), 2)
        self.assertEqual(self.table.get(("", 8080, "UDP")).internalClient, OTHER)

    def test_otherPort(self) -> None:
        """
        Another external port of the same protocol is an independent mapping.
        """
        self.add(mapping(8080, CLIENT))
        self.add(mapping(8081, OTHER))
        self.assertEqual(self.ports(), [8080, 8081])

    def test_otherRemoteHostOtherClient(self) -> None:
        """
        "= = ≠ ≠": another client cannot take a port for another remote host
        (718), whichever of the two is the wildcard; the first mapping stays.
        """
        self.add(mapping(8080, CLIENT, remoteHost=""))
        self.assertRaises(
            ConflictInMappingEntry, self.table.planAdd, mapping(8080, OTHER, remoteHost=REMOTE)
        )
        table = self.table = self.makeTable()
        self.add(mapping(8080, CLIENT, remoteHost=REMOTE))
        error = self.assertRaises(
            ConflictInMappingEntry, table.planAdd, mapping(8080, OTHER, remoteHost="")
        )
        self.assertEqual(error.code, 718)
        self.assertEqual(list(table), [mapping(8080, CLIENT, remoteHost=REMOTE)])

    def test_otherRemoteHostSameClient(self) -> None:
        """
        "= = ≠ =" (vendor choice): the same client gets both, the wildcard and
        the narrow mapping, and each is found by its own key.
        """
        wide = mapping(8080, CLIENT, remoteHost="")
        narrow = mapping(8080, CLIENT, remoteHost=REMOTE, internalPort=9090)
        self.add(wide)
        change = self.add(narrow)
        self.assertEqual(change, Change(added=(narrow,), reason="add"))
        self.assertEqual(self.table.get(("", 8080, "TCP")), wide)
        self.assertEqual(self.table.get((REMOTE, 8080, "TCP")), narrow)
        self.assertEqual(self.table.holder(8080, "TCP"), [wide, narrow])

    def test_sameKeyOtherClient(self) -> None:
        """
        "= = = ≠": another client asking for the same key gets 718, with the
        wildcard remote host and with a specific one.
        """
        for remoteHost in ("", REMOTE):
            self.add(mapping(8080, CLIENT, remoteHost=remoteHost))
            error = self.assertRaises(
                ConflictInMappingEntry,
                self.table.planAdd,
                mapping(8080, OTHER, remoteHost=remoteHost),
            )
            self.assertEqual(error.code, 718)
            self.table = self.makeTable()

    def test_sameKeySameClient(self) -> None:
        """
        "= = = =": the mapping is overwritten (internal port, description,
        enabled flag) and the number of entries does not change.
        """
        old = mapping(8080, CLIENT, description="old")
        new = replace(old, internalPort=9000, description="new", enabled=False)
        self.add(old)
        change = self.table.planAdd(new)
        self.assertEqual(change, Change(added=(new,), removed=(old,), reason="refresh"))
        self.table.apply(change)
        self.assertEqual(list(self.table), [new])


class RefreshTests(TableTestCase):
    def test_refreshKeepsIndex(self) -> None:
        """
        Re-adding a mapping does not move it in GetGenericPortMappingEntry's
        order.
        """
        self.add(mapping(1000), mapping(2000), mapping(3000))
        self.add(mapping(2000, description="again"))
        self.assertEqual(self.ports(), [1000, 2000, 3000])
        self.assertEqual(self.table.byIndex(1).description, "again")

    def test_refreshRestartsLease(self) -> None:
        """
        A refreshed mapping lives for its new lease: it is still there when
        the first lease would have run out, and goes when the new one does.
        """
        self.add(mapping(8080, lease=100))
        self.clock.advance(90)
        self.add(mapping(8080, lease=100, now=90))
        self.assertEqual(self.table.get(("", 8080, "TCP")).remaining(self.clock.seconds()), 100)
        self.clock.advance(10)
        self.assertEqual(len(self.table), 1)
        self.assertEqual(self.expired, [])
        self.clock.advance(89)
        self.assertEqual(len(self.table), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.table), 0)
        self.assertEqual(
            self.expired, [Change(removed=(mapping(8080, lease=100, now=90),), reason="expire")]
        )


class CapacityTests(TableTestCase):
    def test_full(self) -> None:
        """
        A full table answers 728 for a new mapping, still refreshes existing
        ones, and has room again after a delete.
        """
        table = self.table = self.makeTable(capacity=2)
        self.add(mapping(1000), mapping(2000))
        error = self.assertRaises(NoPortMapsAvailable, table.planAdd, mapping(3000))
        self.assertEqual(error.code, 728)
        self.assertEqual(self.add(mapping(1000, lease=7200)).reason, "refresh")
        self.remove(("", 1000, "TCP"))
        self.add(mapping(3000))
        self.assertEqual(self.ports(), [2000, 3000])

    def test_staticNotCounted(self) -> None:
        """
        Configured mappings do not use up the room control points have.
        """
        table = self.table = self.makeTable(capacity=1)
        table.apply(table.planConfigure([static(22), static(23)]))
        self.add(mapping(8080))
        self.assertEqual(len(table), 3)
        self.assertRaises(NoPortMapsAvailable, table.planAdd, mapping(8081))


class StaticTests(TableTestCase):
    def test_configuredMappingsReadOnly(self) -> None:
        """
        Control points cannot overwrite (729), share (729) or delete (606) a
        configured mapping, even for its own client; it is reported with
        lease 0.
        """
        self.table.apply(self.table.planConfigure([static(2222, CLIENT)]))
        for attempt in (mapping(2222, CLIENT), mapping(2222, CLIENT, remoteHost=REMOTE)):
            error = self.assertRaises(ConflictWithOtherMechanisms, self.table.planAdd, attempt)
            self.assertEqual(error.code, 729)
        error = self.assertRaises(
            ActionNotAuthorized, self.table.planRemove, [("", 2222, "TCP")]
        )
        self.assertEqual(error.code, 606)
        self.clock.advance(10**7)
        self.assertEqual([m.remaining(self.clock.seconds()) for m in self.table], [0])

    def test_anotherClientConflicts(self) -> None:
        """
        Another client asking for a configured port gets 718, the answer the
        spec orders before 729.
        """
        self.table.apply(self.table.planConfigure([static(2222, CLIENT)]))
        self.add(mapping(2223, OTHER))
        self.assertRaises(ConflictWithOtherMechanisms, self.table.planAdd, mapping(2222, OTHER))

    def test_configurationWins(self) -> None:
        """
        A newly configured mapping replaces the control points' mappings on
        its port; a reload with the same configuration changes nothing; a
        mapping dropped from the configuration goes.
        """
        self.add(mapping(2222, OTHER), mapping(2222, OTHER, remoteHost=REMOTE), mapping(8080))
        change = self.table.planConfigure([static(2222, CLIENT)])
        self.assertEqual(change.reason, "configure")
        self.assertEqual(change.added, (static(2222, CLIENT),))
        self.assertEqual(
            set(change.removed),
            {mapping(2222, OTHER), mapping(2222, OTHER, remoteHost=REMOTE)},
        )
        self.table.apply(change)
        self.assertEqual(list(self.table), [static(2222, CLIENT), mapping(8080)])
        again = self.table.planConfigure([static(2222, CLIENT)])
        self.assertEqual(again, Change(reason="configure"))
        self.table.apply(self.table.planConfigure([]))
        self.assertEqual(list(self.table), [mapping(8080)])

    def test_fromConfig(self) -> None:
        """
        A C{[[wan.static_mapping]]} becomes a static mapping with no lease.
        """
        configured = StaticMapping("UDP", 5060, IPv4Address("192.168.1.20"), 5061, "", "phone")
        self.assertEqual(
            fromConfig(configured),
            PortMapping("", 5060, "UDP", 5061, "192.168.1.20", description="phone", static=True),
        )

    def test_rejectsStaticInPlanAdd(self) -> None:
        """
        Configured mappings go through planConfigure, dynamic ones through
        planAdd.
        """
        self.assertRaises(ValueError, self.table.planAdd, static(22))
        self.assertRaises(ValueError, self.table.planConfigure, [mapping(22)])
        self.assertRaises(ValueError, self.table.planConfigure, [static(22), static(22)])


class IndexTests(TableTestCase):
    def test_deleteInMiddleCompacts(self) -> None:
        """
        After a delete in the middle, later entries move down: indexes stay
        0..n-1 in creation order and the old last index answers 713.
        """
        self.add(*(mapping(port) for port in (1000, 2000, 3000, 4000)))
        self.remove(("", 2000, "TCP"))
        self.assertEqual(self.ports(), [1000, 3000, 4000])
        error = self.assertRaises(SpecifiedArrayIndexInvalid, self.table.byIndex, 3)
        self.assertEqual(error.code, 713)
        self.assertRaises(SpecifiedArrayIndexInvalid, self.table.byIndex, -1)

    def test_expiryCompacts(self) -> None:
        """
        A mapping whose lease ran out leaves a contiguous array behind.
        """
        self.add(mapping(1000, lease=200), mapping(2000, lease=100), mapping(3000, lease=200))
        self.clock.advance(100)
        self.assertEqual(self.ports(), [1000, 3000])
        self.assertRaises(SpecifiedArrayIndexInvalid, self.table.byIndex, 2)

    def test_emptyTable(self) -> None:
        """
        An empty table answers 713 for index 0.
        """
        self.assertRaises(SpecifiedArrayIndexInvalid, self.table.byIndex, 0)

    def test_removeMissing(self) -> None:
        """
        Deleting a mapping that does not exist answers 714 and deletes
        nothing, also when other keys in the same request exist; a wildcard
        key does not name a narrow mapping.
        """
        self.add(mapping(1000, remoteHost=REMOTE))
        error = self.assertRaises(
            NoSuchEntryInArray,
            self.table.planRemove,
            [(REMOTE, 1000, "TCP"), ("", 1000, "TCP")],
        )
        self.assertEqual(error.code, 714)
        self.assertEqual(len(self.table), 1)
        self.assertIsNone(self.table.get(("", 1000, "TCP")))

    def test_inRange(self) -> None:
        """
        GetListOfPortMappings' view: one protocol, inclusive bounds, by port
        then remote host.
        """
        self.add(
            mapping(3000),
            mapping(1000, remoteHost=REMOTE),
            mapping(1000),
            mapping(2000, protocol="UDP"),
            mapping(4000),
        )
        self.assertEqual(
            [m.key for m in self.table.inRange("TCP", 1000, 3000)],
            [("", 1000, "TCP"), (REMOTE, 1000, "TCP"), ("", 3000, "TCP")],
        )
        self.assertEqual([m.key for m in self.table.inRange("UDP", 0, 65535)], [("", 2000, "UDP")])
        self.assertEqual(list(self.table.inRange("TCP", 3001, 3999)), [])
        self.assertEqual(list(self.table.inRange("TCP", 4000, 1000)), [])

    def test_randomAgainstList(self) -> None:
        """
        Under thousands of random adds, refreshes, deletes, undos and
        expiries, index, count, key lookup and range listing agree with a
        plain list in creation order after every step.
        """
        self.checkAgainstList(random.Random(20260))

    def test_randomAgainstListCompacting(self) -> None:
        """
        The same holds when the index compacts itself all the time, as it
        does now and then in a long-running gateway.
        """
        self.patch(portmap, "_COMPACT_SLACK", 2)
        self.checkAgainstList(random.Random(4096))

    def checkAgainstList(self, rnd: random.Random) -> None:
        clock = self.clock
        table = self.table
        model: list[tuple[int, PortMapping]] = []  # (creation number, mapping)
        counter = 0
        hosts = ("", REMOTE, "198.51.100.7")
        clients = (CLIENT, OTHER, "192.168.1.12")
        pending: Change | None = None  # an applied delete, undone later

        def live(model):
            now = clock.seconds()
            return [(n, m) for n, m in model if m.expiresAt is None or m.expiresAt > now]

        for step in range(3000):
            op = rnd.random()
            now = clock.seconds()
            if op < 0.45:
                new = mapping(
                    rnd.randrange(1000, 1040),
                    rnd.choice(clients),
                    rnd.choice(hosts),
                    rnd.choice(("TCP", "UDP")),
                    lease=rnd.randrange(1, 400),
                    now=now,
                )
                holders = [
                    m for _, m in model
                    if (m.externalPort, m.protocol) == (new.externalPort, new.protocol)
                ]
                try:
                    change = table.planAdd(new)
                except ConflictInMappingEntry:
                    self.assertTrue([m for m in holders if m.internalClient != new.internalClient])
                    continue
                self.assertFalse([m for m in holders if m.internalClient != new.internalClient])
                table.apply(change)
                if rnd.random() < 0.1:
                    table.undo(change)
                    continue
                for i, (n, m) in enumerate(model):
                    if m.key == new.key:
                        model[i] = (n, new)
                        break
                else:
                    counter += 1
                    model.append((counter, new))
            elif op < 0.75 and model:
                victims = rnd.sample(model, min(len(model), rnd.randrange(1, 4)))
                change = table.planRemove([m.key for _, m in victims])
                table.apply(change)
                if rnd.random() < 0.1:
                    table.undo(change)
                    continue
                model = [entry for entry in model if entry not in victims]
                if pending is None and rnd.random() < 0.3:
                    pending = change
                    pendingEntries = victims
            elif op < 0.85 and pending is not None:
                change, pending = pending, None
                present = {m.key for _, m in model}
                if any(m.key in present for m in change.removed):
                    self.assertRaises(StaleChange, table.undo, change)
                else:
                    table.undo(change)
                    model = sorted(model + pendingEntries, key=lambda e: e[0])
                    clock.advance(0)  # those whose lease ended meanwhile go now
            else:
                clock.advance(rnd.randrange(0, 60))
            model = live(model)
            self.assertEqual(len(table), len(model), step)
            self.assertEqual([table.byIndex(i) for i in range(len(model))], [m for _, m in model])
            self.assertRaises(SpecifiedArrayIndexInvalid, table.byIndex, len(model))
            self.assertEqual(list(table), [m for _, m in model])
            for _, m in model:
                self.assertEqual(table.get(m.key), m)
            start = rnd.randrange(995, 1045)
            end = start + rnd.randrange(0, 20)
            protocol = rnd.choice(("TCP", "UDP"))
            self.assertEqual(
                list(table.inRange(protocol, start, end)),
                sorted(
                    (m for _, m in model
                     if m.protocol == protocol and start <= m.externalPort <= end),
                    key=lambda m: (m.externalPort, m.remoteHost),
                ),
            )


class LeaseTests(TableTestCase):
    def test_expiresAtBoundary(self) -> None:
        """
        A mapping is reported with its remaining lease rounded up and
        disappears exactly when the lease runs out, not a second earlier;
        the caller hears of it once.
        """
        self.add(mapping(8080, lease=60))
        self.clock.advance(0.5)
        self.assertEqual(self.table.byIndex(0).remaining(self.clock.seconds()), 60)
        self.clock.advance(59.4)
        self.assertEqual(self.table.byIndex(0).remaining(self.clock.seconds()), 1)
        self.assertEqual(self.expired, [])
        self.clock.advance(0.1)
        self.assertEqual(len(self.table), 0)
        self.assertEqual(
            self.expired, [Change(removed=(mapping(8080, lease=60),), reason="expire")]
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_remainingNeverNegative(self) -> None:
        """
        A lease read after its end reports 0, not a negative number.
        """
        self.assertEqual(mapping(lease=10).remaining(11), 0)

    def test_timerEarly(self) -> None:
        """
        A reactor that runs the lease timer a little early (asyncio's may)
        does not cut the lease short.
        """
        self.add(mapping(8080, lease=60))
        self.clock.advance(59.999)
        (call,) = self.clock.getDelayedCalls()
        early = (call.func, call.args, call.kw)
        call.cancel()
        early[0](*early[1], **early[2])
        self.assertEqual(len(self.table), 1)
        self.clock.advance(0.001)
        self.assertEqual(len(self.table), 0)

    def test_sameMomentOneChange(self) -> None:
        """
        Mappings whose leases end together go in one change (one event and
        one kernel transaction); the others stay.
        """
        self.add(mapping(1000, lease=60), mapping(2000, lease=90), mapping(3000, lease=60))
        self.clock.advance(60)
        self.assertEqual(
            self.expired,
            [Change(removed=(mapping(1000, lease=60), mapping(3000, lease=60)), reason="expire")],
        )
        self.assertEqual(self.ports(), [2000])

    def test_deletedDoesNotExpire(self) -> None:
        """
        A deleted mapping is not reported as expired later.
        """
        self.add(mapping(1000, lease=60), mapping(2000, lease=90))
        self.remove(("", 1000, "TCP"))
        self.clock.advance(60)
        self.assertEqual(self.expired, [])
        self.clock.advance(30)
        self.assertEqual(len(self.expired), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_expiredCallbackFails(self) -> None:
        """
        A failing expiry handler is logged; the mapping is gone anyway and
        later leases still run out.
        """

        def broken(change: Change) -> None:
            raise ZeroDivisionError()

        table = PortMappingTable("isp1", self.clock, expired=broken)
        table.apply(table.planAdd(mapping(1000, lease=10)))
        table.apply(table.planAdd(mapping(2000, lease=20)))
        with capturedLogs() as events:
            self.clock.advance(10)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual([e.get("wan") for e in events if "log_failure" in e], ["isp1"])
        self.assertEqual(len(table), 1)
        self.clock.advance(10)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(table), 0)

    def test_stop(self) -> None:
        """
        After the service stops, no timer of the table is left and the
        mappings are still there to be saved.
        """
        self.add(mapping(1000, lease=60), mapping(2000, lease=90))
        self.table.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(1000)
        self.assertEqual(len(self.table), 2)
        self.assertEqual(self.expired, [])

    def test_applyAfterStop(self) -> None:
        """
        A table used again after stop() runs out every lease that ended,
        not just the new mapping's.
        """
        self.add(mapping(1000, lease=60))
        self.table.stop()
        self.add(mapping(2000, lease=90))
        self.clock.advance(60)
        self.assertEqual(self.ports(), [2000])


class UndoTests(TableTestCase):
    def test_undoDelete(self) -> None:
        """
        A delete taken back (the kernel refused it) puts the mapping back at
        its index, and its lease still runs out on time.
        """
        self.add(mapping(1000), mapping(2000, lease=50), mapping(3000))
        change = self.remove(("", 2000, "TCP"))
        self.table.undo(change)
        self.assertEqual(self.ports(), [1000, 2000, 3000])
        self.clock.advance(50)
        self.assertEqual(self.ports(), [1000, 3000])
        self.assertEqual(
            self.expired, [Change(removed=(mapping(2000, lease=50),), reason="expire")]
        )

    def test_undoAdd(self) -> None:
        """
        An add taken back leaves nothing: no entry, no expiry later.
        """
        change = self.add(mapping(1000, lease=50))
        self.table.undo(change)
        self.assertEqual(len(self.table), 0)
        self.clock.advance(50)
        self.assertEqual(self.expired, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_undoRefresh(self) -> None:
        """
        A refresh taken back restores the old mapping at its index with its
        old lease.
        """
        old = mapping(2000, lease=50, description="old")
        self.add(mapping(1000), old, mapping(3000))
        change = self.add(mapping(2000, lease=500, description="new"))
        self.table.undo(change)
        self.assertEqual(self.table.byIndex(1), old)
        self.clock.advance(50)
        self.assertEqual(self.ports(), [1000, 3000])

    def test_undoExpiredMeanwhile(self) -> None:
        """
        A mapping put back after its lease ended goes again at once, through
        the expiry handler.
        """
        change = self.remove(*[self.add(mapping(1000, lease=10)).added[0].key])
        self.clock.advance(20)
        self.table.undo(change)
        self.clock.advance(0)
        self.assertEqual(len(self.table), 0)
        self.assertEqual(len(self.expired), 1)

    def test_undoAfterCompaction(self) -> None:
        """
        A mapping put back after much churn (the index was compacted
        meanwhile) still returns to its place.
        """
        self.add(mapping(1, lease=10**6), mapping(2, lease=10**6), mapping(3, lease=10**6))
        change = self.remove(("", 2, "TCP"))
        for port in range(10, 3000):
            self.add(mapping(port))
            self.remove(("", port, "TCP"))
        self.table.undo(change)
        self.assertEqual(self.ports(), [1, 2, 3])

    def test_staleChange(self) -> None:
        """
        A change applied twice, or planned before the table changed, is
        refused and changes nothing.
        """
        self.add(mapping(1000))
        change = self.table.planAdd(mapping(2000))
        self.table.apply(change)
        self.assertRaises(StaleChange, self.table.apply, change)
        delete = self.table.planRemove([("", 1000, "TCP"), ("", 2000, "TCP")])
        self.remove(("", 2000, "TCP"))
        self.assertRaises(StaleChange, self.table.apply, delete)
        self.assertEqual(self.ports(), [1000])
        self.assertRaises(StaleChange, self.table.undo, change)


class FreePortTests(TableTestCase):
    def anyPort(self, port: int) -> bool:
        return True

    def test_free(self) -> None:
        """
        A free port is given as asked.
        """
        self.assertEqual(self.table.freePort("TCP", 8080, CLIENT, self.anyPort), 8080)

    def test_heldBySameClient(self) -> None:
        """
        The client's own port is given back (AddAnyPortMapping then
        overwrites its mapping), also when held for one remote host.
        """
        self.add(mapping(8080, CLIENT, remoteHost=REMOTE))
        self.assertEqual(self.table.freePort("TCP", 8080, CLIENT, self.anyPort), 8080)

    def test_nearestFirst(self) -> None:
        """
        A port held by another client is replaced by the nearest free one,
        searching above before below, skipping held and forbidden ports; the
        other protocol does not count.
        """
        self.add(mapping(8080, OTHER), mapping(8081, OTHER), mapping(8079, OTHER, protocol="UDP"))
        self.assertEqual(self.table.freePort("TCP", 8080, CLIENT, self.anyPort), 8079)
        self.assertEqual(self.table.freePort("TCP", 8081, CLIENT, self.anyPort), 8082)
        self.assertEqual(
            self.table.freePort("TCP", 8080, CLIENT, lambda port: port not in (8079, 8082)), 8078
        )
        self.assertEqual(
            self.table.freePort("UDP", 8079, CLIENT, lambda port: port != 8079), 8080
        )

    def test_forbiddenWanted(self) -> None:
        """
        A free port the permission rules forbid is not given.
        """
        self.assertEqual(self.table.freePort("TCP", 80, CLIENT, lambda p: p >= 1024), 1024)

    def test_staticHeld(self) -> None:
        """
        A configured port is never offered, not even to its own client.
        """
        self.table.apply(self.table.planConfigure([static(2222, CLIENT)]))
        self.assertEqual(self.table.freePort("TCP", 2222, CLIENT, self.anyPort), 2223)

    def test_edges(self) -> None:
        """
        The search stays within 1-65535.
        """
        self.add(mapping(65535, OTHER), mapping(1, OTHER))
        self.assertEqual(self.table.freePort("TCP", 65535, CLIENT, self.anyPort), 65534)
        self.assertEqual(self.table.freePort("TCP", 1, CLIENT, self.anyPort), 2)
        self.assertRaises(ValueError, self.table.freePort, "TCP", 0, CLIENT, self.anyPort)

    def test_exhausted(self) -> None:
        """
        When every allowed port is held, there is none (728 for the caller).
        """
        allowed = range(5000, 5004).__contains__
        self.add(*(mapping(port, OTHER) for port in range(5000, 5004)))
        self.assertIsNone(self.table.freePort("TCP", 5001, CLIENT, allowed))
        self.assertIsNone(self.table.freePort("TCP", 100, CLIENT, lambda port: False))


class RestoreTests(TableTestCase):
    def test_restore(self) -> None:
        """
        Saved mappings come back in their order with their leases; those
        whose lease ended while gatewayd was down (or ends right now), and
        repeated keys, are dropped and returned.
        """
        self.clock.advance(1000)
        saved = [
            mapping(3000, lease=2000),
            mapping(1000, lease=500),
            mapping(2000, lease=1000),
            mapping(4000, lease=1500),
            mapping(3000, OTHER, lease=3000),
        ]
        dropped = self.table.restore(saved)
        self.assertEqual(dropped, [mapping(1000, lease=500), mapping(2000, lease=1000), saved[-1]])
        self.assertEqual(self.ports(), [3000, 4000])
        self.assertEqual(self.table.byIndex(0).remaining(self.clock.seconds()), 1000)
        self.clock.advance(500)
        self.assertEqual(self.ports(), [3000])
        self.assertEqual(len(self.expired), 1)

    def test_configurationWins(self) -> None:
        """
        The configuration's static mappings come back with the saved ones;
        a saved mapping on a configured port is dropped, wherever it is in
        the list.
        """
        saved = [mapping(2222, OTHER, remoteHost=REMOTE), mapping(8080)]
        dropped = self.table.restore(saved + [static(2222), static(23)])
        self.assertEqual(dropped, [saved[0]])
        self.assertEqual(list(self.table), [mapping(8080), static(2222), static(23)])
        self.assertEqual(self.table.planConfigure([static(2222), static(23)]).added, ())

class MappingTests(SynchronousTestCase):
    def test_invalid(self) -> None:
        """
        Values the table could not hold are refused where they are made.
        """
        for bad in (
            dict(protocol="tcp"),
            dict(externalPort=0),
            dict(internalPort=65536),
            dict(internalPort=True),
            dict(internalClient=""),
            dict(expiresAt=None),
            dict(static=True),
        ):
            self.assertRaises(ValueError, replace, mapping(), **bad)

    def test_natMapping(self) -> None:
        """
        What the NAT backend installs for a mapping.
        """
        self.assertEqual(
            mapping(8080, remoteHost=REMOTE, internalPort=80).natMapping("isp1", "eth1"),
            NATMapping("isp1", "eth1", "TCP", 8080, REMOTE, CLIENT, 80, True),
        )
