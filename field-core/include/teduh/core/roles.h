// Roles, what each may hold, and how far its scope reaches (DOMAIN.md roles
// table, ARCHITECTURE §2.4). One table, used by the server to enforce scope and
// by the admin device to decide which class keys to grant.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "teduh/core/error.h"
#include "teduh/options.pb.h"
#include "teduh/sync/v1/sync.pb.h"

namespace teduh::core {

using teduh::sync::v1::Role;

enum class CaseScope {
  kNone,      // IT admin: devices, grants and keys, no case content
  kAssigned,  // field staff: the cases they are assigned to, and their children
  kUnit,      // office staff and supervisors: every case of the unit
};

// "admin", "supervisor", "office", "pendamping", "konselor", "psikolog"
// (case-insensitive; English "caseworker", "counsellor", "psychologist" too).
result<Role> ParseRole(std::string_view text);
std::string RoleName(Role role);
CaseScope ScopeOf(Role role);
// The class keys a device of this role is granted (admins hold both to grant them).
std::vector<teduh::AccessClass> ClassesFor(Role role);
bool MayHoldClass(Role role, teduh::AccessClass key_class);
// The Case field that assigns a user of this role ("assigned_pendamping", ...), or "".
std::string_view AssignmentField(Role role);
std::string ClassName(teduh::AccessClass key_class);  // "general", "clinical"
// An unset class is GENERAL (values and key records written before classes).
teduh::AccessClass NormalClass(teduh::AccessClass key_class);
// GENERAL or CLINICAL: a class a key can be of.
bool KnownClass(teduh::AccessClass key_class);

}  // namespace teduh::core
