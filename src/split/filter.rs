//! [`RangeFilter`]: whether a row of a sharded table belongs to the moving
//! key range, decided the way the routers route it — the table's sharding
//! key parsed as its key type, mapped by the table's vindex to a keyspace
//! id, looked up in the range. The initial copy, the CDC apply and the
//! range purge all filter with it (a publication row filter cannot call our
//! hash functions).

use crate::catalog::ShardedTable;
use crate::topology::KeyRange;
use crate::vindex::{KeyType, VindexError, VindexKind};

/// The moving range as seen from one table.
#[derive(Debug, Clone)]
pub struct RangeFilter {
    /// Table name (for errors).
    pub table: String,
    /// The sharding key column.
    pub key_column: String,
    key_type: KeyType,
    vindex: VindexKind,
    range: KeyRange,
}

impl RangeFilter {
    /// The filter of `table` for `range`.
    pub fn new(table: &ShardedTable, range: KeyRange) -> RangeFilter {
        RangeFilter {
            table: table.name.clone(),
            key_column: table.key_column.clone(),
            key_type: table.key_type,
            vindex: table.vindex,
            range,
        }
    }

    /// Whether a key in PostgreSQL binary (send) format is in the range;
    /// a NULL key (None) never is (no shard owns it).
    ///
    /// Errors: [`VindexError`] when the bytes are not the key type's
    /// binary format (the column's type does not match the keyspace's key
    /// type).
    pub fn binary(&self, key: Option<&[u8]>) -> Result<bool, VindexError> {
        match key {
            None => Ok(false),
            Some(b) => {
                let k = self.key_type.parse_binary(b)?;
                Ok(self.range.contains(self.vindex.keyspace_id(&k)))
            }
        }
    }

    /// Whether a key in PostgreSQL text format is in the range; NULL never
    /// is.
    ///
    /// Errors: [`VindexError`] for text that is not a valid key.
    pub fn text(&self, key: Option<&str>) -> Result<bool, VindexError> {
        match key {
            None => Ok(false),
            Some(s) => {
                let k = self.key_type.parse_text(s)?;
                Ok(self.range.contains(self.vindex.keyspace_id(&k)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vindex::KeyValue;

    #[test]
    fn binary_and_text_agree_with_the_vindex() {
        let t = ShardedTable {
            name: "t".into(),
            keyspace: "main".into(),
            key_column: "id".into(),
            vindex: VindexKind::HashMurmur3,
            key_type: KeyType::Int,
        };
        let upper = KeyRange {
            start: 1 << 63,
            end: None,
        };
        let f = RangeFilter::new(&t, upper);
        let mut seen = [0; 2];
        for i in 0..200i64 {
            let id = VindexKind::HashMurmur3.keyspace_id(&KeyValue::Int(i));
            let want = id >= 1 << 63;
            assert_eq!(f.text(Some(&i.to_string())).unwrap(), want);
            assert_eq!(f.binary(Some(&i.to_be_bytes())).unwrap(), want);
            assert_eq!(f.binary(Some(&(i as i32).to_be_bytes())).unwrap(), want);
            seen[want as usize] += 1;
        }
        assert!(seen[0] > 50 && seen[1] > 50, "{seen:?}");
        assert!(!f.text(None).unwrap() && !f.binary(None).unwrap());
        assert!(f.text(Some("x")).is_err());
        assert!(f.binary(Some(&[1, 2, 3])).is_err());
    }
}
