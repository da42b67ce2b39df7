"""The asyncio adapter: the edges' input and `loop.time()` into the Node, the Node's effects out, one timer.

It decides nothing (aioquic's asyncio protocol is the model): every choice is the Node's. Effects addressed to
a router go out in order; those the Node marks QUEUED wait in that router's queue behind its earlier ones
(netlink work), the rest are carried out at once. An effect that fails is logged, counted (the Node hears of
it) and never stops the effects after it.

One adapter rule is its own: input before timers. The timer reads the sockets before it hands the Node its
time, so a master heard meanwhile stops a Master_Down_Timer that is only overdue because nobody listened
(a loop held up, a busy socket between its polls: `vrrpd.io.listen`).
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import time
from collections import deque
from datetime import datetime, timezone

from daemonkit import log as logging
from daemonkit.net import iso_ms
from daemonkit.proc import cancel_and_wait
from daemonkit.systemd import Notifier
from vrrpd import __version__
from vrrpd.config import Config, ConfigError, load
from vrrpd.core import events as n
from vrrpd.core.node import Node
from vrrpd.core.status import status as status_view
from vrrpd.io.announce import Announcer
from vrrpd.io.control import ControlServer
from vrrpd.io.fifo import NotifyFifo
from vrrpd.io.netlink import Netlink
from vrrpd.io import nftables, preflight
from vrrpd.io.notify import NotifyRunner
from vrrpd.io.procevents import ProcessEvents
from vrrpd.io.trackfile import TrackFiles
from vrrpd.io.vmac import Vmacs
from vrrpd.io.scripts import Scripts
from vrrpd.io.listen import Listener

SHUTDOWN_GRACE_S = 5.0  # for priority-0 adverts, address removal and stop notifies at exit


class RouterQueue:
    """One router's QUEUED effects, carried out in order by a task that exists only while there is work."""

    def __init__(self, runtime: Runtime, router: int):
        self.runtime, self.router = runtime, router
        self.items: deque[n.Effect] = deque()
        self.task: asyncio.Task | None = None
        self.idle = asyncio.Event()
        self.idle.set()

    def put(self, effect: n.Effect) -> None:
        self.items.append(effect)
        self.idle.clear()
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._drain(), name=f"router:{self.router}")

    async def _drain(self) -> None:
        try:
            while self.items:
                effect = self.items.popleft()
                try:
                    await self.runtime.carry_queued(self.router, effect)
                except Exception as exc:  # an edge failing never drops the effects queued after it
                    self.runtime.log.exception("effect_failed", router=self.router, effect=type(effect).__name__)
                    self.runtime.feed([n.EffectFailed(self.router, effect, str(exc))])
        finally:
            self.task = None
            self.idle.set()


class Runtime:
    """Everything `vrrpd run` does between start and a clean exit."""

    def __init__(self, config: Config, notifier: Notifier | None = None):
        self.loop = asyncio.get_running_loop()
        self.config = config
        self.notifier = notifier or Notifier()
        self.log = logging.get("vrrpd")
        self.node = Node(config, self.loop.time())
        self.netlink = Netlink()
        self.listener = Listener(self._heard, self._recv_failed)
        self.announcer = Announcer()
        self.scripts = Scripts(lambda name, up: self.feed([n.ScriptChanged(name, up)]))
        self.notify = NotifyRunner()
        self.fifo = NotifyFifo(config.global_.notify_fifo) if config.global_.notify_fifo else None
        self.vmacs = Vmacs(self.netlink)
        self.track_files = TrackFiles(lambda name, value: self.feed([n.FileValue(name, value)]))
        self.processes = ProcessEvents(lambda name, count: self.feed([n.ProcessCount(name, count)]))
        self.queues: dict[int, RouterQueue] = {}
        self.control: ControlServer | None = None
        self.metrics = None  # vrrpd.io.metrics_http.MetricsServer when metrics_listen is set
        self._timer: asyncio.TimerHandle | None = None
        self._feeding: list | None = None

        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._background: set[asyncio.Task] = set()

    # ---- life cycle -------------------------------------------------------------------------------------

    async def run(self) -> int:
        # What the host must give for the keys in use, or the start is refused (OSError, exit 1) with the
        # reason, rather than running half-configured.
        missing = self._host_lacks(self.config)
        if missing:
            raise OSError("; ".join(missing))
        if self.fifo is not None:
            self.fifo.open()  # a path that cannot be a FIFO
        self.notify.start()
        await self.netlink.start(self.feed)  # the facts first: sockets open before any router starts
        self.feed([n.Start()])
        self.control = ControlServer(self.config.global_.control_socket, self.status)
        await self.control.start()
        if self.config.global_.metrics_listen:
            from vrrpd.io.metrics_http import MetricsServer  # aiohttp only when asked for

            self.metrics = MetricsServer(self.config.global_.metrics_listen, self.status)
            await self.metrics.start()  # a port that cannot be bound refuses the start (OSError, exit 1)
        for sig, handler in ((signal.SIGTERM, self._stop.set), (signal.SIGINT, self._stop.set),
                             (signal.SIGHUP, self._request_reload), (signal.SIGUSR1, self._log_snapshot)):
            self.loop.add_signal_handler(sig, handler)
        self.notifier.ready()  # alone in its datagram: a long STATUS can never make systemd drop READY=1
        self.notifier.status(self.node.summary())
        if self.notifier.watchdog_interval:
            self._spawn(self._watchdog())
        self.log.info("started", version=__version__, pid=os.getpid(), instances=len(self.node.routers))
        await self._stop.wait()
        await self.shutdown()
        # Already on the way out: a second SIGTERM (a supervisor repeating itself) must not turn the clean
        # exit into a death by signal while the interpreter winds down, after the loop's handlers are gone.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            self.loop.remove_signal_handler(sig)  # (else closing the loop restores the default action)
            signal.signal(sig, signal.SIG_IGN)
        return 0

    async def shutdown(self) -> None:
        self.log.info("stop_requested")
        self.notifier.stopping()
        deadline = self.loop.time() + SHUTDOWN_GRACE_S
        self.feed([n.Stop()])
        pending = [q.idle.wait() for q in self.queues.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*pending), max(0.0, deadline - self.loop.time()))
        except asyncio.TimeoutError:
            self.log.error("shutdown_incomplete", reason="effects still pending at the grace deadline")
        await self.notify.flush(deadline)
        await self.scripts.stop()
        self.track_files.close()
        self.processes.close()
        for task in list(self._background):
            await cancel_and_wait(task)
        if self._timer:
            self._timer.cancel()

        for queue in self.queues.values():
            await cancel_and_wait(queue.task)
        if self.control:
            await self.control.close()
        if self.metrics:
            await self.metrics.close()
        self.listener.close_all()
        self.announcer.close()
        await self.notify.stop()
        if self.fifo is not None:
            self.fifo.close()
        self.netlink.close()
        self.log.info("stopped")

    def _spawn(self, coro) -> None:
        task = self.loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _watchdog(self) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(self.notifier.watchdog_interval)

    # ---- into the Node ----------------------------------------------------------------------------------

    def feed(self, events: list, routed: list[n.Routed] = ()) -> None:
        """Carry out `routed`, then hand `events` to the Node and carry out what it returns; what carrying out
        causes (a socket opened, a send failed) is fed in turn, after the effects before it, never inside."""
        if self._feeding is not None:
            self.carry(routed)
            self._feeding += events
            return
        self._feeding = list(events)
        try:
            self.carry(routed)
            while self._feeding:
                event = self._feeding.pop(0)
                self.carry(self.node.handle(event, self.loop.time()))
        finally:
            self._feeding = None
        self._rearm()

    def _heard(self, key: tuple[str, str], received: list) -> None:
        now = self.loop.time()
        receive = self.node.receive
        for rx in received:
            if rx.ip_header is not None:
                routed = self.node.receive_ah(key[0], rx.payload, rx.ip_header, rx.src, rx.dst, rx.ttl, now)
            else:
                routed = receive(key[0], key[1], rx.payload, rx.src, rx.dst, rx.ttl, now)
            if routed:
                self.feed([], routed)
        self._rearm()

    def _recv_failed(self, key: tuple[str, str], error: str, gone: bool) -> None:
        self.log.warning("recv_failed", interface=key[0], family=key[1], error=error)
        if gone:
            self.feed([n.SocketChanged(*key, None, error)])

    def _rearm(self) -> None:
        when = self.node.next_deadline()
        if self._timer is not None:
            if when is not None and self._timer.when() == when:
                return
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self.loop.call_at(when, self._on_timer, when)

    def _on_timer(self, when: float) -> None:
        self._timer = None
        self.listener.read_all()
        self.feed([], self.node.handle_timer(max(self.loop.time(), when)))

    # ---- out of the Node --------------------------------------------------------------------------------

    def carry(self, routed: list[n.Routed]) -> None:
        for router, effect in routed:
            if isinstance(effect, n.QUEUED):
                queue = self.queues.get(router)
                if queue is None:
                    queue = self.queues[router] = RouterQueue(self, router)
                queue.put(effect)
                continue
            try:
                self._carry_now(router, effect)
            except Exception as exc:  # never the effects after it
                self.log.exception("effect_failed", router=router, effect=type(effect).__name__)
                if router is not None:
                    self.feed([n.EffectFailed(router, effect, str(exc))])

    def _carry_now(self, router: int | None, effect: n.Effect) -> None:
        match effect:
            case n.Transmit():
                self._transmit(router, effect)
            case n.StateChanged():
                self.log.info("state_change", instance=effect.name, vrid=effect.vrid, family=effect.family,
                              old=effect.old.value, new=effect.new.value, reason=effect.reason,
                              priority=effect.priority)
            case n.Log(level=level, event=event, fields=fields):
                getattr(self.log, level)(event, **fields)
            case n.Status(text=text):
                self.notifier.status(text)
            case n.OpenSocket(ifname=ifname, family=family, send_only=send_only):
                try:
                    self.feed([n.SocketChanged(ifname, family, self.listener.open((ifname, family), send_only))])
                except OSError as exc:
                    self.feed([n.SocketChanged(ifname, family, None, str(exc))])
            case n.CloseSocket(ifname=ifname, family=family):
                self.listener.close((ifname, family))
            case n.RunScripts(scripts=scripts):
                self._spawn(self.scripts.run(scripts))
            case n.PruneFilters(keep=keep):
                self._spawn(self._prune(keep))
            case n.WatchFiles(files=files):
                self.track_files.watch(files)
            case n.WatchProcesses(processes=processes):
                self.processes.watch(processes)

    def _transmit(self, router: int, tx: n.Transmit) -> None:
        sock = self.listener.sockets.get((tx.ifname, tx.family))
        for dst, payload in tx.packets:
            try:
                if sock is None:
                    raise OSError(errno.ENOTCONN, "no socket")
                if tx.header_included:
                    sock.send_datagram(payload, dst)
                else:
                    sock.send(payload, dst, tx.src, tx.ttl)
            except OSError as exc:
                self.log.warning("send_failed", router=router, interface=tx.ifname, dst=str(dst), error=str(exc))
                self.feed([n.EffectFailed(router, n.Transmit(tx.ifname, tx.family, tx.src, ((dst, payload),),
                                                             tx.header_included, tx.ttl), str(exc))])

    async def carry_queued(self, router: int, effect: n.Effect) -> None:
        match effect:
            case n.AddAddresses(ifname=ifname, addresses=addresses):
                for address in addresses:
                    try:
                        await self.netlink.add(ifname, address)
                    except OSError as exc:
                        exists = exc.errno == errno.EEXIST
                        if not exists:
                            self.log.error("vip_add_failed", router=router, address=str(address), error=str(exc))
                        self.feed([n.EffectFailed(router, n.AddAddresses(ifname, (address,)), str(exc), exists)])
            case n.RemoveAddresses(ifname=ifname, addresses=addresses):
                for address in addresses:
                    try:
                        await self.netlink.remove(ifname, address)
                    except OSError as exc:
                        self.log.error("vip_remove_failed", router=router, address=str(address), error=str(exc))
                        self.feed([n.EffectFailed(router, n.RemoveAddresses(ifname, (address,)), str(exc))])
            case n.AddRoutes() | n.RemoveRoutes():
                await self._carry_routes(router, effect)
            case n.Announce(ifname=ifname, frames=frames, repeat=repeat, interval=interval):
                if interval > 0:
                    failed, error = await self.announcer.send_paced(ifname, frames, repeat, interval)
                else:
                    failed, error = self.announcer.send(ifname, frames, repeat)
                if failed:
                    self.log.warning("announce_failed", router=router, interface=ifname, frames=failed, error=error)
                    self.feed([n.EffectFailed(router, effect, error or "")])
            case n.Notify(jobs=jobs):
                self.notify.submit(jobs)
            case n.SetUpVmac(name=name, base=base, mac=mac, create=create):
                try:
                    await self.vmacs.set_up(name, base, mac, create)
                except OSError as exc:
                    exists = exc.errno == errno.EEXIST
                    self.log.error("vmac_failed", router=router, interface=name, error=str(exc))
                    self.feed([n.EffectFailed(router, effect, str(exc), exists)])
            case n.TearDownVmac(name=name, base=base, delete=delete):
                try:
                    await self.vmacs.tear_down(name, base, delete)
                except OSError as exc:
                    self.log.error("vmac_failed", router=router, interface=name, error=str(exc))
                    self.feed([n.EffectFailed(router, effect, str(exc))])
            case n.FilterRules(table=table, script=script):
                try:
                    await nftables.run_script(script)
                except OSError as exc:
                    self.log.error("filter_failed", router=router, table=table, error=str(exc))
                    self.feed([n.EffectFailed(router, effect, str(exc))])
            case n.FifoLine(line=line):
                if self.fifo is not None:
                    self.fifo.write(line)
            case n.Retire():
                self.queues.pop(router, None)

    async def _prune(self, keep: tuple[str, ...]) -> None:
        try:
            stale = await nftables.prune(keep)
        except (OSError, ValueError) as exc:
            self.log.error("filter_prune_failed", error=str(exc))
            return
        if stale:
            self.log.warning("stale_filters_removed", tables=stale)

    async def _carry_routes(self, router: int, effect: n.AddRoutes | n.RemoveRoutes) -> None:
        adding = isinstance(effect, n.AddRoutes)
        kind = n.AddRoutes if adding else n.RemoveRoutes
        items = [(route, True) for route in effect.routes] + [(rule, False) for rule in effect.rules]
        for item, is_route in items:
            try:
                if adding:
                    await (self.netlink.add_route(item, effect.ifname) if is_route else self.netlink.add_rule(item))
                else:
                    await (self.netlink.remove_route(item, effect.ifname) if is_route
                           else self.netlink.remove_rule(item))
            except OSError as exc:
                exists = adding and exc.errno == errno.EEXIST
                if not exists:
                    self.log.error("route_add_failed" if adding else "route_remove_failed", router=router,
                                   route=str(item), error=str(exc))
                one = ((item,), ()) if is_route else ((), (item,))
                self.feed([n.EffectFailed(router, kind(effect.ifname, *one), str(exc), exists)])

    # ---- reload, status -------------------------------------------------------------------------------

    def _request_reload(self) -> None:
        self._spawn(self.reload())

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
                missing = self._host_lacks(new)
                if missing:
                    for problem in missing:
                        self.log.error("reload_rejected", problem=problem)
                    return False
                self.feed([n.Reconfigure(new)])
                self.config = self.node.config
                self.log.info("reloaded", instances=len(self.node.routers))
                return True
            finally:
                self.notifier.ready()
                self.notifier.status(self.node.summary())

    def _host_lacks(self, config: Config) -> list[str]:
        """What the host lacks for the keys `config` uses (nothing: it can run them), the same at start and
        reload; the process events connector is opened here when track_process wants it (once)."""
        missing = preflight.problems(config)
        if not missing and any(inst.track_process for inst in config.instances):
            try:
                self.processes.open()
            except OSError as exc:
                missing = [str(exc)]
        return missing

    def status(self) -> dict:
        wall, now = time.time(), self.loop.time()
        view = status_view(self.node, lambda t: iso_ms(datetime.fromtimestamp(wall - (now - t), timezone.utc)))
        view["stats"]["malformed_packets"] = self.listener.malformed
        return {"router_id": view["router_id"], "pid": os.getpid(), "version": __version__,
                "instances": view["instances"], "stats": view["stats"],
                "notify": {"completed": self.notify.completed, "failed": self.notify.failures,
                           "dropped": self.notify.dropped, "exits": dict(self.notify.exits),
                           "seconds": round(self.notify.seconds, 6),
                           **({"fifo_written": self.fifo.written, "fifo_dropped": self.fifo.dropped}
                              if self.fifo is not None else {})}}

    def _log_snapshot(self) -> None:
        self.log.info("status_snapshot", status=self.status())


async def run(config: Config) -> int:
    return await Runtime(config).run()
