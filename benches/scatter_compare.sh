#!/usr/bin/env bash
# Scatter-gather merging at the router, same machine, same run.
#
# Table sg(id bigint primary key, g int, x int, filler text), sharded on id,
# ROWS rows (g: 100 distinct values, x: a permutation-like spread), index on
# (x, id), loaded through the router with COPY FROM STDIN (the router splits
# it by shard; INSERT ... SELECT into a sharded table is refused).
# pgbench custom scripts, -n, -c CLIENTS -j 2 -T SECS, per -M mode:
#   a  SELECT id, x FROM sg ORDER BY x DESC, id LIMIT 10   (k-way merge + LIMIT)
#   b  SELECT g, count(*), avg(x) FROM sg GROUP BY g        (100 groups, partial aggregates merged)
# against
#   direct      PostgreSQL itself: shard0 of the 1-shard cluster (holds all rows)
#   pg-router/1 pg-router in front of that same database (dev --shards 1)
#   pg-router/2 pg-router in front of 2 shards (dev --shards 2, rows split by murmur3(id))
# For the routers it prints their CPU seconds (user + system, /proc/<pid>/stat)
# per 1,000 queries and CPU microseconds per merged row, where merged rows =
# queries x shards x rows each shard returns (a: 10, b: 100), and the CPU
# seconds every other process on the machine used meanwhile (a build running
# alongside skews the numbers; it shows there).
# Then the 2-shard router's memory (VmRSS, VmHWM from /proc/<pid>/status)
# around full-table reads through psql (SELECT id, x FROM sg ORDER BY x;
# SELECT * FROM sg), at ROWS rows and again after growing sg to MEM_ROWS rows,
# and while a client that stops reading for SLOW_SECS s has
# SELECT * FROM sg ORDER BY x in flight (backpressure: the router should
# stop reading from the shards instead of buffering).
#
# Usage: benches/scatter_compare.sh [rows] [seconds] [rounds] [mem_rows]
#        (defaults 1000000 15 2 10000000)
# Env: CLIENTS (8), MODES ("simple extended"), WORKERS (0 = one per CPU),
#      R1_PORT (16441), R2_PORT (16442), SLOW_SECS (10), BIN (target/release/pg-router).
# Needs: a release build (cargo build --release), psql and pgbench. Run as
# root (the dev clusters run PostgreSQL as the postgres user). Everything
# listens on 127.0.0.1 and is stopped at the end. Output: Markdown tables
# (docs/benchmarks.md). The binary is copied first, so a rebuild during the
# run does not change what is measured.
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${1:-1000000}
SECS=${2:-15}
ROUNDS=${3:-2}
MEM_ROWS=${4:-10000000}
CLIENTS=${CLIENTS:-8}
MODES=${MODES:-simple extended}
WORKERS=${WORKERS:-0}
R1_PORT=${R1_PORT:-16441}
R2_PORT=${R2_PORT:-16442}
SLOW_SECS=${SLOW_SECS:-10}
SRC_BIN=${BIN:-target/release/pg-router}
PGBIN=$(dirname "$(readlink -f "$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl | tail -1)")")
PGBENCH=$PGBIN/pgbench
PSQL=$PGBIN/psql
[ -x "$SRC_BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }

WORK=$(mktemp -d /tmp/pgr-scatter.XXXXXX)
chmod 755 "$WORK"
BIN=$WORK/pg-router
cp "$SRC_BIN" "$BIN"

cleanup() {
  set +e
  [ -n "${SLOW_PID:-}" ] && kill "$SLOW_PID" 2>/dev/null && wait "$SLOW_PID" 2>/dev/null
  for p in ${R1_PID:-} ${R2_PID:-}; do kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  # The routers stop their PostgreSQL instances; stop any left behind (e.g. a router crashed).
  for pidfile in "$WORK"/data*/*/postmaster.pid; do
    [ -f "$pidfile" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$(dirname "$pidfile")" -m immediate stop >/dev/null 2>&1
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

q() { "$PSQL" -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d postgres "${@:2}"; }

# Rows id in [from, to]: g = id % 100, x = id * 7919 mod 1000003, 48-byte filler.
gen() {
  awk -v a="$1" -v b="$2" 'BEGIN { for (i = a; i <= b; i++) printf "%d\t%d\t%d\tfiller-%041d\n", i, i % 100, (i * 7919) % 1000003, i }'
}

copy_rows() { # port from to
  gen "$2" "$3" | q "$1" -q -c '\copy sg (id, g, x, filler) from pstdin'
}

start_router() { # shards port -> sets LAST_PID, LAST_CATALOG; log in $WORK/router<shards>.log
  local log=$WORK/router$1.log
  : >"$log"
  "$BIN" dev --shards "$1" --port "$2" --workers "$WORKERS" --data-dir "$WORK/data$1" >"$log" 2>&1 &
  LAST_PID=$!
  for _ in $(seq 1 150); do grep -q "is ready" "$log" && break; sleep 0.2; done
  grep -q "is ready" "$log" || { cat "$log"; exit 1; }
  LAST_CATALOG=$(sed -n 's/^  catalog: //p' "$log")
  echo "== pg-router/$1 (pid $LAST_PID) on 127.0.0.1:$2: $(grep -o 'shard[0-9]*: 127.0.0.1:[0-9]*' "$log" | tr '\n' ' ')"
  q "$2" -q -c "CREATE TABLE sg (id bigint PRIMARY KEY, g int, x int, filler text)"
  "$BIN" meta --catalog "$LAST_CATALOG" add-table --table sg --column id --key-type int
  for _ in $(seq 1 50); do q "$2" -Atc "SELECT count(*) FROM sg WHERE id = 1" >/dev/null 2>&1 && break; sleep 0.2; done
  local t0=$SECONDS
  copy_rows "$2" 1 "$ROWS"
  q "$2" -q -c "CREATE INDEX ON sg (x, id)"
  q "$2" -q -c "VACUUM ANALYZE sg"
  echo "   loaded $ROWS rows (COPY through the router, index, VACUUM ANALYZE) in $((SECONDS - t0)) s"
}

echo "== pg-router binary: $SRC_BIN, $(stat -c '%y' "$SRC_BIN" | cut -d. -f1), sha256 $(sha256sum "$BIN" | cut -c1-12);" \
  "git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$( [ -n "$(git status --porcelain src 2>/dev/null)" ] && echo ' + uncommitted src changes')"
echo "== $(nproc) CPUs, $(uname -r), $("$PSQL" --version)"
start_router 1 "$R1_PORT"
R1_PID=$LAST_PID
SHARD0_PORT=$(grep -o 'shard0: 127.0.0.1:[0-9]*' "$WORK/router1.log" | cut -d: -f3)
start_router 2 "$R2_PORT"
R2_PID=$LAST_PID
R2_SHARD_PORTS=$(grep -o 'shard[0-9]*: 127.0.0.1:[0-9]*' "$WORK/router2.log" | cut -d: -f3)

echo 'SELECT id, x FROM sg ORDER BY x DESC, id LIMIT 10;' >"$WORK/a.sql"
echo 'SELECT g, count(*), avg(x) FROM sg GROUP BY g;' >"$WORK/b.sql"
declare -A PER_SHARD=([a]=10 [b]=100)

# Same answers everywhere? (GROUP BY output order is unspecified: compare sorted.)
for f in a b; do
  sql=$(cat "$WORK/$f.sql")
  ref=$(q "$SHARD0_PORT" -Atc "$sql" | sort)
  for p in "$R1_PORT" "$R2_PORT"; do
    if got=$(q "$p" -Atc "$sql" 2>&1 | sort) && [ "$got" = "$ref" ]; then
      echo "   query $f via port $p: same $(echo "$ref" | wc -l) rows as direct"
    else
      echo "   query $f via port $p: DIFFERS from direct:"; diff <(echo "$ref") <(echo "$got") | head -5
    fi
  done
done

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }
# Anything else running on the same CPUs skews a run. snap prints "pid ticks"
# (utime+stime+cutime+cstime) of every user-space process outside this script's
# process tree and our PostgreSQL instances (daemonized: their postmasters are
# extra roots); other_cpu turns two snapshots into their CPU seconds in between
# (processes that started and ended in between count through their parent).
MY_ROOTS="$$ $(awk 'FNR == 1' "$WORK"/data*/*/postmaster.pid | tr '\n' ' ')"
snap() {
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v roots="$MY_ROOTS" '
    { i = match($0, /\) [A-Za-z] -?[0-9]/); n = split(substr($0, i + 2), f, " ")
      pid = $1 + 0; pp[pid] = f[2] + 0; t[pid] = f[12] + f[13] + f[14] + f[15] }
    END {
      split(roots, r, " "); for (k in r) mine[r[k] + 0] = 1
      do { added = 0; for (p in pp) if (!(p in mine) && (pp[p] in mine)) { mine[p] = 1; added = 1 } } while (added)
      for (p in pp) if (!(p in mine) && p != 2 && pp[p] != 2) print p, t[p]
    }'
}
other_cpu() { # snapshot-before snapshot-after
  awk -v hz="$(getconf CLK_TCK)" 'NR == FNR {a[$1] = $2; next} {s += $2 - ($1 in a ? a[$1] : 0)} END {printf "%.1f", s / hz}' <(echo "$1") <(echo "$2")
}

# pgbench with a custom script; prints a table row with tps and, when a pid is
# given, that process's CPU s per 1,000 queries and CPU µs per merged row.
run() { # query name port mode shards [pid]
  local t0=0 out tps tx cpu="-" cpurow="-" s0
  s0=$(snap)
  [ -n "${6:-}" ] && t0=$(cpu_ticks "$6")
  if ! out=$("$PGBENCH" -n -f "$WORK/$1.sql" -M "$4" -c "$CLIENTS" -j 2 -T "$SECS" -h 127.0.0.1 -p "$3" -U postgres postgres 2>&1); then
    printf "| %s | %s | %s | failed: %s | - | - | - |\n" "$1" "$2" "$4" "$(echo "$out" | grep -m1 -iE 'error|fatal' | cut -c1-200)"
    return 0
  fi
  tps=$(echo "$out" | awk '/^tps/ {printf "%.1f", $3}')
  tx=$(echo "$out" | awk -F': ' '/actually processed/ {split($2,a,"/"); print a[1]}')
  if [ -n "${6:-}" ]; then
    read -r cpu cpurow < <(awk -v a="$t0" -v b="$(cpu_ticks "$6")" -v hz="$(getconf CLK_TCK)" -v n="$tx" -v r="$(($5 * ${PER_SHARD[$1]}))" \
      'BEGIN {s = (b-a)/hz; printf "%.4f %.2f\n", s/(n/1000), s*1e6/(n*r)}')
  fi
  printf "| %s | %s | %s | %s | %s | %s | %s |\n" "$1" "$2" "$4" "$tps" "$cpu" "$cpurow" "$(other_cpu "$s0" "$(snap)")"
}

# Background CPU of an idle router (catalog polling, timers) over one run's
# length; /proc/<pid>/stat counts in clock ticks (1/CLK_TCK s).
c1=$(cpu_ticks "$R1_PID"); c2=$(cpu_ticks "$R2_PID"); s0=$(snap)
sleep "$SECS"
echo "   idle for $SECS s: pg-router/1 used $(( $(cpu_ticks "$R1_PID") - c1 )), pg-router/2 $(( $(cpu_ticks "$R2_PID") - c2 )) CPU ticks of 1/$(getconf CLK_TCK) s;" \
  "other processes used $(other_cpu "$s0" "$(snap)") CPU s"

echo
echo "== pgbench -n -f {a,b}.sql -c $CLIENTS -j 2 -T $SECS, $ROUNDS rounds, $ROWS rows; merged rows/query: a = shards x 10, b = shards x 100"
echo "| query | target | mode | tps | router CPU s / 1000 queries | router CPU µs / merged row | other processes' CPU s |"
echo "|---|---|---|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
  for f in a b; do
    for mode in $MODES; do
      run "$f" direct "$SHARD0_PORT" "$mode" 1
      run "$f" pg-router/1 "$R1_PORT" "$mode" 1 "$R1_PID"
      run "$f" pg-router/2 "$R2_PORT" "$mode" 2 "$R2_PID"
    done
  done
done

echo
for f in a b; do
  echo "== EXPLAIN (ROUTER) of query $f via pg-router/2"
  q "$R2_PORT" -Atc "EXPLAIN (ROUTER) $(tr -d ';' <"$WORK/$f.sql")" 2>&1 | sed 's/^/    /' || true
done
echo "== SQL the 2-shard router sent to shard0 (last statement of each pooled connection)"
q "$(echo "$R2_SHARD_PORTS" | head -1)" -Atc "SELECT DISTINCT '    ' || query FROM pg_stat_activity WHERE query ILIKE '%FROM sg%' AND pid <> pg_backend_pid()"

# ---- memory of the 2-shard router ----
mem() { awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {printf "%.1f | %.1f", r/1024, h/1024}' "/proc/$R2_PID/status"; }
rows_now=$ROWS
full_read() { # label sql check(awk program over psql -At output)
  local t0 c0 res
  t0=$(now)
  c0=$(cpu_ticks "$R2_PID")
  res=$(q "$R2_PORT" -Atc "$2" 2>&1 | awk -F'|' "$3") || true
  printf "| %s | after %s | %s | %s | %s | %s |\n" "$rows_now" "$1" "$(mem)" "$(since "$t0")" \
    "$(awk -v a="$c0" -v b="$(cpu_ticks "$R2_PID")" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", (b-a)/hz}')" "$res"
}
ORDER_CHECK='NR > 1 && $2 + 0 < p {bad++} {p = $2 + 0} /^ERROR|^psql:/ {err = $0} END {printf "%d rows%s%s", NR, bad ? ", " bad " out of order" : ", ordered", err ? ", " err : ""}'
ALL_CHECK='{n++} /^ERROR|^psql:/ {err = $0} END {printf "%d rows%s", n, err ? ", " err : ""}'
mem_round() {
  full_read "SELECT id, x FROM sg ORDER BY x" "SELECT id, x FROM sg ORDER BY x" "$ORDER_CHECK"
  full_read "SELECT * FROM sg" "SELECT * FROM sg" "$ALL_CHECK"
}

# A client that sends SELECT * FROM sg ORDER BY x and reads nothing for
# SLOW_SECS s (raw protocol over bash /dev/tcp), then reads everything.
slow_client() {
  local sql="SELECT * FROM sg ORDER BY x" out=$WORK/slow.out i t0 c0
  i32() { printf "$(printf '%08x' "$1" | sed 's/../\\x&/g')"; }
  exec 3<>"/dev/tcp/127.0.0.1/$R2_PORT"
  { i32 41; i32 196608; printf 'user\0postgres\0database\0postgres\0\0'; } >&3
  sleep 0.5
  { printf Q; i32 $((4 + ${#sql} + 1)); printf '%s\0' "$sql"; } >&3
  for i in $(seq 1 "$SLOW_SECS"); do
    sleep 1
    [ "$i" = 1 ] || [ "$i" = "$SLOW_SECS" ] || continue
    local states
    states=$(for p in $R2_SHARD_PORTS; do q "$p" -Atc "SELECT coalesce(wait_event, state) FROM pg_stat_activity WHERE query ILIKE '%FROM sg ORDER BY x%' AND state = 'active' AND pid <> pg_backend_pid()"; done | sort | uniq -c | awk '{printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1}')
    printf "| %s | client stalled %s s (shard backends: %s) | %s | - | - | - |\n" "$rows_now" "$i" "${states:-none active}" "$(mem)"
  done
  t0=$(now)
  c0=$(cpu_ticks "$R2_PID")
  cat <&3 >"$out" &
  SLOW_PID=$!
  # The result is complete when the stream ends with ReadyForQuery ('Z', len 5, 'I').
  for _ in $(seq 1 1800); do
    sleep 0.5
    [ "$(tail -c 6 "$out" | od -An -tx1 | tr -d ' \n')" = "5a0000000549" ] && break
    kill -0 "$SLOW_PID" 2>/dev/null || break
  done
  { printf X; i32 4; } >&3 2>/dev/null || true
  exec 3>&-
  kill "$SLOW_PID" 2>/dev/null || true
  wait "$SLOW_PID" 2>/dev/null || true
  SLOW_PID=
  printf "| %s | after the stalled client read the rest | %s | %s | %s | %s bytes, ends with %s |\n" "$rows_now" "$(mem)" "$(since "$t0")" \
    "$(awk -v a="$c0" -v b="$(cpu_ticks "$R2_PID")" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", (b-a)/hz}')" \
    "$(stat -c %s "$out")" "$(tail -c 300 "$out" | tr -c '[:print:]' ' ' | grep -o 'SELECT [0-9]*' || echo 'no CommandComplete')"
  rm -f "$out"
}

echo
echo "== pg-router/2 memory (VmRSS / VmHWM of pid $R2_PID) around full-table reads through psql -Atc (output checked, then dropped)"
echo "| rows in sg | step | VmRSS MiB | VmHWM MiB | wall s | router CPU s | result |"
echo "|---|---|---|---|---|---|---|"
printf "| %s | after the pgbench runs | %s | - | - | - |\n" "$rows_now" "$(mem)"
mem_round
if [ "$MEM_ROWS" -gt "$ROWS" ]; then
  t0=$SECONDS
  copy_rows "$R2_PORT" $((ROWS + 1)) "$MEM_ROWS"
  q "$R2_PORT" -q -c "VACUUM ANALYZE sg"
  rows_now=$MEM_ROWS
  printf "| %s | after loading rows %s..%s (COPY through the router + VACUUM ANALYZE) | %s | %s | - | - |\n" "$rows_now" $((ROWS + 1)) "$MEM_ROWS" "$(mem)" "$((SECONDS - t0))"
  mem_round
fi
slow_client
