//! How the rows of a scattered SELECT are combined: plain concatenation
//! when nothing needs merging, else a [`GatherPlan`](super::GatherPlan)
//! built by [`super::gather`].

use sqlparser::ast::{GroupByExpr, LimitClause, Query, Select, SetExpr};

use super::aggregates::{contains_aggregate, contains_window, item_expr};
use super::analyze::ParamMode;
use super::gather::build_gather;
use super::types::Merge;

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
