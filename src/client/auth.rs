//! Client authentication on the wire, after the StartupMessage and before
//! AuthenticationOk (PostgreSQL docs §55.2.1, §55.3): MD5 challenge
//! (AuthenticationMD5Password / PasswordMessage) and SASL SCRAM-SHA-256
//! (AuthenticationSASL / SASLInitialResponse / AuthenticationSASLContinue /
//! SASLResponse / AuthenticationSASLFinal). Nothing reaches a shard before
//! this succeeds.

use bytes::Bytes;
use pgwire::messages::startup::Authentication;
use pgwire::messages::Message;
use tokio::io::AsyncRead;

use crate::auth::scram::{ScramError, ServerExchange, MECHANISM};
use crate::auth::{md5_response_ok, random_bytes, Challenge, UserDb};
use crate::protocol::error::codes;
use crate::protocol::frontend::Cursor;
use crate::protocol::{FrameReader, PgError, ProtocolError};

use crate::protocol::client_io::ClientOut;

/// Largest authentication message accepted before the client has
/// authenticated, in bytes (PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH).
pub const MAX_AUTH_MESSAGE_BYTES: usize = 65_535;

/// Why authentication did not succeed.
#[derive(Debug)]
pub enum AuthFailure {
    /// Send this FATAL error and close (28P01, 28000, 08P01).
    Refused(PgError),
    /// The client went away (psql does this to prompt for a password).
    Gone,
}

impl From<ProtocolError> for AuthFailure {
    fn from(e: ProtocolError) -> Self {
        match e {
            ProtocolError::Eof | ProtocolError::Io(_) => AuthFailure::Gone,
            e => AuthFailure::Refused(PgError::fatal(codes::PROTOCOL_VIOLATION, e.to_string())),
        }
    }
}

fn password_failed(user: &str) -> AuthFailure {
    AuthFailure::Refused(PgError::fatal(
        codes::INVALID_PASSWORD,
        format!("password authentication failed for user \"{user}\""),
    ))
}

fn violation(m: impl Into<String>) -> AuthFailure {
    AuthFailure::Refused(PgError::fatal(codes::PROTOCOL_VIOLATION, m))
}

/// Authenticates `user` as `db` says. On success nothing is written yet
/// (the caller sends AuthenticationOk with the rest of the startup reply).
///
/// Errors: [`AuthFailure::Refused`] with 28P01 for a wrong password or an
/// unknown user (after a full mock exchange, as PostgreSQL does), 08P01
/// for malformed messages; [`AuthFailure::Gone`] if the client hangs up.
pub async fn authenticate<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    out: &mut ClientOut,
    db: &UserDb,
    user: &str,
) -> Result<(), AuthFailure> {
    match db.challenge(user) {
        Challenge::Trust => Ok(()),
        Challenge::Md5(stored) => {
            let mut salt = [0u8; 4];
            random_bytes(&mut salt);
            send(out, Authentication::MD5Password(salt.to_vec())).await?;
            let body = password_message(reader).await?;
            let mut c = Cursor::new(&body);
            let response = c.cstr().map_err(|e| violation(e.to_string()))?;
            match stored {
                Some(h) if md5_response_ok(h, salt, response.as_bytes()) => Ok(()),
                _ => Err(password_failed(user)),
            }
        }
        Challenge::Scram(verifier) => {
            send(out, Authentication::SASL(vec![MECHANISM.to_string()])).await?;
            let body = password_message(reader).await?;
            let mut c = Cursor::new(&body);
            let mechanism = c.cstr().map_err(|e| violation(e.to_string()))?;
            if mechanism != MECHANISM {
                return Err(violation(format!(
                    "client selected an invalid SASL authentication mechanism {mechanism:?}"
                )));
            }
            let len = c.i32().map_err(|e| violation(e.to_string()))?;
            let first = usize::try_from(len)
                .ok()
                .and_then(|n| c.bytes(n).ok())
                .ok_or_else(|| violation("malformed SASLInitialResponse"))?;
            let mut nonce = [0u8; 18];
            random_bytes(&mut nonce);
            let (exchange, server_first) =
                ServerExchange::start(verifier, db.mock_salt(user), first, &nonce)
                    .map_err(|e| scram_failure(e, user))?;
            send(out, Authentication::SASLContinue(server_first.into())).await?;
            let body = password_message(reader).await?;
            let server_final = exchange.finish(&body).map_err(|e| scram_failure(e, user))?;
            // AuthenticationSASLFinal goes out with AuthenticationOk.
            let _ = Authentication::SASLFinal(server_final.into()).encode(&mut out.buf);
            Ok(())
        }
    }
}

fn scram_failure(e: ScramError, user: &str) -> AuthFailure {
    match e {
        ScramError::Failed => password_failed(user),
        ScramError::Malformed(_) => violation(e.to_string()),
    }
}

async fn send(out: &mut ClientOut, m: Authentication) -> Result<(), AuthFailure> {
    // Encoding only fails past pgwire's size limits, far above these.
    let _ = m.encode(&mut out.buf);
    out.flush().await.map_err(|_| AuthFailure::Gone)
}

/// Reads the client's next message, which must be a PasswordMessage /
/// SASL response ('p'); returns its body.
async fn password_message<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
) -> Result<Bytes, AuthFailure> {
    let f = reader.next().await?;
    if f.tag != b'p' {
        // 'X' (Terminate) is a client giving up.
        if f.tag == b'X' {
            return Err(AuthFailure::Gone);
        }
        return Err(violation(format!(
            "expected a password response, got message type {:?}",
            f.tag as char
        )));
    }
    Ok(f.data.slice(5..))
}
