// Design notes — the vault file (see vault.h for the contract).
//
// File: teduh.keys.v1.VaultFile {format=2, salt, opslimit, memlimit, alg,
// nonce, ciphertext, failed_unlocks, max_failed_unlocks, checksum}.
// ciphertext = XChaCha20-Poly1305(KEK, plaintext, AD = "teduh-vault-v2" ||
// u32 BE max_failed_unlocks) with KEK = Argon2id(passphrase, salt, opslimit,
// memlimit). checksum = BLAKE2b-256 of the file with failed_unlocks 0 and no
// checksum. Every write also writes a second copy (`vault.copy`), both
// atomically. A file whose checksum fails is damaged, never a wrong
// passphrase: the copy is used, and the damaged file is rewritten from it
// after the next unlock. Format 1 (AD "teduh-vault-v1", no checksum, the
// limit in device.json) is read and rewritten as format 2 at its first unlock.
//
// Plaintext: a sequence of entries, each an 8-byte header followed by a body
// whose size is fixed by the entry type:
//
//   u8 type | u8 class | u16 zero | u32 BE epoch | body
//
//   type 1  storage key             32 B   (class, epoch zero)
//   type 2  device Ed25519 secret   64 B
//   type 3  device X25519 secret    32 B
//   type 4  unit root Ed25519 sk    64 B   (bootstrap admin only)
//   type 5  class key K[class][ep]  32 B   (class, epoch set)
//   type 6  pinned unit root pk     32 B   (public, but authenticated here so
//                                           nobody with disk access swaps it)
//
// An unknown type, a short body or a duplicate singleton is vault_corrupt.
//
// Invariants:
//  1. Secrets exist in memory only inside crypto::SecureBuffer (the decrypted
//     plaintext too); every std::string built here holds ciphertext only.
//  2. The file on disk is always a complete VaultFile: every write goes
//     through WriteFileAtomically (temp + fsync + rename + dir fsync).
//  3. A wrong passphrase changes only `failed_unlocks` (+1, in both copies).
//     The salt, the parameters and the ciphertext stay byte-identical.
//     Damage (a checksum that fails in a file) never counts and never erases.
//  4. A successful unlock with failed_unlocks > 0 resets it to 0 (best
//     effort: a failure there never blocks the officer; the next unlock retries).
//  5. KDF parameters below crypto::KdfParamsAcceptable are refused on open
//     (vault_corrupt), never silently used.
//  6. After Lock() every secret buffer is empty (wiped by SecureBuffer).
#include "teduh/core/vault.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "teduh/core/i18n.h"
#include "teduh/core/ids.h"
#include "teduh/keys/v1/keys.pb.h"

namespace teduh::core {
namespace {

constexpr std::string_view kVaultAdV1 = "teduh-vault-v1";
constexpr std::uint32_t kVaultFormat = 2;
constexpr std::size_t kHeaderBytes = 8;
constexpr std::size_t kMaxVaultFileBytes = 1u << 20;

enum EntryType : std::uint8_t {
  kStorageKey = 1,
  kDeviceSignSk = 2,
  kDeviceBoxSk = 3,
  kUnitRootSk = 4,
  kClassKey = 5,
  kPinnedRootPk = 6,
};

std::size_t BodySize(std::uint8_t type) {
  switch (type) {
    case kStorageKey:
    case kDeviceBoxSk:
    case kClassKey:
    case kPinnedRootPk:
      return 32;
    case kDeviceSignSk:
    case kUnitRootSk:
      return 64;
    default:
      return 0;
  }
}

crypto::ByteView View(std::string_view s) { return AsSpan(s); }

void PutHeader(std::uint8_t* p, std::uint8_t type, std::uint8_t cls, std::uint32_t epoch) {
  p[0] = type;
  p[1] = cls;
  p[2] = 0;
  p[3] = 0;
  p[4] = static_cast<std::uint8_t>(epoch >> 24);
  p[5] = static_cast<std::uint8_t>(epoch >> 16);
  p[6] = static_cast<std::uint8_t>(epoch >> 8);
  p[7] = static_cast<std::uint8_t>(epoch);
}

// Serialises the secrets into a guarded buffer (invariant 1).
Outcome<crypto::SecureBuffer> Serialize(const VaultSecrets& s) {
  struct Item {
    std::uint8_t type;
    std::uint8_t cls;
    std::uint32_t epoch;
    crypto::ByteView body;
  };
  std::vector<Item> items;
  auto add = [&](std::uint8_t type, const crypto::SecureBuffer& b) {
    if (!b.empty()) items.push_back({type, 0, 0, b.view()});
  };
  add(kStorageKey, s.storage_key);
  add(kDeviceSignSk, s.device_sign_sk);
  add(kDeviceBoxSk, s.device_box_sk);
  add(kUnitRootSk, s.unit_root_sk);
  if (s.has_pinned_unit_root_pk) {
    items.push_back({kPinnedRootPk, 0, 0, {s.pinned_unit_root_pk.data(), 32}});
  }
  for (const auto& [k, v] : s.class_keys) {
    items.push_back({kClassKey, static_cast<std::uint8_t>(k.first), k.second, v.view()});
  }
  std::size_t total = 0;
  for (const auto& it : items) {
    if (it.body.size() != BodySize(it.type)) {
      return Fail(errc::invalid_argument, Tr("a vault secret has the wrong size"));
    }
    total += kHeaderBytes + it.body.size();
  }
  auto buf = crypto::SecureBuffer::Allocate(total);
  if (!buf) return Fail(buf.error(), Tr("cannot allocate guarded memory for the vault"));
  std::uint8_t* p = buf->data();
  for (const auto& it : items) {
    PutHeader(p, it.type, it.cls, it.epoch);
    std::memcpy(p + kHeaderBytes, it.body.data(), it.body.size());
    p += kHeaderBytes + it.body.size();
  }
  return std::move(*buf);
}

Outcome<VaultSecrets> Parse(const crypto::SecureBuffer& plain) {
  VaultSecrets s;
  const std::uint8_t* p = plain.data();
  std::size_t left = plain.size();
  auto corrupt = [] { return Fail(errc::vault_corrupt, Tr("the vault file is damaged")); };
  while (left > 0) {
    if (left < kHeaderBytes) return corrupt();
    std::uint8_t type = p[0];
    std::uint8_t cls = p[1];
    std::uint32_t epoch = (std::uint32_t{p[4]} << 24) | (std::uint32_t{p[5]} << 16) |
                          (std::uint32_t{p[6]} << 8) | std::uint32_t{p[7]};
    std::size_t n = BodySize(type);
    if (n == 0 || left < kHeaderBytes + n) return corrupt();
    crypto::ByteView body{p + kHeaderBytes, n};
    auto copy = crypto::SecureBuffer::CopyOf(body);
    if (!copy) return Fail(copy.error(), Tr("cannot allocate guarded memory for the vault"));
    auto set_once = [&](crypto::SecureBuffer& slot) -> bool {
      if (!slot.empty()) return false;
      slot = std::move(*copy);
      return true;
    };
    switch (type) {
      case kStorageKey:
        if (!set_once(s.storage_key)) return corrupt();
        break;
      case kDeviceSignSk:
        if (!set_once(s.device_sign_sk)) return corrupt();
        break;
      case kDeviceBoxSk:
        if (!set_once(s.device_box_sk)) return corrupt();
        break;
      case kUnitRootSk:
        if (!set_once(s.unit_root_sk)) return corrupt();
        break;
      case kPinnedRootPk:
        if (s.has_pinned_unit_root_pk) return corrupt();
        std::memcpy(s.pinned_unit_root_pk.data(), body.data(), 32);
        s.has_pinned_unit_root_pk = true;
        break;
      case kClassKey: {
        if (cls != teduh::ACCESS_CLASS_GENERAL && cls != teduh::ACCESS_CLASS_CLINICAL) {
          return corrupt();
        }
        auto key = std::make_pair(static_cast<teduh::AccessClass>(cls), epoch);
        if (!s.class_keys.emplace(key, std::move(*copy)).second) return corrupt();
        break;
      }
      default:
        return corrupt();
    }
    p += kHeaderBytes + n;
    left -= kHeaderBytes + n;
  }
  return s;
}

std::filesystem::path CopyPath(const std::filesystem::path& path) {
  std::filesystem::path copy = path;
  copy += ".copy";
  return copy;
}

// BLAKE2b-256 of `file` with failed_unlocks 0 and no checksum.
std::string ChecksumOf(const teduh::keys::v1::VaultFile& file) {
  teduh::keys::v1::VaultFile c = file;
  c.set_failed_unlocks(0);
  c.clear_checksum();
  const std::string bytes = c.SerializeAsString();
  const auto h = crypto::Hash(View(bytes));
  return std::string(reinterpret_cast<const char*>(h.data()), h.size());
}

// The associated data the ciphertext is bound to.
std::string AdOf(const teduh::keys::v1::VaultFile& file) {
  if (file.format() == 1) return std::string(kVaultAdV1);
  std::string ad = "teduh-vault-v2";
  const std::uint32_t n = file.max_failed_unlocks();
  for (int shift = 24; shift >= 0; shift -= 8) ad.push_back(static_cast<char>(n >> shift));
  return ad;
}

// One file: errc::vault_missing, io_error, or vault_corrupt when it does not
// parse or its checksum fails (damage, never a wrong passphrase).
Outcome<teduh::keys::v1::VaultFile> ReadOneVaultFile(const std::filesystem::path& path) {
  std::error_code fs_ec;
  if (!std::filesystem::exists(path, fs_ec)) {
    return Fail(errc::vault_missing, Tr("no device is enrolled in this home folder"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return Fail(errc::io_error, Tr("cannot read the vault file"));
  std::string bytes;
  bytes.resize(kMaxVaultFileBytes + 1);
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  bytes.resize(static_cast<std::size_t>(in.gcount()));
  if (bytes.size() > kMaxVaultFileBytes)
    return Fail(errc::vault_corrupt, Tr("the vault file is too large"));
  teduh::keys::v1::VaultFile file;
  if (!file.ParseFromString(bytes) || (file.format() != 1 && file.format() != kVaultFormat) ||
      file.salt().size() != crypto::kKdfSaltBytes ||
      file.nonce().size() != crypto::kAeadNonceBytes ||
      file.ciphertext().size() < crypto::kAeadTagBytes ||
      (file.format() == kVaultFormat && file.checksum() != ChecksumOf(file))) {
    return Fail(errc::vault_corrupt, Tr("the vault file is damaged"));
  }
  return file;
}

// The vault file, or its copy when it is damaged or gone (`*from_copy`
// says so). Failed unlocks are the higher count of the two.
Outcome<teduh::keys::v1::VaultFile> ReadVaultFile(const std::filesystem::path& path,
                                                  bool* from_copy = nullptr,
                                                  bool* copy_sound = nullptr) {
  if (from_copy) *from_copy = false;
  auto main = ReadOneVaultFile(path);
  auto copy = ReadOneVaultFile(CopyPath(path));
  if (copy_sound) *copy_sound = static_cast<bool>(copy);
  if (main) {
    if (copy && copy->failed_unlocks() > main->failed_unlocks())
      main->set_failed_unlocks(copy->failed_unlocks());
    return main;
  }
  if (main.error().code == errc::vault_missing && !copy) return main.error();
  if (!copy) {
    if (copy.error().code == errc::vault_missing) return main.error();
    return Fail(errc::vault_corrupt,
                Tr("the vault file and its copy are damaged: this is not a wrong passphrase, and "
                   "nothing was erased; restore the device folder from a backup or enroll again"));
  }
  if (from_copy) *from_copy = true;
  return copy;
}

crypto::KdfParams ParamsOf(const teduh::keys::v1::VaultFile& file) {
  crypto::KdfParams p;
  p.opslimit = file.opslimit();
  p.memlimit = file.memlimit();
  p.alg = file.alg();
  std::memcpy(p.salt.data(), file.salt().data(), crypto::kKdfSaltBytes);
  return p;
}

crypto::Bytes SealedBytes(const teduh::keys::v1::VaultFile& file) {
  crypto::Bytes sealed(file.nonce().begin(), file.nonce().end());
  sealed.insert(sealed.end(), file.ciphertext().begin(), file.ciphertext().end());
  return sealed;
}

error_code ErrnoToError(int e) {
  return make_error_code((e == ENOSPC || e == EDQUOT) ? errc::disk_full : errc::io_error);
}

void FsyncDir(const std::filesystem::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

KdfMode KdfModeFromEnv() {
  const char* v = std::getenv("TEDUH_KDF");
  if (v != nullptr && std::string_view(v) == "interactive") return KdfMode::kInteractive;
  return KdfMode::kCalibrated;
}

error_code WriteFileAtomically(const std::filesystem::path& path, std::string_view bytes) {
  auto rnd = crypto::RandomArray<6>();
  std::filesystem::path tmp = path;
  tmp += ".tmp-" + ToHex(rnd);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoToError(errno);
  const char* p = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return ErrnoToError(e);
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return ErrnoToError(e);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return ErrnoToError(e);
  }
  FsyncDir(path.parent_path());
  return {};
}

bool Vault::Exists(const std::filesystem::path& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec) ||
         std::filesystem::is_regular_file(CopyPath(path), ec);
}

void Vault::Erase(const std::filesystem::path& path) {
  EraseFile(path);
  std::error_code ec;
  if (std::filesystem::exists(CopyPath(path), ec)) EraseFile(CopyPath(path));
}

void Vault::EraseFile(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    struct stat st {};
    if (::fstat(fd, &st) == 0 && st.st_size > 0) {
      // In 1 MiB pieces: a store may be far larger than memory should hold.
      std::vector<std::uint8_t> noise(
          std::min<std::size_t>(static_cast<std::size_t>(st.st_size), std::size_t{1} << 20));
      std::size_t left = static_cast<std::size_t>(st.st_size);
      bool failed = false;
      while (left > 0 && !failed) {
        const std::size_t piece = std::min(left, noise.size());
        crypto::RandomBytes(std::span(noise.data(), piece));
        std::size_t off = 0;
        while (off < piece) {
          ssize_t n = ::write(fd, noise.data() + off, piece - off);
          if (n <= 0) {
            failed = true;
            break;
          }
          off += static_cast<std::size_t>(n);
        }
        left -= piece;
      }
      ::fsync(fd);
    }
    ::close(fd);
  }
  ::unlink(path.c_str());
  FsyncDir(path.parent_path());
}

Vault::Vault(std::filesystem::path path, crypto::KdfParams params, crypto::SecureBuffer kek,
             VaultSecrets secrets)
    : path_(std::move(path)), params_(params), kek_(std::move(kek)), secrets_(std::move(secrets)) {}

Vault::~Vault() { Lock(); }

void Vault::Lock() {
  kek_.Reset();
  secrets_.storage_key.Reset();
  secrets_.device_sign_sk.Reset();
  secrets_.device_box_sk.Reset();
  secrets_.unit_root_sk.Reset();
  secrets_.class_keys.clear();  // each SecureBuffer wipes itself
}

std::optional<std::array<std::uint8_t, 32>> Vault::pinned_unit_root_pk() const {
  if (!secrets_.has_pinned_unit_root_pk) return std::nullopt;
  return secrets_.pinned_unit_root_pk;
}

const crypto::SecureBuffer* Vault::class_key(teduh::AccessClass key_class,
                                             std::uint32_t epoch) const {
  if (key_class == teduh::ACCESS_CLASS_UNSPECIFIED) key_class = teduh::ACCESS_CLASS_GENERAL;
  auto it = secrets_.class_keys.find({key_class, epoch});
  return it == secrets_.class_keys.end() ? nullptr : &it->second;
}

std::optional<std::uint32_t> Vault::latest_epoch(teduh::AccessClass key_class) const {
  if (key_class == teduh::ACCESS_CLASS_UNSPECIFIED) key_class = teduh::ACCESS_CLASS_GENERAL;
  std::optional<std::uint32_t> best;
  for (const auto& [k, v] : secrets_.class_keys) {
    if (k.first == key_class && (!best || k.second > *best)) best = k.second;
  }
  return best;
}

std::vector<std::uint32_t> Vault::epochs(teduh::AccessClass key_class) const {
  if (key_class == teduh::ACCESS_CLASS_UNSPECIFIED) key_class = teduh::ACCESS_CLASS_GENERAL;
  std::vector<std::uint32_t> out;
  for (const auto& [k, v] : secrets_.class_keys)
    if (k.first == key_class) out.push_back(k.second);
  std::sort(out.begin(), out.end());
  return out;
}

Outcome<void> Vault::Write(const VaultSecrets& secrets) const {
  auto plain = Serialize(secrets);
  if (!plain) return plain.error();
  teduh::keys::v1::VaultFile file;
  file.set_format(kVaultFormat);
  file.set_max_failed_unlocks(max_failed_unlocks_);
  auto sealed = crypto::AeadSeal(kek_, plain->view(), View(AdOf(file)));
  if (!sealed) return Fail(sealed.error(), Tr("cannot encrypt the vault"));
  file.set_salt(params_.salt.data(), params_.salt.size());
  file.set_opslimit(params_.opslimit);
  file.set_memlimit(params_.memlimit);
  file.set_alg(params_.alg);
  file.set_nonce(sealed->data(), crypto::kAeadNonceBytes);
  file.set_ciphertext(sealed->data() + crypto::kAeadNonceBytes,
                      sealed->size() - crypto::kAeadNonceBytes);
  file.set_failed_unlocks(0);
  file.set_checksum(ChecksumOf(file));
  // The file first, then its copy: a crash between them leaves the file
  // under the newest passphrase (it is read first) and the copy one step
  // behind.
  for (const auto& target : {path_, CopyPath(path_)}) {
    if (auto ec = WriteFileAtomically(target, file.SerializeAsString())) {
      return Fail(ec, ec == errc::disk_full
                          ? Tr("no space left to save the vault; nothing was changed")
                          : Tr("cannot write the vault file; nothing was changed"));
    }
  }
  return {};
}

Outcome<std::unique_ptr<Vault>> Vault::Create(const std::filesystem::path& path,
                                              const crypto::SecureBuffer& passphrase,
                                              VaultSecrets secrets, const VaultOptions& options) {
  if (Exists(path)) return Fail(errc::vault_exists, Tr("this home folder already holds a device"));
  if (passphrase.empty())
    return Fail(errc::invalid_argument, Tr("the passphrase must not be empty"));
  crypto::KdfParams params = options.kdf == KdfMode::kInteractive
                                 ? crypto::InteractiveKdfParams()
                                 : crypto::CalibrateKdf(options.kdf_target);
  if (!crypto::KdfParamsAcceptable(params)) params = crypto::InteractiveKdfParams();
  auto kek = crypto::DeriveKey(passphrase, params);
  if (!kek) return Fail(kek.error(), Tr("cannot derive the vault key (not enough memory?)"));
  std::unique_ptr<Vault> v(new Vault(path, params, std::move(*kek), std::move(secrets)));
  v->max_failed_unlocks_ = options.max_failed_unlocks;
  if (auto w = v->Write(v->secrets_); !w) {
    std::error_code ec;
    std::filesystem::remove(CopyPath(path), ec);
    return w.error();
  }
  return v;
}

Outcome<void> Vault::ChangePassphrase(const crypto::SecureBuffer& passphrase,
                                      const VaultOptions& options) {
  if (locked()) return Fail(errc::invalid_argument, Tr("the vault is locked"));
  if (passphrase.empty())
    return Fail(errc::invalid_argument, Tr("the passphrase must not be empty"));
  crypto::KdfParams params = options.kdf == KdfMode::kInteractive
                                 ? crypto::InteractiveKdfParams()  // with a fresh salt
                                 : crypto::CalibrateKdf(options.kdf_target);
  if (!crypto::KdfParamsAcceptable(params)) params = crypto::InteractiveKdfParams();
  auto kek = crypto::DeriveKey(passphrase, params);
  if (!kek) return Fail(kek.error(), Tr("cannot derive the vault key (not enough memory?)"));
  // Only the wrapping changes: the same secrets under the new key. If the
  // file cannot be written, the old passphrase stays valid (memory and disk).
  std::swap(params_, params);
  std::swap(kek_, *kek);
  if (auto w = Write(secrets_); !w) {
    std::swap(params_, params);
    std::swap(kek_, *kek);
    return w.error();
  }
  return {};
}

Outcome<std::uint32_t> Vault::FailedUnlocks(const std::filesystem::path& path) {
  auto file = ReadVaultFile(path);
  if (!file) return file.error();
  return file->failed_unlocks();
}

Outcome<std::unique_ptr<Vault>> Vault::Unlock(const std::filesystem::path& path,
                                              const crypto::SecureBuffer& passphrase,
                                              const VaultOptions& options) {
  bool from_copy = false, copy_sound = false;
  auto file = ReadVaultFile(path, &from_copy, &copy_sound);
  if (!file) return file.error();
  crypto::KdfParams params = ParamsOf(*file);
  if (!crypto::KdfParamsAcceptable(params)) {
    return Fail(errc::vault_corrupt, Tr("the vault's key derivation parameters are too weak"));
  }
  // Format 2 carries its own limit (bound to the ciphertext); format 1 took
  // it from device.json.
  const std::uint32_t limit =
      file->format() == 1 ? options.max_failed_unlocks : file->max_failed_unlocks();
  auto kek = crypto::DeriveKey(passphrase, params);
  if (!kek) return Fail(kek.error(), Tr("cannot derive the vault key (not enough memory?)"));
  crypto::Bytes sealed = SealedBytes(*file);
  auto plain = crypto::AeadOpen(*kek, sealed, View(AdOf(*file)));
  if (!plain) {
    // Invariant 3: only the counter changes (the checksum held: not damage).
    std::uint32_t failures = file->failed_unlocks() + 1;
    if (limit > 0 && failures >= limit) {
      Erase(path);
      return Fail(errc::vault_wiped,
                  Tr("too many wrong passphrases: the vault was erased; enroll this device again"));
    }
    file->set_failed_unlocks(failures);
    // The counter is advisory; both copies carry it, so damaging one does not reset it.
    for (const auto& target : {path, CopyPath(path)}) {
      std::error_code ec;
      if (std::filesystem::exists(target, ec))
        (void)WriteFileAtomically(target, file->SerializeAsString());
    }
    std::string msg = Tr("wrong passphrase");
    if (limit > 0) {
      msg = TrF("wrong passphrase ({} attempts left before this device erases its keys)",
                limit - failures);
    }
    return Fail(errc::wrong_passphrase, msg);
  }
  auto secrets = Parse(*plain);
  if (!secrets) return secrets.error();
  std::unique_ptr<Vault> v(new Vault(path, params, std::move(*kek), std::move(*secrets)));
  v->max_failed_unlocks_ = limit;
  if (file->format() == 1 || from_copy || !copy_sound) {
    // Upgraded to format 2, or the damaged or missing file or copy written
    // again (best effort: the officer is not blocked; the next unlock tries again).
    (void)v->Write(v->secrets_);
  } else if (file->failed_unlocks() != 0) {
    file->set_failed_unlocks(0);
    for (const auto& target : {path, CopyPath(path)})
      (void)WriteFileAtomically(target, file->SerializeAsString());  // invariant 4
  }
  return v;
}

Outcome<std::uint32_t> Vault::MaxFailedUnlocks(const std::filesystem::path& path,
                                               std::uint32_t legacy) {
  auto file = ReadVaultFile(path);
  if (!file) return file.error();
  return file->format() == 1 ? legacy : file->max_failed_unlocks();
}

Outcome<void> Vault::AddClassKeys(
    std::map<std::pair<teduh::AccessClass, std::uint32_t>, crypto::SecureBuffer> keys) {
  return UpdateClassKeys(std::move(keys), {});
}

Outcome<void> Vault::RemoveClassKeys(
    const std::vector<std::pair<teduh::AccessClass, std::uint32_t>>& keys) {
  return UpdateClassKeys({}, keys);
}

Outcome<void> Vault::SetUnitRootKey(crypto::SecureBuffer unit_root_sk) {
  if (unit_root_sk.size() != crypto::kSignSecretKeyBytes)
    return Fail(errc::invalid_argument, Tr("the unit root key must be 64 bytes"));
  return UpdateClassKeys({}, {}, std::move(unit_root_sk));
}

Outcome<void> Vault::UpdateClassKeys(
    std::map<std::pair<teduh::AccessClass, std::uint32_t>, crypto::SecureBuffer> add,
    const std::vector<std::pair<teduh::AccessClass, std::uint32_t>>& remove,
    crypto::SecureBuffer unit_root_sk) {
  if (locked()) return Fail(errc::locked, Tr("the vault is locked"));
  auto removed = [&](const std::pair<teduh::AccessClass, std::uint32_t>& k) {
    return std::find(remove.begin(), remove.end(), k) != remove.end();
  };
  // Build the new set of secrets without touching the current one, so a failed
  // write leaves memory and disk unchanged.
  VaultSecrets next;
  auto clone = [](const crypto::SecureBuffer& b, crypto::SecureBuffer& out) -> error_code {
    if (b.empty()) return {};
    auto c = b.Clone();
    if (!c) return c.error();
    out = std::move(*c);
    return {};
  };
  if (auto ec = clone(secrets_.storage_key, next.storage_key)) return Fail(ec);
  if (auto ec = clone(secrets_.device_sign_sk, next.device_sign_sk)) return Fail(ec);
  if (auto ec = clone(secrets_.device_box_sk, next.device_box_sk)) return Fail(ec);
  if (auto ec = clone(secrets_.unit_root_sk, next.unit_root_sk)) return Fail(ec);
  next.pinned_unit_root_pk = secrets_.pinned_unit_root_pk;
  next.has_pinned_unit_root_pk = secrets_.has_pinned_unit_root_pk;
  for (const auto& [k, v] : secrets_.class_keys) {
    if (removed(k)) continue;
    crypto::SecureBuffer c;
    if (auto ec = clone(v, c)) return Fail(ec);
    next.class_keys.emplace(k, std::move(c));
  }
  // Another process on the same home may have added keys since we opened.
  if (auto file = ReadVaultFile(path_); file && ParamsOf(*file).salt == params_.salt) {
    crypto::Bytes sealed = SealedBytes(*file);
    if (auto plain = crypto::AeadOpen(kek_, sealed, View(AdOf(*file)))) {
      if (auto disk = Parse(*plain)) {
        for (auto& [k, v] : disk->class_keys)
          if (!removed(k)) next.class_keys.emplace(k, std::move(v));
        if (next.unit_root_sk.empty() && !disk->unit_root_sk.empty())
          next.unit_root_sk = std::move(disk->unit_root_sk);
      }
    }
  }
  bool changed = false;
  if (!unit_root_sk.empty()) {
    next.unit_root_sk = std::move(unit_root_sk);
    changed = true;
  }
  for (auto& [k, v] : add) {
    if (v.size() != 32) return Fail(errc::invalid_argument, Tr("a class key must be 32 bytes"));
    if (next.class_keys.emplace(k, std::move(v)).second) changed = true;
  }
  if (remove.empty() && !changed && next.class_keys.size() == secrets_.class_keys.size()) return {};
  if (auto w = Write(next); !w) return w.error();
  secrets_ = std::move(next);
  return {};
}

}  // namespace teduh::core
