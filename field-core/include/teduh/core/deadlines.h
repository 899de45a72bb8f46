// The casework deadlines (DOMAIN-REPORT §2.6), shared by the device's task
// board and the server's reports so that both count the same deadlines.
//
// Thread safety: stateless.
#pragma once

#include <cstdint>

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
// True while the case has not reached the outreach stage.
bool BeforeOutreach(teduh::casework::v1::Stage stage);
// The id of a deadline (and of the Task record that marks it met): derived
// from the case, the kind and the cycle (0 for outreach, 1.. for monitoring),
// so every device computes the same one.
Id TaskId(const Id& case_id, teduh::casework::v1::TaskKind kind, std::uint64_t cycle);

}  // namespace teduh::core
