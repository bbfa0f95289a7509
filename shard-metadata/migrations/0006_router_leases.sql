-- pg-router catalog, version 6: router leases and cutover write blocks
-- (online resharding, step 5).
--
-- Applied by pg_router::catalog::migrate() inside one transaction holding
-- pg_advisory_xact_lock; do not add BEGIN/COMMIT here. Builds on version 5
-- (split_jobs).
--
-- routers: one row per `pg-router serve` process using this catalog. A
-- router renews `lease_until` (catalog time, now() + lease TTL) about once a
-- second and refuses writes once its own lease has run out (it counts from
-- before each renewal was sent, so it stops no later than the catalog says).
-- `block_ack` is the last write block (write_blocks.epoch) it has installed
-- with no transaction of its still holding writes on the block's source;
-- `generations` the keyspace generations of the routing it serves
-- ({"main": 3}). A split job waits for every router with a live lease.

create table pgrouter.routers (
    id          text primary key,
    host        text not null default '',
    pid         int not null default 0,
    lease_until timestamptz not null,
    renewed_at  timestamptz not null default now(),
    block_ack   bigint not null default 0,
    generations jsonb not null default '{}'
);

-- write_blocks: the cutover of a split job. While a row is 'blocking',
-- routers hold new writes (they wait, they do not fail) until it is gone or
-- expired; 'routed' means the job's routing update (generation
-- `to_generation`) committed in the same transaction, and a router lifts
-- its block once it serves that generation. Rows are announced on channel
-- 'pgrouter_split'.
create table pgrouter.write_blocks (
    job_id        bigint primary key references pgrouter.split_jobs on delete cascade,
    keyspace      text not null,
    source        text not null,
    epoch         bigint not null,
    to_generation bigint not null,
    state         text not null default 'blocking'
        constraint write_blocks_state check (state in ('blocking', 'routed')),
    started_at    timestamptz not null default clock_timestamp(),
    expires_at    timestamptz not null
);

create or replace function pgrouter.notify_split_change() returns trigger
language plpgsql as $$
begin
    perform pg_notify('pgrouter_split', tg_table_name);
    return null;
end $$;

create trigger write_blocks_notify
    after insert or update or delete or truncate on pgrouter.write_blocks
    for each statement execute function pgrouter.notify_split_change();
