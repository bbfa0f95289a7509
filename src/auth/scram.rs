//! Server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL runs it
//! (PostgreSQL docs §55.3.1 "SASL Authentication", §55.3.2): the router
//! advertises `SCRAM-SHA-256` without channel binding, ignores the user name
//! in the client-first-message (the StartupMessage names the user) and
//! refuses an authorization identity.
//!
//! Verifiers have PostgreSQL's `pg_authid.rolpassword` format, so a secret
//! taken from `SELECT rolpassword FROM pg_authid` works unchanged.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The SASL mechanism name.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// Iterations of the verifiers derived from plaintext passwords, and of
/// mock exchanges for unknown users (PostgreSQL's default, 4096).
const MOCK_ITERATIONS: u32 = 4096;

/// A stored SCRAM-SHA-256 verifier:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` with base64
/// salt and 32-byte keys (the format of PostgreSQL's `pg_authid.rolpassword`).
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// Salt (raw bytes).
    pub salt: Vec<u8>,
    /// H(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(..)")
    }
}

impl Verifier {
    /// Parses a verifier string.
    ///
    /// Errors: a message saying which part is malformed.
    pub fn parse(s: &str) -> Result<Verifier, String> {
        let rest = s
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or("does not start with SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$').ok_or("missing '$' before the keys")?;
        let (iter, salt) = params
            .split_once(':')
            .ok_or("missing ':' between iterations and salt")?;
        let (stored, server) = keys
            .split_once(':')
            .ok_or("missing ':' between StoredKey and ServerKey")?;
        let iterations: u32 = iter
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("invalid iteration count {iter:?}"))?;
        let salt = B64
            .decode(salt)
            .map_err(|_| "salt is not valid base64".to_string())?;
        if salt.is_empty() {
            return Err("empty salt".into());
        }
        let key = |k: &str, what: &str| -> Result<[u8; 32], String> {
            B64.decode(k)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
                .ok_or_else(|| format!("{what} is not 32 bytes of base64"))
        };
        Ok(Verifier {
            iterations,
            salt,
            stored_key: key(stored, "StoredKey")?,
            server_key: key(server, "ServerKey")?,
        })
    }

    /// Derives a verifier from a plaintext password (SASLprep, random
    /// 16-byte salt, 4096 iterations; `postgres-protocol`'s encoder, as
    /// libpq's `PQencryptPasswordConn`).
    pub fn from_password(password: &str) -> Verifier {
        let s = postgres_protocol::password::scram_sha_256(password.as_bytes());
        // The encoder's output always has the parsed format.
        Verifier::parse(&s).unwrap_or(Verifier {
            iterations: MOCK_ITERATIONS,
            salt: vec![0; 16],
            stored_key: [0; 32],
            server_key: [0; 32],
        })
    }
}

/// Why a SCRAM exchange failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    /// The client's message does not follow RFC 5802 (SQLSTATE 08P01).
    #[error("malformed SCRAM message: {0}")]
    Malformed(String),
    /// The proof does not match the verifier, or the user has none
    /// (SQLSTATE 28P01).
    #[error("password authentication failed")]
    Failed,
}

fn malformed(m: impl Into<String>) -> ScramError {
    ScramError::Malformed(m.into())
}

/// One server-side exchange, between the client-first and the
/// client-final message.
pub struct ServerExchange {
    verifier: Verifier,
    /// False for a mock exchange (unknown user or no SCRAM secret): it runs
    /// like a real one and always fails at the proof.
    real: bool,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ServerExchange {
    /// Handles the client-first-message. `verifier` is the user's secret
    /// (None runs a mock exchange salted with `mock_salt`, so an unknown
    /// user cannot be told apart by the reply); `server_nonce` is fresh
    /// random bytes. Returns the exchange and the server-first-message.
    ///
    /// Errors: [`ScramError::Malformed`] (bad syntax, channel binding
    /// required by the client, authorization identity given).
    pub fn start(
        verifier: Option<&Verifier>,
        mock_salt: [u8; 16],
        client_first: &[u8],
        server_nonce: &[u8; 18],
    ) -> Result<(ServerExchange, String), ScramError> {
        let msg = std::str::from_utf8(client_first).map_err(|_| malformed("invalid UTF-8"))?;
        let (cbind, rest) = msg
            .split_once(',')
            .ok_or_else(|| malformed("missing GS2 header"))?;
        match cbind {
            "n" | "y" => {}
            c if c.starts_with("p=") => {
                return Err(malformed(
                    "the client requires channel binding (SCRAM-SHA-256-PLUS), \
                     which pg-router does not offer",
                ))
            }
            c => return Err(malformed(format!("invalid channel binding flag {c:?}"))),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or_else(|| malformed("missing GS2 header"))?;
        if !authzid.is_empty() {
            return Err(malformed(
                "client uses authorization identity, but it is not supported",
            ));
        }
        let gs2_header = msg[..cbind.len() + authzid.len() + 2].to_string();
        let mut attrs = bare.split(',');
        match attrs.next() {
            Some(a) if a.starts_with("n=") => {}
            Some(a) if a.starts_with("m=") => {
                return Err(malformed("mandatory extensions are not supported"))
            }
            _ => return Err(malformed("expected the user name attribute n=")),
        }
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or_else(|| malformed("expected the nonce attribute r="))?;
        if client_nonce.is_empty() || !client_nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(malformed("invalid client nonce"));
        }
        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let (verifier, real) = match verifier {
            Some(v) => (v.clone(), true),
            None => (
                Verifier {
                    iterations: MOCK_ITERATIONS,
                    salt: mock_salt.to_vec(),
                    stored_key: [0; 32],
                    server_key: [0; 32],
                },
                false,
            ),
        };
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        let ex = ServerExchange {
            verifier,
            real,
            gs2_header,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((ex, server_first))
    }

    /// Handles the client-final-message; on success returns the
    /// server-final-message (`v=<ServerSignature>`).
    ///
    /// Errors: [`ScramError::Malformed`] (syntax, channel-binding data or
    /// nonce not matching the first message), [`ScramError::Failed`]
    /// (wrong proof, or a mock exchange).
    pub fn finish(self, client_final: &[u8]) -> Result<String, ScramError> {
        let msg = std::str::from_utf8(client_final).map_err(|_| malformed("invalid UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or_else(|| malformed("missing the proof attribute p="))?;
        let mut attrs = without_proof.split(',');
        let cbind = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or_else(|| malformed("expected the channel binding attribute c="))?;
        if B64.decode(cbind).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(malformed(
                "channel binding data does not match the GS2 header",
            ));
        }
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or_else(|| malformed("expected the nonce attribute r="))?;
        if nonce != self.nonce {
            return Err(malformed("nonce does not match"));
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
            .ok_or_else(|| malformed("the proof is not 32 bytes of base64"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for (i, k) in client_key.iter_mut().enumerate() {
            *k = proof[i] ^ client_signature[i];
        }
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        if !(constant_time_eq(&stored, &self.verifier.stored_key) && self.real) {
            return Err(ScramError::Failed);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut m = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    m.update(data);
    m.finalize().into_bytes().into()
}

/// Compares two byte strings in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// Runs a full exchange with `postgres-protocol`'s client (the one
    /// tokio-postgres uses) against the server side.
    fn exchange(verifier: Option<&Verifier>, password: &str) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let (ex, first) = ServerExchange::start(verifier, [7; 16], client.message(), &[9; 18])?;
        client
            .update(first.as_bytes())
            .expect("client accepts server-first");
        let fin = ex.finish(client.message())?;
        client
            .finish(fin.as_bytes())
            .map_err(|e| malformed(format!("client rejects server-final: {e}")))
    }

    #[test]
    fn full_exchange_with_the_libpq_compatible_client() {
        let v = Verifier::from_password("s3cret pass");
        assert_eq!(exchange(Some(&v), "s3cret pass"), Ok(()));
        assert_eq!(exchange(Some(&v), "wrong"), Err(ScramError::Failed));
        // Mock exchange: the right message flow, always a failure.
        assert_eq!(exchange(None, "s3cret pass"), Err(ScramError::Failed));
    }

    #[test]
    fn verifier_text_round_trip() {
        let v = Verifier::from_password("foobar");
        let text = format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            v.iterations,
            B64.encode(&v.salt),
            B64.encode(v.stored_key),
            B64.encode(v.server_key)
        );
        assert_eq!(Verifier::parse(&text).unwrap(), v);
        for bad in [
            "md5abc",
            "SCRAM-SHA-256$4096:c2FsdA==",
            "SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$x:c2FsdA==$AAAA:AAAA",
        ] {
            assert!(Verifier::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_messages() {
        let v = Verifier::from_password("pw");
        let start = |m: &str| ServerExchange::start(Some(&v), [0; 16], m.as_bytes(), &[1; 18]);
        assert!(start("n,,n=,r=abc").is_ok());
        assert!(start("y,,n=,r=abc").is_ok());
        for bad in [
            "",
            "n",
            "p=tls-server-end-point,,n=,r=abc",
            "n,a=admin,n=,r=abc",
            "n,,r=abc",
            "n,,n=,r=",
            "n,,m=x,n=,r=abc",
            "x,,n=,r=abc",
        ] {
            assert!(
                matches!(start(bad), Err(ScramError::Malformed(_))),
                "{bad:?}"
            );
        }
        let (ex, first) = start("n,,n=,r=abc").unwrap();
        let nonce = first.split(',').next().unwrap().to_string();
        let proof = B64.encode([0u8; 32]);
        // Wrong channel-binding data, then a nonce that is not ours.
        let bad_cb = format!("c=eSws,{nonce},p={proof}");
        assert!(matches!(
            ex.finish(bad_cb.as_bytes()),
            Err(ScramError::Malformed(_))
        ));
        let (ex, _) = start("n,,n=,r=abc").unwrap();
        assert!(matches!(
            ex.finish(format!("c=biws,r=abcX,p={proof}").as_bytes()),
            Err(ScramError::Malformed(_))
        ));
        let (ex, _) = start("n,,n=,r=abc").unwrap();
        assert_eq!(
            ex.finish(format!("c=biws,{nonce},p={proof}").as_bytes()),
            Err(ScramError::Failed)
        );
        let (ex, _) = start("n,,n=,r=abc").unwrap();
        assert!(matches!(
            ex.finish(format!("c=biws,{nonce},p=short").as_bytes()),
            Err(ScramError::Malformed(_))
        ));
    }
}
