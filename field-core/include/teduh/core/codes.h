// Code lists of the casework domain that are data rather than schema enums:
// partner agencies and the services a case is referred for. These are the
// defaults every unit starts with (DOMAIN-REPORT §4); records store the code
// as text, so a unit's own codes need no schema change.
//
// Thread safety: read-only data.
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace teduh::core {

struct Code {
  std::string_view code;  // upper case, e.g. "POLRES"
  std::string_view label_id;
  std::string_view label_en;
};

std::span<const Code> DefaultAgencies();
std::span<const Code> DefaultServices();

// The code in `list` matching `text` (case-insensitive), or null.
const Code* FindCode(std::span<const Code> list, std::string_view text);
// "POLRES (Kepolisian Resor), ..." for an error message.
std::string ListCodes(std::span<const Code> list, std::string_view lang);

}  // namespace teduh::core
