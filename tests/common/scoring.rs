//! Scoring helpers and test-corpus loaders shared by the integration tests.
//!
//! Plain std-only code, meant to be pulled into integration tests as part of
//! `mod common;` (or `#[path = "common/scoring.rs"] mod scoring;`).
//!
//! The audio itself lives outside the repository, under [`testdata_root`],
//! and is built by `scripts/test-data.sh`; the tables describing it are
//! committed in `tests/data/` (`utterances.tsv`, `wer_subset.tsv`).
//!
//! # Transcript normalisation
//!
//! [`normalize_transcript`] maps a reference or an ASR hypothesis to a list of
//! comparable words, in this order:
//!
//! 1. lowercase; curly apostrophes become `'`;
//! 2. `$12` becomes `12 dollars`, `%` becomes ` percent `, `&` becomes
//!    ` and `; a `,` between digits is dropped (`1,000`) and a `.` between
//!    digits becomes ` point ` (`4.5`);
//! 3. every other character that is not a letter, a digit or an apostrophe
//!    (hyphens and slashes included) separates words; apostrophes at the edges
//!    of a word are dropped;
//! 4. contractions with one reading are expanded: `n't` -> ` not` (`won't` ->
//!    `will not`, `can't`/`cannot` -> `can not`), `'re` -> ` are`, `'m` ->
//!    ` am`, `'ll` -> ` will`, `'ve` -> ` have`, `let's` -> `let us`; `'s` and
//!    `'d` are left alone (ambiguous), so `it's` stays `it's` on both sides;
//! 5. spelling variants are unified: `ok` -> `okay`, `alright` -> `all
//!    right`, and a few British spellings -> American (`colour`, `catalogue`,
//!    `cancelled`, `favourite`, `centre`, ...);
//! 6. **numbers become digits, one token per digit**. Digits already written
//!    as digits are split (`456` -> `4 5 6`); a run of number words is parsed
//!    greedily into numbers (`twenty one` -> 21, `four hundred and five` ->
//!    405, `two thousand` -> 2000), a word that cannot continue the number
//!    being parsed starts a new one (`four five six` -> 4, 5, 6; `nineteen
//!    ninety` -> 19, 90), and each number is written out digit by digit.
//!    `oh` between two number words reads as zero (`four oh five`).
//!
//! So `1` == `one`, `21` == `twenty one` == `twenty-one`, `4 5 6` == `456` ==
//! `four five six`, `$49` == `forty nine dollars`, and a misheard digit in an
//! order number costs exactly one error.

#![allow(dead_code)]

use std::collections::HashMap;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------
// Normalisation
// ---------------------------------------------------------------------------

/// Normalises a transcript into comparable words (see the module docs).
pub fn normalize_transcript(s: &str) -> Vec<String> {
    let lowered: String = s
        .to_lowercase()
        .chars()
        .map(|c| match c {
            '\u{2019}' | '\u{2018}' | '\u{02bc}' | '`' => '\'',
            c => c,
        })
        .collect();
    let spaced = separate_symbols(&lowered);

    let mut words: Vec<String> = Vec::new();
    for raw in spaced.split_whitespace() {
        let w = raw.trim_matches('\'');
        if w.is_empty() {
            continue;
        }
        for part in expand_word(w) {
            words.push(part.to_string());
        }
    }
    numbers_to_digits(&words)
}

/// Steps 2 and 3: symbols, digit punctuation, word separators.
fn separate_symbols(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 16);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let prev_digit = i > 0 && chars[i - 1].is_ascii_digit();
        let next_digit = chars.get(i + 1).is_some_and(|c| c.is_ascii_digit());
        match c {
            '$' if next_digit => {
                // "$49.99" -> " 49 point 99 dollars "
                let mut j = i + 1;
                while j < chars.len()
                    && (chars[j].is_ascii_digit()
                        || ((chars[j] == ',' || chars[j] == '.')
                            && chars.get(j + 1).is_some_and(|c| c.is_ascii_digit())))
                {
                    j += 1;
                }
                let amount: String = chars[i + 1..j].iter().collect();
                out.push(' ');
                out.push_str(&separate_symbols(&amount));
                out.push_str(" dollars ");
                i = j;
                continue;
            }
            ',' if prev_digit && next_digit => {}
            '.' if prev_digit && next_digit => out.push_str(" point "),
            '%' => out.push_str(" percent "),
            '&' => out.push_str(" and "),
            '\'' => out.push('\''),
            c if c.is_alphanumeric() => out.push(c),
            _ => out.push(' '),
        }
        i += 1;
    }
    out
}

/// Steps 4 and 5 for one word: contractions and spelling variants.
fn expand_word(w: &str) -> Vec<&str> {
    let whole: Option<&[&str]> = match w {
        "won't" => Some(&["will", "not"]),
        "can't" | "cannot" => Some(&["can", "not"]),
        "shan't" => Some(&["shall", "not"]),
        "ain't" => Some(&["ain't"]),
        "let's" => Some(&["let", "us"]),
        "ok" => Some(&["okay"]),
        "alright" => Some(&["all", "right"]),
        "colour" => Some(&["color"]),
        "colours" => Some(&["colors"]),
        "catalogue" => Some(&["catalog"]),
        "cancelled" => Some(&["canceled"]),
        "cancelling" => Some(&["canceling"]),
        "favourite" => Some(&["favorite"]),
        "centre" => Some(&["center"]),
        "labelled" => Some(&["labeled"]),
        "travelling" => Some(&["traveling"]),
        "cheque" => Some(&["check"]),
        _ => None,
    };
    if let Some(parts) = whole {
        return parts.to_vec();
    }
    for (suffix, expansion) in [
        ("n't", "not"),
        ("'re", "are"),
        ("'m", "am"),
        ("'ll", "will"),
        ("'ve", "have"),
    ] {
        if let Some(stem) = w.strip_suffix(suffix) {
            if !stem.is_empty() {
                return vec![stem, expansion];
            }
        }
    }
    vec![w]
}

fn unit_value(w: &str) -> Option<u64> {
    Some(match w {
        "zero" => 0,
        "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        _ => return None,
    })
}

fn teen_value(w: &str) -> Option<u64> {
    Some(match w {
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        "thirteen" => 13,
        "fourteen" => 14,
        "fifteen" => 15,
        "sixteen" => 16,
        "seventeen" => 17,
        "eighteen" => 18,
        "nineteen" => 19,
        _ => return None,
    })
}

fn tens_value(w: &str) -> Option<u64> {
    Some(match w {
        "twenty" => 20,
        "thirty" => 30,
        "forty" => 40,
        "fifty" => 50,
        "sixty" => 60,
        "seventy" => 70,
        "eighty" => 80,
        "ninety" => 90,
        _ => return None,
    })
}

fn scale_value(w: &str) -> Option<u64> {
    Some(match w {
        "thousand" => 1_000,
        "million" => 1_000_000,
        "billion" => 1_000_000_000,
        _ => return None,
    })
}

fn is_number_word(w: &str) -> bool {
    unit_value(w).is_some()
        || teen_value(w).is_some()
        || tens_value(w).is_some()
        || scale_value(w).is_some()
        || w == "hundred"
}

fn is_digits(w: &str) -> bool {
    !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit())
}

/// Below-hundred part of the group being parsed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sub {
    None,
    Unit,
    Teen,
    Tens,
    TensUnit,
}

/// Greedily parses one number from the start of `ws` (all number words or
/// `and`); returns its value and how many words it used.
fn parse_number(ws: &[String]) -> Option<(u64, usize)> {
    let mut total: u64 = 0; // completed thousand/million groups
    let mut group: u64 = 0; // current group
    let mut have_hundred = false;
    let mut sub = Sub::None;
    let mut last_scale = u64::MAX;
    let mut after_joiner = false; // last word was "hundred" or a scale
    let mut used = 0;
    let mut i = 0;
    while i < ws.len() {
        let w = ws[i].as_str();
        if w == "and" {
            let next_is_sub = ws.get(i + 1).is_some_and(|n| {
                unit_value(n).is_some_and(|v| v > 0)
                    || teen_value(n).is_some()
                    || tens_value(n).is_some()
            });
            if after_joiner && sub == Sub::None && next_is_sub {
                i += 1;
                after_joiner = false;
                continue;
            }
            break;
        }
        if let Some(v) = unit_value(w) {
            match sub {
                // a lone zero only ever starts a number
                Sub::None if v == 0 && used > 0 => break,
                Sub::None => sub = Sub::Unit,
                Sub::Tens if v != 0 => sub = Sub::TensUnit,
                _ => break,
            }
            group += v;
            after_joiner = false;
        } else if let Some(v) = teen_value(w).or_else(|| tens_value(w)) {
            if sub != Sub::None {
                break;
            }
            sub = if v < 20 { Sub::Teen } else { Sub::Tens };
            group += v;
            after_joiner = false;
        } else if w == "hundred" {
            if have_hundred {
                break;
            }
            match sub {
                Sub::None if used == 0 => group = 100,
                Sub::Unit | Sub::Teen if group > 0 => group *= 100,
                _ => break,
            }
            have_hundred = true;
            sub = Sub::None;
            after_joiner = true;
        } else if let Some(s) = scale_value(w) {
            if s >= last_scale {
                break;
            }
            if used == 0 {
                group = 1;
            } else if group == 0 {
                break;
            }
            total += group * s;
            group = 0;
            have_hundred = false;
            sub = Sub::None;
            last_scale = s;
            after_joiner = true;
        } else {
            break;
        }
        i += 1;
        used = i;
    }
    (used > 0).then_some((total + group, used))
}

/// Step 6: every number (digits or words) becomes one token per digit.
fn numbers_to_digits(words: &[String]) -> Vec<String> {
    // "oh" between two numbers is a zero ("four oh five").
    let numeric = |w: &str| is_number_word(w) || is_digits(w);
    let words: Vec<String> = words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let sandwiched =
                i > 0 && numeric(&words[i - 1]) && words.get(i + 1).is_some_and(|n| numeric(n));
            if w == "oh" && sandwiched {
                "zero".to_string()
            } else {
                w.clone()
            }
        })
        .collect();

    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        if is_digits(w) {
            out.extend(w.chars().map(String::from));
            i += 1;
        } else if is_number_word(w) {
            let (value, used) = parse_number(&words[i..]).expect("starts with a number word");
            out.extend(value.to_string().chars().map(String::from));
            i += used;
        } else if w.chars().any(|c| c.is_ascii_digit()) && !is_ordinal(w) {
            // "mp3", "4g": split letter runs from digits
            let mut run = String::new();
            for c in w.chars() {
                if c.is_ascii_digit() {
                    if !run.is_empty() {
                        out.push(std::mem::take(&mut run));
                    }
                    out.push(c.to_string());
                } else {
                    run.push(c);
                }
            }
            if !run.is_empty() {
                out.push(run);
            }
            i += 1;
        } else {
            out.push(w.clone());
            i += 1;
        }
    }
    out
}

fn is_ordinal(w: &str) -> bool {
    ["st", "nd", "rd", "th"]
        .iter()
        .any(|s| w.strip_suffix(s).is_some_and(is_digits))
}

// ---------------------------------------------------------------------------
// Word error rate
// ---------------------------------------------------------------------------

/// Word-level Levenshtein distance (substitutions + deletions + insertions)
/// turning `reference` into `hypothesis`.
pub fn word_errors(reference: &[String], hypothesis: &[String]) -> usize {
    if reference.is_empty() {
        return hypothesis.len();
    }
    let mut prev: Vec<usize> = (0..=hypothesis.len()).collect();
    let mut cur = vec![0; hypothesis.len() + 1];
    for (i, r) in reference.iter().enumerate() {
        cur[0] = i + 1;
        for (j, h) in hypothesis.iter().enumerate() {
            let substitute = prev[j] + usize::from(r != h);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[hypothesis.len()]
}

/// Corpus word error rate over `(reference, hypothesis)` pairs of raw text,
/// both normalised with [`normalize_transcript`]: returns (word errors,
/// reference words, errors / reference words). The rate is 0 for an empty
/// reference with an empty hypothesis and 1 per inserted word otherwise.
pub fn wer(pairs: &[(String, String)]) -> (usize, usize, f64) {
    let mut errors = 0;
    let mut words = 0;
    for (reference, hypothesis) in pairs {
        let r = normalize_transcript(reference);
        let h = normalize_transcript(hypothesis);
        errors += word_errors(&r, &h);
        words += r.len();
    }
    let rate = errors as f64 / words.max(1) as f64;
    (errors, words, rate)
}

// ---------------------------------------------------------------------------
// Test data locations and loaders
// ---------------------------------------------------------------------------

fn non_empty_env(name: &str) -> Option<PathBuf> {
    env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Where `scripts/test-data.sh` puts the audio:
/// `$VOICE_EDGE_TESTDATA`, else `$XDG_CACHE_HOME/voice-edge/testdata`, else
/// `$HOME/.cache/voice-edge/testdata` (empty variables count as unset, as in
/// the script's `${VAR:-default}`).
pub fn testdata_root() -> PathBuf {
    if let Some(root) = non_empty_env("VOICE_EDGE_TESTDATA") {
        return root;
    }
    let cache = non_empty_env("XDG_CACHE_HOME").unwrap_or_else(|| {
        non_empty_env("HOME")
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".cache")
    });
    cache.join("voice-edge").join("testdata")
}

/// `testdata_root()/rel`, panicking with a pointer to the script when it is
/// missing.
pub fn require_testdata(rel: &str) -> PathBuf {
    let path = testdata_root().join(rel);
    if !path.exists() {
        panic!(
            "test data missing: {}; run scripts/test-data.sh",
            path.display()
        );
    }
    path
}

/// Committed table under `tests/data/`.
pub fn data_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
        .join(name)
}

/// Rows of a tab-separated file with a header line, each checked to have
/// exactly `columns` fields.
fn read_tsv(path: &Path, columns: usize) -> Vec<Vec<String>> {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .skip(1)
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            let fields: Vec<String> = line.split('\t').map(str::to_string).collect();
            assert_eq!(
                fields.len(),
                columns,
                "{} line {}: want {columns} tab-separated fields, got {:?}",
                path.display(),
                n + 1,
                line
            );
            fields
        })
        .collect()
}

/// One spoken test utterance (a row of `tests/data/utterances.tsv`).
#[derive(Clone, Debug, PartialEq)]
pub struct Utterance {
    pub id: String,
    /// Expected intent: order_status, cancel_order, return_item,
    /// billing_question, human_agent, goodbye or other.
    pub intent: String,
    /// Synthesiser voice, `espeak:<voice>[@wpm]` or `flite:<voice>`.
    pub voice: String,
    /// What the synthetic caller says.
    pub text: String,
    /// `testdata_root()/utterances/<id>.wav` (may not exist yet; check with
    /// `require_testdata`).
    pub wav: PathBuf,
    /// The order number spoken in the text, as digits, when there is one (the
    /// first run of five or more digits after normalisation).
    pub order_number: Option<String>,
}

/// The seven intents of the default flow.
pub const INTENTS: [&str; 7] = [
    "order_status",
    "cancel_order",
    "return_item",
    "billing_question",
    "human_agent",
    "goodbye",
    "other",
];

/// Parses `tests/data/utterances.tsv`.
pub fn load_utterances() -> Vec<Utterance> {
    let dir = testdata_root().join("utterances");
    read_tsv(&data_file("utterances.tsv"), 4)
        .into_iter()
        .map(|f| {
            let [id, intent, voice, text]: [String; 4] = f.try_into().expect("4 fields");
            Utterance {
                wav: dir.join(format!("{id}.wav")),
                order_number: spoken_number(&text, 5),
                id,
                intent,
                voice,
                text,
            }
        })
        .collect()
}

/// The first run of at least `min_digits` consecutive digits in the
/// normalised text ("order four five six seven eight nine" -> "456789").
pub fn spoken_number(text: &str, min_digits: usize) -> Option<String> {
    let mut run = String::new();
    for w in normalize_transcript(text) {
        if is_digits(&w) {
            run.push_str(&w);
        } else if run.len() >= min_digits {
            return Some(run);
        } else {
            run.clear();
        }
    }
    (run.len() >= min_digits).then_some(run)
}

/// One real recording with its reference transcript.
#[derive(Clone, Debug, PartialEq)]
pub struct WerItem {
    pub id: String,
    /// 16 kHz mono 16-bit wav.
    pub wav: PathBuf,
    pub reference: String,
    /// `<debian package>:<path in package>` from `tests/data/wer_subset.tsv`
    /// (empty when the id is not listed there).
    pub source: String,
}

/// Parses `testdata_root()/wer/manifest.tsv` (`id`, `wav`, `reference`;
/// relative wav paths are relative to the manifest's directory), panicking
/// when the corpus has not been built.
pub fn load_wer_manifest() -> Vec<WerItem> {
    let manifest = require_testdata("wer/manifest.tsv");
    let dir = manifest
        .parent()
        .expect("manifest has a parent")
        .to_path_buf();
    let sources: HashMap<String, String> = read_tsv(&data_file("wer_subset.tsv"), 3)
        .into_iter()
        .map(|f| (f[0].clone(), f[1].clone()))
        .collect();
    read_tsv(&manifest, 3)
        .into_iter()
        .map(|f| {
            let [id, wav, reference]: [String; 3] = f.try_into().expect("3 fields");
            WerItem {
                wav: dir.join(wav),
                source: sources.get(&id).cloned().unwrap_or_default(),
                id,
                reference,
            }
        })
        .collect()
}

#[cfg(test)]
mod scoring_tests {
    use super::*;

    fn n(s: &str) -> String {
        normalize_transcript(s).join(" ")
    }

    #[test]
    fn normalises_case_punctuation_and_numbers() {
        assert_eq!(
            n("Where is order 456789?"),
            n("where is order four five six seven eight nine")
        );
        assert_eq!(n("twenty-one"), "2 1");
        assert_eq!(n("21"), n("twenty one"));
        assert_eq!(n("4, 5, 6"), n("four five six"));
        assert_eq!(n("one hundred and five"), "1 0 5");
        assert_eq!(n("$49"), n("forty nine dollars"));
        assert_eq!(n("50%"), n("fifty percent"));
        assert_eq!(n("OK, you're all set"), n("okay you are all set"));
        assert_eq!(n("Call-Forward on Busy."), "call forward on busy");
        assert_eq!(n("It’s"), "it's");
    }

    #[test]
    fn word_error_maths() {
        let w = |s: &str| normalize_transcript(s);
        assert_eq!(word_errors(&w("a b c"), &w("a b c")), 0);
        assert_eq!(word_errors(&w("a b c"), &w("a x c")), 1);
        assert_eq!(word_errors(&w("a b c"), &w("a c")), 1);
        assert_eq!(word_errors(&w("a b c"), &w("a b c d e")), 2);
        assert_eq!(word_errors(&[], &w("a b")), 2);
        let pairs = vec![
            ("the cat sat".to_string(), "the cat sat".to_string()),
            ("order 12".to_string(), "order one three".to_string()),
        ];
        let (errors, words, rate) = wer(&pairs);
        assert_eq!((errors, words), (1, 6));
        assert!((rate - 1.0 / 6.0).abs() < 1e-12);
    }
}
