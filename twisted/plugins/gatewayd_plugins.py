"""
Twisted plugins of gatewayd: the C{twistd gatewayd} service maker and the
built-in link types.

Every C{twistd} and C{trial} run imports this module, so it stays cheap:
nothing here imports pyroute2, lxml or the reactor.
"""

from twisted.application.service import ServiceMaker

from gatewayd.link.dhcp import DHCPLinkType
from gatewayd.link.simulated import SimulatedLinkType
from gatewayd.link.static import StaticLinkType
from gatewayd.link.unmanaged import UnmanagedLinkType

gatewayd = ServiceMaker(
    "gatewayd",
    "gatewayd.tap",
    "Multi-WAN gateway: UPnP InternetGatewayDevice:2 with one WANIPConnection:2 per WAN.",
    "gatewayd",
)

unmanaged = UnmanagedLinkType()
simulated = SimulatedLinkType()
static = StaticLinkType()
dhcp = DHCPLinkType()
