"""The yardstick of csserver's throughput in `make bench`: a bare aiohttp server that answers the same
requests as csserver (`PUT` and `GET /v1/contexts/{haid}/values/{key}`, the same JSON in and out) without
routing, adoption or a store. Run in node-a's namespace beside csserver, in the same run, so the ratio
csserver / bare says what csserver's work costs on this machine, whatever else the machine is doing.

    python -m bench.bare_server --port 9200
"""

from __future__ import annotations

import argparse
import json
import sys

from aiohttp import web


async def put_value(request: web.Request) -> web.Response:
    value = json.loads(await request.read())  # parsed and dumped again, as csserver does
    return web.Response(text=json.dumps({"key": request.match_info["key"], "value": value, "version": 1},
                                        separators=(",", ":")), content_type="application/json")


async def get_value(request: web.Request) -> web.Response:
    return web.Response(text=json.dumps({"key": request.match_info["key"], "value": {"step": 0}, "version": 1},
                                        separators=(",", ":")), content_type="application/json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_server")
    parser.add_argument("--port", type=int, default=9200)
    args = parser.parse_args(argv)
    app = web.Application()
    app.router.add_put(r"/v1/contexts/{haid}/values/{key:[\s\S]+}", put_value)
    app.router.add_get(r"/v1/contexts/{haid}/values/{key:[\s\S]+}", get_value)
    web.run_app(app, host="0.0.0.0", port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
