#include "teduh/core/hlc.h"

#include <gtest/gtest.h>

namespace teduh::core {
namespace {

TEST(HlcTest, FollowsTheWallClockWhenItMovesForward) {
  FakeEnv env(1'000'000);
  Hlc hlc(env, 0);
  EXPECT_EQ(HlcMillis(hlc.Now()), 1'000'000);
  env.Advance(5);
  EXPECT_EQ(HlcMillis(hlc.Now()), 1'000'005);
}

TEST(HlcTest, NeverGoesBackwardsWhenTheWallClockSteppsBack) {
  FakeEnv env(1'000'000);
  Hlc hlc(env, 0);
  const std::uint64_t a = hlc.Now();
  env.Set(500'000);
  const std::uint64_t b = hlc.Now();
  EXPECT_GT(b, a);
  EXPECT_EQ(HlcMillis(b), 1'000'000);
}

TEST(HlcTest, AdvancesPastObservedStamps) {
  FakeEnv env(1'000'000);
  Hlc hlc(env, 0);
  const std::uint64_t remote = HlcPack(2'000'000, 7);
  hlc.Observe(remote);
  EXPECT_GT(hlc.Now(), remote);
}

TEST(HlcTest, SurvivesRestartFromPersistedValue) {
  FakeEnv env(1'000);
  const std::uint64_t persisted = HlcPack(9'000, 3);
  Hlc hlc(env, persisted);
  EXPECT_GT(hlc.Now(), persisted);
}

TEST(HlcTest, StampsAreTotallyOrderedWithDeviceAsTieBreak) {
  Stamp a{HlcPack(10, 0), Id{1}};
  Stamp b{HlcPack(10, 0), Id{2}};
  Stamp c{HlcPack(10, 1), Id{0}};
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_EQ(a, (Stamp{HlcPack(10, 0), Id{1}}));
}

}  // namespace
}  // namespace teduh::core
