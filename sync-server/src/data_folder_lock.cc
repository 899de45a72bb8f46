// DataFolderLock (store.h): flock(2) on DATA/teduh-server.lock. The lock
// belongs to the open file description, so it is released when the process
// ends, and a second open in the same process conflicts like another process.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "teduh/server/error.h"
#include "teduh/server/store.h"

namespace teduh::server {

result<DataFolderLock> DataFolderLock::Acquire(const std::string& data_dir, long* holder) {
  if (holder) *holder = 0;
  std::error_code fs_ec;
  if (!std::filesystem::is_directory(data_dir, fs_ec))
    return make_error_code(errc::not_initialised);
  const std::string path = (std::filesystem::path(data_dir) / "teduh-server.lock").string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return error_code(errno, boost::system::system_category());
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (holder) {
      char buf[32] = {};
      const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
      if (n > 0) *holder = std::strtol(buf, nullptr, 10);
    }
    ::close(fd);
    if (err == EWOULDBLOCK) return make_error_code(errc::in_use);
    return error_code(err, boost::system::system_category());
  }
  // The holder's pid, for the message another process shows.
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // The lock holds without the pid; only the message is poorer.
  }
  return DataFolderLock(fd);
}

DataFolderLock& DataFolderLock::operator=(DataFolderLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

DataFolderLock::~DataFolderLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

}  // namespace teduh::server
