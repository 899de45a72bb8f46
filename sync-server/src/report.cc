#include "teduh/server/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>
#include <map>
#include <set>

#include "teduh/case/v1/case.pb.h"
#include "teduh/core/deadlines.h"
#include "teduh/core/schema.h"
#include "teduh/server/store.h"

namespace teduh::server {
namespace {

namespace cw = teduh::casework::v1;
using core::Id;

constexpr const char* kUnrecorded = "(unrecorded)";

// What the report needs of one case: its open fields and those of its children.
struct CaseFacts {
  cw::Case c;
  std::int64_t stage_set_s = 0;  // when its stage was last written (stamp)
  std::vector<cw::Person> victims;
  std::set<std::string> services;   // referred for
  std::set<std::string> delivered;  // services the unit delivered (accompaniment by kind)
  std::int64_t outreach_done_s = 0;
  std::int64_t outreach_due_s = 0;  // as recorded when it was met
};

std::string EnumName(const google::protobuf::EnumDescriptor* d, int value) {
  const auto* v = d->FindValueByNumber(value);
  if (v == nullptr || value == 0) return kUnrecorded;
  std::string name = v->name();
  const std::string prefix = d->name();
  // RISK_LEVEL_HIGH -> HIGH: drop the enum's own prefix.
  std::string upper;
  for (char ch : prefix) {
    if (std::isupper(static_cast<unsigned char>(ch)) && !upper.empty()) upper += '_';
    upper += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  }
  if (name.rfind(upper + "_", 0) == 0) name = name.substr(upper.size() + 1);
  return name;
}

std::string Month(std::int64_t s, std::int64_t utc_offset_s) {
  std::time_t t = static_cast<std::time_t>(s + utc_offset_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:04}-{:02}", tm.tm_year + 1900, tm.tm_mon + 1);
}

// The keys one case counts under in a dimension (empty: unrecorded).
std::vector<std::string> Keys(const CaseFacts& f, const std::string& by,
                              std::int64_t utc_offset_s) {
  std::vector<std::string> out;
  auto add = [&](std::string k) {
    if (k != kUnrecorded && std::find(out.begin(), out.end(), k) == out.end())
      out.push_back(std::move(k));
  };
  if (by == "month") {
    add(Month(f.c.received_at(), utc_offset_s));
  } else if (by == "violence_type") {
    for (int v : f.c.violence_types()) add(EnumName(cw::ViolenceType_descriptor(), v));
  } else if (by == "category") {
    add(EnumName(cw::Category_descriptor(), f.c.category()));
  } else if (by == "sex") {
    for (const auto& p : f.victims) add(EnumName(cw::Sex_descriptor(), p.sex()));
  } else if (by == "age_group") {
    for (const auto& p : f.victims) add(EnumName(cw::AgeGroup_descriptor(), p.age_group()));
  } else if (by == "region") {
    if (!f.c.region_code().empty()) add(f.c.region_code());
  } else if (by == "service") {
    for (const auto& s : f.services) add(s);
  } else if (by == "service_delivered") {
    for (const auto& s : f.delivered) add(s);
  } else if (by == "stage") {
    add(EnumName(cw::Stage_descriptor(), f.c.stage()));
  } else if (by == "closure_reason") {
    add(EnumName(cw::ClosureReason_descriptor(), f.c.closure_reason()));
  }
  return out;
}

std::string WhyNotAddingUp(const std::string& by) {
  if (by == "violence_type") return "a case may have several violence types";
  if (by == "service") return "a case may be referred for several services";
  if (by == "service_delivered") return "a case may receive several services";
  if (by == "sex" || by == "age_group") return "a case may have several victims";
  return "rows and total disagree";
}

}  // namespace

core::result<CaseReport> ComputeReport(const std::string& data_dir, std::int64_t from_s,
                                       std::int64_t to_s, const std::vector<std::string>& by,
                                       std::int64_t utc_offset_s, core::Env& env) {
  for (const auto& d : by) {
    if (std::find_if(std::begin(kReportDimensions), std::end(kReportDimensions),
                     [&](const char* k) { return d == k; }) == std::end(kReportDimensions))
      return core::make_error_code(core::errc::invalid_argument);
  }
  if (to_s <= from_s) return core::make_error_code(core::errc::invalid_argument);
  StoreOptions options;
  options.read_only = true;
  auto store = OpenSqliteStore(StorePath(data_dir), options);
  if (!store) return store.error();

  // One pass over every current value: open fields only.
  std::map<Id, CaseFacts> cases;
  std::map<Id, std::pair<Id, cw::Person>> persons;  // person -> (case, fields)
  std::map<Id, std::pair<Id, cw::Task>> tasks;
  std::map<Id, std::pair<Id, cw::Referral>> referrals;
  std::map<Id, std::pair<Id, cw::ServiceDelivered>> delivered;
  std::uint64_t after = 0;
  for (;;) {
    std::uint64_t last = after;
    std::size_t seen = 0;
    if (auto ec = (*store)->ScanChanges(PullScope{PullScope::Kind::kUnit, {}}, after, 50000,
                                        [&](const ChangeView& v) {
                                          const FieldRow& f = *v.field;
                                          last = f.seq;
                                          ++seen;
                                          if (f.sealed) return true;
                                          if (v.kind == core::kCaseKind) {
                                            CaseFacts& cf = cases[f.record_id];
                                            cf.c.MergeFromString(std::string(f.value));
                                            if (f.field == cw::Case::kStageFieldNumber)
                                              cf.stage_set_s = core::HlcMillis(f.stamp.hlc) / 1000;
                                          } else if (v.kind == core::kPersonKind) {
                                            auto& p = persons[f.record_id];
                                            p.first = v.case_id;
                                            p.second.MergeFromString(std::string(f.value));
                                          } else if (v.kind == core::kTaskKind) {
                                            auto& t = tasks[f.record_id];
                                            t.first = v.case_id;
                                            t.second.MergeFromString(std::string(f.value));
                                          } else if (v.kind == core::kReferralKind) {
                                            auto& r = referrals[f.record_id];
                                            r.first = v.case_id;
                                            r.second.MergeFromString(std::string(f.value));
                                          } else if (v.kind == core::kServiceDeliveredKind) {
                                            auto& d = delivered[f.record_id];
                                            d.first = v.case_id;
                                            d.second.MergeFromString(std::string(f.value));
                                          }
                                          return true;
                                        }))
      return ec;
    if (seen == 0) break;
    after = last;
  }
  for (auto& [id, p] : persons) {
    auto it = cases.find(p.first);
    if (it != cases.end() && p.second.role() == cw::PERSON_ROLE_VICTIM)
      it->second.victims.push_back(p.second);
  }
  for (auto& [id, r] : referrals) {
    auto it = cases.find(r.first);
    // Only referrals that went out count as a service the case was referred for.
    if (it != cases.end() && !r.second.service().empty() &&
        r.second.status() >= cw::REFERRAL_STATUS_SENT)
      it->second.services.insert(r.second.service());
  }
  // A service delivered counts once per case and service (accompaniment
  // once per kind: ACCOMPANIMENT_LEGAL, ...), whenever it was delivered.
  for (auto& [id, d] : delivered) {
    auto it = cases.find(d.first);
    if (it == cases.end() || d.second.service() == cw::UNIT_SERVICE_UNSPECIFIED) continue;
    std::string key = EnumName(cw::UnitService_descriptor(), d.second.service());
    // Only accompaniment has a kind (a record from a device that set one on
    // another service counts as that service alone).
    if (d.second.service() == cw::UNIT_SERVICE_ACCOMPANIMENT &&
        d.second.accompaniment() != cw::ACCOMPANIMENT_UNSPECIFIED)
      key += "_" + EnumName(cw::Accompaniment_descriptor(), d.second.accompaniment());
    it->second.delivered.insert(std::move(key));
  }
  for (auto& [id, t] : tasks) {
    auto it = cases.find(t.first);
    if (it != cases.end() && t.second.done_at() > 0 &&
        id == core::TaskId(t.first, cw::TASK_KIND_OUTREACH, 0)) {
      it->second.outreach_done_s = t.second.done_at();
      it->second.outreach_due_s = t.second.due_at();
    }
  }

  CaseReport report;
  report.from_s = from_s;
  report.to_s = to_s;
  const std::int64_t now = env.NowMs() / 1000;
  std::vector<const CaseFacts*> received;
  for (const auto& [id, f] : cases) {
    const std::int64_t at = f.c.received_at();
    if (at >= from_s && at < to_s) received.push_back(&f);
    // Resolved: closed in the period (a case closed without a closing time
    // counts when its stage was set to closure).
    const std::int64_t closed = f.c.closed_at() > 0                  ? f.c.closed_at()
                                : f.c.stage() == cw::STAGE_TERMINASI ? f.stage_set_s
                                                                     : 0;
    if (closed > 0 && closed >= from_s && closed < to_s) ++report.resolved;
  }
  report.received = received.size();
  for (const CaseFacts* f : received) {
    // Outreach: met when a Task record says so, against the deadline it
    // recorded then (the risk may have been raised since); a case that moved
    // on without one is judged by when its stage was last written.
    const std::int64_t due =
        f->outreach_due_s > 0
            ? f->outreach_due_s
            : f->c.received_at() + core::OutreachHours(f->c.risk_level()) * core::kHourSeconds;
    std::int64_t met_at = f->outreach_done_s;
    if (met_at == 0 && !core::BeforeOutreach(f->c.stage()) && f->c.stage() != cw::STAGE_TERMINASI)
      met_at = f->stage_set_s;
    if (met_at > 0) {
      ++(met_at <= due ? report.deadlines_met : report.deadlines_missed);
    } else if (f->c.stage() != cw::STAGE_TERMINASI) {
      ++(due < now ? report.deadlines_missed : report.deadlines_open);
    }
  }
  for (const auto& dim : by) {
    ReportBreakdown b;
    b.by = dim;
    b.total = report.received;
    std::map<std::string, std::uint64_t> counts;
    std::uint64_t unrecorded = 0;
    for (const CaseFacts* f : received) {
      auto keys = Keys(*f, dim, utc_offset_s);
      if (keys.empty()) ++unrecorded;
      for (auto& k : keys) ++counts[k];
    }
    for (auto& [k, n] : counts) b.rows.push_back({k, n});
    if (unrecorded > 0) b.rows.push_back({kUnrecorded, unrecorded});
    for (const auto& r : b.rows) b.sum += r.count;
    b.adds_up = b.sum == b.total;
    if (!b.adds_up) b.note = WhyNotAddingUp(dim);
    report.breakdowns.push_back(std::move(b));
  }
  return report;
}

}  // namespace teduh::server
