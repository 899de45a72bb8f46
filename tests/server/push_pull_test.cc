// Push and pull (docs/PROTOCOL.md §4–§7).
#include <sqlite3.h>

#include <set>

#include "server/server_fixture.h"
#include "teduh/case/v1/case.pb.h"
#include "teduh/core/frame_codec.h"
#include "teduh/core/hlc.h"
#include "teduh/core/schema.h"
#include "teduh/server/store.h"

namespace teduh::server::testing {
namespace {

constexpr std::uint32_t kCaseNumber = 1;
constexpr std::uint32_t kCreatedAt = 2;
constexpr std::uint32_t kAssignedPendamping = 10;
constexpr std::uint32_t kRegionCode = 14;
constexpr std::uint32_t kChronology = 30;  // sealed
constexpr std::uint32_t kPersonName = 20;  // sealed

using Status = v1::ChangeResult;

class PushPullTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    EnrollBootstrapAdmin();
  }

  // A new case with a case number and a region code, pushed by `device`.
  Id NewCase(TestClient& client, const TestDevice& device, const std::string& number = "K-1") {
    Id id = core::NewId();
    auto r = Push(
        client,
        {OpenChange(device, id, core::kCaseKind, {}, kCaseNumber, CaseText(kCaseNumber, number)),
         OpenChange(device, id, core::kCaseKind, {}, kRegionCode, CaseText(kRegionCode, "1473"))});
    for (const auto& c : r.results()) EXPECT_EQ(c.status(), Status::STATUS_APPLIED) << c.reason();
    return id;
  }

  static std::set<std::string> RecordIds(const std::vector<v1::FieldChange>& changes) {
    std::set<std::string> ids;
    for (const auto& c : changes) ids.insert(c.record_id());
    return ids;
  }
};

TEST_F(PushPullTest, ResentPushIsAckedAgainAndAppliedOnce) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  auto client = Login(siti);
  Id case_id = core::NewId();
  std::vector<v1::FieldChange> batch = {
      OpenChange(siti, case_id, core::kCaseKind, {}, kCaseNumber, CaseText(kCaseNumber, "K-7")),
      OpenChange(siti, case_id, core::kCaseKind, {}, kRegionCode, CaseText(kRegionCode, "14"))};
  auto first = Push(*client, batch);
  ASSERT_EQ(first.results_size(), 2);
  auto before = PullAll(*client);
  ASSERT_EQ(before.size(), 2u);

  auto again = Push(*client, batch);
  ASSERT_EQ(again.results_size(), 2);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(again.results(i).status(), Status::STATUS_APPLIED);
    EXPECT_EQ(again.results(i).stamp().hlc(), first.results(i).stamp().hlc());
    EXPECT_EQ(again.results(i).device_seq(), batch[i].device_seq());
  }
  auto after = PullAll(*client);
  ASSERT_EQ(after.size(), 2u);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(after[i].seq(), before[i].seq());
}

TEST_F(PushPullTest, ResentRejectionGetsTheStoredRejection) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  auto client = Login(siti);
  Id case_id = core::NewId();
  std::vector<v1::FieldChange> batch = {
      OpenChange(siti, case_id, core::kCaseKind, {}, kChronology, "not ciphertext")};
  auto first = Push(*client, batch);
  ASSERT_EQ(first.results(0).status(), Status::STATUS_REJECTED);
  auto again = Push(*client, batch);
  EXPECT_EQ(again.results(0).status(), Status::STATUS_REJECTED);
  EXPECT_EQ(again.results(0).reason(), first.results(0).reason());
}

TEST_F(PushPullTest, PushIsCommittedBeforeItIsAcknowledged) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  auto client = Login(siti);
  Id case_id = NewCase(*client, siti);
  // A second connection to the store, while the server runs, sees the acknowledged data.
  StoreOptions ro;
  ro.read_only = true;
  auto store = OpenSqliteStore(StorePath(data_dir_), ro);
  ASSERT_TRUE(store);
  FieldRow row;
  auto found = (*store)->FindField(case_id, kRegionCode, &row);
  ASSERT_TRUE(found);
  EXPECT_TRUE(*found);
  EXPECT_EQ(row.author, "siti");
}

TEST_F(PushPullTest, RestartKeepsEverythingAcknowledged) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  Id case_id;
  {
    auto client = Login(siti);
    case_id = NewCase(*client, siti);
  }
  StopServer();
  StartServer();
  auto client = Login(siti);
  auto changes = PullAll(*client);
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(changes[0].record_id(), std::string(core::AsBytes(case_id)));
  EXPECT_EQ(changes[0].author(), "siti");
  EXPECT_FALSE(changes[0].unit_id().empty());
}

TEST_F(PushPullTest, FieldOfficerCannotPushOrPullAnotherOfficersCase) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  TestDevice budi = EnrollApproved(v1::ROLE_PENDAMPING, "budi");
  auto siti_client = Login(siti);
  Id sitis_case = NewCase(*siti_client, siti);
  auto budi_client = Login(budi);
  auto r = Push(*budi_client, {OpenChange(budi, sitis_case, core::kCaseKind, {}, kRegionCode,
                                          CaseText(kRegionCode, "99"))});
  ASSERT_EQ(r.results_size(), 1);
  EXPECT_EQ(r.results(0).status(), Status::STATUS_REJECTED);
  EXPECT_EQ(r.results(0).reason(), "out_of_scope");
  EXPECT_TRUE(PullAll(*budi_client).empty());
  EXPECT_EQ(PullAll(*siti_client).size(), 2u);
}

TEST_F(PushPullTest, FieldHistoryIsServedOnlyWithinTheDevicesScope) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  TestDevice budi = EnrollApproved(v1::ROLE_PENDAMPING, "budi");
  auto siti_client = Login(siti);
  Id sitis_case = NewCase(*siti_client, siti);
  Push(*siti_client, {OpenChange(siti, sitis_case, core::kCaseKind, {}, kRegionCode,
                                 CaseText(kRegionCode, "14.72"))});
  auto ask = [&](TestClient& client, const Id& record) {
    v1::Frame f;
    f.set_request_id(next_request_++);
    f.mutable_history_request()->set_record_id(std::string(core::AsBytes(record)));
    f.mutable_history_request()->set_field(kRegionCode);
    return client.Call(f);
  };
  auto mine = ask(*siti_client, sitis_case);
  ASSERT_TRUE(mine && mine->has_history());
  ASSERT_EQ(mine->history().entries_size(), 2);
  EXPECT_EQ(mine->history().entries(0).reason(), "lost_merge");  // the edit carried no base
  EXPECT_EQ(mine->history().entries(1).reason(), "current");
  auto budi_client = Login(budi);
  for (const Id& record : {sitis_case, core::NewId()}) {  // not hers, and unknown: one answer
    auto theirs = ask(*budi_client, record);
    ASSERT_TRUE(theirs && theirs->has_error());
    EXPECT_EQ(theirs->error().code(), v1::ERROR_CODE_FORBIDDEN);
  }
}

TEST_F(PushPullTest, OfficePullsEveryCaseOfTheUnit) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  TestDevice budi = EnrollApproved(v1::ROLE_PENDAMPING, "budi");
  TestDevice rina = EnrollApproved(v1::ROLE_OFFICE, "rina");
  auto a = Login(siti);
  auto b = Login(budi);
  Id case_a = NewCase(*a, siti, "A");
  Id case_b = NewCase(*b, budi, "B");
  auto office = Login(rina);
  auto ids = RecordIds(PullAll(*office));
  EXPECT_EQ(ids, (std::set<std::string>{std::string(core::AsBytes(case_a)),
                                        std::string(core::AsBytes(case_b))}));
}

TEST_F(PushPullTest, AdminDevicesHoldNoCaseRecords) {
  auto admin = Login(admin_);
  auto r = Push(*admin, {OpenChange(admin_, core::NewId(), core::kCaseKind, {}, kRegionCode,
                                    CaseText(kRegionCode, "1"))});
  EXPECT_EQ(r.results(0).reason(), "forbidden");
  EXPECT_TRUE(PullAll(*admin).empty());
}

TEST_F(PushPullTest, OpenValueForSealedFieldIsRejectedAndNotStored) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  auto client = Login(siti);
  Id case_id = NewCase(*client, siti);
  auto open_for_sealed =
      OpenChange(siti, case_id, core::kCaseKind, {}, kChronology, std::string(64, 'x'));
  auto sealed_for_open = SealedChange(siti, case_id, core::kCaseKind, {}, kRegionCode);
  auto r = Push(*client, {open_for_sealed, sealed_for_open});
  EXPECT_EQ(r.results(0).reason(), "sealed_mismatch");
  EXPECT_EQ(r.results(1).reason(), "sealed_mismatch");
  auto ok = Push(*client, {SealedChange(siti, case_id, core::kCaseKind, {}, kChronology)});
  EXPECT_EQ(ok.results(0).status(), Status::STATUS_APPLIED);
  auto changes = PullAll(*client);
  ASSERT_EQ(changes.size(), 3u);
  EXPECT_TRUE(changes[2].sealed());
}

TEST_F(PushPullTest, OpenValueThatDoesNotParseIsRejected) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  auto client = Login(siti);
  Id case_id = NewCase(*client, siti);
  auto bad = OpenChange(siti, case_id, core::kCaseKind, {}, kRegionCode, "\xff\xff\xff");
  // A value for one field that smuggles another (the assignment) is refused too.
  auto smuggled = OpenChange(siti, case_id, core::kCaseKind, {}, kRegionCode,
                             CaseText(kAssignedPendamping, "budi"));
  auto r = Push(*client, {bad, smuggled});
  EXPECT_EQ(r.results(0).reason(), "bad_value");
  EXPECT_EQ(r.results(1).reason(), "bad_value");
}

// A change carries one field: a value that also sets another is refused,
// and nothing of it is stored.
TEST_F(PushPullTest, AValueThatSetsAnotherFieldIsRejected) {
  namespace cw = teduh::casework::v1;
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  auto client = Login(siti);
  Id case_id = NewCase(*client, siti, "K-1");
  cw::Case both;
  both.set_risk_level(cw::RISK_LEVEL_HIGH);
  both.set_case_number("K-9");  // written once: it must not slip in with the risk level
  auto r = Push(*client, {OpenChange(siti, case_id, core::kCaseKind, {},
                                     cw::Case::kRiskLevelFieldNumber, both.SerializeAsString())});
  EXPECT_EQ(r.results(0).status(), Status::STATUS_REJECTED);
  EXPECT_EQ(r.results(0).reason(), "bad_value");
  for (const auto& c : PullAll(*client)) {
    EXPECT_NE(c.field(), static_cast<std::uint32_t>(cw::Case::kRiskLevelFieldNumber));
    if (c.field() == kCaseNumber) {
      cw::Case stored;
      ASSERT_TRUE(stored.ParseFromString(c.value()));
      EXPECT_EQ(stored.case_number(), "K-1");
    }
  }
}

TEST_F(PushPullTest, ImmutableFieldRejectsASecondWrite) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  auto client = Login(siti);
  Id case_id = NewCase(*client, siti, "K-1");
  auto again =
      OpenChange(siti, case_id, core::kCaseKind, {}, kCaseNumber, CaseText(kCaseNumber, "K-2"));
  auto r = Push(*client, {again});
  EXPECT_EQ(r.results(0).status(), Status::STATUS_REJECTED);
  EXPECT_EQ(r.results(0).reason(), "immutable");
}

// A note is its writer's: another device cannot add a field its writer left
// unset, while the writer may send the rest of it in a later push.
TEST_F(PushPullTest, NobodyAddsAFieldToAnotherWritersNote) {
  namespace cw = teduh::casework::v1;
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  TestDevice ani = EnrollApproved(v1::ROLE_OFFICE, "ani");
  auto sc = Login(siti);
  auto ac = Login(ani);
  Id case_id = NewCase(*sc, siti, "K-1");
  const Id note = core::NewId();
  cw::Note kind;
  kind.set_kind(cw::NOTE_KIND_VISIT);
  auto first =
      Push(*sc, {OpenChange(siti, note, core::kNoteKind, case_id, cw::Note::kKindFieldNumber,
                            kind.SerializeAsString()),
                 SealedChange(siti, note, core::kNoteKind, case_id, cw::Note::kBodyFieldNumber)});
  ASSERT_EQ(first.results(1).status(), Status::STATUS_APPLIED) << first.results(1).reason();
  cw::Note author;
  author.set_author("ani");
  auto added = Push(*ac, {OpenChange(ani, note, core::kNoteKind, case_id,
                                     cw::Note::kAuthorFieldNumber, author.SerializeAsString())});
  EXPECT_EQ(added.results(0).status(), Status::STATUS_REJECTED);
  EXPECT_EQ(added.results(0).reason(), "immutable");
  author.set_author("siti");
  auto rest = Push(*sc, {OpenChange(siti, note, core::kNoteKind, case_id,
                                    cw::Note::kAuthorFieldNumber, author.SerializeAsString())});
  EXPECT_EQ(rest.results(0).status(), Status::STATUS_APPLIED) << rest.results(0).reason();
  auto again =
      Push(*sc, {SealedChange(siti, note, core::kNoteKind, case_id, cw::Note::kBodyFieldNumber)});
  EXPECT_EQ(again.results(0).reason(), "immutable");  // and never rewrites one
}

TEST_F(PushPullTest, ChildOfUnknownCaseIsRejected) {
  TestDevice rina = EnrollApproved(v1::ROLE_OFFICE, "rina");
  auto client = Login(rina);
  auto person = SealedChange(rina, core::NewId(), core::kPersonKind, core::NewId(), kPersonName);
  auto unknown = OpenChange(rina, core::NewId(), "teduh.future.v9.Thing", {}, 1, "");
  auto r = Push(*client, {person, unknown});
  EXPECT_EQ(r.results(0).reason(), "no_parent");
  EXPECT_EQ(r.results(1).reason(), "unknown_kind");
}

TEST_F(PushPullTest, UnknownKindUnderACaseAndUnknownFieldPassThrough) {
  TestDevice rina = EnrollApproved(v1::ROLE_OFFICE, "rina");
  auto client = Login(rina);
  Id case_id = NewCase(*client, rina);
  auto future = OpenChange(rina, core::NewId(), "teduh.future.v9.Thing", case_id, 3, "abc");
  auto new_field = OpenChange(rina, case_id, core::kCaseKind, {}, 500, "");
  auto r = Push(*client, {future, new_field});
  EXPECT_EQ(r.results(0).status(), Status::STATUS_APPLIED) << r.results(0).reason();
  EXPECT_EQ(r.results(1).status(), Status::STATUS_APPLIED) << r.results(1).reason();
  EXPECT_EQ(PullAll(*client).size(), 4u);
}

TEST_F(PushPullTest, StampFarAheadIsRestampedAndTheOffsetReported) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  auto client = Login(siti);
  const std::int64_t ten_days = 10LL * 24 * 3600 * 1000;
  Id case_id = core::NewId();
  auto c = OpenChange(siti, case_id, core::kCaseKind, {}, kRegionCode, CaseText(kRegionCode, "1"),
                      ten_days);
  const std::uint64_t writer_hlc = c.stamp().hlc();
  auto r = Push(*client, {c});
  ASSERT_EQ(r.results(0).status(), Status::STATUS_APPLIED);
  EXPECT_LT(r.results(0).stamp().hlc(), writer_hlc);
  EXPECT_LE(core::HlcMillis(r.results(0).stamp().hlc()), env_.NowMs() + 1);
  EXPECT_NEAR(static_cast<double>(r.clock_offset_ms()), static_cast<double>(-ten_days), 1000.0);
  auto changes = PullAll(*client);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].origin_hlc(), writer_hlc);
  EXPECT_EQ(changes[0].stamp().hlc(), r.results(0).stamp().hlc());
}

TEST_F(PushPullTest, StampWithinTheSkewIsKept) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  auto client = Login(siti);
  auto c = OpenChange(siti, core::NewId(), core::kCaseKind, {}, kRegionCode,
                      CaseText(kRegionCode, "1"), 3600 * 1000);
  auto r = Push(*client, {c});
  EXPECT_EQ(r.results(0).stamp().hlc(), c.stamp().hlc());
  EXPECT_EQ(r.clock_offset_ms(), 0);
}

TEST_F(PushPullTest, PullBatchesDoNotSplitAServerTransaction) {
  TestDevice rina = EnrollApproved(v1::ROLE_OFFICE, "rina");
  auto client = Login(rina);
  auto push_case = [&](int fields) {
    Id id = core::NewId();
    std::vector<v1::FieldChange> batch;
    for (int i = 0; i < fields; ++i)
      batch.push_back(OpenChange(rina, id, core::kCaseKind, {}, 100 + i, ""));
    Push(*client, batch);
  };
  push_case(3);
  push_case(4);
  push_case(3);
  push_case(7);  // one transaction larger than the batch limit
  std::vector<int> sizes;
  std::uint64_t after = 0;
  for (int i = 0; i < 10; ++i) {
    auto reply = PullFrame(*client, after, 5);
    ASSERT_TRUE(reply && reply->has_changes());
    sizes.push_back(reply->changes().changes_size());
    after = reply->changes().last_seq();
    if (!reply->changes().has_more()) break;
  }
  EXPECT_EQ(sizes, (std::vector<int>{3, 4, 3, 5, 2}));
}

TEST_F(PushPullTest, StaleGenerationResetsThePull) {
  TestDevice rina = EnrollApproved(v1::ROLE_OFFICE, "rina");
  auto client = Login(rina);
  NewCase(*client, rina);
  auto first = PullFrame(*client, 0);
  ASSERT_TRUE(first && first->has_changes());
  const std::uint64_t generation = first->changes().generation();
  auto same = PullFrame(*client, first->changes().last_seq(), 0, generation);
  EXPECT_FALSE(same->changes().reset());
  EXPECT_EQ(same->changes().changes_size(), 0);
  auto stale = PullFrame(*client, first->changes().last_seq(), 0, generation + 1);
  EXPECT_TRUE(stale->changes().reset());
  EXPECT_EQ(stale->changes().changes_size(), 2);
}

TEST_F(PushPullTest, AssignmentGivesTheNewAssigneeTheWholeCase) {
  TestDevice rina = EnrollApproved(v1::ROLE_OFFICE, "rina");
  TestDevice budi = EnrollApproved(v1::ROLE_PENDAMPING, "budi");
  auto office = Login(rina);
  Id case_id = NewCase(*office, rina);
  Id person = core::NewId();
  Push(*office, {SealedChange(rina, person, core::kPersonKind, case_id, kPersonName)});
  auto field = Login(budi);
  EXPECT_TRUE(PullAll(*field).empty());
  auto r = Push(*office, {OpenChange(rina, case_id, core::kCaseKind, {}, kAssignedPendamping,
                                     CaseText(kAssignedPendamping, "budi"))});
  ASSERT_EQ(r.results(0).status(), Status::STATUS_APPLIED);
  // The new assignee is poked, then pulls the case, its assignment and its child.
  auto poke = field->Receive(std::chrono::seconds(5), /*keep_pokes=*/true);
  ASSERT_TRUE(poke && poke->has_poke());
  auto changes = PullAll(*field);
  EXPECT_EQ(changes.size(), 4u);
  EXPECT_EQ(RecordIds(changes).size(), 2u);
  // Now budi may edit it.
  auto edit = Push(*field, {OpenChange(budi, case_id, core::kCaseKind, {}, kRegionCode,
                                       CaseText(kRegionCode, "77"))});
  EXPECT_EQ(edit.results(0).status(), Status::STATUS_APPLIED) << edit.results(0).reason();
}

TEST_F(PushPullTest, ConcurrentLoserIsKeptInHistory) {
  TestDevice rina = EnrollApproved(v1::ROLE_OFFICE, "rina");
  TestDevice tono = EnrollApproved(v1::ROLE_SUPERVISOR, "tono");
  auto a = Login(rina);
  auto b = Login(tono);
  Id case_id = NewCase(*a, rina);
  auto base = PullAll(*b);
  ASSERT_EQ(base.size(), 2u);
  // Both edit the region code over the same base; tono's stamp is later.
  auto mine = OpenChange(rina, case_id, core::kCaseKind, {}, kRegionCode, CaseText(14, "A"));
  auto theirs = OpenChange(tono, case_id, core::kCaseKind, {}, kRegionCode, CaseText(14, "B"));
  *mine.mutable_base() = base[1].stamp();
  *theirs.mutable_base() = base[1].stamp();
  EXPECT_EQ(Push(*b, {theirs}).results(0).status(), Status::STATUS_APPLIED);
  auto lost = Push(*a, {mine});
  EXPECT_EQ(lost.results(0).status(), Status::STATUS_MERGED);
  EXPECT_EQ(lost.results(0).current().hlc(), theirs.stamp().hlc());

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(StorePath(data_dir_).c_str(), &db, SQLITE_OPEN_READONLY, nullptr),
            SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(
      sqlite3_prepare_v2(db, "SELECT reason FROM field_history ORDER BY id", -1, &st, nullptr),
      SQLITE_OK);
  std::vector<std::string> reasons;
  while (sqlite3_step(st) == SQLITE_ROW)
    reasons.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
  sqlite3_finalize(st);
  sqlite3_close(db);
  // The original value was overwritten by tono's; rina's lost the merge.
  EXPECT_EQ(reasons, (std::vector<std::string>{"overwritten", "lost_merge"}));
}

// Concurrent edits of a UNION field end as the union under a server stamp;
// a MAX field keeps the higher risk even when the lower one is written later.
TEST_F(PushPullTest, ConcurrentEditsMergeByTheFieldsRule) {
  namespace cw = teduh::casework::v1;
  TestDevice rina = EnrollApproved(v1::ROLE_OFFICE, "rina");
  TestDevice tono = EnrollApproved(v1::ROLE_SUPERVISOR, "tono");
  auto a = Login(rina);
  auto b = Login(tono);
  Id case_id = NewCase(*a, rina);
  auto base = PullAll(*b);
  ASSERT_EQ(base.size(), 2u);
  auto value = [](auto set) {
    cw::Case c;
    set(c);
    return c.SerializeAsString();
  };
  constexpr std::uint32_t kViolenceTypes = 6, kRiskLevel = 7;
  auto mine =
      OpenChange(rina, case_id, core::kCaseKind, {}, kViolenceTypes,
                 value([](cw::Case& c) { c.add_violence_types(cw::VIOLENCE_TYPE_PHYSICAL); }));
  auto theirs =
      OpenChange(tono, case_id, core::kCaseKind, {}, kViolenceTypes,
                 value([](cw::Case& c) { c.add_violence_types(cw::VIOLENCE_TYPE_SEXUAL); }));
  auto high = OpenChange(rina, case_id, core::kCaseKind, {}, kRiskLevel,
                         value([](cw::Case& c) { c.set_risk_level(cw::RISK_LEVEL_HIGH); }));
  auto low = OpenChange(tono, case_id, core::kCaseKind, {}, kRiskLevel,
                        value([](cw::Case& c) { c.set_risk_level(cw::RISK_LEVEL_LOW); }), 1000);
  ASSERT_EQ(Push(*a, {mine, high}).results(0).status(), Status::STATUS_APPLIED);
  auto merged = Push(*b, {theirs, low});  // concurrent: no base
  ASSERT_EQ(merged.results_size(), 2);
  EXPECT_EQ(merged.results(0).status(), Status::STATUS_MERGED);
  EXPECT_GT(merged.results(0).current().hlc(), theirs.stamp().hlc());  // a new server value
  EXPECT_EQ(merged.results(1).status(), Status::STATUS_MERGED);        // the higher risk stays
  EXPECT_EQ(merged.results(1).current().hlc(), high.stamp().hlc());

  std::optional<cw::Case> types, risk;
  for (const auto& ch : PullAll(*b)) {
    cw::Case c;
    ASSERT_TRUE(c.ParseFromString(ch.value()));
    if (ch.field() == kViolenceTypes) types = c;
    if (ch.field() == kRiskLevel) risk = c;
  }
  ASSERT_TRUE(types && risk);
  ASSERT_EQ(types->violence_types_size(), 2);
  EXPECT_EQ(types->violence_types(0), cw::VIOLENCE_TYPE_PHYSICAL);
  EXPECT_EQ(types->violence_types(1), cw::VIOLENCE_TYPE_SEXUAL);
  EXPECT_EQ(risk->risk_level(), cw::RISK_LEVEL_HIGH);

  // Nothing is lost: both inputs of the union, and the lower risk, are in history.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(StorePath(data_dir_).c_str(), &db, SQLITE_OPEN_READONLY, nullptr),
            SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT field, reason FROM field_history ORDER BY id", -1, &st,
                               nullptr),
            SQLITE_OK);
  std::vector<std::string> rows;
  while (sqlite3_step(st) == SQLITE_ROW)
    rows.push_back(std::to_string(sqlite3_column_int(st, 0)) + ":" +
                   reinterpret_cast<const char*>(sqlite3_column_text(st, 1)));
  sqlite3_finalize(st);
  sqlite3_close(db);
  EXPECT_EQ(rows, (std::vector<std::string>{"6:merged", "6:merged", "7:lost_merge"}));
}

// A field officer cannot close a conflict, nor mark an edit as a resolution
// to skip the conflict queue; no device can write a conflict's detection.
TEST_F(PushPullTest, OnlyOfficeStaffResolveConflicts) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  TestDevice budi = EnrollApproved(v1::ROLE_OFFICE, "budi");
  auto a = Login(siti);
  auto b = Login(budi);
  Id case_id = NewCase(*a, siti);
  auto resolving =
      OpenChange(siti, case_id, core::kCaseKind, {}, kRegionCode, CaseText(kRegionCode, "14.72"));
  resolving.set_resolves(std::string(core::AsBytes(core::NewId())));
  auto r = Push(*a, {resolving});
  EXPECT_EQ(r.results(0).status(), Status::STATUS_REJECTED);
  EXPECT_EQ(r.results(0).reason(), "forbidden");
  auto forged = OpenChange(budi, core::NewId(), core::kConflictKind, case_id, 1, "");
  auto f = Push(*b, {forged});
  EXPECT_EQ(f.results(0).status(), Status::STATUS_REJECTED);
  EXPECT_EQ(f.results(0).reason(), "forbidden");
}

TEST_F(PushPullTest, OfficeIsPokedWhenAFieldOfficerPushes) {
  TestDevice rina = EnrollApproved(v1::ROLE_OFFICE, "rina");
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  auto office = Login(rina);
  auto field = Login(siti);
  NewCase(*field, siti);
  auto poke = office->Receive(std::chrono::seconds(5), /*keep_pokes=*/true);
  ASSERT_TRUE(poke);
  EXPECT_TRUE(poke->has_poke());
}

TEST_F(PushPullTest, DeviceListShowsLastSync) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  auto client = Login(siti);
  NewCase(*client, siti);
  auto devices = ListDevices(data_dir_);
  ASSERT_TRUE(devices);
  bool found = false;
  for (const auto& d : *devices)
    if (d.device_id == siti.device_id) {
      found = true;
      EXPECT_EQ(d.state, v1::DEVICE_STATE_ACTIVE);
      EXPECT_EQ(d.last_sync_ms, env_.NowMs());
    }
  EXPECT_TRUE(found);
}

// ---- An answer is the truth: sequence numbers (PROTOCOL §4) ----------------

TEST_F(PushPullTest, ANumberReusedForAnotherChangeIsRefusedAndNothingIsStored) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  auto client = Login(siti);
  Id first = NewCase(*client, siti, "K-1");  // device_seq 1 and 2
  const auto before = PullAll(*client);

  // A home restored from an earlier copy numbers a new case's edits 1 and 2 again.
  Id second = core::NewId();
  auto reused =
      OpenChange(siti, second, core::kCaseKind, {}, kCaseNumber, CaseText(kCaseNumber, "K-2"));
  reused.set_device_seq(1);
  auto r = Push(*client, {reused});
  ASSERT_EQ(r.results_size(), 1);
  EXPECT_EQ(r.results(0).status(), Status::STATUS_REJECTED);
  EXPECT_EQ(r.results(0).reason(), core::kSeqReusedReason);
  EXPECT_FALSE(r.results(0).detail().empty());
  EXPECT_EQ(PullAll(*client).size(), before.size()) << "nothing of the refused change is stored";

  // The same change under a number above the mark is stored and answered.
  reused.set_device_seq(3);
  NextSeq(siti) = 3;
  r = Push(*client, {reused});
  EXPECT_EQ(r.results(0).status(), Status::STATUS_APPLIED);
  auto after = PullAll(*client);
  EXPECT_EQ(RecordIds(after), (std::set<std::string>{std::string(core::AsBytes(first)),
                                                     std::string(core::AsBytes(second))}));
  // Sent again, the stored change is answered, not stored twice.
  auto resend = Push(*client, {reused});
  EXPECT_EQ(resend.results(0).status(), Status::STATUS_APPLIED);
  EXPECT_EQ(PullAll(*client).size(), after.size());
}

TEST_F(PushPullTest, AChangeResentWithTheSameNumberAndContentIsAnsweredNotStoredAgain) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  auto client = Login(siti);
  Id case_id = core::NewId();
  auto change =
      OpenChange(siti, case_id, core::kCaseKind, {}, kCaseNumber, CaseText(kCaseNumber, "K-9"));
  ASSERT_EQ(Push(*client, {change}).results(0).status(), Status::STATUS_APPLIED);
  // Same number, same record and stamp, another open value: not the same change.
  auto altered = change;
  altered.set_value(CaseText(kCaseNumber, "K-10"));
  auto r = Push(*client, {altered});
  EXPECT_EQ(r.results(0).status(), Status::STATUS_REJECTED);
  EXPECT_EQ(r.results(0).reason(), core::kSeqReusedReason);
  auto pulled = PullAll(*client);
  ASSERT_EQ(pulled.size(), 1u);
  EXPECT_EQ(pulled[0].value(), CaseText(kCaseNumber, "K-9"));
}

TEST_F(PushPullTest, ANumberFarAboveTheMarkIsRefusedAndLaterEditsStillLand) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  auto client = Login(siti);
  Id case_id = NewCase(*client, siti);  // device_seq 1 and 2
  auto huge =
      OpenChange(siti, case_id, core::kCaseKind, {}, kRegionCode, CaseText(kRegionCode, "9999"));
  huge.set_device_seq(UINT64_MAX);
  auto r = Push(*client, {huge});
  EXPECT_EQ(r.results(0).status(), Status::STATUS_REJECTED);
  EXPECT_EQ(r.results(0).reason(), core::kSeqJumpReason);
  auto jump = huge;
  jump.set_device_seq(2 + core::kMaxSeqJump + 1);
  EXPECT_EQ(Push(*client, {jump}).results(0).reason(), core::kSeqJumpReason);

  // The mark did not move: the device's next edit is stored, not taken for a resend.
  NextSeq(siti) = 2;
  auto next =
      OpenChange(siti, case_id, core::kCaseKind, {}, kRegionCode, CaseText(kRegionCode, "1471"));
  ASSERT_EQ(next.device_seq(), 3u);
  EXPECT_EQ(Push(*client, {next}).results(0).status(), Status::STATUS_APPLIED);
  bool found = false;
  for (const auto& c : PullAll(*client))
    if (c.field() == kRegionCode) {
      found = true;
      EXPECT_EQ(c.value(), CaseText(kRegionCode, "1471"));
    }
  EXPECT_TRUE(found);
  auto again = Authenticate(*TestClient::Connect(server_->port()), siti);
  ASSERT_TRUE(again && again->has_welcome());
  EXPECT_EQ(again->welcome().device_mark(), 3u);
}

TEST_F(PushPullTest, ANumberNotAboveThePreviousOneInAPushIsRefused) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  auto client = Login(siti);
  Id case_id = core::NewId();
  auto a =
      OpenChange(siti, case_id, core::kCaseKind, {}, kCaseNumber, CaseText(kCaseNumber, "K-3"));
  auto b = OpenChange(siti, case_id, core::kCaseKind, {}, kRegionCode, CaseText(kRegionCode, "14"));
  a.set_device_seq(5);
  b.set_device_seq(4);
  auto r = Push(*client, {a, b});
  ASSERT_EQ(r.results_size(), 2);
  EXPECT_EQ(r.results(0).status(), Status::STATUS_APPLIED);
  EXPECT_EQ(r.results(1).status(), Status::STATUS_REJECTED);
  EXPECT_EQ(r.results(1).reason(), core::kSeqOrderReason);
  EXPECT_EQ(PullAll(*client).size(), 1u);
  // Number 4 was never used: alone, below the mark, it is a new change and stored.
  r = Push(*client, {b});
  EXPECT_EQ(r.results(0).status(), Status::STATUS_APPLIED);
  EXPECT_EQ(PullAll(*client).size(), 2u);
}

TEST_F(PushPullTest, TheWelcomeTellsADeviceTheServersMarkForIt) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  {
    auto fresh = TestClient::Connect(server_->port());
    auto w = Authenticate(*fresh, siti);
    ASSERT_TRUE(w && w->has_welcome());
    EXPECT_EQ(w->welcome().device_mark(), 0u);
  }
  auto client = Login(siti);
  NewCase(*client, siti);
  auto again = TestClient::Connect(server_->port());
  auto w = Authenticate(*again, siti);
  ASSERT_TRUE(w && w->has_welcome());
  EXPECT_EQ(w->welcome().device_mark(), 2u);
}

// Pull.rolled_back is a claim the server checks against its own store: a
// device that has seen nothing newer cannot make every device start again.
TEST_F(PushPullTest, ARollBackClaimTheStoreDisprovesChangesNothing) {
  TestDevice siti = EnrollApproved(v1::ROLE_OFFICE, "siti");
  auto client = Login(siti);
  NewCase(*client, siti);
  auto before = PullFrame(*client, 0);
  ASSERT_TRUE(before && before->has_changes());
  const std::uint64_t generation = before->changes().generation();
  v1::Frame f;
  f.set_request_id(next_request_++);
  f.mutable_pull()->set_generation(generation);
  f.mutable_pull()->set_after_seq(1);
  f.mutable_pull()->set_rolled_back(true);
  f.mutable_pull()->set_acknowledged_mark(2);  // what the server acknowledged: no more
  auto reply = client->Call(f);
  ASSERT_TRUE(reply && reply->has_changes()) << (reply ? reply->DebugString() : "no reply");
  EXPECT_EQ(reply->changes().generation(), generation) << "nothing to roll back";
  EXPECT_FALSE(reply->changes().reset());
  // A cursor beyond the store's head is evidence: the store takes a new generation.
  f.set_request_id(next_request_++);
  f.mutable_pull()->set_after_seq(1'000'000);
  reply = client->Call(f);
  ASSERT_TRUE(reply && reply->has_changes());
  EXPECT_NE(reply->changes().generation(), generation);
  EXPECT_TRUE(reply->changes().reset());
  EXPECT_EQ(PullAll(*client).size(), 2u) << "a reset pull starts from the beginning";
}

// A store from before receipts: a change at or below a device's mark then is
// still answered as a resend; numbers above it are checked by receipt.
TEST_F(PushPullTest, AStoreFromBeforeReceiptsStillAnswersOldResends) {
  TestDevice siti = EnrollApproved(v1::ROLE_PENDAMPING, "siti");
  Id case_id;
  std::vector<v1::FieldChange> old_batch;
  {
    auto client = Login(siti);
    case_id = core::NewId();
    old_batch = {
        OpenChange(siti, case_id, core::kCaseKind, {}, kCaseNumber, CaseText(kCaseNumber, "K-1")),
        OpenChange(siti, case_id, core::kCaseKind, {}, kRegionCode, CaseText(kRegionCode, "14"))};
    Push(*client, old_batch);
  }
  StopServer();
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(StorePath(data_dir_).c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "DROP TABLE receipts; DROP TABLE receipt_floors; UPDATE meta SET "
                           "value = '4' WHERE key = 'schema_version';",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  StartServer();  // migrates: siti's floor is 2
  auto client = Login(siti);
  auto r = Push(*client, old_batch);
  for (const auto& res : r.results()) EXPECT_EQ(res.status(), Status::STATUS_APPLIED);
  // At or below the floor a number is answered as a resend and never stored
  // again, whatever it carries (without the floor it would be a new change).
  auto altered = old_batch[0];
  altered.set_value(CaseText(kCaseNumber, "K-ALTERED"));
  Push(*client, {altered});
  for (const auto& c : PullAll(*client))
    if (c.field() == kCaseNumber) EXPECT_EQ(c.value(), CaseText(kCaseNumber, "K-1"));
  auto next =
      OpenChange(siti, case_id, core::kCaseKind, {}, kRegionCode, CaseText(kRegionCode, "15"));
  ASSERT_EQ(Push(*client, {next}).results(0).status(), Status::STATUS_APPLIED);
  auto other = next;
  other.set_value(CaseText(kRegionCode, "16"));
  EXPECT_EQ(Push(*client, {other}).results(0).reason(), core::kSeqReusedReason);
  EXPECT_EQ(PullAll(*client).size(), 2u);
}

}  // namespace
}  // namespace teduh::server::testing
