// Streams: large data (a server backup) hashed and encrypted chunk by chunk.
//
// - Hasher: BLAKE2b-256 over data given in parts (crypto_generichash_*).
// - StreamSealer / StreamOpener: crypto_secretstream_xchacha20poly1305, each
//   chunk authenticated, in order, with a FINAL tag on the last one, so a
//   stream cut short, reordered or spliced does not open. Their state (which
//   holds the key) is kept in guarded memory and wiped with them.
// - DeriveBoxKeyPair: an X25519 key pair derived from a 32-byte master secret
//   (crypto_kdf_derive_from_key with an 8-character context, then
//   crypto_box_seed_keypair): whoever holds the master holds the pair.
//
// Thread safety: an object is used by one thread at a time.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "teduh/crypto/crypto.h"

namespace teduh::crypto {

class Hasher {
 public:
  Hasher() noexcept;
  void Update(ByteView part) noexcept;
  std::array<std::uint8_t, 32> Final() noexcept;  // the object is then spent

 private:
  alignas(64) std::array<std::uint8_t, 384> state_{};  // crypto_generichash_state
};

inline constexpr std::size_t kStreamKeyBytes = 32;
inline constexpr std::size_t kStreamHeaderBytes = 24;
inline constexpr std::size_t kStreamOverhead = 17;  // per chunk
using StreamHeader = std::array<std::uint8_t, kStreamHeaderBytes>;

class StreamSealer {
 public:
  // A sealer under `key` (kStreamKeyBytes); `header` goes before the first chunk.
  [[nodiscard]] static result<StreamSealer> Start(const SecureBuffer& key,
                                                  StreamHeader* header) noexcept;
  // Appends the sealed chunk (plain.size() + kStreamOverhead bytes) to `out`.
  [[nodiscard]] error_code Push(ByteView plain, ByteView ad, bool final, Bytes* out) noexcept;

 private:
  explicit StreamSealer(SecureBuffer state) : state_(std::move(state)) {}
  SecureBuffer state_;
};

class StreamOpener {
 public:
  // errc::decrypt_failed if `header` does not start a stream under `key`.
  [[nodiscard]] static result<StreamOpener> Start(const SecureBuffer& key,
                                                  ByteView header) noexcept;
  // Opens one chunk into `out` (resized to the plaintext's size): errc::decrypt_failed
  // if it was altered, reordered or sealed under another key. `final` says
  // whether it was the stream's last chunk.
  [[nodiscard]] error_code Pull(ByteView sealed, ByteView ad, SecureBuffer* out,
                                bool* final) noexcept;

 private:
  explicit StreamOpener(SecureBuffer state) : state_(std::move(state)) {}
  SecureBuffer state_;
};

// An X25519 key pair derived from `master` (32 bytes) for `context` (exactly
// 8 characters) and `id`; errc::bad_length otherwise.
[[nodiscard]] result<BoxKeyPair> DeriveBoxKeyPair(ByteView master, std::string_view context,
                                                  std::uint64_t id) noexcept;

}  // namespace teduh::crypto
