//! The browser widget's data channel protocol: one JSON object per message,
//! tagged by `type`, on the reliable, ordered channel the page opens
//! (label [`CHANNEL_LABEL`]).
//!
//! Node to page ([`ServerMessage`]): call state, partial and final caller
//! transcripts, the agent's replies, the end of the conversation (with the
//! call id the rating will refer to), the rating's receipt, errors.
//!
//! Page to node ([`ClientMessage`]): keypad digits (DTMF-like, `0-9*#`),
//! hang-up, and the 1-5 satisfaction rating after the conversation.
//!
//! Hostile input is expected: [`ClientMessage::parse`] bounds the size and
//! validates every field; it never panics.

use serde::{Deserialize, Serialize};

/// The data channel's label (the page creates it before its offer).
pub const CHANNEL_LABEL: &str = "voice-edge";

/// Largest message accepted from a page, in bytes.
pub const MAX_CLIENT_MESSAGE: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WidgetError {
    #[error("message of {0} bytes is larger than {MAX_CLIENT_MESSAGE}")]
    TooLarge(usize),
    #[error("message is not a widget message: {0}")]
    Malformed(String),
    #[error("digit {0:?} is not one of 0-9, *, #, A-D")]
    BadDigit(String),
    #[error("rating {0} is not within 1..=5")]
    BadScore(i64),
}

/// What the page sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    Dtmf(char),
    Hangup,
    Rating(u8),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum RawClient {
    Dtmf { digit: String },
    Hangup {},
    Rating { score: i64 },
}

impl ClientMessage {
    pub fn parse(bytes: &[u8]) -> Result<ClientMessage, WidgetError> {
        if bytes.len() > MAX_CLIENT_MESSAGE {
            return Err(WidgetError::TooLarge(bytes.len()));
        }
        let raw: RawClient = serde_json::from_slice(bytes).map_err(|e| WidgetError::Malformed(e.to_string()))?;
        Ok(match raw {
            RawClient::Dtmf { digit } => {
                let mut chars = digit.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if c.is_ascii_digit() || "*#ABCD".contains(c) => ClientMessage::Dtmf(c),
                    _ => return Err(WidgetError::BadDigit(digit)),
                }
            }
            RawClient::Hangup {} => ClientMessage::Hangup,
            RawClient::Rating { score } => match u8::try_from(score) {
                Ok(s) if (1..=5).contains(&s) => ClientMessage::Rating(s),
                _ => return Err(WidgetError::BadScore(score)),
            },
        })
    }
}

/// What the node sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The call's state: `connecting`, `listening`, `caller_speaking`,
    /// `thinking`, `agent_speaking`, `transferring`, `ended`.
    State { state: String },
    /// What the caller is saying, so far.
    Partial { text: String },
    /// The caller's turn, final.
    Transcript { turn: u32, text: String },
    /// The agent's reply to a turn.
    Reply { turn: u32, text: String },
    /// The conversation is over; a rating for `call_id` is welcome until
    /// the session closes.
    Ended { call_id: String, reason: String },
    /// The rating was recorded.
    Rated { score: u8 },
    /// Something the page sent was refused.
    Error { message: String },
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        // A tagged enum of strings and integers always serializes.
        serde_json::to_string(self).unwrap_or_else(|_| r#"{"type":"error","message":"unserializable"}"#.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_widget_sends() {
        assert_eq!(ClientMessage::parse(br#"{"type":"dtmf","digit":"5"}"#), Ok(ClientMessage::Dtmf('5')));
        assert_eq!(ClientMessage::parse(br##"{"type":"dtmf","digit":"#"}"##), Ok(ClientMessage::Dtmf('#')));
        assert_eq!(ClientMessage::parse(br#"{"type":"hangup"}"#), Ok(ClientMessage::Hangup));
        assert_eq!(ClientMessage::parse(br#"{"type":"rating","score":4}"#), Ok(ClientMessage::Rating(4)));
    }

    #[test]
    fn refuses_bad_messages() {
        assert_eq!(ClientMessage::parse(br#"{"type":"rating","score":0}"#), Err(WidgetError::BadScore(0)));
        assert_eq!(ClientMessage::parse(br#"{"type":"rating","score":6}"#), Err(WidgetError::BadScore(6)));
        assert_eq!(ClientMessage::parse(br#"{"type":"rating","score":-300}"#), Err(WidgetError::BadScore(-300)));
        assert!(matches!(ClientMessage::parse(br#"{"type":"dtmf","digit":"55"}"#), Err(WidgetError::BadDigit(_))));
        assert!(matches!(ClientMessage::parse(br#"{"type":"dtmf","digit":"x"}"#), Err(WidgetError::BadDigit(_))));
        assert!(matches!(ClientMessage::parse(br#"{"type":"launch"}"#), Err(WidgetError::Malformed(_))));
        assert!(matches!(ClientMessage::parse(br#"{"type":"hangup","extra":1}"#), Err(WidgetError::Malformed(_))));
        assert!(matches!(ClientMessage::parse(b"\xff\x00"), Err(WidgetError::Malformed(_))));
        let big = vec![b' '; MAX_CLIENT_MESSAGE + 1];
        assert_eq!(ClientMessage::parse(&big), Err(WidgetError::TooLarge(MAX_CLIENT_MESSAGE + 1)));
    }

    #[test]
    fn server_messages_are_tagged_json() {
        let m = ServerMessage::Transcript { turn: 1, text: "where is my order".into() };
        assert_eq!(m.to_json(), r#"{"type":"transcript","turn":1,"text":"where is my order"}"#);
        let m = ServerMessage::Ended { call_id: "webrtc-1".into(), reason: "caller hung up".into() };
        assert_eq!(serde_json::from_str::<ServerMessage>(&m.to_json()).unwrap(), m);
        assert_eq!(ServerMessage::State { state: "listening".into() }.to_json(), r#"{"type":"state","state":"listening"}"#);
    }
}
