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
    @ivar health: its L{gatewayd.health.HealthMonitor}, or L{None}.
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
        health: Any = None,
    ) -> None:
        """
        @param health: this WAN's L{gatewayd.health.HealthMonitor}, if any;
            it starts after the link.
        """
        super().__init__()
        self.setName(f"wan:{config.name}")
        self.wanName = config.name
        self.config = config
        self.link = link
        self.health = health
        self._clock = clock
        self._nat = nat
        link.setName("link")
        link.setServiceParent(self)
        if health is not None:
            health.setName("health")
            health.setServiceParent(self)
        self._unobserve: Callable[[], None] | None = None
        self._unobserveAddress: Callable[[], None] | None = None
        counters = None
        idle = None
        if callable(getattr(link, "statistics", None)):
            counters = link.statistics  # the link counts its own traffic
        elif netlink is not None and hasattr(netlink, "statistics"):
            counters = lambda: netlink.statistics(config.interface)  # noqa: E731
        if counters is not None:
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
        self._unobserveAddress = self.link.addObserver(self._tellAddress)
        self._tellAddress(self.link.status)
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

    def _tellAddress(self, status: Any) -> None:
        """
        Tell the NAT backend this WAN's address (for hairpin), whenever the
        link changes; the backend ignores repeats.
        """
        if hasattr(self._nat, "setWANAddress"):
            self._nat.setWANAddress(self.wanName, status.address.ip if status.address else None)

    def stopService(self) -> Any:
        if self._unobserve is not None:
            self._unobserve()
            self._unobserve = None
        if self._unobserveAddress is not None:
            self._unobserveAddress()
            self._unobserveAddress = None
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
        self.router: Any = None

    def status(self) -> list[dict[str, object]]:
        """
        @return: one row per WAN, for the manhole: the router's view (active,
            connected, healthy, address, table, mark) with the connection's
            ConnectionStatus and LastConnectionError and the health
            monitor's state, reason and timing.
        """
        rows = self.router.status() if self.router is not None else []
        now = self.reactor.seconds()
        for row in rows:
            wan = self.wans[str(row["name"])]
            row["connectionStatus"] = wan.connection.status
            row["lastConnectionError"] = wan.connection.lastConnectionError
            if wan.health is not None:
                health = wan.health.status()
                row["health"] = health.state
                row["healthReason"] = health.reason
                row["healthFor"] = round(now - health.since, 1)
                row["targets"] = [str(t) for t in health.targets]
                row["flaps"] = health.flaps
        return rows

    def namespace(self) -> dict[str, object]:
        """
        @return: the manhole's namespace: the live tree
            (C{gateway.status()} shows every WAN's state).
        """
        return {
            "gateway": self,
            "wans": self.wans,
            "router": self.router,
            "config": self.config,
            "reactor": self.reactor,
        }


def preferredOrder(wans: Mapping[str, WANService]) -> list[WANService]:
    """
    @return: the WANs by priority (lower first), in configured order among
        equals.
    """
    return sorted(wans.values(), key=lambda w: w.config.priority)


def activeOrder(wans: Mapping[str, WANService], active: str | None) -> list[WANService]:
    """
    @return: the active WAN first, then the others by L{preferredOrder}:
        the order of the description (miniupnpc uses the first
        WANIPConnection it finds).
    """
    order = preferredOrder(wans)
    return sorted(order, key=lambda w: w.wanName != active)


#: ConnectionStatus values in which a WAN carries traffic.
CONNECTED = ("Connected", "PendingDisconnect")


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
    prober: Any = None,
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
    @param prober: the L{gatewayd.health.IProber} of every WAN's health
        monitor; by default the real one C{health.probe} names (links
        without an interface, such as C{simulated}, are not probed).
    """
    from gatewayd import config as configModule
    from gatewayd.state import FileStateStore, threadRunner, udnSeed
    from gatewayd.upnp.http import Descriptions, LANHTTPService, LANPolicy, makeSite
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
    from gatewayd.health import FlapGuard, HealthMonitor, LinkOnlyProber, proberFor
    from gatewayd.router import numbersFromConfig

    numbers = numbersFromConfig(config.wans)
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
        if not getattr(link, "probed", True):
            wanProber: Any = LinkOnlyProber()
        elif prober is not None:
            wanProber = prober
        else:
            wanProber = proberFor(wanConfig.health.probe, reactor)
        health = HealthMonitor(
            reactor,
            wanConfig.name,
            wanConfig.health,
            wanProber,
            mark=numbers[wanConfig.name].mark,
            link=link.status,
            flapGuard=FlapGuard(
                wanConfig.health.flapWindow, wanConfig.health.flapHold, wanConfig.health.flapMaxHold
            ),
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
            health=health,
        )
        wan.mappings.restore(records, wan.staticMappings())
        wan.setServiceParent(gateway)
        gateway.wans[wanConfig.name] = wan
    _forgetRemovedWANs(journal, records, set(gateway.wans))

    router = _buildRouter(gateway, config, reactor, netlink, numbers)

    def eligible(w: WANService) -> bool:
        return w.connection.status in CONNECTED and (w.health is None or w.health.healthy)

    def connections() -> list[WANConnectionRef]:
        return [
            WANConnectionRef(w.wanName, connectionDeviceUDN(seed, w.wanName), eligible(w))
            for w in activeOrder(gateway.wans, router.active)
        ]

    gateway.layer3Forwarding = Layer3ForwardingService(connections)

    devices: dict[tuple[str, ...], Any] = {}

    def currentDevice() -> Any:
        order = activeOrder(gateway.wans, router.active)
        key = tuple(w.wanName for w in order)
        if key not in devices:
            devices[key] = buildDevice(
                seed,
                config.upnp.friendlyName,
                [WANParts(w.wanName, w.ipConnection, w.commonInterface) for w in order],
                gateway.layer3Forwarding,
            )
        return devices[key]

    gateway.device = currentDevice()
    descriptions = Descriptions(lambda: gateway.device)

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
        descriptions, lan, reactor, eventResource=bus.resource, authorize=policy.checkAction
    )
    http = LANHTTPService(reactor, site, config.lan.httpPort)
    http.setName("http")
    http.setServiceParent(gateway)

    ssdp = SSDPService(
        reactor,
        lambda: gateway.device,
        httpPort=lambda: http.port,
        configId=lambda: descriptions.configId,
        port=ssdpPort,
        listen=ssdpListen,
    )
    ssdp.setName("ssdp")
    ssdp.setServiceParent(gateway)

    LANWatcher(netlink, config.lan.interfaces, [http.setAddresses, ssdp.setAddresses]).setServiceParent(
        gateway
    )
    _failoverEffects(gateway, router, nat, currentDevice, ssdp)

    if config.manhole.port:
        from gatewayd.manhole import ManholeService, checkPasswordFile

        checkPasswordFile(FilePath(config.manhole.passwordFile))
        manhole = ManholeService(
            reactor, config.manhole.port, FilePath(config.manhole.passwordFile), gateway.namespace
        )
        manhole.setName("manhole")
        manhole.setServiceParent(gateway)
    return gateway


def _buildRouter(
    gateway: GatewayService, config: Config, reactor: Any, netlink: Any, numbers: Mapping[str, Any]
) -> Any:
    """
    Build the L{gatewayd.router.MultiWANRouter} (after the WANs in the
    tree: it starts after them and stops before them) and feed it every
    WAN's link, connection and health.

    Who owns what in the kernel: C{static} and C{dhcp} links own their
    address, their WAN table's routes and their C{from <address>} rule
    (they put the routes back when the interface comes back up); the
    router owns the fwmark rules, the C{suppress_prefixlength} rule and
    the main table's default route, and, for an C{unmanaged} link with a
    C{gateway}, its table and source rule too. An C{unmanaged} link
    without a C{gateway} keeps the routes its own tool set.
    """
    from gatewayd.router import (
        IRouteWriter,
        MemoryRouteWriter,
        MultiWANRouter,
        WANState,
        checkKernel,
        readSysctls,
        sysctlKeys,
    )

    states = []
    for wan in gateway.wans.values():
        kernelLink = getattr(wan.link, "probed", True)
        ownsRoutes = bool(getattr(wan.link, "configuresKernel", False))
        hasGateway = getattr(wan.config.link.settings, "gateway", None) is not None
        status = wan.link.status
        states.append(
            WANState(
                wan.wanName,
                wan.config.interface,
                wan.config.priority,
                address=status.address,
                gateway=status.gateway,
                managed=kernelLink and (ownsRoutes or hasGateway),
                linkRoutes=ownsRoutes,
            )
        )
    real = IRouteWriter.providedBy(netlink)
    writer = netlink if real else MemoryRouteWriter()
    kernelCheck = None
    interfaces = [
        w.config.interface for w in gateway.wans.values() if getattr(w.link, "probed", True)
    ]
    if real and interfaces:
        # Only WANs with a kernel interface need forwarding and rp_filter
        # right (the demo's simulated WANs have none).

        def kernelCheck() -> list[str]:
            return checkKernel(readSysctls(sysctlKeys(interfaces)), interfaces)

    router = MultiWANRouter(
        reactor,
        states,
        writer,
        onStop=config.gateway.onStop,
        numbers=numbers,
        kernelCheck=kernelCheck,
    )
    router.setName("router")
    router.setServiceParent(gateway)
    gateway.router = router

    for wan in gateway.wans.values():
        _feedRouter(router, wan)
    return router


def _feedRouter(router: Any, wan: WANService) -> None:
    """
    Tell C{router} about every change of C{wan}'s link (address, gateway;
    its health monitor hears it first), connection and health.
    """
    name, health = wan.wanName, wan.health

    def linkChanged(status: Any) -> None:
        if health is not None:
            health.linkChanged(status)
        if not status.carrier:
            what = "carrier lost"
        elif status.address is None:
            what = "no address"
        else:
            what = f"address {status.address}"
        router.wanChanged(name, f"link: {what}", address=status.address, gateway=status.gateway)

    def connectionChanged(*ignored: object) -> None:
        status = wan.connection.status
        error = wan.connection.lastConnectionError
        why = f" ({error})" if status not in CONNECTED and error != "ERROR_NONE" else ""
        router.wanChanged(name, f"connection {status}{why}", connected=status in CONNECTED)

    wan.link.addObserver(linkChanged)
    wan.connection.addObserver(connectionChanged)
    if health is not None:
        health.addObserver(
            lambda healthy, reason: router.wanChanged(
                name, ("healthy: " if healthy else "unhealthy: ") + reason, healthy=healthy
            )
        )
    else:
        router.wanChanged(name, "not monitored", healthy=True)


def _failoverEffects(
    gateway: GatewayService, router: Any, nat: Any, currentDevice: Callable[[], Any], ssdp: Any
) -> None:
    """
    What follows a change of the active WAN, once the kernel's default
    route has moved, in one step: the failed WAN's masqueraded connections
    are forgotten (they start again through the new WAN instead of
    hanging), the description lists the active WAN first (its CONFIGID
    changes and SSDP announces it again), Layer3Forwarding's
    DefaultConnectionService is evented (see L{_publishEvents}). A WAN
    that fails while another is active has its connections forgotten at
    once. An admin's SetDefaultConnectionService makes that WAN the most
    preferred.
    """
    log = Logger()
    forgotten: set[str] = set()  # failed WANs whose connections are forgotten

    def forget(name: str) -> None:
        if name in forgotten:
            return
        forgotten.add(name)
        wan = gateway.wans[name]
        address = wan.link.status.address
        if address is None or not hasattr(nat, "forgetOutbound"):
            return
        nat.forgetOutbound(name, address.ip).addErrback(
            lambda f: log.failure("Forgetting the connections of WAN {wan}", f, wan=name)
        )

    def eligible(name: str) -> bool:
        return any(w.name == name and w.eligible for w in router.wans())

    def activeChanged(active: str | None, previous: str | None, reason: str) -> None:
        if previous is not None and not eligible(previous):
            forget(previous)
        device = currentDevice()
        if device is not gateway.device:
            gateway.device = device
            ssdp.reannounce()

    router.addObserver(activeChanged)

    for wan in gateway.wans.values():
        if wan.health is None:
            continue

        def healthChanged(healthy: bool, reason: str, name: str = wan.wanName) -> None:
            if healthy:
                forgotten.discard(name)
            elif router.active != name:
                forget(name)

        wan.health.addObserver(healthChanged)

    l3f = gateway.layer3Forwarding

    def preferredChanged() -> None:
        for wan in gateway.wans.values():
            priority = -1 if wan.wanName == l3f.preferred else wan.config.priority
            router.wanChanged(wan.wanName, "SetDefaultConnectionService", priority=priority)

    l3f.addObserver(preferredChanged)


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
    if gateway.router is not None:
        gateway.router.addObserver(defaultMayHaveChanged)


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
