//! How the rows of a scattered SELECT are combined: plain concatenation
//! when nothing needs merging, else a [`GatherPlan`](super::GatherPlan)
//! built by [`super::gather`].

use sqlparser::ast::{
    Expr, Function, GroupByExpr, LimitClause, Query, Select, SelectItem, SetExpr,
};

use super::analyze::ParamMode;
use super::gather::build_gather;
use super::names::last_part;
use super::types::Merge;
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

pub(crate) fn func_name(f: &Function) -> String {
    last_part(&f.name).unwrap_or_default().to_ascii_lowercase()
}

pub(crate) fn is_aggregate_call(f: &Function) -> bool {
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
pub(crate) fn contains_aggregate(e: &Expr) -> bool {
    contains_call(e, is_aggregate_call)
}

/// True if `e` calls a window function (not looking into subqueries).
fn contains_window(e: &Expr) -> bool {
    contains_call(e, |f| f.over.is_some())
}

pub(crate) fn item_expr(item: &SelectItem) -> Option<&Expr> {
    match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
        SelectItem::ExprWithAliases { expr, .. } => Some(expr),
        SelectItem::QualifiedWildcard(..) | SelectItem::Wildcard(_) => None,
    }
}

/// The merge for a scattered top-level query, or the name of the construct
/// that prevents it (e.g. `"window functions"`).
pub(crate) fn scatter_merge(q: &Query, mode: ParamMode) -> Result<Merge, String> {
    match q.body.as_ref() {
        SetExpr::Select(sel) => {
            // Window functions are named first: they usually come with
            // ORDER BY inside OVER (), which is not the query's ORDER BY.
            select_windows(sel)?;
            if needs_gather(q, sel) {
                build_gather(q, sel, mode)
            } else {
                Ok(Merge::Concat)
            }
        }
        SetExpr::Table(_) => {
            if q.order_by.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
                return Err("TABLE with ORDER BY/LIMIT".into());
            }
            Ok(Merge::Concat)
        }
        _ => Err("this query shape (set operations)".into()),
    }
}

/// True unless plain concatenation gives the right answer.
fn needs_gather(q: &Query, sel: &Select) -> bool {
    let grouped =
        !matches!(&sel.group_by, GroupByExpr::Expressions(v, m) if v.is_empty() && m.is_empty());
    let limited = match &q.limit_clause {
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => limit.is_some() || offset.is_some() || !limit_by.is_empty(),
        Some(LimitClause::OffsetCommaLimit { .. }) => true,
        None => false,
    };
    grouped
        || limited
        || q.order_by.is_some()
        || q.fetch.is_some()
        || sel.having.is_some()
        || matches!(
            sel.distinct,
            Some(sqlparser::ast::Distinct::Distinct | sqlparser::ast::Distinct::On(_))
        )
        || sel
            .projection
            .iter()
            .filter_map(item_expr)
            .any(contains_aggregate)
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
