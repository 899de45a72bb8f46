// Design notes — the local store (see local_store.h for the contract).
//
// Tables (plain columns are only what sync needs):
//   meta(key, value)                       schema, device id, hlc, device_seq,
//                                          cursor_generation, cursor_seq, sync info
//   records(record_id, kind, parent_id, unit_id)
//   fields(record_id, field, sealed, key_class, key_version, value,
//          stamp_hlc, stamp_device, origin_hlc, seq)      this device's view
//   shadow(... same columns ...)            the server's value of a field while a
//                                          local edit of it is pending
//   outbox(device_seq, record_id, field, state, reason, detail, payload,
//          created_ms, updated_ms)         every local edit, forever
//   unconfirmed(record_id, field)          after a reset: pulled values the
//                                          restored server has not sent again
//   set_aside(record_id, field, kind, ...)  values a restored server no longer
//                                          has, kept (at rest as in fields)
//
// `value` at rest: sealed -> the end-to-end ciphertext unchanged; open ->
// XChaCha20-Poly1305(storage key, single-field serialization,
// AD = "teduh-store-v1" || record_id || u32 BE field). `payload` =
// XChaCha20-Poly1305(storage key, FieldChange, AD = "teduh-outbox-v1" ||
// u64 BE device_seq).
//
// Life of an outbox entry:
//
//   Edit/EditTxn::Put ──► pending ──ApplyPushResults──► accepted | merged |
//        ▲                                               conflict | rejected
//        └──────────── ApplyPulled(reset) ◄── accepted | merged | conflict
//
// Invariants:
//  1. An edit writes its field row and its outbox entry in the same
//     transaction (Edit), with the HLC and device_seq counters; nothing is
//     acknowledged before COMMIT returns.
//  2. device_seq values are unique and increase by one per edit; the outbox
//     keeps every entry (rejected ones are final and stay visible). The
//     counter never falls below the server's mark for this device
//     (RaiseDeviceSeq, from the Welcome); a pending entry whose number the
//     server holds for another change (seq_reused) takes the next number
//     (RenumberPendingLocked), so no edit of a restored home is lost.
//  3. A pulled batch and its cursor are committed in one transaction
//     (ApplyPulled): the cursor never runs ahead of applied data.
//  4. While a field has a pending outbox entry, its `fields` row holds the
//     newest local edit; pulled values for it go to `shadow` (the newest
//     server value known). Without a pending entry there is no shadow row.
//  5. Every pending entry's field has a `fields` row.
//  6. The HLC persisted in meta is >= every stamp written by this device and
//     every stamp pulled (so the clock survives restarts).
//  7. After a failed COMMIT/ROLLBACK or an I/O error, `sticky_` is set and
//     every call fails until the store is reopened.
//  8. A reset pull mirrors the restored server without destroying anything:
//     it sets every shadow row aside (the old server's values), and every
//     field row is unconfirmed until the server sends its value again. When
//     the pull ends (no more batches), the unconfirmed rows the server no
//     longer has leave `fields` for `set_aside`, except those of fields with
//     a pending edit (a reset re-queues every edit this device sent); such a
//     field stays unconfirmed until the server answers its newest edit: then
//     a row that is not this edit's value is set aside for the server's (the
//     shadow row, or the next pull). Set-aside values the server sent again
//     are dropped from `set_aside`; the rest stay, counted in `status`: this
//     device may hold the last copy of another device's lost change.
#include "teduh/core/local_store.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <map>
#include <utility>

#include "teduh/core/frame_codec.h"
#include "teduh/core/i18n.h"
#include "teduh/core/row_sum.h"

namespace teduh::core {
// Prepared statements are kept per store and reused: preparing costs more than
// running most of these statements. A statement already in use (a nested
// query with the same text) gets a private copy.
class StmtCache {
 public:
  explicit StmtCache(sqlite3* db) : db_(db) {}
  ~StmtCache() {
    for (auto& [sql, e] : cache_) sqlite3_finalize(e.stmt);
  }
  StmtCache(const StmtCache&) = delete;
  StmtCache& operator=(const StmtCache&) = delete;
  sqlite3* db() const { return db_; }

  // Returns the statement and whether it is cached (then Release, else finalize).
  std::pair<sqlite3_stmt*, int> Acquire(std::string_view sql, bool* cached) {
    auto it = cache_.find(sql);
    if (it != cache_.end() && !it->second.in_use) {
      it->second.in_use = true;
      *cached = true;
      return {it->second.stmt, SQLITE_OK};
    }
    sqlite3_stmt* s = nullptr;
    int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                SQLITE_PREPARE_PERSISTENT, &s, nullptr);
    *cached = false;
    if (rc == SQLITE_OK && it == cache_.end()) {
      cache_.emplace(std::string(sql), Entry{s, true});
      *cached = true;
    }
    return {s, rc};
  }
  void Release(sqlite3_stmt* s, std::string_view sql) {
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    auto it = cache_.find(sql);
    if (it != cache_.end() && it->second.stmt == s) it->second.in_use = false;
  }

 private:
  struct Entry {
    sqlite3_stmt* stmt;
    bool in_use;
  };
  sqlite3* db_;
  std::map<std::string, Entry, std::less<>> cache_;
};

namespace {

namespace pb = teduh::sync::v1;

// Version 2: every row of records, fields, shadow, outbox and set_aside
// carries `sum`, its row checksum (core/row_sum.h), checked on every read.
constexpr int kSchemaVersion = 2;
constexpr std::string_view kStoreAd = "teduh-store-v1";
constexpr std::string_view kOutboxAd = "teduh-outbox-v1";

#define TEDUH_FIELD_ROW_COLS                                                           \
  "record_id, field, sealed, key_class, key_version, value, stamp_hlc, stamp_device, " \
  "origin_hlc, seq"
#define TEDUH_FIELD_ROW_DEF                                                               \
  "(record_id BLOB NOT NULL, field INTEGER NOT NULL, sealed INTEGER NOT NULL, "           \
  "key_class INTEGER NOT NULL, key_version INTEGER NOT NULL, value BLOB NOT NULL, "       \
  "stamp_hlc INTEGER NOT NULL, stamp_device BLOB NOT NULL, origin_hlc INTEGER NOT NULL, " \
  "seq INTEGER NOT NULL, sum BLOB GENERATED ALWAYS AS (row_sum(" TEDUH_FIELD_ROW_COLS     \
  ")) STORED, PRIMARY KEY(record_id, field)) WITHOUT ROWID;"

// The tables whose rows carry a checksum, created at schema 2 (and made anew,
// with their rows copied, when a store of version 1 is opened).
constexpr const char* kSummedTablesSql =
    "CREATE TABLE IF NOT EXISTS records(record_id BLOB PRIMARY KEY, kind TEXT NOT NULL, "
    "parent_id BLOB, unit_id TEXT NOT NULL DEFAULT '', sum BLOB GENERATED ALWAYS AS "
    "(row_sum(record_id, kind, parent_id, unit_id)) STORED);"
    "CREATE TABLE IF NOT EXISTS fields" TEDUH_FIELD_ROW_DEF
    "CREATE TABLE IF NOT EXISTS shadow" TEDUH_FIELD_ROW_DEF
    "CREATE TABLE IF NOT EXISTS outbox(device_seq INTEGER PRIMARY KEY, record_id BLOB NOT NULL, "
    "field INTEGER NOT NULL, state INTEGER NOT NULL, reason TEXT NOT NULL DEFAULT '', "
    "detail TEXT NOT NULL DEFAULT '', payload BLOB NOT NULL, created_ms INTEGER NOT NULL, "
    "updated_ms INTEGER NOT NULL, sum BLOB GENERATED ALWAYS AS (row_sum(device_seq, record_id, "
    "field, state, reason, detail, payload, created_ms, updated_ms)) STORED);"
    "CREATE TABLE IF NOT EXISTS set_aside(record_id BLOB NOT NULL, field INTEGER NOT NULL, "
    "kind TEXT NOT NULL, parent_id BLOB, sealed INTEGER NOT NULL, key_class INTEGER NOT NULL, "
    "key_version INTEGER NOT NULL, value BLOB NOT NULL, stamp_hlc INTEGER NOT NULL, "
    "stamp_device BLOB NOT NULL, origin_hlc INTEGER NOT NULL, seq INTEGER NOT NULL, "
    "set_aside_ms INTEGER NOT NULL, sum BLOB GENERATED ALWAYS AS (row_sum(record_id, field, kind, "
    "parent_id, sealed, key_class, key_version, value, stamp_hlc, stamp_device, origin_hlc, seq, "
    "set_aside_ms)) STORED, PRIMARY KEY(record_id, field, stamp_hlc, stamp_device)) WITHOUT ROWID;";

constexpr const char* kSchemaSql = R"sql(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unconfirmed(
  record_id BLOB NOT NULL, field INTEGER NOT NULL, PRIMARY KEY(record_id, field)) WITHOUT ROWID;
)sql";

constexpr const char* kIndexesSql = R"sql(
CREATE INDEX IF NOT EXISTS records_by_parent ON records(parent_id);
CREATE INDEX IF NOT EXISTS records_by_kind ON records(kind);
CREATE INDEX IF NOT EXISTS outbox_by_field ON outbox(record_id, field, state);
CREATE INDEX IF NOT EXISTS outbox_by_state ON outbox(state, device_seq);
)sql";

// Version 1 -> 2: each summed table is made anew and its rows copied (a
// stored generated column cannot be added to a table); records keep their
// rowids (children are listed in the order they were made).
constexpr const char* kMigrateToSumsSql =
    "ALTER TABLE records RENAME TO records_v1; ALTER TABLE fields RENAME TO fields_v1;"
    "ALTER TABLE shadow RENAME TO shadow_v1; ALTER TABLE outbox RENAME TO outbox_v1;"
    "ALTER TABLE set_aside RENAME TO set_aside_v1;"
    "DROP INDEX IF EXISTS records_by_parent; DROP INDEX IF EXISTS records_by_kind;"
    "DROP INDEX IF EXISTS outbox_by_field; DROP INDEX IF EXISTS outbox_by_state;";
constexpr const char* kMigrateCopySql =
    "INSERT INTO records(rowid, record_id, kind, parent_id, unit_id) SELECT rowid, record_id, "
    "kind, parent_id, unit_id FROM records_v1;"
    "INSERT INTO fields(" TEDUH_FIELD_ROW_COLS ") SELECT " TEDUH_FIELD_ROW_COLS
    " FROM fields_v1;"
    "INSERT INTO shadow(" TEDUH_FIELD_ROW_COLS ") SELECT " TEDUH_FIELD_ROW_COLS
    " FROM shadow_v1;"
    "INSERT INTO outbox(device_seq, record_id, field, state, reason, detail, payload, created_ms, "
    "updated_ms) SELECT device_seq, record_id, field, state, reason, detail, payload, created_ms, "
    "updated_ms FROM outbox_v1;"
    "INSERT INTO set_aside(record_id, field, kind, parent_id, sealed, key_class, key_version, "
    "value, stamp_hlc, stamp_device, origin_hlc, seq, set_aside_ms) SELECT record_id, field, kind, "
    "parent_id, sealed, key_class, key_version, value, stamp_hlc, stamp_device, origin_hlc, seq, "
    "set_aside_ms FROM set_aside_v1;"
    "DROP TABLE records_v1; DROP TABLE fields_v1; DROP TABLE shadow_v1; DROP TABLE outbox_v1;"
    "DROP TABLE set_aside_v1;";

// A prepared statement, finalized on scope exit.
class Stmt {
 public:
  // An uncached statement (store set-up).
  Stmt(sqlite3* db, std::string_view sql) {
    rc_ = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &s_, nullptr);
  }
  Stmt(StmtCache& cache, std::string_view sql) : cache_(&cache), sql_(sql) {
    auto [s, rc] = cache.Acquire(sql_, &cached_);
    s_ = s;
    rc_ = rc;
  }
  ~Stmt() {
    if (s_ == nullptr) return;
    if (cached_) {
      cache_->Release(s_, sql_);
    } else {
      sqlite3_finalize(s_);
    }
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  int prepare_rc() const { return rc_; }
  Stmt& Bind(int i, std::int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  Stmt& BindU(int i, std::uint64_t v) { return Bind(i, static_cast<std::int64_t>(v)); }
  Stmt& BindText(int i, std::string_view v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& BindBlob(int i, std::string_view v) {
    sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& BindId(int i, const Id& id) { return BindBlob(i, AsBytes(id)); }
  Stmt& BindNull(int i) {
    sqlite3_bind_null(s_, i);
    return *this;
  }
  int Step() { return s_ == nullptr ? (rc_ != SQLITE_OK ? rc_ : SQLITE_MISUSE) : sqlite3_step(s_); }
  std::int64_t Int(int c) const { return sqlite3_column_int64(s_, c); }
  std::uint64_t UInt(int c) const { return static_cast<std::uint64_t>(Int(c)); }
  std::string Blob(int c) const {
    const void* p = sqlite3_column_blob(s_, c);
    int n = sqlite3_column_bytes(s_, c);
    return p == nullptr ? std::string() : std::string(static_cast<const char*>(p), n);
  }
  std::string Text(int c) const {
    const unsigned char* p = sqlite3_column_text(s_, c);
    int n = sqlite3_column_bytes(s_, c);
    return p == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(p), n);
  }
  bool IsNull(int c) const { return sqlite3_column_type(s_, c) == SQLITE_NULL; }
  // Whether column `sum_col` holds the row checksum of columns `cols`.
  bool SumMatches(std::initializer_list<int> cols, int sum_col) const {
    return RowSumMatches(s_, cols, sum_col);
  }

 private:
  StmtCache* cache_ = nullptr;
  std::string sql_;
  bool cached_ = false;
  sqlite3_stmt* s_ = nullptr;
  int rc_ = SQLITE_OK;
};

std::optional<Id> ToId(std::string_view bytes) {
  auto id = IdFromBytes(bytes);
  if (!id) return std::nullopt;
  return *id;
}

std::string U32Be(std::uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>(v >> (24 - 8 * i));
  return s;
}
std::string U64Be(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (56 - 8 * i));
  return s;
}

// Where a damaged record or field row is.
DamagedRow DamageAt(std::string_view table, const Id& id, std::uint32_t field = 0) {
  DamagedRow row;
  row.table = std::string(table);
  row.record_id = id;
  row.field = field;
  return row;
}

std::string FieldAd(const Id& id, std::uint32_t field) {
  std::string ad(kStoreAd);
  ad += AsBytes(id);
  ad += U32Be(field);
  return ad;
}
std::string OutboxAd(std::uint64_t device_seq) {
  std::string ad(kOutboxAd);
  ad += U64Be(device_seq);
  return ad;
}

Stamp StampFromPb(const pb::Stamp& s) {
  Stamp out;
  out.hlc = s.hlc();
  if (auto id = ToId(s.device_id())) out.device = *id;
  return out;
}
void StampToPb(const Stamp& s, pb::Stamp* out) {
  out->set_hlc(s.hlc);
  out->set_device_id(std::string(AsBytes(s.device)));
}

bool IsStickyRc(int rc) {
  int primary = rc & 0xFF;
  return primary == SQLITE_IOERR || primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB ||
         primary == SQLITE_CANTOPEN || primary == SQLITE_PROTOCOL;
}

}  // namespace

std::string_view OutboxStateName(OutboxState state) {
  switch (state) {
    case OutboxState::kPending:
      return "pending";
    case OutboxState::kAccepted:
      return "accepted";
    case OutboxState::kMerged:
      return "merged";
    case OutboxState::kConflict:
      return "conflict";
    case OutboxState::kRejected:
      return "rejected";
  }
  return "unknown";
}

LocalStore::LocalStore(sqlite3* db, crypto::SecureBuffer key, Id device_id, Env& env,
                       StoreOptions options)
    : db_(db),
      key_(std::move(key)),
      device_id_(device_id),
      env_(env),
      options_(std::move(options)),
      stmts_(std::make_unique<StmtCache>(db)) {}

LocalStore::~LocalStore() {
  stmts_.reset();  // finalized before the connection closes
  sqlite3_close_v2(db_);
}

Failure LocalStore::SqlFail(int rc, std::string_view what) {
  int primary = rc & 0xFF;
  if (primary == SQLITE_FULL) {
    return Fail(errc::disk_full,
                TrF("no space left on the device while {}; nothing was saved", what));
  }
  if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) {
    return Fail(errc::store_busy,
                TrF("the local store is busy (another teduh is running?) while {}", what));
  }
  if (IsStickyRc(rc)) sticky_ = make_error_code(errc::store_failed);
  return Fail(errc::store_failed,
              TrF("the local store failed while {}: {}", what, sqlite3_errstr(rc)));
}

Outcome<void> LocalStore::Exec(std::string_view sql) {
  std::string s(sql);
  int rc = sqlite3_exec(db_, s.c_str(), nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return SqlFail(rc, Tr("running a statement"));
  return {};
}

error_code LocalStore::Fault(std::string_view point) {
  if (options_.fault) return options_.fault(point);
  return {};
}

Outcome<std::unique_ptr<LocalStore>> LocalStore::Open(const std::filesystem::path& path,
                                                      const crypto::SecureBuffer& storage_key,
                                                      const Id& device_id, Env& env,
                                                      StoreOptions options) {
  if (storage_key.size() != crypto::kAeadKeyBytes) {
    return Fail(errc::invalid_argument, Tr("the storage key must be 32 bytes"));
  }
  // Create the file 0600 first: SQLite gives -wal and -shm the same mode.
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Fail(errc::io_error, Tr("cannot create the local store file"));
  ::close(fd);
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  sqlite3_busy_timeout(db, options.busy_timeout_ms);
  if (rc == SQLITE_OK) rc = RegisterRowSum(db);
  if (rc == SQLITE_OK) rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr);
  const int primary = rc & 0xFF;
  if (primary == SQLITE_IOERR || primary == SQLITE_FULL || primary == SQLITE_CANTOPEN) {
    // On a full disk SQLite cannot make the WAL's shared-memory index (the
    // -shm file). In exclusive locking mode it keeps that index in this
    // process's memory instead, so the device still opens, lists and shows
    // its cases (one command at a time holds a device anyway: the session
    // lock). Edits then fail with "the disk is full", and nothing is lost.
    sqlite3_close_v2(db);
    db = nullptr;
    rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
    sqlite3_busy_timeout(db, options.busy_timeout_ms);
    if (rc == SQLITE_OK) rc = RegisterRowSum(db);
    if (rc == SQLITE_OK)
      rc = sqlite3_exec(db, "PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL", nullptr,
                        nullptr, nullptr);
  }
  if (rc != SQLITE_OK) {
    sqlite3_close_v2(db);
    return Fail(errc::store_failed, Tr("cannot open the local store"));
  }
  auto key = storage_key.Clone();
  if (!key) {
    sqlite3_close_v2(db);
    return Fail(key.error(), Tr("cannot allocate guarded memory"));
  }
  std::unique_ptr<LocalStore> s(
      new LocalStore(db, std::move(*key), device_id, env, std::move(options)));
  sqlite3_busy_timeout(db, s->options_.busy_timeout_ms);
  sqlite3_extended_result_codes(db, 1);
  for (const char* pragma : {"PRAGMA synchronous=FULL", "PRAGMA secure_delete=ON",
                             "PRAGMA foreign_keys=ON", "PRAGMA temp_store=MEMORY",
                             // A first pull writes a whole unit's records at random places in the
                             // tables: up to 32 MiB of pages stay cached, and the WAL (encrypted
                             // values only, like the tables) is folded back every 8,192 pages.
                             "PRAGMA cache_size=-32768", "PRAGMA wal_autocheckpoint=8192"}) {
    if (auto r = s->Exec(pragma); !r) return r.error();
  }
  if (s->options_.max_page_count > 0) {
    if (auto r = s->Exec(fmt::format("PRAGMA max_page_count={}", s->options_.max_page_count)); !r) {
      return r.error();
    }
  }
  auto created = s->InTxn([&]() -> Outcome<void> {
    if (auto r = s->Exec(kSchemaSql); !r) return r.error();
    int step;
    std::string owner;
    {
      Stmt q(db, "SELECT value FROM meta WHERE key='device_id'");
      step = q.Step();
      if (step == SQLITE_ROW) owner = q.Blob(0);
    }  // finished before a migration renames tables
    if (step == SQLITE_ROW) {
      if (owner != AsBytes(device_id)) {
        return Fail(errc::store_failed, Tr("the local store belongs to another device"));
      }
      return s->Migrate();
    }
    if (step != SQLITE_DONE) return s->SqlFail(step, Tr("reading the store header"));
    if (auto r = s->Exec(kSummedTablesSql); !r) return r.error();
    if (auto r = s->Exec(kIndexesSql); !r) return r.error();
    Stmt ins(db, "INSERT INTO meta(key, value) VALUES('device_id', ?1), ('schema', ?2)");
    ins.BindId(1, device_id).Bind(2, kSchemaVersion);
    if (int r = ins.Step(); r != SQLITE_DONE) return s->SqlFail(r, Tr("creating the store"));
    return {};
  });
  if (!created) return created.error();
  // SQLite's own check of the file's structure (pages, b-trees, records).
  // Damage there is mostly in an index, which a read would trip over (and
  // then fail every later call): repaired at once, before anything reads.
  // What a repair cannot mend is kept for Check and the next sync; the
  // checksums still keep every damaged row from being shown.
  auto structure = s->StructureCheck("PRAGMA quick_check");
  if (!structure) return structure.error();
  if (!structure->empty()) {
    s->structure_damage_ = std::move(*structure);
    s->damage_met_ = true;
    (void)s->Repair();  // on a full or read-only disk it waits for the next sync
  }
  return s;
}

Outcome<void> LocalStore::Migrate() {
  auto version = MetaInt("schema");
  if (!version) return version.error();
  if (*version > static_cast<std::uint64_t>(kSchemaVersion)) {
    return Fail(errc::store_failed,
                Tr("the local store was made by a newer teduh; update teduh on this device"));
  }
  if (*version == static_cast<std::uint64_t>(kSchemaVersion)) return {};
  for (const char* sql : {kMigrateToSumsSql, kSummedTablesSql, kMigrateCopySql, kIndexesSql}) {
    if (auto r = Exec(sql); !r) return r.error();
  }
  return SetMetaInt("schema", kSchemaVersion);
}

Outcome<std::vector<std::string>> LocalStore::StructureCheck(const char* pragma) {
  std::vector<std::string> findings;
  Stmt q(db_, pragma);
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    std::string line = q.Text(0);
    if (line != "ok" && findings.size() < 100) findings.push_back(std::move(line));
  }
  if (rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB || (rc & 0xFF) == SQLITE_CORRUPT) {
    findings.push_back(sqlite3_errstr(rc));
    return findings;
  }
  if (rc != SQLITE_DONE) return SqlFail(rc, Tr("checking the local store"));
  return findings;
}

Outcome<void> LocalStore::InTxn(const std::function<Outcome<void>()>& fn) {
  if (sticky_) {
    return Fail(sticky_, Tr("the local store failed earlier; close teduh and open it again"));
  }
  if (in_txn_) return fn();  // nested: part of the outer transaction
  if (auto r = Exec("BEGIN IMMEDIATE"); !r) return r.error();
  in_txn_ = true;
  auto rollback = [&] {
    in_txn_ = false;
    if (sqlite3_get_autocommit(db_)) return;  // SQLite already rolled back (e.g. SQLITE_FULL)
    if (sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr) != SQLITE_OK) {
      sticky_ = make_error_code(errc::store_failed);  // invariant 7
    }
  };
  auto r = fn();
  if (!r) {
    rollback();
    return r;
  }
  if (auto ec = Fault("commit")) {
    rollback();
    return Fail(ec, "injected failure at commit");
  }
  int rc = sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) {
    Failure f = SqlFail(rc, Tr("saving"));
    rollback();
    int primary = rc & 0xFF;
    if (primary != SQLITE_FULL && primary != SQLITE_BUSY) {
      sticky_ = make_error_code(errc::store_failed);
    }
    return f;
  }
  in_txn_ = false;
  return {};
}

Outcome<std::uint64_t> LocalStore::MetaInt(std::string_view key) {
  Stmt q(*stmts_, "SELECT value FROM meta WHERE key=?1");
  q.BindText(1, key);
  int rc = q.Step();
  if (rc == SQLITE_ROW) return q.UInt(0);
  if (rc == SQLITE_DONE) return std::uint64_t{0};
  return SqlFail(rc, Tr("reading the store header"));
}

Outcome<void> LocalStore::SetMetaInt(std::string_view key, std::uint64_t value) {
  Stmt q(*stmts_,
         "INSERT INTO meta(key, value) VALUES(?1, ?2) "
         "ON CONFLICT(key) DO UPDATE SET value=excluded.value");
  q.BindText(1, key).BindU(2, value);
  if (int rc = q.Step(); rc != SQLITE_DONE) return SqlFail(rc, Tr("writing the store header"));
  return {};
}

Outcome<std::optional<std::string>> LocalStore::GetMeta(std::string_view key) {
  if (sticky_) return Fail(sticky_, Tr("the local store failed earlier; reopen it"));
  Stmt q(*stmts_, "SELECT CAST(value AS BLOB) FROM meta WHERE key=?1");
  q.BindText(1, key);
  int rc = q.Step();
  if (rc == SQLITE_ROW) return std::optional<std::string>(q.Blob(0));
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  return SqlFail(rc, Tr("reading settings"));
}

Outcome<void> LocalStore::SetMeta(std::string_view key, std::string_view value) {
  return InTxn([&]() -> Outcome<void> {
    Stmt q(*stmts_,
           "INSERT INTO meta(key, value) VALUES(?1, ?2) "
           "ON CONFLICT(key) DO UPDATE SET value=excluded.value");
    q.BindText(1, key).BindBlob(2, value);
    if (int rc = q.Step(); rc != SQLITE_DONE) return SqlFail(rc, Tr("writing settings"));
    return {};
  });
}

Outcome<std::uint64_t> LocalStore::PersistedHlc() { return MetaInt("hlc"); }

Outcome<std::string> LocalStore::SealAtRest(std::string_view ad, std::string_view plain) {
  auto sealed = crypto::AeadSeal(key_, AsSpan(plain), AsSpan(ad));
  if (!sealed) return Fail(sealed.error(), Tr("cannot encrypt a value for the local store"));
  return std::string(reinterpret_cast<const char*>(sealed->data()), sealed->size());
}

Outcome<std::string> LocalStore::OpenAtRest(std::string_view ad, std::string_view stored) {
  if (stored.size() < crypto::kAeadOverhead) {
    return Fail(errc::integrity, Tr("a stored value is damaged"));
  }
  std::string out(stored.size() - crypto::kAeadOverhead, '\0');
  auto ec = crypto::AeadOpenInto(key_, AsSpan(stored), AsSpan(ad),
                                 {reinterpret_cast<std::uint8_t*>(out.data()), out.size()});
  if (ec) return Fail(errc::integrity, Tr("a stored value does not verify (altered?)"));
  return out;
}

// ---- Edits -------------------------------------------------------------------

Stamp LocalStore::EditTxn::NextStamp() { return Stamp{hlc_.Now(), store_.device_id_}; }

Outcome<void> LocalStore::EditTxn::Put(const LocalChange& change) {
  return store_.PutLocked(*this, change);
}

Outcome<void> LocalStore::Edit(Hlc& hlc, const std::function<Outcome<void>(EditTxn&)>& fn) {
  EditTxn txn(*this, hlc);
  return InTxn([&]() -> Outcome<void> {
    auto persisted = MetaInt("hlc");
    if (!persisted) return persisted.error();
    hlc.Observe(*persisted);  // another process may have written since we opened
    auto seq = MetaInt("device_seq");
    if (!seq) return seq.error();
    txn.device_seq_ = *seq;
    if (auto r = fn(txn); !r) return r;
    if (auto r = SetMetaInt("device_seq", txn.device_seq_); !r) return r;
    return SetMetaInt("hlc", hlc.last());  // invariant 6
  });
}

Outcome<void> LocalStore::UpsertRecord(const Id& id, std::string_view kind,
                                       const std::optional<Id>& parent, std::string_view unit_id,
                                       bool* kind_conflict) {
  *kind_conflict = false;
  Stmt q(*stmts_,
         "SELECT kind, unit_id, record_id, parent_id, sum FROM records WHERE record_id=?1");
  q.BindId(1, id);
  int rc = q.Step();
  // A damaged row: what is written now (a pull brings the server's copy)
  // replaces it, in place, so its children keep their order.
  const bool damaged = rc == SQLITE_ROW && !q.SumMatches({2, 0, 3, 1}, 4);
  if (rc == SQLITE_ROW && !damaged) {
    if (q.Text(0) != kind) {
      *kind_conflict = true;
      return {};
    }
    if (!unit_id.empty() && q.Text(1).empty()) {
      Stmt u(*stmts_, "UPDATE records SET unit_id=?2 WHERE record_id=?1");
      u.BindId(1, id).BindText(2, unit_id);
      if (int r = u.Step(); r != SQLITE_DONE) return SqlFail(r, Tr("updating a record"));
    }
    return {};
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return SqlFail(rc, Tr("reading a record"));
  if (damaged) MetDamage(DamageAt("records", id));
  Stmt w(*stmts_,
         damaged ? "UPDATE records SET kind=?2, parent_id=?3, unit_id=?4 WHERE record_id=?1"
                 : "INSERT INTO records(record_id, kind, parent_id, unit_id) VALUES(?1,?2,?3,?4)");
  w.BindId(1, id).BindText(2, kind).BindText(4, unit_id);
  if (parent) {
    w.BindId(3, *parent);
  } else {
    w.BindNull(3);
  }
  if (int r = w.Step(); r != SQLITE_DONE)
    return SqlFail(r, damaged ? Tr("repairing a record") : Tr("writing a record"));
  return {};
}

Outcome<void> LocalStore::WriteFieldRow(std::string_view table, const Id& id, std::uint32_t field,
                                        bool sealed, int key_class, std::uint32_t key_version,
                                        std::string_view at_rest, const Stamp& stamp,
                                        std::uint64_t origin_hlc, std::uint64_t seq) {
  Stmt q(*stmts_, fmt::format("INSERT OR REPLACE INTO {}(record_id, field, sealed, key_class, "
                              "key_version, value, stamp_hlc, stamp_device, origin_hlc, seq) "
                              "VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
                              table));
  q.BindId(1, id)
      .Bind(2, field)
      .Bind(3, sealed ? 1 : 0)
      .Bind(4, key_class)
      .Bind(5, key_version)
      .BindBlob(6, at_rest)
      .BindU(7, stamp.hlc)
      .BindId(8, stamp.device)
      .BindU(9, origin_hlc)
      .BindU(10, seq);
  if (int rc = q.Step(); rc != SQLITE_DONE) return SqlFail(rc, Tr("writing a field"));
  return {};
}

Outcome<void> LocalStore::CopyFieldRow(std::string_view from, std::string_view to, const Id& id,
                                       std::uint32_t field) {
  Stmt q(*stmts_, fmt::format("INSERT OR REPLACE INTO {}(record_id, field, sealed, key_class, "
                              "key_version, value, stamp_hlc, stamp_device, origin_hlc, seq) "
                              "SELECT record_id, field, sealed, key_class, key_version, value, "
                              "stamp_hlc, stamp_device, origin_hlc, seq FROM {} "
                              "WHERE record_id=?1 AND field=?2",
                              to, from));
  q.BindId(1, id).Bind(2, field);
  if (int rc = q.Step(); rc != SQLITE_DONE) return SqlFail(rc, Tr("copying a field"));
  return {};
}

Outcome<std::size_t> LocalStore::SetAside(std::string_view table, const char* where,
                                          std::int64_t now_ms) {
  Stmt q(*stmts_, fmt::format("INSERT OR IGNORE INTO set_aside(record_id, field, kind, parent_id, "
                              "sealed, key_class, key_version, value, stamp_hlc, stamp_device, "
                              "origin_hlc, seq, set_aside_ms) SELECT f.record_id, f.field, "
                              "r.kind, r.parent_id, f.sealed, f.key_class, f.key_version, "
                              "f.value, f.stamp_hlc, f.stamp_device, f.origin_hlc, f.seq, ?1 "
                              "FROM {} f JOIN records r USING(record_id) WHERE {}",
                              table, where));
  q.Bind(1, now_ms);
  if (int rc = q.Step(); rc != SQLITE_DONE) return SqlFail(rc, Tr("writing the local store"));
  return static_cast<std::size_t>(sqlite3_changes(db_));
}

Outcome<std::size_t> LocalStore::CountSetAside() {
  if (sticky_) return Fail(sticky_, Tr("the local store failed earlier; reopen it"));
  Stmt q(*stmts_, "SELECT COUNT(*) FROM set_aside");
  if (int rc = q.Step(); rc != SQLITE_ROW) return SqlFail(rc, Tr("reading the local store"));
  return static_cast<std::size_t>(q.UInt(0));
}

Outcome<bool> LocalStore::SettleUnconfirmed(const Id& id, std::uint32_t field,
                                            std::uint64_t device_seq, const Stamp& mine) {
  {
    Stmt q(*stmts_, "SELECT 1 FROM unconfirmed WHERE record_id=?1 AND field=?2");
    q.BindId(1, id).Bind(2, field);
    int rc = q.Step();
    if (rc == SQLITE_DONE) return false;
    if (rc != SQLITE_ROW) return SqlFail(rc, Tr("reading the local store"));
  }
  auto later = HasPending(id, field, device_seq);
  if (!later) return later.error();
  if (*later) return false;  // the newest edit of the field settles it
  {
    Stmt d(*stmts_, "DELETE FROM unconfirmed WHERE record_id=?1 AND field=?2");
    d.BindId(1, id).Bind(2, field);
    if (int rc = d.Step(); rc != SQLITE_DONE) return SqlFail(rc, Tr("writing the local store"));
  }
  auto current = RowStamp("fields", id, field);
  if (!current) return current.error();
  if (*current && **current == mine) return false;  // this edit's value: the usual answer
  // A value the restored server never sent again: set aside, and the
  // server's value replaces it (held back in shadow, or brought by the next pull).
  {
    const std::string which = fmt::format("f.record_id=x'{}' AND f.field={}", ToHex(id), field);
    if (auto w = SetAside("fields", which.c_str(), env_.NowMs()); !w) return w.error();
  }
  auto shadow = RowStamp("shadow", id, field);
  if (!shadow) return shadow.error();
  if (*shadow) {
    if (auto w = CopyFieldRow("shadow", "fields", id, field); !w) return w.error();
    if (auto w = DeleteFieldRow("shadow", id, field); !w) return w.error();
  } else if (auto w = DeleteFieldRow("fields", id, field); !w) {
    return w.error();
  }
  return true;
}

Outcome<void> LocalStore::DeleteFieldRow(std::string_view table, const Id& id,
                                         std::uint32_t field) {
  Stmt q(*stmts_, fmt::format("DELETE FROM {} WHERE record_id=?1 AND field=?2", table));
  q.BindId(1, id).Bind(2, field);
  if (int rc = q.Step(); rc != SQLITE_DONE) return SqlFail(rc, Tr("deleting a field"));
  return {};
}

Outcome<std::optional<Stamp>> LocalStore::RowStamp(std::string_view table, const Id& id,
                                                   std::uint32_t field) {
  Stmt q(
      *stmts_,
      fmt::format("SELECT stamp_hlc, stamp_device FROM {} WHERE record_id=?1 AND field=?2", table));
  q.BindId(1, id).Bind(2, field);
  int rc = q.Step();
  if (rc == SQLITE_DONE) return std::optional<Stamp>();
  if (rc != SQLITE_ROW) return SqlFail(rc, Tr("reading a field"));
  Stamp s;
  s.hlc = q.UInt(0);
  if (auto d = ToId(q.Blob(1))) s.device = *d;
  return std::optional<Stamp>(s);
}

Outcome<bool> LocalStore::AnyPending() {
  Stmt q(*stmts_, "SELECT EXISTS(SELECT 1 FROM outbox WHERE state=0)");
  int rc = q.Step();
  if (rc != SQLITE_ROW) return SqlFail(rc, Tr("reading the outbox"));
  return q.Int(0) != 0;
}

Outcome<bool> LocalStore::AnyShadow() {
  Stmt q(*stmts_, "SELECT EXISTS(SELECT 1 FROM shadow)");
  int rc = q.Step();
  if (rc != SQLITE_ROW) return SqlFail(rc, Tr("reading the store"));
  return q.Int(0) != 0;
}

Outcome<bool> LocalStore::HasPending(const Id& id, std::uint32_t field, std::uint64_t after_seq) {
  Stmt q(*stmts_,
         "SELECT 1 FROM outbox WHERE record_id=?1 AND field=?2 AND state=0 AND "
         "device_seq>?3 LIMIT 1");
  q.BindId(1, id).Bind(2, field).BindU(3, after_seq);
  int rc = q.Step();
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqlFail(rc, Tr("reading the outbox"));
}

Outcome<bool> LocalStore::CaseHasPending(const Id& case_id) {
  if (sticky_) return Fail(sticky_, Tr("the local store failed earlier; reopen it"));
  Stmt q(*stmts_,
         "SELECT 1 FROM outbox o JOIN records r ON r.record_id = o.record_id WHERE "
         "(r.record_id=?1 OR r.parent_id=?1) AND o.state=0 LIMIT 1");
  q.BindId(1, case_id);
  int rc = q.Step();
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqlFail(rc, Tr("reading the outbox"));
}

Outcome<bool> LocalStore::CaseHasSealedBelow(const Id& case_id, int key_class,
                                             std::uint32_t below) {
  if (sticky_) return Fail(sticky_, Tr("the local store failed earlier; reopen it"));
  for (const char* table : {"fields", "shadow"}) {
    Stmt q(*stmts_, fmt::format("SELECT 1 FROM {} f JOIN records r ON r.record_id = f.record_id "
                                "WHERE (r.record_id=?1 OR r.parent_id=?1) AND f.sealed=1 AND "
                                "f.key_class=?2 AND f.key_version<?3 LIMIT 1",
                                table));
    q.BindId(1, case_id).Bind(2, key_class).Bind(3, below);
    int rc = q.Step();
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE) return SqlFail(rc, Tr("reading the case's values"));
  }
  return false;
}

Outcome<void> LocalStore::ResealPending(const std::vector<pb::FieldChange>& changes) {
  return InTxn([&]() -> Outcome<void> {
    for (const auto& ch : changes) {
      if (!ch.sealed()) continue;
      if (auto w = StoreOutboxPayload(ch); !w) return w;
      auto id = ToId(ch.record_id());
      if (!id) continue;
      Stamp stamp = StampFromPb(ch.stamp());
      Stmt u(*stmts_,
             "UPDATE fields SET value=?3, key_version=?4 WHERE record_id=?1 AND field=?2 AND "
             "stamp_hlc=?5 AND stamp_device=?6 AND sealed=1");
      u.BindId(1, *id)
          .Bind(2, ch.field())
          .BindBlob(3, ch.value())
          .Bind(4, ch.key_version())
          .BindU(5, stamp.hlc)
          .BindId(6, stamp.device);
      if (int rc = u.Step(); rc != SQLITE_DONE) return SqlFail(rc, Tr("re-sealing an edit"));
    }
    return {};
  });
}

Outcome<void> LocalStore::DeleteRecords(const std::vector<Id>& record_ids) {
  return InTxn([&]() -> Outcome<void> {
    for (const Id& id : record_ids) {
      // Outbox entries stay: they are the device's record of what it sent.
      for (const char* sql :
           {"DELETE FROM fields WHERE record_id=?1", "DELETE FROM shadow WHERE record_id=?1",
            "DELETE FROM records WHERE record_id=?1"}) {
        Stmt q(*stmts_, sql);
        q.BindId(1, id);
        if (int rc = q.Step(); rc != SQLITE_DONE) return SqlFail(rc, Tr("deleting a record"));
      }
    }
    return {};
  });
}

Outcome<bool> LocalStore::KeepPendingLocked(const pb::FieldChange& sent,
                                            const pb::ChangeResult& res, PushApplied* counts) {
  if (res.status() != pb::ChangeResult::STATUS_REJECTED) return false;
  if (res.reason() == kKeyReplacedReason) {
    ++counts->key_replaced;  // re-sealed after the next pull
    return true;
  }
  if (res.reason() == kQuotaReason || res.reason() == kDamagedReason) {
    ++counts->held_back;  // sent again at a later sync
    return true;
  }
  if (res.reason() == kSeqReusedReason || res.reason() == kSeqOrderReason) {
    // The server holds another change under this number: this home was
    // restored from an earlier copy. The edit takes the next number (above
    // the server's mark since the Welcome).
    if (auto r = RenumberPendingLocked(sent); !r) return r.error();
    ++counts->renumbered;
    return true;
  }
  return false;
}

Outcome<void> LocalStore::RenumberPendingLocked(const pb::FieldChange& sent) {
  auto loaded = LoadOutbox(sent.device_seq(), nullptr);
  if (!loaded) return loaded.error();
  if (!*loaded) return {};  // no longer in the outbox
  auto counter = MetaInt("device_seq");
  if (!counter) return counter.error();
  pb::FieldChange change = std::move(**loaded);
  const std::uint64_t next = *counter + 1;
  change.set_device_seq(next);
  std::string plain = change.SerializeAsString();
  if (!change.sealed()) crypto::Wipe(*change.mutable_value());
  auto sealed = SealAtRest(OutboxAd(next), plain);
  crypto::Wipe(plain);
  if (!sealed) return sealed.error();
  // Invariant 2: the number is new and the counter follows it.
  Stmt q(*stmts_,
         "UPDATE outbox SET device_seq=?2, payload=?3, updated_ms=?4 WHERE device_seq=?1 AND "
         "state=0");
  q.BindU(1, sent.device_seq()).BindU(2, next).BindBlob(3, *sealed).Bind(4, env_.NowMs());
  if (int rc = q.Step(); rc != SQLITE_DONE) return SqlFail(rc, Tr("writing the outbox"));
  if (sqlite3_changes(db_) == 0) return {};
  return SetMetaInt("device_seq", next);
}

Outcome<std::uint64_t> LocalStore::HighestAnsweredSeq() {
  // Rejected changes leave no trace the server could have lost: not counted.
  Stmt q(*stmts_, "SELECT MAX(device_seq) FROM outbox WHERE state IN (1, 2, 3)");
  int rc = q.Step();
  if (rc != SQLITE_ROW) return SqlFail(rc, Tr("reading the outbox"));
  return q.UInt(0);
}

Outcome<void> LocalStore::RaiseDeviceSeq(std::uint64_t server_mark) {
  return InTxn([&]() -> Outcome<void> {
    auto counter = MetaInt("device_seq");
    if (!counter) return counter.error();
    if (*counter >= server_mark) return {};
    return SetMetaInt("device_seq", server_mark);
  });
}

Outcome<void> LocalStore::StoreOutboxPayload(const pb::FieldChange& change) {
  std::string plain = change.SerializeAsString();
  auto sealed = SealAtRest(OutboxAd(change.device_seq()), plain);
  crypto::Wipe(plain);
  if (!sealed) return sealed.error();
  Stmt q(*stmts_, "UPDATE outbox SET payload=?2 WHERE device_seq=?1");
  q.BindU(1, change.device_seq()).BindBlob(2, *sealed);
  if (int rc = q.Step(); rc != SQLITE_DONE) return SqlFail(rc, Tr("writing the outbox"));
  return {};
}

Outcome<void> LocalStore::PutLocked(EditTxn& txn, const LocalChange& c) {
  if (auto ec = Fault("edit.put")) return Fail(ec, "injected failure while saving an edit");
  bool kind_conflict = false;
  if (auto r = UpsertRecord(c.record_id, c.kind, c.parent_id, "", &kind_conflict); !r) return r;
  if (kind_conflict) {
    return Fail(errc::invalid_argument, Tr("the record exists with another kind"));
  }
  auto pending = HasPending(c.record_id, c.field, 0);
  if (!pending) return pending.error();
  auto base = RowStamp("fields", c.record_id, c.field);
  if (!base) return base.error();
  // Invariant 4: the server's last known value moves aside while edits are pending.
  if (!*pending) {
    if (*base) {
      if (auto r = CopyFieldRow("fields", "shadow", c.record_id, c.field); !r) return r;
    } else if (auto r = DeleteFieldRow("shadow", c.record_id, c.field); !r) {
      return r;
    }
  }

  pb::FieldChange ch;
  ch.set_record_id(std::string(AsBytes(c.record_id)));
  ch.set_kind(c.kind);
  if (c.parent_id) ch.set_parent_id(std::string(AsBytes(*c.parent_id)));
  ch.set_field(c.field);
  ch.set_value(c.value);
  ch.set_sealed(c.sealed);
  if (c.sealed) {
    ch.set_key_class(c.key_class);
    ch.set_key_version(c.key_version);
  }
  StampToPb(c.stamp, ch.mutable_stamp());
  if (*base) StampToPb(**base, ch.mutable_base());
  if (c.resolves) ch.set_resolves(std::string(AsBytes(*c.resolves)));
  ch.set_device_seq(txn.device_seq_ + 1);
  std::string message;
  if (auto ec = ValidateChange(ch, FrameLimits{}, &message)) {
    return Fail(errc::bad_value, message.empty() ? Tr("the value is too large") : message);
  }
  txn.device_seq_ += 1;  // invariant 2

  std::string at_rest;
  if (c.sealed) {
    at_rest = c.value;
  } else {
    auto s = SealAtRest(FieldAd(c.record_id, c.field), c.value);
    if (!s) return s.error();
    at_rest = std::move(*s);
  }
  if (auto r = WriteFieldRow("fields", c.record_id, c.field, c.sealed, c.key_class, c.key_version,
                             at_rest, c.stamp, 0, 0);
      !r) {
    return r;
  }
  std::int64_t now = env_.NowMs();
  Stmt ins(*stmts_,
           "INSERT INTO outbox(device_seq, record_id, field, state, payload, created_ms, "
           "updated_ms) VALUES(?1,?2,?3,0,x'',?4,?4)");
  ins.BindU(1, ch.device_seq()).BindId(2, c.record_id).Bind(3, c.field).Bind(4, now);
  if (int rc = ins.Step(); rc != SQLITE_DONE) return SqlFail(rc, Tr("writing the outbox"));
  auto stored = StoreOutboxPayload(ch);
  crypto::Wipe(*ch.mutable_value());
  return stored;
}

// ---- Reads -------------------------------------------------------------------

Outcome<std::optional<RecordInfo>> LocalStore::GetRecord(const Id& record_id) {
  if (sticky_) return Fail(sticky_, Tr("the local store failed earlier; reopen it"));
  Stmt q(*stmts_,
         "SELECT kind, parent_id, unit_id, record_id, sum FROM records WHERE record_id=?1");
  q.BindId(1, record_id);
  int rc = q.Step();
  if (rc == SQLITE_DONE) return std::optional<RecordInfo>();
  if (rc != SQLITE_ROW) return SqlFail(rc, Tr("reading a record"));
  if (!q.SumMatches({3, 0, 1, 2}, 4)) {
    MetDamage(DamageAt("records", record_id));
    return Fail(
        errc::store_damaged,
        TrF("record {} is damaged on this device; the next sync restores it from the server",
            ToHex(record_id)));
  }
  RecordInfo r;
  r.record_id = record_id;
  r.kind = q.Text(0);
  if (!q.IsNull(1)) r.parent_id = ToId(q.Blob(1));
  r.unit_id = q.Text(2);
  return std::optional<RecordInfo>(std::move(r));
}

Outcome<std::vector<RecordInfo>> LocalStore::ListRecords(std::string_view kind,
                                                         const std::optional<Id>& parent_id) {
  if (sticky_) return Fail(sticky_, Tr("the local store failed earlier; reopen it"));
  Stmt q(*stmts_, parent_id ? "SELECT record_id, kind, parent_id, unit_id, sum FROM records "
                              "WHERE parent_id=?2 AND +kind=?1 ORDER BY rowid"
                            : "SELECT record_id, kind, parent_id, unit_id, sum FROM records "
                              "WHERE kind=?1 ORDER BY record_id");
  q.BindText(1, kind);
  if (parent_id) q.BindId(2, *parent_id);
  std::vector<RecordInfo> out;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    RecordInfo r;
    if (auto id = ToId(q.Blob(0))) r.record_id = *id;
    if (!q.SumMatches({0, 1, 2, 3}, 4)) {
      MetDamage(DamageAt("records", r.record_id));
      continue;
    }
    r.kind = q.Text(1);
    if (!q.IsNull(2)) r.parent_id = ToId(q.Blob(2));
    r.unit_id = q.Text(3);
    out.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) return SqlFail(rc, Tr("listing records"));
  return out;
}

Outcome<void> LocalStore::ForEachRecordOpenFields(
    std::string_view kind,
    const std::function<Outcome<void>(const RecordInfo&, std::vector<StoredValue>&)>& visit) {
  if (sticky_) return Fail(sticky_, Tr("the local store failed earlier; reopen it"));
  Stmt q(*stmts_,
         "SELECT r.record_id, r.parent_id, r.unit_id, f.field, f.value, f.stamp_hlc, "
         "f.stamp_device, r.kind, r.sum, f.sealed, f.key_class, f.key_version, f.origin_hlc, "
         "f.seq, f.sum, f.record_id FROM records r JOIN fields f ON f.record_id = r.record_id "
         "WHERE r.kind=?1 AND f.sealed=0 ORDER BY r.record_id, f.field");
  q.BindText(1, kind);
  RecordInfo current;
  std::vector<StoredValue> values;
  bool have = false;
  bool record_damaged = false;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    auto id = ToId(q.Blob(0));
    if (!id) continue;
    if (!have || *id != current.record_id) {
      if (have && !record_damaged) {
        if (auto r = visit(current, values); !r) return r;
      }
      have = true;
      values.clear();
      current.record_id = *id;
      current.kind = std::string(kind);
      current.parent_id = q.IsNull(1) ? std::nullopt : ToId(q.Blob(1));
      current.unit_id = q.Text(2);
      record_damaged = !q.SumMatches({0, 7, 1, 2}, 8);
      if (record_damaged) MetDamage(DamageAt("records", *id));
    }
    if (record_damaged) continue;
    StoredValue v;
    v.field = static_cast<std::uint32_t>(q.Int(3));
    if (!q.SumMatches({15, 3, 9, 10, 11, 4, 5, 6, 12, 13}, 14)) {
      MetDamage(DamageAt("fields", *id, v.field));
      continue;
    }
    v.stamp.hlc = q.UInt(5);
    if (auto d = ToId(q.Blob(6))) v.stamp.device = *d;
    auto plain = OpenAtRest(FieldAd(*id, v.field), q.Blob(4));
    if (!plain) {
      MetDamage(DamageAt("fields", *id, v.field));
      continue;
    }
    v.value = std::move(*plain);
    values.push_back(std::move(v));
  }
  if (rc != SQLITE_DONE) return SqlFail(rc, Tr("reading records"));
  if (have && !record_damaged) return visit(current, values);
  return {};
}

Outcome<std::vector<Id>> LocalStore::MatchPrefix(std::string_view kind,
                                                 std::string_view hex_prefix) {
  if (sticky_) return Fail(sticky_, Tr("the local store failed earlier; reopen it"));
  std::string upper;
  for (char ch : hex_prefix) {
    if (!std::isxdigit(static_cast<unsigned char>(ch))) {
      return Fail(errc::invalid_argument, Tr("an id is made of hex digits 0-9 and a-f"));
    }
    upper += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  }
  if (upper.size() > 2 * sizeof(Id)) return std::vector<Id>{};
  // The ids that start with the prefix form one range of the primary key.
  auto lo = IdFromHex(upper + std::string(2 * sizeof(Id) - upper.size(), '0'));
  auto hi = IdFromHex(upper + std::string(2 * sizeof(Id) - upper.size(), 'F'));
  if (!lo || !hi)
    return Fail(errc::invalid_argument, Tr("an id is made of hex digits 0-9 and a-f"));
  Stmt q(*stmts_, "SELECT record_id FROM records WHERE record_id BETWEEN ?2 AND ?3 AND +kind=?1");
  q.BindText(1, kind).BindId(2, *lo).BindId(3, *hi);
  std::vector<Id> out;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    if (auto id = ToId(q.Blob(0))) out.push_back(*id);
  }
  if (rc != SQLITE_DONE) return SqlFail(rc, Tr("looking up an id"));
  return out;
}

Outcome<std::vector<StoredValue>> LocalStore::GetFields(const Id& record_id) {
  if (sticky_) return Fail(sticky_, Tr("the local store failed earlier; reopen it"));
  Stmt q(*stmts_,
         "SELECT f.field, f.sealed, f.key_class, f.key_version, f.value, f.stamp_hlc, "
         "f.stamp_device, f.origin_hlc, EXISTS(SELECT 1 FROM outbox o WHERE "
         "o.record_id=f.record_id AND o.field=f.field AND o.state=0), f.record_id, f.seq, f.sum "
         "FROM fields f WHERE f.record_id=?1 ORDER BY f.field");
  q.BindId(1, record_id);
  std::vector<StoredValue> out;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    StoredValue v;
    v.field = static_cast<std::uint32_t>(q.Int(0));
    if (!q.SumMatches({9, 0, 1, 2, 3, 4, 5, 6, 7, 10}, 11)) {
      MetDamage(DamageAt("fields", record_id, v.field));
      continue;
    }
    v.sealed = q.Int(1) != 0;
    v.key_class = static_cast<teduh::AccessClass>(q.Int(2));
    v.key_version = static_cast<std::uint32_t>(q.Int(3));
    v.stamp.hlc = q.UInt(5);
    if (auto d = ToId(q.Blob(6))) v.stamp.device = *d;
    v.origin_hlc = q.UInt(7);
    v.pending = q.Int(8) != 0;
    if (v.sealed) {
      v.value = q.Blob(4);
    } else {
      auto plain = OpenAtRest(FieldAd(record_id, v.field), q.Blob(4));
      if (!plain) {
        MetDamage(DamageAt("fields", record_id, v.field));
        continue;
      }
      v.value = std::move(*plain);
    }
    out.push_back(std::move(v));
  }
  if (rc != SQLITE_DONE) return SqlFail(rc, Tr("reading fields"));
  return out;
}

Outcome<std::optional<StoredValue>> LocalStore::GetField(const Id& record_id, std::uint32_t field) {
  auto all = GetFields(record_id);
  if (!all) return all.error();
  for (auto& v : *all) {
    if (v.field == field) return std::optional<StoredValue>(std::move(v));
  }
  return std::optional<StoredValue>();
}

Outcome<std::vector<pb::FieldChange>> LocalStore::ServerCopies(
    const std::vector<std::pair<Id, std::uint32_t>>& fields) {
  if (sticky_) return Fail(sticky_, Tr("the local store failed earlier; reopen it"));
  std::vector<pb::FieldChange> out;
  for (const auto& [id, field] : fields) {
    // The server's value as pulled: the shadow row behind a pending edit,
    // else the field's row while no edit of it waits to be sent.
    Stmt q(*stmts_,
           "SELECT " TEDUH_FIELD_ROW_COLS
           ", sum, kind, parent_id, unit_id, rsum, rank FROM (SELECT "
           "x.*, r.kind, r.parent_id, r.unit_id, r.sum AS rsum FROM (SELECT " TEDUH_FIELD_ROW_COLS
           ", sum, 0 AS rank FROM shadow WHERE record_id=?1 AND field=?2 UNION ALL "
           "SELECT " TEDUH_FIELD_ROW_COLS
           ", sum, 1 FROM fields WHERE record_id=?1 AND field=?2 AND NOT "
           "EXISTS(SELECT 1 FROM outbox WHERE record_id=?1 AND field=?2 AND state=0)) x JOIN "
           "records r ON r.record_id=x.record_id ORDER BY x.rank LIMIT 1)");
    q.BindId(1, id).Bind(2, field);
    int rc = q.Step();
    if (rc == SQLITE_DONE) continue;
    if (rc != SQLITE_ROW) return SqlFail(rc, Tr("reading fields"));
    // A damaged copy is not offered (the server would not take it anyway);
    // the device's own repair at its next sync removes it.
    if (!q.SumMatches({0, 11, 12, 13}, 14)) {
      MetDamage(DamageAt("records", id));
      continue;
    }
    const char* table = q.Int(15) == 0 ? "shadow" : "fields";
    if (!q.SumMatches({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 10)) {
      MetDamage(DamageAt(table, id, field));
      continue;
    }
    pb::FieldChange ch;
    ch.set_record_id(std::string(AsBytes(id)));
    ch.set_kind(q.Blob(11));
    if (auto parent = q.Blob(12); !parent.empty()) ch.set_parent_id(parent);
    ch.set_field(field);
    ch.set_sealed(q.Int(2) != 0);
    ch.set_key_class(static_cast<teduh::AccessClass>(q.Int(3)));
    ch.set_key_version(static_cast<std::uint32_t>(q.Int(4)));
    if (ch.sealed()) {
      ch.set_value(q.Blob(5));
    } else {
      auto plain = OpenAtRest(FieldAd(id, field), q.Blob(5));
      if (!plain) {
        MetDamage(DamageAt(table, id, field));
        continue;
      }
      ch.set_value(std::move(*plain));
    }
    ch.mutable_stamp()->set_hlc(q.UInt(6));
    ch.mutable_stamp()->set_device_id(q.Blob(7));
    ch.set_origin_hlc(q.UInt(8));
    out.push_back(std::move(ch));
  }
  return out;
}

// ---- Outbox ------------------------------------------------------------------

Outcome<std::optional<pb::FieldChange>> LocalStore::LoadOutbox(std::uint64_t device_seq,
                                                               int* state) {
  Stmt q(*stmts_, "SELECT payload, state FROM outbox WHERE device_seq=?1");
  q.BindU(1, device_seq);
  int rc = q.Step();
  if (rc == SQLITE_DONE) return std::optional<pb::FieldChange>();
  if (rc != SQLITE_ROW) return SqlFail(rc, Tr("reading the outbox"));
  if (state != nullptr) *state = static_cast<int>(q.Int(1));
  auto ch = ParseOutboxPayload(device_seq, q.Blob(0));
  if (!ch) return ch.error();
  return std::optional<pb::FieldChange>(std::move(*ch));
}

Outcome<pb::FieldChange> LocalStore::ParseOutboxPayload(std::uint64_t device_seq,
                                                        std::string_view stored) {
  auto plain = OpenAtRest(OutboxAd(device_seq), stored);
  if (!plain) return plain.error();
  pb::FieldChange ch;
  bool ok = ch.ParseFromString(*plain);
  crypto::Wipe(*plain);
  if (!ok || ch.device_seq() != device_seq) {
    return Fail(errc::integrity, Tr("an outbox entry is damaged"));
  }
  return ch;
}

Outcome<std::vector<pb::FieldChange>> LocalStore::PendingChanges(std::size_t limit,
                                                                 std::uint64_t after_device_seq,
                                                                 const std::optional<Id>& case_id) {
  if (sticky_) return Fail(sticky_, Tr("the local store failed earlier; reopen it"));
  Stmt q(*stmts_,
         case_id ? "SELECT o.device_seq, o.payload, o.record_id, o.field, o.state, o.reason, "
                   "o.detail, o.created_ms, o.updated_ms, o.sum FROM outbox o JOIN records r ON "
                   "r.record_id = o.record_id WHERE (r.record_id=?3 OR r.parent_id=?3) AND "
                   "o.state=0 AND o.device_seq>?2 ORDER BY o.device_seq LIMIT ?1"
                 : "SELECT device_seq, payload, record_id, field, state, reason, detail, "
                   "created_ms, updated_ms, sum FROM outbox WHERE state=0 AND device_seq>?2 "
                   "ORDER BY device_seq LIMIT ?1");
  q.Bind(1, static_cast<std::int64_t>(std::min<std::size_t>(limit, INT64_MAX)))
      .BindU(2, after_device_seq);
  if (case_id) q.BindId(3, *case_id);
  std::vector<pb::FieldChange> out;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    // A damaged entry is left for Repair (at the next sync's start), which
    // sends it again or, if its change no longer opens, marks it.
    auto ch = q.SumMatches({0, 2, 3, 4, 5, 6, 1, 7, 8}, 9)
                  ? ParseOutboxPayload(q.UInt(0), q.Blob(1))
                  : Outcome<pb::FieldChange>(Fail(errc::store_damaged, ""));
    if (!ch) {
      DamagedRow row = DamageAt("outbox", Id{});
      if (auto id = ToId(q.Blob(2))) row.record_id = *id;
      row.field = static_cast<std::uint32_t>(q.Int(3));
      row.device_seq = q.UInt(0);
      MetDamage(row);
      continue;
    }
    out.push_back(std::move(*ch));
  }
  if (rc != SQLITE_DONE) return SqlFail(rc, Tr("reading the outbox"));
  return out;
}

Outcome<PushApplied> LocalStore::ApplyPushResults(const std::vector<pb::FieldChange>& sent,
                                                  const pb::PushResult& result) {
  PushApplied counts;
  const std::int64_t now = env_.NowMs();
  // The answers are stored in chunks, a transaction each: no transaction
  // needs more room than a chunk's, and on a disk that fills up the chunks
  // stored are kept (the rest stay pending, are sent again and answered as
  // resends).
  constexpr std::size_t kChunk = 256;
  for (std::size_t first = 0; first < sent.size(); first += kChunk) {
    const std::size_t last = std::min(sent.size(), first + kChunk);
    if (auto r = ApplyPushChunk(sent, result, first, last, now, &counts); !r) return r.error();
  }
  return counts;
}

// The answers to sent[first, last), in one transaction.
Outcome<void> LocalStore::ApplyPushChunk(const std::vector<pb::FieldChange>& sent,
                                         const pb::PushResult& result, std::size_t first,
                                         std::size_t last, std::int64_t now, PushApplied* counts) {
  return InTxn([&]() -> Outcome<void> {
    auto persisted_hlc = MetaInt("hlc");
    if (!persisted_hlc) return persisted_hlc.error();
    std::uint64_t max_hlc = *persisted_hlc;
    auto any_shadow = AnyShadow();
    if (!any_shadow) return any_shadow.error();
    bool any_unconfirmed = false;
    {
      Stmt u(*stmts_, "SELECT EXISTS(SELECT 1 FROM unconfirmed)");
      if (int rc = u.Step(); rc != SQLITE_ROW) return SqlFail(rc, Tr("reading the local store"));
      any_unconfirmed = u.Int(0) != 0;
    }
    for (std::size_t i = first; i < last; ++i) {
      if (auto ec = Fault("push.result")) return Fail(ec, "injected failure");
      const pb::FieldChange& ch = sent[i];
      const pb::ChangeResult* res = nullptr;
      if (i < static_cast<std::size_t>(result.results_size()) &&
          result.results(static_cast<int>(i)).device_seq() == ch.device_seq()) {
        res = &result.results(static_cast<int>(i));
      } else {
        for (const auto& cand : result.results()) {
          if (cand.device_seq() == ch.device_seq()) res = &cand;
        }
      }
      if (res == nullptr || res->status() == pb::ChangeResult::STATUS_UNSPECIFIED) {
        ++counts->unanswered;  // stays pending: resent next time (idempotent by device_seq)
        continue;
      }
      auto id = ToId(ch.record_id());
      if (!id) continue;
      Stamp mine = StampFromPb(ch.stamp());
      Stamp stored_as =
          res->has_stamp() && res->stamp().hlc() != 0 ? StampFromPb(res->stamp()) : mine;
      auto kept = KeepPendingLocked(ch, *res, counts);
      if (!kept) return kept.error();
      if (*kept) continue;
      OutboxState next = OutboxState::kAccepted;
      switch (res->status()) {
        case pb::ChangeResult::STATUS_APPLIED:
          next = OutboxState::kAccepted;
          break;
        case pb::ChangeResult::STATUS_MERGED:
          next = OutboxState::kMerged;
          break;
        case pb::ChangeResult::STATUS_CONFLICT:
          next = OutboxState::kConflict;
          break;
        default:
          next = OutboxState::kRejected;
          break;
      }
      {
        // Only a pending entry takes the answer (a repeated answer changes nothing).
        Stmt u(*stmts_,
               "UPDATE outbox SET state=?2, reason=?3, detail=?4, updated_ms=?5 "
               "WHERE device_seq=?1 AND state=0");
        std::string reason = res->reason();
        if (reason.empty() && next == OutboxState::kRejected) reason = "rejected";
        u.BindU(1, ch.device_seq())
            .Bind(2, static_cast<int>(next))
            .BindText(3, reason.substr(0, 128))
            .BindText(4, res->detail().substr(0, 1024))
            .Bind(5, now);
        if (int rc = u.Step(); rc != SQLITE_DONE) return SqlFail(rc, Tr("updating the outbox"));
        if (sqlite3_changes(db_) == 0) continue;  // not ours, or answered before
      }
      max_hlc = std::max(max_hlc, stored_as.hlc);  // invariant 6
      switch (next) {
        case OutboxState::kAccepted:
          ++counts->accepted;
          break;
        case OutboxState::kMerged:
          ++counts->merged;
          break;
        case OutboxState::kConflict:
          ++counts->conflict;
          break;
        default:
          ++counts->rejected;
          break;
      }
      if (any_unconfirmed) {
        auto settled = SettleUnconfirmed(*id, ch.field(), ch.device_seq(), mine);
        if (!settled) return settled.error();
        if (*settled) continue;
      }
      // The common answers: stored as sent (applied, or kept in history by a
      // merge whose result arrives by pull), and no server value held back.
      if (next != OutboxState::kRejected && stored_as == mine && !*any_shadow) continue;
      auto current = RowStamp("fields", *id, ch.field());
      if (!current) return current.error();
      bool ours_in_fields = *current && **current == mine;
      // The server re-stamped the change (clock skew): our row and later pending
      // edits based on it follow the stamp the server stored.
      if (next != OutboxState::kRejected && !(stored_as == mine)) {
        if (ours_in_fields) {
          Stmt u(*stmts_,
                 "UPDATE fields SET stamp_hlc=?3, stamp_device=?4, origin_hlc=?5 "
                 "WHERE record_id=?1 AND field=?2");
          u.BindId(1, *id)
              .Bind(2, ch.field())
              .BindU(3, stored_as.hlc)
              .BindId(4, stored_as.device)
              .BindU(5, stored_as.hlc != mine.hlc ? mine.hlc : 0);
          if (int rc = u.Step(); rc != SQLITE_DONE) return SqlFail(rc, Tr("updating a field"));
        }
        Stmt later(*stmts_,
                   "SELECT device_seq FROM outbox WHERE record_id=?1 AND field=?2 AND "
                   "state=0 AND device_seq>?3");
        later.BindId(1, *id).Bind(2, ch.field()).BindU(3, ch.device_seq());
        std::vector<std::uint64_t> seqs;
        int rc;
        while ((rc = later.Step()) == SQLITE_ROW) seqs.push_back(later.UInt(0));
        if (rc != SQLITE_DONE) return SqlFail(rc, Tr("reading the outbox"));
        for (auto s : seqs) {
          auto l = LoadOutbox(s, nullptr);
          if (!l) return l.error();
          if (*l && StampFromPb((*l)->base()) == mine) {
            StampToPb(stored_as, (*l)->mutable_base());
            if (auto w = StoreOutboxPayload(**l); !w) return w;
          }
          if (*l) crypto::Wipe(*(*l)->mutable_value());
        }
      }
      auto later_pending = HasPending(*id, ch.field(), ch.device_seq());
      if (!later_pending) return later_pending.error();
      if (*later_pending) continue;  // the newest edit of the field decides below
      auto shadow = RowStamp("shadow", *id, ch.field());
      if (!shadow) return shadow.error();
      if (next == OutboxState::kAccepted) {
        // nothing: our value is the server's
      } else if (next == OutboxState::kRejected) {
        if (ours_in_fields) {
          if (*shadow) {
            if (auto w = CopyFieldRow("shadow", "fields", *id, ch.field()); !w) return w;
          } else if (auto w = DeleteFieldRow("fields", *id, ch.field()); !w) {
            return w;
          }
        }
      } else {
        Stamp cur = res->has_current() && res->current().hlc() != 0 ? StampFromPb(res->current())
                                                                    : stored_as;
        if (!(cur == stored_as) && *shadow && **shadow == cur) {
          if (auto w = CopyFieldRow("shadow", "fields", *id, ch.field()); !w) return w;
        }
        // Otherwise the merged value is new on the server and arrives by pull.
      }
      if (auto w = DeleteFieldRow("shadow", *id, ch.field()); !w) return w;
    }
    return SetMetaInt("hlc", max_hlc);
  });
}

Outcome<OutboxCounts> LocalStore::CountOutbox() {
  if (sticky_) return Fail(sticky_, Tr("the local store failed earlier; reopen it"));
  Stmt q(*stmts_, "SELECT state, COUNT(*) FROM outbox GROUP BY state");
  OutboxCounts c;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    std::uint64_t n = q.UInt(1);
    switch (static_cast<OutboxState>(q.Int(0))) {
      case OutboxState::kPending:
        c.pending = n;
        break;
      case OutboxState::kAccepted:
        c.accepted = n;
        break;
      case OutboxState::kMerged:
        c.merged = n;
        break;
      case OutboxState::kConflict:
        c.conflict = n;
        break;
      case OutboxState::kRejected:
        c.rejected = n;
        break;
    }
  }
  if (rc != SQLITE_DONE) return SqlFail(rc, Tr("counting the outbox"));
  return c;
}

Outcome<std::vector<OutboxEntry>> LocalStore::ListOutbox(bool include_accepted, std::size_t limit) {
  if (sticky_) return Fail(sticky_, Tr("the local store failed earlier; reopen it"));
  Stmt q(*stmts_,
         std::string("SELECT o.device_seq, o.record_id, COALESCE(r.kind, ''), o.field, "
                     "o.state, o.reason, o.detail, o.created_ms, o.updated_ms FROM outbox o "
                     "LEFT JOIN records r ON r.record_id=o.record_id ") +
             (include_accepted ? "" : "WHERE o.state<>1 ") + "ORDER BY o.device_seq DESC LIMIT ?1");
  q.Bind(1, static_cast<std::int64_t>(limit));
  std::vector<OutboxEntry> out;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    OutboxEntry e;
    e.device_seq = q.UInt(0);
    if (auto id = ToId(q.Blob(1))) e.record_id = *id;
    e.kind = q.Text(2);
    e.field = static_cast<std::uint32_t>(q.Int(3));
    e.state = static_cast<OutboxState>(q.Int(4));
    e.reason = q.Text(5);
    e.detail = q.Text(6);
    e.created_ms = q.Int(7);
    e.updated_ms = q.Int(8);
    out.push_back(std::move(e));
  }
  if (rc != SQLITE_DONE) return SqlFail(rc, Tr("listing the outbox"));
  return out;
}

// ---- Pull --------------------------------------------------------------------

Outcome<PullCursor> LocalStore::Cursor() {
  if (sticky_) return Fail(sticky_, Tr("the local store failed earlier; reopen it"));
  PullCursor c;
  auto g = MetaInt("cursor_generation");
  if (!g) return g.error();
  auto s = MetaInt("cursor_seq");
  if (!s) return s.error();
  c.generation = *g;
  c.last_seq = *s;
  return c;
}

// Invariant 8, at the first batch of a reset: the outbox above
// `held_through` is queued again, the shadow rows set aside, every field row
// unconfirmed. Returns how many outbox entries were queued again.
Outcome<std::size_t> LocalStore::BeginReset(std::uint64_t held_through) {
  // The server was restored from a backup: queue again everything it may
  // have lost; device_seq idempotency answers what it still has.
  Stmt q(*stmts_,
         "UPDATE outbox SET state=0, updated_ms=?1 WHERE state IN (1,2,3) AND device_seq>?2");
  q.Bind(1, env_.NowMs()).BindU(2, held_through);
  if (int rc = q.Step(); rc != SQLITE_DONE) return SqlFail(rc, Tr("re-queueing the outbox"));
  const auto requeued = static_cast<std::size_t>(sqlite3_changes(db_));
  // Invariant 8: what the restored server sends again is confirmed.
  if (auto w = SetAside("shadow", "1", env_.NowMs()); !w) return w.error();
  for (const char* sql : {"DELETE FROM unconfirmed", "DELETE FROM shadow",
                          "INSERT INTO unconfirmed SELECT record_id, field FROM fields"}) {
    Stmt u(*stmts_, sql);
    if (int rc = u.Step(); rc != SQLITE_DONE) return SqlFail(rc, Tr("re-queueing the outbox"));
  }
  return requeued;
}

// Invariant 8, when the reset pull is complete: what the restored server
// lacks is set aside. Returns how many values were.
Outcome<std::size_t> LocalStore::FinishReset() {
  constexpr const char* kLacking =
      "EXISTS(SELECT 1 FROM unconfirmed u WHERE u.record_id=f.record_id AND "
      "u.field=f.field) AND NOT EXISTS(SELECT 1 FROM outbox o WHERE "
      "o.record_id=f.record_id AND o.field=f.field AND o.state=0)";
  auto aside = SetAside("fields", kLacking, env_.NowMs());
  if (!aside) return aside.error();
  for (std::string sql :
       {std::string("DELETE FROM fields AS f WHERE ") + kLacking,
        std::string("DELETE FROM records WHERE record_id IN (SELECT record_id FROM "
                    "unconfirmed) AND NOT EXISTS(SELECT 1 FROM fields f WHERE "
                    "f.record_id=records.record_id) AND NOT EXISTS(SELECT 1 FROM records c "
                    "WHERE c.parent_id=records.record_id)"),
        std::string("DELETE FROM unconfirmed WHERE NOT EXISTS(SELECT 1 FROM fields f WHERE "
                    "f.record_id=unconfirmed.record_id AND f.field=unconfirmed.field)"),
        // What the server sent again is not lost.
        std::string("DELETE FROM set_aside WHERE EXISTS(SELECT 1 FROM fields f WHERE "
                    "f.record_id=set_aside.record_id AND f.field=set_aside.field AND "
                    "f.stamp_hlc=set_aside.stamp_hlc AND f.stamp_device=set_aside.stamp_device) "
                    "OR EXISTS(SELECT 1 FROM shadow s WHERE s.record_id=set_aside.record_id AND "
                    "s.field=set_aside.field AND s.stamp_hlc=set_aside.stamp_hlc AND "
                    "s.stamp_device=set_aside.stamp_device)")}) {
    Stmt u(*stmts_, sql);
    if (int rc = u.Step(); rc != SQLITE_DONE) return SqlFail(rc, Tr("writing the local store"));
  }
  return aside;
}

Outcome<PullApplied> LocalStore::ApplyPulled(Hlc& hlc, const pb::Changes& batch,
                                             const std::vector<Id>& purge,
                                             std::uint64_t held_through) {
  PullApplied counts;
  auto r = InTxn([&]() -> Outcome<void> {
    auto persisted = MetaInt("hlc");
    if (!persisted) return persisted.error();
    for (const Id& case_id : purge) {
      // Children first (their rows name the case as parent), then the case.
      for (const char* sql :
           {"DELETE FROM fields WHERE record_id IN (SELECT record_id FROM records WHERE "
            "record_id=?1 OR parent_id=?1)",
            "DELETE FROM shadow WHERE record_id IN (SELECT record_id FROM records WHERE "
            "record_id=?1 OR parent_id=?1)",
            "DELETE FROM outbox WHERE record_id IN (SELECT record_id FROM records WHERE "
            "record_id=?1 OR parent_id=?1)",
            "DELETE FROM records WHERE record_id=?1 OR parent_id=?1"}) {
        Stmt q(*stmts_, sql);
        q.BindId(1, case_id);
        if (int rc = q.Step(); rc != SQLITE_DONE)
          return SqlFail(rc, Tr("deleting a shredded case"));
      }
      counts.purged += static_cast<std::size_t>(sqlite3_changes(db_));
    }
    hlc.Observe(*persisted);
    if (batch.reset()) {
      auto requeued = BeginReset(held_through);
      if (!requeued) return requeued.error();
      counts.requeued = *requeued;
    }
    bool unconfirmed = false;
    {
      Stmt u(*stmts_, "SELECT EXISTS(SELECT 1 FROM unconfirmed)");
      if (int rc = u.Step(); rc != SQLITE_ROW) return SqlFail(rc, Tr("reading the local store"));
      unconfirmed = u.Int(0) != 0;
    }
    // A record's fields arrive together: its row is checked once per run.
    std::optional<Id> last_record;
    bool last_conflict = false;
    auto any_pending = AnyPending();
    if (!any_pending) return any_pending.error();
    for (const auto& ch : batch.changes()) {
      if (auto ec = Fault("pull.change")) return Fail(ec, "injected failure while applying");
      auto id = ToId(ch.record_id());
      if (!id) {
        ++counts.ignored;
        continue;
      }
      if (last_record != *id) {
        std::optional<Id> parent;
        if (!ch.parent_id().empty()) parent = ToId(ch.parent_id());
        if (auto w = UpsertRecord(*id, ch.kind(), parent, ch.unit_id(), &last_conflict); !w) {
          return w;
        }
        last_record = *id;
      }
      if (last_conflict) {
        ++counts.ignored;
        continue;
      }
      Stamp stamp = StampFromPb(ch.stamp());
      hlc.Observe(stamp.hlc);
      // Not origin_hlc: that is the time a writer claimed and the server
      // refused as too far ahead; observing it would carry the bad clock on.
      std::string at_rest;
      if (ch.sealed()) {
        at_rest = ch.value();
      } else {
        auto s = SealAtRest(FieldAd(*id, ch.field()), ch.value());
        if (!s) return s.error();
        at_rest = std::move(*s);
      }
      Outcome<bool> pending = false;
      if (*any_pending) pending = HasPending(*id, ch.field(), 0);
      if (!pending) return pending.error();
      std::string_view table = *pending ? "shadow" : "fields";  // invariant 4
      if (auto w = WriteFieldRow(table, *id, ch.field(), ch.sealed(), ch.key_class(),
                                 ch.key_version(), at_rest, stamp, ch.origin_hlc(), ch.seq());
          !w) {
        return w;
      }
      ++(*pending ? counts.deferred : counts.applied);
      if (unconfirmed && !*pending) {  // a pending field's row is still this device's
        Stmt u(*stmts_, "DELETE FROM unconfirmed WHERE record_id=?1 AND field=?2");
        u.BindId(1, *id).Bind(2, ch.field());
        if (int rc = u.Step(); rc != SQLITE_DONE) return SqlFail(rc, Tr("reading the local store"));
      }
    }
    if (unconfirmed && !batch.has_more()) {
      auto aside = FinishReset();
      if (!aside) return aside.error();
      counts.set_aside = *aside;
    }
    if (auto w = SetMetaInt("cursor_generation", batch.generation()); !w) return w;
    if (auto w = SetMetaInt("cursor_seq", batch.last_seq()); !w) return w;  // invariant 3
    return SetMetaInt("hlc", hlc.last());
  });
  if (!r) return r.error();
  return counts;
}

Outcome<std::uint64_t> LocalStore::RebaseHlc() {
  if (sticky_) return Fail(sticky_, Tr("the local store failed earlier; reopen it"));
  std::uint64_t top = 0;
  {
    auto pending = AnyPending();
    if (!pending) return pending.error();
    if (*pending) return Fail(errc::invalid_argument, Tr("changes wait to be sent"));
  }
  auto r = InTxn([&]() -> Outcome<void> {
    Stmt q(*stmts_,
           "SELECT MAX(h) FROM (SELECT MAX(stamp_hlc) AS h FROM fields UNION ALL "
           "SELECT MAX(stamp_hlc) FROM shadow)");
    int rc = q.Step();
    if (rc != SQLITE_ROW) return SqlFail(rc, Tr("reading the stamps"));
    top = q.UInt(0);
    return SetMetaInt("hlc", top);
  });
  if (!r) return r.error();
  return top;
}

// ---- Damage ------------------------------------------------------------------

void LocalStore::MetDamage(const DamagedRow& row) {
  if (!damage_met_) {
    damage_met_ = true;
    // Kept in the file too, so that the next sync repairs whichever command
    // runs it (a read met the damage, a later `teduh sync` repairs): the
    // last check's time set back makes RepairDue true. Best effort, and not
    // through SqlFail: a damaged file must not make the store sticky here.
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db_,
                           "INSERT INTO meta(key, value) VALUES('checked_ms', 0) "
                           "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                           -1, &s, nullptr) == SQLITE_OK)
      (void)sqlite3_step(s);
    sqlite3_finalize(s);
  }
  if (options_.on_damage) options_.on_damage(row);
}

// Each summed table's columns in row_sum order, then `sum`; for fields and
// shadow, sealed/value also open the at-rest value; for the outbox, the payload.
Outcome<void> LocalStore::CheckTable(std::string_view table, LocalStoreCheck* out) {
  const bool field_row = table == "fields" || table == "shadow";
  std::string sql;
  if (table == "records") {
    sql = "SELECT record_id, kind, parent_id, unit_id, sum FROM records";
  } else if (field_row) {
    sql = fmt::format("SELECT {}, sum FROM {}", TEDUH_FIELD_ROW_COLS, table);
  } else if (table == "outbox") {
    sql =
        "SELECT device_seq, record_id, field, state, reason, detail, payload, created_ms, "
        "updated_ms, sum FROM outbox";
  } else {
    sql =
        "SELECT record_id, field, kind, parent_id, sealed, key_class, key_version, value, "
        "stamp_hlc, stamp_device, origin_hlc, seq, set_aside_ms, sum FROM set_aside";
  }
  Stmt q(db_, sql);
  const int ncols = table == "records" ? 4 : field_row ? 10 : table == "outbox" ? 9 : 13;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    ++out->rows_checked;
    bool ok;
    switch (ncols) {
      case 4:
        ok = q.SumMatches({0, 1, 2, 3}, 4);
        break;
      case 10:
        ok = q.SumMatches({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 10);
        break;
      case 9:
        ok = q.SumMatches({0, 1, 2, 3, 4, 5, 6, 7, 8}, 9);
        break;
      default:
        ok = q.SumMatches({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, 13);
    }
    DamagedRow row = DamageAt(table, Id{});
    const int id_col = table == "outbox" ? 1 : 0;
    if (auto id = ToId(q.Blob(id_col))) row.record_id = *id;
    if (table == "outbox") {
      row.device_seq = q.UInt(0);
      row.field = static_cast<std::uint32_t>(q.Int(2));
      if (ok) ok = ParseOutboxPayload(row.device_seq, q.Blob(6)).has_value();
    } else if (table != "records") {
      row.field = static_cast<std::uint32_t>(q.Int(1));
    }
    if (field_row && ok && q.Int(2) == 0) {
      auto plain = OpenAtRest(FieldAd(row.record_id, row.field), q.Blob(5));
      ok = plain.has_value();
      if (ok) crypto::Wipe(*plain);
    }
    if (table == "set_aside") {
      row.stamp.hlc = q.UInt(8);
      if (auto d = ToId(q.Blob(9))) row.stamp.device = *d;
    }
    if (!ok) out->rows.push_back(row);
  }
  if ((rc & 0xFF) == SQLITE_CORRUPT) {
    out->structure.push_back(fmt::format("{}: {}", table, sqlite3_errstr(rc)));
    return {};
  }
  if (rc != SQLITE_DONE) return SqlFail(rc, Tr("checking the local store"));
  return {};
}

Outcome<LocalStoreCheck> LocalStore::Check() {
  if (sticky_) return Fail(sticky_, Tr("the local store failed earlier; reopen it"));
  LocalStoreCheck out;
  auto structure = StructureCheck("PRAGMA integrity_check");
  if (!structure) return structure.error();
  out.structure = std::move(*structure);
  for (std::string_view table : {"records", "fields", "shadow", "outbox", "set_aside"}) {
    if (auto r = CheckTable(table, &out); !r) return r.error();
  }
  return out;
}

Outcome<bool> LocalStore::RepairDue(std::int64_t interval_ms) {
  if (damage_met_) return true;
  auto last = MetaInt("checked_ms");
  if (!last) return last.error();
  return env_.NowMs() - static_cast<std::int64_t>(*last) >= interval_ms;
}

// Every pending edit's field row (invariant 5) holds the newest pending
// value of its field; written back from the outbox where it is missing.
Outcome<void> LocalStore::RestorePendingRows(std::size_t* restored) {
  Stmt q(db_,
         "SELECT o.device_seq, o.payload FROM outbox o WHERE o.state=0 AND NOT EXISTS(SELECT 1 "
         "FROM outbox n WHERE n.record_id=o.record_id AND n.field=o.field AND n.state=0 AND "
         "n.device_seq>o.device_seq) AND (NOT EXISTS(SELECT 1 FROM fields f WHERE "
         "f.record_id=o.record_id AND f.field=o.field) OR NOT EXISTS(SELECT 1 FROM records r "
         "WHERE r.record_id=o.record_id))");
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    auto ch = ParseOutboxPayload(q.UInt(0), q.Blob(1));
    if (!ch) continue;  // marked unreadable by Repair before this runs
    auto id = ToId(ch->record_id());
    if (!id) continue;
    std::optional<Id> parent;
    if (!ch->parent_id().empty()) parent = ToId(ch->parent_id());
    bool kind_conflict = false;
    if (auto r = UpsertRecord(*id, ch->kind(), parent, "", &kind_conflict); !r) return r;
    std::string at_rest;
    if (ch->sealed()) {
      at_rest = ch->value();
    } else {
      auto sealed = SealAtRest(FieldAd(*id, ch->field()), ch->value());
      crypto::Wipe(*ch->mutable_value());
      if (!sealed) return sealed.error();
      at_rest = std::move(*sealed);
    }
    if (auto r = WriteFieldRow("fields", *id, ch->field(), ch->sealed(), ch->key_class(),
                               ch->key_version(), at_rest, StampFromPb(ch->stamp()), 0, 0);
        !r) {
      return r;
    }
    ++*restored;
  }
  if (rc != SQLITE_DONE) return SqlFail(rc, Tr("repairing the local store"));
  return {};
}

// REINDEX builds every index again from its table. An index whose pages are
// damaged cannot be read even to be dropped: then every index's entry is
// taken out of the schema, VACUUM writes the file anew from the tables alone
// (leaving the damaged pages behind), and each index is made again from its
// definition. Indexes hold nothing a table does not.
Outcome<void> LocalStore::RebuildIndexes() {
  if (sticky_) return Fail(sticky_, Tr("the local store failed earlier; reopen it"));
  if (sqlite3_exec(db_, "REINDEX", nullptr, nullptr, nullptr) == SQLITE_OK) return {};
  std::vector<std::string> definitions;
  {
    Stmt q(db_, "SELECT sql FROM sqlite_schema WHERE type='index' AND sql IS NOT NULL");
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) definitions.push_back(q.Text(0));
    if (rc != SQLITE_DONE) return SqlFail(rc, Tr("repairing the local store"));
  }
  int rc = sqlite3_exec(db_,
                        "PRAGMA writable_schema=ON; DELETE FROM sqlite_schema WHERE type='index' "
                        "AND sql IS NOT NULL; PRAGMA writable_schema=OFF; VACUUM",
                        nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return SqlFail(rc, Tr("repairing the local store"));
  for (const auto& sql : definitions) {
    if (auto x = Exec(sql); !x) return x.error();
  }
  return {};
}

Outcome<LocalStoreRepair> LocalStore::Repair() {
  LocalStoreRepair rep;
  auto found = Check();
  if (!found) return found.error();
  rep.found = std::move(*found);
  if (!rep.found.structure.empty()) {
    // Damage SQLite finds is mostly in indexes: built again from the tables.
    if (auto x = RebuildIndexes(); !x) return x.error();
    rep.reindexed = true;
  }
  auto r = InTxn([&]() -> Outcome<void> {
    for (const auto& row : rep.found.rows) {
      if (row.table == "outbox") {
        auto payload_ok = [&]() -> bool {
          Stmt p(db_, "SELECT payload FROM outbox WHERE device_seq=?1");
          p.BindU(1, row.device_seq);
          return p.Step() == SQLITE_ROW &&
                 ParseOutboxPayload(row.device_seq, p.Blob(0)).has_value();
        }();
        // An intact change is sent again: the server answers one it already
        // has by its device_seq, so nothing is applied twice.
        Stmt u(db_, payload_ok ? "UPDATE outbox SET state=0, reason='', detail='' "
                                 "WHERE device_seq=?1"
                               : "UPDATE outbox SET state=4, reason=?2, detail='' "
                                 "WHERE device_seq=?1");
        u.BindU(1, row.device_seq);
        if (!payload_ok) u.BindText(2, kUnreadableHereReason);
        if (int rc = u.Step(); rc != SQLITE_DONE) return SqlFail(rc, Tr("repairing the outbox"));
        ++(payload_ok ? rep.resent : rep.unreadable);
        continue;
      }
      Stmt del(db_, row.table == "records" ? "DELETE FROM records WHERE record_id=?1"
                    : row.table == "set_aside"
                        ? "DELETE FROM set_aside WHERE record_id=?1 AND field=?2 AND "
                          "stamp_hlc=?3 AND stamp_device=?4"
                    : row.table == "fields" ? "DELETE FROM fields WHERE record_id=?1 AND field=?2"
                                            : "DELETE FROM shadow WHERE record_id=?1 AND field=?2");
      del.BindId(1, row.record_id);
      if (row.table != "records") del.Bind(2, row.field);
      if (row.table == "set_aside") del.BindU(3, row.stamp.hlc).BindId(4, row.stamp.device);
      if (int rc = del.Step(); rc != SQLITE_DONE)
        return SqlFail(rc, Tr("repairing the local store"));
      rep.removed += static_cast<std::size_t>(sqlite3_changes(db_));
    }
    if (auto x = RestorePendingRows(&rep.restored); !x) return x;
    if (!rep.found.intact()) {
      rep.repull = true;
      if (auto x = SetMetaInt("cursor_seq", 0); !x) return x;
    }
    return SetMetaInt("checked_ms", static_cast<std::uint64_t>(env_.NowMs()));
  });
  if (!r) return r.error();
  if (rep.reindexed) {
    auto after = StructureCheck("PRAGMA integrity_check");
    if (!after) return after.error();
    rep.remaining = std::move(*after);
  }
  damage_met_ = !rep.remaining.empty();
  structure_damage_ = rep.remaining;
  return rep;
}

Outcome<void> LocalStore::CheckInvariants() {
  if (sticky_) return Fail(sticky_, Tr("the local store failed earlier; reopen it"));
  {
    // Invariant 5.
    Stmt q(*stmts_,
           "SELECT COUNT(*) FROM outbox o WHERE o.state=0 AND NOT EXISTS(SELECT 1 FROM "
           "fields f WHERE f.record_id=o.record_id AND f.field=o.field)");
    if (int rc = q.Step(); rc != SQLITE_ROW) return SqlFail(rc, "checking invariants");
    if (q.Int(0) != 0) return Fail(errc::store_failed, "a pending edit has no field row");
  }
  {
    // Invariant 4.
    Stmt q(*stmts_,
           "SELECT COUNT(*) FROM shadow s WHERE NOT EXISTS(SELECT 1 FROM outbox o WHERE "
           "o.record_id=s.record_id AND o.field=s.field AND o.state=0)");
    if (int rc = q.Step(); rc != SQLITE_ROW) return SqlFail(rc, "checking invariants");
    if (q.Int(0) != 0) return Fail(errc::store_failed, "a shadow row has no pending edit");
  }
  {
    // Invariants 2 and 6.
    Stmt q(*stmts_, "SELECT COALESCE(MAX(device_seq), 0), COUNT(*) FROM outbox");
    if (int rc = q.Step(); rc != SQLITE_ROW) return SqlFail(rc, "checking invariants");
    auto seq = MetaInt("device_seq");
    if (!seq) return seq.error();
    // The counter is at least every number used; it may be higher (raised
    // to the server's mark, or past a renumbered edit), never lower.
    if (q.UInt(0) > *seq || q.UInt(1) > *seq) {
      return Fail(errc::store_failed, "the outbox and the device_seq counter disagree");
    }
    Stmt h(*stmts_, "SELECT COALESCE(MAX(stamp_hlc), 0) FROM fields WHERE stamp_device=?1");
    h.BindId(1, device_id_);
    if (int rc = h.Step(); rc != SQLITE_ROW) return SqlFail(rc, "checking invariants");
    auto hlc = MetaInt("hlc");
    if (!hlc) return hlc.error();
    if (h.UInt(0) > *hlc) return Fail(errc::store_failed, "a stamp is ahead of the saved clock");
  }
  return {};
}

}  // namespace teduh::core
