// The message catalog (issue 5, "Language"): Indonesian from po/id.po and
// the schema's labels, English as written, and the language chosen the way
// the locale says.
#include "teduh/core/i18n.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <string>

#include "teduh/case/v1/case.pb.h"
#include "teduh/core/schema.h"

namespace teduh::core {
namespace {

namespace cw = teduh::casework::v1;

// Sets the locale variables for one test and puts them back after it.
class Environment {
 public:
  explicit Environment(std::map<std::string, std::optional<std::string>> vars) {
    for (const auto& [name, value] : vars) {
      const char* old = std::getenv(name.c_str());
      saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
      Set(name, value);
    }
  }
  ~Environment() {
    for (const auto& [name, value] : saved_) Set(name, value);
  }

 private:
  static void Set(const std::string& name, const std::optional<std::string>& value) {
    if (value) {
      setenv(name.c_str(), value->c_str(), 1);
    } else {
      unsetenv(name.c_str());
    }
  }
  std::map<std::string, std::optional<std::string>> saved_;
};

TEST(I18nTest, MarkedMessagesReadInIndonesianOrAsWritten) {
  EXPECT_EQ(Tr(Lang::kId, "yes"), "ya");
  EXPECT_EQ(Tr(Lang::kEn, "yes"), "yes");
  EXPECT_EQ(Tr(Lang::kId, "cases received"), "kasus diterima");
  // A message the catalog does not have stays as written.
  EXPECT_EQ(Tr(Lang::kId, "no such message in the catalog"), "no such message in the catalog");
}

TEST(I18nTest, FormattedMessagesTranslateTheirTextNotTheirArguments) {
  EXPECT_EQ(TrFIn(Lang::kId, "Case report {} to {}", "2025-01-01", "2025-12-31"),
            "Laporan kasus 2025-01-01 sampai 2025-12-31");
  EXPECT_EQ(TrFIn(Lang::kEn, "Case report {} to {}", "2025-01-01", "2025-12-31"),
            "Case report 2025-01-01 to 2025-12-31");
}

TEST(I18nTest, TheProcessLanguageIsWhatSetLangSaid) {
  const Lang before = CurrentLang();
  SetLang(Lang::kId);
  EXPECT_EQ(Tr("yes"), "ya");
  EXPECT_EQ(TrF("By {}", "bulan"), "Menurut bulan");
  SetLang(Lang::kEn);
  EXPECT_EQ(Tr("yes"), "yes");
  SetLang(before);
}

TEST(I18nTest, SchemaLabelsComeFromTheCatalog) {
  const RecordKind& k = *Schema::Get().FindKind(kCaseKind);
  EXPECT_EQ(FieldLabel(*k.FindFieldByName("risk_level"), Lang::kId), "tingkat risiko");
  EXPECT_EQ(FieldLabel(*k.FindFieldByName("risk_level"), Lang::kEn), "risk level");
  EXPECT_EQ(KindLabel(k, Lang::kId), "kasus");
  const auto* v = cw::Stage_descriptor()->FindValueByNumber(cw::STAGE_PEMANTAUAN);
  EXPECT_EQ(EnumValueLabel(*v, Lang::kId), "pemantauan");
  EXPECT_EQ(EnumValueLabel(*v, Lang::kEn), "monitoring");
  // Two values with one English label read as each enum says ("other").
  const auto* closure = cw::ClosureReason_descriptor()->FindValueByNumber(cw::CLOSURE_REASON_OTHER);
  EXPECT_EQ(EnumValueLabel(*closure, Lang::kId), "lainnya");
}

TEST(I18nTest, EveryLabelOfTheSchemaHasItsIndonesianInTheCatalog) {
  for (const auto& kind : Schema::Get().kinds()) {
    for (const FieldPolicy& f : kind->fields) {
      if (f.label_id.empty()) continue;
      // What the catalog gives is the schema's Indonesian, not a fallback.
      EXPECT_EQ(TrC(Lang::kId, f.descriptor->full_name().c_str(), f.label_en.c_str()), f.label_id)
          << f.descriptor->full_name();
    }
  }
}

TEST(I18nTest, ParsesLanguagesAndLocaleNames) {
  EXPECT_EQ(ParseLang("id"), Lang::kId);
  EXPECT_EQ(ParseLang("id_ID.UTF-8"), Lang::kId);
  EXPECT_EQ(ParseLang("en_US"), Lang::kEn);
  EXPECT_EQ(ParseLang("en"), Lang::kEn);
  EXPECT_FALSE(ParseLang("C"));
  EXPECT_FALSE(ParseLang("POSIX"));
  EXPECT_FALSE(ParseLang("fr_FR.UTF-8"));
  EXPECT_FALSE(ParseLang("indigo"));
}

TEST(I18nTest, TheLocaleDecidesInItsUsualOrder) {
  {
    Environment e({{"LANGUAGE", std::nullopt},
                   {"LC_ALL", "en_US.UTF-8"},
                   {"LC_MESSAGES", "id_ID.UTF-8"},
                   {"LANG", "id_ID.UTF-8"}});
    EXPECT_EQ(LangFromEnvironment(), Lang::kEn);
  }
  {
    // LANGUAGE lists preferences; the first known one wins.
    Environment e({{"LANGUAGE", "fr:en:id"}, {"LC_ALL", std::nullopt}, {"LANG", "id_ID.UTF-8"}});
    EXPECT_EQ(LangFromEnvironment(), Lang::kEn);
  }
  {
    // LC_ALL=C overrides LANG and names no language: the users' Indonesian.
    Environment e({{"LANGUAGE", std::nullopt},
                   {"LC_ALL", "C"},
                   {"LC_MESSAGES", std::nullopt},
                   {"LANG", "en_US.UTF-8"}});
    EXPECT_EQ(LangFromEnvironment(), Lang::kId);
  }
  {
    Environment e({{"LANGUAGE", std::nullopt},
                   {"LC_ALL", std::nullopt},
                   {"LC_MESSAGES", std::nullopt},
                   {"LANG", std::nullopt}});
    EXPECT_EQ(LangFromEnvironment(), Lang::kId);
  }
}

TEST(I18nTest, TheCommandLineOverridesTheLocale) {
  Environment e({{"LANGUAGE", std::optional<std::string>("id")}});
  const char* en[] = {"teduh", "--home", "/tmp/x", "--lang", "en", "status"};
  EXPECT_EQ(LangFromArgs(6, en), Lang::kEn);
  const char* eq[] = {"teduh-server", "report", "--lang=en"};
  EXPECT_EQ(LangFromArgs(3, eq), Lang::kEn);
  // After "--" it is an argument, not an option; an unknown value is ignored.
  const char* after[] = {"teduh", "note", "add", "--", "--lang", "en"};
  EXPECT_EQ(LangFromArgs(6, after), Lang::kId);
  const char* bad[] = {"teduh", "--lang", "fr"};
  EXPECT_EQ(LangFromArgs(3, bad), Lang::kId);
}

}  // namespace
}  // namespace teduh::core
