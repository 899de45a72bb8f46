#include "session.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <string>

#include "teduh/core/i18n.h"

namespace teduh::cli {
namespace {

using core::errc;
using core::Fail;
using core::Tr;

std::filesystem::path SessionPath(const std::filesystem::path& home) { return home / "session"; }

bool TryLock(int fd, int how) {
  for (;;) {
    if (flock(fd, how | LOCK_NB) == 0) return true;
    if (errno != EINTR) return false;
  }
}

// The process named in the session file, if it has that file open: only a
// teduh command does (a stale pid, or one reused by another process, does not).
long HolderPid(int fd, const std::filesystem::path& path) {
  char buf[32] = {};
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return 0;
  long pid = std::strtol(buf, nullptr, 10);
  if (pid <= 1) return 0;
  std::error_code ec;
  for (const auto& entry :
       std::filesystem::directory_iterator(fmt::format("/proc/{}/fd", pid), ec)) {
    std::error_code same;
    if (std::filesystem::equivalent(entry.path(), path, same)) return pid;
  }
  return 0;
}

}  // namespace

void BlockLockSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

core::Outcome<std::unique_ptr<Session>> Session::Acquire(const std::filesystem::path& home,
                                                         std::chrono::milliseconds wait) {
  const std::string path = SessionPath(home).string();
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Fail(errc::io_error, Tr("cannot open the device folder's session file"));
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (!TryLock(fd, LOCK_EX)) {
    if (std::chrono::steady_clock::now() >= deadline) {
      close(fd);
      return Fail(errc::store_busy,
                  Tr("another teduh command is using this device; wait for it to finish (or end it "
                     "with: teduh lock)"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // The pid is written over the last one, padded to a fixed width, so the
  // file never grows or shrinks: on a full disk it needs no new block and a
  // command that only reads still runs. A pid that cannot be written (a
  // first command on a full disk) leaves `teduh lock` unable to end this
  // command early; the command itself runs.
  const std::string pid = fmt::format("{:<20}\n", static_cast<long>(getpid()));
  if (pwrite(fd, pid.data(), pid.size(), 0) < 0 && errno != ENOSPC && errno != EDQUOT) {
    close(fd);  // releases the lock
    return Fail(errc::io_error, Tr("cannot write the device folder's session file"));
  }
  return std::unique_ptr<Session>(new Session(fd));
}

Session::~Session() {
  // The pid stays in the file; a later `teduh lock` finds the lock free first.
  flock(fd_, LOCK_UN);
  close(fd_);
}

std::unique_ptr<Session::Guard> Session::GuardDevice(core::Device* device,
                                                     std::function<void()> on_locked) {
  return std::unique_ptr<Guard>(new Guard(device, std::move(on_locked)));
}

Session::Guard::Guard(core::Device* device, std::function<void()> on_locked)
    : thread_([this, device, on_locked = std::move(on_locked)] {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGUSR1);
        for (;;) {
          int sig = 0;
          if (sigwait(&set, &sig) != 0) continue;
          if (stopping_.load()) return;
          device->Lock();  // every key wiped from memory before anything else
          on_locked();
          return;
        }
      }) {}

Session::Guard::~Guard() {
  stopping_.store(true);
  pthread_kill(thread_.native_handle(), SIGUSR1);
  thread_.join();
}

core::Outcome<LockResult> LockRunning(const std::filesystem::path& home,
                                      std::chrono::milliseconds wait) {
  LockResult out;
  const std::string path = SessionPath(home).string();
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;  // no command ever ran here
  const auto deadline = std::chrono::steady_clock::now() + wait;
  bool signalled = false;
  long last = 0;
  while (!TryLock(fd, LOCK_SH)) {
    // The holder writes its pid right after taking the lock. A command that
    // was waiting for the session takes it next: it is signalled too, so no
    // command runs with keys once `teduh lock` has returned.
    if (long pid = HolderPid(fd, path);
        pid != 0 && pid != last && kill(static_cast<pid_t>(pid), SIGUSR1) == 0) {
      signalled = true;
      last = pid;
      out.pid = pid;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      close(fd);
      return Fail(errc::timeout, signalled
                                     ? Tr("the running teduh command did not end in time")
                                     : Tr("cannot reach the teduh command using this device"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  flock(fd, LOCK_UN);
  close(fd);
  out.was_unlocked = signalled;
  return out;
}

}  // namespace teduh::cli
