// The unit's case report (DOMAIN-REPORT §6), from open fields only: the
// server computes it without any key (`teduh-server report`) and an office or
// supervisor device computes the same from its local store (`teduh report`).
//
// Counted over the cases received in [from, to): breakdowns by month,
// violence type, category, victim sex and age group, region, referred
// service, service delivered, stage and closure reason; cases resolved
// (closed) in [from, to); and outreach deadlines met, missed, or still open.
// Every breakdown has a row "(unrecorded)" for cases without a value, so a
// single-valued one adds up to the total exactly; one where a case can count
// in several rows (violence types, services, victims of both sexes...) is
// flagged when it does not, with the reason, instead of being forced to.
//
// Row keys are stable codes ("PHYSICAL", a unit's own "TRAFFICKING", a region
// code); ReportLabel gives their display names.
//
// Thread safety: a ReportBuilder is used by one thread; the functions are pure.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "teduh/case/v1/case.pb.h"
#include "teduh/core/codes.h"
#include "teduh/core/error.h"
#include "teduh/core/i18n.h"
#include "teduh/core/ids.h"
#include "teduh/core/time_zone.h"

namespace teduh::core {

// The dimensions `--by` accepts.
inline constexpr const char* kReportDimensions[] = {
    "month",  "violence_type", "category",          "sex",   "age_group",
    "region", "service",       "service_delivered", "stage", "closure_reason"};

// The key of the row of cases without a value.
inline constexpr std::string_view kUnrecordedKey = "(unrecorded)";

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
  std::string note;             // why not (English; see ReportNote), when it does not
};

struct CaseReport {
  std::int64_t from_s = 0, to_s = 0;  // Unix seconds, [from, to)
  std::uint64_t received = 0;         // cases received in the period
  std::uint64_t resolved = 0;         // cases closed in the period
  std::uint64_t deadlines_met = 0, deadlines_missed = 0, deadlines_open = 0;  // outreach
  std::vector<ReportBreakdown> breakdowns;
};

// The period of a report from two days as people type them ("2025-01-01",
// `to` inclusive), counted in the unit's `zone`: [first day 00:00, the day
// after the last 00:00) in Unix seconds. errc::invalid_argument, with the
// reason for people in `why`, for a day that is not a real YYYY-MM-DD or a
// last day before the first.
struct ReportPeriod {
  std::int64_t from_s = 0, to_s = 0;
};
result<ReportPeriod> ParseReportPeriod(std::string_view from_day, std::string_view to_day,
                                       TimeZone zone, std::string* why);

// True if `by` is one of kReportDimensions.
bool IsReportDimension(std::string_view by);

// Gathers the current open values of a unit's records, one at a time in any
// order, then computes the report. Sealed values are never given to it.
class ReportBuilder {
 public:
  // One current open value: the single-field serialization `value` of field
  // `field` of record `record_id` of `kind`, under case `case_id` (a case's
  // own id for the case itself), written at `written_s` (its stamp's time).
  // Kinds the report does not count are ignored.
  void Add(std::string_view kind, const Id& record_id, const Id& case_id, std::uint32_t field,
           std::string_view value, std::int64_t written_s);

  // errc::invalid_argument for an unknown dimension or an empty period.
  // `utc_offset_s`: the unit's time zone, for the months; `now_s` decides
  // which open deadlines are already missed. `codes`: the unit's own codes,
  // whose values count under their code.
  [[nodiscard]] result<CaseReport> Compute(std::int64_t from_s, std::int64_t to_s,
                                           const std::vector<std::string>& by,
                                           std::int64_t utc_offset_s, std::int64_t now_s,
                                           const CodeBook& codes) const;

 private:
  struct CaseFacts {
    teduh::casework::v1::Case c;
    std::int64_t stage_set_s = 0;  // when its stage was last written
  };
  template <typename M>
  struct Child {
    Id case_id{};
    M fields;
  };
  std::map<Id, CaseFacts> cases_;
  std::map<Id, Child<teduh::casework::v1::Person>> persons_;
  std::map<Id, Child<teduh::casework::v1::Task>> tasks_;
  std::map<Id, Child<teduh::casework::v1::Referral>> referrals_;
  std::map<Id, Child<teduh::casework::v1::ServiceDelivered>> delivered_;
};

// The display label of a row of breakdown `by` ("PHYSICAL" -> "fisik").
std::string ReportRowLabel(std::string_view by, std::string_view key, const CodeBook& codes,
                           Lang lang);
// The heading of breakdown `by` ("jenis kekerasan").
std::string ReportHeading(std::string_view by, Lang lang);

// The report as both programs print it. `from_day` and `to_day` are the
// period as asked (inclusive days). JSON: {"from", "to", "received",
// "resolved", "deadlines": {"met", "missed", "open"}, "breakdowns": [{"by",
// "title", "rows": [{"key", "label", "count"}], "total", "sum", "adds_up",
// "note" (when it does not)}]}; keys are codes, labels and notes in `lang`.
nlohmann::json ReportToJson(const CaseReport& report, std::string_view from_day,
                            std::string_view to_day, const CodeBook& codes, Lang lang);
// CSV: "section,key,count", the totals, the deadlines, then each breakdown's
// rows ("by:DIM,KEY,N") and its check ("check:DIM,adds_up,SUM" or
// "check:DIM,MISMATCH: why,SUM").
std::string ReportToCsv(const CaseReport& report);
// A table for people, headings and labels in `lang`.
std::string ReportToText(const CaseReport& report, std::string_view from_day,
                         std::string_view to_day, const CodeBook& codes, Lang lang);

}  // namespace teduh::core
