"""The lab as a product: hosts in network namespaces running the real daemons, used by tests, bench, demo, chaos.

Root only; everything it builds lives in namespaces it creates and always deletes.
"""
