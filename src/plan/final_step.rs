//! The final step of a grouped multi-shard SELECT the router cannot finish
//! by itself: expressions over aggregates (`sum(x) / count(*)`,
//! `round(avg(x), 2)`, `count(*)::int`), aggregates it cannot merge
//! (`string_agg`, `array_agg`, statistics, ordered-set aggregates), HAVING
//! and ORDER BY over such expressions.
//!
//! The shards return, per group, the group keys and partial aggregates
//! (`count`, `sum`, `min`, `max`, `bool_and`/`bool_or`, `avg` as sum and
//! count, DISTINCT aggregates as their argument's distinct values), or,
//! when an aggregate cannot be split, their raw rows (keys and aggregate
//! inputs, no aggregation). The router collects those rows and hands them
//! to PostgreSQL on one shard as arrays, where the client's select list,
//! HAVING, ORDER BY, DISTINCT and LIMIT run over them
//! (`FROM unnest($1, ..., $m) AS _pgr(c0, ...)`), the partial aggregates
//! combined (`sum(count)`, `sum(sum)`, `sum(sum) / sum(count)` with the
//! types PostgreSQL's own aggregates have): PostgreSQL's own semantics for
//! every type, scale, rounding and error, as Citus's coordinator does. The
//! client's column names and types come from PostgreSQL's description of
//! the client's own statement.

use sqlparser::ast::{
    Expr, GroupByExpr, OrderBy, OrderByKind, Query, Select, SelectItem, SetExpr, Value,
};

use super::aggregates::{contains_aggregate, func_name, item_expr};
use super::analyze::ParamMode;
use super::gather_builder::{parse_agg, Builder};
use super::lex::{significant, Tok};
use super::names::norm_ident;
use super::rewrite::{col_ref, unnest_from, Rewriter};
use super::template::template;
use super::types::{FinalStep, GatherPlan, Merge};
use super::walk::{expr_children, Node};

/// True if a grouped SELECT may be finished by a final step: it groups or
/// aggregates, has no `*` and no FOR UPDATE.
pub(crate) fn applies(q: &Query, sel: &Select) -> bool {
    let grouped = !matches!(&sel.group_by, GroupByExpr::Expressions(v, m) if v.is_empty() && m.is_empty())
        || sel.having.is_some()
        || sel
            .projection
            .iter()
            .filter_map(item_expr)
            .any(contains_aggregate);
    grouped && q.locks.is_empty() && sel.projection.iter().all(|i| item_expr(i).is_some())
}

/// Every aggregate call in `e` (not in subqueries).
fn aggregate_calls<'a>(e: &'a Expr, out: &mut Vec<&'a sqlparser::ast::Function>) {
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        if let Expr::Function(f) = x {
            if super::aggregates::is_aggregate_call(f) {
                out.push(f);
                continue;
            }
        }
        expr_children(x, &mut |n| {
            if let Node::Expr(c) = n {
                stack.push(c)
            }
        });
    }
}

/// True if `e` has a `$n` placeholder (not in subqueries).
fn has_placeholder(e: &Expr) -> bool {
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        if let Expr::Value(v) = x {
            if matches!(v.value, Value::Placeholder(_)) {
                return true;
            }
        }
        expr_children(x, &mut |n| {
            if let Node::Expr(c) = n {
                stack.push(c)
            }
        });
    }
    false
}

/// The gather plan of a grouped SELECT finished by PostgreSQL (see the
/// module docs), or the construct that prevents it.
pub(crate) fn build_final(q: &Query, sel: &Select, mode: ParamMode) -> Result<Merge, String> {
    let group_exprs = super::gather_builder::group_exprs(sel)?;
    if q.with.is_some() {
        return Err("WITH together with expressions over aggregates".into());
    }
    let order: Vec<sqlparser::ast::OrderByExpr> = match &q.order_by {
        None => Vec::new(),
        Some(OrderBy {
            kind: OrderByKind::Expressions(v),
            interpolate: None,
        }) => v.clone(),
        Some(_) => return Err("this ORDER BY form".into()),
    };
    // Resolve GROUP BY positions and output names like the router merge.
    let mut b = Builder::new(mode, &sel.projection);
    let mut keys = Vec::with_capacity(group_exprs.len());
    for g in &group_exprs {
        keys.push(b.resolve(g, "GROUP BY")?);
    }
    // A normalized text numbers every literal apart: `GROUP BY n > $3`
    // would not match the select item `n > $1`. Plan the text as written.
    if b.needs_text || (mode == ParamMode::Literals && keys.iter().any(has_placeholder)) {
        return Ok(Merge::NeedsText);
    }
    // Raw rows unless every aggregate can be split into partials.
    let mut calls = Vec::new();
    for item in &sel.projection {
        if let Some(e) = item_expr(item) {
            aggregate_calls(e, &mut calls);
        }
    }
    if let Some(h) = &sel.having {
        aggregate_calls(h, &mut calls);
    }
    for o in &order {
        aggregate_calls(&o.expr, &mut calls);
    }
    let raw = calls.iter().any(|f| parse_agg(f).is_err());
    let mut r = Rewriter::new(raw, &keys);

    // The final query: the client's, over the shards' rows.
    let mut fin_sel = sel.clone();
    let mut names = Vec::with_capacity(sel.projection.len());
    fin_sel.projection = Vec::with_capacity(sel.projection.len());
    for item in &sel.projection {
        let (e, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.clone())),
            _ => return Err("this select item with expressions over aggregates".into()),
        };
        // Output names as PostgreSQL gives them, so ORDER BY can name them.
        let alias = alias.unwrap_or_else(|| sqlparser::ast::Ident::with_quote('"', output_name(e)));
        names.push(norm_ident(&alias));
        fin_sel.projection.push(SelectItem::ExprWithAlias {
            expr: r.rewrite(e)?,
            alias,
        });
    }
    fin_sel.having = match &sel.having {
        Some(h) => Some(r.rewrite(h)?),
        None => None,
    };
    if let Some(sqlparser::ast::Distinct::On(v)) = &mut fin_sel.distinct {
        for e in v.iter_mut() {
            *e = r.rewrite(e)?;
        }
    }
    let mut fin = q.clone();
    if let Some(OrderBy {
        kind: OrderByKind::Expressions(v),
        ..
    }) = &mut fin.order_by
    {
        for o in v.iter_mut() {
            let output = match &o.expr {
                Expr::Value(v) => matches!(v.value, Value::Number(..) | Value::Placeholder(_)),
                Expr::Identifier(id) => names.contains(&norm_ident(id)),
                _ => false,
            };
            if !output {
                o.expr = r.rewrite(&o.expr)?;
            }
        }
    }
    let m = r.cols.len();
    fin_sel.from = unnest_from(m);
    fin_sel.selection = None;
    fin_sel.group_by = GroupByExpr::Expressions(
        r.keys.iter().map(|(_, c)| col_ref(*c)).collect(),
        Vec::new(),
    );
    fin.body = Box::new(SetExpr::Select(Box::new(fin_sel)));

    // The shards' statement: keys and partials (grouped), or raw rows.
    let mut shard = q.clone();
    let SetExpr::Select(s2) = shard.body.as_mut() else {
        return Err("this query shape".into());
    };
    s2.projection = r
        .cols
        .iter()
        .cloned()
        .map(SelectItem::UnnamedExpr)
        .collect();
    s2.having = None;
    s2.distinct = None;
    s2.group_by = if raw {
        GroupByExpr::Expressions(Vec::new(), Vec::new())
    } else {
        let mut g: Vec<Expr> = r.keys.iter().map(|(k, _)| k.clone()).collect();
        g.extend(r.distinct_args.iter().cloned());
        GroupByExpr::Expressions(g, Vec::new())
    };
    shard.order_by = None;
    shard.limit_clause = None;
    shard.fetch = None;

    let (shard_sql, shard_params, fin_sql, fin_params) = match mode {
        ParamMode::Keys => {
            let (s, sp) = renumber_params(&shard.to_string(), 0);
            let (f, fp) = renumber_params(&fin.to_string(), m);
            (s, Some(sp), f, fp)
        }
        _ => (shard.to_string(), None, fin.to_string(), Vec::new()),
    };
    let fin_pieces = template(&fin_sql, mode, None, None, false);
    let steps = vec![
        if raw {
            format!("raw rows from the shards ({m} column(s), not aggregated there)")
        } else {
            format!(
                "partial aggregates per group on the shards ({m} column(s), {} key(s))",
                r.keys.len()
            )
        },
        "final step by PostgreSQL on the first shard: select list, HAVING, ORDER BY, DISTINCT and LIMIT over the shards' rows".into(),
    ];
    Ok(Merge::Gather(std::sync::Arc::new(GatherPlan {
        sql: template(&shard_sql, mode, None, None, true),
        hidden: m,
        visible: Some(0),
        grouping: None,
        order: Vec::new(),
        limit: None,
        offset: None,
        distinct_on: 0,
        steps,
        shard_params,
        finish: Some(std::sync::Arc::new(FinalStep {
            sql: fin_pieces,
            combines: r.combines.into_iter().map(|(_, s)| s).collect(),
            raw,
            params: fin_params,
        })),
        verdict: Default::default(),
    })))
}

/// `sql` with its `$n` parameters renumbered `$base+1, $base+2, ...` in
/// order of first use; also returns, for each new number, the client
/// parameter (0-based) it stands for.
fn renumber_params(sql: &str, base: usize) -> (String, Vec<usize>) {
    let mut used: Vec<usize> = Vec::new();
    let mut out = String::with_capacity(sql.len());
    let mut at = 0;
    for t in significant(sql) {
        if t.kind != Tok::Param {
            continue;
        }
        let Some(n) = t.text(sql).get(1..).and_then(|d| d.parse::<usize>().ok()) else {
            continue;
        };
        let Some(idx) = n.checked_sub(1) else {
            continue;
        };
        let pos = match used.iter().position(|&u| u == idx) {
            Some(p) => p,
            None => {
                used.push(idx);
                used.len() - 1
            }
        };
        out.push_str(&sql[at..t.start]);
        out.push_str(&format!("${}", base + pos + 1));
        at = t.end;
    }
    out.push_str(&sql[at..]);
    (out, used)
}

/// The column name PostgreSQL gives a select item without alias
/// (FigureColname in parse_target.c, common forms): a column's name, a
/// function's name, a cast's operand's name, `case`, else `?column?`.
fn output_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(id) => norm_ident(id),
        Expr::CompoundIdentifier(v) => v.last().map(norm_ident).unwrap_or_default(),
        Expr::Function(f) => func_name(f),
        Expr::Nested(x) | Expr::Cast { expr: x, .. } | Expr::Collate { expr: x, .. } => {
            match output_name(x).as_str() {
                "?column?" => "?column?".into(),
                n => n.to_string(),
            }
        }
        Expr::Case { .. } => "case".into(),
        Expr::Extract { .. } => "extract".into(),
        Expr::Substring { .. } => "substring".into(),
        Expr::Array(_) => "array".into(),
        _ => "?column?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_renumbered() {
        let (s, used) = renumber_params("SELECT $3, '$1', $3 + $1 -- $2\n", 2);
        assert_eq!(s, "SELECT $3, '$1', $3 + $4 -- $2\n");
        assert_eq!(used, vec![2, 0]);
    }

    #[test]
    fn output_names() {
        let p = |s: &str| {
            sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
                .try_with_sql(s)
                .and_then(|mut p| p.parse_expr())
                .expect("expression")
        };
        assert_eq!(output_name(&p("count(*)::int")), "count");
        assert_eq!(output_name(&p("t.\"G\"")), "G");
        assert_eq!(output_name(&p("sum(x) / count(*)")), "?column?");
        assert_eq!(output_name(&p("CASE WHEN true THEN 1 END")), "case");
    }
}
