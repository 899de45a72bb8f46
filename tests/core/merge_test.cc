#include "teduh/core/merge.h"

#include <gtest/gtest.h>

#include "teduh/case/v1/case.pb.h"

namespace teduh::core {
namespace {

namespace cw = teduh::casework::v1;

const RecordKind& Kind(std::string_view name) { return *Schema::Get().FindKind(name); }

Stamp S(std::uint64_t ms, std::uint8_t dev) { return Stamp{HlcPack(ms, 0), Id{dev}}; }

// A value with only the stamp (rules that never read values).
MergeValue V(const Stamp& s) { return MergeValue{s, {}}; }

std::string Risk(cw::RiskLevel level) {
  cw::Case c;
  c.set_risk_level(level);
  return c.SerializeAsString();
}
std::string Stage(cw::Stage stage) {
  cw::Case c;
  c.set_stage(stage);
  return c.SerializeAsString();
}
std::string Types(std::initializer_list<cw::ViolenceType> types) {
  cw::Case c;
  for (auto t : types) c.add_violence_types(t);
  return c.SerializeAsString();
}
std::vector<int> TypesOf(const std::string& bytes) {
  cw::Case c;
  EXPECT_TRUE(c.ParseFromString(bytes));
  return {c.violence_types().begin(), c.violence_types().end()};
}

TEST(MergeTest, FirstValueIsApplied) {
  const RecordKind& k = Kind(kCaseKind);
  auto d =
      DecideMerge(&k, k.FindFieldByName("region_code"), std::nullopt, std::nullopt, V(S(5, 1)));
  EXPECT_EQ(d.action, MergeAction::kApply);
  EXPECT_FALSE(d.concurrent);
}

TEST(MergeTest, FastForwardWhenBaseIsCurrentEvenWithLowerStamp) {
  const RecordKind& k = Kind(kCaseKind);
  auto d = DecideMerge(&k, k.FindFieldByName("region_code"), V(S(10, 2)), S(10, 2), V(S(9, 1)));
  EXPECT_EQ(d.action, MergeAction::kApply);
  EXPECT_FALSE(d.concurrent);
}

// A device whose clock ran ahead: the server stored its value re-stamped
// (stamp 100, its own stamp 900 kept as the origin). Its next edit of the
// field in the same push names 900 as its base: it saw that value.
TEST(MergeTest, ARestampedValueIsTheBaseOfItsWritersNextEdit) {
  const RecordKind& k = Kind(kCaseKind);
  const FieldPolicy* review = k.FindFieldByName("chronology");
  ASSERT_EQ(review->merge, teduh::MERGE_RULE_REVIEW);
  const MergeValue restamped{S(100, 1), {}, S(900, 1).hlc};
  auto d = DecideMerge(&k, review, restamped, S(900, 1), V(S(950, 1)));
  EXPECT_EQ(d.action, MergeAction::kApply);
  EXPECT_FALSE(d.concurrent);
  EXPECT_FALSE(d.conflict);
  // Another device naming the same HLC did not write that value: concurrent.
  d = DecideMerge(&k, review, restamped, S(900, 2), V(S(950, 2)));
  EXPECT_TRUE(d.concurrent);
  EXPECT_TRUE(d.conflict);
  // A value that was not re-stamped matches no other stamp of its writer.
  d = DecideMerge(&k, review, V(S(100, 1)), S(900, 1), V(S(950, 1)));
  EXPECT_TRUE(d.concurrent);
  // A deliberate lowering of a MAX field over the re-stamped value stays.
  const FieldPolicy* max = k.FindFieldByName("risk_level");
  const std::string high = Risk(cw::RISK_LEVEL_HIGH), low = Risk(cw::RISK_LEVEL_LOW);
  d = DecideMerge(&k, max, MergeValue{S(100, 1), high, S(900, 1).hlc}, S(900, 1),
                  MergeValue{S(950, 1), low});
  EXPECT_EQ(d.action, MergeAction::kApply);
  EXPECT_FALSE(d.concurrent);
}

TEST(MergeTest, ConcurrentLwwHigherStampWins) {
  const RecordKind& k = Kind(kCaseKind);
  const FieldPolicy* f = k.FindFieldByName("route");
  EXPECT_EQ(DecideMerge(&k, f, V(S(10, 2)), S(5, 1), V(S(11, 1))).action, MergeAction::kApply);
  auto lose = DecideMerge(&k, f, V(S(10, 2)), std::nullopt, V(S(9, 1)));
  EXPECT_EQ(lose.action, MergeAction::kKeep);
  EXPECT_TRUE(lose.concurrent);
  EXPECT_FALSE(lose.conflict);
  // Equal milliseconds: the device id breaks the tie, the same way everywhere.
  EXPECT_EQ(DecideMerge(&k, f, V(S(10, 2)), std::nullopt, V(S(10, 3))).action, MergeAction::kApply);
  EXPECT_EQ(DecideMerge(&k, f, V(S(10, 3)), std::nullopt, V(S(10, 2))).action, MergeAction::kKeep);
}

TEST(MergeTest, ImmutableFieldRejectsSecondWrite) {
  const RecordKind& k = Kind(kCaseKind);
  auto d = DecideMerge(&k, k.FindFieldByName("case_number"), V(S(10, 2)), S(10, 2), V(S(11, 1)));
  EXPECT_EQ(d.action, MergeAction::kReject);
  EXPECT_EQ(d.reason, "immutable");
}

TEST(MergeTest, AppendOnlyRecordRejectsAnyRewrite) {
  const RecordKind& k = Kind(kNoteKind);
  auto d = DecideMerge(&k, k.FindFieldByName("body"), V(S(10, 2)), S(10, 2), V(S(11, 1)));
  EXPECT_EQ(d.action, MergeAction::kReject);
}

TEST(MergeTest, UnknownFieldIsLww) {
  const RecordKind& k = Kind(kCaseKind);
  EXPECT_EQ(DecideMerge(&k, nullptr, V(S(10, 2)), std::nullopt, V(S(12, 1))).action,
            MergeAction::kApply);
}

TEST(MergeTest, ConcurrentRiskLevelKeepsTheHigherRiskWhateverTheStamps) {
  const RecordKind& k = Kind(kCaseKind);
  const FieldPolicy* f = k.FindFieldByName("risk_level");
  const std::string high = Risk(cw::RISK_LEVEL_HIGH), low = Risk(cw::RISK_LEVEL_LOW);
  // The later write lowers the risk, concurrently: the higher risk stays.
  auto d = DecideMerge(&k, f, MergeValue{S(10, 2), high}, S(5, 1), MergeValue{S(20, 1), low});
  EXPECT_EQ(d.action, MergeAction::kKeep);
  EXPECT_TRUE(d.concurrent);
  // The earlier write raises it: it wins.
  d = DecideMerge(&k, f, MergeValue{S(20, 2), low}, S(5, 1), MergeValue{S(10, 1), high});
  EXPECT_EQ(d.action, MergeAction::kApply);
  // The same level: by stamp.
  EXPECT_EQ(
      DecideMerge(&k, f, MergeValue{S(20, 2), high}, S(5, 1), MergeValue{S(10, 1), high}).action,
      MergeAction::kKeep);
  // A supervisor who saw HIGH may lower it on purpose (fast-forward).
  d = DecideMerge(&k, f, MergeValue{S(20, 2), high}, S(20, 2), MergeValue{S(30, 1), low});
  EXPECT_EQ(d.action, MergeAction::kApply);
  EXPECT_FALSE(d.concurrent);
}

TEST(MergeTest, StageMovesToTheFurtherStageByRankNotByNumber) {
  const RecordKind& k = Kind(kCaseKind);
  const FieldPolicy* f = k.FindFieldByName("stage");
  // PEMULANGAN (number 9, rank 82) is further than PEMANTAUAN (number 8, rank 80);
  // TERMINASI (rank 100) beats PEMBERDAYAAN (number 11, rank 86).
  auto d = DecideMerge(&k, f, MergeValue{S(30, 2), Stage(cw::STAGE_PEMANTAUAN)}, S(1, 1),
                       MergeValue{S(20, 1), Stage(cw::STAGE_PEMULANGAN)});
  EXPECT_EQ(d.action, MergeAction::kApply);
  d = DecideMerge(&k, f, MergeValue{S(10, 2), Stage(cw::STAGE_TERMINASI)}, S(1, 1),
                  MergeValue{S(20, 1), Stage(cw::STAGE_PEMBERDAYAAN)});
  EXPECT_EQ(d.action, MergeAction::kKeep);
  EXPECT_EQ(MergeRank(k, *f, Stage(cw::STAGE_PEMULANGAN)), 82);
  EXPECT_EQ(MergeRank(k, *f, "\xff"), std::nullopt);  // does not decode
}

TEST(MergeTest, ConcurrentViolenceTypesAreUnitedTheSameWayInEitherOrder) {
  const RecordKind& k = Kind(kCaseKind);
  const FieldPolicy* f = k.FindFieldByName("violence_types");
  const std::string a = Types({cw::VIOLENCE_TYPE_PSYCHOLOGICAL, cw::VIOLENCE_TYPE_PHYSICAL});
  const std::string b = Types({cw::VIOLENCE_TYPE_SEXUAL, cw::VIOLENCE_TYPE_PHYSICAL});
  auto ab = DecideMerge(&k, f, MergeValue{S(10, 2), a}, S(1, 1), MergeValue{S(11, 1), b});
  auto ba = DecideMerge(&k, f, MergeValue{S(11, 1), b}, S(1, 1), MergeValue{S(10, 2), a});
  ASSERT_EQ(ab.action, MergeAction::kCombine);
  ASSERT_EQ(ba.action, MergeAction::kCombine);
  EXPECT_EQ(ab.combined, ba.combined);
  EXPECT_EQ(TypesOf(ab.combined),
            (std::vector<int>{cw::VIOLENCE_TYPE_PHYSICAL, cw::VIOLENCE_TYPE_PSYCHOLOGICAL,
                              cw::VIOLENCE_TYPE_SEXUAL}));
  // Nothing new on the incoming side: the current value stays.
  auto sub = DecideMerge(&k, f, MergeValue{S(10, 2), a}, S(1, 1),
                         MergeValue{S(11, 1), Types({cw::VIOLENCE_TYPE_PHYSICAL})});
  EXPECT_EQ(sub.action, MergeAction::kKeep);
  // A deliberate removal (fast-forward) is applied.
  auto removal = DecideMerge(&k, f, MergeValue{S(10, 2), a}, S(10, 2),
                             MergeValue{S(11, 1), Types({cw::VIOLENCE_TYPE_PHYSICAL})});
  EXPECT_EQ(removal.action, MergeAction::kApply);
}

TEST(MergeTest, ConcurrentReviewEditIsProvisionallyLwwAndFlaggedForAPerson) {
  const RecordKind& k = Kind(kCaseKind);
  const FieldPolicy* f = k.FindFieldByName("chronology");
  auto d = DecideMerge(&k, f, V(S(10, 2)), S(5, 1), V(S(11, 1)));
  EXPECT_EQ(d.action, MergeAction::kApply);
  EXPECT_TRUE(d.conflict);
  auto lose = DecideMerge(&k, f, V(S(10, 2)), S(5, 1), V(S(9, 1)));
  EXPECT_EQ(lose.action, MergeAction::kKeep);
  EXPECT_TRUE(lose.conflict);
  // Not concurrent: no conflict.
  EXPECT_FALSE(DecideMerge(&k, f, V(S(10, 2)), S(10, 2), V(S(11, 1))).conflict);
}

// Sealed values cannot be compared by the server: a sealed field is decided
// by its stamp alone, whatever rule it would declare, and a REVIEW field is
// still queued for a person (the schema test holds every sealed field to LWW
// or REVIEW, ARCHITECTURE §2.3).
TEST(MergeTest, SealedFieldsAreDecidedByStampAlone) {
  const RecordKind& k = Kind(kCaseKind);
  FieldPolicy sealed_max = *k.FindFieldByName("risk_level");
  sealed_max.sealed = true;
  const std::string high = Risk(cw::RISK_LEVEL_HIGH), low = Risk(cw::RISK_LEVEL_LOW);
  // Open, the higher risk stays; sealed, the later stamp wins.
  auto d = DecideMerge(&k, k.FindFieldByName("risk_level"), MergeValue{S(10, 2), high}, S(5, 1),
                       MergeValue{S(20, 1), low});
  EXPECT_EQ(d.action, MergeAction::kKeep);
  d = DecideMerge(&k, &sealed_max, MergeValue{S(10, 2), high}, S(5, 1), MergeValue{S(20, 1), low});
  EXPECT_EQ(d.action, MergeAction::kApply);
  EXPECT_FALSE(d.conflict);
  d = DecideMerge(&k, k.FindFieldByName("chronology"), V(S(20, 2)), S(5, 1), V(S(10, 1)));
  EXPECT_EQ(d.action, MergeAction::kKeep);
  EXPECT_TRUE(d.conflict);
}

// A reopened case (episode written by device 5 at ms 100, applied at seq 50).
TEST(MergeTest, TheCurrentEpisodeWinsAConcurrentPerEpisodeEdit) {
  const EpisodeMark ep{S(100, 5), 50};
  // The closed episode's value (seq 40) against the reopening's own edit.
  EXPECT_EQ(EpisodeOrder(ep, 40, S(20, 1), S(101, 5)), MergeAction::kApply);
  // A closure from a device that never saw the reopening (base and stamp
  // older, or its clock ahead but its base older) against the new episode.
  EXPECT_EQ(EpisodeOrder(ep, 60, S(20, 1), S(90, 2)), MergeAction::kKeep);
  EXPECT_EQ(EpisodeOrder(ep, 60, S(20, 1), S(500, 2)), MergeAction::kKeep);
  EXPECT_EQ(EpisodeOrder(ep, 60, std::nullopt, S(500, 2)), MergeAction::kKeep);
  // Both of the new episode, or both of the old: the field's rule decides.
  EXPECT_EQ(EpisodeOrder(ep, 60, S(120, 3), S(130, 2)), std::nullopt);
  EXPECT_EQ(EpisodeOrder(ep, 40, S(20, 1), S(30, 2)), std::nullopt);
  // The same device before the reopening is of the old episode.
  EXPECT_EQ(EpisodeOrder(ep, 60, S(20, 1), S(99, 5)), MergeAction::kKeep);
}

TEST(MergeTest, PerEpisodeFieldsAreTheStageAndTheClosure) {
  const RecordKind& k = Kind(kCaseKind);
  std::vector<std::string> per;
  for (const auto& f : k.fields)
    if (f.per_episode) per.push_back(f.name);
  EXPECT_EQ(
      per, (std::vector<std::string>{"stage", "closure_reason", "closed_at", "closure_checklist"}));
}

}  // namespace
}  // namespace teduh::core
