// The unit's case report on the server (`teduh-server report`): core's
// ReportBuilder fed with every current open value of the store. The server
// holds no key, and the report needs none: sealed values are skipped.
//
// Thread safety: opens its own read-only connection; safe while a server runs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "teduh/core/env.h"
#include "teduh/core/error.h"
#include "teduh/core/report.h"

namespace teduh::server {

// `utc_offset_s`: the unit's time zone (WIB +7 h, WITA +8 h, WIT +9 h), for
// the months of the month breakdown. Values of the unit's own codes count
// under their codes; `codes_out`, if given, receives the code book used (for
// the rows' labels). errc::invalid_argument for an unknown dimension or an
// empty period.
[[nodiscard]] core::result<core::CaseReport> ComputeReport(const std::string& data_dir,
                                                           std::int64_t from_s, std::int64_t to_s,
                                                           const std::vector<std::string>& by,
                                                           std::int64_t utc_offset_s,
                                                           core::Env& env,
                                                           core::CodeBook* codes_out = nullptr);

}  // namespace teduh::server
