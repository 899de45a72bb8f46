// The records of an assessment and of a service delivered in full (issue 5,
// "Records"; DOMAIN-REPORT §1.5, §4.6, §4.7): the kind of assessment, the
// victim's condition, the psychologist's clinical diagnosis (which a case
// worker's device cannot read), what a service consisted of, and append-only
// records corrected by a later one that names them — through the case API
// against the real server.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/device_fixture.h"
#include "teduh/core/report.h"
#include "teduh/core/schema.h"
#include "teduh/server/report.h"

namespace teduh::server::testing {
namespace {

using core::errc;
using ::testing::HasSubstr;
using RecordsTest = DeviceServerTest;

TEST_F(RecordsTest, APsychologistsDiagnosisIsClinicalAndACaseWorkerCannotReadIt) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto dewi = Staff("dewi", v1::ROLE_PSIKOLOG);
  auto c = rina->NewCase({"risk_level=sedang"});
  ASSERT_TRUE(c) << c.error().message;
  const std::string id = core::ToHex(*c);
  // The initial assessment by the case worker, with the victim's condition.
  auto first = rina->AddAssessment(id, "sedang", {"medis"}, "", "",
                                   {"awal", "Memar di lengan, sulit tidur", "", "", ""});
  ASSERT_TRUE(first) << first.error().message;
  // A case worker records neither a psychological assessment nor a diagnosis.
  auto psych = rina->AddAssessment(id, "tinggi", {}, "", "", {"psikologis", "", "", "", ""});
  ASSERT_FALSE(psych);
  EXPECT_EQ(psych.error().code, make_error_code(errc::forbidden));
  auto diag = rina->AddAssessment(id, "tinggi", {}, "", "", {"", "", "PTSD", "", ""});
  ASSERT_FALSE(diag);
  EXPECT_EQ(diag.error().code, make_error_code(errc::forbidden));
  EXPECT_EQ(Show(*rina, *c).assessments.size(), 1u);  // the refusals recorded nothing

  Sync(*rina);
  ASSERT_TRUE(ani->Sync());
  ASSERT_TRUE(ani->AssignCase(id, "", "", "dewi"));
  Sync(*ani);
  Sync(*dewi);
  auto second =
      dewi->AddAssessment(id, "tinggi", {}, "", "",
                          {"psychological", "", "Gangguan stres pascatrauma", "Terapi 8 sesi", ""});
  ASSERT_TRUE(second) << second.error().message;
  Sync(*dewi);
  Sync(*rina);
  Sync(*ani);

  const auto on_dewi = Show(*dewi, *c);
  ASSERT_EQ(on_dewi.assessments.size(), 2u);
  EXPECT_EQ(on_dewi.assessments[1].kind, "PSYCHOLOGICAL");
  EXPECT_EQ(on_dewi.assessments[1].diagnosis, "Gangguan stres pascatrauma");
  EXPECT_EQ(on_dewi.assessments[1].recommendations, "Terapi 8 sesi");
  // The case worker and the office hold no CLINICAL key: the diagnosis is
  // there, unreadable, and the rest of the assessment still reads.
  for (core::Device* d : {rina.get(), ani.get()}) {
    const auto view = Show(*d, *c);
    ASSERT_EQ(view.assessments.size(), 2u);
    EXPECT_EQ(view.assessments[0].kind, "INITIAL");
    EXPECT_EQ(view.assessments[0].condition, "Memar di lengan, sulit tidur");
    EXPECT_EQ(view.assessments[1].risk_level, "HIGH");
    EXPECT_FALSE(view.assessments[1].diagnosis);
    EXPECT_FALSE(view.assessments[1].recommendations);
  }
  // On the server it is ciphertext (under the clinical class, which the
  // office device above could not open).
  auto snap = ani->SnapshotCase(*c);
  ASSERT_TRUE(snap);
  int clinical = 0;
  for (const auto& f : *snap) {
    if (f.kind == core::kAssessmentKind && (f.field == 23 || f.field == 24)) {
      EXPECT_TRUE(f.sealed);
      EXPECT_EQ(f.value.find("pascatrauma"), std::string::npos);
      ++clinical;
    }
  }
  EXPECT_EQ(clinical, 2);
}

TEST_F(RecordsTest, AServiceRecordIsCorrectedByALaterOneAndOnlyTheCorrectionCounts) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto c = rina->NewCase({"risk_level=rendah"});
  ASSERT_TRUE(c) << c.error().message;
  const std::string id = core::ToHex(*c);
  // Recorded as mediation by mistake; it was legal accompaniment to the police.
  auto wrong = rina->AddService(id, "mediasi", "", "", {"sesi mediasi", ""});
  ASSERT_TRUE(wrong) << wrong.error().message;
  auto unknown = rina->AddService(id, "mediasi", "", "", {"karaoke", ""});
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, make_error_code(errc::bad_value));
  EXPECT_THAT(unknown.error().message, HasSubstr("HOME_VISIT"));
  auto right = rina->AddService(id, "accompaniment", "legal", "",
                                {"ACCOMPANY_POLICE", core::ToHex(*wrong).substr(0, 8)});
  ASSERT_TRUE(right) << right.error().message;
  // Only an earlier record of the same case can be corrected.
  auto other = rina->NewCase({"risk_level=rendah"});
  ASSERT_TRUE(other);
  auto across = rina->AddService(core::ToHex(*other), "mediasi", "", "", {"", core::ToHex(*wrong)});
  ASSERT_FALSE(across);
  EXPECT_EQ(across.error().code, make_error_code(errc::invalid_argument));
  auto not_a_service = rina->AddService(id, "mediasi", "", "", {"", core::ToHex(*c)});
  ASSERT_FALSE(not_a_service);
  // A record is corrected once; a further correction corrects the correction.
  auto twice = rina->AddService(id, "mediasi", "", "", {"", core::ToHex(*wrong)});
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code, make_error_code(errc::invalid_argument));

  Sync(*rina);
  Sync(*ani);
  const auto view = Show(*ani, *c);
  ASSERT_EQ(view.services.size(), 2u);
  EXPECT_EQ(view.services[0].service_id, *wrong);
  EXPECT_EQ(view.services[0].corrected_by, *right);
  EXPECT_EQ(view.services[1].corrects, *wrong);
  EXPECT_EQ(view.services[1].activity, "ACCOMPANY_POLICE");

  std::string why;
  auto period = core::ParseReportPeriod("2000-01-01", "2100-01-01", core::TimeZone::kWib, &why);
  ASSERT_TRUE(period);
  auto report =
      ComputeReport(data_dir_, period->from_s, period->to_s, {"service_delivered"}, 0, env_);
  ASSERT_TRUE(report) << report.error().message();
  const auto& rows = report->breakdowns[0].rows;
  ASSERT_FALSE(rows.empty());
  EXPECT_EQ(rows[0].key, "ACCOMPANIMENT_LEGAL");  // the mediation no longer counts
  EXPECT_TRUE(std::none_of(rows.begin(), rows.end(),
                           [](const core::ReportRow& r) { return r.key == "MEDIATION"; }));
}

TEST_F(RecordsTest, AnAssessmentCorrectsAnEarlierOneAndTheCaseFollowsTheCorrection) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto c = rina->NewCase({"risk_level=rendah"});
  ASSERT_TRUE(c) << c.error().message;
  const std::string id = core::ToHex(*c);
  auto first = rina->AddAssessment(id, "tinggi", {}, "", "");
  ASSERT_TRUE(first);
  auto fix = rina->AddAssessment(id, "sedang", {}, "salah pilih tingkat", "",
                                 {"ulang", "", "", "", core::ToHex(*first)});
  ASSERT_TRUE(fix) << fix.error().message;
  const auto view = Show(*rina, *c);
  ASSERT_EQ(view.assessments.size(), 2u);
  EXPECT_EQ(view.assessments[0].corrected_by, *fix);
  EXPECT_EQ(view.assessments[1].kind, "REVIEW");
  EXPECT_EQ(Value(*rina, *c, "risk_level"), "sedang");
  auto bad = rina->AddAssessment(id, "sedang", {}, "", "", {"", "", "", "", "zz"});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, make_error_code(errc::invalid_argument));
  // The server accepts both, the correction naming the first.
  EXPECT_EQ(Sync(*rina).rejected, 0u);
}

}  // namespace
}  // namespace teduh::server::testing
