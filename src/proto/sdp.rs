//! SDP (RFC 8866) and the answerer's half of the offer/answer model
//! (RFC 3264) for an audio-only user agent server.
//!
//! Owns:
//! - [`SessionDescription`]: parsing with explicit [`Limits`] (size, lines,
//!   media sections, formats, attributes) and serialization with CRLF line
//!   ends (§5). Unknown line types are ignored (§5), bare LF line ends are
//!   accepted, and every field the negotiation uses is checked.
//! - Typed views of the attributes the node relies on: `a=rtpmap` and
//!   `a=fmtp` (§6.6, §6.15), `a=ptime`/`a=maxptime` (§6.4, §6.5), the
//!   direction attributes (§6.7), `a=rtcp` (RFC 3605) and `a=rtcp-mux`
//!   (RFC 5761).
//! - [`negotiate`]: builds the answer to an offer (RFC 3264 §6): the first
//!   usable `audio` stream over RTP/AVP(F) is accepted, every other stream is
//!   rejected with port 0 (§6); the codec is the offerer's most preferred
//!   one among ours (§6.1), keeping the offerer's payload type numbers;
//!   `telephone-event` at the codec's clock rate is answered with the same
//!   payload type and `0-16` (RFC 4733 §7.1.1); `a=ptime` is mirrored when
//!   it is a whole number of 20 ms frames (20 ms otherwise); the direction
//!   is the offer's reversed (§6.1), and `c=0.0.0.0` (the RFC 2543 hold of
//!   RFC 3264 §8.4) means we have nowhere to send.
//! - [`SdpError`] with [`SdpError::warning`] (RFC 3261 §20.43 Warning text)
//!   and [`SdpError::status_code`] (400 for a malformed body, 488 otherwise).
//!
//! Sans-IO: text in, text and values out.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

pub use crate::media::codec::CodecKind;

/// Warn-agent used in Warning header values.
const WARN_AGENT: &str = "voice-edge";

/// Parser limits; bodies beyond them are rejected, not truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest body in bytes.
    pub max_bytes: usize,
    /// Most lines.
    pub max_lines: usize,
    /// Longest single line in bytes.
    pub max_line_len: usize,
    /// Most `m=` sections.
    pub max_media: usize,
    /// Most formats on one `m=` line.
    pub max_formats: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 16 * 1024, max_lines: 512, max_line_len: 1024, max_media: 16, max_formats: 64 }
    }
}

/// Errors from parsing and negotiation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// Body larger than [`Limits::max_bytes`].
    #[error("SDP of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// More lines, media sections or formats than allowed.
    #[error("SDP exceeds the limit on {0}")]
    LimitExceeded(&'static str),
    /// Not UTF-8.
    #[error("SDP is not UTF-8")]
    NotUtf8,
    /// A line that does not parse.
    #[error("SDP line {line}: {reason}")]
    BadLine { line: usize, reason: &'static str },
    /// Missing `v=0` or `o=`.
    #[error("SDP lacks a required {0} line")]
    Missing(&'static str),
    /// No audio stream in the offer.
    #[error("the offer has no audio stream")]
    NoAudio,
    /// Audio offered only over transports we do not speak (SRTP, DTLS).
    #[error("no audio stream over RTP/AVP or RTP/AVPF (offered {0})")]
    UnsupportedTransport(String),
    /// No offered codec is one of ours.
    #[error("no common audio codec")]
    NoCommonCodec,
    /// The connection address is not an IP address (FQDN, bad syntax) or
    /// missing.
    #[error("unusable connection address {0:?}")]
    BadConnectionAddress(String),
}

impl SdpError {
    /// The SIP status a UAS answers with: 400 for a malformed body, 488
    /// (Not Acceptable Here) when it parsed but cannot be accepted.
    pub fn status_code(&self) -> u16 {
        match self {
            SdpError::TooLarge { .. }
            | SdpError::LimitExceeded(_)
            | SdpError::NotUtf8
            | SdpError::BadLine { .. }
            | SdpError::Missing(_) => 400,
            _ => 488,
        }
    }

    /// A Warning header value (RFC 3261 §20.43 warn-codes 3xx).
    pub fn warning(&self) -> String {
        let (code, text) = match self {
            SdpError::NoAudio => (304, "Media type not available"),
            SdpError::NoCommonCodec => (305, "Incompatible media format"),
            SdpError::UnsupportedTransport(_) => (302, "Incompatible transport protocol"),
            SdpError::BadConnectionAddress(_) => (301, "Incompatible network address formats"),
            _ => (399, "Malformed session description"),
        };
        format!("{code} {WARN_AGENT} \"{text}\"")
    }
}

/// Media direction (RFC 8866 §6.7, RFC 3264 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Both ways (the default).
    SendRecv,
    /// Only sending.
    SendOnly,
    /// Only receiving.
    RecvOnly,
    /// Neither.
    Inactive,
}

impl Direction {
    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn from_attribute(name: &str) -> Option<Self> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The answer's direction for an offer with this one (RFC 3264 §6.1).
    pub fn answer(self) -> Self {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether media is sent in this direction.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether media is received in this direction.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// This direction with sending removed.
    pub fn without_send(self) -> Self {
        match self {
            Direction::SendRecv | Direction::RecvOnly => Direction::RecvOnly,
            Direction::SendOnly | Direction::Inactive => Direction::Inactive,
        }
    }
}

/// `o=` (§5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// User name (`-` when none).
    pub username: String,
    /// Session id (numeric string).
    pub session_id: String,
    /// Session version (numeric string).
    pub session_version: String,
    /// `IN`.
    pub net_type: String,
    /// `IP4` or `IP6`.
    pub addr_type: String,
    /// Unicast address or host name.
    pub address: String,
}

/// `c=` (§5.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// `IN`.
    pub net_type: String,
    /// `IP4` or `IP6`.
    pub addr_type: String,
    /// Address, possibly with `/ttl` or `/count` suffixes.
    pub address: String,
}

impl Connection {
    /// The address as an IP, if it is one (suffixes ignored).
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.split('/').next()?.parse().ok()
    }
}

/// `a=` (§5.13): a property or a value attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Name.
    pub name: String,
    /// Value after the first `:`, if any.
    pub value: Option<String>,
}

/// `a=rtpmap` (§6.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// Payload type.
    pub payload_type: u8,
    /// Encoding name as written.
    pub encoding: String,
    /// Clock rate, Hz.
    pub clock_rate: u32,
    /// Channels (encoding parameters), if given.
    pub channels: Option<u8>,
}

/// One `m=` section (§5.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, `application`, ...
    pub media: String,
    /// Transport port (0 = stream disabled).
    pub port: u16,
    /// `/<number of ports>`, if given.
    pub port_count: Option<u16>,
    /// `RTP/AVP`, `RTP/SAVP`, ...
    pub protocol: String,
    /// Formats (payload types for RTP).
    pub formats: Vec<String>,
    /// Section `c=`.
    pub connection: Option<Connection>,
    /// Raw `b=` values.
    pub bandwidths: Vec<String>,
    /// Section `a=` lines.
    pub attributes: Vec<Attribute>,
}

fn find_attribute<'a>(attributes: &'a [Attribute], name: &str) -> Option<&'a Attribute> {
    attributes.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

fn attribute_direction(attributes: &[Attribute]) -> Option<Direction> {
    attributes.iter().find_map(|a| if a.value.is_none() { Direction::from_attribute(&a.name) } else { None })
}

impl MediaDescription {
    /// First attribute named `name` (property attributes give `Some("")`).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        find_attribute(&self.attributes, name).map(|a| a.value.as_deref().unwrap_or(""))
    }

    /// The `a=rtpmap` for `payload_type`, if present and well-formed.
    pub fn rtpmap(&self, payload_type: u8) -> Option<RtpMap> {
        self.attributes.iter().filter(|a| a.name.eq_ignore_ascii_case("rtpmap")).find_map(|a| {
            let value = a.value.as_deref()?;
            let (pt, rest) = value.split_once(' ')?;
            if pt.parse::<u8>().ok()? != payload_type {
                return None;
            }
            let mut parts = rest.trim().split('/');
            let encoding = parts.next()?.to_string();
            let clock_rate = parts.next()?.parse().ok()?;
            let channels = match parts.next() {
                Some(c) => Some(c.parse().ok()?),
                None => None,
            };
            Some(RtpMap { payload_type, encoding, clock_rate, channels })
        })
    }

    /// The `a=fmtp` parameters for `payload_type`.
    pub fn fmtp(&self, payload_type: u8) -> Option<&str> {
        self.attributes.iter().filter(|a| a.name.eq_ignore_ascii_case("fmtp")).find_map(|a| {
            let (pt, rest) = a.value.as_deref()?.split_once(' ')?;
            (pt.parse::<u8>().ok()? == payload_type).then_some(rest.trim())
        })
    }

    /// `a=ptime` in milliseconds (fractions rounded down).
    pub fn ptime(&self) -> Option<u32> {
        parse_millis(self.attribute("ptime")?)
    }

    /// `a=maxptime` in milliseconds.
    pub fn maxptime(&self) -> Option<u32> {
        parse_millis(self.attribute("maxptime")?)
    }

    /// The section's own direction attribute.
    pub fn direction(&self) -> Option<Direction> {
        attribute_direction(&self.attributes)
    }
}

fn parse_millis(value: &str) -> Option<u32> {
    let whole = value.trim().split('.').next()?;
    whole.parse().ok().filter(|&ms| ms > 0)
}

/// A whole session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// `o=`.
    pub origin: Origin,
    /// `s=` (`-` if the offer had none).
    pub session_name: String,
    /// Session-level `c=`.
    pub connection: Option<Connection>,
    /// Session-level raw `b=` values.
    pub bandwidths: Vec<String>,
    /// `t=` start/stop pairs.
    pub times: Vec<(u64, u64)>,
    /// Session-level `a=` lines.
    pub attributes: Vec<Attribute>,
    /// `m=` sections in order.
    pub media: Vec<MediaDescription>,
}

fn parse_connection(value: &str, line: usize) -> Result<Connection, SdpError> {
    let mut parts = value.split_ascii_whitespace();
    let (Some(net_type), Some(addr_type), Some(address), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SdpError::BadLine { line, reason: "c= needs <nettype> <addrtype> <address>" });
    };
    Ok(Connection { net_type: net_type.into(), addr_type: addr_type.into(), address: address.into() })
}

fn parse_media(value: &str, line: usize, limits: &Limits) -> Result<MediaDescription, SdpError> {
    let bad = |reason| SdpError::BadLine { line, reason };
    let mut parts = value.split_ascii_whitespace();
    let media = parts.next().ok_or(bad("m= without a media type"))?;
    let port_field = parts.next().ok_or(bad("m= without a port"))?;
    let protocol = parts.next().ok_or(bad("m= without a protocol"))?;
    let (port, port_count) = match port_field.split_once('/') {
        Some((p, n)) => (p, Some(n.parse().map_err(|_| bad("m= port count is not a number"))?)),
        None => (port_field, None),
    };
    let port = port.parse().map_err(|_| bad("m= port is not a number 0-65535"))?;
    let formats: Vec<String> = parts.map(str::to_string).collect();
    if formats.is_empty() {
        return Err(bad("m= without formats"));
    }
    if formats.len() > limits.max_formats {
        return Err(SdpError::LimitExceeded("formats per m= line"));
    }
    Ok(MediaDescription {
        media: media.into(),
        port,
        port_count,
        protocol: protocol.into(),
        formats,
        connection: None,
        bandwidths: Vec::new(),
        attributes: Vec::new(),
    })
}

impl SessionDescription {
    /// Parses a body with the default limits.
    pub fn parse(body: &[u8]) -> Result<Self, SdpError> {
        Self::parse_with(body, &Limits::default())
    }

    /// Parses a body.
    pub fn parse_with(body: &[u8], limits: &Limits) -> Result<Self, SdpError> {
        if body.len() > limits.max_bytes {
            return Err(SdpError::TooLarge { len: body.len(), max: limits.max_bytes });
        }
        let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
        let mut origin = None;
        let mut session_name = None;
        let mut connection = None;
        let mut bandwidths = Vec::new();
        let mut times = Vec::new();
        let mut attributes = Vec::new();
        let mut media: Vec<MediaDescription> = Vec::new();
        let mut seen_version = false;
        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            if line > limits.max_lines {
                return Err(SdpError::LimitExceeded("lines"));
            }
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.is_empty() {
                continue;
            }
            if raw.len() > limits.max_line_len {
                return Err(SdpError::LimitExceeded("line length"));
            }
            let bytes = raw.as_bytes();
            if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
                return Err(SdpError::BadLine { line, reason: "not <type>=<value>" });
            }
            let value = &raw[2..];
            if !seen_version {
                if bytes[0] != b'v' {
                    return Err(SdpError::Missing("v=0 (first)"));
                }
                if value.trim() != "0" {
                    return Err(SdpError::BadLine { line, reason: "only SDP version 0 exists" });
                }
                seen_version = true;
                continue;
            }
            match bytes[0] {
                b'o' => {
                    let parts: Vec<&str> = value.split_ascii_whitespace().collect();
                    let [username, session_id, session_version, net_type, addr_type, address] = parts[..] else {
                        return Err(SdpError::BadLine { line, reason: "o= needs six fields" });
                    };
                    origin = Some(Origin {
                        username: username.into(),
                        session_id: session_id.into(),
                        session_version: session_version.into(),
                        net_type: net_type.into(),
                        addr_type: addr_type.into(),
                        address: address.into(),
                    });
                }
                b's' if media.is_empty() => session_name = Some(value.to_string()),
                b'c' => {
                    let c = parse_connection(value, line)?;
                    match media.last_mut() {
                        Some(m) => m.connection = Some(c),
                        None => connection = Some(c),
                    }
                }
                b'b' => match media.last_mut() {
                    Some(m) => m.bandwidths.push(value.to_string()),
                    None => bandwidths.push(value.to_string()),
                },
                b't' if media.is_empty() => {
                    let mut parts = value.split_ascii_whitespace();
                    let (Some(Ok(start)), Some(Ok(stop))) =
                        (parts.next().map(str::parse), parts.next().map(str::parse))
                    else {
                        return Err(SdpError::BadLine { line, reason: "t= needs two numbers" });
                    };
                    times.push((start, stop));
                }
                b'm' => {
                    if media.len() == limits.max_media {
                        return Err(SdpError::LimitExceeded("media sections"));
                    }
                    media.push(parse_media(value, line, limits)?);
                }
                b'a' => {
                    let attribute = match value.split_once(':') {
                        Some((name, v)) => Attribute { name: name.to_string(), value: Some(v.to_string()) },
                        None => Attribute { name: value.to_string(), value: None },
                    };
                    if attribute.name.is_empty() {
                        return Err(SdpError::BadLine { line, reason: "a= without a name" });
                    }
                    match media.last_mut() {
                        Some(m) => m.attributes.push(attribute),
                        None => attributes.push(attribute),
                    }
                }
                // i, u, e, p, r, z, k and unknown types: ignored (§5).
                _ => {}
            }
        }
        if !seen_version {
            return Err(SdpError::Missing("v=0"));
        }
        Ok(SessionDescription {
            origin: origin.ok_or(SdpError::Missing("o="))?,
            session_name: session_name.unwrap_or_else(|| "-".into()),
            connection,
            bandwidths,
            times,
            attributes,
            media,
        })
    }

    /// The effective direction of `media` (section, then session, then
    /// sendrecv).
    pub fn direction_of(&self, media: &MediaDescription) -> Direction {
        media.direction().or_else(|| attribute_direction(&self.attributes)).unwrap_or(Direction::SendRecv)
    }
}

fn write_attributes(f: &mut fmt::Formatter<'_>, attributes: &[Attribute]) -> fmt::Result {
    for a in attributes {
        match &a.value {
            Some(v) => write!(f, "a={}:{}\r\n", a.name, v)?,
            None => write!(f, "a={}\r\n", a.name)?,
        }
    }
    Ok(())
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.origin;
        write!(f, "v=0\r\n")?;
        write!(
            f,
            "o={} {} {} {} {} {}\r\n",
            o.username, o.session_id, o.session_version, o.net_type, o.addr_type, o.address
        )?;
        write!(f, "s={}\r\n", self.session_name)?;
        if let Some(c) = &self.connection {
            write!(f, "c={} {} {}\r\n", c.net_type, c.addr_type, c.address)?;
        }
        for b in &self.bandwidths {
            write!(f, "b={b}\r\n")?;
        }
        if self.times.is_empty() {
            write!(f, "t=0 0\r\n")?;
        }
        for (start, stop) in &self.times {
            write!(f, "t={start} {stop}\r\n")?;
        }
        write_attributes(f, &self.attributes)?;
        for m in &self.media {
            write!(f, "m={} {}", m.media, m.port)?;
            if let Some(n) = m.port_count {
                write!(f, "/{n}")?;
            }
            write!(f, " {}", m.protocol)?;
            for fmt in &m.formats {
                write!(f, " {fmt}")?;
            }
            write!(f, "\r\n")?;
            if let Some(c) = &m.connection {
                write!(f, "c={} {} {}\r\n", c.net_type, c.addr_type, c.address)?;
            }
            for b in &m.bandwidths {
                write!(f, "b={b}\r\n")?;
            }
            write_attributes(f, &m.attributes)?;
        }
        Ok(())
    }
}

/// What this node offers to use on a call leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// Our RTP address.
    pub address: IpAddr,
    /// Our RTP port (RTCP on `port + 1` unless muxed).
    pub port: u16,
    /// Codecs we accept (the offerer's order decides among them).
    pub codecs: Vec<CodecKind>,
    /// `o=` session id.
    pub session_id: u64,
    /// `o=` session version (increment on every new answer in a dialog).
    pub session_version: u64,
}

/// The chosen codec with the offerer's payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiatedCodec {
    /// Which codec.
    pub kind: CodecKind,
    /// Payload type to send and expect.
    pub payload_type: u8,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Channels as in `a=rtpmap` (2 for Opus).
    pub channels: u8,
}

/// The result of answering an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The answer body.
    pub answer_sdp: String,
    /// Codec.
    pub codec: NegotiatedCodec,
    /// telephone-event payload type at the codec's clock rate, if offered.
    pub dtmf_payload_type: Option<u8>,
    /// Where to send RTP; `None` on hold (`c=0.0.0.0`) or a disabled stream.
    pub remote_rtp: Option<SocketAddr>,
    /// Where to send RTCP if the offer said (`a=rtcp`, RFC 3605); otherwise
    /// the RTP port + 1, or the RTP address when muxed.
    pub remote_rtcp: Option<SocketAddr>,
    /// RTP and RTCP share the port (RFC 5761), answered when offered.
    pub rtcp_mux: bool,
    /// What we will do (our side, as written in the answer, minus sending
    /// when the remote gave no address).
    pub direction: Direction,
    /// Packetization interval we send with (a multiple of 20 ms).
    pub ptime_ms: u32,
}

fn supported_transport(protocol: &str) -> bool {
    protocol.eq_ignore_ascii_case("RTP/AVP") || protocol.eq_ignore_ascii_case("RTP/AVPF")
}

fn codec_of(rtpmap: &RtpMap) -> Option<CodecKind> {
    let name = rtpmap.encoding.as_str();
    let kind = [CodecKind::Pcmu, CodecKind::Pcma, CodecKind::Opus]
        .into_iter()
        .find(|k| k.encoding_name().eq_ignore_ascii_case(name))?;
    (rtpmap.clock_rate == kind.rtp_clock_rate()).then_some(kind)
}

/// The rtpmap of a format, with RFC 3551 defaults for static PCMU/PCMA.
fn effective_rtpmap(media: &MediaDescription, payload_type: u8) -> Option<RtpMap> {
    media.rtpmap(payload_type).or_else(|| {
        let kind =
            [CodecKind::Pcmu, CodecKind::Pcma].into_iter().find(|k| k.static_payload_type() == Some(payload_type))?;
        Some(RtpMap {
            payload_type,
            encoding: kind.encoding_name().into(),
            clock_rate: kind.rtp_clock_rate(),
            channels: None,
        })
    })
}

fn choose_codec(media: &MediaDescription, local: &LocalMedia) -> Option<NegotiatedCodec> {
    media.formats.iter().find_map(|format| {
        let payload_type: u8 = format.parse().ok().filter(|&pt: &u8| pt < 128)?;
        let kind = codec_of(&effective_rtpmap(media, payload_type)?)?;
        local.codecs.contains(&kind).then_some(NegotiatedCodec {
            kind,
            payload_type,
            clock_rate: kind.rtp_clock_rate(),
            channels: kind.rtpmap_channels(),
        })
    })
}

fn choose_dtmf(media: &MediaDescription, clock_rate: u32, codec_pt: u8) -> Option<u8> {
    media.formats.iter().filter_map(|f| f.parse::<u8>().ok()).filter(|&pt| pt < 128 && pt != codec_pt).find(|&pt| {
        media
            .rtpmap(pt)
            .is_some_and(|m| m.encoding.eq_ignore_ascii_case("telephone-event") && m.clock_rate == clock_rate)
    })
}

fn choose_ptime(media: &MediaDescription, session: &SessionDescription) -> u32 {
    let offered = media
        .ptime()
        .or_else(|| find_attribute(&session.attributes, "ptime").and_then(|a| parse_millis(a.value.as_deref()?)));
    let mut ptime = match offered {
        Some(p) if p % 20 == 0 && (20..=60).contains(&p) => p,
        _ => 20,
    };
    if let Some(max) = media.maxptime() {
        while ptime > 20 && ptime > max {
            ptime -= 20;
        }
    }
    ptime
}

fn rejected(media: &MediaDescription) -> MediaDescription {
    MediaDescription {
        media: media.media.clone(),
        port: 0,
        port_count: None,
        protocol: media.protocol.clone(),
        formats: media.formats.clone(),
        connection: None,
        bandwidths: Vec::new(),
        attributes: Vec::new(),
    }
}

fn attr(name: &str, value: impl Into<Option<String>>) -> Attribute {
    Attribute { name: name.into(), value: value.into() }
}

/// Answers an SDP offer for an audio-only UAS (RFC 3264 §6).
pub fn negotiate(offer: &str, local: &LocalMedia) -> Result<Negotiated, SdpError> {
    let offer = SessionDescription::parse(offer.as_bytes())?;

    // Pick the stream: the first enabled audio stream we can use, else the
    // first disabled (port 0) one we could have used.
    let mut first_error = None;
    let mut candidate = None;
    for (index, media) in offer.media.iter().enumerate() {
        if !media.media.eq_ignore_ascii_case("audio") {
            continue;
        }
        if !supported_transport(&media.protocol) {
            first_error.get_or_insert(SdpError::UnsupportedTransport(media.protocol.clone()));
            continue;
        }
        let Some(codec) = choose_codec(media, local) else {
            first_error = Some(SdpError::NoCommonCodec);
            continue;
        };
        if media.port != 0 {
            candidate = Some((index, codec));
            break;
        }
        candidate.get_or_insert((index, codec));
    }
    let Some((chosen, codec)) = candidate else {
        return Err(first_error.unwrap_or(SdpError::NoAudio));
    };
    let media = &offer.media[chosen];

    let connection = media.connection.as_ref().or(offer.connection.as_ref());
    let Some(connection) = connection else {
        return Err(SdpError::BadConnectionAddress(String::new()));
    };
    let Some(remote_ip) = connection.ip() else {
        return Err(SdpError::BadConnectionAddress(connection.address.clone()));
    };
    let disabled = media.port == 0;
    let on_hold_address = remote_ip.is_unspecified();
    let remote_rtp = (!disabled && !on_hold_address).then(|| SocketAddr::new(remote_ip, media.port));
    let rtcp_mux = media.attribute("rtcp-mux").is_some();
    let remote_rtcp = remote_rtp.and_then(|rtp| {
        let value = media.attribute("rtcp")?;
        let mut parts = value.split_ascii_whitespace();
        let port: u16 = parts.next()?.parse().ok()?;
        let ip = parts.nth(2).and_then(|a| a.parse().ok()).unwrap_or(rtp.ip());
        Some(SocketAddr::new(ip, port))
    });

    let offered_direction = offer.direction_of(media);
    let answer_direction = if disabled { Direction::Inactive } else { offered_direction.answer() };
    let direction = if remote_rtp.is_none() { answer_direction.without_send() } else { answer_direction };
    let dtmf_payload_type = choose_dtmf(media, codec.clock_rate, codec.payload_type);
    let ptime_ms = choose_ptime(media, &offer);

    let mut formats = vec![codec.payload_type.to_string()];
    let mut attributes = Vec::new();
    let channels = if codec.channels > 1 { format!("/{}", codec.channels) } else { String::new() };
    attributes.push(attr(
        "rtpmap",
        format!("{} {}/{}{}", codec.payload_type, codec.kind.encoding_name(), codec.clock_rate, channels),
    ));
    if codec.kind == CodecKind::Opus {
        // We decode at 16 kHz: the sender can save bits (RFC 7587 §6.1).
        attributes.push(attr(
            "fmtp",
            format!("{} maxplaybackrate=16000;sprop-maxcapturerate=16000;useinbandfec=1", codec.payload_type),
        ));
    }
    if let Some(pt) = dtmf_payload_type {
        formats.push(pt.to_string());
        attributes.push(attr("rtpmap", format!("{pt} telephone-event/{}", codec.clock_rate)));
        attributes.push(attr("fmtp", format!("{pt} 0-16")));
    }
    attributes.push(attr("ptime", ptime_ms.to_string()));
    if rtcp_mux && !disabled {
        attributes.push(attr("rtcp-mux", None));
    }
    attributes.push(attr(answer_direction.as_str(), None));

    let addr_type = if local.address.is_ipv4() { "IP4" } else { "IP6" };
    let accepted = MediaDescription {
        media: media.media.clone(),
        port: if disabled { 0 } else { local.port },
        port_count: None,
        protocol: media.protocol.clone(),
        formats,
        connection: None,
        bandwidths: Vec::new(),
        attributes,
    };
    let answer = SessionDescription {
        origin: Origin {
            username: WARN_AGENT.into(),
            session_id: local.session_id.to_string(),
            session_version: local.session_version.to_string(),
            net_type: "IN".into(),
            addr_type: addr_type.into(),
            address: local.address.to_string(),
        },
        session_name: WARN_AGENT.into(),
        connection: Some(Connection {
            net_type: "IN".into(),
            addr_type: addr_type.into(),
            address: local.address.to_string(),
        }),
        bandwidths: Vec::new(),
        times: vec![(0, 0)],
        attributes: Vec::new(),
        media: offer
            .media
            .iter()
            .enumerate()
            .map(|(i, m)| if i == chosen { accepted.clone() } else { rejected(m) })
            .collect(),
    };
    Ok(Negotiated {
        answer_sdp: answer.to_string(),
        codec,
        dtmf_payload_type,
        remote_rtp,
        remote_rtcp,
        rtcp_mux: rtcp_mux && !disabled,
        direction,
        ptime_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn local() -> LocalMedia {
        LocalMedia {
            address: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            port: 40_000,
            codecs: vec![CodecKind::Opus, CodecKind::Pcmu, CodecKind::Pcma],
            session_id: 1234,
            session_version: 1,
        }
    }

    const CARRIER_OFFER: &str = "v=0\r\n\
o=carrier 2890844526 2890844527 IN IP4 203.0.113.5\r\n\
s=-\r\n\
c=IN IP4 203.0.113.5\r\n\
t=0 0\r\n\
m=audio 30000 RTP/AVP 18 8 0 101\r\n\
a=rtpmap:18 G729/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

    #[test]
    fn answers_a_carrier_offer_in_the_offerers_order() {
        let n = negotiate(CARRIER_OFFER, &local()).unwrap();
        assert_eq!(n.codec, NegotiatedCodec { kind: CodecKind::Pcma, payload_type: 8, clock_rate: 8000, channels: 1 });
        assert_eq!(n.dtmf_payload_type, Some(101));
        assert_eq!(n.remote_rtp, Some("203.0.113.5:30000".parse().unwrap()));
        assert_eq!(n.direction, Direction::SendRecv);
        assert_eq!(n.ptime_ms, 20);
        assert!(!n.rtcp_mux);
        let expected = "v=0\r\n\
o=voice-edge 1234 1 IN IP4 198.51.100.7\r\n\
s=voice-edge\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
m=audio 40000 RTP/AVP 8 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";
        assert_eq!(n.answer_sdp, expected);
        // The answer is itself valid SDP.
        let answer = SessionDescription::parse(n.answer_sdp.as_bytes()).unwrap();
        assert_eq!(answer.to_string(), n.answer_sdp);
    }

    #[test]
    fn opus_keeps_the_dynamic_payload_type_and_matching_dtmf_rate() {
        let offer = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n\
m=audio 5004 RTP/AVPF 96 0 97 98\n\
a=rtpmap:96 opus/48000/2\na=fmtp:96 useinbandfec=1\n\
a=rtpmap:97 telephone-event/8000\na=rtpmap:98 telephone-event/48000\n\
a=ptime:40\na=rtcp-mux\na=rtcp:5005 IN IP4 192.0.2.9\n";
        let n = negotiate(offer, &local()).unwrap();
        assert_eq!(n.codec.kind, CodecKind::Opus);
        assert_eq!(n.codec.payload_type, 96);
        assert_eq!((n.codec.clock_rate, n.codec.channels), (48_000, 2));
        assert_eq!(n.dtmf_payload_type, Some(98));
        assert_eq!(n.ptime_ms, 40);
        assert!(n.rtcp_mux);
        assert_eq!(n.remote_rtcp, Some("192.0.2.9:5005".parse().unwrap()));
        assert!(n.answer_sdp.contains("m=audio 40000 RTP/AVPF 96 98\r\n"));
        assert!(n.answer_sdp.contains("a=rtpmap:96 opus/48000/2\r\n"));
        assert!(n.answer_sdp.contains("a=fmtp:98 0-16\r\n"));
        assert!(n.answer_sdp.contains("a=rtcp-mux\r\n"));
        // Without Opus locally, the static PCMU (no rtpmap needed) is chosen.
        let g711_only = LocalMedia { codecs: vec![CodecKind::Pcmu], ..local() };
        let n = negotiate(offer, &g711_only).unwrap();
        assert_eq!((n.codec.kind, n.codec.payload_type, n.dtmf_payload_type), (CodecKind::Pcmu, 0, Some(97)));
        assert!(n.answer_sdp.contains("a=rtpmap:0 PCMU/8000\r\n"));
    }

    #[test]
    fn hold_semantics() {
        let sendonly = CARRIER_OFFER.replace("a=sendrecv", "a=sendonly");
        let n = negotiate(&sendonly, &local()).unwrap();
        assert_eq!(n.direction, Direction::RecvOnly);
        assert!(n.answer_sdp.contains("a=recvonly\r\n"));
        assert!(n.remote_rtp.is_some());

        let inactive = CARRIER_OFFER.replace("a=sendrecv", "a=inactive");
        assert_eq!(negotiate(&inactive, &local()).unwrap().direction, Direction::Inactive);

        let recvonly = CARRIER_OFFER.replace("a=sendrecv", "a=recvonly");
        assert_eq!(negotiate(&recvonly, &local()).unwrap().direction, Direction::SendOnly);

        // RFC 2543 hold: c=0.0.0.0, no direction attribute.
        let old_hold = CARRIER_OFFER.replace("c=IN IP4 203.0.113.5", "c=IN IP4 0.0.0.0").replace("a=sendrecv\r\n", "");
        let n = negotiate(&old_hold, &local()).unwrap();
        assert_eq!(n.remote_rtp, None);
        assert_eq!(n.direction, Direction::RecvOnly);

        // Session-level direction applies when the section has none.
        let session_level = CARRIER_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n").replace("a=sendrecv\r\n", "");
        assert_eq!(negotiate(&session_level, &local()).unwrap().direction, Direction::RecvOnly);
    }

    #[test]
    fn rejects_other_streams_with_port_zero() {
        let offer = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=video 6000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
m=audio 6002 RTP/SAVP 0\r\n\
m=audio 6004 RTP/AVP 0\r\n";
        let n = negotiate(offer, &local()).unwrap();
        let answer = SessionDescription::parse(n.answer_sdp.as_bytes()).unwrap();
        assert_eq!(answer.media.len(), 3);
        assert_eq!((answer.media[0].port, answer.media[0].media.as_str()), (0, "video"));
        assert_eq!(answer.media[0].formats, vec!["96"]);
        assert_eq!((answer.media[1].port, answer.media[1].protocol.as_str()), (0, "RTP/SAVP"));
        assert_eq!(answer.media[2].port, 40_000);
        assert_eq!(n.remote_rtp, Some("192.0.2.1:6004".parse().unwrap()));
    }

    #[test]
    fn disabled_audio_stream_is_answered_with_port_zero_and_no_remote() {
        let offer = CARRIER_OFFER.replace("m=audio 30000", "m=audio 0");
        let n = negotiate(&offer, &local()).unwrap();
        assert_eq!(n.remote_rtp, None);
        assert_eq!(n.direction, Direction::Inactive);
        assert!(n.answer_sdp.contains("m=audio 0 RTP/AVP 8 101\r\n"));
    }

    #[test]
    fn ptime_is_mirrored_only_for_whole_frames_and_capped_by_maxptime() {
        for (ptime, expected) in [("30", 20), ("60", 60), ("10", 20), ("40.0", 40), ("junk", 20)] {
            let offer = CARRIER_OFFER.replace("a=ptime:20", &format!("a=ptime:{ptime}"));
            assert_eq!(negotiate(&offer, &local()).unwrap().ptime_ms, expected, "ptime {ptime}");
        }
        let capped = CARRIER_OFFER.replace("a=ptime:20", "a=ptime:60\r\na=maxptime:40");
        assert_eq!(negotiate(&capped, &local()).unwrap().ptime_ms, 40);
        let absent = CARRIER_OFFER.replace("a=ptime:20\r\n", "");
        let n = negotiate(&absent, &local()).unwrap();
        assert_eq!(n.ptime_ms, 20);
        assert!(n.answer_sdp.contains("a=ptime:20\r\n"));
    }

    #[test]
    fn negotiation_errors_carry_warning_texts() {
        let g729_only = CARRIER_OFFER.replace("m=audio 30000 RTP/AVP 18 8 0 101", "m=audio 30000 RTP/AVP 18 101");
        let e = negotiate(&g729_only, &local()).unwrap_err();
        assert_eq!(e, SdpError::NoCommonCodec);
        assert_eq!(e.warning(), "305 voice-edge \"Incompatible media format\"");
        assert_eq!(e.status_code(), 488);

        let video_only =
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=video 6000 RTP/AVP 96\r\n";
        let e = negotiate(video_only, &local()).unwrap_err();
        assert_eq!(e.warning(), "304 voice-edge \"Media type not available\"");

        let srtp = CARRIER_OFFER.replace("RTP/AVP", "RTP/SAVP");
        assert_eq!(
            negotiate(&srtp, &local()).unwrap_err().warning(),
            "302 voice-edge \"Incompatible transport protocol\""
        );

        let fqdn = CARRIER_OFFER.replace("c=IN IP4 203.0.113.5", "c=IN IP4 media.example.com");
        assert!(matches!(negotiate(&fqdn, &local()), Err(SdpError::BadConnectionAddress(_))));

        let no_c = CARRIER_OFFER.replace("c=IN IP4 203.0.113.5\r\n", "");
        assert!(matches!(negotiate(&no_c, &local()), Err(SdpError::BadConnectionAddress(_))));

        let none = LocalMedia { codecs: vec![], ..local() };
        assert_eq!(negotiate(CARRIER_OFFER, &none), Err(SdpError::NoCommonCodec));
    }

    #[test]
    fn parser_rejects_malformed_and_oversized_bodies() {
        type Check = fn(&SdpError) -> bool;
        let cases: &[(&[u8], Check)] = &[
            (b"", |e| matches!(e, SdpError::Missing(_))),
            (b"o=- 1 1 IN IP4 1.2.3.4\r\n", |e| matches!(e, SdpError::Missing(_))),
            (b"v=1\r\n", |e| matches!(e, SdpError::BadLine { line: 1, .. })),
            (b"v=0\r\ns=x\r\n", |e| *e == SdpError::Missing("o=")),
            (b"v=0\r\no=- 1 1 IN IP4\r\n", |e| matches!(e, SdpError::BadLine { line: 2, .. })),
            (b"v=0\r\no=- 1 1 IN IP4 a\r\nm=audio x RTP/AVP 0\r\n", |e| matches!(e, SdpError::BadLine { line: 3, .. })),
            (b"v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 70000 RTP/AVP 0\r\n", |e| matches!(e, SdpError::BadLine { .. })),
            (b"v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 1 RTP/AVP\r\n", |e| matches!(e, SdpError::BadLine { .. })),
            (b"v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4\r\n", |e| matches!(e, SdpError::BadLine { .. })),
            (b"v=0\r\no=- 1 1 IN IP4 a\r\nX=1\r\n", |e| matches!(e, SdpError::BadLine { .. })),
            (b"v=0\r\no=- 1 1 IN IP4 a\r\na=\r\n", |e| matches!(e, SdpError::BadLine { .. })),
            (b"v=0\r\no=- 1 1 IN IP4 a\r\nt=now later\r\n", |e| matches!(e, SdpError::BadLine { .. })),
            (b"v=0\r\no=\xff\r\n", |e| *e == SdpError::NotUtf8),
        ];
        for (body, check) in cases {
            let e = SessionDescription::parse(body).unwrap_err();
            assert!(check(&e), "{:?} gave {e:?}", String::from_utf8_lossy(body));
            assert_eq!(e.status_code(), 400);
        }
        let big = format!("v=0\r\no=- 1 1 IN IP4 a\r\n{}", "a=x\r\n".repeat(4_000));
        assert!(matches!(SessionDescription::parse(big.as_bytes()), Err(SdpError::TooLarge { .. })));
        let many_lines = format!("v=0\r\no=- 1 1 IN IP4 a\r\n{}", "a=x\r\n".repeat(600));
        assert_eq!(SessionDescription::parse(many_lines.as_bytes()), Err(SdpError::LimitExceeded("lines")));
        let many_media = format!("v=0\r\no=- 1 1 IN IP4 a\r\n{}", "m=audio 1 RTP/AVP 0\r\n".repeat(17));
        assert_eq!(SessionDescription::parse(many_media.as_bytes()), Err(SdpError::LimitExceeded("media sections")));
        let long_line = format!("v=0\r\no=- 1 1 IN IP4 a\r\na={}\r\n", "y".repeat(2_000));
        assert_eq!(SessionDescription::parse(long_line.as_bytes()), Err(SdpError::LimitExceeded("line length")));
    }

    #[test]
    fn parse_serialize_round_trip_keeps_unknown_attributes() {
        let sdp = SessionDescription::parse(CARRIER_OFFER.as_bytes()).unwrap();
        assert_eq!(sdp.to_string(), CARRIER_OFFER);
        let m = &sdp.media[0];
        assert_eq!(m.rtpmap(18).unwrap().encoding, "G729");
        assert_eq!(m.fmtp(101), Some("0-15"));
        assert_eq!(m.ptime(), Some(20));
        assert_eq!(sdp.direction_of(m), Direction::SendRecv);
    }

    /// Mutation fuzz over parse and negotiate: no panics, and whatever
    /// negotiates yields an answer that parses.
    #[test]
    fn mutation_fuzz_never_panics() {
        let seeds = [CARRIER_OFFER.as_bytes().to_vec()];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let alphabet = b" :/=\r\n0123456789aemcotv-.";
        let mut negotiated = 0;
        for _ in 0..5_000 {
            let mut bytes = seeds[0].clone();
            for _ in 0..(next() % 6 + 1) {
                let r = next();
                let i = (r as usize >> 16) % bytes.len().max(1);
                match r % 4 {
                    0 if !bytes.is_empty() => bytes[i] = alphabet[(r >> 40) as usize % alphabet.len()],
                    1 if !bytes.is_empty() => {
                        bytes.remove(i);
                    }
                    2 => bytes.insert(i.min(bytes.len()), alphabet[(r >> 40) as usize % alphabet.len()]),
                    _ => {
                        let span = (bytes.len() - i).max(1);
                        if i < bytes.len() {
                            bytes[i..].rotate_left((r >> 48) as usize % span);
                        }
                    }
                }
            }
            let _ = SessionDescription::parse(&bytes);
            if let Ok(text) = std::str::from_utf8(&bytes) {
                if let Ok(n) = negotiate(text, &local()) {
                    negotiated += 1;
                    SessionDescription::parse(n.answer_sdp.as_bytes()).unwrap();
                }
            }
        }
        assert!(negotiated > 200, "fuzz rarely reached a successful negotiation ({negotiated})");
    }
}
