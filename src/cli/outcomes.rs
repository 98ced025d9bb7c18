//! `voice-edge outcomes list|show|tail`: look at the outcome events in a
//! node's spool directory without disturbing the node.
//!
//! The spool is opened with [`Spool::open_read_only`]: nothing is created,
//! truncated, deleted or acknowledged, so these commands are safe against a
//! running node. They show every record still on disk, shipped (acked) or
//! not: a segment leaves the disk once every record in it is acked, so on a
//! healthy node the spool holds little, and what has been shipped is in the
//! collector's stream.
//!
//! - `list [--limit N]`: one line per event, oldest first:
//!   `seq  time  type  subject  id`.
//! - `show ID|SEQ`: the event, pretty-printed JSON (all digits means a seq).
//! - `tail [-n N] [--follow]`: the last N events as `list` prints them;
//!   with `--follow`, keeps polling and prints new durable events as they
//!   appear, and a `#` line for records that were shipped and removed
//!   between two polls.
//!
//! A record that is not valid JSON is listed as `seq - (not an outcome
//! event: ...)`. A closed output (`| head`) ends a command quietly.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::outcome::{OutcomeEvent, Spool, SpoolError};

/// Records read from the spool at a time.
const CHUNK: usize = 512;

/// `voice-edge outcomes tail` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailOptions {
    /// How many of the newest events to print first.
    pub last: usize,
    /// Keep printing new durable events until stopped.
    pub follow: bool,
    /// How often `follow` looks at the spool directory.
    pub poll: Duration,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions { last: 10, follow: false, poll: Duration::from_millis(500) }
    }
}

/// `outcomes list`: one line per event still in the spool, oldest first,
/// at most `limit`.
pub fn list(spool_dir: &Path, limit: Option<usize>, out: &mut dyn Write) -> Result<()> {
    let mut view = open(spool_dir)?;
    let mut left = limit.unwrap_or(usize::MAX);
    quiet_pipe(for_each(&mut view, 1, |seq, payload| {
        if left == 0 {
            return Ok(false);
        }
        left -= 1;
        writeln!(out, "{}", summary(seq, payload))?;
        Ok(true)
    }))
}

/// `outcomes show ID|SEQ`: the event (every record with that id, should a
/// fact have been recorded twice) as pretty-printed JSON. All digits is a
/// seq, anything else an event id.
pub fn show(spool_dir: &Path, id_or_seq: &str, out: &mut dyn Write) -> Result<()> {
    let mut view = open(spool_dir)?;
    let seq = id_or_seq.bytes().all(|c| c.is_ascii_digit()).then(|| id_or_seq.parse::<u64>().ok()).flatten();
    let mut found = 0usize;
    let from = seq.unwrap_or(1);
    let walk = for_each(&mut view, from, |s, payload| {
        if let Some(want) = seq {
            if s == want {
                found += 1;
                writeln!(out, "{}", pretty(payload))?;
            }
            return Ok(false);
        }
        if crate::outcome::event::peek_id(payload).is_ok_and(|id| id == id_or_seq) {
            found += 1;
            writeln!(out, "{}", pretty(payload))?;
        }
        Ok(true)
    });
    quiet_pipe(walk)?;
    if found == 0 {
        let what = if seq.is_some() { "seq" } else { "id" };
        bail!(
            "no event with {what} {id_or_seq} in {} (shipped events leave the spool once their segment is fully acked)",
            spool_dir.display()
        );
    }
    Ok(())
}

/// `outcomes tail`: the last `opts.last` events, then with `opts.follow`
/// the new durable ones as they appear, until `stop` is set (the command
/// line never sets it; Ctrl-C ends the process).
pub fn tail(spool_dir: &Path, opts: &TailOptions, out: &mut dyn Write, stop: &AtomicBool) -> Result<()> {
    quiet_pipe(tail_inner(spool_dir, opts, out, stop))
}

fn tail_inner(spool_dir: &Path, opts: &TailOptions, out: &mut dyn Write, stop: &AtomicBool) -> Result<()> {
    let mut view = open(spool_dir)?;
    let mut last: VecDeque<(u64, String)> = VecDeque::with_capacity(opts.last.min(CHUNK));
    for_each(&mut view, 1, |seq, payload| {
        if opts.last > 0 {
            if last.len() == opts.last {
                last.pop_front();
            }
            last.push_back((seq, summary(seq, payload)));
        }
        Ok(true)
    })?;
    for (_, line) in &last {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    if !opts.follow {
        return Ok(());
    }
    let mut next = view.durable_seq() + 1;
    drop(view);
    let mut seen = fingerprint(spool_dir);
    while !stop.load(Ordering::Relaxed) {
        sleep_unless_stopped(opts.poll, stop);
        let now = fingerprint(spool_dir);
        if now == seen {
            continue;
        }
        seen = now;
        let mut view = match Spool::open_read_only(spool_dir) {
            Ok((v, _)) => v,
            // The node removed a segment while we looked: look again next poll.
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(e).with_context(|| format!("reading outcome spool {}", spool_dir.display())),
        };
        let mut expect = next;
        let walk = for_each(&mut view, next, |seq, payload| {
            if seq > expect {
                gap(out, expect, seq - 1)?;
            }
            writeln!(out, "{}", summary(seq, payload))?;
            expect = seq + 1;
            Ok(true)
        });
        match walk {
            Ok(()) => {}
            Err(e) if e.downcast_ref::<SpoolError>().is_some_and(is_not_found) => {}
            Err(e) => return Err(e),
        }
        // Everything up to the view's durable seq has been printed or is gone.
        let durable = view.durable_seq();
        if durable >= expect {
            gap(out, expect, durable)?;
            expect = durable + 1;
        }
        next = next.max(expect);
        out.flush()?;
    }
    Ok(())
}

fn gap(out: &mut dyn Write, from: u64, to: u64) -> io::Result<()> {
    let n = to - from + 1;
    let range = if n == 1 { format!("seq {from}") } else { format!("seqs {from}..={to}") };
    writeln!(out, "# {n} record(s) not shown ({range}): shipped and removed before this poll, or skipped as corrupt")
}

fn open(spool_dir: &Path) -> Result<Spool> {
    let (view, _report) = Spool::open_read_only(spool_dir)
        .with_context(|| format!("opening outcome spool {} read-only", spool_dir.display()))?;
    Ok(view)
}

/// Calls `f` on every record from seq `from`, in order, until it returns false.
fn for_each(view: &mut Spool, from: u64, mut f: impl FnMut(u64, &[u8]) -> Result<bool>) -> Result<()> {
    let mut from = from;
    loop {
        let chunk = view.read_from(from, CHUNK)?;
        let Some(&(last, _)) = chunk.last() else { return Ok(()) };
        for (seq, payload) in &chunk {
            if !f(*seq, payload)? {
                return Ok(());
            }
        }
        from = last + 1;
    }
}

/// `seq  time  type  subject  id`, read leniently (an event that fails
/// validation is still listed).
fn summary(seq: u64, payload: &[u8]) -> String {
    let value: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => return format!("{seq:>8}  -  (not an outcome event: {e})"),
    };
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or("-").to_owned();
    format!("{seq:>8}  {:<24}  {:<34}  {}  {}", field("time"), field("type"), field("subject"), field("id"))
}

/// The event as pretty JSON in its wire order; a record that is not a
/// valid event is shown as parsed JSON, or as text.
fn pretty(payload: &[u8]) -> String {
    if let Ok(event) = OutcomeEvent::from_json(payload) {
        if let Ok(s) = serde_json::to_string_pretty(&event) {
            return s;
        }
    }
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string()),
        Err(_) => String::from_utf8_lossy(payload).into_owned(),
    }
}

/// Segment names and sizes and the ack file's size: changes when the node
/// appends, rolls, acks or deletes.
fn fingerprint(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| Some((e.file_name().into_string().ok()?, e.metadata().ok()?.len())))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let end = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

fn is_not_found(e: &SpoolError) -> bool {
    matches!(e, SpoolError::Io { error, .. } if error.kind() == io::ErrorKind::NotFound)
}

/// A closed pipe (`outcomes list | head`) is a normal end.
fn quiet_pipe(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe) => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant, UNIX_EPOCH};

    use super::*;
    use crate::outcome::{
        AppendOutcome, CallRecord, Channel, Cost, Difficulty, Escalations, FlowRef, FsyncPolicy, LatencySummary,
        Resolution, SpoolConfig, Timestamp,
    };

    fn call_event(i: u64) -> OutcomeEvent {
        let ts = |s: u64| Timestamp::from_system_time(UNIX_EPOCH + Duration::from_secs(1_774_000_000 + s));
        OutcomeEvent::call(
            "edge-test-1",
            CallRecord {
                schema_version: 1,
                call_id: format!("call-{i:04}"),
                channel: Channel::Sip,
                trunk_or_site: "trunk-eu-1".into(),
                number: "+442071838750".into(),
                caller: None,
                started: ts(i * 60),
                ended: ts(i * 60 + 41),
                duration_ms: 41_000,
                turns: 0,
                intents: vec![],
                tasks_attempted: vec![],
                tasks_completed: vec![],
                resolution: Resolution::Abandoned,
                resolution_time_ms: None,
                escalations: Escalations::default(),
                difficulty: Difficulty::default(),
                latency: LatencySummary::default(),
                cost: Cost::default(),
                flow: FlowRef { name: "retail".into(), version: 3 },
            },
        )
        .unwrap()
    }

    fn spool_with(dir: &Path, n: u64) -> Spool {
        let cfg = SpoolConfig { fsync: FsyncPolicy::Never, max_segment_bytes: 4096, ..SpoolConfig::new(dir) };
        let (mut s, _) = Spool::open(cfg).unwrap();
        for i in 1..=n {
            assert!(matches!(
                s.append(&call_event(i).to_json().unwrap(), Instant::now()).unwrap(),
                AppendOutcome::Stored { .. }
            ));
        }
        s
    }

    fn tempdir() -> tempfile::TempDir {
        // tmpfs when there is one: acks fsync, and the follow test wants them quick.
        tempfile::TempDir::new_in("/dev/shm").or_else(|_| tempfile::TempDir::new()).unwrap()
    }

    fn run(f: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> String {
        let mut out = Vec::new();
        f(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn list_show_and_tail_read_a_live_spool() {
        let tmp = tempdir();
        let mut s = spool_with(tmp.path(), 12);
        s.append(b"garbage", Instant::now()).unwrap();
        s.ack(2).unwrap();

        let all = run(|o| list(tmp.path(), None, o));
        let lines: Vec<&str> = all.lines().collect();
        assert_eq!(lines.len(), 13, "{all}");
        assert!(lines[0].starts_with("       1  2026-03-20T09:48:21.000Z"), "{}", lines[0]);
        assert!(
            lines[0].contains("voice_edge.outcome.call.v1")
                && lines[0].ends_with("call-0001  edge-test-1:call-0001:call")
        );
        assert!(lines[12].starts_with("      13  -  (not an outcome event"), "{}", lines[12]);
        assert_eq!(run(|o| list(tmp.path(), Some(3), o)).lines().count(), 3);

        let by_id = run(|o| show(tmp.path(), "edge-test-1:call-0005:call", o));
        assert_eq!(OutcomeEvent::from_json(by_id.as_bytes()).unwrap(), call_event(5));
        assert!(by_id.starts_with("{\n  \"specversion\": \"1.0\",\n  \"id\""), "{by_id}");
        assert_eq!(run(|o| show(tmp.path(), "5", o)), by_id);
        let missing = show(tmp.path(), "edge-test-1:nope:call", &mut Vec::new()).unwrap_err();
        assert!(missing.to_string().contains("no event with id"), "{missing}");
        assert!(show(tmp.path(), "99", &mut Vec::new()).is_err());

        let t = run(|o| tail(tmp.path(), &TailOptions { last: 2, ..Default::default() }, o, &AtomicBool::new(false)));
        let t: Vec<&str> = t.lines().collect();
        assert_eq!(t.len(), 2);
        assert!(t[0].contains("call-0012") && t[1].starts_with("      13"), "{t:?}");
    }

    #[test]
    fn tail_follow_prints_new_durable_events_and_reports_what_it_missed() {
        let tmp = tempdir();
        let dir = tmp.path().to_owned();
        let spool = Arc::new(std::sync::Mutex::new(spool_with(&dir, 3)));
        let stop = Arc::new(AtomicBool::new(false));
        let out = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().write(b)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let follower = {
            let (dir, stop, out) = (dir.clone(), Arc::clone(&stop), Arc::clone(&out));
            std::thread::spawn(move || {
                let opts = TailOptions { last: 1, follow: true, poll: Duration::from_millis(300) };
                tail(&dir, &opts, &mut Shared(out), &stop)
            })
        };
        let text = || String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let wait_for = |needle: &str| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !text().contains(needle) {
                assert!(Instant::now() < deadline, "timed out waiting for {needle:?} in:\n{}", text());
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait_for("call-0003");
        {
            let mut s = spool.lock().unwrap();
            s.append(&call_event(4).to_json().unwrap(), Instant::now()).unwrap();
        }
        wait_for("call-0004");
        {
            // Shipped and removed between two polls: 5..=70 fill whole
            // segments that the ack deletes at once.
            let mut s = spool.lock().unwrap();
            for i in 5..=70 {
                s.append(&call_event(i).to_json().unwrap(), Instant::now()).unwrap();
            }
            s.ack(70).unwrap();
            s.append(&call_event(71).to_json().unwrap(), Instant::now()).unwrap();
        }
        wait_for("call-0071");
        stop.store(true, Ordering::Relaxed);
        follower.join().unwrap().unwrap();
        // Every seq from 3 on is accounted for once, in order: printed, or
        // in a "not shown" line.
        let t = text();
        let mut covered = Vec::new();
        for line in t.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let range = rest.split(" (").nth(1).unwrap().split(')').next().unwrap();
                let (a, b) = match range.strip_prefix("seqs ") {
                    Some(r) => r.split_once("..=").map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap())).unwrap(),
                    None => {
                        let a: u64 = range.strip_prefix("seq ").unwrap().parse().unwrap();
                        (a, a)
                    }
                };
                covered.extend(a..=b);
            } else {
                covered.push(line.split_whitespace().next().unwrap().parse::<u64>().unwrap());
            }
        }
        assert_eq!(covered, (3..=71).collect::<Vec<u64>>(), "{t}");
        // The burst was appended, acked and deleted within one poll interval.
        assert!(t.contains("# 66 record(s) not shown (seqs 5..=70)"), "{t}");
    }

    #[test]
    fn a_closed_pipe_ends_quietly_and_a_missing_spool_is_an_error() {
        let tmp = tempdir();
        let _s = spool_with(tmp.path(), 5);
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        list(tmp.path(), None, &mut Closed).unwrap();
        tail(tmp.path(), &TailOptions::default(), &mut Closed, &AtomicBool::new(false)).unwrap();
        let err = list(&tmp.path().join("absent"), None, &mut Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("read-only"), "{err:#}");
    }
}
