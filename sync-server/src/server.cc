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
#include <string>
#include <thread>
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
  return out;
}

// ---- WebSocket session --------------------------------------------------------------

template <class Stream>
class WsSession final : public std::enable_shared_from_this<WsSession<Stream>>,
                        public ConnectionHost {
 public:
  WsSession(ServerContext& ctx, Stream&& stream, std::string peer)
      : ctx_(ctx),
        ws_(std::move(stream)),
        timer_(ws_.get_executor()),
        conn_(ctx, *this, std::move(peer)) {}

  void Run(http::request<http::string_body> req) {
    websocket::stream_base::timeout timeouts{};
    timeouts.handshake_timeout = ctx_.config.handshake_timeout;
    timeouts.idle_timeout = ctx_.config.idle_timeout;
    timeouts.keep_alive_pings = false;
    ws_.set_option(timeouts);
    ws_.set_option(websocket::permessage_deflate{});  // off (the default; stated)
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "teduh-server"); }));
    ws_.read_message_max(ctx_.config.limits.max_frame_bytes);
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
    conn_.Open();
    timer_.expires_after(ctx_.config.handshake_timeout);
    timer_.async_wait(
        beast::bind_front_handler(&WsSession::OnHandshakeTimer, this->shared_from_this()));
    DoRead();
  }

  void OnHandshakeTimer(beast::error_code ec) {
    if (ec == net::error::operation_aborted || shut_) return;
    conn_.OnHandshakeTimeout();
  }

  void DoRead() {
    if (shut_ || closing_) return;
    ws_.async_read(buffer_,
                   beast::bind_front_handler(&WsSession::OnRead, this->shared_from_this()));
  }

  void OnRead(beast::error_code ec, std::size_t) {
    if (ec) {
      // Closed by the peer, timed out, or too big (Beast has then failed the
      // connection with close code 1009).
      if (ec != websocket::error::closed && ec != net::error::operation_aborted)
        ctx_.Log("info", "read_ended", fmt::format("reason=\"{}\"", ec.message()));
      Shutdown();
      return;
    }
    in_on_read_ = true;
    auto data = buffer_.cdata();
    conn_.OnMessage(std::string_view(static_cast<const char*>(data.data()), data.size()),
                    ws_.got_binary());
    in_on_read_ = false;
    buffer_.consume(buffer_.size());
    if (want_read_) {
      want_read_ = false;
      DoRead();
    }
  }

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

// ---- HTTP session: health, metrics, upgrade ----------------------------------------------

template <class Stream>
class HttpSession final : public std::enable_shared_from_this<HttpSession<Stream>> {
 public:
  HttpSession(ServerContext& ctx, Stream&& stream, std::string peer)
      : ctx_(ctx), stream_(std::move(stream)), peer_(std::move(peer)) {}

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
    if (websocket::is_upgrade(req) && req.target() == "/sync") {
      if (ctx_.counters.connections_open.load() >= ctx_.config.max_connections) {
        return Respond(req, http::status::service_unavailable, "busy\n", "text/plain");
      }
      beast::get_lowest_layer(stream_).expires_never();
      std::make_shared<WsSession<Stream>>(ctx_, std::move(stream_), peer_)->Run(std::move(req));
      return;
    }
    if (req.method() == http::verb::get && req.target() == "/healthz")
      return Respond(req, http::status::ok, "ok", "text/plain");
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
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<void> response_;
};

// ---- Listener ----------------------------------------------------------------------------

class Listener final : public std::enable_shared_from_this<Listener> {
 public:
  Listener(net::io_context& ioc, ServerContext& ctx, ssl::context* tls)
      : ioc_(ioc), ctx_(ctx), tls_(tls), acceptor_(net::make_strand(ioc)) {}

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
      std::string peer = fmt::format("{}:{}", remote.address().to_string(), remote.port());
      if (tls_) {
        std::make_shared<HttpSession<TlsStream>>(ctx_, TlsStream(std::move(socket), *tls_),
                                                 std::move(peer))
            ->Run();
      } else {
        std::make_shared<HttpSession<PlainStream>>(ctx_, PlainStream(std::move(socket)),
                                                   std::move(peer))
            ->Run();
      }
    }
    if (acceptor_.is_open()) DoAccept();
  }

  net::io_context& ioc_;
  ServerContext& ctx_;
  ssl::context* tls_;
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
    beast::error_code ec;
    address_ = net::ip::make_address(ctx_.config.host, ec);
    if (ec) return make_error_code(errc::bad_address);
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
    auto worker = StoreWorker::Start(StorePath(ctx_.config.data_dir), ctx_.config, ctx_.env);
    if (!worker) return worker.error();
    ctx_.worker = std::move(*worker);
    return {};
  }

  core::error_code Start() override {
    std::lock_guard lock(mu_);
    if (started_) return {};
    listener_ = std::make_shared<Listener>(ioc_, ctx_, tls_ ? &*tls_ : nullptr);
    if (auto ec = listener_->Open(tcp::endpoint(address_, ctx_.config.port))) return ec;
    port_.store(listener_->port());
    listener_->Run();
    guard_.emplace(ioc_.get_executor());
    const int n = ctx_.config.threads > 0 ? ctx_.config.threads : 1;
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { ioc_.run(); });
    started_ = true;
    ctx_.Log("info", "listening",
             fmt::format("address={} port={} tls={} threads={}", address_.to_string(), port(),
                         tls_ ? "on" : "off", n));
    return {};
  }

  std::uint16_t port() const override { return port_.load(); }

  void Stop() override {
    std::unique_lock lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    if (started_) {
      listener_->Stop();         // 1. stop accepting
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
    return m;
  }

 private:
  // Declared first so it outlives the io_context and every session in it.
  ServerContext ctx_;
  std::optional<ssl::context> tls_;
  net::io_context ioc_;
  net::ip::address address_;
  std::shared_ptr<Listener> listener_;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> guard_;
  std::vector<std::thread> threads_;
  std::atomic<std::uint16_t> port_{0};
  mutable std::mutex mu_;
  std::condition_variable done_cv_;
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
