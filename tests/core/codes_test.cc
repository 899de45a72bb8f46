// Code lists a unit extends (issue 5, "Codes ... are data a unit can
// extend"): the defaults, a unit's own codes, what is refused, and how
// values of them are read, stored and shown.
#include "teduh/core/codes.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "teduh/case/v1/case.pb.h"
#include "teduh/core/schema.h"

namespace teduh::core {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
namespace cw = teduh::casework::v1;

const RecordKind& CaseKind() { return *Schema::Get().FindKind(kCaseKind); }

CodeEntry Code(std::string list, std::string code, std::string id, std::string en) {
  return CodeEntry{std::move(list), std::move(code), 0, std::move(id), std::move(en)};
}

TEST(CodeBookTest, DefaultsAreTheSchemaValuesAndTheDefaultLists) {
  CodeBook book;
  const CodeEntry* fisik = book.Find("violence_type", "fisik");
  ASSERT_NE(fisik, nullptr);
  EXPECT_EQ(fisik->code, "PHYSICAL");
  EXPECT_EQ(fisik->number, cw::VIOLENCE_TYPE_PHYSICAL);
  EXPECT_FALSE(fisik->unit);
  EXPECT_EQ(book.Find("violence_type", "VIOLENCE_TYPE_SEXUAL")->code, "SEXUAL");
  EXPECT_EQ(book.Find("category", "Perlindungan anak")->code, "CHILD_PROTECTION");
  EXPECT_EQ(book.Find("agency", "polres")->code, "POLRES");
  EXPECT_EQ(book.Find("referral_service", "legal")->code, "LEGAL");
  EXPECT_EQ(book.Find("referrer_type", "sekolah")->code, "SCHOOL");
  EXPECT_TRUE(book.Entries("region").empty());  // a unit sets up its own regions
  EXPECT_TRUE(CodeBook::EnumHeld("closure_reason"));
  EXPECT_FALSE(CodeBook::EnumHeld("agency"));
  EXPECT_EQ(book.Find("violence_type", "perdagangan orang"), nullptr);
}

TEST(CodeBookTest, AUnitCodeOfAnEnumListIsNumberedFromOneThousand) {
  CodeBook book;
  auto t = book.Add(Code("violence_type", "TRAFFICKING", "perdagangan orang", "trafficking"));
  ASSERT_TRUE(t);
  EXPECT_EQ(t->number, kFirstUnitCodeNumber);
  EXPECT_TRUE(t->unit);
  auto b = book.Add(Code("violence_type", "BULLYING", "perundungan", "bullying"));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->number, kFirstUnitCodeNumber + 1);
  auto r = book.Add(Code("region", "64.72.01", "Samarinda Ulu", "Samarinda Ulu"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->number, 0);  // held as text
  EXPECT_EQ(book.Find("violence_type", "Perundungan")->number, kFirstUnitCodeNumber + 1);
  EXPECT_EQ(book.FindNumber("violence_type", kFirstUnitCodeNumber)->code, "TRAFFICKING");
  EXPECT_EQ(book.UnitCodes().size(), 3u);
}

TEST(CodeBookTest, RefusesCodesThatWouldBeAmbiguousOrUnbounded) {
  CodeBook book;
  EXPECT_THAT(book.Problem(Code("weapon", "KNIFE", "pisau", "knife")),
              HasSubstr("unknown code list"));
  EXPECT_THAT(book.Problem(Code("violence_type", "bad code", "x", "x")), HasSubstr("A-Z"));
  EXPECT_THAT(book.Problem(Code("violence_type", std::string(33, 'A'), "x", "x")),
              HasSubstr("A-Z"));
  EXPECT_THAT(book.Problem(Code("violence_type", "PHYSICAL", "pukulan", "beating")),
              HasSubstr("already has the code"));
  // A label that already names another code would make typed input ambiguous.
  EXPECT_THAT(book.Problem(Code("violence_type", "HITTING", "fisik", "hitting")),
              HasSubstr("already names"));
  EXPECT_THAT(book.Problem(Code("agency", "LPSK", "", "witness protection")), HasSubstr("label"));
  EXPECT_THAT(book.Problem(Code("agency", "LPSK", std::string(121, 'x'), "witness protection")),
              HasSubstr("label"));
  EXPECT_THAT(book.Problem(Code("agency", "LPSK", "LPSK\nx", "witness protection")),
              HasSubstr("label"));
  // A code that is another code's label would shadow it.
  EXPECT_THAT(book.Problem(Code("violence_type", "FISIK", "pukulan", "beating")),
              HasSubstr("already names"));
  // Labels travel in proto3 strings: UTF-8 only.
  EXPECT_THAT(book.Problem(Code("agency", "LPSK", "Lembaga \xe9x", "witness protection")),
              HasSubstr("label"));
  EXPECT_TRUE(book.Problem(Code("agency", "LPSK", "Lembaga Perlindungan Saksi dan Korban — LPSK",
                                "witness protection"))
                  .empty());
  EXPECT_FALSE(book.Add(Code("violence_type", "PHYSICAL", "a", "b")));
  EXPECT_EQ(book.UnitCodes().size(), 0u);
  for (std::size_t i = 0; i < kMaxUnitCodes; ++i)
    ASSERT_TRUE(book.Add(
        Code("region", "R" + std::to_string(i), "w" + std::to_string(i), "r" + std::to_string(i))));
  EXPECT_THAT(book.Problem(Code("region", "ONE.MORE", "lagi", "more")), HasSubstr("at most"));
}

TEST(CodeBookTest, RestoreTakesOnlyWhatTheServerCouldHaveGiven) {
  CodeBook book;
  EXPECT_TRUE(book.Restore(
      CodeEntry{"violence_type", "TRAFFICKING", 1000, "perdagangan orang", "trafficking", true}));
  // A number taken, below the unit range, or on a text-held list is refused.
  EXPECT_FALSE(
      book.Restore(CodeEntry{"violence_type", "BULLYING", 1000, "perundungan", "bullying"}));
  EXPECT_FALSE(book.Restore(CodeEntry{"violence_type", "BULLYING", 7, "perundungan", "bullying"}));
  EXPECT_FALSE(book.Restore(CodeEntry{"region", "64.72", 1001, "Samarinda", "Samarinda"}));
  EXPECT_FALSE(book.Restore(CodeEntry{"region", "64.72", 0, "Samarinda \xff", "Samarinda"}));
  EXPECT_FALSE(book.Restore(CodeEntry{"violence_type", "TRAFFICKING", 1001, "lagi", "again"}));
  EXPECT_EQ(book.UnitCodes().size(), 1u);
  // A unit's code stays even if a later default takes its label: stored
  // codes are never dropped.
  EXPECT_TRUE(book.Restore(CodeEntry{"violence_type", "HITTING", 1002, "fisik", "hitting"}));
}

TEST(CodeBookTest, OnlyAUnitsOwnCodeCanBeRetired) {
  CodeBook book;
  ASSERT_TRUE(book.Add(Code("agency", "LPSK", "Lembaga Perlindungan Saksi dan Korban",
                            "witness and victim protection agency")));
  EXPECT_TRUE(book.SetRetired("agency", "lpsk", true));
  EXPECT_TRUE(book.Find("agency", "LPSK")->retired);
  EXPECT_EQ(book.Entries("agency").size(), 10u);        // offered: the ten defaults
  EXPECT_EQ(book.Entries("agency", true).size(), 11u);  // shown: and the retired one
  EXPECT_FALSE(book.SetRetired("agency", "POLRES", true));
  EXPECT_THAT(book.Choices("agency", "id"), Not(HasSubstr("LPSK")));
}

TEST(CodeBookTest, FieldsReadStoreAndShowAUnitsCodes) {
  CodeBook book;
  ASSERT_TRUE(book.Add(Code("violence_type", "TRAFFICKING", "perdagangan orang", "trafficking")));
  const RecordKind& k = CaseKind();
  const FieldPolicy& types = *k.FindFieldByName("violence_types");
  std::string why;
  auto bytes = EncodeFieldText(k, types, "perdagangan orang, fisik", TimeZone::kWib, book, &why);
  ASSERT_TRUE(bytes) << why;
  cw::Case c;
  ASSERT_TRUE(c.ParseFromString(*bytes));
  ASSERT_EQ(c.violence_types_size(), 2);
  EXPECT_EQ(c.violence_types(0), kFirstUnitCodeNumber);  // stored as its number
  EXPECT_EQ(FieldToJson(c, types, book), (nlohmann::json{"TRAFFICKING", "PHYSICAL"}));
  EXPECT_EQ(FieldToDisplay(c, types, "id", TimeZone::kWib, book), "perdagangan orang, fisik");
  EXPECT_EQ(FieldToDisplay(c, types, "en", TimeZone::kWib, book), "trafficking, physical");
  // A device that has not heard of the code yet keeps and shows the number.
  EXPECT_EQ(FieldToJson(c, types, CodeBook()), (nlohmann::json{"1000", "PHYSICAL"}));
  // The same text without the unit's code is refused, with the valid ones.
  EXPECT_FALSE(EncodeFieldText(k, types, "perdagangan orang", TimeZone::kWib, CodeBook(), &why));
  EXPECT_THAT(why, HasSubstr("PHYSICAL ("));
  // Retired: kept on records, not accepted anew.
  ASSERT_TRUE(book.SetRetired("violence_type", "TRAFFICKING", true));
  EXPECT_FALSE(EncodeFieldText(k, types, "trafficking", TimeZone::kWib, book, &why));
  EXPECT_EQ(FieldToDisplay(c, types, "id", TimeZone::kWib, book), "perdagangan orang, fisik");
}

TEST(CodeBookTest, ARegionIsFreeUntilTheUnitListsItsRegions) {
  const RecordKind& k = CaseKind();
  const FieldPolicy& region = *k.FindFieldByName("region_code");
  std::string why;
  CodeBook book;
  auto free = EncodeFieldText(k, region, "64.72", TimeZone::kWib, book, &why);
  ASSERT_TRUE(free) << why;
  ASSERT_TRUE(book.Add(Code("region", "14.72.01", "Dumai Barat", "West Dumai")));
  EXPECT_FALSE(EncodeFieldText(k, region, "64.72", TimeZone::kWib, book, &why));
  EXPECT_THAT(why, HasSubstr("14.72.01 ("));
  auto listed = EncodeFieldText(k, region, "dumai barat", TimeZone::kWib, book, &why);
  ASSERT_TRUE(listed) << why;
  cw::Case c;
  ASSERT_TRUE(c.ParseFromString(*listed));
  EXPECT_EQ(c.region_code(), "14.72.01");  // the code, whichever way it was typed
  EXPECT_EQ(FieldToDisplay(c, region, "en", TimeZone::kWib, book), "West Dumai");
  const FieldPolicy& referrer = *k.FindFieldByName("referrer_type");
  auto by = EncodeFieldText(k, referrer, "ketua RT/RW", TimeZone::kWib, book, &why);
  ASSERT_TRUE(by) << why;
  ASSERT_TRUE(c.ParseFromString(*by));
  EXPECT_EQ(c.referrer_type(), "RT_RW");
}

TEST(CodeBookTest, CodeEntryJsonIsTheScriptingShape) {
  CodeBook book;
  auto t = book.Add(Code("violence_type", "TRAFFICKING", "perdagangan orang", "trafficking"));
  ASSERT_TRUE(t);
  EXPECT_EQ(CodeEntryJson(*t), (nlohmann::json{{"list", "violence_type"},
                                               {"code", "TRAFFICKING"},
                                               {"number", 1000},
                                               {"label_id", "perdagangan orang"},
                                               {"label_en", "trafficking"},
                                               {"unit", true},
                                               {"retired", false}}));
}

}  // namespace
}  // namespace teduh::core
