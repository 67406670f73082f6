"""
gatewayd: a multi-WAN gateway daemon hosting a UPnP InternetGatewayDevice:2.
"""

__version__ = "0.1.0.dev0"
