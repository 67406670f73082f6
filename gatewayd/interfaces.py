# -*- test-case-name: tests.unit.test_plugins -*-
"""
The contracts between gatewayd's parts.

Parents call children through these interfaces, and tests swap any of them
for a fake that C{verifyObject} accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import TYPE_CHECKING, Any, Callable, Mapping

from zope.interface import Attribute, Interface

from twisted.application.service import IService

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime
    from twisted.python.filepath import FilePath


@dataclass(frozen=True)
class InterfaceState:
    """
    What the kernel says about one network interface, as netlink reports it.

    @ivar name: the interface name, e.g. C{eth1}.
    @ivar index: the kernel's ifindex.
    @ivar up: administratively up (C{IFF_UP}).
    @ivar carrier: the physical link is up (C{IFF_LOWER_UP}).
    @ivar addresses: the IPv4 addresses, in the kernel's order.
    @ivar mtu: the MTU.
    @ivar stats: byte and packet counters from C{IFLA_STATS64}: keys
        C{rx_bytes}, C{tx_bytes}, C{rx_packets}, C{tx_packets}.
    """

    name: str
    index: int
    up: bool = False
    carrier: bool = False
    addresses: tuple[IPv4Interface, ...] = ()
    mtu: int = 1500
    stats: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LANAddress:
    """
    One IPv4 address on a LAN interface: where gatewayd serves UPnP.

    @ivar interface: the interface name, e.g. C{br-lan} (C{lo} in the demo).
    @ivar index: the kernel's ifindex of that interface.
    @ivar address: the address with its prefix, e.g. C{192.168.1.1/24}.
    """

    interface: str
    index: int
    address: IPv4Interface


@dataclass(frozen=True)
class LeaseTimes:
    """
    When a lease was obtained and when it must be renewed, rebound and
    given up, in the reactor's seconds (C{IReactorTime.seconds()}).

    @ivar obtained: when the server granted (or last extended) the lease.
    @ivar renewAt: T1, or L{None} for an infinite lease.
    @ivar rebindAt: T2, or L{None} for an infinite lease.
    @ivar expiresAt: the end of the lease, or L{None} for an infinite lease.
    """

    obtained: float
    renewAt: float | None = None
    rebindAt: float | None = None
    expiresAt: float | None = None


@dataclass(frozen=True)
class LinkStatus:
    """
    The state of a WAN link as a connection needs it.

    @ivar carrier: the physical link is up.
    @ivar address: the WAN's IPv4 address and prefix, or L{None} while it has
        none.
    @ivar gateway: the next hop for the WAN's default route, if known.
    @ivar dns: the name servers the link learned or was configured with.
    @ivar lease: the lease times of a link that leases its address (DHCP),
        L{None} for others.
    @ivar error: why the link has no address although it has carrier, as a
        WANIPConnection LastConnectionError value (C{"ERROR_ISP_DISCONNECT"}:
        the ISP took the address away, e.g. a DHCP NAK or an expired lease;
        C{"ERROR_IP_CONFIGURATION"}: no usable address could be obtained or
        configured), or L{None} to let the connection decide.
    """

    carrier: bool = False
    address: IPv4Interface | None = None
    gateway: IPv4Address | None = None
    dns: tuple[IPv4Address, ...] = ()
    lease: LeaseTimes | None = None
    error: str | None = None

    @property
    def usable(self) -> bool:
        """
        Whether traffic can flow: carrier and an address.
        """
        return self.carrier and self.address is not None


class INetlink(Interface):
    """
    The kernel's view of interfaces and addresses (read-only half).
    """

    def interfaceState(name: str) -> InterfaceState | None:
        """
        @return: the last known state of the interface C{name}, or L{None}
            if no such interface exists (or the service has not started).
        """

    def watchInterface(
        name: str, observer: Callable[[InterfaceState | None], None]
    ) -> Callable[[], None]:
        """
        Call C{observer} with the state of C{name} now (if known) and after
        every change; L{None} means the interface disappeared.

        @return: a callable that stops the watch.
        """


class INetlinkWriter(Interface):
    """
    The kernel's interfaces, addresses, routes and rules (writing half).

    Every request is idempotent: adding what exists or removing what does
    not succeeds. Each returns a L{Deferred} firing with L{None} once the
    kernel has done it, or failing (e.g. L{OSError} with C{EPERM} without
    CAP_NET_ADMIN).
    """

    def setLinkUp(interface: str, up: bool = True) -> Any:
        """
        Set the interface administratively up (or down).
        """

    def setMTU(interface: str, mtu: int) -> Any:
        """
        Set the interface's MTU.
        """

    def addAddress(interface: str, address: IPv4Interface) -> Any:
        """
        Add C{address} (with its prefix) to the interface.
        """

    def removeAddress(interface: str, address: IPv4Interface) -> Any:
        """
        Remove C{address} from the interface.
        """

    def addRoute(
        interface: str,
        destination: IPv4Network,
        gateway: IPv4Address | None = None,
        table: int = 254,
        source: IPv4Address | None = None,
    ) -> Any:
        """
        Add or replace the route to C{destination} in C{table} (254 is
        main), through C{gateway} on C{interface} (on-link if L{None}),
        preferring C{source} as the source address.
        """

    def removeRoute(
        interface: str,
        destination: IPv4Network,
        gateway: IPv4Address | None = None,
        table: int = 254,
    ) -> Any:
        """
        Remove the route to C{destination} on C{interface} from C{table}.
        """

    def addRule(source: IPv4Network, table: int, priority: int) -> Any:
        """
        Add the policy rule C{from source lookup table} at C{priority}.
        """

    def removeRule(source: IPv4Network, table: int, priority: int) -> Any:
        """
        Remove that rule.
        """


#: What C{[gateway] on_stop} may say.
ON_STOP_KEEP, ON_STOP_CLEAN = "keep", "clean"


@dataclass(frozen=True)
class LinkContext:
    """
    What a link needs to be built.

    @ivar wanName: the WAN's configured name.
    @ivar interface: the WAN's interface name.
    @ivar settings: what the link type's C{checkConfig} returned.
    @ivar netlink: the shared L{INetlink} provider (also L{INetlinkWriter}
        when gatewayd may configure interfaces).
    @ivar reactor: the reactor (at least L{IReactorTime}).
    @ivar stateDir: the daemon's state directory (a DHCP link keeps its
        lease there).
    @ivar onStop: C{[gateway] on_stop}: C{"keep"} leaves what the link
        configured in the kernel when the daemon stops (so a restart does
        not cut the network), C{"clean"} removes exactly what it added.
    @ivar table: the WAN's own routing table, or L{None} to let the link
        derive one from the WAN's name (L{wanTable}).
    @ivar lanInterfaces: the LAN interfaces (C{[lan] interfaces}): a DHCP
        link refuses an address inside their prefixes.
    """

    wanName: str
    interface: str
    settings: object
    netlink: Any
    reactor: "IReactorTime"
    stateDir: "FilePath[str]"
    onStop: str = ON_STOP_KEEP
    table: int | None = None
    lanInterfaces: tuple[str, ...] = ()

    @property
    def routingTable(self) -> int:
        """
        @return: L{table}, or the one L{wanTable} derives from the name.
        """
        return self.table if self.table is not None else wanTable(self.wanName)


def wanTable(wanName: str) -> int:
    """
    @return: a routing table id for a WAN, derived from its name: stable
        across restarts, from 1000 to 9999 (clear of main, local, default
        and the small ids other tools use).
    """
    from zlib import crc32

    return 1000 + crc32(wanName.encode("utf-8")) % 9000


class ILinkType(Interface):
    """
    A kind of WAN link (C{link.type} in the configuration), found as a
    Twisted plugin.
    """

    name = Attribute("Value of C{link.type} in the configuration, e.g. C{'dhcp'}.")
    description = Attribute("One line for humans.")

    def checkConfig(config: Mapping[str, object]) -> object:
        """
        Pure: check the keys of the C{link} table (without C{type}).

        @return: this link type's parsed settings (hashable, immutable).
        @raise gatewayd.errors.ConfigError: naming the key (relative to
            C{link}) and what was expected.
        """

    def buildLink(context: LinkContext) -> "ILink":
        """
        @return: an unstarted link.
        """

    # Optional (not checked by verifyObject, so that older plugins keep
    # working): requiredCapabilities(settings) -> tuple of capability names
    # such as "CAP_NET_ADMIN" and "CAP_NET_RAW" that the link needs; the
    # daemon refuses to start without them, naming the WAN (see
    # gatewayd.link.capabilities).


class ILink(IService):
    """
    One WAN link: it watches (and, depending on its type, configures) one
    interface and reports its L{LinkStatus}.

    What a link must report, through C{status} and its observers (once per
    change, synchronously from the event that caused it):

      - C{carrier}: the interface is up with carrier; a change reported
        within milliseconds of the kernel's event (watch
        L{INetlink.watchInterface}), so failover is fast;
      - C{address} and C{gateway}: only while the link is usable for
        traffic (configured in the kernel, lease valid and confirmed);
        L{None} otherwise. A new address is a new status: the connection
        publishes ExternalIPAddress from it;
      - C{dns} and C{lease} (L{LeaseTimes}) when it has them;
      - C{error}: why it has carrier but no address, as a
        LastConnectionError value (see L{LinkStatus}).

    What a link may be asked:

      - C{startService()}: start watching (no configuration yet); the
        service tree starts the link before its connection;
      - C{connect()}: the connection state machine wants connectivity
        (always-on start, RequestConnection): configure the interface,
        start the lease client, and keep it up (renewals, carrier return)
        until C{disconnect()};
      - C{disconnect()}: RequestTermination, ForceTermination, a disconnect
        timer, EnabledForInternet = 0: give connectivity up (release the
        lease, remove what the link added);
      - C{stopService()}: the daemon stops; honour C{LinkContext.onStop}
        (C{"keep"}: leave the kernel as it is, keep the lease;
        C{"clean"}: remove exactly what the link added);
      - C{renew()} (optional, L{IRenewableLink}): refresh the lease now.

    Optional attribute C{configuresKernel}: C{True} for links that put the
    WAN's address and routes into the kernel (the main table's default
    route may then point at them).

    A link never talks to the NAT backend, the router or UPnP: it reports,
    and the WAN service passes it on. Links that configure the kernel
    write through the context's L{INetlinkWriter} (one shared rtnetlink
    socket) and say which capabilities they need (L{ILinkType}
    C{requiredCapabilities}, optional).
    """

    interface = Attribute("The interface name.")
    status = Attribute("The current L{LinkStatus}.")
    controllable = Attribute(
        "C{True} if C{connect}/C{disconnect} change anything, C{False} for links "
        "that another tool configures."
    )

    def addObserver(observer: Callable[[LinkStatus], None]) -> Callable[[], None]:
        """
        Call C{observer} with the new status after every change.

        @return: a callable that removes the observer.
        """

    def connect() -> Any:
        """
        Bring connectivity up.

        @return: a L{Deferred} that fires when the request was taken (not
            necessarily when the link is usable; watch the status for that).
            A failure means the link cannot work at all (the connection
            reports C{ERROR_IP_CONFIGURATION} and does not retry).
        """

    def disconnect() -> Any:
        """
        Bring connectivity down.

        @return: a L{Deferred} that fires when done.
        """


class IRenewableLink(ILink):
    """
    A link whose address is leased, and can be asked to refresh the lease.
    """

    def renew() -> Any:
        """
        Ask the server to extend the lease now (DHCP: a REQUEST in
        RENEWING state); the outcome is reported through the status.

        @return: a L{Deferred} that fires when the request was sent.
        """


@dataclass(frozen=True)
class NATMapping:
    """
    One port forwarding as the kernel needs it.

    @ivar wan: the WAN's name.
    @ivar interface: the WAN's interface (DNAT matches it).
    @ivar protocol: C{"TCP"} or C{"UDP"}.
    @ivar externalPort: the port on the WAN side.
    @ivar remoteHost: the only source allowed, or C{""} for any.
    @ivar internalClient: the LAN host.
    @ivar internalPort: the port on the LAN host.
    @ivar enabled: whether it forwards.
    """

    wan: str
    interface: str
    protocol: str
    externalPort: int
    remoteHost: str
    internalClient: str
    internalPort: int
    enabled: bool = True

    @property
    def key(self) -> tuple[str, str, int, str]:
        """
        The identity of a mapping in the kernel: C{(wan, protocol,
        externalPort, remoteHost)}.
        """
        return (self.wan, self.protocol, self.externalPort, self.remoteHost)


class INATBackend(IService):
    """
    Programs port forwardings into the kernel (or pretends to).
    """

    def apply(add: "list[NATMapping]", remove: "list[NATMapping]") -> Any:
        """
        Remove C{remove} and add C{add}, all or nothing.

        @return: a L{Deferred} that fires with L{None} once the kernel has
            the change, or fails (and then nothing changed).
        """

    def mappings(wan: str) -> "list[NATMapping]":
        """
        @return: the mappings installed for C{wan}, ordered by key.
        """

    def forgetOutbound(wan: str, address: IPv4Address) -> Any:
        """
        Forget the connections masqueraded to C{address} (the WAN C{wan}
        failed): their next packet starts a new connection through the
        WAN that carries the default route now, instead of hanging on the
        failed one. Connections that came in by the WAN (port mappings)
        are kept.

        @return: a L{Deferred} that fires with L{None} when done; it does
            not fail (problems are logged).
        """

    def setWANAddress(wan: str, address: IPv4Address | None) -> None:
        """
        The WAN C{wan} has the address C{address} now (L{None}: none). With
        C{[gateway] hairpin = true} LAN hosts reach its mappings through
        that address; the backend follows changes by itself, in order with
        the mapping changes.
        """


class IStateStore(Interface):
    """
    Small named documents that survive a restart, written atomically.
    """

    def load(name: str) -> bytes | None:
        """
        @return: the document's bytes, or L{None} if it does not exist.
        """

    def save(name: str, data: bytes) -> Any:
        """
        Replace the document atomically.

        @return: a L{Deferred} that fires once the data is durable.
        """
