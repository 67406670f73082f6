# -*- test-case-name: tests.unit.test_wanipconnection -*-
"""
Layer3Forwarding:1: which WAN connection carries the default route, and
the administrator's choice of the preferred one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from gatewayd.errors import InvalidConnServiceSelection, InvalidDeviceUUID, InvalidServiceID
from gatewayd.igd.types import WANIPConnection
from gatewayd.observers import Observers


@dataclass(frozen=True)
class WANConnectionRef:
    """
    One WAN's connection service as Layer3Forwarding names it.

    @ivar wan: the WAN's name.
    @ivar device: the WANConnectionDevice's UDN.
    @ivar connected: whether it can carry traffic now.
    """

    wan: str
    device: str
    connected: bool

    @property
    def name(self) -> str:
        return f"{self.device}:WANConnectionDevice:2,{WANIPConnection.serviceIdURN}"


class Layer3ForwardingService:
    """
    @ivar preferred: the WAN an admin chose with SetDefaultConnectionService,
        or L{None}.
    """

    def __init__(self, connections: Callable[[], Sequence[WANConnectionRef]]) -> None:
        """
        @param connections: the WANs' connections, preferred (by priority)
            first.
        """
        self._connections = connections
        self.preferred: str | None = None
        self._observers: Observers[[]] = Observers("the preferred WAN")

    def addObserver(self, observer: Callable[[], None]) -> Callable[[], None]:
        """
        Call C{observer()} when an admin prefers another WAN.
        """
        return self._observers.add(observer)

    def active(self) -> WANConnectionRef:
        """
        @return: the connection carrying the default route: the preferred
            WAN while it is connected, else the first connected by priority,
            else the first.
        """
        connections = list(self._connections())
        chosen = [c for c in connections if c.wan == self.preferred and c.connected]
        connected = [c for c in connections if c.connected]
        return (chosen or connected or connections)[0]

    def GetDefaultConnectionService(self, requester: Any) -> dict[str, object]:
        return {"NewDefaultConnectionService": self.active().name}

    def SetDefaultConnectionService(
        self, requester: Any, NewDefaultConnectionService: str
    ) -> dict[str, object]:
        """
        Prefer the named WAN (an Admin action, see L{gatewayd.igd.access}): 720 for a device that is not one
        of our WANConnectionDevices, 721 for a service that is not its
        WANIPConnection, 723 for a WAN that is not connected.
        """
        device, comma, service = NewDefaultConnectionService.strip().partition(",")
        udn = device.rsplit(":WANConnectionDevice:", 1)[0]
        matches = [c for c in self._connections() if c.device.lower() == udn.lower()]
        if not comma or not matches or ":WANConnectionDevice:" not in device:
            raise InvalidDeviceUUID(f"{device[:80]!r} is not a WANConnectionDevice here")
        if service.strip() != WANIPConnection.serviceIdURN:
            raise InvalidServiceID(f"{service[:80]!r} is not a connection service here")
        if not matches[0].connected:
            raise InvalidConnServiceSelection(f"WAN {matches[0].wan} is not connected")
        self.preferred = matches[0].wan
        self._observers.notify()
        return {}

    def stateVariables(self) -> dict[str, object]:
        return {"DefaultConnectionService": self.active().name}
