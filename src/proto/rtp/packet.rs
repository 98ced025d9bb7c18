//! RTP packets (RFC 3550 §5.1, header extensions §5.3.1): zero-copy parsing
//! with strict bounds checks, and serialization.
//!
//! Owns [`RtpPacket`], a view over one datagram (version 2 only), its CSRC
//! list and header extension, and [`is_rtcp`], the RTP/RTCP demultiplexing
//! rule for a shared port (RFC 5761 §4: second byte 192..=223 is RTCP).
//! Parsing never panics: every length (CSRC count, extension length,
//! padding count) is checked against the datagram before it is used.

/// Fixed RTP header length.
pub const RTP_HEADER_LEN: usize = 12;

/// Errors from RTP parsing and serialization.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Shorter than the header it announces.
    #[error("RTP packet truncated: {needed} bytes needed, {got} present")]
    Truncated { needed: usize, got: usize },
    /// Version field is not 2.
    #[error("RTP version {0} (expected 2)")]
    BadVersion(u8),
    /// The padding count is zero or exceeds the payload.
    #[error("RTP padding count {count} invalid for {available} payload bytes")]
    BadPadding { count: u8, available: usize },
    /// Serialization: more than 15 CSRCs, extension not a multiple of four
    /// bytes, or a payload type above 127.
    #[error("cannot serialize RTP packet: {0}")]
    Unserializable(&'static str),
}

/// A header extension (RFC 3550 §5.3.1): profile-defined 16 bits and data
/// (a whole number of 32-bit words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderExtension<'a> {
    /// "defined by profile" field (0xBEDE for RFC 8285 one-byte headers).
    pub profile: u16,
    /// Extension data, `4 * length` bytes.
    pub data: &'a [u8],
}

/// A parsed or to-be-serialized RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// M bit.
    pub marker: bool,
    /// 7-bit payload type.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Contributing sources, raw big-endian words (`4 * count` bytes); see
    /// [`RtpPacket::csrcs`].
    pub csrc_bytes: &'a [u8],
    /// Header extension, if the X bit is set.
    pub extension: Option<HeaderExtension<'a>>,
    /// Payload, padding removed.
    pub payload: &'a [u8],
    /// Padding bytes after the payload (0 = no P bit). When serializing,
    /// that many bytes are appended, the last holding the count.
    pub padding: u8,
}

impl<'a> RtpPacket<'a> {
    /// A packet with no CSRCs, extension or padding.
    pub fn new(payload_type: u8, sequence: u16, timestamp: u32, ssrc: u32, marker: bool, payload: &'a [u8]) -> Self {
        RtpPacket {
            marker,
            payload_type,
            sequence,
            timestamp,
            ssrc,
            csrc_bytes: &[],
            extension: None,
            payload,
            padding: 0,
        }
    }

    /// Parses one RTP datagram.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, RtpError> {
        if bytes.len() < RTP_HEADER_LEN {
            return Err(RtpError::Truncated { needed: RTP_HEADER_LEN, got: bytes.len() });
        }
        let version = bytes[0] >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        let has_padding = bytes[0] & 0x20 != 0;
        let has_extension = bytes[0] & 0x10 != 0;
        let csrc_count = usize::from(bytes[0] & 0x0F);
        let marker = bytes[1] & 0x80 != 0;
        let payload_type = bytes[1] & 0x7F;
        let sequence = u16::from_be_bytes([bytes[2], bytes[3]]);
        let timestamp = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let ssrc = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);

        let mut offset = RTP_HEADER_LEN + 4 * csrc_count;
        if bytes.len() < offset {
            return Err(RtpError::Truncated { needed: offset, got: bytes.len() });
        }
        let csrc_bytes = &bytes[RTP_HEADER_LEN..offset];

        let extension = if has_extension {
            if bytes.len() < offset + 4 {
                return Err(RtpError::Truncated { needed: offset + 4, got: bytes.len() });
            }
            let profile = u16::from_be_bytes([bytes[offset], bytes[offset + 1]]);
            let words = usize::from(u16::from_be_bytes([bytes[offset + 2], bytes[offset + 3]]));
            let start = offset + 4;
            let end = start + 4 * words;
            if bytes.len() < end {
                return Err(RtpError::Truncated { needed: end, got: bytes.len() });
            }
            offset = end;
            Some(HeaderExtension { profile, data: &bytes[start..end] })
        } else {
            None
        };

        let mut end = bytes.len();
        let mut padding = 0u8;
        if has_padding {
            let count = bytes[end - 1];
            let available = end - offset;
            if count == 0 || usize::from(count) > available {
                return Err(RtpError::BadPadding { count, available });
            }
            padding = count;
            end -= usize::from(count);
        }
        Ok(RtpPacket {
            marker,
            payload_type,
            sequence,
            timestamp,
            ssrc,
            csrc_bytes,
            extension,
            payload: &bytes[offset..end],
            padding,
        })
    }

    /// The contributing sources.
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + '_ {
        self.csrc_bytes.chunks_exact(4).map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
    }

    /// Serialized length.
    pub fn len(&self) -> usize {
        RTP_HEADER_LEN
            + self.csrc_bytes.len()
            + self.extension.map_or(0, |e| 4 + e.data.len())
            + self.payload.len()
            + usize::from(self.padding)
    }

    /// Whether the serialized packet would be header-only with no payload.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }

    /// Appends the wire form to `out`.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), RtpError> {
        if self.payload_type > 127 {
            return Err(RtpError::Unserializable("payload type above 127"));
        }
        if !self.csrc_bytes.len().is_multiple_of(4) || self.csrc_bytes.len() > 60 {
            return Err(RtpError::Unserializable("CSRC list must be at most 15 whole words"));
        }
        if let Some(ext) = self.extension {
            if ext.data.len() % 4 != 0 || ext.data.len() / 4 > usize::from(u16::MAX) {
                return Err(RtpError::Unserializable("extension data must be whole 32-bit words"));
            }
        }
        out.reserve(self.len());
        let mut first = 0x80 | (self.csrc_bytes.len() / 4) as u8;
        if self.padding > 0 {
            first |= 0x20;
        }
        if self.extension.is_some() {
            first |= 0x10;
        }
        out.push(first);
        out.push(self.payload_type | if self.marker { 0x80 } else { 0 });
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(self.csrc_bytes);
        if let Some(ext) = self.extension {
            out.extend_from_slice(&ext.profile.to_be_bytes());
            out.extend_from_slice(&((ext.data.len() / 4) as u16).to_be_bytes());
            out.extend_from_slice(ext.data);
        }
        out.extend_from_slice(self.payload);
        if self.padding > 0 {
            out.extend(std::iter::repeat_n(0, usize::from(self.padding) - 1));
            out.push(self.padding);
        }
        Ok(())
    }
}

/// RFC 5761 §4 demultiplexing: whether a datagram on a shared port is RTCP
/// (packet type 192..=223 in the second byte) rather than RTP.
pub fn is_rtcp(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] >> 6 == 2 && (192..=223).contains(&bytes[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_minimal_packet() {
        let bytes = [0x80, 0x80, 0x12, 0x34, 0, 0, 0x01, 0x00, 0xDE, 0xAD, 0xBE, 0xEF, 0xFF, 0x7F];
        let p = RtpPacket::parse(&bytes).unwrap();
        assert!(p.marker);
        assert_eq!(p.payload_type, 0);
        assert_eq!(p.sequence, 0x1234);
        assert_eq!(p.timestamp, 256);
        assert_eq!(p.ssrc, 0xDEAD_BEEF);
        assert_eq!(p.payload, &[0xFF, 0x7F]);
        assert_eq!(p.csrcs().count(), 0);
        let mut out = Vec::new();
        p.write(&mut out).unwrap();
        assert_eq!(out, bytes);
    }

    #[test]
    fn round_trips_csrcs_extension_and_padding() {
        let csrcs = [0, 0, 0, 1, 0, 0, 0, 2];
        let ext = [1, 2, 3, 4, 5, 6, 7, 8];
        let packet = RtpPacket {
            marker: false,
            payload_type: 111,
            sequence: 65_535,
            timestamp: u32::MAX,
            ssrc: 7,
            csrc_bytes: &csrcs,
            extension: Some(HeaderExtension { profile: 0xBEDE, data: &ext }),
            payload: b"opus",
            padding: 3,
        };
        let mut out = Vec::new();
        packet.write(&mut out).unwrap();
        assert_eq!(out.len(), packet.len());
        assert_eq!(out[0], 0x80 | 0x20 | 0x10 | 2);
        assert_eq!(*out.last().unwrap(), 3);
        let parsed = RtpPacket::parse(&out).unwrap();
        assert_eq!(parsed, packet);
        assert_eq!(parsed.csrcs().collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn rejects_truncated_and_malformed_packets() {
        assert!(matches!(RtpPacket::parse(&[]), Err(RtpError::Truncated { needed: 12, got: 0 })));
        assert!(matches!(RtpPacket::parse(&[0x80; 11]), Err(RtpError::Truncated { .. })));
        let mut header = vec![0x40, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(RtpPacket::parse(&header), Err(RtpError::BadVersion(1)));
        header[0] = 0x8F; // 15 CSRCs announced, none present
        assert!(matches!(RtpPacket::parse(&header), Err(RtpError::Truncated { needed: 72, .. })));
        header[0] = 0x90; // extension announced, no extension header
        assert!(matches!(RtpPacket::parse(&header), Err(RtpError::Truncated { needed: 16, .. })));
        let mut ext = header.clone();
        ext.extend_from_slice(&[0xBE, 0xDE, 0xFF, 0xFF]); // 65535 words announced
        assert!(matches!(RtpPacket::parse(&ext), Err(RtpError::Truncated { .. })));
        header[0] = 0xA0; // padding bit with a count larger than the payload
        header.extend_from_slice(&[1, 2, 9]);
        assert!(matches!(RtpPacket::parse(&header), Err(RtpError::BadPadding { count: 9, available: 3 })));
        *header.last_mut().unwrap() = 0;
        assert!(matches!(RtpPacket::parse(&header), Err(RtpError::BadPadding { count: 0, .. })));
    }

    #[test]
    fn refuses_to_serialize_impossible_packets() {
        let mut p = RtpPacket::new(128, 0, 0, 0, false, &[]);
        assert!(p.write(&mut Vec::new()).is_err());
        p.payload_type = 0;
        p.csrc_bytes = &[1, 2, 3];
        assert!(p.write(&mut Vec::new()).is_err());
    }

    #[test]
    fn demultiplexes_rtcp_from_rtp() {
        assert!(is_rtcp(&[0x80, 200, 0, 6]));
        assert!(is_rtcp(&[0x81, 203, 0, 1]));
        assert!(!is_rtcp(&[0x80, 0x00]));
        assert!(!is_rtcp(&[0x80, 0x80 | 111]));
        assert!(!is_rtcp(&[0x80]));
    }

    /// Mutation fuzz: flips, truncations and random lengths never panic and
    /// anything that parses serializes back to the same bytes.
    #[test]
    fn mutation_fuzz_never_panics_and_round_trips() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let csrcs = [0, 0, 0, 9];
        let base = {
            let p = RtpPacket {
                csrc_bytes: &csrcs,
                extension: Some(HeaderExtension { profile: 1, data: &[0; 4] }),
                padding: 2,
                ..RtpPacket::new(8, 10, 20, 30, true, &[1, 2, 3, 4, 5])
            };
            let mut v = Vec::new();
            p.write(&mut v).unwrap();
            v
        };
        let mut parsed_ok = 0;
        for _ in 0..20_000 {
            let mut bytes = base.clone();
            for _ in 0..(next() % 4 + 1) {
                let r = next();
                let i = (r as usize >> 8) % bytes.len().max(1);
                match r % 3 {
                    0 if !bytes.is_empty() => bytes[i] ^= 1 << ((r >> 40) % 8),
                    1 => bytes.truncate(i),
                    _ => bytes.insert(i.min(bytes.len()), r as u8),
                }
            }
            if let Ok(p) = RtpPacket::parse(&bytes) {
                parsed_ok += 1;
                let mut out = Vec::new();
                p.write(&mut out).unwrap();
                // Padding content is not preserved, only its length.
                let body = bytes.len() - usize::from(p.padding);
                assert_eq!(out[..body], bytes[..body]);
                assert_eq!(out.len(), bytes.len());
            }
        }
        assert!(parsed_ok > 1_000, "fuzz barely exercised the accept path ({parsed_ok})");
    }
}
