#!/usr/bin/env bash
# Compare pgbench throughput direct to one PostgreSQL shard, through PgBouncer
# (transaction pooling) and through pg-router, on the same machine in the same
# run. Also reports router CPU seconds per 1,000 queries.
#
# Usage: benches/pgbench_compare.sh [scale] [clients] [seconds] [rounds]
# Needs: a release build (cargo build --release), pgbench, pgbouncer
# (apt-get install pgbouncer). Runs as root: PostgreSQL and PgBouncer run as
# the postgres user. Everything listens on 127.0.0.1 only and is stopped at
# the end.
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${1:-10}
CLIENTS=${2:-8}
SECS=${3:-20}
ROUNDS=${4:-2}
ROUTER_PORT=${ROUTER_PORT:-16432}
BOUNCER_PORT=${BOUNCER_PORT:-16433}
BIN=target/release/pg-router
PGBIN=$(dirname "$(readlink -f "$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl | tail -1)")")
PGBENCH=$PGBIN/pgbench
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v pgbouncer >/dev/null || { echo "install pgbouncer: apt-get install pgbouncer" >&2; exit 1; }

WORK=$(mktemp -d /tmp/pgr-bench.XXXXXX)
chmod 755 "$WORK"
LOG=$WORK/router.log
cleanup() {
  [ -n "${BOUNCER_PID:-}" ] && kill "$BOUNCER_PID" 2>/dev/null || true
  [ -n "${ROUTER_PID:-}" ] && kill -TERM "$ROUTER_PID" 2>/dev/null && wait "$ROUTER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" dev --shards 2 --port "$ROUTER_PORT" --data-dir "$WORK/data" >"$LOG" 2>&1 &
ROUTER_PID=$!
for _ in $(seq 1 100); do grep -q "is ready" "$LOG" && break; sleep 0.2; done
grep -q "is ready" "$LOG" || { cat "$LOG"; exit 1; }
SHARD0_PORT=$(grep -o 'shard0: 127.0.0.1:[0-9]*' "$LOG" | cut -d: -f3)

echo "== init: pgbench -i -s $SCALE through pg-router (rows split over 2 shards)"
/usr/bin/time -f "init wall %e s" "$PGBENCH" -i -s "$SCALE" -q -h 127.0.0.1 -p "$ROUTER_PORT" -U postgres postgres 2>&1 | tail -2
# Direct and PgBouncer runs use one PostgreSQL holding all rows: database
# "direct" on shard0's instance.
"$PGBIN/psql" -X -q -h 127.0.0.1 -p "$SHARD0_PORT" -U postgres -c "CREATE DATABASE direct" postgres
"$PGBENCH" -i -s "$SCALE" -q -h 127.0.0.1 -p "$SHARD0_PORT" -U postgres direct >/dev/null 2>&1

B=$WORK/bouncer
mkdir -p "$B"
cat >"$B/pgbouncer.ini" <<INI
[databases]
direct = host=127.0.0.1 port=$SHARD0_PORT dbname=direct user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
auth_type = trust
auth_file = $B/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 200
logfile = $B/pgbouncer.log
pidfile = $B/pgbouncer.pid
INI
echo '"postgres" ""' >"$B/userlist.txt"
chown -R postgres "$B"
runuser -u postgres -- pgbouncer "$B/pgbouncer.ini" >/dev/null 2>&1 &
BOUNCER_PID=$!
sleep 1

run() { # name port mode
  "$PGBENCH" -S -n -M "$3" -c "$CLIENTS" -j 2 -T "$SECS" -h 127.0.0.1 -p "$2" -U postgres direct 2>&1 |
    awk -v n="$1" -v m="$3" '/^tps/ {printf "%-10s %-8s %s\n", n, m, $3}'
}
cpu_ticks() { awk '{print $14+$15}' "/proc/$ROUTER_PID/stat"; }

echo "== pgbench -S, $CLIENTS clients, 2 threads, $SECS s per run, $ROUNDS rounds (tps)"
for r in $(seq 1 "$ROUNDS"); do
  for mode in simple prepared; do
    run direct "$SHARD0_PORT" "$mode"
    run pgbouncer "$BOUNCER_PORT" "$mode"
    t0=$(cpu_ticks)
    out=$("$PGBENCH" -S -n -M "$mode" -c "$CLIENTS" -j 2 -T "$SECS" -h 127.0.0.1 -p "$ROUTER_PORT" -U postgres postgres 2>&1) ||
      { echo "pg-router $mode run failed:"; echo "$out" | tail -5; tail -5 "$LOG"; continue; }
    t1=$(cpu_ticks)
    tps=$(echo "$out" | awk '/^tps/ {print $3}')
    tx=$(echo "$out" | awk -F': ' '/actually processed/ {split($2,a,"/"); print a[1]}')
    hz=$(getconf CLK_TCK)
    cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v n="$tx" 'BEGIN {printf "%.4f", (b-a)/hz/(n/1000)}')
    printf "%-10s %-8s %s   (router CPU %s s per 1000 queries)\n" pg-router "$mode" "$tps" "$cpu"
  done
done
