// The deadline board (issue 5; DOMAIN-REPORT §2.6): outreach is due 24 / 48 /
// 72 hours after a report was received for risk high / medium / low, and
// moves at once when the risk changes; monitoring comes due every 3 months
// (6 for low risk); a deadline marked met on one device is met everywhere,
// and two devices marking it at once write one record. All offline.
#include <gtest/gtest.h>

#include "server/device_fixture.h"
#include "teduh/server/report.h"

namespace teduh::server::testing {
namespace {

using core::errc;

using TaskTest = DeviceServerTest;

TEST_F(TaskTest, DeadlinesFollowTheRiskAndAMetDeadlineIsMetEverywhere) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  const std::int64_t t0 = env_.NowMs() / 1000;
  auto high = rina->NewCase({"risk_level=tinggi", "case_number=K-1"});
  auto low = rina->NewCase({"risk_level=rendah", "case_number=K-2"});
  auto reached = rina->NewCase({"risk_level=tinggi", "stage=penjangkauan"});
  auto unassessed = rina->NewCase({"case_number=K-4"});
  ASSERT_TRUE(high && low && reached && unassessed);

  auto tasks = rina->ListTasks(false, false);
  ASSERT_TRUE(tasks) << tasks.error().message;
  ASSERT_EQ(tasks->size(), 3u);  // the reached case has no outreach deadline
  const auto h = FindTask(*tasks, *high, "outreach");
  const auto l = FindTask(*tasks, *low, "outreach");
  const auto u = FindTask(*tasks, *unassessed, "outreach");
  ASSERT_TRUE(h && l && u);
  EXPECT_EQ(h->due_at, t0 + 24 * 3600);
  EXPECT_EQ(l->due_at, t0 + 72 * 3600);
  EXPECT_EQ(u->due_at, t0 + 24 * 3600);  // not assessed yet: as urgent as high
  EXPECT_EQ(h->case_number, "K-1");
  EXPECT_TRUE(h->mine);
  EXPECT_FALSE(h->overdue);
  EXPECT_EQ(tasks->back().case_id, *low);  // by due time

  // The risk is raised: the deadline moves at once, offline.
  ASSERT_TRUE(rina->SetCaseFields(core::ToHex(*low), {"risk_level=sedang"}));
  tasks = rina->ListTasks(false, false);
  EXPECT_EQ(FindTask(*tasks, *low, "outreach")->due_at, t0 + 48 * 3600);
  auto soon = rina->ListTasks(/*due_only=*/true, false);  // due within a day: not the medium one
  ASSERT_TRUE(soon);
  EXPECT_EQ(soon->size(), 2u);
  EXPECT_EQ(FindTask(*soon, *low, "outreach"), std::nullopt);

  env_.Advance(25LL * 3600 * 1000);
  auto due = rina->ListTasks(true, false);
  ASSERT_TRUE(due);
  ASSERT_EQ(due->size(), 3u);  // two overdue, and the medium one due within a day
  EXPECT_TRUE((*due)[0].overdue);
  EXPECT_FALSE(FindTask(*due, *low, "outreach")->overdue);

  // Met on rina's tablet, met on the office's device after a sync.
  auto done =
      rina->CompleteTask(core::ToHex(FindTask(*due, *high, "outreach")->task_id).substr(0, 8));
  ASSERT_TRUE(done) << done.error().message;
  EXPECT_EQ(FindTask(*rina->ListTasks(false, false), *high, "outreach"), std::nullopt);
  Sync(*rina);
  Sync(*ani);
  auto office = ani->ListTasks(false, false);
  ASSERT_TRUE(office);
  EXPECT_EQ(FindTask(*office, *high, "outreach"), std::nullopt);
  ASSERT_NE(FindTask(*office, *low, "outreach"), std::nullopt);
  EXPECT_TRUE(ani->ListTasks(false, /*mine_only=*/true)->empty());  // none assigned to ani

  // Both mark the same deadline met offline: one record, no rejection.
  const std::string both = core::ToHex(FindTask(*office, *low, "outreach")->task_id);
  ASSERT_TRUE(ani->CompleteTask(both));
  ASSERT_TRUE(rina->CompleteTask(both));
  EXPECT_EQ(Sync(*ani).rejected, 0u);
  EXPECT_EQ(Sync(*rina).rejected, 0u);
  Sync(*ani);
  EXPECT_EQ(FindTask(*ani->ListTasks(false, false), *low, "outreach"), std::nullopt);

  // Bad references change nothing.
  EXPECT_EQ(rina->CompleteTask("zz").error().code, errc::invalid_argument);
  EXPECT_EQ(rina->CompleteTask(both).error().code, errc::not_found);  // met already

  // The unit's report counts the same deadlines from the server's open
  // fields: the reached case and the medium one met in time; the high one
  // met an hour late; the unassessed one missed.
  auto report = ComputeReport(data_dir_, t0 - 86400, t0 + 86400, {}, 0, env_);
  ASSERT_TRUE(report) << report.error().message();
  EXPECT_EQ(report->received, 4u);
  EXPECT_EQ(report->deadlines_met, 2u);
  EXPECT_EQ(report->deadlines_missed, 2u);
  EXPECT_EQ(report->deadlines_open, 0u);
}

TEST_F(TaskTest, MonitoringComesDueCycleAfterCycle) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto c = rina->NewCase({"risk_level=rendah", "stage=pemantauan"});
  ASSERT_TRUE(c);
  const std::int64_t t0 = env_.NowMs() / 1000;
  auto tasks = rina->ListTasks(false, false);
  ASSERT_TRUE(tasks);
  const auto m = FindTask(*tasks, *c, "monitoring");
  ASSERT_NE(m, std::nullopt);
  EXPECT_NEAR(static_cast<double>(m->due_at), static_cast<double>(t0 + 182 * 86400), 2.0);
  ASSERT_TRUE(rina->CompleteTask(core::ToHex(m->task_id)));
  const auto again = rina->ListTasks(false, false);
  ASSERT_TRUE(again);
  auto next = FindTask(*again, *c, "monitoring");
  ASSERT_NE(next, std::nullopt);
  EXPECT_NEAR(static_cast<double>(next->due_at), static_cast<double>(t0 + 2 * 182 * 86400), 2.0);
  // Closing needs a reason and the outcome checklist; then the case has no
  // deadlines.
  EXPECT_EQ(rina->SetCaseFields(core::ToHex(*c), {"stage=terminasi"}).error().code,
            errc::invalid_argument);
  ASSERT_TRUE(rina->SetCaseFields(
      core::ToHex(*c), {"stage=terminasi", "closure_reason=selesai",
                        "closure_checklist=aman,kebutuhan_terpenuhi,no_repeat_violence"}));
  EXPECT_NE(Value(*rina, *c, "closed_at"), "");  // set when it was closed
  EXPECT_EQ(FindTask(*rina->ListTasks(false, false), *c, "monitoring"), std::nullopt);
}

TEST_F(TaskTest, AVisitLogsTheAttemptAndThreeMissedVisitsProposeClosureForASupervisor) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto tono = Staff("tono", v1::ROLE_SUPERVISOR);
  auto low = rina->NewCase({"risk_level=rendah", "case_number=K-9"});
  auto high = rina->NewCase({"risk_level=tinggi"});
  ASSERT_TRUE(low && high);

  // Bad input is refused and saves nothing.
  EXPECT_EQ(rina->LogVisit(core::ToHex(*low), "", "", "").error().code, errc::bad_value);
  EXPECT_EQ(rina->LogVisit(core::ToHex(*low), "teleport", "reached", "").error().code,
            errc::bad_value);

  // Reaching the victim of the high-risk case meets its outreach deadline.
  ASSERT_TRUE(rina->LogVisit(core::ToHex(*high), "home_visit", "bertemu", "Korban aman di rumah"));
  EXPECT_EQ(FindTask(*rina->ListTasks(false, false), *high, "outreach"), std::nullopt);
  EXPECT_EQ(Value(*rina, *high, "stage"), "penjangkauan");
  auto view = rina->ShowCase(core::ToHex(*high));
  ASSERT_TRUE(view);
  ASSERT_EQ(view->notes.size(), 1u);
  EXPECT_EQ(view->notes[0].text, "Korban aman di rumah");
  EXPECT_EQ(view->notes[0].kind, "VISIT");

  // Three visits that do not reach the low-risk victim propose closure.
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(rina->LogVisit(core::ToHex(*low), "phone", "not_reached", ""));
    env_.Advance(3600 * 1000);
  }
  EXPECT_EQ(FindTask(*rina->ListTasks(false, false), *low, "closure_proposal"), std::nullopt);
  ASSERT_TRUE(rina->LogVisit(core::ToHex(*low), "home_visit", "tidak bertemu", "Rumah kosong"));
  const auto listed = rina->ListTasks(false, false);
  ASSERT_TRUE(listed);
  const auto proposal = FindTask(*listed, *low, "closure_proposal");
  ASSERT_NE(proposal, std::nullopt);
  const std::string pid = core::ToHex(proposal->task_id);
  // Only a supervisor approves it; then the case is closed as unreachable.
  EXPECT_EQ(rina->CompleteTask(pid).error().code, errc::forbidden);
  EXPECT_EQ(Sync(*rina).rejected, 0u);
  Sync(*tono);
  auto approved = tono->CompleteTask(pid.substr(0, 10));
  ASSERT_TRUE(approved) << approved.error().message;
  EXPECT_EQ(Value(*tono, *low, "stage"), "terminasi");
  EXPECT_EQ(Value(*tono, *low, "closure_reason"), "tidak dapat dihubungi");
  EXPECT_EQ(Sync(*tono).rejected, 0u);
  Sync(*rina);
  const auto after = rina->ListTasks(false, false);
  ASSERT_TRUE(after);
  EXPECT_EQ(FindTask(*after, *low, "closure_proposal"), std::nullopt);
  EXPECT_EQ(Value(*rina, *low, "stage"), "terminasi");
}

TEST_F(TaskTest, TheReportCountsOutreachMetWhenItWasMetNotWhenTheCaseLastMoved) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  const std::int64_t t0 = env_.NowMs() / 1000;
  auto c = rina->NewCase({"risk_level=tinggi"});
  ASSERT_TRUE(c);
  env_.Advance(6LL * 3600 * 1000);
  ASSERT_TRUE(rina->SetCaseFields(core::ToHex(*c), {"stage=penjangkauan"}));  // met at 6 h
  env_.Advance(44LL * 3600 * 1000);
  ASSERT_TRUE(rina->SetCaseFields(core::ToHex(*c), {"stage=asesmen"}));  // two days later
  env_.Advance(3600 * 1000);
  ASSERT_TRUE(rina->SetCaseFields(core::ToHex(*c),
                                  {"stage=terminasi", "closure_reason=resolved",
                                   "closure_checklist=safe,needs_met,no_repeat_violence"}));
  Sync(*rina);
  auto report = ComputeReport(data_dir_, t0 - 60, t0 + 7 * 86400, {"stage"}, 0, env_);
  ASSERT_TRUE(report) << report.error().message();
  EXPECT_EQ(report->received, 1u);
  EXPECT_EQ(report->deadlines_met, 1u);
  EXPECT_EQ(report->deadlines_missed, 0u);
  EXPECT_EQ(report->resolved, 1u);
}

}  // namespace
}  // namespace teduh::server::testing
