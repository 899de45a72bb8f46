// Administration of a server's data folder, run on the server host
// (`teduh-server init | enroll | device list | device revoke | audit verify |
// audit show`).
// These need no keys. They work while a server runs on the same folder
// (SQLite WAL; a busy store is waited for up to a few seconds, then
// errc::store_busy).
//
// Thread safety: every function opens its own connection; thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "teduh/audit/v1/audit.pb.h"
#include "teduh/core/codes.h"
#include "teduh/core/env.h"
#include "teduh/core/error.h"
#include "teduh/core/time_zone.h"
#include "teduh/server/audit.h"
#include "teduh/server/store.h"

namespace teduh::server {

struct InitResult {
  std::string bootstrap_code;  // one-time code for the first admin device
  std::string unit_id;
};

// Creates `data_dir` (if needed) and a new store for the unit, and a bootstrap
// enrollment code (role admin, user "admin", expires after `ttl`). Refuses with
// errc::already_initialised, changing nothing, if the folder holds a store.
[[nodiscard]] core::result<InitResult> InitStore(
    const std::string& data_dir, std::string_view unit_name, core::Env& env,
    std::chrono::milliseconds ttl = std::chrono::hours(72));

struct Enrollment {
  std::string code;  // shown once; the store keeps only its hash
  Role role = teduh::sync::v1::ROLE_UNSPECIFIED;
  std::string user;
  std::int64_t expires_ms = 0;
};

// A one-time enrollment code for a device of `user` with `role`, expiring
// after `ttl`. core::errc::invalid_argument for an empty or too long user or
// ROLE_UNSPECIFIED.
[[nodiscard]] core::result<Enrollment> CreateEnrollment(const std::string& data_dir, Role role,
                                                        std::string_view user,
                                                        std::chrono::milliseconds ttl,
                                                        core::Env& env);

// Every enrolled device, oldest first.
[[nodiscard]] core::result<std::vector<DeviceRow>> ListDevices(const std::string& data_dir);
// The revocation of every revoked device.
[[nodiscard]] core::result<std::vector<RevocationRow>> ListRevocations(const std::string& data_dir);

struct ServerRevocation {
  DeviceRow device;          // as it was before
  RevocationRow revocation;  // as it is now
};
// Revokes a device from the server host (`teduh-server device revoke`): the
// server refuses it from its next connection, and the revocation is audited
// as the server operator's. The host holds no unit root key, so this signs no
// wipe order: an admin device's `teduh device revoke` adds one, and the
// device erases itself when it next connects. `device_ref` is 32 hex digits
// or a unique prefix of at least 6 (core::errc::not_found,
// core::errc::invalid_argument).
[[nodiscard]] core::result<ServerRevocation> RevokeDeviceOnServer(const std::string& data_dir,
                                                                  std::string_view device_ref,
                                                                  core::Env& env);

// Checks the whole audit chain of the data folder (CheckAuditChain, read-only).
// A broken chain is a result with !intact() naming the first bad entry; an
// error means the store could not be read. `known_head`: a head hash printed
// by an earlier check, which must still be in the chain.
[[nodiscard]] core::result<AuditCheck> VerifyAudit(
    const std::string& data_dir, const std::optional<AuditHash>& known_head = std::nullopt);

// Checks the data folder's store for damage, read-only: SQLite's
// integrity_check (the file's pages and every index against its table), then
// every row's checksum. Damage is a result with !ok() naming it; an error
// means the store could not be opened at all.
[[nodiscard]] core::result<StoreCheck> CheckStoreFile(const std::string& data_dir);

struct AuditRecord {
  std::uint64_t index = 0;
  std::string hash;                    // 32 B as stored
  teduh::audit::v1::AuditEntry entry;  // expanded (ExpandAuditEntry); empty if unreadable
};

// The last `last` audit entries as stored (unchecked: run VerifyAudit for
// that), oldest first.
[[nodiscard]] core::result<std::vector<AuditRecord>> ReadAudit(const std::string& data_dir,
                                                               std::size_t last);

// The unit's time zone, in which devices show times and reports count days
// and months (WIB until set). A running server sends a new zone in the
// Welcome of every later connection.
[[nodiscard]] core::result<core::TimeZone> UnitTimeZone(const std::string& data_dir);
[[nodiscard]] core::error_code SetUnitTimeZone(const std::string& data_dir, core::TimeZone zone);

// The unit's code lists: the defaults and the unit's own codes as stored
// (errc::store_failed if those do not read back whole).
[[nodiscard]] core::result<core::CodeBook> UnitCodeBook(const UnitInfo& unit);
[[nodiscard]] core::result<core::CodeBook> ReadUnitCodes(const std::string& data_dir);
// Adds a unit's own code (`teduh-server code add`): errc::invalid_argument
// with the reason (core::CodeBook::Problem) in `why` when it cannot be added.
// Devices receive it in the Welcome of their next connection.
[[nodiscard]] core::result<core::CodeEntry> AddUnitCode(const std::string& data_dir,
                                                        core::CodeEntry entry, std::string* why);
// Retires a unit's code, or brings it back (errc::not_found: no such unit
// code; the defaults cannot be retired). A retired code is still shown.
[[nodiscard]] core::error_code RetireUnitCode(const std::string& data_dir, std::string_view list,
                                              std::string_view code, bool retired);

// Short fingerprint of a device's signing key (as `teduh status` shows it).
std::string DeviceFingerprint(const DeviceRow& device);
std::string DeviceStateName(DeviceState state);  // "pending", "active", "revoked"

// Parses "30m", "72h", "7d", "90s" (errc::invalid_argument otherwise).
[[nodiscard]] core::result<std::chrono::milliseconds> ParseDuration(std::string_view text);

}  // namespace teduh::server
