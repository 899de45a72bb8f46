#include "teduh/core/local_store.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "teduh/case/v1/case.pb.h"
#include "teduh/core/schema.h"

namespace teduh::core {
namespace {

namespace fs = std::filesystem;
namespace pb = teduh::sync::v1;
namespace cw = teduh::casework::v1;

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

class LocalStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(crypto::Init());
    dir_ = fs::temp_directory_path() / ("teduh-store-" + ToHex(NewId()));
    fs::create_directories(dir_);
    key_ = std::move(*crypto::RandomSecret(32));
    device_ = NewId();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<LocalStore> OpenStore(StoreOptions o = {}) {
    auto s = LocalStore::Open(dir_ / "store.db", key_, device_, env_, std::move(o));
    EXPECT_TRUE(s) << (s ? "" : s.error().message);
    return s ? std::move(*s) : nullptr;
  }

  // One open Case field change.
  LocalChange CaseField(const Id& id, const google::protobuf::Message& m, std::uint32_t field,
                        LocalStore::EditTxn& txn) {
    LocalChange c;
    c.record_id = id;
    c.kind = std::string(kCaseKind);
    c.field = field;
    c.value = m.SerializeAsString();
    c.stamp = txn.NextStamp();
    return c;
  }

  pb::FieldChange Pulled(const Id& id, std::uint32_t field, const std::string& value,
                         std::uint64_t hlc, std::uint64_t seq) {
    pb::FieldChange c;
    c.set_record_id(std::string(AsBytes(id)));
    c.set_kind(std::string(kCaseKind));
    c.set_field(field);
    c.set_value(value);
    c.mutable_stamp()->set_hlc(hlc);
    Id other = NewId();
    c.mutable_stamp()->set_device_id(std::string(AsBytes(other)));
    c.set_seq(seq);
    return c;
  }

  fs::path dir_;
  crypto::SecureBuffer key_;
  Id device_{};
  FakeEnv env_{1'700'000'000'000};
  Hlc hlc_{env_, 0};
};

TEST_F(LocalStoreTest, EditWritesFieldAndOutboxInOneTransaction) {
  auto store = OpenStore();
  Id id = NewId();
  cw::Case m;
  m.set_region_code("1472");
  ASSERT_TRUE(store->Edit(hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    return txn.Put(CaseField(id, m, cw::Case::kRegionCodeFieldNumber, txn));
  }));
  auto fields = store->GetFields(id);
  ASSERT_TRUE(fields);
  ASSERT_EQ(fields->size(), 1u);
  EXPECT_TRUE((*fields)[0].pending);
  cw::Case back;
  ASSERT_TRUE(back.ParseFromString((*fields)[0].value));
  EXPECT_EQ(back.region_code(), "1472");
  auto pending = store->PendingChanges(10);
  ASSERT_TRUE(pending);
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].device_seq(), 1u);
  EXPECT_FALSE((*pending)[0].has_base());
  EXPECT_TRUE(store->CheckInvariants());
}

TEST_F(LocalStoreTest, FailedEditSavesNothing) {
  int puts = 0;
  StoreOptions o;
  o.fault = [&](std::string_view point) -> error_code {
    if (point == "edit.put" && ++puts == 2) return make_error_code(errc::io_error);
    return {};
  };
  auto store = OpenStore(o);
  Id id = NewId();
  cw::Case a, b;
  a.set_region_code("1472");
  b.set_risk_level(cw::RISK_LEVEL_HIGH);
  auto r = store->Edit(hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    if (auto x = txn.Put(CaseField(id, a, cw::Case::kRegionCodeFieldNumber, txn)); !x) return x;
    return txn.Put(CaseField(id, b, cw::Case::kRiskLevelFieldNumber, txn));
  });
  ASSERT_FALSE(r);
  EXPECT_TRUE(store->GetFields(id)->empty());
  EXPECT_EQ(store->CountOutbox()->pending, 0u);
  EXPECT_FALSE(*store->GetRecord(id));
  EXPECT_TRUE(store->CheckInvariants());
}

TEST_F(LocalStoreTest, DiskFullSavesNothingAndIsNotSticky) {
  StoreOptions o;
  o.max_page_count = 40;
  auto store = OpenStore(o);
  Id id = NewId();
  cw::Case big;
  big.set_region_code(std::string(60'000, 'x'));  // below the 64 KiB value bound
  Outcome<void> r = Outcome<void>();
  std::uint64_t saved = 0;
  for (int i = 0; i < 20 && r; ++i) {
    r = store->Edit(hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
      return txn.Put(CaseField(NewId(), big, cw::Case::kRegionCodeFieldNumber, txn));
    });
    if (r) ++saved;
  }
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::disk_full);
  EXPECT_FALSE(store->health());
  EXPECT_EQ(store->CountOutbox()->pending, saved);  // the failed edit left nothing
  EXPECT_TRUE(store->CheckInvariants());
  // Small edits still fit: the store keeps working.
  cw::Case small;
  small.set_stage(cw::STAGE_ASESMEN);
  EXPECT_TRUE(store->Edit(hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    return txn.Put(CaseField(id, small, cw::Case::kStageFieldNumber, txn));
  }));
}

TEST_F(LocalStoreTest, OutboxSurvivesReopen) {
  Id id = NewId();
  {
    auto store = OpenStore();
    cw::Case m;
    m.set_stage(cw::STAGE_ASESMEN);
    ASSERT_TRUE(store->Edit(hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
      return txn.Put(CaseField(id, m, cw::Case::kStageFieldNumber, txn));
    }));
  }
  auto store = OpenStore();
  auto pending = store->PendingChanges(10);
  ASSERT_TRUE(pending);
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].field(), static_cast<std::uint32_t>(cw::Case::kStageFieldNumber));
  EXPECT_GT(*store->PersistedHlc(), 0u);
}

TEST_F(LocalStoreTest, OpenValuesAreEncryptedAtRest) {
  auto store = OpenStore();
  Id id = NewId();
  cw::Case m;
  m.set_region_code("REGION-MARKER-7731");
  m.set_assigned_pendamping("pendamping-marker-rina");
  ASSERT_TRUE(store->Edit(hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    cw::Case a;
    a.set_region_code(m.region_code());
    cw::Case b;
    b.set_assigned_pendamping(m.assigned_pendamping());
    if (auto r = txn.Put(CaseField(id, a, cw::Case::kRegionCodeFieldNumber, txn)); !r) return r;
    return txn.Put(CaseField(id, b, cw::Case::kAssignedPendampingFieldNumber, txn));
  }));
  std::string all;
  for (auto suffix : {"", "-wal", "-shm"})
    all += ReadAll(dir_ / (std::string("store.db") + suffix));
  ASSERT_FALSE(all.empty());
  EXPECT_EQ(all.find("REGION-MARKER-7731"), std::string::npos);
  EXPECT_EQ(all.find("pendamping-marker-rina"), std::string::npos);
}

TEST_F(LocalStoreTest, PullBatchAndCursorAreAtomic) {
  int seen = 0;
  StoreOptions o;
  bool fail = true;
  o.fault = [&](std::string_view point) -> error_code {
    if (fail && point == "pull.change" && ++seen == 2) return make_error_code(errc::io_error);
    return {};
  };
  auto store = OpenStore(o);
  Id a = NewId(), b = NewId();
  cw::Case m;
  m.set_region_code("1472");
  pb::Changes batch;
  batch.set_generation(3);
  *batch.add_changes() = Pulled(a, cw::Case::kRegionCodeFieldNumber, m.SerializeAsString(),
                                HlcPack(1'700'000'100'000, 0), 1);
  *batch.add_changes() = Pulled(b, cw::Case::kRegionCodeFieldNumber, m.SerializeAsString(),
                                HlcPack(1'700'000'100'000, 1), 2);
  batch.set_last_seq(2);
  ASSERT_FALSE(store->ApplyPulled(hlc_, batch));
  EXPECT_EQ(store->Cursor()->last_seq, 0u);
  EXPECT_EQ(store->Cursor()->generation, 0u);
  EXPECT_FALSE(*store->GetRecord(a));
  fail = false;
  auto ok = store->ApplyPulled(hlc_, batch);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->applied, 2u);
  EXPECT_EQ(store->Cursor()->last_seq, 2u);
  EXPECT_EQ(store->Cursor()->generation, 3u);
  EXPECT_TRUE(*store->GetRecord(a));
  EXPECT_GE(hlc_.last(), HlcPack(1'700'000'100'000, 1));  // pulled stamps observed
}

TEST_F(LocalStoreTest, PulledValueWaitsWhileALocalEditIsPending) {
  auto store = OpenStore();
  Id id = NewId();
  cw::Case server_value;
  server_value.set_region_code("server");
  pb::Changes first;
  first.set_generation(1);
  *first.add_changes() = Pulled(id, cw::Case::kRegionCodeFieldNumber,
                                server_value.SerializeAsString(), HlcPack(1'600'000'000'000, 0), 1);
  first.set_last_seq(1);
  ASSERT_TRUE(store->ApplyPulled(hlc_, first));
  cw::Case mine;
  mine.set_region_code("mine");
  ASSERT_TRUE(store->Edit(hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    return txn.Put(CaseField(id, mine, cw::Case::kRegionCodeFieldNumber, txn));
  }));
  auto pending = store->PendingChanges(10);
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_TRUE((*pending)[0].has_base());  // edited over the server's value
  // A newer server value arrives while ours is pending: ours stays visible.
  cw::Case newer;
  newer.set_region_code("newer");
  pb::Changes second;
  second.set_generation(1);
  *second.add_changes() = Pulled(id, cw::Case::kRegionCodeFieldNumber, newer.SerializeAsString(),
                                 HlcPack(1'600'000'000'001, 0), 2);
  second.set_last_seq(2);
  auto applied = store->ApplyPulled(hlc_, second);
  ASSERT_TRUE(applied);
  EXPECT_EQ(applied->deferred, 1u);
  cw::Case shown;
  shown.ParseFromString((*store->GetField(id, cw::Case::kRegionCodeFieldNumber))->value);
  EXPECT_EQ(shown.region_code(), "mine");
  // The server rejects ours: the newest server value comes back.
  pb::PushResult result;
  auto* r = result.add_results();
  r->set_device_seq((*pending)[0].device_seq());
  r->set_status(pb::ChangeResult::STATUS_REJECTED);
  r->set_reason("forbidden");
  auto pushed = store->ApplyPushResults(*pending, result);
  ASSERT_TRUE(pushed);
  EXPECT_EQ(pushed->rejected, 1u);
  shown.ParseFromString((*store->GetField(id, cw::Case::kRegionCodeFieldNumber))->value);
  EXPECT_EQ(shown.region_code(), "newer");
  auto outbox = store->ListOutbox(false, 10);
  ASSERT_EQ(outbox->size(), 1u);
  EXPECT_EQ((*outbox)[0].state, OutboxState::kRejected);
  EXPECT_EQ((*outbox)[0].reason, "forbidden");
  EXPECT_TRUE(store->CheckInvariants());
}

// Invariant 8: after a reset pull, the device holds what the restored
// server holds, and its own edits, which it sends again.
TEST_F(LocalStoreTest, AResetPullDropsWhatTheRestoredServerLostButKeepsOwnEdits) {
  auto store = OpenStore();
  const Id kept = NewId(), lost = NewId(), own = NewId();
  cw::Case v;
  v.set_region_code("1472");
  pb::Changes before;
  before.set_generation(1);
  *before.add_changes() = Pulled(kept, cw::Case::kRegionCodeFieldNumber, v.SerializeAsString(),
                                 HlcPack(1'600'000'000'000, 0), 1);
  *before.add_changes() = Pulled(lost, cw::Case::kRegionCodeFieldNumber, v.SerializeAsString(),
                                 HlcPack(1'600'000'000'000, 1), 2);
  before.set_last_seq(2);
  ASSERT_TRUE(store->ApplyPulled(hlc_, before));
  ASSERT_TRUE(store->Edit(hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    return txn.Put(CaseField(own, v, cw::Case::kRegionCodeFieldNumber, txn));
  }));
  auto sent = store->PendingChanges(10);
  ASSERT_EQ(sent->size(), 1u);
  pb::PushResult result;
  result.add_results()->set_device_seq((*sent)[0].device_seq());
  result.mutable_results(0)->set_status(pb::ChangeResult::STATUS_APPLIED);
  ASSERT_TRUE(store->ApplyPushResults(*sent, result));

  // The restored server has `kept` only; the reset comes in two batches.
  pb::Changes first;
  first.set_generation(2);
  first.set_reset(true);
  first.set_has_more(true);
  first.set_last_seq(0);
  auto a = store->ApplyPulled(hlc_, first);
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->requeued, 1u);
  EXPECT_TRUE(*store->GetRecord(lost));  // nothing dropped before the pull ends
  pb::Changes last;
  last.set_generation(2);
  *last.add_changes() = Pulled(kept, cw::Case::kRegionCodeFieldNumber, v.SerializeAsString(),
                               HlcPack(1'600'000'000'000, 0), 1);
  last.set_last_seq(1);
  auto b = store->ApplyPulled(hlc_, last);
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ(b->set_aside, 1u);
  EXPECT_TRUE(*store->GetRecord(kept));
  EXPECT_FALSE(*store->GetRecord(lost));   // the device mirrors the server...
  EXPECT_EQ(*store->CountSetAside(), 1u);  // ...and keeps the value aside
  EXPECT_TRUE(*store->GetRecord(own));     // pending again, to be sent
  EXPECT_EQ(store->PendingChanges(10)->size(), 1u);
  EXPECT_TRUE(store->CheckInvariants());

  // Later pulls drop nothing.
  pb::Changes next;
  next.set_generation(2);
  next.set_last_seq(1);
  auto c = store->ApplyPulled(hlc_, next);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->set_aside, 0u);
  EXPECT_TRUE(*store->GetRecord(kept));
  EXPECT_EQ(*store->CountSetAside(), 1u);
}

// A re-sent edit of a field whose row holds another device's later value,
// which the restored server lost: when the server refuses the re-sent edit,
// the row goes too (the server has neither); when it keeps it, the row
// waits for the server's value.
TEST_F(LocalStoreTest, AReSentEditSettlesAFieldTheRestoredServerLost) {
  auto store = OpenStore();
  const Id id = NewId();
  cw::Case mine;
  mine.set_region_code("mine");
  ASSERT_TRUE(store->Edit(hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    return txn.Put(CaseField(id, mine, cw::Case::kRegionCodeFieldNumber, txn));
  }));
  auto sent = store->PendingChanges(10);
  ASSERT_EQ(sent->size(), 1u);
  pb::PushResult ok;
  ok.add_results()->set_device_seq((*sent)[0].device_seq());
  ok.mutable_results(0)->set_status(pb::ChangeResult::STATUS_APPLIED);
  ASSERT_TRUE(store->ApplyPushResults(*sent, ok));
  // Another device's later value arrives, then the server loses both.
  cw::Case theirs;
  theirs.set_region_code("theirs");
  pb::Changes later;
  later.set_generation(1);
  *later.add_changes() = Pulled(id, cw::Case::kRegionCodeFieldNumber, theirs.SerializeAsString(),
                                HlcPack(1'800'000'000'000, 0), 7);
  later.set_last_seq(7);
  ASSERT_TRUE(store->ApplyPulled(hlc_, later));
  pb::Changes reset;
  reset.set_generation(2);
  reset.set_reset(true);
  auto pulled = store->ApplyPulled(hlc_, reset);
  ASSERT_TRUE(pulled);
  EXPECT_EQ(pulled->requeued, 1u);
  EXPECT_TRUE(*store->GetField(id, cw::Case::kRegionCodeFieldNumber));  // kept: pending
  auto again = store->PendingChanges(10);
  ASSERT_EQ(again->size(), 1u);
  pb::PushResult refused;
  refused.add_results()->set_device_seq((*again)[0].device_seq());
  refused.mutable_results(0)->set_status(pb::ChangeResult::STATUS_REJECTED);
  refused.mutable_results(0)->set_reason("immutable");
  auto answered = store->ApplyPushResults(*again, refused);
  ASSERT_TRUE(answered);
  EXPECT_EQ(answered->rejected, 1u);
  EXPECT_FALSE(*store->GetField(id, cw::Case::kRegionCodeFieldNumber));
  EXPECT_EQ(*store->CountSetAside(), 1u);  // the other device's value, kept
  EXPECT_TRUE(store->CheckInvariants());
}

TEST_F(LocalStoreTest, AppliedResultWithNewStampRebasesLaterEdits) {
  auto store = OpenStore();
  Id id = NewId();
  for (const char* v : {"one", "two"}) {
    cw::Case m;
    m.set_region_code(v);
    ASSERT_TRUE(store->Edit(hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
      return txn.Put(CaseField(id, m, cw::Case::kRegionCodeFieldNumber, txn));
    }));
  }
  auto pending = *store->PendingChanges(1);
  pb::PushResult result;
  auto* r = result.add_results();
  r->set_device_seq(1);
  r->set_status(pb::ChangeResult::STATUS_APPLIED);
  r->mutable_stamp()->set_hlc(HlcPack(1'500'000'000'000, 0));  // re-stamped by the server
  r->mutable_stamp()->set_device_id(std::string(AsBytes(device_)));
  ASSERT_TRUE(store->ApplyPushResults(pending, result));
  auto next = *store->PendingChanges(10);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].base().hlc(), HlcPack(1'500'000'000'000, 0));
}

TEST_F(LocalStoreTest, MatchesIdsByPrefix) {
  auto store = OpenStore();
  Id id = NewId();
  cw::Case m;
  m.set_stage(cw::STAGE_PENGADUAN);
  ASSERT_TRUE(store->Edit(hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    return txn.Put(CaseField(id, m, cw::Case::kStageFieldNumber, txn));
  }));
  std::string hex = ToHex(id);
  auto lower = store->MatchPrefix(kCaseKind, hex.substr(0, 6));
  ASSERT_TRUE(lower);
  ASSERT_EQ(lower->size(), 1u);
  EXPECT_EQ(lower->front(), id);
  std::string upper = hex.substr(0, 8);
  for (auto& c : upper) c = static_cast<char>(std::toupper(c));
  EXPECT_EQ(store->MatchPrefix(kCaseKind, upper)->size(), 1u);
  EXPECT_TRUE(store->MatchPrefix(kPersonKind, hex.substr(0, 6))->empty());
  EXPECT_FALSE(store->MatchPrefix(kCaseKind, "zz'--"));
}

TEST_F(LocalStoreTest, RefusesAStoreOfAnotherDevice) {
  { auto store = OpenStore(); }
  device_ = NewId();
  auto other = LocalStore::Open(dir_ / "store.db", key_, device_, env_);
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code, errc::store_failed);
}

TEST_F(LocalStoreTest, AlteredOpenValueIsLeftOutAndReported) {
  auto store = OpenStore();
  Id id = NewId();
  cw::Case m;
  m.set_region_code("1472");
  ASSERT_TRUE(store->Edit(hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    return txn.Put(CaseField(id, m, cw::Case::kRegionCodeFieldNumber, txn));
  }));
  store.reset();
  // A different storage key stands in for tampering with the ciphertext.
  key_ = std::move(*crypto::RandomSecret(32));
  std::vector<DamagedRow> met;
  StoreOptions o;
  o.on_damage = [&](const DamagedRow& row) { met.push_back(row); };
  auto other = OpenStore(std::move(o));
  auto fields = other->GetFields(id);
  ASSERT_TRUE(fields);
  EXPECT_TRUE(fields->empty());
  ASSERT_EQ(met.size(), 1u);
  EXPECT_EQ(met[0].record_id, id);
  EXPECT_EQ(met[0].field, cw::Case::kRegionCodeFieldNumber);
  EXPECT_TRUE(other->damage_met());
}

}  // namespace
}  // namespace teduh::core
