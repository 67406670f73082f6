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
import sys
import time
from pathlib import Path
from typing import Callable

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.netns import Lab, Namespace, addISP, requireCapabilities
from tests.integration.test_daemon import TWISTD, upnpClient
from tests.integration.test_nat import FLOW, PROBE, SERVER, SOAP

INTERNET = "198.18.0.10"
DESC = "http://192.168.77.1:5000/rootDesc.xml"

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
            isp.ip("addr", "add", INTERNET + "/32", "dev", "lo")
            # Bound to the internet host's address, so that it answers from it.
            self.serve(isp, name, "udp/7", code=SERVER.replace('s.bind(("0.0.0.0"', f's.bind(("{INTERNET}"'))
        self.serve(self.lab.lan, "lan", "tcp/8080")
        config = self.work / "gatewayd.toml"
        config.write_text(CONFIG.format(state=self.work / "state"))
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

    def serve(self, ns: Namespace, name: str, *ports: str, code: str = SERVER) -> None:
        log = self.work / f"server-{name}.log"
        process = self.lab.spawn(ns, [sys.executable, "-c", code, name, *ports], log)
        deadline = time.monotonic() + 10
        while b"ready" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server {name} did not start: {log.read_text()}")
            time.sleep(0.05)

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
        flow = self.lab.spawn(self.lab.lan, [sys.executable, "-c", FLOW, "udp", INTERNET, "7", "8"], flowLog)
        time.sleep(1.5)
        self.lab.isp.ip("link", "set", "isp0", "down")
        elapsed = self.waitFor(lambda: self.via() == "isp2", "LAN traffic via isp2", 5)
        self.assertLess(elapsed, 3)
        self.assertEqual(self.upnpcAddress(), "203.0.115.2")
        self.assertEqual(self.asyncClientAddress(), "203.0.115.2")
        flow.wait(timeout=20)
        answers = [line.split(" ", 1)[1] for line in flowLog.read_text().splitlines()]
        # The long-lived flow answered through isp1, then, after the
        # failover, through isp2 again (re-established, not hanging).
        self.assertIn("isp1:x", answers)
        self.assertEqual(answers[-1], "isp2:x", answers)
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
        status = self.lab.lan.python(SOAP, "isp1", "GetStatusInfo", timeout=20).stdout
        self.assertIn("200", status)
        self.assertIn("WAN isp1 is unhealthy: no answer from 203.0.114.1", self.log.read_text())
        self.blackout(self.lab.isp, False)
        self.waitFor(lambda: self.via() == "isp1", "LAN traffic back via isp1", 30)

    def test_mappingOnBackupWAN(self) -> None:
        """
        A port mapping on isp2, the WAN without the default route, carries
        a real TCP connection both ways: the replies leave by isp2.
        """
        answer = self.lab.lan.python(
            SOAP, "isp2", "AddPortMapping", "NewRemoteHost=", "NewExternalPort=8080",
            "NewProtocol=TCP", "NewInternalPort=8080", f"NewInternalClient={self.lab.hostAddress}",
            "NewEnabled=1", "NewPortMappingDescription=test", "NewLeaseDuration=0", timeout=20,
        ).stdout.strip()
        self.assertEqual(answer, "200", answer)
        out = self.isp2.python(PROBE, "tcp", "203.0.115.2", "8080", timeout=15).stdout.strip()
        self.assertEqual(out, "lan:hello")
        self.assertEqual(self.via(), "isp1")
