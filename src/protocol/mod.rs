//! PostgreSQL frontend/backend protocol v3 framing and the messages the
//! router itself decodes or synthesizes (PostgreSQL docs §55.7 "Message
//! Formats").
//!
//! The data path keeps messages as raw frames ([`Frame`]): a type byte, a
//! big-endian `i32` length that counts itself, and a body. Frames are
//! forwarded byte for byte; only what routing and state tracking need is
//! decoded ([`frontend`] for client messages, [`backend`] for the few backend
//! messages the router inspects).

pub mod backend;
pub mod client_io;
pub mod copy_binary;
pub mod copy_out;
pub mod error;
pub mod frame;
pub mod frontend;
pub mod synth;

pub use error::{PgError, ProtocolError};
pub use frame::{Frame, FrameReader};
