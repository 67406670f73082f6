"""
Failover benchmark: how long LAN traffic takes to leave by the other WAN
after a fault, and to come back after the repair.

In namespaces it creates (tests.integration.netns: a LAN host, the gateway
running gatewayd with nftables NAT and default settings, two ISPs, each
with an "internet host" at 198.18.0.10), the LAN host sends a UDP datagram
every 10 ms, each from a new socket (a new flow: this measures where new
connections go; the integration tests check that a long-lived flow follows).
Each ISP's receiver stamps arrivals with CLOCK_MONOTONIC (shared by all
namespaces). Per trial: a fresh daemon, isp1 carrying traffic, then the
fault; failover = fault -> first datagram arriving at isp2; failback =
repair -> first datagram arriving at isp1 again. Two cases:

  carrier   the ISP's end of isp1's veth goes down (carrier loss);
  blackout  isp1's ISP drops everything from the gateway, carrier up.

Failback includes the flap guard: a WAN that fails less than 60 s after
coming up has flapped and must answer for 10 s before it is used again
(each trial starts a fresh daemon, so every trial is a first flap).

    sudo /work/venv/bin/python bench/failover.py [--trials 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
from pathlib import Path
from tempfile import mkdtemp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.netns import Lab, addISP  # noqa: E402

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
INTERNET = "198.18.0.10"

CONFIG = """
[gateway]
state_dir = "{state}"
nat = "nftables"
on_stop = "clean"

[lan]
interfaces = ["lan0"]
http_port = 5000

[[wan]]
name = "isp1"
interface = "wan0"
priority = 10
link = {{ type = "unmanaged", gateway = "203.0.114.1" }}

[[wan]]
name = "isp2"
interface = "wan1"
priority = 20
link = {{ type = "unmanaged", gateway = "203.0.115.1" }}
"""

RECEIVER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9))
out = open(sys.argv[2], "a", buffering=1)
print("ready", flush=True)
while True:
    data = s.recv(64)
    out.write(f"{time.monotonic():.4f} {data.decode(errors='replace')}\n")
"""

SENDER = r"""
import socket, sys, time
while True:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(f"{time.monotonic():.4f}".encode(), (sys.argv[1], 9))
    except OSError:
        pass
    s.close()
    time.sleep(0.01)
"""

#: Documented defaults of the tools appliance builders use (see README).
REFERENCE = {
    "mwan3 (OpenWrt) defaults": "interval 5 s, down 5, timeout 4 s: 25-30 s to notice a blackout; "
    "60-130 s reported in practice (failure_interval, recovery)",
    "dpinger (pfSense/OPNsense) defaults": "probe 500 ms, loss interval 2000 ms, alarm averaging "
    "10000 ms: 14-17 s to switch",
}


def arrivals(path: Path, after: float) -> float | None:
    """
    @return: the arrival time of the first datagram sent after C{after}
        (datagrams sent earlier and held in a queue during the fault do not
        count).
    """
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        try:
            arrived, sent = (float(x) for x in line.split())
        except ValueError:
            continue
        if sent > after:
            return arrived
    return None


def waitArrival(path: Path, after: float, limit: float) -> float | None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        t = arrivals(path, after)
        if t is not None:
            return t
        time.sleep(0.02)
    return None


def trial(case: str, work: Path) -> tuple[float | None, float | None]:
    lab = Lab()
    lab.up()
    try:
        isp2 = addISP(lab, "wan1", "203.0.115.2", "203.0.115.1")
        gw = lab.gw
        gw.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        gw.run("sysctl", "-q", "-w", "net.ipv4.conf.all.src_valid_mark=1")
        gw.ip("route", "del", "default")
        logs = {}
        for ns, name in ((lab.isp, "isp1"), (isp2, "isp2")):
            ns.ip("addr", "add", INTERNET + "/32", "dev", "lo")
            logs[name] = work / f"{case}-{name}.arrivals"
            logs[name].unlink(missing_ok=True)
            log = work / f"{case}-{name}.out"
            lab.spawn(ns, [sys.executable, "-c", RECEIVER, INTERNET, str(logs[name])], log)
            deadline = time.monotonic() + 10
            while b"ready" not in log.read_bytes() and time.monotonic() < deadline:
                time.sleep(0.05)
        config = work / "gatewayd.toml"
        config.write_text(CONFIG.format(state=work / "state"))
        daemonLog = work / "gatewayd.log"
        lab.spawn(gw, TWISTD + ["-n", "--pidfile=", "--logfile=-", "gatewayd", "--config", str(config)], daemonLog)
        lab.spawn(lab.lan, [sys.executable, "-c", SENDER, INTERNET], work / "sender.out")
        start = time.monotonic()
        if waitArrival(logs["isp1"], start + 1.0, 20) is None:
            raise RuntimeError(f"no traffic via isp1:\n{daemonLog.read_text()[-3000:]}")
        time.sleep(1.0)
        fault = time.monotonic()
        if case == "carrier":
            lab.isp.ip("link", "set", "isp0", "down")
        else:
            lab.isp.run("nft", "add", "table", "inet", "blackout")
            lab.isp.run("nft", "add", "chain", "inet", "blackout", "input",
                        "{ type filter hook input priority 0; policy accept; }")
            lab.isp.run("nft", "add", "rule", "inet", "blackout", "input", "iifname", "isp0", "drop")
        over = waitArrival(logs["isp2"], fault, 30)
        failover = None if over is None else over - fault
        time.sleep(0.5)
        repair = time.monotonic()
        if case == "carrier":
            lab.isp.ip("link", "set", "isp0", "up")
        else:
            lab.isp.run("nft", "delete", "table", "inet", "blackout")
        back = waitArrival(logs["isp1"], repair, 60)
        failback = None if back is None else back - repair
        return failover, failback
    finally:
        lab.down()


def summary(values: list[float | None]) -> dict[str, object]:
    got = sorted(v for v in values if v is not None)
    if not got:
        return {"n": 0, "missed": len(values)}
    p95 = got[min(len(got) - 1, max(0, round(0.95 * len(got)) - 1))]
    return {
        "n": len(got),
        "missed": len(values) - len(got),
        "p50": round(statistics.median(got), 3),
        "p95": round(p95, 3),
        "max": round(got[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--cases", default="carrier,blackout")
    parser.add_argument("--json")
    args = parser.parse_args()
    work = Path(mkdtemp(prefix="gwd-failover-"))
    results: dict[str, dict[str, list[float | None]]] = {}
    for case in args.cases.split(","):
        results[case] = {"failover": [], "failback": []}
        for i in range(args.trials):
            over, back = trial(case, work)
            results[case]["failover"].append(over)
            results[case]["failback"].append(back)
            print(f"{case} trial {i + 1}: failover {over} s, failback {back} s", flush=True)
    goals = {"carrier": 1.0, "blackout": 5.0}
    report = {
        case: {kind: summary(values) for kind, values in r.items()} | {"goal_p95_failover": goals.get(case)}
        for case, r in results.items()
    }
    print()
    print(f"{'case':10} {'measure':9} {'n':>3} {'p50 s':>8} {'p95 s':>8} {'max s':>8}  goal")
    for case, r in report.items():
        for kind in ("failover", "failback"):
            s = r[kind]
            goal = f"p95 <= {r['goal_p95_failover']} s" if kind == "failover" else "(incl. 10 s flap hold)"
            print(f"{case:10} {kind:9} {s.get('n', 0):>3} {s.get('p50', '-'):>8} {s.get('p95', '-'):>8} "
                  f"{s.get('max', '-'):>8}  {goal}")
    print()
    for name, text in REFERENCE.items():
        print(f"{name}: {text}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": report, "raw": results, "reference": REFERENCE}, indent=2))


if __name__ == "__main__":
    main()
