#!/usr/bin/env bash
# Faults, as an operator and an officer meet them (docs/SECURITY.md "Faults"):
#   - a byte of the server's store changed on disk: `teduh-server store check`
#     names the damaged value, the server keeps serving and never hands it out,
#     its log and metrics say so;
#   - a damaged file structure: the server refuses to serve it and says what
#     to do;
#   - a row changed on a device: `teduh store check` names it, the device
#     leaves it out with a warning, and the next sync repairs it;
#   - a device whose disk is full (needs root to mount a small file system;
#     skipped otherwise): it still lists cases and shows its status, a new
#     edit is refused clearly and nothing saved is lost; once there is room,
#     it syncs.
set -uo pipefail
bin=${1:?usage: faults.sh BIN_DIR}
source "$(dirname "$0")/harness.bash"
# GET on the operations listener: the status code, then the body.
ops_get() {
  python3 - "http://127.0.0.1:$ops_port$1" 2>/dev/null <<'EOF'
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=5)
    print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
EOF
}
# One sample of the operations listener's /metrics.
metric() { ops_get /metrics | sed -n "s/^$1 //p"; }

code=$("$SERVER" init --data "$data" --unit "UPTD PPA Kota Dumai" --json | json .code) ||
  die "server init"
check "a new store checks intact" \
  '"$SERVER" store check --data "$data" >"$work/check.out" && grep -q "store intact" "$work/check.out"'
start_server 127.0.0.1:0
url="ws://127.0.0.1:$port/sync"
admin="$work/admin"
dev "$admin" "admin-passphrase-1" init --server "$url" --code "$code" >/dev/null || die "admin enrolls"
pcode=$("$SERVER" enroll --data "$data" --role pendamping --user ani --json | json .code) || die "enroll"
ocode=$("$SERVER" enroll --data "$data" --role office --user budi --json | json .code) || die "enroll"
pend="$work/ani"
office="$work/budi"
pend_id=$(dev "$pend" "ani-passphrase-1" init --server "$url" --code "$pcode" | json .device_id) || die "ani enrolls"
office_id=$(dev "$office" "budi-passphrase-1" init --server "$url" --code "$ocode" | json .device_id) || die "budi enrolls"
dev "$admin" "admin-passphrase-1" device approve "$pend_id" >/dev/null || die "approve ani"
dev "$admin" "admin-passphrase-1" device approve "$office_id" >/dev/null || die "approve budi"
dev "$pend" "ani-passphrase-1" sync >/dev/null || die "ani first sync: $(cat "$work/last.err")"
case_id=$(dev "$pend" "ani-passphrase-1" case new --set risk_level=tinggi --set violence_types=fisik \
  --set "chronology=Kronologi kejadian" | json .case_id) || die "case new: $(cat "$work/last.err")"
number=$(dev "$pend" "ani-passphrase-1" case list | jq -r ".cases[] | select(.case_id==\"$case_id\") | .case_number")
dev "$pend" "ani-passphrase-1" sync >/dev/null || die "ani sync: $(cat "$work/last.err")"

# --- a changed row on a device ---
check "a device's store checks intact" \
  '[ "$(dev "$pend" "ani-passphrase-1" store check | jq ".intact")" = true ]'
# A record row rewritten behind its checksum's back (row_sum answering zeros),
# as a flipped bit would change it.
python3 - "$pend/store.db" "$case_id" <<'EOF' || die "damage ani's record row"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.create_function("row_sum", -1, lambda *a: bytes(16), deterministic=True)
n = db.execute("UPDATE records SET unit_id = unit_id || 'x' WHERE record_id = ?",
               (bytes.fromhex(sys.argv[2]),)).rowcount
db.commit()
assert n == 1
EOF
dev "$pend" "ani-passphrase-1" store check >"$work/dcheck.out"
rc=$?
check "device store check exits 2 and names the damaged record" \
  '[ $rc -eq 2 ] && jq -e ".intact == false and .rows[0].table == \"records\" and .rows[0].record_id == \"$case_id\"" "$work/dcheck.out" >/dev/null'
check "the damaged case is left out of the list, with a warning naming it" \
  '[ "$(dev "$pend" "ani-passphrase-1" case list | jq ".cases | length")" = 0 ] && grep -q "$case_id" "$work/last.err"'
check "the next sync repairs it" \
  '[ "$(dev "$pend" "ani-passphrase-1" sync | jq ".store_damaged_rows")" = 1 ]'
check "and the case is back, intact" \
  '[ "$(dev "$pend" "ani-passphrase-1" case list | jq ".cases | length")" = 1 ] && [ "$(dev "$pend" "ani-passphrase-1" store check | jq ".intact")" = true ]'
stop_server

# --- a changed byte under a value ---
python3 - "$data/teduh-server.db" "$number" <<'EOF' || die "the case number is in the store file once"
import sys
path, needle = sys.argv[1], sys.argv[2].encode()
data = bytearray(open(path, "rb").read())
at = data.find(needle)
assert at >= 0 and data.find(needle, at + 1) < 0, (needle, at)
data[at + len(needle) // 2] ^= 1
open(path, "wb").write(data)
EOF
"$SERVER" store check --data "$data" >"$work/check.out" 2>"$work/check.err"
rc=$?
check "store check exits 2 on a damaged value" '[ $rc -eq 2 ]'
check "store check names the record and field" \
  'grep -q "record $case_id, field 1: its current value" "$work/check.out"'
check "store check says what to do" 'grep -q "never served" "$work/check.err"'
check "store check --json lists the damaged row" \
  '{ "$SERVER" store check --data "$data" --json || true; } | jq -e ".intact == false and .damaged_rows[0].record_id == \"$case_id\" and .damaged_rows[0].field == 1" >/dev/null'
start_server "127.0.0.1:$port"  # where the devices know it
dev "$office" "budi-passphrase-1" sync >/dev/null || bad "the office syncs beside the damage: $(cat "$work/last.err")"
dev "$office" "budi-passphrase-1" case show "$case_id" >"$work/show.json" || bad "the office reads the case"
check "the office gets the case without the damaged value" \
  '! grep -qF "$number" "$work/show.json"'
check "the log names the damaged row" \
  'for _ in $(seq 1 50); do grep -q "store_damaged.*record=$case_id" "$work/server.log" && break; sleep 0.1; done; grep -q "store_damaged.*record=$case_id" "$work/server.log"'
# The background check at start has finished: its findings are the gauge.
for _ in $(seq 1 100); do
  [ "$(metric teduh_store_checks_total)" -ge 1 ] 2>/dev/null && break
  sleep 0.1
done
damage=$(metric teduh_store_check_damage)
check "the metrics count it (the check found $damage)" '[ "$damage" = 1 ]'
check "a damaged row does not take the server out of service" \
  '[ "$(ops_get /readyz | head -1)" = 200 ]'
stop_server

# --- a damaged file structure ---
cp -a "$data" "$work/structure"
python3 - "$work/structure/teduh-server.db" <<'EOF' || die "damage a page"
import sqlite3, sys
path = sys.argv[1]
db = sqlite3.connect(path)
page = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'fields_by_seq'").fetchone()[0]
size = db.execute("PRAGMA page_size").fetchone()[0]
db.close()
data = bytearray(open(path, "rb").read())
data[(page - 1) * size] = 0xFF
open(path, "wb").write(data)
EOF
"$SERVER" serve --data "$work/structure" --listen 127.0.0.1:0 --ops-listen off \
  >/dev/null 2>"$work/structure.err"
rc=$?
check "a server refuses a store whose file is damaged" '[ $rc -ne 0 ]'
check "and says what to do" 'grep -q "store check" "$work/structure.err" && grep -q "backup" "$work/structure.err"'
"$SERVER" store check --data "$work/structure" >"$work/check.out" 2>&1
rc=$?
check "store check finds the damaged structure" '[ $rc -eq 2 ] && grep -q "damaged file structure" "$work/check.out"'

# --- a device's full disk ---
disk="$work/disk"
mkdir -p "$disk"
if [ "$(id -u)" -eq 0 ] && mount -t tmpfs -o size=16m tmpfs "$disk" 2>/dev/null; then
  trap 'umount -l "$disk" 2>/dev/null; cleanup' EXIT
  start_server "127.0.0.1:$port"
  fcode=$("$SERVER" enroll --data "$data" --role pendamping --user citra --json | json .code) || die "enroll"
  field="$disk/citra"
  field_id=$(dev "$field" "citra-passphrase-1" init --server "$url" --code "$fcode" | json .device_id) ||
    die "citra enrolls: $(cat "$work/last.err")"
  dev "$admin" "admin-passphrase-1" device approve "$field_id" >/dev/null || die "approve citra"
  dev "$field" "citra-passphrase-1" sync >/dev/null || die "citra sync"
  mine=$(dev "$field" "citra-passphrase-1" case new --set risk_level=sedang | json .case_id) || die "case new"
  dev "$field" "citra-passphrase-1" note add "$mine" --text "Kunjungan pertama" >/dev/null || die "note add"
  # Something else fills the disk to the last byte.
  dd if=/dev/zero of="$disk/filler" bs=64k 2>/dev/null
  dd if=/dev/zero of="$disk/filler2" bs=1k 2>/dev/null
  check "at 100 %, the device still lists its cases" \
    '[ "$(dev "$field" "citra-passphrase-1" case list | jq ".cases | length")" = 1 ]'
  check "and shows its status" \
    '[ "$(dev "$field" "citra-passphrase-1" status | jq ".pending")" -gt 0 ]'
  # Opening a case records who viewed it (an access record): with no room for
  # that trace, the case is not shown, and the officer is told why.
  check "opening a case, which must leave its access record, is refused clearly" \
    '! dev "$field" "citra-passphrase-1" case show "$mine" >/dev/null && grep -q "no space left" "$work/last.err"'
  dev "$field" "citra-passphrase-1" note add "$mine" --text "Kunjungan kedua" >/dev/null
  rc=$?
  check "a new edit is refused, saying the disk is full" '[ $rc -ne 0 ] && grep -q "no space left" "$work/last.err"'
  rm -f "$disk/filler" "$disk/filler2"
  check "once there is room it syncs what it kept" 'dev "$field" "citra-passphrase-1" sync >/dev/null'
  check "and nothing saved was lost" \
    '[ "$(dev "$field" "citra-passphrase-1" status | jq ".pending")" = 0 ] && [ "$(dev "$field" "citra-passphrase-1" case list | jq ".cases | length")" = 1 ]'
  stop_server
  umount -l "$disk"
  trap cleanup EXIT
else
  echo "skip - a device's full disk (needs root and tmpfs)"
fi

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
