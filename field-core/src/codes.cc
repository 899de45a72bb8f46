#include "teduh/core/codes.h"

#include <algorithm>
#include <array>
#include <cctype>

namespace teduh::core {
namespace {

constexpr std::array kAgencies = {
    Code{"POLRES", "Kepolisian Resor (Unit PPA)", "district police (PPA unit)"},
    Code{"KEJAKSAAN", "Kejaksaan Negeri", "public prosecutor"},
    Code{"PENGADILAN", "Pengadilan Negeri / Agama", "court"},
    Code{"RSUD", "Rumah Sakit Umum Daerah", "regional public hospital"},
    Code{"PUSKESMAS", "Pusat Kesehatan Masyarakat", "community health centre"},
    Code{"DINSOS", "Dinas Sosial", "social affairs office"},
    Code{"DINKES", "Dinas Kesehatan", "health office"},
    Code{"DISDIK", "Dinas Pendidikan", "education office"},
    Code{"DUKCAPIL", "Dinas Kependudukan dan Pencatatan Sipil", "civil registry"},
    Code{"LBH", "Lembaga Bantuan Hukum", "legal aid institute"},
};

constexpr std::array kServices = {
    Code{"LEGAL", "bantuan hukum", "legal aid"},
    Code{"MEDICAL", "layanan kesehatan", "medical care"},
    Code{"PSYCHOLOGICAL", "layanan psikologis", "psychological care"},
    Code{"SOCIAL", "rehabilitasi sosial", "social rehabilitation"},
    Code{"SHELTER", "rumah aman", "shelter"},
    Code{"MEDIATION", "mediasi", "mediation"},
};

bool SameCode(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::toupper(static_cast<unsigned char>(x)) ==
                  std::toupper(static_cast<unsigned char>(y));
         });
}

}  // namespace

std::span<const Code> DefaultAgencies() { return kAgencies; }
std::span<const Code> DefaultServices() { return kServices; }

const Code* FindCode(std::span<const Code> list, std::string_view text) {
  for (const Code& c : list)
    if (SameCode(c.code, text)) return &c;
  return nullptr;
}

std::string ListCodes(std::span<const Code> list, std::string_view lang) {
  std::string out;
  for (const Code& c : list) {
    if (!out.empty()) out += ", ";
    out += std::string(c.code) + " (" + std::string(lang == "en" ? c.label_en : c.label_id) + ")";
  }
  return out;
}

}  // namespace teduh::core
