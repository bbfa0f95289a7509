//! The source's decoded changes as the CDC apply sees them ([`WalEvent`]):
//! our own types, so that nothing but `wal.rs` names the replication
//! crate. Values are in PostgreSQL text format (pgoutput's default).

/// A position in the write-ahead log (`pg_lsn`, a byte offset).
pub type Lsn = u64;

/// `pg_lsn` text (`X/Y`, hexadecimal halves) of `lsn`.
pub fn lsn_text(lsn: Lsn) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Parses `pg_lsn` text (`X/Y`).
pub fn parse_lsn(s: &str) -> Option<Lsn> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some(((hi as u64) << 32) | lo as u64)
}

/// A row image: `(column, value)` in the table's column order, a value of
/// None being SQL NULL. A column missing from an UPDATE's new image is an
/// unchanged out-of-line (TOASTed) value: keep what the target has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowImage(pub Vec<(String, Option<String>)>);

impl RowImage {
    /// The value of `column`: None if the column is absent, Some(None) for
    /// NULL.
    pub fn get(&self, column: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|(c, _)| c == column)
            .map(|(_, v)| v.as_deref())
    }
}

/// One decoded event of the source's change stream, in commit order.
#[derive(Debug, Clone, PartialEq)]
pub enum WalEvent {
    /// A transaction starts; `final_lsn` is its commit record's position.
    Begin {
        /// Commit position.
        final_lsn: Lsn,
        /// Commit time, µs since the Unix epoch.
        commit_time_us: i64,
    },
    /// The transaction commits.
    Commit {
        /// Commit record position (the `Begin`'s `final_lsn`).
        commit_lsn: Lsn,
        /// Position just past the commit record: where a restart resumes.
        end_lsn: Lsn,
        /// Commit time, µs since the Unix epoch.
        commit_time_us: i64,
    },
    /// A row was inserted.
    Insert {
        /// Table (unqualified if in `public`, else `schema.table`).
        table: String,
        /// The new row.
        new: RowImage,
    },
    /// A row was updated.
    Update {
        /// Table.
        table: String,
        /// The old row's replica identity (or whole row with `REPLICA
        /// IDENTITY FULL`); None when the identity did not change.
        old: Option<RowImage>,
        /// The new row (unchanged TOASTed columns absent).
        new: RowImage,
    },
    /// A row was deleted.
    Delete {
        /// Table.
        table: String,
        /// The old row's replica identity (or whole row).
        old: RowImage,
    },
    /// Tables were truncated (CASCADE already expanded).
    Truncate {
        /// Tables.
        tables: Vec<String>,
    },
    /// A logical decoding message (`pg_logical_emit_message`), e.g. the
    /// job's fence.
    Message {
        /// Prefix.
        prefix: String,
        /// Content.
        content: Vec<u8>,
    },
}

/// The catalog's name of a table in schema `schema`: bare in `public`,
/// `schema.table` elsewhere.
pub fn table_name(schema: &str, table: &str) -> String {
    if schema == "public" {
        table.to_string()
    } else {
        format!("{schema}.{table}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_round_trips() {
        for l in [0u64, 0x16B3748, 0x1_0000_0000, u64::MAX] {
            assert_eq!(parse_lsn(&lsn_text(l)), Some(l));
        }
        assert_eq!(lsn_text(0x1_0000_00AB), "1/AB");
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("16B3748"), None);
        assert_eq!(parse_lsn("x/1"), None);
        let r = RowImage(vec![("a".into(), Some("1".into())), ("b".into(), None)]);
        assert_eq!(r.get("a"), Some(Some("1")));
        assert_eq!(r.get("b"), Some(None));
        assert_eq!(r.get("c"), None);
        assert_eq!(table_name("public", "t"), "t");
        assert_eq!(table_name("s", "t"), "s.t");
    }
}
