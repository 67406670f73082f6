"""
Port mappings through real clients (miniupnpc's C{upnpc}, async-upnp-client)
against a daemon with two WANs, in namespaces these tests create; two LAN
hosts show that one client cannot touch the other's mappings, and a
C{kill -9} shows that mappings survive.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time

from tests.integration.netns import TCP_PROBE
from tests.integration.test_daemon import TWISTD, LabTestCase, upnpClient

DESC = "http://192.168.77.1:5000/rootDesc.xml"


class PortMappingTests(LabTestCase):
    """
    upnpc -a/-n/-d/-l/-L/-N/-r and upnp-client against two WANs.
    """

    def setUp(self) -> None:
        super().setUp()
        self.start()

    def start(self) -> None:
        self.daemon = self.lab.spawn(
            self.lab.gw,
            TWISTD + ["-n", "--pidfile=", "--logfile=-", "gatewayd", "--config", str(self.configFile)],
            self.log,
        )
        self.lab.waitForTCP(self.lab.gw, self.lab.lanAddress, 5000, self.daemon, self.log)

    def upnpc(self, *args: str, host: str = "lan") -> str:
        ns = self.lab.lan if host == "lan" else self.lab.lan2
        result = ns.run("upnpc", "-u", DESC, *args, timeout=30, check=False)
        return result.stdout + result.stderr

    def listing(self, host: str = "lan") -> list[tuple[str, int, str, int, int]]:
        """
        @return: C{upnpc -l}'s mappings: (protocol, external port, internal
            client, internal port, lease).
        """
        out = self.upnpc("-l", host=host)
        self.assertIn("GetGenericPortMappingEntry() returned 713", out)
        return [
            (m[1], int(m[2]), m[3], int(m[4]), int(m[5]))
            for m in re.findall(r"^\s*(\d+) (TCP|UDP)\s+(\d+)->([\d.]+):(\d+)\s+'[^']*' '[^']*' (\d+)$", out, re.M)
        ]

    def test_addListDelete(self) -> None:
        """
        A mapping added with C{upnpc -a} is listed by C{-l} (index) and
        C{-L} (GetListOfPortMappings), C{-r} adds several with lease 0 read
        back as a week, C{-n} on a busy port gets another one, C{-N} deletes
        a range, C{-d} one, and deleting again says 714.
        """
        out = self.upnpc("-a", self.lab.hostAddress, "8080", "18080", "TCP", "3600")
        self.assertIn("external 203.0.114.2:18080 TCP is redirected to internal 192.168.77.10:8080 (duration=3600)", out)
        [(proto, port, client, internal, lease)] = self.listing()
        self.assertEqual((proto, port, client, internal), ("TCP", 18080, "192.168.77.10", 8080))
        self.assertTrue(3590 <= lease <= 3600, lease)
        out = self.upnpc("-L")
        self.assertRegex(out, r"TCP\s+18080->192\.168\.77\.10:8080")

        out = self.upnpc("-r", "18081", "TCP", "18082", "18083", "UDP")
        self.assertIn("external 203.0.114.2:18081 TCP is redirected to internal 192.168.77.10:18081 (duration=604800)", out)
        self.assertIn("external 203.0.114.2:18083 UDP is redirected to internal 192.168.77.10:18082 (duration=604800)", out)

        # The second host holds 18090; AddAnyPortMapping for it gives the first another port.
        self.upnpc("-a", self.lab.host2Address, "9000", "18090", "TCP", "600", host="lan2")
        out = self.upnpc("-n", self.lab.hostAddress, "9000", "18090", "TCP", "600")
        reserved = re.search(r"external 203\.0\.114\.2:(\d+) TCP is redirected to internal 192\.168\.77\.10:9000", out)
        self.assertIsNotNone(reserved, out)
        self.assertNotEqual(reserved.group(1), "18090")

        self.assertIn("UPNP_DeletePortMappingRange() returned : 0", self.upnpc("-N", "18081", "18100", "TCP"))
        remaining = {(p, port) for p, port, *_ in self.listing()}
        self.assertEqual(remaining, {("TCP", 18080), ("UDP", 18083), ("TCP", 18090)})
        self.assertIn("failed with code : 730", self.upnpc("-N", "18081", "18089", "TCP"))
        self.assertIn("UPNP_DeletePortMapping() returned : 0", self.upnpc("-d", "18080", "TCP"))
        self.assertIn("failed with code : 714", self.upnpc("-d", "18080", "TCP"))
        self.assertEqual({(p, port) for p, port, *_ in self.listing()}, {("UDP", 18083), ("TCP", 18090)})

    def test_otherClientCannotDelete(self) -> None:
        """
        A second LAN host can read the first host's mapping but neither
        delete it (606), nor sweep it with DeletePortMappingRange (730), nor
        map to the first host's address (606), nor take its port (718).
        """
        self.upnpc("-a", self.lab.hostAddress, "8080", "18080", "TCP", "3600")
        self.assertIn("failed with code : 606", self.upnpc("-d", "18080", "TCP", host="lan2"))
        self.assertIn("failed with code : 730", self.upnpc("-N", "1024", "65535", "TCP", host="lan2"))
        out = self.upnpc("-a", self.lab.hostAddress, "8081", "18081", "TCP", "3600", host="lan2")
        self.assertIn("failed with code 606", out)
        out = self.upnpc("-a", self.lab.host2Address, "8080", "18080", "TCP", "3600", host="lan2")
        self.assertIn("failed with code 718", out)
        self.assertEqual([(p, port, c) for p, port, c, *_ in self.listing(host="lan2")], [("TCP", 18080, "192.168.77.10")])

    def test_asyncUpnpClient(self) -> None:
        """
        async-upnp-client adds, lists and deletes a mapping (on the WAN it
        sees: the last WANDevice, isp2).
        """
        client = upnpClient()

        def call(*args: str) -> dict[str, object]:
            result = self.lab.lan.run(client, "--timeout", "10", "call-action", DESC, *args, timeout=30, check=False)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            return json.loads(result.stdout)["out_parameters"]

        call(
            "WANIPConn1/AddPortMapping",
            "NewRemoteHost=",
            "NewExternalPort=28080",
            "NewProtocol=TCP",
            "NewInternalPort=8080",
            f"NewInternalClient={self.lab.hostAddress}",
            "NewEnabled=1",
            "NewPortMappingDescription=async <&> test",
            "NewLeaseDuration=0",
        )
        entry = call("WANIPConn1/GetSpecificPortMappingEntry", "NewRemoteHost=", "NewExternalPort=28080", "NewProtocol=TCP")
        self.assertEqual(entry["NewInternalClient"], self.lab.hostAddress)
        self.assertEqual(entry["NewPortMappingDescription"], "async <&> test")
        self.assertGreater(entry["NewLeaseDuration"], 604700)
        listing = call(
            "WANIPConn1/GetListOfPortMappings",
            "NewStartPort=1024",
            "NewEndPort=65535",
            "NewProtocol=TCP",
            "NewManage=1",
            "NewNumberOfPorts=0",
        )
        self.assertIn("<p:NewExternalPort>28080</p:NewExternalPort>", listing["NewPortListing"])
        self.assertIn("async &lt;&amp;&gt; test", listing["NewPortListing"])
        call("WANIPConn1/DeletePortMapping", "NewRemoteHost=", "NewExternalPort=28080", "NewProtocol=TCP")
        # upnpc talks to isp1; the mapping was on isp2 and is gone: isp1 has none either.
        self.assertEqual(self.listing(), [])

    def test_survivesKill9(self) -> None:
        """
        After C{kill -9} and a restart, the mappings are back with their
        remaining leases.
        """
        self.upnpc("-a", self.lab.hostAddress, "8080", "18080", "TCP", "3600")
        self.upnpc("-a", self.lab.hostAddress, "8081", "18081", "UDP", "7200")
        before = self.listing()
        os.kill(self.daemon.pid, signal.SIGKILL)
        self.daemon.wait(timeout=10)
        time.sleep(1.1)
        self.start()
        after = self.listing()
        self.assertEqual([m[:4] for m in after], [m[:4] for m in before])
        for (_, _, _, _, old), (_, _, _, _, new) in zip(before, after):
            self.assertTrue(old - 30 <= new < old, (old, new))
        self.assertIn("restored 2 port mappings", self.log.read_text())

    def test_wanSideStillSilent(self) -> None:
        """
        With mappings in place, the WAN side still gets no HTTP answer.
        """
        self.upnpc("-a", self.lab.hostAddress, "8080", "18080", "TCP", "3600")
        result = self.lab.isp.python(TCP_PROBE, self.lab.lanAddress, "5000")
        self.assertNotIn("answered", result.stdout)
