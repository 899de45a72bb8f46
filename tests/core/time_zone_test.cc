#include "teduh/core/time_zone.h"

#include <gtest/gtest.h>

namespace teduh::core {
namespace {

// 2026-12-02 16:30 UTC.
constexpr std::int64_t kAfternoonUtc = 1796229000;

TEST(TimeZoneTest, ShowsTheSameMomentInEachZone) {
  EXPECT_EQ(FormatLocalTime(kAfternoonUtc, TimeZone::kWib), "2026-12-02 23:30 WIB");
  EXPECT_EQ(FormatLocalTime(kAfternoonUtc, TimeZone::kWita), "2026-12-03 00:30 WITA");
  EXPECT_EQ(FormatLocalTime(kAfternoonUtc, TimeZone::kWit), "2026-12-03 01:30 WIT");
}

TEST(TimeZoneTest, TheLocalDayCanBeTheNextUtcDay) {
  EXPECT_EQ(LocalDate(kAfternoonUtc, TimeZone::kWib), "20261202");
  EXPECT_EQ(LocalDate(kAfternoonUtc, TimeZone::kWit), "20261203");
}

TEST(TimeZoneTest, ParsesTheThreeNamesInAnyCaseAndNothingElse) {
  EXPECT_EQ(ParseTimeZone("WIB"), TimeZone::kWib);
  EXPECT_EQ(ParseTimeZone("wita"), TimeZone::kWita);
  EXPECT_EQ(ParseTimeZone("Wit"), TimeZone::kWit);
  EXPECT_FALSE(ParseTimeZone(""));
  EXPECT_FALSE(ParseTimeZone("UTC"));
  EXPECT_FALSE(ParseTimeZone("WITAX"));
  for (TimeZone z : {TimeZone::kWib, TimeZone::kWita, TimeZone::kWit})
    EXPECT_EQ(ParseTimeZone(TimeZoneName(z)), z);
}

}  // namespace
}  // namespace teduh::core
