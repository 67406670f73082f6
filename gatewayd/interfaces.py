# -*- test-case-name: tests.unit.test_plugins -*-
"""
The contracts between gatewayd's parts.

Parents call children through these interfaces, and tests swap any of them
for a fake that C{verifyObject} accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
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
class LinkStatus:
    """
    The state of a WAN link as a connection needs it.

    @ivar carrier: the physical link is up.
    @ivar address: the WAN's IPv4 address and prefix, or L{None} while it has
        none.
    @ivar gateway: the next hop for the WAN's default route, if known.
    """

    carrier: bool = False
    address: IPv4Interface | None = None
    gateway: IPv4Address | None = None

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


@dataclass(frozen=True)
class LinkContext:
    """
    What a link needs to be built.

    @ivar wanName: the WAN's configured name.
    @ivar interface: the WAN's interface name.
    @ivar settings: what the link type's C{checkConfig} returned.
    @ivar netlink: the shared L{INetlink} provider.
    @ivar reactor: the reactor (at least L{IReactorTime}).
    @ivar stateDir: the daemon's state directory.
    """

    wanName: str
    interface: str
    settings: object
    netlink: Any
    reactor: "IReactorTime"
    stateDir: "FilePath[str]"


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


class ILink(IService):
    """
    One WAN link: it watches (and, depending on its type, configures) one
    interface and reports its L{LinkStatus}.

    Starting the service starts watching; C{connect} and C{disconnect} are
    the connection state machine's requests to bring connectivity up or
    down (acquire or release a lease, add or remove a static address).
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
        """

    def disconnect() -> Any:
        """
        Bring connectivity down.

        @return: a L{Deferred} that fires when done.
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
