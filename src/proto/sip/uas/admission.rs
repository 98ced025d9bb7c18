//! Who may call and how often: source CIDR matching, the dialled number
//! (DID) and its flow, the per-source token bucket, and the seeded id
//! generator for To tags, branches and CSeq starts (RFC 3261 §19.3 asks for
//! at least 32 random bits in tags and branches).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use crate::proto::sip::message::Request;
use crate::proto::sip::syntax::unescape;
use crate::proto::sip::uri::Uri;

use super::Trunk;

/// Whether `ip` lies in `net/len` (IPv4-mapped IPv6 addresses count as
/// IPv4).
pub(super) fn cidr_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net.to_canonical(), ip.to_canonical()) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            (u32::from(n) & mask) == (u32::from(a) & mask)
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            (u128::from(n) & mask) == (u128::from(a) & mask)
        }
        _ => false,
    }
}

/// Whether the trunk accepts requests from `ip` (no sources: anyone).
pub(super) fn trunk_allows(trunk: &Trunk, ip: IpAddr) -> bool {
    trunk.sources.is_empty() || trunk.sources.iter().any(|&(net, len)| cidr_contains(net, len, ip))
}

/// The user part of a SIP URI (unescaped, cut before any `;` user
/// parameters) or the number of a tel URI.
fn uri_number(uri: &Uri) -> Option<String> {
    let raw = match uri {
        Uri::Sip(s) => String::from_utf8_lossy(&unescape(s.user.as_deref()?)).into_owned(),
        Uri::Tel(t) => t.number.clone(),
        Uri::Other { .. } => return None,
    };
    let number = raw.split(';').next().unwrap_or("").trim().to_string();
    (!number.is_empty()).then_some(number)
}

/// The dialled number: the Request-URI user, else the To URI user.
pub(super) fn dialled_number(req: &Request) -> Option<String> {
    uri_number(&req.uri).or_else(|| req.headers.to_addr().ok().and_then(|t| uri_number(&t.uri)))
}

/// The flow for `number` on `trunk`: an exact entry, the same number with
/// or without a leading `+`, then `*`.
pub(super) fn route_number(trunk: &Trunk, number: &str) -> Option<String> {
    let toggled = match number.strip_prefix('+') {
        Some(rest) => rest.to_string(),
        None => format!("+{number}"),
    };
    trunk
        .numbers
        .get(number)
        .or_else(|| trunk.numbers.get(&toggled))
        .or_else(|| trunk.numbers.get("*"))
        .cloned()
}

/// splitmix64: a small, well-mixed generator seeded by the caller.
#[derive(Debug, Clone)]
pub(super) struct IdGen(u64);

impl IdGen {
    pub(super) fn new(seed: u64) -> Self {
        IdGen(seed)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A To/From tag: 64 random bits in hex.
    pub(super) fn tag(&mut self) -> String {
        format!("{:016x}", self.next_u64())
    }

    /// A branch with the RFC 3261 magic cookie.
    pub(super) fn branch(&mut self) -> String {
        format!("z9hG4bK{:016x}", self.next_u64())
    }

    /// A first local CSeq below 2^31 (§8.1.1.5).
    pub(super) fn cseq_start(&mut self) -> u32 {
        (self.next_u64() % (1 << 16)) as u32 + 1
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Per-source token buckets, at most [`RateLimiter::MAX_SOURCES`] of them.
#[derive(Debug, Clone, Default)]
pub(super) struct RateLimiter {
    buckets: HashMap<IpAddr, Bucket>,
}

impl RateLimiter {
    /// Tracked sources at most; idle ones (full buckets) are forgotten
    /// first, and when every slot is busy a new source passes untracked
    /// rather than growing the table.
    pub(super) const MAX_SOURCES: usize = 16_384;

    /// Takes a token for `ip`; `false` when the source is over its rate.
    /// A rate of 0 or less disables limiting.
    pub(super) fn allow(&mut self, now: Instant, ip: IpAddr, rate_per_s: f64, burst: u32) -> bool {
        if rate_per_s.is_nan() || rate_per_s <= 0.0 || rate_per_s.is_infinite() {
            return true;
        }
        let burst = f64::from(burst.max(1));
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= Self::MAX_SOURCES {
            let refill_s = burst / rate_per_s;
            self.buckets
                .retain(|_, b| now.saturating_duration_since(b.last).as_secs_f64() < refill_s);
            if self.buckets.len() >= Self::MAX_SOURCES {
                return true;
            }
        }
        let b = self.buckets.entry(ip).or_insert(Bucket { tokens: burst, last: now });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate_per_s).min(burst);
        b.last = now.max(b.last);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    #[cfg(test)]
    pub(super) fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[test]
    fn cidrs() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(cidr_contains(ip("198.51.100.0"), 24, ip("198.51.100.77")));
        assert!(!cidr_contains(ip("198.51.100.0"), 24, ip("198.51.101.1")));
        assert!(cidr_contains(ip("0.0.0.0"), 0, ip("203.0.113.1")));
        assert!(cidr_contains(ip("10.0.0.1"), 32, ip("::ffff:10.0.0.1")));
        assert!(cidr_contains(ip("2001:db8::"), 32, ip("2001:db8:1::5")));
        assert!(!cidr_contains(ip("2001:db8::"), 48, ip("2001:db8:1::5")));
        assert!(!cidr_contains(ip("10.0.0.0"), 8, ip("2001:db8::1")));
    }

    #[test]
    fn numbers() {
        let trunk = Trunk {
            name: "t".into(),
            sources: vec![],
            digest: None,
            numbers: BTreeMap::from([("+15550100".to_string(), "retail".to_string())]),
            transfer_target: None,
        };
        assert_eq!(route_number(&trunk, "+15550100").as_deref(), Some("retail"));
        assert_eq!(route_number(&trunk, "15550100").as_deref(), Some("retail"));
        assert_eq!(route_number(&trunk, "15550199"), None);
        let any = Trunk { numbers: BTreeMap::from([("*".to_string(), "f".to_string())]), ..trunk };
        assert_eq!(route_number(&any, "123").as_deref(), Some("f"));
        let req = |uri: &str, to: &str| {
            let text = format!("INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: {to}\r\nFrom: <sip:a@b>;tag=1\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
            crate::proto::sip::parse_message(text.as_bytes(), &Default::default()).unwrap().0.as_request().unwrap().clone()
        };
        assert_eq!(dialled_number(&req("sip:%2B1555;npdi@h", "<sip:x@h>")).as_deref(), Some("+1555"));
        assert_eq!(dialled_number(&req("tel:+1-555", "<sip:x@h>")).as_deref(), Some("+1-555"));
        assert_eq!(dialled_number(&req("sip:h", "<sip:777@h>")).as_deref(), Some("777"));
        assert_eq!(dialled_number(&req("sip:h", "<sip:h>")), None);
    }

    #[test]
    fn token_bucket() {
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let mut r = RateLimiter::default();
        let passed = (0..10).filter(|_| r.allow(t0, ip, 2.0, 4)).count();
        assert_eq!(passed, 4);
        assert!(!r.allow(t0 + Duration::from_millis(400), ip, 2.0, 4));
        assert!(r.allow(t0 + Duration::from_millis(500), ip, 2.0, 4));
        assert!(r.allow(t0, "192.0.2.10".parse().unwrap(), 2.0, 4));
        assert!(r.allow(t0, ip, 0.0, 0), "rate 0 disables");
        assert_eq!(r.tracked(), 2);
    }

    #[test]
    fn ids_are_seeded() {
        let (mut a, mut b, mut c) = (IdGen::new(1), IdGen::new(1), IdGen::new(2));
        assert_eq!(a.tag(), b.tag());
        assert_ne!(a.tag(), c.tag());
        assert!(a.branch().starts_with("z9hG4bK"));
        assert!((1..=65_536).contains(&a.cseq_start()));
    }
}
