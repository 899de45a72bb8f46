// Small helpers shared by the files that implement Device (device.cc and
// device_*.cc); not part of the API.
#pragma once

#include <cctype>
#include <string>
#include <string_view>
#include <utility>

#include "teduh/core/schema.h"

namespace teduh::core::internal {

// The schema's description of a record kind the code names (always known).
inline const RecordKind& KindOf(std::string_view full) { return *Schema::Get().FindKind(full); }

// One field of a record of `kind`: its policy and the single-field
// serialization of a fresh `Msg` that `set` filled.
template <typename Msg, typename Set>
std::pair<const FieldPolicy*, std::string> FieldOf(const RecordKind& kind, std::string_view name,
                                                   Set set) {
  Msg m;
  set(m);
  return {kind.FindFieldByName(name), m.SerializeAsString()};
}

inline std::string Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

inline std::string Lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace teduh::core::internal
