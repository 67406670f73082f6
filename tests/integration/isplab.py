"""
A gateway between a LAN host and an ISP that runs a DHCP server (dnsmasq),
in network namespaces the test creates and removes::

    lan (host0 192.168.77.10/24) -- (lan0 192.168.77.1/24) gw (wan0: no address) -- (isp0 203.0.114.1/24) isp

The gateway's WAN interface starts without an address: a C{dhcp} link gets
one from the ISP's dnsmasq, a C{static} link configures it. Every command
has a timeout; nothing is configured outside these namespaces.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence

from tests.integration.netns import Namespace, run

DNSMASQ = "/usr/sbin/dnsmasq"


class ISPLab:
    """
    @ivar gw: the gateway's namespace (interfaces C{wan0}, C{lan0}).
    @ivar isp: the ISP's namespace (C{isp0}).
    @ivar lan: the LAN host's namespace (C{host0}).
    """

    lanAddress = "192.168.77.1"
    hostAddress = "192.168.77.10"
    ispAddress = "203.0.114.1"

    def __init__(self, work: Path) -> None:
        self.prefix = "gwdl" + secrets.token_hex(3)
        self.work = work
        self.gw = Namespace(self.prefix + "-gw")
        self.isp = Namespace(self.prefix + "-isp")
        self.lan = Namespace(self.prefix + "-lan")
        self.namespaces = (self.gw, self.isp, self.lan)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.dnsmasq: subprocess.Popen[bytes] | None = None

    def up(self) -> None:
        for ns in self.namespaces:
            run("ip", "netns", "add", ns.name)
            ns.ip("link", "set", "lo", "up")
            ns.run("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
        run("ip", "link", "add", "wan0", "netns", self.gw.name, "type", "veth", "peer", "isp0", "netns", self.isp.name)
        run("ip", "link", "add", "lan0", "netns", self.gw.name, "type", "veth", "peer", "host0", "netns", self.lan.name)
        self.gw.ip("addr", "add", self.lanAddress + "/24", "dev", "lan0")
        self.gw.ip("link", "set", "lan0", "up")
        self.lan.ip("addr", "add", self.hostAddress + "/24", "dev", "host0")
        self.lan.ip("link", "set", "host0", "up")
        self.lan.ip("route", "add", "default", "via", self.lanAddress)
        self.lan.ip("route", "add", "224.0.0.0/4", "dev", "host0")
        self.isp.ip("addr", "add", self.ispAddress + "/24", "dev", "isp0")
        self.isp.ip("link", "set", "isp0", "up")

    def down(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        for ns in self.namespaces:
            for pid in run("ip", "netns", "pids", ns.name, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            run("ip", "netns", "del", ns.name, check=False)

    def spawn(self, ns: Namespace, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", ns.name, *argv], stdout=out, stderr=subprocess.STDOUT
            )
        self.processes.append(process)
        return process

    def addISP(self, interface: str, ispAddress: str) -> Namespace:
        """
        Give the gateway another WAN interface, C{interface} (no address),
        linked to a new ISP namespace whose C{isp0} has C{ispAddress}/24
        (removed with the lab).

        @return: the new ISP's namespace.
        """
        isp = Namespace(f"{self.prefix}-{interface}")
        run("ip", "netns", "add", isp.name)
        self.namespaces = (*self.namespaces, isp)
        isp.ip("link", "set", "lo", "up")
        isp.run("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
        run("ip", "link", "add", interface, "netns", self.gw.name, "type", "veth", "peer", "isp0", "netns", isp.name)
        isp.ip("addr", "add", ispAddress + "/24", "dev", "isp0")
        isp.ip("link", "set", "isp0", "up")
        return isp

    def startDHCP(self, first: str, last: str, lease: int = 120, extra: Sequence[str] = ()) -> None:
        """
        Run dnsmasq as the ISP's DHCP server (no DNS), authoritative, handing
        out C{first}-C{last} for C{lease} seconds (dnsmasq's minimum is 120).
        """
        self.stopDHCP()
        self.dhcpLog = self.work / "dnsmasq.log"
        self.dnsmasq = self.serveDHCP(self.isp, self.ispAddress, first, last, "dnsmasq", lease, extra)

    def serveDHCP(
        self,
        isp: Namespace,
        router: str,
        first: str,
        last: str,
        name: str,
        lease: int = 120,
        extra: Sequence[str] = (),
    ) -> subprocess.Popen[bytes]:
        """
        Run dnsmasq in C{isp} on its C{isp0}, as L{startDHCP} does, with
        C{router} as the default gateway it hands out; its log, leases and
        pid files are C{name}.log, .leases and .pid in the work directory.
        It stops with the lab.
        """
        return self.spawn(
            isp,
            [
                DNSMASQ,
                "--no-daemon",
                "--port=0",
                "--interface=isp0",
                "--bind-interfaces",
                "--dhcp-authoritative",
                "--log-dhcp",
                f"--dhcp-range={first},{last},255.255.255.0,{lease}",
                f"--dhcp-leasefile={self.work / (name + '.leases')}",
                f"--pid-file={self.work / (name + '.pid')}",
                "--dhcp-option=option:router," + router,
                "--dhcp-option=option:dns-server,203.0.114.53",
                *extra,
            ],
            self.work / (name + ".log"),
        )

    def stopDHCP(self) -> None:
        if self.dnsmasq is not None and self.dnsmasq.poll() is None:
            self.dnsmasq.terminate()
            self.dnsmasq.wait(timeout=10)
        self.dnsmasq = None

    def wanState(self) -> str:
        """
        @return: C{ip -4 addr show dev wan0} and the routes and rules, as
            text to compare before and after.
        """
        parts = [
            self.gw.run("ip", "-4", "-o", "addr", "show", "dev", "wan0").stdout,
            # The qdisc is the kernel's (noop until first up), not ours.
            re.sub(r"qdisc \S+ ", "", self.gw.run("ip", "-o", "link", "show", "dev", "wan0").stdout.split("link/")[0]),
            self.gw.run("ip", "-4", "route", "show", "table", "all").stdout,
            self.gw.run("ip", "-4", "rule").stdout,
        ]
        return "\n".join(parts)

    def addresses(self) -> list[str]:
        out = self.gw.run("ip", "-4", "-o", "addr", "show", "dev", "wan0").stdout
        return [line.split()[3] for line in out.splitlines()]


def waitUntil(
    check: Callable[[], object], seconds: float, what: str, interval: float = 0.2, details: Callable[[], str] = lambda: ""
) -> object:
    """
    Call C{check} until it returns something true, for at most C{seconds}.

    @return: that value.
    @raise AssertionError: naming C{what} after C{seconds}.
    """
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {seconds} s\n{details()}")
        time.sleep(interval)
