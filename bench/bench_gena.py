#!/usr/bin/env python3
"""
Benchmark gatewayd's GENA fan-out: how long until the last of 500 subscribers
has the NOTIFY of one change, with and without 50 blackholed subscribers among
them, and the daemon's RSS with 1000 subscriptions.

    sudo /work/venv/bin/python bench/bench_gena.py [--json out.json]
        [--subscribers 500] [--blackholed 50] [--total 1000] [--changes 3]

Not a test: it prints a table and the JSON of every figure. See
bench/README-gena.rst.

It builds a lab of its own: two network namespaces named C{gwge<hex>-gw} and
C{gwge<hex>-lan} joined by a veth pair created inside them (nothing is added
to the caller's namespace). gatewayd runs in C{-gw} (memory NAT, one
C{simulated} WAN, the LAN on the veth, 192.168.78.1); this same script runs
in C{-lan} as the subscribers (C{--client}): plain asyncio HTTP listeners on
five LAN addresses (192.168.78.10-14) times up to 200 ports, each subscribed
to isp1's WANIPConnection:2 from its own address. The change is one
AddPortMapping sent over SOAP from the LAN; its time is taken just before the
request is sent, in the process that also timestamps every NOTIFY.

Blackholed subscribers answer their initial event, then never again: half of
them accept every later connection and never answer it, the other half's
ports drop SYNs (an nftables rule in the C{-lan} namespace). So the change's
NOTIFY to each of them is attempted at the same time as everyone else's.

Processes and namespaces are removed at the end, also on errors, ^C and
SIGTERM. Connections go only to addresses inside the lab.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# The namespace and process helpers are bench_igd.py's (stdlib only).
from bench_igd import addNamespace, alive, cleanupAll, log, removeNamespace, run  # noqa: E402
from bench_igd import memory as rss  # noqa: E402  (VmRSS and VmHWM of a pid)

LAN_NET = "192.168.78"
GW_IP = f"{LAN_NET}.1"
HOST_IPS = [f"{LAN_NET}.{10 + n}" for n in range(5)]
HTTP_PORT = 5000
EVENT_PATH = "/evt/isp1/WANIPConn1"
CONTROL_PATH = "/ctl/isp1/WANIPConn1"
WANIP = "urn:schemas-upnp-org:service:WANIPConnection:2"
FIRST_LISTEN_PORT = 20000
FIRST_MAPPED_PORT = 40000
IF_GW, IF_HOST = "gelan0", "gehost0"
GOAL_SECONDS = 1.0

def raiseFileLimit(wanted: int = 16384) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# ---------------------------------------------------------------- the lab


class Lab:
    """
    C{-gw} (LAN 192.168.78.1/24 on gelan0) -- C{-lan} (192.168.78.10-14 on
    gehost0).
    """

    def __init__(self, tag: str) -> None:
        self.gw, self.lan = f"gwge{tag}-gw", f"gwge{tag}-lan"

    def up(self) -> None:
        for ns in (self.gw, self.lan):
            addNamespace(ns)
            run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                 "net.ipv6.conf.default.disable_ipv6=1"], check=False)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", self.gw, "link", "add", IF_GW, "type", "veth", "peer", "name", IF_HOST, "netns", self.lan])
        run(["ip", "-n", self.gw, "addr", "add", f"{GW_IP}/24", "dev", IF_GW])
        for ip in HOST_IPS:
            run(["ip", "-n", self.lan, "addr", "add", f"{ip}/24", "dev", IF_HOST])
        for ns, dev in ((self.gw, IF_GW), (self.lan, IF_HOST)):
            run(["ip", "-n", ns, "link", "set", dev, "up"])
        run(["ip", "-n", self.gw, "route", "add", "224.0.0.0/4", "dev", IF_GW])
        # Thousands of short NOTIFY connections: room for their TIME_WAITs,
        # clear of the listeners' ports (20000 and up).
        for ns in (self.gw, self.lan):
            run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=30000 65000"],
                check=False)

    def down(self) -> None:
        for ns in (self.lan, self.gw):
            removeNamespace(ns)


def gatewaydConfig(tmp: Path, args) -> Path:
    conf = tmp / "gatewayd.toml"
    perClient = -(-max(args.total, args.subscribers + args.blackholed) // len(HOST_IPS)) + 10
    conf.write_text(
        f"""# written by bench_gena.py
[gateway]
state_dir = "{tmp / 'state'}"
nat = "memory"
on_stop = "clean"

[lan]
interfaces = ["{IF_GW}"]
http_port = {HTTP_PORT}

[upnp]
friendly_name = "gatewayd GENA bench"
secure_mode = true
max_subscriptions = {max(2048, args.total * 2)}
max_subscriptions_per_client = {perClient}
rules = [
  "allow 1024-65535 {LAN_NET}.0/24 1024-65535",
  "deny 0-65535 0.0.0.0/0 0-65535",
]

[[wan]]
name = "isp1"
interface = "sim-isp1"
link = {{ type = "simulated", address = "203.0.114.2/24", gateway = "203.0.114.1" }}
"""
    )
    (tmp / "state").mkdir(exist_ok=True)
    return conf


def startGatewayd(lab: Lab, tmp: Path, args) -> subprocess.Popen:
    conf = gatewaydConfig(tmp, args)
    env = dict(os.environ)
    if args.gatewayd_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.gatewayd_path, env.get("PYTHONPATH")]))
    with open(tmp / "gatewayd.log", "wb") as out:
        # ip netns exec and twistd's #! both exec: the pid is the daemon's.
        return subprocess.Popen(
            ["ip", "netns", "exec", lab.gw, args.twistd, "-n", "--pidfile=", "gatewayd", "--config", str(conf)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=tmp, env=env,
            preexec_fn=raiseFileLimit,
        )


def stopProcess(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def runBench(args) -> dict:
    tag = secrets.token_hex(3)
    lab = Lab(tag)
    tmp = Path(tempfile.mkdtemp(prefix="gwge-"))
    daemon = client = None
    report: dict = {
        "host": {"python": platform.python_version(), "kernel": platform.release(), "cpus": os.cpu_count()},
        "parameters": {k: getattr(args, k) for k in ("subscribers", "blackholed", "total", "changes")},
    }
    try:
        lab.up()
        daemon = startGatewayd(lab, tmp, args)
        log(f"gatewayd pid {daemon.pid} in {lab.gw}; logs in {tmp}")
        client = subprocess.Popen(
            ["ip", "netns", "exec", lab.lan, sys.executable, str(Path(__file__).resolve()), "--client",
             "--subscribers", str(args.subscribers), "--blackholed", str(args.blackholed),
             "--total", str(args.total), "--changes", str(args.changes)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, preexec_fn=raiseFileLimit,
        )
        deadline = time.monotonic() + args.timeout
        for line in client.stdout:  # bounded: the client ends, or the deadline kills it
            if time.monotonic() > deadline:
                raise RuntimeError("the client took too long")
            message = json.loads(line)
            if "measure" in message:
                report.setdefault("rss", {})[message["measure"]] = rss(daemon.pid)
                client.stdin.write("ok\n")
                client.stdin.flush()
            elif "result" in message:
                report.update(message["result"])
            elif "log" in message:
                log("client: " + message["log"])
        client.wait(10)
        if daemon.poll() is not None:
            report["daemonExited"] = daemon.returncode
    finally:
        stopProcess(client)
        stopProcess(daemon)
        lab.down()
        tail = (tmp / "gatewayd.log").read_text(errors="replace").splitlines()[-10:] if (tmp / "gatewayd.log").exists() else []
        report["gatewaydLogTail"] = tail
        if not args.keep_logs:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
        else:
            report["logs"] = str(tmp)
    return report


# ---------------------------------------------------------------- the subscribers (in -lan)


class Listener:
    """
    One subscriber: an HTTP listener on (address, port) that records every
    NOTIFY it gets.

    @ivar hostile: answers its initial event, then never again (the other
        kind of blackhole drops SYNs by firewall rule).
    """

    def __init__(self, address: str, port: int, hostile: bool = False) -> None:
        self.address, self.port, self.hostile = address, port, hostile
        self.events: list[tuple[int, float, str]] = []
        self.sid: str | None = None
        self.server: asyncio.AbstractServer | None = None
        self.arrived = asyncio.Event()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, self.address, self.port, backlog=64)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
            length = re.search(rb"(?im)^content-length:\s*([0-9]+)", head)
            body = await reader.readexactly(int(length.group(1)) if length else 0)
            now = time.monotonic()
            seq = re.search(rb"(?im)^seq:\s*([0-9]+)", head)
            self.events.append((int(seq.group(1)) if seq else -1, now, body.decode("utf-8", "replace")))
            self.arrived.set()
            if self.hostile and seq and seq.group(1) != b"0":
                await asyncio.sleep(120)  # never answer (the daemon gives up first)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
            pass
        except asyncio.CancelledError:  # the run is over
            pass
        finally:
            writer.close()

    def has(self, entries: int) -> float | None:
        """
        @return: when the event saying PortMappingNumberOfEntries=entries
            arrived, or None.
        """
        for _, when, body in self.events:
            if f"<PortMappingNumberOfEntries>{entries}</PortMappingNumberOfEntries>" in body:
                return when
        return None


async def request(local: str, raw: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(GW_IP, HTTP_PORT, local_addr=(local, 0)), timeout
    )
    try:
        writer.write(raw)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), timeout)
        return int(lines[0].split()[1]), headers, body
    finally:
        writer.close()


async def subscribeAll(listeners: list[Listener], concurrency: int = 64) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(listener: Listener) -> None:
        raw = (
            f"SUBSCRIBE {EVENT_PATH} HTTP/1.1\r\nHOST: {GW_IP}:{HTTP_PORT}\r\n"
            f"CALLBACK: <http://{listener.address}:{listener.port}/notify>\r\nNT: upnp:event\r\n"
            f"TIMEOUT: Second-1800\r\nUser-Agent: bench_gena\r\n\r\n"
        ).encode()
        async with gate:
            code, headers, _ = await request(listener.address, raw)
        if code != 200:
            raise RuntimeError(f"SUBSCRIBE from {listener.address}:{listener.port}: {code}")
        listener.sid = headers["sid"]

    await asyncio.gather(*(one(listener) for listener in listeners))


async def addPortMapping(n: int) -> int:
    client = HOST_IPS[0]
    port = FIRST_MAPPED_PORT + n
    args = (
        f"<NewRemoteHost></NewRemoteHost><NewExternalPort>{port}</NewExternalPort>"
        f"<NewProtocol>TCP</NewProtocol><NewInternalPort>{port}</NewInternalPort>"
        f"<NewInternalClient>{client}</NewInternalClient><NewEnabled>1</NewEnabled>"
        f"<NewPortMappingDescription>bench</NewPortMappingDescription><NewLeaseDuration>3600</NewLeaseDuration>"
    )
    body = (
        '<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
        f'<u:AddPortMapping xmlns:u="{WANIP}">{args}</u:AddPortMapping></s:Body></s:Envelope>\r\n'
    ).encode()
    raw = (
        f"POST {CONTROL_PATH} HTTP/1.1\r\nHOST: {GW_IP}:{HTTP_PORT}\r\n"
        f'Content-Type: text/xml; charset="utf-8"\r\nSOAPAction: "{WANIP}#AddPortMapping"\r\n'
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    code, _, _ = await request(client, raw)
    return code


async def waitFor(condition, seconds: float, step: float = 0.005) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        await asyncio.sleep(step)
    return condition()


def emit(**message) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def measure(label: str) -> None:
    """
    Ask the parent to read the daemon's RSS now, and wait until it did.
    """
    emit(measure=label)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def fanOut(listeners: list[Listener], entries: int, seconds: float = 30.0) -> dict:
    """
    Make one change (AddPortMapping) and time the NOTIFYs of it.
    """
    started = time.monotonic()
    code = await addPortMapping(entries)
    answered = time.monotonic()
    if code != 200:
        raise RuntimeError(f"AddPortMapping answered {code}")
    await waitFor(lambda: all(l.has(entries) is not None for l in listeners), seconds)
    arrivals = sorted(t - started for l in listeners if (t := l.has(entries)) is not None)
    return {
        "delivered": len(arrivals),
        "of": len(listeners),
        "soapSeconds": round(answered - started, 4),
        "firstSeconds": round(arrivals[0], 4) if arrivals else None,
        "medianSeconds": round(statistics.median(arrivals), 4) if arrivals else None,
        "lastSeconds": round(arrivals[-1], 4) if len(arrivals) == len(listeners) else None,
    }


def nft(script: str) -> None:
    r = subprocess.run(["nft", "-f", "-"], input=script, text=True, capture_output=True, timeout=10)
    if r.returncode != 0:
        raise RuntimeError(f"nft: {r.stderr.strip()[:300]}")


async def clientMain(args) -> dict:
    raiseFileLimit()
    result: dict = {}
    # The daemon is up once it answers (it may take a few seconds to start).
    end = time.monotonic() + 60
    while True:
        try:
            code, _, _ = await request(HOST_IPS[0], f"GET /rootDesc.xml HTTP/1.1\r\nHOST: {GW_IP}:{HTTP_PORT}\r\n\r\n".encode(), 2)
            if code == 200:
                break
        except (OSError, asyncio.TimeoutError):
            pass
        if time.monotonic() > end:
            raise RuntimeError("gatewayd did not answer within 60 s")
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)
    await measure("idle")

    def make(count: int, first: int, hostile: bool = False) -> list[Listener]:
        # Spread over the five addresses, consecutive ports per address.
        return [
            Listener(HOST_IPS[i % len(HOST_IPS)], FIRST_LISTEN_PORT + first + i // len(HOST_IPS), hostile)
            for i in range(count)
        ]

    good = make(args.subscribers, 0)
    for listener in good:
        await listener.start()
    started = time.monotonic()
    await subscribeAll(good)
    emit(log=f"{len(good)} subscribed in {time.monotonic() - started:.2f} s")
    if not await waitFor(lambda: all(l.events for l in good), 30):
        raise RuntimeError(f"initial events: {sum(bool(l.events) for l in good)} of {len(good)}")
    result["initialEventsSeconds"] = round(max(l.events[0][1] for l in good) - started, 3)

    entries = 0
    clean = []
    for _ in range(args.changes):
        entries += 1
        clean.append(await fanOut(good, entries))
        await asyncio.sleep(0.5)
    result["without"] = clean
    emit(log=f"without blackholes: last NOTIFY after {[r['lastSeconds'] for r in clean]} s")

    if args.blackholed:
        offset = args.subscribers // len(HOST_IPS) + 1
        hanging = make(args.blackholed - args.blackholed // 2, offset, hostile=True)
        dropping = make(args.blackholed // 2, offset + len(hanging) // len(HOST_IPS) + 2)
        for listener in hanging + dropping:
            await listener.start()
        await subscribeAll(hanging + dropping)
        if not await waitFor(lambda: all(l.events for l in hanging + dropping), 30):
            raise RuntimeError("the blackholed subscribers did not get their initial events")
        ports = ", ".join(str(p) for p in sorted({l.port for l in dropping}))
        if dropping:
            nft(
                "table inet gwbench {\n  chain input {\n    type filter hook input priority 0;\n"
                f"    tcp dport {{ {ports} }} drop\n  }}\n}}\n"
            )
        await asyncio.sleep(0.2)
        dirty = []
        for _ in range(args.changes):
            entries += 1
            dirty.append(await fanOut(good, entries))
            await asyncio.sleep(0.5)
        result["with"] = dirty
        result["blackholedGotTheChange"] = sum(1 for l in hanging if len(l.events) > 1)
        emit(log=f"with {args.blackholed} blackholed: last NOTIFY after {[r['lastSeconds'] for r in dirty]} s")
        if dropping:
            nft("delete table inet gwbench\n")
        for listener in hanging + dropping:
            listener.server.close()

    # Up to the total: RSS with that many subscriptions.
    have = args.subscribers + args.blackholed
    more = make(max(0, args.total - have), 2 * (args.subscribers + args.blackholed) // len(HOST_IPS) + 10)
    for listener in more:
        await listener.start()
    await subscribeAll(more)
    await waitFor(lambda: all(l.events for l in more), 30)
    await asyncio.sleep(1)
    await measure(f"{args.total} subscriptions")
    result["subscriptions"] = have + len(more)
    return result


def client(args) -> int:
    try:
        result = asyncio.run(clientMain(args))
    except Exception as e:
        emit(result={"error": f"{e.__class__.__name__}: {e}"})
        return 1
    emit(result=result)
    return 0


# ---------------------------------------------------------------- report


def table(report: dict) -> str:
    lines = [f"{'phase':<34} {'delivered':>10} {'SOAP s':>8} {'median s':>9} {'last s':>8}  goal"]
    for key, name in (("without", "500 subscribers"), ("with", "500 + blackholed")):
        for n, r in enumerate(report.get(key, []), 1):
            last = r.get("lastSeconds")
            ok = "ok" if last is not None and last <= GOAL_SECONDS else "MISSED"
            lines.append(
                f"{name + f' (change {n})':<34} {r['delivered']:>5}/{r['of']:<4} {r['soapSeconds']:>8} "
                f"{r['medianSeconds'] if r['medianSeconds'] is not None else '-':>9} "
                f"{last if last is not None else '-':>8}  {ok} (<= {GOAL_SECONDS} s)"
            )
    memory = report.get("rss", {})
    for label, value in memory.items():
        lines.append(f"RSS {label:<30} {value.get('VmRSS_kB') if value else '-':>10} kB")
    idle = (memory.get("idle") or {}).get("VmRSS_kB")
    full = [v.get("VmRSS_kB") for k, v in memory.items() if k != "idle" and v]
    if idle and full and report.get("subscriptions"):
        lines.append(f"RSS per subscription {(full[-1] - idle) / report['subscriptions']:.1f} kB")
    if "error" in report:
        lines.append(f"ERROR: {report['error']}")
    return "\n".join(lines)


def parseArgs(argv: list[str]):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--subscribers", type=int, default=500)
    p.add_argument("--blackholed", type=int, default=50)
    p.add_argument("--total", type=int, default=1000, help="subscriptions for the RSS figure")
    p.add_argument("--changes", type=int, default=3, help="changes timed per phase")
    p.add_argument("--timeout", type=float, default=600, help="seconds for the whole run")
    p.add_argument("--json", help="write the JSON here instead of stdout")
    p.add_argument("--twistd", default=str(Path(sys.executable).with_name("twistd")))
    p.add_argument("--gatewayd-path", help="run gatewayd from this source tree")
    p.add_argument("--keep-logs", action="store_true")
    args = p.parse_args(argv)
    args.subscribers = max(1, min(args.subscribers, 5 * 200))
    args.blackholed = max(0, min(args.blackholed, 200))
    args.total = max(args.subscribers + args.blackholed, min(args.total, 5 * 400))
    args.changes = max(1, min(args.changes, 20))
    return args


def main(argv: list[str]) -> int:
    args = parseArgs(argv)
    if args.client:
        return client(args)
    if os.geteuid() != 0:
        sys.stderr.write("bench_gena.py needs root (it creates network namespaces)\n")
        return 2

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        report = runBench(args)
    except KeyboardInterrupt:
        cleanupAll()
        return 130
    finally:
        cleanupAll()
    print(table(report))
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    else:
        print(text)
    return 0 if "error" not in report else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
