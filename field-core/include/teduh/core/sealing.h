// The byte layouts that bind keys and signatures to their context. Shared by
// the device (which seals and opens) and the server (which verifies grants
// and device proofs but never decrypts). Layouts are specified in
// docs/PROTOCOL.md; changing one breaks every stored value.
//
// Thread safety: stateless and thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "teduh/core/error.h"
#include "teduh/core/hlc.h"
#include "teduh/core/ids.h"
#include "teduh/crypto/crypto.h"
#include "teduh/options.pb.h"

namespace teduh::core {

// Where a sealed value belongs; all of it is bound into the AEAD's associated data.
struct SealContext {
  Id record_id{};
  std::string_view kind;
  std::uint32_t field = 0;
  std::uint64_t writer_hlc = 0;  // the writer's own HLC (FieldChange.origin_hlc or stamp.hlc)
  Id writer_device{};
  teduh::AccessClass key_class = teduh::ACCESS_CLASS_GENERAL;
  std::uint32_t key_version = 0;
};

// "teduh-field-v1" || record_id || u16 BE len(kind) || kind || field u32 BE ||
// writer_hlc u64 BE || writer_device || class u8 || key_version u32 BE
std::string FieldAssociatedData(const SealContext& ctx);

// Seals a field's single-field serialization under a case key.
result<std::string> SealField(const crypto::SecureBuffer& case_key, const SealContext& ctx,
                              std::string_view plaintext);
// Opens it; errc::integrity if the ciphertext, its context or the key is wrong.
// The plaintext is wiped by the caller after use (crypto::Wipe).
result<std::string> OpenField(const crypto::SecureBuffer& case_key, const SealContext& ctx,
                              std::string_view sealed);

// Case key wrapping under a class key (see keys.proto CaseKey).
std::string CaseKeyAssociatedData(const Id& case_id, teduh::AccessClass key_class,
                                  std::uint32_t version, std::uint32_t epoch);
result<std::string> WrapCaseKey(const crypto::SecureBuffer& class_key, const Id& case_id,
                                teduh::AccessClass key_class, std::uint32_t version,
                                std::uint32_t epoch, const crypto::SecureBuffer& case_key);
result<crypto::SecureBuffer> UnwrapCaseKey(const crypto::SecureBuffer& class_key, const Id& case_id,
                                           teduh::AccessClass key_class, std::uint32_t version,
                                           std::uint32_t epoch, std::string_view wrapped);
// The same into an existing 32-byte guarded buffer (no allocation); on failure
// `out` is wiped and the result is errc::integrity.
error_code UnwrapCaseKeyInto(const crypto::SecureBuffer& class_key, const Id& case_id,
                             teduh::AccessClass key_class, std::uint32_t version,
                             std::uint32_t epoch, std::string_view wrapped,
                             crypto::SecureBuffer& out);

// Signed messages.
// "teduh-auth-v1" || nonce || server_id || device_id
std::string AuthMessage(std::string_view nonce, std::string_view server_id,
                        std::string_view device_id);
// "teduh-grant-v1" || device_id || class u8 || epoch u32 BE || sealed_key
std::string GrantMessage(std::string_view device_id, teduh::AccessClass key_class,
                         std::uint32_t epoch, std::string_view sealed_key);
// "teduh-rootgrant-v1" || device_id || sealed_seed (keys.proto RootGrant)
std::string RootGrantMessage(std::string_view device_id, std::string_view sealed_seed);
// "teduh-escrow-v1" || class u8 || epoch u32 BE || sealed_key (keys.proto EscrowGrant)
std::string EscrowMessage(teduh::AccessClass key_class, std::uint32_t epoch,
                          std::string_view sealed_key);
// "teduh-approval-v1" || role u8 || sign_pk || box_pk: the unit root key's
// word that a device of this role holds these keys (sync.proto DeviceInfo).
std::string ApprovalMessage(int role, std::string_view sign_pk, std::string_view box_pk);
// "teduh-recover-v1" || EnrollMessage(...): signed with the unit root key by a
// device rebuilt from a recovery kit.
std::string RecoverMessage(std::string_view enroll_message);
// "teduh-enroll-v1" || u16 BE len(code) || code || sign_pk || box_pk || unit_root_pk
std::string EnrollMessage(std::string_view code, std::string_view sign_pk, std::string_view box_pk,
                          std::string_view unit_root_pk);

// Orders signed with the unit root key: domain || subject (16 B) || u16 BE
// len(unit_id) || unit_id || issued_ms u64 BE || admin_device_id (16 B).
// Wipe order: domain "teduh-wipe-v1", subject the device.
std::string WipeOrderMessage(std::string_view device_id, std::string_view unit_id,
                             std::int64_t issued_ms, std::string_view admin_device_id);
// Shred order: domain "teduh-shred-v1", subject the case.
std::string ShredOrderMessage(std::string_view case_id, std::string_view unit_id,
                              std::int64_t issued_ms, std::string_view admin_device_id);
// "teduh-retire-v1" || class u8 || epoch u32 BE || u16 BE len(unit_id) || unit_id
std::string RetirementMessage(teduh::AccessClass key_class, std::uint32_t epoch,
                              std::string_view unit_id);
// "teduh-wipe-receipt-v1" || device_id || order_signature || erased_ms u64 BE
std::string WipeReceiptMessage(std::string_view device_id, std::string_view order_signature,
                               std::int64_t erased_ms);

// Short fingerprint of a public key: first 8 hex digits of BLAKE2b-256, upper case.
std::string KeyFingerprint(std::string_view public_key);
// A device's fingerprint, as its officer and the approving admin compare it:
// KeyFingerprint(sign_pk || box_pk). It covers both public keys, so a server
// that swaps the key grants are sealed to changes what the admin sees.
std::string DeviceFingerprint(std::string_view sign_pk, std::string_view box_pk);

}  // namespace teduh::core
