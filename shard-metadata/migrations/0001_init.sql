-- pg-router catalog, version 1: keyspaces, shards, shard ranges, sharded tables.
--
-- Applied by pg_router::catalog::migrate() inside one transaction holding
-- pg_advisory_xact_lock; do not add BEGIN/COMMIT here.
-- Keyspace ids are u64 values, stored as numeric(20,0) because bigint is signed.

create schema if not exists pgrouter;

create table if not exists pgrouter.schema_migrations (
    version    int primary key,
    name       text,
    applied_at timestamptz default now()
);

-- A keyspace: a set of tables sharded together by one vindex.
-- Its active routing is the shard_ranges rows at keyspaces.generation.
create table pgrouter.keyspaces (
    name       text primary key,
    vindex     text not null,
    generation bigint not null default 1
);

-- A shard: one PostgreSQL database the router connects to.
create table pgrouter.shards (
    name      text primary key,
    host      text not null,
    port      int  not null check (port between 1 and 65535),
    dbname    text not null,
    user_name text
);

-- Key ranges [start_id, end_id) of keyspace ids owned by shards, per generation.
-- end_id NULL means unbounded (up to and including 2^64 - 1).
create table pgrouter.shard_ranges (
    keyspace   text not null references pgrouter.keyspaces on delete cascade,
    start_id   numeric(20,0) not null,
    end_id     numeric(20,0),
    shard      text not null references pgrouter.shards,
    generation bigint not null,
    primary key (keyspace, generation, start_id),
    constraint shard_ranges_start_in_range
        check (start_id >= 0 and start_id < 18446744073709551616),
    constraint shard_ranges_end_in_range
        check (end_id is null or (start_id < end_id and end_id <= 18446744073709551616))
);

-- A sharded table: which keyspace it lives in and how its rows are keyed.
-- table_name is lower case without a schema, as the router looks it up.
create table pgrouter.sharded_tables (
    table_name text primary key,
    keyspace   text not null references pgrouter.keyspaces,
    key_column text not null,
    vindex     text not null,
    key_type   text not null default 'int'
);

create index sharded_tables_keyspace_idx on pgrouter.sharded_tables (keyspace);
create index shard_ranges_shard_idx on pgrouter.shard_ranges (shard);

-- Every change to the catalog is announced on channel 'pgrouter_catalog' with
-- the changed table's name as payload; routers LISTEN and reload.
create or replace function pgrouter.notify_catalog_change() returns trigger
language plpgsql as $$
begin
    perform pg_notify('pgrouter_catalog', tg_table_name);
    return null;
end;
$$;

create trigger keyspaces_notify
    after insert or update or delete or truncate on pgrouter.keyspaces
    for each statement execute function pgrouter.notify_catalog_change();
create trigger shards_notify
    after insert or update or delete or truncate on pgrouter.shards
    for each statement execute function pgrouter.notify_catalog_change();
create trigger shard_ranges_notify
    after insert or update or delete or truncate on pgrouter.shard_ranges
    for each statement execute function pgrouter.notify_catalog_change();
create trigger sharded_tables_notify
    after insert or update or delete or truncate on pgrouter.sharded_tables
    for each statement execute function pgrouter.notify_catalog_change();
create trigger schema_migrations_notify
    after insert or update or delete or truncate on pgrouter.schema_migrations
    for each statement execute function pgrouter.notify_catalog_change();
