// Design notes — Device (see device.h for the contract).
//
// State machine of an enrolled device (DeviceInfo::state, from the server):
//
//   (none) ──Enroll──► pending ──Sync sees Welcome──► active
//                        │                              │
//                        └──── Sync sees DEVICE_REVOKED ┴──► revoked
//   Bootstrap admin: (none) ──Enroll──► active (holds the unit root key).
//
// Keys: class keys K[class][epoch] live in the vault (from grants, or made by
// the bootstrap admin). A case key CK[case][class][version] is random, made
// by the device that first needs it, wrapped under the newest K[class] it
// holds and stored as a teduh.keys.v1.CaseKey child record of the case, in
// the same transaction as the first value sealed under it. Unwrapped case
// keys are cached in case_keys_ (guarded memory, wiped by Lock()).
//
// Invariants:
//  1. No secret leaves the vault except into crypto::SecureBuffer (case_keys_,
//     a clone of the signing key for one handshake).
//  2. Every edit of a call is one LocalStore::Edit transaction: the record
//     fields, any new CaseKey record and their outbox entries commit together.
//  3. A sealed value is written only with the stamp bound into its AD: the
//     stamp is taken (EditTxn::NextStamp) before SealField.
//  4. A value that does not open is reported (Readability::kIntegrity or
//     kNoKey), never rendered as data.
//  5. device.json holds no secret; the unit root key used for verification
//     is the pinned copy inside the vault.
//  6. mu_ guards every member; network waits in Sync() run without it.
#include "teduh/core/device.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <ctime>
#include <fstream>
#include <limits>
#include <set>
#include <thread>
#include <utility>

#include "device_internal.h"
#include "teduh/case/v1/case.pb.h"
#include "teduh/core/deadlines.h"
#include "teduh/core/enrollment_code.h"
#include "teduh/core/frame_codec.h"
#include "teduh/core/i18n.h"
#include "teduh/core/roles.h"
#include "teduh/core/schema.h"
#include "teduh/core/sealing.h"
#include "teduh/core/sync_client.h"
#include "teduh/keys/v1/keys.pb.h"

namespace teduh::core {

namespace pb = teduh::sync::v1;
namespace cw = teduh::casework::v1;
using nlohmann::json;

// ---- Helpers -------------------------------------------------------------------

class Device::OffsetEnv final : public Env {
 public:
  explicit OffsetEnv(Env& base) : base_(base) {}
  std::int64_t NowMs() override { return base_.NowMs() + offset_.load(); }
  std::int64_t BaseNowMs() { return base_.NowMs(); }
  void set_offset(std::int64_t ms) { offset_.store(ms); }
  std::int64_t offset() const { return offset_.load(); }

 private:
  Env& base_;
  std::atomic<std::int64_t> offset_{0};
};

struct Device::Meta {
  Id device_id{};
  std::string state;
  std::string user;
  Role role = Role::ROLE_UNSPECIFIED;
  std::string unit_id, unit_name, server_url, label;
  TimeZone time_zone = TimeZone::kWib;  // the unit's, from the server's Welcome
  CodeBook codes;                       // the defaults and the unit's codes, from the Welcome
  std::string server_id;                // 16 raw bytes
  std::string unit_root_pk;             // 32 raw bytes (display; the vault copy is used to verify)
  std::string sign_pk, box_pk;
  std::uint32_t max_failed_unlocks = 0;

  json ToJson() const {
    return json{{"format", 1},
                {"device_id", ToHex(device_id)},
                {"state", state},
                {"user", user},
                {"role", RoleName(role)},
                {"unit_id", unit_id},
                {"unit_name", unit_name},
                {"time_zone", std::string(TimeZoneName(time_zone))},
                {"server_url", server_url},
                {"label", label},
                {"server_id", ToHex(AsSpan(server_id))},
                {"unit_root_pk", ToHex(AsSpan(unit_root_pk))},
                {"sign_pk", ToHex(AsSpan(sign_pk))},
                {"box_pk", ToHex(AsSpan(box_pk))},
                {"max_failed_unlocks", max_failed_unlocks},
                {"codes", CodesToJson()}};
  }
  json CodesToJson() const {
    json out = json::array();
    for (const CodeEntry& e : codes.UnitCodes()) out.push_back(CodeEntryJson(e));
    return out;
  }
  static Outcome<Meta> FromJson(const json& j) {
    try {
      Meta m;
      auto id = IdFromHex(j.at("device_id").get<std::string>());
      if (!id) throw std::runtime_error("id");
      m.device_id = *id;
      m.state = j.at("state").get<std::string>();
      m.user = j.at("user").get<std::string>();
      auto role = ParseRole(j.at("role").get<std::string>());
      if (!role) throw std::runtime_error("role");
      m.role = *role;
      m.unit_id = j.value("unit_id", "");
      m.unit_name = j.value("unit_name", "");
      m.time_zone = ParseTimeZone(j.value("time_zone", "WIB")).value_or(TimeZone::kWib);
      m.server_url = j.at("server_url").get<std::string>();
      m.label = j.value("label", "");
      auto hex = [&](const char* k) -> std::string {
        auto b = BytesFromHex(j.value(k, ""));
        if (!b) throw std::runtime_error(k);
        return *b;
      };
      m.server_id = hex("server_id");
      m.unit_root_pk = hex("unit_root_pk");
      m.sign_pk = hex("sign_pk");
      m.box_pk = hex("box_pk");
      m.max_failed_unlocks = j.value("max_failed_unlocks", 0u);
      for (const json& c : j.value("codes", json::array())) m.codes.Restore(CodeEntryFromJson(c));
      return m;
    } catch (const std::exception&) {
      return Fail(errc::vault_corrupt, Tr("device.json is damaged"));
    }
  }
};

using internal::KindOf;
using internal::Lower;
using internal::Trim;

namespace {

constexpr std::string_view kMetaFile = "device.json";
constexpr std::string_view kErasedFile = "erased";
constexpr std::string_view kVaultFile = "vault";
constexpr std::string_view kStoreFile = "store.db";
// How often a sync checks every row of the local store when no read met damage.
constexpr std::int64_t kStoreCheckIntervalMs = 24LL * 3600 * 1000;

std::string StateName(pb::DeviceState s) {
  switch (s) {
    case pb::DEVICE_STATE_PENDING:
      return "pending";
    case pb::DEVICE_STATE_ACTIVE:
      return "active";
    case pb::DEVICE_STATE_REVOKED:
      return "revoked";
    default:
      return "unknown";
  }
}

// A pulled (or historical) value as the store would hold it.
StoredValue StoredFromChange(const pb::FieldChange& ch) {
  StoredValue v;
  v.field = ch.field();
  v.sealed = ch.sealed();
  v.key_class = ch.key_class();
  v.key_version = ch.key_version();
  v.value = ch.value();
  v.stamp.hlc = ch.stamp().hlc();
  if (auto d = IdFromBytes(ch.stamp().device_id())) v.stamp.device = *d;
  v.origin_hlc = ch.origin_hlc();
  return v;
}

std::string Label(const FieldPolicy& f, std::string_view lang) {
  return FieldLabel(f, ParseLang(lang).value_or(Lang::kId));
}

Outcome<json> ReadJsonFile(const std::filesystem::path& p) {
  std::ifstream in(p);
  if (!in) return Fail(errc::vault_missing, Tr("no device is enrolled in this home folder"));
  json j = json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Fail(errc::vault_corrupt, Tr("device.json is damaged"));
  }
  return j;
}

std::string UtcTime(std::int64_t ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

// The key classes as messages name them ("the clinical key"); the same
// words as ClassName in English.
std::string ClassText(teduh::AccessClass key_class) {
  return NormalClass(key_class) == teduh::ACCESS_CLASS_CLINICAL ? TrC("key class", "clinical")
                                                                : TrC("key class", "general");
}

// A record kind as messages name it: `english` (what the caller calls it)
// in English, the kind's schema label otherwise.
std::string KindNoun(const RecordKind& kind, std::string_view english) {
  const Lang lang = CurrentLang();
  return lang == Lang::kEn ? std::string(english) : KindLabel(kind, lang);
}

// Why a value cannot be read, in messages: ReadabilityName's codes in English.
std::string ReadabilityText(Readability r) {
  switch (r) {
    case Readability::kReadable:
      return TrC("readability", "readable");
    case Readability::kNoKey:
      return TrC("readability", "key_missing");
    case Readability::kIntegrity:
      return TrC("readability", "integrity");
  }
  return "unknown";
}

// What only the unit root key holder does, ending "only the admin device
// holding the unit root key can ..." (the actions the callers name).
std::string ActionText(std::string_view action) {
  if (action == "rotate keys") return TrC("admin action", "rotate keys");
  if (action == "retire keys") return TrC("admin action", "retire keys");
  if (action == "offboard users") return TrC("admin action", "offboard users");
  if (action == "re-key cases") return TrC("admin action", "re-key cases");
  if (action == "approve devices") return TrC("admin action", "approve devices");
  if (action == "revoke devices") return TrC("admin action", "revoke devices");
  if (action == "use the unit backup key") return TrC("admin action", "use the unit backup key");
  if (action == "make a recovery kit") return TrC("admin action", "make a recovery kit");
  if (action == "re-key the cases of devices")
    return TrC("admin action", "re-key the cases of devices");
  return std::string(action);
}

// The server's sentence on a merged change names the other writer: its
// English forms (MergeDetail in sync-server/src/sync_service.cc) are read
// back, and said in the officer's language; another form stays as it came.
std::string MergedText(const std::string& detail) {
  std::string who;
  auto is = [&](std::string_view prefix, std::string_view suffix) {
    if (detail.size() <= prefix.size() + suffix.size() || !detail.starts_with(prefix) ||
        !detail.ends_with(suffix))
      return false;
    who = detail.substr(prefix.size(), detail.size() - prefix.size() - suffix.size());
    if (who == "another device") who = Tr("another device");
    return true;
  };
  if (detail ==
      "the case was reopened since: the value of its current episode stays, this one is kept in "
      "the field's history")
    return Tr(
        "the case was reopened since: the value of its current episode stays, this one "
        "is kept in the field's history");
  if (is("edited at the same time as ",
         "'s change: both are kept and the office chooses (conflict queue)"))
    return TrF(
        "edited at the same time as {}'s change: both are kept and the office "
        "chooses (conflict queue)",
        who);
  if (is("combined with the values ", " added at the same time"))
    return TrF("combined with the values {} added at the same time", who);
  if (is("the higher value ", " wrote at the same time stays"))
    return TrF("the higher value {} wrote at the same time stays", who);
  if (is("the further stage ", " set at the same time stays"))
    return TrF("the further stage {} set at the same time stays", who);
  if (is("a later edit by ", " stays; this value is kept in the field's history"))
    return TrF("a later edit by {} stays; this value is kept in the field's history", who);
  if (is("", "'s value already holds everything this change added"))
    return TrF("{}'s value already holds everything this change added", who);
  return detail;
}

// What the server said of a pushed change, for `teduh status`. The protocol
// carries a stable reason code and an English sentence (`detail`): a code
// this program knows is shown as its own sentence, in the officer's
// language; the server's English only for a code it does not know.
std::string ServerVerdictText(const OutboxEntry& e) {
  const std::string_view r = e.reason;
  if (r == kUnreadableHereReason)
    return Tr(
        "This change was damaged in this device's storage and cannot be sent; enter it again.");
  if (r == "bad_value")
    return Tr("The change does not fit its field or record, so the server could not accept it.");
  if (r == "forbidden") return Tr("This user's role may not make this change.");
  if (r == "out_of_scope") return Tr("The case is not assigned to this user.");
  if (r == "immutable") return Tr("The field is written once and already has a value.");
  if (r == "reopen_required")
    return Tr(
        "A closed case changes only by being reopened as a new episode (teduh "
        "case reopen).");
  if (r == kSeqReusedReason)
    return Tr(
        "The server holds another change under this edit's number: it is numbered again "
        "and sent at the next sync.");
  if (r == kSeqOrderReason || r == kSeqJumpReason)
    return Tr("The server refused this edit's sequence number.");
  if (r == kKeyReplacedReason)
    return Tr("The case was re-keyed: this edit is sealed again and sent at the next sync.");
  if (r == "shredded") return Tr("The case was shredded by the unit; nothing of it is kept.");
  if (r == "no_parent") return Tr("The record's case is not on the server.");
  if (r == "unknown_kind") return Tr("The server does not know this kind of record.");
  if (r == "sealed_mismatch")
    return Tr("The value is not sealed with the key class its field requires.");
  if (r == "out_of_order") return Tr("A referral letter moves one step at a time.");
  if (r == kQuotaReason)
    return Tr(
        "The server's storage limit for a day is reached: the change is kept on this device and "
        "sent again at a later sync.");
  if (r == kDamagedReason)
    return Tr(
        "The server found damage in this record's stored copy: the change is kept on this device "
        "and sent again once the unit's IT admin has repaired the server.");
  if (r == "wrong_author")
    return Tr(
        "The record names another user as the one who did it; this device writes only in its "
        "own user's name.");
  if (r == "no_consent") return Tr("The referral cannot be sent without the victim's consent.");
  if (r == "unaccompanied")
    return Tr("The victim is a child or vulnerable: an officer must accompany the referral.");
  if (r.empty() && (e.state == OutboxState::kMerged || e.state == OutboxState::kConflict))
    return MergedText(e.detail);
  return e.detail;
}

// A passphrase of at least kMinPassphraseChars characters (UTF-8 code
// points): a short one falls to a guessing attack on a stolen laptop's vault.
Outcome<void> CheckNewPassphrase(const crypto::SecureBuffer& passphrase) {
  std::size_t chars = 0;
  for (std::uint8_t b : passphrase.view())
    if ((b & 0xC0) != 0x80) ++chars;
  if (chars < kMinPassphraseChars)
    return Fail(errc::invalid_argument,
                TrF("the passphrase must be at least {} characters long: a shorter one can be "
                    "guessed quickly by whoever takes the laptop",
                    kMinPassphraseChars));
  return {};
}

bool IsFieldRole(Role role) {
  return role == Role::ROLE_PENDAMPING || role == Role::ROLE_KONSELOR ||
         role == Role::ROLE_PSIKOLOG;
}

std::string HostLabel() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "device";
  return std::string(buf).substr(0, 64);
}

std::string BytesOf(std::span<const std::uint8_t> s) {
  return std::string(reinterpret_cast<const char*>(s.data()), s.size());
}

// Single-field serialization of `field` of a fully built message.
std::string OneField(const google::protobuf::Message& full, const FieldPolicy& field) {
  std::unique_ptr<google::protobuf::Message> m(full.New());
  m->CopyFrom(full);
  const auto* refl = m->GetReflection();
  std::vector<const google::protobuf::FieldDescriptor*> set;
  refl->ListFields(*m, &set);
  for (const auto* fd : set) {
    if (fd != field.descriptor) refl->ClearField(m.get(), fd);
  }
  return m->SerializeAsString();
}

}  // namespace

std::string_view ReadabilityName(Readability r) {
  switch (r) {
    case Readability::kReadable:
      return "readable";
    case Readability::kNoKey:
      return "key_missing";
    case Readability::kIntegrity:
      return "integrity";
  }
  return "unknown";
}

std::string Initials(std::string_view name) {
  std::string out;
  bool at_word = true;
  for (std::size_t i = 0; i < name.size();) {
    unsigned char c = static_cast<unsigned char>(name[i]);
    std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : 4;
    if (std::isspace(c)) {
      at_word = true;
      ++i;
      continue;
    }
    if (at_word) {
      if (len == 1) {
        out += static_cast<char>(std::toupper(c));
      } else {
        out.append(name.substr(i, len));
      }
      out += '.';
      at_word = false;
    }
    i += len;
  }
  return out;
}

// ---- Construction ---------------------------------------------------------------

Device::Device(std::filesystem::path home, DeviceOptions options)
    : home_(std::move(home)), options_(std::move(options)) {
  env_ = std::make_unique<OffsetEnv>(options_.env != nullptr ? *options_.env : DefaultEnv());
}

Device::~Device() { Lock(); }

bool Device::Exists(const std::filesystem::path& home) { return Vault::Exists(home / kVaultFile); }

std::optional<Failure> Device::Erasure(const std::filesystem::path& home) {
  if (Exists(home)) return std::nullopt;
  auto note = ReadJsonFile(home / kErasedFile);
  if (!note) return std::nullopt;
  return Failure{make_error_code(errc::device_revoked),
                 TrF("this device was revoked by the unit's admin and erased itself on "
                     "their signed order ({}): it holds no cases or keys. To use it "
                     "again, enroll it with a new code (teduh init)",
                     UtcTime(note->value("erased_ms", std::int64_t{0})))};
}

void Device::Lock() {
  std::lock_guard g(mu_);
  case_keys_.clear();
  case_key_order_.clear();
  spare_case_key_.Reset();
  if (vault_) vault_->Lock();
  store_.reset();
  locked_ = true;
}

std::int64_t Device::NowMsLocked() const { return env_->NowMs(); }

Outcome<void> Device::CheckOpen() const {
  if (locked_ || !vault_ || !store_) return Fail(errc::locked, Tr("the device is locked"));
  return {};
}

DeviceInfo Device::info() const {
  std::lock_guard g(mu_);
  return InfoLocked();
}

const CodeBook& Device::CodesLocked() const { return meta_->codes; }

DeviceInfo Device::InfoLocked() const {
  DeviceInfo i;
  if (!meta_) return i;
  i.device_id = meta_->device_id;
  i.state = meta_->state;
  i.user = meta_->user;
  i.role = RoleName(meta_->role);
  i.unit_id = meta_->unit_id;
  i.unit_name = meta_->unit_name;
  i.time_zone = meta_->time_zone;
  i.server_url = meta_->server_url;
  i.label = meta_->label;
  i.fingerprint = DeviceFingerprint(meta_->sign_pk, meta_->box_pk);
  i.unit_fingerprint = meta_->unit_root_pk.empty() ? "" : KeyFingerprint(meta_->unit_root_pk);
  // The vault's own limit (device.json's copy is only for a first-format vault).
  i.max_failed_unlocks =
      vault_ && !vault_->locked() ? vault_->max_failed_unlocks() : meta_->max_failed_unlocks;
  return i;
}

Outcome<void> Device::ChangePassphrase(const crypto::SecureBuffer& new_passphrase) {
  if (auto r = CheckNewPassphrase(new_passphrase); !r) return r.error();
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  return vault_->ChangePassphrase(new_passphrase, options_.vault);
}

Outcome<void> Device::SaveMeta() {
  if (auto ec = WriteFileAtomically(home_ / kMetaFile, meta_->ToJson().dump(2) + "\n")) {
    return Fail(ec, Tr("cannot save device.json"));
  }
  return {};
}

Outcome<std::unique_ptr<Device>> Device::Enroll(const std::filesystem::path& home,
                                                std::string_view server_url,
                                                std::string_view code_text,
                                                const crypto::SecureBuffer& passphrase,
                                                DeviceOptions options) {
  return EnrollWith(home, server_url, code_text, passphrase, std::move(options), nullptr);
}

Outcome<std::unique_ptr<Device>> Device::Recover(const std::filesystem::path& home,
                                                 std::string_view server_url, std::string_view code,
                                                 std::span<const RecoveryShare> shares,
                                                 const crypto::SecureBuffer& passphrase,
                                                 DeviceOptions options) {
  if (auto ec = crypto::Init()) return Fail(ec, Tr("the crypto library could not start"));
  auto root = RebuildRootKey(shares, "");
  if (!root) return root.error();
  return EnrollWith(home, server_url, code, passphrase, std::move(options), &*root);
}

Outcome<std::unique_ptr<Device>> Device::EnrollWith(const std::filesystem::path& home,
                                                    std::string_view server_url,
                                                    std::string_view code_text,
                                                    const crypto::SecureBuffer& passphrase,
                                                    DeviceOptions options,
                                                    crypto::SignKeyPair* recovered_root) {
  if (auto ec = crypto::Init()) return Fail(ec, Tr("the crypto library could not start"));
  if (auto r = CheckNewPassphrase(passphrase); !r) return r.error();
  std::error_code fs_ec;
  std::filesystem::create_directories(home, fs_ec);
  if (fs_ec) return Fail(errc::io_error, TrF("cannot create {}", home.string()));
  std::filesystem::permissions(home, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace, fs_ec);
  if (Vault::Exists(home / kVaultFile)) {
    return Fail(errc::vault_exists, TrF("{} already holds an enrolled device", home.string()));
  }
  // The code: groups of four, optionally followed by the unit fingerprint,
  // read as the server reads it (so both agree on the fingerprint pinned).
  std::string code;
  for (char c : Trim(code_text))
    code += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  auto parsed = ParseEnrollmentCode(code);
  if (!parsed) {
    return Fail(errc::invalid_argument,
                Tr("the enrollment code looks like XXXX-XXXX-XXXX-XXXX-1A2B3C4D"));
  }
  const std::string fingerprint = parsed->fingerprint;
  const bool bootstrap = fingerprint.empty();
  if (recovered_root != nullptr) {
    const std::string rebuilt = KeyFingerprint(BytesOf(recovered_root->public_key));
    if (bootstrap) {
      return Fail(errc::invalid_argument,
                  Tr("a recovery needs an admin enrollment code with the unit fingerprint (from "
                     "teduh-server enroll --role admin)"));
    }
    if (rebuilt != fingerprint) {
      return Fail(errc::wrong_unit,
                  TrF("these shares rebuild the key of another unit ({}) than the code's ({}); "
                      "nothing was saved",
                      rebuilt, fingerprint));
    }
  }

  auto sign = crypto::GenerateSignKeyPair();
  auto box = crypto::GenerateBoxKeyPair();
  auto storage = crypto::RandomSecret(32);
  if (!sign || !box || !storage) return Fail(errc::io_error, Tr("cannot generate device keys"));
  VaultSecrets secrets;
  secrets.storage_key = std::move(*storage);
  secrets.device_sign_sk = std::move(sign->secret_key);
  secrets.device_box_sk = std::move(box->secret_key);
  std::string root_pk;
  if (bootstrap) {
    auto root = crypto::GenerateSignKeyPair();
    if (!root) return Fail(root.error(), Tr("cannot generate the unit root key"));
    root_pk = BytesOf(root->public_key);
    secrets.unit_root_sk = std::move(root->secret_key);
    for (auto cls : {teduh::ACCESS_CLASS_GENERAL, teduh::ACCESS_CLASS_CLINICAL}) {
      auto k = crypto::RandomSecret(32);
      if (!k) return Fail(k.error(), Tr("cannot generate class keys"));
      secrets.class_keys.emplace(std::make_pair(cls, 1u), std::move(*k));
    }
  }
  std::string sign_pk = BytesOf(sign->public_key);
  std::string box_pk = BytesOf(box->public_key);
  if (recovered_root != nullptr) secrets.unit_root_sk = std::move(recovered_root->secret_key);

  pb::EnrollRequest req;
  req.set_version(kProtocolVersion);
  req.set_code(code);
  req.set_sign_pk(sign_pk);
  req.set_box_pk(box_pk);
  req.set_label(options.label.empty() ? HostLabel() : options.label.substr(0, 128));
  req.set_unit_root_pk(root_pk);
  std::string msg = EnrollMessage(code, sign_pk, box_pk, root_pk);
  auto sig = crypto::Sign(secrets.device_sign_sk, AsSpan(msg));
  if (!sig) return Fail(sig.error(), Tr("cannot sign the enrollment request"));
  req.set_signature(BytesOf(*sig));
  if (recovered_root != nullptr) {
    auto proof = crypto::Sign(secrets.unit_root_sk, AsSpan(RecoverMessage(msg)));
    if (!proof) return Fail(proof.error(), Tr("cannot sign the recovery"));
    req.set_root_signature(BytesOf(*proof));
  }
  if (bootstrap || recovered_root != nullptr) {
    // The root key approves this admin device itself, for the other ones.
    auto approval = crypto::Sign(secrets.unit_root_sk,
                                 AsSpan(ApprovalMessage(Role::ROLE_ADMIN, sign_pk, box_pk)));
    if (!approval) return Fail(approval.error(), Tr("cannot sign the enrollment request"));
    req.set_approval(BytesOf(*approval));
  }

  Connector connect = options.connector ? options.connector : Connector(ConnectWebSocket);
  auto transport = connect(server_url, options.transport);
  if (!transport) return transport.error();
  SyncClient client(std::move(*transport));
  auto result = client.Enroll(req);
  client.Close();
  if (!result) return result.error();

  // Check the unit before saving anything (PROTOCOL §2.4).
  if (result->unit_root_pk().size() != 32) {
    return Fail(errc::wrong_unit,
                Tr("the server did not send its unit root key; nothing was saved"));
  }
  if (!fingerprint.empty() && KeyFingerprint(result->unit_root_pk()) != fingerprint) {
    return Fail(errc::wrong_unit,
                Tr("the server's unit key does not match the fingerprint in the code: this is "
                   "not your unit's server; nothing was saved"));
  }
  if (recovered_root != nullptr && result->unit_root_pk() != BytesOf(recovered_root->public_key)) {
    return Fail(errc::wrong_unit,
                Tr("the server's unit key is not the one the shares rebuild: this is not your "
                   "unit's server; nothing was saved"));
  }
  if (bootstrap && result->unit_root_pk() != root_pk) {
    return Fail(errc::wrong_unit,
                Tr("the code carries no unit fingerprint and the server already has a unit key; "
                   "ask for a code with a fingerprint; nothing was saved"));
  }
  auto device_id = IdFromBytes(result->device_id());
  if (!device_id) return Fail(errc::malformed_frame, Tr("the server sent an invalid device id"));
  std::memcpy(secrets.pinned_unit_root_pk.data(), result->unit_root_pk().data(), 32);
  secrets.has_pinned_unit_root_pk = true;

  std::unique_ptr<Device> d(new Device(home, std::move(options)));
  d->meta_ = std::make_unique<Meta>();
  Meta& m = *d->meta_;
  m.device_id = *device_id;
  m.state = StateName(result->state());
  m.user = result->user();
  m.role = result->role();
  m.unit_id = result->unit_id();
  m.unit_name = result->unit_name();
  m.server_url = std::string(server_url);
  m.label = req.label();
  m.server_id = result->server_id();
  m.unit_root_pk = result->unit_root_pk();
  m.sign_pk = sign_pk;
  m.box_pk = box_pk;
  m.max_failed_unlocks =
      d->options_.max_failed_unlocks.value_or(IsFieldRole(m.role) ? kFieldRoleFailedUnlocks : 0);
  d->options_.vault.max_failed_unlocks = m.max_failed_unlocks;  // kept in the vault

  auto vault = Vault::Create(home / kVaultFile, passphrase, std::move(secrets), d->options_.vault);
  if (!vault) {
    return Fail(vault.error().code,
                TrF("{} (the server accepted the code: ask for a new one)", vault.error().message));
  }
  d->vault_ = std::move(*vault);
  auto cleanup = [&] {
    Vault::Erase(home / kVaultFile);
    std::filesystem::remove(home / kMetaFile, fs_ec);
    for (auto suffix : {"", "-wal", "-shm"}) {
      std::filesystem::remove(home / (std::string(kStoreFile) + suffix), fs_ec);
    }
  };
  if (auto r = d->SaveMeta(); !r) {
    cleanup();
    return r.error();
  }
  auto store = LocalStore::Open(home / kStoreFile, d->vault_->storage_key(), m.device_id, *d->env_,
                                d->options_.store);
  if (!store) {
    cleanup();
    return store.error();
  }
  d->store_ = std::move(*store);
  d->hlc_ = std::make_unique<Hlc>(*d->env_, 0);
  std::filesystem::remove(home / kErasedFile, fs_ec);  // enrolled again after an erasure
  return d;
}

Outcome<std::unique_ptr<Device>> Device::Open(const std::filesystem::path& home,
                                              const crypto::SecureBuffer& passphrase,
                                              DeviceOptions options) {
  if (auto ec = crypto::Init()) return Fail(ec, Tr("the crypto library could not start"));
  if (!Vault::Exists(home / kVaultFile)) {
    if (auto erased = Erasure(home)) return *erased;
    return Fail(errc::vault_missing,
                TrF("no device is enrolled in {} (run teduh init)", home.string()));
  }
  auto j = ReadJsonFile(home / kMetaFile);
  if (!j) return j.error();
  auto meta = Meta::FromJson(*j);
  if (!meta) return meta.error();
  std::unique_ptr<Device> d(new Device(home, std::move(options)));
  d->meta_ = std::make_unique<Meta>(std::move(*meta));
  VaultOptions vopts = d->options_.vault;
  vopts.max_failed_unlocks = d->meta_->max_failed_unlocks;
  auto vault = Vault::Unlock(home / kVaultFile, passphrase, vopts);
  if (!vault) {
    if (vault.error().code == errc::vault_wiped) {
      std::error_code ec;
      for (auto suffix : {"", "-wal", "-shm"}) {
        std::filesystem::path p = home / (std::string(kStoreFile) + suffix);
        if (std::filesystem::exists(p, ec)) Vault::Erase(p);
      }
      std::filesystem::remove(home / kMetaFile, ec);
    }
    return vault.error();
  }
  d->vault_ = std::move(*vault);
  auto store = LocalStore::Open(home / kStoreFile, d->vault_->storage_key(), d->meta_->device_id,
                                *d->env_, d->options_.store);
  if (!store) return store.error();
  d->store_ = std::move(*store);
  if (auto off = d->store_->GetMeta("clock_offset_ms"); off && *off) {
    try {
      d->env_->set_offset(std::stoll(**off));
    } catch (const std::exception&) {
    }
  }
  auto hlc = d->store_->PersistedHlc();
  if (!hlc) return hlc.error();
  d->hlc_ = std::make_unique<Hlc>(*d->env_, *hlc);
  return d;
}

// ---- Case keys -------------------------------------------------------------------

Outcome<std::optional<std::uint32_t>> Device::LatestCaseKeyVersion(const Id& case_id,
                                                                   teduh::AccessClass key_class) {
  auto recs = store_->ListRecords(kCaseKeyKind, case_id);
  if (!recs) return recs.error();
  std::optional<std::uint32_t> best;
  for (const auto& r : *recs) {
    auto fields = store_->GetFields(r.record_id);
    if (!fields) return fields.error();
    teduh::keys::v1::CaseKey ck;
    for (const auto& f : *fields) {
      if (!f.sealed) ck.MergeFromString(f.value);
    }
    if (NormalClass(ck.key_class()) == NormalClass(key_class) && ck.version() > 0 &&
        (!best || ck.version() > *best)) {
      best = ck.version();
    }
  }
  return best;
}

Outcome<const crypto::SecureBuffer*> Device::CaseKeyFor(const Id& case_id,
                                                        teduh::AccessClass key_class,
                                                        std::uint32_t version) {
  key_class = NormalClass(key_class);
  auto cached = case_keys_.find({case_id, key_class, version});
  if (cached != case_keys_.end()) return &cached->second;
  auto recs = store_->ListRecords(kCaseKeyKind, case_id);
  if (!recs) return recs.error();
  // Deterministic choice when two devices made the same (class, version)
  // offline: the CaseKey record with the smallest id.
  std::sort(recs->begin(), recs->end(),
            [](const RecordInfo& a, const RecordInfo& b) { return a.record_id < b.record_id; });
  bool lacked_class_key = false;
  for (const auto& r : *recs) {
    auto fields = store_->GetFields(r.record_id);
    if (!fields) return fields.error();
    teduh::keys::v1::CaseKey ck;
    for (const auto& f : *fields) {
      if (!f.sealed) ck.MergeFromString(f.value);
    }
    if (NormalClass(ck.key_class()) != key_class || ck.version() != version) continue;
    const crypto::SecureBuffer* k = vault_->class_key(key_class, ck.epoch());
    if (k == nullptr) {
      lacked_class_key = true;
      continue;
    }
    // A buffer freed by eviction is reused: guarded allocations are costly.
    if (spare_case_key_.size() != crypto::kAeadKeyBytes) {
      auto fresh = crypto::SecureBuffer::Allocate(crypto::kAeadKeyBytes);
      if (!fresh) return Fail(fresh.error(), Tr("cannot hold the case key in guarded memory"));
      spare_case_key_ = std::move(*fresh);
    }
    if (UnwrapCaseKeyInto(*k, case_id, key_class, version, ck.epoch(), ck.wrapped(),
                          spare_case_key_)) {
      continue;  // altered wrap: try another record, else integrity below
    }
    return CacheCaseKey({case_id, int{key_class}, version}, std::move(spare_case_key_));
  }
  if (lacked_class_key || recs->empty() || vault_->latest_epoch(key_class) == std::nullopt) {
    return Fail(errc::key_missing,
                TrF("this device does not hold the {} key of this case", ClassText(key_class)));
  }
  return Fail(errc::integrity, Tr("the case key record does not verify"));
}

const crypto::SecureBuffer* Device::CacheCaseKey(const CaseKeyId& id, crypto::SecureBuffer key) {
  while (case_keys_.size() >= std::max<std::size_t>(options_.case_key_cache, 2) &&
         !case_key_order_.empty()) {
    auto oldest = case_keys_.find(case_key_order_.front());
    case_key_order_.pop_front();
    if (oldest == case_keys_.end()) continue;
    crypto::Wipe(oldest->second.span());
    spare_case_key_ = std::move(oldest->second);  // kept for the next unwrap
    case_keys_.erase(oldest);
  }
  auto [it, inserted] = case_keys_.insert_or_assign(id, std::move(key));
  if (inserted) case_key_order_.push_back(id);
  return &it->second;
}

Outcome<void> Device::EnsureCaseKey(LocalStore::EditTxn& txn, const Id& case_id,
                                    teduh::AccessClass key_class, std::uint32_t* version) {
  key_class = NormalClass(key_class);
  auto latest = LatestCaseKeyVersion(case_id, key_class);
  if (!latest) return latest.error();
  if (*latest) {
    *version = **latest;
    auto k = CaseKeyFor(case_id, key_class, *version);
    if (!k) return k.error();
    return {};
  }
  auto epoch = WriteEpochLocked(key_class);
  if (!epoch) {
    return Fail(errc::key_missing,
                meta_->state == "pending"
                    ? TrF("this device holds no {} key yet: waiting for an admin to approve it",
                          ClassText(key_class))
                    : TrF("this device holds no {} key (its role may not write this)",
                          ClassText(key_class)));
  }
  const crypto::SecureBuffer* class_key = vault_->class_key(key_class, *epoch);
  auto ck = crypto::RandomSecret(32);
  if (!ck) return Fail(ck.error(), Tr("cannot make a case key"));
  auto wrapped = WrapCaseKey(*class_key, case_id, key_class, 1, *epoch, *ck);
  if (!wrapped) return Fail(wrapped.error(), Tr("cannot wrap the case key"));
  teduh::keys::v1::CaseKey rec;
  rec.set_key_class(key_class);
  rec.set_version(1);
  rec.set_epoch(*epoch);
  rec.set_wrapped(*wrapped);
  const RecordKind& kind = KindOf(kCaseKeyKind);
  Id rec_id = NewId();
  for (const auto& f : kind.fields) {
    LocalChange c;
    c.record_id = rec_id;
    c.kind = std::string(kCaseKeyKind);
    c.parent_id = case_id;
    c.field = f.number;
    c.value = OneField(rec, f);
    c.stamp = txn.NextStamp();
    if (auto r = txn.Put(c); !r) return r;
  }
  CacheCaseKey({case_id, int{key_class}, 1u}, std::move(*ck));
  *version = 1;
  return {};
}

// ---- Edits ---------------------------------------------------------------------------

Outcome<std::vector<Device::PendingSet>> Device::ParseSets(std::string_view kind_name,
                                                           const std::vector<std::string>& sets) {
  const RecordKind& kind = KindOf(kind_name);
  std::vector<PendingSet> out;
  for (const auto& s : sets) {
    std::size_t eq = s.find('=');
    if (eq == std::string::npos) {
      return Fail(errc::invalid_argument,
                  TrF("'{}' is not FIELD=VALUE", s.substr(0, std::min<std::size_t>(s.size(), 40))));
    }
    std::string name = Lower(Trim(std::string_view(s).substr(0, eq)));
    std::string_view text = std::string_view(s).substr(eq + 1);
    const FieldPolicy* f = kind.FindFieldByName(name);
    if (f == nullptr) {
      std::string names;
      for (const auto& p : kind.fields) names += (names.empty() ? "" : ", ") + p.name;
      return Fail(errc::unknown_field,
                  TrF("unknown field '{}' for a {}; valid fields: {}", name.substr(0, 64),
                      KindNoun(kind, kind.short_name), names));
    }
    std::string message;
    auto enc = EncodeFieldText(kind, *f, text, meta_->time_zone, meta_->codes, &message);
    if (!enc) {
      return Fail(errc::bad_value,
                  message.empty() ? TrF("bad value for field '{}'", f->name) : message);
    }
    // The last setting of a field wins.
    std::erase_if(out, [&](const PendingSet& p) { return p.field == f; });
    out.push_back(PendingSet{f, std::move(*enc)});
  }
  return out;
}

Outcome<void> Device::WriteRecordFields(LocalStore::EditTxn& txn, const Id& record_id,
                                        std::string_view kind, const std::optional<Id>& parent,
                                        const Id& case_id, std::vector<PendingSet> sets) {
  // Whatever way this returns, no plaintext of `sets` outlives it.
  struct WipeOnReturn {
    std::vector<PendingSet>& sets;
    ~WipeOnReturn() {
      for (auto& s : sets) crypto::Wipe(s.value);
    }
  } wipe_on_return{sets};
  // Open fields first (assignment reaches the server before anything else),
  // then sealed ones.
  std::stable_sort(sets.begin(), sets.end(), [](const PendingSet& a, const PendingSet& b) {
    return !a.field->sealed && b.field->sealed;
  });
  for (auto& s : sets) {
    LocalChange c;
    c.record_id = record_id;
    c.kind = std::string(kind);
    c.parent_id = parent;
    c.field = s.field->number;
    c.resolves = s.resolves;
    if (!s.field->sealed) {
      c.stamp = txn.NextStamp();
      c.value = std::move(s.value);
    } else {
      std::uint32_t version = 0;
      if (auto r = EnsureCaseKey(txn, case_id, s.field->access, &version); !r) return r;
      auto ck = CaseKeyFor(case_id, s.field->access, version);
      if (!ck) return ck.error();
      c.stamp = txn.NextStamp();  // invariant 3
      SealContext ctx;
      ctx.record_id = record_id;
      ctx.kind = kind;
      ctx.field = c.field;
      ctx.writer_hlc = c.stamp.hlc;
      ctx.writer_device = c.stamp.device;
      ctx.key_class = NormalClass(s.field->access);
      ctx.key_version = version;
      auto sealed = SealField(**ck, ctx, s.value);
      crypto::Wipe(s.value);
      if (!sealed) return Fail(sealed.error(), Tr("cannot seal a value"));
      c.sealed = true;
      c.key_class = ctx.key_class;
      c.key_version = version;
      c.value = std::move(*sealed);
    }
    if (auto r = txn.Put(c); !r) return r;
  }
  return {};
}

Outcome<Id> Device::ResolveCase(std::string_view case_ref) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  return ResolveCaseLocked(case_ref);
}

Outcome<Id> Device::ResolveCaseLocked(std::string_view case_ref) {
  return ResolveRecordLocked(kCaseKind, case_ref, "case");
}

Outcome<Id> Device::CaseToEditLocked(std::string_view case_ref) {
  if (ScopeOf(meta_->role) == CaseScope::kNone)
    return Fail(errc::forbidden, Tr("an admin device holds no case content"));
  return ResolveCaseLocked(case_ref);
}

Outcome<Id> Device::ResolveRecordLocked(std::string_view kind, std::string_view ref_text,
                                        std::string_view noun) {
  std::string ref = Lower(Trim(ref_text));
  const std::string what = KindNoun(KindOf(kind), noun);
  if (ref.size() < 6 || ref.size() > 32 ||
      !std::all_of(ref.begin(), ref.end(), [](char c) { return std::isxdigit(c); })) {
    return Fail(errc::invalid_argument,
                TrF("a {} id is 32 hex digits, or a unique prefix of at least 6", what));
  }
  auto ids = store_->MatchPrefix(kind, ref);
  if (!ids) return ids.error();
  if (ids->empty()) return Fail(errc::not_found, TrF("no {} {} on this device", what, ref));
  if (ids->size() > 1) {
    return Fail(errc::invalid_argument,
                TrF("{} {} ids start with {}: type more digits", ids->size(), what, ref));
  }
  return ids->front();
}

Outcome<Id> Device::NewCase(const std::vector<std::string>& sets) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  if (ScopeOf(meta_->role) == CaseScope::kNone) {
    return Fail(errc::forbidden, Tr("an admin device holds no case content"));
  }
  auto parsed = ParseSets(kCaseKind, sets);
  if (!parsed) return parsed.error();
  for (const auto& p : *parsed) {
    if (p.field->number == cw::Case::kEpisodeFieldNumber)
      return Fail(errc::invalid_argument,
                  Tr("a new case starts in its first episode; later ones begin when it is "
                     "reopened"));
  }
  const RecordKind& kind = KindOf(kCaseKind);
  Id case_id = NewId();
  std::int64_t now_s = env_->NowMs() / 1000;
  auto has = [&](std::string_view name) {
    return std::any_of(parsed->begin(), parsed->end(),
                       [&](const PendingSet& p) { return p.field->name == name; });
  };
  auto add = [&](std::string_view name, const google::protobuf::Message& m) {
    const FieldPolicy* f = kind.FindFieldByName(name);
    parsed->insert(parsed->begin(), PendingSet{f, m.SerializeAsString()});
  };
  cw::Case defaults;
  if (!has("case_number")) {
    std::string unit;
    for (char c : meta_->unit_id) {
      if (std::isalnum(static_cast<unsigned char>(c)) && unit.size() < 12) {
        unit += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      }
    }
    if (unit.empty()) unit = "PPA";
    std::string hex = ToHex(case_id).substr(0, 6);
    for (auto& c : hex) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    cw::Case m;  // dated by the unit's calendar day
    m.set_case_number(fmt::format("{}-{}-{}", unit, LocalDate(now_s, meta_->time_zone), hex));
    add("case_number", m);
  }
  if (!has("stage")) {
    cw::Case m;
    m.set_stage(cw::STAGE_PENGADUAN);
    add("stage", m);
  }
  if (!has("received_at")) {
    cw::Case m;
    m.set_received_at(now_s);
    add("received_at", m);
  }
  if (!has("created_at")) {
    cw::Case m;
    m.set_created_at(now_s);
    add("created_at", m);
  }
  std::string_view assign = AssignmentField(meta_->role);
  if (!assign.empty() && !has(assign)) {
    const FieldPolicy* f = kind.FindFieldByName(assign);
    cw::Case m;
    m.GetReflection()->SetString(&m, f->descriptor, meta_->user);
    add(assign, m);
  }
  auto r = store_->Edit(*hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    // The case's open fields go first so the server knows the case before
    // its CaseKey child arrives (the outbox is pushed in device_seq order);
    // the GENERAL case key still exists from the case's first transaction.
    std::vector<PendingSet> open, sealed;
    for (auto& p : *parsed) (p.field->sealed ? sealed : open).push_back(std::move(p));
    if (auto w = WriteRecordFields(txn, case_id, kCaseKind, std::nullopt, case_id, std::move(open));
        !w)
      return w;
    std::uint32_t version = 0;
    if (auto k = EnsureCaseKey(txn, case_id, teduh::ACCESS_CLASS_GENERAL, &version); !k) return k;
    if (sealed.empty()) return {};
    return WriteRecordFields(txn, case_id, kCaseKind, std::nullopt, case_id, std::move(sealed));
  });
  if (!r) {
    case_keys_.erase({case_id, int{teduh::ACCESS_CLASS_GENERAL}, 1u});
    return r.error();
  }
  return case_id;
}

Outcome<void> Device::SetCaseFields(std::string_view case_ref,
                                    const std::vector<std::string>& sets) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  if (sets.empty())
    return Fail(errc::invalid_argument, Tr("nothing to set: use --set FIELD=VALUE"));
  auto case_id = ResolveCaseLocked(case_ref);
  if (!case_id) return case_id.error();
  auto parsed = ParseSets(kCaseKind, sets);
  if (!parsed) return parsed.error();
  auto existing = store_->GetFields(*case_id);
  if (!existing) return existing.error();
  for (const auto& p : *parsed) {
    if (p.field->merge != teduh::MERGE_RULE_IMMUTABLE) continue;
    for (auto& v : *existing) {
      if (v.field == p.field->number) {
        return Fail(errc::invalid_argument, TrF("'{}' cannot be changed once set", p.field->name));
      }
    }
  }
  // The case as it is (open fields) and the stage asked for.
  cw::Case now_case, asked;
  for (auto& v : *existing) {
    if (!v.sealed) now_case.MergeFromString(v.value);
    crypto::Wipe(v.value);
  }
  bool sets_stage = false, sets_reason = false, sets_closed = false, sets_checklist = false;
  for (const auto& p : *parsed) {
    if (p.field->sealed) continue;
    if (p.field->number == cw::Case::kEpisodeFieldNumber)
      return Fail(
          errc::invalid_argument,
          Tr("the episode changes only when a closed case is reopened (teduh case reopen)"));
    asked.MergeFromString(p.value);
    sets_stage |= p.field->number == cw::Case::kStageFieldNumber;
    sets_reason |= p.field->number == cw::Case::kClosureReasonFieldNumber;
    sets_closed |= p.field->number == cw::Case::kClosedAtFieldNumber;
    sets_checklist |= p.field->number == cw::Case::kClosureChecklistFieldNumber;
  }
  const std::int64_t now_s = env_->NowMs() / 1000;
  if (sets_stage && now_case.stage() == cw::STAGE_TERMINASI && asked.stage() != cw::STAGE_TERMINASI)
    return Fail(errc::invalid_argument,
                Tr("the case is closed: reopen it with teduh case reopen CASE --reason ... (a new "
                   "episode), not by moving its stage back"));
  if (sets_stage && asked.stage() == cw::STAGE_TERMINASI) {
    // A case is closed with a reason (TERMINASI), its outcome checklist,
    // and the time it was.
    const cw::ClosureReason reason =
        sets_reason ? asked.closure_reason() : now_case.closure_reason();
    if (reason == cw::CLOSURE_REASON_UNSPECIFIED)
      return Fail(errc::invalid_argument,
                  Tr("a case is closed with a reason: add --set closure_reason=... (resolved, "
                     "referred, unreachable, withdrawn, other)"));
    std::vector<int> checklist;
    for (int v : sets_checklist ? asked.closure_checklist() : now_case.closure_checklist())
      checklist.push_back(v);
    if (auto why = ClosureProblem(reason, checklist); !why.empty())
      return Fail(errc::invalid_argument, why);
    if (!sets_closed) {
      cw::Case closed;
      closed.set_closed_at(now_s);
      parsed->emplace_back(KindOf(kCaseKind).FindFieldByName("closed_at"),
                           closed.SerializeAsString());
    }
  }
  const bool reaches_outreach =
      sets_stage && BeforeOutreach(now_case.stage()) && !BeforeOutreach(asked.stage()) &&
      asked.stage() != cw::STAGE_TERMINASI;  // closed before any outreach: not met
  return store_->Edit(*hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    if (reaches_outreach)
      if (auto w = OutreachMetLocked(txn, *case_id, now_case); !w) return w;
    return WriteRecordFields(txn, *case_id, kCaseKind, std::nullopt, *case_id, std::move(*parsed));
  });
}

Outcome<Id> Device::AddPerson(std::string_view case_ref, std::string_view role,
                              const std::vector<std::string>& sets) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  auto case_id = ResolveCaseLocked(case_ref);
  if (!case_id) return case_id.error();
  const RecordKind& kind = KindOf(kPersonKind);
  std::vector<std::string> all;
  all.push_back("role=" + std::string(role));
  all.insert(all.end(), sets.begin(), sets.end());
  auto parsed = ParseSets(kPersonKind, all);
  if (!parsed) return parsed.error();
  (void)kind;
  Id person_id = NewId();
  auto r = store_->Edit(*hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    return WriteRecordFields(txn, person_id, kPersonKind, *case_id, *case_id, std::move(*parsed));
  });
  if (!r) return r.error();
  return person_id;
}

Outcome<void> Device::SetPersonFields(std::string_view person_ref,
                                      const std::vector<std::string>& sets) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  auto person_id = ResolveRecordLocked(kPersonKind, person_ref, "person");
  if (!person_id) return person_id.error();
  auto rec = store_->GetRecord(*person_id);
  if (!rec) return rec.error();
  if (!*rec || !(*rec)->parent_id) return Fail(errc::not_found, Tr("the person has no case"));
  auto parsed = ParseSets(kPersonKind, sets);
  if (!parsed) return parsed.error();
  Id case_id = *(*rec)->parent_id;
  return store_->Edit(*hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    return WriteRecordFields(txn, *person_id, kPersonKind, case_id, case_id, std::move(*parsed));
  });
}

Outcome<Id> Device::AddNote(std::string_view case_ref, std::string_view text,
                            std::string_view kind_text) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  auto case_id = ResolveCaseLocked(case_ref);
  if (!case_id) return case_id.error();
  if (text.empty()) return Fail(errc::invalid_argument, Tr("the note is empty"));
  const RecordKind& kind = KindOf(kNoteKind);
  std::string message;
  auto kind_value =
      ParseEnumValue(*cw::NoteKind_descriptor(), kind_text.empty() ? "visit" : kind_text, &message);
  if (!kind_value || *kind_value == 0) {
    return Fail(errc::bad_value, message.empty() ? Tr("unknown note kind") : message);
  }
  bool clinical =
      *kind_value == cw::NOTE_KIND_COUNSELLING || *kind_value == cw::NOTE_KIND_PSYCHOLOGY;
  std::vector<PendingSet> sets;
  {
    cw::Note m;
    m.set_kind(static_cast<cw::NoteKind>(*kind_value));
    sets.push_back({kind.FindFieldByName("kind"), m.SerializeAsString()});
  }
  {
    cw::Note m;
    m.set_author(meta_->user);
    sets.push_back({kind.FindFieldByName("author"), m.SerializeAsString()});
  }
  {
    cw::Note m;
    m.set_written_at(env_->NowMs() / 1000);
    sets.push_back({kind.FindFieldByName("written_at"), m.SerializeAsString()});
  }
  {
    cw::Note m;
    if (clinical) {
      m.set_clinical_body(std::string(text));
    } else {
      m.set_body(std::string(text));
    }
    sets.push_back(
        {kind.FindFieldByName(clinical ? "clinical_body" : "body"), m.SerializeAsString()});
    crypto::Wipe(clinical ? *m.mutable_clinical_body() : *m.mutable_body());
  }
  Id note_id = NewId();
  auto r = store_->Edit(*hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    return WriteRecordFields(txn, note_id, kNoteKind, *case_id, *case_id, std::move(sets));
  });
  if (!r) return r.error();
  return note_id;
}

// ---- Reading --------------------------------------------------------------------------

Outcome<std::optional<std::string>> Device::OpenValue(const Id& record_id, std::string_view kind,
                                                      const Id& case_id, const StoredValue& v,
                                                      Readability* readability) {
  const RecordKind* rk = Schema::Get().FindKind(kind);
  const FieldPolicy* policy = rk ? rk->FindField(v.field) : nullptr;
  bool want_sealed = policy != nullptr && policy->sealed;
  *readability = Readability::kReadable;
  if (!want_sealed) {
    if (v.sealed) {
      *readability = Readability::kIntegrity;
      return std::optional<std::string>();
    }
    return std::optional<std::string>(v.value);
  }
  if (!v.sealed || NormalClass(v.key_class) != NormalClass(policy->access)) {
    *readability = Readability::kIntegrity;  // invariant 4
    return std::optional<std::string>();
  }
  auto ck = CaseKeyFor(case_id, v.key_class, v.key_version);
  if (!ck) {
    if (ck.error().code == errc::key_missing) {
      *readability = Readability::kNoKey;
      return std::optional<std::string>();
    }
    if (ck.error().code == errc::integrity) {
      *readability = Readability::kIntegrity;
      return std::optional<std::string>();
    }
    return ck.error();
  }
  SealContext ctx;
  ctx.record_id = record_id;
  ctx.kind = kind;
  ctx.field = v.field;
  ctx.writer_hlc = v.origin_hlc != 0 ? v.origin_hlc : v.stamp.hlc;
  ctx.writer_device = v.stamp.device;
  ctx.key_class = NormalClass(v.key_class);
  ctx.key_version = v.key_version;
  auto plain = OpenField(**ck, ctx, v.value);
  if (!plain) {
    *readability = Readability::kIntegrity;
    return std::optional<std::string>();
  }
  return std::optional<std::string>(std::move(*plain));
}

FieldView Device::RenderValue(const Id& record_id, std::string_view kind, const Id& case_id,
                              const FieldPolicy& policy, StoredValue v, std::string_view lang,
                              std::string* plain_out, error_code* failed) {
  FieldView fv;
  fv.name = policy.name;
  fv.label = Label(policy, lang);
  fv.sealed = policy.sealed;
  fv.pending = v.pending;
  auto plain = OpenValue(record_id, kind, case_id, v, &fv.readability);
  crypto::Wipe(v.value);
  if (!plain) {
    *failed = plain.error().code;
    return fv;
  }
  if (fv.readability == Readability::kReadable && *plain) {
    auto msg = DecodeFieldValue(*Schema::Get().FindKind(kind), **plain);
    if (!msg) {
      fv.readability = Readability::kIntegrity;
    } else {
      fv.value = FieldToJson(**msg, policy, meta_->codes);
      fv.display = FieldToDisplay(**msg, policy, lang, meta_->time_zone, meta_->codes);
      if (plain_out != nullptr) *plain_out = **plain;
    }
    crypto::Wipe(**plain);
  }
  return fv;
}

Outcome<std::vector<FieldView>> Device::RenderFields(const Id& record_id, std::string_view kind,
                                                     const Id& case_id, std::string_view lang) {
  const RecordKind* rk = Schema::Get().FindKind(kind);
  std::vector<FieldView> out;
  if (rk == nullptr) return out;
  auto fields = store_->GetFields(record_id);
  if (!fields) return fields.error();
  for (auto& v : *fields) {
    const FieldPolicy* policy = rk->FindField(v.field);
    if (policy == nullptr) continue;  // a newer device's field: kept, not shown
    error_code failed;
    out.push_back(
        RenderValue(record_id, kind, case_id, *policy, std::move(v), lang, nullptr, &failed));
    if (failed) return Fail(failed, Tr("cannot open a value"));
  }
  return out;
}

Outcome<std::vector<StoredField>> Device::SnapshotCase(const Id& case_id) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  std::vector<RecordInfo> records;
  auto self = store_->GetRecord(case_id);
  if (!self) return self.error();
  if (*self) records.push_back(**self);
  for (const auto& kind : Schema::Get().kinds()) {
    if (kind->full_name == kCaseKind) continue;
    auto children = store_->ListRecords(kind->full_name, case_id);
    if (!children) return children.error();
    records.insert(records.end(), children->begin(), children->end());
  }
  std::vector<StoredField> out;
  for (const auto& r : records) {
    auto fields = store_->GetFields(r.record_id);
    if (!fields) return fields.error();
    for (auto& f : *fields) {
      out.push_back(StoredField{r.record_id, r.kind, f.field, f.stamp, std::move(f.value), f.sealed,
                                f.pending});
    }
  }
  std::sort(out.begin(), out.end(), [](const StoredField& a, const StoredField& b) {
    return std::tie(a.record_id, a.field) < std::tie(b.record_id, b.field);
  });
  return out;
}

// ---- History -------------------------------------------------------------------------

Outcome<std::vector<HistoryEntryView>> Device::FetchHistory(const HistoryTarget& t,
                                                            std::string_view lang,
                                                            std::vector<std::string>* plains) {
  auto client = ConnectOnline();
  if (!client) return client.error();
  auto history = (*client)->History(t.record_id, t.field ? t.field->number : 0);
  (*client)->Close();
  if (!history) return history.error();
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  const RecordKind& kind = KindOf(t.kind);
  std::vector<HistoryEntryView> out;
  std::map<std::uint32_t, int> versions;
  for (const auto& e : history->entries()) {
    const pb::FieldChange& ch = e.value();
    if (ch.record_id() != AsBytes(t.record_id)) continue;
    const FieldPolicy* policy = kind.FindField(ch.field());
    if (policy == nullptr || (t.field && policy != t.field)) continue;
    HistoryEntryView h;
    h.field = policy->name;
    h.version = ++versions[ch.field()];
    h.reason = e.reason();
    h.author = ch.author();
    StoredValue sv = StoredFromChange(ch);
    h.stamp = sv.stamp;
    h.written_ms = HlcMillis(ch.origin_hlc() != 0 ? ch.origin_hlc() : ch.stamp().hlc());
    error_code failed;
    std::string plain;
    h.value = RenderValue(t.record_id, t.kind, t.case_id, *policy, std::move(sv), lang,
                          plains ? &plain : nullptr, &failed);
    if (failed) return Fail(failed, Tr("cannot open a value of the history"));
    if (plains) plains->push_back(std::move(plain));
    out.push_back(std::move(h));
  }
  // The server sends past values before current ones: each field's values
  // together, oldest first, in the schema's order (one field keeps its order;
  // `plains` follows `out` by index, so it is asked for one field only).
  if (!t.field && !plains) {
    std::stable_sort(
        out.begin(), out.end(), [&](const HistoryEntryView& a, const HistoryEntryView& b) {
          return kind.FindFieldByName(a.field)->number < kind.FindFieldByName(b.field)->number;
        });
  }
  return out;
}

Outcome<Device::HistoryTarget> Device::ResolveHistoryTarget(std::string_view kind,
                                                            std::string_view ref,
                                                            std::string_view field) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  HistoryTarget t;
  t.kind = kind;
  if (kind == kCaseKind) {
    auto id = ResolveCaseLocked(ref);
    if (!id) return id.error();
    t.case_id = t.record_id = *id;
  } else {
    auto id = ResolveRecordLocked(kind, ref, "person");
    if (!id) return id.error();
    auto rec = store_->GetRecord(*id);
    if (!rec) return rec.error();
    if (!*rec || !(*rec)->parent_id) return Fail(errc::not_found, Tr("the person has no case"));
    t.record_id = *id;
    t.case_id = *(*rec)->parent_id;
  }
  if (!field.empty()) {
    t.field = KindOf(kind).FindFieldByName(Lower(Trim(field)));
    if (t.field == nullptr) {
      return Fail(errc::unknown_field, kind == kCaseKind
                                           ? TrF("a case has no field '{}'", field)
                                           : TrF("a person has no field '{}'", field));
    }
  }
  return t;
}

Outcome<std::vector<HistoryEntryView>> Device::CaseHistory(std::string_view case_ref,
                                                           std::string_view field,
                                                           std::string_view lang, ViewLog log) {
  return RecordHistory(kCaseKind, case_ref, field, lang, log);
}

Outcome<std::vector<HistoryEntryView>> Device::PersonHistory(std::string_view person_ref,
                                                             std::string_view field,
                                                             std::string_view lang, ViewLog log) {
  return RecordHistory(kPersonKind, person_ref, field, lang, log);
}

Outcome<std::vector<HistoryEntryView>> Device::RecordHistory(std::string_view kind,
                                                             std::string_view ref,
                                                             std::string_view field,
                                                             std::string_view lang, ViewLog log) {
  auto target = ResolveHistoryTarget(kind, ref, field);
  if (!target) return target.error();
  if (log == ViewLog::kRecord) {
    std::lock_guard g(mu_);
    if (auto r = CheckOpen(); !r) return r.error();
    if (auto r = RecordAccessLocked(target->case_id); !r) return r.error();
  }
  return FetchHistory(*target, lang, nullptr);
}

Outcome<void> Device::RestoreCaseField(std::string_view case_ref, std::string_view field,
                                       int version) {
  return RestoreField(kCaseKind, case_ref, field, version);
}

Outcome<void> Device::RestorePersonField(std::string_view person_ref, std::string_view field,
                                         int version) {
  return RestoreField(kPersonKind, person_ref, field, version);
}

Outcome<void> Device::RestoreField(std::string_view kind, std::string_view ref,
                                   std::string_view field, int version) {
  if (field.empty()) return Fail(errc::invalid_argument, Tr("name the field to restore"));
  auto target = ResolveHistoryTarget(kind, ref, field);
  if (!target) return target.error();
  const HistoryTarget& t = *target;
  const FieldPolicy* policy = t.field;
  const bool is_case = kind == kCaseKind;
  if (policy->merge == teduh::MERGE_RULE_IMMUTABLE) {
    return Fail(errc::invalid_argument, TrF("'{}' is written once", policy->name));
  }
  std::vector<std::string> plains;
  auto history = FetchHistory(t, "en", &plains);
  struct Wiper {
    std::vector<std::string>& v;
    ~Wiper() {
      for (auto& p : v) crypto::Wipe(p);
    }
  } wiper{plains};
  if (!history) return history.error();
  if (version < 1 || version > static_cast<int>(history->size())) {
    return Fail(errc::invalid_argument,
                TrF("'{}' has versions 1 to {}", policy->name, history->size()));
  }
  const HistoryEntryView& chosen = (*history)[static_cast<std::size_t>(version - 1)];
  if (chosen.value.readability != Readability::kReadable) {
    return Fail(errc::key_missing, TrF("version {} cannot be read on this device ({})", version,
                                       ReadabilityText(chosen.value.readability)));
  }
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  if (is_case && policy->number == cw::Case::kEpisodeFieldNumber)
    return Fail(errc::invalid_argument,
                Tr("the episode changes only when a closed case is reopened (teduh case reopen)"));
  if (is_case && policy->per_episode) {
    cw::Case now_case;
    if (auto l = LoadOpenLocked(t.case_id, &now_case); !l) return l.error();
    if (now_case.stage() == cw::STAGE_TERMINASI)
      return Fail(errc::invalid_argument,
                  TrF("the case is closed: reopen it (teduh case reopen) rather than "
                      "restoring its {}",
                      policy->name));
  }
  std::string value = plains[static_cast<std::size_t>(version - 1)];
  auto r = store_->Edit(*hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    std::vector<PendingSet> sets;
    sets.push_back(PendingSet{policy, std::move(value), std::nullopt});
    return WriteRecordFields(txn, t.record_id, kind,
                             is_case ? std::nullopt : std::optional<Id>(t.case_id), t.case_id,
                             std::move(sets));
  });
  crypto::Wipe(value);
  if (!r) return r.error();
  return {};
}

// ---- Reconciliation ----------------------------------------------------------------

Outcome<ConflictView> Device::LoadConflictLocked(const Id& conflict_id, bool decrypt,
                                                 std::string_view lang, std::string* kept_plain,
                                                 std::string* other_plain) {
  auto rec = store_->GetRecord(conflict_id);
  if (!rec) return rec.error();
  if (!*rec || (*rec)->kind != kConflictKind || !(*rec)->parent_id) {
    return Fail(errc::not_found, Tr("no such conflict on this device"));
  }
  auto fields = store_->GetFields(conflict_id);
  if (!fields) return fields.error();
  teduh::casework::v1::Conflict c;
  for (const auto& f : *fields) {
    if (!f.sealed) c.MergeFromString(f.value);
  }
  ConflictView v;
  v.conflict_id = conflict_id;
  v.case_id = *(*rec)->parent_id;
  const auto& det = c.detection();
  if (auto id = IdFromBytes(det.record_id())) v.record_id = *id;
  const RecordKind* kind = Schema::Get().FindKind(det.record_kind());
  const FieldPolicy* policy = kind ? kind->FindField(det.field()) : nullptr;
  v.record_kind = kind ? kind->short_name : det.record_kind();
  v.field = policy ? policy->name : std::to_string(det.field());
  v.state = c.state() == teduh::casework::v1::CONFLICT_STATE_RESOLVED ? "resolved" : "open";
  v.detected_ms = det.detected_at();
  v.resolved_by = c.resolution().resolved_by();
  v.resolution = c.resolution().resolution();
  v.resolved_ms = c.resolution().resolved_at();
  auto side = [&](const teduh::casework::v1::ConflictSide& in, ConflictSideView* out,
                  std::string* plain) -> Outcome<void> {
    out->author = in.author();
    out->stamp.hlc = in.stamp_hlc();
    if (auto d = IdFromBytes(in.stamp_device())) out->stamp.device = *d;
    out->written_ms = HlcMillis(in.origin_hlc() != 0 ? in.origin_hlc() : in.stamp_hlc());
    if (!decrypt || !kind || !policy) return {};
    StoredValue sv;
    sv.field = det.field();
    sv.sealed = in.sealed();
    sv.key_class = in.key_class();
    sv.key_version = in.key_version();
    sv.value = in.value();
    sv.stamp = out->stamp;
    sv.origin_hlc = in.origin_hlc();
    error_code failed;
    out->value = RenderValue(v.record_id, kind->full_name, v.case_id, *policy, std::move(sv), lang,
                             plain, &failed);
    if (failed) return Fail(failed, Tr("cannot open a conflict's value"));
    return {};
  };
  if (auto r = side(det.kept(), &v.kept, kept_plain); !r) return r.error();
  if (auto r = side(det.other(), &v.other, other_plain); !r) return r.error();
  return v;
}

Outcome<std::vector<ConflictView>> Device::ListConflicts(bool include_resolved) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  auto recs = store_->ListRecords(kConflictKind, std::nullopt);
  if (!recs) return recs.error();
  std::vector<ConflictView> out;
  for (const auto& r : *recs) {
    auto v = LoadConflictLocked(r.record_id, false, "en");
    if (!v) return v.error();
    if (v->state == "open" || include_resolved) out.push_back(std::move(*v));
  }
  std::stable_sort(out.begin(), out.end(), [](const ConflictView& a, const ConflictView& b) {
    return a.detected_ms < b.detected_ms;
  });
  return out;
}

Outcome<ConflictView> Device::ShowConflict(std::string_view conflict_ref, std::string_view lang,
                                           ViewLog log) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  auto id = ResolveRecordLocked(kConflictKind, conflict_ref, "conflict");
  if (!id) return id.error();
  if (log == ViewLog::kRecord) {
    auto rec = store_->GetRecord(*id);
    if (!rec) return rec.error();
    if (*rec && (*rec)->parent_id)
      if (auto r = RecordAccessLocked(*(*rec)->parent_id); !r) return r.error();
  }
  return LoadConflictLocked(*id, true, lang);
}

Outcome<Id> Device::ResolveConflict(std::string_view conflict_ref, std::string_view take,
                                    const std::optional<std::string>& value) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  if (meta_->role != Role::ROLE_OFFICE && meta_->role != Role::ROLE_SUPERVISOR) {
    return Fail(errc::forbidden, Tr("only office staff and supervisors resolve conflicts"));
  }
  if (take.empty() == !value.has_value()) {
    return Fail(errc::invalid_argument, Tr("give either --take kept|other|mine|theirs or --value"));
  }
  auto id = ResolveRecordLocked(kConflictKind, conflict_ref, "conflict");
  if (!id) return id.error();
  std::string kept_plain, other_plain;
  auto v = LoadConflictLocked(*id, true, "en", &kept_plain, &other_plain);
  if (!v) return v.error();
  struct Wiper {
    std::string& a;
    std::string& b;
    ~Wiper() {
      crypto::Wipe(a);
      crypto::Wipe(b);
    }
  } wiper{kept_plain, other_plain};
  if (v->state == "resolved") {
    return Fail(errc::invalid_argument,
                TrF("the conflict was already resolved by {}", v->resolved_by));
  }
  auto target = store_->GetRecord(v->record_id);
  if (!target) return target.error();
  if (!*target) return Fail(errc::not_found, Tr("the conflicting record is not on this device"));
  const RecordKind& kind = KindOf((*target)->kind);
  const FieldPolicy* policy = kind.FindFieldByName(v->field);
  if (policy == nullptr)
    return Fail(errc::unknown_field, Tr("this program does not know the field"));

  std::string resolution(take);
  std::string chosen;
  if (value) {
    std::string message;
    auto enc = EncodeFieldText(kind, *policy, *value, meta_->time_zone, meta_->codes, &message);
    if (!enc) return Fail(errc::bad_value, message.empty() ? Tr("bad value") : message);
    chosen = std::move(*enc);
    resolution = "value";
  } else {
    std::string side(take);
    if (side == "mine" || side == "theirs") {
      const bool kept_mine = v->kept.author == meta_->user;
      const bool other_mine = v->other.author == meta_->user;
      if (kept_mine == other_mine) {
        return Fail(errc::invalid_argument,
                    Tr("you wrote neither side (or both): use --take kept or --take other"));
      }
      side = (side == "mine") == kept_mine ? "kept" : "other";
    }
    if (side != "kept" && side != "other") {
      return Fail(errc::invalid_argument, Tr("--take is kept, other, mine or theirs"));
    }
    const ConflictSideView& s = side == "kept" ? v->kept : v->other;
    if (s.value.readability != Readability::kReadable) {
      return Fail(errc::key_missing, TrF("the {} value cannot be read on this device ({})", side,
                                         ReadabilityText(s.value.readability)));
    }
    chosen = side == "kept" ? kept_plain : other_plain;
    resolution = side;
  }

  namespace cw = teduh::casework::v1;
  const RecordKind& ck = KindOf(kConflictKind);
  auto one = [&](auto set) {
    cw::Conflict c;
    set(c);
    return c.SerializeAsString();
  };
  std::vector<PendingSet> marks = {
      {ck.FindFieldByName("state"),
       one([](cw::Conflict& c) { c.set_state(cw::CONFLICT_STATE_RESOLVED); }), std::nullopt},
      {ck.FindFieldByName("resolution"), one([&](cw::Conflict& c) {
         c.mutable_resolution()->set_resolved_by(meta_->user);
         c.mutable_resolution()->set_resolution(resolution);
         c.mutable_resolution()->set_resolved_at(env_->NowMs());
       }),
       std::nullopt},
  };
  const Id case_id = v->case_id;
  const std::optional<Id> parent = (*target)->parent_id;
  auto r = store_->Edit(*hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    std::vector<PendingSet> edit;
    edit.push_back(PendingSet{policy, std::move(chosen), *id});  // sealing wipes it
    if (auto w =
            WriteRecordFields(txn, v->record_id, kind.full_name, parent, case_id, std::move(edit));
        !w)
      return w;
    return WriteRecordFields(txn, *id, kConflictKind, case_id, case_id, std::move(marks));
  });
  crypto::Wipe(chosen);  // when the edit failed before taking it
  if (!r) return r.error();
  return *id;
}

Outcome<void> Device::RecordAccessLocked(const Id& case_id) {
  cw::Access viewer, at;
  viewer.set_viewer(meta_->user);
  at.set_viewed_at(env_->NowMs() / 1000);  // Unix seconds, like every *_at field
  const RecordKind& kind = KindOf(kAccessKind);
  std::vector<PendingSet> sets;
  sets.emplace_back(kind.FindFieldByName("viewer"), viewer.SerializeAsString());
  sets.emplace_back(kind.FindFieldByName("viewed_at"), at.SerializeAsString());
  const Id access_id = NewId();
  return store_->Edit(*hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    return WriteRecordFields(txn, access_id, kAccessKind, case_id, case_id, std::move(sets));
  });
}

Outcome<CaseView> Device::ShowCase(std::string_view case_ref, std::string_view lang, ViewLog log) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  auto case_id = ResolveCaseLocked(case_ref);
  if (!case_id) return case_id.error();
  if (log == ViewLog::kRecord)
    if (auto r = RecordAccessLocked(*case_id); !r) return r.error();  // before anything is shown
  CaseView view;
  view.case_id = *case_id;
  auto fields = RenderFields(*case_id, kCaseKind, *case_id, lang);
  if (!fields) return fields.error();
  view.fields = std::move(*fields);
  auto persons = store_->ListRecords(kPersonKind, *case_id);
  if (!persons) return persons.error();
  for (const auto& p : *persons) {
    auto pf = RenderFields(p.record_id, kPersonKind, *case_id, lang);
    if (!pf) return pf.error();
    view.persons.push_back(RecordView{p.record_id, std::move(*pf)});
  }
  auto notes = store_->ListRecords(kNoteKind, *case_id);
  if (!notes) return notes.error();
  for (const auto& n : *notes) {
    auto nf = RenderFields(n.record_id, kNoteKind, *case_id, lang);
    if (!nf) return nf.error();
    NoteView note;
    note.note_id = n.record_id;
    note.readability = Readability::kNoKey;  // until a body is found
    bool has_body = false;
    for (auto& f : *nf) {
      note.pending = note.pending || f.pending;
      if (f.name == "kind" && f.value.is_string()) note.kind = f.value.get<std::string>();
      if (f.name == "author" && f.value.is_string()) note.author = f.value.get<std::string>();
      if (f.name == "written_at" && f.value.is_number())
        note.written_at = f.value.get<std::int64_t>();
      if (f.name == "body" || f.name == "clinical_body") {
        has_body = true;
        note.clinical = f.name == "clinical_body";
        note.readability = f.readability;
        if (f.readability == Readability::kReadable && f.value.is_string()) {
          note.text = f.value.get<std::string>();
        }
      }
    }
    if (!has_body) note.readability = Readability::kReadable;
    view.notes.push_back(std::move(note));
  }
  std::stable_sort(view.notes.begin(), view.notes.end(), [](const NoteView& a, const NoteView& b) {
    return a.written_at < b.written_at;
  });
  auto assessments = LoadAssessmentsLocked(*case_id, lang);
  if (!assessments) return assessments.error();
  view.assessments = std::move(*assessments);
  auto services = LoadServicesLocked(*case_id, lang);
  if (!services) return services.error();
  view.services = std::move(*services);
  auto accesses = store_->ListRecords(kAccessKind, *case_id);
  if (!accesses) return accesses.error();
  for (const auto& a : *accesses) {
    auto af = store_->GetFields(a.record_id);
    if (!af) return af.error();
    teduh::casework::v1::Access access;
    AccessView av;
    for (const auto& f : *af) {
      if (!f.sealed) access.MergeFromString(f.value);
      av.pending = av.pending || f.pending;
    }
    av.viewer = access.viewer();
    av.viewed_at = access.viewed_at();
    view.accesses.push_back(std::move(av));
  }
  std::stable_sort(
      view.accesses.begin(), view.accesses.end(),
      [](const AccessView& a, const AccessView& b) { return a.viewed_at < b.viewed_at; });
  return view;
}

Outcome<std::vector<CaseSummary>> Device::ListCases() {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  auto cases = store_->ListRecords(kCaseKind, std::nullopt);
  if (!cases) return cases.error();
  const RecordKind& ck = KindOf(kCaseKind);
  const RecordKind& pk = KindOf(kPersonKind);
  std::vector<CaseSummary> out;
  for (const auto& c : *cases) {
    auto fields = store_->GetFields(c.record_id);
    if (!fields) return fields.error();
    cw::Case open;
    CaseSummary s;
    s.case_id = c.record_id;
    for (auto& f : *fields) {
      s.pending = s.pending || f.pending;
      const FieldPolicy* p = ck.FindField(f.field);
      if (p != nullptr && !p->sealed && !f.sealed) open.MergeFromString(f.value);
    }
    auto str = [&](std::string_view name) -> std::string {
      json j = FieldToJson(open, *ck.FindFieldByName(name), meta_->codes);
      return j.is_string() ? j.get<std::string>() : std::string();
    };
    s.case_number = open.case_number();
    s.received_at = open.received_at();
    s.stage = open.stage() != 0 ? str("stage") : "";
    s.risk_level = open.risk_level() != 0 ? str("risk_level") : "";
    s.category = open.category() != 0 ? str("category") : "";
    json vt = FieldToJson(open, *ck.FindFieldByName("violence_types"), meta_->codes);
    if (vt.is_array()) {
      for (const auto& v : vt) {
        if (v.is_string()) s.violence_types.push_back(v.get<std::string>());
      }
    }
    s.assigned_pendamping = open.assigned_pendamping();
    s.assigned_konselor = open.assigned_konselor();
    s.assigned_psikolog = open.assigned_psikolog();
    auto persons = store_->ListRecords(kPersonKind, c.record_id);
    if (!persons) return persons.error();
    for (const auto& p : *persons) {
      auto pf = store_->GetFields(p.record_id);
      if (!pf) return pf.error();
      cw::Person person;
      const StoredValue* name = nullptr;
      for (const auto& f : *pf) {
        if (f.field == cw::Person::kRoleFieldNumber && !f.sealed) person.MergeFromString(f.value);
        if (f.field == cw::Person::kNameFieldNumber) name = &f;
      }
      if (person.role() != cw::PERSON_ROLE_VICTIM || name == nullptr) continue;
      Readability r;
      auto plain = OpenValue(p.record_id, kPersonKind, c.record_id, *name, &r);
      if (!plain) return plain.error();
      if (r == Readability::kReadable && *plain) {
        auto msg = DecodeFieldValue(pk, **plain);
        crypto::Wipe(**plain);
        if (msg) {
          auto* n = dynamic_cast<cw::Person*>(msg->get());
          std::string nm = n ? n->name() : std::string();
          if (!nm.empty()) s.victim_initials = Initials(nm);
          crypto::Wipe(nm);
        }
      }
      break;
    }
    out.push_back(std::move(s));
  }
  std::stable_sort(out.begin(), out.end(), [](const CaseSummary& a, const CaseSummary& b) {
    return a.received_at > b.received_at;
  });
  return out;
}

Outcome<DeviceStatus> Device::Status(bool all) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  DeviceStatus st;
  st.device = InfoLocked();
  auto counts = store_->CountOutbox();
  if (!counts) return counts.error();
  st.counts = *counts;
  auto entries = all ? store_->ListOutbox(true, std::numeric_limits<std::int64_t>::max())
                     : store_->ListOutbox(false, 200);
  if (!entries) return entries.error();
  for (auto& e : *entries) {
    OutboxItem item;
    const RecordKind* rk = Schema::Get().FindKind(e.kind);
    item.kind_short = rk ? rk->short_name : e.kind;
    const FieldPolicy* fp = rk ? rk->FindField(e.field) : nullptr;
    item.field_name = fp ? fp->name : std::to_string(e.field);
    item.entry = std::move(e);
    item.message = ServerVerdictText(item.entry);  // the officer's language
    st.outbox.push_back(std::move(item));
  }
  if (auto v = store_->GetMeta("last_sync_ms"); v && *v) {
    try {
      st.last_sync_ms = std::stoll(**v);
    } catch (const std::exception&) {
    }
  }
  if (auto v = store_->GetMeta("last_sync_result"); v && *v) st.last_sync_result = **v;
  st.clock_offset_ms = env_->offset();
  for (auto cls : {teduh::ACCESS_CLASS_GENERAL, teduh::ACCESS_CLASS_CLINICAL}) {
    for (std::uint32_t e = 1; vault_->latest_epoch(cls) && e <= *vault_->latest_epoch(cls); ++e) {
      if (vault_->class_key(cls, e)) st.keys.push_back(fmt::format("{}/{}", ClassName(cls), e));
    }
  }
  st.holds_unit_root_key = !vault_->unit_root_sk().empty();
  if (auto n = store_->CountSetAside()) st.set_aside = *n;
  return st;
}

// ---- Network -------------------------------------------------------------------------

Outcome<std::unique_ptr<SyncClient>> Device::ConnectAndAuthenticate(pb::Welcome* welcome) {
  std::string url, server_id;
  Id device_id;
  crypto::SecureBuffer sign_sk;
  {
    std::lock_guard g(mu_);
    if (auto r = CheckOpen(); !r) return r.error();
    url = meta_->server_url;
    server_id = meta_->server_id;
    device_id = meta_->device_id;
    auto k = vault_->device_sign_sk().Clone();
    if (!k) return Fail(k.error(), Tr("cannot allocate guarded memory"));
    sign_sk = std::move(*k);
  }
  Connector connect = options_.connector ? options_.connector : Connector(ConnectWebSocket);
  // A busy server is tried again after its hint, with jitter so that devices
  // turned away together do not return together, within busy_wait in all.
  const auto give_up = std::chrono::steady_clock::now() + options_.transport.busy_wait;
  std::unique_ptr<SyncClient> client;
  Outcome<pb::Welcome> w = Fail(errc::server_busy, "");
  for (;;) {
    auto transport = connect(url, options_.transport);
    if (!transport) return transport.error();
    client = std::make_unique<SyncClient>(std::move(*transport));
    w = client->Authenticate(device_id, sign_sk, server_id);
    if (w || w.error().code != errc::server_busy) break;
    client->Close();
    const std::uint32_t hint = std::max<std::uint32_t>(client->retry_after_ms(), 1000);
    const auto wait = std::chrono::milliseconds(hint / 2 + crypto::RandomUniform(hint));
    if (std::chrono::steady_clock::now() + wait > give_up) {
      Failure busy = w.error();
      busy.message = TrF("{}; try again in {} s", busy.message, (hint + 999) / 1000);
      return busy;
    }
    std::this_thread::sleep_for(wait);
  }
  sign_sk.Reset();
  if (!w && w.error().code == errc::wipe_ordered && client->wipe_order()) {
    Failure f = CarryOutWipe(*client);
    client->Close();
    return f;
  }
  if (!w) {
    std::lock_guard g(mu_);
    std::string state;
    if (w.error().code == errc::device_pending) state = "pending";
    if (w.error().code == errc::device_revoked) state = "revoked";
    if (!state.empty() && meta_ && meta_->state != state) {
      meta_->state = state;
      (void)SaveMeta();  // display only; the server is the authority
    }
    return w.error();
  }
  *welcome = std::move(*w);
  return client;
}

Outcome<bool> Device::RolledBackLocked(const pb::Welcome& welcome,
                                       std::uint64_t* acknowledged_mark) {
  // A store put back from a file-level copy keeps its generation: this
  // device has seen newer data under it than the store holds (PROTOCOL §6).
  if (!welcome.has_head_seq()) return false;  // a server from before head_seq
  auto cursor = store_->Cursor();
  if (!cursor) return cursor.error();
  auto answered = store_->HighestAnsweredSeq();
  if (!answered) return answered.error();
  *acknowledged_mark = *answered;
  // Said also after a restore that gave the store a new generation: the
  // server then learns which of this device's changes it lost.
  if (*answered > welcome.device_mark()) return true;
  return cursor->generation != 0 && cursor->generation == welcome.generation() &&
         cursor->last_seq > welcome.head_seq();
}

Outcome<std::size_t> Device::AcceptWelcome(const pb::Welcome& welcome, std::size_t* bad_grants) {
  auto pinned = vault_->pinned_unit_root_pk();
  if (!pinned) return Fail(errc::vault_corrupt, Tr("this device has no pinned unit key"));
  std::string pinned_pk = BytesOf(*pinned);
  if (!welcome.unit_root_pk().empty() && welcome.unit_root_pk() != pinned_pk) {
    return Fail(errc::wrong_unit, Tr("the server's unit key changed: refusing to sync"));
  }
  bool changed = meta_->state != "active" || meta_->user != welcome.user() ||
                 (welcome.role() != Role::ROLE_UNSPECIFIED && meta_->role != welcome.role());
  meta_->state = "active";
  if (!welcome.user().empty()) meta_->user = welcome.user();
  if (welcome.role() != Role::ROLE_UNSPECIFIED) meta_->role = welcome.role();
  if (!welcome.unit_id().empty() && meta_->unit_id != welcome.unit_id()) {
    meta_->unit_id = welcome.unit_id();
    changed = true;
  }
  if (!welcome.unit_name().empty() && meta_->unit_name != welcome.unit_name()) {
    meta_->unit_name = welcome.unit_name();
    changed = true;
  }
  // A server older than the time zone sends none: the device keeps its own.
  if (auto zone = ParseTimeZone(welcome.time_zone()); zone && *zone != meta_->time_zone) {
    meta_->time_zone = *zone;
    changed = true;
  }
  // The unit's own codes; a server older than them sends none, and a unit
  // never removes one, so an empty list keeps what the device has. A code
  // that is not well formed is left out (Restore), the others kept; at most
  // kMaxUnitCodes are read.
  if (welcome.codes_size() > 0) {
    CodeBook codes;
    for (const auto& c : welcome.codes()) {
      if (codes.UnitCodeCount() >= kMaxUnitCodes) break;
      codes.Restore(CodeEntryFromProto(c));
    }
    Meta with;
    with.codes = std::move(codes);
    if (with.CodesToJson() != meta_->CodesToJson()) {
      meta_->codes = std::move(with.codes);
      changed = true;
    }
  }
  if (changed) {
    if (auto r = SaveMeta(); !r) return r.error();
  }
  // Clock: trust the server's time when ours is off by more than a minute.
  std::int64_t measured = welcome.server_time_ms() - env_->BaseNowMs();
  std::int64_t offset =
      (welcome.server_time_ms() != 0 && std::llabs(measured) > 60'000) ? measured : 0;
  if (offset != env_->offset()) {
    env_->set_offset(offset);
    if (auto r = store_->SetMeta("clock_offset_ms", std::to_string(offset)); !r) return r.error();
  }
  // Grants (PROTOCOL §2.5): verify against the pinned root key, then open.
  std::map<std::pair<teduh::AccessClass, std::uint32_t>, crypto::SecureBuffer> keys;
  auto box_pk = crypto::BoxPublicKeyOf(vault_->device_box_sk());
  if (!box_pk) return Fail(box_pk.error(), Tr("the device key is damaged"));
  std::size_t bad = 0;
  for (const auto& gr : welcome.grants()) {
    auto cls = NormalClass(gr.key_class());
    if (gr.device_id() != AsBytes(meta_->device_id)) continue;
    if (vault_->class_key(cls, gr.epoch()) != nullptr) continue;
    std::string m = GrantMessage(gr.device_id(), cls, gr.epoch(), gr.sealed_key());
    if (!crypto::Verify(AsSpan(pinned_pk), AsSpan(m), AsSpan(gr.signature()))) {
      ++bad;
      continue;
    }
    auto key = crypto::OpenSealed(*box_pk, vault_->device_box_sk(), AsSpan(gr.sealed_key()));
    if (!key || key->size() != 32) {
      ++bad;
      continue;
    }
    keys.emplace(std::make_pair(cls, gr.epoch()), std::move(*key));
  }
  std::size_t added = keys.size();
  if (!keys.empty()) {
    if (auto r = vault_->AddClassKeys(std::move(keys)); !r) return r.error();
  }
  auto custody = AcceptCustodyLocked(welcome, pinned_pk, &bad);
  if (!custody) return custody.error();
  added += *custody;
  // Retired epochs (signed by the unit root key) are deleted; never the one
  // new case keys are written under.
  std::vector<std::pair<teduh::AccessClass, std::uint32_t>> retired;
  for (const auto& rt : welcome.retired()) {
    const auto cls = NormalClass(rt.key_class());
    if (vault_->class_key(cls, rt.epoch()) == nullptr || rt.unit_id() != meta_->unit_id) continue;
    auto writing = WriteEpochLocked(cls);
    if (!writing || rt.epoch() >= *writing) continue;
    if (!crypto::Verify(AsSpan(pinned_pk), AsSpan(RetirementMessage(cls, rt.epoch(), rt.unit_id())),
                        AsSpan(rt.signature()))) {
      ++bad;
      continue;
    }
    retired.emplace_back(cls, rt.epoch());
  }
  if (!retired.empty()) {
    if (auto r = vault_->RemoveClassKeys(retired); !r) return r.error();
    // Unwrapped case keys stay valid (a retired epoch wraps none any more).
  }
  // A grant or retirement that does not verify is ignored; the report shows it.
  if (bad_grants != nullptr) *bad_grants = bad;
  return added;
}

// Every pulled sealed value is opened once (and wiped) so that a damaged or
// substituted value is reported by the sync that brings it, not months later
// when someone opens the case. It is stored either way: the device holds the
// server's state, and shows such a value as unreadable.
Outcome<void> Device::VerifyPulledLocked(const pb::Changes& batch, SyncReport* report) {
  const std::string self(reinterpret_cast<const char*>(meta_->device_id.data()),
                         meta_->device_id.size());
  for (const auto& ch : batch.changes()) {
    // This device sealed its own writes (they are still verified whenever opened).
    if (!ch.sealed() || ch.stamp().device_id() == self) continue;
    auto record_id = IdFromBytes(ch.record_id());
    if (!record_id) continue;
    Id case_id = *record_id;
    if (!ch.parent_id().empty()) {
      auto parent = IdFromBytes(ch.parent_id());
      if (!parent) continue;
      case_id = *parent;
    }
    StoredValue v = StoredFromChange(ch);
    Readability readability = Readability::kReadable;
    auto plain = OpenValue(*record_id, ch.kind(), case_id, v, &readability);
    if (!plain) return plain.error();
    if (*plain) crypto::Wipe(**plain);
    if (readability == Readability::kReadable) {
      ++report->verified;
    } else if (readability == Readability::kNoKey) {
      ++report->not_for_this_device;
    } else {
      ++report->unreadable;
    }
  }
  return {};
}

Outcome<LocalStoreCheck> Device::CheckStore() {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  return store_->Check();
}

Outcome<SyncReport> Device::Sync(const std::function<void(const SyncProgress&)>& progress,
                                 bool push_only) {
  SyncReport report;
  SyncProgress prog;
  auto tell = [&](std::string_view phase) {
    prog.phase = std::string(phase);
    if (progress) progress(prog);
  };
  auto record = [&](const std::string& result) {
    std::lock_guard g(mu_);
    if (!store_) return;
    (void)store_->SetMeta("last_sync_ms", std::to_string(env_->BaseNowMs()));
    (void)store_->SetMeta("last_sync_result", result);
  };
  auto fail = [&](const Failure& f) -> Outcome<SyncReport> {
    record(f.message);
    return f;
  };
  tell("connecting");
  pb::Welcome welcome;
  bool rolled_back = false;  // the server's store was put back from a file-level copy
  std::uint64_t acknowledged_mark = 0;
  auto client = ConnectAndAuthenticate(&welcome);
  if (!client) return fail(client.error());
  auto welcome_in = [&]() -> Outcome<void> {
    std::lock_guard g(mu_);
    if (auto r = CheckOpen(); !r) return r.error();
    auto added = AcceptWelcome(welcome, &report.bad_grants);
    if (!added) return added.error();
    report.grants_added = *added;
    if (auto r = store_->RaiseDeviceSeq(welcome.device_mark()); !r) return r.error();
    auto seen = RolledBackLocked(welcome, &acknowledged_mark);
    if (!seen) return seen.error();
    rolled_back = *seen;
    auto due = store_->RepairDue(kStoreCheckIntervalMs);
    if (!due) return due.error();
    if (*due) {
      auto repair = store_->Repair();
      if (!repair) return repair.error();
      report.store_damaged_rows = repair->found.rows.size();
      report.store_unsendable = repair->unreadable;
      report.store_damage_left = std::move(repair->remaining);
    }
    auto counts = store_->CountOutbox();
    if (!counts) return counts.error();
    prog.to_push = counts->pending;
    return {};
  };
  if (auto r = welcome_in(); !r) return fail(r.error());  // fail() takes the lock itself
  // Values the server found damaged in its store: this device offers its
  // copies, and the server keeps only what is byte for byte what it stored.
  // A courtesy to the unit: a failure here does not stop the sync.
  auto offer_repairs = [&]() -> Outcome<void> {
    std::vector<std::pair<Id, std::uint32_t>> wanted;
    for (const auto& ref : welcome.repair())
      if (auto id = IdFromBytes(ref.record_id())) wanted.emplace_back(*id, ref.field());
    std::vector<pb::FieldChange> copies;
    {
      std::lock_guard g(mu_);
      if (auto r = CheckOpen(); !r) return r.error();
      auto c = store_->ServerCopies(wanted);
      if (!c) return c.error();
      copies = std::move(*c);
    }
    if (copies.empty()) return {};
    tell("repairing");
    report.repairs_offered = copies.size();
    // In frames within the server's bound (up to 256 values of 64 KiB would not fit one).
    const std::size_t budget =
        std::max<std::size_t>((*client)->limits().max_frame_bytes, 8192) - 4096;
    std::size_t next = 0;
    while (next < copies.size()) {
      std::vector<pb::FieldChange> frame;
      std::size_t bytes = 0;
      for (; next < copies.size(); ++next) {
        const std::size_t size = copies[next].ByteSizeLong() + 16;
        if (!frame.empty() && bytes + size > budget) break;
        bytes += size;
        frame.push_back(std::move(copies[next]));
      }
      auto result = (*client)->OfferRepairs(&frame);
      if (!result) return result.error();
      report.repaired_on_server += result->repaired();
    }
    return {};
  };
  if (welcome.repair_size() > 0) (void)offer_repairs();
  const std::size_t push_limit = std::max<std::size_t>(1, (*client)->limits().max_push_changes);
  const std::uint32_t pull_limit =
      static_cast<std::uint32_t>(std::max<std::size_t>(1, (*client)->limits().max_pull_changes));

  // Cases with an edit answered key_replaced: re-sealed and sent again
  // after the pull brought the new key.
  std::set<Id> resend;
  // Edits given a new number (seq_reused) are sent again in the same pass;
  // a server that refuses more numbers than there are edits is not followed.
  std::size_t renumber_budget = prog.to_push + push_limit;
  auto push_all = [&]() -> Outcome<void> {
    std::uint64_t after = 0;  // one pass: an edit left pending is not sent twice
    for (;;) {
      std::vector<pb::FieldChange> batch;
      {
        std::lock_guard g(mu_);
        if (auto r = CheckOpen(); !r) return r.error();
        auto b = store_->PendingChanges(push_limit, after);
        if (!b) return b.error();
        batch = std::move(*b);
      }
      if (batch.empty()) return {};
      after = batch.back().device_seq();
      tell("pushing");
      auto result = (*client)->Push(batch);
      for (auto& c : batch) {
        if (!c.sealed()) crypto::Wipe(*c.mutable_value());
      }
      if (!result && result.error().code == errc::server_disk_full) {
        // Nothing of the batch was saved; the outbox waits, and the pull
        // still brings what others sent.
        report.server_disk_full = true;
        return {};
      }
      if (!result) return result.error();
      std::lock_guard g(mu_);
      if (auto r = CheckOpen(); !r) return r.error();
      auto applied = store_->ApplyPushResults(batch, *result);
      if (!applied) return applied.error();
      report.pushed += batch.size() - applied->unanswered - applied->key_replaced -
                       applied->renumbered - applied->held_back;
      report.renumbered += applied->renumbered;
      report.held_back += applied->held_back;
      if (applied->renumbered > renumber_budget) {
        return Fail(errc::server_error,
                    Tr("the server refused the edits' sequence numbers again and again; they "
                       "stay pending"));
      }
      renumber_budget -= applied->renumbered;
      report.accepted += applied->accepted;
      report.merged += applied->merged;
      report.conflict += applied->conflict;
      report.rejected += applied->rejected;
      if (result->clock_offset_ms() != 0) report.clock_offset_ms = result->clock_offset_ms();
      prog.pushed = report.pushed;
      if (applied->unanswered > 0) {
        return Fail(errc::server_error,
                    Tr("the server did not answer every change; they stay pending and are "
                       "resent"));
      }
      if (applied->key_replaced > 0) {
        // Sealed under a case key a re-key replaced: the pull brings the new
        // key, the edits are sealed again, and they go after it.
        for (const auto& res : result->results()) {
          if (res.status() != pb::ChangeResult::STATUS_REJECTED ||
              res.reason() != kKeyReplacedReason)
            continue;
          for (const auto& c : batch) {
            if (c.device_seq() != res.device_seq()) continue;
            auto id = IdFromBytes(c.parent_id().empty() ? c.record_id() : c.parent_id());
            if (id) resend.insert(*id);
          }
        }
      }
      // The server has no more room today: the rest waits for a later sync.
      if (applied->held_back > 0) return {};
    }
  };
  auto pull_all = [&]() -> Outcome<void> {
    PullCursor cursor;
    {
      std::lock_guard g(mu_);
      if (auto r = CheckOpen(); !r) return r.error();
      auto c = store_->Cursor();
      if (!c) return c.error();
      cursor = *c;
    }
    tell("pulling");
    auto request = (*client)->RequestPull(cursor.generation, cursor.last_seq, pull_limit,
                                          rolled_back, acknowledged_mark);
    rolled_back = false;  // said once; the reply resets the cursor
    if (!request) return request.error();
    for (;;) {
      auto changes = (*client)->AwaitChanges(*request);
      if (!changes) return changes.error();
      const bool more = changes->has_more();
      if (more) {
        if (changes->last_seq() <= cursor.last_seq && !changes->reset()) {
          return Fail(errc::server_error, Tr("the server keeps sending the same changes"));
        }
        // The server reads the next batch while this one is stored; the cursor
        // saved with this batch is exactly where that request starts.
        request = (*client)->RequestPull(changes->generation(), changes->last_seq(), pull_limit);
        if (!request) return request.error();
      }
      std::lock_guard g(mu_);
      if (auto r = CheckOpen(); !r) return r.error();
      auto purge = VerifiedShredsLocked(*changes, &report);
      if (!purge) return purge.error();
      const std::size_t shreds = purge->size();
      // Cases no longer assigned to this user: deleted once nothing of them
      // is unsent (the push above sent what could be sent; an edit that is
      // still pending keeps the case here rather than be lost).
      for (const auto& raw : changes->evicted()) {
        auto case_id = IdFromBytes(raw);
        if (!case_id) continue;
        auto pending = store_->CaseHasPending(*case_id);
        if (!pending) return pending.error();
        if (*pending) {
          ++report.evictions_kept;
          continue;
        }
        purge->push_back(*case_id);
        ++report.evicted;
      }
      // Key records of a case this device left, sent with its re-key's drop.
      for (auto& drop : *changes->mutable_key_drops())
        for (auto& rec : *drop.mutable_key_records()) *changes->add_changes() = std::move(rec);
      auto applied = store_->ApplyPulled(*hlc_, *changes, *purge, welcome.held_through());
      if (!applied) return applied.error();
      for (const Id& gone : *purge) DropCaseKeysLocked(gone);
      for (const auto& drop : changes->key_drops()) {
        auto dropped = ApplyKeyDropLocked(drop, &report.resealed);
        if (!dropped) return dropped.error();
        if (*dropped) ++report.rekeyed;
      }
      report.shredded += shreds;
      if (changes->reset()) report.reset = true;
      report.pulled += applied->applied + applied->deferred;
      report.set_aside += applied->set_aside;
      report.deferred += applied->deferred;
      if (auto v = VerifyPulledLocked(*changes, &report); !v) return v.error();
      prog.pulled = report.pulled;
      cursor.generation = changes->generation();
      cursor.last_seq = changes->last_seq();
      if (!more) return {};
    }
  };
  if (rolled_back && !push_only) {
    // The store forgot what this device saw: say so before pushing (a push
    // would raise the store's head and mark and hide it). The reset that
    // answers re-queues every acknowledged change; the push below sends it.
    if (auto r = pull_all(); !r) return fail(r.error());
  }
  if (auto r = push_all(); !r) return fail(r.error());
  // Held epochs are reported after the push: every case key this device made
  // under an older epoch has then reached the server (retirement relies on it).
  // A server with a full disk takes no report: it is made at a later sync.
  if (!report.server_disk_full)
    if (auto r = AckHeldKeys(**client, welcome); !r) return fail(r.error());
  // The server re-stamped our changes: our clock had run ahead. Everything
  // pushed now carries the server's stamps; the HLC comes back with them.
  auto rebase = [&]() -> Outcome<void> {
    std::lock_guard g(mu_);
    if (auto r = CheckOpen(); !r) return r.error();
    auto pending = store_->CountOutbox();
    if (!pending) return pending.error();
    if (pending->pending != 0) return {};
    auto top = store_->RebaseHlc();
    if (!top) return top.error();
    hlc_ = std::make_unique<Hlc>(*env_, *top);
    return {};
  };
  if (report.clock_offset_ms != 0) {
    if (auto r = rebase(); !r) return fail(r.error());  // fail() takes the lock itself
  }
  if (!push_only) {
    if (auto r = pull_all(); !r) return fail(r.error());
    if (report.reset) {
      // A restored server: push what it lost (idempotent), then catch up.
      if (auto r = push_all(); !r) return fail(r.error());
      if (auto r = pull_all(); !r) return fail(r.error());
    }
    if (!resend.empty()) {
      // Edits re-sealed under the new key (whether or not the drop came).
      auto reseal = [&]() -> Outcome<void> {
        std::lock_guard g(mu_);
        if (auto r = CheckOpen(); !r) return r.error();
        for (const Id& case_id : resend) {
          auto n = ResealCaseLocked(case_id);
          if (!n) return n.error();
          report.resealed += *n;
        }
        return {};
      };
      if (auto r = reseal(); !r) return fail(r.error());
      resend.clear();
      if (auto r = push_all(); !r) return fail(r.error());
    }
  }
  report.poked = (*client)->poked();
  (*client)->Close();
  {
    std::lock_guard g(mu_);
    report.state = meta_->state;
  }
  record(push_only ? "ok: sent only" : "ok");
  tell("done");
  return report;
}

Outcome<std::unique_ptr<SyncClient>> Device::ConnectOnline() {
  pb::Welcome welcome;
  auto client = ConnectAndAuthenticate(&welcome);
  if (!client) return client.error();
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  if (auto r = AcceptWelcome(welcome, nullptr); !r) return r.error();
  return std::move(*client);
}

namespace {

// A grant of K[cls][epoch] to a device: sealed to its box key, signed with
// the unit root key.
Outcome<teduh::keys::v1::Grant> SignedGrant(const Vault& vault, const std::string& device_id,
                                            const std::string& box_pk, teduh::AccessClass cls,
                                            std::uint32_t epoch) {
  const crypto::SecureBuffer* k = vault.class_key(cls, epoch);
  if (k == nullptr) return Fail(errc::key_missing, Tr("this admin device lacks a key to grant"));
  auto sealed = crypto::SealTo(AsSpan(box_pk), k->view());
  if (!sealed) return Fail(sealed.error(), Tr("cannot seal the key to the device"));
  teduh::keys::v1::Grant g;
  g.set_device_id(device_id);
  g.set_key_class(cls);
  g.set_epoch(epoch);
  g.set_sealed_key(BytesOf(*sealed));
  auto sig = crypto::Sign(vault.unit_root_sk(),
                          AsSpan(GrantMessage(device_id, cls, epoch, g.sealed_key())));
  if (!sig) return Fail(sig.error(), Tr("cannot sign the grant"));
  g.set_signature(BytesOf(*sig));
  return g;
}

std::string ApprovedBoxKey(std::string_view device_id) {
  return "approved_box_" + ToHex(AsSpan(device_id));
}

std::string RevokedKey(std::string_view device_id) { return "revoked_" + ToHex(AsSpan(device_id)); }

std::string RotationMetaKey(teduh::AccessClass cls) {
  return fmt::format("rotation_pending_{}", static_cast<int>(cls));
}

RemoteDevice RemoteFromInfo(const pb::DeviceInfo& d) {
  RemoteDevice r;
  if (auto id = IdFromBytes(d.device_id())) r.device_id = *id;
  r.user = d.user();
  r.role = RoleName(d.role());
  r.state = StateName(d.state());
  r.label = d.label();
  r.fingerprint = d.sign_pk().empty() ? "" : DeviceFingerprint(d.sign_pk(), d.box_pk());
  r.enrolled_ms = d.enrolled_ms();
  r.last_sync_ms = d.last_sync_ms();
  r.revoked_ms = d.revoked_ms();
  r.wipe_ordered = d.wipe_ordered();
  r.wiped_ms = d.wiped_ms();
  r.root_key = d.root_key();
  if (d.restore_to() > d.restore_from()) {
    r.restore_ms = d.restore_ms();
    r.restore_lost = d.restore_to() - d.restore_from();
    r.resent = std::min(d.resent(), r.restore_lost);
  }
  return r;
}

}  // namespace

bool Device::UnitApprovedLocked(const teduh::sync::v1::DeviceInfo& d) const {
  auto pinned = vault_->pinned_unit_root_pk();
  return pinned && d.approval().size() == crypto::kSignatureBytes &&
         crypto::Verify(*pinned, AsSpan(ApprovalMessage(d.role(), d.sign_pk(), d.box_pk())),
                        AsSpan(d.approval()));
}

Failure Device::CarryOutWipe(SyncClient& client) {
  const teduh::keys::v1::WipeOrder& order = *client.wipe_order();
  teduh::keys::v1::WipeReceipt receipt;
  crypto::SecureBuffer sign_sk;
  {
    std::lock_guard g(mu_);
    if (auto r = CheckOpen(); !r) return r.error();
    auto pinned = vault_->pinned_unit_root_pk();
    if (!pinned)
      return Failure{make_error_code(errc::vault_corrupt),
                     Tr("this device has no pinned unit key")};
    const bool for_us =
        order.device_id() == AsBytes(meta_->device_id) && order.unit_id() == meta_->unit_id;
    const std::string m = WipeOrderMessage(order.device_id(), order.unit_id(), order.issued_ms(),
                                           order.admin_device_id());
    if (!for_us || !crypto::Verify(*pinned, AsSpan(m), AsSpan(order.signature()))) {
      return Failure{make_error_code(errc::integrity),
                     Tr("the server sent an order to erase this device that the unit's admin did "
                        "not sign for it: nothing was erased. Tell your admin")};
    }
    auto k = vault_->device_sign_sk().Clone();
    if (!k) return Failure{k.error(), Tr("cannot allocate guarded memory")};
    sign_sk = std::move(*k);
    // Keys in memory first, then the files: the vault (every key), the
    // store (values under those keys) and device.json.
    const std::int64_t erased_ms = env_->NowMs();
    case_keys_.clear();
    case_key_order_.clear();
    spare_case_key_.Reset();
    store_.reset();
    vault_.reset();
    locked_ = true;
    Vault::Erase(home_ / kVaultFile);
    std::error_code fs_ec;
    for (auto suffix : {"", "-wal", "-shm"}) {
      std::filesystem::path p = home_ / (std::string(kStoreFile) + suffix);
      if (std::filesystem::exists(p, fs_ec)) Vault::Erase(p);
    }
    std::filesystem::remove(home_ / kMetaFile, fs_ec);
    json note = {{"device_id", ToHex(meta_->device_id)},
                 {"erased_ms", erased_ms},
                 {"order_issued_ms", order.issued_ms()}};
    (void)WriteFileAtomically(home_ / kErasedFile, note.dump(2) + "\n");
    receipt.set_device_id(order.device_id());
    receipt.set_order_signature(order.signature());
    receipt.set_erased_ms(erased_ms);
  }
  auto sig = crypto::Sign(sign_sk,
                          AsSpan(WipeReceiptMessage(receipt.device_id(), receipt.order_signature(),
                                                    receipt.erased_ms())));
  sign_sk.Reset();
  bool confirmed = false;
  if (sig) {
    receipt.set_signature(BytesOf(*sig));
    confirmed = static_cast<bool>(client.SendWipeReceipt(receipt));
  }
  return Failure{make_error_code(errc::device_revoked),
                 !sig || confirmed
                     ? Tr("this device was revoked by the unit's admin and has erased itself on "
                          "their signed order: its cases and keys are gone from it")
                     : Tr("this device was revoked by the unit's admin and has erased itself on "
                          "their signed order: its cases and keys are gone from it (the server "
                          "did not confirm the receipt)")};
}

Outcome<std::vector<RemoteDevice>> Device::ListRemoteDevices() {
  auto client = ConnectOnline();
  if (!client) return client.error();
  auto list = (*client)->ListDevices();
  (*client)->Close();
  if (!list) return list.error();
  std::vector<RemoteDevice> out;
  for (const auto& d : list->devices()) out.push_back(RemoteFromInfo(d));
  return out;
}

Outcome<Device::AdminTarget> Device::ConnectForDevice(std::string_view device_ref,
                                                      std::string_view action) {
  std::string ref = Lower(Trim(device_ref));
  if (ref.size() < 6 || ref.size() > 32 ||
      !std::all_of(ref.begin(), ref.end(), [](char c) { return std::isxdigit(c); })) {
    return Fail(errc::invalid_argument,
                Tr("a device id is 32 hex digits, or a unique prefix of at least 6"));
  }
  {
    std::lock_guard g(mu_);
    if (auto r = RequireRootAdminLocked(fmt::format("{} devices", action)); !r) return r.error();
  }
  auto client = ConnectOnline();
  if (!client) return client.error();
  auto list = (*client)->ListDevices(ref);
  if (!list) return list.error();
  const pb::DeviceInfo* target = nullptr;
  std::size_t matches = 0;
  for (const auto& d : list->devices()) {
    if (ToHex(AsSpan(d.device_id())).starts_with(ref)) {
      target = &d;
      ++matches;
    }
  }
  if (matches == 0) return Fail(errc::not_found, TrF("no device {} on the server", ref));
  if (matches > 1) {
    return Fail(errc::invalid_argument,
                TrF("{} devices start with {}: type more digits", matches, ref));
  }
  return AdminTarget{std::move(*client), *target};
}

Outcome<RemoteDevice> Device::ApproveDevice(std::string_view device_ref, bool with_root_key,
                                            std::string_view fingerprint) {
  if (with_root_key && fingerprint.empty()) {
    return Fail(errc::invalid_argument,
                Tr("handing over the unit root key needs the device's fingerprint, as its own "
                   "screen shows it (teduh status on that device)"));
  }
  auto found = ConnectForDevice(device_ref, "approve");
  if (!found) return found.error();
  SyncClient& client = *found->client;
  const pb::DeviceInfo* target = &found->device;
  if (target->box_pk().size() != crypto::kBoxPublicKeyBytes) {
    return Fail(errc::malformed_frame, Tr("the server sent no box key for the device"));
  }
  if (target->role() == Role::ROLE_ADMIN && !with_root_key) {
    return Fail(errc::invalid_argument,
                Tr("this device was enrolled with an admin code: approving it hands it the unit "
                   "root key. Compare its fingerprint with its screen, then approve it as an "
                   "admin device"));
  }
  if (target->role() != Role::ROLE_ADMIN && with_root_key) {
    return Fail(errc::invalid_argument,
                Tr("only a device enrolled with an admin code can hold the unit root key"));
  }
  if (!fingerprint.empty()) {
    auto digits = [](std::string_view text) {
      std::string out;
      for (char c : text)
        if (std::isxdigit(static_cast<unsigned char>(c)))
          out += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      return out;
    };
    if (digits(fingerprint) != digits(DeviceFingerprint(target->sign_pk(), target->box_pk()))) {
      return Fail(errc::integrity,
                  Tr("the fingerprint does not match the keys the server lists for this device: "
                     "nothing was approved. Check the fingerprint on the device's screen; if it "
                     "is right, the server is not to be trusted"));
    }
  }
  pb::ApproveDevice req;
  req.set_device_id(target->device_id());
  {
    std::lock_guard g(mu_);
    if (auto r = CheckOpen(); !r) return r.error();
    auto approval =
        crypto::Sign(vault_->unit_root_sk(),
                     AsSpan(ApprovalMessage(target->role(), target->sign_pk(), target->box_pk())));
    if (!approval) return Fail(approval.error(), Tr("cannot sign the grant"));
    req.set_approval(BytesOf(*approval));
    if (with_root_key) {
      // The root key's seed, sealed to the device's box key: only it opens it.
      auto sealed = crypto::SealTo(AsSpan(target->box_pk()),
                                   vault_->unit_root_sk().view().first(crypto::kSignSeedBytes));
      if (!sealed) return Fail(sealed.error(), Tr("cannot seal the unit root key"));
      auto* rg = req.mutable_root_grant();
      rg->set_device_id(target->device_id());
      rg->set_sealed_seed(BytesOf(*sealed));
      auto sig = crypto::Sign(vault_->unit_root_sk(),
                              AsSpan(RootGrantMessage(rg->device_id(), rg->sealed_seed())));
      if (!sig) return Fail(sig.error(), Tr("cannot sign the root key grant"));
      rg->set_signature(BytesOf(*sig));
    }
    for (auto cls : ClassesFor(target->role())) {
      cls = NormalClass(cls);
      // Every epoch still in use (case keys written offline may be under an
      // older one), except that of a rotation not yet committed.
      auto newest = WriteEpochLocked(cls);
      if (!newest) {
        return Fail(errc::key_missing,
                    TrF("this admin device holds no {} key to grant", ClassText(cls)));
      }
      for (std::uint32_t epoch : vault_->epochs(cls)) {
        if (epoch > *newest) continue;
        auto g2 = SignedGrant(*vault_, target->device_id(), target->box_pk(), cls, epoch);
        if (!g2) return g2.error();
        *req.add_grants() = std::move(*g2);
      }
    }
  }
  auto res = client.Approve(req);
  client.Close();
  if (!res) return res.error();
  {
    // The key a rotation may seal the next epochs to (never one the server
    // names later: it could be its own).
    std::lock_guard g(mu_);
    if (auto r = CheckOpen(); !r) return r.error();
    if (auto r =
            store_->SetMeta(ApprovedBoxKey(target->device_id()), ToHex(AsSpan(target->box_pk())));
        !r)
      return r.error();
  }
  if (res->has_device()) return RemoteFromInfo(res->device());
  RemoteDevice r = RemoteFromInfo(*target);
  r.state = "active";
  return r;
}

Outcome<RemoteDevice> Device::RevokeDevice(std::string_view device_ref) {
  auto found = ConnectForDevice(device_ref, "revoke");
  if (!found) return found.error();
  SyncClient& client = *found->client;
  const pb::DeviceInfo& target = found->device;
  pb::RevokeDevice req;
  {
    std::lock_guard g(mu_);
    if (auto r = CheckOpen(); !r) return r.error();
    if (target.device_id() == AsBytes(meta_->device_id)) {
      return Fail(errc::invalid_argument,
                  Tr("this is the device you are using: revoke it from another admin device"));
    }
    auto made = RevocationLocked(target.device_id());
    if (!made) return made.error();
    req = std::move(*made);
  }
  auto res = client.Revoke(req);
  client.Close();
  if (!res) return res.error();
  {
    // Never a key for it again, whatever the server lists later.
    std::lock_guard g(mu_);
    if (auto r = CheckOpen(); !r) return r.error();
    if (auto r = store_->SetMeta(RevokedKey(target.device_id()), "1"); !r) return r.error();
    if (auto r = store_->SetMeta(ApprovedBoxKey(target.device_id()), ""); !r) return r.error();
  }
  return RemoteFromInfo(res->has_device() ? res->device() : target);
}

std::optional<std::uint32_t> Device::WriteEpochLocked(teduh::AccessClass key_class) {
  key_class = NormalClass(key_class);
  std::optional<std::uint32_t> pending;
  if (auto p = store_->GetMeta(RotationMetaKey(key_class)); p && *p && !(*p)->empty()) {
    try {
      pending = static_cast<std::uint32_t>(std::stoul(**p));
    } catch (const std::exception&) {
    }
  }
  std::optional<std::uint32_t> best;
  for (std::uint32_t e : vault_->epochs(key_class))
    if (!pending || e != *pending) best = e;
  return best;
}

Outcome<std::size_t> Device::AcceptCustodyLocked(const pb::Welcome& welcome,
                                                 const std::string& pinned_pk, std::size_t* bad) {
  if (meta_->role != Role::ROLE_ADMIN) return std::size_t{0};
  if (welcome.has_root_grant() && vault_->unit_root_sk().empty()) {
    const auto& rg = welcome.root_grant();
    bool ok = rg.device_id() == AsBytes(meta_->device_id) &&
              crypto::Verify(AsSpan(pinned_pk),
                             AsSpan(RootGrantMessage(rg.device_id(), rg.sealed_seed())),
                             AsSpan(rg.signature()));
    auto box_pk = crypto::BoxPublicKeyOf(vault_->device_box_sk());
    if (ok && box_pk) {
      auto seed = crypto::OpenSealed(*box_pk, vault_->device_box_sk(), AsSpan(rg.sealed_seed()));
      ok = seed && seed->size() == crypto::kSignSeedBytes;
      if (ok) {
        auto pair = crypto::SignKeyPairFromSeed(seed->view());
        // The seed must rebuild the pinned key, not one a server chose.
        ok = pair && BytesOf(pair->public_key) == pinned_pk;
        if (ok) {
          if (auto r = vault_->SetUnitRootKey(std::move(pair->secret_key)); !r) return r.error();
        }
      }
    }
    if (!ok) ++*bad;
  }
  std::size_t added = 0;
  if (vault_->unit_root_sk().empty() || welcome.escrow_size() == 0) return added;
  auto escrow = EscrowKeyPair(vault_->unit_root_sk());
  if (!escrow) return escrow.error();
  std::map<std::pair<teduh::AccessClass, std::uint32_t>, crypto::SecureBuffer> keys;
  for (const auto& e : welcome.escrow()) {
    const auto cls = NormalClass(e.key_class());
    if (vault_->class_key(cls, e.epoch()) != nullptr) continue;
    if (!crypto::Verify(AsSpan(pinned_pk), AsSpan(EscrowMessage(cls, e.epoch(), e.sealed_key())),
                        AsSpan(e.signature()))) {
      ++*bad;
      continue;
    }
    auto key = crypto::OpenSealed(escrow->public_key, escrow->secret_key, AsSpan(e.sealed_key()));
    if (!key || key->size() != crypto::kAeadKeyBytes) {
      ++*bad;
      continue;
    }
    keys.emplace(std::make_pair(cls, e.epoch()), std::move(*key));
  }
  added = keys.size();
  if (!keys.empty()) {
    if (auto r = vault_->AddClassKeys(std::move(keys)); !r) return r.error();
  }
  return added;
}

Outcome<std::vector<teduh::keys::v1::EscrowGrant>> Device::EscrowMissingLocked(
    const pb::Welcome& welcome) {
  std::vector<teduh::keys::v1::EscrowGrant> out;
  if (meta_->role != Role::ROLE_ADMIN || vault_->unit_root_sk().empty()) return out;
  auto escrow = EscrowKeyPair(vault_->unit_root_sk());
  if (!escrow) return escrow.error();
  for (auto cls : {teduh::ACCESS_CLASS_GENERAL, teduh::ACCESS_CLASS_CLINICAL}) {
    const auto writing = WriteEpochLocked(cls);
    for (std::uint32_t epoch : vault_->epochs(cls)) {
      if (!writing || epoch > *writing) continue;  // a rotation not committed yet
      const bool kept =
          std::any_of(welcome.escrow().begin(), welcome.escrow().end(),
                      [&](const teduh::keys::v1::EscrowGrant& e) {
                        return NormalClass(e.key_class()) == cls && e.epoch() == epoch;
                      });
      if (kept) continue;
      auto sealed = crypto::SealTo(escrow->public_key, vault_->class_key(cls, epoch)->view());
      if (!sealed) return Fail(sealed.error(), Tr("cannot seal a class key for recovery"));
      teduh::keys::v1::EscrowGrant e;
      e.set_key_class(cls);
      e.set_epoch(epoch);
      e.set_sealed_key(BytesOf(*sealed));
      auto sig =
          crypto::Sign(vault_->unit_root_sk(), AsSpan(EscrowMessage(cls, epoch, e.sealed_key())));
      if (!sig) return Fail(sig.error(), Tr("cannot sign a class key for recovery"));
      e.set_signature(BytesOf(*sig));
      out.push_back(std::move(e));
    }
  }
  return out;
}

Outcome<void> Device::AckHeldKeys(SyncClient& client, const pb::Welcome& welcome) {
  pb::AckKeys ack;
  bool news = false;
  {
    std::lock_guard g(mu_);
    if (auto r = CheckOpen(); !r) return r.error();
    if (welcome.has_root_grant() && !vault_->unit_root_sk().empty()) {
      ack.set_root_key_held(true);
      news = true;
    }
    auto escrow = EscrowMissingLocked(welcome);
    if (!escrow) return escrow.error();
    for (auto& e : *escrow) *ack.add_escrow() = std::move(e);
    news |= ack.escrow_size() > 0;
    for (const auto& gr : welcome.grants()) {
      if (gr.device_id() != AsBytes(meta_->device_id)) continue;
      if (vault_->class_key(NormalClass(gr.key_class()), gr.epoch()) == nullptr) continue;
      pb::KeyEpoch* k = ack.add_held();
      k->set_key_class(NormalClass(gr.key_class()));
      k->set_epoch(gr.epoch());
      news |= !gr.acked();
    }
  }
  if (!news) return {};
  auto r = client.AckKeys(ack);
  if (!r) return r.error();
  return {};
}

Outcome<RotationReport> Device::RotateClassKey(
    teduh::AccessClass key_class, const std::function<void(std::size_t, std::size_t)>& progress) {
  key_class = NormalClass(key_class);
  RotationReport report;
  report.key_class = key_class;
  {
    std::lock_guard g(mu_);
    if (auto r = RequireRootAdminLocked("rotate keys"); !r) return r.error();
    auto counts = store_->CountOutbox();
    if (!counts) return counts.error();
    if (counts->pending > 0) {
      return Fail(errc::invalid_argument,
                  Tr("this device has unsent edits: run teduh sync first, then rotate"));
    }
  }
  auto client = ConnectOnline();
  if (!client) return client.error();
  auto status = (*client)->KeyStatus();
  if (!status) return status.error();
  std::uint32_t server_epoch = 0;
  for (const auto& c : status->classes())
    if (NormalClass(c.key_class()) == key_class) server_epoch = c.current_epoch();

  // The new epoch: a pending one is resumed; otherwise it is chosen, recorded
  // as pending, and only then made and saved in the vault (a crash in between
  // leaves a pending epoch without a key, which the next run makes).
  std::vector<pb::Rewrap> rewraps;
  const crypto::SecureBuffer* new_key = nullptr;
  {
    std::lock_guard g(mu_);
    if (auto r = CheckOpen(); !r) return r.error();
    auto committed = WriteEpochLocked(key_class);
    if (!committed) {
      return Fail(errc::key_missing,
                  TrF("this device holds no {} key to rotate", ClassText(key_class)));
    }
    auto pending = store_->GetMeta(RotationMetaKey(key_class));
    if (!pending) return pending.error();
    // Never an epoch number some device may already hold: above both this
    // device's newest and the server's (which a restore never lowers).
    if (server_epoch > *committed + 1024 || server_epoch >= 0xFFFFFF00u) {
      return Fail(errc::integrity,
                  TrF("the server says the {} key is at epoch {}, far beyond this device's {}: "
                      "nothing was rotated. Tell your IT admin",
                      ClassText(key_class), server_epoch, *committed));
    }
    report.epoch = std::max(*committed, server_epoch) + 1;
    std::optional<std::uint32_t> resume;
    if (*pending && !(*pending)->empty()) {
      try {
        resume = static_cast<std::uint32_t>(std::stoul(**pending));
      } catch (const std::exception&) {
      }
    }
    // A rotation whose commit answer was lost is already the server's
    // current epoch: it is done, and this run makes the next one.
    if (resume && server_epoch >= *resume) {
      if (auto r = store_->SetMeta(RotationMetaKey(key_class), ""); !r) return r.error();
      resume.reset();
      auto now_committed = WriteEpochLocked(key_class);
      if (now_committed) report.epoch = *now_committed + 1;
    }
    report.resumed = resume.has_value();
    if (resume) report.epoch = *resume;
    if (auto r = store_->SetMeta(RotationMetaKey(key_class), std::to_string(report.epoch)); !r)
      return r.error();
    if (vault_->class_key(key_class, report.epoch) == nullptr) {
      auto fresh = crypto::RandomSecret(crypto::kAeadKeyBytes);
      if (!fresh) return Fail(fresh.error(), Tr("cannot make the new key"));
      std::map<std::pair<teduh::AccessClass, std::uint32_t>, crypto::SecureBuffer> add;
      add.emplace(std::make_pair(key_class, report.epoch), std::move(*fresh));
      if (auto r = vault_->AddClassKeys(std::move(add)); !r) return r.error();
    }
    new_key = vault_->class_key(key_class, report.epoch);

    // Every case key of the class under an older epoch, re-wrapped.
    auto ck = crypto::SecureBuffer::Allocate(crypto::kAeadKeyBytes);
    if (!ck) return Fail(ck.error(), Tr("cannot hold a case key in guarded memory"));
    std::size_t lacking = 0;
    auto scan = ForEachCaseKeyLocked(
        [&](const RecordInfo& rec, const teduh::keys::v1::CaseKey& key) -> Outcome<void> {
          if (NormalClass(key.key_class()) != key_class || key.epoch() >= report.epoch ||
              !rec.parent_id)
            return {};
          const crypto::SecureBuffer* old_key = vault_->class_key(key_class, key.epoch());
          if (old_key == nullptr) {
            ++lacking;
            return {};
          }
          if (UnwrapCaseKeyInto(*old_key, *rec.parent_id, key_class, key.version(), key.epoch(),
                                key.wrapped(), *ck)) {
            return Fail(errc::integrity,
                        TrF("the key record {} of case {} does not verify",
                            ToHex(rec.record_id).substr(0, 8), ToHex(*rec.parent_id).substr(0, 8)));
          }
          auto wrapped =
              WrapCaseKey(*new_key, *rec.parent_id, key_class, key.version(), report.epoch, *ck);
          if (!wrapped) return Fail(wrapped.error(), Tr("cannot wrap a case key"));
          pb::Rewrap& rw = rewraps.emplace_back();
          rw.set_record_id(std::string(AsBytes(rec.record_id)));
          rw.set_wrapped(std::move(*wrapped));
          return {};
        });
    ck->Reset();
    if (!scan) return scan.error();
    if (lacking > 0) {
      return Fail(errc::key_missing,
                  TrF("{} case keys are under an epoch of the {} key this device does not "
                      "hold: sync, then rotate again",
                      lacking, ClassText(key_class)));
    }
  }

  // Staged in batches; nothing is visible to anyone until the commit.
  const std::size_t batch = std::max<std::size_t>(1, (*client)->limits().max_push_changes);
  const std::size_t total = rewraps.size();
  for (std::size_t i = 0; i < total; i += batch) {
    pb::RotateKeys req;
    req.set_key_class(key_class);
    req.set_epoch(report.epoch);
    for (std::size_t j = i; j < std::min(total, i + batch); ++j)
      *req.add_rewraps() = std::move(rewraps[j]);
    report.bytes_sent += req.ByteSizeLong();
    auto r = (*client)->Rotate(req);
    if (!r) return r.error();
    if (progress) progress(std::min(total, i + batch), total);
  }
  report.rewrapped = total;

  pb::RotateKeys commit;
  commit.set_key_class(key_class);
  commit.set_epoch(report.epoch);
  commit.set_commit(true);
  auto list = (*client)->ListDevices();
  if (!list) return list.error();
  {
    std::lock_guard g(mu_);
    if (auto r = CheckOpen(); !r) return r.error();
    auto own_box = crypto::BoxPublicKeyOf(vault_->device_box_sk());
    if (!own_box) return Fail(own_box.error(), Tr("the device key is damaged"));
    for (const auto& d : list->devices()) {
      if (d.state() != pb::DEVICE_STATE_ACTIVE || !MayHoldClass(d.role(), key_class)) continue;
      // Only to a device under a key an admin device approved (signed by the
      // root key, or approved here before approvals were signed) or itself:
      // the list comes from the server, which must not slip in a key of its own.
      std::string box = BytesOf(*own_box);
      if (d.device_id() != AsBytes(meta_->device_id)) {
        auto revoked = store_->GetMeta(RevokedKey(d.device_id()));
        if (!revoked) return revoked.error();
        if (*revoked && !(*revoked)->empty()) {
          return Fail(errc::integrity,
                      TrF("the server lists device {} ({}) as active, but this admin device "
                          "revoked it: nothing was rotated. Tell your IT admin",
                          ToHex(AsSpan(d.device_id())).substr(0, 8), d.user()));
        }
        if (!UnitApprovedLocked(d)) {
          auto approved = store_->GetMeta(ApprovedBoxKey(d.device_id()));
          if (!approved) return approved.error();
          if (!*approved || **approved != ToHex(AsSpan(d.box_pk()))) {
            return Fail(errc::integrity,
                        TrF("the server lists device {} ({}) as active with a key no admin "
                            "device approved: nothing was rotated. Check it with teduh device "
                            "list, and revoke it if it is unknown",
                            ToHex(AsSpan(d.device_id())).substr(0, 8), d.user()));
          }
        }
        box = d.box_pk();
      }
      auto grant = SignedGrant(*vault_, d.device_id(), box, key_class, report.epoch);
      if (!grant) return grant.error();
      *commit.add_grants() = std::move(*grant);
      ++report.devices;
    }
  }
  report.bytes_sent += commit.ByteSizeLong();
  auto done = (*client)->Rotate(commit);
  (*client)->Close();
  if (!done) return done.error();
  if (!done->committed()) {
    return Fail(errc::rejected,
                TrF("the server knows {} case keys this device has not received yet: run "
                    "teduh sync, then teduh key rotate again (it resumes)",
                    done->uncovered()));
  }
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  if (auto r = store_->SetMeta(RotationMetaKey(key_class), ""); !r) return r.error();
  return report;
}

Outcome<std::vector<KeyClassView>> Device::KeyStatus() {
  {
    std::lock_guard g(mu_);
    if (auto r = CheckOpen(); !r) return r.error();
    if (meta_->role != Role::ROLE_ADMIN) {
      return Fail(errc::forbidden, Tr("only admin devices see the unit's key status"));
    }
  }
  auto client = ConnectOnline();
  if (!client) return client.error();
  auto status = (*client)->KeyStatus();
  (*client)->Close();
  if (!status) return status.error();
  std::vector<KeyClassView> out;
  for (const auto& c : status->classes()) {
    KeyClassView v;
    v.key_class = c.key_class();
    v.current_epoch = c.current_epoch();
    for (const auto& e : c.epochs())
      v.epochs.push_back(
          {e.epoch(), e.case_keys(), e.devices_granted(), e.devices_acked(), e.retirable()});
    for (const auto& d : c.devices()) {
      KeyDeviceView dv;
      if (auto id = IdFromBytes(d.device_id())) dv.device_id = *id;
      dv.user = d.user();
      dv.role = RoleName(d.role());
      dv.acked_epoch = d.acked_epoch();
      v.devices.push_back(std::move(dv));
    }
    out.push_back(std::move(v));
  }
  return out;
}

Outcome<void> Device::RequireRootAdminLocked(std::string_view action) const {
  if (auto r = CheckOpen(); !r) return r.error();
  if (meta_->role != Role::ROLE_ADMIN || vault_->unit_root_sk().empty()) {
    return Fail(errc::forbidden,
                TrF("only the admin device holding the unit root key can {}", ActionText(action)));
  }
  return {};
}

Outcome<void> Device::ForEachCaseKeyLocked(
    const std::function<Outcome<void>(const RecordInfo&, const teduh::keys::v1::CaseKey&)>& visit) {
  return store_->ForEachRecordOpenFields(
      kCaseKeyKind, [&](const RecordInfo& rec, std::vector<StoredValue>& values) {
        teduh::keys::v1::CaseKey key;
        for (auto& v : values) {
          key.MergeFromString(v.value);
          crypto::Wipe(v.value);
        }
        auto r = visit(rec, key);
        crypto::Wipe(*key.mutable_wrapped());
        return r;
      });
}

Outcome<std::vector<Id>> Device::VerifiedShredsLocked(const pb::Changes& batch,
                                                      SyncReport* report) {
  std::vector<Id> out;
  if (batch.shredded().empty()) return out;
  auto pinned = vault_->pinned_unit_root_pk();
  if (!pinned) return Fail(errc::vault_corrupt, Tr("this device has no pinned unit key"));
  for (const auto& o : batch.shredded()) {
    auto case_id = IdFromBytes(o.case_id());
    if (!case_id || o.unit_id() != meta_->unit_id) continue;
    const std::string m =
        ShredOrderMessage(o.case_id(), o.unit_id(), o.issued_ms(), o.admin_device_id());
    if (!crypto::Verify(*pinned, AsSpan(m), AsSpan(o.signature()))) {
      ++report->bad_grants;  // never acted on: a server cannot make devices delete a case
      continue;
    }
    out.push_back(*case_id);
  }
  return out;
}

void Device::DropCaseKeysLocked(const Id& case_id) {
  for (auto it = case_keys_.begin(); it != case_keys_.end();) {
    if (std::get<0>(it->first) == case_id) {
      it = case_keys_.erase(it);  // SecureBuffer wipes on release
    } else {
      ++it;
    }
  }
  std::erase_if(case_key_order_, [&](const CaseKeyId& k) { return std::get<0>(k) == case_id; });
}

Outcome<pb::RevokeDevice> Device::RevocationLocked(const std::string& device_id) {
  pb::RevokeDevice req;
  req.set_device_id(device_id);
  teduh::keys::v1::WipeOrder* order = req.mutable_wipe_order();
  order->set_device_id(device_id);
  order->set_unit_id(meta_->unit_id);
  order->set_issued_ms(env_->NowMs());
  order->set_admin_device_id(std::string(AsBytes(meta_->device_id)));
  auto sig = crypto::Sign(vault_->unit_root_sk(),
                          AsSpan(WipeOrderMessage(order->device_id(), order->unit_id(),
                                                  order->issued_ms(), order->admin_device_id())));
  if (!sig) return Fail(sig.error(), Tr("cannot sign the wipe order"));
  order->set_signature(BytesOf(*sig));
  return req;
}

Outcome<OffboardReport> Device::OffboardUser(const std::string& user,
                                             const std::string& reassign_to) {
  if (user.empty() || reassign_to.empty() || user == reassign_to)
    return Fail(errc::invalid_argument,
                Tr("name the user who leaves and another user who takes over their cases"));
  {
    std::lock_guard g(mu_);
    if (auto r = RequireRootAdminLocked("offboard users"); !r) return r.error();
    if (user == meta_->user)
      return Fail(errc::invalid_argument, Tr("offboard this admin from another admin device"));
  }
  auto client = ConnectOnline();
  if (!client) return client.error();
  auto list = (*client)->ListDevices();
  if (!list) return list.error();
  pb::Frame f;
  pb::OffboardUser* req = f.mutable_offboard_user();
  req->set_user(user);
  req->set_reassign_to(reassign_to);
  {
    std::lock_guard g(mu_);
    if (auto r = CheckOpen(); !r) return r.error();
    for (const auto& d : list->devices()) {
      if (d.user() != user || d.state() == pb::DEVICE_STATE_REVOKED) continue;
      auto made = RevocationLocked(d.device_id());
      if (!made) return made.error();
      *req->add_revocations() = std::move(*made);
    }
  }
  auto r = (*client)->Offboard(std::move(f));
  (*client)->Close();
  if (!r) return r.error();
  return OffboardReport{r->devices_revoked(), r->cases_reassigned()};
}

Outcome<Id> Device::AssignCase(std::string_view case_ref, const std::string& pendamping,
                               const std::string& konselor, const std::string& psikolog) {
  std::vector<std::string> sets;
  for (const auto& [field, user] :
       {std::pair<const char*, const std::string*>{"assigned_pendamping", &pendamping},
        {"assigned_konselor", &konselor},
        {"assigned_psikolog", &psikolog}}) {
    if (!user->empty()) sets.push_back(fmt::format("{}={}", field, *user));
  }
  if (sets.empty())
    return Fail(errc::invalid_argument,
                Tr("name at least one worker: --pendamping, --konselor or --psikolog"));
  {
    std::lock_guard g(mu_);
    if (auto r = CheckOpen(); !r) return r.error();
    if (meta_->role != Role::ROLE_SUPERVISOR && meta_->role != Role::ROLE_OFFICE)
      return Fail(errc::forbidden, Tr("cases are assigned by office staff and supervisors"));
  }
  auto id = ResolveCase(case_ref);
  if (!id) return id.error();
  if (auto r = SetCaseFields(ToHex(*id), sets); !r) return r.error();
  return *id;
}

Outcome<ShredView> Device::ShredCase(std::string_view case_ref) {
  pb::Frame request;
  ShredView view;
  {
    std::lock_guard g(mu_);
    if (auto r = CheckOpen(); !r) return r.error();
    if (meta_->role == Role::ROLE_SUPERVISOR) {
      auto id = ResolveCaseLocked(case_ref);
      if (!id) return id.error();
      view.case_id = *id;
    } else if (meta_->role == Role::ROLE_ADMIN && !vault_->unit_root_sk().empty()) {
      // An admin device holds the unit's case keys, not its cases: the id is
      // matched against the cases those keys belong to.
      const std::string ref = Lower(Trim(case_ref));
      if (ref.size() < 6 || ref.size() > 32 ||
          !std::all_of(ref.begin(), ref.end(), [](char c) { return std::isxdigit(c); }))
        return Fail(errc::invalid_argument,
                    Tr("a case id is 32 hex digits, or a unique prefix of at least 6"));
      std::set<Id> matches;
      auto scan = ForEachCaseKeyLocked([&](const RecordInfo& rec, const teduh::keys::v1::CaseKey&) {
        if (rec.parent_id && ToHex(*rec.parent_id).starts_with(ref)) matches.insert(*rec.parent_id);
        return Outcome<void>{};
      });
      if (!scan) return scan.error();
      if (matches.empty())
        return Fail(errc::not_found,
                    TrF("no case {} among this device's case keys (run teduh sync)", ref));
      if (matches.size() > 1)
        return Fail(errc::invalid_argument,
                    TrF("{} cases start with {}: type more digits", matches.size(), ref));
      view.case_id = *matches.begin();
      teduh::keys::v1::ShredOrder* o = request.mutable_shred_case()->mutable_order();
      o->set_case_id(std::string(AsBytes(view.case_id)));
      o->set_unit_id(meta_->unit_id);
      o->set_issued_ms(env_->NowMs());
      o->set_admin_device_id(std::string(AsBytes(meta_->device_id)));
      auto sig = crypto::Sign(vault_->unit_root_sk(),
                              AsSpan(ShredOrderMessage(o->case_id(), o->unit_id(), o->issued_ms(),
                                                       o->admin_device_id())));
      if (!sig) return Fail(sig.error(), Tr("cannot sign the shred order"));
      o->set_signature(BytesOf(*sig));
    } else {
      return Fail(errc::forbidden,
                  Tr("a supervisor asks for a case to be shredded, and the admin device holding "
                     "the unit root key carries it out"));
    }
    if (!request.has_shred_case())
      request.mutable_shred_request()->set_case_id(std::string(AsBytes(view.case_id)));
  }
  auto client = ConnectOnline();
  if (!client) return client.error();
  auto r = (*client)->Shred(std::move(request));
  (*client)->Close();
  if (!r) return r.error();
  view.state = r->state();
  view.requested_by = r->requested_by();
  view.purged_values = r->purged_values();
  return view;
}

Outcome<std::vector<std::uint32_t>> Device::RetireEpochs(teduh::AccessClass key_class) {
  key_class = NormalClass(key_class);
  {
    std::lock_guard g(mu_);
    if (auto r = RequireRootAdminLocked("retire keys"); !r) return r.error();
  }
  auto client = ConnectOnline();
  if (!client) return client.error();
  auto status = (*client)->KeyStatus();
  if (!status) return status.error();
  pb::RetireKeys req;
  {
    std::lock_guard g(mu_);
    if (auto r = CheckOpen(); !r) return r.error();
    // The server's word is not enough to drop a key: this device holds every
    // case key record of the unit and checks that none is under the epoch.
    std::set<std::uint32_t> in_use;
    auto scan = ForEachCaseKeyLocked([&](const RecordInfo&, const teduh::keys::v1::CaseKey& key) {
      if (NormalClass(key.key_class()) == key_class) in_use.insert(key.epoch());
      return Outcome<void>{};
    });
    if (!scan) return scan.error();
    auto writing = WriteEpochLocked(key_class);
    for (const auto& c : status->classes()) {
      if (NormalClass(c.key_class()) != key_class) continue;
      for (const auto& e : c.epochs()) {
        if (!e.retirable() || !writing || e.epoch() >= *writing) continue;
        if (in_use.contains(e.epoch())) {
          return Fail(errc::rejected,
                      TrF("this device still holds case keys under epoch {} of the {} "
                          "key: run teduh sync, then retire again",
                          e.epoch(), ClassText(key_class)));
        }
        teduh::keys::v1::Retirement* rt = req.add_retirements();
        rt->set_key_class(key_class);
        rt->set_epoch(e.epoch());
        rt->set_unit_id(meta_->unit_id);
        auto sig = crypto::Sign(vault_->unit_root_sk(),
                                AsSpan(RetirementMessage(key_class, e.epoch(), meta_->unit_id)));
        if (!sig) return Fail(sig.error(), Tr("cannot sign the retirement"));
        rt->set_signature(BytesOf(*sig));
      }
    }
  }
  std::vector<std::uint32_t> out;
  if (req.retirements().empty()) return out;
  auto done = (*client)->Retire(req);
  (*client)->Close();
  if (!done) return done.error();
  std::vector<std::pair<teduh::AccessClass, std::uint32_t>> mine;
  for (const auto& k : done->retired()) {
    const bool asked = std::any_of(req.retirements().begin(), req.retirements().end(),
                                   [&](const auto& r) { return r.epoch() == k.epoch(); });
    if (!asked || NormalClass(k.key_class()) != key_class) continue;  // only what it signed
    out.push_back(k.epoch());
    mine.emplace_back(key_class, k.epoch());
  }
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  if (auto r = vault_->RemoveClassKeys(mine); !r) return r.error();
  return out;
}

}  // namespace teduh::core
