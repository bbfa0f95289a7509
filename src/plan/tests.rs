//! Planner tests: every pgbench statement, the refusals, the cache.

use std::sync::Arc;

use super::*;

struct Pgbench;

impl SchemaView for Pgbench {
    fn key_column(&self, table: &str) -> Option<&str> {
        match table {
            "pgbench_accounts" | "pgbench_history" => Some("aid"),
            "pgbench_tellers" => Some("tid"),
            "pgbench_branches" => Some("bid"),
            _ => None,
        }
    }

    fn is_reference(&self, table: &str) -> bool {
        matches!(table, "countries" | "currencies")
    }

    /// Every sharded table in one keyspace with integer keys.
    fn key_info(&self, table: &str) -> Option<(&str, crate::vindex::KeyType)> {
        self.key_column(table)
            .map(|_| ("main", crate::vindex::KeyType::Int))
    }

    /// Known columns: pgbench_accounts (key without a default) and
    /// pgbench_history (key `aid`... given a serial default here so an
    /// omitted key is generated); other tables not read yet.
    fn table_schema(&self, table: &str) -> Option<crate::plan::schema::SharedSchema> {
        use crate::plan::schema::{Column, TableSchema};
        let col = |name: &str, default: Option<&str>| Column {
            name: name.into(),
            type_oid: 23,
            type_name: "integer".into(),
            default: default.map(str::to_string),
            identity: 0,
            generated: 0,
            sequence: None,
        };
        let columns = match table {
            "pgbench_accounts" => vec![
                col("aid", None),
                col("bid", None),
                col("abalance", None),
                col("filler", None),
            ],
            "pgbench_history" => vec![
                col("tid", None),
                col("bid", None),
                col("aid", Some("nextval('pgbench_history_aid_seq'::regclass)")),
                col("delta", None),
            ],
            _ => return None,
        };
        Some(Arc::new(TableSchema { columns }))
    }
}

fn simple(sql: &str) -> Plan {
    let p = Planner::new(100);
    let (plan, _) = p.plan_simple(sql, &Pgbench);
    // A second call (cache hit) must give the same plan.
    let (again, _) = p.plan_simple(sql, &Pgbench);
    assert_eq!(plan, again, "{sql}");
    (*plan).clone()
}

fn extended(sql: &str) -> Plan {
    (*Planner::new(100).plan_extended(sql, &Pgbench)).clone()
}

fn param(index: usize) -> KeyExpr {
    KeyExpr::Param {
        index,
        negate: false,
    }
}

fn keyed(table: &str, key: KeyExpr, read_only: bool) -> Plan {
    Plan::Keyed {
        keys: vec![KeyRef {
            table: Arc::from(table),
            key,
        }],
        read_only,
    }
}

/// The gather plan of a scatter plan (panics otherwise).
#[track_caller]
fn gather(p: &Plan) -> Arc<GatherPlan> {
    match p {
        Plan::Scatter {
            merge: Merge::Gather(g),
            ..
        } => g.clone(),
        other => panic!("not a gather: {other:?}"),
    }
}

/// (function, distinct) of each aggregate slot of a gather plan.
#[track_caller]
fn agg_funcs(p: &Plan) -> Vec<(AggFunc, bool)> {
    gather(p)
        .grouping
        .as_ref()
        .map(|g| g.aggs.iter().map(|a| (a.func, a.distinct)).collect())
        .unwrap_or_default()
}

/// The shards' statement text of a gather plan, with literal pieces as
/// `<i>` and the row count as `<limit>`.
fn shard_text(p: &Plan) -> String {
    gather(p)
        .sql
        .iter()
        .map(|x| match x {
            SqlPiece::Text(t) => t.clone(),
            SqlPiece::Literal(i) => format!("<{i}>"),
            SqlPiece::Limit => "<limit>".into(),
        })
        .collect()
}

#[test]
fn shard_pruning_sets() {
    let prune = |p: &Plan| match p {
        Plan::Scatter { prune, .. } => prune.clone(),
        other => panic!("not a scatter: {other:?}"),
    };
    assert_eq!(
        prune(&simple(
            "SELECT * FROM pgbench_accounts WHERE aid IN (1, 2, 3)"
        )),
        Some(KeySet::List(vec![param(0), param(1), param(2)]))
    );
    assert_eq!(
        prune(&extended(
            "SELECT count(*) FROM pgbench_accounts WHERE bid = 1 AND aid = ANY($1)"
        )),
        Some(KeySet::Array(param(0)))
    );
    assert_eq!(
        prune(&extended(
            "DELETE FROM pgbench_accounts WHERE aid = ANY(ARRAY[5, $1])"
        )),
        Some(KeySet::List(vec![KeyExpr::Const("5".into()), param(0)]))
    );
    assert_eq!(
        prune(&simple(
            "SELECT * FROM pgbench_accounts WHERE aid >= 10 AND 20 > aid ORDER BY aid"
        )),
        Some(KeySet::Range {
            lo: Some(param(0)),
            hi: Some(param(1))
        })
    );
    assert_eq!(
        prune(&extended(
            "SELECT count(*) FROM pgbench_accounts WHERE aid BETWEEN $1 AND $2"
        )),
        Some(KeySet::Range {
            lo: Some(param(0)),
            hi: Some(param(1))
        })
    );
    assert_eq!(
        prune(&simple(
            "SELECT * FROM pgbench_accounts WHERE aid < 5 AND aid IN (1, 2)"
        )),
        Some(KeySet::List(vec![param(1), param(2)]))
    );
    assert_eq!(
        prune(&simple(
            "SELECT * FROM pgbench_accounts WHERE aid IN (1, 2) OR bid = 3"
        )),
        None
    );
    assert_eq!(
        prune(&simple(
            "SELECT * FROM pgbench_accounts WHERE aid NOT IN (1, 2)"
        )),
        None
    );
}

#[test]
fn gather_plans() {
    // ORDER BY + LIMIT/OFFSET: hidden sort key, shards return limit + offset.
    let p = simple("SELECT abalance FROM pgbench_accounts ORDER BY aid DESC LIMIT 10 OFFSET 5");
    assert_eq!(
        shard_text(&p),
        "SELECT abalance, aid FROM pgbench_accounts ORDER BY aid DESC LIMIT <limit>"
    );
    let g = gather(&p);
    assert_eq!((g.hidden, g.visible), (1, Some(1)));
    assert_eq!(
        g.order,
        vec![SortKey {
            source: SortSource::Hidden(0),
            desc: true,
            nulls_first: true
        }]
    );
    assert_eq!(
        (g.limit, g.offset),
        (Some(RowCount::Param(0)), Some(RowCount::Param(1)))
    );
    // Output names and positions resolve to the select item.
    let p = simple("SELECT aid AS a, abalance + 1 FROM pgbench_accounts ORDER BY a, 2 NULLS FIRST");
    assert_eq!(
        shard_text(&p),
        "SELECT aid AS a, abalance + 1, aid, abalance + 1 FROM pgbench_accounts ORDER BY a, 2 NULLS FIRST"
    );
    // Extended protocol: parameters stay parameters.
    let p =
        extended("SELECT aid FROM pgbench_accounts WHERE bid = $1 ORDER BY aid LIMIT $2 OFFSET $3");
    assert_eq!(
        shard_text(&p),
        "SELECT aid, aid FROM pgbench_accounts WHERE bid = $1 ORDER BY aid LIMIT ($2::int8 + $3::int8)"
    );
    // GROUP BY: keys and partials hidden; HAVING/ORDER BY/LIMIT at the router.
    let p = simple("SELECT bid, avg(abalance) FROM pgbench_accounts GROUP BY bid HAVING count(*) > 5 ORDER BY 2 DESC LIMIT 3");
    assert_eq!(
        shard_text(&p),
        "SELECT bid, avg(abalance), bid, sum(abalance), count(abalance), count(*) FROM pgbench_accounts GROUP BY bid"
    );
    assert_eq!(
        agg_funcs(&p),
        vec![(AggFunc::Avg, false), (AggFunc::Count, false)]
    );
    let g = gather(&p);
    let grouping = g.grouping.as_ref().expect("grouping");
    assert_eq!(grouping.keys, vec![0]);
    assert_eq!(grouping.outputs, vec![None, Some(0)]);
    assert!(matches!(
        grouping.having,
        Some(Cond::Cmp(CmpOp::Gt, Operand::Agg(1), Operand::Const(_)))
    ));
    assert_eq!(
        g.order,
        vec![SortKey {
            source: SortSource::Agg(0),
            desc: true,
            nulls_first: true
        }]
    );
    // DISTINCT aggregates: the shards group by the argument too.
    let p = simple("SELECT count(DISTINCT bid), sum(abalance) FROM pgbench_accounts");
    assert_eq!(shard_text(&p), "SELECT count(DISTINCT bid), sum(abalance), bid, sum(abalance) FROM pgbench_accounts GROUP BY bid");
    assert!(gather(&p)
        .grouping
        .as_ref()
        .is_some_and(|g| g.single && g.aggs[0].partials == vec![0]));
    // Several DISTINCT arguments: the shards group by all of them.
    let p = simple("SELECT count(DISTINCT aid), count(DISTINCT bid) FROM pgbench_accounts");
    assert_eq!(shard_text(&p), "SELECT count(DISTINCT aid), count(DISTINCT bid), aid, bid FROM pgbench_accounts GROUP BY aid, bid");
    // DISTINCT ON keeps the shards' ORDER BY.
    let p =
        simple("SELECT DISTINCT ON (bid) bid, aid FROM pgbench_accounts ORDER BY bid, aid DESC");
    assert_eq!(gather(&p).distinct_on, 1);
    assert_eq!(gather(&p).order.len(), 2);
    // A positional reference in a normalized text plans the original text
    // (not cached by shape): GROUP BY 1 vs GROUP BY 2 differ.
    let p1 =
        simple("SELECT bid, abalance, count(*) FROM pgbench_accounts GROUP BY 1, 2 ORDER BY 1");
    assert_eq!(
        shard_text(&p1),
        "SELECT bid, abalance, count(*), bid, abalance, count(*) FROM pgbench_accounts GROUP BY 1, 2"
    );
    let planner = Planner::new(100);
    let (a, _) = planner.plan_simple(
        "SELECT bid, aid FROM pgbench_accounts ORDER BY 1 LIMIT 3",
        &Pgbench,
    );
    let (b, _) = planner.plan_simple(
        "SELECT bid, aid FROM pgbench_accounts ORDER BY 2 LIMIT 3",
        &Pgbench,
    );
    assert_eq!(
        shard_text(&a),
        "SELECT bid, aid, bid FROM pgbench_accounts ORDER BY 1 LIMIT <limit>"
    );
    assert_eq!(
        shard_text(&b),
        "SELECT bid, aid, aid FROM pgbench_accounts ORDER BY 2 LIMIT <limit>"
    );
    assert_eq!(gather(&a).limit, Some(RowCount::Const(3)));
}

fn scatter(table: &str, merge: Merge, read_only: bool) -> Plan {
    Plan::Scatter {
        table: Arc::from(table),
        prune: None,
        lookup: None,
        merge,
        read_only,
    }
}

#[track_caller]
fn assert_error(plan: &Plan, sqlstate: &str, needle: &str) {
    match plan {
        Plan::Error {
            sqlstate: s,
            message,
            ..
        } => {
            assert_eq!(*s, sqlstate, "{message}");
            assert!(
                message.contains(needle),
                "message {message:?} lacks {needle:?}"
            );
        }
        other => panic!("expected error {sqlstate} ({needle}), got {other:?}"),
    }
}

/// `plan` is [`Plan::Subqueries`] (0A000 unless its subqueries can run
/// first) with `needle` in its message.
#[track_caller]
fn assert_subqueries(plan: &Plan, needle: &str) {
    match plan {
        Plan::Subqueries { message, .. } => assert!(
            message.contains(needle),
            "message {message:?} lacks {needle:?}"
        ),
        other => panic!("expected subqueries first ({needle}), got {other:?}"),
    }
}

#[test]
fn planner_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Planner>();
}

// ---- pgbench, simple protocol -------------------------------------------

#[test]
fn pgbench_select_only() {
    let p = Planner::new(100);
    let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = 123;";
    let (plan, lits) = p.plan_simple(sql, &Pgbench);
    assert_eq!(*plan, keyed("pgbench_accounts", param(0), true));
    assert_eq!(lits.len(), 1);
    assert_eq!(lits.value(sql, 0).as_deref(), Some("123"));
}

#[test]
fn pgbench_tpcb_statements() {
    let sql = "UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 5;";
    let p = Planner::new(100);
    let (plan, lits) = p.plan_simple(sql, &Pgbench);
    assert_eq!(*plan, keyed("pgbench_accounts", param(1), false));
    assert_eq!(lits.value(sql, 0).as_deref(), Some("4321"));
    assert_eq!(lits.value(sql, 1).as_deref(), Some("5"));

    assert_eq!(
        simple("SELECT abalance FROM pgbench_accounts WHERE aid = 5;"),
        keyed("pgbench_accounts", param(0), true)
    );
    assert_eq!(
        simple("UPDATE pgbench_tellers SET tbalance = tbalance + 12 WHERE tid = 3;"),
        keyed("pgbench_tellers", param(1), false)
    );
    assert_eq!(
        simple("UPDATE pgbench_branches SET bbalance = bbalance + -4321 WHERE bid = 1;"),
        keyed("pgbench_branches", param(1), false)
    );
    let ins = "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (3, 1, 5, -4321, CURRENT_TIMESTAMP);";
    let (plan, lits) = p.plan_simple(ins, &Pgbench);
    assert_eq!(
        *plan,
        Plan::Insert {
            table: Arc::from("pgbench_history"),
            rows: vec![param(2)]
        }
    );
    assert_eq!(lits.value(ins, 2).as_deref(), Some("5"));
    assert_eq!(
        simple("BEGIN;"),
        Plan::Transaction(TxnStmt::Begin {
            sql: "BEGIN".into()
        })
    );
    assert_eq!(simple("END;"), Plan::Transaction(TxnStmt::Commit));
}

#[test]
fn negative_key_literal() {
    assert_eq!(
        simple("SELECT * FROM pgbench_accounts WHERE aid = -7"),
        keyed(
            "pgbench_accounts",
            KeyExpr::Param {
                index: 0,
                negate: true
            },
            true
        )
    );
}

// ---- pgbench, extended protocol -----------------------------------------

#[test]
fn pgbench_extended() {
    assert_eq!(
        extended("SELECT abalance FROM pgbench_accounts WHERE aid = $1"),
        keyed("pgbench_accounts", param(0), true)
    );
    assert_eq!(
        extended("UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2"),
        keyed("pgbench_accounts", param(1), false)
    );
    assert_eq!(
        extended("UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2"),
        keyed("pgbench_tellers", param(1), false)
    );
    assert_eq!(
        extended("UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2"),
        keyed("pgbench_branches", param(1), false)
    );
    assert_eq!(
        extended("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)"),
        Plan::Insert { table: Arc::from("pgbench_history"), rows: vec![param(2)] }
    );
    assert_eq!(
        extended("BEGIN"),
        Plan::Transaction(TxnStmt::Begin {
            sql: "BEGIN".into()
        })
    );
    assert_eq!(extended("END"), Plan::Transaction(TxnStmt::Commit));
    // Literals in extended-protocol text are constants.
    assert_eq!(
        extended("SELECT abalance FROM pgbench_accounts WHERE aid = 5"),
        keyed("pgbench_accounts", KeyExpr::Const("5".into()), true)
    );
    assert_eq!(
        extended("SELECT * FROM pgbench_accounts WHERE aid = $1::bigint"),
        keyed("pgbench_accounts", param(0), true)
    );
    assert_eq!(
        extended("SELECT * FROM pgbench_accounts WHERE CAST($2 AS int8) = aid"),
        keyed("pgbench_accounts", param(1), true)
    );
    assert_eq!(
        extended("SELECT * FROM pgbench_accounts WHERE aid = -$1"),
        keyed(
            "pgbench_accounts",
            KeyExpr::Param {
                index: 0,
                negate: true
            },
            true
        )
    );
    assert_eq!(
        extended("SELECT * FROM pgbench_accounts a WHERE a.aid IN ($1) AND a.bid > 3"),
        keyed("pgbench_accounts", param(0), true)
    );
}

// ---- pgbench -i -----------------------------------------------------------

#[test]
fn pgbench_initialization() {
    for sql in [
        "drop table if exists pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers",
        "create table pgbench_history(tid int,bid int,aid    int,delta int,mtime timestamp,filler char(22))",
        "truncate table pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers",
        "vacuum analyze pgbench_branches",
        "alter table pgbench_branches add primary key (bid)",
    ] {
        assert_eq!(simple(sql), Plan::AllShards, "{sql}");
    }
    assert_eq!(
        simple("insert into pgbench_branches(bid,bbalance) values(1,0)"),
        Plan::Insert {
            table: Arc::from("pgbench_branches"),
            rows: vec![param(0)]
        }
    );
    let copy = Plan::Copy(CopyPlan {
        table: Arc::from("pgbench_accounts"),
        columns: None,
        from_stdin: true,
        format: CopyFormat::Text,
        delimiter: b'\t',
        header: false,
        quote: b'"',
        escape: b'"',
    });
    assert_eq!(simple("copy pgbench_accounts from stdin"), copy.clone());
    assert_eq!(
        simple("copy pgbench_accounts from stdin with (freeze on)"),
        copy
    );
    assert_eq!(
        agg_funcs(&simple("select count(*) from pgbench_branches")),
        vec![(AggFunc::Count, false)]
    );
}

// ---- COPY -----------------------------------------------------------------

#[test]
fn copy_variants() {
    let Plan::Copy(c) =
        simple("COPY pgbench_history (tid, BID, \"aid\") FROM STDIN WITH CSV HEADER DELIMITER ';'")
    else {
        panic!("not a copy plan");
    };
    assert_eq!(
        c.columns,
        Some(vec![
            "tid".to_string(),
            "bid".to_string(),
            "aid".to_string()
        ])
    );
    assert_eq!(
        (c.format, c.delimiter, c.header, c.quote, c.escape),
        (CopyFormat::Csv, b';', true, b'"', b'"')
    );
    let Plan::Copy(c) = simple("COPY public.pgbench_accounts TO STDOUT (FORMAT csv, QUOTE '''', ESCAPE '\\', HEADER MATCH)")
    else {
        panic!("not a copy plan");
    };
    assert!(!c.from_stdin);
    assert_eq!(
        (c.format, c.quote, c.escape, c.header),
        (CopyFormat::Csv, b'\'', b'\\', true)
    );
    let Plan::Copy(c) = simple("COPY pgbench_accounts TO STDOUT (FORMAT binary)") else {
        panic!("not a copy plan");
    };
    assert_eq!(c.format, CopyFormat::Binary);
    // COPY (query): planned like its query.
    assert_eq!(simple("COPY (SELECT 1) TO STDOUT"), Plan::AnyShard);
    assert_eq!(
        simple("COPY (SELECT * FROM pgbench_accounts WHERE aid = 5) TO STDOUT"),
        Plan::Keyed {
            keys: vec![KeyRef {
                table: Arc::from("pgbench_accounts"),
                key: KeyExpr::Const("5".into()),
            }],
            read_only: true,
        }
    );
    let Plan::CopyQuery(c) = simple(
        "COPY (SELECT bid, count(*) FROM pgbench_accounts GROUP BY bid) TO STDOUT (FORMAT csv, FORCE_QUOTE *, NULL 'x')",
    ) else {
        panic!("not a COPY (query) plan");
    };
    assert!(matches!(c.merge, Merge::Gather(_)));
    assert_eq!(c.out.null, "x");
    assert_eq!(
        c.out.force_quote,
        crate::protocol::copy_out::ForceQuote::All
    );
    assert_error(
        &simple("COPY (SELECT 1) FROM STDIN"),
        "42601",
        "COPY (query) FROM",
    );
    assert_error(
        &simple("COPY pgbench_accounts FROM '/tmp/x'"),
        "0A000",
        "file",
    );
    assert_error(&simple("COPY nope FROM STDIN"), "0A000", "not declared");
    assert_error(
        &simple("COPY pgbench_accounts FROM STDIN (DELIMITER 'ab')"),
        "0A000",
        "delimiter",
    );
    assert_error(
        &simple("COPY pgbench_accounts FROM STDIN (FORMAT xml)"),
        "22023",
        "xml",
    );
    assert_eq!(simple("COPY pg_catalog.pg_class TO STDOUT"), Plan::AnyShard);
    // COPY plans depend on option literals: different delimiters, different plans.
    let p = Planner::new(10);
    let (a, _) = p.plan_simple("COPY pgbench_accounts FROM STDIN (DELIMITER ',')", &Pgbench);
    let (b, _) = p.plan_simple("COPY pgbench_accounts FROM STDIN (DELIMITER '|')", &Pgbench);
    assert!(
        matches!((&*a, &*b), (Plan::Copy(x), Plan::Copy(y)) if x.delimiter == b',' && y.delimiter == b'|')
    );
}

// ---- catalog and utility --------------------------------------------------

#[test]
fn catalog_queries_go_to_any_shard() {
    for sql in [
        "SELECT 1",
        "SELECT version()",
        "SELECT now()",
        "SELECT * FROM pg_catalog.pg_class",
        "SELECT * FROM pg_class WHERE relname = 'x'",
        "SELECT table_name FROM information_schema.tables",
        "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relname OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default",
        "SELECT n.nspname as \"Schema\", c.relname as \"Name\", CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' END as \"Type\", pg_catalog.pg_get_userbyid(c.relowner) as \"Owner\" FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r','p','v','m','S','f','') AND n.nspname <> 'pg_catalog' AND n.nspname !~ '^pg_toast' AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1,2",
        "SELECT * FROM generate_series(1, 10) g",
        "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
        "SHOW server_version",
        "VALUES (1, 2)",
    ] {
        assert_eq!(simple(sql), Plan::AnyShard, "{sql}");
    }
}

#[test]
fn set_statements() {
    assert_eq!(
        simple("SET search_path TO x"),
        Plan::Set {
            local: false,
            reset_all: false
        }
    );
    assert_eq!(
        simple("SET LOCAL statement_timeout = 5"),
        Plan::Set {
            local: true,
            reset_all: false
        }
    );
    assert_eq!(
        simple("RESET ALL"),
        Plan::Set {
            local: false,
            reset_all: true
        }
    );
    assert_eq!(
        simple("DISCARD ALL"),
        Plan::Set {
            local: false,
            reset_all: true
        }
    );
}

#[test]
fn transaction_statements() {
    assert_eq!(
        simple("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY, DEFERRABLE"),
        Plan::Transaction(TxnStmt::Begin {
            sql: "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY, DEFERRABLE".into()
        })
    );
    assert_eq!(simple("commit"), Plan::Transaction(TxnStmt::Commit));
    assert_eq!(simple("abort"), Plan::Transaction(TxnStmt::Rollback));
    assert_eq!(
        simple("ROLLBACK TO SAVEPOINT s1"),
        Plan::Transaction(TxnStmt::Savepoint)
    );
    assert_error(
        &simple("PREPARE TRANSACTION 'gid'"),
        "0A000",
        "two-phase commit",
    );
    assert_error(
        &simple("COMMIT PREPARED 'gid'"),
        "0A000",
        "two-phase commit",
    );
    assert_error(
        &simple("ROLLBACK PREPARED 'gid'"),
        "0A000",
        "two-phase commit",
    );
}

// ---- scatter / merge ------------------------------------------------------

#[test]
fn scatter_merges() {
    assert_eq!(
        simple("SELECT aid, abalance FROM pgbench_accounts WHERE abalance > 0"),
        scatter("pgbench_accounts", Merge::Concat, true)
    );
    assert_eq!(
        agg_funcs(&simple("SELECT count(*) AS n, sum(abalance), min(aid) lo, max(aid) FROM pgbench_accounts WHERE bid = 1")),
        vec![(AggFunc::Count, false), (AggFunc::Sum, false), (AggFunc::Min, false), (AggFunc::Max, false)]
    );
    assert_eq!(
        simple("SELECT * FROM pgbench_accounts WHERE abalance < 0 FOR UPDATE"),
        scatter("pgbench_accounts", Merge::Concat, false)
    );
    assert_eq!(
        simple("SELECT * FROM pgbench_accounts WHERE aid = 3 FOR UPDATE"),
        keyed("pgbench_accounts", param(0), false)
    );
    assert_subqueries(
        &simple("SELECT aid FROM pgbench_accounts UNION SELECT 1"),
        "set operation",
    );
    for (sql, construct) in [
        (
            "SELECT * FROM pgbench_accounts ORDER BY aid FOR UPDATE",
            "FOR UPDATE",
        ),
        (
            "SELECT bid, count(*) FROM pgbench_accounts GROUP BY ROLLUP (bid)",
            "ROLLUP",
        ),
        (
            "SELECT bid FROM pgbench_accounts ORDER BY count(*)",
            "aggregate without GROUP BY",
        ),
        (
            "SELECT * FROM pgbench_accounts LIMIT 1 + 1",
            "LIMIT expressions",
        ),
        (
            "SELECT aid FROM pgbench_accounts ORDER BY aid FETCH FIRST 3 ROWS WITH TIES",
            "WITH TIES",
        ),
        (
            "SELECT row_number() OVER () FROM pgbench_accounts",
            "window functions",
        ),
    ] {
        assert_error(&simple(sql), "0A000", construct);
    }
}

/// The final step of a gather plan, with its shards' SQL as text.
fn final_of(p: &Plan) -> (String, crate::plan::FinalStep, Option<Vec<usize>>) {
    let Plan::Scatter {
        merge: Merge::Gather(g),
        ..
    } = p
    else {
        panic!("gather expected: {p:?}");
    };
    let text = g
        .sql
        .iter()
        .map(|x| match x {
            SqlPiece::Text(t) => t.clone(),
            SqlPiece::Literal(i) => format!("${}", i + 1),
            SqlPiece::Limit => "ALL".into(),
        })
        .collect();
    let f = g.finish.as_ref().expect("final step");
    (text, (**f).clone(), g.shard_params.clone())
}

#[test]
fn final_step_plans() {
    // Partial aggregates on the shards, combined by PostgreSQL.
    let (shard, f, params) = final_of(&extended(
        "SELECT bid, sum(abalance) / count(*) AS a, round(avg(abalance), 2) FROM pgbench_accounts \
         WHERE aid > $1 GROUP BY bid HAVING max(abalance) - min(abalance) > $2 ORDER BY 2 DESC LIMIT $3",
    ));
    // avg's sum is sum(abalance)'s column.
    assert_eq!(
        shard,
        "SELECT bid, sum(abalance), count(*), count(abalance), max(abalance), min(abalance) \
         FROM pgbench_accounts WHERE aid > $1 GROUP BY bid"
    );
    assert_eq!(params, Some(vec![0]), "the shards get $1 only");
    assert!(!f.raw);
    assert_eq!(
        f.params,
        vec![1, 2],
        "HAVING and LIMIT parameters, after the arrays"
    );
    let text: String = f
        .sql
        .iter()
        .map(|x| match x {
            SqlPiece::Text(t) => t.as_str(),
            _ => "?",
        })
        .collect();
    assert!(
        text.contains("FROM UNNEST($__pgr_rows) AS _pgr (c0, c1, c2, c3, c4, c5)"),
        "{text}"
    );
    assert!(
        text.contains("GROUP BY _pgr.c0 HAVING $__pgr_agg_3_ - $__pgr_agg_4_ > $7"),
        "{text}"
    );
    assert!(text.contains("ORDER BY 2 DESC LIMIT $8"), "{text}");
    // An aggregate that cannot be split: raw rows, aggregated by PostgreSQL.
    let (shard, f, _) = final_of(&simple(
        "SELECT bid, string_agg(filler, ',' ORDER BY aid) FROM pgbench_accounts GROUP BY bid",
    ));
    assert!(f.raw);
    assert_eq!(shard, "SELECT bid, filler, aid FROM pgbench_accounts");
    // Router merges stay router merges.
    assert!(matches!(
        simple("SELECT bid, count(*) FROM pgbench_accounts GROUP BY bid"),
        Plan::Scatter { merge: Merge::Gather(g), .. } if g.finish.is_none()
    ));
    // Refused: a subquery among the aggregates, and a `*`.
    assert_error(
        &simple("SELECT sum(abalance) + (SELECT 1) FROM pgbench_accounts"),
        "0A000",
        "subqueries",
    );
}

#[test]
fn joins_and_subqueries() {
    // Every sharded table keyed: one shard (checked by the executor).
    assert_eq!(
        simple("SELECT * FROM pgbench_accounts a JOIN pgbench_history h ON h.aid = a.aid WHERE a.aid = 1 AND h.aid = 1"),
        Plan::Keyed {
            keys: vec![
                KeyRef { table: Arc::from("pgbench_accounts"), key: param(0) },
                KeyRef { table: Arc::from("pgbench_history"), key: param(1) },
            ],
            read_only: true
        }
    );
    // Key from an inner join's ON condition.
    assert_eq!(
        simple("SELECT * FROM pg_class c JOIN pgbench_accounts a ON a.aid = 4"),
        keyed("pgbench_accounts", param(0), true)
    );
    // A subquery with its own key.
    assert_eq!(
        simple("SELECT * FROM (SELECT * FROM pgbench_accounts WHERE aid = 9) s"),
        keyed("pgbench_accounts", param(0), true)
    );
    assert_error(
        &simple("SELECT * FROM pgbench_accounts a JOIN pgbench_branches b ON a.bid = b.bid WHERE a.aid = 1"),
        "0A000",
        "several sharded table",
    );
    assert_subqueries(
        &simple("SELECT (SELECT count(*) FROM pgbench_accounts)"),
        "subquery, CTE or set operation",
    );
    assert_subqueries(
        &simple("SELECT aid FROM pgbench_accounts UNION ALL SELECT aid FROM pgbench_accounts"),
        "several sharded table",
    );
    assert_subqueries(
        &simple("WITH t AS (SELECT * FROM pgbench_accounts) SELECT * FROM t"),
        "subquery, CTE or set operation",
    );
    // Writes too, marked as writes.
    let p = simple("DELETE FROM pgbench_accounts WHERE aid IN (SELECT aid FROM pgbench_history WHERE delta < 0)");
    assert_subqueries(&p, "several sharded table");
    assert!(p.writes());
    // A CTE does not hide a real table of the same name in its own body.
    assert_error(
        &simple("WITH nope AS (SELECT * FROM nope) SELECT * FROM nope"),
        "0A000",
        "not declared",
    );
    // Unqualified key column in a subquery with its own key.
    assert_eq!(
        simple(
            "SELECT * FROM pg_class WHERE oid IN (SELECT aid FROM pgbench_accounts WHERE aid = 2)"
        ),
        keyed("pgbench_accounts", param(0), true)
    );
    // OR is not a conjunction.
    assert_eq!(
        simple("SELECT * FROM pgbench_accounts WHERE aid = 1 OR aid = 2"),
        scatter("pgbench_accounts", Merge::Concat, true)
    );
    // A key compared to a column is not a key value.
    assert_eq!(
        simple("SELECT * FROM pgbench_accounts WHERE aid = bid"),
        scatter("pgbench_accounts", Merge::Concat, true)
    );
}

#[test]
fn correlated_subqueries_on_the_key_are_pushed_down() {
    let every_shard = |sql: &str| match simple(sql) {
        Plan::Scatter { table, .. } => assert_eq!(table.as_ref(), "pgbench_accounts", "{sql}"),
        other => panic!("{sql}: {other:?}"),
    };
    every_shard("SELECT a.aid FROM pgbench_accounts a WHERE EXISTS (SELECT 1 FROM pgbench_history h WHERE h.aid = a.aid)");
    every_shard("SELECT a.aid FROM pgbench_accounts a WHERE NOT EXISTS (SELECT 1 FROM pgbench_history h WHERE a.aid = h.aid AND h.delta > 0)");
    every_shard("SELECT a.aid, (SELECT count(*) FROM pgbench_history h WHERE h.aid = a.aid) FROM pgbench_accounts a ORDER BY 2 DESC LIMIT 3");
    every_shard("SELECT a.aid, x.n FROM pgbench_accounts a, LATERAL (SELECT count(*) AS n FROM pgbench_history h WHERE h.aid = a.aid) x");
    // Two levels deep, each joined on the key with the outer query.
    every_shard("SELECT a.aid FROM pgbench_accounts a WHERE EXISTS (SELECT 1 FROM pgbench_history h WHERE h.aid = a.aid AND h.delta IN (SELECT h2.delta FROM pgbench_history h2 WHERE h2.aid = a.aid))");
    // A key condition of the outer query still routes it to one shard.
    assert!(matches!(
        simple("SELECT a.aid FROM pgbench_accounts a WHERE a.aid = 5 AND EXISTS (SELECT 1 FROM pgbench_history h WHERE h.aid = a.aid)"),
        Plan::Keyed { .. }
    ));
    // Not on the key, not correlated, or through a name that a reference
    // table or CTE of the subquery shadows: refused.
    for sql in [
        "SELECT a.aid FROM pgbench_accounts a WHERE EXISTS (SELECT 1 FROM pgbench_history h WHERE h.bid = a.bid)",
        "SELECT a.aid FROM pgbench_accounts a WHERE EXISTS (SELECT 1 FROM pgbench_history h WHERE h.aid = a.bid)",
        "SELECT a.aid FROM pgbench_accounts a WHERE a.aid IN (SELECT h.aid FROM pgbench_history h)",
        "SELECT a.aid FROM pgbench_accounts a WHERE EXISTS (SELECT 1 FROM pgbench_history h JOIN countries a ON true WHERE h.aid = a.aid)",
        "SELECT a.aid FROM pgbench_accounts a WHERE EXISTS (WITH a AS (SELECT 1 AS aid) SELECT 1 FROM pgbench_history h, a WHERE h.aid = a.aid)",
        "SELECT a.aid FROM pgbench_accounts a WHERE EXISTS (SELECT 1 FROM pgbench_history h WHERE h.aid = a.aid OR h.delta = 0)",
        "SELECT a.aid FROM pgbench_accounts a, (SELECT h.aid FROM pgbench_history h) x WHERE x.aid = a.aid",
        "SELECT a.aid FROM pgbench_accounts a WHERE EXISTS (SELECT 1 FROM pgbench_history h WHERE h.aid = a.aid) OR EXISTS (SELECT 1 FROM pgbench_history h2)",
    ] {
        assert!(
            matches!(simple(sql), Plan::Subqueries { .. } | Plan::Error { .. }),
            "{sql}"
        );
    }
}

// ---- refusals ---------------------------------------------------------------

#[test]
fn undeclared_tables() {
    let plan = simple("SELECT * FROM t");
    assert_eq!(
        plan,
        Plan::Error {
            sqlstate: "0A000",
            message: "table \"t\" is not declared in the pg-router catalog".into(),
            hint: Some("declare it with: pg-router meta add-table --table t --column <sharding key column>, or as a table copied to every shard with: pg-router meta add-reference-table --table t".into()),
        }
    );
    assert_error(
        &simple("SELECT * FROM \"PgBench_Accounts\""),
        "0A000",
        "\"PgBench_Accounts\" is not declared",
    );
    assert_error(
        &simple("SELECT * FROM other.pgbench_accounts"),
        "0A000",
        "\"other.pgbench_accounts\" is not declared",
    );
    assert_eq!(
        simple("SELECT * FROM PUBLIC.PGBENCH_ACCOUNTS WHERE AID = 1"),
        keyed("pgbench_accounts", param(0), true)
    );
    assert_error(
        &simple("INSERT INTO t (a) VALUES (1)"),
        "0A000",
        "not declared",
    );
    assert_error(&simple("UPDATE t SET a = 1"), "0A000", "not declared");
    assert_error(&simple("DELETE FROM t"), "0A000", "not declared");
}

#[test]
fn insert_rules() {
    assert_eq!(
        simple("INSERT INTO pgbench_accounts (aid, bid, abalance) VALUES (1, 1, 0), (2, 1, -5), (-3, 1, 0) ON CONFLICT (aid) DO UPDATE SET abalance = EXCLUDED.abalance RETURNING aid"),
        Plan::Insert {
            table: Arc::from("pgbench_accounts"),
            rows: vec![param(0), param(3), KeyExpr::Param { index: 6, negate: true }]
        }
    );
    assert_eq!(
        extended("INSERT INTO pgbench_accounts (aid, bid) VALUES ($1::int8, $2), ('7', 1)"),
        Plan::Insert {
            table: Arc::from("pgbench_accounts"),
            rows: vec![param(0), KeyExpr::Const("7".into())]
        }
    );
    // No column list: the key's position comes from the table's columns.
    assert_eq!(
        simple("INSERT INTO pgbench_accounts VALUES (1, 2, 3)"),
        Plan::Insert {
            table: Arc::from("pgbench_accounts"),
            rows: vec![param(0)]
        }
    );
    assert_error(
        &simple("INSERT INTO pgbench_accounts VALUES (1, 2, 3, 'x', 5)"),
        "42601",
        "more expressions than target columns",
    );
    assert_eq!(
        simple("INSERT INTO pgbench_tellers VALUES (1, 2)"),
        Plan::NeedSchema {
            table: Arc::from("pgbench_tellers")
        }
    );
    assert_error(
        &simple("INSERT INTO pgbench_accounts (bid) VALUES (1)"),
        "0A000",
        "sharding key column \"aid\"",
    );
    // A key with a sequence default, omitted: generated by the router.
    let Plan::GenerateKey(g) =
        extended("INSERT INTO pgbench_history (tid, delta) VALUES ($1, 1), ($2, 2)")
    else {
        panic!("generated key expected");
    };
    assert_eq!((g.rows, g.key.as_str()), (2, "aid"));
    assert_eq!(g.form, crate::plan::InsertForm::ColumnList);
    assert_eq!(
        g.generator.sequence.as_deref(),
        Some("pgbench_history_aid_seq")
    );
    let Plan::GenerateKey(g) = simple("INSERT INTO pgbench_history VALUES (1, 2)") else {
        panic!("generated key expected");
    };
    assert_eq!(
        g.form,
        crate::plan::InsertForm::Columns(vec!["tid".into(), "bid".into()])
    );
    let Plan::GenerateKey(g) = simple("INSERT INTO pgbench_history VALUES (1, 2, DEFAULT, 4)")
    else {
        panic!("generated key expected");
    };
    assert_eq!(g.form, crate::plan::InsertForm::DefaultAt(2));
    assert_error(
        &simple("INSERT INTO pgbench_history VALUES (1, 2, DEFAULT, 4), (1, 2, 3, 4)"),
        "0A000",
        "DEFAULT in some rows only",
    );
    // INSERT ... SELECT: rows routed by the router (in the extended
    // protocol too: run at Execute with the Bind's values written in).
    let Plan::InsertSelect(p) = simple("INSERT INTO pgbench_accounts (aid) SELECT 1") else {
        panic!("INSERT ... SELECT plan expected");
    };
    assert_eq!((p.key_index, &*p.source), (Some(0), &Plan::AnyShard));
    assert!(matches!(
        extended(
            "INSERT INTO pgbench_accounts (aid, bid) SELECT aid + $1, bid FROM pgbench_accounts",
        ),
        Plan::InsertSelect(_)
    ));
    assert_error(
        &simple("INSERT INTO pgbench_accounts DEFAULT VALUES"),
        "0A000",
        "sharding key column \"aid\"",
    );
    assert_error(
        &simple("INSERT INTO pgbench_accounts (aid) VALUES (1 + 2)"),
        "0A000",
        "literal or a parameter",
    );
    assert_error(
        &simple(
            "INSERT INTO pgbench_accounts (aid) VALUES (1) ON CONFLICT (aid) DO UPDATE SET aid = 5",
        ),
        "0A000",
        "updating the sharding key",
    );
    assert_error(
        &simple("INSERT INTO pgbench_accounts (aid, bid) VALUES (1, (SELECT max(bid) FROM pgbench_branches))"),
        "0A000",
        "subqueries over sharded tables",
    );
    assert_error(
        &simple("INSERT INTO pg_class (oid) VALUES (1)"),
        "0A000",
        "system catalogs",
    );
}

#[test]
fn update_delete_rules() {
    assert_eq!(
        simple("UPDATE pgbench_accounts SET abalance = 0 WHERE bid = 1"),
        scatter("pgbench_accounts", Merge::Concat, false)
    );
    assert_eq!(
        simple("DELETE FROM pgbench_history WHERE aid = 3"),
        keyed("pgbench_history", param(0), false)
    );
    assert_eq!(
        simple("DELETE FROM pgbench_history"),
        scatter("pgbench_history", Merge::Concat, false)
    );
    assert_eq!(
        simple("UPDATE pgbench_accounts a SET abalance = 1 WHERE a.aid = 3 RETURNING *"),
        keyed("pgbench_accounts", param(1), false)
    );
    assert_error(
        &simple("UPDATE pgbench_accounts SET aid = 5 WHERE aid = 4"),
        "0A000",
        "updating the sharding key",
    );
    assert_error(
        &simple("UPDATE pgbench_accounts SET abalance = 0 FROM pgbench_branches b WHERE b.bid = pgbench_accounts.bid"),
        "0A000",
        "several sharded table",
    );
}

#[test]
fn refused_statement_kinds() {
    assert_error(&simple("DO $$ BEGIN PERFORM 1; END $$"), "0A000", "DO");
    assert_error(&simple("LISTEN chan"), "0A000", "LISTEN");
    assert_error(&simple("NOTIFY chan, 'x'"), "0A000", "NOTIFY");
    assert_error(&simple("PREPARE p AS SELECT 1"), "0A000", "PREPARE");
    assert_error(&simple("EXECUTE p"), "0A000", "EXECUTE");
    assert_error(&simple("DEALLOCATE p"), "0A000", "DEALLOCATE");
    assert_error(&simple("MERGE INTO pgbench_accounts a USING pgbench_history h ON a.aid = h.aid WHEN MATCHED THEN DELETE"), "0A000", "MERGE");
    assert_error(&simple("SELEC 1"), "42601", "syntax error");
    assert_error(&simple("SELECT 1; SELECT 2"), "42601", "several statements");
}

#[test]
fn explain() {
    assert_eq!(
        simple("EXPLAIN SELECT * FROM pgbench_accounts WHERE aid = 1"),
        keyed("pgbench_accounts", param(0), true)
    );
    assert_eq!(
        simple("EXPLAIN SELECT * FROM pgbench_accounts ORDER BY aid"),
        Plan::AnyShard
    );
    assert_eq!(
        simple("EXPLAIN ANALYZE INSERT INTO pgbench_history (aid) VALUES (1)"),
        keyed("pgbench_history", param(0), false)
    );
    assert_error(
        &simple("EXPLAIN ANALYZE DELETE FROM pgbench_history"),
        "0A000",
        "EXPLAIN ANALYZE",
    );
    assert_eq!(
        simple("EXPLAIN DELETE FROM pgbench_history"),
        Plan::AnyShard
    );
}

// ---- reference tables ---------------------------------------------------------

fn broadcast(table: &str) -> Plan {
    Plan::Broadcast {
        table: Arc::from(table),
    }
}

#[test]
fn reference_table_reads_go_to_any_shard() {
    for sql in [
        "SELECT * FROM countries WHERE code = 'fr'",
        "SELECT c.name, x.code FROM countries c JOIN public.currencies x ON x.code = c.currency",
        "SELECT * FROM countries, pg_class",
        "SELECT * FROM countries WHERE code IN (SELECT code FROM currencies)",
        "WITH c AS (SELECT * FROM countries) SELECT count(*) FROM c",
        "SELECT code FROM countries UNION SELECT code FROM currencies ORDER BY 1",
        // Locks only the copy on the shard it runs on (documented).
        "SELECT * FROM countries WHERE code = 'fr' FOR UPDATE",
        "COPY countries TO STDOUT",
        "COPY public.countries (code) TO STDOUT WITH (FORMAT csv)",
    ] {
        assert_eq!(simple(sql), Plan::AnyShard, "{sql}");
    }
    assert_eq!(
        extended("SELECT name FROM countries WHERE code = $1"),
        Plan::AnyShard
    );
    // Case folding and quoting as for sharded tables.
    assert_eq!(simple("SELECT * FROM PUBLIC.COUNTRIES"), Plan::AnyShard);
    assert_error(
        &simple("SELECT * FROM \"Countries\""),
        "0A000",
        "\"Countries\" is not declared",
    );
    assert_error(
        &simple("COPY countries FROM STDIN"),
        "0A000",
        "COPY FROM STDIN into reference table \"countries\"",
    );
}

#[test]
fn joins_with_reference_tables_route_by_the_sharded_table() {
    // Keyed: one shard, which has its own copy of countries.
    assert_eq!(
        simple("SELECT a.aid, c.name FROM pgbench_accounts a JOIN countries c ON c.code = a.filler WHERE a.aid = 5"),
        keyed("pgbench_accounts", param(0), true)
    );
    assert_eq!(
        extended("SELECT a.aid, c.name FROM pgbench_accounts a, countries c WHERE c.code = a.filler AND a.aid = $1"),
        keyed("pgbench_accounts", param(0), true)
    );
    assert_eq!(
        simple("SELECT * FROM pgbench_accounts WHERE aid = 1 AND filler IN (SELECT code FROM countries)"),
        keyed("pgbench_accounts", param(0), true)
    );
    // An outer join keeping reference rows is fine on one shard.
    assert_eq!(
        simple("SELECT * FROM countries c LEFT JOIN pgbench_accounts a ON a.filler = c.code WHERE a.aid = 3"),
        keyed("pgbench_accounts", param(0), true)
    );
    // No key: scattered; every shard joins its rows with its own copy.
    assert_eq!(
        simple(
            "SELECT a.aid, c.name FROM pgbench_accounts a JOIN countries c ON c.code = a.filler"
        ),
        scatter("pgbench_accounts", Merge::Concat, true)
    );
    assert_eq!(
        simple("SELECT a.aid FROM countries c, pgbench_accounts a WHERE c.code = a.filler AND c.name = 'France'"),
        scatter("pgbench_accounts", Merge::Concat, true)
    );
    assert_eq!(
        simple("SELECT * FROM pgbench_accounts a LEFT JOIN countries c ON c.code = a.filler"),
        scatter("pgbench_accounts", Merge::Concat, true)
    );
    assert_eq!(
        simple("SELECT * FROM countries c RIGHT JOIN pgbench_accounts a ON c.code = a.filler"),
        scatter("pgbench_accounts", Merge::Concat, true)
    );
    let p = simple("SELECT c.name, count(*) FROM pgbench_accounts a JOIN countries c ON c.code = a.filler GROUP BY c.name ORDER BY 2 DESC");
    assert_eq!(agg_funcs(&p), vec![(AggFunc::Count, false)]);
    // Shard pruning still applies.
    match simple("SELECT * FROM pgbench_accounts a JOIN countries c ON c.code = a.filler WHERE a.aid IN (1, 2)") {
        Plan::Scatter {
            prune: Some(KeySet::List(v)),
            ..
        } => assert_eq!(v.len(), 2),
        other => panic!("{other:?}"),
    }
    // Scattered outer joins keeping rows that no sharded table gave: every
    // shard would return them.
    for sql in [
        "SELECT * FROM countries c LEFT JOIN pgbench_accounts a ON a.filler = c.code",
        "SELECT * FROM pgbench_accounts a RIGHT JOIN countries c ON a.filler = c.code",
        "SELECT * FROM pgbench_accounts a FULL JOIN countries c ON a.filler = c.code",
        "SELECT c.name, count(a.aid) FROM countries c LEFT JOIN pgbench_accounts a ON a.filler = c.code GROUP BY c.name",
        "SELECT * FROM generate_series(1, 3) g LEFT JOIN pgbench_accounts a ON a.aid = g",
        "SELECT * FROM (countries c JOIN currencies x ON x.code = c.currency) LEFT JOIN pgbench_accounts a ON a.filler = c.code",
    ] {
        assert_error(&simple(sql), "0A000", "outer join", );
    }
    // A sharded table in a subquery of a reference-table query: as before.
    assert_subqueries(
        &simple("SELECT * FROM countries WHERE code IN (SELECT filler FROM pgbench_accounts)"),
        "subquery, CTE or set operation",
    );
}

#[test]
fn reference_table_writes_are_broadcast() {
    for sql in [
        "INSERT INTO countries (code, name) VALUES ('fr', 'France'), ('de', 'Germany')",
        "INSERT INTO countries VALUES ('fr', 'France')",
        "INSERT INTO countries DEFAULT VALUES",
        "INSERT INTO public.countries (code) SELECT code FROM currencies WHERE code <> 'x'",
        "INSERT INTO countries (code, name) VALUES ('fr', 'F') ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name RETURNING *",
        "INSERT INTO countries (code) VALUES ('fr') ON CONFLICT DO NOTHING",
        "UPDATE countries SET name = 'x' WHERE code = 'fr'",
        "UPDATE countries SET code = lower(code)",
        "UPDATE countries c SET name = x.name FROM currencies x WHERE x.code = c.code RETURNING c.code",
        "UPDATE countries SET name = (SELECT max(name) FROM currencies) WHERE code IN (SELECT relname FROM pg_class)",
        "DELETE FROM countries",
        "DELETE FROM countries WHERE code IN (SELECT code FROM currencies) RETURNING code",
        "DELETE FROM countries c USING currencies x WHERE x.code = c.code",
    ] {
        assert_eq!(simple(sql), broadcast("countries"), "{sql}");
    }
    assert_eq!(
        extended("UPDATE countries SET name = $1 WHERE code = $2"),
        broadcast("countries")
    );
    assert_eq!(
        extended("INSERT INTO currencies (code) VALUES ($1)"),
        broadcast("currencies")
    );
    assert_eq!(
        simple("EXPLAIN (ROUTER) DELETE FROM countries WHERE code = 'x'"),
        Plan::RouterExplain(Arc::new(broadcast("countries")))
    );
    // A plain EXPLAIN is the same on every shard; EXPLAIN ANALYZE would
    // write one copy only.
    assert_eq!(
        simple("EXPLAIN UPDATE countries SET name = 'x'"),
        Plan::AnyShard
    );
    assert_error(
        &simple("EXPLAIN ANALYZE DELETE FROM countries"),
        "0A000",
        "EXPLAIN ANALYZE",
    );
    // Writes to sharded tables may read reference tables, routed as before.
    assert_eq!(
        simple("UPDATE pgbench_accounts SET filler = (SELECT name FROM countries WHERE code = 'fr') WHERE aid = 7"),
        keyed("pgbench_accounts", param(1), false)
    );
    assert_eq!(
        simple("INSERT INTO pgbench_history (aid, filler) VALUES (1, (SELECT name FROM countries LIMIT 1))"),
        Plan::Insert {
            table: Arc::from("pgbench_history"),
            rows: vec![param(0)]
        }
    );
    assert_eq!(
        simple(
            "DELETE FROM pgbench_history h USING countries c WHERE c.code = h.filler AND h.aid = 3"
        ),
        keyed("pgbench_history", param(0), false)
    );
    assert_eq!(
        simple("UPDATE pgbench_accounts a SET filler = c.name FROM countries c WHERE c.code = a.filler"),
        scatter("pgbench_accounts", Merge::Concat, false)
    );
}

#[test]
fn reference_writes_reading_sharded_tables_are_refused() {
    for sql in [
        "INSERT INTO countries (code) SELECT filler FROM pgbench_accounts",
        "INSERT INTO countries (code) VALUES ((SELECT max(filler) FROM pgbench_accounts WHERE aid = 1))",
        "INSERT INTO countries (code) VALUES ('x') RETURNING (SELECT count(*) FROM pgbench_history)",
        "INSERT INTO countries (code) VALUES ('x') ON CONFLICT (code) DO UPDATE SET name = (SELECT max(filler) FROM pgbench_tellers)",
        "UPDATE countries SET name = 'x' WHERE code IN (SELECT filler FROM pgbench_accounts)",
        "UPDATE countries c SET name = a.filler FROM pgbench_accounts a WHERE a.aid = 1",
        "DELETE FROM countries USING pgbench_branches b WHERE b.bid = 1",
        "DELETE FROM countries WHERE EXISTS (SELECT 1 FROM pgbench_tellers) RETURNING *",
    ] {
        assert_error(&simple(sql), "0A000", "may read only reference tables and system catalogs");
    }
    assert_error(
        &extended(
            "UPDATE countries SET name = (SELECT filler FROM pgbench_accounts WHERE aid = $1)",
        ),
        "0A000",
        "not sharded table \"pgbench_accounts\"",
    );
    // Other refusals are unchanged.
    assert_error(
        &simple("UPDATE countries SET name = (SELECT x FROM nope)"),
        "0A000",
        "\"nope\" is not declared",
    );
    assert_error(
        &simple(
            "UPDATE countries c SET name = 'x' FROM currencies x JOIN pg_class p ON true, nope",
        ),
        "0A000",
        "not declared",
    );
    assert_error(
        &simple("WITH x AS (SELECT 1) DELETE FROM countries"),
        "0A000",
        "WITH ... INSERT/UPDATE/DELETE",
    );
}

// ---- cache ------------------------------------------------------------------

#[test]
fn cache_shares_one_plan_across_literal_values() {
    let p = Planner::new(100);
    let a = "SELECT abalance FROM pgbench_accounts WHERE aid = 17;";
    let b = "SELECT abalance FROM pgbench_accounts WHERE aid = 42;";
    let (pa, la) = p.plan_simple(a, &Pgbench);
    let (pb, lb) = p.plan_simple(b, &Pgbench);
    assert!(Arc::ptr_eq(&pa, &pb));
    assert_eq!(*pa, keyed("pgbench_accounts", param(0), true));
    assert_eq!(la.value(a, 0).as_deref(), Some("17"));
    assert_eq!(lb.value(b, 0).as_deref(), Some("42"));
    assert_eq!(p.cached(), 1);
    // Extended protocol: cached by exact text.
    let e1 = p.plan_extended("SELECT 1 FROM pgbench_accounts WHERE aid = $1", &Pgbench);
    let e2 = p.plan_extended("SELECT 1 FROM pgbench_accounts WHERE aid = $1", &Pgbench);
    assert!(Arc::ptr_eq(&e1, &e2));
    p.clear();
    assert_eq!(p.cached(), 0);
}

#[test]
fn cache_is_bounded() {
    let p = Planner::new(3);
    for t in [
        "pgbench_accounts",
        "pgbench_history",
        "pgbench_tellers",
        "pgbench_branches",
        "pg_class",
    ] {
        p.plan_simple(&format!("SELECT * FROM {t}"), &Pgbench);
        assert!(p.cached() <= 3);
    }
    let none = Planner::new(0);
    none.plan_simple("SELECT 1", &Pgbench);
    assert_eq!(none.cached(), 0);
}

#[test]
fn begin_text_is_not_shared_between_shapes() {
    let p = Planner::new(10);
    let (a, _) = p.plan_simple("BEGIN READ ONLY", &Pgbench);
    let (b, _) = p.plan_simple("BEGIN", &Pgbench);
    assert_eq!(
        *a,
        Plan::Transaction(TxnStmt::Begin {
            sql: "BEGIN READ ONLY".into()
        })
    );
    assert_eq!(
        *b,
        Plan::Transaction(TxnStmt::Begin {
            sql: "BEGIN".into()
        })
    );
}

#[test]
fn unparseable_shape_falls_back_to_the_original_text() {
    let p = Planner::new(10);
    // `numeric($1,$2)` does not parse: the original text is planned with a
    // constant key, and the next statement of that shape gets its own key.
    let a = "SELECT abalance::numeric(10,2) FROM pgbench_accounts WHERE aid = 17";
    let b = "SELECT abalance::numeric(10,2) FROM pgbench_accounts WHERE aid = 42";
    assert_eq!(
        *p.plan_simple(a, &Pgbench).0,
        keyed("pgbench_accounts", KeyExpr::Const("17".into()), true)
    );
    assert_eq!(
        *p.plan_simple(b, &Pgbench).0,
        keyed("pgbench_accounts", KeyExpr::Const("42".into()), true)
    );
    // Without a constant key the fallback plan is shared by the shape.
    let c = "SELECT abalance::numeric(10,2) FROM pgbench_accounts";
    let (pc1, _) = p.plan_simple(c, &Pgbench);
    let (pc2, _) = p.plan_simple(
        "SELECT abalance::numeric(12,4) FROM pgbench_accounts",
        &Pgbench,
    );
    assert!(Arc::ptr_eq(&pc1, &pc2));
    assert_eq!(*pc1, scatter("pgbench_accounts", Merge::Concat, true));
}

#[test]
fn simple_text_with_parameters_is_planned_as_written() {
    // `$1` is not valid in a simple query; the shard will say so. The
    // planner must not read it as literal 0.
    assert_eq!(
        simple("SELECT * FROM pgbench_accounts WHERE aid = $1"),
        scatter("pgbench_accounts", Merge::Concat, true)
    );
}

#[test]
fn string_keys_and_escapes() {
    let p = Planner::new(10);
    let sql = "SELECT * FROM pgbench_accounts WHERE aid = E'it\\'s' AND bid = 'x''y'";
    let (plan, lits) = p.plan_simple(sql, &Pgbench);
    assert_eq!(*plan, keyed("pgbench_accounts", param(0), true));
    assert_eq!(lits.value(sql, 0).as_deref(), Some("it's"));
    assert_eq!(lits.value(sql, 1).as_deref(), Some("x'y"));
    let sql = "SELECT * FROM pgbench_accounts WHERE aid = $tag$a'b$tag$";
    let (plan, lits) = p.plan_simple(sql, &Pgbench);
    assert_eq!(*plan, keyed("pgbench_accounts", param(0), true));
    assert_eq!(lits.value(sql, 0).as_deref(), Some("a'b"));
}

// ---- robustness -------------------------------------------------------------

#[test]
fn malformed_input_never_panics() {
    let p = Planner::new(50);
    for sql in [
        "",
        ";",
        "'",
        "\"",
        "$$",
        "$a$",
        "/*",
        "--",
        "E'\\",
        "U&'\\",
        "SELECT (",
        "SELECT )",
        "INSERT",
        "INSERT INTO",
        "INSERT INTO pgbench_accounts (aid) VALUES",
        "COPY",
        "COPY pgbench_accounts",
        "UPDATE",
        "SELECT 'é",
        "é",
        "SELECT $",
        "SELECT $1$",
        "BEGIN; COMMIT",
        "SELECT 1e",
        "SELECT 0x",
        "x'",
        "b'",
        "SELECT * FROM pgbench_accounts WHERE aid = ",
        "EXPLAIN",
        "EXPLAIN ANALYZE",
        "WITH",
        "VALUES",
        "TABLE",
        "SET",
        "SHOW",
        "\u{0}",
        "SELECT '\u{0}'",
    ] {
        let _ = p.plan_simple(sql, &Pgbench);
        let _ = p.plan_extended(sql, &Pgbench);
        let _ = split_statements(sql);
        let _ = insert_values_spans(sql);
    }
}

#[test]
fn long_operator_chains_are_refused_not_crashed() {
    // Planned in a thread with a 2 MiB stack, like a tokio worker, just
    // under and far over the operator limit, for several chain shapes.
    fn chain(head: &str, term: &str, ops_per_term: usize, tail: &str, ops: usize) -> String {
        let mut s = String::from(head);
        for _ in 0..ops / ops_per_term {
            s.push_str(term);
        }
        s.push_str(tail);
        s
    }
    let limit = parse::MAX_OPERATORS - 8;
    let shapes: Vec<(String, String)> = vec![
        (
            chain(
                "SELECT * FROM pgbench_accounts WHERE aid = 1",
                " OR aid = 1",
                2,
                "",
                limit,
            ),
            chain(
                "SELECT * FROM pgbench_accounts WHERE aid = 1",
                " OR aid = 1",
                2,
                "",
                100_000,
            ),
        ),
        (
            chain(
                "SELECT * FROM pgbench_accounts WHERE aid = 1",
                " AND bid = 1",
                2,
                "",
                limit,
            ),
            chain(
                "SELECT * FROM pgbench_accounts WHERE aid = 1",
                " AND bid = 1",
                2,
                "",
                100_000,
            ),
        ),
        (
            chain(
                "SELECT count(*) FROM pgbench_accounts WHERE filler = 'a'",
                " || 'a'",
                1,
                "",
                limit,
            ),
            chain(
                "SELECT count(*) FROM pgbench_accounts WHERE filler = 'a'",
                " || 'a'",
                1,
                "",
                100_000,
            ),
        ),
        (
            chain(
                "SELECT sum(abalance)",
                " + 1",
                1,
                " FROM pgbench_accounts",
                limit,
            ),
            chain(
                "SELECT sum(abalance)",
                " + 1",
                1,
                " FROM pgbench_accounts",
                100_000,
            ),
        ),
        (
            chain(
                "SELECT * FROM pgbench_accounts WHERE aid = 1",
                "::int8",
                1,
                "",
                limit,
            ),
            chain(
                "SELECT * FROM pgbench_accounts WHERE aid = 1",
                "::int8",
                1,
                "",
                100_000,
            ),
        ),
    ];
    let h = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let p = Planner::new(10);
            shapes
                .iter()
                .map(|(ok, big)| {
                    (
                        (*p.plan_simple(ok, &Pgbench).0).clone(),
                        (*p.plan_simple(big, &Pgbench).0).clone(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .expect("spawn");
    let plans = h.join().expect("no stack overflow");
    assert_eq!(plans[0].0, scatter("pgbench_accounts", Merge::Concat, true));
    assert_eq!(plans[1].0, keyed("pgbench_accounts", param(0), true));
    assert_eq!(agg_funcs(&plans[2].0), vec![(AggFunc::Count, false)]);
    // Expressions over aggregates: finished by PostgreSQL over the
    // shards' partial aggregates.
    assert!(
        matches!(&plans[3].0, Plan::Scatter { merge: Merge::Gather(g), .. } if g.finish.is_some()),
        "final step expected"
    );
    assert_eq!(plans[4].0, keyed("pgbench_accounts", param(0), true));
    for (_, big) in &plans {
        assert_error(big, "54001", "too complex");
    }
}

#[test]
fn several_statements_are_refused() {
    assert_error(&simple("BEGIN; SELECT 1"), "42601", "several statements");
    assert_error(
        &simple("SET x = 1; SELECT 2"),
        "42601",
        "several statements",
    );
    assert_error(&extended("BEGIN; SELECT 1"), "42601", "several statements");
    // A trailing semicolon or comment is one statement.
    assert_eq!(
        extended("BEGIN;"),
        Plan::Transaction(TxnStmt::Begin {
            sql: "BEGIN".into()
        })
    );
    assert_eq!(simple("SELECT 1; -- done"), Plan::AnyShard);
    // One CREATE FUNCTION with a SQL-standard body is one statement.
    assert_eq!(
        simple("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END"),
        Plan::AllShards
    );
}

#[test]
fn pgbench_startup_queries() {
    // pgbench (run mode) checks the partitioning of pgbench_accounts.
    let sql = "select o.n, p.partstrat, pg_catalog.count(i.inhparent) from pg_catalog.pg_class as c join pg_catalog.pg_namespace as n on (n.oid = c.relnamespace) cross join lateral (select pg_catalog.array_position(pg_catalog.current_schemas(true), n.nspname)) as o(n) left join pg_catalog.pg_partitioned_table as p on (p.partrelid = c.oid) left join pg_catalog.pg_inherits as i on (c.oid = i.inhparent) where c.relname = 'pgbench_accounts' and o.n is not null group by 1, 2 order by 1 asc limit 1";
    assert_eq!(simple(sql), Plan::AnyShard);
    assert_eq!(
        simple("SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relname OPERATOR(pg_catalog.~) '^(pgbench_accounts)$' COLLATE pg_catalog.default AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 2, 3;"),
        Plan::AnyShard
    );
    assert_eq!(
        agg_funcs(&simple("select count(*) from pgbench_branches")),
        vec![(AggFunc::Count, false)]
    );
    assert_eq!(
        simple("insert into pgbench_tellers(tid,bid,tbalance) values (1,1,0)"),
        Plan::Insert {
            table: Arc::from("pgbench_tellers"),
            rows: vec![param(0)]
        }
    );
    assert_eq!(
        simple("alter table pgbench_accounts add primary key (aid)"),
        Plan::AllShards
    );
}

#[test]
fn fuzzed_fragments_never_panic() {
    const PIECES: &[&str] = &[
        "SELECT ",
        "INSERT INTO pgbench_accounts (aid, bid) VALUES ",
        "(1, 'x')",
        ", ",
        "(",
        ")",
        "'",
        "''",
        "E'\\'",
        "$$",
        "$t$",
        "\"",
        "/*",
        "*/",
        "--",
        "\n",
        ";",
        " WHERE aid = ",
        "-",
        "1.5e",
        "0x",
        "$1",
        "é",
        "ü'",
        "COPY ",
        " FROM STDIN ",
        "WITH (",
        "FORMAT csv",
        "DELIMITER ",
        "U&'",
        "B'",
        "X'",
        "N'",
        "UPDATE pgbench_tellers SET ",
        "tid = ",
        " AND ",
        " OR ",
        "BEGIN ATOMIC ",
        "CREATE FUNCTION ",
        "END",
        "count(*)",
        " FROM pgbench_branches",
        "pg_catalog.",
        "::int8",
        " IN (",
        "EXPLAIN ",
        "ANALYZE ",
        "SET LOCAL ",
        "ROLLBACK TO ",
        "\u{0}",
        " VALUES ",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let p = Planner::new(64);
    for _ in 0..3000 {
        let n = (rnd() % 8 + 1) as usize;
        let mut sql = String::new();
        for _ in 0..n {
            sql.push_str(PIECES[(rnd() % PIECES.len() as u64) as usize]);
        }
        let (_, lits) = p.plan_simple(&sql, &Pgbench);
        for i in 0..=lits.len() {
            let _ = lits.value(&sql, i);
            let _ = lits.value("short", i);
        }
        let _ = p.plan_extended(&sql, &Pgbench);
        for s in split_statements(&sql) {
            let _ = p.plan_simple(s, &Pgbench);
        }
        if let Some(sp) = insert_values_spans(&sql) {
            assert!(sp.prefix_end <= sp.suffix_start && sp.suffix_start <= sql.len());
            for r in &sp.rows {
                assert!(sql.get(r.clone()).is_some());
            }
        }
    }
}

#[test]
fn key_spellings() {
    for sql in [
        "SELECT * FROM pgbench_accounts WHERE aid = 1::bigint",
        "SELECT * FROM \"pgbench_accounts\" WHERE \"aid\" = 1",
        "SELECT * FROM public.pgbench_accounts WHERE public.pgbench_accounts.aid = 1",
        "SELECT * FROM pgbench_accounts WHERE pgbench_accounts.aid = '1'",
        "SELECT * FROM pgbench_accounts WHERE (aid = 1) AND (bid = 2 OR bid = 3)",
        "SELECT * FROM pgbench_accounts WHERE 1 = aid",
        "SELECT * FROM pgbench_accounts WHERE aid = int8 '1'",
        "SELECT * FROM pgbench_accounts WHERE aid = (1)",
        "SELECT * FROM pgbench_accounts AS x WHERE x.aid IN (1)",
    ] {
        assert_eq!(
            simple(sql),
            keyed("pgbench_accounts", param(0), true),
            "{sql}"
        );
    }
    // A different table's qualifier does not key this one.
    assert_eq!(
        simple("SELECT * FROM pgbench_accounts a WHERE b.aid = 1"),
        scatter("pgbench_accounts", Merge::Concat, true)
    );
    // Quoted mixed case is a different column.
    assert_eq!(
        simple("SELECT * FROM pgbench_accounts WHERE \"AID\" = 1"),
        scatter("pgbench_accounts", Merge::Concat, true)
    );
}

/// `users(id)` sharded, owning lookup vindexes on `email` and `name`.
struct Users;

impl SchemaView for Users {
    fn key_column(&self, table: &str) -> Option<&str> {
        match table {
            "users" => Some("id"),
            "users_email_lookup" => Some("email"),
            _ => None,
        }
    }

    fn lookups(&self, table: &str) -> Vec<(String, Arc<str>)> {
        match table {
            "users" => vec![
                ("email".into(), Arc::from("users_email_lookup")),
                ("name".into(), Arc::from("users_name_lookup")),
            ],
            _ => Vec::new(),
        }
    }
}

fn users(sql: &str) -> Plan {
    let (p, _) = Planner::new(100).plan_simple(sql, &Users);
    (*p).clone()
}

#[test]
fn lookup_vindex_routing() {
    let lookup = |p: &Plan| match p {
        Plan::Scatter { lookup, .. } => lookup.clone(),
        Plan::Owned { inner, .. } => match &**inner {
            Plan::Scatter { lookup, .. } => lookup.clone(),
            other => panic!("{other:?}"),
        },
        other => panic!("not a scatter: {other:?}"),
    };
    let l = lookup(&users(
        "SELECT * FROM users u WHERE u.email = 'a@b' AND age > 3",
    ))
    .unwrap();
    assert_eq!(&*l.lookup_table, "users_email_lookup");
    assert_eq!(l.column, "email");
    assert_eq!(l.value, param(0));
    // The sharding key wins over a lookup column.
    assert!(matches!(
        users("SELECT * FROM users WHERE email = 'a' AND id = 3"),
        Plan::Keyed { .. }
    ));
    // Only equalities of the statement's own WHERE conjunction count.
    assert_eq!(
        lookup(&users("SELECT * FROM users WHERE email = 'a' OR id = 1")),
        None
    );
    assert_eq!(
        lookup(&users("SELECT * FROM users WHERE email LIKE 'a%'")),
        None
    );
    let l = lookup(&users("DELETE FROM users WHERE name = 'x'")).unwrap();
    assert_eq!(l.column, "name");
    // Extended protocol: parameters.
    let (p, _) = (
        Planner::new(10).plan_extended("SELECT id FROM users WHERE email = $1", &Users),
        (),
    );
    assert_eq!(lookup(&p).unwrap().value, param(0));
}

#[test]
fn lookup_vindex_maintenance_plans() {
    let owned = |p: Plan| match p {
        Plan::Owned { inner, write } => ((*inner).clone(), (*write).clone()),
        other => panic!("not owned: {other:?}"),
    };
    let (inner, w) = owned(users(
        "INSERT INTO users (id, name, email) VALUES (1, 'a', 'x'), (2, NULL, 'y'::text)",
    ));
    assert!(matches!(inner, Plan::Insert { ref rows, .. } if rows.len() == 2));
    assert_eq!(w.lookups.len(), 2);
    assert_eq!(w.lookups[0].column, "email");
    match &w.kind {
        OwnedKind::Insert { values } => {
            // email: literal 2 ('x'), then the cast literal 'y' (NULL is
            // not a literal); name: 'a', then NULL.
            assert_eq!(values[0], vec![Some(param(2)), Some(param(4))]);
            assert_eq!(values[1], vec![Some(param(1)), None]);
        }
        other => panic!("{other:?}"),
    }
    // A lookup column not listed: no value for any row.
    let (_, w) = owned(users("INSERT INTO users (id) VALUES (1)"));
    match &w.kind {
        OwnedKind::Insert { values } => assert_eq!(values, &vec![vec![None], vec![None]]),
        other => panic!("{other:?}"),
    }
    // UPDATE assigning one lookup column: pre-select with the statement's WHERE.
    let (inner, w) = owned(users("UPDATE users SET email = 'n', age = 3 WHERE id = 7"));
    assert!(matches!(inner, Plan::Keyed { .. }));
    assert_eq!(w.lookups.len(), 1);
    match &w.kind {
        OwnedKind::Rows { select, new } => {
            let text: String = select
                .iter()
                .map(|p| match p {
                    SqlPiece::Text(t) => t.clone(),
                    SqlPiece::Literal(i) => format!("<{i}>"),
                    SqlPiece::Limit => "<limit>".into(),
                })
                .collect();
            assert_eq!(
                text,
                "SELECT \"id\", \"email\" FROM users WHERE id = <2> FOR UPDATE"
            );
            assert_eq!(new, &Some(vec![Some(param(0))]));
        }
        other => panic!("{other:?}"),
    }
    // UPDATE not assigning a lookup column: a plain plan.
    assert!(matches!(
        users("UPDATE users SET age = 1 WHERE id = 2"),
        Plan::Keyed { .. }
    ));
    // DELETE: every lookup, scatter without a key.
    let (inner, w) = owned(users("DELETE FROM users AS u WHERE u.age > 3"));
    assert!(matches!(inner, Plan::Scatter { .. }));
    assert_eq!(w.lookups.len(), 2);
    // Refusals.
    for sql in [
        "INSERT INTO users (id, email) VALUES (1, lower('A'))",
        "INSERT INTO users (id, email) VALUES (1, 'a') ON CONFLICT DO NOTHING",
        "UPDATE users SET email = email || 'x' WHERE id = 1",
        "UPDATE users SET (email, name) = ('a', 'b') WHERE id = 1",
        "DELETE FROM users USING t2 WHERE users.id = t2.id",
    ] {
        assert!(
            matches!(
                users(sql),
                Plan::Error {
                    sqlstate: "0A000",
                    ..
                }
            ),
            "{sql}: {:?}",
            users(sql)
        );
    }
    assert!(users("INSERT INTO users (id, email) VALUES (1, 'a')").writes());
    assert!(matches!(
        users("COPY users FROM STDIN"),
        Plan::Error {
            sqlstate: "0A000",
            ..
        }
    ));
    assert!(matches!(users("COPY users TO STDOUT"), Plan::Copy(_)));
}

#[test]
fn merged_wildcards_are_written_out_from_the_columns() {
    // The column count is known at planning time: no Describe round trip.
    let p = simple("SELECT * FROM pgbench_accounts ORDER BY abalance LIMIT 3");
    assert_eq!(
        shard_text(&p),
        "SELECT pgbench_accounts.\"aid\", pgbench_accounts.\"bid\", pgbench_accounts.\"abalance\", pgbench_accounts.\"filler\", abalance FROM pgbench_accounts ORDER BY abalance LIMIT <limit>"
    );
    assert_eq!(gather(&p).visible, Some(4));
    // DISTINCT * and GROUP BY with * group by the written-out columns.
    let g = gather(&simple("SELECT DISTINCT * FROM pgbench_accounts a"));
    assert_eq!(g.visible, Some(4));
    assert_eq!(g.grouping.as_ref().map(|g| g.keys.len()), Some(4));
    let g = gather(&simple(
        "SELECT * FROM pgbench_accounts GROUP BY aid, bid, abalance, filler ORDER BY 3",
    ));
    assert_eq!(g.visible, Some(4));
    // `t.*` of a join: that table's columns, qualified by its alias.
    let p = simple("SELECT h.*, a.abalance FROM pgbench_accounts a JOIN pgbench_history h ON a.aid = h.aid ORDER BY 1 LIMIT 2");
    assert!(
        shard_text(&p)
            .starts_with("SELECT h.\"tid\", h.\"bid\", h.\"aid\", h.\"delta\", a.abalance"),
        "{}",
        shard_text(&p)
    );
    assert_eq!(gather(&p).visible, Some(5));
    // Columns not read yet: read first.
    assert!(matches!(
        simple("SELECT * FROM pgbench_tellers ORDER BY 1"),
        Plan::NeedSchema { table } if &*table == "pgbench_tellers"
    ));
    assert!(matches!(
        extended("SELECT * FROM pgbench_accounts a JOIN pgbench_tellers t ON a.aid = t.tid ORDER BY 1"),
        Plan::NeedSchema { table } if &*table == "pgbench_tellers"
    ));
    // Column aliases name their own columns: the `*` stays and the shards
    // describe it.
    let p = simple("SELECT * FROM pgbench_accounts AS a (x, y) ORDER BY 1");
    assert_eq!(gather(&p).visible, None);
    // Concatenated rows need no column count.
    assert!(matches!(
        simple("SELECT * FROM pgbench_tellers"),
        Plan::Scatter {
            merge: Merge::Concat,
            ..
        }
    ));
}
