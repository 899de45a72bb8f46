// Custody of the unit root key (docs/SECURITY.md, "Recovery kit"; PROTOCOL
// §8e): a second admin device is handed the root key when it is approved as
// one; a recovery kit of shares rebuilds it on a new laptop when every admin
// device is lost, and the class keys the server keeps sealed to the unit
// escrow key let that laptop read the unit's cases again. Too few shares,
// mistyped shares and shares of another unit save nothing.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "server/device_fixture.h"
#include "teduh/core/recovery_kit.h"
#include "teduh/server/store.h"

namespace teduh::server::testing {
namespace {

namespace fs = std::filesystem;
using core::errc;
using teduh::audit::v1::ENTRY_KIND_ENROLL;
using teduh::audit::v1::ENTRY_KIND_RECOVERY_KIT;
using teduh::audit::v1::ENTRY_KIND_ROOT_KEY;

class CustodyTest : public DeviceServerTest {
 protected:
  std::string Home(const std::string& name) const { return dir_ + "/" + name; }

  std::string AdminCode(const std::string& user) {
    auto code = CreateEnrollment(data_dir_, v1::ROLE_ADMIN, user, std::chrono::hours(1), env_);
    EXPECT_TRUE(code) << (code ? "" : code.error().message());
    return code ? code->code : std::string();
  }

  std::optional<core::RemoteDevice> Remote(core::Device& admin, const core::Id& id) {
    auto list = admin.ListRemoteDevices();
    EXPECT_TRUE(list) << (list ? "" : list.error().message);
    if (!list) return std::nullopt;
    for (const auto& r : *list)
      if (r.device_id == id) return r;
    return std::nullopt;
  }

  // A new staff device approved by `approver` (any admin device of the unit).
  std::unique_ptr<core::Device> StaffBy(core::Device& approver, const std::string& user,
                                        v1::Role role) {
    auto code = CreateEnrollment(data_dir_, role, user, std::chrono::hours(1), env_);
    EXPECT_TRUE(code);
    auto d = Enroll(user, code->code);
    if (!d) return nullptr;
    auto ok = approver.ApproveDevice(core::ToHex(d->info().device_id));
    EXPECT_TRUE(ok) << (ok ? "" : ok.error().message);
    Sync(*d);
    return d;
  }

  static std::vector<core::RecoveryShare> Parse(const core::RecoveryKitView& kit,
                                                std::initializer_list<std::size_t> which) {
    std::vector<core::RecoveryShare> out;
    std::size_t position = 1;
    for (std::size_t i : which) {
      auto s = core::ParseRecoveryShare(
          std::string_view(reinterpret_cast<const char*>(kit.shares[i].data()),
                           kit.shares[i].size()),
          position++);
      EXPECT_TRUE(s) << (s ? "" : s.error().message);
      if (s) out.push_back(std::move(*s));
    }
    return out;
  }

  core::Outcome<std::unique_ptr<core::Device>> Recover(const std::string& name,
                                                       std::span<const core::RecoveryShare> shares,
                                                       const std::string& code) {
    return core::Device::Recover(Home(name), Url(), code, shares, Pass(), Options(name));
  }

  int CountAudit(teduh::audit::v1::EntryKind kind) {
    auto records = ReadAudit(data_dir_, 1000);
    EXPECT_TRUE(records);
    int n = 0;
    for (const auto& r : records ? *records : std::vector<AuditRecord>{})
      if (r.entry.kind() == kind) ++n;
    return n;
  }

  void ExpectAuditIntact() {
    auto check = VerifyAudit(data_dir_);
    ASSERT_TRUE(check);
    EXPECT_TRUE(check->intact()) << check->detail;
  }
};

TEST_F(CustodyTest, ASecondAdminDeviceApprovedAsOneHoldsTheRootKeyAndCanActAlone) {
  auto sari = Enroll("sari", AdminCode("sari"));
  ASSERT_TRUE(sari);
  const std::string sari_ref = core::ToHex(sari->info().device_id);

  // Approving an admin device hands it the root key: never by accident.
  auto plain = admin_dev_->ApproveDevice(sari_ref);
  ASSERT_FALSE(plain);
  EXPECT_EQ(plain.error().code, errc::invalid_argument);
  auto before = Remote(*admin_dev_, sari->info().device_id);
  ASSERT_TRUE(before);
  EXPECT_EQ(before->state, "pending");

  // And a field device never gets it.
  auto rina_code =
      CreateEnrollment(data_dir_, v1::ROLE_PENDAMPING, "rina", std::chrono::hours(1), env_);
  ASSERT_TRUE(rina_code);
  auto rina = Enroll("rina", rina_code->code);
  ASSERT_TRUE(rina);
  auto field_root = admin_dev_->ApproveDevice(core::ToHex(rina->info().device_id), true,
                                              rina->info().fingerprint);
  ASSERT_FALSE(field_root);
  EXPECT_EQ(field_root.error().code, errc::invalid_argument);

  // Not without its fingerprint, and not with a wrong one.
  auto blind = admin_dev_->ApproveDevice(sari_ref, true);
  ASSERT_FALSE(blind);
  EXPECT_EQ(blind.error().code, errc::invalid_argument);
  auto wrong = admin_dev_->ApproveDevice(sari_ref, true, rina->info().fingerprint);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, errc::integrity);
  auto approved = admin_dev_->ApproveDevice(sari_ref, true, sari->info().fingerprint);
  ASSERT_TRUE(approved) << approved.error().message;
  EXPECT_EQ(approved->state, "active");
  EXPECT_EQ(approved->root_key, "handed");
  Sync(*sari);
  auto held = Remote(*admin_dev_, sari->info().device_id);
  ASSERT_TRUE(held);
  EXPECT_EQ(held->root_key, "held");
  EXPECT_EQ(CountAudit(ENTRY_KIND_ROOT_KEY), 1);

  // The first admin's laptop is gone; sari approves, reads, rotates and
  // revokes alone, also for devices the first admin approved.
  auto budi = Staff("budi", v1::ROLE_OFFICE);
  auto office_case = budi->NewCase({"chronology=Dicatat di kantor"});
  ASSERT_TRUE(office_case);
  Sync(*budi);
  admin_dev_.reset();
  auto approved_rina = sari->ApproveDevice(core::ToHex(rina->info().device_id));
  ASSERT_TRUE(approved_rina) << approved_rina.error().message;
  Sync(*rina);
  auto rina_case = rina->NewCase({"chronology=Kunjungan pertama"});
  ASSERT_TRUE(rina_case);
  Sync(*rina);
  auto dewi = StaffBy(*sari, "dewi", v1::ROLE_OFFICE);
  ASSERT_TRUE(dewi);
  EXPECT_EQ(Value(*dewi, *rina_case, "chronology"), "Kunjungan pertama");
  EXPECT_EQ(Value(*dewi, *office_case, "chronology"), "Dicatat di kantor");
  Sync(*sari);
  auto rotated = sari->RotateClassKey(teduh::ACCESS_CLASS_GENERAL);
  ASSERT_TRUE(rotated) << rotated.error().message;
  EXPECT_EQ(rotated->devices, 5u);  // both admin devices, budi, rina and dewi
  Sync(*budi);
  auto after = budi->NewCase({"chronology=Sesudah rotasi"});
  ASSERT_TRUE(after);
  Sync(*budi);
  Sync(*dewi);
  EXPECT_EQ(Value(*dewi, *after, "chronology"), "Sesudah rotasi");

  auto revoked = sari->RevokeDevice(core::ToHex(rina->info().device_id).substr(0, 8));
  ASSERT_TRUE(revoked) << revoked.error().message;
  EXPECT_TRUE(revoked->wipe_ordered);
  auto gone = rina->Sync();
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, errc::device_revoked);
  EXPECT_FALSE(fs::exists(Home("rina") + "/vault"));
  ExpectAuditIntact();
}

TEST_F(CustodyTest, ARecoveryKitRebuildsTheAdminDeviceThatReadsApprovesAndRevokes) {
  auto budi = Staff("budi", v1::ROLE_OFFICE);
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto case_id = budi->NewCase({"chronology=Korban diancam oleh suaminya"});
  ASSERT_TRUE(case_id);
  Sync(*budi);
  Sync(*admin_dev_);

  auto kit = admin_dev_->MakeRecoveryKit(5, 3);
  ASSERT_TRUE(kit) << kit.error().message;
  ASSERT_EQ(kit->shares.size(), 5u);
  EXPECT_EQ(kit->threshold, 3u);
  EXPECT_GE(kit->escrowed, 2u);  // the general and clinical keys
  {
    auto records = ReadAudit(data_dir_, 1000);
    ASSERT_TRUE(records);
    int kits = 0;
    for (const auto& r : *records) {
      if (r.entry.kind() != ENTRY_KIND_RECOVERY_KIT) continue;
      ++kits;
      EXPECT_EQ(r.entry.shares(), 5u);
      EXPECT_EQ(r.entry.threshold(), 3u);
      EXPECT_EQ(r.entry.user(), "admin");
    }
    EXPECT_EQ(kits, 1);
  }

  // The only admin laptop is stolen: three of the five holders meet.
  admin_dev_.reset();
  auto shares = Parse(*kit, {4, 0, 2});
  auto rebuilt = Recover("admin-new", shares, AdminCode("admin"));
  ASSERT_TRUE(rebuilt) << rebuilt.error().message;
  auto& admin = **rebuilt;
  EXPECT_EQ(admin.info().state, "active");  // no one left to approve it
  Sync(admin);

  // The class keys came back from escrow: the office device it approves
  // reads the case written before the loss.
  auto sari = StaffBy(admin, "sari", v1::ROLE_PENDAMPING);
  ASSERT_TRUE(sari);
  auto dewi = StaffBy(admin, "dewi", v1::ROLE_OFFICE);
  ASSERT_TRUE(dewi);
  EXPECT_EQ(Value(*dewi, *case_id, "chronology"), "Korban diancam oleh suaminya");
  auto sari_case = sari->NewCase({"chronology=Setelah pemulihan"});
  ASSERT_TRUE(sari_case);
  Sync(*sari);
  Sync(*dewi);
  EXPECT_EQ(Value(*dewi, *sari_case, "chronology"), "Setelah pemulihan");

  // The stolen laptop's device is revoked with a wipe order the rebuilt key signs.
  auto revoked = admin.RevokeDevice(core::ToHex(rina->info().device_id));
  ASSERT_TRUE(revoked) << revoked.error().message;
  auto gone = rina->Sync();
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, errc::device_revoked);

  auto records = ReadAudit(data_dir_, 1000);
  ASSERT_TRUE(records);
  int recovered = 0;
  for (const auto& r : *records)
    if (r.entry.kind() == ENTRY_KIND_ENROLL && r.entry.recovered()) ++recovered;
  EXPECT_EQ(recovered, 1);
  ExpectAuditIntact();
}

TEST_F(CustodyTest, TooFewMistypedOrForeignSharesSaveNothing) {
  Sync(*admin_dev_);
  auto kit = admin_dev_->MakeRecoveryKit(4, 3);
  ASSERT_TRUE(kit) << kit.error().message;

  auto two = Parse(*kit, {0, 1});
  auto few = Recover("few", two, AdminCode("admin"));
  ASSERT_FALSE(few);
  EXPECT_EQ(few.error().code, errc::bad_value);
  EXPECT_NE(few.error().message.find('1'), std::string::npos) << few.error().message;
  EXPECT_FALSE(fs::exists(Home("few") + "/vault"));

  // One digit changed: its checksum names it.
  std::string typed(reinterpret_cast<const char*>(kit->shares[2].data()), kit->shares[2].size());
  typed[7] = typed[7] == '0' ? '1' : '0';
  auto typo = core::ParseRecoveryShare(typed, 3);
  ASSERT_FALSE(typo);
  EXPECT_EQ(typo.error().code, errc::bad_value);
  EXPECT_NE(typo.error().message.find('3'), std::string::npos) << typo.error().message;

  // A kit of another unit's key, with this unit's admin code.
  auto other_root = crypto::GenerateSignKeyPair();
  ASSERT_TRUE(other_root);
  auto other = core::MakeRecoveryShares(other_root->secret_key, 3, 2);
  ASSERT_TRUE(other);
  std::vector<core::RecoveryShare> foreign;
  for (std::size_t i = 0; i < 2; ++i) {
    auto s = core::ParseRecoveryShare(
        std::string_view(reinterpret_cast<const char*>((*other)[i].data()), (*other)[i].size()),
        i + 1);
    ASSERT_TRUE(s);
    foreign.push_back(std::move(*s));
  }
  auto wrong = Recover("wrong", foreign, AdminCode("admin"));
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, errc::wrong_unit);
  EXPECT_FALSE(fs::exists(Home("wrong") + "/vault"));

  // The right shares with a field officer's code: the server refuses it.
  auto pend = CreateEnrollment(data_dir_, v1::ROLE_PENDAMPING, "rina", std::chrono::hours(1), env_);
  ASSERT_TRUE(pend);
  auto three = Parse(*kit, {0, 1, 3});
  auto field = Recover("field", three, pend->code);
  ASSERT_FALSE(field);
  EXPECT_FALSE(fs::exists(Home("field") + "/vault"));
  EXPECT_EQ(CountAudit(ENTRY_KIND_ENROLL), 1);  // only the first admin
}

TEST_F(CustodyTest, AKitMadeAfterARotationLetsARebuiltDeviceReadCasesOfTheNewEpoch) {
  auto budi = Staff("budi", v1::ROLE_OFFICE);
  auto old_case = budi->NewCase({"chronology=Sebelum rotasi"});
  ASSERT_TRUE(old_case);
  Sync(*budi);
  Sync(*admin_dev_);
  auto first_kit = admin_dev_->MakeRecoveryKit(3, 2);
  ASSERT_TRUE(first_kit) << first_kit.error().message;

  admin_dev_.reset();
  auto first_shares = Parse(*first_kit, {0, 2});
  auto rebuilt = Recover("admin-2", first_shares, AdminCode("admin"));
  ASSERT_TRUE(rebuilt) << rebuilt.error().message;
  auto admin = std::move(*rebuilt);
  Sync(*admin);

  // The old laptop may be read by whoever took it: the general key rotates.
  auto rotated = admin->RotateClassKey(teduh::ACCESS_CLASS_GENERAL);
  ASSERT_TRUE(rotated) << rotated.error().message;
  EXPECT_EQ(rotated->epoch, 2u);
  Sync(*budi);
  auto new_case = budi->NewCase({"chronology=Sesudah rotasi"});
  ASSERT_TRUE(new_case);
  Sync(*budi);
  Sync(*admin);

  // The same kit still rebuilds the root key; the new epoch is escrowed too,
  // so a second rebuilt device grants both, and its office device reads both cases.
  admin.reset();
  auto again = Recover("admin-3", Parse(*first_kit, {1, 2}), AdminCode("admin"));
  ASSERT_TRUE(again) << again.error().message;
  Sync(**again);
  auto dewi = StaffBy(**again, "dewi", v1::ROLE_OFFICE);
  ASSERT_TRUE(dewi);
  EXPECT_EQ(Value(*dewi, *old_case, "chronology"), "Sebelum rotasi");
  EXPECT_EQ(Value(*dewi, *new_case, "chronology"), "Sesudah rotasi");
  auto next = (*again)->RotateClassKey(teduh::ACCESS_CLASS_GENERAL);
  ASSERT_TRUE(next) << next.error().message;
  EXPECT_EQ(next->epoch, 3u);
  ExpectAuditIntact();
}

}  // namespace
}  // namespace teduh::server::testing
