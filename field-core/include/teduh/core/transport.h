// The device's connection to the server: one WebSocket (ws:// or wss://,
// path /sync, binary messages) with blocking, time-bounded calls. Boost.Beast
// stays inside ws_transport.cc so that this header is cheap to include.
//
// Transport is an interface so tests can run the sync client against an
// in-process fake server.
//
// Thread safety: a Transport is used by one thread at a time.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "teduh/core/outcome.h"

namespace teduh::core {

struct TransportOptions {
  std::chrono::milliseconds connect_timeout{10000};  // TCP + TLS + WebSocket handshake
  std::chrono::milliseconds io_timeout{30000};       // one send or one receive
  std::size_t max_message_bytes = 8u << 20;          // read_message_max
  // wss://: PEM file of trusted CAs; empty = the system roots.
  std::string ca_file;
  // A server that answers "busy" is tried again after its hint (with
  // jitter, at least 1 s apart) for at most this long in all; 0: not at all.
  std::chrono::milliseconds busy_wait{30000};
};

// The CA file from TEDUH_CA_FILE, or "".
std::string CaFileFromEnv();

class Transport {
 public:
  virtual ~Transport() = default;
  // Sends one binary message. errc::timeout / connection_failed.
  virtual Outcome<void> Send(std::string_view bytes) = 0;
  // Receives one message. errc::timeout / connection_failed; errc::malformed_frame
  // for a text message; errc::frame_too_large above max_message_bytes.
  virtual Outcome<std::string> Receive() = 0;
  // Closes politely (bounded); the object is unusable afterwards.
  virtual void Close() = 0;
};

// Opens a WebSocket to `url` ("ws://host:port[/path]" or "wss://..."; the
// path defaults to /sync). errc::invalid_argument for a bad URL,
// errc::connection_failed (unreachable, TLS verification failed) or timeout.
Outcome<std::unique_ptr<Transport>> ConnectWebSocket(std::string_view url,
                                                     const TransportOptions& options);

// How a Device reaches its server; replaceable in tests.
using Connector = std::function<Outcome<std::unique_ptr<Transport>>(
    std::string_view url, const TransportOptions& options)>;

}  // namespace teduh::core
