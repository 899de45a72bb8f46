// The unit's case report (issue 5; DOMAIN-REPORT §6.2), computed on the
// server from open fields only. The data are shaped like the Kalimantan Timur
// 2014–2015 table: 955 cases in nine locations (the table's rows sum to 955,
// its printed total says 952), 369 of them received in 2014. A breakdown whose
// rows cannot add up (a case with two violence types) is flagged, not forced.
#include "teduh/server/report.h"

#include <gtest/gtest.h>

#include <ctime>
#include <map>

#include "server/server_fixture.h"
#include "teduh/case/v1/case.pb.h"
#include "teduh/core/schema.h"

namespace teduh::server::testing {
namespace {

namespace cw = teduh::casework::v1;

std::int64_t Day(int y, int m, int d) {
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = m - 1;
  tm.tm_mday = d;
  return static_cast<std::int64_t>(timegm(&tm));
}

template <typename Set>
std::string CaseValue(Set set) {
  cw::Case c;
  set(c);
  return c.SerializeAsString();
}

class ReportTest : public ServerTest {
 protected:
  const core::ReportBreakdown* By(const core::CaseReport& r, std::string_view dim) {
    for (const auto& b : r.breakdowns)
      if (b.by == dim) return &b;
    return nullptr;
  }
  static std::uint64_t Count(const core::ReportBreakdown& b, std::string_view key) {
    for (const auto& r : b.rows)
      if (r.key == key) return r.count;
    return 0;
  }
};

TEST_F(ReportTest, CountsShapedLikeTheKalimantanTimurTableAddUpAndAMismatchIsFlagged) {
  EnrollBootstrapAdmin();
  TestDevice ani = EnrollApproved(v1::ROLE_OFFICE, "ani");
  auto client = Login(ani);
  // Tabel 1, P2TP2A Kaltim 2014–2015 (region codes of the locations).
  const std::vector<std::pair<std::string, int>> table = {
      {"64.72", 344}, {"64.71", 64}, {"64.74", 156}, {"64.02", 7}, {"64.07", 5},
      {"64.01", 85},  {"64.09", 62}, {"64.03", 82},  {"64", 150}};
  std::vector<v1::FieldChange> batch;
  int n = 0;
  for (const auto& [region, count] : table) {
    for (int i = 0; i < count; ++i, ++n) {
      const Id id = core::NewId();
      // The first 369 in 2014, the rest in 2015; one in five has no category;
      // one in ten has two violence types.
      const std::int64_t received =
          n < 369 ? Day(2014, 1 + n % 12, 1 + n % 28) : Day(2015, 1 + n % 12, 1 + n % 28);
      batch.push_back(
          OpenChange(ani, id, core::kCaseKind, {}, 1, CaseText(1, "K-" + std::to_string(n))));
      batch.push_back(OpenChange(ani, id, core::kCaseKind, {}, 3,
                                 CaseValue([&](cw::Case& c) { c.set_received_at(received); })));
      batch.push_back(OpenChange(ani, id, core::kCaseKind, {}, 14,
                                 CaseValue([&](cw::Case& c) { c.set_region_code(region); })));
      batch.push_back(OpenChange(ani, id, core::kCaseKind, {}, 6, CaseValue([&](cw::Case& c) {
                                   c.add_violence_types(cw::VIOLENCE_TYPE_PHYSICAL);
                                   if (n % 10 == 0) c.add_violence_types(cw::VIOLENCE_TYPE_SEXUAL);
                                 })));
      if (n % 5 != 0)
        batch.push_back(OpenChange(ani, id, core::kCaseKind, {}, 5, CaseValue([&](cw::Case& c) {
                                     c.set_category(cw::CATEGORY_KDRT);
                                   })));
      if (batch.size() >= 400) {
        const v1::PushResult r = Push(*client, batch);
        for (const auto& res : r.results())
          ASSERT_EQ(res.status(), v1::ChangeResult::STATUS_APPLIED) << res.DebugString();
        batch.clear();
      }
    }
  }
  if (!batch.empty()) {
    const v1::PushResult r = Push(*client, batch);
    for (const auto& res : r.results()) ASSERT_EQ(res.status(), v1::ChangeResult::STATUS_APPLIED);
  }

  auto report = ComputeReport(data_dir_, Day(2014, 1, 1), Day(2016, 1, 1),
                              {"region", "month", "violence_type", "category"}, 0, env_);
  ASSERT_TRUE(report) << report.error().message();
  EXPECT_EQ(report->received, 955u);  // the rows of Tabel 1, not its printed 952
  const auto* region = By(*report, "region");
  ASSERT_NE(region, nullptr);
  for (const auto& [code, count] : table)
    EXPECT_EQ(Count(*region, code), static_cast<std::uint64_t>(count)) << code;
  EXPECT_TRUE(region->adds_up);
  EXPECT_EQ(region->sum, 955u);
  const auto* month = By(*report, "month");
  ASSERT_NE(month, nullptr);
  EXPECT_TRUE(month->adds_up);
  EXPECT_EQ(month->rows.size(), 24u);
  const auto* category = By(*report, "category");
  ASSERT_NE(category, nullptr);
  EXPECT_TRUE(category->adds_up);
  EXPECT_EQ(Count(*category, "(unrecorded)"), 191u);  // one in five: n % 5 == 0
  EXPECT_EQ(Count(*category, "KDRT"), 764u);
  const auto* types = By(*report, "violence_type");
  ASSERT_NE(types, nullptr);
  EXPECT_FALSE(types->adds_up);  // flagged, not hidden
  EXPECT_EQ(types->sum, 955u + 96u);
  EXPECT_NE(types->note.find("several"), std::string::npos);

  // One year: 2014 alone.
  auto y2014 = ComputeReport(data_dir_, Day(2014, 1, 1), Day(2015, 1, 1), {"region"}, 0, env_);
  ASSERT_TRUE(y2014);
  EXPECT_EQ(y2014->received, 369u);
  EXPECT_EQ(By(*y2014, "region")->sum, 369u);

  // A dimension the report does not know, or an empty period, is refused.
  EXPECT_FALSE(ComputeReport(data_dir_, Day(2014, 1, 1), Day(2015, 1, 1), {"shoe_size"}, 0, env_));
  EXPECT_FALSE(ComputeReport(data_dir_, Day(2015, 1, 1), Day(2014, 1, 1), {}, 0, env_));
}

}  // namespace
}  // namespace teduh::server::testing
