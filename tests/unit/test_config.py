"""
Tests for L{gatewayd.config}: what an admin sees for a good and a bad
configuration file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from gatewayd import config
from gatewayd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
[lan]
interfaces = ["br-lan"]

[[wan]]
name = "isp1"
interface = "eth1"
link = { type = "unmanaged" }
"""


def broken(text: str) -> str:
    """
    @return: the one-line message that parsing C{text} gives.
    """
    try:
        config.parse(text, "/etc/gatewayd")
    except ConfigError as e:
        return str(e)
    raise AssertionError("parsed without error")


#: A broken configuration and the exact line an admin reads.
BROKEN: list[tuple[str, str, str]] = [
    ("unknown top-level key", MINIMAL + "\n[lna]\nx = 1\n", "lna: unknown key"),
    (
        "unknown key in a section",
        MINIMAL.replace("[lan]", "[lan]\nhttp_prot = 5000"),
        "lan.http_prot: unknown key",
    ),
    (
        "wrong type",
        MINIMAL.replace("[lan]", "[lan]\nhttp_port = \"5000\""),
        'lan.http_port: expected an integer from 0 to 65535; got a string "5000"',
    ),
    (
        "port out of range",
        MINIMAL.replace("[lan]", "[lan]\nhttp_port = 70000"),
        "lan.http_port: expected an integer from 0 to 65535; got an integer 70000",
    ),
    (
        "boolean where an integer belongs",
        MINIMAL.replace("[lan]", "[lan]\nhttp_port = true"),
        "lan.http_port: expected an integer from 0 to 65535; got a boolean true",
    ),
    (
        "missing LAN section",
        MINIMAL.replace('[lan]\ninterfaces = ["br-lan"]', ""),
        "lan: missing; expected a table",
    ),
    (
        "missing required key",
        MINIMAL.replace('interface = "eth1"\n', ""),
        "wan[0].interface: missing; expected a string",
    ),
    ("no WAN", '[lan]\ninterfaces = ["br-lan"]\n', "wan: missing; expected at least one [[wan]] table"),
    (
        "duplicate WAN name",
        MINIMAL + '\n[[wan]]\nname = "isp1"\ninterface = "eth2"\nlink = { type = "unmanaged" }\n',
        'wan[1].name: duplicate WAN name "isp1" (also wan[0])',
    ),
    (
        "duplicate WAN interface",
        MINIMAL + '\n[[wan]]\nname = "isp2"\ninterface = "eth1"\nlink = { type = "unmanaged" }\n',
        'wan[1].interface: interface "eth1" is already used by wan[0]',
    ),
    (
        "duplicate mark",
        MINIMAL + '\n[[wan]]\nname = "isp2"\ninterface = "eth2"\nmark = 0x100\nlink = { type = "unmanaged" }\n',
        "wan[1].mark: mark 0x100 is already used by wan[0]",
    ),
    (
        "mark outside gatewayd's bits",
        MINIMAL.replace('interface = "eth1"', 'interface = "eth1"\nmark = 0x101'),
        "wan[0].mark: expected a multiple of 0x100 from 0x100 to 0xff00 (gatewayd's mark bits are 0xff00); got 0x101",
    ),
    (
        "routing table out of range",
        MINIMAL.replace('interface = "eth1"', 'interface = "eth1"\ntable = 254'),
        "wan[0].table: expected an integer from 1 to 252; got an integer 254",
    ),
    (
        "WAN on the LAN interface",
        MINIMAL.replace('interface = "eth1"', 'interface = "br-lan"'),
        'wan[0].interface: interface "br-lan" is also a LAN interface',
    ),
    (
        "bad WAN name",
        MINIMAL.replace('name = "isp1"', 'name = "ISP 1"'),
        'wan[0].name: expected 1-32 characters of a-z, 0-9 and "-" (not first or last); got "ISP 1"',
    ),
    (
        "unknown link type",
        MINIMAL.replace('type = "unmanaged"', 'type = "ppp"'),
        'wan[0].link.type: unknown link type "ppp"; known link types: dhcp, simulated, static, unmanaged',
    ),
    (
        "missing link",
        MINIMAL.replace('link = { type = "unmanaged" }\n', ""),
        "wan[0].link: missing; expected a table",
    ),
    (
        "link type's own key checked",
        MINIMAL.replace('{ type = "unmanaged" }', '{ type = "unmanaged", gateway = "nowhere" }'),
        None,  # the link type words it; see test_linkKeyPath
    ),
    (
        "bad CIDR",
        MINIMAL + '\n[upnp]\nadmin_hosts = ["192.168.1.300/24"]\n',
        None,
    ),
    (
        "bad port range in a rule",
        MINIMAL + '\n[upnp]\nrules = ["allow 1024-70000 192.168.0.0/16 1024-65535"]\n',
        'upnp.rules[0]: expected a port or port range within 0-65535, e.g. "1024-65535"; got "1024-70000"',
    ),
    (
        "inverted port range",
        MINIMAL + '\n[upnp]\nrules = ["allow 2000-1000 192.168.0.0/16 1024-65535"]\n',
        'upnp.rules[0]: expected a port or port range within 0-65535, e.g. "1024-65535"; got "2000-1000"',
    ),
    (
        "rule syntax",
        MINIMAL + '\n[upnp]\nrules = ["permit everything"]\n',
        'upnp.rules[0]: expected "allow|deny EXT-PORTS CLIENT-CIDR INT-PORTS"; got "permit everything"',
    ),
    (
        "bad choice",
        MINIMAL + '\n[gateway]\nnat = "iptables"\n',
        'gateway.nat: expected one of "nftables", "memory"; got a string "iptables"',
    ),
    (
        "manhole without a password file",
        MINIMAL + "\n[manhole]\nport = 6023\n",
        "manhole.password_file: missing; required when manhole.port is set",
    ),
    (
        "lease too long",
        MINIMAL + "\n[upnp]\nmax_lease = 604801\n",
        "upnp.max_lease: expected an integer from 1 to 604800; got an integer 604801",
    ),
    (
        "static mapping with a bad client",
        MINIMAL
        + '\n[[wan.static_mapping]]\nprotocol = "TCP"\nexternal_port = 2222\n'
        'internal_client = "nas"\ninternal_port = 22\n',
        'wan[0].static_mapping[0].internal_client: expected an IPv4 address, e.g. "192.168.1.10"; got "nas"',
    ),
    (
        "not TOML",
        "[lan\n",
        None,
    ),
]


class BrokenConfigurationTests(SynchronousTestCase):
    """
    Every mistake gives one line naming the key path and what was expected.
    """

    def test_table(self) -> None:
        """
        Each broken configuration gives exactly its message.
        """
        for why, text, message in BROKEN:
            got = broken(text)
            self.assertNotIn("\n", got, why)
            if message is not None:
                self.assertEqual(got, message, why)

    def test_badCIDR(self) -> None:
        """
        A bad CIDR names its position in the list and the text.
        """
        got = broken(MINIMAL + '\n[upnp]\nadmin_hosts = ["192.168.1.300/24"]\n')
        self.assertTrue(got.startswith("upnp.admin_hosts[0]: expected an IPv4 network in CIDR form"), got)
        self.assertIn('"192.168.1.300/24"', got)
        got = broken(MINIMAL + '\n[upnp]\nadmin_hosts = ["192.168.1.1/24"]\n')
        self.assertIn("has host bits set", got)

    def test_linkKeyPath(self) -> None:
        """
        A mistake inside a link table is reported under C{wan[N].link}.
        """
        got = broken(MINIMAL.replace('{ type = "unmanaged" }', '{ type = "unmanaged", speed = 1 }'))
        self.assertTrue(got.startswith("wan[0].link.speed: "), got)
        got = broken(MINIMAL.replace('{ type = "unmanaged" }', '{ type = "unmanaged", gateway = "nowhere" }'))
        self.assertTrue(got.startswith("wan[0].link.gateway: "), got)

    def test_notTOML(self) -> None:
        """
        A syntax error says so, with TOML's position.
        """
        got = broken("[lan\n")
        self.assertTrue(got.startswith("not valid TOML: "), got)
        self.assertIn("line 1", got)

    def test_unreadableFile(self) -> None:
        """
        A missing file is named with the reason.
        """
        with self.assertRaises(ConfigError) as e:
            config.load("/nonexistent/gatewayd.toml")
        self.assertEqual(
            str(e.exception),
            "/nonexistent/gatewayd.toml: cannot read the configuration file: No such file or directory",
        )

    def test_fileNamed(self) -> None:
        """
        L{config.load} puts the file's name in front of the key path.
        """
        path = Path(self.mktemp()).resolve()
        path.write_text(MINIMAL.replace("[lan]", "[lan]\nhttp_port = -1"))
        with self.assertRaises(ConfigError) as e:
            config.load(str(path))
        self.assertEqual(
            str(e.exception),
            f"{path}: lan.http_port: expected an integer from 0 to 65535; got an integer -1",
        )

    def test_notUTF8(self) -> None:
        """
        A file that is not UTF-8 text is refused with the position.
        """
        path = Path(self.mktemp()).resolve()
        path.write_bytes(b"[lan]\ninterfaces = [\"\xff\"]\n")
        with self.assertRaises(ConfigError) as e:
            config.load(str(path))
        self.assertIn("not UTF-8 text", str(e.exception))


class GoodConfigurationTests(SynchronousTestCase):
    """
    The shipped configurations parse, with the values they show.
    """

    def test_defaults(self) -> None:
        """
        A minimal file gets the documented defaults.
        """
        parsed = config.parse(MINIMAL, "/etc/gatewayd")
        self.assertEqual(parsed.gateway, config.GatewayConfig())
        self.assertEqual(parsed.lan, config.LANConfig(("br-lan",), 5000))
        self.assertEqual(parsed.upnp.maxLease, 604800)
        self.assertEqual(parsed.upnp.maxMappings, 4096)
        self.assertTrue(parsed.upnp.secureMode)
        self.assertEqual(parsed.manhole.port, 0)
        [wan] = parsed.wans
        self.assertEqual((wan.name, wan.interface, wan.link.type), ("isp1", "eth1", "unmanaged"))

    def test_relativePaths(self) -> None:
        """
        Relative paths are relative to the configuration file's directory.
        """
        parsed = config.parse(
            MINIMAL + '\n[gateway]\nstate_dir = "state"\n[manhole]\nport = 1\npassword_file = "pw"\n',
            "/etc/gatewayd",
        )
        self.assertEqual(parsed.gateway.stateDir, "/etc/gatewayd/state")
        self.assertEqual(parsed.manhole.passwordFile, "/etc/gatewayd/pw")

    def test_exampleConfiguration(self) -> None:
        """
        etc/gatewayd.toml describes a two-WAN appliance.
        """
        parsed = config.load(str(ROOT / "etc" / "gatewayd.toml"))
        self.assertEqual([w.name for w in parsed.wans], ["isp1", "isp2"])
        self.assertEqual(parsed.gateway.nat, "nftables")
        self.assertEqual(parsed.lan.interfaces, ("br-lan",))
        self.assertEqual(
            parsed.upnp.rules[0],
            config.PortRule(True, (1024, 65535), IPv4Network("192.168.1.0/24"), (1024, 65535)),
        )
        self.assertEqual(parsed.wans[0].staticMappings[0].internalClient, IPv4Address("192.168.1.10"))
        self.assertEqual(parsed.wans[0].health.targets, (IPv4Address("9.9.9.9"), IPv4Address("1.1.1.1")))
        self.assertEqual([(w.mark, w.table) for w in parsed.wans], [(0x100, 100), (0x200, 101)])

    def test_demoConfiguration(self) -> None:
        """
        etc/demo.toml runs two simulated WANs on loopback with memory NAT.
        """
        parsed = config.load(str(ROOT / "etc" / "demo.toml"))
        self.assertEqual([w.link.type for w in parsed.wans], ["simulated", "simulated"])
        self.assertEqual(parsed.gateway.nat, "memory")
        self.assertEqual(parsed.lan.interfaces, ("lo",))
        self.assertEqual(parsed.gateway.stateDir, str(ROOT / "var" / "demo"))

    def test_ruleMatches(self) -> None:
        """
        A rule matches ports and client addresses inside its ranges only.
        """
        rule = config.parseRule("r", "allow 1024-65535 192.168.0.0/16 1024-65535")
        self.assertTrue(rule.matches(1024, IPv4Address("192.168.7.1"), 65535))
        self.assertFalse(rule.matches(1023, IPv4Address("192.168.7.1"), 2000))
        self.assertFalse(rule.matches(2000, IPv4Address("10.0.0.1"), 2000))
        self.assertFalse(config.parseRule("r", "deny 0-65535 0.0.0.0/0 0-65535").allow)


class TwistdConfigErrorTests(SynchronousTestCase):
    """
    C{twistd gatewayd} with a broken file exits non-zero with one line.
    """

    def test_oneLine(self) -> None:
        """
        No traceback and no usage text: just the file, the key and what was
        expected.
        """
        path = Path(self.mktemp()).resolve()
        path.write_text(MINIMAL.replace('type = "unmanaged"', 'type = "ppp"'))
        twistd = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
        result = subprocess.run(
            twistd + ["-n", "--pidfile=", "gatewayd", "--config", str(path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertEqual(
            result.stderr.strip(),
            f'gatewayd: {path}: wan[0].link.type: unknown link type "ppp"; known link types: dhcp, simulated, static, unmanaged',
        )
        self.assertEqual(result.stdout, "")
