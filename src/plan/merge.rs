//! How the rows of a scattered SELECT are combined: plain concatenation
//! when nothing needs merging, else a [`GatherPlan`](super::GatherPlan)
//! built by [`super::gather`].

use sqlparser::ast::{GroupByExpr, LimitClause, Query, Select, SetExpr};

use super::aggregates::{contains_aggregate, contains_window, item_expr};
use super::analyze::ParamMode;
use super::gather::build_gather;
use super::star::{expand, Star};
use super::types::Merge;
use super::SchemaView;

/// Why a scattered query has no merge.
pub(crate) enum NoMerge {
    /// The construct that prevents it (e.g. `"window functions"`).
    Construct(String),
    /// Its `*` needs the columns of this table (catalog name), not read yet.
    NeedSchema(String),
}

impl From<String> for NoMerge {
    fn from(s: String) -> Self {
        NoMerge::Construct(s)
    }
}

/// The merge for a scattered top-level query. A `*` in a merged select
/// list is written out from the tables' columns first (`star.rs`).
pub(crate) fn scatter_merge(
    q: &Query,
    mode: ParamMode,
    schema: &dyn SchemaView,
) -> Result<Merge, NoMerge> {
    match q.body.as_ref() {
        SetExpr::Select(sel) => {
            // Window functions are named first: they usually come with
            // ORDER BY inside OVER (), which is not the query's ORDER BY.
            select_windows(sel)?;
            if !needs_gather(q, sel) {
                return Ok(Merge::Concat);
            }
            match expand(q, sel, schema) {
                Star::Keep => Ok(build_gather(q, sel, mode)?),
                Star::NeedSchema(t) => Err(NoMerge::NeedSchema(t)),
                Star::Expanded(q2) => match q2.body.as_ref() {
                    SetExpr::Select(s2) => Ok(build_gather(&q2, s2, mode)?),
                    _ => Err(NoMerge::Construct("this query shape".into())),
                },
            }
        }
        SetExpr::Table(_) => {
            if q.order_by.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
                return Err(NoMerge::Construct("TABLE with ORDER BY/LIMIT".into()));
            }
            Ok(Merge::Concat)
        }
        _ => Err(NoMerge::Construct(
            "this query shape (set operations)".into(),
        )),
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
