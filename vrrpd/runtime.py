"""The asyncio runtime: feeds loop.time() and socket input into the routers and carries their effects out.

One loop, one timer (re-armed at the earliest deadline of all routers), one raw socket per (interface,
family), one effects worker per router so address changes stay in order without delaying other routers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from collections.abc import Iterable

from vrrpd import __version__
from vrrpd.core import fsm
from daemonkit import log as logging
from vrrpd.core import packet
from vrrpd.io.announce import Announcer
from vrrpd.config import Config, ConfigError, Instance, load
from vrrpd.io.control import ControlServer
from vrrpd.io.netlink import Netlink
from vrrpd.io.notify import NotifyRunner, jobs_for
from vrrpd.core.router import STAT_NAMES, Router, Stats, check_advert, utc_now_iso
from vrrpd.io.sockets import AdvertSocket
from daemonkit.systemd import Notifier
from vrrpd.io.scripts import ScriptChecker, evaluate

SHUTDOWN_GRACE = 5.0  # seconds for priority-0 adverts, address removal and stop notifies at exit


LATE_TIMER = 0.05  # seconds behind its deadline before the timer reads the sockets before acting


class RouterWorker:
    """Applies one router's effects in order (send, add addresses, announce, notify)."""

    def __init__(self, daemon: Daemon, router: Router):
        self.daemon = daemon
        self.router = router
        self.queue: asyncio.Queue[list[fsm.Effect]] = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._drain(), name=f"router:{router.name}")
        self.log = logging.get("vrrpd", instance=router.name, vrid=router.instance.vrid, family=router.instance.family)

    def submit(self, effects: list[fsm.Effect]) -> None:
        """Leading adverts go out at once when nothing is pending (order is kept); the rest queues.

        On a takeover the advert leaves before the addresses are installed, as RFC 5798 6.4.2 orders it,
        and on shutdown the priority-0 advert does not wait for a netlink round trip.
        """
        if self.queue.empty():
            while effects and isinstance(effects[0], fsm.SendAdvert):
                self.daemon.send_advert(self.router, effects[0].priority)
                effects = effects[1:]
        if effects:
            self.queue.put_nowait(effects)

    async def _drain(self) -> None:
        while True:
            effects = await self.queue.get()
            try:
                for effect in effects:
                    await self.apply(effect)
            except Exception:  # an edge failing must never stop the protocol
                self.log.exception("effect_failed")
            finally:
                self.queue.task_done()

    async def apply(self, effect: fsm.Effect) -> None:
        d, r = self.daemon, self.router
        match effect:
            case fsm.SendAdvert(priority=priority):
                d.send_advert(r, priority)
            case fsm.AddAddresses():
                await d.install_addresses(r, r.instance.virtual_ipaddress)
            case fsm.RemoveAddresses():
                await d.remove_addresses(r, r.instance.virtual_ipaddress)
            case fsm.Announce(count=count):
                d.announce(r, count)
            case fsm.StateChanged(old=old, new=new, reason=reason):
                d.state_changed(r, old, new, reason)

    async def close(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


class Daemon:
    """Everything `vrrpd run` does between start and a clean exit."""

    def __init__(self, config: Config, notifier: Notifier | None = None):
        self.config = config
        self.notifier = notifier or Notifier()
        self.log = logging.get("vrrpd")
        self.routers: dict[str, Router] = {}
        self.workers: dict[str, RouterWorker] = {}
        self.sockets: dict[tuple[str, str], AdvertSocket] = {}
        self.announcers: dict[str, Announcer] = {}
        self.links_up: dict[str, bool] = {}
        self.scripts_up: dict[str, bool | None] = {}
        self.checkers: dict[str, ScriptChecker] = {}
        self.global_stats = Stats()
        self.netlink = Netlink()
        self.notify = NotifyRunner()
        self.control: ControlServer | None = None
        self.metrics = None  # vrrpd.metrics.MetricsServer when metrics_listen is set
        self._timer: asyncio.TimerHandle | None = None
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._watchdog: asyncio.Task | None = None
        self.loop = asyncio.get_running_loop()

    # ---- life cycle ---------------------------------------------------------------------------------

    async def run(self) -> int:
        await self.netlink.open()
        self.netlink.watch_links(self.on_link)
        self.notify.start()
        await self._build(self.config.instances)
        self._start_scripts()
        self.control = ControlServer(self.config.global_.control_socket, self.status)
        await self.control.start()
        if self.config.global_.metrics_listen:
            # Imported only here: aiohttp costs about 15 MB of RSS that a daemon without metrics never pays.
            # A bind failure is an OSError: refused at start (exit 1) rather than running unobserved.
            from vrrpd.io.metrics_http import MetricsServer

            self.metrics = MetricsServer(self.config.global_.metrics_listen, self.status)
            await self.metrics.start()
        for sig, handler in (
            (signal.SIGTERM, self.request_stop),
            (signal.SIGINT, self.request_stop),
            (signal.SIGHUP, self.request_reload),
            (signal.SIGUSR1, self.log_snapshot),
        ):
            self.loop.add_signal_handler(sig, handler)
        for router in self.routers.values():
            self._start_router(router)
        self.notifier.ready(status=self._summary())
        if self.notifier.watchdog_interval:
            self._watchdog = self.loop.create_task(self._watchdog_loop())
        self.log.info("started", version=__version__, pid=os.getpid(), instances=len(self.routers))
        await self._stop.wait()
        await self.shutdown()
        return 0

    def request_stop(self) -> None:
        self.log.info("stop_requested")
        self._stop.set()

    async def shutdown(self) -> None:
        self.notifier.stopping()
        deadline = self.loop.time() + SHUTDOWN_GRACE
        for router in list(self.routers.values()):
            self.dispatch(router, router.fsm.handle(fsm.Shutdown(), self.loop.time()))
        await self._drain_workers(deadline)
        await self.notify.flush(deadline)
        for checker in self.checkers.values():
            await checker.stop()
        if self._watchdog:
            self._watchdog.cancel()
        if self._timer:
            self._timer.cancel()
        for worker in self.workers.values():
            await worker.close()
        if self.control:
            await self.control.close()
        if self.metrics:
            await self.metrics.close()
        for sock in self.sockets.values():
            self.loop.remove_reader(sock.fileno())
            sock.close()
        for announcer in self.announcers.values():
            announcer.close()
        await self.notify.stop()
        await self.netlink.close()
        self.log.info("stopped")

    async def _drain_workers(self, deadline: float) -> None:
        pending = [w.queue.join() for w in self.workers.values()]
        if pending:
            try:
                await asyncio.wait_for(asyncio.gather(*pending), max(0.0, deadline - self.loop.time()))
            except asyncio.TimeoutError:
                self.log.error("shutdown_incomplete", reason="effects still pending at the grace deadline")

    async def _watchdog_loop(self) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(self.notifier.watchdog_interval)

    # ---- building routers ---------------------------------------------------------------------------

    async def _build(self, instances: Iterable[Instance]) -> None:
        instances = list(instances)
        all_vips = {vip.ip for inst in self.config.instances for vip in inst.virtual_ipaddress}
        for inst in instances:
            if inst.interface not in self.links_up:
                self.links_up[inst.interface] = await self.netlink.link_is_up(inst.interface)
            for track in inst.track_interface:
                if track.name not in self.links_up:
                    self.links_up[track.name] = await self.netlink.link_is_up(track.name)
        for inst in instances:
            primary = inst.unicast_src or await self.netlink.primary_address(
                inst.interface, inst.family, exclude=all_vips
            )
            router = Router(inst, primary or _unspecified(inst.family))
            self.routers[inst.name] = router
            self.workers[inst.name] = RouterWorker(self, router)
            if primary is None:
                router.fsm.fault_reasons.add("no_address")
            if inst.priority != 255:
                await self._remove_stale(router)
            self._ensure_socket(inst)
            await self._ensure_announcer(inst.interface)

    def _start_router(self, router: Router) -> None:
        verdict = self._verdict(router.instance)
        now = self.loop.time()
        for reason in verdict.faults:
            router.fsm.handle(fsm.FaultChanged(True, reason), now)
        if verdict.priority != router.fsm.effective_priority:
            router.fsm.handle(fsm.PriorityChanged(verdict.priority), now)
        self.dispatch(router, router.fsm.handle(fsm.Startup(), now))

    async def _remove_stale(self, router: Router) -> None:
        """SPEC 4: VIPs of a configured instance found at start are removed unless this node is master."""
        # Compared by address, not prefix: a VIP left with another prefix length is still ours to remove.
        present = {iface.ip: iface for iface in await self.netlink.addresses(router.instance.interface, router.instance.family)}
        for vip in router.instance.virtual_ipaddress:
            stale = present.get(vip.ip)
            if stale is not None and await self.netlink.remove_address(router.instance.interface, stale):
                self.log.warning("stale_vip_removed", instance=router.name, address=str(vip))

    def _ensure_socket(self, inst: Instance) -> None:
        key = (inst.interface, inst.family)
        if key in self.sockets:
            return
        try:
            sock = AdvertSocket(inst.interface, inst.family, join_multicast=True)
        except OSError as exc:
            self.log.error("socket_failed", interface=inst.interface, family=inst.family, error=str(exc))
            return
        self.sockets[key] = sock
        self.loop.add_reader(sock.fileno(), self._on_readable, key)

    async def _ensure_announcer(self, ifname: str) -> None:
        if ifname in self.announcers:
            return
        try:
            self.announcers[ifname] = Announcer(ifname, await self.netlink.mac(ifname))
        except OSError as exc:
            self.log.error("announcer_failed", interface=ifname, error=str(exc))

    def _start_scripts(self) -> None:
        used = {name for inst in self.config.instances for name in inst.track_script}
        for name in used:
            if name in self.checkers:
                continue
            self.scripts_up.setdefault(name, None)
            checker = ScriptChecker(self.config.script(name), self.on_script)
            self.checkers[name] = checker
            checker.start()

    # ---- inputs -------------------------------------------------------------------------------------

    def dispatch(self, router: Router, effects: list[fsm.Effect]) -> None:
        self.workers[router.name].submit(effects)
        self._rearm()

    def _rearm(self) -> None:
        deadlines = [d for r in self.routers.values() if (d := r.fsm.next_deadline()) is not None]
        self._arm(min(deadlines) if deadlines else None)

    def _arm(self, when: float | None) -> None:
        """The one timer fires at `when` (None: no timer); an unchanged deadline keeps its handle."""
        if self._timer is not None:
            if when is not None and self._timer.when() == when:
                return
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self.loop.call_at(when, self._on_timer, when)

    def _on_timer(self, when: float) -> None:
        self._timer = None
        if self.loop.time() - when > LATE_TIMER:
            # The loop was held up (SIGSTOP, a stalled host): adverts may be waiting. Read them first, so that
            # a master heard meanwhile stops a Master_Down_Timer that is only overdue because we did not
            # listen, rather than us becoming master for a moment and misdirecting every host's ARP cache.
            for key in list(self.sockets):
                for _ in range(64):  # bounded: up to 64 x 64 queued adverts per socket
                    if self._on_readable(key) < 64:
                        break
        now = max(self.loop.time(), when)
        earliest = None
        # One pass: handle_timer acts only on expired timers, so every router is offered `now`, and the
        # next wake-up is the earliest deadline left (sending adverts changes no other router's timers).
        for router in self.routers.values():
            effects = router.fsm.handle_timer(now)
            if effects:
                self.workers[router.name].submit(effects)
            deadline = router.fsm.next_deadline()
            if deadline is not None and (earliest is None or deadline < earliest):
                earliest = deadline
        self._arm(earliest)

    def _on_readable(self, key: tuple[str, str]) -> int:
        """Handle the adverts waiting on one socket (a batch of at most 64); returns how many were read."""
        sock = self.sockets.get(key)
        if sock is None:
            return 0
        try:
            received = sock.recv_all(64)
        except OSError as exc:
            self.log.warning("recv_failed", interface=key[0], family=key[1], error=str(exc))
            return 0
        now = self.loop.time()
        routers = self._routers_on(key)  # once per batch: receiving changes no router's configuration
        for rx in received:
            self._receive(routers, rx, now)
        self._rearm()
        return len(received)

    def _routers_on(self, key: tuple[str, str]) -> dict[int, Router]:
        return {r.instance.vrid: r for r in self.routers.values() if r.socket_key == key}

    def _receive(self, routers: dict[int, Router], rx, now: float) -> None:
        result = packet.decode(rx.payload, src=rx.src, dst=rx.dst, ttl=rx.ttl)
        if isinstance(result, packet.Drop):
            # Attribute the drop to the instance whose VRID byte it carries, else to the router-wide counters.
            vrid = rx.payload[1] if len(rx.payload) > 1 else None
            target = routers.get(vrid)
            (target.stats if target else self.global_stats).count_drop(result.reason)
            return
        router = routers.get(result.vrid)
        if router is None:
            self.global_stats.count_drop(packet.DropReason.VRID)
            return
        if rx.src == router.primary:
            return  # our own advert looped back (unicast to ourselves)
        reason = check_advert(result, rx.src, router.instance)
        if reason is not None:
            router.stats.count_drop(reason)
            return
        stats = router.stats
        stats.adverts_rx += 1
        if result.priority == 0:
            stats.priority_zero_rx += 1
        if result.checksum_form is packet.ChecksumForm.MESSAGE and result.version == 3:
            stats.checksum_rfc9568_rx += 1
        self.workers[router.name].submit(router.fsm.handle(fsm.AdvertReceived(result, rx.src), now))

    def on_link(self, ifname: str, up: bool) -> None:
        if self.links_up.get(ifname) == up:
            return
        self.links_up[ifname] = up
        self.log.info("link_changed", interface=ifname, up=up)
        self._retrack()

    def on_script(self, name: str, up: bool) -> None:
        self.scripts_up[name] = up
        self._retrack()

    def _verdict(self, inst: Instance):
        scripts = {s.name: s for s in self.config.scripts}
        return evaluate(inst, self.links_up, self.scripts_up, scripts)

    def _retrack(self) -> None:
        now = self.loop.time()
        for router in self.routers.values():
            verdict = self._verdict(router.instance)
            effects: list[fsm.Effect] = []
            for reason in verdict.faults - router.fsm.fault_reasons:
                effects += router.fsm.handle(fsm.FaultChanged(True, reason), now)
            for reason in {r for r in router.fsm.fault_reasons if _tracked(r)} - verdict.faults:
                effects += router.fsm.handle(fsm.FaultChanged(False, reason), now)
            effects += router.fsm.handle(fsm.PriorityChanged(verdict.priority), now)
            self.dispatch(router, effects)
        self._sync_faults()

    # ---- sync groups (keepalived vrrp_sync_group) ---------------------------------------------------

    def _group_of(self, name: str):
        return next((g for g in self.config.sync_groups if name in g.instances), None)

    def _sync_faults(self) -> None:
        """A member in FAULT for its own reasons holds every other member of its group in FAULT."""
        now = self.loop.time()
        for group in self.config.sync_groups:
            members = [self.routers[n] for n in group.instances if n in self.routers]
            faulty = {r.name for r in members if any(not x.startswith("sync:") for x in r.fsm.fault_reasons)}
            reason = f"sync:{group.name}"
            for router in members:
                held = bool(faulty - {router.name})
                if held != (reason in router.fsm.fault_reasons):
                    self.dispatch(router, router.fsm.handle(fsm.FaultChanged(held, reason), now))

    def _sync_follow(self, router: Router, new: fsm.State, reason: str) -> None:
        """MASTER and BACKUP spread to the group; what a sync itself caused does not spread again."""
        group = self._group_of(router.name)
        if group is None or reason.startswith("sync") or new not in (fsm.State.MASTER, fsm.State.BACKUP):
            return
        now = self.loop.time()
        for name in group.instances:
            sibling = self.routers.get(name)
            if sibling is not None and sibling is not router and sibling.state is not new:
                self.dispatch(sibling, sibling.fsm.handle(fsm.SyncTo(new, f"sync_group:{group.name}"), now))

    # ---- outputs ------------------------------------------------------------------------------------

    def send_advert(self, router: Router, priority: int) -> None:
        sock = self.sockets.get(router.socket_key)
        if sock is None:
            return
        for dst, payload in router.cache.adverts(priority):
            try:
                sock.send(payload, dst, router.primary)
            except OSError as exc:
                self.log.debug("send_failed", instance=router.name, dst=str(dst), error=str(exc))
                continue
            router.stats.adverts_tx += 1
            if priority == 0:
                router.stats.priority_zero_tx += 1

    async def install_addresses(self, router: Router, vips) -> None:
        for vip in vips:
            try:
                await self.netlink.add_address(router.instance.interface, vip)
            except OSError as exc:
                self.log.error("vip_add_failed", instance=router.name, address=str(vip), error=str(exc))

    async def remove_addresses(self, router: Router, vips) -> None:
        for vip in vips:
            try:
                await self.netlink.remove_address(router.instance.interface, vip)
            except OSError as exc:
                self.log.error("vip_remove_failed", instance=router.name, address=str(vip), error=str(exc))

    def announce(self, router: Router, count: int) -> None:
        announcer = self.announcers.get(router.instance.interface)
        if announcer is None:
            return
        vips = [vip.ip for vip in router.instance.virtual_ipaddress]
        try:
            for _ in range(count):
                announcer.announce(vips)
        except OSError as exc:
            self.log.warning("announce_failed", instance=router.name, error=str(exc))

    def state_changed(self, router: Router, old: fsm.State, new: fsm.State, reason: str) -> None:
        router.since = utc_now_iso()
        if new is fsm.State.MASTER:
            router.stats.master_transitions += 1
        self.log.info(
            "state_change",
            instance=router.name,
            vrid=router.instance.vrid,
            family=router.instance.family,
            old=old.value,
            new=new.value,
            reason=reason,
            priority=router.fsm.effective_priority,
        )
        inst = router.instance
        per_state = {
            fsm.State.MASTER: inst.notify_master,
            fsm.State.BACKUP: inst.notify_backup,
            fsm.State.FAULT: inst.notify_fault,
            fsm.State.STOP: inst.notify_stop,
        }.get(new)
        self.notify.submit(jobs_for(inst.name, new.value, router.fsm.effective_priority, inst.notify, per_state))
        self.notifier.status(self._summary())
        self._sync_follow(router, new, reason)
        self._sync_faults()

    # ---- reload -------------------------------------------------------------------------------------

    def request_reload(self) -> None:
        self.loop.create_task(self.reload())

    async def reload(self) -> bool:
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                try:
                    new = load(self.config.path)
                except ConfigError as exc:
                    for problem in exc.problems:
                        self.log.error("reload_rejected", problem=str(problem))
                    return False
                await self._apply_config(new)
                self.log.info("reloaded", instances=len(self.routers))
                return True
            finally:
                self.notifier.ready(status=self._summary())

    async def _apply_config(self, new: Config) -> None:
        old_by_key = {r.instance.key: r for r in self.routers.values()}
        new_by_key = {inst.key: inst for inst in new.instances}
        now = self.loop.time()
        # Removed instances release like a shutdown (priority 0).
        for key in old_by_key.keys() - new_by_key.keys():
            router = old_by_key[key]
            self.dispatch(router, router.fsm.handle(fsm.Shutdown(), now))
            await self.workers[router.name].queue.join()
            await self.workers.pop(router.name).close()
            del self.routers[router.name]
        restart_only = [name for name in ("control_socket", "metrics_listen", "log_format", "log_level")
                        if getattr(self.config.global_, name) != getattr(new.global_, name)]
        if restart_only:  # the old values stay in force: said once, not silently ignored
            self.log.warning("reload_needs_restart", keys=restart_only,
                             detail="[global] changes to these keys take effect at the next start")
        new = dataclasses.replace(new, global_=dataclasses.replace(
            new.global_, **{name: getattr(self.config.global_, name) for name in restart_only}))
        self.config = new
        # Kept instances: same state, diffed addresses, new settings.
        for key in old_by_key.keys() & new_by_key.keys():
            await self._reconfigure(old_by_key[key], new_by_key[key])
        added = [new_by_key[key] for key in new_by_key.keys() - old_by_key.keys()]
        await self._build(added)
        for inst in added:
            self._start_router(self.routers[inst.name])
        self._start_scripts()
        for name in list(self.checkers):
            if all(name not in inst.track_script for inst in new.instances):
                await self.checkers.pop(name).stop()
                self.scripts_up.pop(name, None)
        self._retrack()

    async def _reconfigure(self, router: Router, inst: Instance) -> None:
        old_name = router.name
        old_vips = set(router.instance.virtual_ipaddress)
        new_vips = set(inst.virtual_ipaddress)
        primary = inst.unicast_src or router.primary
        router.reconfigure(inst, primary)
        if old_name != inst.name:
            self.routers[inst.name] = self.routers.pop(old_name)
            self.workers[inst.name] = self.workers.pop(old_name)
        if router.state is fsm.State.MASTER:
            worker = self.workers[inst.name]
            await worker.queue.join()
            # Add first, then remove: a VIP that stays is never touched.
            await self.install_addresses(router, [v for v in inst.virtual_ipaddress if v not in old_vips])
            await self.remove_addresses(router, [v for v in old_vips if v not in new_vips])
            self.announce(router, 1)
            self.send_advert(router, router.fsm.effective_priority)

    # ---- status -------------------------------------------------------------------------------------

    def status(self) -> dict:
        return {
            "router_id": self.config.global_.router_id,
            "pid": os.getpid(),
            "version": __version__,
            "instances": [{**r.status(), "track": self._track_status(r.instance)} for r in self.routers.values()],
            "stats": self.global_stats.as_dict(),
            "notify": {"completed": self.notify.completed, "failed": self.notify.failures},
        }

    def _track_status(self, inst: Instance) -> dict:
        """What the instance tracks and how it stands (an addition to SPEC 5: why a priority is what it is)."""
        def link(name: str) -> str:
            up = self.links_up.get(name)
            return "unknown" if up is None else "up" if up else "down"

        def script(name: str) -> str:
            up = self.scripts_up.get(name)
            return "pending" if up is None else "up" if up else "down"

        return {"interfaces": {name: link(name) for name in (inst.interface, *(t.name for t in inst.track_interface))},
                "scripts": {name: script(name) for name in inst.track_script}}

    def _summary(self) -> str:
        states = [f"{r.name}={r.state.value}" for r in self.routers.values()]
        return " ".join(states) or "no instances"

    def log_snapshot(self) -> None:
        self.log.info("status_snapshot", status=self.status())


def _tracked(reason: str) -> bool:
    """Fault reasons that tracking owns (and may clear); sync and address faults are managed elsewhere."""
    return reason == "link_down" or reason.startswith(("track_interface:", "track_script:"))


def _unspecified(family: str):
    from ipaddress import IPv4Address, IPv6Address

    return IPv4Address(0) if family == "ipv4" else IPv6Address(0)


async def run(config: Config) -> int:
    return await Daemon(config).run()


__all__ = ["Daemon", "run", "STAT_NAMES"]
