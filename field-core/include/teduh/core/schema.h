// The record schema: every record kind Teduh syncs, read at run time from the
// generated protobuf descriptors and their options (proto/teduh/options.proto).
// The policy of each field — merge rule, sealed, access class, labels — comes
// from there and nowhere else.
//
// Field values travel and are stored as "single-field serializations": the
// wire bytes of a message of the record's kind with only that one field set.
// This keeps each field an independent unit of sync while staying plain
// protobuf, so unknown fields from newer devices pass through untouched.
//
// Thread safety: Schema::Get() is built once (thread-safe static) and is
// immutable afterwards; every function here is thread-safe.
#pragma once

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "teduh/core/codes.h"
#include "teduh/core/error.h"
#include "teduh/core/i18n.h"
#include "teduh/core/time_zone.h"
#include "teduh/options.pb.h"

namespace teduh::core {

struct FieldPolicy {
  const google::protobuf::FieldDescriptor* descriptor = nullptr;
  std::uint32_t number = 0;
  std::string name;                                // proto field name: the `--set` name
  teduh::MergeRule merge = teduh::MERGE_RULE_LWW;  // UNSPECIFIED is read as LWW
  bool sealed = false;
  teduh::AccessClass access = teduh::ACCESS_CLASS_GENERAL;
  bool per_episode = false;  // (teduh.per_episode): belongs to one episode of a case
  std::string code_list;     // (teduh.code_list): its values are codes of this list
  // (teduh.attribution): the string field that names who did what the record
  // says — this field, or the attribution field of this message field's type.
  const google::protobuf::FieldDescriptor* attribution = nullptr;
  std::string label_id;
  std::string label_en;
};

struct RecordKind {
  const google::protobuf::Descriptor* descriptor = nullptr;
  std::string full_name;   // "teduh.casework.v1.Case"
  std::string short_name;  // "case"
  bool append_only = false;
  std::string label_id;
  std::string label_en;
  std::vector<FieldPolicy> fields;  // by field number

  const FieldPolicy* FindField(std::uint32_t number) const;
  const FieldPolicy* FindFieldByName(std::string_view name) const;
};

class Schema {
 public:
  // All record kinds compiled into this program.
  static const Schema& Get();

  const RecordKind* FindKind(std::string_view full_name) const;
  const RecordKind* FindKindByShortName(std::string_view short_name) const;
  const std::vector<std::unique_ptr<RecordKind>>& kinds() const { return kinds_; }

 private:
  Schema();
  std::vector<std::unique_ptr<RecordKind>> kinds_;
};

// Names of the record kinds, for code that creates them.
inline constexpr std::string_view kCaseKind = "teduh.casework.v1.Case";
inline constexpr std::string_view kPersonKind = "teduh.casework.v1.Person";
inline constexpr std::string_view kNoteKind = "teduh.casework.v1.Note";
inline constexpr std::string_view kAccessKind = "teduh.casework.v1.Access";
inline constexpr std::string_view kReferralKind = "teduh.casework.v1.Referral";
inline constexpr std::string_view kTaskKind = "teduh.casework.v1.Task";
inline constexpr std::string_view kContactAttemptKind = "teduh.casework.v1.ContactAttempt";
inline constexpr std::string_view kAssessmentKind = "teduh.casework.v1.Assessment";
inline constexpr std::string_view kServiceDeliveredKind = "teduh.casework.v1.ServiceDelivered";
inline constexpr std::string_view kCaseKeyKind = "teduh.keys.v1.CaseKey";
inline constexpr std::string_view kConflictKind = "teduh.casework.v1.Conflict";

// Display labels, through the message catalog (core/i18n.h): the field's,
// the record kind's and an enum value's, in `lang` (the name when it has none).
std::string FieldLabel(const FieldPolicy& field, Lang lang);
std::string KindLabel(const RecordKind& kind, Lang lang);
std::string EnumValueLabel(const google::protobuf::EnumValueDescriptor& v, Lang lang);

// "RISK_LEVEL_HIGH" -> "HIGH": an enum value's name without its enum's prefix.
std::string ShortEnumName(const google::protobuf::EnumValueDescriptor& v);
// How names typed by people are compared: trimmed, lower case, spaces and
// dashes as underscores ("Perlindungan anak" == "perlindungan_anak").
std::string NormalizeName(std::string_view s);

// Parses an enum value as a user types it: the proto name ("RISK_LEVEL_HIGH"),
// the name without its prefix ("HIGH"), or either label ("tinggi", "high"),
// case-insensitively. On failure the message lists the valid values.
result<int> ParseEnumValue(const google::protobuf::EnumDescriptor& e, std::string_view text,
                           std::string* message);

// Encodes `text` as a value of `field` (ints, bools "true/false/ya/tidak",
// strings, enums as above, repeated fields as a comma-separated list, times as
// "YYYY-MM-DD [HH:MM]" in `zone` or with a trailing "Z" in UTC) into a
// single-field serialization. A field with a code list takes a code of
// `codes` that is not retired (its code or either label); a region code is
// free text while the unit has no region list. On failure returns
// errc::bad_value with a message that names the field and lists valid values.
result<std::string> EncodeFieldText(const RecordKind& kind, const FieldPolicy& field,
                                    std::string_view text, TimeZone zone, const CodeBook& codes,
                                    std::string* message);

// Decodes a single-field serialization into a fresh message of `kind`
// (errc::bad_value if it does not parse or is larger than `max_bytes`).
result<std::unique_ptr<google::protobuf::Message>> DecodeFieldValue(const RecordKind& kind,
                                                                    std::string_view bytes);

// Whether the serialized message `bytes` holds field `field` only: every tag
// names it (none at all: the field's default). False for any other field,
// known to the schema or not, and for bytes that are not well-formed. Reads
// the tags, not the values: bounded by the input's size (protobuf's reader
// limits the nesting of groups).
bool SetsOnlyField(std::string_view bytes, std::uint32_t field);

// The user a decoded single-field value names as the one who did it (see
// FieldPolicy::attribution): empty when the field names nobody or is unset.
std::string AttributedUser(const google::protobuf::Message& msg, const FieldPolicy& field);

// Renders one field of a decoded message as JSON: string/number/bool, enums
// as their short name ("HIGH") or the unit's code, repeated fields as arrays,
// bytes as hex. A number no code book knows is shown as the number.
nlohmann::json FieldToJson(const google::protobuf::Message& msg, const FieldPolicy& field,
                           const CodeBook& codes);
// Renders it for people: enums and codes by their label in `lang` ("id" or
// "en"), repeated values joined with ", ", times as "YYYY-MM-DD HH:MM WITA"
// in the unit's time zone.
std::string FieldToDisplay(const google::protobuf::Message& msg, const FieldPolicy& field,
                           std::string_view lang, TimeZone zone, const CodeBook& codes);

}  // namespace teduh::core
