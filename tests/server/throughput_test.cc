// A quick load check, disabled by default (the benchmark is tools/teduh-bench):
//   server_test --gtest_also_run_disabled_tests --gtest_filter='*Throughput*'
#include <thread>

#include "server/server_fixture.h"
#include "teduh/core/schema.h"

namespace teduh::server::testing {
namespace {

using ThroughputTest = ServerTest;

TEST_F(ThroughputTest, DISABLED_TenDevicesPushTwentyThousandChangesEach) {
  EnrollBootstrapAdmin();
  constexpr int kDevices = 10, kCases = 1000, kFields = 20, kPerFrame = 5000;
  std::vector<TestDevice> devices;
  std::vector<std::vector<std::string>> frames(kDevices);
  for (int d = 0; d < kDevices; ++d) {
    devices.push_back(EnrollApproved(v1::ROLE_PENDAMPING, "user" + std::to_string(d)));
    v1::Frame f;
    for (int c = 0; c < kCases; ++c) {
      Id id = core::NewId();
      for (int k = 0; k < kFields; ++k) {
        // Field 100+k as an unknown length-delimited field: tag, length, 20 bytes.
        const std::uint32_t number = 100 + k;
        std::string value;
        std::uint32_t tag = (number << 3) | 2;
        while (tag >= 0x80) {
          value.push_back(static_cast<char>(tag | 0x80));
          tag >>= 7;
        }
        value.push_back(static_cast<char>(tag));
        value.push_back(20);
        value.append(20, 'v');
        *f.mutable_push()->add_changes() =
            OpenChange(devices[d], id, core::kCaseKind, {}, number, value);
        if (f.push().changes_size() == kPerFrame) {
          f.set_request_id(frames[d].size() + 1);
          frames[d].push_back(f.SerializeAsString());
          f.Clear();
        }
      }
    }
  }
  std::vector<std::unique_ptr<TestClient>> clients;
  for (auto& d : devices) clients.push_back(Login(d));
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int d = 0; d < kDevices; ++d) {
    threads.emplace_back([&, d] {
      for (const auto& bytes : frames[d]) {
        clients[d]->SendBytes(bytes);
        auto reply = clients[d]->Receive(std::chrono::seconds(60));
        if (!reply || !reply->has_push_result()) {
          ++failures;
          continue;
        }
        for (const auto& r : reply->push_result().results())
          if (r.status() != v1::ChangeResult::STATUS_APPLIED && failures++ == 0)
            std::printf("first failure: %s %s\n", r.reason().c_str(), r.detail().c_str());
      }
    });
  }
  for (auto& t : threads) t.join();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(failures.load(), 0);
  const double changes = double(kDevices) * kCases * kFields;
  std::printf("pushed %.0f changes in %.2f s: %.0f changes/s, %llu commits\n", changes, s,
              changes / s, static_cast<unsigned long long>(server_->metrics().commits));

  TestDevice office = EnrollApproved(v1::ROLE_OFFICE, "office");
  auto client = Login(office);
  start = std::chrono::steady_clock::now();
  auto all = PullAll(*client);
  s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("pulled %zu changes in %.2f s\n", all.size(), s);
  EXPECT_EQ(all.size(), static_cast<std::size_t>(changes));
}

}  // namespace
}  // namespace teduh::server::testing
