// Enrollment and approval (docs/PROTOCOL.md §2, §8).
#include "server/server_fixture.h"
#include "teduh/core/sealing.h"

namespace teduh::server::testing {
namespace {

std::string Str(std::span<const std::uint8_t> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

using EnrollmentTest = ServerTest;

TEST_F(EnrollmentTest, BootstrapAdminIsActiveAndPinsTheRootKey) {
  TestDevice admin = NewDeviceKeys();
  auto reply = SendEnroll(admin, bootstrap_code_, Str(root_.public_key));
  ASSERT_TRUE(reply && reply->has_enroll_result());
  EXPECT_EQ(reply->enroll_result().state(), v1::DEVICE_STATE_ACTIVE);
  EXPECT_EQ(reply->enroll_result().role(), v1::ROLE_ADMIN);
  EXPECT_EQ(reply->enroll_result().unit_root_pk(), Str(root_.public_key));
  auto devices = ListDevices(data_dir_);
  ASSERT_TRUE(devices);
  ASSERT_EQ(devices->size(), 1u);
  EXPECT_EQ((*devices)[0].state, v1::DEVICE_STATE_ACTIVE);
  // Later codes carry the root key's fingerprint.
  auto code = CreateEnrollment(data_dir_, v1::ROLE_OFFICE, "rina", std::chrono::hours(1), env_);
  ASSERT_TRUE(code);
  EXPECT_NE(code->code.find(core::KeyFingerprint(Str(root_.public_key))), std::string::npos);
}

TEST_F(EnrollmentTest, UnknownCodeIsRefusedAndWritesNothing) {
  TestDevice d = NewDeviceKeys();
  auto reply = SendEnroll(d, "ABCD-EFGH-JKMN-PQRS", Str(root_.public_key));
  ASSERT_TRUE(reply && reply->has_error());
  EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_BAD_ENROLLMENT_CODE);
  EXPECT_TRUE(ListDevices(data_dir_)->empty());
}

TEST_F(EnrollmentTest, ExpiredCodeIsRefusedAndWritesNothing) {
  EnrollBootstrapAdmin();
  auto code = CreateEnrollment(data_dir_, v1::ROLE_OFFICE, "rina", std::chrono::minutes(1), env_);
  ASSERT_TRUE(code);
  env_.Advance(2 * 60 * 1000);
  TestDevice d = NewDeviceKeys();
  auto reply = SendEnroll(d, code->code);
  ASSERT_TRUE(reply && reply->has_error());
  EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_BAD_ENROLLMENT_CODE);
  EXPECT_EQ(ListDevices(data_dir_)->size(), 1u);
}

TEST_F(EnrollmentTest, UsedCodeIsRefusedTheSecondTime) {
  EnrollBootstrapAdmin();
  auto code = CreateEnrollment(data_dir_, v1::ROLE_OFFICE, "rina", std::chrono::hours(1), env_);
  ASSERT_TRUE(code);
  TestDevice first = NewDeviceKeys();
  auto ok = SendEnroll(first, code->code);
  ASSERT_TRUE(ok && ok->has_enroll_result());
  EXPECT_EQ(ok->enroll_result().state(), v1::DEVICE_STATE_PENDING);
  TestDevice second = NewDeviceKeys();
  auto reply = SendEnroll(second, code->code);
  ASSERT_TRUE(reply && reply->has_error());
  EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_BAD_ENROLLMENT_CODE);
  EXPECT_EQ(ListDevices(data_dir_)->size(), 2u);
}

TEST_F(EnrollmentTest, AUnitRootKeyWithAnOrdinaryCodeIsRefusedAndTheCodeStaysUnused) {
  EnrollBootstrapAdmin();
  auto code = CreateEnrollment(data_dir_, v1::ROLE_OFFICE, "rina", std::chrono::hours(1), env_);
  ASSERT_TRUE(code);
  auto other_root = crypto::GenerateSignKeyPair();
  ASSERT_TRUE(other_root);
  TestDevice d = NewDeviceKeys();
  auto reply = SendEnroll(d, code->code, Str(other_root->public_key));
  ASSERT_TRUE(reply && reply->has_error());
  EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_BAD_REQUEST);
  EXPECT_EQ(ListDevices(data_dir_)->size(), 1u);
  TestDevice again = NewDeviceKeys();
  auto ok = SendEnroll(again, code->code);
  ASSERT_TRUE(ok && ok->has_enroll_result())
      << (ok && ok->has_error() ? ok->error().message() : std::string());
  EXPECT_EQ(ok->enroll_result().unit_root_pk(), Str(root_.public_key));
}

TEST_F(EnrollmentTest, CodeIsAcceptedAsTypedInLowerCaseWithoutDashes) {
  EnrollBootstrapAdmin();
  auto code = CreateEnrollment(data_dir_, v1::ROLE_OFFICE, "rina", std::chrono::hours(1), env_);
  ASSERT_TRUE(code);
  std::string typed;
  for (char c : code->code)
    if (c != '-') typed.push_back(static_cast<char>(std::tolower(c)));
  TestDevice d = NewDeviceKeys();
  auto reply = SendEnroll(d, typed);
  ASSERT_TRUE(reply && reply->has_enroll_result()) << reply->DebugString();
}

TEST_F(EnrollmentTest, PendingDeviceIsToldToWait) {
  EnrollBootstrapAdmin();
  TestDevice d = EnrollPending(v1::ROLE_PENDAMPING, "siti");
  auto client = TestClient::Connect(server_->port());
  auto reply = Authenticate(*client, d);
  ASSERT_TRUE(reply && reply->has_error());
  EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_DEVICE_PENDING);
  EXPECT_TRUE(client->WaitClosed());
}

TEST_F(EnrollmentTest, ApprovedDeviceIsWelcomedWithItsGrants) {
  EnrollBootstrapAdmin();
  TestDevice d = EnrollApproved(v1::ROLE_KONSELOR, "dewi");
  auto client = TestClient::Connect(server_->port());
  auto reply = Authenticate(*client, d);
  ASSERT_TRUE(reply && reply->has_welcome());
  EXPECT_EQ(reply->welcome().role(), v1::ROLE_KONSELOR);
  EXPECT_EQ(reply->welcome().user(), "dewi");
  EXPECT_EQ(reply->welcome().grants_size(), 2);
  EXPECT_EQ(reply->welcome().unit_root_pk(), Str(root_.public_key));
  EXPECT_NE(reply->welcome().generation(), 0u);
}

TEST_F(EnrollmentTest, ApprovalWithForgedGrantSignatureIsRefused) {
  EnrollBootstrapAdmin();
  TestDevice d = EnrollPending(v1::ROLE_PENDAMPING, "siti");
  auto forger = crypto::GenerateSignKeyPair();
  auto admin = Login(admin_);
  v1::Frame f;
  f.set_request_id(7);
  f.mutable_approve_device()->set_device_id(std::string(core::AsBytes(d.device_id)));
  *f.mutable_approve_device()->add_grants() =
      MakeGrant(d, teduh::ACCESS_CLASS_GENERAL, forger->secret_key);
  auto reply = admin->Call(f);
  ASSERT_TRUE(reply && reply->has_error());
  EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_BAD_SIGNATURE);
  EXPECT_EQ(ListDevices(data_dir_)->back().state, v1::DEVICE_STATE_PENDING);
}

TEST_F(EnrollmentTest, ClinicalGrantForPendampingIsRefused) {
  EnrollBootstrapAdmin();
  TestDevice d = EnrollPending(v1::ROLE_PENDAMPING, "siti");
  auto admin = Login(admin_);
  v1::Frame f;
  f.set_request_id(8);
  f.mutable_approve_device()->set_device_id(std::string(core::AsBytes(d.device_id)));
  *f.mutable_approve_device()->add_grants() =
      MakeGrant(d, teduh::ACCESS_CLASS_GENERAL, root_.secret_key);
  *f.mutable_approve_device()->add_grants() =
      MakeGrant(d, teduh::ACCESS_CLASS_CLINICAL, root_.secret_key);
  auto reply = admin->Call(f);
  ASSERT_TRUE(reply && reply->has_error());
  EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_BAD_REQUEST);
  EXPECT_EQ(ListDevices(data_dir_)->back().state, v1::DEVICE_STATE_PENDING);
}

TEST_F(EnrollmentTest, OnlyAdminsListDevices) {
  EnrollBootstrapAdmin();
  TestDevice office = EnrollApproved(v1::ROLE_OFFICE, "rina");
  v1::Frame f;
  f.set_request_id(9);
  f.mutable_list_devices();
  auto as_office = Login(office)->Call(f);
  ASSERT_TRUE(as_office && as_office->has_error());
  EXPECT_EQ(as_office->error().code(), v1::ERROR_CODE_FORBIDDEN);
  auto as_admin = Login(admin_)->Call(f);
  ASSERT_TRUE(as_admin && as_admin->has_device_list());
  EXPECT_EQ(as_admin->device_list().devices_size(), 2);
}

TEST_F(EnrollmentTest, AnAdminListsTheDevicesAnIdPrefixNames) {
  EnrollBootstrapAdmin();
  TestDevice rina = EnrollApproved(v1::ROLE_OFFICE, "rina");
  TestDevice ani = EnrollApproved(v1::ROLE_PENDAMPING, "ani");
  auto admin = Login(admin_);
  auto frame = [](const std::string& prefix) {
    v1::Frame f;
    f.set_request_id(9);
    f.mutable_list_devices()->set_id_prefix(prefix);
    return f;
  };
  auto list = [&](const std::string& prefix) { return admin->Call(frame(prefix)); };
  const std::string rina_hex = core::ToHex(rina.device_id);
  for (const std::string& prefix : {rina_hex, rina_hex.substr(0, 7)}) {
    auto only = list(prefix);
    ASSERT_TRUE(only && only->has_device_list()) << prefix;
    // Two random ids may share seven hex digits, though hardly ever.
    ASSERT_GE(only->device_list().devices_size(), 1);
    for (const auto& d : only->device_list().devices())
      EXPECT_TRUE(core::ToHex(core::AsSpan(d.device_id())).starts_with(prefix));
  }
  auto exact = list(rina_hex);
  ASSERT_EQ(exact->device_list().devices_size(), 1);
  EXPECT_EQ(exact->device_list().devices(0).user(), "rina");
  auto none = list(std::string(32, '0'));
  ASSERT_TRUE(none && none->has_device_list());
  EXPECT_EQ(none->device_list().devices_size(), 0);
  EXPECT_EQ(list("")->device_list().devices_size(), 3);
  // Upper case, other letters or more than 32 digits are malformed (and the
  // server closes the connection).
  for (const std::string& bad : {std::string("ABCDEF"), std::string("zz"), std::string(33, 'a')}) {
    auto refused = Login(admin_)->Call(frame(bad));
    ASSERT_TRUE(refused && refused->has_error()) << bad;
    EXPECT_EQ(refused->error().code(), v1::ERROR_CODE_MALFORMED_FRAME) << bad;
  }
  (void)ani;
}

}  // namespace
}  // namespace teduh::server::testing
