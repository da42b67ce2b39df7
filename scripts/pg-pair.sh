#!/usr/bin/env bash
# A PostgreSQL primary and a synchronous streaming standby of its own, for the store-failover scenarios
# (tests/lab/test_store_failover.py, bench/csserver_bench.py). Never the suite's shared test server
# (scripts/test-postgres.sh, 127.0.0.1:54329) and never the machine's own cluster: every server lives under
# $PG_PAIR_DIR/<name> with the port and listen address given, from the Debian postgresql package's binaries.
#
#   PG_PAIR_DIR=DIR scripts/pg-pair.sh primary NAME ADDRESS PORT STANDBY   initdb, start, role and database;
#                                                     commits wait for the standby named STANDBY
#   PG_PAIR_DIR=DIR scripts/pg-pair.sh standby NAME ADDRESS PORT PRIMARY_ADDRESS PRIMARY_PORT
#                                                     pg_basebackup from the primary, start streaming
#   PG_PAIR_DIR=DIR scripts/pg-pair.sh promote NAME   the standby becomes the primary (pg_ctl promote, waits)
#   PG_PAIR_DIR=DIR scripts/pg-pair.sh pids NAME      the server's processes (postmaster first), one a line
#   PG_PAIR_DIR=DIR scripts/pg-pair.sh stop NAME      stop it (continued first if frozen; immediate if need be)
#   PG_PAIR_DIR=DIR scripts/pg-pair.sh url NAME...    the csserver store URL over these servers, in order
#
# Run `primary` and `standby` inside the network namespace the server belongs to (`ip netns exec`): it
# listens on ADDRESS there. As root the servers run as the `postgres` user (PostgreSQL refuses root).
# Passwords are random, kept in $PG_PAIR_DIR (0700); the caller removes the directory afterwards.
set -euo pipefail

die() { echo "pg-pair: $*" >&2; exit 1; }

base=${PG_PAIR_DIR:?set PG_PAIR_DIR to the pair\'s own directory}
role=csserver
db=csserver
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$bindir" ] && [ -x "$bindir/initdb" ] || die "no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)"

if [ "$(id -u)" = 0 ]; then
  owner=postgres
  as_owner() { runuser -u "$owner" -- "$@"; }
else
  owner=$(id -un)
  as_owner() { "$@"; }
fi

data() { echo "$base/$1/data"; }
password() {  # the password of role $1, made on first use
  local file="$base/$1.password"
  [ -s "$file" ] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=\n' >"$file")
  cat "$file"
}
prepare() {  # $1: server name
  mkdir -p "$base/$1"
  chmod 700 "$base" "$base/$1"
  [ "$(id -u)" = 0 ] && chown "$owner" "$base" "$base/$1"
  [ "$(id -u)" = 0 ] && chown "$owner" "$base"/*.password 2>/dev/null || true
  as_owner mkdir -p "$base/$1/run"
}
start_server() {  # $1 name, $2 address, $3 port
  as_owner "$bindir/pg_ctl" -D "$(data "$1")" -l "$base/$1/server.log" -w -t 60 \
    -o "-c listen_addresses=$2 -c port=$3 -c unix_socket_directories=$base/$1/run" start >/dev/null \
    || { tail -n 20 "$base/$1/server.log" >&2; die "$1 did not start"; }
}

primary() {  # name address port standby_name
  local name=$1 address=$2 port=$3 standby=$4
  prepare "$name"
  password "$role" >/dev/null
  password replicator >/dev/null
  [ "$(id -u)" = 0 ] && chown "$owner" "$base"/*.password
  as_owner "$bindir/initdb" -D "$(data "$name")" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C >"$base/$name/initdb.log" 2>&1 || { cat "$base/$name/initdb.log" >&2; die "initdb failed"; }
  cat >>"$(data "$name")/postgresql.conf" <<CONF
# pg-pair.sh: a primary whose commits wait for the synchronous standby '$standby'
wal_level = replica
max_wal_senders = 4
synchronous_standby_names = '$standby'
synchronous_commit = on
hot_standby = on
max_connections = 100
CONF
  cat >>"$(data "$name")/pg_hba.conf" <<HBA
host all $role 0.0.0.0/0 scram-sha-256
host replication replicator 0.0.0.0/0 scram-sha-256
HBA
  start_server "$name" "$address" "$port"
  as_owner "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$base/$name/run" -p "$port" -U postgres -d postgres \
    -v role="$role" -v pw="$(password "$role")" -v rpw="$(password replicator)" -v db="$db" <<'SQL'
SET synchronous_commit = local; -- no standby yet to wait for
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role', :'pw') \gexec
SELECT format('CREATE ROLE replicator REPLICATION LOGIN PASSWORD %L', :'rpw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role') \gexec
SQL
}

standby() {  # name address port primary_address primary_port
  local name=$1 address=$2 port=$3 from=$4 from_port=$5
  prepare "$name"
  # -R writes standby.signal and primary_conninfo (with application_name: the name the primary waits for).
  as_owner "$bindir/pg_basebackup" -D "$(data "$name")" -X stream -R -c fast \
    -d "host=$from port=$from_port user=replicator password=$(password replicator) application_name=$name" \
    >"$base/$name/basebackup.log" 2>&1 || { cat "$base/$name/basebackup.log" >&2; die "pg_basebackup failed"; }
  # Promoted, it has no standby of its own: its commits must not wait for one.
  echo "synchronous_standby_names = ''" >>"$(data "$name")/postgresql.conf"
  start_server "$name" "$address" "$port"
}

pids() {  # the postmaster and every process below it
  local pidfile
  pidfile="$(data "$1")/postmaster.pid"
  [ -s "$pidfile" ] || return 0
  local root
  root=$(head -n 1 "$pidfile")
  [ -d "/proc/$root" ] || return 0
  echo "$root"
  ps -o pid= --ppid "$root" | tr -d ' '
}

stop() {
  local name=$1 dir
  dir=$(data "$name")
  [ -s "$dir/PG_VERSION" ] || return 0
  local list
  list=$(pids "$name")
  [ -n "$list" ] || return 0
  kill -CONT $list 2>/dev/null || true  # a frozen server hears no stop request
  as_owner "$bindir/pg_ctl" -D "$dir" -m fast -w -t 20 stop >/dev/null 2>&1 \
    || as_owner "$bindir/pg_ctl" -D "$dir" -m immediate -w -t 20 stop >/dev/null 2>&1 || true
  list=$(pids "$name")
  if [ -n "$list" ]; then
    kill -KILL $list 2>/dev/null || true
  fi
}

url() {  # the multi-host URL csserver is given: the first read-write server of these, in order
  local hosts="" name
  for name in "$@"; do
    hosts="$hosts${hosts:+,}$(cat "$base/$name/address"):$(cat "$base/$name/port")"
  done
  printf 'postgresql://%s:%s@%s/%s?target_session_attrs=read-write\n' "$role" "$(password "$role")" "$hosts" "$db"
}

remember() { echo "$2" >"$base/$1/address"; echo "$3" >"$base/$1/port"; }

case "${1:-}" in
  primary) [ $# -eq 5 ] || die "usage: primary NAME ADDRESS PORT STANDBY"; primary "$2" "$3" "$4" "$5"; remember "$2" "$3" "$4" ;;
  standby) [ $# -eq 6 ] || die "usage: standby NAME ADDRESS PORT PRIMARY_ADDRESS PRIMARY_PORT"
           standby "$2" "$3" "$4" "$5" "$6"; remember "$2" "$3" "$4" ;;
  promote) as_owner "$bindir/pg_ctl" -D "$(data "$2")" -w -t 30 promote >/dev/null ;;
  pids) pids "$2" ;;
  stop) shift; for name in "$@"; do stop "$name"; done ;;
  url) shift; url "$@" ;;
  *) echo "usage: $0 primary|standby|promote|pids|stop|url ..." >&2; exit 2 ;;
esac
