// The unit's time zone, for showing times to people. Indonesia keeps three
// zones and no daylight saving, so each is a fixed offset from UTC: WIB
// (UTC+7: Sumatra, Java, West and Central Kalimantan), WITA (UTC+8: Bali,
// Nusa Tenggara, the rest of Kalimantan, Sulawesi) and WIT (UTC+9: Maluku,
// Papua). Stored and sent times stay UTC; only what a person reads is local.
//
// Thread safety: stateless.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace teduh::core {

enum class TimeZone { kWib, kWita, kWit };

// "WIB", "WITA" or "WIT", in any case; nullopt for anything else.
std::optional<TimeZone> ParseTimeZone(std::string_view name);
// The zone's name as people write it ("WITA").
std::string_view TimeZoneName(TimeZone zone);
// Seconds east of UTC (WIB: 25,200).
std::int64_t TimeZoneOffsetSeconds(TimeZone zone);
// The valid names, for error messages: "WIB, WITA or WIT".
std::string_view TimeZoneChoices();

// Unix seconds as a person in the zone reads them: "2026-12-02 20:15 WITA".
std::string FormatLocalTime(std::int64_t unix_seconds, TimeZone zone);
// The calendar day in the zone, as YYYYMMDD (for case numbers).
std::string LocalDate(std::int64_t unix_seconds, TimeZone zone);

}  // namespace teduh::core
