// Backups and restores of a server store (docs/SECURITY.md, "Backups";
// README, "Backups and restores").
//
// - SetBackupKey: the unit backup public key, named by the unit root key
//   (a token an admin device prints), kept in the store's meta.
// - BackupStore: one consistent snapshot while the server may be serving (a
//   read transaction of its own: SQLite's online backup API into memory, so
//   pushes go on), sealed to the backup key (core::WriteBackupFile).
// - RestoreStore: opens a backup with the backup key pair, checks the
//   snapshot (PRAGMA integrity_check, the audit chain), gives it a new
//   generation (devices then re-send what it lacks and pull from the start,
//   PROTOCOL §6), carries forward what must never go backwards from the store
//   it replaces when that one still reads (device marks, enrollments used,
//   devices enrolled or revoked since, key epochs, grants and retirements),
//   and only then puts it in place. The replaced store is kept beside it.
//   Refused while a server serves the folder (DataFolderLock).
//
// Thread safety: each call opens its own connections.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "teduh/core/backup_file.h"
#include "teduh/core/env.h"
#include "teduh/core/outcome.h"
#include "teduh/server/store.h"

namespace teduh::server {

// errc::bad_signature if the token's key is not signed by the unit root key
// (or the unit has none yet); errc::bad_value if it is not a token.
[[nodiscard]] core::Outcome<void> SetBackupKey(const std::string& data_dir, std::string_view token);

struct BackupReport {
  core::BackupFileInfo info;
  std::uint64_t store_bytes = 0;
  std::int64_t snapshot_ms = 0;  // how long the read transaction was held
  std::int64_t total_ms = 0;
};

// errc::key_missing if no backup key was set; nothing is written on failure.
[[nodiscard]] core::Outcome<BackupReport> BackupStore(const std::string& data_dir,
                                                      const std::string& to_file, core::Env& env);

// Scheduled backups into a folder: BackupFileName(now) names each
// ("teduh-20261204T183000-123Z.tbk", UTC, so names sort by time), and
// PruneBackups keeps the newest `keep` of the files so named (other files are
// never touched), returning the ones it deleted, oldest first.
std::string BackupFileName(std::int64_t ms);
[[nodiscard]] core::Outcome<std::vector<std::string>> PruneBackups(const std::string& dir,
                                                                   std::size_t keep);

struct RestoredDevice {
  Id device_id{};
  std::string user;
  std::uint64_t mark_in_backup = 0;  // the device's changes the backup holds (device_seq)
  std::uint64_t mark_before = 0;     // ... the replaced store held (0 if none was read)
};

struct RestoreReport {
  core::BackupFileInfo info;
  std::uint64_t new_generation = 0;
  std::string replaced;          // where the replaced store was kept ("" if there was none)
  bool carried_forward = false;  // from the replaced store (it read)
  std::uint64_t audit_entries = 0;
  std::vector<RestoredDevice> devices;
};

[[nodiscard]] core::Outcome<RestoreReport> RestoreStore(const std::string& from_file,
                                                        const std::string& data_dir,
                                                        const crypto::BoxKeyPair& key,
                                                        core::Env& env);

}  // namespace teduh::server
