//! Walking a parsed statement: which tables it references (in FROM, JOINs,
//! subqueries, CTEs), which of them are sharded, and which sharded table
//! occurrences have an equality condition on their key column.
//!
//! Each SELECT's own WHERE conjunction (and the ON conditions of its inner
//! joins) supplies keys for the sharded tables of its own FROM clause, so a
//! subquery with its own key condition is routable too.
//!
//! Reference tables (a full copy on every shard) are allowed anywhere and
//! leave no occurrence: they do not constrain the route.

use std::sync::Arc;

use sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, JoinConstraint, JoinOperator, LimitClause, NamedWindowExpr,
    OrderByKind, Query, Select, SelectItem, SelectItemQualifiedWildcardKind, SetExpr, TableFactor,
    TableWithJoins, UnaryOperator, Value,
};

use super::colocate::{colocated, key_links, refusal};
use super::names::{
    classify_object, classify_table, column_ref, last_part, norm_ident, undeclared, TableClass,
};
pub(crate) use super::occ::{Occ, Routing, SeenNames};
use super::types::{unsupported, KeyExpr, KeyRef, KeySet, LookupKey, Plan};
use super::walk::{conjuncts, expr_children, function_arg, window_children, Node};
use super::SchemaView;

/// How `$n` placeholders in the parsed text are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamMode {
    /// `$n` is Bind parameter n: `KeyExpr::Param { index: n - 1 }`
    /// (extended-protocol text).
    Keys,
    /// `$n` is literal n of the client's text (normalized simple-protocol
    /// text): keys as for `Keys`, and a `$n` where only a constant can stand
    /// (a positional `ORDER BY 2`) makes the plan depend on the literal.
    Literals,
    /// `$n` is not a usable value (simple-protocol text that could not be
    /// normalized: PostgreSQL will reject the parameter anyway).
    Ignore,
}

/// Collects table occurrences and key conditions of one statement.
pub(crate) struct Analyzer<'s> {
    schema: &'s dyn SchemaView,
    mode: ParamMode,
    ctes: Vec<String>,
    occs: Vec<Occ>,
    error: Option<Plan>,
    /// An outer join keeps rows from a side without sharded tables while the
    /// other side has some (`countries LEFT JOIN orders`): the first such
    /// sharded table. Run on several shards, every shard would return the
    /// kept rows it cannot match.
    outer_unsharded: Option<Arc<str>>,
    /// Pairs of occurrences joined on their sharding keys
    /// (`a.key = b.key` in WHERE or a join's ON): co-location.
    key_joins: Vec<(usize, usize)>,
    /// Occurrences of the enclosing queries' FROM clauses, visible to a
    /// subquery being walked (correlation), the nearest last.
    outer: Vec<usize>,
    /// Names (alias or table name) of the FROM items that are not sharded
    /// tables (reference and system tables, CTEs, derived tables,
    /// functions): a correlated key join through such a name is not
    /// trusted.
    other_names: Vec<String>,
    /// Names used and defined (see [`SeenNames`]; `defined` is filled by
    /// [`Analyzer::into_names`]).
    names: SeenNames,
}

impl<'s> Analyzer<'s> {
    pub fn new(schema: &'s dyn SchemaView, mode: ParamMode) -> Analyzer<'s> {
        Analyzer {
            schema,
            mode,
            ctes: Vec::new(),
            occs: Vec::new(),
            error: None,
            outer_unsharded: None,
            key_joins: Vec::new(),
            outer: Vec::new(),
            other_names: Vec::new(),
            names: SeenNames::default(),
        }
    }

    /// Record the first error (later ones are ignored).
    pub fn fail(&mut self, p: Plan) {
        if self.error.is_none() {
            self.error = Some(p);
        }
    }

    /// Number of sharded table occurrences found so far.
    pub fn occurrences(&self) -> usize {
        self.occs.len()
    }

    /// The table of the first sharded table occurrence, if any.
    pub fn first_sharded(&self) -> Option<Arc<str>> {
        self.occs.first().map(|o| o.table.clone())
    }

    /// The first error found, if any.
    pub fn take_error(&mut self) -> Option<Plan> {
        self.error.take()
    }

    /// The names the walked statement used and defined.
    pub fn into_names(mut self) -> SeenNames {
        let mut defined: Vec<String> = self.occs.into_iter().map(|o| o.qualifier).collect();
        defined.append(&mut self.other_names);
        self.names.defined = defined;
        self.names
    }

    /// Summarize what was found.
    pub fn routing(self) -> Routing {
        if let Some(e) = self.error {
            return Routing::Error(e);
        }
        if self.occs.is_empty() {
            return Routing::NoTables;
        }
        if self.occs.iter().all(|o| o.key.is_some()) {
            let mut keys: Vec<KeyRef> = Vec::with_capacity(self.occs.len());
            for o in self.occs {
                if let Some(key) = o.key {
                    let k = KeyRef {
                        table: o.table,
                        key,
                    };
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
            }
            return Routing::Keyed(keys);
        }
        if let [o] = self.occs.as_slice() {
            if let Some(t) = &self.outer_unsharded {
                return Routing::Error(Plan::Error {
                    sqlstate: "0A000",
                    message: format!(
                        "an outer join that keeps rows not coming from sharded table \"{t}\" (from reference tables, functions or VALUES) is not supported across shards: every shard would return the rows it cannot match"
                    ),
                    hint: Some(format!(
                        "add an equality condition on the sharding key ({}.{} = <value>), or put \"{t}\" on the preserved side of the join",
                        o.qualifier, o.key_col
                    )),
                });
            }
            return Routing::Single {
                table: o.table.clone(),
                key_col: o.key_col.clone(),
                top: o.top,
                prune: o.prune.clone(),
                lookup: o.lookup.clone(),
            };
        }
        if let Some(r) = colocated(&self.occs, &self.key_joins, self.schema) {
            return r;
        }
        match refusal(&self.occs) {
            Routing::Error(e) if self.occs.iter().any(|o| !o.top) => Routing::Nested(e),
            r => r,
        }
    }

    pub fn node(&mut self, n: Node<'_>) {
        match n {
            Node::Expr(e) => self.expr(e),
            Node::Query(q) => self.query(q, false),
        }
    }

    /// Look for tables in an expression's subqueries. Iterative: operator
    /// chains make trees thousands of levels deep (only subquery nesting,
    /// bounded by sqlparser's recursion limit, recurses).
    pub fn expr(&mut self, e: &Expr) {
        let mut stack: Vec<&Expr> = vec![e];
        let mut queries: Vec<&Query> = Vec::new();
        while let Some(x) = stack.pop() {
            match x {
                Expr::CompoundIdentifier(parts) if parts.len() > 1 => self
                    .names
                    .used
                    .extend(parts.get(parts.len() - 2).map(norm_ident)),
                Expr::QualifiedWildcard(name, _) => self.names.used.extend(last_part(name)),
                _ => {}
            }
            expr_children(x, &mut |n| match n {
                Node::Expr(c) => stack.push(c),
                Node::Query(q) => queries.push(q),
            });
        }
        for q in queries {
            if self.error.is_some() {
                return;
            }
            self.query(q, false);
        }
    }

    fn select_item(&mut self, item: &SelectItem) {
        match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => self.expr(e),
            SelectItem::ExprWithAliases { expr, .. } => self.expr(expr),
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(n), _) => {
                self.names.used.extend(last_part(n))
            }
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::Expr(e), _) => {
                self.expr(e)
            }
            SelectItem::Wildcard(_) => {}
        }
    }

    /// Walk RETURNING-style select items.
    pub fn select_items(&mut self, items: &[SelectItem]) {
        items.iter().for_each(|i| self.select_item(i));
    }

    /// A query; `top` for the statement's outermost query.
    pub fn query(&mut self, q: &Query, top: bool) {
        if self.error.is_some() {
            return;
        }
        let saved = self.ctes.len();
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                let name = norm_ident(&cte.alias.name);
                self.names.ctes.push(name.clone());
                // A non-recursive CTE cannot see itself: `WITH t AS (SELECT
                // * FROM t)` reads the real table t.
                if with.recursive {
                    self.ctes.push(name);
                    self.query(&cte.query, false);
                } else {
                    self.query(&cte.query, false);
                    self.ctes.push(name);
                }
            }
        }
        self.set_expr(&q.body, top);
        if let Some(ob) = &q.order_by {
            if let OrderByKind::Expressions(v) = &ob.kind {
                v.iter().for_each(|o| self.expr(&o.expr));
            }
        }
        match &q.limit_clause {
            Some(LimitClause::LimitOffset {
                limit,
                offset,
                limit_by,
            }) => {
                if let Some(l) = limit {
                    self.expr(l);
                }
                if let Some(o) = offset {
                    self.expr(&o.value);
                }
                limit_by.iter().for_each(|x| self.expr(x));
            }
            Some(LimitClause::OffsetCommaLimit { offset, limit }) => {
                self.expr(offset);
                self.expr(limit);
            }
            None => {}
        }
        if let Some(x) = q.fetch.as_ref().and_then(|f| f.quantity.as_ref()) {
            self.expr(x);
        }
        self.ctes.truncate(saved);
    }

    fn set_expr(&mut self, s: &SetExpr, top: bool) {
        match s {
            SetExpr::Select(sel) => self.select(sel, top),
            SetExpr::Query(q) => self.query(q, false),
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr(left, false);
                self.set_expr(right, false);
            }
            SetExpr::Values(v) => {
                for row in &v.rows {
                    row.content.iter().for_each(|x| self.expr(x));
                }
            }
            SetExpr::Table(t) => {
                let mut parts: Vec<String> = Vec::new();
                if let Some(s) = &t.schema_name {
                    parts.push(s.to_ascii_lowercase());
                }
                match &t.table_name {
                    Some(n) => parts.push(n.to_ascii_lowercase()),
                    None => return,
                }
                let mut local = Vec::new();
                self.table_parts(&parts, None, top, &mut local);
            }
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
                self.fail(unsupported(
                    "data-modifying statements inside a query (WITH ... INSERT/UPDATE/DELETE) are not supported yet",
                    None,
                ));
            }
        }
    }

    fn select<'a>(&mut self, sel: &'a Select, top: bool) {
        let mut local: Vec<usize> = Vec::new();
        let mut conds: Vec<&'a Expr> = Vec::new();
        for twj in &sel.from {
            self.table_with_joins(twj, top, &mut local, &mut conds);
        }
        for c in &conds {
            self.conjuncts(c, &local);
            self.key_joins.extend(key_links(
                c,
                &local,
                &self.outer,
                &self.other_names,
                &self.occs,
            ));
        }
        // Subqueries in the rest of the SELECT see its FROM clause.
        let saved = self.outer.len();
        self.outer.extend_from_slice(&local);
        if let Some(w) = &sel.selection {
            self.expr(w);
            self.conjuncts(w, &local);
            self.key_joins.extend(key_links(
                w,
                &local,
                &self.outer[..saved],
                &self.other_names,
                &self.occs,
            ));
        }
        sel.projection.iter().for_each(|i| self.select_item(i));
        if let GroupByExpr::Expressions(v, _) = &sel.group_by {
            v.iter().for_each(|x| self.expr(x));
        }
        for x in [&sel.having, &sel.qualify, &sel.prewhere]
            .into_iter()
            .flatten()
        {
            self.expr(x);
        }
        for nw in &sel.named_window {
            if let NamedWindowExpr::WindowSpec(w) = &nw.1 {
                window_children(w, &mut |n| self.node(n));
            }
        }
        for x in sel.cluster_by.iter().chain(&sel.distribute_by) {
            self.expr(x);
        }
        sel.sort_by.iter().for_each(|o| self.expr(&o.expr));
        sel.lateral_views
            .iter()
            .for_each(|l| self.expr(&l.lateral_view));
        self.outer.truncate(saved);
        if sel.into.is_some() {
            self.fail(unsupported(
                "SELECT INTO is not supported through pg-router",
                Some("create the table with CREATE TABLE, then INSERT"),
            ));
        }
    }

    /// A FROM item with its joins; inner-join ON conditions join `conds`.
    pub fn table_with_joins<'a>(
        &mut self,
        twj: &'a TableWithJoins,
        top: bool,
        local: &mut Vec<usize>,
        conds: &mut Vec<&'a Expr>,
    ) {
        let start = self.occs.len();
        self.table_factor(&twj.relation, top, local, conds);
        for j in &twj.joins {
            let before = self.occs.len();
            self.table_factor(&j.relation, top, local, conds);
            let left_sharded = before > start;
            let right_sharded = self.occs.len() > before;
            // Which sides keep unmatched rows.
            let (constraint, inner, keeps_left, keeps_right) = match &j.join_operator {
                JoinOperator::Join(c) | JoinOperator::Inner(c) => (Some(c), true, false, false),
                JoinOperator::CrossJoin(c) | JoinOperator::StraightJoin(c) => {
                    (Some(c), false, false, false)
                }
                JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Semi(c)
                | JoinOperator::LeftSemi(c)
                | JoinOperator::Anti(c)
                | JoinOperator::LeftAnti(c) => (Some(c), false, true, false),
                JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::RightSemi(c)
                | JoinOperator::RightAnti(c) => (Some(c), false, false, true),
                JoinOperator::FullOuter(c) => (Some(c), false, true, true),
                JoinOperator::AsOf {
                    constraint,
                    match_condition,
                } => {
                    self.expr(match_condition);
                    (Some(constraint), false, true, false)
                }
                // APPLY joins and the like (not PostgreSQL): assume the
                // worst.
                _ => (None, false, true, true),
            };
            let unsharded_kept = (keeps_left && !left_sharded && right_sharded)
                || (keeps_right && !right_sharded && left_sharded);
            if unsharded_kept && self.outer_unsharded.is_none() {
                self.outer_unsharded = self.occs.last().map(|o| o.table.clone());
            }
            if let Some(JoinConstraint::On(e)) = constraint {
                self.expr(e);
                if inner {
                    conds.push(e);
                } else {
                    // An outer join on the sharding keys keeps its
                    // unmatched rows on their own shard: co-located too.
                    self.key_joins.extend(key_links(
                        e,
                        local,
                        &self.outer,
                        &self.other_names,
                        &self.occs,
                    ));
                }
            }
        }
    }

    fn table_factor<'a>(
        &mut self,
        tf: &'a TableFactor,
        top: bool,
        local: &mut Vec<usize>,
        conds: &mut Vec<&'a Expr>,
    ) {
        if !matches!(tf, TableFactor::Table { args: None, .. }) {
            if let Some(a) = table_factor_alias(tf) {
                self.other_names.push(norm_ident(&a.name));
            }
        }
        match tf {
            TableFactor::Table {
                name, alias, args, ..
            } => {
                if let Some(a) = args {
                    // A set-returning function: `FROM generate_series(1, 3)`.
                    a.args
                        .iter()
                        .for_each(|fa| function_arg(fa, &mut |n| self.node(n)));
                    return;
                }
                let qualifier = alias
                    .as_ref()
                    .map(|a| norm_ident(&a.name))
                    .or_else(|| last_part(name));
                if name.0.len() == 1 {
                    if let Some(n) = last_part(name) {
                        if self.ctes.contains(&n) {
                            self.other_names.extend(qualifier);
                            return;
                        }
                        self.names.tables.push(n);
                    }
                }
                match classify_object(name, self.schema) {
                    TableClass::System | TableClass::Reference(_) => {
                        self.other_names.extend(qualifier)
                    }
                    TableClass::Unknown(t) => self.fail(undeclared(&t)),
                    TableClass::Sharded { table, key } => {
                        self.push_occ(table, key, qualifier, top, local)
                    }
                }
            }
            TableFactor::Derived {
                lateral, subquery, ..
            } => {
                // A LATERAL subquery sees the FROM items before it.
                let saved = self.outer.len();
                if *lateral {
                    self.outer.extend_from_slice(local);
                }
                self.query(subquery, false);
                self.outer.truncate(saved);
            }
            TableFactor::TableFunction { expr, .. } => self.expr(expr),
            TableFactor::Function { args, .. } => args
                .iter()
                .for_each(|fa| function_arg(fa, &mut |n| self.node(n))),
            TableFactor::UNNEST { array_exprs, .. } => {
                array_exprs.iter().for_each(|x| self.expr(x))
            }
            TableFactor::JsonTable { json_expr, .. }
            | TableFactor::OpenJsonTable { json_expr, .. } => self.expr(json_expr),
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => self.table_with_joins(table_with_joins, top, local, conds),
            _ => self.fail(unsupported(
                "this kind of FROM item is not supported through pg-router",
                None,
            )),
        }
    }

    fn table_parts(
        &mut self,
        parts: &[String],
        alias: Option<String>,
        top: bool,
        local: &mut Vec<usize>,
    ) {
        if parts.len() == 1 {
            if self.ctes.contains(&parts[0]) {
                return;
            }
            self.names.tables.push(parts[0].clone());
        }
        match classify_table(parts, self.schema) {
            TableClass::System | TableClass::Reference(_) => {}
            TableClass::Unknown(t) => self.fail(undeclared(&t)),
            TableClass::Sharded { table, key } => {
                let qualifier = alias.or_else(|| parts.last().cloned());
                self.push_occ(table, key, qualifier, top, local)
            }
        }
    }

    /// Register a sharded table occurrence in the current scope.
    pub fn push_occ(
        &mut self,
        table: Arc<str>,
        key_col: String,
        qualifier: Option<String>,
        top: bool,
        local: &mut Vec<usize>,
    ) {
        let qualifier =
            qualifier.unwrap_or_else(|| table.rsplit('.').next().unwrap_or("").to_string());
        let lookup_cols = self.schema.lookups(&table);
        self.occs.push(Occ {
            table,
            key_col,
            qualifier,
            key: None,
            prune: None,
            top,
            lookup_cols,
            lookup: None,
        });
        local.push(self.occs.len() - 1);
    }

    /// Apply the key equalities of a conjunction to the scope's occurrences.
    pub fn conjuncts(&mut self, e: &Expr, local: &[usize]) {
        for x in conjuncts(e) {
            if let Some((qual, col, set)) = self.key_set(x) {
                for &i in local {
                    if let Some(o) = self.occs.get_mut(i) {
                        if o.key_col == col && qual.as_ref().is_none_or(|q| *q == o.qualifier) {
                            o.prune = Some(match (o.prune.take(), set.clone()) {
                                (None, s) => s,
                                // `k >= a AND k < b`: one range.
                                (
                                    Some(KeySet::Range { lo: l1, hi: h1 }),
                                    KeySet::Range { lo: l2, hi: h2 },
                                ) => KeySet::Range {
                                    lo: l1.or(l2),
                                    hi: h1.or(h2),
                                },
                                (Some(KeySet::Range { .. }), s) => s,
                                (Some(old), _) => old,
                            });
                        }
                    }
                }
                continue;
            }
            let Some((qual, col, val)) = self.key_equality(x) else {
                continue;
            };
            for &i in local {
                if let Some(o) = self.occs.get_mut(i) {
                    if qual.as_ref().is_some_and(|q| *q != o.qualifier) {
                        continue;
                    }
                    if o.key.is_none() && o.key_col == col {
                        o.key = Some(val.clone());
                    } else if o.lookup.is_none() {
                        if let Some((c, lt)) = o.lookup_cols.iter().find(|(c, _)| *c == col) {
                            o.lookup = Some(Arc::new(LookupKey {
                                lookup_table: lt.clone(),
                                column: c.clone(),
                                value: val.clone(),
                            }));
                        }
                    }
                }
            }
        }
    }

    /// `col IN (v1, v2, ...)` (two or more values) or `col = ANY(array)`.
    fn key_set(&self, e: &Expr) -> Option<(Option<String>, String, KeySet)> {
        match e {
            Expr::InList {
                expr,
                list,
                negated: false,
            } if list.len() > 1 => {
                let (q, c) = column_ref(expr)?;
                let vals: Option<Vec<KeyExpr>> = list.iter().map(|v| self.key_value(v)).collect();
                Some((q, c, KeySet::List(vals?)))
            }
            Expr::AnyOp {
                left,
                compare_op: BinaryOperator::Eq,
                right,
                ..
            } => {
                let (q, c) = column_ref(left)?;
                let mut r = right.as_ref();
                while let Expr::Nested(x) = r {
                    r = x;
                }
                if let Expr::Array(a) = r {
                    let vals: Option<Vec<KeyExpr>> =
                        a.elem.iter().map(|v| self.key_value(v)).collect();
                    return Some((q, c, KeySet::List(vals?)));
                }
                Some((q, c, KeySet::Array(self.key_value(r)?)))
            }
            Expr::Between {
                expr,
                negated: false,
                low,
                high,
            } => {
                let (q, c) = column_ref(expr)?;
                Some((
                    q,
                    c,
                    KeySet::Range {
                        lo: Some(self.key_value(low)?),
                        hi: Some(self.key_value(high)?),
                    },
                ))
            }
            Expr::BinaryOp { left, op, right } => {
                let (lower, col, v) = match (column_ref(left), column_ref(right)) {
                    (Some(c), _) => match op {
                        BinaryOperator::Gt | BinaryOperator::GtEq => (true, c, right),
                        BinaryOperator::Lt | BinaryOperator::LtEq => (false, c, right),
                        _ => return None,
                    },
                    (None, Some(c)) => match op {
                        BinaryOperator::Lt | BinaryOperator::LtEq => (true, c, left),
                        BinaryOperator::Gt | BinaryOperator::GtEq => (false, c, left),
                        _ => return None,
                    },
                    _ => return None,
                };
                let v = Some(self.key_value(v)?);
                let set = if lower {
                    KeySet::Range { lo: v, hi: None }
                } else {
                    KeySet::Range { lo: None, hi: v }
                };
                Some((col.0, col.1, set))
            }
            _ => None,
        }
    }

    /// `col = value`, `value = col`, `col IN (value)`.
    fn key_equality(&self, e: &Expr) -> Option<(Option<String>, String, KeyExpr)> {
        match e {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                if let (Some((q, c)), Some(v)) = (column_ref(left), self.key_value(right)) {
                    return Some((q, c, v));
                }
                let (q, c) = column_ref(right)?;
                Some((q, c, self.key_value(left)?))
            }
            Expr::InList {
                expr,
                list,
                negated: false,
            } if list.len() == 1 => {
                let (q, c) = column_ref(expr)?;
                Some((q, c, self.key_value(list.first()?)?))
            }
            _ => None,
        }
    }

    /// A literal, a parameter, or either under casts, parentheses and unary
    /// minus/plus.
    pub fn key_value(&self, e: &Expr) -> Option<KeyExpr> {
        let mut minus = false;
        let mut e = e;
        loop {
            match e {
                Expr::Cast { expr, .. }
                | Expr::Nested(expr)
                | Expr::UnaryOp {
                    op: UnaryOperator::Plus,
                    expr,
                } => e = expr,
                Expr::UnaryOp {
                    op: UnaryOperator::Minus,
                    expr,
                } => {
                    minus = !minus;
                    e = expr;
                }
                Expr::Value(v) => {
                    break self
                        .value_key(&v.value)
                        .map(|k| if minus { negate(k) } else { k })
                }
                Expr::TypedString(ts) => {
                    break self
                        .value_key(&ts.value.value)
                        .map(|k| if minus { negate(k) } else { k })
                }
                _ => break None,
            }
        }
    }

    fn value_key(&self, v: &Value) -> Option<KeyExpr> {
        match v {
            Value::Placeholder(p) => {
                if self.mode == ParamMode::Ignore {
                    return None;
                }
                let n: usize = p.strip_prefix('$')?.parse().ok()?;
                Some(KeyExpr::Param {
                    index: n.checked_sub(1)?,
                    negate: false,
                })
            }
            Value::Number(s, _) => Some(KeyExpr::Const(s.to_string())),
            Value::SingleQuotedString(s)
            | Value::EscapedStringLiteral(s)
            | Value::NationalStringLiteral(s)
            | Value::UnicodeStringLiteral(s) => Some(KeyExpr::Const(s.clone())),
            Value::DollarQuotedString(d) => Some(KeyExpr::Const(d.value.clone())),
            _ => None,
        }
    }
}

/// The alias of a FROM item, when it has one.
fn table_factor_alias(tf: &TableFactor) -> Option<&sqlparser::ast::TableAlias> {
    match tf {
        TableFactor::Table { alias, .. }
        | TableFactor::Derived { alias, .. }
        | TableFactor::TableFunction { alias, .. }
        | TableFactor::Function { alias, .. }
        | TableFactor::UNNEST { alias, .. }
        | TableFactor::JsonTable { alias, .. }
        | TableFactor::OpenJsonTable { alias, .. }
        | TableFactor::NestedJoin { alias, .. } => alias.as_ref(),
        _ => None,
    }
}

fn negate(k: KeyExpr) -> KeyExpr {
    match k {
        KeyExpr::Param { index, negate } => KeyExpr::Param {
            index,
            negate: !negate,
        },
        KeyExpr::Const(s) => match s.strip_prefix('-') {
            Some(rest) => KeyExpr::Const(rest.to_string()),
            None => KeyExpr::Const(format!("-{s}")),
        },
    }
}
