-- pg-router catalog, version 4: owned lookup vindexes.
--
-- Applied by pg_router::catalog::migrate() inside one transaction holding
-- pg_advisory_xact_lock; do not add BEGIN/COMMIT here. Independent of
-- versions 2 and 3 (it may be applied before or after either).

-- An owned lookup vindex (Vitess's lookup / lookup_unique): maps the values
-- of column_name of the owner table table_name to the keyspace ids of the
-- owner rows holding them, through lookup_table. The lookup table is itself
-- a sharded table of the owner's keyspace keyed by column_name (key_type
-- key_type), with columns (<column_name>, keyspace_id bigint); the router
-- writes its rows in the same transaction as the owner's rows.
-- is_unique: primary key (<column_name>) instead of (<column_name>, keyspace_id).
-- Names are lower case without a schema. Dropping either table's
-- sharded_tables row drops the vindex. The admin operations and the router's
-- load check the rest: both tables in the same keyspace, the lookup table
-- keyed by column_name with key_type, column_name not the owner's sharding
-- key, and a lookup table neither the owner nor an owner of a lookup vindex.
create table pgrouter.lookup_vindexes (
    name         text primary key,
    table_name   text not null
                 references pgrouter.sharded_tables (table_name) on delete cascade,
    column_name  text not null,
    key_type     text not null,
    lookup_table text not null unique
                 references pgrouter.sharded_tables (table_name) on delete cascade,
    is_unique    boolean not null,
    unique (table_name, column_name)
);

create trigger lookup_vindexes_notify
    after insert or update or delete or truncate on pgrouter.lookup_vindexes
    for each statement execute function pgrouter.notify_catalog_change();
