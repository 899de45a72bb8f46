#include "teduh/core/error.h"

namespace teduh::core {
namespace {

class CoreCategory final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "teduh.core"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::unknown_kind:
        return "unknown record kind";
      case errc::unknown_field:
        return "unknown field";
      case errc::bad_value:
        return "invalid value";
      case errc::not_found:
        return "not found";
      case errc::invalid_argument:
        return "invalid argument";
      case errc::wrong_passphrase:
        return "wrong passphrase";
      case errc::vault_missing:
        return "no device is set up in this folder (run `teduh init`)";
      case errc::vault_exists:
        return "a device is already set up in this folder";
      case errc::vault_corrupt:
        return "the vault file is damaged";
      case errc::vault_wiped:
        return "too many failed unlocks: the vault was erased";
      case errc::locked:
        return "the vault is locked";
      case errc::store_failed:
        return "the store failed; reopen it";
      case errc::store_busy:
        return "the store is busy; try again";
      case errc::disk_full:
        return "the disk is full; nothing was changed";
      case errc::io_error:
        return "a file could not be read or written";
      case errc::key_missing:
        return "this device does not hold the key for this value";
      case errc::integrity:
        return "a sealed value failed its integrity check";
      case errc::malformed_frame:
        return "malformed frame";
      case errc::frame_too_large:
        return "frame too large";
      case errc::unexpected_frame:
        return "unexpected frame";
      case errc::unsupported_version:
        return "protocol version not supported: update Teduh";
      case errc::device_unknown:
        return "the server does not know this device";
      case errc::device_pending:
        return "this device is waiting for an admin to approve it";
      case errc::device_revoked:
        return "this device was revoked";
      case errc::bad_signature:
        return "bad signature";
      case errc::enrollment_refused:
        return "the enrollment code is unknown, expired or already used";
      case errc::forbidden:
        return "this role may not do that";
      case errc::out_of_scope:
        return "the record is outside this device's scope";
      case errc::rejected:
        return "the server rejected the change";
      case errc::connection_failed:
        return "could not reach the server";
      case errc::timeout:
        return "timed out";
      case errc::server_error:
        return "the server failed; try again later";
      case errc::wrong_unit:
        return "the server does not belong to the unit named by the code";
      case errc::wipe_ordered:
        return "this device was revoked and ordered to erase itself";
    }
    return "unknown error";
  }
  boost::system::error_condition default_error_condition(int ev) const noexcept override {
    switch (static_cast<errc>(ev)) {
      case errc::store_busy:
      case errc::connection_failed:
      case errc::timeout:
      case errc::server_error:
        return make_error_condition(condition::retry_later);
      case errc::unknown_kind:
      case errc::unknown_field:
      case errc::bad_value:
      case errc::not_found:
      case errc::invalid_argument:
      case errc::wrong_passphrase:
      case errc::enrollment_refused:
        return make_error_condition(condition::fix_input);
      default:
        return make_error_condition(condition::fatal);
    }
  }
};

class ConditionCategory final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "teduh.condition"; }
  std::string message(int ev) const override {
    switch (static_cast<condition>(ev)) {
      case condition::retry_later:
        return "retry later";
      case condition::fix_input:
        return "fix the input";
      case condition::fatal:
        return "cannot continue";
    }
    return "unknown condition";
  }
};

}  // namespace

const boost::system::error_category& core_category() noexcept {
  static const CoreCategory c;
  return c;
}
error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), core_category()}; }

const boost::system::error_category& condition_category() noexcept {
  static const ConditionCategory c;
  return c;
}
boost::system::error_condition make_error_condition(condition c) noexcept {
  return {static_cast<int>(c), condition_category()};
}

}  // namespace teduh::core
