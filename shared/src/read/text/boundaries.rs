//! Where records end in CSV or JSON-lines text, found incrementally as the text grows.

use std::ops::Range;

use crate::spec::{Format, InputSpec};

/// Record ends in text that starts at a record start: after every `\n` for line records;
/// after every `\n` outside quotes for CSV whose fields may hold newlines (the quoting
/// rules of [`crate::read::unbalanced_quotes`], kept across calls as the text grows).
pub(super) struct Boundaries {
    /// Quote handling for multiline CSV; `None` for line records.
    quotes: Option<Quotes>,
    /// Bytes of the text examined.
    pub(super) scanned: usize,
    /// Just past the last record end found (0: none yet).
    pub(super) last: usize,
    /// Records found whole that are longer than `max`.
    pub(super) long: Vec<Range<usize>>,
    max: usize,
}

#[derive(Debug, Clone, Copy)]
struct Quotes {
    delimiter: u8,
    escape: Option<u8>,
    quoted: bool,
    field_start: bool,
}

impl Boundaries {
    pub(super) fn new(input: &InputSpec, max: usize) -> Self {
        let quotes = (input.format == Format::Csv && input.csv.multiline).then_some(Quotes {
            delimiter: input.csv.delimiter,
            escape: input.csv.escape,
            quoted: false,
            field_start: true,
        });
        Boundaries {
            quotes,
            ..Boundaries::lines(max)
        }
    }

    pub(super) fn lines(max: usize) -> Self {
        Boundaries {
            quotes: None,
            scanned: 0,
            last: 0,
            long: Vec::new(),
            max,
        }
    }

    fn found(&mut self, end: usize) {
        if end - self.last > self.max {
            self.long.push(self.last..end);
        }
        self.last = end;
    }

    /// Examines `text[scanned..]`. A quote or escape as the very last byte waits for the
    /// next byte (a doubled quote) unless the text is complete.
    pub(super) fn scan(&mut self, text: &[u8], complete: bool, quote: u8) {
        self.scan_until(text, complete, quote, false);
    }

    /// Like [`Self::scan`], but stops just past the first record end it finds.
    pub(super) fn scan_to_first(&mut self, text: &[u8], complete: bool, quote: u8) {
        self.scan_until(text, complete, quote, true);
    }

    fn scan_until(&mut self, text: &[u8], complete: bool, quote: u8, first_only: bool) {
        if self.scanned >= text.len() {
            return;
        }
        let Some(mut q) = self.quotes else {
            let from = self.scanned;
            for i in memchr::memchr_iter(b'\n', &text[from..]) {
                self.found(from + i + 1);
                if first_only {
                    self.scanned = from + i + 1;
                    return;
                }
            }
            self.scanned = text.len();
            return;
        };
        let limit = text.len();
        let mut i = self.scanned;
        while i < limit {
            let b = text[i];
            if q.quoted {
                if q.escape == Some(b) && q.escape != Some(quote) {
                    if i + 1 >= limit && !complete {
                        break;
                    }
                    i += 2;
                    continue;
                }
                if b == quote {
                    if q.escape.is_none() {
                        if i + 1 >= limit && !complete {
                            break;
                        }
                        if text.get(i + 1) == Some(&quote) {
                            i += 2;
                            continue;
                        }
                    }
                    q.quoted = false;
                }
            } else if q.field_start && b == quote {
                q.quoted = true;
                q.field_start = false;
            } else {
                q.field_start = b == q.delimiter || b == b'\n' || b == b'\r';
                if b == b'\n' {
                    self.found(i + 1);
                    if first_only {
                        i += 1;
                        break;
                    }
                }
            }
            i += 1;
        }
        self.scanned = i.min(limit);
        self.quotes = Some(q);
    }

    /// The text lost its first `n` bytes.
    pub(super) fn shift(&mut self, n: usize) {
        self.scanned = self.scanned.saturating_sub(n);
        self.last = self.last.saturating_sub(n);
        for r in &mut self.long {
            r.start = r.start.saturating_sub(n);
            r.end = r.end.saturating_sub(n);
        }
    }
}
