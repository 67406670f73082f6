# -*- test-case-name: tests.unit.test_model -*-
"""
The UPnP service and device model: state variables, actions and their
arguments, data types, and devices.

One model serves three masters: the SCPD documents are generated from it
(L{gatewayd.upnp.description}), SOAP arguments are checked and converted by it
(L{gatewayd.upnp.soap}), and SSDP answers are derived from the device tree
(L{gatewayd.upnp.ssdp}).
"""

from __future__ import annotations

import re
from functools import cached_property
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Literal

from gatewayd.errors import ArgumentValueOutOfRange, InvalidArgs, StringArgumentTooLong

UPNP_ORG = "schemas-upnp-org"

#: Longest string argument gatewayd accepts (605 beyond it).
MAX_STRING_ARGUMENT = 1024

_INT_RANGES = {
    "ui1": (0, 0xFF),
    "ui2": (0, 0xFFFF),
    "ui4": (0, 0xFFFFFFFF),
    "i1": (-0x80, 0x7F),
    "i2": (-0x8000, 0x7FFF),
    "i4": (-0x80000000, 0x7FFFFFFF),
    "int": (-0x80000000, 0x7FFFFFFF),
}
_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no"})
_DECIMAL = re.compile(r"[+-]?[0-9]+")


def parseValue(dataType: str, text: str) -> Any:
    """
    Convert an argument's text to its Python value.

    Integers are decimal (surrounding whitespace allowed), booleans accept
    C{0 1 true false yes no} in any case, strings are taken as they are.

    @raise InvalidArgs: the text is not of C{dataType}.
    @raise StringArgumentTooLong: a string longer than L{MAX_STRING_ARGUMENT}.
    """
    if dataType in _INT_RANGES:
        stripped = text.strip()
        if not _DECIMAL.fullmatch(stripped):
            raise InvalidArgs(f"{text!r} is not an integer")
        value = int(stripped)
        low, high = _INT_RANGES[dataType]
        if not low <= value <= high:
            raise InvalidArgs(f"{value} is outside {dataType}")
        return value
    if dataType == "boolean":
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise InvalidArgs(f"{text!r} is not a boolean")
    if len(text) > MAX_STRING_ARGUMENT:
        raise StringArgumentTooLong(f"{len(text)} characters")
    return text


def formatValue(dataType: str, value: Any) -> str:
    """
    Convert a Python value to the text UPnP sends: booleans as C{0}/C{1},
    unsigned integers reduced modulo their range (counters wrap), the rest
    with C{str}.
    """
    if dataType == "boolean":
        return "1" if value else "0"
    if dataType in _INT_RANGES:
        low, high = _INT_RANGES[dataType]
        value = int(value)
        if low == 0:
            return str(value % (high + 1))
        return str(max(low, min(high, value)))
    return value if isinstance(value, str) else str(value)


class XMLDocument(str):
    """
    A string argument that holds an XML document (A_ARG_TYPE_PortListing).

    It travels as a CDATA section: miniupnpc's parser does not decode
    entities, so an entity-escaped listing reaches it as no listing at all.
    A document containing C{]]>} cannot be CDATA and is escaped instead.
    """


@dataclass(frozen=True)
class StateVariable:
    """
    A state variable of a service.

    @ivar since: the service version that introduced it.
    @ivar allowedRange: C{(minimum, maximum)} or L{None}.
    """

    name: str
    dataType: str
    sendEvents: bool = False
    default: str | None = None
    allowedValues: tuple[str, ...] | None = None
    allowedRange: tuple[int, int] | None = None
    since: int = 1

    def check(self, value: Any) -> None:
        """
        @raise ArgumentValueOutOfRange: C{value} is outside the allowed range
            or list.
        """
        if self.allowedValues is not None and value not in self.allowedValues:
            raise ArgumentValueOutOfRange(f"{self.name} must be one of {', '.join(self.allowedValues)}")
        if self.allowedRange is not None:
            low, high = self.allowedRange
            if not low <= value <= high:
                raise ArgumentValueOutOfRange(f"{self.name} must be within {low}..{high}")


@dataclass(frozen=True)
class Argument:
    name: str
    direction: Literal["in", "out"]
    relatedStateVariable: str


def IN(name: str, variable: str) -> Argument:
    return Argument(name, "in", variable)


def OUT(name: str, variable: str) -> Argument:
    return Argument(name, "out", variable)


@dataclass(frozen=True)
class Action:
    """
    An action and its arguments in SOAP (and SCPD) order.

    @ivar since: the service version that introduced it.
    @ivar checkedByService: in arguments whose allowed range or list the
        service checks itself, to answer a more specific error than 601
        (e.g. 732 for an InternalPort of 0).
    """

    name: str
    arguments: tuple[Argument, ...] = ()
    since: int = 1
    checkedByService: frozenset[str] = frozenset()

    @cached_property
    def inArguments(self) -> tuple[Argument, ...]:
        return tuple(a for a in self.arguments if a.direction == "in")

    @cached_property
    def outArguments(self) -> tuple[Argument, ...]:
        return tuple(a for a in self.arguments if a.direction == "out")


@dataclass(frozen=True)
class ServiceType:
    """
    A UPnP service type at one version, with everything its SCPD lists.

    @ivar name: e.g. C{"WANIPConnection"}.
    @ivar serviceId: the suffix of C{urn:upnp-org:serviceId:}, e.g.
        C{"WANIPConn1"}.
    """

    name: str
    version: int
    serviceId: str
    actions: tuple[Action, ...]
    stateVariables: tuple[StateVariable, ...]

    @property
    def urn(self) -> str:
        return f"urn:{UPNP_ORG}:service:{self.name}:{self.version}"

    @property
    def serviceIdURN(self) -> str:
        return f"urn:upnp-org:serviceId:{self.serviceId}"

    def at(self, version: int) -> "ServiceType":
        """
        @return: this service as a control point of C{version} sees it:
            without the actions and state variables introduced later.
        """
        if version >= self.version:
            return self
        return replace(
            self,
            version=version,
            actions=tuple(a for a in self.actions if a.since <= version),
            stateVariables=tuple(v for v in self.stateVariables if v.since <= version),
        )

    def only(self, actionNames: "set[str] | frozenset[str]") -> "ServiceType":
        """
        @return: this service with just the named actions (those an
            implementation provides), in spec order.
        """
        return replace(self, actions=tuple(a for a in self.actions if a.name in actionNames))

    def action(self, name: str) -> Action | None:
        for action in self.actions:
            if action.name == name:
                return action
        return None

    def variable(self, name: str) -> StateVariable:
        for variable in self.stateVariables:
            if variable.name == name:
                return variable
        raise KeyError(name)

    @property
    def eventedVariables(self) -> tuple[StateVariable, ...]:
        return tuple(v for v in self.stateVariables if v.sendEvents)


@dataclass(frozen=True)
class Service:
    """
    A service instance in a device: its type and where it lives.

    @ivar type: the implemented L{ServiceType} (highest version).
    @ivar scpdPath: the path of its SCPD, with C{{version}} to fill in.
    @ivar controlPath: the SOAP control path.
    @ivar eventPath: the GENA event path.
    @ivar implementation: the object whose methods answer the actions.
    """

    type: ServiceType
    controlPath: str
    eventPath: str
    implementation: Any = field(compare=False, default=None)

    def scpdPath(self, version: int) -> str:
        return f"/scpd/{self.type.name}{min(version, self.type.version)}.xml"


@dataclass(frozen=True)
class Device:
    """
    A UPnP device and its embedded devices.

    @ivar deviceType: e.g. C{"WANDevice"}.
    @ivar version: the implemented version.
    @ivar udn: C{uuid:...}.
    """

    deviceType: str
    version: int
    udn: str
    friendlyName: str
    services: tuple[Service, ...] = ()
    devices: tuple["Device", ...] = ()
    manufacturer: str = "gatewayd"
    manufacturerURL: str = "https://github.com/gatewayd/gatewayd"
    modelName: str = "gatewayd"
    modelDescription: str = "Multi-WAN Internet gateway"
    modelNumber: str = "1"
    serialNumber: str = ""

    def urn(self, version: int | None = None) -> str:
        v = self.version if version is None else min(version, self.version)
        return f"urn:{UPNP_ORG}:device:{self.deviceType}:{v}"

    def walk(self) -> Iterator["Device"]:
        """
        This device, then its embedded devices depth first, in document order.
        """
        yield self
        for device in self.devices:
            yield from device.walk()

    def allServices(self) -> Iterator[Service]:
        for device in self.walk():
            yield from device.services
