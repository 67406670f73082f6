# -*- test-case-name: tests.unit.test_description -*-
"""
The IGD service types as the specifications define them: every action with
its arguments in SOAP order, every state variable with its type, range and
eventing.

Sources: WANIPConnection:2 (ISO/IEC 29341-24-10) section 2 and its SCPD;
WANCommonInterfaceConfig:1; Layer3Forwarding:1 (see ../shared/spec).
"""

from gatewayd.upnp.model import IN, OUT, Action, ServiceType, StateVariable

_CONNECTION_TYPES = ("Unconfigured", "IP_Routed", "IP_Bridged")
_CONNECTION_STATUSES = (
    "Unconfigured",
    "Connecting",
    "Connected",
    "PendingDisconnect",
    "Disconnecting",
    "Disconnected",
)
_CONNECTION_ERRORS = (
    "ERROR_NONE",
    "ERROR_COMMAND_ABORTED",
    "ERROR_NOT_ENABLED_FOR_INTERNET",
    "ERROR_ISP_DISCONNECT",
    "ERROR_USER_DISCONNECT",
    "ERROR_IDLE_DISCONNECT",
    "ERROR_FORCED_DISCONNECT",
    "ERROR_NO_CARRIER",
    "ERROR_IP_CONFIGURATION",
    "ERROR_UNKNOWN",
)

#: The longest lease a control point may ask for (seconds).
MAX_LEASE = 604800

#: InternalPort 0 is answered with 732 WildCardNotPermittedInIntPort, not 601.
_SELF_CHECKED = frozenset({"NewInternalPort"})

_MAPPING_OUT = (
    OUT("NewInternalPort", "InternalPort"),
    OUT("NewInternalClient", "InternalClient"),
    OUT("NewEnabled", "PortMappingEnabled"),
    OUT("NewPortMappingDescription", "PortMappingDescription"),
    OUT("NewLeaseDuration", "PortMappingLeaseDuration"),
)
_MAPPING_IN = (
    IN("NewRemoteHost", "RemoteHost"),
    IN("NewExternalPort", "ExternalPort"),
    IN("NewProtocol", "PortMappingProtocol"),
    IN("NewInternalPort", "InternalPort"),
    IN("NewInternalClient", "InternalClient"),
    IN("NewEnabled", "PortMappingEnabled"),
    IN("NewPortMappingDescription", "PortMappingDescription"),
    IN("NewLeaseDuration", "PortMappingLeaseDuration"),
)

WANIPConnection = ServiceType(
    name="WANIPConnection",
    version=2,
    serviceId="WANIPConn1",
    actions=(
        Action("SetConnectionType", (IN("NewConnectionType", "ConnectionType"),)),
        Action(
            "GetConnectionTypeInfo",
            (
                OUT("NewConnectionType", "ConnectionType"),
                OUT("NewPossibleConnectionTypes", "PossibleConnectionTypes"),
            ),
        ),
        Action("RequestConnection"),
        Action("RequestTermination"),
        Action("ForceTermination"),
        Action("SetAutoDisconnectTime", (IN("NewAutoDisconnectTime", "AutoDisconnectTime"),)),
        Action("SetIdleDisconnectTime", (IN("NewIdleDisconnectTime", "IdleDisconnectTime"),)),
        Action("SetWarnDisconnectDelay", (IN("NewWarnDisconnectDelay", "WarnDisconnectDelay"),)),
        Action(
            "GetStatusInfo",
            (
                OUT("NewConnectionStatus", "ConnectionStatus"),
                OUT("NewLastConnectionError", "LastConnectionError"),
                OUT("NewUptime", "Uptime"),
            ),
        ),
        Action("GetAutoDisconnectTime", (OUT("NewAutoDisconnectTime", "AutoDisconnectTime"),)),
        Action("GetIdleDisconnectTime", (OUT("NewIdleDisconnectTime", "IdleDisconnectTime"),)),
        Action("GetWarnDisconnectDelay", (OUT("NewWarnDisconnectDelay", "WarnDisconnectDelay"),)),
        Action(
            "GetNATRSIPStatus",
            (OUT("NewRSIPAvailable", "RSIPAvailable"), OUT("NewNATEnabled", "NATEnabled")),
        ),
        Action(
            "GetGenericPortMappingEntry",
            (
                IN("NewPortMappingIndex", "PortMappingNumberOfEntries"),
                OUT("NewRemoteHost", "RemoteHost"),
                OUT("NewExternalPort", "ExternalPort"),
                OUT("NewProtocol", "PortMappingProtocol"),
            )
            + _MAPPING_OUT,
        ),
        Action("GetSpecificPortMappingEntry", _MAPPING_IN[:3] + _MAPPING_OUT),
        Action("AddPortMapping", _MAPPING_IN, checkedByService=_SELF_CHECKED),
        Action("DeletePortMapping", _MAPPING_IN[:3]),
        Action(
            "GetExternalIPAddress", (OUT("NewExternalIPAddress", "ExternalIPAddress"),)
        ),
        Action(
            "DeletePortMappingRange",
            (
                IN("NewStartPort", "ExternalPort"),
                IN("NewEndPort", "ExternalPort"),
                IN("NewProtocol", "PortMappingProtocol"),
                IN("NewManage", "A_ARG_TYPE_Manage"),
            ),
            since=2,
        ),
        Action(
            "GetListOfPortMappings",
            (
                IN("NewStartPort", "ExternalPort"),
                IN("NewEndPort", "ExternalPort"),
                IN("NewProtocol", "PortMappingProtocol"),
                IN("NewManage", "A_ARG_TYPE_Manage"),
                IN("NewNumberOfPorts", "PortMappingNumberOfEntries"),
                OUT("NewPortListing", "A_ARG_TYPE_PortListing"),
            ),
            since=2,
        ),
        Action(
            "AddAnyPortMapping",
            _MAPPING_IN + (OUT("NewReservedPort", "ExternalPort"),),
            since=2,
            checkedByService=_SELF_CHECKED,
        ),
    ),
    stateVariables=(
        StateVariable(
            "ConnectionType", "string", default="IP_Routed", allowedValues=_CONNECTION_TYPES
        ),
        StateVariable("PossibleConnectionTypes", "string", sendEvents=True),
        StateVariable(
            "ConnectionStatus",
            "string",
            sendEvents=True,
            default="Unconfigured",
            allowedValues=_CONNECTION_STATUSES,
        ),
        StateVariable("Uptime", "ui4", default="0"),
        StateVariable(
            "LastConnectionError",
            "string",
            default="ERROR_NONE",
            allowedValues=_CONNECTION_ERRORS,
        ),
        StateVariable("AutoDisconnectTime", "ui4", default="0"),
        StateVariable("IdleDisconnectTime", "ui4", default="0"),
        StateVariable("WarnDisconnectDelay", "ui4", default="0"),
        StateVariable("RSIPAvailable", "boolean", default="0"),
        StateVariable("NATEnabled", "boolean", default="1"),
        StateVariable("ExternalIPAddress", "string", sendEvents=True),
        StateVariable("PortMappingNumberOfEntries", "ui2", sendEvents=True),
        StateVariable("PortMappingEnabled", "boolean"),
        StateVariable(
            "PortMappingLeaseDuration", "ui4", default="3600", allowedRange=(0, MAX_LEASE)
        ),
        StateVariable("RemoteHost", "string"),
        StateVariable("ExternalPort", "ui2"),
        StateVariable("InternalPort", "ui2", allowedRange=(1, 65535)),
        StateVariable("PortMappingProtocol", "string", allowedValues=("TCP", "UDP")),
        StateVariable("InternalClient", "string"),
        StateVariable("PortMappingDescription", "string"),
        StateVariable("SystemUpdateID", "ui4", sendEvents=True, since=2),
        StateVariable("A_ARG_TYPE_Manage", "boolean", since=2),
        StateVariable("A_ARG_TYPE_PortListing", "string", since=2),
    ),
)

WANCommonInterfaceConfig = ServiceType(
    name="WANCommonInterfaceConfig",
    version=1,
    serviceId="WANCommonIFC1",
    actions=(
        Action("SetEnabledForInternet", (IN("NewEnabledForInternet", "EnabledForInternet"),)),
        Action("GetEnabledForInternet", (OUT("NewEnabledForInternet", "EnabledForInternet"),)),
        Action(
            "GetCommonLinkProperties",
            (
                OUT("NewWANAccessType", "WANAccessType"),
                OUT("NewLayer1UpstreamMaxBitRate", "Layer1UpstreamMaxBitRate"),
                OUT("NewLayer1DownstreamMaxBitRate", "Layer1DownstreamMaxBitRate"),
                OUT("NewPhysicalLinkStatus", "PhysicalLinkStatus"),
            ),
        ),
        Action("GetWANAccessProvider", (OUT("NewWANAccessProvider", "WANAccessProvider"),)),
        Action(
            "GetMaximumActiveConnections",
            (OUT("NewMaximumActiveConnections", "MaximumActiveConnections"),),
        ),
        Action("GetTotalBytesSent", (OUT("NewTotalBytesSent", "TotalBytesSent"),)),
        Action("GetTotalBytesReceived", (OUT("NewTotalBytesReceived", "TotalBytesReceived"),)),
        Action("GetTotalPacketsSent", (OUT("NewTotalPacketsSent", "TotalPacketsSent"),)),
        Action(
            "GetTotalPacketsReceived", (OUT("NewTotalPacketsReceived", "TotalPacketsReceived"),)
        ),
        Action(
            "GetActiveConnection",
            (
                IN("NewActiveConnectionIndex", "NumberOfActiveConnections"),
                OUT("NewActiveConnDeviceContainer", "ActiveConnectionDeviceContainer"),
                OUT("NewActiveConnectionServiceID", "ActiveConnectionServiceID"),
            ),
        ),
    ),
    stateVariables=(
        StateVariable(
            "WANAccessType", "string", allowedValues=("DSL", "POTS", "Cable", "Ethernet")
        ),
        StateVariable("Layer1UpstreamMaxBitRate", "ui4"),
        StateVariable("Layer1DownstreamMaxBitRate", "ui4"),
        StateVariable(
            "PhysicalLinkStatus",
            "string",
            sendEvents=True,
            allowedValues=("Up", "Down", "Initializing", "Unavailable"),
        ),
        StateVariable("WANAccessProvider", "string"),
        StateVariable("MaximumActiveConnections", "ui2", allowedRange=(1, 65535)),
        StateVariable("NumberOfActiveConnections", "ui2"),
        StateVariable("ActiveConnectionDeviceContainer", "string"),
        StateVariable("ActiveConnectionServiceID", "string"),
        StateVariable("TotalBytesSent", "ui4"),
        StateVariable("TotalBytesReceived", "ui4"),
        StateVariable("TotalPacketsSent", "ui4"),
        StateVariable("TotalPacketsReceived", "ui4"),
        StateVariable("EnabledForInternet", "boolean", sendEvents=True, default="1"),
    ),
)

Layer3Forwarding = ServiceType(
    name="Layer3Forwarding",
    version=1,
    serviceId="L3Forwarding1",
    actions=(
        Action(
            "SetDefaultConnectionService",
            (IN("NewDefaultConnectionService", "DefaultConnectionService"),),
        ),
        Action(
            "GetDefaultConnectionService",
            (OUT("NewDefaultConnectionService", "DefaultConnectionService"),),
        ),
    ),
    stateVariables=(StateVariable("DefaultConnectionService", "string", sendEvents=True),),
)
