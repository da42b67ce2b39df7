#!/usr/bin/env bash
# A PostgreSQL server of its own for the test suite (csserver's store conformance tests).
#
#   scripts/test-postgres.sh start    start it (idempotent), create the test role and database, and write
#                                     scripts/test-postgres.env with CSSERVER_TEST_PG_URL=postgresql://...
#   scripts/test-postgres.sh stop     stop it (the data stays for the next start)
#   scripts/test-postgres.sh status   say whether it runs; exit 0 if it does, 3 if not
#   scripts/test-postgres.sh destroy  stop it and delete its data directory
#
# It runs its own cluster (initdb) from the Debian postgresql package's binaries, under
# $CSSERVER_TEST_PG_DIR (default /var/tmp/csserver-test-pg), listening on 127.0.0.1:$CSSERVER_TEST_PG_PORT
# (default 54329) and on a unix socket inside that directory, so it never touches the machine's own
# cluster or its configuration. As root the server runs as the `postgres` user (PostgreSQL refuses root).
# The test role has a random password kept in that directory; the env file is generated, never committed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
env_file="$here/test-postgres.env"
base=${CSSERVER_TEST_PG_DIR:-/var/tmp/csserver-test-pg}
port=${CSSERVER_TEST_PG_PORT:-54329}
role=csserver_test
db=csserver_test

die() { echo "test-postgres: $*" >&2; exit 1; }

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$bindir" ] && [ -x "$bindir/initdb" ] || die "no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)"

if [ "$(id -u)" = 0 ]; then
  owner=postgres
  id "$owner" >/dev/null 2>&1 || die "no 'postgres' user: is the postgresql package installed?"
  as_owner() { runuser -u "$owner" -- "$@"; }
else
  owner=$(id -un)
  as_owner() { "$@"; }
fi

data="$base/data"
sock="$base/run"
log="$base/server.log"
pwfile="$base/password"

# The postmaster of postmaster.pid is alive (not a zombie: a killed server whose parent never reaped it
# would fool `pg_ctl status`).
running() {
  local pid state
  [ -s "$data/postmaster.pid" ] || return 1
  pid=$(head -n 1 "$data/postmaster.pid")
  [ -r "/proc/$pid/stat" ] || return 1
  state=$(sed -E 's/^[0-9]+ \(.*\) (.).*/\1/' "/proc/$pid/stat")
  [ "$state" != Z ]
}

ready() { as_owner "$bindir/pg_isready" -q -h "$sock" -p "$port" -t 1 >/dev/null 2>&1; }

launch() {
  # A server that died uncleanly leaves postmaster.pid behind, and its backends need a moment to exit.
  local try
  for try in 1 2 3 4 5; do
    running || rm -f "$data/postmaster.pid"
    if as_owner "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$sock -c max_connections=200" \
        start >/dev/null 2>&1; then
      return 0
    fi
    sleep 1
  done
  tail -n 20 "$log" >&2 || true
  die "the server did not start (log: $log)"
}

psql_admin() {
  as_owner "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres -d postgres "$@"
}

start() {
  mkdir -p "$base"
  chmod 700 "$base"
  [ "$(id -u)" = 0 ] && chown "$owner" "$base"
  if [ ! -s "$data/PG_VERSION" ]; then
    rm -rf "$data"
    as_owner "$bindir/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C >"$base/initdb.log" 2>&1 || { cat "$base/initdb.log" >&2; die "initdb failed"; }
  fi
  as_owner mkdir -p "$sock"
  if running; then
    local waited=0
    until ready || [ $waited -ge 20 ]; do sleep 0.5; waited=$((waited + 1)); done  # maybe still starting
    ready || { as_owner "$bindir/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true; }
  fi
  # fsync stays on (the default): the suite checks behaviour that rests on durable commits.
  running && ready || launch
  if [ ! -s "$pwfile" ]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=\n' >"$pwfile")
  fi
  local password
  password=$(cat "$pwfile")
  # Role and database created once; the password is (re)set on every start so the env file always works.
  psql_admin -v role="$role" -v db="$db" -v pw="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'role', :'pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role') WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
  (umask 077; printf 'CSSERVER_TEST_PG_URL=postgresql://%s:%s@127.0.0.1:%s/%s\n' "$role" "$password" "$port" "$db" >"$env_file")
  echo "test-postgres: running on 127.0.0.1:$port (data $data); wrote $env_file"
}

stop() {
  if [ -s "$data/PG_VERSION" ] && running; then
    as_owner "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null
  fi
  echo "test-postgres: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if [ -s "$data/PG_VERSION" ] && running && ready; then echo "test-postgres: running on 127.0.0.1:$port"; else echo "test-postgres: not running"; exit 3; fi ;;
  destroy) stop; rm -rf "$base"; rm -f "$env_file"; echo "test-postgres: removed $base" ;;
  *) echo "usage: $0 start|stop|status|destroy" >&2; exit 2 ;;
esac
