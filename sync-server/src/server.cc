// The network side of teduh-server: listener, HTTP (health, metrics, upgrade)
// and WebSocket sessions over plain TCP or TLS, after the Boost 1.81 Beast
// examples websocket_server_async and advanced_server. This is the only
// translation unit that includes Beast.
//
// Design notes
// ------------
//   Listener ──accept──► HttpSession<S> ──GET /healthz, /metrics──► response, close
//       (TLS: handshake first)     └──upgrade on /sync──► WsSession<S> ──owns──► Connection
//
// Invariants
//  1. Every session object runs on its own strand (the socket was accepted
//     onto net::make_strand); every handler holds shared_from_this().
//  2. At most one read and one write (async_write or async_close) are in
//     flight per WebSocket; queue_ holds at most max_send_queue frames and a
//     connection that overflows it is dropped.
//  3. buffer_ is consumed before the next read starts (ReadNext() during
//     OnMessage is deferred until the message was consumed).
//  4. Shutdown() runs once per session; it unregisters the connection.
//  5. No handler touches SQLite: store work goes to the StoreWorker.
#include "teduh/server/server.h"

#include <fmt/format.h>
#include <malloc.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

#include "connection.h"
#include "server_context.h"
#include "teduh/crypto/crypto.h"
#include "teduh/server/error.h"

namespace teduh::server {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = boost::asio::ip::tcp;

using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

template <class Stream>
constexpr bool kIsTls = std::is_same_v<Stream, TlsStream>;

std::string MetricsText(const ServerContext& ctx) {
  const Counters& c = ctx.counters;
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, std::uint64_t v) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, v);
  };
  metric("teduh_connections_open", "gauge", "Open WebSocket connections.",
         c.connections_open.load());
  metric("teduh_connections_total", "counter", "WebSocket connections accepted.",
         c.connections_total.load());
  metric("teduh_frames_in_total", "counter", "Frames received.", c.frames_in.load());
  metric("teduh_frames_out_total", "counter", "Frames sent.", c.frames_out.load());
  metric("teduh_pushes_total", "counter", "Push frames received.", c.pushes.load());
  metric("teduh_changes_applied_total", "counter", "Field changes that became current.",
         c.changes_applied.load());
  metric("teduh_pulls_total", "counter", "Pull frames received.", c.pulls.load());
  metric("teduh_commits_total", "counter", "Store group commits.",
         ctx.worker ? ctx.worker->commits() : 0);
  metric("teduh_frames_too_large_total", "counter",
         "Frames refused for their size (before or after authentication).",
         c.frames_too_large.load());
  const AdmissionCounts a = ctx.admission.counts();
  out += "# HELP teduh_connections Connections by state.\n# TYPE teduh_connections gauge\n";
  out += fmt::format("teduh_connections{{state=\"pending\"}} {}\n", a.pending);
  out += fmt::format("teduh_connections{{state=\"authenticated\"}} {}\n", a.authenticated);
  out +=
      "# HELP teduh_connections_refused_total Connections and requests refused, by cause.\n"
      "# TYPE teduh_connections_refused_total counter\n";
  const std::pair<const char*, std::uint64_t> causes[] = {
      {"per_address", a.refused_per_address},
      {"pending_full", a.refused_pending_full},
      {"authenticated_full", a.refused_authenticated_full},
      {"enroll_rate", a.refused_enroll_rate}};
  for (const auto& [cause, n] : causes)
    out += fmt::format("teduh_connections_refused_total{{cause=\"{}\"}} {}\n", cause, n);
  metric("teduh_store_disk_full", "gauge",
         "1 while the store refuses writes for a full disk (or its size bound).",
         ctx.worker && ctx.worker->disk_full() ? 1 : 0);
  out +=
      "# HELP teduh_store_write_failures_total Group commits that failed, by cause.\n"
      "# TYPE teduh_store_write_failures_total counter\n";
  out += fmt::format("teduh_store_write_failures_total{{cause=\"disk_full\"}} {}\n",
                     ctx.worker ? ctx.worker->failed_disk_full() : 0);
  out += fmt::format("teduh_store_write_failures_total{{cause=\"other\"}} {}\n",
                     ctx.worker ? ctx.worker->failed_other() : 0);
  metric("teduh_store_damaged_rows_met_total", "counter",
         "Damaged stored rows that reads met and skipped (never served).",
         ctx.worker ? ctx.worker->damaged_rows_met() : 0);
  metric("teduh_store_checks_total", "counter", "Background store checks finished.",
         ctx.worker ? ctx.worker->checks() : 0);
  metric("teduh_store_check_damage", "gauge",
         "Findings of the last background store check (0: intact).",
         ctx.worker ? ctx.worker->last_check_damage() : 0);
  return out;
}

// ---- WebSocket session --------------------------------------------------------------

template <class Stream>
class WsSession final : public std::enable_shared_from_this<WsSession<Stream>>,
                        public ConnectionHost {
 public:
  WsSession(ServerContext& ctx, Stream&& stream, std::string peer, Admission::Ticket ticket)
      : ctx_(ctx),
        ws_(std::move(stream)),
        timer_(ws_.get_executor()),
        ticket_(std::move(ticket)),
        conn_(ctx, *this, std::move(peer), ticket_.address()) {}

  void Run(http::request<http::string_body> req) {
    websocket::stream_base::timeout timeouts{};
    timeouts.handshake_timeout = ctx_.config.handshake_timeout;
    // A quiet connection is pinged after half the idle timeout; one whose
    // peer answers nothing (no pong, no frame) is closed at its end.
    timeouts.idle_timeout = ctx_.config.idle_timeout;
    timeouts.keep_alive_pings = true;
    ws_.set_option(timeouts);
    ws_.set_option(websocket::permessage_deflate{});  // off (the default; stated)
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "teduh-server"); }));
    // The bound is the connection's own, by phase (Connection::FrameBound),
    // checked as the message arrives so that a breach can be answered.
    ws_.read_message_max(0);
    ws_.binary(true);
    ws_.async_accept(req,
                     beast::bind_front_handler(&WsSession::OnAccept, this->shared_from_this()));
  }

  // ConnectionHost
  void Send(std::string frame) override { Queue(std::move(frame), false); }
  void SendPoke(std::string frame) override {
    if (poke_queued_) return;
    poke_queued_ = true;
    Queue(std::move(frame), true);
  }
  void Close() override {
    close_after_write_ = true;
    if (!writing_ && queue_.empty()) DoClose();
  }
  void ReadNext() override {
    if (in_on_read_) {
      want_read_ = true;  // invariant 3
      return;
    }
    DoRead();
  }
  void HandshakeDone() override { timer_.cancel(); }
  bool AdmitAuthenticated() override { return ticket_.Authenticate(); }
  std::function<void(std::function<void()>)> Poster() override {
    auto self = this->shared_from_this();
    auto ex = ws_.get_executor();
    return [self, ex](std::function<void()> fn) {
      net::post(ex, [self, fn = std::move(fn)] { fn(); });
    };
  }
  std::function<void(std::function<void()>)> WeakPoster() override {
    std::weak_ptr<WsSession> weak = this->shared_from_this();
    auto ex = ws_.get_executor();
    return [weak, ex](std::function<void()> fn) {
      auto self = weak.lock();
      if (!self) return;
      net::post(ex, [self = std::move(self), fn = std::move(fn)] { fn(); });
    };
  }

 private:
  struct Outgoing {
    std::string bytes;
    bool poke = false;
  };

  void OnAccept(beast::error_code ec) {
    if (ec) return;  // the upgrade failed; nothing was registered
    ctx_.counters.connections_open.fetch_add(1);
    ctx_.counters.connections_total.fetch_add(1);
    counted_ = true;
    const bool busy = ticket_.verdict() == Admission::Verdict::kBusy;
    conn_.Open(busy);
    if (busy) return;  // told so; closing
    timer_.expires_after(ctx_.config.handshake_timeout);
    timer_.async_wait(
        beast::bind_front_handler(&WsSession::OnHandshakeTimer, this->shared_from_this()));
    DoRead();
  }

  void OnHandshakeTimer(beast::error_code ec) {
    if (ec == net::error::operation_aborted || shut_) return;
    conn_.OnHandshakeTimeout();
  }

  // Reads the next message piece by piece, up to one byte past the
  // connection's bound, so a breach is seen before the rest is read.
  void DoRead() {
    if (shut_ || closing_) return;
    const std::size_t bound = conn_.FrameBound();
    const std::size_t room = bound + 1 - std::min(buffer_.size(), bound);
    ws_.async_read_some(buffer_, std::min<std::size_t>(room, 64 * 1024),
                        beast::bind_front_handler(&WsSession::OnRead, this->shared_from_this()));
  }

  void OnRead(beast::error_code ec, std::size_t) {
    if (ec) {
      // Closed by the peer or timed out.
      if (ec != websocket::error::closed && ec != net::error::operation_aborted)
        ctx_.Log("info", "read_ended", fmt::format("reason=\"{}\"", ec.message()));
      Shutdown();
      return;
    }
    if (buffer_.size() > conn_.FrameBound()) {
      ReleaseBuffer();
      conn_.OnTooLarge();  // answers, then closes: nothing more is read
      return;
    }
    if (!ws_.is_message_done()) return DoRead();
    in_on_read_ = true;
    auto data = buffer_.cdata();
    conn_.OnMessage(std::string_view(static_cast<const char*>(data.data()), data.size()),
                    ws_.got_binary());
    in_on_read_ = false;
    ReleaseBuffer();
    if (want_read_) {
      want_read_ = false;
      DoRead();
    }
  }

  // Empties the read buffer; a large one is given back, so memory does not
  // stay high after a burst of large frames.
  void ReleaseBuffer() {
    buffer_.consume(buffer_.size());
    if (buffer_.capacity() > kKeptBufferBytes) buffer_.shrink_to_fit();
  }
  static constexpr std::size_t kKeptBufferBytes = 64 * 1024;

  void Queue(std::string bytes, bool poke) {
    if (shut_ || closing_) return;
    if (queue_.size() >= ctx_.config.max_send_queue) {
      ctx_.Log("warn", "send_queue_overflow");
      Abort();
      return;
    }
    queue_.push_back(Outgoing{std::move(bytes), poke});
    if (!writing_) DoWrite();
  }

  void DoWrite() {
    writing_ = true;
    Outgoing& f = queue_.front();
    if (f.poke) poke_queued_ = false;
    ws_.async_write(net::buffer(f.bytes),
                    beast::bind_front_handler(&WsSession::OnWrite, this->shared_from_this()));
  }

  void OnWrite(beast::error_code ec, std::size_t) {
    writing_ = false;
    if (ec) {
      ctx_.Log("info", "write_failed", fmt::format("reason=\"{}\"", ec.message()));
      Shutdown();
      return;
    }
    queue_.pop_front();
    if (!queue_.empty()) {
      DoWrite();
    } else if (close_after_write_) {
      DoClose();
    }
  }

  void DoClose() {
    if (closing_ || shut_) return;
    closing_ = true;
    timer_.cancel();
    ws_.async_close(websocket::close_code::normal,
                    beast::bind_front_handler(&WsSession::OnClose, this->shared_from_this()));
  }

  void OnClose(beast::error_code) { Shutdown(); }

  void Abort() {
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).socket().close(ignored);
    Shutdown();
  }

  void Shutdown() {
    if (shut_) return;  // invariant 4
    shut_ = true;
    timer_.cancel();
    queue_.clear();
    conn_.OnClosed();
    if (counted_) ctx_.counters.connections_open.fetch_sub(1);
  }

  ServerContext& ctx_;
  websocket::stream<Stream> ws_;
  net::steady_timer timer_;
  Admission::Ticket ticket_;  // its place in the connection budgets, until destroyed
  beast::flat_buffer buffer_;
  std::deque<Outgoing> queue_;
  Connection conn_;
  bool writing_ = false;
  bool poke_queued_ = false;
  bool close_after_write_ = false;
  bool closing_ = false;
  bool shut_ = false;
  bool counted_ = false;
  bool in_on_read_ = false;
  bool want_read_ = false;
};

// ---- HTTP session: the upgrade to /sync, or (operations listener) health and metrics --------

// Which listener a connection came in on.
enum class Port { kSync, kOps };

template <class Stream>
class HttpSession final : public std::enable_shared_from_this<HttpSession<Stream>> {
 public:
  HttpSession(ServerContext& ctx, Stream&& stream, std::string peer, Port port,
              Admission::Ticket ticket)
      : ctx_(ctx),
        stream_(std::move(stream)),
        peer_(std::move(peer)),
        port_(port),
        ticket_(std::move(ticket)) {}

  void Run() {
    beast::get_lowest_layer(stream_).expires_after(ctx_.config.handshake_timeout);
    if constexpr (kIsTls<Stream>) {
      stream_.async_handshake(
          ssl::stream_base::server,
          beast::bind_front_handler(&HttpSession::OnTlsHandshake, this->shared_from_this()));
    } else {
      DoRead();
    }
  }

 private:
  void OnTlsHandshake(beast::error_code ec) {
    if (ec) return;  // not TLS, or timed out: drop
    DoRead();
  }

  void DoRead() {
    parser_.emplace();
    parser_->header_limit(8 * 1024);
    parser_->body_limit(4 * 1024);
    beast::get_lowest_layer(stream_).expires_after(ctx_.config.handshake_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&HttpSession::OnRead, this->shared_from_this()));
  }

  void OnRead(beast::error_code ec, std::size_t) {
    if (ec) return;  // closed, timed out or not HTTP: drop
    http::request<http::string_body> req = parser_->release();
    if (port_ == Port::kSync) {
      if (websocket::is_upgrade(req) && req.target() == "/sync") {
        beast::get_lowest_layer(stream_).expires_never();
        std::make_shared<WsSession<Stream>>(ctx_, std::move(stream_), peer_, std::move(ticket_))
            ->Run(std::move(req));
        return;
      }
      // Health and metrics are on the operations listener only: the sync
      // port tells a stranger nothing about how the unit syncs.
      return Respond(req, http::status::not_found, "not found\n", "text/plain");
    }
    if (req.method() == http::verb::get && (req.target() == "/healthz" || req.target() == "/livez"))
      return Respond(req, http::status::ok, "ok", "text/plain");
    if (req.method() == http::verb::get && req.target() == "/readyz") {
      // Ready to take writes: a full disk takes the server out of rotation.
      if (ctx_.worker && ctx_.worker->disk_full())
        return Respond(req, http::status::service_unavailable, "disk full\n", "text/plain");
      // A damaged file (not a damaged row, which is skipped until a device's
      // change replaces it) takes it out too: the admin must restore.
      if (ctx_.worker && ctx_.worker->structure_damaged())
        return Respond(req, http::status::service_unavailable, "store damaged\n", "text/plain");
      return Respond(req, http::status::ok, "ready", "text/plain");
    }
    if (req.method() == http::verb::get && req.target() == "/metrics")
      return Respond(req, http::status::ok, MetricsText(ctx_),
                     "text/plain; version=0.0.4; charset=utf-8");
    Respond(req, http::status::not_found, "not found\n", "text/plain");
  }

  void Respond(const http::request<http::string_body>& req, http::status status, std::string body,
               const char* type) {
    auto res = std::make_shared<http::response<http::string_body>>(status, req.version());
    res->set(http::field::server, "teduh-server");
    res->set(http::field::content_type, type);
    res->keep_alive(false);
    res->body() = std::move(body);
    res->prepare_payload();
    response_ = res;
    http::async_write(stream_, *res,
                      beast::bind_front_handler(&HttpSession::OnWrite, this->shared_from_this()));
  }

  void OnWrite(beast::error_code ec, std::size_t) {
    if constexpr (kIsTls<Stream>) {
      beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(5));
      stream_.async_shutdown(
          [self = this->shared_from_this()](beast::error_code) { self->CloseSocket(); });
    } else {
      CloseSocket();
    }
  }

  void CloseSocket() {
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_send, ignored);
    beast::get_lowest_layer(stream_).socket().close(ignored);
  }

  ServerContext& ctx_;
  Stream stream_;
  std::string peer_;
  const Port port_;
  Admission::Ticket ticket_;  // handed to the WebSocket session on upgrade
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<void> response_;
};

// ---- Listener ----------------------------------------------------------------------------

class Listener final : public std::enable_shared_from_this<Listener> {
 public:
  Listener(net::io_context& ioc, ServerContext& ctx, ssl::context* tls, Port port)
      : ioc_(ioc), ctx_(ctx), tls_(tls), port_kind_(port), acceptor_(net::make_strand(ioc)) {}

  core::error_code Open(const tcp::endpoint& endpoint) {
    beast::error_code ec;
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (!ec) port_ = acceptor_.local_endpoint(ec).port();
    return ec;
  }
  std::uint16_t port() const { return port_; }

  void Run() { DoAccept(); }

  void Stop() {
    net::post(acceptor_.get_executor(), [self = shared_from_this()] {
      beast::error_code ignored;
      self->acceptor_.close(ignored);
    });
  }

 private:
  void DoAccept() {
    acceptor_.async_accept(net::make_strand(ioc_),
                           beast::bind_front_handler(&Listener::OnAccept, shared_from_this()));
  }

  void OnAccept(beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (!acceptor_.is_open()) return;  // stopping
      ctx_.Log("warn", "accept_failed", fmt::format("error={}", ec.value()));
    } else {
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      auto remote = socket.remote_endpoint(ignored);
      std::string address = remote.address().to_string();
      std::string peer = fmt::format("{}:{}", address, remote.port());
      Admission::Ticket ticket;
      if (port_kind_ == Port::kSync) {
        // Admitted into the budget of connections not yet authenticated, or
        // dropped at once (docs/SECURITY.md, "Hostile clients").
        ticket = ctx_.admission.Admit(address);
        if (ticket.verdict() == Admission::Verdict::kDropped) {
          socket.close(ignored);
          if (acceptor_.is_open()) DoAccept();
          return;
        }
      }
      if (tls_) {
        std::make_shared<HttpSession<TlsStream>>(ctx_, TlsStream(std::move(socket), *tls_),
                                                 std::move(peer), port_kind_, std::move(ticket))
            ->Run();
      } else {
        std::make_shared<HttpSession<PlainStream>>(ctx_, PlainStream(std::move(socket)),
                                                   std::move(peer), port_kind_, std::move(ticket))
            ->Run();
      }
    }
    if (acceptor_.is_open()) DoAccept();
  }

  net::io_context& ioc_;
  ServerContext& ctx_;
  ssl::context* tls_;
  const Port port_kind_;
  tcp::acceptor acceptor_;
  std::uint16_t port_ = 0;
};

// ---- Server ----------------------------------------------------------------------------------

class ServerImpl final : public Server {
 public:
  ServerImpl(ServerConfig config, core::Env& env) : ctx_(std::move(config), env) {}
  ~ServerImpl() override { Stop(); }

  core::error_code Init() {
    if (auto ec = crypto::Init()) return ec;
    core::SilenceProtobufLog();
    // Buffers of large frames (up to the 8 MiB bound) are mapped and handed
    // back to the system when freed: glibc would otherwise raise its mapping
    // threshold after the first one and keep a burst's memory in the heap.
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    beast::error_code ec;
    address_ = net::ip::make_address(ctx_.config.host, ec);
    if (ec) return make_error_code(errc::bad_address);
    if (ctx_.config.ops) {
      ops_address_ = net::ip::make_address(ctx_.config.ops_host, ec);
      if (ec) return make_error_code(errc::bad_address);
    }
    const bool tls = !ctx_.config.tls_cert.empty() || !ctx_.config.tls_key.empty();
    if (tls) {
      if (ctx_.config.tls_cert.empty() || ctx_.config.tls_key.empty())
        return make_error_code(errc::tls_failed);
      tls_.emplace(ssl::context::tls_server);
      tls_->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                        ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
      tls_->use_certificate_chain_file(ctx_.config.tls_cert, ec);
      if (!ec) tls_->use_private_key_file(ctx_.config.tls_key, ssl::context::pem, ec);
      if (ec) return make_error_code(errc::tls_failed);
    } else if (!address_.is_loopback() && !ctx_.config.insecure_plaintext) {
      return make_error_code(errc::plaintext_refused);
    }
    // One server per store: a second one is refused before it opens anything.
    auto lock = DataFolderLock::Acquire(ctx_.config.data_dir);
    if (!lock) return lock.error();
    lock_.emplace(std::move(*lock));
    StoreWorker::Events events;
    events.on_disk = [this](bool full) {
      if (full) {
        ctx_.Log("error", "store_disk_full",
                 "note=\"writes are refused (DISK_FULL) and reads served until there is "
                 "room; devices keep their changes\"");
      } else {
        ctx_.Log("info", "store_writable", "note=\"the disk has room again\"");
      }
    };
    events.on_damage = [this](const DamagedRow& row) { LogDamage(row); };
    events.on_check = [this](const StoreCheck& check) { LogCheck(check); };
    std::vector<std::string> findings;
    auto worker = StoreWorker::Start(StorePath(ctx_.config.data_dir), ctx_.config, ctx_.env,
                                     std::move(events), &findings);
    if (!worker) {
      for (const auto& f : findings)
        ctx_.Log("error", "store_damaged", fmt::format("finding=\"{}\"", Quotable(f)));
      return worker.error();
    }
    ctx_.worker = std::move(*worker);
    return {};
  }

  // A damaged row met by a read: logged once per row and process (a pull
  // meets it again at every sync until it is repaired).
  void LogDamage(const DamagedRow& row) {
    {
      std::lock_guard lock(damage_mu_);
      if (damage_logged_.size() >= 4096 ||
          !damage_logged_.emplace(row.table, row.record_id, row.field).second)
        return;
    }
    ctx_.Log("error", "store_damaged",
             fmt::format("table={} record={} field={} note=\"skipped: never served; a new "
                         "change of the field replaces it\"",
                         row.table, core::ToHex(row.record_id), row.field));
  }

  void LogCheck(const StoreCheck& check) {
    if (check.ok()) {
      ctx_.Log("info", "store_check",
               fmt::format("result=intact records={} values={} history={}", check.records,
                           check.values, check.history));
      return;
    }
    ctx_.Log("error", "store_check",
             fmt::format("result=damaged structure={} rows={} note=\"run teduh-server store "
                         "check; restore a backup if the structure is damaged\"",
                         check.structure.size(), check.rows.size()));
    for (const auto& f : check.structure)
      ctx_.Log("error", "store_damaged", fmt::format("finding=\"{}\"", Quotable(f)));
    for (const auto& row : check.rows) LogDamage(row);
  }

  // SQLite's findings quoted in a log line.
  static std::string Quotable(std::string_view text) {
    std::string out;
    for (char c : text.substr(0, 200)) out += (c == '"' || c == '\\' || c < 0x20) ? '\'' : c;
    return out;
  }

  core::error_code Start() override {
    std::lock_guard lock(mu_);
    if (started_) return {};
    listener_ = std::make_shared<Listener>(ioc_, ctx_, tls_ ? &*tls_ : nullptr, Port::kSync);
    if (auto ec = listener_->Open(tcp::endpoint(address_, ctx_.config.port))) return ec;
    if (ctx_.config.ops) {
      ops_listener_ = std::make_shared<Listener>(ioc_, ctx_, nullptr, Port::kOps);
      if (auto ec = ops_listener_->Open(tcp::endpoint(ops_address_, ctx_.config.ops_port))) {
        listener_.reset();
        ops_listener_.reset();
        return make_error_code(errc::ops_listen_failed);
      }
      ops_port_.store(ops_listener_->port());
      ops_listener_->Run();
    }
    port_.store(listener_->port());
    listener_->Run();
    guard_.emplace(ioc_.get_executor());
    const int n = ctx_.config.threads > 0 ? ctx_.config.threads : 1;
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { ioc_.run(); });
    started_ = true;
    ctx_.Log(
        "info", "listening",
        fmt::format("address={} port={} tls={} threads={} ops={}", address_.to_string(), port(),
                    tls_ ? "on" : "off", n,
                    ctx_.config.ops ? fmt::format("{}:{}", ops_address_.to_string(), ops_port())
                                    : std::string("off")));
    if (ctx_.config.ops && !ops_address_.is_loopback())
      ctx_.Log("warn", "ops_not_loopback",
               "note=\"/metrics tells whoever reaches it when and how much the unit syncs\"");
    return {};
  }

  std::uint16_t port() const override { return port_.load(); }
  std::uint16_t ops_port() const override { return ops_port_.load(); }

  void Stop() override {
    std::unique_lock lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    if (started_) {
      listener_->Stop();  // 1. stop accepting
      if (ops_listener_) ops_listener_->Stop();
      ctx_.registry.CloseAll();  // 2. ask every connection to close
    }
    if (ctx_.worker) ctx_.worker->Stop();  // 3. apply and commit everything queued
    if (started_) {
      // 4. let the last replies and close frames go out, briefly.
      for (int i = 0; i < 200 && ctx_.counters.connections_open.load() > 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      guard_.reset();
      ioc_.stop();
      for (auto& t : threads_) t.join();
      threads_.clear();
    }
    ctx_.worker.reset();  // 5. close the store
    lock_.reset();        // 6. then let another server have it
    if (started_) ctx_.Log("info", "stopped");
    done_ = true;
    lock.unlock();
    done_cv_.notify_all();
  }

  void Wait() override {
    std::unique_lock lock(mu_);
    done_cv_.wait(lock, [&] { return done_; });
  }

  ServerMetrics metrics() const override {
    std::lock_guard lock(mu_);
    ServerMetrics m;
    const Counters& c = ctx_.counters;
    m.connections_open = c.connections_open.load();
    m.connections_total = c.connections_total.load();
    m.frames_in = c.frames_in.load();
    m.frames_out = c.frames_out.load();
    m.pushes = c.pushes.load();
    m.changes_applied = c.changes_applied.load();
    m.pulls = c.pulls.load();
    m.commits = ctx_.worker ? ctx_.worker->commits() : 0;
    const AdmissionCounts a = ctx_.admission.counts();
    m.pending = a.pending;
    m.authenticated = a.authenticated;
    m.refused_per_address = a.refused_per_address;
    m.refused_pending_full = a.refused_pending_full;
    m.refused_authenticated_full = a.refused_authenticated_full;
    m.refused_enroll_rate = a.refused_enroll_rate;
    m.frames_too_large = c.frames_too_large.load();
    if (ctx_.worker) {
      m.damaged_rows_met = ctx_.worker->damaged_rows_met();
      m.store_checks = ctx_.worker->checks();
      m.last_check_damage = ctx_.worker->last_check_damage();
    }
    return m;
  }

 private:
  // Declared first so it outlives the io_context and every session in it.
  ServerContext ctx_;
  std::optional<ssl::context> tls_;
  net::io_context ioc_;
  net::ip::address address_;
  net::ip::address ops_address_;
  std::shared_ptr<Listener> listener_;
  std::shared_ptr<Listener> ops_listener_;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> guard_;
  std::vector<std::thread> threads_;
  std::atomic<std::uint16_t> port_{0};
  std::atomic<std::uint16_t> ops_port_{0};
  mutable std::mutex mu_;
  std::condition_variable done_cv_;
  std::mutex damage_mu_;
  std::set<std::tuple<std::string, Id, std::uint32_t>> damage_logged_;  // guarded by damage_mu_
  bool started_ = false;
  bool stopped_ = false;
  bool done_ = false;
  std::optional<DataFolderLock> lock_;  // held from Init to the end of Stop
};

}  // namespace

core::result<std::unique_ptr<Server>> Server::Open(ServerConfig config, core::Env& env) {
  auto server = std::make_unique<ServerImpl>(std::move(config), env);
  if (auto ec = server->Init()) return ec;
  return std::unique_ptr<Server>(std::move(server));
}

}  // namespace teduh::server
