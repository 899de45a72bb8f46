// What the benchmarks of teduh-bench share: failing loudly, the server in a
// child process (so its memory is its own), and its resident set size.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>

#include "teduh/core/device.h"
#include "teduh/core/outcome.h"
#include "teduh/crypto/crypto.h"
#include "teduh/server/server.h"

namespace teduh::bench {

namespace core = teduh::core;
namespace server = teduh::server;
namespace crypto = teduh::crypto;
using Clock = std::chrono::steady_clock;

extern pid_t g_server_pid;  // the child to stop if the benchmark fails

// Prints what failed, stops the server child and exits 1.
[[noreturn]] void Die(const std::string& what);

template <typename T>
T Must(core::Outcome<T> r, const char* what) {
  if (!r) Die(std::string(what) + ": " + r.error().message);
  if constexpr (!std::is_void_v<T>) return std::move(*r);
}

template <typename T>
T MustR(core::result<T> r, const char* what) {
  if (!r) Die(std::string(what) + ": " + r.error().message());
  return std::move(*r);
}

double Seconds(Clock::duration d);
// The process's peak (VmHWM) and current (VmRSS) resident set size, bytes; -1 if unknown.
std::int64_t PeakRssBytes(pid_t pid);
std::int64_t RssBytes(pid_t pid);

// Runs the server on `data` in a child process; returns its pid and port.
// `adjust` may change the configuration first.
std::pair<pid_t, std::uint16_t> ForkServer(
    const std::string& data, int threads, std::uint16_t port_wanted = 0,
    const std::function<void(server::ServerConfig&)>& adjust = {});

crypto::SecureBuffer Passphrase();

// teduh-bench --flood (flood.cc).
struct FloodOptions {
  int idle_devices = 2000;
  int senders = 128;
  double seconds = 5;
  int threads = 2;
  bool json = false;
  bool keep = false;
};
int RunFlood(const FloodOptions& options);
core::DeviceOptions Options();

}  // namespace teduh::bench
