"""The status view (SPEC section 5): what `vrrpd status --json` and the metrics show, read off the Node.

Times inside the Node are monotonic; the caller's `wall_time` turns one into the ISO time an operator reads.
"""

from __future__ import annotations

from collections.abc import Callable

from vrrpd.core.fsm import State
from vrrpd.core.node import Node


def status(node: Node, wall_time: Callable[[float], str]) -> dict:
    """The `instances` and router-wide `stats` of the status document; the runtime adds pid, version, notify."""
    return {
        "router_id": node.config.global_.router_id,
        "instances": [_instance(node, r, wall_time) for r in node.routers.values()],
        "stats": node.global_stats.as_dict(),
    }


def _instance(node: Node, r, wall_time: Callable[[float], str]) -> dict:
    inst, machine = r.inst, r.fsm
    master = r.primary if machine.state is State.MASTER else machine.master_address
    return {
        "name": inst.name,
        "interface": inst.interface,
        "vrid": inst.vrid,
        "family": inst.family,
        "version": inst.version,
        "state": machine.state.value,
        "priority": inst.priority,
        "effective_priority": machine.effective_priority,
        "master_address": str(master) if master is not None else None,
        "advert_interval": inst.advert_interval,
        "master_adver_interval": machine.master_adver_interval_cs / 100,
        "virtual_ipaddress": [str(v) for v in inst.virtual_ipaddress],
        "since": wall_time(r.since),
        "faults": sorted(f.label for f in machine.faults),
        "stats": r.stats.as_dict(),
        "track": _track(node, inst),
        "options": options(inst),
    }


def _track(node: Node, inst) -> dict:
    """What the instance tracks and how it stands (an addition to SPEC 5: why a priority is what it is)."""
    names = (inst.interface, *(t.name for t in inst.track_interface))
    weights = {t.name: t.weight for t in inst.track_interface}
    weights.update({name: node.config.script(name).weight for name in inst.track_script})
    return {"interfaces": {name: node.link_state(name) for name in names},
            "scripts": {name: node.script_state(name) for name in inst.track_script},
            "files": {ref.name: node.file_state(ref.name) for ref in inst.track_file},
            "processes": {ref.name: node.process_state(ref.name) for ref in inst.track_process},
            "weights": weights}



def options(inst) -> dict:
    """The keys an operator brings from keepalived, as in force (an addition to SPEC 5; the password is not
    shown, only whether one is set)."""
    return {
        "auth_type": inst.auth_type, "auth_pass_set": bool(inst.auth_pass),
        "use_vmac": inst.vmac, "vmac_address": inst.vmac_address if inst.vmac else None,
        "vmac_xmit_base": inst.vmac_xmit_base, "accept_mode": inst.accept_mode,
        "unicast_ttl": inst.unicast_ttl, "mcast_src_ip": str(inst.mcast_src_ip) if inst.mcast_src_ip else None,
        "dont_track_primary": inst.dont_track_primary,
        "virtual_ipaddress_excluded": [str(v) for v in inst.virtual_ipaddress_excluded],
        "virtual_routes": [str(r) for r in inst.virtual_routes],
        "virtual_rules": [str(r) for r in inst.virtual_rules],
        "garp": {"repeat": inst.garp_repeat, "master_delay": inst.garp_master_delay, "refresh": inst.garp_refresh,
                 "refresh_repeat": inst.garp_master_refresh_repeat,
                 "lower_prio_repeat": inst.garp_repeat if inst.garp_lower_prio_repeat is None
                 else inst.garp_lower_prio_repeat,
                 "interval": inst.garp_interval, "gna_interval": inst.gna_interval},
    }
