#!/usr/bin/env bash
# Teduh set-up: installs what is missing (Debian 12 packages), builds, then
#   serve  — initialises a server store in ./data if there is none and serves on 127.0.0.1
#   test   — runs every test
# Idempotent: a second run installs nothing and rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
case "$mode" in
  serve | test) ;;
  *) echo "usage: tools/setup.sh serve|test" >&2; exit 2 ;;
esac

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libboost1.81-dev protobuf-compiler libprotobuf-dev libsodium-dev libgfshare-dev libsqlite3-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev nlohmann-json3-dev libfmt-dev
  libboost-locale1.81-dev gettext
  openssl sqlite3 jq python3 valgrind
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

jobs=${TEDUH_JOBS:-2}
# ccache keys on paths relative to the checkout, so another clone of the same
# sources (a CI run) reuses what an earlier build compiled.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >&2
fi
cmake --build build -j "$jobs" >&2

if [ "$mode" = test ]; then
  ctest --test-dir build --output-on-failure -j "$jobs" --timeout 900
  # The crypto, core and server tests (and 60 seeds of the convergence
  # simulation) again under AddressSanitizer and UBSan: any report fails.
  if [ ! -f build-san/build.ninja ]; then
    cmake -S . -B build-san -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" \
      -DTEDUH_SANITIZE=ON >&2
  fi
  cmake --build build-san -j "$jobs" --target crypto_test core_test server_test >&2
  exec env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-san --output-on-failure -j "$jobs" --timeout 1800 \
    -R '^(crypto_test|core_test|server_test|convergence_simulation)$'
fi

data=${TEDUH_DATA:-data}
listen=${TEDUH_LISTEN:-127.0.0.1:8765}
unit=${TEDUH_UNIT:-UPTD PPA Kota Dumai}
if [ ! -f "$data/teduh-server.db" ]; then
  ./build/tools/teduh-server init --data "$data" --unit "$unit"
else
  echo "store $data already initialised; new device codes: ./build/tools/teduh-server enroll --data $data --role ROLE --user NAME" >&2
fi
exec ./build/tools/teduh-server serve --data "$data" --listen "$listen"
