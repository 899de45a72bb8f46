// See backup.h. SQLite is used directly here: a snapshot and a restore are
// whole-file operations that the Store interface does not model.
#include "teduh/server/backup.h"

#include <fmt/format.h>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>

#include "teduh/core/i18n.h"
#include "teduh/crypto/crypto.h"
#include "teduh/server/admin.h"
#include "teduh/server/audit.h"
#include "teduh/server/error.h"

namespace teduh::server {
namespace {

namespace fs = std::filesystem;
namespace kv1 = teduh::keys::v1;
using core::Fail;
using core::Tr;
using core::TrF;

using Db = std::unique_ptr<sqlite3, decltype(&sqlite3_close_v2)>;

core::Outcome<Db> OpenDb(const std::string& path, int flags) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  Db db(raw, &sqlite3_close_v2);
  if (rc != SQLITE_OK) return Fail(core::errc::store_failed, TrF("cannot open the store {}", path));
  sqlite3_busy_timeout(raw, 5000);
  return db;
}

core::Outcome<void> Exec(sqlite3* db, const std::string& sql) {
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  sqlite3_free(err);  // SQLite's text may quote values: never shown
  if (rc == SQLITE_FULL) return Fail(core::errc::disk_full, Tr("no space left on the disk"));
  if (rc != SQLITE_OK) return Fail(core::errc::store_failed, Tr("the store could not be changed"));
  return {};
}

// One meta value (empty if absent).
std::string Meta(sqlite3* db, const char* schema, const char* key) {
  sqlite3_stmt* st = nullptr;
  const std::string sql = std::string("SELECT value FROM ") + schema + ".meta WHERE key = ?1";
  std::string out;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) return out;
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  if (sqlite3_step(st) == SQLITE_ROW) {
    const void* p = sqlite3_column_blob(st, 0);
    out.assign(static_cast<const char*>(p ? p : ""),
               static_cast<std::size_t>(sqlite3_column_bytes(st, 0)));
  }
  sqlite3_finalize(st);
  return out;
}

std::uint64_t MetaU64(sqlite3* db, const char* schema, const char* key) {
  const std::string v = Meta(db, schema, key);
  std::uint64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return 0;
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return n;
}

bool IntegrityOk(sqlite3* db, const char* pragma) {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, pragma, -1, &st, nullptr) != SQLITE_OK) return false;
  bool ok = sqlite3_step(st) == SQLITE_ROW &&
            std::string_view(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))) == "ok";
  sqlite3_finalize(st);
  return ok;
}

std::uint64_t NewGeneration(std::uint64_t avoid_a, std::uint64_t avoid_b) {
  std::uint64_t g = 0;
  do {
    Id r = core::NewId();
    std::memcpy(&g, r.data(), sizeof g);
    g &= 0x7FFFFFFFFFFFFFFFull;  // stored as a signed integer
  } while (g == 0 || g == avoid_a || g == avoid_b);
  return g;
}

std::vector<RestoredDevice> Marks(sqlite3* db, const char* schema) {
  std::vector<RestoredDevice> out;
  sqlite3_stmt* st = nullptr;
  const std::string sql = std::string("SELECT device_id, user, last_device_seq FROM ") + schema +
                          ".devices ORDER BY user";
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) return out;
  while (sqlite3_step(st) == SQLITE_ROW) {
    RestoredDevice d;
    const void* p = sqlite3_column_blob(st, 0);
    if (p && sqlite3_column_bytes(st, 0) == static_cast<int>(d.device_id.size()))
      std::memcpy(d.device_id.data(), p, d.device_id.size());
    d.user = reinterpret_cast<const char*>(sqlite3_column_text(st, 1));
    d.mark_in_backup = static_cast<std::uint64_t>(sqlite3_column_int64(st, 2));
    out.push_back(std::move(d));
  }
  sqlite3_finalize(st);
  return out;
}

// What must never go backwards, from the replaced store (attached as `old`)
// into the restored one: devices enrolled, approved or revoked since the
// backup (DeviceState: pending 1 < active 2 < revoked 3), their marks, used enrollment codes, key
// epochs (grants, acknowledgements, retirements) and the unit's settings. Case data is not copied:
// devices re-send their own changes, which keeps every value's history and audit.
constexpr const char* kCarryForwardSql = R"sql(
INSERT OR IGNORE INTO devices SELECT * FROM old.devices;
UPDATE devices SET
  last_device_seq = MAX(last_device_seq,
    (SELECT o.last_device_seq FROM old.devices o WHERE o.device_id = devices.device_id)),
  state = MAX(state,
    (SELECT o.state FROM old.devices o WHERE o.device_id = devices.device_id))
  WHERE device_id IN (SELECT device_id FROM old.devices);
INSERT OR REPLACE INTO enrollments SELECT * FROM old.enrollments WHERE used_ms > 0;
INSERT OR IGNORE INTO enrollments SELECT * FROM old.enrollments;
INSERT OR IGNORE INTO grants SELECT * FROM old.grants;
INSERT OR IGNORE INTO key_acks SELECT * FROM old.key_acks;
INSERT OR IGNORE INTO retirements SELECT * FROM old.retirements;
INSERT OR REPLACE INTO revocations SELECT * FROM old.revocations;
INSERT OR REPLACE INTO meta(key, value) SELECT key, value FROM old.meta
  WHERE key IN ('unit_codes', 'time_zone', 'backup_pk') AND length(value) > 0;
UPDATE meta SET value = (SELECT value FROM old.meta WHERE key = 'hlc_last')
  WHERE key = 'hlc_last' AND
        CAST((SELECT value FROM old.meta WHERE key = 'hlc_last') AS INTEGER) > CAST(value AS INTEGER);
)sql";

// The same for the key custody of a replaced store of version 6 or later:
// who was handed or holds the unit root key, and the escrowed class keys
// (never an epoch retired since).
constexpr const char* kCarryCustodySql = R"sql(
INSERT OR REPLACE INTO root_holders SELECT * FROM old.root_holders o
  WHERE NOT EXISTS(SELECT 1 FROM root_holders r WHERE r.device_id = o.device_id AND r.since_ms > 0);
INSERT OR IGNORE INTO escrow_grants SELECT * FROM old.escrow_grants;
INSERT OR IGNORE INTO approvals SELECT * FROM old.approvals;
INSERT OR IGNORE INTO restore_gaps SELECT * FROM old.restore_gaps;
DELETE FROM escrow_grants WHERE EXISTS(SELECT 1 FROM retirements t
  WHERE t.key_class = escrow_grants.key_class AND t.epoch = escrow_grants.epoch);
)sql";

}  // namespace

core::Outcome<void> SetBackupKey(const std::string& data_dir, std::string_view token) {
  auto parsed = core::ParseBackupKeyToken(token);
  if (!parsed) return parsed.error();
  auto db = OpenDb(StorePath(data_dir), SQLITE_OPEN_READWRITE);
  if (!db) return db.error();
  const std::string root = Meta(db->get(), "main", "unit_root_pk");
  const std::string unit = Meta(db->get(), "main", "unit_id");
  if (root.size() != crypto::kSignPublicKeyBytes)
    return Fail(core::errc::bad_signature,
                Tr("the unit has no root key yet: enroll the first admin device"));
  const std::string message = core::BackupKeyMessage(unit, parsed->first);
  auto span = [](std::string_view s) {
    return crypto::ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
  };
  if (!crypto::Verify(span(root), span(message), span(parsed->second)))
    return Fail(core::errc::bad_signature,
                Tr("the backup key is not signed by this unit's root key"));
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db->get(),
                         "INSERT OR REPLACE INTO meta(key, value) VALUES('backup_pk', ?1)", -1, &st,
                         nullptr) != SQLITE_OK)
    return Fail(core::errc::store_failed, Tr("the store could not be changed"));
  sqlite3_bind_blob(st, 1, parsed->first.data(), static_cast<int>(parsed->first.size()),
                    SQLITE_STATIC);
  const int rc = sqlite3_step(st);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE)
    return Fail(core::errc::store_failed, Tr("the store could not be changed"));
  return {};
}

core::Outcome<BackupReport> BackupStore(const std::string& data_dir, const std::string& to_file,
                                        core::Env& env) {
  const auto started = std::chrono::steady_clock::now();
  if (!fs::exists(StorePath(data_dir))) return Fail(make_error_code(server::errc::not_initialised));
  auto src = OpenDb(StorePath(data_dir), SQLITE_OPEN_READONLY);
  if (!src) return src.error();
  auto mem = OpenDb(":memory:", SQLITE_OPEN_READWRITE);
  if (!mem) return mem.error();
  // One read transaction: the snapshot is consistent, and in WAL mode the
  // server's writer goes on meanwhile.
  const auto snap_start = std::chrono::steady_clock::now();
  sqlite3_backup* b = sqlite3_backup_init(mem->get(), "main", src->get(), "main");
  if (!b) return Fail(core::errc::store_failed, Tr("the store could not be read for a backup"));
  int rc = sqlite3_backup_step(b, -1);
  sqlite3_backup_finish(b);
  const auto snap_end = std::chrono::steady_clock::now();
  if (rc != SQLITE_DONE) {
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
      return Fail(core::errc::store_busy, Tr("the store is busy: try the backup again"));
    return Fail(core::errc::store_failed, Tr("the store could not be read for a backup"));
  }
  src->reset();
  sqlite3* m = mem->get();
  const std::string pk = Meta(m, "main", "backup_pk");
  if (pk.size() != crypto::kBoxPublicKeyBytes)
    return Fail(core::errc::key_missing,
                Tr("the unit has no backup key yet: on an admin device run `teduh key backup-key`, "
                   "then `teduh-server backup-key --data DIR TOKEN` here"));
  kv1::BackupHeader header;
  header.set_unit_id(Meta(m, "main", "unit_id"));
  header.set_server_id(Meta(m, "main", "server_id"));
  header.set_generation(MetaU64(m, "main", "generation"));
  header.set_created_ms(env.NowMs());
  header.set_audit_index(MetaU64(m, "main", "audit_last"));
  header.set_audit_head(Meta(m, "main", "audit_head"));
  header.set_schema_version(static_cast<std::uint32_t>(MetaU64(m, "main", "schema_version")));
  header.set_backup_pk(pk);
  sqlite3_int64 size = 0;
  unsigned char* bytes = sqlite3_serialize(m, "main", &size, 0);
  if (!bytes) return Fail(core::errc::store_failed, Tr("the store could not be read for a backup"));
  std::unique_ptr<unsigned char, decltype(&sqlite3_free)> owned(bytes, &sqlite3_free);
  const std::string_view snapshot(reinterpret_cast<const char*>(bytes),
                                  static_cast<std::size_t>(size));
  auto written = core::WriteBackupFile(to_file, header, snapshot);
  std::memset(bytes, 0, static_cast<std::size_t>(size));
  if (!written) return written.error();
  auto info = core::VerifyBackupFile(to_file);  // what was written reads back whole
  if (!info) return info.error();
  BackupReport report;
  report.info = std::move(*info);
  report.store_bytes = static_cast<std::uint64_t>(size);
  report.snapshot_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(snap_end - snap_start).count();
  report.total_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - started)
                        .count();
  return report;
}

std::string BackupFileName(std::int64_t ms) {
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32] = {};
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%S", &tm);
  char name[64] = {};
  std::snprintf(name, sizeof name, "teduh-%s-%03dZ.tbk", buf, static_cast<int>(ms % 1000));
  return name;
}

core::Outcome<std::vector<std::string>> PruneBackups(const std::string& dir, std::size_t keep) {
  std::vector<std::string> ours;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    // Only names BackupFileName makes: "teduh-" 15 + "-" 3 + "Z.tbk".
    if (name.size() == 30 && name.starts_with("teduh-") && name.ends_with("Z.tbk") &&
        entry.is_regular_file())
      ours.push_back(entry.path().string());
  }
  if (ec) return Fail(core::errc::io_error, TrF("cannot read {}", dir));
  std::sort(ours.begin(), ours.end());
  std::vector<std::string> deleted;
  if (keep == 0 || ours.size() <= keep) return deleted;
  for (std::size_t i = 0; i + keep < ours.size(); ++i) {
    if (fs::remove(ours[i], ec)) deleted.push_back(ours[i]);
  }
  return deleted;
}

core::Outcome<RestoreReport> RestoreStore(const std::string& from_file, const std::string& data_dir,
                                          const crypto::BoxKeyPair& key, core::Env& env) {
  std::error_code fs_ec;
  fs::create_directories(data_dir, fs_ec);
  auto lock = DataFolderLock::Acquire(data_dir);
  if (!lock) return Fail(lock.error());
  RestoreReport report;
  std::string snapshot;
  auto opened = core::OpenBackupFile(from_file, key, &snapshot);
  if (!opened) return opened.error();
  report.info = std::move(*opened);

  // Staged in a folder of its own inside the data folder, checked there.
  const fs::path staging = fs::path(data_dir) / "restoring";
  fs::remove_all(staging, fs_ec);
  fs::create_directories(staging, fs_ec);
  if (fs_ec) return Fail(core::errc::io_error, TrF("cannot create {}", staging.string()));
  struct Cleanup {
    fs::path dir;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup{staging};
  const std::string staged = StorePath(staging.string());
  {
    std::ofstream out(staged, std::ios::binary | std::ios::trunc);
    out.write(snapshot.data(), static_cast<std::streamsize>(snapshot.size()));
    out.flush();
    crypto::Wipe(snapshot);
    if (!out) return Fail(core::errc::disk_full, TrF("cannot write {}", staged));
  }
  const std::string live = StorePath(data_dir);
  const bool had_store = fs::exists(live);
  {
    auto check = OpenDb(staged, SQLITE_OPEN_READWRITE);
    if (!check) return check.error();
    if (!IntegrityOk(check->get(), "PRAGMA integrity_check"))
      return Fail(core::errc::integrity,
                  Tr("the backup's store does not pass its integrity check"));
  }
  {
    // A backup of an older store is migrated first, so that its receipt
    // floors are its own marks, not the ones carried forward below.
    auto migrated = OpenSqliteStore(staged, StoreOptions{});
    if (!migrated)
      return Fail(core::errc::store_failed, Tr("the backup's store could not be opened"));
  }
  {
    auto db = OpenDb(staged, SQLITE_OPEN_READWRITE);
    if (!db) return db.error();
    sqlite3* d = db->get();
    if (Meta(d, "main", "unit_id") != report.info.header.unit_id())
      return Fail(core::errc::integrity, Tr("the backup's store is not the unit its header names"));
    std::uint64_t old_generation = 0;
    if (had_store) {
      auto probe = OpenDb(live, SQLITE_OPEN_READONLY);
      if (probe && IntegrityOk(probe->get(), "PRAGMA quick_check")) {
        if (Meta(probe->get(), "main", "unit_id") != report.info.header.unit_id())
          return Fail(core::errc::wrong_unit,
                      Tr("the backup is of another unit than the store it would replace"));
        // Anyone who has the backup public key can seal a file: one naming
        // another unit root key than the store's is refused.
        const std::string live_root = Meta(probe->get(), "main", "unit_root_pk");
        if (!live_root.empty() && Meta(d, "main", "unit_root_pk") != live_root)
          return Fail(core::errc::wrong_unit,
                      Tr("the backup names another unit root key than the store it would replace"));
        old_generation = MetaU64(probe->get(), "main", "generation");
        report.carried_forward = true;
      }
    }
    report.devices = Marks(d, "main");
    if (report.carried_forward) {
      sqlite3_stmt* st = nullptr;
      if (sqlite3_prepare_v2(d, "ATTACH DATABASE ?1 AS old", -1, &st, nullptr) != SQLITE_OK)
        return Fail(core::errc::store_failed, Tr("the replaced store could not be read"));
      sqlite3_bind_text(st, 1, live.c_str(), -1, SQLITE_STATIC);
      const int rc = sqlite3_step(st);
      sqlite3_finalize(st);
      if (rc != SQLITE_DONE)
        return Fail(core::errc::store_failed, Tr("the replaced store could not be read"));
      for (auto& dev : report.devices) {
        for (const auto& before : Marks(d, "old"))
          if (before.device_id == dev.device_id) dev.mark_before = before.mark_in_backup;
      }
      const bool old_custody = MetaU64(d, "old", "schema_version") >= 6;
      if (auto r = Exec(d, std::string("BEGIN IMMEDIATE;") + kCarryForwardSql +
                               (old_custody ? kCarryCustodySql : "") + "COMMIT;");
          !r) {
        (void)Exec(d, "ROLLBACK");
        return r.error();
      }
      if (auto r = Exec(d, "DETACH DATABASE old"); !r) return r.error();
      // What each device must send again, for `device list` to follow.
      for (const auto& dev : report.devices) {
        if (dev.mark_before <= dev.mark_in_backup) continue;
        const std::string gap = fmt::format(
            "INSERT OR REPLACE INTO restore_gaps(device_id, from_seq, to_seq, since_ms) VALUES("
            "x'{}', {}, {}, {});",
            core::ToHex(dev.device_id), dev.mark_in_backup, dev.mark_before, env.NowMs());
        if (auto r = Exec(d, gap); !r) return r.error();
      }
    }
    report.new_generation = NewGeneration(report.info.header.generation(), old_generation);
    const std::string restored = "INSERT OR REPLACE INTO meta(key, value) VALUES('generation', '" +
                                 std::to_string(report.new_generation) + "'), ('restored_ms', '" +
                                 std::to_string(env.NowMs()) + "'), ('restored_backup_ms', '" +
                                 std::to_string(report.info.header.created_ms()) + "');";
    if (auto r = Exec(d, restored); !r) return r.error();
    if (auto r = Exec(d, "PRAGMA wal_checkpoint(TRUNCATE)"); !r) return r.error();
  }
  // The audit chain as the backup holds it must verify.
  auto audit = VerifyAudit(staging.string());
  if (!audit) return Fail(core::errc::store_failed, Tr("the backup's audit log could not be read"));
  if (!audit->intact())
    return Fail(core::errc::integrity, TrF("the backup's audit log is damaged: {}", audit->detail));
  report.audit_entries = audit->entries;

  // In place: the replaced store (with its WAL) is kept beside it.
  if (had_store) {
    report.replaced = live + ".before-restore-" + std::to_string(env.NowMs());
    for (const char* suffix : {"", "-wal", "-shm"}) {
      if (!fs::exists(live + suffix)) continue;
      fs::rename(live + suffix, report.replaced + suffix, fs_ec);
      if (fs_ec) return Fail(core::errc::io_error, TrF("cannot move {} aside", live + suffix));
    }
  }
  for (const char* suffix : {"-wal", "-shm"}) fs::remove(staged + suffix, fs_ec);
  fs::rename(staged, live, fs_ec);
  if (fs_ec) return Fail(core::errc::io_error, TrF("cannot put the restored store at {}", live));
  return report;
}

}  // namespace teduh::server
