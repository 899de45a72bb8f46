#include "teduh/core/sealing.h"

#include <algorithm>
#include <cctype>

namespace teduh::core {
namespace {

void PutU8(std::string& out, std::uint8_t v) { out.push_back(static_cast<char>(v)); }
void PutU16(std::string& out, std::uint16_t v) {
  PutU8(out, static_cast<std::uint8_t>(v >> 8));
  PutU8(out, static_cast<std::uint8_t>(v));
}
void PutU32(std::string& out, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) PutU8(out, static_cast<std::uint8_t>(v >> s));
}
void PutU64(std::string& out, std::uint64_t v) {
  for (int s = 56; s >= 0; s -= 8) PutU8(out, static_cast<std::uint8_t>(v >> s));
}
void PutId(std::string& out, const Id& id) { out.append(AsBytes(id)); }
crypto::ByteView View(std::string_view s) { return AsSpan(s); }

}  // namespace

std::string FieldAssociatedData(const SealContext& ctx) {
  std::string ad = "teduh-field-v1";
  ad.reserve(ad.size() + 16 + 2 + ctx.kind.size() + 4 + 8 + 16 + 1 + 4);
  PutId(ad, ctx.record_id);
  PutU16(ad, static_cast<std::uint16_t>(ctx.kind.size()));
  ad.append(ctx.kind);
  PutU32(ad, ctx.field);
  PutU64(ad, ctx.writer_hlc);
  PutId(ad, ctx.writer_device);
  PutU8(ad, static_cast<std::uint8_t>(ctx.key_class));
  PutU32(ad, ctx.key_version);
  return ad;
}

result<std::string> SealField(const crypto::SecureBuffer& case_key, const SealContext& ctx,
                              std::string_view plaintext) {
  auto sealed = crypto::AeadSeal(case_key, View(plaintext), View(FieldAssociatedData(ctx)));
  if (!sealed) return make_error_code(errc::key_missing);
  return std::string(sealed->begin(), sealed->end());
}

result<std::string> OpenField(const crypto::SecureBuffer& case_key, const SealContext& ctx,
                              std::string_view sealed) {
  if (sealed.size() < crypto::kAeadOverhead) return make_error_code(errc::integrity);
  std::string out(sealed.size() - crypto::kAeadOverhead, '\0');
  auto ec = crypto::AeadOpenInto(case_key, View(sealed), View(FieldAssociatedData(ctx)),
                                 {reinterpret_cast<std::uint8_t*>(out.data()), out.size()});
  if (ec) return make_error_code(errc::integrity);
  return out;
}

std::string CaseKeyAssociatedData(const Id& case_id, teduh::AccessClass key_class,
                                  std::uint32_t version, std::uint32_t epoch) {
  std::string ad = "teduh-casekey-v1";
  PutId(ad, case_id);
  PutU8(ad, static_cast<std::uint8_t>(key_class));
  PutU32(ad, version);
  PutU32(ad, epoch);
  return ad;
}

result<std::string> WrapCaseKey(const crypto::SecureBuffer& class_key, const Id& case_id,
                                teduh::AccessClass key_class, std::uint32_t version,
                                std::uint32_t epoch, const crypto::SecureBuffer& case_key) {
  auto wrapped = crypto::AeadSeal(class_key, case_key.view(),
                                  View(CaseKeyAssociatedData(case_id, key_class, version, epoch)));
  if (!wrapped) return make_error_code(errc::key_missing);
  return std::string(wrapped->begin(), wrapped->end());
}

result<crypto::SecureBuffer> UnwrapCaseKey(const crypto::SecureBuffer& class_key, const Id& case_id,
                                           teduh::AccessClass key_class, std::uint32_t version,
                                           std::uint32_t epoch, std::string_view wrapped) {
  auto key = crypto::SecureBuffer::Allocate(crypto::kAeadKeyBytes);
  if (!key) return key.error();
  if (auto ec = UnwrapCaseKeyInto(class_key, case_id, key_class, version, epoch, wrapped, *key))
    return ec;
  return std::move(*key);
}

error_code UnwrapCaseKeyInto(const crypto::SecureBuffer& class_key, const Id& case_id,
                             teduh::AccessClass key_class, std::uint32_t version,
                             std::uint32_t epoch, std::string_view wrapped,
                             crypto::SecureBuffer& out) {
  if (out.size() != crypto::kAeadKeyBytes ||
      wrapped.size() != crypto::kAeadKeyBytes + crypto::kAeadOverhead) {
    return make_error_code(errc::integrity);
  }
  if (crypto::AeadOpenInto(class_key, View(wrapped),
                           View(CaseKeyAssociatedData(case_id, key_class, version, epoch)),
                           out.span())) {
    return make_error_code(errc::integrity);  // out is wiped
  }
  return {};
}

std::string AuthMessage(std::string_view nonce, std::string_view server_id,
                        std::string_view device_id) {
  std::string m = "teduh-auth-v1";
  m.append(nonce);
  m.append(server_id);
  m.append(device_id);
  return m;
}

std::string GrantMessage(std::string_view device_id, teduh::AccessClass key_class,
                         std::uint32_t epoch, std::string_view sealed_key) {
  std::string m = "teduh-grant-v1";
  m.append(device_id);
  PutU8(m, static_cast<std::uint8_t>(key_class));
  PutU32(m, epoch);
  m.append(sealed_key);
  return m;
}

std::string RootGrantMessage(std::string_view device_id, std::string_view sealed_seed) {
  std::string m = "teduh-rootgrant-v1";
  m.append(device_id);
  m.append(sealed_seed);
  return m;
}

std::string EscrowMessage(teduh::AccessClass key_class, std::uint32_t epoch,
                          std::string_view sealed_key) {
  std::string m = "teduh-escrow-v1";
  PutU8(m, static_cast<std::uint8_t>(key_class));
  PutU32(m, epoch);
  m.append(sealed_key);
  return m;
}

std::string ApprovalMessage(int role, std::string_view sign_pk, std::string_view box_pk) {
  std::string m = "teduh-approval-v1";
  PutU8(m, static_cast<std::uint8_t>(role));
  m.append(sign_pk);
  m.append(box_pk);
  return m;
}

std::string RecoverMessage(std::string_view enroll_message) {
  std::string m = "teduh-recover-v1";
  m.append(enroll_message);
  return m;
}

namespace {
std::string OrderMessage(std::string_view domain, std::string_view subject,
                         std::string_view unit_id, std::int64_t issued_ms,
                         std::string_view admin_device_id) {
  std::string m(domain);
  m.append(subject);
  PutU16(m, static_cast<std::uint16_t>(std::min<std::size_t>(unit_id.size(), 0xFFFF)));
  m.append(unit_id.substr(0, 0xFFFF));
  PutU64(m, static_cast<std::uint64_t>(issued_ms));
  m.append(admin_device_id);
  return m;
}
}  // namespace

std::string WipeOrderMessage(std::string_view device_id, std::string_view unit_id,
                             std::int64_t issued_ms, std::string_view admin_device_id) {
  return OrderMessage("teduh-wipe-v1", device_id, unit_id, issued_ms, admin_device_id);
}

std::string ShredOrderMessage(std::string_view case_id, std::string_view unit_id,
                              std::int64_t issued_ms, std::string_view admin_device_id) {
  return OrderMessage("teduh-shred-v1", case_id, unit_id, issued_ms, admin_device_id);
}

std::string RetirementMessage(teduh::AccessClass key_class, std::uint32_t epoch,
                              std::string_view unit_id) {
  std::string m = "teduh-retire-v1";
  PutU8(m, static_cast<std::uint8_t>(key_class));
  PutU32(m, epoch);
  PutU16(m, static_cast<std::uint16_t>(std::min<std::size_t>(unit_id.size(), 0xFFFF)));
  m.append(unit_id.substr(0, 0xFFFF));
  return m;
}

std::string WipeReceiptMessage(std::string_view device_id, std::string_view order_signature,
                               std::int64_t erased_ms) {
  std::string m = "teduh-wipe-receipt-v1";
  m.append(device_id);
  m.append(order_signature);
  PutU64(m, static_cast<std::uint64_t>(erased_ms));
  return m;
}

std::string EnrollMessage(std::string_view code, std::string_view sign_pk, std::string_view box_pk,
                          std::string_view unit_root_pk) {
  std::string m = "teduh-enroll-v1";
  PutU16(m, static_cast<std::uint16_t>(code.size()));
  m.append(code);
  m.append(sign_pk);
  m.append(box_pk);
  m.append(unit_root_pk);
  return m;
}

std::string KeyFingerprint(std::string_view public_key) {
  auto h = crypto::Hash(View(public_key));
  std::string hex = ToHex(std::span<const std::uint8_t>(h.data(), 4));
  for (char& c : hex) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return hex;
}

std::string DeviceFingerprint(std::string_view sign_pk, std::string_view box_pk) {
  std::string both(sign_pk);
  both.append(box_pk);
  return KeyFingerprint(both);
}

}  // namespace teduh::core
