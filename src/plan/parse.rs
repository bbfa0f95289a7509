//! Running sqlparser on one statement text and planning the result, with a
//! guard against statements whose syntax trees would be too deep.
//!
//! sqlparser builds left-deep trees for operator chains (`a OR b OR c ...`)
//! and both it and the tree's destructor recurse once per operator: tens of
//! thousands of operators overflow a 2 MiB thread stack, which aborts the
//! whole process. Statements with more than [`MAX_OPERATORS`] binary
//! operators are therefore refused before parsing (SQLSTATE 54001, like
//! PostgreSQL's "stack depth limit exceeded"). Nesting of parentheses and
//! function calls is already bounded by sqlparser's recursion limit.
//!
//! Planning a scatter-gather clones and re-renders the tree (also one
//! recursion per operator), so statements with more than
//! [`BIG_STACK_OPERATORS`] operators are parsed and planned on a scoped
//! helper thread with a [`BIG_STACK_BYTES`] stack.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};

use super::analyze::ParamMode;
use super::classify::statement_kind;
use super::lex::{significant, Tok};
use super::statements::plan_statement;
use super::types::Plan;
use super::SchemaView;

/// Most binary operators (including AND/OR) a statement may have.
pub(crate) const MAX_OPERATORS: usize = 4096;

/// Statements with more operators are planned on a thread with a larger
/// stack.
pub(crate) const BIG_STACK_OPERATORS: usize = 256;

/// Stack size of that thread, in bytes.
pub(crate) const BIG_STACK_BYTES: usize = 256 * 1024 * 1024;

/// Count binary operators: operator characters that follow an operand, and
/// the keywords AND / OR. Unary signs (`(-1`, `, -2`) are not counted, so
/// large multi-row INSERTs are not affected.
pub(crate) fn operator_count(sql: &str) -> usize {
    let mut n = 0;
    let mut after_operand = false;
    for t in significant(sql) {
        let operand = match t.kind {
            Tok::Ident => {
                if t.is_word(sql, "and") || t.is_word(sql, "or") {
                    n += 1;
                    false
                } else {
                    true
                }
            }
            Tok::QuotedIdent | Tok::Str(_) | Tok::Number | Tok::Param => true,
            Tok::Other => {
                let c = t.text(sql).as_bytes().first().copied().unwrap_or(0);
                if matches!(c, b')' | b']') {
                    true
                } else {
                    if after_operand && b"+-*/%^<>=~!@#&|`?:".contains(&c) {
                        n += 1;
                    }
                    false
                }
            }
            _ => false,
        };
        after_operand = operand;
    }
    n
}

fn parser_message(e: ParserError) -> String {
    match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
        ParserError::RecursionLimitExceeded => "statement is nested too deeply".to_string(),
    }
}

/// The 42601 plan for a sqlparser error message.
pub(crate) fn syntax_error(msg: &str) -> Plan {
    Plan::Error {
        sqlstate: "42601",
        message: format!("syntax error: {msg}"),
        hint: None,
    }
}

/// Parse `text` with sqlparser (PostgreSQL dialect) and plan it. Err is
/// sqlparser's message when the text does not parse.
pub(crate) fn parse_and_plan(
    text: &str,
    schema: &dyn SchemaView,
    mode: ParamMode,
) -> Result<Plan, String> {
    let ops = operator_count(text);
    if ops > MAX_OPERATORS {
        return Ok(Plan::Error {
            sqlstate: "54001",
            message: format!(
                "statement is too complex for pg-router's planner ({ops} operators, at most {MAX_OPERATORS})"
            ),
            hint: Some("use IN (...) lists or split the statement".to_string()),
        });
    }
    if ops > BIG_STACK_OPERATORS {
        let planned = std::thread::scope(|sc| {
            std::thread::Builder::new()
                .name("pgr-plan".into())
                .stack_size(BIG_STACK_BYTES)
                .spawn_scoped(sc, || parse_and_plan_here(text, schema, mode))
                .map(|h| h.join())
        });
        return match planned {
            Ok(Ok(r)) => r,
            _ => Ok(Plan::Error {
                sqlstate: "54001",
                message: "statement is too complex for pg-router's planner".to_string(),
                hint: None,
            }),
        };
    }
    parse_and_plan_here(text, schema, mode)
}

fn parse_and_plan_here(
    text: &str,
    schema: &dyn SchemaView,
    mode: ParamMode,
) -> Result<Plan, String> {
    let blanked = without_overriding(text);
    let parsed = blanked.as_deref().unwrap_or(text);
    let stmts = Parser::parse_sql(&PostgreSqlDialect {}, parsed).map_err(parser_message)?;
    Ok(match stmts.as_slice() {
        [] => Plan::AnyShard,
        [stmt] => plan_statement(stmt, schema, mode, &statement_kind(text)),
        _ => Plan::Error {
            sqlstate: "42601",
            message: "cannot plan several statements at once; split the query string first"
                .to_string(),
            hint: None,
        },
        // (Texts with several statements are normally caught before parsing
        // by `split_statements`; this covers any disagreement.)
    })
}

/// An INSERT's `OVERRIDING SYSTEM VALUE` / `OVERRIDING USER VALUE`
/// blanked out (same length), for sqlparser, which does not know the
/// clause; the shards still get the text as written. None if there is
/// none.
fn without_overriding(text: &str) -> Option<String> {
    let toks: Vec<_> = significant(text).collect();
    if !toks.first()?.is_word(text, "insert") {
        return None;
    }
    let i = toks.iter().position(|t| t.is_word(text, "overriding"))?;
    let (kind, value) = (toks.get(i + 1)?, toks.get(i + 2)?);
    if !(kind.is_word(text, "system") || kind.is_word(text, "user"))
        || !value.is_word(text, "value")
    {
        return None;
    }
    let r = toks[i].start..value.end;
    Some(format!(
        "{}{}{}",
        &text[..r.start],
        " ".repeat(r.len()),
        &text[r.end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overriding_is_blanked_for_the_parser() {
        assert_eq!(
            without_overriding("INSERT INTO t (a) OVERRIDING SYSTEM VALUE VALUES (1)").as_deref(),
            Some(format!("INSERT INTO t (a) {} VALUES (1)", " ".repeat(23)).as_str())
        );
        assert_eq!(
            without_overriding("INSERT INTO t VALUES ('overriding')"),
            None
        );
        assert_eq!(without_overriding("SELECT overriding FROM t"), None);
    }

    #[test]
    fn counts_binary_operators_only() {
        assert_eq!(
            operator_count("SELECT a + -1 FROM t WHERE x = 1 AND y <= 2 OR z"),
            5
        );
        assert_eq!(operator_count("INSERT INTO t VALUES (-1, -2), (-3, +4)"), 0);
        assert_eq!(operator_count("SELECT a::int, f(x) - 1"), 2);
    }
}
