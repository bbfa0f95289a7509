//! Co-located joins: sharded table occurrences of one keyspace and key
//! type joined on their sharding keys (`a.key = b.key`, inner or outer,
//! through several tables) have every joined row on one shard, so the
//! statement runs on each shard like a single-table one (Citus's
//! co-located joins); and the refusal of the joins that are not.

use sqlparser::ast::{BinaryOperator, Expr};

use super::names::column_ref;
use super::occ::{Occ, Routing};
use super::types::{KeyRef, Plan};
use super::walk::conjuncts;
use super::SchemaView;

/// The routing of occurrences all in the outermost FROM, of one
/// keyspace and key type, connected by sharding-key joins: every
/// joined row is on one shard, so the statement runs on each shard
/// (or on the one a key condition names) like a single-table one.
pub(crate) fn colocated(
    occs: &[Occ],
    key_joins: &[(usize, usize)],
    schema: &dyn SchemaView,
) -> Option<Routing> {
    let first = occs.first()?;
    let info = schema.key_info(&first.table)?;
    if !occs
        .iter()
        .all(|o| o.top && schema.key_info(&o.table) == Some(info))
    {
        return None;
    }
    // Union-find over the key joins.
    let mut parent: Vec<usize> = (0..occs.len()).collect();
    fn root(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    for &(a, b) in key_joins {
        let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
        parent[ra] = rb;
    }
    let r0 = root(&mut parent, 0);
    if (1..occs.len()).any(|i| root(&mut parent, i) != r0) {
        return None;
    }
    if occs.iter().any(|o| o.key.is_some()) {
        let keys = occs
            .iter()
            .filter_map(|o| {
                o.key.clone().map(|key| KeyRef {
                    table: o.table.clone(),
                    key,
                })
            })
            .collect();
        return Some(Routing::Keyed(keys));
    }
    Some(Routing::Single {
        table: first.table.clone(),
        key_col: first.key_col.clone(),
        top: true,
        prune: occs.iter().find_map(|o| o.prune.clone()),
        lookup: None,
    })
}

/// Records the sharding-key joins (`a.key = b.key`, both qualified) of
/// a conjunction among the scope's occurrences.
pub(crate) fn key_links(e: &Expr, local: &[usize], occs: &[Occ]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for x in conjuncts(e) {
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = x
        else {
            continue;
        };
        let (Some((Some(ql), cl)), Some((Some(qr), cr))) = (column_ref(left), column_ref(right))
        else {
            continue;
        };
        let find = |q: &str, c: &str| {
            local.iter().copied().find(|&i| {
                occs.get(i)
                    .is_some_and(|o| o.qualifier == q && o.key_col == c)
            })
        };
        if let (Some(a), Some(b)) = (find(&ql, &cl), find(&qr, &cr)) {
            if a != b {
                out.push((a, b));
            }
        }
    }
    out
}

/// The refusal of sharded table occurrences that are neither all keyed
/// nor co-located: 0A000 naming the tables and the missing condition.
pub(crate) fn refusal(occs: &[Occ]) -> Routing {
    let mut names: Vec<String> = Vec::new();
    for o in occs {
        let n = format!("\"{}\"", o.table);
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let unkeyed: Vec<&Occ> = occs.iter().filter(|o| o.key.is_none()).collect();
    let hint = match unkeyed.as_slice() {
            [a, b, ..] if a.top && b.top => format!(
                "join them on their sharding keys ({}.{} = {}.{}; tables of one keyspace), or add a condition like {}.{} = <value>",
                a.qualifier, a.key_col, b.qualifier, b.key_col, a.qualifier, a.key_col
            ),
            [o, ..] => format!("add a condition like {}.{} = <value>", o.qualifier, o.key_col),
            [] => String::new(),
        };
    Routing::Error(Plan::Error {
            sqlstate: "0A000",
            message: format!(
                "a statement over several sharded table references ({}) runs on several shards only when they are joined on their sharding keys (co-located) or each has an equality condition on its key; joins on other columns across shards and subqueries over other shards are not supported yet",
                names.join(", ")
            ),
            hint: (!hint.is_empty()).then_some(hint),
        })
}
