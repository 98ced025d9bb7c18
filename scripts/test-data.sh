#!/usr/bin/env bash
# Builds the spoken test corpora used by the integration tests.
#
#   $ROOT/utterances/<id>.wav   one synthetic caller utterance per row of
#                               tests/data/utterances.tsv (intent tests)
#   $ROOT/wer/<id>.wav          real recorded speech, 16 kHz mono s16, one per
#   $ROOT/wer/manifest.tsv      row of tests/data/wer_subset.tsv (ASR WER tests);
#                               columns id, wav (relative to the manifest), reference
#
# ROOT = ${VOICE_EDGE_TESTDATA:-${XDG_CACHE_HOME:-$HOME/.cache}/voice-edge/testdata}
# (tests/common/scoring.rs resolves the same path).
#
# Idempotent: every utterance carries a stamp holding a hash of its tsv row and
# output format, so only changed rows are re-synthesised; the WER corpus is
# rebuilt only when wer_subset.tsv (or this script's GEN) changes. A run with
# nothing to do takes well under a second.
#
# Utterance audio formats are deliberately mixed (chosen from the number in the
# row id, so adding rows never changes existing ones) to exercise resampling:
#   n % 6 == 2  -> sox to 8 kHz mono s16 (telephone band) for flite voices;
#                  48 kHz mono s16 for espeak voices, whose formant speech
#                  band-limited to 8 kHz is beyond whisper tiny.en (measured:
#                  most such rows came back as unrelated words)
#   n % 6 == 5  -> sox to 44.1 kHz stereo s16
#   otherwise   -> the synthesiser's native output
#                  (espeak-ng: 22,050 Hz mono; flite: 16 kHz mono, kal: 8 kHz)
# Voice column syntax: espeak:<espeak-ng voice>[@<words per minute>] or
# flite:<flite voice> (see `espeak-ng --voices=en`, `flite -lv`). The espeak
# voices run at 150 wpm: at the default 175 whisper tiny.en mishears them
# noticeably more, and the female +f3/+f4 variants were the least intelligible.
#
# WER sources (Debian packages fetched with `apt-get download` and unpacked
# with `dpkg-deb -x` into a temporary directory; nothing is installed):
#   asterisk-core-sounds-en-wav  Allison Smith's recorded telephony prompts,
#                                8 kHz (CC-BY-SA-3.0); reference texts come from
#                                core-sounds-en.txt.gz in asterisk-core-sounds-en
#                                and are checked against it on every rebuild.
#   alsa-utils                   /usr/share/sounds/alsa/<Channel>.wav, a recorded
#                                voice naming the speaker ("Front Left", 48 kHz).
# Not used: the pytest-audioeval samples are Kokoro TTS output (the upstream
# scripts/generate_samples.py renders them with voice af_heart), not recordings.
set -euo pipefail

GEN=3 # bump to force every output to be rebuilt

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT="${VOICE_EDGE_TESTDATA:-${XDG_CACHE_HOME:-$HOME/.cache}/voice-edge/testdata}"
UTT_TSV="$REPO/tests/data/utterances.tsv"
WER_TSV="$REPO/tests/data/wer_subset.tsv"
UTT_DIR="$ROOT/utterances"
WER_DIR="$ROOT/wer"
DEB_DIR="$ROOT/downloads"

TMP_DIRS=()
cleanup() { local d; for d in "${TMP_DIRS[@]}"; do rm -rf "$d"; done; }
trap cleanup EXIT

log() { printf '[test-data] %s\n' "$*"; }
die() { printf '[test-data] error: %s\n' "$*" >&2; exit 1; }

[ -f "$UTT_TSV" ] || die "missing $UTT_TSV"
[ -f "$WER_TSV" ] || die "missing $WER_TSV"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root (or sudo) to run: $*"
    fi
}

# --- a. tools ----------------------------------------------------------------
ensure_tools() {
    local missing=() cmd pkg
    for pair in espeak-ng:espeak-ng flite:flite sox:sox sha256sum:coreutils \
                dpkg-deb:dpkg zcat:gzip apt-get:apt; do
        cmd=${pair%%:*} pkg=${pair#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]} (apt-get)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

sha() { sha256sum | cut -c1-64; }

# --- b. synthetic utterances -------------------------------------------------
utt_format() { # row id, voice -> FMT=native | 8k | 48k | 44k (no subshell: runs per row)
    local digits=${1//[^0-9]/}
    local n=$((10#${digits:-0}))
    case $((n % 6)) in
        2) if [[ $2 == espeak:* ]]; then FMT=48k; else FMT=8k; fi ;;
        5) FMT=44k ;;
        *) FMT=native ;;
    esac
}

synth() { # voice text out.wav
    local voice=$1 text=$2 out=$3 engine spec rate=""
    engine=${voice%%:*} spec=${voice#*:}
    case $engine in
        espeak)
            if [[ $spec == *@* ]]; then rate=${spec#*@} spec=${spec%@*}; fi
            printf '%s\n' "$text" | espeak-ng -v "$spec" ${rate:+-s "$rate"} --stdin -w "$out"
            ;;
        flite)
            flite -voice "$spec" -t "$text" -o "$out"
            ;;
        *) die "unknown voice engine in '$voice' (want espeak:... or flite:...)" ;;
    esac
}

check_audio() { # wav id -> dies unless it is plausible speech
    local wav=$1 id=$2 len rms
    len=$(sox --i -D "$wav")
    rms=$(sox "$wav" -n stat 2>&1 | awk '/RMS +amplitude/ {print $3}')
    awk -v l="$len" -v r="$rms" 'BEGIN { exit !(l >= 0.4 && l <= 20 && r >= 0.01) }' \
        || die "$id: implausible audio (duration ${len}s, RMS ${rms}) in $wav"
}

build_utterances() {
    mkdir -p "$UTT_DIR/.stamps"
    local id intent voice text extra fmt stamp want tmp
    local total=0 made=0 line=0
    declare -A seen=()
    while IFS=$'\t' read -r id intent voice text extra || [ -n "$id" ]; do
        line=$((line + 1))
        [ "$line" = 1 ] && continue # header
        [ -z "$id" ] && continue
        if [ -z "$text" ] || [ -n "${extra:-}" ]; then
            die "utterances.tsv line $line: want 4 tab-separated columns"
        fi
        [ -z "${seen[$id]:-}" ] || die "utterances.tsv: duplicate id $id"
        seen[$id]=1
        total=$((total + 1))
        utt_format "$id" "$voice"; fmt=$FMT
        want=$(printf 'gen%s\t%s\t%s\t%s\t%s\t%s' "$GEN" "$fmt" "$id" "$intent" "$voice" "$text" | sha)
        stamp="$UTT_DIR/.stamps/$id"
        if [ -s "$UTT_DIR/$id.wav" ] && [ -f "$stamp" ] && [ "$(<"$stamp")" = "$want" ]; then
            continue
        fi
        tmp="$UTT_DIR/.tmp-$id"
        synth "$voice" "$text" "$tmp.raw.wav"
        case $fmt in
            native) mv "$tmp.raw.wav" "$tmp.wav" ;;
            8k)  sox -D -G "$tmp.raw.wav" -r 8000 -c 1 -b 16 "$tmp.wav"; rm -f "$tmp.raw.wav" ;;
            48k) sox -D -G "$tmp.raw.wav" -r 48000 -c 1 -b 16 "$tmp.wav"; rm -f "$tmp.raw.wav" ;;
            44k) sox -D -G "$tmp.raw.wav" -r 44100 -c 2 -b 16 "$tmp.wav"; rm -f "$tmp.raw.wav" ;;
        esac
        check_audio "$tmp.wav" "$id"
        mv "$tmp.wav" "$UTT_DIR/$id.wav"
        printf '%s' "$want" >"$stamp"
        log "synthesised $id ($voice, $fmt, $(sox --i -r "$UTT_DIR/$id.wav") Hz x$(sox --i -c "$UTT_DIR/$id.wav"), $(sox --i -D "$UTT_DIR/$id.wav")s): $text"
        made=$((made + 1))
    done <"$UTT_TSV"
    # drop outputs of rows that no longer exist
    local f base
    for f in "$UTT_DIR"/*.wav; do
        [ -e "$f" ] || continue
        base=$(basename "$f" .wav)
        if [ -z "${seen[$base]:-}" ]; then
            log "removing stale $f"
            rm -f "$f" "$UTT_DIR/.stamps/$base"
        fi
    done
    UTT_TOTAL=$total UTT_MADE=$made
}

# --- c. WER corpus of real recordings ------------------------------------------
fetch_debs() { # package... -> $DEB_DIR/<pkg>_*.deb (cached)
    mkdir -p "$DEB_DIR"
    local need=() p
    for p in "$@"; do
        compgen -G "$DEB_DIR/${p}_*.deb" >/dev/null || need+=("$p")
    done
    [ ${#need[@]} -eq 0 ] && return 0
    local apt=(apt-get -q)
    # apt drops privileges to _apt for downloads, which cannot write to a
    # root-owned cache directory; download as the invoking user instead.
    [ "$(id -u)" = 0 ] && apt+=(-o APT::Sandbox::User=root)
    log "downloading ${need[*]} (apt-get download)"
    if ! (cd "$DEB_DIR" && "${apt[@]}" download "${need[@]}" >/dev/null 2>&1); then
        log "package lists look stale; running apt-get update"
        as_root apt-get update -qq
        (cd "$DEB_DIR" && "${apt[@]}" download "${need[@]}" >/dev/null) \
            || die "apt-get download ${need[*]} failed"
    fi
}

build_wer() {
    local want
    want=$( { printf 'gen%s\n' "$GEN"; cat "$WER_TSV"; } | sha)
    if [ -f "$WER_DIR/.stamp" ] && [ "$(<"$WER_DIR/.stamp")" = "$want" ] && [ -s "$WER_DIR/manifest.tsv" ]; then
        local ok=1 id wav ref
        while IFS=$'\t' read -r id wav ref; do
            [ "$id" = id ] && continue
            [ -s "$WER_DIR/$wav" ] || { ok=0; break; }
        done <"$WER_DIR/manifest.tsv"
        if [ $ok = 1 ]; then
            WER_TOTAL=$(($(wc -l <"$WER_DIR/manifest.tsv") - 1)) WER_MADE=0
            return 0
        fi
    fi

    log "building WER corpus in $WER_DIR"
    local pkgs
    pkgs=$(awk -F'\t' 'NR > 1 && NF >= 3 { split($2, a, ":"); print a[1] }' "$WER_TSV" | sort -u)
    # shellcheck disable=SC2086
    fetch_debs $pkgs asterisk-core-sounds-en

    local tmp
    tmp=$(mktemp -d)
    TMP_DIRS+=("$tmp")
    local p deb
    for p in $pkgs asterisk-core-sounds-en; do
        deb=$(compgen -G "$DEB_DIR/${p}_*.deb" | sort | tail -n1)
        log "unpacking $(basename "$deb")"
        dpkg-deb -x "$deb" "$tmp/x"
    done

    # Reference transcripts shipped with the prompts, as "<prompt>\t<text>".
    local transcripts="$tmp/x/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
    zcat "$transcripts" | awk '/^[^;].*: / { i = index($0, ": "); t = substr($0, i + 2);
        gsub(/[ \t]+/, " ", t); sub(/ $/, "", t); print substr($0, 1, i - 1) "\t" t }' >"$tmp/transcripts.tsv"

    mkdir -p "$WER_DIR"
    rm -f "$WER_DIR"/*.wav
    local id source ref extra pkg path src line=0 n=0 prompt known
    printf 'id\twav\treference\n' >"$WER_DIR/manifest.tsv.tmp"
    while IFS=$'\t' read -r id source ref extra || [ -n "$id" ]; do
        line=$((line + 1))
        [ "$line" = 1 ] && continue
        [ -z "$id" ] && continue
        if [ -z "$ref" ] || [ -n "${extra:-}" ]; then
            die "wer_subset.tsv line $line: want 3 tab-separated columns"
        fi
        pkg=${source%%:*} path=${source#*:}
        src="$tmp/x/$path"
        [ -f "$src" ] || die "$id: $path not found in $pkg"
        if [ "$pkg" = asterisk-core-sounds-en-wav ]; then
            prompt=${path#usr/share/asterisk/sounds/en_US_f_Allison/}
            prompt=${prompt%.wav}
            known=$(awk -F'\t' -v k="$prompt" '$1 == k { print $2; exit }' "$tmp/transcripts.tsv")
            [ "$known" = "$ref" ] || log "warning: $id reference differs from package transcript: '$known'"
        fi
        sox -D "$src" -r 16000 -c 1 -b 16 "$WER_DIR/$id.wav"
        printf '%s\t%s\t%s\n' "$id" "$id.wav" "$ref" >>"$WER_DIR/manifest.tsv.tmp"
        n=$((n + 1))
    done <"$WER_TSV"
    mv "$WER_DIR/manifest.tsv.tmp" "$WER_DIR/manifest.tsv"
    for deb in "$DEB_DIR"/*.deb; do basename "$deb"; done >"$WER_DIR/SOURCES.txt"
    printf '%s' "$want" >"$WER_DIR/.stamp"
    rm -rf "$tmp"
    log "converted $n recordings to 16 kHz mono s16; manifest $WER_DIR/manifest.tsv"
    WER_TOTAL=$n WER_MADE=$n
}

# --- main ----------------------------------------------------------------------
start=$(date +%s.%N)
log "output root: $ROOT"
mkdir -p "$ROOT"
ensure_tools
build_utterances
build_wer
secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
size=$(du -sh --exclude=downloads "$ROOT" | cut -f1)
log "done: $UTT_TOTAL utterances ($UTT_MADE synthesised), $WER_TOTAL WER recordings ($WER_MADE converted), $size in $ROOT, ${secs}s"
