#!/usr/bin/env bash
# Online resharding under load: a 2-shard pg-router dev cluster with one
# spare shard, `pgbench -i -s SCALE`, then ROUNDS times: split shard0's
# upper half onto the spare and merge it back, each while pgbench TPC-B
# (-c CLIENTS) runs through the router. Prints per cutover: total job time,
# copy time and rows, the write-block window and its breakdown; then the
# window's p50/p99/max, the client latency of the load before and during,
# and plain COPY throughput between the same two instances for comparison.
#
# Usage: benches/split_under_load.sh [scale] [rounds] [clients]
# Needs: a release build (cargo build --release), pgbench, psql. Run as root
# (PostgreSQL runs as the postgres user). Loopback only; all stopped at the
# end. BIN=<path> runs another pg-router binary.
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${1:-10}
ROUNDS=${2:-10}
CLIENTS=${3:-4}
PORT=${PORT:-16441}
BIN=${BIN:-target/release/pg-router}
PGBIN=$(dirname "$(readlink -f "$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl | tail -1)")")
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }

WORK=$(mktemp -d /tmp/pgr-split-bench.XXXXXX)
chmod 755 "$WORK"
cleanup() {
  [ -n "${LOAD_PID:-}" ] && kill "$LOAD_PID" 2>/dev/null || true
  [ -n "${DEV_PID:-}" ] && kill -TERM "$DEV_PID" 2>/dev/null && wait "$DEV_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" dev --shards 2 --spare-shards 1 --port "$PORT" --pool-size 20 >"$WORK/dev.log" 2>&1 &
DEV_PID=$!
for _ in $(seq 1 150); do grep -q "is ready" "$WORK/dev.log" && break; sleep 0.2; done
grep -q "is ready" "$WORK/dev.log" || { cat "$WORK/dev.log"; exit 1; }
CAT=$(grep -o 'catalog: host=.*' "$WORK/dev.log" | head -1 | sed 's/^catalog: //')
port_of() { grep -o "$1: 127.0.0.1:[0-9]*" "$WORK/dev.log" | head -1 | cut -d: -f3; }
S0=$(port_of shard0); S2=$(port_of shard2)
R=(-h 127.0.0.1 -p "$PORT" -U postgres)
"$PGBIN/pgbench" -i -s "$SCALE" -q "${R[@]}" postgres 2>&1 | tail -1
"$PGBIN/psql" -X -q "${R[@]}" -c "ALTER TABLE pgbench_history REPLICA IDENTITY FULL" postgres
split() { "$BIN" split --catalog "$CAT" "$@"; }
q() { "$PGBIN/psql" -X -At -d "$CAT" -c "$1"; }

echo "== load alone (10 s)"
"$PGBIN/pgbench" -n -c "$CLIENTS" -j 2 -T 10 -r "${R[@]}" postgres 2>&1 | grep -E "^tps|latency average|failed"

"$PGBIN/pgbench" -n -c "$CLIENTS" -j 2 -T 100000 -P 10 "${R[@]}" postgres >"$WORK/load.log" 2>&1 &
LOAD_PID=$!
sleep 3
echo "| # | move | job s | rows copied | copy s | window ms | acknowledged ms | caught up ms | routed ms |"
echo "|---|---|---|---|---|---|---|---|---|"
for i in $(seq 1 "$ROUNDS"); do
  for dir in split merge; do
    if [ $dir = split ]; then
      args=(start --keyspace main --source shard0 --target shard2)
    else
      range=$(q "select start_id || '-' || coalesce(end_id::text, '') from pgrouter.shard_ranges r join pgrouter.keyspaces k on k.name = r.keyspace and k.generation = r.generation where r.shard = 'shard2'")
      args=(start --keyspace main --source shard2 --target shard0 --range "$range")
    fi
    t0=$(date +%s.%N)
    split "${args[@]}" >"$WORK/job.out" 2>"$WORK/job.err" || { cat "$WORK/job.err"; exit 1; }
    t1=$(date +%s.%N)
    id=$(q "select max(id) from pgrouter.split_jobs")
    q "select (select sum((v->>'rows_copied')::bigint) from jsonb_each(progress->'copy') e(k, v)),
              round(extract(epoch from (updated_at - created_at))::numeric, 1),
              round(cutover_window_ms::numeric, 1),
              round((progress->'cutover'->>'acknowledged_ms')::numeric, 1),
              round((progress->'cutover'->>'caught_up_ms')::numeric, 1),
              round((progress->'cutover'->>'routed_ms')::numeric, 1)
         from pgrouter.split_jobs where id = $id" >"$WORK/row"
    IFS='|' read -r rows _ w a c r <"$WORK/row"
    copy_s=$(grep -o "copy [0-9.]* s" "$WORK/job.err" | head -1 || true)
    printf '| %s | %s | %.1f | %s | %s | %s | %s | %s | %s |\n' "$id" "$dir" "$(echo "$t1 - $t0" | bc)" "$rows" "${copy_s:--}" "$w" "$a" "$c" "$r"
  done
done
kill "$LOAD_PID"; wait "$LOAD_PID" 2>/dev/null || true; LOAD_PID=
echo "== load during the jobs (pgbench -P 10)"
grep -E "^progress|failed" "$WORK/load.log" | tail -n 40
echo "== window over all cutovers"
q "select count(*), round(percentile_cont(0.5) within group (order by cutover_window_ms)::numeric, 1),
          round(percentile_cont(0.99) within group (order by cutover_window_ms)::numeric, 1),
          round(max(cutover_window_ms)::numeric, 1) from pgrouter.split_jobs where phase = 'completed'" |
  awk -F'|' '{print "cutovers " $1 ", p50 " $2 " ms, p99 " $3 " ms, max " $4 " ms"}'

echo "== plain COPY of pgbench_accounts shard0 -> shard2 (binary, same instances)"
D0=(-h 127.0.0.1 -p "$S0" -U postgres postgres)
D2=(-h 127.0.0.1 -p "$S2" -U postgres postgres)
"$PGBIN/psql" -X -q "${D2[@]}" -c "CREATE TABLE copy_probe (LIKE pgbench_accounts)"
rows=$("$PGBIN/psql" -X -At "${D0[@]}" -c "select count(*) from pgbench_accounts")
t0=$(date +%s.%N)
"$PGBIN/psql" -X -q "${D0[@]}" -c "COPY pgbench_accounts TO STDOUT (FORMAT binary)" |
  "$PGBIN/psql" -X -q "${D2[@]}" -c "COPY copy_probe FROM STDIN (FORMAT binary)"
t1=$(date +%s.%N)
echo "plain COPY: $rows rows in $(echo "$t1 - $t0" | bc) s"
