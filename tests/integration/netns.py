"""
Network namespaces that a test creates and removes: a LAN host, the gateway
running gatewayd, and an ISP on the WAN side.

Every address lives inside these namespaces; nothing is configured in the
namespace the tests run in, and every command has a timeout.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from twisted.trial.unittest import SkipTest

#: Set by .ci/run: a missing capability fails the test instead of skipping it.
REQUIRED = os.environ.get("GATEWAYD_INTEGRATION") == "required"

ROOT = Path(__file__).resolve().parents[2]


def requireCapabilities(*tools: str) -> None:
    """
    Skip (or fail, in CI) unless we are root and have C{ip} and C{tools}.
    """
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces)")
    for tool in ("ip",) + tools:
        if shutil.which(tool) is None:
            missing.append(tool)
    if missing:
        why = "integration test needs " + ", ".join(missing)
        if REQUIRED:
            raise AssertionError(why + " (GATEWAYD_INTEGRATION=required)")
        raise SkipTest(why)


def run(*argv: str, timeout: float = 10, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check)


@dataclass
class Namespace:
    name: str

    def run(self, *argv: str, timeout: float = 10, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.name, *argv, timeout=timeout, check=check)

    def ip(self, *argv: str) -> None:
        run("ip", "-n", self.name, *argv)

    def python(self, code: str, *args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-c", code, *args, timeout=timeout, check=False)


@dataclass
class Lab:
    """
    Four namespaces::

        lan  (host0 192.168.77.10/24) --+
                                        +-- (bridge lan0 192.168.77.1/24) gw (wan0 203.0.114.2/24) -- (isp0 203.0.114.1/24) isp
        lan2 (host0 192.168.77.11/24) --+

    The ISP routes 192.168.77.0/24 via the gateway, so it can try to reach
    the LAN address through the WAN.
    """

    prefix: str = field(default_factory=lambda: "gwdt" + secrets.token_hex(3))
    lanAddress: str = "192.168.77.1"
    hostAddress: str = "192.168.77.10"
    host2Address: str = "192.168.77.11"
    wanAddress: str = "203.0.114.2"
    ispAddress: str = "203.0.114.1"

    def __post_init__(self) -> None:
        self.lan = Namespace(self.prefix + "-lan")
        self.lan2 = Namespace(self.prefix + "-lan2")
        self.gw = Namespace(self.prefix + "-gw")
        self.isp = Namespace(self.prefix + "-isp")
        self.namespaces = (self.lan, self.lan2, self.gw, self.isp)
        self._processes: list[subprocess.Popen[bytes]] = []

    def up(self) -> None:
        for ns in self.namespaces:
            run("ip", "netns", "add", ns.name)
            ns.ip("link", "set", "lo", "up")
        self.gw.ip("link", "add", "lan0", "type", "bridge", "mcast_snooping", "0")
        for i, (ns, address) in enumerate([(self.lan, self.hostAddress), (self.lan2, self.host2Address)]):
            run("ip", "link", "add", "host0", "netns", ns.name, "type", "veth", "peer", f"port{i}", "netns", self.gw.name)
            self.gw.ip("link", "set", f"port{i}", "master", "lan0")
            self.gw.ip("link", "set", f"port{i}", "up")
            ns.ip("addr", "add", address + "/24", "dev", "host0")
            ns.ip("link", "set", "host0", "up")
            ns.ip("route", "add", "default", "via", self.lanAddress)
            ns.ip("route", "add", "224.0.0.0/4", "dev", "host0")
        run("ip", "link", "add", "wan0", "netns", self.gw.name, "type", "veth", "peer", "isp0", "netns", self.isp.name)
        self.gw.ip("addr", "add", self.lanAddress + "/24", "dev", "lan0")
        self.gw.ip("link", "set", "lan0", "up")
        self.gw.ip("addr", "add", self.wanAddress + "/24", "dev", "wan0")
        self.gw.ip("link", "set", "wan0", "up")
        self.gw.ip("route", "add", "default", "via", self.ispAddress)
        self.isp.ip("addr", "add", self.ispAddress + "/24", "dev", "isp0")
        self.isp.ip("link", "set", "isp0", "up")
        self.isp.ip("route", "add", "192.168.77.0/24", "via", self.wanAddress)
        self.isp.ip("route", "add", "224.0.0.0/4", "dev", "isp0")
        for ns in self.namespaces:
            ns.run("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")

    def down(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        for ns in self.namespaces:
            pids = run("ip", "netns", "pids", ns.name, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            run("ip", "netns", "del", ns.name, check=False)

    def spawn(self, ns: Namespace, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        out = open(log, "wb")
        process = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, *argv], stdout=out, stderr=subprocess.STDOUT
        )
        out.close()
        self._processes.append(process)
        return process

    def waitForTCP(self, ns: Namespace, host: str, port: int, process: subprocess.Popen[bytes], log: Path, seconds: float = 30) -> None:
        """
        Wait (bounded) until C{host:port} accepts connections inside C{ns}.
        """
        deadline = time.monotonic() + seconds
        code = (
            "import socket,sys\n"
            "s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)\n"
            "s.close()\n"
        )
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"daemon exited with {process.returncode}:\n{log.read_text()}")
            if ns.python(code, host, str(port), timeout=5).returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"nothing listens on {host}:{port} after {seconds}s:\n{log.read_text()}")


TCP_PROBE = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    s = socket.create_connection((host, port), timeout=3)
except OSError as e:
    print("refused", e.__class__.__name__)
    sys.exit(0)
s.settimeout(3)
s.sendall(b"GET /rootDesc.xml HTTP/1.1\\r\\nHost: " + host.encode() + b":" + str(port).encode() + b"\\r\\nConnection: close\\r\\n\\r\\n")
data = b""
try:
    while len(data) < 100000:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
except OSError as e:
    print("error", e.__class__.__name__)
print("answered" if data else "closed", repr(data[:200]))
"""

SSDP_PROBE = """
import socket, sys, time
target, wait = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
msg = (b'M-SEARCH * HTTP/1.1\\r\\nHOST: 239.255.255.250:1900\\r\\n'
       b'MAN: "ssdp:discover"\\r\\nMX: 1\\r\\nST: ssdp:all\\r\\n\\r\\n')
s.sendto(msg, (target, 1900))
s.settimeout(0.2)
deadline = time.monotonic() + wait
answers = 0
while time.monotonic() < deadline and answers < 1000:
    try:
        data, addr = s.recvfrom(65536)
    except socket.timeout:
        continue
    answers += 1
print(answers)
"""


def addISP(lab: Lab, interface: str, address: str, peerAddress: str, prefix: int = 24) -> Namespace:
    """
    Give C{lab}'s gateway another WAN: C{interface} with C{address}, linked
    to a new ISP namespace at C{peerAddress} (removed with the lab). The
    new ISP routes the LAN through the gateway, like the first.

    @return: the new ISP's namespace.
    """
    isp = Namespace(f"{lab.prefix}-{interface}")
    run("ip", "netns", "add", isp.name)
    lab.namespaces = (*lab.namespaces, isp)
    isp.ip("link", "set", "lo", "up")
    run("ip", "link", "add", interface, "netns", lab.gw.name, "type", "veth", "peer", "isp0", "netns", isp.name)
    lab.gw.ip("addr", "add", f"{address}/{prefix}", "dev", interface)
    lab.gw.ip("link", "set", interface, "up")
    isp.ip("addr", "add", f"{peerAddress}/{prefix}", "dev", "isp0")
    isp.ip("link", "set", "isp0", "up")
    isp.ip("route", "add", "192.168.77.0/24", "via", address)
    isp.run("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
    return isp
