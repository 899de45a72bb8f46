#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "bench.h"

namespace teduh::bench {

pid_t g_server_pid = 0;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "teduh-bench: %s\n", what.c_str());
  if (g_server_pid > 0) kill(g_server_pid, SIGKILL);
  std::exit(1);
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

namespace {
// A "Vm...:  N kB" line of /proc/PID/status, in bytes.
std::int64_t StatusBytes(pid_t pid, std::string_view key) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::atoll(line.c_str() + key.size()) * 1024;
  }
  return -1;
}
}  // namespace

std::int64_t PeakRssBytes(pid_t pid) { return StatusBytes(pid, "VmHWM:"); }
std::int64_t RssBytes(pid_t pid) { return StatusBytes(pid, "VmRSS:"); }

std::pair<pid_t, std::uint16_t> ForkServer(
    const std::string& data, int threads, std::uint16_t port_wanted,
    const std::function<void(server::ServerConfig&)>& adjust) {
  int fds[2];
  if (pipe(fds) != 0) Die("pipe failed");
  pid_t pid = fork();
  if (pid < 0) Die("fork failed");
  if (pid == 0) {
    close(fds[0]);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);  // inherited by the io threads
    server::ServerConfig config;
    config.data_dir = data;
    config.threads = threads;
    config.enroll_burst = 1'000'000;  // every simulated device enrolls from 127.0.0.1 at once
    config.port = port_wanted;
    config.log = [](std::string_view) {};
    if (adjust) adjust(config);
    auto srv = server::Server::Open(config, core::DefaultEnv());
    if (!srv) _exit(3);
    if ((*srv)->Start()) _exit(4);
    std::uint16_t port = (*srv)->port();
    if (write(fds[1], &port, sizeof port) != sizeof port) _exit(5);
    close(fds[1]);
    int sig = 0;
    sigwait(&set, &sig);
    (*srv)->Stop();
    (*srv)->Wait();
    _exit(0);
  }
  close(fds[1]);
  std::uint16_t port = 0;
  if (read(fds[0], &port, sizeof port) != sizeof port) Die("the server did not start");
  close(fds[0]);
  return {pid, port};
}

crypto::SecureBuffer Passphrase() {
  static constexpr std::string_view kPass = "bench passphrase";
  return MustR(crypto::SecureBuffer::CopyOf(core::AsSpan(kPass)), "passphrase");
}

core::DeviceOptions Options() {
  core::DeviceOptions o;
  o.vault.kdf = core::KdfMode::kInteractive;
  return o;
}

}  // namespace teduh::bench
