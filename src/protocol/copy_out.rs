//! COPY TO STDOUT data written by the router itself: a merged multi-shard
//! `COPY (SELECT ...) TO STDOUT` runs as a SELECT whose RowDescription,
//! DataRows and CommandComplete are turned into CopyOutResponse, CopyData
//! and CopyDone + `COPY n` (PostgreSQL protocol docs §55.2.6 and §55.7),
//! each row encoded as PostgreSQL's COPY TO encodes it
//! (src/backend/commands/copyto.c: `CopyAttributeOutText`,
//! `CopyAttributeOutCSV`, the binary file format of the COPY docs). Text and
//! CSV rows come from text-format DataRows; a binary COPY tuple is a
//! binary-format DataRow's body as it is.

use bytes::{BufMut, BytesMut};

use super::backend::data_row;

/// COPY data format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyOutFormat {
    /// Text format.
    Text,
    /// CSV.
    Csv,
    /// Binary format.
    Binary,
}

/// The COPY options that shape the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOutOptions {
    /// Format.
    pub format: CopyOutFormat,
    /// Field delimiter byte.
    pub delimiter: u8,
    /// The string written for NULL (`\N` in text, empty in CSV by
    /// default).
    pub null: String,
    /// HEADER: a first line of column names (text and CSV).
    pub header: bool,
    /// CSV quote byte.
    pub quote: u8,
    /// CSV escape byte.
    pub escape: u8,
    /// CSV FORCE_QUOTE: `*` (every column) or these column names.
    pub force_quote: ForceQuote,
}

/// CSV columns quoted whatever their value (FORCE_QUOTE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForceQuote {
    /// None.
    None,
    /// `FORCE_QUOTE *`.
    All,
    /// The columns with these names.
    Columns(Vec<String>),
}

/// Binary COPY file header: signature, flags, no extension.
const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Turns a SELECT's response frames into COPY TO STDOUT frames.
#[derive(Debug)]
pub struct CopyOutEncoder {
    opts: CopyOutOptions,
    /// Per column: quoted whatever the value (CSV).
    forced: Vec<bool>,
}

impl CopyOutEncoder {
    /// An encoder for `opts`.
    pub fn new(opts: CopyOutOptions) -> CopyOutEncoder {
        CopyOutEncoder {
            opts,
            forced: Vec::new(),
        }
    }

    /// Rewrites the whole frames in `frames` into `out`: RowDescription →
    /// CopyOutResponse (and the header line or binary header), DataRow →
    /// CopyData, CommandComplete `SELECT n` → (binary trailer,) CopyDone
    /// and `COPY n`; anything else (errors, notices) as it is. A frame
    /// that does not decode is passed on unchanged.
    pub fn translate(&mut self, frames: &[u8], out: &mut BytesMut) {
        for frame in super::backend::frames(frames) {
            let body = frame.get(5..).unwrap_or_default();
            match frame[0] {
                b'T' => match column_names(body) {
                    Some(names) => self.begin(&names, out),
                    None => out.extend_from_slice(frame),
                },
                b'D' => match self.opts.format {
                    CopyOutFormat::Binary => copy_data(out, body),
                    _ => match data_row(body) {
                        Ok(vals) => {
                            let line = self.row(&vals);
                            copy_data(out, &line);
                        }
                        Err(_) => out.extend_from_slice(frame),
                    },
                },
                b'C' => {
                    let tag = std::str::from_utf8(body)
                        .unwrap_or("")
                        .trim_end_matches('\0');
                    let n = tag.strip_prefix("SELECT ").unwrap_or("0");
                    if self.opts.format == CopyOutFormat::Binary {
                        copy_data(out, &(-1i16).to_be_bytes());
                    }
                    out.extend_from_slice(&[b'c', 0, 0, 0, 4]);
                    let t = format!("COPY {n}");
                    out.put_u8(b'C');
                    out.put_i32(4 + t.len() as i32 + 1);
                    out.put_slice(t.as_bytes());
                    out.put_u8(0);
                }
                _ => out.extend_from_slice(frame),
            }
        }
    }

    fn begin(&mut self, names: &[String], out: &mut BytesMut) {
        let binary = self.opts.format == CopyOutFormat::Binary;
        out.put_u8(b'H');
        out.put_i32(4 + 1 + 2 + 2 * names.len() as i32);
        out.put_u8(binary as u8);
        out.put_i16(names.len() as i16);
        for _ in names {
            out.put_i16(binary as i16);
        }
        self.forced = names
            .iter()
            .map(|n| match &self.opts.force_quote {
                ForceQuote::None => false,
                ForceQuote::All => true,
                ForceQuote::Columns(c) => c.contains(n),
            })
            .collect();
        if binary {
            copy_data(out, BINARY_HEADER);
        } else if self.opts.header {
            let vals: Vec<Option<&[u8]>> = names.iter().map(|n| Some(n.as_bytes())).collect();
            let saved = std::mem::take(&mut self.forced);
            let line = self.row(&vals);
            self.forced = saved;
            copy_data(out, &line);
        }
    }

    /// One text or CSV line (with its newline) of text values.
    fn row(&self, vals: &[Option<&[u8]>]) -> Vec<u8> {
        let mut line = Vec::new();
        let single = vals.len() == 1;
        for (i, v) in vals.iter().enumerate() {
            if i > 0 {
                line.push(self.opts.delimiter);
            }
            match v {
                None => line.extend_from_slice(self.opts.null.as_bytes()),
                Some(b) if self.opts.format == CopyOutFormat::Csv => {
                    let force = self.forced.get(i).copied().unwrap_or(false);
                    self.csv_field(b, force, single, &mut line)
                }
                Some(b) => self.text_field(b, &mut line),
            }
        }
        line.push(b'\n');
        line
    }

    /// `CopyAttributeOutText`: backslash escapes for backslash, the
    /// delimiter and the control characters \b \f \n \r \t \v.
    fn text_field(&self, v: &[u8], out: &mut Vec<u8>) {
        for &c in v {
            let esc = match c {
                0x08 => Some(b'b'),
                0x0c => Some(b'f'),
                b'\n' => Some(b'n'),
                b'\r' => Some(b'r'),
                b'\t' => Some(b't'),
                0x0b => Some(b'v'),
                b'\\' => Some(b'\\'),
                c if c == self.opts.delimiter => Some(c),
                _ => None,
            };
            match esc {
                Some(e) => {
                    out.push(b'\\');
                    out.push(e);
                }
                None => out.push(c),
            }
        }
    }

    /// `CopyAttributeOutCSV`: quoted when forced, equal to the NULL string,
    /// `\.` alone in a one-column row, or holding the delimiter, the quote,
    /// CR or LF; inside quotes the quote and escape bytes are escaped.
    fn csv_field(&self, v: &[u8], force: bool, single: bool, out: &mut Vec<u8>) {
        let (q, e, d) = (self.opts.quote, self.opts.escape, self.opts.delimiter);
        let quote = force
            || v == self.opts.null.as_bytes()
            || (single && v == b"\\.")
            || v.iter()
                .any(|&c| c == d || c == q || c == b'\n' || c == b'\r');
        if !quote {
            out.extend_from_slice(v);
            return;
        }
        out.push(q);
        for &c in v {
            if c == q || c == e {
                out.push(e);
            }
            out.push(c);
        }
        out.push(q);
    }
}

/// Appends a CopyData message holding `payload` (PostgreSQL docs §55.7
/// CopyData).
pub fn copy_data(out: &mut BytesMut, payload: &[u8]) {
    out.put_u8(b'd');
    out.put_i32(4 + payload.len() as i32);
    out.put_slice(payload);
}

/// The column names of a RowDescription body.
fn column_names(body: &[u8]) -> Option<Vec<String>> {
    let n = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    let mut pos = 2;
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        let end = pos + body.get(pos..)?.iter().position(|&c| c == 0)?;
        names.push(String::from_utf8_lossy(&body[pos..end]).into_owned());
        pos = end + 1 + 18;
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(format: CopyOutFormat) -> CopyOutOptions {
        let csv = format == CopyOutFormat::Csv;
        CopyOutOptions {
            format,
            delimiter: if csv { b',' } else { b'\t' },
            null: if csv { String::new() } else { "\\N".into() },
            header: false,
            quote: b'"',
            escape: b'"',
            force_quote: ForceQuote::None,
        }
    }

    #[test]
    fn text_and_csv_fields() {
        let t = CopyOutEncoder::new(opts(CopyOutFormat::Text));
        assert_eq!(
            t.row(&[Some(b"a\tb\\c\nd"), None, Some(b"")]),
            b"a\\tb\\\\c\\nd\t\\N\t\n".to_vec()
        );
        let mut c = CopyOutEncoder::new(opts(CopyOutFormat::Csv));
        assert_eq!(
            c.row(&[
                Some(b"x,y"),
                Some(b"say \"hi\""),
                None,
                Some(b""),
                Some(b"plain")
            ]),
            b"\"x,y\",\"say \"\"hi\"\"\",,\"\",plain\n".to_vec()
        );
        assert_eq!(c.row(&[Some(b"\\.")]), b"\"\\.\"\n".to_vec());
        c.forced = vec![true];
        assert_eq!(c.row(&[Some(b"1")]), b"\"1\"\n".to_vec());
    }

    #[test]
    fn frames_become_copy_messages() {
        let mut o = opts(CopyOutFormat::Csv);
        o.header = true;
        let mut e = CopyOutEncoder::new(o);
        let mut frames = BytesMut::new();
        crate::protocol::synth::text_row_description(&mut frames, &["a", "b c"]);
        crate::protocol::synth::data_row(&mut frames, &[Some(b"1"), None]);
        crate::protocol::synth::command_complete(&mut frames, "SELECT 1");
        let mut out = BytesMut::new();
        e.translate(&frames, &mut out);
        let mut want = BytesMut::new();
        want.extend_from_slice(&[b'H', 0, 0, 0, 11, 0, 0, 2, 0, 0, 0, 0]);
        copy_data(&mut want, b"a,b c\n");
        copy_data(&mut want, b"1,\n");
        want.extend_from_slice(&[b'c', 0, 0, 0, 4]);
        crate::protocol::synth::command_complete(&mut want, "COPY 1");
        assert_eq!(out, want);
    }
}
