// Device: the case API of a field device (ARCHITECTURE §3). The `teduh` CLI,
// the local web UI and the mobile C ABI all call this class; domain
// validation lives here, not in the front ends.
//
// A Device is one enrolled home folder:
//   <home>/vault        the secrets (vault.h), encrypted under the passphrase
//   <home>/store.db     the local store (local_store.h), values encrypted
//   <home>/device.json  public metadata only (ids, user, role, unit, server,
//                       public keys, settings); the pinned unit root key used
//                       for verification is the copy inside the vault
//   <home>/erased       left alone when a revoked device erased itself on its
//                       unit's signed order (device id and time; no secret)
//
// Values come in as text "FIELD=VALUE" (core::EncodeFieldText); ids as 32 hex
// digits or a unique prefix of at least 6. Every edit is saved with its
// outbox entry in one transaction before the call returns.
//
// Errors: Outcome<T> with a core::errc and a message for the officer that
// never holds sealed content. What to do: see core::condition.
//
// Thread safety: all methods may be called from several threads; a mutex
// serialises them. Sync() holds it only while touching the store or vault,
// so edits proceed while it waits on the network. Several Device objects (one
// home each) may live in one process: there is no global mutable state.
#pragma once

#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "teduh/core/codes.h"
#include "teduh/core/env.h"
#include "teduh/core/hlc.h"
#include "teduh/core/ids.h"
#include "teduh/core/local_store.h"
#include "teduh/core/outcome.h"
#include "teduh/core/recovery_kit.h"
#include "teduh/core/report.h"
#include "teduh/core/time_zone.h"
#include "teduh/core/transport.h"
#include "teduh/core/vault.h"
#include "teduh/crypto/crypto.h"
#include "teduh/sync/v1/sync.pb.h"

namespace teduh::core {

struct FieldPolicy;  // schema.h

// Failed unlocks that erase a field officer's device unless set otherwise.
inline constexpr std::uint32_t kFieldRoleFailedUnlocks = 10;
// The shortest passphrase `init` and `passphrase change` accept (characters).
inline constexpr std::size_t kMinPassphraseChars = 12;

struct DeviceOptions {
  Env* env = nullptr;  // null: DefaultEnv()
  VaultOptions vault;  // at Enroll; Open uses the max_failed_unlocks saved then
  TransportOptions transport;
  Connector connector;  // null: ConnectWebSocket
  StoreOptions store;
  std::string label;  // Enroll: the label admins see (default: host name)
  // Enroll: failed unlocks that erase the vault (0 = never). Unset: by role,
  // kFieldRoleFailedUnlocks for pendamping, konselor and psikolog, never for
  // office, supervisor and admin devices. It is kept in the vault, bound to
  // its ciphertext, and vault.max_failed_unlocks is not read.
  std::optional<std::uint32_t> max_failed_unlocks;
  // Case keys kept unwrapped in guarded memory at once (each costs the process
  // a few memory mappings; older ones are unwrapped again when needed).
  std::size_t case_key_cache = 256;
};

// Public facts about this device (from device.json; no secret).
struct DeviceInfo {
  Id device_id{};
  std::string state;  // "pending", "active", "revoked"
  std::string user;
  std::string role;  // core::RoleName
  std::string unit_id;
  std::string unit_name;
  TimeZone time_zone = TimeZone::kWib;  // the unit's: times are shown in it
  std::string server_url;
  std::string label;
  std::string fingerprint;       // of this device's signing key (compare on approval)
  std::string unit_fingerprint;  // of the pinned unit root key
  std::uint32_t max_failed_unlocks = 0;
};

enum class Readability {
  kReadable,
  kNoKey,      // this device does not hold the key (e.g. CLINICAL on a pendamping)
  kIntegrity,  // the value did not verify: altered or moved; never shown as data
};
std::string_view ReadabilityName(Readability r);  // "readable", "key_missing", "integrity"

struct FieldView {
  std::string name;   // proto field name
  std::string label;  // in the requested language
  bool sealed = false;
  bool pending = false;  // a local edit waits to be synced
  Readability readability = Readability::kReadable;
  nlohmann::json value;  // FieldToJson when readable, else null
  std::string display;   // FieldToDisplay when readable
};

// A referral of a case to a partner agency (rujukan).
struct ReferralView {
  Id referral_id{}, case_id{};
  std::string agency, service;  // codes
  std::string status;           // "draft", "checked", "signed", "sent", "confirmed"
  bool consent = false, accompanied = false;
  std::int64_t consent_at = 0, created_at = 0, sent_at = 0, confirmed_at = 0;  // Unix seconds
  std::string created_by, signed_by;
  std::vector<std::string> disclosed_fields;
  bool pending = false;  // a change of it waits to be sent
};

// A deadline of a case (`teduh task list`), computed from its fields.
struct TaskView {
  Id task_id{};  // derived from the case, the kind and the cycle
  Id case_id{};
  std::string case_number;
  // "outreach", "monitoring", "closure_proposal", "shelter_stay", "post_verdict_visit"
  std::string kind;
  std::int64_t due_at = 0;  // Unix seconds
  // Post-verdict visits: this is visit `cycle` of `cycles` (1 of 3, ...); else 0.
  std::uint32_t cycle = 0, cycles = 0;
  bool overdue = false;
  bool mine = false;  // the case is assigned to this device's user
  std::string assigned_pendamping;
};

// One side of a conflict as written: who, when, and the value (decrypted
// when this device holds the key; `value.readability` says otherwise).
struct ConflictSideView {
  std::string author;
  Stamp stamp;
  std::int64_t written_ms = 0;  // the writer's clock (from its stamp)
  FieldView value;
};

struct ConflictView {
  Id conflict_id{}, case_id{}, record_id{};
  std::string record_kind;  // short kind name: "case", "person"
  std::string field;        // field name
  std::string state;        // "open" or "resolved"
  std::int64_t detected_ms = 0;
  std::string resolved_by, resolution;
  std::int64_t resolved_ms = 0;
  ConflictSideView kept;   // the value the server kept provisionally (the later stamp)
  ConflictSideView other;  // the concurrent value it set aside
};

// One value a field has had (from the server's history; needs a connection).
struct HistoryEntryView {
  std::string field;   // field name
  int version = 0;     // 1 = the oldest value of this field
  std::string reason;  // "current", or why it left: "overwritten", "lost_merge", "merged"
  std::string author;
  Stamp stamp;
  std::int64_t written_ms = 0;  // the writer's clock
  FieldView value;              // decrypted where this device holds the key
};

// A value exactly as this device stores it (open: the single-field
// serialization; sealed: the ciphertext), for convergence checks.
struct StoredField {
  Id record_id{};
  std::string kind;
  std::uint32_t field = 0;
  Stamp stamp;
  std::string value;
  bool sealed = false;
  bool pending = false;
};

struct RecordView {
  Id record_id{};
  std::vector<FieldView> fields;
};

struct NoteView {
  Id note_id{};
  std::string kind;  // short enum name, e.g. "VISIT"
  std::string author;
  std::int64_t written_at = 0;
  bool clinical = false;
  bool pending = false;
  Readability readability = Readability::kReadable;
  std::string text;  // empty unless readable
};

// Someone opened the case in full (an Access record).
struct AccessView {
  std::string viewer;
  std::int64_t viewed_at = 0;  // Unix seconds
  bool pending = false;        // this device's, not sent yet
};

// An assessment of the case (asesmen), a dated snapshot.
struct AssessmentView {
  Id assessment_id{};
  std::string kind;                // "INITIAL", "PSYCHOLOGICAL", "REVIEW" or ""
  std::optional<Id> corrects;      // the earlier assessment this one corrects
  std::optional<Id> corrected_by;  // a later one that corrects this one
  std::string risk_level;          // short enum name, e.g. "HIGH"
  std::vector<std::string> needs;  // short enum names
  std::string assessed_by;
  std::int64_t assessed_at = 0;  // Unix seconds
  bool pending = false;
  // The sealed rationale and safety plan: nullopt when not recorded or not
  // readable here (`readability` says which).
  Readability readability = Readability::kReadable;
  std::optional<std::string> rationale, safety_plan, condition;
  // Clinical: nullopt on a device without the CLINICAL key (kNoKey).
  std::optional<std::string> diagnosis, recommendations;
};

// What an assessment records besides its risk, needs, rationale and safety
// plan (`teduh assessment add --kind ... --corrects ...`). Views of text the
// caller owns (and wipes).
struct AssessmentDetails {
  std::string_view kind;       // initial (default), psychological, review, or Indonesian
  std::string_view condition;  // sealed
  std::string_view diagnosis, recommendations;  // sealed, CLINICAL
  std::string_view corrects;  // id or unique prefix of an earlier assessment of the case
};

// A service the unit delivered (layanan).
struct ServiceView {
  Id service_id{};
  std::string service;             // short enum name, e.g. "ACCOMPANIMENT"
  std::string accompaniment;       // "LEGAL", "PSYCHOLOGICAL", "SOCIAL", "MEDICAL" or ""
  std::string activity;            // a code of the service_activity list, or ""
  std::optional<Id> corrects;      // the earlier record this one corrects
  std::optional<Id> corrected_by;  // a later one that corrects this one (not counted)
  std::string delivered_by;
  std::int64_t delivered_at = 0;  // Unix seconds
  bool pending = false;
  Readability readability = Readability::kReadable;
  std::optional<std::string> note;  // sealed; nullopt when none or unreadable
};

// What a service record says besides the service, its kind and note.
struct ServiceDetails {
  std::string_view activity;  // a code or label of the service_activity list
  std::string_view corrects;  // id or unique prefix of an earlier service of the case
};

struct CaseView {
  Id case_id{};
  std::vector<FieldView> fields;
  std::vector<RecordView> persons;
  std::vector<NoteView> notes;
  std::vector<AssessmentView> assessments;  // oldest first
  std::vector<ServiceView> services;        // oldest first
  std::vector<AccessView> accesses;         // oldest first
};

// Whether showing a case leaves a trace (an Access record that syncs).
enum class ViewLog { kNone, kRecord };

struct CaseSummary {
  Id case_id{};
  std::string case_number;
  std::string stage;       // short enum name or ""
  std::string risk_level;  // short enum name or ""
  std::string category;
  std::vector<std::string> violence_types;
  std::int64_t received_at = 0;
  std::optional<std::string> victim_initials;  // "S.A."; nullopt if none or unreadable
  std::string assigned_pendamping, assigned_konselor, assigned_psikolog;
  bool pending = false;
};

struct OutboxItem {
  OutboxEntry entry;       // entry.detail: the server's own sentence (English)
  std::string message;     // what the server said, in the officer's language
  std::string kind_short;  // "case", "person", ...
  std::string field_name;
};

struct DeviceStatus {
  DeviceInfo device;
  OutboxCounts counts;
  std::vector<OutboxItem>
      outbox;  // newest first: pending, merged, conflict, rejected (all: and accepted)
  std::int64_t last_sync_ms = 0;
  std::string last_sync_result;  // "ok" or the error message
  std::int64_t clock_offset_ms = 0;
  std::vector<std::string> keys;  // "general/1", "clinical/1"
  bool holds_unit_root_key = false;
  // Values a restored server no longer had, set aside here after a reset
  // (this device may hold their last copy; see docs/CLIENT.md, "Sync").
  std::size_t set_aside = 0;
};

struct SyncProgress {
  std::string phase;  // "connecting", "pushing", "pulling", "done"
  std::size_t pushed = 0;
  std::size_t to_push = 0;
  std::size_t pulled = 0;
};

// What `teduh key rotate` did.
struct RotationReport {
  teduh::AccessClass key_class = teduh::ACCESS_CLASS_GENERAL;
  std::uint32_t epoch = 0;     // the new epoch
  std::size_t rewrapped = 0;   // case key records re-wrapped under it
  std::size_t devices = 0;     // devices granted it
  bool resumed = false;        // an interrupted rotation was finished
  std::size_t bytes_sent = 0;  // of the re-wraps and grants
};

// `teduh key status`: per class, its epochs and who holds them.
struct KeyEpochView {
  std::uint32_t epoch = 0;
  std::uint64_t case_keys = 0;  // case key records still wrapped under it
  std::uint32_t devices_granted = 0, devices_acked = 0;
  bool retirable = false;  // older, wraps no case key, every device holds the current one
};
struct KeyDeviceView {
  Id device_id{};
  std::string user, role;
  std::uint32_t acked_epoch = 0;
};
struct KeyClassView {
  teduh::AccessClass key_class = teduh::ACCESS_CLASS_GENERAL;
  std::uint32_t current_epoch = 0;
  std::vector<KeyEpochView> epochs;
  std::vector<KeyDeviceView> devices;
};

// `teduh case rekey`.
struct RekeyReport {
  Id held_by{};                  // the device whose cases were re-keyed (zero with --all)
  std::size_t cases = 0;         // cases re-keyed (new case key versions, old ones deleted)
  std::size_t skipped = 0;       // cases without a case key (nothing sealed to re-key)
  std::size_t values = 0;        // sealed values re-encrypted (current, past, in conflicts)
  std::size_t keys_dropped = 0;  // old case key records deleted on the server
  std::size_t bytes_sent = 0;
};

// `teduh user offboard`.
struct OffboardReport {
  std::uint32_t devices_revoked = 0;
  std::uint32_t cases_reassigned = 0;
};

// `teduh case shred`.
struct ShredView {
  Id case_id{};
  std::string state;         // "requested" (supervisor) or "shredded" (admin device)
  std::string requested_by;  // the supervisor
  std::uint64_t purged_values = 0;
};

struct SyncReport {
  std::size_t pushed = 0, accepted = 0, merged = 0, conflict = 0, rejected = 0;
  std::size_t pulled = 0, deferred = 0, grants_added = 0;
  std::size_t bad_grants =
      0;  // grants, retirements or shred orders whose unit signature did not verify: ignored
  std::size_t shredded = 0;        // cases deleted on a signed shred order
  std::size_t evicted = 0;         // cases deleted: no longer assigned to this user
  std::size_t evictions_kept = 0;  // ... kept for now: an edit of them is still unsent
  std::size_t rekeyed = 0;         // cases whose old key versions a re-key deleted here
  std::size_t resealed = 0;        // unsent edits sealed again under a re-key's new version
  // Edits given a new number because the server held another change under
  // theirs (this home was restored from an earlier copy), then sent.
  std::size_t renumbered = 0;
  // Edits the server had no room for today (its storage bound for this
  // device or the unit): they stay pending and go at a later sync.
  std::size_t held_back = 0;
  // The server's disk is full: it saved nothing this device sent (the
  // outbox waits for a later sync), and the pull went on.
  bool server_disk_full = false;
  // After a reset: values the restored server no longer had, set aside.
  std::size_t set_aside = 0;
  // Pulled sealed values: opened and verified with the case key; held for a key
  // class this device may not hold (e.g. CLINICAL on a pendamping's tablet);
  // damaged or altered (stored, shown as unreadable, and worth reporting).
  std::size_t verified = 0, not_for_this_device = 0, unreadable = 0;
  // This device's own store, checked at the start of a sync when a read met
  // damage or a day has passed (LocalStore::Repair): damaged rows found
  // (removed and pulled again, or, in the outbox, sent again); unsent changes
  // that damage made unreadable (marked, never sent); what SQLite's
  // integrity_check still finds after the indexes were built again.
  std::size_t store_damaged_rows = 0, store_unsendable = 0;
  std::vector<std::string> store_damage_left;
  // Values the server found damaged in its store (Welcome.repair): copies
  // this device offered, and how many the server took (each matched what it
  // had stored, byte for byte).
  std::size_t repairs_offered = 0, repaired_on_server = 0;
  bool reset = false;  // the server was restored from a backup; changes were re-pushed
  bool poked = false;
  std::string state;  // device state after the sync
  std::int64_t clock_offset_ms = 0;
};

// A recovery kit (core/recovery_kit.h): the shares' text in guarded memory.
struct RecoveryKitView {
  std::vector<crypto::SecureBuffer> shares;
  unsigned threshold = 0;
  std::string unit_name;
  std::int64_t made_ms = 0;
  std::size_t escrowed = 0;  // class key epochs the server keeps for recovery
};

struct BackupKeyView {
  std::string token;   // "TBK1-...": for `teduh-server backup-key`
  std::string secret;  // "TBS1-...": only when asked for
};

struct BackupCheck {
  std::string unit_id;
  std::uint64_t generation = 0;
  std::int64_t created_ms = 0;
  std::uint64_t audit_entries = 0;
  std::uint64_t store_bytes = 0;
  std::uint64_t devices = 0, records = 0, values = 0;  // what its store holds
};

struct RemoteDevice {
  Id device_id{};
  std::string user, role, state, label, fingerprint;
  std::int64_t enrolled_ms = 0, last_sync_ms = 0;
  std::int64_t revoked_ms = 0;  // revoked devices
  bool wipe_ordered = false;    // a signed wipe order waits for it
  std::int64_t wiped_ms = 0;    // when it reported its erasure (signed receipt)
  std::string root_key;         // "held", "handed" (not yet confirmed) or empty
  // After a restore that lacked changes of this device (restore_lost > 0):
  // when that was found, how many sequence numbers the restored store lacked,
  // and how many of those changes the device has sent again.
  std::int64_t restore_ms = 0;
  std::uint64_t restore_lost = 0;
  std::uint64_t resent = 0;
};

class Device {
 public:
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  // Enrolls a new device in `home` with the code from `teduh-server enroll`
  // (or `init` for the bootstrap admin, whose device creates the unit root key
  // and the first class keys). Nothing is saved unless the server accepted
  // the code and the unit fingerprint in the code matches (errc::wrong_unit).
  // errc::vault_exists if `home` already holds a device.
  static Outcome<std::unique_ptr<Device>> Enroll(const std::filesystem::path& home,
                                                 std::string_view server_url, std::string_view code,
                                                 const crypto::SecureBuffer& passphrase,
                                                 DeviceOptions options = {});
  // Enrolls an admin device rebuilt from a recovery kit (`teduh init
  // --recover`): `shares` (any threshold of one kit of this unit) rebuild the
  // unit root key, which signs the enrollment, so the device is active at
  // once; its first sync opens the class keys the server keeps for recovery.
  // `code` is an admin code from `teduh-server enroll`. errc::bad_value for
  // too few or mistyped shares, errc::wrong_unit for shares of another unit
  // than the code's; nothing is saved then.
  static Outcome<std::unique_ptr<Device>> Recover(const std::filesystem::path& home,
                                                  std::string_view server_url,
                                                  std::string_view code,
                                                  std::span<const RecoveryShare> shares,
                                                  const crypto::SecureBuffer& passphrase,
                                                  DeviceOptions options = {});
  // Opens an enrolled device. errc::vault_missing, wrong_passphrase (nothing
  // changed but the failure counter), vault_wiped (every file of the device
  // was erased), vault_corrupt, store_failed.
  static Outcome<std::unique_ptr<Device>> Open(const std::filesystem::path& home,
                                               const crypto::SecureBuffer& passphrase,
                                               DeviceOptions options = {});

  // True if `home` holds an enrolled device (a vault file).
  static bool Exists(const std::filesystem::path& home);
  // Read before the passphrase is asked (nothing secret): the failed unlocks
  // so far, the limit that erases the device (0 = never) and how many edits
  // are still unsent (they are lost if it erases). Zeros when unreadable.
  struct UnlockRisk {
    std::uint32_t failed = 0, limit = 0;
    std::uint64_t unsent = 0;
    // The warning to show before asking, or "" (within the last three tries,
    // with unsent edits).
    std::string Warning() const;
  };
  static UnlockRisk UnlockRiskOf(const std::filesystem::path& home);
  // Why `home` holds no device if it erased itself on a wipe order
  // (errc::device_revoked, with when); nullopt otherwise.
  static std::optional<Failure> Erasure(const std::filesystem::path& home);

  DeviceInfo info() const;

  // ---- Cases (offline) ---------------------------------------------------------
  // A new case assigned to this device's user (per role); sets case_number,
  // created_at, received_at (default now) and stage (default PENGADUAN).
  // errc::unknown_field / bad_value with the valid names or values listed;
  // errc::key_missing if this device holds no GENERAL key yet; forbidden on
  // an admin device (admins hold no case content).
  Outcome<Id> NewCase(const std::vector<std::string>& sets);
  Outcome<void> SetCaseFields(std::string_view case_ref, const std::vector<std::string>& sets);
  // `role`: victim, perpetrator, reporter, witness (or Indonesian labels).
  Outcome<Id> AddPerson(std::string_view case_ref, std::string_view role,
                        const std::vector<std::string>& sets);
  Outcome<void> SetPersonFields(std::string_view person_ref, const std::vector<std::string>& sets);
  // Append-only. Counselling and psychology notes are CLINICAL
  // (errc::key_missing if this device holds no CLINICAL key).
  Outcome<Id> AddNote(std::string_view case_ref, std::string_view text, std::string_view kind);
  Outcome<std::vector<CaseSummary>> ListCases();
  // With ViewLog::kRecord (what `teduh case show` does) the full view is
  // recorded as an Access record of the case, saved with its outbox entry
  // before the view is returned: it syncs, and the server audits it.
  Outcome<CaseView> ShowCase(std::string_view case_ref, std::string_view lang = "id",
                             ViewLog log = ViewLog::kNone);
  // Full id of a case from 32 hex digits or a unique prefix (>= 6 digits).
  Outcome<Id> ResolveCase(std::string_view case_ref);

  // The outbox lists the newest 200 changes not (yet) accepted; with
  // `all`, every change still in the outbox, accepted ones too (a shredded
  // or unassigned case leaves the device with its changes).
  Outcome<DeviceStatus> Status(bool all = false);

  // Every value of a case and its child records as stored here, by record and
  // field (open values in plaintext: handle like ShowCase output).
  Outcome<std::vector<StoredField>> SnapshotCase(const Id& case_id);

  // ---- History (online: the server keeps every value a field has had) --------------
  // A case's fields over time, oldest first per field; `field` empty: all.
  // With ViewLog::kRecord, leaves an Access record first (as ShowCase).
  Outcome<std::vector<HistoryEntryView>> CaseHistory(std::string_view case_ref,
                                                     std::string_view field,
                                                     std::string_view lang = "id",
                                                     ViewLog log = ViewLog::kNone);
  // Brings version `version` of a case field back as a new edit (synced like any).
  Outcome<void> RestoreCaseField(std::string_view case_ref, std::string_view field, int version);
  // The same for a person of a case (victim, perpetrator, ...): `person_ref`
  // is the person's id or a unique prefix, as `person set` takes it.
  Outcome<std::vector<HistoryEntryView>> PersonHistory(std::string_view person_ref,
                                                       std::string_view field,
                                                       std::string_view lang = "id",
                                                       ViewLog log = ViewLog::kNone);
  Outcome<void> RestorePersonField(std::string_view person_ref, std::string_view field,
                                   int version);

  // Re-wraps the vault under a new passphrase (the device's keys and data are
  // unchanged). The old passphrase stops working; on failure it still works.
  Outcome<void> ChangePassphrase(const crypto::SecureBuffer& new_passphrase);

  // ---- Deadlines (the task board) -------------------------------------------------
  // Open deadlines of the cases on this device, overdue first then by due
  // time, offline. Computed from each case's fields: outreach 24/48/72 h
  // after it was received for risk high/medium/low (unassessed counts as
  // high) until it reaches the outreach stage (a reopened case: from when it
  // was reopened); monitoring every 3 months (6 for low risk) while in
  // monitoring; the shelter stay 14 days after she entered, until she left;
  // home visits 30, 60 and 90 days after the court's verdict (the next one
  // not yet made). `due_only`: due within a day or overdue; `mine_only`:
  // cases assigned to this user.
  Outcome<std::vector<TaskView>> ListTasks(bool due_only, bool mine_only);
  // Marks a deadline met (a Task record that syncs); the next monitoring
  // cycle then comes due. errc::not_found for an unknown or met task.
  Outcome<TaskView> CompleteTask(std::string_view task_ref);

  // A visit or other attempt to reach the victim (`teduh visit`), offline:
  // a ContactAttempt record (method: home_visit, phone, message, other;
  // outcome: reached, not_reached, unsafe) and, if `note` is not empty, a
  // visit note, in one transaction. Reaching her moves a case that had not
  // reached the outreach stage to it. Returns the attempt's id.
  Outcome<Id> LogVisit(std::string_view case_ref, std::string_view method, std::string_view outcome,
                       std::string_view note);

  // ---- Assessment, services, reopening (offline) ------------------------------------
  // Records an assessment of an open case (`teduh assessment add`): an
  // append-only Assessment record (risk: rendah/sedang/tinggi or low/medium/
  // high; needs as for the case's `needs`; rationale and safety plan sealed,
  // empty: not recorded) and, in the same transaction, the case's
  // risk_level, needs (when given: replaced by these), risk_rationale and
  // safety_plan (when given). errc::bad_value for an unknown risk or need
  // (valid values listed); invalid_argument on a closed case; forbidden on
  // an admin device. Returns the assessment's id.
  //
  // `details`: the kind (initial by default; psychological only from a
  // psychologist's device: errc::forbidden otherwise); the victim's condition
  // (sealed); the diagnosis and recommendations (sealed CLINICAL: forbidden
  // on a device whose role holds no CLINICAL key); and `corrects`, an earlier
  // assessment of the same case that this one corrects (errc::not_found or
  // invalid_argument otherwise; the old one stays, marked corrected).
  Outcome<Id> AddAssessment(std::string_view case_ref, std::string_view risk,
                            const std::vector<std::string>& needs, std::string_view rationale,
                            std::string_view safety_plan, const AssessmentDetails& details = {});
  // Records a service delivered now (`teduh service add`): one of the six
  // services of the unit (complaint, outreach, case_management, shelter,
  // mediation, accompaniment, or their Indonesian labels); accompaniment
  // needs its kind (legal, psychological, social, medical), the others take
  // none. `note` is sealed. Append-only. A shelter service also records that
  // the victim entered the shelter now (shelter_entered_at) unless she is
  // there already, so the 14-day stay comes due. errc::bad_value for an
  // unknown service or kind, invalid_argument for a kind where none belongs
  // or a missing one; forbidden on an admin device.
  // `details`: what was done (a code of the unit's service_activity list:
  // errc::bad_value otherwise) and `corrects`, an earlier service of the same
  // case this record corrects (the old one stays, marked corrected, and no
  // longer counts in reports).
  Outcome<Id> AddService(std::string_view case_ref, std::string_view service,
                         std::string_view accompaniment, std::string_view note,
                         const ServiceDetails& details = {});
  // Reopens a closed case (`teduh case reopen`): a new episode (episode + 1),
  // the stage back to PENGADUAN, reopened_at now, the reason (repeat_violence,
  // new_need, victim_returned, other), and the closure reason, time and
  // checklist cleared (they stay in history); with `note`, a case-review
  // note, sealed. The new episode's outreach is due from reopened_at.
  // errc::invalid_argument for a case that is not closed; bad_value for an
  // unknown reason; forbidden on an admin device. Returns the new episode.
  Outcome<int> ReopenCase(std::string_view case_ref, std::string_view reason,
                          std::string_view note);

  // ---- Referrals (rujukan) -----------------------------------------------------------
  // Refers the case to a partner agency (`agency`, `service`: codes of
  // codes.h, any case) for a service, offline. `disclose`: the Case and
  // Person fields the letter discloses (by name). State "draft".
  // errc::bad_value for an unknown code or field (the valid ones listed);
  // errc::forbidden on an admin device.
  Outcome<Id> AddReferral(std::string_view case_ref, std::string_view agency,
                          std::string_view service, bool consent,
                          const std::vector<std::string>& disclose, bool accompanied);
  // Moves a referral on, offline: "consent" (the victim consented, now),
  // "accompany" (an officer goes along), "check", "sign" (supervisors
  // only), "send", "confirm" — each from the state before it. "send" is
  // refused without recorded consent, and for a child or a victim with a
  // disability or of old age unless an officer accompanies.
  Outcome<ReferralView> AdvanceReferral(std::string_view referral_ref, std::string_view action);
  Outcome<std::vector<ReferralView>> ListReferrals(std::string_view case_ref);

  // ---- Reconciliation (concurrent edits of REVIEW fields) -------------------------
  // Conflicts this device holds, oldest first; open ones unless `include_resolved`.
  // Values are not decrypted here.
  Outcome<std::vector<ConflictView>> ListConflicts(bool include_resolved = false);

  // The unit's code lists as this device knows them: the defaults and the
  // unit's own codes from its last sync.
  Outcome<CodeBook> Codes();
  // The unit's report (core/report.h) from this device's store, offline: the
  // counts `teduh-server report` gives over the same records. Only office
  // and supervisor devices hold the whole unit (errc::forbidden otherwise);
  // errc::invalid_argument for an unknown breakdown or an empty period.
  Outcome<CaseReport> Report(std::int64_t from_s, std::int64_t to_s,
                             const std::vector<std::string>& by, std::int64_t utc_offset_s);
  // One conflict with both values decrypted where the keys allow.
  // With ViewLog::kRecord, leaves an Access record on the case first.
  Outcome<ConflictView> ShowConflict(std::string_view conflict_ref, std::string_view lang = "id",
                                     ViewLog log = ViewLog::kNone);
  // Resolves it offline (office staff and supervisors): `take` is "kept",
  // "other", "mine" or "theirs" (the side this user wrote, or the other one),
  // or empty with `value` given as for --set. The chosen value becomes a new
  // edit of the field and the conflict is marked resolved; both sync.
  // Returns the conflict's id.
  Outcome<Id> ResolveConflict(std::string_view conflict_ref, std::string_view take,
                              const std::optional<std::string>& value);

  // Checks every row of this device's store and SQLite's integrity_check
  // (LocalStore::Check). Damage found is repaired at the next Sync.
  Outcome<LocalStoreCheck> CheckStore();

  // ---- Network -------------------------------------------------------------------
  // Pushes the outbox, pulls until up to date (unless `push_only`: on a weak
  // connection an officer may send her work first and receive later), applies
  // grants. Resumable after any interruption; a rejected change stays visible
  // in Status().
  Outcome<SyncReport> Sync(const std::function<void(const SyncProgress&)>& progress = {},
                           bool push_only = false);
  // Admin devices.
  Outcome<std::vector<RemoteDevice>> ListRemoteDevices();
  // Grants the class keys of the target's role (signed with the unit root key,
  // sealed to the target's box key). errc::forbidden without the root key.
  // With `with_root_key` (a device enrolled with an admin code only, which is
  // refused without it), also hands it the unit root key, sealed to its box
  // key and signed: it holds the root key after its next sync. `fingerprint`
  // (from `teduh status` on the device) must match the keys the server lists
  // for it (errc::integrity otherwise, nothing sent); it is required with
  // `with_root_key` (errc::invalid_argument), so that the root key is never
  // sealed to a key the server chose.
  Outcome<RemoteDevice> ApproveDevice(std::string_view device_ref, bool with_root_key = false,
                                      std::string_view fingerprint = {});
  // Makes a recovery kit of the unit root key (admin device holding it):
  // `shares` shares, any `threshold` of which rebuild it. First gives the
  // server every class key epoch this device holds, sealed to the unit
  // escrow key, so that a rebuilt admin device can read the unit's cases;
  // the server records the kit (who, when, n and k) in its audit log.
  Outcome<RecoveryKitView> MakeRecoveryKit(unsigned shares, unsigned threshold);

  // Revokes another device of the unit: signs a wipe order with the unit root
  // key and sends it. The server refuses the device from then on; when it
  // next connects it verifies the order, erases its vault and store, and
  // returns a signed receipt (RemoteDevice::wiped_ms). errc::forbidden
  // without the root key; errc::invalid_argument for this device itself.
  Outcome<RemoteDevice> RevokeDevice(std::string_view device_ref);

  // Rotates a class key (admin device with the unit root key; ARCHITECTURE
  // §4, PROTOCOL §8b): makes the next epoch, re-wraps every case key of the
  // class under it, grants it to every active device that holds the class,
  // and has the server apply it all at once. Refused while this device has
  // unsent edits, or when the server knows case keys this device has not
  // pulled (sync first). Interrupted, it is resumed by running it again: the
  // new key is kept in the vault (and not used for new cases) until the
  // server has committed the rotation.
  Outcome<RotationReport> RotateClassKey(
      teduh::AccessClass key_class,
      const std::function<void(std::size_t done, std::size_t total)>& progress = {});
  // Epochs per class, how many case keys each still wraps, and which devices
  // hold which (admin devices).
  Outcome<std::vector<KeyClassView>> KeyStatus();
  // The unit backup key (admin device holding the unit root key; it is
  // derived from it, core::BackupKeyPair): `token` names its public key to
  // the server, signed by the root key; with `with_secret`, `secret` is the
  // secret key as text for a restore (core::FormatBackupSecret). Works offline.
  Outcome<BackupKeyView> BackupKey(bool with_secret);
  // Opens a server backup file with the unit backup key and checks it whole:
  // every chunk, and its store's PRAGMA integrity_check (admin device
  // holding the unit root key). Nothing is written.
  Outcome<BackupCheck> OpenBackup(const std::filesystem::path& file);
  // Offboards a user who leaves (admin device with the unit root key): every
  // one of their devices is revoked with a signed wipe order, and every case
  // assigned to them is assigned to `reassign_to` (who must have an active
  // device), in one server transaction. Edits of theirs that reached the
  // server stay; their devices erase themselves at their next connection.
  Outcome<OffboardReport> OffboardUser(const std::string& user, const std::string& reassign_to);
  // Assigns the case (office and supervisor devices): the users named get
  // it on their devices at their next sync; devices of a worker it is taken
  // from push their edits of it, then delete it (PROTOCOL §5). An empty name
  // leaves that assignment as it is.
  Outcome<Id> AssignCase(std::string_view case_ref, const std::string& pendamping,
                         const std::string& konselor, const std::string& psikolog);
  // Crypto-shredding (PROTOCOL §8c). On a supervisor device: asks for the
  // case to be shredded (state "requested"). On the admin device holding the
  // unit root key: carries out a pending request with a signed order (state
  // "shredded"): the server purges the case, and every device deletes it at
  // its next sync. Other roles: errc::forbidden.
  Outcome<ShredView> ShredCase(std::string_view case_ref);
  // Retires every old epoch of a class that nothing references any more
  // (KeyEpochView::retirable), signed with the unit root key: the server
  // deletes its grants and every device deletes the key at its next sync.
  // Returns the epochs retired (none is not an error).
  Outcome<std::vector<std::uint32_t>> RetireEpochs(teduh::AccessClass key_class);

  // Re-keys cases (admin device with the unit root key; PROTOCOL §8d): those
  // the device `held_by_ref` ever held (a lost or revoked one), or with
  // `all` every case of the unit. Each gets a new case key version per class,
  // wrapped under the current epoch; every sealed value of it on the server
  // (current, past and in conflicts) is opened here and sealed again under
  // it; then the old versions are deleted everywhere. Resumable: run it
  // again. errc::integrity (after re-keying the others) if a value does not
  // open with its case key.
  Outcome<RekeyReport> RekeyCases(
      std::string_view held_by_ref, bool all,
      const std::function<void(std::size_t done, std::size_t total)>& progress = {});

  // Wipes every key from memory; every later call fails with errc::locked.
  void Lock();

 private:
  struct Meta;
  class OffsetEnv;
  Device(std::filesystem::path home, DeviceOptions options);

  Outcome<Id> ResolveCaseLocked(std::string_view case_ref);
  // The case an edit of case content names: errc::forbidden on an admin
  // device (admins hold no case content), else as ResolveCaseLocked.
  Outcome<Id> CaseToEditLocked(std::string_view case_ref);
  // Full id of a record of `kind` from 32 hex digits or a unique prefix (>= 6).
  Outcome<Id> ResolveRecordLocked(std::string_view kind, std::string_view ref,
                                  std::string_view noun);
  // For `corrects`: nullopt for an empty `ref`, else the record of `kind`
  // that `ref` names, which must belong to `case_id` (invalid_argument).
  Outcome<std::optional<Id>> CorrectedRecordLocked(std::string_view kind, std::string_view ref,
                                                   const Id& case_id, std::string_view noun);
  Outcome<void> CheckOpen() const;
  Outcome<void> SaveMeta();
  // Connects, authenticates and takes the welcome (grants, clock), for the
  // online requests that are not a sync.
  Outcome<std::unique_ptr<class SyncClient>> ConnectOnline();
  Outcome<std::unique_ptr<class SyncClient>> ConnectAndAuthenticate(
      teduh::sync::v1::Welcome* welcome);
  // The server handed this device a wipe order instead of a welcome: if the
  // unit root key signed it for this device, erases the vault, the store and
  // device.json, leaves an `erased` note, and sends a signed receipt. Returns
  // the failure to report (errc::device_revoked once erased; errc::integrity,
  // nothing erased, for an order the unit did not sign).
  Failure CarryOutWipe(class SyncClient& client);
  // An admin request about another device: checks the root key, connects,
  // and finds the one device whose id starts with `device_ref`.
  struct AdminTarget {
    std::unique_ptr<class SyncClient> client;
    teduh::sync::v1::DeviceInfo device;
  };
  Outcome<AdminTarget> ConnectForDevice(std::string_view device_ref, std::string_view action);
  // Checks the unit key, updates state and clock offset, stores verified
  // grants. Returns the number of class keys added; `bad_grants` counts grants
  // that did not verify (ignored, never used).
  // Whether the server's store forgot what this device saw under its
  // generation (put back from a file-level copy); `acknowledged_mark` gets
  // the highest device_seq the server acknowledged, for the claim.
  Outcome<bool> RolledBackLocked(const teduh::sync::v1::Welcome& welcome,
                                 std::uint64_t* acknowledged_mark);
  Outcome<std::size_t> AcceptWelcome(const teduh::sync::v1::Welcome& welcome,
                                     std::size_t* bad_grants);
  // The root key grant and escrowed class keys of a Welcome (admin devices):
  // each verified against the pinned root key, then kept in the vault.
  // Returns the class keys added; `bad` counts what did not verify.
  Outcome<std::size_t> AcceptCustodyLocked(const teduh::sync::v1::Welcome& welcome,
                                           const std::string& pinned_pk, std::size_t* bad);
  // Escrow grants of the class key epochs this device holds and the Welcome
  // lacks (a device holding the unit root key; else none).
  Outcome<std::vector<teduh::keys::v1::EscrowGrant>> EscrowMissingLocked(
      const teduh::sync::v1::Welcome& welcome);
  // Whether the unit root key signed the role and keys the server lists for
  // `d` (DeviceInfo.approval), whichever admin device approved it.
  bool UnitApprovedLocked(const teduh::sync::v1::DeviceInfo& d) const;
  static Outcome<std::unique_ptr<Device>> EnrollWith(const std::filesystem::path& home,
                                                     std::string_view server_url,
                                                     std::string_view code,
                                                     const crypto::SecureBuffer& passphrase,
                                                     DeviceOptions options,
                                                     crypto::SignKeyPair* recovered_root);
  // Tells the server which class key epochs this device holds, if the
  // welcome showed one it had not been told of (key status, retirement).
  Outcome<void> AckHeldKeys(class SyncClient& client, const teduh::sync::v1::Welcome& welcome);
  // The epoch new case keys of a class are wrapped under: the newest held,
  // except one of a rotation not yet committed.
  std::optional<std::uint32_t> WriteEpochLocked(teduh::AccessClass key_class);
  DeviceInfo InfoLocked() const;
  const CodeBook& CodesLocked() const;
  // Case keys.
  Outcome<const crypto::SecureBuffer*> CaseKeyFor(const Id& case_id, teduh::AccessClass key_class,
                                                  std::uint32_t version);
  Outcome<std::optional<std::uint32_t>> LatestCaseKeyVersion(const Id& case_id,
                                                             teduh::AccessClass key_class);
  // Edits.
  struct PendingSet {
    PendingSet(const FieldPolicy* f, std::string v, std::optional<Id> r = std::nullopt)
        : field(f), value(std::move(v)), resolves(r) {}
    const FieldPolicy* field = nullptr;
    std::string value;           // single-field serialization (plaintext)
    std::optional<Id> resolves;  // the Conflict record this edit resolves
  };
  Outcome<std::vector<PendingSet>> ParseSets(std::string_view kind,
                                             const std::vector<std::string>& sets);
  Outcome<void> WriteRecordFields(LocalStore::EditTxn& txn, const Id& record_id,
                                  std::string_view kind, const std::optional<Id>& parent,
                                  const Id& case_id, std::vector<PendingSet> sets);
  Outcome<void> EnsureCaseKey(LocalStore::EditTxn& txn, const Id& case_id,
                              teduh::AccessClass key_class, std::uint32_t* version);
  // Records in `txn` that the case's outreach deadline was met now (a Task
  // record), unless it is already; `open_case` holds the case's open fields.
  Outcome<void> OutreachMetLocked(LocalStore::EditTxn& txn, const Id& case_id,
                                  const google::protobuf::Message& open_case);
  // The case's open fields (sealed ones skipped), decoded.
  Outcome<void> LoadOpenLocked(const Id& record_id, google::protobuf::Message* out);
  // A case's assessments and services delivered, oldest first, decrypted
  // where this device holds the key.
  Outcome<std::vector<AssessmentView>> LoadAssessmentsLocked(const Id& case_id,
                                                             std::string_view lang);
  Outcome<std::vector<ServiceView>> LoadServicesLocked(const Id& case_id, std::string_view lang);
  // Calls `visit` with each record of `kind` under the case and its fields
  // rendered (sealed ones decrypted where this device holds the key).
  Outcome<void> ForEachChildLocked(
      const Id& case_id, std::string_view kind, std::string_view lang,
      const std::function<void(const Id&, std::vector<FieldView>&)>& visit);
  // Every open deadline of the cases here, by due time.
  Outcome<std::vector<TaskView>> AllTasksLocked();
  // Saves an Access record (this user, now) under the case, with its outbox entry.
  Outcome<void> RecordAccessLocked(const Id& case_id);
  // The device's clock (corrected by the server's offset), in milliseconds.
  std::int64_t NowMsLocked() const;
  // The fields of an append-only note (kind, author, now, sealed body).
  std::vector<PendingSet> NoteSets(int note_kind, std::string_view text);
  // A referral's stored fields, decoded (open fields only: it has no sealed ones).
  Outcome<ReferralView> LoadReferralLocked(const Id& referral_id);
  Outcome<std::vector<FieldView>> RenderFields(const Id& record_id, std::string_view kind,
                                               const Id& case_id, std::string_view lang);
  // The record whose history is asked (a case, or a person of a case) and,
  // when a field is named, that field (null: all of them).
  struct HistoryTarget {
    std::string_view kind;  // kCaseKind or kPersonKind
    Id case_id{}, record_id{};
    const FieldPolicy* field = nullptr;
  };
  Outcome<HistoryTarget> ResolveHistoryTarget(std::string_view kind, std::string_view ref,
                                              std::string_view field);
  Outcome<std::vector<HistoryEntryView>> FetchHistory(const HistoryTarget& target,
                                                      std::string_view lang,
                                                      std::vector<std::string>* plains);
  Outcome<std::vector<HistoryEntryView>> RecordHistory(std::string_view kind, std::string_view ref,
                                                       std::string_view field,
                                                       std::string_view lang, ViewLog log);
  Outcome<void> RestoreField(std::string_view kind, std::string_view ref, std::string_view field,
                             int version);
  Outcome<ConflictView> LoadConflictLocked(const Id& conflict_id, bool decrypt,
                                           std::string_view lang, std::string* kept_plain = nullptr,
                                           std::string* other_plain = nullptr);
  FieldView RenderValue(const Id& record_id, std::string_view kind, const Id& case_id,
                        const FieldPolicy& policy, StoredValue v, std::string_view lang,
                        std::string* plain_out, error_code* failed);
  // The cases of a pulled batch's shred orders that the unit root key signed
  // (others are counted in report->bad_grants and ignored).
  Outcome<std::vector<Id>> VerifiedShredsLocked(const teduh::sync::v1::Changes& batch,
                                                SyncReport* report);
  void DropCaseKeysLocked(const Id& case_id);
  // Re-keying: the new keys and re-sealed values for one fetched case
  // (`unreadable`: some value did not open and was left out; `problem`: why).
  Outcome<void> PrepareRekeyLocked(const Id& case_id, const teduh::sync::v1::RekeySet& set,
                                   teduh::sync::v1::RekeyCase* frame,
                                   std::vector<teduh::sync::v1::Reseal>* reseals, bool* unreadable,
                                   std::string* problem);
  // Re-seals the case's unsent sealed edits that are under an older case key
  // version than the newest one held here (after a re-key). Returns how many.
  Outcome<std::size_t> ResealCaseLocked(const Id& case_id);
  // A pulled key drop: re-seals unsent edits under the newest version, then
  // deletes the older versions if nothing here still needs them. True if it did.
  Outcome<bool> ApplyKeyDropLocked(const teduh::sync::v1::KeyDrop& drop, std::size_t* resealed);
  // A revocation of `device_id` with a wipe order signed by the unit root key.
  Outcome<teduh::sync::v1::RevokeDevice> RevocationLocked(const std::string& device_id);
  // errc::forbidden unless this is an admin device holding the unit root key.
  Outcome<void> RequireRootAdminLocked(std::string_view action) const;
  // Every case key record this device holds, decoded (the wrap is wiped after `visit`).
  Outcome<void> ForEachCaseKeyLocked(
      const std::function<Outcome<void>(const RecordInfo&, const teduh::keys::v1::CaseKey&)>&
          visit);
  Outcome<void> VerifyPulledLocked(const teduh::sync::v1::Changes& batch, SyncReport* report);
  Outcome<std::optional<std::string>> OpenValue(const Id& record_id, std::string_view kind,
                                                const Id& case_id, const StoredValue& v,
                                                Readability* readability);

  mutable std::mutex mu_;
  std::filesystem::path home_;
  DeviceOptions options_;
  std::unique_ptr<OffsetEnv> env_;
  std::unique_ptr<Meta> meta_;
  std::unique_ptr<Vault> vault_;
  std::unique_ptr<LocalStore> store_;
  std::unique_ptr<Hlc> hlc_;
  // Unwrapped case keys: (case, class, version) -> key. Wiped by Lock(). Each
  // guarded allocation costs the process memory mappings, so at most
  // options_.case_key_cache are kept (oldest evicted first); a pointer CaseKeyFor
  // returned stays valid until the next key is cached.
  using CaseKeyId = std::tuple<Id, int, std::uint32_t>;
  const crypto::SecureBuffer* CacheCaseKey(const CaseKeyId& id, crypto::SecureBuffer key);
  std::map<CaseKeyId, crypto::SecureBuffer> case_keys_;
  std::deque<CaseKeyId> case_key_order_;
  crypto::SecureBuffer spare_case_key_;  // an evicted key's buffer (wiped), reused
  bool locked_ = false;
};

// "Siti Aminah" -> "S.A." (first letter of each word, UTF-8 aware).
std::string Initials(std::string_view name);

}  // namespace teduh::core
