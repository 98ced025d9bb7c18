//! Where the daemon's calls leave their outcome events: the durable spool,
//! written off the async runtime, with the shipper woken after each commit.
//!
//! A call's events are appended and committed (fsynced) together when the
//! call ends, so a node killed afterwards still has them; a record the spool
//! refuses (full, disk failing) is counted and logged, and the call is not
//! held up by it. The spool's own policy decides durability; `commit` here
//! closes the window for a finished call.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use crate::outcome::{AppendOutcome, OutcomeEvent, Spool, SpoolError};

/// How a batch of events fared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    pub stored: usize,
    pub dropped: usize,
}

#[derive(Clone)]
pub struct OutcomeSink {
    spool: Arc<Mutex<Spool>>,
    shipper: Option<Arc<Notify>>,
}

impl OutcomeSink {
    pub fn new(spool: Arc<Mutex<Spool>>, shipper: Option<Arc<Notify>>) -> OutcomeSink {
        OutcomeSink { spool, shipper }
    }

    pub fn spool(&self) -> &Arc<Mutex<Spool>> {
        &self.spool
    }

    /// Appends and commits `events` on a blocking thread.
    pub async fn record(&self, events: Vec<OutcomeEvent>) -> Result<Recorded, SpoolError> {
        let spool = self.spool.clone();
        let result = tokio::task::spawn_blocking(move || record_blocking(&spool, &events))
            .await
            .unwrap_or_else(|e| Err(SpoolError::Config(format!("spool writer panicked: {e}"))));
        if let Some(n) = &self.shipper {
            n.notify_one();
        }
        result
    }

    /// Commits whatever is pending (shutdown).
    pub async fn commit(&self) -> Result<u64, SpoolError> {
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || lock(&spool).commit(Instant::now()))
            .await
            .unwrap_or_else(|e| Err(SpoolError::Config(format!("spool writer panicked: {e}"))))
    }

    /// Applies the spool's fsync policy (call on a timer).
    pub async fn flush(&self) -> Result<u64, SpoolError> {
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || lock(&spool).flush(Instant::now()))
            .await
            .unwrap_or_else(|e| Err(SpoolError::Config(format!("spool writer panicked: {e}"))))
    }
}

fn lock(spool: &Mutex<Spool>) -> std::sync::MutexGuard<'_, Spool> {
    spool.lock().unwrap_or_else(|e| e.into_inner())
}

fn record_blocking(spool: &Mutex<Spool>, events: &[OutcomeEvent]) -> Result<Recorded, SpoolError> {
    let mut spool = lock(spool);
    let now = Instant::now();
    let mut recorded = Recorded::default();
    for event in events {
        let json = match event.to_json() {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(event_id = %event.id(), error = %e, "outcome event not serialisable; dropped");
                recorded.dropped += 1;
                continue;
            }
        };
        match spool.append(&json, now)? {
            AppendOutcome::Stored { .. } => recorded.stored += 1,
            AppendOutcome::Dropped { reason } => {
                tracing::error!(event_id = %event.id(), %reason, "outcome event dropped by the spool");
                recorded.dropped += 1;
            }
        }
    }
    spool.commit(now)?;
    Ok(recorded)
}
