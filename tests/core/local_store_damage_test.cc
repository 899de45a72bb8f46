// Damage to a device's local store (docs/SECURITY.md "Faults"): a damaged row
// is left out of every read and reported, never shown as data; Repair removes
// what the server holds, sends again what is unsent, and restarts the pull.
#include <gtest/gtest.h>

#include <filesystem>
#include <vector>

#include "core/store_damage.h"
#include "teduh/case/v1/case.pb.h"
#include "teduh/core/local_store.h"
#include "teduh/core/row_sum.h"
#include "teduh/core/schema.h"

namespace teduh::core {
namespace {

namespace fs = std::filesystem;
namespace pb = teduh::sync::v1;
namespace cw = teduh::casework::v1;
using store_damage::DamagePageOf;
using store_damage::DamageRows;

constexpr std::uint32_t kRegion = cw::Case::kRegionCodeFieldNumber;
constexpr std::uint32_t kNumber = cw::Case::kCaseNumberFieldNumber;

std::string Hex(const Id& id) { return "x'" + ToHex(id) + "'"; }

class LocalStoreDamageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(crypto::Init());
    dir_ = fs::temp_directory_path() / ("teduh-damage-" + ToHex(NewId()));
    fs::create_directories(dir_);
    key_ = std::move(*crypto::RandomSecret(32));
    device_ = NewId();
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path Path() const { return dir_ / "store.db"; }

  std::unique_ptr<LocalStore> Open() {
    StoreOptions o;
    o.on_damage = [this](const DamagedRow& row) { met_.push_back(row); };
    auto s = LocalStore::Open(Path(), key_, device_, env_, std::move(o));
    EXPECT_TRUE(s) << (s ? "" : s.error().message);
    return s ? std::move(*s) : nullptr;
  }

  // A case the server sent: region and number, at seq 1 and 2.
  void PullCase(LocalStore& store, const Id& id) {
    pb::Changes batch;
    batch.set_generation(1);
    std::uint64_t seq = 0;
    for (auto [field, text] : {std::pair{kRegion, "1472"}, std::pair{kNumber, "K-9"}}) {
      cw::Case m;
      if (field == kRegion) m.set_region_code(text);
      if (field == kNumber) m.set_case_number(text);
      pb::FieldChange* c = batch.add_changes();
      c->set_record_id(std::string(AsBytes(id)));
      c->set_kind(std::string(kCaseKind));
      c->set_field(field);
      c->set_value(m.SerializeAsString());
      c->mutable_stamp()->set_hlc(HlcPack(1'700'000'100'000, static_cast<std::uint32_t>(seq)));
      c->mutable_stamp()->set_device_id(std::string(AsBytes(server_device_)));
      c->set_seq(++seq);
    }
    batch.set_last_seq(seq);
    ASSERT_TRUE(store.ApplyPulled(hlc_, batch));
  }

  // This device's own edit of the region, left pending.
  void EditRegion(LocalStore& store, const Id& id, const std::string& region) {
    cw::Case m;
    m.set_region_code(region);
    ASSERT_TRUE(store.Edit(hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
      LocalChange c;
      c.record_id = id;
      c.kind = std::string(kCaseKind);
      c.field = kRegion;
      c.value = m.SerializeAsString();
      c.stamp = txn.NextStamp();
      return txn.Put(c);
    }));
  }

  static std::string Region(const std::vector<StoredValue>& values) {
    for (const auto& v : values) {
      if (v.field != kRegion) continue;
      cw::Case m;
      m.ParseFromString(v.value);
      return m.region_code();
    }
    return "(absent)";
  }

  fs::path dir_;
  crypto::SecureBuffer key_;
  Id device_{};
  Id server_device_ = NewId();
  FakeEnv env_{1'700'000'000'000};
  Hlc hlc_{env_, 0};
  std::vector<DamagedRow> met_;
};

TEST_F(LocalStoreDamageTest, IntactStoreChecksEveryRow) {
  const Id id = NewId();
  {
    auto store = Open();
    PullCase(*store, id);
    EditRegion(*store, id, "1473");
    EXPECT_FALSE(store->damage_met());
  }
  auto store = Open();
  auto check = store->Check();
  ASSERT_TRUE(check) << check.error().message;
  EXPECT_TRUE(check->intact());
  // records 1, fields 2, shadow 1 (the server's value behind the edit), outbox 1.
  EXPECT_EQ(check->rows_checked, 5u);
  EXPECT_FALSE(store->damage_met());
  EXPECT_TRUE(met_.empty());
}

TEST_F(LocalStoreDamageTest, DamagedValueIsLeftOutOfEveryReadAndReported) {
  const Id id = NewId();
  {
    auto store = Open();
    PullCase(*store, id);
  }
  // A bit flips in the region's stamp: the row is still a valid b-tree cell.
  DamageRows(Path(), "UPDATE fields SET stamp_hlc = stamp_hlc + 1 WHERE record_id = " + Hex(id) +
                         " AND field = " + std::to_string(kRegion));
  auto store = Open();
  EXPECT_FALSE(store->damage_met()) << "quick_check does not see inside a row";
  auto fields = store->GetFields(id);
  ASSERT_TRUE(fields) << fields.error().message;
  ASSERT_EQ(fields->size(), 1u) << "the damaged value is not returned";
  EXPECT_EQ((*fields)[0].field, kNumber);
  std::size_t listed = 0;
  ASSERT_TRUE(store->ForEachRecordOpenFields(
      kCaseKind, [&](const RecordInfo&, std::vector<StoredValue>& values) -> Outcome<void> {
        ++listed;
        EXPECT_EQ(Region(values), "(absent)");
        return {};
      }));
  EXPECT_EQ(listed, 1u) << "the case is still listed, with its intact values";
  ASSERT_FALSE(met_.empty());
  EXPECT_EQ(met_[0].table, "fields");
  EXPECT_EQ(met_[0].record_id, id);
  EXPECT_EQ(met_[0].field, kRegion);
  EXPECT_TRUE(store->damage_met());
  auto check = store->Check();
  ASSERT_TRUE(check);
  ASSERT_EQ(check->rows.size(), 1u);
  EXPECT_EQ(check->rows[0].table, "fields");
  EXPECT_TRUE(check->structure.empty());
}

TEST_F(LocalStoreDamageTest, ValueThatNoLongerOpensIsLeftOutNotAFailedList) {
  const Id id = NewId();
  {
    auto store = Open();
    PullCase(*store, id);
  }
  // Rewritten consistently (its checksum matches), but the ciphertext is not
  // the one the storage key sealed: the list goes on without it.
  store_damage::RewriteRows(Path(),
                            "UPDATE fields SET value = zeroblob(60) WHERE record_id = " + Hex(id) +
                                " AND field = " + std::to_string(kNumber),
                            &RegisterRowSum);
  auto store = Open();
  std::size_t listed = 0;
  ASSERT_TRUE(store->ForEachRecordOpenFields(
      kCaseKind, [&](const RecordInfo&, std::vector<StoredValue>& values) -> Outcome<void> {
        ++listed;
        EXPECT_EQ(values.size(), 1u);
        EXPECT_EQ(Region(values), "1472");
        return {};
      }));
  EXPECT_EQ(listed, 1u);
  ASSERT_EQ(met_.size(), 1u);
  EXPECT_EQ(met_[0].field, kNumber);
  auto check = store->Check();
  ASSERT_TRUE(check);
  EXPECT_EQ(check->rows.size(), 1u) << "Check opens every value too";
}

TEST_F(LocalStoreDamageTest, DamagedRecordRowHidesTheCaseAndIsNamed) {
  const Id id = NewId();
  {
    auto store = Open();
    PullCase(*store, id);
  }
  DamageRows(Path(), "UPDATE records SET unit_id = 'x' WHERE record_id = " + Hex(id));
  auto store = Open();
  auto rec = store->GetRecord(id);
  ASSERT_FALSE(rec);
  EXPECT_EQ(rec.error().code, make_error_code(errc::store_damaged));
  EXPECT_NE(rec.error().message.find(ToHex(id)), std::string::npos) << rec.error().message;
  auto listed = store->ListRecords(kCaseKind, std::nullopt);
  ASSERT_TRUE(listed);
  EXPECT_TRUE(listed->empty());
  std::size_t visited = 0;
  ASSERT_TRUE(store->ForEachRecordOpenFields(
      kCaseKind, [&](const RecordInfo&, std::vector<StoredValue>&) -> Outcome<void> {
        ++visited;
        return {};
      }));
  EXPECT_EQ(visited, 0u);
  ASSERT_FALSE(met_.empty());
  EXPECT_EQ(met_[0].table, "records");
}

TEST_F(LocalStoreDamageTest, RepairRestoresUnsentEditsAndPullsTheRestAgain) {
  const Id id = NewId();
  {
    auto store = Open();
    PullCase(*store, id);
    EditRegion(*store, id, "1473");  // pending: the region's row holds it
  }
  // The pending edit's field row, the number the server sent, and the
  // outbox entry's state (pending read back as accepted) are all damaged.
  DamageRows(Path(), "UPDATE fields SET seq = seq + 7 WHERE record_id = " + Hex(id));
  DamageRows(Path(), "UPDATE outbox SET state = 1");
  auto store = Open();
  auto pending = store->PendingChanges(100);
  ASSERT_TRUE(pending);
  EXPECT_TRUE(pending->empty()) << "a damaged entry is not sent as it reads";
  auto repair = store->Repair();
  ASSERT_TRUE(repair) << repair.error().message;
  EXPECT_EQ(repair->found.rows.size(), 3u);
  EXPECT_EQ(repair->removed, 2u);
  EXPECT_EQ(repair->resent, 1u);
  EXPECT_EQ(repair->unreadable, 0u);
  EXPECT_EQ(repair->restored, 1u);
  EXPECT_TRUE(repair->repull);
  EXPECT_FALSE(store->damage_met());
  EXPECT_EQ(store->Cursor()->last_seq, 0u) << "the next pull starts from the beginning";
  EXPECT_EQ(store->Cursor()->generation, 1u);

  // The unsent edit is back in its field and in the outbox, once.
  auto fields = store->GetFields(id);
  ASSERT_TRUE(fields);
  EXPECT_EQ(Region(*fields), "1473");
  EXPECT_EQ(fields->size(), 1u) << "the number comes back with the pull";
  pending = store->PendingChanges(100);
  ASSERT_TRUE(pending);
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ(pending->front().field(), kRegion);
  auto counts = store->CountOutbox();
  ASSERT_TRUE(counts);
  EXPECT_EQ(counts->pending, 1u);
  EXPECT_EQ(counts->accepted, 0u);
  ASSERT_TRUE(store->CheckInvariants());
  auto check = store->Check();
  ASSERT_TRUE(check);
  EXPECT_TRUE(check->intact());

  // The pull brings the number again; the region stays the pending edit's.
  PullCase(*store, id);
  fields = store->GetFields(id);
  ASSERT_TRUE(fields);
  EXPECT_EQ(fields->size(), 2u);
  EXPECT_EQ(Region(*fields), "1473");
}

TEST_F(LocalStoreDamageTest, UnreadableUnsentChangeIsMarkedAndNotSent) {
  const Id id = NewId();
  {
    auto store = Open();
    PullCase(*store, id);
    EditRegion(*store, id, "1473");
  }
  DamageRows(Path(), "UPDATE outbox SET payload = zeroblob(80)");
  auto store = Open();
  auto repair = store->Repair();
  ASSERT_TRUE(repair) << repair.error().message;
  EXPECT_EQ(repair->unreadable, 1u);
  EXPECT_EQ(repair->resent, 0u);
  auto pending = store->PendingChanges(100);
  ASSERT_TRUE(pending);
  EXPECT_TRUE(pending->empty());
  auto outbox = store->ListOutbox(true, 10);
  ASSERT_TRUE(outbox);
  ASSERT_EQ(outbox->size(), 1u);
  EXPECT_EQ(outbox->front().state, OutboxState::kRejected);
  EXPECT_EQ(outbox->front().reason, kUnreadableHereReason);
  auto check = store->Check();
  ASSERT_TRUE(check);
  EXPECT_EQ(check->rows.size(), 1u) << "its payload stays unreadable, and is known to be";
}

TEST_F(LocalStoreDamageTest, DamagedIndexIsFoundAtOpenAndBuiltAgainAtOnce) {
  const Id id = NewId();
  {
    auto store = Open();
    PullCase(*store, id);
    auto check = store->Check();
    ASSERT_TRUE(check);
    EXPECT_TRUE(check->intact());
  }
  DamagePageOf(Path(), "records_by_kind");
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(Path().c_str(), &db), SQLITE_OK);
    sqlite3_stmt* q = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &q, nullptr), SQLITE_OK);
    ASSERT_EQ(sqlite3_step(q), SQLITE_ROW);
    EXPECT_STRNE(reinterpret_cast<const char*>(sqlite3_column_text(q, 0)), "ok");
    sqlite3_finalize(q);
    sqlite3_close(db);
  }
  // quick_check at open finds it and the indexes are built again before
  // anything reads them; the next pull starts from the beginning.
  auto store = Open();
  EXPECT_FALSE(store->damage_met());
  auto check = store->Check();
  ASSERT_TRUE(check) << check.error().message;
  EXPECT_TRUE(check->intact()) << (check->structure.empty() ? "" : check->structure.front());
  EXPECT_EQ(store->Cursor()->last_seq, 0u);
  auto listed = store->ListRecords(kCaseKind, std::nullopt);
  ASSERT_TRUE(listed) << listed.error().message;
  EXPECT_EQ(listed->size(), 1u);
}

TEST_F(LocalStoreDamageTest, RepairIsDueDailyAndAfterDamage) {
  auto store = Open();
  const std::int64_t day = 24LL * 3600 * 1000;
  auto due = store->RepairDue(day);
  ASSERT_TRUE(due);
  EXPECT_TRUE(*due) << "never checked";
  auto repair = store->Repair();
  ASSERT_TRUE(repair);
  EXPECT_FALSE(repair->repull) << "an intact store is not pulled again";
  EXPECT_FALSE(*store->RepairDue(day));
  env_.Advance(day);
  EXPECT_TRUE(*store->RepairDue(day));
}

// Damage one command met is repaired by the next sync, which is another
// process: the store file remembers it.
TEST_F(LocalStoreDamageTest, DamageMetIsRememberedForTheNextOpen) {
  const Id id = NewId();
  const std::int64_t day = 24LL * 3600 * 1000;
  {
    auto store = Open();
    PullCase(*store, id);
    ASSERT_TRUE(store->Repair());
    EXPECT_FALSE(*store->RepairDue(day));
  }
  DamageRows(Path(), "UPDATE records SET unit_id = 'x' WHERE record_id = " + Hex(id));
  {
    auto store = Open();
    EXPECT_FALSE(*store->RepairDue(day)) << "nothing met yet";
    auto listed = store->ListRecords(kCaseKind, std::nullopt);
    ASSERT_TRUE(listed);
    EXPECT_TRUE(listed->empty());
  }
  auto store = Open();
  EXPECT_FALSE(store->damage_met());
  EXPECT_TRUE(*store->RepairDue(day)) << "the list met the damage in an earlier open";
}

// A store of version 1 (no checksums) gets them at its first open, rows kept.
TEST_F(LocalStoreDamageTest, VersionOneStoreGainsChecksums) {
  const Id id = NewId();
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(Path().c_str(), &db), SQLITE_OK);
    const std::string sql =
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE records(record_id BLOB PRIMARY KEY, kind TEXT NOT NULL, parent_id BLOB, "
        "unit_id TEXT NOT NULL DEFAULT '');"
        "CREATE INDEX records_by_parent ON records(parent_id);"
        "CREATE INDEX records_by_kind ON records(kind);"
        "CREATE TABLE fields(record_id BLOB NOT NULL, field INTEGER NOT NULL, sealed INTEGER NOT "
        "NULL, key_class INTEGER NOT NULL, key_version INTEGER NOT NULL, value BLOB NOT NULL, "
        "stamp_hlc INTEGER NOT NULL, stamp_device BLOB NOT NULL, origin_hlc INTEGER NOT NULL, "
        "seq INTEGER NOT NULL, PRIMARY KEY(record_id, field)) WITHOUT ROWID;"
        "CREATE TABLE shadow(record_id BLOB NOT NULL, field INTEGER NOT NULL, sealed INTEGER NOT "
        "NULL, key_class INTEGER NOT NULL, key_version INTEGER NOT NULL, value BLOB NOT NULL, "
        "stamp_hlc INTEGER NOT NULL, stamp_device BLOB NOT NULL, origin_hlc INTEGER NOT NULL, "
        "seq INTEGER NOT NULL, PRIMARY KEY(record_id, field)) WITHOUT ROWID;"
        "CREATE TABLE outbox(device_seq INTEGER PRIMARY KEY, record_id BLOB NOT NULL, field "
        "INTEGER NOT NULL, state INTEGER NOT NULL, reason TEXT NOT NULL DEFAULT '', detail TEXT "
        "NOT NULL DEFAULT '', payload BLOB NOT NULL, created_ms INTEGER NOT NULL, updated_ms "
        "INTEGER NOT NULL);"
        "CREATE INDEX outbox_by_field ON outbox(record_id, field, state);"
        "CREATE INDEX outbox_by_state ON outbox(state, device_seq);"
        "CREATE TABLE unconfirmed(record_id BLOB NOT NULL, field INTEGER NOT NULL, PRIMARY "
        "KEY(record_id, field)) WITHOUT ROWID;"
        "CREATE TABLE set_aside(record_id BLOB NOT NULL, field INTEGER NOT NULL, kind TEXT NOT "
        "NULL, parent_id BLOB, sealed INTEGER NOT NULL, key_class INTEGER NOT NULL, key_version "
        "INTEGER NOT NULL, value BLOB NOT NULL, stamp_hlc INTEGER NOT NULL, stamp_device BLOB NOT "
        "NULL, origin_hlc INTEGER NOT NULL, seq INTEGER NOT NULL, set_aside_ms INTEGER NOT NULL, "
        "PRIMARY KEY(record_id, field, stamp_hlc, stamp_device)) WITHOUT ROWID;"
        "INSERT INTO meta VALUES('device_id', " +
        Hex(device_) +
        "), ('schema', 1);"
        "INSERT INTO records VALUES(" +
        Hex(id) + ", '" + std::string(kCaseKind) +
        "', NULL, 'u');"
        "INSERT INTO fields VALUES(" +
        Hex(id) + ", 9, 1, 2, 1, x'00112233', 5, " + Hex(id) + ", 0, 3);";
    ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  auto store = Open();
  ASSERT_TRUE(store);
  auto check = store->Check();
  ASSERT_TRUE(check) << check.error().message;
  EXPECT_TRUE(check->intact());
  EXPECT_EQ(check->rows_checked, 2u);
  auto rec = store->GetRecord(id);
  ASSERT_TRUE(rec);
  ASSERT_TRUE(*rec);
  EXPECT_EQ((*rec)->unit_id, "u");
  auto fields = store->GetFields(id);
  ASSERT_TRUE(fields);
  ASSERT_EQ(fields->size(), 1u);
  EXPECT_TRUE((*fields)[0].sealed);
  // And damage is now found in it.
  store.reset();
  DamageRows(Path(), "UPDATE fields SET key_version = 2");
  store = Open();
  fields = store->GetFields(id);
  ASSERT_TRUE(fields);
  EXPECT_TRUE(fields->empty());
}

}  // namespace
}  // namespace teduh::core
