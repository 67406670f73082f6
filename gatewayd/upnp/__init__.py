"""
UPnP device architecture: discovery, description, control and eventing (knows nothing of routers).
"""
