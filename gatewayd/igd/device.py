# -*- test-case-name: tests.unit.test_device -*-
"""
The IGD:2 device tree: a root InternetGatewayDevice:2 with Layer3Forwarding:1
and, per WAN, one WANDevice:2 (WANCommonInterfaceConfig:1) holding one
WANConnectionDevice:2 (WANIPConnection:2).

UDNs are name-based UUIDs derived from a persisted random seed, so they stay
the same across restarts and differ between installations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence
from uuid import UUID, uuid5

from gatewayd.igd.types import Layer3Forwarding, WANCommonInterfaceConfig, WANIPConnection
from gatewayd.upnp.model import Device, Service


@dataclass(frozen=True)
class WANParts:
    """
    What the device tree needs of one WAN.

    @ivar name: the WAN's configured name (used in URLs).
    @ivar ipConnection: the WANIPConnection:2 implementation.
    @ivar commonInterface: the WANCommonInterfaceConfig:1 implementation.
    """

    name: str
    ipConnection: Any
    commonInterface: Any


def udn(seed: UUID, *parts: str) -> str:
    """
    @return: the stable C{uuid:...} UDN of the device named by C{parts}.
    """
    return f"uuid:{uuid5(seed, '/'.join(parts))}"


def connectionDeviceUDN(seed: UUID, wan: str) -> str:
    return udn(seed, "WANConnectionDevice", wan)


def buildDevice(
    seed: UUID, friendlyName: str, wans: Sequence[WANParts], layer3Forwarding: Any
) -> Device:
    """
    Build the IGD:2 tree, WANs in the order given (control points such as
    miniupnpc use the first WANIPConnection they find: put the preferred WAN
    first).
    """
    wanDevices = tuple(
        Device(
            deviceType="WANDevice",
            version=2,
            udn=udn(seed, "WANDevice", wan.name),
            friendlyName=f"{friendlyName} WAN {wan.name}"[:63],
            modelDescription=f"WAN interface {wan.name}",
            services=(
                Service(
                    WANCommonInterfaceConfig,
                    controlPath=f"/ctl/{wan.name}/{WANCommonInterfaceConfig.serviceId}",
                    eventPath=f"/evt/{wan.name}/{WANCommonInterfaceConfig.serviceId}",
                    implementation=wan.commonInterface,
                ),
            ),
            devices=(
                Device(
                    deviceType="WANConnectionDevice",
                    version=2,
                    udn=connectionDeviceUDN(seed, wan.name),
                    friendlyName=f"{friendlyName} WAN {wan.name} connection"[:63],
                    modelDescription=f"IP connection of WAN {wan.name}",
                    services=(
                        Service(
                            WANIPConnection,
                            controlPath=f"/ctl/{wan.name}/{WANIPConnection.serviceId}",
                            eventPath=f"/evt/{wan.name}/{WANIPConnection.serviceId}",
                            implementation=wan.ipConnection,
                        ),
                    ),
                ),
            ),
        )
        for wan in wans
    )
    return Device(
        deviceType="InternetGatewayDevice",
        version=2,
        udn=udn(seed, "InternetGatewayDevice"),
        friendlyName=friendlyName,
        services=(
            Service(
                Layer3Forwarding,
                controlPath="/ctl/L3F",
                eventPath="/evt/L3F",
                implementation=layer3Forwarding,
            ),
        ),
        devices=wanDevices,
        serialNumber=str(seed)[:8],
    )
