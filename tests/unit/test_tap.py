"""
Tests for L{gatewayd.tap}: how C{twistd gatewayd} starts.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parents[2]


def python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    if result.returncode:
        raise AssertionError(result.stderr)
    return result.stdout.strip()


class ReactorChoiceTests(SynchronousTestCase):
    """
    gatewayd runs on the asyncio reactor unless told otherwise.
    """

    def test_installsAsyncio(self) -> None:
        """
        Building the options installs the asyncio reactor, so plain
        C{twistd gatewayd} runs on it.
        """
        out = python(
            "from gatewayd.tap import Options; Options()\n"
            "from twisted.internet import reactor; print(type(reactor).__name__)"
        )
        self.assertEqual(out, "AsyncioSelectorReactor")

    def test_explicitReactorWins(self) -> None:
        """
        A reactor installed before (C{twistd --reactor=poll}) is kept.
        """
        out = python(
            "from twisted.internet import pollreactor; pollreactor.install()\n"
            "from gatewayd.tap import Options; Options()\n"
            "from twisted.internet import reactor; print(type(reactor).__name__)"
        )
        self.assertEqual(out, "PollReactor")

    def test_twistdKnowsGatewayd(self) -> None:
        """
        C{twistd --help} lists the gatewayd plugin, and importing the plugin
        module does not import pyroute2, lxml or a reactor.
        """
        result = subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--help"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        self.assertIn("gatewayd", result.stdout)
        out = python(
            "import sys, twisted.plugins.gatewayd_plugins\n"
            "print(sorted(m for m in ('pyroute2', 'lxml', 'twisted.internet.reactor') if m in sys.modules))"
        )
        self.assertEqual(out, "[]")
