// Opening a case in full leaves a trace (DOMAIN-REPORT §5): `teduh case show`
// saves an Access record (who, when; no content) before showing anything; it
// syncs like any record, office staff see who looked, and the server's audit
// chain holds it. Lists and other reads leave none.
#include <gtest/gtest.h>

#include "server/device_fixture.h"
#include "teduh/core/schema.h"

namespace teduh::server::testing {
namespace {

using AccessTest = DeviceServerTest;

TEST_F(AccessTest, ShowingACaseInFullIsRecordedSyncedAndAudited) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto c = rina->NewCase({"chronology=Kronologi"});
  ASSERT_TRUE(c);
  const std::string id = core::ToHex(*c);
  ASSERT_TRUE(rina->AddPerson(id, "victim", {"name=Siti Rahmawati"}));
  Sync(*rina);
  const auto pending_before = rina->Status()->counts.pending;

  // Lists and plain reads leave no trace.
  ASSERT_TRUE(rina->ListCases());
  ASSERT_TRUE(rina->ShowCase(id));
  EXPECT_EQ(rina->Status()->counts.pending, pending_before);

  env_.Advance(5000);
  auto shown = rina->ShowCase(id, "id", core::ViewLog::kRecord);
  ASSERT_TRUE(shown) << shown.error().message;
  ASSERT_EQ(shown->accesses.size(), 1u);
  EXPECT_EQ(shown->accesses[0].viewer, "rina");
  EXPECT_EQ(shown->accesses[0].viewed_at, env_.NowMs() / 1000);
  EXPECT_TRUE(shown->accesses[0].pending);
  EXPECT_GT(rina->Status()->counts.pending, pending_before);  // saved before it was shown

  auto sent = Sync(*rina);
  EXPECT_EQ(sent.rejected, 0u);
  EXPECT_GE(sent.accepted, 2u);
  EXPECT_EQ(rina->Status()->counts.pending, 0u);

  // The office sees who opened the case, and when.
  Sync(*ani);
  auto seen = ani->ShowCase(id);
  ASSERT_TRUE(seen);
  ASSERT_EQ(seen->accesses.size(), 1u);
  EXPECT_EQ(seen->accesses[0].viewer, "rina");
  EXPECT_FALSE(seen->accesses[0].pending);

  // The audit chain holds it, by rina's device.
  auto audit = ReadAudit(data_dir_, 1000);
  ASSERT_TRUE(audit);
  int logged = 0;
  std::string kind;
  for (const auto& r : *audit) {
    if (r.entry.kind() != teduh::audit::v1::ENTRY_KIND_PUSH) continue;
    for (const auto& ch : r.entry.changes()) {
      if (!ch.kind().empty()) kind = ch.kind();
      if (kind == core::kAccessKind) {
        ++logged;
        EXPECT_EQ(r.entry.user(), "rina");
        EXPECT_EQ(ch.status(), v1::ChangeResult::STATUS_APPLIED);
      }
    }
  }
  EXPECT_EQ(logged, 2);  // its two fields
  EXPECT_TRUE(VerifyAudit(data_dir_)->intact());

  // Reading a field's past values (decrypted) leaves a trace too.
  const auto before = rina->Status()->counts.pending;
  ASSERT_TRUE(rina->CaseHistory(id, "chronology", "id", core::ViewLog::kRecord));
  EXPECT_EQ(rina->Status()->counts.pending, before + 2);
  EXPECT_EQ(rina->ShowCase(id)->accesses.size(), 2u);
}

TEST_F(AccessTest, AnAccessRecordHoldsNoContentAndIsAppendOnly) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto c = rina->NewCase({"chronology=Kronologi"});
  ASSERT_TRUE(c);
  ASSERT_TRUE(rina->ShowCase(core::ToHex(*c), "id", core::ViewLog::kRecord));
  Sync(*rina);
  // The kind is append-only: the schema gives every field the IMMUTABLE rule.
  const core::RecordKind* kind = core::Schema::Get().FindKind(core::kAccessKind);
  ASSERT_NE(kind, nullptr);
  EXPECT_TRUE(kind->append_only);
  for (const auto& f : kind->fields) {
    EXPECT_FALSE(f.sealed) << f.name;  // no content: who and when only
    EXPECT_EQ(f.merge, teduh::MERGE_RULE_IMMUTABLE) << f.name;
  }
}

}  // namespace
}  // namespace teduh::server::testing
