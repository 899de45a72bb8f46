// Re-keying the cases a lost device held (PROTOCOL §8d; ARCHITECTURE §4).
//
// Design notes
// ------------
// A revoked device may still hold case keys (in memory, on its disk). The
// admin device re-keys each case it held: it fetches the case's key records
// and every sealed value of it (current, past, and inside conflict records),
// makes a new case key version per class, wrapped under the current epoch,
// opens each value with the old key and seals it under the new one with the
// same record, field and writer stamp, and sends the results. The server
// never reads a value; it replaces each one only if it is still stored under
// the version the admin device opened (compare and set), so an edit that
// arrived meanwhile is never overwritten: it is fetched again.
//
// Per case:
//   1. RekeyFetch → RekeySet: key records and the values under a version
//      below the target (the version a re-key in progress makes, or the
//      highest + 1 when none is in progress).
//   2. RekeyCase (first frame with `new_keys`): the server stores the new key
//      records under server stamps (devices pull them like any change) and
//      remembers the targets (`rekey_targets`), so an interrupted re-key
//      resumes with the same keys.
//   3. RekeyCase with `finish`: refused with `remaining` unless no sealed
//      value of the case is left under an older version; then the older key
//      records are deleted with their history and a key drop is kept for
//      devices (Changes.key_drops), in this one transaction.
// Re-encrypted current values take fresh sequence numbers (holders pull the
// new ciphertext; the stamp, author and writer are unchanged). Past values
// and conflict sides are replaced in place. A sealed change pushed later
// under a dropped version is answered `key_replaced` (not final): the device
// re-seals it under the new version after its next pull and sends it again.
#include <algorithm>
#include <map>

#include "audit_entries.h"
#include "sync_service.h"
#include "teduh/case/v1/case.pb.h"
#include "teduh/core/roles.h"
#include "teduh/core/schema.h"
#include "teduh/crypto/crypto.h"
#include "teduh/keys/v1/keys.pb.h"

namespace teduh::server {
namespace {

using core::error_code;
namespace cw = teduh::casework::v1;

constexpr std::size_t kWrappedBytes = crypto::kAeadKeyBytes + crypto::kAeadOverhead;
constexpr std::uint32_t kDetectionField = cw::Conflict::kDetectionFieldNumber;

using core::KnownClass;
using core::NormalClass;

// A device that must not reach a new case key and holds a grant of
// (cls, epoch): `held_by`, or any revoked device. nullopt if none does.
result<std::optional<Id>> EpochReachedBy(Store& store, teduh::AccessClass cls, std::uint32_t epoch,
                                         const std::optional<Id>& held_by) {
  auto grants = store.AllGrants();
  if (!grants) return grants.error();
  for (const auto& g : *grants) {
    if (g.key_class != cls || g.epoch != epoch) continue;
    if (held_by && g.device_id == *held_by) return std::optional<Id>(g.device_id);
    auto d = store.FindDevice(g.device_id);
    if (!d) return d.error();
    if (*d && (*d)->state == v1::DEVICE_STATE_REVOKED) return std::optional<Id>(g.device_id);
  }
  return std::optional<Id>();
}

// Everything about one case that a re-key looks at.
struct CaseKeys {
  std::map<Id, v1::CaseKeyInfo> keys;                   // case key records by id
  std::map<teduh::AccessClass, std::uint32_t> top;      // highest version per class
  std::map<teduh::AccessClass, std::uint32_t> targets;  // re-key in progress

  // The version values of `cls` are re-encrypted to.
  std::uint32_t Target(teduh::AccessClass cls) const {
    auto t = targets.find(cls);
    if (t != targets.end()) return t->second;
    auto h = top.find(cls);
    const std::uint32_t highest = h == top.end() ? 0 : h->second;
    return highest == UINT32_MAX ? highest : highest + 1;  // never wraps (refused in AddKeys)
  }
};

// Loads the key records of a case and its re-key targets from `store`. A
// target made under an epoch that a revoked device (or `held_by`) holds is
// dropped: it was made before that device was revoked, so the re-key goes
// on to a fresh version (and the target becomes an old version).
error_code LoadCaseKeys(Store& store, const Id& case_id, const std::optional<Id>& held_by,
                        CaseKeys* out) {
  error_code ec = store.ScanCaseValues(
      case_id, [&](const FieldRow& f, std::string_view kind, std::uint64_t history_id) {
        if (history_id != 0 || kind != core::kCaseKeyKind) return true;
        v1::CaseKeyInfo& k = out->keys[f.record_id];
        k.set_record_id(std::string(core::AsBytes(f.record_id)));
        teduh::keys::v1::CaseKey part;
        if (!part.ParseFromArray(f.value.data(), static_cast<int>(f.value.size()))) return true;
        if (part.key_class() != teduh::ACCESS_CLASS_UNSPECIFIED) k.set_key_class(part.key_class());
        if (part.version() != 0) k.set_version(part.version());
        if (part.epoch() != 0) k.set_epoch(part.epoch());
        if (!part.wrapped().empty()) k.set_wrapped(part.wrapped());
        return true;
      });
  if (ec) return ec;
  for (auto& [id, k] : out->keys) {
    k.set_key_class(NormalClass(k.key_class()));
    auto& top = out->top[k.key_class()];
    top = std::max(top, k.version());
  }
  auto targets = store.RekeyTargets(case_id);
  if (!targets) return targets.error();
  for (const RekeyTargetRow& t : *targets) {
    auto reached = EpochReachedBy(store, t.key_class, t.epoch, held_by);
    if (!reached) return reached.error();
    if (!*reached) out->targets[t.key_class] = t.version;
  }
  return {};
}

// Calls `visit` for every sealed value of the case below its class's target:
// current and past values, and the sides of conflict records. Stops when
// `visit` returns false.
error_code ScanStale(Store& store, const Id& case_id, const CaseKeys& keys,
                     const std::function<bool(v1::SealedValue&&)>& visit) {
  return store.ScanCaseValues(case_id, [&](const FieldRow& f, std::string_view kind,
                                           std::uint64_t history_id) {
    if (f.sealed) {
      if (f.key_version >= keys.Target(NormalClass(f.key_class))) return true;
      v1::SealedValue v;
      v1::SealedRef* ref = v.mutable_ref();
      ref->set_place(history_id == 0 ? v1::SealedRef::PLACE_CURRENT : v1::SealedRef::PLACE_HISTORY);
      ref->set_record_id(std::string(core::AsBytes(f.record_id)));
      ref->set_field(f.field);
      ref->set_history_id(history_id);
      ref->set_key_version(f.key_version);
      ref->set_key_class(NormalClass(f.key_class));
      ref->mutable_stamp()->set_hlc(f.stamp.hlc);
      ref->mutable_stamp()->set_device_id(std::string(core::AsBytes(f.stamp.device)));
      v.set_kind(std::string(kind));
      v.set_value(std::string(f.value));
      v.set_key_class(NormalClass(f.key_class));
      v.set_writer_hlc(f.origin_hlc != 0 ? f.origin_hlc : f.stamp.hlc);
      v.set_writer_device(std::string(core::AsBytes(f.stamp.device)));
      return visit(std::move(v));
    }
    if (history_id != 0 || kind != core::kConflictKind || f.field != kDetectionField) return true;
    cw::Conflict conflict;
    if (!conflict.ParseFromArray(f.value.data(), static_cast<int>(f.value.size()))) return true;
    const cw::ConflictDetection& d = conflict.detection();
    for (auto [place, side] : {std::pair{v1::SealedRef::PLACE_CONFLICT_KEPT, &d.kept()},
                               std::pair{v1::SealedRef::PLACE_CONFLICT_OTHER, &d.other()}}) {
      if (!side->sealed() || side->key_version() >= keys.Target(NormalClass(side->key_class())))
        continue;
      v1::SealedValue v;
      v1::SealedRef* ref = v.mutable_ref();
      ref->set_place(place);
      ref->set_record_id(d.record_id());
      ref->set_field(d.field());
      ref->set_conflict_id(std::string(core::AsBytes(f.record_id)));
      ref->set_key_version(side->key_version());
      ref->set_key_class(NormalClass(side->key_class()));
      ref->mutable_stamp()->set_hlc(side->stamp_hlc());
      ref->mutable_stamp()->set_device_id(side->stamp_device());
      v.set_kind(d.record_kind());
      v.set_value(side->value());
      v.set_key_class(NormalClass(side->key_class()));
      v.set_writer_hlc(side->origin_hlc() != 0 ? side->origin_hlc() : side->stamp_hlc());
      v.set_writer_device(side->stamp_device());
      if (!visit(std::move(v))) return false;
    }
    return true;
  });
}

// The case named by a request, if it exists and is a case (else the refusal
// is in `out`).
bool FindCase(Store& store, const std::string& raw, Outcome* out, error_code* ec, Id* case_id) {
  auto id = core::IdFromBytes(raw);
  if (!id) {
    SetError(out, v1::ERROR_CODE_BAD_REQUEST, "The case id is not 16 bytes.", false);
    return false;
  }
  auto rec = store.FindRecord(*id);
  if (!rec) {
    *ec = rec.error();
    return false;
  }
  if (!*rec || (*rec)->kind != core::kCaseKind) {
    SetError(out, v1::ERROR_CODE_BAD_REQUEST, "The server holds no such case.", false);
    return false;
  }
  *case_id = *id;
  return true;
}

// Copies a stored row so that it outlives the store's buffers.
struct OwnedRow {
  FieldRow row;
  std::string value, author;
  void From(const FieldRow& f) {
    row = f;
    value = std::string(f.value);
    author = std::string(f.author);
    row.value = value;
    row.author = author;
  }
};

class RekeyApplier {
 public:
  RekeyApplier(WriterState& ws, const Identity& who, const Id& case_id,
               const std::optional<Id>& held_by, v1::RekeyResult* result)
      : ws_(ws),
        store_(ws.store),
        who_(who),
        case_id_(case_id),
        held_by_(held_by),
        result_(result) {}

  // Stores the target versions' key records; false with the refusal in `out`.
  error_code AddKeys(const v1::RekeyCase& req, CaseKeys& keys, Outcome* out, bool* ok) {
    *ok = false;
    auto grants = store_.AllGrants();
    if (!grants) return grants.error();
    for (const v1::CaseKeyInfo& k : req.new_keys()) {
      const teduh::AccessClass cls = k.key_class();
      if (!KnownClass(cls) || k.wrapped().size() != kWrappedBytes) {
        SetError(out, v1::ERROR_CODE_BAD_REQUEST, "A new case key is malformed.", false);
        return {};
      }
      std::uint32_t epoch = 0;
      for (const auto& g : *grants)
        if (g.key_class == cls) epoch = std::max(epoch, g.epoch);
      // The new key must be out of reach of the device it protects against
      // (and of every revoked device): none of them may hold the epoch it
      // is wrapped under, or a thief with the device and a copy of the
      // server's store would unwrap it too.
      auto reached = EpochReachedBy(store_, cls, epoch, held_by_);
      if (!reached) return reached.error();
      if (*reached) {
        SetError(out, v1::ERROR_CODE_BAD_REQUEST,
                 "Device " + core::ToHex(**reached).substr(0, 8) + " holds epoch " +
                     std::to_string(epoch) + " of the " + core::ClassName(cls) +
                     " key: rotate it first (teduh key rotate --class " + core::ClassName(cls) +
                     "), then re-key.",
                 false);
        return {};
      }
      if (k.version() == 0 || k.version() == UINT32_MAX) {
        SetError(out, v1::ERROR_CODE_BAD_REQUEST, "The new case key's version is out of range.",
                 false);
        return {};
      }
      if (k.epoch() != epoch) {
        SetError(out, v1::ERROR_CODE_BAD_REQUEST,
                 "The new case key is not wrapped under the current epoch of the " +
                     core::ClassName(cls) + " key: sync this device, then re-key again.",
                 false);
        return {};
      }
      auto id = core::IdFromBytes(k.record_id());
      auto existing = keys.keys.find(*id);
      if (auto t = keys.targets.find(cls); t != keys.targets.end()) {
        if (t->second == k.version() && existing != keys.keys.end()) continue;  // resent
        SetError(out, v1::ERROR_CODE_BAD_REQUEST,
                 "A re-key of this case to version " + std::to_string(t->second) +
                     " is in progress: fetch the case again.",
                 false);
        return {};
      }
      if (k.version() != keys.Target(cls) || existing != keys.keys.end()) {
        SetError(out, v1::ERROR_CODE_BAD_REQUEST,
                 "The new case key's version is not the next one: fetch the case again.", false);
        return {};
      }
      auto rec = store_.FindRecord(*id);
      if (!rec) return rec.error();
      if (*rec) {
        SetError(out, v1::ERROR_CODE_BAD_REQUEST, "The new case key's id is taken.", false);
        return {};
      }
      if (auto ec = InsertKey(*id, k)) return ec;
      keys.keys[*id] = k;
      keys.top[cls] = k.version();
      keys.targets[cls] = k.version();
      if (auto ec = store_.PutRekeyTarget(case_id_, {cls, k.version(), k.epoch()})) return ec;
    }
    *ok = true;
    return {};
  }

  // Applies one re-encrypted value if it is still stored as the admin
  // device read it (else it counts as stale).
  error_code Apply(const v1::Reseal& r, const CaseKeys& keys) {
    const v1::SealedRef& ref = r.ref();
    const teduh::AccessClass cls = NormalClass(ref.key_class());
    auto target = keys.targets.find(cls);
    bool done = false;
    if (target != keys.targets.end() && ref.key_version() < target->second) {
      error_code ec;
      switch (ref.place()) {
        case v1::SealedRef::PLACE_CURRENT:
          ec = ApplyCurrent(ref, cls, r.value(), target->second, &done);
          break;
        case v1::SealedRef::PLACE_HISTORY: {
          auto replaced = store_.ReplaceHistoryValue(case_id_, ref.history_id(), cls,
                                                     ref.key_version(), r.value(), target->second);
          if (!replaced) return replaced.error();
          done = *replaced;
          break;
        }
        case v1::SealedRef::PLACE_CONFLICT_KEPT:
        case v1::SealedRef::PLACE_CONFLICT_OTHER:
          ec = ApplyConflict(ref, cls, r.value(), target->second, &done);
          break;
        default:
          break;
      }
      if (ec) return ec;
    }
    if (done) {
      result_->set_resealed(result_->resealed() + 1);
    } else {
      result_->set_stale(result_->stale() + 1);
    }
    return {};
  }

  // Deletes the older key versions if nothing is left under them.
  error_code Finish(const CaseKeys& keys, bool* finished) {
    std::uint64_t remaining = 0;
    if (auto ec = ScanStale(store_, case_id_, keys, [&](v1::SealedValue&&) {
          ++remaining;
          return true;
        }))
      return ec;
    for (const auto& [cls, top] : keys.top)
      if (!keys.targets.count(cls)) ++remaining;  // a class not re-keyed at all
    if (remaining > 0) {
      result_->set_remaining(remaining);
      return {};
    }
    std::uint32_t dropped = 0;
    for (const auto& [id, k] : keys.keys) {
      if (k.version() >= keys.Target(k.key_class())) continue;
      if (auto ec = store_.DeleteRecord(id)) return ec;
      ++dropped;
    }
    std::vector<std::pair<teduh::AccessClass, std::uint32_t>> versions(keys.targets.begin(),
                                                                       keys.targets.end());
    for (const auto& [cls, version] : versions)
      if (auto ec = store_.PutKeyDrop(store_.AllocateSeq(), case_id_, cls, version)) return ec;
    if (auto ec = store_.ClearRekeyTargets(case_id_)) return ec;
    if (auto ec = AuditRekey(ws_, who_, case_id_, held_by_, versions)) return ec;
    result_->set_keys_dropped(dropped);
    result_->set_finished(true);
    *finished = true;
    return {};
  }

 private:
  error_code InsertKey(const Id& id, const v1::CaseKeyInfo& k) {
    teduh::keys::v1::CaseKey parts[4];
    parts[0].set_key_class(k.key_class());
    parts[1].set_version(k.version());
    parts[2].set_epoch(k.epoch());
    parts[3].set_wrapped(k.wrapped());
    std::string values[4];
    for (int i = 0; i < 4; ++i) values[i] = parts[i].SerializeAsString();
    const std::uint64_t txn = Txn();
    for (int i = 0; i < 4; ++i) {
      FieldRow row =
          ServerFieldRow(ws_, id, static_cast<std::uint32_t>(i + 1), values[i], who_.user, txn);
      if (i == 0) {
        RecordRow rec;
        rec.record_id = id;
        rec.kind = std::string(core::kCaseKeyKind);
        rec.parent_id = case_id_;
        rec.case_id = case_id_;
        rec.created_by_user = who_.user;
        rec.created_seq = row.seq;
        if (auto ec = store_.InsertRecord(rec)) return ec;
      }
      if (auto ec = store_.PutField(row)) return ec;
    }
    return store_.SaveHlc(ws_.hlc.last());
  }

  std::uint64_t Txn() {
    if (txn_ == 0) txn_ = store_.AllocateTxn();
    return txn_;
  }

  // The record `ref` names belongs to this case.
  result<bool> OfCase(const std::string& raw) {
    auto id = core::IdFromBytes(raw);
    if (!id) return false;
    auto rec = store_.FindRecord(*id);
    if (!rec) return result<bool>(boost::system::in_place_error, rec.error());
    return *rec && (*rec)->case_id == case_id_;
  }
  error_code ApplyCurrent(const v1::SealedRef& ref, teduh::AccessClass cls,
                          const std::string& value, std::uint32_t target, bool* done) {
    auto of = OfCase(ref.record_id());
    if (!of) return of.error();
    if (!*of) return {};
    FieldRow f;
    auto found = store_.FindField(*core::IdFromBytes(ref.record_id()), ref.field(), &f);
    if (!found) return found.error();
    // Compare and set: the value the admin device opened, not an edit made since.
    if (!*found || !f.sealed || NormalClass(f.key_class) != cls ||
        f.key_version != ref.key_version() || f.stamp.hlc != ref.stamp().hlc() ||
        core::AsBytes(f.stamp.device) != ref.stamp().device_id())
      return {};
    OwnedRow owned;
    owned.From(f);
    owned.value = value;
    owned.row.value = owned.value;
    owned.row.key_version = target;
    owned.row.seq = store_.AllocateSeq();
    owned.row.txn = Txn();
    if (auto ec = store_.PutField(owned.row)) return ec;
    *done = true;
    return {};
  }

  error_code ApplyConflict(const v1::SealedRef& ref, teduh::AccessClass cls,
                           const std::string& value, std::uint32_t target, bool* done) {
    auto conflict_id = core::IdFromBytes(ref.conflict_id());
    if (!conflict_id) return {};
    auto of = OfCase(ref.conflict_id());
    if (!of) return of.error();
    if (!*of) return {};
    FieldRow f;
    auto found = store_.FindField(*conflict_id, kDetectionField, &f);
    if (!found) return found.error();
    if (!*found) return {};
    cw::Conflict conflict;
    if (!conflict.ParseFromArray(f.value.data(), static_cast<int>(f.value.size()))) return {};
    cw::ConflictDetection* d = conflict.mutable_detection();
    cw::ConflictSide* side =
        ref.place() == v1::SealedRef::PLACE_CONFLICT_KEPT ? d->mutable_kept() : d->mutable_other();
    if (d->record_id() != ref.record_id() || d->field() != ref.field() || !side->sealed() ||
        NormalClass(side->key_class()) != cls || side->key_version() != ref.key_version() ||
        side->stamp_hlc() != ref.stamp().hlc() || side->stamp_device() != ref.stamp().device_id())
      return {};
    side->set_value(value);
    side->set_key_version(target);
    OwnedRow owned;
    owned.From(f);
    owned.value = conflict.SerializeAsString();
    owned.row.value = owned.value;
    owned.row.seq = store_.AllocateSeq();
    owned.row.txn = Txn();
    if (auto ec = store_.PutField(owned.row)) return ec;
    *done = true;
    return {};
  }

  WriterState& ws_;
  Store& store_;
  const Identity& who_;
  Id case_id_;
  std::optional<Id> held_by_;
  v1::RekeyResult* result_;
  std::uint64_t txn_ = 0;
};

}  // namespace

error_code RekeyListFor(Store& store, const ServerConfig& config, const Identity& who,
                        const v1::RekeyList& req, Outcome* out) {
  error_code ec;
  if (!AdminOnly(store, who, "re-key cases", out, &ec)) return ec;
  std::optional<Id> held_by;
  if (!req.all()) {
    if (auto h = core::IdFromBytes(req.held_by())) held_by = *h;
    if (!held_by) {
      SetError(out, v1::ERROR_CODE_BAD_REQUEST, "Name the device whose cases to re-key.", false);
      return {};
    }
  }
  Id after{};
  if (auto a = core::IdFromBytes(req.after_case())) after = *a;
  const std::size_t limit = std::clamp<std::size_t>(
      req.limit(), 1,
      std::max<std::size_t>(1, std::min<std::size_t>(1000, config.limits.max_pull_changes)));
  auto cases = store.CasesToRekey(held_by, after, limit + 1);
  if (!cases) return cases.error();
  v1::RekeyCases* r = out->reply.mutable_rekey_cases();
  r->set_has_more(cases->size() > limit);
  if (cases->size() > limit) cases->resize(limit);
  for (const Id& c : *cases) r->add_case_ids(std::string(core::AsBytes(c)));
  return {};
}

error_code RekeyFetchFor(Store& store, const ServerConfig& config, const Identity& who,
                         const v1::RekeyFetch& req, Outcome* out) {
  error_code ec;
  if (!AdminOnly(store, who, "re-key cases", out, &ec)) return ec;
  Id case_id{};
  if (!FindCase(store, req.case_id(), out, &ec, &case_id)) return ec;
  CaseKeys keys;
  std::optional<Id> held_by;
  if (auto h = core::IdFromBytes(req.held_by())) held_by = *h;
  if (auto e = LoadCaseKeys(store, case_id, held_by, &keys)) return e;
  v1::RekeySet* set = out->reply.mutable_rekey_set();
  set->set_case_id(req.case_id());
  for (const auto& [id, k] : keys.keys) {
    *set->add_keys() = k;
    if (auto t = keys.targets.find(k.key_class());
        t != keys.targets.end() && t->second == k.version())
      *set->add_targets() = k;
  }
  // Room for the envelope and the keys; each value is at most max_value_bytes.
  const std::size_t budget =
      config.limits.max_frame_bytes > 16384 ? config.limits.max_frame_bytes - 16384 : 0;
  std::size_t bytes = 0;
  return ScanStale(store, case_id, keys, [&](v1::SealedValue&& v) {
    const std::size_t size = v.value().size() + v.kind().size() + 128;
    if (static_cast<std::size_t>(set->values_size()) >= config.limits.max_pull_changes ||
        (bytes + size > budget && set->values_size() > 0)) {
      set->set_has_more(true);
      return false;
    }
    bytes += size;
    *set->add_values() = std::move(v);
    return true;
  });
}

error_code Rekey(WriterState& ws, const Identity& who, const v1::RekeyCase& req, Outcome* out,
                 bool* finished) {
  *finished = false;
  error_code ec;
  if (!AdminOnly(ws.store, who, "re-key cases", out, &ec)) return ec;
  Id case_id{};
  if (!FindCase(ws.store, req.case_id(), out, &ec, &case_id)) return ec;
  std::optional<Id> held_by;
  if (auto h = core::IdFromBytes(req.held_by())) held_by = *h;
  CaseKeys keys;
  if (auto e = LoadCaseKeys(ws.store, case_id, held_by, &keys)) return e;
  v1::RekeyResult* result = out->reply.mutable_rekey_result();
  result->set_case_id(req.case_id());
  RekeyApplier applier(ws, who, case_id, held_by, result);
  bool ok = false;
  if (auto e = applier.AddKeys(req, keys, out, &ok)) return e;
  if (!ok) {
    out->reply.clear_rekey_result();
    return {};
  }
  for (const v1::Reseal& r : req.reseals())
    if (auto e = applier.Apply(r, keys)) return e;
  if (!req.finish()) return {};
  if (keys.targets.empty()) {
    SetError(out, v1::ERROR_CODE_BAD_REQUEST, "No re-key of this case is in progress.", false);
    return {};
  }
  return applier.Finish(keys, finished);
}

}  // namespace teduh::server
