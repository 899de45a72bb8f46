// Hybrid logical clock and field stamps (ARCHITECTURE §2.2).
//
// An HLC value packs 48 bits of Unix milliseconds and a 16-bit counter. A
// Stamp is (hlc, device_id), totally ordered, the device id breaking ties.
// The clock never goes backwards: Now() is always greater than every value it
// returned or observed before, even if the wall clock steps back.
//
// Thread safety: Hlc is not thread-safe; a device has one, used under its lock.
#pragma once

#include <compare>
#include <cstdint>

#include "teduh/core/env.h"
#include "teduh/core/ids.h"

namespace teduh::core {

inline constexpr std::uint64_t HlcPack(std::uint64_t ms, std::uint64_t counter) {
  return (ms << 16) | (counter & 0xFFFF);
}
inline constexpr std::int64_t HlcMillis(std::uint64_t hlc) {
  return static_cast<std::int64_t>(hlc >> 16);
}

class Hlc {
 public:
  // `last` is the highest value persisted before (0 on a new device).
  Hlc(Env& env, std::uint64_t last) : env_(env), last_(last) {}
  // A value greater than every value returned or observed so far.
  std::uint64_t Now();
  // Advances past a value received from elsewhere.
  void Observe(std::uint64_t remote);
  // The highest value so far: persist it so the clock survives restarts.
  std::uint64_t last() const { return last_; }

 private:
  Env& env_;
  std::uint64_t last_;
};

struct Stamp {
  std::uint64_t hlc = 0;
  Id device{};
  friend auto operator<=>(const Stamp&, const Stamp&) = default;
  bool empty() const { return hlc == 0; }
};

}  // namespace teduh::core
