#include "teduh/core/deadlines.h"

#include <algorithm>
#include <string>

#include "teduh/core/i18n.h"
#include "teduh/crypto/crypto.h"

namespace teduh::core {

namespace cw = teduh::casework::v1;

std::int64_t OutreachHours(cw::RiskLevel risk) {
  switch (risk) {
    case cw::RISK_LEVEL_MEDIUM:
      return 48;
    case cw::RISK_LEVEL_LOW:
      return 72;
    default:
      return 24;
  }
}

std::int64_t MonitoringPeriodSeconds(cw::RiskLevel risk) {
  return risk == cw::RISK_LEVEL_LOW ? 182 * kDaySeconds : 91 * kDaySeconds;
}

int EpisodeOf(const cw::Case& c) { return std::max(1, c.episode()); }

std::int64_t OutreachFrom(const cw::Case& c) {
  return EpisodeOf(c) > 1 && c.reopened_at() > 0 ? c.reopened_at() : c.received_at();
}

std::uint64_t EpisodeCycle(int episode, std::uint64_t cycle) {
  if (episode <= 1) return cycle;
  return (static_cast<std::uint64_t>(episode - 1) << 48) | (cycle & ((1ULL << 48) - 1));
}

bool BeforeOutreach(cw::Stage stage) {
  return stage == cw::STAGE_UNSPECIFIED || stage == cw::STAGE_PENGADUAN ||
         stage == cw::STAGE_REGISTRASI;
}

Id TaskId(const Id& case_id, cw::TaskKind kind, std::uint64_t cycle) {
  std::string in = "teduh-task-v1";
  in.append(AsBytes(case_id));
  in.push_back(static_cast<char>(kind));
  for (int i = 7; i >= 0; --i) in.push_back(static_cast<char>((cycle >> (8 * i)) & 0xFF));
  const auto h = crypto::Hash(AsSpan(in));
  Id id{};
  std::copy_n(h.begin(), id.size(), id.begin());
  return id;
}

std::string ClosureProblem(cw::ClosureReason reason, const std::vector<int>& checklist) {
  auto has = [&](cw::ClosureCheck c) {
    return std::find(checklist.begin(), checklist.end(), c) != checklist.end();
  };
  if (reason == cw::CLOSURE_REASON_UNREACHABLE) return "";
  if (checklist.empty())
    return Tr(
        "a case is closed with its outcome checklist: add --set closure_checklist=... "
        "(safe, recovered, needs_met, rights_fulfilled, no_repeat_violence, legal_settled, "
        "support_explained, or none_met)");
  if (has(cw::CLOSURE_CHECK_NONE_MET) && checklist.size() > 1)
    return Tr("none_met stands alone on the closure checklist");
  if (reason == cw::CLOSURE_REASON_RESOLVED &&
      !(has(cw::CLOSURE_CHECK_SAFE) && has(cw::CLOSURE_CHECK_NEEDS_MET) &&
        has(cw::CLOSURE_CHECK_NO_REPEAT_VIOLENCE)))
    return Tr(
        "a resolved case has the victim safe, her needs met and no repeat violence on its "
        "checklist (safe, needs_met, no_repeat_violence); otherwise close it with another "
        "reason");
  return "";
}

bool VulnerableVictim(const cw::Case& c, const std::vector<cw::Person>& victims) {
  if (c.victim_is_child() || c.victim_has_disability() || c.victim_is_elderly() ||
      c.category() == cw::CATEGORY_CHILD_PROTECTION)
    return true;
  for (const auto& p : victims) {
    if (p.is_child() || p.has_disability() || p.is_elderly()) return true;
    switch (p.age_group()) {
      case cw::AGE_GROUP_0_5:
      case cw::AGE_GROUP_6_12:
      case cw::AGE_GROUP_13_17:
      case cw::AGE_GROUP_60_PLUS:
        return true;
      default:
        break;
    }
  }
  return false;
}

}  // namespace teduh::core
