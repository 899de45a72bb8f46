// Test fixture for the sync server: a temporary data folder, an in-process
// Server on 127.0.0.1 port 0, a controllable clock, and a small raw WebSocket
// client that builds frames itself (no field-core client code), so the tests
// exercise the server's side of docs/PROTOCOL.md directly.
//
// Only server_fixture.cc includes Beast; tests include this header.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "teduh/core/env.h"
#include "teduh/core/ids.h"
#include "teduh/crypto/crypto.h"
#include "teduh/server/admin.h"
#include "teduh/server/server.h"
#include "teduh/sync/v1/sync.pb.h"

namespace teduh::server::testing {

namespace v1 = teduh::sync::v1;
using namespace std::chrono_literals;

// A thread-safe clock the test moves.
class TestEnv final : public core::Env {
 public:
  explicit TestEnv(std::int64_t start_ms) : now_ms_(start_ms) {}
  std::int64_t NowMs() override { return now_ms_.load(); }
  void Advance(std::int64_t ms) { now_ms_ += ms; }

 private:
  std::atomic<std::int64_t> now_ms_;
};

// A raw client: one WebSocket connection to /sync.
class TestClient {
 public:
  static std::unique_ptr<TestClient> Connect(std::uint16_t port);
  ~TestClient();

  bool SendBytes(const std::string& bytes);
  bool Send(const v1::Frame& frame);
  // The next frame (Pokes skipped unless keep_pokes); nullopt when the
  // connection closed or nothing came within `timeout`.
  std::optional<v1::Frame> Receive(std::chrono::milliseconds timeout = 5s, bool keep_pokes = false);
  // Send, then receive the reply.
  std::optional<v1::Frame> Call(const v1::Frame& frame);
  // Reads (answering the server's pings, as a live device does) for `idle`
  // without sending anything, then sends `frame` and returns the reply;
  // nullopt if the connection closed meanwhile.
  std::optional<v1::Frame> CallAfterIdle(const v1::Frame& frame, std::chrono::milliseconds idle);
  // True if the server closes the connection within `timeout`.
  bool WaitClosed(std::chrono::milliseconds timeout = 5s);

  struct Impl;

 private:
  explicit TestClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A plain HTTP GET; returns (status, body), status 0 on failure.
std::pair<int, std::string> HttpGet(std::uint16_t port, const std::string& target);

// A device's keys and, once enrolled, its id.
struct TestDevice {
  crypto::SignKeyPair sign;
  crypto::BoxKeyPair box;
  Id device_id{};
  std::string user;
  Role role = v1::ROLE_UNSPECIFIED;
};

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Starts (or restarts after StopServer) the server on the data folder.
  void StartServer();
  void StopServer();

  TestDevice NewDeviceKeys();
  // Sends an EnrollRequest with `code` and returns the reply.
  std::optional<v1::Frame> SendEnroll(TestDevice& device, const std::string& code,
                                      const std::string& unit_root_pk = {});
  // Enrolls the bootstrap admin (creating the unit root key) and logs it in.
  void EnrollBootstrapAdmin();
  // Creates a code, enrolls and approves a device (GENERAL key; CLINICAL too if allowed).
  TestDevice EnrollApproved(Role role, const std::string& user);
  TestDevice EnrollPending(Role role, const std::string& user);
  // A grant of `key_class` for `device` signed by `signer` (the root key unless forged).
  teduh::keys::v1::Grant MakeGrant(const TestDevice& device, teduh::AccessClass key_class,
                                   const crypto::SecureBuffer& signer);
  // Hello + Proof; returns the final reply (Welcome or Error).
  std::optional<v1::Frame> Authenticate(TestClient& client, const TestDevice& device,
                                        bool forge_signature = false);
  // A connected, authenticated client (asserts on failure).
  std::unique_ptr<TestClient> Login(const TestDevice& device);

  // Changes stamped by `device` at the test clock (plus `hlc_offset_ms`).
  v1::FieldChange OpenChange(const TestDevice& device, const Id& record_id, std::string_view kind,
                             const std::optional<Id>& parent, std::uint32_t field,
                             const std::string& value, std::int64_t hlc_offset_ms = 0);
  v1::FieldChange SealedChange(const TestDevice& device, const Id& record_id, std::string_view kind,
                               const std::optional<Id>& parent, std::uint32_t field);
  // The same with `bytes` random bytes of ciphertext.
  v1::FieldChange SealedChangeOf(const TestDevice& device, const Id& record_id,
                                 std::string_view kind, const std::optional<Id>& parent,
                                 std::uint32_t field, std::size_t bytes);
  // Sends a Push of `changes` and returns the PushResult (asserts on error frames).
  v1::PushResult Push(TestClient& client, std::vector<v1::FieldChange> changes);
  // Sends a Pull and returns the reply frame.
  std::optional<v1::Frame> PullFrame(TestClient& client, std::uint64_t after_seq,
                                     std::uint32_t limit = 0, std::uint64_t generation = 0);
  // Pulls until has_more is false; returns every change.
  std::vector<v1::FieldChange> PullAll(TestClient& client);

  // Open single-field values of a Case.
  static std::string CaseText(std::uint32_t field, const std::string& text);
  static std::string CaseInt(std::uint32_t field, std::int64_t v);

  std::string dir_;
  std::string data_dir_;
  std::string bootstrap_code_;
  TestEnv env_{1'750'000'000'000};
  ServerConfig config_;
  std::unique_ptr<Server> server_;
  crypto::SignKeyPair root_;
  TestDevice admin_;
  std::uint64_t next_request_ = 1;
  std::uint64_t next_hlc_counter_ = 1;
  std::uint64_t& NextSeq(const TestDevice& device);

 private:
  std::vector<std::pair<Id, std::uint64_t>> seqs_;
};

}  // namespace teduh::server::testing
