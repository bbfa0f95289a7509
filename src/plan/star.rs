//! `SELECT *` of a merged SELECT written out as its columns, from the
//! tables' columns the router has read (schema awareness, `schema.rs`):
//! the merge then knows the column count at planning time (no Describe
//! round trip per execution) and can group or de-duplicate by the columns
//! (`SELECT DISTINCT *`, `SELECT * ... GROUP BY key`).
//!
//! Expansion follows PostgreSQL's rule for `*` (docs §7.3.1 "The Select
//! List"): the columns of every FROM item, FROM items in order, each
//! table's columns in `attnum` order; `t.*` the columns of item `t`. Only
//! plain tables joined with ON (or cross joins) are expanded: `USING` and
//! `NATURAL` joins merge columns, and derived tables, functions and column
//! aliases name their own, so those keep the `*`.

use sqlparser::ast::{
    Expr, Ident, JoinConstraint, JoinOperator, ObjectName, ObjectNamePart, Query, Select,
    SelectItem, SelectItemQualifiedWildcardKind, SetExpr, TableFactor, WildcardAdditionalOptions,
};

use super::names::{classify_object, norm_ident, object_parts, TableClass};
use super::SchemaView;

/// The outcome of [`expand`].
pub(crate) enum Star {
    /// Nothing to expand, or a form that keeps its `*`.
    Keep,
    /// The query with every `*` and `t.*` of its select list written out
    /// as qualified column references.
    Expanded(Box<Query>),
    /// The columns of this table (catalog name) are not known yet.
    NeedSchema(String),
}

/// One FROM item a `*` may read: how its columns are qualified, the name a
/// `t.*` matches, and the table's catalog name.
struct Item {
    qualifier: Vec<Ident>,
    /// Folded alias, or the folded parts of the table name.
    names: Vec<String>,
    aliased: bool,
    table: String,
}

/// `q` with the wildcards of its (SELECT) body expanded; see [`Star`].
pub(crate) fn expand(q: &Query, sel: &Select, schema: &dyn SchemaView) -> Star {
    if !sel.projection.iter().any(is_wildcard) {
        return Star::Keep;
    }
    let Some(items) = from_items(sel, schema) else {
        return Star::Keep;
    };
    let mut projection = Vec::with_capacity(sel.projection.len() + 8);
    for item in &sel.projection {
        let (chosen, opts): (Vec<&Item>, _) = match item {
            SelectItem::Wildcard(o) => (items.iter().collect(), o),
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(n), o) => {
                let Some(parts) = object_parts(n) else {
                    return Star::Keep;
                };
                let found: Vec<&Item> = items.iter().filter(|i| matches(i, &parts)).collect();
                if found.len() != 1 {
                    return Star::Keep;
                }
                (found, o)
            }
            SelectItem::QualifiedWildcard(..) => return Star::Keep,
            other => {
                projection.push(other.clone());
                continue;
            }
        };
        if !plain(opts) {
            return Star::Keep;
        }
        for i in chosen {
            let Some(ts) = schema.table_schema(&i.table) else {
                return Star::NeedSchema(i.table.clone());
            };
            for c in &ts.columns {
                let mut ids = i.qualifier.clone();
                ids.push(Ident::with_quote('"', c.name.as_str()));
                projection.push(SelectItem::UnnamedExpr(Expr::CompoundIdentifier(ids)));
            }
        }
    }
    let mut out = q.clone();
    if let SetExpr::Select(s) = out.body.as_mut() {
        s.projection = projection;
    }
    Star::Expanded(Box::new(out))
}

fn is_wildcard(item: &SelectItem) -> bool {
    matches!(
        item,
        SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
    )
}

/// True if a wildcard has none of the other dialects' options.
fn plain(o: &WildcardAdditionalOptions) -> bool {
    o.opt_ilike.is_none()
        && o.opt_exclude.is_none()
        && o.opt_except.is_none()
        && o.opt_replace.is_none()
        && o.opt_rename.is_none()
        && o.opt_alias.is_none()
}

/// True if `t.*` (folded parts `parts`) names item `i`: its alias, or
/// (without one) its table name or the name's trailing parts.
fn matches(i: &Item, parts: &[String]) -> bool {
    if i.aliased {
        parts == i.names.as_slice()
    } else {
        i.names.ends_with(parts)
    }
}

/// The FROM items in order, or None if one is not a declared plain table
/// or a join merges columns.
fn from_items(sel: &Select, schema: &dyn SchemaView) -> Option<Vec<Item>> {
    let mut items = Vec::new();
    for twj in &sel.from {
        items.push(item(&twj.relation, schema)?);
        for j in &twj.joins {
            let constraint = match &j.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::FullOuter(c)
                | JoinOperator::CrossJoin(c) => c,
                _ => return None,
            };
            if !matches!(constraint, JoinConstraint::On(_) | JoinConstraint::None) {
                return None;
            }
            items.push(item(&j.relation, schema)?);
        }
    }
    (!items.is_empty()).then_some(items)
}

fn item(f: &TableFactor, schema: &dyn SchemaView) -> Option<Item> {
    let TableFactor::Table {
        name,
        alias,
        args: None,
        with_hints,
        version: None,
        with_ordinality: false,
        partitions,
        json_path: None,
        sample: None,
        index_hints,
    } = f
    else {
        return None;
    };
    if !with_hints.is_empty() || !partitions.is_empty() || !index_hints.is_empty() {
        return None;
    }
    let table = match classify_object(name, schema) {
        TableClass::Sharded { table, .. } | TableClass::Reference(table) => table.to_string(),
        _ => return None,
    };
    Some(match alias {
        Some(a) if !a.columns.is_empty() => return None,
        Some(a) => Item {
            qualifier: vec![a.name.clone()],
            names: vec![norm_ident(&a.name)],
            aliased: true,
            table,
        },
        None => Item {
            qualifier: idents(name)?,
            names: object_parts(name)?,
            aliased: false,
            table,
        },
    })
}

fn idents(name: &ObjectName) -> Option<Vec<Ident>> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(id) => Some(id.clone()),
            _ => None,
        })
        .collect()
}
