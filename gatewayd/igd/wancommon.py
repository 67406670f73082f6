# -*- test-case-name: tests.unit.test_igd -*-
"""
WANCommonInterfaceConfig:1 for one WAN: link type, speed, status and counters.
"""

from __future__ import annotations

from gatewayd.igd.wanipconnection import WANState

_UI4_MAX = 0xFFFFFFFF


class WANCommonInterfaceConfigService:
    """
    WANCommonInterfaceConfig:1 for one WAN.
    """

    def __init__(self, wan: WANState) -> None:
        self.wan = wan

    def _physicalLinkStatus(self) -> str:
        return "Up" if self.wan.carrier else "Down"

    def GetCommonLinkProperties(self, requester: object) -> dict[str, object]:
        rate = min(self.wan.linkSpeed(), _UI4_MAX)
        return {
            "NewWANAccessType": "Ethernet",
            "NewLayer1UpstreamMaxBitRate": rate,
            "NewLayer1DownstreamMaxBitRate": rate,
            "NewPhysicalLinkStatus": self._physicalLinkStatus(),
        }

    def stateVariables(self) -> dict[str, object]:
        return {"PhysicalLinkStatus": self._physicalLinkStatus()}
