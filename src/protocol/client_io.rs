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
    /// While a response is redirected: the frames written from this
    /// offset of `buf` on go there instead of to the client as they are.
    redirect: Option<(usize, Redirect)>,
    /// Redirects suspended by a nested capture (a subquery run while the
    /// rows of an enclosing one are kept), innermost last.
    suspended: Vec<Redirect>,
}

/// Where redirected response frames go.
enum Redirect {
    /// Turned into COPY messages (a merged `COPY (query) TO STDOUT`).
    Copy(CopyOutEncoder),
    /// Kept for the router (the rows of an `INSERT ... SELECT`), up to a
    /// byte limit; past it only the count of bytes is kept.
    Capture {
        frames: BytesMut,
        limit: usize,
        seen: usize,
    },
}

impl ClientOut {
    /// Wraps the connection's write half.
    pub fn new(w: ClientWrite) -> Self {
        ClientOut {
            w,
            buf: BytesMut::with_capacity(16 * 1024),
            redirect: None,
            suspended: Vec::new(),
        }
    }

    /// From now on, the SELECT response frames written are sent as COPY
    /// TO STDOUT data encoded by `enc` (until [`ClientOut::end_copy_out`]).
    pub fn begin_copy_out(&mut self, enc: CopyOutEncoder) {
        self.redirect = Some((self.buf.len(), Redirect::Copy(enc)));
    }

    /// Ends what [`ClientOut::begin_copy_out`] started: the frames still
    /// buffered are encoded.
    pub fn end_copy_out(&mut self) {
        self.redirect_pending();
        self.redirect = None;
    }

    /// From now on, the frames written are kept, not sent, up to `limit`
    /// bytes (until [`ClientOut::end_capture`]).
    pub fn begin_capture(&mut self, limit: usize) {
        let r = Redirect::Capture {
            frames: BytesMut::new(),
            limit,
            seen: 0,
        };
        // Nested: what was written so far goes to the enclosing redirect,
        // which resumes at end_capture.
        self.redirect_pending();
        if let Some((_, outer)) = self.redirect.take() {
            self.suspended.push(outer);
        }
        self.redirect = Some((self.buf.len(), r));
    }

    /// Ends what [`ClientOut::begin_capture`] started: the frames written
    /// since, or Err with their byte count when they exceeded the limit.
    pub fn end_capture(&mut self) -> Result<BytesMut, usize> {
        self.redirect_pending();
        let ended = self.redirect.take();
        self.redirect = self.suspended.pop().map(|r| (self.buf.len(), r));
        match ended {
            Some((
                _,
                Redirect::Capture {
                    frames,
                    limit,
                    seen,
                },
            )) if seen <= limit => Ok(frames),
            Some((_, Redirect::Capture { seen, .. })) => Err(seen),
            _ => Ok(BytesMut::new()),
        }
    }

    fn redirect_pending(&mut self) {
        let Some((from, r)) = &mut self.redirect else {
            return;
        };
        if *from < self.buf.len() {
            let tail = self.buf.split_off(*from);
            match r {
                Redirect::Copy(enc) => enc.translate(&tail, &mut self.buf),
                Redirect::Capture {
                    frames,
                    limit,
                    seen,
                } => {
                    *seen += tail.len();
                    if *seen <= *limit {
                        frames.extend_from_slice(&tail);
                    }
                }
            }
        }
        *from = self.buf.len();
    }

    /// Writes everything buffered.
    pub async fn flush(&mut self) -> Result<(), ProtocolError> {
        self.redirect_pending();
        if !self.buf.is_empty() {
            self.w.write_all(&self.buf).await?;
            // TLS buffers records: push them to the socket.
            self.w.flush().await?;
            self.buf.clear();
            if let Some((from, _)) = &mut self.redirect {
                *from = 0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_captures_resume_the_enclosing_one() {
        let mut out = ClientOut::new(Box::new(tokio::io::sink()));
        out.buf.extend_from_slice(b"sent");
        out.begin_capture(100);
        out.buf.extend_from_slice(b"outer1 ");
        out.begin_capture(3);
        out.buf.extend_from_slice(b"inner");
        // The inner one went past its limit: only its size is kept.
        assert_eq!(out.end_capture(), Err(5));
        out.buf.extend_from_slice(b"outer2");
        assert_eq!(out.end_capture().as_deref(), Ok(&b"outer1 outer2"[..]));
        out.buf.extend_from_slice(b" again");
        assert_eq!(&out.buf[..], b"sent again");
    }
}
