"""
Multi-WAN failover with real traffic: the daemon (nftables NAT, the
router, probes) in the gateway namespace of a lab these tests create, two
ISPs, each with an "internet host" at the same address (198.18.0.10 on its
loopback) that answers with the ISP's name, so the LAN host can tell which
WAN its traffic left by. Faults are made in the ISP namespaces: carrier loss
(the ISP's end of the veth goes down) and upstream blackout (the ISP drops
everything from the gateway, carrier up).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Protocol, Sequence

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.isplab import DNSMASQ, ISPLab, waitUntil
from tests.integration.netns import Lab, Namespace, addISP, requireCapabilities
from tests.integration.test_daemon import TWISTD, upnpClient
from tests.integration.test_events import MANHOLE
from tests.integration.test_nat import FLOW, PROBE, SERVER, SOAP

INTERNET = "198.18.0.10"
#: L{SOAP}, printing the answer's body too.
SOAP_BODY = SOAP.replace(
    "print(urllib.request.urlopen(request, timeout=10).status)",
    "answer = urllib.request.urlopen(request, timeout=10); print(answer.status, answer.read().decode())",
)
DESC = "http://192.168.77.1:5000/rootDesc.xml"
_CONNECT = "s = socket.create_connection((host, port), timeout=2)"
assert PROBE.count(_CONNECT) == 1
#: L{PROBE}, its TCP connection made from the address in argv[4]: from the
#: internet host rather than the ISP's own (directly connected) address, so
#: that the gateway's replies follow its routing, not the connected route.
PROBE_FROM = PROBE.replace(_CONNECT, _CONNECT[:-1] + ", source_address=(sys.argv[4], 0))")


class _Spawner(Protocol):
    def spawn(self, ns: Namespace, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]: ...


def serve(
    lab: _Spawner, work: Path, ns: Namespace, name: str, *ports: str, code: str = SERVER
) -> None:
    """
    Run L{SERVER} (or C{code}) in C{ns} as C{name} on C{ports}
    ("tcp/8080", "udp/7"), its log in C{work}; return once it is ready.
    """
    log = work / f"server-{name}.log"
    process = lab.spawn(ns, [sys.executable, "-c", code, name, *ports], log)
    deadline = time.monotonic() + 10
    while b"ready" not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"server {name} did not start: {log.read_text()}")
        time.sleep(0.05)


def serveInternet(lab: _Spawner, work: Path, isp: Namespace, name: str) -> None:
    """
    Give C{isp} the internet host (L{INTERNET} on its loopback) answering
    UDP port 7 with C{name}, from that address.
    """
    isp.ip("addr", "add", INTERNET + "/32", "dev", "lo")
    code = SERVER.replace('s.bind(("0.0.0.0"', f's.bind(("{INTERNET}"')
    serve(lab, work, isp, name, "udp/7", code=code)


def mapAndConnect(lan: Namespace, isp: Namespace, wan: str, wanAddress: str, client: str) -> str:
    """
    Map TCP port 8080 of C{wan}'s address C{wanAddress} to C{client}'s
    8080 (AddPortMapping from the LAN host), then connect to it from the
    internet host in C{isp}, send "hello" and read the answer.

    @return: the answer ("lan:hello" when it worked both ways), or the
        SOAP status when the mapping was refused.
    """
    answer = lan.python(
        SOAP, wan, "AddPortMapping", "NewRemoteHost=", "NewExternalPort=8080",
        "NewProtocol=TCP", "NewInternalPort=8080", f"NewInternalClient={client}",
        "NewEnabled=1", "NewPortMappingDescription=test", "NewLeaseDuration=0", timeout=20,
    ).stdout.strip()
    if answer != "200":
        return f"AddPortMapping: {answer}"
    return isp.python(PROBE_FROM, "tcp", wanAddress, "8080", INTERNET, timeout=15).stdout.strip()


def startFlow(
    lab: _Spawner, lan: Namespace, log: Path, seconds: float = 8
) -> subprocess.Popen[bytes]:
    """
    Start a long-lived UDP flow (L{FLOW}) from C{lan} to the internet host,
    for C{seconds}, logging each answer to C{log}.
    """
    return lab.spawn(lan, [sys.executable, "-c", FLOW, "udp", INTERNET, "7", str(seconds)], log)


def assertFlowMoved(case: SynchronousTestCase, flow: subprocess.Popen[bytes], log: Path) -> None:
    """
    Wait for the flow from L{startFlow} to end (bounded) and check that it
    was answered through isp1, then, after the failover, through isp2 again
    (re-established, not hanging).
    """
    flow.wait(timeout=20)
    answers = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
    case.assertIn("isp1:x", answers)
    case.assertEqual(answers[-1], "isp2:x", answers)


CONFIG = """
[gateway]
state_dir = "{state}"
nat = "nftables"
on_stop = "clean"

[lan]
interfaces = ["lan0"]
http_port = 5000

[upnp]
friendly_name = "gatewayd multi-WAN test"
secure_mode = false

[manhole]
port = 6023
password_file = "{passwords}"

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


class MultiWANCase(SynchronousTestCase):
    def setUp(self) -> None:
        requireCapabilities("nft", "conntrack", "upnpc")
        self.lab = Lab()
        self.addCleanup(self.lab.down)
        self.lab.up()
        self.isp2 = addISP(self.lab, "wan1", "203.0.115.2", "203.0.115.1")
        gw = self.lab.gw
        gw.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        gw.run("sysctl", "-q", "-w", "net.ipv4.conf.all.src_valid_mark=1")
        gw.ip("route", "del", "default")  # the router sets it
        self.work = Path(self.mktemp()).resolve()
        self.work.mkdir(parents=True)
        for isp, name in ((self.lab.isp, "isp1"), (self.isp2, "isp2")):
            serveInternet(self.lab, self.work, isp, name)
        serve(self.lab, self.work, self.lab.lan, "lan", "tcp/8080")
        config = self.work / "gatewayd.toml"
        passwords = self.work / "manhole.passwd"
        passwords.write_text("admin:sesame\n")
        passwords.chmod(0o600)
        config.write_text(CONFIG.format(state=self.work / "state", passwords=passwords))
        self.log = self.work / "gatewayd.log"
        self.daemon = self.lab.spawn(
            gw, TWISTD + ["-n", "--pidfile=", "--logfile=-", "gatewayd", "--config", str(config)], self.log
        )
        self.addCleanup(self.stop)
        self.lab.waitForTCP(gw, self.lab.lanAddress, 5000, self.daemon, self.log)
        self.waitFor(lambda: self.via() == "isp1", "LAN traffic via isp1")

    def stop(self) -> None:
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            self.daemon.wait(timeout=30)

    def via(self) -> str:
        """
        @return: the ISP that answered a fresh UDP exchange from the LAN
            host ("isp1", "isp2"), or what went wrong.
        """
        out = self.lab.lan.python(PROBE, "udp", INTERNET, "7", timeout=15).stdout.strip()
        return out.split(":", 1)[0]

    def waitFor(self, condition: Callable[[], object], what: str, seconds: float = 15) -> float:
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            if self.daemon.poll() is not None:
                raise AssertionError(f"daemon exited:\n{self.log.read_text()[-4000:]}")
            if condition():
                return time.monotonic() - start
            time.sleep(0.1)
        raise AssertionError(
            f"timed out waiting for {what} (last: {self.via()}):\n{self.log.read_text()[-6000:]}\n"
            + self.kernel()
        )

    def kernel(self) -> str:
        gw = self.lab.gw
        return "\n".join(
            gw.run(*argv, check=False).stdout
            for argv in (
                ("ip", "rule"),
                ("ip", "route", "show", "table", "all"),
                ("nft", "list", "ruleset"),
                ("conntrack", "-L"),
            )
        )

    def upnpcAddress(self) -> str:
        out = self.lab.lan.run("upnpc", "-u", DESC, "-s", timeout=20, check=False).stdout
        for line in out.splitlines():
            if line.startswith("ExternalIPAddress = "):
                return line.split("=", 1)[1].strip()
        return ""

    def asyncClientAddress(self) -> str:
        result = self.lab.lan.run(
            upnpClient(), "--timeout", "10", "call-action", DESC, "WANIPConn1/GetExternalIPAddress",
            timeout=30, check=False,
        )
        try:
            return json.loads(result.stdout)["out_parameters"]["NewExternalIPAddress"]
        except (ValueError, KeyError):
            return result.stdout + result.stderr

    def blackout(self, isp: Namespace, on: bool) -> None:
        blackout(isp, on)


def blackout(isp: Namespace, on: bool) -> None:
    """
    Make C{isp} drop everything that reaches it from the gateway (its
    C{isp0}), carrier up, or stop doing so.
    """
    if on:
        isp.run("nft", "add", "table", "inet", "blackout")
        isp.run("nft", "add", "chain", "inet", "blackout", "input",
                "{ type filter hook input priority 0; policy accept; }")
        isp.run("nft", "add", "rule", "inet", "blackout", "input", "iifname", "isp0", "drop")
    else:
        isp.run("nft", "delete", "table", "inet", "blackout")


class FailoverTests(MultiWANCase):
    def test_carrierLoss(self) -> None:
        """
        LAN traffic leaves by the preferred WAN; when its carrier goes, new
        and existing LAN flows leave by the other WAN within a second or two,
        upnpc -s and async-upnp-client report the other WAN's address, the
        log says why; when the carrier returns, traffic goes back to isp1
        (after the flap guard's hold).
        """
        self.assertEqual(self.upnpcAddress(), "203.0.114.2")
        self.assertEqual(self.asyncClientAddress(), "203.0.114.2")
        flowLog = self.work / "flow.log"
        flow = startFlow(self.lab, self.lab.lan, flowLog)
        time.sleep(1.5)
        self.lab.isp.ip("link", "set", "isp0", "down")
        elapsed = self.waitFor(lambda: self.via() == "isp2", "LAN traffic via isp2", 5)
        self.assertLess(elapsed, 3)
        self.assertEqual(self.upnpcAddress(), "203.0.115.2")
        self.assertEqual(self.asyncClientAddress(), "203.0.115.2")
        assertFlowMoved(self, flow, flowLog)
        self.assertIn("Active WAN isp2 (was isp1)", self.log.read_text())
        self.lab.isp.ip("link", "set", "isp0", "up")
        self.waitFor(lambda: self.via() == "isp1", "LAN traffic back via isp1", 30)
        self.assertEqual(self.upnpcAddress(), "203.0.114.2")

    def test_blackout(self) -> None:
        """
        The ISP drops everything from the gateway, carrier up: within 5 s
        LAN traffic leaves by isp2, isp1's connection stays Connected (its
        own service says so) and it is reported unhealthy; when it answers
        again, traffic goes back.
        """
        self.blackout(self.lab.isp, True)
        elapsed = self.waitFor(lambda: self.via() == "isp2", "LAN traffic via isp2", 10)
        self.assertLess(elapsed, 6)
        self.assertEqual(self.upnpcAddress(), "203.0.115.2")
        status = self.lab.lan.python(SOAP_BODY, "isp1", "GetStatusInfo", timeout=20).stdout
        self.assertIn("<NewConnectionStatus>Connected</NewConnectionStatus>", status)
        self.assertIn("<NewLastConnectionError>ERROR_NONE</NewLastConnectionError>", status)
        self.assertIn("WAN isp1 is unhealthy: no answer from 203.0.114.1", self.log.read_text())
        # The manhole's gateway.status() says why (LastConnectionError has
        # no value for it: the connection is fine).
        result = self.lab.gw.python(
            MANHOLE, "admin", "sesame",
            "[(r['name'], r['connectionStatus'], r['lastConnectionError'], r['health'], r['healthReason']) "
            "for r in gateway.status()]",
        )
        self.assertIn(
            "('isp1', 'Connected', 'ERROR_NONE', 'down', 'no answer from 203.0.114.1 in 3 rounds')",
            result.stdout, result.stdout + result.stderr,
        )
        self.blackout(self.lab.isp, False)
        self.waitFor(lambda: self.via() == "isp1", "LAN traffic back via isp1", 30)

    def test_mappingOnBackupWAN(self) -> None:
        """
        A port mapping on isp2, the WAN without the default route, carries
        a real TCP connection from the internet host both ways: the replies
        leave by isp2 (isp1 would answer them with a reset).
        """
        out = mapAndConnect(self.lab.lan, self.isp2, "isp2", "203.0.115.2", self.lab.hostAddress)
        self.assertEqual(out, "lan:hello")
        self.assertEqual(self.via(), "isp1")


DHCP_CONFIG = """
[gateway]
state_dir = "{state}"
nat = "nftables"
on_stop = "clean"

[lan]
interfaces = ["lan0"]
http_port = 5000

[upnp]
friendly_name = "gatewayd DHCP multi-WAN test"
secure_mode = false

[[wan]]
name = "isp1"
interface = "wan0"
priority = 10
link = {{ type = "dhcp", hostname = "gatewayd-test", client_id = "gw-isp1" }}
health = {{ flap_hold = 2 }}

[[wan]]
name = "isp2"
interface = "wan1"
priority = 20
link = {{ type = "dhcp", hostname = "gatewayd-test", client_id = "gw-isp2" }}
health = {{ flap_hold = 2 }}
"""

#: Prints, for each WANConnectionDevice of the description at argv[1], its
#: UDN and the control URL of its WANIPConnection.
CONNECTION_DEVICES = r"""
import sys, urllib.request, xml.etree.ElementTree as ET
ns = {"d": "urn:schemas-upnp-org:device-1-0"}
root = ET.fromstring(urllib.request.urlopen(sys.argv[1], timeout=10).read())
for device in root.iter("{urn:schemas-upnp-org:device-1-0}device"):
    if ":WANConnectionDevice:" not in device.findtext("d:deviceType", "", ns):
        continue
    for service in device.findall("d:serviceList/d:service", ns):
        if ":WANIPConnection:" in service.findtext("d:serviceType", "", ns):
            print(device.findtext("d:UDN", "", ns), service.findtext("d:controlURL", "", ns))
"""


class DHCPFailoverTests(SynchronousTestCase):
    """
    Two ISPs, each running dnsmasq, and two C{dhcp} links: the daemon gets
    both leases, LAN traffic leaves by the preferred WAN, and carrier loss
    and upstream blackout each move it to the other and back; a subscribed async-upnp-client hears
    ConnectionStatus and DefaultConnectionService change; clients that
    discover the gateway as games do (SSDP, no URL given) are shown the
    active WAN's address. As with unmanaged links, a mapping on the
    non-default WAN carries a TCP connection both ways, and a long-lived
    LAN flow re-establishes through the other WAN after failover.
    """

    def setUp(self) -> None:
        requireCapabilities("nft", "conntrack", "upnpc", DNSMASQ)
        self.work = Path(self.mktemp()).resolve()
        self.work.mkdir(parents=True)
        self.lab = ISPLab(self.work)
        self.addCleanup(self.lab.down)
        self.lab.up()
        self.isp2 = self.lab.addISP("wan1", "203.0.115.1")
        gw = self.lab.gw
        gw.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        gw.run("sysctl", "-q", "-w", "net.ipv4.conf.all.src_valid_mark=1")
        self.lab.serveDHCP(self.lab.isp, "203.0.114.1", "203.0.114.50", "203.0.114.60", "dnsmasq-isp1")
        self.lab.serveDHCP(self.isp2, "203.0.115.1", "203.0.115.50", "203.0.115.60", "dnsmasq-isp2")
        for isp, name in ((self.lab.isp, "isp1"), (self.isp2, "isp2")):
            serveInternet(self.lab, self.work, isp, name)
        serve(self.lab, self.work, self.lab.lan, "lan", "tcp/8080")
        config = self.work / "gatewayd.toml"
        config.write_text(DHCP_CONFIG.format(state=self.work / "state"))
        self.log = self.work / "gatewayd.log"
        self.daemon = self.lab.spawn(
            gw, TWISTD + ["-n", "--pidfile=", "--logfile=-", "gatewayd", "--config", str(config)], self.log
        )
        self.addCleanup(self.stop)
        waitUntil(lambda: self.alive() and self.via() == "isp1", 30, "LAN traffic via isp1", details=self.details)

    def stop(self) -> None:
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            self.daemon.wait(timeout=30)

    def alive(self) -> bool:
        if self.daemon.poll() is not None:
            raise AssertionError(f"daemon exited with {self.daemon.returncode}\n{self.details()}")
        return True

    def details(self) -> str:
        text = f"daemon said:\n{self.log.read_text(errors='replace')[-5000:]}"
        for name in ("dnsmasq-isp1", "dnsmasq-isp2"):
            log = self.work / f"{name}.log"
            if log.exists():
                text += f"\n{name} said:\n{log.read_text(errors='replace')[-1500:]}"
        return text

    def via(self) -> str:
        out = self.lab.lan.python(PROBE, "udp", INTERNET, "7", timeout=15).stdout.strip()
        return out.split(":", 1)[0]

    def address(self, interface: str) -> str:
        out = self.lab.gw.run("ip", "-4", "-o", "addr", "show", "dev", interface).stdout.split()
        return out[3].split("/")[0] if len(out) > 3 else ""

    def discoveredUpnpc(self) -> str:
        """
        @return: the ExternalIPAddress that C{upnpc -s} reports after finding
            the gateway by SSDP itself (no C{-u}: what games do).
        """
        out = self.lab.lan.run("upnpc", "-s", timeout=30, check=False).stdout
        for line in out.splitlines():
            if line.startswith("ExternalIPAddress = "):
                return line.split("=", 1)[1].strip()
        return out

    def discoveredAsyncClient(self) -> str:
        """
        @return: the address async-upnp-client's C{call-action} reports on
            the LOCATION its C{search} found (what Home Assistant does).
        """
        result = self.lab.lan.run(
            upnpClient(), "--timeout", "3", "search",
            "--search_target", "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
            timeout=20, check=False,
        )
        locations = set()
        for line in result.stdout.splitlines():
            try:
                headers = json.loads(line)
            except ValueError:
                continue
            if "location" in {k.lower() for k in headers}:
                locations.add(next(v for k, v in headers.items() if k.lower() == "location"))
        if len(locations) != 1:
            return f"locations found: {sorted(locations)}: {result.stdout}{result.stderr}"
        result = self.lab.lan.run(
            upnpClient(), "--timeout", "10", "call-action", locations.pop(), "WANIPConn1/GetExternalIPAddress",
            timeout=30, check=False,
        )
        try:
            return json.loads(result.stdout)["out_parameters"]["NewExternalIPAddress"]
        except (ValueError, KeyError):
            return result.stdout + result.stderr

    def events(self) -> list[dict[str, object]]:
        found = []
        for line in self.eventsLog.read_text(errors="replace").splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    def waitForEvent(self, serviceId: str, variable: str, wanted: Callable[[str], bool], what: str) -> str:
        def check() -> str | None:
            for event in self.events():
                if str(event.get("service_id", "")).endswith(serviceId):
                    value = event.get("state_variables", {}).get(variable)  # type: ignore[union-attr]
                    if value is not None and wanted(str(value)):
                        return str(value)
            return None

        return waitUntil(  # type: ignore[return-value]
            check, 15, what, details=lambda: self.eventsLog.read_text(errors="replace") + self.details()
        )

    def test_carrierLoss(self) -> None:
        """
        Both WANs lease their addresses; LAN traffic leaves by isp1; upnpc
        and async-upnp-client discover the gateway and show isp1's address.
        When isp1's carrier goes: LAN traffic leaves by isp2 within 3 s, the
        subscriber hears isp1's ConnectionStatus leave Connected and
        DefaultConnectionService name isp2's connection device, and both
        clients, discovering again, show isp2's address. When the carrier
        returns, traffic goes back to isp1 (after the shortened flap hold)
        and so does what upnpc shows.
        """
        first, second = self.address("wan0"), self.address("wan1")
        self.assertTrue(first.startswith("203.0.114.5") or first == "203.0.114.60", first)
        self.assertTrue(second.startswith("203.0.115.5") or second == "203.0.115.60", second)
        devices = dict(
            reversed(line.split()) for line in self.lab.lan.python(CONNECTION_DEVICES, DESC).stdout.splitlines()
        )
        isp2Device = devices["/ctl/isp2/WANIPConn1"]

        self.eventsLog = self.work / "events.jsonl"
        self.lab.spawn(
            self.lab.lan,
            [upnpClient(), "--timeout", "10", "subscribe", DESC, "WANIPConn1", "L3Forwarding1"],
            self.eventsLog,
        )
        self.waitForEvent("WANIPConn1", "ConnectionStatus", lambda v: v == "Connected", "initial WANIPConn1 event")
        initial = self.waitForEvent(
            "L3Forwarding1", "DefaultConnectionService", lambda v: True, "initial L3Forwarding1 event"
        )
        self.assertNotIn(isp2Device, initial)
        self.assertEqual(self.discoveredUpnpc(), first)
        self.assertEqual(self.discoveredAsyncClient(), first)

        self.lab.isp.ip("link", "set", "isp0", "down")
        started = time.monotonic()
        waitUntil(lambda: self.alive() and self.via() == "isp2", 10, "LAN traffic via isp2", details=self.details)
        self.assertLess(time.monotonic() - started, 3)
        self.waitForEvent(
            "WANIPConn1", "ConnectionStatus", lambda v: v != "Connected", "ConnectionStatus leaving Connected"
        )
        self.waitForEvent(
            "L3Forwarding1", "DefaultConnectionService", lambda v: v.startswith(isp2Device + ":"),
            "DefaultConnectionService naming isp2",
        )
        self.assertEqual(self.discoveredUpnpc(), second)
        self.assertEqual(self.discoveredAsyncClient(), second)
        self.assertIn("Active WAN isp2 (was isp1)", self.log.read_text())

        self.lab.isp.ip("link", "set", "isp0", "up")
        waitUntil(lambda: self.alive() and self.via() == "isp1", 30, "LAN traffic back via isp1", details=self.details)
        self.assertEqual(self.address("wan0"), first)
        self.assertEqual(self.discoveredUpnpc(), first)
        self.assertNotIn("has no probe targets", self.log.read_text())

    def test_blackout(self) -> None:
        """
        isp1's ISP drops everything from the gateway, carrier and lease up:
        within 6 s LAN traffic leaves by isp2 and discovering clients are
        shown isp2's address, while isp1's connection stays Connected; when
        isp1 answers again, traffic goes back.
        """
        second = self.address("wan1")
        blackout(self.lab.isp, True)
        started = time.monotonic()
        waitUntil(lambda: self.alive() and self.via() == "isp2", 10, "LAN traffic via isp2", details=self.details)
        self.assertLess(time.monotonic() - started, 6)
        self.assertEqual(self.discoveredUpnpc(), second)
        status = self.lab.lan.python(SOAP_BODY, "isp1", "GetStatusInfo", timeout=20).stdout
        self.assertIn("<NewConnectionStatus>Connected</NewConnectionStatus>", status)
        self.assertIn("<NewLastConnectionError>ERROR_NONE</NewLastConnectionError>", status)
        log = self.log.read_text()
        self.assertIn("WAN isp1 is unhealthy: no answer from 203.0.114.1", log)
        self.assertNotIn("WAN link wan0 lost", log)
        blackout(self.lab.isp, False)
        waitUntil(lambda: self.alive() and self.via() == "isp1", 30, "LAN traffic back via isp1", details=self.details)

    def test_mappingOnBackupWAN(self) -> None:
        """
        A port mapping on isp2, the WAN without the default route, whose
        address is leased, carries a real TCP connection from the internet
        host both ways: the replies leave by isp2.
        """
        second = self.address("wan1")
        self.assertTrue(second.startswith("203.0.115."), second)
        out = mapAndConnect(self.lab.lan, self.isp2, "isp2", second, self.lab.hostAddress)
        self.assertEqual(out, "lan:hello", self.details())
        self.assertEqual(self.via(), "isp1")

    def test_longFlowFailover(self) -> None:
        """
        A long-lived LAN flow answered through isp1 is answered through isp2
        again (re-established, not hanging) after isp1's carrier goes.
        """
        flowLog = self.work / "flow.log"
        flow = startFlow(self.lab, self.lab.lan, flowLog)
        time.sleep(1.5)
        self.lab.isp.ip("link", "set", "isp0", "down")
        waitUntil(lambda: self.alive() and self.via() == "isp2", 10, "LAN traffic via isp2", details=self.details)
        assertFlowMoved(self, flow, flowLog)
