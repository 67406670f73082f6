"""
Tests for gatewayd's Twisted plugins: C{twisted/plugins/gatewayd_plugins.py}.
"""

from __future__ import annotations

import subprocess
import sys

from twisted import plugins
from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatewayd.interfaces import ILink, ILinkType, LinkContext
from tests.fakes import FakeNetlink


class PluginTests(SynchronousTestCase):
    """
    twistd and the configuration find gatewayd's plugins.
    """

    def test_linkTypes(self) -> None:
        """
        The C{unmanaged} and C{simulated} link types are found as
        L{ILinkType} plugins, and each builds an L{ILink}.
        """
        types = {t.name: t for t in getPlugins(ILinkType, plugins)}
        self.assertLessEqual({"unmanaged", "simulated"}, set(types))
        configs = {"unmanaged": {}, "simulated": {"address": "203.0.113.2/24"}}
        for name, config in configs.items():
            linkType = types[name]
            self.assertTrue(verifyObject(ILinkType, linkType))
            self.assertIsInstance(linkType.description, str)
            link = linkType.buildLink(
                LinkContext(
                    wanName="isp1",
                    interface="eth1",
                    settings=linkType.checkConfig(config),
                    netlink=FakeNetlink(),
                    reactor=MemoryReactorClock(),
                    stateDir=FilePath("/nonexistent"),
                )
            )
            self.assertTrue(verifyObject(ILink, link))

    def test_serviceMaker(self) -> None:
        """
        C{twistd gatewayd} is found.
        """
        makers = {m.tapname: m for m in getPlugins(IServiceMaker, plugins)}
        self.assertIn("gatewayd", makers)
        self.assertEqual(makers["gatewayd"].module, "gatewayd.tap")

    def test_cheapImport(self) -> None:
        """
        Importing the plugin module (which every twistd and trial run does)
        does not import pyroute2.
        """
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, twisted.plugins.gatewayd_plugins; print('pyroute2' in sys.modules)",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        self.assertEqual(out.stdout.strip(), "False")
