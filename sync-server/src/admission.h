// Who may hold a connection, in two budgets (docs/SECURITY.md, "Hostile
// clients"): connections that have not yet authenticated (strangers,
// enrolling devices, devices in their handshake) and authenticated devices.
//
//   accept ──Admit──► kPending ──Authenticate ok──► kAuthenticated
//      │                 └── budget of authenticated devices full: refused (busy)
//      ├── this address already holds max_pending_per_address pending: dropped at once
//      └── the pending budget is full: kBusy (answered "server busy", then closed),
//          or dropped at once when max_busy_answers are already being answered
//
// A stranger who opens connections as fast as it can fills at most its own
// per-address share of the pending budget; the authenticated budget is never
// reachable without a device key. Every count is exact: each change happens
// under one mutex, and a Ticket gives its slot back exactly once.
//
// Thread safety: every member function is thread-safe.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace teduh::server {

struct AdmissionLimits {
  std::size_t max_pending = 512;             // connections not yet authenticated
  std::size_t max_pending_per_address = 32;  // of them, from one IP address
  std::size_t max_busy_answers = 64;         // "server busy" answers being sent at once
  std::size_t max_authenticated = 4096;      // authenticated devices
  // Enrollment requests per address: a burst, then one per refill interval.
  std::uint32_t enroll_burst = 20;
  std::int64_t enroll_refill_ms = 10'000;
};

// Refusals, by cause (for /metrics).
struct AdmissionCounts {
  std::uint64_t pending = 0;
  std::uint64_t authenticated = 0;
  std::uint64_t refused_per_address = 0;   // dropped at accept: the address's share is full
  std::uint64_t refused_pending_full = 0;  // answered busy (or dropped): pending budget full
  std::uint64_t refused_authenticated_full = 0;
  std::uint64_t refused_enroll_rate = 0;
};

class Admission {
 public:
  explicit Admission(AdmissionLimits limits) : limits_(limits) {}

  enum class Verdict { kAdmitted, kBusy, kDropped };

  // One connection's place in the budgets; gives it back when destroyed.
  class Ticket {
   public:
    Ticket() = default;
    Ticket(Ticket&& other) noexcept { *this = std::move(other); }
    Ticket& operator=(Ticket&& other) noexcept;
    ~Ticket() { Release(); }
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;

    Verdict verdict() const { return verdict_; }
    const std::string& address() const { return address_; }
    // Moves a pending connection into the authenticated budget; false (and
    // the connection stays pending) when that budget is full.
    bool Authenticate();
    void Release();

   private:
    friend class Admission;
    Admission* owner_ = nullptr;
    std::string address_;
    Verdict verdict_ = Verdict::kDropped;
    bool authenticated_ = false;
  };

  // At accept, with the peer's IP address.
  Ticket Admit(const std::string& address);
  // Whether `address` may send an enrollment request now; when not, how long
  // until it may (ms) in *retry_after_ms.
  bool AllowEnroll(const std::string& address, std::int64_t now_ms, std::uint32_t* retry_after_ms);

  AdmissionCounts counts() const;
  const AdmissionLimits& limits() const { return limits_; }

 private:
  struct Bucket {
    double tokens = 0;
    std::int64_t at_ms = 0;
  };
  void Give(Ticket& t);
  bool Promote(Ticket& t);

  const AdmissionLimits limits_;
  mutable std::mutex mu_;
  std::map<std::string, std::size_t> pending_by_address_;
  std::map<std::string, Bucket> enroll_;
  std::size_t busy_answers_ = 0;
  AdmissionCounts counts_;
};

}  // namespace teduh::server
