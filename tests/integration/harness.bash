# The harness the scenario scripts share (sourced, not run: CTest runs *.sh).
# The caller sets `bin` (the folder of the programs) first. It makes a work
# folder, removed at exit (kept with TEDUH_KEEP=1), and gives ok/bad/check/die,
# start_server LISTEN / stop_server (one teduh-server on $data), dev HOME
# PASSPHRASE ARGS... (teduh --json as one device) and json FILTER.
set -uo pipefail
TEDUH="$bin/teduh"
SERVER="$bin/teduh-server"
work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  [ -n "${TEDUH_KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
export TEDUH_KDF=interactive
# Messages are checked in English; the Indonesian ones where a check asks for
# them with --lang id (both programs default to the locale, else Indonesian).
export LANGUAGE=en
fails=0
passes=0
ok() { passes=$((passes + 1)); echo "ok - $1"; }
bad() { fails=$((fails + 1)); echo "FAIL - $1" >&2; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }
die() { echo "FAIL - $1" >&2; echo "$passes passed, $((fails + 1)) failed"; exit 1; }

data="$work/server"
start_server() {
  local listen=$1
  "$SERVER" serve --data "$data" --listen "$listen" --ops-listen 127.0.0.1:0 \
    >"$work/serve.out" 2>>"$work/server.log" &
  server_pid=$!
  for _ in $(seq 1 100); do
    grep -q '^listening on ' "$work/serve.out" 2>/dev/null && break
    sleep 0.1
  done
  grep -q '^listening on ' "$work/serve.out" || die "server did not start: $(cat "$work/server.log")"
  port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$work/serve.out" | head -1)
  ops_port=$(sed -n 's/^operations on .*:\([0-9]*\)$/\1/p' "$work/serve.out" | head -1)
}
stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid"
  local rc=$?
  server_pid=""
  [ "$rc" -eq 0 ] || bad "server exits 0 on SIGTERM (got $rc)"
}
# teduh as one device: dev HOME PASSPHRASE args...
dev() {
  local home=$1 pass=$2
  shift 2
  TEDUH_PASSPHRASE="$pass" "$TEDUH" --home "$home" --json "$@" 2>"$work/last.err"
}
json() { jq -er "$1"; }
