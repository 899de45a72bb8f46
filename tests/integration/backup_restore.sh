#!/usr/bin/env bash
# Backup and restore through the programs, over real WebSocket on loopback
# (README, "Backups and restores"; docs/SECURITY.md, "Backups"):
#   a unit with an admin and two office devices -> the admin names the backup
#   key -> a backup while serving -> an office device records a second case
#   and syncs it -> the server's disk is lost: the backup is restored -> the
#   office device re-sends the second case -> the other office device gets
#   both. Bad backups and a restore under a running server change nothing.
set -uo pipefail
bin=${1:?usage: backup_restore.sh BIN_DIR}
source "$(dirname "$0")/harness.bash"

has_case() { dev "$1" "$2" case list | jq -e --arg id "$3" '.cases[] | select(.case_id == $id)' >/dev/null; }

code=$("$SERVER" init --data "$data" --unit "UPTD PPA Kota Dumai" --json | json .code) || die "init"
start_server 127.0.0.1:0
url="ws://127.0.0.1:$port/sync"
admin="$work/admin"
dev "$admin" admin-passphrase-1 init --server "$url" --code "$code" >/dev/null || die "admin enrolls: $(cat "$work/last.err")"
for u in budi rina; do
  c=$("$SERVER" enroll --data "$data" --role office --user "$u" --json | json .code) || die "enroll $u"
  id=$(dev "$work/$u" "$u-passphrase-1" init --server "$url" --code "$c" | json .device_id) || die "$u enrolls"
  dev "$admin" admin-passphrase-1 device approve "$id" >/dev/null || die "approve $u: $(cat "$work/last.err")"
  dev "$work/$u" "$u-passphrase-1" sync >/dev/null || die "$u syncs: $(cat "$work/last.err")"
done
ok "a unit with an admin and two office devices"

check "no backup is written before the unit has a backup key" \
  '! "$SERVER" backup --data "$data" --to "$work/early.tbk" 2>"$work/err" && grep -q "backup key" "$work/err" && [ ! -e "$work/early.tbk" ]'
token=$(dev "$admin" admin-passphrase-1 key backup-key | json .token) || die "backup-key: $(cat "$work/last.err")"
check "a forged backup key token is refused" \
  '! "$SERVER" backup-key --data "$data" "TBK1-$(printf "%0192d" 0)" >/dev/null 2>&1'
check "a field device has no backup key" '! dev "$work/budi" budi-passphrase-1 key backup-key >/dev/null'
"$SERVER" backup-key --data "$data" "$token" >/dev/null || die "backup-key set"
ok "the admin device names the unit backup key to the server"

first=$(dev "$work/budi" budi-passphrase-1 case new --set risk_level=tinggi --set "chronology=Kasus pertama" | json .case_id) || die "case 1"
dev "$work/budi" budi-passphrase-1 sync >/dev/null || die "sync 1"
backup="$work/unit-1.tbk"
"$SERVER" backup --data "$data" --to "$backup" --json >"$work/backup.json" || die "backup while serving: $(cat "$work/backup.json")"
ok "a backup is written while the server serves"
check "the backup reveals no open field nor sealed text" \
  '! grep -qa "Kasus pertama" "$backup" && ! grep -qa "UPTD PPA Kota Dumai" "$backup" && ! grep -qa "SQLite format" "$backup"'
check "backup verify checks it without the key" \
  '"$SERVER" backup verify "$backup" --json | jq -e ".intact == true" >/dev/null'
check "the admin device opens it and checks it whole" \
  '[ "$(dev "$admin" admin-passphrase-1 backup open "$backup" | jq -r .intact)" = true ]'

# Scheduled backups into a folder keep the newest N; other files there are never touched.
mkdir -p "$work/scheduled"
echo "the admin's notes" >"$work/scheduled/README.txt"
for _ in 1 2 3 4; do
  "$SERVER" backup --data "$data" --to-dir "$work/scheduled" --keep 2 --json >"$work/sched.json" ||
    die "scheduled backup: $(cat "$work/sched.json")"
done
check "a scheduled backup keeps the newest two" \
  '[ "$(ls "$work/scheduled"/teduh-*.tbk | wc -l)" = 2 ] && [ -e "$work/scheduled/README.txt" ]'
check "the newest scheduled backup is the one just written" \
  '[ "$(ls "$work/scheduled"/teduh-*.tbk | tail -1)" = "$(jq -r .file "$work/sched.json")" ] && "$SERVER" backup verify "$(jq -r .file "$work/sched.json")" >/dev/null'
check "--keep needs --to-dir" '! "$SERVER" backup --data "$data" --to "$work/x.tbk" --keep 2 >/dev/null 2>&1 && [ ! -e "$work/x.tbk" ]'

second=$(dev "$work/budi" budi-passphrase-1 case new --set risk_level=sedang --set "chronology=Kasus kedua" | json .case_id) || die "case 2"
accepted=$(dev "$work/budi" budi-passphrase-1 sync | json .accepted) || die "sync 2"
check "the second case is acknowledged" '[ "$accepted" -gt 0 ]'

# Bad backups: refused, and nothing is written to the target.
secret=$(dev "$admin" admin-passphrase-1 key backup-key --secret | json .secret) || die "backup secret"
head -c 2000 "$backup" >"$work/cut.tbk"
cp "$backup" "$work/altered.tbk"
printf 'X' | dd of="$work/altered.tbk" bs=1 seek=3000 conv=notrunc 2>/dev/null
echo "not a backup" >"$work/junk.tbk"
for f in cut altered junk; do
  check "a $f backup is refused" \
    '! TEDUH_BACKUP_SECRET="$secret" "$SERVER" restore --from "$work/$f.tbk" --data "$work/target-$f" 2>"$work/err" && grep -qiE "damaged|not a Teduh backup" "$work/err" && [ ! -e "$work/target-$f/teduh-server.db" ]'
done
mistyped=$(echo "$secret" | sed 's/-\(.\)/-\1/; s/TBS1-\(.\)/TBS1-X/' | sed 's/TBS1-X/TBS1-0/')
[ "$mistyped" = "$secret" ] && mistyped=$(echo "$secret" | sed 's/TBS1-./TBS1-f/')
check "a mistyped backup secret key is named by its checksum" \
  '! TEDUH_BACKUP_SECRET="$mistyped" "$SERVER" restore --from "$backup" --data "$work/target-typo" 2>"$work/err" && grep -q checksum "$work/err"'
check "a restore while the server serves is refused" \
  '! TEDUH_BACKUP_SECRET="$secret" "$SERVER" restore --from "$backup" --data "$data" 2>"$work/err" && grep -q "another teduh-server process" "$work/err"'
check "the refused restore changed nothing" \
  'has_case "$work/rina" rina-passphrase-1 "$second" || { dev "$work/rina" rina-passphrase-1 sync >/dev/null; has_case "$work/rina" rina-passphrase-1 "$second"; }'

# The server's disk is lost: only the backup is left.
stop_server
rm -rf "$data"
TEDUH_BACKUP_SECRET="$secret" "$SERVER" restore --from "$backup" --data "$data" --json >"$work/restore.json" ||
  die "restore: $(cat "$work/restore.json")"
ok "the backup is restored onto an empty data folder"
check "the restore reports a new generation" \
  '[ "$(jq -r .new_generation "$work/restore.json")" != "$(jq -r .generation "$work/backup.json")" ]'
check "the restored audit chain verifies" '"$SERVER" audit verify --data "$data" >/dev/null'
start_server "127.0.0.1:$port"

report=$(dev "$work/budi" budi-passphrase-1 sync) || die "budi syncs after the restore: $(cat "$work/last.err")"
check "the office device sees the restore and re-sends" '[ "$(echo "$report" | jq -r .reset)" = true ]'
check "nothing is left pending" '[ "$(echo "$report" | jq -r .pending)" = 0 ]'
dev "$work/rina" rina-passphrase-1 sync >/dev/null || die "rina syncs: $(cat "$work/last.err")"
check "the other office device has both cases after the restore" \
  'has_case "$work/rina" rina-passphrase-1 "$first" && has_case "$work/rina" rina-passphrase-1 "$second"'
check "the second case reads on the other device" \
  '[ "$(dev "$work/rina" rina-passphrase-1 case show "$second" | jq -r .fields.chronology)" = "Kasus kedua" ]'
third=$(dev "$work/budi" budi-passphrase-1 case new --set "chronology=Kasus ketiga" | json .case_id) || die "case 3"
dev "$work/budi" budi-passphrase-1 sync >/dev/null || die "sync 3"
dev "$work/rina" rina-passphrase-1 sync >/dev/null || die "rina sync 3"
check "work goes on after the restore" 'has_case "$work/rina" rina-passphrase-1 "$third"'
budi_id=$(dev "$work/budi" budi-passphrase-1 status | json .device_id) || die "budi status"
restore_of() { dev "$admin" admin-passphrase-1 device list | jq -c --arg id "$1" '.devices[] | select(.device_id == $id) | .restore'; }
check "device list shows the office device sent its lost change again" \
  'r=$(restore_of "$budi_id") && [ "$(echo "$r" | jq -r .resent)" -ge 1 ] && [ "$(echo "$r" | jq -r .not_resent)" = 0 ]'
check "the audit chain verifies after the re-sends" '"$SERVER" audit verify --data "$data" >/dev/null'

# A second backup restored over the live store: the store it replaces is kept.
"$SERVER" backup --data "$data" --to "$work/unit-2.tbk" >/dev/null || die "second backup"
fourth=$(dev "$work/budi" budi-passphrase-1 case new --set "chronology=Kasus keempat" | json .case_id) || die "case 4"
dev "$work/budi" budi-passphrase-1 sync >/dev/null || die "sync 4"
stop_server
TEDUH_BACKUP_SECRET="$secret" "$SERVER" restore --from "$work/unit-2.tbk" --data "$data" --json >"$work/restore2.json" ||
  die "restore over a store: $(cat "$work/restore2.json")"
check "restoring over a store keeps the store it replaced" \
  '[ -e "$(jq -r .replaced "$work/restore2.json")" ] && [ "$(jq -r .carried_forward "$work/restore2.json")" = true ]'
check "restore counts the change the backup lacks" \
  '[ "$(jq -r --arg id "$budi_id" ".devices[] | select(.device_id == \$id) | .changes_to_come_back" "$work/restore2.json")" -ge 1 ]'
start_server "127.0.0.1:$port"
check "device list shows the change not yet sent again" \
  '[ "$(restore_of "$budi_id" | jq -r .not_resent)" -ge 1 ] && [ "$(restore_of "$budi_id" | jq -r .resent)" = 0 ]'
dev "$work/budi" budi-passphrase-1 sync >/dev/null || die "budi syncs after the second restore"
check "then that it came back" '[ "$(restore_of "$budi_id" | jq -r .not_resent)" = 0 ]'
dev "$work/rina" rina-passphrase-1 sync >/dev/null || die "rina syncs after the second restore"
check "devices keep every case across the second restore" \
  'has_case "$work/rina" rina-passphrase-1 "$first" && has_case "$work/rina" rina-passphrase-1 "$second" && has_case "$work/rina" rina-passphrase-1 "$third" && has_case "$work/rina" rina-passphrase-1 "$fourth"'

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
