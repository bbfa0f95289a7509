//! Client authentication data: the `[auth]` configuration, the user
//! database built from it (config entries + a PgBouncer-style users file),
//! and the checks the front end runs (`client/auth.rs` speaks the
//! protocol). Methods follow PostgreSQL's `pg_hba.conf` semantics:
//! `trust`, `md5` (a SCRAM secret makes it use SCRAM, as PostgreSQL does)
//! and `scram-sha-256` (PostgreSQL docs §21.5 "Password Authentication").

pub mod scram;
pub mod users_file;

use std::collections::HashMap;
use std::path::PathBuf;

use md5::{Digest, Md5};
use serde::Deserialize;

pub use scram::Verifier;

/// How a user proves who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AuthMethod {
    /// No password.
    #[serde(rename = "trust")]
    Trust,
    /// MD5 challenge-response (or SCRAM when the user's secret is a SCRAM
    /// verifier).
    #[serde(rename = "md5")]
    Md5,
    /// SCRAM-SHA-256 (RFC 7677).
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
}

impl std::fmt::Display for AuthMethod {
    /// The config spelling (`trust`, `md5`, `scram-sha-256`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthMethod::Trust => "trust",
            AuthMethod::Md5 => "md5",
            AuthMethod::ScramSha256 => "scram-sha-256",
        })
    }
}

/// The `[auth]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Method for users without their own; default `scram-sha-256`.
    #[serde(default = "default_method")]
    pub method: AuthMethod,
    /// PgBouncer `userlist.txt`-style file: one `"user" "secret"` per line
    /// (the config loader, `config::RouterConfig::load`, makes a relative
    /// path relative to the config file).
    #[serde(default)]
    pub users_file: Option<PathBuf>,
    /// Users declared in the config (they override users-file entries).
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Users allowed into the admin console (database `pgrouter`); they
    /// authenticate like everyone else. Empty = no admin console.
    #[serde(default)]
    pub admin_users: Vec<String>,
}

/// One `[[auth.users]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// User name as given in the StartupMessage.
    pub name: String,
    /// A SCRAM-SHA-256 verifier (`SCRAM-SHA-256$...`), an MD5 hash
    /// (`md5` + 32 hex digits of md5(password || user)) or a plaintext
    /// password. Not needed for `method = "trust"`.
    #[serde(default)]
    pub password: Option<String>,
    /// This user's method, overriding `auth.method`.
    #[serde(default)]
    pub method: Option<AuthMethod>,
}

fn default_method() -> AuthMethod {
    AuthMethod::ScramSha256
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            method: default_method(),
            users_file: None,
            users: Vec::new(),
            admin_users: Vec::new(),
        }
    }
}

impl AuthConfig {
    /// Everyone may connect without a password (`pg-router dev`, tests).
    pub fn trust() -> AuthConfig {
        AuthConfig {
            method: AuthMethod::Trust,
            ..AuthConfig::default()
        }
    }
}

/// Errors building the user database.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// The users file could not be read.
    #[error("cannot read users file {path}: {source}")]
    Read {
        /// File path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// An entry is invalid; `at` names the config key or file line.
    #[error("invalid auth entry {at}: {message}")]
    Entry {
        /// e.g. `auth.users[2]` or `users.txt:7`.
        at: String,
        /// What is wrong.
        message: String,
    },
    /// Password methods are configured but no user can log in.
    #[error(
        "auth.method is \"{0}\" but no users are configured (auth.users or auth.users_file); \
         every client would be refused"
    )]
    NoUsers(AuthMethod),
}

/// A user's stored secrets (derived at load time from a plaintext password).
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// SCRAM-SHA-256 verifier.
    pub scram: Option<Verifier>,
    /// `md5` + hex md5(password || user).
    pub md5: Option<String>,
}

impl Secrets {
    /// Parses a secret as stored in the config or users file.
    ///
    /// Errors: a malformed `SCRAM-SHA-256$` verifier.
    pub fn parse(user: &str, secret: &str) -> Result<Secrets, String> {
        if secret.starts_with("SCRAM-SHA-256$") {
            return Ok(Secrets {
                scram: Some(Verifier::parse(secret)?),
                md5: None,
            });
        }
        if is_md5_hash(secret) {
            return Ok(Secrets {
                scram: None,
                md5: Some(secret.to_ascii_lowercase()),
            });
        }
        Ok(Secrets {
            scram: Some(Verifier::from_password(secret)),
            md5: Some(postgres_protocol::password::md5(secret.as_bytes(), user)),
        })
    }
}

fn is_md5_hash(s: &str) -> bool {
    s.len() == 35 && s.starts_with("md5") && s[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// One user of the database.
#[derive(Debug, Clone, Default)]
pub struct User {
    /// Stored secrets.
    pub secrets: Secrets,
    /// Method override.
    pub method: Option<AuthMethod>,
}

/// What the front end must ask a connecting user for.
#[derive(Debug)]
pub enum Challenge<'a> {
    /// Nothing: AuthenticationOk at once.
    Trust,
    /// MD5: compare with this stored hash (None: a mock exchange that fails).
    Md5(Option<&'a str>),
    /// SCRAM-SHA-256 with this verifier (None: a mock exchange that fails).
    Scram(Option<&'a Verifier>),
}

/// The users the router accepts, built from [`AuthConfig`].
#[derive(Debug)]
pub struct UserDb {
    method: AuthMethod,
    users: HashMap<String, User>,
    /// Users allowed into the admin console.
    admins: Vec<String>,
    /// Key for mock salts, random per process.
    mock_key: [u8; 32],
}

impl UserDb {
    /// Builds the database: the users file's entries, then `auth.users`
    /// (overriding entries of the same name).
    ///
    /// Errors: [`AuthConfigError`] naming the file line or config entry.
    pub fn load(cfg: &AuthConfig) -> Result<UserDb, AuthConfigError> {
        let mut users = HashMap::new();
        if let Some(path) = &cfg.users_file {
            let p = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read {
                path: p.clone(),
                source,
            })?;
            for (line, name, secret) in
                users_file::parse(&text).map_err(|(line, message)| AuthConfigError::Entry {
                    at: format!("{p}:{line}"),
                    message,
                })?
            {
                let secrets =
                    Secrets::parse(&name, &secret).map_err(|message| AuthConfigError::Entry {
                        at: format!("{p}:{line}"),
                        message,
                    })?;
                users.insert(
                    name,
                    User {
                        secrets,
                        method: None,
                    },
                );
            }
        }
        for (i, u) in cfg.users.iter().enumerate() {
            let at = || format!("auth.users[{i}] ({:?})", u.name);
            if u.name.is_empty() {
                return Err(AuthConfigError::Entry {
                    at: at(),
                    message: "empty user name".into(),
                });
            }
            let secrets = match &u.password {
                Some(p) => Secrets::parse(&u.name, p)
                    .map_err(|message| AuthConfigError::Entry { at: at(), message })?,
                None => Secrets::default(),
            };
            let method = u.method.unwrap_or(cfg.method);
            if method != AuthMethod::Trust && secrets.scram.is_none() && secrets.md5.is_none() {
                return Err(AuthConfigError::Entry {
                    at: at(),
                    message: format!("method \"{method}\" needs a password"),
                });
            }
            users.insert(
                u.name.clone(),
                User {
                    secrets,
                    method: u.method,
                },
            );
        }
        if cfg.method != AuthMethod::Trust && users.is_empty() {
            return Err(AuthConfigError::NoUsers(cfg.method));
        }
        let mut mock_key = [0u8; 32];
        random_bytes(&mut mock_key);
        Ok(UserDb {
            method: cfg.method,
            users,
            admins: cfg.admin_users.clone(),
            mock_key,
        })
    }

    /// Whether `user` may use the admin console (`auth.admin_users`).
    pub fn is_admin(&self, user: &str) -> bool {
        self.admins.iter().any(|a| a == user)
    }

    /// What to ask `user` for. Unknown users get a mock challenge of the
    /// default method (they fail after the exchange, indistinguishable from
    /// a wrong password), as PostgreSQL does.
    pub fn challenge(&self, user: &str) -> Challenge<'_> {
        let Some(u) = self.users.get(user) else {
            return match self.method {
                AuthMethod::Trust => Challenge::Trust,
                AuthMethod::Md5 => Challenge::Md5(None),
                AuthMethod::ScramSha256 => Challenge::Scram(None),
            };
        };
        match u.method.unwrap_or(self.method) {
            AuthMethod::Trust => Challenge::Trust,
            AuthMethod::ScramSha256 => Challenge::Scram(u.secrets.scram.as_ref()),
            // PostgreSQL: with `md5`, a SCRAM secret is checked with SCRAM.
            AuthMethod::Md5 => match (&u.secrets.scram, &u.secrets.md5) {
                (_, Some(h)) => Challenge::Md5(Some(h)),
                (Some(v), None) => Challenge::Scram(Some(v)),
                (None, None) => Challenge::Md5(None),
            },
        }
    }

    /// A salt for mock SCRAM exchanges that is stable per user name (a
    /// probing client sees the same salt on every attempt, as for a real
    /// user).
    pub fn mock_salt(&self, user: &str) -> [u8; 16] {
        let mut h = Md5::new();
        h.update(self.mock_key);
        h.update(user.as_bytes());
        h.finalize().into()
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when no user is declared.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Checks an MD5 PasswordMessage (`md5` + hex md5(stored_hex || salt)) against
/// the stored `md5...` hash (PostgreSQL docs §55.3 AuthenticationMD5Password).
pub fn md5_response_ok(stored: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let Some(inner) = stored.strip_prefix("md5") else {
        return false;
    };
    let mut h = Md5::new();
    h.update(inner.as_bytes());
    h.update(salt);
    let digest: [u8; 16] = h.finalize().into();
    let mut expected = String::with_capacity(35);
    expected.push_str("md5");
    for b in digest {
        expected.push_str(&format!("{b:02x}"));
    }
    scram::constant_time_eq(expected.as_bytes(), response)
}

/// Fills `buf` from the operating system's CSPRNG (`getrandom`), falling
/// back to the standard library's randomly keyed hasher if it is
/// unavailable.
pub fn random_bytes(buf: &mut [u8]) {
    if getrandom::fill(buf).is_ok() {
        return;
    }
    use std::hash::{BuildHasher, Hasher};
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        let v = h.finish().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(toml_text: &str) -> Result<UserDb, AuthConfigError> {
        let cfg: AuthConfig = toml::from_str(toml_text).unwrap();
        UserDb::load(&cfg)
    }

    #[test]
    fn methods_per_user() {
        let d = db(r#"
            users = [
              { name = "app", password = "pw" },
              { name = "old", password = "md5fbd4ac33ed4c6a4d5ea1f09ef0a3b2c3", method = "md5" },
              { name = "ops", method = "trust" },
              { name = "both", password = "pw", method = "md5" },
            ]
        "#)
        .unwrap();
        assert!(matches!(d.challenge("app"), Challenge::Scram(Some(_))));
        assert!(matches!(d.challenge("old"), Challenge::Md5(Some(_))));
        assert!(matches!(d.challenge("ops"), Challenge::Trust));
        assert!(matches!(d.challenge("both"), Challenge::Md5(Some(_))));
        assert!(matches!(d.challenge("nobody"), Challenge::Scram(None)));
        assert_eq!(d.mock_salt("nobody"), d.mock_salt("nobody"));
        assert_ne!(d.mock_salt("nobody"), d.mock_salt("other"));
        // md5 method with only a SCRAM verifier: SCRAM (PostgreSQL's rule).
        let v = postgres_protocol::password::scram_sha_256(b"x");
        let d = db(&format!(
            "method = \"md5\"\nusers = [{{ name = \"u\", password = \"{v}\" }}]"
        ))
        .unwrap();
        assert!(matches!(d.challenge("u"), Challenge::Scram(Some(_))));
        assert!(matches!(d.challenge("nobody"), Challenge::Md5(None)));
        // scram method with only an MD5 hash: a failing mock exchange.
        let d = db(r#"users = [{ name = "m", password = "md5fbd4ac33ed4c6a4d5ea1f09ef0a3b2c3" }]"#)
            .unwrap();
        assert!(matches!(d.challenge("m"), Challenge::Scram(None)));
    }

    #[test]
    fn config_errors_name_the_entry() {
        let e = db("").unwrap_err();
        assert!(e.to_string().contains("no users"), "{e}");
        assert!(db("method = \"trust\"").is_ok());
        let e = db(r#"users = [{ name = "a", password = "SCRAM-SHA-256$1:x" }]"#).unwrap_err();
        assert!(e.to_string().contains("auth.users[0]"), "{e}");
        let e = db(r#"users = [{ name = "a" }]"#).unwrap_err();
        assert!(e.to_string().contains("needs a password"), "{e}");
        let e = db(r#"users_file = "/nonexistent/users.txt""#).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/users.txt"), "{e}");
    }

    #[test]
    fn md5_challenge_response() {
        let stored = postgres_protocol::password::md5(b"secret", "alice");
        let salt = [1, 2, 3, 4];
        // What libpq sends: md5(md5(password || user) || salt).
        let mut h = Md5::new();
        h.update(&stored.as_bytes()[3..]);
        h.update(salt);
        let resp: String = format!(
            "md5{}",
            h.finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        assert!(md5_response_ok(&stored, salt, resp.as_bytes()));
        assert!(!md5_response_ok(&stored, [0; 4], resp.as_bytes()));
        assert!(!md5_response_ok(&stored, salt, b"md5"));
    }
}
