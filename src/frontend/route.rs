//! Resolving a plan's sharding keys to shards: key text or Bind parameter →
//! vindex → keyspace id → shard (the route of one execution).

use std::borrow::Cow;

use crate::catalog::Catalog;
use crate::plan::{KeyExpr, Literals};
use crate::protocol::error::codes;
use crate::protocol::frontend::Bind;
use crate::protocol::PgError;
use crate::vindex::KeyValue;

/// Where the values referenced by [`KeyExpr::Param`] come from.
pub enum Values<'a> {
    /// Literals of a simple-protocol statement.
    Simple {
        /// The statement text.
        sql: &'a str,
        /// Its literal spans.
        lits: &'a Literals,
    },
    /// Parameters of a Bind message.
    Bind(&'a Bind<'a>),
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
    values: &Values<'_>,
) -> Result<Option<&'c str>, PgError> {
    let t = catalog
        .table(table)
        .ok_or_else(|| PgError::unsupported(format!("table \"{table}\" is not declared in the pg-router catalog")))?;
    let ks = catalog
        .keyspace_of(t)
        .ok_or_else(|| PgError::unsupported(format!("keyspace \"{}\" of table \"{table}\" has no routing", t.keyspace)))?;
    let bad = |e: crate::vindex::VindexError| PgError::new(e.sqlstate(), e.to_string());
    let (index, negate) = match key {
        KeyExpr::Param { index, negate } => (*index, *negate),
        KeyExpr::Const(s) => {
            let v = t.key_type.parse_text(s).map_err(bad)?;
            return Ok(Some(ks.routing.shard_for(t.vindex.keyspace_id(&v))));
        }
    };
    let text: Cow<'_, str>;
    let kv = match values {
        Values::Simple { sql, lits } => {
            text = lits.value(sql, index).ok_or_else(|| {
                PgError::new(codes::INTERNAL_ERROR, format!("literal {index} not found in statement"))
            })?;
            if text.eq_ignore_ascii_case("null") {
                return Ok(None);
            }
            t.key_type.parse_text(&text).map_err(bad)?
        }
        Values::Bind(b) => {
            let Some(p) = b.params.get(index) else {
                return Err(PgError::new(
                    codes::PROTOCOL_VIOLATION,
                    format!("bind message supplies {} parameters, but the statement needs ${}", b.params.len(), index + 1),
                ));
            };
            let Some(bytes) = p else { return Ok(None) };
            if b.param_format(index) == 1 {
                t.key_type.parse_binary(bytes).map_err(bad)?
            } else {
                let s = std::str::from_utf8(bytes)
                    .map_err(|_| PgError::new("22021", "invalid byte sequence for encoding \"UTF8\" in sharding key parameter"))?;
                t.key_type.parse_text(s).map_err(bad)?
            }
        }
    };
    let kv = if negate {
        match kv {
            KeyValue::Int(v) => KeyValue::Int(v.checked_neg().ok_or_else(|| {
                PgError::new(codes::NUMERIC_VALUE_OUT_OF_RANGE, "bigint out of range")
            })?),
            _ => return Err(PgError::new(codes::INVALID_TEXT_REPRESENTATION, "unary minus on a non-integer sharding key")),
        }
    } else {
        kv
    };
    Ok(Some(ks.routing.shard_for(t.vindex.keyspace_id(&kv))))
}
