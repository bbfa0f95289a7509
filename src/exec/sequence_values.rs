//! The values this session got from distributed sequences (generated
//! sharding keys, `nextval`), for `currval` and `lastval` answered by the
//! router (`exec/generated.rs`).

use crate::protocol::error::codes;
use crate::protocol::PgError;

/// Values the session's INSERTs were given from distributed sequences,
/// for `currval(seq)` and `lastval()` answered by the router.
#[derive(Debug, Default)]
pub struct GeneratedValues {
    /// Last value per sequence name (no schema).
    by_sequence: Vec<(String, i64)>,
    /// The last value of any.
    last: Option<i64>,
}

impl GeneratedValues {
    /// Records `value`, just given from `sequence` (name without schema).
    pub fn note(&mut self, sequence: &str, value: i64) {
        match self.by_sequence.iter_mut().find(|(s, _)| s == sequence) {
            Some(e) => e.1 = value,
            None => self.by_sequence.push((sequence.to_string(), value)),
        }
        self.last = Some(value);
    }

    /// `currval(sequence)` (name without schema): the value this session
    /// last got, or PostgreSQL's 55000 error.
    pub fn currval(&self, sequence: &str) -> Result<i64, PgError> {
        self.by_sequence
            .iter()
            .find(|(s, _)| s == sequence)
            .map(|e| e.1)
            .ok_or_else(|| {
                PgError::new(
                    codes::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!(
                        "currval of sequence \"{sequence}\" is not yet defined in this session"
                    ),
                )
            })
    }

    /// `lastval()`: the last value of any, or PostgreSQL's 55000 error.
    pub fn lastval(&self) -> Result<i64, PgError> {
        self.last.ok_or_else(|| {
            PgError::new(
                codes::OBJECT_NOT_IN_PREREQUISITE_STATE,
                "lastval is not yet defined in this session",
            )
        })
    }
}
