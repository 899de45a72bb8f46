#include "teduh/core/frame_codec.h"

#include <fmt/format.h>
#include <google/protobuf/stubs/logging.h>

#include <algorithm>

#include "teduh/core/i18n.h"
#include "teduh/crypto/crypto.h"

namespace teduh::core {
namespace {

namespace v1 = teduh::sync::v1;

// Each check returns false and fills `why` with the bound that was broken.
struct Checker {
  const FrameLimits& limits;
  std::string why;

  bool Fail(std::string msg) {
    if (why.empty()) why = std::move(msg);
    return false;
  }
  bool Len(const std::string& v, std::size_t n, const char* what) {
    return v.size() == n || Fail(TrF("{} must be {} bytes", what, n));
  }
  bool LenOrEmpty(const std::string& v, std::size_t n, const char* what) {
    return v.empty() || Len(v, n, what);
  }
  bool Text(const std::string& v, const char* what) {
    return v.size() <= limits.max_text_bytes || Fail(TrF("{} is too long", what));
  }
  bool Count(int n, std::size_t max, const char* what) {
    return static_cast<std::size_t>(n) <= max || Fail(TrF("too many {}", what));
  }
  bool StampOk(const v1::Stamp& s, const char* what, bool required) {
    if (s.device_id().empty() && s.hlc() == 0) {
      return !required || Fail(TrF("{} is missing", what));
    }
    return Len(s.device_id(), 16, what) && (s.hlc() != 0 || Fail(TrF("{} is zero", what)));
  }
  bool GrantOk(const teduh::keys::v1::Grant& g) {
    return Len(g.device_id(), 16, "grant device_id") &&
           Len(g.signature(), crypto::kSignatureBytes, "grant signature") &&
           (g.sealed_key().size() == crypto::kAeadKeyBytes + crypto::kSealOverhead ||
            Fail(Tr("grant sealed_key has the wrong size"))) &&
           (g.key_class() == teduh::ACCESS_CLASS_GENERAL ||
            g.key_class() == teduh::ACCESS_CLASS_CLINICAL || Fail(Tr("grant class is invalid"))) &&
           (g.epoch() > 0 || Fail(Tr("grant epoch is zero")));
  }
  bool RootGrantOk(const teduh::keys::v1::RootGrant& g) {
    return Len(g.device_id(), 16, "root grant device_id") &&
           Len(g.sealed_seed(), crypto::kSignSeedBytes + crypto::kSealOverhead,
               "root grant sealed_seed") &&
           Len(g.signature(), crypto::kSignatureBytes, "root grant signature");
  }
  bool EscrowOk(const teduh::keys::v1::EscrowGrant& g) {
    return Len(g.signature(), crypto::kSignatureBytes, "escrow signature") &&
           Len(g.sealed_key(), crypto::kAeadKeyBytes + crypto::kSealOverhead,
               "escrow sealed_key") &&
           (g.key_class() == teduh::ACCESS_CLASS_GENERAL ||
            g.key_class() == teduh::ACCESS_CLASS_CLINICAL || Fail(Tr("escrow class is invalid"))) &&
           (g.epoch() > 0 || Fail(Tr("escrow epoch is zero")));
  }
  bool Change(const v1::FieldChange& c) {
    if (!Len(c.record_id(), 16, "record_id")) return false;
    if (c.kind().empty() || c.kind().size() > limits.max_kind_bytes)
      return Fail(Tr("kind is invalid"));
    if (!LenOrEmpty(c.parent_id(), 16, "parent_id")) return false;
    if (!LenOrEmpty(c.resolves(), 16, "resolves")) return false;
    if (c.field() == 0 || c.field() > 536870911u) return Fail(Tr("field number is invalid"));
    if (c.value().size() > limits.max_value_bytes) return Fail(Tr("value is too large"));
    if (c.sealed()) {
      if (c.value().size() < crypto::kAeadOverhead) return Fail(Tr("sealed value is too short"));
      if (c.key_class() != teduh::ACCESS_CLASS_GENERAL &&
          c.key_class() != teduh::ACCESS_CLASS_CLINICAL)
        return Fail(Tr("sealed value has no key class"));
    }
    return StampOk(c.stamp(), "stamp", true) &&
           (!c.has_base() || StampOk(c.base(), "base", false)) && Text(c.author(), "author") &&
           Text(c.unit_id(), "unit_id");
  }
  bool Device(const v1::DeviceInfo& d) {
    return Len(d.device_id(), 16, "device_id") && Text(d.user(), "user") &&
           Text(d.label(), "label") && LenOrEmpty(d.sign_pk(), 32, "sign_pk") &&
           LenOrEmpty(d.box_pk(), 32, "box_pk") && Text(d.root_key(), "root_key") &&
           LenOrEmpty(d.approval(), crypto::kSignatureBytes, "approval");
  }

  bool ShredOrderOk(const teduh::keys::v1::ShredOrder& o) {
    return Len(o.case_id(), 16, "case_id") && Text(o.unit_id(), "unit_id") &&
           Len(o.admin_device_id(), 16, "admin_device_id") &&
           Len(o.signature(), crypto::kSignatureBytes, "signature");
  }

  bool RetirementOk(const teduh::keys::v1::Retirement& r) {
    return Text(r.unit_id(), "unit_id") && Len(r.signature(), crypto::kSignatureBytes, "signature");
  }

  bool WipeOrderOk(const teduh::keys::v1::WipeOrder& o) {
    return Len(o.device_id(), 16, "device_id") && Text(o.unit_id(), "unit_id") &&
           Len(o.admin_device_id(), 16, "admin_device_id") &&
           Len(o.signature(), crypto::kSignatureBytes, "signature");
  }

  bool CaseKeyOk(const v1::CaseKeyInfo& k) {
    return Len(k.record_id(), 16, "case key record_id") &&
           (k.key_class() == teduh::ACCESS_CLASS_GENERAL ||
            k.key_class() == teduh::ACCESS_CLASS_CLINICAL ||
            Fail(Tr("case key class is invalid"))) &&
           (k.wrapped().size() <= 128 || Fail(Tr("wrapped is too long")));
  }
  bool SealedRefOk(const v1::SealedRef& r) {
    const bool conflict = r.place() == v1::SealedRef::PLACE_CONFLICT_KEPT ||
                          r.place() == v1::SealedRef::PLACE_CONFLICT_OTHER;
    return (r.place() != v1::SealedRef::PLACE_UNSPECIFIED ||
            Fail(Tr("sealed value place missing"))) &&
           Len(r.record_id(), 16, "record_id") &&
           (conflict ? Len(r.conflict_id(), 16, "conflict_id")
                     : (r.conflict_id().empty() || Fail(Tr("conflict_id is not expected")))) &&
           StampOk(r.stamp(), "stamp", false);
  }
  bool SealedBytesOk(const std::string& v) {
    return (v.size() >= crypto::kAeadOverhead || Fail(Tr("sealed value is too short"))) &&
           (v.size() <= limits.max_value_bytes || Fail(Tr("value is too large")));
  }

  bool FrameOk(const v1::Frame& f) {
    switch (f.body_case()) {
      case v1::Frame::kHello:
        return Count(f.hello().versions_size(), 16, "versions") &&
               Len(f.hello().device_id(), 16, "device_id") && Text(f.hello().client(), "client");
      case v1::Frame::kChallenge:
        return Len(f.challenge().nonce(), 32, "nonce") &&
               Len(f.challenge().server_id(), 16, "server_id");
      case v1::Frame::kProof:
        return Len(f.proof().signature(), crypto::kSignatureBytes, "signature");
      case v1::Frame::kWelcome: {
        const auto& w = f.welcome();
        if (!Text(w.user(), "user") || !Text(w.unit_id(), "unit_id") ||
            !Text(w.unit_name(), "unit_name") ||
            !LenOrEmpty(w.unit_root_pk(), 32, "unit_root_pk") ||
            !Count(w.grants_size(), limits.max_grants, "grants") ||
            !Count(w.retired_size(), limits.max_grants, "retired") ||
            !Count(w.escrow_size(), limits.max_grants, "escrow") ||
            !Count(w.repair_size(), kMaxRepairsOffered, "repair") ||
            (w.has_root_grant() && !RootGrantOk(w.root_grant())))
          return false;
        for (const auto& e : w.escrow())
          if (!EscrowOk(e)) return false;
        for (const auto& r : w.retired())
          if (!RetirementOk(r)) return false;
        for (const auto& g : w.grants())
          if (!GrantOk(g)) return false;
        for (const auto& r : w.repair())
          if (!Len(r.record_id(), 16, "record_id")) return false;
        return true;
      }
      case v1::Frame::kError:
        return Text(f.error().message(), "message");
      case v1::Frame::kEnroll: {
        const auto& e = f.enroll();
        return (e.code().size() <= 64 || Fail(Tr("code is too long"))) &&
               Len(e.sign_pk(), 32, "sign_pk") && Len(e.box_pk(), 32, "box_pk") &&
               Text(e.label(), "label") && LenOrEmpty(e.unit_root_pk(), 32, "unit_root_pk") &&
               Len(e.signature(), crypto::kSignatureBytes, "signature") &&
               LenOrEmpty(e.root_signature(), crypto::kSignatureBytes, "root_signature") &&
               LenOrEmpty(e.approval(), crypto::kSignatureBytes, "approval");
      }
      case v1::Frame::kEnrollResult: {
        const auto& e = f.enroll_result();
        return Len(e.device_id(), 16, "device_id") && Len(e.server_id(), 16, "server_id") &&
               LenOrEmpty(e.unit_root_pk(), 32, "unit_root_pk") && Text(e.user(), "user") &&
               Text(e.unit_id(), "unit_id") && Text(e.unit_name(), "unit_name");
      }
      case v1::Frame::kPush:
        if (!Count(f.push().changes_size(), limits.max_push_changes, "changes")) return false;
        for (const auto& c : f.push().changes())
          if (!Change(c)) return false;
        return true;
      case v1::Frame::kPushResult:
        if (!Count(f.push_result().results_size(), limits.max_push_changes, "results"))
          return false;
        for (const auto& r : f.push_result().results())
          if (!Text(r.reason(), "reason") || !Text(r.detail(), "detail") ||
              !StampOk(r.stamp(), "stamp", false) || !StampOk(r.current(), "current", false) ||
              !LenOrEmpty(r.conflict_id(), 16, "conflict_id"))
            return false;
        return true;
      case v1::Frame::kPull:
        return true;
      case v1::Frame::kChanges:
        if (!Count(f.changes().changes_size(), limits.max_pull_changes, "changes") ||
            !Count(f.changes().shredded_size(), limits.max_pull_changes, "shredded") ||
            !Count(f.changes().evicted_size(), limits.max_pull_changes, "evicted") ||
            !Count(f.changes().key_drops_size(), limits.max_pull_changes, "key_drops"))
          return false;
        for (const auto& d : f.changes().key_drops()) {
          if (!Len(d.case_id(), 16, "key drop case id") ||
              !Count(d.key_records_size(), 32, "key drop records"))
            return false;
          for (const auto& c : d.key_records())
            if (!Change(c)) return false;
        }
        for (const auto& e : f.changes().evicted())
          if (!Len(e, 16, "evicted case id")) return false;
        for (const auto& o : f.changes().shredded())
          if (!ShredOrderOk(o)) return false;
        for (const auto& c : f.changes().changes())
          if (!Change(c)) return false;
        return true;
      case v1::Frame::kPoke:
        return true;
      case v1::Frame::kListDevices: {
        const std::string& p = f.list_devices().id_prefix();
        return (p.size() <= 32 && std::all_of(p.begin(), p.end(),
                                              [](char c) {
                                                return (c >= '0' && c <= '9') ||
                                                       (c >= 'a' && c <= 'f');
                                              })) ||
               Fail(Tr("id_prefix is not lower-case hex digits"));
      }
      case v1::Frame::kDeviceList:
        if (!Count(f.device_list().devices_size(), limits.max_devices, "devices")) return false;
        for (const auto& d : f.device_list().devices())
          if (!Device(d)) return false;
        return true;
      case v1::Frame::kApproveDevice:
        if (!Len(f.approve_device().device_id(), 16, "device_id") ||
            !LenOrEmpty(f.approve_device().approval(), crypto::kSignatureBytes, "approval") ||
            !Count(f.approve_device().grants_size(), limits.max_grants, "grants") ||
            (f.approve_device().has_root_grant() && !RootGrantOk(f.approve_device().root_grant())))
          return false;
        for (const auto& g : f.approve_device().grants())
          if (!GrantOk(g)) return false;
        return true;
      case v1::Frame::kApproveResult:
        return Device(f.approve_result().device());
      case v1::Frame::kRevokeDevice:
        return Len(f.revoke_device().device_id(), 16, "device_id") &&
               (!f.revoke_device().has_wipe_order() || WipeOrderOk(f.revoke_device().wipe_order()));
      case v1::Frame::kRevokeResult:
        return Device(f.revoke_result().device());
      case v1::Frame::kRotateKeys: {
        const auto& r = f.rotate_keys();
        if (!Count(r.rewraps_size(), limits.max_push_changes, "rewraps") ||
            !Count(r.grants_size(), limits.max_devices, "grants"))
          return false;
        for (const auto& w : r.rewraps())
          if (!Len(w.record_id(), 16, "record_id") ||
              !(w.wrapped().size() <= 128 || Fail(Tr("wrapped is too long"))))
            return false;
        for (const auto& g : r.grants())
          if (!GrantOk(g)) return false;
        return true;
      }
      case v1::Frame::kRotateResult:
      case v1::Frame::kAckKeysResult:
      case v1::Frame::kKeyStatusRequest:
        return true;
      case v1::Frame::kOffboardUser: {
        const auto& o = f.offboard_user();
        if (!Text(o.user(), "user") || !Text(o.reassign_to(), "reassign_to") ||
            !Count(o.revocations_size(), limits.max_grants, "revocations"))
          return false;
        for (const auto& r : o.revocations())
          if (!Len(r.device_id(), 16, "device_id") || !WipeOrderOk(r.wipe_order())) return false;
        return true;
      }
      case v1::Frame::kOffboardResult:
        return true;
      case v1::Frame::kRekeyList:
        return LenOrEmpty(f.rekey_list().held_by(), 16, "held_by") &&
               LenOrEmpty(f.rekey_list().after_case(), 16, "after_case");
      case v1::Frame::kRekeyCases:
        if (!Count(f.rekey_cases().case_ids_size(), limits.max_pull_changes, "case_ids"))
          return false;
        for (const auto& c : f.rekey_cases().case_ids())
          if (!Len(c, 16, "case id")) return false;
        return true;
      case v1::Frame::kRekeyFetch:
        return Len(f.rekey_fetch().case_id(), 16, "case_id") &&
               LenOrEmpty(f.rekey_fetch().held_by(), 16, "held_by");
      case v1::Frame::kRekeySet: {
        const auto& r = f.rekey_set();
        if (!Len(r.case_id(), 16, "case_id") || !Count(r.keys_size(), limits.max_grants, "keys") ||
            !Count(r.targets_size(), 8, "targets") ||
            !Count(r.values_size(), limits.max_pull_changes, "values"))
          return false;
        for (const auto& k : r.keys())
          if (!CaseKeyOk(k)) return false;
        for (const auto& k : r.targets())
          if (!CaseKeyOk(k)) return false;
        for (const auto& v : r.values())
          if (!SealedRefOk(v.ref()) || !SealedBytesOk(v.value()) ||
              !Len(v.writer_device(), 16, "writer_device") ||
              !(v.kind().size() <= limits.max_kind_bytes || Fail(Tr("kind is invalid"))))
            return false;
        return true;
      }
      case v1::Frame::kRekeyCase: {
        const auto& r = f.rekey_case();
        if (!Len(r.case_id(), 16, "case_id") || !LenOrEmpty(r.held_by(), 16, "held_by") ||
            !Count(r.new_keys_size(), 8, "new_keys") ||
            !Count(r.reseals_size(), limits.max_pull_changes, "reseals"))
          return false;
        for (const auto& k : r.new_keys())
          if (!CaseKeyOk(k)) return false;
        for (const auto& s : r.reseals())
          if (!SealedRefOk(s.ref()) || !SealedBytesOk(s.value())) return false;
        return true;
      }
      case v1::Frame::kRekeyResult:
        return LenOrEmpty(f.rekey_result().case_id(), 16, "case_id");
      case v1::Frame::kShredRequest:
        return Len(f.shred_request().case_id(), 16, "case_id");
      case v1::Frame::kShredCase:
        return ShredOrderOk(f.shred_case().order());
      case v1::Frame::kShredResult:
        return Text(f.shred_result().state(), "state") &&
               Text(f.shred_result().requested_by(), "requested_by");
      case v1::Frame::kRetireKeys:
        if (!Count(f.retire_keys().retirements_size(), limits.max_grants, "retirements"))
          return false;
        for (const auto& r : f.retire_keys().retirements())
          if (!RetirementOk(r)) return false;
        return true;
      case v1::Frame::kRetireResult:
        return Count(f.retire_result().retired_size(), limits.max_grants, "retired");
      case v1::Frame::kAckKeys:
        if (!Count(f.ack_keys().held_size(), limits.max_grants, "held") ||
            !Count(f.ack_keys().escrow_size(), limits.max_grants, "escrow"))
          return false;
        for (const auto& e : f.ack_keys().escrow())
          if (!EscrowOk(e)) return false;
        return true;
      case v1::Frame::kKeyStatus: {
        const auto& k = f.key_status();
        if (!Count(k.classes_size(), 8, "classes")) return false;
        for (const auto& c : k.classes()) {
          if (!Count(c.epochs_size(), limits.max_grants, "epochs") ||
              !Count(c.devices_size(), limits.max_devices, "devices"))
            return false;
          for (const auto& d : c.devices())
            if (!Len(d.device_id(), 16, "device_id") || !Text(d.user(), "user")) return false;
        }
        return true;
      }
      case v1::Frame::kWipe:
        return WipeOrderOk(f.wipe().order());
      case v1::Frame::kWipeReceipt: {
        const auto& r = f.wipe_receipt();
        return Len(r.device_id(), 16, "device_id") &&
               Len(r.order_signature(), crypto::kSignatureBytes, "order_signature") &&
               Len(r.signature(), crypto::kSignatureBytes, "signature");
      }
      case v1::Frame::kHistoryRequest:
        return Len(f.history_request().record_id(), 16, "record_id");
      case v1::Frame::kHistory:
        if (!Count(f.history().entries_size(), limits.max_pull_changes, "entries")) return false;
        for (const auto& e : f.history().entries())
          if (!Change(e.value()) || !Text(e.reason(), "reason")) return false;
        return true;
      case v1::Frame::kRepairOffer:
        if (!Count(f.repair_offer().values_size(), kMaxRepairsOffered, "values")) return false;
        for (const auto& c : f.repair_offer().values())
          if (!Change(c)) return false;
        return true;
      case v1::Frame::kRepairResult:
        return true;
      case v1::Frame::BODY_NOT_SET:
        return Fail(Tr("frame has no body"));
    }
    return Fail(Tr("frame has an unknown body"));
  }
};

}  // namespace

result<v1::Frame> DecodeFrame(std::string_view bytes, const FrameLimits& limits,
                              std::string* message) {
  if (bytes.size() > limits.max_frame_bytes) {
    if (message)
      *message = TrF("frame of {} bytes exceeds {}", bytes.size(), limits.max_frame_bytes);
    return make_error_code(errc::frame_too_large);
  }
  v1::Frame frame;
  if (!frame.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    if (message) *message = Tr("bytes are not a frame");
    return make_error_code(errc::malformed_frame);
  }
  Checker check{limits, {}};
  if (!check.FrameOk(frame)) {
    if (message) *message = check.why;
    return make_error_code(errc::malformed_frame);
  }
  return frame;
}

error_code ValidateChange(const v1::FieldChange& change, const FrameLimits& limits,
                          std::string* message) {
  Checker check{limits, {}};
  if (check.Change(change)) return {};
  if (message) *message = check.why;
  return make_error_code(errc::malformed_frame);
}

void SilenceProtobufLog() { google::protobuf::SetLogHandler(nullptr); }

std::string EncodeFrame(const v1::Frame& frame) { return frame.SerializeAsString(); }

v1::Frame MakeErrorFrame(std::uint64_t request_id, v1::ErrorCode code, std::string message) {
  v1::Frame f;
  f.set_request_id(request_id);
  f.mutable_error()->set_code(code);
  f.mutable_error()->set_message(std::move(message));
  return f;
}

errc ErrorFromFrame(v1::ErrorCode code) {
  switch (code) {
    case v1::ERROR_CODE_MALFORMED_FRAME:
      return errc::malformed_frame;
    case v1::ERROR_CODE_FRAME_TOO_LARGE:
      return errc::frame_too_large;
    case v1::ERROR_CODE_UNEXPECTED_FRAME:
      return errc::unexpected_frame;
    case v1::ERROR_CODE_UNSUPPORTED_VERSION:
      return errc::unsupported_version;
    case v1::ERROR_CODE_UNKNOWN_DEVICE:
      return errc::device_unknown;
    case v1::ERROR_CODE_DEVICE_PENDING:
      return errc::device_pending;
    case v1::ERROR_CODE_DEVICE_REVOKED:
      return errc::device_revoked;
    case v1::ERROR_CODE_BAD_SIGNATURE:
      return errc::bad_signature;
    case v1::ERROR_CODE_BAD_ENROLLMENT_CODE:
      return errc::enrollment_refused;
    case v1::ERROR_CODE_FORBIDDEN:
      return errc::forbidden;
    case v1::ERROR_CODE_TOO_MANY_CHANGES:
      return errc::malformed_frame;
    case v1::ERROR_CODE_RATE_LIMITED:
    case v1::ERROR_CODE_SERVER_BUSY:
      return errc::server_busy;
    case v1::ERROR_CODE_DISK_FULL:
      return errc::server_disk_full;
    case v1::ERROR_CODE_STORE_DAMAGED:
      return errc::server_damaged;
    case v1::ERROR_CODE_TIMEOUT:
      return errc::timeout;
    case v1::ERROR_CODE_BAD_REQUEST:
      return errc::invalid_argument;
    default:
      return errc::server_error;
  }
}

}  // namespace teduh::core

namespace teduh::core {

ChangeDigest DigestOf(const teduh::sync::v1::FieldChange& change) {
  // Each part with its length first, so no two changes share an encoding.
  std::string buf;
  auto part = [&](std::string_view bytes) {
    const auto n = static_cast<std::uint32_t>(bytes.size());
    for (int shift = 24; shift >= 0; shift -= 8) buf.push_back(static_cast<char>(n >> shift));
    buf.append(bytes);
  };
  auto number = [&](std::uint64_t v) {
    for (int shift = 56; shift >= 0; shift -= 8) buf.push_back(static_cast<char>(v >> shift));
  };
  buf.append("teduh-change-v1");
  part(change.record_id());
  part(change.kind());
  part(change.parent_id());
  number(change.field());
  number(change.stamp().hlc());
  part(change.stamp().device_id());
  number(change.sealed() ? 1 : 0);
  part(change.sealed() ? std::string_view() : std::string_view(change.value()));
  part(change.resolves());
  auto full =
      crypto::Hash(crypto::ByteView(reinterpret_cast<const std::uint8_t*>(buf.data()), buf.size()));
  ChangeDigest out{};
  std::copy_n(full.begin(), out.size(), out.begin());
  if (!change.sealed()) crypto::Wipe(buf);
  return out;
}

}  // namespace teduh::core
