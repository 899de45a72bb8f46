// Fuzz target for the texts people type or paste into Teduh: recovery kit
// shares, backup key tokens and secrets, enrollment codes (also what a device
// sends the server), roles, time zones, languages,
// enum values and every field's text form (`--set field=value`). The first
// byte chooses the parser; the rest is the text.
// Built like frame_fuzz (libFuzzer with clang; a replay driver otherwise).
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "teduh/core/backup_file.h"
#include "teduh/core/codes.h"
#include "teduh/core/enrollment_code.h"
#include "teduh/core/frame_codec.h"
#include "teduh/core/i18n.h"
#include "teduh/core/recovery_kit.h"
#include "teduh/core/roles.h"
#include "teduh/core/schema.h"
#include "teduh/core/time_zone.h"
#include "teduh/crypto/crypto.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool quiet = (teduh::core::SilenceProtobufLog(), true);
  (void)quiet;
  namespace core = teduh::core;
  static const bool ready = !teduh::crypto::Init();
  if (!ready || size < 1) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 8) {
    case 0:
      (void)core::ParseRecoveryShare(text, 1);
      break;
    case 1:
      (void)core::ParseBackupKeyToken(text);
      break;
    case 2:
      (void)core::ParseBackupSecret(text);
      break;
    case 3:
      (void)core::ParseRole(text);
      (void)core::ParseTimeZone(text);
      (void)core::ParseLang(text);
      break;
    case 4: {
      // What the parser accepts, typed again in lower case, is the same code.
      auto code = core::ParseEnrollmentCode(text);
      if (code) {
        std::string lower(text);
        for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        auto again = core::ParseEnrollmentCode(lower);
        if (!again || again->hash != code->hash || again->fingerprint != code->fingerprint)
          __builtin_trap();
      }
      break;
    }
    default: {
      // A field's text form: kind and field from the next two bytes.
      if (text.size() < 2) return 0;
      const auto& kinds = core::Schema::Get().kinds();
      const core::RecordKind& kind = *kinds[static_cast<std::uint8_t>(text[0]) % kinds.size()];
      if (kind.fields.empty()) return 0;
      const core::FieldPolicy& field =
          kind.fields[static_cast<std::uint8_t>(text[1]) % kind.fields.size()];
      static const core::CodeBook codes;
      std::string message;
      auto encoded =
          core::EncodeFieldText(kind, field, text.substr(2), core::TimeZone::kWib, codes, &message);
      // What the text form accepts decodes as the field, and sets only it.
      if (encoded &&
          (!core::DecodeFieldValue(kind, *encoded) || !core::SetsOnlyField(*encoded, field.number)))
        __builtin_trap();
      break;
    }
  }
  return 0;
}
