// The report's arithmetic and its rendering (core/report.h), shared by
// `teduh-server report` and `teduh report`: the same counts from the same
// open values, a unit's own codes counted under their code, headings and
// labels in either language, and the period in the unit's zone.
#include "teduh/core/report.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "teduh/case/v1/case.pb.h"
#include "teduh/core/deadlines.h"
#include "teduh/core/schema.h"

namespace teduh::core {
namespace {

using ::testing::HasSubstr;
namespace cw = teduh::casework::v1;

constexpr std::int64_t kJan1 = 1735689600;  // 2025-01-01 00:00 UTC

template <typename M, typename F>
std::string One(F set) {
  M m;
  set(m);
  return m.SerializeAsString();
}

class ReportBuilderTest : public ::testing::Test {
 protected:
  // A case received `days` after 1 January, with its violence types.
  Id AddCase(int days, std::vector<int> types, std::string region = "") {
    const Id id = NewId();
    b_.Add(kCaseKind, id, id, cw::Case::kReceivedAtFieldNumber,
           One<cw::Case>([&](cw::Case& c) { c.set_received_at(kJan1 + days * kDaySeconds); }), 0);
    b_.Add(kCaseKind, id, id, cw::Case::kViolenceTypesFieldNumber, One<cw::Case>([&](cw::Case& c) {
             for (int t : types) c.add_violence_types(static_cast<cw::ViolenceType>(t));
           }),
           0);
    if (!region.empty())
      b_.Add(kCaseKind, id, id, cw::Case::kRegionCodeFieldNumber,
             One<cw::Case>([&](cw::Case& c) { c.set_region_code(region); }), 0);
    return id;
  }
  static const ReportBreakdown& By(const CaseReport& r, std::string_view by) {
    for (const auto& b : r.breakdowns)
      if (b.by == by) return b;
    static const ReportBreakdown none;
    return none;
  }
  static std::uint64_t Count(const ReportBreakdown& b, std::string_view key) {
    for (const auto& r : b.rows)
      if (r.key == key) return r.count;
    return 0;
  }
  ReportBuilder b_;
};

TEST_F(ReportBuilderTest, AUnitsOwnCodeCountsUnderItsCode) {
  CodeBook codes;
  auto t = codes.Add({"violence_type", "TRAFFICKING", 0, "perdagangan orang", "trafficking"});
  ASSERT_TRUE(t);
  AddCase(1, {t->number});
  AddCase(2, {cw::VIOLENCE_TYPE_PHYSICAL});
  AddCase(3, {});
  AddCase(400, {cw::VIOLENCE_TYPE_PHYSICAL});  // the next year: outside the period
  auto r = b_.Compute(kJan1, kJan1 + 365 * kDaySeconds, {"violence_type"}, 0, kJan1, codes);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->received, 3u);
  const auto& v = By(*r, "violence_type");
  EXPECT_EQ(Count(v, "TRAFFICKING"), 1u);
  EXPECT_EQ(Count(v, "PHYSICAL"), 1u);
  EXPECT_EQ(Count(v, kUnrecordedKey), 1u);
  EXPECT_TRUE(v.adds_up);
  // A server that does not know the code counts its number: never lost.
  auto unknown =
      b_.Compute(kJan1, kJan1 + 365 * kDaySeconds, {"violence_type"}, 0, kJan1, CodeBook());
  ASSERT_TRUE(unknown);
  EXPECT_EQ(Count(By(*unknown, "violence_type"), "1000"), 1u);
}

TEST_F(ReportBuilderTest, RefusesAnUnknownBreakdownAndAnEmptyPeriod) {
  EXPECT_EQ(b_.Compute(kJan1, kJan1 + 1, {"weapon"}, 0, kJan1, CodeBook()).error(),
            make_error_code(errc::invalid_argument));
  EXPECT_EQ(b_.Compute(kJan1, kJan1, {}, 0, kJan1, CodeBook()).error(),
            make_error_code(errc::invalid_argument));
}

TEST_F(ReportBuilderTest, PeopleReadItInTheirLanguageAndScriptsReadCodes) {
  CodeBook codes;
  ASSERT_TRUE(codes.Add({"region", "64.72", 0, "Kota Samarinda", "Samarinda city"}));
  AddCase(1, {cw::VIOLENCE_TYPE_PHYSICAL, cw::VIOLENCE_TYPE_SEXUAL}, "64.72");
  auto r =
      b_.Compute(kJan1, kJan1 + 31 * kDaySeconds, {"violence_type", "region"}, 0, kJan1, codes);
  ASSERT_TRUE(r);
  const std::string id = ReportToText(*r, "2025-01-01", "2025-01-31", codes, Lang::kId);
  EXPECT_THAT(id, HasSubstr("Laporan kasus 2025-01-01 sampai 2025-01-31"));
  EXPECT_THAT(id, HasSubstr("Menurut jenis kekerasan"));
  EXPECT_THAT(id, HasSubstr("fisik [PHYSICAL]"));
  EXPECT_THAT(id, HasSubstr("Kota Samarinda [64.72]"));
  // Two violence types on one case: the rows exceed the total, and it says so.
  EXPECT_THAT(id, HasSubstr("TIDAK COCOK: jumlah baris 2, totalnya 1"));
  const std::string en = ReportToText(*r, "2025-01-01", "2025-01-31", codes, Lang::kEn);
  EXPECT_THAT(en, HasSubstr("By violence type"));
  EXPECT_THAT(en, HasSubstr("sexual [SEXUAL]"));
  EXPECT_THAT(en, HasSubstr("a case may have several violence types"));

  const nlohmann::json j = ReportToJson(*r, "2025-01-01", "2025-01-31", codes, Lang::kId);
  EXPECT_EQ(j["received"], 1);
  EXPECT_EQ(j["breakdowns"][0]["by"], "violence_type");
  EXPECT_EQ(j["breakdowns"][0]["rows"][0]["key"], "PHYSICAL");
  EXPECT_EQ(j["breakdowns"][0]["rows"][0]["label"], "fisik");
  EXPECT_EQ(j["breakdowns"][0]["adds_up"], false);
  EXPECT_EQ(j["breakdowns"][1]["rows"][0]["label"], "Kota Samarinda");

  const std::string csv = ReportToCsv(*r);
  EXPECT_THAT(csv, HasSubstr("section,key,count\ntotal,received,1\n"));
  EXPECT_THAT(csv, HasSubstr("by:violence_type,SEXUAL,1\n"));
  EXPECT_THAT(csv, HasSubstr("check:violence_type,MISMATCH: a case may have several violence "
                             "types,2\n"));
  EXPECT_THAT(csv, HasSubstr("check:region,adds_up,1\n"));
}

TEST(ReportPeriodTest, DaysAreCountedInTheUnitsZone) {
  std::string why;
  auto wita = ParseReportPeriod("2025-01-01", "2025-01-31", TimeZone::kWita, &why);
  ASSERT_TRUE(wita) << why;
  EXPECT_EQ(wita->from_s, kJan1 - 8 * 3600);  // 00:00 WITA is 16:00 UTC the day before
  EXPECT_EQ(wita->to_s, kJan1 + 31 * kDaySeconds - 8 * 3600);
  EXPECT_FALSE(ParseReportPeriod("2025-02-30", "2025-03-01", TimeZone::kWib, &why));
  EXPECT_THAT(why, HasSubstr("YYYY-MM-DD"));
  EXPECT_FALSE(ParseReportPeriod("2025-01-01x", "2025-03-01", TimeZone::kWib, &why));
  EXPECT_FALSE(ParseReportPeriod("2025-03-01", "2025-01-01", TimeZone::kWib, &why));
  EXPECT_THAT(why, HasSubstr("--to"));
}

}  // namespace
}  // namespace teduh::core
