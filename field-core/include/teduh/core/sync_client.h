// The device side of the sync protocol (docs/PROTOCOL.md): frames over a
// Transport, one request outstanding at a time. Every received frame goes through
// core::DecodeFrame; an Error frame becomes a Failure with the matching
// core::errc (core::ErrorFromFrame) and a sentence for the officer; Poke
// frames that arrive while waiting for a reply are noted (poked()) and skipped.
//
// The orchestration (what to push, where to store pulled batches) is the
// Device's; this class only speaks the protocol.
//
// Thread safety: one thread at a time.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "teduh/core/frame_codec.h"
#include "teduh/core/ids.h"
#include "teduh/core/outcome.h"
#include "teduh/core/transport.h"
#include "teduh/crypto/crypto.h"
#include "teduh/sync/v1/sync.pb.h"

namespace teduh::core {

class SyncClient {
 public:
  explicit SyncClient(std::unique_ptr<Transport> transport, FrameLimits limits = {});
  ~SyncClient();
  SyncClient(const SyncClient&) = delete;
  SyncClient& operator=(const SyncClient&) = delete;

  // First frame of an enrollment connection. The caller checks the result
  // (fingerprint, root key) before saving anything.
  Outcome<teduh::sync::v1::EnrollResult> Enroll(const teduh::sync::v1::EnrollRequest& request);

  // Hello / Challenge / Proof / Welcome. `expected_server_id` (16 B) when
  // pinned: a different server id is errc::wrong_unit. After success the
  // limits follow the smaller of ours and the server's. A revoked device may
  // get a Wipe instead of the Welcome: errc::wipe_ordered, with the order
  // (unverified) in wipe_order(); the connection stays open for the receipt.
  Outcome<teduh::sync::v1::Welcome> Authenticate(const Id& device_id,
                                                 const crypto::SecureBuffer& sign_sk,
                                                 const std::string& expected_server_id);

  Outcome<teduh::sync::v1::PushResult> Push(
      const std::vector<teduh::sync::v1::FieldChange>& changes);
  Outcome<teduh::sync::v1::Changes> Pull(std::uint64_t generation, std::uint64_t after_seq,
                                         std::uint32_t limit);
  // Pull in two halves, so a device can ask for the next batch while it
  // stores the one it has (at most one request outstanding at a time).
  Outcome<std::uint64_t> RequestPull(std::uint64_t generation, std::uint64_t after_seq,
                                     std::uint32_t limit, bool rolled_back = false,
                                     std::uint64_t acknowledged_mark = 0);
  Outcome<teduh::sync::v1::Changes> AwaitChanges(std::uint64_t request_id);
  // Every value a field (0: every field) of a record has had (online).
  Outcome<teduh::sync::v1::History> History(const Id& record_id, std::uint32_t field);
  // This device's copies of values the server found damaged (moved into the frame).
  Outcome<teduh::sync::v1::RepairResult> OfferRepairs(
      std::vector<teduh::sync::v1::FieldChange>* values);
  // The unit's devices, or those whose lower-case hex id starts with
  // `id_prefix` (at most 32 hex digits).
  Outcome<teduh::sync::v1::DeviceList> ListDevices(std::string_view id_prefix = {});
  Outcome<teduh::sync::v1::ApproveResult> Approve(const teduh::sync::v1::ApproveDevice& request);
  Outcome<teduh::sync::v1::RevokeResult> Revoke(const teduh::sync::v1::RevokeDevice& request);
  Outcome<teduh::sync::v1::RotateResult> Rotate(const teduh::sync::v1::RotateKeys& request);
  Outcome<void> AckKeys(const teduh::sync::v1::AckKeys& request);
  Outcome<teduh::sync::v1::KeyStatus> KeyStatus();
  Outcome<teduh::sync::v1::RetireResult> Retire(const teduh::sync::v1::RetireKeys& request);
  // A ShredRequest or ShredCase frame; answered with a ShredResult.
  Outcome<teduh::sync::v1::ShredResult> Shred(teduh::sync::v1::Frame request);
  // An OffboardUser frame.
  Outcome<teduh::sync::v1::OffboardResult> Offboard(teduh::sync::v1::Frame request);
  // Re-keying (admin devices).
  Outcome<teduh::sync::v1::RekeyCases> RekeyList(const teduh::sync::v1::RekeyList& request);
  Outcome<teduh::sync::v1::RekeySet> RekeyFetch(const Id& case_id, const std::string& held_by);
  Outcome<teduh::sync::v1::RekeyResult> Rekey(const teduh::sync::v1::RekeyCase& request);
  const std::optional<teduh::keys::v1::WipeOrder>& wipe_order() const { return wipe_order_; }
  // After a wipe order: sends the receipt; the server answers that the
  // device is revoked, which is success here.
  Outcome<void> SendWipeReceipt(const teduh::keys::v1::WipeReceipt& receipt);

  const FrameLimits& limits() const { return limits_; }
  bool poked() const { return poked_; }
  // The server's hint, in the last Error frame, of when to try again (0: none).
  std::uint32_t retry_after_ms() const { return retry_after_ms_; }
  void Close();

 private:
  Outcome<teduh::sync::v1::Frame> Call(teduh::sync::v1::Frame request,
                                       teduh::sync::v1::Frame::BodyCase expected);
  Outcome<std::uint64_t> Send(teduh::sync::v1::Frame request);
  // `also`: a second body accepted as the answer.
  Outcome<teduh::sync::v1::Frame> Await(
      std::uint64_t request_id, teduh::sync::v1::Frame::BodyCase expected,
      teduh::sync::v1::Frame::BodyCase also = teduh::sync::v1::Frame::BODY_NOT_SET);

  std::unique_ptr<Transport> transport_;
  FrameLimits limits_;
  std::uint64_t next_request_id_ = 1;
  bool poked_ = false;
  std::uint32_t retry_after_ms_ = 0;
  std::optional<teduh::keys::v1::WipeOrder> wipe_order_;
};

// The officer's sentence for a server error code (without the server's own text).
std::string ExplainServerError(teduh::sync::v1::ErrorCode code);

}  // namespace teduh::core
