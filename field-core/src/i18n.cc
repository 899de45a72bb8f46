#include "teduh/core/i18n.h"

#include <atomic>
#include <boost/locale/encoding_utf.hpp>
#include <boost/locale/gnu_gettext.hpp>
#include <boost/locale/message.hpp>
#include <cstdlib>
#include <locale>
#include <span>
#include <vector>

namespace teduh::core {

// The compiled catalog (po/id.po and the schema's labels), embedded by the
// build (field-core/CMakeLists.txt).
extern const unsigned char kCatalogIdMo[];
extern const std::size_t kCatalogIdMoSize;

namespace {

std::atomic<int> g_lang{-1};  // -1: not set, read from the environment

const std::locale& CatalogLocale(Lang lang) {
  static const std::locale classic = std::locale::classic();
  static const std::locale indonesian = [] {
    boost::locale::gnu_gettext::messages_info info;
    info.language = "id";
    info.encoding = "UTF-8";
    info.paths = {"/"};
    info.domains = {boost::locale::gnu_gettext::messages_info::domain("teduh")};
    // The catalog is in the program: hand Boost.Locale its bytes whatever
    // file name it asks for in its search order, once.
    info.callback = [](const std::string& file_name, const std::string&) {
      if (file_name.find("/id/LC_MESSAGES/teduh.mo") == std::string::npos)
        return std::vector<char>();
      const auto* p = reinterpret_cast<const char*>(kCatalogIdMo);
      return std::vector<char>(p, p + kCatalogIdMoSize);
    };
    return std::locale(std::locale::classic(),
                       boost::locale::gnu_gettext::create_messages_facet<char>(info));
  }();
  return lang == Lang::kId ? indonesian : classic;
}

}  // namespace

bool IsValidUtf8(std::string_view text) {
  try {
    (void)boost::locale::conv::utf_to_utf<char>(text.data(), text.data() + text.size(),
                                                boost::locale::conv::stop);
    return true;
  } catch (const boost::locale::conv::conversion_error&) {
    return false;
  }
}

std::optional<Lang> ParseLang(std::string_view text) {
  auto starts = [&](std::string_view p) {
    return text.size() >= p.size() && text.substr(0, p.size()) == p &&
           (text.size() == p.size() || text[p.size()] == '_' || text[p.size()] == '.' ||
            text[p.size()] == '-' || text[p.size()] == '@' || text[p.size()] == ':');
  };
  if (starts("id") || starts("in")) return Lang::kId;  // "in": the old code for Indonesian
  if (starts("en")) return Lang::kEn;
  return std::nullopt;
}

Lang LangFromEnvironment() {
  for (const char* var : {"LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"}) {
    const char* v = std::getenv(var);
    if (v == nullptr || *v == '\0') continue;
    // LANGUAGE may list several ("id:en"); the first one we know wins.
    std::string_view list(v);
    while (!list.empty()) {
      const auto colon = list.find(':');
      if (auto l = ParseLang(list.substr(0, colon))) return *l;
      if (colon == std::string_view::npos) break;
      list.remove_prefix(colon + 1);
    }
    // LANGUAGE is only a preference list; a locale variable that is set but
    // names another language (or "C") decides for Indonesian below.
    if (std::string_view(var) != "LANGUAGE") break;
  }
  return Lang::kId;
}

Lang LangFromArgs(int argc, const char* const* argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a(argv[i]);
    if (a == "--") break;
    std::string_view value;
    if (a == "--lang" && i + 1 < argc) {
      value = argv[i + 1];
    } else if (a.rfind("--lang=", 0) == 0) {
      value = a.substr(7);
    } else {
      continue;
    }
    if (value == "id") return Lang::kId;
    if (value == "en") return Lang::kEn;
  }
  return LangFromEnvironment();
}

std::string_view LangCode(Lang lang) { return lang == Lang::kEn ? "en" : "id"; }

void SetLang(Lang lang) { g_lang.store(static_cast<int>(lang)); }

Lang CurrentLang() {
  int l = g_lang.load();
  if (l < 0) {
    l = static_cast<int>(LangFromEnvironment());
    g_lang.store(l);
  }
  return static_cast<Lang>(l);
}

std::string Tr(Lang lang, const char* msgid) {
  if (lang == Lang::kEn) return msgid;
  return boost::locale::translate(msgid).str(CatalogLocale(lang));
}

std::string TrC(Lang lang, const char* context, const char* msgid) {
  if (lang == Lang::kEn) return msgid;
  return boost::locale::translate(context, msgid).str(CatalogLocale(lang));
}

std::string VFormatTr(Lang lang, fmt::string_view msgid, fmt::format_args args) {
  const std::string id(msgid.data(), msgid.size());
  const std::string translated = Tr(lang, id.c_str());
  try {
    return fmt::vformat(translated, args);
  } catch (const fmt::format_error&) {
    return fmt::vformat(id, args);
  }
}

std::string SchemaLabel(Lang lang, const std::string& context, const std::string& label_en,
                        const std::string& label_id) {
  if (label_en.empty()) return lang == Lang::kEn ? label_en : label_id;
  if (lang == Lang::kEn) return label_en;
  std::string t = TrC(lang, context.c_str(), label_en.c_str());
  // Not in the catalog: the schema's own Indonesian.
  return t == label_en && !label_id.empty() ? label_id : t;
}

}  // namespace teduh::core
