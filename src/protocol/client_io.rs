//! The client socket's write side: a buffer flushed at ReadyForQuery, on
//! Flush, or when it grows past [`CLIENT_FLUSH_BYTES`].

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::protocol::ProtocolError;

/// Output buffered beyond this many bytes is written out immediately.
pub const CLIENT_FLUSH_BYTES: usize = 64 * 1024;

/// The client connection's read side: a TCP read half, or the read half of
/// a TLS stream.
pub type ClientRead = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// The client connection's write side (TCP or TLS).
pub type ClientWrite = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// Buffered writer to the client.
pub struct ClientOut {
    w: ClientWrite,
    /// Pending bytes (whole protocol frames).
    pub buf: BytesMut,
}

impl ClientOut {
    /// Wraps the connection's write half.
    pub fn new(w: ClientWrite) -> Self {
        ClientOut {
            w,
            buf: BytesMut::with_capacity(16 * 1024),
        }
    }

    /// Writes everything buffered.
    pub async fn flush(&mut self) -> Result<(), ProtocolError> {
        if !self.buf.is_empty() {
            self.w.write_all(&self.buf).await?;
            // TLS buffers records: push them to the socket.
            self.w.flush().await?;
            self.buf.clear();
        }
        Ok(())
    }
}
