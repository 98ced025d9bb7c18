//! RTP media plane for one call leg (RFC 3550, RFC 3551, RFC 4733), sans-IO.
//!
//! | module | owns |
//! |---|---|
//! | [`packet`] | RTP header parse/serialize with strict bounds (RFC 3550 §5.1, §5.3.1), RTP/RTCP demux (RFC 5761 §4) |
//! | [`rtcp`] | SR/RR/SDES/BYE compounds (§6.4-§6.6), receiver statistics (Appendix A.1, A.3, A.8), LSR/DLSR and RTT |
//! | [`jitter`] | adaptive jitter buffer keyed by extended sequence number: reorder, loss -> concealment, late/duplicate drops, resync |
//! | [`dtmf`] | RFC 4733 telephone-events: payload, one report per event, sending with marker/updates/3 end packets |
//! | [`session`] | [`RtpSession`]: one leg's RTP/RTCP state machine: latching, pacing, talkspurt markers, RTCP timer (§6.3), inactivity, hold |
//!
//! Like everything in `proto`, these take time as a `now: Instant`
//! argument, take randomness (SSRC, initial sequence number and timestamp,
//! RTCP interval jitter) from an injected seed, and never panic on hostile
//! bytes: every parser returns its module's `thiserror` enum.

pub mod dtmf;
pub mod jitter;
pub mod packet;
pub mod rtcp;
pub mod session;

pub use dtmf::{DtmfDigit, DtmfError, DtmfReceiver, DtmfSender, TelephoneEvent};
pub use jitter::{JitterBuffer, JitterConfig, JitterStats, Playout, PushOutcome};
pub use packet::{is_rtcp, HeaderExtension, RtpError, RtpPacket};
pub use rtcp::{parse_compound, ReceiverStats, ReportBlock, RtcpError, RtcpPacket};
pub use session::{Frame16k, FrameSource, RtpEvent, RtpOutput, RtpSession, RtpSessionConfig, RtpStats, SessionError};
