//! Typed views of the header fields a UAS needs (RFC 3261 §20, ABNF §25.1):
//! Via (§20.42, with `received`/`rport` of RFC 3581), From/To/Contact
//! (`name-addr` / `addr-spec`, §20.10, §20.20, §20.39), Call-ID (§20.8),
//! CSeq (§20.16), Max-Forwards (§20.22), Content-Length (§20.14),
//! Content-Type and Accept (§20.15, §20.1), Require / Proxy-Require /
//! Supported / Unsupported (§20.32, §20.29, §20.37, §20.40), Allow (§20.5),
//! Expires (§20.19) and the Date syntax check (§20.17, RFC 1123 in GMT).
//!
//! Values are parsed on demand from the raw strings in [`Headers`]; every
//! accessor returns a [`HeaderError`] that names the header and the fault,
//! ready to become the reason phrase of a 400.

use core::net::IpAddr;
use std::fmt;
use std::str::FromStr;

use super::headers::Headers;
use super::message::Method;
use super::params::Params;
use super::syntax::{
    describe_byte, is_token, is_token_byte, is_ws, parse_decimal, quote, split_list, trim_ws,
    unquote, Scanner,
};
use super::uri::{split_hostport, Host, Uri};

/// A missing, repeated or malformed header field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("multiple {0} headers")]
    Multiple(&'static str),
    #[error("invalid {header} header: {reason}")]
    Invalid {
        header: &'static str,
        reason: String,
    },
}

fn invalid(header: &'static str) -> impl Fn(String) -> HeaderError {
    move |reason| HeaderError::Invalid { header, reason }
}

// ---------------------------------------------------------------- Via

/// The transport of a Via `sent-protocol`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Sctp,
    TlsSctp,
    Ws,
    Wss,
    /// Any other token (RFC 4475 §3.1.1.10: unknown transports must parse).
    Other(String),
}

impl Transport {
    /// Case-insensitive.
    pub fn from_token(s: &str) -> Transport {
        match s.to_ascii_uppercase().as_str() {
            "UDP" => Transport::Udp,
            "TCP" => Transport::Tcp,
            "TLS" => Transport::Tls,
            "SCTP" => Transport::Sctp,
            "TLS-SCTP" => Transport::TlsSctp,
            "WS" => Transport::Ws,
            "WSS" => Transport::Wss,
            _ => Transport::Other(s.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Sctp => "SCTP",
            Transport::TlsSctp => "TLS-SCTP",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
            Transport::Other(s) => s,
        }
    }

    /// 5061 for TLS-based transports, 5060 otherwise (RFC 3261 §18.2.2).
    pub fn default_port(&self) -> u16 {
        match self {
            Transport::Tls | Transport::TlsSctp | Transport::Wss => 5061,
            _ => 5060,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `via-parm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `protocol-name`, normally `SIP`.
    pub protocol: String,
    /// `protocol-version`, normally `2.0`.
    pub version: String,
    pub transport: Transport,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
}

/// RFC 3261 §8.1.1.7 magic cookie.
pub const BRANCH_MAGIC_COOKIE: &str = "z9hG4bK";

impl Via {
    /// Parses one `via-parm` (use [`Via::parse_list`] for a whole value).
    pub fn parse(s: &str) -> Result<Via, HeaderError> {
        parse_via(s).map_err(invalid("Via"))
    }

    /// Parses a Via header value, which may hold several comma-separated
    /// `via-parm`s.
    pub fn parse_list(value: &str) -> Result<Vec<Via>, HeaderError> {
        split_list(value)
            .into_iter()
            .map(|item| {
                if item.is_empty() {
                    Err(invalid("Via")("empty value in list".into()))
                } else {
                    Via::parse(item)
                }
            })
            .collect()
    }

    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }

    /// Whether the branch carries the RFC 3261 magic cookie and something
    /// after it (RFC 4475 §3.2.1: a bare cookie is an RFC 2543 style id).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| {
            b.len() > BRANCH_MAGIC_COOKIE.len() && b.starts_with(BRANCH_MAGIC_COOKIE)
        })
    }

    pub fn received(&self) -> Option<&str> {
        self.params.value("received")
    }

    /// `received` as an address, if it is one.
    pub fn received_ip(&self) -> Option<IpAddr> {
        self.received().and_then(|r| {
            let r = r
                .strip_prefix('[')
                .and_then(|x| x.strip_suffix(']'))
                .unwrap_or(r);
            IpAddr::from_str(r).ok()
        })
    }

    /// Whether `rport` is present (RFC 3581 §3), with or without a value.
    pub fn rport_requested(&self) -> bool {
        self.params.contains("rport")
    }

    /// The `rport` value filled in by a server, if any.
    pub fn rport(&self) -> Option<u16> {
        self.params.value("rport").and_then(|v| v.parse().ok())
    }

    pub fn maddr(&self) -> Option<&str> {
        self.params.value("maddr")
    }

    pub fn ttl(&self) -> Option<u8> {
        self.params.value("ttl").and_then(|v| v.parse().ok())
    }

    /// `sent-by` as written on the wire: `host[:port]`.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.to_string(),
        }
    }

    /// `sent-by` port, or the transport's default.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or_else(|| self.transport.default_port())
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{} {}",
            self.protocol, self.version, self.transport, self.host
        )?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

impl FromStr for Via {
    type Err = HeaderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Via::parse(s)
    }
}

fn expect_token<'a>(sc: &mut Scanner<'a>, what: &str) -> Result<&'a str, String> {
    let t = sc.take_while(is_token_byte);
    if t.is_empty() {
        return Err(match sc.peek() {
            Some(b) => format!(
                "invalid character {} where {what} expected",
                describe_byte(b)
            ),
            None => format!("missing {what}"),
        });
    }
    Ok(t)
}

fn parse_via(s: &str) -> Result<Via, String> {
    let mut sc = Scanner::new(s);
    sc.skip_ws();
    let protocol = expect_token(&mut sc, "protocol name")?.to_string();
    sc.skip_ws();
    if !sc.eat(b'/') {
        return Err("expected '/' after protocol name".into());
    }
    sc.skip_ws();
    let version = expect_token(&mut sc, "protocol version")?.to_string();
    sc.skip_ws();
    if !sc.eat(b'/') {
        return Err("expected '/' after protocol version".into());
    }
    sc.skip_ws();
    let transport = Transport::from_token(expect_token(&mut sc, "transport")?);
    if !sc.skip_ws() {
        return Err("missing whitespace before sent-by".into());
    }
    let start = sc.pos();
    if sc.peek() == Some(b'[') {
        sc.take_while(|b| b != b']');
        if !sc.eat(b']') {
            return Err("unterminated IPv6 reference".into());
        }
    } else {
        sc.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    }
    let host_text = sc.slice(start);
    sc.skip_ws();
    let port_text = if sc.eat(b':') {
        sc.skip_ws();
        Some(sc.take_while(|b| b.is_ascii_digit()))
    } else {
        None
    };
    let hostport = match port_text {
        Some(p) => format!("{host_text}:{p}"),
        None => host_text.to_string(),
    };
    let (host, port) = split_hostport(&hostport).map_err(|e| format!("sent-by: {e}"))?;
    let params = parse_header_params(&mut sc)?;
    Ok(Via {
        protocol,
        version,
        transport,
        host,
        port,
        params,
    })
}

/// `*( SEMI generic-param )` up to the end of the input (trailing
/// whitespace allowed); empty parameters are an error.
fn parse_header_params(sc: &mut Scanner<'_>) -> Result<Params, String> {
    let mut params = Params::new();
    loop {
        sc.skip_ws();
        match sc.peek() {
            None => return Ok(params),
            Some(b';') => sc.bump(),
            Some(b) => return Err(format!("unexpected character {}", describe_byte(b))),
        }
        sc.skip_ws();
        let name = sc.take_while(is_token_byte);
        if name.is_empty() {
            return Err("empty parameter".into());
        }
        sc.skip_ws();
        let value = if sc.eat(b'=') {
            sc.skip_ws();
            Some(sc.gen_value()?.to_string())
        } else {
            None
        };
        params.push(name, value);
    }
}

// ---------------------------------------------------------------- name-addr

/// `( name-addr / addr-spec ) *( SEMI param )`: From, To, one Contact, Route
/// and Refer-To style values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name, unquoted and unescaped (tokens joined by one SP).
    pub display_name: Option<String>,
    pub uri: Uri,
    /// Header parameters (after the URI or the `>`).
    pub params: Params,
}

impl NameAddr {
    pub fn new(uri: Uri) -> Self {
        NameAddr {
            display_name: None,
            uri,
            params: Params::new(),
        }
    }

    /// Parses one value; the fault is reported against an "address" header.
    pub fn parse(s: &str) -> Result<NameAddr, HeaderError> {
        parse_name_addr(s).map_err(invalid("address"))
    }

    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }
}

impl fmt::Display for NameAddr {
    /// Always the `name-addr` form (`<...>`), which is safe for any URI.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display_name {
            write!(f, "{} ", quote(d))?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

impl FromStr for NameAddr {
    type Err = HeaderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NameAddr::parse(s)
    }
}

fn angle_uri(sc: &mut Scanner<'_>) -> Result<Uri, String> {
    let inner = sc.take_while(|b| b != b'>');
    if !sc.eat(b'>') {
        return Err("missing '>'".into());
    }
    if inner.bytes().next().is_some_and(is_ws) || inner.bytes().last().is_some_and(is_ws) {
        return Err("whitespace inside <>".into());
    }
    Uri::parse(inner).map_err(|e| e.to_string())
}

fn parse_name_addr(s: &str) -> Result<NameAddr, String> {
    let mut sc = Scanner::new(s);
    sc.skip_ws();
    let (display_name, uri) = match sc.peek() {
        None => return Err("empty value".into()),
        Some(b'"') => {
            let inner = sc.quoted()?;
            sc.skip_ws();
            if !sc.eat(b'<') {
                return Err("expected '<' after display name".into());
            }
            (Some(unquote(inner)), angle_uri(&mut sc)?)
        }
        Some(b'<') => {
            sc.bump();
            (None, angle_uri(&mut sc)?)
        }
        Some(_) => {
            let start = sc.pos();
            let first = expect_token(&mut sc, "address")?;
            if sc.peek() == Some(b':') {
                // addr-spec: the URI runs to the first ';' or whitespace.
                // A URI holding ',', '?' or ';' must be in <> (§20.10).
                let mut full = Scanner::new(&s[start..]);
                let text = full.take_while(|b| b != b';' && !is_ws(b));
                if let Some(b) = text
                    .bytes()
                    .find(|b| matches!(b, b'?' | b',' | b'<' | b'>' | b'"'))
                {
                    return Err(format!(
                        "URI with {} must be enclosed in <>",
                        describe_byte(b)
                    ));
                }
                let uri = Uri::parse(text).map_err(|e| e.to_string())?;
                let params = parse_header_params(&mut full)?;
                return Ok(NameAddr {
                    display_name: None,
                    uri,
                    params,
                });
            }
            let mut words = vec![first];
            loop {
                sc.skip_ws();
                match sc.peek() {
                    Some(b'<') => {
                        sc.bump();
                        break;
                    }
                    Some(b) if is_token_byte(b) => words.push(sc.take_while(is_token_byte)),
                    Some(b) => {
                        return Err(format!(
                            "invalid character {} in display name",
                            describe_byte(b)
                        ))
                    }
                    None => return Err("missing '<' after display name".into()),
                }
            }
            (Some(words.join(" ")), angle_uri(&mut sc)?)
        }
    };
    let params = parse_header_params(&mut sc)?;
    Ok(NameAddr {
        display_name,
        uri,
        params,
    })
}

/// Parses a `name-addr / addr-spec` value, naming `header` in the error.
pub(crate) fn name_addr_for(header: &'static str, value: &str) -> Result<NameAddr, HeaderError> {
    parse_name_addr(value).map_err(invalid(header))
}

/// A Contact header value: `*` or a list of addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts {
    /// `Contact: *` (REGISTER removal, §10.2.2).
    Star,
    List(Vec<NameAddr>),
}

impl Contacts {
    /// Parses one Contact header value.
    pub fn parse(value: &str) -> Result<Contacts, HeaderError> {
        let e = invalid("Contact");
        if trim_ws(value) == "*" {
            return Ok(Contacts::Star);
        }
        let mut out = Vec::new();
        for item in split_list(value) {
            if item.is_empty() {
                return Err(e("empty value in list".into()));
            }
            out.push(parse_name_addr(item).map_err(&e)?);
        }
        Ok(Contacts::List(out))
    }
}

// ---------------------------------------------------------------- CSeq etc.

/// `CSeq: 1*DIGIT LWS Method`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(s: &str) -> Result<CSeq, HeaderError> {
        let e = invalid("CSeq");
        let mut sc = Scanner::new(s);
        sc.skip_ws();
        let digits = sc.take_while(|b| b.is_ascii_digit());
        if digits.is_empty() {
            return Err(e("missing sequence number".into()));
        }
        let n = parse_decimal(digits).map_err(&e)?;
        let seq = u32::try_from(n).map_err(|_| e("sequence number too large".into()))?;
        if !sc.skip_ws() {
            return Err(e("missing whitespace before method".into()));
        }
        let m = expect_token(&mut sc, "method").map_err(&e)?;
        let method = Method::from_token(m).ok_or_else(|| e("invalid method".into()))?;
        sc.skip_ws();
        if let Some(b) = sc.peek() {
            return Err(e(format!("unexpected character {}", describe_byte(b))));
        }
        Ok(CSeq { seq, method })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// Checks a Call-ID (`word ["@" word]`, §25.1): any visible ASCII, no
/// whitespace.
pub fn check_call_id(s: &str) -> Result<(), HeaderError> {
    let e = invalid("Call-ID");
    let v = trim_ws(s);
    if v.is_empty() {
        return Err(e("empty".into()));
    }
    if let Some(b) = v.bytes().find(|b| !b.is_ascii_graphic()) {
        return Err(e(format!("invalid character {}", describe_byte(b))));
    }
    if v.bytes().filter(|&b| b == b'@').count() > 1 {
        return Err(e("more than one '@'".into()));
    }
    Ok(())
}

/// Parses a Max-Forwards value (0..=255, §20.22).
pub fn parse_max_forwards(s: &str) -> Result<u8, HeaderError> {
    let e = invalid("Max-Forwards");
    let n = parse_decimal(trim_ws(s)).map_err(&e)?;
    u8::try_from(n).map_err(|_| e("value above 255".into()))
}

/// Parses a Content-Length value (`1*DIGIT`, §20.14).
pub fn parse_content_length(s: &str) -> Result<usize, HeaderError> {
    let e = invalid("Content-Length");
    let n = parse_decimal(trim_ws(s)).map_err(&e)?;
    usize::try_from(n).map_err(|_| e("number too large".into()))
}

/// `m-type "/" m-subtype *( ";" m-parameter )`; also used for Accept's
/// media ranges (`*/*`, `application/*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    pub mtype: String,
    pub subtype: String,
    pub params: Params,
}

impl MediaType {
    pub fn parse(s: &str) -> Result<MediaType, HeaderError> {
        parse_media_type(s).map_err(invalid("Content-Type"))
    }

    /// Case-insensitive type/subtype match.
    pub fn is(&self, mtype: &str, subtype: &str) -> bool {
        self.mtype.eq_ignore_ascii_case(mtype) && self.subtype.eq_ignore_ascii_case(subtype)
    }

    /// Whether this media range (from Accept) admits `mtype/subtype`.
    pub fn admits(&self, mtype: &str, subtype: &str) -> bool {
        (self.mtype == "*" || self.mtype.eq_ignore_ascii_case(mtype))
            && (self.subtype == "*" || self.subtype.eq_ignore_ascii_case(subtype))
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}{}", self.mtype, self.subtype, self.params)
    }
}

fn parse_media_type(s: &str) -> Result<MediaType, String> {
    let mut sc = Scanner::new(s);
    sc.skip_ws();
    let mtype = expect_token(&mut sc, "media type")?.to_string();
    sc.skip_ws();
    if !sc.eat(b'/') {
        return Err("expected '/' in media type".into());
    }
    sc.skip_ws();
    let subtype = expect_token(&mut sc, "media subtype")?.to_string();
    let params = parse_header_params(&mut sc)?;
    Ok(MediaType {
        mtype,
        subtype,
        params,
    })
}

/// A comma-separated list of tokens (option-tags, methods); an empty value
/// is an empty list.
fn parse_token_list(header: &'static str, value: &str) -> Result<Vec<String>, HeaderError> {
    if trim_ws(value).is_empty() {
        return Ok(Vec::new());
    }
    split_list(value)
        .into_iter()
        .map(|t| {
            if is_token(t) {
                Ok(t.to_string())
            } else {
                Err(invalid(header)(format!(
                    "invalid token {:?}",
                    super::syntax::sanitize_line(t, 40)
                )))
            }
        })
        .collect()
}

/// Checks `SIP-date` (RFC 3261 §20.17: RFC 1123 date, GMT only), e.g.
/// `Sat, 13 Nov 2010 23:29:00 GMT`.
pub fn check_date(s: &str) -> Result<(), HeaderError> {
    let e = invalid("Date");
    let s = trim_ws(s);
    let (wkday, rest) = s
        .split_once(", ")
        .ok_or_else(|| e("expected \"Wkd, \"".into()))?;
    if !["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].contains(&wkday) {
        return Err(e("invalid weekday".into()));
    }
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, zone] = parts.as_slice() else {
        return Err(e("expected \"DD Mon YYYY HH:MM:SS GMT\"".into()));
    };
    let digits = |t: &str, n: usize| t.len() == n && t.bytes().all(|b| b.is_ascii_digit());
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    if !digits(day, 2) || !MONTHS.contains(month) || !digits(year, 4) {
        return Err(e("invalid date".into()));
    }
    let hms: Vec<&str> = time.split(':').collect();
    if hms.len() != 3 || !hms.iter().all(|t| digits(t, 2)) {
        return Err(e("invalid time".into()));
    }
    if *zone != "GMT" {
        return Err(e("time zone must be GMT".into()));
    }
    Ok(())
}

// ---------------------------------------------------------------- accessors

impl Headers {
    /// The value of a header that may appear at most once.
    fn single(&self, name: &'static str) -> Result<Option<&str>, HeaderError> {
        let mut it = self.get_all(name);
        let first = it.next();
        if it.next().is_some() {
            return Err(HeaderError::Multiple(name));
        }
        Ok(first)
    }

    fn required(&self, name: &'static str) -> Result<&str, HeaderError> {
        self.single(name)?.ok_or(HeaderError::Missing(name))
    }

    /// Every Via, top first (an empty list when there is none).
    pub fn via(&self) -> Result<Vec<Via>, HeaderError> {
        let mut out = Vec::new();
        for v in self.get_all("Via") {
            out.extend(Via::parse_list(v)?);
        }
        Ok(out)
    }

    /// The topmost Via.
    pub fn top_via(&self) -> Result<Via, HeaderError> {
        let first = self.get("Via").ok_or(HeaderError::Missing("Via"))?;
        let item = split_list(first).into_iter().next().unwrap_or("");
        Via::parse(item)
    }

    /// The From header (`from_addr` because `from` reads like a conversion).
    pub fn from_addr(&self) -> Result<NameAddr, HeaderError> {
        name_addr_for("From", self.required("From")?)
    }

    /// The To header.
    pub fn to_addr(&self) -> Result<NameAddr, HeaderError> {
        name_addr_for("To", self.required("To")?)
    }

    pub fn call_id(&self) -> Result<&str, HeaderError> {
        let v = self.required("Call-ID")?;
        check_call_id(v)?;
        Ok(trim_ws(v))
    }

    pub fn cseq(&self) -> Result<CSeq, HeaderError> {
        CSeq::parse(self.required("CSeq")?)
    }

    pub fn max_forwards(&self) -> Result<Option<u8>, HeaderError> {
        self.single("Max-Forwards")?
            .map(parse_max_forwards)
            .transpose()
    }

    /// All Contact values merged (`None` without a Contact header).
    pub fn contact(&self) -> Result<Option<Contacts>, HeaderError> {
        let mut list = Vec::new();
        let mut any = false;
        let mut star = false;
        for v in self.get_all("Contact") {
            any = true;
            match Contacts::parse(v)? {
                Contacts::Star => star = true,
                Contacts::List(l) => list.extend(l),
            }
        }
        match (any, star) {
            (false, _) => Ok(None),
            (true, true) if list.is_empty() && self.count("Contact") == 1 => {
                Ok(Some(Contacts::Star))
            }
            (true, true) => Err(invalid("Contact")("'*' mixed with addresses".into())),
            (true, false) => Ok(Some(Contacts::List(list))),
        }
    }

    /// Content-Length; repeated identical values are tolerated, differing
    /// ones are [`HeaderError::Multiple`].
    pub fn content_length(&self) -> Result<Option<usize>, HeaderError> {
        let mut out: Option<usize> = None;
        for v in self.get_all("Content-Length") {
            let n = parse_content_length(v)?;
            match out {
                Some(m) if m != n => return Err(HeaderError::Multiple("Content-Length")),
                _ => out = Some(n),
            }
        }
        Ok(out)
    }

    pub fn content_type(&self) -> Result<Option<MediaType>, HeaderError> {
        self.single("Content-Type")?
            .map(MediaType::parse)
            .transpose()
    }

    /// Accept media ranges; `None` without the header, an empty list for an
    /// empty header ("nothing acceptable", §20.1).
    pub fn accept(&self) -> Result<Option<Vec<MediaType>>, HeaderError> {
        if !self.contains("Accept") {
            return Ok(None);
        }
        let mut out = Vec::new();
        for item in self.values("Accept") {
            if item.is_empty() {
                continue;
            }
            out.push(parse_media_type(item).map_err(invalid("Accept"))?);
        }
        Ok(Some(out))
    }

    pub fn require(&self) -> Result<Vec<String>, HeaderError> {
        self.token_list("Require")
    }

    pub fn proxy_require(&self) -> Result<Vec<String>, HeaderError> {
        self.token_list("Proxy-Require")
    }

    pub fn supported(&self) -> Result<Vec<String>, HeaderError> {
        self.token_list("Supported")
    }

    pub fn unsupported(&self) -> Result<Vec<String>, HeaderError> {
        self.token_list("Unsupported")
    }

    /// Allow, as methods.
    pub fn allow(&self) -> Result<Vec<Method>, HeaderError> {
        Ok(self
            .token_list("Allow")?
            .iter()
            .filter_map(|t| Method::from_token(t))
            .collect())
    }

    /// Expires in seconds. Malformed or overlarge values are errors; RFC
    /// 3261 §20.19 says callers SHOULD then treat the value as 3600.
    pub fn expires(&self) -> Result<Option<u32>, HeaderError> {
        let e = invalid("Expires");
        match self.single("Expires")? {
            None => Ok(None),
            Some(v) => {
                let n = parse_decimal(trim_ws(v)).map_err(&e)?;
                u32::try_from(n)
                    .map(Some)
                    .map_err(|_| e("value too large".into()))
            }
        }
    }

    fn token_list(&self, name: &'static str) -> Result<Vec<String>, HeaderError> {
        let mut out = Vec::new();
        for v in self.get_all(name) {
            out.extend(parse_token_list(name, v)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_params() {
        let v = Via::parse("SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK776;received=198.51.100.7;rport=40000;maddr=224.2.0.1;ttl=16").unwrap();
        assert_eq!(v.transport, Transport::Udp);
        assert_eq!(v.host, Host::Ipv4("192.0.2.1".parse().unwrap()));
        assert_eq!(v.port, Some(5062));
        assert_eq!(v.branch(), Some("z9hG4bK776"));
        assert!(v.has_rfc3261_branch());
        assert_eq!(v.received_ip(), Some("198.51.100.7".parse().unwrap()));
        assert_eq!(v.rport(), Some(40000));
        assert!(v.rport_requested());
        assert_eq!(v.maddr(), Some("224.2.0.1"));
        assert_eq!(v.ttl(), Some(16));
        assert_eq!(v.sent_by(), "192.0.2.1:5062");
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK776;received=198.51.100.7;rport=40000;maddr=224.2.0.1;ttl=16"
        );
        let v = Via::parse("SIP/2.0/TLS [2001:db8::9];rport;branch=z9hG4bK").unwrap();
        assert_eq!(v.port_or_default(), 5061);
        assert!(v.rport_requested());
        assert_eq!(v.rport(), None);
        assert!(!v.has_rfc3261_branch());
        let v = Via::parse("SIP/2.0/WSS abc.example;received=2001:db8::1").unwrap();
        assert_eq!(v.received_ip(), Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn via_whitespace_and_lists() {
        let vs = Via::parse_list(
            "SIP  / 2.0  / TCP     spindle.example.com   ;   branch  =   z9hG4bK9ikj8  , SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239",
        )
        .unwrap();
        assert_eq!(vs.len(), 2);
        assert_eq!(vs[0].transport, Transport::Tcp);
        assert_eq!(vs[0].branch(), Some("z9hG4bK9ikj8"));
        assert_eq!(vs[1].host, Host::Ipv4("192.168.255.111".parse().unwrap()));
        assert_eq!(vs[1].branch(), Some("z9hG4bK30239"));
        assert_eq!(
            Via::parse("SIP/2.0/UNKNOWN t4.example.com")
                .unwrap()
                .transport,
            Transport::Other("UNKNOWN".into())
        );
        assert!(Via::parse_list("SIP/2.0/UDP 192.0.2.15;;,;,,").is_err());
        assert!(Via::parse("SIP/2.0/UDP").is_err());
        assert!(Via::parse("SIP/2.0/UDPhost").is_err());
        assert!(Via::parse("SIP/2.0/UDP host:99999").is_err());
        assert!(Via::parse("SIP/2.0/UDP host;branch=").is_err());
    }

    #[test]
    fn name_addr_forms() {
        let n =
            NameAddr::parse("\"Bell, Alexander\" <sip:a.g.bell@example.com>;tag=433423").unwrap();
        assert_eq!(n.display_name.as_deref(), Some("Bell, Alexander"));
        assert_eq!(n.tag(), Some("433423"));
        let n = NameAddr::parse("sip:caller@example.net;tag=134161461246").unwrap();
        assert_eq!(n.display_name, None);
        assert_eq!(n.tag(), Some("134161461246"));
        assert_eq!(n.uri.to_string(), "sip:caller@example.net");
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display_name.as_deref(), Some("caller"));
        let n = NameAddr::parse("A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe").unwrap();
        assert_eq!(n.display_name.as_deref(), Some("A. Bell"));
        let n = NameAddr::parse("<sip:user@example.com>").unwrap();
        assert_eq!(n.display_name, None);
        assert!(n.params.is_empty());
        let n = NameAddr::parse(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com>   ;   tag = 98asjd8"#,
        )
        .unwrap();
        assert_eq!(n.display_name.as_deref(), Some(r#"J Rosenberg \""#));
        assert_eq!(n.tag(), Some("98asjd8"));
        let n =
            NameAddr::parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(n.tag(), Some("1918181833n"));
        let n = NameAddr::parse("isbn:2983792873").unwrap();
        assert_eq!(n.uri.scheme(), "isbn");
        let n = NameAddr::parse("<sip:a@b>;x=\"quoted;value\";flag").unwrap();
        assert_eq!(
            n.params.unquoted_value("x").as_deref(),
            Some("quoted;value")
        );
        assert!(n.params.contains("flag"));
        assert_eq!(n.to_string(), "<sip:a@b>;x=\"quoted;value\";flag");
        let d = NameAddr {
            display_name: Some("Q \"x\"".into()),
            ..NameAddr::new(n.uri.clone())
        };
        assert_eq!(d.to_string(), "\"Q \\\"x\\\"\" <sip:a@b>");
    }

    #[test]
    fn name_addr_errors() {
        for bad in [
            "\"Mr. J. User <sip:j.user@example.com>",
            "\"Watson, Thomas\" < sip:t.watson@example.org >",
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "\"Joe\" <sip:joe@example.org>;;;;",
            "<sip:a@b",
            "",
            "<sip:a@b> junk",
            "Joe",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cseq_and_scalars() {
        assert_eq!(
            CSeq::parse("0009   INVITE").unwrap(),
            CSeq {
                seq: 9,
                method: Method::Invite
            }
        );
        assert_eq!(
            CSeq::parse("8 NEWMETHOD").unwrap().method,
            Method::Extension("NEWMETHOD".into())
        );
        assert!(CSeq::parse("36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse("4294967296 INVITE").is_err());
        assert!(CSeq::parse("1INVITE").is_err());
        assert!(CSeq::parse("1 INVITE x").is_err());
        assert!(CSeq::parse("INVITE").is_err());
        assert_eq!(
            CSeq {
                seq: 4,
                method: Method::Bye
            }
            .to_string(),
            "4 BYE"
        );
        assert_eq!(parse_max_forwards("0068"), Ok(68));
        assert!(parse_max_forwards("300").is_err());
        assert!(parse_content_length("-999").is_err());
        assert!(check_call_id("a b").is_err());
        assert!(check_call_id("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{").is_ok());
        assert!(check_date("Sat, 13 Nov 2010 23:29:00 GMT").is_ok());
        assert!(check_date("Fri, 01 Jan 2010 16:00:00 EST").is_err());
    }

    #[test]
    fn accessors() {
        let mut h = Headers::new();
        h.push(
            "v",
            "SIP/2.0/UDP a.example;branch=z9hG4bK1, SIP/2.0/TCP b.example",
        );
        h.push("Via", "SIP/2.0/UDP c.example");
        h.push("f", "<sip:a@example.com>;tag=1");
        h.push("t", "sip:b@example.com");
        h.push("i", "xyz@host");
        h.push("CSeq", "7 OPTIONS");
        h.push("Max-Forwards", "70");
        h.push("m", "<sip:a@10.0.0.1>;expires=60, \"B\" <sip:b@10.0.0.2>");
        h.push("l", "0");
        h.push("c", "application/sdp; charset=utf-8");
        h.push("Require", "100rel, timer");
        h.push("k", "");
        h.push("Allow", "INVITE, ACK, BYE, FOO");
        h.push("Expires", "3600");
        h.push("Accept", "application/sdp, text/*");
        assert_eq!(h.via().unwrap().len(), 3);
        assert_eq!(h.top_via().unwrap().branch(), Some("z9hG4bK1"));
        assert_eq!(h.from_addr().unwrap().tag(), Some("1"));
        assert_eq!(h.to_addr().unwrap().tag(), None);
        assert_eq!(h.call_id().unwrap(), "xyz@host");
        assert_eq!(h.cseq().unwrap().seq, 7);
        assert_eq!(h.max_forwards().unwrap(), Some(70));
        match h.contact().unwrap() {
            Some(Contacts::List(l)) => {
                assert_eq!(l.len(), 2);
                assert_eq!(l[0].params.value("expires"), Some("60"));
                assert_eq!(l[1].display_name.as_deref(), Some("B"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(h.content_length().unwrap(), Some(0));
        let ct = h.content_type().unwrap().unwrap();
        assert!(ct.is("Application", "SDP"));
        assert_eq!(ct.params.value("charset"), Some("utf-8"));
        assert_eq!(h.require().unwrap(), vec!["100rel", "timer"]);
        assert!(h.supported().unwrap().is_empty());
        assert_eq!(h.allow().unwrap().len(), 4);
        assert_eq!(h.expires().unwrap(), Some(3600));
        let acc = h.accept().unwrap().unwrap();
        assert!(acc[1].admits("text", "plain"));
        h.push("Content-Length", "5");
        assert_eq!(
            h.content_length(),
            Err(HeaderError::Multiple("Content-Length"))
        );
        h.push("To", "sip:c@example.com");
        assert_eq!(h.to_addr(), Err(HeaderError::Multiple("To")));
        assert_eq!(
            Headers::new().call_id(),
            Err(HeaderError::Missing("Call-ID"))
        );
        let mut s = Headers::new();
        s.push("Contact", "*");
        assert_eq!(s.contact().unwrap(), Some(Contacts::Star));
    }
}
