// Offboarding a worker who leaves (issue: key lifecycle): every device of
// theirs is revoked with a signed wipe order and erases itself when it next
// connects; every case assigned to them moves to the successor in one
// transaction, with nothing that reached the server lost.
#include <gtest/gtest.h>

#include <filesystem>

#include "server/device_fixture.h"

namespace teduh::server::testing {
namespace {

using core::errc;
using OffboardTest = DeviceServerTest;

TEST_F(OffboardTest, AllDevicesOfTheLeaverAreRevokedAndHerCasesMoveToTheSuccessor) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto budi = Staff("budi", v1::ROLE_PENDAMPING);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  // A case Rina opened (assigned to her as its creator) and one the office gave her.
  auto own = rina->NewCase({"chronology=Kasus Rina"});
  ASSERT_TRUE(own);
  auto given = ani->NewCase({"chronology=Kasus dari kantor"});
  ASSERT_TRUE(given);
  ASSERT_TRUE(ani->AssignCase(core::ToHex(*given), "rina", "", ""));
  Sync(*ani);
  Sync(*rina);
  ASSERT_TRUE(rina->SetCaseFields(core::ToHex(*own), {"route=mediasi"}));
  Sync(*rina);  // her last edit reached the server

  EXPECT_EQ(ani->OffboardUser("rina", "budi").error().code, errc::forbidden);
  EXPECT_EQ(admin_dev_->OffboardUser("rina", "rina").error().code, errc::invalid_argument);
  auto nobody = admin_dev_->OffboardUser("rina", "siapa");
  ASSERT_FALSE(nobody);
  EXPECT_NE(nobody.error().message.find("siapa"), std::string::npos);

  auto done = admin_dev_->OffboardUser("rina", "budi");
  ASSERT_TRUE(done) << done.error().message;
  EXPECT_EQ(done->devices_revoked, 1u);
  EXPECT_EQ(done->cases_reassigned, 2u);

  Sync(*budi);
  EXPECT_EQ(Value(*budi, *own, "chronology"), "Kasus Rina");
  EXPECT_EQ(Value(*budi, *own, "route"), "mediasi");
  EXPECT_EQ(Value(*budi, *own, "assigned_pendamping"), "budi");
  EXPECT_EQ(Value(*budi, *given, "chronology"), "Kasus dari kantor");

  auto gone = rina->Sync();
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, errc::device_revoked);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/rina/vault"));

  Sync(*ani);
  EXPECT_EQ(Value(*ani, *given, "assigned_pendamping"), "budi");
  auto audit = ReadAudit(data_dir_, 1000);
  ASSERT_TRUE(audit);
  EXPECT_TRUE(std::any_of(audit->begin(), audit->end(), [](const AuditRecord& r) {
    return r.entry.kind() == teduh::audit::v1::ENTRY_KIND_OFFBOARD && r.entry.cases() == 2 &&
           r.entry.subject_user() == "rina" && r.entry.reassigned_to() == "budi";
  }));
  EXPECT_TRUE(VerifyAudit(data_dir_)->intact());
}

}  // namespace
}  // namespace teduh::server::testing
