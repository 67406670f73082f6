Port mappings are programmed into the kernel through one nftables table, ``inet gatewayd`` (``[gateway] nat = "nftables"``), with atomic changes, self-healing and conntrack cleanup.
