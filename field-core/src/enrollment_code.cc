#include "teduh/core/enrollment_code.h"

#include <array>
#include <cctype>

#include "teduh/core/sealing.h"
#include "teduh/crypto/crypto.h"

namespace teduh::core {
namespace {

constexpr std::string_view kAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
constexpr std::size_t kRandomChars = 16;
constexpr std::size_t kFingerprintChars = 8;

CodeHash HashOf(std::string_view random_part) { return crypto::Hash(AsSpan(random_part)); }

// The canonical Crockford character for `c`, or 0 if `c` is not one.
char Canonical(char c) {
  c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (c == 'I' || c == 'L') return '1';
  if (c == 'O') return '0';
  return kAlphabet.find(c) == std::string_view::npos ? 0 : c;
}

}  // namespace

NewCode MakeEnrollmentCode(std::string_view unit_root_pk) {
  std::array<std::uint8_t, 10> bits = crypto::RandomArray<10>();
  std::string random_part;
  random_part.reserve(kRandomChars);
  // 80 bits, five at a time, most significant first.
  for (std::size_t i = 0; i < kRandomChars; ++i) {
    std::size_t bit = i * 5;
    unsigned v = 0;
    for (std::size_t b = 0; b < 5; ++b, ++bit)
      v = (v << 1) | ((bits[bit / 8] >> (7 - bit % 8)) & 1u);
    random_part.push_back(kAlphabet[v]);
  }
  crypto::Wipe(std::span<std::uint8_t>(bits));
  NewCode out;
  out.hash = HashOf(random_part);
  for (std::size_t i = 0; i < kRandomChars; i += 4) {
    if (i) out.code.push_back('-');
    out.code.append(random_part, i, 4);
  }
  if (!unit_root_pk.empty()) out.code += "-" + KeyFingerprint(unit_root_pk);
  return out;
}

result<ParsedCode> ParseEnrollmentCode(std::string_view typed) {
  if (typed.size() > kMaxEnrollmentCodeChars) return make_error_code(errc::bad_value);
  std::string compact;
  for (char c : typed) {
    if (c == '-' || c == ' ') continue;
    compact.push_back(c);
    if (compact.size() > kRandomChars + kFingerprintChars) return make_error_code(errc::bad_value);
  }
  if (compact.size() != kRandomChars && compact.size() != kRandomChars + kFingerprintChars)
    return make_error_code(errc::bad_value);
  ParsedCode out;
  for (std::size_t i = 0; i < kRandomChars; ++i) {
    char c = Canonical(compact[i]);
    if (!c) return make_error_code(errc::bad_value);
    compact[i] = c;
  }
  for (std::size_t i = kRandomChars; i < compact.size(); ++i) {
    char c = static_cast<char>(std::toupper(static_cast<unsigned char>(compact[i])));
    if (!std::isxdigit(static_cast<unsigned char>(c))) return make_error_code(errc::bad_value);
    out.fingerprint.push_back(c);
  }
  out.hash = HashOf(std::string_view(compact).substr(0, kRandomChars));
  return out;
}

}  // namespace teduh::core
