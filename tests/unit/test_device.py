"""
Tests for L{gatewayd.igd.device}: the IGD:2 tree control points see.
"""

from __future__ import annotations

from uuid import UUID

from twisted.trial.unittest import SynchronousTestCase

from gatewayd.igd.device import WANParts, buildDevice

SEED = UUID("12345678-1234-5678-1234-567812345678")


def tree(names: list[str], seed: UUID = SEED):
    return buildDevice(seed, "gw", [WANParts(n, object(), object()) for n in names], object())


class DeviceTreeTests(SynchronousTestCase):
    """
    One WANDevice:2 with one WANConnectionDevice:2 per WAN.
    """

    def test_oneDevicePerWAN(self) -> None:
        """
        N WANs give N WANDevices, each with WANCommonInterfaceConfig:1 and a
        WANConnectionDevice:2 with its own WANIPConnection:2, in the order
        given.
        """
        root = tree(["isp1", "isp2", "lte"])
        self.assertEqual(root.urn(), "urn:schemas-upnp-org:device:InternetGatewayDevice:2")
        self.assertEqual([s.type.urn for s in root.services], ["urn:schemas-upnp-org:service:Layer3Forwarding:1"])
        self.assertEqual(len(root.devices), 3)
        for name, wan in zip(["isp1", "isp2", "lte"], root.devices):
            self.assertEqual(wan.urn(), "urn:schemas-upnp-org:device:WANDevice:2")
            self.assertIn(name, wan.friendlyName)
            [common] = wan.services
            self.assertEqual(common.type.urn, "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1")
            self.assertEqual(common.controlPath, f"/ctl/{name}/WANCommonIFC1")
            [conn] = wan.devices
            self.assertEqual(conn.urn(), "urn:schemas-upnp-org:device:WANConnectionDevice:2")
            [ip] = conn.services
            self.assertEqual(ip.type.urn, "urn:schemas-upnp-org:service:WANIPConnection:2")
            self.assertEqual(ip.type.serviceIdURN, "urn:upnp-org:serviceId:WANIPConn1")
            self.assertEqual((ip.controlPath, ip.eventPath), (f"/ctl/{name}/WANIPConn1", f"/evt/{name}/WANIPConn1"))

    def test_udnsStableAndDistinct(self) -> None:
        """
        The same seed gives the same UDNs (a restart is the same device to
        control points); every device has its own; another seed gives others.
        """
        first = [d.udn for d in tree(["isp1", "isp2"]).walk()]
        again = [d.udn for d in tree(["isp1", "isp2"]).walk()]
        other = [d.udn for d in tree(["isp1", "isp2"], UUID(int=1)).walk()]
        self.assertEqual(first, again)
        self.assertEqual(len(set(first)), 5)
        self.assertTrue(all(u.startswith("uuid:") and UUID(u[5:]) for u in first))
        self.assertFalse(set(first) & set(other))

    def test_wanKeepsItsUDN(self) -> None:
        """
        Adding a WAN does not change the UDNs of the others.
        """
        one = {d.friendlyName: d.udn for d in tree(["isp1"]).walk()}
        two = {d.friendlyName: d.udn for d in tree(["isp2", "isp1"]).walk()}
        self.assertEqual(one["gw WAN isp1"], two["gw WAN isp1"])
        self.assertEqual(one["gw"], two["gw"])
