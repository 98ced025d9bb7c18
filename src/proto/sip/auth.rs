//! Server-side HTTP Digest authentication for SIP (RFC 3261 §22, RFC 2617
//! MD5, RFC 7616 SHA-256 as adopted for SIP by RFC 8760): challenges for a
//! 401 `WWW-Authenticate` (SHA-256 offered first, then MD5, RFC 8760 §2.4),
//! parsing and verifying `Authorization`, and nonces.
//!
//! Only `qop=auth` is accepted (RFC 8760 §2.5 requires qop; RFC 2069 style
//! answers without it are refused). `-sess` algorithms and `auth-int` are not
//! offered. Nonces are stateless: `<bucket>.<counter>.<mac>` in hex where the
//! mac is SHA-256 over a key derived from the injected seed, the time bucket
//! and a counter; a nonce from the previous bucket is still fresh, an older
//! one is answered with `stale=true` (RFC 7616 §3.3), a forged one with a new
//! challenge. Replays inside the nonce lifetime are bounded by that
//! lifetime (the `nc` counter is not tracked).

use std::time::{Duration, Instant};

use md5::{Digest as _, Md5};
use sha2::Sha256;

use super::syntax::{quote, split_list, trim_ws, unquote};
use super::uri::Uri;

/// The credentials a trunk must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    pub user: String,
    pub password: String,
    pub realm: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Md5,
    Sha256,
}

impl DigestAlgorithm {
    pub fn as_str(&self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        }
    }

    fn parse(s: &str) -> Option<DigestAlgorithm> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(DigestAlgorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(DigestAlgorithm::Sha256)
        } else {
            None
        }
    }

    fn hash_hex(&self, data: &str) -> String {
        match self {
            DigestAlgorithm::Md5 => hex::encode(Md5::digest(data.as_bytes())),
            DigestAlgorithm::Sha256 => hex::encode(Sha256::digest(data.as_bytes())),
        }
    }
}

/// Why an `Authorization` header is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no Authorization header")]
    Missing,
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    #[error("unsupported digest algorithm")]
    UnsupportedAlgorithm,
    #[error("qop must be auth")]
    UnsupportedQop,
    #[error("nonce was not issued by this node")]
    UnknownNonce,
    /// The nonce is ours but expired: challenge again with `stale=true`.
    #[error("stale nonce")]
    StaleNonce,
    #[error("wrong user or realm")]
    WrongIdentity,
    #[error("digest uri does not match the Request-URI")]
    UriMismatch,
    #[error("wrong digest response")]
    WrongResponse,
}

impl AuthError {
    /// Whether the right answer is a fresh 401 challenge (the client may not
    /// have known our nonce) rather than 403.
    pub fn wants_challenge(&self) -> bool {
        matches!(self, AuthError::Missing | AuthError::UnknownNonce | AuthError::StaleNonce)
    }
}

/// The parameters of a `Digest` credentials value (RFC 7616 §3.4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DigestAuthorization {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
}

impl DigestAuthorization {
    /// Parses `Digest name=value, ...` (values quoted or tokens).
    pub fn parse(value: &str) -> Result<DigestAuthorization, AuthError> {
        let v = trim_ws(value);
        let rest = match v.get(..6) {
            Some(s) if s.eq_ignore_ascii_case("Digest") => &v[6..],
            _ => return Err(AuthError::Malformed("scheme is not Digest")),
        };
        if !rest.starts_with([' ', '\t']) {
            return Err(AuthError::Malformed("scheme is not Digest"));
        }
        let mut out = DigestAuthorization::default();
        let (mut seen_user, mut seen_nonce, mut seen_resp) = (false, false, false);
        for item in split_list(rest) {
            if item.is_empty() {
                continue;
            }
            let (name, raw) = item.split_once('=').ok_or(AuthError::Malformed("parameter without value"))?;
            let name = trim_ws(name);
            let raw = trim_ws(raw);
            let value = match raw.strip_prefix('"') {
                Some(inner) => unquote(inner.strip_suffix('"').ok_or(AuthError::Malformed("unterminated quote"))?),
                None => raw.to_string(),
            };
            match name.to_ascii_lowercase().as_str() {
                "username" => {
                    out.username = value;
                    seen_user = true;
                }
                "realm" => out.realm = value,
                "nonce" => {
                    out.nonce = value;
                    seen_nonce = true;
                }
                "uri" => out.uri = value,
                "response" => {
                    out.response = value;
                    seen_resp = true;
                }
                "algorithm" => out.algorithm = Some(value),
                "cnonce" => out.cnonce = Some(value),
                "opaque" => out.opaque = Some(value),
                "qop" => out.qop = Some(value),
                "nc" => out.nc = Some(value),
                _ => {}
            }
        }
        if !(seen_user && seen_nonce && seen_resp) {
            return Err(AuthError::Malformed("username, nonce and response are required"));
        }
        Ok(out)
    }
}

/// The `response` value (RFC 7616 §3.4.1 with qop, RFC 2617 §3.2.2.1):
/// `H(H(user:realm:password):nonce:nc:cnonce:qop:H(method:uri))`.
#[allow(clippy::too_many_arguments)]
pub fn digest_response(
    alg: DigestAlgorithm,
    user: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
    qop: &str,
) -> String {
    let ha1 = alg.hash_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = alg.hash_hex(&format!("{method}:{uri}"));
    alg.hash_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))
}

/// Constant-time equality for response digests.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Issues and checks nonces; see the module docs for the format.
#[derive(Debug, Clone)]
pub struct NonceIssuer {
    key: [u8; 32],
    counter: u64,
    lifetime: Duration,
    epoch: Option<Instant>,
}

/// Freshness of a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Fresh,
    Stale,
    Unknown,
}

impl NonceIssuer {
    /// `lifetime` is the bucket length: a nonce lives between one and two
    /// lifetimes.
    pub fn new(seed: u64, lifetime: Duration) -> Self {
        let key: [u8; 32] = Sha256::digest([b"voice-edge nonce key".as_slice(), &seed.to_le_bytes()].concat()).into();
        NonceIssuer {
            key,
            counter: 0,
            lifetime: lifetime.max(Duration::from_secs(1)),
            epoch: None,
        }
    }

    fn bucket(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_secs() / self.lifetime.as_secs().max(1)
    }

    fn mac(&self, bucket: u64, counter: u64) -> String {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(bucket.to_le_bytes());
        h.update(counter.to_le_bytes());
        hex::encode(&h.finalize()[..16])
    }

    pub fn issue(&mut self, now: Instant) -> String {
        let bucket = self.bucket(now);
        self.counter = self.counter.wrapping_add(1);
        format!("{bucket:x}.{:x}.{}", self.counter, self.mac(bucket, self.counter))
    }

    pub fn check(&mut self, now: Instant, nonce: &str) -> NonceCheck {
        let current = self.bucket(now);
        let mut parts = nonce.split('.');
        let (Some(b), Some(c), Some(mac), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return NonceCheck::Unknown;
        };
        let (Ok(bucket), Ok(counter)) = (u64::from_str_radix(b, 16), u64::from_str_radix(c, 16)) else {
            return NonceCheck::Unknown;
        };
        if b.len() > 16 || c.len() > 16 || !ct_eq(self.mac(bucket, counter).as_bytes(), mac.as_bytes()) {
            return NonceCheck::Unknown;
        }
        if bucket > current {
            NonceCheck::Unknown
        } else if current - bucket <= 1 {
            NonceCheck::Fresh
        } else {
            NonceCheck::Stale
        }
    }
}

/// `WWW-Authenticate` values for a 401: SHA-256 first, then MD5, both
/// `qop="auth"` (RFC 8760 §2.4).
pub fn challenges(realm: &str, nonce: &str, stale: bool) -> Vec<String> {
    [DigestAlgorithm::Sha256, DigestAlgorithm::Md5]
        .iter()
        .map(|alg| {
            format!(
                "Digest realm={}, nonce={}, algorithm={}, qop=\"auth\"{}",
                quote(realm),
                quote(nonce),
                alg.as_str(),
                if stale { ", stale=true" } else { "" }
            )
        })
        .collect()
}

/// Whether the digest `uri` parameter names the Request-URI (RFC 2617
/// §3.2.2.5): equivalent SIP URIs (§19.1.4), otherwise the same text.
fn same_request_uri(digest_uri: &str, request_uri: &Uri) -> bool {
    match (Uri::parse(trim_ws(digest_uri)), request_uri) {
        (Ok(Uri::Sip(a)), Uri::Sip(b)) => a.equivalent(b),
        (Ok(a), b) => a.to_string() == b.to_string(),
        (Err(_), _) => false,
    }
}

/// Checks `authorization` (the header value) for a request with `method`
/// and `request_uri` against `creds`.
pub fn verify(
    nonces: &mut NonceIssuer,
    now: Instant,
    creds: &DigestCredentials,
    method: &str,
    request_uri: &Uri,
    authorization: &str,
) -> Result<(), AuthError> {
    let a = DigestAuthorization::parse(authorization)?;
    let alg = match &a.algorithm {
        None => DigestAlgorithm::Md5,
        Some(s) => DigestAlgorithm::parse(s).ok_or(AuthError::UnsupportedAlgorithm)?,
    };
    if !a.qop.as_deref().is_some_and(|q| q.eq_ignore_ascii_case("auth")) {
        return Err(AuthError::UnsupportedQop);
    }
    let (Some(nc), Some(cnonce)) = (a.nc.as_deref(), a.cnonce.as_deref()) else {
        return Err(AuthError::Malformed("qop=auth needs nc and cnonce"));
    };
    if a.username != creds.user || a.realm != creds.realm {
        return Err(AuthError::WrongIdentity);
    }
    match nonces.check(now, &a.nonce) {
        NonceCheck::Fresh => {}
        NonceCheck::Stale => {
            // Only a correct answer to an old nonce deserves stale=true
            // (RFC 7616 §3.3); a wrong one is a wrong password.
            let expected = digest_response(alg, &creds.user, &creds.realm, &creds.password, method, &a.uri, &a.nonce, nc, cnonce, "auth");
            return Err(if ct_eq(expected.as_bytes(), a.response.to_ascii_lowercase().as_bytes()) {
                AuthError::StaleNonce
            } else {
                AuthError::WrongResponse
            });
        }
        NonceCheck::Unknown => return Err(AuthError::UnknownNonce),
    }
    if !same_request_uri(&a.uri, request_uri) {
        return Err(AuthError::UriMismatch);
    }
    let expected = digest_response(alg, &creds.user, &creds.realm, &creds.password, method, &a.uri, &a.nonce, nc, cnonce, "auth");
    if ct_eq(expected.as_bytes(), a.response.to_ascii_lowercase().as_bytes()) {
        Ok(())
    } else {
        Err(AuthError::WrongResponse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7616 §3.9.1.
    const NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    #[test]
    fn rfc7616_example_vectors() {
        let md5 = digest_response(DigestAlgorithm::Md5, "Mufasa", "http-auth@example.org", "Circle of Life", "GET", "/dir/index.html", NONCE, "00000001", CNONCE, "auth");
        assert_eq!(md5, "8ca523f5e9506fed4657c9700eebdbec");
        let sha = digest_response(DigestAlgorithm::Sha256, "Mufasa", "http-auth@example.org", "Circle of Life", "GET", "/dir/index.html", NONCE, "00000001", CNONCE, "auth");
        assert_eq!(sha, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");
    }

    fn creds() -> DigestCredentials {
        DigestCredentials { user: "trunk1".into(), password: "s3cret".into(), realm: "edge.example.com".into() }
    }

    fn answer(alg: DigestAlgorithm, nonce: &str, password: &str, uri: &str) -> String {
        let r = digest_response(alg, "trunk1", "edge.example.com", password, "INVITE", uri, nonce, "00000001", "abc", "auth");
        format!(
            "Digest username=\"trunk1\", realm=\"edge.example.com\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\", algorithm={}, cnonce=\"abc\", qop=auth, nc=00000001",
            alg.as_str()
        )
    }

    #[test]
    fn challenge_then_verify_both_algorithms() {
        let t0 = Instant::now();
        let mut n = NonceIssuer::new(42, Duration::from_secs(30));
        let nonce = n.issue(t0);
        let ch = challenges("edge.example.com", &nonce, false);
        assert_eq!(ch.len(), 2);
        assert!(ch[0].contains("algorithm=SHA-256") && ch[1].contains("algorithm=MD5"));
        assert!(ch[0].contains(&format!("nonce=\"{nonce}\"")) && ch[0].contains("qop=\"auth\""));
        let uri = "sip:+15550100@edge.example.com";
        let req_uri = Uri::parse("sip:+15550100@EDGE.example.com").unwrap();
        for alg in [DigestAlgorithm::Sha256, DigestAlgorithm::Md5] {
            assert_eq!(verify(&mut n, t0, &creds(), "INVITE", &req_uri, &answer(alg, &nonce, "s3cret", uri)), Ok(()));
            assert_eq!(
                verify(&mut n, t0, &creds(), "INVITE", &req_uri, &answer(alg, &nonce, "wrong", uri)),
                Err(AuthError::WrongResponse)
            );
        }
        assert_eq!(
            verify(&mut n, t0, &creds(), "INVITE", &Uri::parse("sip:other@x").unwrap(), &answer(DigestAlgorithm::Md5, &nonce, "s3cret", uri)),
            Err(AuthError::UriMismatch)
        );
        let no_qop = answer(DigestAlgorithm::Md5, &nonce, "s3cret", uri).replace(", qop=auth", "");
        assert_eq!(verify(&mut n, t0, &creds(), "INVITE", &req_uri, &no_qop), Err(AuthError::UnsupportedQop));
        let sess = answer(DigestAlgorithm::Md5, &nonce, "s3cret", uri).replace("algorithm=MD5", "algorithm=MD5-sess");
        assert_eq!(verify(&mut n, t0, &creds(), "INVITE", &req_uri, &sess), Err(AuthError::UnsupportedAlgorithm));
        let other_user = answer(DigestAlgorithm::Md5, &nonce, "s3cret", uri).replace("\"trunk1\"", "\"mallory\"");
        assert_eq!(verify(&mut n, t0, &creds(), "INVITE", &req_uri, &other_user), Err(AuthError::WrongIdentity));
    }

    #[test]
    fn nonces_age_and_forgeries_are_unknown() {
        let t0 = Instant::now();
        let mut n = NonceIssuer::new(7, Duration::from_secs(30));
        let nonce = n.issue(t0);
        assert_eq!(n.check(t0 + Duration::from_secs(59), &nonce), NonceCheck::Fresh);
        assert_eq!(n.check(t0 + Duration::from_secs(61), &nonce), NonceCheck::Stale);
        let uri = "sip:x@y";
        let late = t0 + Duration::from_secs(90);
        assert_eq!(verify(&mut n, late, &creds(), "INVITE", &Uri::parse(uri).unwrap(), &answer(DigestAlgorithm::Sha256, &nonce, "s3cret", uri)), Err(AuthError::StaleNonce));
        assert!(AuthError::StaleNonce.wants_challenge());
        // A different seed (another node, a restart) does not know it.
        let mut other = NonceIssuer::new(8, Duration::from_secs(30));
        assert_eq!(other.check(t0, &nonce), NonceCheck::Unknown);
        let mut forged = nonce.clone();
        forged.pop();
        forged.push('0');
        assert_eq!(n.check(t0, &forged), NonceCheck::Unknown);
        assert_eq!(n.check(t0, "zz.1.00"), NonceCheck::Unknown);
        assert_eq!(n.check(t0, ""), NonceCheck::Unknown);
        assert_ne!(n.issue(t0), n.issue(t0));
    }

    #[test]
    fn authorization_parsing() {
        let a = DigestAuthorization::parse("Digest username=\"a\\\"b\", realm=\"r, x\", nonce=n1, uri=\"sip:u@h\", response=\"ab\", qop=auth, nc=00000001, cnonce=\"c\"").unwrap();
        assert_eq!(a.username, "a\"b");
        assert_eq!(a.realm, "r, x");
        assert_eq!(a.nonce, "n1");
        assert_eq!(a.qop.as_deref(), Some("auth"));
        assert!(DigestAuthorization::parse("Basic dXNlcjpwYXNz").is_err());
        assert!(DigestAuthorization::parse("Digest realm=\"r\"").is_err());
        assert!(DigestAuthorization::parse("Digest username=\"unterminated").is_err());
        assert!(DigestAuthorization::parse("Digestusername=a").is_err());
        assert!(DigestAuthorization::parse("").is_err());
    }
}
