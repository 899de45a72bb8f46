// A unit's own codes and the report on an office device (issue 5): a code
// added on the server reaches every device at its next sync, is accepted in
// the fields of its list and counted under its code, and an office device
// reports exactly what the server reports from the same records.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/device_fixture.h"
#include "teduh/core/report.h"
#include "teduh/server/admin.h"
#include "teduh/server/report.h"

namespace teduh::server::testing {
namespace {

using core::errc;
using ::testing::HasSubstr;
using UnitCodesTest = DeviceServerTest;

TEST_F(UnitCodesTest, ACodeAddedOnTheServerIsUsedOnDevicesAndCounted) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  // Before the unit adds it, a device refuses the text and lists what it takes.
  auto early = rina->NewCase({"violence_types=perdagangan orang"});
  ASSERT_FALSE(early);
  EXPECT_EQ(early.error().code, make_error_code(errc::bad_value));

  std::string why;
  auto added = AddUnitCode(
      data_dir_, {"violence_type", "TRAFFICKING", 0, "perdagangan orang", "trafficking"}, &why);
  ASSERT_TRUE(added) << why;
  EXPECT_EQ(added->number, core::kFirstUnitCodeNumber);
  ASSERT_TRUE(AddUnitCode(data_dir_, {"region", "14.72.01", 0, "Dumai Barat", "West Dumai"}, &why));
  // The same code twice is refused, and nothing changes.
  EXPECT_FALSE(AddUnitCode(data_dir_, {"violence_type", "TRAFFICKING", 0, "x", "y"}, &why));
  EXPECT_THAT(why, HasSubstr("already has the code"));

  Sync(*rina);
  auto c = rina->NewCase({"violence_types=perdagangan orang,fisik", "region_code=dumai barat",
                          "referrer_type=sekolah"});
  ASSERT_TRUE(c) << c.error().message;
  // With a region list, a region outside it is refused.
  auto outside = rina->SetCaseFields(core::ToHex(*c), {"region_code=64.72"});
  ASSERT_FALSE(outside);
  EXPECT_THAT(outside.error().message, HasSubstr("14.72.01"));
  Sync(*rina);
  Sync(*ani);
  EXPECT_EQ(Value(*ani, *c, "violence_types"), "perdagangan orang, fisik");
  EXPECT_EQ(Value(*ani, *c, "region_code"), "Dumai Barat");

  auto period = core::ParseReportPeriod("2000-01-01", "2100-01-01", core::TimeZone::kWib, &why);
  ASSERT_TRUE(period);
  auto report = ComputeReport(data_dir_, period->from_s, period->to_s, {"violence_type", "region"},
                              7 * 3600, env_);
  ASSERT_TRUE(report) << report.error().message();
  EXPECT_EQ(report->received, 1u);
  EXPECT_EQ(report->breakdowns[0].rows[0].key, "PHYSICAL");
  EXPECT_EQ(report->breakdowns[0].rows[1].key, "TRAFFICKING");
  EXPECT_EQ(report->breakdowns[1].rows[0].key, "14.72.01");

  // Retired: kept on the case, not accepted for a new one.
  ASSERT_FALSE(RetireUnitCode(data_dir_, "violence_type", "TRAFFICKING", true));
  Sync(*rina);
  EXPECT_FALSE(rina->NewCase({"violence_types=trafficking"}));
  EXPECT_EQ(Value(*rina, *c, "violence_types"), "perdagangan orang, fisik");
  EXPECT_EQ(RetireUnitCode(data_dir_, "violence_type", "PHYSICAL", true),
            make_error_code(errc::not_found));  // a default cannot be retired
}

TEST_F(UnitCodesTest, DamagedStoredCodesAreNeverWrittenBack) {
  std::string why;
  ASSERT_TRUE(AddUnitCode(
      data_dir_, {"violence_type", "TRAFFICKING", 0, "perdagangan orang", "trafficking"}, &why));
  {
    auto store = OpenSqliteStore(StorePath(data_dir_), StoreOptions{});
    ASSERT_TRUE(store);
    ASSERT_FALSE((*store)->Begin());
    ASSERT_FALSE((*store)->SetUnitCodes(std::string("\x0a\xff\xff\xff", 4)));
    ASSERT_FALSE((*store)->Commit());
  }
  // Neither a listing nor a new code pretends the unit has none: a new code
  // would otherwise take the number 1000 again.
  EXPECT_EQ(ReadUnitCodes(data_dir_).error(), make_error_code(errc::store_failed));
  EXPECT_FALSE(
      AddUnitCode(data_dir_, {"violence_type", "BULLYING", 0, "perundungan", "bullying"}, &why));
  EXPECT_EQ(RetireUnitCode(data_dir_, "violence_type", "TRAFFICKING", true),
            make_error_code(errc::store_failed));
}

TEST_F(UnitCodesTest, AnOfficeDeviceReportsWhatTheServerReports) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto tono = Staff("tono", v1::ROLE_SUPERVISOR);
  for (int i = 0; i < 12; ++i) {
    std::vector<std::string> sets = {
        i % 3 == 0 ? "risk_level=tinggi" : "risk_level=rendah",
        i % 2 == 0 ? "violence_types=fisik" : "violence_types=psikis,seksual",
        i % 4 == 0 ? "category=kdrt" : "category=perlindungan anak",
        "region_code=" + std::string(i % 2 ? "14.72" : "14.71")};
    auto c = rina->NewCase(sets);
    ASSERT_TRUE(c) << c.error().message;
    ASSERT_TRUE(rina->AddPerson(core::ToHex(*c), "victim",
                                {i % 5 ? "sex=perempuan" : "sex=laki-laki", "age_group=13-17",
                                 "name=Korban " + std::to_string(i)}));
    if (i % 3 == 0) {
      ASSERT_TRUE(rina->LogVisit(core::ToHex(*c), "kunjungan rumah", "bertemu", ""));
    }
    if (i == 5) {
      ASSERT_TRUE(
          rina->SetCaseFields(core::ToHex(*c), {"stage=terminasi", "closure_reason=selesai",
                                                "closure_checklist=aman,kebutuhan_terpenuhi,"
                                                "tidak_ada_kekerasan_ulang"}));
    }
  }
  Sync(*rina);
  Sync(*ani);
  std::string why;
  auto period = core::ParseReportPeriod("2000-01-01", "2100-01-01", core::TimeZone::kWib, &why);
  ASSERT_TRUE(period);
  const std::vector<std::string> all(std::begin(core::kReportDimensions),
                                     std::end(core::kReportDimensions));
  auto server = ComputeReport(data_dir_, period->from_s, period->to_s, all, 7 * 3600, env_);
  ASSERT_TRUE(server) << server.error().message();
  auto office = ani->Report(period->from_s, period->to_s, all, 7 * 3600);
  ASSERT_TRUE(office) << office.error().message;
  auto codes = ani->Codes();
  ASSERT_TRUE(codes);
  EXPECT_EQ(server->received, 12u);
  EXPECT_EQ(server->resolved, 1u);
  EXPECT_EQ(core::ReportToJson(*office, "a", "b", *codes, core::Lang::kEn),
            core::ReportToJson(*server, "a", "b", *codes, core::Lang::kEn));
  // The supervisor holds the unit too; a field device and the admin do not.
  Sync(*tono);
  EXPECT_TRUE(tono->Report(period->from_s, period->to_s, {"stage"}, 7 * 3600));
  auto field = rina->Report(period->from_s, period->to_s, {"stage"}, 7 * 3600);
  ASSERT_FALSE(field);
  EXPECT_EQ(field.error().code, make_error_code(errc::forbidden));
  EXPECT_FALSE(admin_dev_->Report(period->from_s, period->to_s, {"stage"}, 7 * 3600));
  auto unknown = ani->Report(period->from_s, period->to_s, {"weapon"}, 7 * 3600);
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, make_error_code(errc::invalid_argument));
}

}  // namespace
}  // namespace teduh::server::testing
