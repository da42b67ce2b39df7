"""The Node's life cycle: start, reload (a plan of effects through the routers' queues), and the scripts,
files and processes instances track."""

from __future__ import annotations

import dataclasses

from vrrpd.config import Config, Instance
from vrrpd.core import accept, fsm
from vrrpd.core.adverts import AdvertCache, params_for
from vrrpd.core.events import (
    CloseSocket, FilterRules, Log, PruneFilters, RemoveAddresses, Retire, RunScripts, WatchFiles, WatchProcesses,
)
from vrrpd.core.fsm import State
from vrrpd.core.router import Router, unspecified
from vrrpd.core.tracking import Tracked

RESTART_ONLY = ("control_socket", "metrics_listen", "log_format", "log_level", "notify_fifo")  # [global] keys a reload cannot change


class Lifecycle:
    """A part of `Node` (vrrpd.core.node), which holds all the state; one concern per file, as the node's sections."""

    def _start(self, now: float) -> None:
        if self.started:
            raise fsm.ProtocolMisuse("start twice")
        self.started = True
        self._emit(None, PruneFilters(tuple(accept.table_name(r.inst) for r in self.routers.values()
                                            if accept.wants_rules(r.inst))))
        for r in list(self.routers.values()):
            self._filter(r, None, r.inst)  # before anything else in its queue: before it can hold an address
            self._remove_stale(r)
            self._refresh(r, now)

    def _startup(self, r: Router, now: float) -> None:
        r.started = True
        self._apply(r, r.fsm.handle(fsm.Startup(), now), now)

    def _remove_stale(self, r: Router) -> None:
        """SPEC 4: VIPs of an instance found at start-up were left by an earlier run (a crash): removed, unless
        the router is the address owner, whose addresses are its own."""
        if r.fsm.params.owner:
            return
        table = self._addrs.get(r.inst.vip_interface, {})
        stale = tuple(table[v.ip][0] for v in r.inst.addresses if v.ip in table)
        if stale:
            for iface in stale:
                table.pop(iface.ip, None)
            self._emit(r, RemoveAddresses(r.inst.vip_interface, stale))
            self._emit(r, Log("warning", "stale_vips_removed", {"instance": r.inst.name,
                                                                "addresses": [str(a) for a in stale]}))

    def _add(self, inst: Instance, now: float) -> Router:
        r = Router(next(self._ids), inst, now)
        self.routers[r.id] = r
        self._by_link.setdefault(r.key, {})[inst.vrid] = r
        self._open_socket(r.key)
        return r

    def _filter(self, r: Router, old: Instance | None, new: Instance | None) -> None:
        """The instance's own nftables table (accept_mode = false) made, changed or deleted to follow `new`."""
        if new is not None and accept.wants_rules(new):
            if old is None or not accept.wants_rules(old) or accept.rules(old) != accept.rules(new):
                self._emit(r, FilterRules(accept.table_name(new), accept.rules(new)))
        elif old is not None and accept.wants_rules(old):
            self._emit(r, FilterRules(accept.table_name(old), accept.removal(accept.table_name(old))))

    def _index_vips(self) -> None:
        """Which router each VIP belongs to, and which addresses are never a source (non-owner VIPs)."""
        self._heard = {}  # what was accepted was accepted by the old configuration
        self._vip_router = {(r.inst.vip_interface, v.ip): r for r in self.routers.values() for v in r.inst.addresses}
        self._vip_ips = frozenset(v.ip for r in self.routers.values() if r.inst.priority != fsm.OWNER_PRIORITY
                                  for v in r.inst.addresses)
        self._primaries = {}
        self._scripts = {s.name: s for s in self.config.scripts}

    def _drop(self, r: Router) -> None:
        del self.routers[r.id]
        if r.tx_key != r.key and all(other.tx_key != r.tx_key for other in self.routers.values()):
            self._requested.pop(r.tx_key, None)
            if self._sockets.pop(r.tx_key, None) is not None:
                self._emit(None, CloseSocket(*r.tx_key))
        on_link = self._by_link[r.key]
        del on_link[r.inst.vrid]
        if not on_link:
            del self._by_link[r.key]
            self._requested.pop(r.key, None)
            if self._sockets.pop(r.key, None) is not None:
                self._emit(None, CloseSocket(*r.key))

    def _regroup(self) -> None:
        """Sync-group membership from the config; a member of a group of one is not gated."""
        by_name = {r.inst.name: r for r in self.routers.values()}
        self._groups = {g.name: [by_name[n] for n in g.instances if n in by_name] for g in self.config.sync_groups}
        for r in self.routers.values():
            r.group = None
        for name, members in self._groups.items():
            for r in members:
                r.group = name
        for r in self.routers.values():
            gated = r.group is not None and len(self._groups[r.group]) > 1
            if gated != r.fsm.params.sync_gated:
                r.fsm.reconfigure(dataclasses.replace(r.fsm.params, sync_gated=gated))
        self._dirty_groups |= set(self._groups)

    def _want_scripts(self) -> None:
        used = {name for inst in self.config.instances for name in inst.track_script}
        self._scripts_up = {name: self._scripts_up.get(name) for name in used}
        self._emit(None, RunScripts(tuple(s for s in self.config.scripts if s.name in used)))

    def _want_tracked(self, old: Config | None = None) -> None:
        """The files and processes instances track: watched from now on (a changed one anew, from unknown)."""
        config = self.config
        files = tuple(f for f in config.track_files if any(ref.name == f.name for i in config.instances
                                                           for ref in i.track_file))
        processes = tuple(p for p in config.track_processes if any(ref.name == p.name for i in config.instances
                                                                   for ref in i.track_process))
        kept_files = {f.name for f in files if old is not None and f in old.track_files}
        kept_processes = {p.name for p in processes if old is not None and p in old.track_processes}
        self._file_values = {f.name: self._file_values.get(f.name) if f.name in kept_files else None for f in files}
        self._process_up = {p.name: self._process_up.get(p.name) if p.name in kept_processes else None
                            for p in processes}
        self._process_pending = {k: v for k, v in self._process_pending.items() if k in kept_processes}
        self._tracked = Tracked(self._file_values, self._process_up, {f.name: f for f in files},
                                {p.name: p for p in processes})
        if old is None or files != tuple(f for f in old.track_files if f.name in self._tracked_names(old, "file")):
            self._emit(None, WatchFiles(files))
        if old is None or processes != tuple(p for p in old.track_processes
                                             if p.name in self._tracked_names(old, "process")):
            self._emit(None, WatchProcesses(processes))

    @staticmethod
    def _tracked_names(config: Config, kind: str) -> set[str]:
        return {ref.name for i in config.instances for ref in getattr(i, f"track_{kind}")}

    def _process_count(self, name: str, count: int, now: float) -> None:
        """keepalived's quorum with fork_delay / terminate_delay: a change counts once it has held that long;
        the first count (the scan at start) counts at once."""
        track = self._tracked.processes.get(name)
        if track is None:
            return
        up = track.up(count)
        current = self._process_up.get(name)
        if current is None or (up != current and (track.fork_delay if up else track.terminate_delay) == 0):
            self._process_pending.pop(name, None)
            self._process_flip(name, up, now)
        elif up == current:
            self._process_pending.pop(name, None)  # back before its delay ran out: nothing happened
        elif name not in self._process_pending:
            self._process_pending[name] = (now + (track.fork_delay if up else track.terminate_delay), up)

    def _process_flip(self, name: str, up: bool, now: float) -> None:
        if self._process_up.get(name) is up:
            return
        self._process_up[name] = up
        self._emit(None, Log("info", "process_status", {"track_process": name, "up": up}))
        self._refresh_where(lambda r: any(ref.name == name for ref in r.inst.track_process), now)

    def _reconfigure(self, new: Config, now: float) -> None:
        old_global = self.config.global_
        restart_only = [k for k in RESTART_ONLY if getattr(old_global, k) != getattr(new.global_, k)]
        if restart_only:  # the old values stay in force: said once, not silently ignored
            self._emit(None, Log("warning", "reload_needs_restart", {
                "keys": restart_only, "detail": "[global] changes to these keys take effect at the next start"}))
            new = dataclasses.replace(new, global_=dataclasses.replace(
                new.global_, **{k: getattr(old_global, k) for k in restart_only}))
        # What identifies a router across a reload (SPEC 4), and its macvlan: a use_vmac change is a new router.
        by_key = {(*r.inst.key, r.inst.vmac, r.inst.vmac_xmit_base): r for r in self.routers.values()}
        wanted = {(*inst.key, inst.vmac, inst.vmac_xmit_base): inst for inst in new.instances}
        for key in by_key.keys() - wanted.keys():  # removed: released like a shutdown (priority 0)
            r = by_key[key]
            self._apply(r, r.fsm.handle(fsm.Shutdown(), now), now)
            self._filter(r, r.inst, None)
            self._tear_down_vmac(r)
            self._emit(r, Retire())
            self._drop(r)
        old_config = self.config
        scripts_changed = new.scripts != self.config.scripts or {i.track_script for i in new.instances} != {
            i.track_script for i in self.config.instances}
        self.config = new
        for key in by_key.keys() & wanted.keys():
            self._keep(by_key[key], wanted[key], now)
        for key in wanted.keys() - by_key.keys():
            self._filter(self._add(wanted[key], now), None, wanted[key])
        self._index_vips()
        self._regroup()
        if scripts_changed:
            self._want_scripts()
        self._want_tracked(old_config)
        for r in list(self.routers.values()):
            self._refresh(r, now)
        self._status_dirty = True

    def _keep(self, r: Router, inst: Instance, now: float) -> None:
        """Same (interface, vrid, family): same state; a master's addresses are diffed, a VIP that stays is
        never touched (RFC 5798 leaves reloads to us; keepalived does the same)."""
        old = {v.ip: v for v in r.inst.addresses}
        new = {v.ip: v for v in inst.addresses}
        self._filter(r, r.inst, inst)  # the table first: a VIP added below is never accepted by mistake
        r.inst = inst
        r.vips = frozenset(v.ip for v in inst.virtual_ipaddress)
        r.frames = None
        src = r.primary or unspecified(inst.family)
        r.cache = AdvertCache(inst, src)
        r.fsm.reconfigure(params_for(inst, src, r.fsm.params.sync_gated))
        if r.fsm.state is not State.MASTER:
            return
        reprefixed = [old[ip] for ip in old.keys() & new.keys() if old[ip] != new[ip] and old[ip] in r.installed]
        gone = [v for ip, v in old.items() if ip not in new and v in r.installed]
        if reprefixed:  # the kernel keys an IPv6 address by address alone: the old prefix must go first
            self._uninstall(r, reprefixed)
        added = [v for ip, v in new.items() if old.get(ip) != v]
        self._install(r, added, now)
        self._uninstall(r, gone)
        if added:
            self._announce(r, self._frames(r, {v.ip for v in added}), 1)
        self._route(r, inst.virtual_routes, inst.virtual_rules)
        self._apply(r, [fsm.SendAdvert(r.fsm.effective_priority)], now)
