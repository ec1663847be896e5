//! Pure newline framer with a persistent reassembly buffer. Runs on each
//! per-socket reader thread (see `reader`).
//!
//! The guest writes newline-terminated JSON, but a stream socket hands us
//! arbitrary chunks: several messages coalesced, or one split at any byte. The
//! framer keeps the unfinished tail between reads so that every split of the
//! same byte stream yields the same frames. Memory is bounded: a line longer
//! than `max_line` is reported once and then skipped without being buffered.

/// One unit the framer found in the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line without its terminating `'\n'`; never empty.
    Line(Vec<u8>),
    /// A line grew beyond the limit. `len` is the number of bytes seen when
    /// that was detected, which is always `max_line + 1`: detecting at a fixed
    /// point keeps the output independent of how the stream was split.
    TooLong { len: usize },
}

/// Splits a byte stream into lines of at most `max_line` bytes.
#[derive(Debug, Clone)]
pub struct LineFramer {
    buf: Vec<u8>,
    max_line: usize,
    /// True while skipping the rest of an over-long line up to its `'\n'`.
    discarding: bool,
}

impl LineFramer {
    pub fn new(max_line: usize) -> Self {
        LineFramer {
            buf: Vec::new(),
            max_line,
            discarding: false,
        }
    }

    /// Appends bytes; pushes every complete line (without the '\n') to `out`.
    /// Empty lines are skipped. A line that grows beyond `max_line` bytes is
    /// reported once as `TooLong` and then discarded up to and including its
    /// next '\n' without buffering it.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Frame>) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let newline = rest.iter().position(|&b| b == b'\n');
            if self.discarding {
                match newline {
                    Some(i) => {
                        self.discarding = false;
                        rest = &rest[i + 1..];
                        continue;
                    }
                    None => return,
                }
            }
            let seg_len = newline.unwrap_or(rest.len());
            if self.buf.len() + seg_len > self.max_line {
                out.push(Frame::TooLong {
                    len: self.max_line + 1,
                });
                self.buf.clear();
                match newline {
                    Some(i) => rest = &rest[i + 1..],
                    None => {
                        self.discarding = true;
                        return;
                    }
                }
                continue;
            }
            self.buf.extend_from_slice(&rest[..seg_len]);
            match newline {
                Some(i) => {
                    if !self.buf.is_empty() {
                        out.push(Frame::Line(self.buf.clone()));
                        // clear() rather than take() keeps the allocation for
                        // the next line, so steady state does one copy per line.
                        self.buf.clear();
                    }
                    rest = &rest[i + 1..];
                }
                None => return,
            }
        }
    }

    /// Bytes of an unfinished line currently held (never more than `max_line`).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const INIT: &[u8] = b"\n{\"version\":3,\"revision\":1,\"msg_type\":\"init\",\"sequence\":1,\"invocation_id\":1804289383,\"name\":\"peer-vm\",\"heartbeat_interval_ms\":1000,\"vote_secs\":9,\"shutdown_notice_secs\":9,\"suspend_notice_secs\":9,\"resume_notice_secs\":14,\"restart_secs\":601,\"corrective_action\":\"reboot\"}\n";
    const EXIT: &[u8] =
        b"\n{\"version\":3,\"revision\":1,\"msg_type\":\"exit\",\"sequence\":18,\"log_msg\":\"Exiting...\"}\n";

    fn frame_all(max: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut f = LineFramer::new(max);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, &mut out);
            assert!(f.buffered() <= max);
        }
        out
    }

    fn line(s: &[u8]) -> Frame {
        Frame::Line(s.to_vec())
    }

    #[test]
    fn coalesced_messages() {
        let out = frame_all(100, &[b"a\nbb\nccc\n"]);
        assert_eq!(out, vec![line(b"a"), line(b"bb"), line(b"ccc")]);
    }

    #[test]
    fn split_at_every_byte() {
        let data = b"hello\nworld\n";
        let chunks: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(
            frame_all(100, &chunks),
            vec![line(b"hello"), line(b"world")]
        );
        for cut in 0..=data.len() {
            let (a, b) = data.split_at(cut);
            assert_eq!(
                frame_all(100, &[a, b]),
                vec![line(b"hello"), line(b"world")]
            );
        }
    }

    #[test]
    fn empty_lines_skipped() {
        assert_eq!(frame_all(10, &[b"\n\n\nx\n\n"]), vec![line(b"x")]);
    }

    #[test]
    fn partial_line_stays_buffered() {
        let mut f = LineFramer::new(10);
        let mut out = Vec::new();
        f.push(b"abc", &mut out);
        assert!(out.is_empty());
        assert_eq!(f.buffered(), 3);
        f.push(b"d\n", &mut out);
        assert_eq!(out, vec![line(b"abcd")]);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn garbage_then_good_line() {
        let out = frame_all(100, &[b"\x00\xff{not json\n{\"ok\":1}\n"]);
        assert_eq!(out, vec![line(b"\x00\xff{not json"), line(b"{\"ok\":1}")]);
    }

    #[test]
    fn exactly_max_is_fine() {
        assert_eq!(frame_all(4, &[b"abcd\n"]), vec![line(b"abcd")]);
        assert_eq!(
            frame_all(4, &[b"abcde\nok\n"]),
            vec![Frame::TooLong { len: 5 }, line(b"ok")]
        );
    }

    #[test]
    fn over_long_line_discarded_with_bounded_memory() {
        let mut f = LineFramer::new(16);
        let mut out = Vec::new();
        f.push(b"start", &mut out);
        // A megabyte without a newline, fed in pieces, must not be buffered.
        for _ in 0..1024 {
            f.push(&[b'x'; 1024], &mut out);
            assert!(f.buffered() <= 16);
        }
        assert_eq!(out, vec![Frame::TooLong { len: 17 }]);
        f.push(b"tail\nnext\n", &mut out);
        assert_eq!(out, vec![Frame::TooLong { len: 17 }, line(b"next")]);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn golden_frames() {
        let out = frame_all(4096, &[INIT, EXIT]);
        assert_eq!(
            out,
            vec![
                line(&INIT[1..INIT.len() - 1]),
                line(&EXIT[1..EXIT.len() - 1])
            ]
        );
        let mut both = INIT.to_vec();
        both.extend_from_slice(EXIT);
        let chunks: Vec<&[u8]> = both.chunks(7).collect();
        assert_eq!(frame_all(4096, &chunks), out);
        // The init message is longer than 128 bytes, the exit one is not.
        assert_eq!(
            frame_all(128, &[&both]),
            vec![Frame::TooLong { len: 129 }, line(&EXIT[1..EXIT.len() - 1])]
        );
    }

    proptest! {
        #[test]
        fn any_split_gives_same_frames(
            data in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'a'), Just(b'{'), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..20),
            max in 1usize..40,
        ) {
            let whole = frame_all(max, &[&data]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut start = 0;
            for c in cuts {
                chunks.push(&data[start..c]);
                start = c;
            }
            chunks.push(&data[start..]);
            prop_assert_eq!(frame_all(max, &chunks), whole);
        }
    }
}
