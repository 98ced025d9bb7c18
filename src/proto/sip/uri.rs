//! SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966) and an opaque form for
//! every other scheme.
//!
//! - `sip:` / `sips:` URIs are parsed into user, password, host (domain,
//!   IPv4 or bracketed IPv6), port, `uri-parameters` and `headers`
//!   (§19.1.1, ABNF §25.1). Components are stored exactly as received,
//!   still %-escaped (§19.1.2), so that the URI re-serializes unchanged;
//!   [`SipUri::user_unescaped`] decodes, and escapes such as `%00` are legal
//!   in the user part (RFC 4475 §3.1.1.4). [`SipUri::equivalent`]
//!   implements the comparison rules of §19.1.4.
//! - `tel:` URIs keep the number and its parameters.
//! - Any other scheme (`http:`, `isbn:`, `soap.beep:` ...) parses into
//!   [`Uri::Other`]: an unknown scheme is syntactically valid and is rejected
//!   above the parser with 416 (RFC 4475 §3.3.2, RFC 3261 §8.2.2.1).

use core::net::{Ipv4Addr, Ipv6Addr};
use std::fmt;
use std::str::FromStr;

use super::params::Params;
use super::syntax::{check_escaped, describe_byte, is_unreserved, parse_decimal, unescape};

/// Why a URI did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("empty URI")]
    Empty,
    #[error("URI has no scheme")]
    MissingScheme,
    #[error("invalid URI scheme")]
    InvalidScheme,
    #[error("invalid character {0} in URI")]
    InvalidChar(String),
    #[error("invalid user part: {0}")]
    InvalidUser(String),
    #[error("invalid password: {0}")]
    InvalidPassword(String),
    #[error("invalid host: {0}")]
    InvalidHost(String),
    #[error("invalid port")]
    InvalidPort,
    #[error("invalid URI parameter: {0}")]
    InvalidParam(String),
    #[error("invalid URI header: {0}")]
    InvalidHeader(String),
    #[error("invalid telephone number: {0}")]
    InvalidTel(String),
}

/// A host: domain name, IPv4 address or IPv6 address (written in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Domain(String),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
}

impl Host {
    /// Parses `hostname / IPv4address / IPv6reference` (RFC 3261 §25.1).
    pub fn parse(s: &str) -> Result<Host, UriError> {
        if s.is_empty() {
            return Err(UriError::InvalidHost("empty host".into()));
        }
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| UriError::InvalidHost("unterminated IPv6 reference".into()))?;
            return Ipv6Addr::from_str(inner)
                .map(Host::Ipv6)
                .map_err(|_| UriError::InvalidHost("invalid IPv6 address".into()));
        }
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Ipv4Addr::from_str(s)
                .map(Host::Ipv4)
                .map_err(|_| UriError::InvalidHost("invalid IPv4 address".into()));
        }
        if let Some(b) = s
            .bytes()
            .find(|&b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'))
        {
            return Err(UriError::InvalidHost(format!(
                "invalid character {}",
                describe_byte(b)
            )));
        }
        let labels = s.strip_suffix('.').unwrap_or(s);
        if labels.is_empty() || labels.split('.').any(str::is_empty) {
            return Err(UriError::InvalidHost("empty domain label".into()));
        }
        Ok(Host::Domain(s.to_string()))
    }

    /// Host equality per RFC 3261 §19.1.4 (domain names case-insensitive).
    pub fn same_as(&self, other: &Host) -> bool {
        match (self, other) {
            (Host::Domain(a), Host::Domain(b)) => a
                .trim_end_matches('.')
                .eq_ignore_ascii_case(b.trim_end_matches('.')),
            _ => self == other,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ipv4(a) => write!(f, "{a}"),
            Host::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

impl FromStr for Host {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Host::parse(s)
    }
}

/// A `sip:` or `sips:` URI. Text components are kept %-escaped as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sips:` rather than `sip:`.
    pub secure: bool,
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
    /// `?name=value&...` (escaped).
    pub headers: Vec<(String, String)>,
}

/// A `tel:` URI (RFC 3966): the number as written plus its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelUri {
    pub number: String,
    pub params: Params,
}

/// Any URI that may appear in a Request-URI or an address header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    Sip(SipUri),
    Tel(TelUri),
    /// Unknown scheme: kept opaque. `rest` is everything after the colon.
    Other {
        scheme: String,
        rest: String,
    },
}

impl Uri {
    /// Parses a URI (no surrounding `<>`, no whitespace).
    pub fn parse(s: &str) -> Result<Uri, UriError> {
        if s.is_empty() {
            return Err(UriError::Empty);
        }
        let colon = s.find(':').ok_or(UriError::MissingScheme)?;
        let scheme = &s[..colon];
        let rest = &s[colon + 1..];
        let sb = scheme.as_bytes();
        if sb.is_empty()
            || !sb[0].is_ascii_alphabetic()
            || !sb
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return Err(UriError::InvalidScheme);
        }
        if let Some(b) = rest.bytes().find(|&b| b <= 0x20 || b >= 0x7F) {
            return Err(UriError::InvalidChar(describe_byte(b)));
        }
        if scheme.eq_ignore_ascii_case("sip") {
            parse_sip(rest, false).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("sips") {
            parse_sip(rest, true).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("tel") {
            parse_tel(rest).map(Uri::Tel)
        } else {
            if rest.is_empty() {
                return Err(UriError::InvalidChar("(empty after scheme)".into()));
            }
            if let Some(b) = rest.bytes().find(|b| b"<>\"{}|\\^`".contains(b)) {
                return Err(UriError::InvalidChar(describe_byte(b)));
            }
            Ok(Uri::Other {
                scheme: scheme.to_string(),
                rest: rest.to_string(),
            })
        }
    }

    /// The scheme, lower case for the known ones.
    pub fn scheme(&self) -> &str {
        match self {
            Uri::Sip(u) if u.secure => "sips",
            Uri::Sip(_) => "sip",
            Uri::Tel(_) => "tel",
            Uri::Other { scheme, .. } => scheme,
        }
    }

    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }
}

impl FromStr for Uri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uri::parse(s)
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Tel(t) => write!(f, "tel:{}{}", t.number, t.params),
            Uri::Other { scheme, rest } => write!(f, "{scheme}:{rest}"),
        }
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(user) = &self.user {
            f.write_str(user)?;
            if let Some(pw) = &self.password {
                write!(f, ":{pw}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write!(f, "{}", self.params)?;
        for (i, (name, value)) in self.headers.iter().enumerate() {
            write!(f, "{}{name}={value}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

/// `user-unreserved` (RFC 3261 §25.1).
fn is_user_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
}

fn is_password_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',')
}

/// `paramchar` minus `escaped` (RFC 3261 §25.1).
fn is_param_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

/// `hnv-unreserved / unreserved`.
fn is_hnv_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$')
}

fn parse_sip(rest: &str, secure: bool) -> Result<SipUri, UriError> {
    // No unescaped '@' may appear after the userinfo (params and headers
    // cannot carry one), so the first '@' ends the userinfo.
    let (userinfo, hostpart) = match rest.find('@') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    let (mut user, mut password) = (None, None);
    if let Some(ui) = userinfo {
        let (u, pw) = match ui.find(':') {
            Some(j) => (&ui[..j], Some(&ui[j + 1..])),
            None => (ui, None),
        };
        if u.is_empty() {
            return Err(UriError::InvalidUser("empty user".into()));
        }
        check_escaped(u, is_user_char).map_err(UriError::InvalidUser)?;
        if let Some(pw) = pw {
            check_escaped(pw, is_password_char).map_err(UriError::InvalidPassword)?;
            password = Some(pw.to_string());
        }
        user = Some(u.to_string());
    }
    let end = hostpart.find([';', '?']).unwrap_or(hostpart.len());
    let (hostport, mut tail) = hostpart.split_at(end);
    let (host, port) = split_hostport(hostport)?;
    let mut params = Params::new();
    if let Some(p) = tail.strip_prefix(';') {
        let pend = p.find('?').unwrap_or(p.len());
        params = parse_uri_params(&p[..pend], is_param_char)?;
        tail = &p[pend..];
    }
    let mut headers = Vec::new();
    if let Some(h) = tail.strip_prefix('?') {
        for item in h.split('&') {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| UriError::InvalidHeader("header without '='".into()))?;
            if name.is_empty() {
                return Err(UriError::InvalidHeader("empty header name".into()));
            }
            check_escaped(name, is_hnv_char).map_err(UriError::InvalidHeader)?;
            check_escaped(value, is_hnv_char).map_err(UriError::InvalidHeader)?;
            headers.push((name.to_string(), value.to_string()));
        }
    }
    Ok(SipUri {
        secure,
        user,
        password,
        host,
        port,
        params,
        headers,
    })
}

/// Splits `host [":" port]`.
pub(crate) fn split_hostport(s: &str) -> Result<(Host, Option<u16>), UriError> {
    let (host, port) = if s.starts_with('[') {
        let close = s
            .find(']')
            .ok_or_else(|| UriError::InvalidHost("unterminated IPv6 reference".into()))?;
        let after = &s[close + 1..];
        match after.strip_prefix(':') {
            Some(p) => (&s[..=close], Some(p)),
            None if after.is_empty() => (&s[..=close], None),
            None => return Err(UriError::InvalidHost("junk after IPv6 reference".into())),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let host = Host::parse(host)?;
    let port = match port {
        None => None,
        Some(p) => {
            let n = parse_decimal(p).map_err(|_| UriError::InvalidPort)?;
            Some(u16::try_from(n).map_err(|_| UriError::InvalidPort)?)
        }
    };
    Ok((host, port))
}

/// Parses `name[=value]` items separated by `;` (the leading `;` already
/// removed); empty items are an error.
fn parse_uri_params(s: &str, allowed: fn(u8) -> bool) -> Result<Params, UriError> {
    let mut params = Params::new();
    for item in s.split(';') {
        let (name, value) = match item.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (item, None),
        };
        if name.is_empty() {
            return Err(UriError::InvalidParam("empty parameter name".into()));
        }
        check_escaped(name, allowed).map_err(UriError::InvalidParam)?;
        if let Some(v) = value {
            if v.is_empty() {
                return Err(UriError::InvalidParam("empty parameter value".into()));
            }
            check_escaped(v, allowed).map_err(UriError::InvalidParam)?;
        }
        params.push(name, value.map(str::to_string));
    }
    Ok(params)
}

fn parse_tel(rest: &str) -> Result<TelUri, UriError> {
    let (number, params) = match rest.split_once(';') {
        Some((n, p)) => (n, Some(p)),
        None => (rest, None),
    };
    if number.is_empty() {
        return Err(UriError::InvalidTel("empty number".into()));
    }
    if let Some(b) = number
        .bytes()
        .find(|b| !(b.is_ascii_hexdigit() || b"*#+-.()".contains(b)))
    {
        return Err(UriError::InvalidTel(format!(
            "invalid character {}",
            describe_byte(b)
        )));
    }
    if !number
        .bytes()
        .any(|b| b.is_ascii_hexdigit() || b == b'*' || b == b'#')
    {
        return Err(UriError::InvalidTel("no digits".into()));
    }
    let params = match params {
        Some(p) => parse_uri_params(p, is_param_char)?,
        None => Params::new(),
    };
    Ok(TelUri {
        number: number.to_string(),
        params,
    })
}

impl SipUri {
    /// A bare `sip:host` URI.
    pub fn new(host: Host) -> Self {
        SipUri {
            secure: false,
            user: None,
            password: None,
            host,
            port: None,
            params: Params::new(),
            headers: Vec::new(),
        }
    }

    /// The user part with %-escapes decoded (it may contain any octet,
    /// including NUL).
    pub fn user_unescaped(&self) -> Option<Vec<u8>> {
        self.user.as_deref().map(unescape)
    }

    /// The `transport` URI parameter, if any.
    pub fn transport(&self) -> Option<&str> {
        self.params.value("transport")
    }

    /// Whether the `lr` parameter (loose routing, §19.1.1) is present.
    pub fn lr(&self) -> bool {
        self.params.contains("lr")
    }

    /// URI equivalence (RFC 3261 §19.1.4): escapes decoded, user and password
    /// case-sensitive, host case-insensitive, `user`, `ttl`, `method`,
    /// `maddr` and `transport` must match when present in either URI, other
    /// parameters only when present in both, headers must all match.
    pub fn equivalent(&self, other: &SipUri) -> bool {
        if self.secure != other.secure
            || self.user_unescaped() != other.user_unescaped()
            || self.password.as_deref().map(unescape) != other.password.as_deref().map(unescape)
            || !self.host.same_as(&other.host)
            || self.port != other.port
        {
            return false;
        }
        let value_eq = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => unescape(a).eq_ignore_ascii_case(&unescape(b)),
            _ => false,
        };
        for name in ["user", "ttl", "method", "maddr", "transport"] {
            match (self.params.get(name), other.params.get(name)) {
                (None, None) => {}
                (Some(a), Some(b)) if value_eq(&a.value, &b.value) => {}
                _ => return false,
            }
        }
        for p in self.params.iter() {
            if let Some(q) = other.params.get(&p.name) {
                if !value_eq(&p.value, &q.value) {
                    return false;
                }
            }
        }
        self.headers.len() == other.headers.len()
            && self.headers.iter().all(|(n, v)| {
                other.headers.iter().any(|(m, w)| {
                    unescape(n).eq_ignore_ascii_case(&unescape(m)) && unescape(v) == unescape(w)
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        match Uri::parse(s) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn basic_sip_uri() {
        let u =
            sip("sip:alice:secret@Example.COM:5070;transport=tcp;lr?subject=hi&priority=urgent");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, Host::Domain("Example.COM".into()));
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.transport(), Some("tcp"));
        assert!(u.lr());
        assert_eq!(
            u.headers,
            vec![
                ("subject".into(), "hi".into()),
                ("priority".into(), "urgent".into())
            ]
        );
        assert_eq!(
            u.to_string(),
            "sip:alice:secret@Example.COM:5070;transport=tcp;lr?subject=hi&priority=urgent"
        );
        assert!(!u.secure);
        assert!(sip("SIPS:host").secure);
    }

    #[test]
    fn ipv4_and_ipv6_hosts() {
        let u = sip("sip:[2001:db8::10]:5060;maddr=239.255.255.1");
        assert_eq!(u.host, Host::Ipv6("2001:db8::10".parse().unwrap()));
        assert_eq!(u.port, Some(5060));
        assert_eq!(u.to_string(), "sip:[2001:db8::10]:5060;maddr=239.255.255.1");
        let u = sip("sip:user@[::1]");
        assert_eq!(u.host, Host::Ipv6(Ipv6Addr::LOCALHOST));
        assert_eq!(u.port, None);
        let u = sip("sip:192.0.2.4:5080");
        assert_eq!(u.host, Host::Ipv4(Ipv4Addr::new(192, 0, 2, 4)));
        assert!(Uri::parse("sip:[2001:db8::10").is_err());
        assert!(Uri::parse("sip:[nonsense]").is_err());
        assert!(Uri::parse("sip:300.1.1.1").is_err());
        assert!(Uri::parse("sip:host:99999").is_err());
        assert!(Uri::parse("sip:host:").is_err());
        assert!(Uri::parse("sip:[::1]x").is_err());
    }

    #[test]
    fn escapes_in_user_and_params() {
        let u = sip("sip:sips%3Auser%40example.com@example.net");
        assert_eq!(
            u.user_unescaped().unwrap(),
            b"sips:user@example.com".to_vec()
        );
        assert_eq!(u.host, Host::Domain("example.net".into()));
        let u = sip("sip:null-%00-null@example.com");
        assert_eq!(u.user_unescaped().unwrap(), b"null-\0-null".to_vec());
        let u = sip("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31");
        assert_eq!(u.params.len(), 2);
        assert_eq!(u.params.value("n%61me"), Some("v%61lue%25%34%31"));
        assert!(u.equivalent(&sip("sip:caller@HOST5.example.net;lr;name=value%41")));
        assert!(Uri::parse("sip:bad%zzuser@host").is_err());
        assert!(Uri::parse("sip:@host").is_err());
    }

    #[test]
    fn unusual_user_and_semicolons() {
        let u = sip("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com");
        assert_eq!(
            u.user.as_deref(),
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        assert_eq!(
            u.password.as_deref(),
            Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        );
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
        assert!(u.params.is_empty());
    }

    #[test]
    fn bad_params_and_whitespace() {
        assert!(Uri::parse("sip:user@example.com; lr").is_err());
        assert!(Uri::parse("sip:host;;lr").is_err());
        assert!(Uri::parse("sip:host;a=").is_err());
        assert!(Uri::parse("sip:host?x").is_err());
        assert!(Uri::parse("<sip:user@example.com>").is_err());
        assert!(Uri::parse("sip:a b@host").is_err());
    }

    #[test]
    fn tel_and_other_schemes() {
        let u = Uri::parse("tel:+1-201-555-0123;phone-context=example.com").unwrap();
        match &u {
            Uri::Tel(t) => {
                assert_eq!(t.number, "+1-201-555-0123");
                assert_eq!(t.params.value("phone-context"), Some("example.com"));
            }
            _ => panic!(),
        }
        assert_eq!(
            u.to_string(),
            "tel:+1-201-555-0123;phone-context=example.com"
        );
        assert!(Uri::parse("tel:").is_err());
        let o = Uri::parse("nobodyKnowsThisScheme:totallyopaquecontent").unwrap();
        assert_eq!(o.scheme(), "nobodyKnowsThisScheme");
        assert_eq!(o.to_string(), "nobodyKnowsThisScheme:totallyopaquecontent");
        assert!(matches!(
            Uri::parse("soap.beep://192.0.2.103:3002"),
            Ok(Uri::Other { .. })
        ));
        assert!(Uri::parse("1abc:x").is_err());
        assert!(Uri::parse("noscheme").is_err());
        assert!(Uri::parse("http:").is_err());
    }

    #[test]
    fn equivalence_rules() {
        assert!(sip("sip:%61lice@atlanta.com;transport=TCP")
            .equivalent(&sip("sip:alice@AtLanTa.CoM;Transport=tcp")));
        assert!(!sip("sip:alice@atlanta.com").equivalent(&sip("sip:ALICE@atlanta.com")));
        assert!(!sip("sip:bob@biloxi.com").equivalent(&sip("sip:bob@biloxi.com:5060")));
        assert!(!sip("sip:bob@biloxi.com").equivalent(&sip("sip:bob@biloxi.com;transport=udp")));
        assert!(sip("sip:carol@chicago.com;newparam=5")
            .equivalent(&sip("sip:carol@chicago.com;security=on")));
        assert!(!sip("sip:carol@chicago.com?Subject=next%20meeting")
            .equivalent(&sip("sip:carol@chicago.com")));
    }
}
