// An in-memory stand-in for teduh-server, enough of PROTOCOL.md for the
// device tests: enrollment with codes, Hello/Challenge/Proof/Welcome, Push
// with device_seq idempotency and core::DecideMerge, Pull with a cursor,
// ListDevices/ApproveDevice with grant verification. No scope filtering.
// Faults: drop the connection after a committed push; reject a field.
//
// Thread safety: none; tests call it from one thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "teduh/core/hlc.h"
#include "teduh/core/ids.h"
#include "teduh/core/transport.h"
#include "teduh/sync/v1/sync.pb.h"

namespace teduh::testing {

class FakeServer {
 public:
  FakeServer();

  // A one-time code. The bootstrap code has no fingerprint suffix.
  std::string AddCode(teduh::sync::v1::Role role, const std::string& user);
  std::string BootstrapCode();

  core::Connector connector();

  struct DeviceRow {
    core::Id id{};
    std::string sign_pk, box_pk, user, label;
    teduh::sync::v1::Role role{};
    teduh::sync::v1::DeviceState state{};
    std::vector<teduh::keys::v1::Grant> grants;
    std::uint64_t max_seq = 0;
    std::map<std::uint64_t, teduh::sync::v1::ChangeResult> results;
  };
  std::map<core::Id, DeviceRow> devices;
  std::string server_id;
  std::string unit_root_pk;
  std::uint64_t generation = 1;
  std::string time_zone = "WIB";                  // the unit's, sent in the Welcome
  std::vector<teduh::sync::v1::FieldChange> log;  // every stored value, seq = index + 1
  std::size_t applied_count = 0;                  // changes applied (not resends)

  // Faults.
  bool drop_after_push = false;           // commit the push, then lose the connection
  std::set<std::uint32_t> reject_fields;  // field numbers rejected with "forbidden"
  std::size_t max_pull = 5000;

  std::string Handle(const std::string& bytes, bool* drop);

 private:
  struct CodeRow {
    teduh::sync::v1::Role role{};
    std::string user;
    bool bootstrap = false;
    bool used = false;
  };
  std::map<std::string, CodeRow> codes_;
  std::map<std::pair<std::string, std::uint32_t>, std::size_t> current_;  // -> log index
  core::FakeEnv env_{1'700'000'000'000};
  core::Hlc hlc_{env_, 0};
  int counter_ = 0;
  core::Id session_device_{};
  std::string nonce_;
};

}  // namespace teduh::testing
