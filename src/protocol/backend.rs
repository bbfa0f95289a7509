//! Decoders for the backend messages the router inspects (PostgreSQL docs
//! §55.7): CommandComplete tags, ReadyForQuery status, ErrorResponse fields,
//! RowDescription and DataRow columns.

use super::frontend::Cursor;
use super::ProtocolError;

/// The command tag of a CommandComplete body.
pub fn command_tag(body: &[u8]) -> Result<&str, ProtocolError> {
    Cursor::new(body).cstr()
}

/// Splits a tag like "INSERT 0 5" / "UPDATE 3" / "SELECT 7" into its verb
/// part and row count; `None` when the tag carries no count (e.g. "BEGIN").
pub fn tag_count(tag: &str) -> Option<(&str, u64)> {
    let (head, last) = tag.rsplit_once(' ')?;
    let n = last.parse().ok()?;
    Some((head, n))
}

/// The whole messages (tag, length, body; at least 5 bytes each) in
/// `buf`, a run of backend messages as the router buffers them; a
/// truncated last one is cut at the end of `buf` (PostgreSQL protocol docs
/// §55.7: a tag byte, then an Int32 length counting itself).
pub fn frames(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let b = buf.get(at + 1..at + 5)?;
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let end = at
            .saturating_add(1)
            .saturating_add(len)
            .min(buf.len())
            .max(at + 5);
        let f = buf.get(at..end)?;
        at = end;
        Some(f)
    })
}

/// A SELECT's response as the router kept it ([`frames`] of a capture):
/// its columns, its rows (raw values in the columns' formats, None =
/// NULL) and its ErrorResponse/NoticeResponse frames, as they are.
#[derive(Debug, Default)]
pub struct CapturedRows {
    /// Columns of the RowDescription (none if there was none).
    pub columns: Vec<Column>,
    /// DataRow values.
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
    /// Whole 'E' and 'N' frames, in order.
    pub messages: Vec<Vec<u8>>,
}

/// Decodes a captured response; undecodable frames are skipped.
pub fn captured_rows(buf: &[u8]) -> CapturedRows {
    let mut out = CapturedRows::default();
    for frame in frames(buf) {
        let body = frame.get(5..).unwrap_or_default();
        match frame[0] {
            b'T' => out.columns = row_description(body).unwrap_or_default(),
            b'D' => {
                if let Ok(v) = data_row(body) {
                    out.rows
                        .push(v.iter().map(|x| x.map(<[u8]>::to_vec)).collect());
                }
            }
            b'E' | b'N' => out.messages.push(frame.to_vec()),
            _ => {}
        }
    }
    out
}

/// ErrorResponse/NoticeResponse fields as (code byte, value) pairs.
pub fn error_fields(body: &[u8]) -> Result<Vec<(u8, &str)>, ProtocolError> {
    let mut c = Cursor::new(body);
    let mut out = Vec::new();
    loop {
        let code = c.u8()?;
        if code == 0 {
            return Ok(out);
        }
        out.push((code, c.cstr()?));
    }
}

/// SQLSTATE of an ErrorResponse body, if present.
pub fn error_code(body: &[u8]) -> Option<String> {
    error_fields(body)
        .ok()?
        .into_iter()
        .find(|(c, _)| *c == b'C')
        .map(|(_, v)| v.to_string())
}

/// Column metadata from a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Data type OID.
    pub type_oid: u32,
    /// Type modifier (-1: none), e.g. `numeric(12,2)`'s.
    pub typmod: i32,
    /// Format code (0 text, 1 binary).
    pub format: i16,
}

/// Decodes a RowDescription body.
pub fn row_description(body: &[u8]) -> Result<Vec<Column>, ProtocolError> {
    let mut c = Cursor::new(body);
    let n = c.count()?;
    let mut cols = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let name = c.cstr()?.to_string();
        let _table = c.i32()?;
        let _attnum = c.i16()?;
        let type_oid = c.i32()? as u32;
        let _size = c.i16()?;
        let typmod = c.i32()?;
        let format = c.i16()?;
        cols.push(Column {
            name,
            type_oid,
            typmod,
            format,
        });
    }
    Ok(cols)
}

/// Column `i` of a DataRow body (`None` = NULL), found by skipping the
/// columns before it without decoding them or the ones after it.
///
/// Errors: [`ProtocolError`] when the body is truncated or has no column
/// `i`.
pub fn data_row_column(body: &[u8], i: usize) -> Result<Option<&[u8]>, ProtocolError> {
    let mut c = Cursor::new(body);
    if i >= c.count()? {
        return Err(ProtocolError::Malformed(format!(
            "DataRow has no column {i}"
        )));
    }
    for _ in 0..i {
        let len = c.i32()?;
        if len > 0 {
            c.bytes(len as usize)?;
        }
    }
    let len = c.i32()?;
    Ok(if len < 0 {
        None
    } else {
        Some(c.bytes(len as usize)?)
    })
}

/// The type OIDs of a RowDescription body's columns, in order (what a
/// gather needs of it; [`row_description`] also copies the names).
///
/// Errors: [`ProtocolError`] when the body is truncated.
pub fn row_types(body: &[u8]) -> Result<Vec<u32>, ProtocolError> {
    let mut c = Cursor::new(body);
    let n = c.count()?;
    let mut types = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        c.cstr()?;
        // Table OID (4), column number (2), then the type OID.
        c.bytes(6)?;
        types.push(c.i32()? as u32);
        // Type size (2), type modifier (4), format code (2).
        c.bytes(8)?;
    }
    Ok(types)
}

/// Byte offset in a DataRow body just after its first `n` columns (the
/// whole body when it has fewer), without decoding the values.
///
/// Errors: [`ProtocolError`] when the body is truncated.
pub fn data_row_prefix(body: &[u8], n: usize) -> Result<usize, ProtocolError> {
    let mut c = Cursor::new(body);
    let count = c.count()?;
    for _ in 0..n.min(count) {
        let len = c.i32()?;
        if len > 0 {
            c.bytes(len as usize)?;
        }
    }
    Ok(c.position())
}

/// A DataRow's column values, borrowed from its body (`None` = NULL):
/// inline up to 8 columns, so decoding a merged row does not allocate.
pub type RowValues<'a> = smallvec::SmallVec<[Option<&'a [u8]>; 8]>;

/// Decodes a DataRow body into column values (`None` = NULL).
///
/// Errors: [`ProtocolError`] when the body is truncated.
pub fn data_row(body: &[u8]) -> Result<RowValues<'_>, ProtocolError> {
    let mut c = Cursor::new(body);
    let n = c.count()?;
    let mut vals = RowValues::with_capacity(n.min(1024));
    for _ in 0..n {
        let len = c.i32()?;
        vals.push(if len < 0 {
            None
        } else {
            Some(c.bytes(len as usize)?)
        });
    }
    Ok(vals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_row_column_reads_one_column_and_refuses_a_short_row() {
        let mut buf = bytes::BytesMut::new();
        crate::protocol::synth::data_row(&mut buf, &[Some(b"ab"), None, Some(b""), Some(b"xyz")]);
        let body = &buf[5..];
        let all = data_row(body).unwrap();
        for i in 0..4 {
            assert_eq!(data_row_column(body, i).unwrap(), all[i]);
        }
        assert_eq!(data_row_column(body, 3).unwrap(), Some(&b"xyz"[..]));
        assert!(data_row_column(body, 4).is_err());
        assert!(data_row_column(&body[..body.len() - 1], 3).is_err());
    }

    #[test]
    fn row_types_reads_the_type_oids() {
        let mut body = Vec::new();
        body.extend_from_slice(&2i16.to_be_bytes());
        for (name, oid) in [(&b"id"[..], 20u32), (&b"x"[..], 25)] {
            body.extend_from_slice(name);
            body.push(0);
            body.extend_from_slice(&[0; 6]);
            body.extend_from_slice(&oid.to_be_bytes());
            body.extend_from_slice(&[0; 8]);
        }
        assert_eq!(row_types(&body).unwrap(), vec![20, 25]);
        let cols = row_description(&body).unwrap();
        assert_eq!(
            cols.iter().map(|c| c.type_oid).collect::<Vec<_>>(),
            vec![20, 25]
        );
        assert!(row_types(&body[..body.len() - 1]).is_err());
    }

    #[test]
    fn frames_split_whole_messages_and_cut_a_truncated_one() {
        let buf = [
            b'C', 0, 0, 0, 6, b'x', 0, // CommandComplete "x"
            b'Z', 0, 0, 0, 5, b'I', // ReadyForQuery
            b'D', 0, 0, 0, 40, 0, // truncated
        ];
        let f: Vec<&[u8]> = frames(&buf).collect();
        assert_eq!(f, vec![&buf[0..7], &buf[7..13], &buf[13..]]);
        // A length below 4 still moves on.
        let bad = [b'N', 0, 0, 0, 0, b'E', 0, 0, 0, 4];
        assert_eq!(frames(&bad).count(), 2);
        assert_eq!(frames(&[b'C', 0, 0]).count(), 0);
    }
}
