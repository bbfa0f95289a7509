-- pg-router catalog, version 5: online resharding jobs (ShardSplitJob).
--
-- Applied by pg_router::catalog::migrate() inside one transaction holding
-- pg_advisory_xact_lock; do not add BEGIN/COMMIT here. Independent of
-- versions 2 to 4.
--
-- One row per job moving the key range [start_id, end_id) of keyspace
-- `keyspace` from shard `source` to shard `target` (every sharded table of
-- the keyspace moves together). `generation` is the keyspace generation the
-- move was planned from; the routing update installs generation + 1.
-- `phase` is the last durable step (pg_router::split::Phase):
--   created → capture → bootstrap → copy → catchup → cutover → routed →
--   cleanup → completed; failed (rolled back after an error before the
--   routing update) and rolled_back (on request) end a job before it.
-- At most one job per keyspace is active (not completed/failed/rolled_back):
-- two moves planned from the same generation cannot both update routing.
-- No NOTIFY trigger: routers do not reload routing on these rows.

create table pgrouter.split_jobs (
    id            bigserial primary key,
    keyspace      text not null references pgrouter.keyspaces on delete cascade,
    source        text not null references pgrouter.shards,
    target        text not null references pgrouter.shards,
    start_id      numeric(20,0) not null,
    end_id        numeric(20,0),
    generation    bigint not null,
    phase         text not null default 'created',
    slot_name     text,
    publication   text,
    snapshot_lsn  pg_lsn,
    confirmed_lsn pg_lsn,
    lag_bytes     bigint,
    progress      jsonb not null default '{}',
    verification  jsonb,
    cutover_started_at timestamptz,
    cutover_window_ms  double precision,
    error         text,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    constraint split_jobs_two_shards check (source <> target),
    constraint split_jobs_phase check (phase in ('created', 'capture', 'bootstrap',
        'copy', 'catchup', 'cutover', 'routed', 'cleanup', 'completed', 'failed',
        'rolled_back')),
    constraint split_jobs_start_in_range
        check (start_id >= 0 and start_id < 18446744073709551616),
    constraint split_jobs_end_in_range
        check (end_id is null or (start_id < end_id and end_id <= 18446744073709551616))
);

create unique index split_jobs_one_active_per_keyspace on pgrouter.split_jobs (keyspace)
    where phase not in ('completed', 'failed', 'rolled_back');
