//! Ordered `;name[=value]` parameter lists, shared by URI parameters
//! (RFC 3261 §19.1.1, `uri-parameters`) and header parameters (§25.1
//! `generic-param`: Via, From/To tags, Contact `q`/`expires`, media types).
//!
//! Names compare case-insensitively (§19.1.4, §7.3.1); values are kept
//! exactly as received (escaped, and with their quotes when quoted), so a
//! message re-serializes to the same text.

use std::fmt;

/// One parameter. `value` is `None` for a bare flag such as `;lr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

/// Parameters in the order received.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Params(pub Vec<Param>);

impl Params {
    pub fn new() -> Self {
        Params(Vec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Param> {
        self.0.iter()
    }

    /// The first parameter called `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.0.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// Whether a parameter called `name` is present (with or without value).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The raw value of `name`; `None` when absent or valueless.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|p| p.value.as_deref())
    }

    /// The value of `name` with surrounding quotes and quoted-pairs removed.
    pub fn unquoted_value(&self, name: &str) -> Option<String> {
        let v = self.value(name)?;
        match v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            Some(inner) => Some(super::syntax::unquote(inner)),
            None => Some(v.to_string()),
        }
    }

    pub fn push(&mut self, name: impl Into<String>, value: Option<String>) {
        self.0.push(Param {
            name: name.into(),
            value,
        });
    }

    /// Replaces the value of the first `name` or appends it.
    pub fn set(&mut self, name: &str, value: Option<String>) {
        match self
            .0
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        {
            Some(p) => p.value = value,
            None => self.push(name, value),
        }
    }

    /// Removes every parameter called `name`; returns how many went.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.0.len();
        self.0.retain(|p| !p.name.eq_ignore_ascii_case(name));
        before - self.0.len()
    }
}

impl fmt::Display for Params {
    /// `;name=value;flag` (nothing when empty).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            match &p.value {
                Some(v) => write!(f, ";{}={}", p.name, v)?,
                None => write!(f, ";{}", p.name)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_case_insensitive_and_ordered() {
        let mut p = Params::new();
        p.push("Branch", Some("z9hG4bK1".into()));
        p.push("rport", None);
        p.push("x", Some("\"a\\\"b\"".into()));
        assert_eq!(p.value("branch"), Some("z9hG4bK1"));
        assert!(p.contains("RPORT"));
        assert_eq!(p.value("rport"), None);
        assert_eq!(p.unquoted_value("x").as_deref(), Some("a\"b"));
        assert_eq!(p.to_string(), ";Branch=z9hG4bK1;rport;x=\"a\\\"b\"");
        p.set("rport", Some("5060".into()));
        assert_eq!(p.value("rport"), Some("5060"));
        assert_eq!(p.remove("BRANCH"), 1);
        assert_eq!(p.len(), 2);
    }
}
