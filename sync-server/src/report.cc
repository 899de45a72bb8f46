#include "teduh/server/report.h"

#include "teduh/core/hlc.h"
#include "teduh/server/admin.h"
#include "teduh/server/store.h"

namespace teduh::server {

core::result<core::CaseReport> ComputeReport(const std::string& data_dir, std::int64_t from_s,
                                             std::int64_t to_s, const std::vector<std::string>& by,
                                             std::int64_t utc_offset_s, core::Env& env,
                                             core::CodeBook* codes_out) {
  for (const auto& d : by)
    if (!core::IsReportDimension(d)) return core::make_error_code(core::errc::invalid_argument);
  if (to_s <= from_s) return core::make_error_code(core::errc::invalid_argument);
  StoreOptions options;
  options.read_only = true;
  auto store = OpenSqliteStore(StorePath(data_dir), options);
  if (!store) return store.error();
  auto unit = (*store)->LoadUnit();
  if (!unit) return unit.error();
  auto codes = UnitCodeBook(*unit);
  if (!codes) return codes.error();

  // One pass over every current value: open fields only.
  core::ReportBuilder builder;
  std::uint64_t after = 0;
  for (;;) {
    std::uint64_t last = after;
    std::size_t seen = 0;
    if (auto ec = (*store)->ScanChanges(
            PullScope{PullScope::Kind::kUnit, {}}, after, 50000, [&](const ChangeView& v) {
              const FieldRow& f = *v.field;
              last = f.seq;
              ++seen;
              if (!f.sealed)
                builder.Add(v.kind, f.record_id, v.case_id, f.field, f.value,
                            static_cast<std::int64_t>(core::HlcMillis(f.stamp.hlc) / 1000));
              return true;
            }))
      return ec;
    if (seen == 0) break;
    after = last;
  }
  if (codes_out) *codes_out = *codes;
  return builder.Compute(from_s, to_s, by, utc_offset_s, env.NowMs() / 1000, *codes);
}

}  // namespace teduh::server
