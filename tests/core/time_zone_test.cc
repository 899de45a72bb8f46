#include "teduh/core/time_zone.h"

#include <gtest/gtest.h>

#include <limits>

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

// A time no person could mean (a damaged value, a hostile device's) is shown
// as the nearest of year 1 and year 9999, never overflowing (found by fuzzing).
TEST(TimeZoneTest, ATimeOutsideTheCalendarIsShownAtItsNearestEnd) {
  constexpr auto kMax = std::numeric_limits<std::int64_t>::max();
  constexpr auto kMin = std::numeric_limits<std::int64_t>::min();
  EXPECT_EQ(FormatLocalTime(kMax, TimeZone::kWit).substr(0, 10), "9999-12-31");
  EXPECT_EQ(FormatLocalTime(kMin, TimeZone::kWib).substr(0, 10), "0001-01-02");
  EXPECT_EQ(LocalDate(kMax, TimeZone::kWita), "99991231");
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
