// Damage to the server's store (docs/SECURITY.md "Faults"): a byte changed in
// the file under a value, a history entry or a record row is found by the
// row's checksum and never served; damage to the file's structure is found by
// SQLite's checks at open and by `store check`; a device's next change of a
// damaged field replaces it, and the audit says so.
#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "core/store_damage.h"
#include "server/server_fixture.h"
#include "teduh/core/frame_codec.h"
#include "teduh/core/schema.h"
#include "teduh/server/admin.h"
#include "teduh/server/store.h"

namespace teduh::server::testing {
namespace {

using store_damage::DamageBytesOf;
using store_damage::DamagePageOf;

constexpr std::uint32_t kCaseNumber = 1;
constexpr std::uint32_t kRegionCode = 14;
using Status = v1::ChangeResult;

// A case's kind and id as its record row holds them (the audit names the
// kind too, never next to the case's id).
std::string RecordRowBytes(const Id& case_id) {
  return "teduh.casework.v1.Case" + std::string(core::AsBytes(case_id));
}

class StoreDamageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(crypto::Init());
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "teduh-damage-test-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    ASSERT_TRUE(InitStore(dir_ + "/data", "UPTD PPA Test", core::DefaultEnv()));
    path_ = StorePath(dir_ + "/data");
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  std::unique_ptr<Store> Open() {
    StoreOptions options;
    options.on_damage = [this](const DamagedRow& row) { damage_.push_back(row); };
    auto s = OpenSqliteStore(path_, options);
    EXPECT_TRUE(s) << s.error().message();
    return s ? std::move(*s) : nullptr;
  }

  FieldRow Value(const Id& record, std::uint32_t field, std::string_view value, Store& s) {
    FieldRow f;
    f.record_id = record;
    f.field = field;
    f.value = value;
    f.author = "siti";
    f.seq = s.AllocateSeq();
    f.txn = s.AllocateTxn();
    return f;
  }

  // A case with fields 1 and 2 and one history entry of field 3.
  void WriteCase(const Id& id, std::string_view v1, std::string_view v2, std::string_view old3) {
    auto s = Open();
    ASSERT_TRUE(s);
    ASSERT_FALSE(s->Begin());
    RecordRow r;
    r.record_id = id;
    r.kind = "teduh.casework.v1.Case";
    r.case_id = id;
    r.created_by_user = "siti";
    ASSERT_FALSE(s->InsertRecord(r));
    ASSERT_FALSE(s->PutField(Value(id, 1, v1, *s)));
    ASSERT_FALSE(s->PutField(Value(id, 2, v2, *s)));
    const FieldRow old = Value(id, 3, old3, *s);
    ASSERT_FALSE(s->AppendHistory(old, old.seq + 1, "overwritten"));
    ASSERT_FALSE(s->PutField(Value(id, 3, "current three", *s)));
    ASSERT_FALSE(s->Commit());
  }

  std::vector<std::string> Pulled(Store& s) {
    std::vector<std::string> values;
    PullScope unit;
    unit.kind = PullScope::Kind::kUnit;
    EXPECT_FALSE(s.ScanChanges(unit, 0, 100, [&](const ChangeView& v) {
      values.emplace_back(v.field->value);
      return true;
    }));
    return values;
  }

  std::string dir_, path_;
  std::vector<DamagedRow> damage_;
};

TEST_F(StoreDamageTest, IntactStoreChecksEveryRow) {
  const Id id = core::NewId();
  WriteCase(id, "K-INTACT-0001", "1473", "old");
  auto check = CheckStoreFile(dir_ + "/data");
  ASSERT_TRUE(check) << check.error().message();
  EXPECT_TRUE(check->ok());
  EXPECT_TRUE(check->rows_checked);
  EXPECT_EQ(check->records, 1u);
  EXPECT_EQ(check->values, 3u);
  EXPECT_EQ(check->history, 1u);
}

TEST_F(StoreDamageTest, DamagedValueIsNeverReturnedAndTheNextWriteReplacesIt) {
  const Id id = core::NewId();
  WriteCase(id, "K-DAMAGE-ME-0123456789", "1473", "old");
  DamageBytesOf(path_, "K-DAMAGE-ME-0123456789");

  auto s = Open();
  ASSERT_TRUE(s);
  FieldRow row;
  auto found = s->FindField(id, 1, &row);
  ASSERT_TRUE(found);
  EXPECT_FALSE(*found) << "a damaged value is as good as none";
  EXPECT_TRUE(row.damaged);
  ASSERT_EQ(damage_.size(), 1u);
  EXPECT_STREQ(damage_[0].table, "fields");
  EXPECT_EQ(damage_[0].record_id, id);
  EXPECT_EQ(damage_[0].field, 1u);
  // The intact fields of the record are served; the damaged one is not,
  // neither as it is stored nor in any other form.
  EXPECT_EQ(Pulled(*s), (std::vector<std::string>{"1473", "current three"}));
  bool history_has_it = false;
  ASSERT_FALSE(s->ScanFieldHistory(
      id, 1, 1, [&](const FieldRow&, std::string_view) { history_has_it = true; }));
  EXPECT_FALSE(history_has_it);

  auto check = s->Check(true, false);
  ASSERT_TRUE(check);
  EXPECT_TRUE(check->structure.empty()) << check->structure[0];
  ASSERT_EQ(check->rows.size(), 1u);
  EXPECT_STREQ(check->rows[0].table, "fields");
  EXPECT_EQ(check->rows[0].field, 1u);

  // A new value replaces the damaged row: one current row, intact again.
  ASSERT_FALSE(s->Begin());
  ASSERT_TRUE(s->FindField(id, 1, &row));
  ASSERT_FALSE(s->PutField(Value(id, 1, "K-2", *s)));
  ASSERT_FALSE(s->Commit());
  found = s->FindField(id, 1, &row);
  ASSERT_TRUE(found && *found);
  EXPECT_EQ(row.value, "K-2");
  check = s->Check(true, false);
  ASSERT_TRUE(check);
  EXPECT_TRUE(check->ok());
  EXPECT_EQ(check->values, 3u);
}

TEST_F(StoreDamageTest, DamagedHistoryEntryIsNotShown) {
  const Id id = core::NewId();
  WriteCase(id, "K-1", "1473", "OLD-VALUE-OF-THREE-XYZ");
  DamageBytesOf(path_, "OLD-VALUE-OF-THREE-XYZ");
  auto s = Open();
  ASSERT_TRUE(s);
  std::vector<std::string> reasons;
  ASSERT_FALSE(s->ScanFieldHistory(
      id, 3, 3, [&](const FieldRow&, std::string_view why) { reasons.emplace_back(why); }));
  EXPECT_EQ(reasons, std::vector<std::string>{"current"});
  ASSERT_EQ(damage_.size(), 1u);
  EXPECT_STREQ(damage_[0].table, "field_history");
  auto check = s->Check(false, false);
  ASSERT_TRUE(check);
  ASSERT_EQ(check->rows.size(), 1u);
  EXPECT_STREQ(check->rows[0].table, "field_history");
}

TEST_F(StoreDamageTest, DamagedRecordRowRefusesItsChangesAndServesNone) {
  const Id id = core::NewId();
  WriteCase(id, "K-1", "1473", "old");
  DamageBytesOf(path_, RecordRowBytes(id));
  auto s = Open();
  ASSERT_TRUE(s);
  auto record = s->FindRecord(id);
  ASSERT_FALSE(record);
  EXPECT_EQ(record.error(), core::make_error_code(core::errc::store_damaged));
  EXPECT_TRUE(Pulled(*s).empty());
  auto check = s->Check(false, false);
  ASSERT_TRUE(check);
  ASSERT_EQ(check->rows.size(), 1u);
  EXPECT_STREQ(check->rows[0].table, "records");
  EXPECT_EQ(check->rows[0].record_id, id);
}

// A pull's batch is as full as without the damage: the rows a skipped one
// leaves out of a batch's limit are read after it.
TEST_F(StoreDamageTest, SkippedRowsDoNotShortenABatch) {
  const Id a = core::NewId(), b = core::NewId();
  WriteCase(a, "K-SKIPPED-ROW-AAAA", "1473", "old");
  WriteCase(b, "K-2", "1474", "old");
  DamageBytesOf(path_, "K-SKIPPED-ROW-AAAA");
  auto s = Open();
  ASSERT_TRUE(s);
  PullScope unit;
  unit.kind = PullScope::Kind::kUnit;
  std::vector<std::string> got;
  ASSERT_FALSE(s->ScanChanges(unit, 0, 3, [&](const ChangeView& v) {
    got.emplace_back(v.field->value);
    return true;
  }));
  EXPECT_EQ(got, (std::vector<std::string>{"1473", "current three", "K-2"}));
}

TEST_F(StoreDamageTest, DamagedStructureIsFoundAndTheServerRefusesToServeIt) {
  const Id id = core::NewId();
  WriteCase(id, "K-1", "1473", "old");
  DamagePageOf(path_, "fields_by_seq");
  auto check = CheckStoreFile(dir_ + "/data");
  ASSERT_TRUE(check) << check.error().message();
  EXPECT_FALSE(check->structure.empty());
  EXPECT_FALSE(check->ok());

  ServerConfig config;
  config.data_dir = dir_ + "/data";
  std::vector<std::string> lines;
  config.log = [&](std::string_view line) { lines.emplace_back(line); };
  auto server = Server::Open(config, core::DefaultEnv());
  ASSERT_FALSE(server);
  EXPECT_EQ(server.error(), core::make_error_code(core::errc::store_damaged));
  bool named = false;
  for (const auto& l : lines) named = named || l.find("store_damaged") != std::string::npos;
  EXPECT_TRUE(named) << "the log names what is damaged";
}

// A version 7 store (no checksums) gets them when opened for writing.
TEST_F(StoreDamageTest, OlderStoreGainsChecksums) {
  const Id id = core::NewId();
  WriteCase(id, "K-1", "1473", "old");
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    const char* sql =
        "CREATE TABLE r7 AS SELECT record_id, kind, parent_id, case_id, unit_id, created_by_user, "
        "created_seq FROM records; DROP TABLE records; ALTER TABLE r7 RENAME TO records;"
        "CREATE TABLE f7 AS SELECT record_id, field, value, sealed, key_class, key_version, "
        "stamp_hlc, stamp_device, origin_hlc, author, seq, txn FROM fields; DROP TABLE fields; "
        "ALTER TABLE f7 RENAME TO fields;"
        "CREATE TABLE h7 AS SELECT id, record_id, field, value, sealed, key_class, key_version, "
        "stamp_hlc, stamp_device, origin_hlc, author, seq, superseded_seq, reason FROM "
        "field_history; DROP TABLE field_history; ALTER TABLE h7 RENAME TO field_history;"
        "CREATE UNIQUE INDEX r7_key ON records(record_id);"
        "CREATE UNIQUE INDEX f7_key ON fields(record_id, field);"
        "UPDATE meta SET value = '7' WHERE key = 'schema_version';";
    char* err = nullptr;
    ASSERT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
    sqlite3_close(db);
  }
  auto before = CheckStoreFile(dir_ + "/data");  // read-only: not migrated
  ASSERT_TRUE(before) << before.error().message();
  EXPECT_FALSE(before->rows_checked);
  ASSERT_TRUE(Open());
  auto after = CheckStoreFile(dir_ + "/data");
  ASSERT_TRUE(after);
  EXPECT_TRUE(after->ok());
  EXPECT_TRUE(after->rows_checked);
  EXPECT_EQ(after->values, 3u);
  EXPECT_EQ(after->history, 1u);
}

// ---- Through the server ----------------------------------------------------------------

class ServedDamageTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    EnrollBootstrapAdmin();
  }
};

TEST_F(ServedDamageTest, DeviceNeverGetsADamagedValueAndItsNextEditRepairsIt) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  TestDevice budi = EnrollApproved(v1::ROLE_OFFICE, "budi");
  const Id case_id = core::NewId();
  {
    auto client = Login(siti);
    auto r = Push(*client, {OpenChange(siti, case_id, core::kCaseKind, {}, kCaseNumber,
                                       CaseText(kCaseNumber, "K-DAMAGED-NUMBER-77")),
                            OpenChange(siti, case_id, core::kCaseKind, {}, kRegionCode,
                                       CaseText(kRegionCode, "1473"))});
    for (const auto& c : r.results()) ASSERT_EQ(c.status(), Status::STATUS_APPLIED);
  }
  StopServer();
  DamageBytesOf(StorePath(data_dir_), "K-DAMAGED-NUMBER-77");
  StartServer();

  {
    auto office = Login(budi);
    auto got = PullAll(*office);
    ASSERT_EQ(got.size(), 1u) << "only the intact value is served";
    EXPECT_EQ(got[0].field(), kRegionCode);
  }
  EXPECT_GE(server_->metrics().damaged_rows_met, 1u);

  // Siti's device sets the number again: the change replaces the damaged
  // row (no loser kept in its history), and the audit says so.
  {
    auto client = Login(siti);
    auto r = Push(*client, {OpenChange(siti, case_id, core::kCaseKind, {}, kCaseNumber,
                                       CaseText(kCaseNumber, "K-77"))});
    ASSERT_EQ(r.results(0).status(), Status::STATUS_APPLIED) << r.results(0).reason();
  }
  {
    auto office = Login(budi);
    auto got = PullAll(*office);
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[1].field(), kCaseNumber);
    EXPECT_EQ(got[1].value(), CaseText(kCaseNumber, "K-77"));
  }
  auto audit = ReadAudit(data_dir_, 1);
  ASSERT_TRUE(audit);
  ASSERT_EQ(audit->size(), 1u);
  ASSERT_EQ((*audit)[0].entry.changes_size(), 1);
  EXPECT_TRUE((*audit)[0].entry.changes(0).repaired());
  StopServer();
  auto check = CheckStoreFile(data_dir_);
  ASSERT_TRUE(check);
  EXPECT_TRUE(check->ok());
}

TEST_F(ServedDamageTest, ChangeToADamagedRecordWaitsOnTheDevice) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  const Id case_id = core::NewId();
  {
    auto client = Login(siti);
    Push(*client, {OpenChange(siti, case_id, core::kCaseKind, {}, kCaseNumber,
                              CaseText(kCaseNumber, "K-1"))});
  }
  StopServer();
  DamageBytesOf(StorePath(data_dir_), RecordRowBytes(case_id));
  StartServer();
  auto client = Login(siti);
  const auto change =
      OpenChange(siti, case_id, core::kCaseKind, {}, kRegionCode, CaseText(kRegionCode, "1473"));
  auto r = Push(*client, {change});
  ASSERT_EQ(r.results_size(), 1);
  EXPECT_EQ(r.results(0).status(), Status::STATUS_REJECTED);
  EXPECT_EQ(r.results(0).reason(), core::kDamagedReason);
  // Not final: sent again, it is decided again (and refused while damaged),
  // rather than answered with a stored rejection.
  r = Push(*client, {change});
  EXPECT_EQ(r.results(0).reason(), core::kDamagedReason);
  EXPECT_GE(server_->metrics().damaged_rows_met, 2u);
}

TEST_F(ServedDamageTest, BackgroundCheckFindsDamagedRows) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  {
    auto client = Login(siti);
    Push(*client, {OpenChange(siti, core::NewId(), core::kCaseKind, {}, kCaseNumber,
                              CaseText(kCaseNumber, "K-CHECKED-BY-TIMER"))});
  }
  StopServer();
  DamageBytesOf(StorePath(data_dir_), "K-CHECKED-BY-TIMER");
  config_.store_check_interval = std::chrono::hours(1);
  StartServer();  // the first background check runs at start
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (server_->metrics().store_checks == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_GE(server_->metrics().store_checks, 1u);
  EXPECT_EQ(server_->metrics().last_check_damage, 1u);
}

}  // namespace
}  // namespace teduh::server::testing
