# -*- test-case-name: tests.unit.test_config -*-
"""
The configuration: TOML in, frozen dataclasses out.

Pure: every mistake raises L{ConfigError} naming the key path and what was
expected there; L{load} adds the file's name. Relative paths in the file
(C{state_dir}, C{password_file}) are relative to the file's directory.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from gatewayd.errors import ConfigError

_REQUIRED: Any = object()
_WAN_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
_IFNAME = re.compile(r"[^\s/:]{1,15}")
_RULE = re.compile(
    r"(?P<verb>allow|deny)\s+(?P<ext>\S+)\s+(?P<net>\S+)\s+(?P<int>\S+)", re.IGNORECASE
)


#: The firewall mark bits gatewayd uses for its WANs (C{[[wan]] mark}):
#: WAN marks are C{0x100}, C{0x200}, ... and other tools keep the other bits.
MARK_MASK = 0xFF00


@dataclass(frozen=True)
class GatewayConfig:
    """
    @ivar stateDir: absolute path of the state directory.
    @ivar nat: C{"nftables"} or C{"memory"}.
    @ivar onStop: C{"keep"} or C{"clean"}.
    @ivar hairpin: whether LAN hosts reach port mappings through the WAN
        addresses.
    """

    stateDir: str = "/var/lib/gatewayd"
    nat: str = "nftables"
    onStop: str = "keep"
    hairpin: bool = False


@dataclass(frozen=True)
class LANConfig:
    interfaces: tuple[str, ...]
    httpPort: int = 5000


@dataclass(frozen=True)
class PortRule:
    """
    One permission rule: C{allow|deny EXT-PORTS CLIENT-CIDR INT-PORTS}.
    """

    allow: bool
    externalPorts: tuple[int, int]
    clients: IPv4Network
    internalPorts: tuple[int, int]

    def matches(self, externalPort: int, client: IPv4Address, internalPort: int) -> bool:
        return (
            self.externalPorts[0] <= externalPort <= self.externalPorts[1]
            and client in self.clients
            and self.internalPorts[0] <= internalPort <= self.internalPorts[1]
        )


@dataclass(frozen=True)
class UPnPConfig:
    friendlyName: str = "gatewayd"
    secureMode: bool = True
    adminHosts: tuple[IPv4Network, ...] = ()
    maxLease: int = 604800
    maxMappings: int = 4096
    maxSubscriptions: int = 1024
    maxSubscriptionsPerClient: int = 32
    rules: tuple[PortRule, ...] = (
        PortRule(True, (1024, 65535), IPv4Network("0.0.0.0/0"), (1024, 65535)),
    )


@dataclass(frozen=True)
class ManholeConfig:
    """
    @ivar port: TCP port on 127.0.0.1; 0 = disabled.
    @ivar passwordFile: absolute path of the C{user:password} file.
    """

    port: int = 0
    passwordFile: str | None = None


@dataclass(frozen=True)
class LinkConfig:
    """
    @ivar type: the link type's name (an L{ILinkType} plugin).
    @ivar settings: what that link type's C{checkConfig} returned.
    """

    type: str
    settings: object


@dataclass(frozen=True)
class HealthConfig:
    targets: tuple[IPv4Address, ...] = ()
    probe: str = "icmp"
    interval: float = 1.0
    downAfter: int = 3
    upAfter: int = 3
    flapWindow: float = 60.0
    flapHold: float = 10.0
    flapMaxHold: float = 300.0


@dataclass(frozen=True)
class StaticMapping:
    protocol: str
    externalPort: int
    internalClient: IPv4Address
    internalPort: int
    remoteHost: str = ""
    description: str = ""


@dataclass(frozen=True)
class WANConfig:
    name: str
    interface: str
    link: LinkConfig
    priority: int = 10
    masquerade: bool = True
    health: HealthConfig = HealthConfig()
    staticMappings: tuple[StaticMapping, ...] = ()
    mark: int = 0x100
    table: int = 100


@dataclass(frozen=True)
class Config:
    gateway: GatewayConfig
    lan: LANConfig
    upnp: UPnPConfig
    manhole: ManholeConfig
    wans: tuple[WANConfig, ...]

    def wan(self, name: str) -> WANConfig:
        for wan in self.wans:
            if wan.name == name:
                return wan
        raise KeyError(name)


def _typeName(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


class _Table:
    """
    Reads one TOML table, remembering which keys were used so that
    L{finish} can refuse the rest.
    """

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path, f"expected a table; got {_typeName(data)}")
        self.data: dict[str, Any] = data
        self.path = path
        self._used: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, default: Any, expected: str, ok: Callable[[Any], bool]) -> Any:
        self._used.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise ConfigError(self.at(key), f"missing; expected {expected}")
            return default
        value = self.data[key]
        if not ok(value):
            raise ConfigError(self.at(key), f"expected {expected}; got {describeValue(value)}")
        return value

    def string(self, key: str, default: Any = _REQUIRED) -> str:
        return self.get(key, default, "a string", lambda v: isinstance(v, str))

    def boolean(self, key: str, default: Any = _REQUIRED) -> bool:
        return self.get(key, default, "true or false", lambda v: isinstance(v, bool))

    def integer(self, key: str, low: int, high: int, default: Any = _REQUIRED) -> int:
        return self.get(
            key,
            default,
            f"an integer from {low} to {high}",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high,
        )

    def number(self, key: str, low: float, high: float, default: Any = _REQUIRED) -> float:
        return float(
            self.get(
                key,
                default,
                f"a number from {low:g} to {high:g}",
                lambda v: isinstance(v, (int, float))
                and not isinstance(v, bool)
                and low <= v <= high,
            )
        )

    def choice(self, key: str, choices: Iterable[str], default: Any = _REQUIRED) -> str:
        options = tuple(choices)
        return self.get(
            key, default, "one of " + ", ".join(f'"{c}"' for c in options), lambda v: v in options
        )

    def strings(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self.get(
            key,
            default,
            "an array of strings",
            lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
        )
        return tuple(value) if isinstance(value, list) else value

    def table(self, key: str, default: Any = _REQUIRED) -> "_Table | None":
        self._used.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise ConfigError(self.at(key), "missing; expected a table")
            return None
        return _Table(self.data[key], self.at(key))

    def tables(self, key: str) -> list["_Table"]:
        self._used.add(key)
        value = self.data.get(key, [])
        if not isinstance(value, list):
            raise ConfigError(self.at(key), f"expected an array of tables; got {describeValue(value)}")
        return [_Table(item, f"{self.at(key)}[{i}]") for i, item in enumerate(value)]

    def finish(self) -> None:
        for key in self.data:
            if key not in self._used:
                raise ConfigError(self.at(key), "unknown key")


def describeValue(value: object) -> str:
    """
    @return: C{value} as a configuration file shows it, with its TOML type,
        for messages: C{a string "eth1"}, C{an integer 5}, C{an array}.
    """
    if isinstance(value, (str, int, float, bool)):
        shown = repr(value) if not isinstance(value, bool) else str(value).lower()
        if isinstance(value, str):
            shown = '"' + value.replace('"', '\\"') + '"'
        if len(shown) > 40:
            shown = shown[:37] + "..."
        return f"{_typeName(value)} {shown}"
    return _typeName(value)


def _network(path: str, text: str) -> IPv4Network:
    try:
        return IPv4Network(text, strict=True)
    except ValueError as e:
        raise ConfigError(path, f'expected an IPv4 network in CIDR form, e.g. "192.168.1.0/24"; got "{text}" ({e})')


def _address(path: str, text: object) -> IPv4Address:
    if not isinstance(text, str):
        raise ConfigError(path, f"expected an IPv4 address; got {describeValue(text)}")
    try:
        return IPv4Address(text)
    except ValueError:
        raise ConfigError(path, f'expected an IPv4 address, e.g. "192.168.1.10"; got "{text}"')


def _portRange(path: str, text: str) -> tuple[int, int]:
    match = re.fullmatch(r"([0-9]{1,5})(?:-([0-9]{1,5}))?", text)
    if match is not None:
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if low <= high <= 65535:
            return (low, high)
    raise ConfigError(path, f'expected a port or port range within 0-65535, e.g. "1024-65535"; got "{text}"')


def parseRule(path: str, text: str) -> PortRule:
    """
    Parse C{allow|deny EXT-PORTS CLIENT-CIDR INT-PORTS}, e.g.
    C{allow 1024-65535 192.168.0.0/16 1024-65535}.
    """
    match = _RULE.fullmatch(text.strip())
    if match is None:
        raise ConfigError(
            path, f'expected "allow|deny EXT-PORTS CLIENT-CIDR INT-PORTS"; got "{text}"'
        )
    return PortRule(
        allow=match.group("verb").lower() == "allow",
        externalPorts=_portRange(path, match.group("ext")),
        clients=_network(path, match.group("net")),
        internalPorts=_portRange(path, match.group("int")),
    )


def _path(base: Path, text: str) -> str:
    return str((base / text).resolve()) if not Path(text).is_absolute() else text


def _gateway(t: _Table, base: Path) -> GatewayConfig:
    config = GatewayConfig(
        stateDir=_path(base, t.string("state_dir", GatewayConfig.stateDir)),
        nat=t.choice("nat", ("nftables", "memory"), GatewayConfig.nat),
        onStop=t.choice("on_stop", ("keep", "clean"), GatewayConfig.onStop),
        hairpin=t.boolean("hairpin", GatewayConfig.hairpin),
    )
    t.finish()
    return config


def _ifnames(t: _Table, key: str) -> tuple[str, ...]:
    names = t.strings(key)
    if not names:
        raise ConfigError(t.at(key), "expected at least one interface name")
    for i, name in enumerate(names):
        if not _IFNAME.fullmatch(name):
            raise ConfigError(f"{t.at(key)}[{i}]", f'expected an interface name (1-15 characters, no "/", ":" or spaces); got "{name}"')
    if len(set(names)) != len(names):
        raise ConfigError(t.at(key), "lists an interface twice")
    return names


def _lan(t: _Table) -> LANConfig:
    config = LANConfig(
        interfaces=_ifnames(t, "interfaces"),
        httpPort=t.integer("http_port", 0, 65535, LANConfig.httpPort),
    )
    t.finish()
    return config


def _upnp(t: _Table) -> UPnPConfig:
    defaults = UPnPConfig()
    admin = tuple(
        _network(f"{t.at('admin_hosts')}[{i}]", text)
        for i, text in enumerate(t.strings("admin_hosts", ()))
    )
    rulesText = t.strings("rules", None)
    rules = (
        defaults.rules
        if rulesText is None
        else tuple(parseRule(f"{t.at('rules')}[{i}]", text) for i, text in enumerate(rulesText))
    )
    config = UPnPConfig(
        friendlyName=t.string("friendly_name", defaults.friendlyName),
        secureMode=t.boolean("secure_mode", defaults.secureMode),
        adminHosts=admin,
        maxLease=t.integer("max_lease", 1, 604800, defaults.maxLease),
        maxMappings=t.integer("max_mappings", 1, 65535, defaults.maxMappings),
        maxSubscriptions=t.integer("max_subscriptions", 1, 1_000_000, defaults.maxSubscriptions),
        maxSubscriptionsPerClient=t.integer(
            "max_subscriptions_per_client", 1, 1_000_000, defaults.maxSubscriptionsPerClient
        ),
        rules=rules,
    )
    if not 0 < len(config.friendlyName) < 64:
        raise ConfigError(t.at("friendly_name"), "expected 1 to 63 characters")
    t.finish()
    return config


def _manhole(t: _Table, base: Path) -> ManholeConfig:
    port = t.integer("port", 0, 65535, 0)
    passwordFile = t.string("password_file", None)
    if port and passwordFile is None:
        raise ConfigError(t.at("password_file"), "missing; required when manhole.port is set")
    t.finish()
    return ManholeConfig(port, _path(base, passwordFile) if passwordFile is not None else None)


def _health(t: _Table | None) -> HealthConfig:
    if t is None:
        return HealthConfig()
    targets = tuple(
        _address(f"{t.at('targets')}[{i}]", text)
        for i, text in enumerate(t.strings("targets", ()))
    )
    config = HealthConfig(
        targets=targets,
        probe=t.choice("probe", ("icmp", "tcp"), HealthConfig.probe),
        interval=t.number("interval", 0.1, 3600, HealthConfig.interval),
        downAfter=t.integer("down_after", 1, 1000, HealthConfig.downAfter),
        upAfter=t.integer("up_after", 1, 1000, HealthConfig.upAfter),
        flapWindow=t.number("flap_window", 0, 86400, HealthConfig.flapWindow),
        flapHold=t.number("flap_hold", 0, 86400, HealthConfig.flapHold),
        flapMaxHold=t.number("flap_max_hold", 0, 86400, HealthConfig.flapMaxHold),
    )
    if config.flapMaxHold < config.flapHold:
        raise ConfigError(t.at("flap_max_hold"), f"expected at least flap_hold ({config.flapHold:g})")
    t.finish()
    return config


def _staticMapping(t: _Table) -> StaticMapping:
    remote = t.string("remote_host", "")
    if remote:
        _address(t.at("remote_host"), remote)
    mapping = StaticMapping(
        protocol=t.choice("protocol", ("TCP", "UDP")),
        externalPort=t.integer("external_port", 1, 65535),
        internalClient=_address(t.at("internal_client"), t.get("internal_client", _REQUIRED, "an IPv4 address", lambda v: True)),
        internalPort=t.integer("internal_port", 1, 65535),
        remoteHost=remote,
        description=t.string("description", ""),
    )
    t.finish()
    return mapping


def _link(t: _Table, linkTypes: Mapping[str, Any]) -> LinkConfig:
    known = ", ".join(sorted(linkTypes)) or "(none installed)"
    name = t.get("type", _REQUIRED, f"a link type: one of {known}", lambda v: isinstance(v, str))
    if name not in linkTypes:
        raise ConfigError(t.at("type"), f'unknown link type "{name}"; known link types: {known}')
    rest = {k: v for k, v in t.data.items() if k != "type"}
    try:
        settings = linkTypes[name].checkConfig(rest)
    except ConfigError as e:
        raise ConfigError(t.at(e.path) if e.path else t.path, e.expected)
    return LinkConfig(name, settings)


def _mark(t: "_Table", index: int) -> int:
    """
    @return: the WAN's firewall/conntrack mark: C{mark}, by default
        C{(index + 1) << 8}; it must lie within L{MARK_MASK} (the bits
        gatewayd uses; other tools keep the rest).
    """
    mark = t.integer("mark", 1, MARK_MASK, (index + 1) << 8)
    if mark & ~MARK_MASK:
        raise ConfigError(
            t.at("mark"),
            f"expected a multiple of 0x100 from 0x100 to 0xff00 (gatewayd's mark bits are "
            f"{MARK_MASK:#x}); got {mark:#x}",
        )
    return mark


def _wan(t: _Table, index: int, linkTypes: Mapping[str, Any]) -> WANConfig:
    name = t.string("name")
    if not _WAN_NAME.fullmatch(name):
        raise ConfigError(
            t.at("name"),
            f'expected 1-32 characters of a-z, 0-9 and "-" (not first or last); got "{name}"',
        )
    interface = t.string("interface")
    if not _IFNAME.fullmatch(interface):
        raise ConfigError(t.at("interface"), f'expected an interface name (1-15 characters); got "{interface}"')
    config = WANConfig(
        name=name,
        interface=interface,
        priority=t.integer("priority", 0, 1_000_000, 10 * (index + 1)),
        masquerade=t.boolean("masquerade", True),
        mark=_mark(t, index),
        table=t.integer("table", 1, 252, 100 + index),
        link=_link(t.table("link"), linkTypes),  # type: ignore[arg-type]
        health=_health(t.table("health", None)),
        staticMappings=tuple(_staticMapping(m) for m in t.tables("static_mapping")),
    )
    keys = [(m.protocol, m.externalPort, m.remoteHost) for m in config.staticMappings]
    for i, key in enumerate(keys):
        if key in keys[:i]:
            raise ConfigError(f"{t.at('static_mapping')}[{i}]", f"maps {key[0]} port {key[1]} a second time")
    t.finish()
    return config


def linkTypes() -> dict[str, Any]:
    """
    @return: the installed link types (L{ILinkType} plugins) by name.
    """
    from twisted.plugin import getPlugins

    import twisted.plugins
    from gatewayd.interfaces import ILinkType

    return {t.name: t for t in getPlugins(ILinkType, twisted.plugins)}


def parse(
    data: bytes | str,
    base: str = ".",
    types: Mapping[str, Any] | None = None,
) -> Config:
    """
    Parse a configuration document.

    @param base: the directory relative paths are relative to.
    @param types: the link types by name; the installed plugins by default.
    @raise ConfigError: for every mistake, naming its key path.
    """
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"not valid TOML: {e}")
    except UnicodeDecodeError as e:  # pragma: no cover - decode above raises first
        raise ConfigError("", f"not UTF-8: {e}")
    if types is None:
        types = linkTypes()
    basePath = Path(base)
    top = _Table(document, "")

    def section(key: str, required: bool = False) -> _Table:
        found = top.table(key, _REQUIRED if required else None)
        return found if found is not None else _Table({}, key)

    gateway = _gateway(section("gateway"), basePath)
    lan = _lan(section("lan", required=True))
    upnp = _upnp(section("upnp"))
    manhole = _manhole(section("manhole"), basePath)
    wanTables = top.tables("wan")
    top.finish()
    if not wanTables:
        raise ConfigError("wan", "missing; expected at least one [[wan]] table")
    wans = tuple(_wan(t, i, types) for i, t in enumerate(wanTables))
    seenNames: dict[str, int] = {}
    seenInterfaces: dict[str, int] = {}
    seenMarks: dict[int, int] = {}
    seenTables: dict[int, int] = {}
    for i, wan in enumerate(wans):
        if wan.mark in seenMarks:
            raise ConfigError(f"wan[{i}].mark", f"mark {wan.mark:#x} is already used by wan[{seenMarks[wan.mark]}]")
        if wan.table in seenTables:
            raise ConfigError(f"wan[{i}].table", f"routing table {wan.table} is already used by wan[{seenTables[wan.table]}]")
        seenMarks[wan.mark] = seenTables[wan.table] = i
        if wan.name in seenNames:
            raise ConfigError(f"wan[{i}].name", f'duplicate WAN name "{wan.name}" (also wan[{seenNames[wan.name]}])')
        if wan.interface in seenInterfaces:
            raise ConfigError(
                f"wan[{i}].interface",
                f'interface "{wan.interface}" is already used by wan[{seenInterfaces[wan.interface]}]',
            )
        if wan.interface in lan.interfaces:
            raise ConfigError(f"wan[{i}].interface", f'interface "{wan.interface}" is also a LAN interface')
        seenNames[wan.name] = i
        seenInterfaces[wan.interface] = i
    return Config(gateway=gateway, lan=lan, upnp=upnp, manhole=manhole, wans=wans)


def load(path: str, types: Mapping[str, Any] | None = None) -> Config:
    """
    Read and parse the configuration file at C{path}.

    @raise ConfigError: naming C{path}, for an unreadable file or any mistake.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError("", f"cannot read the configuration file: {e.strerror or e}", path)
    try:
        return parse(data, str(Path(path).resolve().parent), types)
    except UnicodeDecodeError as e:
        raise ConfigError("", f"not UTF-8 text: {e.reason} at byte {e.start}", path)
    except ConfigError as e:
        raise e.inFile(path)
