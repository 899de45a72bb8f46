// Class key rotation, key status and retirement (PROTOCOL §8b), and
// crypto-shredding (§8c); ARCHITECTURE §4.
//
// Design notes
// ------------
// An admin device makes epoch e+1 of a class key, re-wraps every case key of
// the unit under it and sends the re-wraps in RotateKeys frames (thousands
// per frame), the last one with `commit` and the new epoch's grants. The
// server stages re-wraps in `rotation_staging` and applies nothing until the
// commit, which happens in one writer transaction: so a rotation is never
// half-visible, and an interrupted one is resumed by sending the staging
// again (a re-wrap is keyed by record id) and committing.
//
// The commit is refused, and the staging kept, unless:
//   1. every case key record of the class under an older epoch is staged
//      (a stale admin device, or a device that added a case key meanwhile,
//      leaves some uncovered: the admin device syncs and runs it again);
//   2. every staged record is a case key of the class;
//   3. every active device whose role holds the class gets a grant of the new
//      epoch, signed by the unit root key.
// A committed rotation rewrites each CaseKey record's `epoch` and `wrapped`
// fields under server stamps (devices pull them like any change; no case
// content moves) and keeps no history of the old wraps: they are key
// material under the old epoch, not case content.
#include <google/protobuf/message.h>

#include <algorithm>
#include <map>
#include <set>

#include "audit_entries.h"
#include "sync_service.h"
#include "teduh/core/roles.h"
#include "teduh/core/sealing.h"
#include "teduh/crypto/crypto.h"
#include "teduh/keys/v1/keys.pb.h"

namespace teduh::server {
namespace {

using core::error_code;

constexpr std::uint32_t kEpochField = 3;    // teduh.keys.v1.CaseKey.epoch
constexpr std::uint32_t kWrappedField = 4;  // teduh.keys.v1.CaseKey.wrapped
// nonce, key, tag
constexpr std::size_t kWrappedBytes = crypto::kAeadKeyBytes + crypto::kAeadOverhead;

using core::KnownClass;

// How far past the store's current epoch a rotation may go (forgotten rotations).
constexpr std::uint32_t kMaxEpochSkip = 1024;

std::uint32_t CurrentEpoch(const std::vector<GrantRow>& grants, teduh::AccessClass cls) {
  std::uint32_t e = 0;
  for (const auto& g : grants)
    if (g.key_class == cls) e = std::max(e, g.epoch);
  return e;
}

// Applies the staged re-wraps of a checked commit: new `epoch` and `wrapped`
// values under server stamps.
error_code ApplyStaging(WriterState& ws, const Identity& who, teduh::AccessClass cls,
                        std::uint32_t epoch, std::uint64_t txn, std::uint64_t* applied) {
  teduh::keys::v1::CaseKey epoch_only;
  epoch_only.set_epoch(epoch);
  const std::string epoch_value = epoch_only.SerializeAsString();
  std::string wrapped_value;
  return ws.store.ScanStaging(
      cls, epoch, who.device_id, [&](const Id& record_id, std::string_view wrapped) {
        teduh::keys::v1::CaseKey wrapped_only;
        wrapped_only.set_wrapped(std::string(wrapped));
        wrapped_value = wrapped_only.SerializeAsString();
        for (const auto& [field, value] :
             {std::pair<std::uint32_t, const std::string*>{kEpochField, &epoch_value},
              {kWrappedField, &wrapped_value}}) {
          if (auto ec =
                  ws.store.PutField(ServerFieldRow(ws, record_id, field, *value, who.user, txn)))
            return ec;
        }
        ++*applied;
        return error_code();
      });
}

// What key status and retirement look at.
struct KeyState {
  std::vector<DeviceRow> devices;
  std::vector<GrantRow> grants;
  std::vector<KeyAckRow> acks;
  std::map<std::pair<int, std::uint32_t>, std::uint64_t> case_keys;  // (class, epoch) -> count
  std::map<Id, const DeviceRow*> active;

  static result<KeyState> Load(Store& store) {
    KeyState k;
    auto devices = store.ListDevices();
    if (!devices) return devices.error();
    k.devices = std::move(*devices);
    auto grants = store.AllGrants();
    if (!grants) return grants.error();
    k.grants = std::move(*grants);
    auto acks = store.KeyAcks();
    if (!acks) return acks.error();
    k.acks = std::move(*acks);
    if (auto e = store.ScanCaseKeys([&](const CaseKeyRow& r) {
          ++k.case_keys[{r.key_class, r.epoch}];
        }))
      return e;
    for (const DeviceRow& d : k.devices)
      if (d.state == v1::DEVICE_STATE_ACTIVE) k.active[d.device_id] = &d;
    return k;
  }
  std::uint64_t CaseKeysUnder(teduh::AccessClass cls, std::uint32_t epoch) const {
    auto it = case_keys.find({cls, epoch});
    return it == case_keys.end() ? 0 : it->second;
  }
  std::uint32_t AckedBy(const Id& device, teduh::AccessClass cls) const {
    std::uint32_t best = 0;
    for (const auto& a : acks)
      if (a.device_id == device && a.key_class == cls) best = std::max(best, a.epoch);
    return best;
  }
  // Why `epoch` of `cls` may not be retired yet; empty if it may: it is older
  // than the current epoch, wraps no case key, and every active device that
  // holds the class reported holding the current epoch.
  std::string WhyNotRetirable(teduh::AccessClass cls, std::uint32_t epoch) const {
    const std::uint32_t current = CurrentEpoch(grants, cls);
    if (epoch >= current) return "it is the current epoch";
    if (auto n = CaseKeysUnder(cls, epoch); n > 0)
      return std::to_string(n) + " case keys still use it (rotate again)";
    for (const auto& [id, d] : active) {
      if (core::MayHoldClass(d->role, cls) && AckedBy(id, cls) < current)
        return "device " + core::ToHex(id).substr(0, 8) + " (" + d->user +
               ") has not received epoch " + std::to_string(current) + " yet";
    }
    return {};
  }
};

}  // namespace

bool AdminOnly(Store& store, const Identity& who, const char* action, Outcome* out,
               error_code* ec) {
  auto device = store.FindDevice(who.device_id);
  if (!device) {
    *ec = device.error();
    return false;
  }
  if (!CheckActive(*device, out)) return false;
  if ((*device)->role != v1::ROLE_ADMIN) {
    SetError(out, v1::ERROR_CODE_FORBIDDEN, std::string("Only admin devices ") + action + ".",
             false);
    return false;
  }
  return true;
}

error_code Rotate(WriterState& ws, const Identity& who, const v1::RotateKeys& req, Outcome* out,
                  bool* committed) {
  *committed = false;
  error_code ec;
  if (!AdminOnly(ws.store, who, "rotate keys", out, &ec)) return ec;
  const teduh::AccessClass cls = req.key_class();
  if (!KnownClass(cls)) {
    SetError(out, v1::ERROR_CODE_BAD_REQUEST, "The rotation names no valid key class.", false);
    return {};
  }
  auto grants = ws.store.AllGrants();
  if (!grants) return grants.error();
  const std::uint32_t current = CurrentEpoch(*grants, cls);
  v1::RotateResult* result = out->reply.mutable_rotate_result();
  if (req.epoch() == current && req.commit() && req.rewraps().empty()) {
    result->set_committed(true);  // a repeated commit whose answer was lost
    return {};
  }
  // Normally the next one; higher after a store put back from a file copy
  // forgot rotations the devices still hold: the admin device skips past
  // every epoch it has seen, so no number ever names two keys.
  if (req.epoch() <= current || req.epoch() > current + kMaxEpochSkip) {
    SetError(out, v1::ERROR_CODE_BAD_REQUEST,
             "The next epoch of the " + core::ClassName(cls) + " key is " +
                 std::to_string(current + 1) + ": sync this device, then rotate again.",
             false);
    return {};
  }
  if (auto e = ws.store.DropStaleStaging(cls, req.epoch(), who.device_id)) return e;
  for (const auto& r : req.rewraps()) {
    auto id = core::IdFromBytes(r.record_id());
    if (!id || r.wrapped().size() != kWrappedBytes) {
      SetError(out, v1::ERROR_CODE_BAD_REQUEST, "A re-wrapped case key is malformed.", false);
      return {};
    }
    if (auto e = ws.store.StageRewrap(cls, req.epoch(), *id, r.wrapped(), who.device_id)) return e;
  }
  result->set_staged(static_cast<std::uint64_t>(req.rewraps_size()));
  if (!req.commit()) return {};

  // Check 1 and 2: the staging covers exactly the case keys of the class.
  std::map<Id, CaseKeyRow> keys;
  if (auto e = ws.store.ScanCaseKeys([&](const CaseKeyRow& k) { keys.emplace(k.record_id, k); }))
    return e;
  std::set<Id> staged;
  bool foreign = false;
  if (auto e = ws.store.ScanStaging(cls, req.epoch(), who.device_id,
                                    [&](const Id& id, std::string_view) {
                                      auto it = keys.find(id);
                                      if (it == keys.end() || it->second.key_class != cls)
                                        foreign = true;
                                      staged.insert(id);
                                      return error_code();
                                    }))
    return e;
  if (foreign) {
    if (auto e = ws.store.ClearStaging(cls)) return e;
    SetError(out, v1::ERROR_CODE_BAD_REQUEST,
             "The rotation re-wraps records that are not case keys of the class; nothing was "
             "changed.",
             false);
    return {};
  }
  std::uint64_t uncovered = 0;
  for (const auto& [id, k] : keys)
    if (k.key_class == cls && k.epoch < req.epoch() && !staged.contains(id)) ++uncovered;
  result->set_staged(staged.size());
  if (uncovered > 0) {
    result->set_uncovered(uncovered);
    return {};
  }

  // Check 3: a signed grant of the new epoch for every active device that holds the class.
  auto devices = ws.store.ListDevices();
  if (!devices) return devices.error();
  std::map<Id, const teduh::keys::v1::Grant*> given;
  for (const auto& g : req.grants()) {
    auto id = core::IdFromBytes(g.device_id());
    if (!id || g.key_class() != cls || g.epoch() != req.epoch() || g.sealed_key().empty() ||
        !crypto::Verify(core::AsSpan(ws.unit.unit_root_pk),
                        core::AsSpan(core::GrantMessage(g.device_id(), g.key_class(), g.epoch(),
                                                        g.sealed_key())),
                        core::AsSpan(g.signature()))) {
      SetError(out, v1::ERROR_CODE_BAD_SIGNATURE,
               "A grant of the new epoch is not signed by the unit root key for that device.",
               false);
      return {};
    }
    given[*id] = &g;
  }
  for (const DeviceRow& d : *devices) {
    const bool holds = d.state == v1::DEVICE_STATE_ACTIVE && core::MayHoldClass(d.role, cls);
    if (holds && !given.contains(d.device_id)) {
      SetError(out, v1::ERROR_CODE_BAD_REQUEST,
               "Device " + core::ToHex(d.device_id).substr(0, 8) + " (" + d.user +
                   ") gets no grant of the new epoch: run the rotation again.",
               false);
      return {};
    }
    if (!holds && given.contains(d.device_id)) {
      SetError(out, v1::ERROR_CODE_BAD_REQUEST,
               "A grant of the new epoch names a device that may not hold the class.", false);
      return {};
    }
  }
  if (given.size() != static_cast<std::size_t>(req.grants_size())) {
    SetError(out, v1::ERROR_CODE_BAD_REQUEST, "A device has two grants of the new epoch.", false);
    return {};
  }

  // Apply, all in this transaction.
  for (const auto& [id, g] : given) {
    GrantRow row{id, cls, req.epoch(), g->sealed_key(), g->signature()};
    if (auto e = ws.store.PutGrant(row)) return e;
  }
  // The rotating admin device made the key: it holds it.
  if (auto e = ws.store.PutKeyAck(KeyAckRow{who.device_id, cls, req.epoch(), ws.env.NowMs()}))
    return e;
  std::uint64_t applied = 0;
  if (auto e = ApplyStaging(ws, who, cls, req.epoch(), ws.store.AllocateTxn(), &applied)) return e;
  if (auto e = ws.store.ClearStaging(cls)) return e;
  if (auto e = ws.store.SaveHlc(ws.hlc.last())) return e;
  if (auto e = AuditRotate(ws, who, cls, req.epoch(), applied)) return e;
  result->set_committed(true);
  *committed = true;
  return {};
}

namespace {

// The key custody part of an AckKeys (PROTOCOL §8e), from an admin device:
// the root key it was handed is held, escrow grants the server lacks, a
// recovery kit made.
error_code AckCustody(WriterState& ws, const Identity& who, const DeviceRow& device,
                      const v1::AckKeys& req, Outcome* out) {
  const bool custody = req.root_key_held() || req.escrow_size() > 0 || req.has_recovery_kit();
  if (!custody) return {};
  if (device.role != v1::ROLE_ADMIN) {
    SetError(out, v1::ERROR_CODE_FORBIDDEN, "Only admin devices hold the unit root key.", false);
    return {};
  }
  for (const auto& e : req.escrow()) {
    if (!crypto::Verify(core::AsSpan(ws.unit.unit_root_pk),
                        core::AsSpan(core::EscrowMessage(e.key_class(), e.epoch(), e.sealed_key())),
                        core::AsSpan(e.signature()))) {
      SetError(out, v1::ERROR_CODE_BAD_SIGNATURE,
               "An escrowed key is not signed by the unit root key.", false);
      return {};
    }
  }
  auto holders = ws.store.RootHolders();
  if (!holders) return holders.error();
  const auto mine = std::find_if(holders->begin(), holders->end(), [&](const RootHolderRow& h) {
    return h.device_id == who.device_id;
  });
  // Only a device handed the key confirms it (any signed escrow proves the
  // key too, but says nothing of who holds it).
  if (req.root_key_held() && mine != holders->end() && mine->since_ms == 0) {
    if (auto e = ws.store.PutRootHolder(RootHolderRow{who.device_id, ws.env.NowMs(), {}})) return e;
    if (auto e = AuditRootKey(ws, who)) return e;
  }
  // A retired epoch is never kept again (a replayed or late grant).
  auto retired = ws.store.Retirements();
  if (!retired) return retired.error();
  for (const auto& e : req.escrow()) {
    bool gone = false;
    for (const auto& body : *retired) {
      teduh::keys::v1::Retirement r;
      if (r.ParseFromString(body) && r.key_class() == e.key_class() && r.epoch() == e.epoch())
        gone = true;
    }
    if (gone) continue;
    if (auto ec = ws.store.PutEscrowGrant(e.key_class(), e.epoch(), e.SerializeAsString()))
      return ec;
  }
  if (req.has_recovery_kit()) {
    // Only a holder of the root key makes a kit (an audit entry must not be forged).
    if (mine == holders->end() || (mine->since_ms == 0 && !req.root_key_held())) {
      SetError(out, v1::ERROR_CODE_FORBIDDEN,
               "Only an admin device holding the unit root key makes a recovery kit.", false);
      return {};
    }
    const auto& kit = req.recovery_kit();
    if (kit.threshold() < 2 || kit.threshold() > kit.shares() || kit.shares() > 255) {
      SetError(out, v1::ERROR_CODE_BAD_REQUEST, "The recovery kit's numbers are impossible.",
               false);
      return {};
    }
    if (auto e = AuditRecoveryKit(ws, who, kit.shares(), kit.threshold())) return e;
  }
  return {};
}

}  // namespace

error_code AckKeys(WriterState& ws, const Identity& who, const v1::AckKeys& req, Outcome* out) {
  auto device = ws.store.FindDevice(who.device_id);
  if (!device) return device.error();
  if (!CheckActive(*device, out)) return {};
  auto grants = ws.store.GrantsFor(who.device_id);
  if (!grants) return grants.error();
  for (const auto& held : req.held()) {
    const bool granted = std::any_of(grants->begin(), grants->end(), [&](const GrantRow& g) {
      return g.key_class == held.key_class() && g.epoch == held.epoch();
    });
    if (!granted) continue;  // only what was granted to it counts
    KeyAckRow row{who.device_id, held.key_class(), held.epoch(), ws.env.NowMs()};
    if (auto e = ws.store.PutKeyAck(row)) return e;
  }
  if (auto e = AckCustody(ws, who, **device, req, out)) return e;
  if (out->reply.has_error()) return {};
  out->reply.mutable_ack_keys_result();
  return {};
}

error_code KeyStatusFor(Store& store, const Identity& who, Outcome* out) {
  error_code ec;
  if (!AdminOnly(store, who, "see key status", out, &ec)) return ec;
  auto state = KeyState::Load(store);
  if (!state) return state.error();
  const KeyState& k = *state;
  v1::KeyStatus* status = out->reply.mutable_key_status();
  for (teduh::AccessClass cls : {teduh::ACCESS_CLASS_GENERAL, teduh::ACCESS_CLASS_CLINICAL}) {
    v1::ClassStatus* c = status->add_classes();
    c->set_key_class(cls);
    c->set_current_epoch(CurrentEpoch(k.grants, cls));
    std::set<std::uint32_t> epochs;
    for (const auto& g : k.grants)
      if (g.key_class == cls) epochs.insert(g.epoch);
    for (const auto& [key, n] : k.case_keys)
      if (key.first == cls) epochs.insert(key.second);
    for (std::uint32_t e : epochs) {
      v1::EpochStatus* es = c->add_epochs();
      es->set_epoch(e);
      es->set_case_keys(k.CaseKeysUnder(cls, e));
      std::uint32_t granted = 0, acked = 0;
      for (const auto& g : k.grants)
        if (g.key_class == cls && g.epoch == e && k.active.contains(g.device_id)) ++granted;
      for (const auto& a : k.acks)
        if (a.key_class == cls && a.epoch == e && k.active.contains(a.device_id)) ++acked;
      es->set_devices_granted(granted);
      es->set_devices_acked(acked);
      es->set_retirable(k.WhyNotRetirable(cls, e).empty());
    }
    for (const auto& [id, d] : k.active) {
      if (!core::MayHoldClass(d->role, cls)) continue;
      v1::DeviceKeys* dk = c->add_devices();
      dk->set_device_id(std::string(core::AsBytes(id)));
      dk->set_user(d->user);
      dk->set_role(d->role);
      dk->set_acked_epoch(k.AckedBy(id, cls));
    }
  }
  return {};
}

error_code RetireKeys(WriterState& ws, const Identity& who, const v1::RetireKeys& req,
                      Outcome* out) {
  error_code ec;
  if (!AdminOnly(ws.store, who, "retire keys", out, &ec)) return ec;
  auto state = KeyState::Load(ws.store);
  if (!state) return state.error();
  // All checked before anything is written: one refused retirement refuses the frame.
  for (const auto& r : req.retirements()) {
    if (!KnownClass(r.key_class()) || r.unit_id() != ws.unit.unit_id ||
        !crypto::Verify(
            core::AsSpan(ws.unit.unit_root_pk),
            core::AsSpan(core::RetirementMessage(r.key_class(), r.epoch(), r.unit_id())),
            core::AsSpan(r.signature()))) {
      SetError(out, v1::ERROR_CODE_BAD_SIGNATURE,
               "A retirement is not signed by the unit root key for this unit.", false);
      return {};
    }
    if (auto why = state->WhyNotRetirable(r.key_class(), r.epoch()); !why.empty()) {
      SetError(out, v1::ERROR_CODE_BAD_REQUEST,
               "Epoch " + std::to_string(r.epoch()) + " of the " + core::ClassName(r.key_class()) +
                   " key cannot be retired: " + why + ".",
               false);
      return {};
    }
  }
  v1::RetireResult* result = out->reply.mutable_retire_result();
  for (const auto& r : req.retirements()) {
    if (auto e = ws.store.RetireEpoch(r.key_class(), r.epoch(), r.SerializeAsString())) return e;
    if (auto e = AuditRetire(ws, who, r.key_class(), r.epoch())) return e;
    v1::KeyEpoch* k = result->add_retired();
    k->set_key_class(r.key_class());
    k->set_epoch(r.epoch());
  }
  return {};
}

error_code RequestShred(WriterState& ws, const Identity& who, const v1::ShredRequest& req,
                        Outcome* out) {
  auto device = ws.store.FindDevice(who.device_id);
  if (!device) return device.error();
  if (!CheckActive(*device, out)) return {};
  if ((*device)->role != v1::ROLE_SUPERVISOR) {
    SetError(out, v1::ERROR_CODE_FORBIDDEN, "Only supervisors ask for a case to be shredded.",
             false);
    return {};
  }
  auto case_id = core::IdFromBytes(req.case_id());
  if (!case_id) {
    SetError(out, v1::ERROR_CODE_BAD_REQUEST, "The case id is not 16 bytes.", false);
    return {};
  }
  auto record = ws.store.FindRecord(*case_id);
  if (!record) return record.error();
  if (!*record || (*record)->case_id != *case_id) {
    SetError(out, v1::ERROR_CODE_BAD_REQUEST, "No such case on the server.", false);
    return {};
  }
  if (auto e = ws.store.PutShredRequest(*case_id, who.user, ws.env.NowMs())) return e;
  if (auto e = AuditShred(ws, who, *case_id, /*carried_out=*/false)) return e;
  v1::ShredResult* r = out->reply.mutable_shred_result();
  r->set_case_id(req.case_id());
  r->set_state("requested");
  r->set_requested_by(who.user);
  return {};
}

error_code Shred(WriterState& ws, const Identity& who, const v1::ShredCase& req, Outcome* out,
                 bool* shredded) {
  *shredded = false;
  error_code ec;
  if (!AdminOnly(ws.store, who, "shred cases", out, &ec)) return ec;
  const teduh::keys::v1::ShredOrder& order = req.order();
  auto case_id = core::IdFromBytes(order.case_id());
  if (!case_id || order.unit_id() != ws.unit.unit_id ||
      order.admin_device_id() != core::AsBytes(who.device_id) ||
      !crypto::Verify(
          core::AsSpan(ws.unit.unit_root_pk),
          core::AsSpan(core::ShredOrderMessage(order.case_id(), order.unit_id(), order.issued_ms(),
                                               order.admin_device_id())),
          core::AsSpan(order.signature()))) {
    SetError(out, v1::ERROR_CODE_BAD_SIGNATURE,
             "The shred order is not signed by the unit root key for this unit and device.", false);
    return {};
  }
  auto requested = ws.store.FindShredRequest(*case_id);
  if (!requested) return requested.error();
  if (!*requested) {
    SetError(out, v1::ERROR_CODE_BAD_REQUEST,
             "No supervisor has asked for this case to be shredded (teduh case shred on a "
             "supervisor device first).",
             false);
    return {};
  }
  auto purged = ws.store.PurgeCase(*case_id, ws.store.AllocateSeq(), order.SerializeAsString());
  if (!purged) return purged.error();
  if (auto e = AuditShred(ws, who, *case_id, /*carried_out=*/true)) return e;
  v1::ShredResult* r = out->reply.mutable_shred_result();
  r->set_case_id(order.case_id());
  r->set_state("shredded");
  r->set_requested_by(**requested);
  r->set_purged_values(*purged);
  *shredded = true;
  return {};
}

}  // namespace teduh::server
