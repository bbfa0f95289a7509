#!/usr/bin/env bash
# CPU time (user + system, from /proc/<pid>/stat) per 1,000 queries of
# pgbench -S through four proxies in front of the same database, side by
# side: the tokio forwarder floor (benches/tokio_floor.rs, time driver on),
# the io_uring forwarder floor (benches/uring_floor.rs, feature
# uring-floor), PgBouncer (transaction pooling, pool 20) and pg-router
# (`dev --shards 1`, WORKERS session workers, default 1), and pgbench
# straight to the database ("direct", no proxy CPU to count). Unlike
# callgrind_fast_path.sh this counts the kernel's work too. MODE (default
# simple) is pgbench's -M; with MODE=prepared the PgBouncer row is left
# out (transaction pooling in PgBouncer 1.18 cannot run protocol-level
# prepared statements).
#
# Usage: [MODE=simple|extended|prepared] benches/floor_cpu.sh [clients] [seconds] [rounds]
# Needs: a release build, pgbench, pgbouncer; run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/pgbouncer.sh

CLIENTS=${1:-8}
SECS=${2:-10}
ROUNDS=${3:-2}
PORT=${PORT:-16460}
WORKERS=${WORKERS:-1}
MODE=${MODE:-simple}
BIN=${BIN:-target/release/pg-router}
PGBIN=$(dirname "$(readlink -f "$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl | tail -1)")")
command -v pgbouncer >/dev/null || { echo "install pgbouncer" >&2; exit 1; }
TOKIO=$(cargo bench --bench tokio_floor --no-run 2>&1 | grep -o 'target/release/deps/tokio_floor-[0-9a-f]*' | head -1)
URING=$(cargo bench --features uring-floor --bench uring_floor --no-run 2>&1 | grep -o 'target/release/deps/uring_floor-[0-9a-f]*' | head -1)

WORK=$(mktemp -d /tmp/pgr-floor.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  [ -n "${BOUNCER_PID:-}" ] && kill "$BOUNCER_PID" 2>/dev/null || true
  [ -n "${RPID:-}" ] && kill -TERM "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" dev --shards 1 --port "$PORT" --workers "$WORKERS" --data-dir "$WORK/data" >"$WORK/router.log" 2>&1 &
RPID=$!
for _ in $(seq 1 150); do grep -q "is ready" "$WORK/router.log" && break; sleep 0.2; done
grep -q "is ready" "$WORK/router.log" || { cat "$WORK/router.log"; exit 1; }
SHARD0=$(grep -o 'shard0: 127.0.0.1:[0-9]*' "$WORK/router.log" | cut -d: -f3)
"$PGBIN/pgbench" -i -s 10 -q -h 127.0.0.1 -p "$PORT" -U postgres postgres >/dev/null 2>&1
"$TOKIO" $((PORT + 1)) "$SHARD0" time >"$WORK/tokio.log" 2>&1 &
PIDS+=($!)
"$URING" $((PORT + 2)) "$SHARD0" >"$WORK/uring.log" 2>&1 &
PIDS+=($!)
pgbouncer_config "$WORK/bouncer" $((PORT + 3)) "$SHARD0" $((CLIENTS + 100))
start_pgbouncer "$WORK/bouncer"

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
ROWS=("direct:$SHARD0:" "tokio floor:$((PORT + 1)):${PIDS[0]}" "io_uring floor:$((PORT + 2)):${PIDS[1]}")
[ "$MODE" = prepared ] || ROWS+=("pgbouncer:$((PORT + 3)):$BOUNCER_PID")
ROWS+=("pg-router:$PORT:$RPID")
echo "== pgbench -S -M $MODE -c $CLIENTS -j 2 -T $SECS, $ROUNDS rounds, $(nproc) CPUs, pg-router --workers $WORKERS"
echo "| proxy | round | tps | CPU s / 1000 queries |"
echo "|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
  for t in "${ROWS[@]}"; do
    IFS=: read -r name port pid <<<"$t"
    a=0; [ -z "$pid" ] || a=$(ticks "$pid")
    out=$("$PGBIN/pgbench" -S -M "$MODE" -n -c "$CLIENTS" -j 2 -T "$SECS" -h 127.0.0.1 -p "$port" -U postgres postgres 2>&1)
    b=0; [ -z "$pid" ] || b=$(ticks "$pid")
    tx=$(echo "$out" | awk -F': ' '/actually processed/ {split($2,x,"/"); print x[1]}')
    tps=$(echo "$out" | awk '/^tps/ {printf "%.0f", $3}')
    printf "| %s | %s | %s | %s |\n" "$name" "$r" "$tps" \
      "$(awk -v a="$a" -v b="$b" -v hz="$(getconf CLK_TCK)" -v n="$tx" 'BEGIN {printf "%.4f", (b-a)/hz/(n/1000)}')"
  done
done
