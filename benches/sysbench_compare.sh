#!/usr/bin/env bash
# sysbench OLTP workloads with their default options (auto-increment ids,
# --tables=4) side by side, same machine, same run:
#   direct      sysbench straight to PostgreSQL (database sbdirect on the
#               1-shard cluster's shard0)
#   pg-router/1 pg-router in front of a 1-shard cluster
#   pg-router/2 pg-router in front of a 2-shard cluster (rows split by id)
# Through the router the one extra step is a keyspace rule sharding new
# tables by their id column, before `prepare` (`pg-router meta
# add-table-rule --column id`). Each target
# runs prepare, every workload for SECS seconds, and cleanup. Output is a
# Markdown table (docs/benchmarks.md): tps, p95 latency (ms), errors
# (sysbench's "ignored errors": deadlocks and serialization failures it
# retries), and whether prepare/run/cleanup succeeded.
#
# Usage: benches/sysbench_compare.sh [table_size] [threads] [seconds]
# Needs: a release build (cargo build --release, or BIN=<path>), sysbench
# (apt-get install sysbench). Run as root: PostgreSQL runs as the postgres
# user. Everything listens on 127.0.0.1 and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${1:-10000}
THREADS=${2:-4}
SECS=${3:-15}
R1_PORT=${R1_PORT:-16441}
R2_PORT=${R2_PORT:-16442}
BIN=${BIN:-target/release/pg-router}
TESTS=${TESTS:-oltp_read_write oltp_read_only oltp_write_only oltp_point_select oltp_insert}
PGBIN=$(dirname "$(readlink -f "$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl | tail -1)")")
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v sysbench >/dev/null || { echo "install sysbench: apt-get install sysbench" >&2; exit 1; }

WORK=$(mktemp -d /tmp/pgr-sysbench.XXXXXX)
chmod 755 "$WORK"
cleanup() {
  for p in ${R1_PID:-} ${R2_PID:-}; do kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

start_router() { # shards port -> sets LAST_PID, log in $WORK/router<shards>.log
  local log=$WORK/router$1.log
  "$BIN" dev --shards "$1" --port "$2" --data-dir "$WORK/data$1" >"$log" 2>&1 &
  LAST_PID=$!
  for _ in $(seq 1 150); do grep -q "is ready" "$log" && break; sleep 0.2; done
  grep -q "is ready" "$log" || { cat "$log"; exit 1; }
  local catalog
  catalog=$(sed -n 's/^ *catalog: //p' "$log" | head -1)
  "$BIN" meta --catalog "$catalog" add-table-rule --column id >/dev/null
  sleep 1.5 # the router picks catalog changes up within a second
}
start_router 1 "$R1_PORT"
R1_PID=$LAST_PID
SHARD0_PORT=$(grep -o 'shard0: 127.0.0.1:[0-9]*' "$WORK/router1.log" | cut -d: -f3)
"$PGBIN/psql" -q -h 127.0.0.1 -p "$SHARD0_PORT" -U postgres -d postgres -c "CREATE DATABASE sbdirect" >/dev/null
start_router 2 "$R2_PORT"
R2_PID=$LAST_PID

sb() { # port db args...
  local port=$1 db=$2
  shift 2
  sysbench --db-driver=pgsql --pgsql-host=127.0.0.1 --pgsql-port="$port" --pgsql-user=postgres \
    --pgsql-db="$db" --tables=4 --table-size="$SIZE" "$@"
}

# The first error line of sysbench's output (none is not an error here:
# under `set -e -o pipefail` a grep that finds nothing would end the script
# and drop the rest of the table).
first_error() {
  echo "$1" | grep -m1 -iE 'error|fatal' | cut -c1-100 || true
}

target() { # name port db
  local name=$1 port=$2 db=$3 out status
  if ! out=$(sb "$port" "$db" oltp_read_write prepare 2>&1); then
    printf "| %s | prepare | failed: %s | | | |\n" "$name" "$(first_error "$out")"
    return 0
  fi
  for t in $TESTS; do
    if out=$(sb "$port" "$db" --threads="$THREADS" --time="$SECS" --report-interval=0 "$t" run 2>&1); then
      status=ok
    else
      status="failed: $(first_error "$out")"
    fi
    printf "| %s | %s | %s | %s | %s | %s |\n" "$name" "$t" \
      "$(echo "$out" | awk '/transactions:/ {gsub(/\(/, "", $3); printf "%.0f", $3}')" \
      "$(echo "$out" | awk '/95th percentile:/ {print $3}')" \
      "$(echo "$out" | awk '/ignored errors:/ {print $3}')" "$status"
  done
  if out=$(sb "$port" "$db" oltp_read_write cleanup 2>&1); then status=ok; else status="failed"; fi
  printf "| %s | cleanup | | | | %s |\n" "$name" "$status"
}

echo "== sysbench (default options, --tables=4 --table-size=$SIZE) --threads=$THREADS --time=$SECS, $(nproc) CPUs"
echo "| target | workload | tps | p95 ms | ignored errors | status |"
echo "|---|---|---|---|---|---|"
target direct "$SHARD0_PORT" sbdirect
target pg-router/1 "$R1_PORT" postgres
target pg-router/2 "$R2_PORT" postgres
