#!/usr/bin/env python3
"""
Benchmark of gatewayd's nftables NAT backend against the real miniupnpd,
in network namespaces it creates and removes.

    sudo /work/venv/bin/python bench/bench_nat.py [--json out.json]
        [--sizes 10,1000,10000] [--no-miniupnpd] [--no-gatewayd] [--no-backend]

Three parts (see bench/README-nat.rst):

1. daemons, through SOAP (the comparison): gatewayd (nat = "nftables") and,
   if /usr/sbin/miniupnpd exists, miniupnpd (Debian miniupnpd-nftables), each
   in a lab of its own (bench_igd.py's: -gw, -lan, -isp namespaces), with the
   same client (bench/igd_client.py in -lan) and load: AddPortMapping latency
   at each size (samples added and deleted again), the gateway namespace's
   nft rule count and C{nft list ruleset} size, and iperf3 from -isp through
   one mapping with 1 and with the largest number of other mappings. The
   table shows the ratio gatewayd/miniupnpd of each figure.
2. backend, in-process: C{NFTablesBackend.apply} with the real reactor and
   nft (no HTTP), the same sizes, rebuild of everything after C{nft flush
   ruleset}.
3. emulation: miniupnpd's rule-per-mapping layout loaded with C{nft -f} (no
   daemon), iperf3 and the cost of one more rule.

Not a test: it prints a table and the JSON of every figure. Every phase is
bounded (--phase-timeout, --total-timeout); a phase that hits its limit is
recorded as such and the run goes on with what was reached.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench_igd  # noqa: E402  (the lab, the daemons, the client runner)
from bench_igd import GW_LAN_IP, HOST_IP, HTTP_PORT, IF_GW_LAN, IF_GW_WAN, ISP_IP, LAN_NET, MINIUPNPD, WAN_IP  # noqa: E402

SIZES = (10, 1000, 10000)
SAMPLES = 30
IPERF_PORT = 5201  # the mapping iperf3 goes through: WAN_IP:5201 -> HOST_IP:5201
FILL_BASE = 20000  # the other mappings: 20000.. -> HOST_IP, same port
SAMPLE_BASE = 60000  # the measured additions (deleted again after each size)
log = bench_igd.log


# ================================================================ 2. backend (in-process) and 3. emulation


def mappingFor(i: int, wan: str = "isp1", interface: str = "wan0") -> Any:
    from gatewayd.interfaces import NATMapping

    return NATMapping(wan, interface, "TCP" if i % 2 else "UDP", 20000 + i // 2, "",
                      f"192.168.77.{10 + i % 2}", 1024 + i // 2)


async def inner(reactor: Any, lab: dict[str, Any]) -> dict[str, Any]:
    """
    In the gateway namespace: the backend with the real reactor and nft.
    """
    from twisted.internet.defer import Deferred

    from gatewayd.interfaces import NATMapping
    from gatewayd.nat.nftables import NFTablesBackend, TableSettings, WANSettings

    class Config:
        class gateway:
            onStop = "clean"

    sizes = lab["sizes"]
    backend = NFTablesBackend(reactor, Config(), settings=TableSettings((WANSettings("isp1", "wan0", 1),)))
    backend.startService()
    target = NATMapping("isp1", "wan0", "TCP", 15201, "", "192.168.77.10", 5201)
    await backend.apply([target], [])

    def nft(*argv: str) -> str:
        return subprocess.run(["nft", *argv], capture_output=True, text=True, timeout=60, check=True).stdout

    def iperf() -> float:
        out = subprocess.run(
            ["ip", "netns", "exec", lab["isp"], "iperf3", "-c", "203.0.114.2", "-p", "15201", "-t", "3", "-J"],
            capture_output=True, text=True, timeout=60,
        )
        return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9

    results: dict[str, Any] = {"sizes": {}}
    installed = 1
    for size in sizes:
        more = [mappingFor(i) for i in range(installed - 1, size - 1)]
        if more:
            await backend.apply(more, [])
        installed = size
        latencies = []
        for s in range(SAMPLES):
            probe = NATMapping("isp1", "wan0", "TCP", 60000 + s, "", "192.168.77.10", 9)
            t0 = time.perf_counter()
            await backend.apply([probe], [])
            latencies.append((time.perf_counter() - t0) * 1000)
            await backend.apply([], [probe])
        latencies.sort()
        listing = nft("-a", "list", "table", "inet", "gatewayd")
        rules = sum(1 for line in listing.splitlines() if "# handle" in line and not line.strip().startswith(("chain", "map", "set", "table")))
        results["sizes"][size] = {
            "add_ms_median": round(latencies[len(latencies) // 2], 2),
            "add_ms_p90": round(latencies[int(len(latencies) * 0.9)], 2),
            "rules": rules,
            "list_table_bytes": len(nft("list", "table", "inet", "gatewayd")),
        }
        if size in (sizes[0], sizes[-1]) and shutil.which("iperf3"):
            results["sizes"][size]["iperf3_gbps"] = round(iperf(), 2)
    # Rebuild of everything after a flush: the check finds the table gone.
    nft("flush", "ruleset")
    t0 = time.perf_counter()
    backend._requestCheck()
    while backend._kickCall is not None or backend._working is not None:
        d: Deferred[None] = Deferred()
        reactor.callLater(0.001, d.callback, None)
        await d
    results["rebuild_s"] = round(time.perf_counter() - t0, 3)
    results["rebuild_mappings"] = sizes[-1]
    results["rebuild_elements"] = nft("list", "table", "inet", "gatewayd").count(" : 192.168.77.")
    await backend.stopService()
    return results


def ruleMinded(lab: Any, size: int) -> dict[str, Any]:
    """
    EMULATION (no daemon): the same mappings as one DNAT rule plus one
    forward rule each, the layout of miniupnpd's nftables backend, loaded
    with nft -f; the measured mapping's rules come last.
    """
    lines = [
        "add table ip rulepermapping", "delete table ip rulepermapping",
        "table ip rulepermapping {",
        "\tchain prerouting { type nat hook prerouting priority dstnat; policy accept; }",
        "\tchain forward { type filter hook forward priority filter; policy drop; }",
        "}",
    ]
    for i in range(size):
        m = mappingFor(i)
        lines.append(f"add rule ip rulepermapping prerouting iifname \"wan0\" {m.protocol.lower()} dport "
                     f"{m.externalPort} dnat to {m.internalClient}:{m.internalPort}")
        lines.append(f"add rule ip rulepermapping forward iifname \"wan0\" ip daddr {m.internalClient} "
                     f"{m.protocol.lower()} dport {m.internalPort} accept")
    lines.append('add rule ip rulepermapping prerouting iifname "wan0" tcp dport 15201 dnat to 192.168.77.10:5201')
    lines.append('add rule ip rulepermapping forward iifname "wan0" ip daddr 192.168.77.10 tcp dport 5201 accept')
    lines.append('add rule ip rulepermapping forward oifname "wan0" ct state established,related accept')
    t0 = time.perf_counter()
    subprocess.run(
        ["ip", "netns", "exec", lab.gw.name, "nft", "-f", "-"], input="\n".join(lines) + "\n",
        text=True, timeout=300, check=True)
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(["ip", "netns", "exec", lab.gw.name, "nft", "add", "rule", "ip", "rulepermapping",
                    "prerouting", "tcp", "dport", "60001", "dnat", "to", "192.168.77.10:9"], check=True, timeout=60)
    add = time.perf_counter() - t0
    out = subprocess.run(
        ["ip", "netns", "exec", lab.isp.name, "iperf3", "-c", "203.0.114.2", "-p", "15201", "-t", "3", "-J"],
        capture_output=True, text=True, timeout=60,
    )
    gbps = json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
    subprocess.run(["ip", "netns", "exec", lab.gw.name, "nft", "delete", "table", "ip", "rulepermapping"], timeout=60)
    return {"rules": 2 * size + 3, "load_s": round(load, 3), "add_rule_ms": round(add * 1000, 2), "iperf3_gbps": round(gbps, 2)}


def runBackend(args) -> dict[str, Any]:
    """Parts 2 and 3, in a tests.integration.netns lab of their own."""
    if args.gatewayd_path:
        sys.path.insert(0, args.gatewayd_path)
    sys.path.insert(1, str(ROOT))
    from tests.integration.netns import Lab

    lab = Lab(prefix=f"gwbn{args.tag}")
    out: dict[str, Any] = {}
    try:
        lab.up()
        lab.gw.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        server = lab.spawn(lab.lan, ["iperf3", "-s", "-p", "5201"], Path("/dev/null"))
        time.sleep(0.5)
        log("backend (in-process): sizes " + ",".join(map(str, args.sizes)))
        r = lab.gw.run(sys.executable, str(Path(__file__).resolve()), "--inner",
                       json.dumps({"isp": lab.isp.name, "sizes": args.sizes, "path": args.gatewayd_path}),
                       timeout=min(900, max(60, bench_igd_budget.left())), check=False)
        try:
            out["backend"] = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            out["backend"] = {"status": "error", "detail": f"exit {r.returncode}: {r.stderr.strip()[-800:]}"}
        if not args.no_emulation:
            log("emulation of miniupnpd's rule-per-mapping layout (nft -f, no daemon)")
            out["emulation"] = {n: ruleMinded(lab, n) for n in (1, args.sizes[-1])}
        server.kill()
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
        log(f"backend part: {out['error']}")
    finally:
        lab.down()
    return out


# ================================================================ 1. the daemons through SOAP


class GatewaydNFT(bench_igd.Gatewayd):
    """bench_igd.py's gatewayd, with nat = "nftables" (the kernel) and on_stop = "clean"."""

    nat = "nftables"
    friendlyName = "gatewayd nat bench"

    def extraMappings(self) -> int:
        return self.args.samples

    def sourcePath(self) -> str | None:
        return self.args.gatewayd_path or str(ROOT)


class MiniupnpdNFT(bench_igd.Miniupnpd):
    """
    bench_igd.py's miniupnpd (daemon mode, private /dev/log, the nft skeleton
    in -gw). Stopped with SIGKILL: on SIGTERM it deletes its rules one by one,
    which takes minutes with 10 000; the namespace goes with its rules.
    """

    def stop(self) -> None:
        if self.pid is not None and bench_igd.alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
            end = time.monotonic() + 10
            while time.monotonic() < end and bench_igd.alive(self.pid):
                time.sleep(0.05)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def ruleset(lab: bench_igd.Lab) -> dict[str, Any]:
    """The rules in the gateway namespace and the size of `nft list ruleset`."""
    listing = lab.ns(lab.gw, "nft", "-a", "list", "ruleset", timeout=120).stdout
    rules = sum(1 for line in listing.splitlines()
                if "# handle" in line and not line.strip().startswith(("table", "chain", "set", "map", "flowtable")))
    plain = lab.ns(lab.gw, "nft", "list", "ruleset", timeout=120).stdout
    tables = [t.strip() for t in lab.ns(lab.gw, "nft", "list", "tables").stdout.splitlines() if t.strip()]
    return {"rules": rules, "ruleset_bytes": len(plain.encode()), "tables": tables}


def iperf(lab: bench_igd.Lab, seconds: int) -> dict[str, Any]:
    try:
        r = lab.ns(lab.isp, "iperf3", "-c", WAN_IP, "-p", str(IPERF_PORT), "-t", str(seconds), "-J",
                   timeout=seconds + 30, check=False)
        data = json.loads(r.stdout)
        if "error" in data:
            return {"status": "error", "detail": data["error"]}
        return {"status": "ok", "gbps": round(data["end"]["sum_received"]["bits_per_second"] / 1e9, 3),
                "retransmits": data["end"].get("sum_sent", {}).get("retransmits")}
    except (subprocess.TimeoutExpired, ValueError, KeyError) as e:
        return {"status": "error", "detail": f"{type(e).__name__}: {e}"}


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


def runDaemon(kind: type, args, budget: bench_igd.Budget, tag: str) -> dict[str, Any]:
    lab = bench_igd.Lab(tag)
    tmp = Path(tempfile.mkdtemp(prefix=f"gwdb{tag}-"))
    daemon = kind(lab, tmp, args)
    report: dict[str, Any] = {"daemon": kind.name, "version": daemon.version(), "sizes": {}, "notes": []}
    runner = bench_igd.Runner(daemon, lab, budget, args)
    server = None
    try:
        lab.up()
        lab.ns(lab.gw, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # bench_igd.py's lab has no LAN default route (HTTP stays on the LAN);
        # the iperf3 server's replies to the ISP need one.
        lab.ns(lab.lan, "ip", "route", "add", "default", "via", GW_LAN_IP)
        server = subprocess.Popen(["ip", "netns", "exec", lab.lan, "iperf3", "-s", "-p", str(IPERF_PORT)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        w = runner.startAndWait()
        if w.get("status") != "ok":
            report["error"] = f"daemon not serving: {w}"
            report["log_tail"] = daemon.logTail()
            return report
        report["pid"] = daemon.pid
        desc = runner.client(["describe"], 20)
        if desc.get("status") != "ok":
            report["error"] = f"description: {desc}"
            return report
        runner.ctl, runner.stype = desc["controlURL"], desc["serviceType"]
        report["service"] = {"controlURL": runner.ctl, "serviceType": runner.stype}
        report["ruleset_idle"] = ruleset(lab)

        def add(first: int, last: int, base: int, cap: float | None = None) -> dict:
            return runner.phase(f"AddPortMapping {base + first - 1}..{base + last - 1}", [
                "add", "--first", str(first), "--last", str(last), "--base", str(base),
                "--client", HOST_IP, "--lease", "0",
            ], cap=cap)

        target = add(1, 1, IPERF_PORT, cap=60)
        if target.get("added") != 1:
            report["error"] = f"the iperf3 mapping was refused: {target}"
            return report
        # 1 other mapping, then iperf3: the baseline.
        fill = add(1, 1, FILL_BASE, cap=60)
        have = fill.get("added", 0)
        fillLat: list[float] = list(fill.pop("latencies_ms", []))
        report["iperf3_with_1"] = {"other_mappings": have, **iperf(lab, args.iperf_seconds), **ruleset(lab)}
        log(f"{daemon.name}: iperf3 with {have} other mapping: {report['iperf3_with_1'].get('gbps')} Gbit/s")
        fillWall = 0.0
        for size in args.sizes:
            if runner.crashed:
                break
            at: dict[str, Any] = {"target": size}
            if have < size:
                t0 = time.monotonic()
                f = add(have + 1, size, FILL_BASE)
                fillWall += time.monotonic() - t0
                fillLat.extend(f.pop("latencies_ms", []))
                have += f.get("added", 0)
                at["fill"] = {k: f.get(k) for k in ("status", "added", "faults", "stopped", "detail",
                                                     "daemon_cpu_s", "wall_s_with_client_start")}
                if have < size:
                    why = f.get("stopped") or f.get("detail") or f.get("status")
                    at["limit_hit"] = why
                    runner.notes.append(f"{daemon.name}: filling to {size} stopped at {have} ({why})")
                    log(f"{daemon.name}: filling to {size} stopped at {have} ({why})")
            at["mappings"] = have
            at["fill_window"] = bench_igd.latencyWindow(fillLat, have)
            if runner.crashed:
                report["sizes"][str(size)] = at
                break
            # The measured additions, then deleted one by one (DeletePortMapping:
            # no range call, miniupnpd 2.3.1 overflows with > 128 in a range).
            s = add(1, args.samples, SAMPLE_BASE, cap=min(args.phase_timeout, 600))
            lat = s.pop("latencies_ms", [])
            at["add_ms_median"] = pct(lat, 0.5)
            at["add_ms_p90"] = pct(lat, 0.9)
            at["add_samples"] = len(lat)
            at["add_daemon_cpu_ms_per_add"] = (s["daemon_cpu_s"] / len(lat) * 1e3
                                               if s.get("daemon_cpu_s") is not None and lat else None)
            if s.get("added") != args.samples:
                at["add_samples_problem"] = s.get("stopped") or s.get("detail") or s.get("faults")
            at.update(ruleset(lab))  # with the samples still in: `have` + samples + the iperf3 one
            at["mappings_in_ruleset_count"] = have + (s.get("added") or 0) + 1
            d = runner.phase(f"DeletePortMapping x{s.get('added') or 0}", [
                "delete", "--single", "--lo", str(SAMPLE_BASE), "--hi", str(SAMPLE_BASE + args.samples - 1),
                "--expected", str(args.samples),
            ], cap=min(args.phase_timeout, 600), timeout=args.request_timeout)
            at["delete_samples"] = {"deleted": d.get("deleted"), "total_s": d.get("total_s"),
                                    "p50_ms": (d.get("latency") or {}).get("p50_ms"), "problem": d.get("problem")}
            if size == args.sizes[-1] or args.iperf_each_size:
                at["iperf3"] = iperf(lab, args.iperf_seconds)
                log(f"{daemon.name}: iperf3 with {have} other mappings: {at['iperf3'].get('gbps')} Gbit/s")
            report["sizes"][str(size)] = at
            log(f"{daemon.name}: at {have}: add median {at['add_ms_median']} ms, {at['rules']} rules, "
                f"{at['ruleset_bytes']} bytes")
            if have < size:
                break
        report["fill"] = {
            "mappings": have, "wall_s": round(fillWall, 1),
            "median_ms_per_1000_calls": [round(bench_igd.median(fillLat[i:i + 1000]), 2)
                                         for i in range(0, len(fillLat), 1000)],
        }
        report["crashed_during"] = runner.crashes
    except Exception as e:
        report["error"] = f"{type(e).__name__}: {e}"
        log(f"{kind.name}: {report['error']}")
    finally:
        report["notes"] = runner.notes
        if getattr(daemon, "logFile", None) is not None and (report.get("error") or runner.crashes):
            report["log_tail"] = daemon.logTail()
        try:
            daemon.stop()
        finally:
            if server is not None and server.poll() is None:
                server.kill()
                server.wait(5)
            lab.down()
            if args.keep_logs:
                report["tmp_dir"] = str(tmp)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    return report


# ================================================================ output


def ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return a / b
    return None


def daemonRows(result: dict) -> list[tuple[str, Any, Any]]:
    g = result["daemons"].get("gatewayd") or {}
    m = result["daemons"].get("miniupnpd") or {}
    rows: list[tuple[str, Any, Any]] = []

    def both(label: str, path: tuple) -> None:
        rows.append((label, bench_igd.dig(g, *path), bench_igd.dig(m, *path)))

    for size in result["settings"]["sizes"]:
        k = str(size)
        both(f"at {size}: mappings reached", ("sizes", k, "mappings"))
        both(f"at {size}: AddPortMapping median ms", ("sizes", k, "add_ms_median"))
        both(f"at {size}: AddPortMapping p90 ms", ("sizes", k, "add_ms_p90"))
        both(f"at {size}: daemon CPU ms / add", ("sizes", k, "add_daemon_cpu_ms_per_add"))
        both(f"at {size}: fill, median ms of calls around #{size}", ("sizes", k, "fill_window", "median_ms"))
        both(f"at {size}: nft rules (whole ruleset)", ("sizes", k, "rules"))
        both(f"at {size}: `nft list ruleset` bytes", ("sizes", k, "ruleset_bytes"))
    top = str(result["settings"]["sizes"][-1])
    both("iperf3 Gbit/s, 1 other mapping", ("iperf3_with_1", "gbps"))
    both(f"iperf3 Gbit/s, {top} other mappings", ("sizes", top, "iperf3", "gbps"))
    rows.append((f"iperf3 {top} / 1 (same daemon)",
                 ratio(bench_igd.dig(g, "sizes", top, "iperf3", "gbps"), bench_igd.dig(g, "iperf3_with_1", "gbps")),
                 ratio(bench_igd.dig(m, "sizes", top, "iperf3", "gbps"), bench_igd.dig(m, "iperf3_with_1", "gbps"))))
    both(f"fill to {top}: wall s (SOAP adds)", ("fill", "wall_s"))
    return rows


def show(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return bench_igd.number(v)
    return str(v)


def table(result: dict) -> str:
    rows = daemonRows(result)
    width = max(len(r[0]) for r in rows) + 2
    lines = ["1. daemons through SOAP (same lab, client and load); g/m = gatewayd / miniupnpd",
             f"{'':{width}}{'gatewayd':>12}{'miniupnpd':>12}{'g/m':>8}", "-" * (width + 32)]
    ratios: dict[str, float] = {}
    for label, gv, mv in rows:
        r = ratio(gv, mv) if "mappings reached" not in label else None
        if r is not None:
            ratios[label] = round(r, 4)
        lines.append(f"{label:{width}}{show(gv):>12}{show(mv):>12}{(f'{r:.2f}' if r is not None else ''):>8}")
    result["ratios_gatewayd_over_miniupnpd"] = ratios
    b = result.get("backend", {}).get("backend")
    if isinstance(b, dict) and b.get("sizes"):
        lines += ["", "2. gatewayd backend in-process (NFTablesBackend.apply, no HTTP)"]
        for size, v in b["sizes"].items():
            lines.append(f"  at {size}: add median/p90 {v['add_ms_median']}/{v['add_ms_p90']} ms, {v['rules']} rules, "
                         f"`nft list table inet gatewayd` {v['list_table_bytes']} bytes"
                         + (f", iperf3 {v['iperf3_gbps']} Gbit/s" if "iperf3_gbps" in v else ""))
        lines.append(f"  rebuild of {b.get('rebuild_mappings')} mappings after `nft flush ruleset`: {b.get('rebuild_s')} s "
                     f"({b.get('rebuild_elements')} elements back)")
    elif result.get("backend"):
        lines += ["", f"2. backend: {json.dumps(result['backend'])[:300]}"]
    e = result.get("backend", {}).get("emulation")
    if e:
        lines += ["", "3. EMULATION of miniupnpd's rule-per-mapping layout (nft -f, no daemon)"]
        for n, v in e.items():
            lines.append(f"  {n} mappings: {v['rules']} rules, iperf3 {v['iperf3_gbps']} Gbit/s, "
                         f"one more rule {v['add_rule_ms']} ms, load {v['load_s']} s")
    return "\n".join(lines)


# ================================================================ main


bench_igd_budget: bench_igd.Budget


def parseArgs(argv: list[str]):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", metavar="FILE", help="also write the results here")
    p.add_argument("--sizes", help="mapping counts, ascending (default 10,1000,10000)")
    p.add_argument("--samples", type=int, default=SAMPLES, help="measured additions at each size")
    p.add_argument("--iperf-seconds", type=int, default=3)
    p.add_argument("--iperf-each-size", action="store_true", help="iperf3 at every size, not only the largest")
    p.add_argument("--no-miniupnpd", action="store_true")
    p.add_argument("--no-gatewayd", action="store_true", help="no gatewayd daemon (part 1)")
    p.add_argument("--no-backend", action="store_true", help="skip parts 2 and 3 (in-process backend, emulation)")
    p.add_argument("--no-emulation", action="store_true", help="skip part 3")
    p.add_argument("--request-timeout", type=float, default=30.0, help="per SOAP request, seconds")
    p.add_argument("--phase-timeout", type=float, default=1800.0,
                   help="seconds per phase (miniupnpd's fill to 10 000 takes ~15-25 min)")
    p.add_argument("--total-timeout", type=float, default=3600.0, help="seconds for the whole run")
    p.add_argument("--start-timeout", type=float, default=60.0)
    p.add_argument("--twistd", default=str(Path(sys.executable).parent / "twistd"))
    p.add_argument("--gatewayd-path", metavar="DIR",
                   help="run gatewayd from this source tree (first on its PYTHONPATH), e.g. a `git archive` of a commit")
    p.add_argument("--keep-logs", action="store_true", help="keep the daemons' temp dirs")
    p.add_argument("--inner", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.sizes = [int(s) for s in (a.sizes or ",".join(map(str, SIZES))).split(",")]
    if a.sizes != sorted(a.sizes) or not all(1 <= s <= 20000 for s in a.sizes):
        p.error("--sizes: ascending, each 1..20000")
    if not 1 <= a.samples <= 500:
        p.error("--samples: 1..500")
    a.python_for_gatewayd = str(Path(a.twistd).parent / "python")
    if not Path(a.python_for_gatewayd).exists():
        a.python_for_gatewayd = sys.executable
    return a


def main(argv: list[str]) -> int:
    global bench_igd_budget
    args = parseArgs(argv)
    if args.inner:
        lab = json.loads(args.inner)
        if lab.get("path"):
            sys.path.insert(0, lab["path"])
        sys.path.insert(1, str(ROOT))
        from twisted.internet import task
        from twisted.internet.defer import Deferred

        def run(reactor: Any) -> Deferred[None]:
            d = Deferred.fromCoroutine(inner(reactor, lab))
            d.addCallback(lambda r: print(json.dumps(r)))
            return d

        task.react(run)
        return 0
    bench_igd.preflight("bench_nat.py", ("ip", "nft", "unshare", "ss", "iperf3"))
    budget = bench_igd_budget = bench_igd.Budget(args.total_timeout, args.phase_timeout)
    tag = args.tag = secrets.token_hex(3)
    rootTables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=30).stdout
    result: dict[str, Any] = {
        "bench": "bench_nat.py",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"nproc": os.cpu_count(), "kernel": os.uname().release},
        "settings": {"sizes": args.sizes, "samples": args.samples, "iperf_seconds": args.iperf_seconds,
                     "request_timeout_s": args.request_timeout, "phase_timeout_s": args.phase_timeout,
                     "total_timeout_s": args.total_timeout, "lab_tag": tag,
                     "gatewayd_path": args.gatewayd_path or str(ROOT)},
        "daemons": {},
        "notes": [],
    }
    kinds: list[type] = []
    if not args.no_gatewayd:
        kinds.append(GatewaydNFT)
    if not args.no_miniupnpd:
        if os.path.exists(MINIUPNPD):
            kinds.append(MiniupnpdNFT)
        else:
            result["notes"].append(f"{MINIUPNPD} not installed: miniupnpd not run, no ratios")
    t0 = time.monotonic()
    try:
        if not args.no_backend:
            result["backend"] = runBackend(args)
        for kind in kinds:
            rep = runDaemon(kind, args, budget, tag + kind.name[0])
            result["daemons"][kind.name] = rep
            result["notes"].extend(rep.get("notes", []))
            if rep.get("error"):
                result["notes"].append(f"{kind.name}: {rep['error']}")
    except KeyboardInterrupt as e:
        result["notes"].append(f"interrupted ({e})")
        result["interrupted"] = True
    finally:
        bench_igd.cleanupAll()
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    result["namespaces_left"] = [ns for ns in bench_igd.run(["ip", "netns", "list"], check=False).stdout.split()
                                 if ns.startswith((f"gwdb{tag}", f"gwbn{tag}"))]
    after = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=30).stdout
    result["root_nft_tables_unchanged"] = after == rootTables
    text = table(result)
    print(text)
    print()
    print("versions: " + ", ".join(f"{k} {v.get('version')}" for k, v in result["daemons"].items()))
    print(f"machine: {result['machine']['nproc']} CPUs, kernel {result['machine']['kernel']}; elapsed {result['elapsed_s']:.0f} s")
    for note in result["notes"]:
        print(f"note: {note}")
    if result["namespaces_left"] or not result["root_nft_tables_unchanged"]:
        print(f"WARNING: namespaces left {result['namespaces_left']}, root nft tables unchanged: "
              f"{result['root_nft_tables_unchanged']}")
    bench_igd.emitJSON(result, args.json)
    return 2 if result.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
