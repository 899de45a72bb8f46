#include "teduh/core/frame_codec.h"

#include <gtest/gtest.h>

namespace teduh::core {
namespace {

namespace v1 = teduh::sync::v1;

v1::FieldChange GoodChange() {
  v1::FieldChange c;
  c.set_record_id(std::string(16, 'r'));
  c.set_kind("teduh.casework.v1.Case");
  c.set_field(7);
  c.set_value("\x38\x03");
  c.mutable_stamp()->set_hlc(12345);
  c.mutable_stamp()->set_device_id(std::string(16, 'd'));
  c.set_device_seq(1);
  return c;
}

std::string PushOf(const v1::FieldChange& c) {
  v1::Frame f;
  *f.mutable_push()->add_changes() = c;
  return EncodeFrame(f);
}

TEST(FrameCodecTest, DecodesAValidPush) {
  auto f = DecodeFrame(PushOf(GoodChange()), FrameLimits{});
  ASSERT_TRUE(f);
  EXPECT_EQ(f->push().changes_size(), 1);
}

TEST(FrameCodecTest, RejectsBytesThatAreNotAFrame) {
  std::string msg;
  auto f = DecodeFrame(std::string("\xff\xff\xff\xff\xff", 5), FrameLimits{}, &msg);
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error(), make_error_code(errc::malformed_frame));
}

TEST(FrameCodecTest, RejectsAFrameWithNoBody) {
  v1::Frame f;
  f.set_request_id(3);
  EXPECT_EQ(DecodeFrame(EncodeFrame(f), FrameLimits{}).error(),
            make_error_code(errc::malformed_frame));
}

TEST(FrameCodecTest, RejectsOversizedFrameBeforeParsing) {
  FrameLimits limits;
  limits.max_frame_bytes = 10;
  EXPECT_EQ(DecodeFrame(std::string(11, '\0'), limits).error(),
            make_error_code(errc::frame_too_large));
}

TEST(FrameCodecTest, RejectsShortIdsAndMissingStamps) {
  auto short_id = GoodChange();
  short_id.set_record_id("abc");
  std::string msg;
  EXPECT_FALSE(DecodeFrame(PushOf(short_id), FrameLimits{}, &msg));
  EXPECT_NE(msg.find("record_id"), std::string::npos);
  auto no_stamp = GoodChange();
  no_stamp.clear_stamp();
  EXPECT_FALSE(DecodeFrame(PushOf(no_stamp), FrameLimits{}));
  auto bad_parent = GoodChange();
  bad_parent.set_parent_id("x");
  EXPECT_FALSE(DecodeFrame(PushOf(bad_parent), FrameLimits{}));
}

// A push's answer: a conflict's id is a full record id or absent.
TEST(FrameCodecTest, PushResultConflictIdsAreFullIds) {
  v1::Frame f;
  v1::ChangeResult* r = f.mutable_push_result()->add_results();
  r->set_device_seq(1);
  r->set_status(v1::ChangeResult::STATUS_CONFLICT);
  r->mutable_stamp()->set_hlc(12345);
  r->mutable_stamp()->set_device_id(std::string(16, 'd'));
  ASSERT_TRUE(DecodeFrame(EncodeFrame(f), FrameLimits{}));  // none: a change without conflict
  r->set_conflict_id(std::string(16, 'c'));
  ASSERT_TRUE(DecodeFrame(EncodeFrame(f), FrameLimits{}));
  r->set_conflict_id(std::string(15, 'c'));
  std::string msg;
  EXPECT_FALSE(DecodeFrame(EncodeFrame(f), FrameLimits{}, &msg));
  EXPECT_NE(msg.find("conflict_id"), std::string::npos) << msg;
}

TEST(FrameCodecTest, RejectsOversizedValueAndTooManyChanges) {
  FrameLimits limits;
  limits.max_value_bytes = 4;
  limits.max_push_changes = 2;
  auto big = GoodChange();
  big.set_value("12345");
  EXPECT_FALSE(DecodeFrame(PushOf(big), limits));
  v1::Frame f;
  for (int i = 0; i < 3; ++i) *f.mutable_push()->add_changes() = GoodChange();
  EXPECT_FALSE(DecodeFrame(EncodeFrame(f), limits));
}

TEST(FrameCodecTest, RejectsSealedValueWithoutKeyClass) {
  auto c = GoodChange();
  c.set_sealed(true);
  c.set_value(std::string(60, 'x'));
  EXPECT_FALSE(DecodeFrame(PushOf(c), FrameLimits{}));
  c.set_key_class(teduh::ACCESS_CLASS_GENERAL);
  EXPECT_TRUE(DecodeFrame(PushOf(c), FrameLimits{}));
}

TEST(FrameCodecTest, RejectsHandshakeFieldsOfWrongLength) {
  v1::Frame hello;
  hello.mutable_hello()->set_device_id("short");
  EXPECT_FALSE(DecodeFrame(EncodeFrame(hello), FrameLimits{}));
  v1::Frame proof;
  proof.mutable_proof()->set_signature(std::string(63, 's'));
  EXPECT_FALSE(DecodeFrame(EncodeFrame(proof), FrameLimits{}));
  v1::Frame enroll;
  auto* e = enroll.mutable_enroll();
  e->set_code("ABCD");
  e->set_sign_pk(std::string(32, 'a'));
  e->set_box_pk(std::string(31, 'b'));
  e->set_signature(std::string(64, 's'));
  EXPECT_FALSE(DecodeFrame(EncodeFrame(enroll), FrameLimits{}));
}

TEST(FrameCodecTest, WipeOrdersAndReceiptsMustHaveFullIdsAndSignatures) {
  v1::Frame wipe;
  auto* o = wipe.mutable_wipe()->mutable_order();
  o->set_device_id(std::string(16, 'd'));
  o->set_unit_id("unit");
  o->set_admin_device_id(std::string(16, 'a'));
  o->set_signature(std::string(64, 's'));
  EXPECT_TRUE(DecodeFrame(EncodeFrame(wipe), FrameLimits{}));
  o->set_signature(std::string(63, 's'));
  std::string why;
  EXPECT_FALSE(DecodeFrame(EncodeFrame(wipe), FrameLimits{}, &why));
  EXPECT_NE(why.find("signature"), std::string::npos);
  o->set_signature(std::string(64, 's'));
  o->set_admin_device_id("");
  EXPECT_FALSE(DecodeFrame(EncodeFrame(wipe), FrameLimits{}));

  v1::Frame receipt;
  auto* r = receipt.mutable_wipe_receipt();
  r->set_device_id(std::string(16, 'd'));
  r->set_order_signature(std::string(64, 'o'));
  r->set_signature(std::string(64, 's'));
  EXPECT_TRUE(DecodeFrame(EncodeFrame(receipt), FrameLimits{}));
  r->set_order_signature("");
  EXPECT_FALSE(DecodeFrame(EncodeFrame(receipt), FrameLimits{}));

  v1::Frame revoke;
  revoke.mutable_revoke_device()->set_device_id(std::string(15, 'd'));
  EXPECT_FALSE(DecodeFrame(EncodeFrame(revoke), FrameLimits{}));
}

TEST(FrameCodecTest, RekeyFramesNameWhereEachValueIsAndCarryCiphertextOnly) {
  v1::Frame f;
  v1::RekeyCase* r = f.mutable_rekey_case();
  r->set_case_id(std::string(16, 'c'));
  v1::Reseal* s = r->add_reseals();
  s->mutable_ref()->set_place(v1::SealedRef::PLACE_CONFLICT_KEPT);
  s->mutable_ref()->set_record_id(std::string(16, 'r'));
  s->mutable_ref()->set_conflict_id(std::string(16, 'k'));
  s->set_value(std::string(60, 'x'));
  EXPECT_TRUE(DecodeFrame(EncodeFrame(f), FrameLimits{}));

  std::string msg;
  v1::Frame no_conflict = f;
  no_conflict.mutable_rekey_case()->mutable_reseals(0)->mutable_ref()->clear_conflict_id();
  EXPECT_FALSE(DecodeFrame(EncodeFrame(no_conflict), FrameLimits{}, &msg));
  EXPECT_NE(msg.find("conflict_id"), std::string::npos);
  v1::Frame no_place = f;
  no_place.mutable_rekey_case()->mutable_reseals(0)->mutable_ref()->clear_place();
  EXPECT_FALSE(DecodeFrame(EncodeFrame(no_place), FrameLimits{}));
  v1::Frame too_short = f;
  too_short.mutable_rekey_case()->mutable_reseals(0)->set_value("short");
  EXPECT_FALSE(DecodeFrame(EncodeFrame(too_short), FrameLimits{}));
  v1::Frame bad_key = f;
  v1::CaseKeyInfo* k = bad_key.mutable_rekey_case()->add_new_keys();
  k->set_record_id(std::string(16, 'n'));
  k->set_key_class(teduh::ACCESS_CLASS_UNSPECIFIED);
  EXPECT_FALSE(DecodeFrame(EncodeFrame(bad_key), FrameLimits{}));

  v1::Frame drops;
  drops.mutable_changes()->add_key_drops()->set_case_id("short");
  EXPECT_FALSE(DecodeFrame(EncodeFrame(drops), FrameLimits{}));
}

TEST(FrameCodecTest, ErrorFrameRoundTrips) {
  auto f = DecodeFrame(EncodeFrame(MakeErrorFrame(9, v1::ERROR_CODE_DEVICE_PENDING, "wait")),
                       FrameLimits{});
  ASSERT_TRUE(f);
  EXPECT_EQ(f->request_id(), 9u);
  EXPECT_EQ(ErrorFromFrame(f->error().code()), errc::device_pending);
}

}  // namespace
}  // namespace teduh::core
