# Shared by the bench scripts (sourced, not run): PgBouncer in transaction
# pooling mode in front of one database, as the postgres user, 127.0.0.1
# only.

# pgbouncer_config DIR LISTEN_PORT DB_PORT [MAX_CLIENTS]: writes
# DIR/pgbouncer.ini (pool of 20 server connections, trust auth, database
# "postgres" at 127.0.0.1:DB_PORT) and DIR/userlist.txt, owned by postgres.
pgbouncer_config() {
  local dir=$1 listen=$2 db=$3 max=${4:-200}
  mkdir -p "$dir"
  cat >"$dir/pgbouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$db dbname=postgres user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $listen
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = $max
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
  echo '"postgres" ""' >"$dir/userlist.txt"
  chown -R postgres "$dir"
}

# start_pgbouncer DIR: starts PgBouncer with DIR/pgbouncer.ini and sets
# BOUNCER_PID (exits with its log if it does not start).
start_pgbouncer() {
  local dir=$1
  runuser -u postgres -- pgbouncer "$dir/pgbouncer.ini" >/dev/null 2>&1 &
  BOUNCER_PID=
  for _ in $(seq 1 50); do BOUNCER_PID=$(pgrep -n -u postgres -x pgbouncer || true); [ -n "$BOUNCER_PID" ] && break; sleep 0.1; done
  [ -n "$BOUNCER_PID" ] || { echo "pgbouncer did not start:"; cat "$dir/pgbouncer.log"; exit 1; }
  sleep 0.5
}
