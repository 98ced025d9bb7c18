//! The durable outcome spool: an append-only, segmented, checksummed log on
//! local disk that holds serialized outcome events from the moment they are
//! recorded until the shipper has delivered them and acknowledged them.
//! Outcome events are billed, so the spool's job is that a record it has
//! called durable is neither lost (crash, power cut, torn write, a corrupt
//! neighbour) nor handed out again once acknowledged; and that, whatever
//! happens to the disk, the call in progress never waits for it.
//!
//! # Directory
//!
//! ```text
//! <dir>/00000000000000000001.seg    segments, named by the seq of their first record
//! <dir>/00000000000000004097.seg    (20 digits, zero-padded, so names sort by seq)
//! <dir>/ack                         the acknowledged seq (replaced atomically)
//! <dir>/ack.tmp                     transient while `ack` is replaced; removed at open
//! ```
//!
//! Other files in the directory are ignored (and logged once at open).
//!
//! # On-disk format (version 1, all integers little-endian)
//!
//! A segment is a 16-byte header followed by frames, back to back:
//!
//! ```text
//! header:  magic "VEOS" [4] | format version u32 = 1 | first_seq u64 (= the file name)
//! frame:   len u32 | crc u32 | seq u64 | payload [len]
//! ack:     magic "VEAK" [4] | format version u32 = 1 | acked_seq u64 | crc u32 (of the first 16 bytes)
//! ```
//!
//! `crc` is CRC-32 (IEEE 802.3, as computed by `crc32fast`) over `len`,
//! `seq` and the payload: every byte of the frame except the CRC itself, so
//! a damaged length or seq is caught as surely as a damaged payload. A
//! frame is valid when its bytes are all present, its CRC matches and its
//! seq is above the previous valid record's. Payloads are opaque bytes (the
//! outcome module stores CloudEvents JSON); a payload may be empty and is
//! at most `max_segment_bytes - 32` bytes (header plus frame header), so a
//! record always fits in a segment of its own.
//!
//! # Invariants
//!
//! 1. **Seqs strictly increase**, across segments and across restarts,
//!    starting at 1. At open the next seq is one more than the highest of:
//!    any valid record, the acknowledged seq, and the last segment's name.
//!    So a record never takes a seq that the ack file already covers, even
//!    if every segment was deleted. Seqs may have gaps (records lost to
//!    corruption); a dropped append takes no seq.
//! 2. **Only the last segment is written.** A segment is sealed (its
//!    records made durable) before the next one is created, so an earlier
//!    segment never holds a torn write; damage there is corruption, and is
//!    reported as such.
//! 3. **Durable means on disk under the policy.** `durable_seq` is the
//!    highest seq whose bytes, and all before them, have been written and
//!    fsynced (under [`FsyncPolicy::Never`]: written to the kernel). Readers
//!    see only records up to `durable_seq`; the shipper therefore never
//!    sends a record that a power cut could still take back.
//! 4. **The ack never passes `durable_seq`**, and never moves back.
//! 5. **Acknowledged records are never read again.** Reads start above the
//!    ack; a segment is deleted once every seq it can hold is acknowledged
//!    (the ack file is durable before the deletion starts).
//!
//! # Writing: group commit
//!
//! [`Spool::append`] frames the payload into an in-memory buffer and
//! returns its seq at once. The buffer is written with one `write` and
//! made durable with one `fdatasync` when the [`FsyncPolicy`] says so
//! (checked at every `append` and [`Spool::flush`]), when a segment is
//! sealed, when the buffer reaches `max_pending_bytes`, or when
//! [`Spool::commit`] forces it. A new segment's directory entry is fsynced
//! with its first commit. The buffer is released only after the fsync
//! succeeds: a failed write or fsync truncates the file back to the last
//! durable byte and the same bytes are written again next time, so the
//! spool never trusts pages that a failed fsync may have dropped.
//!
//! A record that was stored but not yet durable is lost if the process
//! dies; that window is what the policy trades for throughput (see the
//! benchmark in `benches/spool_throughput.rs`). Dropping the [`Spool`]
//! commits.
//!
//! # Never back-pressure: when full
//!
//! `append` never blocks and never fails because of the disk. The bytes
//! held (segment files plus the not-yet-durable buffer) are capped at
//! `max_total_bytes`; when a record does not fit, the policy is
//! [`WhenFull::DropNewest`]: the new record is refused, returned as
//! [`AppendOutcome::Dropped`], counted in [`SpoolStats::dropped`] and
//! logged (once per run of drops). An I/O failure (`ENOSPC`, `EIO`) while
//! records are pending keeps them pending and retries; only when it leaves
//! no room (a segment cannot be sealed or created, or the pending buffer is
//! at its bound) is the new record dropped the same way. A full spool means
//! the shipper is stalled: alert on `dropped`, not on latency.
//!
//! There is deliberately no "drop oldest": the oldest records are durable,
//! possibly already reported upstream as pending delivery, and destroying
//! them would break invariant 3 for facts that were promised; a drop at the
//! moment of append is visible to the one caller who can still count it.
//! There is no "block" either: the media path must not wait on a disk.
//!
//! # Recovery ([`Spool::open`])
//!
//! Every segment is read and every frame validated:
//!
//! - **Torn tail.** In the last segment, bytes from the first frame after
//!   which no valid frame follows (a partial frame, zero fill, a bad CRC at
//!   the very end) are what a crash mid-write leaves. They are truncated
//!   and counted in [`RecoveryReport::torn_tail_bytes`]; nothing there was
//!   ever durable. A last segment without a single valid record (created
//!   just before the crash, its header possibly torn) is removed.
//! - **Corruption in the middle.** A bad frame followed by a valid one
//!   (found at the bad frame's stated length, or by scanning forward byte
//!   by byte for a frame with a valid CRC and a plausible seq) is skipped
//!   and reported in [`RecoveryReport::corrupt_records`] with its segment,
//!   offset, reason and size; the records after it are delivered as usual.
//!   An unreadable end of an earlier segment, or a damaged segment header,
//!   is reported the same way. Nothing is silently dropped and no corrupt
//!   input panics.
//! - A segment or ack file of a newer format version is an error: the spool
//!   refuses to open rather than misread or delete what it does not know.
//! - A corrupt ack file is reported and read as "nothing acknowledged":
//!   records may then be delivered twice, which the collector deduplicates
//!   by event id, rather than lost.
//!
//! Records found corrupt later, while reading, are skipped, counted in
//! [`SpoolStats::corrupt_skipped`] and logged the same way.
//!
//! # Reading and acknowledgement
//!
//! The shipper calls [`Spool::read_from`]`(acked + 1, n)` for the next
//! durable records, delivers them, then [`Spool::ack`]`(last)`. The ack is
//! persisted before `ack` returns: `ack.tmp` is written and fsynced,
//! renamed over `ack`, and the directory fsynced. Segments whose every seq
//! is at or below the ack are then deleted and stop counting toward the
//! cap. After a restart, reading resumes at ack + 1: delivery is
//! at-least-once (a crash between delivery and ack repeats a batch, which
//! the event ids deduplicate) and never skips a durable record.
//!
//! # Read-only views ([`Spool::open_read_only`])
//!
//! Tools (the `voice-edge outcomes` command) open the directory of a
//! running node read-only: the same validation as [`Spool::open`], but
//! nothing is created, truncated, deleted or fsynced, a torn tail (perhaps
//! a write in progress) is only left unread, and a segment the node deletes
//! meanwhile is skipped. Such a view reads every record still on disk,
//! acknowledged or not, as of its opening; `append`, `ack`, `commit` and
//! `flush` refuse with [`SpoolError::ReadOnly`]. To see newer records, open
//! it again.
//!
//! The spool is a single-owner, blocking-I/O object. It belongs on the
//! outcome thread (or behind a mutex shared with the shipper), never on a
//! media or async-runtime thread; time enters only as the `now` arguments.

mod format;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use format::{AckCheck, FrameFault, HeaderCheck, ScanItem, Scanner, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};

const ACK_FILE: &str = "ack";
const ACK_TMP_FILE: &str = "ack.tmp";
const SEGMENT_EXT: &str = "seg";
/// Reads fetch at least this much of a segment at a time.
const READ_CHUNK: u64 = 256 * 1024;

/// When appended records are written and fsynced (besides
/// [`Spool::commit`], segment rollover and the pending-bytes bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every append is written and fsynced before `append` returns.
    Always,
    /// Written and fsynced once this many records are pending (no time
    /// bound: commit at call end or shutdown to close the window).
    EveryN(u32),
    /// Written and fsynced once the oldest pending record is this old, as
    /// measured by the `now` passed to `append` and `flush`; call `flush`
    /// on a timer so a quiet spool still commits.
    Interval(Duration),
    /// Written to the kernel on every append, never fsynced (survives the
    /// process dying, not the machine: after a power cut, recovery may find
    /// damage in any segment). For tests and throwaway nodes.
    Never,
}

/// What `append` does when the spool is at `max_total_bytes`. See the
/// module doc for why dropping the oldest, or blocking, is not offered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WhenFull {
    /// Refuse the new record and count it; stored records stay.
    #[default]
    DropNewest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// A segment is sealed and a new one begun when the next record would
    /// pass this size. Also bounds a record: payload <= this - 32 bytes.
    pub max_segment_bytes: u64,
    /// Cap on segment files plus pending bytes; see [`WhenFull`].
    pub max_total_bytes: u64,
    /// Bound on bytes stored but not yet durable; reaching it forces a
    /// commit (and, if the disk is failing, drops new records).
    pub max_pending_bytes: u64,
    pub fsync: FsyncPolicy,
    pub when_full: WhenFull,
}

impl SpoolConfig {
    /// Defaults: 8 MiB segments, 1 GiB cap, 8 MiB pending bound, fsync
    /// every 20 ms, drop newest when full.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SpoolConfig {
            dir: dir.into(),
            max_segment_bytes: 8 << 20,
            max_total_bytes: 1 << 30,
            max_pending_bytes: 8 << 20,
            fsync: FsyncPolicy::Interval(Duration::from_millis(20)),
            when_full: WhenFull::DropNewest,
        }
    }

    /// The largest payload a record may carry.
    pub fn max_payload_bytes(&self) -> u64 {
        self.max_segment_bytes.saturating_sub(SEGMENT_HEADER_LEN + FRAME_HEADER_LEN).min(u64::from(u32::MAX))
    }

    fn validate(&self) -> Result<(), SpoolError> {
        let min_segment = SEGMENT_HEADER_LEN + FRAME_HEADER_LEN + 1;
        if self.max_segment_bytes < min_segment {
            return Err(SpoolError::Config(format!("max_segment_bytes must be at least {min_segment}")));
        }
        if self.max_total_bytes < self.max_segment_bytes {
            return Err(SpoolError::Config("max_total_bytes must be at least max_segment_bytes".into()));
        }
        if self.max_pending_bytes == 0 {
            return Err(SpoolError::Config("max_pending_bytes must be above 0".into()));
        }
        if self.fsync == FsyncPolicy::EveryN(0) {
            return Err(SpoolError::Config("fsync EveryN(n) needs n >= 1".into()));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("invalid spool config: {0}")]
    Config(String),
    // The io error is part of the message (logs print only the top error),
    // so it is not also a `source` (error chains would print it twice).
    #[error("spool {op} {}: {error}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("{} has spool format version {version}; this build reads version 1", path.display())]
    UnsupportedFormat { path: PathBuf, version: u32 },
    #[error("record of {len} bytes is larger than the {max}-byte limit (max_segment_bytes - 32)")]
    RecordTooLarge { len: usize, max: u64 },
    #[error("cannot ack seq {seq}: only records up to {durable} are durable")]
    AckBeyondDurable { seq: u64, durable: u64 },
    #[error("spool {} is open read-only", dir.display())]
    ReadOnly { dir: PathBuf },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |error| SpoolError::Io { op, path: path.to_owned(), error }
}

/// Result of [`Spool::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Accepted under this seq; durable once [`Spool::durable_seq`] reaches it.
    Stored { seq: u64 },
    /// Refused and counted in [`SpoolStats::dropped`].
    Dropped { reason: DropReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The record would take the spool past `max_total_bytes`.
    Full { held_bytes: u64, cap: u64 },
    /// The disk failed and the record could not be kept pending.
    Io { kind: io::ErrorKind },
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::Full { held_bytes, cap } => write!(f, "spool full ({held_bytes} of {cap} bytes held)"),
            DropReason::Io { kind } => write!(f, "disk error ({kind})"),
        }
    }
}

/// Why bytes of a spool file were skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorruptReason {
    /// The frame's length runs past the end of the segment (and a valid
    /// frame follows, or this is an earlier segment).
    Truncated,
    ChecksumMismatch,
    SequenceOutOfOrder {
        seq: u64,
        previous: u64,
    },
    /// Segment shorter than its 16-byte header.
    HeaderTruncated,
    /// Segment header zeroed, without the magic, or with version 0; the
    /// frames after it are still read.
    HeaderDamaged,
    HeaderSeqMismatch {
        header_seq: u64,
    },
    /// The ack file is damaged; read as "nothing acknowledged".
    AckFile,
}

impl From<FrameFault> for CorruptReason {
    fn from(f: FrameFault) -> Self {
        match f {
            FrameFault::Truncated => CorruptReason::Truncated,
            FrameFault::ChecksumMismatch => CorruptReason::ChecksumMismatch,
            FrameFault::SequenceOutOfOrder { seq, previous } => CorruptReason::SequenceOutOfOrder { seq, previous },
        }
    }
}

impl fmt::Display for CorruptReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptReason::Truncated => f.write_str("frame runs past the end of the segment"),
            CorruptReason::ChecksumMismatch => f.write_str("checksum mismatch"),
            CorruptReason::SequenceOutOfOrder { seq, previous } => {
                write!(f, "seq {seq} does not follow {previous}")
            }
            CorruptReason::HeaderTruncated => f.write_str("segment header truncated"),
            CorruptReason::HeaderDamaged => f.write_str("segment header damaged"),
            CorruptReason::HeaderSeqMismatch { header_seq } => {
                write!(f, "segment header says first seq {header_seq}, unlike its name")
            }
            CorruptReason::AckFile => f.write_str("ack file damaged"),
        }
    }
}

/// Bytes skipped as corrupt: where, why and how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord {
    pub segment: PathBuf,
    pub offset: u64,
    pub reason: CorruptReason,
    pub skipped_bytes: u64,
}

/// What [`Spool::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Valid records on disk, acknowledged or not.
    pub records: u64,
    /// Valid records above the ack: what the shipper will read.
    pub unacked_records: u64,
    /// Segments kept.
    pub segments: usize,
    /// Bytes truncated from the end of the last segment (a crash mid-write).
    pub torn_tail_bytes: u64,
    /// Corrupt ranges skipped and still on disk; never silently dropped.
    pub corrupt_records: Vec<CorruptRecord>,
    /// Segments deleted because the ack already covered them.
    pub deleted_segments: usize,
    pub acked_seq: u64,
    pub next_seq: u64,
}

/// Counters and gauges for metrics. Counters start at 0 at every open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Appends stored.
    pub appended: u64,
    /// Appends dropped (full, or the disk failing).
    pub dropped: u64,
    pub durable_seq: u64,
    pub acked_seq: u64,
    /// Seqs durable and not yet acked (gaps from corruption included).
    pub backlog_records: u64,
    /// Bytes held against the cap: segment files plus pending bytes.
    pub backlog_bytes: u64,
    /// Records stored but not yet durable.
    pub pending_records: u64,
    pub segments: usize,
    /// Corrupt ranges skipped, at open and while reading.
    pub corrupt_skipped: u64,
    /// Failed writes, fsyncs and segment creations.
    pub io_errors: u64,
    /// Successful fsyncs of segment data.
    pub syncs: u64,
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    /// Durable bytes (for the active segment: up to the last commit).
    len: u64,
    /// Seq the first record must exceed.
    prev_bound: u64,
    /// Highest seq stored in it, pending records included.
    last_seq: Option<u64>,
    /// Corrupt ranges: offset → offset to resume at.
    skips: BTreeMap<u64, u64>,
}

/// The segment being appended to (always `segments.back()`).
#[derive(Debug)]
struct Writer {
    file: File,
    /// Framed bytes after the segment's durable `len`, kept until fsynced.
    pending: Vec<u8>,
    pending_records: u64,
    oldest_pending: Option<Instant>,
    /// Bytes written without fsync (only under `FsyncPolicy::Never`).
    unsynced_written: bool,
    /// The segment's directory entry is not yet fsynced.
    dir_dirty: bool,
}

/// Where the last read stopped, to resume without rescanning.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    first_seq: u64,
    offset: u64,
    prev: u64,
}

/// The durable outcome spool; see the module doc.
#[derive(Debug)]
pub struct Spool {
    cfg: SpoolConfig,
    segments: VecDeque<Segment>,
    writer: Option<Writer>,
    next_seq: u64,
    durable_seq: u64,
    acked: u64,
    cursor: Option<Cursor>,
    read_file: Option<(u64, File)>,
    stats: SpoolStats,
    failing: bool,
    drop_run: u64,
    /// Opened with [`Spool::open_read_only`].
    read_only: bool,
}

impl Spool {
    /// Opens (creating if needed) the spool in `cfg.dir`, validating every
    /// record and repairing what a crash left; see the module doc.
    pub fn open(cfg: SpoolConfig) -> Result<(Spool, RecoveryReport), SpoolError> {
        Self::open_mode(cfg, false)
    }

    /// Opens the spool in `dir` as a read-only view, for tools that look at
    /// a running node's spool: validates like [`Spool::open`] and reports
    /// what it finds, but never creates, truncates, deletes or syncs
    /// anything; see "Read-only views" in the module doc.
    pub fn open_read_only(dir: impl Into<PathBuf>) -> Result<(Spool, RecoveryReport), SpoolError> {
        Self::open_mode(SpoolConfig::new(dir), true)
    }

    fn open_mode(cfg: SpoolConfig, read_only: bool) -> Result<(Spool, RecoveryReport), SpoolError> {
        cfg.validate()?;
        let dir = cfg.dir.clone();
        if !read_only {
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        let mut report = RecoveryReport::default();
        let mut dir_changed = false;

        let tmp = dir.join(ACK_TMP_FILE);
        match if read_only { Ok(()) } else { fs::remove_file(&tmp) } {
            Ok(()) => dir_changed = !read_only,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &tmp)(e)),
        }
        let acked = read_ack(&dir.join(ACK_FILE), &mut report)?;

        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            match parse_segment_name(&name) {
                Some(seq) => names.push(seq),
                None if name == ACK_FILE || read_only && name == ACK_TMP_FILE => {}
                None => tracing::warn!(file = %name, dir = %dir.display(), "ignoring unknown file in outcome spool"),
            }
        }
        names.sort_unstable();

        let mut segments = VecDeque::new();
        let mut prev_seq = 0u64;
        let mut last_appendable = false;
        for (i, &first_seq) in names.iter().enumerate() {
            let is_last = i + 1 == names.len();
            let path = segment_path(&dir, first_seq);
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                // Acked and deleted by the node that owns the spool.
                Err(e) if read_only && e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("read", &path)(e)),
            };
            let header = format::check_segment_header(&bytes, first_seq);
            if let HeaderCheck::Version(version) = header {
                return Err(SpoolError::UnsupportedFormat { path, version });
            }
            let file_len = bytes.len() as u64;
            let mut seg = Segment {
                first_seq,
                path,
                len: file_len,
                prev_bound: prev_seq.max(first_seq.saturating_sub(1)),
                last_seq: None,
                skips: BTreeMap::new(),
            };
            let mut corrupt = Vec::new();
            let header_fault = match header {
                HeaderCheck::Ok | HeaderCheck::Version(_) => None,
                HeaderCheck::Short => Some(CorruptReason::HeaderTruncated),
                HeaderCheck::Zeroed | HeaderCheck::Damaged => Some(CorruptReason::HeaderDamaged),
                HeaderCheck::SeqMismatch(header_seq) => Some(CorruptReason::HeaderSeqMismatch { header_seq }),
            };
            if let Some(reason) = header_fault {
                corrupt.push((0, reason, file_len.min(SEGMENT_HEADER_LEN)));
            }
            let (mut found, mut found_unacked) = (0u64, 0u64);
            let mut tail = None;
            if file_len > SEGMENT_HEADER_LEN {
                for item in Scanner::new(&bytes, SEGMENT_HEADER_LEN as usize, seg.prev_bound) {
                    match item {
                        ScanItem::Record(f) => {
                            seg.last_seq = Some(f.seq);
                            found += 1;
                            found_unacked += u64::from(f.seq > acked);
                        }
                        ScanItem::Skipped { offset, resume, fault } => {
                            corrupt.push((offset as u64, fault.into(), (resume - offset) as u64));
                            seg.skips.insert(offset as u64, resume as u64);
                        }
                        ScanItem::Tail { offset, fault } => tail = Some((offset as u64, fault)),
                    }
                }
            }
            if is_last && found == 0 {
                // Created just before a crash: no record in it ever became
                // durable (its header may be torn too). A read-only view
                // leaves it alone (the owner may be writing its first record).
                report.torn_tail_bytes += file_len;
                if !read_only {
                    fs::remove_file(&seg.path).map_err(io_err("remove torn segment", &seg.path))?;
                    dir_changed = true;
                }
                continue;
            }
            match tail {
                Some((at, _)) if is_last => {
                    report.torn_tail_bytes += file_len - at;
                    if !read_only {
                        let f = OpenOptions::new().write(true).open(&seg.path).map_err(io_err("open", &seg.path))?;
                        f.set_len(at).map_err(io_err("truncate torn tail of", &seg.path))?;
                        if cfg.fsync != FsyncPolicy::Never {
                            f.sync_all().map_err(io_err("fsync", &seg.path))?;
                        }
                    }
                    seg.len = at;
                }
                Some((at, fault)) => {
                    corrupt.push((at, fault.into(), file_len - at));
                    seg.skips.insert(at, file_len);
                }
                None => {}
            }
            report.records += found;
            report.unacked_records += found_unacked;
            report.corrupt_records.extend(corrupt.into_iter().map(|(offset, reason, skipped_bytes)| CorruptRecord {
                segment: seg.path.clone(),
                offset,
                reason,
                skipped_bytes,
            }));
            prev_seq = prev_seq.max(seg.last_seq.unwrap_or(0));
            last_appendable = is_last && header_fault.is_none();
            segments.push_back(seg);
        }

        // Invariant 1: above every record, the ack, and the last segment's name.
        let mut last = prev_seq.max(acked);
        if let Some(seg) = segments.back() {
            last = last.max(seg.first_seq);
        }
        let next_seq = last + 1;
        report.corrupt_records.iter().for_each(|c| {
            tracing::error!(
                segment = %c.segment.display(), offset = c.offset, skipped_bytes = c.skipped_bytes,
                reason = %c.reason, "outcome spool: corrupt data skipped"
            );
        });
        if report.torn_tail_bytes > 0 {
            tracing::warn!(
                bytes = report.torn_tail_bytes,
                "outcome spool: torn tail from an interrupted write removed"
            );
        }

        let writer = match segments.back() {
            Some(seg) if last_appendable && !read_only => {
                let file = OpenOptions::new().write(true).open(&seg.path).map_err(io_err("open", &seg.path))?;
                Some(Writer {
                    file,
                    pending: Vec::new(),
                    pending_records: 0,
                    oldest_pending: None,
                    unsynced_written: false,
                    dir_dirty: false,
                })
            }
            _ => None,
        };
        let corrupt_skipped = report.corrupt_records.len() as u64;
        let mut spool = Spool {
            cfg,
            segments,
            writer,
            next_seq,
            durable_seq: next_seq - 1,
            acked,
            cursor: None,
            read_file: None,
            stats: SpoolStats { corrupt_skipped, ..SpoolStats::default() },
            failing: false,
            drop_run: 0,
            read_only,
        };
        let before = spool.segments.len();
        if !read_only {
            spool.delete_acked_segments();
        }
        report.deleted_segments = before - spool.segments.len();
        if (dir_changed || report.deleted_segments > 0) && spool.cfg.fsync != FsyncPolicy::Never {
            sync_dir(&dir).map_err(io_err("fsync directory", &dir))?;
        }
        report.segments = spool.segments.len();
        report.acked_seq = acked;
        report.next_seq = next_seq;
        Ok((spool, report))
    }

    /// Stores `payload` under the next seq, or drops it (never blocks, never
    /// fails for lack of space or a disk error; see the module doc). The
    /// policy may write and fsync pending records before returning.
    pub fn append(&mut self, payload: &[u8], now: Instant) -> Result<AppendOutcome, SpoolError> {
        self.check_writable()?;
        let max = self.cfg.max_payload_bytes();
        if payload.len() as u64 > max {
            return Err(SpoolError::RecordTooLarge { len: payload.len(), max });
        }
        let frame = FRAME_HEADER_LEN + payload.len() as u64;
        let roll = match (&self.writer, self.segments.back()) {
            (Some(w), Some(seg)) => seg.len + w.pending.len() as u64 + frame > self.cfg.max_segment_bytes,
            _ => true,
        };
        let need = frame + if roll { SEGMENT_HEADER_LEN } else { 0 };
        let held = self.held_bytes();
        if held + need > self.cfg.max_total_bytes {
            return Ok(self.dropped(DropReason::Full { held_bytes: held, cap: self.cfg.max_total_bytes }));
        }
        let pending = self.writer.as_ref().map_or(0, |w| w.pending.len() as u64);
        if pending > 0 && pending + frame > self.cfg.max_pending_bytes {
            if let Err(e) = self.policy_sync() {
                return Ok(self.dropped(DropReason::Io { kind: e.kind() }));
            }
        }
        if roll {
            if let Err(e) = self.roll() {
                return Ok(self.dropped(DropReason::Io { kind: e.kind() }));
            }
        }
        let (Some(w), Some(seg)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            // `roll` leaves a writer; this is unreachable, but not worth a panic.
            return Ok(self.dropped(DropReason::Io { kind: io::ErrorKind::Other }));
        };
        let seq = self.next_seq;
        format::encode_frame(&mut w.pending, seq, payload);
        w.pending_records += 1;
        w.oldest_pending.get_or_insert(now);
        seg.last_seq = Some(seq);
        self.next_seq += 1;
        self.stats.appended += 1;
        if self.drop_run > 0 {
            tracing::warn!(dropped = self.drop_run, "outcome spool accepting records again");
            self.drop_run = 0;
        }
        if self.sync_due(now) {
            let _ = self.policy_sync();
        }
        Ok(AppendOutcome::Stored { seq })
    }

    /// Applies the fsync policy at `now` (call it on a timer, e.g. every
    /// 10 ms under `Interval`) and retries a commit that failed. Returns
    /// the durable seq.
    pub fn flush(&mut self, now: Instant) -> Result<u64, SpoolError> {
        self.check_writable()?;
        if self.sync_due(now) {
            self.policy_sync().map_err(io_err("write", &self.cfg.dir))?;
        }
        Ok(self.durable_seq)
    }

    /// Writes and fsyncs every pending record, whatever the policy, and
    /// returns the durable seq (all stored records). `now` is taken for
    /// symmetry with `flush`; a commit does not depend on it.
    pub fn commit(&mut self, _now: Instant) -> Result<u64, SpoolError> {
        self.check_writable()?;
        self.sync_logged(true).map_err(io_err("commit", &self.cfg.dir))?;
        Ok(self.durable_seq)
    }

    /// Up to `max` durable records with seq >= `seq` (and above the ack,
    /// unless read-only), in seq order. Corrupt records met on the way are
    /// skipped and counted.
    pub fn read_from(&mut self, seq: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        let from = if self.read_only { seq.max(1) } else { seq.max(self.acked + 1) };
        let mut out = Vec::new();
        if max == 0 || from > self.durable_seq || self.segments.is_empty() {
            return Ok(out);
        }
        let mut idx = self.segments.partition_point(|s| s.first_seq <= from).saturating_sub(1);
        let (mut offset, mut prev) = (SEGMENT_HEADER_LEN, self.segments[idx].prev_bound);
        if let Some(c) = self.cursor {
            if c.first_seq == self.segments[idx].first_seq && c.prev < from {
                (offset, prev) = (c.offset, c.prev);
            }
        }
        while idx < self.segments.len() {
            let (end, last) = self.read_segment(idx, offset, prev, from, max, &mut out)?;
            self.cursor = Some(Cursor { first_seq: self.segments[idx].first_seq, offset: end, prev: last });
            if out.len() >= max {
                break;
            }
            idx += 1;
            if let Some(seg) = self.segments.get(idx) {
                (offset, prev) = (SEGMENT_HEADER_LEN, seg.prev_bound.max(last));
            }
        }
        Ok(out)
    }

    /// Acknowledges every record up to `seq`: persists it atomically, then
    /// deletes segments wholly at or below it. Acks at or below the current
    /// one are no-ops. Returns the acked seq.
    pub fn ack(&mut self, seq: u64) -> Result<u64, SpoolError> {
        self.check_writable()?;
        if seq <= self.acked {
            return Ok(self.acked);
        }
        if seq > self.durable_seq {
            return Err(SpoolError::AckBeyondDurable { seq, durable: self.durable_seq });
        }
        write_ack(&self.cfg.dir, seq)?;
        self.acked = seq;
        self.delete_acked_segments();
        Ok(seq)
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Highest seq readers can see.
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    /// The seq the next stored record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn config(&self) -> &SpoolConfig {
        &self.cfg
    }

    /// Opened with [`Spool::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn check_writable(&self) -> Result<(), SpoolError> {
        if self.read_only {
            return Err(SpoolError::ReadOnly { dir: self.cfg.dir.clone() });
        }
        Ok(())
    }

    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            durable_seq: self.durable_seq,
            acked_seq: self.acked,
            backlog_records: self.durable_seq.saturating_sub(self.acked),
            backlog_bytes: self.held_bytes(),
            pending_records: self.writer.as_ref().map_or(0, |w| w.pending_records),
            segments: self.segments.len(),
            ..self.stats
        }
    }

    // -- writing ----------------------------------------------------------

    fn held_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum::<u64>() + self.writer.as_ref().map_or(0, |w| w.pending.len() as u64)
    }

    fn dropped(&mut self, reason: DropReason) -> AppendOutcome {
        self.stats.dropped += 1;
        self.drop_run += 1;
        if self.drop_run == 1 {
            tracing::error!(%reason, "outcome spool dropping records");
        }
        AppendOutcome::Dropped { reason }
    }

    fn sync_due(&self, now: Instant) -> bool {
        let Some(w) = &self.writer else { return false };
        if w.pending.is_empty() {
            return false;
        }
        match self.cfg.fsync {
            FsyncPolicy::Always | FsyncPolicy::Never => true,
            FsyncPolicy::EveryN(n) => w.pending_records >= u64::from(n),
            FsyncPolicy::Interval(d) => w.oldest_pending.is_some_and(|t| now.saturating_duration_since(t) >= d),
        }
    }

    /// Write, and fsync unless the policy is `Never`.
    fn policy_sync(&mut self) -> io::Result<()> {
        let fsync = self.cfg.fsync != FsyncPolicy::Never;
        self.sync_logged(fsync)
    }

    fn sync_logged(&mut self, fsync: bool) -> io::Result<()> {
        match self.sync(fsync) {
            Ok(()) => {
                if self.failing {
                    tracing::info!("outcome spool writes recovered");
                    self.failing = false;
                }
                Ok(())
            }
            Err(e) => {
                self.stats.io_errors += 1;
                if !self.failing {
                    tracing::error!(error = %e, dir = %self.cfg.dir.display(), "outcome spool write failed; records kept pending");
                    self.failing = true;
                }
                Err(e)
            }
        }
    }

    /// Writes the pending bytes at the segment's durable end and, if
    /// `fsync`, makes them durable. On failure the file is cut back to the
    /// durable end and the bytes stay pending, to be written again.
    fn sync(&mut self, fsync: bool) -> io::Result<()> {
        let (Some(w), Some(seg)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            return Ok(());
        };
        let had_pending = !w.pending.is_empty();
        if !(had_pending || fsync && w.unsynced_written) {
            return Ok(());
        }
        let result = (|| {
            if had_pending {
                w.file.seek(SeekFrom::Start(seg.len))?;
                w.file.write_all(&w.pending)?;
            }
            if fsync {
                w.file.sync_data()?;
                if w.dir_dirty {
                    sync_dir(&self.cfg.dir)?;
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = w.file.set_len(seg.len);
            return Err(e);
        }
        if fsync {
            self.stats.syncs += 1;
            w.unsynced_written = false;
            w.dir_dirty = false;
        } else if had_pending {
            w.unsynced_written = true;
        }
        seg.len += w.pending.len() as u64;
        w.pending.clear();
        w.pending_records = 0;
        w.oldest_pending = None;
        self.durable_seq = self.next_seq - 1;
        Ok(())
    }

    /// Seals the active segment (its records made durable) and starts a new
    /// one named after the next seq, its header pending.
    fn roll(&mut self) -> io::Result<()> {
        if self.writer.is_some() {
            self.policy_sync()?;
            self.writer = None;
        }
        let path = segment_path(&self.cfg.dir, self.next_seq);
        let file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => f,
            Err(e) => {
                self.stats.io_errors += 1;
                tracing::error!(error = %e, path = %path.display(), "outcome spool cannot create a segment");
                return Err(e);
            }
        };
        let prev_bound = self.next_seq - 1;
        self.segments.push_back(Segment {
            first_seq: self.next_seq,
            path,
            len: 0,
            prev_bound,
            last_seq: None,
            skips: BTreeMap::new(),
        });
        self.writer = Some(Writer {
            file,
            pending: format::encode_segment_header(self.next_seq).to_vec(),
            pending_records: 0,
            oldest_pending: None,
            unsynced_written: false,
            dir_dirty: true,
        });
        Ok(())
    }

    /// Deletes leading segments whose every possible seq is acknowledged.
    fn delete_acked_segments(&mut self) {
        while let Some(front) = self.segments.front() {
            let upper = match self.segments.get(1) {
                Some(next) => next.first_seq - 1,
                None => front.last_seq.unwrap_or(front.first_seq.saturating_sub(1)),
            };
            let active = self.segments.len() == 1 && self.writer.is_some();
            if upper > self.acked || (active && self.writer.as_ref().is_some_and(|w| !w.pending.is_empty())) {
                break;
            }
            if active {
                self.writer = None;
            }
            match fs::remove_file(&front.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(error = %e, path = %front.path.display(), "outcome spool cannot delete an acked segment; will retry");
                    break;
                }
            }
            let first_seq = front.first_seq;
            self.segments.pop_front();
            if self.cursor.is_some_and(|c| c.first_seq == first_seq) {
                self.cursor = None;
            }
            if self.read_file.as_ref().is_some_and(|(s, _)| *s == first_seq) {
                self.read_file = None;
            }
        }
    }

    // -- reading ----------------------------------------------------------

    /// Reads records of segment `idx` from `offset` up to its durable end,
    /// pushing those with seq >= `from` until `out` holds `max`. Returns the
    /// offset reached and the last seq seen.
    fn read_segment(
        &mut self,
        idx: usize,
        mut pos: u64,
        mut prev: u64,
        from: u64,
        max: usize,
        out: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<(u64, u64), SpoolError> {
        let first_seq = self.segments[idx].first_seq;
        let end = self.segments[idx].len;
        let path = self.segments[idx].path.clone();
        if self.read_file.as_ref().is_none_or(|(s, _)| *s != first_seq) {
            let f = File::open(&path).map_err(io_err("open", &path))?;
            self.read_file = Some((first_seq, f));
        }
        let Some((_, file)) = self.read_file.as_mut() else { return Ok((pos, prev)) };
        let mut buf: Vec<u8> = Vec::new();
        let mut buf_at = pos;
        while pos < end && out.len() < max {
            if let Some(&resume) = self.segments[idx].skips.get(&pos) {
                pos = resume;
                continue;
            }
            let mut fault = None;
            if end - pos < FRAME_HEADER_LEN {
                fault = Some(FrameFault::Truncated);
            } else {
                ensure(file, &path, &mut buf, &mut buf_at, pos, FRAME_HEADER_LEN, end)?;
                let rel = (pos - buf_at) as usize;
                let len = u64::from(u32::from_le_bytes([buf[rel], buf[rel + 1], buf[rel + 2], buf[rel + 3]]));
                if end - pos < FRAME_HEADER_LEN + len {
                    fault = Some(FrameFault::Truncated);
                } else {
                    ensure(file, &path, &mut buf, &mut buf_at, pos, FRAME_HEADER_LEN + len, end)?;
                    let rel = (pos - buf_at) as usize;
                    match format::decode_frame(&buf, rel, prev) {
                        Ok(f) => {
                            if f.seq >= from {
                                out.push((f.seq, buf[f.payload].to_vec()));
                            }
                            prev = f.seq;
                            pos = buf_at + f.end as u64;
                        }
                        Err(e) => fault = Some(e),
                    }
                }
            }
            if let Some(fault) = fault {
                // Damage since open: find the next valid frame, remember and report the gap.
                let mut rest = vec![0u8; (end - pos) as usize];
                read_at(file, &path, pos, &mut rest)?;
                let resume = format::resync(&rest, 0, prev).map_or(end, |r| pos + r as u64);
                let reason = CorruptReason::from(fault);
                tracing::error!(
                    segment = %path.display(), offset = pos, skipped_bytes = resume - pos, %reason,
                    "outcome spool: corrupt data skipped while reading"
                );
                self.segments[idx].skips.insert(pos, resume);
                self.stats.corrupt_skipped += 1;
                pos = resume;
                buf.clear();
            }
        }
        Ok((pos, prev))
    }
}

impl Drop for Spool {
    /// Commits pending records (best effort; failures are logged).
    fn drop(&mut self) {
        let _ = self.sync_logged(true);
    }
}

/// Makes `buf` (which starts at file offset `buf_at`) cover `pos..pos+n`,
/// reading at least `READ_CHUNK` bytes (never past `end`) when it does not.
fn ensure(
    file: &mut File,
    path: &Path,
    buf: &mut Vec<u8>,
    buf_at: &mut u64,
    pos: u64,
    n: u64,
    end: u64,
) -> Result<(), SpoolError> {
    if pos >= *buf_at && pos + n <= *buf_at + buf.len() as u64 {
        return Ok(());
    }
    let want = n.max(READ_CHUNK).min(end - pos);
    buf.resize(want as usize, 0);
    read_at(file, path, pos, buf)?;
    *buf_at = pos;
    Ok(())
}

fn read_at(file: &mut File, path: &Path, pos: u64, buf: &mut [u8]) -> Result<(), SpoolError> {
    file.seek(SeekFrom::Start(pos)).map_err(io_err("read", path))?;
    file.read_exact(buf).map_err(io_err("read", path))
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.{SEGMENT_EXT}"))
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn read_ack(path: &Path, report: &mut RecoveryReport) -> Result<u64, SpoolError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    match format::decode_ack(&bytes) {
        AckCheck::Ok(seq) => Ok(seq),
        AckCheck::Version(version) => Err(SpoolError::UnsupportedFormat { path: path.to_owned(), version }),
        AckCheck::Corrupt => {
            report.corrupt_records.push(CorruptRecord {
                segment: path.to_owned(),
                offset: 0,
                reason: CorruptReason::AckFile,
                skipped_bytes: bytes.len() as u64,
            });
            Ok(0)
        }
    }
}

/// Replaces the ack file atomically: temp file, fsync, rename, fsync dir.
fn write_ack(dir: &Path, seq: u64) -> Result<(), SpoolError> {
    let tmp = dir.join(ACK_TMP_FILE);
    let dst = dir.join(ACK_FILE);
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(&format::encode_ack(seq)).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, &dst).map_err(io_err("rename", &dst))?;
    sync_dir(dir).map_err(io_err("fsync directory", dir))
}

#[cfg(test)]
mod read_only_tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::path::Path;
    use std::time::Instant;

    use super::*;

    fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().to_string_lossy().into_owned(), fs::read(e.path()).unwrap())
            })
            .collect()
    }

    #[test]
    fn read_only_view_reads_everything_on_disk_and_changes_nothing() {
        let tmp = tempfile::TempDir::new().unwrap();
        let dir = tmp.path().join("spool");
        let cfg = SpoolConfig { max_segment_bytes: 256, fsync: FsyncPolicy::Always, ..SpoolConfig::new(&dir) };
        let (mut rw, _) = Spool::open(cfg).unwrap();
        let now = Instant::now();
        for i in 1..=12u64 {
            assert_eq!(
                rw.append(format!("record {i:03} {}", "x".repeat(40)).as_bytes(), now).unwrap(),
                AppendOutcome::Stored { seq: i }
            );
        }
        rw.ack(3).unwrap();
        let first_kept = rw.segments.front().unwrap().first_seq;
        // What a crash, or a write in progress, leaves: a stray ack.tmp and a partial frame.
        fs::write(dir.join(ACK_TMP_FILE), b"half an ack").unwrap();
        let last = rw.segments.back().unwrap().path.clone();
        let mut f = OpenOptions::new().append(true).open(&last).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let before = snapshot(&dir);

        let (mut ro, report) = Spool::open_read_only(&dir).unwrap();
        assert!(ro.is_read_only());
        assert_eq!(report.torn_tail_bytes, 6);
        assert_eq!((report.acked_seq, ro.acked(), ro.durable_seq()), (3, 3, 12));
        let seqs: Vec<u64> = ro.read_from(0, usize::MAX).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(seqs, (first_kept..=12).collect::<Vec<_>>(), "acked records still on disk are visible too");
        assert!(matches!(ro.append(b"x", now), Err(SpoolError::ReadOnly { .. })));
        assert!(matches!(ro.ack(12), Err(SpoolError::ReadOnly { .. })));
        assert!(matches!(ro.commit(now), Err(SpoolError::ReadOnly { .. })));
        assert!(matches!(ro.flush(now), Err(SpoolError::ReadOnly { .. })));
        drop(ro);
        assert_eq!(snapshot(&dir), before, "a read-only open must not touch the directory");

        // The owner goes on; a new view sees its new records, the old one would not.
        fs::remove_file(dir.join(ACK_TMP_FILE)).unwrap();
        let (mut old, _) = Spool::open_read_only(&dir).unwrap();
        assert_eq!(rw.append(b"record 013", now).unwrap(), AppendOutcome::Stored { seq: 13 });
        assert_eq!(old.read_from(13, 10).unwrap(), vec![]);
        let (mut new, _) = Spool::open_read_only(&dir).unwrap();
        assert_eq!(new.read_from(13, 10).unwrap(), vec![(13, b"record 013".to_vec())]);
    }

    #[test]
    fn read_only_open_of_a_missing_directory_fails_and_creates_nothing() {
        let tmp = tempfile::TempDir::new().unwrap();
        let dir = tmp.path().join("absent");
        assert!(matches!(Spool::open_read_only(&dir), Err(SpoolError::Io { .. })));
        assert!(!dir.exists());
    }
}
