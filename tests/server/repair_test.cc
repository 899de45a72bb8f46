// A damaged server value repaired from the devices that hold it (docs/SECURITY.md
// "Faults"): the server lists the damaged values a device may hold in its
// Welcome, the device offers its copies, and the server takes a copy only if
// it is, byte for byte, what it had stored (the damaged row kept its checksum);
// the repaired value is served again and the audit says who re-sent it.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <chrono>
#include <functional>
#include <thread>

#include "core/store_damage.h"
#include "server/device_fixture.h"
#include "teduh/core/schema.h"
#include "teduh/server/admin.h"

namespace teduh::server::testing {
namespace {

using store_damage::DamageBytesOf;
constexpr std::uint32_t kCaseNumber = 1;
constexpr std::uint32_t kRegionCode = 14;
constexpr std::uint32_t kChronology = 30;

// Over raw protocol clients (ServerTest) or real devices (DeviceServerTest).
template <class Base>
class RepairFixture : public Base {
 protected:
  // Restarts the server on its store with one byte of `needle` changed, and
  // waits for the background check that runs at start.
  void RestartWithDamage(std::string_view needle) {
    RestartWith([&](const std::string& store) { DamageBytesOf(store, needle); });
  }
  // The same for a stored value given by its record and field (a sealed
  // value's ciphertext is not known to the test): a run of its bytes is found
  // in the file and changed.
  void RestartWithDamagedValue(const Id& record_id, std::uint32_t field) {
    RestartWith([&](const std::string& store) {
      sqlite3* db = nullptr;
      ASSERT_EQ(sqlite3_open_v2(store.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
      sqlite3_stmt* s = nullptr;
      ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT value FROM fields WHERE record_id=?1 AND field=?2",
                                   -1, &s, nullptr),
                SQLITE_OK);
      sqlite3_bind_blob(s, 1, record_id.data(), static_cast<int>(record_id.size()), SQLITE_STATIC);
      sqlite3_bind_int(s, 2, static_cast<int>(field));
      ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
      const std::string value(static_cast<const char*>(sqlite3_column_blob(s, 0)),
                              static_cast<std::size_t>(sqlite3_column_bytes(s, 0)));
      sqlite3_finalize(s);
      sqlite3_close(db);
      ASSERT_GT(value.size(), 96u);
      DamageBytesOf(store, value.substr(64, 32));  // on the row's own page
    });
  }
  void RestartWith(const std::function<void(const std::string& store)>& damage) {
    this->config_.port = this->server_->port();  // the devices keep their server's address
    this->StopServer();
    damage(StorePath(this->data_dir_));
    this->config_.store_check_interval = std::chrono::hours(1);
    this->StartServer();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (this->server_->metrics().store_checks == 0 &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_GE(this->server_->metrics().store_checks, 1u);
  }
};

class RawRepairTest : public RepairFixture<ServerTest> {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    EnrollBootstrapAdmin();
  }

  v1::RepairResult Offer(TestClient& client, const v1::FieldChange& copy) {
    v1::Frame f;
    f.set_request_id(77);
    *f.mutable_repair_offer()->add_values() = copy;
    auto reply = client.Call(f);
    EXPECT_TRUE(reply && reply->has_repair_result())
        << (reply ? reply->DebugString() : std::string("no reply"));
    return reply && reply->has_repair_result() ? reply->repair_result() : v1::RepairResult{};
  }

  static std::vector<v1::FieldRef> RepairsIn(const std::optional<v1::Frame>& welcome) {
    EXPECT_TRUE(welcome && welcome->has_welcome());
    if (!welcome || !welcome->has_welcome()) return {};
    return {welcome->welcome().repair().begin(), welcome->welcome().repair().end()};
  }
};

using RepairTest = RepairFixture<DeviceServerTest>;

TEST_F(RawRepairTest, OnlyTheStoredBytesRepairAValueAndTheAuditSaysWho) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  TestDevice budi = EnrollApproved(v1::ROLE_OFFICE, "budi");
  TestDevice other = EnrollApproved(v1::ROLE_PENDAMPING, "eko");  // not assigned the case
  const Id case_id = core::NewId();
  {
    auto client = Login(siti);
    auto r = Push(*client, {OpenChange(siti, case_id, core::kCaseKind, {}, kCaseNumber,
                                       CaseText(kCaseNumber, "K-REPAIR-NUMBER-88")),
                            OpenChange(siti, case_id, core::kCaseKind, {}, kRegionCode,
                                       CaseText(kRegionCode, "1473"))});
    for (const auto& c : r.results()) ASSERT_EQ(c.status(), v1::ChangeResult::STATUS_APPLIED);
  }
  v1::FieldChange copy;  // budi's device's copy, as pulled
  std::uint64_t first_seq = 0;
  {
    auto office = Login(budi);
    for (const auto& c : PullAll(*office))
      if (c.field() == kCaseNumber) copy = c;
    ASSERT_EQ(copy.field(), kCaseNumber);
    first_seq = copy.seq();
  }
  RestartWithDamage("K-REPAIR-NUMBER-88");

  // Eko's device may not hold the case: it is not asked, and its offer is
  // not taken even with the right bytes.
  {
    auto client = TestClient::Connect(server_->port());
    auto welcome = Authenticate(*client, other);
    EXPECT_TRUE(RepairsIn(welcome).empty());
    auto r = Offer(*client, copy);
    EXPECT_EQ(r.repaired(), 0u);
    EXPECT_EQ(r.not_taken(), 1u);
  }
  auto client = TestClient::Connect(server_->port());
  auto refs = RepairsIn(Authenticate(*client, budi));
  ASSERT_EQ(refs.size(), 1u) << "budi's device holds the case: it is asked for the number";
  EXPECT_EQ(refs[0].record_id(), std::string(core::AsBytes(case_id)));
  EXPECT_EQ(refs[0].field(), kCaseNumber);

  // Anything but the stored bytes is refused: another value, or the right
  // value under another stamp.
  v1::FieldChange forged = copy;
  forged.set_value(CaseText(kCaseNumber, "K-FORGED-NUMBER-1"));
  EXPECT_EQ(Offer(*client, forged).repaired(), 0u);
  forged = copy;
  forged.mutable_stamp()->set_hlc(copy.stamp().hlc() + 1);
  EXPECT_EQ(Offer(*client, forged).repaired(), 0u);

  // Connected beside it: siti's device (assigned the case) and eko's (not).
  auto siti_live = Login(siti);
  auto eko_live = Login(other);
  auto r = Offer(*client, copy);
  EXPECT_EQ(r.repaired(), 1u);
  EXPECT_EQ(r.not_taken(), 0u);
  // Poked: the device whose pull skipped the value; not one outside the case.
  auto poke = siti_live->Receive(std::chrono::seconds(5), /*keep_pokes=*/true);
  EXPECT_TRUE(poke && poke->has_poke());
  auto none = eko_live->Receive(std::chrono::milliseconds(500), /*keep_pokes=*/true);
  EXPECT_FALSE(none && none->has_poke()) << "eko's device holds nothing of the case";
  siti_live.reset();
  eko_live.reset();
  EXPECT_EQ(Offer(*client, copy).repaired(), 0u) << "once repaired, nothing to repair";
  client.reset();

  // Served again, under a new sequence number (so devices whose pull skipped
  // it get it), and nobody is asked any more.
  {
    auto office = TestClient::Connect(server_->port());
    EXPECT_TRUE(RepairsIn(Authenticate(*office, budi)).empty());
    auto mine = Login(siti);
    bool served = false;
    for (const auto& c : PullAll(*mine)) {
      if (c.field() != kCaseNumber) continue;
      served = true;
      EXPECT_EQ(c.value(), CaseText(kCaseNumber, "K-REPAIR-NUMBER-88"));
      EXPECT_EQ(c.author(), "siti") << "still siti's value";
      EXPECT_GT(c.seq(), first_seq);
    }
    EXPECT_TRUE(served);
  }
  StopServer();
  auto audit = ReadAudit(data_dir_, 1);
  ASSERT_TRUE(audit);
  ASSERT_FALSE(audit->empty());
  const auto& last = audit->back().entry;
  EXPECT_EQ(last.kind(), teduh::audit::v1::ENTRY_KIND_REPAIR);
  EXPECT_EQ(last.user(), "budi") << "the device that re-sent it";
  ASSERT_EQ(last.changes_size(), 1);
  EXPECT_TRUE(last.changes(0).repaired());
  EXPECT_EQ(last.changes(0).record_id(), std::string(core::AsBytes(case_id)));
  auto check = CheckStoreFile(data_dir_);
  ASSERT_TRUE(check);
  EXPECT_TRUE(check->ok()) << "the store is whole again";
}

TEST_F(RepairTest, ADeviceRepairsTheServerAtItsNextSync) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto c = rina->NewCase({"region_code=REGION-REPAIR-4242"});
  ASSERT_TRUE(c) << c.error().message;
  Sync(*rina);
  Sync(*ani);
  ASSERT_EQ(Value(*ani, *c, "region_code"), "REGION-REPAIR-4242");
  RestartWithDamage("REGION-REPAIR-4242");

  // A device that never had it gets no damaged value...
  auto dewi = Staff("dewi", v1::ROLE_OFFICE);
  EXPECT_EQ(Value(*dewi, *c, "region_code"), "");
  // ...until a device that holds it syncs and its copy is taken.
  auto report = Sync(*ani);
  EXPECT_EQ(report.repairs_offered, 1u);
  EXPECT_EQ(report.repaired_on_server, 1u);
  Sync(*dewi);
  EXPECT_EQ(Value(*dewi, *c, "region_code"), "REGION-REPAIR-4242");
  report = Sync(*rina);
  EXPECT_EQ(report.repairs_offered, 0u) << "repaired: no device is asked again";
}

TEST_F(RepairTest, LargeCopiesGoInFramesWithinTheServersBound) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  std::vector<Id> cases;
  for (int i = 0; i < 4; ++i) {
    const std::string story(50'000, static_cast<char>('a' + i));
    auto c = rina->NewCase({"chronology=" + story});
    ASSERT_TRUE(c) << c.error().message;
    cases.push_back(*c);
    Sync(*rina);
  }
  Sync(*ani);
  // Four copies of about 50 KiB: more than one frame of the server's bound.
  config_.limits.max_frame_bytes = 160 * 1024;
  for (const Id& c : cases) {
    RestartWithDamagedValue(c, kChronology);
  }
  auto report = Sync(*ani);
  EXPECT_EQ(report.repairs_offered, 4u);
  EXPECT_EQ(report.repaired_on_server, 4u) << "every copy went, in frames within the bound";
  auto dewi = Staff("dewi", v1::ROLE_OFFICE);
  EXPECT_EQ(Value(*dewi, cases[3], "chronology"), std::string(50'000, 'd'));
}

}  // namespace
}  // namespace teduh::server::testing
