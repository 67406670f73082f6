"""
The IGD:2 device and its services (knows nothing of sockets or the kernel).
"""
