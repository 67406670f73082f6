#!/usr/bin/env python3
"""
The load generator of bench_igd.py: one UPnP control point, stdlib only.

bench_igd.py runs it inside the LAN namespace of a lab (C{ip netns exec}),
once per phase, and reads one JSON object from its standard output. Every
request opens a new TCP connection, sends the headers and SOAP body that
miniupnpc 2.2 sends, reads the response up to its Content-Length (or the
close) and closes, as C{upnpc} does. Every request has a timeout, every loop
a count and a deadline.

    igd_client.py --host IP --port N COMMAND [options]

Commands (see C{--help} of each): C{wait}, C{describe}, C{probe},
C{getextip}, C{add}, C{generic}, C{list}, C{delete}.

A phase whose first answer is UPnP error 401 (Invalid Action) or 602
(Optional Action Not Implemented), or HTTP 401/404/501, reports
C{"status": "not implemented"} instead of figures.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import resource
import socket
import statistics
import sys
import threading
import time
import xml.etree.ElementTree as ET

USER_AGENT = "Debian/12 UPnP/1.1 MiniUPnPc/2.2.4"
WANIP = "urn:schemas-upnp-org:service:WANIPConnection:"
NOT_IMPLEMENTED_CODES = {401, 602}
MAX_RESPONSE = 16 * 1024 * 1024


class Deadline(Exception):
    pass


def now() -> float:
    return time.perf_counter()


def http(host: str, port: int, request: bytes, timeout: float) -> tuple[int, bytes]:
    """
    One exchange on a new connection. Returns (HTTP status, body).
    Raises OSError/ValueError on transport or framing trouble.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(request)
        buf = bytearray()
        headerEnd = -1
        length = None
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
            if len(buf) > MAX_RESPONSE:
                raise ValueError("response too large")
            if headerEnd < 0:
                headerEnd = buf.find(b"\r\n\r\n")
                if headerEnd >= 0:
                    m = re.search(rb"\r\ncontent-length:\s*(\d+)", bytes(buf[:headerEnd + 2]), re.I)
                    length = int(m.group(1)) if m else None
            if headerEnd >= 0 and length is not None and len(buf) >= headerEnd + 4 + length:
                break
    finally:
        sock.close()
    if headerEnd < 0:
        raise ValueError("no complete response headers")
    statusLine = bytes(buf[: buf.find(b"\r\n")])
    parts = statusLine.split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise ValueError(f"bad status line {statusLine[:60]!r}")
    body = bytes(buf[headerEnd + 4:])
    if length is not None:
        body = body[:length]
    return int(parts[1]), body


class IGD:
    def __init__(self, host: str, port: int, ctl: str, stype: str, timeout: float) -> None:
        self.host, self.port, self.ctl, self.stype, self.timeout = host, port, ctl, stype, timeout

    def soap(self, action: str, args: list[tuple[str, object]] = ()) -> bytes:
        body = (
            '<?xml version="1.0"?>\r\n'
            '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
            's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
            f'<u:{action} xmlns:u="{self.stype}">'
            + "".join(f"<{k}>{v}</{k}>" for k, v in args)
            + f"</u:{action}></s:Body></s:Envelope>\r\n"
        ).encode()
        head = (
            f"POST {self.ctl} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            f"User-Agent: {USER_AGENT}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Content-Type: text/xml\r\n"
            f'SOAPAction: "{self.stype}#{action}"\r\n'
            "Connection: Close\r\n"
            "Cache-Control: no-cache\r\n"
            "Pragma: no-cache\r\n"
            "\r\n"
        ).encode()
        return head + body

    def call(self, action: str, args: list[tuple[str, object]] = ()) -> "Result":
        request = self.soap(action, args)
        t0 = now()
        try:
            status, body = http(self.host, self.port, request, self.timeout)
        except (OSError, ValueError) as e:
            return Result(now() - t0, None, None, b"", f"{type(e).__name__}: {e}")
        return Result(now() - t0, status, upnpError(body) if status != 200 else None, body, None)


class Result:
    __slots__ = ("latency", "status", "error", "body", "exc")

    def __init__(self, latency, status, error, body, exc):
        self.latency, self.status, self.error, self.body, self.exc = latency, status, error, body, exc

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def notImplemented(self) -> bool:
        return self.error in NOT_IMPLEMENTED_CODES or self.status in (401, 404, 501)

    def describe(self) -> str:
        if self.exc:
            return self.exc
        if self.error is not None:
            return f"HTTP {self.status}, UPnP error {self.error}"
        return f"HTTP {self.status}"


def upnpError(body: bytes) -> int | None:
    m = re.search(rb"<(?:\w+:)?errorCode>\s*(\d+)\s*<", body)
    return int(m.group(1)) if m else None


def field(body: bytes, name: str) -> str | None:
    m = re.search(rb"<(?:\w+:)?" + name.encode() + rb">([^<]*)<", body)
    return html.unescape(m.group(1).decode("utf-8", "replace")) if m else None


def latencySummary(lat: list[float]) -> dict:
    if not lat:
        return {"n": 0}
    s = sorted(lat)

    def pct(p: float) -> float:
        return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]

    return {
        "n": len(s),
        "p50_ms": pct(50) * 1e3,
        "p99_ms": pct(99) * 1e3,
        "max_ms": s[-1] * 1e3,
        "mean_ms": statistics.fmean(s) * 1e3,
        "over_900ms": sum(1 for v in s if v >= 0.9),
    }


def clientCPU() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def notImplemented(action: str, r: Result) -> dict:
    return {"status": "not implemented", "action": action, "answer": r.describe()}


# ---------------------------------------------------------------- commands


def cmdWait(a) -> dict:
    """GET the description until it answers 200 (bounded by --deadline)."""
    end = now() + a.deadline
    tries, last = 0, ""
    while now() < end and tries < 10000:
        tries += 1
        try:
            status, _ = http(a.host, a.port, description(a), min(a.timeout, 2.0))
            if status == 200:
                return {"status": "ok", "tries": tries}
            last = f"HTTP {status}"
        except (OSError, ValueError) as e:
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.1)
    return {"status": "timeout", "tries": tries, "last": last}


def description(a) -> bytes:
    return (
        f"GET {a.desc_path} HTTP/1.1\r\nHost: {a.host}:{a.port}\r\n"
        f"User-Agent: {USER_AGENT}\r\nConnection: Close\r\n\r\n"
    ).encode()


def cmdDescribe(a) -> dict:
    """Find the first WANIPConnection service (the highest version listed first)."""
    status, body = http(a.host, a.port, description(a), a.timeout)
    if status != 200:
        return {"status": "error", "detail": f"HTTP {status} for {a.desc_path}"}
    root = ET.fromstring(body)
    found = []
    for svc in root.iter():
        if not svc.tag.endswith("}service"):
            continue
        kids = {c.tag.rsplit("}", 1)[-1]: (c.text or "").strip() for c in svc}
        if kids.get("serviceType", "").startswith(WANIP):
            found.append(kids)
    if not found:
        return {"status": "error", "detail": "no WANIPConnection service in the description"}
    first = found[0]
    return {
        "status": "ok",
        "serviceType": first["serviceType"],
        "controlURL": first.get("controlURL", ""),
        "services": len(found),
        "description_bytes": len(body),
    }


def cmdProbe(a) -> dict:
    """One call of each action the bench uses that changes nothing; the answers."""
    igd = a.igd
    calls = {
        "GetExternalIPAddress": [],
        "GetGenericPortMappingEntry": [("NewPortMappingIndex", 0)],
        "GetListOfPortMappings": [
            ("NewStartPort", 1024), ("NewEndPort", 1034), ("NewProtocol", "TCP"),
            ("NewManage", 0), ("NewNumberOfPorts", 10),
        ],
        "DeletePortMapping": [("NewRemoteHost", ""), ("NewExternalPort", 1031), ("NewProtocol", "TCP")],
        "DeletePortMappingRange": [
            ("NewStartPort", 1024), ("NewEndPort", 1034), ("NewProtocol", "TCP"), ("NewManage", 0),
        ],
    }
    out = {}
    for action, args in calls.items():
        r = igd.call(action, args)
        out[action] = {
            "answer": r.describe(),
            "implemented": not r.notImplemented and r.exc is None,
        }
        if action == "GetExternalIPAddress" and r.ok:
            out[action]["NewExternalIPAddress"] = field(r.body, "NewExternalIPAddress")
    return {"status": "ok", "actions": out}


def cmdGetExtIP(a) -> dict:
    """--count GetExternalIPAddress at --conc, a new connection each."""
    igd = a.igd
    first = igd.call("GetExternalIPAddress")
    if first.notImplemented:
        return notImplemented("GetExternalIPAddress", first)
    lock = threading.Lock()
    issued = [0]
    lat: list[float] = []
    errors: dict[str, int] = {}
    end = now() + a.deadline
    cpu0 = clientCPU()

    def worker() -> None:
        mine, bad = [], {}
        while True:
            with lock:
                if issued[0] >= a.count:
                    break
                issued[0] += 1
            if now() > end:
                bad["deadline"] = bad.get("deadline", 0) + 1
                break
            r = igd.call("GetExternalIPAddress")
            if r.ok and b"NewExternalIPAddress" in r.body:
                mine.append(r.latency)
            else:
                key = r.describe()
                bad[key] = bad.get(key, 0) + 1
        with lock:
            lat.extend(mine)
            for k, v in bad.items():
                errors[k] = errors.get(k, 0) + v

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(a.conc)]
    t0 = now()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, end - now()) + a.timeout + 5)
    wall = now() - t0
    out = {
        "status": "ok" if len(lat) == a.count else "partial",
        "concurrency": a.conc,
        "requested": a.count,
        "done": len(lat),
        "errors": errors,
        "wall_s": wall,
        "req_per_s": len(lat) / wall if wall > 0 else None,
        "latency": latencySummary(lat),
        "client_cpu_s": clientCPU() - cpu0,
        "external_ip": field(first.body, "NewExternalIPAddress"),
    }
    return out


def cmdAdd(a) -> dict:
    """AddPortMapping for mappings --first..--last (1-based): external port base+i-1."""
    igd = a.igd
    end = now() + a.deadline
    lat: list[float] = []
    faults: dict[str, int] = {}
    consecutive = 0
    added = 0
    stopped = None
    for i in range(a.first, a.last + 1):
        if now() > end:
            stopped = f"phase deadline ({a.deadline:.0f} s) after {added} adds"
            break
        port = a.base + i - 1
        r = igd.call("AddPortMapping", [
            ("NewRemoteHost", ""), ("NewExternalPort", port), ("NewProtocol", "TCP"),
            ("NewInternalPort", port), ("NewInternalClient", a.client), ("NewEnabled", 1),
            ("NewPortMappingDescription", f"bench{i}"), ("NewLeaseDuration", a.lease),
        ])
        if r.ok:
            lat.append(r.latency)
            added += 1
            consecutive = 0
            continue
        if added == 0 and r.notImplemented:
            return notImplemented("AddPortMapping", r)
        key = r.describe()
        faults[key] = faults.get(key, 0) + 1
        lat.append(r.latency)
        consecutive += 1
        if (r.exc and "Connection refused" in r.exc) or consecutive >= 20:
            stopped = f"{consecutive} consecutive faults, last: {key} at mapping #{i}"
            break
    return {
        "status": "ok" if added == a.last - a.first + 1 else "partial",
        "first": a.first,
        "added": added,
        "faults": faults,
        "stopped": stopped,
        "latencies_ms": [round(v * 1e3, 4) for v in lat],
    }


def cmdGeneric(a) -> dict:
    """GetGenericPortMappingEntry 0, 1, ... until 713 (bounded by --max steps)."""
    igd = a.igd
    end = now() + a.deadline
    lat: list[float] = []
    ports = set()
    ended = None
    for index in range(a.max + 1):
        if now() > end:
            ended = f"phase deadline after {index} steps"
            break
        r = igd.call("GetGenericPortMappingEntry", [("NewPortMappingIndex", index)])
        if r.ok:
            lat.append(r.latency)
            p = field(r.body, "NewExternalPort")
            if p and p.isdigit():
                ports.add(int(p))
            continue
        if index == 0 and r.notImplemented:
            return notImplemented("GetGenericPortMappingEntry", r)
        if r.error == 713:
            lat.append(r.latency)
            ended = "713"
            break
        ended = f"{r.describe()} at index {index}"
        break
    else:
        ended = f"no 713 after {a.max + 1} steps"
    inRange = [p for p in ports if a.lo <= p <= a.hi]
    return {
        "status": "ok" if ended == "713" else "error",
        "ended": ended,
        "steps": len(lat),
        "entries": len(ports),
        "entries_in_range": len(inRange),
        "total_s": sum(lat),
        "latencies_ms": [round(v * 1e3, 4) for v in lat],
    }


LISTED_PORT = re.compile(r"<(?:\w+:)?NewExternalPort>\s*(\d+)\s*<")


def cmdList(a) -> dict:
    """
    GetListOfPortMappings over --lo..--hi in --window-port windows (0: the whole
    range at once); within a window, page from the highest port returned.
    """
    igd = a.igd
    end = now() + a.deadline
    window = a.window or (a.hi - a.lo + 1)
    lat: list[float] = []
    ports: set[int] = set()
    calls, biggest, problem = 0, 0, None
    maxCalls = (a.hi - a.lo + 1) // window + a.expected + 10
    start = a.lo
    while start <= a.hi and problem is None:
        stop = min(a.hi, start + window - 1)
        page = start
        while page <= stop:
            if now() > end:
                problem = f"phase deadline after {calls} calls"
                break
            if calls >= maxCalls:
                problem = f"more than {maxCalls} calls"
                break
            r = igd.call("GetListOfPortMappings", [
                ("NewStartPort", page), ("NewEndPort", stop), ("NewProtocol", "TCP"),
                ("NewManage", 0), ("NewNumberOfPorts", a.number),
            ])
            calls += 1
            lat.append(r.latency)
            if r.error == 730 or (r.ok and not r.body):
                break
            if not r.ok:
                if calls == 1 and r.notImplemented:
                    return notImplemented("GetListOfPortMappings", r)
                problem = f"{r.describe()} for ports {page}-{stop}"
                break
            cdata = re.search(rb"<!\[CDATA\[(.*?)\]\]>", r.body, re.S)
            if cdata:
                listing = cdata.group(1).decode("utf-8", "replace")
            else:
                listing = field(r.body, "NewPortListing") or ""
            got = [int(p) for p in LISTED_PORT.findall(html.unescape(listing))]
            biggest = max(biggest, len(r.body))
            if not got:
                break
            ports.update(got)
            page = max(got) + 1
        start = stop + 1
    return {
        "status": "ok" if problem is None else "error",
        "problem": problem,
        "window": a.window,
        "calls": calls,
        "entries": len(ports),
        "largest_response_bytes": biggest,
        "total_s": sum(lat),
        "latencies_ms": [round(v * 1e3, 4) for v in lat],
    }


def cmdDelete(a) -> dict:
    """
    Delete --lo..--hi: DeletePortMappingRange in --window-port windows (0: one
    call), or DeletePortMapping per port if the range action is not implemented
    or --single; then GetGenericPortMappingEntry 0 must say 713.
    """
    igd = a.igd
    end = now() + a.deadline
    window = a.window or (a.hi - a.lo + 1)
    lat: list[float] = []
    calls, problem, how, deleted = 0, None, "DeletePortMappingRange", 0
    faults: dict[str, int] = {}
    single = a.single
    if not single:
        start = a.lo
        while start <= a.hi:
            if now() > end:
                problem = f"phase deadline after {calls} calls"
                break
            stop = min(a.hi, start + window - 1)
            r = igd.call("DeletePortMappingRange", [
                ("NewStartPort", start), ("NewEndPort", stop), ("NewProtocol", "TCP"), ("NewManage", 0),
            ])
            calls += 1
            if calls == 1 and r.notImplemented:
                single = True
                calls = 0
                break
            lat.append(r.latency)
            if r.ok:
                deleted += max(0, min(stop, a.lo + a.expected - 1) - start + 1)
            if not r.ok and r.error != 730:
                faults[r.describe()] = faults.get(r.describe(), 0) + 1
                if r.exc:
                    problem = f"{r.describe()} for ports {start}-{stop}"
                    break
            start = stop + 1
    if single:
        how = "DeletePortMapping"
        consecutive = 0
        for port in range(a.lo, min(a.hi, a.lo + a.expected - 1) + 1):
            if now() > end:
                problem = f"phase deadline after {calls} calls"
                break
            r = igd.call("DeletePortMapping", [("NewRemoteHost", ""), ("NewExternalPort", port), ("NewProtocol", "TCP")])
            calls += 1
            if calls == 1 and r.notImplemented:
                return notImplemented("DeletePortMapping(Range)", r)
            lat.append(r.latency)
            if r.ok or r.error == 714:
                deleted += r.ok
                consecutive = 0
                continue
            faults[r.describe()] = faults.get(r.describe(), 0) + 1
            consecutive += 1
            if r.exc or consecutive >= 20:
                problem = f"{r.describe()} at port {port}"
                break
    check = igd.call("GetGenericPortMappingEntry", [("NewPortMappingIndex", 0)])
    empty = True if check.error == 713 else (None if check.notImplemented else False)
    return {
        "status": "ok" if problem is None and not faults and empty is not False else "error",
        "how": how,
        "window": a.window if how == "DeletePortMappingRange" else None,
        "calls": calls,
        "deleted": deleted,
        "faults": faults,
        "problem": problem,
        "total_s": sum(lat),
        "latency": latencySummary(lat),
        "empty_after": empty,
        "empty_check": check.describe(),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--desc-path", default="/rootDesc.xml")
    p.add_argument("--ctl", default="")
    p.add_argument("--stype", default=WANIP + "2")
    p.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    p.add_argument("--deadline", type=float, default=60.0, help="for the whole command, seconds")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("wait")
    sub.add_parser("describe")
    sub.add_parser("probe")
    s = sub.add_parser("getextip")
    s.add_argument("--conc", type=int, required=True)
    s.add_argument("--count", type=int, required=True)
    s = sub.add_parser("add")
    s.add_argument("--first", type=int, required=True)
    s.add_argument("--last", type=int, required=True)
    s.add_argument("--base", type=int, default=20000)
    s.add_argument("--client", required=True)
    s.add_argument("--lease", type=int, default=3600)
    s = sub.add_parser("generic")
    s.add_argument("--max", type=int, required=True)
    s.add_argument("--lo", type=int, default=0)
    s.add_argument("--hi", type=int, default=65535)
    for name in ("list", "delete"):
        s = sub.add_parser(name)
        s.add_argument("--lo", type=int, required=True)
        s.add_argument("--hi", type=int, required=True)
        s.add_argument("--window", type=int, default=0)
        s.add_argument("--expected", type=int, default=0)
        if name == "list":
            s.add_argument("--number", type=int, default=0, help="NewNumberOfPorts")
        else:
            s.add_argument("--single", action="store_true")
    a = p.parse_args(argv)
    for name in ("count", "max", "first", "last"):
        if getattr(a, name, 0) is not None and getattr(a, name, 0) > 1_000_000:
            p.error(f"--{name} too large")
    a.igd = IGD(a.host, a.port, a.ctl, a.stype, a.timeout)
    handler = {
        "wait": cmdWait, "describe": cmdDescribe, "probe": cmdProbe, "getextip": cmdGetExtIP,
        "add": cmdAdd, "generic": cmdGeneric, "list": cmdList, "delete": cmdDelete,
    }[a.command]
    t0 = now()
    try:
        out = handler(a)
    except Exception as e:  # reported, not raised: the orchestrator wants JSON
        out = {"status": "error", "detail": f"{type(e).__name__}: {e}"}
    out["command"] = a.command
    out["elapsed_s"] = now() - t0
    out.setdefault("client_cpu_s", clientCPU())
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
