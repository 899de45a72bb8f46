#include "teduh/core/hlc.h"

#include <algorithm>

namespace teduh::core {

// Invariant: last_ only grows. The physical part follows the wall clock when
// it is ahead; otherwise the counter advances (and carries into the
// millisecond part if 65,535 events happen within one millisecond).
std::uint64_t Hlc::Now() {
  const std::int64_t wall = std::max<std::int64_t>(env_.NowMs(), 0);
  const std::uint64_t candidate = HlcPack(static_cast<std::uint64_t>(wall), 0);
  last_ = candidate > last_ ? candidate : last_ + 1;
  return last_;
}

void Hlc::Observe(std::uint64_t remote) { last_ = std::max(last_, remote); }

}  // namespace teduh::core
