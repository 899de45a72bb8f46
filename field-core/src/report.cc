#include "teduh/core/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <map>
#include <optional>
#include <set>

#include "teduh/core/deadlines.h"
#include "teduh/core/schema.h"

namespace teduh::core {
namespace {

namespace cw = teduh::casework::v1;

// What the report needs of one received case, its children folded in.
struct Facts {
  const cw::Case* c = nullptr;
  std::int64_t stage_set_s = 0;
  std::vector<const cw::Person*> victims;
  std::set<std::string> services;   // referred for
  std::set<std::string> delivered;  // services the unit delivered (accompaniment by kind)
  std::int64_t outreach_done_s = 0;
  std::int64_t outreach_due_s = 0;  // as recorded when it was met
};

std::string EnumKey(const google::protobuf::EnumDescriptor* d, int value) {
  const auto* v = d->FindValueByNumber(value);
  if (v == nullptr || value == 0) return std::string(kUnrecordedKey);
  return ShortEnumName(*v);
}

// A value of an enum-held code list: the unit's code, else the schema's name,
// else the number (a code added after this program's code book was read).
std::string CodeKey(const CodeBook& codes, std::string_view list,
                    const google::protobuf::EnumDescriptor* d, int value) {
  if (value == 0) return std::string(kUnrecordedKey);
  if (const CodeEntry* e = codes.FindNumber(list, value)) return e->code;
  if (d->FindValueByNumber(value) != nullptr) return EnumKey(d, value);
  return std::to_string(value);
}

std::string Month(std::int64_t s, std::int64_t utc_offset_s) {
  std::time_t t = static_cast<std::time_t>(s + utc_offset_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:04}-{:02}", tm.tm_year + 1900, tm.tm_mon + 1);
}

// The keys one case counts under in a dimension (empty: unrecorded).
std::vector<std::string> Keys(const Facts& f, const std::string& by, std::int64_t utc_offset_s,
                              const CodeBook& codes) {
  std::vector<std::string> out;
  auto add = [&](std::string k) {
    if (k != kUnrecordedKey && std::find(out.begin(), out.end(), k) == out.end())
      out.push_back(std::move(k));
  };
  const cw::Case& c = *f.c;
  if (by == "month") {
    add(Month(c.received_at(), utc_offset_s));
  } else if (by == "violence_type") {
    for (int v : c.violence_types())
      add(CodeKey(codes, "violence_type", cw::ViolenceType_descriptor(), v));
  } else if (by == "category") {
    add(CodeKey(codes, "category", cw::Category_descriptor(), c.category()));
  } else if (by == "sex") {
    for (const auto* p : f.victims) add(EnumKey(cw::Sex_descriptor(), p->sex()));
  } else if (by == "age_group") {
    for (const auto* p : f.victims) add(EnumKey(cw::AgeGroup_descriptor(), p->age_group()));
  } else if (by == "region") {
    if (!c.region_code().empty()) add(c.region_code());
  } else if (by == "service") {
    for (const auto& s : f.services) add(s);
  } else if (by == "service_delivered") {
    for (const auto& s : f.delivered) add(s);
  } else if (by == "stage") {
    add(EnumKey(cw::Stage_descriptor(), c.stage()));
  } else if (by == "closure_reason") {
    add(CodeKey(codes, "closure_reason", cw::ClosureReason_descriptor(), c.closure_reason()));
  }
  return out;
}

// Why a breakdown's rows may not add up to its total (English; NoteText
// gives it in the reader's language).
std::string WhyNotAddingUp(const std::string& by) {
  if (by == "violence_type") return "a case may have several violence types";
  if (by == "service") return "a case may be referred for several services";
  if (by == "service_delivered") return "a case may receive several services";
  if (by == "sex" || by == "age_group") return "a case may have several victims";
  return "rows and total disagree";
}

std::string NoteText(const std::string& note, Lang lang) {
  // The notes WhyNotAddingUp gives, marked for the catalog.
  if (note == "a case may have several violence types")
    return Tr(lang, "a case may have several violence types");
  if (note == "a case may be referred for several services")
    return Tr(lang, "a case may be referred for several services");
  if (note == "a case may receive several services")
    return Tr(lang, "a case may receive several services");
  if (note == "a case may have several victims") return Tr(lang, "a case may have several victims");
  if (note == "rows and total disagree") return Tr(lang, "rows and total disagree");
  return note;
}

const google::protobuf::EnumValueDescriptor* ValueByShortName(
    const google::protobuf::EnumDescriptor* e, std::string_view key) {
  for (int i = 0; i < e->value_count(); ++i)
    if (e->value(i)->number() != 0 && ShortEnumName(*e->value(i)) == key) return e->value(i);
  return nullptr;
}

std::string EnumLabel(const google::protobuf::EnumDescriptor* e, std::string_view key, Lang lang) {
  const auto* v = ValueByShortName(e, key);
  return v != nullptr ? EnumValueLabel(*v, lang) : std::string(key);
}

std::string CsvField(const std::string& v) {
  if (v.find_first_of(",\"\n") == std::string::npos) return v;
  std::string q = "\"";
  for (char c : v) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

template <typename M>
void Merge(M& into, std::string_view value) {
  into.MergeFromString(std::string(value));
}

}  // namespace

result<ReportPeriod> ParseReportPeriod(std::string_view from_day, std::string_view to_day,
                                       TimeZone zone, std::string* why) {
  auto day = [](std::string_view text) -> std::optional<std::int64_t> {
    int y = 0, m = 0, d = 0;
    char tail = 0;
    const std::string t(text.substr(0, 16));
    if (text.size() != 10 || std::sscanf(t.c_str(), "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 ||
        m < 1 || m > 12 || d < 1 || d > 31 || y < 1970)
      return std::nullopt;
    std::tm tm{};
    tm.tm_year = y - 1900;
    tm.tm_mon = m - 1;
    tm.tm_mday = d;
    const auto s = static_cast<std::int64_t>(timegm(&tm));
    if (tm.tm_mday != d || tm.tm_mon != m - 1) return std::nullopt;  // 2025-02-31
    return s;
  };
  const auto from = day(from_day);
  const auto to = day(to_day);
  if (!from || !to) {
    if (why)
      *why =
          Tr("dates are real days, YYYY-MM-DD (--from is the first day, --to the last, "
             "inclusive)");
    return make_error_code(errc::invalid_argument);
  }
  if (*to < *from) {
    if (why) *why = Tr("--to is before --from");
    return make_error_code(errc::invalid_argument);
  }
  const std::int64_t offset = TimeZoneOffsetSeconds(zone);
  return ReportPeriod{*from - offset, *to + kDaySeconds - offset};
}

bool IsReportDimension(std::string_view by) {
  return std::any_of(std::begin(kReportDimensions), std::end(kReportDimensions),
                     [&](const char* k) { return by == k; });
}

void ReportBuilder::Add(std::string_view kind, const Id& record_id, const Id& case_id,
                        std::uint32_t field, std::string_view value, std::int64_t written_s) {
  if (kind == kCaseKind) {
    CaseFacts& cf = cases_[record_id];
    Merge(cf.c, value);
    if (field == cw::Case::kStageFieldNumber) cf.stage_set_s = written_s;
    return;
  }
  auto child = [&](auto& records) {
    auto& r = records[record_id];
    r.case_id = case_id;
    Merge(r.fields, value);
  };
  if (kind == kPersonKind) child(persons_);
  if (kind == kTaskKind) child(tasks_);
  if (kind == kReferralKind) child(referrals_);
  if (kind == kServiceDeliveredKind) child(delivered_);
}

result<CaseReport> ReportBuilder::Compute(std::int64_t from_s, std::int64_t to_s,
                                          const std::vector<std::string>& by,
                                          std::int64_t utc_offset_s, std::int64_t now_s,
                                          const CodeBook& codes) const {
  for (const auto& d : by)
    if (!IsReportDimension(d)) return make_error_code(errc::invalid_argument);
  if (to_s <= from_s) return make_error_code(errc::invalid_argument);

  std::map<Id, Facts> facts;
  for (const auto& [id, cf] : cases_) {
    Facts& f = facts[id];
    f.c = &cf.c;
    f.stage_set_s = cf.stage_set_s;
  }
  for (const auto& [id, p] : persons_) {
    auto it = facts.find(p.case_id);
    if (it != facts.end() && p.fields.role() == cw::PERSON_ROLE_VICTIM)
      it->second.victims.push_back(&p.fields);
  }
  for (const auto& [id, r] : referrals_) {
    auto it = facts.find(r.case_id);
    // Only referrals that went out count as a service the case was referred for.
    if (it != facts.end() && !r.fields.service().empty() &&
        r.fields.status() >= cw::REFERRAL_STATUS_SENT)
      it->second.services.insert(r.fields.service());
  }
  // A service delivered counts once per case and service (accompaniment
  // once per kind: ACCOMPANIMENT_LEGAL, ...), whenever it was delivered; a
  // record another one corrects no longer counts (its correction does).
  // (A correction counts only within its own case.)
  std::set<std::pair<Id, std::string>> corrected;
  for (const auto& [id, d] : delivered_)
    if (!d.fields.corrects().empty()) corrected.emplace(d.case_id, d.fields.corrects());
  for (const auto& [id, d] : delivered_) {
    auto it = facts.find(d.case_id);
    if (it == facts.end() || d.fields.service() == cw::UNIT_SERVICE_UNSPECIFIED) continue;
    if (corrected.count({d.case_id, std::string(AsBytes(id))}) > 0) continue;
    std::string key = EnumKey(cw::UnitService_descriptor(), d.fields.service());
    // Only accompaniment has a kind (a record from a device that set one on
    // another service counts as that service alone).
    if (d.fields.service() == cw::UNIT_SERVICE_ACCOMPANIMENT &&
        d.fields.accompaniment() != cw::ACCOMPANIMENT_UNSPECIFIED)
      key += "_" + EnumKey(cw::Accompaniment_descriptor(), d.fields.accompaniment());
    it->second.delivered.insert(std::move(key));
  }
  for (const auto& [id, t] : tasks_) {
    auto it = facts.find(t.case_id);
    if (it != facts.end() && t.fields.done_at() > 0 &&
        id == TaskId(t.case_id, cw::TASK_KIND_OUTREACH, 0)) {
      it->second.outreach_done_s = t.fields.done_at();
      it->second.outreach_due_s = t.fields.due_at();
    }
  }

  CaseReport report;
  report.from_s = from_s;
  report.to_s = to_s;
  std::vector<const Facts*> received;
  for (const auto& [id, f] : facts) {
    const cw::Case& c = *f.c;
    const std::int64_t at = c.received_at();
    if (at >= from_s && at < to_s) received.push_back(&f);
    // Resolved: closed in the period (a case closed without a closing time
    // counts when its stage was set to closure).
    const std::int64_t closed = c.closed_at() > 0                  ? c.closed_at()
                                : c.stage() == cw::STAGE_TERMINASI ? f.stage_set_s
                                                                   : 0;
    if (closed > 0 && closed >= from_s && closed < to_s) ++report.resolved;
  }
  report.received = received.size();
  for (const Facts* f : received) {
    const cw::Case& c = *f->c;
    // Outreach: met when a Task record says so, against the deadline it
    // recorded then (the risk may have been raised since); a case that moved
    // on without one is judged by when its stage was last written.
    const std::int64_t due = f->outreach_due_s > 0
                                 ? f->outreach_due_s
                                 : c.received_at() + OutreachHours(c.risk_level()) * kHourSeconds;
    std::int64_t met_at = f->outreach_done_s;
    if (met_at == 0 && !BeforeOutreach(c.stage()) && c.stage() != cw::STAGE_TERMINASI)
      met_at = f->stage_set_s;
    if (met_at > 0) {
      ++(met_at <= due ? report.deadlines_met : report.deadlines_missed);
    } else if (c.stage() != cw::STAGE_TERMINASI) {
      ++(due < now_s ? report.deadlines_missed : report.deadlines_open);
    }
  }
  for (const auto& dim : by) {
    ReportBreakdown b;
    b.by = dim;
    b.total = report.received;
    std::map<std::string, std::uint64_t> counts;
    std::uint64_t unrecorded = 0;
    for (const Facts* f : received) {
      auto keys = Keys(*f, dim, utc_offset_s, codes);
      if (keys.empty()) ++unrecorded;
      for (auto& k : keys) ++counts[k];
    }
    for (auto& [k, n] : counts) b.rows.push_back({k, n});
    if (unrecorded > 0) b.rows.push_back({std::string(kUnrecordedKey), unrecorded});
    for (const auto& r : b.rows) b.sum += r.count;
    b.adds_up = b.sum == b.total;
    if (!b.adds_up) b.note = WhyNotAddingUp(dim);
    report.breakdowns.push_back(std::move(b));
  }
  return report;
}

std::string ReportRowLabel(std::string_view by, std::string_view key, const CodeBook& codes,
                           Lang lang) {
  if (key == kUnrecordedKey) return Tr(lang, "(unrecorded)");
  const std::string l(LangCode(lang));
  auto code = [&](std::string_view list) {
    const CodeEntry* e = codes.FindCode(list, key);
    return e != nullptr ? CodeBook::Label(*e, l) : std::string(key);
  };
  if (by == "violence_type" || by == "category" || by == "closure_reason" || by == "region")
    return code(by);
  if (by == "service") return code("referral_service");
  if (by == "sex") return EnumLabel(cw::Sex_descriptor(), key, lang);
  if (by == "age_group") return EnumLabel(cw::AgeGroup_descriptor(), key, lang);
  if (by == "stage") return EnumLabel(cw::Stage_descriptor(), key, lang);
  if (by == "service_delivered") {
    // "ACCOMPANIMENT_LEGAL": the service, then the kind of accompaniment.
    if (ValueByShortName(cw::UnitService_descriptor(), key) == nullptr &&
        key.rfind("ACCOMPANIMENT_", 0) == 0)
      return EnumLabel(cw::UnitService_descriptor(), "ACCOMPANIMENT", lang) + " (" +
             EnumLabel(cw::Accompaniment_descriptor(), key.substr(14), lang) + ")";
    return EnumLabel(cw::UnitService_descriptor(), key, lang);
  }
  return std::string(key);
}

std::string ReportHeading(std::string_view by, Lang lang) {
  if (by == "month") return Tr(lang, "month");
  if (by == "violence_type") return Tr(lang, "violence type");
  if (by == "category") return Tr(lang, "category");
  if (by == "sex") return Tr(lang, "victim's sex");
  if (by == "age_group") return Tr(lang, "victim's age group");
  if (by == "region") return Tr(lang, "region");
  if (by == "service") return Tr(lang, "referred for");
  if (by == "service_delivered") return Tr(lang, "service delivered");
  if (by == "stage") return Tr(lang, "stage");
  if (by == "closure_reason") return Tr(lang, "closure reason");
  return std::string(by);
}

nlohmann::json ReportToJson(const CaseReport& report, std::string_view from_day,
                            std::string_view to_day, const CodeBook& codes, Lang lang) {
  nlohmann::json breakdowns = nlohmann::json::array();
  for (const auto& b : report.breakdowns) {
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& r : b.rows)
      rows.push_back({{"key", r.key},
                      {"label", ReportRowLabel(b.by, r.key, codes, lang)},
                      {"count", r.count}});
    nlohmann::json j{{"by", b.by},   {"title", ReportHeading(b.by, lang)},
                     {"rows", rows}, {"total", b.total},
                     {"sum", b.sum}, {"adds_up", b.adds_up}};
    if (!b.adds_up) j["note"] = NoteText(b.note, lang);
    breakdowns.push_back(std::move(j));
  }
  return nlohmann::json{{"from", from_day},
                        {"to", to_day},
                        {"received", report.received},
                        {"resolved", report.resolved},
                        {"deadlines",
                         {{"met", report.deadlines_met},
                          {"missed", report.deadlines_missed},
                          {"open", report.deadlines_open}}},
                        {"breakdowns", breakdowns}};
}

std::string ReportToCsv(const CaseReport& report) {
  std::string out = "section,key,count\n";
  out += fmt::format("total,received,{}\ntotal,resolved,{}\n", report.received, report.resolved);
  out += fmt::format("deadlines,met,{}\ndeadlines,missed,{}\ndeadlines,open,{}\n",
                     report.deadlines_met, report.deadlines_missed, report.deadlines_open);
  for (const auto& b : report.breakdowns) {
    for (const auto& r : b.rows)
      out += fmt::format("by:{},{},{}\n", b.by, CsvField(r.key), r.count);
    out += fmt::format("check:{},{},{}\n", b.by,
                       b.adds_up ? std::string("adds_up") : CsvField("MISMATCH: " + b.note), b.sum);
  }
  return out;
}

std::string ReportToText(const CaseReport& report, std::string_view from_day,
                         std::string_view to_day, const CodeBook& codes, Lang lang) {
  std::string out = TrFIn(lang, "Case report {} to {}", from_day, to_day) + "\n\n";
  auto line = [&](const std::string& label, std::uint64_t n) {
    out += fmt::format("  {:<44} {:>7}\n", label, n);
  };
  line(Tr(lang, "cases received"), report.received);
  line(Tr(lang, "cases resolved"), report.resolved);
  line(Tr(lang, "outreach deadlines met"), report.deadlines_met);
  line(Tr(lang, "outreach deadlines missed"), report.deadlines_missed);
  line(Tr(lang, "outreach deadlines still open"), report.deadlines_open);
  for (const auto& b : report.breakdowns) {
    out += "\n" + TrFIn(lang, "By {}", ReportHeading(b.by, lang)) + "\n";
    for (const auto& r : b.rows) {
      std::string label = ReportRowLabel(b.by, r.key, codes, lang);
      if (label != r.key && r.key != kUnrecordedKey) label += " [" + r.key + "]";
      line(label, r.count);
    }
    if (b.adds_up) {
      line(Tr(lang, "total"), b.total);
    } else {
      out += "  " +
             TrFIn(lang, "MISMATCH: the rows add up to {}, the total is {} ({})", b.sum, b.total,
                   NoteText(b.note, lang)) +
             "\n";
    }
  }
  return out;
}

}  // namespace teduh::core
