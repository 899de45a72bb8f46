// The store writer (group commit) and reader threads.
//
// Design notes
// ------------
//   submit ──► writes_ ──WriterLoop: take ≤ max_group──► Begin ─ apply… ─ Commit ──► done(ec)…
//   submit ──► reads_  ──ReaderLoop: one at a time────► read(Store&)
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
                                                              core::Env& env, DiskFn on_disk) {
  std::unique_ptr<StoreWorker> w(new StoreWorker());
  w->config_ = &config;
  w->on_disk_ = std::move(on_disk);
  StoreOptions rw;
  rw.max_bytes = config.max_store_bytes;
  auto writer = OpenSqliteStore(path, rw);
  if (!writer) return writer.error();
  StoreOptions ro;
  ro.read_only = true;
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
  if (writer_.joinable()) writer_.join();
  if (reader_.joinable()) reader_.join();
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
    if ((full || !ec) && disk_full_.exchange(full) != full && on_disk_) on_disk_(full);
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
