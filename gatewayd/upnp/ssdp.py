# -*- test-case-name: tests.unit.test_ssdp -*-
"""
SSDP: how control points on the LAN find the gateway.

Three layers, each usable alone:

  - pure protocol logic: L{parseSearch} turns an M-SEARCH datagram into a
    L{Search} (or raises L{MalformedSSDP}); L{notifications} and L{answers}
    derive the announcement set and the answers to a search target from the
    device tree; L{alive}, L{byebye} and L{searchResponse} format messages;
  - L{PacketInfoPort}, a UDP port that tells its protocol on which interface
    and to which address each datagram arrived (C{IP_PKTINFO}), and sends
    from a chosen interface and address;
  - L{SSDPService}, which announces the device tree on the LAN addresses
    and answers searches that come from the LAN, and only those.

See UPnP Device Architecture 1.1 section 1 (shared/spec/UDA-essentials.md).
"""

from __future__ import annotations

import os
import random as _random
import re
import socket
import struct
from dataclasses import dataclass
from email.utils import formatdate
from errno import EAGAIN, ECONNREFUSED, EINTR, EWOULDBLOCK
from ipaddress import IPv4Address
from typing import Callable, Iterator, Sequence, TypeVar

from zope.interface import Interface, implementer

from twisted.application.service import Service
from twisted.internet import udp
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from gatewayd import __version__
from gatewayd.interfaces import LANAddress
from gatewayd.upnp.model import UPNP_ORG, Device

#: The SSDP multicast group (IPv4).
SSDP_GROUP = "239.255.255.250"

#: The SSDP port.
SSDP_PORT = 1900

#: The C{HOST} header of multicast messages.
SSDP_HOST = f"{SSDP_GROUP}:{SSDP_PORT}"

#: Path of the root device description, as served by L{gatewayd.upnp.http}.
ROOT_DESCRIPTION = "/rootDesc.xml"

#: The C{SERVER} header: OS/version UPnP/1.1 product/version (UDA-essentials.md 1.3).
SERVER = f"Linux/{os.uname().release} UPnP/1.1 gatewayd/{__version__}"

#: Longest M-SEARCH accepted; real ones are 100 to 300 bytes.
MAX_SEARCH_SIZE = 2048

#: Largest MX honoured; a larger one is treated as this (UDA-essentials.md 1.7).
MAX_MX = 5

#: Most replies waiting for their MX delay, over all searches; beyond it
#: whole searches are dropped, so an M-SEARCH flood cannot grow memory.
MAX_PENDING_REPLIES = 1000

#: Seconds between the two copies of each announcement round.
REPEAT_DELAY = 0.25

#: Longest random delay before the first alive round after start.
INITIAL_DELAY = 0.1

# Linux socket options that Python's socket module does not name.
IP_PKTINFO = 8
IP_MULTICAST_ALL = 49
_PKTINFO = struct.Struct("=i4s4s")  # struct in_pktinfo
_MREQN = struct.Struct("=4s4si")  # struct ip_mreqn


class MalformedSSDP(ValueError):
    """
    A datagram is not an M-SEARCH gatewayd answers; the message says why.
    """


class NotASearch(MalformedSSDP):
    """
    A well-formed SSDP message that is not an M-SEARCH (a NOTIFY or a
    response): ignored without a word.
    """


@dataclass(frozen=True)
class Search:
    """
    A valid M-SEARCH.

    @ivar st: the search target, e.g. C{upnp:rootdevice}.
    @ivar mx: the longest delay (seconds, at most L{MAX_MX}) the searcher
        accepts, or L{None} (allowed for unicast searches only).
    @ivar man: the C{MAN} header, always C{"ssdp:discover"} with the quotes.
    @ivar host: the C{HOST} header, if any.
    @ivar userAgent: the C{USER-AGENT} header, if any.
    """

    st: str
    mx: int | None
    man: str
    host: str | None = None
    userAgent: str | None = None


_START_LINE = "M-SEARCH * HTTP/1.1"
_DISCOVER = '"ssdp:discover"'
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(r"[\t\x20-\x7e]*")
_DIGITS = re.compile(r"[0-9]{1,9}")
# Headers that must not appear twice: two different values are ambiguous.
_SINGLE = frozenset({"host", "man", "mx", "st", "user-agent"})


def parseSearch(datagram: bytes, multicast: bool = True) -> Search:
    """
    Parse an M-SEARCH request.

    Tolerated, because real clients do it: header names in any case, no
    space (or several) around values, LF instead of CRLF, a missing final
    blank line.  Anything after the blank line is ignored.

    @param datagram: the UDP payload.
    @param multicast: whether the datagram was sent to the SSDP group; a
        multicast search must carry C{MX}, a unicast one need not.
    @raise MalformedSSDP: not a valid M-SEARCH (including a C{NOTIFY} or a
        response), with the reason.
    """
    if len(datagram) > MAX_SEARCH_SIZE:
        raise MalformedSSDP(f"{len(datagram)} bytes is too long")
    head = re.split(rb"\r?\n\r?\n", datagram, maxsplit=1)[0]
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedSSDP("not ASCII") from None
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    startLine = lines[0].strip()
    if startLine != _START_LINE:
        if startLine.startswith("NOTIFY "):
            raise NotASearch("a NOTIFY, not a search")
        if startLine.startswith("HTTP/"):
            raise NotASearch("a response, not a search")
        raise MalformedSSDP(f"start line {startLine[:40]!r} is not {_START_LINE!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue  # a stray empty line at the very end
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
            raise MalformedSSDP(f"bad header line {line[:40]!r}")
        name = name.lower()
        if name in _SINGLE and name in headers:
            raise MalformedSSDP(f"{name.upper()} appears twice")
        headers.setdefault(name, value.strip())
    man = headers.get("man")
    if man != _DISCOVER:
        raise MalformedSSDP(f"MAN is {man!r}, not {_DISCOVER}")
    st = headers.get("st", "")
    if not st:
        raise MalformedSSDP("no ST")
    mx: int | None = None
    if "mx" in headers:
        if not _DIGITS.fullmatch(headers["mx"]):
            raise MalformedSSDP(f"MX {headers['mx']!r} is not a non-negative integer")
        mx = min(int(headers["mx"]), MAX_MX)
    elif multicast:
        raise MalformedSSDP("multicast search without MX")
    return Search(st, mx, man, headers.get("host"), headers.get("user-agent"))


def _deviceRows(device: Device, isRoot: bool) -> Iterator[tuple[str, str]]:
    udn = device.udn
    if isRoot:
        yield "upnp:rootdevice", f"{udn}::upnp:rootdevice"
    yield udn, udn
    yield device.urn(), f"{udn}::{device.urn()}"
    for urn in dict.fromkeys(service.type.urn for service in device.services):
        yield urn, f"{udn}::{urn}"


def notifications(root: Device) -> list[tuple[str, str]]:
    """
    The announcement set of a root device (UDA-essentials.md 1.2): for the root three
    messages, two for each embedded device, and one for each service type
    in each device that has it: 3 + 2d + k messages, 4 + 6n for n WANs.

    @return: C{(NT, USN)} pairs, root first, devices in document order.
    """
    rows: list[tuple[str, str]] = []
    for device in root.walk():
        rows.extend(_deviceRows(device, device is root))
    return rows


_URN = re.compile(
    rf"urn:{UPNP_ORG}:(?P<kind>device|service):(?P<name>[A-Za-z0-9_-]{{1,64}})"
    r":(?P<version>[1-9][0-9]{0,8})"
)


def answers(root: Device, st: str) -> list[tuple[str, str]]:
    """
    What to answer to a search for C{st} (UDA-essentials.md 1.7).

    A device or service type is found by any version up to the implemented
    one, and the answer names the version that was searched: an IGD:2 answers
    C{...:InternetGatewayDevice:1} with C{...:InternetGatewayDevice:1}.

    @return: C{(ST, USN)} pairs, one per response; empty for an unknown
        target or a version above the implemented one.
    """
    if st == "ssdp:all":
        return notifications(root)
    if st == "upnp:rootdevice":
        return [(st, f"{root.udn}::{st}")]
    if st.startswith("uuid:"):
        return [(st, st) for device in root.walk() if device.udn == st][:1]
    match = _URN.fullmatch(st)
    if match is None:
        return []
    name, version = match["name"], int(match["version"])
    rows = []
    for device in root.walk():
        if match["kind"] == "device":
            found = device.deviceType == name and device.version >= version
        else:
            found = any(
                s.type.name == name and s.type.version >= version for s in device.services
            )
        if found:
            rows.append((st, f"{device.udn}::{st}"))
    return rows


def locationFor(address: LANAddress, httpPort: int) -> str:
    """
    @return: the URL of the root description on C{address}.
    """
    return f"http://{address.address.ip}:{httpPort}{ROOT_DESCRIPTION}"


def _message(startLine: str, headers: Sequence[tuple[str, object]]) -> bytes:
    lines = [startLine]
    for name, value in headers:
        lines.append(f"{name}: {value}" if value != "" else f"{name}:")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def alive(
    nt: str,
    usn: str,
    *,
    location: str,
    maxAge: int,
    bootId: int,
    configId: int,
    server: str = SERVER,
) -> bytes:
    """
    @return: an C{ssdp:alive} NOTIFY (UDA-essentials.md 1.3).
    """
    return _message(
        "NOTIFY * HTTP/1.1",
        [
            ("HOST", SSDP_HOST),
            ("CACHE-CONTROL", f"max-age={maxAge}"),
            ("LOCATION", location),
            ("NT", nt),
            ("NTS", "ssdp:alive"),
            ("SERVER", server),
            ("USN", usn),
            ("BOOTID.UPNP.ORG", bootId),
            ("CONFIGID.UPNP.ORG", configId),
        ],
    )


def byebye(nt: str, usn: str, *, bootId: int, configId: int) -> bytes:
    """
    @return: an C{ssdp:byebye} NOTIFY (UDA-essentials.md 1.4).
    """
    return _message(
        "NOTIFY * HTTP/1.1",
        [
            ("HOST", SSDP_HOST),
            ("NT", nt),
            ("NTS", "ssdp:byebye"),
            ("USN", usn),
            ("BOOTID.UPNP.ORG", bootId),
            ("CONFIGID.UPNP.ORG", configId),
        ],
    )


def searchResponse(
    st: str,
    usn: str,
    *,
    location: str,
    maxAge: int,
    date: float,
    bootId: int,
    configId: int,
    server: str = SERVER,
) -> bytes:
    """
    @param date: the current time, seconds since the epoch.
    @return: a response to an M-SEARCH (UDA-essentials.md 1.7).
    """
    return _message(
        "HTTP/1.1 200 OK",
        [
            ("CACHE-CONTROL", f"max-age={maxAge}"),
            ("DATE", formatdate(date, usegmt=True)),
            ("EXT", ""),
            ("LOCATION", location),
            ("SERVER", server),
            ("ST", st),
            ("USN", usn),
            ("BOOTID.UPNP.ORG", bootId),
            ("CONFIGID.UPNP.ORG", configId),
        ],
    )


class IPacketInfoTransport(Interface):
    """
    A UDP transport that sends from a chosen interface and address, and
    delivers each datagram to its protocol's C{datagramReceivedOn(datagram,
    addr, ifindex, destination)}.
    """

    def sendFrom(datagram: bytes, addr: tuple[str, int], ifindex: int, source: str) -> None:
        """
        Send C{datagram} to C{addr} out of interface C{ifindex} with source
        address C{source}; for a multicast C{addr} the datagram leaves on
        that interface only.

        @raise OSError: the kernel refused.
        """

    def joinGroupOn(group: str, ifindex: int, address: str) -> None:
        """
        Receive datagrams sent to C{group} on interface C{ifindex} (whose
        address is C{address}).

        @raise OSError: the kernel refused.
        """

    def leaveGroupOn(group: str, ifindex: int, address: str) -> None:
        """
        Undo L{joinGroupOn}.

        @raise OSError: the kernel refused (e.g. the interface is gone).
        """

    def getHost() -> object:
        """
        @return: the bound L{IPv4Address}.
        """

    def stopListening() -> object:
        """
        Close the socket.

        @return: a L{Deferred} that fires once closed, or L{None}.
        """


def _decodePacketInfo(ancillary: list[tuple[int, int, bytes]]) -> tuple[int, str]:
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _PKTINFO.size:
            ifindex, _, destination = _PKTINFO.unpack_from(data)
            return ifindex, socket.inet_ntoa(destination)
    return 0, "0.0.0.0"


@implementer(IPacketInfoTransport)
class PacketInfoPort(udp.MulticastPort):
    """
    An IPv4 UDP port that reports where each datagram arrived.

    Twisted's L{udp.Port} reads with C{recvfrom} and so cannot say on which
    interface a datagram came in; this port reads with C{recvmsg} and
    C{IP_PKTINFO} and calls its protocol's C{datagramReceivedOn(datagram,
    addr, ifindex, destination)}.

    Sending uses one socket for everything: C{sendmsg} with an C{IP_PKTINFO}
    control message whose C{ipi_ifindex} picks the outgoing interface and
    whose C{ipi_spec_dst} picks the source address.  Linux honours both for
    multicast and unicast destinations alike, so there is no per-address
    socket (or C{IP_MULTICAST_IF} state) to keep in step as LAN addresses
    come and go, and a reply leaves from the address its search came to.

    Socket options: C{SO_REUSEADDR} so other SSDP stacks on the host can
    bind port 1900 too (not C{SO_REUSEPORT}, which would make the kernel
    share unicast searches out between the stacks); C{IP_MULTICAST_ALL} off,
    so only groups joined on this socket are delivered; multicast TTL 2 and
    loopback on, so clients on this host see announcements.

    @cvar maxDatagrams: the most datagrams one C{doRead} handles (besides
        C{maxThroughput} bytes), so a flood of empty datagrams cannot hold
        the reactor.
    """

    maxDatagrams = 256
    log = Logger()

    def __init__(
        self, port: int, proto: DatagramProtocol, interface: str = "0.0.0.0", reactor=None
    ) -> None:
        super().__init__(port, proto, interface, 8192, reactor, listenMultiple=True)

    def createInternetSocket(self) -> socket.socket:
        skt = udp.Port.createInternetSocket(self)
        skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        skt.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        skt.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        skt.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
        skt.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        return skt

    def doRead(self) -> None:
        """
        Read the datagrams waiting, at most C{maxThroughput} bytes and
        C{maxDatagrams} datagrams.
        """
        read = 0
        for _ in range(self.maxDatagrams):
            if read >= self.maxThroughput:
                return
            try:
                datagram, ancillary, _, addr = self.socket.recvmsg(
                    self.maxPacketSize, socket.CMSG_SPACE(_PKTINFO.size)
                )
            except OSError as e:
                if e.errno in (EAGAIN, EWOULDBLOCK, EINTR, ECONNREFUSED):
                    return
                raise
            read += len(datagram)
            ifindex, destination = _decodePacketInfo(ancillary)
            try:
                self.protocol.datagramReceivedOn(datagram, addr, ifindex, destination)
            except Exception:
                self.log.failure("Protocol failed on a datagram from {addr}", addr=addr)

    def sendFrom(self, datagram: bytes, addr: tuple[str, int], ifindex: int, source: str) -> None:
        info = _PKTINFO.pack(ifindex, socket.inet_aton(source), bytes(4))
        self.socket.sendmsg([datagram], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, addr)

    def _membership(self, option: int, group: str, ifindex: int, address: str) -> None:
        # ip_mreqn: the ifindex names the interface even where an address
        # lookup would be ambiguous; it also works on lo (checked on 6.x).
        request = _MREQN.pack(socket.inet_aton(group), socket.inet_aton(address), ifindex)
        self.socket.setsockopt(socket.IPPROTO_IP, option, request)

    def joinGroupOn(self, group: str, ifindex: int, address: str) -> None:
        self._membership(socket.IP_ADD_MEMBERSHIP, group, ifindex, address)

    def leaveGroupOn(self, group: str, ifindex: int, address: str) -> None:
        self._membership(socket.IP_DROP_MEMBERSHIP, group, ifindex, address)


def listenPacketInfo(
    reactor: object, port: int, protocol: DatagramProtocol, interface: str = "0.0.0.0"
) -> PacketInfoPort:
    """
    Bind a L{PacketInfoPort} and connect C{protocol} to it.

    @param reactor: a reactor providing C{IReactorFDSet}.
    @raise twisted.internet.error.CannotListenError: the bind failed.
    """
    listening = PacketInfoPort(port, protocol, interface, reactor=reactor)
    listening.startListening()
    return listening


class SSDPProtocol(DatagramProtocol):
    """
    Hands datagrams, with where they arrived, to a callable.

    @ivar received: called with C{(datagram, addr, ifindex, destination)}.
    """

    noisy = False

    log = Logger()

    def __init__(self, received: Callable[[bytes, tuple[str, int], int, str], None]) -> None:
        self.received = received

    def datagramReceivedOn(
        self, datagram: bytes, addr: tuple[str, int], ifindex: int, destination: str
    ) -> None:
        """
        A datagram from C{addr} arrived on interface C{ifindex}, sent to
        C{destination}.
        """
        self.received(datagram, addr, ifindex, destination)

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        # Without the ingress interface a datagram cannot be shown to come
        # from the LAN: drop it.
        self.log.debug("Dropped SSDP datagram from {addr}: no packet info", addr=addr)


_T = TypeVar("_T")


def _getter(value: _T | Callable[[], _T]) -> Callable[[], _T]:
    if callable(value):
        return value
    return lambda: value


class SSDPService(Service):
    """
    Announces the device tree on the LAN addresses and answers M-SEARCHes
    from the LAN.

    A search is answered only if it arrived on a LAN interface, from an
    address inside that interface's LAN network, sent to the SSDP group or
    to one of that interface's LAN addresses; Linux accepts datagrams for
    any local address on any interface, so a search sent to a WAN address
    is never answered, even from the LAN.

    @ivar bootId: the C{BOOTID.UPNP.ORG} of this run.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        root: Device | Callable[[], Device],
        httpPort: int | None | Callable[[], int | None],
        configId: int | Callable[[], int],
        bootId: int | None = None,
        maxAge: int = 1800,
        random: _random.Random | None = None,
        port: int = SSDP_PORT,
        interface: str = "0.0.0.0",
        listen: Callable[[SSDPProtocol], IPacketInfoTransport] | None = None,
    ) -> None:
        """
        @param reactor: the clock, and for the default C{listen} a reactor
            providing C{IReactorFDSet}.
        @param root: the root device, or a callable returning the current
            one (the tree is read at every announcement and search).
        @param httpPort: the port of the description server, or a callable
            returning it (it is known only once the HTTP service has bound);
            while it is L{None} or 0, nothing but byebyes is sent.
        @param configId: C{CONFIGID.UPNP.ORG}, or a callable returning it.
        @param bootId: C{BOOTID.UPNP.ORG}; by default the seconds since the
            epoch at start (31 bits).
        @param maxAge: the C{max-age} of announcements and responses.
        @param random: the source of announcement and response delays.
        @param port: the UDP port to bind and announce to.
        @param interface: the address to bind.
        @param listen: binds the transport for a protocol; by default a
            L{PacketInfoPort} on C{interface}:C{port}.
        """
        self._reactor = reactor
        self._root = _getter(root)
        self._httpPort = _getter(httpPort)
        self._configId = _getter(configId)
        self._givenBootId = bootId
        self.bootId = bootId or 0
        self._maxAge = maxAge
        self._random = random or _random.Random()
        if listen is None:
            def listen(protocol: SSDPProtocol) -> IPacketInfoTransport:
                return listenPacketInfo(reactor, port, protocol, interface)
        self._listen = listen
        self._addresses: tuple[LANAddress, ...] = ()
        self._transport: IPacketInfoTransport | None = None
        self._joined: dict[int, str] = {}
        self._timers: set[IDelayedCall] = set()
        self._replies: set[IDelayedCall] = set()
        self._refresh: IDelayedCall | None = None
        self._announced: list[tuple[str, str]] = []
        self._announcedConfigId = 0
        self._overloaded = False

    # Addresses and group memberships.

    def setAddresses(self, addresses: Sequence[LANAddress]) -> None:
        """
        Serve on these LAN addresses from now on.  While running, say
        goodbye on the addresses that went, and announce on the new ones.
        """
        old, self._addresses = self._addresses, tuple(dict.fromkeys(addresses))
        if self._transport is None:
            return
        gone = [a for a in old if a not in self._addresses]
        added = [a for a in self._addresses if a not in old]
        self._round(gone, self._byebyes(self._announced, self._announcedConfigId))
        self._syncGroups()
        if added:
            self._round(added, self._byebyes(self._announced, self._announcedConfigId))
            self._announceSoon(frozenset(added))

    def _syncGroups(self) -> None:
        assert self._transport is not None
        wanted: dict[int, str] = {}
        for a in self._addresses:
            wanted.setdefault(a.index, str(a.address.ip))
        for ifindex in [i for i in self._joined if i not in wanted]:
            try:
                self._transport.leaveGroupOn(SSDP_GROUP, ifindex, self._joined.pop(ifindex))
            except OSError as e:
                self.log.info("Could not leave SSDP group on {ifindex}: {error}",
                              ifindex=ifindex, error=e)
        for ifindex, address in wanted.items():
            if ifindex in self._joined:
                continue
            try:
                self._transport.joinGroupOn(SSDP_GROUP, ifindex, address)
            except OSError as e:
                self.log.error("Could not join SSDP group on {ifindex} ({address}): {error}",
                               ifindex=ifindex, address=address, error=e)
            else:
                self._joined[ifindex] = address

    # Starting and stopping.

    def startService(self) -> None:
        """
        Bind, join the SSDP group on every LAN interface, say goodbye for a
        previous run (IGD:2 wants byebye before the first alive), announce
        twice after a short random delay, and refresh before half of
        C{max-age} has passed.
        """
        super().startService()
        if self._givenBootId is None:
            self.bootId = int(self._reactor.seconds()) & 0x7FFFFFFF
        self._transport = self._listen(SSDPProtocol(self._datagramReceived))
        self._syncGroups()
        self._announced = notifications(self._root())
        self._announcedConfigId = self._configId()
        self._round(self._addresses, self._byebyes(self._announced, self._announcedConfigId))
        self._announceSoon(None)

    def stopService(self) -> object:
        """
        Cancel every pending reply and announcement, say goodbye on every
        LAN address, and close the socket.

        @return: a L{Deferred} that fires once the socket is closed, or
            L{None}.
        """
        super().stopService()
        for call in [*self._timers, *self._replies]:
            call.cancel()
        self._timers.clear()
        self._replies.clear()
        if self._refresh is not None and self._refresh.active():
            self._refresh.cancel()
        self._refresh = None
        transport, self._transport = self._transport, None
        if transport is None:
            return None
        goodbye = self._byebyes(self._announced, self._announcedConfigId)
        self._send(transport, self._addresses, goodbye)
        for ifindex, address in self._joined.items():
            try:
                transport.leaveGroupOn(SSDP_GROUP, ifindex, address)
            except OSError:
                pass  # the socket is closed next, which leaves all groups anyway
        self._joined.clear()
        return transport.stopListening()

    # Announcements.

    def reannounce(self) -> None:
        """
        The device tree or its configuration changed: say goodbye for the
        messages that disappeared and announce the current set now (twice).
        """
        if self._transport is not None:
            self._announceSoon(None)

    def _later(self, delay: float, f: Callable[..., object], *args: object) -> None:
        def fire() -> None:
            self._timers.discard(call)
            f(*args)

        call = self._reactor.callLater(delay, fire)
        self._timers.add(call)

    def _announceSoon(self, only: frozenset[LANAddress] | None) -> None:
        """
        Send the alive round after a random delay of up to L{INITIAL_DELAY},
        and again L{REPEAT_DELAY} later (UDA: at most three copies); for a
        full announcement, restart the refresh timer.
        """
        delay = self._random.uniform(0, INITIAL_DELAY)
        self._later(delay, self._aliveRound, only)
        self._later(delay + REPEAT_DELAY, self._aliveRound, only)
        if only is None:
            self._scheduleRefresh()

    def _scheduleRefresh(self) -> None:
        if self._refresh is not None and self._refresh.active():
            self._refresh.cancel()
        # A random interval under max-age / 2 (UDA-essentials.md 1.6).
        delay = self._random.uniform(0.25, 0.45) * self._maxAge
        self._refresh = self._reactor.callLater(delay, self._announceSoon, None)

    def _aliveRound(self, only: frozenset[LANAddress] | None) -> None:
        current, configId = notifications(self._root()), self._configId()
        currentSet = set(current)
        gone = [row for row in self._announced if row not in currentSet]
        self._round(self._addresses, self._byebyes(gone, self._announcedConfigId))
        self._announced, self._announcedConfigId = current, configId
        addresses = [a for a in self._addresses if only is None or a in only]
        self._round(addresses, self._alives(current, configId))

    def _byebyes(
        self, rows: list[tuple[str, str]], configId: int
    ) -> Callable[[LANAddress], list[bytes]]:
        messages = [byebye(nt, usn, bootId=self.bootId, configId=configId) for nt, usn in rows]
        return lambda address: messages

    def _alives(
        self, rows: list[tuple[str, str]], configId: int
    ) -> Callable[[LANAddress], list[bytes]]:
        def build(address: LANAddress) -> list[bytes]:
            httpPort = self._httpPort()
            if not httpPort:
                self.log.debug("No alive on {address}: the HTTP port is not known yet",
                               address=address.address)
                return []
            location = locationFor(address, httpPort)
            return [
                alive(nt, usn, location=location, maxAge=self._maxAge,
                      bootId=self.bootId, configId=configId)
                for nt, usn in rows
            ]

        return build

    def _round(
        self, addresses: Sequence[LANAddress], build: Callable[[LANAddress], list[bytes]]
    ) -> None:
        if self._transport is not None:
            self._send(self._transport, addresses, build)

    def _send(
        self,
        transport: IPacketInfoTransport,
        addresses: Sequence[LANAddress],
        build: Callable[[LANAddress], list[bytes]],
    ) -> None:
        group = (SSDP_GROUP, transport.getHost().port)
        for address in addresses:
            for message in build(address):
                try:
                    transport.sendFrom(message, group, address.index, str(address.address.ip))
                except OSError as e:
                    self.log.warn("Could not announce on {interface} ({address}): {error}",
                                  interface=address.interface, address=address.address, error=e)
                    break

    # Searches.

    def _datagramReceived(
        self, datagram: bytes, addr: tuple[str, int], ifindex: int, destination: str
    ) -> None:
        if self._transport is None:
            return
        source = IPv4Address(addr[0])
        onInterface = [a for a in self._addresses if a.index == ifindex]
        if not any(source in a.address.network for a in onInterface) or addr[1] == 0:
            self.log.debug("Ignored SSDP datagram from {addr} on {ifindex}: not from the LAN",
                           addr=addr, ifindex=ifindex)
            return
        multicast = destination == SSDP_GROUP
        if multicast:
            lan = next(a for a in onInterface if source in a.address.network)
        else:
            toUs = [a for a in onInterface if str(a.address.ip) == destination]
            if not toUs:
                self.log.debug("Ignored SSDP datagram from {addr} to {destination}: "
                               "not a LAN address of {ifindex}",
                               addr=addr, destination=destination, ifindex=ifindex)
                return
            lan = toUs[0]
        try:
            search = parseSearch(datagram, multicast=multicast)
        except NotASearch:
            return  # announcements (ours looped back, too) are none of our business
        except MalformedSSDP as e:
            self.log.debug("Dropped SSDP datagram from {addr}: {why}", addr=addr, why=e)
            return
        replies = answers(self._root(), search.st)
        if not replies:
            return
        if not multicast:
            for st, usn in replies:
                self._reply(lan, st, usn, addr)
            return
        if len(self._replies) + len(replies) > MAX_PENDING_REPLIES:
            if not self._overloaded:
                self.log.warn("Too many SSDP replies pending: dropping searches "
                              "(first from {addr})", addr=addr)
            self._overloaded = True
            return
        self._overloaded = False
        assert search.mx is not None
        for st, usn in replies:
            self._scheduleReply(self._random.uniform(0, search.mx), lan, st, usn, addr)

    def _scheduleReply(
        self, delay: float, lan: LANAddress, st: str, usn: str, addr: tuple[str, int]
    ) -> None:
        def fire() -> None:
            self._replies.discard(call)
            self._reply(lan, st, usn, addr)

        call = self._reactor.callLater(delay, fire)
        self._replies.add(call)

    def _reply(self, lan: LANAddress, st: str, usn: str, addr: tuple[str, int]) -> None:
        httpPort = self._httpPort()
        if self._transport is None or lan not in self._addresses or not httpPort:
            return
        message = searchResponse(
            st,
            usn,
            location=locationFor(lan, httpPort),
            maxAge=self._maxAge,
            date=self._reactor.seconds(),
            bootId=self.bootId,
            configId=self._configId(),
        )
        try:
            self._transport.sendFrom(message, addr, lan.index, str(lan.address.ip))
        except OSError as e:
            self.log.info("Could not answer {addr}: {error}", addr=addr, error=e)
