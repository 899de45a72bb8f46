// Assessments, services delivered and reopening (issue 5; DOMAIN-REPORT §1.5,
// §2.1, §4.6, §4.11): the case API's rules, so every front end enforces the
// same ones.
//
// Invariants:
//  1. Assessments and services delivered are append-only records: a dated
//     statement of what was assessed or done, never edited (the schema
//     makes every field write-once; the server refuses a second value).
//  2. An assessment and the case fields it sets (risk_level, needs,
//     risk_rationale, safety_plan) are written in one transaction, so the
//     deadline board never sees one without the other.
//  3. Only a closed case (TERMINASI) is reopened, and only by ReopenCase: a
//     new episode (episode + 1, written before the stage so its stamp is
//     the lower), the stage back to PENGADUAN, the closure cleared. Stage,
//     closure reason, closing time and checklist are per-episode fields: the
//     server lets a concurrent edit from the closed episode lose to the new
//     one (core::EpisodeOrder), keeping it in history.
//  4. Sealed text (rationale, safety plan, notes) lives in a PendingSet
//     only until WriteRecordFields seals it; every other copy is wiped.
#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "device_internal.h"
#include "teduh/case/v1/case.pb.h"
#include "teduh/core/deadlines.h"
#include "teduh/core/device.h"
#include "teduh/core/roles.h"
#include "teduh/core/schema.h"

namespace teduh::core {
namespace {

namespace cw = teduh::casework::v1;
namespace pb = teduh::sync::v1;

using internal::FieldOf;
using internal::KindOf;

// An enum value as the user typed it; `what` names it in the error when the
// text is empty ("give the risk level: ...").
Outcome<int> ParseRequired(const google::protobuf::EnumDescriptor& e, std::string_view text,
                           std::string_view what) {
  std::string why;
  const std::string clean = internal::Lower(internal::Trim(text));
  auto v = clean.empty() ? result<int>(0) : ParseEnumValue(e, clean, &why);
  if (!v || *v == 0) {
    if (why.empty()) {
      std::string valid;
      for (int i = 1; i < e.value_count(); ++i)
        valid += (valid.empty() ? "" : ", ") + EnumValueLabel(*e.value(i), CurrentLang());
      why = TrF("give the {}: {}", what, valid);
    }
    return Fail(errc::bad_value, why);
  }
  return *v;
}

// The string of a rendered field, or "" (not set or not readable).
std::string Text(const FieldView& f) {
  return f.value.is_string() ? f.value.get<std::string>() : std::string();
}

// A rendered time field's Unix seconds, or 0.
std::int64_t Seconds(const FieldView& f) {
  return f.value.is_number() ? f.value.get<std::int64_t>() : 0;
}

// A sealed text out of its rendered field, which is wiped: the text when
// readable, else nullopt with `readability` saying why.
std::optional<std::string> TakeSealed(FieldView& f, Readability* readability) {
  std::optional<std::string> out;
  if (f.readability == Readability::kReadable)
    out = Text(f);
  else
    *readability = f.readability;
  crypto::Wipe(f.display);
  if (f.value.is_string()) crypto::Wipe(f.value.get_ref<std::string&>());
  return out;
}

// `corrects` has one number in every append-only record that has it.
constexpr std::uint32_t kCorrectsField = cw::ServiceDelivered::kCorrectsFieldNumber;
static_assert(cw::Assessment::kCorrectsFieldNumber == kCorrectsField);

// A rendered id field (bytes, shown as hex), or nullopt.
std::optional<Id> IdOf(const FieldView& f) {
  if (!f.value.is_string()) return std::nullopt;
  auto id = IdFromHex(f.value.get<std::string>());
  return id ? std::optional<Id>(*id) : std::nullopt;
}

// Marks each record that a later one corrects (append-only records are
// corrected by a new record naming the old one).
template <typename View>
void MarkCorrected(std::vector<View>& views, Id View::*id) {
  for (const View& later : views) {
    if (!later.corrects) continue;
    for (View& earlier : views)
      if (earlier.*id == *later.corrects && !earlier.corrected_by) earlier.corrected_by = later.*id;
  }
}

}  // namespace

std::vector<Device::PendingSet> Device::NoteSets(int note_kind, std::string_view text) {
  const RecordKind& nk = KindOf(kNoteKind);
  const std::int64_t now = NowMsLocked() / 1000;
  const std::string me = InfoLocked().user;
  std::vector<PendingSet> sets;
  auto add = [&](std::pair<const FieldPolicy*, std::string> f) {
    sets.emplace_back(f.first, std::move(f.second));
  };
  add(FieldOf<cw::Note>(nk, "kind",
                        [&](cw::Note& n) { n.set_kind(static_cast<cw::NoteKind>(note_kind)); }));
  add(FieldOf<cw::Note>(nk, "author", [&](cw::Note& n) { n.set_author(me); }));
  add(FieldOf<cw::Note>(nk, "written_at", [&](cw::Note& n) { n.set_written_at(now); }));
  cw::Note body;
  body.set_body(std::string(text));
  sets.emplace_back(nk.FindFieldByName("body"), body.SerializeAsString());
  crypto::Wipe(*body.mutable_body());
  return sets;
}

Outcome<std::optional<Id>> Device::CorrectedRecordLocked(std::string_view kind,
                                                         std::string_view ref, const Id& case_id,
                                                         std::string_view noun) {
  if (internal::Trim(ref).empty()) return std::optional<Id>();
  auto id = ResolveRecordLocked(kind, ref, noun);
  if (!id) return id.error();
  auto rec = store_->GetRecord(*id);
  if (!rec) return rec.error();
  if (!*rec || (*rec)->parent_id != case_id)
    return Fail(errc::invalid_argument,
                Tr("a record corrects only an earlier one of its own case"));
  // One correction per record: a second would leave two versions counted.
  auto siblings = store_->ListRecords(kind, case_id);
  if (!siblings) return siblings.error();
  const std::string target(AsBytes(*id));
  for (const auto& s : *siblings) {
    auto fields = store_->GetFields(s.record_id);
    if (!fields) return fields.error();
    for (auto& f : *fields) {
      if (f.sealed || f.field != kCorrectsField) continue;
      cw::ServiceDelivered m;  // `corrects` is the same field in both kinds
      if (m.ParseFromString(f.value) && m.corrects() == target)
        return Fail(errc::invalid_argument,
                    TrF("{} was already corrected by {}: correct that one instead",
                        ToHex(*id).substr(0, 8), ToHex(s.record_id).substr(0, 8)));
    }
  }
  return std::optional<Id>(*id);
}

Outcome<Id> Device::AddAssessment(std::string_view case_ref, std::string_view risk_text,
                                  const std::vector<std::string>& need_texts,
                                  std::string_view rationale, std::string_view safety_plan,
                                  const AssessmentDetails& details) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  const DeviceInfo me = InfoLocked();
  auto case_id = CaseToEditLocked(case_ref);
  if (!case_id) return case_id.error();
  auto risk = ParseRequired(*cw::RiskLevel_descriptor(), risk_text, Tr("risk level"));
  if (!risk) return risk.error();
  int kind = cw::ASSESSMENT_KIND_INITIAL;
  if (!internal::Trim(details.kind).empty()) {
    auto k =
        ParseRequired(*cw::AssessmentKind_descriptor(), details.kind, Tr("kind of assessment"));
    if (!k) return k.error();
    kind = *k;
  }
  const auto role = ParseRole(me.role);
  // The psychologist assesses psychologically (DOMAIN-REPORT §1.5); a
  // diagnosis is clinical, like session notes.
  if (kind == cw::ASSESSMENT_KIND_PSYCHOLOGICAL && (!role || *role != Role::ROLE_PSIKOLOG))
    return Fail(errc::forbidden, Tr("only a psychologist records a psychological assessment"));
  if ((!details.diagnosis.empty() || !details.recommendations.empty()) &&
      (!role || !MayHoldClass(*role, teduh::ACCESS_CLASS_CLINICAL)))
    return Fail(errc::forbidden, Tr("a diagnosis and its recommendations are clinical: only a "
                                    "counsellor or a psychologist records them"));
  auto corrects = CorrectedRecordLocked(kAssessmentKind, details.corrects, *case_id, "assessment");
  if (!corrects) return corrects.error();
  std::vector<cw::Need> needs;
  for (const auto& t : need_texts) {
    if (internal::Trim(t).empty()) continue;
    auto n = ParseRequired(*cw::Need_descriptor(), t, Tr("need"));
    if (!n) return n.error();
    if (std::find(needs.begin(), needs.end(), *n) == needs.end())
      needs.push_back(static_cast<cw::Need>(*n));
  }
  cw::Case now_case;
  if (auto l = LoadOpenLocked(*case_id, &now_case); !l) return l.error();
  if (now_case.stage() == cw::STAGE_TERMINASI)
    return Fail(errc::invalid_argument,
                Tr("the case is closed: reopen it first (teduh case reopen CASE --reason ...)"));

  const std::int64_t now = NowMsLocked() / 1000;
  const auto level = static_cast<cw::RiskLevel>(*risk);
  const RecordKind& ak = KindOf(kAssessmentKind);
  const RecordKind& ck = KindOf(kCaseKind);
  std::vector<PendingSet> assessment, on_case;
  auto add = [](std::vector<PendingSet>& to, std::pair<const FieldPolicy*, std::string> f) {
    to.emplace_back(f.first, std::move(f.second));
  };
  add(assessment, FieldOf<cw::Assessment>(ak, "assessed_at",
                                          [&](cw::Assessment& a) { a.set_assessed_at(now); }));
  add(assessment, FieldOf<cw::Assessment>(ak, "assessed_by",
                                          [&](cw::Assessment& a) { a.set_assessed_by(me.user); }));
  add(assessment, FieldOf<cw::Assessment>(ak, "risk_level",
                                          [&](cw::Assessment& a) { a.set_risk_level(level); }));
  add(assessment, FieldOf<cw::Assessment>(ak, "kind", [&](cw::Assessment& a) {
        a.set_kind(static_cast<cw::AssessmentKind>(kind));
      }));
  if (*corrects)
    add(assessment, FieldOf<cw::Assessment>(ak, "corrects", [&](cw::Assessment& a) {
          a.set_corrects(std::string(AsBytes(**corrects)));
        }));
  add(on_case, FieldOf<cw::Case>(ck, "risk_level", [&](cw::Case& c) { c.set_risk_level(level); }));
  if (!needs.empty()) {
    add(assessment, FieldOf<cw::Assessment>(ak, "needs", [&](cw::Assessment& a) {
          for (auto n : needs) a.add_needs(n);
        }));
    add(on_case, FieldOf<cw::Case>(ck, "needs", [&](cw::Case& c) {
          for (auto n : needs) c.add_needs(n);
        }));
  }
  // Sealed text: once for the assessment, once for the case (invariant 4).
  if (!rationale.empty()) {
    cw::Assessment a;
    a.set_rationale(std::string(rationale));
    assessment.emplace_back(ak.FindFieldByName("rationale"), a.SerializeAsString());
    crypto::Wipe(*a.mutable_rationale());
    cw::Case c;
    c.set_risk_rationale(std::string(rationale));
    on_case.emplace_back(ck.FindFieldByName("risk_rationale"), c.SerializeAsString());
    crypto::Wipe(*c.mutable_risk_rationale());
  }
  // The assessment's own sealed texts (not copied to the case).
  for (auto [name, text] :
       {std::pair{"condition", details.condition}, std::pair{"diagnosis", details.diagnosis},
        std::pair{"recommendations", details.recommendations}}) {
    if (text.empty()) continue;
    const FieldPolicy* f = ak.FindFieldByName(name);
    cw::Assessment a;
    std::string* s = f->number == cw::Assessment::kConditionFieldNumber ? a.mutable_condition()
                     : f->number == cw::Assessment::kDiagnosisFieldNumber
                         ? a.mutable_diagnosis()
                         : a.mutable_recommendations();
    s->assign(text);
    assessment.emplace_back(f, a.SerializeAsString());
    crypto::Wipe(*s);
  }
  if (!safety_plan.empty()) {
    cw::Assessment a;
    a.set_safety_plan(std::string(safety_plan));
    assessment.emplace_back(ak.FindFieldByName("safety_plan"), a.SerializeAsString());
    crypto::Wipe(*a.mutable_safety_plan());
    cw::Case c;
    c.set_safety_plan(std::string(safety_plan));
    on_case.emplace_back(ck.FindFieldByName("safety_plan"), c.SerializeAsString());
    crypto::Wipe(*c.mutable_safety_plan());
  }
  const Id assessment_id = NewId();
  auto r = store_->Edit(*hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    if (auto w = WriteRecordFields(txn, assessment_id, kAssessmentKind, *case_id, *case_id,
                                   std::move(assessment));
        !w)
      return w;
    return WriteRecordFields(txn, *case_id, kCaseKind, std::nullopt, *case_id, std::move(on_case));
  });
  for (auto& s : assessment) crypto::Wipe(s.value);
  for (auto& s : on_case) crypto::Wipe(s.value);
  if (!r) return r.error();
  return assessment_id;
}

Outcome<Id> Device::AddService(std::string_view case_ref, std::string_view service_text,
                               std::string_view accompaniment_text, std::string_view note,
                               const ServiceDetails& details) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  const DeviceInfo me = InfoLocked();
  auto case_id = CaseToEditLocked(case_ref);
  if (!case_id) return case_id.error();
  auto service = ParseRequired(*cw::UnitService_descriptor(), service_text, Tr("service"));
  if (!service) return service.error();
  const bool accompaniment = *service == cw::UNIT_SERVICE_ACCOMPANIMENT;
  int kind_of = 0;
  if (accompaniment) {
    auto k = ParseRequired(*cw::Accompaniment_descriptor(), accompaniment_text,
                           Tr("kind of accompaniment (--subtype)"));
    if (!k) return k.error();
    kind_of = *k;
  } else if (!internal::Trim(accompaniment_text).empty()) {
    return Fail(errc::invalid_argument,
                Tr("only accompaniment has a kind (legal, psychological, social, medical)"));
  }
  const CodeEntry* activity = nullptr;
  if (!internal::Trim(details.activity).empty()) {
    activity = CodesLocked().Find("service_activity", details.activity);
    if (activity == nullptr || activity->retired)
      return Fail(errc::bad_value,
                  TrF("unknown activity '{}'; valid activities: {}", details.activity.substr(0, 40),
                      CodesLocked().Choices("service_activity", LangCode(CurrentLang()))));
  }
  auto corrects =
      CorrectedRecordLocked(kServiceDeliveredKind, details.corrects, *case_id, "service");
  if (!corrects) return corrects.error();
  // Read before any plaintext is held: a closed case takes no new service
  // (a shelter stay begun on it would come due, overdue, at a reopen).
  cw::Case on_file;
  if (auto l = LoadOpenLocked(*case_id, &on_file); !l) return l.error();
  if (on_file.stage() == cw::STAGE_TERMINASI)
    return Fail(errc::invalid_argument,
                Tr("the case is closed: reopen it first (teduh case reopen) to record a service"));
  const std::int64_t now = NowMsLocked() / 1000;
  const RecordKind& sk = KindOf(kServiceDeliveredKind);
  std::vector<PendingSet> sets;
  auto add = [&](std::pair<const FieldPolicy*, std::string> f) {
    sets.emplace_back(f.first, std::move(f.second));
  };
  add(FieldOf<cw::ServiceDelivered>(sk, "service", [&](cw::ServiceDelivered& s) {
    s.set_service(static_cast<cw::UnitService>(*service));
  }));
  if (accompaniment)
    add(FieldOf<cw::ServiceDelivered>(sk, "accompaniment", [&](cw::ServiceDelivered& s) {
      s.set_accompaniment(static_cast<cw::Accompaniment>(kind_of));
    }));
  add(FieldOf<cw::ServiceDelivered>(sk, "delivered_at",
                                    [&](cw::ServiceDelivered& s) { s.set_delivered_at(now); }));
  if (activity != nullptr)
    add(FieldOf<cw::ServiceDelivered>(
        sk, "activity", [&](cw::ServiceDelivered& s) { s.set_activity(activity->code); }));
  if (*corrects)
    add(FieldOf<cw::ServiceDelivered>(sk, "corrects", [&](cw::ServiceDelivered& s) {
      s.set_corrects(std::string(AsBytes(**corrects)));
    }));
  add(FieldOf<cw::ServiceDelivered>(sk, "delivered_by",
                                    [&](cw::ServiceDelivered& s) { s.set_delivered_by(me.user); }));
  if (!note.empty()) {
    cw::ServiceDelivered s;
    s.set_note(std::string(note));
    sets.emplace_back(sk.FindFieldByName("note"), s.SerializeAsString());
    crypto::Wipe(*s.mutable_note());
  }
  // A shelter service starts a stay unless she is in the shelter already.
  std::vector<PendingSet> stay;
  if (*service == cw::UNIT_SERVICE_SHELTER) {
    const cw::Case& c = on_file;
    if (c.shelter_entered_at() == 0 || c.shelter_left_at() >= c.shelter_entered_at()) {
      auto f = FieldOf<cw::Case>(KindOf(kCaseKind), "shelter_entered_at",
                                 [&](cw::Case& m) { m.set_shelter_entered_at(now); });
      stay.emplace_back(f.first, std::move(f.second));
    }
  }
  const Id service_id = NewId();
  auto r = store_->Edit(*hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    if (auto w = WriteRecordFields(txn, service_id, kServiceDeliveredKind, *case_id, *case_id,
                                   std::move(sets));
        !w)
      return w;
    if (stay.empty()) return {};
    return WriteRecordFields(txn, *case_id, kCaseKind, std::nullopt, *case_id, std::move(stay));
  });
  for (auto& s : sets) crypto::Wipe(s.value);
  if (!r) return r.error();
  return service_id;
}

Outcome<int> Device::ReopenCase(std::string_view case_ref, std::string_view reason_text,
                                std::string_view note) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  auto case_id = CaseToEditLocked(case_ref);
  if (!case_id) return case_id.error();
  cw::Case c;
  if (auto l = LoadOpenLocked(*case_id, &c); !l) return l.error();
  if (c.stage() != cw::STAGE_TERMINASI)
    return Fail(errc::invalid_argument,
                Tr("the case is not closed: only a closed case (terminasi) is reopened"));
  auto reason = ParseRequired(*cw::ReopenReason_descriptor(), reason_text, Tr("reason"));
  if (!reason) return reason.error();
  const int episode = EpisodeOf(c) + 1;
  const std::int64_t now = NowMsLocked() / 1000;
  const RecordKind& ck = KindOf(kCaseKind);
  std::vector<PendingSet> sets;
  auto add = [&](std::pair<const FieldPolicy*, std::string> f) {
    sets.emplace_back(f.first, std::move(f.second));
  };
  // The episode first: its stamp is below the stage's (invariant 3).
  add(FieldOf<cw::Case>(ck, "episode", [&](cw::Case& m) { m.set_episode(episode); }));
  add(FieldOf<cw::Case>(ck, "stage", [](cw::Case& m) { m.set_stage(cw::STAGE_PENGADUAN); }));
  add(FieldOf<cw::Case>(ck, "reopened_at", [&](cw::Case& m) { m.set_reopened_at(now); }));
  add(FieldOf<cw::Case>(ck, "reopen_reason", [&](cw::Case& m) {
    m.set_reopen_reason(static_cast<cw::ReopenReason>(*reason));
  }));
  // Cleared: empty values (the closed episode's stay in history).
  for (const char* cleared : {"closure_reason", "closed_at", "closure_checklist"})
    add(FieldOf<cw::Case>(ck, cleared, [](cw::Case&) {}));
  std::vector<PendingSet> note_sets;
  if (!note.empty()) note_sets = NoteSets(cw::NOTE_KIND_CASE_REVIEW, note);
  const Id note_id = NewId();
  auto r = store_->Edit(*hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    if (auto w =
            WriteRecordFields(txn, *case_id, kCaseKind, std::nullopt, *case_id, std::move(sets));
        !w)
      return w;
    if (note_sets.empty()) return {};
    return WriteRecordFields(txn, note_id, kNoteKind, *case_id, *case_id, std::move(note_sets));
  });
  for (auto& s : note_sets) crypto::Wipe(s.value);
  if (!r) return r.error();
  return episode;
}

Outcome<void> Device::ForEachChildLocked(
    const Id& case_id, std::string_view kind, std::string_view lang,
    const std::function<void(const Id&, std::vector<FieldView>&)>& visit) {
  auto recs = store_->ListRecords(kind, case_id);
  if (!recs) return recs.error();
  for (const auto& rec : *recs) {
    auto fields = RenderFields(rec.record_id, kind, case_id, lang);
    if (!fields) return fields.error();
    visit(rec.record_id, *fields);
  }
  return {};
}

Outcome<std::vector<AssessmentView>> Device::LoadAssessmentsLocked(const Id& case_id,
                                                                   std::string_view lang) {
  std::vector<AssessmentView> out;
  auto r = ForEachChildLocked(case_id, kAssessmentKind, lang,
                              [&](const Id& id, std::vector<FieldView>& fields) {
                                AssessmentView& v = out.emplace_back();
                                v.assessment_id = id;
                                for (auto& f : fields) {
                                  v.pending = v.pending || f.pending;
                                  if (f.name == "risk_level") v.risk_level = Text(f);
                                  if (f.name == "assessed_by") v.assessed_by = Text(f);
                                  if (f.name == "assessed_at") v.assessed_at = Seconds(f);
                                  if (f.name == "needs" && f.value.is_array())
                                    for (const auto& n : f.value)
                                      if (n.is_string()) v.needs.push_back(n.get<std::string>());
                                  if (f.name == "kind") v.kind = Text(f);
                                  if (f.name == "corrects") v.corrects = IdOf(f);
                                  if (f.name == "rationale")
                                    v.rationale = TakeSealed(f, &v.readability);
                                  if (f.name == "safety_plan")
                                    v.safety_plan = TakeSealed(f, &v.readability);
                                  if (f.name == "condition")
                                    v.condition = TakeSealed(f, &v.readability);
                                  // Clinical: unreadable on a field worker's
                                  // device, which is expected, not a fault.
                                  Readability clinical = Readability::kReadable;
                                  if (f.name == "diagnosis") v.diagnosis = TakeSealed(f, &clinical);
                                  if (f.name == "recommendations")
                                    v.recommendations = TakeSealed(f, &clinical);
                                  if (clinical == Readability::kIntegrity) v.readability = clinical;
                                }
                              });
  if (!r) return r.error();
  std::stable_sort(out.begin(), out.end(), [](const AssessmentView& a, const AssessmentView& b) {
    return a.assessed_at < b.assessed_at;
  });
  MarkCorrected(out, &AssessmentView::assessment_id);
  return out;
}

Outcome<std::vector<ServiceView>> Device::LoadServicesLocked(const Id& case_id,
                                                             std::string_view lang) {
  std::vector<ServiceView> out;
  auto r = ForEachChildLocked(case_id, kServiceDeliveredKind, lang,
                              [&](const Id& id, std::vector<FieldView>& fields) {
                                ServiceView& v = out.emplace_back();
                                v.service_id = id;
                                for (auto& f : fields) {
                                  v.pending = v.pending || f.pending;
                                  if (f.name == "service") v.service = Text(f);
                                  if (f.name == "accompaniment") v.accompaniment = Text(f);
                                  if (f.name == "activity") v.activity = Text(f);
                                  if (f.name == "corrects") v.corrects = IdOf(f);
                                  if (f.name == "delivered_by") v.delivered_by = Text(f);
                                  if (f.name == "delivered_at") v.delivered_at = Seconds(f);
                                  if (f.name == "note") v.note = TakeSealed(f, &v.readability);
                                }
                              });
  if (!r) return r.error();
  std::stable_sort(out.begin(), out.end(), [](const ServiceView& a, const ServiceView& b) {
    return a.delivered_at < b.delivered_at;
  });
  MarkCorrected(out, &ServiceView::service_id);
  return out;
}

}  // namespace teduh::core
