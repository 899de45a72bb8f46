// Fuzz target for the reader of server backup files (core/backup_file.h),
// which a restore runs on a file from anywhere. Each input is tried as it is
// and with a valid trailing checksum appended, so the fuzzer reaches the
// header, chunk framing and decryption behind the checksum. Built like
// frame_fuzz (libFuzzer with clang; a replay driver otherwise).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "teduh/core/backup_file.h"
#include "teduh/crypto/crypto.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool ready = !teduh::crypto::Init();
  if (!ready) return 0;
  static teduh::crypto::BoxKeyPair key = [] {
    auto root = teduh::crypto::GenerateSignKeyPair();
    return std::move(*teduh::core::BackupKeyPair(root->secret_key));
  }();
  std::string bytes(reinterpret_cast<const char*>(data), size);
  std::string snapshot;
  (void)teduh::core::VerifyBackupBytes(bytes);
  (void)teduh::core::OpenBackupBytes(bytes, key, &snapshot);
  const auto sum = teduh::crypto::Hash(teduh::crypto::ByteView(data, size));
  bytes.append(reinterpret_cast<const char*>(sum.data()), sum.size());
  auto info = teduh::core::VerifyBackupBytes(bytes);
  auto opened = teduh::core::OpenBackupBytes(bytes, key, &snapshot);
  // Nothing that fails the structure check may open.
  if (!info && opened) __builtin_trap();
  return 0;
}
