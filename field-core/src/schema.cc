#include "teduh/core/schema.h"

#include <fmt/format.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/reflection.h>
#include <google/protobuf/wire_format_lite.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <unordered_map>

#include "teduh/case/v1/case.pb.h"
#include "teduh/core/ids.h"
#include "teduh/keys/v1/keys.pb.h"

namespace teduh::core {
namespace {

namespace pb = google::protobuf;

std::string ShortKindName(std::string_view message_name) {
  std::string out;
  for (char c : message_name) {
    if (std::isupper(static_cast<unsigned char>(c)) && !out.empty()) out += '_';
    out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

// "RiskLevel" -> "RISK_LEVEL_"
// The string field an attribution option on `fd` designates: `fd` itself, or
// the one field of its message type that carries the option. A schema that
// marks anything else is a programming error, caught at start.
const pb::FieldDescriptor* AttributionField(const pb::FieldDescriptor& fd) {
  const pb::FieldDescriptor* named = nullptr;
  if (fd.type() == pb::FieldDescriptor::TYPE_STRING && !fd.is_repeated()) {
    named = &fd;
  } else if (fd.type() == pb::FieldDescriptor::TYPE_MESSAGE && !fd.is_repeated()) {
    const pb::Descriptor& t = *fd.message_type();
    for (int i = 0; i < t.field_count(); ++i)
      if (t.field(i)->options().GetExtension(teduh::attribution)) named = t.field(i);
  }
  if (!named || named->type() != pb::FieldDescriptor::TYPE_STRING || named->is_repeated()) {
    std::fprintf(stderr, "schema: (teduh.attribution) on %s names no single string field\n",
                 fd.full_name().c_str());
    std::abort();
  }
  return named;
}

std::string EnumPrefix(const pb::EnumDescriptor& e) {
  std::string out;
  for (char c : e.name()) {
    if (std::isupper(static_cast<unsigned char>(c)) && !out.empty()) out += '_';
    out += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return out + "_";
}

std::vector<std::string_view> SplitList(std::string_view text) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    std::string_view part = text.substr(start, comma - start);
    while (!part.empty() && std::isspace(static_cast<unsigned char>(part.front())))
      part.remove_prefix(1);
    while (!part.empty() && std::isspace(static_cast<unsigned char>(part.back())))
      part.remove_suffix(1);
    if (!part.empty()) parts.push_back(part);
    start = comma + 1;
  }
  return parts;
}

template <typename T>
bool ParseNumber(std::string_view text, T& out) {
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && ptr == text.data() + text.size();
}

// Exactly `width` digits at `text[at]`.
bool Digits(std::string_view text, std::size_t at, std::size_t width, int& out) {
  if (at + width > text.size()) return false;
  out = 0;
  for (std::size_t i = at; i < at + width; ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
    out = out * 10 + (text[i] - '0');
  }
  return true;
}

// Unix seconds from "now", digits, or "YYYY-MM-DD", "YYYY-MM-DD HH:MM[:SS]" /
// "YYYY-MM-DDTHH:MM[:SS]" in the unit's zone (as people read times), or in
// UTC with a trailing "Z" or " UTC" (so the CLI's own JSON times read back).
// Nothing else: no missing digits, signs, spaces or impossible days.
bool ParseTime(std::string_view text, TimeZone zone, std::int64_t& out) {
  if (NormalizeName(text) == "now" || NormalizeName(text) == "sekarang") {
    out = static_cast<std::int64_t>(std::time(nullptr));
    return true;
  }
  if (ParseNumber(text, out)) return true;
  std::int64_t offset = TimeZoneOffsetSeconds(zone);
  for (std::string_view utc : {"Z", " UTC", " utc"}) {
    if (text.size() > utc.size() && text.ends_with(utc)) {
      text.remove_suffix(utc.size());
      offset = 0;
      break;
    }
  }
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  if (!Digits(text, 0, 4, y) || text.size() < 10 || text[4] != '-' || !Digits(text, 5, 2, mo) ||
      text[7] != '-' || !Digits(text, 8, 2, d))
    return false;
  if (text.size() > 10) {
    if ((text[10] != ' ' && text[10] != 'T') || text.size() < 16 || !Digits(text, 11, 2, h) ||
        text[13] != ':' || !Digits(text, 14, 2, mi))
      return false;
    if (text.size() > 16 && (text.size() != 19 || text[16] != ':' || !Digits(text, 17, 2, sec)))
      return false;
  }
  if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 59) return false;
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  const std::time_t t = timegm(&tm);
  std::tm back{};
  gmtime_r(&t, &back);
  if (back.tm_mday != d || back.tm_mon != mo - 1) return false;  // 31 February
  out = static_cast<std::int64_t>(t) - offset;
  return true;
}

bool IsTimeField(const FieldPolicy& f) {
  return f.descriptor->cpp_type() == pb::FieldDescriptor::CPPTYPE_INT64 && f.name.size() > 3 &&
         f.name.compare(f.name.size() - 3, 3, "_at") == 0;
}

std::string ValidEnumValues(const pb::EnumDescriptor& e) {
  std::string out;
  for (int i = 0; i < e.value_count(); ++i) {
    const pb::EnumValueDescriptor* v = e.value(i);
    if (v->number() == 0) continue;
    if (!out.empty()) out += ", ";
    out += ShortEnumName(*v);
    const std::string& id = v->options().GetExtension(teduh::value_label_id);
    if (!id.empty()) out += fmt::format(" ({})", id);
  }
  return out;
}

bool SetOne(const FieldPolicy& f, std::string_view text, TimeZone zone, const CodeBook& codes,
            pb::Message& msg, std::string* message) {
  const pb::Reflection* r = msg.GetReflection();
  const pb::FieldDescriptor* d = f.descriptor;
  const bool rep = d->is_repeated();
  auto bad = [&](std::string_view what) {
    if (message) *message = fmt::format("{}: {}", f.name, what);
    return false;
  };
  if (d->type() == pb::FieldDescriptor::TYPE_STRING && !IsValidUtf8(text))
    return bad(Tr("the text is not valid UTF-8 (is the terminal set to another encoding?)"));
  if (!f.code_list.empty()) {
    // A region code is free while the unit has no region list of its own.
    std::string code(text);
    if (!(f.code_list == "region" && codes.Entries(f.code_list, true).empty())) {
      const CodeEntry* e = codes.Find(f.code_list, text);
      if (e == nullptr || e->retired)
        return bad(TrF("'{}' is not a code of the unit's list; valid values: {}",
                       text.substr(0, 40), codes.Choices(f.code_list, LangCode(CurrentLang()))));
      code = e->code;
      if (d->cpp_type() == pb::FieldDescriptor::CPPTYPE_ENUM) {
        rep ? r->AddEnumValue(&msg, d, e->number) : r->SetEnumValue(&msg, d, e->number);
        return true;
      }
    }
    if (d->cpp_type() != pb::FieldDescriptor::CPPTYPE_STRING) return bad(Tr("not a code field"));
    rep ? r->AddString(&msg, d, code) : r->SetString(&msg, d, code);
    return true;
  }
  switch (d->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_STRING: {
      if (d->type() == pb::FieldDescriptor::TYPE_BYTES) {
        auto bytes = BytesFromHex(text);
        if (!bytes) return bad(Tr("expected hex digits"));
        rep ? r->AddString(&msg, d, *bytes) : r->SetString(&msg, d, *bytes);
      } else {
        rep ? r->AddString(&msg, d, std::string(text)) : r->SetString(&msg, d, std::string(text));
      }
      return true;
    }
    case pb::FieldDescriptor::CPPTYPE_INT64: {
      std::int64_t v = 0;
      if (IsTimeField(f) ? !ParseTime(text, zone, v) : !ParseNumber(text, v))
        return bad(IsTimeField(f) ? Tr("expected a date (YYYY-MM-DD [HH:MM], in the unit's time "
                                       "zone; append Z for UTC), Unix seconds or `now`")
                                  : Tr("expected a whole number"));
      rep ? r->AddInt64(&msg, d, v) : r->SetInt64(&msg, d, v);
      return true;
    }
    case pb::FieldDescriptor::CPPTYPE_INT32: {
      std::int32_t v = 0;
      if (!ParseNumber(text, v)) return bad(Tr("expected a whole number"));
      rep ? r->AddInt32(&msg, d, v) : r->SetInt32(&msg, d, v);
      return true;
    }
    case pb::FieldDescriptor::CPPTYPE_UINT32: {
      std::uint32_t v = 0;
      if (!ParseNumber(text, v)) return bad(Tr("expected a whole number"));
      rep ? r->AddUInt32(&msg, d, v) : r->SetUInt32(&msg, d, v);
      return true;
    }
    case pb::FieldDescriptor::CPPTYPE_UINT64: {
      std::uint64_t v = 0;
      if (!ParseNumber(text, v)) return bad(Tr("expected a whole number"));
      rep ? r->AddUInt64(&msg, d, v) : r->SetUInt64(&msg, d, v);
      return true;
    }
    case pb::FieldDescriptor::CPPTYPE_BOOL: {
      const std::string n = NormalizeName(text);
      bool v;
      if (n == "true" || n == "yes" || n == "ya" || n == "1") {
        v = true;
      } else if (n == "false" || n == "no" || n == "tidak" || n == "0") {
        v = false;
      } else {
        return bad(Tr("expected true/false (ya/tidak)"));
      }
      rep ? r->AddBool(&msg, d, v) : r->SetBool(&msg, d, v);
      return true;
    }
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      std::string why;
      auto v = ParseEnumValue(*d->enum_type(), text, &why);
      if (!v) return bad(why);
      rep ? r->AddEnumValue(&msg, d, *v) : r->SetEnumValue(&msg, d, *v);
      return true;
    }
    default:
      return bad(Tr("this field cannot be set from text"));
  }
}

nlohmann::json OneToJson(const pb::Message& msg, const FieldPolicy& f, int index,
                         const CodeBook& codes) {
  const pb::Reflection* r = msg.GetReflection();
  const pb::FieldDescriptor* d = f.descriptor;
  const bool rep = index >= 0;
  switch (d->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_STRING: {
      std::string s = rep ? r->GetRepeatedString(msg, d, index) : r->GetString(msg, d);
      if (d->type() == pb::FieldDescriptor::TYPE_BYTES) return ToHex(AsSpan(s));
      return s;
    }
    case pb::FieldDescriptor::CPPTYPE_INT64:
      return rep ? r->GetRepeatedInt64(msg, d, index) : r->GetInt64(msg, d);
    case pb::FieldDescriptor::CPPTYPE_INT32:
      return rep ? r->GetRepeatedInt32(msg, d, index) : r->GetInt32(msg, d);
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      return rep ? r->GetRepeatedUInt32(msg, d, index) : r->GetUInt32(msg, d);
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      return rep ? r->GetRepeatedUInt64(msg, d, index) : r->GetUInt64(msg, d);
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      return rep ? r->GetRepeatedBool(msg, d, index) : r->GetBool(msg, d);
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      const int n = rep ? r->GetRepeatedEnumValue(msg, d, index) : r->GetEnumValue(msg, d);
      if (n == 0) return nullptr;  // not set, or cleared (a reopened case's closure)
      if (const CodeEntry* e = codes.FindNumber(f.code_list, n)) return e->code;
      if (const pb::EnumValueDescriptor* v = d->enum_type()->FindValueByNumber(n))
        return ShortEnumName(*v);
      return std::to_string(n);  // a unit code this device has not heard of yet
    }
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      return rep ? r->GetRepeatedDouble(msg, d, index) : r->GetDouble(msg, d);
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      return rep ? r->GetRepeatedFloat(msg, d, index) : r->GetFloat(msg, d);
    default:
      return nullptr;
  }
}

std::string OneToDisplay(const pb::Message& msg, const FieldPolicy& f, int index,
                         std::string_view lang, TimeZone zone, const CodeBook& codes) {
  const pb::Reflection* r = msg.GetReflection();
  const pb::FieldDescriptor* d = f.descriptor;
  if (d->cpp_type() == pb::FieldDescriptor::CPPTYPE_ENUM) {
    const int n = index >= 0 ? r->GetRepeatedEnumValue(msg, d, index) : r->GetEnumValue(msg, d);
    if (n == 0) return std::string();  // cleared, e.g. a reopened case's closure reason
    if (const CodeEntry* e = codes.FindNumber(f.code_list, n)) return CodeBook::Label(*e, lang);
    const pb::EnumValueDescriptor* v = d->enum_type()->FindValueByNumber(n);
    if (v == nullptr) return std::to_string(n);
    return EnumValueLabel(*v, ParseLang(lang).value_or(Lang::kId));
  }
  if (!f.code_list.empty() && d->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING) {
    const std::string code =
        index >= 0 ? r->GetRepeatedString(msg, d, index) : r->GetString(msg, d);
    const CodeEntry* e = codes.FindCode(f.code_list, code);
    return e != nullptr ? CodeBook::Label(*e, lang) : code;
  }
  if (IsTimeField(f)) {
    std::int64_t t = index >= 0 ? r->GetRepeatedInt64(msg, d, index) : r->GetInt64(msg, d);
    return t == 0 ? std::string() : FormatLocalTime(t, zone);
  }
  if (d->cpp_type() == pb::FieldDescriptor::CPPTYPE_BOOL) {
    bool b = index >= 0 ? r->GetRepeatedBool(msg, d, index) : r->GetBool(msg, d);
    const Lang l = ParseLang(lang).value_or(Lang::kId);
    return b ? Tr(l, "yes") : Tr(l, "no");
  }
  nlohmann::json j = OneToJson(msg, f, index, codes);
  return j.is_string() ? j.get<std::string>() : j.dump();
}

}  // namespace

namespace {

// The catalog's label of every field, record kind and enum value of the
// schema, in each language, by descriptor: read once (the catalog is part of
// the program), so showing a case does not look each one up again.
class LabelCache {
 public:
  static const LabelCache& Get() {
    static const LabelCache cache;
    return cache;
  }
  const std::string* Find(const void* descriptor, Lang lang) const {
    const auto& m = labels_[lang == Lang::kEn ? 1 : 0];
    auto it = m.find(descriptor);
    return it == m.end() ? nullptr : &it->second;
  }

 private:
  LabelCache() {
    for (const Lang lang : {Lang::kId, Lang::kEn}) {
      auto& m = labels_[lang == Lang::kEn ? 1 : 0];
      for (const auto& kind : Schema::Get().kinds()) {
        m.emplace(kind->descriptor,
                  SchemaLabel(lang, kind->full_name, kind->label_en, kind->label_id));
        for (const FieldPolicy& f : kind->fields) {
          m.emplace(f.descriptor,
                    SchemaLabel(lang, f.descriptor->full_name(), f.label_en, f.label_id));
          if (const pb::EnumDescriptor* e = f.descriptor->enum_type()) {
            for (int i = 0; i < e->value_count(); ++i) {
              const pb::EnumValueDescriptor* v = e->value(i);
              m.emplace(v, SchemaLabel(lang, e->full_name() + "." + v->name(),
                                       v->options().GetExtension(teduh::value_label_en),
                                       v->options().GetExtension(teduh::value_label_id)));
            }
          }
        }
      }
    }
  }
  std::unordered_map<const void*, std::string> labels_[2];
};

}  // namespace

std::string FieldLabel(const FieldPolicy& field, Lang lang) {
  const std::string* cached = LabelCache::Get().Find(field.descriptor, lang);
  std::string l =
      cached ? *cached
             : SchemaLabel(lang, field.descriptor->full_name(), field.label_en, field.label_id);
  return l.empty() ? field.name : l;
}

std::string KindLabel(const RecordKind& kind, Lang lang) {
  const std::string* cached = LabelCache::Get().Find(kind.descriptor, lang);
  std::string l =
      cached ? *cached : SchemaLabel(lang, kind.full_name, kind.label_en, kind.label_id);
  return l.empty() ? kind.short_name : l;
}

std::string EnumValueLabel(const pb::EnumValueDescriptor& v, Lang lang) {
  const std::string* cached = LabelCache::Get().Find(&v, lang);
  std::string l = cached ? *cached
                         : SchemaLabel(lang, v.type()->full_name() + "." + v.name(),
                                       v.options().GetExtension(teduh::value_label_en),
                                       v.options().GetExtension(teduh::value_label_id));
  return l.empty() ? ShortEnumName(v) : l;
}

std::string NormalizeName(std::string_view s) {
  std::size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  std::string out;
  out.reserve(e - b);
  for (std::size_t i = b; i < e; ++i) {
    char c = s[i];
    if (c == ' ' || c == '-') c = '_';
    out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

std::string ShortEnumName(const pb::EnumValueDescriptor& v) {
  const std::string prefix = EnumPrefix(*v.type());
  const std::string& name = v.name();
  if (name.rfind(prefix, 0) == 0) return name.substr(prefix.size());
  return name;
}

const FieldPolicy* RecordKind::FindField(std::uint32_t number) const {
  auto it = std::lower_bound(fields.begin(), fields.end(), number,
                             [](const FieldPolicy& f, std::uint32_t n) { return f.number < n; });
  return it != fields.end() && it->number == number ? &*it : nullptr;
}

const FieldPolicy* RecordKind::FindFieldByName(std::string_view name) const {
  for (const FieldPolicy& f : fields)
    if (f.name == name) return &f;
  return nullptr;
}

Schema::Schema() {
  const pb::Descriptor* descriptors[] = {
      teduh::casework::v1::Case::descriptor(),
      teduh::casework::v1::Person::descriptor(),
      teduh::casework::v1::Note::descriptor(),
      teduh::casework::v1::Conflict::descriptor(),
      teduh::keys::v1::CaseKey::descriptor(),
      teduh::casework::v1::Access::descriptor(),
      teduh::casework::v1::Referral::descriptor(),
      teduh::casework::v1::Task::descriptor(),
      teduh::casework::v1::ContactAttempt::descriptor(),
      teduh::casework::v1::Assessment::descriptor(),
      teduh::casework::v1::ServiceDelivered::descriptor(),
  };
  for (const pb::Descriptor* d : descriptors) {
    auto kind = std::make_unique<RecordKind>();
    kind->descriptor = d;
    kind->full_name = d->full_name();
    kind->short_name = ShortKindName(d->name());
    kind->append_only = d->options().GetExtension(teduh::append_only);
    kind->label_id = d->options().GetExtension(teduh::kind_label_id);
    kind->label_en = d->options().GetExtension(teduh::kind_label_en);
    for (int i = 0; i < d->field_count(); ++i) {
      const pb::FieldDescriptor* fd = d->field(i);
      const pb::FieldOptions& o = fd->options();
      FieldPolicy f;
      f.descriptor = fd;
      f.number = static_cast<std::uint32_t>(fd->number());
      f.name = fd->name();
      f.merge = o.GetExtension(teduh::merge);
      if (f.merge == teduh::MERGE_RULE_UNSPECIFIED) f.merge = teduh::MERGE_RULE_LWW;
      f.sealed = o.GetExtension(teduh::sealed);
      f.access = o.GetExtension(teduh::access);
      if (f.access == teduh::ACCESS_CLASS_UNSPECIFIED) f.access = teduh::ACCESS_CLASS_GENERAL;
      f.label_id = o.GetExtension(teduh::label_id);
      f.label_en = o.GetExtension(teduh::label_en);
      f.per_episode = o.GetExtension(teduh::per_episode);
      f.code_list = o.GetExtension(teduh::code_list);
      if (o.GetExtension(teduh::attribution)) f.attribution = AttributionField(*fd);
      kind->fields.push_back(std::move(f));
    }
    std::sort(kind->fields.begin(), kind->fields.end(),
              [](const FieldPolicy& a, const FieldPolicy& b) { return a.number < b.number; });
    kinds_.push_back(std::move(kind));
  }
}

const Schema& Schema::Get() {
  static const Schema schema;
  return schema;
}

const RecordKind* Schema::FindKind(std::string_view full_name) const {
  for (const auto& k : kinds_)
    if (k->full_name == full_name) return k.get();
  return nullptr;
}

const RecordKind* Schema::FindKindByShortName(std::string_view short_name) const {
  for (const auto& k : kinds_)
    if (k->short_name == short_name) return k.get();
  return nullptr;
}

result<int> ParseEnumValue(const pb::EnumDescriptor& e, std::string_view text,
                           std::string* message) {
  const std::string want = NormalizeName(text);
  if (!want.empty()) {
    for (int i = 0; i < e.value_count(); ++i) {
      const pb::EnumValueDescriptor* v = e.value(i);
      if (v->number() == 0) continue;
      if (want == NormalizeName(v->name()) || want == NormalizeName(ShortEnumName(*v)) ||
          want == NormalizeName(v->options().GetExtension(teduh::value_label_id)) ||
          want == NormalizeName(v->options().GetExtension(teduh::value_label_en))) {
        return v->number();
      }
    }
  }
  if (message)
    *message = TrF("'{}' is not a valid value; valid values: {}", text, ValidEnumValues(e));
  return make_error_code(errc::bad_value);
}

result<std::string> EncodeFieldText(const RecordKind& kind, const FieldPolicy& field,
                                    std::string_view text, TimeZone zone, const CodeBook& codes,
                                    std::string* message) {
  std::unique_ptr<pb::Message> msg(
      pb::MessageFactory::generated_factory()->GetPrototype(kind.descriptor)->New());
  if (field.descriptor->is_repeated()) {
    for (std::string_view part : SplitList(text))
      if (!SetOne(field, part, zone, codes, *msg, message)) return make_error_code(errc::bad_value);
  } else if (!SetOne(field, text, zone, codes, *msg, message)) {
    return make_error_code(errc::bad_value);
  }
  std::string out;
  if (!msg->SerializeToString(&out)) return make_error_code(errc::bad_value);
  return out;
}

result<std::unique_ptr<pb::Message>> DecodeFieldValue(const RecordKind& kind,
                                                      std::string_view bytes) {
  std::unique_ptr<pb::Message> msg(
      pb::MessageFactory::generated_factory()->GetPrototype(kind.descriptor)->New());
  if (!msg->ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    return make_error_code(errc::bad_value);
  return msg;
}

bool SetsOnlyField(std::string_view bytes, std::uint32_t field) {
  using pb::internal::WireFormatLite;
  pb::io::CodedInputStream in(reinterpret_cast<const std::uint8_t*>(bytes.data()),
                              static_cast<int>(bytes.size()));
  for (;;) {
    const std::uint32_t tag = in.ReadTag();
    if (tag == 0) return in.ConsumedEntireMessage();  // the end, not a zero tag
    if (WireFormatLite::GetTagFieldNumber(tag) != static_cast<int>(field)) return false;
    if (!WireFormatLite::SkipField(&in, tag)) return false;
  }
}

std::string AttributedUser(const pb::Message& msg, const FieldPolicy& field) {
  if (!field.attribution || field.descriptor->containing_type() != msg.GetDescriptor()) return {};
  const pb::Reflection* refl = msg.GetReflection();
  const pb::Message* holder = &msg;
  if (field.attribution != field.descriptor) {
    if (!refl->HasField(msg, field.descriptor)) return {};
    holder = &refl->GetMessage(msg, field.descriptor);
  }
  return holder->GetReflection()->GetString(*holder, field.attribution);
}

nlohmann::json FieldToJson(const pb::Message& msg, const FieldPolicy& field,
                           const CodeBook& codes) {
  const pb::FieldDescriptor* d = field.descriptor;
  if (d->is_repeated()) {
    nlohmann::json arr = nlohmann::json::array();
    const int n = msg.GetReflection()->FieldSize(msg, d);
    for (int i = 0; i < n; ++i) arr.push_back(OneToJson(msg, field, i, codes));
    return arr;
  }
  return OneToJson(msg, field, -1, codes);
}

std::string FieldToDisplay(const pb::Message& msg, const FieldPolicy& field, std::string_view lang,
                           TimeZone zone, const CodeBook& codes) {
  const pb::FieldDescriptor* d = field.descriptor;
  if (d->is_repeated()) {
    std::string out;
    const int n = msg.GetReflection()->FieldSize(msg, d);
    for (int i = 0; i < n; ++i) {
      if (i) out += ", ";
      out += OneToDisplay(msg, field, i, lang, zone, codes);
    }
    return out;
  }
  return OneToDisplay(msg, field, -1, lang, zone, codes);
}

}  // namespace teduh::core
