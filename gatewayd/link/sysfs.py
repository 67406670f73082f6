# -*- test-case-name: tests.unit.test_service -*-
"""
What the kernel reports through sysfs and not through rtnetlink.
"""

from __future__ import annotations

from pathlib import Path

SYS_CLASS_NET = Path("/sys/class/net")


def linkSpeed(interface: str, root: Path = SYS_CLASS_NET) -> int:
    """
    @return: the interface's speed in bit/s as its driver reports it, or 0
        when the driver does not know (virtual links, no carrier) or the
        interface does not exist.
    """
    try:
        text = (root / interface / "speed").read_text().strip()
        megabits = int(text)
    except (OSError, ValueError):
        return 0
    return megabits * 1_000_000 if megabits > 0 else 0
