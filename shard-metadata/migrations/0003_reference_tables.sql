-- pg-router catalog, version 3: reference tables.
--
-- Applied by pg_router::catalog::migrate() inside one transaction holding
-- pg_advisory_xact_lock; do not add BEGIN/COMMIT here. Independent of
-- version 2 (it may be applied before or after it).

-- A reference table: a small table with a full, identical copy on every shard.
-- Reads go to any one shard, writes to every shard.
-- table_name is lower case without a schema, as the router looks it up; a
-- name must not also be in pgrouter.sharded_tables (checked by the admin
-- operations and when the router loads the catalog).
create table pgrouter.reference_tables (
    table_name text primary key
);

create trigger reference_tables_notify
    after insert or update or delete or truncate on pgrouter.reference_tables
    for each statement execute function pgrouter.notify_catalog_change();
