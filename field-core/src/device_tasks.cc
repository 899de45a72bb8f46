// The deadline board (issue 5; DOMAIN-REPORT §2.6): deadlines are computed
// from each case's fields on every device, offline, so that they follow a
// change of risk at once; a Task record only says that one was met.
//
// Invariants:
//  1. A task's id depends only on its case, kind and cycle: every device
//     computes the same ids, and two that mark the same deadline met write
//     one record (its fields merge by LWW).
//  2. A deadline is computed from synced fields only (received_at,
//     risk_level, stage and the stamp of the stage's value), never from
//     this device's own clock at the time the case was written.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <map>

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

const RecordKind& KindOf(std::string_view full) { return *Schema::Get().FindKind(full); }

std::string KindName(cw::TaskKind k) {
  return k == cw::TASK_KIND_MONITORING ? "monitoring" : "outreach";
}

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
    auto done_recs = store_->ListRecords(kTaskKind, rec.record_id);
    if (!done_recs) return done_recs.error();
    std::map<Id, bool> done;
    for (const auto& d : *done_recs) {
      auto df = store_->GetFields(d.record_id);
      if (!df) return df.error();
      cw::Task t;
      for (const auto& f : *df)
        if (!f.sealed) t.MergeFromString(f.value);
      done[d.record_id] = t.done_at() > 0;
    }
    auto add = [&](cw::TaskKind kind, const Id& id, std::int64_t due) {
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
    };
    // Outreach, until the case reaches the outreach stage.
    if (BeforeOutreach(c.stage()) && c.received_at() > 0) {
      const Id id = TaskId(rec.record_id, cw::TASK_KIND_OUTREACH, 0);
      if (!done[id])
        add(cw::TASK_KIND_OUTREACH, id, c.received_at() + OutreachHours(c.risk_level()) * kHour);
    }
    // Monitoring, cycle after cycle, while in monitoring.
    if (c.stage() == cw::STAGE_PEMANTAUAN && stage_set > 0) {
      const std::int64_t period = MonitoringPeriodSeconds(c.risk_level());
      std::uint64_t cycle = 1;
      while (done[TaskId(rec.record_id, cw::TASK_KIND_MONITORING, cycle)] && cycle < 1000) ++cycle;
      add(cw::TASK_KIND_MONITORING, TaskId(rec.record_id, cw::TASK_KIND_MONITORING, cycle),
          stage_set + static_cast<std::int64_t>(cycle) * period);
    }
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const TaskView& a, const TaskView& b) { return a.due_at < b.due_at; });
  return out;
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
                "a task id is 32 hex digits, or a unique prefix of at least 6");
  auto all = AllTasksLocked();
  if (!all) return all.error();
  const TaskView* found = nullptr;
  for (const auto& t : *all) {
    if (!ToHex(t.task_id).starts_with(ref)) continue;
    if (found)
      return Fail(errc::invalid_argument, "several tasks start with " + ref + ": type more");
    found = &t;
  }
  if (!found) return Fail(errc::not_found, "no open task " + ref + " on this device");
  const TaskView task = *found;
  const RecordKind& kind = KindOf(kTaskKind);
  const std::string me = InfoLocked().user;
  const std::int64_t now = NowMsLocked() / 1000;
  std::vector<PendingSet> sets;
  auto add = [&](std::string_view name, const cw::Task& t) {
    sets.emplace_back(kind.FindFieldByName(name), t.SerializeAsString());
  };
  {
    cw::Task t;
    t.set_kind(task.kind == "monitoring" ? cw::TASK_KIND_MONITORING : cw::TASK_KIND_OUTREACH);
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
  auto r = store_->Edit(*hlc_, [&](LocalStore::EditTxn& txn) -> Outcome<void> {
    return WriteRecordFields(txn, task.task_id, kTaskKind, task.case_id, task.case_id,
                             std::move(sets));
  });
  if (!r) return r.error();
  return task;
}

}  // namespace teduh::core
