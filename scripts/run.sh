#!/usr/bin/env bash
# Sets everything up, then runs the node on its embedded defaults: a caller
# question is spoken, heard, understood and answered offline, and the reply is
# written to reply.wav. (The SIP/WebRTC daemon, `voice-edge serve`, lands with
# its own capability; this is the engine every transport runs.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --models default
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/voice-edge/target}"
bin="$CARGO_TARGET_DIR/release/voice-edge"
question="${1:-Hi, I would like to know where my order is. The number is four five six, seven eight nine.}"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
"$bin" say "$question" --out "$tmp/question.wav"
echo "caller: $question" >&2
"$bin" turn --wav "$tmp/question.wav" --out reply.wav
echo "agent's spoken reply: $(pwd)/reply.wav" >&2
