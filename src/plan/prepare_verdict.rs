//! What the router has learned about running one statement shape's
//! literals as parameters ([`PrepareVerdict`]): shared by every session
//! through the plan cache, for the auto-prepared fast path
//! ([`super::AutoStmt`]) and the simple-protocol gather
//! ([`super::GatherPlan::verdict`]).
//!
//! A string literal's parameter is left untyped for the server to infer,
//! which can fail where the literal did not (`SELECT 'a' IS NULL`: 42P18). Outside
//! a transaction block such a failure is undone by running the text as
//! written; inside one it would abort the client's transaction, so there a
//! combination of parameter types with strings is used only once it
//! prepared without error, and a shape whose parameters failed where its
//! literals did not is never prepared again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The verdict on preparing one statement shape with its literals as
/// parameters. A memo, not part of the shape: clones copy what is known,
/// and two verdicts always compare equal (so plans stay comparable).
#[derive(Debug, Default)]
pub struct PrepareVerdict {
    /// Hash of the last parameter type combination with strings that
    /// prepared without error (0 = none).
    verified: AtomicU64,
    refused: AtomicBool,
}

impl PrepareVerdict {
    /// True if parameters of the combination `types_hash` (never 0) may be
    /// prepared where a failure cannot be undone (inside a transaction
    /// block): none is a string (`strings` false), or the combination
    /// prepared before.
    pub fn trusted(&self, strings: bool, types_hash: u64) -> bool {
        !strings || self.verified.load(Ordering::Relaxed) == types_hash
    }

    /// Records that the combination `types_hash` prepared without error
    /// (remembered only when it has strings).
    pub fn verify(&self, strings: bool, types_hash: u64) {
        if strings {
            self.verified.store(types_hash, Ordering::Relaxed);
        }
    }

    /// Turns preparing off for this shape: a parameter failed where the
    /// literal did not.
    pub fn refuse(&self) {
        self.refused.store(true, Ordering::Relaxed);
    }

    /// True after [`PrepareVerdict::refuse`].
    pub fn refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Clone for PrepareVerdict {
    fn clone(&self) -> Self {
        Self {
            verified: AtomicU64::new(self.verified.load(Ordering::Relaxed)),
            refused: AtomicBool::new(self.refused()),
        }
    }
}

impl PartialEq for PrepareVerdict {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for PrepareVerdict {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_trusted_once_verified() {
        let v = PrepareVerdict::default();
        assert!(v.trusted(false, 7));
        assert!(!v.trusted(true, 7));
        v.verify(false, 7);
        assert!(!v.trusted(true, 7));
        v.verify(true, 7);
        assert!(v.trusted(true, 7) && !v.trusted(true, 9));
        assert!(!v.refused());
        let c = v.clone();
        v.refuse();
        assert!(v.refused() && !c.refused() && c.trusted(true, 7));
    }
}
