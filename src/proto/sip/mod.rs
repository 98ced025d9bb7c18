//! SIP for a terminating UAS, sans-IO. The message layer (RFC 3261 §7,
//! §8.2, §18.3, §19, §20, §25): bytes to typed messages and back, plus the
//! checks a UAS makes before acting on a request. On top of it the UAS core:
//! transactions (§17, RFC 6026), dialogs (§12), digest authentication (§22,
//! RFC 7616 / RFC 8760) and the endpoint [`uas::Uas`] that owns them. No
//! sockets, no clocks (time is a `now: Instant` argument), no randomness
//! except the seed given to [`uas::Uas::new`].
//!
//! Proven against the RFC 4475 torture messages (`tests/sip_torture.rs`).
//!
//! | module | owns |
//! |---|---|
//! | [`message`] | `Message`, `Request`, `Response`, `Method`, `Version` (§7) |
//! | [`headers`] | the ordered header list, compact forms (§7.3) |
//! | [`typed`] | Via, From/To/Contact, CSeq, Call-ID, Max-Forwards, Content-*, Require & co. (§20) |
//! | [`uri`] | sip/sips/tel URIs, opaque other schemes, %-escapes, equivalence (§19.1) |
//! | [`params`] | `;name=value` lists shared by URIs and headers |
//! | [`parse`] | datagram parsing, stream framing, limits, errors with response context (§7, §18.3) |
//! | [`serialize`] | canonical output, `response_to` (§8.2.6) |
//! | [`validate`] | UAS request validation: 400, 406, 415, 416, 420, 483, 505 (§8.2) |
//! | [`transaction`] | INVITE / non-INVITE server and non-INVITE client transactions, Timers E-K, RFC 6026 Accepted (§17) |
//! | [`dialog`] | dialog id, CSeq ordering, route set, remote target, in-dialog requests (§12) |
//! | [`auth`] | digest challenges (SHA-256 and MD5), Authorization checks, seeded nonces (§22, RFC 7616, RFC 8760) |
//! | [`uas`] | the endpoint: trunks, admission, rate limits, calls, CANCEL/BYE/re-INVITE/INFO/REFER, output queue |
//!
//! Typical message-layer use (the [`uas`] module does this, and more, for
//! the node):
//!
//! ```
//! use voice_edge::proto::sip::{parse_message, validate_request, response_to, Limits, Message};
//!
//! let datagram = b"OPTIONS sip:agent@example.com SIP/2.0\r\n\
//! Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK74bf9\r\nMax-Forwards: 70\r\n\
//! From: <sip:carrier@example.net>;tag=9fxced76sl\r\nTo: <sip:agent@example.com>\r\n\
//! Call-ID: 3848276298220188511@example.net\r\nCSeq: 63104 OPTIONS\r\nContent-Length: 0\r\n\r\n";
//! let reply = match parse_message(datagram, &Limits::default()) {
//!     Ok((Message::Request(req), _)) => match validate_request(&req) {
//!         Ok(()) => Some(response_to(&req, 200, "OK").with_to_tag("a7c4")),
//!         Err(rejection) => Some(rejection.to_response(&req).with_to_tag("a7c4")),
//!     },
//!     Ok((Message::Response(_), _)) => None, // to the transaction layer
//!     Err(e) => e.response_context().map(|c| c.to_response().with_to_tag("a7c4")),
//! };
//! assert_eq!(reply.unwrap().status, 200);
//! ```

pub mod headers;
pub mod message;
pub mod params;
pub mod parse;
pub mod serialize;
mod syntax;
pub mod typed;
pub mod uri;
pub mod validate;

pub mod auth;
pub mod dialog;
pub mod transaction;
pub mod uas;

pub use headers::{canonical_name, Header, Headers};
pub use message::{Message, Method, Request, Response, Version};
pub use params::{Param, Params};
pub use parse::{parse_message, Limits, ParseError, ParseErrorKind, ResponseContext, StreamFramer};
pub use serialize::response_to;
pub use syntax::unescape;
pub use typed::{CSeq, Contacts, HeaderError, MediaType, NameAddr, Transport, Via};
pub use uri::{Host, SipUri, TelUri, Uri, UriError};
pub use validate::{validate_request, validate_request_with, Rejection, ValidationPolicy};

pub use auth::{DigestAlgorithm, DigestCredentials};
pub use dialog::{Dialog, DialogError, DialogId, DialogState};
pub use transaction::{Timers, TxAction};
pub use uas::{
    ConnId, EndReason, Received, SipCallId, TransportKind, Trunk, Uas, UasConfig, UasEvent, UasOutput, UasStats,
};
