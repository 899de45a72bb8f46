#include "teduh/core/codes.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <boost/locale/encoding_utf.hpp>
#include <cctype>

#include "teduh/case/v1/case.pb.h"
#include "teduh/core/i18n.h"
#include "teduh/core/schema.h"
#include "teduh/options.pb.h"

namespace teduh::core {
namespace {

namespace cw = teduh::casework::v1;
namespace pb = google::protobuf;

struct Default {
  std::string_view code, label_id, label_en;
};

// Who brought the case (DOMAIN-REPORT §1.1: walk-in, police, hospital,
// school, RT, the ministry's SAPA 129 line...).
constexpr std::array kReferrerTypes = {
    Default{"SELF", "korban sendiri", "the victim herself"},
    Default{"FAMILY", "keluarga", "family"},
    Default{"COMMUNITY", "masyarakat", "member of the public"},
    Default{"RT_RW", "ketua RT/RW", "neighbourhood head (RT/RW)"},
    Default{"POLICE", "kepolisian", "police"},
    Default{"HOSPITAL", "rumah sakit / puskesmas", "hospital or health centre"},
    Default{"SCHOOL", "sekolah", "school"},
    Default{"NGO", "lembaga masyarakat", "community organisation"},
    Default{"GOVERNMENT", "instansi pemerintah", "government office"},
    Default{"MINISTRY", "KemenPPPA (SAPA 129)", "the ministry (SAPA 129)"},
    Default{"OTHER", "lainnya", "other"},
};

constexpr std::array kAgencies = {
    Default{"POLRES", "Kepolisian Resor (Unit PPA)", "district police (PPA unit)"},
    Default{"KEJAKSAAN", "Kejaksaan Negeri", "public prosecutor"},
    Default{"PENGADILAN", "Pengadilan Negeri / Agama", "court"},
    Default{"RSUD", "Rumah Sakit Umum Daerah", "regional public hospital"},
    Default{"PUSKESMAS", "Pusat Kesehatan Masyarakat", "community health centre"},
    Default{"DINSOS", "Dinas Sosial", "social affairs office"},
    Default{"DINKES", "Dinas Kesehatan", "health office"},
    Default{"DISDIK", "Dinas Pendidikan", "education office"},
    Default{"DUKCAPIL", "Dinas Kependudukan dan Pencatatan Sipil", "civil registry"},
    Default{"LBH", "Lembaga Bantuan Hukum", "legal aid institute"},
};

constexpr std::array kReferralServices = {
    Default{"LEGAL", "bantuan hukum", "legal aid"},
    Default{"MEDICAL", "layanan kesehatan", "medical care"},
    Default{"PSYCHOLOGICAL", "layanan psikologis", "psychological care"},
    Default{"SOCIAL", "rehabilitasi sosial", "social rehabilitation"},
    Default{"SHELTER", "rumah aman", "shelter"},
    Default{"MEDIATION", "mediasi", "mediation"},
};

// What a service delivered consisted of (DOMAIN-REPORT §4.7).
constexpr std::array kServiceActivities = {
    Default{"COUNSELLING_SESSION", "sesi konseling", "counselling session"},
    Default{"GROUP_COUNSELLING", "konseling kelompok", "group counselling"},
    Default{"CRISIS_INTERVENTION", "intervensi krisis", "crisis intervention"},
    Default{"PSYCHOEDUCATION", "psikoedukasi", "psychoeducation"},
    Default{"HOME_VISIT", "kunjungan rumah", "home visit"},
    Default{"ACCOMPANY_POLICE", "pendampingan ke kepolisian", "accompanied to the police"},
    Default{"ACCOMPANY_COURT", "pendampingan ke pengadilan", "accompanied to court"},
    Default{"ACCOMPANY_HOSPITAL", "pendampingan ke rumah sakit", "accompanied to hospital"},
    Default{"MEDIATION_SESSION", "sesi mediasi", "mediation session"},
    Default{"LEGAL_AID", "bantuan hukum", "legal aid"},
    Default{"SOCIAL_AID", "bantuan sosial", "social or material aid"},
    Default{"LIFE_SKILLS", "pelatihan keterampilan", "life-skills training"},
    Default{"RESTITUTION", "restitusi atau kompensasi", "restitution or compensation"},
};

struct ListInfo {
  std::string_view name;
  const pb::EnumDescriptor* (*enum_type)();  // null: held in a string field
  const Default* defaults = nullptr;
  std::size_t default_count = 0;
};

const std::array<ListInfo, 9>& Lists() {
  static const std::array<ListInfo, 9> lists = {
      ListInfo{"violence_type", &cw::ViolenceType_descriptor},
      ListInfo{"category", &cw::Category_descriptor},
      ListInfo{"channel", &cw::Channel_descriptor},
      ListInfo{"closure_reason", &cw::ClosureReason_descriptor},
      ListInfo{"referrer_type", nullptr, kReferrerTypes.data(), kReferrerTypes.size()},
      ListInfo{"region", nullptr},
      ListInfo{"agency", nullptr, kAgencies.data(), kAgencies.size()},
      ListInfo{"referral_service", nullptr, kReferralServices.data(), kReferralServices.size()},
      ListInfo{"service_activity", nullptr, kServiceActivities.data(), kServiceActivities.size()},
  };
  return lists;
}

const ListInfo* FindList(std::string_view name) {
  for (const auto& l : Lists())
    if (l.name == name) return &l;
  return nullptr;
}

bool ValidCode(std::string_view code) {
  if (code.empty() || code.size() > kMaxCodeLength) return false;
  return std::all_of(code.begin(), code.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
  });
}

// 1 to kMaxCodeLabelBytes of UTF-8 (records and the Welcome carry labels in
// proto3 strings, which must be UTF-8), without control characters.
bool ValidLabel(std::string_view label) {
  if (label.empty() || label.size() > kMaxCodeLabelBytes ||
      std::any_of(label.begin(), label.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }))
    return false;
  try {
    (void)boost::locale::conv::utf_to_utf<char>(label.data(), label.data() + label.size(),
                                                boost::locale::conv::stop);
  } catch (const boost::locale::conv::conversion_error&) {
    return false;
  }
  return true;
}

// Why an entry as stored cannot be one of the unit's codes: the shape that
// every code must have (Problem adds the checks against the other codes).
bool WellFormed(const CodeEntry& e) {
  return FindList(e.list) != nullptr && ValidCode(e.code) && ValidLabel(e.label_id) &&
         ValidLabel(e.label_en);
}

std::string Upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

CodeBook::CodeBook() {
  for (const ListInfo& l : Lists()) {
    if (l.enum_type != nullptr) {
      const pb::EnumDescriptor* e = l.enum_type();
      for (int i = 0; i < e->value_count(); ++i) {
        const pb::EnumValueDescriptor* v = e->value(i);
        if (v->number() == 0) continue;
        entries_.push_back(CodeEntry{std::string(l.name), ShortEnumName(*v), v->number(),
                                     v->options().GetExtension(teduh::value_label_id),
                                     v->options().GetExtension(teduh::value_label_en)});
      }
    }
    for (std::size_t i = 0; i < l.default_count; ++i) {
      const Default& d = l.defaults[i];
      entries_.push_back(CodeEntry{std::string(l.name), std::string(d.code), 0,
                                   std::string(d.label_id), std::string(d.label_en)});
    }
  }
}

const std::vector<std::string_view>& CodeBook::ListNames() {
  static const std::vector<std::string_view> names = [] {
    std::vector<std::string_view> out;
    for (const auto& l : Lists()) out.push_back(l.name);
    return out;
  }();
  return names;
}

bool CodeBook::IsList(std::string_view list) { return FindList(list) != nullptr; }

bool CodeBook::EnumHeld(std::string_view list) {
  const ListInfo* l = FindList(list);
  return l != nullptr && l->enum_type != nullptr;
}

std::string CodeBook::Problem(const CodeEntry& entry) const {
  if (!IsList(entry.list))
    return TrF("unknown code list '{}'; the lists are {}", entry.list,
               fmt::format("{}", fmt::join(ListNames(), ", ")));
  if (!ValidCode(entry.code))
    return Tr("a code is 1 to 32 of A-Z, 0-9, '_', '.' and '-' (e.g. TRAFFICKING, 64.72.01)");
  if (!ValidLabel(entry.label_id) || !ValidLabel(entry.label_en))
    return TrF("a code needs an Indonesian and an English label of 1 to {} bytes of text",
               kMaxCodeLabelBytes);
  // A code or label that already names another code would make what people
  // type ambiguous.
  const std::string names[] = {NormalizeName(entry.code), NormalizeName(entry.label_id),
                               NormalizeName(entry.label_en)};
  for (const CodeEntry* e : Entries(entry.list, true)) {
    if (e->code == entry.code) return TrF("{} already has the code {}", entry.list, e->code);
    const std::string theirs[] = {NormalizeName(e->code), NormalizeName(e->label_id),
                                  NormalizeName(e->label_en)};
    for (std::size_t i = 0; i < 3; ++i)
      for (const std::string& t : theirs)
        if (names[i] == t)
          return TrF("'{}' already names {} {}",
                     i == 0   ? entry.code
                     : i == 1 ? entry.label_id
                              : entry.label_en,
                     entry.list, e->code);
  }
  if (UnitCodeCount() >= kMaxUnitCodes)
    return TrF("a unit has at most {} codes of its own", kMaxUnitCodes);
  return {};
}

result<CodeEntry> CodeBook::Add(CodeEntry entry) {
  if (!Problem(entry).empty()) return make_error_code(errc::invalid_argument);
  entry.unit = true;
  entry.number = 0;
  if (EnumHeld(entry.list)) {
    entry.number = kFirstUnitCodeNumber;
    for (const CodeEntry& e : entries_)
      if (e.list == entry.list && e.number >= entry.number) entry.number = e.number + 1;
  }
  entries_.push_back(entry);
  return entry;
}

bool CodeBook::Restore(const CodeEntry& entry) {
  // As stored: well formed, a free number, a code of its own. Not checked
  // against the labels of later defaults, so a release that adds a default
  // never drops a code a unit already uses.
  if (!WellFormed(entry) || FindCode(entry.list, entry.code) != nullptr) return false;
  if (EnumHeld(entry.list)
          ? entry.number < kFirstUnitCodeNumber || FindNumber(entry.list, entry.number) != nullptr
          : entry.number != 0)
    return false;
  if (UnitCodeCount() >= kMaxUnitCodes) return false;
  CodeEntry e = entry;
  e.unit = true;
  entries_.push_back(std::move(e));
  return true;
}

result<void> CodeBook::SetRetired(std::string_view list, std::string_view code, bool retired) {
  const std::string want = Upper(code);
  for (CodeEntry& e : entries_) {
    if (e.unit && e.list == list && e.code == want) {
      e.retired = retired;
      return {};
    }
  }
  return make_error_code(errc::not_found);
}

const CodeEntry* CodeBook::Find(std::string_view list, std::string_view text) const {
  const std::string want = NormalizeName(text);
  if (want.empty()) return nullptr;
  const ListInfo* l = FindList(list);
  for (const CodeEntry& e : entries_) {
    if (e.list != list) continue;
    if (want == NormalizeName(e.code) || want == NormalizeName(e.label_id) ||
        want == NormalizeName(e.label_en))
      return &e;
    if (l->enum_type != nullptr && !e.unit) {
      const pb::EnumValueDescriptor* v = l->enum_type()->FindValueByNumber(e.number);
      if (v != nullptr && want == NormalizeName(v->name())) return &e;
    }
  }
  return nullptr;
}

const CodeEntry* CodeBook::FindCode(std::string_view list, std::string_view code) const {
  for (const CodeEntry& e : entries_)
    if (e.list == list && e.code == code) return &e;
  return nullptr;
}

const CodeEntry* CodeBook::FindNumber(std::string_view list, std::int32_t number) const {
  if (number == 0) return nullptr;
  for (const CodeEntry& e : entries_)
    if (e.list == list && e.number == number) return &e;
  return nullptr;
}

std::vector<const CodeEntry*> CodeBook::Entries(std::string_view list, bool with_retired) const {
  std::vector<const CodeEntry*> out;
  for (const CodeEntry& e : entries_)
    if (e.list == list && (with_retired || !e.retired)) out.push_back(&e);
  return out;
}

std::size_t CodeBook::UnitCodeCount() const {
  return static_cast<std::size_t>(
      std::count_if(entries_.begin(), entries_.end(), [](const CodeEntry& e) { return e.unit; }));
}

std::vector<CodeEntry> CodeBook::UnitCodes() const {
  std::vector<CodeEntry> out;
  for (const CodeEntry& e : entries_)
    if (e.unit) out.push_back(e);
  return out;
}

std::string CodeBook::Choices(std::string_view list, std::string_view lang) const {
  std::string out;
  for (const CodeEntry* e : Entries(list)) {
    if (!out.empty()) out += ", ";
    out += fmt::format("{} ({})", e->code, Label(*e, lang));
  }
  return out;
}

std::string CodeBook::Label(const CodeEntry& entry, std::string_view lang) {
  const Lang l = ParseLang(lang).value_or(Lang::kId);
  // A schema enum's value: its label, through the message catalog.
  if (const ListInfo* info = FindList(entry.list); !entry.unit && info && info->enum_type) {
    if (const auto* v = info->enum_type()->FindValueByNumber(entry.number))
      return EnumValueLabel(*v, l);
  }
  const std::string& label = l == Lang::kEn ? entry.label_en : entry.label_id;
  return label.empty() ? entry.code : label;
}

CodeEntry CodeEntryFromJson(const nlohmann::json& j) {
  CodeEntry e;
  if (!j.is_object()) return e;
  auto text = [&](const char* k) {
    auto it = j.find(k);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  e.list = text("list");
  e.code = text("code");
  e.label_id = text("label_id");
  e.label_en = text("label_en");
  if (auto it = j.find("number"); it != j.end() && it->is_number_integer())
    e.number = it->get<std::int32_t>();
  if (auto it = j.find("unit"); it != j.end() && it->is_boolean()) e.unit = it->get<bool>();
  if (auto it = j.find("retired"); it != j.end() && it->is_boolean()) e.retired = it->get<bool>();
  return e;
}

CodeEntry CodeEntryFromProto(const teduh::sync::v1::UnitCode& c) {
  return CodeEntry{c.list(), c.code(), c.number(), c.label_id(), c.label_en(), true, c.retired()};
}

void CodeEntryToProto(const CodeEntry& e, teduh::sync::v1::UnitCode* out) {
  out->set_list(e.list);
  out->set_code(e.code);
  out->set_number(e.number);
  out->set_label_id(e.label_id);
  out->set_label_en(e.label_en);
  out->set_retired(e.retired);
}

std::optional<CodeBook> CodeBookFromUnitCodes(const teduh::sync::v1::UnitCodes& stored) {
  CodeBook book;
  if (static_cast<std::size_t>(stored.codes_size()) > kMaxUnitCodes) return std::nullopt;
  for (const auto& c : stored.codes())
    if (!book.Restore(CodeEntryFromProto(c))) return std::nullopt;
  return book;
}

std::string CodeListText(const CodeBook& book, std::string_view list, std::string_view lang) {
  std::string out;
  for (std::string_view name : CodeBook::ListNames()) {
    if (!list.empty() && name != list) continue;
    out += fmt::format("{}\n", name);
    for (const CodeEntry* e : book.Entries(name, true))
      out += fmt::format("  {:<20} {}{}{}\n", e->code, CodeBook::Label(*e, lang),
                         e->unit ? " " + Tr("(unit)") : std::string(),
                         e->retired ? " " + Tr("(retired)") : std::string());
  }
  return out;
}

nlohmann::json CodeListJson(const CodeBook& book, std::string_view list) {
  nlohmann::json arr = nlohmann::json::array();
  for (std::string_view name : CodeBook::ListNames()) {
    if (!list.empty() && name != list) continue;
    for (const CodeEntry* e : book.Entries(name, true)) arr.push_back(CodeEntryJson(*e));
  }
  return nlohmann::json{{"codes", arr}};
}

nlohmann::json CodeEntryJson(const CodeEntry& e) {
  nlohmann::json j{{"list", e.list},         {"code", e.code}, {"label_id", e.label_id},
                   {"label_en", e.label_en}, {"unit", e.unit}, {"retired", e.retired}};
  if (e.number != 0) j["number"] = e.number;
  return j;
}

}  // namespace teduh::core
