"""`vrrpd import-keepalived`: keepalived.conf read by `parse`, turned into vrrpd TOML by `convert`."""
