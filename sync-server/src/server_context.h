// What every connection of one server shares: configuration, the store
// worker, counters, the registry of live connections (for Poke fan-out and
// shutdown) and the log.
//
// Thread safety: everything here is thread-safe (atomics, or guarded by mu_).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "admission.h"
#include "store_worker.h"
#include "teduh/core/env.h"
#include "teduh/server/server.h"

namespace teduh::server {

struct Counters {
  std::atomic<std::uint64_t> connections_open{0};
  std::atomic<std::uint64_t> connections_total{0};
  std::atomic<std::uint64_t> frames_in{0};
  std::atomic<std::uint64_t> frames_out{0};
  std::atomic<std::uint64_t> pushes{0};
  std::atomic<std::uint64_t> changes_applied{0};
  std::atomic<std::uint64_t> pulls{0};
  std::atomic<std::uint64_t> frames_too_large{0};
};

// Live connections. Entries hold callbacks that post to the connection's
// strand through a weak pointer, so the registry never keeps one alive.
class Registry {
 public:
  struct Entry {
    bool authenticated = false;
    Id device{};  // once authenticated
    PullScope scope;
    std::function<void()> poke;   // queue a Poke frame
    std::function<void()> close;  // close the connection
  };
  std::uint64_t Add(Entry entry);
  void Authenticated(std::uint64_t id, const Id& device, PullScope scope);
  // Closes every connection of `device` (it was revoked).
  void CloseDevice(const Id& device);
  void Remove(std::uint64_t id);
  // Pokes every authenticated connection except `except` whose scope a
  // commit touched: unit-wide scopes if anything changed, assigned scopes if
  // their user is in `users` (sorted), or every scope if `everyone`.
  void Poke(std::uint64_t except, bool touched, const std::vector<std::string>& users,
            bool everyone = false);
  void CloseAll();
  std::size_t size() const;

 private:
  mutable std::mutex mu_;
  std::uint64_t next_id_ = 1;
  std::map<std::uint64_t, Entry> entries_;
};

inline AdmissionLimits LimitsOf(const ServerConfig& c) {
  AdmissionLimits l;
  l.max_pending = c.max_pending_connections;
  l.max_pending_per_address = c.max_pending_per_address;
  l.max_busy_answers = std::max<std::size_t>(1, c.max_pending_connections / 8);
  l.max_authenticated = c.max_connections;
  l.enroll_burst = c.enroll_burst;
  l.enroll_refill_ms = c.enroll_refill_ms;
  return l;
}

struct ServerContext {
  ServerContext(ServerConfig c, core::Env& e)
      : config(std::move(c)), env(e), admission(LimitsOf(config)) {}
  const ServerConfig config;
  core::Env& env;
  Admission admission;
  std::unique_ptr<StoreWorker> worker;
  Counters counters;
  Registry registry;

  // One structured line: `event` and key=value pairs. Never pass a field
  // value, a user name, a code or a key.
  void Log(std::string_view level, std::string_view event, std::string_view fields = {}) const;
};

}  // namespace teduh::server
