"""
Tests for L{gatewayd.link.lease} and L{gatewayd.link.dhcp}: the lease logic
gatewayd owns (packets, offers, leases, expiry on a Clock) and how a DHCP
link turns lease events into kernel changes and connection states.
"""

from __future__ import annotations

import json
import socket
import struct
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatewayd.connection import ERROR_ISP_DISCONNECT, ERROR_NO_CARRIER, WANConnection
from gatewayd.errors import ConfigError
from gatewayd.interfaces import ILinkType, InterfaceState, IRenewableLink, LinkContext
from gatewayd.link.addressing import DEFAULT
from gatewayd.link.dhcp import DHCPLinkType, DHCPSettings
from gatewayd.link.lease import (
    ACK,
    OFFER,
    LeaseClock,
    MalformedDHCP,
    checkMessage,
    decodePacket,
    leaseFromAck,
    loadLeaseFile,
    refuseOffer,
)
from tests.fakes import FakeKernel

LAN = IPv4Network("192.168.1.0/24")


def reply(
    yiaddr: str = "203.0.113.7",
    kind: int = ACK,
    mask: str | None = "255.255.255.0",
    router: str | None = "203.0.113.1",
    lease: int | None = 3600,
    **options: Any,
) -> dict[str, Any]:
    """
    @return: a decoded DHCP reply, shaped as pyroute2 decodes one.
    """
    opts: dict[str, Any] = {"message_type": kind, "server_id": "203.0.113.1"}
    if mask is not None:
        opts["subnet_mask"] = mask
    if router is not None:
        opts["router"] = [router]
    if lease is not None:
        opts["lease_time"] = lease
    opts.update(options)
    return {"op": 2, "yiaddr": yiaddr, "options": opts}


def frame(dhcp: bytes) -> bytes:
    """
    @return: C{dhcp} in UDP (67 -> 68), IPv4 and Ethernet, as the client's
        raw socket receives it.
    """
    udp = struct.pack("!HHHH", 67, 68, 8 + len(dhcp), 0)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(dhcp), 0, 0, 64, 17, 0,
        socket.inet_aton("203.0.113.1"), socket.inet_aton("255.255.255.255"),
    )
    eth = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
    return eth + ip + udp + dhcp


def bootp(yiaddr: str = "203.0.113.7", options: bytes = b"", op: int = 2) -> bytes:
    """
    @return: a BOOTP message with C{options} (already encoded, without END).
    """
    fixed = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        op, 1, 6, 0, 0x12345670, 0, 0,
        b"\0" * 4, socket.inet_aton(yiaddr), b"\0" * 4, b"\0" * 4,
        b"\x02\0\0\0\0\x02" + b"\0" * 10, b"", b"",
    )
    return fixed + b"c\x82Sc" + options + b"\xff"


def option(code: int, value: bytes) -> bytes:
    return bytes([code, len(value)]) + value


GOOD_OPTIONS = (
    option(53, bytes([OFFER]))
    + option(54, socket.inet_aton("203.0.113.1"))
    + option(1, socket.inet_aton("255.255.255.0"))
    + option(3, socket.inet_aton("203.0.113.1"))
    + option(51, struct.pack("!I", 3600))
)


class PacketTests(SynchronousTestCase):
    """
    Packets on the client port: good ones decode, malformed ones are
    refused with L{MalformedDHCP} (the client drops them and goes on).
    """

    def test_good(self) -> None:
        """
        A well-formed OFFER decodes, with its address and options.
        """
        message = decodePacket(frame(bootp(options=GOOD_OPTIONS)))
        self.assertEqual(message.dhcp["yiaddr"], "203.0.113.7")
        self.assertEqual(message.dhcp["options"]["lease_time"], 3600)
        self.assertEqual(checkMessage(message.dhcp), OFFER)

    def test_malformed(self) -> None:
        """
        Truncated frames, garbage, BOOTREQUESTs, unknown or missing message
        types and broken options are all refused.
        """
        good = frame(bootp(options=GOOD_OPTIONS))
        cases = {
            "empty": b"",
            "ethernet only": good[:14],
            "truncated bootp": good[:100],
            "garbage": bytes(range(256)) * 2,
            "bootrequest": frame(bootp(options=GOOD_OPTIONS, op=1)),
            "no message type": frame(bootp(options=option(54, socket.inet_aton("203.0.113.1")))),
            "unknown message type": frame(bootp(options=option(53, b"\x63"))),
        }
        for name, raw in cases.items():
            with self.assertRaises(MalformedDHCP, msg=name):
                decodePacket(raw)

    def test_brokenOption(self) -> None:
        """
        An option that overruns the packet is dropped by the decoder; what
        is left is no usable offer (no subnet mask).
        """
        raw = frame(bootp(options=option(53, bytes([OFFER])) + b"\x01\x40\x01"))
        message = decodePacket(raw)
        self.assertIn("subnet mask", refuseOffer(message.dhcp, [LAN]) or "")

    def test_checkMessage(self) -> None:
        """
        Decoded messages without the fields a client relies on are refused.
        """
        for message in [
            {},
            {"op": 2, "yiaddr": "203.0.113.7"},
            {"op": 2, "yiaddr": "x", "options": {"message_type": ACK}},
            {"op": 2, "yiaddr": "203.0.113.7", "options": {"message_type": 99}},
            {"op": 2, "yiaddr": "203.0.113.7", "options": None},
        ]:
            self.assertRaises(MalformedDHCP, checkMessage, message)


class OfferTests(SynchronousTestCase):
    """
    Offers with an address gatewayd must not put on a WAN are refused, with
    the reason.
    """

    def test_acceptable(self) -> None:
        self.assertIsNone(refuseOffer(reply(kind=OFFER), [LAN]))
        self.assertIsNone(refuseOffer(reply(router=None), [LAN]))

    def test_bogus(self) -> None:
        """
        0.0.0.0, multicast, broadcast, loopback, link-local, the LAN's own
        prefix, the subnet's network address, a router outside the subnet
        and a missing mask are refused.
        """
        cases = {
            "0.0.0.0": reply("0.0.0.0"),
            "multicast": reply("224.0.0.5", mask="255.255.255.0", router=None),
            "broadcast": reply("255.255.255.255", router=None),
            "subnet broadcast": reply("203.0.113.255"),
            "network": reply("203.0.113.0"),
            "loopback": reply("127.0.0.2", mask="255.0.0.0", router=None),
            "link-local": reply("169.254.3.4", mask="255.255.0.0", router=None),
            "lan": reply("192.168.1.20", router="192.168.1.1"),
            "lan overlap": reply("192.168.0.20", mask="255.255.0.0", router="192.168.0.1"),
            "router outside": reply(router="198.51.100.1"),
            "router is us": reply(router="203.0.113.7"),
            "no mask": reply(mask=None),
            "bad mask": reply(mask="255.0.255.0"),
        }
        for name, message in cases.items():
            self.assertIsNotNone(refuseOffer(message, [LAN]), name)


class LeaseTests(SynchronousTestCase):
    """
    What an ACK grants, and when it runs out.
    """

    def test_fromAck(self) -> None:
        """
        Address with prefix, gateway, name servers, server and the times
        (T1 and T2 as sent, or half and 7/8 of the lease).
        """
        lease = leaseFromAck(
            reply(name_server=["9.9.9.9", "1.1.1.1"], renewal_time=600, rebinding_time=1000), 100.0
        )
        self.assertEqual(lease.address, IPv4Interface("203.0.113.7/24"))
        self.assertEqual(lease.gateway, IPv4Address("203.0.113.1"))
        self.assertEqual(lease.dns, (IPv4Address("9.9.9.9"), IPv4Address("1.1.1.1")))
        self.assertEqual(lease.server, IPv4Address("203.0.113.1"))
        times = lease.times()
        self.assertEqual((times.renewAt, times.rebindAt, times.expiresAt), (700.0, 1100.0, 3700.0))
        defaults = leaseFromAck(reply(), 0.0).times()
        self.assertEqual((defaults.renewAt, defaults.rebindAt), (1800.0, 3150.0))
        forever = leaseFromAck(reply(lease=0xFFFFFFFF), 0.0)
        self.assertIsNone(forever.expiresAt)
        self.assertFalse(forever.expired(1e12))

    def test_unusable(self) -> None:
        """
        An ACK without a lease time or with a bogus address grants nothing.
        """
        self.assertRaises(MalformedDHCP, leaseFromAck, reply(lease=None), 0.0)
        self.assertRaises(MalformedDHCP, leaseFromAck, reply("0.0.0.0"), 0.0)
        self.assertRaises(MalformedDHCP, leaseFromAck, reply(lease=-5), 0.0)

    def test_leaseFile(self) -> None:
        """
        The file pyroute2 writes is read back; a damaged one is ignored.
        """
        data = json.dumps({"ack": reply(), "interface": "eth1", "server_mac": "x", "obtained": 50.0})
        lease = loadLeaseFile(data.encode(), 100.0)
        assert lease is not None
        self.assertEqual((lease.address.ip, lease.obtained), (IPv4Address("203.0.113.7"), 50.0))
        for damaged in [b"", b"{", b"[]", b'{"ack": {}, "obtained": 1}']:
            self.assertIsNone(loadLeaseFile(damaged, 100.0))

    def test_clock(self) -> None:
        """
        A held lease expires at its end, not a second earlier; a renewal
        moves the end; release cancels it.
        """
        clock, expired = Clock(), []
        leases = LeaseClock(clock, expired.append)
        first = leaseFromAck(reply(lease=120), 0.0)
        leases.hold(first)
        clock.advance(60)
        renewed = leaseFromAck(reply(lease=120), 60.0)
        leases.hold(renewed)
        clock.advance(119)
        self.assertEqual(expired, [])
        clock.advance(1)
        self.assertEqual(expired, [renewed])
        leases.hold(leaseFromAck(reply(lease=120), 180.0))
        leases.release()
        self.assertEqual(clock.getDelayedCalls(), [])


class FakeSession:
    """
    Stands in for pyroute2's client: records what the link asks.
    """

    def __init__(self, events: Any, interface: str, settings: DHCPSettings, leaseFile: FilePath) -> None:
        self.events = events
        self.leaseFile = leaseFile
        self.stopped: bool | None = None
        self.renewed = 0
        SESSIONS.append(self)

    def stop(self, release: bool) -> Deferred[None]:
        self.stopped = release
        return succeed(None)

    def renew(self) -> Deferred[None]:
        self.renewed += 1
        return succeed(None)


SESSIONS: list[FakeSession] = []


class DHCPLinkTests(SynchronousTestCase):
    """
    A DHCP link applies leases to the kernel and reports them.
    """

    def setUp(self) -> None:
        del SESSIONS[:]
        self.clock = Clock()
        self.clock.advance(1000)
        self.netlink = FakeKernel(
            [
                InterfaceState("eth1", 3, up=False, carrier=False),
                InterfaceState("lan0", 4, up=True, carrier=True, addresses=(IPv4Interface("192.168.1.1/24"),)),
            ]
        )
        self.state = FilePath(self.mktemp())
        self.state.makedirs()

    def build(self, onStop: str = "keep", **config: object) -> Any:
        from gatewayd.link.dhcp import DHCPLink

        settings = DHCPLinkType().checkConfig(config)
        link = DHCPLink(
            "eth1",
            self.netlink,
            self.clock,
            settings,
            self.state.child("dhcp-eth1.lease.json"),
            100,
            onStop,
            lanInterfaces=("lan0",),
            session=FakeSession,
        )
        return link

    def connected(self, link: Any) -> tuple[WANConnection, list[tuple[str, object]]]:
        link.startService()
        connection = WANConnection(link, self.clock, lambda: True)
        seen: list[tuple[str, object]] = []
        connection.addObserver(lambda name, value: seen.append((name, value)))
        connection.start()
        return connection, seen

    def addresses(self) -> tuple[IPv4Interface, ...]:
        state = self.netlink.interfaceState("eth1")
        assert state is not None
        return state.addresses

    def test_config(self) -> None:
        """
        client_id, hostname and release_on_stop are parsed; mistakes name
        their key.
        """
        self.assertTrue(verifyObject(ILinkType, DHCPLinkType()))
        self.assertEqual(
            DHCPLinkType().checkConfig({"client_id": "gw-1", "hostname": "gw", "release_on_stop": True}),
            DHCPSettings(b"gw-1", "gw", True),
        )
        for config, key in [
            ({"client_id": 5}, "client_id"),
            ({"hostname": "a b"}, "hostname"),
            ({"release_on_stop": "yes"}, "release_on_stop"),
            ({"server": "x"}, "server"),
        ]:
            with self.assertRaises(ConfigError) as e:
                DHCPLinkType().checkConfig(config)
            self.assertEqual(e.exception.path, key)

    def test_buildLink(self) -> None:
        """
        The plugin builds a renewable link whose lease file is in state_dir.
        """
        link = DHCPLinkType().buildLink(
            LinkContext("isp1", "eth1", DHCPSettings(), self.netlink, self.clock, self.state)
        )
        self.assertTrue(verifyObject(IRenewableLink, link))

    def test_waitsForCarrier(self) -> None:
        """
        Connecting sets the interface up; the client starts once there is
        carrier, with its lease file in the state directory.
        """
        link = self.build()
        connection, _ = self.connected(link)
        state = self.netlink.interfaceState("eth1")
        assert state is not None and state.up
        self.netlink.setCarrier("eth1", False)
        self.assertEqual(connection.status, "Connecting")
        count = len(SESSIONS)
        self.netlink.setCarrier("eth1", True)
        self.assertEqual(len(SESSIONS), count + 1)
        self.assertEqual(SESSIONS[-1].leaseFile.parent(), self.state)

    def test_bound(self) -> None:
        """
        An ACK puts address, routes and rule into the kernel, and the
        connection becomes Connected with ExternalIPAddress; the link
        reports gateway, name servers and lease times.
        """
        link = self.build()
        connection, seen = self.connected(link)
        SESSIONS[-1].events.leaseBound(reply(name_server=["9.9.9.9"]), "bound")
        self.assertEqual(self.addresses(), (IPv4Interface("203.0.113.7/24"),))
        self.assertIn(("eth1", DEFAULT, IPv4Address("203.0.113.1"), 100, IPv4Address("203.0.113.7")), self.netlink.routes)
        self.assertEqual(len(self.netlink.rules), 1)
        self.assertEqual((connection.status, connection.externalIPAddress), ("Connected", "203.0.113.7"))
        self.assertEqual(link.status.dns, (IPv4Address("9.9.9.9"),))
        self.assertEqual(link.status.lease.expiresAt, 1000 + 3600)
        self.assertEqual(seen[-1], ("ExternalIPAddress", "203.0.113.7"))

    def test_leaseChange(self) -> None:
        """
        An ACK for another address replaces the old address and routes, and
        ExternalIPAddress is evented with the new one.
        """
        link = self.build()
        connection, seen = self.connected(link)
        events = SESSIONS[-1].events
        events.leaseBound(reply(), "bound")
        events.leaseBound(reply("203.0.113.9"), "bound")
        self.assertEqual(self.addresses(), (IPv4Interface("203.0.113.9/24"),))
        self.assertEqual({r[4] for r in self.netlink.routes}, {IPv4Address("203.0.113.9")})
        self.assertEqual({r[0] for r in self.netlink.rules}, {IPv4Network("203.0.113.9/32")})
        self.assertEqual(connection.externalIPAddress, "203.0.113.9")
        self.assertEqual(seen[-1], ("ExternalIPAddress", "203.0.113.9"))

    def test_renewal(self) -> None:
        """
        A renewal moves the expiry: the address outlives the first lease.
        """
        link = self.build()
        connection, _ = self.connected(link)
        events = SESSIONS[-1].events
        events.leaseBound(reply(lease=120), "bound")
        self.clock.advance(60)
        events.leaseBound(reply(lease=120), "renewed")
        self.clock.advance(100)
        self.assertEqual(connection.status, "Connected")
        self.assertEqual(self.addresses(), (IPv4Interface("203.0.113.7/24"),))
        self.successResultOf(link.renew())
        self.assertEqual(SESSIONS[-1].renewed, 1)

    def test_expiry(self) -> None:
        """
        At the lease's end (on the reactor's clock, even with the client
        stopped by carrier loss) address and routes go, the connection
        leaves Connected and ExternalIPAddress is evented empty.
        """
        link = self.build()
        connection, seen = self.connected(link)
        SESSIONS[-1].events.leaseBound(reply(lease=120), "bound")
        self.clock.advance(119)
        self.assertEqual(connection.status, "Connected")
        self.clock.advance(1)
        self.assertEqual(self.addresses(), ())
        self.assertEqual((self.netlink.routes, self.netlink.rules), (set(), set()))
        self.assertEqual(connection.status, "Connecting")
        self.assertEqual(connection.lastConnectionError, ERROR_ISP_DISCONNECT)
        self.assertEqual(seen[-1], ("ExternalIPAddress", ""))
        self.assertFalse(self.state.child("dhcp-eth1.lease.json").exists())

    def test_nak(self) -> None:
        """
        A NAK removes the lease: ERROR_ISP_DISCONNECT.
        """
        link = self.build()
        connection, _ = self.connected(link)
        events = SESSIONS[-1].events
        events.leaseBound(reply(), "bound")
        events.leaseLost("nak")
        self.assertEqual(self.addresses(), ())
        self.assertEqual(connection.lastConnectionError, ERROR_ISP_DISCONNECT)

    def test_carrier(self) -> None:
        """
        Carrier loss: the connection goes to Connecting (ERROR_NO_CARRIER)
        and the client stops without releasing; the address stays. Carrier
        return starts a new client (INIT-REBOOT from the lease file), and
        its ACK makes the connection Connected again.
        """
        link = self.build()
        connection, _ = self.connected(link)
        first = SESSIONS[-1]
        first.events.leaseBound(reply(), "bound")
        self.netlink.setCarrier("eth1", False)
        self.assertEqual((connection.status, connection.lastConnectionError), ("Connecting", ERROR_NO_CARRIER))
        self.assertIs(first.stopped, False)
        self.assertEqual(self.addresses(), (IPv4Interface("203.0.113.7/24"),))
        self.netlink.setCarrier("eth1", True)
        self.assertEqual(connection.status, "Connecting")
        SESSIONS[-1].events.leaseBound(reply(), "bound")
        self.assertIsNot(SESSIONS[-1], first)
        self.assertEqual(connection.status, "Connected")

    def test_screen(self) -> None:
        """
        The link refuses offers in the LAN's prefix, with a log line.
        """
        link = self.build()
        self.connected(link)
        events = SESSIONS[-1].events
        self.assertIsNotNone(events.screen(reply("192.168.1.50", router="192.168.1.1")))
        self.assertIsNone(events.screen(reply()))

    def test_malformedAck(self) -> None:
        """
        An unusable ACK changes nothing.
        """
        link = self.build()
        connection, _ = self.connected(link)
        SESSIONS[-1].events.leaseBound(reply(lease=None), "bound")
        self.assertEqual((self.addresses(), connection.status), ((), "Connecting"))

    def test_terminate(self) -> None:
        """
        RequestTermination releases the lease and removes the address;
        RequestConnection starts a client again.
        """
        link = self.build()
        connection, _ = self.connected(link)
        session = SESSIONS[-1]
        session.events.leaseBound(reply(), "bound")
        connection.requestTermination()
        self.assertIs(session.stopped, True)
        self.assertEqual((self.addresses(), connection.status), ((), "Disconnected"))
        connection.requestConnection()
        self.assertIsNot(SESSIONS[-1], session)

    def test_stopKeep(self) -> None:
        """
        With on_stop = "keep" the lease is not released and the address
        stays; no timer is left.
        """
        link = self.build()
        connection, _ = self.connected(link)
        SESSIONS[-1].events.leaseBound(reply(), "bound")
        connection.stop()
        self.successResultOf(link.stopService())
        self.assertIs(SESSIONS[-1].stopped, False)
        self.assertEqual(self.addresses(), (IPv4Interface("203.0.113.7/24"),))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopClean(self) -> None:
        """
        With on_stop = "clean" (or release_on_stop) the lease is released
        and the interface left as it was: down, no address, route or rule.
        """
        for onStop, config in [("clean", {}), ("keep", {"release_on_stop": True})]:
            self.setUp()
            before = self.netlink.interfaceState("eth1")
            link = self.build(onStop, **config)
            connection, _ = self.connected(link)
            SESSIONS[-1].events.leaseBound(reply(), "bound")
            connection.stop()
            self.successResultOf(link.stopService())
            self.assertIs(SESSIONS[-1].stopped, True)
            self.assertEqual(self.netlink.interfaceState("eth1"), before)
            self.assertEqual((self.netlink.routes, self.netlink.rules), (set(), set()))
            self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_restart(self) -> None:
        """
        A restarted link takes over the lease file a previous run kept: a
        new ACK for another address removes the old one.
        """
        old = IPv4Interface("203.0.113.7/24")
        self.netlink.setState(InterfaceState("eth1", 3, up=True, carrier=True, addresses=(old,)))
        self.state.child("dhcp-eth1.lease.json").setContent(
            json.dumps({"ack": reply(), "interface": "eth1", "server_mac": "x", "obtained": 990.0}).encode()
        )
        link = self.build()
        connection, _ = self.connected(link)
        self.assertEqual(connection.status, "Connecting")
        SESSIONS[-1].events.leaseBound(reply("203.0.113.9"), "bound")
        self.assertEqual(self.addresses(), (IPv4Interface("203.0.113.9/24"),))
