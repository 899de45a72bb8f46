// The WebSocket transport of the device (transport.h): Boost.Beast lives in
// this file only. Blocking calls are async operations run on a private
// io_context with run_for(), so every call is bounded; a call that times out
// cancels the socket and leaves the transport unusable (the sync engine then
// reconnects; nothing is lost because pushes are idempotent).
#include <fmt/format.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>

#include "teduh/core/i18n.h"
#include "teduh/core/transport.h"

namespace teduh::core {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

struct ParsedUrl {
  bool tls = false;
  std::string host;
  std::string port;
  std::string path;
};

Outcome<ParsedUrl> ParseUrl(std::string_view url) {
  ParsedUrl u;
  auto bad = [&] {
    return Fail(errc::invalid_argument,
                TrF("'{}' is not a server address like wss://host:port or ws://host:port",
                    url.substr(0, 200)));
  };
  if (url.starts_with("wss://")) {
    u.tls = true;
    url.remove_prefix(6);
  } else if (url.starts_with("ws://")) {
    url.remove_prefix(5);
  } else {
    return bad();
  }
  std::size_t slash = url.find('/');
  std::string_view authority = url.substr(0, slash);
  u.path = slash == std::string_view::npos ? "" : std::string(url.substr(slash));
  if (u.path.empty() || u.path == "/") u.path = "/sync";
  if (authority.starts_with("[")) {
    std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad();
    u.host = std::string(authority.substr(1, close - 1));
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return bad();
      u.port = std::string(rest.substr(1));
    }
  } else {
    std::size_t colon = authority.rfind(':');
    u.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) u.port = std::string(authority.substr(colon + 1));
  }
  if (u.port.empty()) u.port = u.tls ? "443" : "80";
  if (u.host.empty()) return bad();
  for (char c : u.port) {
    if (c < '0' || c > '9') return bad();
  }
  return u;
}

template <class WsStream>
class WsTransport final : public Transport {
 public:
  // Plain.
  explicit WsTransport(const TransportOptions& options) requires
      std::is_same_v<WsStream, websocket::stream<beast::tcp_stream>> : options_(options),
                                                                       ws_(ioc_) {}
  // TLS.
  WsTransport(const TransportOptions& options, std::unique_ptr<ssl::context> ctx) requires(
      !std::is_same_v<WsStream, websocket::stream<beast::tcp_stream>>)
      : options_(options), ssl_ctx_(std::move(ctx)), ws_(ioc_, *ssl_ctx_) {}

  ~WsTransport() override { Close(); }

  Outcome<void> Connect(const ParsedUrl& url) {
    where_ = fmt::format("{}:{}", url.host, url.port);
    auto deadline = options_.connect_timeout;
    tcp::resolver resolver(ioc_);
    tcp::resolver::results_type endpoints;
    error_code ec = Run(
        [&](auto done) {
          resolver.async_resolve(url.host, url.port,
                                 [&, done](error_code e, tcp::resolver::results_type r) {
                                   endpoints = std::move(r);
                                   done(e);
                                 });
        },
        deadline);
    if (ec) return Unreachable(ec);
    ec = Run(
        [&](auto done) {
          beast::get_lowest_layer(ws_).async_connect(
              endpoints, [done](error_code e, const tcp::endpoint&) { done(e); });
        },
        deadline);
    if (ec) return Unreachable(ec);
    beast::get_lowest_layer(ws_).socket().set_option(tcp::no_delay(true), ec);
    if constexpr (!std::is_same_v<WsStream, websocket::stream<beast::tcp_stream>>) {
      SSL* native = ws_.next_layer().native_handle();
      boost::system::error_code addr_ec;
      auto addr = asio::ip::make_address(url.host, addr_ec);
      X509_VERIFY_PARAM* param = SSL_get0_param(native);
      if (!addr_ec) {
        X509_VERIFY_PARAM_set1_ip_asc(param, url.host.c_str());
      } else {
        SSL_set_tlsext_host_name(native, url.host.c_str());
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        X509_VERIFY_PARAM_set1_host(param, url.host.c_str(), 0);
      }
      ws_.next_layer().set_verify_mode(ssl::verify_peer);
      ec = Run(
          [&](auto done) {
            ws_.next_layer().async_handshake(ssl::stream_base::client,
                                             [done](error_code e) { done(e); });
          },
          deadline);
      if (ec) {
        return Fail(errc::connection_failed,
                    TrF("secure connection to {} failed (is the server certificate "
                        "trusted? use --ca FILE): {}",
                        where_, ec.message()));
      }
    }
    ws_.read_message_max(options_.max_message_bytes);
    ws_.binary(true);
    ws_.set_option(websocket::stream_base::decorator([](websocket::request_type& req) {
      req.set(beast::http::field::user_agent, "teduh/0.1");
    }));
    websocket::permessage_deflate pmd;
    pmd.client_enable = false;
    ws_.set_option(pmd);
    std::string host_header = url.host.find(':') != std::string::npos
                                  ? fmt::format("[{}]:{}", url.host, url.port)
                                  : fmt::format("{}:{}", url.host, url.port);
    ec = Run([&](auto done) { ws_.async_handshake(host_header, url.path, done); }, deadline);
    if (ec) {
      return Fail(
          errc::connection_failed,
          TrF("the server at {} did not accept a sync connection: {}", where_, ec.message()));
    }
    open_ = true;
    return {};
  }

  Outcome<void> Send(std::string_view bytes) override {
    if (!open_) return Fail(errc::connection_failed, Tr("the connection is closed"));
    error_code ec = Run(
        [&](auto done) {
          ws_.async_write(asio::buffer(bytes.data(), bytes.size()),
                          [done](error_code e, std::size_t) { done(e); });
        },
        options_.io_timeout);
    if (ec) return Broken(ec);
    return {};
  }

  Outcome<std::string> Receive() override {
    if (!open_) return Fail(errc::connection_failed, Tr("the connection is closed"));
    beast::flat_buffer buffer;
    error_code ec = Run(
        [&](auto done) { ws_.async_read(buffer, [done](error_code e, std::size_t) { done(e); }); },
        options_.io_timeout);
    if (ec == websocket::error::message_too_big) {
      open_ = false;
      return Fail(errc::frame_too_large, Tr("the server sent a message larger than allowed"));
    }
    if (ec) return Broken(ec);
    if (!ws_.got_binary()) {
      return Fail(errc::malformed_frame, Tr("the server sent a text message"));
    }
    return beast::buffers_to_string(buffer.data());
  }

  void Close() override {
    if (!open_) return;
    open_ = false;
    (void)Run([&](auto done) { ws_.async_close(websocket::close_code::normal, done); },
              std::chrono::milliseconds(2000));
  }

 private:
  // Runs one async operation on the private io_context for at most `timeout`.
  template <class Start>
  error_code Run(Start&& start, std::chrono::milliseconds timeout) {
    bool done = false;
    error_code result;
    start([&done, &result](error_code e) {
      result = e;
      done = true;
    });
    ioc_.restart();
    ioc_.run_for(timeout);
    if (!done) {
      error_code ignored;
      beast::get_lowest_layer(ws_).socket().cancel(ignored);
      beast::get_lowest_layer(ws_).socket().close(ignored);
      ioc_.restart();
      ioc_.run_for(std::chrono::milliseconds(1000));
      open_ = false;
      return make_error_code(errc::timeout);
    }
    return result;
  }

  Failure Unreachable(error_code ec) {
    if (ec == errc::timeout) {
      return Fail(errc::timeout, TrF("the server at {} did not answer in time", where_));
    }
    return Fail(errc::connection_failed,
                TrF("cannot reach the server at {}: {}", where_, ec.message()));
  }
  Failure Broken(error_code ec) {
    open_ = false;
    if (ec == errc::timeout) {
      return Fail(errc::timeout, TrF("the server at {} stopped answering", where_));
    }
    return Fail(errc::connection_failed,
                TrF("the connection to {} was lost: {}", where_, ec.message()));
  }

  TransportOptions options_;
  asio::io_context ioc_;
  std::unique_ptr<ssl::context> ssl_ctx_;
  WsStream ws_;
  bool open_ = false;
  std::string where_;
};

using PlainWs = websocket::stream<beast::tcp_stream>;
using TlsWs = websocket::stream<beast::ssl_stream<beast::tcp_stream>>;

}  // namespace

std::string CaFileFromEnv() {
  const char* v = std::getenv("TEDUH_CA_FILE");
  return v == nullptr ? std::string() : std::string(v);
}

Outcome<std::unique_ptr<Transport>> ConnectWebSocket(std::string_view url,
                                                     const TransportOptions& options) {
  auto parsed = ParseUrl(url);
  if (!parsed) return parsed.error();
  if (!parsed->tls) {
    auto t = std::make_unique<WsTransport<PlainWs>>(options);
    if (auto r = t->Connect(*parsed); !r) return r.error();
    return std::unique_ptr<Transport>(std::move(t));
  }
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                   ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  boost::system::error_code ec;
  if (!options.ca_file.empty()) {
    ctx->load_verify_file(options.ca_file, ec);
    if (ec) {
      return Fail(errc::invalid_argument,
                  TrF("cannot read the CA file {}: {}", options.ca_file, ec.message()));
    }
  } else {
    ctx->set_default_verify_paths(ec);
    if (ec)
      return Fail(errc::connection_failed, Tr("cannot load the system's trusted certificates"));
  }
  ctx->set_verify_mode(ssl::verify_peer);
  auto t = std::make_unique<WsTransport<TlsWs>>(options, std::move(ctx));
  if (auto r = t->Connect(*parsed); !r) return r.error();
  return std::unique_ptr<Transport>(std::move(t));
}

}  // namespace teduh::core
