// Fuzz target for the vault file reader: a device's vault file may be
// damaged by a failing disk or replaced by whoever holds the laptop; reading
// it (to count failed unlocks, before any passphrase is tried) must refuse
// anything malformed, and never trust its key-derivation settings beyond
// the bounds. Each input is written as the vault file of a scratch home.
// Built like frame_fuzz (libFuzzer with clang; a replay driver otherwise).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "teduh/core/vault.h"
#include "teduh/crypto/crypto.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool ready = !teduh::crypto::Init();
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() /
             ("teduh-vault-fuzz-" + std::to_string(static_cast<long>(getpid())));
    std::filesystem::create_directories(d);
    return d;
  }();
  if (!ready) return 0;
  const auto path = dir / "vault";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  (void)teduh::core::Vault::FailedUnlocks(path);
  (void)teduh::core::Vault::MaxFailedUnlocks(path, 10);
  std::error_code ignored;
  std::filesystem::remove(path, ignored);
  return 0;
}
