#!/usr/bin/env bash
# TPC-B (pgbench default script) side by side, same machine, same run:
#   direct        pgbench straight to one PostgreSQL (the 1-shard cluster's shard0)
#   pg-router/1   pg-router in front of that same database: every transaction
#                 on one shard, one-phase commit
#   pg-router/2   pg-router over 2 shards: accounts, tellers, branches and
#                 history split by their keys, so most transactions write on
#                 both shards and commit with two-phase commit
#   pg-router/2 -N  the same cluster with pgbench -N (accounts + history by
#                 aid: one shard, one-phase commit)
# Prints tps and mean latency; the 2PC overhead per transaction is
# latency(pg-router/2 TPC-B) - latency(pg-router/1 TPC-B).
#
# Usage: benches/tpcb_compare.sh [scale] [clients] [seconds]
# Needs a release build. The dev clusters run with fsync off (throwaway
# data): the numbers measure round trips and CPU, not disk flushes.
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${1:-10}
CLIENTS=${2:-8}
SECS=${3:-15}
R1_PORT=${R1_PORT:-16441}
R2_PORT=${R2_PORT:-16442}
BIN=target/release/pg-router
PGBIN=$(dirname "$(readlink -f "$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl | tail -1)")")
PGBENCH=$PGBIN/pgbench
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }

WORK=$(mktemp -d /tmp/pgr-tpcb.XXXXXX)
chmod 755 "$WORK"
cleanup() {
  for p in ${R1_PID:-} ${R2_PID:-}; do kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

start_router() { # shards port -> sets LAST_PID
  local log=$WORK/router$1.log
  "$BIN" dev --shards "$1" --port "$2" --data-dir "$WORK/data$1" >"$log" 2>&1 &
  LAST_PID=$!
  for _ in $(seq 1 150); do grep -q "is ready" "$log" && break; sleep 0.2; done
  grep -q "is ready" "$log" || { cat "$log"; exit 1; }
  "$PGBENCH" -i -s "$SCALE" -q -h 127.0.0.1 -p "$2" -U postgres postgres >/dev/null 2>&1
}
start_router 1 "$R1_PORT"
R1_PID=$LAST_PID
SHARD0_PORT=$(grep -o 'shard0: 127.0.0.1:[0-9]*' "$WORK/router1.log" | cut -d: -f3)
start_router 2 "$R2_PORT"
R2_PID=$LAST_PID

run() { # label port extra-args...
  local label=$1 port=$2
  shift 2
  local out
  out=$("$PGBENCH" -n -c "$CLIENTS" -j 2 -T "$SECS" "$@" -h 127.0.0.1 -p "$port" -U postgres postgres 2>&1)
  local tps lat failed
  tps=$(echo "$out" | grep -oP 'tps = \K[0-9.]+' | head -1)
  lat=$(echo "$out" | grep -oP 'latency average = \K[0-9.]+' | head -1)
  failed=$(echo "$out" | grep -oP 'number of failed transactions: \K[0-9]+' | head -1)
  printf '| %s | %s | %s | %s |\n' "$label" "$tps" "$lat" "${failed:-0}"
}
echo "| target (TPC-B, scale $SCALE, $CLIENTS clients, ${SECS}s) | tps | latency avg (ms) | failed |"
echo "|---|---|---|---|"
run "direct (one PostgreSQL)" "$SHARD0_PORT"
run "pg-router/1 (one shard, one-phase)" "$R1_PORT"
run "pg-router/2 (2 shards, 2PC)" "$R2_PORT"
run "pg-router/2 -N (one shard per txn, one-phase)" "$R2_PORT" -N
run "pg-router/2 (2 shards, 2PC), -M prepared" "$R2_PORT" -M prepared
