# -*- test-case-name: tests.unit.test_static -*-
"""
The capabilities a link type needs (CAP_NET_ADMIN to configure interfaces,
CAP_NET_RAW for a DHCP client's raw socket), checked before anything is
configured so that a daemon without them says what is missing, for which
WAN, and stops: no half-configured interface is left behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from gatewayd.errors import ConfigError

#: Bit numbers of linux/capability.h.
CAPABILITIES = {"CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13}


def effectiveCapabilities(status: Path = Path("/proc/self/status")) -> int:
    """
    @return: this process's effective capability set, as a bit mask (all
        bits set if it cannot be read: let the kernel say no later).
    """
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return ~0


def missingCapabilities(needed: Iterable[str], effective: int | None = None) -> list[str]:
    """
    @return: the names in C{needed} that C{effective} (this process's by
        default) lacks, in the order given.
    """
    if effective is None:
        effective = effectiveCapabilities()
    return [name for name in needed if not effective & (1 << CAPABILITIES[name])]


def requiredCapabilities(linkType: Any, settings: object) -> tuple[str, ...]:
    """
    @return: what C{linkType} says its links need with C{settings}
        (its optional C{requiredCapabilities} method), else nothing.
    """
    ask = getattr(linkType, "requiredCapabilities", None)
    return tuple(ask(settings)) if ask is not None else ()


def checkCapabilities(
    wans: Sequence[tuple[int, str, Any, object]], effective: int | None = None
) -> None:
    """
    Check that this process may run every WAN's link.

    @param wans: C{(index, WAN name, link type, settings)} per WAN.
    @raise ConfigError: naming the first WAN (C{wan[i].link.type}) whose
        link needs a capability this process lacks, and which.
    """
    for index, name, linkType, settings in wans:
        missing = missingCapabilities(requiredCapabilities(linkType, settings), effective)
        if missing:
            raise ConfigError(
                f"wan[{index}].link.type",
                f'WAN "{name}" uses a {linkType.name} link, which needs '
                f"{' and '.join(missing)}; this process lacks "
                f"{'it' if len(missing) == 1 else 'them'} (run gatewayd as root or "
                f"grant {','.join(missing)} to it, e.g. AmbientCapabilities= in the systemd unit)",
            )
