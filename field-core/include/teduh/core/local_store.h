// The local store of a device (ARCHITECTURE §3): one SQLite file in WAL mode
// (`<home>/store.db`) holding records, field values with their stamps, the
// outbox of local edits, the shadow copy of the server's value for fields
// with pending edits, the pull cursor, the persisted HLC and the device_seq
// counter. Design notes and invariants are at the top of local_store.cc.
//
// At rest every value is ciphertext: sealed fields keep their end-to-end
// ciphertext as received or written; open fields and outbox payloads are
// encrypted under the device storage key (XChaCha20-Poly1305, AD binding the
// record id and field, or the device_seq). Plain columns hold only ids, kinds,
// stamps, cursors and outbox states. A copy of the file yields no names, no
// notes, no risk levels.
//
// Errors: SQLITE_FULL -> errc::disk_full with the transaction rolled back
// (nothing half-saved, not sticky). A failure that leaves durable state
// uncertain (I/O error, corruption, a failed COMMIT or ROLLBACK) makes the
// store sticky: every later call returns errc::store_failed until it is
// reopened. SQLITE_BUSY after the busy timeout -> errc::store_busy (retry).
//
// Thread safety: a LocalStore is not thread-safe; its owner (Device)
// serialises calls. Several processes may open the same file (SQLite locks).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "teduh/core/env.h"
#include "teduh/core/hlc.h"
#include "teduh/core/ids.h"
#include "teduh/core/outcome.h"
#include "teduh/crypto/crypto.h"
#include "teduh/options.pb.h"
#include "teduh/sync/v1/sync.pb.h"

struct sqlite3;

namespace teduh::core {

class StmtCache;  // local_store.cc

enum class OutboxState : int {
  kPending = 0,   // waiting to be pushed (or resent)
  kAccepted = 1,  // the server applied it
  kMerged = 2,    // concurrent: merged by the field's rule
  kConflict = 3,  // concurrent REVIEW edit: queued for a person at the office
  kRejected = 4,  // refused by the server (final; `reason` says why)
};
std::string_view OutboxStateName(OutboxState state);  // "pending", "accepted", ...

// The reason an outbox entry carries when its change was damaged in this
// device's storage and could not be sent (LocalStore::Repair).
inline constexpr std::string_view kUnreadableHereReason = "unreadable_here";

// A stored row that fails its checksum (core/row_sum.h) or whose encrypted
// value or outbox payload does not open: damaged, never shown as data.
struct DamagedRow {
  std::string table;  // "records", "fields", "shadow", "outbox", "set_aside"
  Id record_id{};
  std::uint32_t field = 0;       // 0 for a record row
  std::uint64_t device_seq = 0;  // outbox only
  Stamp stamp;                   // set_aside only (part of its key)
};

struct StoreOptions {
  int busy_timeout_ms = 5000;
  // Called once for each damaged row a read meets (the row is left out).
  std::function<void(const DamagedRow&)> on_damage;
  // SQLite page limit (0 = none). Tests use it to simulate a full disk.
  std::int64_t max_page_count = 0;
  // Fault injection for tests: called at named points ("edit.put",
  // "pull.change", "push.result", "commit"); a returned error aborts the
  // transaction there as if SQLite had failed.
  std::function<error_code(std::string_view point)> fault;
};

struct RecordInfo {
  Id record_id{};
  std::string kind;
  std::optional<Id> parent_id;
  std::string unit_id;
};

// One field of a record as this device holds it.
struct StoredValue {
  std::uint32_t field = 0;
  bool sealed = false;
  teduh::AccessClass key_class = teduh::ACCESS_CLASS_UNSPECIFIED;
  std::uint32_t key_version = 0;
  // Open: the single-field serialization (plaintext — wipe after use).
  // Sealed: the end-to-end ciphertext, opened by the caller with the case key.
  std::string value;
  Stamp stamp;
  std::uint64_t origin_hlc = 0;
  bool pending = false;  // a local edit of this field waits in the outbox
};

// A local edit of one field, made inside LocalStore::Edit.
struct LocalChange {
  Id record_id{};
  std::string kind;
  std::optional<Id> parent_id;
  std::uint32_t field = 0;
  bool sealed = false;
  teduh::AccessClass key_class = teduh::ACCESS_CLASS_UNSPECIFIED;
  std::uint32_t key_version = 0;
  std::string value;           // open: single-field serialization; sealed: ciphertext
  Stamp stamp;                 // from EditTxn::NextStamp()
  std::optional<Id> resolves;  // the Conflict record this edit resolves
};

struct OutboxEntry {
  std::uint64_t device_seq = 0;
  Id record_id{};
  std::string kind;
  std::uint32_t field = 0;
  OutboxState state = OutboxState::kPending;
  std::string reason;  // stable code from the server ("immutable", ...)
  std::string detail;  // the server's sentence for the officer
  std::int64_t created_ms = 0;
  std::int64_t updated_ms = 0;
};

struct OutboxCounts {
  std::uint64_t pending = 0, accepted = 0, merged = 0, conflict = 0, rejected = 0;
};

struct PullCursor {
  std::uint64_t generation = 0;
  std::uint64_t last_seq = 0;
};

struct PullApplied {
  std::size_t applied = 0;    // written as the field's value
  std::size_t deferred = 0;   // kept aside: the field has a pending local edit
  std::size_t ignored = 0;    // inconsistent with what this device holds (kind changed)
  std::size_t requeued = 0;   // reset: outbox entries queued again for the restored server
  std::size_t purged = 0;     // records of shredded cases deleted
  std::size_t set_aside = 0;  // after a reset: values the restored server no longer has
};

struct PushApplied {
  std::size_t accepted = 0, merged = 0, conflict = 0, rejected = 0, unanswered = 0;
  // Sealed under a case key version a re-key replaced (frame_codec.h
  // kKeyReplacedReason):
  // left pending, to be re-sealed and sent again after the next pull.
  std::size_t key_replaced = 0;
  // Refused seq_reused (frame_codec.h kSeqReusedReason): given the next
  // number and left pending, sent again in the same push pass.
  std::size_t renumbered = 0;
  // Refused quota (frame_codec.h kQuotaReason): the server's storage bound
  // of the day is reached; left pending and sent again at a later sync.
  std::size_t held_back = 0;
};

// What LocalStore::Check found.
struct LocalStoreCheck {
  std::vector<std::string> structure;  // PRAGMA integrity_check's findings
  std::vector<DamagedRow> rows;
  std::uint64_t rows_checked = 0;
  bool intact() const { return structure.empty() && rows.empty(); }
};

// What LocalStore::Repair did.
struct LocalStoreRepair {
  LocalStoreCheck found;
  bool reindexed = false;              // the indexes were built again from the tables
  std::size_t removed = 0;             // damaged rows removed (the server's copy is pulled again)
  std::size_t resent = 0;              // damaged outbox entries whose change is intact: sent again
  std::size_t unreadable = 0;          // damaged outbox entries whose change is lost: marked so
  std::size_t restored = 0;            // unsent edits written back from the outbox
  bool repull = false;                 // the next pull starts from the beginning
  std::vector<std::string> remaining;  // integrity_check's findings after the repair
};

class LocalStore {
 public:
  // The view of the store inside one write transaction.
  class EditTxn {
   public:
    // A fresh stamp from the device HLC (greater than anything persisted).
    Stamp NextStamp();
    // Writes the field value and its outbox entry. errc::bad_value if the
    // change breaks a frame limit; errc::invalid_argument if the record
    // exists with another kind.
    Outcome<void> Put(const LocalChange& change);
    LocalStore& store() { return store_; }

   private:
    friend class LocalStore;
    EditTxn(LocalStore& store, Hlc& hlc) : store_(store), hlc_(hlc) {}
    LocalStore& store_;
    Hlc& hlc_;
    std::uint64_t device_seq_ = 0;
  };

  ~LocalStore();
  LocalStore(const LocalStore&) = delete;
  LocalStore& operator=(const LocalStore&) = delete;

  // Opens (creating if needed, mode 0600) the store at `path` for `device_id`.
  // `storage_key` is cloned (32 B). errc::store_failed if the file belongs to
  // another device or cannot be opened.
  static Outcome<std::unique_ptr<LocalStore>> Open(const std::filesystem::path& path,
                                                   const crypto::SecureBuffer& storage_key,
                                                   const Id& device_id, Env& env,
                                                   StoreOptions options = {});

  // Runs `fn` in one write transaction (BEGIN IMMEDIATE). The HLC first
  // observes the persisted value; its new value and the device_seq counter are
  // persisted with the edits. If `fn` or the commit fails nothing is saved.
  Outcome<void> Edit(Hlc& hlc, const std::function<Outcome<void>(EditTxn&)>& fn);

  // Reads (see also inside Edit).
  Outcome<std::optional<RecordInfo>> GetRecord(const Id& record_id);
  Outcome<std::vector<RecordInfo>> ListRecords(std::string_view kind,
                                               const std::optional<Id>& parent_id);
  // Records of `kind` whose hex id starts with `hex_prefix` (case-insensitive).
  Outcome<std::vector<Id>> MatchPrefix(std::string_view kind, std::string_view hex_prefix);
  Outcome<std::vector<StoredValue>> GetFields(const Id& record_id);
  // True if an edit of the case or one of its records is still unsent.
  Outcome<bool> CaseHasPending(const Id& case_id);
  // Every record of `kind` with its open fields (sealed ones are skipped), in
  // record id order, in one query; `visit` may move the values out.
  Outcome<void> ForEachRecordOpenFields(
      std::string_view kind,
      const std::function<Outcome<void>(const RecordInfo&, std::vector<StoredValue>&)>& visit);
  Outcome<std::optional<StoredValue>> GetField(const Id& record_id, std::uint32_t field);
  // The server's values of `fields`, as pulled (an open value in the clear,
  // as a push sends it), for a server that found its copies damaged: the
  // shadow row behind a pending edit, else the field's row while no edit of
  // it waits. A field this device does not hold, or holds damaged, is left
  // out (and reported as damage met).
  Outcome<std::vector<teduh::sync::v1::FieldChange>> ServerCopies(
      const std::vector<std::pair<Id, std::uint32_t>>& fields);

  // Outbox.
  // Up to `limit` pending changes after `after_device_seq` (of the case and
  // its records only, with `case_id`), in device_seq order, ready to push.
  Outcome<std::vector<teduh::sync::v1::FieldChange>> PendingChanges(
      std::size_t limit, std::uint64_t after_device_seq = 0,
      const std::optional<Id>& case_id = std::nullopt);
  // Records the server's answer to `sent` (one transaction). Applied changes
  // take the stamp the server stored; merged or rejected ones give the field
  // back the server's value when this device knows it (shadow).
  Outcome<PushApplied> ApplyPushResults(const std::vector<teduh::sync::v1::FieldChange>& sent,
                                        const teduh::sync::v1::PushResult& result);
  Outcome<OutboxCounts> CountOutbox();
  // Raises the device_seq counter to the server's mark for this device
  // (Welcome.device_mark) when it is below: a home restored from an earlier
  // copy numbers its next edits above what the server already holds.
  Outcome<void> RaiseDeviceSeq(std::uint64_t server_mark);
  // The highest device_seq the server has answered (0 if none).
  Outcome<std::uint64_t> HighestAnsweredSeq();
  // Replaces the value (and key version) of pending changes whose case key
  // was replaced: in the outbox and, where the field still holds that edit,
  // in its row; in one transaction.
  Outcome<void> ResealPending(const std::vector<teduh::sync::v1::FieldChange>& changes);
  // True if a current or held-back value of the case is sealed under a
  // version of `key_class` below `below`.
  Outcome<bool> CaseHasSealedBelow(const Id& case_id, int key_class, std::uint32_t below);
  // Deletes records (case key records a re-key replaced) with their values
  // (their outbox entries stay: the record of what this device sent).
  Outcome<void> DeleteRecords(const std::vector<Id>& record_ids);
  // Entries newest first; `include_accepted` false lists only pending, merged,
  // conflict and rejected ones.
  Outcome<std::vector<OutboxEntry>> ListOutbox(bool include_accepted, std::size_t limit);

  // Pull.
  Outcome<PullCursor> Cursor();
  // Values a restored server no longer had, kept aside after a reset pull
  // (invariant 8 in local_store.cc): this device may hold their last copy.
  Outcome<std::size_t> CountSetAside();
  // Applies one Changes batch and stores its cursor in one transaction.
  // `purge`: shredded cases (their orders already verified by the caller):
  // each case and every record under it, with their values, held-back server
  // values and outbox entries, are deleted in the same transaction.
  // A reset re-queues this device's answered changes above `held_through`
  // (Welcome.held_through: the restored server holds the rest).
  Outcome<PullApplied> ApplyPulled(Hlc& hlc, const teduh::sync::v1::Changes& batch,
                                   const std::vector<Id>& purge = {},
                                   std::uint64_t held_through = 0);

  // Small non-secret settings (last sync time, clock offset...). Never store
  // anything sensitive here: meta is plain.
  Outcome<std::optional<std::string>> GetMeta(std::string_view key);
  Outcome<void> SetMeta(std::string_view key, std::string_view value);

  // The persisted HLC (0 on a new store).
  Outcome<std::uint64_t> PersistedHlc();

  // Checks the numbered invariants of local_store.cc (tests, debug builds).
  // After the server re-stamped this device's changes (its clock ran ahead)
  // and nothing waits to be sent: the persisted HLC comes back to the highest
  // stamp the store holds (every pushed row now carries the server's stamp),
  // so later edits are not stamped in the future again. Returns the new value.
  Outcome<std::uint64_t> RebaseHlc();
  Outcome<void> CheckInvariants();

  // Damage (ARCHITECTURE §3): every row of records, fields, shadow, outbox
  // and set_aside carries a checksum, checked on every read; a damaged row is
  // left out and reported (StoreOptions::on_damage). SQLite's quick_check
  // runs at Open.
  // Check: integrity_check, every row's checksum and every encrypted value.
  Outcome<LocalStoreCheck> Check();
  // Whether a Repair is due: a read or the check at Open met damage, or the
  // last full check is older than `interval_ms`.
  Outcome<bool> RepairDue(std::int64_t interval_ms);
  // Checks, then in one transaction: rebuilds the indexes if the structure is
  // damaged; removes damaged rows the server holds; sends again an outbox
  // entry whose change still opens and marks one that does not (rejected,
  // reason "damaged"); writes every unsent edit back from the outbox; and
  // restarts the pull from the beginning so the server's copy replaces what
  // was removed. Intact: nothing is written but the time of the check.
  Outcome<LocalStoreRepair> Repair();
  bool damage_met() const { return damage_met_; }

  // The sticky error, if any.
  error_code health() const { return sticky_; }

 private:
  LocalStore(sqlite3* db, crypto::SecureBuffer key, Id device_id, Env& env, StoreOptions options);

  Outcome<void> InTxn(const std::function<Outcome<void>()>& fn);
  Outcome<void> Migrate();  // in the opening transaction
  // The findings of `pragma` (quick_check or integrity_check), "ok" left out.
  Outcome<std::vector<std::string>> StructureCheck(const char* pragma);
  void MetDamage(const DamagedRow& row);
  Outcome<void> CheckTable(std::string_view table, LocalStoreCheck* out);
  Outcome<void> RestorePendingRows(std::size_t* restored);
  Outcome<void> RebuildIndexes();
  Failure SqlFail(int rc, std::string_view what);
  Outcome<void> Exec(std::string_view sql);
  error_code Fault(std::string_view point);
  Outcome<std::uint64_t> MetaInt(std::string_view key);
  Outcome<void> SetMetaInt(std::string_view key, std::uint64_t value);
  Outcome<std::string> SealAtRest(std::string_view ad, std::string_view plain);
  Outcome<std::string> OpenAtRest(std::string_view ad, std::string_view stored);
  Outcome<void> PutLocked(EditTxn& txn, const LocalChange& change);
  Outcome<void> UpsertRecord(const Id& id, std::string_view kind, const std::optional<Id>& parent,
                             std::string_view unit_id, bool* kind_conflict);
  Outcome<void> WriteFieldRow(std::string_view table, const Id& id, std::uint32_t field,
                              bool sealed, int key_class, std::uint32_t key_version,
                              std::string_view at_rest, const Stamp& stamp,
                              std::uint64_t origin_hlc, std::uint64_t seq);
  Outcome<void> CopyFieldRow(std::string_view from, std::string_view to, const Id& id,
                             std::uint32_t field);
  Outcome<void> DeleteFieldRow(std::string_view table, const Id& id, std::uint32_t field);
  // Invariant 8: the answer to the newest edit of a field left unconfirmed
  // by a reset. True if it replaced a row that was not this edit's value.
  Outcome<std::size_t> BeginReset(std::uint64_t held_through);
  Outcome<std::size_t> FinishReset();
  // Copies the rows of `table` (as f) matching `where` into set_aside.
  Outcome<std::size_t> SetAside(std::string_view table, const char* where, std::int64_t now_ms);
  Outcome<bool> SettleUnconfirmed(const Id& id, std::uint32_t field, std::uint64_t device_seq,
                                  const Stamp& mine);
  Outcome<std::optional<Stamp>> RowStamp(std::string_view table, const Id& id, std::uint32_t field);
  Outcome<bool> HasPending(const Id& id, std::uint32_t field, std::uint64_t after_seq);
  Outcome<bool> AnyPending();  // any change at all waiting in the outbox
  Outcome<bool> AnyShadow();   // any server value held back behind a pending edit
  Outcome<std::optional<teduh::sync::v1::FieldChange>> LoadOutbox(std::uint64_t device_seq,
                                                                  int* state);
  Outcome<void> StoreOutboxPayload(const teduh::sync::v1::FieldChange& change);
  // An answer that is not final (key_replaced, seq_reused, seq_order): the
  // entry stays pending, counted in `counts`; true if `res` was one.
  Outcome<void> ApplyPushChunk(const std::vector<teduh::sync::v1::FieldChange>& sent,
                               const teduh::sync::v1::PushResult& result, std::size_t first,
                               std::size_t last, std::int64_t now, PushApplied* counts);
  Outcome<bool> KeepPendingLocked(const teduh::sync::v1::FieldChange& sent,
                                  const teduh::sync::v1::ChangeResult& res, PushApplied* counts);
  // Gives a pending entry the next device_seq (re-sealed under it), inside a
  // transaction; a no-op for an entry no longer pending.
  Outcome<void> RenumberPendingLocked(const teduh::sync::v1::FieldChange& sent);
  Outcome<teduh::sync::v1::FieldChange> ParseOutboxPayload(std::uint64_t device_seq,
                                                           std::string_view stored);

  sqlite3* db_;
  crypto::SecureBuffer key_;
  Id device_id_;
  Env& env_;
  StoreOptions options_;
  std::unique_ptr<StmtCache> stmts_;  // prepared statements, finalized before db_ closes
  error_code sticky_;
  bool in_txn_ = false;
  bool damage_met_ = false;                    // since the last Repair
  std::vector<std::string> structure_damage_;  // quick_check's findings at Open
};

}  // namespace teduh::core
