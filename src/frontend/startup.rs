//! Connection startup (PostgreSQL docs §55.2.1): SSLRequest/GSSENCRequest
//! are declined ('N'), CancelRequest is forwarded to the backends of the
//! client it names (see `cancel.rs`), and a v3
//! StartupMessage is answered with AuthenticationOk (trust), the shards'
//! ParameterStatus values, BackendKeyData and ReadyForQuery.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::protocol::error::codes;
use crate::protocol::frontend::Startup;
use crate::protocol::{synth, FrameReader, PgError};
use crate::state::RouterState;

use super::client::ClientOut;
use super::session::{End, Session};

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;
const PROTOCOL_3_0: i32 = 196608;

/// Startup parameters that are connection options, not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "options", "replication"];

/// Runs one client connection to completion on session worker `worker`
/// (whose backend pools it uses).
pub async fn handle_client(sock: TcpStream, state: Arc<RouterState>, worker: usize) {
    let (r, mut w) = sock.into_split();
    let mut reader = FrameReader::new(r, state.max_message_bytes);
    let startup = loop {
        let body = match reader.next_startup().await {
            Ok(b) => b,
            Err(e) => {
                let mut buf = BytesMut::new();
                synth::error(
                    &mut buf,
                    &PgError::fatal(codes::PROTOCOL_VIOLATION, e.to_string()),
                );
                let _ = w.write_all(&buf).await;
                return;
            }
        };
        let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        match code {
            SSL_REQUEST | GSSENC_REQUEST => {
                if w.write_all(b"N").await.is_err() {
                    return;
                }
            }
            CANCEL_REQUEST => {
                // Process id and secret key follow the code (16 bytes in all).
                if let (Some(p), Some(k)) = (body.get(4..8), body.get(8..12)) {
                    let pid = i32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                    let secret = i32::from_be_bytes([k[0], k[1], k[2], k[3]]);
                    let n = state.cancels.cancel(pid, secret).await;
                    tracing::debug!(pid, backends = n, "cancel request");
                }
                return;
            }
            _ => match Startup::decode(&body) {
                Ok(s) => break s,
                Err(e) => {
                    let mut buf = BytesMut::new();
                    synth::error(
                        &mut buf,
                        &PgError::fatal(codes::PROTOCOL_VIOLATION, e.to_string()),
                    );
                    let _ = w.write_all(&buf).await;
                    return;
                }
            },
        }
    };
    let mut out = ClientOut::new(w);
    if startup.version >> 16 != 3 {
        synth::error(
            &mut out.buf,
            &PgError::fatal(
                codes::FEATURE_NOT_SUPPORTED,
                format!(
                    "unsupported frontend protocol {}.{}: server supports 3.0",
                    startup.version >> 16,
                    startup.version & 0xffff
                ),
            ),
        );
        let _ = out.flush().await;
        return;
    }
    if startup.version != PROTOCOL_3_0 {
        // NegotiateProtocolVersion: we speak 3.0 (PostgreSQL docs §55.7).
        let mut b = BytesMut::new();
        use bytes::BufMut;
        b.put_u8(b'v');
        b.put_i32(12);
        b.put_i32(PROTOCOL_3_0);
        b.put_i32(0);
        out.buf.extend_from_slice(&b);
    }
    if startup
        .get("replication")
        .is_some_and(|v| v != "false" && v != "off" && v != "0")
    {
        synth::error(
            &mut out.buf,
            &PgError::fatal(
                codes::FEATURE_NOT_SUPPORTED,
                "replication connections are not supported by pg-router",
            ),
        );
        let _ = out.flush().await;
        return;
    }
    synth::auth_ok(&mut out.buf);
    let mut settings = Vec::new();
    let mut params = state.server_params();
    for (k, v) in &startup.params {
        if NOT_SETTINGS.contains(&k.as_str()) {
            continue;
        }
        let name = k.to_ascii_lowercase();
        settings.push((
            name.clone(),
            format!("SET {} = '{}'", quote_ident(k), v.replace('\'', "''")),
        ));
        if let Some(p) = params.iter_mut().find(|(pk, _)| pk.eq_ignore_ascii_case(k)) {
            p.1 = v.clone();
        } else if name == "application_name" {
            params.push((k.clone(), v.clone()));
        }
    }
    for (k, v) in &params {
        synth::parameter_status(&mut out.buf, k, v);
    }
    let (pid, secret, slot, key) = state.cancels.register();
    synth::backend_key_data(&mut out.buf, pid, secret);
    synth::ready(&mut out.buf, b'I');
    if out.flush().await.is_err() {
        return;
    }
    match Session::new(state, worker, reader, out, settings, (slot, key))
        .run()
        .await
    {
        End::Closed => {}
        End::Failed(e) => tracing::debug!("client session ended: {e}"),
    }
}

fn quote_ident(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
    {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}
