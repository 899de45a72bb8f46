// Class key rotation between real devices and the real server (ARCHITECTURE
// §4, PROTOCOL §8b): every case key is re-wrapped under the new epoch in one
// server transaction; devices offline during it keep working and catch up;
// a stale admin device is refused; an interrupted rotation resumes and is
// never half-visible.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <map>
#include <set>

#include "server/device_fixture.h"
#include "teduh/core/frame_codec.h"

namespace teduh::server::testing {
namespace {

using core::errc;

// A transport that fails the rotation's commit frame while `cut` is set: the
// connection breaks after every re-wrap was staged.
// With `after` set, the commit is sent and its answer lost instead. It also
// checks every Changes frame it receives: no case key record may arrive with
// only one of its re-wrapped fields (epoch and wrap come together).
class CuttingTransport final : public core::Transport {
 public:
  CuttingTransport(std::unique_ptr<core::Transport> inner, std::atomic<bool>* cut,
                   bool after = false)
      : inner_(std::move(inner)), cut_(cut), after_(after) {}
  core::Outcome<void> Send(std::string_view bytes) override {
    auto frame = core::DecodeFrame(bytes, core::FrameLimits{});
    if (cut_->load() && frame && frame->has_rotate_keys() && frame->rotate_keys().commit()) {
      if (after_) {
        answer_lost_ = true;
        return inner_->Send(bytes);
      }
      inner_->Close();
      return core::Fail(errc::connection_failed, "cut by the test");
    }
    return inner_->Send(bytes);
  }
  core::Outcome<std::string> Receive() override {
    auto r = inner_->Receive();
    if (answer_lost_) {
      inner_->Close();
      return core::Fail(errc::connection_failed, "answer lost by the test");
    }
    if (r) {
      auto frame = core::DecodeFrame(*r, core::FrameLimits{});
      if (frame && frame->has_changes()) {
        std::map<std::string, std::set<std::uint32_t>> rewrapped;
        for (const auto& c : frame->changes().changes())
          if (c.kind() == "teduh.keys.v1.CaseKey" && (c.field() == 3 || c.field() == 4))
            rewrapped[c.record_id()].insert(c.field());
        for (const auto& [id, fields] : rewrapped)
          EXPECT_EQ(fields.size(), 2u) << "a case key record split across pull batches";
      }
    }
    return r;
  }
  void Close() override { inner_->Close(); }

 private:
  std::unique_ptr<core::Transport> inner_;
  std::atomic<bool>* cut_;
  bool after_;
  bool answer_lost_ = false;
};

core::Connector Cutting(std::atomic<bool>* cut, bool after = false) {
  return [cut, after](
             std::string_view url,
             const core::TransportOptions& t) -> core::Outcome<std::unique_ptr<core::Transport>> {
    auto inner = core::ConnectWebSocket(url, t);
    if (!inner) return inner.error();
    return std::unique_ptr<core::Transport>(new CuttingTransport(std::move(*inner), cut, after));
  };
}

class RotationTest : public DeviceServerTest {
 protected:
  const core::KeyClassView& General(const std::vector<core::KeyClassView>& st) {
    for (const auto& c : st)
      if (c.key_class == teduh::ACCESS_CLASS_GENERAL) return c;
    ADD_FAILURE() << "no general class";
    return st.front();
  }
  std::uint64_t CaseKeysUnder(const core::KeyClassView& c, std::uint32_t epoch) {
    for (const auto& e : c.epochs)
      if (e.epoch == epoch) return e.case_keys;
    return 0;
  }
  core::KeyClassView Status() {
    auto st = admin_dev_->KeyStatus();
    EXPECT_TRUE(st) << (st ? "" : st.error().message);
    return st ? General(*st) : core::KeyClassView{};
  }
  std::uint32_t AckedBy(const core::KeyClassView& c, core::Device& d) {
    for (const auto& dv : c.devices)
      if (dv.device_id == d.info().device_id) return dv.acked_epoch;
    return 0;
  }
  core::RotationReport Rotate() {
    auto r = admin_dev_->RotateClassKey(teduh::ACCESS_CLASS_GENERAL);
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    return r ? *r : core::RotationReport{};
  }
};

TEST_F(RotationTest, EveryCaseKeyMovesToTheNewEpochAndADeviceOfflineThroughoutCatchesUp) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto tono = Staff("tono", v1::ROLE_SUPERVISOR);
  auto a = rina->NewCase({"chronology=Kasus A"});
  auto b = rina->NewCase({"chronology=Kasus B"});
  ASSERT_TRUE(a && b);
  Sync(*rina);
  Sync(*ani);
  Sync(*tono);
  Sync(*admin_dev_);  // the admin device holds the unit's case keys, not their content
  EXPECT_FALSE(admin_dev_->ShowCase(core::ToHex(*a)));

  auto before = Status();
  EXPECT_EQ(before.current_epoch, 1u);
  EXPECT_EQ(CaseKeysUnder(before, 1), 2u);
  EXPECT_EQ(AckedBy(before, *tono), 1u);

  // Tono is offline from here on; he writes a case meanwhile.
  auto c = tono->NewCase({"chronology=Kasus C, ditulis tanpa sinyal"});
  ASSERT_TRUE(c);

  auto r = Rotate();
  EXPECT_EQ(r.epoch, 2u);
  EXPECT_EQ(r.rewrapped, 2u);
  EXPECT_EQ(r.devices, 4u);  // admin, rina, ani and tono
  EXPECT_FALSE(r.resumed);
  auto after = Status();
  EXPECT_EQ(after.current_epoch, 2u);
  EXPECT_EQ(CaseKeysUnder(after, 1), 0u);
  EXPECT_EQ(CaseKeysUnder(after, 2), 2u);
  EXPECT_EQ(AckedBy(after, *tono), 1u);  // offline: still on the old epoch

  // Online devices take the new epoch at their next sync; nothing is re-encrypted.
  auto rs = Sync(*rina);
  EXPECT_EQ(rs.grants_added, 1u);
  EXPECT_EQ(rs.pulled, 4u);  // epoch and wrap of two case key records
  EXPECT_EQ(Value(*rina, *a, "chronology"), "Kasus A");
  auto d = rina->NewCase({"chronology=Kasus D"});
  ASSERT_TRUE(d);
  Sync(*rina);
  Sync(*ani);
  EXPECT_EQ(Value(*ani, *d, "chronology"), "Kasus D");
  EXPECT_EQ(Value(*ani, *b, "chronology"), "Kasus B");
  EXPECT_EQ(CaseKeysUnder(Status(), 2), 3u);

  // Tono catches up: his offline case is under the old epoch, and still readable by all.
  auto ts = Sync(*tono);
  EXPECT_EQ(ts.grants_added, 1u);
  EXPECT_EQ(ts.rejected, 0u);
  EXPECT_EQ(Value(*tono, *a, "chronology"), "Kasus A");
  EXPECT_EQ(Value(*tono, *d, "chronology"), "Kasus D");
  Sync(*ani);
  EXPECT_EQ(Value(*ani, *c, "chronology"), "Kasus C, ditulis tanpa sinyal");
  auto mixed = Status();
  EXPECT_EQ(CaseKeysUnder(mixed, 1), 1u);  // what still references the old epoch
  EXPECT_EQ(AckedBy(mixed, *tono), 2u);

  // The next rotation moves that one too.
  Sync(*admin_dev_);
  auto r3 = Rotate();
  EXPECT_EQ(r3.epoch, 3u);
  EXPECT_EQ(r3.rewrapped, 4u);
  auto last = Status();
  EXPECT_EQ(CaseKeysUnder(last, 1), 0u);
  EXPECT_EQ(CaseKeysUnder(last, 2), 0u);
  EXPECT_EQ(CaseKeysUnder(last, 3), 4u);
  Sync(*ani);
  EXPECT_EQ(Value(*ani, *c, "chronology"), "Kasus C, ditulis tanpa sinyal");

  auto audit = ReadAudit(data_dir_, 1000);
  ASSERT_TRUE(audit);
  int rotations = 0;
  for (const auto& e : *audit) {
    if (e.entry.kind() != teduh::audit::v1::ENTRY_KIND_ROTATE) continue;
    ++rotations;
    EXPECT_EQ(e.entry.user(), "admin");
  }
  EXPECT_EQ(rotations, 2);
  EXPECT_TRUE(VerifyAudit(data_dir_)->intact());
}

TEST_F(RotationTest, AStaleAdminDeviceIsRefusedUntilItSyncsAndOnlyAdminsRotate) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto a = rina->NewCase({"chronology=Kasus A"});
  ASSERT_TRUE(a);
  Sync(*rina);
  Sync(*admin_dev_);
  auto b = rina->NewCase({"chronology=Kasus B"});
  ASSERT_TRUE(b);
  Sync(*rina);  // the admin device has not seen B's case key

  auto stale = admin_dev_->RotateClassKey(teduh::ACCESS_CLASS_GENERAL);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, errc::rejected);
  EXPECT_NE(stale.error().message.find("teduh sync"), std::string::npos);
  EXPECT_EQ(Status().current_epoch, 1u);  // nothing applied
  auto rs = Sync(*rina);
  EXPECT_EQ(rs.grants_added, 0u);
  EXPECT_EQ(rs.pulled, 0u);
  EXPECT_EQ(Value(*rina, *b, "chronology"), "Kasus B");

  EXPECT_EQ(rina->RotateClassKey(teduh::ACCESS_CLASS_GENERAL).error().code, errc::forbidden);
  EXPECT_EQ(rina->KeyStatus().error().code, errc::forbidden);

  Sync(*admin_dev_);
  auto r = Rotate();
  EXPECT_TRUE(r.resumed);  // the same new epoch, made before the refusal
  EXPECT_EQ(r.epoch, 2u);
  EXPECT_EQ(r.rewrapped, 2u);
  Sync(*rina);
  EXPECT_EQ(Value(*rina, *a, "chronology"), "Kasus A");
  EXPECT_EQ(Value(*rina, *b, "chronology"), "Kasus B");
}

TEST_F(RotationTest, AnInterruptedRotationIsNeverHalfVisibleAndResumes) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto a = rina->NewCase({"chronology=Kasus A"});
  ASSERT_TRUE(a);
  Sync(*rina);

  // The admin device again, with a connection that breaks at the commit.
  std::atomic<bool> cut{true};
  const std::string home = dir_ + "/admin";
  admin_dev_.reset();
  core::DeviceOptions o = Options("admin");
  o.connector = Cutting(&cut);
  auto reopened = core::Device::Open(home, Pass(), o);
  ASSERT_TRUE(reopened) << reopened.error().message;
  admin_dev_ = std::move(*reopened);
  Sync(*admin_dev_);

  auto broken = admin_dev_->RotateClassKey(teduh::ACCESS_CLASS_GENERAL);
  ASSERT_FALSE(broken);
  EXPECT_EQ(broken.error().code, errc::connection_failed);
  EXPECT_EQ(Status().current_epoch, 1u);
  auto rs = Sync(*rina);
  EXPECT_EQ(rs.grants_added, 0u);
  EXPECT_EQ(rs.pulled, 0u);
  // Meanwhile new cases keep the committed epoch, never the pending one.
  auto b = rina->NewCase({"chronology=Kasus B"});
  ASSERT_TRUE(b);
  Sync(*rina);
  Sync(*admin_dev_);

  cut = false;
  auto r = Rotate();
  EXPECT_TRUE(r.resumed);
  EXPECT_EQ(r.epoch, 2u);
  EXPECT_EQ(r.rewrapped, 2u);
  auto st = Status();
  EXPECT_EQ(st.current_epoch, 2u);
  EXPECT_EQ(CaseKeysUnder(st, 2), 2u);
  Sync(*rina);
  EXPECT_EQ(Value(*rina, *a, "chronology"), "Kasus A");
  EXPECT_EQ(Value(*rina, *b, "chronology"), "Kasus B");
}

TEST_F(RotationTest, AnOldEpochIsRetiredOnlyWhenNothingUsesItAndThenDeletedEverywhere) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto tono = Staff("tono", v1::ROLE_SUPERVISOR);
  auto a = rina->NewCase({"chronology=Kasus A"});
  ASSERT_TRUE(a);
  Sync(*rina);
  Sync(*tono);
  Sync(*admin_dev_);
  ASSERT_EQ(Rotate().epoch, 2u);

  // Tono has not synced since: epoch 1 is still needed.
  auto early = Status();
  for (const auto& e : early.epochs) EXPECT_FALSE(e.retirable) << "epoch " << e.epoch;
  auto none = admin_dev_->RetireEpochs(teduh::ACCESS_CLASS_GENERAL);
  ASSERT_TRUE(none) << none.error().message;
  EXPECT_TRUE(none->empty());

  Sync(*rina);
  Sync(*tono);
  auto ready = Status();
  ASSERT_EQ(ready.epochs.size(), 2u);
  EXPECT_TRUE(ready.epochs[0].retirable);   // epoch 1
  EXPECT_FALSE(ready.epochs[1].retirable);  // the current one, never
  EXPECT_EQ(rina->RetireEpochs(teduh::ACCESS_CLASS_GENERAL).error().code, errc::forbidden);
  // The admin device checks its own copy of the case keys first: it must have
  // pulled the re-wrapped ones.
  auto stale = admin_dev_->RetireEpochs(teduh::ACCESS_CLASS_GENERAL);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, errc::rejected);
  Sync(*admin_dev_);
  auto retired = admin_dev_->RetireEpochs(teduh::ACCESS_CLASS_GENERAL);
  ASSERT_TRUE(retired) << retired.error().message;
  EXPECT_EQ(*retired, std::vector<std::uint32_t>{1});

  auto after = Status();
  ASSERT_EQ(after.epochs.size(), 1u);
  EXPECT_EQ(after.epochs[0].epoch, 2u);
  // Devices delete the key at their next sync, and still read everything.
  auto rs = Sync(*rina);
  EXPECT_EQ(rs.bad_grants, 0u);
  auto st = rina->Status();
  ASSERT_TRUE(st);
  EXPECT_EQ(std::count(st->keys.begin(), st->keys.end(), "general/1"), 0);
  EXPECT_EQ(std::count(st->keys.begin(), st->keys.end(), "general/2"), 1);
  EXPECT_EQ(Value(*rina, *a, "chronology"), "Kasus A");
  auto b = rina->NewCase({"chronology=Kasus B"});
  ASSERT_TRUE(b);
  Sync(*rina);
  Sync(*tono);
  EXPECT_EQ(Value(*tono, *b, "chronology"), "Kasus B");
  auto audit = ReadAudit(data_dir_, 1000);
  ASSERT_TRUE(audit);
  EXPECT_TRUE(std::any_of(audit->begin(), audit->end(), [](const AuditRecord& r) {
    return r.entry.kind() == teduh::audit::v1::ENTRY_KIND_RETIRE;
  }));
}

TEST_F(RotationTest, ALostCommitAnswerIsNoticedAndTheNextRotationGoesOn) {
  // Small pull batches: the rotation's one transaction is split, between records only.
  config_.port = server_->port();  // the admin device was enrolled with this address
  StopServer();
  config_.limits.max_pull_changes =
      5;  // a case key record (4 fields) fits; 5 cuts a rotation mid-record
  StartServer();
  std::atomic<bool> cut{true};
  core::DeviceOptions o = Options("rina");
  o.connector = Cutting(&cut);  // only checks the batches: rina never rotates
  auto code = CreateEnrollment(data_dir_, v1::ROLE_PENDAMPING, "rina", std::chrono::hours(1), env_);
  ASSERT_TRUE(code);
  auto made = core::Device::Enroll(dir_ + "/rina", Url(), code->code, Pass(), o);
  ASSERT_TRUE(made) << made.error().message;
  auto rina = std::move(*made);
  ASSERT_TRUE(admin_dev_->ApproveDevice(core::ToHex(rina->info().device_id)));
  Sync(*rina);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(rina->NewCase({"chronology=Kasus " + std::to_string(i)}));
  Sync(*rina);

  const std::string home = dir_ + "/admin";
  admin_dev_.reset();
  core::DeviceOptions ao = Options("admin");
  ao.connector = Cutting(&cut, /*after=*/true);
  auto reopened = core::Device::Open(home, Pass(), ao);
  ASSERT_TRUE(reopened);
  admin_dev_ = std::move(*reopened);
  Sync(*admin_dev_);
  auto lost = admin_dev_->RotateClassKey(teduh::ACCESS_CLASS_GENERAL);
  ASSERT_FALSE(lost);
  cut = false;
  EXPECT_EQ(Status().current_epoch, 2u);  // committed all the same

  auto rs = Sync(*rina);
  EXPECT_EQ(rs.pulled, 6u);
  auto extra = rina->NewCase({"chronology=Kasus baru"});
  ASSERT_TRUE(extra);
  Sync(*rina);
  Sync(*admin_dev_);
  auto next = Rotate();
  EXPECT_FALSE(next.resumed);
  EXPECT_EQ(next.epoch, 3u);
  EXPECT_EQ(next.rewrapped, 4u);
  Sync(*rina);
  EXPECT_EQ(Value(*rina, *extra, "chronology"), "Kasus baru");
}

TEST_F(RotationTest, NoNewEpochGoesToADeviceKeyNoAdminApproved) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  Sync(*admin_dev_);
  // The server (or someone who can write its store) swaps rina's box key for its own.
  auto stranger = crypto::GenerateBoxKeyPair();
  ASSERT_TRUE(stranger);
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(StorePath(data_dir_).c_str(), &db), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db, "UPDATE devices SET box_pk = ?1 WHERE device_id = ?2", -1, &st, nullptr);
    sqlite3_bind_blob(st, 1, stranger->public_key.data(),
                      static_cast<int>(stranger->public_key.size()), SQLITE_STATIC);
    const core::Id id = rina->info().device_id;
    sqlite3_bind_blob(st, 2, id.data(), static_cast<int>(id.size()), SQLITE_STATIC);
    ASSERT_EQ(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);
  }
  auto r = admin_dev_->RotateClassKey(teduh::ACCESS_CLASS_GENERAL);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::integrity);
  EXPECT_NE(r.error().message.find("no admin device approved"), std::string::npos);
  EXPECT_EQ(Status().current_epoch, 1u);
}

}  // namespace
}  // namespace teduh::server::testing
