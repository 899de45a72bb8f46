// The unit's report and code lists on a device (issue 5; DOMAIN-REPORT §6):
// an office or supervisor device holds every case of the unit, so it counts
// what the server counts, from the same open fields (core::ReportBuilder),
// offline, over what it has synced plus its own unsent edits.
#include <fmt/format.h>

#include "teduh/core/device.h"
#include "teduh/core/roles.h"
#include "teduh/core/schema.h"

namespace teduh::core {

Outcome<CodeBook> Device::Codes() {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  return CodesLocked();
}

Outcome<CaseReport> Device::Report(std::int64_t from_s, std::int64_t to_s,
                                   const std::vector<std::string>& by, std::int64_t utc_offset_s) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  const auto role = ParseRole(InfoLocked().role);
  if (!role || ScopeOf(*role) != CaseScope::kUnit)
    return Fail(errc::forbidden,
                Tr("a report counts the whole unit: only office and supervisor devices hold it "
                   "(teduh-server report counts it on the server)"));
  for (const auto& d : by)
    if (!IsReportDimension(d))
      return Fail(errc::invalid_argument,
                  TrF("unknown breakdown '{}'; valid: {}", d.substr(0, 32),
                      fmt::format("{}", fmt::join(kReportDimensions, ","))));
  if (to_s <= from_s) return Fail(errc::invalid_argument, Tr("the period is empty"));

  ReportBuilder builder;
  auto add_record = [&](std::string_view kind, const Id& record_id,
                        const Id& case_id) -> Outcome<void> {
    auto fields = store_->GetFields(record_id);
    if (!fields) return fields.error();
    for (auto& f : *fields) {
      if (!f.sealed)
        builder.Add(kind, record_id, case_id, f.field, f.value,
                    static_cast<std::int64_t>(HlcMillis(f.stamp.hlc) / 1000));
      crypto::Wipe(f.value);
    }
    return {};
  };
  auto cases = store_->ListRecords(kCaseKind, std::nullopt);
  if (!cases) return cases.error();
  for (const auto& c : *cases) {
    if (auto r = add_record(kCaseKind, c.record_id, c.record_id); !r) return r.error();
    for (std::string_view kind : {kPersonKind, kTaskKind, kReferralKind, kServiceDeliveredKind}) {
      auto children = store_->ListRecords(kind, c.record_id);
      if (!children) return children.error();
      for (const auto& child : *children)
        if (auto r = add_record(kind, child.record_id, c.record_id); !r) return r.error();
    }
  }
  auto report =
      builder.Compute(from_s, to_s, by, utc_offset_s, NowMsLocked() / 1000, CodesLocked());
  if (!report) return Fail(report.error());
  return *report;
}

}  // namespace teduh::core
