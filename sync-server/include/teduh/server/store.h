// The server's durable state behind one interface, so that a PostgreSQL
// backend can replace the SQLite one (OpenSqliteStore) for deployments that
// outgrow one machine. The interface is deliberately primitive (rows in, rows
// out); the sync rules (validation, scope, merge) live above it in the sync
// service and are the same for every backend.
//
// Model (ARCHITECTURE §2): a unit's metadata, devices, enrollment codes,
// grants, records, one current value per (record, field) with a server
// sequence number `seq` and the server transaction `txn` that wrote it, the
// history of every value that was overwritten or lost a merge, case
// assignments, rejected changes (for idempotent resends) and which device has
// held which case; and the audit log, a hash chain of entries whose bodies the
// store keeps as opaque bytes (the chain's rules are in teduh/server/audit.h).
//
// Errors: every function returns core::errc::store_failed, store_busy or
// disk_full on a backend failure. A failure that leaves durable state
// uncertain (a failed COMMIT, an I/O error, corruption) is sticky: every later
// call returns it until the store is reopened.
//
// Thread safety: a Store object is NOT thread-safe; it is one connection used
// by one thread at a time. Several Store objects may be open on the same data
// (one writer at a time; readers see committed snapshots).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "teduh/core/error.h"
#include "teduh/core/frame_codec.h"
#include "teduh/core/hlc.h"
#include "teduh/core/ids.h"
#include "teduh/options.pb.h"
#include "teduh/sync/v1/sync.pb.h"

namespace teduh::server {

using core::error_code;
using core::Id;
using core::result;
using teduh::sync::v1::DeviceState;
using teduh::sync::v1::Role;

using CodeHash = std::array<std::uint8_t, 32>;
using AuditHash = std::array<std::uint8_t, 32>;

// 2 added the audit log, 3 revocations, 4 re-keying, 5 change receipts, 6 key
// custody, 7 storage usage, 8 row checksums; an older store is migrated when
// opened for writing.
inline constexpr int kStoreSchemaVersion = 8;

struct UnitInfo {
  std::string unit_id;  // 32 hex digits, made at init
  std::string unit_name;
  Id server_id{};
  std::uint64_t generation = 0;   // random, non-zero; changes when restored from a backup
  std::string unit_root_pk;       // 32 B once the bootstrap admin enrolled, else empty
  std::uint64_t hlc_last = 0;     // the server HLC's highest value (re-stamps)
  std::string time_zone = "WIB";  // the unit's (core::TimeZone name); WIB until set
  std::string unit_codes;         // a serialized sync::v1::UnitCodes; empty until one is added
};

struct DeviceRow {
  Id device_id{};
  std::string user;
  Role role = teduh::sync::v1::ROLE_UNSPECIFIED;
  DeviceState state = teduh::sync::v1::DEVICE_STATE_UNSPECIFIED;
  std::string sign_pk;  // 32 B
  std::string box_pk;   // 32 B
  std::string label;
  std::int64_t enrolled_ms = 0;
  std::int64_t last_sync_ms = 0;
  std::uint64_t last_device_seq = 0;  // highest device_seq processed (idempotency mark)
};

// A revoked device: who revoked it, the wipe order an admin device signed
// (a serialized teduh.keys.v1.WipeOrder; empty until one is signed) and the
// device's signed receipt once it erased itself.
struct RevocationRow {
  Id device_id{};
  std::int64_t revoked_ms = 0;
  std::optional<Id> by_device;  // the admin device; unset when revoked on the server host
  std::string by_user;          // its user, or "server operator"
  std::string wipe_order;
  std::string receipt;  // a serialized teduh.keys.v1.WipeReceipt, empty until erased
  std::int64_t wiped_ms = 0;
};

struct EnrollmentRow {
  CodeHash code_hash{};  // BLAKE2b-256 of the code's random part
  Role role = teduh::sync::v1::ROLE_UNSPECIFIED;
  std::string user;
  std::int64_t expires_ms = 0;
  std::int64_t used_ms = 0;  // 0 while unused
  bool bootstrap = false;    // the code printed by `init`: pins the unit root key
};

struct GrantRow {
  Id device_id{};
  teduh::AccessClass key_class = teduh::ACCESS_CLASS_GENERAL;
  std::uint32_t epoch = 0;
  std::string sealed_key;
  std::string signature;
};

// A device reported holding a class key epoch (after verifying its grant).
struct KeyAckRow {
  Id device_id{};
  teduh::AccessClass key_class = teduh::ACCESS_CLASS_GENERAL;
  std::uint32_t epoch = 0;
  std::int64_t acked_ms = 0;
};

// A device handed the unit root key (`since_ms` 0, `pending_grant` the
// serialized RootGrant until it reports holding it) or holding it.
struct RootHolderRow {
  Id device_id{};
  std::int64_t since_ms = 0;
  std::string pending_grant;
};

// A device's changes a restored store lacked: device_seq in (from_seq,
// to_seq], found at since_ms (a restore over a store that read, or the
// device's word at its next sync).
struct RestoreGapRow {
  Id device_id{};
  std::uint64_t from_seq = 0, to_seq = 0;
  std::int64_t since_ms = 0;
};

// A case key record's header: which class key epoch wraps it.
struct CaseKeyRow {
  Id record_id{};
  Id case_id{};
  teduh::AccessClass key_class = teduh::ACCESS_CLASS_GENERAL;
  std::uint32_t version = 0;
  std::uint32_t epoch = 0;
};

// The case key version a re-key in progress re-encrypts a class to, and the
// class key epoch it was first wrapped under.
struct RekeyTargetRow {
  teduh::AccessClass key_class = teduh::ACCESS_CLASS_GENERAL;
  std::uint32_t version = 0;
  std::uint32_t epoch = 0;
};

struct RecordRow {
  Id record_id{};
  std::string kind;
  std::optional<Id> parent_id;  // unset for a case
  Id case_id{};                 // the record itself for a case, else its parent
  std::string created_by_user;
  std::uint64_t created_seq = 0;
};

// One stored field value: the current one in `fields`, or a superseded one in
// the history. Views point into the backend's buffers and are valid only
// during the call that produced them.
struct FieldRow {
  Id record_id{};
  std::uint32_t field = 0;
  std::string_view value;
  bool sealed = false;
  teduh::AccessClass key_class = teduh::ACCESS_CLASS_UNSPECIFIED;
  std::uint32_t key_version = 0;
  core::Stamp stamp;
  std::uint64_t origin_hlc = 0;
  std::string_view author;
  std::uint64_t seq = 0;
  std::uint64_t txn = 0;
  // Set by FindField when the stored row failed its checksum: the row is
  // then reported as absent, and a write of the field replaces it.
  bool damaged = false;
};

// A stored row that failed its checksum: where it is. `table` is "records",
// "fields" or "field_history"; `field` is 0 for a record row. The record id
// is as read, so it may itself be the damaged part.
// A field of a record: a value the server wants re-sent (StoreWorker).
using FieldKey = std::pair<Id, std::uint32_t>;

struct DamagedRow {
  const char* table = "";
  Id record_id{};
  std::uint32_t field = 0;
};

// What Store::Check found. Empty lists: nothing is damaged.
struct StoreCheck {
  std::vector<std::string> structure;  // SQLite's findings on the file (at most 100)
  std::vector<DamagedRow> rows;        // rows whose checksum does not match (at most 1000)
  std::uint64_t records = 0;           // rows whose checksum was checked, by table
  std::uint64_t values = 0;
  std::uint64_t history = 0;
  bool rows_checked = false;  // false: the structure only (or a store older than version 8)
  bool ok() const { return structure.empty() && rows.empty(); }
};

// The last entry of the audit chain: its index (entries are numbered from 1,
// so this is also their count) and hash; {0, zeros} for an empty log.
struct AuditHead {
  std::uint64_t index = 0;
  AuditHash hash{};
  bool operator==(const AuditHead&) const = default;
};

// One stored audit entry. Views point into the caller's (AppendAudit) or the
// backend's (ScanAudit) buffers. A scanned row is shown as stored, so a
// damaged one may have hashes of the wrong length.
struct AuditRow {
  std::uint64_t index = 0;
  std::string_view body;       // a serialized teduh.audit.v1.AuditEntry
  std::string_view prev_hash;  // 32 B
  std::string_view hash;       // 32 B
};

// What a pull may see (ARCHITECTURE §2.4).
struct PullScope {
  // kKeys: the unit's case key records only (admin devices: keys, not content).
  enum class Kind { kNothing, kUnit, kAssignedTo, kKeys } kind = Kind::kNothing;
  std::string user;  // kAssignedTo
};

// One current value as a pull returns it, with its record's header.
struct ChangeView {
  const FieldRow* field = nullptr;
  std::string_view kind;
  std::optional<Id> parent_id;
  Id case_id{};
};

class Store {
 public:
  virtual ~Store() = default;

  // The sticky error, if any (see the header comment).
  virtual error_code status() const = 0;

  // ---- Transactions (writer) ----------------------------------------------
  // Begin an immediate (write) transaction. Every write below must be inside one.
  virtual error_code Begin() = 0;
  // Durably commit. On failure the store is sticky-failed; nothing written
  // since Begin() may be acknowledged.
  virtual error_code Commit() = 0;
  // Abandon the transaction (after a failed write or a failed job).
  virtual void Rollback() = 0;

  // ---- Unit ------------------------------------------------------------------
  virtual result<UnitInfo> LoadUnit() = 0;
  virtual error_code SetUnitRootKey(std::string_view public_key) = 0;
  // A core::TimeZone name; each connection reads it with the unit.
  virtual error_code SetTimeZone(std::string_view zone) = 0;
  // A serialized sync::v1::UnitCodes: the unit's own codes (admin's UnitCodeBook).
  virtual error_code SetUnitCodes(std::string_view serialized) = 0;
  virtual error_code SaveHlc(std::uint64_t hlc_last) = 0;
  // The store's highest sequence number, as committed (0 when empty).
  virtual result<std::uint64_t> HeadSeq() = 0;
  // A new generation: the store was put back from a file-level copy.
  virtual error_code SetGeneration(std::uint64_t generation) = 0;

  // ---- Devices, enrollment codes, grants ---------------------------------------
  virtual result<std::optional<DeviceRow>> FindDevice(const Id& device_id) = 0;
  virtual result<std::vector<DeviceRow>> ListDevices() = 0;
  virtual error_code InsertDevice(const DeviceRow& row) = 0;
  virtual error_code SetDeviceState(const Id& device_id, DeviceState state) = 0;
  virtual error_code SetDeviceMark(const Id& device_id, std::uint64_t last_device_seq) = 0;
  virtual error_code TouchDevice(const Id& device_id, std::int64_t now_ms) = 0;

  // Revocations (a row per revoked device, replaced as its order and receipt arrive).
  virtual result<std::optional<RevocationRow>> FindRevocation(const Id& device_id) = 0;
  virtual error_code PutRevocation(const RevocationRow& row) = 0;

  virtual result<std::optional<EnrollmentRow>> FindEnrollment(const CodeHash& hash) = 0;
  virtual error_code InsertEnrollment(const EnrollmentRow& row) = 0;
  virtual error_code MarkEnrollmentUsed(const CodeHash& hash, std::int64_t now_ms) = 0;

  // Replaces the grant of (device, class, epoch) if one exists.
  virtual error_code PutGrant(const GrantRow& row) = 0;
  virtual result<std::vector<GrantRow>> GrantsFor(const Id& device_id) = 0;
  virtual result<std::vector<GrantRow>> AllGrants() = 0;
  // Class key epochs devices reported holding (a repeated report changes nothing).
  virtual error_code PutKeyAck(const KeyAckRow& row) = 0;
  // Of one device, or of all.
  virtual result<std::vector<KeyAckRow>> KeyAcks(
      const std::optional<Id>& device = std::nullopt) = 0;

  // ---- Key custody (PROTOCOL §8e) ---------------------------------------------------------
  // Replaces the row of the device.
  virtual error_code PutRootHolder(const RootHolderRow& row) = 0;
  virtual result<std::vector<RootHolderRow>> RootHolders() = 0;
  // Keeps the first escrow grant of (class, epoch) (a serialized EscrowGrant);
  // RetireEpoch deletes it.
  virtual error_code PutEscrowGrant(teduh::AccessClass key_class, std::uint32_t epoch,
                                    std::string_view body) = 0;
  virtual result<std::vector<std::string>> EscrowGrants() = 0;
  // The unit root key's signature over an approved device's role and keys
  // (core::ApprovalMessage), so that every admin device can check the keys
  // the server lists, whichever admin device approved them.
  virtual error_code PutApproval(const Id& device_id, std::string_view signature) = 0;
  virtual result<std::vector<std::pair<Id, std::string>>> Approvals() = 0;
  // Widens the device's gap to cover (from_seq, to_seq] (a new row keeps since_ms).
  virtual error_code NoteRestoreGap(const RestoreGapRow& row) = 0;
  virtual result<std::vector<RestoreGapRow>> RestoreGaps() = 0;
  // ---- Storage bounds (docs/SECURITY.md, "Hostile clients") ---------------------------------
  // Bytes of values the device (nullopt: the whole unit) stored on `day`
  // (days since the Unix epoch, UTC); AddUsage counts more; PruneUsage
  // forgets the days before `day`.
  virtual result<std::uint64_t> UsageOn(const std::optional<Id>& device_id, std::int64_t day) = 0;
  virtual error_code AddUsage(const std::optional<Id>& device_id, std::int64_t day,
                              std::uint64_t bytes) = 0;
  virtual error_code PruneUsage(std::int64_t day) = 0;
  // How many changes of the device with device_seq in (from, to] the store
  // holds a receipt of (re-sent after a restore).
  virtual result<std::uint64_t> CountReceipts(const Id& device_id, std::uint64_t from,
                                              std::uint64_t to) = 0;

  // ---- Evictions (a case unassigned from a user) -----------------------------------------
  // Every device of `user` that holds the case is to evict it (at `seq`); it
  // no longer counts as holding it.
  virtual error_code EvictUser(const Id& case_id, std::string_view user, std::uint64_t seq) = 0;
  // The case was assigned to `user` again: nothing of it is evicted.
  virtual error_code ClearUserEvictions(const Id& case_id, std::string_view user) = 0;
  // The device still has to receive its eviction of the case (until then it
  // may push the edits it made while it held it).
  virtual result<bool> HasEviction(const Id& device_id, const Id& case_id) = 0;
  virtual error_code ScanEvictions(
      const Id& device_id, std::uint64_t after_seq, std::uint64_t upto_seq,
      const std::function<void(std::uint64_t seq, const Id& case_id)>& visit) = 0;
  // The device committed a pull cursor at `upto_seq`: evictions up to it were received.
  virtual error_code DropEvictions(const Id& device_id, std::uint64_t upto_seq) = 0;

  // ---- Crypto-shredding ----------------------------------------------------------------
  virtual error_code PutShredRequest(const Id& case_id, std::string_view user,
                                     std::int64_t now_ms) = 0;
  // Who asked for the case to be shredded, if anyone has.
  virtual result<std::optional<std::string>> FindShredRequest(const Id& case_id) = 0;
  // Deletes the case and everything under it (records, current and past
  // values, assignments, holdings) so that no ciphertext of it stays in the
  // store files (freed space zeroed, WAL checkpointed at commit), drops the
  // request and keeps the signed `order` at `seq` for devices to pull.
  // Returns the number of values removed.
  virtual result<std::uint64_t> PurgeCase(const Id& case_id, std::uint64_t seq,
                                          std::string_view order) = 0;
  virtual result<bool> IsShredded(const Id& case_id) = 0;
  // Shred orders with after_seq < seq <= upto_seq, in seq order.
  virtual error_code ScanShredded(
      std::uint64_t after_seq, std::uint64_t upto_seq,
      const std::function<void(std::uint64_t seq, std::string_view order)>& visit) = 0;

  // ---- Class key rotation ------------------------------------------------------------
  // Retires (class, epoch): deletes its grants and acknowledgements and keeps
  // `body` (a serialized, signed teduh.keys.v1.Retirement) for devices.
  virtual error_code RetireEpoch(teduh::AccessClass key_class, std::uint32_t epoch,
                                 std::string_view body) = 0;
  virtual result<std::vector<std::string>> Retirements() = 0;
  // Drops staging of the class for another epoch or by another device (an
  // abandoned rotation, or someone else's: only what the committing device
  // staged is ever applied).
  virtual error_code DropStaleStaging(teduh::AccessClass key_class, std::uint32_t epoch,
                                      const Id& stager) = 0;
  // Stages the re-wrap of a case key record for (class, epoch) by `stager`.
  virtual error_code StageRewrap(teduh::AccessClass key_class, std::uint32_t epoch,
                                 const Id& record_id, std::string_view wrapped,
                                 const Id& stager) = 0;
  virtual error_code ClearStaging(teduh::AccessClass key_class) = 0;
  // Every re-wrap of (class, epoch) staged by `stager`, in record id order;
  // `visit` may write.
  virtual error_code ScanStaging(
      teduh::AccessClass key_class, std::uint32_t epoch, const Id& stager,
      const std::function<error_code(const Id&, std::string_view wrapped)>& visit) = 0;
  // Every case key record of the unit with its class, version and epoch.
  virtual error_code ScanCaseKeys(const std::function<void(const CaseKeyRow&)>& visit) = 0;

  // ---- Re-keying (PROTOCOL §8d) --------------------------------------------------------
  // The cases `held_by` has ever held (still existing), or with no device
  // every case of the unit; in case id order after `after`, at most `limit`.
  virtual result<std::vector<Id>> CasesToRekey(const std::optional<Id>& held_by, const Id& after,
                                               std::size_t limit) = 0;
  // The device received the case at some time (it may hold it still).
  virtual result<bool> HeldCase(const Id& device_id, const Id& case_id) = 0;
  // Every value of the case and of its records with the record's kind: the
  // current ones (history_id 0), then the past ones (their history id);
  // until `visit` returns false.
  virtual error_code ScanCaseValues(const Id& case_id,
                                    const std::function<bool(const FieldRow&, std::string_view kind,
                                                             std::uint64_t history_id)>& visit) = 0;
  // Replaces a past sealed value of the case if it is still under
  // (`key_class`, `old_version`); false if it is not.
  virtual result<bool> ReplaceHistoryValue(const Id& case_id, std::uint64_t history_id,
                                           teduh::AccessClass key_class, std::uint32_t old_version,
                                           std::string_view value, std::uint32_t new_version) = 0;
  // Deletes a record with its current and past values.
  virtual error_code DeleteRecord(const Id& record_id) = 0;
  // The case key versions a re-key in progress re-encrypts to, per class
  // (one per class; a new one replaces it).
  virtual error_code PutRekeyTarget(const Id& case_id, const RekeyTargetRow& row) = 0;
  virtual result<std::vector<RekeyTargetRow>> RekeyTargets(const Id& case_id) = 0;
  virtual error_code ClearRekeyTargets(const Id& case_id) = 0;
  // Case key versions of (case, class) below `below` were deleted at `seq`.
  virtual error_code PutKeyDrop(std::uint64_t seq, const Id& case_id, teduh::AccessClass key_class,
                                std::uint32_t below) = 0;
  // Whether any re-key deleted a case key version at all.
  virtual result<bool> KeyDropsExist() = 0;
  // The highest `below` of the case's drops of the class (0: none).
  virtual result<std::uint32_t> KeyDroppedBelow(const Id& case_id,
                                                teduh::AccessClass key_class) = 0;
  virtual error_code ScanKeyDrops(
      std::uint64_t after_seq, std::uint64_t upto_seq,
      const std::function<void(std::uint64_t seq, const Id& case_id, teduh::AccessClass,
                               std::uint32_t below)>& visit) = 0;

  // ---- Records and fields --------------------------------------------------------
  // core::errc::store_damaged (and reported) when the record's row is damaged.
  virtual result<std::optional<RecordRow>> FindRecord(const Id& record_id) = 0;
  virtual error_code InsertRecord(const RecordRow& row) = 0;
  // The current value of (record, field) into `out` (views valid until the
  // next call on this store); false if the field was never written, or if
  // its row is damaged (out->damaged, reported).
  virtual result<bool> FindField(const Id& record_id, std::uint32_t field, FieldRow* out) = 0;
  // Inserts or replaces the current value of (row.record_id, row.field).
  virtual error_code PutField(const FieldRow& row) = 0;
  // Whether the stored row of (row.record_id, row.field) kept the checksum
  // `row` would have: `row` is, byte for byte, what was stored there (its
  // seq and txn aside). How a damaged value is taken back from a device.
  virtual result<bool> SumMatches(const FieldRow& row) = 0;
  // Whether the current value of (record, field) is intact; nullopt if the
  // field was never written. Leaves no statement active (a reader may call it).
  virtual result<std::optional<bool>> FieldIntact(const Id& record_id, std::uint32_t field) = 0;
  // Keeps a value that was overwritten or lost a merge (nothing is lost).
  virtual error_code AppendHistory(const FieldRow& row, std::uint64_t superseded_seq,
                                   std::string_view reason) = 0;
  // Server sequence numbers and transaction ids: strictly increasing,
  // allocated inside the current transaction (a rollback returns them).
  virtual std::uint64_t AllocateSeq() = 0;
  virtual std::uint64_t AllocateTxn() = 0;
  // Gives every current value of the case and its children a fresh seq
  // (in their current seq order) and `txn`: they are pulled again.
  virtual error_code ResequenceCase(const Id& case_id, std::uint64_t txn) = 0;

  // ---- Scope -------------------------------------------------------------------------
  virtual result<bool> IsAssigned(const Id& case_id, std::string_view user) = 0;
  virtual result<std::vector<std::string>> Assignees(const Id& case_id) = 0;
  virtual result<std::vector<Id>> CasesAssignedTo(std::string_view user) = 0;
  virtual error_code SetAssignees(const Id& case_id, const std::vector<std::string>& users) = 0;
  virtual result<bool> HoldsCase(const Id& device_id, const Id& case_id) = 0;
  virtual error_code RecordHolding(const Id& device_id, const Id& case_id,
                                   std::uint64_t first_seq) = 0;

  // ---- Idempotency of rejections --------------------------------------------------------
  struct Rejection {
    std::string reason;
    std::string detail;
  };
  virtual error_code PutRejection(const Id& device_id, std::uint64_t device_seq,
                                  std::string_view reason, std::string_view detail) = 0;
  virtual result<std::optional<Rejection>> FindRejection(const Id& device_id,
                                                         std::uint64_t device_seq) = 0;
  // Forgets a rejection that was not final (a re-sealed change sent again).
  virtual error_code DropRejection(const Id& device_id, std::uint64_t device_seq) = 0;

  // ---- Receipts: which change each (device, device_seq) was ---------------------------
  // Written for every change the server decides (applied, merged, in
  // conflict or rejected), in the transaction of its writes, so a resend is
  // recognised by its content (core::DigestOf) and a number reused for
  // another change is refused. A receipt exists only at or below the
  // device's mark. One push's receipts are written together (`entries` in
  // increasing device_seq, as a push's numbers are), one row per push.
  struct Receipt {
    std::uint64_t device_seq = 0;
    core::ChangeDigest digest{};
  };
  virtual error_code PutReceipts(const Id& device_id, const std::vector<Receipt>& entries) = 0;
  virtual result<std::optional<core::ChangeDigest>> FindReceipt(const Id& device_id,
                                                                std::uint64_t device_seq) = 0;
  // The device's mark when its store was migrated to receipts: a change at or
  // below it has no receipt and is answered as a resend. 0 for a device
  // enrolled since.
  virtual result<std::uint64_t> ReceiptFloor(const Id& device_id) = 0;

  // ---- Audit log ---------------------------------------------------------------------------
  // The chain's head as seen by the current transaction, including entries
  // appended in it (writer, inside a transaction).
  virtual AuditHead PendingAuditHead() const = 0;
  // Appends the next entry: row.index must be PendingAuditHead().index + 1
  // and row.prev_hash its hash (core::errc::invalid_argument otherwise, and
  // nothing is written). Commit() records the new head in the store's
  // metadata in the same transaction, so that a removed tail is detectable.
  virtual error_code AppendAudit(const AuditRow& row) = 0;
  // The head recorded by the last commit that appended an entry.
  virtual result<AuditHead> RecordedAuditHead() = 0;
  // Calls `visit` for every stored entry with index > after_index, in index
  // order, until it returns false.
  virtual error_code ScanAudit(std::uint64_t after_index,
                               const std::function<bool(const AuditRow&)>& visit) = 0;

  // ---- Pull ----------------------------------------------------------------------------
  // Calls `visit` for every current value with seq > after_seq within `scope`,
  // in seq order, until it returns false or `max_rows` were visited. A
  // damaged row (its record's or its own checksum fails) is reported
  // (StoreOptions::on_damage) and skipped, here and in every read below.
  // Every value the fields [field_lo, field_hi] of a record have had: the
  // superseded ones (`reason` overwritten, lost_merge, merged; oldest first per
  // field), then the current ones (`reason` "current").
  virtual error_code ScanFieldHistory(
      const Id& record_id, std::uint32_t field_lo, std::uint32_t field_hi,
      const std::function<void(const FieldRow&, std::string_view reason)>& visit) = 0;
  virtual error_code ScanChanges(const PullScope& scope, std::uint64_t after_seq,
                                 std::size_t max_rows,
                                 const std::function<bool(const ChangeView&)>& visit) = 0;

  // ---- Damage ------------------------------------------------------------------------
  // Checks the file's structure (SQLite's quick_check, or with `thorough` its
  // integrity_check, which also compares every index with its table) and,
  // unless `structure_only`, every row's checksum. Reads only; a damaged
  // store gives a report, not an error.
  virtual result<StoreCheck> Check(bool thorough, bool structure_only) = 0;
};

struct StoreOptions {
  bool read_only = false;
  int busy_timeout_ms = 5000;
  // SQLite page cache of this connection, in KiB. A merge reads the current
  // row of the field it overwrites, so the writer's cache should hold the hot
  // part of the fields table and its indexes; SQLite's 2 MiB default makes
  // every overwrite re-read pages from the OS.
  int cache_kib = 32 * 1024;
  // WAL pages after which a commit checkpoints. An overwrite dirties pages
  // all over the fields table; a longer interval writes a page dirtied by
  // several group commits back once.
  int checkpoint_pages = 8192;
  // The largest the store file may grow, in bytes (PRAGMA max_page_count);
  // beyond it a write fails as on a full disk. 0: as large as the disk allows.
  std::uint64_t max_bytes = 0;
  // Called, on the thread using the connection, for every damaged row a read
  // meets (the row is never returned as data).
  std::function<void(const DamagedRow&)> on_damage;
};

// The SQLite file inside a data folder.
std::string StorePath(const std::string& data_dir);

// One serving process per data folder: an exclusive advisory lock (flock) on
// DATA/teduh-server.lock, held while a server runs and while a store is
// restored, released when the process ends however it ends (kill -9
// included). Admin commands that write a few rows (enroll, revoke, code
// add) are ordinary concurrent writers of the store and take no lock.
class DataFolderLock {
 public:
  // errc::in_use (with the holder's pid in `holder`, when it wrote one) if
  // another process holds it; errc::not_initialised if the folder is missing.
  static result<DataFolderLock> Acquire(const std::string& data_dir, long* holder = nullptr);
  DataFolderLock(DataFolderLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  DataFolderLock& operator=(DataFolderLock&& other) noexcept;
  DataFolderLock(const DataFolderLock&) = delete;
  DataFolderLock& operator=(const DataFolderLock&) = delete;
  ~DataFolderLock();

 private:
  explicit DataFolderLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// Creates a new store at `path` for a unit, holding the bootstrap enrollment
// code `bootstrap`, in one transaction (errc::already_initialised if the file
// exists: nothing is changed) and returns the unit's metadata.
result<UnitInfo> CreateSqliteStore(const std::string& path, std::string_view unit_name,
                                   const EnrollmentRow& bootstrap);

// Opens an existing store (server::errc::not_initialised if missing). A store
// of an older schema version is migrated in one transaction when opened for
// writing, and read as it is when opened read-only (a version 1 store has an
// empty audit log).
result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path,
                                               const StoreOptions& options);

}  // namespace teduh::server
