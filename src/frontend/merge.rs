//! Combining the responses of several shards into one client response for
//! statements that need no merging at the router: the first shard's
//! response (DDL, SET), or concatenated rows with summed command-tag counts
//! (plain scatter, multi-shard DML, COPY TO). Sorting, grouping and
//! aggregation are done by the gather executor (`gather.rs`).

use bytes::{Bytes, BytesMut};

use crate::protocol::backend::{command_tag, tag_count};
use crate::protocol::{synth, Frame};

use super::exchange::Sink;

/// How shard responses combine.
#[derive(Debug, Clone)]
pub enum MergeMode {
    /// Identical statements (DDL, SET, writes to reference tables): the
    /// first shard's response is forwarded (its command tag too, row count
    /// included), the others only checked for errors.
    FirstOnly,
    /// Rows of every shard are forwarded; tag counts added.
    Concat,
}

/// Accumulated state of a scatter-gather over several shards.
pub struct MergeState {
    mode: MergeMode,
    tag: Option<(String, u64, bool)>,
    first_error: Option<Bytes>,
    /// Shard names, for error details.
    pub shard_names: Vec<String>,
    /// COPY TO: skip the first CopyData of every shard but the first (CSV
    /// header line).
    pub copy_header: bool,
    copy_done: bool,
    copy_rows_seen: Vec<bool>,
}

impl MergeState {
    /// A merge of the given mode.
    pub fn new(mode: MergeMode) -> Self {
        MergeState {
            mode,
            tag: None,
            first_error: None,
            shard_names: Vec::new(),
            copy_header: false,
            copy_done: false,
            copy_rows_seen: Vec::new(),
        }
    }

    /// A sink for the responses of shard number `index` (0 = first).
    pub fn sink(&mut self, index: usize) -> ShardSink<'_> {
        ShardSink {
            st: self,
            first: index == 0,
            shard: index,
        }
    }

    /// The merged command tag's row count (`UPDATE n` → n), if it has one.
    pub fn row_count(&self) -> Option<u64> {
        match &self.tag {
            Some((_, n, true)) => Some(*n),
            _ => None,
        }
    }

    /// Writes the merged result (rows for aggregates, then the command tag),
    /// or the first error, to `out`. Returns true on success.
    pub fn finish(&mut self, out: &mut BytesMut) -> bool {
        if let Some(e) = self.first_error.take() {
            crate::metrics::note_error_body(e.get(5..).unwrap_or_default());
            out.extend_from_slice(&e);
            return false;
        }
        if self.copy_done {
            out.extend_from_slice(&[b'c', 0, 0, 0, 4]);
        }
        if let Some((head, n, counted)) = &self.tag {
            if *counted {
                synth::command_complete(out, &format!("{head} {n}"));
            } else {
                synth::command_complete(out, head);
            }
        }
        true
    }

    fn on_tag(&mut self, f: &Frame) {
        let Ok(tag) = command_tag(f.body()) else {
            return;
        };
        match (&mut self.tag, tag_count(tag)) {
            (None, Some((h, n))) => self.tag = Some((h.to_string(), n, true)),
            (None, None) => self.tag = Some((tag.to_string(), 0, false)),
            (Some((_, total, true)), Some((_, n))) => *total += n,
            _ => {}
        }
    }
}

/// Per-shard view of a [`MergeState`].
pub struct ShardSink<'a> {
    st: &'a mut MergeState,
    first: bool,
    shard: usize,
}

impl Sink for ShardSink<'_> {
    /// Held back as the first error; counted when `finish` writes it.
    fn error(&mut self, out: &mut BytesMut, f: &Frame) {
        self.frame(out, f);
    }
    fn frame(&mut self, out: &mut BytesMut, f: &Frame) {
        match f.tag {
            b'E' => {
                if self.st.first_error.is_none() {
                    self.st.first_error = Some(with_shard_detail(
                        f,
                        self.st.shard_names.get(self.shard).map(String::as_str),
                    ));
                }
            }
            // FirstOnly: one shard's row count (each shard wrote its own
            // copy of the same rows), not the sum.
            b'C' if self.first || matches!(self.st.mode, MergeMode::Concat) => self.st.on_tag(f),
            b'C' => {}
            b'd' => {
                if self.st.copy_rows_seen.len() <= self.shard {
                    self.st.copy_rows_seen.resize(self.shard + 1, false);
                }
                let seen = std::mem::replace(&mut self.st.copy_rows_seen[self.shard], true);
                if self.first || !self.st.copy_header || seen {
                    out.extend_from_slice(&f.data);
                }
            }
            b'c' => self.st.copy_done = true,
            b'D' => match self.st.mode {
                MergeMode::Concat => out.extend_from_slice(&f.data),
                MergeMode::FirstOnly => {
                    if self.first {
                        out.extend_from_slice(&f.data)
                    }
                }
            },
            _ => {
                if self.first {
                    out.extend_from_slice(&f.data);
                }
            }
        }
    }
    fn synth(&mut self, out: &mut BytesMut, b: &[u8]) {
        if self.first {
            out.extend_from_slice(b);
        }
    }
}

/// Re-encodes an ErrorResponse adding "shard: NAME" to its DETAIL (or as
/// DETAIL when it has none), keeping every other field unchanged.
pub(crate) fn with_shard_detail(f: &Frame, shard: Option<&str>) -> Bytes {
    let Some(shard) = shard else {
        return f.data.clone();
    };
    let Ok(fields) = crate::protocol::backend::error_fields(f.body()) else {
        return f.data.clone();
    };
    let mut body = Vec::with_capacity(f.data.len() + 32);
    let mut had_detail = false;
    for (code, val) in &fields {
        body.push(*code);
        if *code == b'D' {
            had_detail = true;
            body.extend_from_slice(format!("{val} (shard: {shard})").as_bytes());
        } else {
            body.extend_from_slice(val.as_bytes());
        }
        body.push(0);
    }
    if !had_detail {
        body.push(b'D');
        body.extend_from_slice(format!("shard: {shard}").as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(b'E');
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(&body);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> Frame {
        let mut b = BytesMut::new();
        synth::command_complete(&mut b, s);
        Frame {
            tag: b'C',
            data: b.freeze(),
        }
    }

    fn merged(mode: MergeMode, tags: &[&str]) -> BytesMut {
        let mut st = MergeState::new(mode);
        let mut out = BytesMut::new();
        for (i, t) in tags.iter().enumerate() {
            st.sink(i).frame(&mut out, &tag(t));
        }
        assert!(st.finish(&mut out));
        out
    }

    #[test]
    fn first_only_keeps_the_first_count_concat_adds() {
        let mut want = BytesMut::new();
        synth::command_complete(&mut want, "UPDATE 3");
        assert_eq!(
            merged(MergeMode::FirstOnly, &["UPDATE 3", "UPDATE 3"]),
            want
        );
        let mut want = BytesMut::new();
        synth::command_complete(&mut want, "INSERT 0 5");
        assert_eq!(
            merged(MergeMode::Concat, &["INSERT 0 2", "INSERT 0 3"]),
            want
        );
    }
}
