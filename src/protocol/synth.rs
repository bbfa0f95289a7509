//! Backend messages the router writes itself (ErrorResponse, ReadyForQuery,
//! CommandComplete, ...), encoded with `pgwire`'s message codec
//! (PostgreSQL docs §55.7).

use bytes::{BufMut, BytesMut};
use pgwire::messages::response::{
    EmptyQueryResponse, ErrorResponse, NoticeResponse, ReadyForQuery, TransactionStatus,
};
use pgwire::messages::startup::{Authentication, BackendKeyData, ParameterStatus, SecretKey};
use pgwire::messages::Message;

use super::PgError;

/// ParseComplete ('1'), a constant frame.
pub const PARSE_COMPLETE: &[u8] = &[b'1', 0, 0, 0, 4];
/// BindComplete ('2').
pub const BIND_COMPLETE: &[u8] = &[b'2', 0, 0, 0, 4];
/// CloseComplete ('3').
pub const CLOSE_COMPLETE: &[u8] = &[b'3', 0, 0, 0, 4];
/// NoData ('n').
pub const NO_DATA: &[u8] = &[b'n', 0, 0, 0, 4];

// pgwire's encoders only fail on messages larger than their limits, which
// the router's own short messages never reach; the fallbacks below keep the
// connection alive regardless.

/// Appends an ErrorResponse (or a NoticeResponse when `notice`).
pub fn error(buf: &mut BytesMut, e: &PgError) {
    let fields = error_fields(e);
    let _ = ErrorResponse::new(fields).encode(buf);
}

/// Appends a NoticeResponse with severity WARNING/NOTICE from `e`.
pub fn notice(buf: &mut BytesMut, e: &PgError) {
    let _ = NoticeResponse::new(error_fields(e)).encode(buf);
}

fn error_fields(e: &PgError) -> Vec<(u8, String)> {
    let mut fields = vec![
        (b'S', e.severity.to_string()),
        (b'V', e.severity.to_string()),
        (b'C', e.code.to_string()),
        (b'M', e.message.clone()),
    ];
    if let Some(d) = &e.detail {
        fields.push((b'D', d.clone()));
    }
    if let Some(h) = &e.hint {
        fields.push((b'H', h.clone()));
    }
    fields
}

/// Appends ReadyForQuery with status `b'I'`, `b'T'` or `b'E'`.
pub fn ready(buf: &mut BytesMut, status: u8) {
    let st = match status {
        b'T' => TransactionStatus::Transaction,
        b'E' => TransactionStatus::Error,
        _ => TransactionStatus::Idle,
    };
    let _ = ReadyForQuery::new(st).encode(buf);
}

/// Appends CommandComplete with `tag` (e.g. "SELECT 1", "INSERT 0 3").
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    buf.reserve(tag.len() + 6);
    buf.put_u8(b'C');
    buf.put_i32(tag.len() as i32 + 5);
    buf.put_slice(tag.as_bytes());
    buf.put_u8(0);
}

/// Appends CommandComplete with the tag `"{head} {n}"` (e.g. "SELECT 10",
/// "INSERT 0 3" with head "INSERT 0"), without formatting into a String.
pub fn command_complete_count(buf: &mut BytesMut, head: &str, n: u64) {
    let mut digits = itoa::Buffer::new();
    let n = digits.format(n);
    buf.reserve(head.len() + n.len() + 7);
    buf.put_u8(b'C');
    buf.put_i32((head.len() + 1 + n.len()) as i32 + 5);
    buf.put_slice(head.as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(n.as_bytes());
    buf.put_u8(0);
}

/// Appends EmptyQueryResponse.
pub fn empty_query(buf: &mut BytesMut) {
    let _ = EmptyQueryResponse::new().encode(buf);
}

/// Appends AuthenticationOk.
pub fn auth_ok(buf: &mut BytesMut) {
    let _ = Authentication::Ok.encode(buf);
}

/// Appends ParameterStatus.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    let _ = ParameterStatus::new(name.to_string(), value.to_string()).encode(buf);
}

/// Appends BackendKeyData (protocol 3.0 form: process id and i32 secret).
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    let _ = BackendKeyData::new(pid, SecretKey::I32(secret)).encode(buf);
}

/// Appends a DataRow built from text values (`None` = NULL).
pub fn data_row(buf: &mut BytesMut, values: &[Option<&[u8]>]) {
    let len: usize = 4
        + 2
        + values
            .iter()
            .map(|v| 4 + v.map_or(0, |b| b.len()))
            .sum::<usize>();
    buf.reserve(len + 1);
    buf.put_u8(b'D');
    buf.put_i32(len as i32);
    buf.put_i16(values.len() as i16);
    for v in values {
        match v {
            Some(b) => {
                buf.put_i32(b.len() as i32);
                buf.put_slice(b);
            }
            None => buf.put_i32(-1),
        }
    }
}

/// Appends a Bind message (PostgreSQL docs §55.7 Bind): `portal`,
/// `statement`, parameter format codes, parameter values (`None` = NULL)
/// and result-column format codes (0 text, 1 binary).
pub fn bind(
    buf: &mut BytesMut,
    portal: &str,
    statement: &str,
    param_formats: &[i16],
    params: &[Option<&[u8]>],
    result_formats: &[i16],
) {
    let len = 4
        + portal.len()
        + 1
        + statement.len()
        + 1
        + 2
        + 2 * param_formats.len()
        + 2
        + params
            .iter()
            .map(|p| 4 + p.map_or(0, |b| b.len()))
            .sum::<usize>()
        + 2
        + 2 * result_formats.len();
    buf.reserve(len + 1);
    buf.put_u8(b'B');
    buf.put_i32(len as i32);
    buf.put_slice(portal.as_bytes());
    buf.put_u8(0);
    buf.put_slice(statement.as_bytes());
    buf.put_u8(0);
    buf.put_i16(param_formats.len() as i16);
    for f in param_formats {
        buf.put_i16(*f);
    }
    buf.put_i16(params.len() as i16);
    for p in params {
        match p {
            Some(b) => {
                buf.put_i32(b.len() as i32);
                buf.put_slice(b);
            }
            None => buf.put_i32(-1),
        }
    }
    buf.put_i16(result_formats.len() as i16);
    for f in result_formats {
        buf.put_i16(*f);
    }
}

/// Appends a RowDescription holding the first `keep` fields of the
/// RowDescription body `body` (PostgreSQL docs §55.7 RowDescription),
/// with format code `formats(i)` for field `i`.
///
/// Errors: [`crate::protocol::ProtocolError::Malformed`] when `body` is not
/// a valid RowDescription or has fewer than `keep` fields.
pub fn row_description_prefix(
    buf: &mut BytesMut,
    body: &[u8],
    keep: usize,
    formats: &dyn Fn(usize) -> i16,
) -> Result<(), crate::protocol::ProtocolError> {
    let bad = || crate::protocol::ProtocolError::Malformed("malformed RowDescription".into());
    let n = u16::from_be_bytes([
        *body.first().ok_or_else(bad)?,
        *body.get(1).ok_or_else(bad)?,
    ]) as usize;
    if keep > n {
        return Err(bad());
    }
    // Written in place; the length is filled in at the end.
    let start = buf.len();
    buf.reserve(body.len() + 5);
    buf.put_u8(b'T');
    buf.put_i32(0);
    buf.put_i16(keep as i16);
    let mut pos = 2;
    for i in 0..keep {
        // Name, NUL, then 18 bytes of attributes (the last 2 the format).
        let field = body
            .get(pos..)
            .and_then(|r| memchr::memchr(0, r))
            .and_then(|nul| body.get(pos..pos + nul + 1 + 18));
        let Some(field) = field else {
            buf.truncate(start);
            return Err(bad());
        };
        buf.put_slice(&field[..field.len() - 2]);
        buf.put_i16(formats(i));
        pos += field.len();
    }
    let len = (buf.len() - start - 1) as i32;
    buf[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Appends a RowDescription of text columns named `names` (type text,
/// format 0), for answers the router writes itself.
pub fn text_row_description(buf: &mut BytesMut, names: &[&str]) {
    let len = 4 + 2 + names.iter().map(|n| n.len() + 1 + 18).sum::<usize>();
    buf.reserve(len + 1);
    buf.put_u8(b'T');
    buf.put_i32(len as i32);
    buf.put_i16(names.len() as i16);
    for n in names {
        buf.put_slice(n.as_bytes());
        buf.put_u8(0);
        buf.put_i32(0);
        buf.put_i16(0);
        buf.put_i32(25);
        buf.put_i16(-1);
        buf.put_i32(-1);
        buf.put_i16(0);
    }
}

/// Appends a RowDescription of one `bigint` column named `name` in
/// `format` (0 text, 1 binary), for values the router answers itself
/// (PostgreSQL docs §55.7 RowDescription; int8 is type OID 20, 8 bytes).
pub fn int8_row_description(buf: &mut BytesMut, name: &str, format: i16) {
    let len = 4 + 2 + name.len() + 1 + 18;
    buf.reserve(len + 1);
    buf.put_u8(b'T');
    buf.put_i32(len as i32);
    buf.put_i16(1);
    buf.put_slice(name.as_bytes());
    buf.put_u8(0);
    buf.put_i32(0);
    buf.put_i16(0);
    buf.put_i32(20);
    buf.put_i16(8);
    buf.put_i32(-1);
    buf.put_i16(format);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::backend::row_description;

    #[test]
    fn command_complete_frames_the_tag() {
        let mut buf = BytesMut::new();
        command_complete(&mut buf, "SELECT 10");
        assert_eq!(&buf[..], b"C\0\0\0\x0eSELECT 10\0");
        let mut counted = BytesMut::new();
        command_complete_count(&mut counted, "SELECT", 10);
        assert_eq!(counted, buf);
        counted.clear();
        command_complete_count(&mut counted, "INSERT 0", 0);
        assert_eq!(&counted[..], b"C\0\0\0\x0fINSERT 0 0\0");
    }

    #[test]
    fn row_description_prefix_keeps_fields_and_sets_formats() {
        let mut full = BytesMut::new();
        text_row_description(&mut full, &["a", "bc", "hidden"]);
        let body = &full[5..];
        let mut buf = BytesMut::from(&b"x"[..]);
        row_description_prefix(&mut buf, body, 2, &|i| i as i16).unwrap();
        assert_eq!(buf[0], b'x');
        let len = i32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize;
        assert_eq!(len + 2, buf.len());
        let cols = row_description(&buf[6..]).unwrap();
        let names: Vec<_> = cols.iter().map(|c| (c.name.as_str(), c.format)).collect();
        assert_eq!(names, vec![("a", 0), ("bc", 1)]);
        // A truncated body is refused and nothing is written.
        let mut buf = BytesMut::from(&b"x"[..]);
        assert!(row_description_prefix(&mut buf, &body[..body.len() - 20], 3, &|_| 0).is_err());
        assert!(row_description_prefix(&mut buf, body, 4, &|_| 0).is_err());
        assert_eq!(&buf[..], b"x");
    }
}
