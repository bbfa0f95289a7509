//! Enumerating the immediate children of sqlparser expressions (sqlparser's
//! own visitor needs a cargo feature the project does not enable).

use sqlparser::ast::{
    AccessExpr, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentClause,
    FunctionArguments, JsonPathElem, Query, Subscript, WindowFrameBound, WindowSpec, WindowType,
};

/// A child of an expression: a sub-expression or a subquery.
pub(crate) enum Node<'a> {
    Expr(&'a Expr),
    Query(&'a Query),
}

/// Call `f` on each immediate child of `e`. The match is exhaustive on
/// purpose: a new sqlparser expression kind must be looked at here (a
/// missed subquery could hide a sharded table).
pub(crate) fn expr_children<'a>(e: &'a Expr, f: &mut dyn FnMut(Node<'a>)) {
    use Node::Expr as X;
    let opt = |o: &'a Option<Box<Expr>>, f: &mut dyn FnMut(Node<'a>)| {
        if let Some(x) = o {
            f(X(x))
        }
    };
    match e {
        Expr::Identifier(_)
        | Expr::CompoundIdentifier(_)
        | Expr::Value(_)
        | Expr::TypedString(_)
        | Expr::Wildcard(_)
        | Expr::QualifiedWildcard(..)
        | Expr::MatchAgainst { .. } => {}
        Expr::CompoundFieldAccess { root, access_chain } => {
            f(X(root));
            for a in access_chain {
                match a {
                    AccessExpr::Dot(x) => f(X(x)),
                    AccessExpr::Subscript(s) => subscript(s, f),
                }
            }
        }
        Expr::IsFalse(x)
        | Expr::IsNotFalse(x)
        | Expr::IsTrue(x)
        | Expr::IsNotTrue(x)
        | Expr::IsNull(x)
        | Expr::IsNotNull(x)
        | Expr::IsUnknown(x)
        | Expr::IsNotUnknown(x)
        | Expr::Nested(x)
        | Expr::OuterJoin(x)
        | Expr::Prior(x) => f(X(x)),
        Expr::IsDistinctFrom(a, b) | Expr::IsNotDistinctFrom(a, b) => {
            f(X(a));
            f(X(b));
        }
        Expr::IsJson { expr, .. } | Expr::IsNormalized { expr, .. } => f(X(expr)),
        Expr::InList { expr, list, .. } => {
            f(X(expr));
            list.iter().for_each(|x| f(X(x)));
        }
        Expr::InSubquery { expr, subquery, .. } => {
            f(X(expr));
            f(Node::Query(subquery));
        }
        Expr::InUnnest {
            expr, array_expr, ..
        } => {
            f(X(expr));
            f(X(array_expr));
        }
        Expr::Between {
            expr, low, high, ..
        } => {
            f(X(expr));
            f(X(low));
            f(X(high));
        }
        Expr::BinaryOp { left, right, .. }
        | Expr::AnyOp { left, right, .. }
        | Expr::AllOp { left, right, .. } => {
            f(X(left));
            f(X(right));
        }
        Expr::Like {
            expr,
            pattern,
            escape_char,
            ..
        }
        | Expr::ILike {
            expr,
            pattern,
            escape_char,
            ..
        } => {
            f(X(expr));
            f(X(pattern));
            opt(escape_char, f);
        }
        Expr::SimilarTo {
            expr,
            pattern,
            escape_char,
            ..
        } => {
            f(X(expr));
            f(X(pattern));
            opt(escape_char, f);
        }
        Expr::RLike { expr, pattern, .. } => {
            f(X(expr));
            f(X(pattern));
        }
        Expr::UnaryOp { expr, .. }
        | Expr::Cast { expr, .. }
        | Expr::Extract { expr, .. }
        | Expr::Ceil { expr, .. }
        | Expr::Floor { expr, .. }
        | Expr::Collate { expr, .. }
        | Expr::Named { expr, .. } => f(X(expr)),
        Expr::Prefixed { value, .. } => f(X(value)),
        Expr::Convert { expr, styles, .. } => {
            f(X(expr));
            styles.iter().for_each(|x| f(X(x)));
        }
        Expr::AtTimeZone {
            timestamp,
            time_zone,
        } => {
            f(X(timestamp));
            f(X(time_zone));
        }
        Expr::Position { expr, r#in } => {
            f(X(expr));
            f(X(r#in));
        }
        Expr::Substring {
            expr,
            substring_from,
            substring_for,
            ..
        } => {
            f(X(expr));
            opt(substring_from, f);
            opt(substring_for, f);
        }
        Expr::Trim {
            expr,
            trim_what,
            trim_characters,
            ..
        } => {
            f(X(expr));
            opt(trim_what, f);
            if let Some(v) = trim_characters {
                v.iter().for_each(|x| f(X(x)));
            }
        }
        Expr::Overlay {
            expr,
            overlay_what,
            overlay_from,
            overlay_for,
        } => {
            f(X(expr));
            f(X(overlay_what));
            f(X(overlay_from));
            opt(overlay_for, f);
        }
        Expr::Function(func) => function_children(func, f),
        Expr::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            opt(operand, f);
            for w in conditions {
                f(X(&w.condition));
                f(X(&w.result));
            }
            opt(else_result, f);
        }
        Expr::Exists { subquery, .. } | Expr::Subquery(subquery) => f(Node::Query(subquery)),
        Expr::GroupingSets(v) | Expr::Cube(v) | Expr::Rollup(v) => {
            v.iter().flatten().for_each(|x| f(X(x)));
        }
        Expr::Tuple(v) => v.iter().for_each(|x| f(X(x))),
        Expr::Struct { values, .. } => values.iter().for_each(|x| f(X(x))),
        Expr::Dictionary(fields) => fields.iter().for_each(|d| f(X(&d.value))),
        Expr::Map(m) => {
            for entry in &m.entries {
                f(X(&entry.key));
                f(X(&entry.value));
            }
        }
        Expr::Array(a) => a.elem.iter().for_each(|x| f(X(x))),
        Expr::Interval(i) => f(X(&i.value)),
        Expr::JsonAccess { value, path } => {
            f(X(value));
            for p in &path.path {
                match p {
                    JsonPathElem::Bracket { key } | JsonPathElem::ColonBracket { key } => f(X(key)),
                    JsonPathElem::Dot { .. } => {}
                }
            }
        }
        Expr::Lambda(l) => f(X(&l.body)),
        Expr::MemberOf(m) => {
            f(X(&m.value));
            f(X(&m.array));
        }
    }
}

fn subscript<'a>(s: &'a Subscript, f: &mut dyn FnMut(Node<'a>)) {
    match s {
        Subscript::Index { index } => f(Node::Expr(index)),
        Subscript::Slice {
            lower_bound,
            upper_bound,
            stride,
        } => {
            for x in [lower_bound, upper_bound, stride].into_iter().flatten() {
                f(Node::Expr(x));
            }
        }
    }
}

fn args_children<'a>(args: &'a FunctionArguments, f: &mut dyn FnMut(Node<'a>)) {
    match args {
        FunctionArguments::None => {}
        FunctionArguments::Subquery(q) => f(Node::Query(q)),
        FunctionArguments::List(list) => {
            for a in &list.args {
                function_arg(a, f);
            }
            for c in &list.clauses {
                match c {
                    FunctionArgumentClause::OrderBy(v) => {
                        v.iter().for_each(|o| f(Node::Expr(&o.expr)))
                    }
                    FunctionArgumentClause::Limit(x) | FunctionArgumentClause::Where(x) => {
                        f(Node::Expr(x))
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Children of one function argument.
pub(crate) fn function_arg<'a>(a: &'a FunctionArg, f: &mut dyn FnMut(Node<'a>)) {
    let arg = match a {
        FunctionArg::Named { arg, .. } | FunctionArg::Unnamed(arg) => arg,
        FunctionArg::ExprNamed { name, arg, .. } => {
            f(Node::Expr(name));
            arg
        }
    };
    if let FunctionArgExpr::Expr(x) = arg {
        f(Node::Expr(x));
    }
}

/// Children of a window specification.
pub(crate) fn window_children<'a>(w: &'a WindowSpec, f: &mut dyn FnMut(Node<'a>)) {
    w.partition_by.iter().for_each(|x| f(Node::Expr(x)));
    w.order_by.iter().for_each(|o| f(Node::Expr(&o.expr)));
    if let Some(frame) = &w.window_frame {
        for b in std::iter::once(&frame.start_bound).chain(frame.end_bound.iter()) {
            if let WindowFrameBound::Preceding(Some(x)) | WindowFrameBound::Following(Some(x)) = b {
                f(Node::Expr(x));
            }
        }
    }
}

/// Children of a function call: arguments, FILTER, WITHIN GROUP, OVER.
pub(crate) fn function_children<'a>(func: &'a Function, f: &mut dyn FnMut(Node<'a>)) {
    args_children(&func.parameters, f);
    args_children(&func.args, f);
    if let Some(x) = &func.filter {
        f(Node::Expr(x));
    }
    func.within_group
        .iter()
        .for_each(|o| f(Node::Expr(&o.expr)));
    if let Some(WindowType::WindowSpec(w)) = &func.over {
        window_children(w, f);
    }
}

/// The conjuncts of `e`: `a AND (b AND c)` gives `[a, b, c]`, parentheses
/// removed; iterative (long AND chains are deep trees).
pub(crate) fn conjuncts(e: &Expr) -> Vec<&Expr> {
    let mut out = Vec::new();
    let mut stack: Vec<&Expr> = vec![e];
    while let Some(x) = stack.pop() {
        match x {
            Expr::BinaryOp {
                left,
                op: sqlparser::ast::BinaryOperator::And,
                right,
            } => {
                stack.push(right);
                stack.push(left);
            }
            Expr::Nested(inner) => stack.push(inner),
            other => out.push(other),
        }
    }
    out
}
