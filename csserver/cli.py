"""The `csserver` command line: run, check, and `ctx` (create, get, put, del, ls contexts as a client)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import textwrap

from csserver import __version__

EXIT_OK, EXIT_REFUSED, EXIT_INVALID, EXIT_UNAVAILABLE = 0, 1, 2, 3

DESCRIPTION = textwrap.dedent(
    """\
    csserver serves contexts: named sets of JSON key/values, modelled on Apache Linkis's Context Service.
    Each context's id, its HAID (e.g. 4-4--cs-acs-b84835), names its primary and backup node. The node
    that holds the primary's virtual IP (moved by vrrpd) serves it: when the primary is down, its backup
    holds that VIP, adopts the context from the shared store with a new fencing epoch and serves it; when
    the primary returns it takes its contexts back. A write from a node whose epoch is stale is refused
    (409) and never applied.
    """
)

EPILOG = textwrap.dedent(
    """\
    exit status:
      0  success
      1  the service refused the request (malformed, not found, ...; the reason is printed)
      2  invalid config file or command line
      3  no node answered before the deadline

    files:
      /etc/csserver/csserver.toml   the config file (see conf/csserver-a.toml):
                                    [node] alias, listen, token_file; [cluster] aliases, backup;
                                    [store] url = "sqlite:///PATH" or "postgresql://..."

    examples:
      csserver check -c /etc/csserver/csserver.toml
      csserver run -c /etc/csserver/csserver.toml
      csserver ctx --cluster /etc/csserver/csserver.toml create --via cs-a --label team=etl
      csserver ctx --url http://192.0.2.100:9100 put 4-4--cs-acs-b1 step '{"n": 1}'
      csserver ctx --cluster /etc/csserver/csserver.toml get 4-4--cs-acs-b1 step
      csserver ctx --cluster /etc/csserver/csserver.toml ls 4-4--cs-acs-b1 --prefix job/
    """
)

CTX_EPILOG = textwrap.dedent(
    """\
    Each command prints the service's JSON answer on stdout (nothing for a deletion). Requests for a context
    go to the VIP of the primary its HAID names (with --cluster) or to --url; a request is retried through
    a failover (no answer, 421, 503, 409 stale_epoch) until --deadline, every retry of a write with the same
    Idempotency-Key, so it is never applied twice.
    """
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="csserver", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"csserver {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="serve contexts in the foreground (as systemd does)",
                         description="Open the store (applying schema migrations), then serve the HTTP API "
                                     "until SIGTERM or SIGINT, logging to stderr. Exit 0 after a clean stop, 1 "
                                     "when the store or the listening socket cannot be opened, 2 on a bad config.")
    run.add_argument("-c", "--config", required=True, metavar="FILE", help="the TOML config file")

    check = sub.add_parser("check", help="validate a config file",
                           description="Validate FILE (and read its token_file); print each problem as "
                                       "FILE:LINE: key: message. Exit 0 when valid, 2 when not.")
    check.add_argument("-c", "--config", required=True, metavar="FILE", help="the TOML config file")

    ctx = sub.add_parser("ctx", help="create, read, write and delete contexts (a client)",
                         description="Talk to a csserver cluster as a client.", epilog=CTX_EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ctx.add_mutually_exclusive_group(required=True)
    where.add_argument("--cluster", metavar="FILE",
                       help="a csserver config file: its [cluster] aliases give each alias's VIP, its [node] "
                            "listen the port")
    where.add_argument("--url", metavar="URL", help="send every request to this base URL, e.g. http://192.0.2.100:9100")
    ctx.add_argument("--port", type=int, metavar="PORT", help="the port at the VIPs (default: from --cluster, else 9100)")
    ctx.add_argument("--token-file", metavar="FILE", help="send the bearer token in FILE")
    ctx.add_argument("--deadline", type=float, default=10.0, metavar="SECONDS",
                     help="give up retrying after this long (default 10)")
    ctx.add_argument("--attempt-timeout", type=float, default=1.0, metavar="SECONDS",
                     help="wait this long for one answer before retrying (default 1)")
    verbs = ctx.add_subparsers(dest="verb", metavar="VERB", required=True)

    create = verbs.add_parser("create", help="create a context; prints its HAID and epoch",
                              description="Create a context. Its primary is the node reached: --via ALIAS (with "
                                          "--cluster) or the node behind --url; its backup is that node's partner.")
    create.add_argument("--via", metavar="ALIAS", help="create it on this alias's VIP (needed with --cluster)")
    create.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="a label (repeatable)")

    get = verbs.add_parser("get", help="print a context, or one of its values",
                           description="Print the context HAID, or with KEY the value of KEY.")
    get.add_argument("haid", metavar="HAID")
    get.add_argument("key", metavar="KEY", nargs="?")

    put = verbs.add_parser("put", help="set a key to a JSON value",
                           description="Set KEY of context HAID to VALUE, a JSON text ('\"text\"', 42, '{\"a\": 1}'); "
                                       "with --string, VALUE is taken as a plain string.")
    put.add_argument("haid", metavar="HAID")
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", metavar="VALUE")
    put.add_argument("--string", action="store_true", help="VALUE is a string, not JSON")

    delete = verbs.add_parser("del", help="delete a context, or one of its keys",
                              description="Delete the context HAID and all its values, or with KEY only that key.")
    delete.add_argument("haid", metavar="HAID")
    delete.add_argument("key", metavar="KEY", nargs="?")

    ls = verbs.add_parser("ls", help="list a context's values",
                          description="Print the values of context HAID whose key starts with --prefix, by key.")
    ls.add_argument("haid", metavar="HAID")
    ls.add_argument("--prefix", default="", metavar="PREFIX")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"run": cmd_run, "check": cmd_check, "ctx": cmd_ctx}[args.command](args)


def _load_or_report(path: str, with_token: bool = True):
    from csserver.config import ConfigError, load, read_token

    try:
        config = load(path)
        token = read_token(config) if with_token else None
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None, None
    return config, token


def cmd_check(args) -> int:
    config, _ = _load_or_report(args.config)
    if config is None:
        return EXIT_INVALID
    for warning in _warnings(config):
        print(warning, file=sys.stderr)
    mode = "standalone" if config.standalone else f"VIP {config.cluster.vip(config.node.alias)}"
    print(f"{args.config}: ok (alias {config.node.alias}, {mode}, backup {config.cluster.backup_of(config.node.alias)}, "
          f"store {config.store.kind})")
    return EXIT_OK


def _warnings(config) -> list[str]:
    """What is valid yet probably not what the operator meant, as `FILE:LINE: key: warning: ...`."""
    partners = sorted(config.cluster.partners(config.node.alias))
    if config.store.kind != "sqlite" or not partners:
        return []
    from daemonkit.tomlpos import Positions

    try:
        with open(config.path, encoding="utf-8") as fh:
            line = Positions.of(fh.read()).line(("store", "url"))
    except (OSError, UnicodeDecodeError):
        line = None
    where = f"{config.path}:{line}" if line else config.path
    return [f"{where}: store.url: warning: {config.store.sqlite_path} is a SQLite file on this host, but "
            f"{', '.join(partners)} must share this node's store to take over from it or for it: that works only "
            f"if {'they run' if len(partners) > 1 else 'it runs'} on this very host and open this file; on two "
            f"hosts use one PostgreSQL (url = \"postgresql://...\"). csserver refuses to adopt or create for a "
            f"partner until it has shown that they share the store"]


def cmd_run(args) -> int:
    config, token = _load_or_report(args.config)
    if config is None:
        return EXIT_INVALID
    from csserver.server import serve
    from daemonkit import log

    log.configure(config.node.log_format, config.node.log_level)
    return asyncio.run(serve(config, token))


def cmd_ctx(args) -> int:
    from csserver.client import Client, CsError, Unavailable

    try:
        client_args = _client_args(args)
        value = _put_value(args) if args.verb == "put" else None
    except ValueError as exc:
        print(f"csserver ctx: {exc}", file=sys.stderr)
        return EXIT_INVALID

    async def call():
        async with Client(**client_args) as client:
            return await _ctx_verb(client, args, value)

    try:
        answer = asyncio.run(call())
    except Unavailable as exc:
        print(f"csserver ctx: {exc.detail}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except CsError as exc:
        print(f"csserver ctx: {exc.status} {exc.code}: {exc.detail}", file=sys.stderr)
        return EXIT_REFUSED
    except ValueError as exc:
        print(f"csserver ctx: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if answer is not None:
        json.dump(answer, sys.stdout, ensure_ascii=False, indent=2)
        print()
    return EXIT_OK


def _client_args(args) -> dict:
    kw: dict = {"deadline_s": args.deadline, "attempt_timeout_s": args.attempt_timeout}
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as fh:
                kw["token"] = fh.read().strip()
        except OSError as exc:
            raise ValueError(f"cannot read {args.token_file}: {exc.strerror or exc}") from None
    if args.url:
        kw["base_url"] = args.url
        if args.port:
            raise ValueError("--port goes with --cluster; put the port in --url")
        return kw
    config, _ = _load_or_report(args.cluster, with_token=False)
    if config is None:
        raise ValueError(f"{args.cluster} is not a valid csserver config")
    if not config.cluster.aliases:
        raise ValueError(f"{args.cluster}: [cluster] aliases names no VIP")
    kw["cluster"] = dict(config.cluster.aliases)
    kw["port"] = args.port or config.node.listen_port
    return kw


def _put_value(args):
    if args.string:
        return args.value
    try:
        return json.loads(args.value)
    except ValueError:
        raise ValueError(f"VALUE must be JSON (use --string for plain text): {args.value!r}") from None


async def _ctx_verb(client, args, value):
    if args.verb == "create":
        labels = {}
        for item in args.label:
            key, sep, text = item.partition("=")
            if not sep or not key:
                raise ValueError(f"--label takes KEY=VALUE, not {item!r}")
            labels[key] = text
        return await client.create(labels, via=args.via)
    if args.verb == "get":
        return await (client.get_value(args.haid, args.key) if args.key else client.get(args.haid))
    if args.verb == "put":
        return await client.put(args.haid, args.key, value)
    if args.verb == "del":
        await (client.delete_value(args.haid, args.key) if args.key else client.delete(args.haid))
        return None
    return await client.list_values(args.haid, args.prefix)


if __name__ == "__main__":
    sys.exit(main())
