"""A csserver client that writes continuously through the VIPs and proves afterwards that nothing was lost.

    python -m labkit.writer --cluster '{"cs-a": "192.0.2.100", "cs-b": "192.0.2.101"}' --contexts 2

Run in the lab's client namespace. It creates `--contexts` contexts through each alias's VIP, then one task
per context writes a new key every `--pace` seconds (`w000001`, `w000002`, ...) with `csserver.client`,
which retries through a failover until `--deadline`. On SIGTERM or SIGINT (or after `--duration`) it
stops writing, reads every context back and checks that each acknowledged write is there with its value.

It prints one JSON object per line on stdout, flushed at once, so a parent can follow along:
  {"event": "created", "haid", "via", "epoch", "t"}
  {"event": "ack", "haid", "key", "t", "latency"}        every acknowledged write
  {"event": "error", "haid", "key", "t", "latency", "error"}  a call that gave up within its deadline
  {"event": "summary", "acked", "errors", "lost", "lost_keys", "max_gap", "max_call", "contexts": {...}}
`t` is time.monotonic() (the same clock in every namespace of one machine). Exit 0 when nothing was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Iterator

from csserver.client import Client, CsError


def records(stream) -> Iterator[dict]:
    """The JSON objects of a writer's output as its lines arrive (anything else, e.g. a traceback, skipped)."""
    for line in stream:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


def emit(**record) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def dump_tasks() -> None:
    """SIGUSR1: where every task waits, on stderr (for a writer that seems stuck)."""
    for task in asyncio.all_tasks():
        task.print_stack(limit=8, file=sys.stderr)


class Writer:
    def __init__(self, client: Client, pace: float):
        self.client = client
        self.pace = pace
        self.stop = asyncio.Event()
        self.acked: dict[str, dict[str, int]] = {}  # haid -> key -> seq acknowledged
        self.errors = 0
        self.max_call = 0.0
        self.max_gap = 0.0  # longest time between two acknowledgements of one context

    async def write(self, haid: str) -> None:
        seq = 0
        last_ack = time.monotonic()
        while not self.stop.is_set():
            seq += 1
            key = f"w{seq:06d}"
            started = time.monotonic()
            try:
                await self.client.put(haid, key, {"seq": seq})
            except CsError as exc:
                now = time.monotonic()
                self.errors += 1
                self.max_call = max(self.max_call, now - started)
                emit(event="error", haid=haid, key=key, t=now, latency=now - started,
                     error=f"{exc.status} {exc.code}: {exc.detail}")
                continue
            now = time.monotonic()
            self.acked[haid][key] = seq
            self.max_call = max(self.max_call, now - started)
            self.max_gap = max(self.max_gap, now - last_ack)
            last_ack = now
            emit(event="ack", haid=haid, key=key, t=now, latency=now - started)
            try:
                await asyncio.wait_for(self.stop.wait(), self.pace)
            except asyncio.TimeoutError:
                pass

    async def verify(self) -> dict:
        lost: list[str] = []
        contexts = {}
        for haid, keys in self.acked.items():
            values = {v["key"]: v["value"] for v in await self.client.list_values(haid)}
            missing = [k for k, seq in keys.items() if values.get(k) != {"seq": seq}]
            lost += [f"{haid}/{k}" for k in missing]
            contexts[haid] = {"acked": len(keys), "stored": len(values), "lost": len(missing)}
        return {"acked": sum(len(k) for k in self.acked.values()), "errors": self.errors, "lost": len(lost),
                "lost_keys": lost[:20], "max_gap": round(self.max_gap, 4), "max_call": round(self.max_call, 4),
                "contexts": contexts}


async def main_async(args) -> int:
    cluster = json.loads(args.cluster)
    client = Client(cluster=cluster, port=args.port, deadline_s=args.deadline,
                    attempt_timeout_s=args.attempt_timeout)
    loop = asyncio.get_running_loop()
    writer = Writer(client, args.pace)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, writer.stop.set)
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    try:
        haids = []
        for alias in cluster:
            for _ in range(args.contexts):
                created = await client.create(labels={"writer": "lab"}, via=alias)
                haids.append(created["haid"])
                writer.acked[created["haid"]] = {}
                emit(event="created", haid=created["haid"], via=alias, epoch=created["epoch"], t=time.monotonic())
        tasks = [asyncio.create_task(writer.write(h)) for h in haids]
        if args.duration:
            try:
                await asyncio.wait_for(writer.stop.wait(), args.duration)
            except asyncio.TimeoutError:
                writer.stop.set()
        await asyncio.gather(*tasks)
        summary = await writer.verify()
        emit(event="summary", **summary)
        return 0 if summary["lost"] == 0 else 1
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.writer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cluster", required=True, help="JSON map alias -> VIP")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--contexts", type=int, default=2, help="contexts per alias (default 2)")
    parser.add_argument("--pace", type=float, default=0.02, help="seconds between writes of one context")
    parser.add_argument("--deadline", type=float, default=15.0, help="seconds a call may retry")
    parser.add_argument("--attempt-timeout", type=float, default=0.5, help="seconds per attempt")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: at SIGTERM)")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
