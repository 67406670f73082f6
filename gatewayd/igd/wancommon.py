# -*- test-case-name: tests.unit.test_wancommon -*-
"""
WANCommonInterfaceConfig:1 for one WAN: link type, speed and status,
EnabledForInternet, traffic counters and the WAN's one connection.

Values are the WAN interface's own: bytes and packets I{sent} are what the
interface transmitted (C{tx_*}), I{received} what it received (C{rx_*}).
Every ui4 is reported modulo 2^32 (counters wrap, as the specification's
counters do), except the bit rates, which are clamped to 4294967295 (a
10 Gb/s link reports the largest rate a ui4 can say, not a wrapped one).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gatewayd.errors import ActionFailed, SpecifiedArrayIndexInvalid
from gatewayd.igd.types import WANIPConnection
from gatewayd.observers import Observers

_UI4_MAX = 0xFFFFFFFF

#: The version of the WANConnectionDevice that holds the connection.
CONNECTION_DEVICE_VERSION = 2


class _WAN(Protocol):
    """
    What this service reads of the WAN (a subset of
    L{gatewayd.igd.wanipconnection.WANState}).
    """

    @property
    def carrier(self) -> bool: ...

    def linkSpeed(self) -> int: ...


class _Connection(Protocol):
    def enabledChanged(self) -> None: ...


Observer = Callable[[str, object], None]


class WANCommonInterfaceConfigService:
    """
    WANCommonInterfaceConfig:1 for one WAN.

    @ivar wan: the WAN: C{carrier} and C{linkSpeed()}.
    @ivar enabledForInternet: EnabledForInternet (default true).
    """

    log = Logger()

    def __init__(
        self,
        wan: _WAN,
        connection: _Connection | None = None,
        counters: Callable[[], "Deferred[Mapping[str, int]]"] | None = None,
        connectionDevice: str | None = None,
    ) -> None:
        """
        @param wan: the WAN (L{gatewayd.igd.wanipconnection.WANState}).
        @param connection: told by C{enabledChanged()} when
            EnabledForInternet changes (a L{gatewayd.connection.WANConnection}).
        @param counters: reads the WAN interface's counters: a L{Deferred}
            firing with C{rx_bytes}, C{tx_bytes}, C{rx_packets} and
            C{tx_packets} (e.g. C{lambda: netlink.statistics(interface)});
            without it the GetTotal* actions fail with 501.
        @param connectionDevice: the UDN (C{uuid:...}) of the WAN's
            WANConnectionDevice; without it GetActiveConnection fails with
            501.
        """
        self.wan = wan
        self.connection = connection
        self.counters = counters
        self.connectionDevice = connectionDevice
        self.enabledForInternet = True
        self._observers: Observers[[str, object]] = Observers("WANCommonInterfaceConfig")
        self._physicalLinkStatus = self._currentLinkStatus()

    # Evented variables.

    def addObserver(self, observer: Observer) -> Callable[[], None]:
        """
        Call C{observer(name, value)} after every change of PhysicalLinkStatus
        (reported by L{linkStatusChanged}) or EnabledForInternet.

        @return: a callable that removes the observer.
        """
        return self._observers.add(observer)

    def _tell(self, name: str, value: object) -> None:
        self._observers.notify(name, value)

    def _currentLinkStatus(self) -> str:
        return "Up" if self.wan.carrier else "Down"

    def linkStatusChanged(self) -> None:
        """
        The WAN's link status changed (call it from the link's observer):
        observers hear of PhysicalLinkStatus if it changed.
        """
        status = self._currentLinkStatus()
        if status != self._physicalLinkStatus:
            self._physicalLinkStatus = status
            self._tell("PhysicalLinkStatus", status)

    def stateVariables(self) -> dict[str, object]:
        """
        @return: the evented state variables and their current values.
        """
        return {
            "PhysicalLinkStatus": self._currentLinkStatus(),
            "EnabledForInternet": self.enabledForInternet,
        }

    # Actions.

    def SetEnabledForInternet(
        self, requester: object, NewEnabledForInternet: bool
    ) -> dict[str, object]:
        """
        Enable or disable Internet access through this WAN: 0 tears its
        connection down and makes RequestConnection fail with 709; 1 lets an
        always-on connection come back. Who may call it is the caller's
        access table's business.
        """
        enabled = bool(NewEnabledForInternet)
        if enabled != self.enabledForInternet:
            self.enabledForInternet = enabled
            self.log.info(
                "EnabledForInternet set to {enabled} by {requester}",
                enabled=enabled,
                requester=requester,
            )
            self._tell("EnabledForInternet", enabled)
            if self.connection is not None:
                self.connection.enabledChanged()
        return {}

    def GetEnabledForInternet(self, requester: object) -> dict[str, object]:
        return {"NewEnabledForInternet": self.enabledForInternet}

    def GetCommonLinkProperties(self, requester: object) -> dict[str, object]:
        rate = max(0, min(self.wan.linkSpeed(), _UI4_MAX))
        return {
            "NewWANAccessType": "Ethernet",
            "NewLayer1UpstreamMaxBitRate": rate,
            "NewLayer1DownstreamMaxBitRate": rate,
            "NewPhysicalLinkStatus": self._currentLinkStatus(),
        }

    def GetMaximumActiveConnections(self, requester: object) -> dict[str, object]:
        return {"NewMaximumActiveConnections": 1}

    def GetActiveConnection(
        self, requester: object, NewActiveConnectionIndex: int
    ) -> dict[str, object]:
        """
        The WAN's only connection, at index 0.

        @raise SpecifiedArrayIndexInvalid: 713, any other index.
        @raise ActionFailed: 501, the connection device is not known.
        """
        if NewActiveConnectionIndex != 0:
            raise SpecifiedArrayIndexInvalid("this WAN has one connection, at index 0")
        if not self.connectionDevice:
            raise ActionFailed("the connection device is not known")
        return {
            "NewActiveConnDeviceContainer": (
                f"{self.connectionDevice}:WANConnectionDevice:{CONNECTION_DEVICE_VERSION}"
            ),
            "NewActiveConnectionServiceID": WANIPConnection.serviceIdURN,
        }

    async def _counter(self, key: str) -> int:
        if self.counters is None:
            raise ActionFailed("traffic counters are not available for this WAN")
        try:
            stats: Mapping[str, Any] = await self.counters()
        except KeyError as e:
            # The interface is not there (yet, or any more): nothing to
            # count, and nothing an admin needs a traceback for.
            self.log.warn("No traffic counters for {interface}: it does not exist", interface=e)
            raise ActionFailed("the WAN interface does not exist") from e
        except Exception as e:
            self.log.failure("Reading the WAN's traffic counters failed")
            raise ActionFailed("traffic counters cannot be read now") from e
        return int(stats.get(key, 0)) % (_UI4_MAX + 1)

    async def GetTotalBytesSent(self, requester: object) -> dict[str, object]:
        return {"NewTotalBytesSent": await self._counter("tx_bytes")}

    async def GetTotalBytesReceived(self, requester: object) -> dict[str, object]:
        return {"NewTotalBytesReceived": await self._counter("rx_bytes")}

    async def GetTotalPacketsSent(self, requester: object) -> dict[str, object]:
        return {"NewTotalPacketsSent": await self._counter("tx_packets")}

    async def GetTotalPacketsReceived(self, requester: object) -> dict[str, object]:
        return {"NewTotalPacketsReceived": await self._counter("rx_packets")}
