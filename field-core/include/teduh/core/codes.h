// The code lists of the casework domain that a unit can extend: violence
// types, categories, channels, closure reasons, who referred a case, regions,
// partner agencies, the services a case is referred for, and what a service
// delivered consisted of.
//
// Every unit starts with the defaults: the values of the schema's enums for
// lists held in an enum field (Case.category...), and the lists of codes.cc
// for lists held in a string field (Referral.agency...). A unit adds its own
// codes on the server (`teduh-server code add`); the server sends them to
// every device in its Welcome, and both ends read and show values through a
// CodeBook. A field names its list in the schema: (teduh.code_list).
//
// A unit's code in an enum-held list has a number of 1000 and up, which is
// what records store (proto3 enums keep unknown numbers, so devices and
// servers that do not know the code yet pass it through untouched). In a
// string-held list the record stores the code itself. Codes are never
// removed, only retired: a retired code is shown but not accepted anew.
//
// Thread safety: a CodeBook is a value; const methods may be called from any
// number of threads.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "teduh/core/error.h"
#include "teduh/sync/v1/sync.pb.h"

namespace teduh::core {

struct CodeEntry {
  std::string list;         // "violence_type"
  std::string code;         // "PHYSICAL", "TRAFFICKING", "POLRES", "64.72"
  std::int32_t number = 0;  // enum-held lists: the value stored; otherwise 0
  std::string label_id;
  std::string label_en;
  bool unit = false;     // the unit's own, not a default
  bool retired = false;  // shown, not accepted for new values
};

// A unit's own codes: their numbers start here.
inline constexpr std::int32_t kFirstUnitCodeNumber = 1000;
// Bounds on a unit's codes (the Welcome carries them all).
inline constexpr std::size_t kMaxUnitCodes = 1000;
inline constexpr std::size_t kMaxCodeLength = 32;
inline constexpr std::size_t kMaxCodeLabelBytes = 120;

class CodeBook {
 public:
  // The defaults.
  CodeBook();

  // The names of the lists, in a fixed order.
  static const std::vector<std::string_view>& ListNames();
  static bool IsList(std::string_view list);
  // True if the list is held in an enum field (its codes have numbers).
  static bool EnumHeld(std::string_view list);

  // Why `entry` cannot be a unit's new code here, or "" if it can: an
  // unknown list, a code that is not 1-32 of A-Z 0-9 _ . -, a code or label
  // the list already has, a missing or overlong label, too many codes.
  // `entry.number` is ignored (Add gives it).
  std::string Problem(const CodeEntry& entry) const;
  // Adds a unit's code (Problem must be ""): an enum-held list gives it the
  // next free number from kFirstUnitCodeNumber. Returns the entry as added.
  result<CodeEntry> Add(CodeEntry entry);
  // Adds a unit's code exactly as stored or as the server sent it (with its
  // number): false and nothing added if it is malformed (list, code, labels
  // of UTF-8 text within bounds), its code or number is taken, or the book
  // holds kMaxUnitCodes already.
  bool Restore(const CodeEntry& entry);
  std::size_t UnitCodeCount() const;
  // Retires (or un-retires) a unit's code; errc::not_found if the list has no
  // such unit code (defaults cannot be retired).
  result<void> SetRetired(std::string_view list, std::string_view code, bool retired);

  // The entry whose code or either label is `text` (case-insensitive, spaces
  // and dashes alike), or whose enum name is (RISK... VIOLENCE_TYPE_PHYSICAL).
  const CodeEntry* Find(std::string_view list, std::string_view text) const;
  const CodeEntry* FindNumber(std::string_view list, std::int32_t number) const;
  // The entry whose code is exactly `code` (as records store it), or null.
  const CodeEntry* FindCode(std::string_view list, std::string_view code) const;
  // Every entry of a list, defaults first; retired ones only when asked.
  std::vector<const CodeEntry*> Entries(std::string_view list, bool with_retired = false) const;
  // The unit's own codes, in the order they were added.
  std::vector<CodeEntry> UnitCodes() const;

  // "POLRES (Kepolisian Resor), ..." for an error message, in `lang`.
  std::string Choices(std::string_view list, std::string_view lang) const;
  // The label of `entry` in `lang` ("id" or "en"; the code if it has none).
  static std::string Label(const CodeEntry& entry, std::string_view lang);

 private:
  std::vector<CodeEntry> entries_;
};

// {"list", "code", "number" (enum-held lists), "label_id", "label_en",
// "unit", "retired"}: a code as `code list --json` prints it and device.json
// keeps it; CodeEntryFromJson reads it back (missing keys empty).
nlohmann::json CodeEntryJson(const CodeEntry& entry);
CodeEntry CodeEntryFromJson(const nlohmann::json& j);
// A unit's code as the protocol and the server's store carry it.
CodeEntry CodeEntryFromProto(const teduh::sync::v1::UnitCode& c);
void CodeEntryToProto(const CodeEntry& e, teduh::sync::v1::UnitCode* out);
// A CodeBook with the unit's codes of `stored` (a sync::v1::UnitCodes
// message, at most kMaxUnitCodes read): nullopt if it does not parse or a
// code in it is not kept, so that nothing is ever written back without it.
std::optional<CodeBook> CodeBookFromUnitCodes(const teduh::sync::v1::UnitCodes& stored);

// `teduh code list` and `teduh-server code list`: every list, or only
// `list`, with each code's label in `lang` (the unit's marked), and as JSON
// {"codes": [CodeEntryJson...]}.
std::string CodeListText(const CodeBook& book, std::string_view list, std::string_view lang);
nlohmann::json CodeListJson(const CodeBook& book, std::string_view list);

}  // namespace teduh::core
