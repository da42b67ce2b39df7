"""vrrpd: a VRRPv3/v2 failover daemon (RFC 5798, RFC 9568)."""

__version__ = "0.1.0"
