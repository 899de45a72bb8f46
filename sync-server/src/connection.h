// The protocol state machine of one connection, independent of the transport
// (the WebSocket session in server.cc implements ConnectionHost). It decodes
// every frame, enforces the handshake order, hands store work to the store
// worker and turns results into reply frames.
//
//   kNew ──Hello──► kChallenged ──Proof ok──► kReady ──Push/Pull/ListDevices/Approve──► kReady
//    │  └─EnrollRequest ok──► kNew (the device may now send Hello)
//    └─ any error in kNew/kChallenged, malformed frame, revoked device ──► kClosed
//
// Exactly one frame is handled at a time: the host reads the next frame only
// when the connection calls ReadNext() (back-pressure; replies stay in order).
//
// Thread safety: every member function runs on the connection's strand.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "server_context.h"
#include "sync_service.h"

namespace teduh::server {

class ConnectionHost {
 public:
  virtual ~ConnectionHost() = default;
  // Queue one encoded frame for writing.
  virtual void Send(std::string frame) = 0;
  // Queue a Poke frame unless one is already waiting to be written.
  virtual void SendPoke(std::string frame) = 0;
  // Close after the queued frames are written.
  virtual void Close() = 0;
  // Start reading the next frame.
  virtual void ReadNext() = 0;
  // The protocol handshake finished: stop its timer.
  virtual void HandshakeDone() = 0;
  // Moves the connection into the budget of authenticated devices; false
  // when that budget is full (admission.h).
  virtual bool AdmitAuthenticated() = 0;
  // A thread-safe function that runs a callback on this connection's strand.
  // It keeps the connection alive until it is destroyed: store jobs hold one
  // while they are pending.
  virtual std::function<void(std::function<void()>)> Poster() = 0;
  // The same, without keeping the connection alive (the callback is dropped
  // if the connection is gone). For the registry.
  virtual std::function<void(std::function<void()>)> WeakPoster() = 0;
};

class Connection {
 public:
  // `peer` is "address:port", `address` the IP address alone.
  Connection(ServerContext& ctx, ConnectionHost& host, std::string peer, std::string address);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Starts the connection (registers it); then the host reads the first
  // frame. `busy`: the server has no room for it; it is told so and closed.
  void Open(bool busy);
  // The largest frame this connection may send now: a few KiB before it
  // authenticated, the full bound after.
  std::size_t FrameBound() const;
  // One binary (or, wrongly, text) WebSocket message.
  void OnMessage(std::string_view bytes, bool binary);
  // A message grew past FrameBound(): answered FRAME_TOO_LARGE, then closed.
  void OnTooLarge();
  // The handshake did not finish in time.
  void OnHandshakeTimeout();
  // The transport closed: unregister.
  void OnClosed();
  // A commit touched this connection's scope.
  void Poke();

 private:
  // kWiping: a revoked device was handed its wipe order; only its receipt is accepted.
  enum class State { kNew, kChallenged, kWiping, kReady, kClosed };

  void Reply(std::uint64_t request_id, v1::Frame frame, bool close);
  void Fail(std::uint64_t request_id, v1::ErrorCode code, std::string message,
            std::uint32_t retry_after_ms = 0);
  void OnHello(std::uint64_t request_id, const v1::Hello& hello);
  void OnProof(std::uint64_t request_id, const v1::Proof& proof);
  void OnEnroll(std::uint64_t request_id, const v1::EnrollRequest& request);
  void OnPush(std::uint64_t request_id, std::shared_ptr<v1::Frame> frame);
  void OnPull(std::uint64_t request_id, const v1::Pull& pull);
  void OnListDevices(std::uint64_t request_id, std::string id_prefix);
  void OnApprove(std::uint64_t request_id, std::shared_ptr<v1::Frame> frame);
  void OnRevoke(std::uint64_t request_id, std::shared_ptr<v1::Frame> frame);
  void OnWipeReceipt(std::uint64_t request_id, std::shared_ptr<v1::Frame> frame);
  void OnRotate(std::uint64_t request_id, std::shared_ptr<v1::Frame> frame);
  void OnAckKeys(std::uint64_t request_id, std::shared_ptr<v1::Frame> frame);
  void OnKeyStatus(std::uint64_t request_id);
  void OnRetire(std::uint64_t request_id, std::shared_ptr<v1::Frame> frame);
  void OnShred(std::uint64_t request_id, std::shared_ptr<v1::Frame> frame);
  void OnOffboard(std::uint64_t request_id, std::shared_ptr<v1::Frame> frame);
  // A write request answered with whatever `write` put in its Outcome.
  void SimpleWrite(std::uint64_t request_id,
                   std::function<core::error_code(WriterState&, Outcome*)> write);
  // A read-only request answered from the reader thread.
  void SimpleRead(std::uint64_t request_id, std::function<core::error_code(Store&, Outcome*)> read);
  void OnRekey(std::uint64_t request_id, std::shared_ptr<v1::Frame> frame);
  void OnHistory(std::uint64_t request_id, const v1::HistoryRequest& request);
  void OnRepairOffer(std::uint64_t request_id, std::shared_ptr<v1::Frame> frame);
  // The store could not serve the request: a full disk (DISK_FULL; the
  // connection stays open for reads), or anything else (INTERNAL; closed).
  void StoreFailed(std::uint64_t request_id, core::error_code ec = {});
  void AssertInvariants() const;

  ServerContext& ctx_;
  ConnectionHost& host_;
  const std::string peer_;
  const std::string address_;
  std::uint64_t registry_id_ = 0;
  State state_ = State::kNew;
  bool busy_ = false;  // a frame is being handled (its reply not yet queued)
  std::array<std::uint8_t, 32> nonce_{};
  Id hello_device_{};
  Id wipe_device_{};   // kWiping: the revoked device whose receipt is awaited
  Identity identity_;  // valid in kReady
};

}  // namespace teduh::server
