# -*- test-case-name: tests.unit.test_links -*-
"""
The C{unmanaged} link type: another tool (NetworkManager, systemd-networkd,
a PPP daemon) configures the interface; gatewayd only watches it.

Configuration keys under C{link}: C{gateway} (optional IPv4 address of the
next hop; the link reports it while the interface has an address).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any, Callable, Mapping

from twisted.internet.defer import Deferred, succeed
from twisted.plugin import IPlugin
from zope.interface import implementer

from gatewayd.interfaces import ILink, ILinkType, InterfaceState, LinkContext, LinkStatus
from gatewayd.link.base import ObservableLink, checkKeys, parseAddress


@dataclass(frozen=True)
class UnmanagedSettings:
    """
    @ivar gateway: the next hop to report, or L{None} if unknown.
    """

    gateway: IPv4Address | None = None


@implementer(ILink)
class UnmanagedLink(ObservableLink):
    """
    A link that follows what netlink reports about its interface and never
    changes it.

    Its status: C{carrier} is true while the interface is up and has carrier
    (C{IFF_UP} and C{IFF_LOWER_UP}); C{address} is the interface's first
    IPv4 address; C{gateway} is the configured gateway while there is an
    address, else L{None}. A missing interface has neither carrier nor
    address.
    """

    controllable = False

    def __init__(self, interface: str, netlink: Any, settings: UnmanagedSettings) -> None:
        super().__init__(interface)
        self._netlink = netlink
        self._settings = settings
        self._unwatch: Callable[[], None] | None = None

    def startService(self) -> None:
        super().startService()
        self._unwatch = self._netlink.watchInterface(self.interface, self._interfaceChanged)

    def stopService(self) -> None:
        super().stopService()
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None

    def connect(self) -> Deferred[None]:
        """
        Nothing to do: another tool brings the interface up.
        """
        return succeed(None)

    def disconnect(self) -> Deferred[None]:
        """
        Nothing to do: another tool brings the interface down.
        """
        return succeed(None)

    def _interfaceChanged(self, state: InterfaceState | None) -> None:
        if state is None:
            self._setStatus(LinkStatus())
            return
        address = state.addresses[0] if state.addresses else None
        self._setStatus(
            LinkStatus(
                carrier=state.up and state.carrier,
                address=address,
                gateway=self._settings.gateway if address is not None else None,
            )
        )


@implementer(IPlugin, ILinkType)
class UnmanagedLinkType:
    """
    The C{unmanaged} link type.
    """

    name = "unmanaged"
    description = "An interface configured by another tool; gatewayd only watches it."

    def checkConfig(self, config: Mapping[str, object]) -> UnmanagedSettings:
        """
        Check the C{link} table: only C{gateway} (optional IPv4 address).

        @raise ConfigError: naming the key relative to the C{link} table.
        """
        checkKeys(config, {"gateway"})
        gateway = config.get("gateway")
        return UnmanagedSettings(
            gateway=None if gateway is None else parseAddress("gateway", gateway)
        )

    def buildLink(self, context: LinkContext) -> UnmanagedLink:
        """
        @return: an unstarted L{UnmanagedLink} watching C{context.interface}
            through C{context.netlink}.
        """
        settings = context.settings
        if not isinstance(settings, UnmanagedSettings):
            raise TypeError(f"expected UnmanagedSettings, got {settings!r}")
        return UnmanagedLink(context.interface, context.netlink, settings)
