//! Backend messages the router writes itself (ErrorResponse, ReadyForQuery,
//! CommandComplete, ...), encoded with `pgwire`'s message codec
//! (PostgreSQL docs §55.7).

use bytes::{BufMut, BytesMut};
use pgwire::messages::response::{
    CommandComplete, EmptyQueryResponse, ErrorResponse, NoticeResponse, ReadyForQuery,
    TransactionStatus,
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
    let _ = CommandComplete::new(tag.to_string()).encode(buf);
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
    let len: usize = 4 + 2 + values.iter().map(|v| 4 + v.map_or(0, |b| b.len())).sum::<usize>();
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
