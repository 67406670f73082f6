"""
L{gatewayd.upnp.ssdp} on real sockets, on the loopback interface only: the
kernel really delivers IP_PKTINFO, joins the SSDP group on C{lo}, and sends
from the address and interface we choose.

The service's reactor is a L{MemoryReactorClock}: the test waits for the
socket with C{select} (bounded by L{TIMEOUT}) and calls C{doRead} itself, so
no global reactor runs and both trial and pytest can run it.
"""

from __future__ import annotations

import random
import select
import socket
import struct
from ipaddress import IPv4Interface

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from gatewayd.interfaces import LANAddress
from gatewayd.upnp.ssdp import SSDP_GROUP, PacketInfoPort, SSDPService
from tests.unit.test_ssdp import IGD, ROOT, headers, search, tree

TIMEOUT = 2.0
LOOPBACK = LANAddress("lo", socket.if_nametoindex("lo"), IPv4Interface("127.0.0.1/8"))


def receive(skt: socket.socket) -> tuple[bytes, tuple[str, int]]:
    readable, _, _ = select.select([skt], [], [], TIMEOUT)
    if not readable:
        raise AssertionError("nothing received")
    return skt.recvfrom(4096)


class LoopbackTests(SynchronousTestCase):
    """
    An L{SSDPService} on a real socket bound to an ephemeral port.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1700000000)
        self.service = SSDPService(
            self.reactor, tree(1), 5000, configId=1, port=0, random=random.Random(1)
        )
        self.service.setAddresses([LOOPBACK])
        self.service.startService()
        self.addCleanup(self.reactor.advance, 0)  # runs the port's connectionLost
        self.addCleanup(self.service.stopService)
        [self.port] = [r for r in self.reactor.readers if isinstance(r, PacketInfoPort)]
        self.portNumber = self.port.getHost().port

    def client(self, address: str = "127.0.0.1", port: int = 0) -> socket.socket:
        skt = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(skt.close)
        skt.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        skt.bind((address, port))
        return skt

    def deliver(self) -> None:
        """
        Wait until the service's socket is readable, then let it read.
        """
        readable, _, _ = select.select([self.port.socket], [], [], TIMEOUT)
        self.assertTrue(readable, "the service received nothing")
        self.port.doRead()

    def test_unicastSearch(self) -> None:
        """
        A unicast search to 127.0.0.1 is answered at once from 127.0.0.1 and
        the service's port, with the description's URL on 127.0.0.1.
        """
        client = self.client()
        client.sendto(search(f"{IGD}:1", mx=None), ("127.0.0.1", self.portNumber))
        self.deliver()
        data, sender = receive(client)
        self.assertEqual(sender, ("127.0.0.1", self.portNumber))
        response = headers(data)
        self.assertEqual(response["ST"], f"{IGD}:1")
        self.assertEqual(response["USN"], f"{ROOT}::{IGD}:1")
        self.assertEqual(response["LOCATION"], "http://127.0.0.1:5000/rootDesc.xml")

    def test_multicastSearch(self) -> None:
        """
        A search sent to the SSDP group on lo arrives (the group is joined
        on lo, and the packet info names the group) and is answered within
        MX.
        """
        client = self.client("0.0.0.0")
        client.sendto(search("upnp:rootdevice", mx=1), (SSDP_GROUP, self.portNumber))
        self.deliver()
        self.reactor.advance(1)
        data, sender = receive(client)
        self.assertEqual(sender, ("127.0.0.1", self.portNumber))
        self.assertEqual(headers(data)["USN"], f"{ROOT}::upnp:rootdevice")

    def test_announcementsOnLoopback(self) -> None:
        """
        A listener on the SSDP port that joined the group on lo hears the
        alive announcements, sent from 127.0.0.1.
        """
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(listener.close)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", self.portNumber))
        listener.setsockopt(
            socket.IPPROTO_IP,
            socket.IP_ADD_MEMBERSHIP,
            struct.pack("=4s4si", socket.inet_aton(SSDP_GROUP), bytes(4), LOOPBACK.index),
        )
        self.reactor.advance(0.1)
        data, sender = receive(listener)
        self.assertEqual(sender, ("127.0.0.1", self.portNumber))
        self.assertEqual(headers(data)["NTS"], "ssdp:alive")
