// A quick load check, disabled by default (the benchmark is tools/teduh-bench):
//   server_test --gtest_also_run_disabled_tests --gtest_filter='*Throughput*'
#include <sys/resource.h>

#include <thread>

#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>  // no-ops unless run under valgrind --tool=callgrind
#else
#define CALLGRIND_START_INSTRUMENTATION
#define CALLGRIND_STOP_INSTRUMENTATION
#define CALLGRIND_DUMP_STATS_AT(name)
#endif

#include "server/server_fixture.h"
#include "teduh/case/v1/case.pb.h"
#include "teduh/core/schema.h"

namespace teduh::server::testing {
namespace {

using ThroughputTest = ServerTest;

// Field `number` as an unknown length-delimited field: tag, length, 20 bytes.
std::string UnknownField(std::uint32_t number) {
  std::string value;
  std::uint32_t tag = (number << 3) | 2;
  while (tag >= 0x80) {
    value.push_back(static_cast<char>(tag | 0x80));
    tag >>= 7;
  }
  value.push_back(static_cast<char>(tag));
  value.push_back(20);
  value.append(20, 'v');
  return value;
}

// Frames of at most `per_frame` changes, with request ids from 1.
std::vector<std::string> Frames(std::vector<v1::FieldChange> changes, int per_frame) {
  std::vector<std::string> frames;
  v1::Frame f;
  for (auto& c : changes) {
    *f.mutable_push()->add_changes() = std::move(c);
    if (f.push().changes_size() == per_frame) {
      f.set_request_id(frames.size() + 1);
      frames.push_back(f.SerializeAsString());
      f.Clear();
    }
  }
  if (f.push().changes_size() > 0) {
    f.set_request_id(frames.size() + 1);
    frames.push_back(f.SerializeAsString());
  }
  return frames;
}

double ProcessCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

struct PushRun {
  double seconds = 0;
  std::size_t merged = 0;  // answered merged or in conflict
  int failures = 0;        // no answer, or anything else not applied
};

// Every client sends its frames one after another, all clients at once.
// Under callgrind (--instr-atstart=no) only this is counted, and dumped as
// `what`: a figure that does not vary from run to run.
PushRun PushAtOnce(std::vector<std::unique_ptr<TestClient>>& clients,
                   const std::vector<std::vector<std::string>>& frames, const char* what) {
  std::atomic<int> failures{0};
  std::atomic<std::size_t> merged{0};
  CALLGRIND_START_INSTRUMENTATION;
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (std::size_t d = 0; d < clients.size(); ++d) {
    threads.emplace_back([&, d] {
      for (const auto& bytes : frames[d]) {
        clients[d]->SendBytes(bytes);
        auto reply = clients[d]->Receive(std::chrono::seconds(60));
        if (!reply || !reply->has_push_result()) {
          ++failures;
          continue;
        }
        for (const auto& r : reply->push_result().results()) {
          if (r.status() == v1::ChangeResult::STATUS_MERGED ||
              r.status() == v1::ChangeResult::STATUS_CONFLICT)
            ++merged;
          else if (r.status() != v1::ChangeResult::STATUS_APPLIED && failures++ == 0)
            std::printf("first failure: %s %s\n", r.reason().c_str(), r.detail().c_str());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  PushRun run;
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CALLGRIND_STOP_INSTRUMENTATION;
  CALLGRIND_DUMP_STATS_AT(what);
  run.merged = merged.load();
  run.failures = failures.load();
  return run;
}

TEST_F(ThroughputTest, DISABLED_TenDevicesPushTwentyThousandChangesEach) {
  EnrollBootstrapAdmin();
  constexpr int kDevices = 10, kCases = 1000, kFields = 20, kPerFrame = 5000;
  std::vector<TestDevice> devices;
  std::vector<std::vector<std::string>> frames;
  for (int d = 0; d < kDevices; ++d) {
    devices.push_back(EnrollApproved(v1::ROLE_PENDAMPING, "user" + std::to_string(d)));
    std::vector<v1::FieldChange> changes;
    for (int c = 0; c < kCases; ++c) {
      Id id = core::NewId();
      for (int k = 0; k < kFields; ++k) {
        const std::uint32_t number = 100 + k;
        changes.push_back(
            OpenChange(devices[d], id, core::kCaseKind, {}, number, UnknownField(number)));
      }
    }
    frames.push_back(Frames(std::move(changes), kPerFrame));
  }
  std::vector<std::unique_ptr<TestClient>> clients;
  for (auto& d : devices) clients.push_back(Login(d));
  const PushRun run = PushAtOnce(clients, frames, "ten devices");
  EXPECT_EQ(run.failures, 0);
  EXPECT_EQ(run.merged, 0u);
  double s = run.seconds;
  const double changes = double(kDevices) * kCases * kFields;
  std::printf("pushed %.0f changes in %.2f s: %.0f changes/s, %llu commits\n", changes, s,
              changes / s, static_cast<unsigned long long>(server_->metrics().commits));

  TestDevice office = EnrollApproved(v1::ROLE_OFFICE, "office");
  auto client = Login(office);
  auto start = std::chrono::steady_clock::now();
  auto all = PullAll(*client);
  s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("pulled %zu changes in %.2f s\n", all.size(), s);
  EXPECT_EQ(all.size(), static_cast<std::size_t>(changes));
}

// The server's side of teduh-bench's edit rounds: 10,000 cases of 20 fields
// (four of them the fields the office edits) are pushed, then 4 office
// devices pull them all and edit four fields of 2,000 cases — once each its own cases (no
// merge), once all the same cases (every push after the first of a field is a
// merge; the chronology a conflict) — pushing at once in 5,000-change frames.
TEST_F(ThroughputTest, DISABLED_FourOfficeDevicesEditTheSameCases) {
  namespace cw = teduh::casework::v1;
  EnrollBootstrapAdmin();
  constexpr int kWriters = 4, kCases = 10000, kPerFrame = 5000, kEditors = 4, kEdited = 2000;
  struct Stored {
    Id id;
    v1::Stamp risk, types, route, chronology;
  };
  std::vector<Stored> cases(kCases);
  std::vector<TestDevice> writers;
  for (int w = 0; w < kWriters; ++w)
    writers.push_back(EnrollApproved(v1::ROLE_PENDAMPING, "writer" + std::to_string(w)));
  auto run = [&](std::vector<TestDevice>& devices, std::vector<std::vector<v1::FieldChange>>& all,
                 const char* what, bool expect_applied) {
    std::vector<std::unique_ptr<TestClient>> clients;
    std::vector<std::vector<std::string>> frames;
    std::size_t total = 0;
    for (std::size_t d = 0; d < devices.size(); ++d) {
      clients.push_back(Login(devices[d]));
      total += all[d].size();
      frames.push_back(Frames(std::move(all[d]), kPerFrame));
    }
    const auto commits_before = server_->metrics().commits;
    // CPU time of the whole process (server threads and the small raw
    // clients): steadier than the wall clock on a shared machine.
    const double cpu_before = ProcessCpuSeconds();
    const PushRun r = PushAtOnce(clients, frames, what);
    const double cpu = ProcessCpuSeconds() - cpu_before;
    EXPECT_EQ(r.failures, 0);
    if (expect_applied) {
      EXPECT_EQ(r.merged, 0u);
    }
    std::printf(
        "%s: %zu changes in %.3f s: %.0f changes/s (%zu merged), %llu commits, %.1f us CPU per "
        "change\n",
        what, total, r.seconds, total / r.seconds, r.merged,
        static_cast<unsigned long long>(server_->metrics().commits - commits_before),
        1e6 * cpu / static_cast<double>(total));
  };
  auto value = [](auto set) {
    cw::Case c;
    set(c);
    return c.SerializeAsString();
  };
  {
    std::vector<std::vector<v1::FieldChange>> all(kWriters);
    for (int i = 0; i < kCases; ++i) {
      TestDevice& w = writers[i % kWriters];
      auto& out = all[i % kWriters];
      Stored& st = cases[i];
      st.id = core::NewId();
      auto add = [&](v1::FieldChange c) {
        out.push_back(c);
        return c.stamp();
      };
      st.risk = add(OpenChange(w, st.id, core::kCaseKind, {}, cw::Case::kRiskLevelFieldNumber,
                               value([](cw::Case& c) { c.set_risk_level(cw::RISK_LEVEL_LOW); })));
      st.types = add(
          OpenChange(w, st.id, core::kCaseKind, {}, cw::Case::kViolenceTypesFieldNumber,
                     value([](cw::Case& c) { c.add_violence_types(cw::VIOLENCE_TYPE_PHYSICAL); })));
      st.route = add(OpenChange(w, st.id, core::kCaseKind, {}, cw::Case::kRouteFieldNumber,
                                value([](cw::Case& c) { c.set_route(cw::ROUTE_MEDIATION); })));
      st.chronology =
          add(SealedChange(w, st.id, core::kCaseKind, {}, cw::Case::kChronologyFieldNumber));
      for (std::uint32_t k = 0; k < 16; ++k)
        add(OpenChange(w, st.id, core::kCaseKind, {}, 100 + k, UnknownField(100 + k)));
    }
    run(writers, all, "new cases", true);
  }
  std::vector<TestDevice> editors;
  for (int e = 0; e < kEditors; ++e) {
    editors.push_back(EnrollApproved(v1::ROLE_OFFICE, "office" + std::to_string(e)));
    // An office device edits what it has pulled (as in teduh-bench): the
    // server then already records that it holds every case.
    auto client = Login(editors.back());
    EXPECT_EQ(PullAll(*client).size(), static_cast<std::size_t>(kCases) * 20);
  }
  // Editor e edits case case_of(e, i) for i < n over the stamps pulled before.
  auto edits = [&](int n, auto case_of) {
    std::vector<std::vector<v1::FieldChange>> all(kEditors);
    for (int e = 0; e < kEditors; ++e) {
      for (int i = 0; i < n; ++i) {
        const Stored& st = cases[case_of(e, i)];
        auto with_base = [&](v1::FieldChange c, const v1::Stamp& base) {
          *c.mutable_base() = base;
          all[e].push_back(std::move(c));
        };
        with_base(OpenChange(editors[e], st.id, core::kCaseKind, {},
                             cw::Case::kRiskLevelFieldNumber, value([&](cw::Case& c) {
                               c.set_risk_level(static_cast<cw::RiskLevel>(1 + (i + e) % 3));
                             })),
                  st.risk);
        with_base(OpenChange(editors[e], st.id, core::kCaseKind, {},
                             cw::Case::kViolenceTypesFieldNumber, value([&](cw::Case& c) {
                               c.add_violence_types(cw::VIOLENCE_TYPE_PHYSICAL);
                               c.add_violence_types(static_cast<cw::ViolenceType>(2 + e % 4));
                             })),
                  st.types);
        with_base(
            OpenChange(editors[e], st.id, core::kCaseKind, {}, cw::Case::kRouteFieldNumber,
                       value([&](cw::Case& c) { c.set_route(static_cast<cw::Route>(1 + e % 4)); })),
            st.route);
        with_base(
            SealedChange(editors[e], st.id, core::kCaseKind, {}, cw::Case::kChronologyFieldNumber),
            st.chronology);
      }
    }
    return all;
  };
  constexpr int kSolo = kEdited;  // kEdited + kEditors * kSolo <= kCases
  auto solo = edits(kSolo, [](int e, int i) { return kEdited + e * kSolo + i; });
  run(editors, solo, "edits without concurrency", true);
  auto same = edits(kEdited, [](int, int i) { return i; });
  run(editors, same, "conflict-heavy", false);
}

}  // namespace
}  // namespace teduh::server::testing
