//! Lookup vindexes at execution (simple query protocol): routing a
//! statement by `column = value` through the lookup table, and keeping an
//! owned lookup table in step with INSERT / UPDATE / DELETE of its owner
//! table, inside the statement's transaction (an implicit block when the
//! client has none; see `docs/lookup-vindexes.md`).
//!
//! Lookup table rows are `(<column>, keyspace_id)`, `keyspace_id` holding
//! the owner row's u64 keyspace id as the bigint with the same 64 bits.

use std::collections::BTreeMap;

use bytes::BytesMut;

use crate::catalog::{Catalog, ShardedTable};
use crate::plan::quote_ident;
use crate::plan::{KeyExpr, Literals, LookupKey, OwnedKind, OwnedWrite, SqlPiece};
use crate::protocol::error::codes;
use crate::protocol::PgError;
use crate::topology::KeyspaceId;
use crate::vindex::KeyValue;

use super::block::Block;
use super::context::{End, ExecCtx};
use super::gather::render_pieces;
use super::inject::Rows;
use super::route::{key_value_map, Values};

/// One owner row found by an UPDATE/DELETE pre-select: its keyspace id and
/// the old value of each maintained lookup column (text, None = NULL).
pub struct OwnerRow {
    ksid: KeyspaceId,
    old: Vec<Option<String>>,
}

impl ExecCtx {
    /// The shards owning the rows of owner table `table` whose lookup
    /// column equals the lookup key's value, in the keyspace's shard order:
    /// read from the lookup table on the shard owning the value. When no
    /// row matches (or the value is NULL) the first shard of the keyspace,
    /// so the statement still returns its (empty) result. None if the
    /// lookup failed (error sent).
    pub async fn lookup_shards(
        &mut self,
        cat: &Catalog,
        table: &str,
        l: &LookupKey,
        values: &Values<'_, '_>,
    ) -> Result<Option<Vec<String>>, End> {
        let (owner, lookup) = match (tables(cat, table), tables(cat, &l.lookup_table)) {
            (Ok(o), Ok(lt)) => (o, lt),
            (Err(e), _) | (_, Err(e)) => {
                self.send_error(&e);
                return Ok(None);
            }
        };
        let Some(oks) = cat.keyspace_of(owner) else {
            self.send_error(&no_routing(table));
            return Ok(None);
        };
        let first = || oks.routing.shards().first().cloned().into_iter().collect();
        let (shard, lit) = match value_literal(cat, lookup, &l.value, values) {
            Ok(Some(v)) => v,
            Ok(None) => return Ok(Some(first())),
            Err(e) => {
                self.send_error(&e);
                return Ok(None);
            }
        };
        let sql = format!(
            "SELECT keyspace_id FROM {} WHERE {} = {lit}",
            quote_ident(&lookup.name),
            quote_ident(&l.column)
        );
        let Some(rows) = self.injected(&shard, &sql).await? else {
            return Ok(None);
        };
        let mut owners: Vec<&str> = Vec::new();
        for r in &rows {
            let Some(id) = r
                .first()
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse::<i64>().ok())
            else {
                self.send_error(&PgError::new(
                    codes::DATA_CORRUPTED,
                    format!(
                        "lookup table \"{}\" has a row without a valid keyspace_id",
                        lookup.name
                    ),
                ));
                return Ok(None);
            };
            let s = oks.routing.shard_for(id as KeyspaceId);
            if !owners.contains(&s) {
                owners.push(s);
            }
        }
        if owners.is_empty() {
            return Ok(Some(first()));
        }
        Ok(Some(
            oks.routing
                .shards()
                .iter()
                .filter(|s| owners.contains(&s.as_str()))
                .cloned()
                .collect(),
        ))
    }

    /// Opens an implicit block for a write to an owner table outside a
    /// transaction block (its lookup rows and its rows commit together):
    /// `begin_sql` is READ COMMITTED for INSERT, REPEATABLE READ for
    /// UPDATE/DELETE, whose pre-select and write must see the same rows.
    /// Returns whether a block was opened.
    pub fn open_owned_block(&mut self, repeatable: bool) -> bool {
        if self.block.is_some() {
            return false;
        }
        self.block = Some(Block::new(owned_begin(repeatable), true));
        self.deferred = Some(BytesMut::new());
        true
    }

    /// Inserts the lookup rows of an INSERT into an owner table: for lookup
    /// `l` and VALUES row `r`, `(values[l][r], keyspace id of keys[r])`
    /// into the lookup table, one INSERT per lookup shard. False if one
    /// failed (error sent; a unique lookup's duplicate is 23505).
    pub async fn lookup_insert(
        &mut self,
        cat: &Catalog,
        write: &OwnedWrite,
        keys: &[KeyExpr],
        vals: &[Vec<Option<KeyExpr>>],
        values: &Values<'_, '_>,
    ) -> Result<bool, End> {
        let ksids = match owner_ksids(cat, &write.table, keys, values) {
            Ok(k) => k,
            Err(e) => {
                self.send_error(&e);
                return Ok(false);
            }
        };
        for (l, per_row) in write.lookups.iter().zip(vals) {
            let mut by_shard: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let lookup = match tables(cat, &l.lookup_table) {
                Ok(t) => t,
                Err(e) => {
                    self.send_error(&e);
                    return Ok(false);
                }
            };
            for (v, ksid) in per_row.iter().zip(&ksids) {
                let (Some(v), Some(ksid)) = (v, ksid) else {
                    continue;
                };
                match value_literal(cat, lookup, v, values) {
                    Ok(Some((shard, lit))) => by_shard
                        .entry(shard)
                        .or_default()
                        .push(format!("({lit}, {})", *ksid as i64)),
                    Ok(None) => {}
                    Err(e) => {
                        self.send_error(&e);
                        return Ok(false);
                    }
                }
            }
            if !self.lookup_rows(lookup, &l.column, by_shard, true).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The pre-select of an UPDATE/DELETE of an owner table (simple
    /// protocol): `select` rendered with the client's literals, run on
    /// each of `shards`, locking the rows the statement will change.
    /// Returns the rows found, None on failure (error sent).
    pub async fn pre_select_simple(
        &mut self,
        cat: &Catalog,
        write: &OwnedWrite,
        select: &[SqlPiece],
        shards: &[String],
        sql: &str,
        lits: &Literals,
    ) -> Result<Option<Vec<OwnerRow>>, End> {
        let text = match render_pieces(select, sql, lits, "ALL") {
            Ok(t) => t,
            Err(e) => {
                self.send_error(&e);
                return Ok(None);
            }
        };
        let mut found = Vec::new();
        for shard in shards {
            let Some(rows) = self.injected(shard, &text).await? else {
                return Ok(None);
            };
            if !self.owner_rows(cat, write, rows, &mut found) {
                return Ok(None);
            }
        }
        Ok(Some(found))
    }

    /// Appends the owner rows of pre-select result `rows` to `found`; false
    /// on failure (error sent).
    pub fn owner_rows(
        &mut self,
        cat: &Catalog,
        write: &OwnedWrite,
        rows: Rows,
        found: &mut Vec<OwnerRow>,
    ) -> bool {
        let owner = match tables(cat, &write.table) {
            Ok(t) => t,
            Err(e) => {
                self.send_error(&e);
                return false;
            }
        };
        for r in rows {
            match owner_row(owner, r) {
                Ok(Some(row)) => found.push(row),
                Ok(None) => {}
                Err(e) => {
                    self.send_error(&e);
                    return false;
                }
            }
        }
        true
    }

    /// Deletes the lookup rows of the owner rows a pre-select `found` (the
    /// first half of an UPDATE/DELETE's lookup maintenance). Returns their
    /// keyspace ids (for [`ExecCtx::lookup_update_insert`]), None on
    /// failure (error sent).
    pub async fn lookup_delete(
        &mut self,
        cat: &Catalog,
        write: &OwnedWrite,
        found: Vec<OwnerRow>,
    ) -> Result<Option<Vec<KeyspaceId>>, End> {
        for (i, l) in write.lookups.iter().enumerate() {
            let lookup = match tables(cat, &l.lookup_table) {
                Ok(t) => t,
                Err(e) => {
                    self.send_error(&e);
                    return Ok(None);
                }
            };
            let mut by_shard: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for row in &found {
                let Some(Some(old)) = row.old.get(i) else {
                    continue;
                };
                match const_literal(cat, lookup, old) {
                    Ok((shard, lit)) => by_shard
                        .entry(shard)
                        .or_default()
                        .push(format!("({lit}, {})", row.ksid as i64)),
                    Err(e) => {
                        self.send_error(&e);
                        return Ok(None);
                    }
                }
            }
            if !self.lookup_rows(lookup, &l.column, by_shard, false).await? {
                return Ok(None);
            }
        }
        Ok(Some(found.into_iter().map(|r| r.ksid).collect()))
    }

    /// Second half of an UPDATE's lookup maintenance: inserts `(new value,
    /// keyspace id)` for every row the pre-select found, for each lookup
    /// column the UPDATE assigns a non-NULL value. False on failure.
    pub async fn lookup_update_insert(
        &mut self,
        cat: &Catalog,
        write: &OwnedWrite,
        ksids: &[KeyspaceId],
        values: &Values<'_, '_>,
    ) -> Result<bool, End> {
        let OwnedKind::Rows { new: Some(new), .. } = &write.kind else {
            return Ok(true);
        };
        for (l, v) in write.lookups.iter().zip(new) {
            let Some(v) = v else { continue };
            let lookup = match tables(cat, &l.lookup_table) {
                Ok(t) => t,
                Err(e) => {
                    self.send_error(&e);
                    return Ok(false);
                }
            };
            let (shard, lit) = match value_literal(cat, lookup, v, values) {
                Ok(Some(x)) => x,
                Ok(None) => continue,
                Err(e) => {
                    self.send_error(&e);
                    return Ok(false);
                }
            };
            let tuples: Vec<String> = ksids
                .iter()
                .map(|k| format!("({lit}, {})", *k as i64))
                .collect();
            let by_shard = BTreeMap::from([(shard, tuples)]);
            if !self.lookup_rows(lookup, &l.column, by_shard, true).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Inserts (`insert`) or deletes the `(value, keyspace_id)` tuples of
    /// each shard in lookup table `lookup`, one statement per shard.
    async fn lookup_rows(
        &mut self,
        lookup: &ShardedTable,
        column: &str,
        by_shard: BTreeMap<String, Vec<String>>,
        insert: bool,
    ) -> Result<bool, End> {
        let (t, c) = (quote_ident(&lookup.name), quote_ident(column));
        for (shard, tuples) in by_shard {
            if tuples.is_empty() {
                continue;
            }
            let list = tuples.join(", ");
            let sql = if insert {
                format!("INSERT INTO {t} ({c}, keyspace_id) VALUES {list}")
            } else {
                format!("DELETE FROM {t} WHERE ({c}, keyspace_id) IN ({list})")
            };
            if self.injected(&shard, &sql).await?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The BEGIN of an implicit block around a write to an owner table:
/// REPEATABLE READ for UPDATE/DELETE (`repeatable`), whose pre-select and
/// write must see the same rows; READ COMMITTED for INSERT.
pub(crate) fn owned_begin(repeatable: bool) -> &'static str {
    if repeatable {
        "BEGIN ISOLATION LEVEL REPEATABLE READ"
    } else {
        "BEGIN"
    }
}

/// The sharded table `name` of the catalog.
fn tables<'c>(cat: &'c Catalog, name: &str) -> Result<&'c ShardedTable, PgError> {
    cat.table(name).ok_or_else(|| {
        PgError::unsupported(format!(
            "table \"{name}\" is not declared in the pg-router catalog"
        ))
    })
}

fn no_routing(table: &str) -> PgError {
    PgError::unsupported(format!("the keyspace of table \"{table}\" has no routing"))
}

/// The keyspace id of each owner row key (None for a NULL key: the
/// INSERT itself fails with 23502).
fn owner_ksids(
    cat: &Catalog,
    table: &str,
    keys: &[KeyExpr],
    values: &Values<'_, '_>,
) -> Result<Vec<Option<KeyspaceId>>, PgError> {
    let t = tables(cat, table)?;
    keys.iter()
        .map(|k| key_value_map(t.key_type, k, values, |kv| t.vindex.keyspace_id(kv)))
        .collect()
}

/// An owner row of a pre-select (`key, col1, col2, ...`, text).
fn owner_row(
    owner: &ShardedTable,
    mut r: Vec<Option<String>>,
) -> Result<Option<OwnerRow>, PgError> {
    if r.is_empty() {
        return Ok(None);
    }
    let old = r.split_off(1);
    let Some(Some(key)) = r.pop() else {
        return Ok(None);
    };
    let kv = owner
        .key_type
        .parse_text(&key)
        .map_err(|e| PgError::new(e.sqlstate(), e.to_string()))?;
    Ok(Some(OwnerRow {
        ksid: owner.vindex.keyspace_id(&kv),
        old,
    }))
}

/// The shard of lookup table `lookup` owning `value` and the value as an
/// SQL literal; None for NULL.
fn value_literal(
    cat: &Catalog,
    lookup: &ShardedTable,
    value: &KeyExpr,
    values: &Values<'_, '_>,
) -> Result<Option<(String, String)>, PgError> {
    let ks = cat
        .keyspace_of(lookup)
        .ok_or_else(|| no_routing(&lookup.name))?;
    key_value_map(lookup.key_type, value, values, |kv| {
        (
            ks.routing
                .shard_for(lookup.vindex.keyspace_id(kv))
                .to_string(),
            sql_literal(kv),
        )
    })
}

/// [`value_literal`] of a value read back from a shard as text (never
/// NULL).
fn const_literal(
    cat: &Catalog,
    lookup: &ShardedTable,
    text: &str,
) -> Result<(String, String), PgError> {
    let value = KeyExpr::Const(text.to_string());
    let none = Literals::default();
    value_literal(
        cat,
        lookup,
        &value,
        &Values::Simple {
            sql: "",
            lits: &none,
        },
    )?
    .ok_or_else(|| PgError::new(codes::INTERNAL_ERROR, "lookup value read back as NULL"))
}

/// `kv` as an SQL literal: an integer, or a quoted string (`E'...'` when
/// it holds a backslash, so `standard_conforming_strings` does not matter).
pub(crate) fn sql_literal(kv: &KeyValue<'_>) -> String {
    match kv {
        KeyValue::Int(i) => i.to_string(),
        KeyValue::Text(s) => quote_literal(s),
        KeyValue::Uuid(b) => {
            let mut s = String::with_capacity(38);
            s.push('\'');
            for (i, x) in b.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    s.push('-');
                }
                s.push_str(&format!("{x:02x}"));
            }
            s.push('\'');
            s
        }
    }
}

fn quote_literal(s: &str) -> String {
    let body = s.replace('\'', "''");
    if body.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals() {
        assert_eq!(sql_literal(&KeyValue::Int(-5)), "-5");
        assert_eq!(sql_literal(&KeyValue::Text("it's")), "'it''s'");
        assert_eq!(sql_literal(&KeyValue::Text("a\\b'")), "E'a\\\\b'''");
        let mut u = [0u8; 16];
        u[0] = 0xab;
        u[15] = 1;
        assert_eq!(
            sql_literal(&KeyValue::Uuid(u)),
            "'ab000000-0000-0000-0000-000000000001'"
        );
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
