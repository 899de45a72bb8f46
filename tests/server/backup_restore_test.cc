// Keys and administration across a restore (docs/SECURITY.md, "Backups"):
// after a backup is restored, rotations, approvals and re-keying work; a
// restore over a store with newer key epochs never lowers them; a store put
// back from a file copy that forgot a rotation never has an epoch number
// reused for another key; `device list` shows who sent their lost changes again.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <thread>

#include "server/device_fixture.h"
#include "teduh/core/backup_file.h"
#include "teduh/server/backup.h"
#include "teduh/server/store.h"

namespace teduh::server::testing {
namespace {

namespace fs = std::filesystem;

class BackupRestoreTest : public DeviceServerTest {
 protected:
  void SetUp() override {
    DeviceServerTest::SetUp();
    auto key = admin_dev_->BackupKey(true);
    ASSERT_TRUE(key) << key.error().message;
    auto set = SetBackupKey(data_dir_, key->token);
    ASSERT_TRUE(set) << set.error().message;
    auto pair = core::ParseBackupSecret(key->secret);
    ASSERT_TRUE(pair) << pair.error().message;
    backup_key_ = std::move(*pair);
  }

  std::string Backup(const std::string& name) {
    const std::string file = dir_ + "/" + name + ".tbk";
    auto r = BackupStore(data_dir_, file, env_);
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    return file;
  }

  // Stops the server, runs `while_stopped`, and serves again on the same port.
  void Restart(const std::function<void()>& while_stopped) {
    config_.port = server_->port();
    StopServer();
    while_stopped();
    StartServer();
  }

  RestoreReport Restore(const std::string& file) {
    auto r = RestoreStore(file, data_dir_, backup_key_, env_);
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    return r ? *r : RestoreReport{};
  }

  std::uint32_t CurrentEpoch(teduh::AccessClass cls) {
    auto status = admin_dev_->KeyStatus();
    EXPECT_TRUE(status) << (status ? "" : status.error().message);
    for (const auto& c : status ? *status : std::vector<core::KeyClassView>{})
      if (c.key_class == cls) return c.current_epoch;
    return 0;
  }

  std::optional<core::RemoteDevice> Remote(const core::Id& id) {
    auto list = admin_dev_->ListRemoteDevices();
    EXPECT_TRUE(list) << (list ? "" : list.error().message);
    for (const auto& r : list ? *list : std::vector<core::RemoteDevice>{})
      if (r.device_id == id) return r;
    return std::nullopt;
  }

  crypto::BoxKeyPair backup_key_;
};

TEST_F(BackupRestoreTest, RotationApprovalAndRekeyWorkAfterARestore) {
  auto budi = Staff("budi", v1::ROLE_OFFICE);
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto first = budi->NewCase({"chronology=Sebelum cadangan"});
  ASSERT_TRUE(first);
  Sync(*budi);
  const std::string file = Backup("unit");
  auto second = budi->NewCase({"chronology=Sesudah cadangan"});
  ASSERT_TRUE(second);
  Sync(*budi);

  Restart([&] { Restore(file); });
  auto b = Sync(*budi);
  EXPECT_TRUE(b.reset);
  Sync(*rina);
  Sync(*admin_dev_);
  auto budi_row = Remote(budi->info().device_id);
  ASSERT_TRUE(budi_row);
  EXPECT_GT(budi_row->restore_lost, 0u);
  EXPECT_EQ(budi_row->resent, budi_row->restore_lost);

  auto rotated = admin_dev_->RotateClassKey(teduh::ACCESS_CLASS_GENERAL);
  ASSERT_TRUE(rotated) << rotated.error().message;
  EXPECT_EQ(rotated->epoch, 2u);
  auto dewi = Staff("dewi", v1::ROLE_OFFICE);
  EXPECT_EQ(Value(*dewi, *first, "chronology"), "Sebelum cadangan");
  EXPECT_EQ(Value(*dewi, *second, "chronology"), "Sesudah cadangan");

  auto revoked = admin_dev_->RevokeDevice(core::ToHex(rina->info().device_id));
  ASSERT_TRUE(revoked) << revoked.error().message;
  auto rekeyed = admin_dev_->RekeyCases(core::ToHex(rina->info().device_id), false);
  ASSERT_TRUE(rekeyed) << rekeyed.error().message;
  Sync(*budi);
  auto after = budi->NewCase({"chronology=Sesudah kunci baru"});
  ASSERT_TRUE(after);
  Sync(*budi);
  Sync(*dewi);
  EXPECT_EQ(Value(*dewi, *after, "chronology"), "Sesudah kunci baru");
  EXPECT_EQ(Value(*dewi, *second, "chronology"), "Sesudah cadangan");
  auto audit = VerifyAudit(data_dir_);
  ASSERT_TRUE(audit);
  EXPECT_TRUE(audit->intact()) << audit->detail;
}

TEST_F(BackupRestoreTest, BackupsWhileDevicesPushRestoreToAnIntactStore) {
  auto budi = Staff("budi", v1::ROLE_OFFICE);
  auto rina = Staff("rina", v1::ROLE_OFFICE);
  auto budi_case = budi->NewCase({"chronology=Kasus budi"});
  auto rina_case = rina->NewCase({"chronology=Kasus rina"});
  ASSERT_TRUE(budi_case && rina_case);
  // Two devices edit and push in a loop (bounded) while three backups run.
  std::atomic<bool> stop{false};
  std::atomic<int> pushes{0}, failures{0};
  auto pusher = [&](core::Device* d, core::Id c) {
    static const char* kRisk[] = {"rendah", "sedang", "tinggi"};
    for (int i = 0; i < 200 && !stop.load(); ++i) {
      if (!d->SetCaseFields(core::ToHex(c), {std::string("risk_level=") + kRisk[i % 3]}) ||
          !d->Sync({}, /*push_only=*/true)) {
        ++failures;
        continue;
      }
      ++pushes;
    }
  };
  std::thread a(pusher, budi.get(), *budi_case), b(pusher, rina.get(), *rina_case);
  std::vector<std::string> files;
  for (int i = 0; i < 3; ++i) {
    while (pushes.load() < 5 * (i + 1) && failures.load() == 0) std::this_thread::yield();
    files.push_back(Backup("load-" + std::to_string(i)));
  }
  const int during = pushes.load();
  stop = true;
  a.join();
  b.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GE(during, 15);
  for (const auto& file : files) {
    const std::string target = dir_ + "/restored-" + fs::path(file).stem().string();
    auto r = RestoreStore(file, target, backup_key_, env_);
    ASSERT_TRUE(r) << r.error().message;
    auto audit = VerifyAudit(target);
    ASSERT_TRUE(audit);
    EXPECT_TRUE(audit->intact()) << audit->detail;
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open_v2(StorePath(target).c_str(), &db, SQLITE_OPEN_READONLY, nullptr),
              SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, nullptr), SQLITE_OK);
    ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
    EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "ok");
    sqlite3_finalize(st);
    sqlite3_close(db);
  }
}

TEST_F(BackupRestoreTest, ARestoreOverAStoreWithNewerEpochsKeepsThem) {
  auto budi = Staff("budi", v1::ROLE_OFFICE);
  const std::string file = Backup("epoch-1");
  auto rotated = admin_dev_->RotateClassKey(teduh::ACCESS_CLASS_GENERAL);
  ASSERT_TRUE(rotated) << rotated.error().message;
  ASSERT_EQ(rotated->epoch, 2u);
  Sync(*budi);
  auto written = budi->NewCase({"chronology=Di bawah epoch 2"});
  ASSERT_TRUE(written);
  Sync(*budi);

  Restart([&] {
    auto report = Restore(file);
    EXPECT_TRUE(report.carried_forward);
  });
  EXPECT_EQ(CurrentEpoch(teduh::ACCESS_CLASS_GENERAL), 2u);  // carried forward
  Sync(*budi);
  Sync(*admin_dev_);
  auto next = admin_dev_->RotateClassKey(teduh::ACCESS_CLASS_GENERAL);
  ASSERT_TRUE(next) << next.error().message;
  EXPECT_EQ(next->epoch, 3u);
  auto dewi = Staff("dewi", v1::ROLE_OFFICE);
  EXPECT_EQ(Value(*dewi, *written, "chronology"), "Di bawah epoch 2");
}

TEST_F(BackupRestoreTest, AFileCopyThatForgotARotationNeverGetsThatEpochNumberAgain) {
  auto budi = Staff("budi", v1::ROLE_OFFICE);
  const std::string copy = dir_ + "/copy";
  Restart([&] {
    fs::copy(data_dir_, copy, fs::copy_options::recursive);
    fs::remove(fs::path(copy) / "teduh-server.lock");
  });
  auto rotated = admin_dev_->RotateClassKey(teduh::ACCESS_CLASS_GENERAL);
  ASSERT_TRUE(rotated) << rotated.error().message;
  ASSERT_EQ(rotated->epoch, 2u);
  Sync(*budi);
  auto written = budi->NewCase({"chronology=Di bawah kunci yang terlupa"});
  ASSERT_TRUE(written);
  Sync(*budi);

  Restart([&] {
    fs::remove_all(data_dir_);
    fs::copy(copy, data_dir_, fs::copy_options::recursive);
  });
  EXPECT_TRUE(Sync(*budi).reset);
  Sync(*admin_dev_);
  EXPECT_EQ(CurrentEpoch(teduh::ACCESS_CLASS_GENERAL), 1u);  // the copy forgot epoch 2
  // Epoch 2 is budi's key, not a new one: the rotation skips to 3.
  auto next = admin_dev_->RotateClassKey(teduh::ACCESS_CLASS_GENERAL);
  ASSERT_TRUE(next) << next.error().message;
  EXPECT_EQ(next->epoch, 3u);
  Sync(*budi);
  EXPECT_EQ(Value(*budi, *written, "chronology"), "Di bawah kunci yang terlupa");
  auto dewi = Staff("dewi", v1::ROLE_OFFICE);
  EXPECT_EQ(Value(*dewi, *written, "chronology"), "Di bawah kunci yang terlupa");
  auto more = budi->NewCase({"chronology=Di bawah epoch 3"});
  ASSERT_TRUE(more);
  Sync(*budi);
  Sync(*dewi);
  EXPECT_EQ(Value(*dewi, *more, "chronology"), "Di bawah epoch 3");
}

}  // namespace
}  // namespace teduh::server::testing
