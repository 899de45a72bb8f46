// teduh-server in-process: a WebSocket sync server (docs/PROTOCOL.md) over
// one data folder. Used by the `teduh-server serve` program, by tests and by
// the benchmark.
//
//   auto server = Server::Open(config, core::DefaultEnv());  // opens the store
//   server.value()->Start();   // binds, runs the io threads in the background
//   ... server.value()->port() ...
//   server.value()->Stop();    // graceful: nothing acknowledged is lost
//
// Threads: `threads` io threads run the network (one strand per connection);
// one store writer thread applies pushes with group commit; one store reader
// thread serves pulls and look-ups. No SQLite call runs on an io thread.
//
// Thread safety: Start, Stop and Wait may be called from any thread, but not
// concurrently with each other; port() and metrics() are thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "teduh/core/env.h"
#include "teduh/core/error.h"
#include "teduh/core/frame_codec.h"

namespace teduh::server {

struct ServerConfig {
  std::string data_dir;                                 // made by InitStore (admin.h)
  std::string host = "127.0.0.1";                       // an IP address to listen on
  std::uint16_t port = 0;                               // 0: any free port (see Server::port())
  int threads = 2;                                      // io threads
  std::string tls_cert;                                 // PEM certificate chain file: serve wss://
  std::string tls_key;                                  // PEM private key file
  bool insecure_plaintext = false;                      // allow ws:// on a non-loopback address
  core::FrameLimits limits;                             // announced in Welcome; bounds every frame
  std::int64_t max_skew_ms = 24 * 3600 * 1000;          // stamps further ahead are re-stamped
  std::chrono::milliseconds handshake_timeout{10'000};  // connect to Welcome/EnrollResult
  // An authenticated connection is pinged after half of this without a
  // frame, and closed when the ping is not answered by the end of it.
  std::chrono::milliseconds idle_timeout{120'000};
  std::size_t max_send_queue = 64;  // frames queued to one connection; overflow closes it
  // Connection budgets (docs/SECURITY.md, "Hostile clients").
  std::size_t max_connections = 4096;           // authenticated devices
  std::size_t max_pending_connections = 512;    // not yet authenticated
  std::size_t max_pending_per_address = 32;     // of them, from one IP address
  std::size_t pending_frame_bytes = 16 * 1024;  // a frame before authentication
  std::uint32_t busy_retry_ms = 15'000;         // "server busy: retry in" hint
  std::uint32_t enroll_burst = 20;              // enrollment requests per address: a burst,
  std::int64_t enroll_refill_ms = 10'000;       // then one per this interval
  // The operations listener: /healthz and /metrics, apart from the sync port.
  bool ops = true;
  std::string ops_host = "127.0.0.1";
  std::uint16_t ops_port = 0;            // 0: any free port (see Server::ops_port())
  std::size_t max_group_requests = 256;  // requests applied in one group commit
  std::int64_t default_enroll_ttl_ms = 72 * 3600 * 1000;
  // Storage bounds: bytes of values (each counted with its row) one device,
  // and the whole unit, may store in a day (UTC); beyond, a change is refused
  // with reason "quota" and waits on its device. 0: no bound.
  std::uint64_t max_device_bytes_per_day = std::uint64_t{128} << 20;
  std::uint64_t max_unit_bytes_per_day = std::uint64_t{2} << 30;
  // The largest the store may grow (bytes; 0: as the disk allows). Reaching
  // it is handled as a full disk: writes refused (DISK_FULL), reads served.
  std::uint64_t max_store_bytes = 0;
  // Damage (docs/SECURITY.md "Faults"): SQLite's quick_check runs when the
  // server opens the store (a damaged file is refused), and a background
  // check (quick_check and every row's checksum) runs at start and then
  // every this often. 0: only at open.
  std::chrono::seconds store_check_interval{24 * 3600};
  // One structured line per event, never a field value. Default: stderr.
  std::function<void(std::string_view line)> log;
};

// Counters for /metrics; cumulative since Start.
struct ServerMetrics {
  std::uint64_t connections_open = 0;
  std::uint64_t connections_total = 0;
  std::uint64_t frames_in = 0;
  std::uint64_t frames_out = 0;
  std::uint64_t pushes = 0;
  std::uint64_t changes_applied = 0;
  std::uint64_t commits = 0;
  std::uint64_t pulls = 0;
  std::uint64_t pending = 0;  // connections not yet authenticated
  std::uint64_t authenticated = 0;
  std::uint64_t refused_per_address = 0;
  std::uint64_t refused_pending_full = 0;
  std::uint64_t refused_authenticated_full = 0;
  std::uint64_t refused_enroll_rate = 0;
  std::uint64_t frames_too_large = 0;
  std::uint64_t damaged_rows_met = 0;   // damaged rows reads met (and skipped)
  std::uint64_t store_checks = 0;       // background checks finished
  std::uint64_t last_check_damage = 0;  // findings of the last one (0: intact)
};

class Server {
 public:
  // Opens the store in `config.data_dir` (errc::not_initialised if missing)
  // and checks the configuration (plaintext on a non-loopback address is
  // refused unless insecure_plaintext; the TLS files must load). `env` must
  // outlive the server.
  [[nodiscard]] static core::result<std::unique_ptr<Server>> Open(ServerConfig config,
                                                                  core::Env& env);
  virtual ~Server() = default;

  // Binds and starts the io threads. Returns once the server accepts connections.
  [[nodiscard]] virtual core::error_code Start() = 0;
  // The bound port (valid after Start).
  virtual std::uint16_t port() const = 0;
  // The operations listener's port (valid after Start; 0 without one).
  virtual std::uint16_t ops_port() const = 0;
  // Graceful shutdown: stops accepting, closes connections, applies and
  // commits every request already queued, closes the store. Idempotent.
  virtual void Stop() = 0;
  // Blocks until Stop has completed.
  virtual void Wait() = 0;
  virtual ServerMetrics metrics() const = 0;
};

}  // namespace teduh::server
