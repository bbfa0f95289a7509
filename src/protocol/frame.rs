//! Reading length-prefixed protocol frames from a socket without copying
//! message bodies (PostgreSQL docs §55.2.1: type byte + Int32 length).

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::ProtocolError;

/// One protocol message: `data` holds the whole frame (type byte, length,
/// body), so it can be forwarded as is.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Message type byte (e.g. `b'Q'`, `b'D'`).
    pub tag: u8,
    /// The complete frame bytes, header included.
    pub data: Bytes,
}

impl Frame {
    /// The message body (after the 5-byte header).
    pub fn body(&self) -> &[u8] {
        &self.data[5..]
    }
}

/// Buffered frame reader over any async byte stream.
///
/// Frames larger than `max_len` bytes are refused with
/// [`ProtocolError::TooLarge`] before anything is allocated for them.
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max_len: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps `inner`; `max_len` is the largest accepted frame in bytes.
    pub fn new(inner: R, max_len: usize) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(16 * 1024),
            max_len,
        }
    }

    /// Changes the largest accepted frame (e.g. a small limit before the
    /// client has authenticated, the configured one after).
    pub fn set_max_len(&mut self, max_len: usize) {
        self.max_len = max_len;
    }

    /// Bytes already buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Returns a frame only if one is completely buffered (no I/O).
    pub fn try_next(&mut self) -> Result<Option<Frame>, ProtocolError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        if len < 4 {
            return Err(ProtocolError::Malformed(format!(
                "invalid message length {len}"
            )));
        }
        let total = len as usize + 1;
        if total > self.max_len {
            return Err(ProtocolError::TooLarge {
                len: total,
                max: self.max_len,
            });
        }
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        let tag = self.buf[0];
        let data = self.buf.split_to(total).freeze();
        Ok(Some(Frame { tag, data }))
    }

    /// Reads the next frame; `Err(ProtocolError::Eof)` on a clean end of stream.
    pub async fn next(&mut self) -> Result<Frame, ProtocolError> {
        loop {
            if let Some(f) = self.try_next()? {
                return Ok(f);
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            let n = self.inner.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(if self.buf.is_empty() {
                    ProtocolError::Eof
                } else {
                    ProtocolError::Malformed("connection closed in the middle of a message".into())
                });
            }
        }
    }

    /// Bytes already read from the stream by someone else (they come
    /// before anything read from `inner`).
    pub fn push_buffered(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Reads an untyped startup-phase packet (Int32 length + body; SSLRequest,
    /// StartupMessage, CancelRequest), returning the body after the length.
    pub async fn next_startup(&mut self) -> Result<Bytes, ProtocolError> {
        loop {
            if self.buf.len() >= 4 {
                let len = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                if !(8..=10_000).contains(&len) {
                    return Err(ProtocolError::Malformed(format!(
                        "invalid startup packet length {len}"
                    )));
                }
                let len = len as usize;
                if self.buf.len() >= len {
                    let mut pkt = self.buf.split_to(len);
                    pkt.advance(4);
                    return Ok(pkt.freeze());
                }
            }
            let n = self.inner.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(ProtocolError::Eof);
            }
        }
    }

    /// The wrapped stream.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}
