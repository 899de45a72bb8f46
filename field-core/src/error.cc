#include "teduh/core/error.h"

#include "teduh/core/i18n.h"

namespace teduh::core {
namespace {

class CoreCategory final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "teduh.core"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::unknown_kind:
        return Tr("unknown record kind");
      case errc::unknown_field:
        return Tr("unknown field");
      case errc::bad_value:
        return Tr("invalid value");
      case errc::not_found:
        return Tr("not found");
      case errc::invalid_argument:
        return Tr("invalid argument");
      case errc::wrong_passphrase:
        return Tr("wrong passphrase");
      case errc::vault_missing:
        return Tr("no device is set up in this folder (run `teduh init`)");
      case errc::vault_exists:
        return Tr("a device is already set up in this folder");
      case errc::vault_corrupt:
        return Tr("the vault file is damaged");
      case errc::vault_wiped:
        return Tr("too many failed unlocks: the vault was erased");
      case errc::locked:
        return Tr("the vault is locked");
      case errc::store_failed:
        return Tr("the store failed; reopen it");
      case errc::store_busy:
        return Tr("the store is busy; try again");
      case errc::disk_full:
        return Tr("the disk is full; nothing was changed");
      case errc::io_error:
        return Tr("a file could not be read or written");
      case errc::key_missing:
        return Tr("this device does not hold the key for this value");
      case errc::integrity:
        return Tr("a sealed value failed its integrity check");
      case errc::malformed_frame:
        return Tr("malformed frame");
      case errc::frame_too_large:
        return Tr("frame too large");
      case errc::unexpected_frame:
        return Tr("unexpected frame");
      case errc::unsupported_version:
        return Tr("protocol version not supported: update Teduh");
      case errc::device_unknown:
        return Tr("the server does not know this device");
      case errc::device_pending:
        return Tr("this device is waiting for an admin to approve it");
      case errc::device_revoked:
        return Tr("this device was revoked");
      case errc::bad_signature:
        return Tr("bad signature");
      case errc::enrollment_refused:
        return Tr("the enrollment code is unknown, expired or already used");
      case errc::forbidden:
        return Tr("this role may not do that");
      case errc::out_of_scope:
        return Tr("the record is outside this device's scope");
      case errc::rejected:
        return Tr("the server rejected the change");
      case errc::connection_failed:
        return Tr("could not reach the server");
      case errc::timeout:
        return Tr("timed out");
      case errc::server_error:
        return Tr("the server failed; try again later");
      case errc::wrong_unit:
        return Tr("the server does not belong to the unit named by the code");
      case errc::wipe_ordered:
        return Tr("this device was revoked and ordered to erase itself");
      case errc::server_busy:
        return Tr("the server is busy; try again later");
      case errc::server_disk_full:
        return Tr("the server's disk is full; changes are kept on this device and sent later");
      case errc::server_damaged:
        return Tr("the server found damage in its store; tell the unit's IT admin");
      case errc::store_damaged:
        return Tr("damage was found in the store; damaged values are never shown");
    }
    return Tr("unknown error");
  }
  boost::system::error_condition default_error_condition(int ev) const noexcept override {
    switch (static_cast<errc>(ev)) {
      case errc::store_busy:
      case errc::connection_failed:
      case errc::timeout:
      case errc::server_error:
      case errc::server_busy:
      case errc::server_disk_full:
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
        return Tr("retry later");
      case condition::fix_input:
        return Tr("fix the input");
      case condition::fatal:
        return Tr("cannot continue");
    }
    return Tr("unknown condition");
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
