"""
Tests for L{gatewayd.state}: documents in state_dir and the UDN seed.
"""

from __future__ import annotations

import os
import stat
import uuid
from typing import Any, Callable

from zope.interface.verify import verifyObject

from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from gatewayd.errors import ConfigError
from gatewayd.interfaces import IStateStore
from gatewayd.state import (
    FileStateStore,
    StateDirError,
    runSynchronously,
    threadRunner,
    udnSeed,
)

SEED = uuid.UUID("5b0a1c9e-3d2f-4e8a-9c71-0f6b2d4e8a13")
from tests.support import temporaryPath


def listing(directory: FilePath[str]) -> list[str]:
    return sorted(os.listdir(directory.path))


class FileStateStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = temporaryPath(self)
        self.store = FileStateStore(self.directory, runSynchronously)

    def test_interface(self) -> None:
        """
        The store provides L{IStateStore}.
        """
        self.assertTrue(verifyObject(IStateStore, self.store))

    def test_createsPrivateDirectory(self) -> None:
        """
        A missing state directory is created, readable by gatewayd only.
        """
        self.assertEqual(stat.S_IMODE(os.stat(self.directory.path).st_mode), 0o700)

    def test_roundTrip(self) -> None:
        """
        What was saved is loaded back, also by a new store (after a restart),
        and the file is private.
        """
        self.assertIsNone(self.successResultOf(self.store.save("mappings-isp1", b"[1, 2]")))
        self.assertEqual(self.store.load("mappings-isp1"), b"[1, 2]")
        again = FileStateStore(self.directory, runSynchronously)
        self.assertEqual(again.load("mappings-isp1"), b"[1, 2]")
        mode = os.stat(self.directory.child("mappings-isp1").path).st_mode
        self.assertEqual(stat.S_IMODE(mode), 0o600)

    def test_missing(self) -> None:
        """
        A document never saved loads as L{None}.
        """
        self.assertIsNone(self.store.load("never"))

    def test_replace(self) -> None:
        """
        Saving again replaces the document and leaves no temporary files.
        """
        self.successResultOf(self.store.save("doc", b"old"))
        self.successResultOf(self.store.save("doc", b"new"))
        self.assertEqual(self.store.load("doc"), b"new")
        self.assertEqual(listing(self.directory), ["doc"])

    def test_failedWriteKeepsOld(self) -> None:
        """
        If a write fails (disk full at fsync), the save fails, the old
        document is still there, and no temporary file is left.
        """
        self.successResultOf(self.store.save("doc", b"old"))

        def fullDisk(fd: int) -> None:
            raise OSError(28, "No space left on device")

        self.patch(os, "fsync", fullDisk)
        self.failureResultOf(self.store.save("doc", b"new"), OSError)
        self.assertEqual(self.store.load("doc"), b"old")
        self.assertEqual(listing(self.directory), ["doc"])

    def test_leftoverTemporaryRemoved(self) -> None:
        """
        A temporary file left by a crash in the middle of a write is removed
        at the next start, and the document keeps its last complete content.
        """
        self.successResultOf(self.store.save("doc", b"complete"))
        self.directory.child(".doc.k2j3h4.tmp").setContent(b"half")
        again = FileStateStore(self.directory, runSynchronously)
        self.assertEqual(listing(self.directory), ["doc"])
        self.assertEqual(again.load("doc"), b"complete")

    def test_savesInOrder(self) -> None:
        """
        Saves of the same document run one at a time, in the order asked
        for, so the last one wins even with a thread pool.
        """
        pending: list[tuple[Callable[[], None], Deferred[None]]] = []

        def held(work: Callable[[], None]) -> Deferred[None]:
            pending.append((work, d := Deferred()))
            return d

        store = FileStateStore(self.directory, held)
        first, second = store.save("doc", b"first"), store.save("doc", b"second")
        self.assertEqual(len(pending), 1)
        work, d = pending.pop()
        work()
        d.callback(None)
        self.successResultOf(first)
        self.assertNoResult(second)
        work, d = pending.pop()
        work()
        d.callback(None)
        self.successResultOf(second)
        self.assertEqual(store.load("doc"), b"second")

    def test_badName(self) -> None:
        """
        Document names cannot reach outside the directory or hide.
        """
        for name in ["../etc/passwd", "a/b", ".hidden", "", "x" * 200]:
            self.assertRaises(ValueError, self.store.save, name, b"")
            self.assertRaises(ValueError, self.store.load, name)

    def test_notBytes(self) -> None:
        """
        Only bytes are saved.
        """
        self.assertRaises(TypeError, self.store.save, "doc", "text")

    def test_directoryIsAFile(self) -> None:
        """
        A state_dir that is a file stops startup with a clear message.
        """
        path = temporaryPath(self)
        path.setContent(b"")
        error = self.assertRaises(StateDirError, FileStateStore, path, runSynchronously)
        self.assertIsInstance(error, ConfigError)
        self.assertEqual(str(error), f"gateway.state_dir: {path.path} is not a directory")

    def test_cannotCreate(self) -> None:
        """
        A state_dir that cannot be created stops startup with the reason.
        """
        parent = temporaryPath(self)
        parent.setContent(b"")
        path = parent.child("state")
        error = self.assertRaises(StateDirError, FileStateStore, path, runSynchronously)
        self.assertEqual(
            str(error), f"gateway.state_dir: cannot create {path.path} (Not a directory)"
        )


class ThreadRunnerTests(SynchronousTestCase):
    def test_runsInPool(self) -> None:
        """
        The daemon's runner hands the write to the thread pool and reports
        the result back through the reactor thread.
        """
        ran: list[str] = []

        class Pool:
            def callInThreadWithCallback(self, onResult: Any, f: Any, *a: Any) -> None:
                ran.append("thread")
                onResult(True, f(*a))

        class Reactor:
            def callFromThread(self, f: Any, *a: Any) -> None:
                ran.append("reactor")
                f(*a)

            def getThreadPool(self) -> Pool:
                return Pool()

        d = threadRunner(Reactor())(lambda: None)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(ran, ["thread", "reactor"])


class UDNSeedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = temporaryPath(self)
        self.store = FileStateStore(self.directory, runSynchronously)

    def test_madeOnce(self) -> None:
        """
        The first start makes a seed and saves it; later starts load the
        same one, so control points keep seeing the same devices.
        """
        self.assertEqual(udnSeed(self.store, newSeed=lambda: SEED), SEED)
        self.assertEqual(self.store.load("udn-seed"), f"{SEED}\n".encode())
        restarted = FileStateStore(self.directory, runSynchronously)
        self.assertEqual(udnSeed(restarted, newSeed=uuid.uuid4), SEED)

    def test_random(self) -> None:
        """
        By default the seed is random: two state directories get different
        seeds.
        """
        other = FileStateStore(temporaryPath(self), runSynchronously)
        self.assertNotEqual(udnSeed(self.store), udnSeed(other))

    def test_corruptMovedAside(self) -> None:
        """
        A seed file that does not hold a UUID is moved aside with the time in
        its name, a new seed is made, and a warning says so; startup goes on.
        """
        self.directory.child("udn-seed").setContent(b"\x00\xffgarbage")
        with capturedLogs() as events:
            seed = udnSeed(self.store, now=lambda: 1700000000.0, newSeed=lambda: SEED)
        self.assertEqual(seed, SEED)
        self.assertEqual(
            listing(self.directory), ["udn-seed", "udn-seed.corrupt-20231114T221320Z"]
        )
        self.assertEqual(
            self.directory.child("udn-seed.corrupt-20231114T221320Z").getContent(),
            b"\x00\xffgarbage",
        )
        self.assertEqual(self.store.load("udn-seed"), f"{SEED}\n".encode())
        [warning] = [e for e in events if "aside" in e]
        self.assertTrue(warning["aside"].endswith("udn-seed.corrupt-20231114T221320Z"))

    def test_corruptTwiceInOneSecond(self) -> None:
        """
        A second corrupt seed in the same second does not overwrite the first
        one moved aside.
        """
        for text in [b"one", b"two"]:
            self.directory.child("udn-seed").setContent(text)
            udnSeed(self.store, now=lambda: 1700000000.0)
        self.assertEqual(
            listing(self.directory),
            [
                "udn-seed",
                "udn-seed.corrupt-20231114T221320Z",
                "udn-seed.corrupt-20231114T221320Z.1",
            ],
        )

    def test_emptyIsCorrupt(self) -> None:
        """
        An empty seed file (a crash before atomic writes existed, or a
        human) is treated as corrupt, not as a crash.
        """
        self.directory.child("udn-seed").setContent(b"")
        self.assertEqual(udnSeed(self.store, now=lambda: 0.0, newSeed=lambda: SEED), SEED)
