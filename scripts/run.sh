#!/usr/bin/env bash
# Sets everything up, then runs the node on its embedded defaults in the
# foreground: `voice-edge serve` with SIP on udp:127.0.0.1:5060 (any number
# from loopback reaches the retail flow), metrics and health on
# http://127.0.0.1:8088, local models, and the local outcome spool as the
# store (no external services). Ctrl-C drains and exits.
#
# Call it from another terminal, e.g. with SIPp (Debian's sip-tester):
#   sipp -sn uac -m 1 -s 100 127.0.0.1:5060
# then read what the call left: voice-edge outcomes list
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --models default
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/voice-edge/target}"
exec "$CARGO_TARGET_DIR/release/voice-edge" serve "$@"
