#!/usr/bin/env bash
# 1,000 concurrent clients over a pool of 20 connections per shard:
# pg-router dev (SHARDS shards, --pool-size 20) and pgbench -S with CLIENTS
# clients. Prints pgbench's summary per protocol mode, the pools as the
# admin console shows them mid-run (in_use never above 20 per shard), the
# shards' own count of backend connections, and the router's resident
# memory (RSS) with the clients connected. When pgbouncer is installed
# (BOUNCER=0 skips it), PgBouncer 1.x in transaction pooling mode with the
# same pool size (default_pool_size 20) in front of shard0 gets the same
# pgbench runs, and a last table compares the tps side by side (with
# SHARDS=1 both proxies serve the same single database).
#
# Usage: benches/many_clients.sh [clients] [seconds] [scale]
# SHARDS=<n> (default 2), BIN=<pg-router binary> (default
# target/release/pg-router).
# Needs: a release build (cargo build --release), pgbench and psql. Run as
# root (PostgreSQL and PgBouncer run as the postgres user); 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/pgbouncer.sh

CLIENTS=${1:-1000}
SECS=${2:-20}
SCALE=${3:-10}
PORT=${PORT:-16441}
BOUNCER_PORT=${BOUNCER_PORT:-16442}
SHARDS=${SHARDS:-2}
BIN=${BIN:-target/release/pg-router}
PGBIN=$(dirname "$(readlink -f "$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl | tail -1)")")
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
ulimit -n "$(( CLIENTS * 2 + 256 ))" 2>/dev/null || true

WORK=$(mktemp -d /tmp/pgr-many.XXXXXX)
chmod 755 "$WORK"
cleanup() {
  [ -n "${BOUNCER_PID:-}" ] && kill "$BOUNCER_PID" 2>/dev/null || true
  [ -n "${PID:-}" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" dev --shards "$SHARDS" --port "$PORT" --pool-size 20 --data-dir "$WORK/data" >"$WORK/router.log" 2>&1 &
PID=$!
for _ in $(seq 1 150); do grep -q "is ready" "$WORK/router.log" && break; sleep 0.2; done
grep -q "is ready" "$WORK/router.log" || { cat "$WORK/router.log"; exit 1; }
"$PGBIN/pgbench" -i -s "$SCALE" -q -h 127.0.0.1 -p "$PORT" -U postgres postgres >/dev/null 2>&1
SHARD_PORTS=$(grep -o 'shard[0-9]*: 127.0.0.1:[0-9]*' "$WORK/router.log" | cut -d: -f3)
SHARD0_PORT=$(echo "$SHARD_PORTS" | head -1)

admin() { "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d pgrouter -c "$1"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
tps_of() { awk '/^tps/ {printf "%.0f", $3}' "$1"; }

echo "== $CLIENTS clients, pool 20 per shard, $SHARDS shard(s), pgbench -S -T $SECS, $(nproc) CPUs"
echo "router RSS before: $(rss_kib) KiB"
declare -A TPS
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
  TPS[router-$mode]=$(tps_of "$WORK/bench.out")
done

if [ "${BOUNCER:-1}" != 0 ] && command -v pgbouncer >/dev/null; then
  B=$WORK/bouncer
  pgbouncer_config "$B" "$BOUNCER_PORT" "$SHARD0_PORT" $(( CLIENTS + 100 ))
  start_pgbouncer "$B"
  for mode in simple extended; do
    "$PGBIN/pgbench" -S -n -M "$mode" -c "$CLIENTS" -j 2 -T "$SECS" -h 127.0.0.1 -p "$BOUNCER_PORT" -U postgres postgres >"$WORK/bench.out" 2>&1 \
      || { cat "$WORK/bench.out"; exit 1; }
    echo "-- PgBouncer, pgbench -M $mode:"
    grep -E "number of (clients|transactions actually|failed)|latency average|initial connection time|^tps" "$WORK/bench.out"
    TPS[bouncer-$mode]=$(tps_of "$WORK/bench.out")
  done
  echo "| mode | pg-router ($SHARDS shard(s)) tps | PgBouncer (shard0) tps | ratio |"
  echo "|---|---|---|---|"
  for mode in simple extended; do
    printf "| %s | %s | %s | %s |\n" "$mode" "${TPS[router-$mode]}" "${TPS[bouncer-$mode]}" \
      "$(awk -v a="${TPS[router-$mode]}" -v b="${TPS[bouncer-$mode]}" 'BEGIN {printf "%.2f", a/b}')"
  done
fi
