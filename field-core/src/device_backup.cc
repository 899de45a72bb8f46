// The unit backup key on an admin device (docs/SECURITY.md, "Backups"): it
// is derived from the unit root key (core::BackupKeyPair), so it exists on
// every device and recovery kit that holds that key and nowhere else.
//
// Invariants:
//  1. The backup secret key lives only in guarded memory, and as text only
//     in the string returned to a caller that asked for it.
//  2. OpenBackup writes nothing: the snapshot is checked in memory
//     (sqlite3_deserialize) and wiped.
#include <sqlite3.h>

#include <cstring>

#include "teduh/core/backup_file.h"
#include "teduh/core/device.h"
#include "teduh/core/i18n.h"
#include "teduh/core/recovery_kit.h"
#include "teduh/core/sync_client.h"
#include "teduh/core/vault.h"

namespace teduh::core {

Outcome<BackupKeyView> Device::BackupKey(bool with_secret) {
  std::lock_guard g(mu_);
  if (auto r = RequireRootAdminLocked("use the unit backup key"); !r) return r.error();
  auto pair = BackupKeyPair(vault_->unit_root_sk());
  if (!pair) return pair.error();
  const std::string pk(reinterpret_cast<const char*>(pair->public_key.data()),
                       pair->public_key.size());
  const std::string message = BackupKeyMessage(InfoLocked().unit_id, pk);
  auto sig = crypto::Sign(
      vault_->unit_root_sk(),
      crypto::ByteView(reinterpret_cast<const std::uint8_t*>(message.data()), message.size()));
  if (!sig) return Fail(sig.error());
  BackupKeyView view;
  view.token = FormatBackupKeyToken(
      pk, std::string_view(reinterpret_cast<const char*>(sig->data()), sig->size()));
  if (with_secret) view.secret = FormatBackupSecret(pair->secret_key);
  return view;
}

Outcome<RecoveryKitView> Device::MakeRecoveryKit(unsigned shares, unsigned threshold) {
  RecoveryKitView kit;
  {
    std::lock_guard g(mu_);
    if (auto r = RequireRootAdminLocked("make a recovery kit"); !r) return r.error();
    auto made = MakeRecoveryShares(vault_->unit_root_sk(), shares, threshold);
    if (!made) return made.error();
    kit.shares = std::move(*made);
  }
  kit.threshold = threshold;
  // The kit rebuilds the root key, which alone opens no case: the server
  // must hold every class key epoch for recovery before the kit is handed out.
  teduh::sync::v1::Welcome welcome;
  auto client = ConnectAndAuthenticate(&welcome);
  if (!client) return client.error();
  teduh::sync::v1::AckKeys ack;
  {
    std::lock_guard g(mu_);
    if (auto r = CheckOpen(); !r) return r.error();
    if (auto r = AcceptWelcome(welcome, nullptr); !r) return r.error();
    auto escrow = EscrowMissingLocked(welcome);
    if (!escrow) return escrow.error();
    kit.escrowed = static_cast<std::size_t>(welcome.escrow_size()) + escrow->size();
    for (auto& e : *escrow) *ack.add_escrow() = std::move(e);
    kit.unit_name = InfoLocked().unit_name;
    kit.made_ms = welcome.server_time_ms();
  }
  ack.mutable_recovery_kit()->set_shares(shares);
  ack.mutable_recovery_kit()->set_threshold(threshold);
  auto sent = (*client)->AckKeys(ack);
  (*client)->Close();
  if (!sent) return sent.error();
  return kit;
}

namespace {

std::uint64_t CountRows(sqlite3* db, const char* sql) {
  sqlite3_stmt* st = nullptr;
  std::uint64_t n = 0;
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    n = static_cast<std::uint64_t>(sqlite3_column_int64(st, 0));
  sqlite3_finalize(st);
  return n;
}

}  // namespace

Outcome<BackupCheck> Device::OpenBackup(const std::filesystem::path& file) {
  std::string snapshot;
  BackupFileInfo info;
  std::string unit_id;
  std::string root_pk;  // the unit root key this device pinned
  {
    std::lock_guard g(mu_);
    if (auto r = RequireRootAdminLocked("use the unit backup key"); !r) return r.error();
    auto pair = BackupKeyPair(vault_->unit_root_sk());
    if (!pair) return pair.error();
    auto opened = OpenBackupFile(file, *pair, &snapshot);
    if (!opened) return opened.error();
    info = std::move(*opened);
    unit_id = InfoLocked().unit_id;
    if (auto pinned = vault_->pinned_unit_root_pk()) root_pk.assign(pinned->begin(), pinned->end());
  }
  struct Wiper {
    std::string& s;
    ~Wiper() { crypto::Wipe(s); }
  } wiper{snapshot};
  sqlite3* raw = nullptr;
  if (sqlite3_open_v2(":memory:", &raw, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    sqlite3_close_v2(raw);
    return Fail(errc::store_failed, Tr("the backup's store could not be opened"));
  }
  std::unique_ptr<sqlite3, decltype(&sqlite3_close_v2)> db(raw, &sqlite3_close_v2);
  auto* buf = static_cast<unsigned char*>(sqlite3_malloc64(snapshot.size()));
  if (!buf) return Fail(errc::store_failed, Tr("the backup's store could not be opened"));
  std::memcpy(buf, snapshot.data(), snapshot.size());
  // The snapshot's header says WAL (bytes 18 and 19 are 2), which a
  // deserialized database cannot use: read it as a rollback-journal file.
  if (snapshot.size() >= 100) buf[18] = buf[19] = 1;
  // SQLite owns and frees the buffer from here; read-only.
  if (sqlite3_deserialize(raw, "main", buf, static_cast<sqlite3_int64>(snapshot.size()),
                          static_cast<sqlite3_int64>(snapshot.size()),
                          SQLITE_DESERIALIZE_FREEONCLOSE | SQLITE_DESERIALIZE_READONLY) !=
      SQLITE_OK)
    return Fail(errc::integrity, Tr("the backup's store could not be opened"));
  sqlite3_stmt* st = nullptr;
  bool ok = false;
  if (sqlite3_prepare_v2(raw, "PRAGMA integrity_check", -1, &st, nullptr) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW) {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    ok = text && std::string_view(text) == "ok";
  }
  sqlite3_finalize(st);
  if (!ok) return Fail(errc::integrity, Tr("the backup's store does not pass its integrity check"));
  BackupCheck check;
  const auto& h = info.header;
  check.unit_id = h.unit_id();
  check.generation = h.generation();
  check.created_ms = h.created_ms();
  check.audit_entries = h.audit_index();
  check.store_bytes = h.plain_bytes();
  check.devices = CountRows(raw, "SELECT COUNT(*) FROM devices");
  check.records = CountRows(raw, "SELECT COUNT(*) FROM records");
  check.values = CountRows(raw, "SELECT COUNT(*) FROM fields");
  if (check.unit_id != unit_id) return Fail(errc::wrong_unit, Tr("the backup is of another unit"));
  // Anyone with the backup public key can seal a file; only a store that
  // names the unit root key this device pinned is the unit's.
  sqlite3_stmt* rk = nullptr;
  std::string stored_root;
  if (sqlite3_prepare_v2(raw, "SELECT value FROM meta WHERE key = 'unit_root_pk'", -1, &rk,
                         nullptr) == SQLITE_OK &&
      sqlite3_step(rk) == SQLITE_ROW) {
    const void* p = sqlite3_column_blob(rk, 0);
    stored_root.assign(static_cast<const char*>(p ? p : ""),
                       static_cast<std::size_t>(sqlite3_column_bytes(rk, 0)));
  }
  sqlite3_finalize(rk);
  if (stored_root != root_pk)
    return Fail(errc::wrong_unit, Tr("the backup names another unit root key than this unit's"));
  return check;
}

Device::UnlockRisk Device::UnlockRiskOf(const std::filesystem::path& home) {
  UnlockRisk risk;
  const auto vault = home / "vault";
  if (auto failed = Vault::FailedUnlocks(vault)) risk.failed = *failed;
  if (auto limit = Vault::MaxFailedUnlocks(vault, 0)) risk.limit = *limit;
  // The outbox's state is a plain column: counted without the key.
  sqlite3* raw = nullptr;
  const std::string uri = "file:" + (home / "store.db").string() + "?mode=ro";
  if (sqlite3_open_v2(uri.c_str(), &raw, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, nullptr) ==
      SQLITE_OK) {
    sqlite3_busy_timeout(raw, 1000);
    risk.unsent = CountRows(raw, "SELECT COUNT(*) FROM outbox WHERE state = 0");
  }
  sqlite3_close_v2(raw);
  return risk;
}

std::string Device::UnlockRisk::Warning() const {
  if (limit == 0 || unsent == 0 || failed + 3 < limit) return {};
  return TrF(
      "Warning: {} wrong passphrase(s) more and this device erases its keys and its {} unsent "
      "edit(s). If you are not sure of the passphrase, stop and ask your admin.",
      limit - failed, unsent);
}

}  // namespace teduh::core
