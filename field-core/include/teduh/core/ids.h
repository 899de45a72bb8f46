// Ids of records, devices and servers: 16 random bytes, made where the thing
// is created (offline, so never by the server for records). Shown as 32 hex
// digits; a unique prefix of at least 6 digits is accepted where users type ids.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "teduh/core/error.h"

namespace teduh::core {

using Id = std::array<std::uint8_t, 16>;

Id NewId() noexcept;
std::string ToHex(std::span<const std::uint8_t> bytes);
// The value of one hex digit (either case), or -1.
int HexValue(char c) noexcept;
// Parses exactly 32 hex digits (either case).
result<Id> IdFromHex(std::string_view hex) noexcept;
// Parses any even-length hex string.
result<std::string> BytesFromHex(std::string_view hex);
// Id from a 16-byte protobuf `bytes` field; errc::malformed_frame when the length is wrong.
result<Id> IdFromBytes(std::string_view bytes) noexcept;
inline std::string_view AsBytes(const Id& id) noexcept {
  return {reinterpret_cast<const char*>(id.data()), id.size()};
}
inline std::span<const std::uint8_t> AsSpan(std::string_view s) noexcept {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

}  // namespace teduh::core
