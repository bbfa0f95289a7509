#!/usr/bin/env bash
# Online resharding under load: a 2-shard pg-router dev cluster with one
# spare shard, `pgbench -i -s SCALE`, then ROUNDS times: split shard0's
# upper half onto the spare and merge it back, each while pgbench TPC-B
# (-c CLIENTS) runs through the router. Prints per cutover: total job time,
# copy time and rows, the write-block window and its breakdown; then the
# window's p50/p99/max, the client latency (p50/p99/max) of the load
# before and during, the catch-up lag over time, and plain COPY throughput between the same two instances for comparison.
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
  [ -n "${LAG_PID:-}" ] && kill "$LAG_PID" 2>/dev/null || true
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

# Client latency percentiles (ms) from pgbench transaction logs (-l:
# the third field is the latency in µs).
latency() {
  cat "$@" | awk '{print $3}' | sort -n | awk '{a[NR] = $1}
    END {printf "transactions %d, latency p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
         NR, a[int(NR * 0.5) + 1] / 1000, a[int(NR * 0.99) + 1] / 1000, a[NR] / 1000}'
}

echo "== load alone (10 s)"
"$PGBIN/pgbench" -n -c "$CLIENTS" -j 2 -T 10 -l --log-prefix="$WORK/alone" "${R[@]}" postgres 2>&1 |
  grep -E "^tps|latency average|failed"
latency "$WORK"/alone.*

"$PGBIN/pgbench" -n -c "$CLIENTS" -j 2 -T 100000 -P 10 -l --log-prefix="$WORK/during" "${R[@]}" postgres >"$WORK/load.log" 2>&1 &
LOAD_PID=$!
# Lag over time: the running job's phase and lag, once a second.
( while sleep 1; do
    q "select to_char(now(), 'HH24:MI:SS'), id, phase, lag_bytes from pgrouter.split_jobs
        where phase not in ('completed', 'rolled_back', 'failed') order by id desc limit 1"
  done ) >"$WORK/lag.log" 2>/dev/null &
LAG_PID=$!
sleep 3
echo "| # | move | job s | rows copied of read | copy s | window ms | acknowledged ms | caught up ms | routed ms | to the fence: WAL / source txns / target commits |"
echo "|---|---|---|---|---|---|---|---|---|---|"
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
    q "select (select sum((v->>'rows_copied')::bigint) || ' of ' || sum((v->>'rows_read')::bigint)
                 from jsonb_each(progress->'copy') e(k, v)),
              round(extract(epoch from (updated_at - created_at))::numeric, 1),
              round(cutover_window_ms::numeric, 1),
              round((progress->'cutover'->>'acknowledged_ms')::numeric, 1),
              round((progress->'cutover'->>'caught_up_ms')::numeric, 1),
              round((progress->'cutover'->>'routed_ms')::numeric, 1),
              (progress->'cutover'->'fence'->>'backlog_bytes') || ' B / ' ||
              (progress->'cutover'->'fence'->>'transactions') || ' / ' ||
              (progress->'cutover'->'fence'->>'commits')
         from pgrouter.split_jobs where id = $id" >"$WORK/row"
    IFS='|' read -r rows _ w a c r f <"$WORK/row"
    copy_s=$(grep -o "copy [0-9.]* s" "$WORK/job.err" | head -1 || true)
    printf '| %s | %s | %.1f | %s | %s | %s | %s | %s | %s | %s |\n' "$id" "$dir" "$(echo "$t1 - $t0" | bc)" "$rows" "${copy_s:--}" "$w" "$a" "$c" "$r" "${f:--}"
  done
done
# Plain COPY of the whole of pgbench_accounts shard0 -> spare (binary, the
# same two instances), under the same load as the jobs' copies, then alone;
# into a bare table, and into one with the same primary key (as the job's
# targets after the first round, which keep their tables).
D0=(-h 127.0.0.1 -p "$S0" -U postgres postgres)
D2=(-h 127.0.0.1 -p "$S2" -U postgres postgres)
plain_copy() {
  "$PGBIN/psql" -X -q "${D2[@]}" -c "DROP TABLE IF EXISTS copy_probe; CREATE TABLE copy_probe (LIKE pgbench_accounts ${2:-})"
  local rows t0 t1
  rows=$("$PGBIN/psql" -X -At "${D0[@]}" -c "select count(*) from pgbench_accounts")
  t0=$(date +%s.%N)
  "$PGBIN/psql" -X -q "${D0[@]}" -c "COPY pgbench_accounts TO STDOUT (FORMAT binary)" |
    "$PGBIN/psql" -X -q "${D2[@]}" -c "COPY copy_probe FROM STDIN (FORMAT binary)"
  t1=$(date +%s.%N)
  echo "plain COPY $1${2:+ (${2})}: $rows rows in $(echo "$t1 - $t0" | bc) s"
  "$PGBIN/psql" -X -q "${D2[@]}" -c "DROP TABLE copy_probe"
}
plain_copy "under load"
plain_copy "under load" "INCLUDING INDEXES"
kill "$LOAD_PID" "$LAG_PID"; wait "$LOAD_PID" 2>/dev/null || true; LOAD_PID= LAG_PID=
echo "== load during the jobs (pgbench -P 10)"
grep -E "^progress|failed" "$WORK/load.log" | tail -n 40
latency "$WORK"/during.*
echo "== lag over time (catch-up samples per job: count, median, max bytes; first job's series)"
awk -F'|' '$3 == "catchup" {print $2, $4}' "$WORK/lag.log" | sort -k1,1n -k2,2n |
  awk '{n[$1]++; v[$1, n[$1]] = $2} END {for (j in n) printf "job %s: %d samples, median %d, max %d\n",
       j, n[j], v[j, int(n[j] / 2) + 1], v[j, n[j]]}' | sort -k2n
first=$(awk -F'|' 'NR == 1 {print $2}' "$WORK/lag.log")
awk -F'|' -v j="$first" '$2 == j {printf "%s %s %s\n", $1, $3, $4}' "$WORK/lag.log" | head -n 60
echo "== window over all cutovers"
q "select count(*), round(percentile_cont(0.5) within group (order by cutover_window_ms)::numeric, 1),
          round(percentile_cont(0.99) within group (order by cutover_window_ms)::numeric, 1),
          round(max(cutover_window_ms)::numeric, 1) from pgrouter.split_jobs where phase = 'completed'" |
  awk -F'|' '{print "cutovers " $1 ", p50 " $2 " ms, p99 " $3 " ms, max " $4 " ms"}'

echo "== plain COPY of pgbench_accounts shard0 -> spare"
plain_copy "alone"
plain_copy "alone" "INCLUDING INDEXES"
