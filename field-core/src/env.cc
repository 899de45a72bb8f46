#include "teduh/core/env.h"

#include <chrono>

namespace teduh::core {
namespace {
class SystemEnv final : public Env {
 public:
  std::int64_t NowMs() override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};
}  // namespace

Env& DefaultEnv() {
  static SystemEnv env;
  return env;
}

}  // namespace teduh::core
