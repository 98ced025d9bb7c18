//! Lexical building blocks of the SIP grammar (RFC 3261 §25.1): character
//! classes, a byte scanner over `&str`, quoted strings (§25.1 `quoted-string`,
//! `quoted-pair`), comma-separated lists (§7.3.1) and decimal scalars.
//!
//! The scanner only ever stops on ASCII bytes or at the end of its input, and
//! every predicate either accepts all bytes >= 0x80 or none of them, so every
//! slice it hands out falls on a UTF-8 character boundary.

/// `token` characters (RFC 3261 §25.1).
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// A non-empty `token`.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// `mark` (RFC 3261 §25.1).
pub(crate) fn is_mark(b: u8) -> bool {
    matches!(
        b,
        b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
    )
}

/// `unreserved = alphanum / mark`.
pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || is_mark(b)
}

/// SP or HTAB.
pub(crate) fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Checks that every byte of `s` is either accepted by `allowed` or starts a
/// well-formed `escaped` triplet (`"%" HEXDIG HEXDIG`).
pub(crate) fn check_escaped(s: &str, allowed: impl Fn(u8) -> bool) -> Result<(), String> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let ok = b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return Err("'%' not followed by two hex digits".into());
            }
            i += 3;
        } else if allowed(c) {
            i += 1;
        } else {
            return Err(format!("invalid character {}", describe_byte(c)));
        }
    }
    Ok(())
}

/// Decodes `%HH` escapes; malformed escapes are kept as they are.
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A printable description of one byte for error texts (never echoes
/// control characters or non-ASCII bytes verbatim).
pub(crate) fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else if b == b' ' {
        "SP".into()
    } else {
        format!("0x{b:02X}")
    }
}

/// Cursor over a header value or URI.
pub(crate) struct Scanner<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(s: &'a str) -> Self {
        Scanner { s, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn slice(&self, from: usize) -> &'a str {
        self.s.get(from..self.pos).unwrap_or("")
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    pub(crate) fn bump(&mut self) {
        if self.pos < self.s.len() {
            self.pos += 1;
        }
    }

    /// Skips SP / HTAB; returns whether anything was skipped.
    pub(crate) fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
        self.pos > start
    }

    pub(crate) fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Takes the longest run of bytes accepted by `f`. `f` must accept either
    /// all bytes >= 0x80 or none of them.
    pub(crate) fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        self.slice(start)
    }

    /// Parses a `quoted-string` starting at the current `"`; returns the
    /// text between the quotes with quoted-pairs left escaped.
    pub(crate) fn quoted(&mut self) -> Result<&'a str, String> {
        if !self.eat(b'"') {
            return Err("expected '\"'".into());
        }
        let start = self.pos;
        loop {
            match self.peek() {
                None => return Err("unterminated quoted string".into()),
                Some(b'"') => {
                    let inner = self.slice(start);
                    self.pos += 1;
                    return Ok(inner);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c) if c <= 0x7F && c != b'\r' && c != b'\n' => self.pos += 1,
                        _ => return Err("invalid quoted-pair in quoted string".into()),
                    }
                }
                Some(c) if (c < 0x20 && c != b'\t') || c == 0x7F => {
                    return Err(format!(
                        "control character {} in quoted string",
                        describe_byte(c)
                    ))
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// Generic parameter value: `token / host / quoted-string` (RFC 3261
    /// §25.1 `gen-value`). Quoted values are returned with their quotes.
    pub(crate) fn gen_value(&mut self) -> Result<&'a str, String> {
        let start = self.pos;
        if self.peek() == Some(b'"') {
            self.quoted()?;
            return Ok(self.slice(start));
        }
        let v = self.take_while(|b| is_token_byte(b) || matches!(b, b':' | b'[' | b']'));
        if v.is_empty() {
            return Err(match self.peek() {
                Some(b) => format!("invalid character {} in parameter value", describe_byte(b)),
                None => "empty parameter value".into(),
            });
        }
        Ok(v)
    }
}

/// Resolves quoted-pairs in the inside of a quoted string.
pub(crate) fn unquote(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Quotes `s` as a `quoted-string`, escaping `"` and `\`; CR and LF (which a
/// quoted string cannot carry) become spaces.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' => out.push(' '),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Splits a header value on commas that are outside quoted strings and
/// outside `<...>` (RFC 3261 §7.3.1). Elements are trimmed; empty elements
/// are kept so that callers can reject them.
pub(crate) fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let b = value.as_bytes();
    let (mut in_quote, mut in_angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_quote = false;
            }
            continue;
        }
        match c {
            b'"' => in_quote = true,
            b'<' => in_angle = true,
            b'>' => in_angle = false,
            b',' if !in_angle => {
                out.push(trim_ws(&value[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(trim_ws(&value[start..]));
    out
}

/// Trims SP / HTAB from both ends.
pub(crate) fn trim_ws(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// Parses `1*DIGIT` into a `u64` without overflow (leading zeros allowed).
pub(crate) fn parse_decimal(s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err("empty number".into());
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a decimal number".into());
    }
    let digits = s.trim_start_matches('0');
    if digits.len() > 19 {
        return Err("number too large".into());
    }
    if digits.is_empty() {
        return Ok(0);
    }
    digits.parse::<u64>().map_err(|_| "number too large".into())
}

/// Makes arbitrary text safe for a reason phrase or a single header line:
/// control characters become spaces and the text is cut (on a character
/// boundary) at `max` bytes.
/// An error message as a response reason phrase: first letter upper-case,
/// control characters removed, at most 120 bytes.
pub(crate) fn reason_phrase(message: &str) -> String {
    let mut chars = message.chars();
    let capitalised: String = chars.next().map(|f| f.to_ascii_uppercase()).into_iter().chain(chars).collect();
    sanitize_line(&capitalised, 120)
}

pub(crate) fn sanitize_line(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(if c.is_control() && c != '\t' { ' ' } else { c });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_list_respects_quotes_and_angles() {
        let v = split_list(r#""a, b" <sip:x@y;p=1,2>;q=1 , sip:z@w, ,"#);
        assert_eq!(v, vec![r#""a, b" <sip:x@y;p=1,2>;q=1"#, "sip:z@w", "", ""]);
        assert_eq!(split_list(r#""a\", b", c"#), vec![r#""a\", b""#, "c"]);
    }

    #[test]
    fn quoted_strings() {
        let mut sc = Scanner::new(r#""J Rosenberg \\\"" x"#);
        let inner = sc.quoted().unwrap();
        assert_eq!(unquote(inner), r#"J Rosenberg \""#);
        assert!(Scanner::new(r#""open"#).quoted().is_err());
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn decimals_and_escapes() {
        assert_eq!(parse_decimal("0068"), Ok(68));
        assert!(parse_decimal("36893488147419103232").is_err());
        assert!(parse_decimal("-1").is_err());
        assert_eq!(unescape("a%41%zz%4"), b"aA%zz%4".to_vec());
        assert!(check_escaped("a%4", |b| b.is_ascii_alphanumeric()).is_err());
        assert!(check_escaped("a%41", |b| b.is_ascii_alphanumeric()).is_ok());
    }
}
