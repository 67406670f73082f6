"""
Tests for L{gatewayd.journal}: records that survive restarts and crashes.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from gatewayd.journal import DELETED, CorruptFile, Journal, parseJournal, parseSnapshot
from gatewayd.state import StateDirError, runSynchronously
from tests.support import temporaryPath

NOW = 1700000000.0
STAMP = "20231114T221320Z"

Work = Callable[[], None]


def listing(directory: FilePath[str]) -> list[str]:
    return sorted(os.listdir(directory.path))


def journalLines(directory: FilePath[str]) -> list[bytes]:
    return directory.child("m.journal").getContent().splitlines()


class CountingRunner:
    """
    Runs the work at once, and counts how often it was asked to.
    """

    def __init__(self) -> None:
        self.writes = 0

    def __call__(self, work: Work) -> Deferred[None]:
        self.writes += 1
        return runSynchronously(work)


class HeldRunner:
    """
    Keeps the work until the test releases it, like a busy thread.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[Work, Deferred[None]]] = []

    def __call__(self, work: Work) -> Deferred[None]:
        self.pending.append((work, d := Deferred()))
        return d

    def release(self) -> None:
        work, d = self.pending.pop(0)
        work()
        d.callback(None)


class SwitchRunner:
    """
    Fails every write with C{EIO} while C{broken} is true.
    """

    def __init__(self) -> None:
        self.broken = False

    def __call__(self, work: Work) -> Deferred[None]:
        if self.broken:
            return fail(OSError(errno.EIO, "Input/output error"))
        return runSynchronously(work)


def restart(directory: FilePath[str]) -> dict[str, object]:
    """
    @return: what a new daemon loads from C{directory}.
    """
    clock = Clock()
    clock.advance(NOW)
    journal = Journal(directory, "m", clock, runSynchronously)
    records = journal.load()
    journal.close()
    return records


@contextmanager
def crashPoints(
    testCase: SynchronousTestCase, directory: FilePath[str]
) -> Iterator[list[FilePath[str]]]:
    """
    Copy C{directory} before every file operation made in the block: each
    copy is what a daemon that died right there would find (every earlier
    operation done, none of the later ones).

    @return: the copies, in order, and one of the end state.
    """
    base = temporaryPath(testCase)
    base.makedirs()
    copies: list[FilePath[str]] = []
    copying = []

    def copy() -> None:
        if copying:
            return
        copying.append(True)
        try:
            target = base.child(str(len(copies)))
            shutil.copytree(directory.path, target.path)
            copies.append(target)
        finally:
            copying.pop()

    originals = {}
    for name in ["open", "write", "fsync", "fdatasync", "replace", "rename", "link", "unlink"]:
        originals[name] = original = getattr(os, name)

        def wrapper(*a: Any, __original: Any = original, **kw: Any) -> Any:
            copy()
            return __original(*a, **kw)

        testCase.patch(os, name, wrapper)
    try:
        yield copies
    finally:
        for name, original in originals.items():
            setattr(os, name, original)
    copy()


class JournalTestsMixin:
    def setUp(self) -> None:
        self.directory = temporaryPath(self)  # type: ignore[arg-type]
        self.clock = Clock()
        self.clock.advance(NOW)

    def journal(
        self, runner: Callable[[Work], Deferred[None]] = runSynchronously, **kw: Any
    ) -> Journal:
        journal = Journal(self.directory, "m", self.clock, runner, **kw)
        journal.load()
        return journal

    def committed(self) -> None:
        """
        Leave C{a} and C{b} in the snapshot, then change C{b} and add C{c}
        in the journal.
        """
        journal = self.journal()
        journal.put("a", 1)
        journal.put("b", 2)
        journal.compact()
        self.clock.advance(0)
        journal.put("b", 20)
        self.clock.advance(0)
        journal.put("c", 3)
        self.clock.advance(0)
        self.successResultOf(journal.close())


class RoundTripTests(JournalTestsMixin, SynchronousTestCase):
    def test_restart(self) -> None:
        """
        Records put, replaced and deleted come back as they were left after
        a restart.
        """
        journal = self.journal()
        written = [
            journal.put("isp1/TCP/8080", {"client": "192.168.1.10", "port": 80}),
            journal.put("isp1/UDP/5000", {"client": "192.168.1.11", "port": 5000}),
            journal.put("isp1/TCP/8080", {"client": "192.168.1.12", "port": 81}),
            journal.delete("isp1/UDP/5000"),
        ]
        self.clock.advance(0)
        for d in written:
            self.assertIsNone(self.successResultOf(d))
        expected = {"isp1/TCP/8080": {"client": "192.168.1.12", "port": 81}}
        self.assertEqual(dict(journal.records), expected)
        self.successResultOf(journal.close())
        self.assertEqual(restart(self.directory), expected)

    def test_firstStart(self) -> None:
        """
        A first start with no state directory creates it, private, and
        loads nothing.
        """
        self.assertEqual(dict(self.journal().records), {})
        self.assertEqual(stat.S_IMODE(os.stat(self.directory.path).st_mode), 0o700)
        self.assertEqual(listing(self.directory), ["m.journal", "m.snapshot"])
        mode = os.stat(self.directory.child("m.journal").path).st_mode
        self.assertEqual(stat.S_IMODE(mode), 0o600)

    def test_valuesAsRestartGivesThem(self) -> None:
        """
        The view shows each value as a restart will read it back (tuples
        become lists), and a value JSON cannot hold is refused without
        changing anything.
        """
        journal = self.journal()
        journal.put("k", (1, "a"))
        self.assertEqual(journal.records["k"], [1, "a"])
        self.assertRaises(TypeError, journal.put, "k", {1, 2})
        self.assertRaises(ValueError, journal.put, "k", float("nan"))
        self.assertRaises(TypeError, journal.put, 7, "seven")
        self.assertRaises(TypeError, journal.delete, 7)
        self.assertRaises(TypeError, setitem, journal.records, "k", 1)
        self.assertEqual(dict(journal.records), {"k": [1, "a"]})
        self.clock.advance(0)
        self.assertEqual(restart(self.directory), {"k": [1, "a"]})

    def test_unicodeAndNewlines(self) -> None:
        """
        Keys and values with newlines and non-ASCII text stay one journal
        line each and come back intact.
        """
        journal = self.journal()
        journal.put("line\nbreak", "caf\u00e9\n\u2603")
        self.clock.advance(0)
        self.assertEqual(len(journalLines(self.directory)), 2)
        self.assertEqual(restart(self.directory), {"line\nbreak": "caf\u00e9\n\u2603"})

    def test_loadFirst(self) -> None:
        """
        Changes before L{Journal.load} and a second load are programming
        errors.
        """
        journal = Journal(self.directory, "m", self.clock, runSynchronously)
        self.assertRaises(RuntimeError, journal.put, "k", 1)
        journal.load()
        self.assertRaises(RuntimeError, journal.load)

    def test_badName(self) -> None:
        """
        File names cannot reach outside the directory.
        """
        for name in ["../x", "a/b", ".hidden", "", "a.b"]:
            self.assertRaises(
                ValueError, Journal, self.directory, name, self.clock, runSynchronously
            )

    def test_directoryIsAFile(self) -> None:
        """
        A state directory that is a file stops startup with a clear message.
        """
        self.directory.setContent(b"")
        journal = Journal(self.directory, "m", self.clock, runSynchronously)
        error = self.assertRaises(StateDirError, journal.load)
        self.assertIn(self.directory.path, str(error))


def setitem(mapping: Any, key: str, value: object) -> None:
    mapping[key] = value


class BatchingTests(JournalTestsMixin, SynchronousTestCase):
    def test_oneWritePerTurn(self) -> None:
        """
        Any number of changes made in one reactor turn cost one write and
        one fsync together; the next turn's changes are the next write.
        """
        runner = CountingRunner()
        journal = self.journal(runner)
        written = [journal.put(f"k{i}", i) for i in range(100)]
        self.assertEqual(runner.writes, 0)
        self.clock.advance(0)
        self.assertEqual(runner.writes, 1)
        for d in written:
            self.successResultOf(d)
        self.assertEqual(len(journalLines(self.directory)), 101)
        journal.delete("k1")
        journal.delete("k2")
        self.clock.advance(0)
        self.assertEqual(runner.writes, 2)

    def test_acknowledgedAfterWrite(self) -> None:
        """
        A change's Deferred fires only once its write and fsync are done,
        and the reactor thread does neither itself.
        """
        synced: list[int] = []
        original = os.fdatasync
        self.patch(os, "fdatasync", lambda fd: (synced.append(fd), original(fd))[1])
        runner = HeldRunner()
        journal = self.journal(runner)
        d = journal.put("k", 1)
        self.clock.advance(0)
        self.assertNoResult(d)
        self.assertEqual((journalLines(self.directory)[1:], synced), ([], []))
        runner.release()
        self.successResultOf(d)
        self.assertEqual(len(synced), 1)
        self.assertEqual(journalLines(self.directory)[1:], [b'{"op":"put","key":"k","value":1}'])

    def test_oneWriteAtATime(self) -> None:
        """
        Changes made while a write is in flight wait for it and are then
        written together, in order.
        """
        runner = HeldRunner()
        journal = self.journal(runner)
        first = journal.put("k", "first")
        self.clock.advance(0)
        second = journal.put("k", "second")
        third = journal.put("other", 3)
        self.clock.advance(0)
        self.assertEqual(len(runner.pending), 1)
        runner.release()
        self.successResultOf(first)
        self.assertNoResult(second)
        self.assertEqual(len(runner.pending), 1)
        runner.release()
        self.successResultOf(second)
        self.successResultOf(third)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(restart(self.directory), {"k": "second", "other": 3})


class CloseTests(JournalTestsMixin, SynchronousTestCase):
    def test_closeFlushes(self) -> None:
        """
        Closing writes what is queued and leaves no timer behind; later
        changes are refused.
        """
        journal = self.journal()
        d = journal.put("k", 1)
        closed = journal.close()
        self.successResultOf(d)
        self.successResultOf(closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertRaises(RuntimeError, journal.put, "k", 2)
        self.successResultOf(journal.close())
        self.assertEqual(restart(self.directory), {"k": 1})

    def test_closeWaitsForWrite(self) -> None:
        """
        Closing during a write waits for it and for what queued behind it.
        """
        runner = HeldRunner()
        journal = self.journal(runner)
        journal.put("a", 1)
        self.clock.advance(0)
        journal.put("b", 2)
        closed = journal.close()
        self.assertNoResult(closed)
        runner.release()
        self.assertNoResult(closed)
        runner.release()
        self.successResultOf(closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(restart(self.directory), {"a": 1, "b": 2})

    def test_closeIdle(self) -> None:
        """
        Closing with nothing to write is immediate.
        """
        self.successResultOf(self.journal().close())
        self.assertEqual(self.clock.getDelayedCalls(), [])


class CompactionTests(JournalTestsMixin, SynchronousTestCase):
    def test_automatic(self) -> None:
        """
        The journal never grows much beyond C{compactAfter} changes, and
        everything survives the compactions.
        """
        journal = self.journal(compactAfter=10)
        sizes = []
        for i in range(35):
            journal.put(f"k{i % 3}", i)
            self.clock.advance(0)
            sizes.append(len(journalLines(self.directory)))
        self.assertLessEqual(max(sizes), 11)
        self.assertIn(1, sizes)
        self.assertEqual(restart(self.directory), {"k0": 33, "k1": 34, "k2": 32})

    def test_explicit(self) -> None:
        """
        L{Journal.compact} moves everything into the snapshot, after the
        changes queued before it, and empties the journal.
        """
        journal = self.journal()
        journal.put("a", 1)
        journal.put("b", 2)
        journal.delete("a")
        d = journal.compact()
        self.clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(len(journalLines(self.directory)), 1)
        _, records = parseSnapshot(self.directory.child("m.snapshot").getContent())
        self.assertEqual(records, {"b": 2})
        self.assertEqual(restart(self.directory), {"b": 2})

    def test_largeViewNotRewrittenOften(self) -> None:
        """
        A view larger than C{compactAfter} is not rewritten every few
        changes: compaction waits until the journal is as long as the view,
        so each change costs O(1) on average.
        """
        journal = self.journal(compactAfter=2)
        for i in range(50):
            journal.put(f"k{i}", i)
        self.clock.advance(0)
        self.assertEqual(len(journalLines(self.directory)), 51)
        journal.put("k0", "again")
        self.clock.advance(0)
        self.assertEqual(len(journalLines(self.directory)), 1)
        self.assertEqual(len(restart(self.directory)), 50)

    def test_crashDuringCompaction(self) -> None:
        """
        A daemon that dies at any point of a compaction comes back with
        every acknowledged change: with the state before the compaction's
        batch or after it, never a mix, and never back after forward.
        """
        journal = self.journal()
        for i in range(5):
            journal.put(f"k{i}", i)
        self.clock.advance(0)
        before = dict(journal.records)
        journal.put("k0", "changed")
        journal.delete("k1")
        journal.put("new", True)
        compacted = journal.compact()
        with crashPoints(self, self.directory) as copies:
            self.clock.advance(0)
        self.successResultOf(compacted)
        after = dict(journal.records)
        self.assertGreater(len(copies), 8)
        states = [restart(copy) for copy in copies]
        for state in states:
            self.assertIn(state, [before, after])
        firstAfter = states.index(after)
        self.assertEqual(states[firstAfter:], [after] * (len(states) - firstAfter))

    def test_crashDuringAppend(self) -> None:
        """
        A daemon that dies at any point of an ordinary write comes back with
        the state before or after that batch.
        """
        journal = self.journal()
        journal.put("a", 1)
        self.clock.advance(0)
        before = dict(journal.records)
        journal.put("a", 2)
        journal.put("b", 3)
        with crashPoints(self, self.directory) as copies:
            self.clock.advance(0)
        after = dict(journal.records)
        states = [restart(copy) for copy in copies]
        self.assertEqual(states[0], before)
        self.assertEqual(states[-1], after)
        for state in states:
            self.assertIn(state, [before, after])

    def test_staleJournalIgnored(self) -> None:
        """
        A journal left by a crash after a compaction committed its snapshot
        is not replayed over it (it would bring back old values).
        """
        journal = self.journal()
        journal.put("k", "old")
        self.clock.advance(0)
        stale = self.directory.child("m.journal").getContent()
        journal.put("k", "new")
        journal.compact()
        self.clock.advance(0)
        self.directory.child("m.journal").setContent(stale)
        with capturedLogs() as events:
            self.assertEqual(restart(self.directory), {"k": "new"})
        self.assertTrue([e for e in events if "already in the snapshot" in e["log_format"]])

    def test_journalNewerThanSnapshot(self) -> None:
        """
        If an older snapshot was put back by hand, the newer journal is
        still replayed over it, with a warning.
        """
        journal = self.journal()
        journal.put("k", "old")
        journal.compact()
        self.clock.advance(0)
        old = self.directory.child("m.snapshot").getContent()
        journal.put("k", "new")
        journal.compact()
        self.clock.advance(0)
        journal.put("x", 1)
        self.clock.advance(0)
        self.directory.child("m.snapshot").setContent(old)
        with capturedLogs() as events:
            self.assertEqual(restart(self.directory), {"k": "old", "x": 1})
        [warning] = [e for e in events if "newer than the snapshot" in e["log_format"]]
        self.assertEqual(warning["log_level"].name, "warn")

    def test_leftoverTemporaryRemoved(self) -> None:
        """
        A temporary file left by a crash in the middle of a compaction is
        removed at the next start.
        """
        self.journal().put("k", 1)
        self.clock.advance(0)
        self.directory.child("m.snapshot.tmp").setContent(b'{"vers')
        self.assertEqual(restart(self.directory), {"k": 1})
        self.assertEqual(listing(self.directory), ["m.journal", "m.snapshot"])


class DamageTests(JournalTestsMixin, SynchronousTestCase):
    def test_tornLastLine(self) -> None:
        """
        A last journal line cut short by a crash is ignored with a warning;
        everything before it loads, nothing is moved aside, and changes
        after the restart are not spoiled by the torn bytes.
        """
        self.committed()
        with self.directory.child("m.journal").open("a") as f:
            f.write(b'{"op":"put","key":"d","val')
        with capturedLogs() as events:
            self.assertEqual(restart(self.directory), {"a": 1, "b": 20, "c": 3})
        [warning] = [e for e in events if "incomplete last line" in e["log_format"]]
        self.assertEqual(warning["log_level"].name, "warn")
        self.assertEqual(listing(self.directory), ["m.journal", "m.snapshot"])
        journal = self.journal()
        journal.put("d", 4)
        self.clock.advance(0)
        self.assertEqual(restart(self.directory), {"a": 1, "b": 20, "c": 3, "d": 4})

    def test_zeroFilledTail(self) -> None:
        """
        A tail of zero bytes (what some filesystems show after a crash
        during an append) is a torn last line too.
        """
        self.committed()
        with self.directory.child("m.journal").open("a") as f:
            f.write(b"\0" * 4096)
        self.assertEqual(restart(self.directory), {"a": 1, "b": 20, "c": 3})

    def test_corruptMiddleLine(self) -> None:
        """
        A damaged line inside the journal: every readable change still
        loads, the file is moved aside (its name in the log, its bytes
        intact), and the next start loads the same without complaint.
        """
        self.committed()
        path = self.directory.child("m.journal")
        lines = path.getContent().splitlines(keepends=True)
        lines.insert(2, b"\x00garbage\xff\n")
        damaged = b"".join(lines)
        path.setContent(damaged)
        with capturedLogs() as events:
            self.assertEqual(restart(self.directory), {"a": 1, "b": 20, "c": 3})
        aside = f"m.journal.corrupt-{STAMP}"
        self.assertEqual(listing(self.directory), ["m.journal", aside, "m.snapshot"])
        self.assertEqual(self.directory.child(aside).getContent(), damaged)
        [error] = [e for e in events if e.get("aside")]
        self.assertEqual(error["aside"], self.directory.child(aside).path)
        self.assertEqual(error["lines"], [3])
        with capturedLogs() as events:
            self.assertEqual(restart(self.directory), {"a": 1, "b": 20, "c": 3})
        self.assertEqual([e for e in events if e.get("aside")], [])

    def test_corruptSnapshot(self) -> None:
        """
        A corrupt snapshot is moved aside (named in the log) and the daemon
        starts with the changes the journal holds, without crashing; the
        next start keeps that state.
        """
        self.committed()
        self.directory.child("m.snapshot").setContent(b'{"version":1,"generation":')
        with capturedLogs() as events:
            self.assertEqual(restart(self.directory), {"b": 20, "c": 3})
        aside = f"m.snapshot.corrupt-{STAMP}"
        self.assertEqual(listing(self.directory), ["m.journal", "m.snapshot", aside])
        self.assertEqual(
            self.directory.child(aside).getContent(), b'{"version":1,"generation":'
        )
        [error] = [e for e in events if e.get("aside")]
        self.assertEqual(error["aside"], self.directory.child(aside).path)
        self.assertEqual(restart(self.directory), {"b": 20, "c": 3})

    def test_unreadableSnapshot(self) -> None:
        """
        A snapshot that cannot be read at all (here: a directory) is moved
        aside too, and the daemon starts.
        """
        self.directory.makedirs()
        self.directory.child("m.snapshot").makedirs()
        with capturedLogs() as events:
            self.assertEqual(restart(self.directory), {})
        aside = f"m.snapshot.corrupt-{STAMP}"
        self.assertTrue(self.directory.child(aside).isdir())
        moved = [e["aside"] for e in events if e.get("aside")]
        self.assertEqual(moved, [self.directory.child(aside).path])

    def test_wrongShapes(self) -> None:
        """
        Valid JSON that is not what this module writes is corrupt too.
        """
        for data in [b"[]", b'{"version":2,"generation":1,"records":{}}',
                     b'{"version":1,"generation":-1,"records":{}}',
                     b'{"version":1,"generation":1,"records":[]}', b""]:
            self.assertRaises(CorruptFile, parseSnapshot, data)
        replay = parseJournal(
            b'{"op":"start","generation":4}\n'
            b'{"op":"put","key":"a"}\n'
            b'{"op":"drop","key":"a"}\n'
            b'{"op":"delete","key":1}\n'
            b"[]\n"
            b'{"op":"delete","key":"a"}\n'
            b'{"op":"put","key":"b","value":null}\n'
        )
        self.assertEqual(replay.generation, 4)
        self.assertEqual(replay.corrupt, [2, 3, 4, 5])
        self.assertEqual(replay.changes, [("a", DELETED), ("b", None)])
        self.assertFalse(replay.torn)

    def test_moveAsideFails(self) -> None:
        """
        If a corrupt file cannot even be moved aside, that is logged and
        the daemon still starts.
        """
        self.committed()
        self.directory.child("m.snapshot").setContent(b"nonsense")

        def refuse(*a: object) -> None:
            raise OSError(errno.EROFS, "Read-only file system")

        self.patch(os, "link", refuse)
        self.patch(os, "rename", refuse)
        self.assertEqual(restart(self.directory), {"b": 20, "c": 3})
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_crashDuringRecovery(self) -> None:
        """
        A daemon that dies while recovering from a corrupt journal loses
        nothing: at every point either the damaged journal is still in
        place or its copy moved aside is, and a restart loads the same.
        """
        self.committed()
        path = self.directory.child("m.journal")
        damaged = path.getContent() + b"\x00garbage\n" + b'{"op":"put","key":"e","value":5}\n'
        path.setContent(damaged)
        with crashPoints(self, self.directory) as copies:
            expected = restart(self.directory)
        self.assertEqual(expected, {"a": 1, "b": 20, "c": 3, "e": 5})
        for copy in copies:
            names = os.listdir(copy.path)
            kept = [copy.child(n).getContent() for n in names if n.startswith("m.journal")]
            self.assertIn(damaged, kept)
            self.assertEqual(restart(copy), expected)


class FailureTests(JournalTestsMixin, SynchronousTestCase):
    def test_failedWrite(self) -> None:
        """
        When a write fails, every change of that batch fails with the
        error (logged); once the caller has undone its change, a restart
        shows exactly the acknowledged state.
        """
        runner = SwitchRunner()
        journal = self.journal(runner)
        self.successResultOf(self.put(journal, "kept", 1))
        runner.broken = True
        failed = [journal.put("lost", 2), journal.delete("kept")]
        self.clock.advance(0)
        for d in failed:
            self.assertEqual(self.failureResultOf(d, OSError).value.errno, errno.EIO)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        runner.broken = False
        journal.delete("lost")
        journal.put("kept", 1)
        self.clock.advance(0)
        self.assertEqual(restart(self.directory), {"kept": 1})

    def test_failedSyncReplacesJournal(self) -> None:
        """
        After an fsync failure the journal file may hold part of the failed
        write, so the next write replaces both files instead of appending.
        """
        journal = self.journal()

        def broken(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        self.patch(os, "fdatasync", broken)
        self.failureResultOf(self.put(journal, "a", 1), OSError)
        self.flushLoggedErrors(OSError)
        self.assertEqual(len(journalLines(self.directory)), 2)
        journal.delete("a")
        self.successResultOf(self.put(journal, "b", 2))
        self.assertEqual(len(journalLines(self.directory)), 1)
        self.assertEqual(restart(self.directory), {"b": 2})

    def test_runnerRaises(self) -> None:
        """
        A runner that raises instead of failing its Deferred fails the
        batch the same way.
        """

        def raising(work: Work) -> Deferred[None]:
            raise OSError(errno.ENOSPC, "No space left on device")

        journal = self.journal(raising)
        self.failureResultOf(self.put(journal, "a", 1), OSError)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_loadCannotWrite(self) -> None:
        """
        If the state files cannot be rewritten at startup, that is logged,
        the records load anyway, and the first change tries again.
        """
        self.committed()
        original = os.replace

        def refuse(*a: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "replace", refuse)
        journal = Journal(self.directory, "m", self.clock, runSynchronously)
        self.assertEqual(journal.load(), {"a": 1, "b": 20, "c": 3})
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.patch(os, "replace", original)
        self.successResultOf(self.put(journal, "d", 4))
        self.assertEqual(restart(self.directory), {"a": 1, "b": 20, "c": 3, "d": 4})

    def put(self, journal: Journal, key: str, value: object) -> Deferred[None]:
        d = journal.put(key, value)
        self.clock.advance(0)
        return d
