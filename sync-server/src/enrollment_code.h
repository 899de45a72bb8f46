// One-time enrollment codes (docs/PROTOCOL.md §2): 16 Crockford base32
// characters in groups of four (80 random bits), then, once the unit has a
// root key, "-" and the 8-hex-digit fingerprint of the unit root public key.
// The store keeps only the BLAKE2b-256 hash of the normalised random part.
//
// Thread safety: stateless and thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "teduh/core/error.h"
#include "teduh/server/store.h"

namespace teduh::server {

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
core::result<ParsedCode> ParseEnrollmentCode(std::string_view typed);

}  // namespace teduh::server
