//! A streaming filter over PostgreSQL's binary COPY format (PostgreSQL docs,
//! "COPY", § Binary Format): the 11-byte signature `PGCOPY\n\377\r\n\0`, a
//! 32-bit flags field, a 32-bit header-extension length and the extension;
//! then tuples, each a 16-bit field count followed by the fields (a 32-bit
//! length, -1 for NULL, and that many bytes); the trailer is a field count
//! of -1. All integers are big-endian.
//!
//! [`BinaryCopyFilter`] takes the source's `COPY … TO STDOUT (FORMAT
//! binary)` output in chunks of any size, and passes on the header, the
//! tuples whose field `key_field` a caller-supplied predicate keeps, and the
//! trailer — byte for byte, ready for `COPY … FROM STDIN (FORMAT binary)`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The binary COPY signature.
pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Malformed binary COPY data (the message says where).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed binary COPY data: {0}")]
pub struct FormatError(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Tuples,
    Done,
}

/// Counters of a filter run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterCounts {
    /// Tuples read.
    pub rows_read: u64,
    /// Tuples passed on.
    pub rows_kept: u64,
    /// Bytes of the tuples passed on (header and trailer excluded).
    pub bytes_kept: u64,
}

/// The filter: feed chunks with [`BinaryCopyFilter::push`], take the output
/// with [`BinaryCopyFilter::take_output`], and check [`BinaryCopyFilter::finish`]
/// at the end of the input.
pub struct BinaryCopyFilter {
    key_field: usize,
    state: State,
    input: BytesMut,
    output: BytesMut,
    counts: FilterCounts,
}

impl BinaryCopyFilter {
    /// A filter keeping tuples by their field number `key_field` (0-based).
    pub fn new(key_field: usize) -> BinaryCopyFilter {
        BinaryCopyFilter {
            key_field,
            state: State::Header,
            input: BytesMut::new(),
            output: BytesMut::new(),
            counts: FilterCounts::default(),
        }
    }

    /// Counters so far.
    pub fn counts(&self) -> FilterCounts {
        self.counts
    }

    /// Bytes waiting in the output.
    pub fn output_len(&self) -> usize {
        self.output.len()
    }

    /// Takes the output produced so far.
    pub fn take_output(&mut self) -> Bytes {
        self.output.split().freeze()
    }

    /// Consumes `chunk`; `keep(key)` decides each complete tuple, with `key`
    /// the key field's bytes (None for NULL). `keep` returning an error stops
    /// the filter with it.
    ///
    /// Errors: [`FormatError`] on a bad signature, a negative field count
    /// other than the trailer's, a field count not above `key_field`, a
    /// negative field length other than -1, or data after the trailer; the
    /// predicate's error as `E`.
    pub fn push<E: From<FormatError>>(
        &mut self,
        chunk: &[u8],
        mut keep: impl FnMut(Option<&[u8]>) -> Result<bool, E>,
    ) -> Result<(), E> {
        self.input.extend_from_slice(chunk);
        loop {
            match self.state {
                State::Header => {
                    if self.input.len() < 19 {
                        return Ok(());
                    }
                    if &self.input[..11] != SIGNATURE {
                        return Err(FormatError("bad signature".into()).into());
                    }
                    let ext = u32::from_be_bytes([
                        self.input[15],
                        self.input[16],
                        self.input[17],
                        self.input[18],
                    ]) as usize;
                    let len = 19 + ext;
                    if self.input.len() < len {
                        return Ok(());
                    }
                    self.output.extend_from_slice(&self.input[..len]);
                    self.input.advance(len);
                    self.state = State::Tuples;
                }
                State::Tuples => match self.next_tuple()? {
                    None => return Ok(()),
                    Some(Tuple::Trailer) => {
                        self.output.put_i16(-1);
                        self.input.advance(2);
                        self.state = State::Done;
                    }
                    Some(Tuple::Row { len, key }) => {
                        let key = key.map(|(at, n)| &self.input[at..at + n]);
                        self.counts.rows_read += 1;
                        if keep(key)? {
                            self.counts.rows_kept += 1;
                            self.counts.bytes_kept += len as u64;
                            self.output.extend_from_slice(&self.input[..len]);
                        }
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

    fn tuple(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut v = (fields.len() as i16).to_be_bytes().to_vec();
        for f in fields {
            match f {
                None => v.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(b) => {
                    v.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    v.extend_from_slice(b);
                }
            }
        }
        v
    }

    fn stream(tuples: &[Vec<u8>]) -> Vec<u8> {
        let mut v = SIGNATURE.to_vec();
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&3u32.to_be_bytes());
        v.extend_from_slice(b"ext");
        for t in tuples {
            v.extend_from_slice(t);
        }
        v.extend_from_slice(&(-1i16).to_be_bytes());
        v
    }

    fn run(input: &[u8], chunk: usize) -> Result<(Vec<u8>, FilterCounts), FormatError> {
        let mut f = BinaryCopyFilter::new(1);
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            f.push::<FormatError>(c, |k| Ok(k.is_some_and(|k| k[0] % 2 == 0)))?;
            out.extend_from_slice(&f.take_output());
        }
        f.finish()?;
        Ok((out, f.counts()))
    }

    #[test]
    fn keeps_tuples_by_key_in_any_chunking() {
        let a = tuple(&[Some(b"row-a"), Some(&[2]), None]);
        let b = tuple(&[Some(b"row-b"), Some(&[3]), Some(b"x")]);
        let c = tuple(&[Some(b""), None, Some(b"y")]);
        let d = tuple(&[None, Some(&[4, 0]), None]);
        let input = stream(&[a.clone(), b, c, d.clone()]);
        let want = stream(&[a.clone(), d.clone()]);
        for chunk in [1, 2, 3, 7, 19, 1000] {
            let (out, counts) = run(&input, chunk).unwrap();
            assert_eq!(out, want, "chunk {chunk}");
            assert_eq!(
                counts,
                FilterCounts {
                    rows_read: 4,
                    rows_kept: 2,
                    bytes_kept: (a.len() + d.len()) as u64
                }
            );
        }
    }

    #[test]
    fn malformed_input_is_an_error() {
        let mut bad = stream(&[]);
        bad[0] = b'X';
        assert!(run(&bad, 100).unwrap_err().0.contains("signature"));
        // A tuple without the key field.
        let short = stream(&[tuple(&[Some(b"a")])]);
        assert!(run(&short, 100).unwrap_err().0.contains("no field 2"));
        // Truncated in a tuple.
        let full = stream(&[tuple(&[Some(b"a"), Some(&[2])])]);
        let cut = &full[..full.len() - 4];
        assert!(run(cut, 5)
            .unwrap_err()
            .0
            .contains("ended before the trailer"));
        // Bad field length.
        let mut neg = stream(&[tuple(&[Some(b"a"), Some(&[2])])]);
        let at = 19 + 3 + 2;
        neg[at..at + 4].copy_from_slice(&(-7i32).to_be_bytes());
        assert!(run(&neg, 100).unwrap_err().0.contains("field length -7"));
        // Data after the trailer.
        let mut more = stream(&[]);
        more.push(0);
        assert!(run(&more, 100).unwrap_err().0.contains("after the trailer"));
    }
}
