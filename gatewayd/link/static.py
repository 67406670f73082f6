# -*- test-case-name: tests.unit.test_static -*-
"""
The C{static} link type: an address and gateway from the configuration.

Configuration keys under C{link}:
  - C{address} (required): the WAN address with prefix, e.g.
    C{"203.0.113.2/24"};
  - C{gateway} (required): the next hop, a host of C{address}'s network;
  - C{mtu} (optional): the interface's MTU, 576 to 9216;
  - C{dns} (optional): name servers to report, e.g. C{["203.0.113.53"]}.

Behaviour: C{connect()} (the connection starting, or RequestConnection)
sets the interface up, sets the MTU if configured, adds the address, the
WAN's routing table (on-link route, default route through the gateway) and
the rule that sends traffic from the address to that table. The link is
usable (so the connection C{Connected}) while the interface has carrier and
the address. Carrier loss keeps the configuration; when carrier returns the
routes are put back (the kernel drops them when an interface goes down).
C{disconnect()} removes the rule, routes and address. When the daemon stops,
C{on_stop = "keep"} leaves everything in place; C{"clean"} removes the rule
and routes, and the address, MTU and up state as they were before the link
changed them.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from typing import Any, Callable, Mapping

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from gatewayd.errors import ConfigError
from gatewayd.interfaces import (
    ON_STOP_CLEAN,
    ILink,
    ILinkType,
    InterfaceState,
    LinkContext,
    LinkStatus,
)
from gatewayd.link.addressing import WANAddressing
from gatewayd.link.base import (
    ObservableLink,
    checkKeys,
    describe,
    parseAddress,
    parseInterfaceAddress,
)

ERROR_IP_CONFIGURATION = "ERROR_IP_CONFIGURATION"


@dataclass(frozen=True)
class StaticSettings:
    """
    @ivar address: the WAN address.
    @ivar gateway: the next hop.
    @ivar mtu: the MTU to set, or L{None} to leave it.
    @ivar dns: name servers to report.
    """

    address: IPv4Interface
    gateway: IPv4Address
    mtu: int | None = None
    dns: tuple[IPv4Address, ...] = ()


@dataclass(frozen=True)
class _Before:
    """
    What the interface was like before the link changed it.
    """

    up: bool
    mtu: int
    hadAddress: bool


def checkGateway(address: IPv4Interface, gateway: IPv4Address) -> None:
    """
    @raise ConfigError: at C{gateway} unless it is a host of C{address}'s
        network other than C{address} itself.
    """
    hosts = address.network
    if (
        gateway not in hosts
        or gateway == address.ip
        or (hosts.prefixlen <= 30 and gateway in (hosts.network_address, hosts.broadcast_address))
    ):
        raise ConfigError(
            "gateway",
            f"expected a host of {hosts} other than {address.ip}; got {describe(str(gateway))}",
        )


@implementer(ILink)
class StaticLink(ObservableLink):
    """
    A WAN with a configured address; see the module docstring.
    """

    controllable = True
    #: It puts addresses and routes into the kernel (the default route may
    #: point at it).
    configuresKernel = True
    log = Logger()

    def __init__(
        self, interface: str, netlink: Any, settings: StaticSettings, table: int, onStop: str
    ) -> None:
        super().__init__(interface)
        self._netlink = netlink
        self._settings = settings
        self._onStop = onStop
        self._addressing = WANAddressing(interface, settings.address, settings.gateway, table)
        self._state: InterfaceState | None = None
        self._unwatch: Callable[[], None] | None = None
        self._wanted = False
        self._configured = False
        self._before: _Before | None = None
        self._error: str | None = None

    # Service.

    def startService(self) -> None:
        super().startService()
        self._unwatch = self._netlink.watchInterface(self.interface, self._interfaceChanged)

    def stopService(self) -> Deferred[None]:
        """
        Stop watching; with C{on_stop = "clean"}, undo what the link did.
        """
        super().stopService()
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        wanted, self._wanted = self._wanted, False
        if self._onStop != ON_STOP_CLEAN or not (wanted or self._configured):
            return succeed(None)
        return self._undo(restore=True).addErrback(self._logFailure, "Cleaning up")

    # ILink.

    def connect(self) -> Deferred[None]:
        """
        Configure the interface; see the module docstring.

        @return: a L{Deferred} that fires once the kernel has the
            configuration, or fails if it refused (the reason is logged).
        """
        self._wanted = True
        self._error = None
        d = Deferred.fromCoroutine(self._configure())

        def failed(failure: Failure) -> Failure:
            self._error = ERROR_IP_CONFIGURATION
            self._logFailure(failure, "Configuring")
            self._report()
            return failure

        return d.addErrback(failed)

    def disconnect(self) -> Deferred[None]:
        """
        Remove the rule, routes and address (the interface stays up, so
        that carrier is still seen).
        """
        self._wanted = False
        self._report()
        return self._undo(restore=False)

    # Inside.

    async def _configure(self) -> None:
        await self._netlink.whenReady()
        state = self._netlink.interfaceState(self.interface)
        if state is None:
            raise OSError(f"WAN interface {self.interface} does not exist")
        if self._before is None:
            self._before = _Before(
                up=state.up, mtu=state.mtu, hadAddress=self._settings.address in state.addresses
            )
        if not state.up:
            await self._netlink.setLinkUp(self.interface, True)
        if self._settings.mtu is not None and state.mtu != self._settings.mtu:
            await self._netlink.setMTU(self.interface, self._settings.mtu)
        await self._addressing.apply(self._netlink)
        self._configured = True
        self.log.info(
            "WAN link {interface}: {address} via {gateway}",
            interface=self.interface,
            address=str(self._settings.address),
            gateway=str(self._settings.gateway),
        )
        self._report()

    def _undo(self, restore: bool) -> Deferred[None]:
        before = self._before
        keepAddress = restore and before is not None and before.hadAddress
        self._configured = False

        async def undo() -> None:
            await self._addressing.remove(self._netlink, address=not keepAddress)
            if restore and before is not None:
                state = self._netlink.interfaceState(self.interface)
                if state is not None and self._settings.mtu is not None and state.mtu != before.mtu:
                    await self._netlink.setMTU(self.interface, before.mtu)
                if state is not None and state.up and not before.up:
                    await self._netlink.setLinkUp(self.interface, False)
                self._before = None

        return Deferred.fromCoroutine(undo())

    def _interfaceChanged(self, state: InterfaceState | None) -> None:
        old, self._state = self._state, state
        carrier = state is not None and state.up and state.carrier
        hadCarrier = old is not None and old.up and old.carrier
        if carrier and not hadCarrier and self._wanted and self._configured:
            # Routes through an interface that went down are gone: put them back.
            self._addressing.applyRoutes(self._netlink).addErrback(
                self._logFailure, "Restoring the routes of"
            )
        self._report()

    def _report(self) -> None:
        state = self._state
        carrier = state is not None and state.up and state.carrier
        present = (
            state is not None
            and self._wanted
            and self._configured
            and self._settings.address in state.addresses
        )
        if present:
            self._setStatus(
                LinkStatus(
                    carrier=carrier,
                    address=self._settings.address,
                    gateway=self._settings.gateway,
                    dns=self._settings.dns,
                )
            )
        else:
            self._setStatus(LinkStatus(carrier=carrier, error=self._error if self._wanted else None))

    def _logFailure(self, failure: Failure, what: str) -> None:
        self.log.failure(
            "{what} WAN link {interface} failed", failure, what=what, interface=self.interface
        )


@implementer(IPlugin, ILinkType)
class StaticLinkType:
    """
    The C{static} link type.
    """

    name = "static"
    description = "A fixed address and gateway from the configuration."

    def checkConfig(self, config: Mapping[str, object]) -> StaticSettings:
        """
        Check the C{link} table: C{address} and C{gateway} (required),
        C{mtu}, C{dns}.

        @raise ConfigError: naming the key relative to the C{link} table.
        """
        checkKeys(config, {"address", "gateway", "mtu", "dns"})
        for key, example in (("address", '"203.0.113.2/24"'), ("gateway", '"203.0.113.1"')):
            if key not in config:
                kind = "an IPv4 address with prefix" if key == "address" else "an IPv4 address"
                raise ConfigError(key, f"missing; expected {kind}, e.g. {example}")
        address = parseInterfaceAddress("address", config["address"])
        gateway = parseAddress("gateway", config["gateway"])
        checkGateway(address, gateway)
        mtu = config.get("mtu")
        if mtu is not None and (
            isinstance(mtu, bool) or not isinstance(mtu, int) or not 576 <= mtu <= 9216
        ):
            raise ConfigError("mtu", f"expected an integer from 576 to 9216; got {describe(mtu)}")
        dns = config.get("dns", [])
        if not isinstance(dns, list):
            raise ConfigError("dns", f'expected an array of IPv4 addresses; got {describe(dns)}')
        servers = tuple(parseAddress(f"dns[{i}]", s) for i, s in enumerate(dns))
        return StaticSettings(address=address, gateway=gateway, mtu=mtu, dns=servers)

    def requiredCapabilities(self, settings: object) -> tuple[str, ...]:
        """
        @return: C{CAP_NET_ADMIN}: the link configures its interface.
        """
        return ("CAP_NET_ADMIN",)

    def buildLink(self, context: LinkContext) -> StaticLink:
        """
        @return: an unstarted L{StaticLink} configuring C{context.interface}
            through C{context.netlink}.
        """
        settings = context.settings
        if not isinstance(settings, StaticSettings):
            raise TypeError(f"expected StaticSettings, got {settings!r}")
        return StaticLink(
            context.interface, context.netlink, settings, context.routingTable, context.onStop
        )
