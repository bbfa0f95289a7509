//! A streaming reader of PostgreSQL's binary COPY format (PostgreSQL docs,
//! "COPY", § Binary Format): the 11-byte signature `PGCOPY\n\377\r\n\0`, a
//! 32-bit flags field, a 32-bit header-extension length and the extension;
//! then tuples, each a 16-bit field count followed by the fields (a 32-bit
//! length, -1 for NULL, and that many bytes); the trailer is a field count
//! of -1. All integers are big-endian.
//!
//! [`BinaryCopyReader`] takes the stream in chunks of any size and hands
//! each complete piece — header, tuple (with one chosen field, the sharding
//! key), trailer — to a callback, borrowed from its buffer (no copy). The
//! router splits a client's `COPY FROM STDIN (FORMAT binary)` with it, and a
//! split job filters a source's `COPY TO STDOUT (FORMAT binary)`.

use bytes::{Buf, BytesMut};

/// The binary COPY signature.
pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// The trailer: a field count of -1.
pub const TRAILER: [u8; 2] = [0xff, 0xff];

/// Malformed binary COPY data (the message says where).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed binary COPY data: {0}")]
pub struct FormatError(pub String);

impl From<FormatError> for super::PgError {
    /// 22P04 (bad_copy_file_format).
    fn from(e: FormatError) -> super::PgError {
        super::PgError::new(super::error::codes::BAD_COPY_FILE_FORMAT, e.to_string())
    }
}

/// One complete piece of the stream, borrowed from the reader's buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// The header: signature, flags, extension length and extension.
    Header(&'a [u8]),
    /// A tuple's bytes and its key field's value (None for NULL).
    Tuple {
        /// The whole tuple (field count included).
        data: &'a [u8],
        /// The key field's bytes.
        key: Option<&'a [u8]>,
    },
    /// The trailer.
    Trailer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Tuples,
    Done,
}

/// Feed chunks with [`BinaryCopyReader::push`]; check
/// [`BinaryCopyReader::finish`] at the end of the input.
pub struct BinaryCopyReader {
    key_field: usize,
    state: State,
    input: BytesMut,
}

impl BinaryCopyReader {
    /// A reader whose tuples carry field number `key_field` (0-based) as
    /// their key.
    pub fn new(key_field: usize) -> BinaryCopyReader {
        BinaryCopyReader {
            key_field,
            state: State::Header,
            input: BytesMut::new(),
        }
    }

    /// Consumes `chunk`, calling `each` with every piece completed; an
    /// error from `each` stops the reader with it.
    ///
    /// Errors: [`FormatError`] on a bad signature, OIDs in the flags (no
    /// longer supported by PostgreSQL), a negative extension length, a
    /// negative field count other than the trailer's, a field count not
    /// above `key_field`, a negative field length other than -1, or data
    /// after the trailer; `each`'s error as `E`.
    pub fn push<E: From<FormatError>>(
        &mut self,
        chunk: &[u8],
        mut each: impl FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.input.extend_from_slice(chunk);
        loop {
            match self.state {
                State::Header => {
                    let n = self.input.len().min(SIGNATURE.len());
                    if self.input[..n] != SIGNATURE[..n] {
                        return Err(FormatError("bad signature".into()).into());
                    }
                    if self.input.len() < 19 {
                        return Ok(());
                    }
                    let word = |at: usize| {
                        i32::from_be_bytes([
                            self.input[at],
                            self.input[at + 1],
                            self.input[at + 2],
                            self.input[at + 3],
                        ])
                    };
                    if word(11) & (1 << 16) != 0 {
                        return Err(FormatError("OIDs in the header flags".into()).into());
                    }
                    let ext = usize::try_from(word(15)).map_err(|_| {
                        FormatError(format!("header extension length {}", word(15)))
                    })?;
                    let len = 19 + ext;
                    if self.input.len() < len {
                        return Ok(());
                    }
                    each(Piece::Header(&self.input[..len]))?;
                    self.input.advance(len);
                    self.state = State::Tuples;
                }
                State::Tuples => match self.next_tuple()? {
                    None => return Ok(()),
                    Some(Tuple::Trailer) => {
                        each(Piece::Trailer)?;
                        self.input.advance(2);
                        self.state = State::Done;
                    }
                    Some(Tuple::Row { len, key }) => {
                        each(Piece::Tuple {
                            data: &self.input[..len],
                            key: key.map(|(at, n)| &self.input[at..at + n]),
                        })?;
                        self.input.advance(len);
                    }
                },
                State::Done => {
                    if self.input.is_empty() {
                        return Ok(());
                    }
                    return Err(FormatError("data after the trailer".into()).into());
                }
            }
        }
    }

    /// Ends the input.
    ///
    /// Errors: [`FormatError`] when the input stopped before the trailer.
    pub fn finish(&self) -> Result<(), FormatError> {
        if self.state == State::Done && self.input.is_empty() {
            Ok(())
        } else {
            Err(FormatError(format!(
                "the data ended before the trailer ({} bytes of an incomplete {})",
                self.input.len(),
                if self.state == State::Header {
                    "header"
                } else {
                    "tuple"
                }
            )))
        }
    }

    /// The next complete tuple at the start of the input: its length and
    /// the key field's offset and length (None for NULL); None when more
    /// input is needed.
    fn next_tuple(&self) -> Result<Option<Tuple>, FormatError> {
        let b = &self.input[..];
        if b.len() < 2 {
            return Ok(None);
        }
        let fields = i16::from_be_bytes([b[0], b[1]]);
        if fields == -1 {
            return Ok(Some(Tuple::Trailer));
        }
        if fields < 0 || fields as usize <= self.key_field {
            return Err(FormatError(format!(
                "a tuple of {fields} fields has no field {}",
                self.key_field + 1
            )));
        }
        let mut at = 2usize;
        let mut key = None;
        for i in 0..fields as usize {
            if b.len() < at + 4 {
                return Ok(None);
            }
            let n = i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            at += 4;
            let n = match n {
                -1 => None,
                n if n < 0 => return Err(FormatError(format!("field length {n}"))),
                n => Some(n as usize),
            };
            if i == self.key_field {
                key = n.map(|n| (at, n));
            }
            at += n.unwrap_or(0);
        }
        if b.len() < at {
            return Ok(None);
        }
        Ok(Some(Tuple::Row { len: at, key }))
    }
}

enum Tuple {
    Trailer,
    Row {
        len: usize,
        key: Option<(usize, usize)>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(rows: &[Option<i32>], flags: i32) -> Vec<u8> {
        let mut s = SIGNATURE.to_vec();
        s.extend_from_slice(&flags.to_be_bytes());
        s.extend_from_slice(&4i32.to_be_bytes());
        s.extend_from_slice(b"ext!");
        for r in rows {
            s.extend_from_slice(&2i16.to_be_bytes());
            s.extend_from_slice(&3i32.to_be_bytes());
            s.extend_from_slice(b"abc");
            match r {
                Some(k) => {
                    s.extend_from_slice(&4i32.to_be_bytes());
                    s.extend_from_slice(&k.to_be_bytes());
                }
                None => s.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        s.extend_from_slice(&TRAILER);
        s
    }

    /// Kind, length and key of a piece.
    type Seen = (char, usize, Option<Vec<u8>>);

    /// What the reader saw of `data` fed in chunks of `chunk` bytes.
    fn pieces(data: &[u8], chunk: usize) -> Result<Vec<Seen>, FormatError> {
        let mut r = BinaryCopyReader::new(1);
        let mut out = Vec::new();
        for c in data.chunks(chunk) {
            r.push::<FormatError>(c, |p| {
                out.push(match p {
                    Piece::Header(h) => ('h', h.len(), None),
                    Piece::Tuple { data, key } => ('t', data.len(), key.map(<[u8]>::to_vec)),
                    Piece::Trailer => ('e', 2, None),
                });
                Ok(())
            })?;
        }
        r.finish()?;
        Ok(out)
    }

    #[test]
    fn pieces_in_any_chunking() {
        let data = stream(&[Some(7), None, Some(-1)], 0);
        for chunk in [1, 2, 3, 7, 19, data.len()] {
            let p = pieces(&data, chunk).expect("valid stream");
            assert_eq!(
                p,
                vec![
                    ('h', 23, None),
                    ('t', 2 + 7 + 8, Some(7i32.to_be_bytes().to_vec())),
                    ('t', 2 + 7 + 4, None),
                    ('t', 2 + 7 + 8, Some((-1i32).to_be_bytes().to_vec())),
                    ('e', 2, None),
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn malformed_streams_are_errors() {
        let mut bad = stream(&[], 0);
        bad[3] = b'X';
        assert!(pieces(&bad, 4).unwrap_err().0.contains("signature"));
        assert!(pieces(&stream(&[], 1 << 16), 64)
            .unwrap_err()
            .0
            .contains("OIDs"));
        let mut cut = stream(&[Some(1)], 0);
        cut.truncate(cut.len() - 4);
        assert!(pieces(&cut, 5).unwrap_err().0.contains("ended before"));
        let mut more = stream(&[Some(1)], 0);
        more.push(0);
        assert!(pieces(&more, 5)
            .unwrap_err()
            .0
            .contains("after the trailer"));
        let mut one = SIGNATURE.to_vec();
        one.extend_from_slice(&[0; 8]);
        one.extend_from_slice(&1i16.to_be_bytes());
        one.extend_from_slice(&(-1i32).to_be_bytes());
        assert!(pieces(&one, 64).unwrap_err().0.contains("no field 2"));
    }
}
