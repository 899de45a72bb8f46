// Test fixture for real devices (the field-core Device API over WebSocket)
// against the real server of ServerTest: the bootstrap admin device enrolls
// first, then staff devices are enrolled and approved by it.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/server_fixture.h"
#include "teduh/core/device.h"
#include "teduh/server/admin.h"

namespace teduh::server::testing {

class DeviceServerTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    admin_dev_ = Enroll("admin", bootstrap_code_);
  }

  std::string Url() const { return "ws://127.0.0.1:" + std::to_string(server_->port()) + "/sync"; }

  static crypto::SecureBuffer Pass() {
    static constexpr std::string_view kPass = "kata sandi uji";
    return std::move(*crypto::SecureBuffer::CopyOf(core::AsSpan(kPass)));
  }

  core::DeviceOptions Options(const std::string& name, core::Env* env = nullptr) {
    core::DeviceOptions o;
    o.vault.kdf = core::KdfMode::kInteractive;
    o.label = name;
    o.env = env ? env : &env_;  // by default the devices share the server's clock
    o.transport.busy_wait = busy_wait_;
    return o;
  }

  std::unique_ptr<core::Device> Enroll(const std::string& name, const std::string& code,
                                       core::Env* env = nullptr) {
    auto d = core::Device::Enroll(dir_ + "/" + name, Url(), code, Pass(), Options(name, env));
    EXPECT_TRUE(d) << (d ? "" : d.error().message);
    return d ? std::move(*d) : nullptr;
  }

  std::unique_ptr<core::Device> Staff(const std::string& user, v1::Role role,
                                      core::Env* env = nullptr) {
    auto code = CreateEnrollment(data_dir_, role, user, std::chrono::hours(1), env_);
    EXPECT_TRUE(code) << (code ? "" : code.error().message());
    auto d = Enroll(user, code->code, env);
    auto ok = admin_dev_->ApproveDevice(core::ToHex(d->info().device_id));
    EXPECT_TRUE(ok) << (ok ? "" : ok.error().message);
    Sync(*d);
    return d;
  }

  static core::SyncReport Sync(core::Device& d) {
    auto r = d.Sync();
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    return r ? *r : core::SyncReport{};
  }

  static std::string Value(core::Device& d, const core::Id& case_id, std::string_view field) {
    auto view = d.ShowCase(core::ToHex(case_id));
    EXPECT_TRUE(view) << (view ? "" : view.error().message);
    if (!view) return {};
    for (const auto& f : view->fields)
      if (f.name == field) return f.display;
    return {};
  }

  std::unique_ptr<core::Device> admin_dev_;
  // How long the devices made from now on try a busy server again.
  std::chrono::milliseconds busy_wait_{30'000};
};

// The case as `case show` reads it on `d` (empty, with a test failure, if it cannot).
inline core::CaseView Show(core::Device& d, const core::Id& case_id) {
  auto v = d.ShowCase(core::ToHex(case_id));
  EXPECT_TRUE(v) << (v ? "" : v.error().message);
  return v ? *v : core::CaseView{};
}

// A deadline of `case_id` of `kind` in `tasks`, copied (the list it comes
// from is usually a temporary), or nullopt.
inline std::optional<core::TaskView> FindTask(const std::vector<core::TaskView>& tasks,
                                              const core::Id& case_id, std::string_view kind) {
  for (const auto& t : tasks)
    if (t.case_id == case_id && t.kind == kind) return t;
  return std::nullopt;
}

}  // namespace teduh::server::testing
