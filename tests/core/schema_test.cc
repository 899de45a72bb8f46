#include "teduh/core/schema.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "teduh/case/v1/case.pb.h"
#include "teduh/core/deadlines.h"

namespace teduh::core {
namespace {

using ::testing::HasSubstr;
namespace cw = teduh::casework::v1;

const RecordKind& CaseKind() { return *Schema::Get().FindKind(kCaseKind); }

TEST(SchemaTest, ReadsPoliciesFromProtoOptions) {
  const RecordKind& k = CaseKind();
  EXPECT_EQ(k.short_name, "case");
  EXPECT_EQ(k.FindFieldByName("risk_level")->merge, teduh::MERGE_RULE_MAX);
  EXPECT_EQ(k.FindFieldByName("stage")->merge, teduh::MERGE_RULE_STAGE);
  EXPECT_EQ(k.FindFieldByName("violence_types")->merge, teduh::MERGE_RULE_UNION);
  EXPECT_EQ(k.FindFieldByName("case_number")->merge, teduh::MERGE_RULE_IMMUTABLE);
  EXPECT_EQ(k.FindFieldByName("region_code")->merge, teduh::MERGE_RULE_LWW);
  EXPECT_EQ(k.FindFieldByName("needs")->merge, teduh::MERGE_RULE_UNION);
  EXPECT_EQ(k.FindFieldByName("created_at")->merge, teduh::MERGE_RULE_IMMUTABLE);
  EXPECT_EQ(k.FindFieldByName("route")->merge, teduh::MERGE_RULE_LWW);
  for (const char* assignment : {"assigned_pendamping", "assigned_konselor", "assigned_psikolog"})
    EXPECT_EQ(k.FindFieldByName(assignment)->merge, teduh::MERGE_RULE_LWW) << assignment;
  // Sealed identity and narrative: a person at the office confirms concurrent edits.
  for (const char* narrative : {"chronology", "incident_details", "safety_plan", "risk_rationale"})
    EXPECT_EQ(k.FindFieldByName(narrative)->merge, teduh::MERGE_RULE_REVIEW) << narrative;
  const RecordKind* person = Schema::Get().FindKind(kPersonKind);
  ASSERT_NE(person, nullptr);
  for (const char* identity : {"name", "nik", "birth_date", "address", "phone", "statement"}) {
    EXPECT_TRUE(person->FindFieldByName(identity)->sealed) << identity;
    EXPECT_EQ(person->FindFieldByName(identity)->merge, teduh::MERGE_RULE_REVIEW) << identity;
  }
  EXPECT_TRUE(k.FindFieldByName("chronology")->sealed);
  EXPECT_FALSE(k.FindFieldByName("risk_level")->sealed);
  const RecordKind* note = Schema::Get().FindKind(kNoteKind);
  ASSERT_NE(note, nullptr);
  EXPECT_TRUE(note->append_only);
  EXPECT_EQ(note->FindFieldByName("clinical_body")->access, teduh::ACCESS_CLASS_CLINICAL);
  EXPECT_EQ(note->FindFieldByName("body")->access, teduh::ACCESS_CLASS_GENERAL);
}

TEST(SchemaTest, SealedFieldsUseOnlyLwwOrReview) {
  for (const auto& kind : Schema::Get().kinds()) {
    for (const FieldPolicy& f : kind->fields) {
      if (f.sealed) {
        EXPECT_TRUE(f.merge == teduh::MERGE_RULE_LWW || f.merge == teduh::MERGE_RULE_REVIEW)
            << kind->full_name << "." << f.name;
      }
    }
  }
}

// A pushed value is one field's serialization: the server reads its tags.
TEST(SchemaTest, SetsOnlyFieldReadsEveryTagOfTheValue) {
  const std::uint32_t risk = cw::Case::kRiskLevelFieldNumber;
  cw::Case c;
  c.set_risk_level(cw::RISK_LEVEL_HIGH);
  EXPECT_TRUE(SetsOnlyField(c.SerializeAsString(), risk));
  EXPECT_FALSE(SetsOnlyField(c.SerializeAsString(), cw::Case::kRouteFieldNumber));
  c.set_route(cw::ROUTE_MEDIATION);  // a second field
  EXPECT_FALSE(SetsOnlyField(c.SerializeAsString(), risk));
  EXPECT_TRUE(SetsOnlyField("", risk));  // the default value is no bytes
  cw::Case types;                        // a repeated field: several values, one field
  types.add_violence_types(cw::VIOLENCE_TYPE_PHYSICAL);
  types.add_violence_types(cw::VIOLENCE_TYPE_SEXUAL);
  EXPECT_TRUE(SetsOnlyField(types.SerializeAsString(), cw::Case::kViolenceTypesFieldNumber));
  // A field the schema does not know: only its own number.
  const std::string unknown("\xa2\x06\x02ok", 5);  // field 100, length-delimited "ok"
  EXPECT_TRUE(SetsOnlyField(unknown, 100));
  EXPECT_FALSE(SetsOnlyField(unknown + c.SerializeAsString(), 100));
  // Bytes that are not a well-formed message.
  const std::string tag_only(1, static_cast<char>(risk << 3));  // a varint's tag, no value
  EXPECT_FALSE(SetsOnlyField(tag_only, risk));
  EXPECT_FALSE(SetsOnlyField(std::string("\x00", 1), 0));               // a zero tag
  const std::string open_group(1, static_cast<char>((risk << 3) | 3));  // never ended
  EXPECT_FALSE(SetsOnlyField(open_group, risk));
  const std::string long_value("\xa2\x06\x7fok", 5);  // says 127 bytes, holds 2
  EXPECT_FALSE(SetsOnlyField(long_value, 100));
}

TEST(SchemaTest, IdentityAndNarrativeAreSealed) {
  const RecordKind* person = Schema::Get().FindKind(kPersonKind);
  for (const char* name : {"name", "nik", "birth_date", "address", "phone", "statement"})
    EXPECT_TRUE(person->FindFieldByName(name)->sealed) << name;
  for (const char* name : {"role", "sex", "age_group", "has_disability"})
    EXPECT_FALSE(person->FindFieldByName(name)->sealed) << name;
}

TEST(SchemaTest, EnumAcceptsPrefixedShortAndIndonesianNamesCaseInsensitively) {
  const auto* e = cw::RiskLevel_descriptor();
  for (const char* text :
       {"HIGH", "high", "RISK_LEVEL_HIGH", "risk_level_high", "tinggi", "Tinggi"}) {
    auto v = ParseEnumValue(*e, text, nullptr);
    ASSERT_TRUE(v) << text;
    EXPECT_EQ(*v, cw::RISK_LEVEL_HIGH) << text;
  }
  auto fisik = ParseEnumValue(*cw::ViolenceType_descriptor(), "fisik", nullptr);
  ASSERT_TRUE(fisik);
  EXPECT_EQ(*fisik, cw::VIOLENCE_TYPE_PHYSICAL);
}

TEST(SchemaTest, BadEnumValueListsValidValues) {
  std::string message;
  auto v = ParseEnumValue(*cw::RiskLevel_descriptor(), "extreme", &message);
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error(), make_error_code(errc::bad_value));
  EXPECT_THAT(message, HasSubstr("LOW"));
  EXPECT_THAT(message, HasSubstr("HIGH (tinggi)"));
}

TEST(SchemaTest, UnspecifiedIsNotAcceptedAsInput) {
  EXPECT_FALSE(ParseEnumValue(*cw::RiskLevel_descriptor(), "unspecified", nullptr));
}

TEST(SchemaTest, EncodesRepeatedEnumFromCommaList) {
  const RecordKind& k = CaseKind();
  auto bytes = EncodeFieldText(k, *k.FindFieldByName("violence_types"), "physical, psikis",
                               TimeZone::kWib, CodeBook(), nullptr);
  ASSERT_TRUE(bytes);
  cw::Case c;
  ASSERT_TRUE(c.ParseFromString(*bytes));
  ASSERT_EQ(c.violence_types_size(), 2);
  EXPECT_EQ(c.violence_types(0), cw::VIOLENCE_TYPE_PHYSICAL);
  EXPECT_EQ(c.violence_types(1), cw::VIOLENCE_TYPE_PSYCHOLOGICAL);
}

TEST(SchemaTest, SingleFieldSerializationHoldsOnlyThatField) {
  const RecordKind& k = CaseKind();
  auto bytes = EncodeFieldText(k, *k.FindFieldByName("risk_level"), "sedang", TimeZone::kWib,
                               CodeBook(), nullptr);
  ASSERT_TRUE(bytes);
  auto msg = DecodeFieldValue(k, *bytes);
  ASSERT_TRUE(msg);
  std::vector<const google::protobuf::FieldDescriptor*> set;
  (*msg)->GetReflection()->ListFields(**msg, &set);
  ASSERT_EQ(set.size(), 1u);
  EXPECT_EQ(set[0]->name(), "risk_level");
  EXPECT_EQ(FieldToJson(**msg, *k.FindFieldByName("risk_level"), CodeBook()), "MEDIUM");
  cw::Case cleared;  // a reopened case's closure reason: no value, not "UNSPECIFIED"
  EXPECT_TRUE(FieldToJson(cleared, *k.FindFieldByName("closure_reason"), CodeBook()).is_null());
  EXPECT_EQ(
      FieldToDisplay(**msg, *k.FindFieldByName("risk_level"), "id", TimeZone::kWib, CodeBook()),
      "sedang");
  EXPECT_EQ(
      FieldToDisplay(**msg, *k.FindFieldByName("risk_level"), "en", TimeZone::kWib, CodeBook()),
      "medium");
}

TEST(SchemaTest, TimesAreShownInTheUnitsZone) {
  const RecordKind& k = CaseKind();
  cw::Case c;
  c.set_received_at(1796229000);  // 2026-12-02 16:30 UTC
  const FieldPolicy& f = *k.FindFieldByName("received_at");
  EXPECT_EQ(FieldToDisplay(c, f, "id", TimeZone::kWib, CodeBook()), "2026-12-02 23:30 WIB");
  EXPECT_EQ(FieldToDisplay(c, f, "id", TimeZone::kWit, CodeBook()), "2026-12-03 01:30 WIT");
}

TEST(SchemaTest, RejectsTextThatIsNotAValueOfTheField) {
  const RecordKind& k = CaseKind();
  std::string message;
  EXPECT_FALSE(EncodeFieldText(k, *k.FindFieldByName("episode"), "two", TimeZone::kWib, CodeBook(),
                               &message));
  EXPECT_THAT(message, HasSubstr("episode"));
  EXPECT_FALSE(EncodeFieldText(k, *k.FindFieldByName("victim_is_child"), "maybe", TimeZone::kWib,
                               CodeBook(), &message));
  EXPECT_FALSE(EncodeFieldText(k, *k.FindFieldByName("received_at"), "2024-13-01", TimeZone::kWib,
                               CodeBook(), &message));
}

// A date typed by an officer is in the unit's zone, or UTC when it says so.
TEST(SchemaTest, ParsesDatesInTheUnitsZoneOrUtc) {
  const RecordKind& k = CaseKind();
  const FieldPolicy& f = *k.FindFieldByName("received_at");
  auto seconds = [&](std::string_view text, TimeZone zone) -> std::int64_t {
    auto bytes = EncodeFieldText(k, f, text, zone, CodeBook(), nullptr);
    if (!bytes) return -1;
    cw::Case c;
    return c.ParseFromString(*bytes) ? c.received_at() : -1;
  };
  constexpr std::int64_t k1030Utc = 1709634600;  // 2024-03-05 10:30 UTC
  EXPECT_EQ(seconds("2024-03-05 10:30Z", TimeZone::kWit), k1030Utc);
  EXPECT_EQ(seconds("2024-03-05 10:30 UTC", TimeZone::kWib), k1030Utc);
  EXPECT_EQ(seconds("2024-03-05 17:30", TimeZone::kWib), k1030Utc);
  EXPECT_EQ(seconds("2024-03-05T18:30", TimeZone::kWita), k1030Utc);
  EXPECT_EQ(seconds("2024-03-05", TimeZone::kWit), 1709564400);           // midnight WIT
  EXPECT_EQ(seconds("2024-03-05T10:30:00Z", TimeZone::kWita), k1030Utc);  // as --json prints
  EXPECT_EQ(seconds("2024-03-05 17:30:59", TimeZone::kWib), k1030Utc + 59);
  for (std::string_view bad : {"2024-03-05 10:30 WIB", "2024-03-05 10:30 ", "2024-03-0510:30",
                               "2024- 3- 5", "2024-03-05 +1:+5", "2024-02-31", "2024-3-5",
                               "2024-03-05 24:00", "2024-03-05 10:30:5", "24-03-05", "Z"}) {
    EXPECT_EQ(seconds(bad, TimeZone::kWib), -1) << bad;
  }
  EXPECT_EQ(seconds("2024-02-29", TimeZone::kWib), 1709139600);  // a leap day, midnight WIB
}

TEST(SchemaTest, DecodeRejectsGarbage) {
  EXPECT_FALSE(DecodeFieldValue(CaseKind(), std::string("\xff\xff\xff\xff", 4)));
}

}  // namespace

TEST(CaseworkRulesTest, AChildOrOldOrDisabledVictimIsVulnerable) {
  cw::Case plain;
  EXPECT_FALSE(VulnerableVictim(plain, {}));
  cw::Case child_case;
  child_case.set_category(cw::CATEGORY_CHILD_PROTECTION);
  EXPECT_TRUE(VulnerableVictim(child_case, {}));
  for (auto age : {cw::AGE_GROUP_0_5, cw::AGE_GROUP_13_17, cw::AGE_GROUP_60_PLUS}) {
    cw::Person p;
    p.set_age_group(age);
    EXPECT_TRUE(VulnerableVictim(plain, {p})) << age;
  }
  cw::Person adult;
  adult.set_age_group(cw::AGE_GROUP_25_44);
  EXPECT_FALSE(VulnerableVictim(plain, {adult}));
  adult.set_has_disability(true);
  EXPECT_TRUE(VulnerableVictim(plain, {adult}));
}

}  // namespace teduh::core
