"""
The C{dhcp} and C{static} links against real interfaces: the daemon in a
gateway namespace, dnsmasq as the ISP's DHCP server, upnpc and
async-upnp-client on the LAN. Namespaces are the test's own (see
L{tests.integration.isplab}).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.isplab import DNSMASQ, ISPLab, waitUntil
from tests.integration.netns import requireCapabilities
from tests.integration.test_daemon import TWISTD, upnpClient

DESC = "http://192.168.77.1:5000/rootDesc.xml"

CONFIG = """
[gateway]
state_dir = "{state}"
nat = "memory"
on_stop = "{onStop}"

[lan]
interfaces = ["lan0"]
http_port = 5000

[[wan]]
name = "isp1"
interface = "wan0"
link = {link}
"""

DHCP = '{ type = "dhcp", hostname = "gatewayd-test", client_id = "gw-under-test" }'
STATIC = '{ type = "static", address = "203.0.114.2/24", gateway = "203.0.114.1", mtu = 1400 }'
#: Short renewal times (dnsmasq's shortest lease is 120 s; T1 and T2 are
#: sent as asked, and pyroute2's client honours them).
FAST = ["--dhcp-option=option:T1,8", "--dhcp-option=option:T2,12"]


class LinkTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        requireCapabilities("upnpc", DNSMASQ)
        self.work = Path(self.mktemp()).resolve()
        self.work.mkdir(parents=True)
        self.lab = ISPLab(self.work)
        self.addCleanup(self.lab.down)
        self.lab.up()
        self.log = self.work / "gatewayd.log"
        self.daemon = None

    def start(self, link: str, onStop: str = "keep") -> None:
        config = self.work / "gatewayd.toml"
        config.write_text(CONFIG.format(state=self.work / "state", onStop=onStop, link=link))
        self.daemon = self.lab.spawn(
            self.lab.gw,
            TWISTD + ["-n", "--pidfile=", "--logfile=-", "gatewayd", "--config", str(config)],
            self.log,
        )

    def stop(self) -> None:
        assert self.daemon is not None
        self.daemon.send_signal(signal.SIGTERM)
        self.daemon.wait(timeout=20)
        # twistd ends by re-raising the signal it stopped on.
        self.assertIn(self.daemon.returncode, (0, -signal.SIGTERM), self.details())
        self.assertIn("Server Shut Down.", self.log.read_text(), self.details())

    def details(self) -> str:
        text = f"daemon said:\n{self.log.read_text(errors='replace')[-4000:]}"
        dhcp = self.work / "dnsmasq.log"
        if dhcp.exists():
            text += f"\ndnsmasq said:\n{dhcp.read_text(errors='replace')[-2000:]}"
        return text

    def status(self) -> dict[str, str]:
        """
        @return: what C{upnpc -s} says: C{Status}, C{LastConnectionError},
            C{ExternalIPAddress} (empty if it cannot tell).
        """
        out = self.lab.lan.run("upnpc", "-u", DESC, "-s", timeout=20, check=False).stdout
        found: dict[str, str] = {}
        for line in out.splitlines():
            if line.startswith("Status : "):
                found["Status"] = line.split(":", 1)[1].split(",")[0].strip()
                found["LastConnectionError"] = line.rsplit(":", 1)[1].strip()
            elif line.startswith("ExternalIPAddress = "):
                found["ExternalIPAddress"] = line.split("=", 1)[1].strip()
        return found

    def waitForStatus(self, seconds: float, **wanted: str) -> dict[str, str]:
        def check() -> dict[str, str] | None:
            if self.daemon is not None and self.daemon.poll() is not None:
                raise AssertionError(f"daemon exited with {self.daemon.returncode}\n{self.details()}")
            status = self.status()
            return status if all(status.get(k) == v for k, v in wanted.items()) else None

        return waitUntil(check, seconds, f"upnpc -s showing {wanted}", details=self.details)  # type: ignore[return-value]


class DHCPLinkTests(LinkTestCase):
    """
    A WAN served by dnsmasq.
    """

    def test_lease(self) -> None:
        """
        The WAN gets its address (upnpc -s shows it); the lease is renewed
        at T1; carrier loss (the ISP's end goes down) shows Connecting
        within a second and Connected again when it returns; when the ISP
        hands out other addresses, the NAK at the next renewal leads to the
        new address, reported and evented.
        """
        self.lab.startDHCP("203.0.114.50", "203.0.114.60", 120, FAST)
        self.start(DHCP)
        status = self.waitForStatus(30, Status="Connected")
        address = status["ExternalIPAddress"]
        self.assertTrue(address.startswith("203.0.114."), status)
        self.assertEqual(self.lab.addresses(), [address + "/24"])
        routes = self.lab.gw.run("ip", "-4", "route", "show", "table", "100").stdout
        self.assertIn("default via 203.0.114.1 dev wan0", routes)
        self.assertIn("default via 203.0.114.1 dev wan0", self.lab.gw.run("ip", "-4", "route").stdout)
        self.assertIn(f"from {address} lookup 100", self.lab.gw.run("ip", "rule").stdout)
        self.assertIn("gatewayd-test", (self.work / "dnsmasq.log").read_text())

        events = self.work / "events.jsonl"
        self.lab.spawn(self.lab.lan, [upnpClient(), "--timeout", "10", "subscribe", DESC, "WANIPConn1"], events)

        waitUntil(lambda: "renewed from" in self.log.read_text(), 20, "a renewal", details=self.details)

        self.lab.isp.ip("link", "set", "isp0", "down")
        started = time.monotonic()
        status = waitUntil(
            lambda: (s := self.status()).get("Status") in ("Connecting", "Disconnected") and s,
            5,
            "the connection noticing carrier loss",
            interval=0.05,
            details=self.details,
        )
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertEqual(status["LastConnectionError"], "ERROR_NO_CARRIER")
        self.lab.isp.ip("link", "set", "isp0", "up")
        self.waitForStatus(15, Status="Connected", ExternalIPAddress=address)

        self.lab.startDHCP("203.0.114.70", "203.0.114.80", 120, FAST)
        newRange = {f"203.0.114.{n}" for n in range(70, 81)}
        status = waitUntil(
            lambda: (s := self.status()).get("ExternalIPAddress") in newRange and s,
            40,
            "the new address",
            interval=0.5,
            details=self.details,
        )
        new = status["ExternalIPAddress"]
        self.assertEqual(self.lab.addresses(), [new + "/24"])

        def evented() -> bool:
            for line in events.read_text(errors="replace").splitlines():
                try:
                    variables = json.loads(line).get("state_variables", {})
                except ValueError:
                    continue
                if variables.get("ExternalIPAddress") == new:
                    return True
            return False

        waitUntil(evented, 10, "ExternalIPAddress evented", details=lambda: events.read_text())
        self.stop()

    def test_keepRestart(self) -> None:
        """
        With on_stop = "keep" the address stays while the daemon is down,
        and the restarted daemon asks for the same lease (INIT-REBOOT: a
        REQUEST, no DISCOVER) and gets it.
        """
        self.lab.startDHCP("203.0.114.50", "203.0.114.60", 120)
        self.start(DHCP)
        address = self.waitForStatus(30, Status="Connected")["ExternalIPAddress"]
        self.stop()
        self.assertEqual(self.lab.addresses(), [address + "/24"])
        discovers = (self.work / "dnsmasq.log").read_text().count("DHCPDISCOVER")
        self.start(DHCP)
        self.waitForStatus(30, Status="Connected", ExternalIPAddress=address)
        self.assertEqual((self.work / "dnsmasq.log").read_text().count("DHCPDISCOVER"), discovers)
        self.assertEqual(self.lab.addresses(), [address + "/24"])
        self.stop()

    def test_clean(self) -> None:
        """
        With on_stop = "clean" the lease is released and the WAN interface,
        routes and rules are as they were before the daemon started.
        """
        before = self.lab.wanState()
        self.lab.startDHCP("203.0.114.50", "203.0.114.60", 120)
        self.start(DHCP, onStop="clean")
        self.waitForStatus(30, Status="Connected")
        self.stop()
        self.assertEqual(self.lab.wanState(), before)
        waitUntil(
            lambda: "DHCPRELEASE" in (self.work / "dnsmasq.log").read_text(), 5, "a DHCPRELEASE",
            details=self.details,
        )


class StaticLinkTests(LinkTestCase):
    """
    A WAN with a configured address.
    """

    def test_static(self) -> None:
        """
        The WAN comes up with its address, MTU and routes (traffic from its
        address takes its table); a clean stop leaves the interface as it
        was.
        """
        before = self.lab.wanState()
        self.start(STATIC, onStop="clean")
        self.waitForStatus(30, Status="Connected", ExternalIPAddress="203.0.114.2")
        self.assertEqual(self.lab.addresses(), ["203.0.114.2/24"])
        self.assertIn("mtu 1400", self.lab.gw.run("ip", "link", "show", "wan0").stdout)
        self.assertIn("default via 203.0.114.1 dev wan0", self.lab.gw.run("ip", "route", "show", "table", "100").stdout)
        self.assertIn("default via 203.0.114.1 dev wan0", self.lab.gw.run("ip", "route").stdout)
        route = self.lab.gw.run("ip", "route", "get", "192.0.2.99", "from", "203.0.114.2").stdout
        self.assertIn("via 203.0.114.1 dev wan0 table 100", route)
        self.stop()
        self.assertEqual(self.lab.wanState(), before)
