// Hostile clients (issue 15): what an approved device or a stranger on the
// network could do to the unit, tried against the real server over real
// WebSockets. Each test is bounded in count and time and uses loopback only.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "server/device_fixture.h"
#include "server/server_fixture.h"
#include "teduh/case/v1/case.pb.h"
#include "teduh/core/frame_codec.h"
#include "teduh/core/schema.h"

namespace teduh::server::testing {
namespace {

namespace cw = teduh::casework::v1;
namespace pb = google::protobuf;
using HostileClientTest = ServerTest;

// A single-field value of `field` whose attribution names `user`.
std::string ValueNaming(const core::RecordKind& kind, const core::FieldPolicy& field,
                        const std::string& user) {
  std::unique_ptr<pb::Message> msg(
      pb::MessageFactory::generated_factory()->GetPrototype(kind.descriptor)->New());
  pb::Message* holder = msg.get();
  if (field.attribution != field.descriptor)
    holder = msg->GetReflection()->MutableMessage(msg.get(), field.descriptor);
  holder->GetReflection()->SetString(holder, field.attribution, user);
  return msg->SerializeAsString();
}

// Every record that says someone did something (wrote a note, viewed the
// case, made a visit, delivered a service, signed a letter, resolved a
// conflict) is attributed by the schema, so the server can check it.
TEST(AttributionTest, EveryFieldThatNamesWhoDidSomethingIsAttributed) {
  std::set<std::string> attributed;
  for (const auto& kind : core::Schema::Get().kinds())
    for (const auto& f : kind->fields)
      if (f.attribution) attributed.insert(kind->short_name + "." + f.name);
  EXPECT_EQ(attributed,
            (std::set<std::string>{"note.author", "assessment.assessed_by",
                                   "service_delivered.delivered_by", "referral.created_by",
                                   "referral.signed_by", "task.done_by", "contact_attempt.by",
                                   "access.viewer", "conflict.resolution"}));
  // A conflict's resolution names its resolver inside the message.
  const auto* conflict = core::Schema::Get().FindKind(core::kConflictKind);
  const auto* resolution = conflict->FindField(cw::Conflict::kResolutionFieldNumber);
  cw::Conflict c;
  c.mutable_resolution()->set_resolved_by("budi");
  c.mutable_resolution()->set_resolution("kept");
  EXPECT_EQ(core::AttributedUser(c, *resolution), "budi");
  EXPECT_EQ(core::AttributedUser(cw::Conflict(), *resolution), "");
}

TEST_F(HostileClientTest, ARecordNamesWhoDidItOnlyInThePushingUsersOwnName) {
  EnrollBootstrapAdmin();
  // A supervisor may sign letters and mark tasks done: every attributed
  // field is hers to write, in her own name only.
  TestDevice tono = EnrollApproved(v1::ROLE_SUPERVISOR, "tono");
  auto client = Login(tono);
  const Id case_id = core::NewId();
  const v1::PushResult made =
      Push(*client, {OpenChange(tono, case_id, core::kCaseKind, {}, 1, CaseText(1, "K-1"))});
  ASSERT_EQ(made.results(0).status(), v1::ChangeResult::STATUS_APPLIED);

  int checked = 0;
  std::int64_t offset = 0;
  for (const auto& kind : core::Schema::Get().kinds()) {
    if (kind->full_name == core::kConflictKind) continue;  // made by the server only
    for (const auto& f : kind->fields) {
      if (!f.attribution) continue;
      SCOPED_TRACE(kind->short_name + "." + f.name);
      const Id record = core::NewId();
      // In another user's name: refused, and nothing is written.
      const v1::PushResult forged =
          Push(*client, {OpenChange(tono, record, kind->full_name, case_id, f.number,
                                    ValueNaming(*kind, f, "budi"), offset += 10)});
      EXPECT_EQ(forged.results(0).status(), v1::ChangeResult::STATUS_REJECTED);
      EXPECT_EQ(forged.results(0).reason(), "wrong_author");
      // In her own name: applied.
      const v1::PushResult own =
          Push(*client, {OpenChange(tono, record, kind->full_name, case_id, f.number,
                                    ValueNaming(*kind, f, "tono"), offset += 10)});
      EXPECT_EQ(own.results(0).status(), v1::ChangeResult::STATUS_APPLIED)
          << own.results(0).reason();
      ++checked;
    }
  }
  EXPECT_EQ(checked, 8);
  // What another device pulls names tono only.
  TestDevice ani = EnrollApproved(v1::ROLE_OFFICE, "ani");
  auto office = Login(ani);
  int names = 0;
  for (const auto& change : PullAll(*office)) {
    EXPECT_EQ(change.value().find("budi"), std::string::npos) << change.kind();
    names += change.value().find("tono") != std::string::npos;
  }
  EXPECT_EQ(names, 8);
}

// ---- Frames, by phase -----------------------------------------------------------------

// A frame of `bytes` bytes that decodes as a Frame (its padding an unknown field).
std::string FrameOfSize(std::size_t bytes) {
  v1::Frame f;
  f.set_request_id(1);
  f.mutable_hello()->add_versions(core::kProtocolVersion);
  std::string out = f.SerializeAsString();
  // Field 1000, length-delimited: tag (2 bytes), length (up to 3), padding.
  const std::size_t pad = bytes - out.size() - 5;
  out += "\xc2\x3e";
  out += static_cast<char>(0x80 | (pad & 0x7f));
  out += static_cast<char>(0x80 | ((pad >> 7) & 0x7f));
  out += static_cast<char>((pad >> 14) & 0x7f);
  out.append(pad, 'x');
  return out;
}

TEST_F(HostileClientTest, AStrangersLargeFrameIsAnsweredFrameTooLargeAndClosed) {
  // Before authentication a frame is a Hello or an enrollment request, well
  // under the pending bound; anything larger is answered and the connection closed.
  auto stranger = TestClient::Connect(server_->port());
  ASSERT_TRUE(stranger);
  ASSERT_TRUE(stranger->SendBytes(FrameOfSize(64 * 1024)));
  auto reply = stranger->Receive();
  ASSERT_TRUE(reply && reply->has_error());
  EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_FRAME_TOO_LARGE);
  EXPECT_THAT(reply->error().message(), ::testing::HasSubstr("16384"));
  EXPECT_TRUE(stranger->WaitClosed());
  // Just under the bound, the frame is read and decoded (a Hello with an
  // unknown field still gets its Challenge).
  auto other = TestClient::Connect(server_->port());
  ASSERT_TRUE(other);
  ASSERT_TRUE(other->SendBytes(FrameOfSize(config_.pending_frame_bytes)));
  auto hello = other->Receive();
  ASSERT_TRUE(hello);
  EXPECT_TRUE(hello->has_error() || hello->has_challenge());
  EXPECT_EQ(server_->metrics().frames_too_large, 1u);
}

TEST_F(HostileClientTest, AfterSignInTheFullBoundHoldsAndABreachIsAnswered) {
  StopServer();
  config_.limits.max_frame_bytes = 256 * 1024;
  StartServer();
  EnrollBootstrapAdmin();
  TestDevice ani = EnrollApproved(v1::ROLE_OFFICE, "ani");
  auto client = Login(ani);
  // A push larger than the pending bound is an ordinary push once signed in.
  std::vector<v1::FieldChange> changes;
  const Id case_id = core::NewId();
  changes.push_back(OpenChange(ani, case_id, core::kCaseKind, {}, 1, CaseText(1, "K-1")));
  for (int i = 0; i < 100; ++i)
    changes.push_back(SealedChange(ani, core::NewId(), core::kNoteKind, case_id, 20));
  std::size_t size = 0;
  for (const auto& c : changes) size += c.ByteSizeLong();
  ASSERT_GT(size, config_.pending_frame_bytes);
  const v1::PushResult r = Push(*client, changes);
  ASSERT_EQ(r.results_size(), 101);
  for (const auto& one : r.results()) EXPECT_EQ(one.status(), v1::ChangeResult::STATUS_APPLIED);
  // Above the full bound: the promised error frame, then the close.
  ASSERT_TRUE(client->SendBytes(FrameOfSize(300 * 1024)));
  auto reply = client->Receive();
  ASSERT_TRUE(reply && reply->has_error());
  EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_FRAME_TOO_LARGE);
  EXPECT_TRUE(client->WaitClosed());
  // The device signs in again and finds its push saved.
  auto again = Login(ani);
  EXPECT_EQ(PullAll(*again).size(), 101u);
}

// ---- Connection budgets ----------------------------------------------------------------

// Waits (up to a second) until the server has seen a connection end.
template <class Done>
void WaitFor(Done done) {
  for (int i = 0; i < 100 && !done(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

// The server answered SERVER_BUSY with `retry_ms`, then closed the connection.
void ExpectBusy(const std::optional<v1::Frame>& reply, TestClient& client, std::uint32_t retry_ms) {
  ASSERT_TRUE(reply && reply->has_error());
  EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_SERVER_BUSY);
  EXPECT_EQ(reply->error().retry_after_ms(), retry_ms);
  EXPECT_TRUE(client.WaitClosed());
}

// A request any signed-in device may make.
v1::Frame PullRequest() {
  v1::Frame f;
  f.set_request_id(7);
  f.mutable_pull()->set_limit(10);
  return f;
}

TEST_F(HostileClientTest, OneAddressHoldsOnlyItsShareOfTheConnectionsWaitingToSignIn) {
  EnrollBootstrapAdmin();
  TestDevice ani = EnrollApproved(v1::ROLE_OFFICE, "ani");
  StopServer();
  config_.max_pending_per_address = 3;
  StartServer();
  // A stranger opens connections and sends nothing: three are held, the
  // rest are dropped at once.
  std::vector<std::unique_ptr<TestClient>> held;
  int dropped = 0;
  for (int i = 0; i < 10; ++i) {
    auto c = TestClient::Connect(server_->port());
    if (c) {
      held.push_back(std::move(c));
    } else {
      ++dropped;
    }
  }
  EXPECT_EQ(held.size(), 3u);
  EXPECT_EQ(dropped, 7);
  EXPECT_EQ(server_->metrics().pending, 3u);
  EXPECT_EQ(server_->metrics().refused_per_address, 7u);
  // As soon as the stranger's connections end, a device from that address
  // signs in (it would from any other address at once).
  held.clear();
  WaitFor([&] { return server_->metrics().pending == 0; });
  auto device = Login(ani);
  auto reply = device->Call(PullRequest());
  ASSERT_TRUE(reply);
  EXPECT_TRUE(reply->has_changes()) << reply->DebugString();
  EXPECT_EQ(server_->metrics().authenticated, 1u);
  EXPECT_EQ(server_->metrics().pending, 0u);
}

TEST_F(HostileClientTest, AFullPendingBudgetIsAnsweredServerBusyWithWhenToRetry) {
  StopServer();
  config_.max_pending_connections = 4;
  config_.max_pending_per_address = 100;
  config_.busy_retry_ms = 2500;
  StartServer();
  std::vector<std::unique_ptr<TestClient>> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(TestClient::Connect(server_->port()));
    ASSERT_TRUE(held.back());
  }
  auto late = TestClient::Connect(server_->port());
  ASSERT_TRUE(late);
  ExpectBusy(late->Receive(), *late, 2500);
  EXPECT_EQ(server_->metrics().pending, 4u);
  EXPECT_EQ(server_->metrics().refused_pending_full, 1u);
}

TEST_F(HostileClientTest, TheBudgetOfSignedInDevicesIsExactAndAFullOneSaysBusy) {
  EnrollBootstrapAdmin();
  TestDevice ani = EnrollApproved(v1::ROLE_OFFICE, "ani");
  TestDevice tono = EnrollApproved(v1::ROLE_SUPERVISOR, "tono");
  StopServer();
  config_.max_connections = 1;
  config_.busy_retry_ms = 1500;
  StartServer();
  auto first = Login(ani);
  auto second = TestClient::Connect(server_->port());
  ASSERT_TRUE(second);
  ExpectBusy(Authenticate(*second, tono), *second, 1500);
  EXPECT_EQ(server_->metrics().authenticated, 1u);
  EXPECT_EQ(server_->metrics().refused_authenticated_full, 1u);
  // When the first leaves, the second gets in.
  first.reset();
  WaitFor([&] { return server_->metrics().authenticated == 0; });
  auto now = Login(tono);
  EXPECT_TRUE(now->Call(PullRequest()));
}

TEST_F(HostileClientTest, EnrollmentRequestsFromOneAddressAreRateLimited) {
  StopServer();
  config_.enroll_burst = 3;
  config_.enroll_refill_ms = 60'000;
  StartServer();
  for (int i = 0; i < 3; ++i) {
    TestDevice d = NewDeviceKeys();
    auto reply = SendEnroll(d, "TEDUH-WRONG-CODE");
    ASSERT_TRUE(reply && reply->has_error());
    EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_BAD_ENROLLMENT_CODE);
  }
  TestDevice d = NewDeviceKeys();
  auto limited = SendEnroll(d, bootstrap_code_);
  ASSERT_TRUE(limited && limited->has_error());
  EXPECT_EQ(limited->error().code(), v1::ERROR_CODE_RATE_LIMITED);
  EXPECT_GT(limited->error().retry_after_ms(), 0u);
  EXPECT_EQ(server_->metrics().refused_enroll_rate, 1u);
  // The code was not spent: after the interval the admin enrolls with it.
  env_.Advance(60'000);
  auto ok = SendEnroll(
      d, bootstrap_code_,
      std::string(reinterpret_cast<const char*>(root_.public_key.data()), root_.public_key.size()));
  ASSERT_TRUE(ok);
  EXPECT_TRUE(ok->has_enroll_result()) << ok->DebugString();
}

// ---- Keepalive ---------------------------------------------------------------------------

TEST_F(HostileClientTest, ALiveDeviceAnsweringPingsStaysConnectedAndASilentOneIsClosed) {
  EnrollBootstrapAdmin();
  TestDevice ani = EnrollApproved(v1::ROLE_OFFICE, "ani");
  StopServer();
  config_.idle_timeout = std::chrono::milliseconds(600);
  StartServer();
  // Quiet for four idle timeouts, answering the server's pings: still open.
  auto live = Login(ani);
  auto reply = live->CallAfterIdle(PullRequest(), std::chrono::milliseconds(2400));
  ASSERT_TRUE(reply);
  EXPECT_TRUE(reply->has_changes());
  // A peer that answers nothing is closed after the idle timeout.
  auto silent = Login(ani);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_TRUE(silent->WaitClosed(std::chrono::milliseconds(200)));
}

using BusyServerDeviceTest = DeviceServerTest;

TEST_F(BusyServerDeviceTest, ADeviceTurnedAwayForLoadSaysWhenToRetryKeepsItsChangesAndGetsIn) {
  busy_wait_ = std::chrono::milliseconds(2500);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  // Another device, signed in over a raw connection, will hold the only slot.
  auto code = CreateEnrollment(data_dir_, v1::ROLE_OFFICE, "budi", std::chrono::hours(1), env_);
  ASSERT_TRUE(code);
  TestDevice budi = NewDeviceKeys();
  ASSERT_TRUE(SendEnroll(budi, code->code));
  ASSERT_TRUE(admin_dev_->ApproveDevice(core::ToHex(budi.device_id)));
  auto made = ani->NewCase({"risk_level=tinggi"});
  ASSERT_TRUE(made);
  config_.port = server_->port();
  StopServer();
  config_.max_connections = 1;
  config_.busy_retry_ms = 1000;
  StartServer();

  auto holder = Login(budi);
  auto refused = ani->Sync();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, make_error_code(core::errc::server_busy));
  EXPECT_THAT(refused.error().message, ::testing::HasSubstr("busy"));
  EXPECT_THAT(refused.error().message, ::testing::HasSubstr("try again in 1 s"));
  auto st = ani->Status();
  ASSERT_TRUE(st);
  EXPECT_GT(st->counts.pending, 0u);  // kept, to be sent

  // The slot frees while the device waits out the hint: it gets in.
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    holder.reset();
  });
  auto synced = ani->Sync();
  release.join();
  ASSERT_TRUE(synced) << synced.error().message;
  st = ani->Status();
  ASSERT_TRUE(st);
  EXPECT_EQ(st->counts.pending, 0u);
}

// ---- Storage bounds ---------------------------------------------------------------------

TEST_F(HostileClientTest, ADeviceStoresOnlyItsDailyBoundAndWhatWaitsIsTakenTheNextDay) {
  EnrollBootstrapAdmin();
  TestDevice ani = EnrollApproved(v1::ROLE_OFFICE, "ani");
  TestDevice tono = EnrollApproved(v1::ROLE_SUPERVISOR, "tono");
  StopServer();
  config_.max_device_bytes_per_day = 1000;  // a case and a few 64-byte notes
  config_.max_unit_bytes_per_day = 1800;
  StartServer();
  auto client = Login(ani);
  const Id case_id = core::NewId();
  std::vector<v1::FieldChange> changes{
      OpenChange(ani, case_id, core::kCaseKind, {}, 1, CaseText(1, "K-1"))};
  for (int i = 0; i < 12; ++i)
    changes.push_back(SealedChange(ani, core::NewId(), core::kNoteKind, case_id, 20));
  auto count = [](const v1::PushResult& r, std::string_view reason) {
    int n = 0;
    for (const auto& one : r.results())
      n += reason.empty() ? one.status() == v1::ChangeResult::STATUS_APPLIED
                          : one.reason() == reason;
    return n;
  };
  const v1::PushResult first = Push(*client, changes);
  const int applied = count(first, "");
  EXPECT_EQ(applied, 8);  // 1000 bytes: the case (69) and seven notes (128 each)
  EXPECT_EQ(count(first, core::kQuotaReason), 13 - applied);
  // Sent again the same day (also after a restart): still no room.
  config_.port = server_->port();
  client.reset();
  StopServer();
  StartServer();
  client = Login(ani);
  const std::vector<v1::FieldChange> rest(changes.begin() + applied, changes.end());
  EXPECT_EQ(count(Push(*client, rest), core::kQuotaReason), 13 - applied);
  // Another device has its own bound, within the unit's.
  auto other = Login(tono);
  std::vector<v1::FieldChange> his;
  for (int i = 0; i < 10; ++i)
    his.push_back(SealedChange(tono, core::NewId(), core::kNoteKind, case_id, 20));
  const v1::PushResult theirs = Push(*other, his);
  EXPECT_EQ(count(theirs, ""), 6);  // the unit's 1800 bytes: 965 used, six more fit
  EXPECT_EQ(count(theirs, core::kQuotaReason), 4);
  // The next day the waiting changes are decided anew and stored.
  env_.Advance(24 * 3600 * 1000);
  const v1::PushResult next_day = Push(*client, rest);
  EXPECT_EQ(count(next_day, ""), 13 - applied);
  auto office = Login(tono);
  EXPECT_EQ(PullAll(*office).size(), static_cast<std::size_t>(13 + 6));
}

TEST_F(BusyServerDeviceTest, ADeviceOverItsDailyBoundKeepsItsEditsAndSendsThemLater) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  config_.port = server_->port();
  StopServer();
  config_.max_device_bytes_per_day = 600;
  StartServer();
  auto made = rina->NewCase(
      {"risk_level=tinggi", "chronology=Kekerasan di rumah oleh suami, berulang sejak 2024"});
  ASSERT_TRUE(made) << made.error().message;
  auto first = rina->Sync();
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_GT(first->held_back, 0u);
  auto st = rina->Status();
  ASSERT_TRUE(st);
  EXPECT_GT(st->counts.pending, 0u);
  EXPECT_EQ(st->counts.rejected, 0u);  // waiting, not refused
  env_.Advance(24 * 3600 * 1000);
  auto second = rina->Sync();
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_EQ(second->held_back, 0u);
  st = rina->Status();
  ASSERT_TRUE(st);
  EXPECT_EQ(st->counts.pending, 0u);
  EXPECT_EQ(st->counts.rejected, 0u);
}

// ---- Full disks ----------------------------------------------------------------------------

class StoreFaultTest : public ServerTest {
 protected:
  // Pushes batches of 1 KiB sealed notes until the server answers with an
  // error (at most `tries` batches); returns that answer, or nullopt.
  std::optional<v1::Frame> PushUntilFull(TestClient& client, const TestDevice& dev,
                                         const Id& case_id, int tries,
                                         std::vector<v1::FieldChange>* refused) {
    for (int i = 0; i < tries; ++i) {
      v1::Frame f;
      f.set_request_id(1000 + i);
      std::vector<v1::FieldChange> batch;
      for (int n = 0; n < 100; ++n) {
        v1::FieldChange c = SealedChangeOf(dev, core::NewId(), core::kNoteKind, case_id, 20, 1024);
        batch.push_back(c);
        *f.mutable_push()->add_changes() = std::move(c);
      }
      auto reply = client.Call(f);
      if (!reply) return std::nullopt;
      if (reply->has_error()) {
        *refused = std::move(batch);
        return reply;
      }
    }
    return std::nullopt;
  }
};

std::string Metrics(std::uint16_t ops_port) { return HttpGet(ops_port, "/metrics").second; }

TEST_F(StoreFaultTest, AFullStoreRefusesWritesWithDiskFullAndKeepsServingReads) {
  EnrollBootstrapAdmin();
  TestDevice ani = EnrollApproved(v1::ROLE_OFFICE, "ani");
  TestDevice tono = EnrollApproved(v1::ROLE_SUPERVISOR, "tono");
  StopServer();
  config_.max_store_bytes = 2u << 20;  // the store's bound: as a 2 MiB disk
  StartServer();
  EXPECT_EQ(HttpGet(server_->ops_port(), "/readyz").first, 200);
  auto client = Login(ani);
  const Id case_id = core::NewId();
  ASSERT_EQ(Push(*client, {OpenChange(ani, case_id, core::kCaseKind, {}, 1, CaseText(1, "K-1"))})
                .results(0)
                .status(),
            v1::ChangeResult::STATUS_APPLIED);
  std::vector<v1::FieldChange> refused;
  auto full = PushUntilFull(*client, ani, case_id, 40, &refused);
  ASSERT_TRUE(full) << "the store never filled";
  EXPECT_EQ(full->error().code(), v1::ERROR_CODE_DISK_FULL);
  EXPECT_THAT(full->error().message(), ::testing::HasSubstr("disk is full"));
  EXPECT_EQ(full->error().retry_after_ms(), 60'000u);
  // Operations see it: not ready, a gauge and a counter (until a write
  // succeeds again: a small one that needs no new page may).
  EXPECT_EQ(HttpGet(server_->ops_port(), "/readyz").first, 503);
  EXPECT_EQ(HttpGet(server_->ops_port(), "/livez").first, 200);
  const std::string m = Metrics(server_->ops_port());
  EXPECT_THAT(m, ::testing::HasSubstr("teduh_store_disk_full 1"));
  EXPECT_THAT(m, ::testing::Not(::testing::HasSubstr(
                     "teduh_store_write_failures_total{cause=\"disk_full\"} 0")));
  // The connection stays open for reads, and other devices read too.
  auto same = PullFrame(*client, 0, 10);
  ASSERT_TRUE(same);
  EXPECT_TRUE(same->has_changes()) << same->DebugString();
  auto reader = Login(tono);
  const auto pulled = PullAll(*reader);
  EXPECT_GT(pulled.size(), 1u);
  // Nothing of the refused push was saved; everything acknowledged is there.
  for (const auto& c : pulled)
    for (const auto& r : refused) EXPECT_NE(c.record_id(), r.record_id());
}

TEST_F(StoreFaultTest, OnARealFullDiskWritingResumesByItselfWhenSpaceIsFreed) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to mount a small file system";
  const std::string mnt = dir_ + "/disk";
  std::filesystem::create_directories(mnt);
  if (mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=8m") != 0)
    GTEST_SKIP() << "cannot mount a small file system here";
  struct Unmount {
    std::string at;
    ~Unmount() { umount2(at.c_str(), MNT_DETACH); }
  } unmount{mnt};
  StopServer();
  auto init = InitStore(mnt + "/data", "UPTD PPA Test", env_);
  ASSERT_TRUE(init) << init.error().message();
  bootstrap_code_ = init->bootstrap_code;
  data_dir_ = config_.data_dir = mnt + "/data";
  StartServer();
  EnrollBootstrapAdmin();
  TestDevice ani = EnrollApproved(v1::ROLE_OFFICE, "ani");
  auto client = Login(ani);
  const Id case_id = core::NewId();
  ASSERT_EQ(Push(*client, {OpenChange(ani, case_id, core::kCaseKind, {}, 1, CaseText(1, "K-1"))})
                .results(0)
                .status(),
            v1::ChangeResult::STATUS_APPLIED);
  // Something else on the disk takes all but 256 KiB.
  struct statvfs fs {};
  ASSERT_EQ(statvfs(mnt.c_str(), &fs), 0);
  const std::uint64_t free_bytes = static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
  ASSERT_GT(free_bytes, 256u * 1024);
  {
    std::ofstream filler(mnt + "/filler", std::ios::binary);
    const std::string block(64 * 1024, 'f');
    for (std::uint64_t n = 0; n + 256 * 1024 < free_bytes; n += block.size())
      filler.write(block.data(), static_cast<std::streamsize>(block.size()));
  }
  std::vector<v1::FieldChange> refused;
  auto full = PushUntilFull(*client, ani, case_id, 40, &refused);
  ASSERT_TRUE(full) << "the disk never filled";
  EXPECT_EQ(full->error().code(), v1::ERROR_CODE_DISK_FULL);
  EXPECT_EQ(HttpGet(server_->ops_port(), "/readyz").first, 503);
  auto pulled = PullFrame(*client, 0, 10);
  ASSERT_TRUE(pulled && pulled->has_changes());
  // Space is freed: the same push is taken, with no restart.
  std::filesystem::remove(mnt + "/filler");
  v1::Frame again;
  again.set_request_id(9999);
  for (const auto& c : refused) *again.mutable_push()->add_changes() = c;
  auto reply = client->Call(again);
  ASSERT_TRUE(reply && reply->has_push_result()) << (reply ? reply->DebugString() : "closed");
  for (const auto& r : reply->push_result().results())
    EXPECT_EQ(r.status(), v1::ChangeResult::STATUS_APPLIED);
  EXPECT_EQ(HttpGet(server_->ops_port(), "/readyz").first, 200);
  EXPECT_THAT(Metrics(server_->ops_port()), ::testing::HasSubstr("teduh_store_disk_full 0"));
  client.reset();
  StopServer();  // before the file system goes
}

TEST_F(BusyServerDeviceTest, ADeviceMeetingAFullServerKeepsItsEditsAndStillReceives) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto first = ani->NewCase({"risk_level=sedang"});
  ASSERT_TRUE(first);
  Sync(*ani);
  config_.port = server_->port();
  StopServer();
  config_.max_store_bytes = 1;  // the store may not grow: a long chronology does not fit
  StartServer();
  auto mine = rina->NewCase({"risk_level=tinggi", "chronology=" + std::string(30'000, 'k')});
  ASSERT_TRUE(mine);
  auto r = rina->Sync();
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->server_disk_full);
  auto st = rina->Status();
  ASSERT_TRUE(st);
  EXPECT_GT(st->counts.pending, 0u);
  EXPECT_EQ(st->counts.rejected, 0u);
  // The office still receives what the server holds.
  auto office = ani->Sync();
  ASSERT_TRUE(office) << office.error().message;
  // Room again (here: the bound lifted at a restart): the edits go.
  StopServer();
  config_.max_store_bytes = 0;
  StartServer();
  auto later = rina->Sync();
  ASSERT_TRUE(later) << later.error().message;
  EXPECT_FALSE(later->server_disk_full);
  st = rina->Status();
  ASSERT_TRUE(st);
  EXPECT_EQ(st->counts.pending, 0u);
}

}  // namespace
}  // namespace teduh::server::testing
