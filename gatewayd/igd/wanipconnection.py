# -*- test-case-name: tests.unit.test_igd -*-
"""
The actions of one WAN's WANIPConnection:2 service.

This module knows the service's rules and nothing of sockets or the kernel:
it reads the WAN's state through L{WANState}.
"""

from __future__ import annotations

from typing import Protocol

from gatewayd.errors import InvalidVar

#: The connection types this gateway's WANs can be (spec Table 3).
POSSIBLE_CONNECTION_TYPES = "IP_Routed"


class WANState(Protocol):
    """
    What the IGD services read of one WAN.
    """

    wanName: str

    @property
    def connectionStatus(self) -> str:
        """The spec's ConnectionStatus (Table 4)."""

    @property
    def lastConnectionError(self) -> str:
        """The spec's LastConnectionError (Table 5)."""

    @property
    def externalIPAddress(self) -> str:
        """The WAN's IPv4 address, or C{""} while it has none."""

    @property
    def carrier(self) -> bool:
        """Whether the physical link is up."""

    @property
    def portMappingNumberOfEntries(self) -> int:
        """The number of port mappings on this WAN."""

    def uptime(self) -> int:
        """Seconds since the connection became Connected; 0 when it is not."""

    def linkSpeed(self) -> int:
        """The link's speed in bit/s, 0 when the kernel does not know it."""


class WANIPConnectionService:
    """
    WANIPConnection:2 for one WAN.

    @ivar wan: the WAN whose connection this is.
    """

    def __init__(self, wan: WANState) -> None:
        self.wan = wan

    def GetExternalIPAddress(self, requester: object) -> dict[str, object]:
        return {"NewExternalIPAddress": self.wan.externalIPAddress}

    def GetStatusInfo(self, requester: object) -> dict[str, object]:
        return {
            "NewConnectionStatus": self.wan.connectionStatus,
            "NewLastConnectionError": self.wan.lastConnectionError,
            "NewUptime": self.wan.uptime(),
        }

    def GetConnectionTypeInfo(self, requester: object) -> dict[str, object]:
        return {
            "NewConnectionType": "IP_Routed",
            "NewPossibleConnectionTypes": POSSIBLE_CONNECTION_TYPES,
        }

    def GetNATRSIPStatus(self, requester: object) -> dict[str, object]:
        return {"NewRSIPAvailable": False, "NewNATEnabled": True}

    def stateVariables(self) -> dict[str, object]:
        """
        @return: the evented state variables and their current values.
        """
        return {
            "PossibleConnectionTypes": POSSIBLE_CONNECTION_TYPES,
            "ConnectionStatus": self.wan.connectionStatus,
            "ExternalIPAddress": self.wan.externalIPAddress,
            "PortMappingNumberOfEntries": self.wan.portMappingNumberOfEntries,
        }

    def queryStateVariable(self, name: str) -> object:
        """
        Answer the deprecated QueryStateVariable (still sent by Windows).

        @raise InvalidVar: for a variable this service does not report.
        """
        values = dict(self.stateVariables())
        values.update(ConnectionType="IP_Routed", Uptime=self.wan.uptime())
        if name not in values:
            raise InvalidVar(name)
        return values[name]
