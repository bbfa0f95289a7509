-- pg-router catalog, version 2: the two-phase commit decision log.
--
-- One row per distributed transaction whose outcome was decided durably:
--   decision 'c': the coordinating router decided COMMIT after every writing
--                 participant had prepared (the commit point of the
--                 transaction is the commit of this row's INSERT);
--   decision 'a': the recovery loop found a prepared transaction without a
--                 decision after the grace period and decided ABORT.
-- gid is the PREPARE TRANSACTION identifier, unique across routers:
-- 'pgr_<router id>_<sequence>'. The primary key makes the two decisions
-- mutually exclusive: whichever INSERT commits first wins, the other one
-- inserts nothing (ON CONFLICT DO NOTHING) and follows the winner.
--
-- No NOTIFY trigger: routers do not reload routing on these rows.

create table pgrouter.twopc_decisions (
    gid        text primary key,
    decision   "char" not null check (decision in ('c', 'a')),
    router_id  text not null,
    shards     text[] not null default '{}',
    decided_at timestamptz not null default now()
);

create index twopc_decisions_decided_at_idx on pgrouter.twopc_decisions (decided_at);
