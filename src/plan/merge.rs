//! How the rows of a scattered SELECT can be combined: plain concatenation,
//! or a single row of re-aggregated `count/sum/min/max` values.

use sqlparser::ast::{
    DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments,
    GroupByExpr, LimitClause, Query, Select, SelectItem, SetExpr,
};

use super::names::last_part;
use super::types::{AggKind, Merge};
use super::walk::{expr_children, Node};

/// Built-in aggregate functions (a call to one of these makes a select item
/// an aggregate). User-defined aggregates cannot be recognized.
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "bit_and",
    "bit_or",
    "bit_xor",
    "json_agg",
    "jsonb_agg",
    "json_agg_strict",
    "jsonb_agg_strict",
    "json_object_agg",
    "jsonb_object_agg",
    "json_object_agg_strict",
    "jsonb_object_agg_strict",
    "json_object_agg_unique",
    "jsonb_object_agg_unique",
    "json_object_agg_unique_strict",
    "jsonb_object_agg_unique_strict",
    "json_arrayagg",
    "json_objectagg",
    "xmlagg",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "corr",
    "covar_pop",
    "covar_samp",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "mode",
    "percentile_cont",
    "percentile_disc",
    "range_agg",
    "range_intersect_agg",
    "any_value",
];

fn func_name(f: &Function) -> String {
    last_part(&f.name).unwrap_or_default().to_ascii_lowercase()
}

fn is_aggregate_call(f: &Function) -> bool {
    f.over.is_none()
        && (!f.within_group.is_empty()
            || f.filter.is_some()
            || AGGREGATES.contains(&func_name(f).as_str()))
}

/// True if `e` has a function call satisfying `pred` (not looking into
/// subqueries). Iterative: operator chains make deep trees.
fn contains_call(e: &Expr, pred: fn(&Function) -> bool) -> bool {
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        if let Expr::Function(f) = x {
            if pred(f) {
                return true;
            }
        }
        expr_children(x, &mut |n| {
            if let Node::Expr(c) = n {
                stack.push(c);
            }
        });
    }
    false
}

/// True if `e` calls an aggregate (not looking into subqueries).
fn contains_aggregate(e: &Expr) -> bool {
    contains_call(e, is_aggregate_call)
}

/// True if `e` calls a window function (not looking into subqueries).
fn contains_window(e: &Expr) -> bool {
    contains_call(e, |f| f.over.is_some())
}

/// The mergeable aggregate `e` is exactly, or why it is not.
fn mergeable(mut e: &Expr) -> Result<AggKind, String> {
    while let Expr::Nested(x) = e {
        e = x;
    }
    let f = match e {
        Expr::Function(f) => f,
        _ => return Err("expressions over aggregates".into()),
    };
    let name = func_name(f);
    let kind = match name.as_str() {
        "count" => AggKind::Count,
        "sum" => AggKind::Sum,
        "min" => AggKind::Min,
        "max" => AggKind::Max,
        "avg" => return Err("avg()".into()),
        _ if is_aggregate_call(f) && AGGREGATES.contains(&name.as_str()) => {
            return Err(format!("aggregate {name}()"))
        }
        _ => return Err("expressions over aggregates".into()),
    };
    if f.filter.is_some() {
        return Err(format!("{name}() FILTER (...)"));
    }
    if !f.within_group.is_empty()
        || f.null_treatment.is_some()
        || !matches!(f.parameters, FunctionArguments::None)
    {
        return Err(format!("this form of {name}()"));
    }
    let FunctionArguments::List(list) = &f.args else {
        return Err(format!("this form of {name}()"));
    };
    if matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct)) {
        return Err(format!("{name}(DISTINCT ...)"));
    }
    if !list.clauses.is_empty() {
        return Err(format!("{name}() with ORDER BY or other clauses"));
    }
    match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if kind == AggKind::Count => Ok(kind),
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(_))] => Ok(kind),
        _ => Err(format!("this form of {name}()")),
    }
}

fn item_expr(item: &SelectItem) -> Option<&Expr> {
    match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
        SelectItem::ExprWithAliases { expr, .. } => Some(expr),
        SelectItem::QualifiedWildcard(..) | SelectItem::Wildcard(_) => None,
    }
}

/// Query-level clauses that cannot be merged across shards.
fn query_clauses(q: &Query) -> Result<(), String> {
    if q.order_by.is_some() {
        return Err("ORDER BY".into());
    }
    match &q.limit_clause {
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            if limit.is_some() || !limit_by.is_empty() {
                return Err("LIMIT".into());
            }
            if offset.is_some() {
                return Err("OFFSET".into());
            }
        }
        Some(LimitClause::OffsetCommaLimit { .. }) => return Err("LIMIT".into()),
        None => {}
    }
    if q.fetch.is_some() {
        return Err("FETCH FIRST".into());
    }
    Ok(())
}

/// The merge for a scattered top-level query, or the name of the construct
/// that prevents it (e.g. `"ORDER BY"`).
pub(crate) fn scatter_merge(q: &Query) -> Result<Merge, String> {
    match q.body.as_ref() {
        SetExpr::Select(sel) => {
            // Window functions are named first: they usually come with
            // ORDER BY inside OVER (), which is not the query's ORDER BY.
            select_windows(sel)?;
            select_clauses(sel)?;
            query_clauses(q)?;
            select_list(sel)
        }
        SetExpr::Table(_) => {
            query_clauses(q)?;
            Ok(Merge::Concat)
        }
        _ => Err("this query shape".into()),
    }
}

fn select_windows(sel: &Select) -> Result<(), String> {
    if !sel.named_window.is_empty()
        || sel
            .projection
            .iter()
            .filter_map(item_expr)
            .any(contains_window)
    {
        return Err("window functions".into());
    }
    Ok(())
}

fn select_clauses(sel: &Select) -> Result<(), String> {
    match &sel.group_by {
        GroupByExpr::All(_) => return Err("GROUP BY".into()),
        GroupByExpr::Expressions(v, m) if !v.is_empty() || !m.is_empty() => {
            return Err("GROUP BY".into())
        }
        _ => {}
    }
    if sel.having.is_some() {
        return Err("HAVING".into());
    }
    match &sel.distinct {
        Some(sqlparser::ast::Distinct::Distinct) => return Err("DISTINCT".into()),
        Some(sqlparser::ast::Distinct::On(_)) => return Err("DISTINCT ON".into()),
        _ => {}
    }
    Ok(())
}

fn select_list(sel: &Select) -> Result<Merge, String> {
    let any_agg = sel
        .projection
        .iter()
        .filter_map(item_expr)
        .any(contains_aggregate);
    if !any_agg {
        return Ok(Merge::Concat);
    }
    let mut kinds = Vec::with_capacity(sel.projection.len());
    for item in &sel.projection {
        let Some(e) = item_expr(item) else {
            return Err("mixing aggregates and plain columns".into());
        };
        if !contains_aggregate(e) {
            return Err("mixing aggregates and plain columns".into());
        }
        kinds.push(mergeable(e)?);
    }
    Ok(Merge::Aggregate(kinds))
}
