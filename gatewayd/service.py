# -*- test-case-name: tests.unit.test_service -*-
"""
The service tree: one L{GatewayService} with the NAT backend, netlink, one
named L{WANService} per WAN, HTTP, SSDP, the LAN address watcher and the
manhole.

This module wires the parts; each part lives in its own module and is
handed what it needs.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from gatewayd.config import Config, WANConfig
from gatewayd.igd.device import WANParts, buildDevice, connectionDeviceUDN
from gatewayd.igd.l3forwarding import Layer3ForwardingService
from gatewayd.igd.types import WANIPConnection
from gatewayd.igd.wancommon import WANCommonInterfaceConfigService
from gatewayd.igd.wanipconnection import WANIPConnectionService
from gatewayd.interfaces import ILink, INetlink, InterfaceState, LANAddress, LinkContext, LinkStatus
from gatewayd.link.sysfs import linkSpeed


class WANService(MultiService):
    """
    One WAN: its link, and the state its UPnP services report.

    The link is brought up at start (an always-on connection). Until the
    connection state machine arrives, ConnectionStatus follows the link:
    C{Connected} while it has carrier and an address, else C{Disconnected}.

    @ivar config: this WAN's configuration.
    @ivar link: its L{ILink}.
    """

    log = Logger()

    def __init__(self, config: WANConfig, link: ILink, clock: Any) -> None:
        super().__init__()
        self.setName(f"wan:{config.name}")
        self.wanName = config.name
        self.config = config
        self.link = link
        self._clock = clock
        link.setName("link")
        link.setServiceParent(self)
        self._connectedAt: float | None = None
        self._unobserve: Callable[[], None] | None = None
        self.ipConnection = WANIPConnectionService(self)
        self.commonInterface = WANCommonInterfaceConfigService(self)

    def startService(self) -> None:
        super().startService()
        self._unobserve = self.link.addObserver(self._linkChanged)
        self._linkChanged(self.link.status)
        d = Deferred.fromCoroutine(self._connect())
        d.addErrback(lambda f: self.log.failure("WAN {wan}: bringing the link up failed", f, wan=self.wanName))

    async def _connect(self) -> None:
        await self.link.connect()

    def stopService(self) -> Any:
        if self._unobserve is not None:
            self._unobserve()
            self._unobserve = None
        return super().stopService()

    def _linkChanged(self, status: LinkStatus) -> None:
        wasConnected = self._connectedAt is not None
        if status.usable and not wasConnected:
            self._connectedAt = self._clock.seconds()
            self.log.info(
                "WAN {wan} ({interface}) connected: external address {address}",
                wan=self.wanName,
                interface=self.config.interface,
                address=str(status.address.ip) if status.address else "",
            )
        elif not status.usable and wasConnected:
            self._connectedAt = None
            self.log.warn(
                "WAN {wan} ({interface}) disconnected: {why}",
                wan=self.wanName,
                interface=self.config.interface,
                why=self.lastConnectionError,
            )

    # WANState, read by the IGD services.

    @property
    def connectionStatus(self) -> str:
        return "Connected" if self.link.status.usable else "Disconnected"

    @property
    def lastConnectionError(self) -> str:
        status = self.link.status
        if status.usable:
            return "ERROR_NONE"
        if not status.carrier:
            return "ERROR_NO_CARRIER"
        return "ERROR_IP_CONFIGURATION"

    @property
    def externalIPAddress(self) -> str:
        status = self.link.status
        return str(status.address.ip) if status.usable and status.address else ""

    @property
    def carrier(self) -> bool:
        return bool(self.link.status.carrier)

    @property
    def portMappingNumberOfEntries(self) -> int:
        return 0

    def uptime(self) -> int:
        if self._connectedAt is None:
            return 0
        return max(0, int(self._clock.seconds() - self._connectedAt))

    def linkSpeed(self) -> int:
        return linkSpeed(self.config.interface)


class LANWatcher(Service):
    """
    Follows the IPv4 addresses of the LAN interfaces and tells the services
    that serve UPnP there (HTTP first, so that SSDP announces a bound port).
    """

    log = Logger()

    def __init__(
        self,
        netlink: INetlink,
        interfaces: Sequence[str],
        listeners: Sequence[Callable[[Sequence[LANAddress]], None]],
    ) -> None:
        self.setName("lan")
        self._netlink = netlink
        self._interfaces = tuple(interfaces)
        self._listeners = tuple(listeners)
        self._states: dict[str, InterfaceState | None] = {}
        self._unwatch: list[Callable[[], None]] = []
        self.addresses: tuple[LANAddress, ...] = ()

    def startService(self) -> None:
        super().startService()
        for name in self._interfaces:
            self._unwatch.append(
                self._netlink.watchInterface(name, lambda state, name=name: self._changed(name, state))
            )

    def stopService(self) -> None:
        super().stopService()
        for unwatch in self._unwatch:
            unwatch()
        del self._unwatch[:]

    def _changed(self, name: str, state: InterfaceState | None) -> None:
        self._states[name] = state
        addresses = tuple(
            LANAddress(s.name, s.index, a)
            for n in self._interfaces
            if (s := self._states.get(n)) is not None and s.up
            for a in s.addresses
        )
        if addresses == self.addresses:
            return
        if state is None or not state.up or not state.addresses:
            self.log.warn(
                "LAN interface {interface} is {what}: UPnP is not served there until it has an IPv4 address",
                interface=name,
                what="missing" if state is None else ("down" if not state.up else "without an IPv4 address"),
            )
        self.addresses = addresses
        for listener in self._listeners:
            try:
                listener(addresses)
            except Exception:
                self.log.failure("Serving UPnP on {addresses} failed", addresses=[str(a.address) for a in addresses])


class GatewayService(MultiService):
    """
    The root of the tree.

    @ivar config: the parsed configuration.
    @ivar wans: the L{WANService}s by WAN name, in configured order.
    @ivar device: the IGD:2 device tree.
    """

    def __init__(self, config: Config, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.wans: dict[str, WANService] = {}
        self.device: Any = None

    def namespace(self) -> dict[str, object]:
        """
        @return: the manhole's namespace: the live tree.
        """
        return {
            "gateway": self,
            "wans": self.wans,
            "config": self.config,
            "reactor": self.reactor,
        }


def preferredOrder(wans: Mapping[str, WANService]) -> list[WANService]:
    """
    @return: the WANs by priority (lower first), in configured order among
        equals.
    """
    return sorted(wans.values(), key=lambda w: w.config.priority)


def makeGateway(
    config: Config,
    reactor: Any,
    *,
    netlink: INetlink | None = None,
    linkTypes: Mapping[str, Any] | None = None,
    nat: Any = None,
    ssdpPort: int = 1900,
    ssdpListen: Callable[[Any], Any] | None = None,
) -> GatewayService:
    """
    Build the whole tree from a configuration; nothing runs until it is
    started.

    @param netlink: the L{INetlink} to use; a L{NetlinkService} by default.
    @param linkTypes: the link types by name; the installed plugins by default.
    @param nat: the L{INATBackend}; from C{config.gateway.nat} by default.
    @param ssdpPort: the SSDP port (tests use another one).
    @param ssdpListen: makes SSDP's transport (tests pass a fake).
    """
    from gatewayd import config as configModule
    from gatewayd.state import FileStateStore, threadRunner, udnSeed
    from gatewayd.upnp.http import LANHTTPService, LANPolicy, makeSite
    from gatewayd.upnp.description import configIdOf
    from gatewayd.upnp.ssdp import SSDPService

    gateway = GatewayService(config, reactor)
    stateDir = FilePath(config.gateway.stateDir)
    store = FileStateStore(stateDir, threadRunner(reactor))
    seed = udnSeed(store)

    if nat is None:
        nat = _natBackend(config)
    nat.setName("nat")
    nat.setServiceParent(gateway)

    if netlink is None:
        from gatewayd.link.netlink import NetlinkService

        netlink = NetlinkService(reactor)
    if isinstance(netlink, Service) or hasattr(netlink, "setServiceParent"):
        netlink.setName("netlink")  # type: ignore[attr-defined]
        netlink.setServiceParent(gateway)  # type: ignore[attr-defined]

    types = configModule.linkTypes() if linkTypes is None else linkTypes
    for wanConfig in config.wans:
        link = types[wanConfig.link.type].buildLink(
            LinkContext(
                wanName=wanConfig.name,
                interface=wanConfig.interface,
                settings=wanConfig.link.settings,
                netlink=netlink,
                reactor=reactor,
                stateDir=stateDir,
            )
        )
        wan = WANService(wanConfig, link, reactor)
        wan.setServiceParent(gateway)
        gateway.wans[wanConfig.name] = wan

    def activeConnection() -> str:
        ordered = preferredOrder(gateway.wans)
        active = next((w for w in ordered if w.connectionStatus == "Connected"), ordered[0])
        return (
            f"{connectionDeviceUDN(seed, active.wanName)}:WANConnectionDevice:2,"
            f"{WANIPConnection.serviceIdURN}"
        )

    gateway.device = buildDevice(
        seed,
        config.upnp.friendlyName,
        [WANParts(w.wanName, w.ipConnection, w.commonInterface) for w in preferredOrder(gateway.wans)],
        Layer3ForwardingService(activeConnection),
    )
    configId = configIdOf(gateway.device)

    site = makeSite(gateway.device, LANPolicy(), reactor)
    http = LANHTTPService(reactor, site, config.lan.httpPort)
    http.setName("http")
    http.setServiceParent(gateway)

    ssdp = SSDPService(
        reactor,
        gateway.device,
        httpPort=lambda: http.port,
        configId=configId,
        port=ssdpPort,
        listen=ssdpListen,
    )
    ssdp.setName("ssdp")
    ssdp.setServiceParent(gateway)

    LANWatcher(netlink, config.lan.interfaces, [http.setAddresses, ssdp.setAddresses]).setServiceParent(
        gateway
    )

    if config.manhole.port:
        from gatewayd.manhole import ManholeService, checkPasswordFile

        checkPasswordFile(FilePath(config.manhole.passwordFile))
        manhole = ManholeService(
            reactor, config.manhole.port, FilePath(config.manhole.passwordFile), gateway.namespace
        )
        manhole.setName("manhole")
        manhole.setServiceParent(gateway)
    return gateway


def _natBackend(config: Config) -> Any:
    if config.gateway.nat == "memory":
        from gatewayd.nat.memory import MemoryNATBackend

        return MemoryNATBackend()
    from gatewayd.errors import ConfigError

    raise ConfigError(
        "gateway.nat",
        'the "nftables" backend is not available in this version; use nat = "memory"',
    )
