"""csserver in network namespaces: nodes on a bridge sharing one store, VIPs moved between them."""
