// Outcome<T>: the result type of the device API (Device, Vault, SyncClient).
// It is boost::system::result with a core::Failure as its error, so a caller
// gets both the error_code (for retry semantics, via core::condition) and a
// sentence for the officer. Messages never hold sealed content or secrets.
//
// Thread safety: plain values.
#pragma once

#include <boost/assert/source_location.hpp>
#include <boost/system/result.hpp>
#include <string>
#include <utility>

#include "teduh/core/error.h"

namespace teduh::core {

template <class T>
using Outcome = boost::system::result<T, Failure>;

// Found by ADL when Outcome::value() is called on an error: throws
// boost::system::system_error with the message. Used only inside a module;
// exceptions never cross module APIs (STYLE rule 5).
[[noreturn]] void throw_exception_from_error(const Failure& failure,
                                             const boost::source_location& loc);

// A Failure with the code's default message when `message` is empty.
Failure Fail(error_code code, std::string message = {});
inline Failure Fail(errc code, std::string message = {}) {
  return Fail(make_error_code(code), std::move(message));
}

}  // namespace teduh::core
