"""Shared plumbing of vrrpd and csserver: config checking with FILE:LINE, logging, systemd, metrics text, addresses.

It imports neither daemon; both import it (a test holds the rule).
"""
