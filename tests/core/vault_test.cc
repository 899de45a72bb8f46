#include "teduh/core/vault.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "teduh/core/ids.h"
#include "teduh/keys/v1/keys.pb.h"

namespace teduh::core {
namespace {

namespace fs = std::filesystem;

crypto::SecureBuffer Pass(std::string_view s) {
  return std::move(*crypto::SecureBuffer::CopyOf(AsSpan(s)));
}

crypto::SecureBuffer Secret(std::size_t n, std::uint8_t fill) {
  auto b = std::move(*crypto::SecureBuffer::Allocate(n));
  for (auto& c : b.span()) c = fill;
  return b;
}

VaultSecrets SampleSecrets() {
  VaultSecrets s;
  s.storage_key = Secret(32, 1);
  s.device_sign_sk = Secret(64, 2);
  s.device_box_sk = Secret(32, 3);
  s.unit_root_sk = Secret(64, 4);
  s.pinned_unit_root_pk.fill(5);
  s.has_pinned_unit_root_pk = true;
  s.class_keys.emplace(std::make_pair(ACCESS_CLASS_GENERAL, 1u), Secret(32, 6));
  s.class_keys.emplace(std::make_pair(ACCESS_CLASS_CLINICAL, 1u), Secret(32, 7));
  return s;
}

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

class VaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(crypto::Init());
    dir_ = fs::temp_directory_path() / ("teduh-vault-" + ToHex(NewId()));
    fs::create_directories(dir_);
    path_ = dir_ / "vault";
    options_.kdf = KdfMode::kInteractive;
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_, path_;
  VaultOptions options_;
};

TEST_F(VaultTest, RoundTripKeepsEverySecret) {
  ASSERT_TRUE(Vault::Create(path_, Pass("kata sandi"), SampleSecrets(), options_));
  auto v = Vault::Unlock(path_, Pass("kata sandi"), options_);
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_EQ((*v)->storage_key().size(), 32u);
  EXPECT_EQ((*v)->storage_key().data()[0], 1);
  EXPECT_EQ((*v)->device_sign_sk().size(), 64u);
  EXPECT_EQ((*v)->device_sign_sk().data()[63], 2);
  EXPECT_EQ((*v)->device_box_sk().data()[0], 3);
  EXPECT_EQ((*v)->unit_root_sk().data()[0], 4);
  ASSERT_TRUE((*v)->pinned_unit_root_pk());
  EXPECT_EQ((*(*v)->pinned_unit_root_pk())[0], 5);
  ASSERT_NE((*v)->class_key(ACCESS_CLASS_CLINICAL, 1), nullptr);
  EXPECT_EQ((*v)->class_key(ACCESS_CLASS_CLINICAL, 1)->data()[0], 7);
  EXPECT_EQ((*v)->latest_epoch(ACCESS_CLASS_GENERAL), 1u);
}

TEST_F(VaultTest, FileHoldsNoSecretInTheClear) {
  ASSERT_TRUE(Vault::Create(path_, Pass("kata sandi"), SampleSecrets(), options_));
  std::string bytes = ReadAll(path_);
  EXPECT_EQ(bytes.find(std::string(32, '\x01')), std::string::npos);
  EXPECT_EQ(bytes.find(std::string(32, '\x06')), std::string::npos);
}

TEST_F(VaultTest, WrongPassphraseIsRefusedAndSecretsUnchanged) {
  ASSERT_TRUE(Vault::Create(path_, Pass("kata sandi"), SampleSecrets(), options_));
  teduh::keys::v1::VaultFile before;
  ASSERT_TRUE(before.ParseFromString(ReadAll(path_)));
  auto v = Vault::Unlock(path_, Pass("salah"), options_);
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().code, errc::wrong_passphrase);
  teduh::keys::v1::VaultFile after;
  ASSERT_TRUE(after.ParseFromString(ReadAll(path_)));
  EXPECT_EQ(after.ciphertext(), before.ciphertext());
  EXPECT_EQ(after.salt(), before.salt());
  EXPECT_EQ(after.nonce(), before.nonce());
  EXPECT_EQ(after.failed_unlocks(), 1u);
  auto ok = Vault::Unlock(path_, Pass("kata sandi"), options_);
  ASSERT_TRUE(ok);
  EXPECT_EQ(*Vault::FailedUnlocks(path_), 0u);
}

TEST_F(VaultTest, ErasesItselfAfterConfiguredFailures) {
  options_.max_failed_unlocks = 3;
  ASSERT_TRUE(Vault::Create(path_, Pass("kata sandi"), SampleSecrets(), options_));
  EXPECT_EQ(Vault::Unlock(path_, Pass("a"), options_).error().code, errc::wrong_passphrase);
  EXPECT_EQ(Vault::Unlock(path_, Pass("b"), options_).error().code, errc::wrong_passphrase);
  EXPECT_EQ(Vault::Unlock(path_, Pass("c"), options_).error().code, errc::vault_wiped);
  EXPECT_FALSE(fs::exists(path_));
  EXPECT_EQ(Vault::Unlock(path_, Pass("kata sandi"), options_).error().code, errc::vault_missing);
}

TEST_F(VaultTest, WipeIsOffByDefault) {
  ASSERT_TRUE(Vault::Create(path_, Pass("kata sandi"), SampleSecrets(), options_));
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(Vault::Unlock(path_, Pass("x"), options_).error().code, errc::wrong_passphrase);
  }
  EXPECT_TRUE(Vault::Unlock(path_, Pass("kata sandi"), options_));
}

TEST_F(VaultTest, RefusesToOverwriteAnExistingVault) {
  ASSERT_TRUE(Vault::Create(path_, Pass("kata sandi"), SampleSecrets(), options_));
  auto again = Vault::Create(path_, Pass("lain"), SampleSecrets(), options_);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, errc::vault_exists);
  EXPECT_TRUE(Vault::Unlock(path_, Pass("kata sandi"), options_));
}

TEST_F(VaultTest, AddedClassKeysSurviveReopen) {
  VaultSecrets s = SampleSecrets();
  s.class_keys.clear();
  auto v = Vault::Create(path_, Pass("kata sandi"), std::move(s), options_);
  ASSERT_TRUE(v);
  std::map<std::pair<teduh::AccessClass, std::uint32_t>, crypto::SecureBuffer> keys;
  keys.emplace(std::make_pair(ACCESS_CLASS_GENERAL, 2u), Secret(32, 9));
  ASSERT_TRUE((*v)->AddClassKeys(std::move(keys)));
  auto again = Vault::Unlock(path_, Pass("kata sandi"), options_);
  ASSERT_TRUE(again);
  ASSERT_NE((*again)->class_key(ACCESS_CLASS_GENERAL, 2), nullptr);
  EXPECT_EQ((*again)->class_key(ACCESS_CLASS_GENERAL, 2)->data()[5], 9);
  EXPECT_EQ((*again)->latest_epoch(ACCESS_CLASS_GENERAL), 2u);
  EXPECT_EQ((*again)->latest_epoch(ACCESS_CLASS_CLINICAL), std::nullopt);
}

TEST_F(VaultTest, DamagedFileIsReportedAsCorrupt) {
  ASSERT_TRUE(Vault::Create(path_, Pass("kata sandi"), SampleSecrets(), options_));
  { std::ofstream(path_, std::ios::binary | std::ios::trunc) << "not a vault"; }
  EXPECT_TRUE(Vault::Unlock(path_, Pass("kata sandi"), options_)) << "its copy opens";
  for (const char* name : {"vault", "vault.copy"})
    std::ofstream(dir_ / name, std::ios::binary | std::ios::trunc) << "not a vault";
  EXPECT_EQ(Vault::Unlock(path_, Pass("kata sandi"), options_).error().code, errc::vault_corrupt);
}

TEST_F(VaultTest, LockWipesSecretsFromMemory) {
  auto v = Vault::Create(path_, Pass("kata sandi"), SampleSecrets(), options_);
  ASSERT_TRUE(v);
  (*v)->Lock();
  EXPECT_TRUE((*v)->locked());
  EXPECT_TRUE((*v)->storage_key().empty());
  EXPECT_EQ((*v)->class_key(ACCESS_CLASS_GENERAL, 1), nullptr);
}

// ---- Damage is not a wrong passphrase (docs/CLIENT.md, "Failed unlocks") ----

fs::path CopyOf(const fs::path& p) { return fs::path(p.string() + ".copy"); }

void FlipBitInCiphertext(const fs::path& p) {
  teduh::keys::v1::VaultFile f;
  ASSERT_TRUE(f.ParseFromString(ReadAll(p)));
  std::string c = f.ciphertext();
  c[c.size() / 2] = static_cast<char>(c[c.size() / 2] ^ 0x04);
  f.set_ciphertext(c);
  std::ofstream(p, std::ios::binary | std::ios::trunc) << f.SerializeAsString();
}

TEST_F(VaultTest, AFlippedBitIsDamageNotAWrongPassphraseAndTheCopyOpensIt) {
  options_.max_failed_unlocks = 2;
  ASSERT_TRUE(Vault::Create(path_, Pass("kata sandi"), SampleSecrets(), options_));
  ASSERT_TRUE(fs::exists(CopyOf(path_)));
  FlipBitInCiphertext(path_);
  for (int i = 0; i < 3; ++i) {
    auto v = Vault::Unlock(path_, Pass("kata sandi"), options_);
    ASSERT_TRUE(v) << v.error().message;
    EXPECT_EQ((*v)->storage_key().data()[0], 1);
  }
  EXPECT_EQ(*Vault::FailedUnlocks(path_), 0u) << "damage is never a failed try";
  // The damaged file was rewritten from the copy: it opens on its own again.
  fs::remove(CopyOf(path_));
  EXPECT_TRUE(Vault::Unlock(path_, Pass("kata sandi"), options_));
}

TEST_F(VaultTest, BothCopiesDamagedIsSaidClearlyAndNeverErases) {
  options_.max_failed_unlocks = 2;
  ASSERT_TRUE(Vault::Create(path_, Pass("kata sandi"), SampleSecrets(), options_));
  FlipBitInCiphertext(path_);
  FlipBitInCiphertext(CopyOf(path_));
  for (int i = 0; i < 4; ++i) {
    auto v = Vault::Unlock(path_, Pass(i % 2 ? "kata sandi" : "salah sekali"), options_);
    ASSERT_FALSE(v);
    EXPECT_EQ(v.error().code, errc::vault_corrupt);
    EXPECT_NE(v.error().message.find("not a wrong passphrase"), std::string::npos)
        << v.error().message;
  }
  EXPECT_TRUE(fs::exists(path_));
  EXPECT_TRUE(fs::exists(CopyOf(path_)));
}

TEST_F(VaultTest, ALostVaultFileOpensFromItsCopy) {
  ASSERT_TRUE(Vault::Create(path_, Pass("kata sandi"), SampleSecrets(), options_));
  fs::remove(path_);
  EXPECT_TRUE(Vault::Exists(path_));
  ASSERT_TRUE(Vault::Unlock(path_, Pass("kata sandi"), options_));
  EXPECT_TRUE(fs::exists(path_));
}

TEST_F(VaultTest, TheLimitLivesInTheVaultAndIsBoundToIt) {
  options_.max_failed_unlocks = 3;
  ASSERT_TRUE(Vault::Create(path_, Pass("kata sandi"), SampleSecrets(), options_));
  EXPECT_EQ(*Vault::MaxFailedUnlocks(path_, 0), 3u);
  // Editing the limit in the file (and fixing its checksum) does not switch it
  // off: the passphrase no longer opens the vault.
  const std::string original = ReadAll(path_);
  teduh::keys::v1::VaultFile f;
  ASSERT_TRUE(f.ParseFromString(original));
  f.set_max_failed_unlocks(0);
  teduh::keys::v1::VaultFile c = f;
  c.set_failed_unlocks(0);
  c.clear_checksum();
  const std::string body = c.SerializeAsString();
  const auto h = crypto::Hash(AsSpan(body));
  f.set_checksum(std::string(reinterpret_cast<const char*>(h.data()), h.size()));
  for (const auto& p : {path_, CopyOf(path_)})
    std::ofstream(p, std::ios::binary | std::ios::trunc) << f.SerializeAsString();
  EXPECT_EQ(Vault::Unlock(path_, Pass("kata sandi"), options_).error().code,
            errc::wrong_passphrase);
  // Put back, the limit counts whatever the caller's options say.
  for (const auto& p : {path_, CopyOf(path_)})
    std::ofstream(p, std::ios::binary | std::ios::trunc) << original;
  VaultOptions edited = options_;
  edited.max_failed_unlocks = 0;  // as if device.json were edited
  EXPECT_EQ(Vault::Unlock(path_, Pass("a"), edited).error().code, errc::wrong_passphrase);
  EXPECT_EQ(Vault::Unlock(path_, Pass("b"), edited).error().code, errc::wrong_passphrase);
  EXPECT_EQ(Vault::Unlock(path_, Pass("c"), edited).error().code, errc::vault_wiped);
  EXPECT_FALSE(fs::exists(path_));
  EXPECT_FALSE(fs::exists(CopyOf(path_)));
}

TEST_F(VaultTest, AWrongPassphraseCountsInBothCopies) {
  options_.max_failed_unlocks = 3;
  ASSERT_TRUE(Vault::Create(path_, Pass("kata sandi"), SampleSecrets(), options_));
  EXPECT_EQ(Vault::Unlock(path_, Pass("a"), options_).error().code, errc::wrong_passphrase);
  EXPECT_EQ(Vault::Unlock(path_, Pass("b"), options_).error().code, errc::wrong_passphrase);
  // Damaging the file to fall back on the copy does not reset the count.
  FlipBitInCiphertext(path_);
  EXPECT_EQ(Vault::Unlock(path_, Pass("c"), options_).error().code, errc::vault_wiped);
}

}  // namespace
}  // namespace teduh::core
