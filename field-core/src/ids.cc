#include "teduh/core/ids.h"

#include "teduh/crypto/crypto.h"

namespace teduh::core {
int HexValue(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Id NewId() noexcept { return crypto::RandomArray<16>(); }

std::string ToHex(std::span<const std::uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(bytes.size() * 2, '0');
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 0xF];
  }
  return out;
}

result<std::string> BytesFromHex(std::string_view hex) {
  if (hex.size() % 2 != 0) return make_error_code(errc::invalid_argument);
  std::string out(hex.size() / 2, '\0');
  for (std::size_t i = 0; i < out.size(); ++i) {
    int hi = HexValue(hex[2 * i]);
    int lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return make_error_code(errc::invalid_argument);
    out[i] = static_cast<char>((hi << 4) | lo);
  }
  return out;
}

result<Id> IdFromHex(std::string_view hex) noexcept {
  if (hex.size() != 32) return make_error_code(errc::invalid_argument);
  Id id{};
  for (std::size_t i = 0; i < id.size(); ++i) {
    int hi = HexValue(hex[2 * i]);
    int lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return make_error_code(errc::invalid_argument);
    id[i] = static_cast<std::uint8_t>((hi << 4) | lo);
  }
  return id;
}

result<Id> IdFromBytes(std::string_view bytes) noexcept {
  if (bytes.size() != 16) return make_error_code(errc::malformed_frame);
  Id id{};
  std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(id.data()));
  return id;
}

}  // namespace teduh::core
