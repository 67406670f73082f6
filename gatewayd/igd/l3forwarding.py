# -*- test-case-name: tests.unit.test_igd -*-
"""
Layer3Forwarding:1: which WAN connection carries the default route.
"""

from __future__ import annotations

from typing import Callable


class Layer3ForwardingService:
    """
    @ivar activeConnection: returns the C{<device>,<serviceId>} of the WAN
        connection that currently carries the default route.
    """

    def __init__(self, activeConnection: Callable[[], str]) -> None:
        self.activeConnection = activeConnection

    def GetDefaultConnectionService(self, requester: object) -> dict[str, object]:
        return {"NewDefaultConnectionService": self.activeConnection()}

    def stateVariables(self) -> dict[str, object]:
        return {"DefaultConnectionService": self.activeConnection()}
