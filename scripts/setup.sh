#!/usr/bin/env bash
# Sets up a machine to build and run voice-edge: system packages, the release
# build, and the models of a set. Idempotent; quick when everything is there.
#
#   scripts/setup.sh [--models default|test|all] [--tests]
#
# --tests also installs what the test suite needs (flite, sox).
# Cargo's target dir lives outside the clone (CARGO_TARGET_DIR, default
# ~/.cache/voice-edge/target) so fresh clones do not rebuild ggml.
set -euo pipefail
cd "$(dirname "$0")/.."

models_set=default
with_tests=0
while [ $# -gt 0 ]; do
  case "$1" in
    --models) models_set="$2"; shift 2 ;;
    --tests) with_tests=1; shift ;;
    *) echo "setup.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# System packages: build (cmake, libclang for bindgen, ALSA headers for the
# microphone and speaker of `voice-edge talk`), TTS (espeak-ng),
# model fetching (pip), tests (flite and sox make and convert test speech,
# nats-server is the real collector the shipping tests start, sip-tester is
# SIPp and baresip the second SIP user agent the trunk tests call with,
# systemd gives systemd-analyze for the unit test, util-linux unshare for
# the journald test, chromium the real browser of the widget test).
pkgs=(cmake libclang-dev clang pkg-config build-essential libasound2-dev espeak-ng libespeak-ng-dev python3-pip)
[ "$with_tests" = 1 ] && pkgs+=(flite sox nats-server sip-tester baresip systemd util-linux chromium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m pip --version >/dev/null 2>&1 || { echo "setup.sh: python3 -m pip is missing (apt-get install python3-pip)" >&2; exit 1; }
command -v cargo >/dev/null || { echo "setup.sh: cargo is missing: install a Rust toolchain (rustup)" >&2; exit 1; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/voice-edge/target}"
say "building voice-edge (release; target dir $CARGO_TARGET_DIR)"
cargo build --release --locked --quiet

say "models: set '$models_set'"
"$CARGO_TARGET_DIR/release/voice-edge" models fetch --set "$models_set"
