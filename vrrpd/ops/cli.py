"""The `vrrpd` command line: run, check, status, import-keepalived (SPEC section 2)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import textwrap

from vrrpd import __version__
from vrrpd.config import DEFAULT_CONTROL_SOCKET as DEFAULT_SOCKET

EXIT_OK, EXIT_INVALID, EXIT_NO_DAEMON = 0, 2, 3

DESCRIPTION = textwrap.dedent(
    """\
    vrrpd moves virtual IP addresses between Linux hosts with VRRP (RFC 5798 VRRPv3, RFC 3768 VRRPv2,
    IPv4 and IPv6). The host with the highest priority on a link holds the addresses; when it goes
    silent, the next takes them over within Master_Down_Interval and announces them with gratuitous
    ARP / unsolicited neighbour advertisements. It interoperates with keepalived on the same link.
    """
)

EPILOG = textwrap.dedent(
    """\
    signals (to `vrrpd run`):
      SIGTERM, SIGINT  every master sends one priority-0 advert, removes its addresses, runs its stop
                       notify, then the daemon exits 0
      SIGHUP           reload the config: unchanged instances keep their state and addresses; a bad new
                       file is refused and the old one keeps running
      SIGUSR1          log a status snapshot

    exit status:
      0  success            2  invalid config or input            3  no daemon answered (status)

    files:
      /etc/vrrpd/vrrpd.toml     the usual config file (see conf/ for a dual-master pair)
      /run/vrrpd/vrrpd.sock     the control socket (root only), set by [global] control_socket

    examples:
      vrrpd check -c /etc/vrrpd/vrrpd.toml
      vrrpd run -c /etc/vrrpd/vrrpd.toml
      vrrpd status --json | jq '.instances[] | {name, state}'
      vrrpd import-keepalived /etc/keepalived/keepalived.conf > /etc/vrrpd/vrrpd.toml
    """
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vrrpd",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vrrpd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="run the daemon in the foreground (as systemd does)",
                         description="Run in the foreground, logging to stderr, until SIGTERM or SIGINT.")
    run.add_argument("-c", "--config", required=True, metavar="FILE", help="the TOML config file")

    check = sub.add_parser("check", help="validate a config file",
                           description="Validate FILE; print each problem as FILE:LINE: key: message. "
                                       "Exit 0 when valid, 2 when not.")
    check.add_argument("-c", "--config", required=True, metavar="FILE", help="the TOML config file")

    status = sub.add_parser("status", help="ask the running daemon for its state",
                            description="Print the state of every instance of the running daemon: a table, "
                                        "or the JSON document of the control socket with --json. "
                                        "Exit 3 when no daemon answers.")
    status.add_argument("-s", "--socket", default=DEFAULT_SOCKET, metavar="SOCKET",
                        help=f"the control socket (default {DEFAULT_SOCKET})")
    status.add_argument("--json", action="store_true", help="print the JSON document")

    imp = sub.add_parser("import-keepalived", help="convert a keepalived.conf to vrrpd TOML",
                         description="Print the vrrpd TOML equivalent of the vrrp_instance, vrrp_script and "
                                     "vrrp_sync_group blocks of a keepalived.conf, with a comment for each "
                                     "keyword that cannot be carried over. Exit 2 on a parse error.")
    imp.add_argument("file", metavar="FILE", help="keepalived.conf to convert")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"run": cmd_run, "check": cmd_check, "status": cmd_status, "import-keepalived": cmd_import}
    return handler[args.command](args)


def _load_or_report(path: str):
    from vrrpd.config import ConfigError, load

    try:
        return load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def cmd_check(args) -> int:
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_INVALID
    print(f"{args.config}: ok ({len(config.instances)} instances, {len(config.scripts)} scripts, "
          f"{len(config.sync_groups)} sync groups)")
    return EXIT_OK


def cmd_run(args) -> int:
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_INVALID
    from daemonkit import log
    from vrrpd.runtime import run

    log.configure(config.global_.log_format, config.global_.log_level)
    try:
        return asyncio.run(run(config))
    except OSError as exc:
        log.get().error("startup_failed", error=str(exc))
        return 1


def cmd_status(args) -> int:
    from vrrpd.io.control import query
    from vrrpd.ops.status_table import format_table

    try:
        status = query(args.socket)
    except OSError as exc:
        print(f"vrrpd status: no daemon answered on {args.socket}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_NO_DAEMON
    if args.json:
        json.dump(status, sys.stdout, indent=2)
        print()
    else:
        print(format_table(status))
    return EXIT_OK


def cmd_import(args) -> int:
    from vrrpd.ops.keepalived.convert import convert
    from vrrpd.ops.keepalived.parse import KeepalivedParseError

    try:
        with open(args.file, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        print(f"{args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_INVALID
    try:
        sys.stdout.write(convert(text, args.file))
    except KeepalivedParseError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
