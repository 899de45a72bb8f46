// Casework rules shared by the device's case API and the server (so both
// apply the same ones): the deadlines (DOMAIN-REPORT §2.6) of the task board
// and the reports, and who counts as a vulnerable victim for referrals.
//
// Thread safety: stateless.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "teduh/case/v1/case.pb.h"
#include "teduh/core/ids.h"

namespace teduh::core {

inline constexpr std::int64_t kHourSeconds = 3600;
inline constexpr std::int64_t kDaySeconds = 24 * kHourSeconds;

// Outreach is due this many hours after the report was received: 24 / 48 /
// 72 for risk high / medium / low; a case not assessed yet counts as high.
std::int64_t OutreachHours(teduh::casework::v1::RiskLevel risk);
// Monitoring comes due every 3 months (6 for low risk), in seconds.
std::int64_t MonitoringPeriodSeconds(teduh::casework::v1::RiskLevel risk);
// A temporary-shelter stay is reviewed this long after the victim entered.
inline constexpr std::int64_t kShelterStaySeconds = 14 * kDaySeconds;
// Home visits after a court verdict: one every 30 days, this many.
inline constexpr std::uint32_t kPostVerdictVisits = 3;
inline constexpr std::int64_t kPostVerdictVisitSeconds = 30 * kDaySeconds;

// The case's episode: 1 until it is first reopened.
int EpisodeOf(const teduh::casework::v1::Case& c);
// When the current episode's outreach clock started: the report's
// received_at, or for a reopened case when it was reopened.
std::int64_t OutreachFrom(const teduh::casework::v1::Case& c);
// The cycle of a deadline of `episode` for TaskId: episode 1 keeps `cycle`
// as it is (the ids of cases never reopened do not change); later episodes
// put the episode in the top 16 bits, so each episode has its own deadlines.
std::uint64_t EpisodeCycle(int episode, std::uint64_t cycle);

// True while the case has not reached the outreach stage.
bool BeforeOutreach(teduh::casework::v1::Stage stage);
// The id of a deadline (and of the Task record that marks it met): derived
// from the case, the kind and the cycle (0 for outreach, 1.. for monitoring),
// so every device computes the same one.
Id TaskId(const Id& case_id, teduh::casework::v1::TaskKind kind, std::uint64_t cycle);

// Why a case may not be closed with `reason` and the outcome `checklist`
// (ClosureCheck values), or "" if it may: every reason but "unreachable"
// (nobody met the victim; a supervisor approves it) needs the checklist;
// "none achieved" stands alone; "resolved" needs the victim safe, her needs
// met and no repeat violence (DOMAIN-REPORT §1.10, §4.11).
std::string ClosureProblem(teduh::casework::v1::ClosureReason reason,
                           const std::vector<int>& checklist);

// A child, a victim with a disability or of old age: an officer must
// accompany a referral. From the case's flags and category, and each
// victim's flags and age group (under 18, or 60 and over).
bool VulnerableVictim(const teduh::casework::v1::Case& c,
                      const std::vector<teduh::casework::v1::Person>& victims);

}  // namespace teduh::core
