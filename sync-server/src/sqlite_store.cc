// SQLite backend of teduh::server::Store.
//
// Design notes
// ------------
// One SqliteStore is one connection. The server opens two: the writer (owned
// by the store writer thread, the only connection that writes) and a
// read-only one for pulls and look-ups. Admin commands open their own
// short-lived connections; WAL lets all of them coexist and busy_timeout
// waits out the writer's short transactions.
//
// Durability: journal_mode=WAL with synchronous=FULL. In WAL mode NORMAL may
// lose the last transactions on power loss (they are in the WAL but not
// synced); the protocol acknowledges a push only after its commit, so the
// commit must be synced before the ack. Group commit amortises the fsync
// over every request of a group.
//
// Counters: `seq` (server sequence of a current value) and `txn` (the server
// transaction that wrote it) are persisted in `meta` (next_seq, next_txn),
// loaded by Begin() and written back by Commit() before COMMIT, so a rollback
// forgets the numbers it handed out.
//
// Audit log: the chain's head (last index and hash) is kept the same way, in
// meta (audit_last, audit_head): read by Begin(), advanced by AppendAudit(),
// written back by Commit() in the transaction that holds the new entries. So
// appending costs one INSERT, a rolled-back group forgets its entries and
// head, and a tail removed later no longer matches the recorded head. The
// head is re-read at every Begin() rather than cached, so a second writing
// connection (an admin command) cannot fork the chain.
//
// Schema versions: 1 had no audit table, 2 no revocations; Open() for
// writing migrates them (CREATE TABLE IF NOT EXISTS, audit head {0, zeros})
// in one transaction. A read-only Open() of a version 1 store sees an empty
// audit log, of a version 1 or 2 store no revocations.
//
// Invariants
//  1. Every write happens between Begin() and Commit()/Rollback() (in_txn_).
//  2. next_seq_ > every fields.seq and next_txn_ > every fields.txn while in_txn_.
//  3. fields.seq is unique (index fields_by_seq): a pull cursor never skips or
//     repeats a value.
//  4. Once sticky_ is set (failed COMMIT, I/O error, corruption), every call
//     returns it: nothing more is written or read until reopened. A full
//     disk (SQLITE_FULL, also at COMMIT) is not sticky: SQLite rolls the
//     transaction back and the file stays as it was, so reads go on and the
//     next write succeeds once there is room (errc::disk_full meanwhile).
//  5. Values are only ever bound as blobs, never formatted into SQL or into
//     an error message.
//  6. While in_txn_, audit_head_ is the last audit row's (idx, hash) as this
//     transaction sees it; audit rows are only ever appended at
//     audit_head_.index + 1 with prev_hash = audit_head_.hash.
//  7. No statement stays active across Begin(), Commit() or Rollback()
//     (ReleaseRead): a statement left active keeps the connection's read
//     snapshot, and BEGIN IMMEDIATE on a snapshot older than another
//     connection's commit (an admin command's) fails with SQLITE_BUSY_SNAPSHOT
//     at once, for every later group too.
//
// States:  idle --Begin()--> in_txn --Commit() ok--> idle
//                              |  \--Commit() fails--> sticky (terminal),
//                              |                       or idle on a full disk
//                              \--Rollback()--> idle
#include <sqlite3.h>

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <tuple>
#include <utility>

#include "teduh/core/ids.h"
#include "teduh/core/row_sum.h"
#include "teduh/core/time_zone.h"
#include "teduh/keys/v1/keys.pb.h"
#include "teduh/server/error.h"
#include "teduh/server/store.h"

namespace teduh::server {
namespace {

using core::errc;

// The one place a SQLite result code becomes an error_code (STYLE rule 5).
error_code FromSqlite(int rc) {
  switch (rc & 0xFF) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return core::make_error_code(errc::store_busy);
    case SQLITE_FULL:
      return core::make_error_code(errc::disk_full);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return core::make_error_code(errc::store_damaged);
    default:
      return core::make_error_code(errc::store_failed);
  }
}

bool LeavesStateUncertain(int rc) {
  switch (rc & 0xFF) {
    case SQLITE_IOERR:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_CANTOPEN:
      return true;
    default:
      return false;
  }
}

result<bool> BoolError(error_code ec) { return result<bool>(boost::system::in_place_error, ec); }

std::string_view View(const void* p, int n) {
  return p == nullptr ? std::string_view() : std::string_view(static_cast<const char*>(p), n);
}

// Row checksums (schema version 8, core/row_sum.h). The rows every device's
// view is built from (records, fields, field_history) carry `sum`. A row whose
// sum differs is damaged: it is reported (StoreOptions::on_damage) and never
// returned as data.

// A prepared statement, reset before each use and reused for the life of the
// connection.
class Stmt {
 public:
  Stmt() = default;
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  int Prepare(sqlite3* db, const char* sql) {
    return sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s_, nullptr);
  }
  Stmt& Start() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
    return *this;
  }
  Stmt& Int(int i, std::int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  Stmt& U64(int i, std::uint64_t v) { return Int(i, static_cast<std::int64_t>(v)); }
  Stmt& Blob(int i, std::string_view b) {
    // A zero-length blob must stay a blob (not NULL).
    sqlite3_bind_blob(s_, i, b.empty() ? "" : b.data(), static_cast<int>(b.size()), SQLITE_STATIC);
    return *this;
  }
  Stmt& Blob(int i, const Id& id) { return Blob(i, core::AsBytes(id)); }
  Stmt& Text(int i, std::string_view t) {
    sqlite3_bind_text(s_, i, t.empty() ? "" : t.data(), static_cast<int>(t.size()), SQLITE_STATIC);
    return *this;
  }
  Stmt& Null(int i) {
    sqlite3_bind_null(s_, i);
    return *this;
  }
  int Step() { return sqlite3_step(s_); }
  void Done() { sqlite3_reset(s_); }

  std::int64_t ColInt(int c) const { return sqlite3_column_int64(s_, c); }
  std::uint64_t ColU64(int c) const { return static_cast<std::uint64_t>(ColInt(c)); }
  bool ColNull(int c) const { return sqlite3_column_type(s_, c) == SQLITE_NULL; }
  std::string_view ColBlob(int c) const {
    const void* p = sqlite3_column_blob(s_, c);
    return View(p, sqlite3_column_bytes(s_, c));
  }
  std::string_view ColText(int c) const {
    const unsigned char* p = sqlite3_column_text(s_, c);
    return View(p, sqlite3_column_bytes(s_, c));
  }
  Id ColId(int c) const {
    Id id{};
    auto b = ColBlob(c);
    if (b.size() == id.size()) std::memcpy(id.data(), b.data(), id.size());
    return id;
  }
  // Whether column `sum_col` holds row_sum() of columns `cols`, as read.
  bool RowSumMatches(std::initializer_list<int> cols, int sum_col) const {
    return core::RowSumMatches(s_, cols, sum_col);
  }

 private:
  sqlite3_stmt* s_ = nullptr;
};

constexpr const char* kSchemaSql = R"sql(
CREATE TABLE meta(key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;
CREATE TABLE devices(
  device_id BLOB PRIMARY KEY, user TEXT NOT NULL, role INTEGER NOT NULL, state INTEGER NOT NULL,
  sign_pk BLOB NOT NULL, box_pk BLOB NOT NULL, label TEXT NOT NULL, enrolled_ms INTEGER NOT NULL,
  last_sync_ms INTEGER NOT NULL DEFAULT 0, last_device_seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE enrollments(
  code_hash BLOB PRIMARY KEY, role INTEGER NOT NULL, user TEXT NOT NULL,
  expires_ms INTEGER NOT NULL, used_ms INTEGER NOT NULL DEFAULT 0, bootstrap INTEGER NOT NULL)
  WITHOUT ROWID;
CREATE TABLE grants(
  device_id BLOB NOT NULL, key_class INTEGER NOT NULL, epoch INTEGER NOT NULL,
  sealed_key BLOB NOT NULL, signature BLOB NOT NULL, PRIMARY KEY(device_id, key_class, epoch));
CREATE TABLE records(
  record_id BLOB PRIMARY KEY, kind TEXT NOT NULL, parent_id BLOB, case_id BLOB NOT NULL,
  unit_id TEXT NOT NULL, created_by_user TEXT NOT NULL, created_seq INTEGER NOT NULL)
  WITHOUT ROWID;
CREATE INDEX records_by_case ON records(case_id);
CREATE TABLE fields(
  record_id BLOB NOT NULL, field INTEGER NOT NULL, value BLOB NOT NULL, sealed INTEGER NOT NULL,
  key_class INTEGER NOT NULL, key_version INTEGER NOT NULL, stamp_hlc INTEGER NOT NULL,
  stamp_device BLOB NOT NULL, origin_hlc INTEGER NOT NULL, author TEXT NOT NULL,
  seq INTEGER NOT NULL, txn INTEGER NOT NULL, PRIMARY KEY(record_id, field));
CREATE UNIQUE INDEX fields_by_seq ON fields(seq);
CREATE TABLE field_history(
  id INTEGER PRIMARY KEY, record_id BLOB NOT NULL, field INTEGER NOT NULL, value BLOB NOT NULL,
  sealed INTEGER NOT NULL, key_class INTEGER NOT NULL, key_version INTEGER NOT NULL,
  stamp_hlc INTEGER NOT NULL, stamp_device BLOB NOT NULL, origin_hlc INTEGER NOT NULL,
  author TEXT NOT NULL, seq INTEGER NOT NULL, superseded_seq INTEGER NOT NULL,
  reason TEXT NOT NULL);
CREATE INDEX field_history_by_field ON field_history(record_id, field);
CREATE TABLE assignments(case_id BLOB NOT NULL, user TEXT NOT NULL, PRIMARY KEY(case_id, user))
  WITHOUT ROWID;
CREATE INDEX assignments_by_user ON assignments(user, case_id);
CREATE TABLE rejections(
  device_id BLOB NOT NULL, device_seq INTEGER NOT NULL, reason TEXT NOT NULL,
  detail TEXT NOT NULL, PRIMARY KEY(device_id, device_seq)) WITHOUT ROWID;
CREATE TABLE device_cases(
  device_id BLOB NOT NULL, case_id BLOB NOT NULL, first_seq INTEGER NOT NULL,
  PRIMARY KEY(device_id, case_id)) WITHOUT ROWID;
)sql";

// Version 5; also run on every writable open of an older store (migration).
// A device's changes up to its mark at migration have no receipt: its floor
// says so (Store::ReceiptFloor). A receipts row holds one push's receipts:
// `entries` is (u64 BE device_seq, 16-byte digest) each, in increasing
// device_seq, from first_seq to last_seq.
constexpr const char* kReceiptTablesSql = R"sql(
CREATE TABLE IF NOT EXISTS receipts(
  device_id BLOB NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
  entries BLOB NOT NULL, PRIMARY KEY(device_id, first_seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS receipt_floors(device_id BLOB PRIMARY KEY, floor INTEGER NOT NULL)
  WITHOUT ROWID;
INSERT OR IGNORE INTO receipt_floors(device_id, floor)
  SELECT device_id, last_device_seq FROM devices WHERE last_device_seq > 0;
)sql";

// Version 6; also run on every writable open of an older store (migration).
// root_holders: a device handed the unit root key (since_ms 0 and the sealed
// RootGrant until it reports holding it) or holding it (since_ms > 0). Before
// version 6 only the unit's first admin device could hold it. approvals: the
// root key's signature over each approved device's role and keys.
// restore_gaps: each device's changes a restore lost (RestoreGapRow).
constexpr const char* kCustodyTablesSql = R"sql(
CREATE TABLE IF NOT EXISTS root_holders(
  device_id BLOB PRIMARY KEY, since_ms INTEGER NOT NULL, grant_body BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS escrow_grants(
  key_class INTEGER NOT NULL, epoch INTEGER NOT NULL, body BLOB NOT NULL,
  PRIMARY KEY(key_class, epoch)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS approvals(
  device_id BLOB PRIMARY KEY, signature BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS restore_gaps(
  device_id BLOB PRIMARY KEY, from_seq INTEGER NOT NULL, to_seq INTEGER NOT NULL,
  since_ms INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO root_holders(device_id, since_ms, grant_body)
  SELECT device_id, enrolled_ms, x'' FROM devices WHERE role = 1 AND state = 2
  AND NOT EXISTS(SELECT 1 FROM root_holders) ORDER BY enrolled_ms, rowid LIMIT 1;
)sql";

// Version 7; also run on every writable open of an older store (migration).
// usage: the bytes of values each device (and, under the empty id, the whole
// unit) stored on a day (days since the Unix epoch, UTC), for the storage
// bounds; days before yesterday are pruned.
constexpr const char* kUsageTableSql = R"sql(
CREATE TABLE IF NOT EXISTS usage(
  device_id BLOB NOT NULL, day INTEGER NOT NULL, bytes INTEGER NOT NULL,
  PRIMARY KEY(device_id, day)) WITHOUT ROWID;
)sql";

// Version 8 (RowSum above); also run on every writable open of an older store
// (migration), in the transaction that checks the version. A stored generated
// column cannot be added to a table, so records, fields and field_history are
// copied into new tables with `sum` and their indexes made again; history ids
// are kept (re-keying names history rows by id).
#define TEDUH_RECORD_SUM \
  "row_sum(record_id, kind, parent_id, case_id, unit_id, created_by_user, created_seq)"
#define TEDUH_FIELD_SUM_COLS                                                                       \
  "record_id, field, value, sealed, key_class, key_version, stamp_hlc, stamp_device, origin_hlc, " \
  "author"
constexpr const char* kRowSumTablesSql = R"sql(
CREATE TABLE records_v8(
  record_id BLOB PRIMARY KEY, kind TEXT NOT NULL, parent_id BLOB, case_id BLOB NOT NULL,
  unit_id TEXT NOT NULL, created_by_user TEXT NOT NULL, created_seq INTEGER NOT NULL,
  sum BLOB GENERATED ALWAYS AS ()sql" TEDUH_RECORD_SUM R"sql() STORED) WITHOUT ROWID;
INSERT INTO records_v8(record_id, kind, parent_id, case_id, unit_id, created_by_user, created_seq)
  SELECT record_id, kind, parent_id, case_id, unit_id, created_by_user, created_seq FROM records;
DROP TABLE records;
ALTER TABLE records_v8 RENAME TO records;
CREATE INDEX records_by_case ON records(case_id);
CREATE TABLE fields_v8(
  record_id BLOB NOT NULL, field INTEGER NOT NULL, value BLOB NOT NULL, sealed INTEGER NOT NULL,
  key_class INTEGER NOT NULL, key_version INTEGER NOT NULL, stamp_hlc INTEGER NOT NULL,
  stamp_device BLOB NOT NULL, origin_hlc INTEGER NOT NULL, author TEXT NOT NULL,
  seq INTEGER NOT NULL, txn INTEGER NOT NULL,
  sum BLOB GENERATED ALWAYS AS (row_sum()sql" TEDUH_FIELD_SUM_COLS R"sql()) STORED,
  PRIMARY KEY(record_id, field));
INSERT INTO fields_v8()sql" TEDUH_FIELD_SUM_COLS R"sql(, seq, txn)
  SELECT )sql" TEDUH_FIELD_SUM_COLS R"sql(, seq, txn FROM fields ORDER BY seq;
DROP TABLE fields;
ALTER TABLE fields_v8 RENAME TO fields;
CREATE UNIQUE INDEX fields_by_seq ON fields(seq);
CREATE TABLE field_history_v8(
  id INTEGER PRIMARY KEY, record_id BLOB NOT NULL, field INTEGER NOT NULL, value BLOB NOT NULL,
  sealed INTEGER NOT NULL, key_class INTEGER NOT NULL, key_version INTEGER NOT NULL,
  stamp_hlc INTEGER NOT NULL, stamp_device BLOB NOT NULL, origin_hlc INTEGER NOT NULL,
  author TEXT NOT NULL, seq INTEGER NOT NULL, superseded_seq INTEGER NOT NULL,
  reason TEXT NOT NULL,
  sum BLOB GENERATED ALWAYS AS (row_sum()sql" TEDUH_FIELD_SUM_COLS R"sql(, reason)) STORED);
INSERT INTO field_history_v8(id, )sql" TEDUH_FIELD_SUM_COLS R"sql(, seq, superseded_seq, reason)
  SELECT id, )sql" TEDUH_FIELD_SUM_COLS R"sql(, seq, superseded_seq, reason FROM field_history;
DROP TABLE field_history;
ALTER TABLE field_history_v8 RENAME TO field_history;
CREATE INDEX field_history_by_field ON field_history(record_id, field);
)sql";

// Also run on every writable open of a version 1 store (migration).
constexpr const char* kAuditTableSql = R"sql(
CREATE TABLE IF NOT EXISTS audit(
  idx INTEGER PRIMARY KEY, body BLOB NOT NULL, prev_hash BLOB NOT NULL, hash BLOB NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES('audit_last', '0');
INSERT OR IGNORE INTO meta(key, value) VALUES('audit_head', zeroblob(32));
)sql";

// Version 3; also run on every writable open of an older store (migration).
constexpr const char* kRevocationsTableSql = R"sql(
CREATE TABLE IF NOT EXISTS revocations(
  device_id BLOB PRIMARY KEY, revoked_ms INTEGER NOT NULL, by_device BLOB NOT NULL,
  by_user TEXT NOT NULL, wipe_order BLOB NOT NULL, receipt BLOB NOT NULL,
  wiped_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS key_acks(
  device_id BLOB NOT NULL, key_class INTEGER NOT NULL, epoch INTEGER NOT NULL,
  acked_ms INTEGER NOT NULL, PRIMARY KEY(device_id, key_class, epoch)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS retirements(
  key_class INTEGER NOT NULL, epoch INTEGER NOT NULL, body BLOB NOT NULL,
  PRIMARY KEY(key_class, epoch)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS evictions(
  device_id BLOB NOT NULL, case_id BLOB NOT NULL, seq INTEGER NOT NULL,
  PRIMARY KEY(device_id, case_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shred_requests(
  case_id BLOB PRIMARY KEY, requested_by TEXT NOT NULL, requested_ms INTEGER NOT NULL)
  WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shredded(
  case_id BLOB PRIMARY KEY, seq INTEGER NOT NULL, body BLOB NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shredded_by_seq ON shredded(seq);
CREATE TABLE IF NOT EXISTS rotation_staging(
  key_class INTEGER NOT NULL, epoch INTEGER NOT NULL, record_id BLOB NOT NULL,
  wrapped BLOB NOT NULL, stager BLOB NOT NULL, PRIMARY KEY(key_class, record_id)) WITHOUT ROWID;
)sql";

// Version 4; also run on every writable open of an older store (migration).
constexpr const char* kRekeyTablesSql = R"sql(
CREATE TABLE IF NOT EXISTS held_cases(
  device_id BLOB NOT NULL, case_id BLOB NOT NULL, PRIMARY KEY(device_id, case_id)) WITHOUT ROWID;
INSERT OR IGNORE INTO held_cases(device_id, case_id) SELECT device_id, case_id FROM device_cases;
CREATE TABLE IF NOT EXISTS rekey_targets(
  case_id BLOB NOT NULL, key_class INTEGER NOT NULL, version INTEGER NOT NULL,
  epoch INTEGER NOT NULL, PRIMARY KEY(case_id, key_class)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS key_drops(
  seq INTEGER PRIMARY KEY, case_id BLOB NOT NULL, key_class INTEGER NOT NULL,
  below INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS key_drops_by_case ON key_drops(case_id, key_class);
INSERT OR IGNORE INTO held_cases(device_id, case_id) SELECT device_id, case_id FROM evictions;
)sql";

// ReadFieldRow's columns, then the row's sum (NULL in an older store opened
// read-only, which has none).
std::string FieldColumns(bool sums, const char* table = "f") {
  std::string cols;
  for (const char* c : {"record_id", "field", "value", "sealed", "key_class", "key_version",
                        "stamp_hlc", "stamp_device", "origin_hlc", "author", "seq"}) {
    cols += std::string(table) + "." + c + ", ";
  }
  // A history row (table h) has no txn.
  cols += std::string_view(table) == "h" ? std::string("0") : std::string(table) + ".txn";
  cols += sums ? std::string(", ") + table + ".sum" : std::string(", NULL");
  return cols;
}
constexpr int kFieldColumnCount = 13;  // FieldColumns()
constexpr int kFieldSumColumn = 12;

void ReadFieldRow(const Stmt& s, int c, FieldRow* out) {
  out->record_id = s.ColId(c + 0);
  out->field = static_cast<std::uint32_t>(s.ColInt(c + 1));
  out->value = s.ColBlob(c + 2);
  out->sealed = s.ColInt(c + 3) != 0;
  out->key_class = static_cast<teduh::AccessClass>(s.ColInt(c + 4));
  out->key_version = static_cast<std::uint32_t>(s.ColInt(c + 5));
  out->stamp.hlc = s.ColU64(c + 6);
  out->stamp.device = s.ColId(c + 7);
  out->origin_hlc = s.ColU64(c + 8);
  out->author = s.ColText(c + 9);
  out->seq = s.ColU64(c + 10);
  out->txn = s.ColU64(c + 11);
}

DeviceRow ReadDevice(const Stmt& s) {
  DeviceRow d;
  d.device_id = s.ColId(0);
  d.user = std::string(s.ColText(1));
  d.role = static_cast<Role>(s.ColInt(2));
  d.state = static_cast<DeviceState>(s.ColInt(3));
  d.sign_pk = std::string(s.ColBlob(4));
  d.box_pk = std::string(s.ColBlob(5));
  d.label = std::string(s.ColText(6));
  d.enrolled_ms = s.ColInt(7);
  d.last_sync_ms = s.ColInt(8);
  d.last_device_seq = s.ColU64(9);
  return d;
}

constexpr const char* kDeviceColumns =
    "device_id, user, role, state, sign_pk, box_pk, label, enrolled_ms, last_sync_ms, "
    "last_device_seq";

class SqliteStore final : public Store {
 public:
  ~SqliteStore() override {
    // Statements must be finalised before the connection closes.
    stmts_.reset();
    sqlite3_close_v2(db_);
  }

  static result<std::unique_ptr<SqliteStore>> Open(const std::string& path,
                                                   const StoreOptions& options) {
    if (!std::filesystem::exists(path)) return make_error_code(server::errc::not_initialised);
    std::unique_ptr<SqliteStore> s(new SqliteStore());
    int flags = options.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
    int rc = sqlite3_open_v2(path.c_str(), &s->db_, flags | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) return FromSqlite(rc);
    if (rc = core::RegisterRowSum(s->db_); rc != SQLITE_OK) return FromSqlite(rc);
    s->on_damage_ = options.on_damage;
    sqlite3_busy_timeout(s->db_, options.busy_timeout_ms);
    if (auto ec = s->Exec(options.read_only ? "PRAGMA query_only=ON;"
                                            : "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"))
      return ec;
    if (auto ec =
            s->Exec(("PRAGMA cache_size=-" + std::to_string(options.cache_kib) +
                     "; PRAGMA wal_autocheckpoint=" + std::to_string(options.checkpoint_pages))
                        .c_str()))
      return ec;
    if (options.max_bytes > 0 && !options.read_only) {
      sqlite3_stmt* raw = nullptr;
      int page = 4096;
      if (sqlite3_prepare_v2(s->db_, "PRAGMA page_size", -1, &raw, nullptr) == SQLITE_OK &&
          sqlite3_step(raw) == SQLITE_ROW)
        page = sqlite3_column_int(raw, 0);
      sqlite3_finalize(raw);
      const std::uint64_t pages = std::max<std::uint64_t>(1, options.max_bytes / page);
      if (auto ec = s->Exec(("PRAGMA max_page_count=" + std::to_string(pages)).c_str())) return ec;
    }
    auto version = s->Meta("schema_version");
    if (!version) return version.error();
    const bool older = *version == "1" || *version == "2" || *version == "3" || *version == "4" ||
                       *version == "5" || *version == "6" || *version == "7";
    if (older && !options.read_only) {
      if (auto ec = s->Migrate()) return ec;
    } else if (older) {
      // Read as it is: an empty audit log (version 1), no revocations
      // (before 3), nothing re-keyed (before 4).
      s->has_audit_ = *version != "1";
      s->has_revocations_ = *version == "3" || *version == "4";
      s->has_rekeys_ = *version == "4";
      s->has_receipts_ = *version == "5" || *version == "6";
      s->has_custody_ = *version == "6";
      s->has_usage_ = *version == "7";
      s->has_sums_ = false;
    } else if (*version != std::to_string(kStoreSchemaVersion)) {
      return core::make_error_code(errc::store_failed);
    }
    if (auto ec = s->PrepareAll()) return ec;
    return s;
  }

  static result<UnitInfo> Create(const std::string& path, std::string_view unit_name,
                                 const EnrollmentRow& bootstrap) {
    if (std::filesystem::exists(path)) return make_error_code(server::errc::already_initialised);
    sqlite3* db = nullptr;
    int rc =
        sqlite3_open_v2(path.c_str(), &db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    std::unique_ptr<sqlite3, decltype(&sqlite3_close_v2)> guard(db, &sqlite3_close_v2);
    if (rc != SQLITE_OK) return FromSqlite(rc);
    sqlite3_busy_timeout(db, 5000);
    UnitInfo unit;
    unit.unit_id = core::ToHex(core::NewId());
    unit.unit_name = std::string(unit_name);
    unit.server_id = core::NewId();
    do {
      Id g = core::NewId();
      std::memcpy(&unit.generation, g.data(), sizeof unit.generation);
      unit.generation &= 0x7FFFFFFFFFFFFFFFull;  // stored as a signed integer
    } while (unit.generation == 0);

    rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; BEGIN IMMEDIATE;",
                      nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return FromSqlite(rc);
    rc = sqlite3_exec(db, kSchemaSql, nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, kAuditTableSql, nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, kRevocationsTableSql, nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, kRekeyTablesSql, nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, kReceiptTablesSql, nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, kCustodyTablesSql, nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, kUsageTableSql, nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) rc = core::RegisterRowSum(db);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, kRowSumTablesSql, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      // The tables exist: another `init` won the race.
      return rc == SQLITE_ERROR ? make_error_code(server::errc::already_initialised)
                                : FromSqlite(rc);
    }
    sqlite3_stmt* raw = nullptr;
    rc = sqlite3_prepare_v2(db, "INSERT INTO meta(key, value) VALUES(?1, ?2)", -1, &raw, nullptr);
    if (rc != SQLITE_OK) return FromSqlite(rc);
    std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> st(raw, &sqlite3_finalize);
    auto put = [&](const char* key, std::string_view value) {
      sqlite3_reset(raw);
      sqlite3_bind_text(raw, 1, key, -1, SQLITE_STATIC);
      sqlite3_bind_blob(raw, 2, value.data(), static_cast<int>(value.size()), SQLITE_STATIC);
      return sqlite3_step(raw);
    };
    std::string gen = std::to_string(unit.generation);
    std::string version = std::to_string(kStoreSchemaVersion);
    for (auto [k, v] : {std::pair<const char*, std::string_view>{"schema_version", version},
                        {"unit_id", unit.unit_id},
                        {"unit_name", unit.unit_name},
                        {"server_id", core::AsBytes(unit.server_id)},
                        {"generation", gen},
                        {"unit_root_pk", ""},
                        {"hlc_last", "0"},
                        {"next_seq", "1"},
                        {"next_txn", "1"}}) {
      rc = put(k, v);
      if (rc != SQLITE_DONE) {
        sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
        return FromSqlite(rc);
      }
    }
    st.reset();
    raw = nullptr;
    rc = sqlite3_prepare_v2(db,
                            "INSERT INTO enrollments(code_hash, role, user, expires_ms, used_ms, "
                            "bootstrap) VALUES(?1, ?2, ?3, ?4, 0, 1)",
                            -1, &raw, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      return FromSqlite(rc);
    }
    std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> ins(raw, &sqlite3_finalize);
    sqlite3_bind_blob(raw, 1, bootstrap.code_hash.data(),
                      static_cast<int>(bootstrap.code_hash.size()), SQLITE_STATIC);
    sqlite3_bind_int64(raw, 2, bootstrap.role);
    sqlite3_bind_text(raw, 3, bootstrap.user.c_str(), -1, SQLITE_STATIC);
    sqlite3_bind_int64(raw, 4, bootstrap.expires_ms);
    rc = sqlite3_step(raw);
    ins.reset();
    if (rc != SQLITE_DONE) {
      sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      return FromSqlite(rc);
    }
    rc = sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return FromSqlite(rc);
    return unit;
  }

  error_code status() const override { return sticky_; }

  error_code Begin() override {
    if (sticky_) return sticky_;
    assert(!in_txn_);
    ReleaseRead();
    if (auto ec = Exec("BEGIN IMMEDIATE")) return ec;
    in_txn_ = true;
    auto seq = Meta("next_seq");
    auto txn = seq ? Meta("next_txn") : seq;
    if (!seq || !txn) {
      Rollback();
      return seq ? txn.error() : seq.error();
    }
    next_seq_ = std::stoull(*seq);
    next_txn_ = std::stoull(*txn);
    saved_seq_ = next_seq_;
    saved_txn_ = next_txn_;
    auto head = RecordedAuditHead();
    if (!head) {
      Rollback();
      return head.error();
    }
    audit_head_ = *head;
    saved_audit_head_ = audit_head_;
    return {};
  }

  error_code Commit() override {
    if (sticky_) return sticky_;
    assert(in_txn_);
    ReleaseRead();
    if (next_seq_ != saved_seq_)
      if (auto ec = PutMeta("next_seq", std::to_string(next_seq_))) return Fatal(ec);
    if (next_txn_ != saved_txn_)
      if (auto ec = PutMeta("next_txn", std::to_string(next_txn_))) return Fatal(ec);
    if (audit_head_ != saved_audit_head_) {
      if (auto ec = PutMeta("audit_last", std::to_string(audit_head_.index))) return Fatal(ec);
      if (auto ec = PutMeta("audit_head", HashView(audit_head_.hash))) return Fatal(ec);
    }
    int rc = sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
    in_txn_ = false;
    if (rc != SQLITE_OK) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      if ((rc & 0xFF) == SQLITE_FULL) return FromSqlite(rc);  // invariant 4
      sticky_ = FromSqlite(rc);
      if (!sticky_) sticky_ = core::make_error_code(errc::store_failed);
      return sticky_;
    }
    if (checkpoint_after_commit_) {
      // Content was purged: copy the zeroed pages into the database file and
      // empty the WAL now, rather than at the next automatic checkpoint.
      checkpoint_after_commit_ = false;
      sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
    }
    return {};
  }

  void Rollback() override {
    if (!in_txn_) return;
    ReleaseRead();
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    in_txn_ = false;
  }

  result<UnitInfo> LoadUnit() override {
    if (sticky_) return sticky_;
    UnitInfo u;
    auto get = [&](const char* key, std::string* out) -> error_code {
      auto v = Meta(key);
      if (!v) return v.error();
      *out = std::move(*v);
      return {};
    };
    std::string server_id, generation, hlc;
    for (auto [key, out] : {std::pair<const char*, std::string*>{"unit_id", &u.unit_id},
                            {"unit_name", &u.unit_name},
                            {"server_id", &server_id},
                            {"generation", &generation},
                            {"unit_root_pk", &u.unit_root_pk},
                            {"hlc_last", &hlc}}) {
      if (auto ec = get(key, out)) return ec;
    }
    auto id = core::IdFromBytes(server_id);
    if (!id) return core::make_error_code(errc::store_failed);
    u.server_id = *id;
    u.generation = std::stoull(generation);
    u.hlc_last = std::stoull(hlc);
    // Optional: stores made before the unit had a time zone keep WIB.
    if (auto zone = Meta("time_zone"); zone && core::ParseTimeZone(*zone)) u.time_zone = *zone;
    if (auto codes = Meta("unit_codes")) u.unit_codes = std::move(*codes);
    return u;
  }

  error_code SetUnitRootKey(std::string_view public_key) override {
    return PutMeta("unit_root_pk", public_key);
  }
  error_code SetTimeZone(std::string_view zone) override { return PutMeta("time_zone", zone); }
  error_code SetUnitCodes(std::string_view serialized) override {
    return PutMeta("unit_codes", serialized);
  }
  error_code SaveHlc(std::uint64_t hlc_last) override {
    return PutMeta("hlc_last", std::to_string(hlc_last));
  }
  result<std::uint64_t> HeadSeq() override {
    if (sticky_) return sticky_;
    auto next = Meta("next_seq");
    if (!next) return next.error();
    std::uint64_t n = 0;
    for (char c : *next) {
      if (c < '0' || c > '9') return Fail(SQLITE_CORRUPT);
      n = n * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return n > 0 ? n - 1 : 0;
  }
  error_code SetGeneration(std::uint64_t generation) override {
    return PutMeta("generation", std::to_string(generation));
  }

  result<std::optional<DeviceRow>> FindDevice(const Id& device_id) override {
    if (sticky_) return sticky_;
    Stmt& s = stmts_->find_device;
    s.Start().Blob(1, device_id);
    int rc = s.Step();
    std::optional<DeviceRow> row;
    if (rc == SQLITE_ROW) row = ReadDevice(s);
    s.Done();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Fail(rc);
    return row;
  }

  result<std::vector<DeviceRow>> ListDevices() override {
    if (sticky_) return sticky_;
    Stmt& s = stmts_->list_devices;
    s.Start();
    std::vector<DeviceRow> rows;
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) rows.push_back(ReadDevice(s));
    s.Done();
    if (rc != SQLITE_DONE) return Fail(rc);
    return rows;
  }

  error_code InsertDevice(const DeviceRow& d) override {
    return Run(stmts_->insert_device.Start()
                   .Blob(1, d.device_id)
                   .Text(2, d.user)
                   .Int(3, d.role)
                   .Int(4, d.state)
                   .Blob(5, d.sign_pk)
                   .Blob(6, d.box_pk)
                   .Text(7, d.label)
                   .Int(8, d.enrolled_ms)
                   .Int(9, d.last_sync_ms)
                   .U64(10, d.last_device_seq));
  }
  error_code SetDeviceState(const Id& id, DeviceState state) override {
    return Run(stmts_->set_device_state.Start().Int(1, state).Blob(2, id));
  }
  error_code SetDeviceMark(const Id& id, std::uint64_t mark) override {
    return Run(stmts_->set_device_mark.Start().U64(1, mark).Blob(2, id));
  }
  error_code TouchDevice(const Id& id, std::int64_t now_ms) override {
    return Run(stmts_->touch_device.Start().Int(1, now_ms).Blob(2, id));
  }

  result<std::optional<RevocationRow>> FindRevocation(const Id& device_id) override {
    if (sticky_) return sticky_;
    std::optional<RevocationRow> row;
    if (!has_revocations_) return row;
    Stmt& s = stmts_->find_revocation;
    s.Start().Blob(1, device_id);
    int rc = s.Step();
    if (rc == SQLITE_ROW) {
      RevocationRow r;
      r.device_id = device_id;
      r.revoked_ms = s.ColInt(0);
      if (s.ColBlob(1).size() == Id{}.size()) r.by_device = s.ColId(1);
      r.by_user = std::string(s.ColText(2));
      r.wipe_order = std::string(s.ColBlob(3));
      r.receipt = std::string(s.ColBlob(4));
      r.wiped_ms = s.ColInt(5);
      row = std::move(r);
    }
    s.Done();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Fail(rc);
    return row;
  }
  error_code PutRevocation(const RevocationRow& r) override {
    if (!has_revocations_) return core::make_error_code(errc::store_failed);
    return Run(stmts_->put_revocation.Start()
                   .Blob(1, r.device_id)
                   .Int(2, r.revoked_ms)
                   .Blob(3, r.by_device ? core::AsBytes(*r.by_device) : std::string_view())
                   .Text(4, r.by_user)
                   .Blob(5, r.wipe_order)
                   .Blob(6, r.receipt)
                   .Int(7, r.wiped_ms));
  }

  result<std::vector<GrantRow>> AllGrants() override {
    if (sticky_) return sticky_;
    std::vector<GrantRow> rows;
    if (!has_revocations_) return rows;
    Stmt& s = stmts_->all_grants;
    s.Start();
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      GrantRow g;
      g.device_id = s.ColId(0);
      g.key_class = static_cast<teduh::AccessClass>(s.ColInt(1));
      g.epoch = static_cast<std::uint32_t>(s.ColInt(2));
      g.sealed_key = std::string(s.ColBlob(3));
      g.signature = std::string(s.ColBlob(4));
      rows.push_back(std::move(g));
    }
    s.Done();
    if (rc != SQLITE_DONE) return Fail(rc);
    return rows;
  }
  error_code PutKeyAck(const KeyAckRow& a) override {
    return Run(stmts_->put_key_ack.Start()
                   .Blob(1, a.device_id)
                   .Int(2, a.key_class)
                   .Int(3, a.epoch)
                   .Int(4, a.acked_ms));
  }
  result<std::vector<KeyAckRow>> KeyAcks(const std::optional<Id>& device) override {
    if (sticky_) return sticky_;
    std::vector<KeyAckRow> rows;
    if (!has_revocations_) return rows;
    Stmt& s = device ? stmts_->key_acks_of : stmts_->key_acks;
    s.Start();
    if (device) s.Blob(1, *device);
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      KeyAckRow a;
      a.device_id = s.ColId(0);
      a.key_class = static_cast<teduh::AccessClass>(s.ColInt(1));
      a.epoch = static_cast<std::uint32_t>(s.ColInt(2));
      rows.push_back(a);
    }
    s.Done();
    if (rc != SQLITE_DONE) return Fail(rc);
    return rows;
  }
  error_code RetireEpoch(teduh::AccessClass key_class, std::uint32_t epoch,
                         std::string_view body) override {
    if (auto ec = Run(stmts_->drop_epoch_grants.Start().Int(1, key_class).Int(2, epoch))) return ec;
    if (auto ec = Run(stmts_->drop_epoch_acks.Start().Int(1, key_class).Int(2, epoch))) return ec;
    if (has_custody_) {
      if (auto ec = Run(stmts_->drop_epoch_escrow.Start().Int(1, key_class).Int(2, epoch)))
        return ec;
    }
    return Run(stmts_->put_retirement.Start().Int(1, key_class).Int(2, epoch).Blob(3, body));
  }
  error_code PutRootHolder(const RootHolderRow& r) override {
    if (!has_custody_) return core::make_error_code(errc::store_failed);
    return Run(stmts_->put_root_holder.Start()
                   .Blob(1, r.device_id)
                   .Int(2, r.since_ms)
                   .Blob(3, r.pending_grant));
  }
  result<std::vector<RootHolderRow>> RootHolders() override {
    if (sticky_) return sticky_;
    std::vector<RootHolderRow> rows;
    if (!has_custody_) return rows;
    Stmt& s = stmts_->root_holders;
    s.Start();
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      RootHolderRow r;
      r.device_id = s.ColId(0);
      r.since_ms = s.ColInt(1);
      r.pending_grant = std::string(s.ColBlob(2));
      rows.push_back(std::move(r));
    }
    s.Done();
    if (rc != SQLITE_DONE) return Fail(rc);
    return rows;
  }
  error_code PutEscrowGrant(teduh::AccessClass key_class, std::uint32_t epoch,
                            std::string_view body) override {
    if (!has_custody_) return core::make_error_code(errc::store_failed);
    return Run(stmts_->put_escrow.Start().Int(1, key_class).Int(2, epoch).Blob(3, body));
  }
  error_code PutApproval(const Id& device_id, std::string_view signature) override {
    if (!has_custody_) return core::make_error_code(errc::store_failed);
    return Run(stmts_->put_approval.Start().Blob(1, device_id).Blob(2, signature));
  }
  result<std::vector<std::pair<Id, std::string>>> Approvals() override {
    if (sticky_) return sticky_;
    std::vector<std::pair<Id, std::string>> rows;
    if (!has_custody_) return rows;
    Stmt& s = stmts_->approvals;
    s.Start();
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) rows.emplace_back(s.ColId(0), s.ColBlob(1));
    s.Done();
    if (rc != SQLITE_DONE) return Fail(rc);
    return rows;
  }
  result<std::uint64_t> UsageOn(const std::optional<Id>& device_id, std::int64_t day) override {
    if (sticky_) return sticky_;
    if (!has_usage_) return std::uint64_t{0};
    Stmt& s =
        stmts_->usage_on.Start().Blob(1, device_id ? core::AsBytes(*device_id) : "").Int(2, day);
    int rc = s.Step();
    std::uint64_t bytes = rc == SQLITE_ROW ? s.ColU64(0) : 0;
    s.Done();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Fail(rc);
    return bytes;
  }
  error_code AddUsage(const std::optional<Id>& device_id, std::int64_t day,
                      std::uint64_t bytes) override {
    if (!has_usage_) return core::make_error_code(errc::store_failed);
    return Run(stmts_->add_usage.Start()
                   .Blob(1, device_id ? core::AsBytes(*device_id) : "")
                   .Int(2, day)
                   .U64(3, bytes));
  }
  error_code PruneUsage(std::int64_t day) override {
    if (!has_usage_) return core::make_error_code(errc::store_failed);
    return Run(stmts_->prune_usage.Start().Int(1, day));
  }
  error_code NoteRestoreGap(const RestoreGapRow& r) override {
    if (!has_custody_) return core::make_error_code(errc::store_failed);
    return Run(stmts_->note_gap.Start()
                   .Blob(1, r.device_id)
                   .U64(2, r.from_seq)
                   .U64(3, r.to_seq)
                   .Int(4, r.since_ms));
  }
  result<std::vector<RestoreGapRow>> RestoreGaps() override {
    if (sticky_) return sticky_;
    std::vector<RestoreGapRow> rows;
    if (!has_custody_) return rows;
    Stmt& s = stmts_->restore_gaps;
    s.Start();
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      RestoreGapRow r;
      r.device_id = s.ColId(0);
      r.from_seq = static_cast<std::uint64_t>(s.ColInt(1));
      r.to_seq = static_cast<std::uint64_t>(s.ColInt(2));
      r.since_ms = s.ColInt(3);
      rows.push_back(r);
    }
    s.Done();
    if (rc != SQLITE_DONE) return Fail(rc);
    return rows;
  }
  result<std::vector<std::string>> EscrowGrants() override {
    return Bodies(stmts_->escrow_grants, has_custody_);
  }
  result<std::vector<std::string>> Retirements() override {
    return Bodies(stmts_->retirements, has_revocations_);
  }
  // The first column of every row of `s` (none when its table is missing).
  result<std::vector<std::string>> Bodies(Stmt& s, bool has_table) {
    if (sticky_) return sticky_;
    std::vector<std::string> rows;
    if (!has_table) return rows;
    s.Start();
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) rows.emplace_back(s.ColBlob(0));
    s.Done();
    if (rc != SQLITE_DONE) return Fail(rc);
    return rows;
  }
  result<std::vector<Id>> CasesAssignedTo(std::string_view user) override {
    if (sticky_) return sticky_;
    std::vector<Id> out;
    Stmt& s = stmts_->cases_of_user;
    s.Start().Text(1, user);
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) out.push_back(s.ColId(0));
    s.Done();
    if (rc != SQLITE_DONE) return Fail(rc);
    return out;
  }
  error_code EvictUser(const Id& case_id, std::string_view user, std::uint64_t seq) override {
    if (auto ec = Run(stmts_->add_evictions.Start().Blob(1, case_id).Text(2, user).U64(3, seq)))
      return ec;
    return Run(stmts_->drop_user_holdings.Start().Blob(1, case_id).Text(2, user));
  }
  error_code ClearUserEvictions(const Id& case_id, std::string_view user) override {
    return Run(stmts_->clear_user_evictions.Start().Blob(1, case_id).Text(2, user));
  }
  result<bool> HasEviction(const Id& device_id, const Id& case_id) override {
    if (sticky_) return BoolError(sticky_);
    if (!has_revocations_) return false;
    Stmt& s = stmts_->has_eviction;
    s.Start().Blob(1, device_id).Blob(2, case_id);
    int rc = s.Step();
    s.Done();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return BoolError(Fail(rc));
    return rc == SQLITE_ROW;
  }
  error_code ScanEvictions(const Id& device_id, std::uint64_t after_seq, std::uint64_t upto_seq,
                           const std::function<void(std::uint64_t, const Id&)>& visit) override {
    if (sticky_) return sticky_;
    if (!has_revocations_) return {};
    Stmt& s = stmts_->scan_evictions;
    s.Start()
        .Blob(1, device_id)
        .U64(2, after_seq)
        .Int(3, static_cast<std::int64_t>(std::min<std::uint64_t>(upto_seq, INT64_MAX)));
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) visit(s.ColU64(0), s.ColId(1));
    s.Done();
    if (rc != SQLITE_DONE) return Fail(rc);
    return {};
  }
  error_code DropEvictions(const Id& device_id, std::uint64_t upto_seq) override {
    return Run(stmts_->drop_evictions.Start().Blob(1, device_id).U64(2, upto_seq));
  }
  error_code PutShredRequest(const Id& case_id, std::string_view user,
                             std::int64_t now_ms) override {
    return Run(stmts_->put_shred_request.Start().Blob(1, case_id).Text(2, user).Int(3, now_ms));
  }
  result<std::optional<std::string>> FindShredRequest(const Id& case_id) override {
    if (sticky_) return sticky_;
    std::optional<std::string> who;
    if (!has_revocations_) return who;
    Stmt& s = stmts_->find_shred_request;
    s.Start().Blob(1, case_id);
    int rc = s.Step();
    if (rc == SQLITE_ROW) who = std::string(s.ColText(0));
    s.Done();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Fail(rc);
    return who;
  }
  result<std::uint64_t> PurgeCase(const Id& case_id, std::uint64_t seq,
                                  std::string_view order) override {
    if (sticky_) return sticky_;
    assert(in_txn_);
    // secure_delete zeroes every freed cell and page, so the purged
    // ciphertext is not left in free space of the file.
    if (auto ec = Exec("PRAGMA secure_delete=ON")) return ec;
    const int before = sqlite3_total_changes(db_);
    error_code ec = Run(stmts_->purge_history.Start().Blob(1, case_id));
    if (!ec) ec = Run(stmts_->purge_fields.Start().Blob(1, case_id));
    const std::uint64_t values = static_cast<std::uint64_t>(sqlite3_total_changes(db_) - before);
    for (Stmt* st : {&stmts_->purge_records, &stmts_->clear_assignees, &stmts_->purge_holdings,
                     &stmts_->purge_held, &stmts_->purge_rekey_targets})
      if (!ec) ec = Run(st->Start().Blob(1, case_id));
    if (auto off = Exec("PRAGMA secure_delete=OFF"); !ec) ec = off;
    if (ec) return ec;
    if (auto e = Run(stmts_->drop_shred_request.Start().Blob(1, case_id))) return e;
    if (auto e = Run(stmts_->put_shredded.Start().Blob(1, case_id).U64(2, seq).Blob(3, order)))
      return e;
    checkpoint_after_commit_ = true;
    return values;
  }
  result<bool> IsShredded(const Id& case_id) override {
    if (sticky_) return BoolError(sticky_);
    if (!has_revocations_) return false;
    Stmt& s = stmts_->is_shredded;
    s.Start().Blob(1, case_id);
    int rc = s.Step();
    s.Done();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return BoolError(Fail(rc));
    return rc == SQLITE_ROW;
  }
  error_code ScanShredded(
      std::uint64_t after_seq, std::uint64_t upto_seq,
      const std::function<void(std::uint64_t, std::string_view)>& visit) override {
    if (sticky_) return sticky_;
    if (!has_revocations_) return {};
    Stmt& s = stmts_->scan_shredded;
    s.Start()
        .U64(1, after_seq)
        .Int(2, static_cast<std::int64_t>(std::min<std::uint64_t>(upto_seq, INT64_MAX)));
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) visit(s.ColU64(0), s.ColBlob(1));
    s.Done();
    if (rc != SQLITE_DONE) return Fail(rc);
    return {};
  }
  error_code DropStaleStaging(teduh::AccessClass key_class, std::uint32_t epoch,
                              const Id& stager) override {
    return Run(stmts_->clear_other_staging.Start().Int(1, key_class).Int(2, epoch).Blob(3, stager));
  }
  error_code StageRewrap(teduh::AccessClass key_class, std::uint32_t epoch, const Id& record_id,
                         std::string_view wrapped, const Id& stager) override {
    return Run(stmts_->stage_rewrap.Start()
                   .Int(1, key_class)
                   .Int(2, epoch)
                   .Blob(3, record_id)
                   .Blob(4, wrapped)
                   .Blob(5, stager));
  }
  error_code ClearStaging(teduh::AccessClass key_class) override {
    return Run(stmts_->clear_staging.Start().Int(1, key_class));
  }
  error_code ScanStaging(
      teduh::AccessClass key_class, std::uint32_t epoch, const Id& stager,
      const std::function<error_code(const Id&, std::string_view)>& visit) override {
    if (sticky_) return sticky_;
    // Copied out first: `visit` writes, and no statement may stay active across writes
    // of the same rows.
    std::vector<std::pair<Id, std::string>> rows;
    Stmt& s = stmts_->scan_staging;
    s.Start().Int(1, key_class).Int(2, epoch).Blob(3, stager);
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) rows.emplace_back(s.ColId(0), std::string(s.ColBlob(1)));
    s.Done();
    if (rc != SQLITE_DONE) return Fail(rc);
    for (const auto& [id, wrapped] : rows)
      if (auto ec = visit(id, wrapped)) return ec;
    return {};
  }
  error_code ScanCaseKeys(const std::function<void(const CaseKeyRow&)>& visit) override {
    if (sticky_) return sticky_;
    if (!has_revocations_) return {};
    Stmt& s = stmts_->scan_case_keys;
    s.Start().Text(1, "teduh.keys.v1.CaseKey");
    CaseKeyRow row;
    teduh::keys::v1::CaseKey fields;
    bool have = false;
    int rc;
    auto flush = [&] {
      if (!have) return;
      row.key_class = fields.key_class() == teduh::ACCESS_CLASS_UNSPECIFIED
                          ? teduh::ACCESS_CLASS_GENERAL
                          : fields.key_class();
      row.version = fields.version();
      row.epoch = fields.epoch();
      visit(row);
    };
    while ((rc = s.Step()) == SQLITE_ROW) {
      const Id id = s.ColId(0);
      if (!have || id != row.record_id) {
        flush();
        have = true;
        row.record_id = id;
        row.case_id = s.ColId(1);
        fields.Clear();
      }
      auto value = s.ColBlob(3);
      fields.MergeFromString(std::string(value));
    }
    s.Done();
    if (rc != SQLITE_DONE) return Fail(rc);
    flush();
    return {};
  }

  result<std::optional<EnrollmentRow>> FindEnrollment(const CodeHash& hash) override {
    if (sticky_) return sticky_;
    Stmt& s = stmts_->find_enrollment;
    s.Start().Blob(1, HashView(hash));
    int rc = s.Step();
    std::optional<EnrollmentRow> row;
    if (rc == SQLITE_ROW) {
      row.emplace();
      row->code_hash = hash;
      row->role = static_cast<Role>(s.ColInt(0));
      row->user = std::string(s.ColText(1));
      row->expires_ms = s.ColInt(2);
      row->used_ms = s.ColInt(3);
      row->bootstrap = s.ColInt(4) != 0;
    }
    s.Done();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Fail(rc);
    return row;
  }
  error_code InsertEnrollment(const EnrollmentRow& e) override {
    return Run(stmts_->insert_enrollment.Start()
                   .Blob(1, HashView(e.code_hash))
                   .Int(2, e.role)
                   .Text(3, e.user)
                   .Int(4, e.expires_ms)
                   .Int(5, e.used_ms)
                   .Int(6, e.bootstrap ? 1 : 0));
  }
  error_code MarkEnrollmentUsed(const CodeHash& hash, std::int64_t now_ms) override {
    return Run(stmts_->use_enrollment.Start().Int(1, now_ms).Blob(2, HashView(hash)));
  }

  error_code PutGrant(const GrantRow& g) override {
    return Run(stmts_->put_grant.Start()
                   .Blob(1, g.device_id)
                   .Int(2, g.key_class)
                   .Int(3, g.epoch)
                   .Blob(4, g.sealed_key)
                   .Blob(5, g.signature));
  }
  result<std::vector<GrantRow>> GrantsFor(const Id& device_id) override {
    if (sticky_) return sticky_;
    Stmt& s = stmts_->grants_for;
    s.Start().Blob(1, device_id);
    std::vector<GrantRow> rows;
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      GrantRow g;
      g.device_id = device_id;
      g.key_class = static_cast<teduh::AccessClass>(s.ColInt(0));
      g.epoch = static_cast<std::uint32_t>(s.ColInt(1));
      g.sealed_key = std::string(s.ColBlob(2));
      g.signature = std::string(s.ColBlob(3));
      rows.push_back(std::move(g));
    }
    s.Done();
    if (rc != SQLITE_DONE) return Fail(rc);
    return rows;
  }

  result<std::optional<RecordRow>> FindRecord(const Id& record_id) override {
    if (sticky_) return sticky_;
    Stmt& s = stmts_->find_record;
    s.Start().Blob(1, record_id);
    int rc = s.Step();
    std::optional<RecordRow> row;
    bool damaged = false;
    if (rc == SQLITE_ROW) {
      row.emplace();
      row->record_id = record_id;
      row->kind = std::string(s.ColText(0));
      if (!s.ColNull(1)) row->parent_id = s.ColId(1);
      row->case_id = s.ColId(2);
      row->created_by_user = std::string(s.ColText(3));
      row->created_seq = s.ColU64(4);
      damaged = !RecordIntact(s, {5, 0, 1, 2, 6, 3, 4}, 7, record_id);
    }
    s.Done();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Fail(rc);
    // A record whose kind, parent or case cannot be trusted cannot be merged
    // into: the change waits on its device (errc::store_damaged).
    if (damaged) return core::make_error_code(errc::store_damaged);
    return row;
  }
  error_code InsertRecord(const RecordRow& r) override {
    Stmt& s = stmts_->insert_record.Start();
    s.Blob(1, r.record_id).Text(2, r.kind);
    if (r.parent_id)
      s.Blob(3, *r.parent_id);
    else
      s.Null(3);
    s.Blob(4, r.case_id).Text(5, unit_id_).Text(6, r.created_by_user).U64(7, r.created_seq);
    return Run(s);
  }

  result<bool> FindField(const Id& record_id, std::uint32_t field, FieldRow* out) override {
    if (sticky_) return BoolError(sticky_);
    Stmt& s = stmts_->find_field;
    s.Start().Blob(1, record_id).Int(2, field);
    int rc = s.Step();
    found_ = FoundField{record_id, field, 0};
    if (rc == SQLITE_ROW) {
      found_.rowid = s.ColInt(kFieldColumnCount);
      // A damaged value is as good as none: a change for the field replaces
      // it (by the rowid kept above), which is how devices repair it.
      const bool intact = ReadCheckedField(s, out, "fields");
      out->damaged = !intact;
      return intact;  // the row stays readable until the next FindField
    }
    out->damaged = false;
    s.Done();
    if (rc != SQLITE_DONE) return BoolError(Fail(rc));
    return false;
  }

  result<bool> SumMatches(const FieldRow& f) override {
    if (sticky_) return BoolError(sticky_);
    Stmt& s = BindSummedColumns(stmts_->sum_matches, f);
    int rc = s.Step();
    const bool match = rc == SQLITE_ROW && s.ColInt(0) == 1;
    s.Done();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return BoolError(Fail(rc));
    return match;
  }

  result<std::optional<bool>> FieldIntact(const Id& record_id, std::uint32_t field) override {
    using R = result<std::optional<bool>>;
    if (sticky_) return R(boost::system::in_place_error, sticky_);
    Stmt& s = stmts_->field_intact;
    s.Start().Blob(1, record_id).Int(2, field);
    int rc = s.Step();
    std::optional<bool> intact;
    if (rc == SQLITE_ROW) intact = s.ColInt(0) == 1;
    s.Done();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return R(boost::system::in_place_error, Fail(rc));
    return intact;
  }

  // Binds parameters 1-10: the columns a field row's checksum covers
  // (TEDUH_FIELD_SUM_COLS), as stored.
  static Stmt& BindSummedColumns(Stmt& s, const FieldRow& f) {
    return s.Start()
        .Blob(1, f.record_id)
        .Int(2, f.field)
        .Blob(3, f.value)
        .Int(4, f.sealed ? 1 : 0)
        .Int(5, f.key_class)
        .Int(6, f.key_version)
        .U64(7, f.stamp.hlc)
        .Blob(8, f.stamp.device)
        .U64(9, f.origin_hlc)
        .Text(10, f.author);
  }

  // Binds parameters 1-11 of put_field and append_history: the row as stored.
  static Stmt& BindFieldRow(Stmt& s, const FieldRow& f) {
    return BindSummedColumns(s, f).U64(11, f.seq);
  }

  // An overwrite of the row FindField just found rewrites it by rowid: one
  // B-tree search instead of the upsert's unique-index probe, failed insert
  // and second search. The statement re-checks the row's key, so a stale
  // rowid (a row deleted and its rowid reused since) falls back to the upsert.
  error_code PutField(const FieldRow& f) override {
    if (found_.rowid != 0 && found_.field == f.field && found_.record_id == f.record_id) {
      const std::int64_t rowid = found_.rowid;
      found_.rowid = 0;  // the row FindField read is no longer the stored one
      if (auto ec = Run(BindFieldRow(stmts_->update_field, f).U64(12, f.txn).Int(13, rowid)))
        return ec;
      if (sqlite3_changes(db_) > 0) return {};
    }
    return Run(BindFieldRow(stmts_->put_field, f).U64(12, f.txn));
  }

  error_code AppendHistory(const FieldRow& f, std::uint64_t superseded_seq,
                           std::string_view reason) override {
    return Run(BindFieldRow(stmts_->append_history, f).U64(12, superseded_seq).Text(13, reason));
  }

  std::uint64_t AllocateSeq() override {
    assert(in_txn_);
    return next_seq_++;
  }
  std::uint64_t AllocateTxn() override {
    assert(in_txn_);
    return next_txn_++;
  }

  error_code ResequenceCase(const Id& case_id, std::uint64_t txn) override {
    if (sticky_) return sticky_;
    Stmt& s = stmts_->case_field_rowids;
    s.Start().Blob(1, case_id);
    rowids_.clear();
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) rowids_.push_back(s.ColInt(0));
    s.Done();
    if (rc != SQLITE_DONE) return Fail(rc);
    for (std::int64_t rowid : rowids_) {
      if (auto ec =
              Run(stmts_->reseq_field.Start().U64(1, AllocateSeq()).U64(2, txn).Int(3, rowid)))
        return ec;
    }
    return {};
  }

  result<bool> IsAssigned(const Id& case_id, std::string_view user) override {
    if (sticky_) return BoolError(sticky_);
    Stmt& s = stmts_->is_assigned;
    s.Start().Blob(1, case_id).Text(2, user);
    int rc = s.Step();
    s.Done();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return BoolError(Fail(rc));
    return rc == SQLITE_ROW;
  }
  result<std::vector<std::string>> Assignees(const Id& case_id) override {
    if (sticky_) return sticky_;
    Stmt& s = stmts_->assignees;
    s.Start().Blob(1, case_id);
    std::vector<std::string> users;
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) users.emplace_back(s.ColText(0));
    s.Done();
    if (rc != SQLITE_DONE) return Fail(rc);
    return users;
  }
  error_code SetAssignees(const Id& case_id, const std::vector<std::string>& users) override {
    if (auto ec = Run(stmts_->clear_assignees.Start().Blob(1, case_id))) return ec;
    for (const auto& u : users)
      if (auto ec = Run(stmts_->add_assignee.Start().Blob(1, case_id).Text(2, u))) return ec;
    return {};
  }
  result<bool> HoldsCase(const Id& device_id, const Id& case_id) override {
    if (sticky_) return BoolError(sticky_);
    Stmt& s = stmts_->holds_case;
    s.Start().Blob(1, device_id).Blob(2, case_id);
    int rc = s.Step();
    s.Done();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return BoolError(Fail(rc));
    return rc == SQLITE_ROW;
  }
  // A device usually holds the case already (it pulled it, or pushed to it
  // before): one lookup then, not two inserts the keys turn into no-ops.
  // Skipping both is safe: a holding row is written with its held_cases row
  // (the version 4 migration copied them), and held_cases rows outlive it.
  error_code RecordHolding(const Id& device_id, const Id& case_id,
                           std::uint64_t first_seq) override {
    auto held = HoldsCase(device_id, case_id);
    if (!held) return held.error();
    if (*held) return {};
    if (auto ec = Run(
            stmts_->record_holding.Start().Blob(1, device_id).Blob(2, case_id).U64(3, first_seq)))
      return ec;
    if (!has_rekeys_) return {};
    return Run(stmts_->record_held.Start().Blob(1, device_id).Blob(2, case_id));
  }
  error_code DropRejection(const Id& device_id, std::uint64_t device_seq) override {
    return Run(stmts_->drop_rejection.Start().Blob(1, device_id).U64(2, device_seq));
  }

  result<std::vector<Id>> CasesToRekey(const std::optional<Id>& held_by, const Id& after,
                                       std::size_t limit) override {
    if (sticky_) return sticky_;
    std::vector<Id> out;
    if (!has_rekeys_) return out;
    Stmt& s = held_by ? stmts_->held_cases : stmts_->unit_cases;
    s.Start().Blob(1, after).Int(2, static_cast<std::int64_t>(limit));
    if (held_by)
      s.Blob(3, *held_by);
    else
      s.Text(3, "teduh.casework.v1.Case");
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) out.push_back(s.ColId(0));
    s.Done();
    if (rc != SQLITE_DONE) return Fail(rc);
    return out;
  }
  error_code ScanCaseValues(
      const Id& case_id,
      const std::function<bool(const FieldRow&, std::string_view, std::uint64_t)>& visit) override {
    if (sticky_) return sticky_;
    FieldRow row;
    for (Stmt* s : {&stmts_->case_current, &stmts_->case_history}) {
      s->Start().Blob(1, case_id);
      int rc;
      bool go = true;
      const bool history = s == &stmts_->case_history;
      while (go && (rc = s->Step()) == SQLITE_ROW) {
        if (!ReadCheckedField(*s, &row, history ? "field_history" : "fields",
                              history ? kFieldColumnCount + 2 : -1))
          continue;  // reported; re-keying leaves a damaged value as it is
        go = visit(row, s->ColText(kFieldColumnCount),
                   history ? s->ColU64(kFieldColumnCount + 1) : 0);
      }
      s->Done();
      if (go && rc != SQLITE_DONE) return Fail(rc);
      if (!go) break;
    }
    return {};
  }
  result<bool> ReplaceHistoryValue(const Id& case_id, std::uint64_t history_id,
                                   teduh::AccessClass key_class, std::uint32_t old_version,
                                   std::string_view value, std::uint32_t new_version) override {
    if (auto ec = Run(stmts_->replace_history.Start()
                          .U64(1, history_id)
                          .Int(2, old_version)
                          .Blob(3, value)
                          .Int(4, new_version)
                          .Blob(5, case_id)
                          .Int(6, key_class)))
      return BoolError(ec);
    return sqlite3_changes(db_) > 0;
  }
  error_code DeleteRecord(const Id& record_id) override {
    for (Stmt* st :
         {&stmts_->delete_record_history, &stmts_->delete_record_fields, &stmts_->delete_record})
      if (auto ec = Run(st->Start().Blob(1, record_id))) return ec;
    return {};
  }
  error_code PutRekeyTarget(const Id& case_id, const RekeyTargetRow& row) override {
    return Run(stmts_->put_rekey_target.Start()
                   .Blob(1, case_id)
                   .Int(2, row.key_class)
                   .Int(3, row.version)
                   .Int(4, row.epoch));
  }
  result<std::vector<RekeyTargetRow>> RekeyTargets(const Id& case_id) override {
    if (sticky_) return sticky_;
    std::vector<RekeyTargetRow> out;
    if (!has_rekeys_) return out;
    Stmt& s = stmts_->rekey_targets;
    s.Start().Blob(1, case_id);
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW)
      out.push_back({static_cast<teduh::AccessClass>(s.ColInt(0)),
                     static_cast<std::uint32_t>(s.ColInt(1)),
                     static_cast<std::uint32_t>(s.ColInt(2))});
    s.Done();
    if (rc != SQLITE_DONE) return Fail(rc);
    return out;
  }
  error_code ClearRekeyTargets(const Id& case_id) override {
    return Run(stmts_->clear_rekey_targets.Start().Blob(1, case_id));
  }
  error_code PutKeyDrop(std::uint64_t seq, const Id& case_id, teduh::AccessClass key_class,
                        std::uint32_t below) override {
    return Run(
        stmts_->put_key_drop.Start().U64(1, seq).Blob(2, case_id).Int(3, key_class).Int(4, below));
  }
  result<bool> HeldCase(const Id& device_id, const Id& case_id) override {
    if (sticky_) return BoolError(sticky_);
    if (!has_rekeys_) return false;
    Stmt& s = stmts_->held_case;
    s.Start().Blob(1, device_id).Blob(2, case_id);
    int rc = s.Step();
    s.Done();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return BoolError(Fail(rc));
    return rc == SQLITE_ROW;
  }
  result<bool> KeyDropsExist() override {
    if (sticky_) return BoolError(sticky_);
    if (!has_rekeys_) return false;
    Stmt& s = stmts_->any_key_drops;
    s.Start();
    int rc = s.Step();
    s.Done();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return BoolError(Fail(rc));
    return rc == SQLITE_ROW;
  }
  result<std::uint32_t> KeyDroppedBelow(const Id& case_id, teduh::AccessClass key_class) override {
    if (sticky_) return sticky_;
    if (!has_rekeys_) return std::uint32_t{0};
    Stmt& s = stmts_->key_dropped_below;
    s.Start().Blob(1, case_id).Int(2, key_class);
    int rc = s.Step();
    std::uint32_t below = rc == SQLITE_ROW ? static_cast<std::uint32_t>(s.ColInt(0)) : 0;
    s.Done();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Fail(rc);
    return below;
  }
  error_code ScanKeyDrops(std::uint64_t after_seq, std::uint64_t upto_seq,
                          const std::function<void(std::uint64_t, const Id&, teduh::AccessClass,
                                                   std::uint32_t)>& visit) override {
    if (sticky_) return sticky_;
    if (!has_rekeys_) return {};
    Stmt& s = stmts_->scan_key_drops;
    s.Start()
        .U64(1, after_seq)
        .Int(2, static_cast<std::int64_t>(std::min<std::uint64_t>(upto_seq, INT64_MAX)));
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW)
      visit(s.ColU64(0), s.ColId(1), static_cast<teduh::AccessClass>(s.ColInt(2)),
            static_cast<std::uint32_t>(s.ColInt(3)));
    s.Done();
    if (rc != SQLITE_DONE) return Fail(rc);
    return {};
  }

  error_code PutRejection(const Id& device_id, std::uint64_t device_seq, std::string_view reason,
                          std::string_view detail) override {
    return Run(stmts_->put_rejection.Start()
                   .Blob(1, device_id)
                   .U64(2, device_seq)
                   .Text(3, reason)
                   .Text(4, detail));
  }
  error_code PutReceipts(const Id& device_id, const std::vector<Receipt>& entries) override {
    if (entries.empty()) return {};
    constexpr std::size_t kEntry = 8 + std::tuple_size_v<core::ChangeDigest>;
    std::string blob;
    blob.reserve(entries.size() * kEntry);
    for (const Receipt& r : entries) {
      for (int shift = 56; shift >= 0; shift -= 8)
        blob.push_back(static_cast<char>(r.device_seq >> shift));
      blob.append(reinterpret_cast<const char*>(r.digest.data()), r.digest.size());
    }
    return Run(stmts_->put_receipt.Start()
                   .Blob(1, device_id)
                   .U64(2, entries.front().device_seq)
                   .U64(3, entries.back().device_seq)
                   .Blob(4, blob));
  }
  result<std::optional<core::ChangeDigest>> FindReceipt(const Id& device_id,
                                                        std::uint64_t device_seq) override {
    if (sticky_) return sticky_;
    if (!has_receipts_) return std::optional<core::ChangeDigest>();
    constexpr std::size_t kEntry = 8 + std::tuple_size_v<core::ChangeDigest>;
    Stmt& s = stmts_->find_receipt;
    s.Start().Blob(1, device_id).U64(2, device_seq);
    std::optional<core::ChangeDigest> found;
    int rc;
    while (!found && (rc = s.Step()) == SQLITE_ROW) {
      // Binary search in the push's entries (a damaged row of another
      // length is searched only over its whole entries, and matches nothing).
      const std::string_view entries = s.ColBlob(0);
      std::size_t lo = 0, hi = entries.size() / kEntry;
      while (lo < hi) {
        const std::size_t mid = (lo + hi) / 2;
        std::uint64_t seq = 0;
        for (std::size_t i = 0; i < 8; ++i)
          seq = (seq << 8) | static_cast<unsigned char>(entries[mid * kEntry + i]);
        if (seq == device_seq) {
          core::ChangeDigest d{};
          std::memcpy(d.data(), entries.data() + mid * kEntry + 8, d.size());
          found = d;
          break;
        }
        if (seq < device_seq) {
          lo = mid + 1;
        } else {
          hi = mid;
        }
      }
    }
    if (found) rc = SQLITE_DONE;
    s.Done();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Fail(rc);
    return found;
  }
  result<std::uint64_t> CountReceipts(const Id& device_id, std::uint64_t from,
                                      std::uint64_t to) override {
    if (sticky_) return sticky_;
    if (!has_receipts_ || to <= from) return std::uint64_t{0};
    constexpr std::size_t kEntry = 8 + std::tuple_size_v<core::ChangeDigest>;
    std::vector<std::uint64_t> seqs;
    Stmt& s = stmts_->count_receipts;
    s.Start().Blob(1, device_id).U64(2, from).U64(3, to);
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      const std::string_view entries = s.ColBlob(0);
      for (std::size_t at = 0; at + kEntry <= entries.size(); at += kEntry) {
        std::uint64_t seq = 0;
        for (std::size_t i = 0; i < 8; ++i)
          seq = (seq << 8) | static_cast<unsigned char>(entries[at + i]);
        if (seq > from && seq <= to) seqs.push_back(seq);
      }
    }
    s.Done();
    if (rc != SQLITE_DONE) return Fail(rc);
    std::sort(seqs.begin(), seqs.end());
    return static_cast<std::uint64_t>(std::unique(seqs.begin(), seqs.end()) - seqs.begin());
  }
  result<std::uint64_t> ReceiptFloor(const Id& device_id) override {
    if (sticky_) return sticky_;
    if (!has_receipts_) return std::uint64_t{0};
    Stmt& s = stmts_->receipt_floor;
    s.Start().Blob(1, device_id);
    int rc = s.Step();
    std::uint64_t floor = rc == SQLITE_ROW ? s.ColU64(0) : 0;
    s.Done();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Fail(rc);
    return floor;
  }

  result<std::optional<Rejection>> FindRejection(const Id& device_id,
                                                 std::uint64_t device_seq) override {
    if (sticky_) return sticky_;
    Stmt& s = stmts_->find_rejection;
    s.Start().Blob(1, device_id).U64(2, device_seq);
    int rc = s.Step();
    std::optional<Rejection> r;
    if (rc == SQLITE_ROW) r = Rejection{std::string(s.ColText(0)), std::string(s.ColText(1))};
    s.Done();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Fail(rc);
    return r;
  }

  AuditHead PendingAuditHead() const override {
    assert(in_txn_);
    return audit_head_;
  }

  error_code AppendAudit(const AuditRow& row) override {
    if (sticky_) return sticky_;
    assert(in_txn_);
    if (!has_audit_ || row.index != audit_head_.index + 1 ||
        row.prev_hash != HashView(audit_head_.hash) || row.hash.size() != audit_head_.hash.size())
      return core::make_error_code(errc::invalid_argument);
    if (auto ec = Run(stmts_->insert_audit.Start()
                          .U64(1, row.index)
                          .Blob(2, row.body)
                          .Blob(3, row.prev_hash)
                          .Blob(4, row.hash)))
      return ec;
    audit_head_.index = row.index;
    std::memcpy(audit_head_.hash.data(), row.hash.data(), audit_head_.hash.size());
    return {};
  }

  result<AuditHead> RecordedAuditHead() override {
    if (sticky_) return sticky_;
    AuditHead head;
    if (!has_audit_) return head;
    // One statement, so both keys come from the same commit.
    Stmt& s = stmts_->audit_head;
    s.Start();
    int rc = s.Step();
    bool ok = false;
    if (rc == SQLITE_ROW) {
      const std::string_view last = s.ColBlob(0), hash = s.ColBlob(1);
      auto [end, ec] = std::from_chars(last.data(), last.data() + last.size(), head.index);
      ok = ec == std::errc() && end == last.data() + last.size() && !last.empty() &&
           hash.size() == head.hash.size();
      if (ok) std::memcpy(head.hash.data(), hash.data(), head.hash.size());
    }
    s.Done();
    if (rc != SQLITE_ROW) return Fail(rc);
    if (!ok) return core::make_error_code(errc::store_failed);
    return head;
  }

  error_code ScanAudit(std::uint64_t after_index,
                       const std::function<bool(const AuditRow&)>& visit) override {
    if (sticky_) return sticky_;
    if (!has_audit_) return {};
    Stmt& s = stmts_->scan_audit;
    s.Start().U64(1, after_index);
    AuditRow row;
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      row.index = s.ColU64(0);
      row.body = s.ColBlob(1);
      row.prev_hash = s.ColBlob(2);
      row.hash = s.ColBlob(3);
      if (!visit(row)) {
        rc = SQLITE_DONE;
        break;
      }
    }
    s.Done();
    if (rc != SQLITE_DONE) return Fail(rc);
    return {};
  }

  error_code ScanChanges(const PullScope& scope, std::uint64_t after_seq, std::size_t max_rows,
                         const std::function<bool(const ChangeView&)>& visit) override {
    if (sticky_) return sticky_;
    if (scope.kind == PullScope::Kind::kNothing) return {};
    Stmt& s = scope.kind == PullScope::Kind::kUnit   ? stmts_->scan_unit
              : scope.kind == PullScope::Kind::kKeys ? stmts_->scan_keys
                                                     : stmts_->scan_assigned;
    FieldRow row;
    ChangeView view;
    view.field = &row;
    constexpr int k = kFieldColumnCount;  // the record's columns follow the field's
    // A damaged row is skipped (and reported); the rows it leaves out of the
    // statement's LIMIT are read by another pass from where it stopped, so a
    // pull's batch is as full as it would be without the damage.
    std::uint64_t from = after_seq;
    std::size_t left = max_rows;
    while (left > 0) {
      s.Start().U64(1, from).Int(2, static_cast<std::int64_t>(left));
      if (scope.kind == PullScope::Kind::kAssignedTo) s.Text(3, scope.user);
      std::size_t stepped = 0, skipped = 0;
      bool stop = false;
      int rc;
      while ((rc = s.Step()) == SQLITE_ROW) {
        ++stepped;
        from = s.ColU64(10);
        const bool field_ok = ReadCheckedField(s, &row, "fields");
        if (!field_ok ||
            !RecordIntact(s, {k + 3, k, k + 1, k + 2, k + 4, k + 5, k + 6}, k + 7, row.record_id)) {
          ++skipped;
          continue;
        }
        view.kind = s.ColText(k);
        view.parent_id.reset();
        if (!s.ColNull(k + 1)) view.parent_id = s.ColId(k + 1);
        view.case_id = s.ColId(k + 2);
        if (!visit(view)) {
          rc = SQLITE_DONE;
          stop = true;
          break;
        }
      }
      s.Done();
      if (rc != SQLITE_DONE) return Fail(rc);
      if (stop || skipped == 0 || stepped < left) break;
      left = skipped;
    }
    return {};
  }

  result<StoreCheck> Check(bool thorough, bool structure_only) override {
    StoreCheck out;
    ReleaseRead();
    {
      sqlite3_stmt* raw = nullptr;
      int rc = sqlite3_prepare_v2(
          db_, thorough ? "PRAGMA integrity_check(100)" : "PRAGMA quick_check(100)", -1, &raw,
          nullptr);
      std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> st(raw, &sqlite3_finalize);
      if (rc != SQLITE_OK) return FromSqlite(rc);
      while ((rc = sqlite3_step(raw)) == SQLITE_ROW) {
        auto line = View(sqlite3_column_text(raw, 0), sqlite3_column_bytes(raw, 0));
        if (line != "ok") out.structure.emplace_back(line);
      }
      // A file too damaged to check at all is the finding itself.
      if (rc != SQLITE_DONE) out.structure.emplace_back(sqlite3_errstr(rc));
    }
    if (structure_only || !has_sums_ || !out.structure.empty()) return out;
    const std::string field_sum = std::string("row_sum(") + TEDUH_FIELD_SUM_COLS;
    struct Pass {
      const char* table;
      std::string sql;
      std::uint64_t* count;
    };
    const Pass passes[] = {
        {"records",
         "SELECT record_id, 0, " TEDUH_RECORD_SUM " IS sum FROM records ORDER BY record_id",
         &out.records},
        {"fields", "SELECT record_id, field, " + field_sum + ") IS sum FROM fields", &out.values},
        {"field_history",
         "SELECT record_id, field, " + field_sum + ", reason) IS sum FROM field_history",
         &out.history},
    };
    out.rows_checked = true;
    for (const Pass& p : passes) {
      sqlite3_stmt* raw = nullptr;
      int rc = sqlite3_prepare_v2(db_, p.sql.c_str(), -1, &raw, nullptr);
      std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> st(raw, &sqlite3_finalize);
      if (rc != SQLITE_OK) return FromSqlite(rc);
      while ((rc = sqlite3_step(raw)) == SQLITE_ROW) {
        ++*p.count;
        if (sqlite3_column_int(raw, 2) == 1) continue;
        DamagedRow d{p.table, {}, static_cast<std::uint32_t>(sqlite3_column_int64(raw, 1))};
        auto id = View(sqlite3_column_blob(raw, 0), sqlite3_column_bytes(raw, 0));
        if (id.size() == d.record_id.size()) std::memcpy(d.record_id.data(), id.data(), id.size());
        if (out.rows.size() < 1000) out.rows.push_back(d);
      }
      if (rc != SQLITE_DONE) {
        out.structure.emplace_back(sqlite3_errstr(rc));
        break;
      }
    }
    return out;
  }

  error_code ScanFieldHistory(
      const Id& record_id, std::uint32_t field_lo, std::uint32_t field_hi,
      const std::function<void(const FieldRow&, std::string_view reason)>& visit) override {
    if (sticky_) return sticky_;
    FieldRow row;
    for (Stmt* s : {&stmts_->history_of, &stmts_->current_of}) {
      s->Start().Blob(1, record_id).Int(2, field_lo).Int(3, field_hi);
      const bool history = s == &stmts_->history_of;
      int rc;
      while ((rc = s->Step()) == SQLITE_ROW) {
        if (!ReadCheckedField(*s, &row, history ? "field_history" : "fields",
                              history ? kFieldColumnCount : -1))
          continue;  // reported, and never shown as a value the field had
        visit(row, history ? s->ColText(kFieldColumnCount) : std::string_view("current"));
      }
      s->Done();
      if (rc != SQLITE_DONE) return Fail(rc);
    }
    return {};
  }

 private:
  struct Statements {
    Stmt find_device, list_devices, insert_device, set_device_state, set_device_mark, touch_device,
        find_enrollment, insert_enrollment, use_enrollment, put_grant, grants_for, find_record,
        insert_record, find_field, put_field, update_field, append_history, case_field_rowids,
        reseq_field, is_assigned, assignees, cases_of_user, clear_assignees, add_assignee,
        holds_case, record_holding, put_rejection, find_rejection, scan_unit, scan_keys,
        scan_assigned, history_of, current_of, get_meta, put_meta, insert_audit, scan_audit,
        audit_head, find_revocation, put_revocation, all_grants, put_key_ack, key_acks, key_acks_of,
        stage_rewrap, clear_other_staging, clear_staging, scan_staging, scan_case_keys,
        put_retirement, retirements, drop_epoch_grants, drop_epoch_acks, drop_epoch_escrow,
        put_root_holder, root_holders, put_escrow, escrow_grants, put_approval, approvals, note_gap,
        restore_gaps, count_receipts, put_shred_request, find_shred_request, drop_shred_request,
        put_shredded, is_shredded, scan_shredded, purge_history, purge_fields, purge_records,
        purge_holdings, add_evictions, drop_user_holdings, clear_user_evictions, has_eviction,
        scan_evictions, drop_evictions, drop_rejection, record_held, held_cases, unit_cases,
        case_current, case_history, replace_history, delete_record_history, delete_record_fields,
        delete_record, put_rekey_target, rekey_targets, clear_rekey_targets, put_key_drop,
        key_dropped_below, scan_key_drops, purge_held, purge_rekey_targets, any_key_drops,
        held_case, put_receipt, find_receipt, receipt_floor, usage_on, add_usage, prune_usage,
        sum_matches, field_intact;
  };

  SqliteStore() = default;

  static std::string_view HashView(const std::array<std::uint8_t, 32>& h) {
    return {reinterpret_cast<const char*>(h.data()), h.size()};
  }

  // Invariant 7: FindField leaves its row readable, so its statement stays
  // active (holding a read snapshot) until reset here.
  void ReleaseRead() {
    if (stmts_) stmts_->find_field.Done();
  }

  error_code Exec(const char* sql) {
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
    return rc == SQLITE_OK ? error_code() : Fail(rc);
  }

  // Reads the field row at columns [0, kFieldColumnCount) of `s` into `out`
  // and checks its sum (over `reason_col` too, for a history row). False,
  // with the damage reported, when the row is damaged.
  bool ReadCheckedField(const Stmt& s, FieldRow* out, const char* table, int reason_col = -1) {
    ReadFieldRow(s, 0, out);
    if (!has_sums_) return true;
    const bool intact =
        reason_col < 0
            ? s.RowSumMatches({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, kFieldSumColumn)
            : s.RowSumMatches({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, reason_col}, kFieldSumColumn);
    if (!intact) ReportDamage({table, out->record_id, out->field});
    return intact;
  }
  // Whether the record row at `cols` (in row_sum's order) matches its sum.
  bool RecordIntact(const Stmt& s, std::initializer_list<int> cols, int sum_col,
                    const Id& record_id) {
    if (!has_sums_ || s.RowSumMatches(cols, sum_col)) return true;
    ReportDamage({"records", record_id, 0});
    return false;
  }
  void ReportDamage(const DamagedRow& row) {
    if (on_damage_) on_damage_(row);
  }

  error_code Fail(int rc) {
    error_code ec = FromSqlite(rc);
    if (LeavesStateUncertain(rc)) sticky_ = ec;
    return ec;
  }
  error_code Fatal(error_code ec) {
    sticky_ = ec;
    return ec;
  }

  error_code Run(Stmt& s) {
    if (sticky_) {
      s.Done();
      return sticky_;
    }
    int rc = s.Step();
    s.Done();
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return Fail(rc);
    return {};
  }

  // Meta is read before the statements are prepared (schema check), so it
  // uses a one-off statement.
  result<std::string> Meta(const char* key) {
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v2(db_, "SELECT value FROM meta WHERE key = ?1", -1, &raw, nullptr);
    if (rc != SQLITE_OK) return Fail(rc);
    std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> st(raw, &sqlite3_finalize);
    sqlite3_bind_text(raw, 1, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(raw);
    if (rc == SQLITE_DONE) return core::make_error_code(errc::store_failed);
    if (rc != SQLITE_ROW) return Fail(rc);
    return std::string(View(sqlite3_column_blob(raw, 0), sqlite3_column_bytes(raw, 0)));
  }

  error_code PutMeta(const char* key, std::string_view value) {
    return Run(stmts_->put_meta.Start().Text(1, key).Blob(2, value));
  }

  // Version 1 → 2 adds the audit table and its head; 2 → 3 the revocations;
  // 3 → 4 the re-keying tables; 4 → 5 the change receipts; 5 → 6 the key custody;
  // 6 → 7 the storage usage; 7 → 8 the row checksums.
  // Another connection may migrate first: the version is read again under
  // the write lock, and the tables of versions 2-7 are made IF NOT EXISTS.
  error_code Migrate() {
    if (auto ec = Exec("BEGIN IMMEDIATE")) return ec;
    auto version = Meta("schema_version");
    if (!version) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return version.error();
    }
    const int from = std::atoi(version->c_str());
    if (from >= kStoreSchemaVersion) return Exec("COMMIT");
    std::string sql = std::string(from == 1 ? kAuditTableSql : "") + kRevocationsTableSql +
                      kRekeyTablesSql + kReceiptTablesSql + kCustodyTablesSql + kUsageTableSql +
                      kRowSumTablesSql + "UPDATE meta SET value = '" +
                      std::to_string(kStoreSchemaVersion) + "' WHERE key = 'schema_version';";
    if (auto ec = Exec(sql.c_str())) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return ec;
    }
    return Exec("COMMIT");
  }

  error_code PrepareAll() {
    auto unit = Meta("unit_id");
    if (!unit) return unit.error();
    unit_id_ = *unit;
    stmts_ = std::make_unique<Statements>();
    Statements& st = *stmts_;
    const std::string device_cols = kDeviceColumns;
    const std::string field_cols = FieldColumns(has_sums_);
    const std::string history_cols = FieldColumns(has_sums_, "h");
    const std::string record_sum = has_sums_ ? "sum" : "NULL";
    const std::string scan = "SELECT " + field_cols +
                             ", r.kind, r.parent_id, r.case_id, r.record_id, r.unit_id, "
                             "r.created_by_user, r.created_seq, " +
                             (has_sums_ ? std::string("r.sum") : std::string("NULL")) +
                             " FROM fields f CROSS JOIN records r "
                             "ON r.record_id = f.record_id WHERE f.seq > ?1 ";
    std::vector<std::pair<Stmt*, std::string>> all = {
        {&st.find_device, "SELECT " + device_cols + " FROM devices WHERE device_id = ?1"},
        {&st.list_devices, "SELECT " + device_cols + " FROM devices ORDER BY enrolled_ms, rowid"},
        {&st.insert_device, "INSERT INTO devices(" + device_cols +
                                ") VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"},
        {&st.set_device_state, "UPDATE devices SET state = ?1 WHERE device_id = ?2"},
        {&st.set_device_mark, "UPDATE devices SET last_device_seq = ?1 WHERE device_id = ?2"},
        {&st.touch_device, "UPDATE devices SET last_sync_ms = ?1 WHERE device_id = ?2"},
        {&st.find_enrollment,
         "SELECT role, user, expires_ms, used_ms, bootstrap FROM enrollments WHERE code_hash = ?1"},
        {&st.insert_enrollment,
         "INSERT INTO enrollments(code_hash, role, user, expires_ms, used_ms, bootstrap) "
         "VALUES(?1, ?2, ?3, ?4, ?5, ?6)"},
        {&st.use_enrollment, "UPDATE enrollments SET used_ms = ?1 WHERE code_hash = ?2"},
        {&st.put_grant,
         "INSERT OR REPLACE INTO grants(device_id, key_class, epoch, sealed_key, signature) "
         "VALUES(?1, ?2, ?3, ?4, ?5)"},
        {&st.grants_for,
         "SELECT key_class, epoch, sealed_key, signature FROM grants WHERE device_id = ?1 "
         "ORDER BY key_class, epoch"},
        {&st.find_record,
         "SELECT kind, parent_id, case_id, created_by_user, created_seq, record_id, unit_id, " +
             record_sum + " FROM records WHERE record_id = ?1"},
        {&st.insert_record,
         "INSERT INTO records(record_id, kind, parent_id, case_id, unit_id, created_by_user, "
         "created_seq) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)"},
        {&st.find_field, "SELECT " + field_cols +
                             ", f.rowid FROM fields f WHERE f.record_id = ?1 AND f.field = ?2"},
        // A store without checksums (read-only, before version 8): every row intact.
        {&st.sum_matches,
         has_sums_ ? "SELECT sum = row_sum(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) FROM fields "
                     "WHERE record_id = ?1 AND field = ?2"
                   : "SELECT 0 FROM fields WHERE record_id = ?1 AND field = ?2"},
        {&st.field_intact, has_sums_ ? "SELECT sum IS row_sum(" TEDUH_FIELD_SUM_COLS
                                       ") FROM fields WHERE record_id = ?1 AND field = ?2"
                                     : "SELECT 1 FROM fields WHERE record_id = ?1 AND field = ?2"},
        {&st.update_field,
         "UPDATE fields SET value = ?3, sealed = ?4, key_class = ?5, key_version = ?6, "
         "stamp_hlc = ?7, stamp_device = ?8, origin_hlc = ?9, author = ?10, seq = ?11, txn = ?12 "
         "WHERE rowid = ?13 AND record_id = ?1 AND field = ?2"},
        {&st.put_field,
         "INSERT INTO fields(record_id, field, value, sealed, key_class, key_version, stamp_hlc, "
         "stamp_device, origin_hlc, author, seq, txn) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
         "?10, ?11, ?12) ON CONFLICT(record_id, field) DO UPDATE SET value = excluded.value, "
         "sealed = excluded.sealed, key_class = excluded.key_class, key_version = "
         "excluded.key_version, stamp_hlc = excluded.stamp_hlc, stamp_device = "
         "excluded.stamp_device, origin_hlc = excluded.origin_hlc, author = excluded.author, "
         "seq = excluded.seq, txn = excluded.txn"},
        {&st.append_history,
         "INSERT INTO field_history(record_id, field, value, sealed, key_class, key_version, "
         "stamp_hlc, stamp_device, origin_hlc, author, seq, superseded_seq, reason) "
         "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"},
        {&st.case_field_rowids,
         "SELECT f.rowid FROM records r JOIN fields f ON f.record_id = r.record_id "
         "WHERE r.case_id = ?1 ORDER BY f.seq"},
        {&st.reseq_field, "UPDATE fields SET seq = ?1, txn = ?2 WHERE rowid = ?3"},
        {&st.is_assigned, "SELECT 1 FROM assignments WHERE case_id = ?1 AND user = ?2"},
        {&st.assignees, "SELECT user FROM assignments WHERE case_id = ?1 ORDER BY user"},
        {&st.cases_of_user, "SELECT case_id FROM assignments WHERE user = ?1 ORDER BY case_id"},
        {&st.clear_assignees, "DELETE FROM assignments WHERE case_id = ?1"},
        {&st.add_assignee, "INSERT OR IGNORE INTO assignments(case_id, user) VALUES(?1, ?2)"},
        {&st.holds_case, "SELECT 1 FROM device_cases WHERE device_id = ?1 AND case_id = ?2"},
        {&st.record_holding,
         "INSERT OR IGNORE INTO device_cases(device_id, case_id, first_seq) VALUES(?1, ?2, ?3)"},
        {&st.put_rejection,
         "INSERT OR REPLACE INTO rejections(device_id, device_seq, reason, detail) "
         "VALUES(?1, ?2, ?3, ?4)"},
        {&st.find_rejection,
         "SELECT reason, detail FROM rejections WHERE device_id = ?1 AND device_seq = ?2"},
        {&st.scan_unit, scan + "ORDER BY f.seq LIMIT ?2"},
        {&st.scan_keys, scan + "AND r.kind = 'teduh.keys.v1.CaseKey' ORDER BY f.seq LIMIT ?2"},
        {&st.scan_assigned, scan + "AND r.case_id IN (SELECT case_id FROM assignments WHERE user = "
                                   "?3) ORDER BY f.seq LIMIT ?2"},
        {&st.history_of, "SELECT " + history_cols +
                             ", h.reason FROM field_history h WHERE h.record_id = ?1 AND h.field "
                             "BETWEEN ?2 AND ?3 ORDER BY h.field, h.id"},
        {&st.current_of, "SELECT " + field_cols +
                             " FROM fields f WHERE f.record_id = ?1 AND f.field BETWEEN ?2 AND ?3 "
                             "ORDER BY f.field"},
        {&st.get_meta, "SELECT value FROM meta WHERE key = ?1"},
        {&st.put_meta, "INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)"},
    };
    if (has_revocations_) {  // a read-only older store has none of the version 3 tables
      all.push_back({&st.all_grants,
                     "SELECT device_id, key_class, epoch, sealed_key, signature FROM grants "
                     "ORDER BY key_class, epoch, device_id"});
      all.push_back({&st.put_key_ack,
                     "INSERT OR IGNORE INTO key_acks(device_id, key_class, epoch, acked_ms) "
                     "VALUES(?1, ?2, ?3, ?4)"});
      all.push_back({&st.key_acks, "SELECT device_id, key_class, epoch FROM key_acks"});
      all.push_back({&st.key_acks_of,
                     "SELECT device_id, key_class, epoch FROM key_acks WHERE device_id = ?1"});
      all.push_back({&st.add_evictions,
                     "INSERT OR REPLACE INTO evictions(device_id, case_id, seq) SELECT "
                     "dc.device_id, dc.case_id, ?3 FROM device_cases dc JOIN devices d ON "
                     "d.device_id = dc.device_id WHERE dc.case_id = ?1 AND d.user = ?2"});
      all.push_back({&st.drop_user_holdings,
                     "DELETE FROM device_cases WHERE case_id = ?1 AND device_id IN (SELECT "
                     "device_id FROM devices WHERE user = ?2)"});
      all.push_back({&st.clear_user_evictions,
                     "DELETE FROM evictions WHERE case_id = ?1 AND device_id IN (SELECT "
                     "device_id FROM devices WHERE user = ?2)"});
      all.push_back(
          {&st.has_eviction, "SELECT 1 FROM evictions WHERE device_id = ?1 AND case_id = ?2"});
      all.push_back({&st.scan_evictions,
                     "SELECT seq, case_id FROM evictions WHERE device_id = ?1 AND seq > ?2 AND "
                     "seq <= ?3 ORDER BY seq"});
      all.push_back(
          {&st.drop_evictions, "DELETE FROM evictions WHERE device_id = ?1 AND seq <= ?2"});
      all.push_back({&st.put_shred_request,
                     "INSERT OR REPLACE INTO shred_requests(case_id, requested_by, requested_ms) "
                     "VALUES(?1, ?2, ?3)"});
      all.push_back({&st.find_shred_request,
                     "SELECT requested_by, requested_ms FROM shred_requests WHERE case_id = ?1"});
      all.push_back({&st.drop_shred_request, "DELETE FROM shred_requests WHERE case_id = ?1"});
      const std::string of_case =
          "WHERE record_id IN (SELECT record_id FROM records WHERE "
          "case_id = ?1)";
      all.push_back({&st.purge_history, "DELETE FROM field_history " + of_case});
      all.push_back({&st.purge_fields, "DELETE FROM fields " + of_case});
      all.push_back({&st.purge_records, "DELETE FROM records WHERE case_id = ?1"});
      all.push_back({&st.purge_holdings, "DELETE FROM device_cases WHERE case_id = ?1"});
      all.push_back({&st.put_shredded,
                     "INSERT OR REPLACE INTO shredded(case_id, seq, body) VALUES(?1, ?2, ?3)"});
      all.push_back({&st.is_shredded, "SELECT 1 FROM shredded WHERE case_id = ?1"});
      all.push_back({&st.scan_shredded,
                     "SELECT seq, body FROM shredded WHERE seq > ?1 AND seq <= ?2 ORDER BY seq"});
      all.push_back({&st.put_retirement,
                     "INSERT OR REPLACE INTO retirements(key_class, epoch, body) VALUES(?1, ?2, "
                     "?3)"});
      all.push_back({&st.retirements, "SELECT body FROM retirements ORDER BY key_class, epoch"});
      all.push_back(
          {&st.drop_epoch_grants, "DELETE FROM grants WHERE key_class = ?1 AND epoch = ?2"});
      all.push_back(
          {&st.drop_epoch_acks, "DELETE FROM key_acks WHERE key_class = ?1 AND epoch = ?2"});
      all.push_back({&st.stage_rewrap,
                     "INSERT OR REPLACE INTO rotation_staging(key_class, epoch, record_id, "
                     "wrapped, stager) VALUES(?1, ?2, ?3, ?4, ?5)"});
      all.push_back(
          {&st.clear_other_staging,
           "DELETE FROM rotation_staging WHERE key_class = ?1 AND (epoch <> ?2 OR stager <> ?3)"});
      all.push_back({&st.clear_staging, "DELETE FROM rotation_staging WHERE key_class = ?1"});
      all.push_back({&st.scan_staging,
                     "SELECT record_id, wrapped FROM rotation_staging WHERE key_class = ?1 AND "
                     "epoch = ?2 AND stager = ?3 ORDER BY record_id"});
      all.push_back({&st.scan_case_keys,
                     "SELECT r.record_id, r.case_id, f.field, f.value FROM records r JOIN fields "
                     "f ON f.record_id = r.record_id WHERE r.kind = ?1 AND f.field <= 3 "
                     "ORDER BY r.record_id"});
      all.push_back({&st.find_revocation,
                     "SELECT revoked_ms, by_device, by_user, wipe_order, receipt, wiped_ms "
                     "FROM revocations WHERE device_id = ?1"});
      all.push_back({&st.put_revocation,
                     "INSERT OR REPLACE INTO revocations(device_id, revoked_ms, by_device, "
                     "by_user, wipe_order, receipt, wiped_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)"});
    }
    all.push_back(
        {&st.drop_rejection, "DELETE FROM rejections WHERE device_id = ?1 AND device_seq = ?2"});
    if (has_custody_) {  // a read-only older store has none of the version 6 tables
      all.push_back(
          {&st.drop_epoch_escrow, "DELETE FROM escrow_grants WHERE key_class = ?1 AND epoch = ?2"});
      all.push_back({&st.put_root_holder,
                     "INSERT OR REPLACE INTO root_holders(device_id, since_ms, grant_body) "
                     "VALUES(?1, ?2, ?3)"});
      all.push_back({&st.root_holders, "SELECT device_id, since_ms, grant_body FROM root_holders"});
      all.push_back({&st.put_escrow,
                     "INSERT OR IGNORE INTO escrow_grants(key_class, epoch, body) "
                     "VALUES(?1, ?2, ?3)"});
      all.push_back(
          {&st.escrow_grants, "SELECT body FROM escrow_grants ORDER BY key_class, epoch"});
      all.push_back({&st.put_approval,
                     "INSERT OR REPLACE INTO approvals(device_id, signature) VALUES(?1, ?2)"});
      all.push_back({&st.approvals, "SELECT device_id, signature FROM approvals"});
      all.push_back({&st.note_gap,
                     "INSERT INTO restore_gaps(device_id, from_seq, to_seq, since_ms) "
                     "VALUES(?1, ?2, ?3, ?4) ON CONFLICT(device_id) DO UPDATE SET "
                     "from_seq = MIN(from_seq, excluded.from_seq), "
                     "to_seq = MAX(to_seq, excluded.to_seq)"});
      all.push_back(
          {&st.restore_gaps, "SELECT device_id, from_seq, to_seq, since_ms FROM restore_gaps"});
    }
    if (has_usage_) {
      all.push_back({&st.usage_on, "SELECT bytes FROM usage WHERE device_id = ?1 AND day = ?2"});
      all.push_back({&st.add_usage,
                     "INSERT INTO usage(device_id, day, bytes) VALUES(?1, ?2, ?3) "
                     "ON CONFLICT(device_id, day) DO UPDATE SET bytes = bytes + excluded.bytes"});
      all.push_back({&st.prune_usage, "DELETE FROM usage WHERE day < ?1"});
    }
    if (has_receipts_) {  // a read-only older store has none of the version 5 tables
      all.push_back({&st.put_receipt,
                     "INSERT INTO receipts(device_id, first_seq, last_seq, entries) VALUES(?1, "
                     "?2, ?3, ?4)"});
      all.push_back({&st.find_receipt,
                     "SELECT entries FROM receipts WHERE device_id = ?1 AND first_seq <= ?2 AND "
                     "last_seq >= ?2 ORDER BY first_seq DESC"});
      all.push_back({&st.receipt_floor, "SELECT floor FROM receipt_floors WHERE device_id = ?1"});
      all.push_back({&st.count_receipts,
                     "SELECT entries FROM receipts WHERE device_id = ?1 AND last_seq > ?2 AND "
                     "first_seq <= ?3"});
    }
    if (has_rekeys_) {  // a read-only older store has none of the version 4 tables
      all.push_back(
          {&st.record_held, "INSERT OR IGNORE INTO held_cases(device_id, case_id) VALUES(?1, ?2)"});
      all.push_back({&st.held_cases,
                     "SELECT h.case_id FROM held_cases h WHERE h.device_id = ?3 AND h.case_id > "
                     "?1 AND EXISTS(SELECT 1 FROM records r WHERE r.record_id = h.case_id) ORDER "
                     "BY h.case_id LIMIT ?2"});
      all.push_back({&st.unit_cases,
                     "SELECT record_id FROM records WHERE kind = ?3 AND record_id > ?1 ORDER BY "
                     "record_id LIMIT ?2"});
      all.push_back({&st.case_current,
                     "SELECT " + field_cols +
                         ", r.kind FROM records r JOIN fields f ON f.record_id = r.record_id "
                         "WHERE r.case_id = ?1 ORDER BY f.record_id, f.field"});
      all.push_back(
          {&st.case_history, "SELECT " + history_cols +
                                 ", r.kind, h.id, h.reason FROM records r JOIN field_history h ON "
                                 "h.record_id = r.record_id WHERE r.case_id = ?1 ORDER BY h.id"});
      all.push_back({&st.replace_history,
                     "UPDATE field_history SET value = ?3, key_version = ?4 WHERE id = ?1 AND "
                     "key_version = ?2 AND sealed = 1 AND key_class = ?6 AND record_id IN "
                     "(SELECT record_id FROM records WHERE case_id = ?5)"});
      all.push_back({&st.delete_record_history, "DELETE FROM field_history WHERE record_id = ?1"});
      all.push_back({&st.delete_record_fields, "DELETE FROM fields WHERE record_id = ?1"});
      all.push_back({&st.delete_record, "DELETE FROM records WHERE record_id = ?1"});
      all.push_back({&st.put_rekey_target,
                     "INSERT OR REPLACE INTO rekey_targets(case_id, key_class, version, epoch) "
                     "VALUES(?1, ?2, ?3, ?4)"});
      all.push_back({&st.rekey_targets,
                     "SELECT key_class, version, epoch FROM rekey_targets WHERE case_id = ?1 ORDER "
                     "BY key_class"});
      all.push_back({&st.clear_rekey_targets, "DELETE FROM rekey_targets WHERE case_id = ?1"});
      all.push_back({&st.put_key_drop,
                     "INSERT INTO key_drops(seq, case_id, key_class, below) VALUES(?1, ?2, ?3, "
                     "?4)"});
      all.push_back({&st.key_dropped_below,
                     "SELECT MAX(below) FROM key_drops WHERE case_id = ?1 AND key_class = ?2"});
      all.push_back({&st.any_key_drops, "SELECT 1 FROM key_drops LIMIT 1"});
      all.push_back(
          {&st.held_case, "SELECT 1 FROM held_cases WHERE device_id = ?1 AND case_id = ?2"});
      all.push_back({&st.scan_key_drops,
                     "SELECT seq, case_id, key_class, below FROM key_drops WHERE seq > ?1 AND "
                     "seq <= ?2 ORDER BY seq"});
      all.push_back({&st.purge_held, "DELETE FROM held_cases WHERE case_id = ?1"});
      all.push_back({&st.purge_rekey_targets, "DELETE FROM rekey_targets WHERE case_id = ?1"});
    }
    if (has_audit_) {  // a read-only version 1 store has no audit table
      all.push_back({&st.insert_audit,
                     "INSERT INTO audit(idx, body, prev_hash, hash) VALUES(?1, ?2, ?3, ?4)"});
      all.push_back({&st.scan_audit,
                     "SELECT idx, body, prev_hash, hash FROM audit WHERE idx > ?1 ORDER BY idx"});
      all.push_back({&st.audit_head,
                     "SELECT (SELECT value FROM meta WHERE key = 'audit_last'), "
                     "(SELECT value FROM meta WHERE key = 'audit_head')"});
    }
    for (auto& [stmt, sql] : all) {
      int rc = stmt->Prepare(db_, sql.c_str());
      if (rc != SQLITE_OK) return Fail(rc);
    }
    return {};
  }

  sqlite3* db_ = nullptr;
  std::string unit_id_;
  std::unique_ptr<Statements> stmts_;
  std::vector<std::int64_t> rowids_;  // scratch for ResequenceCase
  // The row the last FindField read (rowid 0: none, or already rewritten):
  // a hint for PutField, which re-checks the key.
  struct FoundField {
    Id record_id{};
    std::uint32_t field = 0;
    std::int64_t rowid = 0;
  } found_;
  // Guarded by the transaction (invariant 2).
  bool in_txn_ = false;
  std::uint64_t next_seq_ = 0, next_txn_ = 0, saved_seq_ = 0, saved_txn_ = 0;
  AuditHead audit_head_, saved_audit_head_;  // invariant 6
  bool has_audit_ = true;                    // false only for a version 1 store opened read-only
  bool has_revocations_ = true;              // false only for an older store opened read-only
  bool has_rekeys_ = true;                   // false only for an older store opened read-only
  bool has_receipts_ = true;                 // false only for an older store opened read-only
  bool has_custody_ = true;                  // false only for an older store opened read-only
  bool has_usage_ = true;                    // false only for an older store opened read-only
  bool has_sums_ = true;                     // false only for an older store opened read-only
  std::function<void(const DamagedRow&)> on_damage_;
  bool checkpoint_after_commit_ = false;  // set by PurgeCase
  error_code sticky_;                     // invariant 4
};

}  // namespace

std::string StorePath(const std::string& data_dir) {
  return (std::filesystem::path(data_dir) / "teduh-server.db").string();
}

result<UnitInfo> CreateSqliteStore(const std::string& path, std::string_view unit_name,
                                   const EnrollmentRow& bootstrap) {
  return SqliteStore::Create(path, unit_name, bootstrap);
}

result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path,
                                               const StoreOptions& options) {
  auto s = SqliteStore::Open(path, options);
  if (!s) return s.error();
  return std::unique_ptr<Store>(std::move(*s));
}

}  // namespace teduh::server
