# -*- test-case-name: tests.unit.test_wanipconnection -*-
"""
One WAN's port mappings end to end: the table, the kernel (through the NAT
backend), the journal on disk and the change counter control points watch.

A change is applied to the table at once (so the next request sees it),
then to the kernel and the journal; the caller's Deferred fires when both
have it, and if either fails the change is undone everywhere and the action
answers 501.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from twisted.logger import Logger

from gatewayd.errors import ActionFailed
from gatewayd.igd.portmap import Change, Key, PortMapping, PortMappingTable
from gatewayd.interfaces import INATBackend, NATMapping
from gatewayd.observers import Observers

#: The journal record of a WAN's SystemUpdateID.
_UPDATE_ID = "system-update-id"


def journalKey(wan: str, key: Key) -> str:
    """
    @return: the journal's key of the mapping C{key} of WAN C{wan}.
    """
    remoteHost, externalPort, protocol = key
    return f"{wan}/{protocol}/{externalPort}/{remoteHost}"


def toRecord(mapping: PortMapping) -> dict[str, object]:
    return {
        "remoteHost": mapping.remoteHost,
        "externalPort": mapping.externalPort,
        "protocol": mapping.protocol,
        "internalPort": mapping.internalPort,
        "internalClient": mapping.internalClient,
        "enabled": mapping.enabled,
        "description": mapping.description,
        "leaseDuration": mapping.leaseDuration,
        "expiresAt": mapping.expiresAt,
    }


def fromRecord(record: Any) -> PortMapping:
    """
    @raise ValueError: C{record} is not a mapping record.
    """
    try:
        mapping = PortMapping(
            remoteHost=str(record["remoteHost"]),
            externalPort=int(record["externalPort"]),
            protocol=str(record["protocol"]),
            internalPort=int(record["internalPort"]),
            internalClient=str(record["internalClient"]),
            enabled=bool(record["enabled"]),
            description=str(record["description"]),
            leaseDuration=int(record["leaseDuration"]),
            expiresAt=None if record["expiresAt"] is None else float(record["expiresAt"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a port mapping record: {e}") from None
    if mapping.protocol not in ("TCP", "UDP") or not 1 <= mapping.externalPort <= 65535:
        raise ValueError("not a port mapping record")
    return mapping


class WANMappings:
    """
    The port mappings of one WAN.

    @ivar table: the L{PortMappingTable}.
    @ivar systemUpdateID: the spec's SystemUpdateID: +1 per change.
    """

    log = Logger()

    def __init__(
        self,
        wan: str,
        interface: str,
        clock: Any,
        nat: INATBackend,
        journal: Any,
        *,
        capacity: int,
    ) -> None:
        self.wan = wan
        self.interface = interface
        self._clock = clock
        self._nat = nat
        self._journal = journal
        self._observers: Observers[[]] = Observers(f"the port mappings of WAN {wan}")
        self.table = PortMappingTable(wan, clock, capacity=capacity, expired=self._expired)
        self.systemUpdateID = 1

    def nat(self, mapping: PortMapping) -> NATMapping:
        return mapping.natMapping(self.wan, self.interface)

    def restore(self, records: dict[str, Any], static: Iterable[PortMapping]) -> None:
        """
        Bring back this WAN's mappings from the journal's C{records} (all
        WANs'), and add the configuration's static mappings; install them
        all in the kernel. Called once at start.
        """
        prefix = f"{self.wan}/"
        loaded: list[PortMapping] = []
        for key, record in records.items():
            if not key.startswith(prefix):
                continue
            if key == prefix + _UPDATE_ID:
                if isinstance(record, int) and record > 0:
                    self.systemUpdateID = record
                continue
            try:
                loaded.append(fromRecord(record))
            except ValueError as e:
                self.log.warn("WAN {wan}: dropped a damaged saved mapping {key}: {why}", wan=self.wan, key=key, why=e)
        staticMappings = list(static)
        staticKeys = {m.key for m in staticMappings}
        loaded = [m for m in loaded if m.key not in staticKeys and not m.static]
        dropped = self.table.restore(staticMappings + loaded)
        now = self._clock.seconds()
        for mapping in dropped:
            expired = mapping.expiresAt is not None and mapping.expiresAt <= now
            self.log.info(
                "WAN {wan}: dropped saved mapping {protocol} {port} -> {client}:{internal}: {why}",
                why="it expired while we were down" if expired else "its port is taken by another mapping",
                **self._fields(mapping),
            )
            self._journal.delete(journalKey(self.wan, mapping.key)).addErrback(self._logFailure)
        if len(self.table):
            self.log.info("WAN {wan}: restored {count} port mappings", wan=self.wan, count=len(self.table))

    def _fields(self, mapping: PortMapping) -> dict[str, object]:
        """
        @return: the log fields that name C{mapping} on this WAN.
        """
        return {
            "wan": self.wan,
            "protocol": mapping.protocol,
            "port": mapping.externalPort,
            "client": mapping.internalClient,
            "internal": mapping.internalPort,
        }

    def installed(self) -> list[NATMapping]:
        """
        @return: what the kernel should have for this WAN.
        """
        return [self.nat(m) for m in self.table]

    async def commit(self, change: Change) -> None:
        """
        Apply C{change} to the table, the kernel and the journal; all or
        nothing.

        @raise ActionFailed: the kernel or the disk refused it (the change
            is undone).
        """
        self.table.apply(change)
        try:
            await self._nat.apply(
                [self.nat(m) for m in change.added], [self.nat(m) for m in change.removed]
            )
        except Exception:
            self.table.undo(change)
            self.log.failure("WAN {wan}: the kernel refused a port mapping change", wan=self.wan)
            raise ActionFailed("the NAT backend failed")
        try:
            await self._record(change)
        except Exception:
            self.table.undo(change)
            self.log.failure("WAN {wan}: could not save a port mapping change", wan=self.wan)
            try:
                await self._nat.apply(
                    [self.nat(m) for m in change.removed], [self.nat(m) for m in change.added]
                )
            except Exception:
                self.log.failure("WAN {wan}: could not undo a port mapping change in the kernel", wan=self.wan)
            raise ActionFailed("could not save the change")
        self._bump()

    def _record(self, change: Change) -> Any:
        from twisted.internet.defer import gatherResults

        added = {m.key for m in change.added}
        writes = [
            self._journal.put(journalKey(self.wan, m.key), toRecord(m)) for m in change.added
        ] + [
            self._journal.delete(journalKey(self.wan, m.key))
            for m in change.removed
            if m.key not in added
        ]
        self.systemUpdateID = (self.systemUpdateID % 0xFFFFFFFF) + 1
        writes.append(self._journal.put(f"{self.wan}/{_UPDATE_ID}", self.systemUpdateID))
        return gatherResults(writes, consumeErrors=True)

    def addObserver(self, observer: Callable[[], None]) -> Callable[[], None]:
        """
        Call C{observer()} after every change of the table (PortMappingNumberOfEntries
        and SystemUpdateID are evented together).

        @return: a callable that removes the observer.
        """
        return self._observers.add(observer)

    def _bump(self) -> None:
        self._observers.notify()

    def _expired(self, change: Change) -> None:
        for mapping in change.removed:
            self.log.info(
                "WAN {wan}: lease of {protocol} {port} -> {client}:{internal} ran out",
                **self._fields(mapping),
            )
        d = self._nat.apply([], [self.nat(m) for m in change.removed])
        d.addCallback(lambda _: self._record(change))
        d.addCallbacks(lambda _: self._bump(), self._logFailure)

    def _logFailure(self, failure: Any) -> None:
        self.log.failure("WAN {wan}: removing an expired mapping failed", failure, wan=self.wan)

    def stop(self) -> None:
        self.table.stop()
