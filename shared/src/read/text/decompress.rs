//! Push decompressors: compressed bytes in, decompressed bytes out, a slice at a time, so
//! what is held never depends on the compression ratio.

use std::io::Write;

use crate::spec::InputCompression;

/// Compressed bytes fed per step: gzip expands at most about 1,032×, so an 8 KiB slice
/// yields at most ~8 MiB however the data was made.
pub(super) const SLICE_BYTES: usize = 8 * 1024;

/// A gzip (every member) or zstd (every frame) stream decoder.
pub(super) enum Decompressor {
    Gzip(flate2::write::MultiGzDecoder<Vec<u8>>),
    /// zstd through its raw API: the `Write` adapter cannot tell a truncated frame from a
    /// complete one, and the frame state is what tells them apart.
    Zstd {
        decoder: zstd::stream::raw::Decoder<'static>,
        out: Vec<u8>,
        scratch: Box<[u8]>,
        frame_done: bool,
    },
}

impl Decompressor {
    pub(super) fn new(c: InputCompression) -> std::io::Result<Option<Self>> {
        Ok(match c {
            InputCompression::Gzip => Some(Decompressor::Gzip(flate2::write::MultiGzDecoder::new(
                Vec::new(),
            ))),
            InputCompression::Zstd => Some(Decompressor::Zstd {
                decoder: zstd::stream::raw::Decoder::new()?,
                out: Vec::new(),
                scratch: vec![0u8; 64 * 1024].into_boxed_slice(),
                // An empty object holds no frame, and nothing is missing.
                frame_done: true,
            }),
            InputCompression::None | InputCompression::Auto => None,
        })
    }

    pub(super) fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Decompressor::Gzip(d) => d.write_all(b),
            Decompressor::Zstd {
                decoder,
                out,
                scratch,
                frame_done,
            } => {
                use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
                let mut input = InBuffer::around(b);
                loop {
                    let mut output = OutBuffer::around(&mut scratch[..]);
                    let hint = decoder.run(&mut input, &mut output)?;
                    let written = output.pos();
                    let full = written == scratch.len();
                    out.extend_from_slice(&scratch[..written]);
                    // 0: a frame just ended and was flushed whole.
                    *frame_done = hint == 0;
                    if input.pos() == b.len() && !full {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Ends the stream: the rest of the output, or an error when the input was truncated.
    pub(super) fn finish(&mut self) -> std::io::Result<()> {
        match self {
            Decompressor::Gzip(d) => d.try_finish(),
            Decompressor::Zstd { frame_done, .. } if !*frame_done => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the zstd stream ends inside a frame (truncated object?)",
            )),
            Decompressor::Zstd { .. } => Ok(()),
        }
    }

    /// Decompressed bytes not yet taken.
    pub(super) fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Decompressor::Gzip(d) => d.get_mut(),
            Decompressor::Zstd { out, .. } => out,
        }
    }
}
