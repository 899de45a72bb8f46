// The store writer (group commit) and reader threads.
//
// Design notes
// ------------
//   submit ──► writes_ ──WriterLoop: take ≤ max_group──► Begin ─ apply… ─ Commit ──► done(ec)…
//   submit ──► reads_  ──ReaderLoop: one at a time────► read(Store&)
//   start, then every store_check_interval ──CheckerLoop──► Check() on a
//   connection of its own (so a long check never delays a pull)
//
// Invariants
//  1. Only the writer thread uses writer_store_ and writer_state_; only the
//     reader thread uses reader_store_.
//  2. Every job taken from writes_ gets exactly one done() call, after its
//     group's Commit() returned (ok) or after its group was rolled back (error).
//  3. After a rollback, writer_state_ is reloaded from the store, so no
//     in-memory state reflects rolled-back writes.
//  4. Once stopping_ is set nothing new is queued; the loops drain what is
//     queued and exit, so nothing submitted before Stop() is lost.
#include "store_worker.h"

#include <utility>
#include <vector>

namespace teduh::server {

core::result<std::unique_ptr<StoreWorker>> StoreWorker::Start(const std::string& path,
                                                              const ServerConfig& config,
                                                              core::Env& env, Events events,
                                                              std::vector<std::string>* findings) {
  std::unique_ptr<StoreWorker> w(new StoreWorker());
  w->config_ = &config;
  w->check_asked_ = config.store_check_interval.count() > 0;
  w->events_ = std::move(events);
  w->path_ = path;
  auto on_damage = [p = w.get()](const DamagedRow& row) {
    p->damaged_met_.fetch_add(1, std::memory_order_relaxed);
    p->WantRepair(row);
    if (p->events_.on_damage) p->events_.on_damage(row);
  };
  StoreOptions rw;
  rw.max_bytes = config.max_store_bytes;
  rw.on_damage = on_damage;
  auto writer = OpenSqliteStore(path, rw);
  if (!writer) return writer.error();
  // A file whose structure is damaged is not served: pages SQLite cannot
  // read would fail requests at random, and an index that disagrees with its
  // table would hide rows. The admin restores a backup (teduh-server store check
  // names what is damaged).
  auto structure = (*writer)->Check(false, true);
  if (!structure) return structure.error();
  if (!structure->ok()) {
    if (findings) *findings = std::move(structure->structure);
    return core::make_error_code(core::errc::store_damaged);
  }
  StoreOptions ro;
  ro.read_only = true;
  ro.on_damage = on_damage;
  auto reader = OpenSqliteStore(path, ro);
  if (!reader) return reader.error();
  auto unit = (*writer)->LoadUnit();
  if (!unit) return unit.error();
  w->unit_ = *unit;
  w->generation_.store(unit->generation);
  w->writer_store_ = std::move(*writer);
  w->reader_store_ = std::move(*reader);
  w->writer_state_ = std::make_unique<WriterState>(*w->writer_store_, env, config, *unit);
  w->writer_ = std::thread([p = w.get()] { p->WriterLoop(); });
  w->reader_ = std::thread([p = w.get()] { p->ReaderLoop(); });
  w->checker_ = std::thread([p = w.get()] { p->CheckerLoop(); });
  return w;
}

StoreWorker::~StoreWorker() { Stop(); }

bool StoreWorker::SubmitWrite(WriteFn apply, DoneFn done) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return false;
    writes_.push_back(WriteJob{std::move(apply), std::move(done)});
  }
  write_cv_.notify_one();
  return true;
}

bool StoreWorker::SubmitRead(ReadFn read) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return false;
    reads_.push_back(std::move(read));
  }
  read_cv_.notify_one();
  return true;
}

void StoreWorker::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  write_cv_.notify_all();
  read_cv_.notify_all();
  check_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  if (reader_.joinable()) reader_.join();
  if (checker_.joinable()) checker_.join();
}

void StoreWorker::CheckerLoop() {
  const auto interval = config_->store_check_interval;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      auto woken = [&] { return stopping_ || check_asked_; };
      if (interval.count() > 0)
        check_cv_.wait_for(lock, interval, woken);
      else
        check_cv_.wait(lock, woken);
      if (stopping_) return;
      check_asked_ = false;
    }
    // A connection per check: nothing of it stays open between checks.
    StoreOptions ro;
    ro.read_only = true;
    auto store = OpenSqliteStore(path_, ro);
    StoreCheck found;
    bool complete = false;  // the check read every row
    if (!store) {
      found.structure.push_back(store.error().message());
    } else {
      auto check = (*store)->Check(false, false);
      complete = check.has_value();
      if (check)
        found = std::move(*check);
      else
        found.structure.push_back(check.error().message());
    }
    if (complete) {
      // What the check found damaged is the whole list (values replaced or
      // repaired since the last check leave it).
      std::lock_guard lock(repair_mu_);
      repairs_wanted_.clear();
    }
    for (const DamagedRow& row : found.rows) WantRepair(row);
    last_check_damage_.store(found.structure.size() + found.rows.size());
    structure_damaged_.store(!found.structure.empty());
    checks_.fetch_add(1);
    if (events_.on_check) events_.on_check(found);
  }
}

void StoreWorker::WantRepair(const DamagedRow& row) {
  // Only a current value can be offered again by a device: history rows and
  // record rows are not (a record row names the case, which only the server knows).
  if (std::string_view(row.table) != "fields" || row.field == 0) return;
  std::lock_guard lock(repair_mu_);
  if (repairs_wanted_.size() < kMaxRepairsWanted) repairs_wanted_.emplace(row.record_id, row.field);
}

std::vector<FieldKey> StoreWorker::RepairsWanted() const {
  std::lock_guard lock(repair_mu_);
  return {repairs_wanted_.begin(), repairs_wanted_.end()};
}

void StoreWorker::Repaired(const std::vector<FieldKey>& done) {
  std::lock_guard lock(repair_mu_);
  for (const auto& k : done) repairs_wanted_.erase(k);
}

std::uint64_t StoreWorker::commits() const {
  std::lock_guard lock(mu_);
  return commits_;
}

void StoreWorker::WriterLoop() {
  std::vector<WriteJob> group;
  const std::size_t max_group = config_->max_group_requests ? config_->max_group_requests : 1;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      write_cv_.wait(lock, [&] { return stopping_ || !writes_.empty(); });
      if (writes_.empty()) return;  // stopping, and drained (invariant 4)
      while (!writes_.empty() && group.size() < max_group) {
        group.push_back(std::move(writes_.front()));
        writes_.pop_front();
      }
    }
    Store& store = *writer_store_;
    core::error_code ec = store.Begin();
    if (!ec) {
      for (WriteJob& job : group) {
        ec = job.apply(*writer_state_);
        if (ec) break;
      }
      if (ec) {
        store.Rollback();
      } else {
        ec = store.Commit();
      }
      if (ec) {
        // Invariant 3: forget in-memory effects of the rolled-back writes.
        auto unit = store.LoadUnit();
        if (unit) writer_state_->unit = *unit;
      }
    }
    if (!ec) {
      std::lock_guard lock(mu_);
      ++commits_;
    }
    // A full disk refuses writes until there is room again: the next group
    // that commits ends it, with no restart (the store is not sticky on it).
    const bool full = ec == core::make_error_code(core::errc::disk_full);
    if (ec) ++(full ? failed_disk_full_ : failed_other_);
    if ((full || !ec) && disk_full_.exchange(full) != full && events_.on_disk)
      events_.on_disk(full);
    for (WriteJob& job : group) job.done(ec);  // invariant 2
    group.clear();
  }
}

void StoreWorker::ReaderLoop() {
  for (;;) {
    ReadFn read;
    {
      std::unique_lock lock(mu_);
      read_cv_.wait(lock, [&] { return stopping_ || !reads_.empty(); });
      if (reads_.empty()) return;
      read = std::move(reads_.front());
      reads_.pop_front();
    }
    read(*reader_store_);
  }
}

}  // namespace teduh::server
