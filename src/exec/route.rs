//! Resolving a plan's sharding keys to shards: key text or Bind parameter →
//! vindex → keyspace id → shard (the route of one execution).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::catalog::{Catalog, Keyspace, ShardedTable};
use crate::plan::{KeyExpr, Literals};
use crate::protocol::error::codes;
use crate::protocol::frontend::Bind;
use crate::protocol::PgError;
use crate::vindex::{KeyType, KeyValue};

/// The shards a route reaches, in keyspace order: shared, so cloning a
/// route (per portal, per Execute) copies no names.
pub type ShardList = Arc<[String]>;

/// Where the values referenced by [`KeyExpr::Param`] come from: `'a` is
/// the lifetime of the message or text the values are read from, `'b`
/// that of the decoded view of it.
pub enum Values<'a, 'b> {
    /// Literals of a simple-protocol statement.
    Simple {
        /// The statement text.
        sql: &'a str,
        /// Its literal spans.
        lits: &'b Literals,
    },
    /// Parameters of a Bind message.
    Bind(&'b Bind<'a>),
}

/// The shard that owns `key` of sharded table `table`, or `Ok(None)` when the
/// key value is NULL (a NULL key matches no row).
///
/// Errors: the vindex error's SQLSTATE for a key value that is not valid for
/// the key type (22P02 syntax, 22003 out of range, 22P03 bad binary, 22021
/// bad encoding), 22003 for an overflowing negation, 0A000 when the table or
/// its keyspace is no longer in the catalog.
pub fn key_shard<'c>(
    catalog: &'c Catalog,
    table: &str,
    key: &KeyExpr,
    values: &Values<'_, '_>,
) -> Result<Option<&'c str>, PgError> {
    let (t, ks) = table_keyspace(catalog, table)?;
    key_value_map(t.key_type, key, values, |kv| {
        ks.routing.shard_for(t.vindex.keyspace_id(kv))
    })
}

/// The shard that owns the binary-format key value `key` of sharded table
/// `table` (a binary COPY field); `Ok(None)` for NULL.
///
/// Errors: the key type's binary-format error (22P03); 0A000 as
/// [`key_shard`].
pub fn binary_key_shard<'c>(
    catalog: &'c Catalog,
    table: &str,
    key: Option<&[u8]>,
) -> Result<Option<&'c str>, PgError> {
    let (t, ks) = table_keyspace(catalog, table)?;
    let Some(key) = key else { return Ok(None) };
    let kv = t
        .key_type
        .parse_binary(key)
        .map_err(|e| PgError::new(e.sqlstate(), e.to_string()))?;
    Ok(Some(ks.routing.shard_for(t.vindex.keyspace_id(&kv))))
}

/// Sharded table `table` and its keyspace.
///
/// Errors: 0A000 when the table or its keyspace is not in the catalog.
fn table_keyspace<'c>(
    catalog: &'c Catalog,
    table: &str,
) -> Result<(&'c ShardedTable, &'c Keyspace), PgError> {
    let t = catalog.table(table).ok_or_else(|| {
        PgError::unsupported(format!(
            "table \"{table}\" is not declared in the pg-router catalog"
        ))
    })?;
    let ks = catalog.keyspace_of(t).ok_or_else(|| {
        PgError::unsupported(format!(
            "keyspace \"{}\" of table \"{table}\" has no routing",
            t.keyspace
        ))
    })?;
    Ok((t, ks))
}

/// 23502 for a NULL sharding key written into `table`, naming the key
/// column as PostgreSQL names a NOT NULL column.
pub fn null_key(catalog: &Catalog, table: &str) -> PgError {
    let col = catalog
        .table(table)
        .map(|t| t.key_column.as_str())
        .unwrap_or_default();
    PgError::new(
        "23502",
        format!("null value in sharding key column \"{col}\" of relation \"{table}\""),
    )
}

/// The indexes of the VALUES rows (keys `rows`) of an INSERT into `table`
/// owned by each shard, in shard name order.
///
/// Errors: [`null_key`] for a NULL key; those of [`key_shard`].
pub fn rows_by_shard<'c>(
    catalog: &'c Catalog,
    table: &str,
    rows: &[KeyExpr],
    values: &Values<'_, '_>,
) -> Result<BTreeMap<&'c str, Vec<usize>>, PgError> {
    let mut by_shard: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, k) in rows.iter().enumerate() {
        let s = key_shard(catalog, table, k, values)?.ok_or_else(|| null_key(catalog, table))?;
        by_shard.entry(s).or_default().push(i);
    }
    Ok(by_shard)
}

/// Index of `shard` in `shards` (e.g. the keyspace's shards a COPY
/// streams to).
///
/// Errors: XX000 when it is not there.
pub fn shard_index(shards: &[String], shard: &str) -> Result<usize, PgError> {
    shards.iter().position(|s| s == shard).ok_or_else(|| {
        PgError::new(
            codes::INTERNAL_ERROR,
            format!("shard \"{shard}\" is not in the keyspace"),
        )
    })
}

/// For each of `rows` VALUES rows, the index of its shard in `by_shard`
/// (see [`rows_by_shard`]; [`super::concat::MergeMode::Interleave`]).
pub fn part_order(by_shard: &BTreeMap<&str, Vec<usize>>, rows: usize) -> Arc<[u32]> {
    let mut order = vec![0u32; rows];
    for (n, idxs) in by_shard.values().enumerate() {
        for &i in idxs {
            if let Some(o) = order.get_mut(i) {
                *o = n as u32;
            }
        }
    }
    order.into()
}

/// Reads `key` (a literal or Bind parameter) as a value of `key_type` and
/// applies `f` to it; `Ok(None)` when the value is NULL.
///
/// Errors: the vindex error's SQLSTATE for a value that is not valid for
/// the type (22P02, 22003, 22P03, 22021); 22003 for an overflowing
/// negation; errors of [`Values::raw`].
pub fn key_value_map<R>(
    key_type: KeyType,
    key: &KeyExpr,
    values: &Values<'_, '_>,
    f: impl FnOnce(&KeyValue<'_>) -> R,
) -> Result<Option<R>, PgError> {
    let bad = |e: crate::vindex::VindexError| PgError::new(e.sqlstate(), e.to_string());
    let (index, negate) = match key {
        KeyExpr::Param { index, negate } => (*index, *negate),
        KeyExpr::Const(s) => {
            let v = key_type.parse_text(s).map_err(bad)?;
            return Ok(Some(f(&v)));
        }
    };
    let raw = values.raw(index)?;
    let kv = match &raw {
        None => return Ok(None),
        Some(Raw::Binary(bytes)) => key_type.parse_binary(bytes).map_err(bad)?,
        Some(Raw::Text(text)) => key_type.parse_text(text).map_err(bad)?,
    };
    let kv = if negate {
        match kv {
            KeyValue::Int(v) => KeyValue::Int(v.checked_neg().ok_or_else(|| {
                PgError::new(codes::NUMERIC_VALUE_OUT_OF_RANGE, "bigint out of range")
            })?),
            _ => {
                return Err(PgError::new(
                    codes::INVALID_TEXT_REPRESENTATION,
                    "unary minus on a non-integer sharding key",
                ))
            }
        }
    } else {
        kv
    };
    Ok(Some(f(&kv)))
}

/// A literal's or parameter's value before it is read as a type.
pub enum Raw<'a> {
    /// Text: an unquoted simple-protocol literal or a text-format parameter.
    Text(Cow<'a, str>),
    /// A binary-format Bind parameter.
    Binary(&'a [u8]),
}

impl<'a> Values<'a, '_> {
    /// Literal `index` (simple protocol; the `NULL` keyword reads as NULL)
    /// or Bind parameter `index`; None for NULL.
    ///
    /// Errors: XX000 when the literal is not in the text, 08P01 when the
    /// Bind has fewer parameters, 22021 for a text parameter that is not
    /// UTF-8.
    pub fn raw(&self, index: usize) -> Result<Option<Raw<'a>>, PgError> {
        match *self {
            Values::Simple { sql, lits } => {
                let v = lits.value(sql, index).ok_or_else(|| {
                    PgError::new(
                        codes::INTERNAL_ERROR,
                        format!("literal {index} not found in statement"),
                    )
                })?;
                Ok(if v.eq_ignore_ascii_case("null") {
                    None
                } else {
                    Some(Raw::Text(v))
                })
            }
            Values::Bind(b) => {
                let p = b.params.get(index).ok_or_else(|| {
                    PgError::new(
                        codes::PROTOCOL_VIOLATION,
                        format!(
                            "bind message supplies {} parameters, but the statement needs ${}",
                            b.params.len(),
                            index + 1
                        ),
                    )
                })?;
                let Some(bytes) = *p else { return Ok(None) };
                if b.param_format(index) == 1 {
                    return Ok(Some(Raw::Binary(bytes)));
                }
                let s = std::str::from_utf8(bytes).map_err(|_| {
                    PgError::new(
                        "22021",
                        "invalid byte sequence for encoding \"UTF8\" in a parameter",
                    )
                })?;
                Ok(Some(Raw::Text(Cow::Borrowed(s))))
            }
        }
    }
}

/// The shards a scattered statement on `table` must run on: every shard of
/// the table's keyspace, or with `prune` only those owning the listed key
/// values (in the keyspace's shard order; the first shard when every value
/// is NULL, so that the statement still produces its empty result).
///
/// Errors: as [`key_shard`]; 22P02 for a malformed array literal, 22P03
/// for a malformed binary array, 0A000 when the table has no routing.
pub fn scatter_shards(
    catalog: &Catalog,
    table: &str,
    prune: Option<&crate::plan::KeySet>,
    values: &Values<'_, '_>,
) -> Result<ShardList, PgError> {
    let t = catalog.table(table).ok_or_else(|| {
        PgError::unsupported(format!(
            "table \"{table}\" is not declared in the pg-router catalog"
        ))
    })?;
    let ks = catalog
        .keyspace_of(t)
        .ok_or_else(|| PgError::unsupported(format!("table \"{table}\" has no routing")))?;
    let all = ks.routing.shards();
    let Some(prune) = prune else {
        return Ok(ks.routing.shard_list());
    };
    let mut owned: Vec<&str> = Vec::new();
    match prune {
        crate::plan::KeySet::List(keys) => {
            for k in keys {
                if let Some(s) = key_shard(catalog, table, k, values)? {
                    if !owned.contains(&s) {
                        owned.push(s);
                    }
                }
            }
        }
        crate::plan::KeySet::Array(k) => {
            let bad = |e: crate::vindex::VindexError| PgError::new(e.sqlstate(), e.to_string());
            let mut add = |kv: KeyValue| {
                let s = ks.routing.shard_for(t.vindex.keyspace_id(&kv));
                if !owned.contains(&s) {
                    owned.push(s);
                }
            };
            let raw = match k {
                KeyExpr::Const(s) => Some(Raw::Text(Cow::Borrowed(s.as_str()))),
                KeyExpr::Param { index, .. } => values.raw(*index)?,
            };
            match raw {
                None => {}
                Some(Raw::Text(text)) => {
                    for e in text_array_elements(&text)?.into_iter().flatten() {
                        add(t.key_type.parse_text(&e).map_err(bad)?);
                    }
                }
                Some(Raw::Binary(b)) => {
                    for e in binary_array_elements(b)?.into_iter().flatten() {
                        add(t.key_type.parse_binary(e).map_err(bad)?);
                    }
                }
            }
        }
        crate::plan::KeySet::Range { .. } => {}
    }
    if let crate::plan::KeySet::Range { lo, hi } = prune {
        if !t.vindex.is_order_preserving() {
            return Ok(ks.routing.shard_list());
        }
        let bound = |k: &Option<KeyExpr>, open: u64| -> Result<Option<u64>, PgError> {
            let Some(k) = k else { return Ok(Some(open)) };
            let raw = match k {
                KeyExpr::Const(s) => Some(Raw::Text(Cow::Borrowed(s.as_str()))),
                KeyExpr::Param { index, .. } => values.raw(*index)?,
            };
            let bad = |e: crate::vindex::VindexError| PgError::new(e.sqlstate(), e.to_string());
            let kv = match &raw {
                None => return Ok(None),
                Some(Raw::Text(s)) => t.key_type.parse_text(s).map_err(bad)?,
                Some(Raw::Binary(b)) => t.key_type.parse_binary(b).map_err(bad)?,
            };
            let kv = match (k, kv) {
                (KeyExpr::Param { negate: true, .. }, KeyValue::Int(v)) => {
                    KeyValue::Int(v.checked_neg().ok_or_else(|| {
                        PgError::new(codes::NUMERIC_VALUE_OUT_OF_RANGE, "bigint out of range")
                    })?)
                }
                (_, kv) => kv,
            };
            Ok(Some(t.vindex.keyspace_id(&kv)))
        };
        // A NULL bound matches no row.
        if let (Some(l), Some(h)) = (bound(lo, 0)?, bound(hi, u64::MAX)?) {
            owned = ks.routing.shards_overlapping(l, h);
        }
    }
    if owned.is_empty() {
        return Ok(all.first().cloned().into_iter().collect());
    }
    // Keep the keyspace's shard order.
    Ok(all
        .iter()
        .filter(|s| owned.contains(&s.as_str()))
        .cloned()
        .collect())
}

/// Elements of an array in PostgreSQL's text form (`{1,2,"a b",NULL}`,
/// nested braces flattened); None for NULL elements (PostgreSQL docs §8.15.6).
pub fn text_array_elements(s: &str) -> Result<Vec<Option<String>>, PgError> {
    let bad = || {
        PgError::new(
            codes::INVALID_TEXT_REPRESENTATION,
            format!("malformed array literal: \"{s}\""),
        )
    };
    let t = s.trim();
    // An optional dimension decoration `[1:3]=` precedes the braces.
    let t = match t.find('=') {
        Some(i) if t.starts_with('[') => &t[i + 1..],
        _ => t,
    };
    if !t.starts_with('{') || !t.ends_with('}') {
        return Err(bad());
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut in_quotes, mut has) = (false, false, false);
    let mut chars = t.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(chars.next().ok_or_else(bad)?);
                has = true;
            }
            '"' => {
                in_quotes = !in_quotes;
                quoted = true;
                has = true;
            }
            '{' | '}' | ',' if !in_quotes => {
                if has {
                    let v = if quoted {
                        cur.clone()
                    } else {
                        cur.trim().to_string()
                    };
                    out.push(if !quoted && v.eq_ignore_ascii_case("null") {
                        None
                    } else {
                        Some(v)
                    });
                }
                cur.clear();
                quoted = false;
                has = false;
            }
            c if !in_quotes && c.is_whitespace() && !has => {}
            c => {
                cur.push(c);
                has = true;
            }
        }
    }
    if in_quotes {
        return Err(bad());
    }
    Ok(out)
}

/// Elements of an array in PostgreSQL's binary form (array_send: ndim,
/// has-nulls flag, element type, per dimension length and lower bound, then
/// each element as length + bytes, -1 for NULL).
pub fn binary_array_elements(b: &[u8]) -> Result<Vec<Option<&[u8]>>, PgError> {
    let bad = || PgError::new("22P03", "malformed binary array");
    let i32_at = |pos: usize| -> Result<i32, PgError> {
        let x = b.get(pos..pos + 4).ok_or_else(bad)?;
        Ok(i32::from_be_bytes([x[0], x[1], x[2], x[3]]))
    };
    let ndim = i32_at(0)?;
    if !(0..=6).contains(&ndim) {
        return Err(bad());
    }
    let mut pos = 12;
    let mut count: usize = if ndim == 0 { 0 } else { 1 };
    for _ in 0..ndim {
        let len = i32_at(pos)?;
        count = count
            .checked_mul(usize::try_from(len).map_err(|_| bad())?)
            .ok_or_else(bad)?;
        pos += 8;
    }
    let mut out = Vec::with_capacity(count.min(b.len() / 4));
    for _ in 0..count {
        let len = i32_at(pos)?;
        pos += 4;
        if len < 0 {
            out.push(None);
        } else {
            let end = pos.checked_add(len as usize).ok_or_else(bad)?;
            out.push(Some(b.get(pos..end).ok_or_else(bad)?));
            pos = end;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_arrays() {
        assert_eq!(
            text_array_elements("{1, 2,3}").expect("ok"),
            vec![Some("1".into()), Some("2".into()), Some("3".into())]
        );
        assert_eq!(
            text_array_elements(r#"{"a,b",NULL,"NULL",c\"d}"#).expect("ok"),
            vec![
                Some("a,b".into()),
                None,
                Some("NULL".into()),
                Some("c\"d".into())
            ]
        );
        assert_eq!(text_array_elements("{{1,2},{3,4}}").expect("ok").len(), 4);
        assert_eq!(
            text_array_elements("{}").expect("ok"),
            Vec::<Option<String>>::new()
        );
        assert!(text_array_elements("1,2").is_err());
        assert!(text_array_elements("{\"1}").is_err());
    }

    #[test]
    fn binary_arrays() {
        // int8[] {7, NULL}
        let mut b = Vec::new();
        for x in [1i32, 1, 20, 2, 1] {
            b.extend_from_slice(&x.to_be_bytes());
        }
        b.extend_from_slice(&8i32.to_be_bytes());
        b.extend_from_slice(&7i64.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            binary_array_elements(&b).expect("ok"),
            vec![Some(&7i64.to_be_bytes()[..]), None]
        );
        assert!(binary_array_elements(&b[..b.len() - 6]).is_err());
        assert!(binary_array_elements(&[0, 0]).is_err());
    }
}
