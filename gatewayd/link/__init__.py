"""
WAN links and the kernel interface through netlink (knows nothing of UPnP).
"""
