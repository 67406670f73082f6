# -*- test-case-name: tests.unit.test_dhcp -*-
"""
The DHCP lease logic gatewayd owns, apart from pyroute2's client: which
messages and offers to accept, what a lease says, and when it runs out on
the reactor's clock.

Pure except for L{decodePacket}, which uses pyroute2's decoder (imported
when called). pyroute2's client runs its T1/T2/expiry timers on asyncio
time; L{LeaseClock} keeps gatewayd's own expiry on an L{IReactorTime}, so
that an address is removed when its lease runs out even while the client
is stopped (carrier lost), and so that tests drive it with a C{Clock}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any, Callable, Iterable, Mapping

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from gatewayd.interfaces import LeaseTimes

#: DHCP message types (RFC 2132 option 53).
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
#: BOOTP op codes.
BOOTREPLY = 2
#: A lease time meaning "forever" (0xffffffff, as pyroute2 decodes it).
INFINITE = (-1, 0xFFFFFFFF)

_LOOPBACK = IPv4Network("127.0.0.0/8")
_THIS = IPv4Network("0.0.0.0/8")
_LINK_LOCAL = IPv4Network("169.254.0.0/16")


class MalformedDHCP(ValueError):
    """
    A packet on the DHCP client port is not a DHCP reply we can use.
    """


def _ip(value: object, what: str) -> IPv4Address:
    try:
        return IPv4Address(str(value))
    except ValueError:
        raise MalformedDHCP(f"{what} is not an IPv4 address: {value!r}") from None


def _seconds(options: Mapping[str, Any], name: str) -> float | None:
    """
    @return: a time option in seconds, L{None} if absent or infinite.
    @raise MalformedDHCP: if it is not a non-negative integer.
    """
    value = options.get(name)
    if value is None or value in INFINITE:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedDHCP(f"option {name} is not a number of seconds: {value!r}")
    return float(value)


def checkMessage(message: Mapping[str, Any]) -> int:
    """
    Check the fields a DHCP client relies on.

    @param message: a decoded DHCP message (pyroute2's C{dhcp4msg} or a
        mapping of the same shape).
    @return: its message type.
    @raise MalformedDHCP: if it is not a BOOTREPLY with a message type, an
        IPv4 C{yiaddr} and a mapping of options.
    """
    try:
        options = message["options"]
        op = message.get("op")
        kind = options["message_type"]
        yiaddr = message["yiaddr"]
    except (KeyError, TypeError, AttributeError):
        raise MalformedDHCP("no message type, yiaddr or options") from None
    if op != BOOTREPLY:
        raise MalformedDHCP(f"not a BOOTREPLY (op {op!r})")
    if isinstance(kind, bool) or not isinstance(kind, int) or not DISCOVER <= int(kind) <= INFORM:
        raise MalformedDHCP(f"unknown message type {kind!r}")
    _ip(yiaddr, "yiaddr")
    return int(kind)


def decodePacket(raw: bytes) -> Any:
    """
    Decode an Ethernet frame carrying a DHCP reply, as pyroute2's client
    socket receives it.

    @return: pyroute2's C{ReceivedDHCPMessage}.
    @raise MalformedDHCP: for anything that does not decode (truncated,
        garbage, bad options) or fails L{checkMessage}.
    """
    from pyroute2.dhcp.dhcp4socket import AsyncDHCP4Socket

    try:
        message = AsyncDHCP4Socket._decode_msg(raw)
    except Exception as e:  # pyroute2 raises struct.error, KeyError, ValueError...
        raise MalformedDHCP(f"undecodable ({e.__class__.__name__}: {e})") from None
    checkMessage(message.dhcp)
    return message


@dataclass(frozen=True)
class Lease:
    """
    What a DHCPACK granted, in gatewayd's terms.

    @ivar address: the address with the subnet's prefix.
    @ivar gateway: the first router, if any.
    @ivar dns: the name servers.
    @ivar server: the server identifier.
    @ivar obtained: when it was granted, in the reactor's seconds.
    @ivar leaseTime: its duration in seconds, L{None} if infinite.
    @ivar renewalTime: T1 in seconds from C{obtained} (the server's, or half
        the lease).
    @ivar rebindingTime: T2 (the server's, or 7/8 of the lease).
    """

    address: IPv4Interface
    gateway: IPv4Address | None
    dns: tuple[IPv4Address, ...]
    server: IPv4Address | None
    obtained: float
    leaseTime: float | None
    renewalTime: float | None
    rebindingTime: float | None

    @property
    def expiresAt(self) -> float | None:
        return None if self.leaseTime is None else self.obtained + self.leaseTime

    def times(self) -> LeaseTimes:
        """
        @return: the lease's times as a link reports them.
        """

        def at(seconds: float | None) -> float | None:
            return None if seconds is None else self.obtained + seconds

        return LeaseTimes(
            obtained=self.obtained,
            renewAt=at(self.renewalTime),
            rebindAt=at(self.rebindingTime),
            expiresAt=self.expiresAt,
        )

    def expired(self, now: float) -> bool:
        expires = self.expiresAt
        return expires is not None and expires <= now


def leaseFromAck(ack: Mapping[str, Any], obtained: float) -> Lease:
    """
    @param ack: a decoded DHCPACK (or the C{ack} a lease file keeps).
    @param obtained: when it arrived, in the reactor's seconds.
    @return: the lease it grants.
    @raise MalformedDHCP: if it grants no usable lease (see L{refuseOffer};
        a lease time is required).
    """
    checkMessage(ack)
    reason = refuseOffer(ack, ())
    if reason is not None:
        raise MalformedDHCP(reason)
    options = ack["options"]
    if "lease_time" not in options:
        raise MalformedDHCP("no lease time")
    leaseTime = _seconds(options, "lease_time")
    renewal = _seconds(options, "renewal_time")
    rebinding = _seconds(options, "rebinding_time")
    if leaseTime is not None:
        renewal = renewal if renewal is not None and renewal <= leaseTime else leaseTime / 2
        rebinding = (
            rebinding
            if rebinding is not None and renewal <= rebinding <= leaseTime
            else max(renewal, leaseTime * 7 / 8)
        )
    address = _offeredAddress(ack)
    routers = options.get("router") or []
    try:
        dns = tuple(_ip(s, "name server") for s in options.get("name_server") or [])
    except MalformedDHCP:
        dns = ()
    server = options.get("server_id")
    return Lease(
        address=address,
        gateway=_ip(routers[0], "router") if routers else None,
        dns=dns,
        server=_ip(server, "server identifier") if server else None,
        obtained=obtained,
        leaseTime=leaseTime,
        renewalTime=renewal,
        rebindingTime=rebinding,
    )


def _offeredAddress(message: Mapping[str, Any]) -> IPv4Interface:
    mask = message["options"].get("subnet_mask")
    if mask is None:
        raise MalformedDHCP("no subnet mask")
    try:
        return IPv4Interface(f"{message['yiaddr']}/{mask}")
    except ValueError:
        raise MalformedDHCP(f"bad subnet mask {mask!r}") from None


def refuseOffer(message: Mapping[str, Any], lanNetworks: Iterable[IPv4Network]) -> str | None:
    """
    Decide whether an OFFER (or ACK) carries an address gatewayd may put on
    a WAN interface.

    @param lanNetworks: the LAN's prefixes; an address inside one would
        break the LAN.
    @return: why it is refused, for a log line; L{None} if acceptable.
    """
    try:
        checkMessage(message)
        address = _offeredAddress(message)
    except MalformedDHCP as e:
        return str(e)
    ip, network = address.ip, address.network
    if ip.is_unspecified or ip in _THIS:
        return f"address {ip} is not a host address"
    if ip.is_multicast or ip.is_reserved:
        return f"address {ip} is multicast or reserved"
    if ip == IPv4Address("255.255.255.255") or (
        network.prefixlen <= 30 and ip in (network.network_address, network.broadcast_address)
    ):
        return f"address {ip} is the network or broadcast address of {network}"
    if ip in _LOOPBACK:
        return f"address {ip} is a loopback address"
    if ip in _LINK_LOCAL:
        return f"address {ip} is link-local"
    for lan in lanNetworks:
        if network.overlaps(lan):
            return f"address {address} overlaps the LAN's {lan}"
    routers = message["options"].get("router") or []
    if routers:
        try:
            gateway = IPv4Address(str(routers[0]))
        except ValueError:
            return f"router {routers[0]!r} is not an IPv4 address"
        if gateway not in network or gateway == ip or (
            network.prefixlen <= 30 and gateway in (network.network_address, network.broadcast_address)
        ):
            return f"router {gateway} is not a host of {network} other than {ip}"
    return None


def loadLeaseFile(data: bytes, now: float) -> Lease | None:
    """
    Read a lease file as pyroute2's C{JSONFileLease} writes it (the ACK and
    when it was obtained, in wall-clock seconds).

    @param now: the reactor's seconds now (wall clock too, in the daemon).
    @return: the lease, or L{None} if the file says nothing usable.
    """
    try:
        document = json.loads(data)
        obtained = float(document["obtained"])
        return leaseFromAck(document["ack"], min(obtained, now))
    except (ValueError, KeyError, TypeError):
        return None


class LeaseClock:
    """
    Runs out leases on an L{IReactorTime}: L{hold} a lease, and C{expired}
    is called with it when it ends, unless another lease (a renewal) or
    L{release} came first.
    """

    def __init__(self, clock: IReactorTime, expired: Callable[[Lease], None]) -> None:
        self._clock = clock
        self._expired = expired
        self._call: IDelayedCall | None = None
        self.lease: Lease | None = None

    def hold(self, lease: Lease) -> None:
        """
        Make C{lease} the current lease and arm its expiry (at once if it
        has already ended).
        """
        self.release()
        self.lease = lease
        expires = lease.expiresAt
        if expires is not None:
            self._call = self._clock.callLater(
                max(0.0, expires - self._clock.seconds()), self._expire
            )

    def release(self) -> None:
        """
        Forget the current lease, without calling C{expired}.
        """
        self.lease = None
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def _expire(self) -> None:
        lease, self._call = self.lease, None
        self.lease = None
        if lease is not None:
            self._expired(lease)
