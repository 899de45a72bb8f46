// teduh-bench --flood: the connection budgets and memory of docs/SECURITY.md,
// "Hostile clients", measured (docs/PERFORMANCE.md, "A stranger's flood").
//
//   1. N idle devices (default 2,000) are enrolled and approved, then sign in
//      over one connection each and stay connected, reading (so they answer
//      the server's pings): the server's resident set size before and after
//      gives the memory of one idle signed-in connection;
//   2. a stranger (from 127.0.0.2) opens 200 connections and says nothing
//      (`stranger_pending_held`: how many the server keeps waiting);
//   3. for --flood-seconds, --flood-senders strangers (each from an address
//      of its own, 127.0.x.y) each connect and send
//      an 8 MiB frame, again and again, while a real field device records a
//      case and syncs, again and again: the server's RSS is sampled every
//      20 ms (`server_rss_during_flood_max_bytes`), the device's syncs are
//      counted and timed, and the idle devices must all still be connected;
//   4. the server's RSS one second after the flood (`server_rss_after_flood_bytes`).
// The whole run is repeated with the frame bound before sign-in raised to
// 8 MiB (what the server allowed before it had a bound by phase), so the
// two are compared in the same session.
#include <fmt/format.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <filesystem>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "bench.h"
#include "teduh/core/frame_codec.h"
#include "teduh/core/sealing.h"
#include "teduh/core/sync_client.h"
#include "teduh/core/transport.h"
#include "teduh/server/admin.h"

namespace teduh::bench {
namespace {

namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
namespace v1 = teduh::sync::v1;

std::string Str(std::span<const std::uint8_t> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// A device's keys and id once enrolled.
struct IdleKeys {
  crypto::SignKeyPair sign;
  core::Id id{};
};

// One idle device on a shared io_context: signs in, then keeps a read
// pending (answering pings) until the connection ends.
class IdleClient : public std::enable_shared_from_this<IdleClient> {
 public:
  IdleClient(net::io_context& ioc, const IdleKeys& keys, std::atomic<int>& connected,
             std::atomic<int>& failed)
      : ws_(ioc), keys_(keys), connected_(connected), failed_(failed) {}

  void Start(const tcp::endpoint& ep) {
    beast::get_lowest_layer(ws_).async_connect(
        ep, [self = shared_from_this(), ep](beast::error_code ec) {
          if (ec) return self->Fail();
          self->ws_.async_handshake(fmt::format("127.0.0.1:{}", ep.port()), "/sync",
                                    [self](beast::error_code e) {
                                      if (e) return self->Fail();
                                      self->ws_.binary(true);
                                      self->SendHello();
                                    });
        });
  }

 private:
  void SendHello() {
    v1::Frame f;
    f.set_request_id(1);
    f.mutable_hello()->add_versions(core::kProtocolVersion);
    f.mutable_hello()->set_device_id(std::string(core::AsBytes(keys_.id)));
    Write(f, [](IdleClient& c, const v1::Frame& reply) {
      if (!reply.has_challenge()) return c.Fail();
      std::string msg = core::AuthMessage(reply.challenge().nonce(), reply.challenge().server_id(),
                                          core::AsBytes(c.keys_.id));
      auto sig = crypto::Sign(c.keys_.sign.secret_key, core::AsSpan(msg));
      if (!sig) return c.Fail();
      v1::Frame proof;
      proof.set_request_id(2);
      proof.mutable_proof()->set_signature(Str(*sig));
      c.Write(proof, [](IdleClient& c2, const v1::Frame& welcome) {
        if (!welcome.has_welcome()) return c2.Fail();
        c2.signed_in_ = true;
        ++c2.connected_;
        c2.Idle();
      });
    });
  }

  // Writes `frame`, reads one reply and hands it to `then`.
  void Write(const v1::Frame& frame, void (*then)(IdleClient&, const v1::Frame&)) {
    out_ = frame.SerializeAsString();
    ws_.async_write(
        net::buffer(out_), [self = shared_from_this(), then](beast::error_code ec, std::size_t) {
          if (ec) return self->Fail();
          self->ws_.async_read(self->buf_, [self, then](beast::error_code e, std::size_t) {
            if (e) return self->Fail();
            v1::Frame reply;
            auto data = self->buf_.cdata();
            const bool ok = reply.ParseFromArray(data.data(), static_cast<int>(data.size()));
            self->buf_.consume(self->buf_.size());
            if (!ok) return self->Fail();
            then(*self, reply);
          });
        });
  }

  void Idle() {
    ws_.async_read(buf_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      self->buf_.consume(self->buf_.size());
      if (ec) return self->Fail();
      self->Idle();  // a Poke: keep reading
    });
  }

  void Fail() {
    if (signed_in_) --connected_;
    signed_in_ = false;
    ++failed_;
  }

  websocket::stream<beast::tcp_stream> ws_;
  beast::flat_buffer buf_;
  std::string out_;
  const IdleKeys& keys_;
  std::atomic<int>& connected_;
  std::atomic<int>& failed_;
  bool signed_in_ = false;
};

// A stranger's WebSocket from `source` (another loopback address than the
// unit's devices, which use 127.0.0.1), or nullptr if the server did not take it.
using Ws = websocket::stream<beast::tcp_stream>;
std::unique_ptr<Ws> StrangerConnect(net::io_context& ioc, std::uint16_t port,
                                    const std::string& source) {
  auto ws = std::make_unique<Ws>(ioc);
  auto& sock = beast::get_lowest_layer(*ws).socket();
  beast::error_code ec;
  sock.open(tcp::v4(), ec);
  if (!ec) sock.bind(tcp::endpoint(net::ip::make_address(source), 0), ec);
  if (!ec) sock.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), ec);
  if (ec) return nullptr;
  beast::get_lowest_layer(*ws).expires_after(std::chrono::seconds(5));
  ws->handshake(fmt::format("127.0.0.1:{}", port), "/sync", ec);
  if (ec) return nullptr;
  beast::get_lowest_layer(*ws).expires_never();
  ws->binary(true);
  return ws;
}

IdleKeys EnrollIdle(const std::string& data, const std::string& url, core::Device& admin, int i) {
  IdleKeys k;
  k.sign = MustR(crypto::GenerateSignKeyPair(), "keys");
  auto box = MustR(crypto::GenerateBoxKeyPair(), "keys");
  const std::string code =
      MustR(server::CreateEnrollment(data, v1::ROLE_PENDAMPING, fmt::format("idle{}", i),
                                     std::chrono::hours(1), core::DefaultEnv()),
            "enroll")
          .code;
  v1::EnrollRequest req;
  req.set_version(core::kProtocolVersion);
  req.set_code(code);
  req.set_sign_pk(Str(k.sign.public_key));
  req.set_box_pk(Str(box.public_key));
  req.set_label(fmt::format("idle-{}", i));
  auto sig =
      MustR(crypto::Sign(k.sign.secret_key,
                         core::AsSpan(core::EnrollMessage(code, req.sign_pk(), req.box_pk(), ""))),
            "sign");
  req.set_signature(Str(sig));
  core::SyncClient client(Must(core::ConnectWebSocket(url, {}), "connect"));
  auto result = Must(client.Enroll(req), "idle enroll");
  k.id = *core::IdFromBytes(result.device_id());
  Must(admin.ApproveDevice(core::ToHex(k.id)), "approve");
  return k;
}

// A stranger from `source`: connects and sends an 8 MiB frame, again and
// again until `stop`, counting frames sent and those answered with an error.
void SendLargeFrames(std::uint16_t port, const std::string& source, const std::string& big,
                     const std::atomic<bool>& stop, std::atomic<long>& frames,
                     std::atomic<long>& answered) {
  net::io_context ioc;
  while (!stop) {
    auto c = StrangerConnect(ioc, port, source);
    if (!c) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    ++frames;
    beast::get_lowest_layer(*c).expires_after(std::chrono::seconds(10));
    beast::error_code ec;
    c->write(net::buffer(big), ec);
    if (ec) continue;
    beast::flat_buffer buf;
    c->read(buf, ec);
    if (ec) continue;
    v1::Frame f;
    auto d = buf.cdata();
    if (f.ParseFromArray(d.data(), static_cast<int>(d.size())) && f.has_error() &&
        (f.error().code() == v1::ERROR_CODE_FRAME_TOO_LARGE ||
         f.error().code() == v1::ERROR_CODE_MALFORMED_FRAME))
      ++answered;
  }
}

struct SyncFigures {
  int ok = 0, failed = 0;
  double max_ms = 0;
};

// The field device records a case and syncs, again and again, for `seconds`.
SyncFigures SyncFor(core::Device& device, double seconds) {
  SyncFigures f;
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  for (int n = 0; Clock::now() < end; ++n) {
    Must(device.NewCase({fmt::format("chronology=Kunjungan {}", n)}), "case");
    const auto t0 = Clock::now();
    auto r = device.Sync();
    f.max_ms = std::max(f.max_ms, Seconds(Clock::now() - t0) * 1000);
    r ? ++f.ok : ++f.failed;
  }
  return f;
}

nlohmann::json RunOnce(const FloodOptions& o, std::size_t pending_frame_bytes) {
  char tmpl[] = "/tmp/teduh-flood-XXXXXX";
  if (!mkdtemp(tmpl)) Die("cannot create a temporary folder");
  const std::filesystem::path root = tmpl;
  const std::string data = (root / "server").string();
  auto init = MustR(server::InitStore(data, "UPTD PPA Flood", core::DefaultEnv()), "init");
  auto [pid, port] = ForkServer(data, o.threads, 0, [&](server::ServerConfig& c) {
    c.max_connections = static_cast<std::size_t>(o.idle_devices) + 64;
    c.pending_frame_bytes = pending_frame_bytes;
  });
  g_server_pid = pid;
  const std::string url = fmt::format("ws://127.0.0.1:{}/sync", port);
  const auto pass = Passphrase();
  auto admin = Must(core::Device::Enroll(root / "admin", url, init.bootstrap_code, pass, Options()),
                    "admin enroll");
  const std::string rina_code =
      MustR(server::CreateEnrollment(data, v1::ROLE_PENDAMPING, "rina", std::chrono::hours(1),
                                     core::DefaultEnv()),
            "enroll")
          .code;
  auto rina = Must(core::Device::Enroll(root / "rina", url, rina_code, pass, Options()), "enroll");
  Must(admin->ApproveDevice(core::ToHex(rina->info().device_id)), "approve");
  Must(rina->Sync(), "first sync");

  // 1. Idle signed-in devices.
  const auto setup_start = Clock::now();
  std::vector<IdleKeys> keys;
  keys.reserve(o.idle_devices);
  for (int i = 0; i < o.idle_devices; ++i) keys.push_back(EnrollIdle(data, url, *admin, i));
  const double setup_s = Seconds(Clock::now() - setup_start);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const std::int64_t rss_before = RssBytes(pid);
  net::io_context ioc;
  std::atomic<int> connected{0}, failed{0};
  const tcp::endpoint ep(net::ip::make_address("127.0.0.1"), port);
  {
    // At most 16 signing in at once, as devices arrive over a morning (all
    // from 127.0.0.1: one address's share of the pending budget is 32).
    std::vector<std::shared_ptr<IdleClient>> clients;
    for (const auto& k : keys)
      clients.push_back(std::make_shared<IdleClient>(ioc, k, connected, failed));
    std::size_t next = 0;
    auto work = net::make_work_guard(ioc);
    std::thread runner([&] { ioc.run(); });
    const auto give_up = Clock::now() + std::chrono::seconds(120);
    while ((connected + failed < o.idle_devices) && Clock::now() < give_up) {
      while (next < clients.size() && static_cast<int>(next) - connected - failed < 16)
        net::post(ioc, [c = clients[next++], ep] { c->Start(ep); });
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    clients.clear();  // each keeps itself alive through its pending read
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    const std::int64_t rss_idle = RssBytes(pid);
    const int signed_in = connected.load();

    // 2. A stranger holds connections and says nothing.
    int held = 0, dropped = 0;
    net::io_context stranger_ioc;
    std::vector<std::unique_ptr<Ws>> stranger;
    for (int i = 0; i < 200; ++i) {
      auto t = StrangerConnect(stranger_ioc, port, "127.0.0.2");
      if (t) {
        ++held;
        stranger.push_back(std::move(t));
      } else {
        ++dropped;
      }
    }

    // 3. The flood, with a field device at work.
    std::atomic<bool> stop{false};
    std::atomic<std::int64_t> rss_max{0};
    std::atomic<long> frames{0}, answered{0};
    std::thread sampler([&] {
      while (!stop) {
        const std::int64_t r = RssBytes(pid);
        std::int64_t m = rss_max.load();
        while (r > m && !rss_max.compare_exchange_weak(m, r)) {
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    });
    const std::string big(8u << 20, 'x');
    std::vector<std::thread> senders;
    for (int s = 0; s < o.senders; ++s) {
      // Each sender from an address of its own: a flood from many machines
      // (one address alone holds only its share, as step 2 shows).
      senders.emplace_back([&, source = fmt::format("127.0.{}.{}", 1 + s / 250, 1 + s % 250)] {
        SendLargeFrames(port, source, big, stop, frames, answered);
      });
    }
    const SyncFigures syncs = SyncFor(*rina, o.seconds);
    stop = true;
    for (auto& t : senders) t.join();
    sampler.join();
    stranger.clear();

    // 4. After.
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const std::int64_t rss_after = RssBytes(pid);
    const int still = connected.load();
    work.reset();
    ioc.stop();
    runner.join();

    nlohmann::json j{
        {"pending_frame_bytes", pending_frame_bytes},
        {"idle_devices", o.idle_devices},
        {"idle_setup_s", setup_s},
        {"idle_signed_in", signed_in},
        {"server_rss_before_idle_bytes", rss_before},
        {"server_rss_idle_bytes", rss_idle},
        {"rss_per_idle_connection_bytes",
         signed_in ? (rss_idle - rss_before) / signed_in : std::int64_t{-1}},
        {"stranger_pending_held", held},
        {"stranger_pending_dropped", dropped},
        {"flood_senders", o.senders},
        {"flood_seconds", o.seconds},
        {"flood_frames_sent", frames.load()},
        {"flood_answered_too_large", answered.load()},
        {"server_rss_during_flood_max_bytes", rss_max.load()},
        {"server_rss_after_flood_bytes", rss_after},
        {"device_syncs_during_flood_ok", syncs.ok},
        {"device_syncs_during_flood_failed", syncs.failed},
        {"device_sync_max_ms", syncs.max_ms},
        {"idle_still_connected", still},
    };
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    g_server_pid = 0;
    if (!o.keep) std::filesystem::remove_all(root);
    return j;
  }
}

}  // namespace

int RunFlood(const FloodOptions& o) {
  // Every idle device is a socket here and one in the server.
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  nlohmann::json out;
  out["bounded"] = RunOnce(o, 16 * 1024);
  out["unbounded"] = RunOnce(o, 8u << 20);
  if (o.json) {
    fmt::print("{}\n", out.dump());
  } else {
    fmt::print("{}\n", out.dump(2));
  }
  return 0;
}

}  // namespace teduh::bench
