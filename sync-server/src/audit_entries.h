// The audit entries the sync service writes: one per accepted Push frame,
// enrollment, approval, revocation and wipe receipt (teduh/server/audit.h). Each is built from the
// request and the server's decision, never from a value, so it can hold no
// open or sealed content.
//
// Thread safety: writer thread only, inside the group transaction (the entry
// commits or rolls back with the changes it describes).
#pragma once

#include "sync_service.h"
#include "teduh/core/error.h"

namespace teduh::server {

// The Push frame `push` from `who` and its per-change outcome `result` (one
// ChangeResult per change, in order; `repaired`: the indices of changes that
// replaced a value found damaged). Writes nothing for an empty frame.
[[nodiscard]] core::error_code AuditPush(WriterState& ws, const Identity& who, const v1::Push& push,
                                         const v1::PushResult& result,
                                         const std::vector<int>& repaired = {});
// `who` re-sent `values` (ids and stamps; no value) that replaced damaged ones.
[[nodiscard]] core::error_code AuditRepair(WriterState& ws, const Identity& who,
                                           const std::vector<v1::FieldChange>& values);
// `device` was enrolled (with the unit's bootstrap code if `bootstrap`; with
// the unit root key rebuilt from a recovery kit if `recovered`).
[[nodiscard]] core::error_code AuditEnroll(WriterState& ws, const DeviceRow& device, bool bootstrap,
                                           bool recovered);
// `who` reported holding the unit root key an approval handed it.
[[nodiscard]] core::error_code AuditRootKey(WriterState& ws, const Identity& who);
// `who` made a recovery kit of `shares` shares, any `threshold` of which rebuild the root key.
[[nodiscard]] core::error_code AuditRecoveryKit(WriterState& ws, const Identity& who,
                                                std::uint32_t shares, std::uint32_t threshold);
// `who` (an admin device) approved `device` with the grants of `request`.
[[nodiscard]] core::error_code AuditApprove(WriterState& ws, const Identity& who,
                                            const DeviceRow& device,
                                            const v1::ApproveDevice& request);

// A device was revoked by `by` (an admin device; unset: on the server host by
// `by_user`), with a signed wipe order if `order_signature` is not empty.
// Takes the store and clock directly: the server host's `device revoke` runs
// outside the server, in its own transaction.
[[nodiscard]] core::error_code AuditRevoke(Store& store, std::int64_t now_ms,
                                           const std::optional<Identity>& by,
                                           std::string_view by_user, const DeviceRow& device,
                                           std::string_view order_signature);
// The revoked `device` reported its erasure with a receipt signed by its key.
[[nodiscard]] core::error_code AuditWipeReceipt(WriterState& ws, const DeviceRow& device,
                                                std::string_view receipt_signature);

// `who` rotated the class key to `epoch`: `rewrapped` case key records,
// and the grants of the new epoch (in the store).
[[nodiscard]] core::error_code AuditRotate(WriterState& ws, const Identity& who,
                                           teduh::AccessClass key_class, std::uint32_t epoch,
                                           std::uint64_t rewrapped);

// `who` asked for (supervisor) or carried out (admin device) the shredding of a case.
[[nodiscard]] core::error_code AuditShred(WriterState& ws, const Identity& who, const Id& case_id,
                                          bool carried_out);
// `who` offboarded `user`: devices revoked (their own entries) and `cases` reassigned.
[[nodiscard]] core::error_code AuditOffboard(WriterState& ws, const Identity& who,
                                             std::string_view user, std::string_view reassigned_to,
                                             std::size_t cases);
// `who` finished re-keying a case (against `held_by`'s keys, if set): the new
// versions per class.
[[nodiscard]] core::error_code AuditRekey(
    WriterState& ws, const Identity& who, const Id& case_id, const std::optional<Id>& held_by,
    const std::vector<std::pair<teduh::AccessClass, std::uint32_t>>& versions);
// `who` retired `epoch` of the class key.
[[nodiscard]] core::error_code AuditRetire(WriterState& ws, const Identity& who,
                                           teduh::AccessClass key_class, std::uint32_t epoch);

}  // namespace teduh::server
