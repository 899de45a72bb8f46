// Hostile clients (issue 15): what an approved device or a stranger on the
// network could do to the unit, tried against the real server over real
// WebSockets. Each test is bounded in count and time and uses loopback only.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "server/server_fixture.h"
#include "teduh/case/v1/case.pb.h"
#include "teduh/core/schema.h"

namespace teduh::server::testing {
namespace {

namespace cw = teduh::casework::v1;
namespace pb = google::protobuf;
using HostileClientTest = ServerTest;

// A single-field value of `field` whose attribution names `user`.
std::string ValueNaming(const core::RecordKind& kind, const core::FieldPolicy& field,
                        const std::string& user) {
  std::unique_ptr<pb::Message> msg(
      pb::MessageFactory::generated_factory()->GetPrototype(kind.descriptor)->New());
  pb::Message* holder = msg.get();
  if (field.attribution != field.descriptor)
    holder = msg->GetReflection()->MutableMessage(msg.get(), field.descriptor);
  holder->GetReflection()->SetString(holder, field.attribution, user);
  return msg->SerializeAsString();
}

// Every record that says someone did something (wrote a note, viewed the
// case, made a visit, delivered a service, signed a letter, resolved a
// conflict) is attributed by the schema, so the server can check it.
TEST(AttributionTest, EveryFieldThatNamesWhoDidSomethingIsAttributed) {
  std::set<std::string> attributed;
  for (const auto& kind : core::Schema::Get().kinds())
    for (const auto& f : kind->fields)
      if (f.attribution) attributed.insert(kind->short_name + "." + f.name);
  EXPECT_EQ(attributed,
            (std::set<std::string>{"note.author", "assessment.assessed_by",
                                   "service_delivered.delivered_by", "referral.created_by",
                                   "referral.signed_by", "task.done_by", "contact_attempt.by",
                                   "access.viewer", "conflict.resolution"}));
  // A conflict's resolution names its resolver inside the message.
  const auto* conflict = core::Schema::Get().FindKind(core::kConflictKind);
  const auto* resolution = conflict->FindField(cw::Conflict::kResolutionFieldNumber);
  cw::Conflict c;
  c.mutable_resolution()->set_resolved_by("budi");
  c.mutable_resolution()->set_resolution("kept");
  EXPECT_EQ(core::AttributedUser(c, *resolution), "budi");
  EXPECT_EQ(core::AttributedUser(cw::Conflict(), *resolution), "");
}

TEST_F(HostileClientTest, ARecordNamesWhoDidItOnlyInThePushingUsersOwnName) {
  EnrollBootstrapAdmin();
  // A supervisor may sign letters and mark tasks done: every attributed
  // field is hers to write, in her own name only.
  TestDevice tono = EnrollApproved(v1::ROLE_SUPERVISOR, "tono");
  auto client = Login(tono);
  const Id case_id = core::NewId();
  const v1::PushResult made =
      Push(*client, {OpenChange(tono, case_id, core::kCaseKind, {}, 1, CaseText(1, "K-1"))});
  ASSERT_EQ(made.results(0).status(), v1::ChangeResult::STATUS_APPLIED);

  int checked = 0;
  std::int64_t offset = 0;
  for (const auto& kind : core::Schema::Get().kinds()) {
    if (kind->full_name == core::kConflictKind) continue;  // made by the server only
    for (const auto& f : kind->fields) {
      if (!f.attribution) continue;
      SCOPED_TRACE(kind->short_name + "." + f.name);
      const Id record = core::NewId();
      // In another user's name: refused, and nothing is written.
      const v1::PushResult forged =
          Push(*client, {OpenChange(tono, record, kind->full_name, case_id, f.number,
                                    ValueNaming(*kind, f, "budi"), offset += 10)});
      EXPECT_EQ(forged.results(0).status(), v1::ChangeResult::STATUS_REJECTED);
      EXPECT_EQ(forged.results(0).reason(), "wrong_author");
      // In her own name: applied.
      const v1::PushResult own =
          Push(*client, {OpenChange(tono, record, kind->full_name, case_id, f.number,
                                    ValueNaming(*kind, f, "tono"), offset += 10)});
      EXPECT_EQ(own.results(0).status(), v1::ChangeResult::STATUS_APPLIED)
          << own.results(0).reason();
      ++checked;
    }
  }
  EXPECT_EQ(checked, 8);
  // What another device pulls names tono only.
  TestDevice ani = EnrollApproved(v1::ROLE_OFFICE, "ani");
  auto office = Login(ani);
  int names = 0;
  for (const auto& change : PullAll(*office)) {
    EXPECT_EQ(change.value().find("budi"), std::string::npos) << change.kind();
    names += change.value().find("tono") != std::string::npos;
  }
  EXPECT_EQ(names, 8);
}

}  // namespace
}  // namespace teduh::server::testing
