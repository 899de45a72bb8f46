// libsodium behind teduh::crypto's contract.
//
// Design notes:
//   1. libsodium reports failure as -1 and success as 0. That status becomes an
//      errc in FromSodium() and nowhere else; each call site names the errc its
//      failure means. Calls that cannot fail in libsodium are still checked, and
//      report errc::init_failed (the library is not behaving: do not continue).
//   2. Every length is checked here before libsodium sees a pointer, because
//      libsodium aborts the process (sodium_misuse) on some oversized inputs.
//   3. No function throws: vector growth is the only allocation that can, and
//      it is caught and reported as errc::out_of_memory.
//   4. Secrets are written only into SecureBuffers. Nothing here copies a
//      secret into a std::string, a std::vector or an unwiped stack variable.
#include "teduh/crypto/crypto.h"

#include <sodium.h>

#include <cassert>
#include <cmath>
#include <string>
#include <utility>

namespace teduh::crypto {
namespace {

static_assert(kAeadKeyBytes == crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
static_assert(kAeadNonceBytes == crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
static_assert(kAeadTagBytes == crypto_aead_xchacha20poly1305_ietf_ABYTES);
static_assert(kSignPublicKeyBytes == crypto_sign_PUBLICKEYBYTES);
static_assert(kSignSecretKeyBytes == crypto_sign_SECRETKEYBYTES);
static_assert(kSignatureBytes == crypto_sign_BYTES);
static_assert(kBoxPublicKeyBytes == crypto_box_PUBLICKEYBYTES);
static_assert(kBoxSecretKeyBytes == crypto_box_SECRETKEYBYTES);
static_assert(kBoxSecretKeyBytes == crypto_scalarmult_SCALARBYTES);
static_assert(kBoxPublicKeyBytes == crypto_scalarmult_BYTES);
static_assert(kSealOverhead == crypto_box_SEALBYTES);
static_assert(kKdfSaltBytes == crypto_pwhash_argon2id_SALTBYTES);
static_assert(crypto_generichash_BYTES == 32);

constexpr std::uint64_t kMaxCalibratedOpslimit = 32;

class CryptoCategory final : public boost::system::error_category {
 public:
  // A fixed random identifier, so that categories compare equal across shared
  // objects that each hold a copy of this one.
  CryptoCategory() noexcept : error_category(0x8f4c1a6e2d35b7c9ULL) {}

  const char* name() const noexcept override { return "teduh.crypto"; }

  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::init_failed:
        return "libsodium could not be initialised or failed unexpectedly; do not continue";
      case errc::bad_length:
        return "input has the wrong length or is not a valid key";
      case errc::decrypt_failed:
        return "decryption failed: wrong key, or the data was altered";
      case errc::bad_signature:
        return "signature does not verify";
      case errc::out_of_memory:
        return "out of memory (guarded allocation or buffer growth failed)";
      case errc::kdf_failed:
        return "Argon2id key derivation failed (parameters refused or not enough memory)";
    }
    return "unknown teduh.crypto error " + std::to_string(ev);
  }
};

// The one place where a libsodium status becomes an error code (note 1).
error_code FromSodium(int status, errc on_failure) noexcept {
  return status == 0 ? error_code{} : make_error_code(on_failure);
}

}  // namespace

const boost::system::error_category& crypto_category() noexcept {
  static const CryptoCategory category;
  return category;
}

error_code make_error_code(errc e) noexcept {
  return error_code(static_cast<int>(e), crypto_category());
}

error_code Init() noexcept {
  // sodium_init returns 1 when already initialised, and is itself thread-safe.
  if (sodium_init() < 0) return errc::init_failed;
  return {};
}

// ---- Randomness and hashing -------------------------------------------------

void RandomBytes(std::span<std::uint8_t> out) noexcept { randombytes_buf(out.data(), out.size()); }

std::uint32_t RandomUniform(std::uint32_t upper) noexcept {
  return upper == 0 ? 0 : randombytes_uniform(upper);
}

result<SecureBuffer> RandomSecret(std::size_t size) noexcept {
  auto secret = SecureBuffer::Allocate(size);
  if (!secret) return secret.error();
  RandomBytes(secret->span());
  return secret;
}

std::array<std::uint8_t, 32> Hash(ByteView data) noexcept {
  std::array<std::uint8_t, 32> digest{};
  // Cannot fail: the output length is valid and there is no key.
  crypto_generichash(digest.data(), digest.size(), data.data(), data.size(), nullptr, 0);
  return digest;
}

// ---- Authenticated encryption -----------------------------------------------

result<Bytes> AeadSeal(const SecureBuffer& key, ByteView plaintext, ByteView ad) noexcept {
  Bytes sealed;
  if (auto ec = AeadSealAppend(key, plaintext, ad, sealed)) return ec;
  return sealed;
}

error_code AeadSealAppend(const SecureBuffer& key, ByteView plaintext, ByteView ad,
                          Bytes& out) noexcept {
  if (key.size() != kAeadKeyBytes) return errc::bad_length;
  if (plaintext.size() > crypto_aead_xchacha20poly1305_ietf_messagebytes_max()) {
    return errc::bad_length;
  }
  const std::size_t start = out.size();
  const std::size_t room = out.max_size() - start;
  if (room < kAeadOverhead || plaintext.size() > room - kAeadOverhead) return errc::bad_length;
  try {
    out.resize(start + kAeadOverhead + plaintext.size());
  } catch (...) {
    return errc::out_of_memory;
  }

  std::uint8_t* nonce = out.data() + start;
  RandomBytes({nonce, kAeadNonceBytes});
  unsigned long long written = 0;
  const error_code ec =
      FromSodium(crypto_aead_xchacha20poly1305_ietf_encrypt(
                     nonce + kAeadNonceBytes, &written, plaintext.data(), plaintext.size(),
                     ad.data(), ad.size(), nullptr, nonce, key.data()),
                 errc::bad_length);
  if (ec) {
    out.resize(start);
    return ec;
  }
  assert(written == plaintext.size() + kAeadTagBytes);
  return {};
}

error_code AeadOpenInto(const SecureBuffer& key, ByteView sealed, ByteView ad,
                        std::span<std::uint8_t> out) noexcept {
  error_code ec;
  if (key.size() != kAeadKeyBytes || sealed.size() < kAeadOverhead ||
      out.size() != sealed.size() - kAeadOverhead) {
    ec = errc::bad_length;
  } else {
    // libsodium only authenticates (writes nothing) when out.data() is null,
    // which is what an empty plaintext needs.
    unsigned long long written = 0;
    ec = FromSodium(
        crypto_aead_xchacha20poly1305_ietf_decrypt(
            out.data(), &written, nullptr, sealed.data() + kAeadNonceBytes,
            sealed.size() - kAeadNonceBytes, ad.data(), ad.size(), sealed.data(), key.data()),
        errc::decrypt_failed);
  }
  if (ec) Wipe(out);
  return ec;
}

result<SecureBuffer> AeadOpen(const SecureBuffer& key, ByteView sealed, ByteView ad) noexcept {
  if (key.size() != kAeadKeyBytes || sealed.size() < kAeadOverhead) return errc::bad_length;
  auto plaintext = SecureBuffer::Allocate(sealed.size() - kAeadOverhead);
  if (!plaintext) return plaintext.error();
  if (auto ec = AeadOpenInto(key, sealed, ad, plaintext->span())) return ec;
  return plaintext;
}

// ---- Signatures ---------------------------------------------------------------

result<SignKeyPair> GenerateSignKeyPair() noexcept {
  auto secret = SecureBuffer::Allocate(kSignSecretKeyBytes);
  if (!secret) return secret.error();
  SignKeyPair pair{{}, std::move(*secret)};
  if (auto ec = FromSodium(crypto_sign_keypair(pair.public_key.data(), pair.secret_key.data()),
                           errc::init_failed)) {
    return ec;
  }
  return pair;
}

result<SignKeyPair> SignKeyPairFromSeed(ByteView seed) noexcept {
  if (seed.size() != crypto_sign_SEEDBYTES) return errc::bad_length;
  auto secret = SecureBuffer::Allocate(kSignSecretKeyBytes);
  if (!secret) return secret.error();
  SignKeyPair pair{{}, std::move(*secret)};
  if (auto ec = FromSodium(
          crypto_sign_seed_keypair(pair.public_key.data(), pair.secret_key.data(), seed.data()),
          errc::init_failed)) {
    return ec;
  }
  return pair;
}

result<SignPublicKey> SignPublicKeyOf(const SecureBuffer& secret_key) noexcept {
  if (secret_key.size() != kSignSecretKeyBytes) return errc::bad_length;
  SignPublicKey public_key{};
  // An Ed25519 secret key is seed || public key; this copies the second half.
  if (auto ec = FromSodium(crypto_sign_ed25519_sk_to_pk(public_key.data(), secret_key.data()),
                           errc::init_failed)) {
    return ec;
  }
  return public_key;
}

result<Signature> Sign(const SecureBuffer& secret_key, ByteView message) noexcept {
  if (secret_key.size() != kSignSecretKeyBytes) return errc::bad_length;
  Signature signature{};
  if (auto ec = FromSodium(crypto_sign_detached(signature.data(), nullptr, message.data(),
                                                message.size(), secret_key.data()),
                           errc::init_failed)) {
    return ec;
  }
  return signature;
}

bool Verify(ByteView public_key, ByteView message, ByteView signature) noexcept {
  if (public_key.size() != kSignPublicKeyBytes || signature.size() != kSignatureBytes) {
    return false;
  }
  return crypto_sign_verify_detached(signature.data(), message.data(), message.size(),
                                     public_key.data()) == 0;
}

// ---- Sealed boxes ---------------------------------------------------------------

result<BoxKeyPair> GenerateBoxKeyPair() noexcept {
  auto secret = SecureBuffer::Allocate(kBoxSecretKeyBytes);
  if (!secret) return secret.error();
  BoxKeyPair pair{{}, std::move(*secret)};
  if (auto ec = FromSodium(crypto_box_keypair(pair.public_key.data(), pair.secret_key.data()),
                           errc::init_failed)) {
    return ec;
  }
  return pair;
}

result<BoxPublicKey> BoxPublicKeyOf(const SecureBuffer& secret_key) noexcept {
  if (secret_key.size() != kBoxSecretKeyBytes) return errc::bad_length;
  BoxPublicKey public_key{};
  if (auto ec = FromSodium(crypto_scalarmult_base(public_key.data(), secret_key.data()),
                           errc::bad_length)) {
    return ec;
  }
  return public_key;
}

result<Bytes> SealTo(ByteView recipient, ByteView plaintext) noexcept {
  if (recipient.size() != kBoxPublicKeyBytes) return errc::bad_length;
  if (plaintext.size() > crypto_box_messagebytes_max() - kSealOverhead) return errc::bad_length;
  Bytes sealed;
  try {
    sealed.resize(plaintext.size() + kSealOverhead);
  } catch (...) {
    return errc::out_of_memory;
  }
  // Fails when `recipient` is a low-order point, which no honest key is.
  if (auto ec = FromSodium(
          crypto_box_seal(sealed.data(), plaintext.data(), plaintext.size(), recipient.data()),
          errc::bad_length)) {
    return ec;
  }
  return sealed;
}

result<SecureBuffer> OpenSealed(const BoxPublicKey& public_key, const SecureBuffer& secret_key,
                                ByteView sealed) noexcept {
  if (secret_key.size() != kBoxSecretKeyBytes || sealed.size() < kSealOverhead) {
    return errc::bad_length;
  }
  auto plaintext = SecureBuffer::Allocate(sealed.size() - kSealOverhead);
  if (!plaintext) return plaintext.error();
  // As for AEAD, a null output (empty plaintext) means authenticate only.
  if (auto ec = FromSodium(crypto_box_seal_open(plaintext->data(), sealed.data(), sealed.size(),
                                                public_key.data(), secret_key.data()),
                           errc::decrypt_failed)) {
    return ec;
  }
  return plaintext;
}

// ---- Passphrase key derivation ----------------------------------------------------

KdfParams InteractiveKdfParams() noexcept {
  KdfParams params;
  params.opslimit = crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE;
  params.memlimit = crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE;
  params.alg = crypto_pwhash_ALG_ARGON2ID13;
  RandomBytes(params.salt);
  return params;
}

KdfParams CalibrateKdf(std::chrono::milliseconds target) noexcept {
  KdfParams params = InteractiveKdfParams();
  // The probe derives from a public, all-zero passphrase and discards the key.
  auto probe_passphrase = SecureBuffer::Allocate(16);
  if (!probe_passphrase) return params;
  const KdfParams probe = InteractiveKdfParams();
  const auto start = std::chrono::steady_clock::now();
  const auto probe_key = DeriveKey(*probe_passphrase, probe);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  if (!probe_key) return params;

  // Argon2 time grows linearly with the number of passes at fixed memory.
  const double ratio = std::chrono::duration<double>(target).count() /
                       std::chrono::duration<double>(elapsed).count();
  const double wanted = std::ceil(static_cast<double>(params.opslimit) * ratio);
  // Written so that NaN (zero target over zero elapsed) falls to the floor.
  if (wanted >= static_cast<double>(kMaxCalibratedOpslimit)) {
    params.opslimit = kMaxCalibratedOpslimit;
  } else if (wanted > static_cast<double>(params.opslimit)) {
    params.opslimit = static_cast<std::uint64_t>(wanted);
  }
  return params;
}

// The upper bounds stop an altered vault header from stalling an unlock with
// absurd work (32 passes is CalibrateKdf's own ceiling; 1 GiB is SENSITIVE).
constexpr std::uint64_t kMaxKdfOpslimit = kMaxCalibratedOpslimit;

bool KdfParamsAcceptable(const KdfParams& p) noexcept {
  return p.alg == crypto_pwhash_ALG_ARGON2ID13 &&
         p.opslimit >= crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE &&
         p.opslimit <= kMaxKdfOpslimit &&
         p.memlimit >= crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE &&
         p.memlimit <= crypto_pwhash_argon2id_MEMLIMIT_SENSITIVE;
}

result<SecureBuffer> DeriveKey(const SecureBuffer& passphrase, const KdfParams& params) noexcept {
  // Refusing weak parameters here keeps the floor in one place for every caller.
  if (!KdfParamsAcceptable(params)) return errc::kdf_failed;
  auto key = SecureBuffer::Allocate(kAeadKeyBytes);
  if (!key) return key.error();
  // crypto_pwhash declares every pointer non-null, even for an empty passphrase.
  static constexpr char kNoPassphrase[1] = {0};
  const char* passwd =
      passphrase.empty() ? kNoPassphrase : reinterpret_cast<const char*>(passphrase.data());
  if (auto ec = FromSodium(
          crypto_pwhash(key->data(), key->size(), passwd, passphrase.size(), params.salt.data(),
                        params.opslimit, static_cast<std::size_t>(params.memlimit), params.alg),
          errc::kdf_failed)) {
    return ec;
  }
  return key;
}

}  // namespace teduh::crypto
