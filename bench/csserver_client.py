"""The csserver benchmark's client side, run inside the lab's client namespace by bench/csserver_bench.py.

    python -m bench.csserver_client load  --cluster JSON --via cs-a --concurrency 16 --duration 5
    python -m bench.csserver_client probe --url http://192.0.2.100:9100/v1/contexts/HAID

`load`: N keep-alive workers PUT then GET one value each through one VIP for a fixed time after a warm-up;
one JSON object on stdout (requests/s, p50/p90/p99/max, failures). With --bare-port, the same requests go
first to the bare server there (bench/bare_server.py, same VIP), the yardstick of the same run. `probe`: a
GET on a fresh connection every --interval, one JSON line each, to see the first request a new VIP holder
serves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import sys
import time
from urllib.parse import quote, urlsplit

import aiohttp

from csserver.client import Client

def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


async def load_phase(session, base: str, haids: list[str], op: str, duration: float, warmup: float) -> dict:
    """Every worker sends one request after the other on its own context; only requests started after the
    warm-up count, and only those that ended before the window closed."""
    start = time.perf_counter()
    measure_from, until = start + warmup, start + warmup + duration
    latencies: list[float] = []
    failures: dict[str, int] = {}

    async def worker(haid: str) -> None:
        url = f"{base}/v1/contexts/{quote(haid, safe='')}/values/state"
        n = 0
        while (began := time.perf_counter()) < until:
            n += 1
            try:
                if op == "put":
                    body = json.dumps({"step": n, "state": "running"}).encode()
                    request = session.put(url, data=body, headers={"Content-Type": "application/json"})
                else:
                    request = session.get(url)
                async with request as response:
                    await response.read()
                    outcome = str(response.status)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                outcome = type(exc).__name__
            ended = time.perf_counter()
            if began < measure_from or ended > until:
                continue
            if outcome == "200":
                latencies.append(ended - began)
            else:
                failures[outcome] = failures.get(outcome, 0) + 1

    await asyncio.gather(*(worker(h) for h in haids))
    latencies.sort()
    return {"op": op, "requests": len(latencies), "failures": failures, "seconds": duration,
            "per_second": len(latencies) / duration,
            "p50_ms": percentile(latencies, 50) * 1000, "p90_ms": percentile(latencies, 90) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000, "max_ms": (latencies[-1] if latencies else float("nan")) * 1000,
            "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan"),
            "cdf_ms": [percentile(latencies, q) * 1000 for q in range(101)] if latencies else []}


async def load_main(args) -> int:
    cluster = json.loads(args.cluster)
    async with Client(cluster=cluster, port=args.port, deadline_s=10) as cs:
        haids = [(await cs.create(labels={"bench": "load"}, via=args.via))["haid"] for _ in range(args.concurrency)]
        for haid in haids:
            await cs.put(haid, "state", {"step": 0, "state": "created"})
    base = f"http://{cluster[args.via]}:{args.port}"
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=10)
    bare = {}
    if args.bare_port:
        bare_base = f"http://{cluster[args.via]}:{args.bare_port}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency),
                                         timeout=timeout) as session:
            bare = {op: await load_phase(session, bare_base, haids, op, args.duration, args.warmup) for op in args.ops}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        phases = {op: await load_phase(session, base, haids, op, args.duration, args.warmup) for op in args.ops}
    print(json.dumps({"via": args.via, "concurrency": args.concurrency, "phases": phases, "bare": bare}), flush=True)
    return 0


async def probe_once(host: str, port: int, path: str, timeout: float) -> None:
    """One GET on a new connection: prints [sent, answered, status or error] (time.monotonic())."""
    sent = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
                status_line = await reader.readline()
            finally:
                writer.close()
        outcome: int | str = int(status_line.split()[1]) if status_line else "closed"
    except TimeoutError:
        outcome = "timeout"
    except OSError as exc:
        outcome = type(exc).__name__
    sys.stdout.write(json.dumps([sent, time.monotonic(), outcome]) + "\n")
    sys.stdout.flush()


async def probe_main(args) -> int:
    url = urlsplit(args.url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pending: set[asyncio.Task] = set()
    deadline = time.monotonic() + args.duration
    next_at = time.monotonic()
    while not stop.is_set() and time.monotonic() < deadline:
        task = asyncio.create_task(probe_once(url.hostname, url.port or 80, url.path, args.timeout))
        pending.add(task)
        task.add_done_callback(pending.discard)
        next_at = max(next_at + args.interval, time.monotonic())  # fallen behind: no burst to catch up
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
    if pending:
        await asyncio.wait(pending, timeout=args.timeout + 1)
    return 0


def client_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.csserver_client")
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="GET/PUT load through one VIP; one JSON object on stdout")
    load.add_argument("--cluster", required=True, help="JSON map alias -> VIP")
    load.add_argument("--port", type=int, default=9100)
    load.add_argument("--via", default="cs-a", help="the alias whose VIP takes the load")
    load.add_argument("--concurrency", type=int, default=16)
    load.add_argument("--duration", type=float, default=5.0)
    load.add_argument("--warmup", type=float, default=1.0)
    load.add_argument("--ops", nargs="+", default=["put", "get"], choices=["put", "get"])
    load.add_argument("--bare-port", type=int, help="also load the bare server on this port of the same VIP")
    probe = sub.add_parser("probe", help="a GET on a fresh connection every --interval; one JSON line each")
    probe.add_argument("--url", required=True)
    probe.add_argument("--interval", type=float, default=0.002)
    probe.add_argument("--timeout", type=float, default=0.3)
    probe.add_argument("--duration", type=float, default=60.0, help="stop after this long at the latest")
    args = parser.parse_args(argv)
    return asyncio.run(load_main(args) if args.command == "load" else probe_main(args))


if __name__ == "__main__":
    sys.exit(client_main(sys.argv[1:]))
