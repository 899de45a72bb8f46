// Kill -9 at random points (issue 15): the server, in a child process, is
// killed with SIGKILL while a device pushes, again and again; every change it
// acknowledged must be in the store after a restart, once, with the audit
// chain intact. Bounded: a fixed number of kills, each within a second.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>

#include "server/server_fixture.h"
#include "teduh/core/schema.h"

namespace teduh::server::testing {
namespace {

using CrashTest = ServerTest;

// Runs the server on the fixture's configuration in a child process until it is killed.
pid_t ForkServer(const ServerConfig& config, core::Env& env) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  auto server = Server::Open(config, env);
  if (!server || (*server)->Start()) _exit(3);
  for (;;) pause();
}

TEST_F(CrashTest, EveryAcknowledgedChangeSurvivesKillsDuringPushes) {
  EnrollBootstrapAdmin();
  TestDevice ani = EnrollApproved(v1::ROLE_OFFICE, "ani");
  const Id case_id = core::NewId();
  {
    auto client = Login(ani);
    ASSERT_EQ(Push(*client, {OpenChange(ani, case_id, core::kCaseKind, {}, 1, CaseText(1, "K-1"))})
                  .results(0)
                  .status(),
              v1::ChangeResult::STATUS_APPLIED);
  }
  config_.port = server_->port();
  StopServer();

  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::set<std::string> acknowledged;  // record ids of notes the server acknowledged
  int kills = 0, pushes_acknowledged = 0;
  for (int round = 0; round < 8; ++round) {
    const pid_t pid = ForkServer(config_, env_);
    ASSERT_GT(pid, 0);
    // Whatever happens below, the child does not outlive this round.
    struct Reap {
      pid_t pid;
      ~Reap() {
        if (pid <= 0) return;
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
      }
    } reap{pid};
    std::unique_ptr<TestClient> client;
    for (int i = 0; i < 200 && !client; ++i) {
      client = TestClient::Connect(config_.port);
      if (!client) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(client) << "the server did not start";
    auto welcome = Authenticate(*client, ani);
    ASSERT_TRUE(welcome && welcome->has_welcome());
    // The kill comes at a random moment of the pushes below.
    std::thread killer([pid, delay = std::uniform_int_distribution<int>(5, 300)(rng)] {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay));
      kill(pid, SIGKILL);
    });
    for (int n = 0; n < 1000; ++n) {
      v1::Frame f;
      f.set_request_id(next_request_++);
      std::vector<std::string> ids;
      for (int i = 0; i < 50; ++i) {
        const Id note = core::NewId();
        ids.emplace_back(core::AsBytes(note));
        *f.mutable_push()->add_changes() =
            SealedChangeOf(ani, note, core::kNoteKind, case_id, 20, 200);
      }
      auto reply = client->Call(f);
      if (!reply) break;  // killed
      EXPECT_TRUE(reply->has_push_result()) << reply->DebugString();
      if (!reply->has_push_result()) break;
      ++pushes_acknowledged;
      for (int i = 0; i < reply->push_result().results_size(); ++i)
        if (reply->push_result().results(i).status() == v1::ChangeResult::STATUS_APPLIED)
          acknowledged.insert(ids[i]);
    }
    killer.join();
    int status = 0;
    const pid_t reaped = waitpid(pid, &status, 0);
    reap.pid = 0;  // reaped here: the guard must not signal a reused pid
    ASSERT_EQ(reaped, pid);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    ++kills;
  }
  EXPECT_EQ(kills, 8);
  EXPECT_GT(pushes_acknowledged, 8);

  // After the last kill: every acknowledged note is there, once.
  StartServer();
  TestDevice tono = EnrollApproved(v1::ROLE_SUPERVISOR, "tono");
  auto reader = Login(tono);
  std::map<std::string, int> seen;
  for (const auto& c : PullAll(*reader))
    if (c.kind() == core::kNoteKind) ++seen[c.record_id()];
  for (const auto& id : acknowledged) {
    auto it = seen.find(id);
    ASSERT_NE(it, seen.end()) << "an acknowledged change is missing";
    EXPECT_EQ(it->second, 1);
  }
  EXPECT_GE(seen.size(), acknowledged.size());  // unacknowledged ones may be there too
  StopServer();
  auto audit = VerifyAudit(data_dir_);
  ASSERT_TRUE(audit) << audit.error().message();
  EXPECT_TRUE(audit->intact());
}

}  // namespace
}  // namespace teduh::server::testing
