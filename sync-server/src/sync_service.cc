// The server's sync rules over the Store interface.
//
// Design notes
// ------------
// Push: the writer applies one Push frame at a time, change by change, inside
// the group transaction. Each change is checked in the order PROTOCOL §4
// gives (record kind and field, sealed policy, open value, scope, merge) and
// gets one ChangeResult. A store error aborts the whole group (nothing is
// acknowledged); a rejected change is recorded and never retried.
//
// Pull: the reader scans current values in seq order within the device's
// scope and cuts the batch at the last complete server transaction (`txn`).
//
// Invariants
//  1. A (device, device_seq) is decided once: its receipt (the change's
//     digest, core::DigestOf) is written with the decision. A change sent
//     again under a number with a receipt is answered from `rejections` or
//     with the field's current stamp only if its digest matches; else it is
//     refused (seq_reused) and nothing is stored. A number at or below the
//     mark without a receipt is a new change. Numbers within a push
//     increase, and none is more than core::kMaxSeqJump above the mark.
//  2. The mark (devices.last_device_seq) only grows, and is written in the
//     same transaction as the changes it covers; every receipt is at or
//     below it.
//  3. No value is ever dropped: a value overwritten, or one that lost a merge,
//     goes to field_history with its stamps and author.
//  4. Every write of a current value takes a fresh seq and the push's txn, so
//     a pull cursor sees each new value exactly once, and a txn's values have
//     contiguous seqs (pull batches can end on a txn boundary).
//  5. A field-role device only writes cases assigned to its user (or the case
//     it is creating, which is then assigned to it); an admin writes none.
//  6. When a case's assignees change, every value of the case and its
//     children is re-sequenced in the same transaction (new assignees pull
//     its full state).
//  7. No field value, open or sealed, ever appears in a reply's text, an
//     error message or a log line.
//  8. Every non-empty Push frame, enrollment and approval appends one audit
//     entry (audit_entries.h) in the transaction of its writes, built after
//     the decisions, from ids and stamps only.
//  9. A concurrent change of a per-episode field (stage, closure) of a
//     reopened case from the episode the case left loses to the value of its
//     current episode, whatever the field's rule (core::EpisodeOrder); it
//     goes to history like any lost merge. A closed case's stage moves back
//     only after its writer's new episode (else `reopen_required`).
#include "sync_service.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/unknown_field_set.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "audit_entries.h"
#include "teduh/case/v1/case.pb.h"
#include "teduh/core/deadlines.h"
#include "teduh/core/enrollment_code.h"
#include "teduh/core/frame_codec.h"
#include "teduh/core/merge.h"
#include "teduh/core/roles.h"
#include "teduh/core/schema.h"
#include "teduh/core/sealing.h"
#include "teduh/crypto/crypto.h"

namespace teduh::server {
namespace cw = teduh::casework::v1;

void SetError(Outcome* out, v1::ErrorCode code, std::string message, bool close) {
  out->reply = core::MakeErrorFrame(0, code, std::move(message));
  out->close = close;
}

FieldRow ServerFieldRow(WriterState& ws, const Id& record_id, std::uint32_t field,
                        std::string_view value, std::string_view author, std::uint64_t txn) {
  FieldRow row;
  row.record_id = record_id;
  row.field = field;
  row.value = value;
  row.stamp = core::Stamp{ws.hlc.Now(), ws.unit.server_id};
  row.author = author;
  row.seq = ws.store.AllocateSeq();
  row.txn = txn;
  return row;
}

// The device-state checks every authenticated request starts with.
bool CheckActive(const std::optional<DeviceRow>& device, Outcome* out) {
  if (!device) {
    SetError(out, v1::ERROR_CODE_UNKNOWN_DEVICE, "this device is not enrolled", true);
    return false;
  }
  switch (device->state) {
    case v1::DEVICE_STATE_ACTIVE:
      return true;
    case v1::DEVICE_STATE_PENDING:
      SetError(out, v1::ERROR_CODE_DEVICE_PENDING, "this device waits for an admin to approve it",
               true);
      return false;
    default:
      SetError(out, v1::ERROR_CODE_DEVICE_REVOKED, "this device was revoked", true);
      return false;
  }
}

namespace {

using core::errc;
using core::error_code;

struct IdHash {
  std::size_t operator()(const Id& id) const noexcept {
    std::size_t h;
    std::memcpy(&h, id.data(), sizeof h);
    return h;
  }
};

using core::NormalClass;

void SetStamp(v1::Stamp* out, const core::Stamp& s) {
  out->set_hlc(s.hlc);
  out->set_device_id(std::string(core::AsBytes(s.device)));
}

constexpr std::uint32_t kAssignmentFields[] = {10, 11, 12};  // teduh.case.v1.Case

bool IsAssignmentField(std::uint32_t field) {
  return std::find(std::begin(kAssignmentFields), std::end(kAssignmentFields), field) !=
         std::end(kAssignmentFields);
}

// What one Push frame needs to remember about records and cases while it is
// applied (the frame usually holds many fields of the same few records).
struct RecordInfo {
  std::string kind;
  std::optional<Id> parent_id;
  Id case_id{};
};

// Recomputes who the case is assigned to from its three assignment fields
// (PROTOCOL §5): the users they name, or its field-officer creator while they
// name nobody. A change re-sequences the case for the new assignees and
// evicts it from the devices of the users it was taken from.
error_code RecomputeAssignees(Store& store, const Id& case_id, std::uint64_t txn,
                              std::vector<std::string>* poke_users) {
  const core::RecordKind& kind = *core::Schema::Get().FindKind(core::kCaseKind);
  std::vector<std::string> users;
  for (std::uint32_t number : kAssignmentFields) {
    const core::FieldPolicy* policy = kind.FindField(number);
    if (!policy) continue;
    FieldRow row;
    auto found = store.FindField(case_id, number, &row);
    if (!found) return found.error();
    if (!*found || row.sealed) continue;
    auto msg = core::DecodeFieldValue(kind, row.value);
    if (!msg) continue;
    std::string user = (*msg)->GetReflection()->GetString(**msg, policy->descriptor);
    if (!user.empty()) users.push_back(std::move(user));
  }
  if (users.empty()) {
    auto record = store.FindRecord(case_id);
    if (!record) return record.error();
    if (*record && !(*record)->created_by_user.empty()) users.push_back((*record)->created_by_user);
  }
  std::sort(users.begin(), users.end());
  users.erase(std::unique(users.begin(), users.end()), users.end());
  auto before = store.Assignees(case_id);
  if (!before) return before.error();
  if (*before == users) return {};
  if (auto ec = store.SetAssignees(case_id, users)) return ec;
  if (auto ec = store.ResequenceCase(case_id, txn)) return ec;
  for (const auto& u : users) {
    if (std::find(before->begin(), before->end(), u) != before->end()) continue;
    if (auto ec = store.ClearUserEvictions(case_id, u)) return ec;
    poke_users->push_back(u);
  }
  // The previous assignees' devices push what they still hold of it, then
  // evict it at their next pull (ARCHITECTURE §2.4).
  for (const auto& u : *before) {
    if (std::find(users.begin(), users.end(), u) != users.end()) continue;
    if (auto ec = store.EvictUser(case_id, u, store.AllocateSeq())) return ec;
    poke_users->push_back(u);
  }
  return {};
}

class PushApplier {
 public:
  PushApplier(WriterState& ws, const DeviceRow& device, PushOutcome* out)
      : ws_(ws),
        store_(ws.store),
        device_(device),
        scope_(core::ScopeOf(device.role)),
        schema_(core::Schema::Get()),
        out_(out),
        now_ms_(ws.env.NowMs()) {}

  static constexpr std::uint32_t kCaseKeyVersionField =
      teduh::keys::v1::CaseKey::kVersionFieldNumber;
  static constexpr std::uint32_t kReferralStatusField = cw::Referral::kStatusFieldNumber;
  // MergeDecision::reason when a per-episode field's merge went by episode.
  static constexpr std::string_view kEpisodeReason = "episode";
  static constexpr std::uint32_t kReferralConsentField = cw::Referral::kConsentFieldNumber;
  // Conflict fields a device may write: the resolution (state and after).
  static constexpr std::uint32_t kFirstResolutionField = cw::Conflict::kStateFieldNumber;

  error_code Run(const v1::Push& push) {
    v1::PushResult* result = out_->reply.mutable_push_result();
    result->mutable_results()->Reserve(push.changes_size());
    mark_ = device_.last_device_seq;
    auto floor = store_.ReceiptFloor(device_.device_id);
    if (!floor) return floor.error();
    if (auto ec = LoadUsage()) return ec;
    txn_ = store_.AllocateTxn();
    std::uint64_t previous = 0;  // the push's last device_seq
    for (const v1::FieldChange& c : push.changes()) {
      v1::ChangeResult* r = result->add_results();
      r->set_device_seq(c.device_seq());
      const std::uint64_t seq = c.device_seq();
      if (seq == 0) {  // ApplyOne refuses it
        if (auto ec = ApplyOne(c, r)) return ec;
        continue;
      }
      if (seq <= previous) {
        Reject(r, core::kSeqOrderReason,
               "The change's sequence number is not above the one before it in the push.");
        continue;
      }
      previous = seq;
      if (seq > mark_ && seq - mark_ > core::kMaxSeqJump) {
        Reject(r, core::kSeqJumpReason,
               "The change's sequence number is far above this device's last one.");
        continue;
      }
      if (seq <= *floor) {  // before receipts were kept: a resend
        if (auto ec = AnswerResend(c, r)) return ec;
        continue;
      }
      const core::ChangeDigest digest = core::DigestOf(c);
      if (seq <= mark_) {  // invariant 1: a resend only with the same content
        auto receipt = store_.FindReceipt(device_.device_id, seq);
        if (!receipt) return receipt.error();
        if (*receipt && **receipt == digest) {
          if (auto ec = AnswerResend(c, r)) return ec;
          continue;
        }
        if (*receipt) {
          Reject(r, core::kSeqReusedReason,
                 "The server already holds another change under this sequence number.");
          continue;
        }
        // Below the mark but never received (a device's gap, or a restored
        // store): a new change.
      } else {
        mark_ = seq;
      }
      if (auto ec = ApplyOne(c, r)) return ec;
      receipts_.push_back({seq, digest});  // numbers increase within a push
      if (r->status() == v1::ChangeResult::STATUS_REJECTED) {
        if (auto ec = store_.PutRejection(device_.device_id, seq, r->reason(), r->detail()))
          return ec;
      }
    }
    if (clock_offset_ms_ != 0) result->set_clock_offset_ms(clock_offset_ms_);
    if (auto ec = store_.PutReceipts(device_.device_id, receipts_)) return ec;
    if (added_bytes_ > 0) {
      if (auto ec = store_.AddUsage(device_.device_id, day_, added_bytes_)) return ec;
      if (auto ec = store_.AddUsage(std::nullopt, day_, added_bytes_)) return ec;
    }
    if (mark_ != device_.last_device_seq)
      if (auto ec = store_.SetDeviceMark(device_.device_id, mark_)) return ec;
    if (auto ec = store_.TouchDevice(device_.device_id, now_ms_)) return ec;
    if (restamped_)
      if (auto ec = store_.SaveHlc(ws_.hlc.last())) return ec;
    return CollectPokes();
  }

 private:
  // Storage bounds: what the device and the unit stored today, read once per
  // push (and yesterday's rows forgotten once a day).
  error_code LoadUsage() {
    day_ = now_ms_ / kDayMs;
    if (ws_.usage_pruned_day != day_) {
      if (auto ec = store_.PruneUsage(day_ - 1)) return ec;
      ws_.usage_pruned_day = day_;
    }
    auto mine = store_.UsageOn(device_.device_id, day_);
    if (!mine) return mine.error();
    auto unit = store_.UsageOn(std::nullopt, day_);
    if (!unit) return unit.error();
    device_bytes_ = *mine;
    unit_bytes_ = *unit;
    return {};
  }

  // Whether storing `c` stays within the day's bounds; counts it if so.
  bool WithinBounds(const v1::FieldChange& c) {
    const std::uint64_t cost = c.value().size() + kRowBytes;
    const auto over = [&](std::uint64_t used, std::uint64_t bound) {
      return bound != 0 && used + added_bytes_ + cost > bound;
    };
    if (over(device_bytes_, ws_.config.max_device_bytes_per_day) ||
        over(unit_bytes_, ws_.config.max_unit_bytes_per_day))
      return false;
    added_bytes_ += cost;
    return true;
  }

  static bool Provisional(std::string_view reason) {
    return reason == core::kKeyReplacedReason || reason == core::kQuotaReason ||
           reason == core::kDamagedReason;
  }

  static void Reject(v1::ChangeResult* r, std::string_view reason, std::string_view detail) {
    r->set_status(v1::ChangeResult::STATUS_REJECTED);
    r->set_reason(std::string(reason));
    r->set_detail(std::string(detail));
  }

  error_code AnswerResend(const v1::FieldChange& c, v1::ChangeResult* r) {
    auto rejection = store_.FindRejection(device_.device_id, c.device_seq());
    if (!rejection) return rejection.error();
    if (*rejection && Provisional((*rejection)->reason)) {
      // Not final: the device re-sealed the change, or a new day brought room
      // to store it; it is decided anew. It passed the scope check when first
      // sent (key_replaced and quota are answered after it), so a case the
      // device has left since still takes it.
      if (auto ec = store_.DropRejection(device_.device_id, c.device_seq())) return ec;
      resend_in_scope_ = true;
      auto ec = ApplyOne(c, r);
      resend_in_scope_ = false;
      if (ec) return ec;
      if (r->status() == v1::ChangeResult::STATUS_REJECTED)
        return store_.PutRejection(device_.device_id, c.device_seq(), r->reason(), r->detail());
      return {};
    }
    if (*rejection) {
      Reject(r, (*rejection)->reason, (*rejection)->detail);
      return {};
    }
    r->set_status(v1::ChangeResult::STATUS_APPLIED);
    auto id = core::IdFromBytes(c.record_id());
    FieldRow cur;
    if (id) {
      auto found = store_.FindField(*id, c.field(), &cur);
      if (!found) return found.error();
      if (*found) {
        // Still the current value: applied. Otherwise it lost a merge or was
        // overwritten since: the device must not take the current stamp as
        // its own (it keeps its stamp and receives the current value by pull).
        const bool current = cur.stamp.hlc == c.stamp().hlc() ||
                             (cur.origin_hlc != 0 && cur.origin_hlc == c.stamp().hlc());
        if (current && std::string_view(core::AsBytes(cur.stamp.device)) == c.stamp().device_id()) {
          SetStamp(r->mutable_stamp(), cur.stamp);
        } else {
          r->set_status(v1::ChangeResult::STATUS_MERGED);
          *r->mutable_stamp() = c.stamp();
        }
        SetStamp(r->mutable_current(), cur.stamp);
        return {};
      }
    }
    *r->mutable_stamp() = c.stamp();
    return {};
  }

  // A record this change needs is damaged in the store: the change is refused
  // as provisional (the device keeps it) instead of failing every request of
  // the group. Any other store error is returned.
  error_code RefuseIfDamaged(error_code ec, v1::ChangeResult* r) {
    if (ec != core::make_error_code(core::errc::store_damaged)) return ec;
    Reject(r, core::kDamagedReason,
           "The server found damage in this record; the change waits on the device and is sent "
           "again later.");
    return {};
  }

  // Looks a record up through the per-push cache.
  error_code FindRecord(const Id& id, const RecordInfo** out) {
    auto it = records_.find(id);
    if (it != records_.end()) {
      *out = &it->second;
      return {};
    }
    auto row = store_.FindRecord(id);
    if (!row) return row.error();
    if (!*row) {
      *out = nullptr;
      return {};
    }
    auto [pos, inserted] =
        records_.emplace(id, RecordInfo{(*row)->kind, (*row)->parent_id, (*row)->case_id});
    *out = &pos->second;
    return {};
  }

  // Whether any re-key ever deleted a case key version (read once per push:
  // a unit that never re-keyed pays nothing per change).
  bool AnyKeyDrops() {
    if (!any_drops_) {
      auto below = store_.KeyDropsExist();
      any_drops_ = !below || *below;  // a failed read checks every change
    }
    return *any_drops_;
  }

  // The letter moves one step at a time (draft → checked → signed → sent →
  // confirmed); only a supervisor signs, under her own name; nothing is sent
  // without the victim's consent, nor, for a vulnerable victim, without an
  // officer accompanying. Sets a rejection in `r`, or leaves it untouched.
  error_code CheckReferral(const v1::FieldChange& c, const Id& record_id, const Id& case_id,
                           v1::ChangeResult* r) {
    cw::Referral ref;
    if (!ref.ParseFromString(c.value())) {
      Reject(r, "bad_value", "The referral value does not parse.");
      return {};
    }
    if (c.field() == cw::Referral::kSignedByFieldNumber &&
        (device_.role != v1::ROLE_SUPERVISOR || ref.signed_by() != device_.user)) {
      Reject(r, "forbidden", "Only a supervisor signs a referral letter, in her own name.");
      return {};
    }
    if (c.field() != kReferralStatusField) return {};
    auto stored = [&](std::uint32_t field, cw::Referral* out) -> result<bool> {
      FieldRow row;
      auto found = store_.FindField(record_id, field, &row);
      if (found && *found) out->MergeFromString(std::string(row.value));
      return found;
    };
    cw::Referral now;
    if (auto e = stored(kReferralStatusField, &now); !e) return e.error();
    if (ref.status() > now.status() + 1) {
      Reject(r, "out_of_order", "A referral letter moves one step at a time.");
      return {};
    }
    if (ref.status() == cw::REFERRAL_STATUS_SIGNED && device_.role != v1::ROLE_SUPERVISOR) {
      Reject(r, "forbidden", "Only a supervisor signs a referral letter.");
      return {};
    }
    if (ref.status() < cw::REFERRAL_STATUS_SENT || now.status() >= cw::REFERRAL_STATUS_SENT)
      return {};
    cw::Referral given;
    if (auto e = stored(kReferralConsentField, &given); !e) return e.error();
    if (!given.consent()) {
      Reject(r, "no_consent", "The referral cannot be sent without the victim's consent.");
      return {};
    }
    if (auto e = stored(cw::Referral::kAccompaniedFieldNumber, &given); !e) return e.error();
    if (given.accompanied()) return {};
    // Vulnerable victim? From the case's and its victims' open fields.
    cw::Case facts;
    std::map<Id, cw::Person> persons;
    if (auto ec = store_.ScanCaseValues(
            case_id, [&](const FieldRow& f, std::string_view kind, std::uint64_t history_id) {
              if (history_id != 0 || f.sealed) return true;
              if (kind == core::kCaseKind) facts.MergeFromString(std::string(f.value));
              if (kind == core::kPersonKind)
                persons[f.record_id].MergeFromString(std::string(f.value));
              return true;
            }))
      return ec;
    std::vector<cw::Person> victims;
    for (auto& [id, p] : persons)
      if (p.role() == cw::PERSON_ROLE_VICTIM) victims.push_back(std::move(p));
    if (core::VulnerableVictim(facts, victims))
      Reject(r, "unaccompanied",
             "The victim is a child or vulnerable: an officer must accompany the referral.");
    return {};
  }

  // Whether a stored field of the record was written by a device other than
  // `writer` (FindField's views last until the next call: read before
  // `current`).
  error_code WrittenByAnother(const Id& record_id, const core::RecordKind& kind, const Id& writer,
                              bool* yes) {
    *yes = false;
    for (const core::FieldPolicy& f : kind.fields) {
      FieldRow row;
      auto found = store_.FindField(record_id, f.number, &row);
      if (!found) return found.error();
      if (*found) {
        *yes = row.stamp.device != writer;
        return {};
      }
    }
    return {};
  }

  enum class EpisodeWrite { kNext, kSame, kRefused };
  // Whether an episode value may be written to the case: the first episode
  // on a new case, the next one on a closed case, or the current one again.
  result<EpisodeWrite> CheckEpisode(const Id& case_id, bool case_exists, const std::string& value) {
    cw::Case asked;
    if (!asked.ParseFromString(value)) return EpisodeWrite::kRefused;
    cw::Case now;
    for (std::uint32_t number : {static_cast<std::uint32_t>(cw::Case::kEpisodeFieldNumber),
                                 static_cast<std::uint32_t>(cw::Case::kStageFieldNumber)}) {
      FieldRow row;
      auto found = store_.FindField(case_id, number, &row);
      if (!found) return found.error();
      if (*found && !row.sealed) now.MergeFromString(std::string(row.value));
    }
    const std::int32_t current = std::max(now.episode(), 1);
    if (!case_exists) return asked.episode() <= 1 ? EpisodeWrite::kSame : EpisodeWrite::kRefused;
    if (asked.episode() == now.episode() || (asked.episode() <= 1 && now.episode() <= 1))
      return EpisodeWrite::kSame;
    if (asked.episode() == current + 1 && now.stage() == cw::STAGE_TERMINASI)
      return EpisodeWrite::kNext;
    return EpisodeWrite::kRefused;
  }

  error_code InScope(const Id& case_id, bool* in_scope) {
    auto it = assigned_.find(case_id);
    if (it != assigned_.end()) {
      *in_scope = it->second;
      return {};
    }
    auto yes = store_.IsAssigned(case_id, device_.user);
    if (!yes) return yes.error();
    bool in = *yes;
    if (!in) {  // unassigned, but its edits made while it held the case still count
      auto leaving = store_.HasEviction(device_.device_id, case_id);
      if (!leaving) return leaving.error();
      in = *leaving;
    }
    assigned_.emplace(case_id, in);
    *in_scope = in;
    return {};
  }

  error_code ApplyOne(const v1::FieldChange& c, v1::ChangeResult* r) {
    // Ids and stamp (DecodeFrame checked the lengths; these re-checks are cheap).
    auto record_id = core::IdFromBytes(c.record_id());
    auto stamp_device = core::IdFromBytes(c.stamp().device_id());
    if (!record_id || !stamp_device || c.stamp().hlc() == 0 || c.field() == 0 ||
        c.device_seq() == 0) {
      Reject(r, "bad_value", "The change lacks its record id, field, stamp or sequence.");
      return {};
    }
    if (*stamp_device != device_.device_id) {
      Reject(r, "bad_value", "The change is stamped by another device.");
      return {};
    }
    std::optional<Id> parent_id;
    if (!c.parent_id().empty()) {
      auto p = core::IdFromBytes(c.parent_id());
      if (!p) {
        Reject(r, "bad_value", "The parent id is not 16 bytes.");
        return {};
      }
      parent_id = *p;
    }

    // 1. Record kind and field against the schema.
    const core::RecordKind* kind = schema_.FindKind(c.kind());
    const bool is_case = c.kind() == core::kCaseKind;
    const RecordInfo* record = nullptr;
    if (auto ec = FindRecord(*record_id, &record)) return RefuseIfDamaged(ec, r);
    if (record && (record->kind != c.kind() || record->parent_id != parent_id)) {
      Reject(r, "bad_value", "The record's kind or parent differs from the stored record.");
      return {};
    }
    if (c.kind() == core::kConflictKind && (!record || c.field() < kFirstResolutionField)) {
      Reject(r, "forbidden",
             "Conflicts are recorded by the server; a device may only resolve one.");
      return {};
    }
    const bool resolver = device_.role == v1::ROLE_OFFICE || device_.role == v1::ROLE_SUPERVISOR;
    if ((c.kind() == core::kConflictKind || !c.resolves().empty()) && !resolver) {
      Reject(r, "forbidden", "Only office staff and supervisors resolve conflicts.");
      return {};
    }
    Id case_id = *record_id;
    // A shredded case is never written again (an offline device may still
    // hold edits of it; it drops the case at its next pull).
    auto shredded = [&](const Id& id, bool* yes) -> error_code {
      auto sh = store_.IsShredded(id);
      if (!sh) return sh.error();
      *yes = *sh;
      if (*yes) Reject(r, "shredded", "The case was shredded by the unit; nothing of it is kept.");
      return {};
    };
    if (is_case) {
      if (parent_id) {
        Reject(r, "bad_value", "A case has no parent.");
        return {};
      }
      bool gone = false;
      if (!record)
        if (auto ec = shredded(case_id, &gone); ec || gone) return ec;
    } else {
      const RecordInfo* parent = nullptr;
      if (parent_id)
        if (auto ec = FindRecord(*parent_id, &parent)) return RefuseIfDamaged(ec, r);
      bool gone = false;
      if (!parent && parent_id)
        if (auto ec = shredded(*parent_id, &gone); ec || gone) return ec;
      if (!parent || parent->kind != core::kCaseKind) {
        if (kind)
          Reject(r, "no_parent", "The record's case is not on the server.");
        else
          Reject(r, "unknown_kind", "Unknown record kind outside an existing case.");
        return {};
      }
      case_id = *parent_id;
    }
    const core::FieldPolicy* policy = kind ? kind->FindField(c.field()) : nullptr;

    // 2. Sealed policy: an open value for a sealed field would leak.
    if (policy) {
      if (policy->sealed != c.sealed() ||
          (c.sealed() && NormalClass(c.key_class()) != NormalClass(policy->access))) {
        Reject(r, "sealed_mismatch", "The field's sealing or key class does not match its policy.");
        return {};
      }
    } else if (c.sealed() && c.key_class() != teduh::ACCESS_CLASS_UNSPECIFIED &&
               c.key_class() != teduh::ACCESS_CLASS_GENERAL &&
               c.key_class() != teduh::ACCESS_CLASS_CLINICAL) {
      Reject(r, "sealed_mismatch", "Unknown key class.");
      return {};
    }
    if (c.sealed() && c.value().size() < crypto::kAeadOverhead) {
      Reject(r, "bad_value", "The sealed value is too short to be ciphertext.");
      return {};
    }

    // 3. An open value parses as the kind, with only this field set.
    std::string assignee;
    if (kind && !c.sealed()) {
      auto msg = core::DecodeFieldValue(*kind, c.value());
      if (!msg) {
        Reject(r, "bad_value", "The value does not parse as the field.");
        return {};
      }
      const google::protobuf::Reflection* refl = (*msg)->GetReflection();
      // Read from the value's tags: listing the set fields of a parsed
      // record walks every field the kind has.
      if (!core::SetsOnlyField(c.value(), c.field())) {
        Reject(r, "bad_value", "The value sets another field.");
        return {};
      }
      if (policy && !refl->GetUnknownFields(**msg).empty()) {
        Reject(r, "bad_value", "The value holds unknown fields.");
        return {};
      }
      // Attribution: a record says who did it (the author of a note, the
      // officer of a visit, who viewed the case) only in the pushing
      // device's own user's name (docs/SECURITY.md, "Attribution").
      if (policy && policy->attribution) {
        const std::string who = core::AttributedUser(**msg, *policy);
        if (!who.empty() && who != device_.user) {
          Reject(r, "wrong_author",
                 "The record names another user as the one who did it: a device writes only "
                 "in its own user's name.");
          return {};
        }
      }
      if (is_case && policy && IsAssignmentField(c.field()) &&
          policy->descriptor->type() == google::protobuf::FieldDescriptor::TYPE_STRING)
        assignee = refl->GetString(**msg, policy->descriptor);
    }

    // 4. Scope.
    const bool new_case = is_case && !record;
    switch (scope_) {
      case core::CaseScope::kNone:
        Reject(r, "forbidden", "This role does not hold case records.");
        return {};
      case core::CaseScope::kUnit:
        break;
      case core::CaseScope::kAssigned:
        if (!new_case && !resend_in_scope_) {
          bool ok = false;
          if (auto ec = InScope(case_id, &ok)) return ec;
          if (!ok) {
            Reject(r, "out_of_scope", "The case is not assigned to this user.");
            return {};
          }
        }
        break;
    }

    // Referral letters (the case API's rules, held here too).
    if (c.kind() == core::kReferralKind && !c.sealed()) {
      if (auto ec = CheckReferral(c, *record_id, case_id, r); ec || r->status() != 0) return ec;
    }

    // Sealed under a case key version a re-key deleted: the device re-seals
    // it under the new version after its next pull (not final; PROTOCOL §8d).
    // A device makes only the first version of a case key; later ones come
    // from an admin device's re-key.
    if (c.sealed() && AnyKeyDrops()) {
      auto below = store_.KeyDroppedBelow(case_id, NormalClass(c.key_class()));
      if (!below) return below.error();
      if (c.key_version() < *below) {
        Reject(r, core::kKeyReplacedReason,
               "The case was re-keyed: this edit is sealed again and sent at the next sync.");
        return {};
      }
    } else if (c.kind() == core::kCaseKeyKind && c.field() == kCaseKeyVersionField) {
      teduh::keys::v1::CaseKey k;
      if (!k.ParseFromString(c.value()) || k.version() != 1) {
        Reject(r, "bad_value", "A device may only make the first version of a case key.");
        return {};
      }
    }

    // 5. Storage bounds: whatever the merge decides, the value is stored
    // (as the current value or in the field's history).
    if (!WithinBounds(c)) {
      Reject(r, core::kQuotaReason,
             "The server's storage bound for a day is reached; the change waits on the device "
             "and is sent again later.");
      return {};
    }

    // 6. Clock skew, then the merge.
    // The origin is the server's to set: only a re-stamp makes one (the merge
    // trusts it as the writer's own stamp), so a device's is ignored.
    core::Stamp stamp{c.stamp().hlc(), *stamp_device};
    std::uint64_t origin_hlc = 0;
    const std::int64_t writer_ms = core::HlcMillis(stamp.hlc);
    if (writer_ms > now_ms_ + ws_.config.max_skew_ms) {
      origin_hlc = stamp.hlc;
      stamp.hlc = ws_.hlc.Now();
      restamped_ = true;
      clock_offset_ms_ = now_ms_ - writer_ms;
    }
    // A per-episode field of a reopened case: where its episode began
    // (read first: FindField's views last until the next call).
    std::optional<core::EpisodeMark> episode;
    if (is_case && policy && policy->per_episode) {
      FieldRow ep;
      auto has = store_.FindField(case_id, cw::Case::kEpisodeFieldNumber, &ep);
      if (!has) return has.error();
      if (*has) episode = core::EpisodeMark{ep.stamp, ep.seq};
    }
    // The episode moves only by a reopen: one more than the current, while
    // the case is closed. The same number again (a concurrent reopen) stays
    // with the reopen already applied, which keeps marking where the episode
    // began. Checked here, before `current` is read (FindField's views).
    bool same_episode = false;
    if (is_case && c.field() == cw::Case::kEpisodeFieldNumber && !c.sealed()) {
      auto verdict = CheckEpisode(case_id, record != nullptr, c.value());
      if (!verdict) return verdict.error();
      if (*verdict == EpisodeWrite::kRefused) {
        Reject(r, "reopen_required",
               "A new episode starts only when a closed case is reopened (teduh case reopen), "
               "one at a time.");
        return {};
      }
      same_episode = *verdict == EpisodeWrite::kSame;
    }
    // An append-only record (a note, an assessment, ...) is its writer's: a
    // field it left unset is never added by another device. Its writer may
    // still send the rest of it later (a push cut between two of its fields).
    if (kind && kind->append_only && record) {
      bool theirs = false;
      if (auto ec = WrittenByAnother(*record_id, *kind, stamp.device, &theirs)) return ec;
      if (theirs) {
        Reject(r, "immutable", "The record is written once and already has a value.");
        return {};
      }
    }
    FieldRow current;
    auto found = store_.FindField(*record_id, c.field(), &current);
    if (!found) return found.error();
    std::optional<core::Stamp> current_stamp;
    if (*found) current_stamp = current.stamp;
    if (current_stamp && *current_stamp == stamp) {  // the same value arrived before
      r->set_status(v1::ChangeResult::STATUS_APPLIED);
      SetStamp(r->mutable_stamp(), stamp);
      SetStamp(r->mutable_current(), stamp);
      return {};
    }
    std::optional<core::Stamp> base;
    if (c.has_base() && c.base().hlc() != 0) {
      auto base_device = core::IdFromBytes(c.base().device_id());
      if (!base_device) {
        Reject(r, "bad_value", "The base stamp's device id is not 16 bytes.");
        return {};
      }
      base = core::Stamp{c.base().hlc(), *base_device};
    }
    std::optional<core::MergeValue> current_value;
    if (*found) current_value = core::MergeValue{current.stamp, current.value, current.origin_hlc};
    core::MergeDecision decision =
        core::DecideMerge(kind, policy, current_value, base, core::MergeValue{stamp, c.value()});
    if (same_episode && *found && decision.action == core::MergeAction::kApply)
      decision.action = core::MergeAction::kKeep;
    if (episode && decision.concurrent && decision.action != core::MergeAction::kReject) {
      if (auto first = core::EpisodeOrder(*episode, current.seq, base, stamp)) {
        decision.action = *first;
        decision.reason = kEpisodeReason;
      }
    }
    // A closed case leaves TERMINASI only by being reopened: a new episode
    // this writer applied since the case was closed (ARCHITECTURE §2.3).
    if (is_case && c.field() == cw::Case::kStageFieldNumber && *found && !decision.concurrent &&
        !c.sealed() && !current.sealed) {
      cw::Case now, asked;
      if (now.ParseFromString(std::string(current.value)) && asked.ParseFromString(c.value()) &&
          now.stage() == cw::STAGE_TERMINASI && asked.stage() != cw::STAGE_TERMINASI &&
          !(episode && episode->seq > current.seq && episode->stamp.device == stamp.device)) {
        Reject(r, "reopen_required",
               "A closed case is reopened as a new episode (teduh case reopen), not moved back "
               "by its stage.");
        return {};
      }
    }
    if (!c.resolves().empty()) decision.conflict = false;  // a resolution: LWW, no new conflict
    // The side that loses provisionally, copied before the field is rewritten.
    std::optional<cw::ConflictSide> displaced;
    if (decision.conflict && decision.action == core::MergeAction::kApply)
      displaced = SideOf(current);

    FieldRow incoming;
    incoming.record_id = *record_id;
    incoming.field = c.field();
    incoming.value = c.value();
    incoming.sealed = c.sealed();
    incoming.key_class = c.sealed() ? NormalClass(c.key_class()) : teduh::ACCESS_CLASS_UNSPECIFIED;
    incoming.key_version = c.sealed() ? c.key_version() : 0;
    incoming.stamp = stamp;
    incoming.origin_hlc = origin_hlc;
    incoming.author = device_.user;

    SetStamp(r->mutable_stamp(), stamp);
    switch (decision.action) {
      case core::MergeAction::kReject:
        // PROTOCOL §4 names one reason for write-once fields and append-only records.
        Reject(r, "immutable", "The field is written once and already has a value.");
        r->clear_stamp();
        return {};
      case core::MergeAction::kKeep:
        if (auto ec = store_.AppendHistory(incoming, current.seq, "lost_merge")) return ec;
        r->set_status(v1::ChangeResult::STATUS_MERGED);
        SetStamp(r->mutable_current(), current.stamp);
        r->set_detail(MergeDetail(policy, current.author, decision));
        if (decision.conflict) {
          r->set_status(v1::ChangeResult::STATUS_CONFLICT);
          return RecordConflict(case_id, c, SideOf(current), SideOf(incoming), r);
        }
        return {};
      case core::MergeAction::kCombine:
        return ApplyCombined(c, current, incoming, decision.combined, case_id, r);
      case core::MergeAction::kApply:
        break;
    }

    incoming.seq = store_.AllocateSeq();
    incoming.txn = txn_;
    if (!record) {
      RecordRow row;
      row.record_id = *record_id;
      row.kind = c.kind();
      row.parent_id = parent_id;
      row.case_id = case_id;
      row.created_by_user = scope_ == core::CaseScope::kAssigned ? device_.user : std::string();
      row.created_seq = incoming.seq;
      if (auto ec = store_.InsertRecord(row)) return ec;
      records_.emplace(*record_id, RecordInfo{row.kind, parent_id, case_id});
      if (new_case && scope_ == core::CaseScope::kAssigned) {
        if (auto ec = store_.SetAssignees(case_id, {device_.user})) return ec;
        assigned_[case_id] = true;
      }
    }
    if (*found) {
      if (auto ec = store_.AppendHistory(current, incoming.seq,
                                         decision.concurrent ? "lost_merge" : "overwritten"))
        return ec;
    }
    if (auto ec = store_.PutField(incoming)) return ec;
    if (current.damaged)  // the damaged value is gone: the audit says which change replaced it
      out_->repaired.push_back(out_->reply.push_result().results_size() - 1);
    if (!touched_cases_.contains(case_id)) {  // the first change of the case in this push
      if (auto ec = store_.RecordHolding(device_.device_id, case_id, incoming.seq)) return ec;
    }
    r->set_status(v1::ChangeResult::STATUS_APPLIED);
    SetStamp(r->mutable_current(), stamp);
    ++out_->applied;
    touched_cases_.insert(case_id);
    if (displaced) {
      r->set_status(v1::ChangeResult::STATUS_CONFLICT);
      r->set_detail(MergeDetail(policy, displaced->author(), decision));
      return RecordConflict(case_id, c, SideOf(incoming), *displaced, r);
    }
    if (is_case && kind && !c.sealed() && IsAssignmentField(c.field()))
      return Reassign(case_id, *kind);
    return {};
  }

  // What a merged change was merged against, for `teduh status`.
  static std::string MergeDetail(const core::FieldPolicy* policy, std::string_view other_author,
                                 const core::MergeDecision& d) {
    const std::string who =
        other_author.empty() ? std::string("another device") : std::string(other_author);
    if (d.conflict) {
      return "edited at the same time as " + who +
             "'s change: both are kept and the office chooses (conflict queue)";
    }
    if (d.action == core::MergeAction::kCombine)
      return "combined with the values " + who + " added at the same time";
    if (d.reason == kEpisodeReason)
      return "the case was reopened since: the value of its current episode stays, this one is "
             "kept in the field's history";
    switch (policy ? policy->merge : teduh::MERGE_RULE_LWW) {
      case teduh::MERGE_RULE_MAX:
        return "the higher value " + who + " wrote at the same time stays";
      case teduh::MERGE_RULE_STAGE:
        return "the further stage " + who + " set at the same time stays";
      case teduh::MERGE_RULE_UNION:
        return who + "'s value already holds everything this change added";
      default:
        return "a later edit by " + who + " stays; this value is kept in the field's history";
    }
  }

  static cw::ConflictSide SideOf(const FieldRow& row) {
    cw::ConflictSide side;
    side.set_stamp_hlc(row.stamp.hlc);
    side.set_stamp_device(std::string(core::AsBytes(row.stamp.device)));
    side.set_origin_hlc(row.origin_hlc);
    side.set_author(std::string(row.author));
    side.set_value(std::string(row.value));
    side.set_sealed(row.sealed);
    side.set_key_class(row.key_class);
    side.set_key_version(row.key_version);
    return side;
  }

  // A concurrent edit of a REVIEW field: the server writes a Conflict record
  // under the case (ARCHITECTURE §2.3), one field at a time like any record,
  // stamped by the server. It syncs to everyone who holds the case.
  // The change is answered with the Conflict record's id (`r`), which the
  // audit entry keeps so that a resolution can be traced to its conflict.
  error_code RecordConflict(const Id& case_id, const v1::FieldChange& c,
                            const cw::ConflictSide& kept, const cw::ConflictSide& other,
                            v1::ChangeResult* r) {
    const Id conflict_id = core::NewId();
    r->set_conflict_id(std::string(core::AsBytes(conflict_id)));
    std::string detection, state;
    {
      cw::Conflict one;
      cw::ConflictDetection* d = one.mutable_detection();
      d->set_record_id(c.record_id());
      d->set_record_kind(c.kind());
      d->set_field(c.field());
      *d->mutable_kept() = kept;
      *d->mutable_other() = other;
      d->set_detected_at(now_ms_);
      detection = one.SerializeAsString();
      cw::Conflict open;
      open.set_state(cw::CONFLICT_STATE_OPEN);
      state = open.SerializeAsString();
    }
    const std::pair<std::uint32_t, const std::string*> rows[] = {
        {cw::Conflict::kDetectionFieldNumber, &detection},
        {cw::Conflict::kStateFieldNumber, &state}};
    for (const auto& [number, value] : rows) {
      FieldRow row = ServerFieldRow(ws_, conflict_id, number, *value, device_.user, txn_);
      if (number == cw::Conflict::kDetectionFieldNumber) {
        RecordRow rec;
        rec.record_id = conflict_id;
        rec.kind = std::string(core::kConflictKind);
        rec.parent_id = case_id;
        rec.case_id = case_id;
        rec.created_seq = row.seq;
        if (auto ec = store_.InsertRecord(rec)) return ec;
        records_.emplace(conflict_id, RecordInfo{rec.kind, std::optional<Id>(case_id), case_id});
      }
      if (auto ec = store_.PutField(row)) return ec;
    }
    restamped_ = true;  // the server's clock moved: persisted with the transaction
    touched_cases_.insert(case_id);
    return {};
  }

  // A UNION merge made a value neither side wrote: it becomes current under a
  // fresh server stamp (later than both, written by the server itself), and
  // both inputs go to history. Devices receive it by pull.
  error_code ApplyCombined(const v1::FieldChange& c, const FieldRow& current,
                           const FieldRow& incoming, const std::string& combined, const Id& case_id,
                           v1::ChangeResult* r) {
    core::MergeDecision combine;
    combine.action = core::MergeAction::kCombine;
    const std::string detail = MergeDetail(nullptr, current.author, combine);  // before writes
    ws_.hlc.Observe(current.stamp.hlc);
    ws_.hlc.Observe(incoming.stamp.hlc);
    FieldRow merged = incoming;
    merged.value = combined;
    merged.origin_hlc = 0;
    merged.stamp = core::Stamp{ws_.hlc.Now(), ws_.unit.server_id};
    restamped_ = true;  // the server's clock moved: persisted with the transaction
    merged.seq = store_.AllocateSeq();
    merged.txn = txn_;
    if (auto ec = store_.AppendHistory(current, merged.seq, "merged")) return ec;
    if (auto ec = store_.AppendHistory(incoming, merged.seq, "merged")) return ec;
    if (auto ec = store_.PutField(merged)) return ec;
    if (!touched_cases_.contains(case_id)) {
      if (auto ec = store_.RecordHolding(device_.device_id, case_id, merged.seq)) return ec;
    }
    r->set_status(v1::ChangeResult::STATUS_MERGED);
    SetStamp(r->mutable_current(), merged.stamp);
    r->set_detail(detail);
    ++out_->applied;
    touched_cases_.insert(case_id);
    (void)c;
    return {};
  }

  error_code Reassign(const Id& case_id, const core::RecordKind&) {
    assigned_.erase(case_id);
    return RecomputeAssignees(store_, case_id, txn_, &out_->poke_users);
  }

  error_code CollectPokes() {
    out_->touched = !touched_cases_.empty();
    for (const Id& case_id : touched_cases_) {
      auto users = store_.Assignees(case_id);
      if (!users) return users.error();
      for (auto& u : *users) out_->poke_users.push_back(std::move(u));
    }
    std::sort(out_->poke_users.begin(), out_->poke_users.end());
    out_->poke_users.erase(std::unique(out_->poke_users.begin(), out_->poke_users.end()),
                           out_->poke_users.end());
    return {};
  }

  WriterState& ws_;
  Store& store_;
  const DeviceRow& device_;
  const core::CaseScope scope_;
  const core::Schema& schema_;
  PushOutcome* out_;
  const std::int64_t now_ms_;
  std::uint64_t mark_ = 0;
  // Storage bounds (LoadUsage, WithinBounds).
  static constexpr std::int64_t kDayMs = 86'400'000;
  static constexpr std::uint64_t kRowBytes = 64;  // a stored row beyond its value
  std::int64_t day_ = 0;
  std::uint64_t device_bytes_ = 0, unit_bytes_ = 0, added_bytes_ = 0;
  std::uint64_t txn_ = 0;
  std::optional<bool> any_drops_;
  bool resend_in_scope_ = false;          // deciding a re-sealed change again (AnswerResend)
  std::vector<Store::Receipt> receipts_;  // this push's, written once at its end
  bool restamped_ = false;
  std::int64_t clock_offset_ms_ = 0;
  std::unordered_map<Id, RecordInfo, IdHash> records_;
  std::unordered_map<Id, bool, IdHash> assigned_;
  std::unordered_set<Id, IdHash> touched_cases_;
};

// The key custody a Welcome carries (PROTOCOL §8e): to an admin device, the
// root key grant it has not confirmed yet and every escrowed class key epoch.
error_code WelcomeCustody(Store& store, const ServerConfig& config, const DeviceRow& d,
                          v1::Welcome* w) {
  if (d.role != v1::ROLE_ADMIN) return {};
  auto holders = store.RootHolders();
  if (!holders) return holders.error();
  for (const RootHolderRow& h : *holders) {
    if (h.device_id != d.device_id || h.since_ms != 0) continue;
    teduh::keys::v1::RootGrant grant;
    if (grant.ParseFromString(h.pending_grant)) *w->mutable_root_grant() = std::move(grant);
  }
  auto escrow = store.EscrowGrants();
  if (!escrow) return escrow.error();
  // The newest within the Welcome's bound (an older epoch is retired soon).
  const std::size_t keep = config.limits.max_grants / 2;
  const std::size_t skip = escrow->size() > keep ? escrow->size() - keep : 0;
  for (std::size_t i = skip; i < escrow->size(); ++i) {
    teduh::keys::v1::EscrowGrant e;
    if (e.ParseFromString((*escrow)[i])) *w->add_escrow() = std::move(e);
  }
  return {};
}

}  // namespace

v1::DeviceInfo ToDeviceInfo(const DeviceRow& row) {
  v1::DeviceInfo info;
  info.set_device_id(std::string(core::AsBytes(row.device_id)));
  info.set_user(row.user);
  info.set_role(row.role);
  info.set_state(row.state);
  info.set_sign_pk(row.sign_pk);
  info.set_box_pk(row.box_pk);
  info.set_label(row.label);
  info.set_enrolled_ms(row.enrolled_ms);
  info.set_last_sync_ms(row.last_sync_ms);
  return info;
}

v1::DeviceInfo ToDeviceInfo(const DeviceRow& row, const std::optional<RevocationRow>& revocation) {
  v1::DeviceInfo info = ToDeviceInfo(row);
  if (revocation) {
    info.set_revoked_ms(revocation->revoked_ms);
    info.set_wipe_ordered(!revocation->wipe_order.empty());
    info.set_wiped_ms(revocation->wiped_ms);
  }
  return info;
}

error_code RevokeInStore(Store& store, std::int64_t now_ms, const DeviceRow& device,
                         const std::optional<Identity>& by, std::string_view by_user,
                         const teduh::keys::v1::WipeOrder* order, RevocationRow* out) {
  auto before = store.FindRevocation(device.device_id);
  if (!before) return before.error();
  RevocationRow row;
  if (*before) row = **before;  // an earlier revocation keeps its time and receipt
  row.device_id = device.device_id;
  if (row.revoked_ms == 0) row.revoked_ms = now_ms;
  row.by_device = by ? std::optional<Id>(by->device_id) : std::nullopt;
  row.by_user = std::string(by ? std::string_view(by->user) : by_user);
  if (order) row.wipe_order = order->SerializeAsString();
  if (device.state != v1::DEVICE_STATE_REVOKED) {
    if (auto ec = store.SetDeviceState(device.device_id, v1::DEVICE_STATE_REVOKED)) return ec;
  }
  if (auto ec = store.PutRevocation(row)) return ec;
  if (auto ec =
          AuditRevoke(store, now_ms, by, row.by_user, device, order ? order->signature() : ""))
    return ec;
  if (out) *out = std::move(row);
  return {};
}

// The checks every admin request about another device starts with: `who` is
// an active admin device and `device_id` is 16 bytes. Returns the target id,
// or nullopt with the refusal in `out` (or a store error in `ec`).
static std::optional<Id> AdminTargetId(WriterState& ws, const Identity& who,
                                       std::string_view device_id, std::string_view action,
                                       Outcome* out, error_code* ec) {
  auto admin = ws.store.FindDevice(who.device_id);
  if (!admin) {
    *ec = admin.error();
    return std::nullopt;
  }
  if (!CheckActive(*admin, out)) return std::nullopt;
  if ((*admin)->role != v1::ROLE_ADMIN) {
    SetError(out, v1::ERROR_CODE_FORBIDDEN,
             "Only admin devices " + std::string(action) + " devices.", false);
    return std::nullopt;
  }
  auto target_id = core::IdFromBytes(device_id);
  if (!target_id) {
    SetError(out, v1::ERROR_CODE_BAD_REQUEST, "The device id is not 16 bytes.", false);
    return std::nullopt;
  }
  return *target_id;
}

// The checks of a revocation from an admin device; the target on success,
// else nullopt with the refusal in `out` (or a store error in `ec`).
static std::optional<DeviceRow> CheckRevocation(WriterState& ws, const Identity& who,
                                                const v1::RevokeDevice& req, Outcome* out,
                                                error_code* ec) {
  auto target_id = AdminTargetId(ws, who, req.device_id(), "revoke", out, ec);
  if (!target_id) return std::nullopt;
  if (*target_id == who.device_id) {
    SetError(out, v1::ERROR_CODE_BAD_REQUEST,
             "A device cannot revoke itself: revoke it from another admin device.", false);
    return std::nullopt;
  }
  auto target = ws.store.FindDevice(*target_id);
  if (!target) {
    *ec = target.error();
    return std::nullopt;
  }
  if (!*target) {
    SetError(out, v1::ERROR_CODE_BAD_REQUEST, "No such device.", false);
    return std::nullopt;
  }
  // The order is what lets the device erase itself; the server checks it as
  // the device will, so a bad one is refused here and not carried for weeks.
  const teduh::keys::v1::WipeOrder& order = req.wipe_order();
  if (!req.has_wipe_order() || order.device_id() != req.device_id() ||
      order.unit_id() != ws.unit.unit_id ||
      order.admin_device_id() != core::AsBytes(who.device_id)) {
    SetError(out, v1::ERROR_CODE_BAD_REQUEST,
             "A revocation carries a wipe order for that device, this unit and this admin device.",
             false);
    return std::nullopt;
  }
  if (ws.unit.unit_root_pk.size() != crypto::kSignPublicKeyBytes ||
      !crypto::Verify(
          core::AsSpan(ws.unit.unit_root_pk),
          core::AsSpan(core::WipeOrderMessage(order.device_id(), order.unit_id(), order.issued_ms(),
                                              order.admin_device_id())),
          core::AsSpan(order.signature()))) {
    SetError(out, v1::ERROR_CODE_BAD_SIGNATURE,
             "The wipe order is not signed by the unit root key.", false);
    return std::nullopt;
  }
  return std::move(**target);
}

error_code Revoke(WriterState& ws, const Identity& who, const v1::RevokeDevice& req, Outcome* out) {
  error_code ec;
  auto target = CheckRevocation(ws, who, req, out, &ec);
  if (!target) return ec;
  RevocationRow row;
  if (auto e = RevokeInStore(ws.store, ws.env.NowMs(), *target, who, "", &req.wipe_order(), &row))
    return e;
  DeviceRow revoked = *target;
  revoked.state = v1::DEVICE_STATE_REVOKED;
  *out->reply.mutable_revoke_result()->mutable_device() = ToDeviceInfo(revoked, row);
  return {};
}

error_code Offboard(WriterState& ws, const Identity& who, const v1::OffboardUser& req, Outcome* out,
                    std::vector<std::string>* poke_users) {
  auto self = ws.store.FindDevice(who.device_id);
  if (!self) return self.error();
  if (!CheckActive(*self, out)) return {};
  if ((*self)->role != v1::ROLE_ADMIN) {
    SetError(out, v1::ERROR_CODE_FORBIDDEN, "Only admin devices offboard users.", false);
    return {};
  }
  if (req.user().empty() || req.reassign_to().empty() || req.user() == req.reassign_to()) {
    SetError(out, v1::ERROR_CODE_BAD_REQUEST,
             "Name the user who leaves and another user who takes over their cases.", false);
    return {};
  }
  auto devices = ws.store.ListDevices();
  if (!devices) return devices.error();
  const bool successor = std::any_of(devices->begin(), devices->end(), [&](const DeviceRow& d) {
    return d.user == req.reassign_to() && d.state == v1::DEVICE_STATE_ACTIVE;
  });
  if (!successor) {
    SetError(out, v1::ERROR_CODE_BAD_REQUEST,
             "No active device belongs to " + req.reassign_to() + ": enroll theirs first.", false);
    return {};
  }
  // Every device of the user is revoked here, each checked like a revocation.
  std::vector<std::pair<DeviceRow, const v1::RevokeDevice*>> revoke;
  for (const auto& r : req.revocations()) {
    error_code ec;
    auto target = CheckRevocation(ws, who, r, out, &ec);
    if (!target) return ec;
    if (target->user != req.user()) {
      SetError(out, v1::ERROR_CODE_BAD_REQUEST, "A revocation names a device of another user.",
               false);
      return {};
    }
    revoke.emplace_back(std::move(*target), &r);
  }
  for (const DeviceRow& d : *devices) {
    if (d.user != req.user() || d.state == v1::DEVICE_STATE_REVOKED) continue;
    const bool covered = std::any_of(revoke.begin(), revoke.end(), [&](const auto& r) {
      return r.first.device_id == d.device_id;
    });
    if (!covered) {
      SetError(out, v1::ERROR_CODE_BAD_REQUEST,
               "Device " + core::ToHex(d.device_id).substr(0, 8) + " of " + req.user() +
                   " has no wipe order in the request: nothing was changed.",
               false);
      return {};
    }
  }
  const std::int64_t now = ws.env.NowMs();
  for (const auto& [device, r] : revoke)
    if (auto e = RevokeInStore(ws.store, now, device, who, "", &r->wipe_order(), nullptr)) return e;

  // Their cases: the assignment field that names them (the case worker field
  // when they only created it) now names the successor, under a server stamp;
  // the value it replaces is kept in history.
  auto cases = ws.store.CasesAssignedTo(req.user());
  if (!cases) return cases.error();
  const core::RecordKind& kind = *core::Schema::Get().FindKind(core::kCaseKind);
  const std::uint64_t txn = ws.store.AllocateTxn();
  for (const Id& case_id : *cases) {
    std::uint32_t field = kAssignmentFields[0];  // the creator rule: the case worker field
    for (std::uint32_t number : kAssignmentFields) {
      FieldRow row;
      auto found = ws.store.FindField(case_id, number, &row);
      if (!found) return found.error();
      if (!*found || row.sealed) continue;
      const core::FieldPolicy* policy = kind.FindField(number);
      auto msg = core::DecodeFieldValue(kind, row.value);
      if (policy && msg &&
          (*msg)->GetReflection()->GetString(**msg, policy->descriptor) == req.user()) {
        field = number;
        break;
      }
    }
    FieldRow current;  // read again: a row's views last until the next store call
    auto had = ws.store.FindField(case_id, field, &current);
    if (!had) return had.error();
    const core::FieldPolicy* policy = kind.FindField(field);
    cw::Case value;
    value.GetReflection()->SetString(&value, policy->descriptor, req.reassign_to());
    const std::string bytes = value.SerializeAsString();
    FieldRow next = ServerFieldRow(ws, case_id, field, bytes, who.user, txn);
    if (*had)
      if (auto e = ws.store.AppendHistory(current, next.seq, "overwritten")) return e;
    if (auto e = ws.store.PutField(next)) return e;
    if (auto e = RecomputeAssignees(ws.store, case_id, txn, poke_users)) return e;
  }
  if (auto e = ws.store.SaveHlc(ws.hlc.last())) return e;
  if (auto e = AuditOffboard(ws, who, req.user(), req.reassign_to(), cases->size())) return e;
  v1::OffboardResult* result = out->reply.mutable_offboard_result();
  result->set_devices_revoked(static_cast<std::uint32_t>(revoke.size()));
  result->set_cases_reassigned(static_cast<std::uint32_t>(cases->size()));
  return {};
}

error_code RecordWipeReceipt(WriterState& ws, const Id& device_id,
                             const teduh::keys::v1::WipeReceipt& receipt, Outcome* out) {
  auto device = ws.store.FindDevice(device_id);
  if (!device) return device.error();
  auto revocation = ws.store.FindRevocation(device_id);
  if (!revocation) return revocation.error();
  teduh::keys::v1::WipeOrder order;
  if (!*device || !*revocation || !order.ParseFromString((*revocation)->wipe_order) ||
      receipt.device_id() != core::AsBytes(device_id) ||
      receipt.order_signature() != order.signature()) {
    SetError(out, v1::ERROR_CODE_BAD_REQUEST, "The receipt does not answer this device's order.",
             true);
    return {};
  }
  if (!crypto::Verify(core::AsSpan((*device)->sign_pk),
                      core::AsSpan(core::WipeReceiptMessage(
                          receipt.device_id(), receipt.order_signature(), receipt.erased_ms())),
                      core::AsSpan(receipt.signature()))) {
    SetError(out, v1::ERROR_CODE_BAD_SIGNATURE, "The receipt is not signed by the device.", true);
    return {};
  }
  RevocationRow row = **revocation;
  if (row.wiped_ms == 0) {  // a copy of the device erasing later keeps the first receipt
    row.receipt = receipt.SerializeAsString();
    row.wiped_ms = ws.env.NowMs();
    if (auto ec = ws.store.PutRevocation(row)) return ec;
  }
  if (auto ec = AuditWipeReceipt(ws, **device, receipt.signature())) return ec;
  SetError(out, v1::ERROR_CODE_DEVICE_REVOKED, "This device was revoked; its erasure is recorded.",
           true);
  return {};
}

// A stored value as a device receives it (pull and history).
static void FillPulledChange(v1::FieldChange* c, const FieldRow& f, std::string_view kind,
                             const std::optional<Id>& parent_id, const std::string& unit_id) {
  c->set_record_id(std::string(core::AsBytes(f.record_id)));
  c->set_kind(std::string(kind));
  if (parent_id) c->set_parent_id(std::string(core::AsBytes(*parent_id)));
  c->set_field(f.field);
  c->set_value(std::string(f.value));
  c->set_sealed(f.sealed);
  if (f.sealed) {
    c->set_key_class(f.key_class);
    c->set_key_version(f.key_version);
  }
  c->mutable_stamp()->set_hlc(f.stamp.hlc);
  c->mutable_stamp()->set_device_id(std::string(core::AsBytes(f.stamp.device)));
  if (f.origin_hlc) c->set_origin_hlc(f.origin_hlc);
  c->set_author(std::string(f.author));
  c->set_seq(f.seq);
  c->set_unit_id(unit_id);
}

// Whether `who` may hold `record` (its case is in the device's scope).
static result<bool> MayHold(Store& store, const Identity& who, const RecordRow& record) {
  switch (core::ScopeOf(who.role)) {
    case core::CaseScope::kNone:
      return false;
    case core::CaseScope::kUnit:
      return true;
    case core::CaseScope::kAssigned:
      return store.IsAssigned(record.case_id, who.user);
  }
  return false;
}

// Lists in `w` the damaged values of `wanted` that `who` may hold, at most
// kMaxRepairsOffered of them, looking at kMaxRepairsLooked at the most from a
// random place (values no copy can repair do not hide the others). Values
// found intact (replaced since) or gone go to `gone`. A courtesy: a store error
// ends the list, never the sign-in.
static void ListRepairs(Store& store, const Identity& who, const std::vector<FieldKey>& wanted,
                        v1::Welcome* w, std::vector<FieldKey>* gone) {
  constexpr std::size_t kMaxRepairsLooked = 512;
  if (wanted.empty()) return;
  const std::size_t start = crypto::RandomUniform(static_cast<std::uint32_t>(wanted.size()));
  for (std::size_t i = 0; i < std::min(wanted.size(), kMaxRepairsLooked); ++i) {
    if (w->repair_size() >= static_cast<int>(core::kMaxRepairsOffered)) return;
    const auto& [record_id, field] = wanted[(start + i) % wanted.size()];
    auto record = store.FindRecord(record_id);
    if (!record && record.error() == core::make_error_code(core::errc::store_damaged)) continue;
    if (!record) return;
    if (!*record) {
      gone->emplace_back(record_id, field);
      continue;
    }
    auto may = MayHold(store, who, **record);
    if (!may) return;
    if (!*may) continue;
    auto intact = store.FieldIntact(record_id, field);
    if (!intact) return;
    if (!intact->has_value() || **intact) {
      gone->emplace_back(record_id, field);
      continue;
    }
    v1::FieldRef* ref = w->add_repair();
    ref->set_record_id(std::string(core::AsBytes(record_id)));
    ref->set_field(field);
  }
}

error_code RepairValues(WriterState& ws, const Identity& who, const v1::RepairOffer& req,
                        Outcome* out, std::vector<FieldKey>* repaired,
                        std::vector<std::string>* poke_users) {
  auto device = ws.store.FindDevice(who.device_id);
  if (!device) return device.error();
  if (!CheckActive(*device, out)) return {};
  std::vector<v1::FieldChange> audited;  // ids and stamps only, for the audit entry
  std::set<Id> cases;                    // of the values repaired: whose devices are poked
  std::uint32_t not_taken = 0;
  for (const v1::FieldChange& c : req.values()) {
    auto record_id = core::IdFromBytes(c.record_id());
    auto stamp_device = core::IdFromBytes(c.stamp().device_id());
    if (!record_id || !stamp_device) {
      ++not_taken;
      continue;
    }
    auto record = ws.store.FindRecord(*record_id);
    if (!record && record.error() == core::make_error_code(core::errc::store_damaged)) {
      ++not_taken;
      continue;
    }
    if (!record) return record.error();
    if (!*record) {
      ++not_taken;
      continue;
    }
    auto may = MayHold(ws.store, who, **record);
    if (!may) return may.error();
    FieldRow current;
    result<bool> found = false;
    if (*may) found = ws.store.FindField(*record_id, c.field(), &current);
    if (!found) return found.error();
    if (!*may || *found || !current.damaged) {
      ++not_taken;  // not this device's to offer, intact, or never written
      continue;
    }
    // The offer is taken only if it is the stored row, byte for byte: with
    // the stored author (which no device sends), its checksum must be the
    // one the damaged row kept. A device cannot put anything else there.
    const std::string author(current.author);
    FieldRow offered;
    offered.record_id = *record_id;
    offered.field = c.field();
    offered.value = c.value();
    offered.sealed = c.sealed();
    offered.key_class = c.key_class();
    offered.key_version = c.key_version();
    offered.stamp = core::Stamp{c.stamp().hlc(), *stamp_device};
    offered.origin_hlc = c.origin_hlc();
    offered.author = author;
    auto match = ws.store.SumMatches(offered);
    if (!match) return match.error();
    if (!*match) {
      ++not_taken;
      continue;
    }
    // A new sequence number: devices whose pull skipped the damaged row pull it now.
    offered.seq = ws.store.AllocateSeq();
    offered.txn = ws.store.AllocateTxn();
    if (auto ec = ws.store.PutField(offered)) return ec;
    v1::FieldChange& a = audited.emplace_back();
    a.set_record_id(c.record_id());
    a.set_kind((*record)->kind);
    if ((*record)->parent_id) a.set_parent_id(std::string(core::AsBytes(*(*record)->parent_id)));
    a.set_field(c.field());
    *a.mutable_stamp() = c.stamp();
    a.set_sealed(c.sealed());
    a.set_key_class(c.key_class());
    a.set_key_version(c.key_version());
    repaired->emplace_back(*record_id, c.field());
    cases.insert((*record)->case_id);
  }
  if (auto ec = AuditRepair(ws, who, audited)) return ec;
  for (const Id& case_id : cases) {
    auto users = ws.store.Assignees(case_id);
    if (!users) return users.error();
    for (auto& u : *users) poke_users->push_back(std::move(u));
  }
  std::sort(poke_users->begin(), poke_users->end());
  poke_users->erase(std::unique(poke_users->begin(), poke_users->end()), poke_users->end());
  v1::RepairResult* result = out->reply.mutable_repair_result();
  result->set_repaired(static_cast<std::uint32_t>(audited.size()));
  result->set_not_taken(not_taken);
  return {};
}

error_code FieldHistory(Store& store, const ServerConfig& config, const UnitInfo& unit,
                        const Identity& who, const v1::HistoryRequest& req, Outcome* out) {
  auto device = store.FindDevice(who.device_id);
  if (!device) return device.error();
  if (!CheckActive(*device, out)) return {};
  auto not_held = [&] {
    // The same answer for an unknown record and one outside the scope.
    SetError(out, v1::ERROR_CODE_FORBIDDEN, "This device does not hold that record.", false);
    return error_code();
  };
  auto record_id = core::IdFromBytes(req.record_id());
  if (!record_id) return not_held();
  auto record = store.FindRecord(*record_id);
  if (!record) return record.error();
  if (!*record) return not_held();
  auto may = MayHold(store, who, **record);
  if (!may) return may.error();
  if (!*may) return not_held();
  v1::History* h = out->reply.mutable_history();
  const std::uint32_t lo = req.field() == 0 ? 1 : req.field();
  const std::uint32_t hi = req.field() == 0 ? 536870911u : req.field();
  const std::size_t max = config.limits.max_pull_changes;
  const std::size_t budget =
      config.limits.max_frame_bytes > 4096 ? config.limits.max_frame_bytes - 4096 : 0;
  std::size_t bytes = 0;
  return store.ScanFieldHistory(*record_id, lo, hi, [&](const FieldRow& f, std::string_view why) {
    const std::size_t size = f.value.size() + f.author.size() + (*record)->kind.size() + 128;
    if (static_cast<std::size_t>(h->entries_size()) >= max || bytes + size > budget) return;
    bytes += size;
    v1::HistoryEntry* e = h->add_entries();
    e->set_reason(std::string(why));
    FillPulledChange(e->mutable_value(), f, (*record)->kind, (*record)->parent_id, unit.unit_id);
  });
}

PullScope ScopeFor(const Identity& who) {
  PullScope scope;
  switch (core::ScopeOf(who.role)) {
    case core::CaseScope::kNone:
      // Admin devices hold the unit's case keys (to rotate and re-key), not content.
      scope.kind = who.role == v1::ROLE_ADMIN ? PullScope::Kind::kKeys : PullScope::Kind::kNothing;
      break;
    case core::CaseScope::kUnit:
      scope.kind = PullScope::Kind::kUnit;
      break;
    case core::CaseScope::kAssigned:
      scope.kind = PullScope::Kind::kAssignedTo;
      scope.user = who.user;
      break;
  }
  return scope;
}

error_code ApplyPush(WriterState& ws, const Identity& who, const v1::Push& push, PushOutcome* out) {
  auto device = ws.store.FindDevice(who.device_id);
  if (!device) return device.error();
  if (!CheckActive(*device, out)) return {};
  PushApplier applier(ws, **device, out);
  if (auto ec = applier.Run(push)) return ec;
  return AuditPush(ws, who, push, out->reply.push_result(), out->repaired);
}

error_code Enroll(WriterState& ws, const v1::EnrollRequest& req, Outcome* out) {
  auto refuse = [&] {
    SetError(out, v1::ERROR_CODE_BAD_ENROLLMENT_CODE,
             "The enrollment code is unknown, expired or already used.", true);
    return error_code();
  };
  if (req.sign_pk().size() != crypto::kSignPublicKeyBytes ||
      req.box_pk().size() != crypto::kBoxPublicKeyBytes ||
      (!req.unit_root_pk().empty() && req.unit_root_pk().size() != crypto::kSignPublicKeyBytes)) {
    SetError(out, v1::ERROR_CODE_MALFORMED_FRAME, "A public key has the wrong length.", true);
    return {};
  }
  if (!crypto::Verify(core::AsSpan(req.sign_pk()),
                      core::AsSpan(core::EnrollMessage(req.code(), req.sign_pk(), req.box_pk(),
                                                       req.unit_root_pk())),
                      core::AsSpan(req.signature()))) {
    SetError(out, v1::ERROR_CODE_BAD_SIGNATURE, "The enrollment request's signature is invalid.",
             true);
    return {};
  }
  auto parsed = core::ParseEnrollmentCode(req.code());
  if (!parsed) return refuse();
  auto row = ws.store.FindEnrollment(parsed->hash);
  if (!row) return row.error();
  const std::int64_t now = ws.env.NowMs();
  if (!*row || (*row)->used_ms != 0 || now >= (*row)->expires_ms) return refuse();
  const EnrollmentRow& code = **row;
  const bool pinned = !ws.unit.unit_root_pk.empty();
  if (!parsed->fingerprint.empty() &&
      (!pinned || parsed->fingerprint != core::KeyFingerprint(ws.unit.unit_root_pk)))
    return refuse();
  if (code.bootstrap) {
    if (pinned) return refuse();
    if (req.unit_root_pk().size() != crypto::kSignPublicKeyBytes) {
      SetError(out, v1::ERROR_CODE_BAD_REQUEST,
               "The first admin device must send the new unit root public key.", true);
      return {};
    }
  } else if (!req.unit_root_pk().empty()) {
    // PROTOCOL §2: only the bootstrap code brings a unit root key; the code stays unused.
    SetError(out, v1::ERROR_CODE_BAD_REQUEST,
             "Only the first admin device sends a unit root key; this code is not that one.", true);
    return {};
  }
  // A device rebuilt from the recovery kit: the unit root key approves it.
  const bool recovered = !req.root_signature().empty();
  if (recovered) {
    if (code.bootstrap || !pinned || code.role != v1::ROLE_ADMIN) {
      SetError(out, v1::ERROR_CODE_BAD_REQUEST,
               "A recovery needs an admin enrollment code of a unit that has a root key.", true);
      return {};
    }
    if (!crypto::Verify(core::AsSpan(ws.unit.unit_root_pk),
                        core::AsSpan(core::RecoverMessage(core::EnrollMessage(
                            req.code(), req.sign_pk(), req.box_pk(), req.unit_root_pk()))),
                        core::AsSpan(req.root_signature()))) {
      SetError(out, v1::ERROR_CODE_BAD_SIGNATURE,
               "The recovery is not signed by this unit's root key.", true);
      return {};
    }
  }

  if (!req.approval().empty()) {
    const std::string& root = code.bootstrap ? req.unit_root_pk() : ws.unit.unit_root_pk;
    if ((!code.bootstrap && !recovered) ||
        !crypto::Verify(core::AsSpan(root),
                        core::AsSpan(core::ApprovalMessage(code.role, req.sign_pk(), req.box_pk())),
                        core::AsSpan(req.approval()))) {
      SetError(out, v1::ERROR_CODE_BAD_SIGNATURE,
               "The approval is not signed by this unit's root key.", true);
      return {};
    }
  }

  DeviceRow device;
  device.device_id = core::NewId();
  device.user = code.user;
  device.role = code.role;
  device.state = code.bootstrap || recovered ? v1::DEVICE_STATE_ACTIVE : v1::DEVICE_STATE_PENDING;
  device.sign_pk = req.sign_pk();
  device.box_pk = req.box_pk();
  device.label = req.label();
  device.enrolled_ms = now;
  if (auto ec = ws.store.MarkEnrollmentUsed(code.code_hash, now)) return ec;
  if (auto ec = ws.store.InsertDevice(device)) return ec;
  if (code.bootstrap) {
    if (auto ec = ws.store.SetUnitRootKey(req.unit_root_pk())) return ec;
    ws.unit.unit_root_pk = req.unit_root_pk();
  }
  if (code.bootstrap || recovered) {
    if (auto ec = ws.store.PutRootHolder(RootHolderRow{device.device_id, now, {}})) return ec;
  }
  if (!req.approval().empty())
    if (auto ec = ws.store.PutApproval(device.device_id, req.approval())) return ec;
  if (auto ec = AuditEnroll(ws, device, code.bootstrap, recovered)) return ec;

  v1::EnrollResult* r = out->reply.mutable_enroll_result();
  r->set_device_id(std::string(core::AsBytes(device.device_id)));
  r->set_user(device.user);
  r->set_role(device.role);
  r->set_state(device.state);
  r->set_unit_id(ws.unit.unit_id);
  r->set_unit_name(ws.unit.unit_name);
  r->set_server_id(std::string(core::AsBytes(ws.unit.server_id)));
  r->set_unit_root_pk(ws.unit.unit_root_pk);
  return {};
}

error_code Approve(WriterState& ws, const Identity& who, const v1::ApproveDevice& req,
                   Outcome* out) {
  error_code ec;
  auto target_id = AdminTargetId(ws, who, req.device_id(), "approve", out, &ec);
  if (!target_id) return ec;
  auto target = ws.store.FindDevice(*target_id);
  if (!target) return target.error();
  if (!*target || (*target)->state == v1::DEVICE_STATE_REVOKED) {
    SetError(out, v1::ERROR_CODE_BAD_REQUEST, "No such device, or it was revoked.", false);
    return {};
  }
  if (req.grants().empty()) {
    SetError(out, v1::ERROR_CODE_BAD_REQUEST, "Approval needs at least one grant.", false);
    return {};
  }
  if (ws.unit.unit_root_pk.size() != crypto::kSignPublicKeyBytes) {
    SetError(out, v1::ERROR_CODE_BAD_REQUEST, "The unit has no root key yet.", false);
    return {};
  }
  const DeviceRow& device = **target;
  for (const auto& g : req.grants()) {
    if (g.device_id() != req.device_id()) {
      SetError(out, v1::ERROR_CODE_BAD_REQUEST, "A grant names another device.", false);
      return {};
    }
    if (g.key_class() != teduh::ACCESS_CLASS_GENERAL &&
        g.key_class() != teduh::ACCESS_CLASS_CLINICAL) {
      SetError(out, v1::ERROR_CODE_BAD_REQUEST, "A grant has no valid key class.", false);
      return {};
    }
    if (!core::MayHoldClass(device.role, g.key_class())) {
      SetError(out, v1::ERROR_CODE_BAD_REQUEST,
               "The device's role may not hold the " + core::ClassName(g.key_class()) + " key.",
               false);
      return {};
    }
    if (g.sealed_key().empty() ||
        !crypto::Verify(core::AsSpan(ws.unit.unit_root_pk),
                        core::AsSpan(core::GrantMessage(g.device_id(), g.key_class(), g.epoch(),
                                                        g.sealed_key())),
                        core::AsSpan(g.signature()))) {
      SetError(out, v1::ERROR_CODE_BAD_SIGNATURE, "A grant is not signed by the unit root key.",
               false);
      return {};
    }
  }
  if (!req.approval().empty() && !crypto::Verify(core::AsSpan(ws.unit.unit_root_pk),
                                                 core::AsSpan(core::ApprovalMessage(
                                                     device.role, device.sign_pk, device.box_pk)),
                                                 core::AsSpan(req.approval()))) {
    SetError(out, v1::ERROR_CODE_BAD_SIGNATURE, "The approval is not signed by the unit root key.",
             false);
    return {};
  }
  if (req.has_root_grant()) {
    const auto& rg = req.root_grant();
    if (device.role != v1::ROLE_ADMIN || rg.device_id() != req.device_id()) {
      SetError(out, v1::ERROR_CODE_BAD_REQUEST,
               "Only a device enrolled with the admin role can be handed the unit root key.",
               false);
      return {};
    }
    if (!crypto::Verify(core::AsSpan(ws.unit.unit_root_pk),
                        core::AsSpan(core::RootGrantMessage(rg.device_id(), rg.sealed_seed())),
                        core::AsSpan(rg.signature()))) {
      SetError(out, v1::ERROR_CODE_BAD_SIGNATURE,
               "The root key grant is not signed by the unit root key.", false);
      return {};
    }
    if (auto ec =
            ws.store.PutRootHolder(RootHolderRow{device.device_id, 0, rg.SerializeAsString()}))
      return ec;
  }
  for (const auto& g : req.grants()) {
    GrantRow row{device.device_id, g.key_class(), g.epoch(), g.sealed_key(), g.signature()};
    if (auto ec = ws.store.PutGrant(row)) return ec;
  }
  if (!req.approval().empty())
    if (auto ec = ws.store.PutApproval(device.device_id, req.approval())) return ec;
  if (auto ec = ws.store.SetDeviceState(device.device_id, v1::DEVICE_STATE_ACTIVE)) return ec;
  if (auto ec = AuditApprove(ws, who, device, req)) return ec;
  DeviceRow approved = device;
  approved.state = v1::DEVICE_STATE_ACTIVE;
  v1::DeviceInfo* info = out->reply.mutable_approve_result()->mutable_device();
  *info = ToDeviceInfo(approved);
  info->set_approval(req.approval());
  if (req.has_root_grant()) info->set_root_key("handed");
  return {};
}

error_code RecordHoldings(WriterState& ws, const Id& device,
                          const std::vector<std::pair<Id, std::uint64_t>>& cases,
                          std::uint64_t evictions_received_upto) {
  for (const auto& [case_id, seq] : cases)
    if (auto ec = ws.store.RecordHolding(device, case_id, seq)) return ec;
  if (evictions_received_upto > 0)
    if (auto ec = ws.store.DropEvictions(device, evictions_received_upto)) return ec;
  return ws.store.TouchDevice(device, ws.env.NowMs());
}

error_code TouchDevice(WriterState& ws, const Id& device) {
  return ws.store.TouchDevice(device, ws.env.NowMs());
}

error_code Authenticate(Store& store, const ServerConfig& config, core::Env& env,
                        const Id& device_id, std::string_view nonce, std::string_view server_id,
                        std::string_view signature, AuthOutcome* out,
                        const std::function<std::vector<FieldKey>()>& repairs_wanted) {
  auto device = store.FindDevice(device_id);
  if (!device) return device.error();
  if (!*device) {
    SetError(out, v1::ERROR_CODE_UNKNOWN_DEVICE, "This device is not enrolled with this server.",
             true);
    return {};
  }
  const DeviceRow& d = **device;
  if (!crypto::Verify(core::AsSpan(d.sign_pk),
                      core::AsSpan(core::AuthMessage(nonce, server_id, core::AsBytes(device_id))),
                      core::AsSpan(signature))) {
    SetError(out, v1::ERROR_CODE_BAD_SIGNATURE, "The proof's signature is invalid.", true);
    return {};
  }
  if (d.state == v1::DEVICE_STATE_REVOKED) {
    // Every connection of a revoked device (or of a copy of it) is handed
    // the signed wipe order while there is one; it never gets a Welcome.
    auto revocation = store.FindRevocation(device_id);
    if (!revocation) return revocation.error();
    teduh::keys::v1::WipeOrder order;
    if (*revocation && !(*revocation)->wipe_order.empty() &&
        order.ParseFromString((*revocation)->wipe_order)) {
      *out->reply.mutable_wipe()->mutable_order() = std::move(order);
      out->close = false;
      out->wiping = device_id;
      return {};
    }
  }
  if (!CheckActive(*device, out)) return {};
  auto grants = store.GrantsFor(device_id);
  if (!grants) return grants.error();
  auto unit = store.LoadUnit();
  if (!unit) return unit.error();

  v1::Welcome* w = out->reply.mutable_welcome();
  w->set_role(d.role);
  w->set_user(d.user);
  w->set_unit_id(unit->unit_id);
  w->set_unit_name(unit->unit_name);
  w->set_time_zone(unit->time_zone);
  if (v1::UnitCodes codes; !unit->unit_codes.empty() && codes.ParseFromString(unit->unit_codes))
    *w->mutable_codes() = std::move(*codes.mutable_codes());
  w->set_server_time_ms(env.NowMs());
  w->set_generation(unit->generation);
  w->set_device_mark(d.last_device_seq);
  {
    // A restore over a store that read carried the device's mark forward;
    // its gap says what the backup held.
    std::uint64_t held = d.last_device_seq;
    auto gaps = store.RestoreGaps();
    if (!gaps) return gaps.error();
    for (const RestoreGapRow& g : *gaps)
      if (g.device_id == d.device_id) held = std::min(held, g.from_seq);
    w->set_held_through(held);
  }
  auto head = store.HeadSeq();
  if (!head) return head.error();
  w->set_head_seq(*head);
  auto acks = store.KeyAcks(device_id);  // the handshake reads only this device's
  if (!acks) return acks.error();
  for (const GrantRow& g : *grants) {
    auto* pg = w->add_grants();
    pg->set_device_id(std::string(core::AsBytes(g.device_id)));
    pg->set_key_class(g.key_class);
    pg->set_epoch(g.epoch);
    pg->set_sealed_key(g.sealed_key);
    pg->set_signature(g.signature);
    pg->set_acked(std::any_of(acks->begin(), acks->end(), [&](const KeyAckRow& a) {
      return a.key_class == g.key_class && a.epoch == g.epoch;
    }));
  }
  w->set_unit_root_pk(unit->unit_root_pk);
  if (auto ec = WelcomeCustody(store, config, d, w)) return ec;
  auto retired = store.Retirements();
  if (!retired) return retired.error();
  // The newest ones (by class, then epoch), within the Welcome's bound: a
  // device offline through more retirements than that keeps an old key it
  // can no longer use, which is harmless.
  const std::size_t keep = config.limits.max_grants / 2;
  const std::size_t skip = retired->size() > keep ? retired->size() - keep : 0;
  for (std::size_t i = skip; i < retired->size(); ++i) {
    teduh::keys::v1::Retirement r;
    if (r.ParseFromString((*retired)[i])) *w->add_retired() = std::move(r);
  }
  w->set_max_frame_bytes(config.limits.max_frame_bytes);
  w->set_max_push_changes(static_cast<std::uint32_t>(config.limits.max_push_changes));
  w->set_max_pull_changes(static_cast<std::uint32_t>(config.limits.max_pull_changes));
  out->identity = Identity{device_id, d.user, d.role};
  // Asked only now: a stranger's failed proof costs no copy of the list.
  if (repairs_wanted) ListRepairs(store, *out->identity, repairs_wanted(), w, &out->repairs_gone);
  return {};
}

error_code RollGeneration(WriterState& ws, const Identity& who, const v1::Pull& req,
                          std::uint64_t* generation, bool* rolled) {
  *rolled = false;
  // The store's generation now, not the one seen when the request was
  // queued: two claims in one group roll it once.
  auto unit = ws.store.LoadUnit();
  if (!unit) return unit.error();
  *generation = unit->generation;
  auto device = ws.store.FindDevice(who.device_id);
  if (!device) return device.error();
  if (!*device || (*device)->state != v1::DEVICE_STATE_ACTIVE) return {};
  // Changes the server acknowledged to the device and no longer holds: it
  // sends them again; `device list` shows how many came back.
  if (req.acknowledged_mark() > (*device)->last_device_seq) {
    if (auto ec = ws.store.NoteRestoreGap(RestoreGapRow{who.device_id, (*device)->last_device_seq,
                                                        req.acknowledged_mark(), ws.env.NowMs()}))
      return ec;
  }
  if (req.generation() == 0 || req.generation() != *generation) return {};
  auto head = ws.store.HeadSeq();
  if (!head) return head.error();
  if (req.after_seq() <= *head && req.acknowledged_mark() <= (*device)->last_device_seq)
    return {};  // the store holds everything the device says it saw
  std::uint64_t next = 0;
  do {
    Id r = core::NewId();
    std::memcpy(&next, r.data(), sizeof next);
    next &= 0x7FFFFFFFFFFFFFFFull;  // stored as a signed integer
  } while (next == 0 || next == *generation);
  if (auto ec = ws.store.SetGeneration(next)) return ec;
  *generation = next;
  *rolled = true;
  return {};
}

error_code Pull(Store& store, const ServerConfig& config, const UnitInfo& unit,
                std::uint64_t generation, const Identity& who, const v1::Pull& req,
                PullOutcome* out) {
  auto device = store.FindDevice(who.device_id);
  if (!device) return device.error();
  if (!CheckActive(*device, out)) return {};

  v1::Changes* changes = out->reply.mutable_changes();
  changes->set_generation(generation);
  std::uint64_t after = req.after_seq();
  if (req.generation() != 0 && req.generation() != generation) {
    changes->set_reset(true);
    after = 0;
  }
  const std::size_t max = config.limits.max_pull_changes;
  const std::size_t limit = req.limit() == 0 ? max : std::min<std::size_t>(req.limit(), max);
  // Room for the envelope and per-change framing; a value is at most max_value_bytes.
  const std::size_t budget =
      config.limits.max_frame_bytes > 4096 ? config.limits.max_frame_bytes - 4096 : 0;

  std::size_t bytes = 0;
  bool has_more = false;
  std::uint64_t next_txn = 0;
  Id next_record{};
  std::vector<std::uint64_t> txns;  // per change, parallel to changes
  std::vector<Id> case_ids;
  txns.reserve(limit);
  case_ids.reserve(limit);
  auto visit = [&](const ChangeView& v) {
    const FieldRow& f = *v.field;
    const std::size_t size =
        f.value.size() + v.kind.size() + f.author.size() + unit.unit_id.size() + 128;
    if (txns.size() >= limit || (bytes + size > budget && !txns.empty())) {
      has_more = true;
      next_txn = f.txn;
      next_record = f.record_id;
      return false;
    }
    bytes += size;
    FillPulledChange(changes->add_changes(), f, v.kind, v.parent_id, unit.unit_id);
    txns.push_back(f.txn);
    case_ids.push_back(v.case_id);
    return true;
  };
  if (auto ec = store.ScanChanges(ScopeFor(who), after, limit + 1, visit)) return ec;

  // Never end a batch inside a server transaction, unless that one
  // transaction alone is larger than the batch.
  if (has_more && !txns.empty() && txns.back() == next_txn) {
    std::size_t keep = txns.size();
    while (keep > 0 && txns[keep - 1] == next_txn) --keep;
    if (keep == 0) {
      // One transaction larger than a batch (a key rotation) is split, but
      // between records when it can: a record's fields from it arrive
      // together unless one record alone fills the batch.
      const std::string next(core::AsBytes(next_record));
      std::size_t whole = txns.size();
      while (whole > 0 && changes->changes(static_cast<int>(whole) - 1).record_id() == next)
        --whole;
      keep = whole > 0 ? whole : txns.size();
    }
    if (keep < txns.size()) {
      changes->mutable_changes()->DeleteSubrange(static_cast<int>(keep),
                                                 static_cast<int>(txns.size() - keep));
      txns.resize(keep);
      case_ids.resize(keep);
    }
  }
  std::uint64_t last_seq =
      changes->changes().empty() ? after : changes->changes(changes->changes_size() - 1).seq();
  // Shred orders (every device gets them) and, for an assigned scope, this
  // device's evictions, in the same range of sequence numbers (after the last
  // batch: all that remain), at most `limit` of them in one batch.
  struct Extra {
    std::uint64_t seq;
    std::string order;                // a shred order
    std::optional<Id> evicted;        // or an eviction
    std::optional<v1::KeyDrop> drop;  // or a re-key's deleted case key versions
  };
  std::vector<Extra> extras;
  const std::uint64_t upto = has_more ? last_seq : UINT64_MAX;
  if (auto ec = store.ScanShredded(after, upto, [&](std::uint64_t seq, std::string_view body) {
        extras.push_back({seq, std::string(body), std::nullopt, std::nullopt});
      }))
    return ec;
  const bool assigned = ScopeFor(who).kind == PullScope::Kind::kAssignedTo;
  // Key drops: to a device of the unit, those of the cases it may hold or held.
  error_code drop_ec;
  if (auto ec = store.ScanKeyDrops(
          after, upto,
          [&](std::uint64_t seq, const Id& case_id, teduh::AccessClass cls, std::uint32_t below) {
            if (drop_ec) return;
            if (assigned) {
              auto held = store.HeldCase(who.device_id, case_id);
              if (!held) {
                drop_ec = held.error();
                return;
              }
              auto mine = store.IsAssigned(case_id, who.user);
              if (!mine) {
                drop_ec = mine.error();
                return;
              }
              if (!*held && !*mine) return;
            }
            v1::KeyDrop d;
            d.set_case_id(std::string(core::AsBytes(case_id)));
            d.set_key_class(cls);
            d.set_below_version(below);
            extras.push_back({seq, {}, std::nullopt, std::move(d)});
          }))
    return ec;
  if (drop_ec) return drop_ec;
  if (assigned) {
    if (auto ec = store.ScanEvictions(who.device_id, after, upto,
                                      [&](std::uint64_t seq, const Id& case_id) {
                                        extras.push_back({seq, {}, case_id, std::nullopt});
                                      }))
      return ec;
  }
  std::sort(extras.begin(), extras.end(),
            [](const Extra& x, const Extra& y) { return x.seq < y.seq; });
  if (extras.size() > limit) {
    // Too many for one batch: it ends just before the first one left out,
    // and the rest (with any change after it) comes in the next batches.
    const std::uint64_t stop = extras[limit].seq - 1;
    extras.resize(limit);
    int keep = changes->changes_size();
    while (keep > 0 && changes->changes(keep - 1).seq() > stop) --keep;
    changes->mutable_changes()->DeleteSubrange(keep, changes->changes_size() - keep);
    txns.resize(static_cast<std::size_t>(keep));
    case_ids.resize(static_cast<std::size_t>(keep));
    has_more = true;
    last_seq = stop;
  }
  for (Extra& e : extras) {
    if (e.evicted) {
      changes->add_evicted(std::string(core::AsBytes(*e.evicted)));
    } else if (e.drop) {
      *changes->add_key_drops() = std::move(*e.drop);
    } else {
      teduh::keys::v1::ShredOrder o;
      if (!o.ParseFromString(e.order)) continue;
      *changes->add_shredded() = std::move(o);
    }
    last_seq = std::max(last_seq, e.seq);
  }
  changes->set_has_more(has_more);
  if (assigned) {
    // Evictions at or below the cursor the device sent were in a batch it
    // committed: the writer forgets them (only if there are any).
    bool received = false;
    if (auto ec = store.ScanEvictions(who.device_id, 0, after,
                                      [&](std::uint64_t, const Id&) { received = true; }))
      return ec;
    if (received) out->evictions_received_upto = after;
  }
  changes->set_last_seq(last_seq);
  if (assigned) {
    // A device that left a re-keyed case (it may still hold an unsent edit
    // of it) no longer pulls it, so its drop carries the case's current key
    // records: it re-seals the edit and can send it. They give it no content
    // it did not have.
    for (auto& d : *changes->mutable_key_drops()) {
      auto case_id = core::IdFromBytes(d.case_id());
      if (!case_id) continue;
      auto in_scope = store.IsAssigned(*case_id, who.user);
      if (!in_scope) return in_scope.error();
      if (*in_scope) continue;
      if (auto ec = store.ScanCaseValues(
              *case_id, [&](const FieldRow& f, std::string_view kind, std::uint64_t history_id) {
                if (history_id == 0 && kind == core::kCaseKeyKind && d.key_records_size() < 32)
                  FillPulledChange(d.add_key_records(), f, kind, *case_id, unit.unit_id);
                return true;
              }))
        return ec;
    }
  }

  // Which of these cases the device receives for the first time (ARCHITECTURE §2.4).
  std::unordered_set<Id, IdHash> seen;
  for (std::size_t i = 0; i < case_ids.size(); ++i) {
    if (!seen.insert(case_ids[i]).second) continue;
    auto holds = store.HoldsCase(who.device_id, case_ids[i]);
    if (!holds) return holds.error();
    if (!*holds) out->new_holdings.emplace_back(case_ids[i], changes->changes(i).seq());
  }
  return {};
}

error_code ListDevicesFor(Store& store, const Identity& who, std::string_view id_prefix,
                          Outcome* out) {
  auto device = store.FindDevice(who.device_id);
  if (!device) return device.error();
  if (!CheckActive(*device, out)) return {};
  if ((*device)->role != v1::ROLE_ADMIN) {
    SetError(out, v1::ERROR_CODE_FORBIDDEN, "Only admin devices list devices.", false);
    return {};
  }
  auto rows = store.ListDevices();
  if (!rows) return rows.error();
  auto holders = store.RootHolders();
  if (!holders) return holders.error();
  auto approvals = store.Approvals();
  if (!approvals) return approvals.error();
  auto gaps = store.RestoreGaps();
  if (!gaps) return gaps.error();
  // By device, so a unit of thousands is listed in n log n.
  std::map<Id, const RootHolderRow*> holder_of;
  for (const RootHolderRow& h : *holders) holder_of[h.device_id] = &h;
  std::map<Id, const std::string*> approval_of;
  for (const auto& [id, signature] : *approvals) approval_of[id] = &signature;
  std::multimap<Id, const RestoreGapRow*> gaps_of;
  for (const RestoreGapRow& gap : *gaps) gaps_of.emplace(gap.device_id, &gap);
  v1::DeviceList* list = out->reply.mutable_device_list();
  for (const DeviceRow& row : *rows) {
    if (!id_prefix.empty() && !core::ToHex(row.device_id).starts_with(id_prefix)) continue;
    std::optional<RevocationRow> revocation;
    if (row.state == v1::DEVICE_STATE_REVOKED) {
      auto r = store.FindRevocation(row.device_id);
      if (!r) return r.error();
      revocation = std::move(*r);
    }
    v1::DeviceInfo* info = list->add_devices();
    *info = ToDeviceInfo(row, revocation);
    if (auto h = holder_of.find(row.device_id); h != holder_of.end())
      info->set_root_key(h->second->since_ms > 0 ? "held" : "handed");
    if (auto a = approval_of.find(row.device_id); a != approval_of.end())
      info->set_approval(*a->second);
    for (auto [at, end] = gaps_of.equal_range(row.device_id); at != end; ++at) {
      const RestoreGapRow& gap = *at->second;
      auto resent = store.CountReceipts(row.device_id, gap.from_seq, gap.to_seq);
      if (!resent) return resent.error();
      info->set_restore_from(gap.from_seq);
      info->set_restore_to(gap.to_seq);
      info->set_restore_ms(gap.since_ms);
      info->set_resent(*resent);
    }
  }
  return {};
}

}  // namespace teduh::server
