#!/usr/bin/env bash
# pgbench -S (or TXN=-N: the simple-update transaction) side by side, same
# machine, same run:
#   direct      pgbench straight to PostgreSQL (the 1-shard cluster's shard0)
#   pgbouncer   PgBouncer in transaction pooling mode in front of that database
#   pg-router/1 pg-router in front of that same database (a 1-shard cluster):
#               the like-for-like comparison with PgBouncer
#   pg-router/2 pg-router in front of a 2-shard cluster (rows split by aid)
# For each run it prints tps and, for the proxies, their CPU seconds (user +
# system, from /proc/<pid>/stat) per 1,000 queries. Output is a Markdown
# table (docs/benchmarks.md).
#
# Usage: benches/pgbench_compare.sh [scale] [clients] [seconds] [rounds]
# Needs: a release build (cargo build --release), pgbench, pgbouncer
# (apt-get install pgbouncer). Run as root: PostgreSQL and PgBouncer run as
# the postgres user. Everything listens on 127.0.0.1 and is stopped at the end.
# WORKERS=<n> sets the router's session workers (default: one per CPU).
# BIN=<path> runs another pg-router binary (default target/release/pg-router).
# TXN=<pgbench flag> picks the built-in script: -S (default, select-only) or
# -N (simple-update: BEGIN, UPDATE, SELECT, INSERT, END on one shard).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/pgbouncer.sh

SCALE=${1:-10}
CLIENTS=${2:-8}
SECS=${3:-20}
ROUNDS=${4:-2}
R1_PORT=${R1_PORT:-16431}
R2_PORT=${R2_PORT:-16432}
BOUNCER_PORT=${BOUNCER_PORT:-16433}
WORKERS=${WORKERS:-0}
TXN=${TXN:--S}
UNIT=queries
[ "$TXN" = -S ] || UNIT=transactions
BIN=${BIN:-target/release/pg-router}
PGBIN=$(dirname "$(readlink -f "$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl | tail -1)")")
PGBENCH=$PGBIN/pgbench
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v pgbouncer >/dev/null || { echo "install pgbouncer: apt-get install pgbouncer" >&2; exit 1; }

WORK=$(mktemp -d /tmp/pgr-bench.XXXXXX)
chmod 755 "$WORK"
cleanup() {
  # The routers' warnings and errors (e.g. a shard marked down) explain a
  # failed row.
  sed 's/\x1b\[[0-9;]*m//g' "$WORK"/router*.log 2>/dev/null | grep -E " (WARN|ERROR) " | head -20 >&2 || true
  [ -n "${BOUNCER_PID:-}" ] && kill "$BOUNCER_PID" 2>/dev/null || true
  for p in ${R1_PID:-} ${R2_PID:-}; do kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

start_router() { # shards port -> sets LAST_PID, log in $WORK/router<shards>.log
  local log=$WORK/router$1.log
  "$BIN" dev --shards "$1" --port "$2" --workers "$WORKERS" --data-dir "$WORK/data$1" >"$log" 2>&1 &
  LAST_PID=$!
  for _ in $(seq 1 150); do grep -q "is ready" "$log" && break; sleep 0.2; done
  grep -q "is ready" "$log" || { cat "$log"; exit 1; }
  echo "== pgbench -i -s $SCALE through pg-router ($1 shard(s))"
  /usr/bin/time -f "init wall %e s" "$PGBENCH" -i -s "$SCALE" -q -h 127.0.0.1 -p "$2" -U postgres postgres 2>&1 | tail -1
}
start_router 1 "$R1_PORT"
R1_PID=$LAST_PID
SHARD0_PORT=$(grep -o 'shard0: 127.0.0.1:[0-9]*' "$WORK/router1.log" | cut -d: -f3)
start_router 2 "$R2_PORT"
R2_PID=$LAST_PID

B=$WORK/bouncer
pgbouncer_config "$B" "$BOUNCER_PORT" "$SHARD0_PORT"
start_pgbouncer "$B"

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# Runs pgbench $TXN; prints a table row with tps and, when a pid is given, that
# process's CPU seconds per 1,000 queries.
run() { # name port mode [pid]
  local t0=0 out tps tx cpu="-"
  [ -n "${4:-}" ] && t0=$(cpu_ticks "$4")
  if ! out=$("$PGBENCH" "$TXN" -n -M "$3" -c "$CLIENTS" -j 2 -T "$SECS" -h 127.0.0.1 -p "$2" -U postgres postgres 2>&1); then
    printf "| %s | %s | failed: %s | - |\n" "$1" "$3" "$(echo "$out" | grep -m1 -i error | cut -c1-90)"
    return 0
  fi
  tps=$(echo "$out" | awk '/^tps/ {printf "%.0f", $3}')
  if [ -n "${4:-}" ]; then
    tx=$(echo "$out" | awk -F': ' '/actually processed/ {split($2,a,"/"); print a[1]}')
    cpu=$(awk -v a="$t0" -v b="$(cpu_ticks "$4")" -v hz="$(getconf CLK_TCK)" -v n="$tx" 'BEGIN {printf "%.4f", (b-a)/hz/(n/1000)}')
  fi
  printf "| %s | %s | %s | %s |\n" "$1" "$3" "$tps" "$cpu"
}

echo "== pgbench $TXN -c $CLIENTS -j 2 -T $SECS, $ROUNDS rounds, $(nproc) CPUs"
echo "| target | mode | tps | proxy CPU s / 1000 $UNIT |"
echo "|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
  for mode in simple extended prepared; do
    run direct "$SHARD0_PORT" "$mode"
    run pgbouncer "$BOUNCER_PORT" "$mode" "$BOUNCER_PID"
    run pg-router/1 "$R1_PORT" "$mode" "$R1_PID"
    run pg-router/2 "$R2_PORT" "$mode" "$R2_PID"
  done
done
