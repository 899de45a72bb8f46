// teduh-server: the sync server program and its host-side admin commands.
//
//   teduh-server init --data DIR --unit "UPTD PPA Kota Dumai" [--json]
//   teduh-server serve --data DIR --listen HOST:PORT [--tls-cert F --tls-key F]
//                      [--insecure-plaintext] [--threads N] [--json]
//   teduh-server enroll --data DIR --role ROLE --user NAME [--expires 72h] [--json]
//   teduh-server device list --data DIR [--json]
//   teduh-server audit verify --data DIR [--head HEX] [--json]
//   teduh-server audit show --data DIR [--last N] [--json]
//   teduh-server report --data DIR --from DAY --to DAY [--by DIMS] [--format json|csv|table]
//   teduh-server code add --data DIR --list L --code C --label-id T --label-en T [--json]
//   teduh-server code list --data DIR [--list L] [--json]
//   teduh-server code retire --data DIR --list L --code C [--restore] [--json]
//   teduh-server backup-key --data DIR TOKEN [--json]
//   teduh-server backup --data DIR (--to FILE | --to-dir DIR [--keep N]) [--json]
//   teduh-server backup verify FILE [--json]
//   teduh-server restore --from FILE --data DIR [--json]   (asks for the backup secret key)
//
// Output contract: results on stdout (with --json exactly one JSON object);
// on error a non-zero exit and one line on stderr. Logs go to stderr.
// `audit verify` exits 0 only for an intact chain, 2 for a broken one (the
// stderr line names the first bad entry) and 1 when it could not check.
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <pthread.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>

#include "teduh/core/backup_file.h"
#include "teduh/core/codes.h"
#include "teduh/core/env.h"
#include "teduh/core/i18n.h"
#include "teduh/core/ids.h"
#include "teduh/core/passphrase.h"
#include "teduh/core/report.h"
#include "teduh/core/roles.h"
#include "teduh/core/sealing.h"
#include "teduh/server/admin.h"
#include "teduh/server/backup.h"
#include "teduh/server/error.h"
#include "teduh/server/report.h"
#include "teduh/server/server.h"

namespace {

using teduh::core::Tr;
using teduh::core::TrC;
using teduh::core::TrF;
using teduh::server::error_code;

struct Output {
  bool json = false;

  // One line on stderr; with --json also {"error": ...} on stdout.
  int Error(const std::string& message) const {
    std::string line = message;
    for (char& c : line)
      if (c == '\n') c = ' ';
    fmt::print(stderr, "teduh-server: {}\n", line);
    if (json) fmt::print("{}\n", nlohmann::json{{"error", line}}.dump());
    return 1;
  }
  int Error(const std::string& what, error_code ec) const {
    return Error(fmt::format("{}: {}", what, ec.message()));
  }
};

std::string IsoTime(std::int64_t ms) {
  if (ms <= 0) return "";
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", tm);
}

// The unit's zone for times shown to the operator (WIB if the store cannot
// be read: the command itself then reports the store's error).
teduh::core::TimeZone ZoneOf(const std::string& data) {
  auto zone = teduh::server::UnitTimeZone(data);
  return zone ? *zone : teduh::core::TimeZone::kWib;
}

// A time for the operator, in the unit's zone ("2026-12-02 20:15 WITA"); JSON
// output keeps IsoTime's UTC.
std::string LocalTime(teduh::core::TimeZone zone, std::int64_t ms) {
  return ms > 0 ? teduh::core::FormatLocalTime(ms / 1000, zone) : std::string();
}

int Init(const std::string& data, const std::string& unit, const std::string& zone_name,
         const Output& out) {
  auto zone = teduh::core::ParseTimeZone(zone_name);
  if (!zone) return out.Error(TrF("the time zone is {}", teduh::core::TimeZoneChoices()));
  auto r = teduh::server::InitStore(data, unit, teduh::core::DefaultEnv());
  if (!r) return out.Error(Tr("init failed"), r.error());
  if (auto ec = teduh::server::SetUnitTimeZone(data, *zone))
    return out.Error(Tr("init failed: the time zone was not saved"), ec);
  if (out.json) {
    fmt::print("{}\n", nlohmann::json{{"code", r->bootstrap_code}, {"unit_id", r->unit_id}}.dump());
  } else {
    fmt::print("{}\n", TrF("Unit {} initialised in {}", unit, data));
    fmt::print("{}\n{}\n", Tr("Bootstrap enrollment code for the first admin device (shown once):"),
               r->bootstrap_code);
  }
  return 0;
}

int Enroll(const std::string& data, const std::string& role_text, const std::string& user,
           const std::string& expires, const Output& out) {
  auto role = teduh::core::ParseRole(role_text);
  if (!role) return out.Error(TrF("unknown role '{}'", role_text), role.error());
  auto ttl = teduh::server::ParseDuration(expires);
  if (!ttl) return out.Error(Tr("--expires must look like 30m, 72h or 7d"));
  auto r = teduh::server::CreateEnrollment(data, *role, user, *ttl, teduh::core::DefaultEnv());
  if (!r) return out.Error(Tr("enroll failed"), r.error());
  if (out.json) {
    fmt::print("{}\n", nlohmann::json{{"code", r->code},
                                      {"role", teduh::core::RoleName(r->role)},
                                      {"user", r->user},
                                      {"expires_at", IsoTime(r->expires_ms)}}
                           .dump());
  } else {
    fmt::print("{}\n{}\n",
               TrF("Enrollment code for {} ({}), valid until {} (shown once):", r->user,
                   teduh::core::RoleName(r->role), LocalTime(ZoneOf(data), r->expires_ms)),
               r->code);
  }
  return 0;
}

nlohmann::json TimeOrNull(std::int64_t ms) {
  return ms > 0 ? nlohmann::json(IsoTime(ms)) : nlohmann::json(nullptr);
}

// What happened to a revoked device: "wipe ordered", "erased <time>", or
// "no wipe order" (revoked on the server host; an admin device must sign one).
std::string ErasureText(teduh::core::TimeZone zone, const teduh::server::RevocationRow& r) {
  if (r.wiped_ms > 0) return TrF("erased {}", LocalTime(zone, r.wiped_ms));
  return r.wipe_order.empty() ? Tr("no wipe order") : Tr("wipe ordered");
}

// A device's state for people (JSON keeps DeviceStateName's code).
std::string DeviceStateLabel(teduh::server::DeviceState state) {
  switch (state) {
    case teduh::sync::v1::DEVICE_STATE_PENDING:
      return TrC("device state", "pending");
    case teduh::sync::v1::DEVICE_STATE_ACTIVE:
      return TrC("device state", "active");
    case teduh::sync::v1::DEVICE_STATE_REVOKED:
      return TrC("device state", "revoked");
    default:
      return TrC("device state", "unknown");
  }
}

nlohmann::json RevocationJson(const teduh::server::RevocationRow& r) {
  return {{"revoked_at", TimeOrNull(r.revoked_ms)},
          {"revoked_by", r.by_user},
          {"wipe_ordered", !r.wipe_order.empty()},
          {"wiped_at", TimeOrNull(r.wiped_ms)}};
}

int DeviceList(const std::string& data, const Output& out) {
  auto devices = teduh::server::ListDevices(data);
  if (!devices) return out.Error(Tr("device list failed"), devices.error());
  auto revocations = teduh::server::ListRevocations(data);
  if (!revocations) return out.Error(Tr("device list failed"), revocations.error());
  auto revocation_of = [&](const teduh::server::DeviceRow& d) {
    const teduh::server::RevocationRow* found = nullptr;
    for (const auto& r : *revocations)
      if (r.device_id == d.device_id) found = &r;
    return found;
  };
  if (out.json) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& d : *devices) {
      nlohmann::json j = {{"device_id", teduh::core::ToHex(d.device_id)},
                          {"user", d.user},
                          {"role", teduh::core::RoleName(d.role)},
                          {"state", teduh::server::DeviceStateName(d.state)},
                          {"last_sync", TimeOrNull(d.last_sync_ms)},
                          {"fingerprint", teduh::server::DeviceFingerprint(d)},
                          {"label", d.label}};
      if (const auto* r = revocation_of(d)) j.update(RevocationJson(*r));
      list.push_back(std::move(j));
    }
    fmt::print("{}\n", nlohmann::json{{"devices", list}}.dump());
    return 0;
  }
  const teduh::core::TimeZone zone = ZoneOf(data);
  fmt::print("{:<32}  {:<16}  {:<10}  {:<8}  {:<8}  {}\n", Tr("DEVICE"), Tr("USER"), Tr("ROLE"),
             Tr("STATE"), Tr("PRINT"), Tr("LAST SYNC"));
  for (const auto& d : *devices) {
    std::string state = DeviceStateLabel(d.state);
    if (const auto* r = revocation_of(d)) state += " (" + ErasureText(zone, *r) + ")";
    fmt::print("{:<32}  {:<16}  {:<10}  {:<8}  {:<8}  {}\n", teduh::core::ToHex(d.device_id),
               d.user, teduh::core::RoleName(d.role), state, teduh::server::DeviceFingerprint(d),
               d.last_sync_ms > 0 ? LocalTime(zone, d.last_sync_ms) : Tr("never"));
  }
  return 0;
}

int DeviceRevoke(const std::string& data, const std::string& device_ref, const Output& out) {
  auto r = teduh::server::RevokeDeviceOnServer(data, device_ref, teduh::core::DefaultEnv());
  if (!r) {
    if (r.error() == teduh::core::make_error_code(teduh::core::errc::not_found))
      return out.Error(TrF("no device {} in this unit", device_ref));
    if (r.error() == teduh::core::make_error_code(teduh::core::errc::invalid_argument))
      return out.Error(Tr("give the device id (32 hex digits) or a unique prefix of at least 6"));
    return out.Error(Tr("device revoke failed"), r.error());
  }
  const std::string id = teduh::core::ToHex(r->device.device_id);
  if (out.json) {
    nlohmann::json j = {{"device_id", id},
                        {"user", r->device.user},
                        {"role", teduh::core::RoleName(r->device.role)},
                        {"state", "revoked"}};
    j.update(RevocationJson(r->revocation));
    fmt::print("{}\n", j.dump());
    return 0;
  }
  fmt::print("{}\n",
             TrF("Device {} ({}, {}) is revoked: the server refuses it from its next request.", id,
                 r->device.user, teduh::core::RoleName(r->device.role)));
  if (r->revocation.wipe_order.empty()) {
    fmt::print("{}\n",
               TrF("No wipe order yet. On an admin device run `teduh device revoke {}`: it signs "
                   "the order with the unit root key, and the device erases itself when it next "
                   "connects.\nThen re-key what it held.",
                   id));
  } else {
    fmt::print("{}\n", TrF("A signed wipe order waits for it ({}).",
                           ErasureText(ZoneOf(data), r->revocation)));
  }
  return 0;
}

int AuditVerify(const std::string& data, const std::string& head_hex, const Output& out) {
  std::optional<teduh::server::AuditHash> known;
  if (!head_hex.empty()) {
    auto bytes = teduh::core::BytesFromHex(head_hex);
    if (!bytes || bytes->size() != known.emplace().size())
      return out.Error(Tr("--head must be the 64 hex digits printed by `audit verify`"));
    std::copy(bytes->begin(), bytes->end(), known->begin());
  }
  auto check = teduh::server::VerifyAudit(data, known);
  if (!check) return out.Error(Tr("audit verify failed"), check.error());
  const std::string head = teduh::core::ToHex(check->head);
  if (!check->intact()) {
    const std::string line = TrF("audit chain broken: {}", check->detail);
    fmt::print(stderr, "teduh-server: {}\n", line);
    if (out.json)
      fmt::print("{}\n",
                 nlohmann::json{{"error", line},
                                {"intact", false},
                                {"entry", check->bad_index},
                                {"problem", teduh::server::AuditProblemName(check->problem)},
                                {"intact_entries", check->entries}}
                     .dump());
    return 2;
  }
  if (out.json) {
    fmt::print(
        "{}\n",
        nlohmann::json{{"intact", true}, {"entries", check->entries}, {"head", head}}.dump());
  } else {
    // English whatever the language: scripts match this line (and docs/SECURITY.md quotes it).
    fmt::print("audit chain intact: {} entries, head {}\n", check->entries, head);
  }
  return 0;
}

std::string DamagedRowText(const teduh::server::DamagedRow& row) {
  const std::string id = teduh::core::ToHex(row.record_id);
  if (std::string_view(row.table) == "records")
    return TrF("record {}: its kind, case or creator", id);
  if (std::string_view(row.table) == "fields")
    return TrF("record {}, field {}: its current value", id, row.field);
  return TrF("record {}, field {}: a value in its history", id, row.field);
}

// `teduh-server store check`: exit 0 when the store and its audit chain are
// intact, 2 when something is damaged (each finding named), 1 when it
// cannot be checked.
int StoreCheckCommand(const std::string& data, const Output& out) {
  auto check = teduh::server::CheckStoreFile(data);
  if (!check) {
    if (check.error() == teduh::server::make_error_code(teduh::server::errc::not_initialised))
      return out.Error(Tr("store check failed"), check.error());
    // A file SQLite cannot open is the worst damage of all.
    const std::string line =
        TrF("store damaged: the file cannot be read ({}); restore the last backup",
            check.error().message());
    fmt::print(stderr, "teduh-server: {}\n", line);
    if (out.json) fmt::print("{}\n", nlohmann::json{{"error", line}, {"intact", false}}.dump());
    return 2;
  }
  auto audit = teduh::server::VerifyAudit(data);
  const bool audit_ok = audit && audit->intact();
  const bool intact = check->ok() && audit_ok;
  if (out.json) {
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& r : check->rows)
      rows.push_back(
          {{"table", r.table}, {"record_id", teduh::core::ToHex(r.record_id)}, {"field", r.field}});
    fmt::print("{}\n", nlohmann::json{{"intact", intact},
                                      {"structure", check->structure},
                                      {"damaged_rows", rows},
                                      {"rows_checked", check->rows_checked},
                                      {"records", check->records},
                                      {"values", check->values},
                                      {"history", check->history},
                                      {"audit_intact", audit_ok}}
                           .dump());
    return intact ? 0 : 2;
  }
  if (intact) {
    fmt::print("{}\n", TrF("store intact: {} records, {} values and {} history entries checked; "
                           "audit chain intact ({} entries)",
                           check->records, check->values, check->history, audit->entries));
    if (!check->rows_checked)
      fmt::print("{}\n", Tr("(rows have no checksums yet: run the server once to add them)"));
    return 0;
  }
  for (const auto& line : check->structure)
    fmt::print("{}\n", TrF("damaged file structure: {}", line));
  for (const auto& row : check->rows) fmt::print("{}\n", TrF("damaged {}", DamagedRowText(row)));
  if (!audit_ok)
    fmt::print("{}\n", audit ? TrF("audit chain broken: {}", audit->detail)
                             : TrF("audit chain unreadable: {}", audit.error().message()));
  fmt::print(stderr, "teduh-server: {}\n",
             Tr("the store is damaged. Damaged values are never served to devices. A device's "
                "next change of a damaged field replaces it; damage to the file's structure or to "
                "a record needs the last backup (teduh-server restore)."));
  return 2;
}

std::string AuditKindName(teduh::audit::v1::EntryKind kind) {
  switch (kind) {
    case teduh::audit::v1::ENTRY_KIND_PUSH:
      return "push";
    case teduh::audit::v1::ENTRY_KIND_ENROLL:
      return "enroll";
    case teduh::audit::v1::ENTRY_KIND_APPROVE:
      return "approve";
    case teduh::audit::v1::ENTRY_KIND_RESOLUTION:
      return "resolution";
    case teduh::audit::v1::ENTRY_KIND_REVOKE:
      return "revoke";
    case teduh::audit::v1::ENTRY_KIND_WIPE_RECEIPT:
      return "wipe_receipt";
    case teduh::audit::v1::ENTRY_KIND_ROTATE:
      return "rotate";
    case teduh::audit::v1::ENTRY_KIND_RETIRE:
      return "retire";
    case teduh::audit::v1::ENTRY_KIND_SHRED_REQUEST:
      return "shred_request";
    case teduh::audit::v1::ENTRY_KIND_SHRED:
      return "shred";
    case teduh::audit::v1::ENTRY_KIND_OFFBOARD:
      return "offboard";
    case teduh::audit::v1::ENTRY_KIND_REKEY:
      return "rekey";
    case teduh::audit::v1::ENTRY_KIND_ROOT_KEY:
      return "root_key";
    case teduh::audit::v1::ENTRY_KIND_RECOVERY_KIT:
      return "recovery_kit";
    case teduh::audit::v1::ENTRY_KIND_REPAIR:
      return "repair";
    default:
      return "unreadable";
  }
}

std::string StatusName(teduh::sync::v1::ChangeResult::Status status) {
  switch (status) {
    case teduh::sync::v1::ChangeResult::STATUS_APPLIED:
      return "applied";
    case teduh::sync::v1::ChangeResult::STATUS_MERGED:
      return "merged";
    case teduh::sync::v1::ChangeResult::STATUS_CONFLICT:
      return "conflict";
    case teduh::sync::v1::ChangeResult::STATUS_REJECTED:
      return "rejected";
    default:
      return "unknown";
  }
}

// An entry's kind and a change's outcome for people (JSON keeps the codes of
// AuditKindName and StatusName).
std::string AuditKindLabel(teduh::audit::v1::EntryKind kind) {
  switch (kind) {
    case teduh::audit::v1::ENTRY_KIND_PUSH:
      return TrC("audit entry", "push");
    case teduh::audit::v1::ENTRY_KIND_ENROLL:
      return TrC("audit entry", "enroll");
    case teduh::audit::v1::ENTRY_KIND_APPROVE:
      return TrC("audit entry", "approve");
    case teduh::audit::v1::ENTRY_KIND_RESOLUTION:
      return TrC("audit entry", "resolution");
    case teduh::audit::v1::ENTRY_KIND_REVOKE:
      return TrC("audit entry", "revoke");
    case teduh::audit::v1::ENTRY_KIND_WIPE_RECEIPT:
      return TrC("audit entry", "wipe_receipt");
    case teduh::audit::v1::ENTRY_KIND_ROTATE:
      return TrC("audit entry", "rotate");
    case teduh::audit::v1::ENTRY_KIND_RETIRE:
      return TrC("audit entry", "retire");
    case teduh::audit::v1::ENTRY_KIND_SHRED_REQUEST:
      return TrC("audit entry", "shred_request");
    case teduh::audit::v1::ENTRY_KIND_SHRED:
      return TrC("audit entry", "shred");
    case teduh::audit::v1::ENTRY_KIND_OFFBOARD:
      return TrC("audit entry", "offboard");
    case teduh::audit::v1::ENTRY_KIND_REKEY:
      return TrC("audit entry", "rekey");
    case teduh::audit::v1::ENTRY_KIND_ROOT_KEY:
      return TrC("audit entry", "root_key");
    case teduh::audit::v1::ENTRY_KIND_RECOVERY_KIT:
      return TrC("audit entry", "recovery_kit");
    case teduh::audit::v1::ENTRY_KIND_REPAIR:
      return TrC("audit entry", "repair");
    default:
      return TrC("audit entry", "unreadable");
  }
}

std::string StatusLabel(teduh::sync::v1::ChangeResult::Status status) {
  switch (status) {
    case teduh::sync::v1::ChangeResult::STATUS_APPLIED:
      return TrC("change outcome", "applied");
    case teduh::sync::v1::ChangeResult::STATUS_MERGED:
      return TrC("change outcome", "merged");
    case teduh::sync::v1::ChangeResult::STATUS_CONFLICT:
      return TrC("change outcome", "conflict");
    case teduh::sync::v1::ChangeResult::STATUS_REJECTED:
      return TrC("change outcome", "rejected");
    default:
      return TrC("change outcome", "unknown");
  }
}

std::string BytesHex(const std::string& bytes) {
  return teduh::core::ToHex(
      std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()));
}

nlohmann::json StampJson(const teduh::sync::v1::Stamp& s) {
  return {{"hlc", s.hlc()}, {"device_id", BytesHex(s.device_id())}};
}

// Ids, stamps and outcomes: all an entry holds (it has no values to show).
nlohmann::json AuditJson(const teduh::server::AuditRecord& r) {
  const auto& e = r.entry;
  nlohmann::json j = {{"index", r.index},
                      {"hash", BytesHex(r.hash)},
                      {"time", IsoTime(e.time_ms())},
                      {"kind", AuditKindName(e.kind())},
                      {"device_id", BytesHex(e.device_id())},
                      {"user", e.user()},
                      {"role", teduh::core::RoleName(e.role())}};
  if (e.kind() == teduh::audit::v1::ENTRY_KIND_PUSH ||
      e.kind() == teduh::audit::v1::ENTRY_KIND_REPAIR) {
    nlohmann::json changes = nlohmann::json::array();
    for (const auto& c : e.changes()) {
      nlohmann::json cj = {{"record_id", BytesHex(c.record_id())},
                           {"record_kind", c.kind()},
                           {"field", c.field()},
                           {"device_seq", c.device_seq()},
                           {"status", StatusName(c.status())},
                           {"stamp", StampJson(c.stamp())},
                           {"sealed", c.sealed()}};
      if (!c.parent_id().empty()) cj["parent_id"] = BytesHex(c.parent_id());
      if (!c.reason().empty()) cj["reason"] = c.reason();
      if (c.has_stored()) cj["stored"] = StampJson(c.stored());
      if (c.has_current()) cj["current"] = StampJson(c.current());
      if (c.has_base()) cj["base"] = StampJson(c.base());
      if (!c.resolves().empty()) cj["resolves"] = BytesHex(c.resolves());
      if (!c.conflict_id().empty()) cj["conflict_id"] = BytesHex(c.conflict_id());
      if (c.repaired()) cj["repaired"] = true;
      if (c.sealed()) {
        cj["key_class"] = teduh::core::ClassName(c.key_class());
        cj["key_version"] = c.key_version();
      }
      changes.push_back(std::move(cj));
    }
    j["changes"] = std::move(changes);
  } else if (e.kind() == teduh::audit::v1::ENTRY_KIND_ENROLL) {
    j["state"] = teduh::server::DeviceStateName(e.state());
    j["fingerprint"] = teduh::core::KeyFingerprint(e.sign_pk());
    j["bootstrap"] = e.bootstrap();
    if (e.recovered()) j["recovered"] = true;
  } else if (e.kind() == teduh::audit::v1::ENTRY_KIND_APPROVE) {
    j["approved_device_id"] = BytesHex(e.subject_device_id());
    j["approved_user"] = e.subject_user();
    j["approved_role"] = teduh::core::RoleName(e.subject_role());
    nlohmann::json grants = nlohmann::json::array();
    for (const auto& g : e.grants())
      grants.push_back(
          {{"key_class", teduh::core::ClassName(g.key_class())}, {"epoch", g.epoch()}});
    j["grants"] = std::move(grants);
    if (e.root_key()) j["root_key"] = true;
  } else if (e.kind() == teduh::audit::v1::ENTRY_KIND_RECOVERY_KIT) {
    j["shares"] = e.shares();
    j["threshold"] = e.threshold();
  } else if (e.kind() == teduh::audit::v1::ENTRY_KIND_REVOKE) {
    j["revoked_device_id"] = BytesHex(e.subject_device_id());
    j["revoked_user"] = e.subject_user();
    j["revoked_role"] = teduh::core::RoleName(e.subject_role());
    j["wipe_ordered"] = e.wipe_ordered();
    if (!e.signature().empty()) j["order_signature"] = BytesHex(e.signature());
  } else if (e.kind() == teduh::audit::v1::ENTRY_KIND_WIPE_RECEIPT) {
    j["receipt_signature"] = BytesHex(e.signature());
  } else if (e.kind() == teduh::audit::v1::ENTRY_KIND_ROTATE ||
             e.kind() == teduh::audit::v1::ENTRY_KIND_RETIRE) {
    if (e.grants_size() > 0) {
      j["key_class"] = teduh::core::ClassName(e.grants(0).key_class());
      j["epoch"] = e.grants(0).epoch();
    }
    if (e.kind() == teduh::audit::v1::ENTRY_KIND_ROTATE) j["rewrapped"] = e.rewrapped();
  } else if (e.kind() == teduh::audit::v1::ENTRY_KIND_SHRED_REQUEST ||
             e.kind() == teduh::audit::v1::ENTRY_KIND_SHRED) {
    j["case_id"] = BytesHex(e.case_id());
  } else if (e.kind() == teduh::audit::v1::ENTRY_KIND_OFFBOARD) {
    j["offboarded_user"] = e.subject_user();
    j["reassigned_to"] = e.reassigned_to();
    j["cases"] = e.cases();
  } else if (e.kind() == teduh::audit::v1::ENTRY_KIND_REKEY) {
    j["case_id"] = BytesHex(e.case_id());
    if (!e.subject_device_id().empty()) j["held_by"] = BytesHex(e.subject_device_id());
    nlohmann::json versions = nlohmann::json::array();
    for (const auto& v : e.key_versions())
      versions.push_back(
          {{"key_class", teduh::core::ClassName(v.key_class())}, {"version", v.version()}});
    j["key_versions"] = std::move(versions);
  }
  return j;
}

int AuditShow(const std::string& data, std::size_t last, const Output& out) {
  auto records = teduh::server::ReadAudit(data, last);
  if (!records) return out.Error(Tr("audit show failed"), records.error());
  if (out.json) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& r : *records) list.push_back(AuditJson(r));
    fmt::print("{}\n", nlohmann::json{{"entries", list}}.dump());
    return 0;
  }
  const teduh::core::TimeZone zone = ZoneOf(data);
  for (const auto& r : *records) {
    const auto& e = r.entry;
    fmt::print("{}\n",
               TrF("#{} {} {} device {} ({}, {}) hash {}", r.index, LocalTime(zone, e.time_ms()),
                   AuditKindLabel(e.kind()), BytesHex(e.device_id()), e.user(),
                   teduh::core::RoleName(e.role()), BytesHex(r.hash).substr(0, 16)));
    for (const auto& c : e.changes()) {
      // The reason is a protocol code ("out_of_scope"): it stays as it is.
      fmt::print("    {}\n", TrF("{} field {} seq {} {}{} stamp {}@{}", BytesHex(c.record_id()),
                                 c.field(), c.device_seq(), StatusLabel(c.status()),
                                 c.reason().empty() ? "" : " (" + c.reason() + ")", c.stamp().hlc(),
                                 BytesHex(c.stamp().device_id()).substr(0, 8)));
    }
    if (e.kind() == teduh::audit::v1::ENTRY_KIND_APPROVE)
      fmt::print("    {}\n", TrF("approved {} ({}, {})", BytesHex(e.subject_device_id()),
                                 e.subject_user(), teduh::core::RoleName(e.subject_role())));
  }
  return 0;
}

bool SplitListen(const std::string& listen, std::string* host, std::uint16_t* port) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon + 1 == listen.size()) return false;
  *host = listen.substr(0, colon);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']')
    *host = host->substr(1, host->size() - 2);
  unsigned long p = 0;
  try {
    std::size_t used = 0;
    p = std::stoul(listen.substr(colon + 1), &used);
    if (used != listen.size() - colon - 1) return false;
  } catch (...) {
    return false;
  }
  if (p > 65535 || host->empty()) return false;
  *port = static_cast<std::uint16_t>(p);
  return true;
}

int Serve(teduh::server::ServerConfig config, const std::string& listen,
          const std::string& ops_listen, const Output& out) {
  if (!SplitListen(listen, &config.host, &config.port))
    return out.Error(Tr("--listen must be HOST:PORT, e.g. 127.0.0.1:8443"));
  config.ops = ops_listen != "off";
  if (config.ops && !SplitListen(ops_listen, &config.ops_host, &config.ops_port))
    return out.Error(Tr("--ops-listen must be HOST:PORT or off, e.g. 127.0.0.1:9464"));
  // Signals are taken by this thread only (sigwait); every thread the server
  // starts inherits the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto server = teduh::server::Server::Open(config, teduh::core::DefaultEnv());
  if (!server && server.error() == teduh::core::make_error_code(teduh::core::errc::store_damaged))
    return out.Error(
        Tr("cannot serve: the store file is damaged (the log names what). Run `teduh-server "
           "store check`, then restore the last backup."));
  if (!server) return out.Error(Tr("cannot serve"), server.error());
  if (auto ec = (*server)->Start()) return out.Error(TrF("cannot listen on {}", listen), ec);
  const std::string host = listen.substr(0, listen.rfind(':'));
  if (out.json) {
    nlohmann::json j{{"listening", fmt::format("{}:{}", host, (*server)->port())},
                     {"host", config.host},
                     {"port", (*server)->port()}};
    if (config.ops) j["ops"] = fmt::format("{}:{}", config.ops_host, (*server)->ops_port());
    fmt::print("{}\n", j.dump());
  } else {
    // English whatever the language: a script waits for these lines and reads the ports.
    if (config.ops) fmt::print("operations on {}:{}\n", config.ops_host, (*server)->ops_port());
    fmt::print("listening on {}:{}\n", host, (*server)->port());
  }
  std::fflush(stdout);
  int sig = 0;
  sigwait(&signals, &sig);
  (*server)->Stop();
  return 0;
}

// YYYY-MM-DD (UTC) as Unix seconds at the start of that day.
// Shows the unit's time zone, or sets it (`zone_name` not empty).
int TimeZoneCommand(const std::string& data, const std::string& zone_name, const Output& out) {
  if (!zone_name.empty()) {
    auto zone = teduh::core::ParseTimeZone(zone_name);
    if (!zone) return out.Error(TrF("the time zone is {}", teduh::core::TimeZoneChoices()));
    if (auto ec = teduh::server::SetUnitTimeZone(data, *zone))
      return out.Error(Tr("the time zone was not saved"), ec);
  }
  auto zone = teduh::server::UnitTimeZone(data);
  if (!zone) return out.Error(Tr("cannot read the store"), zone.error());
  const std::string name(teduh::core::TimeZoneName(*zone));
  if (out.json) {
    fmt::print("{}\n", nlohmann::json{{"time_zone", name}}.dump());
  } else {
    fmt::print("{}{}\n", name,
               zone_name.empty() ? "" : " " + Tr("(devices show it from their next sync)"));
  }
  return 0;
}

int BackupKeyCommand(const std::string& data, const std::string& token, const Output& out) {
  if (auto r = teduh::server::SetBackupKey(data, token); !r)
    return out.Error(TrF("the backup key was not set: {}", r.error().message));
  if (out.json) {
    fmt::print("{}\n", nlohmann::json{{"backup_key", "set"}}.dump());
  } else {
    fmt::print("{}\n", Tr("The unit backup key is set: backups are sealed to it."));
  }
  return 0;
}

nlohmann::json HeaderJson(const teduh::core::BackupFileInfo& info) {
  const auto& h = info.header;
  return {{"unit_id", h.unit_id()},
          {"generation", std::to_string(h.generation())},
          {"created_at", IsoTime(h.created_ms())},
          {"audit_entries", h.audit_index()},
          {"audit_head", teduh::core::ToHex(std::span<const std::uint8_t>(
                             reinterpret_cast<const std::uint8_t*>(h.audit_head().data()),
                             h.audit_head().size()))},
          {"store_bytes", h.plain_bytes()},
          {"file_bytes", info.file_bytes}};
}

// `to_dir`: a file named by the time in that folder, then all but the newest
// `keep` of the backups there deleted (0: none).
int BackupCommand(const std::string& data, std::string to, const std::string& to_dir,
                  std::size_t keep, const Output& out) {
  if (!to_dir.empty())
    to = (std::filesystem::path(to_dir) /
          teduh::server::BackupFileName(teduh::core::DefaultEnv().NowMs()))
             .string();
  auto report = teduh::server::BackupStore(data, to, teduh::core::DefaultEnv());
  if (!report) return out.Error(TrF("no backup was written: {}", report.error().message));
  nlohmann::json j = HeaderJson(report->info);
  j["file"] = to;
  if (!to_dir.empty() && keep > 0) {
    auto deleted = teduh::server::PruneBackups(to_dir, keep);
    if (!deleted)
      return out.Error(TrF("the backup was written, but old ones were not deleted: {}",
                           deleted.error().message));
    j["deleted"] = *deleted;
  }
  j["snapshot_ms"] = report->snapshot_ms;
  j["total_ms"] = report->total_ms;
  if (out.json) {
    fmt::print("{}\n", j.dump());
  } else {
    fmt::print("{}\n", TrF("Backup written to {} ({} bytes, {} audit entries, head {}); sealed "
                           "to the unit backup key.",
                           to, report->info.file_bytes, report->info.header.audit_index(),
                           j["audit_head"].get<std::string>()));
  }
  return 0;
}

int BackupVerifyCommand(const std::string& file, const Output& out) {
  auto info = teduh::core::VerifyBackupFile(file);
  if (!info) return out.Error(info.error().message);
  nlohmann::json j = HeaderJson(*info);
  j["intact"] = true;
  if (out.json) {
    fmt::print("{}\n", j.dump());
  } else {
    fmt::print("{}\n", TrF("backup intact: taken {}, {} audit entries, head {} (the contents "
                           "are checked when it is opened with the backup key)",
                           j["created_at"].get<std::string>(), info->header.audit_index(),
                           j["audit_head"].get<std::string>()));
  }
  return 0;
}

int RestoreCommand(const std::string& from, const std::string& data, const Output& out) {
  auto verified = teduh::core::VerifyBackupFile(from);
  if (!verified) return out.Error(TrF("nothing was restored: {}", verified.error().message));
  auto text = teduh::core::ReadPassphraseFrom(
      "TEDUH_BACKUP_SECRET",
      Tr("Backup secret key (TBS1-..., from `teduh key backup-key --secret` "
         "on an admin device): "),
      false);
  if (!text) return out.Error(TrF("nothing was restored: {}", text.error().message));
  auto key = teduh::core::ParseBackupSecret(
      std::string_view(reinterpret_cast<const char*>(text->data()), text->size()));
  text->Reset();
  if (!key) return out.Error(TrF("nothing was restored: {}", key.error().message));
  auto report = teduh::server::RestoreStore(from, data, *key, teduh::core::DefaultEnv());
  if (!report) return out.Error(TrF("nothing was restored: {}", report.error().message));
  nlohmann::json devices = nlohmann::json::array();
  for (const auto& d : report->devices) {
    devices.push_back({{"device_id", teduh::core::ToHex(d.device_id)},
                       {"user", d.user},
                       {"changes_in_backup", d.mark_in_backup},
                       {"changes_before", d.mark_before},
                       {"changes_to_come_back",
                        d.mark_before > d.mark_in_backup ? d.mark_before - d.mark_in_backup : 0}});
  }
  nlohmann::json j = HeaderJson(report->info);
  j["new_generation"] = std::to_string(report->new_generation);
  j["replaced"] = report->replaced;
  j["carried_forward"] = report->carried_forward;
  j["devices"] = devices;
  if (out.json) {
    fmt::print("{}\n", j.dump());
    return 0;
  }
  fmt::print(
      "{}\n",
      TrF("Restored the backup taken {} ({} audit entries verified); the store's new "
          "generation is {}.",
          j["created_at"].get<std::string>(), report->audit_entries, report->new_generation));
  if (!report->replaced.empty())
    fmt::print("{}\n", TrF("The store it replaced is kept as {}.", report->replaced));
  fmt::print("{}\n",
             Tr("At their next sync, devices send again every change of theirs the backup lacks "
                "and pull everything from the start. A device that never syncs again (lost, "
                "erased) cannot send its changes made after the backup. teduh device list on an "
                "admin device shows how many each device has sent again."));
  for (const auto& d : report->devices) {
    if (d.mark_before > d.mark_in_backup) {
      fmt::print("{}\n", TrF("  {} ({}): {} change(s) after the backup are to be sent again",
                             d.user, teduh::core::ToHex(d.device_id).substr(0, 8),
                             d.mark_before - d.mark_in_backup));
    }
  }
  return 0;
}

// `zone_name` empty: the unit's own time zone.
int Report(const std::string& data, const std::string& from, const std::string& to,
           const std::vector<std::string>& by, const std::string& format,
           const std::string& zone_name, const Output& out) {
  std::optional<teduh::core::TimeZone> zone;
  if (zone_name.empty()) {
    auto unit_zone = teduh::server::UnitTimeZone(data);
    if (!unit_zone) return out.Error(Tr("cannot read the store"), unit_zone.error());
    zone = *unit_zone;
  } else {
    zone = teduh::core::ParseTimeZone(zone_name);
  }
  if (!zone) return out.Error(TrF("the time zone is {}", teduh::core::TimeZoneChoices()));
  std::string why;
  auto period = teduh::core::ParseReportPeriod(from, to, *zone, &why);
  if (!period) return out.Error(why);
  for (const auto& d : by) {
    if (!teduh::core::IsReportDimension(d))
      return out.Error(TrF("unknown breakdown '{}'; valid: {}", d,
                           fmt::format("{}", fmt::join(teduh::core::kReportDimensions, ","))));
  }
  teduh::core::CodeBook codes;
  auto report = teduh::server::ComputeReport(data, period->from_s, period->to_s, by,
                                             teduh::core::TimeZoneOffsetSeconds(*zone),
                                             teduh::core::DefaultEnv(), &codes);
  if (!report) return out.Error(report.error().message());
  const teduh::core::Lang lang = teduh::core::CurrentLang();
  if (format == "csv") {
    fmt::print("{}", teduh::core::ReportToCsv(*report));
  } else if (format == "table") {
    fmt::print("{}", teduh::core::ReportToText(*report, from, to, codes, lang));
  } else {
    fmt::print("{}\n", teduh::core::ReportToJson(*report, from, to, codes, lang).dump());
  }
  return 0;
}

int CodeAdd(const std::string& data, const teduh::core::CodeEntry& entry, const Output& out) {
  std::string why;
  auto added = teduh::server::AddUnitCode(data, entry, &why);
  if (!added)
    return out.Error(why.empty() ? TrF("the code was not added: {}", added.error().message())
                                 : why);
  if (out.json) {
    fmt::print("{}\n", teduh::core::CodeEntryJson(*added).dump());
  } else {
    fmt::print("{}\n", TrF("{} {} added to {} (devices receive it at their next sync)", added->code,
                           teduh::core::CodeBook::Label(
                               *added, teduh::core::LangCode(teduh::core::CurrentLang())),
                           added->list));
  }
  return 0;
}

int CodeRetire(const std::string& data, const std::string& list, const std::string& code,
               bool restore, const Output& out) {
  if (auto ec = teduh::server::RetireUnitCode(data, list, code, !restore)) {
    if (ec == teduh::core::errc::not_found)
      return out.Error(TrF("{} has no code {} of the unit's own (the defaults stay)", list, code));
    return out.Error(Tr("the code was not changed"), ec);
  }
  if (out.json) {
    fmt::print("{}\n",
               nlohmann::json{{"list", list}, {"code", code}, {"retired", !restore}}.dump());
  } else {
    if (restore) {
      fmt::print("{}\n", TrF("{} {} is offered again", list, code));
    } else {
      fmt::print("{}\n",
                 TrF("{} {} retired: kept on records, not offered for new ones", list, code));
    }
  }
  return 0;
}

int CodeList(const std::string& data, const std::string& list, const Output& out) {
  auto codes = teduh::server::ReadUnitCodes(data);
  if (!codes) return out.Error(Tr("cannot read the store"), codes.error());
  if (!list.empty() && !teduh::core::CodeBook::IsList(list))
    return out.Error(TrF("unknown code list '{}'; the lists are {}", list,
                         fmt::format("{}", fmt::join(teduh::core::CodeBook::ListNames(), ", "))));
  if (out.json) {
    fmt::print("{}\n", teduh::core::CodeListJson(*codes, list).dump());
  } else {
    fmt::print("{}", teduh::core::CodeListText(*codes, list,
                                               teduh::core::LangCode(teduh::core::CurrentLang())));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  teduh::core::SetLang(teduh::core::LangFromArgs(argc, argv));
  if (auto ec = teduh::crypto::Init()) {
    fmt::print(stderr, "teduh-server: {}\n", ec.message());
    return 1;
  }
  CLI::App app{Tr("teduh-server: the Teduh sync server and its admin commands")};
  app.require_subcommand(1);
  app.fallthrough();  // --lang anywhere on the line
  std::string lang(teduh::core::LangCode(teduh::core::CurrentLang()));
  app.add_option("--lang", lang,
                 Tr("Language of messages and reports: id or en (default: the locale)"))
      ->check(CLI::IsMember({"id", "en"}));
  Output out;
  std::string data;

  auto* init =
      app.add_subcommand("init", Tr("Create the store for a unit; prints the bootstrap code"));
  std::string unit;
  init->add_option("--data", data, Tr("Data folder"))->required();
  init->add_option("--unit", unit, Tr("Unit name, e.g. \"UPTD PPA Kota Dumai\""))->required();
  std::string init_zone = "WIB";
  init->add_option("--tz", init_zone, Tr("The unit's time zone: WIB, WITA or WIT (default WIB)"));
  init->add_flag("--json", out.json, Tr("Print one JSON object"));

  auto* serve = app.add_subcommand("serve", Tr("Run the sync server"));
  teduh::server::ServerConfig config;
  std::string listen = "127.0.0.1:8443";
  serve->add_option("--data", data, Tr("Data folder"))->required();
  serve->add_option("--listen", listen, Tr("HOST:PORT to listen on (port 0: any)"));
  serve->add_option("--tls-cert", config.tls_cert, Tr("PEM certificate chain: serve wss://"));
  serve->add_option("--tls-key", config.tls_key, Tr("PEM private key"));
  serve->add_flag("--insecure-plaintext", config.insecure_plaintext,
                  Tr("Allow plain ws:// on a non-loopback address"));
  serve->add_option("--threads", config.threads, Tr("Network threads"))->check(CLI::Range(1, 64));
  std::int64_t max_skew_minutes = config.max_skew_ms / 60000;
  serve
      ->add_option("--max-skew-minutes", max_skew_minutes,
                   Tr("How far ahead of the server's clock a device's edits may be stamped "
                      "before the server re-stamps them (default 1440: a day)"))
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{7 * 24 * 60}));
  std::string ops_listen = "127.0.0.1:9464";
  serve->add_option("--ops-listen", ops_listen,
                    Tr("HOST:PORT of /healthz and /metrics, apart from the sync port (default "
                       "127.0.0.1:9464; off: none). Keep it on loopback or a private network."));
  std::int64_t idle_seconds = config.idle_timeout.count() / 1000;
  serve
      ->add_option("--idle-timeout-seconds", idle_seconds,
                   Tr("A quiet connection is pinged after half of this and closed if it does "
                      "not answer by its end (default 120)"))
      ->check(CLI::Range(std::int64_t{10}, std::int64_t{24 * 3600}));
  serve
      ->add_option("--max-connections", config.max_connections,
                   Tr("Authenticated devices served at once (default 4096)"))
      ->check(CLI::Range(std::size_t{1}, std::size_t{1'000'000}));
  serve
      ->add_option("--max-pending-connections", config.max_pending_connections,
                   Tr("Connections not yet signed in, from anyone (default 512)"))
      ->check(CLI::Range(std::size_t{1}, std::size_t{100'000}));
  serve
      ->add_option("--max-pending-per-address", config.max_pending_per_address,
                   Tr("Of those, from one IP address (default 32)"))
      ->check(CLI::Range(std::size_t{1}, std::size_t{100'000}));
  std::uint64_t device_mib = config.max_device_bytes_per_day >> 20;
  std::uint64_t unit_mib = config.max_unit_bytes_per_day >> 20;
  serve
      ->add_option("--max-device-mib-per-day", device_mib,
                   Tr("MiB of values one device may store in a day; beyond, its changes wait on "
                      "it (default 128; 0: no bound)"))
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{1} << 30));
  serve
      ->add_option("--max-unit-mib-per-day", unit_mib,
                   Tr("MiB of values the whole unit may store in a day (default 2048; 0: no "
                      "bound)"))
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{1} << 30));
  std::uint64_t store_mib = 0;
  serve
      ->add_option("--max-store-mib", store_mib,
                   Tr("The largest the store may grow, in MiB; reaching it is handled as a full "
                      "disk (default 0: as the disk allows)"))
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{1} << 30));
  std::int64_t check_hours = 24;
  serve
      ->add_option("--store-check-hours", check_hours,
                   Tr("Check the store for damage (file and every row) at start and then every "
                      "N hours (default 24; 0: only the file, at start)"))
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{24 * 365}));
  serve->add_flag("--json", out.json, Tr("Print one JSON object"));

  auto* enroll = app.add_subcommand("enroll", Tr("Create a one-time enrollment code for a device"));
  std::string role, user, expires = "72h";
  enroll->add_option("--data", data, Tr("Data folder"))->required();
  enroll
      ->add_option("--role", role,
                   Tr("admin, supervisor, office, pendamping, konselor or psikolog"))
      ->required();
  enroll->add_option("--user", user, Tr("User name the device belongs to"))->required();
  enroll->add_option("--expires", expires, Tr("Validity, e.g. 30m, 72h, 7d"));
  enroll->add_flag("--json", out.json, Tr("Print one JSON object"));

  auto* device = app.add_subcommand("device", Tr("Devices"));
  device->require_subcommand(1);
  auto* list = device->add_subcommand("list", Tr("List enrolled devices"));
  list->add_option("--data", data, Tr("Data folder"))->required();
  list->add_flag("--json", out.json, Tr("Print one JSON object"));
  auto* revoke =
      device->add_subcommand("revoke", Tr("Refuse a lost or taken device from now on (then sign "
                                          "its wipe order on an admin device)"));
  std::string device_ref;
  revoke->add_option("--data", data, Tr("Data folder"))->required();
  revoke->add_option("device", device_ref, Tr("Device id or unique prefix (6+ hex digits)"))
      ->required();
  revoke->add_flag("--json", out.json, Tr("Print one JSON object"));

  auto* audit = app.add_subcommand("audit", Tr("The audit log"));
  audit->require_subcommand(1);
  auto* verify = audit->add_subcommand(
      "verify", Tr("Check the whole audit chain; exit 0 only if it is intact"));
  std::string head;
  verify->add_option("--data", data, Tr("Data folder"))->required();
  verify->add_option("--head", head,
                     Tr("A head hash printed earlier that must still be in the chain"));
  verify->add_flag("--json", out.json, Tr("Print one JSON object"));
  auto* show =
      audit->add_subcommand("show", Tr("List the last audit entries (ids and stamps only)"));
  std::size_t last = 20;
  show->add_option("--data", data, Tr("Data folder"))->required();
  show->add_option("--last", last, Tr("How many entries"))->check(CLI::Range(1, 1000000));
  show->add_flag("--json", out.json, Tr("Print one JSON object"));

  auto* report = app.add_subcommand(
      "report",
      Tr("Case counts of the unit over a period, from open fields only (no keys needed)"));
  std::string from, to, format = "json", zone;
  std::vector<std::string> by;
  report->add_option("--data", data, Tr("Data folder"))->required();
  report->add_option("--from", from, Tr("First day, YYYY-MM-DD, in the time zone"))->required();
  report->add_option("--to", to, Tr("Last day, YYYY-MM-DD, in the time zone, inclusive"))
      ->required();
  report
      ->add_option("--by", by,
                   Tr("Breakdowns: month,violence_type,category,sex,age_group,region,"
                      "service,service_delivered,stage,closure_reason"))
      ->delimiter(',');
  report->add_option("--format", format, Tr("json, csv or table (for people)"))
      ->check(CLI::IsMember({"csv", "json", "table"}));
  report->add_option("--tz", zone,
                     Tr("Time zone for days and months: WIB, WITA or WIT (default: the unit's)"));

  auto* code = app.add_subcommand("code", Tr("The unit's code lists (violence types, regions...)"));
  code->require_subcommand(1);
  teduh::core::CodeEntry new_code;
  std::string code_list;
  bool code_restore = false;
  auto* code_add = code->add_subcommand("add", Tr("Add a code of the unit's own to a list"));
  code_add->add_option("--data", data, Tr("Data folder"))->required();
  code_add->add_option("--list", new_code.list, Tr("The list, e.g. violence_type or region"))
      ->required();
  code_add->add_option("--code", new_code.code, Tr("The code, e.g. TRAFFICKING or 64.72.01"))
      ->required();
  code_add->add_option("--label-id", new_code.label_id, Tr("Its label in Bahasa Indonesia"))
      ->required();
  code_add->add_option("--label-en", new_code.label_en, Tr("Its label in English"))->required();
  code_add->add_flag("--json", out.json, Tr("Print one JSON object"));
  auto* code_list_cmd =
      code->add_subcommand("list", Tr("Every code of the lists, the unit's marked"));
  code_list_cmd->add_option("--data", data, Tr("Data folder"))->required();
  code_list_cmd->add_option("--list", code_list, Tr("Only this list"));
  code_list_cmd->add_flag("--json", out.json, Tr("Print one JSON object"));
  auto* code_retire = code->add_subcommand(
      "retire", Tr("Stop offering a unit's code for new records (kept on old ones)"));
  code_retire->add_option("--data", data, Tr("Data folder"))->required();
  code_retire->add_option("--list", code_list, Tr("The list"))->required();
  code_retire->add_option("--code", new_code.code, Tr("The code"))->required();
  code_retire->add_flag("--restore", code_restore, Tr("Offer it again"));
  code_retire->add_flag("--json", out.json, Tr("Print one JSON object"));

  auto* tz = app.add_subcommand("time-zone", Tr("Show the unit's time zone, or set it"));
  std::string new_zone;
  tz->add_option("--data", data, Tr("Data folder"))->required();
  tz->add_option("zone", new_zone, Tr("WIB, WITA or WIT: the new time zone"));
  tz->add_flag("--json", out.json, Tr("Print one JSON object"));

  auto* backup_key = app.add_subcommand(
      "backup-key", Tr("Set the unit backup key (a token from `teduh key backup-key`)"));
  std::string token;
  backup_key->add_option("--data", data, Tr("Data folder"))->required();
  backup_key->add_option("token", token, Tr("TBK1-... token"))->required();
  backup_key->add_flag("--json", out.json, Tr("Print one JSON object"));
  auto* backup = app.add_subcommand(
      "backup",
      Tr("Write a backup of the store, sealed to the unit backup key (also while serving)"));
  std::string backup_to, backup_dir;
  std::size_t backup_keep = 0;
  backup->add_option("--data", data, Tr("Data folder"));
  auto* to_opt = backup->add_option("--to", backup_to, Tr("Backup file to write"));
  auto* dir_opt = backup->add_option(
      "--to-dir", backup_dir, Tr("Folder to write a backup named by the time into (scheduled)"));
  to_opt->excludes(dir_opt);
  backup
      ->add_option("--keep", backup_keep,
                   Tr("With --to-dir: keep the newest N backups there, delete older ones"))
      ->needs(dir_opt)
      ->check(CLI::Range(1, 100000));
  backup->add_flag("--json", out.json, Tr("Print one JSON object"));
  auto* backup_verify =
      backup->add_subcommand("verify", Tr("Check a backup file for damage (no key needed)"));
  std::string backup_file;
  backup_verify->add_option("file", backup_file, Tr("Backup file"))->required();
  backup_verify->add_flag("--json", out.json, Tr("Print one JSON object"));
  auto* store_cmd = app.add_subcommand("store", Tr("The store itself"));
  store_cmd->require_subcommand(1);
  auto* store_check = store_cmd->add_subcommand(
      "check", Tr("Check the store for damage (file, every row, audit chain); exit 0 only if "
                  "intact"));
  store_check->add_option("--data", data, Tr("Data folder"))->required();
  store_check->add_flag("--json", out.json, Tr("Print one JSON object"));
  auto* restore = app.add_subcommand(
      "restore", Tr("Restore the store from a backup (asks for the backup secret key)"));
  std::string restore_from;
  restore->add_option("--from", restore_from, Tr("Backup file"))->required();
  restore->add_option("--data", data, Tr("Data folder"))->required();
  restore->add_flag("--json", out.json, Tr("Print one JSON object"));

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    return out.Error(e.what());
  }

  if (init->parsed()) return Init(data, unit, init_zone, out);
  if (tz->parsed()) return TimeZoneCommand(data, new_zone, out);
  if (backup_key->parsed()) return BackupKeyCommand(data, token, out);
  if (backup_verify->parsed()) return BackupVerifyCommand(backup_file, out);
  if (backup->parsed()) {
    if (data.empty() || (backup_to.empty() && backup_dir.empty()))
      return out.Error(Tr("backup needs --data DIR and --to FILE or --to-dir DIR"));
    return BackupCommand(data, backup_to, backup_dir, backup_keep, out);
  }
  if (restore->parsed()) return RestoreCommand(restore_from, data, out);
  if (store_check->parsed()) return StoreCheckCommand(data, out);
  if (serve->parsed()) {
    config.data_dir = data;
    config.max_skew_ms = max_skew_minutes * 60000;
    config.idle_timeout = std::chrono::seconds(idle_seconds);
    config.max_device_bytes_per_day = device_mib << 20;
    config.max_unit_bytes_per_day = unit_mib << 20;
    config.max_store_bytes = store_mib << 20;
    config.store_check_interval = std::chrono::hours(check_hours);
    return Serve(config, listen, ops_listen, out);
  }
  if (enroll->parsed()) return Enroll(data, role, user, expires, out);
  if (list->parsed()) return DeviceList(data, out);
  if (revoke->parsed()) return DeviceRevoke(data, device_ref, out);
  if (verify->parsed()) return AuditVerify(data, head, out);
  if (show->parsed()) return AuditShow(data, last, out);
  if (code_add->parsed()) return CodeAdd(data, new_code, out);
  if (code_list_cmd->parsed()) return CodeList(data, code_list, out);
  if (code_retire->parsed()) return CodeRetire(data, code_list, new_code.code, code_restore, out);
  if (report->parsed()) {
    out.json = format == "json";
    return Report(data, from, to, by, format, zone, out);
  }
  return out.Error(Tr("no command given"));
}
