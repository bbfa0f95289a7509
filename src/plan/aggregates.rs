//! Recognizing aggregate and window function calls in the expressions of a
//! SELECT (built-in aggregate names only), and the expression of a select
//! item.

use sqlparser::ast::{Expr, Function, SelectItem};

use super::names::last_part;
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

/// The called function's name without schema, lower case (ASCII).
pub(crate) fn func_name(f: &Function) -> String {
    last_part(&f.name).unwrap_or_default().to_ascii_lowercase()
}

/// True if `f` is an aggregate call: not a window call (no OVER), and
/// with WITHIN GROUP, a FILTER or a built-in aggregate's name.
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
pub(crate) fn contains_window(e: &Expr) -> bool {
    contains_call(e, |f| f.over.is_some())
}

/// The expression of a select item; `None` for `*` and `t.*`.
pub(crate) fn item_expr(item: &SelectItem) -> Option<&Expr> {
    match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
        SelectItem::ExprWithAliases { expr, .. } => Some(expr),
        SelectItem::QualifiedWildcard(..) | SelectItem::Wildcard(_) => None,
    }
}
