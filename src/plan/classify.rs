//! Keyword pre-classification: statements recognized by their leading
//! keyword(s), before (and instead of) sqlparser, which cannot parse many of
//! them (`PREPARE TRANSACTION`, `VACUUM ANALYZE t`, `DO $$..$$`,
//! `BEGIN ... READ ONLY, DEFERRABLE`, `CHECKPOINT`, `END`, `ABORT`, ...).

use super::copy::plan_copy;
use super::lex::{significant, Tok};
use super::types::{unsupported, Plan, TxnStmt};
use super::SchemaView;

/// A pre-classified statement.
#[derive(Debug)]
pub(crate) struct Classified {
    pub plan: Plan,
    /// The plan was built from the statement's own text (BEGIN's replay
    /// text, COPY options): it is valid for other texts of the same shape
    /// only if the statement has no literal.
    pub text_derived: bool,
}

/// The first `N` keywords of `sql`, lower-cased (ASCII), skipping whitespace
/// and comments; stops at the first token that is not an unquoted word.
fn leading_words<const N: usize>(sql: &str) -> ([[u8; 16]; N], usize) {
    let mut words = [[0u8; 16]; N];
    let mut n = 0;
    for t in significant(sql) {
        if n == N || t.kind != Tok::Ident {
            break;
        }
        let text = t.text(sql).as_bytes();
        if text.len() > 16 {
            // Longer than any keyword we look for.
            words[n] = [b'~'; 16];
        } else {
            for (d, s) in words[n].iter_mut().zip(text) {
                *d = s.to_ascii_lowercase();
            }
        }
        n += 1;
    }
    (words, n)
}

fn word<const N: usize>(words: &([[u8; 16]; N], usize), i: usize) -> &str {
    if i >= words.1 {
        return "";
    }
    let w = &words.0[i];
    let len = w.iter().position(|&c| c == 0).unwrap_or(w.len());
    std::str::from_utf8(&w[..len]).unwrap_or("")
}

/// The statement text to replay for BEGIN: trimmed, without trailing `;`.
fn replay_text(sql: &str) -> String {
    sql.trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
        .to_string()
}

fn two_phase(what: &str) -> Plan {
    unsupported(
        format!(
            "pg-router manages two-phase commit itself; {what} is not supported through the router"
        ),
        None,
    )
}

fn plain(plan: Plan) -> Option<Classified> {
    Some(Classified {
        plan,
        text_derived: false,
    })
}

/// The first keyword of `sql` in upper case ("statement" if there is none);
/// used to name a statement kind in error messages.
pub(crate) fn statement_kind(sql: &str) -> String {
    let words = leading_words::<1>(sql);
    let w = word(&words, 0);
    if w.is_empty() || w.starts_with('~') {
        "this statement".to_string()
    } else {
        w.to_ascii_uppercase()
    }
}

/// Classify `sql` by its leading keyword(s), case-insensitively. None if the
/// statement must go through sqlparser.
pub(crate) fn pre_classify(sql: &str, schema: &dyn SchemaView) -> Option<Classified> {
    let words = leading_words::<3>(sql);
    let w0 = word(&words, 0);
    let w1 = word(&words, 1);
    let w2 = word(&words, 2);
    match w0 {
        "begin" => Some(Classified {
            plan: Plan::Transaction(TxnStmt::Begin {
                sql: replay_text(sql),
            }),
            text_derived: true,
        }),
        "start" if w1 == "transaction" => Some(Classified {
            plan: Plan::Transaction(TxnStmt::Begin {
                sql: replay_text(sql),
            }),
            text_derived: true,
        }),
        "commit" if w1 == "prepared" => plain(two_phase("COMMIT PREPARED")),
        "commit" | "end" => plain(Plan::Transaction(TxnStmt::Commit)),
        "rollback" if w1 == "prepared" => plain(two_phase("ROLLBACK PREPARED")),
        "rollback" if w1 == "to" || (matches!(w1, "work" | "transaction") && w2 == "to") => {
            plain(Plan::Transaction(TxnStmt::Savepoint))
        }
        "rollback" | "abort" => plain(Plan::Transaction(TxnStmt::Rollback)),
        "savepoint" | "release" => plain(Plan::Transaction(TxnStmt::Savepoint)),
        "prepare" if w1 == "transaction" => plain(two_phase("PREPARE TRANSACTION")),
        "prepare" | "execute" | "deallocate" => plain(unsupported(
            format!(
                "SQL-level {} is not supported through pg-router",
                w0.to_ascii_uppercase()
            ),
            Some("use protocol-level prepared statements (the extended query protocol) instead"),
        )),
        "vacuum" | "analyze" | "analyse" | "checkpoint" | "reindex" | "cluster" | "create"
        | "alter" | "drop" | "truncate" | "comment" | "grant" | "revoke" => plain(Plan::AllShards),
        "show" => plain(Plan::AnyShard),
        "select" if matches!(w1, "currval" | "nextval" | "lastval" | "pg_catalog") => {
            super::sequence_fn::plan_sequence_call(sql, schema).map(|plan| Classified {
                plan,
                text_derived: true,
            })
        }
        "set" => plain(Plan::Set {
            // SET LOCAL, SET TRANSACTION and SET CONSTRAINTS last until the
            // end of the transaction.
            local: matches!(w1, "local" | "transaction" | "constraints"),
            reset_all: false,
        }),
        "reset" | "discard" => plain(Plan::Set {
            local: false,
            reset_all: w1 == "all",
        }),
        "do" => plain(unsupported(
            "DO blocks are not supported through pg-router",
            Some("put the code in a function created on every shard and call it"),
        )),
        "listen" | "notify" | "unlisten" => plain(unsupported(
            format!(
                "{} is not supported through pg-router",
                w0.to_ascii_uppercase()
            ),
            None,
        )),
        "declare" | "fetch" | "move" | "close" => plain(unsupported(
            format!(
                "cursors ({}) are not supported through pg-router",
                w0.to_ascii_uppercase()
            ),
            None,
        )),
        "copy" => Some(Classified {
            plan: plan_copy(sql, schema),
            text_derived: true,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoTables;
    impl SchemaView for NoTables {
        fn key_column(&self, _: &str) -> Option<&str> {
            None
        }
    }

    fn pc(sql: &str) -> Option<Plan> {
        pre_classify(sql, &NoTables).map(|c| c.plan)
    }

    #[test]
    fn transaction_control() {
        assert_eq!(
            pc("begin isolation level serializable, read only, deferrable;"),
            Some(Plan::Transaction(TxnStmt::Begin {
                sql: "begin isolation level serializable, read only, deferrable".into()
            }))
        );
        assert_eq!(
            pc("/* hi */ START TRANSACTION READ ONLY"),
            Some(Plan::Transaction(TxnStmt::Begin {
                sql: "/* hi */ START TRANSACTION READ ONLY".into()
            }))
        );
        assert_eq!(pc("END"), Some(Plan::Transaction(TxnStmt::Commit)));
        assert_eq!(pc("commit work"), Some(Plan::Transaction(TxnStmt::Commit)));
        assert_eq!(pc("ABORT"), Some(Plan::Transaction(TxnStmt::Rollback)));
        assert_eq!(pc("ROLLBACK"), Some(Plan::Transaction(TxnStmt::Rollback)));
        assert_eq!(
            pc("ROLLBACK TO SAVEPOINT a"),
            Some(Plan::Transaction(TxnStmt::Savepoint))
        );
        assert_eq!(
            pc("rollback work to a"),
            Some(Plan::Transaction(TxnStmt::Savepoint))
        );
        assert_eq!(
            pc("SAVEPOINT a"),
            Some(Plan::Transaction(TxnStmt::Savepoint))
        );
        assert_eq!(
            pc("RELEASE SAVEPOINT a"),
            Some(Plan::Transaction(TxnStmt::Savepoint))
        );
        for s in [
            "PREPARE TRANSACTION 'x'",
            "COMMIT PREPARED 'x'",
            "ROLLBACK PREPARED 'x'",
        ] {
            match pc(s) {
                Some(Plan::Error {
                    sqlstate: "0A000",
                    message,
                    ..
                }) => {
                    assert!(
                        message.starts_with("pg-router manages two-phase commit itself"),
                        "{message}"
                    )
                }
                other => panic!("{s}: {other:?}"),
            }
        }
    }

    #[test]
    fn utility_statements() {
        for s in [
            "VACUUM ANALYZE t",
            "analyze t",
            "CHECKPOINT",
            "REINDEX TABLE t",
            "CLUSTER",
            "TRUNCATE t",
        ] {
            assert_eq!(pc(s), Some(Plan::AllShards), "{s}");
        }
        assert_eq!(pc("SHOW search_path"), Some(Plan::AnyShard));
        assert_eq!(
            pc("SET search_path TO x"),
            Some(Plan::Set {
                local: false,
                reset_all: false
            })
        );
        assert_eq!(
            pc("SET LOCAL work_mem = '1MB'"),
            Some(Plan::Set {
                local: true,
                reset_all: false
            })
        );
        assert_eq!(
            pc("RESET ALL"),
            Some(Plan::Set {
                local: false,
                reset_all: true
            })
        );
        assert_eq!(
            pc("DISCARD ALL"),
            Some(Plan::Set {
                local: false,
                reset_all: true
            })
        );
        assert_eq!(
            pc("RESET work_mem"),
            Some(Plan::Set {
                local: false,
                reset_all: false
            })
        );
        for s in [
            "DO $$BEGIN END$$",
            "LISTEN x",
            "NOTIFY x",
            "PREPARE p AS SELECT 1",
            "EXECUTE p",
            "DEALLOCATE p",
        ] {
            assert!(
                matches!(
                    pc(s),
                    Some(Plan::Error {
                        sqlstate: "0A000",
                        ..
                    })
                ),
                "{s}"
            );
        }
        assert_eq!(pc("SELECT 1"), None);
        assert_eq!(pc("startx"), None);
        assert_eq!(pc(""), None);
        assert_eq!(statement_kind(" merge into t"), "MERGE");
    }
}
