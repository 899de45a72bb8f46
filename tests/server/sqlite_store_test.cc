// The SQLite store under several connections (sqlite_store.cc): the server's
// writer beside an admin command's short-lived writer.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <memory>

#include "teduh/core/env.h"
#include "teduh/core/ids.h"
#include "teduh/crypto/crypto.h"
#include "teduh/server/admin.h"
#include "teduh/server/store.h"

namespace teduh::server {
namespace {

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(crypto::Init());
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "teduh-store-test-XXXXXX").string();
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
    auto s = OpenSqliteStore(path_, StoreOptions{});
    EXPECT_TRUE(s) << s.error().message();
    return s ? std::move(*s) : nullptr;
  }

  // A case record, and a value of its `field`, in the open transaction.
  static RecordRow CaseRecord(const Id& id) {
    RecordRow r;
    r.record_id = id;
    r.kind = "teduh.casework.v1.Case";
    r.case_id = id;
    return r;
  }
  static core::error_code PutValue(Store& s, const Id& record, std::uint32_t field,
                                   std::string_view value) {
    FieldRow f;
    f.record_id = record;
    f.field = field;
    f.value = value;
    f.author = "siti";
    f.seq = s.AllocateSeq();
    f.txn = s.AllocateTxn();
    return s.PutField(f);
  }

  std::string dir_, path_;
};

// Regression: FindField leaves its row readable; the statement used to stay
// active after Commit(), so once an admin command wrote, every later Begin()
// of the server's writer failed with "busy" (SQLITE_BUSY_SNAPSHOT).
TEST_F(SqliteStoreTest, WriterBeginsAfterAnotherConnectionCommitted) {
  auto writer = Open();
  ASSERT_TRUE(writer);
  const Id record = core::NewId();
  ASSERT_FALSE(writer->Begin());
  ASSERT_FALSE(writer->InsertRecord(CaseRecord(record)));
  ASSERT_FALSE(PutValue(*writer, record, 1, "v"));
  ASSERT_FALSE(writer->Commit());

  ASSERT_FALSE(writer->Begin());
  FieldRow found;
  auto yes = writer->FindField(record, 1, &found);
  ASSERT_TRUE(yes && *yes);
  ASSERT_FALSE(writer->Commit());

  auto code = CreateEnrollment(dir_ + "/data", teduh::sync::v1::ROLE_OFFICE, "budi",
                               std::chrono::hours(1), core::DefaultEnv());
  ASSERT_TRUE(code) << code.error().message();

  EXPECT_FALSE(writer->Begin());
  writer->Rollback();
}

TEST_F(SqliteStoreTest, RolledBackAuditEntryIsForgotten) {
  auto writer = Open();
  ASSERT_TRUE(writer);
  const std::string body = "entry", zero(32, '\0'), hash(32, 'h');
  ASSERT_FALSE(writer->Begin());
  ASSERT_FALSE(writer->AppendAudit(AuditRow{1, body, zero, hash}));
  EXPECT_EQ(writer->PendingAuditHead().index, 1u);
  writer->Rollback();

  ASSERT_FALSE(writer->Begin());
  EXPECT_EQ(writer->PendingAuditHead(), AuditHead{});
  ASSERT_FALSE(writer->AppendAudit(AuditRow{1, body, zero, hash}));
  ASSERT_FALSE(writer->Commit());
  auto head = writer->RecordedAuditHead();
  ASSERT_TRUE(head);
  EXPECT_EQ(head->index, 1u);
  EXPECT_EQ(std::string(head->hash.begin(), head->hash.end()), hash);
}

TEST_F(SqliteStoreTest, AuditEntryMustExtendTheHead) {
  auto writer = Open();
  ASSERT_TRUE(writer);
  const std::string zero(32, '\0'), hash(32, 'h');
  ASSERT_FALSE(writer->Begin());
  EXPECT_EQ(writer->AppendAudit(AuditRow{2, "x", zero, hash}),
            core::make_error_code(core::errc::invalid_argument));
  EXPECT_EQ(writer->AppendAudit(AuditRow{1, "x", hash, hash}),
            core::make_error_code(core::errc::invalid_argument));
  writer->Rollback();
}

// PutField after FindField rewrites the found row in place; any other order
// (another field found last, the found row deleted since) still stores
// exactly one current row per field with the value written last.
TEST_F(SqliteStoreTest, OverwritingAFoundFieldKeepsOneCurrentRow) {
  auto writer = Open();
  ASSERT_TRUE(writer);
  const Id record = core::NewId();
  ASSERT_FALSE(writer->Begin());
  const RecordRow r = CaseRecord(record);
  ASSERT_FALSE(writer->InsertRecord(r));
  auto put = [&](std::uint32_t field, std::string_view value) {
    return PutValue(*writer, record, field, value);
  };
  auto current = [&](std::uint32_t field) {
    FieldRow row;
    auto yes = writer->FindField(record, field, &row);
    EXPECT_TRUE(yes);
    return yes && *yes ? std::string(row.value) : std::string("(none)");
  };
  ASSERT_FALSE(put(1, "satu"));
  ASSERT_FALSE(put(2, "dua"));
  EXPECT_EQ(current(1), "satu");
  ASSERT_FALSE(put(1, "satu lagi"));  // the row just found, by rowid
  EXPECT_EQ(current(2), "dua");
  ASSERT_FALSE(put(1, "satu ketiga"));  // field 2 was found last: the upsert
  EXPECT_EQ(current(1), "satu ketiga");
  EXPECT_EQ(current(2), "dua");
  ASSERT_FALSE(writer->DeleteRecord(record));  // the found row is gone
  ASSERT_FALSE(writer->InsertRecord(r));
  ASSERT_FALSE(put(2, "dua baru"));
  EXPECT_EQ(current(2), "dua baru");
  EXPECT_EQ(current(1), "(none)");
  ASSERT_FALSE(writer->Commit());
  std::size_t rows = 0;
  ASSERT_FALSE(writer->ScanCaseValues(
      record, [&](const FieldRow& f, std::string_view, std::uint64_t history_id) {
        if (history_id == 0) ++rows;
        return true;
      }));
  EXPECT_EQ(rows, 1u);
}

// A device pushes to and pulls the cases it holds again and again: recording
// a holding again changes nothing, and the record a re-key of the device's
// cases reads (held_cases) is there from the first time. A case taken from
// its user (eviction) is no longer held, and recording it again (she is
// assigned it once more) holds it again; the re-key record stays throughout.
TEST_F(SqliteStoreTest, RecordingAHoldingAgainChangesNothingAndAfterEvictionHoldsAgain) {
  auto writer = Open();
  ASSERT_TRUE(writer);
  DeviceRow device;
  device.device_id = core::NewId();
  device.user = "siti";
  device.role = teduh::sync::v1::ROLE_PENDAMPING;
  device.state = teduh::sync::v1::DEVICE_STATE_ACTIVE;
  device.sign_pk = std::string(32, 's');
  device.box_pk = std::string(32, 'b');
  const Id held = core::NewId(), other = core::NewId();
  ASSERT_FALSE(writer->Begin());
  ASSERT_FALSE(writer->InsertDevice(device));
  ASSERT_FALSE(writer->InsertRecord(CaseRecord(held)));
  ASSERT_FALSE(writer->InsertRecord(CaseRecord(other)));
  auto holds = [&](const Id& c) {
    auto yes = writer->HoldsCase(device.device_id, c);
    EXPECT_TRUE(yes);
    return yes && *yes;
  };
  auto rekey_list = [&] {
    auto cases = writer->CasesToRekey(device.device_id, Id{}, 10);
    EXPECT_TRUE(cases) << cases.error().message();
    return cases ? *cases : std::vector<Id>{};
  };
  EXPECT_FALSE(holds(held));
  ASSERT_FALSE(writer->RecordHolding(device.device_id, held, 7));
  ASSERT_FALSE(writer->RecordHolding(device.device_id, held, 9));
  EXPECT_TRUE(holds(held));
  EXPECT_FALSE(holds(other));
  EXPECT_EQ(rekey_list(), std::vector<Id>{held});
  ASSERT_FALSE(writer->EvictUser(held, "siti", 12));
  EXPECT_FALSE(holds(held));
  EXPECT_EQ(rekey_list(), std::vector<Id>{held});  // it held the case's keys once
  ASSERT_FALSE(writer->RecordHolding(device.device_id, held, 15));
  EXPECT_TRUE(holds(held));
  EXPECT_EQ(rekey_list(), std::vector<Id>{held});
  ASSERT_FALSE(writer->Commit());
}

}  // namespace
}  // namespace teduh::server
