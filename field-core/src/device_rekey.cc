// Re-keying on the device (PROTOCOL §8d): the admin device re-encrypts the
// cases a lost device held, and every device applies a re-key's key drops
// (re-sealing its unsent edits first).
//
// Invariants:
//  1. A plaintext opened for re-encryption lives only in a string that is
//     wiped right after it is sealed again.
//  2. A value is re-sealed with exactly the context it was sealed with
//     (record, kind, field, writer stamp, class); only the key version and
//     the key change.
//  3. A device deletes an old case key version only after every unsent edit
//     under it was re-sealed under the newest version it holds.
#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "teduh/case/v1/case.pb.h"
#include "teduh/core/device.h"
#include "teduh/core/frame_codec.h"
#include "teduh/core/roles.h"
#include "teduh/core/schema.h"
#include "teduh/core/sealing.h"
#include "teduh/core/sync_client.h"
#include "teduh/keys/v1/keys.pb.h"

namespace teduh::core {
namespace {

namespace pb = teduh::sync::v1;

// The unwrapped keys of one case: every record of each (class, version)
// (two devices offline may have made the same version; AEAD tells which).
struct UnwrappedKeys {
  std::map<std::pair<int, std::uint32_t>, std::vector<crypto::SecureBuffer>> keys;

  // Opens a value with whichever key of its version verifies it and hands
  // the plaintext to `use`; it is wiped right after (invariant 1). False if
  // no key opens it; `failed` holds an error `use` returned.
  bool Open(const SealContext& ctx, std::string_view sealed,
            const std::function<Outcome<void>(const std::string&)>& use, Failure* failed) const {
    auto it = keys.find({NormalClass(ctx.key_class), ctx.key_version});
    if (it == keys.end()) return false;
    for (const auto& k : it->second) {
      auto plain = OpenField(k, ctx, sealed);
      if (!plain) continue;
      auto r = use(*plain);
      crypto::Wipe(*plain);
      if (!r) *failed = r.error();
      return true;
    }
    return false;
  }
};

// Bytes of a RekeyCase frame apart from its reseals.
constexpr std::size_t kFrameOverhead = 4096;

}  // namespace

Outcome<RekeyReport> Device::RekeyCases(
    std::string_view held_by_ref, bool all,
    const std::function<void(std::size_t done, std::size_t total)>& progress) {
  RekeyReport report;
  std::unique_ptr<SyncClient> client;
  std::string held_by;
  if (all) {
    {
      std::lock_guard g(mu_);
      if (auto r = RequireRootAdminLocked("re-key cases"); !r) return r.error();
    }
    auto c = ConnectOnline();
    if (!c) return c.error();
    client = std::move(*c);
  } else {
    auto found = ConnectForDevice(held_by_ref, "re-key the cases of");
    if (!found) return found.error();
    client = std::move(found->client);
    held_by = found->device.device_id();
    if (auto id = IdFromBytes(held_by)) report.held_by = *id;
  }

  // The cases, page by page.
  std::vector<std::string> cases;
  pb::RekeyList list;
  list.set_held_by(held_by);
  list.set_all(all);
  list.set_limit(1000);
  for (;;) {
    auto page = client->RekeyList(list);
    if (!page) return page.error();
    for (auto& c : *page->mutable_case_ids()) cases.push_back(std::move(c));
    if (!page->has_more() || page->case_ids().empty()) break;
    list.set_after_case(cases.back());
  }
  if (progress) progress(0, cases.size());

  const std::size_t budget = client->limits().max_frame_bytes > 2 * kFrameOverhead
                                 ? client->limits().max_frame_bytes - kFrameOverhead
                                 : kFrameOverhead;
  const std::size_t max_count = std::max<std::size_t>(1, client->limits().max_pull_changes);
  std::vector<std::string> failures;
  for (std::size_t n = 0; n < cases.size(); ++n) {
    auto case_id = IdFromBytes(cases[n]);
    if (!case_id) return Fail(errc::malformed_frame, Tr("the server sent a malformed case id"));
    const std::string short_id = ToHex(*case_id).substr(0, 8);
    bool finished = false, had_keys = true, unreadable = false;
    std::string problem;
    // Each round re-encrypts what the fetch returned; edits that arrive
    // meanwhile under the old version are fetched again by the next round.
    // A round without progress counts against the limit; one that
    // re-encrypted something (a large case in pages) does not.
    for (int idle = 0; idle < 8 && !finished && !unreadable;) {
      auto set = client->RekeyFetch(*case_id, held_by);
      if (!set) return set.error();
      if (set->keys().empty()) {
        had_keys = false;  // nothing sealed can exist without a case key
        break;
      }
      pb::RekeyCase frame;
      frame.set_case_id(cases[n]);
      frame.set_held_by(held_by);
      std::vector<pb::Reseal> reseals;
      {
        std::lock_guard g(mu_);
        if (auto r = PrepareRekeyLocked(*case_id, *set, &frame, &reseals, &unreadable, &problem);
            !r)
          return r.error();
      }
      // Send in frames; the last one of a complete fetch finishes the case.
      std::size_t i = 0;
      bool progressed = false;
      do {
        std::size_t bytes = frame.ByteSizeLong();
        while (i < reseals.size() && frame.reseals_size() < static_cast<int>(max_count) &&
               (frame.reseals_size() == 0 || bytes + reseals[i].ByteSizeLong() + 16 < budget)) {
          bytes += reseals[i].ByteSizeLong() + 16;
          *frame.add_reseals() = std::move(reseals[i++]);
        }
        frame.set_finish(i == reseals.size() && !set->has_more() && !unreadable);
        report.bytes_sent += frame.ByteSizeLong();
        auto result = client->Rekey(frame);
        if (!result) return result.error();
        report.values += result->resealed();
        progressed |= result->resealed() > 0;
        if (result->finished()) {
          finished = true;
          report.keys_dropped += result->keys_dropped();
        }
        frame.clear_new_keys();
        frame.clear_reseals();
      } while (i < reseals.size());
      idle = progressed ? 0 : idle + 1;
    }
    if (!had_keys) {
      ++report.skipped;
    } else if (finished) {
      ++report.cases;
    } else if (unreadable) {
      failures.push_back(TrF("case {}: {}", short_id, problem));
    } else {
      failures.push_back(TrF("case {}: edits kept arriving; run the re-key again", short_id));
    }
    if (progress) progress(n + 1, cases.size());
  }
  client->Close();
  if (!failures.empty()) {
    std::string all_failures;
    for (const auto& f : failures) all_failures += (all_failures.empty() ? "" : "; ") + f;
    return Fail(errc::integrity, TrF("{} of {} cases re-keyed; not re-keyed: {}", report.cases,
                                     cases.size(), all_failures));
  }
  return report;
}

Outcome<void> Device::PrepareRekeyLocked(const Id& case_id, const pb::RekeySet& set,
                                         pb::RekeyCase* frame, std::vector<pb::Reseal>* reseals,
                                         bool* unreadable, std::string* problem) {
  if (auto r = CheckOpen(); !r) return r.error();
  // Unwrap every key record; make the target version of each class
  // (or take the one an interrupted re-key made).
  UnwrappedKeys old_keys;
  std::map<int, std::pair<std::uint32_t, crypto::SecureBuffer>> targets;
  std::map<int, std::uint32_t> top;
  // A record this device cannot open (incomplete, under an epoch it lacks,
  // or altered) is skipped: a value that needs it stays unreadable, and the
  // case is reported, not the whole run stopped.
  for (const auto& k : set.keys()) {
    const teduh::AccessClass cls = NormalClass(k.key_class());
    if (k.version() == 0 || k.epoch() == 0 || k.wrapped().empty()) continue;  // incomplete
    top[cls] = std::max(top[cls], k.version());
    const crypto::SecureBuffer* class_key = vault_->class_key(cls, k.epoch());
    if (class_key == nullptr) {
      if (problem->empty())
        *problem =
            TrF("this device does not hold epoch {} of the {} key (sync it, then re-key "
                "again)",
                k.epoch(), ClassName(cls));
      continue;
    }
    auto ck = UnwrapCaseKey(*class_key, case_id, cls, k.version(), k.epoch(), k.wrapped());
    if (!ck) {
      if (problem->empty()) *problem = Tr("a key record does not verify (altered or damaged)");
      continue;
    }
    bool is_target = false;
    for (const auto& t : set.targets()) is_target |= t.record_id() == k.record_id();
    if (is_target) {
      targets[cls] = {k.version(), std::move(*ck)};
    } else {
      old_keys.keys[{cls, k.version()}].push_back(std::move(*ck));
    }
  }
  for (const auto& [cls_int, version] : top) {
    if (targets.count(cls_int)) continue;
    const auto cls = static_cast<teduh::AccessClass>(cls_int);
    auto epoch = WriteEpochLocked(cls);
    if (!epoch) return Fail(errc::key_missing, Tr("this device holds no class key to wrap under"));
    auto ck = crypto::RandomSecret(crypto::kAeadKeyBytes);
    if (!ck) return Fail(ck.error(), Tr("cannot make a case key"));
    auto wrapped =
        WrapCaseKey(*vault_->class_key(cls, *epoch), case_id, cls, version + 1, *epoch, *ck);
    if (!wrapped) return Fail(wrapped.error(), Tr("cannot wrap the case key"));
    pb::CaseKeyInfo* nk = frame->add_new_keys();
    nk->set_record_id(std::string(AsBytes(NewId())));
    nk->set_key_class(cls);
    nk->set_version(version + 1);
    nk->set_epoch(*epoch);
    nk->set_wrapped(std::move(*wrapped));
    targets[cls_int] = {version + 1, std::move(*ck)};
  }
  // Invariants 1 and 2.
  for (const auto& v : set.values()) {
    const pb::SealedRef& ref = v.ref();
    SealContext ctx;
    auto record = IdFromBytes(ref.record_id());
    auto writer = IdFromBytes(v.writer_device());
    if (!record || !writer) return Fail(errc::malformed_frame, Tr("a sealed value lacks its ids"));
    ctx.record_id = *record;
    ctx.kind = v.kind();
    ctx.field = ref.field();
    ctx.writer_hlc = v.writer_hlc();
    ctx.writer_device = *writer;
    ctx.key_class = NormalClass(v.key_class());
    ctx.key_version = ref.key_version();
    auto target = targets.find(ctx.key_class);
    Failure failed;
    const bool opened = target != targets.end() &&
                        old_keys.Open(
                            ctx, v.value(),
                            [&](const std::string& plain) -> Outcome<void> {
                              SealContext to = ctx;
                              to.key_version = target->second.first;
                              auto sealed = SealField(target->second.second, to, plain);
                              if (!sealed)
                                return Fail(sealed.error(), Tr("cannot seal a value again"));
                              pb::Reseal& r = reseals->emplace_back();
                              *r.mutable_ref() = ref;
                              r.set_value(std::move(*sealed));
                              return {};
                            },
                            &failed);
    if (failed.code) return failed;
    if (!opened) {
      *unreadable = true;  // damaged, altered, or its key did not open: never re-keyed, reported
      if (problem->empty()) *problem = Tr("a sealed value does not open with its case key");
    }
  }
  return {};
}

Outcome<std::size_t> Device::ResealCaseLocked(const Id& case_id) {
  auto pending = store_->PendingChanges(SIZE_MAX, 0, case_id);
  if (!pending) return pending.error();
  std::map<int, std::optional<std::uint32_t>> newest;  // per class: a version whose key unwraps
  std::vector<pb::FieldChange> resealed;
  for (auto& ch : *pending) {
    if (!ch.sealed()) continue;
    const teduh::AccessClass cls = NormalClass(ch.key_class());
    auto known = newest.find(cls);
    if (known == newest.end()) {
      auto latest = LatestCaseKeyVersion(case_id, cls);
      if (!latest) return latest.error();
      std::optional<std::uint32_t> usable;
      if (*latest && CaseKeyFor(case_id, cls, **latest)) usable = **latest;
      known = newest.emplace(cls, usable).first;
    }
    if (!known->second || *known->second <= ch.key_version()) continue;
    auto record = IdFromBytes(ch.record_id());
    auto writer = IdFromBytes(ch.stamp().device_id());
    if (!record || !writer) continue;
    SealContext ctx;
    ctx.record_id = *record;
    ctx.kind = ch.kind();
    ctx.field = ch.field();
    ctx.writer_hlc = ch.origin_hlc() != 0 ? ch.origin_hlc() : ch.stamp().hlc();
    ctx.writer_device = *writer;
    ctx.key_class = cls;
    ctx.key_version = ch.key_version();
    auto old_key = CaseKeyFor(case_id, cls, ch.key_version());
    if (!old_key) continue;  // not held here: left as it is
    auto plain = OpenField(**old_key, ctx, ch.value());
    if (!plain) continue;
    // CaseKeyFor may reuse old_key's buffer; the plaintext is already out.
    auto new_key = CaseKeyFor(case_id, cls, *known->second);
    if (!new_key) {
      crypto::Wipe(*plain);
      return new_key.error();
    }
    ctx.key_version = *known->second;
    auto sealed = SealField(**new_key, ctx, *plain);
    crypto::Wipe(*plain);
    if (!sealed) return Fail(sealed.error(), Tr("cannot seal an edit again"));
    ch.set_value(std::move(*sealed));
    ch.set_key_version(*known->second);
    resealed.push_back(std::move(ch));
  }
  if (!resealed.empty())
    if (auto r = store_->ResealPending(resealed); !r) return r.error();
  return resealed.size();
}

Outcome<bool> Device::ApplyKeyDropLocked(const pb::KeyDrop& drop, std::size_t* resealed_count) {
  auto case_id = IdFromBytes(drop.case_id());
  if (!case_id) return false;
  const teduh::AccessClass cls = NormalClass(drop.key_class());
  const std::uint32_t below = drop.below_version();
  // Drops are not signed: a device deletes a version only when it holds a
  // newer one that unwraps and nothing it stores still needs the old one
  // (invariant 3), so no server can make it lose what it holds.
  auto recs = store_->ListRecords(kCaseKeyKind, *case_id);
  if (!recs) return recs.error();
  if (recs->empty()) return false;  // not a case of this device
  auto held = store_->GetRecord(*case_id);
  if (!held) return held.error();
  if (!*held && InfoLocked().role != RoleName(pb::ROLE_ADMIN)) {
    // Key records sent for an edit of a case this device has since let go
    // (PROTOCOL §8d): nothing of the case is left here, nor are its keys.
    auto pending = store_->CaseHasPending(*case_id);
    if (!pending) return pending.error();
    if (*pending) return false;
    std::vector<Id> all;
    for (const auto& r : *recs) all.push_back(r.record_id);
    if (auto r = store_->DeleteRecords(all); !r) return r.error();
    DropCaseKeysLocked(*case_id);
    return false;
  }
  auto latest = LatestCaseKeyVersion(*case_id, cls);
  if (!latest) return latest.error();
  if (!*latest || **latest < below || !CaseKeyFor(*case_id, cls, **latest)) return false;
  auto resealed = ResealCaseLocked(*case_id);
  if (!resealed) return resealed.error();
  *resealed_count += *resealed;
  auto stored_below = store_->CaseHasSealedBelow(*case_id, cls, below);
  if (!stored_below) return stored_below.error();
  if (*stored_below) return false;
  auto pending = store_->PendingChanges(SIZE_MAX, 0, *case_id);
  if (!pending) return pending.error();
  for (const auto& ch : *pending)
    if (ch.sealed() && NormalClass(ch.key_class()) == cls && ch.key_version() < below) return false;
  auto conflicts = store_->ListRecords(kConflictKind, *case_id);
  if (!conflicts) return conflicts.error();
  for (const auto& c : *conflicts) {
    auto detection =
        store_->GetField(c.record_id, teduh::casework::v1::Conflict::kDetectionFieldNumber);
    if (!detection) return detection.error();
    if (!*detection) continue;
    teduh::casework::v1::Conflict conflict;
    if (!conflict.ParseFromString((*detection)->value)) continue;
    for (const auto* side : {&conflict.detection().kept(), &conflict.detection().other()})
      if (side->sealed() && NormalClass(side->key_class()) == cls && side->key_version() < below)
        return false;
  }
  // Then the old versions go.
  std::vector<Id> gone;
  for (const auto& r : *recs) {
    auto fields = store_->GetFields(r.record_id);
    if (!fields) return fields.error();
    teduh::keys::v1::CaseKey ck;
    for (const auto& f : *fields)
      if (!f.sealed) ck.MergeFromString(f.value);
    if (NormalClass(ck.key_class()) == cls && ck.version() < below) gone.push_back(r.record_id);
    crypto::Wipe(*ck.mutable_wrapped());
  }
  if (gone.empty()) return false;
  if (auto r = store_->DeleteRecords(gone); !r) return r.error();
  for (auto it = case_keys_.begin(); it != case_keys_.end();) {
    const auto& [c, k, v] = it->first;
    if (c == *case_id && k == int{cls} && v < below) {
      it = case_keys_.erase(it);  // SecureBuffer wipes on release
    } else {
      ++it;
    }
  }
  std::erase_if(case_key_order_, [&](const CaseKeyId& k) {
    return std::get<0>(k) == *case_id && std::get<1>(k) == int{cls} && std::get<2>(k) < below;
  });
  return true;
}

}  // namespace teduh::core
