//! Protocol cores: pure, sans-IO state and codecs for the wire protocols the
//! node speaks: SIP messages ([`sip`]), SDP offer/answer for an audio-only
//! UAS ([`sdp`]), and the media plane of one call leg ([`rtp`]: RTP/RTCP,
//! adaptive jitter buffer, RFC 4733 DTMF events, the per-leg `RtpSession`
//! with latching and pacing). Transactions and dialogs come next.
//!
//! Rules for everything under `proto/` (the layer rules of `ARCHITECTURE.md`
//! and of the design notes' "Layers" table):
//!
//! - No IO: functions take bytes in and hand bytes or values out; sockets,
//!   files and connections belong to `runtime/`.
//! - No async runtime, no threads, nothing spawned: a driver task in
//!   `runtime/` owns each protocol state machine and feeds it.
//! - No clocks and no randomness: time enters as a `now: Instant` argument,
//!   randomness as an injected seed, so every behaviour is reproducible in a
//!   test that drives a virtual clock.
//! - Hostile input is the norm (carriers, scanners): nothing here panics on
//!   any byte sequence, every limit is explicit, and each module reports
//!   failure through one `thiserror` enum.

pub mod openai;
pub mod rtp;
pub mod sdp;
pub mod sip;
pub mod webrtc_audio;
pub mod whip;
pub mod widget;
