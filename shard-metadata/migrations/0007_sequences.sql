-- pg-router catalog, version 7: distributed sequences (generated sharding
-- keys).
--
-- Applied by pg_router::catalog::migrate() inside one transaction holding
-- pg_advisory_xact_lock; do not add BEGIN/COMMIT here. Builds on version 6.
--
-- sequences: one row per sharded table whose sharding key the routers
-- generate (a serial/bigserial/identity/nextval() key an INSERT omits).
-- `next_value` is the first value no router has reserved yet. A router
-- reserves a block [v, v + n) with one UPDATE ... RETURNING (row-locked,
-- so two routers never get overlapping blocks); the row is created on
-- first use starting at 1, as a new sequence does. Values are never
-- reused: a block a router did not use up is a gap. Splitting a shard does
-- not touch this table, so generated keys stay unique across splits.

create table pgrouter.sequences (
    table_name  text primary key,
    next_value  bigint not null check (next_value >= 1),
    updated_at  timestamptz not null default now()
);
