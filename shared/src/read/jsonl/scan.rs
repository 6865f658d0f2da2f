//! One pass over a JSON line that is a flat object: the schema's fields located, the
//! whole line checked against JSON's grammar, nothing allocated.
//!
//! [`Scanner::scan`] answers `true` only for a line it fully understands: one object
//! whose keys have no escapes, whose schema fields hold a string, a number, `true`,
//! `false` or `null`, and whose other fields hold any valid JSON, nested to any depth
//! (skipped without recursion). Every string is checked as JSON defines it (no raw
//! control character, only the defined escapes, `\u` surrogates in pairs). For anything
//! else — invalid JSON, an escaped key, a lone surrogate, an object or array in a schema
//! field — it answers `false` and the caller reads the line the general way, which finds
//! and explains the problem or reads the rare valid line it covers. The line must be
//! valid UTF-8 (the caller checks it), so string bytes need no further check.

use std::collections::HashMap;

use arrow::datatypes::Schema;

/// A schema field's value in one line; offsets are into the line (32 bits: a line is at
/// most `input.max_record_size`, 1 GiB, and longer ones are not scanned). Small, so that
/// filling one stays in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// The key is absent.
    Missing,
    /// `null`.
    Null,
    /// `true`.
    True,
    /// `false`.
    False,
    /// A number: its text.
    Number(u32, u32),
    /// A string: the text between its quotes, and whether it holds an escape.
    Str(u32, u32, bool),
}

/// Locates the schema's fields in lines; reused from line to line.
pub(super) struct Scanner {
    /// Each field's name, when it can be matched byte for byte against a key's raw text
    /// (no quote, backslash or control character in it).
    names: Vec<Option<Box<[u8]>>>,
    /// Field index by name.
    index: HashMap<Box<[u8]>, usize>,
    /// Open containers of a skipped value (`true`: an object), reused.
    stack: Vec<bool>,
}

/// Bytes of eight copies of `b`.
const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

/// The index of the first byte from `i` on that is not JSON whitespace.
#[inline(always)]
fn ws(s: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\r' | b'\n') = s.get(i) {
        i += 1;
    }
    i
}

impl Scanner {
    pub(super) fn new(schema: &Schema) -> Scanner {
        let plain = |n: &[u8]| !n.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20);
        Scanner {
            names: schema
                .fields()
                .iter()
                .map(|f| {
                    let n = f.name().as_bytes();
                    plain(n).then(|| n.into())
                })
                .collect(),
            index: schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| (f.name().as_bytes().into(), i))
                .collect(),
            stack: Vec::new(),
        }
    }

    /// Fills `slots` (one per schema field) from `line`; `false` when the line is not a
    /// flat object this scanner reads (see the module docs). Duplicate keys: the last wins.
    pub(super) fn scan(&mut self, s: &[u8], slots: &mut [Slot]) -> bool {
        slots.fill(Slot::Missing);
        u32::try_from(s.len()).is_ok() && self.object(s, slots).is_some()
    }

    fn object(&mut self, s: &[u8], slots: &mut [Slot]) -> Option<()> {
        let mut i = ws(s, 0);
        if s.get(i) != Some(&b'{') {
            return None;
        }
        i = ws(s, i + 1);
        if s.get(i) == Some(&b'}') {
            return (ws(s, i + 1) == s.len()).then_some(());
        }
        // Keys usually come in the schema's order: try the field after the last one found
        // before looking the key up.
        let mut next = 0;
        loop {
            if s.get(i) != Some(&b'"') {
                return None;
            }
            i += 1;
            let field = match self.names.get(next) {
                Some(Some(name)) if key_at(s, i, name) => {
                    i += name.len() + 1;
                    Some(next)
                }
                _ => {
                    let (end, escaped) = string(s, i)?;
                    if escaped {
                        return None;
                    }
                    let key = &s[i..end];
                    i = end + 1;
                    self.index.get(key).copied()
                }
            };
            i = ws(s, i);
            if s.get(i) != Some(&b':') {
                return None;
            }
            i = ws(s, i + 1);
            match field {
                Some(k) => {
                    slots[k] = scalar(s, &mut i)?;
                    next = k + 1;
                }
                None => i = self.skip(s, i)?,
            }
            i = ws(s, i);
            match s.get(i) {
                Some(b',') => i = ws(s, i + 1),
                Some(b'}') => return (ws(s, i + 1) == s.len()).then_some(()),
                _ => return None,
            }
        }
    }

    /// Skips the valid JSON value at `i` (any depth, without recursion): the index after it.
    fn skip(&mut self, s: &[u8], mut i: usize) -> Option<usize> {
        self.stack.clear();
        loop {
            // A value starts at `i`.
            match s.get(i)? {
                b'{' => {
                    i = ws(s, i + 1);
                    if s.get(i) == Some(&b'}') {
                        i += 1;
                    } else {
                        self.stack.push(true);
                        i = key(s, i)?;
                        continue;
                    }
                }
                b'[' => {
                    i = ws(s, i + 1);
                    if s.get(i) == Some(&b']') {
                        i += 1;
                    } else {
                        self.stack.push(false);
                        continue;
                    }
                }
                _ => {
                    scalar(s, &mut i)?;
                }
            }
            // A value ended at `i`: close what it ends.
            loop {
                let Some(&in_object) = self.stack.last() else {
                    return Some(i);
                };
                i = ws(s, i);
                match (s.get(i)?, in_object) {
                    (b',', true) => {
                        i = key(s, ws(s, i + 1))?;
                        break;
                    }
                    (b',', false) => {
                        i = ws(s, i + 1);
                        break;
                    }
                    (b'}', true) | (b']', false) => {
                        i += 1;
                        self.stack.pop();
                    }
                    _ => return None,
                }
            }
        }
    }
}

/// Whether `s[i..]` starts with `name` and its closing quote. By words rather than a
/// `memcmp` call: names are short, and this runs for every key of every line.
#[inline(always)]
fn key_at(s: &[u8], i: usize, name: &[u8]) -> bool {
    let Some(text) = s.get(i..i + name.len() + 1) else {
        return false;
    };
    let (text, quote) = text.split_at(name.len());
    let (mut a, mut b) = (text, name);
    while let (Some((x, ra)), Some((y, rb))) =
        (a.split_first_chunk::<8>(), b.split_first_chunk::<8>())
    {
        if x != y {
            return false;
        }
        (a, b) = (ra, rb);
    }
    a.iter().zip(b).all(|(x, y)| x == y) && quote == b"\""
}

/// A key, its colon and the whitespace after it, starting at its opening quote: the index
/// of its value.
fn key(s: &[u8], i: usize) -> Option<usize> {
    if s.get(i) != Some(&b'"') {
        return None;
    }
    let (end, _) = string(s, i + 1)?;
    let i = ws(s, end + 1);
    (s.get(i) == Some(&b':')).then(|| ws(s, i + 1))
}

/// The scalar value at `*i`, which moves past it; `None` for an object, an array or
/// anything invalid.
#[inline(always)]
fn scalar(s: &[u8], i: &mut usize) -> Option<Slot> {
    let at = *i;
    let (slot, end) = match s.get(at)? {
        b'"' => {
            let (end, escaped) = string(s, at + 1)?;
            (Slot::Str(at as u32 + 1, end as u32, escaped), end + 1)
        }
        b'-' | b'0'..=b'9' => {
            let end = number(s, at)?;
            (Slot::Number(at as u32, end as u32), end)
        }
        b't' if s.get(at..at + 4) == Some(b"true") => (Slot::True, at + 4),
        b'f' if s.get(at..at + 5) == Some(b"false") => (Slot::False, at + 5),
        b'n' if s.get(at..at + 4) == Some(b"null") => (Slot::Null, at + 4),
        _ => return None,
    };
    *i = end;
    Some(slot)
}

/// The end of the number starting at `i` (`-?(0|[1-9]d*)(.d+)?([eE][+-]?d+)?`).
#[inline(always)]
fn number(s: &[u8], mut i: usize) -> Option<usize> {
    let digits = |mut i: usize| {
        let from = i;
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > from).then_some(i)
    };
    if s.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match s.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(i)?,
        _ => return None,
    };
    if s.get(i) == Some(&b'.') {
        i = digits(i + 1)?;
    }
    if let Some(b'e' | b'E') = s.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = s.get(i) {
            i += 1;
        }
        i = digits(i)?;
    }
    Some(i)
}

/// The string whose text starts at `i` (after its opening quote): the index of its
/// closing quote, and whether it holds an escape; `None` when it is not a valid JSON
/// string (unclosed, a raw control character, an unknown escape, a lone surrogate).
#[inline(always)]
pub(super) fn string(s: &[u8], mut i: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        // Eight bytes at a time up to the first quote, backslash or control character:
        // a portable stand-in for SIMD, in safe code. In each mask the lowest flagged byte
        // is a true match (a borrow only flags bytes above one), so is their union's.
        while let Some(chunk) = s.get(i..).and_then(<[u8]>::first_chunk::<8>) {
            let x = u64::from_le_bytes(*chunk);
            let quote = x ^ splat(b'"');
            let backslash = x ^ splat(b'\\');
            let found = (quote.wrapping_sub(splat(1)) & !quote)
                | (backslash.wrapping_sub(splat(1)) & !backslash)
                | (x.wrapping_sub(splat(0x20)) & !x);
            let found = found & splat(0x80);
            if found != 0 {
                i += (found.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        match *s.get(i)? {
            b'"' => return Some((i, escaped)),
            b'\\' => {
                escaped = true;
                i = escape(s, i + 1)?;
            }
            b if b < 0x20 => return None,
            _ => i += 1,
        }
    }
}

/// The escape whose letter is at `i` (after its backslash): the index after it.
fn escape(s: &[u8], i: usize) -> Option<usize> {
    match s.get(i)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(i + 1),
        b'u' => {
            let unit = hex4(s, i + 1)?;
            match unit {
                0xD800..=0xDBFF => {
                    let low = (s.get(i + 5..i + 7) == Some(b"\\u"))
                        .then(|| hex4(s, i + 7))
                        .flatten()?;
                    (0xDC00..=0xDFFF).contains(&low).then_some(i + 11)
                }
                0xDC00..=0xDFFF => None,
                _ => Some(i + 5),
            }
        }
        _ => None,
    }
}

fn hex4(s: &[u8], i: usize) -> Option<u32> {
    let h = s.get(i..i + 4)?;
    h.iter().try_fold(0u32, |v, &b| {
        let d = (b as char).to_digit(16)?;
        Some(v * 16 + d)
    })
}

/// Appends the text of a string that [`string`] accepted (between its quotes), its
/// escapes decoded, to `out`.
pub(super) fn unescape(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while let Some(k) = memchr::memchr(b'\\', &raw[i..]) {
        out.extend_from_slice(&raw[i..i + k]);
        i += k + 1;
        let c = match raw.get(i) {
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let unit = hex4(raw, i + 1).unwrap_or(0xFFFD);
                let code = if (0xD800..=0xDBFF).contains(&unit) {
                    let low = hex4(raw, i + 7).unwrap_or(0xDC00);
                    i += 6;
                    0x10000 + ((unit - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF)
                } else {
                    unit
                };
                i += 4;
                char::from_u32(code).unwrap_or('\u{FFFD}')
            }
            Some(&b) => b as char,
            None => break,
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        i += 1;
    }
    out.extend_from_slice(&raw[i.min(raw.len())..]);
}
