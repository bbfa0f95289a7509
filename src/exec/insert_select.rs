//! `INSERT INTO sharded_table ... SELECT ...` routed by the router
//! ([`InsertSelect`], `plan/insert_select.rs`): in one transaction block
//! (two-phase commit across shards), the SELECT runs like any SELECT with
//! its rows in binary format kept by the router (at most
//! `limits.intermediate_result_bytes`), each row goes to the shard its key
//! (or a key the router generates) names, and every such shard inserts its
//! rows from one binary array per column
//! (`INSERT ... SELECT * FROM unnest($1, ...)`, PostgreSQL's assignment
//! casts to the target columns). Simple protocol (the extended protocol
//! comes here through `session/insert_select_ext.rs`).

use std::collections::{BTreeMap, VecDeque};

use bytes::BytesMut;
use postgres_protocol::message::frontend as fe;

use crate::plan::{InsertSelect, Literals, Plan};
use crate::protocol::backend::captured_rows;
use crate::protocol::error::codes;
use crate::protocol::{synth, PgError};
use crate::state::Routing;
use crate::value::array::{array_type, ArrayBuilder};
use crate::value::oid;
use crate::vindex::KeyType;

use super::concat::MergeMode;
use super::context::{End, ExecCtx};
use super::exchange::{Expect, Slot};
use super::gather::render_pieces;
use super::owned::keyed_shard;
use super::route::{binary_key_shard, scatter_shards, ShardList, Values};

/// `$__pgr_rows` in the shards' INSERT.
const ROWS_MARKER: &str = "$__pgr_rows";

/// The SELECT's rows: column types and binary rows.
struct Rows {
    types: Vec<u32>,
    rows: Vec<Vec<Option<Vec<u8>>>>,
}

impl ExecCtx {
    /// Runs `sql` planned as `p`. Returns false if it failed (the error was
    /// sent: the SELECT's, a shard's, 54000 past the intermediate bound,
    /// 0A000 for a key column whose type is not the sharding key's, 23502
    /// for a NULL key, or those of generated keys).
    pub async fn insert_select(
        &mut self,
        routing: &Routing,
        sql: &str,
        lits: &Literals,
        p: &InsertSelect,
    ) -> Result<bool, End> {
        let cat = &routing.catalog;
        let keyspace_shards = cat
            .table(&p.table)
            .and_then(|t| cat.keyspace_of(t))
            .map(|k| k.routing.shards().to_vec())
            .unwrap_or_default();
        // One block for the SELECT and every shard's INSERT.
        let Some(implicit) = self.open_write_block(keyspace_shards.len().max(2)) else {
            return Ok(false);
        };
        let ok = match self.select_rows(routing, sql, lits, p).await? {
            Some(rows) => {
                self.insert_rows(routing, sql, lits, p, rows, &keyspace_shards)
                    .await?
            }
            None => false,
        };
        self.close_write_block(implicit, ok).await
    }

    /// Runs the SELECT and keeps its rows; None after sending its error.
    async fn select_rows(
        &mut self,
        routing: &Routing,
        sql: &str,
        lits: &Literals,
        p: &InsertSelect,
    ) -> Result<Option<Rows>, End> {
        let values = Values::Simple { sql, lits };
        let shards = match &*p.source {
            Plan::Keyed { keys, .. } => match keyed_shard(&routing.catalog, keys, &values) {
                Ok(Some(s)) => Ok(ShardList::from([s.to_string()])),
                Ok(None) => self.any_shard().map(|s| ShardList::from([s])),
                Err(e) => Err(e),
            },
            Plan::Scatter { table, prune, .. } => {
                scatter_shards(&routing.catalog, table, prune.as_ref(), &values)
            }
            _ => self.any_shard().map(|s| ShardList::from([s])),
        };
        let shards = match shards {
            Ok(s) => s,
            Err(e) => {
                self.send_error(&e);
                return Ok(None);
            }
        };
        let limit = self.state.limits().intermediate_result_bytes;
        self.out
            .begin_capture(usize::try_from(limit).unwrap_or(usize::MAX));
        let ran = self
            .gather_simple_as(&shards, &p.gather, sql, lits, true)
            .await;
        let captured = self.out.end_capture();
        let ok = ran?;
        let frames = match captured {
            Ok(f) => f,
            Err(n) => {
                self.send_error(
                    &PgError::new(
                        codes::PROGRAM_LIMIT_EXCEEDED,
                        format!("the rows of INSERT ... SELECT ({n} bytes) exceed limits.intermediate_result_bytes ({limit} bytes)"),
                    )
                    .with_hint("insert fewer rows at a time, or make the SELECT read the target's keyspace by its key (each shard then inserts its own rows)"),
                );
                return Ok(None);
            }
        };
        let got = captured_rows(&frames);
        // The SELECT's errors and notices, as they are.
        for m in &got.messages {
            self.out.buf.extend_from_slice(m);
        }
        let rows = Rows {
            types: got.columns.iter().map(|c| c.type_oid).collect(),
            rows: got.rows,
        };
        Ok(ok.then_some(rows))
    }

    /// Sends each shard its rows; false after sending an error.
    async fn insert_rows(
        &mut self,
        routing: &Routing,
        sql: &str,
        lits: &Literals,
        p: &InsertSelect,
        mut rows: Rows,
        keyspace_shards: &[String],
    ) -> Result<bool, End> {
        let cat = &routing.catalog;
        // A generated key: one drawn value per row, as a last column.
        if let Some(g) = &p.generator {
            let n = rows.rows.len();
            let Some(values) = self.draw_keys(&p.table, g, n).await else {
                return Ok(false);
            };
            rows.types.push(oid::INT8);
            for (r, v) in rows.rows.iter_mut().zip(values) {
                r.push(Some(v.to_be_bytes().to_vec()));
            }
        }
        let key_col = p.key_index.unwrap_or(rows.types.len().saturating_sub(1));
        let key_type = cat.table(&p.table).map(|t| t.key_type);
        let key_oid = rows.types.get(key_col).copied().unwrap_or(0);
        let fits = match key_type {
            Some(KeyType::Int) => matches!(key_oid, oid::INT2 | oid::INT4 | oid::INT8),
            Some(KeyType::Text) => matches!(key_oid, oid::TEXT | oid::VARCHAR),
            Some(KeyType::Uuid) => key_oid == oid::UUID,
            None => false,
        };
        if !fits {
            self.send_error(&PgError::unsupported(format!(
                "the sharding key of \"{}\" is selected with type oid {key_oid}, not the key's type ({})",
                p.table,
                key_type.map(|k| k.as_str()).unwrap_or("?")
            )).with_hint("cast the selected key to the key column's type"));
            return Ok(false);
        }
        let mut arrays_types = Vec::with_capacity(rows.types.len());
        for &t in &rows.types {
            match array_type(t) {
                Some(a) => arrays_types.push(a),
                None => {
                    self.send_error(&PgError::unsupported(format!(
                        "INSERT ... SELECT of values of type oid {t} into a sharded table is not supported"
                    )));
                    return Ok(false);
                }
            }
        }
        // Rows by shard (every shard of the keyspace gets nothing when no
        // row came: one shard answers with PostgreSQL's own empty result).
        let mut by_shard: BTreeMap<String, Vec<ArrayBuilder>> = BTreeMap::new();
        for r in &rows.rows {
            let key = r.get(key_col).and_then(|k| k.as_deref());
            let shard = match binary_key_shard(cat, &p.table, key) {
                Ok(Some(s)) => s.to_string(),
                Ok(None) => {
                    self.send_error(&super::route::null_key(cat, &p.table));
                    return Ok(false);
                }
                Err(e) => {
                    self.send_error(&e);
                    return Ok(false);
                }
            };
            let arrays = by_shard
                .entry(shard)
                .or_insert_with(|| rows.types.iter().map(|&t| ArrayBuilder::new(t)).collect());
            for (a, v) in arrays.iter_mut().zip(r) {
                a.push(v.as_deref());
            }
        }
        if by_shard.is_empty() {
            if let Some(s) = keyspace_shards.first() {
                by_shard.insert(
                    s.clone(),
                    rows.types.iter().map(|&t| ArrayBuilder::new(t)).collect(),
                );
            }
        }
        let text = match render_pieces(&p.insert_sql, sql, lits, "ALL") {
            Ok(t) => {
                let params: Vec<String> = (1..=rows.types.len()).map(|i| format!("${i}")).collect();
                t.replacen(ROWS_MARKER, &params.join(", "), 1)
            }
            Err(e) => {
                self.send_error(&e);
                return Ok(false);
            }
        };
        let formats = vec![1i16; arrays_types.len()];
        let mut parts = Vec::with_capacity(by_shard.len());
        for (shard, arrays) in by_shard {
            let values: Vec<Vec<u8>> = arrays.iter().map(ArrayBuilder::finish).collect();
            let params: Vec<Option<&[u8]>> = values.iter().map(|v| Some(v.as_slice())).collect();
            let mut m = BytesMut::new();
            if fe::parse("", &text, arrays_types.iter().copied(), &mut m).is_err() {
                self.send_error(&PgError::new(
                    codes::PROGRAM_LIMIT_EXCEEDED,
                    "INSERT ... SELECT statement too large",
                ));
                return Ok(false);
            }
            synth::bind(&mut m, "", "", &formats, &params, &self.returning_formats);
            let mut slots = VecDeque::from([
                Slot::Swallow(Expect::Parse(None)),
                Slot::Swallow(Expect::Bind),
            ]);
            if p.returning {
                let _ = fe::describe(b'P', "", &mut m);
                slots.push_back(Slot::Forward(Expect::DescribePortal));
            }
            let _ = fe::execute("", 0, &mut m);
            fe::sync(&mut m);
            slots.push_back(Slot::Forward(Expect::Execute));
            slots.push_back(Slot::Swallow(Expect::Sync));
            parts.push((shard, m.freeze(), slots));
        }
        self.exchange_many(parts, MergeMode::Concat).await
    }
}
