//! Connection startup (PostgreSQL docs §55.2.1): an SSLRequest is answered
//! 'S' and followed by a TLS handshake when `[tls]` is configured ('N'
//! otherwise; GSSENCRequest always 'N'), CancelRequest is forwarded to the backends of the
//! client it names (see `state/clients.rs`), and a v3 StartupMessage is checked
//! against `limits.max_client_connections` (53300), authenticated
//! (`auth.rs`: trust, MD5, SCRAM-SHA-256) and answered with
//! AuthenticationOk, the shards' ParameterStatus values, BackendKeyData and
//! ReadyForQuery. The whole phase is bounded by `limits.auth_timeout_ms`.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::Instrument;

use crate::protocol::error::codes;
use crate::protocol::frontend::Startup;
use crate::protocol::{synth, FrameReader, PgError, ProtocolError};
use crate::state::{ClientGuard, RouterState};

use super::auth::{authenticate, AuthFailure, MAX_AUTH_MESSAGE_BYTES};
use crate::admin::console;
use crate::exec::End;
use crate::protocol::client_io::{ClientOut, ClientRead, ClientWrite};
use crate::session::Session;
use crate::state::clients::{self, CancelKey, CancelSlot, ClientInfo};

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;
const PROTOCOL_3_0: i32 = 196608;

/// Startup parameters that are connection options, not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "options", "replication"];

/// Runs one client connection to completion on session worker `worker`
/// (whose backend pools it uses).
pub async fn handle_client(sock: TcpStream, state: Arc<RouterState>, worker: usize) {
    let peer = sock.peer_addr().ok();
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(state.limits().auth_timeout_ms);
    let (reader, w, tls) = match tokio::time::timeout_at(deadline, negotiate(sock, &state)).await {
        Ok(Some(x)) => x,
        // Timed out before the first message was complete, or the client
        // left or failed the TLS handshake: nothing more to say.
        _ => return,
    };
    // Until the client has authenticated, only small messages are accepted
    // (negotiate's reader is limited to MAX_AUTH_MESSAGE_BYTES).
    let mut reader = reader;
    let mut out = ClientOut::new(w);
    let started =
        match tokio::time::timeout_at(deadline, startup(&mut reader, &mut out, &state, peer, tls))
            .await
        {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(_) => {
                refuse(
                    &mut out,
                    PgError::fatal(
                        codes::QUERY_CANCELED,
                        "canceling authentication due to timeout",
                    ),
                )
                .await;
                return;
            }
        };
    reader.set_max_len(state.limits().max_message_bytes);
    let Started {
        settings,
        cancel,
        client: _client,
        user,
        pid,
        admin,
    } = started;
    if admin {
        let span = tracing::debug_span!("admin", id = pid, addr = ?peer, user = %user);
        console::run(state, reader, out, cancel.0.clone())
            .instrument(span)
            .await;
        return;
    }
    // Every log line of the session carries the client; requests log their
    // route kind and shards at debug level inside it.
    let span = tracing::debug_span!("client", id = pid, addr = ?peer, user = %user);
    match Session::new(state, worker, reader, out, settings, cancel)
        .run()
        .instrument(span)
        .await
    {
        End::Closed => {}
        End::Failed(e) => tracing::debug!("client session ended: {e}"),
    }
}

/// Encryption negotiation on the raw socket: reads 8-byte packets while
/// they are SSLRequest (answered 'S' + TLS handshake when TLS is
/// configured, else 'N') or GSSENCRequest ('N'). Reads exactly what it
/// needs, so no plaintext sent after an SSLRequest can be taken for data
/// inside TLS (CVE-2021-23214). Returns the connection's reader (holding
/// any bytes already read), its writer and whether TLS is on; None when the
/// client left or the handshake failed.
async fn negotiate(
    mut sock: TcpStream,
    state: &RouterState,
) -> Option<(FrameReader<ClientRead>, ClientWrite, bool)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let mut head = [0u8; 8];
        let mut got = 0;
        while got < 8 {
            match sock.read(&mut head[got..]).await {
                Ok(0) if got == 0 => return None,
                Ok(0) => break,
                Ok(n) => got += n,
                Err(_) => return None,
            }
        }
        let len = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let code = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if got == 8 && len == 8 && code == SSL_REQUEST {
            let tls = state.tls();
            if let Some(acceptor) = &tls.acceptor {
                sock.write_all(b"S").await.ok()?;
                let stream = match acceptor.accept(sock).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!("TLS handshake failed: {e}");
                        return None;
                    }
                };
                let (r, w) = tokio::io::split(stream);
                let reader = FrameReader::new(Box::new(r) as ClientRead, MAX_AUTH_MESSAGE_BYTES);
                return Some((reader, Box::new(w), true));
            }
            sock.write_all(b"N").await.ok()?;
            continue;
        }
        if got == 8 && len == 8 && code == GSSENC_REQUEST {
            sock.write_all(b"N").await.ok()?;
            continue;
        }
        // The first packet of a plaintext startup (StartupMessage or
        // CancelRequest): keep what was read for the startup reader.
        let (r, w) = sock.into_split();
        let mut reader = FrameReader::new(Box::new(r) as ClientRead, MAX_AUTH_MESSAGE_BYTES);
        reader.push_buffered(&head[..got]);
        return Some((reader, Box::new(w), false));
    }
}

/// What a successful startup hands to the session.
struct Started {
    settings: Vec<(String, String)>,
    cancel: (Arc<CancelSlot>, CancelKey),
    /// Holds the client's place under `max_client_connections`.
    client: ClientGuard,
    /// The authenticated user.
    user: String,
    /// The client's id (BackendKeyData process id).
    pid: i32,
    /// Connected to the admin console (database `pgrouter`).
    admin: bool,
}

/// Writes a FATAL error and flushes (the caller then closes).
async fn refuse(out: &mut ClientOut, e: PgError) {
    crate::metrics::note_error(e.code.as_bytes());
    synth::error(&mut out.buf, &e);
    let _ = out.flush().await;
}

/// The startup phase: SSL/GSS negotiation, cancel requests, the
/// StartupMessage, the connection limit and authentication, up to
/// ReadyForQuery. Returns None when the connection is done (refused with
/// an error already written, a cancel request, or the client left).
async fn startup<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    out: &mut ClientOut,
    state: &Arc<RouterState>,
    peer: Option<std::net::SocketAddr>,
    tls: bool,
) -> Option<Started> {
    let startup = loop {
        let body = match reader.next_startup().await {
            Ok(b) => b,
            Err(ProtocolError::Eof) | Err(ProtocolError::Io(_)) => return None,
            Err(e) => {
                refuse(
                    out,
                    PgError::fatal(codes::PROTOCOL_VIOLATION, e.to_string()),
                )
                .await;
                return None;
            }
        };
        let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        match code {
            SSL_REQUEST | GSSENC_REQUEST => {
                out.buf.extend_from_slice(b"N");
                out.flush().await.ok()?;
            }
            CANCEL_REQUEST => {
                // Process id and secret key follow the code (16 bytes in all).
                if let (Some(p), Some(k)) = (body.get(4..8), body.get(8..12)) {
                    let pid = i32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                    let secret = i32::from_be_bytes([k[0], k[1], k[2], k[3]]);
                    let n = state.cancels.cancel(pid, secret).await;
                    tracing::debug!(pid, backends = n, "cancel request");
                }
                return None;
            }
            _ => match Startup::decode(&body) {
                Ok(s) => break s,
                Err(e) => {
                    refuse(
                        out,
                        PgError::fatal(codes::PROTOCOL_VIOLATION, e.to_string()),
                    )
                    .await;
                    return None;
                }
            },
        }
    };
    if startup.version >> 16 != 3 {
        let m = format!(
            "unsupported frontend protocol {}.{}: server supports 3.0",
            startup.version >> 16,
            startup.version & 0xffff
        );
        refuse(out, PgError::fatal(codes::FEATURE_NOT_SUPPORTED, m)).await;
        return None;
    }
    if startup.version != PROTOCOL_3_0 {
        // NegotiateProtocolVersion: we speak 3.0 (PostgreSQL docs §55.7).
        use bytes::BufMut;
        out.buf.put_u8(b'v');
        out.buf.put_i32(12);
        out.buf.put_i32(PROTOCOL_3_0);
        out.buf.put_i32(0);
    }
    if startup
        .get("replication")
        .is_some_and(|v| v != "false" && v != "off" && v != "0")
    {
        let m = "replication connections are not supported by pg-router";
        refuse(out, PgError::fatal(codes::FEATURE_NOT_SUPPORTED, m)).await;
        return None;
    }
    let Some(user) = startup.get("user").filter(|u| !u.is_empty()) else {
        let m = "no PostgreSQL user name specified in startup packet";
        refuse(out, PgError::fatal(codes::INVALID_AUTHORIZATION, m)).await;
        return None;
    };
    if !tls && state.tls().require {
        let e = PgError::fatal(
            codes::INVALID_AUTHORIZATION,
            format!("pg-router accepts only TLS connections: no encryption for user \"{user}\""),
        )
        .with_hint("connect with sslmode=require or verify-full");
        refuse(out, e).await;
        return None;
    }
    let Some(client) = state.admit_client() else {
        let e = PgError::fatal(
            codes::TOO_MANY_CONNECTIONS,
            "sorry, too many clients already",
        )
        .with_detail(format!(
            "pg-router serves at most {} client connections (limits.max_client_connections)",
            state.limits().max_client_connections
        ));
        refuse(out, e).await;
        return None;
    };
    let mut settings = Vec::new();
    let mut startup_settings: Vec<(String, String)> = Vec::new();
    for (k, v) in &startup.params {
        if !NOT_SETTINGS.contains(&k.as_str()) {
            startup_settings.push((k.clone(), v.clone()));
        }
    }
    if let Some(opts) = startup.get("options") {
        match parse_options(opts) {
            Ok(o) => startup_settings.extend(o),
            Err(m) => {
                refuse(out, PgError::fatal(codes::INVALID_PARAMETER_VALUE, m)).await;
                return None;
            }
        }
    }
    let users = state.users();
    match authenticate(reader, out, &users, user).await {
        Ok(()) => {}
        Err(AuthFailure::Gone) => return None,
        Err(AuthFailure::Refused(e)) => {
            tracing::info!(user, code = e.code, "client authentication failed");
            refuse(out, e).await;
            return None;
        }
    }
    let database = startup.get("database").unwrap_or(user);
    let admin = database == console::ADMIN_DATABASE;
    if admin && !users.is_admin(user) {
        let e = PgError::fatal(
            codes::INVALID_AUTHORIZATION,
            format!("user \"{user}\" may not use the pg-router admin console"),
        )
        .with_hint("admin users are listed in auth.admin_users");
        refuse(out, e).await;
        return None;
    }
    synth::auth_ok(&mut out.buf);
    let mut params = state.server_params();
    for (k, v) in &startup_settings {
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
    let _ = slot.info.set(ClientInfo {
        addr: peer,
        user: user.to_string(),
        database: database.to_string(),
        application_name: startup.get("application_name").unwrap_or("").to_string(),
        connected_at: std::time::SystemTime::now(),
        tls,
    });
    if admin {
        slot.activity.store(
            clients::ACTIVITY_ADMIN,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    synth::backend_key_data(&mut out.buf, pid, secret);
    synth::ready(&mut out.buf, b'I');
    out.flush().await.ok()?;
    Some(Started {
        settings,
        cancel: (slot, key),
        client,
        user: user.to_string(),
        pid,
        admin,
    })
}

/// Splits the StartupMessage `options` value (command-line style, as
/// libpq's PGOPTIONS) into settings: `-c name=value`, `-cname=value` and
/// `--name=value`; a backslash escapes the next character (PostgreSQL docs
/// §20.1.4, "options").
///
/// Errors: a message naming the switch that is not a setting.
pub fn parse_options(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_ascii_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next()
                .ok_or_else(|| "invalid command-line argument: -c requires a value".to_string())?
        } else if let Some(rest) = w.strip_prefix("--").or_else(|| w.strip_prefix("-c")) {
            rest.to_string()
        } else {
            return Err(format!(
                "invalid command-line argument in startup packet options: {w:?} \
                 (pg-router accepts -c name=value)"
            ));
        };
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("--{setting} requires a value"))?;
        out.push((name.replace('-', "_"), value.to_string()));
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::parse_options;

    #[test]
    fn startup_options() {
        let o =
            parse_options("-c statement_timeout=100  -csearch_path=a,b --lock-timeout=5s").unwrap();
        assert_eq!(
            o,
            vec![
                ("statement_timeout".to_string(), "100".to_string()),
                ("search_path".to_string(), "a,b".to_string()),
                ("lock_timeout".to_string(), "5s".to_string()),
            ]
        );
        let o = parse_options(r"-c application_name=my\ app").unwrap();
        assert_eq!(o[0].1, "my app");
        assert!(parse_options("").unwrap().is_empty());
        assert!(parse_options("-c").is_err());
        assert!(parse_options("-c work_mem").is_err());
        assert!(parse_options("-D /data").is_err());
    }
}
