// Assessments, services delivered, closing with the outcome checklist,
// reopening in a new episode, and the shelter and post-verdict deadlines
// (issue 5; DOMAIN-REPORT §8.1 stories 5, 9, 14, 16, 17 and §8.2 stories 30,
// 32), through the case API against the real server. Every refusal leaves
// the case as it was.
#include <gtest/gtest.h>

#include <algorithm>
#include <optional>

#include "server/device_fixture.h"
#include "teduh/case/v1/case.pb.h"
#include "teduh/core/schema.h"
#include "teduh/server/report.h"

namespace teduh::server::testing {
namespace {

using core::errc;

using CaseworkTest = DeviceServerTest;

constexpr std::int64_t kDay = 24 * 3600;

std::vector<core::TaskView> Tasks(core::Device& d) {
  auto t = d.ListTasks(false, false);
  EXPECT_TRUE(t) << (t ? "" : t.error().message);
  return t ? *t : std::vector<core::TaskView>{};
}

// Story 5, 9, 14: the risk class with a reason, the needs, the safety plan.
TEST_F(CaseworkTest, AnAssessmentSetsTheCaseRiskAtOnceAndItsTextIsSealed) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  const std::int64_t t0 = env_.NowMs() / 1000;
  auto c = rina->NewCase({"risk_level=rendah", "needs=makanan"});
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(FindTask(Tasks(*rina), *c, "outreach")->due_at, t0 + 72 * 3600);

  auto a = rina->AddAssessment(core::ToHex(*c), "tinggi", {"medis", "rumah aman"},
                               "kejadian kurang dari 3x24 jam", "menginap di rumah kakak");
  ASSERT_TRUE(a) << a.error().message;
  // The board follows the new risk offline, in the same transaction.
  EXPECT_EQ(FindTask(Tasks(*rina), *c, "outreach")->due_at, t0 + 24 * 3600);
  EXPECT_EQ(Value(*rina, *c, "risk_level"), "tinggi");
  EXPECT_EQ(Value(*rina, *c, "needs"), "medis, rumah aman");  // replaced by the assessment's
  EXPECT_EQ(Value(*rina, *c, "risk_rationale"), "kejadian kurang dari 3x24 jam");
  EXPECT_EQ(Value(*rina, *c, "safety_plan"), "menginap di rumah kakak");

  Sync(*rina);
  Sync(*ani);
  const auto view = Show(*ani, *c);
  ASSERT_EQ(view.assessments.size(), 1u);
  const auto& seen = view.assessments[0];
  EXPECT_EQ(seen.assessment_id, *a);
  EXPECT_EQ(seen.risk_level, "HIGH");
  EXPECT_EQ(seen.needs, (std::vector<std::string>{"MEDICAL", "SAFE_HOUSE"}));
  EXPECT_EQ(seen.assessed_by, "rina");
  EXPECT_EQ(seen.rationale, "kejadian kurang dari 3x24 jam");
  EXPECT_EQ(seen.safety_plan, "menginap di rumah kakak");
  EXPECT_FALSE(seen.pending);
  // The server holds the rationale and the plan only as ciphertext.
  auto snap = ani->SnapshotCase(*c);
  ASSERT_TRUE(snap);
  int sealed = 0;
  for (const auto& f : *snap) {
    if (f.kind != core::kAssessmentKind) continue;
    if (f.field == 20 || f.field == 21) {
      EXPECT_TRUE(f.sealed);
      EXPECT_EQ(f.value.find("kakak"), std::string::npos);
      ++sealed;
    }
  }
  EXPECT_EQ(sealed, 2);

  // A second assessment lowers the risk (a decision, not a merge); the
  // first stays as it was: the re-classification history.
  ASSERT_TRUE(ani->AddAssessment(core::ToHex(*c), "sedang", {}, "", ""));
  EXPECT_EQ(Value(*ani, *c, "risk_level"), "sedang");
  EXPECT_EQ(Value(*ani, *c, "needs"), "medis, rumah aman");  // none given: kept
  EXPECT_EQ(Show(*ani, *c).assessments.size(), 2u);
  Sync(*ani);
  Sync(*rina);
  EXPECT_EQ(Value(*rina, *c, "risk_level"), "sedang");
  EXPECT_EQ(Show(*rina, *c).assessments.back().risk_level, "MEDIUM");
}

TEST_F(CaseworkTest, BadAssessmentsAreRefusedAndChangeNothing) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto c = rina->NewCase({"risk_level=rendah"});
  ASSERT_TRUE(c);
  const std::string id = core::ToHex(*c);
  auto r = rina->AddAssessment(id, "gawat", {}, "", "");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::bad_value);
  EXPECT_NE(r.error().message.find("tinggi"), std::string::npos);  // the valid values
  r = rina->AddAssessment(id, "", {}, "", "");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::bad_value);
  r = rina->AddAssessment(id, "tinggi", {"medis", "mobil"}, "x", "y");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::bad_value);
  EXPECT_EQ(admin_dev_->AddAssessment(id, "tinggi", {}, "", "").error().code, errc::forbidden);
  EXPECT_TRUE(Show(*rina, *c).assessments.empty());
  EXPECT_EQ(Value(*rina, *c, "risk_level"), "rendah");

  ASSERT_TRUE(rina->SetCaseFields(
      id, {"stage=terminasi", "closure_reason=dicabut", "closure_checklist=none_met"}));
  r = rina->AddAssessment(id, "tinggi", {}, "", "");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_NE(r.error().message.find("reopen"), std::string::npos);
  EXPECT_TRUE(Show(*rina, *c).assessments.empty());
}

// Story 16, 18 and the six services of the unit.
TEST_F(CaseworkTest, ServicesDeliveredAreListedCountedAndAShelterStayComesDue) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  const std::int64_t t0 = env_.NowMs() / 1000;
  auto c = rina->NewCase({"risk_level=tinggi", "stage=pelaksanaan"});
  auto other = rina->NewCase({"risk_level=sedang", "stage=pelaksanaan"});
  ASSERT_TRUE(c && other);
  const std::string id = core::ToHex(*c);
  auto legal = rina->AddService(id, "pendampingan korban", "hukum", "ke Polres untuk BAP");
  ASSERT_TRUE(legal) << legal.error().message;
  ASSERT_TRUE(rina->AddService(id, "accompaniment", "medical", ""));
  ASSERT_TRUE(rina->AddService(core::ToHex(*other), "mediasi", "", ""));
  EXPECT_EQ(FindTask(Tasks(*rina), *c, "shelter_stay"), std::nullopt);

  env_.Advance(3600 * 1000);
  auto shelter = rina->AddService(id, "shelter", "", "");
  ASSERT_TRUE(shelter) << shelter.error().message;
  auto stay = FindTask(Tasks(*rina), *c, "shelter_stay");
  ASSERT_TRUE(stay.has_value());
  EXPECT_EQ(stay->due_at, t0 + 3600 + 14 * kDay);
  // Another shelter service during the stay does not restart it.
  env_.Advance(3600 * 1000);
  ASSERT_TRUE(rina->AddService(id, "penampungan sementara", "", ""));
  EXPECT_EQ(FindTask(Tasks(*rina), *c, "shelter_stay")->due_at, t0 + 3600 + 14 * kDay);

  Sync(*rina);
  Sync(*ani);
  const auto view = Show(*ani, *c);
  ASSERT_EQ(view.services.size(), 4u);
  EXPECT_EQ(view.services[0].service_id, *legal);
  EXPECT_EQ(view.services[0].service, "ACCOMPANIMENT");
  EXPECT_EQ(view.services[0].accompaniment, "LEGAL");
  EXPECT_EQ(view.services[0].note, "ke Polres untuk BAP");
  EXPECT_EQ(view.services[0].delivered_by, "rina");
  EXPECT_EQ(view.services[2].service, "SHELTER");
  EXPECT_EQ(view.services[2].accompaniment, "");
  EXPECT_EQ(view.services[2].note, std::nullopt);
  EXPECT_NE(FindTask(Tasks(*ani), *c, "shelter_stay"), std::nullopt);  // on the office's board too

  // The report counts delivered services per case (accompaniment by kind),
  // apart from the referrals' `service`; rows need not add up.
  auto report =
      ComputeReport(data_dir_, t0 - kDay, t0 + kDay, {"service_delivered", "service"}, 0, env_);
  ASSERT_TRUE(report) << report.error().message();
  ASSERT_EQ(report->breakdowns.size(), 2u);
  const auto& b = report->breakdowns[0];
  std::map<std::string, std::uint64_t> rows;
  for (const auto& row : b.rows) rows[row.key] = row.count;
  EXPECT_EQ(rows, (std::map<std::string, std::uint64_t>{{"ACCOMPANIMENT_LEGAL", 1},
                                                        {"ACCOMPANIMENT_MEDICAL", 1},
                                                        {"MEDIATION", 1},
                                                        {"SHELTER", 1}}));
  EXPECT_EQ(b.total, 2u);
  EXPECT_EQ(b.sum, 4u);
  EXPECT_FALSE(b.adds_up);
  EXPECT_EQ(b.note, "a case may receive several services");
  EXPECT_EQ(report->breakdowns[1].rows.size(), 1u);  // no referral: both unrecorded
  EXPECT_EQ(report->breakdowns[1].rows[0].count, 2u);

  // She leaves the shelter: the stay is no longer due.
  ASSERT_TRUE(ani->SetCaseFields(id, {"shelter_left_at=" + std::to_string(t0 + 5 * kDay)}));
  EXPECT_EQ(FindTask(Tasks(*ani), *c, "shelter_stay"), std::nullopt);
}

TEST_F(CaseworkTest, BadServicesAreRefusedAndChangeNothing) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto c = rina->NewCase({});
  ASSERT_TRUE(c);
  const std::string id = core::ToHex(*c);
  auto r = rina->AddService(id, "karaoke", "", "");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::bad_value);
  EXPECT_NE(r.error().message.find("mediasi"), std::string::npos);  // the valid values
  r = rina->AddService(id, "accompaniment", "", "");                // which kind?
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::bad_value);
  r = rina->AddService(id, "accompaniment", "spiritual", "");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::bad_value);
  r = rina->AddService(id, "mediation", "legal", "");  // a kind where none belongs
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_EQ(admin_dev_->AddService(id, "mediation", "", "").error().code, errc::forbidden);
  EXPECT_TRUE(Show(*rina, *c).services.empty());
}

// Story 32: a termination with a reason and the success checklist.
TEST_F(CaseworkTest, ClosingNeedsItsOutcomeChecklist) {
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto c = ani->NewCase({"stage=pemantauan"});
  ASSERT_TRUE(c);
  const std::string id = core::ToHex(*c);
  auto refused = [&](const std::vector<std::string>& sets, std::string_view says) {
    auto r = ani->SetCaseFields(id, sets);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, errc::invalid_argument);
    EXPECT_NE(r.error().message.find(says), std::string::npos) << r.error().message;
    EXPECT_EQ(Value(*ani, *c, "stage"), "pemantauan");
  };
  refused({"stage=terminasi", "closure_reason=selesai"}, "checklist");
  refused({"stage=terminasi", "closure_reason=selesai", "closure_checklist=aman"},
          "needs_met");  // resolved: safe, needs met, no repeat violence
  refused({"stage=terminasi", "closure_reason=dicabut", "closure_checklist=none_met,safe"},
          "stands alone");
  refused({"stage=terminasi", "closure_checklist=safe"}, "reason");
  EXPECT_EQ(Value(*ani, *c, "closure_checklist"), "");

  ASSERT_TRUE(ani->SetCaseFields(
      id, {"stage=terminasi", "closure_reason=resolved",
           "closure_checklist=aman,kebutuhan terpenuhi,no_repeat_violence,hak terpenuhi"}));
  EXPECT_EQ(Value(*ani, *c, "stage"), "terminasi");
  EXPECT_EQ(Value(*ani, *c, "closure_checklist"),
            "aman, kebutuhan terpenuhi, tidak ada kekerasan ulang, hak terpenuhi");  // as given
  EXPECT_NE(Value(*ani, *c, "closed_at"), "");
  // A closed case takes no new service until it is reopened.
  auto late = ani->AddService(id, "shelter", "", "Masuk rumah aman");
  ASSERT_FALSE(late);
  EXPECT_NE(late.error().message.find("reopen"), std::string::npos) << late.error().message;
  EXPECT_TRUE(Show(*ani, *c).services.empty());
  EXPECT_EQ(Value(*ani, *c, "shelter_entered_at"), "");
}

// Story 32: violence recurs; the case is reopened in a new episode.
TEST_F(CaseworkTest, ReopeningStartsANewEpisodeAndOnlyAClosedCaseIsReopened) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto c = rina->NewCase({"risk_level=sedang", "stage=pemantauan"});
  ASSERT_TRUE(c);
  const std::string id = core::ToHex(*c);
  auto r = rina->ReopenCase(id, "repeat_violence", "");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_NE(r.error().message.find("not closed"), std::string::npos);
  EXPECT_EQ(Value(*rina, *c, "episode"), "");
  EXPECT_EQ(rina->SetCaseFields(id, {"episode=2"}).error().code, errc::invalid_argument);

  ASSERT_TRUE(rina->SetCaseFields(id, {"stage=terminasi", "closure_reason=selesai",
                                       "closure_checklist=safe,needs_met,no_repeat_violence"}));
  EXPECT_EQ(FindTask(Tasks(*rina), *c, "outreach"), std::nullopt);
  // Not by moving the stage back.
  auto back = rina->SetCaseFields(id, {"stage=pengaduan"});
  ASSERT_FALSE(back);
  EXPECT_EQ(back.error().code, errc::invalid_argument);
  EXPECT_NE(back.error().message.find("reopen"), std::string::npos);
  EXPECT_EQ(rina->ReopenCase(id, "bosan", "").error().code, errc::bad_value);
  EXPECT_EQ(admin_dev_->ReopenCase(id, "other", "").error().code, errc::forbidden);
  EXPECT_EQ(Value(*rina, *c, "stage"), "terminasi");
  Sync(*rina);
  Sync(*ani);
  // Nor by restoring an earlier stage from its history.
  auto restored = rina->RestoreCaseField(id, "stage", 1);
  ASSERT_FALSE(restored);
  EXPECT_EQ(restored.error().code, errc::invalid_argument);
  EXPECT_EQ(Value(*rina, *c, "stage"), "terminasi");

  env_.Advance(30 * kDay * 1000);
  const std::int64_t reopened = env_.NowMs() / 1000;
  auto episode = ani->ReopenCase(id, "kekerasan berulang", "suami kembali mengancam");
  ASSERT_TRUE(episode) << episode.error().message;
  EXPECT_EQ(*episode, 2);
  EXPECT_EQ(Value(*ani, *c, "episode"), "2");
  EXPECT_EQ(Value(*ani, *c, "stage"), "pengaduan");
  EXPECT_EQ(Value(*ani, *c, "reopen_reason"), "kekerasan berulang");
  EXPECT_EQ(Value(*ani, *c, "closure_reason"), "");
  EXPECT_EQ(Value(*ani, *c, "closure_checklist"), "");
  EXPECT_EQ(Value(*ani, *c, "closed_at"), "");
  // The new episode's outreach is due from the reopening, a new deadline.
  const auto outreach = FindTask(Tasks(*ani), *c, "outreach");
  ASSERT_TRUE(outreach.has_value());
  EXPECT_EQ(outreach->due_at, reopened + 48 * 3600);
  const auto notes = Show(*ani, *c).notes;
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_EQ(notes[0].kind, "CASE_REVIEW");
  EXPECT_EQ(notes[0].text, "suami kembali mengancam");

  Sync(*ani);
  Sync(*rina);
  EXPECT_EQ(Value(*rina, *c, "episode"), "2");
  EXPECT_EQ(Value(*rina, *c, "stage"), "pengaduan");
  EXPECT_EQ(FindTask(Tasks(*rina), *c, "outreach")->task_id, outreach->task_id);
  // Reaching her again meets the new episode's outreach, not the old one's.
  ASSERT_TRUE(rina->LogVisit(id, "phone", "reached", ""));
  EXPECT_EQ(FindTask(Tasks(*rina), *c, "outreach"), std::nullopt);
  EXPECT_EQ(Value(*rina, *c, "stage"), "penjangkauan");
}

// A closure from a device that had not seen the reopening, and the
// reopening of a case closed twice at once: the current episode wins,
// whatever the stage rule would say, and nothing is lost.
TEST_F(CaseworkTest, TheCurrentEpisodeWinsOverConcurrentEditsOfTheClosedOne) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto budi = Staff("budi", v1::ROLE_SUPERVISOR);
  auto c = rina->NewCase({"stage=pemantauan"});
  ASSERT_TRUE(c);
  const std::string id = core::ToHex(*c);
  Sync(*rina);
  Sync(*ani);
  Sync(*budi);  // budi goes offline with the case in monitoring

  ASSERT_TRUE(rina->SetCaseFields(id, {"stage=terminasi", "closure_reason=selesai",
                                       "closure_checklist=safe,needs_met,no_repeat_violence"}));
  Sync(*rina);
  Sync(*ani);  // ani sees rina's closure
  env_.Advance(1000);
  // budi closes it too, later, not having seen rina's closure: his stamp wins.
  ASSERT_TRUE(budi->SetCaseFields(
      id, {"stage=terminasi", "closure_reason=withdrawn", "closure_checklist=none_met"}));
  Sync(*budi);
  // ani reopens over rina's closure. By the stage rule alone TERMINASI would
  // beat PENGADUAN and the case would stay closed in episode 2.
  env_.Advance(1000);
  ASSERT_TRUE(ani->ReopenCase(id, "repeat_violence", ""));
  Sync(*ani);
  for (auto* d : {rina.get(), ani.get(), budi.get()}) {
    Sync(*d);
    EXPECT_EQ(Value(*d, *c, "stage"), "pengaduan");
    EXPECT_EQ(Value(*d, *c, "episode"), "2");
    EXPECT_EQ(Value(*d, *c, "closure_reason"), "");
    EXPECT_EQ(Value(*d, *c, "closure_checklist"), "");
  }

  // Nothing lost: both closures of episode 1 are in the stage's history.
  auto history = ani->CaseHistory(id, "stage");
  ASSERT_TRUE(history) << history.error().message;
  int closures = 0;
  for (const auto& h : *history)
    if (h.value.display == "terminasi") ++closures;
  EXPECT_EQ(closures, 2);  // rina's and budi's

  // Now the other order: budi saw the closure, not the reopening, and closes
  // episode 1 again after it reached the server. His edits lose to it.
  auto c2 = rina->NewCase({"stage=pemantauan"});
  ASSERT_TRUE(c2);
  const std::string id2 = core::ToHex(*c2);
  ASSERT_TRUE(rina->SetCaseFields(id2, {"stage=terminasi", "closure_reason=selesai",
                                        "closure_checklist=safe,needs_met,no_repeat_violence"}));
  Sync(*rina);
  Sync(*ani);
  Sync(*budi);
  ASSERT_TRUE(ani->ReopenCase(id2, "new_need", ""));
  Sync(*ani);
  env_.Advance(1000);
  ASSERT_TRUE(budi->SetCaseFields(
      id2, {"stage=terminasi", "closure_reason=withdrawn", "closure_checklist=none_met"}));
  Sync(*budi);
  for (auto* d : {rina.get(), ani.get(), budi.get()}) {
    Sync(*d);
    EXPECT_EQ(Value(*d, *c2, "stage"), "pengaduan");
    EXPECT_EQ(Value(*d, *c2, "closure_reason"), "");
    EXPECT_EQ(Value(*d, *c2, "closure_checklist"), "");
  }
  auto lost = ani->CaseHistory(id2, "closure_checklist");
  ASSERT_TRUE(lost) << lost.error().message;
  bool kept = false;
  for (const auto& h : *lost)
    kept |= h.author == "budi" && h.reason == "lost_merge" &&
            h.value.display == "tidak ada yang tercapai";
  EXPECT_TRUE(kept);
  // In the new episode the rules are the usual ones: a later close applies.
  ASSERT_TRUE(budi->SetCaseFields(
      id2, {"stage=terminasi", "closure_reason=withdrawn", "closure_checklist=none_met"}));
  Sync(*budi);
  Sync(*ani);
  EXPECT_EQ(Value(*ani, *c2, "stage"), "terminasi");
  EXPECT_EQ(Value(*ani, *c2, "closure_reason"), "dicabut");
}

// Story 17, 30: home visits for three months after the verdict, offline.
TEST_F(CaseworkTest, PostVerdictVisitsComeDueMonthlyForThreeMonths) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto c = rina->NewCase({"stage=pemantauan"});
  ASSERT_TRUE(c);
  const std::string id = core::ToHex(*c);
  const std::int64_t verdict = env_.NowMs() / 1000 - 2 * kDay;
  EXPECT_EQ(FindTask(Tasks(*rina), *c, "post_verdict_visit"), std::nullopt);
  ASSERT_TRUE(rina->SetCaseFields(id, {"verdict_at=" + std::to_string(verdict)}));
  std::vector<core::Id> seen;
  for (std::uint32_t visit = 1; visit <= 3; ++visit) {
    const auto t = FindTask(Tasks(*rina), *c, "post_verdict_visit");
    ASSERT_TRUE(t.has_value()) << visit;
    EXPECT_EQ(t->due_at, verdict + visit * 30 * kDay);
    EXPECT_EQ(t->cycle, visit);
    EXPECT_EQ(t->cycles, 3u);
    EXPECT_EQ(std::find(seen.begin(), seen.end(), t->task_id), seen.end());
    seen.push_back(t->task_id);
    auto done = rina->CompleteTask(core::ToHex(t->task_id));
    ASSERT_TRUE(done) << done.error().message;
    EXPECT_EQ(done->kind, "post_verdict_visit");
  }
  EXPECT_EQ(FindTask(Tasks(*rina), *c, "post_verdict_visit"), std::nullopt);  // three made
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  Sync(*rina);
  Sync(*ani);
  EXPECT_EQ(FindTask(Tasks(*ani), *c, "post_verdict_visit"), std::nullopt);  // made everywhere
}

TEST_F(CaseworkTest, AShelterStayIsMarkedReviewedAndAnotherStayHasItsOwnDeadline) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto c = rina->NewCase({"stage=pelaksanaan"});
  ASSERT_TRUE(c);
  const std::string id = core::ToHex(*c);
  const std::int64_t in = env_.NowMs() / 1000;
  ASSERT_TRUE(rina->SetCaseFields(id, {"shelter_entered_at=" + std::to_string(in)}));
  auto stay = FindTask(Tasks(*rina), *c, "shelter_stay");
  ASSERT_TRUE(stay.has_value());
  EXPECT_EQ(stay->due_at, in + 14 * kDay);
  const core::Id first = stay->task_id;
  ASSERT_TRUE(rina->CompleteTask(core::ToHex(first)));
  EXPECT_EQ(FindTask(Tasks(*rina), *c, "shelter_stay"), std::nullopt);

  ASSERT_TRUE(rina->SetCaseFields(id, {"shelter_left_at=" + std::to_string(in + 14 * kDay)}));
  env_.Advance(40 * kDay * 1000);
  ASSERT_TRUE(rina->AddService(id, "shelter", "", ""));  // she comes back: a new stay
  stay = FindTask(Tasks(*rina), *c, "shelter_stay");
  ASSERT_TRUE(stay.has_value());
  EXPECT_NE(stay->task_id, first);
  EXPECT_EQ(stay->due_at, env_.NowMs() / 1000 + 14 * kDay);
}

// The server holds the rule too, for any device: a closed case's stage goes
// back only after the same device's new episode was applied.
// Two office devices, ani and budi, pushing raw Case changes.
class ReopenPushTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    EnrollBootstrapAdmin();
    ani = EnrollApproved(v1::ROLE_OFFICE, "ani");
    budi = EnrollApproved(v1::ROLE_OFFICE, "budi");
    client = Login(ani);
    other = Login(budi);
  }
  void TearDown() override {
    client.reset();  // closed before the server stops, which would wait for them
    other.reset();
    ServerTest::TearDown();
  }
  template <typename Set>
  static std::string value(Set set) {
    teduh::casework::v1::Case c;
    set(c);
    return c.SerializeAsString();
  }
  // Pushes one change and returns its answer.
  v1::ChangeResult push(TestClient& cl, v1::FieldChange c) {
    const v1::PushResult r = Push(cl, {std::move(c)});
    EXPECT_EQ(r.results_size(), 1);
    return r.results_size() == 1 ? r.results(0) : v1::ChangeResult{};
  }

  TestDevice ani, budi;
  std::unique_ptr<TestClient> client, other;
};

TEST_F(ReopenPushTest, AClosedCaseMovesBackOnlyAfterItsWritersNewEpisode) {
  namespace cw = ::teduh::casework::v1;
  auto stage = [&](cw::Stage st) { return value([&](cw::Case& c) { c.set_stage(st); }); };
  const core::Id id = core::NewId();
  v1::FieldChange monitoring =
      OpenChange(ani, id, core::kCaseKind, {}, 8, stage(cw::STAGE_PEMANTAUAN));
  ASSERT_EQ(push(*client, monitoring).status(), v1::ChangeResult::STATUS_APPLIED);
  v1::FieldChange closed = OpenChange(ani, id, core::kCaseKind, {}, 8, stage(cw::STAGE_TERMINASI));
  *closed.mutable_base() = monitoring.stamp();
  ASSERT_EQ(push(*client, closed).status(), v1::ChangeResult::STATUS_APPLIED);

  v1::FieldChange back = OpenChange(ani, id, core::kCaseKind, {}, 8, stage(cw::STAGE_PENGADUAN));
  *back.mutable_base() = closed.stamp();
  auto r = push(*client, back);
  EXPECT_EQ(r.status(), v1::ChangeResult::STATUS_REJECTED);
  EXPECT_EQ(r.reason(), "reopen_required");
  // Another device's episode does not open the way for this one.
  ASSERT_EQ(push(*other, OpenChange(budi, id, core::kCaseKind, {}, 21,
                                    value([](cw::Case& c) { c.set_episode(2); })))
                .status(),
            v1::ChangeResult::STATUS_APPLIED);
  back = OpenChange(ani, id, core::kCaseKind, {}, 8, stage(cw::STAGE_PENGADUAN));
  *back.mutable_base() = closed.stamp();
  EXPECT_EQ(push(*client, back).reason(), "reopen_required");

  v1::FieldChange episode =
      OpenChange(ani, id, core::kCaseKind, {}, 21, value([](cw::Case& c) { c.set_episode(3); }));
  ASSERT_EQ(push(*client, episode).status(), v1::ChangeResult::STATUS_APPLIED);
  back = OpenChange(ani, id, core::kCaseKind, {}, 8, stage(cw::STAGE_PENGADUAN));
  *back.mutable_base() = closed.stamp();
  EXPECT_EQ(push(*client, back).status(), v1::ChangeResult::STATUS_APPLIED);
}

// A hostile or confused device cannot start an episode on its own: only the
// next one, on a closed case; a second, concurrent reopen to the same episode
// leaves the first as the one that began it.
TEST_F(ReopenPushTest, TheEpisodeMovesOnlyByOneReopenOfAClosedCase) {
  namespace cw = ::teduh::casework::v1;
  auto episode = [&](const TestDevice& d, const core::Id& id, int n) {
    return OpenChange(d, id, core::kCaseKind, {}, cw::Case::kEpisodeFieldNumber,
                      value([&](cw::Case& c) { c.set_episode(n); }));
  };
  EXPECT_EQ(push(*client, episode(ani, core::NewId(), 4)).reason(), "reopen_required")
      << "a new case starts in episode 1";
  const core::Id id = core::NewId();
  v1::FieldChange open = OpenChange(ani, id, core::kCaseKind, {}, cw::Case::kStageFieldNumber,
                                    value([](cw::Case& c) { c.set_stage(cw::STAGE_ASESMEN); }));
  ASSERT_EQ(push(*client, open).status(), v1::ChangeResult::STATUS_APPLIED);
  EXPECT_EQ(push(*client, episode(ani, id, 2)).reason(), "reopen_required") << "the case is open";
  v1::FieldChange closed = OpenChange(ani, id, core::kCaseKind, {}, cw::Case::kStageFieldNumber,
                                      value([](cw::Case& c) { c.set_stage(cw::STAGE_TERMINASI); }));
  *closed.mutable_base() = open.stamp();
  ASSERT_EQ(push(*client, closed).status(), v1::ChangeResult::STATUS_APPLIED);
  EXPECT_EQ(push(*client, episode(ani, id, 5)).reason(), "reopen_required") << "one at a time";

  const v1::FieldChange first = episode(ani, id, 2);
  ASSERT_EQ(push(*client, first).status(), v1::ChangeResult::STATUS_APPLIED);
  const v1::FieldChange second = episode(budi, id, 2);  // later stamp, same episode
  const v1::ChangeResult r = push(*other, second);
  EXPECT_EQ(r.status(), v1::ChangeResult::STATUS_MERGED);
  EXPECT_EQ(r.current().hlc(), first.stamp().hlc()) << "the first reopen keeps the mark";
}

}  // namespace
}  // namespace teduh::server::testing
