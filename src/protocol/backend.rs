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

/// Decodes a DataRow body into column values (`None` = NULL).
pub fn data_row(body: &[u8]) -> Result<Vec<Option<&[u8]>>, ProtocolError> {
    let mut c = Cursor::new(body);
    let n = c.count()?;
    let mut vals = Vec::with_capacity(n.min(1024));
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
