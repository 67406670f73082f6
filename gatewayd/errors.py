# -*- test-case-name: tests.unit.test_soap -*-
"""
Errors that carry the UPnP specification's data, and configuration errors.

Domain code raises these; only L{gatewayd.upnp.soap} turns a L{UPnPError}
into a SOAP fault.
"""


class ConfigError(Exception):
    """
    The configuration is wrong.

    @ivar path: the key path of the mistake, e.g. C{wan[1].link.type}, or
        C{""} for the file as a whole.
    @ivar expected: what was expected there, for a human.
    @ivar file: the file's name, once known.
    """

    def __init__(self, path: str, expected: str, file: str = "") -> None:
        super().__init__(path, expected, file)
        self.path = path
        self.expected = expected
        self.file = file

    def inFile(self, file: str) -> "ConfigError":
        """
        @return: a copy of this error that names C{file}.
        """
        return ConfigError(self.path, self.expected, file)

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.file, self.path) if p)
        return f"{where}: {self.expected}" if where else self.expected


class UPnPError(Exception):
    """
    An error with a UPnP error code, answered as a SOAP fault.

    @cvar code: the UPnP errorCode.
    @cvar description: the errorDescription (the name in the spec's table).
    """

    code: int = 501
    description: str = "Action Failed"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.description)
        self.detail = detail

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.code} {self.detail!r}>"



# UDA 1.1 standard errors (UDA-essentials.md section 4.5).
class InvalidAction(UPnPError):
    code, description = 401, "Invalid Action"


class InvalidArgs(UPnPError):
    code, description = 402, "Invalid Args"


class InvalidVar(UPnPError):
    code, description = 404, "Invalid Var"


class ActionFailed(UPnPError):
    code, description = 501, "Action Failed"


class ArgumentValueInvalid(UPnPError):
    code, description = 600, "Argument Value Invalid"


class ArgumentValueOutOfRange(UPnPError):
    code, description = 601, "Argument Value Out of Range"


class OptionalActionNotImplemented(UPnPError):
    code, description = 602, "Optional Action Not Implemented"


class StringArgumentTooLong(UPnPError):
    code, description = 605, "String Argument Too Long"


class ActionNotAuthorized(UPnPError):
    code, description = 606, "Action not authorized"


# WANIPConnection:2 Table 51 (WANIPConnection-2.md), and Layer3Forwarding:1.
class InactiveConnectionStateRequired(UPnPError):
    code, description = 703, "InactiveConnectionStateRequired"


class ConnectionSetupFailed(UPnPError):
    code, description = 704, "ConnectionSetupFailed"


class ConnectionSetupInProgress(UPnPError):
    code, description = 705, "ConnectionSetupInProgress"


class ConnectionNotConfigured(UPnPError):
    code, description = 706, "ConnectionNotConfigured"


class DisconnectInProgress(UPnPError):
    code, description = 707, "DisconnectInProgress"


class InvalidLayer2Address(UPnPError):
    code, description = 708, "InvalidLayer2Address"


class InternetAccessDisabled(UPnPError):
    code, description = 709, "InternetAccessDisabled"


class InvalidConnectionType(UPnPError):
    code, description = 710, "InvalidConnectionType"


class ConnectionAlreadyTerminated(UPnPError):
    code, description = 711, "ConnectionAlreadyTerminated"


class SpecifiedArrayIndexInvalid(UPnPError):
    code, description = 713, "SpecifiedArrayIndexInvalid"


class NoSuchEntryInArray(UPnPError):
    code, description = 714, "NoSuchEntryInArray"


class WildCardNotPermittedInSrcIP(UPnPError):
    code, description = 715, "WildCardNotPermittedInSrcIP"


class WildCardNotPermittedInExtPort(UPnPError):
    code, description = 716, "WildCardNotPermittedInExtPort"


class ConflictInMappingEntry(UPnPError):
    code, description = 718, "ConflictInMappingEntry"


class InvalidDeviceUUID(UPnPError):
    code, description = 720, "InvalidDeviceUUID"


class InvalidServiceID(UPnPError):
    code, description = 721, "InvalidServiceID"


class InvalidConnServiceSelection(UPnPError):
    code, description = 723, "InvalidConnServiceSelection"


class NoPortMapsAvailable(UPnPError):
    code, description = 728, "NoPortMapsAvailable"


class ConflictWithOtherMechanisms(UPnPError):
    code, description = 729, "ConflictWithOtherMechanisms"


class PortMappingNotFound(UPnPError):
    code, description = 730, "PortMappingNotFound"


class ReadOnly(UPnPError):
    code, description = 731, "ReadOnly"


class WildCardNotPermittedInIntPort(UPnPError):
    code, description = 732, "WildCardNotPermittedInIntPort"


class InconsistentParameters(UPnPError):
    code, description = 733, "InconsistentParameters"
