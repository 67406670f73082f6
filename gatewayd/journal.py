# -*- test-case-name: tests.unit.test_journal -*-
"""
Keyed records that survive a restart, with a durable write per change that
costs O(1): an append-only journal next to a snapshot.

Two files in the directory, for a journal named C{<name>}::

    <name>.snapshot   {"version": 1, "generation": G, "records": {key: value, ...}}
    <name>.journal    {"op": "start", "generation": G}          (first line)
                      {"op": "put", "key": "k", "value": ...}   (one change a line)
                      {"op": "delete", "key": "k"}

Changes are applied to the in-memory view at once; the lines queued during
one reactor turn are appended by one C{write} and one C{fdatasync}, in the
runner's thread, and only then do their L{Deferred}s fire. One write is in
flight at a time, so the file holds the changes in the order they were made.

Compaction writes the whole view as a new snapshot with the next
generation, and then a new journal that starts with that generation. The
rename of the snapshot is the single commit point: a journal whose
generation is older than the snapshot's is already contained in it and is
ignored. So after a crash at any point the files hold either the old
snapshot and the old journal, or the new snapshot (with either journal),
and both load every acknowledged change.

Files that cannot be read or parsed are moved aside as
C{<file>.corrupt-<UTC time>} (logged with the new name) and loading goes on
with what is good; see L{Journal.load}.
"""

from __future__ import annotations

import errno
import json
import os
import re
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Mapping

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from gatewayd.state import Runner, StateDirError, corruptName

VERSION = 1
"""The snapshot format this module writes and reads."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
_OPS = frozenset({"put", "delete"})


class CorruptFile(ValueError):
    """
    A journal or snapshot does not hold what this module writes.
    """


@dataclass
class Replay:
    """
    What a journal file holds.

    @ivar generation: the generation on its first line, or L{None} if that
        line is damaged.
    @ivar changes: the readable changes, in order: C{(key, value)} for a
        put, C{(key, DELETED)} for a delete.
    @ivar torn: the last line is incomplete (a write cut short by a crash;
        that change was never acknowledged).
    @ivar corrupt: the numbers (from 1) of unreadable lines before the last.
    """

    generation: int | None = None
    changes: list[tuple[str, object]] = field(default_factory=list)
    torn: bool = False
    corrupt: list[int] = field(default_factory=list)


DELETED = object()
"""The value of a delete in L{Replay.changes}."""


def encodeSnapshot(generation: int, records: Mapping[str, object]) -> bytes:
    """
    @return: the snapshot document for C{records}.
    """
    document = {"version": VERSION, "generation": generation, "records": records}
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode("ascii") + b"\n"


def parseSnapshot(data: bytes) -> tuple[int, dict[str, object]]:
    """
    @return: the generation and the records of a snapshot document.
    @raise CorruptFile: if C{data} is not one.
    """
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise CorruptFile(f"not JSON ({e})") from None
    if not isinstance(document, dict) or document.get("version") != VERSION:
        raise CorruptFile(f"not a version {VERSION} snapshot")
    generation, records = document.get("generation"), document.get("records")
    if not _isGeneration(generation) or not isinstance(records, dict):
        raise CorruptFile("no generation or no records")
    return generation, records


def encodeStart(generation: int) -> bytes:
    """
    @return: the first line of a journal of C{generation}.
    """
    return b'{"op":"start","generation":%d}\n' % (generation,)


def encodePut(key: str, value: object) -> tuple[bytes, object]:
    """
    @return: the journal line that puts C{value} at C{key}, and the value as
        it will be read back (JSON has lists where Python had tuples).
    @raise TypeError: if C{key} is not a string or C{value} is not JSON.
    @raise ValueError: if C{value} holds a NaN or an infinity.
    """
    if not isinstance(key, str):
        raise TypeError(f"journal keys are strings, not {type(key).__name__}")
    encoded = json.dumps(value, separators=(",", ":"), allow_nan=False)
    line = f'{{"op":"put","key":{json.dumps(key)},"value":{encoded}}}\n'
    return line.encode("ascii"), json.loads(encoded)


def encodeDelete(key: str) -> bytes:
    """
    @return: the journal line that deletes C{key}.
    """
    if not isinstance(key, str):
        raise TypeError(f"journal keys are strings, not {type(key).__name__}")
    return f'{{"op":"delete","key":{json.dumps(key)}}}\n'.encode("ascii")


def parseJournal(data: bytes) -> Replay:
    """
    Read a journal file, line by line. An unreadable last line is C{torn};
    unreadable lines before it are C{corrupt}; every readable change is
    kept, whatever surrounds it.
    """
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    replay = Replay()
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict):
                raise CorruptFile("not an object")
            op = entry.get("op")
            if number == 1:
                if op != "start" or not _isGeneration(entry.get("generation")):
                    raise CorruptFile("no start line")
                replay.generation = entry["generation"]
                continue
            key = entry.get("key")
            if op not in _OPS or not isinstance(key, str) or (op == "put") != ("value" in entry):
                raise CorruptFile("not a change")
        except (ValueError, RecursionError):
            if number == len(lines):
                replay.torn = True
            else:
                replay.corrupt.append(number)
            continue
        replay.changes.append((key, entry["value"] if op == "put" else DELETED))
    return replay


def _isGeneration(value: object) -> bool:
    return type(value) is int and value >= 0


def _writeAll(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # each round writes at least one byte, or raises
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


def _syncDirectory(directory: FilePath[str]) -> None:
    fd = os.open(directory.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(target: FilePath[str], data: bytes) -> int:
    """
    Replace C{target} with C{data} durably: C{<target>.tmp}, C{fsync},
    C{rename}, C{fsync} of the directory.

    @return: a descriptor of the new file, open for appending.
    """
    temporary = target.siblingExtension(".tmp")
    fd = os.open(
        temporary.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o600
    )
    try:
        _writeAll(fd, data)
        os.fsync(fd)
        os.replace(temporary.path, target.path)
    except BaseException:
        os.close(fd)
        with suppress(OSError):
            os.unlink(temporary.path)
        raise
    try:
        _syncDirectory(target.parent())
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Files:
    """
    The blocking side: runs in the writer's thread, one call at a time.

    @ivar snapshot: the snapshot file.
    @ivar journal: the journal file.
    """

    def __init__(self, directory: FilePath[str], name: str) -> None:
        self.directory = directory
        self.snapshot = directory.child(f"{name}.snapshot")
        self.journal = directory.child(f"{name}.journal")
        self._fd: int | None = None

    def append(self, data: bytes) -> None:
        """
        Append C{data} to the journal and wait until it is on disk.
        """
        if self._fd is None:
            raise OSError(errno.EBADF, "the journal is not open")
        _writeAll(self._fd, data)
        os.fdatasync(self._fd)

    def compact(self, generation: int, records: Mapping[str, object]) -> None:
        """
        Write C{records} as the snapshot of C{generation} (the commit
        point), then start an empty journal of that generation.
        """
        os.close(_replace(self.snapshot, encodeSnapshot(generation, records)))
        fd = _replace(self.journal, encodeStart(generation))
        self.close()
        self._fd = fd

    def close(self) -> None:
        """
        Close the journal (no I/O wait: everything written was synced).
        """
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class Journal:
    """
    A durable C{str}-keyed map of JSON values, for one owner.

    Call L{load} once, before the reactor runs; then L{put}, L{delete} and
    L{compact} from the reactor thread, and L{close} when stopping.

    If a write fails, the L{Deferred}s of its changes fail and the view
    keeps them: the caller that made a change undoes it (with another
    L{put} or L{delete}) if it tells its client that the change failed. The
    journal file may then hold part of the failed write, so the next write
    is a compaction, which replaces both files.

    @ivar records: the current view, read-only; treat its values as
        read-only too. Each value is what a restart would read back.
    """

    log = Logger()

    def __init__(
        self,
        directory: FilePath[str],
        name: str,
        reactor: IReactorTime,
        runner: Runner,
        *,
        compactAfter: int = 10000,
    ) -> None:
        """
        @param directory: where the files are (created, private, by
            L{load} if missing).
        @param name: the files' base name: letters, digits, C{-}, C{_}.
        @param reactor: schedules the end-of-turn write and names files
            moved aside.
        @param runner: runs the blocking writes (in a thread, in the daemon).
        @param compactAfter: compact when the journal has more changes than
            this and than there are records (so that compaction costs O(1)
            per change however large the view is).
        """
        if not _NAME.match(name):
            raise ValueError(f"bad journal name {name!r}")
        if compactAfter < 1:
            raise ValueError("compactAfter must be at least 1")
        self._files = _Files(directory, name)
        self._reactor = reactor
        self._runner = runner
        self._compactAfter = compactAfter
        self._records: dict[str, object] = {}
        self.records: Mapping[str, object] = MappingProxyType(self._records)
        self._generation = 0
        self._journalLines = 0
        self._dirty = True
        self._compactWanted = False
        self._lines: list[bytes] = []
        self._waiting: list[Deferred[None]] = []
        self._writing = False
        self._turn: IDelayedCall | None = None
        self._idle: list[Deferred[None]] = []
        self._loaded = False
        self._closed = False

    # Startup

    def load(self) -> dict[str, object]:
        """
        Read the snapshot and replay the journal, blocking; then write them
        out again as a new snapshot and an empty journal.

        Never raises for what it finds in the files:
          - a torn last journal line is ignored (logged);
          - an unreadable or corrupt snapshot is moved aside (logged with
            its new name) and the journal is replayed onto an empty view:
            records not changed since the last compaction are then gone
            from the view (they are still in the file moved aside);
          - a journal with unreadable lines before the last is moved aside
            (logged) after its readable changes were applied;
          - a journal older than the snapshot (a crash during compaction)
            is ignored: the snapshot already holds it;
          - if the new files cannot be written, that is logged and the next
            change retries.

        @return: the records.
        @raise StateDirError: if the directory cannot be created.
        """
        if self._loaded:
            raise RuntimeError("a journal is loaded once")
        self._loaded = True
        files = self._files
        self._prepareDirectory()
        now = self._reactor.seconds()

        snapshotGeneration = None
        data = self._read(files.snapshot, now)
        if data is not None:
            try:
                snapshotGeneration, records = parseSnapshot(data)
            except CorruptFile as e:
                aside = self._setAside(files.snapshot, now)
                self.log.error(
                    "The snapshot {path} is corrupt ({why}); moved it to {aside} and "
                    "continued with the journal only",
                    path=files.snapshot.path,
                    why=str(e),
                    aside=aside,
                )
            else:
                self._records.update(records)

        journalGeneration = None
        data = self._read(files.journal, now)
        if data is not None:
            replay = parseJournal(data)
            journalGeneration = replay.generation
            if (
                replay.generation is not None
                and snapshotGeneration is not None
                and replay.generation < snapshotGeneration
            ):
                self.log.info(
                    "Ignored {path}: generation {generation} is already in the snapshot",
                    path=files.journal.path,
                    generation=replay.generation,
                )
            else:
                if (
                    replay.generation is not None
                    and snapshotGeneration is not None
                    and replay.generation > snapshotGeneration
                ):
                    self.log.warn(
                        "{path} is newer than the snapshot (generation {generation}, not "
                        "{expected}; was an old snapshot put back?); replayed it anyway",
                        path=files.journal.path,
                        generation=replay.generation,
                        expected=snapshotGeneration,
                    )
                self._replay(replay, now)

        generations = [g for g in (snapshotGeneration, journalGeneration) if g is not None]
        try:
            self._files.compact(max(generations, default=0) + 1, self._records)
        except OSError:
            self.log.failure(
                "Could not write {path}; the next change will try again",
                path=files.snapshot.path,
            )
        else:
            self._compacted(None, max(generations, default=0) + 1)
        self.log.info(
            "Loaded {count} records from {path}", count=len(self._records), path=files.journal.path
        )
        return dict(self._records)

    def _prepareDirectory(self) -> None:
        where = self._files.directory.path
        try:
            os.makedirs(where, 0o700, exist_ok=True)
        except OSError as e:
            raise StateDirError(f"cannot create {where} ({e.strerror})") from None
        for leftover in (self._files.snapshot, self._files.journal):
            with suppress(FileNotFoundError):
                os.unlink(leftover.siblingExtension(".tmp").path)
                self.log.info(
                    "Removed {name}, left by an interrupted write",
                    name=leftover.basename() + ".tmp",
                )

    def _read(self, path: FilePath[str], now: float) -> bytes | None:
        try:
            return path.getContent()
        except FileNotFoundError:
            return None
        except OSError as e:
            aside = self._setAside(path, now)
            self.log.error(
                "Could not read {path} ({why}); moved it to {aside}",
                path=path.path,
                why=e.strerror,
                aside=aside,
            )
            return None

    def _replay(self, replay: Replay, now: float) -> None:
        records = self._records
        for key, value in replay.changes:
            if value is DELETED:
                records.pop(key, None)
            else:
                records[key] = value
        path = self._files.journal.path
        if replay.torn:
            self.log.warn(
                "Ignored the incomplete last line of {path}, left by a write that a "
                "crash interrupted (it was never acknowledged)",
                path=path,
            )
        if replay.corrupt:
            aside = self._setAside(self._files.journal, now)
            self.log.error(
                "Lines {lines} of {path} are corrupt; kept the {count} readable changes "
                "and moved the file to {aside}",
                lines=replay.corrupt,
                path=path,
                count=len(replay.changes),
                aside=aside,
            )

    def _setAside(self, path: FilePath[str], now: float) -> str | None:
        """
        Give a damaged file a second name, C{<file>.corrupt-<UTC time>}; a
        hard link, so that the file stays where it is until the recovered
        view is committed (falls back to renaming it).

        @return: the new name, or L{None} if the file could not be kept.
        """
        try:
            aside = corruptName(path.parent(), path.basename(), now)
            try:
                os.link(path.path, aside.path)
            except OSError:
                os.rename(path.path, aside.path)
        except OSError:
            self.log.failure("Could not move {path} aside; it will be replaced", path=path.path)
            return None
        return aside.path

    # Changes

    def put(self, key: str, value: object) -> Deferred[None]:
        """
        Set C{key} to C{value} (a JSON value) now, durably soon.

        @return: a L{Deferred} that fires once the change is on disk, or
            fails with the L{OSError} that kept it off.
        @raise TypeError: if C{key} is not a string or C{value} is not JSON
            (nothing changed).
        @raise ValueError: if C{value} holds a NaN or an infinity.
        """
        self._checkOpen()
        line, readBack = encodePut(key, value)
        self._records[key] = readBack
        return self._queue(line)

    def delete(self, key: str) -> Deferred[None]:
        """
        Remove C{key} (if present) now, durably soon.

        @return: as for L{put}.
        """
        self._checkOpen()
        line = encodeDelete(key)
        self._records.pop(key, None)
        return self._queue(line)

    def compact(self) -> Deferred[None]:
        """
        Replace the snapshot with the current view and empty the journal,
        after the writes already queued.

        @return: a L{Deferred} that fires once that is on disk.
        """
        self._checkOpen()
        self._compactWanted = True
        return self._queue(None)

    def close(self) -> Deferred[None]:
        """
        Write what is queued and close the journal file; later changes are
        refused.

        @return: a L{Deferred} that fires when nothing is left to write.
        """
        if self._closed:
            return succeed(None)
        self._closed = True
        if self._turn is not None:
            self._turn.cancel()
            self._turn = None
        self._idle.append(done := Deferred())
        self._write()
        return done

    def _checkOpen(self) -> None:
        if not self._loaded:
            raise RuntimeError("load the journal first")
        if self._closed:
            raise RuntimeError("the journal is closed")

    def _queue(self, line: bytes | None) -> Deferred[None]:
        if line is not None:
            self._lines.append(line)
        self._waiting.append(written := Deferred())
        if self._turn is None:
            self._turn = self._reactor.callLater(0, self._endOfTurn)
        return written

    def _endOfTurn(self) -> None:
        self._turn = None
        self._write()

    def _write(self) -> None:
        """
        Start writing everything queued, unless a write is in flight (its
        end calls this again).
        """
        if self._writing:
            return
        if not self._waiting:
            self._becameIdle()
            return
        if self._turn is not None:
            self._turn.cancel()
            self._turn = None
        lines, waiting = self._lines, self._waiting
        self._lines, self._waiting = [], []
        journalLines = self._journalLines + len(lines)
        self._writing = True
        if (
            self._dirty
            or self._compactWanted
            or journalLines > max(self._compactAfter, len(self._records))
        ):
            self._compactWanted = False
            generation = self._generation + 1
            work = partial(self._files.compact, generation, dict(self._records))
            written = maybeDeferred(self._runner, work)
            written.addCallback(self._compacted, generation)
        else:
            written = maybeDeferred(self._runner, partial(self._files.append, b"".join(lines)))
            written.addCallback(self._appended, journalLines)
        written.addErrback(self._failed, len(lines))
        written.addBoth(self._done, waiting)

    def _compacted(self, ignored: object, generation: int) -> None:
        self._generation = generation
        self._journalLines = 0
        self._dirty = False

    def _appended(self, ignored: object, journalLines: int) -> None:
        self._journalLines = journalLines

    def _failed(self, failure: Failure, count: int) -> Failure:
        self._dirty = True
        self.log.failure(
            "Could not write {count} changes to {path}; the next write replaces it",
            failure,
            count=count,
            path=self._files.journal.path,
        )
        return failure

    def _done(self, result: object, waiting: list[Deferred[None]]) -> None:
        self._writing = False
        for d in waiting:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(None)
        self._write()

    def _becameIdle(self) -> None:
        if not self._closed:
            return
        self._files.close()
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(None)

