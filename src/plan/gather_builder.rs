//! The [`Builder`] of a gather plan: the hidden columns, group keys and
//! aggregate slots collected while a scattered SELECT is analyzed, and which
//! aggregate calls the router can merge.

use sqlparser::ast::{
    DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments,
    GroupByExpr, Ident, ObjectName, ObjectNamePart, Select, SelectItem, Value,
};

use super::aggregates::{func_name, item_expr};
use super::analyze::ParamMode;
use super::names::norm_ident;
use super::types::{AggFunc, AggSlot};

/// Collects hidden columns and aggregate slots while a query is analyzed.
pub(crate) struct Builder<'a> {
    pub mode: ParamMode,
    items: &'a [SelectItem],
    /// Hidden column expressions, in order.
    pub hidden: Vec<Expr>,
    /// Group key (indexes into `hidden`).
    pub keys: Vec<usize>,
    /// Aggregate slots and the call each was made from.
    pub aggs: Vec<(Function, AggSlot)>,
    /// The DISTINCT aggregates' arguments (added to the shards' GROUP BY).
    pub distinct_args: Vec<Expr>,
    /// A positional reference is a literal of a normalized text.
    pub needs_text: bool,
}

impl<'a> Builder<'a> {
    /// An empty builder for a SELECT with select list `items`.
    pub fn new(mode: ParamMode, items: &'a [SelectItem]) -> Self {
        Builder {
            mode,
            items,
            hidden: Vec::new(),
            keys: Vec::new(),
            aggs: Vec::new(),
            distinct_args: Vec::new(),
            needs_text: false,
        }
    }

    /// Index of hidden column `e`, added if new.
    pub fn hide(&mut self, e: &Expr) -> usize {
        if let Some(i) = self.hidden.iter().position(|h| h == e) {
            return i;
        }
        self.hidden.push(e.clone());
        self.hidden.len() - 1
    }

    /// Index of group key `e` (a hidden column), added if new.
    pub fn key(&mut self, e: &Expr) -> usize {
        let h = self.hide(e);
        if let Some(i) = self.keys.iter().position(|k| *k == h) {
            return i;
        }
        self.keys.push(h);
        self.keys.len() - 1
    }

    /// ORDER BY / GROUP BY / DISTINCT ON item: positions (`2`) and output
    /// column names are resolved to the select item's expression.
    pub fn resolve(&mut self, e: &Expr, what: &str) -> Result<Expr, String> {
        match e {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => {
                    let k: usize = n.parse().map_err(|_| format!("{what} {n}"))?;
                    match k.checked_sub(1).and_then(|i| self.items.get(i)) {
                        Some(item) => item_expr(item)
                            .cloned()
                            .ok_or_else(|| format!("{what} position of a * column")),
                        // PostgreSQL reports the bad position.
                        None => Ok(e.clone()),
                    }
                }
                Value::Placeholder(_) if self.mode == ParamMode::Literals => {
                    self.needs_text = true;
                    Ok(e.clone())
                }
                Value::Placeholder(_) => Err(format!("{what} a parameter")),
                _ => Ok(e.clone()),
            },
            Expr::Identifier(id) => {
                let name = norm_ident(id);
                for item in self.items {
                    if let SelectItem::ExprWithAlias { expr, alias } = item {
                        if norm_ident(alias) == name {
                            return Ok(expr.clone());
                        }
                    }
                }
                Ok(e.clone())
            }
            _ => Ok(e.clone()),
        }
    }

    /// The aggregate slot for call `f`, added if new.
    pub fn agg(&mut self, f: &Function) -> Result<usize, String> {
        if let Some(i) = self.aggs.iter().position(|(g, _)| g == f) {
            return Ok(i);
        }
        let (func, distinct, arg) = parse_agg(f)?;
        let mut partials = Vec::new();
        if distinct {
            let arg = arg.ok_or_else(|| "DISTINCT aggregate without argument".to_string())?;
            if !self.distinct_args.contains(&arg) {
                self.distinct_args.push(arg.clone());
            }
            partials.push(self.hide(&arg));
        } else {
            let call = |name: &str| {
                let mut g = f.clone();
                g.name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name))]);
                Expr::Function(g)
            };
            match func {
                AggFunc::Avg => {
                    partials.push(self.hide(&call("sum")));
                    partials.push(self.hide(&call("count")));
                }
                _ => partials.push(self.hide(&Expr::Function(f.clone()))),
            }
        }
        self.aggs.push((
            f.clone(),
            AggSlot {
                func,
                distinct,
                partials,
            },
        ));
        Ok(self.aggs.len() - 1)
    }
}

/// The function, DISTINCT flag and argument of an aggregate the router can
/// merge, or the name of what it cannot.
pub(crate) fn parse_agg(f: &Function) -> Result<(AggFunc, bool, Option<Expr>), String> {
    let name = func_name(f);
    let func = match name.as_str() {
        "count" => AggFunc::Count,
        "sum" => AggFunc::Sum,
        "min" => AggFunc::Min,
        "max" => AggFunc::Max,
        "avg" => AggFunc::Avg,
        "bool_and" | "every" => AggFunc::BoolAnd,
        "bool_or" => AggFunc::BoolOr,
        _ => return Err(format!("aggregate {name}()")),
    };
    if !f.within_group.is_empty()
        || f.null_treatment.is_some()
        || !matches!(f.parameters, FunctionArguments::None)
    {
        return Err(format!("this form of {name}()"));
    }
    let FunctionArguments::List(list) = &f.args else {
        return Err(format!("this form of {name}()"));
    };
    if !list.clauses.is_empty() {
        return Err(format!("{name}() with ORDER BY or other clauses"));
    }
    let distinct = matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct));
    if distinct && f.filter.is_some() {
        return Err(format!("{name}(DISTINCT ...) FILTER (...)"));
    }
    let arg = match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)]
            if func == AggFunc::Count && !distinct =>
        {
            None
        }
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] => Some(e.clone()),
        _ => return Err(format!("this form of {name}()")),
    };
    // min/max of the distinct values are the min/max of all values.
    let distinct = distinct
        && !matches!(
            func,
            AggFunc::Min | AggFunc::Max | AggFunc::BoolAnd | AggFunc::BoolOr
        );
    Ok((func, distinct, arg))
}

/// The GROUP BY expressions of `sel` as written, or the grouping form the
/// gather cannot merge.
pub(crate) fn group_exprs(sel: &Select) -> Result<Vec<Expr>, String> {
    let group_exprs: Vec<Expr> = match &sel.group_by {
        GroupByExpr::Expressions(v, m) if m.is_empty() => v.clone(),
        _ => return Err("GROUP BY ALL/ROLLUP/CUBE/GROUPING SETS".into()),
    };
    if group_exprs
        .iter()
        .any(|e| matches!(e, Expr::Rollup(_) | Expr::Cube(_) | Expr::GroupingSets(_)))
    {
        return Err("GROUP BY ROLLUP/CUBE/GROUPING SETS".into());
    }
    Ok(group_exprs)
}
