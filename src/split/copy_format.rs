//! A streaming filter over PostgreSQL's binary COPY format (read by
//! [`crate::protocol::copy_binary`]): [`BinaryCopyFilter`] takes the
//! source's `COPY … TO STDOUT (FORMAT binary)` output in chunks of any
//! size, and passes on the header, the tuples whose field `key_field` a
//! caller-supplied predicate keeps, and the trailer — byte for byte, ready
//! for `COPY … FROM STDIN (FORMAT binary)`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::copy_binary::{BinaryCopyReader, Piece};
pub use crate::protocol::copy_binary::{FormatError, SIGNATURE};

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
    reader: BinaryCopyReader,
    output: BytesMut,
    counts: FilterCounts,
}

impl BinaryCopyFilter {
    /// A filter keeping tuples by their field number `key_field` (0-based).
    pub fn new(key_field: usize) -> BinaryCopyFilter {
        BinaryCopyFilter {
            reader: BinaryCopyReader::new(key_field),
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
    /// Errors: the reader's [`FormatError`]s (see
    /// [`BinaryCopyReader::push`]); the predicate's error as `E`.
    pub fn push<E: From<FormatError>>(
        &mut self,
        chunk: &[u8],
        mut keep: impl FnMut(Option<&[u8]>) -> Result<bool, E>,
    ) -> Result<(), E> {
        let (output, counts) = (&mut self.output, &mut self.counts);
        self.reader.push(chunk, |p| {
            match p {
                Piece::Header(h) => output.extend_from_slice(h),
                Piece::Trailer => output.put_i16(-1),
                Piece::Tuple { data, key } => {
                    counts.rows_read += 1;
                    if keep(key)? {
                        counts.rows_kept += 1;
                        counts.bytes_kept += data.len() as u64;
                        output.extend_from_slice(data);
                    }
                }
            }
            Ok(())
        })
    }

    /// Ends the input.
    ///
    /// Errors: [`FormatError`] when the input stopped before the trailer.
    pub fn finish(&self) -> Result<(), FormatError> {
        self.reader.finish()
    }
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
