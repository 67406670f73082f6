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
        The C{unmanaged}, C{simulated}, C{static} and C{dhcp} link types are found as
        L{ILinkType} plugins, and each builds an L{ILink}.
        """
        types = {t.name: t for t in getPlugins(ILinkType, plugins)}
        self.assertLessEqual({"unmanaged", "simulated", "static", "dhcp"}, set(types))
        configs = {
            "unmanaged": {},
            "simulated": {"address": "203.0.113.2/24"},
            "static": {"address": "203.0.113.2/24", "gateway": "203.0.113.1"},
            "dhcp": {},
        }
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


THIRD_PARTY = '''
"""A link type shipped outside gatewayd."""
from dataclasses import dataclass
from twisted.internet.defer import succeed
from twisted.plugin import IPlugin
from zope.interface import implementer
from gatewayd.errors import ConfigError
from gatewayd.interfaces import ILink, ILinkType, LinkStatus
from gatewayd.link.base import ObservableLink, parseInterfaceAddress


@dataclass(frozen=True)
class TunnelSettings:
    address: object


@implementer(ILink)
class TunnelLink(ObservableLink):
    controllable = True

    def __init__(self, interface, settings):
        super().__init__(interface, LinkStatus(carrier=True))
        self.settings = settings

    def connect(self):
        self._setStatus(LinkStatus(carrier=True, address=self.settings.address))
        return succeed(None)

    def disconnect(self):
        self._setStatus(LinkStatus(carrier=True))
        return succeed(None)


@implementer(IPlugin, ILinkType)
class TunnelLinkType:
    name = "tunnel"
    description = "A third-party tunnel."

    def checkConfig(self, config):
        if set(config) != {"address"}:
            raise ConfigError("address", "required, and nothing else")
        return TunnelSettings(parseInterfaceAddress("address", config["address"]))

    def buildLink(self, context):
        return TunnelLink(context.interface, context.settings)


tunnel = TunnelLinkType()
'''

RUN_THIRD_PARTY = '''
import sys
from twisted.internet.task import Clock
from gatewayd import config
from gatewayd.service import makeGateway
from tests.fakes import FakeNetlink
print(sorted(config.linkTypes()))
parsed = config.parse(sys.argv[1], sys.argv[2])
gateway = makeGateway(parsed, Clock(), netlink=FakeNetlink(), runner=lambda f, *a: f(*a))
wan = gateway.wans["vpn"]
wan.link.startService()
wan.connection.start()
print(wan.connection.status, wan.connection.externalIPAddress)
'''


class ThirdPartyPluginTests(SynchronousTestCase):
    """
    A link type from another distribution plugs in without touching
    gatewayd.
    """

    def test_thirdPartyLinkType(self) -> None:
        """
        A directory on C{sys.path} with its own C{twisted/plugins/} file
        adds a link type: the configuration knows it, and a WAN built with
        it connects. (In a subprocess: C{twisted.plugins.__path__} is fixed
        once imported.)
        """
        import os

        base = FilePath(self.mktemp())
        pluginDir = base.child("twisted").child("plugins")
        pluginDir.makedirs()
        pluginDir.child("thirdparty_link.py").setContent(THIRD_PARTY.encode())
        state = base.child("state")
        document = f"""
[gateway]
state_dir = "{state.path}"
nat = "memory"
[lan]
interfaces = ["lo"]
http_port = 0
[[wan]]
name = "vpn"
interface = "tun0"
link = {{ type = "tunnel", address = "10.99.0.2/24" }}
"""
        root = FilePath(__file__).parent().parent().parent()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([base.path, root.path]))
        out = subprocess.run(
            [sys.executable, "-c", RUN_THIRD_PARTY, document, base.path],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=base.path,
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = out.stdout.strip().splitlines()
        self.assertIn("'tunnel'", lines[0])
        self.assertIn("'dhcp'", lines[0])
        self.assertEqual(lines[-1], "Connected 10.99.0.2")
