# -*- test-case-name: tests.unit.test_state -*-
"""
Small documents that survive a restart, in C{state_dir}.

Every write is atomic: a temporary file in the same directory, C{fsync},
C{rename} over the old document, C{fsync} of the directory. A crash at any
point leaves either the old document or the new one.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import uuid
from contextlib import suppress
from functools import partial
from typing import Any, Callable

from zope.interface import implementer

from twisted.internet.defer import Deferred, DeferredLock, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from gatewayd.errors import ConfigError
from gatewayd.interfaces import IStateStore

Runner = Callable[[Callable[[], None]], "Deferred[None]"]
"""
Runs a blocking function somewhere and returns a L{Deferred} of its result:
L{threadRunner} in the daemon, L{runSynchronously} in tests.
"""

UDN_SEED = "udn-seed"
"""The document holding the random UUID that the device UDNs derive from."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_TEMPORARY = ".tmp"

log = Logger()


def threadRunner(reactor: Any, threadpool: Any = None) -> Runner:
    """
    @param reactor: the reactor (L{IReactorFromThreads}, and
        L{IReactorThreads} unless C{threadpool} is given).
    @param threadpool: the pool to write in; the reactor's by default
        (looked up at the first write).
    @return: a L{Runner} that runs blocking work in a thread pool.
    """

    def run(work: Callable[[], None]) -> Deferred[None]:
        pool = threadpool if threadpool is not None else reactor.getThreadPool()
        return deferToThreadPool(reactor, pool, work)

    return run


def runSynchronously(work: Callable[[], None]) -> Deferred[None]:
    """
    A L{Runner} that blocks: for tests, and for code that runs before the
    reactor.
    """
    return maybeDeferred(work)


class StateDirError(ConfigError):
    """
    The state directory cannot be used.
    """

    def __init__(self, expected: str, file: str = "") -> None:
        super().__init__("gateway.state_dir", expected, file)


@implementer(IStateStore)
class FileStateStore:
    """
    Named documents, one file each, in a private directory.

    @ivar directory: the directory.
    """

    log = Logger()

    def __init__(self, directory: FilePath[str], runner: Runner) -> None:
        """
        Create the directory (mode 0700) if it is missing, and remove
        temporary files that a crash during a write left behind.

        @param runner: runs the blocking part of L{save}.
        @raise StateDirError: if the directory cannot be created or written.
        """
        self.directory = directory
        self._runner = runner
        self._lock = DeferredLock()
        self._prepare()

    def _prepare(self) -> None:
        where = self.directory.path
        try:
            os.makedirs(where, 0o700)
        except FileExistsError:
            if not os.path.isdir(where):
                raise StateDirError(f"{where} is not a directory") from None
        except OSError as e:
            raise StateDirError(f"cannot create {where} ({e.strerror})") from None
        else:
            os.chmod(where, 0o700)
            self.log.info("Created state directory {path}", path=where)
        if not os.access(where, os.W_OK | os.X_OK):
            raise StateDirError(f"{where} is not writable by this user")
        try:
            names = os.listdir(where)
        except OSError as e:
            raise StateDirError(f"cannot read {where} ({e.strerror})") from None
        for name in names:
            if name.startswith(".") and name.endswith(_TEMPORARY):
                with suppress(OSError):
                    os.unlink(os.path.join(where, name))
                    self.log.info("Removed {name}, left by an interrupted write", name=name)

    def _child(self, name: str) -> FilePath[str]:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"bad state document name {name!r}")
        return self.directory.child(name)

    def load(self, name: str) -> bytes | None:
        """
        @return: the document's bytes, or L{None} if it does not exist.
        @raise OSError: if it exists but cannot be read.
        """
        try:
            return self._child(name).getContent()
        except FileNotFoundError:
            return None

    def save(self, name: str, data: bytes) -> Deferred[None]:
        """
        Replace the document atomically, off the reactor thread. Saves
        complete in the order they were asked for.

        @return: a L{Deferred} that fires once the data is durable, or fails
            with the L{OSError} (and then the old document is still there).
        """
        self._child(name)
        if not isinstance(data, bytes):
            raise TypeError(f"state document {name!r} must be bytes, not {type(data).__name__}")
        return self._lock.run(self._runner, partial(self.saveNow, name, data))

    def saveNow(self, name: str, data: bytes) -> None:
        """
        Replace the document atomically, blocking: for startup, before the
        reactor runs.

        @raise OSError: if it failed (and then the old document is still
            there).
        """
        target = self._child(name)
        fd, temporary = tempfile.mkstemp(
            prefix=f".{name}.", suffix=_TEMPORARY, dir=self.directory.path
        )
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, target.path)
        except BaseException:
            with suppress(OSError):
                os.unlink(temporary)
            raise
        directory = os.open(self.directory.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def quarantine(self, name: str, when: float) -> FilePath[str]:
        """
        Move a damaged document aside, to C{<name>.corrupt-<UTC time>}, so
        that a human can look at it and a new one can be written.

        @param when: the POSIX time to name it by.
        @return: where it is now.
        @raise OSError: if it cannot be moved.
        """
        source = self._child(name)
        aside = corruptName(self.directory, name, when)
        os.rename(source.path, aside.path)
        return aside


def corruptName(directory: FilePath[str], name: str, when: float) -> FilePath[str]:
    """
    Where to move a damaged file C{name} aside: C{<name>.corrupt-<UTC time>},
    with C{.1}, C{.2}, ... appended if that is taken.

    @param when: the POSIX time to name it by.
    @raise FileExistsError: if 100 names for that second are taken.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    for attempt in range(100):
        suffix = f".{attempt}" if attempt else ""
        aside = directory.child(f"{name}.corrupt-{stamp}{suffix}")
        if not aside.exists():
            return aside
    raise FileExistsError(f"too many {name}.corrupt-{stamp} files in {directory.path}")


def udnSeed(
    store: FileStateStore,
    now: Callable[[], float] = time.time,
    newSeed: Callable[[], uuid.UUID] = uuid.uuid4,
) -> uuid.UUID:
    """
    The random seed that the device UDNs derive from, so that they stay the
    same across restarts: read from the C{udn-seed} document, or made and
    saved (blocking; call it before the reactor runs).

    A seed document that does not hold a UUID is moved aside (logged) and
    replaced; control points will then see new devices, once.

    @param now: the clock that names a moved-aside document.
    @param newSeed: makes a new seed.
    @raise OSError: if the document cannot be read, moved or written.
    """
    data = store.load(UDN_SEED)
    if data is not None:
        try:
            return uuid.UUID(data.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            aside = store.quarantine(UDN_SEED, now())
            log.warn(
                "The UDN seed in {path} is not a UUID; moved it to {aside} and made a "
                "new one (control points will see new device UDNs)",
                path=store.directory.child(UDN_SEED).path,
                aside=aside.path,
            )
    seed = newSeed()
    store.saveNow(UDN_SEED, f"{seed}\n".encode("ascii"))
    log.info("Saved a new UDN seed in {path}", path=store.directory.child(UDN_SEED).path)
    return seed
