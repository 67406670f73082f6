# -*- test-case-name: tests.unit.test_description -*-
"""
Device description and service description (SCPD) documents, built with lxml
from the device model (UDA-essentials.md section 2).

One model, two views: version 2 is the IGD:2 tree as implemented; version 1
is the IGD:1 view for control points that break on v2 documents
(IGD-2-devices.md section 6): every device and service type at C{:1}, SCPD
URLs pointing at the v1 SCPDs, which lack the v2-only actions and state
variables.
"""

from __future__ import annotations

import zlib

from lxml import etree
from lxml.builder import ElementMaker

from gatewayd.upnp.model import Device, Service, ServiceType, StateVariable

DEVICE_NS = "urn:schemas-upnp-org:device-1-0"
SERVICE_NS = "urn:schemas-upnp-org:service-1-0"

#: The URL of the device's presentation page, relative to the description.
PRESENTATION_URL = "/"

_D = ElementMaker(namespace=DEVICE_NS, nsmap={None: DEVICE_NS})
_S = ElementMaker(namespace=SERVICE_NS, nsmap={None: SERVICE_NS})


def implementedType(service: Service) -> ServiceType:
    """
    @return: the type of C{service} restricted to the actions its
        implementation provides as callable attributes, in spec order.
    """
    implementation = service.implementation
    provided = frozenset(
        action.name
        for action in service.type.actions
        if callable(getattr(implementation, action.name, None))
    )
    return service.type.only(provided)


def _serialize(element: etree._Element) -> bytes:
    return etree.tostring(element, xml_declaration=True, encoding="utf-8")


def _specVersion(E: ElementMaker) -> etree._Element:
    return E.specVersion(E.major("1"), E.minor("1"))


def _service(service: Service, version: int) -> etree._Element:
    E = _D
    viewVersion = min(version, service.type.version)
    return E.service(
        E.serviceType(service.type.at(viewVersion).urn),
        E.serviceId(service.type.serviceIdURN),
        E.SCPDURL(service.scpdPath(version)),
        E.controlURL(service.controlPath),
        E.eventSubURL(service.eventPath if service.type.eventedVariables else ""),
    )


def _device(device: Device, version: int, isRoot: bool) -> etree._Element:
    E = _D
    element = E.device(
        E.deviceType(device.urn(version)),
        E.friendlyName(device.friendlyName),
        E.manufacturer(device.manufacturer),
        E.manufacturerURL(device.manufacturerURL),
        E.modelDescription(device.modelDescription),
        E.modelName(device.modelName),
        E.modelNumber(device.modelNumber),
    )
    if device.serialNumber:
        element.append(E.serialNumber(device.serialNumber))
    element.append(E.UDN(device.udn))
    if device.services:
        element.append(E.serviceList(*(_service(s, version) for s in device.services)))
    if device.devices:
        element.append(E.deviceList(*(_device(d, version, False) for d in device.devices)))
    if isRoot:
        element.append(E.presentationURL(PRESENTATION_URL))
    return element


def deviceDescription(root: Device, version: int, configId: int) -> bytes:
    """
    The root device description as a control point of C{version} sees it.

    URLs are relative (no C{URLBase}, deprecated by UDA 1.1), so the document
    is the same whichever LAN address it is fetched from.

    @param version: 2 for the tree as implemented; 1 for the IGD:1 view
        (every type at C{min(1, implemented)}).
    @param configId: the C{configId} attribute (see L{configIdOf}).
    """
    document = _D.root(_specVersion(_D), _device(root, version, True))
    document.set("configId", str(configId))
    return _serialize(document)


def _stateVariable(variable: StateVariable) -> etree._Element:
    E = _S
    element = E.stateVariable(E.name(variable.name), E.dataType(variable.dataType))
    element.set("sendEvents", "yes" if variable.sendEvents else "no")
    if variable.default is not None:
        element.append(E.defaultValue(variable.default))
    if variable.allowedValues is not None:
        element.append(E.allowedValueList(*(E.allowedValue(v) for v in variable.allowedValues)))
    if variable.allowedRange is not None:
        low, high = variable.allowedRange
        element.append(E.allowedValueRange(E.minimum(str(low)), E.maximum(str(high))))
    return element


def scpd(serviceType: ServiceType, configId: int) -> bytes:
    """
    The service description of C{serviceType}, exactly as given: pass
    C{implementedType(service).at(version)} to describe what one version's
    control points may call.
    """
    E = _S
    actions = E.actionList(
        *(
            (
                E.action(
                    E.name(action.name),
                    E.argumentList(
                        *(
                            E.argument(
                                E.name(argument.name),
                                E.direction(argument.direction),
                                E.relatedStateVariable(argument.relatedStateVariable),
                            )
                            for argument in action.arguments
                        )
                    ),
                )
                if action.arguments
                else E.action(E.name(action.name))
            )
            for action in serviceType.actions
        )
    )
    table = E.serviceStateTable(*(_stateVariable(v) for v in serviceType.stateVariables))
    document = E.scpd(_specVersion(E), actions, table)
    document.set("configId", str(configId))
    return _serialize(document)


def serviceTypes(root: Device) -> dict[str, ServiceType]:
    """
    The implemented type of every service in the tree, by type name.

    Services of one type share one SCPD URL (L{Service.scpdPath}); if their
    implementations differ, the SCPD lists the union of their actions (a
    service asked for an action it lacks answers 401 Invalid Action).

    @return: type name to implemented L{ServiceType}, in document order.
    """
    provided: dict[str, set[str]] = {}
    types: dict[str, ServiceType] = {}
    for service in root.allServices():
        types.setdefault(service.type.name, service.type)
        provided.setdefault(service.type.name, set()).update(
            a.name for a in implementedType(service).actions
        )
    return {name: t.only(frozenset(provided[name])) for name, t in types.items()}


def configIdOf(root: Device) -> int:
    """
    The UDA 1.1 CONFIGID of the tree: a CRC of the v2 description and every
    SCPD (written with C{configId} 0), reduced to 24 bits (0..16777215).

    Deterministic, so it is stable across restarts, and it changes whenever
    a device, service, URL or implemented action changes.
    """
    crc = zlib.crc32(deviceDescription(root, 2, 0))
    for serviceType in serviceTypes(root).values():
        for version in range(1, serviceType.version + 1):
            crc = zlib.crc32(scpd(serviceType.at(version), 0), crc)
    return crc & 0xFFFFFF
