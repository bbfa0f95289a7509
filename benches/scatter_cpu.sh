#!/usr/bin/env bash
# Router CPU per query of a scatter-gather ORDER BY ... LIMIT 10 over 2
# shards against the single-shard fast path, in the same router process
# and the same run (issue 19's "scatter CPU <= 2x the fast path"). The
# router runs `dev --shards 2` (WORKERS session workers, default 1); each
# round runs pgbench -S (one shard per query: the fast path) and then
# benches/scatter_limit.sql (`SELECT aid, abalance FROM pgbench_accounts
# WHERE aid >= :aid ORDER BY aid LIMIT 10`: both shards, a merge of 2 x 10
# sorted rows), and prints tps and the router's user + system CPU seconds
# (/proc/<pid>/stat) per 1,000 queries, kernel work included.
#
# SCATTER=<file> runs that pgbench script as the scatter instead, e.g.
# benches/scatter_string.sql (the same query with a string literal).
#
# Usage: benches/scatter_cpu.sh [clients] [seconds] [rounds] [mode]
#   mode  pgbench -M: simple (default), extended or prepared
# Needs: a release build, pgbench; run as root (PostgreSQL runs as postgres).
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${1:-8}
SECS=${2:-10}
ROUNDS=${3:-2}
MODE=${4:-simple}
PORT=${PORT:-16470}
WORKERS=${WORKERS:-1}
SCATTER=${SCATTER:-benches/scatter_limit.sql}
BIN=${BIN:-target/release/pg-router}
PGBIN=$(dirname "$(readlink -f "$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl | tail -1)")")
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }

WORK=$(mktemp -d /tmp/pgr-scatter-cpu.XXXXXX)
chmod 755 "$WORK"
cleanup() {
  [ -n "${RPID:-}" ] && kill -TERM "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" dev --shards 2 --port "$PORT" --workers "$WORKERS" --data-dir "$WORK/data" >"$WORK/router.log" 2>&1 &
RPID=$!
for _ in $(seq 1 150); do grep -q "is ready" "$WORK/router.log" && break; sleep 0.2; done
grep -q "is ready" "$WORK/router.log" || { cat "$WORK/router.log"; exit 1; }
"$PGBIN/pgbench" -i -s 10 -q -h 127.0.0.1 -p "$PORT" -U postgres postgres >/dev/null 2>&1

ticks() { awk '{print $14+$15}' "/proc/$RPID/stat"; }
echo "== pg-router over 2 shards, --workers $WORKERS, pgbench -M $MODE -c $CLIENTS -j 2 -T $SECS, $ROUNDS rounds, $(nproc) CPUs"
echo "| round | query | tps | router CPU s / 1000 queries |"
echo "|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
  fast=
  for w in "fast path (-S):-S" "scatter ORDER BY LIMIT 10:-f $SCATTER"; do
    IFS=: read -r name args <<<"$w"
    a=$(ticks)
    # shellcheck disable=SC2086
    out=$("$PGBIN/pgbench" $args -n -M "$MODE" -c "$CLIENTS" -j 2 -T "$SECS" -h 127.0.0.1 -p "$PORT" -U postgres postgres 2>&1)
    b=$(ticks)
    tx=$(echo "$out" | awk -F': ' '/actually processed/ {split($2,a,"/"); print a[1]}')
    tps=$(echo "$out" | awk '/^tps/ {printf "%.0f", $3}')
    cpu=$(awk -v a="$a" -v b="$b" -v hz="$(getconf CLK_TCK)" -v n="$tx" 'BEGIN {printf "%.4f", (b-a)/hz/(n/1000)}')
    ratio=
    [ -n "$fast" ] && ratio=$(awk -v s="$cpu" -v f="$fast" 'BEGIN {printf " (%.2fx the fast path)", s/f}')
    [ -z "$fast" ] && fast=$cpu
    printf "| %s | %s | %s | %s%s |\n" "$r" "$name" "$tps" "$cpu" "$ratio"
  done
done
