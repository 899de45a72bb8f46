// teduh — the field officer's command-line program (docs/CLI.md).
//
// Scripting contract: global options may come before or after the
// subcommand; with --json every command prints exactly one JSON object on
// stdout (on failure: {"error": {"code", "message"}}); on failure the exit
// status is non-zero and stderr gets one line. Exit status: 0 ok, 1 failure,
// 2 bad input or usage, 3 passphrase/vault, 4 network or server (retry later).
// Nothing sealed or secret is ever printed to stderr.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "session.h"
#include "teduh/core/device.h"
#include "teduh/core/frame_codec.h"
#include "teduh/core/i18n.h"
#include "teduh/core/passphrase.h"
#include "teduh/core/roles.h"
#include "teduh/crypto/crypto.h"

namespace {

using nlohmann::json;
using teduh::core::Device;
using teduh::core::errc;
using teduh::core::Failure;
using teduh::core::Tr;
using teduh::core::TrC;
using teduh::core::TrF;

struct Globals {
  std::string home;
  bool json = false;
  std::string lang = "id";  // core::CurrentLang(), as "id" or "en"
  std::string ca_file;
  // The unit's, once the device is open: times for people are shown in it.
  teduh::core::TimeZone zone = teduh::core::TimeZone::kWib;
};

std::string DefaultHome() {
  if (const char* h = std::getenv("TEDUH_HOME"); h != nullptr && *h != '\0') return h;
  if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0') {
    return std::string(h) + "/.teduh";
  }
  return ".teduh";
}

std::string IsoTime(std::int64_t ms) {
  if (ms <= 0) return "";
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

json TimeOrNull(std::int64_t ms) { return ms > 0 ? json(IsoTime(ms)) : json(nullptr); }

json IdOrNull(const std::optional<teduh::core::Id>& id) {
  return id ? json(teduh::core::ToHex(*id)) : json(nullptr);
}

// " (corrects 1a2b3c4d)", " (corrected by 5e6f7a8b)" after an append-only record.
std::string CorrectionNote(const std::optional<teduh::core::Id>& corrects,
                           const std::optional<teduh::core::Id>& corrected_by) {
  std::string out;
  if (corrects) out += " " + TrF("(corrects {})", teduh::core::ToHex(*corrects).substr(0, 8));
  if (corrected_by)
    out += " " + TrF("(corrected by {})", teduh::core::ToHex(*corrected_by).substr(0, 8));
  return out;
}

// A time for people, in the unit's zone ("2026-12-02 20:15 WITA"); JSON keeps
// IsoTime's UTC.
std::string LocalTime(const Globals& g, std::int64_t ms) {
  return ms > 0 ? teduh::core::FormatLocalTime(ms / 1000, g.zone) : std::string();
}

std::string ErrcName(const teduh::core::error_code& ec) {
  if (ec.category() != teduh::core::core_category()) return "internal";
  switch (static_cast<errc>(ec.value())) {
    case errc::unknown_kind:
      return "unknown_kind";
    case errc::unknown_field:
      return "unknown_field";
    case errc::bad_value:
      return "bad_value";
    case errc::not_found:
      return "not_found";
    case errc::invalid_argument:
      return "invalid_argument";
    case errc::wrong_passphrase:
      return "wrong_passphrase";
    case errc::vault_missing:
      return "vault_missing";
    case errc::vault_exists:
      return "vault_exists";
    case errc::vault_corrupt:
      return "vault_corrupt";
    case errc::vault_wiped:
      return "vault_wiped";
    case errc::locked:
      return "locked";
    case errc::store_failed:
      return "store_failed";
    case errc::store_busy:
      return "store_busy";
    case errc::disk_full:
      return "disk_full";
    case errc::io_error:
      return "io_error";
    case errc::key_missing:
      return "key_missing";
    case errc::integrity:
      return "integrity";
    case errc::malformed_frame:
      return "malformed_frame";
    case errc::frame_too_large:
      return "frame_too_large";
    case errc::unexpected_frame:
      return "unexpected_frame";
    case errc::unsupported_version:
      return "unsupported_version";
    case errc::device_unknown:
      return "device_unknown";
    case errc::device_pending:
      return "device_pending";
    case errc::device_revoked:
      return "device_revoked";
    case errc::bad_signature:
      return "bad_signature";
    case errc::enrollment_refused:
      return "enrollment_refused";
    case errc::forbidden:
      return "forbidden";
    case errc::out_of_scope:
      return "out_of_scope";
    case errc::rejected:
      return "rejected";
    case errc::connection_failed:
      return "connection_failed";
    case errc::timeout:
      return "timeout";
    case errc::server_error:
      return "server_error";
    case errc::wrong_unit:
      return "wrong_unit";
    case errc::wipe_ordered:
      return "device_revoked";
    case errc::server_busy:
      return "server_busy";
    case errc::server_disk_full:
      return "server_disk_full";
    case errc::server_damaged:
      return "server_damaged";
    case errc::store_damaged:
      return "store_damaged";
  }
  return "internal";
}

int ExitCodeFor(const teduh::core::error_code& ec) {
  if (ec.category() == teduh::core::core_category()) {
    switch (static_cast<errc>(ec.value())) {
      case errc::wrong_passphrase:
      case errc::vault_missing:
      case errc::vault_exists:
      case errc::vault_corrupt:
      case errc::vault_wiped:
        return 3;
      default:
        break;
    }
  }
  if (ec == teduh::core::condition::fix_input) return 2;
  if (ec == teduh::core::condition::retry_later) return 4;
  return 1;
}

// The one place a failure is reported.
// A command prints one result, once: `teduh lock` may end a command from its
// signal thread while the main thread is printing its own.
std::mutex g_output_mu;
bool g_output_done = false;

int Report(const Globals& g, const Failure& f) {
  std::string line = f.message.empty() ? f.code.message() : f.message;
  for (auto& c : line) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  std::lock_guard out(g_output_mu);
  if (g_output_done) return ExitCodeFor(f.code);
  g_output_done = true;
  if (g.json) {
    std::cout << json{{"error", {{"code", ErrcName(f.code)}, {"message", line}}}}.dump() << "\n";
  }
  std::cerr << "teduh: " << line << "\n";
  return ExitCodeFor(f.code);
}

int Emit(const Globals& g, const json& j, const std::string& human) {
  std::lock_guard out(g_output_mu);
  if (g_output_done) return 0;
  g_output_done = true;
  if (g.json) {
    std::cout << j.dump() << "\n";
  } else {
    std::cout << human;
  }
  std::cout.flush();
  return 0;
}

std::string DamagedRowText(const teduh::core::DamagedRow& row) {
  const std::string id = teduh::core::ToHex(row.record_id);
  if (row.table == "outbox") return TrF("unsent change {} (record {})", row.device_seq, id);
  if (row.table == "records") return TrF("record {}", id);
  if (row.table == "shadow") return TrF("the server's value of record {}, field {}", id, row.field);
  if (row.table == "set_aside")
    return TrF("a set-aside value of record {}, field {}", id, row.field);
  return TrF("record {}, field {}", id, row.field);
}

teduh::core::DeviceOptions Options(const Globals& g) {
  teduh::core::DeviceOptions o;
  o.vault.kdf = teduh::core::KdfModeFromEnv();
  // A damaged row is left out of what the command shows: say so, once each.
  o.store.on_damage =
      [seen = std::make_shared<std::set<std::string>>()](const teduh::core::DamagedRow& row) {
        std::string what = DamagedRowText(row);
        if (!seen->insert(what).second) return;
        std::cerr << TrF(
            "warning: {} is damaged on this device and is left out; the next sync "
            "restores it from the server\n",
            what);
      };
  o.transport.ca_file = g.ca_file.empty() ? teduh::core::CaFileFromEnv() : g.ca_file;
  return o;
}

teduh::core::Outcome<std::unique_ptr<Device>> OpenDevice(const Globals& g) {
  if (!Device::Exists(g.home)) {
    if (auto erased = Device::Erasure(g.home)) return *erased;
    return teduh::core::Fail(
        errc::vault_missing,
        TrF("no device is enrolled in {} (run: teduh init --server URL --code CODE)", g.home));
  }
  if (const std::string warning = Device::UnlockRiskOf(g.home).Warning(); !warning.empty())
    std::cerr << warning << "\n";
  auto pass = teduh::core::ReadPassphrase(Tr("Passphrase: "), false);
  if (!pass) return pass.error();
  return Device::Open(g.home, *pass, Options(g));
}

json TaskJson(const teduh::core::TaskView& t) {
  return json{{"task_id", teduh::core::ToHex(t.task_id)},
              {"case_id", teduh::core::ToHex(t.case_id)},
              {"case_number", t.case_number},
              {"kind", t.kind},
              {"due_at", IsoTime(t.due_at * 1000)},
              {"overdue", t.overdue},
              {"mine", t.mine},
              {"cycle", t.cycle},
              {"cycles", t.cycles},
              {"assigned_pendamping", t.assigned_pendamping}};
}

json ReferralJson(const teduh::core::ReferralView& r) {
  auto at = [](std::int64_t s) { return TimeOrNull(s * 1000); };
  return json{{"referral_id", teduh::core::ToHex(r.referral_id)},
              {"case_id", teduh::core::ToHex(r.case_id)},
              {"agency", r.agency},
              {"service", r.service},
              {"status", r.status},
              {"consent", r.consent},
              {"consent_at", at(r.consent_at)},
              {"accompanied", r.accompanied},
              {"disclosed_fields", r.disclosed_fields},
              {"created_by", r.created_by},
              {"created_at", at(r.created_at)},
              {"signed_by", r.signed_by},
              {"sent_at", at(r.sent_at)},
              {"confirmed_at", at(r.confirmed_at)},
              {"pending", r.pending}};
}

json DeviceJson(const teduh::core::DeviceInfo& i) {
  return json{{"device_id", teduh::core::ToHex(i.device_id)},
              {"state", i.state},
              {"user", i.user},
              {"role", i.role},
              {"unit_id", i.unit_id},
              {"unit_name", i.unit_name},
              {"time_zone", std::string(teduh::core::TimeZoneName(i.time_zone))},
              {"server_url", i.server_url},
              {"label", i.label},
              {"fingerprint", i.fingerprint},
              {"unit_fingerprint", i.unit_fingerprint}};
}

std::string Unreadable(teduh::core::Readability r) {
  if (r == teduh::core::Readability::kNoKey) return Tr("[not readable on this device: no key]");
  return Tr("[INTEGRITY ERROR: the stored value was altered; not shown]");
}

// An outbox entry's state, for people (JSON keeps OutboxStateName's code).
std::string OutboxStateText(teduh::core::OutboxState state) {
  switch (state) {
    case teduh::core::OutboxState::kPending:
      return TrC("outbox state", "pending");
    case teduh::core::OutboxState::kAccepted:
      return TrC("outbox state", "accepted");
    case teduh::core::OutboxState::kMerged:
      return TrC("outbox state", "merged");
    case teduh::core::OutboxState::kConflict:
      return TrC("outbox state", "conflict");
    case teduh::core::OutboxState::kRejected:
      return TrC("outbox state", "rejected");
  }
  return std::string(teduh::core::OutboxStateName(state));
}

void FieldsJson(const std::vector<teduh::core::FieldView>& fields, json& values, json& unreadable) {
  values = json::object();
  unreadable = json::object();
  for (const auto& f : fields) {
    if (f.readability == teduh::core::Readability::kReadable) {
      values[f.name] = f.value;
    } else {
      unreadable[f.name] = std::string(teduh::core::ReadabilityName(f.readability));
    }
  }
}

std::string FieldsText(const std::vector<teduh::core::FieldView>& fields,
                       const std::string& indent) {
  std::string out;
  for (const auto& f : fields) {
    std::string v = f.readability == teduh::core::Readability::kReadable
                        ? f.display
                        : Unreadable(f.readability);
    out += fmt::format("{}{}: {}{}\n", indent, f.label, v, f.pending ? "  (*)" : "");
  }
  return out;
}

}  // namespace

json RemoteDeviceJson(const teduh::core::RemoteDevice& r) {
  return {{"device_id", teduh::core::ToHex(r.device_id)},
          {"user", r.user},
          {"role", r.role},
          {"state", r.state},
          {"label", r.label},
          {"fingerprint", r.fingerprint},
          {"enrolled_at", TimeOrNull(r.enrolled_ms)},
          {"last_sync", TimeOrNull(r.last_sync_ms)},
          {"revoked_at", TimeOrNull(r.revoked_ms)},
          {"wipe_ordered", r.wipe_ordered},
          {"wiped_at", TimeOrNull(r.wiped_ms)},
          {"root_key", r.root_key.empty() ? json(nullptr) : json(r.root_key)},
          {"restore", r.restore_lost == 0 ? json(nullptr)
                                          : json{{"found_at", TimeOrNull(r.restore_ms)},
                                                 {"lost", r.restore_lost},
                                                 {"resent", r.resent},
                                                 {"not_resent", r.restore_lost - r.resent}}}};
}

// After a restore that lacked changes of the device: how many came back.
std::string RestoreNote(const teduh::core::RemoteDevice& r) {
  if (r.restore_lost == 0) return "";
  if (r.resent >= r.restore_lost)
    return " — " + TrF("after a restore: all {} of its lost changes sent again", r.restore_lost);
  return " — " + TrF("after a restore: {} of {} lost changes sent again, {} not (yet)", r.resent,
                     r.restore_lost, r.restore_lost - r.resent);
}

std::string RootKeyNote(const teduh::core::RemoteDevice& r) {
  if (r.root_key == "held") return " — " + Tr("holds the unit root key");
  if (r.root_key == "handed") return " — " + Tr("unit root key handed over, not yet confirmed");
  return "";
}

// Recovery kit shares for `teduh init --recover`: from TEDUH_RECOVERY_SHARE_1,
// _2, ... (scripts) or asked on the terminal one by one until the kit's
// threshold is reached; a mistyped share is asked again on the terminal.
teduh::core::Outcome<std::vector<teduh::core::RecoveryShare>> ReadRecoveryShares() {
  using teduh::core::Fail;
  std::vector<teduh::core::RecoveryShare> shares;
  const bool scripted = std::getenv("TEDUH_RECOVERY_SHARE_1") != nullptr;
  for (std::size_t i = 1; i <= 255;) {
    const std::string name = fmt::format("TEDUH_RECOVERY_SHARE_{}", i);
    if (scripted && std::getenv(name.c_str()) == nullptr) {
      auto missing = teduh::core::SharesMissing(shares, "");
      if (!missing) return missing.error();
      return Fail(errc::bad_value,
                  TrF("{} more shares are needed: any {} of the kit rebuild the key", *missing,
                      shares.front().threshold));
    }
    auto text = teduh::core::ReadPassphraseFrom(
        name.c_str(), TrF("Recovery share {} (TRS1-..., typing is not shown): ", i), false);
    if (!text) return text.error();
    auto share = teduh::core::ParseRecoveryShare(
        std::string_view(reinterpret_cast<const char*>(text->data()), text->size()), i);
    text->Reset();
    if (share) {
      shares.push_back(std::move(*share));
      auto missing = teduh::core::SharesMissing(shares, "");
      if (missing && *missing == 0) return shares;
      if (missing) {
        std::cerr << TrF("{} more shares are needed.\n", *missing);
        ++i;
        continue;
      }
      shares.pop_back();
      if (scripted) return missing.error();
      std::cerr << "teduh: " << missing.error().message << "\n";
      continue;
    }
    if (scripted) return share.error();
    std::cerr << "teduh: " << share.error().message << "\n";
  }
  return Fail(errc::bad_value, Tr("too many shares"));
}

// For a revoked device: whether it has erased itself yet.
std::string ErasureNote(const Globals& g, const teduh::core::RemoteDevice& r) {
  if (r.state != "revoked") return "";
  // The dashes stay out of the messages: msgids are ASCII (xgettext drops other characters).
  if (r.wiped_ms > 0) return " — " + TrF("erased (signed receipt {})", LocalTime(g, r.wiped_ms));
  return " — " + (r.wipe_ordered ? Tr("wipe ordered, not yet erased") : Tr("no wipe order yet"));
}

// `teduh key recovery-kit`: the shares on stdout (and, with `pages`, one
// printable page each in a new folder); every copy this command made is wiped.
int RecoveryKitCommand(const Globals& g, Device& d, unsigned shares, unsigned threshold,
                       const std::string& pages) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!pages.empty() && (fs::exists(pages, ec) || !fs::create_directory(pages, ec))) {
    return Report(g,
                  teduh::core::Fail(errc::invalid_argument, TrF("{} must be a new folder", pages)));
  }
  if (!pages.empty()) fs::permissions(pages, fs::perms::owner_all, fs::perm_options::replace, ec);
  auto kit = d.MakeRecoveryKit(shares, threshold);
  if (!kit) {
    if (!pages.empty()) fs::remove(pages, ec);
    return Report(g, kit.error());
  }
  const std::string made_on = LocalTime(g, kit->made_ms);
  std::vector<std::string> texts;
  for (const auto& t : kit->shares)
    texts.emplace_back(reinterpret_cast<const char*>(t.data()), t.size());
  int rc = 0;
  for (std::size_t i = 0; i < texts.size() && !pages.empty() && rc == 0; ++i) {
    std::string page = teduh::core::RecoveryPage(
        kit->unit_name, texts[i], static_cast<unsigned>(i + 1), shares, threshold, made_on);
    const fs::path file = fs::path(pages) / fmt::format("share-{}.html", i + 1);
    std::FILE* f = std::fopen(file.c_str(), "wx");
    if (f == nullptr || std::fwrite(page.data(), 1, page.size(), f) != page.size() ||
        std::fclose(f) != 0) {
      rc = Report(g, teduh::core::Fail(errc::io_error, TrF("cannot write {}", file.string())));
    }
    fs::permissions(file, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace,
                    ec);
    teduh::crypto::Wipe(page);
  }
  if (rc == 0) {
    json j{{"shares", texts}, {"threshold", threshold}, {"escrowed", kit->escrowed}};
    if (!pages.empty()) j["pages"] = pages;
    std::string human = TrF(
        "Recovery kit of {}: {} shares, any {} of which make a new admin device of the unit "
        "(teduh init --recover). Give each share to a different trusted person, on paper; never "
        "photograph or message it.\n",
        kit->unit_name, shares, threshold);
    for (std::size_t i = 0; i < texts.size(); ++i) human += TrF("Share {}: {}\n", i + 1, texts[i]);
    if (!pages.empty())
      human += TrF("Printable pages: {} (print them, then delete the folder)\n", pages);
    rc = Emit(g, j, human);
    teduh::crypto::Wipe(human);
    for (auto& t : j["shares"]) teduh::crypto::Wipe(t.get_ref<std::string&>());
  }
  for (auto& t : texts) teduh::crypto::Wipe(t);
  return rc;
}

int main(int argc, char** argv) {
  teduh::cli::BlockLockSignal();  // before any thread: only a session's thread takes it
  teduh::core::SetLang(teduh::core::LangFromArgs(argc, argv));
  Globals g;
  g.home = DefaultHome();
  g.lang = std::string(teduh::core::LangCode(teduh::core::CurrentLang()));
  CLI::App app{"teduh — " + Tr("encrypted case records for UPTD PPA field officers")};
  app.require_subcommand(1);
  app.fallthrough();
  // CLI11's own words in the help, in the process language too.
  const std::string options_group = Tr("Options");
  const std::string subcommands_group = Tr("Subcommands");
  app.option_defaults()->group(options_group);
  app.set_help_flag("-h,--help", Tr("Print this help message and exit"));
  auto formatter = app.get_formatter();
  formatter->label("Usage", Tr("Usage"));
  formatter->label("OPTIONS", Tr("OPTIONS"));
  formatter->label("SUBCOMMAND", Tr("SUBCOMMAND"));
  formatter->label("SUBCOMMANDS", Tr("SUBCOMMANDS"));
  formatter->label("Positionals", Tr("Positionals"));
  formatter->label("REQUIRED", Tr("REQUIRED"));
  formatter->label("Needs", Tr("Needs"));
  formatter->label("Excludes", Tr("Excludes"));
  auto add_globals = [&](CLI::App* a) {
    // A subcommand made its help flag before it took the option defaults.
    if (CLI::Option* help = a->get_help_ptr()) help->group(options_group);
    if (a != &app) a->group(subcommands_group);
    a->add_option("--home", g.home, Tr("Device folder (default $TEDUH_HOME or ~/.teduh)"));
    a->add_flag("--json", g.json, Tr("Print one JSON object on stdout"));
    a->add_option("--lang", g.lang,
                  Tr("Language of messages and labels: id or en (default: from the locale)"))
        ->check(CLI::IsMember({"id", "en"}));
    a->add_option("--ca", g.ca_file, Tr("CA certificate file for wss:// (or $TEDUH_CA_FILE)"));
  };
  add_globals(&app);
  std::vector<CLI::App*> leaves;
  auto leaf = [&](CLI::App* parent, const char* name, const std::string& help) {
    CLI::App* a = parent->add_subcommand(name, help);
    add_globals(a);
    leaves.push_back(a);
    return a;
  };

  std::string server, code, label;
  std::uint32_t max_failed = 0;
  CLI::App* init = leaf(&app, "init", Tr("Enroll this device with an enrollment code"));
  init->add_option("--server", server, Tr("Server address, e.g. wss://ppa.example:8443"))
      ->required();
  init->add_option("--code", code, Tr("Enrollment code from the admin"))->required();
  bool recover = false;
  init->add_flag("--recover", recover,
                 Tr("Become an admin device of the unit with its recovery kit: asks for the "
                    "shares (the code must be an admin code)"));
  init->add_option("--label", label, Tr("Device label shown to admins (default: host name)"));
  init->add_option(
      "--max-failed-unlocks", max_failed,
      Tr("Erase the keys after this many wrong passphrases in a row (0 = never; default 10 "
         "for field roles, never for office and admin devices)"));

  CLI::App* passphrase_cmd =
      app.add_subcommand("passphrase", Tr("The device passphrase"))->require_subcommand(1);
  add_globals(passphrase_cmd);
  CLI::App* passphrase_change = leaf(
      passphrase_cmd, "change",
      Tr("Choose a new passphrase (asked twice, or TEDUH_NEW_PASSPHRASE); keys and data stay"));

  CLI::App* examples =
      app.add_subcommand("help", Tr("Examples for the everyday work of a visit and the office"));
  add_globals(examples);
  CLI::App* lock = leaf(&app, "lock",
                        Tr("Wipe this device's keys from memory now: ends the teduh command using "
                           "them (no passphrase needed)"));
  CLI::App* status = leaf(&app, "status", Tr("Show this device, its outbox and last sync"));
  bool status_all = false;
  status->add_flag("--all", status_all,
                   Tr("List every change still in this device's outbox, accepted ones too (by "
                      "default the newest 200 not accepted)"));
  CLI::App* store_cmd =
      app.add_subcommand("store", Tr("This device's local store"))->require_subcommand(1);
  CLI::App* store_check =
      leaf(store_cmd, "check",
           Tr("Check every stored row and the file's structure (exits 2 if damaged; the next "
              "sync repairs)"));
  CLI::App* sync = leaf(&app, "sync", Tr("Send local changes and receive new ones"));
  bool push_only = false;
  sync->add_flag("--push-only", push_only,
                 Tr("Only send local changes (on a weak connection); receive at the next sync"));

  CLI::App* case_cmd = app.add_subcommand("case", Tr("Cases"))->require_subcommand(1);
  add_globals(case_cmd);
  std::vector<std::string> sets;
  std::string case_ref, role, text, kind = "visit";
  CLI::App* case_new = leaf(case_cmd, "new", Tr("Open a new case"));
  case_new->add_option("--set", sets, Tr("FIELD=VALUE (repeatable)"));
  CLI::App* case_set = leaf(case_cmd, "set", Tr("Change fields of a case"));
  case_set->add_option("case", case_ref, Tr("Case id or unique prefix"))->required();
  case_set->add_option("--set", sets, Tr("FIELD=VALUE (repeatable)"))->required();
  std::string assign_pendamping, assign_konselor, assign_psikolog;
  CLI::App* case_assign = leaf(
      case_cmd, "assign", Tr("Give a case to workers (office, supervisor); syncs like an edit"));
  case_assign->add_option("case", case_ref, Tr("Case id or unique prefix"))->required();
  case_assign->add_option("--pendamping", assign_pendamping, Tr("User name of the case worker"));
  case_assign->add_option("--konselor", assign_konselor, Tr("User name of the counsellor"));
  case_assign->add_option("--psikolog", assign_psikolog, Tr("User name of the psychologist"));
  CLI::App* case_shred = leaf(
      case_cmd, "shred",
      Tr("Destroy a case everywhere: a supervisor asks, the admin device carries it out (online)"));
  case_shred->add_option("case", case_ref, Tr("Case id or unique prefix"))->required();
  std::string rekey_held_by;
  bool rekey_all = false;
  CLI::App* case_rekey =
      leaf(case_cmd, "rekey",
           Tr("Re-key the cases a lost device held, or every case (admin device; online)"));
  auto* held_opt = case_rekey->add_option("--held-by", rekey_held_by,
                                          Tr("Device id (or unique prefix) whose cases to re-key"));
  auto* all_opt = case_rekey->add_flag("--all", rekey_all, Tr("Re-key every case of the unit"));
  held_opt->excludes(all_opt);

  std::string reopen_reason, reopen_note;
  CLI::App* case_reopen =
      leaf(case_cmd, "reopen", Tr("Reopen a closed case: a new episode, from the complaint stage"));
  case_reopen->add_option("case", case_ref, Tr("Case id or unique prefix"))->required();
  case_reopen
      ->add_option("--reason", reopen_reason,
                   Tr("repeat_violence (kekerasan berulang), new_need, victim_returned, other"))
      ->required();
  case_reopen->add_option("--note", reopen_note, Tr("Why, in words (a sealed case-review note)"));

  CLI::App* case_list = leaf(case_cmd, "list", Tr("List the cases on this device"));
  CLI::App* case_show = leaf(case_cmd, "show", Tr("Show a case with its persons and notes"));
  case_show->add_option("case", case_ref, Tr("Case id or unique prefix"))->required();
  std::string history_field;
  int restore_version = 0;
  CLI::App* case_history =
      leaf(case_cmd, "history", Tr("Every value a case's fields have had (needs a connection)"));
  case_history->add_option("case", case_ref, Tr("Case id or unique prefix"))->required();
  case_history->add_option("--field", history_field, Tr("Only this field"));
  CLI::App* case_restore = leaf(
      case_cmd, "restore", Tr("Bring an earlier value back as a new edit (needs a connection)"));
  case_restore->add_option("case", case_ref, Tr("Case id or unique prefix"))->required();
  case_restore->add_option("--field", history_field, Tr("The field"))->required();
  case_restore->add_option("--version", restore_version, Tr("As numbered by `case history`"))
      ->required();

  CLI::App* person_cmd =
      app.add_subcommand("person", Tr("Persons in a case"))->require_subcommand(1);
  add_globals(person_cmd);
  CLI::App* person_add = leaf(person_cmd, "add", Tr("Add a person to a case"));
  person_add->add_option("case", case_ref, Tr("Case id or unique prefix"))->required();
  person_add->add_option("--role", role, Tr("victim, perpetrator, reporter or witness"))
      ->required();
  person_add->add_option("--set", sets, Tr("FIELD=VALUE (repeatable)"));
  std::string person_ref;
  CLI::App* person_set = leaf(person_cmd, "set", Tr("Change fields of a person"));
  person_set->add_option("person", person_ref, Tr("Person id or unique prefix"))->required();
  person_set->add_option("--set", sets, Tr("FIELD=VALUE (repeatable)"))->required();
  CLI::App* person_history = leaf(
      person_cmd, "history", Tr("Every value a person's fields have had (needs a connection)"));
  person_history->add_option("person", person_ref, Tr("Person id or unique prefix"))->required();
  person_history->add_option("--field", history_field, Tr("Only this field"));
  CLI::App* person_restore = leaf(
      person_cmd, "restore", Tr("Bring an earlier value back as a new edit (needs a connection)"));
  person_restore->add_option("person", person_ref, Tr("Person id or unique prefix"))->required();
  person_restore->add_option("--field", history_field, Tr("The field"))->required();
  person_restore->add_option("--version", restore_version, Tr("As numbered by `person history`"))
      ->required();

  CLI::App* note_cmd = app.add_subcommand("note", Tr("Notes (append-only)"))->require_subcommand(1);
  add_globals(note_cmd);
  CLI::App* note_add = leaf(note_cmd, "add", Tr("Add a note to a case"));
  note_add->add_option("case", case_ref, Tr("Case id or unique prefix"))->required();
  note_add->add_option("--text", text, Tr("The note"))->required();
  note_add->add_option(
      "--kind", kind,
      Tr("visit, identification, counselling, psychology, monitoring, case_review"));

  std::string visit_outcome, visit_method, visit_note;
  CLI::App* visit = leaf(&app, "visit",
                         Tr("Log a visit or call to the victim, with a note, in one go (offline)"));
  visit->add_option("case", case_ref, Tr("Case id or unique prefix"))->required();
  visit->add_option("--outcome", visit_outcome, Tr("reached (bertemu), not_reached, unsafe"))
      ->required();
  visit->add_option("--method", visit_method, Tr("home_visit (default), phone, message, other"));
  visit->add_option("--note", visit_note, Tr("What happened (sealed like any note)"));

  std::string assess_risk, assess_rationale, assess_plan, assess_kind, assess_condition,
      assess_diagnosis, assess_recommendations, assess_corrects;
  std::vector<std::string> assess_needs;
  CLI::App* assessment_cmd = app.add_subcommand("assessment", Tr("Assessments of a case (asesmen)"))
                                 ->require_subcommand(1);
  add_globals(assessment_cmd);
  CLI::App* assessment_add =
      leaf(assessment_cmd, "add",
           Tr("Record an assessment: the case's risk, needs, rationale and safety plan follow it"));
  assessment_add->add_option("case", case_ref, Tr("Case id or unique prefix"))->required();
  assessment_add
      ->add_option("--risk", assess_risk, Tr("rendah, sedang, tinggi (low, medium, high)"))
      ->required();
  assessment_add
      ->add_option("--needs", assess_needs,
                   Tr("e.g. medis,rumah_aman (comma-separated; replaces the case's needs)"))
      ->delimiter(',');
  assessment_add->add_option("--rationale", assess_rationale, Tr("Why this risk class (sealed)"));
  assessment_add->add_option("--safety-plan", assess_plan,
                             Tr("The safety plan made with the victim (sealed)"));
  assessment_add->add_option(
      "--kind", assess_kind,
      Tr("awal, psikologis (psychologists only), ulang (initial, psychological, review)"));
  assessment_add->add_option(
      "--condition", assess_condition,
      Tr("The victim's physical, psychological and social condition (sealed)"));
  assessment_add->add_option("--diagnosis", assess_diagnosis,
                             Tr("Diagnosis (clinical: counsellors and psychologists)"));
  assessment_add->add_option("--recommendations", assess_recommendations,
                             Tr("Recommendations (clinical: counsellors and psychologists)"));
  assessment_add->add_option("--corrects", assess_corrects,
                             Tr("An earlier assessment of the case this one corrects"));

  std::string service_code, service_subtype, service_note, service_activity, service_corrects;
  CLI::App* service_cmd =
      app.add_subcommand("service", Tr("Services the unit delivered (append-only)"))
          ->require_subcommand(1);
  add_globals(service_cmd);
  CLI::App* service_add = leaf(service_cmd, "add", Tr("Record a service delivered now"));
  service_add->add_option("case", case_ref, Tr("Case id or unique prefix"))->required();
  service_add
      ->add_option("--service", service_code,
                   Tr("complaint, outreach, case_management, shelter, mediation, accompaniment"))
      ->required();
  service_add->add_option("--subtype", service_subtype,
                          Tr("For accompaniment: legal, psychological, social, medical"));
  service_add->add_option("--note", service_note, Tr("What was done (sealed)"));
  service_add->add_option(
      "--activity", service_activity,
      Tr("What it consisted of, e.g. sesi_konseling, kunjungan_rumah (teduh code list "
         "--list service_activity)"));
  service_add->add_option("--corrects", service_corrects,
                          Tr("An earlier service record of the case this one corrects"));

  CLI::App* task_cmd =
      app.add_subcommand("task", Tr("Deadlines of your cases (offline)"))->require_subcommand(1);
  add_globals(task_cmd);
  bool task_due = false, task_mine = false;
  std::string task_ref;
  CLI::App* task_list = leaf(task_cmd, "list", Tr("The deadline board: overdue first"));
  task_list->add_flag("--due", task_due, Tr("Only what is overdue or due within a day"));
  task_list->add_flag("--mine", task_mine, Tr("Only the cases assigned to you"));
  CLI::App* task_done = leaf(task_cmd, "done", Tr("Mark a deadline met (syncs)"));
  task_done->add_option("task", task_ref, Tr("Task id or unique prefix"))->required();

  std::string report_from, report_to, report_format = "table";
  std::vector<std::string> report_by;
  CLI::App* report_cmd =
      leaf(&app, "report",
           Tr("The unit's case counts over a period, offline (office and supervisor devices)"));
  report_cmd->add_option("--from", report_from, Tr("First day, YYYY-MM-DD"))->required();
  report_cmd->add_option("--to", report_to, Tr("Last day, YYYY-MM-DD, inclusive"))->required();
  report_cmd
      ->add_option("--by", report_by,
                   Tr("Breakdowns: month,violence_type,category,sex,age_group,region,"
                      "service,service_delivered,stage,closure_reason"))
      ->delimiter(',');
  report_cmd->add_option("--format", report_format, Tr("table, csv or json (--json: json)"))
      ->check(CLI::IsMember({"table", "csv", "json"}));

  CLI::App* code_cmd =
      app.add_subcommand("code", Tr("The unit's code lists (violence types, regions, agencies...)"))
          ->require_subcommand(1);
  add_globals(code_cmd);
  std::string code_list_name;
  CLI::App* code_list =
      leaf(code_cmd, "list", Tr("Every code a field accepts, the unit's own marked"));
  code_list->add_option("--list", code_list_name,
                        Tr("Only this list, e.g. violence_type or region"));

  CLI::App* referral_cmd =
      app.add_subcommand("referral", Tr("Referrals to partner agencies (rujukan)"))
          ->require_subcommand(1);
  add_globals(referral_cmd);
  std::string ref_agency, ref_service, ref_id;
  std::vector<std::string> ref_disclose;
  bool ref_consent = false, ref_accompanied = false;
  CLI::App* referral_add =
      leaf(referral_cmd, "add", Tr("Refer a case to an agency (a draft letter)"));
  referral_add->add_option("case", case_ref, Tr("Case id or unique prefix"))->required();
  referral_add->add_option("--agency", ref_agency, Tr("Agency code, e.g. POLRES, RSUD, LBH"))
      ->required();
  referral_add->add_option("--service", ref_service, Tr("Service code, e.g. LEGAL, MEDICAL"))
      ->required();
  referral_add->add_flag("--consent", ref_consent, Tr("The victim has consented (recorded now)"));
  referral_add
      ->add_option("--disclose", ref_disclose,
                   Tr("Fields the letter discloses, e.g. name,address (comma-separated)"))
      ->delimiter(',');
  referral_add->add_flag("--accompanied", ref_accompanied, Tr("An officer accompanies the victim"));
  CLI::App* referral_list = leaf(referral_cmd, "list", Tr("The referrals of a case"));
  referral_list->add_option("case", case_ref, Tr("Case id or unique prefix"))->required();
  std::vector<CLI::App*> referral_steps;
  for (const auto& [name, help] : std::vector<std::pair<const char*, std::string>>{
           {"consent", Tr("Record that the victim consented (now)")},
           {"accompany", Tr("Record that an officer accompanies the victim")},
           {"check", Tr("The letter was checked")},
           {"sign", Tr("Sign the letter (supervisors)")},
           {"send", Tr("Send it (needs consent; an officer for a child or vulnerable victim)")},
           {"confirm", Tr("The agency confirmed it received the victim")}}) {
    CLI::App* step = leaf(referral_cmd, name, help);
    step->add_option("referral", ref_id, Tr("Referral id or unique prefix"))->required();
    referral_steps.push_back(step);
  }

  CLI::App* conflict_cmd =
      app.add_subcommand("conflict", Tr("Concurrent edits waiting for a person"))
          ->require_subcommand(1);
  add_globals(conflict_cmd);
  std::string conflict_ref, take;
  std::optional<std::string> resolve_value;
  bool include_resolved = false;
  CLI::App* conflict_list = leaf(conflict_cmd, "list", Tr("List open conflicts, oldest first"));
  conflict_list->add_flag("--all", include_resolved, Tr("Include resolved conflicts"));
  CLI::App* conflict_show = leaf(conflict_cmd, "show", Tr("Show both values of a conflict"));
  conflict_show->add_option("conflict", conflict_ref, Tr("Conflict id or unique prefix"))
      ->required();
  CLI::App* conflict_resolve =
      leaf(conflict_cmd, "resolve", Tr("Choose the value (works offline; syncs like any edit)"));
  conflict_resolve->add_option("conflict", conflict_ref, Tr("Conflict id or unique prefix"))
      ->required();
  auto* take_opt = conflict_resolve->add_option(
      "--take", take, Tr("kept, other, mine (the side you wrote) or theirs"));
  auto* value_opt =
      conflict_resolve->add_option("--value", resolve_value, Tr("A new value instead"));
  take_opt->excludes(value_opt);

  CLI::App* device_cmd =
      app.add_subcommand("device", Tr("Devices of the unit (admin)"))->require_subcommand(1);
  add_globals(device_cmd);
  CLI::App* device_list = leaf(device_cmd, "list", Tr("List the unit's devices"));
  std::string device_ref;
  CLI::App* device_approve = leaf(device_cmd, "approve", Tr("Approve a pending device"));
  device_approve->add_option("device", device_ref, Tr("Device id or unique prefix"))->required();
  bool approve_admin = false;
  device_approve->add_flag(
      "--admin", approve_admin,
      Tr("Approve a device enrolled with an admin code, handing it the unit root key"));
  std::string approve_fingerprint;
  device_approve->add_option(
      "--fingerprint", approve_fingerprint,
      Tr("The device's fingerprint as its own screen shows it (teduh status on it); checked "
         "before anything is sent, and required with --admin"));
  CLI::App* device_revoke =
      leaf(device_cmd, "revoke",
           Tr("Revoke a lost or taken device; it erases itself when it next connects"));
  device_revoke->add_option("device", device_ref, Tr("Device id or unique prefix"))->required();

  CLI::App* user_cmd =
      app.add_subcommand("user", Tr("Staff of the unit (admin)"))->require_subcommand(1);
  add_globals(user_cmd);
  std::string offboard_user, reassign_to;
  CLI::App* user_offboard =
      leaf(user_cmd, "offboard",
           Tr("Someone leaves: revoke all their devices and give their cases to another worker"));
  user_offboard->add_option("user", offboard_user, Tr("User name of the person leaving"))
      ->required();
  user_offboard->add_option("--reassign-to", reassign_to, Tr("User name who takes over the cases"))
      ->required();

  CLI::App* key_cmd =
      app.add_subcommand("key", Tr("The unit's class keys (admin)"))->require_subcommand(1);
  add_globals(key_cmd);
  std::string key_class_name = "general";
  CLI::App* key_rotate = leaf(
      key_cmd, "rotate",
      Tr("Make the next epoch of a class key and re-wrap every case key under it (resumable)"));
  key_rotate->add_option("--class", key_class_name, Tr("general or clinical"))
      ->check(CLI::IsMember({"general", "clinical"}));
  CLI::App* key_status =
      leaf(key_cmd, "status", Tr("Epochs per class, what still uses them, and who holds them"));
  CLI::App* key_retire =
      leaf(key_cmd, "retire",
           Tr("Delete old epochs nothing uses any more, on the server and on every device"));
  key_retire->add_option("--class", key_class_name, Tr("general or clinical"))
      ->check(CLI::IsMember({"general", "clinical"}));

  bool backup_secret = false;
  CLI::App* key_backup =
      leaf(key_cmd, "backup-key",
           Tr("The unit backup key: a token for `teduh-server backup-key`, and with --secret the "
              "secret key a restore asks for"));
  key_backup->add_flag("--secret", backup_secret,
                       Tr("Also print the backup secret key (keep it like the unit root key)"));
  unsigned kit_shares = 5, kit_threshold = 3;
  std::string kit_pages;
  CLI::App* key_kit =
      leaf(key_cmd, "recovery-kit",
           Tr("Split the unit root key into shares for trusted people: any threshold of them make "
              "a new admin device if every admin laptop is lost"));
  key_kit->add_option("--shares", kit_shares, Tr("Shares to make (at most 16)"))
      ->check(CLI::Range(2, 16));
  key_kit->add_option("--threshold", kit_threshold, Tr("Shares that rebuild the key (at least 2)"))
      ->check(CLI::Range(2, 16));
  key_kit->add_option("--pages", kit_pages,
                      Tr("Also write one printable page per share into this new folder (print "
                         "them, then delete the folder)"));
  CLI::App* backup_cmd =
      app.add_subcommand("backup", Tr("Server backups (admin)"))->require_subcommand(1);
  add_globals(backup_cmd);
  std::string backup_file;
  CLI::App* backup_open =
      leaf(backup_cmd, "open",
           Tr("Open a server backup file with the unit backup key and check it whole"));
  backup_open->add_option("file", backup_file, Tr("Backup file"))->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::string msg = e.what();
    if (g.json) {
      std::cout << json{{"error", {{"code", "usage"}, {"message", msg}}}}.dump() << "\n";
    }
    std::cerr << "teduh: " << TrF("{} (see teduh --help)", msg) << "\n";
    return 2;
  }
  if (auto ec = teduh::crypto::Init()) {
    return Report(g, teduh::core::Fail(ec, Tr("the crypto library could not start")));
  }
  teduh::core::SilenceProtobufLog();

  try {
    if (init->parsed()) {
      auto pass = teduh::core::ReadPassphrase(Tr("New passphrase for this device: "), true);
      if (!pass) return Report(g, pass.error());
      auto opts = Options(g);
      if (init->count("--max-failed-unlocks") > 0) opts.max_failed_unlocks = max_failed;
      opts.label = label;
      std::vector<teduh::core::RecoveryShare> shares;
      if (recover) {
        auto read = ReadRecoveryShares();
        if (!read) return Report(g, read.error());
        shares = std::move(*read);
      }
      auto dev = recover ? Device::Recover(g.home, server, code, shares, *pass, std::move(opts))
                         : Device::Enroll(g.home, server, code, *pass, std::move(opts));
      shares.clear();  // each share's guarded memory is wiped
      if (!dev) return Report(g, dev.error());
      if (recover) {
        auto info = (*dev)->info();
        return Emit(g, DeviceJson(info),
                    TrF("Recovered: device {} is an admin device of {} holding the unit root "
                        "key.\nRun teduh sync now: it opens the unit's class keys kept for "
                        "recovery.\n",
                        teduh::core::ToHex(info.device_id), info.unit_name));
      }
      auto info = (*dev)->info();
      std::string human = TrF("Enrolled device {} as {} ({})", teduh::core::ToHex(info.device_id),
                              info.user, info.role) +
                          " — " + TrF("state: {}", info.state) + "\n" +
                          TrF("Device fingerprint: {}  (the admin compares it before approving)\n",
                              info.fingerprint);
      return Emit(g, DeviceJson(info), human);
    }

    if (examples->parsed()) {
      // `teduh help`: the common tasks of DOMAIN-REPORT §8, one command each
      // (po/id.po has the Indonesian, with the Indonesian codes in the commands).
      std::cout << Tr(
          "Examples for everyday work (CASE, REF, TASK: an id or its prefix):\n"
          "\n"
          "Before leaving for a visit: take the cases assigned to you\n"
          "  teduh sync\n"
          "A new case in the field, with channel and risk level\n"
          "  teduh case new --set channel=social_media --set risk_level=high --set "
          "risk_rationale=\"...\"\n"
          "Record the reporter or the victim (full identity once; lists show initials)\n"
          "  teduh person add CASE --role victim --set name=\"...\" --set is_child=yes\n"
          "Violence types, needs, route\n"
          "  teduh case set CASE --set violence_types=physical,psychological --set "
          "needs=medical,safe_house --set route=legal\n"
          "Log a contact attempt and the visit note in one go\n"
          "  teduh visit CASE --outcome reached --note \"...\"\n"
          "Your deadlines (overdue first), and mark one done\n"
          "  teduh task list --mine --due\n"
          "  teduh task done TASK\n"
          "A counselling note (only counsellors and psychologists can read it)\n"
          "  teduh note add CASE --kind counselling --text \"...\"\n"
          "A referral with the victim's consent and what it discloses\n"
          "  teduh referral add CASE --agency RSUD --service MEDICAL --consent --disclose "
          "name,address --accompanied\n"
          "  teduh referral check REF; teduh referral sign REF (supervisor); teduh referral send "
          "REF\n"
          "What has not been sent yet, before handing the device over\n"
          "  teduh status\n"
          "Someone is coming: wipe every key from memory now\n"
          "  teduh lock\n"
          "Office: conflicts waiting for a decision\n"
          "  teduh conflict list; teduh conflict show ID; teduh conflict resolve ID --take mine\n"
          "An assessment: the risk class and needs (the deadlines follow at once)\n"
          "  teduh assessment add CASE --risk high --needs medical,safe_house --rationale \"...\" "
          "--safety-plan \"...\"\n"
          "A service delivered (accompaniment with its kind)\n"
          "  teduh service add CASE --service accompaniment --subtype legal --note \"...\"\n"
          "  teduh service add CASE --service shelter   (the 14-day stay starts)\n"
          "The court's verdict: a home visit a month for 3 months\n"
          "  teduh case set CASE --set verdict_at=2025-06-30\n"
          "Office: close a case with a reason and the outcome checklist\n"
          "  teduh case set CASE --set stage=terminasi --set closure_reason=resolved --set "
          "closure_checklist=safe,needs_met,no_repeat_violence\n"
          "Office: reopen a case when violence recurs (a new episode)\n"
          "  teduh case reopen CASE --reason repeat_violence --note \"...\"\n"
          "Office: the unit's report, on an office device or on the server\n"
          "  teduh report --from 2025-01-01 --to 2025-12-31 --by month,violence_type,region\n"
          "  teduh-server report --data DIR --from 2025-01-01 --to 2025-12-31 --by "
          "month,violence_type,region\n");
      return 0;
    }
    if (lock->parsed()) {
      auto r = teduh::cli::LockRunning(g.home, std::chrono::seconds(15));
      if (!r) return Report(g, r.error());
      json j{{"locked", true}, {"was_unlocked", r->was_unlocked}};
      if (r->was_unlocked) j["pid"] = r->pid;
      return Emit(g, j,
                  r->was_unlocked ? TrF("Locked: the teduh command using this device (process {}) "
                                        "wiped its keys and ended. Nothing saved is lost.\n",
                                        r->pid)
                                  : Tr("Locked: no teduh command was using this device; its keys "
                                       "are in memory only while a command runs.\n"));
    }

    // One command at a time on a device; `teduh lock` reaches this one.
    std::unique_ptr<teduh::cli::Session> session;
    if (std::filesystem::is_directory(g.home)) {
      auto s = teduh::cli::Session::Acquire(g.home, std::chrono::seconds(30));
      if (!s) return Report(g, s.error());
      session = std::move(*s);
    }
    auto dev = OpenDevice(g);
    if (!dev) return Report(g, dev.error());
    Device& d = **dev;
    g.zone = d.info().time_zone;
    std::unique_ptr<teduh::cli::Session::Guard> guard;
    if (session) {
      guard = session->GuardDevice(&d, [&g] {
        // The keys are wiped. If the command already printed its result it
        // ends normally; otherwise it ends now, with this one.
        {
          std::lock_guard out(g_output_mu);
          if (g_output_done) return;
        }
        const int rc = Report(
            g, teduh::core::Fail(errc::locked, Tr("locked with teduh lock: every key was wiped "
                                                  "from memory; nothing saved is lost")));
        std::cout.flush();
        std::cerr.flush();
        std::_Exit(rc);
      });
    }

    if (passphrase_change->parsed()) {
      auto fresh =
          teduh::core::ReadPassphraseFrom("TEDUH_NEW_PASSPHRASE", Tr("New passphrase: "), true);
      if (!fresh) return Report(g, fresh.error());
      if (auto r = d.ChangePassphrase(*fresh); !r) return Report(g, r.error());
      return Emit(g, json{{"device_id", teduh::core::ToHex(d.info().device_id)}, {"changed", true}},
                  Tr("Passphrase changed. The old one no longer opens this device.\n"));
    }
    if (store_check->parsed()) {
      auto check = d.CheckStore();
      if (!check) return Report(g, check.error());
      json rows = json::array();
      std::string human;
      for (const auto& row : check->rows) {
        rows.push_back({{"table", row.table},
                        {"record_id", teduh::core::ToHex(row.record_id)},
                        {"field", row.field},
                        {"device_seq", row.device_seq}});
        human += TrF("damaged: {}\n", DamagedRowText(row));
      }
      for (const auto& line : check->structure) human += TrF("damaged file: {}\n", line);
      json j{{"intact", check->intact()},
             {"rows_checked", check->rows_checked},
             {"rows", rows},
             {"structure", check->structure}};
      human += check->intact()
                   ? TrF("Local store intact: {} rows checked.\n", check->rows_checked)
                   : Tr("The local store is damaged: nothing damaged is shown as data. The next "
                        "`teduh sync` removes the damaged rows, restores them from the server and "
                        "sends unsent changes again.\n");
      Emit(g, j, human);
      return check->intact() ? 0 : 2;
    }
    if (status->parsed()) {
      auto st = d.Status(status_all);
      if (!st) return Report(g, st.error());
      json j = DeviceJson(st->device);
      j["pending"] = st->counts.pending;
      j["counts"] = {{"pending", st->counts.pending},
                     {"accepted", st->counts.accepted},
                     {"merged", st->counts.merged},
                     {"conflict", st->counts.conflict},
                     {"rejected", st->counts.rejected}};
      j["outbox"] = json::array();
      std::string human = TrF("Device {} ({}, {})", teduh::core::ToHex(st->device.device_id),
                              st->device.role, st->device.label) +
                          " — " + st->device.state + "\n";
      human +=
          TrF("User: {}  Unit: {} ({})  Fingerprint: {}\nKeys: {}{}\n", st->device.user,
              st->device.unit_name.empty() ? st->device.unit_id : st->device.unit_name,
              teduh::core::TimeZoneName(st->device.time_zone), st->device.fingerprint,
              st->keys.empty() ? TrC("keys", "none") : fmt::format("{}", fmt::join(st->keys, ", ")),
              st->holds_unit_root_key ? Tr(" + unit root key") : std::string());
      human += TrF("Outbox: {} pending, {} accepted, {} merged, {} conflict, {} rejected\n",
                   st->counts.pending, st->counts.accepted, st->counts.merged, st->counts.conflict,
                   st->counts.rejected);
      for (const auto& item : st->outbox) {
        const auto& e = item.entry;
        j["outbox"].push_back({{"device_seq", e.device_seq},
                               {"record_id", teduh::core::ToHex(e.record_id)},
                               {"kind", item.kind_short},
                               {"field", item.field_name},
                               {"state", std::string(teduh::core::OutboxStateName(e.state))},
                               {"reason", e.reason},
                               {"detail", e.detail},
                               {"message", item.message},
                               {"updated_at", TimeOrNull(e.updated_ms)}});
        human += fmt::format("  #{} {} {}.{} {}{}{}\n", e.device_seq, OutboxStateText(e.state),
                             item.kind_short, item.field_name,
                             teduh::core::ToHex(e.record_id).substr(0, 8),
                             e.reason.empty() ? "" : " — " + e.reason,
                             item.message.empty() ? "" : ": " + item.message);
      }
      j["last_sync"] = TimeOrNull(st->last_sync_ms);
      j["last_sync_result"] = st->last_sync_result;
      j["clock_offset_ms"] = st->clock_offset_ms;
      j["keys"] = st->keys;
      j["holds_unit_root_key"] = st->holds_unit_root_key;
      j["set_aside"] = st->set_aside;
      if (st->set_aside > 0)
        human += TrF("{} value(s) the restored server no longer has are kept aside here.\n",
                     st->set_aside);
      human +=
          TrF("Last sync: {}{}\n",
              st->last_sync_ms > 0 ? LocalTime(g, st->last_sync_ms) : TrC("last sync", "never"),
              st->last_sync_result.empty() ? "" : " — " + st->last_sync_result);
      return Emit(g, j, human);
    }

    if (sync->parsed()) {
      auto report = d.Sync(
          [&](const teduh::core::SyncProgress& p) {
            if (p.phase == "pushing") {
              std::cerr << TrF("sync: pushing {}/{}\n", p.pushed, p.to_push);
            } else if (p.phase == "pulling") {
              std::cerr << TrF("sync: pulling ({} received)\n", p.pulled);
            } else if (p.phase == "connecting") {
              std::cerr << Tr("sync: connecting\n");
            }
          },
          push_only);
      if (!report) return Report(g, report.error());
      auto st = d.Status();
      std::uint64_t pending = st ? st->counts.pending : 0;
      json j{{"pushed", report->pushed},
             {"accepted", report->accepted},
             {"merged", report->merged},
             {"conflict", report->conflict},
             {"rejected", report->rejected},
             {"pulled", report->pulled},
             {"deferred", report->deferred},
             {"grants_added", report->grants_added},
             {"bad_grants", report->bad_grants},
             {"shredded", report->shredded},
             {"evicted", report->evicted},
             {"evictions_kept", report->evictions_kept},
             {"rekeyed", report->rekeyed},
             {"resealed", report->resealed},
             {"renumbered", report->renumbered},
             {"held_back", report->held_back},
             {"server_disk_full", report->server_disk_full},
             {"set_aside", report->set_aside},
             {"sealed_verified", report->verified},
             {"sealed_not_for_this_device", report->not_for_this_device},
             {"sealed_unreadable", report->unreadable},
             {"store_damaged_rows", report->store_damaged_rows},
             {"store_unsendable", report->store_unsendable},
             {"store_damage_left", report->store_damage_left},
             {"repairs_offered", report->repairs_offered},
             {"repaired_on_server", report->repaired_on_server},
             {"reset", report->reset},
             {"state", report->state},
             {"pending", pending},
             {"clock_offset_ms", report->clock_offset_ms}};
      std::string human =
          TrF("Synced: {} sent ({} accepted, {} merged, {} conflict, {} rejected), {} received{}\n",
              report->pushed, report->accepted, report->merged, report->conflict, report->rejected,
              report->pulled,
              report->grants_added ? TrF(", {} new key(s)", report->grants_added) : std::string());
      if (report->rejected > 0) human += Tr("Some changes were rejected: see `teduh status`.\n");
      if (report->renumbered > 0) {
        human +=
            TrF("{} edit(s) made after this device's folder was restored from an earlier copy were "
                "numbered again and sent.\n",
                report->renumbered);
      }
      if (report->server_disk_full) {
        human += TrF(
            "The server's disk is full: it saved none of this device's changes. {} change(s) are "
            "kept here and sent at a later sync; tell the unit's IT admin.\n",
            pending);
      }
      if (report->held_back > 0) {
        human +=
            TrF("The server's storage limit for a day is reached: {} change(s) and the rest of the "
                "outbox are kept on this device and sent at a later sync.\n",
                report->held_back);
      }
      if (report->set_aside > 0) {
        human +=
            TrF("The server was restored and no longer has {} value(s) this device held: they are "
                "kept aside on this device (teduh status counts them). Tell your admin.\n",
                report->set_aside);
      }
      if (report->unreadable > 0) {
        human += TrF(
            "Warning: {} received sealed value(s) did not verify (damaged or altered); they are "
            "stored and shown as unreadable. Tell your admin.\n",
            report->unreadable);
      }
      if (report->bad_grants > 0) {
        human += Tr("Warning: a key grant did not verify and was ignored; tell your admin.\n");
      }
      if (report->store_damaged_rows > 0) {
        human += TrF(
            "This device's storage had {} damaged row(s): they were removed and restored from the "
            "server; unsent changes among them were sent again.\n",
            report->store_damaged_rows);
      }
      if (report->store_unsendable > 0) {
        human +=
            TrF("Warning: {} unsent change(s) were damaged on this device and cannot be sent: "
                "`teduh status` lists them; enter them again.\n",
                report->store_unsendable);
      }
      if (report->repaired_on_server > 0) {
        human +=
            TrF("The server had found {} value(s) damaged in its storage: this device's copies "
                "repaired them (the server checked each against what it had stored).\n",
                report->repaired_on_server);
      }
      if (!report->store_damage_left.empty()) {
        human += TrF(
            "Warning: this device's store file is still damaged ({}). Tell your admin: the device "
            "should be enrolled again once its changes are sent.\n",
            report->store_damage_left.front());
      }
      return Emit(g, j, human);
    }

    if (case_new->parsed()) {
      auto id = d.NewCase(sets);
      if (!id) return Report(g, id.error());
      std::string number;
      if (auto view = d.ShowCase(teduh::core::ToHex(*id), g.lang)) {
        for (const auto& f : view->fields) {
          if (f.name == "case_number" && f.value.is_string()) number = f.value.get<std::string>();
        }
      }
      json j{{"case_id", teduh::core::ToHex(*id)}, {"case_number", number}};
      return Emit(g, j, TrF("New case {} ({})\n", number, teduh::core::ToHex(*id)));
    }
    if (case_set->parsed()) {
      auto id = d.ResolveCase(case_ref);
      if (!id) return Report(g, id.error());
      if (auto r = d.SetCaseFields(teduh::core::ToHex(*id), sets); !r) return Report(g, r.error());
      json j{{"case_id", teduh::core::ToHex(*id)}, {"updated", sets.size()}};
      return Emit(g, j, TrF("Case {} updated\n", teduh::core::ToHex(*id).substr(0, 8)));
    }
    if (case_list->parsed()) {
      auto cases = d.ListCases();
      if (!cases) return Report(g, cases.error());
      json arr = json::array();
      std::string human;
      for (const auto& c : *cases) {
        arr.push_back(
            {{"case_id", teduh::core::ToHex(c.case_id)},
             {"case_number", c.case_number},
             {"stage", c.stage},
             {"risk_level", c.risk_level},
             {"category", c.category},
             {"violence_types", c.violence_types},
             {"received_at", c.received_at},
             {"victim_initials", c.victim_initials ? json(*c.victim_initials) : json(nullptr)},
             {"assigned_pendamping", c.assigned_pendamping},
             {"assigned_konselor", c.assigned_konselor},
             {"assigned_psikolog", c.assigned_psikolog},
             {"pending", c.pending}});
        human +=
            fmt::format("{}  {:<24} {:<13} {:<7} {}{}\n",
                        teduh::core::ToHex(c.case_id).substr(0, 8), c.case_number, c.stage,
                        c.risk_level, c.victim_initials.value_or("-"), c.pending ? "  (*)" : "");
      }
      if (cases->empty()) human = Tr("No cases on this device.\n");
      return Emit(g, json{{"cases", arr}}, human);
    }
    if (case_show->parsed()) {
      // The full view, with identities, leaves a trace that syncs.
      auto view = d.ShowCase(case_ref, g.lang, teduh::core::ViewLog::kRecord);
      if (!view) return Report(g, view.error());
      json j;
      j["case_id"] = teduh::core::ToHex(view->case_id);
      json values, unreadable;
      FieldsJson(view->fields, values, unreadable);
      j["fields"] = values;
      j["unreadable"] = unreadable;
      j["persons"] = json::array();
      std::string human = TrF("Case {}\n", teduh::core::ToHex(view->case_id));
      human += FieldsText(view->fields, "  ");
      for (const auto& p : view->persons) {
        json pv, pu;
        FieldsJson(p.fields, pv, pu);
        j["persons"].push_back(
            {{"person_id", teduh::core::ToHex(p.record_id)}, {"fields", pv}, {"unreadable", pu}});
        human +=
            fmt::format("\n  {} {}\n", Tr("Person"), teduh::core::ToHex(p.record_id).substr(0, 8));
        human += FieldsText(p.fields, "    ");
      }
      j["notes"] = json::array();
      for (const auto& n : view->notes) {
        bool ok = n.readability == teduh::core::Readability::kReadable;
        json nj{{"note_id", teduh::core::ToHex(n.note_id)},
                {"kind", n.kind},
                {"author", n.author},
                {"written_at", n.written_at},
                {"clinical", n.clinical},
                {"pending", n.pending},
                {"text", ok ? json(n.text) : json(nullptr)}};
        if (!ok) nj["unreadable"] = std::string(teduh::core::ReadabilityName(n.readability));
        j["notes"].push_back(nj);
        human += fmt::format("\n  {} {} {} — {}\n    {}\n", Tr("Note"), n.kind,
                             LocalTime(g, n.written_at * 1000), n.author,
                             ok ? n.text : Unreadable(n.readability));
      }
      j["assessments"] = json::array();
      for (const auto& a : view->assessments) {
        auto text = [&](const std::optional<std::string>& t) {
          return t ? json(*t) : json(nullptr);
        };
        json aj{{"assessment_id", teduh::core::ToHex(a.assessment_id)},
                {"risk_level", a.risk_level},
                {"needs", a.needs},
                {"assessed_by", a.assessed_by},
                {"assessed_at", TimeOrNull(a.assessed_at * 1000)},
                {"pending", a.pending},
                {"rationale", text(a.rationale)},
                {"safety_plan", text(a.safety_plan)},
                {"kind", a.kind.empty() ? json(nullptr) : json(a.kind)},
                {"condition", text(a.condition)},
                {"diagnosis", text(a.diagnosis)},
                {"recommendations", text(a.recommendations)},
                {"corrects", IdOrNull(a.corrects)},
                {"corrected_by", IdOrNull(a.corrected_by)}};
        if (a.readability != teduh::core::Readability::kReadable)
          aj["unreadable"] = std::string(teduh::core::ReadabilityName(a.readability));
        j["assessments"].push_back(aj);
        human += fmt::format("\n  {} {} {} — {} {}{}{}\n", Tr("Assessment"),
                             teduh::core::ToHex(a.assessment_id).substr(0, 8),
                             LocalTime(g, a.assessed_at * 1000), a.assessed_by, a.risk_level,
                             a.needs.empty() ? "" : fmt::format(" ({})", fmt::join(a.needs, ", ")),
                             CorrectionNote(a.corrects, a.corrected_by));
        for (const auto* t :
             {&a.rationale, &a.safety_plan, &a.condition, &a.diagnosis, &a.recommendations})
          if (*t) human += fmt::format("    {}\n", **t);
      }
      j["services"] = json::array();
      for (const auto& sv : view->services) {
        json sj{
            {"service_id", teduh::core::ToHex(sv.service_id)},
            {"service", sv.service},
            {"accompaniment", sv.accompaniment.empty() ? json(nullptr) : json(sv.accompaniment)},
            {"delivered_by", sv.delivered_by},
            {"delivered_at", TimeOrNull(sv.delivered_at * 1000)},
            {"pending", sv.pending},
            {"note", sv.note ? json(*sv.note) : json(nullptr)},
            {"activity", sv.activity.empty() ? json(nullptr) : json(sv.activity)},
            {"corrects", IdOrNull(sv.corrects)},
            {"corrected_by", IdOrNull(sv.corrected_by)}};
        if (sv.readability != teduh::core::Readability::kReadable)
          sj["unreadable"] = std::string(teduh::core::ReadabilityName(sv.readability));
        j["services"].push_back(sj);
        human += fmt::format("\n  {} {} {} — {} {}{}{}{}\n", Tr("Service"),
                             teduh::core::ToHex(sv.service_id).substr(0, 8),
                             LocalTime(g, sv.delivered_at * 1000), sv.delivered_by, sv.service,
                             sv.accompaniment.empty() ? "" : " " + sv.accompaniment,
                             sv.activity.empty() ? "" : " " + sv.activity,
                             CorrectionNote(sv.corrects, sv.corrected_by));
        if (sv.note) human += fmt::format("    {}\n", *sv.note);
      }
      j["accesses"] = json::array();
      human += fmt::format("\n  {}:", Tr("Opened by"));
      for (const auto& a : view->accesses) {
        j["accesses"].push_back({{"viewer", a.viewer},
                                 {"viewed_at", TimeOrNull(a.viewed_at * 1000)},
                                 {"pending", a.pending}});
        human += fmt::format(" {} ({})", a.viewer, LocalTime(g, a.viewed_at * 1000));
      }
      human += "\n";
      return Emit(g, j, human);
    }
    if (case_history->parsed() || person_history->parsed()) {
      const bool of_case = case_history->parsed();
      auto h =
          of_case
              ? d.CaseHistory(case_ref, history_field, g.lang, teduh::core::ViewLog::kRecord)
              : d.PersonHistory(person_ref, history_field, g.lang, teduh::core::ViewLog::kRecord);
      if (!h) return Report(g, h.error());
      json arr = json::array();
      std::string human;
      std::string last_field;
      for (const auto& e : *h) {
        bool ok = e.value.readability == teduh::core::Readability::kReadable;
        json j{{"field", e.field},
               {"version", e.version},
               {"reason", e.reason},
               {"current", e.reason == "current"},
               {"author", e.author},
               {"device_id", teduh::core::ToHex(e.stamp.device)},
               {"stamp", std::to_string(e.stamp.hlc)},
               {"written_at", e.written_ms / 1000},
               {"value", ok ? e.value.value : json(nullptr)}};
        if (!ok) j["unreadable"] = std::string(teduh::core::ReadabilityName(e.value.readability));
        arr.push_back(std::move(j));
        if (e.field != last_field) human += fmt::format("{}:\n", e.value.label);
        last_field = e.field;
        human +=
            fmt::format("  v{} {} {} — {}{}\n", e.version, LocalTime(g, e.written_ms), e.author,
                        ok ? e.value.display : Unreadable(e.value.readability),
                        e.reason == "current" ? "  " + Tr("(current)") : "  (" + e.reason + ")");
      }
      return Emit(g,
                  of_case ? json{{"case", case_ref}, {"history", arr}}
                          : json{{"person", person_ref}, {"history", arr}},
                  human);
    }
    if (case_restore->parsed() || person_restore->parsed()) {
      auto r = case_restore->parsed()
                   ? d.RestoreCaseField(case_ref, history_field, restore_version)
                   : d.RestorePersonField(person_ref, history_field, restore_version);
      if (!r) return Report(g, r.error());
      return Emit(g,
                  json{{"field", history_field}, {"version", restore_version}, {"restored", true}},
                  Tr("Restored as a new edit; it syncs at the next `teduh sync`.\n"));
    }
    if (conflict_list->parsed()) {
      auto list = d.ListConflicts(include_resolved);
      if (!list) return Report(g, list.error());
      json arr = json::array();
      std::string human;
      for (const auto& c : *list) {
        arr.push_back(
            {{"conflict_id", teduh::core::ToHex(c.conflict_id)},
             {"case_id", teduh::core::ToHex(c.case_id)},
             {"record_id", teduh::core::ToHex(c.record_id)},
             {"record_kind", c.record_kind},
             {"field", c.field},
             {"state", c.state},
             {"detected_at", c.detected_ms / 1000},
             {"authors", {c.kept.author, c.other.author}},
             {"kept", {{"author", c.kept.author}, {"written_at", c.kept.written_ms / 1000}}},
             {"other", {{"author", c.other.author}, {"written_at", c.other.written_ms / 1000}}}});
        human +=
            TrF("{}  {}  case {}  {} {}: {} / {}{}\n",
                teduh::core::ToHex(c.conflict_id).substr(0, 8), LocalTime(g, c.detected_ms),
                teduh::core::ToHex(c.case_id).substr(0, 8), c.record_kind, c.field, c.kept.author,
                c.other.author, c.state == "open" ? std::string() : "  " + Tr("(resolved)"));
      }
      if (list->empty()) human = Tr("No open conflicts.\n");
      return Emit(g, json{{"conflicts", arr}}, human);
    }
    if (conflict_show->parsed()) {
      auto c = d.ShowConflict(conflict_ref, g.lang, teduh::core::ViewLog::kRecord);
      if (!c) return Report(g, c.error());
      auto side = [&](const teduh::core::ConflictSideView& s) {
        bool ok = s.value.readability == teduh::core::Readability::kReadable;
        json j{{"author", s.author},
               {"written_at", s.written_ms / 1000},
               {"value", ok ? s.value.value : json(nullptr)}};
        if (!ok) j["unreadable"] = std::string(teduh::core::ReadabilityName(s.value.readability));
        return j;
      };
      auto text = [&](const teduh::core::ConflictSideView& s) {
        return s.value.readability == teduh::core::Readability::kReadable
                   ? s.value.display
                   : Unreadable(s.value.readability);
      };
      json j{{"conflict_id", teduh::core::ToHex(c->conflict_id)},
             {"case_id", teduh::core::ToHex(c->case_id)},
             {"record_id", teduh::core::ToHex(c->record_id)},
             {"record_kind", c->record_kind},
             {"field", c->field},
             {"state", c->state},
             {"detected_at", c->detected_ms / 1000},
             {"kept", side(c->kept)},
             {"other", side(c->other)}};
      if (c->state == "resolved") {
        j["resolved_by"] = c->resolved_by;
        j["resolution"] = c->resolution;
        j["resolved_at"] = c->resolved_ms / 1000;
      }
      std::string human = TrF("Conflict {}", teduh::core::ToHex(c->conflict_id)) + " — " +
                          TrF("case {}, {} {}\n  kept  ({}, {}): {}\n  other ({}, {}): {}\n",
                              teduh::core::ToHex(c->case_id), c->record_kind, c->field,
                              c->kept.author, LocalTime(g, c->kept.written_ms), text(c->kept),
                              c->other.author, LocalTime(g, c->other.written_ms), text(c->other));
      if (c->state == "resolved")
        human += TrF("  resolved by {} ({})\n", c->resolved_by, c->resolution);
      return Emit(g, j, human);
    }
    if (conflict_resolve->parsed()) {
      auto r = d.ResolveConflict(conflict_ref, take, resolve_value);
      if (!r) return Report(g, r.error());
      return Emit(g, json{{"conflict_id", teduh::core::ToHex(*r)}, {"resolved", true}},
                  Tr("Resolved; the choice syncs at the next `teduh sync`.\n"));
    }
    if (person_add->parsed()) {
      auto id = d.AddPerson(case_ref, role, sets);
      if (!id) return Report(g, id.error());
      auto case_id = d.ResolveCase(case_ref);
      json j{{"person_id", teduh::core::ToHex(*id)},
             {"case_id", case_id ? teduh::core::ToHex(*case_id) : ""}};
      return Emit(g, j, TrF("Person {} added\n", teduh::core::ToHex(*id)));
    }
    if (person_set->parsed()) {
      if (auto r = d.SetPersonFields(person_ref, sets); !r) return Report(g, r.error());
      return Emit(g, json{{"person", person_ref}, {"updated", sets.size()}},
                  Tr("Person updated\n"));
    }
    if (visit->parsed()) {
      auto id = d.LogVisit(case_ref, visit_method, visit_outcome, visit_note);
      teduh::crypto::Wipe(visit_note);
      if (!id) return Report(g, id.error());
      return Emit(g, json{{"attempt_id", teduh::core::ToHex(*id)}},
                  TrF("Visit logged ({})\n", teduh::core::ToHex(*id).substr(0, 8)));
    }
    if (assessment_add->parsed()) {
      auto id = d.AddAssessment(case_ref, assess_risk, assess_needs, assess_rationale, assess_plan,
                                {assess_kind, assess_condition, assess_diagnosis,
                                 assess_recommendations, assess_corrects});
      for (std::string* t : {&assess_rationale, &assess_plan, &assess_condition, &assess_diagnosis,
                             &assess_recommendations})
        teduh::crypto::Wipe(*t);
      if (!id) return Report(g, id.error());
      auto case_id = d.ResolveCase(case_ref);
      return Emit(g,
                  json{{"assessment_id", teduh::core::ToHex(*id)},
                       {"case_id", case_id ? teduh::core::ToHex(*case_id) : ""},
                       {"risk_level", assess_risk}},
                  TrF("Assessment {} recorded; the case's risk is now {}\n",
                      teduh::core::ToHex(*id).substr(0, 8), assess_risk));
    }
    if (service_add->parsed()) {
      auto id = d.AddService(case_ref, service_code, service_subtype, service_note,
                             {service_activity, service_corrects});
      teduh::crypto::Wipe(service_note);
      if (!id) return Report(g, id.error());
      return Emit(g, json{{"service_id", teduh::core::ToHex(*id)}},
                  TrF("Service {} recorded\n", teduh::core::ToHex(*id).substr(0, 8)));
    }
    if (case_reopen->parsed()) {
      auto episode = d.ReopenCase(case_ref, reopen_reason, reopen_note);
      teduh::crypto::Wipe(reopen_note);
      if (!episode) return Report(g, episode.error());
      auto case_id = d.ResolveCase(case_ref);
      const std::string hex = case_id ? teduh::core::ToHex(*case_id) : case_ref;
      return Emit(g, json{{"case_id", hex}, {"episode", *episode}, {"stage", "PENGADUAN"}},
                  TrF("Case {} reopened: episode {}, back at the complaint stage\n",
                      hex.substr(0, 8), *episode));
    }
    if (report_cmd->parsed()) {
      std::string why;
      auto period = teduh::core::ParseReportPeriod(report_from, report_to, g.zone, &why);
      if (!period) return Report(g, teduh::core::Fail(errc::invalid_argument, why));
      auto report = d.Report(period->from_s, period->to_s, report_by,
                             teduh::core::TimeZoneOffsetSeconds(g.zone));
      if (!report) return Report(g, report.error());
      auto codes = d.Codes();
      if (!codes) return Report(g, codes.error());
      const auto lang = teduh::core::CurrentLang();
      if (report_format == "csv" && !g.json)
        return Emit(g, json(), teduh::core::ReportToCsv(*report));
      json j = teduh::core::ReportToJson(*report, report_from, report_to, *codes, lang);
      if (report_format == "json" && !g.json) return Emit(g, j, j.dump() + "\n");
      return Emit(g, j, teduh::core::ReportToText(*report, report_from, report_to, *codes, lang));
    }
    if (code_list->parsed()) {
      if (!code_list_name.empty() && !teduh::core::CodeBook::IsList(code_list_name))
        return Report(
            g, teduh::core::Fail(
                   errc::invalid_argument,
                   TrF("unknown code list '{}'; the lists are {}", code_list_name.substr(0, 32),
                       fmt::format("{}", fmt::join(teduh::core::CodeBook::ListNames(), ", ")))));
      auto codes = d.Codes();
      if (!codes) return Report(g, codes.error());
      return Emit(g, teduh::core::CodeListJson(*codes, code_list_name),
                  teduh::core::CodeListText(*codes, code_list_name, g.lang));
    }
    if (task_list->parsed()) {
      auto tasks = d.ListTasks(task_due, task_mine);
      if (!tasks) return Report(g, tasks.error());
      json arr = json::array();
      std::string human;
      for (const auto& t : *tasks) {
        arr.push_back(TaskJson(t));
        human += fmt::format(
            "{}  {}  {:<11} {}  {}{}\n", teduh::core::ToHex(t.task_id).substr(0, 8),
            LocalTime(g, t.due_at * 1000),
            t.cycles > 0 ? fmt::format("{} {}/{}", t.kind, t.cycle, t.cycles) : t.kind,
            t.case_number.empty() ? teduh::core::ToHex(t.case_id).substr(0, 8) : t.case_number,
            t.assigned_pendamping, t.overdue ? "  " + Tr("OVERDUE") : std::string());
      }
      return Emit(g, json{{"tasks", arr}}, human.empty() ? Tr("No open deadlines.\n") : human);
    }
    if (task_done->parsed()) {
      auto t = d.CompleteTask(task_ref);
      if (!t) return Report(g, t.error());
      json j = TaskJson(*t);
      j["done"] = true;
      return Emit(g, j, TrF("Task {} done\n", teduh::core::ToHex(t->task_id)));
    }
    if (referral_add->parsed()) {
      auto id = d.AddReferral(case_ref, ref_agency, ref_service, ref_consent, ref_disclose,
                              ref_accompanied);
      if (!id) return Report(g, id.error());
      return Emit(g, json{{"referral_id", teduh::core::ToHex(*id)}, {"status", "draft"}},
                  TrF("Referral {} drafted\n", teduh::core::ToHex(*id)));
    }
    if (referral_list->parsed()) {
      auto list = d.ListReferrals(case_ref);
      if (!list) return Report(g, list.error());
      json arr = json::array();
      std::string human;
      for (const auto& r : *list) {
        arr.push_back(ReferralJson(r));
        human += fmt::format("{}  {} {} — {}{}{}\n", teduh::core::ToHex(r.referral_id).substr(0, 8),
                             r.agency, r.service, r.status,
                             r.consent ? std::string() : Tr(", no consent yet"),
                             r.accompanied ? Tr(", accompanied") : std::string());
      }
      return Emit(g, json{{"referrals", arr}}, human.empty() ? std::string("-\n") : human);
    }
    for (CLI::App* step : referral_steps) {
      if (!step->parsed()) continue;
      auto r = d.AdvanceReferral(ref_id, step->get_name());
      if (!r) return Report(g, r.error());
      return Emit(g, ReferralJson(*r),
                  TrF("Referral {}: {}\n", teduh::core::ToHex(r->referral_id), r->status));
    }
    if (note_add->parsed()) {
      auto id = d.AddNote(case_ref, text, kind);
      teduh::crypto::Wipe(text);
      if (!id) return Report(g, id.error());
      auto case_id = d.ResolveCase(case_ref);
      json j{{"note_id", teduh::core::ToHex(*id)},
             {"case_id", case_id ? teduh::core::ToHex(*case_id) : ""}};
      return Emit(g, j, TrF("Note {} added\n", teduh::core::ToHex(*id)));
    }
    if (device_list->parsed()) {
      auto list = d.ListRemoteDevices();
      if (!list) return Report(g, list.error());
      json arr = json::array();
      std::string human;
      for (const auto& r : *list) {
        arr.push_back(RemoteDeviceJson(r));
        human += fmt::format("{}  {:<10} {:<12} {:<8} {}  {}{}\n", teduh::core::ToHex(r.device_id),
                             r.role, r.user, r.state, r.fingerprint, r.label,
                             ErasureNote(g, r) + RootKeyNote(r) + RestoreNote(r));
      }
      return Emit(g, json{{"devices", arr}}, human);
    }
    if (user_offboard->parsed()) {
      auto r = d.OffboardUser(offboard_user, reassign_to);
      if (!r) return Report(g, r.error());
      return Emit(g,
                  json{{"user", offboard_user},
                       {"reassigned_to", reassign_to},
                       {"devices_revoked", r->devices_revoked},
                       {"cases_reassigned", r->cases_reassigned}},
                  TrF("{} offboarded: {} devices revoked (each erases itself when it next "
                      "connects), {} cases now assigned to {}.\n",
                      offboard_user, r->devices_revoked, r->cases_reassigned, reassign_to));
    }
    if (case_assign->parsed()) {
      auto r = d.AssignCase(case_ref, assign_pendamping, assign_konselor, assign_psikolog);
      if (!r) return Report(g, r.error());
      json j{{"case_id", teduh::core::ToHex(*r)}};
      if (!assign_pendamping.empty()) j["pendamping"] = assign_pendamping;
      if (!assign_konselor.empty()) j["konselor"] = assign_konselor;
      if (!assign_psikolog.empty()) j["psikolog"] = assign_psikolog;
      return Emit(g, j,
                  TrF("Case {} assigned. It reaches the new workers' devices when this "
                      "device syncs; the previous worker's devices send their edits, then "
                      "delete it.\n",
                      teduh::core::ToHex(*r)));
    }
    if (case_shred->parsed()) {
      auto r = d.ShredCase(case_ref);
      if (!r) return Report(g, r.error());
      json j{{"case_id", teduh::core::ToHex(r->case_id)},
             {"state", r->state},
             {"requested_by", r->requested_by}};
      if (r->state == "shredded") j["purged_values"] = r->purged_values;
      return Emit(g, j,
                  r->state == "shredded"
                      ? TrF("Case {} shredded on {}'s request: {} values purged from the "
                            "server. Every device deletes it at its next sync.\n",
                            teduh::core::ToHex(r->case_id), r->requested_by, r->purged_values)
                      : TrF("Shredding of case {} requested. The admin device carries it "
                            "out: teduh case shred {} there.\n",
                            teduh::core::ToHex(r->case_id), teduh::core::ToHex(r->case_id)));
    }
    if (case_rekey->parsed()) {
      if (rekey_held_by.empty() && !rekey_all)
        return Report(g, teduh::core::Fail(teduh::core::errc::invalid_argument,
                                           Tr("name the lost device (--held-by DEVICE) or --all")));
      std::size_t shown = 0;
      auto r = d.RekeyCases(rekey_held_by, rekey_all, [&](std::size_t done, std::size_t total) {
        if (total == 0 || done * 10 / total == shown) return;
        shown = done * 10 / total;
        std::cerr << TrF("case rekey: {}/{} cases\n", done, total);
      });
      if (!r) return Report(g, r.error());
      json j{{"cases", r->cases},
             {"skipped", r->skipped},
             {"values", r->values},
             {"keys_dropped", r->keys_dropped},
             {"bytes_sent", r->bytes_sent}};
      if (!rekey_all) j["held_by"] = teduh::core::ToHex(r->held_by);
      return Emit(
          g, j,
          TrF("{} cases re-keyed ({} sealed values re-encrypted, {} old case "
              "keys deleted){}. Devices receive the new keys at their next "
              "sync.\n",
              r->cases, r->values, r->keys_dropped,
              r->skipped ? TrF("; {} cases had nothing sealed", r->skipped) : std::string()));
    }
    if (key_rotate->parsed()) {
      const auto cls =
          key_class_name == "clinical" ? teduh::ACCESS_CLASS_CLINICAL : teduh::ACCESS_CLASS_GENERAL;
      std::size_t shown = 0;
      auto r = d.RotateClassKey(cls, [&](std::size_t done, std::size_t total) {
        // A line per tenth, so a long rotation shows it is moving.
        if (total == 0 || done * 10 / total == shown) return;
        shown = done * 10 / total;
        std::cerr << TrF("key rotate: {}/{} case keys sent\n", done, total);
      });
      if (!r) return Report(g, r.error());
      json j{{"class", teduh::core::ClassName(r->key_class)},
             {"epoch", r->epoch},
             {"rewrapped", r->rewrapped},
             {"devices", r->devices},
             {"resumed", r->resumed},
             {"bytes_sent", r->bytes_sent}};
      return Emit(g, j,
                  TrF("{} key rotated to epoch {}{}: {} case keys re-wrapped, granted to {} "
                      "devices. Devices receive it at their next sync.\n",
                      teduh::core::ClassName(r->key_class), r->epoch,
                      r->resumed ? Tr(" (an interrupted rotation, finished)") : std::string(),
                      r->rewrapped, r->devices));
    }
    if (key_kit->parsed()) return RecoveryKitCommand(g, d, kit_shares, kit_threshold, kit_pages);
    if (key_backup->parsed()) {
      auto r = d.BackupKey(backup_secret);
      if (!r) return Report(g, r.error());
      json j{{"token", r->token}};
      std::string human =
          TrF("On the server host: teduh-server backup-key --data DIR {}\n", r->token);
      if (backup_secret) {
        j["secret"] = r->secret;
        human += TrF(
            "Backup secret key (a restore asks for it; whoever holds it can read every backup):\n"
            "{}\n",
            r->secret);
      }
      auto rc = Emit(g, j, human);
      // Every copy of the secret this command made (the printed text is the user's).
      teduh::crypto::Wipe(r->secret);
      teduh::crypto::Wipe(human);
      if (backup_secret) teduh::crypto::Wipe(j["secret"].get_ref<std::string&>());
      return rc;
    }
    if (backup_open->parsed()) {
      auto r = d.OpenBackup(backup_file);
      if (!r) return Report(g, r.error());
      json j{{"unit_id", r->unit_id},
             {"generation", std::to_string(r->generation)},
             {"created_at", IsoTime(r->created_ms)},
             {"audit_entries", r->audit_entries},
             {"store_bytes", r->store_bytes},
             {"devices", r->devices},
             {"records", r->records},
             {"values", r->values},
             {"intact", true}};
      return Emit(g, j,
                  TrF("Backup intact: taken {}, {} records, {} field values, {} devices, {} audit "
                      "entries.\n",
                      IsoTime(r->created_ms), r->records, r->values, r->devices, r->audit_entries));
    }
    if (key_retire->parsed()) {
      const auto cls =
          key_class_name == "clinical" ? teduh::ACCESS_CLASS_CLINICAL : teduh::ACCESS_CLASS_GENERAL;
      auto r = d.RetireEpochs(cls);
      if (!r) return Report(g, r.error());
      return Emit(g, json{{"class", key_class_name}, {"retired", *r}},
                  r->empty() ? Tr("Nothing to retire: see teduh key status.\n")
                             : TrF("Retired epoch(s) {} of the {} key.\n",
                                   fmt::format("{}", fmt::join(*r, ", ")), key_class_name));
    }
    if (key_status->parsed()) {
      auto st = d.KeyStatus();
      if (!st) return Report(g, st.error());
      json classes = json::array();
      std::string human;
      for (const auto& c : *st) {
        json epochs = json::array();
        human +=
            TrF("{}: current epoch {}\n", teduh::core::ClassName(c.key_class), c.current_epoch);
        for (const auto& e : c.epochs) {
          epochs.push_back({{"epoch", e.epoch},
                            {"case_keys", e.case_keys},
                            {"devices_granted", e.devices_granted},
                            {"devices_acknowledged", e.devices_acked}});
          human += TrF("  epoch {:<3} {:>8} case keys  {} devices granted, {} acknowledged\n",
                       e.epoch, e.case_keys, e.devices_granted, e.devices_acked);
        }
        json devices = json::array();
        for (const auto& dv : c.devices) {
          devices.push_back({{"device_id", teduh::core::ToHex(dv.device_id)},
                             {"user", dv.user},
                             {"role", dv.role},
                             {"acknowledged_epoch", dv.acked_epoch}});
          if (dv.acked_epoch < c.current_epoch)
            human += TrF("  {} ({}, {}) holds epoch {} only: it receives {} at its next sync\n",
                         teduh::core::ToHex(dv.device_id).substr(0, 8), dv.user, dv.role,
                         dv.acked_epoch, c.current_epoch);
        }
        classes.push_back({{"class", teduh::core::ClassName(c.key_class)},
                           {"current_epoch", c.current_epoch},
                           {"epochs", epochs},
                           {"devices", devices}});
      }
      return Emit(g, json{{"classes", classes}}, human);
    }
    if (device_revoke->parsed()) {
      auto r = d.RevokeDevice(device_ref);
      if (!r) return Report(g, r.error());
      return Emit(g, RemoteDeviceJson(*r),
                  TrF("Revoked {} ({}, {}){}.\nThe server refuses it from now on. When it "
                      "next connects it erases its keys and cases and sends a signed "
                      "receipt (see `teduh device list`).\n",
                      teduh::core::ToHex(r->device_id), r->user, r->role, ErasureNote(g, *r)));
    }
    if (device_approve->parsed()) {
      auto r = d.ApproveDevice(device_ref, approve_admin, approve_fingerprint);
      if (!r) return Report(g, r.error());
      json j{{"device_id", teduh::core::ToHex(r->device_id)},
             {"user", r->user},
             {"role", r->role},
             {"state", r->state},
             {"fingerprint", r->fingerprint}};
      j["root_key"] = r->root_key.empty() ? json(nullptr) : json(r->root_key);
      return Emit(g, j,
                  TrF("Approved {} ({}, {})", teduh::core::ToHex(r->device_id), r->user, r->role) +
                      " — " + TrF("fingerprint {}\n", r->fingerprint) +
                      (approve_admin ? Tr("It holds the unit root key after its next sync.\n")
                                     : std::string()));
    }
  } catch (const std::exception&) {
    return Report(g, teduh::core::Fail(errc::store_failed, Tr("internal error")));
  }
  return Report(g, teduh::core::Fail(errc::invalid_argument, Tr("no command given")));
}
