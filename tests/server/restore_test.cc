// Nothing acknowledged is lost when a device's home is restored from an
// earlier copy (PROTOCOL §4, "Sequence numbers"): the server's Welcome tells
// the device its mark, a number the server holds for another change is
// refused (seq_reused) and the device sends the edit again under a new one.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>

#include "server/device_fixture.h"
#include "teduh/server/admin.h"
#include "teduh/server/error.h"
#include "teduh/server/store.h"

namespace teduh::server::testing {
namespace {

namespace fs = std::filesystem;

class RestoredHomeTest : public DeviceServerTest {
 protected:
  std::string Home(const std::string& name) const { return dir_ + "/" + name; }

  static bool Holds(core::Device& d, const core::Id& case_id) {
    auto cases = d.ListCases();
    EXPECT_TRUE(cases) << (cases ? "" : cases.error().message);
    if (!cases) return false;
    for (const auto& c : *cases)
      if (c.case_id == case_id) return true;
    return false;
  }
};

TEST_F(RestoredHomeTest, ACaseMadeOnAHomeRestoredFromAnEarlierCopyReachesTheServerAndTheOffice) {
  auto budi = Staff("budi", v1::ROLE_OFFICE);
  auto rina = Staff("rina", v1::ROLE_OFFICE);
  auto first = budi->NewCase({"chronology=Kasus pertama"});
  ASSERT_TRUE(first);
  Sync(*budi);

  // IT support copies budi's home (the program closed).
  budi.reset();
  fs::copy(Home("budi"), Home("budi-copy"), fs::copy_options::recursive);
  budi = core::Device::Open(Home("budi"), Pass(), Options("budi")).value();

  // Work after the copy, acknowledged by the server.
  auto second = budi->NewCase({"chronology=Kasus kedua"});
  ASSERT_TRUE(second);
  auto sent = Sync(*budi);
  EXPECT_GT(sent.accepted, 0u);
  EXPECT_EQ(sent.renumbered, 0u);

  // The disk fails; the copy is put back.
  budi.reset();
  fs::remove_all(Home("budi"));
  fs::rename(Home("budi-copy"), Home("budi"));
  budi = core::Device::Open(Home("budi"), Pass(), Options("budi")).value();
  EXPECT_FALSE(Holds(*budi, *second));

  // Offline, a new case: its edits take numbers the server holds for the second case.
  auto third = budi->NewCase({"chronology=Kasus ketiga", "risk_level=high"});
  ASSERT_TRUE(third);
  auto report = Sync(*budi);
  EXPECT_GT(report.renumbered, 0u);
  EXPECT_EQ(report.rejected, 0u);
  auto status = budi->Status();
  ASSERT_TRUE(status);
  EXPECT_EQ(status->counts.pending, 0u);
  EXPECT_EQ(status->counts.rejected, 0u);
  EXPECT_TRUE(Holds(*budi, *second)) << "the restored home pulls what it had lost";

  // A later edit lands too, without being numbered again.
  auto fourth = budi->NewCase({"chronology=Kasus keempat"});
  ASSERT_TRUE(fourth);
  auto later = Sync(*budi);
  EXPECT_EQ(later.renumbered, 0u);
  EXPECT_GT(later.accepted, 0u);

  Sync(*rina);
  for (const auto& id : {*first, *second, *third, *fourth}) EXPECT_TRUE(Holds(*rina, id));
  EXPECT_EQ(Value(*rina, *third, "chronology"), "Kasus ketiga");
  EXPECT_EQ(Value(*rina, *fourth, "chronology"), "Kasus keempat");
}

// A server's data folder copied while it was stopped and put back later keeps
// its generation: the devices that saw newer data find it out (their cursor
// beyond the store's head, or their acknowledged changes beyond its mark),
// the store takes a new generation, and everyone re-sends and pulls again.
class FileCopyRestoreTest : public RestoredHomeTest {
 protected:
  void Restart(const std::function<void()>& while_stopped) {
    config_.port = server_->port();  // the devices know this address
    StopServer();
    while_stopped();
    StartServer();
  }
  void CopyData(const std::string& to) {
    fs::remove_all(to);
    fs::copy(data_dir_, to, fs::copy_options::recursive);
    fs::remove(fs::path(to) / "teduh-server.lock");
  }
  void PutBack(const std::string& from) {
    fs::remove_all(data_dir_);
    fs::copy(from, data_dir_, fs::copy_options::recursive);
  }
};

TEST_F(FileCopyRestoreTest, APullingDeviceFindsOutAndNothingAcknowledgedIsLost) {
  auto budi = Staff("budi", v1::ROLE_OFFICE);
  auto rina = Staff("rina", v1::ROLE_OFFICE);
  auto first = budi->NewCase({"chronology=Kasus pertama"});
  ASSERT_TRUE(first);
  Sync(*budi);
  Restart([&] { CopyData(dir_ + "/copy"); });
  auto second = budi->NewCase({"chronology=Kasus kedua"});
  ASSERT_TRUE(second);
  EXPECT_GT(Sync(*budi).accepted, 0u);
  Sync(*rina);
  ASSERT_TRUE(Holds(*rina, *second));
  Restart([&] { PutBack(dir_ + "/copy"); });

  // rina only pulled: her cursor is beyond the store's head.
  auto r = Sync(*rina);
  EXPECT_TRUE(r.reset);
  // budi's acknowledged second case is sent again.
  auto b = Sync(*budi);
  EXPECT_TRUE(b.reset);
  EXPECT_EQ(b.rejected, 0u);
  Sync(*rina);
  EXPECT_TRUE(Holds(*rina, *first));
  EXPECT_TRUE(Holds(*rina, *second));
  EXPECT_EQ(Value(*rina, *second, "chronology"), "Kasus kedua");
  auto third = budi->NewCase({"chronology=Kasus ketiga"});
  Sync(*budi);
  Sync(*rina);
  EXPECT_TRUE(Holds(*rina, *third));
  auto audit = VerifyAudit(data_dir_);
  ASSERT_TRUE(audit);
  EXPECT_TRUE(audit->intact()) << audit->detail;
}

TEST_F(FileCopyRestoreTest, AnAuthorFindsOutByItsAcknowledgedChanges) {
  auto budi = Staff("budi", v1::ROLE_OFFICE);
  auto rina = Staff("rina", v1::ROLE_OFFICE);
  Restart([&] { CopyData(dir_ + "/copy"); });
  auto lost = budi->NewCase({"chronology=Hanya di salinan yang hilang"});
  ASSERT_TRUE(lost);
  Sync(*budi);
  Restart([&] { PutBack(dir_ + "/copy"); });
  // budi never pulled his own case back (cursor not beyond the head), but
  // the server forgot changes it acknowledged to him.
  auto b = Sync(*budi);
  EXPECT_TRUE(b.reset);
  Sync(*rina);
  EXPECT_TRUE(Holds(*rina, *lost));
}

}  // namespace
}  // namespace teduh::server::testing

namespace teduh::server::testing {
namespace {

using OneServerPerStoreTest = ServerTest;

TEST_F(OneServerPerStoreTest, ASecondServerOnTheSameDataFolderIsRefusedUntilTheFirstStops) {
  ServerConfig second = config_;
  second.port = 0;
  auto refused = Server::Open(second, env_);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error(), make_error_code(errc::in_use));
  EXPECT_NE(refused.error().message().find("another teduh-server process"), std::string::npos);
  long holder = 0;
  auto lock = DataFolderLock::Acquire(data_dir_, &holder);
  EXPECT_FALSE(lock);
  EXPECT_EQ(holder, static_cast<long>(::getpid()));

  StopServer();
  auto after = Server::Open(second, env_);
  ASSERT_TRUE(after) << after.error().message();
  after->reset();
  StartServer();  // and the fixture's server serves again
}

TEST_F(OneServerPerStoreTest, AMissingDataFolderIsNotInitialisedNotInUse) {
  auto lock = DataFolderLock::Acquire(dir_ + "/nowhere");
  ASSERT_FALSE(lock);
  EXPECT_EQ(lock.error(), make_error_code(errc::not_initialised));
}

}  // namespace
}  // namespace teduh::server::testing
