//! gzip bodies assembled from pieces compressed separately, so that a body that changed in one
//! place is compressed again only there.
//!
//! Each piece is raw deflate with a fresh dictionary, ended by a sync flush: it is
//! byte-aligned, refers to nothing before it and closes no stream, so pieces can be laid end
//! to end (as pigz does across threads). A member is then the gzip header, the pieces, one
//! empty final block, and the CRC and length of the whole text, combined from the pieces'
//! own. Any gzip decoder reads it as one ordinary member.

use bytes::{BufMut, Bytes, BytesMut};
use crc32fast::Hasher;
use flate2::{Compress, Compression, FlushCompress};

/// Level 1 compresses several times faster than the default and keeps the JSON and metric
/// text at a tenth to a twentieth of their size (`cargo bench --bench snapshot`).
const LEVEL: u32 = 1;

/// gzip header: magic, deflate, no flags, no mtime, no extra flags, OS unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// An empty final block with fixed codes: ends the deflate stream after the pieces.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// A compressed piece of text and the CRC-32 and length of the text it holds.
#[derive(Clone)]
pub struct Segment {
    deflate: Bytes,
    crc: Hasher,
}

impl Segment {
    /// `text`, compressed on its own.
    pub fn compress(text: &[u8]) -> Self {
        let mut crc = Hasher::new();
        crc.update(text);
        if text.is_empty() {
            return Self {
                deflate: Bytes::new(),
                crc,
            };
        }
        let mut deflater = Compress::new(Compression::new(LEVEL), false);
        let mut out = Vec::with_capacity(text.len() / 8 + 64);
        loop {
            let consumed = usize::try_from(deflater.total_in()).expect("a length fits usize");
            deflater
                .compress_vec(&text[consumed..], &mut out, FlushCompress::Sync)
                .expect("compressing into a growing buffer cannot fail");
            // The flush is complete once a call leaves output space unused.
            if deflater.total_in() == text.len() as u64 && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        Self {
            deflate: out.into(),
            crc,
        }
    }

    /// The pieces one after the other, as one piece.
    pub fn join<'a>(pieces: impl IntoIterator<Item = &'a Segment>) -> Self {
        let pieces: Vec<&Segment> = pieces.into_iter().collect();
        let mut deflate = BytesMut::with_capacity(pieces.iter().map(|p| p.deflate.len()).sum());
        let mut crc = Hasher::new();
        for piece in pieces {
            deflate.put_slice(&piece.deflate);
            crc.combine(&piece.crc);
        }
        Self {
            deflate: deflate.freeze(),
            crc,
        }
    }

    /// Length of the text it holds.
    pub fn text_len(&self) -> u64 {
        self.crc.total_len()
    }

    /// Compressed length.
    pub fn len(&self) -> usize {
        self.deflate.len()
    }

    pub fn is_empty(&self) -> bool {
        self.deflate.is_empty()
    }
}

/// One gzip member holding `pieces` in order, as chunks to send without copying the pieces.
pub fn member(pieces: &[&Segment]) -> Vec<Bytes> {
    let mut crc = Hasher::new();
    let mut chunks = Vec::with_capacity(pieces.len() + 2);
    chunks.push(Bytes::from_static(&HEADER));
    for piece in pieces {
        crc.combine(&piece.crc);
        if !piece.deflate.is_empty() {
            chunks.push(piece.deflate.clone());
        }
    }
    let len = crc.total_len();
    let mut tail = BytesMut::with_capacity(10);
    tail.put_slice(&FINAL_BLOCK);
    tail.put_u32_le(crc.finalize());
    // ISIZE is the length modulo 2^32.
    tail.put_u32_le(len as u32);
    chunks.push(tail.freeze());
    chunks
}

/// One gzip member holding `piece`, in one buffer.
pub fn member_bytes(piece: &Segment) -> Bytes {
    let chunks = member(&[piece]);
    let mut out = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for chunk in chunks {
        out.put_slice(&chunk);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(body: &[u8]) -> Vec<u8> {
        // GzDecoder checks the trailer's CRC and length, and reads one member only.
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .expect("a valid gzip member");
        out
    }

    fn text(seed: u64, len: usize) -> Vec<u8> {
        // Text with repeats and noise, like JSON rows.
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 7 < 4 {
                    b"{\"id\":"[i % 6]
                } else {
                    b'a' + (x % 26) as u8
                }
            })
            .collect()
    }

    #[test]
    fn pieces_laid_end_to_end_read_as_their_texts_concatenated() {
        for lens in [
            vec![0],
            vec![1],
            vec![5, 0, 7],
            vec![100_000, 3, 70_000],
            vec![0, 0, 0],
        ] {
            let texts: Vec<Vec<u8>> = lens
                .iter()
                .enumerate()
                .map(|(i, &n)| text(i as u64 + 1, n))
                .collect();
            let pieces: Vec<Segment> = texts.iter().map(|t| Segment::compress(t)).collect();
            let refs: Vec<&Segment> = pieces.iter().collect();
            let body: Vec<u8> = member(&refs).concat();
            assert_eq!(gunzip(&body), texts.concat(), "lengths {lens:?}");
            let joined = Segment::join(&pieces);
            assert_eq!(joined.text_len(), texts.concat().len() as u64);
            assert_eq!(gunzip(&member_bytes(&joined)), texts.concat());
        }
    }

    #[test]
    fn the_pieces_are_compressed() {
        let text: String = (0..2000)
            .map(|i| format!(r#"{{"id":{i},"sessionId":"s{i}","status":"connected"}},"#))
            .collect();
        let text = text.as_bytes();
        let piece = Segment::compress(text);
        assert!(piece.len() < text.len() / 2, "{} of {}", piece.len(), text.len());
    }
}
