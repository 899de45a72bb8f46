// The vault: a device's secrets at rest (ARCHITECTURE §3, §4).
//
// `<home>/vault` is a teduh.keys.v1.VaultFile: Argon2id parameters and salt in
// the clear, and the secrets encrypted (XChaCha20-Poly1305, AD
// "teduh-vault-v1") under a key derived from the officer's passphrase. The
// plaintext is not protobuf but a sequence of fixed-size typed entries parsed
// straight into crypto::SecureBuffer (layout in vault.cc), so no secret is
// ever copied into an ordinary heap string.
//
// Every change of the secrets rewrites the file atomically (temp file in the
// same folder, fsync, rename, fsync of the folder): after a crash the file is
// either the old vault or the new one.
//
// Failed unlocks are counted in the file (`failed_unlocks`); with
// `max_failed_unlocks` > 0 the vault is destroyed when the count reaches it.
// A wrong passphrase changes nothing but that counter.
//
// Thread safety: a Vault is not thread-safe; its owner (Device) serialises use.
// Secrets returned by pointer stay valid until the next mutation or Lock().
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "teduh/core/error.h"
#include "teduh/core/outcome.h"
#include "teduh/crypto/crypto.h"
#include "teduh/options.pb.h"

namespace teduh::core {

enum class KdfMode {
  kCalibrated,   // CalibrateKdf(kdf_target): the default, ~0.5 s on this machine
  kInteractive,  // exactly crypto::InteractiveKdfParams(): the floor, for tests
};

struct VaultOptions {
  KdfMode kdf = KdfMode::kCalibrated;
  std::chrono::milliseconds kdf_target{500};
  // Consecutive failed unlocks after which the vault is erased; 0 = never.
  std::uint32_t max_failed_unlocks = 0;
};

// The KDF mode from the environment: TEDUH_KDF=interactive selects the
// INTERACTIVE floor (tests, slow machines); anything else, or unset, calibrates.
KdfMode KdfModeFromEnv();

// Everything a new vault holds. Class keys may be added later (grants).
struct VaultSecrets {
  crypto::SecureBuffer storage_key;     // 32 B: encrypts the local store's open values
  crypto::SecureBuffer device_sign_sk;  // 64 B Ed25519
  crypto::SecureBuffer device_box_sk;   // 32 B X25519
  crypto::SecureBuffer unit_root_sk;    // 64 B Ed25519; bootstrap admin only, else empty
  std::array<std::uint8_t, 32> pinned_unit_root_pk{};  // authenticated, not secret
  bool has_pinned_unit_root_pk = false;
  // (class, epoch) -> 32 B class key.
  std::map<std::pair<teduh::AccessClass, std::uint32_t>, crypto::SecureBuffer> class_keys;
};

class Vault {
 public:
  ~Vault();
  Vault(const Vault&) = delete;
  Vault& operator=(const Vault&) = delete;

  // True if `path` holds a vault file.
  static bool Exists(const std::filesystem::path& path);

  // Creates the vault file at `path` holding `secrets`. errc::vault_exists if
  // a file is already there; errc::io_error / disk_full if it cannot be
  // written (then no file is left behind). The passphrase must not be empty
  // (errc::invalid_argument).
  static Outcome<std::unique_ptr<Vault>> Create(const std::filesystem::path& path,
                                                const crypto::SecureBuffer& passphrase,
                                                VaultSecrets secrets, const VaultOptions& options);

  // Opens the vault. errc::vault_missing if there is no file;
  // errc::wrong_passphrase (the failure is counted, nothing else changes);
  // errc::vault_wiped when this failure reached the vault's limit (the file
  // and its copy are erased); errc::vault_corrupt if both the file and its
  // copy are damaged (never counted as a failure, never erased). A damaged
  // file with a sound copy opens from the copy and is rewritten. The limit
  // is the one the vault holds (set at Create); `options.max_failed_unlocks`
  // is read only for a vault of the first format.
  static Outcome<std::unique_ptr<Vault>> Unlock(const std::filesystem::path& path,
                                                const crypto::SecureBuffer& passphrase,
                                                const VaultOptions& options);

  // Consecutive failed unlocks recorded in the file (readable without the passphrase).
  static Outcome<std::uint32_t> FailedUnlocks(const std::filesystem::path& path);
  // The failed unlocks that erase the vault (0 = never), as the file holds it
  // (readable without the passphrase); `legacy` for a format 1 vault.
  static Outcome<std::uint32_t> MaxFailedUnlocks(const std::filesystem::path& path,
                                                 std::uint32_t legacy);
  std::uint32_t max_failed_unlocks() const { return max_failed_unlocks_; }

  // Secrets. Null/empty when absent or after Lock().
  const crypto::SecureBuffer& storage_key() const { return secrets_.storage_key; }
  const crypto::SecureBuffer& device_sign_sk() const { return secrets_.device_sign_sk; }
  const crypto::SecureBuffer& device_box_sk() const { return secrets_.device_box_sk; }
  const crypto::SecureBuffer& unit_root_sk() const { return secrets_.unit_root_sk; }
  std::optional<std::array<std::uint8_t, 32>> pinned_unit_root_pk() const;
  const crypto::SecureBuffer* class_key(teduh::AccessClass key_class, std::uint32_t epoch) const;
  // Highest epoch held for a class, or nullopt.
  std::optional<std::uint32_t> latest_epoch(teduh::AccessClass key_class) const;
  // Every epoch held for a class, oldest first.
  std::vector<std::uint32_t> epochs(teduh::AccessClass key_class) const;
  bool locked() const { return kek_.empty(); }

  // Adds class keys (an existing (class, epoch) is kept, not replaced) and
  // rewrites the file. On failure the vault in memory and on disk is unchanged.
  Outcome<void> AddClassKeys(
      std::map<std::pair<teduh::AccessClass, std::uint32_t>, crypto::SecureBuffer> keys);
  // Deletes class keys of retired epochs (wiped in memory, gone from the file).
  Outcome<void> RemoveClassKeys(
      const std::vector<std::pair<teduh::AccessClass, std::uint32_t>>& keys);

  // Saves the unit root key (an admin device handed it, or rebuilt from a
  // recovery kit), as AddClassKeys.
  Outcome<void> SetUnitRootKey(crypto::SecureBuffer unit_root_sk);

  // Re-wraps the same secrets under a key derived from a new passphrase (new
  // salt, parameters as at Create). On failure the old passphrase still opens
  // the vault, in memory and on disk.
  Outcome<void> ChangePassphrase(const crypto::SecureBuffer& passphrase,
                                 const VaultOptions& options);

  // Wipes every secret from memory; the object can no longer be used.
  void Lock();

  // Erases a vault file and its copy: overwritten with random bytes, synced, removed.
  static void Erase(const std::filesystem::path& path);
  // Erases one file so (a local store too).
  static void EraseFile(const std::filesystem::path& path);

 private:
  Outcome<void> UpdateClassKeys(
      std::map<std::pair<teduh::AccessClass, std::uint32_t>, crypto::SecureBuffer> add,
      const std::vector<std::pair<teduh::AccessClass, std::uint32_t>>& remove,
      crypto::SecureBuffer unit_root_sk = {});
  Vault(std::filesystem::path path, crypto::KdfParams params, crypto::SecureBuffer kek,
        VaultSecrets secrets);
  Outcome<void> Write(const VaultSecrets& secrets) const;

  std::filesystem::path path_;
  crypto::KdfParams params_;
  crypto::SecureBuffer kek_;              // derived key, kept so rewrites need no passphrase
  std::uint32_t max_failed_unlocks_ = 0;  // written into the file, bound to its ciphertext
  VaultSecrets secrets_;
};

// Writes `bytes` to `path` atomically (temp in the same folder, fsync, rename,
// fsync folder). errc::disk_full / io_error; on failure `path` is unchanged.
error_code WriteFileAtomically(const std::filesystem::path& path, std::string_view bytes);

}  // namespace teduh::core
