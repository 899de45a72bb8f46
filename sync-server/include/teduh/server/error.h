// Errors of the server module that field-core's errc does not name: setup and
// administration failures. Store, protocol and input errors use core::errc
// (teduh/core/error.h) so a caller handles one vocabulary.
//
// Thread safety: stateless and thread-safe.
#pragma once

#include <boost/system/error_code.hpp>

namespace teduh::server {

using boost::system::error_code;

enum class errc {
  already_initialised = 1,  // the data folder already holds a store: nothing was changed
  not_initialised,          // the data folder holds no store: run `teduh-server init`
  plaintext_refused,        // ws:// on a non-loopback address without --insecure-plaintext
  bad_address,              // the listen address does not parse
  tls_failed,               // the certificate or key could not be loaded
  stopped,                  // the server is shutting down: retry against the new process
  in_use,                   // another teduh-server process serves this data folder
  ops_listen_failed,        // the operations listener could not bind its address
};
const boost::system::error_category& server_category() noexcept;
error_code make_error_code(errc e) noexcept;

}  // namespace teduh::server

namespace boost::system {
template <>
struct is_error_code_enum<teduh::server::errc> : std::true_type {};
}  // namespace boost::system
