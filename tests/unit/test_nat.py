"""
Tests for the NAT backends.

L{NATBackendBehaviourMixin} is what every L{INATBackend} must do; each
backend's test case mixes it in and provides C{makeBackend}.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from zope.interface.verify import verifyObject

from twisted.trial.unittest import SynchronousTestCase

from gatewayd.interfaces import INATBackend, NATMapping
from gatewayd.nat.memory import (
    InvalidMapping,
    MappingExists,
    MappingNotFound,
    MemoryNATBackend,
)


def mapping(
    port: int = 8080,
    protocol: str = "TCP",
    wan: str = "isp1",
    client: str = "192.168.1.10",
    remoteHost: str = "",
    internalPort: int | None = None,
) -> NATMapping:
    return NATMapping(
        wan=wan,
        interface={"isp1": "eth1", "isp2": "eth2"}.get(wan, "eth9"),
        protocol=protocol,
        externalPort=port,
        remoteHost=remoteHost,
        internalClient=client,
        internalPort=port if internalPort is None else internalPort,
    )


class NATBackendBehaviourMixin:
    """
    The behaviour every NAT backend shares. Mix into a C{SynchronousTestCase}
    (or C{TestCase}) and define C{makeBackend}.
    """

    def makeBackend(self) -> INATBackend:
        """
        @return: a started backend with no mappings.
        """
        raise NotImplementedError

    def setUp(self) -> None:
        self.backend = self.makeBackend()

    def settle(self) -> None:
        """
        Let the backend finish what it was asked (a kernel backend batches
        the changes of one reactor turn).
        """

    def apply(self, add: Sequence[NATMapping] = (), remove: Sequence[NATMapping] = ()) -> None:
        d = self.backend.apply(list(add), list(remove))
        self.settle()
        self.successResultOf(d)

    def refused(
        self,
        exception: type[Exception],
        add: Sequence[NATMapping] = (),
        remove: Sequence[NATMapping] = (),
    ) -> None:
        """
        Assert that the change fails with C{exception} and changes nothing.
        """
        before = {wan: self.backend.mappings(wan) for wan in ("isp1", "isp2")}
        self.failureResultOf(self.backend.apply(list(add), list(remove)), exception)
        self.assertEqual({wan: self.backend.mappings(wan) for wan in ("isp1", "isp2")}, before)

    def test_interface(self) -> None:
        """
        The backend provides L{INATBackend}.
        """
        self.assertTrue(verifyObject(INATBackend, self.backend))

    def test_empty(self) -> None:
        """
        A new backend forwards nothing.
        """
        self.assertEqual(self.backend.mappings("isp1"), [])

    def test_add(self) -> None:
        """
        An added mapping is installed for its WAN only, and the Deferred
        fires with L{None}.
        """
        d = self.backend.apply([mapping()], [])
        self.settle()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.backend.mappings("isp1"), [mapping()])
        self.assertEqual(self.backend.mappings("isp2"), [])

    def test_remove(self) -> None:
        """
        A removed mapping stops forwarding; the others stay.
        """
        self.apply(add=[mapping(8080), mapping(8081)])
        self.apply(remove=[mapping(8080)])
        self.assertEqual(self.backend.mappings("isp1"), [mapping(8081)])

    def test_replace(self) -> None:
        """
        Removing a mapping and adding one with the same key in one change
        moves the forwarding to the new client.
        """
        self.apply(add=[mapping(client="192.168.1.10")])
        self.apply(add=[mapping(client="192.168.1.11")], remove=[mapping(client="192.168.1.10")])
        self.assertEqual(self.backend.mappings("isp1"), [mapping(client="192.168.1.11")])

    def test_disable(self) -> None:
        """
        A mapping can be replaced by its disabled version, and is listed as
        disabled.
        """
        self.apply(add=[mapping()])
        self.apply(add=[replace(mapping(), enabled=False)], remove=[mapping()])
        self.assertEqual(self.backend.mappings("isp1"), [replace(mapping(), enabled=False)])

    def test_samePortOnTwoWANs(self) -> None:
        """
        The same external port may forward to different clients on two WANs.
        """
        one = mapping(wan="isp1", client="192.168.1.10")
        two = mapping(wan="isp2", client="192.168.1.20")
        self.apply(add=[one, two])
        self.assertEqual(self.backend.mappings("isp1"), [one])
        self.assertEqual(self.backend.mappings("isp2"), [two])

    def test_protocolAndRemoteHostAreKeys(self) -> None:
        """
        TCP and UDP on one port, and a mapping restricted to one remote host
        next to the wildcard one, are separate mappings.
        """
        mappings = [
            mapping(protocol="TCP"),
            mapping(protocol="UDP"),
            mapping(remoteHost="198.51.100.7", client="192.168.1.30"),
        ]
        self.apply(add=mappings)
        self.assertEqual(len(self.backend.mappings("isp1")), 3)

    def test_duplicateRefused(self) -> None:
        """
        Adding a mapping whose key is installed fails, even with other
        values, and changes nothing.
        """
        self.apply(add=[mapping(client="192.168.1.10")])
        self.refused(MappingExists, add=[mapping(client="192.168.1.99")])

    def test_duplicateInOneChange(self) -> None:
        """
        One change adding the same key twice is refused as a whole.
        """
        self.refused(MappingExists, add=[mapping(8080), mapping(9000), mapping(8080)])

    def test_removeAbsentRefused(self) -> None:
        """
        Removing a mapping that is not installed fails, and the additions of
        the same change do not happen.
        """
        self.apply(add=[mapping(8080)])
        self.refused(MappingNotFound, add=[mapping(9000)], remove=[mapping(8081)])
        self.assertEqual(self.backend.mappings("isp1"), [mapping(8080)])

    def test_removeDifferentRefused(self) -> None:
        """
        Removing a mapping that is installed with other values (another
        client) fails: the caller's idea of the table is wrong.
        """
        self.apply(add=[mapping(client="192.168.1.10")])
        self.refused(MappingNotFound, remove=[mapping(client="192.168.1.11")])

    def test_removeTwiceRefused(self) -> None:
        """
        One change removing the same mapping twice is refused as a whole.
        """
        self.apply(add=[mapping(8080), mapping(8081)])
        self.refused(MappingNotFound, remove=[mapping(8081), mapping(8080), mapping(8080)])

    def test_allOrNothing(self) -> None:
        """
        When the last part of a change is refused, the earlier parts (a
        removal and additions) do not happen either.
        """
        self.apply(add=[mapping(8080), mapping(8081)])
        self.refused(
            MappingExists,
            add=[mapping(9000), mapping(9001), mapping(8081)],
            remove=[mapping(8080)],
        )

    def test_invalidRefused(self) -> None:
        """
        Values no kernel can program (unknown protocol, port 0 or above
        65535, a client that is not an IPv4 address) are refused, with the
        rest of the change.
        """
        for bad in [
            mapping(protocol="SCTP"),
            mapping(port=0),
            mapping(port=8080, internalPort=65536),
            mapping(client="printer.lan"),
            mapping(remoteHost="2001:db8::1"),
        ]:
            self.refused(InvalidMapping, add=[mapping(7000), bad])

    def test_ordered(self) -> None:
        """
        Mappings are listed by key (protocol, then external port, then
        remote host), whatever order they were added in.
        """
        added = [
            mapping(9000, "UDP"),
            mapping(80, "TCP", remoteHost="198.51.100.7"),
            mapping(443, "TCP"),
            mapping(80, "TCP"),
            mapping(10000, "TCP"),
        ]
        for m in added:
            self.apply(add=[m])
        self.assertEqual(
            [(m.protocol, m.externalPort, m.remoteHost) for m in self.backend.mappings("isp1")],
            [
                ("TCP", 80, ""),
                ("TCP", 80, "198.51.100.7"),
                ("TCP", 443, ""),
                ("TCP", 10000, ""),
                ("UDP", 9000, ""),
            ],
        )

    def test_listIsACopy(self) -> None:
        """
        Changing the returned list does not change what is installed.
        """
        self.apply(add=[mapping()])
        self.backend.mappings("isp1").clear()
        self.assertEqual(self.backend.mappings("isp1"), [mapping()])


class MemoryNATBackendTests(NATBackendBehaviourMixin, SynchronousTestCase):
    def makeBackend(self) -> INATBackend:
        backend = MemoryNATBackend()
        backend.startService()
        self.addCleanup(backend.stopService)
        return backend

    def test_keptOverRestart(self) -> None:
        """
        Stopping and starting the backend keeps the mappings, as the kernel
        keeps them with C{on_stop = "keep"}.
        """
        self.apply(add=[mapping()])
        self.backend.stopService()
        self.backend.startService()
        self.assertEqual(self.backend.mappings("isp1"), [mapping()])


class NFTablesNATBackendTests(NATBackendBehaviourMixin, SynchronousTestCase):
    """
    The same behaviour from the nftables backend, against a real kernel: each
    test makes a network namespace of its own, and the backend runs C{nft}
    there (C{ip netns exec}, its C{netns} parameter) through a synchronous
    runner, so the test process itself never changes namespace. After each
    test the kernel's map elements are exactly the enabled mappings.
    """

    def makeBackend(self) -> INATBackend:
        from tests.unit.test_nftables import kernelBackend

        backend, self.clock, self.kernel = kernelBackend(self)
        self.addCleanup(self.assertKernelMatches)
        return backend

    def settle(self) -> None:
        self.clock.advance(0)

    def assertKernelMatches(self) -> None:
        from gatewayd.nat.nftables import kernelElements

        installed = self.backend.mappings("isp1") + self.backend.mappings("isp2")
        self.assertEqual(self.kernel(), kernelElements(installed))
