#!/usr/bin/env bash
# The end-to-end scenario over real WebSocket on loopback, driven through the
# programs' scripting contract (--json), exactly as an operator would:
#   server init -> admin device -> enroll and approve a pendamping and an office
#   device -> the pendamping records a case offline (server stopped) -> sync ->
#   the office device reads everything decrypted -> the office edits -> the
#   pendamping sees it. Then the server's audit chain must verify, and no sealed
#   plaintext may appear anywhere on disk.
# Bad inputs along the way must fail with a clear error and change nothing.
set -uo pipefail
bin=${1:?usage: end_to_end.sh BIN_DIR}
source "$(dirname "$0")/harness.bash"

# --- server and first admin ---
code=$("$SERVER" init --data "$data" --unit "UPTD PPA Kota Dumai" --json | json .code) ||
  die "server init prints a bootstrap code"
ok "server init prints a bootstrap code"
check "init refuses an initialised store" '! "$SERVER" init --data "$data" --unit X --json >/dev/null 2>&1'
start_server 127.0.0.1:0
url="ws://127.0.0.1:$port/sync"
check "a second server on the same data folder is refused and says why" \
  '! timeout 10 "$SERVER" serve --data "$data" --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 >/dev/null 2>"$work/serve2.err" &&
   grep -q "another teduh-server process is serving this data folder" "$work/serve2.err"'

admin="$work/admin"
admin_id=$(dev "$admin" "admin-passphrase-1" init --server "$url" --code "$code" | json .device_id) ||
  die "admin device enrolls: $(cat "$work/last.err")"
ok "admin device enrolls with the bootstrap code"
check "a used enrollment code is refused" \
  '! dev "$work/again" pw init --server "$url" --code "$code" >/dev/null'
check "an unknown enrollment code is refused" \
  '! dev "$work/unknown" pw init --server "$url" --code "AAAA-BBBB-CCCC-DDDD" >/dev/null'
check "refusals leave no device behind" '[ ! -e "$work/again/vault" ] && [ ! -e "$work/unknown/vault" ]'

pcode=$("$SERVER" enroll --data "$data" --role pendamping --user ani --json | json .code) ||
  die "enroll prints a code"
ocode=$("$SERVER" enroll --data "$data" --role office --user budi --json | json .code) ||
  die "enroll prints a code"
pend="$work/pendamping"
office="$work/office"
pend_id=$(dev "$pend" "ani-passphrase-1" init --server "$url" --code "$pcode" | json .device_id) ||
  die "pendamping device enrolls: $(cat "$work/last.err")"
office_id=$(dev "$office" "budi-passphrase-1" init --server "$url" --code "$ocode" | json .device_id) ||
  die "office device enrolls: $(cat "$work/last.err")"
ok "field and office devices enroll"

dev "$pend" "ani-passphrase-1" sync >/dev/null
rc=$?
check "a pending device is told it is pending" '[ $rc -ne 0 ] && grep -qiE "pending|approve" "$work/last.err"'
check "server lists the pending device" \
  '"$SERVER" device list --data "$data" --json | jq -e ".devices[] | select(.device_id==\"$pend_id\") | .state==\"pending\"" >/dev/null'
check "the admin sees the fingerprint the pendamping tablet shows" \
  '[ "$(dev "$admin" "admin-passphrase-1" device list | jq -r ".devices[] | select(.device_id==\"$pend_id\") | .fingerprint")" = "$(dev "$pend" "ani-passphrase-1" status | jq -r .fingerprint)" ]'
check "a non-admin device cannot approve" '! dev "$office" "budi-passphrase-1" device approve "$pend_id" >/dev/null'
dev "$admin" "admin-passphrase-1" device approve "$pend_id" >/dev/null || die "admin approves pendamping: $(cat "$work/last.err")"
dev "$admin" "admin-passphrase-1" device approve "$office_id" >/dev/null || die "admin approves office: $(cat "$work/last.err")"
check "approved devices are active" \
  '[ "$("$SERVER" device list --data "$data" --json | jq -r "[.devices[] | select(.state==\"active\")] | length")" = 3 ]'
dev "$pend" "ani-passphrase-1" sync >/dev/null || die "pendamping first sync: $(cat "$work/last.err")"
dev "$office" "budi-passphrase-1" sync >/dev/null || die "office first sync: $(cat "$work/last.err")"
ok "approved devices sync"

# --- offline case work on the pendamping device ---
stop_server
NAME="Siti Rahmawati Kusuma"
ADDRESS="Jl. Cempaka Putih No. 17, Dumai Barat"
PHONE="0812-7788-4455"
CHRONO="Korban dipukul suami pada malam 3 Maret di dapur rumah"
NOTE="Kunjungan rumah: korban menunjukkan memar di lengan kiri"
check "wrong passphrase is refused" '! dev "$pend" "wrong-pass" status >/dev/null'
check "wrong passphrase error is clear" 'grep -qi passphrase "$work/last.err"'
check "an unknown field is refused with the valid names" \
  '! dev "$pend" "ani-passphrase-1" case new --set bogus_field=1 >/dev/null && grep -q risk_level "$work/last.err"'
check "a bad enum value is refused with the valid values" \
  '! dev "$pend" "ani-passphrase-1" case new --set risk_level=extreme >/dev/null && grep -qi tinggi "$work/last.err"'
case_id=$(dev "$pend" "ani-passphrase-1" case new --set risk_level=tinggi --set violence_types=fisik,psikis \
  --set "chronology=$CHRONO" | json .case_id) || die "case new offline: $(cat "$work/last.err")"
ok "pendamping records a case offline"
dev "$pend" "ani-passphrase-1" person add "$case_id" --role victim --set "name=$NAME" \
  --set "address=$ADDRESS" --set "phone=$PHONE" >/dev/null || die "person add: $(cat "$work/last.err")"
dev "$pend" "ani-passphrase-1" note add "$case_id" --text "$NOTE" >/dev/null || die "note add: $(cat "$work/last.err")"
check "bad inputs created no case" \
  '[ "$(dev "$pend" "ani-passphrase-1" case list | jq ".cases | length")" = 1 ]'
check "status shows the pending outbox" \
  '[ "$(dev "$pend" "ani-passphrase-1" status | jq ".pending")" -gt 0 ]'
check "sync without a server fails clearly and keeps the outbox" \
  '! dev "$pend" "ani-passphrase-1" sync >/dev/null && [ "$(dev "$pend" "ani-passphrase-1" status | jq ".pending")" -gt 0 ]'

# The unit is in WITA (Kalimantan Timur); the server takes it at its next start.
check "the unit's time zone is WIB until set" \
  '[ "$("$SERVER" time-zone --data "$data" --json | jq -r .time_zone)" = WIB ]'
check "an unknown time zone is refused and changes nothing" \
  '! "$SERVER" time-zone --data "$data" UTC >/dev/null 2>&1 && [ "$("$SERVER" time-zone --data "$data" --json | jq -r .time_zone)" = WIB ]'
check "the unit's time zone is set" \
  '[ "$("$SERVER" time-zone --data "$data" WITA --json | jq -r .time_zone)" = WITA ]'

# --- back online ---
start_server "127.0.0.1:$port"
dev "$pend" "ani-passphrase-1" sync >/dev/null || die "pendamping sync: $(cat "$work/last.err")"
check "the tablet shows times in the unit's zone after syncing" \
  '[ "$(dev "$pend" "ani-passphrase-1" status | jq -r .time_zone)" = WITA ] && TEDUH_PASSPHRASE=ani-passphrase-1 "$TEDUH" --home "$pend" task list 2>/dev/null | grep -q " WITA "'
check "the new case's outreach deadline is on the tablet's task board, offline" \
  'dev "$pend" "ani-passphrase-1" task list --mine | jq -e --arg c "$case_id" "[.tasks[] | select(.case_id==\$c and .kind==\"outreach\") | .task_id, .due_at] | length == 2" >/dev/null'
check "outbox is empty after sync" '[ "$(dev "$pend" "ani-passphrase-1" status | jq ".pending")" = 0 ]'
dev "$office" "budi-passphrase-1" sync >/dev/null || die "office sync: $(cat "$work/last.err")"
show=$(dev "$office" "budi-passphrase-1" case show "$case_id") || die "office case show: $(cat "$work/last.err")"
check "office sees the risk level" '[ "$(jq -r .fields.risk_level <<<"$show")" = HIGH ]'
check "office sees the violence types" \
  '[ "$(jq -c .fields.violence_types <<<"$show")" = "[\"PHYSICAL\",\"PSYCHOLOGICAL\"]" ]'
check "office reads the chronology decrypted" '[ "$(jq -r .fields.chronology <<<"$show")" = "$CHRONO" ]'
check "office reads the victim decrypted" \
  'jq -e --arg n "$NAME" --arg a "$ADDRESS" --arg p "$PHONE" ".persons[0].fields | .name==\$n and .address==\$a and .phone==\$p" <<<"$show" >/dev/null'
check "office reads the note decrypted" 'jq -e --arg t "$NOTE" "[.notes[].text] | index(\$t) != null" <<<"$show" >/dev/null'
check "lists show initials only" \
  '! dev "$office" "budi-passphrase-1" case list | grep -q "Rahmawati"'
check "opening the case in full leaves a trace of who opened it, which syncs" \
  'dev "$office" "budi-passphrase-1" case show "$case_id" | jq -e "[.accesses[].viewer] | index(\"budi\") != null" >/dev/null && dev "$office" "budi-passphrase-1" sync | jq -e ".rejected==0" >/dev/null && dev "$pend" "ani-passphrase-1" sync >/dev/null && dev "$pend" "ani-passphrase-1" case show "$case_id" | jq -e "[.accesses[] | select(.pending==false) | .viewer] | index(\"budi\") != null" >/dev/null'

# --- a referral: drafted with what it discloses; never sent without consent ---
ref_id=$(dev "$office" "budi-passphrase-1" referral add "$case_id" --agency POLRES --service LEGAL --disclose name,address | json .referral_id) ||
  bad "referral add prints a referral_id"
check "an unknown agency is refused with the valid codes" \
  '! dev "$office" "budi-passphrase-1" referral add "$case_id" --agency NOWHERE --service LEGAL >/dev/null && grep -q "POLRES" "$work/last.err"'
dev "$office" "budi-passphrase-1" referral check "$ref_id" >/dev/null || bad "referral check"
check "an office worker may not sign the letter" '! dev "$office" "budi-passphrase-1" referral sign "$ref_id" >/dev/null'
check "the referral lists its disclosed fields as a draft waiting for a signature" \
  'dev "$office" "budi-passphrase-1" referral list "$case_id" | jq -e ".referrals[0].status==\"checked\" and .referrals[0].disclosed_fields==[\"name\",\"address\"] and .referrals[0].consent==false" >/dev/null'
check "a referral is not sent without the victim's consent" \
  '! dev "$office" "budi-passphrase-1" referral send "$ref_id" >/dev/null && grep -qi "consent" "$work/last.err"'

dev "$office" "budi-passphrase-1" case set "$case_id" --set stage=asesmen --set region_code=14.72.01 >/dev/null ||
  die "office case set: $(cat "$work/last.err")"
dev "$office" "budi-passphrase-1" sync >/dev/null || die "office sync 2: $(cat "$work/last.err")"
dev "$pend" "ani-passphrase-1" sync >/dev/null || die "pendamping sync 2: $(cat "$work/last.err")"
pshow=$(dev "$pend" "ani-passphrase-1" case show "$case_id") || die "pendamping case show"
check "pendamping sees the office's edit" '[ "$(jq -r .fields.stage <<<"$pshow")" = ASESMEN ]'
check "pendamping still reads its victim" '[ "$(jq -r .persons[0].fields.name <<<"$pshow")" = "$NAME" ]'
check "a second sync changes nothing" 'dev "$pend" "ani-passphrase-1" sync >/dev/null && [ "$(dev "$pend" "ani-passphrase-1" status | jq ".pending")" = 0 ]'

# --- concurrent edits: merge rules and the conflict queue ---
dev "$pend" "ani-passphrase-1" case set "$case_id" --set "chronology=Versi pendamping" \
  --set violence_types=seksual --set risk_level=sedang >/dev/null || die "pendamping edits offline"
dev "$office" "budi-passphrase-1" case set "$case_id" --set "chronology=Versi kantor" \
  --set violence_types=penelantaran --set risk_level=rendah >/dev/null || die "office edits offline"
dev "$pend" "ani-passphrase-1" sync >/dev/null || die "pendamping sync 3: $(cat "$work/last.err")"
osync=$(dev "$office" "budi-passphrase-1" sync) || die "office sync 3: $(cat "$work/last.err")"
check "the office's concurrent chronology edit is a conflict" '[ "$(jq .conflict <<<"$osync")" = 1 ]'
dev "$pend" "ani-passphrase-1" sync >/dev/null || die "pendamping sync 4"
mshow=$(dev "$office" "budi-passphrase-1" case show "$case_id")
check "concurrent violence types are united" \
  '[ "$(jq -c ".fields.violence_types | sort" <<<"$mshow")" = "[\"NEGLECT\",\"SEXUAL\"]" ]'
check "the higher of two concurrent risk levels stays" '[ "$(jq -r .fields.risk_level <<<"$mshow")" = MEDIUM ]'
clist=$(dev "$office" "budi-passphrase-1" conflict list) || die "conflict list: $(cat "$work/last.err")"
check "the office lists one conflict on the chronology by both authors" \
  '[ "$(jq ".conflicts | length" <<<"$clist")" = 1 ] && [ "$(jq -r ".conflicts[0].field" <<<"$clist")" = chronology ] && [ "$(jq -c ".conflicts[0].authors | sort" <<<"$clist")" = "[\"ani\",\"budi\"]" ] && [ "$(jq -r ".conflicts[0].case_id" <<<"$clist")" = "$case_id" ]'
conflict_id=$(jq -r ".conflicts[0].conflict_id" <<<"$clist")
cshow=$(dev "$office" "budi-passphrase-1" conflict show "$conflict_id") || die "conflict show"
check "conflict show has both values decrypted" \
  '[ "$(jq -c "[.kept.value, .other.value] | sort" <<<"$cshow")" = "[\"Versi kantor\",\"Versi pendamping\"]" ]'
check "a pendamping may not resolve" '! dev "$pend" "ani-passphrase-1" conflict resolve "$conflict_id" --take kept >/dev/null'
dev "$office" "budi-passphrase-1" conflict resolve "$conflict_id" --take theirs >/dev/null || die "conflict resolve: $(cat "$work/last.err")"
dev "$office" "budi-passphrase-1" sync >/dev/null || die "office sync 4"
dev "$pend" "ani-passphrase-1" sync >/dev/null || die "pendamping sync 5"
check "the resolution reaches the pendamping" \
  '[ "$(dev "$pend" "ani-passphrase-1" case show "$case_id" | jq -r .fields.chronology)" = "Versi pendamping" ]'
check "the conflict is closed everywhere" \
  '[ "$(dev "$office" "budi-passphrase-1" conflict list | jq ".conflicts | length")" = 0 ] && [ "$(dev "$pend" "ani-passphrase-1" conflict list | jq ".conflicts | length")" = 0 ]'
hist=$(dev "$office" "budi-passphrase-1" case history "$case_id" --field chronology) || die "case history: $(cat "$work/last.err")"
check "the history holds every chronology, decrypted" \
  'for v in "$CHRONO" "Versi pendamping" "Versi kantor"; do jq -e --arg v "$v" "[.history[].value] | index(\$v) != null" <<<"$hist" >/dev/null || exit 1; done'
dev "$office" "budi-passphrase-1" case restore "$case_id" --field chronology --version 1 >/dev/null || die "case restore"
dev "$office" "budi-passphrase-1" sync >/dev/null || die "office sync 5"
check "restore brings the first chronology back" \
  '[ "$(dev "$office" "budi-passphrase-1" case show "$case_id" | jq -r .fields.chronology)" = "$CHRONO" ]'
person_id=$(dev "$office" "budi-passphrase-1" case show "$case_id" | jq -r '.persons[0].person_id')
phist=$(dev "$office" "budi-passphrase-1" person history "$person_id" --field address) ||
  die "person history: $(cat "$work/last.err")"
check "a person's history holds the address, decrypted, with the stamp's device" \
  '[ "$(jq -r ".history[-1].value" <<<"$phist")" = "$ADDRESS" ] && [ "$(jq -r ".history[-1].device_id | length" <<<"$phist")" = 32 ] && [ "$(jq -r ".history[-1].current" <<<"$phist")" = true ]'

# --- passphrase change: the vault is re-wrapped, keys and data stay ---
TEDUH_NEW_PASSPHRASE="budi-passphrase-2" dev "$office" "budi-passphrase-1" passphrase change >/dev/null ||
  die "passphrase change: $(cat "$work/last.err")"
check "the old passphrase no longer opens the office device" '! dev "$office" "budi-passphrase-1" status >/dev/null'
check "the new passphrase opens it with its cases and still syncs" \
  '[ "$(dev "$office" "budi-passphrase-2" case list | jq ".cases | length")" -ge 1 ] && dev "$office" "budi-passphrase-2" sync >/dev/null'

# --- class key rotation: every case key moves to a new epoch; nothing is re-encrypted ---
check "key status shows general at epoch 1" \
  'dev "$admin" "admin-passphrase-1" key status | jq -e ".classes[] | select(.class==\"general\") | .current_epoch==1" >/dev/null'
check "a stale admin device may not rotate before it syncs" '! dev "$admin" "admin-passphrase-1" key rotate --class general >/dev/null'
dev "$admin" "admin-passphrase-1" sync >/dev/null || die "admin sync: $(cat "$work/last.err")"
check "the admin device rotates the general key" \
  'dev "$admin" "admin-passphrase-1" key rotate --class general | jq -e ".epoch==2 and .rewrapped>=1 and .resumed==true" >/dev/null'
check "key status shows epoch 2 and no case key left under epoch 1" \
  'dev "$admin" "admin-passphrase-1" key status | jq -e ".classes[] | select(.class==\"general\") | .current_epoch==2 and ([.epochs[] | select(.epoch==1) | .case_keys] | add // 0)==0" >/dev/null'
check "after the rotation the office device syncs and still reads the chronology" \
  'dev "$office" "budi-passphrase-2" sync >/dev/null && [ "$(dev "$office" "budi-passphrase-2" case show "$case_id" | jq -r .fields.chronology)" = "$CHRONO" ]'
check "a non-admin device may not rotate" '! dev "$office" "budi-passphrase-2" key rotate >/dev/null'
check "epoch 1 is not retired while the pendamping tablet has not taken epoch 2" \
  'dev "$admin" "admin-passphrase-1" key retire --class general | jq -e ".retired == []" >/dev/null'
dev "$pend" "ani-passphrase-1" sync >/dev/null || die "pendamping sync after the rotation: $(cat "$work/last.err")"
dev "$admin" "admin-passphrase-1" sync >/dev/null || die "admin sync after the rotation: $(cat "$work/last.err")"
check "once every device holds epoch 2, epoch 1 is retired" \
  'dev "$admin" "admin-passphrase-1" key retire --class general | jq -e ".retired == [1]" >/dev/null'
check "the retired epoch is gone from the tablet at its next sync, and its cases still open" \
  'dev "$pend" "ani-passphrase-1" sync >/dev/null && dev "$pend" "ani-passphrase-1" status | jq -e "(.keys | index(\"general/1\")) == null" >/dev/null && [ "$(dev "$pend" "ani-passphrase-1" case show "$case_id" | jq -r .fields.chronology)" = "$CHRONO" ]'

# --- assignment: the office gives a case to the pendamping ---
assign_id=$(dev "$office" "budi-passphrase-2" case new --set "chronology=Kasus rujukan dari kantor" | json .case_id) ||
  die "office case new for assignment"
check "the office assigns the case to the pendamping" \
  'dev "$office" "budi-passphrase-2" case assign "$assign_id" --pendamping ani | jq -e ".pendamping==\"ani\"" >/dev/null'
check "a pendamping may not assign" '! dev "$pend" "ani-passphrase-1" case assign "$case_id" --pendamping budi >/dev/null'
dev "$office" "budi-passphrase-2" sync >/dev/null || die "office sync after assign"
check "the assigned case reaches the pendamping tablet, readable" \
  'dev "$pend" "ani-passphrase-1" sync >/dev/null && [ "$(dev "$pend" "ani-passphrase-1" case show "$assign_id" | jq -r .fields.chronology)" = "Kasus rujukan dari kantor" ]'

# --- crypto-shredding: a supervisor asks, the admin device carries it out ---
scode=$("$SERVER" enroll --data "$data" --role supervisor --user sari --json | json .code) || die "enroll supervisor"
sup="$work/supervisor"
sup_id=$(dev "$sup" "sari-passphrase-1" init --server "$url" --code "$scode" | json .device_id) ||
  die "supervisor device enrolls: $(cat "$work/last.err")"
dev "$admin" "admin-passphrase-1" device approve "$sup_id" >/dev/null || die "admin approves supervisor: $(cat "$work/last.err")"
SHRED_TEXT="Kasus salah input, berisi alamat korban lain"
shred_id=$(dev "$office" "budi-passphrase-2" case new --set "chronology=$SHRED_TEXT" | json .case_id) || die "office case new"
dev "$office" "budi-passphrase-2" sync >/dev/null || die "office sync before shred"
dev "$sup" "sari-passphrase-1" sync >/dev/null || die "supervisor sync: $(cat "$work/last.err")"
check "an office device may not ask for a shred" '! dev "$office" "budi-passphrase-2" case shred "$shred_id" >/dev/null'
check "the supervisor asks for the case to be shredded" \
  'dev "$sup" "sari-passphrase-1" case shred "$shred_id" | jq -e ".state==\"requested\"" >/dev/null'
dev "$admin" "admin-passphrase-1" sync >/dev/null || die "admin sync before shred"
check "the admin device shreds it" \
  'dev "$admin" "admin-passphrase-1" case shred "${shred_id:0:10}" | jq -e ".state==\"shredded\" and .requested_by==\"sari\" and .purged_values>0" >/dev/null'
check "the office device drops the shredded case at its next sync" \
  'dev "$office" "budi-passphrase-2" sync | jq -e ".shredded==1" >/dev/null && ! dev "$office" "budi-passphrase-2" case show "$shred_id" >/dev/null'

# --- revocation: the tablet is lost; the server refuses it, the admin orders it erased ---
check "the server host revokes the pendamping tablet without a wipe order" \
  '"$SERVER" device revoke --data "$data" "${pend_id:0:8}" --json | jq -e ".state==\"revoked\" and .wipe_ordered==false" >/dev/null'
rsync_out=$(dev "$pend" "ani-passphrase-1" sync)
rc=$?
check "the revoked tablet's sync exits non-zero and says it was revoked, erasing nothing yet" \
  '[ "$rc" -ne 0 ] && jq -e ".error.code==\"device_revoked\"" <<<"$rsync_out" >/dev/null && [ -f "$pend/vault" ]'
check "a non-admin device cannot revoke" '! dev "$office" "budi-passphrase-2" device revoke "$pend_id" >/dev/null'
check "the admin device signs a wipe order" \
  'dev "$admin" "admin-passphrase-1" device revoke "$pend_id" | jq -e ".state==\"revoked\" and .wipe_ordered==true" >/dev/null'
rsync_out=$(dev "$pend" "ani-passphrase-1" sync)
rc=$?
check "at its next connection the tablet erases itself and says so" \
  '[ "$rc" -ne 0 ] && jq -e ".error.code==\"device_revoked\"" <<<"$rsync_out" >/dev/null && grep -q "erased" "$work/last.err" && [ ! -e "$pend/vault" ] && [ ! -e "$pend/store.db" ]'
check "the erased tablet no longer opens, and tells why" \
  '! dev "$pend" "ani-passphrase-1" status >/dev/null && grep -q "erased" "$work/last.err"'
check "the server lists the signed receipt" \
  '"$SERVER" device list --data "$data" --json | jq -e ".devices[] | select(.device_id==\"$pend_id\") | .wiped_at != null" >/dev/null'
check "case rekey needs a device or --all" '! dev "$admin" "admin-passphrase-1" case rekey >/dev/null'
check "an office device may not re-key" '! dev "$office" "budi-passphrase-2" case rekey --all >/dev/null'
check "re-keying is refused while the lost tablet holds the current key epoch" \
  '! dev "$admin" "admin-passphrase-1" case rekey --held-by "${pend_id:0:8}" >/dev/null && grep -q "rotate" "$work/last.err"'
dev "$admin" "admin-passphrase-1" sync >/dev/null || die "admin sync before the rotation: $(cat "$work/last.err")"
dev "$admin" "admin-passphrase-1" key rotate --class general >/dev/null || die "admin rotates after the loss: $(cat "$work/last.err")"
check "the admin device re-keys every case the lost tablet held" \
  'dev "$admin" "admin-passphrase-1" case rekey --held-by "${pend_id:0:8}" | jq -e ".cases>=2 and .values>=3 and .keys_dropped>=2" >/dev/null'
check "after the re-key the office device syncs, drops the old keys and still reads the chronology" \
  'dev "$office" "budi-passphrase-2" sync | jq -e ".rekeyed>=2" >/dev/null && [ "$(dev "$office" "budi-passphrase-2" case show "$case_id" | jq -r .fields.chronology)" = "$CHRONO" ]'
check "offboarding the pendamping gives her cases to the office worker" \
  'dev "$admin" "admin-passphrase-1" user offboard ani --reassign-to budi | jq -e ".cases_reassigned>=2 and .devices_revoked==0" >/dev/null'
check "the office device sees the case assigned to budi" \
  'dev "$office" "budi-passphrase-2" sync >/dev/null && [ "$(dev "$office" "budi-passphrase-2" case show "$case_id" | jq -r .fields.assigned_pendamping)" = budi ]'
# --- the examples of teduh help work as written, in both languages ---
check "teduh help shows the examples in Indonesian and in English" \
  '"$TEDUH" help --lang id | grep -q "teduh visit CASE --outcome bertemu" && "$TEDUH" help --lang en | grep -q "teduh visit CASE --outcome reached" && LANGUAGE= LC_ALL=C "$TEDUH" help | grep -q "teduh visit CASE --outcome bertemu"'
ex_id=$(dev "$office" "budi-passphrase-2" case new --set channel=media_sosial --set risk_level=tinggi --set "risk_rationale=Pelaku masih di rumah" | json .case_id) ||
  bad "the Indonesian case new example works"
check "the Indonesian examples for a person, the case facts and a visit work as written" \
  'dev "$office" "budi-passphrase-2" person add "$ex_id" --role korban --set "name=Contoh Korban" --set is_child=ya >/dev/null && dev "$office" "budi-passphrase-2" case set "$ex_id" --set violence_types=fisik,psikis --set needs=medis,rumah_aman --set route=proses_hukum >/dev/null && dev "$office" "budi-passphrase-2" visit "$ex_id" --outcome bertemu --note "Kunjungan contoh" >/dev/null'
check "the English examples work as written" \
  'ex_en=$(dev "$office" "budi-passphrase-2" case new --set channel=social_media --set risk_level=high --set "risk_rationale=x" | json .case_id) && dev "$office" "budi-passphrase-2" person add "$ex_en" --role victim --set "name=Example" --set is_child=yes >/dev/null && dev "$office" "budi-passphrase-2" case set "$ex_en" --set violence_types=physical,psychological --set needs=medical,safe_house --set route=legal >/dev/null && dev "$office" "budi-passphrase-2" visit "$ex_en" --outcome reached --note "x" >/dev/null'

# --- assessment, services delivered, deadlines, closing and reopening ---
PLAN="Rencana aman: menginap di rumah kakak Sulastri"
check "the help's assessment example works and the case follows the new risk" \
  'dev "$office" "budi-passphrase-2" assessment add "$ex_id" --risk sedang --needs medis,rumah_aman --rationale "Tidak mampu menyelesaikan sendiri" --safety-plan "$PLAN" | jq -e ".assessment_id | length == 32" >/dev/null && dev "$office" "budi-passphrase-2" case show "$ex_id" | jq -e --arg p "$PLAN" ".fields.risk_level==\"MEDIUM\" and .fields.safety_plan==\$p and .assessments[0].risk_level==\"MEDIUM\" and .assessments[0].safety_plan==\$p and .assessments[0].needs==[\"MEDICAL\",\"SAFE_HOUSE\"]" >/dev/null'
check "an assessment with an unknown risk is refused in one line and records nothing" \
  '! dev "$office" "budi-passphrase-2" assessment add "$ex_id" --risk gawat >/dev/null && [ "$(wc -l <"$work/last.err")" -eq 1 ] && grep -q "tinggi" "$work/last.err" && [ "$(dev "$office" "budi-passphrase-2" case show "$ex_id" | jq ".assessments | length")" = 1 ]'
check "the help's service examples work: accompaniment with its kind, and a shelter stay comes due in 14 days" \
  'dev "$office" "budi-passphrase-2" service add "$ex_id" --service pendampingan_korban --subtype hukum --note "Ke Polres untuk BAP" | jq -e ".service_id" >/dev/null && dev "$office" "budi-passphrase-2" service add "$ex_id" --service penampungan_sementara | jq -e ".service_id" >/dev/null && dev "$office" "budi-passphrase-2" case show "$ex_id" | jq -e ".services | map(.service) == [\"ACCOMPANIMENT\",\"SHELTER\"] and .[0].accompaniment == \"LEGAL\"" >/dev/null && dev "$office" "budi-passphrase-2" task list | jq -e --arg c "$ex_id" "[.tasks[] | select(.case_id==\$c and .kind==\"shelter_stay\")] | length == 1" >/dev/null'
check "an unknown service, and a kind where none belongs, are refused and record nothing" \
  '! dev "$office" "budi-passphrase-2" service add "$ex_id" --service karaoke >/dev/null && grep -q "mediasi" "$work/last.err" && ! dev "$office" "budi-passphrase-2" service add "$ex_id" --service mediation --subtype legal >/dev/null && [ "$(dev "$office" "budi-passphrase-2" case show "$ex_id" | jq ".services | length")" = 2 ]'
check "a verdict brings the first of three monthly home visits onto the board, which is marked done" \
  'dev "$office" "budi-passphrase-2" case set "$ex_id" --set verdict_at=2025-06-30 >/dev/null && v=$(dev "$office" "budi-passphrase-2" task list | jq -er --arg c "$ex_id" "[.tasks[] | select(.case_id==\$c and .kind==\"post_verdict_visit\" and .cycle==1 and .cycles==3)][0].task_id") && dev "$office" "budi-passphrase-2" task done "$v" | jq -e ".done" >/dev/null && dev "$office" "budi-passphrase-2" task list | jq -e --arg c "$ex_id" "[.tasks[] | select(.case_id==\$c and .kind==\"post_verdict_visit\")][0].cycle == 2" >/dev/null'
check "reopening a case that is not closed is refused" \
  '! dev "$office" "budi-passphrase-2" case reopen "$ex_id" --reason repeat_violence >/dev/null && grep -q "not closed" "$work/last.err"'
check "closing without the outcome checklist is refused and leaves the stage" \
  '! dev "$office" "budi-passphrase-2" case set "$ex_id" --set stage=terminasi --set closure_reason=selesai >/dev/null && grep -q "checklist" "$work/last.err" && [ "$(dev "$office" "budi-passphrase-2" case show "$ex_id" | jq -r .fields.stage)" != TERMINASI ]'
check "the help's closing example works as written" \
  'dev "$office" "budi-passphrase-2" case set "$ex_id" --set stage=terminasi --set closure_reason=selesai --set closure_checklist=aman,kebutuhan_terpenuhi,tidak_ada_kekerasan_ulang >/dev/null && [ "$(dev "$office" "budi-passphrase-2" case show "$ex_id" | jq -r .fields.stage)" = TERMINASI ]'
check "a closed case is not moved back by its stage" \
  '! dev "$office" "budi-passphrase-2" case set "$ex_id" --set stage=pengaduan >/dev/null && grep -q "reopen" "$work/last.err"'
check "the help's reopening example starts episode 2 from the complaint stage, with the closure cleared" \
  'dev "$office" "budi-passphrase-2" case reopen "$ex_id" --reason kekerasan_berulang --note "Suami datang lagi" | jq -e ".episode==2" >/dev/null && dev "$office" "budi-passphrase-2" case show "$ex_id" | jq -e ".fields.stage==\"PENGADUAN\" and .fields.episode==2 and .fields.reopen_reason==\"REPEAT_VIOLENCE\" and .fields.closure_reason==null" >/dev/null && dev "$office" "budi-passphrase-2" task list | jq -e --arg c "$ex_id" "[.tasks[] | select(.case_id==\$c and .kind==\"outreach\")] | length == 1" >/dev/null'
check "a reassessment records the victim's condition and corrects the earlier assessment" \
  'first=$(dev "$office" "budi-passphrase-2" case show "$ex_id" | jq -er ".assessments[0].assessment_id") && dev "$office" "budi-passphrase-2" assessment add "$ex_id" --risk tinggi --kind ulang --condition "Memar baru" --corrects "${first:0:8}" >/dev/null && dev "$office" "budi-passphrase-2" case show "$ex_id" | jq -e --arg f "$first" "(.assessments[-1] | .kind==\"REVIEW\" and .corrects==\$f and .condition==\"Memar baru\") and ([.assessments[] | select(.assessment_id==\$f)][0].corrected_by != null)" >/dev/null'
check "an office device records no diagnosis (clinical) and nothing is added" \
  '! dev "$office" "budi-passphrase-2" assessment add "$ex_id" --risk tinggi --diagnosis "x" >/dev/null && jq -e ".error.code==\"forbidden\"" <<<"$(dev "$office" "budi-passphrase-2" assessment add "$ex_id" --risk tinggi --diagnosis x)" >/dev/null && [ "$(dev "$office" "budi-passphrase-2" case show "$ex_id" | jq ".assessments | length")" = 2 ]'
check "a service says what it consisted of, from the unit's activity list" \
  'dev "$office" "budi-passphrase-2" service add "$ex_id" --service pengelolaan_kasus --activity kunjungan_rumah | jq -e ".service_id" >/dev/null && dev "$office" "budi-passphrase-2" case show "$ex_id" | jq -e ".services[-1].activity==\"HOME_VISIT\"" >/dev/null && ! dev "$office" "budi-passphrase-2" service add "$ex_id" --service mediation --activity karaoke >/dev/null'
check "the assessments, services and the reopening sync without a rejection" \
  'dev "$office" "budi-passphrase-2" sync | jq -e ".rejected==0" >/dev/null'

# --- the unit's own codes, and the report on an office device ---
check "teduh-server code add gives a unit code of an enum list its number" \
  '"$SERVER" code add --data "$data" --list violence_type --code TRAFFICKING --label-id "perdagangan orang" --label-en trafficking --json | jq -e ".number==1000 and .unit==true" >/dev/null'
check "a code that clashes with a default is refused with the reason, and nothing is added" \
  '! "$SERVER" code add --data "$data" --list violence_type --code HITTING --label-id fisik --label-en hitting >/dev/null 2>"$work/code.err" && grep -q "already names" "$work/code.err" && [ "$("$SERVER" code list --data "$data" --list violence_type --json | jq "[.codes[] | select(.unit)] | length")" = 1 ]'
check "teduh-server code add takes a region list" \
  '"$SERVER" code add --data "$data" --list region --code 14.72.01 --label-id "Dumai Barat" --label-en "West Dumai" >/dev/null'
check "after a sync the office device knows the unit's codes" \
  'dev "$office" "budi-passphrase-2" sync >/dev/null && dev "$office" "budi-passphrase-2" code list --list violence_type | jq -e "[.codes[] | select(.code==\"TRAFFICKING\" and .unit)] | length == 1" >/dev/null'
check "a case takes the unit's code by its label, and shows it" \
  'code_case=$(dev "$office" "budi-passphrase-2" case new --set "violence_types=perdagangan orang" --set "region_code=Dumai Barat" --set referrer_type=sekolah | json .case_id) && dev "$office" "budi-passphrase-2" case show "$code_case" | jq -e ".fields.violence_types==[\"TRAFFICKING\"] and .fields.region_code==\"14.72.01\" and .fields.referrer_type==\"SCHOOL\"" >/dev/null && dev "$office" "budi-passphrase-2" sync >/dev/null'
check "a region outside the unit's list is refused and lists the unit's regions" \
  '! dev "$office" "budi-passphrase-2" case set "$code_case" --set region_code=99.99 >/dev/null && grep -q "14.72.01" "$work/last.err"'
check "the office device's report equals the server's, row for row" \
  'a=$(dev "$office" "budi-passphrase-2" report --from 2000-01-01 --to 2099-12-31 --by violence_type,region,stage,closure_reason | jq -S "del(.breakdowns[].rows[].label)") && b=$("$SERVER" report --data "$data" --from 2000-01-01 --to 2099-12-31 --by violence_type,region,stage,closure_reason | jq -S "del(.breakdowns[].rows[].label)") && [ "$a" = "$b" ] && jq -e "[.breakdowns[0].rows[] | select(.key==\"TRAFFICKING\")][0].count == 1" <<<"$a" >/dev/null'
check "the report reads in Indonesian, a unit code by its label" \
  'TEDUH_PASSPHRASE="budi-passphrase-2" "$TEDUH" --home "$office" --lang id report --from 2000-01-01 --to 2099-12-31 --by violence_type >"$work/report.txt" && grep -q "^Laporan kasus 2000-01-01 sampai 2099-12-31" "$work/report.txt" && grep -q "perdagangan orang \[TRAFFICKING\]" "$work/report.txt" && grep -q "TIDAK COCOK" "$work/report.txt"'
check "a retired code stays on its case and is refused for a new one" \
  '"$SERVER" code retire --data "$data" --list violence_type --code TRAFFICKING >/dev/null && dev "$office" "budi-passphrase-2" sync >/dev/null && ! dev "$office" "budi-passphrase-2" case new --set violence_types=trafficking >/dev/null && dev "$office" "budi-passphrase-2" case show "$code_case" | jq -e ".fields.violence_types==[\"TRAFFICKING\"]" >/dev/null'
check "errors read in Indonesian with --lang id" \
  '! TEDUH_PASSPHRASE=salah "$TEDUH" --home "$office" --lang id status >/dev/null 2>"$work/id.err" && grep -q "frasa sandi" "$work/id.err"'

# --- teduh lock: the command holding the keys wipes them and ends at once ---
check "teduh lock with no command running says nothing held the keys" \
  '"$TEDUH" --home "$office" --json lock 2>/dev/null | jq -e ".locked==true and .was_unlocked==false" >/dev/null'
kill -STOP "$server_pid"  # the server stops answering: the sync below waits with its keys open
held_start=$SECONDS
TEDUH_PASSPHRASE="budi-passphrase-2" "$TEDUH" --home "$office" --json sync >"$work/held.out" 2>"$work/held.err" &
held_pid=$!
# The session file keeps the last command's pid: wait until it names this one
# (it then holds the session), or `teduh lock` may come before it starts.
for _ in $(seq 1 100); do grep -q "^$held_pid " "$office/session" 2>/dev/null && break; sleep 0.1; done
lock_out=$("$TEDUH" --home "$office" --json lock 2>"$work/lock.err")
wait "$held_pid"
held_rc=$?
held_secs=$((SECONDS - held_start))
kill -CONT "$server_pid"
check "teduh lock ends the command using the device's keys at once" \
  '[ "$held_rc" -ne 0 ] && [ "$held_secs" -lt 8 ] && jq -e ".error.code==\"locked\"" "$work/held.out" >/dev/null && jq -e ".was_unlocked==true and .pid>1" <<<"$lock_out" >/dev/null'
check "after teduh lock the device opens again and nothing saved is lost" \
  'dev "$office" "budi-passphrase-2" sync >/dev/null && [ "$(dev "$office" "budi-passphrase-2" case show "$case_id" | jq -r .fields.chronology)" = "$CHRONO" ]'
stop_server

# --- the unit's report, from open fields only ---
check "teduh-server report counts the cases and checks every breakdown adds up" \
  '"$SERVER" report --data "$data" --from 2000-01-01 --to 2099-12-31 --by region,stage,category | jq -e ".received >= 2 and ([.breakdowns[] | .adds_up] | all) and ([.breakdowns[] | select(.by==\"region\") | .sum] == [.received])" >/dev/null'
check "the report as CSV" \
  '"$SERVER" report --data "$data" --from 2000-01-01 --to 2099-12-31 --by month --format csv | head -1 | grep -qx "section,key,count"'
check "the report as a table for people, headings in either language" \
  '"$SERVER" report --data "$data" --from 2000-01-01 --to 2099-12-31 --by stage --format table --lang id | grep -q "^Menurut tahap" && "$SERVER" --lang en report --data "$data" --from 2000-01-01 --to 2099-12-31 --by stage --format table | grep -q "^By stage"'
check "a report with an unknown breakdown is refused" \
  '! "$SERVER" report --data "$data" --from 2000-01-01 --to 2099-12-31 --by shoe_size >/dev/null 2>&1'

# --- audit log ---
check "audit verify finds the chain intact" \
  '"$SERVER" audit verify --data "$data" >"$work/audit.out" && grep -q "^audit chain intact: " "$work/audit.out"'
check "the audit log holds the enrollments, approvals, pushes, revocations and the wipe receipt" \
  '"$SERVER" audit show --data "$data" --last 1000 --json | jq -e "[.entries[].kind] | (index(\"enroll\") != null) and (index(\"approve\") != null) and (index(\"push\") != null) and (index(\"revoke\") != null) and (index(\"wipe_receipt\") != null) and (index(\"rekey\") != null) and (index(\"offboard\") != null)" >/dev/null'
cp -r "$data" "$work/tampered"
sqlite3 "$work/tampered/teduh-server.db" "UPDATE audit SET body = body || X'00' WHERE idx = 2" ||
  bad "sqlite3 alters an audit entry"
"$SERVER" audit verify --data "$work/tampered" >/dev/null 2>"$work/audit.err"
rc=$?
check "audit verify exits 2 on an altered entry and names it" \
  '[ "$rc" -eq 2 ] && grep -q "entry 2 was altered" "$work/audit.err"'

# --- no plaintext anywhere ---
for secret in "$PLAN" "Sulastri" "Ke Polres untuk BAP" "Suami datang lagi" "$SHRED_TEXT" "$NAME" "Rahmawati" "$ADDRESS" "Cempaka" "$PHONE" "7788-4455" "$CHRONO" "dipukul suami" "$NOTE" "memar di lengan" "Memar baru"; do
  for where in "$data" "$work/server.log" "$pend" "$office" "$admin" "$sup"; do
    if grep -r -a -F -q -- "$secret" "$where" 2>/dev/null; then
      bad "'$secret' appears in plaintext in $(basename "$where")"
    fi
  done
done
ok "no sealed value appears in plaintext in the server data, its log or any device home"

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
