"""
Port forwarding backends (knows nothing of UPnP).
"""
