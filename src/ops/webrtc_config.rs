//! `[webrtc]`: the browser widget's WebRTC leg. Signalling (WHIP-style
//! `POST /webrtc/sessions`) rides on the `[http]` server; media and the data
//! channel run over UDP ports the sessions bind themselves.
//!
//! Parsed and validated with the rest of the config (unknown keys are
//! errors), so a production file is checked before deployment.

use std::net::IpAddr;

use serde::Deserialize;

/// `[webrtc]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebrtcConfig {
    /// Serve the widget and accept browser sessions (needs `[http] listen`).
    pub enabled: bool,
    /// Sessions at once; more get 503 with Retry-After.
    pub max_sessions: u32,
    /// Seconds a refused browser is told to wait (Retry-After).
    pub retry_after_s: u32,
    /// Page origins (`scheme://host[:port]`) allowed to open sessions from
    /// another site; `"*"` allows any. The node's own widget page (same
    /// origin) is always allowed.
    pub allowed_origins: Vec<String>,
    /// Interface the media sockets bind: `0.0.0.0` means every non-loopback
    /// interface (one host candidate each).
    pub bind_ip: IpAddr,
    /// The address browsers reach this node at, when it sits behind a 1:1
    /// NAT: advertised as the host candidates' address.
    pub public_ip: Option<IpAddr>,
    /// STUN servers (`stun:host:port`) for server-reflexive candidates.
    pub stun_servers: Vec<String>,
    /// Inclusive UDP port range for media; each session takes one port.
    /// Unset: ephemeral ports.
    pub udp_port_range: Option<[u16; 2]>,
    /// Longest session (conversation plus rating), seconds.
    pub session_timeout_s: u32,
    /// A session whose ICE/DTLS does not connect within this is dropped.
    pub connect_timeout_s: u32,
    /// After the conversation ends, how long the page may still send a
    /// rating before the session is closed.
    pub rating_window_s: u32,
    /// Largest SDP offer accepted (bytes); larger get 413.
    pub max_offer_bytes: usize,
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        WebrtcConfig {
            enabled: true,
            max_sessions: 8,
            retry_after_s: 5,
            allowed_origins: Vec::new(),
            bind_ip: IpAddr::from([0, 0, 0, 0]),
            public_ip: None,
            stun_servers: Vec::new(),
            udp_port_range: None,
            session_timeout_s: 600,
            connect_timeout_s: 15,
            rating_window_s: 60,
            max_offer_bytes: 16 * 1024,
        }
    }
}

impl WebrtcConfig {
    /// Checks every key; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1000).contains(&self.max_sessions) {
            return Err(format!("webrtc.max_sessions: {} is not within 1..=1000", self.max_sessions));
        }
        if self.retry_after_s == 0 || self.retry_after_s > 3600 {
            return Err(format!("webrtc.retry_after_s: {} is not within 1..=3600", self.retry_after_s));
        }
        for origin in &self.allowed_origins {
            if origin != "*" && !is_origin(origin) {
                return Err(format!(
                    "webrtc.allowed_origins: {origin:?} is not an origin (scheme://host[:port], no path) or \"*\""
                ));
            }
        }
        if let Some(ip) = self.public_ip {
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(format!("webrtc.public_ip: {ip} cannot be reached by a browser"));
            }
        }
        for url in &self.stun_servers {
            let rest = url.strip_prefix("stun:").or_else(|| url.strip_prefix("stuns:"));
            let ok = rest.is_some_and(|r| !r.is_empty() && !r.contains(char::is_whitespace) && !r.contains('/'));
            if !ok {
                return Err(format!("webrtc.stun_servers: {url:?} is not a stun:host[:port] URL"));
            }
        }
        if let Some([lo, hi]) = self.udp_port_range {
            if lo < 1024 || lo > hi {
                return Err(format!("webrtc.udp_port_range: [{lo}, {hi}] must be ascending and above 1023"));
            }
            if u32::from(hi - lo) + 1 < self.max_sessions {
                return Err(format!(
                    "webrtc.udp_port_range: [{lo}, {hi}] has fewer ports than webrtc.max_sessions ({})",
                    self.max_sessions
                ));
            }
        }
        if !(10..=86_400).contains(&self.session_timeout_s) {
            return Err(format!("webrtc.session_timeout_s: {} is not within 10..=86400", self.session_timeout_s));
        }
        if !(1..=120).contains(&self.connect_timeout_s) {
            return Err(format!("webrtc.connect_timeout_s: {} is not within 1..=120", self.connect_timeout_s));
        }
        if self.rating_window_s > 3600 {
            return Err(format!("webrtc.rating_window_s: {} is more than 3600", self.rating_window_s));
        }
        if !(1024..=1024 * 1024).contains(&self.max_offer_bytes) {
            return Err(format!("webrtc.max_offer_bytes: {} is not within 1024..=1048576", self.max_offer_bytes));
        }
        Ok(())
    }
}

/// `scheme://host[:port]` with no path, query or trailing slash.
fn is_origin(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else { return false };
    let scheme_ok = !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let rest_ok = !rest.is_empty()
        && rest.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c))
        && !rest.starts_with(':')
        && !rest.ends_with(':');
    scheme_ok && rest_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebrtcConfig, String> {
        let cfg: WebrtcConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    #[test]
    fn defaults_are_valid_and_loopback_friendly() {
        let cfg = WebrtcConfig::default();
        cfg.validate().unwrap();
        assert!(cfg.enabled);
        assert!(cfg.allowed_origins.is_empty());
        assert_eq!(parse("").unwrap(), cfg);
    }

    #[test]
    fn every_key_parses() {
        let cfg = parse(
            r#"enabled = true
max_sessions = 4
retry_after_s = 2
allowed_origins = ["https://shop.example", "*"]
bind_ip = "10.0.0.5"
public_ip = "203.0.113.7"
stun_servers = ["stun:stun.example:3478"]
udp_port_range = [40000, 40099]
session_timeout_s = 300
connect_timeout_s = 10
rating_window_s = 30
max_offer_bytes = 8192"#,
        )
        .unwrap();
        assert_eq!(cfg.max_sessions, 4);
        assert_eq!(cfg.udp_port_range, Some([40000, 40099]));
        assert_eq!(cfg.public_ip, Some("203.0.113.7".parse().unwrap()));
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("nope = 1", "unknown field"),
            ("max_sessions = 0", "webrtc.max_sessions"),
            ("allowed_origins = [\"https://shop.example/\"]", "webrtc.allowed_origins"),
            ("allowed_origins = [\"shop.example\"]", "webrtc.allowed_origins"),
            ("public_ip = \"0.0.0.0\"", "webrtc.public_ip"),
            ("stun_servers = [\"turn:x\"]", "webrtc.stun_servers"),
            ("udp_port_range = [50000, 40000]", "webrtc.udp_port_range"),
            ("udp_port_range = [40000, 40002]", "fewer ports"),
            ("session_timeout_s = 1", "webrtc.session_timeout_s"),
            ("connect_timeout_s = 0", "webrtc.connect_timeout_s"),
            ("max_offer_bytes = 10", "webrtc.max_offer_bytes"),
        ];
        for (text, needle) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
