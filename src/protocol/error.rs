//! Protocol-level errors and PostgreSQL error responses built by the router.

use std::fmt;

/// A failure to read or understand protocol bytes.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The peer closed the connection between messages.
    #[error("connection closed")]
    Eof,
    /// I/O error on the socket.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes do not form a valid message.
    #[error("invalid message: {0}")]
    Malformed(String),
    /// A frame longer than the configured maximum (bytes).
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced frame length in bytes.
        len: usize,
        /// Limit in bytes.
        max: usize,
    },
    /// The peer sent a FATAL or PANIC ErrorResponse: it is closing the
    /// connection (e.g. 57P01 when a server shuts down).
    #[error("{message} (SQLSTATE {code})")]
    ServerClosed {
        /// The error's SQLSTATE.
        code: String,
        /// The error's primary message.
        message: String,
    },
}

/// An error to report to the client as an ErrorResponse (PostgreSQL docs
/// §55.8 "Error and Notice Message Fields").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    /// Severity, e.g. "ERROR", "FATAL".
    pub severity: &'static str,
    /// Five-character SQLSTATE (Appendix A).
    pub code: &'static str,
    /// Primary message.
    pub message: String,
    /// Optional DETAIL.
    pub detail: Option<String>,
    /// Optional HINT.
    pub hint: Option<String>,
}

impl PgError {
    /// An ERROR with the given SQLSTATE and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        PgError {
            severity: "ERROR",
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }
    /// A FATAL error (the connection is closed after it is sent).
    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        PgError {
            severity: "FATAL",
            ..PgError::new(code, message)
        }
    }
    /// FATAL 57P01 "terminating connection due to administrator command":
    /// what PostgreSQL sends when it shuts down (router drain, PAUSE ended
    /// by a shutdown).
    pub fn admin_shutdown() -> Self {
        PgError::fatal(
            codes::ADMIN_SHUTDOWN,
            "terminating connection due to administrator command",
        )
    }
    /// Adds a DETAIL field.
    pub fn with_detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }
    /// Adds a HINT field.
    pub fn with_hint(mut self, h: impl Into<String>) -> Self {
        self.hint = Some(h.into());
        self
    }
    /// 0A000 feature_not_supported.
    pub fn unsupported(message: impl Into<String>) -> Self {
        PgError::new(codes::FEATURE_NOT_SUPPORTED, message)
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)
    }
}

impl std::error::Error for PgError {}

/// SQLSTATE codes the router raises itself (PostgreSQL docs Appendix A).
pub mod codes {
    /// feature_not_supported
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// syntax_error
    pub const SYNTAX_ERROR: &str = "42601";
    /// protocol_violation
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    /// connection_failure
    pub const CONNECTION_FAILURE: &str = "08006";
    /// in_failed_sql_transaction
    pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
    /// invalid_sql_statement_name (prepared statement does not exist)
    pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
    /// duplicate_prepared_statement
    pub const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";
    /// invalid_text_representation
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    /// invalid_parameter_value
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    /// undefined_column
    pub const UNDEFINED_COLUMN: &str = "42703";
    /// internal_error
    pub const INTERNAL_ERROR: &str = "XX000";
    /// invalid_cursor_name (portal does not exist)
    pub const INVALID_CURSOR_NAME: &str = "34000";
    /// query_canceled
    pub const QUERY_CANCELED: &str = "57014";
    /// read_only_sql_transaction (a router without its catalog lease).
    pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
    /// invalid_authorization_specification
    pub const INVALID_AUTHORIZATION: &str = "28000";
    /// numeric_value_out_of_range
    pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
    /// invalid_password
    pub const INVALID_PASSWORD: &str = "28P01";
    /// too_many_connections
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    /// idle_in_transaction_session_timeout
    pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "25P03";
    /// admin_shutdown
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// object_not_in_prerequisite_state
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
    /// crash_shutdown
    pub const CRASH_SHUTDOWN: &str = "57P02";
    /// cannot_connect_now
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    /// bad_copy_file_format
    pub const BAD_COPY_FILE_FORMAT: &str = "22P04";
    /// data_corrupted
    pub const DATA_CORRUPTED: &str = "XX001";
    /// program_limit_exceeded.
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    /// sequence_generator_limit_exceeded.
    pub const SEQUENCE_LIMIT: &str = "2200H";
    /// undefined_table.
    pub const UNDEFINED_TABLE: &str = "42P01";
}
