"""
Benchmark of the nftables NAT backend, in network namespaces it creates
(the integration tests' lab: LAN hosts, gateway, ISP) and removes.

Run as root from the repository: ``python bench/bench_nat.py [--json out.json]``.
See bench/README-nat.rst for what is measured and the goals.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = (10, 1000, 10000)
SAMPLES = 30


def mappingFor(i: int, wan: str = "isp1", interface: str = "wan0") -> Any:
    from gatewayd.interfaces import NATMapping

    return NATMapping(wan, interface, "TCP" if i % 2 else "UDP", 20000 + i // 2, "",
                      f"192.168.77.{10 + i % 2}", 1024 + i // 2)


async def inner(reactor: Any, lab: dict[str, str]) -> dict[str, Any]:
    """
    In the gateway namespace: the backend with the real reactor and nft.
    """
    from twisted.internet.defer import Deferred

    from gatewayd.interfaces import NATMapping
    from gatewayd.nat.nftables import NFTablesBackend, TableSettings, WANSettings

    class Config:
        class gateway:
            onStop = "clean"

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
    for size in SIZES:
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
        if size in (10, 10000) and shutil.which("iperf3"):
            results["sizes"][size]["iperf3_gbps"] = round(iperf(), 2)
    # Rebuild of everything after a flush: the check finds the table gone.
    nft("flush", "ruleset")
    t0 = time.perf_counter()
    backend._requestCheck()
    while backend._kickCall is not None or backend._working is not None:
        d: Deferred[None] = Deferred()
        reactor.callLater(0.001, d.callback, None)
        await d
    results["rebuild_10000_s"] = round(time.perf_counter() - t0, 3)
    results["rebuild_elements"] = nft("list", "table", "inet", "gatewayd").count(" : 192.168.77.")
    await backend.stopService()
    return results


def ruleMinded(lab: Any, size: int) -> dict[str, Any]:
    """
    The same mappings as one DNAT rule each (the layout of miniupnpd's
    nftables backend: a rule per mapping in its prerouting chain), for the
    throughput comparison.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        from twisted.internet import task
        from twisted.internet.defer import Deferred

        lab = json.loads(args.inner)

        def run(reactor: Any) -> Deferred[None]:
            d = Deferred.fromCoroutine(inner(reactor, lab))
            d.addCallback(lambda r: print(json.dumps(r)))
            return d

        task.react(run)
        return

    from tests.integration.netns import Lab

    lab = Lab(prefix="gwbn" + __import__("secrets").token_hex(2))
    try:
        lab.up()
        lab.gw.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        server = lab.spawn(lab.lan, ["iperf3", "-s", "-p", "5201"], Path("/dev/null"))
        time.sleep(0.5)
        out = lab.gw.run(sys.executable, str(Path(__file__).resolve()), "--inner",
                         json.dumps({"isp": lab.isp.name}), timeout=900)
        results = json.loads(out.stdout.strip().splitlines()[-1])
        results["rule_per_mapping"] = {n: ruleMinded(lab, n) for n in (1, 10000)}
        server.kill()
    finally:
        lab.down()
    sizes = results["sizes"]
    ours = {int(k): v for k, v in sizes.items()}
    report = {
        "results": results,
        "throughput_ratio_10000_vs_1": round(ours[10000]["iperf3_gbps"] / ours[10]["iperf3_gbps"], 3),
        "rule_per_mapping_throughput_ratio_10000_vs_1": round(
            results["rule_per_mapping"][10000]["iperf3_gbps"] / results["rule_per_mapping"][1]["iperf3_gbps"], 3),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
