"""csserver: a context service whose ids (HAIDs) survive a VRRP failover."""

__version__ = "0.1.0"
