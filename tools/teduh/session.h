// The keys of a device are in memory only while a `teduh` command runs. A
// command that opens the vault holds a session on the device folder:
//   <home>/session  an exclusive lock (flock) for as long as it runs, with
//                   its process id written in it (no secret)
// so that
//   - two commands on one device run one after the other, never at once
//     (the second waits for the first, then fails with errc::store_busy);
//   - `teduh lock` reaches the command that holds the keys: it signals it
//     (SIGUSR1; only a process that has the session file open), the command
//     wipes every key from memory (Device::Lock) and ends at once with
//     errc::locked, and `teduh lock` returns when no command holds the
//     session (one that was waiting for it is signalled in turn).
//
// Thread safety: a Session is used by the main thread; its signal thread
// only calls Device::Lock, which is thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <thread>

#include "teduh/core/device.h"

namespace teduh::cli {

// Called once at the start of main, before any thread exists: SIGUSR1 is
// then only ever taken by a session's signal thread.
void BlockLockSignal();

class Session {
 public:
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Takes the session of `home`, waiting up to `wait` for a command that
  // holds it. errc::store_busy if it is still held then.
  static core::Outcome<std::unique_ptr<Session>> Acquire(const std::filesystem::path& home,
                                                         std::chrono::milliseconds wait);

  // Until the returned guard is destroyed, a `teduh lock` wipes `device`'s
  // keys and then calls `on_locked` (which ends the process). Destroy the
  // guard before the device.
  class Guard {
   public:
    ~Guard();
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    friend class Session;
    Guard(core::Device* device, std::function<void()> on_locked);
    std::atomic<bool> stopping_{false};
    std::thread thread_;
  };
  std::unique_ptr<Guard> GuardDevice(core::Device* device, std::function<void()> on_locked);

 private:
  explicit Session(int fd) : fd_(fd) {}
  int fd_;
};

struct LockResult {
  bool was_unlocked = false;  // a command held the keys and has wiped them
  long pid = 0;               // that command's process
};

// `teduh lock`: signals the command holding `home`'s session, and waits up to
// `wait` until it has let the session go. Nothing held it: was_unlocked false.
// errc::timeout if it did not end in time.
core::Outcome<LockResult> LockRunning(const std::filesystem::path& home,
                                      std::chrono::milliseconds wait);

}  // namespace teduh::cli
