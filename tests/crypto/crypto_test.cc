#include "teduh/crypto/crypto.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <utility>

namespace teduh::crypto {
namespace {

// ---- Helpers ----------------------------------------------------------------

class CryptoEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { ASSERT_FALSE(Init()); }
};
[[maybe_unused]] ::testing::Environment* const kEnvironment =
    ::testing::AddGlobalTestEnvironment(new CryptoEnvironment);

ByteView AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

Bytes FromHex(std::string_view hex) {
  Bytes out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<std::uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

bool AllZero(ByteView bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](std::uint8_t b) { return b == 0; });
}

bool SameBytes(ByteView a, ByteView b) { return std::ranges::equal(a, b); }

SecureBuffer MustAllocate(std::size_t size) {
  auto buffer = SecureBuffer::Allocate(size);
  EXPECT_TRUE(buffer);
  return buffer ? std::move(*buffer) : SecureBuffer{};
}

SecureBuffer MustCopy(ByteView bytes) {
  auto buffer = SecureBuffer::CopyOf(bytes);
  EXPECT_TRUE(buffer);
  return buffer ? std::move(*buffer) : SecureBuffer{};
}

SecureBuffer AeadKey() {
  auto key = RandomSecret(kAeadKeyBytes);
  EXPECT_TRUE(key);
  return key ? std::move(*key) : SecureBuffer{};
}

Bytes MustSeal(const SecureBuffer& key, ByteView plaintext, ByteView ad) {
  auto sealed = AeadSeal(key, plaintext, ad);
  EXPECT_TRUE(sealed) << sealed.error().message();
  return sealed ? std::move(*sealed) : Bytes{};
}

constexpr std::string_view kPlaintext = "korban: 14 tahun, Kec. Tebet";
constexpr std::string_view kAd = "record-1|field-2|stamp-3";

// ---- Errors and initialisation -----------------------------------------------

TEST(CryptoErrorTest, CategoryIsNamedAndEveryCodeHasItsOwnMessage) {
  EXPECT_STREQ(crypto_category().name(), "teduh.crypto");
  std::set<std::string> messages;
  for (errc e : {errc::init_failed, errc::bad_length, errc::decrypt_failed, errc::bad_signature,
                 errc::out_of_memory, errc::kdf_failed}) {
    const error_code ec = e;
    EXPECT_EQ(&ec.category(), &crypto_category());
    EXPECT_TRUE(ec.failed());
    EXPECT_FALSE(ec.message().empty());
    messages.insert(ec.message());
  }
  EXPECT_EQ(messages.size(), 6u);
}

TEST(CryptoErrorTest, ErrorCodeComparesEqualToItsEnum) {
  const error_code ec = make_error_code(errc::decrypt_failed);
  EXPECT_EQ(ec, errc::decrypt_failed);
  EXPECT_NE(ec, errc::bad_length);
}

TEST(InitTest, InitIsIdempotent) {
  EXPECT_FALSE(Init());
  EXPECT_FALSE(Init());
}

// ---- SecureBuffer -------------------------------------------------------------

TEST(SecureBufferTest, AllocateGivesZeroFilledBuffer) {
  SecureBuffer buffer = MustAllocate(100);
  ASSERT_EQ(buffer.size(), 100u);
  ASSERT_NE(buffer.data(), nullptr);
  EXPECT_TRUE(AllZero(buffer.view()));
}

TEST(SecureBufferTest, AllocateZeroGivesEmptyBuffer) {
  SecureBuffer buffer = MustAllocate(0);
  EXPECT_TRUE(buffer.empty());
  EXPECT_EQ(buffer.data(), nullptr);
}

TEST(SecureBufferTest, CopyOfHoldsTheSameBytes) {
  const auto bytes = RandomArray<48>();
  SecureBuffer buffer = MustCopy(bytes);
  EXPECT_TRUE(SameBytes(buffer.view(), bytes));
}

TEST(SecureBufferTest, CloneIsAnIndependentCopy) {
  SecureBuffer original = MustCopy(AsBytes("rahasia"));
  auto clone = original.Clone();
  ASSERT_TRUE(clone);
  EXPECT_NE(clone->data(), original.data());
  EXPECT_TRUE(SameBytes(clone->view(), original.view()));
  clone->data()[0] ^= 1;
  EXPECT_TRUE(SameBytes(original.view(), AsBytes("rahasia")));
}

TEST(SecureBufferTest, SecureBufferMoveLeavesSourceEmpty) {
  SecureBuffer source = MustCopy(AsBytes("rahasia"));
  const std::uint8_t* memory = source.data();
  SecureBuffer target(std::move(source));
  EXPECT_TRUE(source.empty());  // NOLINT(bugprone-use-after-move): the contract under test
  EXPECT_EQ(source.data(), nullptr);
  EXPECT_EQ(target.data(), memory);
  EXPECT_TRUE(SameBytes(target.view(), AsBytes("rahasia")));
}

TEST(SecureBufferTest, MoveAssignmentReplacesContentsAndLeavesSourceEmpty) {
  SecureBuffer source = MustCopy(AsBytes("baru"));
  SecureBuffer target = MustCopy(AsBytes("lama"));
  target = std::move(source);
  EXPECT_TRUE(source.empty());  // NOLINT(bugprone-use-after-move)
  EXPECT_TRUE(SameBytes(target.view(), AsBytes("baru")));
}

TEST(SecureBufferTest, SelfMoveAssignmentKeepsContents) {
  SecureBuffer buffer = MustCopy(AsBytes("tetap"));
  SecureBuffer& alias = buffer;
  buffer = std::move(alias);
  EXPECT_TRUE(SameBytes(buffer.view(), AsBytes("tetap")));
}

TEST(SecureBufferTest, ResetEmptiesBuffer) {
  SecureBuffer buffer = MustCopy(AsBytes("rahasia"));
  buffer.Reset();
  EXPECT_TRUE(buffer.empty());
  EXPECT_EQ(buffer.data(), nullptr);
  buffer.Reset();  // a second reset is harmless
  EXPECT_TRUE(buffer.empty());
}

TEST(WipeTest, WipeZeroesBytes) {
  auto bytes = RandomArray<64>();
  bytes[0] = 0xff;
  Wipe(bytes);
  EXPECT_TRUE(AllZero(bytes));
}

TEST(WipeTest, WipeZeroesAndClearsString) {
  std::string secret(64, 'x');  // long enough to live on the heap
  const char* storage = secret.data();
  Wipe(secret);
  EXPECT_TRUE(secret.empty());
  // The allocation is kept, so its old characters can be inspected.
  ASSERT_EQ(secret.data(), storage);
  EXPECT_TRUE(std::all_of(storage, storage + 64, [](char c) { return c == '\0'; }));
}

TEST(ConstantTimeEqualTest, EqualContentsCompareEqual) {
  const auto a = RandomArray<32>();
  auto b = a;
  EXPECT_TRUE(ConstantTimeEqual(a, b));
  b[31] ^= 1;
  EXPECT_FALSE(ConstantTimeEqual(a, b));
}

TEST(ConstantTimeEqualTest, DifferentLengthsAreNotEqual) {
  const auto a = RandomArray<32>();
  EXPECT_FALSE(ConstantTimeEqual(a, ByteView(a).first(31)));
}

TEST(ConstantTimeEqualTest, TwoEmptyBuffersAreEqual) {
  EXPECT_TRUE(ConstantTimeEqual(ByteView{}, ByteView{}));
}

// ---- Randomness and hashing -----------------------------------------------------

TEST(RandomTest, RandomBytesDifferEachCall) { EXPECT_NE(RandomArray<32>(), RandomArray<32>()); }

TEST(RandomTest, RandomSecretHasRequestedSizeAndRandomContents) {
  auto secret = RandomSecret(32);
  ASSERT_TRUE(secret);
  EXPECT_EQ(secret->size(), 32u);
  EXPECT_FALSE(AllZero(secret->view()));
}

TEST(HashTest, HashMatchesBlake2b256KnownAnswers) {
  const Bytes abc = FromHex("bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
  const Bytes empty = FromHex("0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
  EXPECT_TRUE(SameBytes(Hash(AsBytes("abc")), abc));
  EXPECT_TRUE(SameBytes(Hash({}), empty));
}

// ---- AEAD -------------------------------------------------------------------------

TEST(AeadTest, AeadSealThenOpenRoundTrips) {
  const SecureBuffer key = AeadKey();
  const Bytes sealed = MustSeal(key, AsBytes(kPlaintext), AsBytes(kAd));
  EXPECT_EQ(sealed.size(), kPlaintext.size() + kAeadOverhead);
  auto opened = AeadOpen(key, sealed, AsBytes(kAd));
  ASSERT_TRUE(opened) << opened.error().message();
  EXPECT_TRUE(SameBytes(opened->view(), AsBytes(kPlaintext)));
}

TEST(AeadTest, AeadOpenIntoRoundTrips) {
  const SecureBuffer key = AeadKey();
  const Bytes sealed = MustSeal(key, AsBytes(kPlaintext), AsBytes(kAd));
  std::array<std::uint8_t, kPlaintext.size()> out{};
  EXPECT_FALSE(AeadOpenInto(key, sealed, AsBytes(kAd), out));
  EXPECT_TRUE(SameBytes(out, AsBytes(kPlaintext)));
}

TEST(AeadTest, AeadRoundTripsEmptyPlaintextAndEmptyAssociatedData) {
  const SecureBuffer key = AeadKey();
  const Bytes sealed = MustSeal(key, {}, {});
  EXPECT_EQ(sealed.size(), kAeadOverhead);
  auto opened = AeadOpen(key, sealed, {});
  ASSERT_TRUE(opened) << opened.error().message();
  EXPECT_TRUE(opened->empty());
}

TEST(AeadTest, AeadOpenRejectsAlteredEmptyPlaintext) {
  const SecureBuffer key = AeadKey();
  Bytes sealed = MustSeal(key, {}, {});
  sealed.back() ^= 1;
  auto opened = AeadOpen(key, sealed, {});
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error(), errc::decrypt_failed);
}

TEST(AeadTest, AeadSealUsesFreshNonceEachTime) {
  const SecureBuffer key = AeadKey();
  const Bytes a = MustSeal(key, AsBytes(kPlaintext), AsBytes(kAd));
  const Bytes b = MustSeal(key, AsBytes(kPlaintext), AsBytes(kAd));
  EXPECT_FALSE(std::equal(a.begin(), a.begin() + kAeadNonceBytes, b.begin()));
  EXPECT_NE(a, b);
}

TEST(AeadTest, AeadSealAppendKeepsExistingBytes) {
  const SecureBuffer key = AeadKey();
  const Bytes prefix = {1, 2, 3};
  Bytes out = prefix;
  ASSERT_FALSE(AeadSealAppend(key, AsBytes(kPlaintext), AsBytes(kAd), out));
  ASSERT_EQ(out.size(), prefix.size() + kPlaintext.size() + kAeadOverhead);
  EXPECT_TRUE(std::equal(prefix.begin(), prefix.end(), out.begin()));
  auto opened = AeadOpen(key, ByteView(out).subspan(prefix.size()), AsBytes(kAd));
  ASSERT_TRUE(opened);
  EXPECT_TRUE(SameBytes(opened->view(), AsBytes(kPlaintext)));
}

TEST(AeadTest, AeadOpenRejectsAlteredCiphertext) {
  const SecureBuffer key = AeadKey();
  const Bytes sealed = MustSeal(key, AsBytes(kPlaintext), AsBytes(kAd));
  // Every byte matters: nonce, ciphertext and tag.
  for (std::size_t i = 0; i < sealed.size(); ++i) {
    Bytes altered = sealed;
    altered[i] ^= 0x01;
    auto opened = AeadOpen(key, altered, AsBytes(kAd));
    ASSERT_FALSE(opened) << "byte " << i;
    EXPECT_EQ(opened.error(), errc::decrypt_failed);
  }
}

TEST(AeadTest, AeadOpenRejectsWrongAssociatedData) {
  const SecureBuffer key = AeadKey();
  const Bytes sealed = MustSeal(key, AsBytes(kPlaintext), AsBytes(kAd));
  auto opened = AeadOpen(key, sealed, AsBytes("record-1|field-9|stamp-3"));
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error(), errc::decrypt_failed);
  auto without_ad = AeadOpen(key, sealed, {});
  ASSERT_FALSE(without_ad);
  EXPECT_EQ(without_ad.error(), errc::decrypt_failed);
}

TEST(AeadTest, AeadOpenRejectsWrongKey) {
  const SecureBuffer key = AeadKey();
  const SecureBuffer other = AeadKey();
  const Bytes sealed = MustSeal(key, AsBytes(kPlaintext), AsBytes(kAd));
  auto opened = AeadOpen(other, sealed, AsBytes(kAd));
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error(), errc::decrypt_failed);
}

TEST(AeadTest, AeadOpenRejectsInputShorterThanOverhead) {
  const SecureBuffer key = AeadKey();
  const Bytes sealed = MustSeal(key, {}, AsBytes(kAd));
  auto opened = AeadOpen(key, ByteView(sealed).first(kAeadOverhead - 1), AsBytes(kAd));
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error(), errc::bad_length);
}

TEST(AeadTest, AeadOpenRejectsTruncatedCiphertext) {
  const SecureBuffer key = AeadKey();
  const Bytes sealed = MustSeal(key, AsBytes(kPlaintext), AsBytes(kAd));
  auto opened = AeadOpen(key, ByteView(sealed).first(sealed.size() - 1), AsBytes(kAd));
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error(), errc::decrypt_failed);
}

TEST(AeadTest, AeadOpenIntoWipesOutputOnFailure) {
  const SecureBuffer key = AeadKey();
  Bytes sealed = MustSeal(key, AsBytes(kPlaintext), AsBytes(kAd));
  sealed[kAeadNonceBytes] ^= 1;
  std::array<std::uint8_t, kPlaintext.size()> out;
  out.fill(0xaa);
  EXPECT_EQ(AeadOpenInto(key, sealed, AsBytes(kAd), out), errc::decrypt_failed);
  EXPECT_TRUE(AllZero(out));
}

TEST(AeadTest, AeadOpenIntoRejectsWrongOutputSizeAndWipesIt) {
  const SecureBuffer key = AeadKey();
  const Bytes sealed = MustSeal(key, AsBytes(kPlaintext), AsBytes(kAd));
  std::array<std::uint8_t, kPlaintext.size() + 1> out;
  out.fill(0xaa);
  EXPECT_EQ(AeadOpenInto(key, sealed, AsBytes(kAd), out), errc::bad_length);
  EXPECT_TRUE(AllZero(out));
}

TEST(AeadTest, AeadRejectsShortKey) {
  auto short_key = RandomSecret(kAeadKeyBytes - 1);
  ASSERT_TRUE(short_key);
  auto sealed = AeadSeal(*short_key, AsBytes(kPlaintext), AsBytes(kAd));
  ASSERT_FALSE(sealed);
  EXPECT_EQ(sealed.error(), errc::bad_length);

  const Bytes good = MustSeal(AeadKey(), AsBytes(kPlaintext), AsBytes(kAd));
  auto opened = AeadOpen(*short_key, good, AsBytes(kAd));
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error(), errc::bad_length);
}

TEST(AeadTest, AeadRejectsEmptyKey) {
  auto sealed = AeadSeal(SecureBuffer{}, AsBytes(kPlaintext), AsBytes(kAd));
  ASSERT_FALSE(sealed);
  EXPECT_EQ(sealed.error(), errc::bad_length);
}

TEST(AeadTest, AeadSealAppendWithBadKeyLeavesOutputUnchanged) {
  auto long_key = RandomSecret(kAeadKeyBytes + 1);
  ASSERT_TRUE(long_key);
  const Bytes prefix = {9, 8, 7};
  Bytes out = prefix;
  EXPECT_EQ(AeadSealAppend(*long_key, AsBytes(kPlaintext), AsBytes(kAd), out), errc::bad_length);
  EXPECT_EQ(out, prefix);
}

// ---- Signatures -------------------------------------------------------------------

SignKeyPair MustSignKeyPair() {
  auto pair = GenerateSignKeyPair();
  EXPECT_TRUE(pair);
  return pair ? std::move(*pair) : SignKeyPair{};
}

TEST(SignatureTest, SignThenVerifySucceeds) {
  const SignKeyPair pair = MustSignKeyPair();
  EXPECT_EQ(pair.secret_key.size(), kSignSecretKeyBytes);
  auto signature = Sign(pair.secret_key, AsBytes("grant: device 7, CLINICAL, epoch 3"));
  ASSERT_TRUE(signature);
  EXPECT_TRUE(Verify(pair.public_key, AsBytes("grant: device 7, CLINICAL, epoch 3"), *signature));
}

TEST(SignatureTest, SignatureFailsOnOtherMessage) {
  const SignKeyPair pair = MustSignKeyPair();
  auto signature = Sign(pair.secret_key, AsBytes("grant: device 7, CLINICAL, epoch 3"));
  ASSERT_TRUE(signature);
  EXPECT_FALSE(Verify(pair.public_key, AsBytes("grant: device 8, CLINICAL, epoch 3"), *signature));
}

TEST(SignatureTest, SignatureFailsUnderOtherPublicKey) {
  const SignKeyPair pair = MustSignKeyPair();
  const SignKeyPair other = MustSignKeyPair();
  auto signature = Sign(pair.secret_key, AsBytes("revoke device 7"));
  ASSERT_TRUE(signature);
  EXPECT_FALSE(Verify(other.public_key, AsBytes("revoke device 7"), *signature));
}

TEST(SignatureTest, SignatureFailsWhenAltered) {
  const SignKeyPair pair = MustSignKeyPair();
  auto signature = Sign(pair.secret_key, AsBytes("revoke device 7"));
  ASSERT_TRUE(signature);
  for (std::size_t i = 0; i < kSignatureBytes; ++i) {
    Signature altered = *signature;
    altered[i] ^= 0x01;
    EXPECT_FALSE(Verify(pair.public_key, AsBytes("revoke device 7"), altered)) << "byte " << i;
  }
}

TEST(SignatureTest, VerifyRejectsWrongLengthKeyOrSignature) {
  const SignKeyPair pair = MustSignKeyPair();
  auto signature = Sign(pair.secret_key, AsBytes("m"));
  ASSERT_TRUE(signature);
  EXPECT_FALSE(Verify(ByteView(pair.public_key).first(31), AsBytes("m"), *signature));
  EXPECT_FALSE(Verify(pair.public_key, AsBytes("m"), ByteView(*signature).first(63)));
  EXPECT_FALSE(Verify({}, AsBytes("m"), {}));
}

TEST(SignatureTest, SignMatchesRfc8032TestVector1) {
  // RFC 8032 section 7.1, TEST 1: secret key is seed || public key.
  const Bytes seed = FromHex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
  const Bytes public_key =
      FromHex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
  const Bytes expected = FromHex(
      "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e3970"
      "1cf9b46bd25bf5f0595bbe24655141438e7a100b");
  SecureBuffer secret_key = MustAllocate(kSignSecretKeyBytes);
  std::copy(seed.begin(), seed.end(), secret_key.data());
  std::copy(public_key.begin(), public_key.end(), secret_key.data() + seed.size());
  auto signature = Sign(secret_key, {});
  ASSERT_TRUE(signature);
  EXPECT_TRUE(SameBytes(*signature, expected));
  EXPECT_TRUE(Verify(public_key, {}, *signature));
}

TEST(SignatureTest, SignPublicKeyOfMatchesGeneratedPublicKey) {
  const SignKeyPair pair = MustSignKeyPair();
  auto public_key = SignPublicKeyOf(pair.secret_key);
  ASSERT_TRUE(public_key);
  EXPECT_EQ(*public_key, pair.public_key);
}

TEST(SignatureTest, SignRejectsWrongLengthSecretKey) {
  auto short_key = RandomSecret(32);
  ASSERT_TRUE(short_key);
  auto signature = Sign(*short_key, AsBytes("m"));
  ASSERT_FALSE(signature);
  EXPECT_EQ(signature.error(), errc::bad_length);
  auto public_key = SignPublicKeyOf(*short_key);
  ASSERT_FALSE(public_key);
  EXPECT_EQ(public_key.error(), errc::bad_length);
}

// ---- Sealed boxes -------------------------------------------------------------------

BoxKeyPair MustBoxKeyPair() {
  auto pair = GenerateBoxKeyPair();
  EXPECT_TRUE(pair);
  return pair ? std::move(*pair) : BoxKeyPair{};
}

TEST(SealedBoxTest, SealedBoxRoundTrips) {
  const BoxKeyPair recipient = MustBoxKeyPair();
  const auto class_key = RandomArray<32>();
  auto sealed = SealTo(recipient.public_key, class_key);
  ASSERT_TRUE(sealed);
  EXPECT_EQ(sealed->size(), class_key.size() + kSealOverhead);
  auto opened = OpenSealed(recipient.public_key, recipient.secret_key, *sealed);
  ASSERT_TRUE(opened) << opened.error().message();
  EXPECT_TRUE(SameBytes(opened->view(), class_key));
}

TEST(SealedBoxTest, SealedBoxRoundTripsEmptyPlaintext) {
  const BoxKeyPair recipient = MustBoxKeyPair();
  auto sealed = SealTo(recipient.public_key, {});
  ASSERT_TRUE(sealed);
  EXPECT_EQ(sealed->size(), kSealOverhead);
  auto opened = OpenSealed(recipient.public_key, recipient.secret_key, *sealed);
  ASSERT_TRUE(opened) << opened.error().message();
  EXPECT_TRUE(opened->empty());
}

TEST(SealedBoxTest, SealedBoxOpensOnlyWithRecipientKey) {
  const BoxKeyPair recipient = MustBoxKeyPair();
  const BoxKeyPair other = MustBoxKeyPair();
  auto sealed = SealTo(recipient.public_key, AsBytes("class key"));
  ASSERT_TRUE(sealed);
  auto opened = OpenSealed(other.public_key, other.secret_key, *sealed);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error(), errc::decrypt_failed);
  // The right secret key with the wrong public key also fails (it is in the nonce).
  auto mismatched = OpenSealed(other.public_key, recipient.secret_key, *sealed);
  ASSERT_FALSE(mismatched);
  EXPECT_EQ(mismatched.error(), errc::decrypt_failed);
}

TEST(SealedBoxTest, SealedBoxRejectsAlteredCiphertext) {
  const BoxKeyPair recipient = MustBoxKeyPair();
  auto sealed = SealTo(recipient.public_key, AsBytes("class key"));
  ASSERT_TRUE(sealed);
  for (std::size_t i = 0; i < sealed->size(); ++i) {
    Bytes altered = *sealed;
    altered[i] ^= 0x01;
    auto opened = OpenSealed(recipient.public_key, recipient.secret_key, altered);
    ASSERT_FALSE(opened) << "byte " << i;
    EXPECT_EQ(opened.error(), errc::decrypt_failed);
  }
}

TEST(SealedBoxTest, SealedBoxRejectsInputShorterThanOverhead) {
  const BoxKeyPair recipient = MustBoxKeyPair();
  auto sealed = SealTo(recipient.public_key, {});
  ASSERT_TRUE(sealed);
  auto opened = OpenSealed(recipient.public_key, recipient.secret_key,
                           ByteView(*sealed).first(kSealOverhead - 1));
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error(), errc::bad_length);
}

TEST(SealedBoxTest, SealedBoxRejectsTruncatedCiphertext) {
  const BoxKeyPair recipient = MustBoxKeyPair();
  auto sealed = SealTo(recipient.public_key, AsBytes("class key"));
  ASSERT_TRUE(sealed);
  auto opened = OpenSealed(recipient.public_key, recipient.secret_key,
                           ByteView(*sealed).first(sealed->size() - 1));
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error(), errc::decrypt_failed);
}

TEST(SealedBoxTest, SealToRejectsWrongLengthRecipient) {
  const BoxKeyPair recipient = MustBoxKeyPair();
  auto sealed = SealTo(ByteView(recipient.public_key).first(31), AsBytes("class key"));
  ASSERT_FALSE(sealed);
  EXPECT_EQ(sealed.error(), errc::bad_length);
}

TEST(SealedBoxTest, SealToRejectsLowOrderRecipient) {
  const BoxPublicKey zero{};  // the identity: every shared secret would be zero
  auto sealed = SealTo(zero, AsBytes("class key"));
  ASSERT_FALSE(sealed);
  EXPECT_EQ(sealed.error(), errc::bad_length);
}

TEST(SealedBoxTest, OpenSealedRejectsWrongLengthSecretKey) {
  const BoxKeyPair recipient = MustBoxKeyPair();
  auto sealed = SealTo(recipient.public_key, AsBytes("class key"));
  ASSERT_TRUE(sealed);
  auto long_key = RandomSecret(kBoxSecretKeyBytes + 1);
  ASSERT_TRUE(long_key);
  auto opened = OpenSealed(recipient.public_key, *long_key, *sealed);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error(), errc::bad_length);
}

TEST(SealedBoxTest, BoxPublicKeyOfMatchesGeneratedPublicKey) {
  const BoxKeyPair pair = MustBoxKeyPair();
  EXPECT_EQ(pair.secret_key.size(), kBoxSecretKeyBytes);
  auto public_key = BoxPublicKeyOf(pair.secret_key);
  ASSERT_TRUE(public_key);
  EXPECT_EQ(*public_key, pair.public_key);
}

TEST(SealedBoxTest, BoxPublicKeyOfRejectsWrongLengthSecretKey) {
  auto short_key = RandomSecret(kBoxSecretKeyBytes - 1);
  ASSERT_TRUE(short_key);
  auto public_key = BoxPublicKeyOf(*short_key);
  ASSERT_FALSE(public_key);
  EXPECT_EQ(public_key.error(), errc::bad_length);
}

// ---- Passphrase key derivation ------------------------------------------------------
// Each Argon2id derivation at INTERACTIVE costs ~0.1-0.3 s: keep them few.

TEST(KdfTest, InteractiveKdfParamsAreAcceptableWithFreshSalt) {
  const KdfParams a = InteractiveKdfParams();
  const KdfParams b = InteractiveKdfParams();
  EXPECT_TRUE(KdfParamsAcceptable(a));
  EXPECT_NE(a.salt, b.salt);
}

TEST(KdfTest, KdfParamsBelowInteractiveAreNotAcceptable) {
  KdfParams fewer_passes = InteractiveKdfParams();
  fewer_passes.opslimit -= 1;
  EXPECT_FALSE(KdfParamsAcceptable(fewer_passes));
  KdfParams less_memory = InteractiveKdfParams();
  less_memory.memlimit -= 1;
  EXPECT_FALSE(KdfParamsAcceptable(less_memory));
  EXPECT_FALSE(KdfParamsAcceptable(KdfParams{}));
}

TEST(KdfTest, KdfParamsWithOtherAlgorithmAreNotAcceptable) {
  KdfParams argon2i = InteractiveKdfParams();
  argon2i.alg = 1;  // crypto_pwhash_ALG_ARGON2I13
  EXPECT_FALSE(KdfParamsAcceptable(argon2i));
}

TEST(KdfTest, StrongerKdfParamsAreAcceptable) {
  KdfParams stronger = InteractiveKdfParams();
  stronger.opslimit += 2;
  stronger.memlimit *= 2;
  EXPECT_TRUE(KdfParamsAcceptable(stronger));
}

TEST(KdfTest, AbsurdKdfParamsFromAnAlteredVaultAreNotAcceptable) {
  KdfParams passes = InteractiveKdfParams();
  passes.opslimit = 33;
  EXPECT_FALSE(KdfParamsAcceptable(passes));
  KdfParams memory = InteractiveKdfParams();
  memory.memlimit = (1ull << 30) + 1;
  EXPECT_FALSE(KdfParamsAcceptable(memory));
}

TEST(KdfTest, DeriveKeyIsDeterministicForSameSaltAndDiffersForOtherPassphrase) {
  const SecureBuffer passphrase = MustCopy(AsBytes("kata sandi yang panjang"));
  const SecureBuffer other = MustCopy(AsBytes("kata sandi yang panjanG"));
  const KdfParams params = InteractiveKdfParams();
  auto first = DeriveKey(passphrase, params);
  auto second = DeriveKey(passphrase, params);
  auto third = DeriveKey(other, params);
  ASSERT_TRUE(first) << first.error().message();
  ASSERT_TRUE(second);
  ASSERT_TRUE(third);
  EXPECT_EQ(first->size(), kAeadKeyBytes);
  EXPECT_TRUE(ConstantTimeEqual(first->view(), second->view()));
  EXPECT_FALSE(ConstantTimeEqual(first->view(), third->view()));
}

TEST(KdfTest, DeriveKeyDiffersForOtherSalt) {
  const SecureBuffer passphrase = MustCopy(AsBytes("kata sandi yang panjang"));
  auto first = DeriveKey(passphrase, InteractiveKdfParams());
  auto second = DeriveKey(passphrase, InteractiveKdfParams());
  ASSERT_TRUE(first);
  ASSERT_TRUE(second);
  EXPECT_FALSE(ConstantTimeEqual(first->view(), second->view()));
}

TEST(KdfTest, DeriveKeyAcceptsEmptyPassphrase) {
  // Passphrase policy belongs to the caller; an empty buffer must not reach
  // libsodium as a null pointer.
  auto key = DeriveKey(SecureBuffer{}, InteractiveKdfParams());
  ASSERT_TRUE(key) << key.error().message();
  EXPECT_EQ(key->size(), kAeadKeyBytes);
}

TEST(KdfTest, DeriveKeyRefusesParamsBelowInteractive) {
  const SecureBuffer passphrase = MustCopy(AsBytes("kata sandi"));
  KdfParams weak = InteractiveKdfParams();
  weak.opslimit = 1;
  weak.memlimit = 8192;
  auto key = DeriveKey(passphrase, weak);
  ASSERT_FALSE(key);
  EXPECT_EQ(key.error(), errc::kdf_failed);
}

TEST(KdfTest, CalibrateKdfNeverGoesBelowInteractive) {
  const KdfParams params = CalibrateKdf(std::chrono::milliseconds(0));
  const KdfParams interactive = InteractiveKdfParams();
  EXPECT_TRUE(KdfParamsAcceptable(params));
  EXPECT_EQ(params.opslimit, interactive.opslimit);
  EXPECT_EQ(params.memlimit, interactive.memlimit);
}

TEST(KdfTest, CalibrateKdfStopsAt32Passes) {
  const KdfParams params = CalibrateKdf(std::chrono::hours(1));
  EXPECT_TRUE(KdfParamsAcceptable(params));
  EXPECT_EQ(params.opslimit, 32u);
  EXPECT_EQ(params.memlimit, InteractiveKdfParams().memlimit);
}

}  // namespace
}  // namespace teduh::crypto
