// The store's two threads: the single writer with group commit, and a reader
// on its own read-only connection (SQLite WAL lets it read while the writer
// writes). Network threads never touch SQLite (STYLE rule 9); they submit jobs
// here and get their results posted back.
//
// Group commit (as LevelDB's DBImpl::Write): the writer takes every write job
// queued (up to max_group), applies them all in ONE transaction, commits once,
// then calls every job's `done` with the commit's outcome. A job's effects are
// acknowledged only through `done(ok)`, which runs after the commit.
//
// Thread safety: Submit* and Stop are thread-safe. Jobs run on the worker
// threads; `done` runs on the writer thread and must only post elsewhere.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "sync_service.h"
#include "teduh/server/store.h"

namespace teduh::server {

class StoreWorker {
 public:
  // Runs inside the group transaction. Returns a store error (which fails the
  // whole group); request-level refusals go into the job's own outcome.
  using WriteFn = std::function<core::error_code(WriterState&)>;
  // After the commit (ok) or after the group failed (the error).
  using DoneFn = std::function<void(core::error_code)>;
  using ReadFn = std::function<void(Store&)>;

  // Called on the writer thread when the store starts or stops refusing
  // writes for a full disk (true: full).
  using DiskFn = std::function<void(bool full)>;
  // Called on any store thread for every damaged row a read met (skipped).
  using DamageFn = std::function<void(const DamagedRow&)>;
  // Called on the checker thread with each background check's findings.
  using CheckFn = std::function<void(const StoreCheck&)>;
  struct Events {
    DiskFn on_disk;
    DamageFn on_damage;
    CheckFn on_check;
  };

  // Opens the writer and reader connections on `path`, checks the file's
  // structure (errc::store_damaged, with the findings in `*findings`, if
  // SQLite's quick_check finds damage) and starts the threads: writer,
  // reader and the background checker (config.store_check_interval).
  [[nodiscard]] static core::result<std::unique_ptr<StoreWorker>> Start(
      const std::string& path, const ServerConfig& config, core::Env& env, Events events = {},
      std::vector<std::string>* findings = nullptr);
  ~StoreWorker();
  StoreWorker(const StoreWorker&) = delete;
  StoreWorker& operator=(const StoreWorker&) = delete;

  // False (and the job is dropped) once Stop() began.
  bool SubmitWrite(WriteFn apply, DoneFn done);
  bool SubmitRead(ReadFn read);

  // Applies and commits every write job already queued, runs every queued
  // read, then joins both threads and closes the store. Idempotent.
  void Stop();

  const UnitInfo& unit() const { return unit_; }  // immutable fields only
  // The store's generation now (it changes when a store put back from a
  // file-level copy is found out, RollGeneration).
  std::uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  void set_generation(std::uint64_t g) { generation_.store(g, std::memory_order_release); }
  std::uint64_t commits() const;
  // The last group failed for a full disk (cleared by the next commit).
  bool disk_full() const { return disk_full_.load(std::memory_order_acquire); }
  // Groups that failed: for a full disk, and for anything else.
  std::uint64_t failed_disk_full() const { return failed_disk_full_.load(); }
  std::uint64_t failed_other() const { return failed_other_.load(); }
  // Damaged rows met by reads since start (each meeting counted).
  std::uint64_t damaged_rows_met() const { return damaged_met_.load(); }
  // Background checks finished, and the findings of the last one.
  std::uint64_t checks() const { return checks_.load(); }
  std::uint64_t last_check_damage() const { return last_check_damage_.load(); }
  // The last check found the file's structure damaged (not only rows).
  bool structure_damaged() const { return structure_damaged_.load(); }

  // Damaged current values (met by a read or a check) that devices are asked
  // to re-send in their Welcome, until one is repaired or replaced; at most
  // kMaxRepairsWanted, kept in memory (the check at every start finds them again).
  std::vector<FieldKey> RepairsWanted() const;
  void Repaired(const std::vector<FieldKey>& done);
  static constexpr std::size_t kMaxRepairsWanted = 4096;

 private:
  struct WriteJob {
    WriteFn apply;
    DoneFn done;
  };
  StoreWorker() = default;
  void WriterLoop();
  void ReaderLoop();
  void CheckerLoop();
  void WantRepair(const DamagedRow& row);

  const ServerConfig* config_ = nullptr;
  UnitInfo unit_;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<bool> disk_full_{false};
  std::atomic<std::uint64_t> failed_disk_full_{0}, failed_other_{0};
  Events events_;
  std::string path_;
  std::atomic<std::uint64_t> damaged_met_{0}, checks_{0}, last_check_damage_{0};
  std::atomic<bool> structure_damaged_{false};
  std::unique_ptr<Store> writer_store_;
  std::unique_ptr<Store> reader_store_;
  std::unique_ptr<WriterState> writer_state_;  // touched only by the writer thread

  mutable std::mutex mu_;
  std::condition_variable write_cv_;
  std::condition_variable read_cv_;
  // Guarded by mu_.
  std::deque<WriteJob> writes_;
  std::deque<ReadFn> reads_;
  bool stopping_ = false;
  bool check_asked_ = true;  // the first background check runs at start
  std::uint64_t commits_ = 0;
  std::condition_variable check_cv_;

  mutable std::mutex repair_mu_;       // a mutex of its own: damage is met on any store thread
  std::set<FieldKey> repairs_wanted_;  // guarded by repair_mu_

  std::thread writer_;
  std::thread reader_;
  std::thread checker_;
};

}  // namespace teduh::server
