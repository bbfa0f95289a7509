-- pg-router catalog, version 8: keyspace rules (tables declared by their
-- key column when they are created through a router).
--
-- Applied by pg_router::catalog::migrate() inside one transaction holding
-- pg_advisory_xact_lock; do not add BEGIN/COMMIT here. Builds on version 1.
--
-- table_rules: "shard any new table that has column <key_column> by it in
-- <keyspace>". When a router runs a CREATE TABLE of a table the catalog
-- does not know and the statement's column list has a column named by a
-- rule (the first such column in table order), the router inserts the
-- table into sharded_tables (keyspace's vindex, key type from the
-- column's type) before it creates the table on the shards. Tables that
-- exist already are not touched: declare them with `meta add-table`.

create table pgrouter.table_rules (
    key_column text primary key check (key_column <> ''),
    keyspace   text not null references pgrouter.keyspaces on delete cascade,
    created_at timestamptz not null default now()
);

create trigger table_rules_notify
    after insert or update or delete or truncate on pgrouter.table_rules
    for each statement execute function pgrouter.notify_catalog_change();
