// Crypto-shredding (ARCHITECTURE §4, PROTOCOL §8c): a supervisor asks, the
// admin device's signed order carries it out; the server purges the case so
// that its files hold no ciphertext of it; every device deletes the case at
// its next sync; edits made offline meanwhile are refused; an order the unit
// did not sign deletes nothing.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "server/device_fixture.h"
#include "teduh/core/schema.h"
#include "teduh/core/sealing.h"
#include "teduh/server/store.h"

namespace teduh::server::testing {
namespace {

namespace fs = std::filesystem;
using core::errc;

class ShredTest : public DeviceServerTest {
 protected:
  // The sealed ciphertexts of a case as the server stores them.
  std::vector<std::string> SealedValuesOf(const core::Id& case_id) {
    std::vector<std::string> out;
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2(StorePath(data_dir_).c_str(), &db, SQLITE_OPEN_READONLY, nullptr),
              SQLITE_OK);
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(db,
                       "SELECT f.value FROM fields f JOIN records r ON r.record_id = f.record_id "
                       "WHERE r.case_id = ?1 AND f.sealed = 1",
                       -1, &s, nullptr);
    sqlite3_bind_blob(s, 1, case_id.data(), static_cast<int>(case_id.size()), SQLITE_STATIC);
    while (sqlite3_step(s) == SQLITE_ROW) {
      out.emplace_back(static_cast<const char*>(sqlite3_column_blob(s, 0)),
                       static_cast<std::size_t>(sqlite3_column_bytes(s, 0)));
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return out;
  }

  // Every byte of the server's store files.
  std::string StoreBytes() {
    std::string all;
    for (const auto& entry : fs::directory_iterator(data_dir_)) {
      std::ifstream in(entry.path(), std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      all += ss.str();
    }
    return all;
  }
};

TEST_F(ShredTest, ASupervisorAsksTheAdminDeviceShredsAndEveryDeviceDropsTheCase) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto tono = Staff("tono", v1::ROLE_SUPERVISOR);
  auto gone = rina->NewCase({"chronology=Korban dipukul; alamat rumah aman di Jalan Cempaka"});
  auto kept = rina->NewCase({"chronology=Kasus lain"});
  ASSERT_TRUE(gone && kept);
  ASSERT_TRUE(rina->AddPerson(core::ToHex(*gone), "victim", {"name=Siti Rahmawati"}));
  Sync(*rina);
  Sync(*ani);
  Sync(*tono);
  Sync(*admin_dev_);
  const auto ciphertexts = SealedValuesOf(*gone);
  ASSERT_GE(ciphertexts.size(), 2u);
  const std::string id = core::ToHex(*gone);

  // Only a supervisor asks; the admin device only carries out a request.
  EXPECT_EQ(ani->ShredCase(id).error().code, errc::forbidden);
  EXPECT_EQ(rina->ShredCase(id).error().code, errc::forbidden);
  auto early = admin_dev_->ShredCase(id.substr(0, 8));
  ASSERT_FALSE(early);
  EXPECT_NE(early.error().message.find("supervisor"), std::string::npos);

  // Rina edits the case offline meanwhile.
  ASSERT_TRUE(rina->SetCaseFields(id, {"route=mediasi"}));

  auto asked = tono->ShredCase(id.substr(0, 8));
  ASSERT_TRUE(asked) << asked.error().message;
  EXPECT_EQ(asked->state, "requested");
  auto done = admin_dev_->ShredCase(id.substr(0, 8));
  ASSERT_TRUE(done) << done.error().message;
  EXPECT_EQ(done->state, "shredded");
  EXPECT_EQ(done->requested_by, "tono");
  EXPECT_GT(done->purged_values, 0u);

  // Devices drop it at their next sync; the other case stays.
  auto as = Sync(*ani);
  EXPECT_EQ(as.shredded, 1u);
  EXPECT_EQ(ani->ShowCase(id).error().code, errc::not_found);
  EXPECT_EQ(Value(*ani, *kept, "chronology"), "Kasus lain");
  auto rs = rina->Sync();
  ASSERT_TRUE(rs) << rs.error().message;
  EXPECT_EQ(rs->rejected, 1u);  // her offline edit: the case is gone
  EXPECT_EQ(rs->shredded, 1u);
  EXPECT_EQ(rina->ShowCase(id).error().code, errc::not_found);
  auto listed = rina->ListCases();
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->size(), 1u);
  Sync(*tono);
  EXPECT_EQ(tono->ShowCase(id).error().code, errc::not_found);

  // Nothing of it in the server's files.
  StopServer();
  const std::string bytes = StoreBytes();
  for (const auto& c : ciphertexts)
    EXPECT_EQ(bytes.find(c.substr(24, 32)), std::string::npos) << "ciphertext left on the server";
  StartServer();
  auto audit = ReadAudit(data_dir_, 1000);
  ASSERT_TRUE(audit);
  int requests = 0, shreds = 0;
  for (const auto& r : *audit) {
    if (r.entry.kind() == teduh::audit::v1::ENTRY_KIND_SHRED_REQUEST) ++requests;
    if (r.entry.kind() == teduh::audit::v1::ENTRY_KIND_SHRED) ++shreds;
  }
  EXPECT_EQ(requests, 1);
  EXPECT_EQ(shreds, 1);
  EXPECT_TRUE(VerifyAudit(data_dir_)->intact());
}

TEST_F(ShredTest, AShredOrderTheUnitDidNotSignDeletesNothing) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto c = rina->NewCase({"chronology=Kasus"});
  ASSERT_TRUE(c);
  Sync(*rina);
  // Someone with write access to the server's store plants a shred order
  // signed by another key.
  auto forger = crypto::GenerateSignKeyPair();
  ASSERT_TRUE(forger);
  {
    auto store = OpenSqliteStore(StorePath(data_dir_), StoreOptions{});
    ASSERT_TRUE(store);
    teduh::keys::v1::ShredOrder o;
    o.set_case_id(std::string(core::AsBytes(*c)));
    o.set_unit_id((*store)->LoadUnit()->unit_id);
    o.set_issued_ms(env_.NowMs());
    o.set_admin_device_id(std::string(core::AsBytes(admin_dev_->info().device_id)));
    auto sig = crypto::Sign(forger->secret_key,
                            core::AsSpan(core::ShredOrderMessage(
                                o.case_id(), o.unit_id(), o.issued_ms(), o.admin_device_id())));
    ASSERT_TRUE(sig);
    o.set_signature(std::string(reinterpret_cast<const char*>(sig->data()), sig->size()));
    ASSERT_FALSE((*store)->Begin());
    ASSERT_TRUE((*store)->PurgeCase(*c, (*store)->AllocateSeq(), o.SerializeAsString()));
    ASSERT_FALSE((*store)->Commit());
  }
  auto rs = Sync(*rina);
  EXPECT_EQ(rs.shredded, 0u);
  EXPECT_EQ(rs.bad_grants, 1u);
  EXPECT_EQ(Value(*rina, *c, "chronology"), "Kasus");
}

// The server's side, with raw frames: shred orders are bounded per batch
// like changes, and none is skipped or repeated.
using ShredPullTest = ServerTest;

TEST_F(ShredPullTest, MoreShredOrdersThanABatchHoldsArriveOverSeveralBatches) {
  EnrollBootstrapAdmin();
  TestDevice ani = EnrollApproved(v1::ROLE_OFFICE, "ani");
  auto client = Login(ani);
  std::vector<Id> cases;
  for (int i = 0; i < 9; ++i) {
    cases.push_back(core::NewId());
    Push(*client, {OpenChange(ani, cases.back(), core::kCaseKind, {}, 1,
                              CaseText(1, "K-" + std::to_string(i)))});
  }
  {  // shred orders for 7 of them, straight into the store (their signatures do not matter here)
    auto store = OpenSqliteStore(StorePath(data_dir_), StoreOptions{});
    ASSERT_TRUE(store);
    ASSERT_FALSE((*store)->Begin());
    for (int i = 0; i < 7; ++i) {
      teduh::keys::v1::ShredOrder o;
      o.set_case_id(std::string(core::AsBytes(cases[i])));
      ASSERT_TRUE((*store)->PurgeCase(cases[i], (*store)->AllocateSeq(), o.SerializeAsString()));
    }
    ASSERT_FALSE((*store)->Commit());
  }
  std::set<std::string> shredded;
  std::size_t changes = 0, frames = 0;
  std::uint64_t after = 0;
  for (int i = 0; i < 20; ++i) {
    auto reply = PullFrame(*client, after, 3);
    ASSERT_TRUE(reply && reply->has_changes());
    ++frames;
    const auto& c = reply->changes();
    EXPECT_LE(c.shredded_size(), 3);
    for (const auto& o : c.shredded()) EXPECT_TRUE(shredded.insert(o.case_id()).second);
    changes += static_cast<std::size_t>(c.changes_size());
    EXPECT_GE(c.last_seq(), after);
    after = c.last_seq();
    if (!c.has_more()) break;
  }
  EXPECT_EQ(shredded.size(), 7u);
  EXPECT_EQ(changes, 2u);  // the two cases left
  EXPECT_GE(frames, 3u);
}

}  // namespace
}  // namespace teduh::server::testing
