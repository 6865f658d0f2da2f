//! CSV and JSON-lines pieces read as a stream of segments: fetched in pinned blocks,
//! decompressed on the way when the object is compressed, cut at record boundaries.
//!
//! What one reader holds is bounded by the segment size, one fetched block and the longest
//! record allowed (`input.max_record_size`), whatever the object's size or compression
//! ratio. What it fetches is bounded too: a range reads its own bytes and, past its end, at
//! most the rest of its last record; a record longer than the limit is rejected (its first
//! KiB kept) and skipped without being held. Lines are counted as the text streams by, so a
//! reject's line number costs no second read: it is known whenever the piece starts at the
//! object's start (a whole object, a compressed object, a range at offset 0). A range that
//! starts inside an object knows its byte offsets, not its lines.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use boundaries::Boundaries;
use decompress::Decompressor;

use super::csv;
use super::{Decoded, HeaderCache, LinesBefore, Origin, PendingReject, TextColumns, jsonl};
use crate::plan::Piece;
use crate::spec::{Format, InputSpec};
use crate::store::ObjectStore;
use crate::{Error, Result};

mod boundaries;
mod decompress;

/// Raw text kept of a record rejected for its size (or `input.max_record_size`, if less).
pub const OVERSIZED_RAW_BYTES: usize = 1024;

/// First read past a range's end; grown fourfold (up to a segment) until the last record
/// ends. Most records are short, so most ranges fetch only this much extra.
const FIRST_READ_AHEAD: u64 = 16 * 1024;

/// Reads one CSV or JSON-lines piece as a sequence of decoded segments.
pub struct TextReader<'a> {
    store: &'a dyn ObjectStore,
    key: String,
    etag: String,
    size: u64,
    input: &'a InputSpec,
    max_record: usize,
    segment: usize,
    source: Source,
    /// Text not yet handed out; `buf[0]` is at stream offset `buf_at`.
    buf: BytesMut,
    buf_at: u64,
    /// Lines before `buf[0]`, when the piece started at the object's start.
    lines: Option<u64>,
    /// A range's end: records starting at or past it belong to the next range.
    own_end: Option<u64>,
    eof: bool,
    phase: Phase,
    header: Option<Arc<Result<Vec<String>, String>>>,
    scan: Boundaries,
    ready: VecDeque<Decoded>,
    fetched: u64,
    records_before: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A range that starts inside the object: find its first record start.
    Seek,
    /// At the object's start of a CSV with a header: read the header line.
    Header,
    /// Hand out records.
    Records,
    /// Inside a record too long to keep: find its end.
    Skip,
    Done,
}

enum Source {
    /// The object's bytes as they are; `next` is the next offset to fetch.
    Plain { next: u64, read_ahead: u64 },
    /// A compressed object: fetched in blocks, fed to the decoder in slices.
    Compressed {
        next: u64,
        block: Bytes,
        decoder: Box<Decompressor>,
        finished: bool,
    },
}

impl<'a> TextReader<'a> {
    /// A reader of `piece` (a whole object or a byte range of an uncompressed one).
    pub async fn open(
        store: &'a dyn ObjectStore,
        piece: &Piece,
        input: &'a InputSpec,
        headers: &HeaderCache,
        segment_bytes: u64,
    ) -> Result<TextReader<'a>> {
        let key = piece.key().to_string();
        let compression = input.compression.of_key(&key);
        let decoder = Decompressor::new(compression).map_err(|e| Error::Input {
            object: key.clone(),
            message: format!("cannot start decompressing ({compression:?}): {e}"),
            source: Some(Box::new(e)),
        })?;
        let max_record = usize::try_from(input.max_record_bytes).unwrap_or(usize::MAX);
        let (start, own_end) = match piece {
            Piece::Range { start, end, .. } => (*start, Some(*end)),
            _ => (0, None),
        };
        if decoder.is_some() && start > 0 {
            return Err(Error::Input {
                object: key,
                message: "a compressed object cannot be read from the middle".into(),
                source: None,
            });
        }
        let with_header = input.format == Format::Csv && input.csv.header;
        let mut r = TextReader {
            store,
            etag: piece.etag().to_string(),
            size: piece.object_size(),
            input,
            max_record,
            segment: usize::try_from(segment_bytes.max(1)).unwrap_or(usize::MAX),
            source: match decoder {
                Some(d) => Source::Compressed {
                    next: 0,
                    block: Bytes::new(),
                    decoder: Box::new(d),
                    finished: false,
                },
                None => Source::Plain {
                    next: start.saturating_sub(1),
                    read_ahead: FIRST_READ_AHEAD,
                },
            },
            buf: BytesMut::new(),
            buf_at: start.saturating_sub(1),
            lines: (start == 0).then_some(0),
            own_end,
            eof: false,
            phase: Phase::Records,
            header: None,
            scan: Boundaries::new(input, max_record),
            ready: VecDeque::new(),
            fetched: 0,
            records_before: 0,
            key,
        };
        if start == 0 {
            r.phase = if with_header {
                Phase::Header
            } else {
                Phase::Records
            };
        } else {
            r.phase = Phase::Seek;
            if with_header {
                let h =
                    super::object_header(store, piece, &input.csv, input.max_record_bytes, headers)
                        .await?;
                r.header = Some(h.fields.clone());
                // Tiny ranges may start before the header line ends (blank lines first):
                // the header is never a record, and the line after it starts one.
                if h.end >= start {
                    r.buf_at = h.end;
                    r.source = Source::Plain {
                        next: h.end,
                        read_ahead: FIRST_READ_AHEAD,
                    };
                    r.phase = Phase::Records;
                }
            }
            if own_end.is_some_and(|e| r.buf_at >= e) {
                r.phase = Phase::Done;
            }
        }
        Ok(r)
    }

    /// Bytes fetched from the store so far.
    pub fn bytes_fetched(&self) -> u64 {
        self.fetched
    }

    /// The next decoded segment, or `None` once the piece's records are all handed out.
    pub async fn next(&mut self) -> Result<Option<Decoded>> {
        loop {
            if let Some(d) = self.ready.pop_front() {
                return Ok(Some(d));
            }
            match self.phase {
                Phase::Done => return Ok(None),
                Phase::Seek => self.seek().await?,
                Phase::Header => self.header().await?,
                Phase::Records => self.records().await?,
                Phase::Skip => self.skip().await?,
            }
        }
    }

    /// Finds the first record starting at or after the range's start: just past the first
    /// `\n` at or after `start - 1`. Never reads past the range's end to find it.
    async fn seek(&mut self) -> Result<()> {
        if let Some(i) = memchr::memchr(b'\n', &self.buf) {
            self.consume(i + 1, false);
            self.phase = if self.own_end.is_some_and(|e| self.buf_at >= e) {
                Phase::Done
            } else {
                Phase::Records
            };
            return Ok(());
        }
        let end = self.own_end.unwrap_or(self.size);
        if self.eof || self.buf_at + self.buf.len() as u64 >= end {
            self.phase = Phase::Done;
            return Ok(());
        }
        let n = self.buf.len();
        self.consume(n, false);
        self.fill().await
    }

    /// Reads the header line at the object's start (after any blank lines).
    async fn header(&mut self) -> Result<()> {
        self.strip_bom();
        match csv::header_line(&self.buf) {
            Some((start, end)) if self.buf[..end].ends_with(b"\n") || self.eof => {
                let fields = csv::header_fields(&self.buf[start..end], &self.input.csv);
                self.header = Some(Arc::new(fields));
                self.consume(end, true);
                self.phase = Phase::Records;
                Ok(())
            }
            None if self.eof => {
                self.header = Some(Arc::new(Ok(Vec::new())));
                self.phase = Phase::Records;
                Ok(())
            }
            _ if self.buf.len() > self.max_record => {
                self.header = Some(Arc::new(Err(format!(
                    "the header line is longer than input.max_record_size ({} bytes)",
                    self.max_record
                ))));
                // Its start is dropped; the line's end is found as a long record's is.
                self.scan = Boundaries::lines(self.max_record);
                self.phase = Phase::Skip;
                Ok(())
            }
            _ => self.fill().await,
        }
    }

    async fn records(&mut self) -> Result<()> {
        if self.lines == Some(0) && self.buf_at == 0 {
            self.strip_bom();
        }
        self.scan.scan(&self.buf, self.eof, self.input.csv.quote);
        if let Some(end) = self.own_end {
            let Some(end_rel) = end.checked_sub(self.buf_at).filter(|n| *n > 0) else {
                self.phase = Phase::Done;
                return Ok(());
            };
            let end_rel = end_rel as usize;
            if self.buf.len() >= end_rel {
                // The last owned record ends at the first `\n` from byte `end - 1` on.
                if let Some(i) = memchr::memchr(b'\n', &self.buf[end_rel - 1..]) {
                    self.emit(end_rel + i)?;
                    self.phase = Phase::Done;
                    return Ok(());
                }
            }
        }
        if self.buf.len() - self.scan.last > self.max_record {
            let last = self.scan.last;
            self.emit(last)?;
            // The record at `buf[0]` outgrew the limit before it ended: reject it, skip it.
            let d = self.oversized(&self.buf, self.buf_at, self.lines, None)?;
            self.ready.push_back(d);
            self.phase = Phase::Skip;
            return Ok(());
        }
        if self.eof {
            let n = self.buf.len();
            self.emit(n)?;
            self.phase = Phase::Done;
            return Ok(());
        }
        if self.buf.len() >= self.segment && self.scan.last > 0 {
            let last = self.scan.last;
            return self.emit(last);
        }
        self.fill().await
    }

    /// Past a record too long to keep: drop its bytes until its end.
    async fn skip(&mut self) -> Result<()> {
        self.scan
            .scan_to_first(&self.buf, self.eof, self.input.csv.quote);
        self.scan.long.clear();
        if self.scan.last > 0 {
            let last = self.scan.last;
            self.consume(last, true);
            self.phase = if self.own_end.is_some_and(|e| self.buf_at >= e) {
                Phase::Done
            } else {
                Phase::Records
            };
            return Ok(());
        }
        let scanned = self.scan.scanned;
        let past_end = self
            .own_end
            .is_some_and(|e| self.buf_at + scanned as u64 >= e);
        if self.eof || past_end {
            // It runs to the object's end, or past the range's end: nothing after it is
            // this range's.
            self.phase = Phase::Done;
            return Ok(());
        }
        self.consume(scanned, true);
        self.fill().await
    }

    /// Drops `buf[..n]`, keeping offsets, line counts and the scan in step.
    fn consume(&mut self, n: usize, count_lines: bool) {
        let dropped = self.buf.split_to(n);
        if count_lines {
            self.lines = self
                .lines
                .map(|l| l + memchr::memchr_iter(b'\n', &dropped).count() as u64);
        } else {
            self.lines = None;
        }
        self.buf_at += n as u64;
        self.scan.shift(n);
    }

    fn strip_bom(&mut self) {
        // A UTF-8 byte order mark belongs to the object, not to its first record.
        if self.buf_at == 0 && self.buf.starts_with(b"\xEF\xBB\xBF") {
            self.consume(3, true);
        }
    }

    /// Hands out `buf[..cut]` as decoded segments, the records in it longer than the
    /// limit as rejects.
    fn emit(&mut self, cut: usize) -> Result<()> {
        if cut == 0 {
            return Ok(());
        }
        let long: Vec<Range<usize>> = std::mem::take(&mut self.scan.long)
            .into_iter()
            .filter(|r| r.end <= cut)
            .collect();
        self.scan.long.retain(|r| r.end > cut);
        let text = self.buf.split_to(cut).freeze();
        let (at, lines) = (self.buf_at, self.lines);
        self.buf_at += cut as u64;
        self.scan.shift(cut);
        let mut pos = 0usize;
        let mut line = lines;
        for r in long.iter().chain(std::iter::once(&(cut..cut))) {
            if r.start > pos {
                let part = text.slice(pos..r.start);
                let n = memchr::memchr_iter(b'\n', &part).count() as u64;
                let d = self.decode(part, at + pos as u64, line)?;
                self.ready.push_back(d);
                line = line.map(|l| l + n);
            }
            if r.end > r.start {
                let raw = text.slice(r.start..r.end);
                let n = memchr::memchr_iter(b'\n', &raw).count() as u64;
                let d = self.oversized(&raw, at + r.start as u64, line, Some(raw.len()))?;
                self.ready.push_back(d);
                line = line.map(|l| l + n);
            }
            pos = r.end;
        }
        self.lines = line;
        Ok(())
    }

    fn oversized(
        &self,
        raw: &[u8],
        at: u64,
        line: Option<u64>,
        len: Option<usize>,
    ) -> Result<Decoded> {
        // The same prefix whether the record was found whole or outgrew the limit first.
        let keep = raw.len().min(OVERSIZED_RAW_BYTES).min(self.max_record);
        let keep = Bytes::copy_from_slice(&raw[..keep]);
        let size = match len {
            Some(n) => format!("{n} bytes long"),
            None => "longer".into(),
        };
        Ok(Decoded {
            object: self.key.clone(),
            batch: TextColumns::new(&self.input.schema).finish()?,
            origins: Vec::new(),
            rejects: vec![PendingReject {
                origin: Origin {
                    start: 0,
                    len: keep.len() as u32,
                    line: 0,
                    row: self.records_before,
                },
                rule: "max_record_size".into(),
                column: None,
                message: format!(
                    "the record is {size} than input.max_record_size ({} bytes): rejected, its first {} bytes kept",
                    self.max_record,
                    keep.len()
                ),
            }],
            text: keep,
            text_offset: Some(at),
            decompressed: matches!(self.source, Source::Compressed { .. }),
            lines_before: line.map_or(LinesBefore::Unknown, LinesBefore::Known),
            bytes_read: 0,
        })
    }

    fn decode(&mut self, text: Bytes, at: u64, lines: Option<u64>) -> Result<Decoded> {
        let schema = &self.input.schema;
        let mut d = match self.input.format {
            Format::Csv => {
                let header = self.header.clone();
                csv::decode(&text, 0, &self.input.csv, schema, header, &self.key)?
            }
            _ => jsonl::decode(&text, 0, schema, &self.key)?,
        };
        self.records_before += d.records();
        d.object = self.key.clone();
        d.text = text;
        d.text_offset = Some(at);
        d.decompressed = matches!(self.source, Source::Compressed { .. });
        d.lines_before = lines.map_or(LinesBefore::Unknown, LinesBefore::Known);
        Ok(d)
    }

    /// Appends more text to `buf`, or sets `eof`.
    async fn fill(&mut self) -> Result<()> {
        let segment = self.segment as u64;
        match &mut self.source {
            Source::Plain { next, read_ahead } => {
                if *next >= self.size {
                    self.eof = true;
                    return Ok(());
                }
                let want = match self.own_end {
                    // Inside the range: up to its end, a segment at a time.
                    Some(end) if *next < end => segment.min(end - *next),
                    // Past it: only what finishing the last record takes. That record
                    // starts before the end, so past `end + max_record` it is too long
                    // and the reading stops there (one byte more shows it).
                    Some(end) => {
                        let n = *read_ahead;
                        *read_ahead = (n * 4).min(segment.max(FIRST_READ_AHEAD));
                        let limit = end + self.max_record as u64 + 1;
                        n.min(limit.saturating_sub(*next)).max(1)
                    }
                    None => segment,
                };
                let range = *next..next.saturating_add(want).min(self.size);
                let got = fetch(self.store, &self.key, &self.etag, self.size, range).await?;
                *next += got.len() as u64;
                self.fetched += got.len() as u64;
                self.buf.extend_from_slice(&got);
                Ok(())
            }
            Source::Compressed {
                next,
                block,
                decoder,
                finished,
            } => {
                if *finished {
                    self.eof = true;
                    return Ok(());
                }
                if block.is_empty() {
                    if *next >= self.size {
                        decoder
                            .finish()
                            .map_err(|e| decompress_error(&self.key, *next, e))?;
                        self.buf.extend_from_slice(decoder.output());
                        decoder.output().clear();
                        *finished = true;
                        self.eof = true;
                        return Ok(());
                    }
                    let range = *next..next.saturating_add(segment).min(self.size);
                    *block = fetch(self.store, &self.key, &self.etag, self.size, range).await?;
                    self.fetched += block.len() as u64;
                }
                // Feed slices until a segment came out (at most a MiB) or the block is used up.
                let enough = (segment as usize).min(1 << 20);
                while !block.is_empty() && decoder.output().len() < enough {
                    let n = block.len().min(decompress::SLICE_BYTES);
                    let slice = block.split_to(n);
                    decoder
                        .write_all(&slice)
                        .map_err(|e| decompress_error(&self.key, *next, e))?;
                    *next += n as u64;
                }
                self.buf.extend_from_slice(decoder.output());
                decoder.output().clear();
                Ok(())
            }
        }
    }
}

fn decompress_error(key: &str, at: u64, e: std::io::Error) -> Error {
    Error::Input {
        object: key.to_string(),
        message: format!("cannot decompress (near compressed byte {at}): {e}"),
        source: Some(Box::new(e)),
    }
}

/// Fetches `range` of the planned version, refusing an object that shrank.
async fn fetch(
    store: &dyn ObjectStore,
    key: &str,
    etag: &str,
    size: u64,
    range: Range<u64>,
) -> Result<Bytes> {
    let got = store.get_range_if(key, range.clone(), etag).await?;
    if (got.len() as u64) < range.end - range.start {
        return Err(Error::Input {
            object: key.to_string(),
            message: format!(
                "the object shrank below the {size} bytes it had when planned: re-plan the job"
            ),
            source: None,
        });
    }
    Ok(got)
}

#[cfg(test)]
mod tests;
