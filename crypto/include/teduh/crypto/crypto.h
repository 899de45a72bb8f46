// teduh::crypto — the only code that touches libsodium.
//
// Every secret (passphrase, derived key, private key, class key, case key,
// storage key) lives in a SecureBuffer: memory from sodium_malloc (guard pages,
// mlock'd, excluded from core dumps where the OS allows) that is wiped with
// sodium_memzero when the buffer is destroyed. Public values (public keys,
// signatures, ciphertext) are plain arrays and vectors.
//
// Thread safety: call Init() once before any other function (it is idempotent
// and thread-safe). After that every free function is thread-safe; a
// SecureBuffer is a value with no internal locking.
//
// Errors: functions that can fail on bad input return boost::system::result;
// the error codes are teduh::crypto::errc (see below). No function throws.
#pragma once

#include <array>
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace teduh::crypto {

using boost::system::error_code;
using boost::system::result;
using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;

enum class errc {
  init_failed = 1,  // libsodium could not initialise: do not continue
  bad_length,       // an input has the wrong size (key, nonce, signature...)
  decrypt_failed,   // authentication failed: wrong key, or data altered
  bad_signature,    // signature does not verify
  out_of_memory,    // guarded allocation failed (mlock limit?)
  kdf_failed,       // Argon2id failed (usually memory limit)
};
const boost::system::error_category& crypto_category() noexcept;
error_code make_error_code(errc e) noexcept;

// Initialises libsodium. Returns an error if it cannot; then nothing else may be called.
[[nodiscard]] error_code Init() noexcept;

// ---- Guarded memory ---------------------------------------------------------

// Move-only owner of sodium_malloc'd memory, wiped and freed on destruction.
class SecureBuffer {
 public:
  SecureBuffer() noexcept = default;
  ~SecureBuffer();
  SecureBuffer(SecureBuffer&& other) noexcept;
  SecureBuffer& operator=(SecureBuffer&& other) noexcept;
  SecureBuffer(const SecureBuffer&) = delete;
  SecureBuffer& operator=(const SecureBuffer&) = delete;

  // Zero-filled buffer of `size` bytes (size 0 gives an empty buffer).
  [[nodiscard]] static result<SecureBuffer> Allocate(std::size_t size) noexcept;
  // A copy of `bytes` in guarded memory. The caller wipes its own copy.
  [[nodiscard]] static result<SecureBuffer> CopyOf(ByteView bytes) noexcept;
  // A guarded copy of this buffer.
  [[nodiscard]] result<SecureBuffer> Clone() const noexcept;

  std::uint8_t* data() noexcept { return data_; }
  const std::uint8_t* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  ByteView view() const noexcept { return {data_, size_}; }
  std::span<std::uint8_t> span() noexcept { return {data_, size_}; }
  // Wipes and frees now; the buffer becomes empty.
  void Reset() noexcept;

 private:
  std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

// Wipes memory that held a secret outside a SecureBuffer (e.g. a stack buffer).
void Wipe(std::span<std::uint8_t> bytes) noexcept;
void Wipe(std::string& s) noexcept;  // wipes the characters, then clears
// Constant-time equality of equal-length buffers (false when lengths differ).
bool ConstantTimeEqual(ByteView a, ByteView b) noexcept;

// ---- Randomness and hashing -------------------------------------------------

void RandomBytes(std::span<std::uint8_t> out) noexcept;
// A uniform random number in [0, upper) (0 when upper is 0).
std::uint32_t RandomUniform(std::uint32_t upper) noexcept;
template <std::size_t N>
std::array<std::uint8_t, N> RandomArray() noexcept {
  std::array<std::uint8_t, N> a;
  RandomBytes(a);
  return a;
}
// A secret of `size` random bytes in guarded memory.
[[nodiscard]] result<SecureBuffer> RandomSecret(std::size_t size) noexcept;

// BLAKE2b-256 of `data` (crypto_generichash).
std::array<std::uint8_t, 32> Hash(ByteView data) noexcept;

// ---- Authenticated encryption (XChaCha20-Poly1305 IETF) -----------------------

inline constexpr std::size_t kAeadKeyBytes = 32;
inline constexpr std::size_t kAeadNonceBytes = 24;
inline constexpr std::size_t kAeadTagBytes = 16;
inline constexpr std::size_t kAeadOverhead = kAeadNonceBytes + kAeadTagBytes;

// Encrypts with a fresh random nonce. Returns nonce || ciphertext || tag.
// `key` must be kAeadKeyBytes long.
[[nodiscard]] result<Bytes> AeadSeal(const SecureBuffer& key, ByteView plaintext,
                                     ByteView ad) noexcept;
// Same, appending to `out` (which is not cleared) to avoid an allocation per value.
// `plaintext` and `ad` must not point into `out`: growing it may reallocate.
// On failure `out` keeps its previous contents.
[[nodiscard]] error_code AeadSealAppend(const SecureBuffer& key, ByteView plaintext, ByteView ad,
                                        Bytes& out) noexcept;
// Opens nonce || ciphertext || tag into `out`, which must be exactly
// sealed.size() - kAeadOverhead bytes. On failure `out` is wiped and
// errc::decrypt_failed (or bad_length) is returned.
[[nodiscard]] error_code AeadOpenInto(const SecureBuffer& key, ByteView sealed, ByteView ad,
                                      std::span<std::uint8_t> out) noexcept;
// Opens into a new guarded buffer (for secrets such as wrapped keys).
[[nodiscard]] result<SecureBuffer> AeadOpen(const SecureBuffer& key, ByteView sealed,
                                            ByteView ad) noexcept;

// ---- Signatures (Ed25519) ---------------------------------------------------

inline constexpr std::size_t kSignPublicKeyBytes = 32;
inline constexpr std::size_t kSignSecretKeyBytes = 64;
inline constexpr std::size_t kSignatureBytes = 64;
using SignPublicKey = std::array<std::uint8_t, kSignPublicKeyBytes>;
using Signature = std::array<std::uint8_t, kSignatureBytes>;

struct SignKeyPair {
  SignPublicKey public_key;
  SecureBuffer secret_key;  // kSignSecretKeyBytes
};
[[nodiscard]] result<SignKeyPair> GenerateSignKeyPair() noexcept;
// The key pair of a 32-byte seed (crypto_sign_seed_keypair): the first half of
// an Ed25519 secret key, as a recovery kit rebuilds it.
[[nodiscard]] result<SignKeyPair> SignKeyPairFromSeed(ByteView seed) noexcept;
inline constexpr std::size_t kSignSeedBytes = 32;
// The public key of a 64-byte Ed25519 secret key.
[[nodiscard]] result<SignPublicKey> SignPublicKeyOf(const SecureBuffer& secret_key) noexcept;
[[nodiscard]] result<Signature> Sign(const SecureBuffer& secret_key, ByteView message) noexcept;
// True only if `signature` (64 B) is valid for `message` under `public_key` (32 B).
[[nodiscard]] bool Verify(ByteView public_key, ByteView message, ByteView signature) noexcept;

// ---- Sealed boxes (X25519, crypto_box_seal) -------------------------------------

inline constexpr std::size_t kBoxPublicKeyBytes = 32;
inline constexpr std::size_t kBoxSecretKeyBytes = 32;
inline constexpr std::size_t kSealOverhead = 48;
using BoxPublicKey = std::array<std::uint8_t, kBoxPublicKeyBytes>;

struct BoxKeyPair {
  BoxPublicKey public_key;
  SecureBuffer secret_key;  // kBoxSecretKeyBytes
};
[[nodiscard]] result<BoxKeyPair> GenerateBoxKeyPair() noexcept;
[[nodiscard]] result<BoxPublicKey> BoxPublicKeyOf(const SecureBuffer& secret_key) noexcept;
// Anonymous encryption to `recipient` (32 B). Output is plaintext.size() + kSealOverhead.
[[nodiscard]] result<Bytes> SealTo(ByteView recipient, ByteView plaintext) noexcept;
[[nodiscard]] result<SecureBuffer> OpenSealed(const BoxPublicKey& public_key,
                                              const SecureBuffer& secret_key,
                                              ByteView sealed) noexcept;

// ---- Passphrase key derivation (Argon2id) ---------------------------------------

inline constexpr std::size_t kKdfSaltBytes = 16;
struct KdfParams {
  std::uint64_t opslimit = 0;
  std::uint64_t memlimit = 0;
  int alg = 0;  // crypto_pwhash_ALG_ARGON2ID13
  std::array<std::uint8_t, kKdfSaltBytes> salt{};
};
// libsodium's INTERACTIVE limits with a fresh salt: the floor Teduh accepts.
KdfParams InteractiveKdfParams() noexcept;
// Parameters (fresh salt) whose derivation takes about `target` on this
// machine: INTERACTIVE memory, opslimit raised until the target is reached
// (never below INTERACTIVE, never above 32 passes).
KdfParams CalibrateKdf(std::chrono::milliseconds target) noexcept;
// True when `p` uses Argon2id, is at least as strong as INTERACTIVE, and asks
// for no more than 32 passes and 1 GiB (so an altered vault cannot stall an unlock).
bool KdfParamsAcceptable(const KdfParams& p) noexcept;
// Derives a kAeadKeyBytes key from `passphrase`. Returns errc::kdf_failed, without
// deriving, when !KdfParamsAcceptable(params), and when Argon2id fails (memory).
[[nodiscard]] result<SecureBuffer> DeriveKey(const SecureBuffer& passphrase,
                                             const KdfParams& params) noexcept;

}  // namespace teduh::crypto

namespace boost::system {
template <>
struct is_error_code_enum<teduh::crypto::errc> : std::true_type {};
}  // namespace boost::system
