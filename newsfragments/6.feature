Port mappings are programmed into the kernel through one nftables table, ``inet gatewayd`` (``[gateway] nat = "nftables"``), with atomic changes, self-healing and conntrack cleanup.
``[gateway] hairpin = true``: LAN hosts reach port mappings through the WAN addresses (DNAT through maps keyed by WAN address, following address changes, and masquerade back into the LAN).
