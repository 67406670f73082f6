# -*- test-case-name: tests.unit.test_links -*-
"""
The C{simulated} link type: a WAN that exists only inside gatewayd, for demos
and tests. It never touches the kernel.

Configuration keys under C{link}:
  - C{address} (required): the WAN address with prefix, e.g.
    C{"203.0.113.2/24"};
  - C{gateway} (optional): the next hop, a host of C{address}'s network
    other than C{address} itself;
  - C{carrier} (optional, default C{true}): whether the cable is plugged in
    at start.

Behaviour: the link has carrier (if configured) but no address until
C{connect()}, which is what the connection state machine calls when it
starts; C{disconnect()} takes the address away again. Carrier is switched at
run time with C{setCarrier}, e.g. from the manhole:
C{wans['isp1'].link.setCarrier(False)}.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from typing import Mapping

from twisted.internet.defer import Deferred, succeed
from twisted.plugin import IPlugin
from zope.interface import implementer

from gatewayd.errors import ConfigError
from gatewayd.interfaces import ILink, ILinkType, LinkContext, LinkStatus
from gatewayd.link.base import (
    ObservableLink,
    checkKeys,
    describe,
    parseAddress,
    parseInterfaceAddress,
)


@dataclass(frozen=True)
class SimulatedSettings:
    """
    @ivar address: the address the link has while connected.
    @ivar gateway: the next hop reported while connected, or L{None}.
    @ivar carrier: whether the link has carrier when built.
    """

    address: IPv4Interface
    gateway: IPv4Address | None = None
    carrier: bool = True


@implementer(ILink)
class SimulatedLink(ObservableLink):
    """
    A link whose carrier and address are whatever it is told.

    Status: C{carrier} as configured or last set by L{setCarrier};
    C{address} and C{gateway} as configured while connected, L{None} while
    disconnected (the initial state).
    """

    #: It has no interface to send probes from: its health follows it.
    probed = False
    controllable = True

    def __init__(self, interface: str, settings: SimulatedSettings) -> None:
        super().__init__(interface, LinkStatus(carrier=settings.carrier))
        self._settings = settings

    def setCarrier(self, up: bool) -> None:
        """
        Plug (C{True}) or unplug (C{False}) the simulated cable. The address,
        if any, stays: as on a real interface, losing carrier does not
        remove it.
        """
        self._setStatus(
            LinkStatus(carrier=bool(up), address=self.status.address, gateway=self.status.gateway)
        )

    def connect(self) -> Deferred[None]:
        """
        Give the link its configured address and gateway, at once.
        """
        self._setStatus(
            LinkStatus(
                carrier=self.status.carrier,
                address=self._settings.address,
                gateway=self._settings.gateway,
            )
        )
        return succeed(None)

    def disconnect(self) -> Deferred[None]:
        """
        Take the address and gateway away, at once.
        """
        self._setStatus(LinkStatus(carrier=self.status.carrier))
        return succeed(None)

    def statistics(self) -> Deferred[Mapping[str, int]]:
        """
        The link's traffic counters: a simulated link carries no traffic, so
        they stay at zero (the interface it names need not exist).
        """
        return succeed({"rx_bytes": 0, "tx_bytes": 0, "rx_packets": 0, "tx_packets": 0})


@implementer(IPlugin, ILinkType)
class SimulatedLinkType:
    """
    The C{simulated} link type.
    """

    name = "simulated"
    description = "A pretend WAN for demos and tests; never touches the kernel."

    def checkConfig(self, config: Mapping[str, object]) -> SimulatedSettings:
        """
        Check the C{link} table: C{address} (required), C{gateway}, C{carrier}.

        @raise ConfigError: naming the key relative to the C{link} table.
        """
        checkKeys(config, {"address", "gateway", "carrier"})
        if "address" not in config:
            raise ConfigError(
                "address", 'missing; expected an IPv4 address with prefix, e.g. "203.0.113.2/24"'
            )
        address = parseInterfaceAddress("address", config["address"])
        gateway = None
        if "gateway" in config:
            gateway = parseAddress("gateway", config["gateway"])
            hosts = address.network
            if (
                gateway not in hosts
                or gateway == address.ip
                or (
                    hosts.prefixlen <= 30
                    and gateway in (hosts.network_address, hosts.broadcast_address)
                )
            ):
                raise ConfigError(
                    "gateway",
                    f'expected a host of {hosts} other than {address.ip}; got {describe(str(gateway))}',
                )
        carrier = config.get("carrier", True)
        if not isinstance(carrier, bool):
            raise ConfigError("carrier", f"expected true or false; got {describe(carrier)}")
        return SimulatedSettings(address=address, gateway=gateway, carrier=carrier)

    def buildLink(self, context: LinkContext) -> SimulatedLink:
        """
        @return: an unstarted L{SimulatedLink} named after C{context.interface}.
        """
        settings = context.settings
        if not isinstance(settings, SimulatedSettings):
            raise TypeError(f"expected SimulatedSettings, got {settings!r}")
        return SimulatedLink(context.interface, settings)
