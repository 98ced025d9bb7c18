//! A `tracing` event reaches journald with its fields as unprefixed journal
//! fields (`CALL_ID`, `TRUNK`, `TURN`, `INTENT`, ...), through the node's own
//! logging set-up (`ops::logging::init` with `format = journald`).
//!
//! tracing-journald 0.3 always sends to `/run/systemd/journal/socket` (the
//! path is a constant, not configurable), so the test re-runs itself inside
//! a private user + mount namespace (`unshare -Urm`) with a fresh tmpfs on
//! `/run`, binds that socket there, and decodes the datagram the library
//! sends (the journal native protocol). The host's journal is never touched.
//! Needs util-linux `unshare` and user namespaces (Debian: on by default).

use std::collections::BTreeMap;
use std::process::Command;

const CHILD_ENV: &str = "VOICE_EDGE_JOURNALD_TEST_CHILD";
const MARKER: &str = "voice-edge-journald-test-namespace";
const RECORD_PREFIX: &str = "JOURNAL_RECORD ";

/// Decodes one native-protocol datagram: `NAME=value\n` or
/// `NAME\n<u64 LE length><bytes>\n`. A field may repeat.
fn decode_native(mut buf: &[u8]) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut fields: BTreeMap<String, Vec<String>> = BTreeMap::new();
    while !buf.is_empty() {
        let end = buf.iter().position(|&b| b == b'\n' || b == b'=').ok_or("field name without end")?;
        let name = std::str::from_utf8(&buf[..end]).map_err(|e| e.to_string())?.to_owned();
        let value;
        if buf[end] == b'=' {
            let rest = &buf[end + 1..];
            let nl = rest.iter().position(|&b| b == b'\n').ok_or("value without line feed")?;
            value = rest[..nl].to_vec();
            buf = &rest[nl + 1..];
        } else {
            let rest = &buf[end + 1..];
            let len_bytes: [u8; 8] = rest.get(..8).ok_or("short length")?.try_into().unwrap();
            let len = u64::from_le_bytes(len_bytes) as usize;
            value = rest.get(8..8 + len).ok_or("short value")?.to_vec();
            if rest.get(8 + len) != Some(&b'\n') {
                return Err(format!("{name}: value not followed by a line feed"));
            }
            buf = &rest[8 + len + 1..];
        }
        let valid_name =
            !name.is_empty() && !name.starts_with('_') && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !valid_name {
            return Err(format!("{name:?} is not a valid journal field name"));
        }
        fields.entry(name).or_default().push(String::from_utf8_lossy(&value).into_owned());
    }
    Ok(fields)
}

#[test]
fn native_decoder_reads_both_encodings() {
    let mut buf = b"MESSAGE=hi\nCALL_ID\n".to_vec();
    buf.extend_from_slice(&5u64.to_le_bytes());
    buf.extend_from_slice(b"a\nb c\n");
    let f = decode_native(&buf).unwrap();
    assert_eq!(f["MESSAGE"], vec!["hi"]);
    assert_eq!(f["CALL_ID"], vec!["a\nb c"]);
    assert!(decode_native(b"call_id=x\n").is_err(), "lower case names are invalid");
    assert!(decode_native(b"X\n\x09\0\0\0\0\0\0\0ab\n").is_err(), "truncated value");
}

/// Runs inside the namespace: be journald, log one turn, print what arrived.
fn child() {
    use std::os::unix::net::UnixDatagram;
    use voice_edge::ops::logging::{self, LogFormat, LoggingConfig};

    let entries: Vec<String> = std::fs::read_dir("/run").unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(entries, vec![MARKER.to_owned()], "refusing to bind /run/systemd/journal/socket outside a fresh private /run");
    std::fs::create_dir_all("/run/systemd/journal").unwrap();
    let journal = UnixDatagram::bind("/run/systemd/journal/socket").unwrap();
    journal.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();

    logging::init(&LoggingConfig { level: "info".into(), format: LogFormat::Journald }).unwrap();
    let call_id = "c-7f3a9e";
    let span = tracing::info_span!("call", channel = "sip");
    let _entered = span.enter();
    tracing::info!(call_id = %call_id, trunk = "carrier-a", turn = 3, intent = "order_status", tier = "edge", asr_ms = 412u64, "turn done");

    // tracing-journald probes the socket with an empty datagram when the
    // layer is created; the event is the first non-empty one.
    let mut buf = vec![0u8; 64 * 1024];
    let n = loop {
        let n = journal.recv(&mut buf).expect("a journal datagram");
        if n > 0 {
            break n;
        }
    };
    let fields = decode_native(&buf[..n]).unwrap();
    // On its own line: the test harness has already printed "test ... " here.
    println!("\n{RECORD_PREFIX}{}", serde_json::to_string(&fields).unwrap());
}

#[test]
fn turn_fields_reach_the_journal_without_prefix() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child();
    }
    let exe = std::env::current_exe().unwrap();
    let script = format!("mount -t tmpfs tmpfs /run && touch /run/{MARKER} && exec \"$0\" \"$@\"");
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "--", "sh", "-c", &script])
        .arg(&exe)
        .args(["--exact", "turn_fields_reach_the_journal_without_prefix", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap_or_else(|e| panic!("cannot run `unshare` (util-linux): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the namespaced child failed ({}); this test needs `unshare -Urm` (user namespaces):\n{stdout}\n{stderr}",
        out.status
    );
    let record = stdout
        .lines()
        .find_map(|l| l.strip_prefix(RECORD_PREFIX))
        .unwrap_or_else(|| panic!("the child printed no journal record:\n{stdout}\n{stderr}"));
    let fields: BTreeMap<String, Vec<String>> = serde_json::from_str(record).unwrap();
    let one = |k: &str| -> &str {
        let v = fields.get(k).unwrap_or_else(|| panic!("no {k} in {fields:?}"));
        assert_eq!(v.len(), 1, "{k} more than once: {v:?}");
        &v[0]
    };
    assert_eq!(one("MESSAGE"), "turn done");
    assert_eq!(one("CALL_ID"), "c-7f3a9e");
    assert_eq!(one("TRUNK"), "carrier-a");
    assert_eq!(one("TURN"), "3");
    assert_eq!(one("INTENT"), "order_status");
    assert_eq!(one("TIER"), "edge");
    assert_eq!(one("ASR_MS"), "412");
    // A field of the enclosing span is there too, also unprefixed.
    assert_eq!(one("CHANNEL"), "sip");
    assert_eq!(one("SPAN_NAME"), "call");
    // tracing-journald's default mapping: INFO -> 5 (notice), DEBUG -> 6.
    assert_eq!(one("PRIORITY"), "5");
    assert_eq!(one("SYSLOG_IDENTIFIER"), "voice-edge");
    // No field carries tracing-journald's default `F_` prefix.
    assert!(!fields.keys().any(|k| k.starts_with("F_")), "prefixed fields: {:?}", fields.keys());
}
