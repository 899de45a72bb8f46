#include "teduh/core/sync_client.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "teduh/core/i18n.h"
#include "teduh/core/sealing.h"

namespace teduh::core {
namespace {
namespace pb = teduh::sync::v1;
constexpr std::string_view kClientName = "teduh/0.1.0";
}  // namespace

std::string ExplainServerError(pb::ErrorCode code) {
  switch (code) {
    case pb::ERROR_CODE_MALFORMED_FRAME:
      return Tr("the server could not read a message from this device");
    case pb::ERROR_CODE_FRAME_TOO_LARGE:
      return Tr("a message from this device was too large for the server");
    case pb::ERROR_CODE_UNEXPECTED_FRAME:
      return Tr("the server did not expect this message now");
    case pb::ERROR_CODE_UNSUPPORTED_VERSION:
      return Tr(
          "update needed: this version of teduh and the server have no protocol version in "
          "common");
    case pb::ERROR_CODE_UNKNOWN_DEVICE:
      return Tr("the server does not know this device (enrolled on another server?)");
    case pb::ERROR_CODE_DEVICE_PENDING:
      return Tr("waiting for an admin to approve this device");
    case pb::ERROR_CODE_DEVICE_REVOKED:
      return Tr("this device was revoked by an admin and may no longer sync");
    case pb::ERROR_CODE_BAD_SIGNATURE:
      return Tr("the server did not accept this device's signature");
    case pb::ERROR_CODE_BAD_ENROLLMENT_CODE:
      return Tr("the enrollment code is unknown, expired or already used");
    case pb::ERROR_CODE_FORBIDDEN:
      return Tr("this device's role may not do that");
    case pb::ERROR_CODE_TOO_MANY_CHANGES:
      return Tr("too many changes in one message");
    case pb::ERROR_CODE_RATE_LIMITED:
      return Tr("the server is busy with this device: try again in a moment");
    case pb::ERROR_CODE_INTERNAL:
      return Tr("the server failed: try again later");
    case pb::ERROR_CODE_BAD_REQUEST:
      return Tr("the server refused the request");
    case pb::ERROR_CODE_TIMEOUT:
      return Tr("the server gave up waiting");
    case pb::ERROR_CODE_SERVER_BUSY:
      return Tr("the server is busy: too many devices are connecting at once");
    case pb::ERROR_CODE_DISK_FULL:
      return Tr(
          "the server's disk is full: your changes are kept on this device and will be sent "
          "later");
    case pb::ERROR_CODE_STORE_DAMAGED:
      return Tr(
          "the server found damage in what it stores for this request; tell the unit's IT "
          "admin (your changes are kept on this device)");
    default:
      return Tr("the server reported an error");
  }
}

SyncClient::SyncClient(std::unique_ptr<Transport> transport, FrameLimits limits)
    : transport_(std::move(transport)), limits_(limits) {}

SyncClient::~SyncClient() { Close(); }

void SyncClient::Close() {
  if (transport_) transport_->Close();
}

Outcome<pb::Frame> SyncClient::Call(pb::Frame request, pb::Frame::BodyCase expected) {
  auto id = Send(std::move(request));
  if (!id) return id.error();
  return Await(*id, expected);
}

Outcome<std::uint64_t> SyncClient::Send(pb::Frame request) {
  if (!transport_) return Fail(errc::connection_failed, Tr("not connected"));
  std::uint64_t id = next_request_id_++;
  request.set_request_id(id);
  if (auto r = transport_->Send(EncodeFrame(request)); !r) return r.error();
  return id;
}

Outcome<pb::Frame> SyncClient::Await(std::uint64_t id, pb::Frame::BodyCase expected,
                                     pb::Frame::BodyCase also) {
  if (!transport_) return Fail(errc::connection_failed, Tr("not connected"));
  // Bounded: a server that only pokes is cut off after this many frames.
  for (int skipped = 0; skipped < 1000; ++skipped) {
    auto bytes = transport_->Receive();
    if (!bytes) return bytes.error();
    std::string why;
    auto frame = DecodeFrame(*bytes, limits_, &why);
    if (!frame) {
      return Fail(frame.error(), why.empty() ? Tr("the server sent an invalid message")
                                             : TrF("the server sent an invalid message: {}", why));
    }
    if (frame->body_case() == pb::Frame::kPoke) {
      poked_ = true;
      continue;
    }
    if (frame->body_case() == pb::Frame::kError) {
      const auto& e = frame->error();
      retry_after_ms_ = e.retry_after_ms();
      std::string msg = ExplainServerError(e.code());
      if (!e.message().empty()) msg = TrF("{} (server: {})", msg, e.message());
      return Fail(ErrorFromFrame(e.code()), msg);
    }
    const bool wanted = frame->body_case() == expected ||
                        (also != pb::Frame::BODY_NOT_SET && frame->body_case() == also);
    if (frame->request_id() != id || !wanted) {
      return Fail(errc::unexpected_frame, Tr("the server answered with an unexpected message"));
    }
    return std::move(*frame);
  }
  return Fail(errc::unexpected_frame, Tr("the server sent too many messages without answering"));
}

Outcome<pb::EnrollResult> SyncClient::Enroll(const pb::EnrollRequest& request) {
  pb::Frame f;
  *f.mutable_enroll() = request;
  auto r = Call(std::move(f), pb::Frame::kEnrollResult);
  if (!r) return r.error();
  return std::move(*r->mutable_enroll_result());
}

Outcome<pb::Welcome> SyncClient::Authenticate(const Id& device_id,
                                              const crypto::SecureBuffer& sign_sk,
                                              const std::string& expected_server_id) {
  pb::Frame hello;
  hello.mutable_hello()->add_versions(kProtocolVersion);
  hello.mutable_hello()->set_device_id(std::string(AsBytes(device_id)));
  hello.mutable_hello()->set_client(std::string(kClientName));
  auto ch = Call(std::move(hello), pb::Frame::kChallenge);
  if (!ch) return ch.error();
  const pb::Challenge& c = ch->challenge();
  if (c.version() != kProtocolVersion) {
    return Fail(errc::unsupported_version,
                Tr("update needed: the server chose a protocol version this teduh does not speak"));
  }
  if (!expected_server_id.empty() && c.server_id() != expected_server_id) {
    return Fail(errc::wrong_unit,
                Tr("this is not the server this device was enrolled with (server id differs)"));
  }
  std::string msg = AuthMessage(c.nonce(), c.server_id(), AsBytes(device_id));
  auto sig = crypto::Sign(sign_sk, AsSpan(msg));
  if (!sig) return Fail(sig.error(), Tr("cannot sign the server's challenge"));
  pb::Frame proof;
  proof.mutable_proof()->set_signature(reinterpret_cast<const char*>(sig->data()), sig->size());
  auto proof_id = Send(std::move(proof));
  if (!proof_id) return proof_id.error();
  auto w = Await(*proof_id, pb::Frame::kWelcome, pb::Frame::kWipe);
  if (!w) return w.error();
  if (w->has_wipe()) {
    wipe_order_ = std::move(*w->mutable_wipe()->mutable_order());
    return Fail(errc::wipe_ordered, Tr("the server ordered this revoked device to erase itself"));
  }
  const pb::Welcome& welcome = w->welcome();
  if (welcome.max_frame_bytes() > 0) {
    limits_.max_frame_bytes =
        std::min<std::size_t>(limits_.max_frame_bytes, welcome.max_frame_bytes());
  }
  if (welcome.max_push_changes() > 0) {
    limits_.max_push_changes =
        std::min<std::size_t>(limits_.max_push_changes, welcome.max_push_changes());
  }
  if (welcome.max_pull_changes() > 0) {
    limits_.max_pull_changes =
        std::min<std::size_t>(limits_.max_pull_changes, welcome.max_pull_changes());
  }
  return std::move(*w->mutable_welcome());
}

Outcome<pb::PushResult> SyncClient::Push(const std::vector<pb::FieldChange>& changes) {
  pb::Frame f;
  for (const auto& c : changes) *f.mutable_push()->add_changes() = c;
  auto r = Call(std::move(f), pb::Frame::kPushResult);
  if (!r) return r.error();
  return std::move(*r->mutable_push_result());
}

Outcome<pb::Changes> SyncClient::Pull(std::uint64_t generation, std::uint64_t after_seq,
                                      std::uint32_t limit) {
  auto id = RequestPull(generation, after_seq, limit);
  if (!id) return id.error();
  return AwaitChanges(*id);
}

Outcome<std::uint64_t> SyncClient::RequestPull(std::uint64_t generation, std::uint64_t after_seq,
                                               std::uint32_t limit, bool rolled_back,
                                               std::uint64_t acknowledged_mark) {
  pb::Frame f;
  f.mutable_pull()->set_generation(generation);
  f.mutable_pull()->set_after_seq(after_seq);
  f.mutable_pull()->set_limit(limit);
  if (rolled_back) {
    f.mutable_pull()->set_rolled_back(true);
    f.mutable_pull()->set_acknowledged_mark(acknowledged_mark);
  }
  return Send(std::move(f));
}

Outcome<pb::Changes> SyncClient::AwaitChanges(std::uint64_t request_id) {
  auto r = Await(request_id, pb::Frame::kChanges);
  if (!r) return r.error();
  return std::move(*r->mutable_changes());
}

Outcome<pb::History> SyncClient::History(const Id& record_id, std::uint32_t field) {
  pb::Frame f;
  f.mutable_history_request()->set_record_id(std::string(AsBytes(record_id)));
  f.mutable_history_request()->set_field(field);
  auto r = Call(std::move(f), pb::Frame::kHistory);
  if (!r) return r.error();
  return std::move(*r->mutable_history());
}

Outcome<pb::RepairResult> SyncClient::OfferRepairs(std::vector<pb::FieldChange>* values) {
  pb::Frame f;
  auto* offer = f.mutable_repair_offer();
  offer->mutable_values()->Reserve(static_cast<int>(values->size()));
  for (auto& v : *values) offer->add_values()->Swap(&v);
  auto r = Call(std::move(f), pb::Frame::kRepairResult);
  if (!r) return r.error();
  return std::move(*r->mutable_repair_result());
}

Outcome<pb::DeviceList> SyncClient::ListDevices(std::string_view id_prefix) {
  pb::Frame f;
  f.mutable_list_devices()->set_id_prefix(std::string(id_prefix));
  auto r = Call(std::move(f), pb::Frame::kDeviceList);
  if (!r) return r.error();
  return std::move(*r->mutable_device_list());
}

Outcome<pb::ApproveResult> SyncClient::Approve(const pb::ApproveDevice& request) {
  pb::Frame f;
  *f.mutable_approve_device() = request;
  auto r = Call(std::move(f), pb::Frame::kApproveResult);
  if (!r) return r.error();
  return std::move(*r->mutable_approve_result());
}

Outcome<pb::RevokeResult> SyncClient::Revoke(const pb::RevokeDevice& request) {
  pb::Frame f;
  *f.mutable_revoke_device() = request;
  auto r = Call(std::move(f), pb::Frame::kRevokeResult);
  if (!r) return r.error();
  return std::move(*r->mutable_revoke_result());
}

Outcome<pb::RotateResult> SyncClient::Rotate(const pb::RotateKeys& request) {
  pb::Frame f;
  *f.mutable_rotate_keys() = request;
  auto r = Call(std::move(f), pb::Frame::kRotateResult);
  if (!r) return r.error();
  return std::move(*r->mutable_rotate_result());
}

Outcome<void> SyncClient::AckKeys(const pb::AckKeys& request) {
  pb::Frame f;
  *f.mutable_ack_keys() = request;
  auto r = Call(std::move(f), pb::Frame::kAckKeysResult);
  if (!r) return r.error();
  return {};
}

Outcome<pb::KeyStatus> SyncClient::KeyStatus() {
  pb::Frame f;
  f.mutable_key_status_request();
  auto r = Call(std::move(f), pb::Frame::kKeyStatus);
  if (!r) return r.error();
  return std::move(*r->mutable_key_status());
}

Outcome<pb::RetireResult> SyncClient::Retire(const pb::RetireKeys& request) {
  pb::Frame f;
  *f.mutable_retire_keys() = request;
  auto r = Call(std::move(f), pb::Frame::kRetireResult);
  if (!r) return r.error();
  return std::move(*r->mutable_retire_result());
}

Outcome<pb::ShredResult> SyncClient::Shred(pb::Frame request) {
  auto r = Call(std::move(request), pb::Frame::kShredResult);
  if (!r) return r.error();
  return std::move(*r->mutable_shred_result());
}

Outcome<pb::OffboardResult> SyncClient::Offboard(pb::Frame request) {
  auto r = Call(std::move(request), pb::Frame::kOffboardResult);
  if (!r) return r.error();
  return std::move(*r->mutable_offboard_result());
}

Outcome<pb::RekeyCases> SyncClient::RekeyList(const pb::RekeyList& request) {
  pb::Frame f;
  *f.mutable_rekey_list() = request;
  auto r = Call(std::move(f), pb::Frame::kRekeyCases);
  if (!r) return r.error();
  return std::move(*r->mutable_rekey_cases());
}

Outcome<pb::RekeySet> SyncClient::RekeyFetch(const Id& case_id, const std::string& held_by) {
  pb::Frame f;
  f.mutable_rekey_fetch()->set_case_id(std::string(AsBytes(case_id)));
  f.mutable_rekey_fetch()->set_held_by(held_by);
  auto r = Call(std::move(f), pb::Frame::kRekeySet);
  if (!r) return r.error();
  return std::move(*r->mutable_rekey_set());
}

Outcome<pb::RekeyResult> SyncClient::Rekey(const pb::RekeyCase& request) {
  pb::Frame f;
  *f.mutable_rekey_case() = request;
  auto r = Call(std::move(f), pb::Frame::kRekeyResult);
  if (!r) return r.error();
  return std::move(*r->mutable_rekey_result());
}

Outcome<void> SyncClient::SendWipeReceipt(const teduh::keys::v1::WipeReceipt& receipt) {
  pb::Frame f;
  *f.mutable_wipe_receipt() = receipt;
  auto r = Call(std::move(f), pb::Frame::kError);
  if (!r && r.error().code == errc::device_revoked) return {};
  if (!r) return r.error();
  return Fail(errc::unexpected_frame, Tr("the server answered the wipe receipt unexpectedly"));
}

}  // namespace teduh::core
