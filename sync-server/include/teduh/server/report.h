// The unit's case report (issue 5; DOMAIN-REPORT §6), computed on the server
// from open fields only: the server holds no key, and a report needs none.
//
// Counted over the cases received in [from, to): breakdowns by month,
// violence type, category, victim sex and age group, region, referred
// service, stage and closure reason; cases resolved (closed) in [from, to);
// and outreach deadlines met, missed, or still open. Every breakdown has a
// row "(unrecorded)" for cases without a value, so a single-valued one adds
// up to the total exactly; one where a case can count in several rows
// (violence types, services, victims of both sexes...) is flagged when it
// does not, with the reason, instead of being forced to.
//
// Thread safety: opens its own read-only connection; safe while a server runs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "teduh/core/env.h"
#include "teduh/core/error.h"

namespace teduh::server {

// The dimensions `--by` accepts.
inline constexpr const char* kReportDimensions[] = {
    "month",  "violence_type", "category",          "sex",   "age_group",
    "region", "service",       "service_delivered", "stage", "closure_reason"};

struct ReportRow {
  std::string key;
  std::uint64_t count = 0;
};

struct ReportBreakdown {
  std::string by;
  std::vector<ReportRow> rows;  // by key; "(unrecorded)" last
  std::uint64_t total = 0;      // cases received in the period
  std::uint64_t sum = 0;        // of the rows
  bool adds_up = true;          // sum == total
  std::string note;             // why not, when it does not
};

struct CaseReport {
  std::int64_t from_s = 0, to_s = 0;  // Unix seconds, [from, to)
  std::uint64_t received = 0;         // cases received in the period
  std::uint64_t resolved = 0;         // cases closed in the period
  std::uint64_t deadlines_met = 0, deadlines_missed = 0, deadlines_open = 0;  // outreach
  std::vector<ReportBreakdown> breakdowns;
};

// `utc_offset_s`: the unit's time zone (WIB +7 h, WITA +8 h, WIT +9 h), for
// the months of the month breakdown. errc::invalid_argument for an unknown
// dimension or an empty period.
[[nodiscard]] core::result<CaseReport> ComputeReport(const std::string& data_dir,
                                                     std::int64_t from_s, std::int64_t to_s,
                                                     const std::vector<std::string>& by,
                                                     std::int64_t utc_offset_s, core::Env& env);

}  // namespace teduh::server
