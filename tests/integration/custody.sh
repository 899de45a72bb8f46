#!/usr/bin/env bash
# Custody of the unit root key through the programs, over real WebSocket on
# loopback (docs/SECURITY.md, "Custody of the unit root key"):
#   a unit with an admin and an office device -> a second admin device is
#   approved with the root key -> the first admin makes a recovery kit ->
#   both admin laptops are lost -> two of the three shares make a new admin
#   device, which approves a new office device that reads the old case.
#   Too few, mistyped and foreign shares save nothing.
set -uo pipefail
bin=${1:?usage: custody.sh BIN_DIR}
source "$(dirname "$0")/harness.bash"

enroll_code() { "$SERVER" enroll --data "$data" --role "$1" --user "$2" --json | json .code; }

code=$("$SERVER" init --data "$data" --unit "UPTD PPA Kota Dumai" --json | json .code) || die "init"
start_server 127.0.0.1:0
url="ws://127.0.0.1:$port/sync"
admin="$work/admin"
dev "$admin" admin-passphrase-1 init --server "$url" --code "$code" >/dev/null || die "admin enrolls: $(cat "$work/last.err")"
c=$(enroll_code office budi) || die "enroll budi"
id=$(dev "$work/budi" budi-passphrase-1 init --server "$url" --code "$c" | json .device_id) || die "budi enrolls"
dev "$admin" admin-passphrase-1 device approve "$id" >/dev/null || die "approve budi: $(cat "$work/last.err")"
dev "$work/budi" budi-passphrase-1 sync >/dev/null || die "budi syncs"
case_id=$(dev "$work/budi" budi-passphrase-1 case new --set risk_level=tinggi --set "chronology=Korban diancam" | json .case_id) || die "case"
dev "$work/budi" budi-passphrase-1 sync >/dev/null || die "budi pushes"
ok "a unit with an admin and an office device and a case"

# A second admin device.
c=$(enroll_code admin sari) || die "enroll sari"
sari=$(dev "$work/sari" sari-passphrase-1 init --server "$url" --code "$c" | json .device_id) || die "sari enrolls"
check "an admin device is not approved without --admin" \
  '! dev "$admin" admin-passphrase-1 device approve "$sari" >/dev/null && grep -q "admin device" "$work/last.err"'
sari_fp=$(dev "$work/sari" sari-passphrase-1 status | json .fingerprint) || die "sari status: $(cat "$work/last.err")"
check "--admin is refused for an office device" \
  '! dev "$admin" admin-passphrase-1 device approve "$id" --admin --fingerprint "$sari_fp" >/dev/null'
check "--admin needs the device's fingerprint" \
  '! dev "$admin" admin-passphrase-1 device approve "$sari" --admin >/dev/null && grep -q fingerprint "$work/last.err"'
check "a wrong fingerprint is refused" \
  '! dev "$admin" admin-passphrase-1 device approve "$sari" --admin --fingerprint 00000000 >/dev/null && grep -q "does not match" "$work/last.err"'
check "approved with --admin, it is handed the root key" \
  '[ "$(dev "$admin" admin-passphrase-1 device approve "$sari" --admin --fingerprint "$sari_fp" | jq -r .root_key)" = handed ]'
dev "$work/sari" sari-passphrase-1 sync >/dev/null || die "sari syncs: $(cat "$work/last.err")"
check "after its sync it holds it" \
  '[ "$(dev "$admin" admin-passphrase-1 device list | jq -r --arg id "$sari" ".devices[] | select(.device_id == \$id) | .root_key")" = held ]'
check "its status says so" \
  '[ "$(dev "$work/sari" sari-passphrase-1 status | jq -r .holds_unit_root_key)" = true ]'

# The recovery kit.
mkdir "$work/taken"
check "the kit's pages need a new folder" \
  '! dev "$admin" admin-passphrase-1 key recovery-kit --shares 3 --threshold 2 --pages "$work/taken" >/dev/null'
dev "$admin" admin-passphrase-1 key recovery-kit --shares 3 --threshold 2 --pages "$work/kit" >"$work/kit.json" ||
  die "recovery kit: $(cat "$work/last.err")"
check "three shares, any two rebuild the key" \
  '[ "$(jq -r ".shares | length" "$work/kit.json")" = 3 ] && [ "$(jq -r .threshold "$work/kit.json")" = 2 ]'
check "the class keys are kept for recovery" '[ "$(jq -r .escrowed "$work/kit.json")" -ge 2 ]'
share() { jq -r ".shares[$1]" "$work/kit.json"; }
check "one printable page per share, readable by the admin only" \
  '[ "$(ls "$work/kit" | wc -l)" = 3 ] && grep -q "TRS1 $(share 1 | cut -d- -f2-5 | tr - " ")" "$work/kit/share-2.html" && [ "$(stat -c %a "$work/kit/share-2.html")" = 600 ] && ! grep -qi "<script" "$work/kit/share-1.html"'
"$SERVER" audit show --data "$data" --last 50 --json >"$work/audit.json" || die "audit show"
check "the server's audit log records the kit and no share" \
  'grep -q recovery_kit "$work/audit.json" && ! grep -q "$(share 0 | cut -c6-19)" "$work/audit.json" && ! grep -rq "$(share 0 | cut -c6-19)" "$data"'

# Both admin laptops are lost.
rm -rf "$admin" "$work/sari"
c=$(enroll_code admin admin) || die "admin code"
check "one share is not enough, and nothing is saved" \
  '! TEDUH_RECOVERY_SHARE_1="$(share 0)" dev "$work/one" new-admin-pass-1 init --recover --server "$url" --code "$c" >/dev/null && grep -q "1 more share" "$work/last.err" && [ ! -e "$work/one/vault" ]'
typo=$(share 1 | sed 's/^\(TRS1-...\)./\1x/')
[ "$typo" = "$(share 1)" ] && typo=$(share 1 | sed 's/^\(TRS1-...\)./\10/')
check "a mistyped share is named" \
  '! TEDUH_RECOVERY_SHARE_1="$(share 0)" TEDUH_RECOVERY_SHARE_2="$typo" dev "$work/typo" new-admin-pass-1 init --recover --server "$url" --code "$c" >/dev/null && grep -q "share 2" "$work/last.err" && [ ! -e "$work/typo/vault" ]'
TEDUH_RECOVERY_SHARE_1="$(share 2)" TEDUH_RECOVERY_SHARE_2="$(share 0)" \
  dev "$work/new-admin" new-admin-pass-1 init --recover --server "$url" --code "$c" >"$work/recovered.json" ||
  die "recovery: $(cat "$work/last.err")"
check "the rebuilt admin device is active at once" '[ "$(jq -r .state "$work/recovered.json")" = active ]'
dev "$work/new-admin" new-admin-pass-1 sync >/dev/null || die "the rebuilt admin syncs: $(cat "$work/last.err")"
check "the admin code was used up" \
  '! TEDUH_RECOVERY_SHARE_1="$(share 0)" TEDUH_RECOVERY_SHARE_2="$(share 1)" dev "$work/again" new-admin-pass-1 init --recover --server "$url" --code "$c" >/dev/null'

c=$(enroll_code office dewi) || die "enroll dewi"
dewi=$(dev "$work/dewi" dewi-passphrase-1 init --server "$url" --code "$c" | json .device_id) || die "dewi enrolls"
dev "$work/new-admin" new-admin-pass-1 device approve "$dewi" >/dev/null || die "the rebuilt admin approves: $(cat "$work/last.err")"
dev "$work/dewi" dewi-passphrase-1 sync >/dev/null || die "dewi syncs"
check "the office device it approved reads the case written before the loss" \
  '[ "$(dev "$work/dewi" dewi-passphrase-1 case show "$case_id" | jq -r .fields.chronology)" = "Korban diancam" ]'
check "the rebuilt admin revokes the lost second admin laptop" \
  'dev "$work/new-admin" new-admin-pass-1 device revoke "$sari" >/dev/null'
check "and rotates the general key" \
  '[ "$(dev "$work/new-admin" new-admin-pass-1 key rotate --class general | jq -r .epoch)" = 2 ]'
"$SERVER" audit show --data "$data" --last 50 --json >"$work/audit2.json" || die "audit show"
check "the recovery is in the audit log" 'jq -e "[.. | objects | select(.recovered? == true)] | length == 1" "$work/audit2.json" >/dev/null'
check "the audit chain verifies" '"$SERVER" audit verify --data "$data" >/dev/null'

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
