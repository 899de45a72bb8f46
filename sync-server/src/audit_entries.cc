// Builds the sync service's audit entries (see audit_entries.h).
//
// A Push entry is built on the writer thread for every frame (up to thousands
// of changes), so it lives in an arena (one allocation, no per-message free)
// and uses the compact encoding of audit.proto: a stamp made by the entry's
// own device leaves its device_id empty, and a change of the same record kind
// as the previous change leaves `kind` empty.
#include "audit_entries.h"

#include <google/protobuf/arena.h>

#include <algorithm>

#include "teduh/server/audit.h"

namespace teduh::server {
namespace {

namespace a1 = teduh::audit::v1;

bool SameStamp(const v1::Stamp& a, const v1::Stamp& b) {
  return a.hlc() == b.hlc() && a.device_id() == b.device_id();
}

void CopyStamp(const v1::Stamp& from, std::string_view own_device, v1::Stamp* to) {
  to->set_hlc(from.hlc());
  if (from.device_id() != own_device) to->set_device_id(from.device_id());
}

void StartEntry(std::int64_t now_ms, a1::EntryKind kind, const Id& device_id, std::string_view user,
                Role role, a1::AuditEntry* entry) {
  entry->set_time_ms(now_ms);
  entry->set_kind(kind);
  entry->set_device_id(std::string(core::AsBytes(device_id)));
  entry->set_user(std::string(user));
  entry->set_role(role);
}

void StartEntry(WriterState& ws, a1::EntryKind kind, const Id& device_id, std::string_view user,
                Role role, a1::AuditEntry* entry) {
  StartEntry(ws.env.NowMs(), kind, device_id, user, role, entry);
}

void SetSubject(const DeviceRow& device, a1::AuditEntry* entry) {
  entry->set_subject_device_id(std::string(core::AsBytes(device.device_id)));
  entry->set_subject_user(device.user);
  entry->set_subject_role(device.role);
}

}  // namespace

core::error_code AuditPush(WriterState& ws, const Identity& who, const v1::Push& push,
                           const v1::PushResult& result, const std::vector<int>& repaired) {
  const int n = std::min(push.changes_size(), result.results_size());
  if (n == 0) return {};
  google::protobuf::ArenaOptions options;
  options.start_block_size = 64 * 1024;
  options.max_block_size = 1024 * 1024;
  google::protobuf::Arena arena(options);
  auto* entry = google::protobuf::Arena::CreateMessage<a1::AuditEntry>(&arena);
  StartEntry(ws, a1::ENTRY_KIND_PUSH, who.device_id, who.user, who.role, entry);
  const std::string_view own = core::AsBytes(who.device_id);
  entry->mutable_changes()->Reserve(n);
  const std::string* last_kind = nullptr;
  for (int i = 0; i < n; ++i) {
    const v1::FieldChange& c = push.changes(i);
    const v1::ChangeResult& r = result.results(i);
    a1::Change* a = entry->add_changes();
    // Ids, stamps and the decision only: c.value() is never read here.
    a->set_record_id(c.record_id());
    if (!last_kind || *last_kind != c.kind()) a->set_kind(c.kind());
    last_kind = &c.kind();
    a->set_parent_id(c.parent_id());
    a->set_field(c.field());
    a->set_device_seq(c.device_seq());
    a->set_status(r.status());
    a->set_reason(r.reason());
    if (c.has_stamp()) CopyStamp(c.stamp(), own, a->mutable_stamp());
    const v1::Stamp& stored = r.has_stamp() ? r.stamp() : c.stamp();
    if (r.has_stamp() && !SameStamp(r.stamp(), c.stamp()))
      CopyStamp(r.stamp(), own, a->mutable_stored());
    if (r.has_current() && !SameStamp(r.current(), stored))
      CopyStamp(r.current(), own, a->mutable_current());
    if (c.has_base()) CopyStamp(c.base(), own, a->mutable_base());
    a->set_resolves(c.resolves());
    a->set_conflict_id(r.conflict_id());
    a->set_sealed(c.sealed());
    if (c.sealed()) {
      a->set_key_class(c.key_class());
      a->set_key_version(c.key_version());
    }
  }
  for (int i : repaired)
    if (i >= 0 && i < n) entry->mutable_changes(i)->set_repaired(true);
  return AppendAuditEntry(ws.store, entry);
}

core::error_code AuditRepair(WriterState& ws, const Identity& who,
                             const std::vector<v1::FieldChange>& values) {
  if (values.empty()) return {};
  a1::AuditEntry entry;
  StartEntry(ws, a1::ENTRY_KIND_REPAIR, who.device_id, who.user, who.role, &entry);
  const std::string_view own = core::AsBytes(who.device_id);
  for (const v1::FieldChange& c : values) {
    a1::Change* a = entry.add_changes();
    a->set_record_id(c.record_id());
    a->set_kind(c.kind());
    a->set_parent_id(c.parent_id());
    a->set_field(c.field());
    a->set_status(v1::ChangeResult::STATUS_APPLIED);
    CopyStamp(c.stamp(), own, a->mutable_stamp());
    a->set_sealed(c.sealed());
    if (c.sealed()) {
      a->set_key_class(c.key_class());
      a->set_key_version(c.key_version());
    }
    a->set_repaired(true);
  }
  return AppendAuditEntry(ws.store, &entry);
}

core::error_code AuditEnroll(WriterState& ws, const DeviceRow& device, bool bootstrap,
                             bool recovered) {
  a1::AuditEntry entry;
  StartEntry(ws, a1::ENTRY_KIND_ENROLL, device.device_id, device.user, device.role, &entry);
  entry.set_state(device.state);
  entry.set_sign_pk(device.sign_pk);
  entry.set_bootstrap(bootstrap);
  entry.set_recovered(recovered);
  return AppendAuditEntry(ws.store, &entry);
}

core::error_code AuditApprove(WriterState& ws, const Identity& who, const DeviceRow& device,
                              const v1::ApproveDevice& request) {
  a1::AuditEntry entry;
  StartEntry(ws, a1::ENTRY_KIND_APPROVE, who.device_id, who.user, who.role, &entry);
  SetSubject(device, &entry);
  for (const auto& g : request.grants()) {
    a1::GrantedKey* k = entry.add_grants();
    k->set_key_class(g.key_class());
    k->set_epoch(g.epoch());
  }
  entry.set_root_key(request.has_root_grant());
  return AppendAuditEntry(ws.store, &entry);
}

core::error_code AuditRootKey(WriterState& ws, const Identity& who) {
  a1::AuditEntry entry;
  StartEntry(ws, a1::ENTRY_KIND_ROOT_KEY, who.device_id, who.user, who.role, &entry);
  return AppendAuditEntry(ws.store, &entry);
}

core::error_code AuditRecoveryKit(WriterState& ws, const Identity& who, std::uint32_t shares,
                                  std::uint32_t threshold) {
  a1::AuditEntry entry;
  StartEntry(ws, a1::ENTRY_KIND_RECOVERY_KIT, who.device_id, who.user, who.role, &entry);
  entry.set_shares(shares);
  entry.set_threshold(threshold);
  return AppendAuditEntry(ws.store, &entry);
}

core::error_code AuditRevoke(Store& store, std::int64_t now_ms, const std::optional<Identity>& by,
                             std::string_view by_user, const DeviceRow& device,
                             std::string_view order_signature) {
  a1::AuditEntry entry;
  if (by) {
    StartEntry(now_ms, a1::ENTRY_KIND_REVOKE, by->device_id, by->user, by->role, &entry);
  } else {
    StartEntry(now_ms, a1::ENTRY_KIND_REVOKE, Id{}, by_user, teduh::sync::v1::ROLE_UNSPECIFIED,
               &entry);
    entry.clear_device_id();
  }
  SetSubject(device, &entry);
  entry.set_state(teduh::sync::v1::DEVICE_STATE_REVOKED);
  entry.set_wipe_ordered(!order_signature.empty());
  entry.set_signature(std::string(order_signature));
  return AppendAuditEntry(store, &entry);
}

core::error_code AuditRotate(WriterState& ws, const Identity& who, teduh::AccessClass key_class,
                             std::uint32_t epoch, std::uint64_t rewrapped) {
  a1::AuditEntry entry;
  StartEntry(ws, a1::ENTRY_KIND_ROTATE, who.device_id, who.user, who.role, &entry);
  a1::GrantedKey* k = entry.add_grants();
  k->set_key_class(key_class);
  k->set_epoch(epoch);
  entry.set_rewrapped(rewrapped);
  return AppendAuditEntry(ws.store, &entry);
}

core::error_code AuditShred(WriterState& ws, const Identity& who, const Id& case_id,
                            bool carried_out) {
  a1::AuditEntry entry;
  StartEntry(ws, carried_out ? a1::ENTRY_KIND_SHRED : a1::ENTRY_KIND_SHRED_REQUEST, who.device_id,
             who.user, who.role, &entry);
  entry.set_case_id(std::string(core::AsBytes(case_id)));
  return AppendAuditEntry(ws.store, &entry);
}

core::error_code AuditOffboard(WriterState& ws, const Identity& who, std::string_view user,
                               std::string_view reassigned_to, std::size_t cases) {
  a1::AuditEntry entry;
  StartEntry(ws, a1::ENTRY_KIND_OFFBOARD, who.device_id, who.user, who.role, &entry);
  entry.set_subject_user(std::string(user));
  entry.set_reassigned_to(std::string(reassigned_to));
  entry.set_cases(static_cast<std::uint32_t>(cases));
  return AppendAuditEntry(ws.store, &entry);
}

core::error_code AuditRekey(
    WriterState& ws, const Identity& who, const Id& case_id, const std::optional<Id>& held_by,
    const std::vector<std::pair<teduh::AccessClass, std::uint32_t>>& versions) {
  a1::AuditEntry entry;
  StartEntry(ws, a1::ENTRY_KIND_REKEY, who.device_id, who.user, who.role, &entry);
  entry.set_case_id(std::string(core::AsBytes(case_id)));
  if (held_by) entry.set_subject_device_id(std::string(core::AsBytes(*held_by)));
  for (const auto& [cls, version] : versions) {
    a1::CaseKeyVersion* v = entry.add_key_versions();
    v->set_key_class(cls);
    v->set_version(version);
  }
  return AppendAuditEntry(ws.store, &entry);
}

core::error_code AuditRetire(WriterState& ws, const Identity& who, teduh::AccessClass key_class,
                             std::uint32_t epoch) {
  a1::AuditEntry entry;
  StartEntry(ws, a1::ENTRY_KIND_RETIRE, who.device_id, who.user, who.role, &entry);
  a1::GrantedKey* k = entry.add_grants();
  k->set_key_class(key_class);
  k->set_epoch(epoch);
  return AppendAuditEntry(ws.store, &entry);
}

core::error_code AuditWipeReceipt(WriterState& ws, const DeviceRow& device,
                                  std::string_view receipt_signature) {
  a1::AuditEntry entry;
  StartEntry(ws, a1::ENTRY_KIND_WIPE_RECEIPT, device.device_id, device.user, device.role, &entry);
  entry.set_state(teduh::sync::v1::DEVICE_STATE_REVOKED);
  entry.set_signature(std::string(receipt_signature));
  return AppendAuditEntry(ws.store, &entry);
}

}  // namespace teduh::server
