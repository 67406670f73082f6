# -*- test-case-name: tests.unit.test_nat -*-
"""
A NAT backend that only remembers: for the demo configuration and tests.

It checks every change as a kernel backend must (the same exceptions, the
same all-or-nothing rule), so code tested against it behaves the same on
nftables.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Iterable

from zope.interface import implementer

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from gatewayd.interfaces import INATBackend, NATMapping


class NATError(Exception):
    """
    A NAT change was refused; nothing changed.
    """


class InvalidMapping(NATError):
    """
    A mapping's values cannot be programmed (protocol, port or address).
    """


class MappingExists(NATError):
    """
    A mapping with the same key is installed (and not removed by the same
    change), or is added twice.
    """


class MappingNotFound(NATError):
    """
    A mapping to remove is not installed exactly as given.
    """


_PROTOCOLS = frozenset({"TCP", "UDP"})


def describe(mapping: NATMapping) -> str:
    """
    @return: a mapping's key for humans, e.g. C{isp1 TCP 8080 from *}.
    """
    return (
        f"{mapping.wan} {mapping.protocol} {mapping.externalPort} "
        f"from {mapping.remoteHost or '*'}"
    )


def checkMapping(mapping: NATMapping) -> None:
    """
    Check the values a kernel backend needs.

    @raise InvalidMapping: naming the bad value.
    """

    def invalid(why: str) -> InvalidMapping:
        return InvalidMapping(f"{describe(mapping)}: {why}")

    if not mapping.wan or not mapping.interface:
        raise invalid("no WAN name or interface")
    if mapping.protocol not in _PROTOCOLS:
        raise invalid(f"protocol {mapping.protocol!r} is not TCP or UDP")
    for name, port in (("external", mapping.externalPort), ("internal", mapping.internalPort)):
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise invalid(f"{name} port {port!r} is not 1-65535")
    for name, address in (("internal client", mapping.internalClient),
                          ("remote host", mapping.remoteHost or "0.0.0.0")):
        try:
            IPv4Address(address)
        except ValueError:
            raise invalid(f"{name} {address!r} is not an IPv4 address") from None


def planChange(
    installed: dict[tuple[str, str, int, str], NATMapping],
    add: Iterable[NATMapping],
    remove: Iterable[NATMapping],
) -> dict[tuple[str, str, int, str], NATMapping]:
    """
    Pure: the mappings after removing C{remove} and then adding C{add}.

    @param installed: the mappings now, by key; not modified.
    @return: the mappings afterwards, by key.
    @raise NATError: if any part of the change is refused.
    """
    after = dict(installed)
    for mapping in remove:
        if after.get(mapping.key) != mapping:
            why = "not installed" if mapping.key not in after else "installed differently"
            raise MappingNotFound(f"cannot remove {describe(mapping)}: {why}")
        del after[mapping.key]
    for mapping in add:
        checkMapping(mapping)
        if mapping.key in after:
            raise MappingExists(f"cannot add {describe(mapping)}: already installed")
        after[mapping.key] = mapping
    return after


@implementer(INATBackend)
class MemoryNATBackend(Service):
    """
    Port forwardings kept in memory.

    Mappings survive C{stopService} (like the kernel's, with C{on_stop =
    "keep"}); C{apply} works whether or not the service runs.
    """

    log = Logger()

    def __init__(self) -> None:
        self._installed: dict[tuple[str, str, int, str], NATMapping] = {}
        #: (wan, address) of every L{forgetOutbound} call, in order.
        self.forgotten: list[tuple[str, IPv4Address]] = []
        #: Each WAN's address, as told by L{setWANAddress}.
        self.addresses: dict[str, IPv4Address] = {}

    def apply(self, add: list[NATMapping], remove: list[NATMapping]) -> Deferred[None]:
        """
        Remove C{remove} and add C{add}, all or nothing.

        @return: a fired L{Deferred}: L{None}, or a L{NATError} failure (and
            then nothing changed).
        """
        try:
            self._installed = planChange(self._installed, add, remove)
        except NATError:
            return fail()
        for mapping in remove:
            self.log.debug("NAT removed {mapping}", mapping=describe(mapping))
        for mapping in add:
            self.log.debug("NAT added {mapping}", mapping=describe(mapping))
        return succeed(None)

    def mappings(self, wan: str) -> list[NATMapping]:
        """
        @return: the mappings installed for C{wan}, ordered by key.
        """
        return sorted((m for m in self._installed.values() if m.wan == wan), key=lambda m: m.key)

    def forgetOutbound(self, wan: str, address: IPv4Address) -> Deferred[None]:
        """
        Record the request (there are no connections in memory).
        """
        self.forgotten.append((wan, address))
        return succeed(None)

    def setWANAddress(self, wan: str, address: IPv4Address | None) -> None:
        """
        Remember the address (nothing is forwarded in memory, hairpin or
        not).
        """
        if address is None:
            self.addresses.pop(wan, None)
        else:
            self.addresses[wan] = address
