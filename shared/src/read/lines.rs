//! Record ownership for byte ranges of line-oriented objects (Hadoop's LineRecordReader rule).
//!
//! A record starts at byte `p` when `p == 0` or byte `p - 1` is `\n`. The range
//! `[start, end)` owns exactly the records that start inside it: it skips to the first
//! record start at or after `start` and reads past `end` to finish its last record. So
//! ranges that tile an object read each record exactly once, wherever the cuts fall.

use std::ops::Range;

/// Where the owned records lie in a window of the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    /// Bytes `window[span]` are the owned records (possibly empty).
    Span(Range<usize>),
    /// The window ends before the last owned record does: fetch a longer window.
    NeedMore,
}

/// The window to fetch first for range `[start, end)`: one byte before `start` (to see
/// whether a record starts at `start`) to `end + overread`.
pub fn first_window(start: u64, end: u64, overread: u64, object_size: u64) -> Range<u64> {
    start.saturating_sub(1)..(end.saturating_add(overread)).min(object_size)
}

/// Finds the records owned by `[start, end)` in `window`, which holds object bytes from
/// `window_offset` (`start - 1`, or 0 when `start` is 0) up to some point.
///
/// ```
/// use fanout::read::lines::{owned, Owned};
/// let text = b"aa\nbbbb\ncc\n";
/// // Range [1, 5) starts mid-record "aa": it owns "bbbb\n" (starts at 3), read past 5.
/// assert_eq!(owned(&text[0..], 0, 1..5, text.len() as u64), Owned::Span(3..8));
/// // Range [5, 11) owns "cc\n" only.
/// assert_eq!(owned(&text[4..], 4, 5..11, text.len() as u64), Owned::Span(4..7));
/// ```
pub fn owned(window: &[u8], window_offset: u64, range: Range<u64>, object_size: u64) -> Owned {
    let window_end = window_offset + window.len() as u64;
    let at_eof = window_end >= object_size;
    // First record start p >= range.start.
    let first = if range.start == 0 {
        0usize
    } else {
        let from = (range.start - 1 - window_offset) as usize;
        match memchr::memchr(b'\n', &window[from..]) {
            Some(i) => from + i + 1,
            None if at_eof => return Owned::Span(window.len()..window.len()),
            None => return Owned::NeedMore,
        }
    };
    let first_abs = window_offset + first as u64;
    if first_abs >= range.end {
        return Owned::Span(first..first);
    }
    // The last owned record starts before range.end and runs to its `\n` (or EOF).
    let last_start_limit = (range.end - 1 - window_offset) as usize;
    let from = last_start_limit.max(first);
    match memchr::memchr(b'\n', &window[from..]) {
        Some(i) => Owned::Span(first..from + i + 1),
        None if at_eof => Owned::Span(first..window.len()),
        None => Owned::NeedMore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reads range `r` through windows that grow like the worker's do.
    fn read_range(text: &[u8], r: Range<u64>, overread: u64) -> Vec<u8> {
        let size = text.len() as u64;
        let mut extra = overread.max(1);
        loop {
            let w = first_window(r.start, r.end, extra, size);
            let window = &text[w.start as usize..w.end as usize];
            match owned(window, w.start, r.clone(), size) {
                Owned::Span(s) => return window[s].to_vec(),
                Owned::NeedMore => extra *= 2,
            }
        }
    }

    fn records(text: &[u8]) -> Vec<&[u8]> {
        text.split_inclusive(|b| *b == b'\n').collect()
    }

    proptest! {
        #[test]
        fn ranges_that_tile_an_object_read_every_record_exactly_once(
            lines in proptest::collection::vec("[a-z,\"]{0,40}", 0..60),
            trailing_newline in any::<bool>(),
            cuts in proptest::collection::vec(0usize..4000, 0..12),
            overread in 1u64..64,
        ) {
            let mut text = lines.join("\n").into_bytes();
            if trailing_newline && !text.is_empty() { text.push(b'\n'); }
            let size = text.len() as u64;
            let mut bounds: Vec<u64> = cuts.iter().map(|c| (*c as u64).min(size)).collect();
            bounds.push(0);
            bounds.push(size);
            bounds.sort();
            bounds.dedup();
            let mut read = Vec::new();
            for w in bounds.windows(2) {
                let part = read_range(&text, w[0]..w[1], overread);
                // Every piece is whole records.
                if !part.is_empty() && (w[1] < size || part.last() == Some(&b'\n')) {
                    prop_assert!(part.last() == Some(&b'\n') || read.len() + part.len() == text.len());
                }
                read.extend_from_slice(&part);
            }
            prop_assert_eq!(records(&read), records(&text));
        }
    }

    #[test]
    fn a_range_inside_one_long_record_owns_nothing() {
        let text = b"a-very-long-record\nx\n";
        assert_eq!(
            owned(&text[2..], 2, 3..10, text.len() as u64),
            Owned::Span(17..17)
        );
    }

    #[test]
    fn a_window_that_cuts_the_last_record_asks_for_more() {
        let text = b"aaaa\nbbbbbbbb\n";
        assert_eq!(
            owned(&text[..7], 0, 0..6, text.len() as u64),
            Owned::NeedMore
        );
    }
}
