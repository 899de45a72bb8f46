// The environment a component runs in: wall clock and randomness. Injected so
// tests can fake time and skew clocks (STYLE rule 10).
//
// Thread safety: implementations must be thread-safe.
#pragma once

#include <cstdint>

namespace teduh::core {

class Env {
 public:
  virtual ~Env() = default;
  // Milliseconds since the Unix epoch, as the machine believes.
  virtual std::int64_t NowMs() = 0;
};

// The real clock. Lives for the whole program.
Env& DefaultEnv();

// A clock for tests: starts at `start_ms`, moves only when told.
class FakeEnv final : public Env {
 public:
  explicit FakeEnv(std::int64_t start_ms) : now_ms_(start_ms) {}
  std::int64_t NowMs() override { return now_ms_; }
  void Advance(std::int64_t ms) { now_ms_ += ms; }
  void Set(std::int64_t ms) { now_ms_ = ms; }

 private:
  std::int64_t now_ms_;
};

}  // namespace teduh::core
