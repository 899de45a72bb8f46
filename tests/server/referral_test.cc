// Referrals with consent (issue 5; DOMAIN-REPORT §8.1): a case worker drafts
// a referral to a partner agency naming exactly what it discloses; the letter
// goes draft → checked → signed (supervisors only) → sent → confirmed; it is
// never sent without the victim's recorded consent, nor, for a child, without
// an officer accompanying. The case API refuses, and the server refuses the
// same pushes from any device.
#include <gtest/gtest.h>

#include "server/device_fixture.h"
#include "teduh/case/v1/case.pb.h"
#include "teduh/core/schema.h"

namespace teduh::server::testing {
namespace {

using core::errc;
namespace cw = teduh::casework::v1;

using ReferralTest = DeviceServerTest;

TEST_F(ReferralTest, AReferralIsSentOnlyWithConsentAnOfficerForAChildAndASupervisorsSignature) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto tono = Staff("tono", v1::ROLE_SUPERVISOR);
  auto c = rina->NewCase({"chronology=Anak dipukul", "victim_is_child=ya"});
  ASSERT_TRUE(c);
  const std::string id = core::ToHex(*c);

  // Bad input is refused with the valid choices, and saves nothing.
  auto bad_agency = rina->AddReferral(id, "POLSEK-X", "LEGAL", false, {}, false);
  ASSERT_FALSE(bad_agency);
  EXPECT_EQ(bad_agency.error().code, errc::bad_value);
  EXPECT_NE(bad_agency.error().message.find("POLRES"), std::string::npos);
  auto bad_service = rina->AddReferral(id, "POLRES", "PIZZA", false, {}, false);
  ASSERT_FALSE(bad_service);
  EXPECT_NE(bad_service.error().message.find("MEDICAL"), std::string::npos);
  auto bad_field = rina->AddReferral(id, "POLRES", "LEGAL", false, {"name", "shoe_size"}, false);
  ASSERT_FALSE(bad_field);
  EXPECT_NE(bad_field.error().message.find("shoe_size"), std::string::npos);
  EXPECT_EQ(admin_dev_->AddReferral(id, "POLRES", "LEGAL", false, {}, false).error().code,
            errc::forbidden);
  EXPECT_TRUE(rina->ListReferrals(id)->empty());

  // Drafted offline, with exactly what the letter discloses.
  auto ref = rina->AddReferral(id, "polres", "legal", false, {"name", "address", "name"}, false);
  ASSERT_TRUE(ref) << ref.error().message;
  const std::string rid = core::ToHex(*ref);
  auto listed = rina->ListReferrals(id);
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].agency, "POLRES");
  EXPECT_EQ((*listed)[0].service, "LEGAL");
  EXPECT_EQ((*listed)[0].status, "draft");
  EXPECT_EQ((*listed)[0].created_by, "rina");
  EXPECT_EQ((*listed)[0].disclosed_fields, (std::vector<std::string>{"name", "address"}));
  EXPECT_FALSE((*listed)[0].consent);

  // Steps only in order; only a supervisor signs.
  EXPECT_EQ(rina->AdvanceReferral(rid, "send").error().code, errc::invalid_argument);
  EXPECT_EQ(rina->AdvanceReferral(rid, "sign").error().code, errc::forbidden);
  EXPECT_EQ(rina->AdvanceReferral(rid, "fly").error().code, errc::invalid_argument);
  auto checked = rina->AdvanceReferral(rid.substr(0, 8), "check");
  ASSERT_TRUE(checked) << checked.error().message;
  EXPECT_EQ(checked->status, "checked");
  Sync(*rina);
  Sync(*tono);
  auto signed_ = tono->AdvanceReferral(rid, "sign");
  ASSERT_TRUE(signed_) << signed_.error().message;
  EXPECT_EQ(signed_->status, "signed");
  EXPECT_EQ(signed_->signed_by, "tono");
  EXPECT_EQ(Sync(*tono).rejected, 0u);
  Sync(*rina);

  // Not without consent; not, for a child, without an officer.
  auto no_consent = rina->AdvanceReferral(rid, "send");
  ASSERT_FALSE(no_consent);
  EXPECT_NE(no_consent.error().message.find("consent"), std::string::npos);
  ASSERT_TRUE(rina->AdvanceReferral(rid, "consent"));
  auto alone = rina->AdvanceReferral(rid, "send");
  ASSERT_FALSE(alone);
  EXPECT_NE(alone.error().message.find("accompany"), std::string::npos);
  ASSERT_TRUE(rina->AdvanceReferral(rid, "accompany"));
  auto sent = rina->AdvanceReferral(rid, "send");
  ASSERT_TRUE(sent) << sent.error().message;
  EXPECT_EQ(sent->status, "sent");
  EXPECT_TRUE(sent->consent);
  EXPECT_GT(sent->consent_at, 0);
  EXPECT_GT(sent->sent_at, 0);
  auto confirmed = rina->AdvanceReferral(rid, "confirm");
  ASSERT_TRUE(confirmed);
  EXPECT_EQ(confirmed->status, "confirmed");
  EXPECT_EQ(rina->AdvanceReferral(rid, "consent").error().code, errc::invalid_argument);

  // Everything reaches the server and the supervisor.
  auto pushed = Sync(*rina);
  EXPECT_EQ(pushed.rejected, 0u);
  Sync(*tono);
  auto seen = tono->ListReferrals(id);
  ASSERT_TRUE(seen);
  ASSERT_EQ(seen->size(), 1u);
  EXPECT_EQ((*seen)[0].status, "confirmed");
  EXPECT_TRUE((*seen)[0].accompanied);
  EXPECT_EQ((*seen)[0].signed_by, "tono");
}

// The server holds the same rules against a device that skips the case API.
using ReferralServerTest = ServerTest;

TEST_F(ReferralServerTest, ALetterOutOfOrderUnsignedUnconsentedOrUnaccompaniedIsRefused) {
  EnrollBootstrapAdmin();
  TestDevice ani = EnrollApproved(v1::ROLE_OFFICE, "ani");
  TestDevice tono = EnrollApproved(v1::ROLE_SUPERVISOR, "tono");
  auto office = Login(ani);
  auto sup = Login(tono);
  const Id case_id = core::NewId(), ref_id = core::NewId();
  std::int64_t offset = 0;
  auto push = [&](TestClient& client, const TestDevice& dev, std::uint32_t field,
                  const cw::Referral& value) {
    const v1::PushResult r =
        Push(client, {OpenChange(dev, ref_id, core::kReferralKind, case_id, field,
                                 value.SerializeAsString(), offset += 10)});
    return r.results(0);
  };
  auto status = [](cw::ReferralStatus s) {
    cw::Referral r;
    r.set_status(s);
    return r;
  };
  cw::Case child;
  child.set_victim_is_child(true);
  const v1::PushResult made =
      Push(*office, {OpenChange(ani, case_id, core::kCaseKind, {}, 1, CaseText(1, "K-1")),
                     OpenChange(ani, case_id, core::kCaseKind, {},
                                cw::Case::kVictimIsChildFieldNumber, child.SerializeAsString())});
  for (const auto& r : made.results()) ASSERT_EQ(r.status(), v1::ChangeResult::STATUS_APPLIED);
  const auto kStatus = cw::Referral::kStatusFieldNumber;
  EXPECT_EQ(push(*office, ani, kStatus, status(cw::REFERRAL_STATUS_DRAFT)).status(),
            v1::ChangeResult::STATUS_APPLIED);
  // One step at a time.
  EXPECT_EQ(push(*office, ani, kStatus, status(cw::REFERRAL_STATUS_SIGNED)).reason(),
            "out_of_order");
  EXPECT_EQ(push(*office, ani, kStatus, status(cw::REFERRAL_STATUS_CHECKED)).status(),
            v1::ChangeResult::STATUS_APPLIED);
  // Only a supervisor signs, in her own name.
  EXPECT_EQ(push(*office, ani, kStatus, status(cw::REFERRAL_STATUS_SIGNED)).reason(), "forbidden");
  cw::Referral forged;
  forged.set_signed_by("tono");
  EXPECT_EQ(push(*office, ani, cw::Referral::kSignedByFieldNumber, forged).reason(),
            "wrong_author");
  cw::Referral other_name;
  other_name.set_signed_by("ani");
  EXPECT_EQ(push(*office, ani, cw::Referral::kSignedByFieldNumber, other_name).reason(),
            "forbidden");
  EXPECT_EQ(push(*sup, tono, cw::Referral::kSignedByFieldNumber, other_name).reason(),
            "wrong_author");
  EXPECT_EQ(push(*sup, tono, cw::Referral::kSignedByFieldNumber, forged).status(),
            v1::ChangeResult::STATUS_APPLIED);
  EXPECT_EQ(push(*sup, tono, kStatus, status(cw::REFERRAL_STATUS_SIGNED)).status(),
            v1::ChangeResult::STATUS_APPLIED);
  // Not sent without consent; for a child, not without an officer.
  EXPECT_EQ(push(*office, ani, kStatus, status(cw::REFERRAL_STATUS_SENT)).reason(), "no_consent");
  cw::Referral consent;
  consent.set_consent(true);
  EXPECT_EQ(push(*office, ani, cw::Referral::kConsentFieldNumber, consent).status(),
            v1::ChangeResult::STATUS_APPLIED);
  EXPECT_EQ(push(*office, ani, kStatus, status(cw::REFERRAL_STATUS_SENT)).reason(),
            "unaccompanied");
  cw::Referral accompanied;
  accompanied.set_accompanied(true);
  EXPECT_EQ(push(*office, ani, cw::Referral::kAccompaniedFieldNumber, accompanied).status(),
            v1::ChangeResult::STATUS_APPLIED);
  EXPECT_EQ(push(*office, ani, kStatus, status(cw::REFERRAL_STATUS_SENT)).status(),
            v1::ChangeResult::STATUS_APPLIED);
}

}  // namespace
}  // namespace teduh::server::testing
