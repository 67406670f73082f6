# -*- test-case-name: tests.unit.test_static -*-
"""
The main table's default route, pointed at the most preferred connected
WAN: what LAN traffic follows until the multi-WAN router exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any, Callable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from gatewayd.interfaces import ON_STOP_CLEAN
from gatewayd.link.addressing import DEFAULT


@dataclass(frozen=True)
class Candidate:
    """
    One WAN as the default route sees it.

    @ivar interface: its interface.
    @ivar gateway: its next hop, if known.
    @ivar connected: its connection is C{Connected} (or PendingDisconnect).
    """

    interface: str
    gateway: IPv4Address | None
    connected: bool


class DefaultRoute(Service):
    """
    Keeps C{default via <gateway> dev <interface>} in the main table for
    the first connected WAN with a gateway, in preference order; removes
    the route it installed when no WAN qualifies, and on stop with
    C{on_stop = "clean"}.

    Call L{changed} whenever a connection's status or a link's gateway
    changes; it is cheap when nothing did.
    """

    log = Logger()

    def __init__(
        self, netlink: Any, candidates: Callable[[], Sequence[Candidate]], onStop: str = "keep"
    ) -> None:
        self._netlink = netlink
        self._candidates = candidates
        self._onStop = onStop
        self.current: tuple[str, IPv4Address] | None = None
        self._ops: Deferred[None] = succeed(None)

    def startService(self) -> None:
        super().startService()
        self.changed()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._onStop == ON_STOP_CLEAN and self.current is not None:
            self._set(None)
        return self._ops

    def changed(self, *ignored: object) -> None:
        """
        Re-choose the default route.
        """
        if not self.running:
            return
        best = next(
            ((c.interface, c.gateway) for c in self._candidates() if c.connected and c.gateway),
            None,
        )
        if best != self.current:
            self._set(best)  # type: ignore[arg-type]

    def _set(self, best: tuple[str, IPv4Address] | None) -> None:
        old, self.current = self.current, best
        netlink = self._netlink

        def change(_: object) -> Deferred[None]:
            if best is not None:
                self.log.info(
                    "Default route: via {gateway} dev {interface}",
                    gateway=str(best[1]),
                    interface=best[0],
                )
                return netlink.addRoute(best[0], DEFAULT, best[1])
            assert old is not None
            self.log.warn("Default route removed: no WAN is connected")
            return netlink.removeRoute(old[0], DEFAULT, old[1])

        self._ops.addCallback(change).addErrback(
            lambda f: self.log.failure("Changing the default route failed", f)
        )
