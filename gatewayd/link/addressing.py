# -*- test-case-name: tests.unit.test_static -*-
"""
What a WAN link that configures its interface puts into the kernel: the
address, the WAN's own routing table (on-link route and default route) and
the rule that sends traffic from the WAN's address to that table.

Links that configure the kernel (C{static}, C{dhcp}) describe it with a
L{WANAddressing} and apply or remove it through an L{INetlinkWriter}; every
step is idempotent, so applying twice, or removing what is gone, is
harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from twisted.internet.defer import Deferred

#: Priority of the "from <WAN address> lookup <WAN table>" rules: after the
#: local table (0), well before main (32766).
RULE_PRIORITY = 10000

DEFAULT = IPv4Network("0.0.0.0/0")


@dataclass(frozen=True)
class WANAddressing:
    """
    One WAN's address and routes.

    @ivar interface: the WAN interface.
    @ivar address: its address and prefix.
    @ivar gateway: the next hop of its default route, or L{None} (then the
        WAN's table has only the on-link route).
    @ivar table: the WAN's routing table.
    """

    interface: str
    address: IPv4Interface
    gateway: IPv4Address | None
    table: int

    @property
    def source(self) -> IPv4Network:
        return IPv4Network(f"{self.address.ip}/32")

    def apply(self, netlink: Any) -> Deferred[None]:
        """
        Add the address, then the WAN table's routes, then the rule.
        """
        return Deferred.fromCoroutine(self._apply(netlink))

    async def _apply(self, netlink: Any) -> None:
        await netlink.addAddress(self.interface, self.address)
        await netlink.addRoute(
            self.interface, self.address.network, None, self.table, self.address.ip
        )
        if self.gateway is not None:
            await netlink.addRoute(self.interface, DEFAULT, self.gateway, self.table, self.address.ip)
        await netlink.addRule(self.source, self.table, RULE_PRIORITY)

    def applyRoutes(self, netlink: Any) -> Deferred[None]:
        """
        Put the WAN table's routes back (the kernel drops every route
        through an interface that is set down).
        """
        return Deferred.fromCoroutine(self._applyRoutes(netlink))

    async def _applyRoutes(self, netlink: Any) -> None:
        await netlink.addRoute(
            self.interface, self.address.network, None, self.table, self.address.ip
        )
        if self.gateway is not None:
            await netlink.addRoute(self.interface, DEFAULT, self.gateway, self.table, self.address.ip)

    def remove(self, netlink: Any, address: bool = True) -> Deferred[None]:
        """
        Remove the rule, the routes and (unless C{address} is false) the
        address, in that order.
        """
        return Deferred.fromCoroutine(self._remove(netlink, address))

    async def _remove(self, netlink: Any, address: bool) -> None:
        await netlink.removeRule(self.source, self.table, RULE_PRIORITY)
        if self.gateway is not None:
            await netlink.removeRoute(self.interface, DEFAULT, self.gateway, self.table)
        await netlink.removeRoute(self.interface, self.address.network, None, self.table)
        if address:
            await netlink.removeAddress(self.interface, self.address)
