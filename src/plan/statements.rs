//! Planning rules for parsed statements: SELECT, INSERT, UPDATE, DELETE,
//! EXPLAIN; every other parsed statement is refused. INSERT, UPDATE and
//! DELETE of a reference table become [`Plan::Broadcast`].

use std::sync::Arc;

use sqlparser::ast::{
    AssignmentTarget, Delete, Expr, FromTable, Insert, OnConflictAction, OnInsert, Query, SetExpr,
    Statement, TableFactor, TableObject, Update, UpdateTableFromKind,
};

use super::analyze::{Analyzer, ParamMode, Routing};
use super::merge::{scatter_merge, NoMerge};
use super::names::quote_ident;
use super::names::{classify_object, last_part, norm_ident, system_write, undeclared, TableClass};
use super::types::{
    unsupported, GeneratedInsert, InsertForm, KeyExpr, KeyRef, Merge, OwnedKind, OwnedLookup,
    OwnedWrite, Plan,
};
use super::SchemaView;

/// Plan one parsed statement. `kind` names the statement in errors (its
/// first keyword, upper case).
pub(crate) fn plan_statement(
    stmt: &Statement,
    schema: &dyn SchemaView,
    mode: ParamMode,
    kind: &str,
) -> Plan {
    match stmt {
        Statement::Query(q) => plan_query(q, schema, mode, kind),
        Statement::Insert(ins) => plan_insert(ins, schema, mode),
        Statement::Update(u) => plan_update(u, schema, mode),
        Statement::Delete(d) => plan_delete(d, schema, mode),
        Statement::Explain {
            statement,
            analyze,
            options,
            ..
        } => {
            let analyze = *analyze
                || options.iter().flatten().any(|o| {
                    norm_ident(&o.name) == "analyze"
                        && !matches!(&o.arg, Some(a) if matches!(a.to_string().to_ascii_lowercase().as_str(), "false" | "off" | "0"))
                });
            let router = options
                .iter()
                .flatten()
                .any(|o| norm_ident(&o.name) == "router");
            if router {
                return match plan_statement(statement, schema, mode, "EXPLAIN") {
                    p @ Plan::Scatter {
                        merge: Merge::NeedsText,
                        ..
                    } => p,
                    p => Plan::RouterExplain(Arc::new(p)),
                };
            }
            plan_explain(statement, analyze, schema, mode)
        }
        _ => unsupported(format!("{kind} is not supported through pg-router"), None),
    }
}

fn plan_query(q: &Query, schema: &dyn SchemaView, mode: ParamMode, kind: &str) -> Plan {
    match q.body.as_ref() {
        SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
            if q.with.is_some() {
                return unsupported("WITH ... INSERT/UPDATE/DELETE is not supported yet", None);
            }
            return plan_statement(s, schema, mode, kind);
        }
        _ => {}
    }
    let mut an = Analyzer::new(schema, mode);
    an.query(q, true);
    let read_only = q.locks.is_empty();
    match an.routing() {
        Routing::Error(e) => e,
        Routing::NoTables => Plan::AnyShard,
        Routing::Keyed(keys) => Plan::Keyed { keys, read_only },
        Routing::Single {
            table,
            key_col,
            top: true,
            prune,
            lookup,
        } => match scatter_merge(q, mode, schema) {
            Ok(merge) => Plan::Scatter {
                table,
                prune,
                lookup,
                merge,
                read_only,
            },
            Err(NoMerge::NeedSchema(t)) => Plan::NeedSchema { table: t.into() },
            Err(NoMerge::Construct(construct)) => Plan::Error {
                sqlstate: "0A000",
                message: format!("{construct} across shards is not supported yet"),
                hint: Some(key_hint(&table, &key_col)),
            },
        },
        Routing::Single { table, key_col, top: false, .. } => Plan::Subqueries {
            message: format!(
                "a subquery, CTE or set operation over sharded table \"{table}\" without an equality condition on its sharding key is not supported yet"
            ),
            hint: Some(key_hint(&table, &key_col)),
            read_only,
        },
        Routing::Nested(e) => subqueries(e, read_only),
    }
}

/// The refusal `e` of a statement with nested sharded tables, as a
/// [`Plan::Subqueries`].
fn subqueries(e: Plan, read_only: bool) -> Plan {
    match e {
        Plan::Error { message, hint, .. } => Plan::Subqueries {
            message,
            hint,
            read_only,
        },
        other => other,
    }
}

fn key_hint(table: &str, key_col: &str) -> String {
    format!("add an equality condition on the sharding key ({table}.{key_col} = <value>) to run the statement on one shard")
}

fn bad_key_update(table: &str, key: &str) -> Plan {
    unsupported(
        format!("updating the sharding key column \"{key}\" of \"{table}\" is not supported"),
        None,
    )
}

/// The table an INSERT/UPDATE/DELETE writes.
enum DmlTarget {
    /// A sharded table: catalog name and sharding key column.
    Sharded(Arc<str>, String),
    /// A reference table: catalog name.
    Reference(Arc<str>),
}

/// Resolve the target of INSERT/UPDATE/DELETE; Err is the plan to return.
fn dml_target(class: TableClass) -> Result<DmlTarget, Plan> {
    match class {
        TableClass::System => Err(system_write()),
        TableClass::Unknown(t) => Err(undeclared(&t)),
        TableClass::Sharded { table, key } => Ok(DmlTarget::Sharded(table, key)),
        TableClass::Reference(table) => Ok(DmlTarget::Reference(table)),
    }
}

/// Common tail of a write to reference table `table`: [`Plan::Broadcast`]
/// unless the statement failed analysis or reads a sharded table (each
/// shard would see only its part of it, and the copies would diverge).
fn broadcast(mut an: Analyzer<'_>, table: Arc<str>) -> Plan {
    if let Some(e) = an.take_error() {
        return e;
    }
    if let Some(sharded) = an.first_sharded() {
        return unsupported(
            format!(
                "a write to reference table \"{table}\" may read only reference tables and system catalogs, not sharded table \"{sharded}\""
            ),
            Some("every shard runs the write on its own copy, and sees only its own rows of a sharded table"),
        );
    }
    Plan::Broadcast { table }
}

/// INSERT into reference table `table`: any form (no key needed) that reads
/// no sharded table.
fn plan_reference_insert(
    ins: &Insert,
    table: Arc<str>,
    schema: &dyn SchemaView,
    mode: ParamMode,
) -> Plan {
    let mut an = Analyzer::new(schema, mode);
    if let Some(source) = &ins.source {
        an.query(source, false);
    }
    match &ins.on {
        Some(OnInsert::OnConflict(oc)) => {
            if let OnConflictAction::DoUpdate(du) = &oc.action {
                if let Some(sel) = &du.selection {
                    an.expr(sel);
                }
                du.assignments.iter().for_each(|a| an.expr(&a.value));
            }
        }
        Some(OnInsert::DuplicateKeyUpdate(a)) => a.iter().for_each(|a| an.expr(&a.value)),
        _ => {}
    }
    if let Some(ret) = &ins.returning {
        an.select_items(ret);
    }
    broadcast(an, table)
}

fn plan_insert(ins: &Insert, schema: &dyn SchemaView, mode: ParamMode) -> Plan {
    let TableObject::TableName(name) = &ins.table else {
        return unsupported(
            "INSERT into a table function is not supported through pg-router",
            None,
        );
    };
    let (table, key) = match dml_target(classify_object(name, schema)) {
        Ok(DmlTarget::Sharded(table, key)) => (table, key),
        Ok(DmlTarget::Reference(table)) => return plan_reference_insert(ins, table, schema, mode),
        Err(p) => return p,
    };
    let Some(source) = &ins.source else {
        // DEFAULT VALUES: one row, every column from its default.
        return generated_key(schema, table, key, 1, InsertForm::DefaultValues);
    };
    let values_body = match source.body.as_ref() {
        SetExpr::Values(v) => Some(v),
        _ => {
            let source_plan =
                plan_statement(&Statement::Query(source.clone()), schema, mode, "SELECT");
            return super::insert_select::plan_insert_select(
                ins,
                source,
                source_plan,
                table,
                key,
                schema,
                mode,
            );
        }
    };
    // The target columns: as listed, or (no list) the table's leading
    // columns, one per VALUES expression.
    let listed: Vec<String> = if ins.columns.is_empty() {
        let Some(v) = values_body else {
            return unsupported(
                format!("INSERT ... SELECT into sharded table \"{table}\" is not supported yet"),
                None,
            );
        };
        let Some(ts) = schema.table_schema(&table) else {
            return Plan::NeedSchema { table };
        };
        let width = v.rows.first().map_or(0, |r| r.content.len());
        if width > ts.columns.len() {
            return Plan::Error {
                sqlstate: "42601",
                message: "INSERT has more expressions than target columns".into(),
                hint: None,
            };
        }
        ts.columns[..width].iter().map(|c| c.name.clone()).collect()
    } else {
        ins.columns
            .iter()
            .map(|c| last_part(c).unwrap_or_default())
            .collect()
    };
    let Some(key_idx) = listed.iter().position(|c| *c == key) else {
        let Some(v) = values_body else {
            return unsupported(
                format!("INSERT ... SELECT into sharded table \"{table}\" is not supported yet"),
                None,
            );
        };
        let form = if ins.columns.is_empty() {
            InsertForm::Columns(listed)
        } else {
            InsertForm::ColumnList
        };
        return generated_key(schema, table, key, v.rows.len(), form);
    };
    if source.with.is_some() {
        return unsupported("WITH ... INSERT is not supported yet", None);
    }
    let Some(values) = values_body else {
        return unsupported(
            format!("INSERT ... SELECT into sharded table \"{table}\" is not supported yet"),
            None,
        );
    };
    if source.order_by.is_some() || source.limit_clause.is_some() || source.fetch.is_some() {
        return unsupported(
            format!("this form of INSERT into sharded table \"{table}\" is not supported yet"),
            None,
        );
    }
    let defaults = values
        .rows
        .iter()
        .filter(|r| r.content.get(key_idx).is_some_and(is_default))
        .count();
    if defaults == values.rows.len() && defaults > 0 {
        return generated_key(
            schema,
            table,
            key,
            values.rows.len(),
            InsertForm::DefaultAt(key_idx),
        );
    }
    if defaults > 0 {
        return unsupported(
            format!("INSERT into sharded table \"{table}\" gives its sharding key \"{key}\" as DEFAULT in some rows only"),
            Some("give every row a key value, or DEFAULT in every row"),
        );
    }
    let mut an = Analyzer::new(schema, mode);
    let mut rows = Vec::with_capacity(values.rows.len());
    for row in &values.rows {
        let Some(e) = row.content.get(key_idx) else {
            return Plan::Error {
                sqlstate: "42601",
                message: "INSERT has more target columns than expressions".into(),
                hint: None,
            };
        };
        match an.key_value(e) {
            Some(k) => rows.push(k),
            None => {
                return unsupported(
                    format!(
                        "the sharding key value in INSERT into \"{table}\" must be a literal or a parameter, not an expression"
                    ),
                    None,
                )
            }
        }
        row.content.iter().for_each(|x| an.expr(x));
    }
    if let Some(on) = &ins.on {
        let assignments = match on {
            OnInsert::OnConflict(oc) => match &oc.action {
                OnConflictAction::DoUpdate(du) => {
                    if let Some(sel) = &du.selection {
                        an.expr(sel);
                    }
                    du.assignments.as_slice()
                }
                OnConflictAction::DoNothing => &[],
            },
            OnInsert::DuplicateKeyUpdate(a) => a.as_slice(),
            _ => &[],
        };
        for a in assignments {
            let keeps_key = is_excluded_key(&a.value, &key);
            if !keeps_key && assigns_column(&a.target, &key) {
                return bad_key_update(&table, &key);
            }
            an.expr(&a.value);
        }
    }
    if let Some(ret) = &ins.returning {
        an.select_items(ret);
    }
    if let Some(e) = an.take_error() {
        return e;
    }
    if an.occurrences() > 0 {
        return unsupported(
            "subqueries over sharded tables inside INSERT are not supported yet",
            None,
        );
    }
    let lookups = schema.lookups(&table);
    if lookups.is_empty() {
        return Plan::Insert { table, rows };
    }
    if ins.on.is_some() {
        return unsupported(
            format!("INSERT ... ON CONFLICT into \"{table}\", which owns lookup vindexes, is not supported: the router could not tell which lookup rows to keep"),
            Some("insert, and handle 23505 (unique_violation) in the application"),
        );
    }
    let mut owned = Vec::with_capacity(lookups.len());
    let mut values = Vec::with_capacity(lookups.len());
    for (column, lookup_table) in lookups {
        let idx = listed.iter().position(|c| *c == column);
        let mut per_row = Vec::with_capacity(values_rows(source));
        if let SetExpr::Values(v) = source.body.as_ref() {
            for row in &v.rows {
                match idx.and_then(|i| row.content.get(i)) {
                    None => per_row.push(None),
                    Some(e) => match lookup_value(&an, e) {
                        Some(k) => per_row.push(k),
                        None => return bad_lookup_value(&table, &column, "INSERT into"),
                    },
                }
            }
        }
        values.push(per_row);
        owned.push(OwnedLookup {
            lookup_table,
            column,
        });
    }
    Plan::Owned {
        inner: Arc::new(Plan::Insert {
            table: table.clone(),
            rows,
        }),
        write: Arc::new(OwnedWrite {
            table,
            lookups: owned,
            kind: OwnedKind::Insert { values },
        }),
    }
}

/// The plan of an INSERT of `rows` rows into `table` that omits its
/// sharding key `key`: [`Plan::GenerateKey`] if the shards would take the
/// key from a sequence, [`Plan::NeedSchema`] if the columns are not known
/// yet, else refused (0A000).
fn generated_key(
    schema: &dyn SchemaView,
    table: Arc<str>,
    key: String,
    rows: usize,
    form: InsertForm,
) -> Plan {
    let Some(ts) = schema.table_schema(&table) else {
        return Plan::NeedSchema { table };
    };
    match ts.key_generator(&key) {
        Some(generator) => Plan::GenerateKey(Arc::new(GeneratedInsert {
            table,
            key,
            generator,
            rows,
            form,
        })),
        None => unsupported(
            format!("INSERT into sharded table \"{table}\" must include its sharding key column \"{key}\""),
            Some("give the key a value, or define the column as serial, bigserial, GENERATED ... AS IDENTITY or DEFAULT nextval(...) so the router generates it"),
        ),
    }
}

/// The `DEFAULT` keyword as a VALUES item.
fn is_default(e: &Expr) -> bool {
    matches!(e, Expr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default"))
}

fn values_rows(source: &Query) -> usize {
    match source.body.as_ref() {
        SetExpr::Values(v) => v.rows.len(),
        _ => 0,
    }
}

/// The value written to a lookup vindex column: `Some(None)` for NULL,
/// `Some(Some(k))` for a literal or parameter, None for anything else.
fn lookup_value(an: &Analyzer<'_>, e: &Expr) -> Option<Option<KeyExpr>> {
    let mut x = e;
    while let Expr::Nested(inner) | Expr::Cast { expr: inner, .. } = x {
        x = inner;
    }
    if let Expr::Value(v) = x {
        if matches!(v.value, sqlparser::ast::Value::Null) {
            return Some(None);
        }
    }
    an.key_value(e).map(Some)
}

fn bad_lookup_value(table: &str, column: &str, what: &str) -> Plan {
    unsupported(
        format!("the value of \"{column}\" in {what} \"{table}\" must be a literal, a parameter or NULL: \"{column}\" is maintained by a lookup vindex"),
        None,
    )
}

/// The pre-select of an UPDATE/DELETE of an owner table: the key and the
/// lookup columns of the rows the statement's WHERE selects, locked.
fn owned_select(
    relation: &TableFactor,
    selection: Option<&Expr>,
    key: &str,
    lookups: &[OwnedLookup],
    mode: ParamMode,
) -> Vec<super::types::SqlPiece> {
    let mut sql = format!("SELECT {}", quote_ident(key));
    for l in lookups {
        sql.push_str(", ");
        sql.push_str(&quote_ident(&l.column));
    }
    sql.push_str(&format!(" FROM {relation}"));
    if let Some(w) = selection {
        sql.push_str(&format!(" WHERE {w}"));
    }
    sql.push_str(" FOR UPDATE");
    super::template::template(&sql, mode, None, None, false)
}

/// Wraps the plan of an UPDATE/DELETE of owner table `table` with its
/// lookup maintenance; `new` is None for DELETE.
fn owned_rows(
    inner: Plan,
    table: Arc<str>,
    lookups: Vec<OwnedLookup>,
    select: Vec<super::types::SqlPiece>,
    new: Option<Vec<Option<KeyExpr>>>,
) -> Plan {
    if matches!(inner, Plan::Error { .. }) {
        return inner;
    }
    Plan::Owned {
        inner: Arc::new(inner),
        write: Arc::new(OwnedWrite {
            table,
            lookups,
            kind: OwnedKind::Rows { select, new },
        }),
    }
}

/// `excluded.<key>` in ON CONFLICT DO UPDATE SET key = excluded.key.
fn is_excluded_key(e: &Expr, key: &str) -> bool {
    match e {
        Expr::CompoundIdentifier(ids) if ids.len() == 2 => {
            norm_ident(&ids[0]) == "excluded" && norm_ident(&ids[1]) == key
        }
        _ => false,
    }
}

fn assigns_column(target: &AssignmentTarget, key: &str) -> bool {
    match target {
        AssignmentTarget::ColumnName(n) => last_part(n).as_deref() == Some(key),
        AssignmentTarget::Tuple(v) => v.iter().any(|n| last_part(n).as_deref() == Some(key)),
    }
}

/// Common tail of UPDATE and DELETE: route by the analyzer's findings.
fn route_dml(an: Analyzer<'_>, table: Arc<str>, what: &str) -> Plan {
    match an.routing() {
        Routing::Error(e) => e,
        Routing::Nested(e) => subqueries(e, false),
        Routing::Keyed(keys) => Plan::Keyed {
            keys,
            read_only: false,
        },
        Routing::Single { prune, lookup, .. } => Plan::Scatter {
            table,
            prune,
            lookup,
            merge: Merge::Concat,
            read_only: false,
        },
        Routing::NoTables => Plan::Error {
            sqlstate: "XX000",
            message: format!("internal error: {what} target not found"),
            hint: None,
        },
    }
}

/// The target table of UPDATE/DELETE; a sharded one is registered in `an`
/// as a top-level occurrence. Err is the plan to return.
fn dml_scope_target(
    tf: &TableFactor,
    an: &mut Analyzer<'_>,
    schema: &dyn SchemaView,
    local: &mut Vec<usize>,
    what: &str,
) -> Result<DmlTarget, Plan> {
    let TableFactor::Table {
        name,
        alias,
        args: None,
        ..
    } = tf
    else {
        return Err(unsupported(
            format!("this form of {what} is not supported through pg-router"),
            None,
        ));
    };
    let target = dml_target(classify_object(name, schema))?;
    if let DmlTarget::Sharded(table, key) = &target {
        let qualifier = alias
            .as_ref()
            .map(|a| norm_ident(&a.name))
            .or_else(|| last_part(name));
        an.push_occ(table.clone(), key.clone(), qualifier, true, local);
    }
    Ok(target)
}

fn plan_update(u: &Update, schema: &dyn SchemaView, mode: ParamMode) -> Plan {
    if !u.table.joins.is_empty() {
        return unsupported("UPDATE of a join is not supported through pg-router", None);
    }
    let mut an = Analyzer::new(schema, mode);
    let mut local = Vec::new();
    let target = match dml_scope_target(&u.table.relation, &mut an, schema, &mut local, "UPDATE") {
        Ok(t) => t,
        Err(p) => return p,
    };
    if let DmlTarget::Sharded(table, key) = &target {
        if u.assignments.iter().any(|a| assigns_column(&a.target, key)) {
            return bad_key_update(table, key);
        }
    }
    let mut conds: Vec<&Expr> = Vec::new();
    if let Some(UpdateTableFromKind::BeforeSet(v) | UpdateTableFromKind::AfterSet(v)) = &u.from {
        for twj in v {
            an.table_with_joins(twj, true, &mut local, &mut conds);
        }
    }
    if let Some(w) = &u.selection {
        conds.push(w);
        an.expr(w);
    }
    for c in conds {
        an.conjuncts(c, &local);
    }
    u.assignments.iter().for_each(|a| an.expr(&a.value));
    if let Some(ret) = &u.returning {
        an.select_items(ret);
    }
    match target {
        DmlTarget::Sharded(table, key) => {
            let lookups = schema.lookups(&table);
            let mut owned = Vec::new();
            let mut new = Vec::new();
            for (column, lookup_table) in lookups {
                for a in &u.assignments {
                    if !assigns_column(&a.target, &column) {
                        continue;
                    }
                    let v = match (&a.target, lookup_value(&an, &a.value)) {
                        (AssignmentTarget::ColumnName(_), Some(v)) => v,
                        _ => return bad_lookup_value(&table, &column, "UPDATE of"),
                    };
                    new.push(v);
                    owned.push(OwnedLookup {
                        lookup_table: lookup_table.clone(),
                        column: column.clone(),
                    });
                }
            }
            if owned.is_empty() {
                return route_dml(an, table, "UPDATE");
            }
            if u.from.is_some() {
                return unsupported(
                    format!("UPDATE ... FROM of \"{table}\" changing a lookup vindex column is not supported"),
                    None,
                );
            }
            let select = owned_select(&u.table.relation, u.selection.as_ref(), &key, &owned, mode);
            let inner = route_dml(an, table.clone(), "UPDATE");
            owned_rows(inner, table, owned, select, Some(new))
        }
        DmlTarget::Reference(table) => broadcast(an, table),
    }
}

fn plan_delete(d: &Delete, schema: &dyn SchemaView, mode: ParamMode) -> Plan {
    let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &d.from;
    let ([twj], true) = (from.as_slice(), d.tables.is_empty()) else {
        return unsupported(
            "DELETE from several tables is not supported through pg-router",
            None,
        );
    };
    if !twj.joins.is_empty() {
        return unsupported(
            "DELETE from a join is not supported through pg-router",
            None,
        );
    }
    let mut an = Analyzer::new(schema, mode);
    let mut local = Vec::new();
    let target = match dml_scope_target(&twj.relation, &mut an, schema, &mut local, "DELETE") {
        Ok(t) => t,
        Err(p) => return p,
    };
    let mut conds: Vec<&Expr> = Vec::new();
    for twj in d.using.iter().flatten() {
        an.table_with_joins(twj, true, &mut local, &mut conds);
    }
    if let Some(w) = &d.selection {
        conds.push(w);
        an.expr(w);
    }
    for c in conds {
        an.conjuncts(c, &local);
    }
    if let Some(ret) = &d.returning {
        an.select_items(ret);
    }
    match target {
        DmlTarget::Sharded(table, key) => {
            let lookups = schema.lookups(&table);
            if lookups.is_empty() {
                return route_dml(an, table, "DELETE");
            }
            if d.using.is_some() {
                return unsupported(
                    format!("DELETE ... USING from \"{table}\", which owns lookup vindexes, is not supported"),
                    None,
                );
            }
            let owned: Vec<OwnedLookup> = lookups
                .into_iter()
                .map(|(column, lookup_table)| OwnedLookup {
                    lookup_table,
                    column,
                })
                .collect();
            let select = owned_select(&twj.relation, d.selection.as_ref(), &key, &owned, mode);
            let inner = route_dml(an, table.clone(), "DELETE");
            owned_rows(inner, table, owned, select, None)
        }
        DmlTarget::Reference(table) => broadcast(an, table),
    }
}

/// True if running `stmt` changes data (so EXPLAIN ANALYZE of it must reach
/// exactly the right shard).
fn modifies_data(stmt: &Statement) -> bool {
    match stmt {
        Statement::Query(q) => {
            let dml = |s: &SetExpr| {
                matches!(
                    s,
                    SetExpr::Insert(_)
                        | SetExpr::Update(_)
                        | SetExpr::Delete(_)
                        | SetExpr::Merge(_)
                )
            };
            dml(&q.body)
                || q.with
                    .as_ref()
                    .is_some_and(|w| w.cte_tables.iter().any(|c| dml(&c.query.body)))
        }
        _ => true,
    }
}

/// EXPLAIN: a statement routed to one shard is explained there; anything
/// else is explained by any one shard (a per-shard plan), except EXPLAIN
/// ANALYZE of a data-modifying statement that is not single-shard.
fn plan_explain(
    inner: &Statement,
    analyze: bool,
    schema: &dyn SchemaView,
    mode: ParamMode,
) -> Plan {
    let plan = plan_statement(inner, schema, mode, "EXPLAIN");
    match plan {
        Plan::Keyed { .. } => plan,
        Plan::Insert { table, mut rows } if rows.len() == 1 => {
            let key: KeyExpr = rows.remove(0);
            Plan::Keyed { keys: vec![KeyRef { table, key }], read_only: false }
        }
        _ if analyze && modifies_data(inner) => unsupported(
            "EXPLAIN ANALYZE of a data-modifying statement that is not routed to a single shard is not supported",
            None,
        ),
        _ => Plan::AnyShard,
    }
}
