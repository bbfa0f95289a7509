#!/usr/bin/env bash
# 1,000 concurrent clients over a pool of 20 connections per shard:
# pg-router dev (2 shards, --pool-size 20) and pgbench -S with CLIENTS
# clients. Prints pgbench's summary per protocol mode, the pools as the
# admin console shows them mid-run (in_use never above 20 per shard), the
# shards' own count of backend connections, and the router's resident
# memory (RSS) with the clients connected.
#
# Usage: benches/many_clients.sh [clients] [seconds] [scale]
# Needs: a release build (cargo build --release), pgbench and psql. Run as
# root (PostgreSQL runs as the postgres user); 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${1:-1000}
SECS=${2:-20}
SCALE=${3:-10}
PORT=${PORT:-16441}
BIN=target/release/pg-router
PGBIN=$(dirname "$(readlink -f "$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl | tail -1)")")
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }

WORK=$(mktemp -d /tmp/pgr-many.XXXXXX)
chmod 755 "$WORK"
cleanup() {
  [ -n "${PID:-}" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" dev --shards 2 --port "$PORT" --pool-size 20 --data-dir "$WORK/data" >"$WORK/router.log" 2>&1 &
PID=$!
for _ in $(seq 1 150); do grep -q "is ready" "$WORK/router.log" && break; sleep 0.2; done
grep -q "is ready" "$WORK/router.log" || { cat "$WORK/router.log"; exit 1; }
"$PGBIN/pgbench" -i -s "$SCALE" -q -h 127.0.0.1 -p "$PORT" -U postgres postgres >/dev/null 2>&1
SHARD_PORTS=$(grep -o 'shard[0-9]*: 127.0.0.1:[0-9]*' "$WORK/router.log" | cut -d: -f3)

admin() { "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d pgrouter -c "$1"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }

echo "== $CLIENTS clients, pool 20 per shard, 2 shards, pgbench -S -T $SECS, $(nproc) CPUs"
echo "router RSS before: $(rss_kib) KiB"
for mode in simple extended; do
  "$PGBIN/pgbench" -S -n -M "$mode" -c "$CLIENTS" -j 2 -T "$SECS" -h 127.0.0.1 -p "$PORT" -U postgres postgres >"$WORK/bench.out" 2>&1 &
  BENCH=$!
  sleep $((SECS / 2))
  echo "-- mid-run ($mode): router RSS $(rss_kib) KiB"
  admin "SHOW POOLS"
  for p in $SHARD_PORTS; do
    echo "shard :$p backends from the router: $("$PGBIN/psql" -X -At -h 127.0.0.1 -p "$p" -U postgres -d postgres \
      -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")"
  done
  wait "$BENCH" || { cat "$WORK/bench.out"; exit 1; }
  echo "-- pgbench -M $mode:"
  grep -E "number of (clients|transactions actually|failed)|latency average|initial connection time|^tps" "$WORK/bench.out"
done
