#!/usr/bin/env bash
# User-space instructions per query of the router on the single-shard fast
# path, counted by valgrind's callgrind (repeatable on a noisy machine, unlike
# times). The router runs `dev` with one shard and one session worker under
# callgrind; pgbench -S warms it up, the counters are zeroed
# (callgrind_control -z), pgbench -S -t QUERIES runs with CLIENTS clients (default 1), and the
# counters are dumped (callgrind_control -d). Instructions of every router
# thread (session worker, control runtime, health checker) are counted;
# PostgreSQL runs outside valgrind.
#
# Usage: benches/callgrind_fast_path.sh [queries] [mode] [binary...]
#   queries  pgbench transactions (one SELECT each), default 2000
#   mode     pgbench -M: simple (default), extended or prepared
#   binary   pg-router binaries to compare, default target/release/pg-router
# SHARDS=<n> runs the router over n shards (default 1); CLIENTS=<n> runs
# n pgbench clients (default 1; each runs `queries` transactions).
# SCRIPT=<file> runs that pgbench script (-f, one statement per
# transaction) instead of the built-in -S, e.g. a scatter-gather query.
# Prints one Markdown table row per binary (instructions per query), each
# followed by its top functions by self cost (callgrind_annotate). When
# pgbouncer is installed (BOUNCER=0 skips it) and the mode is not prepared,
# a last row measures PgBouncer (transaction pooling, single-threaded) the
# same way in front of the same shard0 (the router runs plainly to keep the
# shard up; only PgBouncer is under callgrind).
# FLOOR=1 adds rows for benches/tokio_floor.rs (built here with cargo
# bench --no-run): a plain TCP forwarder on a current-thread tokio runtime
# in front of the same shard0, with and without tokio's time driver, the
# floor of any proxy built on tokio; and for benches/uring_floor.rs, the
# same forwarder on one io_uring ring (feature uring-floor).
# Needs: valgrind, pgbench; run as root (PostgreSQL runs as postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/pgbouncer.sh

QUERIES=${1:-2000}
MODE=${2:-simple}
shift $(( $# > 2 ? 2 : $# ))
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=(target/release/pg-router)
PORT=${PORT:-16451}
SHARDS=${SHARDS:-1}
CLIENTS=${CLIENTS:-1}
WORKLOAD=(-S)
[ -z "${SCRIPT:-}" ] || WORKLOAD=(-f "$(readlink -f "$SCRIPT")")
PGBIN=$(dirname "$(readlink -f "$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl | tail -1)")")
PGBENCH=$PGBIN/pgbench
command -v valgrind >/dev/null || { echo "install valgrind" >&2; exit 1; }

WORK=$(mktemp -d /tmp/pgr-callgrind.XXXXXX)
chmod 755 "$WORK"
cleanup() {
  [ -n "${RPID:-}" ] && kill -TERM "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

wait_ready() { # log seconds
  for _ in $(seq 1 $(( $2 * 5 ))); do grep -q "is ready" "$1" && return 0; sleep 0.2; done
  cat "$1"; exit 1
}

# measure PID PORT [PREFIX...]: the warm-up, zeroing the counters, the
# measured run and the dump, for the process PID listening on PORT (PREFIX
# runs callgrind_control, e.g. as another user).
measure() {
  local pid=$1 port=$2
  shift 2
  "$PGBENCH" "${WORKLOAD[@]}" -n -M "$MODE" -c "$CLIENTS" -t 200 -h 127.0.0.1 -p "$port" -U postgres postgres >/dev/null 2>&1
  "$@" callgrind_control -z "$pid" >/dev/null 2>&1
  "$PGBENCH" "${WORKLOAD[@]}" -n -M "$MODE" -c "$CLIENTS" -t "$QUERIES" -h 127.0.0.1 -p "$port" -U postgres postgres >/dev/null 2>&1
  "$@" callgrind_control -d "$pid" >/dev/null 2>&1
}

# per_query DUMP: user-space instructions per query in callgrind dump DUMP.
per_query() {
  local ir
  ir=$(grep -m1 '^summary:' "$1" | awk '{print $2}')
  awk -v i="$ir" -v n="$(( QUERIES * CLIENTS ))" 'BEGIN {printf "%.0f", i/n}'
}

# The cluster and pgbench tables, made once without valgrind and kept in
# --data-dir for every measured run.
"${BINS[0]}" dev --shards "$SHARDS" --port "$PORT" --workers 1 --data-dir "$WORK/data" >"$WORK/init.log" 2>&1 &
RPID=$!
wait_ready "$WORK/init.log" 60
"$PGBENCH" -i -s 1 -q -h 127.0.0.1 -p "$PORT" -U postgres postgres >/dev/null 2>&1
kill -TERM "$RPID"; wait "$RPID" 2>/dev/null || true; RPID=

echo "== callgrind: pgbench ${WORKLOAD[*]} -M $MODE -c $CLIENTS -t $QUERIES, $SHARDS shard(s), one session worker"
echo "| binary | instructions / query |"
echo "|---|---|"
for bin in "${BINS[@]}"; do
  out=$WORK/callgrind.out
  valgrind --tool=callgrind --callgrind-out-file="$out.%p" "$bin" dev --shards "$SHARDS" --port "$PORT" \
    --workers 1 --data-dir "$WORK/data" >"$WORK/run.log" 2>&1 &
  RPID=$!
  wait_ready "$WORK/run.log" 300
  measure "$RPID" "$PORT"
  # The dump made by -d (after -z): part 1 of this process's output.
  dump=$out.$RPID.1
  kill -TERM "$RPID"; wait "$RPID" 2>/dev/null || true; RPID=
  [ -s "$dump" ] || { echo "no callgrind dump $dump" >&2; ls "$WORK" >&2; exit 1; }
  printf "| %s | %s |\n" "$bin" "$(per_query "$dump")"
  callgrind_annotate --inclusive=no --threshold=100 --auto=no "$dump" 2>/dev/null \
    | sed -n '/file:function/,$p' | sed -n '3,$p' \
    | grep -Ev 'clone\.S|pthread_create|thread_start|vtable\.shim|__rust_begin_short_backtrace' \
    | head -12 > "$WORK/top.txt" || true
  sed 's/^/    /' "$WORK/top.txt"
  [ -n "${KEEP:-}" ] || rm -f "$out".*
done

# PgBouncer in front of the same shard0, under callgrind.
if command -v pgbouncer >/dev/null && [ "${BOUNCER:-1}" = 1 ] && [ "$MODE" != prepared ] && [ "$SHARDS" = 1 ]; then
  "${BINS[0]}" dev --shards 1 --port "$PORT" --workers 1 --data-dir "$WORK/data" >"$WORK/plain.log" 2>&1 &
  RPID=$!
  wait_ready "$WORK/plain.log" 60
  SHARD0_PORT=$(grep -o 'shard0: 127.0.0.1:[0-9]*' "$WORK/plain.log" | cut -d: -f3)
  B=$WORK/bouncer
  BPORT=$((PORT + 1))
  pgbouncer_config "$B" "$BPORT" "$SHARD0_PORT"
  runuser -u postgres -- valgrind --tool=callgrind --callgrind-out-file="$B/callgrind.out.%p" \
    pgbouncer "$B/pgbouncer.ini" >"$B/valgrind.log" 2>&1 &
  BPID=
  for _ in $(seq 1 100); do
    BPID=$(pgrep -u postgres -f "callgrind.*pgbouncer" | head -1 || true)
    [ -n "$BPID" ] && "$PGBENCH" -S -n -M "$MODE" -c 1 -t 1 -h 127.0.0.1 -p "$BPORT" -U postgres postgres >/dev/null 2>&1 && break
    sleep 0.2
  done
  # vgdb reaches a process of its own user only.
  measure "$BPID" "$BPORT" runuser -u postgres --
  kill -INT "$BPID" 2>/dev/null || true
  sleep 1
  dump=$B/callgrind.out.$BPID.1
  [ -s "$dump" ] || { echo "no callgrind dump $dump" >&2; ls "$B" >&2; exit 1; }
  printf "| pgbouncer %s | %s |\n" "$(pgbouncer --version | head -1 | awk '{print $2}')" "$(per_query "$dump")"
  callgrind_annotate --inclusive=no --threshold=100 --auto=no "$dump" 2>/dev/null \
    | sed -n '/file:function/,$p' | sed -n '3,$p' | head -12 | sed 's/^/    /' || true
  kill -TERM "$RPID"; wait "$RPID" 2>/dev/null || true; RPID=
fi

# floor_row LABEL SIGNAL BIN [ARG]: a floor forwarder BIN under callgrind
# on FPORT in front of shard0 (BIN FPORT SHARD0_PORT ARG), measured like
# the router; prints its row. SIGNAL stops it (the io_uring one ignores
# SIGTERM inside io_uring_enter under valgrind; its dump is written by
# then).
floor_row() {
  local label=$1 sig=$2 bin=$3
  shift 3
  valgrind --tool=callgrind --callgrind-out-file="$WORK/floor.out.%p" "$bin" "$FPORT" "$SHARD0_PORT" "$@" \
    >"$WORK/floor.log" 2>&1 &
  FPID=$!
  wait_ready "$WORK/floor.log" 60
  measure "$FPID" "$FPORT"
  kill -"$sig" "$FPID"; wait "$FPID" 2>/dev/null || true
  local dump=$WORK/floor.out.$FPID.1
  [ -s "$dump" ] || { echo "no callgrind dump $dump" >&2; cat "$WORK/floor.log" >&2; exit 1; }
  printf "| %s | %s |\n" "$label" "$(per_query "$dump")"
  callgrind_annotate --inclusive=no --threshold=100 --auto=no "$dump" 2>/dev/null \
    | sed -n '/file:function/,$p' | sed -n '3,$p' \
    | grep -Ev '\((100\.0|[5-9][0-9]\.[0-9]+)%\)' | head -8 | sed 's/^/    /' || true
}

# The floors: plain forwarders in front of the same shard0.
if [ "${FLOOR:-0}" = 1 ]; then
  FLOOR_BIN=$(cargo bench --bench tokio_floor --no-run 2>&1 | grep -o 'target/release/deps/tokio_floor-[0-9a-f]*' | head -1)
  [ -x "$FLOOR_BIN" ] || { echo "could not build benches/tokio_floor.rs" >&2; exit 1; }
  URING_BIN=$(cargo bench --features uring-floor --bench uring_floor --no-run 2>&1 | grep -o 'target/release/deps/uring_floor-[0-9a-f]*' | head -1)
  "${BINS[0]}" dev --shards 1 --port "$PORT" --workers 1 --data-dir "$WORK/data" >"$WORK/plain.log" 2>&1 &
  RPID=$!
  wait_ready "$WORK/plain.log" 60
  SHARD0_PORT=$(grep -o 'shard0: 127.0.0.1:[0-9]*' "$WORK/plain.log" | cut -d: -f3)
  FPORT=$((PORT + 2))
  floor_row "tokio floor (time driver: on)" TERM "$FLOOR_BIN" time
  floor_row "tokio floor (time driver: off)" TERM "$FLOOR_BIN" none
  if [ -x "$URING_BIN" ]; then
    floor_row "io_uring floor" KILL "$URING_BIN"
  fi
  kill -TERM "$RPID"; wait "$RPID" 2>/dev/null || true; RPID=
fi
