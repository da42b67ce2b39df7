"""What the host must give for the keys a config uses, checked before they are used: an instance never runs
half-configured (accept_mode without nftables, use_vmac without macvlan); the start or reload is refused."""

from __future__ import annotations

from daemonkit.rtnl import macvlan_supported
from vrrpd.config import Config
from vrrpd.core.accept import wants_rules
from vrrpd.io.nftables import nft_problem


def problems(config: Config) -> list[str]:
    """`instance NAME: key: why it cannot work here`, for each instance whose keys the host cannot serve."""
    found: list[str] = []
    filtered = [inst.name for inst in config.instances if wants_rules(inst)]
    if filtered:
        why = nft_problem()
        if why:
            found += [f"instance {name}: accept_mode = false needs nftables: {why}" for name in filtered]
    vmacs = [inst.name for inst in config.instances if inst.vmac]
    if vmacs:
        try:
            why = macvlan_supported()
        except OSError as exc:
            why = f"cannot ask the kernel: {exc}"
        if why:
            found += [f"instance {name}: use_vmac needs macvlan: {why}" for name in vmacs]
    return found
