#!/usr/bin/env python3
"""
Benchmark gatewayd's UPnP IGD against miniupnpd with the same client and load.

    sudo /work/venv/bin/python bench/bench_igd.py [--quick] [--json out.json]
        [--no-miniupnpd] [--no-gatewayd] [--sizes 1000,10000]

Not a test: it prints a table (gatewayd and miniupnpd side by side, with the
ratio gatewayd/miniupnpd) and the JSON of every figure. See bench/README.rst.

For each daemon it builds a lab of its own: three network namespaces named
C{gwdb<hex><g|m>-gw}, C{-lan} and C{-isp}, joined by veth pairs created inside
them (nothing is added to the caller's namespace), starts the daemon in C{-gw},
runs bench/igd_client.py in C{-lan} once per phase, reads the daemon's CPU
time and RSS from /proc around each phase, then stops the daemon, kills every
process left in the lab's namespaces and deletes them (also on errors, ^C and
SIGTERM). Requests go only to 192.168.77.1 inside the lab.

miniupnpd (Debian C{miniupnpd-nftables}) is run only if C{/usr/sbin/miniupnpd}
exists, as routers run it (it daemonizes, logs at LOG_NOTICE), with a private
C{/dev/log} in a private mount namespace: without a syslog daemon glibc copies
each message to /dev/console (LOG_CONS), which makes it many times slower.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLIENT = HERE / "igd_client.py"
MINIUPNPD = "/usr/sbin/miniupnpd"

LAN_NET = "192.168.77"
GW_LAN_IP = f"{LAN_NET}.1"
HOST_IP = f"{LAN_NET}.10"
WAN_IP = "203.0.114.2"  # not 203.0.113.x: miniupnpd refuses reserved WAN addresses
ISP_IP = "203.0.114.1"
HTTP_PORT = 5000
BASE_PORT = 20000
PROBE_BASE = 40000
PROBE_COUNT = 200  # > 128: miniupnpd 2.3.1's get_portmappings_in_range() overflows there
IF_GW_LAN, IF_HOST, IF_GW_WAN, IF_ISP = "gbdlan0", "gbdhost0", "gbdwan0", "gbdisp0"

CLK_TCK = os.sysconf("SC_CLK_TCK")
_namespaces: list[str] = []  # every namespace this run created, for cleanup


def log(msg: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def run(argv: list[str], timeout: float = 30, check: bool = True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()[:500]}")
    return r


# ---------------------------------------------------------------- /proc


def procState(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def alive(pid: int | None) -> bool:
    return pid is not None and procState(pid) not in (None, "Z", "X")


def cpuSeconds(pid: int) -> float | None:
    """utime + stime of the process (all its threads), from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def schedSeconds(pid: int) -> float | None:
    """
    CPU time of the process's live threads in ns precision (the first field
    of /proc/PID/task/TID/schedstat, summed): utime+stime come in 10 ms
    ticks, too coarse for 2 000 requests of some 20 us each.
    """
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, IndexError, ValueError):
                continue  # a thread that just ended
    except OSError:
        return None
    return total / 1e9


def cpuDelta(before: tuple, after: tuple) -> tuple[float | None, float | None]:
    """
    (seconds, ticks-based seconds) between two (schedSeconds, cpuSeconds)
    samples. The precise figure unless threads that ended took their time
    with them (then the ticks figure is clearly larger) or it is missing.
    """
    ticks = after[1] - before[1] if None not in (before[1], after[1]) else None
    precise = after[0] - before[0] if None not in (before[0], after[0]) else None
    if precise is None or precise <= 0 or (ticks is not None and ticks - precise > 0.02 + 0.1 * ticks):
        return ticks, ticks
    return precise, ticks


def memory(pid: int) -> dict | None:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key + "_kB"] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return out or None


# ---------------------------------------------------------------- the lab


class Lab:
    """
    Three namespaces: -isp (203.0.114.1) -- -gw (WAN 203.0.114.2, LAN
    192.168.77.1) -- -lan (192.168.77.10). Links are created inside them.
    """

    def __init__(self, tag: str) -> None:
        self.gw, self.lan, self.isp = (f"gwdb{tag}-{role}" for role in ("gw", "lan", "isp"))

    def ns(self, ns: str, *argv: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        return run(["ip", "netns", "exec", ns, *argv], timeout=timeout, check=check)

    def up(self) -> None:
        for ns in (self.gw, self.lan, self.isp):
            addNamespace(ns)
            # IPv6 off: no DAD, RS or MLD chatter in the lab.
            self.ns(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1", check=False)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", self.gw, "link", "add", IF_GW_WAN, "type", "veth", "peer", "name", IF_ISP, "netns", self.isp])
        run(["ip", "-n", self.gw, "link", "add", IF_GW_LAN, "type", "veth", "peer", "name", IF_HOST, "netns", self.lan])
        for ns, dev, addr in (
            (self.gw, IF_GW_WAN, f"{WAN_IP}/24"),
            (self.gw, IF_GW_LAN, f"{GW_LAN_IP}/24"),
            (self.isp, IF_ISP, f"{ISP_IP}/24"),
            (self.lan, IF_HOST, f"{HOST_IP}/24"),
        ):
            run(["ip", "-n", ns, "addr", "add", addr, "dev", dev])
            run(["ip", "-n", ns, "link", "set", dev, "up"])
        run(["ip", "-n", self.gw, "route", "add", "default", "via", ISP_IP])
        # SSDP stays on the LAN even from a daemon that does not pick its interface.
        run(["ip", "-n", self.gw, "route", "add", "224.0.0.0/4", "dev", IF_GW_LAN])
        # The client opens ~30 000 connections; give it room (this namespace only).
        self.ns(self.lan, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000", check=False)

    def timeWait(self) -> int | None:
        r = self.ns(self.gw, "ss", "-Htan", "state", "time-wait", check=False)
        return r.stdout.count("\n") if r.returncode == 0 else None

    def down(self) -> None:
        for ns in (self.lan, self.gw, self.isp):
            removeNamespace(ns)


def addNamespace(ns: str) -> None:
    """Create a namespace and remember it for L{cleanupAll}."""
    run(["ip", "netns", "add", ns])
    _namespaces.append(ns)


def removeNamespace(ns: str) -> None:
    """Kill every process in the namespace (by pid), then delete it."""
    if ns not in _namespaces:
        return
    for sig, pause in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 1.0)):
        r = run(["ip", "netns", "pids", ns], check=False, timeout=10)
        pids = [int(p) for p in r.stdout.split() if p.isdigit()]
        pids = [p for p in pids if alive(p) and p != os.getpid()]
        if not pids:
            break
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        end = time.monotonic() + pause
        while time.monotonic() < end and any(alive(p) for p in pids):
            time.sleep(0.05)
    run(["ip", "netns", "del", ns], check=False, timeout=10)
    _namespaces.remove(ns)


def cleanupAll() -> None:
    for ns in list(_namespaces):
        try:
            removeNamespace(ns)
        except Exception as e:  # keep going: remove the others
            log(f"cleanup of {ns}: {e}")


# ---------------------------------------------------------------- daemons


class Daemon:
    name = "?"
    pid: int | None = None
    listWindow = 0  # GetListOfPortMappings / DeletePortMappingRange window (0 = whole range)

    def __init__(self, lab: Lab, tmp: Path, args) -> None:
        self.lab, self.tmp, self.args = lab, tmp, args
        self.proc: subprocess.Popen | None = None

    def stop(self) -> None:
        if self.pid is not None and alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
            end = time.monotonic() + 10
            while time.monotonic() < end and alive(self.pid):
                time.sleep(0.05)
            if alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def wipe(self) -> None:
        """Forget every mapping (the daemon is stopped): for a fresh restart."""

    def logTail(self, n: int = 15) -> list[str]:
        try:
            return self.logFile.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return []


class Gatewayd(Daemon):
    name = "gatewayd"

    def version(self) -> str:
        env = dict(os.environ)
        if self.args.gatewayd_path:
            env["PYTHONPATH"] = self.args.gatewayd_path
        r = run([self.args.python_for_gatewayd, "-c", "import gatewayd; print(gatewayd.__version__, gatewayd.__file__)"],
                check=False, env=env, cwd="/")
        return r.stdout.strip() or "unknown"

    #: The NAT backend the bench runs gatewayd with (bench_nat.py: nftables).
    nat = "memory"
    friendlyName = "gatewayd bench"

    def extraMappings(self) -> int:
        """Mappings added beyond the largest size (max_mappings must allow them)."""
        return PROBE_COUNT

    def sourcePath(self) -> str | None:
        """Where gatewayd is imported from; None: as installed."""
        return self.args.gatewayd_path

    def start(self) -> None:
        conf = self.tmp / "gatewayd.toml"
        maxMappings = min(65535, max(20000, max(self.args.sizes) + self.extraMappings() + 100))
        conf.write_text(
            f"""# written by {Path(sys.argv[0]).name}
[gateway]
state_dir = "{self.tmp / 'state'}"
nat = "{self.nat}"
on_stop = "clean"

[lan]
interfaces = ["{IF_GW_LAN}"]
http_port = {HTTP_PORT}

[upnp]
friendly_name = "{self.friendlyName}"
secure_mode = true
max_mappings = {maxMappings}
rules = [
  "allow 1024-65535 {LAN_NET}.0/24 1024-65535",
  "deny 0-65535 0.0.0.0/0 0-65535",
]

[[wan]]
name = "isp1"
interface = "{IF_GW_WAN}"
link = {{ type = "unmanaged", gateway = "{ISP_IP}" }}
"""
        )
        (self.tmp / "state").mkdir(exist_ok=True)
        self.logFile = self.tmp / "gatewayd.log"
        env = dict(os.environ)
        path = self.sourcePath()
        if path:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
        with open(self.logFile, "ab") as out:
            # ip netns exec and twistd's #! both exec: the pid is the daemon's.
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.lab.gw, self.args.twistd, "-n", "--pidfile=",
                 "gatewayd", "--config", str(conf)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp, env=env,
            )
        self.pid = self.proc.pid


    def wipe(self) -> None:
        shutil.rmtree(self.tmp / "state", ignore_errors=True)


class Miniupnpd(Daemon):
    name = "miniupnpd"
    listWindow = 100  # miniupnpd 2.3.1 crashes with more than 128 mappings in a range

    def wipe(self) -> None:
        (self.tmp / "miniupnpd.leases").unlink(missing_ok=True)

    def version(self) -> str:
        r = run([MINIUPNPD, "--version"], check=False)
        return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr) else "unknown"

    def start(self) -> None:
        conf = self.tmp / "miniupnpd.conf"
        conf.write_text(
            f"""# written by bench_igd.py
ext_ifname={IF_GW_WAN}
listening_ip={IF_GW_LAN}
http_port={HTTP_PORT}
enable_upnp=yes
enable_natpmp=no
ipv6_disable=yes
secure_mode=yes
system_uptime=yes
notify_interval=60
clean_ruleset_interval=600
uuid={uuid.uuid4()}
friendly_name=miniupnpd bench
lease_file={self.tmp / 'miniupnpd.leases'}
upnp_table_name=filter
upnp_nat_table_name=filter
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
allow 1024-65535 {LAN_NET}.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
"""
        )
        # The tables and chains miniupnpd's nft backend adds its rules to
        # (what Debian's nft_init.sh creates), in the gw namespace only.
        skeleton = self.tmp / "skeleton.nft"
        skeleton.write_text(
            f"""table inet filter {{
    chain forward {{
        type filter hook forward priority filter; policy accept;
        ct state established,related accept
        iifname "{IF_GW_LAN}" oifname "{IF_GW_WAN}" accept
        jump miniupnpd
    }}
    chain miniupnpd {{ }}
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        jump prerouting_miniupnpd
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        jump postrouting_miniupnpd
    }}
    chain prerouting_miniupnpd {{ }}
    chain postrouting_miniupnpd {{ }}
}}
"""
        )
        self.lab.ns(self.lab.gw, "nft", "flush", "ruleset")  # the lab's gw namespace only
        self.lab.ns(self.lab.gw, "nft", "-f", str(skeleton))
        pidfile = self.tmp / "miniupnpd.pid"
        pidfile.unlink(missing_ok=True)
        self.pid = None
        self.logFile = self.tmp / "miniupnpd.syslog"
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.gw, "unshare", "--mount", "--propagation", "private",
             sys.executable, str(Path(__file__).resolve()), "_devlog-exec",
             "--sink-log", str(self.logFile), "--pidfile", str(pidfile),
             "--lifetime", str(int(self.args.total_timeout) + 600),
             "--", MINIUPNPD, "-f", str(conf), "-P", str(pidfile)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.tmp / "miniupnpd.stderr", "wb"),
        )
        end = time.monotonic() + 15
        while time.monotonic() < end:
            try:
                pid = int(pidfile.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and alive(pid):
                self.pid = pid
                break
            if self.proc.poll() not in (None, 0):
                break
            time.sleep(0.05)
        if self.pid is None:
            raise RuntimeError(f"miniupnpd did not start: {(self.tmp / 'miniupnpd.stderr').read_text(errors='replace')[-500:]}")
        try:
            self.proc.wait(10)  # the parent exits after the fork
        except subprocess.TimeoutExpired:
            pass


def devlogExec(argv: list[str]) -> int:
    """
    Internal (run inside the gw namespace, in a private mount namespace):
    mount a small tmpfs on /dev with the usual nodes and a /dev/log read by a
    forked sink, then exec the daemon. The host's /dev is not touched.
    """
    p = argparse.ArgumentParser(prog="bench_igd.py _devlog-exec")
    p.add_argument("--sink-log", required=True)
    p.add_argument("--pidfile", required=True)
    p.add_argument("--lifetime", type=float, default=3600)
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=755", "gwdb-dev", "/dev"], check=True)
    for name, mode, major, minor in (
        ("null", 0o666, 1, 3), ("zero", 0o666, 1, 5), ("random", 0o444, 1, 8),
        ("urandom", 0o444, 1, 9), ("tty", 0o666, 5, 0),
    ):
        os.mknod(f"/dev/{name}", 0o020000 | mode, os.makedev(major, minor))
        os.chmod(f"/dev/{name}", mode)
    os.symlink("/proc/self/fd", "/dev/fd")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("/dev/log")
    os.chmod("/dev/log", 0o666)
    if os.fork() == 0:  # the sink
        try:
            os.setsid()
            devnull = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            import select

            out = open(a.sink_log, "ab", buffering=0)
            start, seen = time.monotonic(), None
            while time.monotonic() - start < a.lifetime:
                ready, _, _ = select.select([sock], [], [], 1.0)
                if ready:
                    out.write(sock.recv(65536).rstrip(b"\n") + b"\n")
                try:
                    pid = int(Path(a.pidfile).read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid:
                    seen = pid
                if seen and not alive(seen):
                    break
                if seen is None and time.monotonic() - start > 30:
                    break
        finally:
            os._exit(0)
    sock.close()
    os.execv(command[0], command)
    return 127


# ---------------------------------------------------------------- phases


class Budget:
    def __init__(self, total: float, phase: float) -> None:
        self.end = time.monotonic() + total
        self.phase = phase

    def left(self) -> float:
        return self.end - time.monotonic()

    def phaseDeadline(self, cap: float | None = None) -> float:
        return max(0.0, min(self.phase if cap is None else cap, self.left()))


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def latencyWindow(lat: list[float], k: int, width: int = 20) -> dict | None:
    """The median of calls k-9..k+10 (1-based), shifted to stay within the calls made."""
    if k > len(lat) or k < 1:
        return None
    lo = max(1, k - width // 2 + 1)
    hi = min(len(lat), lo + width - 1)
    lo = max(1, hi - width + 1)
    return {"calls": f"{lo}-{hi}", "median_ms": median(lat[lo - 1:hi])}


def stepSummary(lat: list[float]) -> dict:
    return {
        "steps": len(lat),
        "p50_ms": median(lat),
        "first10_median_ms": median(lat[:10]),
        "last10_median_ms": median(lat[-10:]),
        "max_ms": max(lat) if lat else None,
    }


def perHundred(lat: list[float]) -> list[float]:
    return [round(statistics.median(lat[i:i + 100]), 3) for i in range(0, len(lat), 100)]


class Runner:
    def __init__(self, daemon: Daemon, lab: Lab, budget: Budget, args) -> None:
        self.d, self.lab, self.budget, self.args = daemon, lab, budget, args
        self.ctl, self.stype = "", ""
        self.crashed: str | None = None
        self.crashes: list[str] = []
        self.notes: list[str] = []

    def client(self, command: list[str], deadline: float, timeout: float | None = None) -> dict:
        timeout = timeout or self.args.request_timeout
        argv = [
            "ip", "netns", "exec", self.lab.lan, sys.executable, "-I", str(CLIENT),
            "--host", GW_LAN_IP, "--port", str(HTTP_PORT), "--ctl", self.ctl, "--stype", self.stype,
            "--timeout", str(timeout), "--deadline", f"{deadline:.1f}", *command,
        ]
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=deadline + 2 * timeout + 30)
        except subprocess.TimeoutExpired:
            return {"status": "error", "detail": "client did not finish in time"}
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"status": "error", "detail": f"client exit {r.returncode}: {r.stderr.strip()[-500:]}"}

    def phase(self, name: str, command: list[str], cap: float | None = None, timeout: float | None = None) -> dict:
        if self.crashed:
            return {"status": "skipped", "detail": f"daemon crashed earlier ({self.crashed})"}
        deadline = self.budget.phaseDeadline(cap)
        if deadline < 5:
            return {"status": "skipped", "detail": "total deadline reached"}
        log(f"{self.d.name}: {name}")
        pid = self.d.pid
        cpu0, t0 = (schedSeconds(pid), cpuSeconds(pid)), time.monotonic()
        out = self.client(command, deadline, timeout)
        cpu1 = (schedSeconds(pid), cpuSeconds(pid))
        out["wall_s_with_client_start"] = time.monotonic() - t0
        out["daemon_cpu_s"], out["daemon_cpu_s_ticks"] = cpuDelta(cpu0, cpu1)
        out["gw_time_wait_sockets"] = self.lab.timeWait()
        if not alive(self.d.pid):
            self.crashed = name
            self.crashes.append(name)
            out["daemon_crashed"] = True
            out["status"] = "crashed"
            self.notes.append(f"{self.d.name} crashed (pid {self.d.pid} gone) during {name}")
            log(f"{self.d.name}: CRASHED during {name}")
        return out

    def mem(self) -> dict | None:
        return memory(self.d.pid) if alive(self.d.pid) else None

    def startAndWait(self) -> dict:
        """Start the daemon; wait (bounded) until its description answers."""
        ctl, self.ctl = self.ctl, "/"
        self.d.start()
        waitEnd = time.monotonic() + min(self.args.start_timeout, self.budget.left())
        w: dict = {}
        while time.monotonic() < waitEnd and alive(self.d.pid):
            w = self.client(["wait"], 2.0)
            if w.get("status") == "ok":
                break
        if not alive(self.d.pid):
            w = {**w, "status": "daemon exited"}
        self.ctl = ctl
        return w

    def restart(self, why: str) -> bool:
        """A fresh daemon with an empty table (same lab)."""
        log(f"{self.d.name}: restart ({why})")
        self.d.stop()
        self.d.wipe()
        w = self.startAndWait()
        self.crashed = None
        if w.get("status") != "ok":
            self.crashed = f"restart ({w})"
            self.notes.append(f"{self.d.name}: restart failed: {w}")
            return False
        return True

    def drainTimeWait(self, limit: float) -> dict:
        """Wait (bounded) until the gateway's TIME_WAIT sockets are gone."""
        t0 = time.monotonic()
        before = self.lab.timeWait()
        n = before
        while n and time.monotonic() - t0 < min(limit, max(0.0, self.budget.left() - 60)):
            time.sleep(2.0)
            n = self.lab.timeWait()
        return {"before": before, "after": n, "waited_s": time.monotonic() - t0}


def runDaemon(kind: type[Daemon], args, budget: Budget, tag: str) -> dict:
    lab = Lab(tag)
    tmp = Path(tempfile.mkdtemp(prefix=f"gwdb{tag}-"))
    daemon = kind(lab, tmp, args)
    report: dict = {"daemon": kind.name, "version": daemon.version(), "phases": {}, "notes": []}
    runner = Runner(daemon, lab, budget, args)
    P = report["phases"]
    try:
        lab.up()
        t0 = time.monotonic()
        w = runner.startAndWait()
        if w.get("status") != "ok":
            report["error"] = f"daemon not serving: {w}"
            report["log_tail"] = daemon.logTail()
            return report
        report["startup_s"] = time.monotonic() - t0
        report["pid"] = daemon.pid
        desc = runner.client(["describe"], 20)
        if desc.get("status") != "ok":
            report["error"] = f"description: {desc}"
            return report
        runner.ctl, runner.stype = desc["controlURL"], desc["serviceType"]
        report["service"] = {"controlURL": runner.ctl, "serviceType": runner.stype}
        report["actions"] = runner.client(["probe"], 30).get("actions")
        time.sleep(1.0)
        report["rss"] = {"idle": runner.mem()}

        # (a) GetExternalIPAddress at concurrency 1, 8, 64.
        P["getextip"] = {}
        for conc, count in zip((1, 8, 64), args.counts):
            out = runner.phase(f"GetExternalIPAddress c={conc} x{count}", [
                "getextip", "--conc", str(conc), "--count", str(count),
            ], cap=min(args.phase_timeout, 300))
            if out.get("daemon_cpu_s") is not None and out.get("done"):
                out["daemon_cpu_s_per_1000"] = out["daemon_cpu_s"] / out["done"] * 1000
            P["getextip"][str(conc)] = out
        report["rss"]["after_getextip"] = runner.mem()
        # Its connection storm left thousands of TIME_WAIT sockets in the
        # gateway; miniupnpd reads all of /proc/net/tcp on each AddPortMapping.
        if not args.quick:
            report["time_wait_drain"] = runner.drainTimeWait(75)

        # (b) + (c): add up to each size, enumerate at each size.
        addLat: list[float] = []
        addCPU, have, addNotImpl = 0.0, 0, None
        P["add"], P["enum"] = [], {}
        for size in args.sizes:
            if have < size and addNotImpl is None:
                out = runner.phase(f"AddPortMapping {have + 1}..{size}", [
                    "add", "--first", str(have + 1), "--last", str(size), "--base", str(BASE_PORT),
                    "--client", HOST_IP, "--lease", "3600",
                ])
                lats = out.pop("latencies_ms", [])
                addLat.extend(lats)
                have += out.get("added", 0)
                addCPU += out.get("daemon_cpu_s") or 0.0
                P["add"].append(out)
                if out.get("status") == "not implemented":
                    addNotImpl = out
                elif out.get("added", 0) < size - (have - out.get("added", 0)):
                    runner.notes.append(
                        f"{daemon.name}: AddPortMapping reached {have} of {size} mappings "
                        f"({out.get('stopped') or out.get('detail') or out.get('status')})"
                    )
            if addNotImpl is not None:
                P["enum"][str(size)] = {"status": "not implemented", "detail": "AddPortMapping not implemented"}
                continue
            if have == 0:
                continue
            at = {"mappings": have, "rss": runner.mem()}
            g = runner.phase(f"GetGenericPortMappingEntry walk at {have}", [
                "generic", "--max", str(have + PROBE_COUNT + 50), "--lo", str(BASE_PORT), "--hi", str(BASE_PORT + have - 1),
            ])
            glat = g.pop("latencies_ms", [])
            # the last step is the 713 answer; the walk steps are the ones before it
            steps = glat[:-1] if g.get("ended") == "713" else glat
            g.update(stepSummary(steps))
            if g.get("daemon_cpu_s") is not None and glat:
                g["daemon_cpu_ms_per_step"] = g["daemon_cpu_s"] / len(glat) * 1e3
            if g.get("entries") is not None and g.get("entries") != have and g.get("status") == "ok":
                runner.notes.append(f"{daemon.name}: GetGenericPortMappingEntry listed {g['entries']} of {have} mappings")
            at["generic"] = g
            window = args.list_window if args.list_window is not None else daemon.listWindow
            lst = runner.phase(f"GetListOfPortMappings at {have} (window {window or 'whole range'})", [
                "list", "--lo", str(BASE_PORT), "--hi", str(BASE_PORT + have - 1),
                "--window", str(window), "--expected", str(have), "--number", str(args.number_of_ports),
            ])
            llat = lst.pop("latencies_ms", [])
            lst.update({"calls_p50_ms": median(llat), "calls_max_ms": max(llat) if llat else None})
            if lst.get("status") == "ok" and lst.get("entries") != have:
                runner.notes.append(f"{daemon.name}: GetListOfPortMappings listed {lst.get('entries')} of {have} mappings")
            at["list"] = lst
            P["enum"][str(size)] = at
            if runner.crashed:
                break
            if have < size:
                break
        P["add_summary"] = {
            "added": have,
            "status": "not implemented" if addNotImpl else ("ok" if have else "none"),
            "windows": {str(k): latencyWindow(addLat, k) for k in [10, *args.sizes]},
            "p50_ms": median(addLat),
            "daemon_cpu_s": addCPU,
            "daemon_cpu_ms_per_add": addCPU / have * 1e3 if have else None,
            "median_ms_per_100_calls": perHundred(addLat),
        }
        report["rss"]["at_max"] = {"mappings": have, **(runner.mem() or {})}

        # (d) delete everything, check the table is empty.
        if have:
            window = args.list_window if args.list_window is not None else daemon.listWindow
            P["delete"] = runner.phase(f"delete {have} mappings", [
                "delete", "--lo", str(BASE_PORT), "--hi", str(BASE_PORT + have - 1),
                "--window", str(window), "--expected", str(have),
            ], cap=args.delete_timeout, timeout=args.delete_request_timeout)
            report["rss"]["after_delete"] = runner.mem()
            d = P["delete"]
            if d.get("status") not in ("ok", "not implemented"):
                runner.notes.append(
                    f"{daemon.name}: deleting {have} mappings: {d.get('problem') or d.get('status')}, "
                    f"{d.get('deleted')} deleted in {number(d.get('total_s') or 0)} s"
                )

        # Robustness: one GetListOfPortMappings over > 128 mappings (miniupnpd
        # 2.3.1 overflows its heap there), then clean up.
        if not args.no_crash_probe and addNotImpl is None and have:
            probe = {"mappings": PROBE_COUNT}
            # on a fresh daemon: an unfinished delete may still keep it busy
            probe["fresh_daemon"] = runner.restart("before the crash probe")
            probe["add"] = runner.phase(f"crash probe: add {PROBE_COUNT}", [
                "add", "--first", "1", "--last", str(PROBE_COUNT), "--base", str(PROBE_BASE),
                "--client", HOST_IP, "--lease", "3600",
            ])
            probe["add"].pop("latencies_ms", None)
            if probe["add"].get("added") == PROBE_COUNT:
                probe["list"] = runner.phase(f"crash probe: one GetListOfPortMappings over {PROBE_COUNT}", [
                    "list", "--lo", str(PROBE_BASE), "--hi", str(PROBE_BASE + PROBE_COUNT - 1),
                    "--window", "0", "--expected", str(PROBE_COUNT), "--number", "0",
                ])
                probe["list"].pop("latencies_ms", None)
                listed = probe["list"].get("status")
                probe["survived"] = None if listed in ("not implemented", "skipped") else not runner.crashed
                if runner.crashed:
                    runner.notes.append(
                        f"{daemon.name} crashed at GetListOfPortMappings with {PROBE_COUNT} mappings in range"
                    )
            probe["delete"] = runner.phase("crash probe: delete", [
                "delete", "--lo", str(PROBE_BASE), "--hi", str(PROBE_BASE + PROBE_COUNT - 1),
                "--window", str(daemon.listWindow), "--expected", str(PROBE_COUNT),
            ])
            P["crash_probe"] = probe
        report["rss"]["end"] = runner.mem()
        report["crashed_during"] = runner.crashes
        if runner.crashes:
            report["log_tail"] = daemon.logTail()
    except Exception as e:
        report["error"] = f"{type(e).__name__}: {e}"
        report["log_tail"] = daemon.logTail() if hasattr(daemon, "logFile") else []
        log(f"{kind.name}: {report['error']}")
    finally:
        report["notes"] = runner.notes
        try:
            daemon.stop()
        finally:
            lab.down()
            if args.keep_logs:
                report["tmp_dir"] = str(tmp)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    return report


# ---------------------------------------------------------------- output


def dig(d, *path):
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def number(v: float) -> str:
    if isinstance(v, int) or abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 0.1:
        return f"{v:.2f}"
    return f"{v:.3f}" if abs(v) >= 0.001 else f"{v:.2g}"


def cell(report: dict | None, *path) -> tuple[str, float | None]:
    """The shown text and the number (for ratios) of one figure."""
    if report is None:
        return "", None
    if report.get("error") and not report.get("phases"):
        return "error", None
    # the status of the phase the figure belongs to
    node = report
    for p in path:
        if isinstance(node, dict) and node.get("status") in ("not implemented", "skipped", "crashed", "error"):
            if node["status"] == "not implemented":
                return "n/i", None
            if node["status"] == "crashed":
                return "CRASH", None
            if node["status"] == "error" and dig(node, *path[path.index(p):]) is None:
                return "error", None
            if node["status"] == "skipped":
                return "skipped", None
        node = node.get(p) if isinstance(node, dict) else None
    if isinstance(node, bool):
        return ("yes" if node else "no"), None
    if isinstance(node, (int, float)):
        return number(node), node
    return "-" if node is None else str(node), None


def table(reports: dict) -> str:
    g, m = reports.get("gatewayd"), reports.get("miniupnpd")
    rows: list[tuple[str, tuple]] = []
    for c in ("1", "8", "64"):
        rows += [
            (f"GetExternalIPAddress c={c}: req/s", ("phases", "getextip", c, "req_per_s")),
            (f"  c={c}: p50 ms", ("phases", "getextip", c, "latency", "p50_ms")),
            (f"  c={c}: p99 ms", ("phases", "getextip", c, "latency", "p99_ms")),
            (f"  c={c}: daemon CPU s / 1000 req", ("phases", "getextip", c, "daemon_cpu_s_per_1000")),
        ]
    sizes = sorted({int(k) for r in (g, m) if r for k in (dig(r, "phases", "add_summary", "windows") or {})})
    for k in sizes:
        rows.append((f"AddPortMapping #{k}: median ms (20 calls)", ("phases", "add_summary", "windows", str(k), "median_ms")))
    rows += [
        ("AddPortMapping: mappings added", ("phases", "add_summary", "added")),
        ("AddPortMapping: daemon CPU ms / add", ("phases", "add_summary", "daemon_cpu_ms_per_add")),
    ]
    enumSizes = sorted({int(k) for r in (g, m) if r for k in (dig(r, "phases", "enum") or {})})
    for s in enumSizes:
        k = str(s)
        rows += [
            (f"at {s}: mappings present", ("phases", "enum", k, "mappings")),
            (f"at {s}: GetGeneric walk total s", ("phases", "enum", k, "generic", "total_s")),
            (f"at {s}: GetGeneric step p50 ms", ("phases", "enum", k, "generic", "p50_ms")),
            (f"at {s}: GetGeneric first-10 step ms", ("phases", "enum", k, "generic", "first10_median_ms")),
            (f"at {s}: GetGeneric last-10 step ms", ("phases", "enum", k, "generic", "last10_median_ms")),
            (f"at {s}: GetGeneric daemon CPU ms/step", ("phases", "enum", k, "generic", "daemon_cpu_ms_per_step")),
            (f"at {s}: GetListOfPortMappings total s", ("phases", "enum", k, "list", "total_s")),
            (f"at {s}: GetListOfPortMappings calls", ("phases", "enum", k, "list", "calls")),
            (f"at {s}: GetListOfPortMappings entries", ("phases", "enum", k, "list", "entries")),
            (f"at {s}: RSS kB", ("phases", "enum", k, "rss", "VmRSS_kB")),
        ]
    rows += [
        ("RSS idle kB", ("rss", "idle", "VmRSS_kB")),
        ("RSS at most mappings kB", ("rss", "at_max", "VmRSS_kB")),
        ("RSS after delete kB", ("rss", "after_delete", "VmRSS_kB")),
        ("delete all: total s", ("phases", "delete", "total_s")),
        ("delete all: calls", ("phases", "delete", "calls")),
        ("delete all: mappings deleted", ("phases", "delete", "deleted")),
        ("delete all: table empty after", ("phases", "delete", "empty_after")),
        (f"one GetListOfPortMappings over {PROBE_COUNT}: survived", ("phases", "crash_probe", "survived")),
    ]
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{'':{width}}{'gatewayd':>12}{'miniupnpd':>12}{'g/m':>8}", "-" * (width + 32)]
    for label, path in rows:
        gt, gv = cell(g, *path)
        mt, mv = cell(m, *path)
        ratio = f"{gv / mv:.2f}" if gv is not None and mv not in (None, 0) else ""
        lines.append(f"{label:{width}}{gt:>12}{mt:>12}{ratio:>8}")
    return "\n".join(lines)


FLAT = 2.0  # "about what the 10th costs": within this factor


def goals(daemons: dict, sizes: list[int]) -> dict:
    """The issue's goals, per daemon where they apply: figures and verdicts."""
    out: dict = {}
    top = str(max(sizes))
    m = daemons.get("miniupnpd")
    for name, r in daemons.items():
        g: dict = {}
        w = dig(r, "phases", "add_summary", "windows") or {}
        first, last = dig(w, "10", "median_ms"), dig(w, top, "median_ms")
        if first and last:
            g[f"add_#{top}_over_#10"] = {"value": last / first, "met": last / first <= FLAT}
        gen = dig(r, "phases", "enum", top, "generic") or {}
        if gen.get("first10_median_ms") and gen.get("last10_median_ms"):
            v = gen["last10_median_ms"] / gen["first10_median_ms"]
            g[f"generic_last10_over_first10_at_{top}"] = {"value": v, "met": v <= FLAT}
        at = dig(r, "phases", "enum", top) or {}
        crashes = r.get("crashed_during") or []
        if at.get("status") == "not implemented":
            g[f"handles_{top}"] = {"value": "not implemented", "met": False}
        elif at:
            listed = (dig(at, "generic", "entries"), dig(at, "list", "entries"))
            mainCrash = [c for c in crashes if not c.startswith("crash probe")] or None
            g[f"handles_{top}"] = {
                "value": {"mappings": at.get("mappings"), "generic": listed[0], "list": listed[1],
                          "crashed": mainCrash},
                "met": at.get("mappings") == int(top) and listed == (int(top), int(top)) and not mainCrash,
            }
        survived = dig(r, "phases", "crash_probe", "survived")
        if survived is not None:
            g[f"one_GetListOfPortMappings_over_{PROBE_COUNT}"] = {
                "value": "survived" if survived else "crashed", "met": survived}
        if name != "miniupnpd" and m:
            a = dig(r, "phases", "getextip", "8", "daemon_cpu_s_per_1000")
            b = dig(m, "phases", "getextip", "8", "daemon_cpu_s_per_1000")
            if a and b:
                g["cpu_per_request_c8_vs_miniupnpd"] = {"value": a / b, "met": a / b <= 3}
        out[name] = g
    return out


def goalLines(result: dict) -> list[str]:
    lines = []
    for name, g in result.get("goals", {}).items():
        for key, v in g.items():
            value = v["value"]
            shown = number(value) if isinstance(value, (int, float)) else (
                value if isinstance(value, str) else json.dumps(value))
            lines.append(f"goal {name}: {key} = {shown}: {'met' if v['met'] else 'NOT met'}")
    return lines


def parseArgs(argv: list[str]):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small counts and sizes 100,1000 (a few minutes)")
    p.add_argument("--json", metavar="FILE", help="write the JSON here (else it is printed after the table)")
    p.add_argument("--no-miniupnpd", action="store_true")
    p.add_argument("--no-gatewayd", action="store_true")
    p.add_argument("--sizes", help="mapping counts to measure at, ascending (default 1000,10000)")
    p.add_argument("--counts", help="GetExternalIPAddress requests at c=1,8,64 (default 2000,5000,5000)")
    p.add_argument("--list-window", type=int, default=None,
                   help="GetListOfPortMappings/DeletePortMappingRange window in ports for both daemons "
                        "(default: 100 for miniupnpd, the whole range for gatewayd)")
    p.add_argument("--number-of-ports", type=int, default=0, help="NewNumberOfPorts of GetListOfPortMappings")
    p.add_argument("--request-timeout", type=float, default=10.0)
    p.add_argument("--phase-timeout", type=float, default=1800.0, help="seconds per phase")
    p.add_argument("--delete-timeout", type=float, default=300.0,
                   help="seconds for deleting all mappings (miniupnpd needs far more for 10 000)")
    p.add_argument("--delete-request-timeout", type=float, default=120.0,
                   help="per DeletePortMappingRange call (miniupnpd takes > 10 s per 100 of 10 000)")
    p.add_argument("--total-timeout", type=float, default=4800.0, help="seconds for the whole run")
    p.add_argument("--no-crash-probe", action="store_true", help=f"skip the one-call listing of {PROBE_COUNT} mappings")
    p.add_argument("--twistd", default=str(Path(sys.executable).parent / "twistd"))
    p.add_argument("--gatewayd-path", metavar="DIR",
                   help="run gatewayd from this source tree (put first on its PYTHONPATH), e.g. a `git archive` of a commit")
    p.add_argument("--start-timeout", type=float, default=60.0, help="seconds for a daemon to answer HTTP")
    p.add_argument("--keep-logs", action="store_true", help="keep the daemons' temp dirs (configs, logs)")
    a = p.parse_args(argv)
    a.sizes = [int(s) for s in (a.sizes or ("100,1000" if a.quick else "1000,10000")).split(",")]
    a.counts = [int(s) for s in (a.counts or ("300,1000,1000" if a.quick else "2000,5000,5000")).split(",")]
    if a.sizes != sorted(a.sizes) or not all(0 < s <= 20000 for s in a.sizes):
        p.error("--sizes: ascending, each 1..20000 (ports 20000..39999)")
    if len(a.counts) != 3 or not all(0 < c <= 200000 for c in a.counts):
        p.error("--counts: three numbers, 1..200000")
    if a.quick:
        a.phase_timeout = min(a.phase_timeout, 300.0)
        a.total_timeout = min(a.total_timeout, 1200.0)
    a.python_for_gatewayd = str(Path(a.twistd).parent / "python")
    if not Path(a.python_for_gatewayd).exists():
        a.python_for_gatewayd = sys.executable
    return a


def main(argv: list[str]) -> int:
    if argv[:1] == ["_devlog-exec"]:
        return devlogExec(argv[1:])
    args = parseArgs(argv)
    preflight("bench_igd.py", ("ip", "nft", "unshare", "ss"))
    budget = Budget(args.total_timeout, args.phase_timeout)
    tag = secrets.token_hex(3)
    result: dict = {
        "bench": "bench_igd.py",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "nproc": os.cpu_count(),
            "kernel": platform.release(),
            "machine": platform.machine(),
        },
        "python": platform.python_version(),
        "settings": {
            "sizes": args.sizes, "getextip_counts": dict(zip(("1", "8", "64"), args.counts)),
            "request_timeout_s": args.request_timeout, "phase_timeout_s": args.phase_timeout,
            "total_timeout_s": args.total_timeout, "list_window": args.list_window,
            "number_of_ports": args.number_of_ports, "lab_tag": tag,
        },
        "daemons": {},
        "notes": [],
    }
    kinds: list[type[Daemon]] = []
    if not args.no_gatewayd:
        kinds.append(Gatewayd)
    if not args.no_miniupnpd:
        if os.path.exists(MINIUPNPD):
            kinds.append(Miniupnpd)
        else:
            result["notes"].append(f"{MINIUPNPD} not installed: miniupnpd not run")
    t0 = time.monotonic()
    try:
        for kind in kinds:
            rep = runDaemon(kind, args, budget, tag + kind.name[0])
            result["daemons"][kind.name] = rep
            result["notes"].extend(rep.get("notes", []))
    except KeyboardInterrupt as e:
        result["notes"].append(f"interrupted ({e})")
        result["interrupted"] = True
    finally:
        cleanupAll()
    result["elapsed_s"] = time.monotonic() - t0
    leftover = [ns for ns in run(["ip", "netns", "list"], check=False).stdout.split() if ns.startswith(f"gwdb{tag}")]
    result["namespaces_left"] = leftover
    versions = {name: rep.get("version") for name, rep in result["daemons"].items()}
    result["versions"] = versions
    result["goals"] = goals(result["daemons"], args.sizes)
    text = table(result["daemons"])
    print(text)
    print()
    for line in goalLines(result):
        print(line)
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + f", python {result['python']}")
    print(f"machine: {result['machine']['nproc']} CPUs, kernel {result['machine']['kernel']}; elapsed {result['elapsed_s']:.0f} s")
    for note in result["notes"]:
        print(f"note: {note}")
    for name, rep in result["daemons"].items():
        if rep.get("error"):
            print(f"note: {name}: {rep['error']}")
    emitJSON(result, args.json)
    return 2 if result.get("interrupted") else 0


def preflight(script: str, tools: tuple[str, ...]) -> None:
    """
    Exit unless root with C{tools}; make SIGTERM a KeyboardInterrupt (so the
    labs are cleaned up) and clean up at exit whatever happens.
    """
    if os.geteuid() != 0:
        sys.exit(f"{script} needs root (network namespaces)")
    for tool in tools:
        if shutil.which(tool) is None:
            sys.exit(f"{script} needs {tool}")

    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    import atexit

    atexit.register(cleanupAll)


def emitJSON(result: dict, path: str | None) -> None:
    """
    Write the report's JSON to C{path}, or print it after the table.
    """
    blob = json.dumps(result, indent=1, default=str)
    if path:
        Path(path).write_text(blob + "\n")
        print(f"JSON: {path}")
    else:
        print("--- JSON ---")
        print(blob)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
