#include "teduh/core/roles.h"

#include <algorithm>
#include <cctype>

namespace teduh::core {

using teduh::sync::v1::Role;

result<Role> ParseRole(std::string_view text) {
  std::string t(text);
  std::transform(t.begin(), t.end(), t.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (t == "admin") return Role::ROLE_ADMIN;
  if (t == "supervisor" || t == "kepala") return Role::ROLE_SUPERVISOR;
  if (t == "office" || t == "petugas") return Role::ROLE_OFFICE;
  if (t == "pendamping" || t == "caseworker" || t == "case-worker") return Role::ROLE_PENDAMPING;
  if (t == "konselor" || t == "counsellor" || t == "counselor") return Role::ROLE_KONSELOR;
  if (t == "psikolog" || t == "psychologist") return Role::ROLE_PSIKOLOG;
  return make_error_code(errc::invalid_argument);
}

std::string RoleName(Role role) {
  switch (role) {
    case Role::ROLE_ADMIN:
      return "admin";
    case Role::ROLE_SUPERVISOR:
      return "supervisor";
    case Role::ROLE_OFFICE:
      return "office";
    case Role::ROLE_PENDAMPING:
      return "pendamping";
    case Role::ROLE_KONSELOR:
      return "konselor";
    case Role::ROLE_PSIKOLOG:
      return "psikolog";
    default:
      return "unknown";
  }
}

CaseScope ScopeOf(Role role) {
  switch (role) {
    case Role::ROLE_SUPERVISOR:
    case Role::ROLE_OFFICE:
      return CaseScope::kUnit;
    case Role::ROLE_PENDAMPING:
    case Role::ROLE_KONSELOR:
    case Role::ROLE_PSIKOLOG:
      return CaseScope::kAssigned;
    default:
      return CaseScope::kNone;
  }
}

std::vector<teduh::AccessClass> ClassesFor(Role role) {
  switch (role) {
    case Role::ROLE_ADMIN:
    case Role::ROLE_KONSELOR:
    case Role::ROLE_PSIKOLOG:
      return {teduh::ACCESS_CLASS_GENERAL, teduh::ACCESS_CLASS_CLINICAL};
    case Role::ROLE_SUPERVISOR:
    case Role::ROLE_OFFICE:
    case Role::ROLE_PENDAMPING:
      return {teduh::ACCESS_CLASS_GENERAL};
    default:
      return {};
  }
}

bool MayHoldClass(Role role, teduh::AccessClass key_class) {
  auto classes = ClassesFor(role);
  return std::find(classes.begin(), classes.end(), key_class) != classes.end();
}

std::string_view AssignmentField(Role role) {
  switch (role) {
    case Role::ROLE_PENDAMPING:
      return "assigned_pendamping";
    case Role::ROLE_KONSELOR:
      return "assigned_konselor";
    case Role::ROLE_PSIKOLOG:
      return "assigned_psikolog";
    default:
      return "";
  }
}

std::string ClassName(teduh::AccessClass key_class) {
  return key_class == teduh::ACCESS_CLASS_CLINICAL ? "clinical" : "general";
}

teduh::AccessClass NormalClass(teduh::AccessClass key_class) {
  return key_class == teduh::ACCESS_CLASS_UNSPECIFIED ? teduh::ACCESS_CLASS_GENERAL : key_class;
}

bool KnownClass(teduh::AccessClass key_class) {
  return key_class == teduh::ACCESS_CLASS_GENERAL || key_class == teduh::ACCESS_CLASS_CLINICAL;
}

}  // namespace teduh::core
