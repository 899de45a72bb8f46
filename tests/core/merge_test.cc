#include "teduh/core/merge.h"

#include <gtest/gtest.h>

namespace teduh::core {
namespace {

const RecordKind& Kind(std::string_view name) { return *Schema::Get().FindKind(name); }

Stamp S(std::uint64_t ms, std::uint8_t dev) { return Stamp{HlcPack(ms, 0), Id{dev}}; }

TEST(MergeTest, FirstValueIsApplied) {
  const RecordKind& k = Kind(kCaseKind);
  auto d = DecideMerge(&k, k.FindFieldByName("region_code"), std::nullopt, std::nullopt, S(5, 1));
  EXPECT_EQ(d.action, MergeAction::kApply);
  EXPECT_FALSE(d.concurrent);
}

TEST(MergeTest, FastForwardWhenBaseIsCurrentEvenWithLowerStamp) {
  const RecordKind& k = Kind(kCaseKind);
  auto d = DecideMerge(&k, k.FindFieldByName("region_code"), S(10, 2), S(10, 2), S(9, 1));
  EXPECT_EQ(d.action, MergeAction::kApply);
  EXPECT_FALSE(d.concurrent);
}

TEST(MergeTest, ConcurrentLwwHigherStampWins) {
  const RecordKind& k = Kind(kCaseKind);
  const FieldPolicy* f = k.FindFieldByName("route");
  EXPECT_EQ(DecideMerge(&k, f, S(10, 2), S(5, 1), S(11, 1)).action, MergeAction::kApply);
  auto lose = DecideMerge(&k, f, S(10, 2), std::nullopt, S(9, 1));
  EXPECT_EQ(lose.action, MergeAction::kKeep);
  EXPECT_TRUE(lose.concurrent);
}

TEST(MergeTest, ImmutableFieldRejectsSecondWrite) {
  const RecordKind& k = Kind(kCaseKind);
  auto d = DecideMerge(&k, k.FindFieldByName("case_number"), S(10, 2), S(10, 2), S(11, 1));
  EXPECT_EQ(d.action, MergeAction::kReject);
  EXPECT_EQ(d.reason, "immutable");
}

TEST(MergeTest, AppendOnlyRecordRejectsAnyRewrite) {
  const RecordKind& k = Kind(kNoteKind);
  auto d = DecideMerge(&k, k.FindFieldByName("body"), S(10, 2), S(10, 2), S(11, 1));
  EXPECT_EQ(d.action, MergeAction::kReject);
}

TEST(MergeTest, UnknownFieldIsLww) {
  const RecordKind& k = Kind(kCaseKind);
  EXPECT_EQ(DecideMerge(&k, nullptr, S(10, 2), std::nullopt, S(12, 1)).action, MergeAction::kApply);
}

}  // namespace
}  // namespace teduh::core
