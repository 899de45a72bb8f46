// The error currency of field-core (and of the programs built on it):
// boost::system::error_code with teduh::core::errc, plus error conditions that
// tell a caller what to do about an error (retry later, fix input, give up).
//
// Thread safety: everything here is stateless and thread-safe.
#pragma once

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>
#include <string>

namespace teduh::core {

using boost::system::error_code;
using boost::system::result;

enum class errc {
  // Input from a user or a script: fix the input and try again.
  unknown_kind = 1,  // no such record kind
  unknown_field,     // no such field in the record kind
  bad_value,         // the text is not a valid value for the field
  not_found,         // no such case/record/device on this device
  invalid_argument,  // any other bad argument
  // Local state.
  wrong_passphrase,  // the vault did not open with this passphrase
  vault_missing,     // this home folder holds no enrolled device
  vault_exists,      // this home folder already holds a device
  vault_corrupt,     // the vault file is damaged
  vault_wiped,       // too many failed unlocks: the vault was erased
  locked,            // the vault is locked
  store_failed,      // the local or server store failed (sticky until reopened)
  store_busy,        // another process holds the store; retry shortly
  disk_full,         // no space left: nothing was changed
  io_error,          // a file could not be read or written
  key_missing,       // this device does not hold the key for a value
  integrity,         // a sealed value or signature did not verify: never shown as data
  // Protocol and server.
  malformed_frame,  // bytes that are not a valid frame
  frame_too_large,
  unexpected_frame,     // a valid frame at the wrong moment
  unsupported_version,  // the server or device must be updated
  device_unknown,
  device_pending,  // an admin has not approved this device yet
  device_revoked,
  bad_signature,
  enrollment_refused,  // unknown, expired or used enrollment code
  forbidden,           // the role may not do this
  out_of_scope,        // the record is outside the device's scope
  rejected,            // a change was rejected by the server
  connection_failed,   // could not reach the server: retry later
  timeout,             // retry later
  server_error,        // the server failed: retry later
  wrong_unit,          // the server's unit root key does not match the code
  wipe_ordered,        // the server handed this revoked device a wipe order
  server_busy,         // the server has too many connections: retry later
  server_disk_full,    // the server's disk is full: changes stay queued; retry later
  server_damaged,      // the server found damage in what it stores: an admin must act
  store_damaged,       // this store holds damaged rows: never shown as data (store check)
};
const boost::system::error_category& core_category() noexcept;
error_code make_error_code(errc e) noexcept;

// What the caller should do about an error.
enum class condition {
  retry_later = 1,  // transient: the same call may succeed later
  fix_input,        // the caller's input is wrong
  fatal,            // stop: state must be repaired, or the device re-enrolled
};
const boost::system::error_category& condition_category() noexcept;
boost::system::error_condition make_error_condition(condition c) noexcept;

// An error code with a message for the user: the message adds detail (e.g.
// the list of valid values) and never holds sealed content.
struct Failure {
  error_code code;
  std::string message;
};

}  // namespace teduh::core

namespace boost::system {
template <>
struct is_error_code_enum<teduh::core::errc> : std::true_type {};
template <>
struct is_error_condition_enum<teduh::core::condition> : std::true_type {};
}  // namespace boost::system
