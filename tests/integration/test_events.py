"""
GENA events reaching a real subscriber (async-upnp-client) in namespaces
these tests create.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.integration.test_daemon import TWISTD, LabTestCase, upnpClient

DESC = "http://192.168.77.1:5000/rootDesc.xml"

CONFIG = """
[gateway]
state_dir = "{state}"
nat = "memory"

[lan]
interfaces = ["lan0"]
http_port = 5000

[manhole]
port = 6023
password_file = "{passwords}"

[[wan]]
name = "isp1"
interface = "sim0"
link = {{ type = "simulated", address = "198.51.101.2/24", gateway = "198.51.101.1" }}
"""

#: Logs into the manhole on 127.0.0.1 (answering telnet negotiation as a
#: client that supports no options) and evaluates one line.
MANHOLE = r"""
import socket, sys, time
user, password, line = sys.argv[1:4]
IAC, DO, DONT, WILL, WONT = 255, 253, 254, 251, 252
s = socket.create_connection(("127.0.0.1", 6023), timeout=1)
def until(marker, seconds=5):
    text, deadline = b"", time.monotonic() + seconds
    while marker not in text and time.monotonic() < deadline:
        try:
            data = s.recv(4096)
        except socket.timeout:
            continue
        if not data:
            break
        i = 0
        while i < len(data):
            if data[i] == IAC and i + 2 < len(data) and data[i + 1] in (DO, DONT, WILL, WONT):
                reply = {DO: WONT, WILL: DONT}.get(data[i + 1])
                if reply is not None:
                    s.sendall(bytes([IAC, reply, data[i + 2]]))
                i += 3
            else:
                text += data[i : i + 1]
                i += 1
    return text
until(b"Username: ")
s.sendall(user.encode() + b"\r\n")
until(b"Password: ")
s.sendall(password.encode() + b"\r\n")
if b">>> " not in until(b">>> "):
    print("refused")
    sys.exit(1)
s.sendall(line.encode() + b"\r\n")
out = until(b"\n>>> ", 5)
print(out.decode("latin-1"))
"""


class EventTests(LabTestCase):
    """
    async-upnp-client subscribed to the WAN's WANIPConnection:2.
    """

    def setUp(self) -> None:
        super().setUp()
        passwords = self.work / "manhole.passwd"
        passwords.write_text("admin:sesame\n")
        passwords.chmod(0o600)
        self.configFile.write_text(CONFIG.format(state=self.work / "state", passwords=passwords))
        self.daemon = self.lab.spawn(
            self.lab.gw,
            TWISTD + ["-n", "--pidfile=", "--logfile=-", "gatewayd", "--config", str(self.configFile)],
            self.log,
        )
        self.lab.waitForTCP(self.lab.gw, self.lab.lanAddress, 5000, self.daemon, self.log)
        self.events = self.work / "events.jsonl"
        self.subscriber = self.lab.spawn(
            self.lab.lan, [upnpClient(), "--timeout", "10", "subscribe", DESC, "WANIPConn1"], self.events
        )

    def waitForEvent(self, wanted: dict[str, str], seconds: float = 15) -> dict[str, str]:
        """
        Wait (bounded) for an event carrying C{wanted}; return its variables.
        """
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for line in Path(self.events).read_text(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                variables = {k: str(v) for k, v in event.get("state_variables", {}).items()}
                if all(variables.get(k) == v for k, v in wanted.items()):
                    return variables
            if self.subscriber.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(
            f"no event with {wanted}; subscriber said:\n{self.events.read_text(errors='replace')}"
            f"\ndaemon said:\n{self.log.read_text()[-3000:]}"
        )

    def test_events(self) -> None:
        """
        The subscriber gets the initial event with every evented variable,
        then PortMappingNumberOfEntries with SystemUpdateID when C{upnpc -a}
        adds a mapping, then ConnectionStatus when the simulated link drops
        its carrier (switched from the manhole).
        """
        initial = self.waitForEvent({"ConnectionStatus": "Connected"})
        self.assertEqual(initial["ExternalIPAddress"], "198.51.101.2")
        self.assertEqual(initial["PortMappingNumberOfEntries"], "0")
        self.assertIn("SystemUpdateID", initial)
        before = int(initial["SystemUpdateID"])

        result = self.lab.lan.run(
            "upnpc", "-u", DESC, "-a", self.lab.hostAddress, "8080", "18080", "TCP", "3600", timeout=30, check=False
        )
        self.assertIn("is redirected to internal 192.168.77.10:8080", result.stdout, result.stdout + result.stderr)
        changed = self.waitForEvent({"PortMappingNumberOfEntries": "1"})
        self.assertEqual(int(changed["SystemUpdateID"]), before + 1)

        result = self.lab.gw.python(MANHOLE, "admin", "sesame", "wans['isp1'].link.setCarrier(False)")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.waitForEvent({"ConnectionStatus": "Connecting"})
        self.waitForEvent({"ExternalIPAddress": ""})

    def test_wrongManholePassword(self) -> None:
        """
        A wrong manhole password gets nothing: the link keeps its carrier.
        """
        self.waitForEvent({"ConnectionStatus": "Connected"})
        result = self.lab.gw.python(MANHOLE, "admin", "wrong", "wans['isp1'].link.setCarrier(False)")
        self.assertEqual(result.stdout.strip(), "refused")
        time.sleep(1)
        self.assertNotIn('"Connecting"', self.events.read_text())
