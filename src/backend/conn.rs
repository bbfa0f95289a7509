//! One raw protocol v3 connection to a shard: startup, authentication
//! (trust, cleartext, MD5, SCRAM-SHA-256 via `postgres-protocol`), and frame
//! I/O (PostgreSQL docs §55.2).

use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protocol::backend::{data_row, error_fields};
use crate::protocol::frontend::Cursor;
use crate::protocol::{Frame, FrameReader, ProtocolError};

/// Largest backend frame accepted, in bytes (PostgreSQL's own limit is 1 GiB).
const MAX_BACKEND_FRAME: usize = 1 << 30;

/// Where and as whom to connect to a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardTarget {
    /// Shard name (catalog `shards.name`).
    pub name: String,
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database name.
    pub dbname: String,
    /// Role to connect as.
    pub user: String,
    /// Password for cleartext/MD5/SCRAM authentication, if the shard asks.
    pub password: Option<String>,
    /// TCP connect + startup timeout.
    pub connect_timeout: Duration,
    /// TLS with certificate verification (`backend.tls = "verify-full"`);
    /// None = plaintext.
    pub tls: Option<super::tls::BackendTls>,
    /// `application_name` of the sessions (a router's:
    /// [`router_application_name`]).
    pub application_name: String,
}

/// `application_name` of router `router_id`'s backend sessions:
/// `pg-router <router id>` (16 hex digits; [`ROUTER_SESSIONS_PATTERN`]
/// matches them), so a split job can find and end the sessions of a router
/// whose catalog lease has expired.
pub fn router_application_name(router_id: &str) -> String {
    format!("pg-router {router_id}")
}

/// PostgreSQL regular expression matching [`router_application_name`]s.
pub const ROUTER_SESSIONS_PATTERN: &str = "^pg-router [0-9a-f]{16}$";

/// A backend connection's read side (TCP or TLS).
pub type BackendRead = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
/// A backend connection's write side (TCP or TLS).
pub type BackendWrite = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// Errors talking to a shard.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// TCP connect failed or timed out.
    #[error("could not connect to shard \"{shard}\" at {addr}: {reason}")]
    Connect {
        /// Shard name.
        shard: String,
        /// host:port.
        addr: String,
        /// Cause.
        reason: String,
        /// No answer within the connect timeout (connect, TLS handshake,
        /// startup and authentication together), as opposed to a refused
        /// or failed connection: the shard may be hung, or this machine
        /// stalled.
        timed_out: bool,
    },
    /// The shard refused the startup or authentication.
    #[error("shard \"{shard}\" refused the connection: {message}")]
    Refused {
        /// Shard name.
        shard: String,
        /// The shard's error message.
        message: String,
        /// The shard's SQLSTATE.
        code: String,
    },
    /// Protocol failure after connecting.
    #[error("shard \"{shard}\": {source}")]
    Protocol {
        /// Shard name.
        shard: String,
        /// Cause.
        #[source]
        source: ProtocolError,
    },
}

impl BackendError {
    /// True for a connect that got no answer within the connect timeout
    /// ([`BackendError::Connect`] `timed_out`).
    pub fn timed_out(&self) -> bool {
        matches!(
            self,
            BackendError::Connect {
                timed_out: true,
                ..
            }
        )
    }
}

/// What [`BackendConn::read_extended`] read.
#[derive(Debug, Default)]
pub struct ExtendedReply {
    /// DataRow values as text (None = NULL).
    pub rows: Vec<Vec<Option<String>>>,
    /// ParameterDescription type OIDs, if one arrived.
    pub param_types: Vec<u32>,
    /// The ErrorResponse frame, if the shard failed.
    pub error: Option<Frame>,
}

/// A raw connection to one shard.
pub struct BackendConn {
    reader: FrameReader<BackendRead>,
    writer: BackendWrite,
    /// Messages queued for sending (encoded frames).
    pub out: BytesMut,
    /// Shard name.
    pub shard: std::sync::Arc<str>,
    /// Backend process id (from BackendKeyData).
    pub pid: i32,
    /// Cancel secret (from BackendKeyData).
    pub secret: i32,
    /// Ids of the router-named prepared statements that exist on this
    /// connection (`pgr_<id>`); foldhash, looked up on every extended
    /// batch.
    pub prepared: foldhash::HashSet<u64>,
    /// Hash of the session settings last applied (0 = server defaults).
    pub settings_hash: u64,
    /// Transaction status from the last ReadyForQuery (`b'I'`, `b'T'`, `b'E'`).
    pub status: u8,
    /// Set when the connection can no longer be trusted (I/O error, protocol
    /// desync); broken connections are dropped instead of pooled.
    pub broken: bool,
    /// ParameterStatus values reported at startup.
    pub params: Vec<(String, String)>,
}

impl BackendConn {
    /// Connects, authenticates and waits for the first ReadyForQuery.
    ///
    /// Errors: [`BackendError::Connect`] (TCP/timeout), [`BackendError::Refused`]
    /// (the shard sent an ErrorResponse, e.g. bad password),
    /// [`BackendError::Protocol`].
    pub async fn connect(t: &ShardTarget) -> Result<BackendConn, BackendError> {
        let addr = format!("{}:{}", t.host, t.port);
        let fut = async {
            let stream = TcpStream::connect(&addr)
                .await
                .map_err(|e| BackendError::Connect {
                    shard: t.name.clone(),
                    addr: addr.clone(),
                    reason: e.to_string(),
                    timed_out: false,
                })?;
            let _ = stream.set_nodelay(true);
            let (r, w): (BackendRead, BackendWrite) = match &t.tls {
                None => {
                    let (r, w) = stream.into_split();
                    (Box::new(r), Box::new(w))
                }
                Some(tls) => {
                    let s = tls.connect(stream, &t.host).await.map_err(|reason| {
                        BackendError::Connect {
                            shard: t.name.clone(),
                            addr: addr.clone(),
                            reason,
                            timed_out: false,
                        }
                    })?;
                    let (r, w) = tokio::io::split(s);
                    (Box::new(r), Box::new(w))
                }
            };
            let mut conn = BackendConn {
                reader: FrameReader::new(r, MAX_BACKEND_FRAME),
                writer: w,
                out: BytesMut::with_capacity(8192),
                shard: t.name.as_str().into(),
                pid: 0,
                secret: 0,
                prepared: foldhash::HashSet::default(),
                settings_hash: 0,
                status: b'I',
                broken: false,
                params: Vec::new(),
            };
            conn.startup(t).await?;
            Ok(conn)
        };
        match tokio::time::timeout(t.connect_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Connect {
                shard: t.name.clone(),
                addr,
                reason: format!("timed out after {} ms", t.connect_timeout.as_millis()),
                timed_out: true,
            }),
        }
    }

    fn perr(&self, source: ProtocolError) -> BackendError {
        BackendError::Protocol {
            shard: self.shard.to_string(),
            source,
        }
    }

    async fn startup(&mut self, t: &ShardTarget) -> Result<(), BackendError> {
        let params = [
            ("user", t.user.as_str()),
            ("database", t.dbname.as_str()),
            ("application_name", t.application_name.as_str()),
        ];
        frontend::startup_message(params.iter().copied(), &mut self.out)
            .map_err(|e| self.perr(e.into()))?;
        self.flush().await.map_err(|e| self.perr(e))?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let f = match self.recv().await {
                Ok(f) => f,
                // A FATAL error during startup: the shard refused us.
                Err(ProtocolError::ServerClosed { code, message }) => {
                    return Err(BackendError::Refused {
                        shard: t.name.clone(),
                        message,
                        code,
                    })
                }
                Err(e) => return Err(self.perr(e)),
            };
            match f.tag {
                b'R' => {
                    let mut c = Cursor::new(f.body());
                    let code = c.i32().map_err(|e| self.perr(e))?;
                    let password = t.password.as_deref().unwrap_or("");
                    match code {
                        0 => {}
                        3 => {
                            let mut pw = password.as_bytes().to_vec();
                            pw.push(0);
                            frontend::password_message(&pw, &mut self.out)
                                .map_err(|e| self.perr(e.into()))?;
                            self.flush().await.map_err(|e| self.perr(e))?;
                        }
                        5 => {
                            let salt = c.bytes(4).map_err(|e| self.perr(e))?;
                            let hash = postgres_protocol::authentication::md5_hash(
                                t.user.as_bytes(),
                                password.as_bytes(),
                                [salt[0], salt[1], salt[2], salt[3]],
                            );
                            let mut pw = hash.into_bytes();
                            pw.push(0);
                            frontend::password_message(&pw, &mut self.out)
                                .map_err(|e| self.perr(e.into()))?;
                            self.flush().await.map_err(|e| self.perr(e))?;
                        }
                        10 => {
                            let s = ScramSha256::new(
                                password.as_bytes(),
                                ChannelBinding::unsupported(),
                            );
                            frontend::sasl_initial_response(
                                SCRAM_SHA_256,
                                s.message(),
                                &mut self.out,
                            )
                            .map_err(|e| self.perr(e.into()))?;
                            self.flush().await.map_err(|e| self.perr(e))?;
                            scram = Some(s);
                        }
                        11 | 12 => {
                            let data = &f.body()[4..];
                            let s = scram.as_mut().ok_or_else(|| {
                                self.perr(ProtocolError::Malformed(
                                    "SASL continue without SASL start".into(),
                                ))
                            })?;
                            if code == 11 {
                                s.update(data).map_err(|e| self.perr(e.into()))?;
                                frontend::sasl_response(s.message(), &mut self.out)
                                    .map_err(|e| self.perr(e.into()))?;
                                self.flush().await.map_err(|e| self.perr(e))?;
                            } else {
                                s.finish(data).map_err(|e| self.perr(e.into()))?;
                            }
                        }
                        other => {
                            return Err(BackendError::Refused {
                                shard: t.name.clone(),
                                message: format!("unsupported authentication method {other}"),
                                code: "28000".into(),
                            })
                        }
                    }
                }
                b'S' => {
                    let mut c = Cursor::new(f.body());
                    if let (Ok(k), Ok(v)) = (c.cstr(), c.cstr()) {
                        self.params.push((k.to_string(), v.to_string()));
                    }
                }
                b'K' => {
                    let mut c = Cursor::new(f.body());
                    self.pid = c.i32().map_err(|e| self.perr(e))?;
                    self.secret = c.i32().map_err(|e| self.perr(e))?;
                }
                b'E' => {
                    let fields = error_fields(f.body()).unwrap_or_default();
                    let get = |c: u8| {
                        fields
                            .iter()
                            .find(|(k, _)| *k == c)
                            .map(|(_, v)| v.to_string())
                    };
                    return Err(BackendError::Refused {
                        shard: t.name.clone(),
                        message: get(b'M').unwrap_or_default(),
                        code: get(b'C').unwrap_or_else(|| "08006".into()),
                    });
                }
                b'Z' => {
                    self.status = f.body().first().copied().unwrap_or(b'I');
                    return Ok(());
                }
                _ => {}
            }
        }
    }

    /// Sends everything queued in [`BackendConn::out`].
    pub async fn flush(&mut self) -> Result<(), ProtocolError> {
        if !self.out.is_empty() {
            let mut r = self.writer.write_all(&self.out).await;
            if r.is_ok() {
                // TLS buffers records: push them to the socket.
                r = self.writer.flush().await;
            }
            self.out.clear();
            if let Err(e) = r {
                self.broken = true;
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Receives the next frame. A FATAL/PANIC ErrorResponse (the shard is
    /// closing the connection, e.g. 57P01 at shutdown) is returned as
    /// [`ProtocolError::ServerClosed`] and marks the connection broken.
    pub async fn recv(&mut self) -> Result<Frame, ProtocolError> {
        let r = self.reader.next().await;
        self.checked(r)
    }

    /// [`BackendConn::recv`] without I/O: the next frame if it is already
    /// completely buffered (None if not), with the same checks. Lets a
    /// caller that reads many frames skip the async machinery for the ones
    /// that arrived together.
    pub fn try_recv(&mut self) -> Result<Option<Frame>, ProtocolError> {
        match self.reader.try_next() {
            Ok(None) => Ok(None),
            Ok(Some(f)) => self.checked(Ok(f)).map(Some),
            Err(e) => self.checked(Err(e)).map(Some),
        }
    }

    /// A received frame (or read error) as [`BackendConn::recv`] returns
    /// it: FATAL/PANIC errors and read errors mark the connection broken.
    fn checked(&mut self, r: Result<Frame, ProtocolError>) -> Result<Frame, ProtocolError> {
        match r {
            Ok(f) if f.tag == b'E' => match server_closed(f.body()) {
                Some(e) => {
                    self.broken = true;
                    Err(e)
                }
                None => Ok(f),
            },
            Ok(f) => Ok(f),
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }

    /// Runs `sql` with the simple protocol and returns its rows as text
    /// (control-plane helper; not for the data path). A shard error is
    /// returned as `Err(Ok((sqlstate, message)))`.
    pub async fn simple_rows(
        &mut self,
        sql: &str,
    ) -> Result<Result<Vec<Vec<Option<String>>>, (String, String)>, ProtocolError> {
        frontend::query(sql, &mut self.out)?;
        self.flush().await?;
        let (rows, err) = self.read_simple().await?;
        Ok(match err {
            None => Ok(rows),
            Some(f) => {
                let fields = error_fields(f.body())?;
                let get = |c: u8| {
                    fields
                        .iter()
                        .find(|(k, _)| *k == c)
                        .map(|(_, v)| v.to_string())
                        .unwrap_or_default()
                };
                Err((get(b'C'), get(b'M')))
            }
        })
    }

    /// Reads one simple-query response up to ReadyForQuery (recording the
    /// transaction status): its rows as text, and its first ErrorResponse
    /// frame if any. Notices are dropped.
    pub async fn read_simple(
        &mut self,
    ) -> Result<(Vec<Vec<Option<String>>>, Option<Frame>), ProtocolError> {
        let mut rows = Vec::new();
        let mut err = None;
        loop {
            let f = self.recv().await?;
            match f.tag {
                b'D' => rows.push(text_row(f.body())?),
                b'E' => {
                    err.get_or_insert(f);
                }
                b'Z' => {
                    self.status = f.body().first().copied().unwrap_or(b'I');
                    return Ok((rows, err));
                }
                _ => {}
            }
        }
    }

    /// Reads the responses to router-injected extended-protocol messages
    /// sent without Sync, up to and including the first frame tagged `end`
    /// (e.g. `b'3'` CloseComplete, `b'n'`/`b'T'` after a Describe), or the
    /// first ErrorResponse, after which the shard discards messages until
    /// Sync (PostgreSQL docs §55.2.3). Notices are dropped.
    pub async fn read_extended(&mut self, end: &[u8]) -> Result<ExtendedReply, ProtocolError> {
        let mut reply = ExtendedReply::default();
        loop {
            let f = self.recv().await?;
            match f.tag {
                b'D' => reply.rows.push(text_row(f.body())?),
                b't' => {
                    let mut c = Cursor::new(f.body());
                    let n = c.count()?;
                    for _ in 0..n {
                        reply.param_types.push(c.i32()? as u32);
                    }
                }
                b'E' => {
                    reply.error = Some(f);
                    return Ok(reply);
                }
                t if end.contains(&t) => return Ok(reply),
                _ => {}
            }
        }
    }

    /// True if an idle connection can no longer be used: the shard closed
    /// it or sent something unasked (e.g. FATAL 57P01 when it shut down).
    /// One non-blocking poll of the read side, which looks only at what the
    /// reactor already saw (no syscall while the socket has not become
    /// readable), so it is cheap enough for every checkout.
    pub fn is_stale(&mut self) -> bool {
        if self.broken || self.reader.buffered() > 0 {
            return true;
        }
        // One poll with a no-op waker: Pending = nothing arrived.
        let mut b = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut b);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let r = std::pin::Pin::new(self.reader.get_mut()).poll_read(&mut cx, &mut buf);
        !r.is_pending()
    }

    /// Sends Terminate (best effort) before dropping.
    pub async fn terminate(mut self) {
        frontend::terminate(&mut self.out);
        let _ = self.flush().await;
    }
}

/// [`ProtocolError::ServerClosed`] if an ErrorResponse body has severity
/// FATAL or PANIC (field `V`, else `S`; PostgreSQL docs §55.8).
fn server_closed(body: &[u8]) -> Option<ProtocolError> {
    let fields = error_fields(body).ok()?;
    let get = |c: u8| fields.iter().find(|(k, _)| *k == c).map(|(_, v)| *v);
    let severity = get(b'V').or_else(|| get(b'S'))?;
    if severity != "FATAL" && severity != "PANIC" {
        return None;
    }
    Some(ProtocolError::ServerClosed {
        code: get(b'C').unwrap_or("08006").to_string(),
        message: get(b'M').unwrap_or("").to_string(),
    })
}

/// A DataRow body's values as text (router-injected queries use text
/// results; None = NULL).
fn text_row(body: &[u8]) -> Result<Vec<Option<String>>, ProtocolError> {
    Ok(data_row(body)?
        .into_iter()
        .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
        .collect())
}

/// Asks `target`'s postmaster to cancel the query running on the backend
/// with process id `pid` and secret key `secret` (CancelRequest, PostgreSQL
/// docs §55.2.8: a new connection carrying only the 16-byte request). Best
/// effort: the server sends no reply; errors are returned for logging.
pub async fn cancel_request(target: &ShardTarget, pid: i32, secret: i32) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let connect = tokio::net::TcpStream::connect((target.host.as_str(), target.port));
    let mut s = tokio::time::timeout(target.connect_timeout, connect)
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "cancel request: connect timed out",
            )
        })??;
    let mut msg = [0u8; 16];
    msg[..4].copy_from_slice(&16i32.to_be_bytes());
    msg[4..8].copy_from_slice(&80877102i32.to_be_bytes());
    msg[8..12].copy_from_slice(&pid.to_be_bytes());
    msg[12..].copy_from_slice(&secret.to_be_bytes());
    s.write_all(&msg).await?;
    s.shutdown().await
}
