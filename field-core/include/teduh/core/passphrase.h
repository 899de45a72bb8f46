// Reading the officer's passphrase into guarded memory.
//
// Thread safety: touches the process's terminal; call from one thread.
#pragma once

#include <string_view>

#include "teduh/core/outcome.h"
#include "teduh/crypto/crypto.h"

namespace teduh::core {

// The passphrase from TEDUH_PASSPHRASE if set (scripts, tests), otherwise
// asked on the terminal (/dev/tty) with echo off. With `confirm` the prompt is
// repeated and both must match. errc::invalid_argument if there is no
// terminal and no TEDUH_PASSPHRASE, if it is empty, or if the two differ.
Outcome<crypto::SecureBuffer> ReadPassphrase(std::string_view prompt, bool confirm);
// The same, from the environment variable `env_name` (e.g. TEDUH_NEW_PASSPHRASE).
Outcome<crypto::SecureBuffer> ReadPassphraseFrom(const char* env_name, std::string_view prompt,
                                                 bool confirm);

}  // namespace teduh::core
