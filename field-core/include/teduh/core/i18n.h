// What both programs say to people, in Bahasa Indonesia or English (issue 5,
// "Language"): every message, label, enum display name and report heading
// goes through a GNU gettext catalog, read with Boost.Locale.
//
// The source strings are English; po/id.po holds their Indonesian. The build
// compiles it with msgfmt, together with the labels of the record schema
// (the (teduh.label_en) / (teduh.label_id) options, with the option's owner
// as msgctxt), and embeds the catalog in the program, so nothing has to be
// found on disk. `tests/i18n` checks that po/id.po translates every string
// the sources mark with Tr, TrC or TrF, and keeps their placeholders.
//
// Thread safety: the catalogs are read once (thread-safe static); SetLang is
// called once at start, before other threads run, and the rest is pure.
#pragma once

#include <fmt/format.h>

#include <optional>
#include <string>
#include <string_view>

namespace teduh::core {

enum class Lang { kId, kEn };

// "id", "en", or a locale name such as "id_ID.UTF-8" or "en_US"; nullopt
// otherwise (and for "C" and "POSIX", which name no language).
std::optional<Lang> ParseLang(std::string_view text);

// Whether `text` is well-formed UTF-8 (what a string field of a record must
// hold: a value that is not cannot be decoded again).
bool IsValidUtf8(std::string_view text);
// The language the environment asks for: the first of LANGUAGE, LC_ALL,
// LC_MESSAGES and LANG that names Indonesian or English; Indonesian, the
// users' language, when none does.
Lang LangFromEnvironment();
std::string_view LangCode(Lang lang);  // "id" or "en"
// The language a command line asks for with `--lang id|en` (or `--lang=`),
// else LangFromEnvironment(). Read before the command line is parsed, so
// that its help and its parse errors are in that language too.
Lang LangFromArgs(int argc, const char* const* argv);

// The language of this process's messages: LangFromEnvironment() until set.
void SetLang(Lang lang);
Lang CurrentLang();

// The translation of `msgid` (English) in `lang`, or `msgid` itself when the
// language is English or the catalog has none.
std::string Tr(Lang lang, const char* msgid);
inline std::string Tr(const char* msgid) { return Tr(CurrentLang(), msgid); }
// With a context (msgctxt): the schema's labels, and short words whose
// translation depends on where they stand.
std::string TrC(Lang lang, const char* context, const char* msgid);
inline std::string TrC(const char* context, const char* msgid) {
  return TrC(CurrentLang(), context, msgid);
}

// Translates a format string, then formats it. A translation whose
// placeholders do not fit the arguments falls back to the English (the
// catalog test keeps that from happening).
// TrFIn formats in `lang`, TrF in the current language. The English is
// checked against the arguments at compile time.
std::string VFormatTr(Lang lang, fmt::string_view msgid, fmt::format_args args);
template <typename... Args>
std::string TrFIn(Lang lang, fmt::format_string<Args...> msgid, Args&&... args) {
  return VFormatTr(lang, fmt::string_view(msgid), fmt::make_format_args(args...));
}
template <typename... Args>
std::string TrF(fmt::format_string<Args...> msgid, Args&&... args) {
  return VFormatTr(CurrentLang(), fmt::string_view(msgid), fmt::make_format_args(args...));
}

// A label of the record schema in the current language: `context` is the
// full name of its owner (the field "teduh.casework.v1.Case.stage", the
// enum value "teduh.casework.v1.Stage.STAGE_PEMANTAUAN" or the message);
// `label_id` stands in if the catalog lacks it.
std::string SchemaLabel(Lang lang, const std::string& context, const std::string& label_en,
                        const std::string& label_id);

}  // namespace teduh::core
