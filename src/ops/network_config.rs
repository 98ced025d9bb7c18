//! Configuration of the node's network edges: SIP trunks, the central
//! reasoning cluster and the outcome collector (`[sip]`, `[cluster]`,
//! `[collector]`). Parsed and validated with the rest of the config so that a
//! production file is checked before deployment.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

/// `[sip]`: where the node listens for carriers and PBXs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    pub listen_udp: Option<SocketAddr>,
    pub listen_tcp: Option<SocketAddr>,
    /// Address put in SDP and Contact when behind NAT (default: the socket's).
    pub public_address: Option<IpAddr>,
    /// Inclusive RTP port range; each call takes an even port (RTCP +1).
    pub rtp_ports: [u16; 2],
    /// Calls at once; more get 503 with Retry-After.
    pub max_calls: u32,
    /// Seconds a refused caller is told to wait (Retry-After).
    pub retry_after_s: u32,
    /// Requests per second one source address may send (token bucket refill);
    /// more are dropped and counted.
    pub rate_limit_per_s: f64,
    /// Requests one source may send in a burst.
    pub rate_burst: u32,
    /// A call whose RTP stops for this long is hung up (the reason is logged).
    pub rtp_timeout_s: u32,
    /// Ring (180) this long before answering; 0 answers at once.
    pub answer_after_ms: u32,
    #[serde(rename = "trunk")]
    pub trunks: Vec<TrunkConfig>,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen_udp: Some(SocketAddr::from(([127, 0, 0, 1], 5060))),
            listen_tcp: None,
            public_address: None,
            rtp_ports: [20_000, 20_999],
            max_calls: 16,
            retry_after_s: 5,
            rate_limit_per_s: 50.0,
            rate_burst: 100,
            rtp_timeout_s: 30,
            answer_after_ms: 0,
            trunks: vec![TrunkConfig {
                name: "loopback".into(),
                sources: vec!["127.0.0.0/8".into(), "::1/128".into()],
                digest_user: None,
                digest_password_env: None,
                numbers: BTreeMap::from([("*".to_string(), "retail".to_string())]),
                transfer_target: None,
            }],
        }
    }
}

/// `[[sip.trunk]]`: a carrier or PBX allowed to send calls.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    pub name: String,
    /// Source addresses or CIDRs the trunk's requests come from.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Digest authentication user; the password comes from the environment
    /// variable named by `digest_password_env`, never from this file.
    pub digest_user: Option<String>,
    pub digest_password_env: Option<String>,
    /// Dialled number (DID) -> flow name; "*" matches any number.
    pub numbers: BTreeMap<String, String>,
    /// SIP URI that REFER hands callers to when they ask for a person.
    pub transfer_target: Option<String>,
}

/// `[http]`: metrics, health checks, and the browser widget.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listening address; unset: no HTTP server.
    pub listen: Option<SocketAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: Some(SocketAddr::from(([127, 0, 0, 1], 8088))) }
    }
}

/// `[cluster]`: the central reasoning cluster (OpenAI-compatible servers).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    #[serde(rename = "endpoint")]
    pub endpoints: Vec<ClusterEndpoint>,
    pub max_tokens: u32,
    pub first_token_deadline_ms: u32,
    pub total_deadline_ms: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { endpoints: Vec::new(), max_tokens: 256, first_token_deadline_ms: 800, total_deadline_ms: 8000 }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterEndpoint {
    /// Base URL, e.g. `http://10.0.0.5:8000/v1`.
    pub url: String,
    /// Model name sent in requests.
    pub model: String,
    /// Environment variable holding the API key (none: no Authorization header).
    pub api_key_env: Option<String>,
}

/// `[collector]`: where outcome events are shipped. No URL: the local spool
/// is the store (`voice-edge outcomes list`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// NATS server URL, e.g. `nats://collector.example:4222`.
    pub nats_url: Option<String>,
    /// JetStream subject prefix events are published under.
    pub subject: String,
    /// The durable outcome spool. Unset: `$STATE_DIRECTORY/spool` under
    /// systemd, else `~/.local/state/voice-edge/spool`.
    pub spool_dir: Option<std::path::PathBuf>,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig { nats_url: None, subject: "outcomes".into(), spool_dir: None }
    }
}

/// Parses `a.b.c.d/len` or `a:b::/len` (a bare address is a host route).
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr.trim().parse().map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l.trim().parse::<u8>().ok().filter(|&l| l <= max).ok_or_else(|| format!("{s:?} has a bad prefix length"))?,
        None => max,
    };
    Ok((addr, len))
}

impl SipConfig {
    pub fn validate(&self) -> Result<(), String> {
        let [lo, hi] = self.rtp_ports;
        if lo < 1024 || lo > hi || lo % 2 != 0 {
            return Err(format!("sip.rtp_ports: [{lo}, {hi}] must be an even start >= 1024, start <= end"));
        }
        if self.max_calls == 0 {
            return Err("sip.max_calls: must be at least 1".into());
        }
        if u32::from((hi - lo) / 2 + 1) < self.max_calls {
            return Err(format!("sip.rtp_ports: [{lo}, {hi}] has fewer RTP/RTCP port pairs than sip.max_calls ({})", self.max_calls));
        }
        if !(self.rate_limit_per_s > 0.0 && self.rate_limit_per_s.is_finite()) || self.rate_burst == 0 {
            return Err("sip.rate_limit_per_s and sip.rate_burst: must be positive".into());
        }
        if self.answer_after_ms > 60_000 {
            return Err("sip.answer_after_ms: at most 60000".into());
        }
        if self.rtp_timeout_s == 0 {
            return Err("sip.rtp_timeout_s: must be at least 1".into());
        }
        for (i, t) in self.trunks.iter().enumerate() {
            let key = format!("sip.trunk[{i}] ({})", t.name);
            if t.sources.is_empty() && t.digest_user.is_none() {
                return Err(format!("{key}: needs sources or digest_user, or anyone could call through it"));
            }
            for s in &t.sources {
                parse_cidr(s).map_err(|e| format!("{key}.sources: {e}"))?;
            }
            if t.digest_user.is_some() != t.digest_password_env.is_some() {
                return Err(format!("{key}: digest_user and digest_password_env go together"));
            }
            if t.numbers.is_empty() {
                return Err(format!("{key}.numbers: map at least one number (or \"*\") to a flow"));
            }
            if let Some(target) = &t.transfer_target {
                if !target.starts_with("sip:") && !target.starts_with("sips:") {
                    return Err(format!("{key}.transfer_target: {target:?} is not a sip: URI"));
                }
            }
        }
        Ok(())
    }
}

impl ClusterConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (i, e) in self.endpoints.iter().enumerate() {
            if !(e.url.starts_with("http://") || e.url.starts_with("https://")) {
                return Err(format!("cluster.endpoint[{i}].url: {:?} is not an http(s) URL", e.url));
            }
            if e.model.trim().is_empty() {
                return Err(format!("cluster.endpoint[{i}].model: must not be empty"));
            }
        }
        if self.first_token_deadline_ms == 0 || self.first_token_deadline_ms > self.total_deadline_ms {
            return Err("cluster.first_token_deadline_ms: must be > 0 and <= total_deadline_ms".into());
        }
        if self.max_tokens == 0 {
            return Err("cluster.max_tokens: must be at least 1".into());
        }
        Ok(())
    }
}

impl CollectorConfig {
    /// The spool directory in effect.
    pub fn spool_dir(&self) -> std::path::PathBuf {
        if let Some(d) = &self.spool_dir {
            return d.clone();
        }
        if let Some(state) = std::env::var_os("STATE_DIRECTORY") {
            return std::path::PathBuf::from(state).join("spool");
        }
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_else(|| ".".into());
        home.join(".local/state/voice-edge/spool")
    }

    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.nats_url {
            if !(url.starts_with("nats://") || url.starts_with("tls://")) {
                return Err(format!("collector.nats_url: {url:?} is not a nats:// or tls:// URL"));
            }
        }
        if self.subject.is_empty() || self.subject.contains(char::is_whitespace) || self.subject.contains(['*', '>']) {
            return Err(format!("collector.subject: {:?} is not a plain NATS subject", self.subject));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.1.0.0/16").unwrap().1, 16);
        assert_eq!(parse_cidr("::1").unwrap().1, 128);
        assert!(parse_cidr("10.1.0.0/33").is_err());
        assert!(parse_cidr("example.com").is_err());
    }

    #[test]
    fn default_sections_are_valid() {
        SipConfig::default().validate().unwrap();
        ClusterConfig::default().validate().unwrap();
        CollectorConfig::default().validate().unwrap();
    }

    #[test]
    fn open_trunk_is_refused() {
        let mut sip = SipConfig::default();
        sip.trunks[0].sources.clear();
        assert!(sip.validate().unwrap_err().contains("anyone could call"));
    }
}
