//! The client socket's write side: a buffer flushed at ReadyForQuery, on
//! Flush, or when it grows past [`CLIENT_FLUSH_BYTES`].

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

use crate::protocol::ProtocolError;

/// Output buffered beyond this many bytes is written out immediately.
pub const CLIENT_FLUSH_BYTES: usize = 64 * 1024;

/// Buffered writer to the client.
pub struct ClientOut {
    w: OwnedWriteHalf,
    /// Pending bytes (whole protocol frames).
    pub buf: BytesMut,
}

impl ClientOut {
    /// Wraps the socket's write half.
    pub fn new(w: OwnedWriteHalf) -> Self {
        ClientOut {
            w,
            buf: BytesMut::with_capacity(16 * 1024),
        }
    }

    /// Writes everything buffered.
    pub async fn flush(&mut self) -> Result<(), ProtocolError> {
        if !self.buf.is_empty() {
            self.w.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }
}
