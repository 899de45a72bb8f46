#include "teduh/core/time_zone.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <string>

#include "teduh/core/i18n.h"

namespace teduh::core {
namespace {

// Times a value may hold, whatever a device or a damaged store put there:
// from 0001-01-02 to 9999-12-30 UTC (a time outside is shown as the nearest
// end; a day inside, so that no zone's offset leaves years 1 to 9999).
constexpr std::int64_t kFirstSecond = -62'135'596'800 + 86'400;
constexpr std::int64_t kLastSecond = 253'402'300'799 - 86'400;

std::tm Broken(std::int64_t unix_seconds, TimeZone zone) {
  unix_seconds = std::clamp(unix_seconds, kFirstSecond, kLastSecond);
  std::time_t t = static_cast<std::time_t>(unix_seconds + TimeZoneOffsetSeconds(zone));
  std::tm tm{};
  gmtime_r(&t, &tm);
  return tm;
}

}  // namespace

std::optional<TimeZone> ParseTimeZone(std::string_view name) {
  if (name.size() > 4) return std::nullopt;  // also bounds a zone sent by the server
  std::string upper;
  for (char c : name) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (upper == "WIB") return TimeZone::kWib;
  if (upper == "WITA") return TimeZone::kWita;
  if (upper == "WIT") return TimeZone::kWit;
  return std::nullopt;
}

std::string_view TimeZoneName(TimeZone zone) {
  switch (zone) {
    case TimeZone::kWita:
      return "WITA";
    case TimeZone::kWit:
      return "WIT";
    case TimeZone::kWib:
      break;
  }
  return "WIB";
}

std::int64_t TimeZoneOffsetSeconds(TimeZone zone) {
  switch (zone) {
    case TimeZone::kWita:
      return 8 * 3600;
    case TimeZone::kWit:
      return 9 * 3600;
    case TimeZone::kWib:
      break;
  }
  return 7 * 3600;
}

std::string_view TimeZoneChoices() {
  // Held for the life of the process: the caller gets a view.
  static const std::string en = "WIB, WITA or WIT";
  static const std::string id = Tr(Lang::kId, "WIB, WITA or WIT");
  return CurrentLang() == Lang::kEn ? en : id;
}

std::string FormatLocalTime(std::int64_t unix_seconds, TimeZone zone) {
  const std::tm tm = Broken(unix_seconds, zone);
  return fmt::format("{:04}-{:02}-{:02} {:02}:{:02} {}", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, TimeZoneName(zone));
}

std::string LocalDate(std::int64_t unix_seconds, TimeZone zone) {
  const std::tm tm = Broken(unix_seconds, zone);
  return fmt::format("{:04}{:02}{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

}  // namespace teduh::core
