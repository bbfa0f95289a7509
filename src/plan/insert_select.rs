//! `INSERT INTO sharded_table [(columns)] SELECT ...` (Citus's INSERT ...
//! SELECT, two ways):
//!
//! * **co-located**: the SELECT reads one sharded table of the target's
//!   keyspace (with the same key type) on its shards without merging, and
//!   the target's key is the source's sharding key column as it is: every
//!   row stays on its shard, so each shard runs the statement itself (a
//!   multi-shard write, 2PC);
//! * **through the router** ([`Plan::InsertSelect`]): the SELECT runs like
//!   any SELECT (merged where needed), the router groups its rows by the
//!   shard their key (or a generated key) names, and each shard inserts its
//!   rows from arrays (`INSERT ... SELECT * FROM unnest($1, ...)`), all in
//!   one transaction.

use std::sync::Arc;

use sqlparser::ast::{
    Expr, Ident, Insert, ObjectName, ObjectNamePart, Query, SelectItem, SetExpr, Statement,
};

use super::aggregates::item_expr;
use super::analyze::ParamMode;
use super::names::{last_part, norm_ident};
use super::rewrite::unnest_from;
use super::template::template;
use super::types::{unsupported, GatherPlan, InsertSelect, Merge, Plan};
use super::SchemaView;

/// The plan of `ins` (into sharded `table`, key column `key`) whose
/// source `source` is a query, not VALUES.
pub(crate) fn plan_insert_select(
    ins: &Insert,
    source: &Query,
    source_plan: Plan,
    table: Arc<str>,
    key: String,
    schema: &dyn SchemaView,
    mode: ParamMode,
) -> Plan {
    if source.with.is_some() {
        return unsupported(
            "INSERT ... WITH ... SELECT into a sharded table is not supported yet",
            None,
        );
    }
    let SetExpr::Select(sel) = source.body.as_ref() else {
        return unsupported(
            format!("INSERT into sharded table \"{table}\" from set operations (UNION, ...) is not supported yet"),
            Some("insert the rows of each part with its own INSERT ... SELECT"),
        );
    };
    let wildcard = sel.projection.iter().any(|i| item_expr(i).is_none());
    // The target columns, in the SELECT's order.
    let mut columns: Vec<String> = if ins.columns.is_empty() {
        let Some(ts) = schema.table_schema(&table) else {
            return Plan::NeedSchema { table };
        };
        let n = if wildcard {
            ts.columns.len()
        } else {
            sel.projection.len().min(ts.columns.len())
        };
        ts.columns[..n].iter().map(|c| c.name.clone()).collect()
    } else {
        ins.columns
            .iter()
            .map(|c| last_part(c).unwrap_or_default())
            .collect()
    };
    let key_index = columns.iter().position(|c| *c == key);
    let generator = match key_index {
        Some(_) => None,
        None => {
            let Some(ts) = schema.table_schema(&table) else {
                return Plan::NeedSchema { table };
            };
            match ts.key_generator(&key) {
                Some(g) => Some(g),
                None => {
                    return unsupported(
                        format!("INSERT into sharded table \"{table}\" must include its sharding key column \"{key}\""),
                        Some("select the key's value, or define the column as serial, bigserial or GENERATED ... AS IDENTITY so the router generates it"),
                    )
                }
            }
        }
    };
    match source_plan {
        Plan::Error { .. } => return source_plan,
        Plan::Subqueries { message, hint, .. } => {
            return Plan::Subqueries {
                message,
                hint,
                read_only: false,
            }
        }
        _ => {}
    }
    // Co-located: the statement runs on the source's shards as it is.
    if let (Some(k), false) = (key_index, wildcard) {
        if let Some(p) = colocated(&source_plan, sel.projection.get(k), &table, schema) {
            return p;
        }
    }
    let gather = match &source_plan {
        Plan::Scatter {
            merge: Merge::Gather(g),
            ..
        } => g.clone(),
        Plan::Scatter {
            lookup: Some(_), ..
        } => {
            return unsupported(
                "INSERT ... SELECT routed through a lookup vindex is not supported yet",
                None,
            )
        }
        Plan::Scatter {
            merge: Merge::NeedsText,
            ..
        } => {
            return Plan::Scatter {
                table,
                prune: None,
                lookup: None,
                merge: Merge::NeedsText,
                read_only: false,
            }
        }
        Plan::Scatter { .. } | Plan::Keyed { .. } | Plan::AnyShard => Arc::new(GatherPlan {
            sql: template(&source.to_string(), mode, None, None, false),
            hidden: 0,
            visible: None,
            grouping: None,
            order: Vec::new(),
            limit: None,
            offset: None,
            distinct_on: 0,
            steps: Vec::new(),
            shard_params: None,
            finish: None,
            verdict: Default::default(),
        }),
        _ => {
            return unsupported(
                "INSERT ... SELECT of this query into a sharded table is not supported yet",
                None,
            )
        }
    };
    // The INSERT each shard runs over the arrays of its rows.
    let width = if wildcard {
        columns.len()
    } else {
        sel.projection.len()
    };
    if generator.is_some() {
        columns.truncate(width);
        columns.push(key.clone());
    }
    let mut shard_ins = ins.clone();
    shard_ins.columns = columns
        .iter()
        .map(|c| ObjectName(vec![ObjectNamePart::Identifier(Ident::with_quote('"', c))]))
        .collect();
    let mut src = source.clone();
    let mut unnest_sel = sel.clone();
    unnest_sel.projection = vec![SelectItem::Wildcard(Default::default())];
    unnest_sel.from = unnest_from(columns.len());
    unnest_sel.selection = None;
    unnest_sel.group_by = sqlparser::ast::GroupByExpr::Expressions(Vec::new(), Vec::new());
    unnest_sel.having = None;
    unnest_sel.distinct = None;
    src.body = Box::new(SetExpr::Select(unnest_sel));
    src.order_by = None;
    src.limit_clause = None;
    src.fetch = None;
    shard_ins.source = Some(Box::new(src));
    let mut text = Statement::Insert(shard_ins).to_string();
    if generator.as_ref().is_some_and(|g| g.always) {
        if let Some(at) = text.find("SELECT * FROM UNNEST") {
            text.insert_str(at, "OVERRIDING SYSTEM VALUE ");
        }
    }
    Plan::InsertSelect(Arc::new(InsertSelect {
        table,
        source: Arc::new(source_plan),
        gather,
        key_index,
        generator,
        insert_sql: template(&text, mode, None, None, false),
        returning: ins.returning.is_some(),
    }))
}

/// The co-located plan of an INSERT ... SELECT whose select item `item`
/// gives the target's key: the source is one sharded table of the same
/// keyspace and key type, read without merging, and `item` is its sharding
/// key column. None otherwise.
fn colocated(
    source: &Plan,
    item: Option<&SelectItem>,
    target: &str,
    schema: &dyn SchemaView,
) -> Option<Plan> {
    let e = item.and_then(item_expr)?;
    let col = match e {
        Expr::Identifier(i) => norm_ident(i),
        Expr::CompoundIdentifier(v) => norm_ident(v.last()?),
        _ => return None,
    };
    let same = |src: &str| {
        schema.key_column(src) == Some(col.as_str())
            && schema.key_info(src).is_some()
            && schema.key_info(src) == schema.key_info(target)
    };
    match source {
        Plan::Scatter {
            table,
            prune,
            lookup: None,
            merge: Merge::Concat,
            ..
        } if same(table) => Some(Plan::Scatter {
            table: table.clone(),
            prune: prune.clone(),
            lookup: None,
            merge: Merge::Concat,
            read_only: false,
        }),
        Plan::Keyed { keys, .. } if keys.len() == 1 && same(&keys[0].table) => Some(Plan::Keyed {
            keys: keys.clone(),
            read_only: false,
        }),
        _ => None,
    }
}
