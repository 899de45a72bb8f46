#include "teduh/crypto/stream.h"

#include <sodium.h>

#include <cstring>

namespace teduh::crypto {

using StreamState = crypto_secretstream_xchacha20poly1305_state;
static_assert(crypto_secretstream_xchacha20poly1305_KEYBYTES == kStreamKeyBytes);
static_assert(crypto_secretstream_xchacha20poly1305_HEADERBYTES == kStreamHeaderBytes);
static_assert(crypto_secretstream_xchacha20poly1305_ABYTES == kStreamOverhead);

Hasher::Hasher() noexcept {
  static_assert(sizeof(crypto_generichash_state) <= sizeof(state_));
  // Cannot fail: no key, and a valid output length.
  crypto_generichash_init(reinterpret_cast<crypto_generichash_state*>(state_.data()), nullptr, 0,
                          32);
}

void Hasher::Update(ByteView part) noexcept {
  crypto_generichash_update(reinterpret_cast<crypto_generichash_state*>(state_.data()), part.data(),
                            part.size());
}

std::array<std::uint8_t, 32> Hasher::Final() noexcept {
  std::array<std::uint8_t, 32> digest{};
  crypto_generichash_final(reinterpret_cast<crypto_generichash_state*>(state_.data()),
                           digest.data(), digest.size());
  return digest;
}

result<StreamSealer> StreamSealer::Start(const SecureBuffer& key, StreamHeader* header) noexcept {
  if (key.size() != kStreamKeyBytes) return errc::bad_length;
  auto state = SecureBuffer::Allocate(sizeof(StreamState));
  if (!state) return state.error();
  if (crypto_secretstream_xchacha20poly1305_init_push(reinterpret_cast<StreamState*>(state->data()),
                                                      header->data(), key.data()) != 0) {
    return errc::init_failed;
  }
  return StreamSealer(std::move(*state));
}

error_code StreamSealer::Push(ByteView plain, ByteView ad, bool final, Bytes* out) noexcept {
  if (state_.empty()) return errc::bad_length;
  const std::size_t at = out->size();
  try {
    out->resize(at + plain.size() + kStreamOverhead);
  } catch (...) {
    return errc::out_of_memory;
  }
  const unsigned char tag = final ? crypto_secretstream_xchacha20poly1305_TAG_FINAL
                                  : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
  if (crypto_secretstream_xchacha20poly1305_push(
          reinterpret_cast<StreamState*>(state_.data()), out->data() + at, nullptr, plain.data(),
          plain.size(), ad.empty() ? nullptr : ad.data(), ad.size(), tag) != 0) {
    out->resize(at);
    return errc::bad_length;
  }
  if (final) state_.Reset();  // nothing may follow the last chunk
  return {};
}

result<StreamOpener> StreamOpener::Start(const SecureBuffer& key, ByteView header) noexcept {
  if (key.size() != kStreamKeyBytes || header.size() != kStreamHeaderBytes) return errc::bad_length;
  auto state = SecureBuffer::Allocate(sizeof(StreamState));
  if (!state) return state.error();
  if (crypto_secretstream_xchacha20poly1305_init_pull(reinterpret_cast<StreamState*>(state->data()),
                                                      header.data(), key.data()) != 0) {
    return errc::decrypt_failed;
  }
  return StreamOpener(std::move(*state));
}

error_code StreamOpener::Pull(ByteView sealed, ByteView ad, SecureBuffer* out,
                              bool* final) noexcept {
  if (state_.empty()) return errc::decrypt_failed;  // after the last chunk
  if (sealed.size() < kStreamOverhead) return errc::decrypt_failed;
  auto plain = SecureBuffer::Allocate(sealed.size() - kStreamOverhead);
  if (!plain) return plain.error();
  unsigned char tag = 0;
  unsigned long long n = 0;
  // A zero-length plaintext still needs a writable pointer.
  unsigned char scratch = 0;
  if (crypto_secretstream_xchacha20poly1305_pull(
          reinterpret_cast<StreamState*>(state_.data()), plain->empty() ? &scratch : plain->data(),
          &n, &tag, sealed.data(), sealed.size(), ad.empty() ? nullptr : ad.data(),
          ad.size()) != 0) {
    return errc::decrypt_failed;
  }
  *final = tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL;
  if (*final) state_.Reset();
  *out = std::move(*plain);
  return {};
}

result<BoxKeyPair> DeriveBoxKeyPair(ByteView master, std::string_view context,
                                    std::uint64_t id) noexcept {
  if (master.size() != crypto_kdf_KEYBYTES || context.size() != crypto_kdf_CONTEXTBYTES)
    return errc::bad_length;
  auto seed = SecureBuffer::Allocate(crypto_box_SEEDBYTES);
  if (!seed) return seed.error();
  char ctx[crypto_kdf_CONTEXTBYTES] = {};
  std::memcpy(ctx, context.data(), sizeof ctx);
  if (crypto_kdf_derive_from_key(seed->data(), seed->size(), id, ctx, master.data()) != 0)
    return errc::bad_length;
  auto secret = SecureBuffer::Allocate(kBoxSecretKeyBytes);
  if (!secret) return secret.error();
  BoxKeyPair pair{{}, std::move(*secret)};
  if (crypto_box_seed_keypair(pair.public_key.data(), pair.secret_key.data(), seed->data()) != 0)
    return errc::bad_length;
  return pair;
}

}  // namespace teduh::crypto
