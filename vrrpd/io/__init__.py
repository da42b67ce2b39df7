"""The edges: one module per kind of file descriptor or side effect, driven by `vrrpd.runtime`."""
