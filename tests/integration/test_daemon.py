"""
gatewayd as a user runs it, against real UPnP clients, inside network
namespaces these tests create and remove.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from lxml import etree

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.netns import SSDP_PROBE, TCP_PROBE, Lab, requireCapabilities

CONFIG = """
[gateway]
state_dir = "{state}"
nat = "memory"

[lan]
interfaces = ["lan0"]
http_port = 5000

[upnp]
friendly_name = "gatewayd under test"

[[wan]]
name = "isp1"
interface = "wan0"
priority = 10
link = {{ type = "unmanaged" }}

[[wan]]
name = "isp2"
interface = "sim0"
priority = 20
link = {{ type = "simulated", address = "198.51.101.2/24", gateway = "198.51.101.1" }}
"""

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def upnpClient() -> str:
    found = Path(sys.executable).parent / "upnp-client"
    return str(found) if found.exists() else (shutil.which("upnp-client") or "upnp-client")


class LabTestCase(SynchronousTestCase):
    """
    A lab of namespaces and a configuration for the gateway in it.
    """

    def setUp(self) -> None:
        requireCapabilities("upnpc")
        self.lab = Lab()
        self.addCleanup(self.lab.down)
        self.lab.up()
        self.work = Path(self.mktemp()).resolve()
        self.work.mkdir(parents=True)
        self.configFile = self.work / "gatewayd.toml"
        self.configFile.write_text(CONFIG.format(state=self.work / "state"))
        self.log = self.work / "gatewayd.log"

    def fetch(self, path: str) -> str:
        """
        GET C{path} from the LAN host; the body, or the failure.
        """
        code = (
            "import sys, urllib.request\n"
            "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
        )
        result = self.lab.lan.python(code, f"http://{self.lab.lanAddress}:5000{path}")
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout


class DaemonTests(LabTestCase):
    """
    The daemon on a LAN veth with two WANs, seen from the LAN and the WAN.
    """

    def setUp(self) -> None:
        super().setUp()
        self.daemon = self.lab.spawn(
            self.lab.gw,
            TWISTD + ["-n", "--pidfile=", "--logfile=-", "gatewayd", "--config", str(self.configFile)],
            self.log,
        )
        self.lab.waitForTCP(self.lab.gw, self.lab.lanAddress, 5000, self.daemon, self.log)

    def test_upnpcFindsGateway(self) -> None:
        """
        C{upnpc -s} on a LAN host finds the gateway by SSDP and prints the
        first WAN's external address.
        """
        result = self.lab.lan.run("upnpc", "-s", timeout=30, check=False)
        self.assertIn("Found valid IGD : http://192.168.77.1:5000/ctl/isp1/WANIPConn1", result.stdout, result.stdout + result.stderr)
        self.assertIn("ExternalIPAddress = 203.0.114.2", result.stdout, result.stdout)
        self.assertIn("Connection Type : IP_Routed", result.stdout)
        self.assertIn("Status : Connected", result.stdout)

    def test_asyncUpnpClient(self) -> None:
        """
        async-upnp-client's C{upnp-client} reads the description and calls
        GetExternalIPAddress on a WAN's service.
        """
        result = self.lab.lan.run(
            upnpClient(),
            "--timeout",
            "10",
            "call-action",
            f"http://{self.lab.lanAddress}:5000/rootDesc.xml",
            "WANIPConn1/GetExternalIPAddress",
            timeout=30,
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        answer = json.loads(result.stdout)
        # async-upnp-client keeps embedded devices in a dict keyed by device
        # type, so of several WANDevice:2 it sees the last one: its
        # User-Agent (aiohttp) gets the description with the active WAN
        # last, so it sees isp1, the active WAN.
        self.assertEqual(answer["out_parameters"], {"NewExternalIPAddress": "203.0.114.2"})

    def test_descriptionListsBothWANs(self) -> None:
        """
        The description has one WANDevice per WAN, each with its own
        WANIPConnection:2, primary WAN first.
        """
        root = etree.fromstring(self.fetch("/rootDesc.xml").encode())
        ns = {"d": "urn:schemas-upnp-org:device-1-0"}
        self.assertEqual(
            root.xpath("//d:device/d:deviceType/text()", namespaces=ns),
            ["urn:schemas-upnp-org:device:InternetGatewayDevice:2"]
            + ["urn:schemas-upnp-org:device:WANDevice:2", "urn:schemas-upnp-org:device:WANConnectionDevice:2"] * 2,
        )
        self.assertEqual(
            root.xpath("//d:service[d:serviceType='urn:schemas-upnp-org:service:WANIPConnection:2']/d:controlURL/text()", namespaces=ns),
            ["/ctl/isp1/WANIPConn1", "/ctl/isp2/WANIPConn1"],
        )

    def test_wanSideGetsNothing(self) -> None:
        """
        From the ISP's side, neither the WAN address nor the LAN address
        (routed through the WAN) answers HTTP or SSDP.
        """
        for address in (self.lab.wanAddress, self.lab.lanAddress):
            result = self.lab.isp.python(TCP_PROBE, address, "5000")
            self.assertNotIn("answered", result.stdout, f"HTTP via WAN to {address}: {result.stdout}")
            result = self.lab.isp.python(SSDP_PROBE, address, "2")
            self.assertEqual(result.stdout.strip(), "0", f"SSDP via WAN to {address}")
        result = self.lab.isp.python(SSDP_PROBE, "239.255.255.250", "2")
        self.assertEqual(result.stdout.strip(), "0", "multicast SSDP on the WAN")
        # The same probe from the LAN is answered, so the silence above means something.
        result = self.lab.lan.python(SSDP_PROBE, "239.255.255.250", "2")
        self.assertGreater(int(result.stdout.strip()), 0, result.stdout + result.stderr)


class DaemonizeTests(LabTestCase):
    """
    Plain C{twistd gatewayd} daemonizes, as an init system runs it.
    """

    def test_daemonizesAndStops(self) -> None:
        """
        C{twistd gatewayd --config FILE} returns at once, leaves a daemon
        whose pid is in the pidfile serving the LAN, and SIGTERM stops it
        cleanly: the pidfile goes and nothing listens any more. Started
        again, it is the same device (same UDNs).
        """
        pidfile = self.work / "gatewayd.pid"
        argv = TWISTD + [f"--pidfile={pidfile}", f"--logfile={self.log}", "gatewayd", "--config", str(self.configFile)]
        result = self.lab.gw.run(*argv, timeout=60, check=False)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        pid = int(pidfile.read_text())
        deadline = time.monotonic() + 30
        while "WANIPConnection:2" not in self._tryFetch() and time.monotonic() < deadline:
            time.sleep(0.2)
        first = self.fetch("/rootDesc.xml")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                break
            time.sleep(0.1)
        self.assertFalse(pidfile.exists(), self.log.read_text())
        self.assertEqual(self._tryFetch(), "", "still serving after SIGTERM")
        self.assertIn("Server Shut Down", self.log.read_text())

        result = self.lab.gw.run(*argv, timeout=60, check=False)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        deadline = time.monotonic() + 30
        while "WANIPConnection:2" not in self._tryFetch() and time.monotonic() < deadline:
            time.sleep(0.2)
        udns = lambda text: etree.fromstring(text.encode()).xpath(
            "//d:UDN/text()", namespaces={"d": "urn:schemas-upnp-org:device-1-0"}
        )
        self.assertEqual(udns(self.fetch("/rootDesc.xml")), udns(first))
        os.kill(int(pidfile.read_text()), signal.SIGTERM)

    def _tryFetch(self) -> str:
        code = (
            "import sys, urllib.request\n"
            "try:\n"
            "    sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())\n"
            "except OSError:\n"
            "    pass\n"
        )
        return self.lab.lan.python(code, f"http://{self.lab.lanAddress}:5000/rootDesc.xml").stdout
