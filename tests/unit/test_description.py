"""
Tests for L{gatewayd.upnp.description}; also the small IGD tree and fake
service implementations the SOAP and HTTP tests share.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lxml import etree
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from gatewayd.errors import NoSuchEntryInArray
from gatewayd.igd.types import Layer3Forwarding, WANCommonInterfaceConfig, WANIPConnection
from gatewayd.upnp.description import (
    configIdOf,
    deviceDescription,
    implementedType,
    scpd,
    serviceTypes,
)
from gatewayd.upnp.model import Device, Service

D = "{urn:schemas-upnp-org:device-1-0}"
S = "{urn:schemas-upnp-org:service-1-0}"


class FakeWANIPConnection:
    """
    A WANIPConnection implementation with a few actions, in every calling
    style: plain return, coroutine, Deferred.

    @ivar calls: C{(action, requester, arguments)} of every call.
    @ivar pending: if set, GetSpecificPortMappingEntry returns this Deferred.
    """

    def __init__(self, external: str = "203.0.113.7") -> None:
        self.external = external
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []
        self.pending: Deferred[dict[str, Any]] | None = None
        self.fail: Exception | None = None

    def GetExternalIPAddress(self, requester: Any) -> dict[str, Any]:
        self.calls.append(("GetExternalIPAddress", requester, {}))
        if self.fail is not None:
            raise self.fail
        return {"NewExternalIPAddress": self.external}

    async def GetStatusInfo(self, requester: Any) -> dict[str, Any]:
        self.calls.append(("GetStatusInfo", requester, {}))
        return {
            "NewConnectionStatus": "Connected",
            "NewLastConnectionError": "ERROR_NONE",
            "NewUptime": 42,
        }

    def GetSpecificPortMappingEntry(
        self, requester: Any, **arguments: Any
    ) -> Deferred[dict[str, Any]]:
        self.calls.append(("GetSpecificPortMappingEntry", requester, arguments))
        if self.pending is not None:
            return self.pending
        if arguments["NewExternalPort"] != 8080:
            raise NoSuchEntryInArray()
        return succeed(
            {
                "NewInternalPort": 80,
                "NewInternalClient": "192.168.1.20",
                "NewEnabled": True,
                "NewPortMappingDescription": "web <&> server",
                "NewLeaseDuration": 3600,
            }
        )

    async def AddAnyPortMapping(self, requester: Any, **arguments: Any) -> dict[str, Any]:
        self.calls.append(("AddAnyPortMapping", requester, arguments))
        return {"NewReservedPort": arguments["NewExternalPort"]}

    def GetNATRSIPStatus(self, requester: Any) -> dict[str, Any]:
        return {"NewRSIPAvailable": False}  # forgets NewNATEnabled: a bug

    def queryStateVariable(self, name: str) -> Any:
        return {"ConnectionStatus": "Connected", "PortMappingNumberOfEntries": 3}.get(name, "")


class FakeCommonInterfaceConfig:
    def GetCommonLinkProperties(self, requester: Any) -> dict[str, Any]:
        return {
            "NewWANAccessType": "Ethernet",
            "NewLayer1UpstreamMaxBitRate": 1000000000,
            "NewLayer1DownstreamMaxBitRate": 1000000000,
            "NewPhysicalLinkStatus": "Up",
        }


class FakeLayer3Forwarding:
    def GetDefaultConnectionService(self, requester: Any) -> dict[str, Any]:
        return {
            "NewDefaultConnectionService": "uuid:conn-isp1:WANConnectionDevice:2,urn:upnp-org:serviceId:WANIPConn1"
        }


def wanDevice(name: str, connection: Any = None) -> Device:
    """
    One WAN: WANDevice:2 with WANCommonInterfaceConfig:1, holding a
    WANConnectionDevice:2 with WANIPConnection:2.
    """
    ipConnection = Service(
        WANIPConnection,
        f"/ctl/{name}/WANIPConn1",
        f"/evt/{name}/WANIPConn1",
        connection if connection is not None else FakeWANIPConnection(),
    )
    return Device(
        "WANDevice",
        2,
        f"uuid:00000000-0000-4000-8000-{name.encode().hex():0>12}",
        f"WAN {name}",
        services=(
            Service(
                WANCommonInterfaceConfig,
                f"/ctl/{name}/WANCommonIFC1",
                f"/evt/{name}/WANCommonIFC1",
                FakeCommonInterfaceConfig(),
            ),
        ),
        devices=(
            Device(
                "WANConnectionDevice",
                2,
                f"uuid:00000000-0000-4000-9000-{name.encode().hex():0>12}",
                f"WAN {name} connection",
                services=(ipConnection,),
            ),
        ),
    )


def buildTree(*wans: Device) -> Device:
    """
    The root IGD:2 with Layer3Forwarding and the given WANs (default: two).
    """
    return Device(
        "InternetGatewayDevice",
        2,
        "uuid:00000000-0000-4000-8000-000000000001",
        "gatewayd test",
        services=(Service(Layer3Forwarding, "/ctl/L3F", "/evt/L3F", FakeLayer3Forwarding()),),
        devices=wans or (wanDevice("isp1"), wanDevice("isp2")),
        serialNumber="0001",
    )


def texts(document: etree._Element, path: str) -> list[str]:
    return [e.text or "" for e in document.iterfind(path)]


class DeviceDescriptionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = buildTree()
        self.doc = etree.fromstring(deviceDescription(self.root, 2, 77))

    def test_wellFormedRoot(self) -> None:
        """
        A control point parsing /rootDesc.xml finds a UDA 1.1 root with our
        configId and the root IGD:2 device.
        """
        self.assertEqual(self.doc.tag, D + "root")
        self.assertEqual(self.doc.get("configId"), "77")
        self.assertEqual(texts(self.doc, f"{D}specVersion/{D}major"), ["1"])
        self.assertEqual(texts(self.doc, f"{D}specVersion/{D}minor"), ["1"])
        self.assertEqual(
            texts(self.doc, f"{D}device/{D}deviceType"),
            ["urn:schemas-upnp-org:device:InternetGatewayDevice:2"],
        )
        self.assertEqual(texts(self.doc, f"{D}device/{D}presentationURL"), ["/"])
        self.assertEqual(texts(self.doc, f"{D}device/{D}serialNumber"), ["0001"])
        self.assertEqual(self.doc.findall(f".//{D}URLBase"), [])

    def test_requiredElementsInOrder(self) -> None:
        """
        Every device carries the required elements in UDA order, so strict
        parsers (Windows) accept it.
        """
        for device in self.doc.iter(D + "device"):
            names = [etree.QName(c).localname for c in device]
            self.assertEqual(
                names[:6],
                [
                    "deviceType",
                    "friendlyName",
                    "manufacturer",
                    "manufacturerURL",
                    "modelDescription",
                    "modelName",
                ],
            )
            self.assertIn("UDN", names)

    def test_twoWANs(self) -> None:
        """
        Each WAN shows as its own WANDevice with its own connection device
        and WANIPConnection:2, each with a unique control URL.
        """
        wans = self.doc.findall(f"{D}device/{D}deviceList/{D}device")
        self.assertEqual(
            [texts(w, f"{D}deviceType") for w in wans],
            [["urn:schemas-upnp-org:device:WANDevice:2"]] * 2,
        )
        services = self.doc.findall(f".//{D}service")
        controls = [s.findtext(f"{D}controlURL") for s in services]
        self.assertEqual(len(controls), len(set(controls)))
        self.assertEqual(
            [e.text for e in self.doc.iter(D + "serviceType")][1:],
            [
                "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1",
                "urn:schemas-upnp-org:service:WANIPConnection:2",
                "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1",
                "urn:schemas-upnp-org:service:WANIPConnection:2",
            ],
        )
        ip = [s for s in services if s.findtext(f"{D}serviceType").endswith("WANIPConnection:2")]
        self.assertEqual(
            [
                (
                    s.findtext(f"{D}serviceId"),
                    s.findtext(f"{D}SCPDURL"),
                    s.findtext(f"{D}controlURL"),
                    s.findtext(f"{D}eventSubURL"),
                )
                for s in ip
            ],
            [
                (
                    "urn:upnp-org:serviceId:WANIPConn1",
                    "/scpd/WANIPConnection2.xml",
                    "/ctl/isp1/WANIPConn1",
                    "/evt/isp1/WANIPConn1",
                ),
                (
                    "urn:upnp-org:serviceId:WANIPConn1",
                    "/scpd/WANIPConnection2.xml",
                    "/ctl/isp2/WANIPConn1",
                    "/evt/isp2/WANIPConn1",
                ),
            ],
        )
        udns = texts(self.doc, f".//{D}UDN")
        self.assertEqual(len(udns), 5)
        self.assertEqual(len(set(udns)), 5)

    def test_igd1View(self) -> None:
        """
        Windows gets a description in which every device and service type is
        version 1 and SCPD URLs lead to the v1 SCPDs; control URLs stay.
        """
        doc = etree.fromstring(deviceDescription(self.root, 1, 77))
        types = texts(doc, f".//{D}deviceType") + texts(doc, f".//{D}serviceType")
        self.assertTrue(types)
        for t in types:
            self.assertTrue(t.endswith(":1"), t)
        self.assertIn("/scpd/WANIPConnection1.xml", texts(doc, f".//{D}SCPDURL"))
        self.assertNotIn("/scpd/WANIPConnection2.xml", texts(doc, f".//{D}SCPDURL"))
        self.assertEqual(texts(doc, f".//{D}controlURL"), texts(self.doc, f".//{D}controlURL"))

    def test_friendlyNameEscaped(self) -> None:
        """
        A friendly name with XML metacharacters stays text, not markup.
        """
        root = replace(buildTree(), friendlyName="<gw> & co")
        doc = etree.fromstring(deviceDescription(root, 2, 1))
        self.assertEqual(texts(doc, f"{D}device/{D}friendlyName"), ["<gw> & co"])


class SCPDTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = next(
            s for s in buildTree().allServices() if s.type.name == "WANIPConnection"
        )

    def actions(self, document: bytes) -> list[str]:
        return texts(etree.fromstring(document), f"{S}actionList/{S}action/{S}name")

    def variables(self, document: bytes) -> list[str]:
        return texts(etree.fromstring(document), f"{S}serviceStateTable/{S}stateVariable/{S}name")

    def test_onlyImplementedActions(self) -> None:
        """
        The SCPD lists exactly the actions the implementation provides, in
        spec order, so control points never see an action they cannot call.
        """
        document = scpd(implementedType(self.service), 5)
        self.assertEqual(
            self.actions(document),
            [
                "GetStatusInfo",
                "GetNATRSIPStatus",
                "GetSpecificPortMappingEntry",
                "GetExternalIPAddress",
                "AddAnyPortMapping",
            ],
        )
        self.assertEqual(etree.fromstring(document).get("configId"), "5")

    def test_arguments(self) -> None:
        """
        Arguments appear in SOAP order with direction and related variable.
        """
        doc = etree.fromstring(scpd(implementedType(self.service), 5))
        action = next(
            a
            for a in doc.iter(S + "action")
            if a.findtext(S + "name") == "GetSpecificPortMappingEntry"
        )
        self.assertEqual(
            [
                (
                    a.findtext(S + "name"),
                    a.findtext(S + "direction"),
                    a.findtext(S + "relatedStateVariable"),
                )
                for a in action.iter(S + "argument")
            ][:4],
            [
                ("NewRemoteHost", "in", "RemoteHost"),
                ("NewExternalPort", "in", "ExternalPort"),
                ("NewProtocol", "in", "PortMappingProtocol"),
                ("NewInternalPort", "out", "InternalPort"),
            ],
        )
        noArguments = next(
            a for a in doc.iter(S + "action") if a.findtext(S + "name") == "GetStatusInfo"
        )
        self.assertIsNotNone(noArguments.find(S + "argumentList"))

    def test_stateTable(self) -> None:
        """
        State variables carry sendEvents, type, default, allowed list and
        range as the spec defines them.
        """
        doc = etree.fromstring(scpd(WANIPConnection, 1))
        byName = {v.findtext(S + "name"): v for v in doc.iter(S + "stateVariable")}
        lease = byName["PortMappingLeaseDuration"]
        self.assertEqual(lease.get("sendEvents"), "no")
        self.assertEqual(lease.findtext(S + "dataType"), "ui4")
        self.assertEqual(lease.findtext(S + "defaultValue"), "3600")
        self.assertEqual(
            (
                lease.findtext(f"{S}allowedValueRange/{S}minimum"),
                lease.findtext(f"{S}allowedValueRange/{S}maximum"),
            ),
            ("0", "604800"),
        )
        self.assertEqual(byName["ConnectionStatus"].get("sendEvents"), "yes")
        self.assertEqual(
            texts(byName["PortMappingProtocol"], f"{S}allowedValueList/{S}allowedValue"),
            ["TCP", "UDP"],
        )

    def test_v1Scpd(self) -> None:
        """
        The v1 SCPD that Windows reads lacks the three v2 actions and the
        three v2 state variables (it gives up on seeing them).
        """
        document = scpd(WANIPConnection.at(1), 1)
        actions, variables = self.actions(document), self.variables(document)
        for name in ("AddAnyPortMapping", "DeletePortMappingRange", "GetListOfPortMappings"):
            self.assertNotIn(name, actions)
        for name in ("SystemUpdateID", "A_ARG_TYPE_Manage", "A_ARG_TYPE_PortListing"):
            self.assertNotIn(name, variables)
        self.assertIn("AddPortMapping", actions)
        self.assertIn("PortMappingNumberOfEntries", variables)
        self.assertNotIn(
            "AddAnyPortMapping", self.actions(scpd(implementedType(self.service).at(1), 1))
        )

    def test_serviceTypes(self) -> None:
        """
        Each service type of the tree is described once, with what its
        implementations provide.
        """
        types = serviceTypes(buildTree())
        self.assertEqual(
            list(types), ["Layer3Forwarding", "WANCommonInterfaceConfig", "WANIPConnection"]
        )
        self.assertEqual(
            [a.name for a in types["Layer3Forwarding"].actions], ["GetDefaultConnectionService"]
        )


class ConfigIdTests(SynchronousTestCase):
    def test_range(self) -> None:
        """
        CONFIGID fits UDA 1.1's 24-bit range.
        """
        self.assertTrue(0 <= configIdOf(buildTree()) <= 0xFFFFFF)

    def test_stable(self) -> None:
        """
        The same tree gives the same CONFIGID, so a restart does not make
        control points refetch everything.
        """
        self.assertEqual(configIdOf(buildTree()), configIdOf(buildTree()))

    def test_changesWithTree(self) -> None:
        """
        Adding a WAN, renaming a device or implementing another action
        changes CONFIGID.
        """
        base = configIdOf(buildTree())
        self.assertNotEqual(configIdOf(buildTree(wanDevice("isp1"))), base)
        self.assertNotEqual(configIdOf(replace(buildTree(), friendlyName="other")), base)

        class More(FakeWANIPConnection):
            def AddPortMapping(self, requester: Any, **arguments: Any) -> None:
                pass

        self.assertNotEqual(
            configIdOf(buildTree(wanDevice("isp1", More()), wanDevice("isp2"))), base
        )
