// Fuzz target for the decoding of field values: every open value a device
// pushes is decoded by the server against its record kind (the merge rules,
// attribution, scope), and every pulled value by the devices. The first two
// bytes choose the record kind and the field; the rest is the value.
// Built like frame_fuzz (libFuzzer with clang; a replay driver otherwise).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "teduh/core/codes.h"
#include "teduh/core/frame_codec.h"
#include "teduh/core/schema.h"
#include "teduh/core/time_zone.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool quiet = (teduh::core::SilenceProtobufLog(), true);
  (void)quiet;
  if (size < 2) return 0;
  namespace core = teduh::core;
  const auto& kinds = core::Schema::Get().kinds();
  const core::RecordKind& kind = *kinds[data[0] % kinds.size()];
  if (kind.fields.empty()) return 0;
  const core::FieldPolicy& field = kind.fields[data[1] % kind.fields.size()];
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 2, size - 2);
  const bool only = core::SetsOnlyField(bytes, field.number);
  auto msg = core::DecodeFieldValue(kind, bytes);
  if (!msg) return 0;
  static const core::CodeBook codes;
  (void)core::AttributedUser(**msg, field);
  (void)core::FieldToJson(**msg, field, codes);
  (void)core::FieldToDisplay(**msg, field, "id", core::TimeZone::kWita, codes);
  // A value that sets only its field re-encodes to a value that still does.
  if (only && !core::SetsOnlyField((*msg)->SerializeAsString(), field.number) &&
      (*msg)->GetReflection()->GetUnknownFields(**msg).empty())
    __builtin_trap();
  return 0;
}
