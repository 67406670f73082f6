"""
Tests for L{gatewayd.nat.nftables}: the ruleset and element text, the
parsing of C{nft -j} output, and the backend's shell (batching, failures,
start, self-healing, stop) with a recording runner and a L{Clock}; the
C{Kernel*} cases run C{nft} for real in a network namespace they create.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from gatewayd.errors import ConfigError
from gatewayd.nat.memory import MappingExists
from gatewayd.nat.nftables import (
    LANBridge,
    NFTablesBackend,
    NFTablesFailed,
    ProcessResult,
    TableSettings,
    WANSettings,
    addressScript,
    bridgeProblems,
    changeScript,
    conntrackArguments,
    formatElement,
    hairpinAddresses,
    hairpinConntrackArguments,
    kernelElements,
    parseElements,
    readBridges,
    tableScript,
)
from tests.unit.test_nat import mapping

SETTINGS = TableSettings(
    (WANSettings("isp1", "eth1", 1), WANSettings("isp2", "eth2", 2, masquerade=False))
)

#: The same with C{[gateway] hairpin = true} and two LAN interfaces.
HAIRPIN = replace(SETTINGS, hairpin=True, lanInterfaces=("br-lan", "lan1"))

WAN1 = IPv4Address("203.0.113.2")
WAN1_NEW = IPv4Address("203.0.113.99")
WAN2 = IPv4Address("198.51.100.2")

LISTING = json.dumps(
    {
        "nftables": [
            {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"table": {"family": "inet", "name": "gatewayd", "handle": 4}},
            {
                "map": {
                    "family": "inet", "name": "dnat4", "table": "gatewayd",
                    "type": ["ifname", "inet_proto", "inet_service"], "handle": 5,
                    "map": "ipv4_addr . inet_service",
                    "elem": [
                        [{"concat": ["eth1", "tcp", 8080]}, {"concat": ["192.168.1.10", 80]}],
                        [{"concat": ["eth2", "udp", 9000]}, {"concat": ["192.168.1.20", 9000]}],
                    ],
                }
            },
            {
                "map": {
                    "family": "inet", "name": "dnat4narrow", "table": "gatewayd",
                    "type": ["ifname", "inet_proto", "ipv4_addr", "inet_service"], "handle": 6,
                    "map": "ipv4_addr . inet_service",
                    "elem": [
                        [{"concat": ["eth1", "tcp", "198.51.100.7", 8080]}, {"concat": ["192.168.1.30", 22]}]
                    ],
                }
            },
            {"map": {"family": "inet", "name": "wanmark", "table": "gatewayd", "type": "ifname",
                     "handle": 7, "map": "mark", "elem": [["eth1", 1]]}},
        ]
    }
)


class TextTests(SynchronousTestCase):
    """
    The nft text gatewayd writes and the JSON it reads.
    """

    def test_element(self) -> None:
        """
        A wildcard mapping is keyed by interface, protocol and port; a
        narrow one has the remote host before the port.
        """
        [(k, v)] = kernelElements([mapping(8080, internalPort=80)]).items()
        self.assertEqual(formatElement(k, v), '"eth1" . tcp . 8080 : 192.168.1.10 . 80')
        [(k, v)] = kernelElements([mapping(8080, "UDP", remoteHost="198.51.100.7")]).items()
        self.assertEqual(formatElement(k, v), '"eth1" . udp . 198.51.100.7 . 8080 : 192.168.1.10 . 8080')

    def test_disabledNotInKernel(self) -> None:
        """
        A disabled mapping has no element: it does not forward.
        """
        self.assertEqual(kernelElements([replace(mapping(), enabled=False)]), {})

    def test_ruleCountConstant(self) -> None:
        """
        The table's rules are the same whatever the number of mappings; only
        the map elements grow.
        """

        def rules(script: str) -> list[str]:
            return [
                line for line in script.splitlines()
                if line.startswith("\t\t") and not line.strip().startswith(("type", "elements", "flags", '"'))
            ]

        few = tableScript(SETTINGS, kernelElements([mapping(1000)]))
        many = tableScript(SETTINGS, kernelElements([mapping(p) for p in range(1000, 3000)]))
        self.assertEqual(rules(few), rules(many))
        self.assertEqual(len(rules(few)), 8)

    def test_forgetOutboundArguments(self) -> None:
        """
        The connections of a failed WAN are found by their reply
        destination, the WAN's address: masqueraded ones, not those that
        came in by it.
        """
        from ipaddress import IPv4Address

        from gatewayd.nat.nftables import outboundConntrackArguments

        self.assertEqual(
            outboundConntrackArguments(IPv4Address("203.0.113.2")),
            ["-D", "-f", "ipv4", "--reply-dst", "203.0.113.2"],
        )

    def test_table(self) -> None:
        """
        The script replaces the table atomically (add, delete, define), DNATs
        only traffic to the router, narrow mappings first, marks inbound
        connections per WAN (and copies the mark to their packets) and
        masquerades per WAN.
        """
        script = tableScript(SETTINGS, {})
        lines = script.splitlines()
        self.assertEqual(lines[:3], ["add table inet gatewayd", "delete table inet gatewayd", "table inet gatewayd {"])
        body = [line.strip() for line in lines]
        dnat = [line for line in body if line.startswith(("fib", "dnat"))]
        self.assertEqual(
            dnat,
            [
                "fib daddr type != local return",
                "dnat ip to iifname . meta l4proto . ip saddr . th dport map @dnat4narrow",
                "dnat ip to iifname . meta l4proto . th dport map @dnat4",
            ],
        )
        self.assertIn('elements = { "eth1" : 0x1,', body)
        self.assertIn('elements = { "eth1" }', body)  # isp2 does not masquerade
        self.assertIn("ct state new ct mark set iifname map @wanmark", body)
        # Both directions carry the WAN's mark, for the router's fwmark rules.
        self.assertIn("ct mark and 0xff00 != 0 meta mark set ct mark and 0xff00", body)
        # Connections leaving by a WAN stay with it.
        self.assertIn("ct mark and 0xff00 == 0 ct mark set oifname map @wanmark", body)
        self.assertIn("ct status dnat accept", body)
        self.assertIn("oifname @masq fib saddr type != local masquerade", body)
        self.assertNotIn("elements = {  }", script)

    def test_hairpinOff(self) -> None:
        """
        Without hairpin (the default) the table has nothing of it, whatever
        the WAN addresses: LAN packets to a WAN address are not forwarded.
        """
        script = tableScript(SETTINGS, kernelElements([mapping(8080)]), {"isp1": WAN1})
        for word in ("hairpin", "lanifs", "wanaddrs", str(WAN1)):
            self.assertNotIn(word, script)
        self.assertEqual(hairpinAddresses(SETTINGS, {"isp1": WAN1}), {})

    def test_hairpinTable(self) -> None:
        """
        With hairpin on, packets from the LAN interfaces to a WAN's address
        are DNAT'd through a pair of maps keyed by that address (holding
        the WAN's elements, narrow ones first), and hairpinned connections
        (DNAT'd, not from a WAN, to a WAN address) are masqueraded back into
        the LAN. A WAN without an address has no hairpin elements; the
        rules do not grow with the mappings.
        """
        elements = kernelElements([
            mapping(8080, internalPort=80),
            mapping(22, remoteHost="192.168.1.50", client="192.168.1.30"),
            mapping(9000, "UDP", wan="isp2"),
        ])
        script = tableScript(HAIRPIN, elements, {"isp1": WAN1})
        body = [line.strip() for line in script.splitlines()]
        dnat = [line for line in body if line.startswith(("fib", "dnat", "iifname"))]
        self.assertEqual(
            dnat,
            [
                "fib daddr type != local return",
                "iifname @lanifs dnat ip to ip daddr . meta l4proto . ip saddr . th dport map @hairpin4narrow",
                "iifname @lanifs dnat ip to ip daddr . meta l4proto . th dport map @hairpin4",
                "dnat ip to iifname . meta l4proto . ip saddr . th dport map @dnat4narrow",
                "dnat ip to iifname . meta l4proto . th dport map @dnat4",
            ],
        )
        self.assertIn(
            "oifname @lanifs ct status dnat ct mark and 0xff00 == 0 ct original ip daddr @wanaddrs masquerade",
            body,
        )
        self.assertIn('elements = { "br-lan",', body)
        self.assertIn("elements = { 203.0.113.2 }", body)
        self.assertIn("elements = { 203.0.113.2 . tcp . 8080 : 192.168.1.10 . 80 }", body)
        self.assertIn("elements = { 203.0.113.2 . tcp . 192.168.1.50 . 22 : 192.168.1.30 . 22 }", body)
        self.assertNotIn("9000 : 192.168.1.10 . 9000 }", "\n".join(b for b in body if "203." in b))
        # The WAN maps are as without hairpin.
        self.assertIn('elements = { "eth1" . tcp . 8080 : 192.168.1.10 . 80,', body)
        many = tableScript(HAIRPIN, kernelElements([mapping(p) for p in range(1000, 3000)]), {"isp1": WAN1})
        rules = lambda text: [line for line in text.splitlines() if "@" in line]  # noqa: E731
        self.assertEqual(rules(script), rules(many))
        self.assertEqual(len(rules(script)), len(rules(tableScript(SETTINGS, elements))) + 3)

    def test_hairpinAddresses(self) -> None:
        """
        Hairpin knows the WANs' addresses by interface; an address two WANs
        report belongs to the first, and a WAN without one is left out.
        """
        self.assertEqual(hairpinAddresses(HAIRPIN, {"isp1": WAN1, "isp2": WAN2}), {"eth1": WAN1, "eth2": WAN2})
        self.assertEqual(hairpinAddresses(HAIRPIN, {"isp2": WAN2}), {"eth2": WAN2})
        self.assertEqual(hairpinAddresses(HAIRPIN, {"isp1": WAN1, "isp2": WAN1}), {"eth1": WAN1})
        self.assertEqual(hairpinAddresses(HAIRPIN, {"isp9": WAN1}), {})

    def test_hairpinChange(self) -> None:
        """
        A change updates the hairpin elements of the changed mappings along
        with theirs, in the same transaction; a WAN without an address has
        none to update.
        """
        before = kernelElements([mapping(8080), mapping(22, remoteHost="198.51.100.7"), mapping(53, "UDP", wan="isp2")])
        after = kernelElements([mapping(8080, client="192.168.1.11"), mapping(443)])
        self.assertEqual(
            changeScript(before, after, {"eth1": WAN1}),
            'delete element inet gatewayd dnat4 { "eth1" . tcp . 8080, "eth2" . udp . 53 }\n'
            'delete element inet gatewayd dnat4narrow { "eth1" . tcp . 198.51.100.7 . 22 }\n'
            'delete element inet gatewayd hairpin4 { 203.0.113.2 . tcp . 8080 }\n'
            'delete element inet gatewayd hairpin4narrow { 203.0.113.2 . tcp . 198.51.100.7 . 22 }\n'
            'add element inet gatewayd dnat4 { "eth1" . tcp . 443 : 192.168.1.10 . 443, '
            '"eth1" . tcp . 8080 : 192.168.1.11 . 8080 }\n'
            'add element inet gatewayd hairpin4 { 203.0.113.2 . tcp . 443 : 192.168.1.10 . 443, '
            '203.0.113.2 . tcp . 8080 : 192.168.1.11 . 8080 }\n',
        )
        # Hairpin off (None) or no WAN address: the WAN maps only.
        plain = changeScript(before, after)
        self.assertEqual(changeScript(before, after, {}), plain)
        self.assertNotIn("hairpin", plain)

    def test_addressScript(self) -> None:
        """
        A WAN address change refills the hairpin maps and the address set
        in one transaction, keyed by the new address.
        """
        elements = kernelElements([mapping(8080), mapping(22, remoteHost="198.51.100.7"), mapping(53, "UDP", wan="isp2")])
        self.assertEqual(
            addressScript(elements, {"eth1": WAN1_NEW, "eth2": WAN2}),
            "flush set inet gatewayd wanaddrs\n"
            "flush map inet gatewayd hairpin4\n"
            "flush map inet gatewayd hairpin4narrow\n"
            "add element inet gatewayd wanaddrs { 198.51.100.2, 203.0.113.99 }\n"
            "add element inet gatewayd hairpin4 { 198.51.100.2 . udp . 53 : 192.168.1.10 . 53, "
            "203.0.113.99 . tcp . 8080 : 192.168.1.10 . 8080 }\n"
            "add element inet gatewayd hairpin4narrow { 203.0.113.99 . tcp . 198.51.100.7 . 22 : 192.168.1.10 . 22 }\n",
        )
        self.assertEqual(
            addressScript(elements, {}),
            "flush set inet gatewayd wanaddrs\n"
            "flush map inet gatewayd hairpin4\n"
            "flush map inet gatewayd hairpin4narrow\n",
        )

    def test_hairpinConntrack(self) -> None:
        """
        The hairpinned connections of a removed mapping are found by the
        WAN address they were sent to (they carry no WAN mark).
        """
        self.assertEqual(
            hairpinConntrackArguments(("eth1", "tcp", "", 8080), ("192.168.1.10", 80), WAN1),
            ["-D", "-p", "tcp", "--orig-dst", "203.0.113.2", "--orig-port-dst", "8080",
             "--reply-src", "192.168.1.10", "--reply-port-src", "80"],
        )

    def test_bridgeProblems(self) -> None:
        """
        With hairpin on, a LAN bridge whose IPv4 packets br_netfilter hands
        to the IPv4 hooks (by the namespace's sysctl or the bridge's own
        option) keeps the hosts behind its ports without hairpin_mode from
        their own mappings: one sentence per bridge says so, why, and what
        to set. Nothing without hairpin, without br_netfilter's switch, or
        when every port has hairpin_mode.
        """
        bridge = LANBridge(
            "br-lan", callIptables=True, bridgeCallIptables=False, ports=("eth3", "eth4")
        )
        self.assertEqual(
            bridgeProblems(HAIRPIN, [bridge]),
            ["Hairpin: LAN hosts behind eth3, eth4 of bridge br-lan cannot reach their own port "
             "mappings through a WAN address (other hosts' mappings work): with "
             "net.bridge.bridge-nf-call-iptables=1, br_netfilter hands the forwarded packet back to "
             "the bridge, which never sends a frame out of the port it came in by. To fix it, set "
             "net.bridge.bridge-nf-call-iptables=0 (gatewayd does not need br_netfilter), or set "
             "hairpin_mode on the ports that lead to a single host (never on a port to a switch)"],
        )
        [both] = bridgeProblems(HAIRPIN, [replace(bridge, bridgeCallIptables=True)])
        self.assertIn(
            "with net.bridge.bridge-nf-call-iptables=1 and the bridge option nf_call_iptables on "
            "br-lan, ", both,
        )
        self.assertIn(
            "set net.bridge.bridge-nf-call-iptables=0 and ip link set br-lan type bridge "
            "nf_call_iptables 0 (", both,
        )
        [own] = bridgeProblems(
            HAIRPIN, [replace(bridge, callIptables=False, bridgeCallIptables=True)]
        )
        self.assertIn("To fix it, ip link set br-lan type bridge nf_call_iptables 0 (", own)
        self.assertEqual(bridgeProblems(SETTINGS, [bridge]), [])
        self.assertEqual(bridgeProblems(HAIRPIN, [replace(bridge, callIptables=False)]), [])
        self.assertEqual(bridgeProblems(HAIRPIN, [replace(bridge, ports=())]), [])

    def test_readBridges(self) -> None:
        """
        The LAN interfaces that are bridges are read from sysfs with their
        ports lacking hairpin_mode, and br_netfilter's switches from
        procfs; the bridge's own option counts only with br_netfilter
        loaded. Other and missing interfaces are left out.
        """
        from twisted.python.filepath import FilePath

        sysfs = FilePath(self.mktemp())
        proc = FilePath(self.mktemp())
        for port, hairpin in (("eth3", b"0\n"), ("eth4", b"1\n"), ("eth5", b"0\n")):
            path = sysfs.preauthChild(f"br-lan/brif/{port}")
            path.makedirs()
            path.child("hairpin_mode").setContent(hairpin)
        sysfs.preauthChild("br-lan/bridge").makedirs()
        sysfs.preauthChild("br-lan/bridge/nf_call_iptables").setContent(b"1\n")
        sysfs.preauthChild("lan1").makedirs()
        self.assertEqual(
            readBridges(["br-lan", "lan1", "lan9", "../x"], sysfs, proc),
            [LANBridge("br-lan", False, bridgeCallIptables=False, ports=("eth3", "eth5"))],
        )
        proc.preauthChild("net/bridge").makedirs()
        proc.preauthChild("net/bridge/bridge-nf-call-iptables").setContent(b"1\n")
        self.assertEqual(
            readBridges(["br-lan"], sysfs, proc),
            [LANBridge("br-lan", True, bridgeCallIptables=True, ports=("eth3", "eth5"))],
        )

    def test_change(self) -> None:
        """
        A change deletes changed and removed elements, then adds new and
        changed ones, per map.
        """
        before = kernelElements([mapping(8080), mapping(9000), mapping(22, remoteHost="198.51.100.7")])
        after = kernelElements([mapping(8080, client="192.168.1.11"), mapping(9000), mapping(443)])
        self.assertEqual(
            changeScript(before, after),
            'delete element inet gatewayd dnat4 { "eth1" . tcp . 8080 }\n'
            'delete element inet gatewayd dnat4narrow { "eth1" . tcp . 198.51.100.7 . 22 }\n'
            'add element inet gatewayd dnat4 { "eth1" . tcp . 443 : 192.168.1.10 . 443, '
            '"eth1" . tcp . 8080 : 192.168.1.11 . 8080 }\n',
        )
        self.assertEqual(changeScript(before, before), "")

    def test_parse(self) -> None:
        """
        The elements of C{nft -j list table inet gatewayd} are read back
        from both maps; other maps are ignored.
        """
        self.assertEqual(
            parseElements(LISTING),
            {
                ("eth1", "tcp", "", 8080): ("192.168.1.10", 80),
                ("eth2", "udp", "", 9000): ("192.168.1.20", 9000),
                ("eth1", "tcp", "198.51.100.7", 8080): ("192.168.1.30", 22),
            },
        )

    def test_parseNumericProtocol(self) -> None:
        """
        A protocol listed as a number is read as its name.
        """
        listing = LISTING.replace('"tcp", 8080]', '6, 8080]')
        self.assertIn(("eth1", "tcp", "", 8080), parseElements(listing))

    def test_badInterfaceName(self) -> None:
        """
        An interface name that nft syntax cannot carry safely is refused.
        """
        from gatewayd.nat.memory import InvalidMapping

        with self.assertRaises(InvalidMapping):
            formatElement(('eth1" ; flush ruleset', "tcp", "", 1), ("192.168.1.10", 1))

    def test_conntrack(self) -> None:
        """
        Connections of a removed mapping are found by the external port,
        the DNAT'd reply source, the remote host and the WAN's mark.
        """
        self.assertEqual(
            conntrackArguments(("eth1", "udp", "198.51.100.7", 9000), ("192.168.1.10", 9001), 1),
            ["-D", "-p", "udp", "--orig-port-dst", "9000", "--reply-src", "192.168.1.10",
             "--reply-port-src", "9001", "--orig-src", "198.51.100.7", "--mark", "1"],
        )


class FakeConfig:
    class gateway:
        onStop = "clean"


class RecordingRunner:
    """
    Records the commands; answers with C{answer(argv, stdin)}, at once or
    when the test fires C{pending} (C{hold}: L{True} for every command, or
    the set of command names to hold).
    """

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str]] = []
        self.answer: Callable[[list[str], str], ProcessResult] = lambda argv, stdin: ProcessResult(0, b"{}", b"")
        self.hold: bool | set[str] = False
        self.pending: list[Deferred[ProcessResult]] = []

    def __call__(self, argv: Sequence[str], stdin: bytes = b"") -> Deferred[ProcessResult]:
        self.calls.append((list(argv), stdin.decode()))
        result = self.answer(list(argv), stdin.decode())
        if self.hold is True or (self.hold and argv[0] in self.hold):
            d: Deferred[ProcessResult] = Deferred()
            self.pending.append(d)
            d.addCallback(lambda _: result)
            return d
        return succeed(result)

    def scripts(self) -> list[str]:
        return [stdin for argv, stdin in self.calls if argv[-2:] == ["-f", "-"]]


def capable(path: Any) -> str:
    path.setContent(b"Name:\tx\nCapEff:\t000001ffffffffff\n")
    return path.path


class BackendTests(SynchronousTestCase):
    """
    The backend's shell, with a recording runner.
    """

    def setUp(self) -> None:
        from twisted.python.filepath import FilePath

        self.clock = Clock()
        self.runner = RecordingRunner()
        self.backend = NFTablesBackend(
            self.clock, FakeConfig(), runner=self.runner, settings=SETTINGS,
            procStatus=capable(FilePath(self.mktemp())),
        )

    def start(self) -> None:
        self.backend.startService()
        self.clock.advance(0)
        self.runner.calls.clear()

    def test_noCapability(self) -> None:
        """
        Without CAP_NET_ADMIN the backend cannot be built, and the one-line
        error names the alternative.
        """
        from twisted.python.filepath import FilePath

        status = FilePath(self.mktemp())
        status.setContent(b"CapEff:\t0000000000000000\n")
        with self.assertRaises(ConfigError) as e:
            NFTablesBackend(self.clock, FakeConfig(), runner=self.runner, settings=SETTINGS, procStatus=status.path)
        self.assertEqual(
            str(e.exception),
            'gateway.nat: the nftables backend needs CAP_NET_ADMIN (run gatewayd as root or '
            'with that capability), or set nat = "memory"',
        )

    def test_startRebuilds(self) -> None:
        """
        Starting replaces the table with one holding what was asked in the
        same turn (the WANs' restored mappings): leftovers of an earlier run
        are dropped, and their connections deleted.
        """
        self.runner.answer = lambda argv, stdin: ProcessResult(0, LISTING.encode(), b"")
        self.backend.startService()
        d = self.backend.apply([mapping(8080, internalPort=80)], [])
        self.assertEqual(self.runner.calls, [])
        self.clock.advance(0)
        self.successResultOf(d)
        [script] = self.runner.scripts()
        self.assertTrue(script.startswith("add table inet gatewayd\ndelete table inet gatewayd\n"))
        self.assertIn('"eth1" . tcp . 8080 : 192.168.1.10 . 80', script)
        self.assertNotIn("9000", script)
        conntrack = [argv for argv, _ in self.runner.calls if argv[0] == "conntrack"]
        self.assertEqual(
            conntrack,
            [["conntrack"] + conntrackArguments(("eth1", "tcp", "198.51.100.7", 8080), ("192.168.1.30", 22), 1),
             ["conntrack"] + conntrackArguments(("eth2", "udp", "", 9000), ("192.168.1.20", 9000), 2)],
        )

    def test_coalesced(self) -> None:
        """
        Changes of one reactor turn go to the kernel as one transaction, and
        their Deferreds fire once it succeeded.
        """
        self.start()
        self.runner.hold = True
        one = self.backend.apply([mapping(8080)], [])
        two = self.backend.apply([mapping(9000)], [])
        self.clock.advance(0)
        self.assertNoResult(one)
        self.assertEqual(
            self.runner.scripts(),
            ['add element inet gatewayd dnat4 { "eth1" . tcp . 8080 : 192.168.1.10 . 8080, '
             '"eth1" . tcp . 9000 : 192.168.1.10 . 9000 }\n'],
        )
        self.assertEqual(self.backend.mappings("isp1"), [])
        self.runner.pending.pop().callback(None)
        self.successResultOf(one)
        self.successResultOf(two)
        self.assertEqual(self.backend.mappings("isp1"), [mapping(8080), mapping(9000)])

    def test_failure(self) -> None:
        """
        When nft refuses the transaction, every change in it fails with
        nft's message, nothing is installed, and the error is logged.
        """
        self.start()
        self.runner.answer = lambda argv, stdin: ProcessResult(1, b"", b"Error: Could not process rule: No such file or directory")
        one = self.backend.apply([mapping(8080)], [])
        two = self.backend.apply([mapping(9000)], [])
        with capturedLogs() as events:
            self.clock.advance(0)
        for d in (one, two):
            failure = self.failureResultOf(d, NFTablesFailed)
            self.assertIn("No such file or directory", str(failure.value))
        self.assertEqual(self.backend.mappings("isp1"), [])
        self.assertTrue(any("No such file" in str(e.get("why", "")) for e in events))
        # The key is free again.
        self.runner.answer = lambda argv, stdin: ProcessResult(0, b"", b"")
        d = self.backend.apply([mapping(8080)], [])
        self.clock.advance(0)
        self.successResultOf(d)

    def test_refusedAtOnce(self) -> None:
        """
        A change that conflicts with one still in flight is refused at once.
        """
        self.start()
        self.runner.hold = True
        self.backend.apply([mapping(8080)], [])
        self.failureResultOf(self.backend.apply([mapping(8080, client="192.168.1.99")], []), MappingExists)

    def test_removalDeletesConnections(self) -> None:
        """
        Removing a mapping deletes its conntrack entries before the change
        is acknowledged.
        """
        self.start()
        self.backend.apply([mapping(8080, "UDP", internalPort=9)], [])
        self.clock.advance(0)
        self.runner.calls.clear()
        d = self.backend.apply([], [mapping(8080, "UDP", internalPort=9)])
        self.clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(
            [argv for argv, _ in self.runner.calls],
            [["nft", "-f", "-"],
             ["conntrack", "-D", "-p", "udp", "--orig-port-dst", "8080", "--reply-src",
              "192.168.1.10", "--reply-port-src", "9", "--mark", "1"]],
        )

    def test_connectionsDeletedBeside(self) -> None:
        """
        A removal is answered once its connections are deleted, but the next
        change does not wait for those conntrack runs: they run beside the
        queue, one at a time; a clean stop waits for them.
        """
        self.start()
        self.backend.apply([mapping(8080), mapping(8081), mapping(8082)], [])
        self.clock.advance(0)
        self.runner.calls.clear()
        self.runner.hold = {"conntrack"}
        first = self.backend.apply([], [mapping(8080)])
        self.clock.advance(0)
        second = self.backend.apply([], [mapping(8081)])
        self.clock.advance(0)
        added = self.backend.apply([mapping(9000)], [])
        self.clock.advance(0)
        self.successResultOf(added)
        self.assertNoResult(first)
        self.assertNoResult(second)
        commands = [argv[0] for argv, _ in self.runner.calls]
        self.assertEqual(commands, ["nft", "conntrack", "nft", "nft"])
        stopped = self.backend.stopService()
        self.clock.advance(0)
        self.assertNoResult(stopped)
        self.runner.pending.pop(0).callback(None)
        self.successResultOf(first)
        self.assertNoResult(second)
        self.assertEqual(
            [argv[0] for argv, _ in self.runner.calls][4:], ["conntrack"]
        )
        self.assertIn("8081", self.runner.calls[4][0])
        self.assertNoResult(stopped)
        self.runner.hold = False
        self.runner.pending.pop(0).callback(None)
        self.clock.advance(0)
        self.successResultOf(second)
        self.successResultOf(stopped)

    def test_forwardingAgainKeepsConnections(self) -> None:
        """
        A mapping removed and added back before its connections' turn keeps
        its connections.
        """
        self.start()
        self.backend.apply([mapping(8080), mapping(8081)], [])
        self.clock.advance(0)
        self.runner.calls.clear()
        self.runner.hold = {"conntrack"}
        self.backend.apply([], [mapping(8080)])
        self.clock.advance(0)
        self.backend.apply([], [mapping(8081)])
        self.clock.advance(0)
        self.backend.apply([mapping(8081)], [])
        self.clock.advance(0)
        self.runner.pending.pop(0).callback(None)
        self.clock.advance(0)
        conntrack = [argv for argv, _ in self.runner.calls if argv[0] == "conntrack"]
        self.assertEqual(len(conntrack), 1)
        self.assertIn("8080", conntrack[0])
        self.assertEqual(self.runner.pending, [])

    def test_healsMissingTable(self) -> None:
        """
        Every two seconds the table is checked; when it is missing it is
        rebuilt with every mapping, with a log line.
        """
        self.start()
        self.backend.apply([mapping(8080)], [])
        self.clock.advance(0)
        self.runner.calls.clear()
        self.runner.answer = lambda argv, stdin: ProcessResult(1, b"", b"Error: No such file or directory")
        self.clock.advance(1.9)
        self.assertEqual(self.runner.calls, [])
        answers = iter([ProcessResult(1, b"", b"Error: No such file or directory")])
        self.runner.answer = lambda argv, stdin: next(answers, ProcessResult(0, b"{}", b""))
        with capturedLogs() as events:
            self.clock.advance(0.1)
            self.clock.advance(0)
        [script] = self.runner.scripts()
        self.assertIn('"eth1" . tcp . 8080 : 192.168.1.10 . 8080', script)
        self.assertIn(
            "nftables table inet gatewayd was missing; restored 1 mappings",
            [e["log_format"].format(**e) for e in events],
        )

    def test_healsChangedTable(self) -> None:
        """
        A table that no longer lists as it did after the last rebuild (say,
        another tool flushed its chains) is rebuilt.
        """
        self.start()
        self.runner.calls.clear()
        self.runner.answer = lambda argv, stdin: ProcessResult(0, b'{"changed": 1}', b"")
        self.clock.advance(2)
        self.clock.advance(0)
        self.assertEqual(len(self.runner.scripts()), 1)
        self.runner.calls.clear()
        self.clock.advance(2)
        self.clock.advance(0)
        self.assertEqual(self.runner.scripts(), [])

    def test_stopClean(self) -> None:
        """
        With C{on_stop = "clean"} stopping deletes the table and the
        mappings' connections, and leaves no timer behind.
        """
        self.start()
        self.backend.apply([mapping(8080)], [])
        self.clock.advance(0)
        self.runner.calls.clear()
        self.successResultOf(self.backend.stopService())
        self.assertEqual(self.runner.scripts(), ["delete table inet gatewayd\n"])
        self.assertEqual([argv[0] for argv, _ in self.runner.calls], ["nft", "conntrack"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopKeep(self) -> None:
        """
        With C{on_stop = "keep"} stopping leaves the kernel alone.
        """
        self.backend._onStop = "keep"
        self.start()
        self.successResultOf(self.backend.stopService())
        self.assertEqual(self.runner.calls, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class HairpinBackendTests(SynchronousTestCase):
    """
    The backend follows the WANs' addresses for hairpin.
    """

    def setUp(self) -> None:
        from twisted.python.filepath import FilePath

        self.clock = Clock()
        self.runner = RecordingRunner()
        self.bridges: list[LANBridge] = []
        self.asked: list[Sequence[str]] = []

        def bridges(interfaces: Sequence[str]) -> list[LANBridge]:
            self.asked.append(interfaces)
            return self.bridges

        self.backend = NFTablesBackend(
            self.clock, FakeConfig(), runner=self.runner, settings=HAIRPIN,
            procStatus=capable(FilePath(self.mktemp())), bridges=bridges,
        )

    def start(self) -> None:
        self.backend.startService()
        self.clock.advance(0)

    def test_bridgeWarning(self) -> None:
        """
        At start the backend looks at the LAN interfaces and warns once
        per LAN bridge whose hosts cannot reach their own mappings; with
        nothing wrong it says nothing of bridges.
        """
        self.bridges = [LANBridge("br-lan", True, False, ("port0",))]
        with capturedLogs() as events:
            self.start()
        self.assertEqual(self.asked, [("br-lan", "lan1")])
        warnings = [e["problem"] for e in events if "problem" in e]
        self.assertEqual(warnings, bridgeProblems(HAIRPIN, self.bridges))
        self.successResultOf(self.backend.stopService())
        self.bridges = [LANBridge("br-lan", False, False, ("port0",))]
        with capturedLogs() as events:
            self.start()
        self.assertEqual([e for e in events if "problem" in e], [])

    def test_noBridgeCheckWithoutHairpin(self) -> None:
        """
        With hairpin off the LAN interfaces are not looked at.
        """
        from twisted.python.filepath import FilePath

        def bridges(interfaces: Sequence[str]) -> list[LANBridge]:
            self.asked.append(interfaces)
            return [LANBridge("br-lan", True, False, ("port0",))]

        backend = NFTablesBackend(
            self.clock, FakeConfig(), runner=self.runner, settings=SETTINGS,
            procStatus=capable(FilePath(self.mktemp())), bridges=bridges,
        )
        with capturedLogs() as events:
            backend.startService()
            self.clock.advance(0)
        self.assertEqual(self.asked, [])
        self.assertEqual([e for e in events if "problem" in e], [])

    def test_settingsFromConfig(self) -> None:
        """
        C{[gateway] hairpin} and C{[lan] interfaces} reach the table's
        settings; hairpin is off by default.
        """
        from gatewayd.config import GatewayConfig
        from gatewayd.nat.nftables import settingsFromConfig

        class Config:
            gateway = GatewayConfig(hairpin=True)

            class lan:
                interfaces = ["br-lan"]

            wans = ()

        settings = settingsFromConfig(Config)
        self.assertEqual((settings.hairpin, settings.lanInterfaces), (True, ("br-lan",)))
        Config.gateway = GatewayConfig()
        self.assertFalse(settingsFromConfig(Config).hairpin)

    def test_addressBeforeStart(self) -> None:
        """
        An address learnt before the start is in the table the start
        installs, with no transaction of its own.
        """
        self.backend.setWANAddress("isp1", WAN1)
        self.backend.apply([mapping(8080)], [])
        self.start()
        [script] = self.runner.scripts()
        self.assertIn("203.0.113.2 . tcp . 8080 : 192.168.1.10 . 8080", script)
        self.assertIn("elements = { 203.0.113.2 }", script)

    def test_addressChange(self) -> None:
        """
        A WAN's new address refills the hairpin maps in a transaction of its
        own; the same address again, or another WAN losing an address it
        did not have, changes nothing; later mapping changes use the new
        address.
        """
        self.backend.setWANAddress("isp1", WAN1)
        self.start()
        self.backend.apply([mapping(8080)], [])
        self.clock.advance(0)
        self.runner.calls.clear()
        self.backend.setWANAddress("isp1", WAN1_NEW)
        self.backend.setWANAddress("isp1", WAN1_NEW)
        self.backend.setWANAddress("isp2", None)
        self.clock.advance(0)
        self.assertEqual(
            self.runner.scripts(),
            ["flush set inet gatewayd wanaddrs\n"
             "flush map inet gatewayd hairpin4\n"
             "flush map inet gatewayd hairpin4narrow\n"
             "add element inet gatewayd wanaddrs { 203.0.113.99 }\n"
             "add element inet gatewayd hairpin4 { 203.0.113.99 . tcp . 8080 : 192.168.1.10 . 8080 }\n"],
        )
        self.runner.calls.clear()
        self.backend.setWANAddress("isp1", WAN1_NEW)
        self.clock.advance(0)
        self.assertEqual(self.runner.calls, [])
        self.backend.apply([mapping(9000)], [])
        self.clock.advance(0)
        [script] = self.runner.scripts()
        self.assertIn("add element inet gatewayd hairpin4 { 203.0.113.99 . tcp . 9000 : 192.168.1.10 . 9000 }", script)
        # Losing the address empties the hairpin maps.
        self.runner.calls.clear()
        self.backend.setWANAddress("isp1", None)
        self.clock.advance(0)
        [script] = self.runner.scripts()
        self.assertNotIn("add element", script)

    def test_addressRefused(self) -> None:
        """
        If nft refuses the new addresses, the error is logged and the table
        is rebuilt with them.
        """
        self.start()
        self.runner.calls.clear()
        answers = iter([ProcessResult(1, b"", b"Error: No such file or directory")])
        self.runner.answer = lambda argv, stdin: next(answers, ProcessResult(0, b"{}", b""))
        with capturedLogs() as events:
            self.backend.setWANAddress("isp2", WAN2)
            self.clock.advance(0)
        scripts = self.runner.scripts()
        self.assertEqual(len(scripts), 2)
        self.assertTrue(scripts[1].startswith("add table inet gatewayd\n"))
        self.assertIn("elements = { 198.51.100.2 }", scripts[1])
        messages = [e["log_format"].format(**e) for e in events]
        self.assertIn("nftables refused the hairpin addresses: Error: No such file or directory", messages)
        self.assertIn(
            "nftables table inet gatewayd was out of step with the WAN addresses; restored 0 mappings", messages
        )

    def test_hairpinOffIgnoresAddresses(self) -> None:
        """
        With hairpin off an address change runs nothing.
        """
        from twisted.python.filepath import FilePath

        backend = NFTablesBackend(
            self.clock, FakeConfig(), runner=self.runner, settings=SETTINGS,
            procStatus=capable(FilePath(self.mktemp())),
        )
        backend.startService()
        self.clock.advance(0)
        self.runner.calls.clear()
        backend.setWANAddress("isp1", WAN1)
        self.clock.advance(0)
        self.assertEqual(self.runner.calls, [])

    def test_removalDeletesHairpinnedConnections(self) -> None:
        """
        Removing a mapping also deletes the connections hairpinned through
        its WAN's address.
        """
        self.backend.setWANAddress("isp1", WAN1)
        self.start()
        self.backend.apply([mapping(8080, internalPort=80)], [])
        self.clock.advance(0)
        self.runner.calls.clear()
        self.backend.apply([], [mapping(8080, internalPort=80)])
        self.clock.advance(0)
        self.assertEqual(
            [argv for argv, _ in self.runner.calls if argv[0] == "conntrack"],
            [["conntrack"] + conntrackArguments(("eth1", "tcp", "", 8080), ("192.168.1.10", 80), 1),
             ["conntrack"] + hairpinConntrackArguments(("eth1", "tcp", "", 8080), ("192.168.1.10", 80), WAN1)],
        )

    def test_memoryBackend(self) -> None:
        """
        The memory backend remembers the addresses and forwards nothing.
        """
        from gatewayd.nat.memory import MemoryNATBackend

        memory = MemoryNATBackend()
        memory.setWANAddress("isp1", WAN1)
        memory.setWANAddress("isp2", WAN2)
        memory.setWANAddress("isp2", None)
        self.assertEqual(memory.addresses, {"isp1": WAN1})


def kernelBackend(
    case: SynchronousTestCase, onStop: str = "clean", settings: TableSettings = SETTINGS
) -> tuple[NFTablesBackend, Clock, Callable[[], dict]]:
    """
    A started backend programming a network namespace made for C{case}
    (removed at cleanup), through a synchronous runner and a L{Clock}.

    @return: the backend, its clock, and a function reading the kernel's
        map elements.
    """
    if os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None:
        if os.environ.get("GATEWAYD_INTEGRATION") == "required":
            raise AssertionError("kernel NAT tests need root, ip and nft")
        raise SkipTest("kernel NAT tests need root, ip and nft")
    netns = "gwdu" + secrets.token_hex(3)
    subprocess.run(["ip", "netns", "add", netns], check=True, timeout=10)
    case.addCleanup(subprocess.run, ["ip", "netns", "del", netns], timeout=10)

    def run(argv: Sequence[str], stdin: bytes = b"") -> Deferred[ProcessResult]:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, timeout=30)
        return succeed(ProcessResult(done.returncode, done.stdout, done.stderr))

    class Config:
        class gateway:
            pass

    Config.gateway.onStop = onStop  # type: ignore[attr-defined]
    clock = Clock()
    backend = NFTablesBackend(clock, Config(), netns=netns, runner=run, settings=settings)
    backend.startService()
    clock.advance(0)
    case.addCleanup(lambda: case.successResultOf(backend.stopService()))

    def kernel() -> dict:
        listing = subprocess.run(
            ["ip", "netns", "exec", netns, "nft", "-j", "list", "table", "inet", "gatewayd"],
            capture_output=True, timeout=10, check=True,
        )
        return parseElements(listing.stdout)

    backend.netns = netns  # type: ignore[attr-defined]
    return backend, clock, kernel


class KernelTests(SynchronousTestCase):
    """
    The backend against nftables in a namespace of the test's own.
    """

    def nft(self, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.backend.netns, "nft", *argv],  # type: ignore[attr-defined]
            input=stdin, capture_output=True, text=True, timeout=10,
        )

    def setUp(self) -> None:
        self.backend, self.clock, self.kernel = kernelBackend(self)

    def apply(self, add: list, remove: list) -> None:
        d = self.backend.apply(add, remove)
        self.clock.advance(0)
        self.successResultOf(d)

    def test_flushHealed(self) -> None:
        """
        After C{nft flush ruleset} the next check (within two seconds)
        restores the table with every mapping.
        """
        self.apply([mapping(8080), mapping(9000, "UDP", wan="isp2")], [])
        self.assertEqual(self.nft("flush", "ruleset").returncode, 0)
        self.assertNotEqual(self.nft("list", "table", "inet", "gatewayd").returncode, 0)
        self.clock.advance(2)
        self.clock.advance(0)
        self.assertEqual(self.kernel(), kernelElements([mapping(8080), mapping(9000, "UDP", wan="isp2")]))

    def test_chainFlushHealed(self) -> None:
        """
        Flushing only the table's rules is noticed as a change and healed.
        """
        self.apply([mapping(8080)], [])
        self.assertEqual(self.nft("flush", "chain", "inet", "gatewayd", "prerouting").returncode, 0)
        self.clock.advance(2)
        self.clock.advance(0)
        listing = self.nft("list", "chain", "inet", "gatewayd", "prerouting").stdout
        self.assertIn("dnat ip to iifname . meta l4proto . th dport map @dnat4", listing)

    def test_restartReconciles(self) -> None:
        """
        A new backend (as after C{kill -9}) finds the earlier table and
        replaces it with exactly what it is given in its first turn.
        """
        self.apply([mapping(8080), mapping(8081)], [])
        self.backend._onStop = "keep"
        self.successResultOf(self.backend.stopService())
        run = self.backend._run
        again = NFTablesBackend(self.clock, FakeConfig(), netns=self.backend.netns, runner=run, settings=SETTINGS)  # type: ignore[attr-defined]
        again.startService()
        d = again.apply([mapping(8081, client="192.168.1.11"), mapping(9000)], [])
        self.clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(self.kernel(), kernelElements([mapping(8081, client="192.168.1.11"), mapping(9000)]))
        self.successResultOf(again.stopService())
        self.assertNotEqual(self.nft("list", "table", "inet", "gatewayd").returncode, 0)
        self.backend._onStop = "clean"

    def test_kernelRefusal(self) -> None:
        """
        A transaction the kernel refuses (an element deleted behind our
        back) fails the change with nft's message and changes nothing.
        """
        self.apply([mapping(8080), mapping(8081)], [])
        self.assertEqual(
            self.nft("delete", "element", "inet", "gatewayd", "dnat4", '{ "eth1" . tcp . 8080 }').returncode, 0
        )
        d = self.backend.apply([mapping(9000)], [mapping(8080)])
        self.clock.advance(0)
        self.assertIn("No such file or directory", str(self.failureResultOf(d, NFTablesFailed).value))
        self.assertEqual(self.backend.mappings("isp1"), [mapping(8080), mapping(8081)])
        self.assertEqual(self.kernel(), kernelElements([mapping(8081)]))
        # Put it back so that the cleanup check agrees.
        self.apply([], [mapping(8081)])


class HairpinKernelTests(SynchronousTestCase):
    """
    The hairpin ruleset, changes and address updates, against nftables in
    a namespace of the test's own.
    """

    def setUp(self) -> None:
        self.backend, self.clock, self.kernel = kernelBackend(self, settings=HAIRPIN)

    def listMap(self, name: str) -> str:
        return subprocess.run(
            ["ip", "netns", "exec", self.backend.netns, "nft", "list", "map", "inet", "gatewayd", name],  # type: ignore[attr-defined]
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout

    def test_hairpin(self) -> None:
        """
        The kernel takes the hairpin table, mapping changes with hairpin
        elements, and an address change; the rest of the table is
        untouched by the address change (no rebuild).
        """
        d = self.backend.apply([mapping(8080), mapping(22, remoteHost="198.51.100.7")], [])
        self.backend.setWANAddress("isp1", WAN1)
        self.clock.advance(0)
        self.successResultOf(d)
        self.assertIn("203.0.113.2 . tcp . 8080 : 192.168.1.10 . 8080", self.listMap("hairpin4"))
        self.assertIn("203.0.113.2 . tcp . 198.51.100.7 . 22 : 192.168.1.10 . 22", self.listMap("hairpin4narrow"))
        fingerprint = self.backend._fingerprint
        self.backend.setWANAddress("isp1", WAN1_NEW)
        self.backend.setWANAddress("isp2", WAN2)
        d = self.backend.apply([mapping(53, "UDP", wan="isp2")], [mapping(22, remoteHost="198.51.100.7")])
        self.clock.advance(0)
        self.successResultOf(d)
        hairpin4 = self.listMap("hairpin4")
        self.assertIn("203.0.113.99 . tcp . 8080 : 192.168.1.10 . 8080", hairpin4)
        self.assertIn("198.51.100.2 . udp . 53 : 192.168.1.10 . 53", hairpin4)
        self.assertNotIn("203.0.113.2 ", hairpin4)
        self.assertNotIn("elements", self.listMap("hairpin4narrow"))
        self.assertIn("198.51.100.2, 203.0.113.99", subprocess.run(
            ["ip", "netns", "exec", self.backend.netns, "nft", "list", "set", "inet", "gatewayd", "wanaddrs"],  # type: ignore[attr-defined]
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout)
        self.assertEqual(self.kernel(), kernelElements([mapping(8080), mapping(53, "UDP", wan="isp2")]))
        # The periodic check finds the table as installed: no rebuild.
        with capturedLogs() as events:
            self.clock.advance(2)
            self.clock.advance(0)
        self.assertEqual([e for e in events if "restored" in e.get("log_format", "")], [])
        self.assertEqual(self.backend._fingerprint, fingerprint)
