//! The client socket's write side: a buffer flushed at ReadyForQuery, on
//! Flush, or when it grows past [`CLIENT_FLUSH_BYTES`].

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::protocol::copy_out::CopyOutEncoder;
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
    /// While a merged `COPY (query) TO STDOUT` runs: the frames written
    /// from this offset of `buf` on are turned into COPY messages.
    copy: Option<(usize, CopyOutEncoder)>,
}

impl ClientOut {
    /// Wraps the connection's write half.
    pub fn new(w: ClientWrite) -> Self {
        ClientOut {
            w,
            buf: BytesMut::with_capacity(16 * 1024),
            copy: None,
        }
    }

    /// From now on, the SELECT response frames written are sent as COPY
    /// TO STDOUT data encoded by `enc` (until [`ClientOut::end_copy_out`]).
    pub fn begin_copy_out(&mut self, enc: CopyOutEncoder) {
        self.copy = Some((self.buf.len(), enc));
    }

    /// Ends what [`ClientOut::begin_copy_out`] started: the frames still
    /// buffered are encoded.
    pub fn end_copy_out(&mut self) {
        self.encode_copy();
        self.copy = None;
    }

    fn encode_copy(&mut self) {
        if let Some((from, enc)) = &mut self.copy {
            if *from < self.buf.len() {
                let tail = self.buf.split_off(*from);
                enc.translate(&tail, &mut self.buf);
            }
            *from = self.buf.len();
        }
    }

    /// Writes everything buffered.
    pub async fn flush(&mut self) -> Result<(), ProtocolError> {
        self.encode_copy();
        if !self.buf.is_empty() {
            self.w.write_all(&self.buf).await?;
            // TLS buffers records: push them to the socket.
            self.w.flush().await?;
            self.buf.clear();
            if let Some((from, _)) = &mut self.copy {
                *from = 0;
            }
        }
        Ok(())
    }
}
