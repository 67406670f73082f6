"""
Tests for L{gatewayd.nat.libnftables}: which C{nft} command lines run in
process and how, and the library itself in a namespace the test makes.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
from typing import Any, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from gatewayd.nat.libnftables import (
    OUTPUT_HANDLE,
    OUTPUT_JSON,
    OUTPUT_TERSE,
    Libnftables,
    LibnftablesRunner,
    load,
    nftRequest,
)
from gatewayd.nat.nftables import ProcessResult


class NFTRequestTests(SynchronousTestCase):
    def test_script(self) -> None:
        """
        C{nft -f -} runs its input as one command buffer.
        """
        self.assertEqual(nftRequest(["nft", "-f", "-"], "nft", b"add table inet x\n"), (0, b"add table inet x\n"))

    def test_listing(self) -> None:
        """
        C{-j}, C{-t} and C{-a} become output flags; the words after them the
        command.
        """
        self.assertEqual(
            nftRequest(["nft", "-t", "-j", "-a", "list", "table", "inet", "gatewayd"], "nft", b""),
            (OUTPUT_TERSE | OUTPUT_JSON | OUTPUT_HANDLE, b"list table inet gatewayd\n"),
        )
        self.assertEqual(nftRequest(["nft", "-j", "list", "tables"], "nft", b""), (OUTPUT_JSON, b"list tables\n"))

    def test_notTranslated(self) -> None:
        """
        Other commands, other options, a file other than standard input, or
        no command at all are not translated (the process runner gets them).
        """
        for argv in (
            ["conntrack", "-D"],
            ["ip", "netns", "exec", "ns", "nft", "-f", "-"],
            ["nft", "-f", "/etc/nftables.conf"],
            ["nft", "-f"],
            ["nft", "--check", "-f", "-"],
            ["nft", "-j"],
            [],
        ):
            self.assertIsNone(nftRequest(argv, "nft", b"x"), argv)


class FakeLibrary:
    def __init__(self) -> None:
        self.calls: list[tuple[int, bytes, str]] = []

    def run(self, flags: int, command: bytes) -> tuple[int, bytes, bytes]:
        self.calls.append((flags, command, threading.current_thread().name))
        return (1, b"", b"Error: no\n") if b"bad" in command else (0, b"out", b"")


class ImmediateReactor:
    """
    A reactor whose thread pool runs work in a named thread at once.
    """

    class Pool:
        def callInThreadWithCallback(self, onResult: Any, f: Any, *args: Any, **kw: Any) -> None:
            result: list[Any] = []
            worker = threading.Thread(target=lambda: result.append(f(*args, **kw)), name="pool")
            worker.start()
            worker.join(10)
            onResult(True, result[0])

    def getThreadPool(self) -> Any:
        return self.Pool()

    def callFromThread(self, f: Any, *args: Any, **kw: Any) -> None:
        f(*args, **kw)


class LibnftablesRunnerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.library = FakeLibrary()
        self.fallback: list[tuple[list[str], bytes]] = []

        def fallback(argv: Sequence[str], stdin: bytes = b"") -> Deferred[ProcessResult]:
            self.fallback.append((list(argv), stdin))
            return succeed(ProcessResult(0, b"process", b""))

        self.runner = LibnftablesRunner(ImmediateReactor(), self.library, fallback)  # type: ignore[arg-type]

    def test_inProcess(self) -> None:
        """
        nft command lines run in the library, off the calling thread, with
        the code, output and errors of a process.
        """
        result = self.successResultOf(self.runner(["nft", "-f", "-"], b"add table inet x\n"))
        self.assertEqual(result, ProcessResult(0, b"out", b""))
        self.assertEqual(self.library.calls, [(0, b"add table inet x\n", "pool")])
        failed = self.successResultOf(self.runner(["nft", "-f", "-"], b"bad\n"))
        self.assertEqual(failed, ProcessResult(1, b"", b"Error: no\n"))
        self.assertEqual(self.fallback, [])

    def test_fallback(self) -> None:
        """
        Everything else goes to the process runner.
        """
        result = self.successResultOf(self.runner(["conntrack", "-D", "-p", "tcp"], b""))
        self.assertEqual(result, ProcessResult(0, b"process", b""))
        self.assertEqual(self.fallback, [(["conntrack", "-D", "-p", "tcp"], b"")])
        self.assertEqual(self.library.calls, [])


#: Run by L{LibraryTests} inside its namespace: the library's answers as
#: JSON (bytes as text).
_ROUND_TRIP = """
import json
from gatewayd.nat.libnftables import OUTPUT_JSON, Libnftables
library = Libnftables()
results = [
    library.run(0, b"table inet t {\\n map m {\\n  type inet_service : ipv4_addr\\n }\\n}\\n"),
    library.run(0, b"add element inet t m { 80 : 192.0.2.1, 81 : 192.0.2.2 }\\n"),
    library.run(0, b"delete element inet t m { 80 }\\n"),
    library.run(OUTPUT_JSON, b"list map inet t m\\n"),
    library.run(0, b"delete element inet t m { 9 }\\n"),
    library.run(0, b"add element inet t m { 1 : 2 }\\x00\\n"),
]
library.close()
print(json.dumps([[code, out.decode(), err.decode()] for code, out, err in results]))
"""


class LibraryTests(SynchronousTestCase):
    """
    The library itself, in a process in a network namespace this test
    makes (removed at cleanup).
    """

    def test_roundTrip(self) -> None:
        """
        A table is made, elements added and deleted, listed as JSON; a bad
        command answers 1 with nft's error text; a NUL byte is refused.
        """
        if os.geteuid() != 0 or shutil.which("ip") is None or load() is None:
            if os.environ.get("GATEWAYD_INTEGRATION") == "required":
                raise AssertionError("libnftables tests need root, ip and libnftables1")
            raise SkipTest("libnftables tests need root, ip and libnftables1")
        name = "gwdl" + secrets.token_hex(3)
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", name], timeout=10)
        done = subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, "-c", _ROUND_TRIP],
            capture_output=True, text=True, timeout=30,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        made, added, deleted, listed, missing, nul = json.loads(done.stdout)
        self.assertEqual([made[0], added[0], deleted[0], listed[0]], [0, 0, 0, 0])
        elements = [
            item["map"]["elem"] for item in json.loads(listed[1])["nftables"] if "map" in item
        ]
        self.assertEqual(elements, [[[81, "192.0.2.2"]]])
        self.assertEqual(missing[0], 1)
        self.assertIn("Error", missing[2])
        self.assertEqual(nul[0], 1)
