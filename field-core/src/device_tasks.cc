// The deadline board (issue 5; DOMAIN-REPORT §2.6): deadlines are computed
// from each case's fields on every device, offline, so that they follow a
// change of risk at once; a Task record only says that one was met.
//
// Invariants:
//  1. A task's id depends only on its case, kind, cycle and the case's
//     episode (EpisodeCycle): every device computes the same ids, two that
//     mark the same deadline met write one record (its fields merge by LWW),
//     and a reopened case's deadlines are new ones.
//  2. A deadline is computed from synced fields only (received_at,
//     reopened_at, risk_level, stage and the stamp of the stage's value,
//     shelter_entered_at / shelter_left_at, verdict_at, contact attempts),
//     never from this device's own clock at the time the case was written.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <map>

#include "device_internal.h"
#include "teduh/case/v1/case.pb.h"
#include "teduh/core/deadlines.h"
#include "teduh/core/device.h"
#include "teduh/core/roles.h"
#include "teduh/core/schema.h"
#include "teduh/crypto/crypto.h"

namespace teduh::core {
namespace {

namespace cw = teduh::casework::v1;

constexpr std::int64_t kHour = kHourSeconds;
constexpr std::int64_t kDay = kDaySeconds;

using internal::FieldOf;
using internal::KindOf;

constexpr std::pair<cw::TaskKind, std::string_view> kTaskKindNames[] = {
    {cw::TASK_KIND_OUTREACH, "outreach"},
    {cw::TASK_KIND_MONITORING, "monitoring"},
    {cw::TASK_KIND_CLOSURE_PROPOSAL, "closure_proposal"},
    {cw::TASK_KIND_SHELTER_STAY, "shelter_stay"},
    {cw::TASK_KIND_POST_VERDICT_VISIT, "post_verdict_visit"},
};

std::string KindName(cw::TaskKind k) {
  for (const auto& [kind, name] : kTaskKindNames)
    if (kind == k) return std::string(name);
  return "outreach";
}

cw::TaskKind KindFromName(std::string_view n) {
  for (const auto& [kind, name] : kTaskKindNames)
    if (name == n) return kind;
  return cw::TASK_KIND_OUTREACH;
}

// Lower case, without surrounding spaces.
std::string Clean(std::string_view s) { return internal::Lower(internal::Trim(s)); }

// Attempts to reach the victim needed before closure is proposed (low risk).
constexpr int kAttemptsBeforeClosure = 3;

}  // namespace

Outcome<std::vector<TaskView>> Device::AllTasksLocked() {
  const std::string me = InfoLocked().user;
  const std::int64_t now = NowMsLocked() / 1000;
  auto cases = store_->ListRecords(kCaseKind, std::nullopt);
  if (!cases) return cases.error();
  std::vector<TaskView> out;
  for (const auto& rec : *cases) {
    auto fields = store_->GetFields(rec.record_id);
    if (!fields) return fields.error();
    cw::Case c;
    std::int64_t stage_set = 0;
    for (const auto& f : *fields) {
      if (f.sealed) continue;
      c.MergeFromString(f.value);
      if (f.field == cw::Case::kStageFieldNumber) stage_set = HlcMillis(f.stamp.hlc) / 1000;
    }
    if (c.stage() == cw::STAGE_TERMINASI) continue;
    const int episode = EpisodeOf(c);
    auto id_of = [&](cw::TaskKind kind, std::uint64_t cycle) {
      return TaskId(rec.record_id, kind, EpisodeCycle(episode, cycle));
    };
    auto done_recs = store_->ListRecords(kTaskKind, rec.record_id);
    if (!done_recs) return done_recs.error();
    std::map<Id, bool> done;
    for (const auto& d : *done_recs) {
      cw::Task t;
      if (auto r = LoadOpenLocked(d.record_id, &t); !r) return r.error();
      done[d.record_id] = t.done_at() > 0;
    }
    auto add = [&](cw::TaskKind kind, const Id& id, std::int64_t due) -> TaskView& {
      TaskView t;
      t.task_id = id;
      t.case_id = rec.record_id;
      t.case_number = c.case_number();
      t.kind = KindName(kind);
      t.due_at = due;
      t.overdue = due < now;
      t.assigned_pendamping = c.assigned_pendamping();
      t.mine = !me.empty() && (c.assigned_pendamping() == me || c.assigned_konselor() == me ||
                               c.assigned_psikolog() == me);
      out.push_back(std::move(t));
      return out.back();
    };
    // Outreach, until the case reaches the outreach stage (again, in a
    // reopened case's new episode).
    const std::int64_t from = OutreachFrom(c);
    if (BeforeOutreach(c.stage()) && from > 0) {
      const Id id = id_of(cw::TASK_KIND_OUTREACH, 0);
      if (!done[id]) add(cw::TASK_KIND_OUTREACH, id, from + OutreachHours(c.risk_level()) * kHour);
    }
    // Closure proposal: a low-risk case whose victim was not reached after
    // three attempts in this episode (and never reached in it).
    if (c.risk_level() == cw::RISK_LEVEL_LOW && BeforeOutreach(c.stage())) {
      auto attempts = store_->ListRecords(kContactAttemptKind, rec.record_id);
      if (!attempts) return attempts.error();
      std::vector<std::int64_t> missed;
      bool reached = false;
      for (const auto& a : *attempts) {
        cw::ContactAttempt at;
        if (auto r = LoadOpenLocked(a.record_id, &at); !r) return r.error();
        if (episode > 1 && at.attempted_at() < c.reopened_at()) continue;
        reached |= at.outcome() == cw::CONTACT_OUTCOME_REACHED;
        if (at.outcome() == cw::CONTACT_OUTCOME_NOT_REACHED) missed.push_back(at.attempted_at());
      }
      const Id id = id_of(cw::TASK_KIND_CLOSURE_PROPOSAL, 0);
      if (!reached && missed.size() >= kAttemptsBeforeClosure && !done[id]) {
        std::sort(missed.begin(), missed.end());
        add(cw::TASK_KIND_CLOSURE_PROPOSAL, id, missed[kAttemptsBeforeClosure - 1]);
      }
    }
    // Monitoring, cycle after cycle, while in monitoring.
    if (c.stage() == cw::STAGE_PEMANTAUAN && stage_set > 0) {
      const std::int64_t period = MonitoringPeriodSeconds(c.risk_level());
      std::uint64_t cycle = 1;
      while (done[id_of(cw::TASK_KIND_MONITORING, cycle)] && cycle < 1000) ++cycle;
      add(cw::TASK_KIND_MONITORING, id_of(cw::TASK_KIND_MONITORING, cycle),
          stage_set + static_cast<std::int64_t>(cycle) * period);
    }
    // The shelter stay is reviewed 14 days after she entered, while she is
    // there; each stay (by its entry time) has its own deadline.
    if (c.shelter_entered_at() > 0 && c.shelter_left_at() < c.shelter_entered_at()) {
      const Id id =
          id_of(cw::TASK_KIND_SHELTER_STAY, static_cast<std::uint64_t>(c.shelter_entered_at()));
      if (!done[id])
        add(cw::TASK_KIND_SHELTER_STAY, id, c.shelter_entered_at() + kShelterStaySeconds);
    }
    // Home visits after the verdict: the next one not yet made, of three.
    if (c.verdict_at() > 0) {
      std::uint32_t visit = 1;
      while (visit <= kPostVerdictVisits && done[id_of(cw::TASK_KIND_POST_VERDICT_VISIT, visit)])
        ++visit;
      if (visit <= kPostVerdictVisits) {
        TaskView& t =
            add(cw::TASK_KIND_POST_VERDICT_VISIT, id_of(cw::TASK_KIND_POST_VERDICT_VISIT, visit),
                c.verdict_at() + visit * kPostVerdictVisitSeconds);
        t.cycle = visit;
        t.cycles = kPostVerdictVisits;
      }
    }
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const TaskView& a, const TaskView& b) { return a.due_at < b.due_at; });
  return out;
}

Outcome<void> Device::LoadOpenLocked(const Id& record_id, google::protobuf::Message* out) {
  auto fields = store_->GetFields(record_id);
  if (!fields) return fields.error();
  for (auto& f : *fields) {
    if (!f.sealed) out->MergeFromString(f.value);
    crypto::Wipe(f.value);
  }
  return {};
}

Outcome<void> Device::OutreachMetLocked(LocalStore::EditTxn& txn, const Id& case_id,
                                        const google::protobuf::Message& open_case) {
  const auto& c = static_cast<const cw::Case&>(open_case);
  const Id id = TaskId(case_id, cw::TASK_KIND_OUTREACH, EpisodeCycle(EpisodeOf(c), 0));
  cw::Task existing;
  if (auto r = LoadOpenLocked(id, &existing); !r) return r;
  if (existing.done_at() > 0) return {};  // met already
  const RecordKind& kind = KindOf(kTaskKind);
  const std::int64_t from = OutreachFrom(c);
  std::vector<PendingSet> sets;
  auto add = [&](std::pair<const FieldPolicy*, std::string> f) {
    sets.emplace_back(f.first, std::move(f.second));
  };
  add(FieldOf<cw::Task>(kind, "kind", [](cw::Task& t) { t.set_kind(cw::TASK_KIND_OUTREACH); }));
  if (from > 0)
    add(FieldOf<cw::Task>(kind, "due_at", [&](cw::Task& t) {
      t.set_due_at(from + OutreachHours(c.risk_level()) * kHour);
    }));
  add(FieldOf<cw::Task>(kind, "done_at",
                        [&](cw::Task& t) { t.set_done_at(NowMsLocked() / 1000); }));
  add(FieldOf<cw::Task>(kind, "done_by", [&](cw::Task& t) { t.set_done_by(InfoLocked().user); }));
  return WriteRecordFields(txn, id, kTaskKind, case_id, case_id, std::move(sets));
}

Outcome<std::vector<TaskView>> Device::ListTasks(bool due_only, bool mine_only) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  auto all = AllTasksLocked();
  if (!all) return all.error();
  const std::int64_t soon = NowMsLocked() / 1000 + kDay;
  std::erase_if(*all, [&](const TaskView& t) {
    return (due_only && t.due_at > soon) || (mine_only && !t.mine);
  });
  return std::move(*all);
}

Outcome<TaskView> Device::CompleteTask(std::string_view task_ref) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  std::string ref;
  for (char ch : task_ref)
    if (!std::isspace(static_cast<unsigned char>(ch)))
      ref.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(ch))));
  if (ref.size() < 6 || ref.size() > 32 ||
      !std::all_of(ref.begin(), ref.end(), [](char ch) { return std::isxdigit(ch); }))
    return Fail(errc::invalid_argument,
                Tr("a task id is 32 hex digits, or a unique prefix of at least 6"));
  auto all = AllTasksLocked();
  if (!all) return all.error();
  const TaskView* found = nullptr;
  for (const auto& t : *all) {
    if (!ToHex(t.task_id).starts_with(ref)) continue;
    if (found)
      return Fail(errc::invalid_argument, TrF("several tasks start with {}: type more", ref));
    found = &t;
  }
  if (!found) return Fail(errc::not_found, TrF("no open task {} on this device", ref));
  const TaskView task = *found;
  const bool closure = task.kind == "closure_proposal";
  if (closure && InfoLocked().role != RoleName(teduh::sync::v1::ROLE_SUPERVISOR))
    return Fail(errc::forbidden, Tr("only a supervisor approves closing a case"));
  const RecordKind& kind = KindOf(kTaskKind);
  const std::string me = InfoLocked().user;
  const std::int64_t now = NowMsLocked() / 1000;
  std::vector<PendingSet> sets;
  auto add = [&](std::string_view name, const cw::Task& t) {
    sets.emplace_back(kind.FindFieldByName(name), t.SerializeAsString());
  };
  {
    cw::Task t;
    t.set_kind(KindFromName(task.kind));
    add("kind", t);
  }
  {
    cw::Task t;
    t.set_due_at(task.due_at);
    add("due_at", t);
  }
  {
    cw::Task t;
    t.set_done_at(now);
    add("done_at", t);
  }
  {
    cw::Task t;
    t.set_done_by(me);
    add("done_by", t);
  }
  // An approved closure proposal closes the case in the same transaction.
  std::vector<PendingSet> closing;
  if (closure) {
    const RecordKind& ck = KindOf(kCaseKind);
    auto add_case = [&](std::string_view name, const cw::Case& c) {
      closing.emplace_back(ck.FindFieldByName(name), c.SerializeAsString());
    };
    cw::Case stage, reason, closed;
    stage.set_stage(cw::STAGE_TERMINASI);
    reason.set_closure_reason(cw::CLOSURE_REASON_UNREACHABLE);
    closed.set_closed_at(now);
    add_case("stage", stage);
    add_case("closure_reason", reason);
    add_case("closed_at", closed);
  }
  auto r = store_->Edit(*hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    if (auto w = WriteRecordFields(txn, task.task_id, kTaskKind, task.case_id, task.case_id,
                                   std::move(sets));
        !w)
      return w;
    if (closing.empty()) return {};
    return WriteRecordFields(txn, task.case_id, kCaseKind, std::nullopt, task.case_id,
                             std::move(closing));
  });
  if (!r) return r.error();
  return task;
}

Outcome<Id> Device::LogVisit(std::string_view case_ref, std::string_view method_text,
                             std::string_view outcome_text, std::string_view note) {
  std::lock_guard g(mu_);
  if (auto r = CheckOpen(); !r) return r.error();
  const DeviceInfo me = InfoLocked();
  auto case_id = CaseToEditLocked(case_ref);
  if (!case_id) return case_id.error();
  std::string why;
  auto method = ParseEnumValue(*cw::ContactMethod_descriptor(),
                               method_text.empty() ? "home_visit" : Clean(method_text), &why);
  if (!method || *method == 0)
    return Fail(errc::bad_value, why.empty() ? Tr("unknown method") : why);
  auto outcome = ParseEnumValue(*cw::ContactOutcome_descriptor(), Clean(outcome_text), &why);
  if (!outcome || *outcome == 0)
    return Fail(errc::bad_value,
                why.empty() ? Tr("give the outcome: reached, not_reached or unsafe") : why);
  const std::int64_t now = NowMsLocked() / 1000;
  const RecordKind& ak = KindOf(kContactAttemptKind);
  std::vector<PendingSet> attempt;
  {
    cw::ContactAttempt a;
    a.set_method(static_cast<cw::ContactMethod>(*method));
    attempt.emplace_back(ak.FindFieldByName("method"), a.SerializeAsString());
  }
  {
    cw::ContactAttempt a;
    a.set_outcome(static_cast<cw::ContactOutcome>(*outcome));
    attempt.emplace_back(ak.FindFieldByName("outcome"), a.SerializeAsString());
  }
  {
    cw::ContactAttempt a;
    a.set_attempted_at(now);
    attempt.emplace_back(ak.FindFieldByName("attempted_at"), a.SerializeAsString());
  }
  {
    cw::ContactAttempt a;
    a.set_by(me.user);
    attempt.emplace_back(ak.FindFieldByName("by"), a.SerializeAsString());
  }
  // Reaching the victim is the outreach: the case moves to that stage.
  std::vector<PendingSet> stage_sets;
  cw::Case c;
  if (*outcome == cw::CONTACT_OUTCOME_REACHED) {
    if (auto l = LoadOpenLocked(*case_id, &c); !l) return l.error();
    if (BeforeOutreach(c.stage())) {
      cw::Case st;
      st.set_stage(cw::STAGE_PENJANGKAUAN);
      stage_sets.emplace_back(KindOf(kCaseKind).FindFieldByName("stage"), st.SerializeAsString());
    }
  }
  // The note, sealed like any note (made last: no early return holds its text).
  std::vector<PendingSet> note_sets;
  if (!note.empty()) note_sets = NoteSets(cw::NOTE_KIND_VISIT, note);
  const Id attempt_id = NewId(), note_id = NewId();
  auto r = store_->Edit(*hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    if (auto w = WriteRecordFields(txn, attempt_id, kContactAttemptKind, *case_id, *case_id,
                                   std::move(attempt));
        !w)
      return w;
    if (!note_sets.empty())
      if (auto w =
              WriteRecordFields(txn, note_id, kNoteKind, *case_id, *case_id, std::move(note_sets));
          !w)
        return w;
    if (stage_sets.empty()) return {};
    if (auto w = OutreachMetLocked(txn, *case_id, c); !w) return w;
    return WriteRecordFields(txn, *case_id, kCaseKind, std::nullopt, *case_id,
                             std::move(stage_sets));
  });
  for (auto& s : note_sets) crypto::Wipe(s.value);
  if (!r) return r.error();
  return attempt_id;
}

}  // namespace teduh::core
