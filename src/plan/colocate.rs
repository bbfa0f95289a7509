//! Co-located joins: sharded table occurrences of one keyspace and key
//! type joined on their sharding keys (`a.key = b.key`, inner or outer,
//! through several tables) have every joined row on one shard, so the
//! statement runs on each shard like a single-table one (Citus's
//! co-located joins). A subquery whose table is joined on the key with a
//! table of the outer query (`EXISTS (SELECT 1 FROM s WHERE s.k = t.k)`)
//! only needs that outer row's shard: it is pushed down likewise. And the
//! refusal of what is neither.

use sqlparser::ast::{BinaryOperator, Expr};

use super::names::column_ref;
use super::occ::{Occ, Routing};
use super::types::{KeyRef, Plan};
use super::walk::conjuncts;
use super::SchemaView;

/// The routing of occurrences of one keyspace and key type connected by
/// sharding-key joins, those in subqueries each joined on the key with one
/// of the outermost FROM: every joined row is on one shard, so the
/// statement runs on each shard (or on the one a key condition of the
/// outermost FROM names) like a single-table one.
pub(crate) fn colocated(
    occs: &[Occ],
    key_joins: &[(usize, usize)],
    schema: &dyn SchemaView,
) -> Option<Routing> {
    let first = occs.iter().find(|o| o.top)?;
    let info = schema.key_info(&first.table)?;
    let linked_to_top = |i: usize| {
        key_joins
            .iter()
            .any(|&(a, b)| (a == i && occs[b].top) || (b == i && occs[a].top))
    };
    if !occs
        .iter()
        .enumerate()
        .all(|(i, o)| schema.key_info(&o.table) == Some(info) && (o.top || linked_to_top(i)))
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
    // Key conditions in subqueries do not restrict the outer rows.
    if occs.iter().any(|o| o.top && o.key.is_some()) {
        let keys = occs
            .iter()
            .filter(|o| o.top)
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
        prune: occs.iter().filter(|o| o.top).find_map(|o| o.prune.clone()),
        lookup: None,
    })
}

/// Records the sharding-key joins (`a.key = b.key`, both qualified) of
/// a conjunction among the scope's occurrences (`local`) and those of
/// enclosing queries (`outer`, the nearest last); `other_names` are the
/// names of the FROM items without sharded table seen so far.
pub(crate) fn key_links(
    e: &Expr,
    local: &[usize],
    outer: &[usize],
    other_names: &[String],
    occs: &[Occ],
) -> Vec<(usize, usize)> {
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
        // The name is looked up as PostgreSQL does: this scope's FROM
        // items first, then those of enclosing queries (a correlated
        // subquery), the nearest first. A name that is (also) a FROM item
        // without sharded table (reference table, CTE, derived table...)
        // is not trusted: it may shadow the outer table.
        let find = |q: &str, c: &str| {
            if other_names.iter().any(|n| n == q) {
                return None;
            }
            let by_name = |i: &usize| occs.get(*i).is_some_and(|o| o.qualifier == q);
            let i = local
                .iter()
                .copied()
                .find(by_name)
                .or_else(|| outer.iter().rev().copied().find(by_name))?;
            (occs.get(i)?.key_col == c).then_some(i)
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
                "a statement over several sharded table references ({}) runs on several shards only when they are joined on their sharding keys (co-located) or each has an equality condition on its key; joins on other columns across shards are not supported",
                names.join(", ")
            ),
            hint: (!hint.is_empty()).then_some(hint),
        })
}
