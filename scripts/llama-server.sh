#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` (CPU only, only that target) for the
# cluster integration tests (tests/cluster.rs), which start it on loopback as
# a stand-in for the central reasoning cluster.
#
#   scripts/llama-server.sh          # build if needed, print the binary's path
#
# Installs to ~/.cache/voice-edge/llama-server/bin/llama-server. Idempotent:
# a stamp records the source and flags it was built from; when they match the
# script prints the path and exits at once.
#
# Source. The llama.cpp that the llama-cpp-sys-2 0.1.161 crate vendors is
# used when it contains the server (tools/server/CMakeLists.txt). The crate
# as published strips the tools (it ships only the library), so otherwise the
# source comes from the llama-cpp-python sdist (pinned version and SHA-256)
# fetched with pip, which vendors a complete llama.cpp tree. That llama.cpp
# is a different revision than the crate's: fine for the tests, which only
# need an OpenAI-compatible chat completions server, not the same kernels.
set -euo pipefail
cd "$(dirname "$0")/.."

CRATE=llama-cpp-sys-2-0.1.161
SDIST_NAME=llama-cpp-python
SDIST_VERSION=0.3.36
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
PREFIX="${VOICE_EDGE_CACHE:-$HOME/.cache/voice-edge}/llama-server"
BIN="$PREFIX/bin/llama-server"
JOBS="${JOBS:-$(nproc)}"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'llama-server.sh: %s\n' "$*" >&2; exit 1; }

# Tools first, so that a missing one is named before any work starts.
command -v cmake >/dev/null 2>&1 || die "cmake is missing (apt-get install cmake)"
CXX_BIN="${CXX:-}"
if [ -z "$CXX_BIN" ]; then
  for c in c++ g++ clang++; do command -v "$c" >/dev/null 2>&1 && { CXX_BIN="$c"; break; }; done
fi
[ -n "$CXX_BIN" ] && command -v "$CXX_BIN" >/dev/null 2>&1 || die "no C++ compiler found (c++, g++ or clang++; apt-get install build-essential)"
CC_BIN="${CC:-}"
if [ -z "$CC_BIN" ]; then
  for c in cc gcc clang; do command -v "$c" >/dev/null 2>&1 && { CC_BIN="$c"; break; }; done
fi
[ -n "$CC_BIN" ] && command -v "$CC_BIN" >/dev/null 2>&1 || die "no C compiler found (cc, gcc or clang; apt-get install build-essential)"
command -v make >/dev/null 2>&1 || command -v ninja >/dev/null 2>&1 || die "neither make nor ninja is installed (apt-get install make)"

# The crate's vendored source (cargo fetch only downloads; it builds nothing).
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
find_crate() { ls -d "$cargo_home"/registry/src/*/"$CRATE"/llama.cpp 2>/dev/null | head -n 1; }
crate_src="$(find_crate)"
if [ -z "$crate_src" ]; then
  command -v cargo >/dev/null 2>&1 || die "cargo is missing and $CRATE is not in $cargo_home/registry"
  say "fetching crate sources (cargo fetch)"
  cargo fetch --quiet
  crate_src="$(find_crate)"
  [ -n "$crate_src" ] || die "$CRATE not found under $cargo_home/registry/src after cargo fetch"
fi

if [ -f "$crate_src/tools/server/CMakeLists.txt" ]; then
  src="$crate_src"
  source_id="$CRATE"
else
  # The crate's copy has no server: use the pinned sdist's complete tree.
  tarball="$PREFIX/src/${SDIST_NAME//-/_}-$SDIST_VERSION.tar.gz"
  if [ ! -f "$tarball" ] || ! echo "$SDIST_SHA256  $tarball" | sha256sum --check --status; then
    python3 -m pip --version >/dev/null 2>&1 || die "$CRATE ships no server source, and python3 -m pip (needed to fetch $SDIST_NAME $SDIST_VERSION's llama.cpp) is missing"
    say "$CRATE ships no tools/server; fetching the llama.cpp tree of $SDIST_NAME $SDIST_VERSION with pip (once)"
    mkdir -p "$PREFIX/src"
    dl="$(mktemp -d)"
    trap 'rm -rf "$dl"' EXIT
    python3 -m pip download --quiet --no-deps --no-binary :all: -d "$dl" "$SDIST_NAME==$SDIST_VERSION" \
      || die "pip could not download $SDIST_NAME==$SDIST_VERSION"
    found="$(ls "$dl"/*.tar.gz | head -n 1)"
    echo "$SDIST_SHA256  $found" | sha256sum --check --status || die "$found does not have the pinned SHA-256 $SDIST_SHA256"
    mv "$found" "$tarball"
  fi
  unpacked="$PREFIX/src/$SDIST_NAME-$SDIST_VERSION"
  if [ ! -f "$unpacked/.complete" ]; then
    rm -rf "$unpacked"
    mkdir -p "$unpacked"
    tar -xzf "$tarball" -C "$unpacked" --strip-components=1 "${SDIST_NAME//-/_}-$SDIST_VERSION/vendor/llama.cpp"
    touch "$unpacked/.complete"
  fi
  src="$unpacked/vendor/llama.cpp"
  source_id="$SDIST_NAME-$SDIST_VERSION sha256:$SDIST_SHA256"
fi

flags=(
  -DCMAKE_BUILD_TYPE=Release
  -DBUILD_SHARED_LIBS=OFF
  -DLLAMA_CURL=OFF
  -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_SERVER=ON
  -DLLAMA_BUILD_TOOLS=ON
  -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_BUILD_UI=OFF
  -DLLAMA_USE_PREBUILT_UI=OFF
  -DGGML_CUDA=OFF
  -DGGML_VULKAN=OFF
  -DGGML_METAL=OFF
  -DGGML_NATIVE=ON
)
stamp="$source_id | ${flags[*]}"
if [ -x "$BIN" ] && [ -f "$PREFIX/stamp" ] && [ "$(cat "$PREFIX/stamp")" = "$stamp" ]; then
  echo "$BIN"
  exit 0
fi

build="$PREFIX/build"
say "building llama-server from $src (CPU only, $JOBS jobs; takes a while)"
CC="$CC_BIN" CXX="$CXX_BIN" nice cmake -S "$src" -B "$build" "${flags[@]}" >"$PREFIX/cmake-configure.log" 2>&1 \
  || { tail -n 30 "$PREFIX/cmake-configure.log" >&2; die "cmake configure failed (log: $PREFIX/cmake-configure.log)"; }
nice cmake --build "$build" --target llama-server -j "$JOBS" >"$PREFIX/cmake-build.log" 2>&1 \
  || { tail -n 30 "$PREFIX/cmake-build.log" >&2; die "build failed (log: $PREFIX/cmake-build.log)"; }
mkdir -p "$PREFIX/bin"
install -m 0755 "$build/bin/llama-server" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
echo "$stamp" >"$PREFIX/stamp"
say "installed $BIN"
echo "$BIN"
