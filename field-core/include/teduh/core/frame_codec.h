// Decoding and encoding of protocol frames (teduh.sync.v1.Frame). Every frame
// from the network passes through DecodeFrame, which bounds its size and
// checks every length the rest of the code relies on (ids are 16 bytes, keys
// 32, signatures 64, counts within limits). Code after it may trust those.
//
// Thread safety: stateless and thread-safe. Fuzzed by tests/fuzz/frame_fuzz.cc.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "teduh/core/error.h"
#include "teduh/sync/v1/sync.pb.h"

namespace teduh::core {

inline constexpr std::uint32_t kProtocolVersion = 1;

// Drops protobuf's own log lines (for instance about invalid UTF-8 in a
// string field of a hostile frame): they would let anyone who can send a
// frame write to the program's log at will. The decoders' results say what
// was wrong. Process-wide; the server and the device programs call it once.
void SilenceProtobufLog();

// The push answer (a rejection reason) for a sealed change under a case key
// version that a re-key deleted (PROTOCOL §8d). Not final: the device keeps
// the change, re-seals it under the new version after its next pull and
// sends it again with the same device_seq.
inline constexpr std::string_view kKeyReplacedReason = "key_replaced";

// The push answer for a change beyond the server's storage bound of a day
// (the device's or the unit's bytes, docs/SECURITY.md "Hostile clients").
// Not final: the device keeps the change and sends it again later with the
// same device_seq, and the server decides it anew.
inline constexpr std::string_view kQuotaReason = "quota";

// The push answer for a change to a record whose stored row the server found
// damaged (docs/SECURITY.md "Faults"). Not final, as quota: the device keeps
// the change and sends it again later; once an admin has repaired the store
// it is decided anew.
inline constexpr std::string_view kDamagedReason = "damaged";

// Push answers (rejection reasons) about a change's device_seq; none of them
// uses the number up, and the server stores nothing of the change.
//  - seq_reused: the server already holds another change under this number
//    (a device home restored from an earlier copy numbers new edits again).
//    The device gives the change a number above the server's mark (Welcome)
//    and sends it again.
//  - seq_order: the number is not above the previous change's in the push.
//  - seq_jump: the number is more than kMaxSeqJump above the server's mark.
inline constexpr std::string_view kSeqReusedReason = "seq_reused";
inline constexpr std::string_view kSeqOrderReason = "seq_order";
inline constexpr std::string_view kSeqJumpReason = "seq_jump";
inline constexpr std::uint64_t kMaxSeqJump = std::uint64_t{1} << 24;

// What identifies a change under its (device, device_seq): its record, kind,
// parent, field and stamp, and an open value's bytes. A sealed value is left
// out: a device seals an unanswered change again after a re-key
// (kKeyReplacedReason) and it stays the same change. BLAKE2b, 16 bytes.
using ChangeDigest = std::array<std::uint8_t, 16>;
ChangeDigest DigestOf(const teduh::sync::v1::FieldChange& change);

// Bounds on every input from the network. Both ends use the same defaults;
// the server announces its own in Welcome.
struct FrameLimits {
  std::size_t max_frame_bytes = 8u << 20;   // one WebSocket message
  std::size_t max_push_changes = 5000;      // changes in one Push
  std::size_t max_pull_changes = 5000;      // changes in one Changes batch
  std::size_t max_value_bytes = 64u << 10;  // one field value (attachments are chunked)
  std::size_t max_kind_bytes = 128;
  std::size_t max_text_bytes = 1024;  // codes, labels, user names, messages
  std::size_t max_grants = 64;
  std::size_t max_devices = 10000;
};

// Damaged server values a Welcome asks a device for, and the copies one
// RepairOffer carries (docs/SECURITY.md "Faults").
inline constexpr std::size_t kMaxRepairsOffered = 256;

// Parses and validates a frame. errc::frame_too_large or errc::malformed_frame,
// with `message` (if given) saying which bound was broken.
result<teduh::sync::v1::Frame> DecodeFrame(std::string_view bytes, const FrameLimits& limits,
                                           std::string* message = nullptr);
// Validates one change against the limits (also used for locally made changes).
error_code ValidateChange(const teduh::sync::v1::FieldChange& change, const FrameLimits& limits,
                          std::string* message);
std::string EncodeFrame(const teduh::sync::v1::Frame& frame);

// An Error frame for a reply.
teduh::sync::v1::Frame MakeErrorFrame(std::uint64_t request_id, teduh::sync::v1::ErrorCode code,
                                      std::string message);
// The core error an Error frame stands for on the device side.
errc ErrorFromFrame(teduh::sync::v1::ErrorCode code);

}  // namespace teduh::core
