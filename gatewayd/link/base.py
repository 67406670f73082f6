# -*- test-case-name: tests.unit.test_links -*-
"""
What link types share: a service that holds a L{LinkStatus} and tells its
observers when it changes, and checks of configuration values.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Interface
from typing import Callable, Collection, Mapping

from twisted.application.service import Service
from twisted.logger import Logger

from gatewayd.config import describeValue
from gatewayd.errors import ConfigError
from gatewayd.interfaces import LinkStatus
from gatewayd.observers import Observers


class ObservableLink(Service):
    """
    Base class of links: keeps the current status and calls observers once
    per change.

    Subclasses call L{_setStatus} with every status they compute; identical
    statuses are not reported again.

    @ivar interface: the interface name.
    @ivar status: the current L{LinkStatus}.
    """

    log = Logger()

    def __init__(self, interface: str, status: LinkStatus | None = None) -> None:
        self.interface = interface
        self.status = status if status is not None else LinkStatus()
        self._observers: Observers[[LinkStatus]] = Observers(f"the link of {interface}")

    def addObserver(self, observer: Callable[[LinkStatus], None]) -> Callable[[], None]:
        """
        Call C{observer} with the new status after every change.

        @return: a callable that removes the observer; calling it twice is
            harmless.
        """
        return self._observers.add(observer)

    def _setStatus(self, status: LinkStatus) -> None:
        """
        Make C{status} current and tell the observers, if it differs from
        the current one. An observer that raises is logged and does not stop
        the others.
        """
        if status == self.status:
            return
        self.status = status
        self._observers.notify(status)


def describe(value: object) -> str:
    """
    @return: C{value} as a configuration file would show it, for messages.
    """
    return describeValue(value)


def checkKeys(config: Mapping[str, object], allowed: Collection[str]) -> None:
    """
    @raise ConfigError: naming the first key of C{config} (in sorted order)
        that is not in C{allowed}.
    """
    for key in sorted(config):
        if key not in allowed:
            raise ConfigError(key, "unknown key")


def parseAddress(key: str, value: object) -> IPv4Address:
    """
    @return: C{value} as an IPv4 address.
    @raise ConfigError: naming C{key} unless C{value} is a string in
        dotted-quad form.
    """
    expected = 'expected an IPv4 address, e.g. "203.0.113.1"'
    if not isinstance(value, str):
        raise ConfigError(key, f"{expected}; got {describe(value)}")
    try:
        return IPv4Address(value)
    except ValueError:
        raise ConfigError(key, f"{expected}; got {describe(value)}") from None


def parseInterfaceAddress(key: str, value: object) -> IPv4Interface:
    """
    @return: C{value} as an IPv4 address with its prefix length.
    @raise ConfigError: naming C{key} unless C{value} is a string like
        C{"203.0.113.2/24"} whose address is a host of its network (not the
        network or broadcast address, for prefixes up to /30).
    """
    expected = 'expected an IPv4 address with prefix, e.g. "203.0.113.2/24"'
    if not isinstance(value, str) or _PREFIXED.fullmatch(value) is None:
        raise ConfigError(key, f"{expected}; got {describe(value)}")
    try:
        address = IPv4Interface(value)
    except ValueError:
        raise ConfigError(key, f"{expected}; got {describe(value)}") from None
    network = address.network
    edges = (network.network_address, network.broadcast_address)
    if network.prefixlen <= 30 and address.ip in edges:
        raise ConfigError(
            key, f"expected a host address of {network}, not its network or broadcast address"
        )
    return address


_PREFIXED = re.compile(r"[0-9.]+/[0-9]{1,2}")
