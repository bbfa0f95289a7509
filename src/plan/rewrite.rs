//! Rewriting a grouped SELECT's select list, HAVING and ORDER BY for its
//! final step (`final_step.rs`): group key expressions become columns of
//! the rows the shards return, aggregate calls become combines of the
//! shards' partial aggregates (or, over raw rows, the same aggregate over
//! the shards' values), and everything around them is kept for PostgreSQL
//! to evaluate.
//!
//! Only expression kinds whose children are known here are rewritten; an
//! unknown kind that reads columns or aggregates is refused, never passed
//! on with a column the final step does not have.

use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentClause, FunctionArguments, Ident,
    ObjectName, ObjectNamePart, TableAlias, TableAliasColumnDef, TableFactor, TableWithJoins,
    Value,
};

use super::aggregates::is_aggregate_call;
use super::gather_builder::parse_agg;
use super::types::{AggFunc, AggSlot};
use super::walk::{expr_children, Node};

/// Stands for the final step's array parameters (`$1, ..., $m`).
pub(crate) const ROWS_MARKER: &str = "$__pgr_rows";
/// The final step's alias of the shards' rows.
pub(crate) const ALIAS: &str = "_pgr";

/// Stands for combine `i` in the final step's text.
pub(crate) fn agg_marker(i: usize) -> String {
    format!("$__pgr_agg_{i}_")
}

/// `_pgr.c<i>`: column `i` of the shards' rows in the final step.
pub(crate) fn col_ref(i: usize) -> Expr {
    Expr::CompoundIdentifier(vec![Ident::new(ALIAS), Ident::new(format!("c{i}"))])
}

/// `FROM unnest($__pgr_rows) AS _pgr(c0, ..., c<n-1>)`: the rows the
/// router passes to a shard as `n` arrays.
pub(crate) fn unnest_from(n: usize) -> Vec<TableWithJoins> {
    vec![TableWithJoins {
        relation: TableFactor::UNNEST {
            alias: Some(TableAlias {
                explicit: true,
                name: Ident::new(ALIAS),
                columns: (0..n)
                    .map(|i| TableAliasColumnDef::from_name(format!("c{i}")))
                    .collect(),
                at: None,
            }),
            array_exprs: vec![Expr::Value(Value::Placeholder(ROWS_MARKER.into()).into())],
            with_offset: false,
            with_offset_alias: None,
            with_ordinality: false,
        },
        joins: Vec::new(),
    }]
}

/// What the rewrite collected: the shards' columns, group keys and
/// combines.
pub(crate) struct Rewriter {
    /// Raw rows: the shards do not aggregate; aggregates run in the final
    /// step over the shards' values.
    pub raw: bool,
    /// The shards' output columns, in order.
    pub cols: Vec<Expr>,
    /// Group keys: the expression and its column. Column references
    /// outside aggregates that are no key are added as keys too (in a valid
    /// query they depend on the keys, so the groups do not change).
    pub keys: Vec<(Expr, usize)>,
    /// Partial mode: the aggregate calls replaced and their combines.
    pub combines: Vec<(Function, AggSlot)>,
    /// Arguments of DISTINCT aggregates (the shards also group by them).
    pub distinct_args: Vec<Expr>,
}

impl Rewriter {
    /// A rewriter for rows grouped by `keys` (resolved GROUP BY
    /// expressions).
    pub fn new(raw: bool, keys: &[Expr]) -> Rewriter {
        let mut r = Rewriter {
            raw,
            cols: Vec::new(),
            keys: Vec::new(),
            combines: Vec::new(),
            distinct_args: Vec::new(),
        };
        for k in keys {
            r.key(k);
        }
        r
    }

    /// Column of shard expression `e`, added if new.
    fn col(&mut self, e: &Expr) -> usize {
        if let Some(i) = self.cols.iter().position(|c| c == e) {
            return i;
        }
        self.cols.push(e.clone());
        self.cols.len() - 1
    }

    /// Column of group key `e`, added if new.
    fn key(&mut self, e: &Expr) -> usize {
        if let Some((_, c)) = self.keys.iter().find(|(k, _)| k == e) {
            return *c;
        }
        let c = self.col(e);
        self.keys.push((e.clone(), c));
        c
    }

    /// `e` as the final step computes it from the shards' rows.
    ///
    /// Errors: the construct that cannot be rewritten (a subquery, an
    /// expression kind not handled here, an aggregate form the partial
    /// mode cannot combine).
    pub fn rewrite(&mut self, e: &Expr) -> Result<Expr, String> {
        let mut out = e.clone();
        self.rewrite_in_place(&mut out)?;
        Ok(out)
    }

    fn rewrite_in_place(&mut self, e: &mut Expr) -> Result<(), String> {
        if let Some(c) = self.keys.iter().find(|(k, _)| k == e).map(|(_, c)| *c) {
            *e = col_ref(c);
            return Ok(());
        }
        if let Expr::Function(f) = e {
            if is_aggregate_call(f) {
                *e = self.aggregate(f)?;
                return Ok(());
            }
        }
        match reads(e) {
            Reads::Nothing => return Ok(()),
            Reads::Subquery => return Err("subqueries with expressions over aggregates".into()),
            Reads::Columns => {}
        }
        if matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
            *e = col_ref(self.key(e));
            return Ok(());
        }
        let Some(children) = children_mut(e) else {
            return Err("this expression over aggregates or group keys".into());
        };
        for c in children {
            self.rewrite_in_place(c)?;
        }
        Ok(())
    }

    /// The final step's expression for aggregate call `f`.
    fn aggregate(&mut self, f: &Function) -> Result<Expr, String> {
        if self.raw {
            let mut g = f.clone();
            for a in aggregate_inputs(&mut g)? {
                if reads(a) != Reads::Nothing {
                    *a = col_ref(self.col(a));
                }
            }
            return Ok(Expr::Function(g));
        }
        if let Some(i) = self.combines.iter().position(|(g, _)| g == f) {
            return Ok(marker_expr(i));
        }
        let (func, distinct, arg) = parse_agg(f)?;
        let partials = if distinct {
            let arg = arg.ok_or_else(|| "DISTINCT aggregate without argument".to_string())?;
            if !self.distinct_args.contains(&arg) {
                self.distinct_args.push(arg.clone());
            }
            vec![self.col(&arg)]
        } else if func == AggFunc::Avg {
            vec![self.col(&renamed(f, "sum")), self.col(&renamed(f, "count"))]
        } else {
            vec![self.col(&Expr::Function(f.clone()))]
        };
        self.combines.push((
            f.clone(),
            AggSlot {
                func,
                distinct,
                partials,
            },
        ));
        Ok(marker_expr(self.combines.len() - 1))
    }
}

fn marker_expr(i: usize) -> Expr {
    Expr::Value(Value::Placeholder(agg_marker(i)).into())
}

/// `f` called as `name` (same arguments and FILTER).
fn renamed(f: &Function, name: &str) -> Expr {
    let mut g = f.clone();
    g.name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name))]);
    Expr::Function(g)
}

/// What an expression reads, outside constants.
#[derive(Debug, PartialEq, Eq)]
enum Reads {
    /// Only constants, parameters and functions of them.
    Nothing,
    /// Columns or aggregates.
    Columns,
    /// A subquery.
    Subquery,
}

fn reads(e: &Expr) -> Reads {
    let mut out = Reads::Nothing;
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        match x {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => out = Reads::Columns,
            Expr::Function(f) if is_aggregate_call(f) => out = Reads::Columns,
            _ => {}
        }
        let mut sub = false;
        expr_children(x, &mut |n| match n {
            Node::Expr(c) => stack.push(c),
            Node::Query(_) => sub = true,
        });
        if sub {
            return Reads::Subquery;
        }
    }
    out
}

/// The expressions an aggregate call reads (its arguments, ORDER BY inside
/// it, FILTER, WITHIN GROUP), to be replaced by the shards' columns in raw
/// mode.
fn aggregate_inputs(f: &mut Function) -> Result<Vec<&mut Expr>, String> {
    let mut out = Vec::new();
    match &mut f.args {
        FunctionArguments::None => {}
        FunctionArguments::Subquery(_) => return Err("aggregates over subqueries".into()),
        FunctionArguments::List(list) => {
            for a in &mut list.args {
                match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
                    | FunctionArg::Named {
                        arg: FunctionArgExpr::Expr(e),
                        ..
                    } => out.push(e),
                    FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => {}
                    _ => return Err("this aggregate argument".into()),
                }
            }
            for c in &mut list.clauses {
                match c {
                    FunctionArgumentClause::OrderBy(v) => {
                        out.extend(v.iter_mut().map(|o| &mut o.expr))
                    }
                    _ => return Err("this aggregate clause".into()),
                }
            }
        }
    }
    if let Some(x) = &mut f.filter {
        out.push(x);
    }
    out.extend(f.within_group.iter_mut().map(|o| &mut o.expr));
    Ok(out)
}

/// The children of the expression kinds the rewrite handles; None for any
/// other kind.
fn children_mut(e: &mut Expr) -> Option<Vec<&mut Expr>> {
    Some(match e {
        Expr::Nested(x)
        | Expr::UnaryOp { expr: x, .. }
        | Expr::Cast { expr: x, .. }
        | Expr::IsNull(x)
        | Expr::IsNotNull(x)
        | Expr::IsTrue(x)
        | Expr::IsNotTrue(x)
        | Expr::IsFalse(x)
        | Expr::IsNotFalse(x)
        | Expr::IsUnknown(x)
        | Expr::IsNotUnknown(x)
        | Expr::Extract { expr: x, .. }
        | Expr::Collate { expr: x, .. } => vec![&mut **x],
        Expr::BinaryOp { left, right, .. }
        | Expr::IsDistinctFrom(left, right)
        | Expr::IsNotDistinctFrom(left, right) => vec![&mut **left, &mut **right],
        Expr::Between {
            expr, low, high, ..
        } => vec![&mut **expr, &mut **low, &mut **high],
        Expr::InList { expr, list, .. } => {
            let mut v = vec![&mut **expr];
            v.extend(list.iter_mut());
            v
        }
        Expr::Like {
            expr,
            pattern,
            escape_char: None,
            ..
        }
        | Expr::ILike {
            expr,
            pattern,
            escape_char: None,
            ..
        } => vec![&mut **expr, &mut **pattern],
        Expr::AtTimeZone {
            timestamp,
            time_zone,
        } => vec![&mut **timestamp, &mut **time_zone],
        Expr::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            let mut v: Vec<&mut Expr> = Vec::new();
            if let Some(o) = operand {
                v.push(o);
            }
            for w in conditions {
                v.push(&mut w.condition);
                v.push(&mut w.result);
            }
            if let Some(x) = else_result {
                v.push(x);
            }
            v
        }
        Expr::Tuple(v) => v.iter_mut().collect(),
        Expr::Array(a) => a.elem.iter_mut().collect(),
        Expr::Function(f)
            if f.over.is_none()
                && f.filter.is_none()
                && f.within_group.is_empty()
                && matches!(f.parameters, FunctionArguments::None) =>
        {
            match &mut f.args {
                FunctionArguments::None => Vec::new(),
                FunctionArguments::List(list) if list.clauses.is_empty() => {
                    let mut v = Vec::new();
                    for a in &mut list.args {
                        match a {
                            FunctionArg::Unnamed(FunctionArgExpr::Expr(x))
                            | FunctionArg::Named {
                                arg: FunctionArgExpr::Expr(x),
                                ..
                            } => v.push(x),
                            _ => return None,
                        }
                    }
                    v
                }
                _ => return None,
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn expr(s: &str) -> Expr {
        Parser::new(&PostgreSqlDialect {})
            .try_with_sql(s)
            .and_then(|mut p| p.parse_expr())
            .expect("expression")
    }

    #[test]
    fn partial_mode_combines_and_keys() {
        let mut r = Rewriter::new(false, &[expr("g % 3")]);
        let e = r
            .rewrite(&expr(
                "coalesce(sum(x), 0) + (g % 3) * avg(y) - count(*)::int",
            ))
            .expect("rewritten");
        assert_eq!(
            e.to_string(),
            "coalesce($__pgr_agg_0_, 0) + (_pgr.c0) * $__pgr_agg_1_ - $__pgr_agg_2_::INT"
        );
        let cols: Vec<String> = r.cols.iter().map(|c| c.to_string()).collect();
        assert_eq!(cols, ["g % 3", "sum(x)", "sum(y)", "count(y)", "count(*)"]);
        assert_eq!(r.combines[1].1.partials, vec![2, 3]);
        // The same call again is the same combine; a bare column is a key.
        let e = r.rewrite(&expr("sum(x) / h")).expect("rewritten");
        assert_eq!(e.to_string(), "$__pgr_agg_0_ / _pgr.c5");
        assert_eq!(r.keys.len(), 2);
        // DISTINCT aggregates group the shards by their argument.
        let e = r.rewrite(&expr("count(DISTINCT z)")).expect("rewritten");
        assert_eq!(e.to_string(), "$__pgr_agg_3_");
        assert_eq!(r.distinct_args, vec![expr("z")]);
    }

    #[test]
    fn raw_mode_keeps_the_aggregate() {
        let mut r = Rewriter::new(true, &[expr("g")]);
        let e = r
            .rewrite(&expr("string_agg(h, ',' ORDER BY id DESC) || g::text"))
            .expect("rewritten");
        assert_eq!(
            e.to_string(),
            "string_agg(_pgr.c1, ',' ORDER BY _pgr.c2 DESC) || _pgr.c0::TEXT"
        );
        let e = r
            .rewrite(&expr(
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY n) FILTER (WHERE b)",
            ))
            .expect("rewritten");
        assert!(
            e.to_string().contains("_pgr.c3") && e.to_string().contains("_pgr.c4"),
            "{e}"
        );
    }

    #[test]
    fn refusals() {
        let mut r = Rewriter::new(false, &[]);
        assert!(r.rewrite(&expr("sum(x) + (SELECT 1)")).is_err());
        assert!(
            r.rewrite(&expr("string_agg(h, ',')")).is_err(),
            "partial mode"
        );
        // Constants and functions of them stay as written.
        assert_eq!(
            r.rewrite(&expr("now() + $1")).expect("kept").to_string(),
            "now() + $1"
        );
    }
}
