// One-time enrollment codes (docs/PROTOCOL.md §2): 16 Crockford base32
// characters in groups of four (80 random bits), then, once the unit has a
// root key, "-" and the 8-hex-digit fingerprint of the unit root public key.
// The server keeps only the BLAKE2b-256 hash of the normalised random part.
// Both ends read a code with the same parser: the server when a device sends
// it, the device when an officer types it (so both agree on the fingerprint
// the device pins).
//
// Thread safety: stateless and thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "teduh/core/error.h"

namespace teduh::core {

using CodeHash = std::array<std::uint8_t, 32>;

struct NewCode {
  std::string code;  // as shown to the admin
  CodeHash hash{};
};
// A fresh code; `unit_root_pk` empty before the bootstrap admin enrolled.
NewCode MakeEnrollmentCode(std::string_view unit_root_pk);

struct ParsedCode {
  CodeHash hash{};
  std::string fingerprint;  // upper-case hex, empty when the code has none
};
// Accepts the code as typed: any case, spaces or dashes anywhere, and
// Crockford's look-alikes (I and L for 1, O for 0). errc::bad_value otherwise.
// Reads at most kMaxEnrollmentCodeChars characters of it.
inline constexpr std::size_t kMaxEnrollmentCodeChars = 64;
result<ParsedCode> ParseEnrollmentCode(std::string_view typed);

}  // namespace teduh::core
