#include "teduh/core/passphrase.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <termios.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "teduh/core/i18n.h"

namespace teduh::core {
namespace {

constexpr std::size_t kMaxPassphraseBytes = 1024;

void WriteAll(int fd, std::string_view s) {
  while (!s.empty()) {
    ssize_t n = ::write(fd, s.data(), s.size());
    if (n <= 0) return;
    s.remove_prefix(static_cast<std::size_t>(n));
  }
}

// Reads one line from the terminal, echo off, straight into guarded memory.
Outcome<crypto::SecureBuffer> PromptOnce(int tty, std::string_view prompt) {
  auto buf = crypto::SecureBuffer::Allocate(kMaxPassphraseBytes);
  if (!buf) return Fail(buf.error(), Tr("cannot allocate guarded memory"));
  WriteAll(tty, prompt);
  termios old{};
  bool restore = ::tcgetattr(tty, &old) == 0;
  if (restore) {
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    quiet.c_lflag |= ECHONL;
    ::tcsetattr(tty, TCSAFLUSH, &quiet);
  }
  std::size_t n = 0;
  bool too_long = false;
  for (;;) {
    char c;
    ssize_t r = ::read(tty, &c, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0 || c == '\n' || c == '\r') break;
    if (n < kMaxPassphraseBytes) {
      buf->data()[n++] = static_cast<std::uint8_t>(c);
    } else {
      too_long = true;
    }
    c = 0;
  }
  if (restore) {
    ::tcsetattr(tty, TCSAFLUSH, &old);
  } else {
    WriteAll(tty, "\n");
  }
  if (too_long)
    return Fail(errc::invalid_argument, Tr("the passphrase is too long (1024 bytes max)"));
  auto out = crypto::SecureBuffer::CopyOf({buf->data(), n});
  if (!out) return Fail(out.error(), Tr("cannot allocate guarded memory"));
  return std::move(*out);
}

}  // namespace

Outcome<crypto::SecureBuffer> ReadPassphrase(std::string_view prompt, bool confirm) {
  return ReadPassphraseFrom("TEDUH_PASSPHRASE", prompt, confirm);
}

Outcome<crypto::SecureBuffer> ReadPassphraseFrom(const char* env_name, std::string_view prompt,
                                                 bool confirm) {
  if (const char* env = std::getenv(env_name); env != nullptr) {
    std::size_t len = std::strlen(env);
    if (len == 0) return Fail(errc::invalid_argument, TrF("{} is empty", env_name));
    if (len > kMaxPassphraseBytes) {
      return Fail(errc::invalid_argument, Tr("the passphrase is too long (1024 bytes max)"));
    }
    auto out = crypto::SecureBuffer::CopyOf({reinterpret_cast<const std::uint8_t*>(env), len});
    if (!out) return Fail(out.error(), Tr("cannot allocate guarded memory"));
    return std::move(*out);
  }
  int tty = ::open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (tty < 0) {
    return Fail(errc::invalid_argument,
                TrF("no terminal to ask for the passphrase: set {}", env_name));
  }
  auto first = PromptOnce(tty, prompt);
  if (first && first->empty()) {
    ::close(tty);
    return Fail(errc::invalid_argument, Tr("the passphrase must not be empty"));
  }
  if (first && confirm) {
    auto second = PromptOnce(tty, Tr("Repeat the passphrase: "));
    if (!second) {
      ::close(tty);
      return second.error();
    }
    if (!crypto::ConstantTimeEqual(first->view(), second->view())) {
      ::close(tty);
      return Fail(errc::invalid_argument, Tr("the two passphrases differ"));
    }
  }
  ::close(tty);
  return first;
}

}  // namespace teduh::core
