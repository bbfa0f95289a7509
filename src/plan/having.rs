//! Compiling a HAVING clause into a [`Cond`] the router evaluates per group
//! after the merge: comparisons (`=`, `<>`, `<`, `<=`, `>`, `>=`, BETWEEN),
//! IS [NOT] NULL, AND/OR/NOT over aggregates, group keys and constants.

use sqlparser::ast::{BinaryOperator, Expr, UnaryOperator, Value};

use super::aggregates::{contains_aggregate, is_aggregate_call};
use super::gather_builder::Builder;
use super::types::{CmpOp, Cond, Operand};

/// The condition of `HAVING e`, adding the aggregates and keys it reads to
/// the builder; Err names what the router cannot evaluate.
pub(crate) fn compile_having(b: &mut Builder<'_>, e: &Expr) -> Result<Cond, String> {
    match e {
        Expr::Nested(x) => compile_having(b, x),
        Expr::BinaryOp { left, op, right } => {
            let cmp = match op {
                BinaryOperator::And => {
                    return Ok(Cond::And(
                        Box::new(compile_having(b, left)?),
                        Box::new(compile_having(b, right)?),
                    ))
                }
                BinaryOperator::Or => {
                    return Ok(Cond::Or(
                        Box::new(compile_having(b, left)?),
                        Box::new(compile_having(b, right)?),
                    ))
                }
                BinaryOperator::Eq => CmpOp::Eq,
                BinaryOperator::NotEq => CmpOp::Ne,
                BinaryOperator::Lt => CmpOp::Lt,
                BinaryOperator::LtEq => CmpOp::Le,
                BinaryOperator::Gt => CmpOp::Gt,
                BinaryOperator::GtEq => CmpOp::Ge,
                _ => return Err(format!("operator {op} in HAVING")),
            };
            Ok(Cond::Cmp(cmp, operand(b, left)?, operand(b, right)?))
        }
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => Ok(Cond::Not(Box::new(compile_having(b, expr)?))),
        Expr::IsNull(x) => Ok(Cond::IsNull(operand(b, x)?, true)),
        Expr::IsNotNull(x) => Ok(Cond::IsNull(operand(b, x)?, false)),
        Expr::Between {
            expr,
            negated,
            low,
            high,
        } => {
            let v = operand(b, expr)?;
            let c = Cond::And(
                Box::new(Cond::Cmp(CmpOp::Ge, v.clone(), operand(b, low)?)),
                Box::new(Cond::Cmp(CmpOp::Le, v, operand(b, high)?)),
            );
            Ok(if *negated { Cond::Not(Box::new(c)) } else { c })
        }
        Expr::Function(_) | Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
            Ok(Cond::Truth(operand(b, e)?))
        }
        _ => Err("this HAVING condition".into()),
    }
}

fn operand(b: &mut Builder<'_>, e: &Expr) -> Result<Operand, String> {
    match e {
        Expr::Nested(x) => operand(b, x),
        Expr::Value(v) => match &v.value {
            Value::Null => Ok(Operand::Null),
            Value::Number(n, _) => Ok(Operand::Const(n.clone())),
            Value::SingleQuotedString(s) => Ok(Operand::Const(s.clone())),
            Value::Placeholder(p) => {
                let n: usize = p
                    .strip_prefix('$')
                    .and_then(|d| d.parse().ok())
                    .ok_or_else(|| format!("HAVING {p}"))?;
                Ok(Operand::Param(
                    n.checked_sub(1).ok_or_else(|| format!("HAVING {p}"))?,
                ))
            }
            _ => Err("this constant in HAVING".into()),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match expr.as_ref() {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => Ok(Operand::Const(format!("-{n}"))),
                Value::Placeholder(p) => {
                    let n: usize = p
                        .strip_prefix('$')
                        .and_then(|d| d.parse().ok())
                        .ok_or_else(|| format!("HAVING {p}"))?;
                    Ok(Operand::NegParam(
                        n.checked_sub(1).ok_or_else(|| format!("HAVING {p}"))?,
                    ))
                }
                _ => Err("this constant in HAVING".into()),
            },
            _ => Err("arithmetic in HAVING".into()),
        },
        Expr::Function(f) if contains_aggregate(e) => {
            if !is_aggregate_call(f) {
                return Err("expressions over aggregates in HAVING".into());
            }
            Ok(Operand::Agg(b.agg(f)?))
        }
        _ if contains_aggregate(e) => Err("expressions over aggregates in HAVING".into()),
        _ => Ok(Operand::Key(b.key(e))),
    }
}
