// The audit log (teduh/server/audit.h, docs/SECURITY.md "Audit log"): one
// hash-chained entry per push, enrollment and approval, and a check that
// names the first entry that was altered, removed or moved in the store.
#include "teduh/server/audit.h"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "server/server_fixture.h"
#include "teduh/case/v1/case.pb.h"
#include "teduh/core/schema.h"
#include "teduh/server/store.h"

namespace teduh::server::testing {
namespace {

namespace a1 = teduh::audit::v1;
using Status = v1::ChangeResult;

constexpr std::uint32_t kCaseNumber = 1;
constexpr std::uint32_t kRegionCode = 14;
constexpr std::uint32_t kChronology = 30;  // sealed

// Direct access to the store file, as someone with write access to it has.
class RawStore {
 public:
  explicit RawStore(const std::string& data_dir) {
    EXPECT_EQ(sqlite3_open(StorePath(data_dir).c_str(), &db_), SQLITE_OK);
  }
  ~RawStore() { sqlite3_close(db_); }
  RawStore(const RawStore&) = delete;
  RawStore& operator=(const RawStore&) = delete;

  void Exec(const std::string& sql) {
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK)
        << sql << ": " << (err ? err : "");
    sqlite3_free(err);
  }
  std::string Blob(const std::string& sql, std::uint64_t idx) {
    sqlite3_stmt* s = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr), SQLITE_OK) << sql;
    sqlite3_bind_int64(s, 1, static_cast<std::int64_t>(idx));
    std::string out;
    if (sqlite3_step(s) == SQLITE_ROW)
      out.assign(static_cast<const char*>(sqlite3_column_blob(s, 0)), sqlite3_column_bytes(s, 0));
    sqlite3_finalize(s);
    return out;
  }
  void SetBlob(const std::string& sql, std::uint64_t idx, const std::string& value) {
    sqlite3_stmt* s = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr), SQLITE_OK) << sql;
    sqlite3_bind_blob(s, 1, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, static_cast<std::int64_t>(idx));
    EXPECT_EQ(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
  }
  std::string Meta(const std::string& key) {
    sqlite3_stmt* s = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_, "SELECT value FROM meta WHERE key = ?1", -1, &s, nullptr),
              SQLITE_OK);
    sqlite3_bind_text(s, 1, key.c_str(), -1, SQLITE_TRANSIENT);
    std::string out;
    if (sqlite3_step(s) == SQLITE_ROW)
      out.assign(static_cast<const char*>(sqlite3_column_blob(s, 0)), sqlite3_column_bytes(s, 0));
    sqlite3_finalize(s);
    return out;
  }
  void SetMeta(const std::string& key, const std::string& value) {
    sqlite3_stmt* s = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_, "UPDATE meta SET value = ?1 WHERE key = ?2", -1, &s, nullptr),
              SQLITE_OK);
    sqlite3_bind_blob(s, 1, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, key.c_str(), -1, SQLITE_TRANSIENT);
    EXPECT_EQ(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
  }
  // Rows of `table` whose `column` contains `needle` (bytes).
  std::int64_t CountContaining(const std::string& table, const std::string& column,
                               const std::string& needle) {
    sqlite3_stmt* s = nullptr;
    const std::string sql =
        "SELECT count(*) FROM " + table + " WHERE instr(" + column + ", ?1) > 0";
    EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr), SQLITE_OK) << sql;
    sqlite3_bind_blob(s, 1, needle.data(), static_cast<int>(needle.size()), SQLITE_TRANSIENT);
    std::int64_t n = -1;
    if (sqlite3_step(s) == SQLITE_ROW) n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return n;
  }

 private:
  sqlite3* db_ = nullptr;
};

class AuditTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    EnrollBootstrapAdmin();                               // entry 1: enroll
    siti_ = EnrollApproved(v1::ROLE_PENDAMPING, "siti");  // 2: enroll, 3: approve
  }

  // A new case (two open fields) pushed by siti: one entry.
  Id PushNewCase(TestClient& client, const std::string& number) {
    Id id = core::NewId();
    auto r = Push(
        client,
        {OpenChange(siti_, id, core::kCaseKind, {}, kCaseNumber, CaseText(kCaseNumber, number)),
         OpenChange(siti_, id, core::kCaseKind, {}, kRegionCode, CaseText(kRegionCode, "1473"))});
    for (const auto& c : r.results()) EXPECT_EQ(c.status(), Status::STATUS_APPLIED) << c.reason();
    return id;
  }

  // Entries 1–3 from SetUp and three pushes (4–6); the server is stopped.
  void WriteSixEntriesAndStop() {
    auto client = Login(siti_);
    for (const char* number : {"K-1", "K-2", "K-3"}) PushNewCase(*client, number);
    client.reset();
    StopServer();
    auto check = Verify();
    ASSERT_TRUE(check.intact()) << check.detail;
    ASSERT_EQ(check.entries, 6u);
  }

  AuditCheck Verify(const std::optional<AuditHash>& known_head = std::nullopt) {
    auto check = VerifyAudit(data_dir_, known_head);
    EXPECT_TRUE(check) << check.error().message();
    return check ? *check : AuditCheck{};
  }

  TestDevice siti_;
};

TEST_F(AuditTest, RecordsEveryEnrollmentApprovalAndPush) {
  auto client = Login(siti_);
  Id case_id = PushNewCase(*client, "K-1");
  auto rejected = Push(
      *client, {OpenChange(siti_, case_id, core::kCaseKind, {}, kChronology, "not ciphertext")});
  ASSERT_EQ(rejected.results(0).status(), Status::STATUS_REJECTED);

  auto records = ReadAudit(data_dir_, 100);
  ASSERT_TRUE(records) << records.error().message();
  ASSERT_EQ(records->size(), 5u);
  for (std::size_t i = 0; i < records->size(); ++i) {
    EXPECT_EQ((*records)[i].index, i + 1);
    EXPECT_EQ((*records)[i].entry.index(), i + 1);
  }
  const a1::AuditEntry& admin = (*records)[0].entry;
  EXPECT_EQ(admin.kind(), a1::ENTRY_KIND_ENROLL);
  EXPECT_TRUE(admin.bootstrap());
  EXPECT_EQ(admin.device_id(), core::AsBytes(admin_.device_id));
  const a1::AuditEntry& enroll = (*records)[1].entry;
  EXPECT_EQ(enroll.kind(), a1::ENTRY_KIND_ENROLL);
  EXPECT_EQ(enroll.user(), "siti");
  EXPECT_EQ(enroll.state(), v1::DEVICE_STATE_PENDING);
  const a1::AuditEntry& approve = (*records)[2].entry;
  EXPECT_EQ(approve.kind(), a1::ENTRY_KIND_APPROVE);
  EXPECT_EQ(approve.device_id(), core::AsBytes(admin_.device_id));
  EXPECT_EQ(approve.subject_device_id(), core::AsBytes(siti_.device_id));
  EXPECT_EQ(approve.grants_size(), 1);

  const a1::AuditEntry& push = (*records)[3].entry;
  EXPECT_EQ(push.kind(), a1::ENTRY_KIND_PUSH);
  EXPECT_EQ(push.device_id(), core::AsBytes(siti_.device_id));
  EXPECT_EQ(push.user(), "siti");
  ASSERT_EQ(push.changes_size(), 2);
  EXPECT_EQ(push.changes(0).record_id(), core::AsBytes(case_id));
  EXPECT_EQ(push.changes(0).field(), kCaseNumber);
  EXPECT_EQ(push.changes(0).status(), Status::STATUS_APPLIED);
  EXPECT_EQ(push.changes(1).field(), kRegionCode);
  EXPECT_EQ(push.changes(0).stamp().device_id(), core::AsBytes(siti_.device_id));
  EXPECT_NE(push.changes(0).stamp().hlc(), 0u);

  const a1::AuditEntry& refused = (*records)[4].entry;
  ASSERT_EQ(refused.changes_size(), 1);
  EXPECT_EQ(refused.changes(0).status(), Status::STATUS_REJECTED);
  EXPECT_EQ(refused.changes(0).reason(), rejected.results(0).reason());
}

// Merge outcomes and resolutions are in the log: a change that lost a MAX
// merge with the stamp that stayed, a REVIEW edit with the Conflict record
// the server opened for it, and the office's resolution naming that record.
TEST_F(AuditTest, RecordsMergeOutcomesConflictsAndTheirResolution) {
  namespace cw = teduh::casework::v1;
  TestDevice office = EnrollApproved(v1::ROLE_OFFICE, "ani");  // entries 4, 5
  auto siti = Login(siti_);
  auto ani = Login(office);
  const Id case_id = core::NewId();
  auto risk = [](cw::RiskLevel level) {
    cw::Case c;
    c.set_risk_level(level);
    return c.SerializeAsString();
  };
  constexpr std::uint32_t kRisk = cw::Case::kRiskLevelFieldNumber;
  auto created = Push(
      *siti, {OpenChange(siti_, case_id, core::kCaseKind, {}, kRisk, risk(cw::RISK_LEVEL_MEDIUM)),
              SealedChange(siti_, case_id, core::kCaseKind, {}, kChronology)});
  ASSERT_EQ(created.results_size(), 2);
  // Both edit both fields over what siti created: siti raises the risk,
  // Ani lowers it; both rewrite the chronology.
  auto edit = [&](const TestDevice& who, cw::RiskLevel level) {
    auto r = OpenChange(who, case_id, core::kCaseKind, {}, kRisk, risk(level));
    *r.mutable_base() = created.results(0).stamp();
    auto c = SealedChange(who, case_id, core::kCaseKind, {}, kChronology);
    *c.mutable_base() = created.results(1).stamp();
    return std::vector<v1::FieldChange>{r, c};
  };
  auto first = Push(*siti, edit(siti_, cw::RISK_LEVEL_HIGH));
  auto second = Push(*ani, edit(office, cw::RISK_LEVEL_LOW));
  ASSERT_EQ(second.results(0).status(), Status::STATUS_MERGED);
  ASSERT_EQ(second.results(1).status(), Status::STATUS_CONFLICT);
  const std::string conflict_id = second.results(1).conflict_id();
  ASSERT_EQ(conflict_id.size(), 16u);
  // Ani resolves it: the chronology again, naming the conflict.
  auto resolution = SealedChange(office, case_id, core::kCaseKind, {}, kChronology);
  *resolution.mutable_base() = second.results(1).current();
  resolution.set_resolves(conflict_id);
  auto resolved = Push(*ani, {resolution});
  ASSERT_EQ(resolved.results(0).status(), Status::STATUS_APPLIED) << resolved.results(0).detail();

  auto records = ReadAudit(data_dir_, 100);
  ASSERT_TRUE(records) << records.error().message();
  ASSERT_EQ(records->size(), 9u);
  const a1::AuditEntry& merged = (*records)[7].entry;
  EXPECT_EQ(merged.user(), "ani");
  ASSERT_EQ(merged.changes_size(), 2);
  const a1::Change& lost = merged.changes(0);
  EXPECT_EQ(lost.status(), Status::STATUS_MERGED);
  // The value that stayed is siti's raise: its stamp, with her device.
  EXPECT_EQ(lost.current().hlc(), first.results(0).stamp().hlc());
  EXPECT_EQ(lost.current().device_id(), core::AsBytes(siti_.device_id));
  EXPECT_EQ(lost.base().hlc(), created.results(0).stamp().hlc());
  const a1::Change& queued = merged.changes(1);
  EXPECT_EQ(queued.status(), Status::STATUS_CONFLICT);
  EXPECT_EQ(queued.conflict_id(), conflict_id);
  EXPECT_TRUE(queued.sealed());
  const a1::AuditEntry& closing = (*records)[8].entry;
  ASSERT_EQ(closing.changes_size(), 1);
  EXPECT_EQ(closing.changes(0).resolves(), conflict_id);
  EXPECT_EQ(closing.changes(0).status(), Status::STATUS_APPLIED);
  EXPECT_TRUE(closing.changes(0).conflict_id().empty());  // a resolution opens no conflict
  StopServer();
  EXPECT_TRUE(Verify().intact());
}

TEST_F(AuditTest, IntactChainVerifiesWhileTheServerRuns) {
  auto client = Login(siti_);
  PushNewCase(*client, "K-1");
  auto check = Verify();
  EXPECT_TRUE(check.intact()) << check.detail;
  EXPECT_EQ(check.entries, 4u);
  EXPECT_NE(check.head, AuditHash{});
}

TEST_F(AuditTest, ChecksStayIntactWhileTheServerKeepsWriting) {
  auto client = Login(siti_);
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (int i = 0; i < 40; ++i) PushNewCase(*client, "K-" + std::to_string(i));
    done = true;
  });
  int checks = 0;
  while (!done || checks == 0) {
    auto check = Verify();
    EXPECT_TRUE(check.intact()) << check.detail;
    ++checks;
  }
  writer.join();
  EXPECT_EQ(Verify().entries, 43u);
}

TEST_F(AuditTest, ChainContinuesAcrossRestarts) {
  auto client = Login(siti_);
  PushNewCase(*client, "K-1");
  client.reset();
  StopServer();
  StartServer();
  client = Login(siti_);
  PushNewCase(*client, "K-2");
  auto check = Verify();
  EXPECT_TRUE(check.intact()) << check.detail;
  EXPECT_EQ(check.entries, 5u);
}

TEST_F(AuditTest, AlteredEntryIsNamed) {
  WriteSixEntriesAndStop();
  {
    RawStore raw(data_dir_);
    std::string body = raw.Blob("SELECT body FROM audit WHERE idx = ?1", 5);
    ASSERT_FALSE(body.empty());
    body.back() ^= 0x01;
    raw.SetBlob("UPDATE audit SET body = ?1 WHERE idx = ?2", 5, body);
  }
  auto check = Verify();
  EXPECT_FALSE(check.intact());
  EXPECT_EQ(check.problem, AuditProblem::kAltered);
  EXPECT_EQ(check.bad_index, 5u);
  EXPECT_EQ(check.entries, 4u);
  EXPECT_NE(check.detail.find("entry 5"), std::string::npos) << check.detail;
}

TEST_F(AuditTest, RehashedEntryNoLongerChainsToTheNext) {
  WriteSixEntriesAndStop();
  {
    RawStore raw(data_dir_);
    std::string body = raw.Blob("SELECT body FROM audit WHERE idx = ?1", 4);
    const std::string prev = raw.Blob("SELECT prev_hash FROM audit WHERE idx = ?1", 4);
    body.back() ^= 0x01;
    const AuditHash hash = AuditChainHash(prev, 4, body);
    raw.SetBlob("UPDATE audit SET body = ?1 WHERE idx = ?2", 4, body);
    raw.SetBlob("UPDATE audit SET hash = ?1 WHERE idx = ?2", 4,
                std::string(reinterpret_cast<const char*>(hash.data()), hash.size()));
  }
  auto check = Verify();
  EXPECT_EQ(check.problem, AuditProblem::kBrokenLink);
  EXPECT_EQ(check.bad_index, 5u);
}

TEST_F(AuditTest, DeletedEntryIsNamed) {
  WriteSixEntriesAndStop();
  RawStore(data_dir_).Exec("DELETE FROM audit WHERE idx = 3");
  auto check = Verify();
  EXPECT_EQ(check.problem, AuditProblem::kMissing);
  EXPECT_EQ(check.bad_index, 3u);
  EXPECT_NE(check.detail.find("entry 3 is missing"), std::string::npos) << check.detail;
}

TEST_F(AuditTest, DeletedFirstEntryIsNamed) {
  WriteSixEntriesAndStop();
  RawStore(data_dir_).Exec("DELETE FROM audit WHERE idx = 1");
  auto check = Verify();
  EXPECT_EQ(check.problem, AuditProblem::kMissing);
  EXPECT_EQ(check.bad_index, 1u);
}

TEST_F(AuditTest, ReorderedEntriesAreNamed) {
  WriteSixEntriesAndStop();
  RawStore(data_dir_).Exec(
      "UPDATE audit SET idx = -2 WHERE idx = 2; UPDATE audit SET idx = 2 WHERE idx = 3; "
      "UPDATE audit SET idx = 3 WHERE idx = -2;");
  auto check = Verify();
  EXPECT_EQ(check.problem, AuditProblem::kOutOfOrder);
  EXPECT_EQ(check.bad_index, 2u);
}

TEST_F(AuditTest, RemovedTailIsReportedAsTruncated) {
  WriteSixEntriesAndStop();
  RawStore(data_dir_).Exec("DELETE FROM audit WHERE idx = 6");
  auto check = Verify();
  EXPECT_EQ(check.problem, AuditProblem::kTruncated);
  EXPECT_EQ(check.bad_index, 6u);
  EXPECT_EQ(check.entries, 5u);
}

TEST_F(AuditTest, ReplacedLastEntryDoesNotMatchTheRecordedHead) {
  WriteSixEntriesAndStop();
  {
    // A forged entry 6 that chains to entry 5; the recorded head is left alone.
    RawStore raw(data_dir_);
    std::string body = raw.Blob("SELECT body FROM audit WHERE idx = ?1", 6);
    const std::string prev = raw.Blob("SELECT prev_hash FROM audit WHERE idx = ?1", 6);
    body.back() ^= 0x01;
    const AuditHash hash = AuditChainHash(prev, 6, body);
    raw.SetBlob("UPDATE audit SET body = ?1 WHERE idx = ?2", 6, body);
    raw.SetBlob("UPDATE audit SET hash = ?1 WHERE idx = ?2", 6,
                std::string(reinterpret_cast<const char*>(hash.data()), hash.size()));
  }
  auto check = Verify();
  EXPECT_EQ(check.problem, AuditProblem::kHeadMismatch);
  EXPECT_EQ(check.bad_index, 6u);
}

TEST_F(AuditTest, RewrittenTailIsCaughtOnlyByARecordedHead) {
  WriteSixEntriesAndStop();
  const AuditHash recorded = Verify().head;
  {
    // Someone with write access removes the last entry and rewrites the head.
    RawStore raw(data_dir_);
    raw.Exec("DELETE FROM audit WHERE idx = 6");
    raw.SetMeta("audit_last", "5");
    raw.SetMeta("audit_head", raw.Blob("SELECT hash FROM audit WHERE idx = ?1", 5));
  }
  EXPECT_TRUE(Verify().intact());
  auto check = Verify(recorded);
  EXPECT_EQ(check.problem, AuditProblem::kKnownHeadNotFound);
}

TEST_F(AuditTest, OlderRecordedHeadStillInTheChainPasses) {
  auto client = Login(siti_);
  PushNewCase(*client, "K-1");
  const AuditHash recorded = Verify().head;
  PushNewCase(*client, "K-2");
  auto check = Verify(recorded);
  EXPECT_TRUE(check.intact()) << check.detail;
  EXPECT_EQ(check.entries, 5u);
}

TEST_F(AuditTest, EntriesHoldNoValueOpenOrSealed) {
  auto client = Login(siti_);
  const std::string open_marker = "Kelurahan-Sukajadi-7734";
  const std::string sealed_marker = "SEALED-CIPHERTEXT-MARKER-0123456789-abcdefghij";
  Id case_id = core::NewId();
  v1::FieldChange open = OpenChange(siti_, case_id, core::kCaseKind, {}, kRegionCode,
                                    CaseText(kRegionCode, open_marker));
  v1::FieldChange sealed = OpenChange(siti_, case_id, core::kCaseKind, {}, kChronology,
                                      sealed_marker + std::string(40, 'c'));
  sealed.set_sealed(true);
  sealed.set_key_class(teduh::ACCESS_CLASS_GENERAL);
  sealed.set_key_version(1);
  auto r = Push(*client, {open, sealed});
  ASSERT_EQ(r.results(0).status(), Status::STATUS_APPLIED) << r.results(0).reason();
  ASSERT_EQ(r.results(1).status(), Status::STATUS_APPLIED) << r.results(1).reason();
  client.reset();
  StopServer();

  RawStore raw(data_dir_);
  // Both values are in the store, and in no audit entry.
  EXPECT_EQ(raw.CountContaining("fields", "value", open_marker), 1);
  EXPECT_EQ(raw.CountContaining("fields", "value", sealed_marker), 1);
  EXPECT_EQ(raw.CountContaining("audit", "body", open_marker), 0);
  EXPECT_EQ(raw.CountContaining("audit", "body", sealed_marker), 0);
  auto records = ReadAudit(data_dir_, 1);
  ASSERT_TRUE(records);
  ASSERT_EQ(records->size(), 1u);
  const a1::Change& c = records->back().entry.changes(1);
  EXPECT_TRUE(c.sealed());
  EXPECT_EQ(c.key_class(), teduh::ACCESS_CLASS_GENERAL);
  EXPECT_EQ(c.field(), kChronology);
}

TEST_F(AuditTest, StoreWithoutAuditLogIsMigratedAndThenAudited) {
  StopServer();
  {
    // What a store made before the audit log looks like.
    RawStore raw(data_dir_);
    raw.Exec(
        "DROP TABLE audit; DELETE FROM meta WHERE key IN ('audit_last', 'audit_head'); "
        "UPDATE meta SET value = '1' WHERE key = 'schema_version';");
  }
  auto old = Verify();  // read-only: the store stays as it is
  EXPECT_TRUE(old.intact()) << old.detail;
  EXPECT_EQ(old.entries, 0u);

  StartServer();
  auto client = Login(siti_);
  PushNewCase(*client, "K-1");
  auto check = Verify();
  EXPECT_TRUE(check.intact()) << check.detail;
  EXPECT_EQ(check.entries, 1u);
  EXPECT_EQ(RawStore(data_dir_).Meta("schema_version"), std::to_string(kStoreSchemaVersion));
}

TEST_F(AuditTest, StoreWithoutRevocationsIsMigratedAndThenRevokes) {
  StopServer();
  {
    // What a version 2 store (before revocations) looks like.
    RawStore raw(data_dir_);
    raw.Exec("DROP TABLE revocations; UPDATE meta SET value = '2' WHERE key = 'schema_version';");
  }
  auto none = ListRevocations(data_dir_);  // read-only: the store stays as it is
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
  EXPECT_EQ(RawStore(data_dir_).Meta("schema_version"), "2");

  StartServer();
  EXPECT_EQ(RawStore(data_dir_).Meta("schema_version"), std::to_string(kStoreSchemaVersion));
  auto revoked = RevokeDeviceOnServer(data_dir_, core::ToHex(siti_.device_id), env_);
  ASSERT_TRUE(revoked) << revoked.error().message();
  auto rows = ListRevocations(data_dir_);
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].device_id, siti_.device_id);
  auto c = TestClient::Connect(server_->port());
  auto reply = Authenticate(*c, siti_);
  ASSERT_TRUE(reply && reply->has_error());
  EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_DEVICE_REVOKED);
  EXPECT_TRUE(Verify().intact());
}

}  // namespace
}  // namespace teduh::server::testing

namespace teduh::server::testing {
namespace {

TEST_F(AuditTest, StoreBeforeRekeyingIsMigratedWithTheCasesEachDeviceHeld) {
  {
    auto client = Login(siti_);
    PushNewCase(*client, "K-1");
    PullAll(*client);  // the server records that siti's device holds the case
  }
  StopServer();
  {
    // What a version 3 store (before re-keying) looks like.
    RawStore raw(data_dir_);
    raw.Exec(
        "DROP TABLE held_cases; DROP TABLE rekey_targets; DROP TABLE key_drops; "
        "UPDATE meta SET value = '3' WHERE key = 'schema_version';");
  }
  auto revocations = ListRevocations(data_dir_);  // read-only: the store stays as it is
  ASSERT_TRUE(revocations);
  EXPECT_EQ(RawStore(data_dir_).Meta("schema_version"), "3");

  StartServer();
  RawStore raw(data_dir_);
  EXPECT_EQ(raw.Meta("schema_version"), std::to_string(kStoreSchemaVersion));
  EXPECT_EQ(raw.Blob("SELECT device_id FROM held_cases WHERE ?1 = 1", 1),
            std::string(core::AsBytes(siti_.device_id)));
  EXPECT_TRUE(Verify().intact());
}

}  // namespace
}  // namespace teduh::server::testing
