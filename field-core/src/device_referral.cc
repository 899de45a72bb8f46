// Referrals (rujukan, DOMAIN-REPORT §1 and §8): the case API's rules, so that
// every front end enforces the same ones.
//
// Invariants:
//  1. A referral only moves forward: draft → checked → signed → sent →
//     confirmed, each step from the one before it (the status field merges
//     by MAX, so concurrent steps keep the further one).
//  2. Nothing is sent without the victim's recorded consent, nor, for a
//     child or a victim with a disability or of old age, without an officer
//     accompanying. Only a supervisor signs (the server checks it too).
#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "device_internal.h"
#include "teduh/case/v1/case.pb.h"
#include "teduh/core/codes.h"
#include "teduh/core/deadlines.h"
#include "teduh/core/device.h"
#include "teduh/core/roles.h"
#include "teduh/core/schema.h"

namespace teduh::core {
namespace {

namespace cw = teduh::casework::v1;
namespace pb = teduh::sync::v1;

std::string StatusName(cw::ReferralStatus s) {
  switch (s) {
    case cw::REFERRAL_STATUS_DRAFT:
      return "draft";
    case cw::REFERRAL_STATUS_CHECKED:
      return "checked";
    case cw::REFERRAL_STATUS_SIGNED:
      return "signed";
    case cw::REFERRAL_STATUS_SENT:
      return "sent";
    case cw::REFERRAL_STATUS_CONFIRMED:
      return "confirmed";
    default:
      return "unknown";
  }
}

// Lower case, without surrounding spaces.
std::string Clean(std::string_view s) { return internal::Lower(internal::Trim(s)); }

using internal::KindOf;

// One field of a Referral: its policy and single-field serialization.
template <typename Set>
std::pair<const FieldPolicy*, std::string> One(const RecordKind& kind, std::string_view name,
                                               Set set) {
  return internal::FieldOf<cw::Referral>(kind, name, set);
}

}  // namespace

Outcome<ReferralView> Device::LoadReferralLocked(const Id& referral_id) {
  auto rec = store_->GetRecord(referral_id);
  if (!rec) return rec.error();
  if (!*rec || (*rec)->kind != kReferralKind || !(*rec)->parent_id)
    return Fail(errc::not_found, Tr("no such referral on this device"));
  auto fields = store_->GetFields(referral_id);
  if (!fields) return fields.error();
  cw::Referral r;
  ReferralView v;
  for (const auto& f : *fields) {
    if (!f.sealed) r.MergeFromString(f.value);
    v.pending = v.pending || f.pending;
  }
  v.referral_id = referral_id;
  v.case_id = *(*rec)->parent_id;
  v.agency = r.agency();
  v.service = r.service();
  v.status = StatusName(r.status());
  v.consent = r.consent();
  v.accompanied = r.accompanied();
  v.consent_at = r.consent_at();
  v.created_at = r.created_at();
  v.sent_at = r.sent_at();
  v.confirmed_at = r.confirmed_at();
  v.created_by = r.created_by();
  v.signed_by = r.signed_by();
  v.disclosed_fields.assign(r.disclosed_fields().begin(), r.disclosed_fields().end());
  return v;
}

Outcome<Id> Device::AddReferral(std::string_view case_ref, std::string_view agency,
                                std::string_view service, bool consent,
                                const std::vector<std::string>& disclose, bool accompanied) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  const DeviceInfo me = InfoLocked();
  auto case_id = CaseToEditLocked(case_ref);
  if (!case_id) return case_id.error();
  const CodeEntry* a = CodesLocked().Find("agency", agency);
  if (a == nullptr || a->retired)
    return Fail(errc::bad_value,
                TrF("unknown agency '{}'; valid agencies: {}", agency.substr(0, 32),
                    CodesLocked().Choices("agency", LangCode(CurrentLang()))));
  const CodeEntry* s = CodesLocked().Find("referral_service", service);
  if (s == nullptr || s->retired)
    return Fail(errc::bad_value,
                TrF("unknown service '{}'; valid services: {}", service.substr(0, 32),
                    CodesLocked().Choices("referral_service", LangCode(CurrentLang()))));
  // Exactly which fields the letter discloses: names of the case's and its
  // persons' fields.
  const RecordKind& case_kind = KindOf(kCaseKind);
  const RecordKind& person_kind = KindOf(kPersonKind);
  std::vector<std::string> fields;
  for (const auto& name : disclose) {
    std::string n = Clean(name);
    if (n.empty()) continue;
    if (case_kind.FindFieldByName(n) == nullptr && person_kind.FindFieldByName(n) == nullptr) {
      std::string valid;
      for (const auto* k : {&case_kind, &person_kind})
        for (const auto& f : k->fields) valid += (valid.empty() ? "" : ", ") + f.name;
      return Fail(errc::bad_value,
                  TrF("unknown field '{}' to disclose; valid fields: {}", n.substr(0, 64), valid));
    }
    if (std::find(fields.begin(), fields.end(), n) == fields.end()) fields.push_back(n);
  }
  const RecordKind& kind = KindOf(kReferralKind);
  const std::int64_t now_s = NowMsLocked() / 1000;
  std::vector<PendingSet> sets;
  auto add = [&](std::pair<const FieldPolicy*, std::string> f) {
    sets.emplace_back(f.first, std::move(f.second));
  };
  add(One(kind, "agency", [&](cw::Referral& r) { r.set_agency(std::string(a->code)); }));
  add(One(kind, "service", [&](cw::Referral& r) { r.set_service(std::string(s->code)); }));
  add(One(kind, "status", [](cw::Referral& r) { r.set_status(cw::REFERRAL_STATUS_DRAFT); }));
  add(One(kind, "created_at", [&](cw::Referral& r) { r.set_created_at(now_s); }));
  add(One(kind, "created_by", [&](cw::Referral& r) { r.set_created_by(me.user); }));
  if (consent) {
    add(One(kind, "consent", [](cw::Referral& r) { r.set_consent(true); }));
    add(One(kind, "consent_at", [&](cw::Referral& r) { r.set_consent_at(now_s); }));
  }
  if (accompanied) add(One(kind, "accompanied", [](cw::Referral& r) { r.set_accompanied(true); }));
  if (!fields.empty()) {
    add(One(kind, "disclosed_fields", [&](cw::Referral& r) {
      for (const auto& f : fields) r.add_disclosed_fields(f);
    }));
  }
  const Id referral_id = NewId();
  auto r = store_->Edit(*hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    return WriteRecordFields(txn, referral_id, kReferralKind, *case_id, *case_id, std::move(sets));
  });
  if (!r) return r.error();
  return referral_id;
}

Outcome<ReferralView> Device::AdvanceReferral(std::string_view referral_ref,
                                              std::string_view action_text) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  auto id = ResolveRecordLocked(kReferralKind, referral_ref, "referral");
  if (!id) return id.error();
  auto current = LoadReferralLocked(*id);
  if (!current) return current.error();
  const DeviceInfo me = InfoLocked();
  const std::string action = Clean(action_text);
  const RecordKind& kind = KindOf(kReferralKind);
  const std::int64_t now_s = NowMsLocked() / 1000;
  const bool gone = current->status == "sent" || current->status == "confirmed";
  std::vector<PendingSet> sets;
  auto add = [&](std::pair<const FieldPolicy*, std::string> f) {
    sets.emplace_back(f.first, std::move(f.second));
  };
  auto step = [&](std::string_view from, cw::ReferralStatus to) -> Outcome<void> {
    if (current->status != from)
      return Fail(errc::invalid_argument, TrF("the referral is {}; it can be {} only when it is {}",
                                              current->status, StatusName(to), from));
    add(One(kind, "status", [&](cw::Referral& r) { r.set_status(to); }));
    return {};
  };
  if (action == "consent") {
    if (gone) return Fail(errc::invalid_argument, Tr("the referral was already sent"));
    add(One(kind, "consent", [](cw::Referral& r) { r.set_consent(true); }));
    add(One(kind, "consent_at", [&](cw::Referral& r) { r.set_consent_at(now_s); }));
  } else if (action == "accompany") {
    if (gone) return Fail(errc::invalid_argument, Tr("the referral was already sent"));
    add(One(kind, "accompanied", [](cw::Referral& r) { r.set_accompanied(true); }));
  } else if (action == "check") {
    if (auto r = step("draft", cw::REFERRAL_STATUS_CHECKED); !r) return r.error();
  } else if (action == "sign") {
    if (me.role != RoleName(pb::ROLE_SUPERVISOR))
      return Fail(errc::forbidden, Tr("only a supervisor signs a referral letter"));
    if (auto r = step("checked", cw::REFERRAL_STATUS_SIGNED); !r) return r.error();
    add(One(kind, "signed_by", [&](cw::Referral& r) { r.set_signed_by(me.user); }));
  } else if (action == "send") {
    // Invariant 2.
    if (!current->consent)
      return Fail(errc::invalid_argument,
                  Tr("the victim's consent is not recorded: ask her, then run teduh referral "
                     "consent, before sending"));
    if (!current->accompanied) {
      auto c = store_->GetFields(current->case_id);
      if (!c) return c.error();
      cw::Case cs;
      for (const auto& f : *c)
        if (!f.sealed) cs.MergeFromString(f.value);
      std::vector<cw::Person> victims;
      auto persons = store_->ListRecords(kPersonKind, current->case_id);
      if (!persons) return persons.error();
      for (const auto& p : *persons) {
        auto pf = store_->GetFields(p.record_id);
        if (!pf) return pf.error();
        cw::Person person;
        for (const auto& f : *pf)
          if (!f.sealed) person.MergeFromString(f.value);
        if (person.role() == cw::PERSON_ROLE_VICTIM) victims.push_back(std::move(person));
      }
      const bool vulnerable = VulnerableVictim(cs, victims);
      if (vulnerable)
        return Fail(errc::invalid_argument,
                    Tr("the victim is a child or vulnerable: an officer must accompany the "
                       "referral (teduh referral accompany) before it is sent"));
    }
    if (auto r = step("signed", cw::REFERRAL_STATUS_SENT); !r) return r.error();
    add(One(kind, "sent_at", [&](cw::Referral& r) { r.set_sent_at(now_s); }));
  } else if (action == "confirm") {
    if (auto r = step("sent", cw::REFERRAL_STATUS_CONFIRMED); !r) return r.error();
    add(One(kind, "confirmed_at", [&](cw::Referral& r) { r.set_confirmed_at(now_s); }));
  } else {
    return Fail(errc::invalid_argument,
                TrF("unknown step '{}'; steps: consent, accompany, check, sign, send, confirm",
                    action.substr(0, 32)));
  }
  auto r = store_->Edit(*hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    return WriteRecordFields(txn, *id, kReferralKind, current->case_id, current->case_id,
                             std::move(sets));
  });
  if (!r) return r.error();
  return LoadReferralLocked(*id);
}

Outcome<std::vector<ReferralView>> Device::ListReferrals(std::string_view case_ref) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  auto case_id = ResolveCaseLocked(case_ref);
  if (!case_id) return case_id.error();
  auto recs = store_->ListRecords(kReferralKind, *case_id);
  if (!recs) return recs.error();
  std::vector<ReferralView> out;
  for (const auto& rec : *recs) {
    auto v = LoadReferralLocked(rec.record_id);
    if (!v) return v.error();
    out.push_back(std::move(*v));
  }
  std::stable_sort(out.begin(), out.end(), [](const ReferralView& a, const ReferralView& b) {
    return a.created_at < b.created_at;
  });
  return out;
}

}  // namespace teduh::core
