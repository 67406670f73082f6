"""
Tests for L{gatewayd.igd.wancommon}: WANCommonInterfaceConfig:1 as a
control point sees it.
"""

from __future__ import annotations

from ipaddress import IPv4Interface
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from gatewayd.connection import WANConnection
from gatewayd.errors import UPnPError
from gatewayd.igd.types import WANCommonInterfaceConfig
from gatewayd.igd.wancommon import WANCommonInterfaceConfigService
from gatewayd.interfaces import LANAddress
from gatewayd.link.simulated import SimulatedLink, SimulatedSettings
from gatewayd.upnp.http import LANPolicy, makeSite
from gatewayd.upnp.model import Device, Service, formatValue

from .test_description import buildTree
from .test_soap import envelope, faultCode, http, outArguments, post

UDN = "uuid:5f0c7a4e-2b1d-5c3e-9a8f-1d2e3f405162"
URN = WANCommonInterfaceConfig.urn


class FakeWAN:
    """
    The part of a WAN this service reads.
    """

    def __init__(self, carrier: bool = True, speed: int = 1_000_000_000) -> None:
        self.carrier = carrier
        self.speed = speed

    def linkSpeed(self) -> int:
        return self.speed


class RecordingConnection:
    def __init__(self) -> None:
        self.changes = 0

    def enabledChanged(self) -> None:
        self.changes += 1


def counters(**values: int) -> Any:
    stats = dict(rx_bytes=0, tx_bytes=0, rx_packets=0, tx_packets=0)
    stats.update(values)
    return lambda: succeed(stats)


class CommonLinkPropertiesTests(SynchronousTestCase):
    def test_properties(self) -> None:
        """
        An Ethernet WAN reports its speed both ways and Up while it has
        carrier, Down without.
        """
        wan = FakeWAN()
        service = WANCommonInterfaceConfigService(wan)
        self.assertEqual(
            service.GetCommonLinkProperties(None),
            {
                "NewWANAccessType": "Ethernet",
                "NewLayer1UpstreamMaxBitRate": 1_000_000_000,
                "NewLayer1DownstreamMaxBitRate": 1_000_000_000,
                "NewPhysicalLinkStatus": "Up",
            },
        )
        wan.carrier = False
        self.assertEqual(service.GetCommonLinkProperties(None)["NewPhysicalLinkStatus"], "Down")

    def test_fastLinkClamped(self) -> None:
        """
        A 10 Gb/s link (a veth says so) reports 4294967295 bit/s, the largest
        ui4, not a wrapped value.
        """
        out = WANCommonInterfaceConfigService(FakeWAN(speed=10_000_000_000)).GetCommonLinkProperties(None)
        self.assertEqual(out["NewLayer1UpstreamMaxBitRate"], 4294967295)
        self.assertEqual(out["NewLayer1DownstreamMaxBitRate"], 4294967295)

    def test_unknownSpeed(self) -> None:
        """
        A link whose speed the kernel does not know reports 0.
        """
        out = WANCommonInterfaceConfigService(FakeWAN(speed=0)).GetCommonLinkProperties(None)
        self.assertEqual(out["NewLayer1UpstreamMaxBitRate"], 0)

    def test_physicalLinkEvents(self) -> None:
        """
        Observers hear PhysicalLinkStatus when it changes, once per change.
        """
        wan = FakeWAN()
        service = WANCommonInterfaceConfigService(wan)
        heard: list[tuple[str, object]] = []
        remove = service.addObserver(lambda name, value: heard.append((name, value)))
        service.linkStatusChanged()
        wan.carrier = False
        service.linkStatusChanged()
        service.linkStatusChanged()
        wan.carrier = True
        service.linkStatusChanged()
        remove()
        wan.carrier = False
        service.linkStatusChanged()
        self.assertEqual(heard, [("PhysicalLinkStatus", "Down"), ("PhysicalLinkStatus", "Up")])
        self.assertEqual(service.stateVariables(), {"PhysicalLinkStatus": "Down", "EnabledForInternet": True})


class CounterTests(SynchronousTestCase):
    def total(self, service: WANCommonInterfaceConfigService, action: str) -> object:
        d = Deferred.fromCoroutine(getattr(service, action)(None))
        return self.successResultOf(d)

    def test_directions(self) -> None:
        """
        Sent is what the WAN interface transmitted, received what it received.
        """
        service = WANCommonInterfaceConfigService(
            FakeWAN(), counters=counters(tx_bytes=1, rx_bytes=2, tx_packets=3, rx_packets=4)
        )
        self.assertEqual(
            [
                self.total(service, a)
                for a in ("GetTotalBytesSent", "GetTotalBytesReceived", "GetTotalPacketsSent", "GetTotalPacketsReceived")
            ],
            [
                {"NewTotalBytesSent": 1},
                {"NewTotalBytesReceived": 2},
                {"NewTotalPacketsSent": 3},
                {"NewTotalPacketsReceived": 4},
            ],
        )

    def test_wrap(self) -> None:
        """
        Counters beyond 2^32 - 1 wrap around, as ui4 counters do, and never
        fail; the SOAP layer wraps ui4 values the same way.
        """
        service = WANCommonInterfaceConfigService(
            FakeWAN(), counters=counters(tx_bytes=2**32 + 5, rx_bytes=2**32 - 1, rx_packets=3 * 2**32)
        )
        self.assertEqual(self.total(service, "GetTotalBytesSent"), {"NewTotalBytesSent": 5})
        self.assertEqual(self.total(service, "GetTotalBytesReceived"), {"NewTotalBytesReceived": 2**32 - 1})
        self.assertEqual(self.total(service, "GetTotalPacketsReceived"), {"NewTotalPacketsReceived": 0})
        self.assertEqual(formatValue("ui4", 2**32 + 5), "5")

    def test_unavailable(self) -> None:
        """
        Without counters, or when they cannot be read (interface gone), the
        actions answer 501 Action Failed.
        """
        for service in (
            WANCommonInterfaceConfigService(FakeWAN()),
            WANCommonInterfaceConfigService(FakeWAN(), counters=lambda: fail(KeyError("eth1"))),
            WANCommonInterfaceConfigService(FakeWAN(), counters=lambda: fail(OSError("netlink"))),
        ):
            failure = self.failureResultOf(Deferred.fromCoroutine(service.GetTotalBytesSent(None)), UPnPError)
            self.assertEqual(failure.value.code, 501)
        # A missing interface is one warning line; anything else is logged with its traceback.
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 0)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class ConnectionTests(SynchronousTestCase):
    def test_maximumActiveConnections(self) -> None:
        """
        A WAN has one connection.
        """
        service = WANCommonInterfaceConfigService(FakeWAN())
        self.assertEqual(service.GetMaximumActiveConnections(None), {"NewMaximumActiveConnections": 1})

    def test_activeConnection(self) -> None:
        """
        Index 0 names the WAN's WANConnectionDevice:2 and its WANIPConnection
        service; any other index is 713.
        """
        service = WANCommonInterfaceConfigService(FakeWAN(), connectionDevice=UDN)
        self.assertEqual(
            service.GetActiveConnection(None, NewActiveConnectionIndex=0),
            {
                "NewActiveConnDeviceContainer": f"{UDN}:WANConnectionDevice:2",
                "NewActiveConnectionServiceID": "urn:upnp-org:serviceId:WANIPConn1",
            },
        )
        for index in (1, 65535):
            with self.assertRaises(UPnPError) as raised:
                service.GetActiveConnection(None, NewActiveConnectionIndex=index)
            self.assertEqual(raised.exception.code, 713)

    def test_enabledForInternet(self) -> None:
        """
        EnabledForInternet starts true; a change is evented and told to the
        connection, setting the same value again is not.
        """
        connection = RecordingConnection()
        service = WANCommonInterfaceConfigService(FakeWAN(), connection=connection)
        heard: list[tuple[str, object]] = []
        service.addObserver(lambda name, value: heard.append((name, value)))
        self.assertEqual(service.GetEnabledForInternet(None), {"NewEnabledForInternet": True})
        self.assertEqual(service.SetEnabledForInternet(None, NewEnabledForInternet=False), {})
        service.SetEnabledForInternet(None, NewEnabledForInternet=False)
        self.assertEqual(service.GetEnabledForInternet(None), {"NewEnabledForInternet": False})
        self.assertEqual((connection.changes, heard), (1, [("EnabledForInternet", False)]))
        self.assertEqual(service.stateVariables()["EnabledForInternet"], False)

    def test_disablingTearsDown(self) -> None:
        """
        With a real connection, EnabledForInternet 0 tears the WAN down and
        RequestConnection answers 709; 1 brings it back.
        """
        link = SimulatedLink("eth1", SimulatedSettings(address=IPv4Interface("203.0.113.2/24")))
        services: list[WANCommonInterfaceConfigService] = []
        connection = WANConnection(link, Clock(), lambda: services[0].enabledForInternet)
        services.append(WANCommonInterfaceConfigService(FakeWAN(), connection=connection))
        connection.start()
        services[0].SetEnabledForInternet(None, NewEnabledForInternet=False)
        self.assertEqual(
            (connection.status, connection.lastConnectionError),
            ("Disconnected", "ERROR_NOT_ENABLED_FOR_INTERNET"),
        )
        with self.assertRaises(UPnPError) as raised:
            connection.requestConnection()
        self.assertEqual(raised.exception.code, 709)
        services[0].SetEnabledForInternet(None, NewEnabledForInternet=True)
        self.assertEqual(connection.status, "Connected")


class SOAPTests(SynchronousTestCase):
    """
    The service behind the real SOAP layer, as a control point calls it.
    """

    def setUp(self) -> None:
        self.service = WANCommonInterfaceConfigService(
            FakeWAN(speed=10_000_000_000), counters=counters(tx_bytes=2**40 + 7), connectionDevice=UDN
        )
        wan = Device(
            "WANDevice",
            2,
            "uuid:00000000-0000-4000-8000-000000000002",
            "WAN isp1",
            services=(Service(WANCommonInterfaceConfig, "/ctl/isp1/WANCommonIFC1", "/evt/isp1/WANCommonIFC1", self.service),),
        )
        lan = LANPolicy()
        lan.setAddresses([LANAddress("lo", 1, IPv4Interface("127.0.0.1/8"))], 5000)
        self.site = makeSite(buildTree(wan), lan, MemoryReactorClock())

    def call(self, action: str, arguments: str = "") -> bytes:
        return http(
            self.site,
            post(envelope(URN, action, arguments), f'"{URN}#{action}"'.encode(), path=b"/ctl/isp1/WANCommonIFC1"),
        )

    def test_answers(self) -> None:
        """
        Counters (an async action) and rates come out as ui4 text; index 1
        is fault 713; SetEnabledForInternet takes a boolean.
        """
        self.assertEqual(
            outArguments(self.call("GetTotalBytesSent"), URN, "GetTotalBytesSent"), {"NewTotalBytesSent": "7"}
        )
        properties = outArguments(self.call("GetCommonLinkProperties"), URN, "GetCommonLinkProperties")
        self.assertEqual(properties["NewLayer1DownstreamMaxBitRate"], "4294967295")
        self.assertEqual(
            faultCode(self.call("GetActiveConnection", "<NewActiveConnectionIndex>1</NewActiveConnectionIndex>")),
            713,
        )
        self.call("SetEnabledForInternet", "<NewEnabledForInternet>0</NewEnabledForInternet>")
        self.assertEqual(
            outArguments(self.call("GetEnabledForInternet"), URN, "GetEnabledForInternet"),
            {"NewEnabledForInternet": "0"},
        )
