// The server backup file (docs/SECURITY.md, "Backups"): one consistent
// snapshot of the server store, encrypted to the unit backup key so that a
// stolen backup reveals nothing, not even the open fields.
//
//   "TEDUHBK1" | u32 BE n | BackupHeader (n bytes, open) |
//   chunks: u32 BE m | secretstream chunk (m bytes) ... the last tagged FINAL |
//   BLAKE2b-256 of every byte before it (32 bytes)
//
// The file key (32 random bytes) is sealed to the backup public key
// (crypto_box_seal) in the header; each chunk is sealed under it with the
// BLAKE2b-256 of the header bytes as associated data, so a header cannot be
// moved onto other chunks. The trailing hash lets anyone check a copy for
// damage without the key (VerifyBackupFile); only the key opens it.
//
// The unit backup key pair is derived from the unit root key (BackupKeyPair):
// every admin device and every recovery kit of the unit holds it, the server
// never does.
//
// Thread safety: stateless and thread-safe.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "teduh/core/outcome.h"
#include "teduh/crypto/crypto.h"
#include "teduh/keys/v1/keys.pb.h"

namespace teduh::core {

inline constexpr std::string_view kBackupMagic = "TEDUHBK1";
inline constexpr std::uint32_t kBackupChunkBytes = 1u << 20;
inline constexpr std::size_t kMaxBackupHeaderBytes = 4096;

// The unit backup key pair, derived from the unit root secret key (64-byte
// Ed25519; its 32-byte seed is the master).
Outcome<crypto::BoxKeyPair> BackupKeyPair(const crypto::SecureBuffer& unit_root_sk);

// Seals `snapshot` to `header.backup_pk()` (the crypto fields of `header` are
// filled in here) and writes the file at `path`: a temporary file beside it,
// synced, then renamed, so a failure leaves no file. errc::disk_full or
// io_error when it cannot be written.
Outcome<void> WriteBackupFile(const std::filesystem::path& path,
                              teduh::keys::v1::BackupHeader header, std::string_view snapshot);

struct BackupFileInfo {
  teduh::keys::v1::BackupHeader header;
  std::uint64_t file_bytes = 0;
};

// Checks a backup file without the key: magic, header, every chunk's framing
// and the final hash. errc::integrity with what is wrong (truncated, altered,
// not a Teduh backup); errc::io_error if it cannot be read.
Outcome<BackupFileInfo> VerifyBackupFile(const std::filesystem::path& path);

// The same checks on a file's bytes (what the fuzz target drives).
Outcome<BackupFileInfo> VerifyBackupBytes(std::string_view file);
// The same as OpenBackupFile on a file's bytes.
Outcome<BackupFileInfo> OpenBackupBytes(std::string_view file, const crypto::BoxKeyPair& key,
                                        std::string* snapshot);

// Checks the file as VerifyBackupFile does, then opens it with `key`:
// errc::wrong_unit if it is sealed to another backup key, errc::integrity if
// any chunk fails or the stream ends early. `snapshot` receives the store
// bytes (the caller wipes them).
Outcome<BackupFileInfo> OpenBackupFile(const std::filesystem::path& path,
                                       const crypto::BoxKeyPair& key, std::string* snapshot);

// The unit root key names the backup public key to the server with a
// signature over BackupKeyMessage; an admin device prints it as a token
// ("TBK1-" and the hex of the key and signature) for `teduh-server
// backup-key`.
std::string BackupKeyMessage(std::string_view unit_id, std::string_view backup_pk);
std::string FormatBackupKeyToken(std::string_view backup_pk, std::string_view signature);
// errc::bad_value if `token` is not one (the key and signature are not checked here).
Outcome<std::pair<std::string, std::string>> ParseBackupKeyToken(std::string_view token);

// The backup secret key as text a person can copy: "TBS1-" and 17 groups of
// 4 hex digits (the key, then a 2-byte checksum). Parsing ignores spaces,
// dashes and case; a typing mistake is errc::bad_value naming the checksum.
std::string FormatBackupSecret(const crypto::SecureBuffer& secret_key);
Outcome<crypto::BoxKeyPair> ParseBackupSecret(std::string_view text);

}  // namespace teduh::core
