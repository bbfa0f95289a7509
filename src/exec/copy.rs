//! COPY through the router (PostgreSQL docs §55.2.6 "COPY Operations"):
//! `COPY t FROM STDIN` rows are split by their sharding key and streamed to
//! the owning shards; `COPY t TO STDOUT` concatenates every shard's rows.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::message::frontend as fe;

use crate::catalog::Catalog;
use crate::plan::{CopyFormat, CopyPlan, KeyExpr};
use crate::protocol::client_io::ClientRead;
use crate::protocol::error::codes;
use crate::protocol::{FrameReader, PgError};
use crate::state::Routing;

use super::concat::{MergeMode, MergeState};
use super::context::{End, ExecCtx};
use super::copy_binary::{end_binary, split_binary};
use super::exchange::{self, Direct, Expect, Slot};
use super::route::{key_shard, null_key, shard_index};
use crate::protocol::copy_binary::BinaryCopyReader;

/// Per-shard buffered COPY data is sent once it exceeds this many bytes.
const COPY_CHUNK: usize = 64 * 1024;

impl ExecCtx {
    /// Runs a COPY statement; returns false if it failed (error sent).
    /// COPY FROM STDIN reads the client's CopyData/CopyDone/CopyFail from
    /// `client` (PostgreSQL docs §55.2.6).
    pub async fn copy(
        &mut self,
        client: &mut FrameReader<ClientRead>,
        routing: &Routing,
        sql: &str,
        c: &CopyPlan,
    ) -> Result<bool, End> {
        let catalog = &routing.catalog;
        let Some(shards) = catalog
            .table(&c.table)
            .and_then(|t| catalog.keyspace_of(t))
            .map(|k| k.routing.shards().to_vec())
        else {
            self.send_error(&PgError::unsupported(format!(
                "table \"{}\" has no routing",
                c.table
            )));
            return Ok(false);
        };
        let mut q = BytesMut::new();
        let _ = fe::query(sql, &mut q);
        let q = q.freeze();
        if !c.from_stdin {
            let parts = shards
                .into_iter()
                .map(|s| (s, q.clone(), VecDeque::from([Slot::Forward(Expect::Query)])))
                .collect();
            let mut merge = MergeState::new(MergeMode::Concat);
            // A header line appears once, from the first shard; so do the
            // binary format's file header and trailer.
            merge.copy_header = c.header;
            merge.copy_binary = c.format == CopyFormat::Binary;
            return self.exchange_many_with(parts, merge).await;
        }
        // Key column position.
        let Some(t) = catalog.table(&c.table) else {
            return Ok(false);
        };
        let key_col = t.key_column.clone();
        let key_index = match &c.columns {
            Some(cols) => match cols.iter().position(|x| *x == key_col) {
                Some(i) => i,
                None => {
                    self.send_error(&PgError::unsupported(format!(
                        "COPY into sharded table \"{}\" must include its sharding key column \"{key_col}\"",
                        c.table
                    )));
                    return Ok(false);
                }
            },
            None => match self.column_position(&shards[0], &c.table, &key_col).await? {
                Some(i) => i,
                None => return Ok(false),
            },
        };
        // Start COPY on every shard.
        let mut idxs = Vec::with_capacity(shards.len());
        for s in &shards {
            match self.acquire(s).await {
                Ok(i) => idxs.push(i),
                Err(e) => {
                    self.send_error(&e);
                    return Ok(false);
                }
            }
        }
        for &i in &idxs {
            if !self.ready_conn(i).await? {
                return Ok(false);
            }
        }
        let mut copy_in_response: Option<Bytes> = None;
        let mut start_error: Option<Bytes> = None;
        for &i in &idxs {
            let conn = &mut self.held[i].conn;
            conn.out.extend_from_slice(&q);
            let r = conn.flush().await;
            if r.is_err() {
                return self.copy_lost(i).await;
            }
        }
        for &i in &idxs {
            loop {
                let f = match self.held[i].conn.recv().await {
                    Ok(f) => f,
                    Err(_) => return self.copy_lost(i).await,
                };
                match f.tag {
                    b'G' => {
                        copy_in_response.get_or_insert(f.data);
                        break;
                    }
                    b'E' => {
                        start_error.get_or_insert(f.data);
                    }
                    b'Z' => {
                        self.held[i].conn.status = f.body().first().copied().unwrap_or(b'I');
                        break;
                    }
                    _ => {}
                }
            }
        }
        if let Some(err) = start_error {
            // Abort the shards that entered COPY mode.
            self.abort_copy(&idxs, "COPY aborted on another shard")
                .await?;
            self.out.buf.extend_from_slice(&err);
            self.note_error();
            return Ok(false);
        }
        if let Some(r) = copy_in_response {
            self.out.buf.extend_from_slice(&r);
        }
        self.out.flush().await?;
        // Stream rows.
        let mut splitter = RowSplitter::new(c, key_index);
        let mut binary = (c.format == CopyFormat::Binary).then(|| BinaryCopyReader::new(key_index));
        let mut bufs: Vec<BytesMut> = vec![BytesMut::new(); idxs.len()];
        let mut header_pending = c.header;
        let mut failure: Option<PgError> = None;
        loop {
            let f = client.next().await?;
            match f.tag {
                b'd' => {
                    if failure.is_some() {
                        continue;
                    }
                    if let Some(bin) = binary.as_mut() {
                        failure =
                            split_binary(bin, f.body(), catalog, &c.table, &shards, &mut bufs)
                                .err();
                    } else {
                        splitter.push(f.body());
                    }
                    while let Some(rec) = splitter.next_record() {
                        let (line, key) = match rec {
                            Ok(x) => x,
                            Err(e) => {
                                failure = Some(e);
                                break;
                            }
                        };
                        if header_pending {
                            header_pending = false;
                            for b in bufs.iter_mut() {
                                b.extend_from_slice(&line);
                            }
                            continue;
                        }
                        if key.is_none() && line == b"\\.\n"[..] {
                            continue;
                        }
                        match route_key(catalog, &c.table, key, &shards) {
                            Ok(n) => bufs[n].extend_from_slice(&line),
                            Err(e) => {
                                failure = Some(e);
                                break;
                            }
                        }
                    }
                    for (n, b) in bufs.iter_mut().enumerate() {
                        if b.len() >= COPY_CHUNK {
                            let i = idxs[n];
                            let conn = &mut self.held[i].conn;
                            copy_data(&mut conn.out, b);
                            if conn.flush().await.is_err() {
                                return self.copy_lost(i).await;
                            }
                        }
                    }
                }
                b'c' => {
                    if let (None, Some(bin)) = (&failure, &binary) {
                        failure = end_binary(bin, &mut bufs).err();
                    } else if failure.is_none() {
                        if let Some(rest) = splitter.finish() {
                            match rest {
                                Ok((line, key)) => match route_key(catalog, &c.table, key, &shards)
                                {
                                    Ok(n) => bufs[n].extend_from_slice(&line),
                                    Err(e) => failure = Some(e),
                                },
                                Err(e) => failure = Some(e),
                            }
                        }
                    }
                    if let Some(e) = failure {
                        self.abort_copy(&idxs, &e.message).await?;
                        self.send_error(&e);
                        return Ok(false);
                    }
                    for (n, b) in bufs.iter_mut().enumerate() {
                        let conn = &mut self.held[idxs[n]].conn;
                        if !b.is_empty() {
                            copy_data(&mut conn.out, b);
                        }
                        fe::copy_done(&mut conn.out);
                    }
                    return self.finish_copy(&idxs).await;
                }
                b'f' => {
                    let msg = crate::protocol::frontend::query_text(f.body())
                        .unwrap_or("COPY failed")
                        .to_string();
                    self.abort_copy(&idxs, &msg).await?;
                    self.send_error(&PgError::new(
                        codes::QUERY_CANCELED,
                        format!("COPY from stdin failed: {msg}"),
                    ));
                    return Ok(false);
                }
                b'H' | b'S' => {}
                other => {
                    self.abort_copy(&idxs, "unexpected message during COPY")
                        .await?;
                    self.send_error(&PgError::new(
                        codes::PROTOCOL_VIOLATION,
                        format!(
                            "unexpected message type {} during COPY from stdin",
                            other as char
                        ),
                    ));
                    return Ok(false);
                }
            }
        }
    }

    /// Sends the prelude (settings, BEGIN) of held connection `idx` and waits
    /// for it; false if it failed (error sent).
    async fn ready_conn(&mut self, idx: usize) -> Result<bool, End> {
        let mut slots = VecDeque::new();
        self.prelude(idx, &mut slots);
        if slots.is_empty() {
            return Ok(true);
        }
        let conn = &mut self.held[idx].conn;
        let r = match conn.flush().await {
            Ok(()) => exchange::run(conn, &mut slots, &mut self.out, &mut Direct).await,
            Err(e) => Err(exchange::ExchangeError::Backend(e)),
        };
        self.after_exchange(idx, r)
    }

    /// Ordinal position (0-based) of `column` in `table` on `shard`.
    async fn column_position(
        &mut self,
        shard: &str,
        table: &str,
        column: &str,
    ) -> Result<Option<usize>, End> {
        let idx = match self.acquire(shard).await {
            Ok(i) => i,
            Err(e) => {
                self.send_error(&e);
                return Ok(None);
            }
        };
        if !self.ready_conn(idx).await? {
            return Ok(None);
        }
        let lit = table.replace('\'', "''");
        let sql = format!(
            "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = '{lit}'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        );
        match self.held[idx].conn.simple_rows(&sql).await {
            Ok(Ok(rows)) => {
                let pos = rows
                    .iter()
                    .position(|r| r.first().and_then(|v| v.as_deref()) == Some(column));
                if pos.is_none() {
                    self.send_error(&PgError::new(
                        codes::UNDEFINED_COLUMN,
                        format!("sharding key column \"{column}\" of relation \"{table}\" does not exist"),
                    ));
                }
                Ok(pos)
            }
            Ok(Err((code, msg))) => {
                let code: &'static str = if code == "42P01" {
                    "42P01"
                } else {
                    codes::INTERNAL_ERROR
                };
                self.send_error(&PgError::new(code, msg));
                Ok(None)
            }
            Err(_) => {
                self.copy_lost(idx).await?;
                Ok(None)
            }
        }
    }

    async fn finish_copy(&mut self, idxs: &[usize]) -> Result<bool, End> {
        let mut merge = MergeState::new(MergeMode::Concat);
        for &i in idxs {
            if self.held[i].conn.flush().await.is_err() {
                return self.copy_lost(i).await;
            }
            merge.shard_names.push(self.held[i].conn.shard.to_string());
        }
        for (n, &i) in idxs.iter().enumerate() {
            let mut slots = VecDeque::from([Slot::Forward(Expect::Query)]);
            let conn = &mut self.held[i].conn;
            let mut sink = merge.sink(n);
            match exchange::run(conn, &mut slots, &mut self.out, &mut sink).await {
                Ok(_) => {}
                Err(exchange::ExchangeError::Client(e)) => return Err(e.into()),
                Err(exchange::ExchangeError::Backend(_)) => return self.copy_lost(i).await,
            }
        }
        Ok(self.finish_merge(merge))
    }

    async fn abort_copy(&mut self, idxs: &[usize], msg: &str) -> Result<(), End> {
        for &i in idxs {
            let conn = &mut self.held[i].conn;
            let _ = fe::copy_fail(msg, &mut conn.out);
            let _ = conn.flush().await;
        }
        for &i in idxs {
            loop {
                match self.held[i].conn.recv().await {
                    Ok(f) if f.tag == b'Z' => {
                        self.held[i].conn.status = f.body().first().copied().unwrap_or(b'I');
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        self.note_error();
        Ok(())
    }

    async fn copy_lost(&mut self, idx: usize) -> Result<bool, End> {
        let shard = self.held[idx].conn.shard.to_string();
        self.held.retain(|h| !h.conn.broken);
        // Other shards may be mid-COPY: drop them rather than resynchronize.
        for h in self.held.iter_mut() {
            h.conn.broken = true;
        }
        self.held.clear();
        self.block = None;
        self.send_error(&PgError::new(
            codes::CONNECTION_FAILURE,
            format!("lost connection to shard \"{shard}\" during COPY"),
        ));
        Ok(false)
    }
}

fn copy_data(out: &mut BytesMut, data: &mut BytesMut) {
    out.reserve(data.len() + 5);
    out.put_u8(b'd');
    out.put_i32(data.len() as i32 + 4);
    out.extend_from_slice(data);
    data.clear();
}

/// The values of a COPY row's constant key: none (a static, not one per
/// row).
static NO_LITERALS: crate::plan::Literals = crate::plan::Literals::NONE;

/// Index into `shards` of the shard owning `key` (text form, `None` = NULL).
fn route_key(
    catalog: &Catalog,
    table: &str,
    key: Option<String>,
    shards: &[String],
) -> Result<usize, PgError> {
    let key = KeyExpr::Const(key.ok_or_else(|| null_key(catalog, table))?);
    // A constant key reads no values.
    let no_values = super::route::Values::Simple {
        sql: "",
        lits: &NO_LITERALS,
    };
    let shard =
        key_shard(catalog, table, &key, &no_values)?.ok_or_else(|| null_key(catalog, table))?;
    shard_index(shards, shard)
}

/// Splits a COPY data stream (text or CSV) into records and extracts the
/// sharding key field of each (PostgreSQL docs, COPY "File Formats").
struct RowSplitter {
    buf: BytesMut,
    csv: bool,
    delim: u8,
    quote: u8,
    escape: u8,
    key_index: usize,
}

type Record = Result<(Bytes, Option<String>), PgError>;

impl RowSplitter {
    fn new(c: &CopyPlan, key_index: usize) -> Self {
        RowSplitter {
            buf: BytesMut::new(),
            csv: c.format == CopyFormat::Csv,
            delim: c.delimiter,
            quote: c.quote,
            escape: c.escape,
            key_index,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete record (with its line terminator) and its key.
    fn next_record(&mut self) -> Option<Record> {
        let end = if self.csv {
            self.csv_record_end()?
        } else {
            self.buf.iter().position(|&b| b == b'\n')? + 1
        };
        let line = self.buf.split_to(end).freeze();
        Some(self.key_of(&line).map(|k| (line, k)))
    }

    /// A final record without a trailing newline.
    fn finish(&mut self) -> Option<Record> {
        if self.buf.is_empty() {
            return None;
        }
        let mut line = std::mem::take(&mut self.buf);
        line.put_u8(b'\n');
        let line = line.freeze();
        Some(self.key_of(&line).map(|k| (line, k)))
    }

    fn csv_record_end(&self) -> Option<usize> {
        let mut in_q = false;
        let b = &self.buf[..];
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if in_q {
                if c == self.escape && self.escape != self.quote && i + 1 < b.len() {
                    i += 2;
                    continue;
                }
                if c == self.quote {
                    if self.escape == self.quote && b.get(i + 1) == Some(&self.quote) {
                        i += 2;
                        continue;
                    }
                    in_q = false;
                }
            } else if c == self.quote {
                in_q = true;
            } else if c == b'\n' {
                return Some(i + 1);
            }
            i += 1;
        }
        None
    }

    fn key_of(&self, line: &[u8]) -> Result<Option<String>, PgError> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line == b"\\." {
            return Ok(None);
        }
        let field = if self.csv {
            self.csv_field(line)
        } else {
            self.text_field(line)
        };
        field.ok_or_else(|| {
            PgError::new(
                codes::BAD_COPY_FILE_FORMAT,
                format!(
                    "missing data for sharding key column (field {})",
                    self.key_index + 1
                ),
            )
        })?
    }

    fn text_field(&self, line: &[u8]) -> Option<Result<Option<String>, PgError>> {
        let mut field = 0;
        let mut start = 0;
        let mut i = 0;
        while i <= line.len() {
            if i == line.len() || line[i] == self.delim {
                if field == self.key_index {
                    return Some(unescape_text(&line[start..i]));
                }
                field += 1;
                start = i + 1;
            } else if line[i] == b'\\' {
                i += 1;
            }
            i += 1;
        }
        None
    }

    fn csv_field(&self, line: &[u8]) -> Option<Result<Option<String>, PgError>> {
        let mut field = 0;
        let mut cur = Vec::new();
        let mut quoted = false;
        let mut in_q = false;
        let mut i = 0;
        loop {
            let at_end = i >= line.len();
            if at_end || (!in_q && line[i] == self.delim) {
                if field == self.key_index {
                    if !quoted && cur.is_empty() {
                        return Some(Ok(None)); // unquoted empty = NULL
                    }
                    return Some(String::from_utf8(cur).map(Some).map_err(|_| {
                        PgError::new(codes::BAD_COPY_FILE_FORMAT, "invalid UTF-8 in sharding key")
                    }));
                }
                if at_end {
                    return None;
                }
                field += 1;
                cur.clear();
                quoted = false;
                i += 1;
                continue;
            }
            let c = line[i];
            if in_q {
                if c == self.escape && line.get(i + 1) == Some(&self.quote) {
                    cur.push(self.quote);
                    i += 2;
                    continue;
                }
                if c == self.quote {
                    in_q = false;
                } else {
                    cur.push(c);
                }
            } else if c == self.quote {
                in_q = true;
                quoted = true;
            } else {
                cur.push(c);
            }
            i += 1;
        }
    }
}

/// Decodes a text-format COPY field (`\N` = NULL, backslash escapes).
fn unescape_text(f: &[u8]) -> Result<Option<String>, PgError> {
    if f == b"\\N" {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(f.len());
    let mut i = 0;
    while i < f.len() {
        if f[i] == b'\\' && i + 1 < f.len() {
            i += 1;
            out.push(match f[i] {
                b'n' => b'\n',
                b't' => b'\t',
                b'r' => b'\r',
                b'b' => 8,
                b'f' => 12,
                b'v' => 11,
                c => c,
            });
        } else {
            out.push(f[i]);
        }
        i += 1;
    }
    String::from_utf8(out)
        .map(Some)
        .map_err(|_| PgError::new(codes::BAD_COPY_FILE_FORMAT, "invalid UTF-8 in sharding key"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::CopyPlan;

    fn plan(csv: bool) -> CopyPlan {
        CopyPlan {
            table: "t".into(),
            columns: None,
            from_stdin: true,
            format: if csv {
                CopyFormat::Csv
            } else {
                CopyFormat::Text
            },
            delimiter: if csv { b',' } else { b'\t' },
            header: false,
            quote: b'"',
            escape: b'"',
        }
    }

    #[test]
    fn text_rows_split_across_chunks() {
        let mut s = RowSplitter::new(&plan(false), 1);
        s.push(b"a\t17\tx\nb\t4");
        let (l, k) = s.next_record().unwrap().unwrap();
        assert_eq!(&l[..], b"a\t17\tx\n");
        assert_eq!(k.as_deref(), Some("17"));
        assert!(s.next_record().is_none());
        s.push(b"2\n");
        assert_eq!(s.next_record().unwrap().unwrap().1.as_deref(), Some("42"));
    }

    #[test]
    fn csv_quotes_and_newlines() {
        let mut s = RowSplitter::new(&plan(true), 1);
        s.push(b"\"a,\n\"\"b\",\"5\"\nx,\n");
        let (_, k) = s.next_record().unwrap().unwrap();
        assert_eq!(k.as_deref(), Some("5"));
        let (_, k) = s.next_record().unwrap().unwrap();
        assert_eq!(k, None);
    }

    #[test]
    fn text_escapes_and_null() {
        assert_eq!(unescape_text(b"a\\tb").unwrap().as_deref(), Some("a\tb"));
        assert_eq!(unescape_text(b"\\N").unwrap(), None);
        let mut s = RowSplitter::new(&plan(false), 3);
        s.push(b"1\t2\n");
        assert!(s.next_record().unwrap().is_err());
    }
}
