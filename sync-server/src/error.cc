#include "teduh/server/error.h"

#include <string>

#include "teduh/core/i18n.h"

namespace teduh::server {
namespace {

class ServerCategory final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "teduh.server"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::already_initialised:
        return core::Tr("the data folder already holds a Teduh server store");
      case errc::not_initialised:
        return core::Tr("the data folder holds no Teduh server store (run `teduh-server init`)");
      case errc::plaintext_refused:
        return core::Tr(
            "refusing plain ws:// on a non-loopback address (use TLS or "
            "--insecure-plaintext)");
      case errc::bad_address:
        return core::Tr("the listen address is not an IP address and port");
      case errc::tls_failed:
        return core::Tr("the TLS certificate or key could not be loaded");
      case errc::stopped:
        return core::Tr("the server is shutting down");
      case errc::in_use:
        return core::Tr(
            "another teduh-server process is serving this data folder; stop it first (nothing "
            "was changed)");
      case errc::ops_listen_failed:
        return core::Tr(
            "cannot listen on the operations address (--ops-listen): is its port in use?");
    }
    return core::Tr("unknown server error");
  }
};

}  // namespace

const boost::system::error_category& server_category() noexcept {
  static const ServerCategory category;
  return category;
}

error_code make_error_code(errc e) noexcept {
  return error_code(static_cast<int>(e), server_category());
}

}  // namespace teduh::server
