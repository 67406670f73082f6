# -*- test-case-name: tests.unit.test_nftables,tests.unit.test_nat -*-
"""
Port forwardings in the kernel: one nftables table, C{inet gatewayd}, that
gatewayd creates, owns and rebuilds, and no other.

Mappings are elements of two maps (wildcard and narrow RemoteHost), so the
rule count and the per-packet cost do not grow with their number. Every
change is one C{nft -f -} transaction run through C{reactor.spawnProcess};
changes arriving in the same reactor turn share one. The table is replaced
as a whole at start (which reconciles what an earlier run left behind) and
whenever the periodic check finds it missing or changed.

The pure parts (ruleset and element text, C{nft -j} parsing, conntrack
arguments) are module functions; L{NFTablesBackend} is the thin shell that
runs them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any, Callable, Iterable, Mapping, Sequence

from zope.interface import implementer

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from gatewayd.config import MARK_MASK
from gatewayd.errors import ConfigError
from gatewayd.interfaces import INATBackend, NATMapping
from gatewayd.nat import libnftables
from gatewayd.nat.memory import InvalidMapping, NATError, describe, planChange

TABLE = "gatewayd"
FAMILY = "inet"

#: Seconds between two checks that the table is still ours.
CHECK_INTERVAL = 2.0

#: Seconds an C{nft} or C{conntrack} run may take before it is killed.
PROCESS_TIMEOUT = 30.0

#: CAP_NET_ADMIN's bit in C{CapEff}.
CAP_NET_ADMIN = 12

NO_CAPABILITY = (
    "the nftables backend needs CAP_NET_ADMIN (run gatewayd as root or with that "
    'capability), or set nat = "memory"'
)

_IFNAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,15}$")

Key = tuple[str, str, str, int]
"""A kernel element's key: (interface, protocol, remote host or "", external port)."""

Value = tuple[str, int]
"""A kernel element's value: (internal client, internal port)."""


class NFTablesFailed(NATError):
    """
    C{nft} refused a transaction (or could not run); the kernel is unchanged.
    """


@dataclass(frozen=True)
class WANSettings:
    """
    What the table needs to know of one WAN.

    @ivar name: the WAN's name.
    @ivar interface: its interface.
    @ivar mark: the conntrack mark of connections coming in through it.
    @ivar masquerade: whether LAN traffic leaving by it is masqueraded.
    """

    name: str
    interface: str
    mark: int
    masquerade: bool = True


@dataclass(frozen=True)
class TableSettings:
    """
    Everything in the table but the mappings.

    @ivar wans: the WANs.
    @ivar hairpin: whether LAN hosts reach the mappings through the WAN
        addresses (C{[gateway] hairpin}).
    @ivar lanInterfaces: the LAN interfaces (C{[lan] interfaces}): hairpin
        traffic comes in and goes out by them.
    """

    wans: tuple[WANSettings, ...]
    hairpin: bool = False
    lanInterfaces: tuple[str, ...] = ()


def settingsFromConfig(config: Any) -> TableSettings:
    """
    @return: the table's settings from a L{gatewayd.config.Config} (a
        WAN's mark is its C{mark}: by default its 1-based position).
    """
    wans = tuple(
        WANSettings(
            name=wan.name,
            interface=wan.interface,
            mark=wan.mark,
            masquerade=bool(wan.masquerade),
        )
        for wan in config.wans
    )
    gateway = getattr(config, "gateway", None)
    lan = getattr(config, "lan", None)
    return TableSettings(
        wans=wans,
        hairpin=bool(getattr(gateway, "hairpin", False)),
        lanInterfaces=tuple(getattr(lan, "interfaces", ())),
    )


@dataclass(frozen=True)
class LANBridge:
    """
    A LAN interface that is a bridge, as far as hairpin cares.

    @ivar name: the bridge.
    @ivar callIptables: whether C{net.bridge.bridge-nf-call-iptables} is 1
        in gatewayd's network namespace (br_netfilter is loaded and hands
        the bridge's IPv4 packets to the IPv4 hooks, this table's too).
    @ivar bridgeCallIptables: whether the bridge's own C{nf_call_iptables}
        option does the same (it counts only with br_netfilter loaded).
    @ivar ports: the bridge's ports without C{hairpin_mode}.
    """

    name: str
    callIptables: bool
    bridgeCallIptables: bool
    ports: tuple[str, ...]


def bridgeProblems(settings: TableSettings, bridges: Iterable[LANBridge]) -> list[str]:
    """
    Pure: why LAN hosts cannot reach their own mappings through a WAN
    address, one sentence per LAN bridge (none with hairpin off).

    With br_netfilter on, a LAN packet passes this table's prerouting
    chain while the bridge still holds it; when the DNAT'd destination is
    routed back out of the same bridge, br_netfilter gives the packet back
    to the bridge (it never reaches the routing code), and a bridge never
    sends a frame out of the port it came in by unless that port has
    C{hairpin_mode}. Another host's mapping is behind another port, so it
    works; a host's own is behind its own port, so it is dropped.
    """
    if not settings.hairpin:
        return []
    problems = []
    for bridge in bridges:
        switches: list[str] = []
        fixes: list[str] = []
        if bridge.callIptables:
            switches.append("net.bridge.bridge-nf-call-iptables=1")
            fixes.append("set net.bridge.bridge-nf-call-iptables=0")
        if bridge.bridgeCallIptables:
            switches.append(f"the bridge option nf_call_iptables on {bridge.name}")
            fixes.append(f"ip link set {bridge.name} type bridge nf_call_iptables 0")
        if not switches or not bridge.ports:
            continue
        problems.append(
            f"Hairpin: LAN hosts behind {', '.join(bridge.ports)} of bridge {bridge.name} cannot "
            "reach their own port mappings through a WAN address (other hosts' mappings work): "
            f"with {' and '.join(switches)}, br_netfilter hands the forwarded packet back to the "
            "bridge, which never sends a frame out of the port it came in by. To fix it, "
            f"{' and '.join(fixes)} (gatewayd does not need br_netfilter), or set hairpin_mode "
            "on the ports that lead to a single host (never on a port to a switch)"
        )
    return problems


def readBridges(
    interfaces: Iterable[str],
    sysfs: FilePath[str] | None = None,
    sysctl: FilePath[str] | None = None,
) -> list[LANBridge]:
    """
    Read what L{bridgeProblems} needs of those of C{interfaces} that are
    bridges, in the network namespace gatewayd runs in (sysfs and procfs
    reads do not block).

    @param sysfs: C{/sys/class/net} by default.
    @param sysctl: C{/proc/sys} by default.
    """
    devices = sysfs if sysfs is not None else FilePath("/sys/class/net")
    proc = sysctl if sysctl is not None else FilePath("/proc/sys")

    def on(path: FilePath[str]) -> bool:
        try:
            return path.getContent().strip() == b"1"
        except OSError:
            return False

    loaded = proc.preauthChild("net/bridge").isdir()
    callIptables = on(proc.preauthChild("net/bridge/bridge-nf-call-iptables"))
    bridges = []
    for name in interfaces:
        if not _IFNAME.match(name) or name in (".", ".."):
            continue
        device = devices.child(name)
        if not device.child("bridge").isdir():
            continue
        ports: list[FilePath[str]]
        try:
            ports = device.child("brif").children()
        except OSError:
            ports = []
        bridges.append(
            LANBridge(
                name=name,
                callIptables=callIptables,
                bridgeCallIptables=loaded and on(device.child("bridge").child("nf_call_iptables")),
                ports=tuple(sorted(p.basename() for p in ports if not on(p.child("hairpin_mode")))),
            )
        )
    return bridges


def hasNetAdmin(status: str) -> bool:
    """
    @param status: the text of C{/proc/self/status}.
    @return: whether C{CapEff} has CAP_NET_ADMIN.
    """
    found = re.search(r"^CapEff:\s*([0-9a-fA-F]+)\s*$", status, re.M)
    return found is not None and bool(int(found.group(1), 16) >> CAP_NET_ADMIN & 1)


def _ifname(name: str) -> str:
    if not _IFNAME.match(name):
        raise InvalidMapping(f"interface name {name!r} cannot be used in nftables")
    return f'"{name}"'


def elementKey(mapping: NATMapping) -> Key:
    """
    @return: C{mapping}'s key in the kernel.
    """
    return (mapping.interface, mapping.protocol.lower(), mapping.remoteHost, mapping.externalPort)


def kernelElements(mappings: Iterable[NATMapping]) -> dict[Key, Value]:
    """
    @return: the elements the kernel holds for C{mappings}: enabled ones only.
    """
    return {
        elementKey(m): (m.internalClient, m.internalPort) for m in mappings if m.enabled
    }


def mapName(key: Key) -> str:
    """
    @return: the map an element with C{key} belongs in.
    """
    return "dnat4narrow" if key[2] else "dnat4"


def formatKey(key: Key) -> str:
    """
    @return: an element's key in nft syntax, e.g. C{"eth1" . tcp . 8080}
        (a hairpin key starts with the WAN address instead:
        C{203.0.113.2 . tcp . 8080}).
    """
    first, protocol, remoteHost, port = key
    parts = [first if _isAddress(first) else _ifname(first), protocol]
    if remoteHost:
        parts.append(remoteHost)
    parts.append(str(port))
    return " . ".join(parts)


def _isAddress(text: str) -> bool:
    try:
        IPv4Address(text)
    except ValueError:
        return False
    return True


def formatElement(key: Key, value: Value) -> str:
    """
    @return: a map element in nft syntax, C{key : client . port}.
    """
    return f"{formatKey(key)} : {value[0]} . {value[1]}"


def _elements(elements: Mapping[Key, Value], narrow: bool) -> list[str]:
    return [formatElement(k, v) for k, v in sorted(elements.items()) if bool(k[2]) == narrow]


def hairpinAddresses(
    settings: TableSettings, addresses: Mapping[str, IPv4Address]
) -> dict[str, IPv4Address]:
    """
    Pure: the WAN addresses hairpin forwards, by WAN interface.

    @param addresses: each WAN's current address, by WAN name (WANs
        without one are absent).
    @return: the addresses by interface; an address two WANs report (a
        misconfiguration) belongs to the first in the configuration. Empty
        when hairpin is off.
    """
    if not settings.hairpin:
        return {}
    found: dict[str, IPv4Address] = {}
    for wan in settings.wans:
        address = addresses.get(wan.name)
        if address is not None and address not in found.values():
            found[wan.interface] = address
    return found


def hairpinElements(
    elements: Mapping[Key, Value], addresses: Mapping[str, IPv4Address]
) -> dict[Key, Value]:
    """
    Pure: the elements of the hairpin maps: those of C{elements} whose WAN
    interface has an address in C{addresses}, keyed by that address instead
    of the interface (LAN packets carry the WAN address, not the WAN
    interface).
    """
    return {
        (str(addresses[k[0]]), k[1], k[2], k[3]): v
        for k, v in elements.items()
        if k[0] in addresses
    }


def hairpinMapName(key: Key) -> str:
    """
    @return: the hairpin map an element with C{key} belongs in.
    """
    return "hairpin4narrow" if key[2] else "hairpin4"


def tableScript(
    settings: TableSettings,
    elements: Mapping[Key, Value],
    addresses: Mapping[str, IPv4Address] | None = None,
) -> str:
    """
    Pure: one transaction that replaces the table (creating it if missing)
    with one holding C{elements}.

    @param addresses: the WANs' current addresses by WAN name, for hairpin
        (ignored when it is off).
    """
    wans = settings.wans
    hairpin = hairpinAddresses(settings, addresses or {})
    hairpinned = hairpinElements(elements, hairpin)

    def block(kind: str, name: str, type_: str, items: Sequence[str], flags: str = "") -> list[str]:
        lines = [f"\t{kind} {name} {{", f"\t\ttype {type_}"]
        if flags:
            lines.append(f"\t\tflags {flags}")
        if items:
            lines.append("\t\telements = { " + ",\n\t\t\t".join(items) + " }")
        lines.append("\t}")
        return lines

    lines = [f"add table {FAMILY} {TABLE}", f"delete table {FAMILY} {TABLE}", f"table {FAMILY} {TABLE} {{"]
    lines += block(
        "map", "dnat4", "ifname . inet_proto . inet_service : ipv4_addr . inet_service",
        _elements(elements, narrow=False),
    )
    lines += block(
        "map", "dnat4narrow",
        "ifname . inet_proto . ipv4_addr . inet_service : ipv4_addr . inet_service",
        _elements(elements, narrow=True),
    )
    lines += block("map", "wanmark", "ifname : mark", [f"{_ifname(w.interface)} : {w.mark:#x}" for w in wans])
    lines += block("set", "masq", "ifname", [_ifname(w.interface) for w in wans if w.masquerade])
    if settings.hairpin:
        # nft 1.0.6 takes neither a constant interface name nor a map
        # lookup (WAN address -> interface) inside the key of @dnat4, so
        # hairpin has its own pair of maps keyed by the WAN's address,
        # holding the same elements as dnat4/dnat4narrow for every WAN with
        # an address; they are refilled when a WAN's address changes.
        lines += block("set", "lanifs", "ifname", [_ifname(i) for i in settings.lanInterfaces])
        lines += block("set", "wanaddrs", "ipv4_addr", [str(a) for a in sorted(hairpin.values())])
        lines += block(
            "map", "hairpin4", "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service",
            _elements(hairpinned, narrow=False),
        )
        lines += block(
            "map", "hairpin4narrow",
            "ipv4_addr . inet_proto . ipv4_addr . inet_service : ipv4_addr . inet_service",
            _elements(hairpinned, narrow=True),
        )
    lines += [
        "\tchain prerouting {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
        "\t\tfib daddr type != local return",
    ]
    if settings.hairpin:
        lines += [
            "\t\tiifname @lanifs dnat ip to ip daddr . meta l4proto . ip saddr . th dport "
            "map @hairpin4narrow",
            "\t\tiifname @lanifs dnat ip to ip daddr . meta l4proto . th dport map @hairpin4",
        ]
    lines += [
        "\t\tdnat ip to iifname . meta l4proto . ip saddr . th dport map @dnat4narrow",
        "\t\tdnat ip to iifname . meta l4proto . th dport map @dnat4",
    ]
    lines += [
        "\t}",
        "\tchain inbound {",
        "\t\ttype filter hook prerouting priority mangle; policy accept;",
        "\t\tct state new ct mark set iifname map @wanmark",
        # Both directions of a connection that came in by a WAN carry its
        # mark: the replies from the LAN then follow the WAN's fwmark rule
        # (gatewayd.router) out by the WAN they came in on, and inbound
        # packets pass strict rp_filter with src_valid_mark=1.
        f"\t\tct mark and {MARK_MASK:#x} != 0 meta mark set ct mark and {MARK_MASK:#x}",
        "\t}",
        "\tchain forwarding {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        "\t\tct status dnat accept",
        "\t}",
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        # A connection leaving by a WAN stays with it (its later packets
        # get the mark in prerouting): a failback does not move flows that
        # work; the flows of a failed WAN are forgotten (forgetOutbound).
        f"\t\tct mark and {MARK_MASK:#x} == 0 ct mark set oifname map @wanmark",
        "\t\toifname @masq fib saddr type != local masquerade",
    ]
    if settings.hairpin:
        # A hairpinned connection goes back out into the LAN: the server
        # must answer the router, not the client directly (which expects
        # the WAN address). It is told from a WAN peer's by its mark: every
        # connection that came in by a WAN has the WAN's (inbound chain).
        # The same rule serves a host reaching its own mapping, as long as
        # the kernel routes the packet: br_netfilter on a LAN bridge
        # bridges it instead, and drops it (bridgeProblems).
        lines.append(
            f"\t\toifname @lanifs ct status dnat ct mark and {MARK_MASK:#x} == 0 "
            "ct original ip daddr @wanaddrs masquerade"
        )
    lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"


def changeScript(
    before: Mapping[Key, Value],
    after: Mapping[Key, Value],
    hairpin: Mapping[str, IPv4Address] | None = None,
) -> str:
    """
    Pure: one transaction turning the elements C{before} into C{after}
    (deletions first), or C{""} if they are the same.

    @param hairpin: the WAN addresses the hairpin maps hold, by interface
        (L{hairpinAddresses}); L{None} when hairpin is off. The hairpin
        elements of the changed elements change with them.
    """
    deleted = sorted(k for k, v in before.items() if after.get(k) != v)
    added = sorted(k for k, v in after.items() if before.get(k) != v)
    deletedItems = {k: before[k] for k in deleted}
    addedItems = {k: after[k] for k in added}
    maps: list[tuple[str, Callable[[Key], str], dict[Key, Value], dict[Key, Value]]] = [
        ("dnat4", mapName, deletedItems, addedItems),
        ("dnat4narrow", mapName, deletedItems, addedItems),
    ]
    if hairpin is not None:
        hairpinDeleted = hairpinElements(deletedItems, hairpin)
        hairpinAdded = hairpinElements(addedItems, hairpin)
        maps += [
            ("hairpin4", hairpinMapName, hairpinDeleted, hairpinAdded),
            ("hairpin4narrow", hairpinMapName, hairpinDeleted, hairpinAdded),
        ]
    lines = []
    for name, nameOf, gone, _ in maps:
        keys = [formatKey(k) for k in sorted(gone) if nameOf(k) == name]
        if keys:
            lines.append(f"delete element {FAMILY} {TABLE} {name} {{ " + ", ".join(keys) + " }")
    for name, nameOf, _, new in maps:
        items = [formatElement(k, v) for k, v in sorted(new.items()) if nameOf(k) == name]
        if items:
            lines.append(f"add element {FAMILY} {TABLE} {name} {{ " + ", ".join(items) + " }")
    return "".join(line + "\n" for line in lines)


def addressScript(
    elements: Mapping[Key, Value], hairpin: Mapping[str, IPv4Address]
) -> str:
    """
    Pure: one transaction refilling the hairpin maps and the WAN address
    set for the WAN addresses C{hairpin} (by interface, from
    L{hairpinAddresses}) and the installed C{elements}: what a WAN's
    address change needs. Its cost grows with the mappings, but it runs
    only when an address changes; the per-packet cost does not.
    """
    lines = [
        f"flush set {FAMILY} {TABLE} wanaddrs",
        f"flush map {FAMILY} {TABLE} hairpin4",
        f"flush map {FAMILY} {TABLE} hairpin4narrow",
    ]
    if hairpin:
        lines.append(
            f"add element {FAMILY} {TABLE} wanaddrs {{ "
            + ", ".join(str(a) for a in sorted(hairpin.values())) + " }"
        )
    hairpinned = hairpinElements(elements, hairpin)
    for name, narrow in (("hairpin4", False), ("hairpin4narrow", True)):
        items = _elements(hairpinned, narrow)
        if items:
            lines.append(f"add element {FAMILY} {TABLE} {name} {{ " + ", ".join(items) + " }")
    return "".join(line + "\n" for line in lines)


def parseElements(listing: str | bytes) -> dict[Key, Value]:
    """
    Pure: the mapping elements in the output of C{nft -j list table inet
    gatewayd} (or C{list map}).

    @raise ValueError: the output is not what nft 1.0 writes.
    """
    document = json.loads(listing)
    found: dict[Key, Value] = {}
    protocols = {6: "tcp", 17: "udp"}
    for item in document.get("nftables", []):
        m = item.get("map")
        if not m or m.get("table") != TABLE or m.get("name") not in ("dnat4", "dnat4narrow"):
            continue
        for key, value in m.get("elem", []):
            parts = key["concat"]
            interface, protocol = str(parts[0]), parts[1]
            protocol = protocols.get(protocol, protocol) if isinstance(protocol, int) else str(protocol)
            remoteHost = str(parts[2]) if len(parts) == 4 else ""
            client, port = value["concat"]
            found[(interface, protocol, remoteHost, int(parts[-1]))] = (str(client), int(port))
    return found


def conntrackArguments(key: Key, value: Value, mark: int | None) -> list[str]:
    """
    Pure: C{conntrack} arguments deleting the connections one element
    forwarded (matched by their DNAT'd reply source, the external port, the
    remote host if narrow, and the WAN's mark).
    """
    interface, protocol, remoteHost, port = key
    argv = ["-D", "-p", protocol, "--orig-port-dst", str(port),
            "--reply-src", value[0], "--reply-port-src", str(value[1])]
    if remoteHost:
        argv += ["--orig-src", remoteHost]
    if mark is not None:
        argv += ["--mark", str(mark)]
    return argv


def hairpinConntrackArguments(key: Key, value: Value, address: IPv4Address) -> list[str]:
    """
    Pure: C{conntrack} arguments deleting the connections one element
    forwarded through the WAN address C{address}: those hairpinned from
    the LAN (which have no WAN mark), and any from the WAN still left.
    """
    interface, protocol, remoteHost, port = key
    argv = ["-D", "-p", protocol, "--orig-dst", str(address), "--orig-port-dst", str(port),
            "--reply-src", value[0], "--reply-port-src", str(value[1])]
    if remoteHost:
        argv += ["--orig-src", remoteHost]
    return argv


def outboundConntrackArguments(address: IPv4Address) -> list[str]:
    """
    Pure: C{conntrack} arguments deleting the IPv4 connections whose replies
    go to C{address}: those masqueraded to that WAN address (and the
    router's own from it), not the ones that came in by it (their replies
    go to the remote peer).
    """
    return ["-D", "-f", "ipv4", "--reply-dst", str(address)]


@dataclass(frozen=True)
class ProcessResult:
    """
    What a finished process said.
    """

    code: int | None
    out: bytes
    err: bytes


class _Collector(ProcessProtocol):
    def __init__(self, stdin: bytes, done: Deferred[ProcessResult]) -> None:
        self._stdin = stdin
        self._done = done
        self._out: list[bytes] = []
        self._err: list[bytes] = []

    def connectionMade(self) -> None:
        self.transport.write(self._stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self._out.append(data)

    def errReceived(self, data: bytes) -> None:
        self._err.append(data)

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        self._done.callback(ProcessResult(code, b"".join(self._out), b"".join(self._err)))


class ProcessRunner:
    """
    Runs a command through C{reactor.spawnProcess}, feeding it C{stdin}.
    """

    def __init__(self, reactor: Any, timeout: float = PROCESS_TIMEOUT) -> None:
        self._reactor = reactor
        self._timeout = timeout

    def __call__(self, argv: Sequence[str], stdin: bytes = b"") -> Deferred[ProcessResult]:
        executable = shutil.which(argv[0]) or argv[0]
        done: Deferred[ProcessResult] = Deferred()
        protocol = _Collector(stdin, done)
        try:
            transport = self._reactor.spawnProcess(
                protocol, executable, list(argv), env=dict(os.environ)
            )
        except OSError as e:
            return fail(NFTablesFailed(f"cannot run {argv[0]}: {e}"))
        timer = self._reactor.callLater(self._timeout, _kill, transport)

        def stopTimer(result: ProcessResult) -> ProcessResult:
            if timer.active():
                timer.cancel()
            return result

        return done.addBoth(stopTimer)


def _kill(transport: Any) -> None:
    try:
        transport.signalProcess("KILL")
    except Exception:
        pass


Runner = Callable[[Sequence[str], bytes], "Deferred[ProcessResult]"]


class _Worker:
    """
    Runs a coroutine function, one run at a time.

    @ivar running: the L{Deferred} of the run in progress, or L{None}.
    """

    def __init__(self, work: Callable[[], Any], what: str, log: Logger) -> None:
        self._work = work
        self._what = what
        self._log = log
        self.running: Deferred[None] | None = None

    def start(self) -> None:
        """
        Start a run unless one is in progress (it ends when it finds
        nothing more to do).
        """
        if self.running is not None:
            return
        d = Deferred.fromCoroutine(self._work())
        d.addErrback(lambda f: self._log.failure(self._what, f))
        self.running = d

        def done(_: object) -> None:
            self.running = None

        d.addBoth(done)


@dataclass
class _Batch:
    add: list[NATMapping]
    remove: list[NATMapping]
    done: Deferred[None] = field(default_factory=Deferred)


@implementer(INATBackend)
class NFTablesBackend(Service):
    """
    Port forwardings in the nftables table C{inet gatewayd}.

    @ivar settings: the table's settings.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        config: Any,
        *,
        nft: Sequence[str] = ("nft",),
        conntrack: Sequence[str] = ("conntrack",),
        netns: str | None = None,
        runner: Runner | None = None,
        settings: TableSettings | None = None,
        procStatus: str = "/proc/self/status",
        checkInterval: float = CHECK_INTERVAL,
        bridges: Callable[[Sequence[str]], list[LANBridge]] | None = None,
    ) -> None:
        """
        @param config: the L{gatewayd.config.Config} (WANs, LAN interfaces,
            C{on_stop}).
        @param nft: the C{nft} command.
        @param conntrack: the C{conntrack} command.
        @param netns: run both inside this network namespace (through
            C{ip netns exec}); tests use it.
        @param runner: runs a command with some input; by default C{nft}
            command lines through libnftables in this process
            (L{gatewayd.nat.libnftables}) when it loads and no C{netns} is
            given, everything else through C{reactor.spawnProcess}.
        @param settings: the table's settings; from C{config} by default.
        @param bridges: reads the LAN interfaces that are bridges, for the
            hairpin check at start; L{readBridges} by default (nothing with
            C{netns}: this process's files do not describe that namespace).
        @raise ConfigError: without CAP_NET_ADMIN.
        """
        try:
            with open(procStatus) as f:
                status = f.read()
        except OSError:
            status = ""
        if not hasNetAdmin(status):
            raise ConfigError("gateway.nat", NO_CAPABILITY)
        self._reactor = reactor
        self.settings = settings if settings is not None else settingsFromConfig(config)
        self._onStop = getattr(getattr(config, "gateway", None), "onStop", "keep")
        prefix = ["ip", "netns", "exec", netns] if netns else []
        self._nft = prefix + list(nft)
        self._conntrack = prefix + list(conntrack)
        if runner is None:
            runner = ProcessRunner(reactor)
            library = libnftables.load() if netns is None and len(nft) == 1 else None
            if library is not None:
                runner = libnftables.LibnftablesRunner(reactor, library, runner, nft=nft[0])
            self.log.info(
                "nftables changes go through {how}",
                how="libnftables, in this process" if library is not None
                else "nft processes (libnftables.so.1 not loadable)",
            )
        self._run: Runner = runner
        self._checkInterval = checkInterval
        if bridges is None:
            bridges = readBridges if netns is None else (lambda interfaces: [])
        self._bridges = bridges
        self._marks = {w.interface: w.mark for w in self.settings.wans}

        self._installed: dict[tuple[str, str, int, str], NATMapping] = {}
        self._planned: dict[tuple[str, str, int, str], NATMapping] = {}
        self._queue: list[_Batch] = []
        self._rebuild: str | None = "start"
        self._checkWanted = False
        self._fingerprint: bytes | None = None
        self._worker = _Worker(self._drain, "nftables backend", self.log)
        self._kickCall: Any = None
        #: Elements whose connections are still to be deleted, and the
        #: worker doing it (L{_forgetLater}).
        self._toForget: dict[Key, Value] = {}
        self._forgotten: list[Deferred[None]] = []
        self._forgetter = _Worker(
            self._forgetQueued, "Deleting the connections of removed mappings", self.log
        )
        self._loop: LoopingCall | None = None
        self._leftover: dict[Key, Value] | None = None
        self._warnedConntrack = False
        #: Each WAN's current address, by WAN name (L{setWANAddress}).
        self._addresses: dict[str, IPv4Address] = {}
        #: The WAN addresses the hairpin maps hold, by interface.
        self._hairpinInstalled: dict[str, IPv4Address] = {}
        self._addressesDirty = False

    # INATBackend

    def apply(self, add: list[NATMapping], remove: list[NATMapping]) -> Deferred[None]:
        """
        Remove C{remove} and add C{add} in one kernel transaction (shared
        with the other changes of this reactor turn).

        @return: a L{Deferred} firing with L{None} once the kernel has the
            change, or failing with a L{NATError} (and then nothing changed).
        """
        try:
            planned = planChange(self._planned, add, remove)
            for m in add:
                _ifname(m.interface)
        except NATError:
            return fail()
        self._planned = planned
        batch = _Batch(list(add), list(remove))
        self._queue.append(batch)
        self._kick()
        return batch.done

    def mappings(self, wan: str) -> list[NATMapping]:
        """
        @return: the mappings the kernel has for C{wan} (disabled ones
            included: they are kept, not forwarded), ordered by key.
        """
        return sorted((m for m in self._installed.values() if m.wan == wan), key=lambda m: m.key)

    def setWANAddress(self, wan: str, address: IPv4Address | None) -> None:
        """
        Learn the current address of the WAN C{wan} (L{None}: it has none).
        With hairpin on, LAN hosts reach the mappings of C{wan} through
        that address, starting with the next transaction (its own, run in
        order with the mapping changes); with hairpin off it is only
        remembered.
        """
        if address is None:
            self._addresses.pop(wan, None)
        else:
            self._addresses[wan] = address
        if hairpinAddresses(self.settings, self._addresses) != self._hairpinInstalled:
            self._addressesDirty = True
            if self.running:
                self._kick()

    # IService

    def startService(self) -> None:
        super().startService()
        if self.settings.hairpin:
            bridges = self._bridges(self.settings.lanInterfaces)
            for problem in bridgeProblems(self.settings, bridges):
                self.log.warn("{problem}", problem=problem)
        self._rebuild = "start"
        self._leftover = None
        self._kick()
        self._loop = LoopingCall(self._requestCheck)
        self._loop.clock = self._reactor
        self._loop.start(self._checkInterval, now=False).addErrback(
            lambda f: self.log.failure("nftables check loop failed", f)
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._checkWanted = False
        d = Deferred.fromCoroutine(self._stop())
        d.addErrback(lambda f: self.log.failure("Stopping the nftables backend", f))
        return d

    async def _stop(self) -> None:
        while self._worker.running is not None or self._kickCall is not None:
            if self._kickCall is not None and self._worker.running is None:
                self._kickCall.cancel()
                self._kickCall = None
                self._work()
            if self._worker.running is not None:
                await self._worker.running
        while self._forgetter.running is not None:
            await self._forgetter.running
        if self._onStop != "clean":
            self.log.info(
                "Keeping table {family} {table} ({n} mappings) for the next start",
                family=FAMILY, table=TABLE, n=len(self._installed),
            )
            return
        result = await self._run(self._nft + ["-f", "-"], f"delete table {FAMILY} {TABLE}\n".encode())
        if result.code != 0 and b"No such file" not in result.err:
            self.log.error("Removing table {family} {table} failed: {err}", family=FAMILY,
                           table=TABLE, err=result.err.decode(errors="replace").strip())
        await self._forget(kernelElements(self._installed.values()))
        self.log.info("Removed table {family} {table}", family=FAMILY, table=TABLE)
        self._installed = {}
        self._planned = {}
        self._fingerprint = None
        self._rebuild = "start"
        self._hairpinInstalled = {}
        self._addressesDirty = False

    # The work queue: one nft run at a time.

    def _kick(self) -> None:
        if self._worker.running is None and self._kickCall is None:
            self._kickCall = self._reactor.callLater(0, self._work)

    def _requestCheck(self) -> None:
        self._checkWanted = True
        self._kick()

    def _work(self) -> None:
        self._kickCall = None
        self._worker.start()

    async def _drain(self) -> None:
        while True:
            if self._rebuild is None and self._addressesDirty:
                await self._updateAddresses()
            elif self._rebuild is not None or self._queue:
                if not await self._transaction():
                    return
            elif self._checkWanted:
                self._checkWanted = False
                await self._check()
            else:
                return

    async def _transaction(self) -> bool:
        """
        Run the queued changes (and a rebuild, if one is due) as one
        transaction.

        @return: whether it succeeded.
        """
        batches, self._queue = self._queue, []
        final = dict(self._installed)
        accepted: list[_Batch] = []
        for batch in batches:
            try:
                final = planChange(final, batch.add, batch.remove)
            except NATError:
                batch.done.errback()
                continue
            accepted.append(batch)
        rebuild = self._rebuild
        if rebuild == "start" and self._leftover is None:
            listing = await self._run(self._nft + ["-j", "list", "table", FAMILY, TABLE], b"")
            try:
                self._leftover = parseElements(listing.out) if listing.code == 0 else {}
            except (ValueError, KeyError, TypeError):
                self._leftover = {}
            if self._leftover:
                self.log.info(
                    "Found table {family} {table} with {n} mappings from an earlier run; reconciling",
                    family=FAMILY, table=TABLE, n=len(self._leftover),
                )
        hairpin = hairpinAddresses(self.settings, self._addresses)
        if rebuild is None:
            # Only the keys this transaction touches: its cost does not grow
            # with the number of mappings installed.
            touched = {m.key for b in accepted for m in b.add + b.remove}
            before = kernelElements(self._installed[k] for k in touched if k in self._installed)
            after = kernelElements(final[k] for k in touched if k in final)
            script = changeScript(
                before, after, self._hairpinInstalled if self.settings.hairpin else None
            )
        else:
            before = self._leftover or {}
            after = kernelElements(final.values())
            script = tableScript(self.settings, after, self._addresses)
        if script:
            result = await self._run(self._nft + ["-f", "-"], script.encode())
            ok = result.code == 0
        else:
            result, ok = ProcessResult(0, b"", b""), True
        if not ok:
            why = result.err.decode(errors="replace").strip() or f"nft exited with {result.code}"
            self.log.error(
                "nftables refused a transaction ({n} changes): {why}",
                n=len(accepted), why=why,
            )
            self._planned = self._replan()
            error = NFTablesFailed(f"nft: {why}")
            for batch in accepted:
                batch.done.errback(Failure(error))
            if rebuild is None:
                self._checkWanted = True
            return rebuild is None
        self._installed = final
        self._planned = self._replan()
        if rebuild is not None:
            self._rebuild = None
            self._leftover = None
            self._hairpinInstalled = hairpin
            self._addressesDirty = hairpinAddresses(self.settings, self._addresses) != hairpin
            if rebuild != "start":
                self.log.warn(
                    "nftables table {family} {table} was {how}; restored {n} mappings",
                    family=FAMILY, table=TABLE, how=rebuild, n=len(after),
                )
            else:
                self.log.info("nftables table {family} {table} installed with {n} mappings",
                              family=FAMILY, table=TABLE, n=len(after))
            listing = await self._run(self._nft + ["-t", "-j", "-a", "list", "table", FAMILY, TABLE], b"")
            self._fingerprint = listing.out if listing.code == 0 else None
        # The change is in the kernel. The connections of what no longer
        # forwards are deleted beside the queue (a conntrack run per element,
        # which reads the whole conntrack table): the next change does not
        # wait for them, the answers to these changes do.
        forgotten = self._forgetLater({k: v for k, v in before.items() if after.get(k) != v})
        for batch in accepted:
            forgotten.addCallback(lambda _, done=batch.done: done.callback(None))
        return True

    async def _updateAddresses(self) -> None:
        """
        Refill the hairpin maps for the WANs' current addresses, in a
        transaction of its own; if nft refuses it, rebuild the table.
        """
        self._addressesDirty = False
        wanted = hairpinAddresses(self.settings, self._addresses)
        if wanted == self._hairpinInstalled:
            return
        script = addressScript(kernelElements(self._installed.values()), wanted)
        result = await self._run(self._nft + ["-f", "-"], script.encode())
        if result.code != 0:
            why = result.err.decode(errors="replace").strip() or f"nft exited with {result.code}"
            self.log.error("nftables refused the hairpin addresses: {why}", why=why)
            if self._rebuild is None:
                self._rebuild = "out of step with the WAN addresses"
            return
        self._hairpinInstalled = wanted
        self._addressesDirty = hairpinAddresses(self.settings, self._addresses) != wanted
        self.log.info(
            "Hairpin: LAN hosts reach port mappings through {addresses}",
            addresses=", ".join(
                f"{w.name} {wanted[w.interface]}"
                for w in self.settings.wans
                if w.interface in wanted
            ) or "no WAN address",
        )

    def _replan(self) -> dict[tuple[str, str, int, str], NATMapping]:
        """
        @return: the installed mappings with the queued changes applied
            (failing those that no longer fit).
        """
        planned = dict(self._installed)
        kept = []
        for batch in self._queue:
            try:
                planned = planChange(planned, batch.add, batch.remove)
            except NATError:
                batch.done.errback()
                continue
            kept.append(batch)
        self._queue = kept
        return planned

    async def _check(self) -> None:
        """
        Compare the table (without its elements) with what was installed;
        schedule a rebuild if it is missing or differs.
        """
        listing = await self._run(self._nft + ["-t", "-j", "-a", "list", "table", FAMILY, TABLE], b"")
        if listing.code != 0:
            how = "missing"
        elif self._fingerprint is not None and listing.out != self._fingerprint:
            how = "changed"
        else:
            return
        if self._rebuild is None:
            self._rebuild = how

    def forgetOutbound(self, wan: str, address: IPv4Address) -> Deferred[None]:
        """
        Delete the conntrack entries of connections masqueraded to
        C{address}, the address of the failed WAN C{wan} (see
        L{INATBackend.forgetOutbound}); failures are logged.
        """
        return Deferred.fromCoroutine(self._forgetOutbound(wan, address))

    async def _forgetOutbound(self, wan: str, address: IPv4Address) -> None:
        argv = self._conntrack + outboundConntrackArguments(address)
        try:
            result = await self._run(argv, b"")
        except Exception as e:
            result = ProcessResult(None, b"", str(e).encode())
        # conntrack exits with 1 when nothing matched.
        if result.code not in (0, 1):
            self.log.warn(
                "Could not forget the connections of WAN {wan} through {address}: {err}",
                wan=wan, address=str(address), err=result.err.decode(errors="replace").strip(),
            )
            return
        counted = re.search(rb"(\d+) flow entries have been deleted", result.err + result.out)
        self.log.info(
            "WAN {wan}: forgot {count} connections masqueraded to {address}; they start again "
            "through the active WAN",
            wan=wan, address=str(address), count=int(counted.group(1)) if counted else 0,
        )

    def _forgetLater(self, gone: Mapping[Key, Value]) -> Deferred[None]:
        """
        Delete the connections of C{gone} (elements that no longer forward)
        soon, one conntrack run at a time, beside the transaction queue.

        @return: a L{Deferred} that fires once they are deleted.
        """
        if not gone:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._toForget.update(gone)
        self._forgotten.append(done)
        self._forgetter.start()
        return done

    async def _forgetQueued(self) -> None:
        while self._toForget:
            queued, self._toForget = self._toForget, {}
            waiting, self._forgotten = self._forgotten, []
            # An element that forwards again by now keeps its connections.
            forwarding = kernelElements(self._installed.values())
            try:
                await self._forget({k: v for k, v in queued.items() if forwarding.get(k) != v})
            finally:
                for done in waiting:
                    done.callback(None)

    async def _forget(self, elements: Mapping[Key, Value]) -> None:
        """
        Delete the conntrack entries of elements that no longer forward, so
        that ongoing flows through them stop too. Failures are logged: the
        kernel change itself has been made.
        """
        for key, value in sorted(elements.items()):
            argvs = [conntrackArguments(key, value, self._marks.get(key[0]))]
            address = self._hairpinInstalled.get(key[0])
            if address is not None:
                argvs.append(hairpinConntrackArguments(key, value, address))
            for argv in argvs:
                try:
                    result = await self._run(self._conntrack + argv, b"")
                except Exception as e:
                    result = ProcessResult(None, b"", str(e).encode())
                # conntrack exits with 1 when nothing matched.
                if result.code not in (0, 1):
                    if not self._warnedConntrack:
                        self.log.warn(
                            "Could not delete the connections of a removed mapping ({key}): {err}",
                            key=formatKey(key), err=result.err.decode(errors="replace").strip(),
                        )
                        self._warnedConntrack = True
