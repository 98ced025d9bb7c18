//! Outcomes: the billable facts of each call, and the path that gets them
//! off the node without loss or double counting.
//!
//! - [`event`]: the outcome records (turn, call, satisfaction) in their
//!   CloudEvents 1.0 JSON envelope, with deterministic ids and versioned
//!   types. These are the only wire-serialized domain types of the crate;
//!   `docs/OUTCOMES.md` is their schema.
//! - [`spool`]: the durable, checksummed, segmented on-disk log the events
//!   wait in until the shipper has delivered and acknowledged them.
//!
//! Rules: nothing here back-pressures the media path (a full spool drops the
//! newest record and counts it), nothing reads a clock (time is an
//! argument), nothing here knows about tokio (the shipper will read the
//! spool through [`spool::Spool::read_from`] and [`spool::Spool::ack`]).

pub mod event;
pub mod recorder;
pub mod spool;

pub use event::{
    CallRecord, Channel, Cost, Difficulty, Escalations, EventError, EventKind, FlowRef, IntentDecision, LatencySummary,
    OutcomeData, OutcomeEvent, ReplyAction, Resolution, RouterDecision, SatisfactionRecord, SurveyMethod,
    TaskEventRecord, Timestamp, TurnLatency, TurnRecord, SCHEMA_VERSION,
};
pub use spool::{
    AppendOutcome, CorruptReason, CorruptRecord, DropReason, FsyncPolicy, RecoveryReport, Spool, SpoolConfig,
    SpoolError, SpoolStats, WhenFull,
};
