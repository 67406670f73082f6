# -*- test-case-name: tests.unit.test_service -*-
"""
The service tree: one L{GatewayService} with the NAT backend, netlink, one
named L{WANService} per WAN, HTTP, SSDP, the LAN address watcher and the
manhole.

This module wires the parts; each part lives in its own module and is
handed what it needs.
"""

from __future__ import annotations

import random

from typing import Any, Callable, Mapping, Sequence

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from gatewayd.config import Config, UPnPConfig, WANConfig
from gatewayd.connection import WANConnection
from gatewayd.igd.access import AccessPolicy
from gatewayd.igd.device import WANParts, buildDevice, connectionDeviceUDN
from gatewayd.igd.l3forwarding import Layer3ForwardingService, WANConnectionRef
from gatewayd.igd.mappings import WANMappings
from gatewayd.igd.portmap import PortMapping, fromConfig
from gatewayd.igd.wancommon import WANCommonInterfaceConfigService
from gatewayd.igd.wanipconnection import WANIPConnectionService
from gatewayd.interfaces import ILink, INetlink, InterfaceState, LANAddress, LinkContext
from gatewayd.link.sysfs import linkSpeed


class WANService(MultiService):
    """
    One WAN: its link, its connection state machine, its port mappings and
    the UPnP services that show them.

    @ivar config: this WAN's configuration.
    @ivar link: its L{ILink}.
    @ivar connection: its L{WANConnection}.
    @ivar mappings: its L{WANMappings}.
    """

    log = Logger()

    def __init__(
        self,
        config: WANConfig,
        link: ILink,
        clock: Any,
        *,
        nat: Any,
        journal: Any,
        policy: AccessPolicy,
        upnp: UPnPConfig,
        netlink: Any = None,
        connectionDevice: str | None = None,
    ) -> None:
        super().__init__()
        self.setName(f"wan:{config.name}")
        self.wanName = config.name
        self.config = config
        self.link = link
        self._clock = clock
        self._nat = nat
        link.setName("link")
        link.setServiceParent(self)
        self._unobserve: Callable[[], None] | None = None
        counters = None
        idle = None
        if netlink is not None and hasattr(netlink, "statistics"):
            counters = lambda: netlink.statistics(config.interface)  # noqa: E731
            idle = lambda: counters().addCallback(  # noqa: E731
                lambda s: s["rx_packets"] + s["tx_packets"]
            )
        self.connection = WANConnection(
            link, clock, lambda: self.commonInterface.enabledForInternet, idleCounter=idle
        )
        self.commonInterface = WANCommonInterfaceConfigService(
            self, connection=self.connection, counters=counters, connectionDevice=connectionDevice
        )
        self.mappings = WANMappings(
            config.name, config.interface, clock, nat, journal, capacity=upnp.maxMappings
        )
        self.ipConnection = WANIPConnectionService(
            self.connection, self.mappings, policy, clock, upnp.maxLease
        )

    def staticMappings(self) -> list[PortMapping]:
        """
        @return: the configuration's out-of-band mappings of this WAN.
        """
        return [fromConfig(m) for m in self.config.staticMappings]

    def startService(self) -> None:
        super().startService()
        self._unobserve = self.link.addObserver(lambda status: self.commonInterface.linkStatusChanged())
        self.commonInterface.linkStatusChanged()  # the link may have changed while starting
        self.connection.start()
        d = self._installMappings()
        d.addErrback(
            lambda f: self.log.failure("WAN {wan}: installing port mappings in the kernel failed", f, wan=self.wanName)
        )

    def _installMappings(self) -> Deferred[None]:
        """
        Make the kernel hold exactly this WAN's mappings (after a restart it
        may hold some, none, or stale ones).
        """
        wanted = {m.key: m for m in self.mappings.installed()}
        present = {m.key: m for m in self._nat.mappings(self.wanName)}
        add = [m for k, m in wanted.items() if present.get(k) != m]
        remove = [m for k, m in present.items() if wanted.get(k) != m]
        if not add and not remove:
            return succeed(None)
        return self._nat.apply(add, remove)

    def stopService(self) -> Any:
        if self._unobserve is not None:
            self._unobserve()
            self._unobserve = None
        self.mappings.stop()
        self.connection.stop()
        return super().stopService()

    # WANState, read by the IGD services.

    @property
    def carrier(self) -> bool:
        return bool(self.link.status.carrier)

    def linkSpeed(self) -> int:
        return linkSpeed(self.config.interface)


class JournalService(Service):
    """
    Closes the journal when the daemon stops (after the WANs: it is their
    sibling before them).
    """

    def __init__(self, journal: Any) -> None:
        self.setName("journal")
        self.journal = journal

    def stopService(self) -> Any:
        super().stopService()
        return self.journal.close()


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
        self.layer3Forwarding: Any = None

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
    runner: Any = None,
    agent: Any = None,
) -> GatewayService:
    """
    Build the whole tree from a configuration; nothing runs until it is
    started.

    @param netlink: the L{INetlink} to use; a L{NetlinkService} by default.
    @param linkTypes: the link types by name; the installed plugins by default.
    @param nat: the L{INATBackend}; from C{config.gateway.nat} by default.
    @param ssdpPort: the SSDP port (tests use another one).
    @param ssdpListen: makes SSDP's transport (tests pass a fake).
    @param runner: runs blocking disk writes; in a thread by default (tests
        run them at once).
    @param agent: the L{IAgent} that delivers GENA events (tests pass a fake).
    """
    from gatewayd import config as configModule
    from gatewayd.state import FileStateStore, threadRunner, udnSeed
    from gatewayd.upnp.http import LANHTTPService, LANPolicy, makeSite
    from gatewayd.upnp.description import configIdOf
    from gatewayd.upnp.gena import EventBus, notifyAgent
    from gatewayd.upnp.ssdp import SSDPService

    gateway = GatewayService(config, reactor)
    stateDir = FilePath(config.gateway.stateDir)
    if runner is None:
        runner = threadRunner(reactor)
    store = FileStateStore(stateDir, runner)
    seed = udnSeed(store)

    if nat is None:
        nat = _natBackend(config, reactor)
    nat.setName("nat")
    nat.setServiceParent(gateway)

    if netlink is None:
        from gatewayd.link.netlink import NetlinkService

        netlink = NetlinkService(reactor)
    if isinstance(netlink, Service) or hasattr(netlink, "setServiceParent"):
        netlink.setName("netlink")  # type: ignore[attr-defined]
        netlink.setServiceParent(gateway)  # type: ignore[attr-defined]

    from gatewayd.journal import Journal

    journal = Journal(stateDir, "mappings", reactor, runner)
    records = journal.load()
    JournalService(journal).setServiceParent(gateway)
    reserved = {("UDP", 1900)}
    if config.lan.httpPort:
        reserved.add(("TCP", config.lan.httpPort))
    if config.manhole.port:
        reserved.add(("TCP", config.manhole.port))
    policy = AccessPolicy(config.upnp, frozenset(reserved))

    types = configModule.linkTypes() if linkTypes is None else linkTypes
    from gatewayd.link.capabilities import checkCapabilities

    # Before anything runs: a missing capability names its WAN and stops
    # the daemon, with no interface half configured.
    checkCapabilities(
        [(i, w.name, types[w.link.type], w.link.settings) for i, w in enumerate(config.wans)]
    )
    for wanConfig in config.wans:
        link = types[wanConfig.link.type].buildLink(
            LinkContext(
                wanName=wanConfig.name,
                interface=wanConfig.interface,
                settings=wanConfig.link.settings,
                netlink=netlink,
                reactor=reactor,
                stateDir=stateDir,
                onStop=config.gateway.onStop,
                table=wanConfig.table,
                lanInterfaces=tuple(config.lan.interfaces),
            )
        )
        wan = WANService(
            wanConfig,
            link,
            reactor,
            nat=nat,
            journal=journal,
            policy=policy,
            upnp=config.upnp,
            netlink=netlink,
            connectionDevice=connectionDeviceUDN(seed, wanConfig.name),
        )
        wan.mappings.restore(records, wan.staticMappings())
        wan.setServiceParent(gateway)
        gateway.wans[wanConfig.name] = wan
    _forgetRemovedWANs(journal, records, set(gateway.wans))

    def connections() -> list[WANConnectionRef]:
        return [
            WANConnectionRef(
                w.wanName,
                connectionDeviceUDN(seed, w.wanName),
                w.connection.status in ("Connected", "PendingDisconnect"),
            )
            for w in preferredOrder(gateway.wans)
        ]

    gateway.layer3Forwarding = Layer3ForwardingService(connections)

    if hasattr(netlink, "addRoute"):
        # Until the multi-WAN router exists: the main table's default route
        # follows the most preferred connected WAN.
        from gatewayd.link.defaultroute import Candidate, DefaultRoute

        def candidates() -> list[Candidate]:
            return [
                Candidate(
                    w.config.interface,
                    w.link.status.gateway,
                    w.connection.status in ("Connected", "PendingDisconnect"),
                )
                for w in preferredOrder(gateway.wans)
                if getattr(w.link, "configuresKernel", False)
            ]

        defaultRoute = DefaultRoute(netlink, candidates, config.gateway.onStop)
        defaultRoute.setName("default-route")
        defaultRoute.setServiceParent(gateway)
        for wan in gateway.wans.values():
            wan.connection.addObserver(defaultRoute.changed)
    gateway.device = buildDevice(
        seed,
        config.upnp.friendlyName,
        [WANParts(w.wanName, w.ipConnection, w.commonInterface) for w in preferredOrder(gateway.wans)],
        gateway.layer3Forwarding,
    )
    configId = configIdOf(gateway.device)

    lan = LANPolicy()
    bus = EventBus(
        reactor,
        notifyAgent(reactor) if agent is None else agent,
        random.SystemRandom(),
        peerAllowed=lan.peerAllowed,
        maxSubscriptions=config.upnp.maxSubscriptions,
        maxPerClient=config.upnp.maxSubscriptionsPerClient,
    )
    bus.setName("events")
    bus.setServiceParent(gateway)
    _publishEvents(gateway, bus)
    site = makeSite(
        gateway.device, lan, reactor, eventResource=bus.resource, authorize=policy.checkAction
    )
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


def _publishEvents(gateway: GatewayService, bus: Any) -> None:
    """
    Connect every evented state variable's source to the event bus: each
    WAN's connection, port mappings and link status, and the default
    connection service.
    """
    byImplementation = {id(s.implementation): s for s in gateway.device.allServices()}
    for wan in gateway.wans.values():
        ipService = byImplementation[id(wan.ipConnection)]
        wan.connection.addObserver(bus.observer(ipService))
        wan.mappings.addObserver(
            lambda wan=wan, ipService=ipService: bus.publish(
                ipService,
                {
                    "PortMappingNumberOfEntries": len(wan.mappings.table),
                    "SystemUpdateID": wan.mappings.systemUpdateID,
                },
            )
        )
        wan.commonInterface.addObserver(bus.observer(byImplementation[id(wan.commonInterface)]))

    l3f = gateway.layer3Forwarding
    l3fService = byImplementation[id(l3f)]
    published = [l3f.active().name]

    def defaultMayHaveChanged(*ignored: object) -> None:
        current = l3f.active().name
        if current != published[0]:
            published[0] = current
            bus.publish(l3fService, {"DefaultConnectionService": current})

    for wan in gateway.wans.values():
        wan.connection.addObserver(defaultMayHaveChanged)
    l3f.addObserver(defaultMayHaveChanged)


def _forgetRemovedWANs(journal: Any, records: Mapping[str, object], wans: set[str]) -> None:
    """
    Delete the saved mappings of WANs no longer in the configuration: a WAN
    removed from it takes its mappings with it.
    """
    log = Logger()
    gone = sorted(k for k in records if k.split("/", 1)[0] not in wans)
    for name in sorted({k.split("/", 1)[0] for k in gone}):
        log.info("Forgetting the saved port mappings of WAN {wan}: it is no longer configured", wan=name)
    for key in gone:
        journal.delete(key).addErrback(lambda f: log.failure("Forgetting {key}", f, key=key))


def _natBackend(config: Config, reactor: Any) -> Any:
    """
    @return: the NAT backend C{[gateway] nat} names.
    @raise ConfigError: the backend cannot work here (e.g. nftables without
        CAP_NET_ADMIN), naming the alternative.
    """
    if config.gateway.nat == "memory":
        from gatewayd.nat.memory import MemoryNATBackend

        return MemoryNATBackend()
    try:
        from gatewayd.nat.nftables import NFTablesBackend
    except ImportError:
        from gatewayd.errors import ConfigError

        raise ConfigError(
            "gateway.nat",
            'the "nftables" backend is not available in this version; use nat = "memory"',
        )
    return NFTablesBackend(reactor, config)
