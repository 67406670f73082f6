# -*- test-case-name: tests.unit.test_tap -*-
"""
C{twistd gatewayd}: options, reactor choice and the composition root.
"""

from __future__ import annotations

import sys

from twisted.application.service import IService
from twisted.python import usage

from gatewayd import config
from gatewayd.errors import ConfigError


def installAsyncioReactor() -> None:
    """
    Install Twisted's asyncio reactor (pyroute2 needs asyncio), unless a
    reactor is already installed: an explicit C{twistd --reactor=...} wins.
    """
    if "twisted.internet.reactor" in sys.modules:
        return
    from twisted.internet import asyncioreactor

    asyncioreactor.install()


class Options(usage.Options):
    """
    Options of C{twistd gatewayd}.

    @ivar config: the parsed L{config.Config}, after L{parseOptions}.
    """

    synopsis = "[--config FILE]"
    longdesc = (
        "Runs gatewayd: a multi-WAN gateway hosting a UPnP InternetGatewayDevice:2 on the LAN."
    )
    optParameters = [
        ["config", "c", "/etc/gatewayd/gatewayd.toml", "Configuration file (TOML)."],
    ]

    def __init__(self) -> None:
        installAsyncioReactor()
        super().__init__()

    def postOptions(self) -> None:
        try:
            self.config = config.load(self["config"])
        except ConfigError as e:
            # UsageError would print the whole usage text; one line says it.
            raise SystemExit(f"gatewayd: {e}")


def makeService(options: Options) -> IService:
    """
    Build gatewayd's service tree from the parsed options.
    """
    from twisted.internet import reactor  # the only global-reactor import in gatewayd

    from gatewayd.service import makeGateway

    try:
        return makeGateway(options.config, reactor)
    except ConfigError as e:
        raise SystemExit(f"gatewayd: {e.inFile(options['config']) if not e.file else e}")
    except OSError as e:
        raise SystemExit(f"gatewayd: {e.filename or ''}: {e.strerror or e}")
