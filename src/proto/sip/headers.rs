//! The header list of a SIP message (RFC 3261 §7.3, §20).
//!
//! [`Headers`] keeps every header field line in the order received, with
//! its name as written and its value as received (folded lines joined with
//! a single SP, §7.3.1; otherwise byte for byte). Lookup is
//! case-insensitive and understands the compact forms of §7.3.3 and later
//! RFCs (`i` Call-ID, `m` Contact, `v` Via, `o` Event, `r` Refer-To, ...).
//! Typed accessors (Via, From/To, CSeq, ...) live in [`super::typed`].

use std::borrow::Cow;

use super::syntax::split_list;

/// Full names of the header fields this layer knows, in canonical spelling,
/// followed by the compact forms. Compact forms: RFC 3261 §7.3.3 (i m e l c
/// f s k t v), RFC 6665 (o u), RFC 3515 (r), RFC 3892 (b), RFC 4028 (x),
/// RFC 3841 (a j d), RFC 8224 (y), RFC 4474 (n).
const KNOWN: &[&str] = &[
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Diversion",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "History-Info",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Service-Route",
    "Session-Expires",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
];

const COMPACT: &[(&str, &str)] = &[
    ("a", "Accept-Contact"),
    ("b", "Referred-By"),
    ("c", "Content-Type"),
    ("d", "Request-Disposition"),
    ("e", "Content-Encoding"),
    ("f", "From"),
    ("i", "Call-ID"),
    ("j", "Reject-Contact"),
    ("k", "Supported"),
    ("l", "Content-Length"),
    ("m", "Contact"),
    ("n", "Identity-Info"),
    ("o", "Event"),
    ("r", "Refer-To"),
    ("s", "Subject"),
    ("t", "To"),
    ("u", "Allow-Events"),
    ("v", "Via"),
    ("x", "Session-Expires"),
    ("y", "Identity"),
];

/// The canonical full name of a known header (`"v"`, `"VIA"` -> `"Via"`),
/// or `None` for an extension header.
pub fn canonical_name(name: &str) -> Option<&'static str> {
    if name.len() == 1 {
        return COMPACT
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(name))
            .map(|(_, full)| *full);
    }
    KNOWN.iter().find(|k| k.eq_ignore_ascii_case(name)).copied()
}

/// The name to write on the wire: the canonical full name for a known
/// header, the name as given otherwise.
pub fn full_name(name: &str) -> Cow<'_, str> {
    match canonical_name(name) {
        Some(c) => Cow::Borrowed(c),
        None => Cow::Borrowed(name),
    }
}

/// Whether two header names denote the same header field.
pub fn same_name(a: &str, b: &str) -> bool {
    match (canonical_name(a), canonical_name(b)) {
        (Some(x), Some(y)) => x == y,
        (None, None) => a.eq_ignore_ascii_case(b),
        _ => false,
    }
}

/// A predicate matching header lines named `name` (any spelling), with the
/// query's canonical form computed once.
fn named(name: &str) -> impl Fn(&Header) -> bool + '_ {
    let canon = canonical_name(name);
    move |h: &Header| match canon {
        Some(c) => canonical_name(&h.name) == Some(c),
        None => h.name.eq_ignore_ascii_case(name) && canonical_name(&h.name).is_none(),
    }
}

/// One header field line: name as written, value as received (unfolded).
#[derive(Debug, Clone, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

impl PartialEq for Header {
    /// Same header field (compact and full names are equal) and same value.
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value && same_name(&self.name, &other.name)
    }
}

impl Header {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }

    /// Whether this line is the header field `name` (any spelling).
    pub fn is(&self, name: &str) -> bool {
        same_name(&self.name, name)
    }
}

/// The ordered header list of a message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Headers(Vec<Header>);

impl Headers {
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }

    /// Appends a header line.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push(Header::new(name, value));
    }

    /// Inserts a header line at `index` (clamped to the end), e.g. a Via on
    /// top of the others.
    pub fn insert(&mut self, index: usize, name: impl Into<String>, value: impl Into<String>) {
        let i = index.min(self.0.len());
        self.0.insert(i, Header::new(name, value));
    }

    /// The value of the first line of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        let m = named(name);
        self.0.iter().find(|h| m(h)).map(|h| h.value.as_str())
    }

    /// The values of every line of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let m = named(name);
        self.0
            .iter()
            .filter(move |h| m(h))
            .map(|h| h.value.as_str())
    }

    /// How many lines of `name` there are.
    pub fn count(&self, name: &str) -> usize {
        let m = named(name);
        self.0.iter().filter(|h| m(h)).count()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(named(name))
    }

    /// Every comma-separated element of every line of `name`, for
    /// list-valued headers (§7.3.1: `Via: a, b` equals two Via lines).
    /// Commas inside quoted strings and `<...>` do not split.
    pub fn values(&self, name: &str) -> Vec<&str> {
        let m = named(name);
        self.0
            .iter()
            .filter(|h| m(h))
            .flat_map(|h| split_list(&h.value))
            .collect()
    }

    /// Replaces the first line of `name` (removing any others) or appends.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.0.iter().position(|h| h.is(&name)) {
            Some(i) => {
                self.0[i] = Header::new(name.clone(), value);
                let mut seen = 0usize;
                self.0.retain(|h| {
                    if h.is(&name) {
                        seen += 1;
                        seen == 1
                    } else {
                        true
                    }
                });
            }
            None => self.0.push(Header::new(name, value)),
        }
    }

    /// Removes every line of `name`; returns how many went.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.0.len();
        let m = named(name);
        self.0.retain(|h| !m(h));
        before - self.0.len()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl FromIterator<Header> for Headers {
    fn from_iter<T: IntoIterator<Item = Header>>(iter: T) -> Self {
        Headers(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case_insensitive_lookup() {
        let mut h = Headers::new();
        h.push("v", "SIP/2.0/UDP a");
        h.push("VIA", "SIP/2.0/UDP b, SIP/2.0/UDP c");
        h.push("i", "abc@host");
        h.push("o", "refer");
        h.push("X-Custom", "1");
        assert_eq!(h.get("Via"), Some("SIP/2.0/UDP a"));
        assert_eq!(h.count("via"), 2);
        assert_eq!(
            h.values("Via"),
            vec!["SIP/2.0/UDP a", "SIP/2.0/UDP b", "SIP/2.0/UDP c"]
        );
        assert_eq!(h.get("call-id"), Some("abc@host"));
        assert_eq!(h.get("Event"), Some("refer"));
        assert_eq!(h.get("x-custom"), Some("1"));
        assert_eq!(canonical_name("t"), Some("To"));
        assert_eq!(canonical_name("CSEQ"), Some("CSeq"));
        assert_eq!(canonical_name("r"), Some("Refer-To"));
        assert_eq!(canonical_name("x"), Some("Session-Expires"));
        assert_eq!(canonical_name("u"), Some("Allow-Events"));
        assert_eq!(canonical_name("C%6Fntact"), None);
        assert_eq!(full_name("l"), "Content-Length");
        assert_eq!(Header::new("l", "0"), Header::new("Content-Length", "0"));
        h.set("Via", "SIP/2.0/TCP z");
        assert_eq!(h.count("Via"), 1);
        assert_eq!(h.iter().next().unwrap().value, "SIP/2.0/TCP z");
        assert_eq!(h.remove("i"), 1);
        assert!(!h.contains("Call-ID"));
    }
}
