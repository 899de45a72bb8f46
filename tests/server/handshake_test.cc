// Authentication and bad input at the connection level (docs/PROTOCOL.md §1, §3).
#include "server/server_fixture.h"
#include "teduh/core/frame_codec.h"
#include "teduh/server/error.h"

namespace teduh::server::testing {
namespace {

using HandshakeTest = ServerTest;

TEST_F(HandshakeTest, UnknownDeviceIsRefused) {
  TestDevice stranger = NewDeviceKeys();
  stranger.device_id = core::NewId();
  auto client = TestClient::Connect(server_->port());
  auto reply = Authenticate(*client, stranger);
  ASSERT_TRUE(reply && reply->has_error());
  EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_UNKNOWN_DEVICE);
  EXPECT_TRUE(client->WaitClosed());
}

// Devices show times in the unit's zone; a store that never set one is WIB.
TEST_F(HandshakeTest, WelcomeCarriesTheUnitsTimeZone) {
  EnrollBootstrapAdmin();
  {
    auto client = TestClient::Connect(server_->port());
    auto reply = Authenticate(*client, admin_);
    ASSERT_TRUE(reply && reply->has_welcome());
    EXPECT_EQ(reply->welcome().time_zone(), "WIB");
  }
  auto zone = UnitTimeZone(data_dir_);
  ASSERT_TRUE(zone);
  EXPECT_EQ(*zone, core::TimeZone::kWib);
  StopServer();
  ASSERT_FALSE(SetUnitTimeZone(data_dir_, core::TimeZone::kWit));
  StartServer();
  auto client = TestClient::Connect(server_->port());
  auto reply = Authenticate(*client, admin_);
  ASSERT_TRUE(reply && reply->has_welcome());
  EXPECT_EQ(reply->welcome().time_zone(), "WIT");
}

TEST_F(HandshakeTest, BadProofSignatureIsRefused) {
  EnrollBootstrapAdmin();
  auto client = TestClient::Connect(server_->port());
  auto reply = Authenticate(*client, admin_, /*forge_signature=*/true);
  ASSERT_TRUE(reply && reply->has_error());
  EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_BAD_SIGNATURE);
}

TEST_F(HandshakeTest, UnsupportedVersionTellsTheOfficerToUpdate) {
  auto client = TestClient::Connect(server_->port());
  v1::Frame hello;
  hello.set_request_id(3);
  hello.mutable_hello()->add_versions(99);
  hello.mutable_hello()->set_device_id(std::string(16, 'x'));
  auto reply = client->Call(hello);
  ASSERT_TRUE(reply && reply->has_error());
  EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_UNSUPPORTED_VERSION);
  EXPECT_EQ(reply->request_id(), 3u);
}

TEST_F(HandshakeTest, PushBeforeAuthenticationIsUnexpectedAndCloses) {
  auto client = TestClient::Connect(server_->port());
  v1::Frame push;
  push.set_request_id(4);
  push.mutable_push();
  auto reply = client->Call(push);
  ASSERT_TRUE(reply && reply->has_error());
  EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_UNEXPECTED_FRAME);
  EXPECT_TRUE(client->WaitClosed());
}

TEST_F(HandshakeTest, MalformedBytesAreRefusedAndClose) {
  auto client = TestClient::Connect(server_->port());
  ASSERT_TRUE(client->SendBytes(std::string("\xff\xff\xff\xff\x0f garbage", 13)));
  auto reply = client->Receive();
  ASSERT_TRUE(reply && reply->has_error());
  EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_MALFORMED_FRAME);
  EXPECT_TRUE(client->WaitClosed());
}

TEST_F(HandshakeTest, OversizedFrameIsRefusedOrClosed) {
  auto client = TestClient::Connect(server_->port());
  std::string big(config_.limits.max_frame_bytes + 1024, 'a');
  client->SendBytes(big);
  auto reply = client->Receive();
  if (reply) {
    ASSERT_TRUE(reply->has_error());
    EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_FRAME_TOO_LARGE);
  }
  EXPECT_TRUE(client->WaitClosed());
}

TEST_F(HandshakeTest, HandshakeThatStallsTimesOut) {
  StopServer();
  config_.handshake_timeout = std::chrono::milliseconds(200);
  StartServer();
  auto client = TestClient::Connect(server_->port());
  auto reply = client->Receive(std::chrono::seconds(3));
  ASSERT_TRUE(reply && reply->has_error());
  EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_TIMEOUT);
  EXPECT_TRUE(client->WaitClosed());
}

TEST_F(HandshakeTest, HealthAndMetricsAnswerOnTheOperationsListenerOnly) {
  ASSERT_NE(server_->ops_port(), 0);
  ASSERT_NE(server_->ops_port(), server_->port());
  auto [status, body] = HttpGet(server_->ops_port(), "/healthz");
  EXPECT_EQ(status, 200);
  EXPECT_EQ(body, "ok");
  auto [mstatus, metrics] = HttpGet(server_->ops_port(), "/metrics");
  EXPECT_EQ(mstatus, 200);
  EXPECT_NE(metrics.find("teduh_commits_total"), std::string::npos);
  EXPECT_NE(metrics.find("teduh_connections_refused_total{cause=\"per_address\"}"),
            std::string::npos);
  EXPECT_EQ(HttpGet(server_->ops_port(), "/nope").first, 404);
  // The sync port tells a stranger nothing about how the unit syncs.
  EXPECT_EQ(HttpGet(server_->port(), "/healthz").first, 404);
  EXPECT_EQ(HttpGet(server_->port(), "/metrics").first, 404);
  // Without an operations listener there is none.
  StopServer();
  config_.ops = false;
  StartServer();
  EXPECT_EQ(server_->ops_port(), 0);
  EXPECT_EQ(HttpGet(server_->port(), "/metrics").first, 404);
}

TEST_F(HandshakeTest, PlaintextOnNonLoopbackAddressIsRefusedAtStart) {
  ServerConfig config = config_;
  config.host = "0.0.0.0";
  auto server = Server::Open(config, env_);
  ASSERT_FALSE(server);
  EXPECT_EQ(server.error(), make_error_code(errc::plaintext_refused));
}

}  // namespace
}  // namespace teduh::server::testing
