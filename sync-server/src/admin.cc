// Administration of a data folder (see admin.h). Each function opens its own
// short-lived connection; SQLite WAL and busy_timeout let it run beside a
// live server, whose writer holds the write lock only for one group commit.
#include "teduh/server/admin.h"

#include <cctype>
#include <charconv>
#include <filesystem>
#include <functional>
#include <system_error>

#include "sync_service.h"
#include "teduh/core/enrollment_code.h"
#include "teduh/core/sealing.h"
#include "teduh/crypto/crypto.h"
#include "teduh/server/error.h"

namespace teduh::server {
namespace {

constexpr std::size_t kMaxUserBytes = 128;

}  // namespace

core::result<InitResult> InitStore(const std::string& data_dir, std::string_view unit_name,
                                   core::Env& env, std::chrono::milliseconds ttl) {
  if (auto ec = crypto::Init()) return ec;
  if (unit_name.empty() || unit_name.size() > 1024)
    return core::make_error_code(core::errc::invalid_argument);
  std::error_code fs_ec;
  std::filesystem::create_directories(data_dir, fs_ec);
  if (fs_ec) return core::make_error_code(core::errc::io_error);
  // The folder holds ciphertext and metadata only, but still: owner only.
  std::filesystem::permissions(data_dir, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace, fs_ec);
  core::NewCode code = core::MakeEnrollmentCode({});
  EnrollmentRow bootstrap;
  bootstrap.code_hash = code.hash;
  bootstrap.role = teduh::sync::v1::ROLE_ADMIN;
  bootstrap.user = "admin";
  bootstrap.expires_ms = env.NowMs() + ttl.count();
  bootstrap.bootstrap = true;
  auto unit = CreateSqliteStore(StorePath(data_dir), unit_name, bootstrap);
  if (!unit) return unit.error();
  return InitResult{std::move(code.code), unit->unit_id};
}

core::result<Enrollment> CreateEnrollment(const std::string& data_dir, Role role,
                                          std::string_view user, std::chrono::milliseconds ttl,
                                          core::Env& env) {
  if (auto ec = crypto::Init()) return ec;
  if (role == teduh::sync::v1::ROLE_UNSPECIFIED || user.empty() || user.size() > kMaxUserBytes ||
      ttl.count() <= 0)
    return core::make_error_code(core::errc::invalid_argument);
  auto store = OpenSqliteStore(StorePath(data_dir), StoreOptions{});
  if (!store) return store.error();
  Store& s = **store;
  if (auto ec = s.Begin()) return ec;
  auto unit = s.LoadUnit();
  if (!unit) {
    s.Rollback();
    return unit.error();
  }
  core::NewCode code = core::MakeEnrollmentCode(unit->unit_root_pk);
  EnrollmentRow row;
  row.code_hash = code.hash;
  row.role = role;
  row.user = std::string(user);
  row.expires_ms = env.NowMs() + ttl.count();
  if (auto ec = s.InsertEnrollment(row)) {
    s.Rollback();
    return ec;
  }
  if (auto ec = s.Commit()) return ec;
  return Enrollment{std::move(code.code), role, row.user, row.expires_ms};
}

namespace {

// The unit's meta, read on a short read-only connection.
core::result<UnitInfo> ReadUnit(const std::string& data_dir) {
  StoreOptions options;
  options.read_only = true;
  auto store = OpenSqliteStore(StorePath(data_dir), options);
  if (!store) return store.error();
  return (*store)->LoadUnit();
}

}  // namespace

core::result<core::TimeZone> UnitTimeZone(const std::string& data_dir) {
  auto unit = ReadUnit(data_dir);
  if (!unit) return unit.error();
  return core::ParseTimeZone(unit->time_zone).value_or(core::TimeZone::kWib);
}

core::error_code SetUnitTimeZone(const std::string& data_dir, core::TimeZone zone) {
  auto store = OpenSqliteStore(StorePath(data_dir), StoreOptions{});
  if (!store) return store.error();
  Store& s = **store;
  if (auto ec = s.Begin()) return ec;
  if (auto ec = s.SetTimeZone(core::TimeZoneName(zone))) {
    s.Rollback();
    return ec;
  }
  return s.Commit();
}

core::result<core::CodeBook> UnitCodeBook(const UnitInfo& unit) {
  teduh::sync::v1::UnitCodes stored;
  if (unit.unit_codes.empty()) return core::CodeBook();
  std::optional<core::CodeBook> book;
  if (stored.ParseFromString(unit.unit_codes)) book = core::CodeBookFromUnitCodes(stored);
  if (!book) return core::make_error_code(core::errc::store_failed);
  return std::move(*book);
}

core::result<core::CodeBook> ReadUnitCodes(const std::string& data_dir) {
  auto unit = ReadUnit(data_dir);
  if (!unit) return unit.error();
  return UnitCodeBook(*unit);
}

namespace {

// Reads the unit's codes in a write transaction, lets `change` alter them,
// and stores them again (nothing is written if `change` fails).
core::error_code ChangeUnitCodes(const std::string& data_dir,
                                 const std::function<core::error_code(core::CodeBook&)>& change) {
  auto store = OpenSqliteStore(StorePath(data_dir), StoreOptions{});
  if (!store) return store.error();
  Store& s = **store;
  if (auto ec = s.Begin()) return ec;
  auto unit = s.LoadUnit();
  if (!unit) {
    s.Rollback();
    return unit.error();
  }
  // Damaged codes are never written back (their numbers must not be reused).
  auto book = UnitCodeBook(*unit);
  if (!book) {
    s.Rollback();
    return book.error();
  }
  if (auto ec = change(*book)) {
    s.Rollback();
    return ec;
  }
  teduh::sync::v1::UnitCodes stored;
  for (const core::CodeEntry& e : book->UnitCodes()) core::CodeEntryToProto(e, stored.add_codes());
  if (auto ec = s.SetUnitCodes(stored.SerializeAsString())) {
    s.Rollback();
    return ec;
  }
  return s.Commit();
}

}  // namespace

core::result<core::CodeEntry> AddUnitCode(const std::string& data_dir, core::CodeEntry entry,
                                          std::string* why) {
  core::CodeEntry added;
  auto ec = ChangeUnitCodes(data_dir, [&](core::CodeBook& book) -> core::error_code {
    if (std::string problem = book.Problem(entry); !problem.empty()) {
      if (why) *why = std::move(problem);
      return core::make_error_code(core::errc::invalid_argument);
    }
    auto a = book.Add(entry);
    if (!a) return a.error();
    added = *a;
    return {};
  });
  if (ec) return ec;
  return added;
}

core::error_code RetireUnitCode(const std::string& data_dir, std::string_view list,
                                std::string_view code, bool retired) {
  return ChangeUnitCodes(data_dir, [&](core::CodeBook& book) -> core::error_code {
    auto r = book.SetRetired(list, code, retired);
    return r ? core::error_code{} : r.error();
  });
}

core::result<std::vector<DeviceRow>> ListDevices(const std::string& data_dir) {
  StoreOptions options;
  options.read_only = true;
  auto store = OpenSqliteStore(StorePath(data_dir), options);
  if (!store) return store.error();
  return (*store)->ListDevices();
}

core::result<std::vector<RevocationRow>> ListRevocations(const std::string& data_dir) {
  StoreOptions options;
  options.read_only = true;
  auto store = OpenSqliteStore(StorePath(data_dir), options);
  if (!store) return store.error();
  auto devices = (*store)->ListDevices();
  if (!devices) return devices.error();
  std::vector<RevocationRow> out;
  for (const DeviceRow& d : *devices) {
    if (d.state != teduh::sync::v1::DEVICE_STATE_REVOKED) continue;
    auto r = (*store)->FindRevocation(d.device_id);
    if (!r) return r.error();
    if (*r) out.push_back(std::move(**r));
  }
  return out;
}

core::result<ServerRevocation> RevokeDeviceOnServer(const std::string& data_dir,
                                                    std::string_view device_ref, core::Env& env) {
  if (auto ec = crypto::Init()) return ec;
  std::string ref;
  for (char c : device_ref)
    ref.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  if (ref.size() < 6 || ref.size() > 32 ||
      ref.find_first_not_of("0123456789abcdef") != std::string::npos)
    return core::make_error_code(core::errc::invalid_argument);
  auto store = OpenSqliteStore(StorePath(data_dir), StoreOptions{});
  if (!store) return store.error();
  Store& s = **store;
  if (auto ec = s.Begin()) return ec;
  auto fail = [&](error_code ec) -> core::result<ServerRevocation> {
    s.Rollback();
    return ec;
  };
  auto devices = s.ListDevices();
  if (!devices) return fail(devices.error());
  const DeviceRow* target = nullptr;
  for (const DeviceRow& d : *devices) {
    if (!core::ToHex(d.device_id).starts_with(ref)) continue;
    if (target) return fail(core::make_error_code(core::errc::invalid_argument));  // ambiguous
    target = &d;
  }
  if (!target) return fail(core::make_error_code(core::errc::not_found));
  ServerRevocation out;
  out.device = *target;
  if (auto ec = RevokeInStore(s, env.NowMs(), *target, std::nullopt, "server operator", nullptr,
                              &out.revocation))
    return fail(ec);
  if (auto ec = s.Commit()) return ec;
  return out;
}

core::result<AuditCheck> VerifyAudit(const std::string& data_dir,
                                     const std::optional<AuditHash>& known_head) {
  if (auto ec = crypto::Init()) return ec;
  StoreOptions options;
  options.read_only = true;
  auto store = OpenSqliteStore(StorePath(data_dir), options);
  if (!store) return store.error();
  return CheckAuditChain(**store, known_head);
}

core::result<StoreCheck> CheckStoreFile(const std::string& data_dir) {
  if (auto ec = crypto::Init()) return ec;
  StoreOptions options;
  options.read_only = true;
  auto store = OpenSqliteStore(StorePath(data_dir), options);
  if (!store) return store.error();
  return (*store)->Check(true, false);
}

core::result<std::vector<AuditRecord>> ReadAudit(const std::string& data_dir, std::size_t last) {
  StoreOptions options;
  options.read_only = true;
  auto store = OpenSqliteStore(StorePath(data_dir), options);
  if (!store) return store.error();
  auto head = (*store)->RecordedAuditHead();
  if (!head) return head.error();
  const std::uint64_t after = head->index > last ? head->index - last : 0;
  std::vector<AuditRecord> records;
  auto ec = (*store)->ScanAudit(after, [&](const AuditRow& row) {
    AuditRecord& r = records.emplace_back();
    r.index = row.index;
    r.hash = std::string(row.hash);
    if (r.entry.ParseFromArray(row.body.data(), static_cast<int>(row.body.size())))
      ExpandAuditEntry(&r.entry);
    else
      r.entry.Clear();
    return true;
  });
  if (ec) return ec;
  if (records.size() > last)  // entries beyond the recorded head
    records.erase(records.begin(), records.end() - static_cast<std::ptrdiff_t>(last));
  return records;
}

std::string DeviceFingerprint(const DeviceRow& device) {
  return core::DeviceFingerprint(device.sign_pk, device.box_pk);
}

std::string DeviceStateName(DeviceState state) {
  switch (state) {
    case teduh::sync::v1::DEVICE_STATE_PENDING:
      return "pending";
    case teduh::sync::v1::DEVICE_STATE_ACTIVE:
      return "active";
    case teduh::sync::v1::DEVICE_STATE_REVOKED:
      return "revoked";
    default:
      return "unknown";
  }
}

core::result<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  if (text.size() < 2) return core::make_error_code(core::errc::invalid_argument);
  std::int64_t n = 0;
  auto digits = text.substr(0, text.size() - 1);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
  if (ec != std::errc() || end != digits.data() + digits.size() || n <= 0 ||
      n > 10LL * 365 * 24 * 3600)
    return core::make_error_code(core::errc::invalid_argument);
  switch (text.back()) {
    case 's':
      return std::chrono::milliseconds(std::chrono::seconds(n));
    case 'm':
      return std::chrono::milliseconds(std::chrono::minutes(n));
    case 'h':
      return std::chrono::milliseconds(std::chrono::hours(n));
    case 'd':
      return std::chrono::milliseconds(std::chrono::hours(24 * n));
    default:
      return core::make_error_code(core::errc::invalid_argument);
  }
}

}  // namespace teduh::server
