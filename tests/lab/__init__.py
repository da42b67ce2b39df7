"""Lab tests: real hosts as network namespaces on a bridge, the daemon and keepalived running in them."""
