#include "server/server_fixture.h"

#include <stdlib.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <filesystem>

#include "teduh/case/v1/case.pb.h"
#include "teduh/core/frame_codec.h"
#include "teduh/core/hlc.h"
#include "teduh/core/roles.h"
#include "teduh/core/schema.h"
#include "teduh/core/sealing.h"

namespace teduh::server::testing {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;

// ---- TestClient ---------------------------------------------------------------------

struct TestClient::Impl {
  net::io_context ioc;
  websocket::stream<beast::tcp_stream> ws{ioc};
  beast::flat_buffer buffer;
  bool closed = false;
};

TestClient::TestClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TestClient::~TestClient() {
  if (!impl_->closed) {
    beast::error_code ignored;
    beast::get_lowest_layer(impl_->ws).socket().close(ignored);
  }
}

std::unique_ptr<TestClient> TestClient::Connect(std::uint16_t port) {
  auto impl = std::make_unique<Impl>();
  beast::error_code ec;
  beast::get_lowest_layer(impl->ws).socket().connect(
      tcp::endpoint(net::ip::make_address("127.0.0.1"), port), ec);
  if (ec) return nullptr;
  impl->ws.handshake("127.0.0.1:" + std::to_string(port), "/sync", ec);
  if (ec) return nullptr;
  impl->ws.binary(true);
  impl->ws.read_message_max(64u << 20);
  return std::unique_ptr<TestClient>(new TestClient(std::move(impl)));
}

bool TestClient::SendBytes(const std::string& bytes) {
  beast::error_code ec;
  impl_->ws.write(net::buffer(bytes), ec);
  return !ec;
}

bool TestClient::Send(const v1::Frame& frame) { return SendBytes(frame.SerializeAsString()); }

std::optional<v1::Frame> TestClient::Receive(std::chrono::milliseconds timeout, bool keep_pokes) {
  for (;;) {
    if (impl_->closed) return std::nullopt;
    bool done = false;
    beast::error_code ec;
    impl_->ws.async_read(impl_->buffer, [&](beast::error_code e, std::size_t) {
      ec = e;
      done = true;
    });
    impl_->ioc.restart();
    impl_->ioc.run_for(timeout);
    if (!done) {
      beast::get_lowest_layer(impl_->ws).cancel();
      impl_->ioc.restart();
      impl_->ioc.run();
      impl_->closed = true;  // a cancelled WebSocket read cannot be resumed
      return std::nullopt;
    }
    if (ec) {
      if (getenv("TEDUH_TEST_LOG"))
        fprintf(stderr, "client read ended: %s\n", ec.message().c_str());
      impl_->closed = true;
      return std::nullopt;
    }
    v1::Frame frame;
    auto data = impl_->buffer.cdata();
    bool ok = frame.ParseFromArray(data.data(), static_cast<int>(data.size()));
    impl_->buffer.consume(impl_->buffer.size());
    if (!ok) return std::nullopt;
    if (frame.has_poke() && !keep_pokes) continue;
    return frame;
  }
}

std::optional<v1::Frame> TestClient::CallAfterIdle(const v1::Frame& frame,
                                                   std::chrono::milliseconds idle) {
  if (impl_->closed) return std::nullopt;
  bool read_done = false, write_done = false;
  beast::error_code read_ec, write_ec;
  impl_->ws.async_read(impl_->buffer, [&](beast::error_code e, std::size_t) {
    read_ec = e;
    read_done = true;
  });
  impl_->ioc.restart();
  impl_->ioc.run_for(idle);
  if (read_done) {  // closed by the server, or an unasked-for frame
    impl_->closed = static_cast<bool>(read_ec);
    impl_->buffer.consume(impl_->buffer.size());
    return std::nullopt;
  }
  const std::string bytes = frame.SerializeAsString();
  impl_->ws.async_write(net::buffer(bytes), [&](beast::error_code e, std::size_t) {
    write_ec = e;
    write_done = true;
  });
  impl_->ioc.restart();
  impl_->ioc.run_for(std::chrono::seconds(5));
  if (!read_done || !write_done || read_ec || write_ec) {
    beast::get_lowest_layer(impl_->ws).cancel();
    impl_->ioc.restart();
    impl_->ioc.run();
    impl_->closed = true;
    return std::nullopt;
  }
  v1::Frame reply;
  auto data = impl_->buffer.cdata();
  const bool ok = reply.ParseFromArray(data.data(), static_cast<int>(data.size()));
  impl_->buffer.consume(impl_->buffer.size());
  if (!ok) return std::nullopt;
  return reply;
}

std::optional<v1::Frame> TestClient::Call(const v1::Frame& frame) {
  if (!Send(frame)) return std::nullopt;
  return Receive();
}

bool TestClient::WaitClosed(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    bool done = false;
    beast::error_code ec;
    impl_->ws.async_read(impl_->buffer, [&](beast::error_code e, std::size_t) {
      ec = e;
      done = true;
    });
    impl_->ioc.restart();
    impl_->ioc.run_for(std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now()));
    if (!done) {
      beast::get_lowest_layer(impl_->ws).cancel();
      impl_->ioc.restart();
      impl_->ioc.run();
      return false;
    }
    impl_->buffer.consume(impl_->buffer.size());
    if (ec) {
      impl_->closed = true;
      return true;
    }
  }
  return false;
}

std::pair<int, std::string> HttpGet(std::uint16_t port, const std::string& target) {
  net::io_context ioc;
  beast::tcp_stream stream(ioc);
  beast::error_code ec;
  stream.socket().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), ec);
  if (ec) return {0, {}};
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host, "127.0.0.1");
  http::write(stream, req, ec);
  if (ec) return {0, {}};
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(stream, buffer, res, ec);
  if (ec) return {0, {}};
  return {static_cast<int>(res.result_int()), res.body()};
}

// ---- ServerTest ---------------------------------------------------------------------------

void ServerTest::SetUp() {
  ASSERT_FALSE(crypto::Init());
  std::string tmpl = (std::filesystem::temp_directory_path() / "teduh-server-test-XXXXXX").string();
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  dir_ = tmpl;
  data_dir_ = dir_ + "/data";
  auto init = InitStore(data_dir_, "UPTD PPA Test", env_);
  ASSERT_TRUE(init) << init.error().message();
  bootstrap_code_ = init->bootstrap_code;
  config_.data_dir = data_dir_;
  // Tests enroll many devices from 127.0.0.1 at one instant of the test clock.
  config_.enroll_burst = 100'000;
  // TEDUH_TEST_LOG=1 shows the server's log lines.
  if (!getenv("TEDUH_TEST_LOG")) config_.log = [](std::string_view) {};
  auto root = crypto::GenerateSignKeyPair();
  ASSERT_TRUE(root);
  root_ = std::move(*root);
  StartServer();
}

void ServerTest::TearDown() {
  StopServer();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

void ServerTest::StartServer() {
  auto server = Server::Open(config_, env_);
  ASSERT_TRUE(server) << server.error().message();
  server_ = std::move(*server);
  ASSERT_FALSE(server_->Start());
}

void ServerTest::StopServer() {
  if (server_) server_->Stop();
  server_.reset();
}

TestDevice ServerTest::NewDeviceKeys() {
  TestDevice d;
  auto sign = crypto::GenerateSignKeyPair();
  auto box = crypto::GenerateBoxKeyPair();
  EXPECT_TRUE(sign && box);
  d.sign = std::move(*sign);
  d.box = std::move(*box);
  return d;
}

namespace {
std::string Str(std::span<const std::uint8_t> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}
}  // namespace

std::optional<v1::Frame> ServerTest::SendEnroll(TestDevice& device, const std::string& code,
                                                const std::string& unit_root_pk) {
  auto client = TestClient::Connect(server_->port());
  if (!client) return std::nullopt;
  v1::Frame f;
  f.set_request_id(next_request_++);
  v1::EnrollRequest* e = f.mutable_enroll();
  e->set_version(core::kProtocolVersion);
  e->set_code(code);
  e->set_sign_pk(Str(device.sign.public_key));
  e->set_box_pk(Str(device.box.public_key));
  e->set_label("test-laptop");
  e->set_unit_root_pk(unit_root_pk);
  auto sig = crypto::Sign(
      device.sign.secret_key,
      core::AsSpan(core::EnrollMessage(code, e->sign_pk(), e->box_pk(), unit_root_pk)));
  EXPECT_TRUE(sig);
  e->set_signature(Str(*sig));
  auto reply = client->Call(f);
  if (reply && reply->has_enroll_result()) {
    auto id = core::IdFromBytes(reply->enroll_result().device_id());
    EXPECT_TRUE(id);
    if (id) device.device_id = *id;
    device.user = reply->enroll_result().user();
    device.role = reply->enroll_result().role();
  }
  return reply;
}

void ServerTest::EnrollBootstrapAdmin() {
  admin_ = NewDeviceKeys();
  auto reply = SendEnroll(admin_, bootstrap_code_, Str(root_.public_key));
  ASSERT_TRUE(reply && reply->has_enroll_result())
      << (reply ? reply->DebugString() : std::string("no reply"));
}

TestDevice ServerTest::EnrollPending(Role role, const std::string& user) {
  auto code = CreateEnrollment(data_dir_, role, user, std::chrono::hours(1), env_);
  EXPECT_TRUE(code);
  TestDevice d = NewDeviceKeys();
  auto reply = SendEnroll(d, code->code);
  EXPECT_TRUE(reply && reply->has_enroll_result());
  return d;
}

teduh::keys::v1::Grant ServerTest::MakeGrant(const TestDevice& device, teduh::AccessClass key_class,
                                             const crypto::SecureBuffer& signer) {
  teduh::keys::v1::Grant g;
  g.set_device_id(std::string(core::AsBytes(device.device_id)));
  g.set_key_class(key_class);
  g.set_epoch(1);
  auto class_key = crypto::RandomArray<32>();
  auto sealed = crypto::SealTo(device.box.public_key, class_key);
  EXPECT_TRUE(sealed);
  g.set_sealed_key(Str(*sealed));
  auto sig = crypto::Sign(signer, core::AsSpan(core::GrantMessage(g.device_id(), key_class,
                                                                  g.epoch(), g.sealed_key())));
  EXPECT_TRUE(sig);
  g.set_signature(Str(*sig));
  return g;
}

TestDevice ServerTest::EnrollApproved(Role role, const std::string& user) {
  TestDevice d = EnrollPending(role, user);
  auto admin = Login(admin_);
  v1::Frame f;
  f.set_request_id(next_request_++);
  f.mutable_approve_device()->set_device_id(std::string(core::AsBytes(d.device_id)));
  for (auto c : core::ClassesFor(role))
    *f.mutable_approve_device()->add_grants() = MakeGrant(d, c, root_.secret_key);
  auto reply = admin->Call(f);
  EXPECT_TRUE(reply && reply->has_approve_result())
      << (reply ? reply->DebugString() : std::string("no reply"));
  return d;
}

std::optional<v1::Frame> ServerTest::Authenticate(TestClient& client, const TestDevice& device,
                                                  bool forge_signature) {
  v1::Frame hello;
  hello.set_request_id(next_request_++);
  hello.mutable_hello()->add_versions(core::kProtocolVersion);
  hello.mutable_hello()->set_device_id(std::string(core::AsBytes(device.device_id)));
  auto challenge = client.Call(hello);
  if (!challenge || !challenge->has_challenge()) return challenge;
  std::string msg =
      core::AuthMessage(challenge->challenge().nonce(), challenge->challenge().server_id(),
                        core::AsBytes(device.device_id));
  crypto::SecureBuffer forged;
  if (forge_signature) forged = std::move(crypto::GenerateSignKeyPair()->secret_key);
  auto sig = crypto::Sign(forge_signature ? forged : device.sign.secret_key, core::AsSpan(msg));
  v1::Frame proof;
  proof.set_request_id(next_request_++);
  proof.mutable_proof()->set_signature(Str(*sig));
  return client.Call(proof);
}

std::unique_ptr<TestClient> ServerTest::Login(const TestDevice& device) {
  auto client = TestClient::Connect(server_->port());
  EXPECT_TRUE(client);
  if (!client) return nullptr;
  auto welcome = Authenticate(*client, device);
  EXPECT_TRUE(welcome && welcome->has_welcome())
      << (welcome ? welcome->DebugString() : std::string("no reply"));
  return client;
}

std::uint64_t& ServerTest::NextSeq(const TestDevice& device) {
  for (auto& [id, seq] : seqs_)
    if (id == device.device_id) return seq;
  seqs_.emplace_back(device.device_id, 0);
  return seqs_.back().second;
}

v1::FieldChange ServerTest::OpenChange(const TestDevice& device, const Id& record_id,
                                       std::string_view kind, const std::optional<Id>& parent,
                                       std::uint32_t field, const std::string& value,
                                       std::int64_t hlc_offset_ms) {
  v1::FieldChange c;
  c.set_record_id(std::string(core::AsBytes(record_id)));
  c.set_kind(std::string(kind));
  if (parent) c.set_parent_id(std::string(core::AsBytes(*parent)));
  c.set_field(field);
  c.set_value(value);
  c.mutable_stamp()->set_hlc(
      core::HlcPack(static_cast<std::uint64_t>(env_.NowMs() + hlc_offset_ms), next_hlc_counter_++));
  c.mutable_stamp()->set_device_id(std::string(core::AsBytes(device.device_id)));
  c.set_device_seq(++NextSeq(device));
  return c;
}

v1::FieldChange ServerTest::SealedChange(const TestDevice& device, const Id& record_id,
                                         std::string_view kind, const std::optional<Id>& parent,
                                         std::uint32_t field) {
  auto bytes = crypto::RandomArray<64>();
  v1::FieldChange c = OpenChange(device, record_id, kind, parent, field, Str(bytes));
  c.set_sealed(true);
  c.set_key_class(teduh::ACCESS_CLASS_GENERAL);
  c.set_key_version(1);
  return c;
}

v1::FieldChange ServerTest::SealedChangeOf(const TestDevice& device, const Id& record_id,
                                           std::string_view kind, const std::optional<Id>& parent,
                                           std::uint32_t field, std::size_t bytes) {
  v1::FieldChange c = SealedChange(device, record_id, kind, parent, field);
  std::string value(bytes, '\0');
  crypto::RandomBytes(
      std::span<std::uint8_t>(reinterpret_cast<std::uint8_t*>(value.data()), value.size()));
  c.set_value(std::move(value));
  return c;
}

v1::PushResult ServerTest::Push(TestClient& client, std::vector<v1::FieldChange> changes) {
  v1::Frame f;
  f.set_request_id(next_request_++);
  for (auto& c : changes) *f.mutable_push()->add_changes() = std::move(c);
  auto reply = client.Call(f);
  EXPECT_TRUE(reply && reply->has_push_result())
      << (reply ? reply->DebugString() : std::string("no reply"));
  EXPECT_EQ(reply ? reply->request_id() : 0, f.request_id());
  v1::PushResult result =
      reply && reply->has_push_result() ? reply->push_result() : v1::PushResult();
  // Pad so that a failed push fails the test's expectations instead of crashing it.
  while (result.results_size() < f.push().changes_size()) result.add_results();
  return result;
}

std::optional<v1::Frame> ServerTest::PullFrame(TestClient& client, std::uint64_t after_seq,
                                               std::uint32_t limit, std::uint64_t generation) {
  v1::Frame f;
  f.set_request_id(next_request_++);
  f.mutable_pull()->set_after_seq(after_seq);
  f.mutable_pull()->set_limit(limit);
  f.mutable_pull()->set_generation(generation);
  return client.Call(f);
}

std::vector<v1::FieldChange> ServerTest::PullAll(TestClient& client) {
  std::vector<v1::FieldChange> all;
  std::uint64_t after = 0;
  for (int i = 0; i < 1000; ++i) {
    auto reply = PullFrame(client, after);
    EXPECT_TRUE(reply && reply->has_changes())
        << (reply ? reply->DebugString() : std::string("no reply"));
    if (!reply || !reply->has_changes()) break;
    for (const auto& c : reply->changes().changes()) all.push_back(c);
    after = reply->changes().last_seq();
    if (!reply->changes().has_more()) break;
  }
  return all;
}

std::string ServerTest::CaseText(std::uint32_t field, const std::string& text) {
  teduh::casework::v1::Case c;
  const auto* fd = c.GetDescriptor()->FindFieldByNumber(static_cast<int>(field));
  c.GetReflection()->SetString(&c, fd, text);
  return c.SerializeAsString();
}

std::string ServerTest::CaseInt(std::uint32_t field, std::int64_t v) {
  teduh::casework::v1::Case c;
  const auto* fd = c.GetDescriptor()->FindFieldByNumber(static_cast<int>(field));
  c.GetReflection()->SetInt64(&c, fd, v);
  return c.SerializeAsString();
}

}  // namespace teduh::server::testing
