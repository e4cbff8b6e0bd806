//! Content-decoding for the check only, bounded both ways: the input is at
//! most the peeked prefix of an answer, the output at most the caller's
//! buffer, and the brotli decoder's memory at most [`BROTLI_BUDGET`] bytes
//! per kind of table (its ring buffer grows with the data, and a hostile
//! stream could ask for Brotli's whole 16 MiB window). A truncated or
//! corrupt stream yields what decoded before the fault; a decompression bomb
//! costs one output buffer and a little CPU.
//!
//! gzip and deflate are inflated by `miniz_oxide`'s core decompressor into
//! the caller's buffer, with no allocation of its own beyond one state
//! (about 11 KB, on the stack for the small buffers of the 2xx check).

use brotli_decompressor::{Allocator, BrotliDecompressStream, BrotliState, HuffmanCode};
use brotli_decompressor::{SliceWrapper, SliceWrapperMut};
use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};

use super::Coding;

/// Most memory the brotli decoder may hold per kind of table (ring buffer,
/// `u32` tables, Huffman tables), in bytes: room for a 64 KiB ring buffer
/// and the tables of any stream a real encoder writes.
pub const BROTLI_BUDGET: usize = 256 * 1024;

/// Decodes `input` (a prefix of a body in `coding`) into `out`; returns how
/// many bytes of `out` hold decoded data.
pub fn into(coding: Coding, input: &[u8], out: &mut [u8]) -> usize {
    match coding {
        Coding::Identity => {
            let n = input.len().min(out.len());
            out[..n].copy_from_slice(&input[..n]);
            n
        }
        Coding::Gzip => gzip_member(input).map_or(0, |deflate| inflate(deflate, 0, out)),
        Coding::Deflate => deflate(input, out),
        Coding::Br => brotli(input, out),
    }
}

/// HTTP's `deflate` is zlib-wrapped; some servers send raw deflate.
fn deflate(input: &[u8], out: &mut [u8]) -> usize {
    let zlib = matches!(input, [cmf, flg, ..] if cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0);
    if zlib {
        inflate(input, inflate_flags::TINFL_FLAG_PARSE_ZLIB_HEADER, out)
    } else {
        inflate(input, 0, out)
    }
}

fn inflate(input: &[u8], flags: u32, out: &mut [u8]) -> usize {
    let mut state = DecompressorOxide::new();
    let flags = flags
        | inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF
        | inflate_flags::TINFL_FLAG_HAS_MORE_INPUT
        | inflate_flags::TINFL_FLAG_IGNORE_ADLER32;
    // The output buffer does not wrap, so one call decodes as far as the
    // input or the buffer allows.
    let (_status, _read, written) = decompress(&mut state, input, out, 0, flags);
    written
}

/// The deflate data of the first gzip member (RFC 1952 §2.3), or `None`
/// when the header is not whole or not gzip's.
fn gzip_member(input: &[u8]) -> Option<&[u8]> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    let [0x1f, 0x8b, 8, flags, ..] = *input else {
        return None;
    };
    let mut rest = input.get(10..)?;
    if flags & FEXTRA != 0 {
        let len = usize::from(u16::from_le_bytes([*rest.first()?, *rest.get(1)?]));
        rest = rest.get(2 + len..)?;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let end = rest.iter().position(|b| *b == 0)?;
            rest = &rest[end + 1..];
        }
    }
    if flags & FHCRC != 0 {
        rest = rest.get(2..)?;
    }
    Some(rest)
}

fn brotli(input: &[u8], out: &mut [u8]) -> usize {
    let mut state = BrotliState::new(Budget::new(), Budget::new(), Budget::<HuffmanCode>::new());
    let (mut available_in, mut input_offset) = (input.len(), 0);
    let (mut available_out, mut output_offset, mut total_out) = (out.len(), 0, 0);
    // A failure (a refused allocation, a corrupt stream) keeps what came before it.
    let _ = BrotliDecompressStream(
        &mut available_in,
        &mut input_offset,
        input,
        &mut available_out,
        &mut output_offset,
        out,
        &mut total_out,
        &mut state,
    );
    output_offset
}

/// An allocator for the brotli decoder that refuses to hold more than
/// [`BROTLI_BUDGET`] bytes at once; the decoder fails cleanly on a refusal.
struct Budget<T> {
    left: usize,
    _of: std::marker::PhantomData<T>,
}

impl<T> Budget<T> {
    fn new() -> Self {
        Self {
            left: BROTLI_BUDGET,
            _of: std::marker::PhantomData,
        }
    }
}

/// One allocation of a [`Budget`].
#[derive(Default)]
struct Cell<T>(Box<[T]>);

impl<T> SliceWrapper<T> for Cell<T> {
    fn slice(&self) -> &[T] {
        &self.0
    }
}

impl<T> SliceWrapperMut<T> for Cell<T> {
    fn slice_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

impl<T: Clone + Default> Allocator<T> for Budget<T> {
    type AllocatedMemory = Cell<T>;

    fn alloc_cell(&mut self, len: usize) -> Cell<T> {
        let bytes = len.saturating_mul(std::mem::size_of::<T>());
        if bytes > self.left {
            return Cell(Box::default()); // the decoder reads an empty cell as a failed allocation
        }
        self.left -= bytes;
        Cell(vec![T::default(); len].into_boxed_slice())
    }

    fn free_cell(&mut self, cell: Cell<T>) {
        self.left += cell.0.len() * std::mem::size_of::<T>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("in memory");
        e.finish().expect("in memory")
    }

    pub(crate) fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("in memory");
        e.finish().expect("in memory")
    }

    pub(crate) fn br(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).expect("in memory");
        drop(w);
        out
    }

    fn decoded(coding: Coding, input: &[u8], limit: usize) -> Vec<u8> {
        let mut out = vec![0; limit];
        let n = into(coding, input, &mut out);
        out.truncate(n);
        out
    }

    #[test]
    fn each_coding_round_trips() {
        let doc = br#"{"errors":[{"code":"OK-GEN0003"}]}"#.repeat(50);
        assert_eq!(decoded(Coding::Gzip, &gzip(&doc), 1 << 16), doc);
        assert_eq!(decoded(Coding::Deflate, &zlib(&doc), 1 << 16), doc);
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&doc).expect("in memory");
        assert_eq!(
            decoded(Coding::Deflate, &raw.finish().expect("in memory"), 1 << 16),
            doc
        );
        assert_eq!(decoded(Coding::Br, &br(&doc), 1 << 16), doc);
        // A prefix of the output, and a prefix of the input.
        assert_eq!(decoded(Coding::Gzip, &gzip(&doc), 12), &doc[..12]);
        assert_eq!(decoded(Coding::Br, &br(&doc), 12), &doc[..12]);
        let z = gzip(&doc);
        assert!(doc.starts_with(&decoded(Coding::Gzip, &z[..z.len() / 2], 1 << 16)));
    }

    #[test]
    fn bombs_are_bounded() {
        // 16 MiB of zeros: a few KiB encoded.
        let zeros = vec![0u8; 16 << 20];
        for (coding, bomb) in [
            (Coding::Gzip, gzip(&zeros)),
            (Coding::Br, br(&zeros)),
            (Coding::Deflate, zlib(&zeros)),
        ] {
            let started = std::time::Instant::now();
            let n = decoded(coding, &bomb, 1 << 16).len();
            assert!(started.elapsed() < std::time::Duration::from_secs(1), "{coding:?}");
            // gzip and deflate fill the buffer; brotli's first metablock asks
            // for a ring buffer past the budget and is refused outright.
            assert_eq!(n, if coding == Coding::Br { 0 } else { 1 << 16 }, "{coding:?}");
        }
    }

    #[test]
    fn the_brotli_budget_refuses_past_its_limit() {
        let mut b = Budget::<u32>::new();
        let held = b.alloc_cell(BROTLI_BUDGET / 4);
        assert_eq!(held.slice().len(), BROTLI_BUDGET / 4);
        assert!(b.alloc_cell(1).slice().is_empty());
        b.free_cell(held);
        assert_eq!(b.alloc_cell(16).slice().len(), 16);
    }

    #[test]
    fn a_brotli_stream_with_a_16_mib_window_stays_within_the_budget() {
        let data: Vec<u8> = (0..(1u32 << 20))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut out = Vec::new();
        let mut w = brotli::CompressorWriter::new(&mut out, 1 << 16, 5, 24);
        w.write_all(&data).expect("in memory");
        drop(w);
        let got = decoded(Coding::Br, &out[..out.len().min(64 << 10)], 1 << 16);
        assert!(data.starts_with(&got));
    }

    #[test]
    fn junk_decodes_to_little_and_never_panics() {
        for junk in [
            &b""[..],
            b"\x1f\x8b",
            b"\x1f\x8b\x08\x1f\0\0\0\0\0\0",
            b"not compressed at all",
            &[0xff; 300],
        ] {
            for coding in [Coding::Gzip, Coding::Deflate, Coding::Br] {
                let _ = decoded(coding, junk, 1 << 16);
            }
        }
    }
}
