#include "teduh/core/deadlines.h"

#include <gtest/gtest.h>

namespace teduh::core {
namespace {

namespace cw = teduh::casework::v1;

TEST(DeadlinesTest, AClosureNeedsItsChecklistAndAResolvedOneTheSuccessCriteria) {
  const std::vector<int> none;
  const std::vector<int> criteria = {cw::CLOSURE_CHECK_SAFE, cw::CLOSURE_CHECK_NEEDS_MET,
                                     cw::CLOSURE_CHECK_NO_REPEAT_VIOLENCE};
  EXPECT_NE(ClosureProblem(cw::CLOSURE_REASON_RESOLVED, none), "");
  EXPECT_NE(ClosureProblem(cw::CLOSURE_REASON_WITHDRAWN, none), "");
  EXPECT_EQ(ClosureProblem(cw::CLOSURE_REASON_UNREACHABLE, none), "");  // nobody met her
  EXPECT_EQ(ClosureProblem(cw::CLOSURE_REASON_RESOLVED, criteria), "");
  EXPECT_NE(ClosureProblem(cw::CLOSURE_REASON_RESOLVED,
                           {cw::CLOSURE_CHECK_SAFE, cw::CLOSURE_CHECK_NEEDS_MET}),
            "");
  EXPECT_EQ(ClosureProblem(cw::CLOSURE_REASON_REFERRED, {cw::CLOSURE_CHECK_SAFE}), "");
  EXPECT_EQ(ClosureProblem(cw::CLOSURE_REASON_WITHDRAWN, {cw::CLOSURE_CHECK_NONE_MET}), "");
  EXPECT_NE(ClosureProblem(cw::CLOSURE_REASON_WITHDRAWN,
                           {cw::CLOSURE_CHECK_NONE_MET, cw::CLOSURE_CHECK_SAFE}),
            "");
}

TEST(DeadlinesTest, EachEpisodeHasItsOwnDeadlinesAndTheFirstKeepsItsIds) {
  const Id c{7};
  EXPECT_EQ(EpisodeCycle(1, 0), 0u);
  EXPECT_EQ(EpisodeCycle(0, 3), 3u);  // unset episode: the first
  EXPECT_NE(TaskId(c, cw::TASK_KIND_OUTREACH, EpisodeCycle(2, 0)),
            TaskId(c, cw::TASK_KIND_OUTREACH, EpisodeCycle(1, 0)));
  EXPECT_NE(EpisodeCycle(2, 1), EpisodeCycle(3, 1));
  cw::Case k;
  k.set_received_at(1000);
  EXPECT_EQ(EpisodeOf(k), 1);
  EXPECT_EQ(OutreachFrom(k), 1000);
  k.set_episode(2);
  k.set_reopened_at(5000);
  EXPECT_EQ(OutreachFrom(k), 5000);
}

}  // namespace
}  // namespace teduh::core
