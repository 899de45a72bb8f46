#include "teduh/core/sealing.h"

#include <gtest/gtest.h>

#include "teduh/core/schema.h"

namespace teduh::core {
namespace {

crypto::SecureBuffer Key() { return std::move(*crypto::RandomSecret(crypto::kAeadKeyBytes)); }

SealContext Ctx() {
  SealContext c;
  c.record_id = Id{1, 2, 3};
  c.kind = kPersonKind;
  c.field = 20;
  c.writer_hlc = HlcPack(1'700'000'000'000, 1);
  c.writer_device = Id{9};
  c.key_class = teduh::ACCESS_CLASS_GENERAL;
  c.key_version = 1;
  return c;
}

TEST(SealingTest, SealedFieldOpensInItsOwnContext) {
  auto key = Key();
  auto sealed = SealField(key, Ctx(), "Siti Aminah");
  ASSERT_TRUE(sealed);
  EXPECT_EQ(sealed->find("Siti"), std::string::npos);
  auto opened = OpenField(key, Ctx(), *sealed);
  ASSERT_TRUE(opened);
  EXPECT_EQ(*opened, "Siti Aminah");
}

TEST(SealingTest, ValueMovedToAnotherRecordOrFieldOrStampDoesNotOpen) {
  auto key = Key();
  auto sealed = SealField(key, Ctx(), "Jl. Melati 4");
  ASSERT_TRUE(sealed);
  SealContext other_record = Ctx();
  other_record.record_id[0] ^= 1;
  SealContext other_field = Ctx();
  other_field.field = 23;
  SealContext replayed = Ctx();
  replayed.writer_hlc += 1;
  SealContext other_version = Ctx();
  other_version.key_version = 2;
  for (const SealContext& c : {other_record, other_field, replayed, other_version}) {
    auto r = OpenField(key, c, *sealed);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), make_error_code(errc::integrity));
  }
}

TEST(SealingTest, AlteredCiphertextIsAnIntegrityError) {
  auto key = Key();
  auto sealed = SealField(key, Ctx(), "0812-555-0101");
  ASSERT_TRUE(sealed);
  (*sealed)[sealed->size() / 2] ^= 0x01;
  auto r = OpenField(key, Ctx(), *sealed);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), make_error_code(errc::integrity));
  EXPECT_FALSE(OpenField(key, Ctx(), "short"));
}

TEST(SealingTest, CaseKeyUnwrapsOnlyWithItsClassKeyAndContext) {
  auto class_key = Key();
  auto case_key = Key();
  Id case_id{7};
  auto wrapped = WrapCaseKey(class_key, case_id, teduh::ACCESS_CLASS_GENERAL, 1, 1, case_key);
  ASSERT_TRUE(wrapped);
  auto back = UnwrapCaseKey(class_key, case_id, teduh::ACCESS_CLASS_GENERAL, 1, 1, *wrapped);
  ASSERT_TRUE(back);
  EXPECT_TRUE(crypto::ConstantTimeEqual(back->view(), case_key.view()));
  EXPECT_FALSE(UnwrapCaseKey(class_key, case_id, teduh::ACCESS_CLASS_CLINICAL, 1, 1, *wrapped));
  EXPECT_FALSE(UnwrapCaseKey(class_key, Id{8}, teduh::ACCESS_CLASS_GENERAL, 1, 1, *wrapped));
  EXPECT_FALSE(UnwrapCaseKey(Key(), case_id, teduh::ACCESS_CLASS_GENERAL, 1, 1, *wrapped));
}

TEST(SealingTest, FingerprintIsEightUpperHexDigits) {
  std::string pk(32, '\x11');
  std::string fp = KeyFingerprint(pk);
  ASSERT_EQ(fp.size(), 8u);
  for (char c : fp) EXPECT_TRUE(std::isdigit(c) || (c >= 'A' && c <= 'F'));
  EXPECT_NE(fp, KeyFingerprint(std::string(32, '\x12')));
}

TEST(SealingTest, DeviceFingerprintChangesWithEitherKey) {
  const std::string sign(32, '\x11'), box(32, '\x22');
  const std::string fp = DeviceFingerprint(sign, box);
  EXPECT_EQ(fp.size(), 8u);
  EXPECT_NE(fp, DeviceFingerprint(sign, std::string(32, '\x23')));  // a swapped box key shows
  EXPECT_NE(fp, DeviceFingerprint(std::string(32, '\x12'), box));
  EXPECT_NE(fp, KeyFingerprint(sign));
}

}  // namespace
}  // namespace teduh::core
