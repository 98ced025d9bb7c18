#!/usr/bin/env bash
# Sets everything up and runs the whole test suite: system packages, the
# release build, the test models, the spoken test corpora, llama.cpp's
# llama-server (the stand-in central cluster), then `cargo test --release`.
# Idempotent; quick when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --models test --tests
bash scripts/test-data.sh
bash scripts/llama-server.sh >/dev/null
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/voice-edge/target}"
cargo test --release --locked -- --nocapture "$@"
