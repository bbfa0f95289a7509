//! Building a [`GatherPlan`]: how a multi-shard SELECT with ORDER BY,
//! LIMIT/OFFSET, aggregates, GROUP BY/HAVING, DISTINCT or DISTINCT ON is
//! rewritten for the shards and merged at the router.
//!
//! Rewrite rules (the shards' statement is the client's with):
//! * hidden columns appended to the select list: every ORDER BY expression
//!   (positions and output names resolved to the select item), every GROUP
//!   BY expression, the partial aggregates (`avg(x)` → `sum(x), count(x)`)
//!   and the DISTINCT aggregates' argument;
//! * grouped queries: HAVING, ORDER BY and LIMIT removed (the router
//!   finishes the groups), the DISTINCT aggregates' argument added to GROUP
//!   BY;
//! * other queries: ORDER BY kept (each shard sorts, the router merges),
//!   `LIMIT l OFFSET o` replaced by `LIMIT l + o`.
//!
//! Visible aggregate columns are left as written: their shard values are
//! not used, but they give the client's RowDescription PostgreSQL's exact
//! result type and column name.

use sqlparser::ast::{
    Expr, Function, GroupByExpr, LimitClause, OrderBy, OrderByExpr, OrderByKind, OrderByOptions,
    OrderBySort, Query, Select, SelectItem, SetExpr, Value,
};

use super::aggregates::{contains_aggregate, is_aggregate_call, item_expr};
use super::analyze::ParamMode;
use super::gather_builder::Builder;
use super::having::compile_having;
use super::template::{template, LIMIT_MARKER};
use super::types::{GatherPlan, Grouping, Merge, RowCount, SortKey, SortSource};

/// The aggregate call `e` is exactly (parentheses allowed), or why the
/// router cannot compute `e`.
fn as_agg_call(mut e: &Expr) -> Result<&Function, String> {
    while let Expr::Nested(x) = e {
        e = x;
    }
    match e {
        Expr::Function(f) if contains_aggregate(e) && is_aggregate_call(f) => Ok(f),
        _ => Err("expressions over aggregates".into()),
    }
}

/// A LIMIT/OFFSET value: a number, a placeholder, NULL or ALL (None).
fn row_count(e: &Expr, what: &str) -> Result<Option<RowCount>, String> {
    let mut neg = false;
    let mut e = e;
    loop {
        match e {
            Expr::Nested(x) => e = x,
            Expr::UnaryOp {
                op: sqlparser::ast::UnaryOperator::Minus,
                expr,
            } => {
                neg = !neg;
                e = expr;
            }
            _ => break,
        }
    }
    match e {
        Expr::Value(v) => match &v.value {
            Value::Null => Ok(None),
            Value::Number(n, _) => {
                let x: i64 = n.parse().map_err(|_| format!("{what} {n}"))?;
                Ok(Some(RowCount::Const(if neg { -x } else { x })))
            }
            Value::Placeholder(p) if !neg => {
                let n: usize = p
                    .strip_prefix('$')
                    .and_then(|d| d.parse().ok())
                    .ok_or_else(|| format!("{what} {p}"))?;
                Ok(Some(RowCount::Param(
                    n.checked_sub(1).ok_or_else(|| format!("{what} {p}"))?,
                )))
            }
            _ => Err(format!("this {what} value")),
        },
        _ => Err(format!("{what} expressions")),
    }
}

/// The 0-based column of a positional reference (`ORDER BY 2`).
fn position(e: &Expr) -> Option<usize> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse::<usize>().ok()?.checked_sub(1),
            _ => None,
        },
        _ => None,
    }
}

fn sort_opts(o: &OrderByOptions) -> Result<(bool, bool), String> {
    let desc = match o.sort {
        None | Some(OrderBySort::Asc) => false,
        Some(OrderBySort::Desc) => true,
        Some(OrderBySort::Using(_)) => return Err("ORDER BY ... USING".into()),
    };
    Ok((desc, o.nulls_first.unwrap_or(desc)))
}

fn order_exprs(q: &Query) -> Result<Vec<OrderByExpr>, String> {
    match &q.order_by {
        None => Ok(Vec::new()),
        Some(OrderBy {
            kind: OrderByKind::Expressions(v),
            interpolate: None,
        }) => {
            if v.iter().any(|o| o.with_fill.is_some()) {
                return Err("ORDER BY ... WITH FILL".into());
            }
            Ok(v.clone())
        }
        Some(_) => Err("this ORDER BY form".into()),
    }
}

/// (limit, offset) of the query.
fn limits(q: &Query) -> Result<(Option<RowCount>, Option<RowCount>), String> {
    let (mut limit, mut offset) = (None, None);
    match &q.limit_clause {
        Some(LimitClause::LimitOffset {
            limit: l,
            offset: o,
            limit_by,
        }) => {
            if !limit_by.is_empty() {
                return Err("LIMIT BY".into());
            }
            if let Some(l) = l {
                limit = row_count(l, "LIMIT")?;
            }
            if let Some(o) = o {
                offset = row_count(&o.value, "OFFSET")?;
            }
        }
        Some(LimitClause::OffsetCommaLimit { .. }) => return Err("LIMIT offset, count".into()),
        None => {}
    }
    if let Some(f) = &q.fetch {
        if f.with_ties {
            return Err("FETCH FIRST ... WITH TIES".into());
        }
        if f.percent {
            return Err("FETCH FIRST ... PERCENT".into());
        }
        limit = match &f.quantity {
            Some(e) => row_count(e, "FETCH FIRST")?,
            None => Some(RowCount::Const(1)),
        };
    }
    Ok((limit, offset))
}

/// Build the gather plan of a scattered SELECT that needs merging: merged
/// at the router where it can be, else (grouped SELECTs) finished by
/// PostgreSQL over the shards' rows (`final_step.rs`).
pub(crate) fn build_gather(q: &Query, sel: &Select, mode: ParamMode) -> Result<Merge, String> {
    match router_merge(q, sel, mode) {
        Err(_) if super::final_step::applies(q, sel) => {
            super::final_step::build_final(q, sel, mode)
        }
        r => r,
    }
}

/// The gather plan of a SELECT the router merges itself.
fn router_merge(q: &Query, sel: &Select, mode: ParamMode) -> Result<Merge, String> {
    if !q.locks.is_empty() {
        return Err("FOR UPDATE/SHARE with ORDER BY, LIMIT, DISTINCT or aggregates".into());
    }
    let group_exprs = super::gather_builder::group_exprs(sel)?;
    let has_agg = sel
        .projection
        .iter()
        .filter_map(item_expr)
        .any(contains_aggregate);
    let distinct = matches!(sel.distinct, Some(sqlparser::ast::Distinct::Distinct));
    let distinct_on = match &sel.distinct {
        Some(sqlparser::ast::Distinct::On(v)) => Some(v.clone()),
        _ => None,
    };
    let grouped = has_agg || !group_exprs.is_empty() || sel.having.is_some() || distinct;
    let wildcard = sel.projection.iter().any(|i| item_expr(i).is_none());
    let order = order_exprs(q)?;
    let (limit, offset) = limits(q)?;
    let mut b = Builder::new(mode, &sel.projection);
    let mut keys = Vec::with_capacity(order.len());
    let mut steps = Vec::new();
    let mut shard = q.clone();
    let plan_grouping;
    let mut distinct_on_len = 0;
    if grouped {
        if wildcard {
            return Err("SELECT * with GROUP BY, DISTINCT or aggregates".into());
        }
        // DISTINCT alone groups by the select list; with GROUP BY or
        // aggregates it de-duplicates the groups' output rows.
        let distinct_rows =
            distinct && (has_agg || !group_exprs.is_empty() || sel.having.is_some());
        let distinct = distinct && !distinct_rows;
        if distinct_on.is_some() {
            return Err("DISTINCT ON together with GROUP BY or aggregates".into());
        }
        for g in &group_exprs {
            let r = b.resolve(g, "GROUP BY")?;
            b.key(&r);
        }
        let mut outputs = Vec::with_capacity(sel.projection.len());
        for item in &sel.projection {
            let Some(e) = item_expr(item) else {
                return Err("SELECT *".into());
            };
            if distinct {
                b.key(e);
                outputs.push(None);
            } else if contains_aggregate(e) {
                let f = as_agg_call(e)?;
                outputs.push(Some(b.agg(f)?));
            } else {
                outputs.push(None);
            }
        }
        for o in &order {
            let (desc, nulls_first) = sort_opts(&o.options)?;
            let r = b.resolve(&o.expr, "ORDER BY")?;
            // PostgreSQL requires them in the select list (42P10); one the
            // router cannot match there is refused rather than sorted by.
            if distinct_rows && !sel.projection.iter().filter_map(item_expr).any(|e| *e == r) {
                return Err(
                    "SELECT DISTINCT with GROUP BY or aggregates ordered by an expression not written as in the select list"
                        .into(),
                );
            }
            let source = if contains_aggregate(&r) {
                SortSource::Agg(b.agg(as_agg_call(&r)?)?)
            } else {
                SortSource::Key(b.key(&r))
            };
            keys.push(SortKey {
                source,
                desc,
                nulls_first,
            });
        }
        let having = match &sel.having {
            Some(h) => Some(compile_having(&mut b, h)?),
            None => None,
        };
        let single = group_exprs.is_empty() && !distinct;
        // Shard statement: grouped by the client's keys (plus the DISTINCT
        // aggregates' argument), no HAVING/ORDER BY/LIMIT.
        let SetExpr::Select(s2) = shard.body.as_mut() else {
            return Err("this query shape".into());
        };
        // Extended protocol: parameters must stay referenced (with the same
        // inferred types), so HAVING becomes `(h) IS NULL OR true` (folded
        // away by the shards' planner) and LIMIT/OFFSET parameters are
        // referenced by `LIMIT ALL OFFSET 0 * $n`.
        s2.having = match (&s2.having, mode) {
            (Some(h), ParamMode::Keys) => Some(Expr::BinaryOp {
                left: Box::new(Expr::IsNull(Box::new(Expr::Nested(Box::new(h.clone()))))),
                op: sqlparser::ast::BinaryOperator::Or,
                right: Box::new(Expr::Value(Value::Boolean(true).into())),
            }),
            _ => None,
        };
        if !b.distinct_args.is_empty() {
            let mut g = group_exprs.clone();
            g.extend(b.distinct_args.iter().cloned());
            s2.group_by = GroupByExpr::Expressions(g, Vec::new());
        }
        shard.order_by = None;
        shard.fetch = None;
        let params =
            matches!(limit, Some(RowCount::Param(_))) || matches!(offset, Some(RowCount::Param(_)));
        shard.limit_clause =
            (params && mode == ParamMode::Keys).then(|| LimitClause::LimitOffset {
                limit: Some(Expr::Value(Value::Placeholder(LIMIT_MARKER.into()).into())),
                offset: None,
                limit_by: Vec::new(),
            });
        steps.push(format!(
            "hash aggregate at the router ({} group key{}, {} aggregate{})",
            b.keys.len(),
            if b.keys.len() == 1 { "" } else { "s" },
            b.aggs.len(),
            if b.aggs.len() == 1 { "" } else { "s" }
        ));
        if having.is_some() {
            steps.push("HAVING evaluated at the router".into());
        }
        if distinct_rows {
            steps.push("DISTINCT over the groups' rows at the router".into());
        }
        if !keys.is_empty() {
            steps.push(format!(
                "sort groups ({} key{})",
                keys.len(),
                if keys.len() == 1 { "" } else { "s" }
            ));
        }
        plan_grouping = Some(Grouping {
            keys: b.keys.clone(),
            aggs: b.aggs.iter().map(|(_, s)| s.clone()).collect(),
            outputs,
            having,
            single,
            distinct: distinct_rows,
        });
    } else {
        let mut order = order;
        if let Some(on) = &distinct_on {
            // The DISTINCT ON expressions must be the leading ORDER BY keys
            // (PostgreSQL checks this too); without ORDER BY they become it.
            if order.is_empty() {
                order = on
                    .iter()
                    .map(|e| OrderByExpr {
                        expr: e.clone(),
                        options: OrderByOptions::default(),
                        with_fill: None,
                    })
                    .collect();
                shard.order_by = Some(OrderBy {
                    kind: OrderByKind::Expressions(order.clone()),
                    interpolate: None,
                });
            }
            let lead: Vec<Expr> = order
                .iter()
                .take(on.len())
                .map(|o| b.resolve(&o.expr, "ORDER BY"))
                .collect::<Result<_, _>>()?;
            for e in on {
                let r = b.resolve(e, "DISTINCT ON")?;
                if !lead.contains(&r) {
                    // Equal expressions with literals differ in a normalized
                    // text (`g % $1` vs `g % $2`): compare the original.
                    if mode == ParamMode::Literals {
                        b.needs_text = true;
                        continue;
                    }
                    return Err(
                        "DISTINCT ON expressions that are not the leading ORDER BY expressions"
                            .into(),
                    );
                }
            }
            distinct_on_len = on.len();
            steps.push(format!(
                "DISTINCT ON ({} key{}) at the router",
                on.len(),
                if on.len() == 1 { "" } else { "s" }
            ));
        }
        for o in &order {
            let (desc, nulls_first) = sort_opts(&o.options)?;
            if let Some(col) = wildcard.then(|| position(&o.expr)).flatten() {
                // `SELECT * ... ORDER BY 2`: compare the visible column.
                keys.push(SortKey {
                    source: SortSource::Visible(col),
                    desc,
                    nulls_first,
                });
                continue;
            }
            let r = b.resolve(&o.expr, "ORDER BY")?;
            if contains_aggregate(&r) {
                return Err("ORDER BY an aggregate without GROUP BY".into());
            }
            keys.push(SortKey {
                source: SortSource::Hidden(b.hide(&r)),
                desc,
                nulls_first,
            });
        }
        if !keys.is_empty() {
            steps.push(format!(
                "merge sort of sorted shard streams ({} key{})",
                keys.len(),
                if keys.len() == 1 { "" } else { "s" }
            ));
        }
        shard.fetch = None;
        shard.limit_clause = if limit.is_some() || offset.is_some() {
            Some(LimitClause::LimitOffset {
                limit: Some(Expr::Value(Value::Placeholder(LIMIT_MARKER.into()).into())),
                offset: None,
                limit_by: Vec::new(),
            })
        } else {
            None
        };
        plan_grouping = None;
    }
    if b.needs_text {
        return Ok(Merge::NeedsText);
    }
    if limit.is_some() || offset.is_some() {
        steps.push(
            if grouped {
                "OFFSET/LIMIT at the router"
            } else {
                "shards return LIMIT + OFFSET rows; OFFSET/LIMIT at the router"
            }
            .into(),
        );
    }
    let SetExpr::Select(s2) = shard.body.as_mut() else {
        return Err("this query shape".into());
    };
    s2.projection
        .extend(b.hidden.iter().cloned().map(SelectItem::UnnamedExpr));
    let sql = template(&shard.to_string(), mode, limit, offset, grouped);
    Ok(Merge::Gather(std::sync::Arc::new(GatherPlan {
        sql,
        hidden: b.hidden.len(),
        visible: if wildcard {
            None
        } else {
            Some(sel.projection.len())
        },
        grouping: plan_grouping,
        order: keys,
        limit,
        offset,
        distinct_on: distinct_on_len,
        steps,
        shard_params: None,
        finish: None,
        verdict: Default::default(),
    })))
}
