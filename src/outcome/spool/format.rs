//! Byte layout of the spool: segment headers, record frames, the ack file,
//! and the scanner that walks a segment's bytes, skipping corrupt frames.
//! Pure functions over byte slices; the parent module's doc describes the
//! format and why it is so.

use std::ops::Range;

/// First four bytes of every segment file ("voice-edge outcome spool").
pub(crate) const SEGMENT_MAGIC: [u8; 4] = *b"VEOS";
/// First four bytes of the ack file.
pub(crate) const ACK_MAGIC: [u8; 4] = *b"VEAK";
/// The one format version this code reads and writes.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// `magic[4] version u32 first_seq u64`.
pub(crate) const SEGMENT_HEADER_LEN: u64 = 16;
/// `len u32, crc u32, seq u64`, then `len` payload bytes.
pub(crate) const FRAME_HEADER_LEN: u64 = 16;
/// `magic[4] version u32 acked_seq u64 crc u32`.
pub(crate) const ACK_FILE_LEN: usize = 20;
/// While re-synchronising after a corrupt frame, a candidate frame's seq
/// must lie within this distance after the last good one.
pub(crate) const MAX_SEQ_JUMP: u64 = 1 << 32;

pub(crate) fn encode_segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&first_seq.to_le_bytes());
    h
}

/// What a segment's first 16 bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    Ok,
    /// Fewer than 16 bytes.
    Short,
    /// Only zero bytes where the header should be (a file created, then a
    /// crash before its first write reached the disk).
    Zeroed,
    /// Wrong magic, or a version of 0 (damage, not a format).
    Damaged,
    /// The magic with a newer version than this code reads.
    Version(u32),
    /// The header's first seq disagrees with the file name.
    SeqMismatch(u64),
}

pub(crate) fn check_segment_header(bytes: &[u8], name_seq: u64) -> HeaderCheck {
    let Some(h) = bytes.get(..SEGMENT_HEADER_LEN as usize) else {
        return HeaderCheck::Short;
    };
    if h.iter().all(|&b| b == 0) {
        return HeaderCheck::Zeroed;
    }
    if h[0..4] != SEGMENT_MAGIC {
        return HeaderCheck::Damaged;
    }
    match u32_at(h, 4) {
        FORMAT_VERSION => {}
        0 => return HeaderCheck::Damaged,
        v => return HeaderCheck::Version(v),
    }
    let seq = u64_at(h, 8);
    if seq != name_seq {
        return HeaderCheck::SeqMismatch(seq);
    }
    HeaderCheck::Ok
}

/// CRC-32 (IEEE) over the frame's `len`, `seq` and payload: everything in
/// the frame except the CRC itself.
pub(crate) fn frame_crc(len: u32, seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends one frame to `out`. The caller has checked `payload.len()` fits
/// in a `u32`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let len = payload.len() as u32;
    out.reserve(FRAME_HEADER_LEN as usize + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&frame_crc(len, seq, payload).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Why a frame is not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameFault {
    /// Fewer bytes left than a frame header, or than the header's length.
    Truncated,
    ChecksumMismatch,
    /// A valid checksum, but the seq does not follow the previous record.
    SequenceOutOfOrder {
        seq: u64,
        previous: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FrameRef {
    pub seq: u64,
    pub payload: Range<usize>,
    /// Offset just past the frame.
    pub end: usize,
}

/// Decodes the frame at `at`; a valid one must have a seq above `prev`.
pub(crate) fn decode_frame(buf: &[u8], at: usize, prev: u64) -> Result<FrameRef, FrameFault> {
    let hdr = FRAME_HEADER_LEN as usize;
    let Some(h) = buf.get(at..).and_then(|b| b.get(..hdr)) else {
        return Err(FrameFault::Truncated);
    };
    let len = u32_at(h, 0);
    let crc = u32_at(h, 4);
    let seq = u64_at(h, 8);
    let start = at + hdr;
    let end = start.checked_add(len as usize).filter(|&e| e <= buf.len()).ok_or(FrameFault::Truncated)?;
    if frame_crc(len, seq, &buf[start..end]) != crc {
        return Err(FrameFault::ChecksumMismatch);
    }
    if seq <= prev {
        return Err(FrameFault::SequenceOutOfOrder { seq, previous: prev });
    }
    Ok(FrameRef { seq, payload: start..end, end })
}

/// The first offset after a bad frame at `bad` where a plausible valid
/// frame starts: first where the bad frame's own length says the next one
/// is (a flipped payload byte leaves the length intact), then byte by byte.
/// Candidates must carry a seq in `prev+1 ..= prev+MAX_SEQ_JUMP`, which
/// rejects zero fill and nearly all garbage before any CRC is computed.
pub(crate) fn resync(buf: &[u8], bad: usize, prev: u64) -> Option<usize> {
    let hdr = FRAME_HEADER_LEN as usize;
    let plausible = |at: usize| -> bool {
        let Some(h) = buf.get(at..).and_then(|b| b.get(..hdr)) else {
            return false;
        };
        let seq = u64_at(h, 8);
        seq > prev && seq - prev <= MAX_SEQ_JUMP && decode_frame(buf, at, prev).is_ok()
    };
    if let Some(h) = buf.get(bad..).and_then(|b| b.get(..hdr)) {
        let next = (bad + hdr).checked_add(u32_at(h, 0) as usize);
        if let Some(next) = next.filter(|&n| n < buf.len()) {
            if plausible(next) {
                return Some(next);
            }
        }
    }
    (bad + 1..buf.len().saturating_sub(hdr - 1)).find(|&at| plausible(at))
}

/// One step of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanItem {
    Record(FrameRef),
    /// Bytes `offset..resume` hold no valid frame; scanning goes on at `resume`.
    Skipped {
        offset: usize,
        resume: usize,
        fault: FrameFault,
    },
    /// No valid frame from `offset` to the end of the buffer.
    Tail {
        offset: usize,
        fault: FrameFault,
    },
}

/// Walks the frames of `buf` from `at`, `prev` being the seq that the first
/// record must exceed: records, skipped corrupt ranges, and at most one
/// unreadable tail (always last).
pub(crate) struct Scanner<'a> {
    buf: &'a [u8],
    at: usize,
    prev: u64,
    done: bool,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(buf: &'a [u8], at: usize, prev: u64) -> Self {
        Scanner { buf, at, prev, done: false }
    }
}

impl Iterator for Scanner<'_> {
    type Item = ScanItem;

    fn next(&mut self) -> Option<ScanItem> {
        if self.done || self.at >= self.buf.len() {
            return None;
        }
        match decode_frame(self.buf, self.at, self.prev) {
            Ok(f) => {
                self.prev = f.seq;
                self.at = f.end;
                Some(ScanItem::Record(f))
            }
            Err(fault) => match resync(self.buf, self.at, self.prev) {
                Some(resume) => {
                    let offset = std::mem::replace(&mut self.at, resume);
                    Some(ScanItem::Skipped { offset, resume, fault })
                }
                None => {
                    self.done = true;
                    Some(ScanItem::Tail { offset: self.at, fault })
                }
            },
        }
    }
}

pub(crate) fn encode_ack(acked: u64) -> [u8; ACK_FILE_LEN] {
    let mut b = [0u8; ACK_FILE_LEN];
    b[0..4].copy_from_slice(&ACK_MAGIC);
    b[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[8..16].copy_from_slice(&acked.to_le_bytes());
    let crc = crc32fast::hash(&b[..16]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    b
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckCheck {
    Ok(u64),
    Corrupt,
    Version(u32),
}

pub(crate) fn decode_ack(b: &[u8]) -> AckCheck {
    if b.len() != ACK_FILE_LEN || b[0..4] != ACK_MAGIC {
        return AckCheck::Corrupt;
    }
    if crc32fast::hash(&b[..16]) != u32_at(b, 16) {
        return AckCheck::Corrupt;
    }
    match u32_at(b, 4) {
        FORMAT_VERSION => AckCheck::Ok(u64_at(b, 8)),
        v => AckCheck::Version(v),
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(seqs: &[(u64, &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        for (s, p) in seqs {
            encode_frame(&mut b, *s, p);
        }
        b
    }

    #[test]
    fn frame_layout_is_len_crc_seq_payload() {
        let b = frames(&[(7, b"abc")]);
        assert_eq!(b.len(), 16 + 3);
        assert_eq!(&b[0..4], &3u32.to_le_bytes());
        assert_eq!(&b[4..8], &frame_crc(3, 7, b"abc").to_le_bytes());
        assert_eq!(&b[8..16], &7u64.to_le_bytes());
        assert_eq!(&b[16..], b"abc");
        let f = decode_frame(&b, 0, 6).unwrap();
        assert_eq!((f.seq, f.payload, f.end), (7, 16..19, 19));
        assert_eq!(decode_frame(&b, 0, 7), Err(FrameFault::SequenceOutOfOrder { seq: 7, previous: 7 }));
    }

    #[test]
    fn scanner_skips_a_bad_middle_frame_and_reports_a_tail() {
        let mut b = frames(&[(1, b"one"), (2, b"two"), (3, b"three")]);
        b[16 + 3 + 16] ^= 0x40; // payload of seq 2
        b.extend_from_slice(&[0u8; 9]); // zero fill after the last record
        let items: Vec<_> = Scanner::new(&b, 0, 0).collect();
        assert!(matches!(&items[0], ScanItem::Record(f) if f.seq == 1));
        assert!(matches!(items[1], ScanItem::Skipped { offset: 19, resume: 38, fault: FrameFault::ChecksumMismatch }));
        assert!(matches!(&items[2], ScanItem::Record(f) if f.seq == 3));
        assert!(matches!(items[3], ScanItem::Tail { offset: 59, .. }));
        assert_eq!(items.len(), 4);
    }

    #[test]
    fn scanner_resyncs_byte_by_byte_after_a_broken_length() {
        let mut b = frames(&[(1, b"one"), (2, b"two"), (3, b"three")]);
        b[19..23].copy_from_slice(&u32::MAX.to_le_bytes()); // length of seq 2
        let items: Vec<_> = Scanner::new(&b, 0, 0).collect();
        assert!(matches!(items[1], ScanItem::Skipped { offset: 19, resume: 38, fault: FrameFault::Truncated }));
        assert!(matches!(&items[2], ScanItem::Record(f) if f.seq == 3));
    }

    #[test]
    fn headers_and_ack_round_trip_and_reject_damage() {
        let h = encode_segment_header(42);
        assert_eq!(check_segment_header(&h, 42), HeaderCheck::Ok);
        assert_eq!(check_segment_header(&h, 41), HeaderCheck::SeqMismatch(42));
        assert_eq!(check_segment_header(&h[..15], 42), HeaderCheck::Short);
        assert_eq!(check_segment_header(&[0u8; 16], 42), HeaderCheck::Zeroed);
        let mut v2 = h;
        v2[4] = 2;
        assert_eq!(check_segment_header(&v2, 42), HeaderCheck::Version(2));
        let a = encode_ack(99);
        assert_eq!(decode_ack(&a), AckCheck::Ok(99));
        for i in 0..a.len() {
            let mut c = a;
            c[i] ^= 1;
            assert_ne!(decode_ack(&c), AckCheck::Ok(99), "flip at {i}");
        }
        assert_eq!(decode_ack(&a[..19]), AckCheck::Corrupt);
    }
}
