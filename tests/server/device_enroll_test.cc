// A field device enrolling with a code as the officer types it: the device
// reads the code as the server does (core::ParseEnrollmentCode), pins the
// unit fingerprint however the code is spaced, and refuses what is not a
// code before it reaches for the network.
#include <gtest/gtest.h>

#include <cctype>
#include <filesystem>
#include <string>

#include "server/device_fixture.h"

namespace teduh::server::testing {
namespace {

namespace fs = std::filesystem;
using core::errc;

class DeviceEnrollTest : public DeviceServerTest {};

// Lower case and without dashes, as an officer may type it off a phone call.
std::string Loosely(const std::string& code) {
  std::string typed;
  for (char c : code)
    if (c != '-') typed.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  return typed;
}

TEST_F(DeviceEnrollTest, ACodeTypedWithoutDashesStillPinsTheUnit) {
  auto code = CreateEnrollment(data_dir_, v1::ROLE_PENDAMPING, "rina", std::chrono::hours(1), env_);
  ASSERT_TRUE(code);
  auto rina =
      core::Device::Enroll(dir_ + "/rina", Url(), Loosely(code->code), Pass(), Options("rina"));
  ASSERT_TRUE(rina) << rina.error().message;
  auto ok = admin_dev_->ApproveDevice(core::ToHex((*rina)->info().device_id));
  ASSERT_TRUE(ok) << ok.error().message;
  Sync(**rina);

  // The same, with another unit's fingerprint in place of this one's: the
  // server does not know such a code, and the device keeps nothing.
  auto other = CreateEnrollment(data_dir_, v1::ROLE_PENDAMPING, "ani", std::chrono::hours(1), env_);
  ASSERT_TRUE(other);
  std::string forged = Loosely(other->code);
  forged.replace(forged.size() - 8, 8,
                 forged.substr(forged.size() - 8) == "00000000" ? "11111111" : "00000000");
  auto ani = core::Device::Enroll(dir_ + "/ani", Url(), forged, Pass(), Options("ani"));
  ASSERT_FALSE(ani);
  EXPECT_EQ(ani.error().code, errc::enrollment_refused) << ani.error().message;
  EXPECT_FALSE(fs::exists(dir_ + "/ani/vault"));
}

TEST_F(DeviceEnrollTest, WhatIsNotACodeIsRefusedBeforeTheNetwork) {
  // No server listens here: the device must not get as far as trying.
  const std::string nowhere = "ws://127.0.0.1:1/sync";
  for (const char* typed :
       {"TEDUH-WRONG-CODE", "ABCD-EFGH-JKMN-PQRU", "ABCD-EFGH-JKMN-PQRS-1A2B"}) {
    auto d = core::Device::Enroll(dir_ + "/typo", nowhere, typed, Pass(), Options("typo"));
    ASSERT_FALSE(d) << typed;
    EXPECT_EQ(d.error().code, errc::invalid_argument) << typed;
    EXPECT_NE(d.error().message.find("XXXX-XXXX-XXXX-XXXX"), std::string::npos)
        << d.error().message;
    EXPECT_FALSE(fs::exists(dir_ + "/typo/vault"));
  }
}

}  // namespace
}  // namespace teduh::server::testing
