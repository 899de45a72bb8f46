// teduh-bench: the sync benchmark of docs/PERFORMANCE.md.
//
// It runs a real server (in a child process, so its peak RSS is its own) on a
// loopback port with a fresh temporary store, and real devices (the field-core
// Device API, each with its own home folder, vault and encrypted local store)
// talking to it over WebSocket:
//   1. N field devices (default 10) each record C cases (default 1,000) offline,
//      about 20 fields each, four of them sealed (not timed: `prepare_s`);
//   2. all of them push at once (`Sync` with push_only: their pulls, which
//      would share these two cores with the server, come after, untimed); the
//      push phase is timed from the first connection to the last device's
//      final acknowledged batch
//      (`push_field_changes_per_s` = changes acknowledged after commit / s);
//   3. a fresh office device pulls, verifies and stores all N*C cases
//      (`pull_10k_cases_s` for the default workload), then every case is
//      opened and every sealed value decrypted (`decrypt_all_cases_s`);
//   4a. edits without concurrency: the same office devices make the same four
//      edits, each device to its own --conflict-cases cases
//      (`edit_push_changes_per_s`): overwriting existing fields, the baseline
//      of step 4 (fewer cases per device if the unit has too few);
//   4. conflict-heavy: --conflict-devices office devices (default 4) edit the
//      same --conflict-cases cases (default 2,500) offline — risk level (MAX),
//      violence types (UNION), route (LWW), chronology (REVIEW) — and push at
//      once (`conflict_push_changes_per_s`, with `conflict_merged` and
//      `conflict_conflicts` from the devices' results, `conflict_merges_per_s`:
//      both together per second, and how many times slower than the push of
//      step 2 and of step 4a: `conflict_slower_than_push`,
//      `conflict_slower_than_edit_push`);
//   5. with --rotation-case-keys K: small cases are added until the unit has K
//      case keys, the admin device rotates the general key
//      (`rotation_admin_cpu_s`: CPU of this process during the rotation; the
//      server runs in its own), and the office device catches up
//      (`rotation_catch_up_values`, `rotation_catch_up_bytes_received`: no case
//      content, two values per case key);
//   6. with --rekey: the admin device revokes the first field device, rotates
//      the general key (it held the current epoch) and re-keys every case it
//      held (`rekey_admin_cpu_s`, `rekey_wall_s`, `rekey_values`,
//      `rekey_bytes_sent`); the office device catches up
//      (`rekey_catch_up_values`, `rekey_catch_up_bytes_received`);
//   7. with --backup: the admin device names the unit backup key, then every
//      field device keeps editing one of its cases and pushing it (one sync
//      each, timed) for --backup-baseline-s seconds, then while
//      `teduh-server backup` runs (in a child process, as an IT admin runs it),
//      then 0.5 s more: `backup_s`, `backup_file_bytes`, `backup_store_bytes`,
//      `backup_snapshot_ms` (how long its read transaction was open), and the
//      push latencies before and during it (`backup_push_p99_ms_before`,
//      `backup_push_max_ms_before`, `backup_push_p99_ms_during`,
//      `backup_push_max_ms_during`, `backup_pushes_during`); then the
//      server's store is lost: `teduh-server restore` puts the backup back
//      over it (`restore_s`; `restore_changes_to_come_back`, the edits made
//      after the backup), the server starts again, every field device syncs
//      at once and re-sends (`restore_resend_s`, `restore_changes_resent`),
//      and the office device pulls the whole unit again from the start
//      (`restore_office_pull_s`, `restore_office_values_pulled`); `device
//      list` must show every lost change sent again;
//   8. the server's peak resident set size (`server_peak_rss_bytes`, VmHWM).
// With --json it prints one JSON object; otherwise a short report.
#include <fmt/format.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "bench.h"
#include "teduh/core/device.h"
#include "teduh/core/roles.h"
#include "teduh/crypto/crypto.h"
#include "teduh/server/admin.h"
#include "teduh/server/backup.h"
#include "teduh/server/server.h"

namespace {

using namespace teduh::bench;

// Bytes a device sent and received over its connections.
struct ByteCounts {
  std::atomic<std::size_t> sent{0}, received{0};
};

class CountingTransport final : public core::Transport {
 public:
  CountingTransport(std::unique_ptr<core::Transport> inner, ByteCounts* counts)
      : inner_(std::move(inner)), counts_(counts) {}
  core::Outcome<void> Send(std::string_view bytes) override {
    counts_->sent += bytes.size();
    return inner_->Send(bytes);
  }
  core::Outcome<std::string> Receive() override {
    auto r = inner_->Receive();
    if (r) counts_->received += r->size();
    return r;
  }
  void Close() override { inner_->Close(); }

 private:
  std::unique_ptr<core::Transport> inner_;
  ByteCounts* counts_;
};

core::DeviceOptions CountedOptions(ByteCounts* counts) {
  core::DeviceOptions o = Options();
  o.connector =
      [counts](std::string_view url,
               const core::TransportOptions& t) -> core::Outcome<std::unique_ptr<core::Transport>> {
    auto inner = core::ConnectWebSocket(url, t);
    if (!inner) return inner.error();
    return std::unique_ptr<core::Transport>(new CountingTransport(std::move(*inner), counts));
  };
  return o;
}

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// About 20 fields: these 17 plus case_number, created_at and stage set by NewCase.
std::vector<std::string> CaseFields(int device, int i) {
  static const char* kRisk[] = {"rendah", "sedang", "tinggi"};
  static const char* kCategory[] = {"kdrt", "perlindungan anak", "kekerasan seksual", "lainnya"};
  return {
      fmt::format("risk_level={}", kRisk[i % 3]),
      fmt::format("category={}", kCategory[i % 4]),
      "violence_types=fisik,psikis",
      "channel=hotline",
      "route=proses hukum",
      "needs=medis,hukum",
      fmt::format("region_code=14.72.{:02}", i % 7 + 1),
      fmt::format("received_at={}", 1'700'000'000 + device * 100'000 + i * 60),
      fmt::format("victim_is_child={}", i % 2 ? "true" : "false"),
      "victim_has_disability=false",
      "victim_is_elderly=false",
      fmt::format("perpetrator_threatening={}", i % 5 == 0 ? "true" : "false"),
      "referrer_type=ketua RT/RW",
      fmt::format("chronology=Kronologi kejadian kasus {} perangkat {}: korban melapor ke hotline "
                  "setelah kejadian di rumah pada malam hari.",
                  i, device),
      "incident_details=Kejadian di dapur rumah, saksi tetangga.",
      "safety_plan=Korban tinggal sementara di rumah keluarga; nomor darurat disimpan.",
      "risk_rationale=Pelaku masih tinggal serumah dan mengancam.",
  };
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"teduh-bench: sync throughput and pull time on loopback"};
  int devices = 10;
  int cases = 1000;
  int threads = 2;
  bool json = false;
  bool keep = false;
  app.add_option("--devices", devices, "field devices pushing at once")->check(CLI::Range(1, 64));
  app.add_option("--cases", cases, "cases per device")->check(CLI::Range(1, 100000));
  app.add_option("--threads", threads, "server io threads")->check(CLI::Range(1, 16));
  int conflict_devices = 4;
  int conflict_cases = 2500;
  app.add_option("--conflict-devices", conflict_devices,
                 "office devices editing the same cases at once (0: skip that workload)")
      ->check(CLI::Range(0, 16));
  app.add_option("--conflict-cases", conflict_cases, "cases they all edit")
      ->check(CLI::Range(1, 100000));
  int rotation_case_keys = 0;
  app.add_option("--rotation-case-keys", rotation_case_keys,
                 "rotate the general key of a unit with this many case keys (0: skip; more cases "
                 "are recorded to reach it)")
      ->check(CLI::Range(0, 1000000));
  bool rekey = false;
  app.add_flag("--rekey", rekey,
               "revoke the first field device, rotate, and re-key every case it held");
  bool backup = false;
  double backup_baseline_s = 3.0;
  app.add_flag("--backup", backup, "measure a backup taken while the field devices push");
  app.add_option("--backup-baseline-s", backup_baseline_s,
                 "seconds of pushes measured before the backup starts")
      ->check(CLI::Range(0.5, 60.0));
  app.add_flag("--json", json, "print one JSON object");
  app.add_flag("--keep", keep, "keep the temporary folder");
  bool flood = false;
  FloodOptions flood_options;
  app.add_flag("--flood", flood,
               "instead: idle signed-in devices and a stranger's flood (memory, budgets)");
  app.add_option("--idle-devices", flood_options.idle_devices, "--flood: idle signed-in devices")
      ->check(CLI::Range(1, 10000));
  app.add_option("--flood-senders", flood_options.senders, "--flood: strangers sending 8 MiB")
      ->check(CLI::Range(1, 1024));
  app.add_option("--flood-seconds", flood_options.seconds, "--flood: how long they send")
      ->check(CLI::Range(1.0, 120.0));
  CLI11_PARSE(app, argc, argv);
  if (flood) {
    if (crypto::Init()) Die("libsodium failed to initialise");
    flood_options.threads = threads;
    flood_options.json = json;
    flood_options.keep = keep;
    return RunFlood(flood_options);
  }

  if (crypto::Init()) Die("libsodium failed to initialise");
  char tmpl[] = "/tmp/teduh-bench-XXXXXX";
  if (!mkdtemp(tmpl)) Die("cannot create a temporary folder");
  const std::filesystem::path root = tmpl;
  const std::string data = (root / "server").string();

  auto init = MustR(server::InitStore(data, "UPTD PPA Bench", core::DefaultEnv()), "init");
  auto [server_pid, port] = ForkServer(data, threads);
  g_server_pid = server_pid;
  const std::string url = fmt::format("ws://127.0.0.1:{}/sync", port);
  const auto pass = Passphrase();

  auto admin = Must(core::Device::Enroll(root / "admin", url, init.bootstrap_code, pass, Options()),
                    "admin enroll");
  // Codes made after the unit root key exists carry its fingerprint.
  std::vector<std::string> codes;
  for (int d = 0; d < devices; ++d) {
    codes.push_back(MustR(server::CreateEnrollment(data, teduh::sync::v1::ROLE_PENDAMPING,
                                                   fmt::format("pendamping{}", d),
                                                   std::chrono::hours(1), core::DefaultEnv()),
                          "enroll")
                        .code);
  }
  const std::string office_code =
      MustR(server::CreateEnrollment(data, teduh::sync::v1::ROLE_OFFICE, "office",
                                     std::chrono::hours(1), core::DefaultEnv()),
            "enroll")
          .code;

  std::vector<std::string> staff_codes;
  for (int d = 0; d < conflict_devices; ++d) {
    staff_codes.push_back(
        MustR(server::CreateEnrollment(
                  data, d % 2 ? teduh::sync::v1::ROLE_SUPERVISOR : teduh::sync::v1::ROLE_OFFICE,
                  fmt::format("staf{}", d), std::chrono::hours(1), core::DefaultEnv()),
              "enroll")
            .code);
  }

  std::vector<std::unique_ptr<core::Device>> field;
  for (int d = 0; d < devices; ++d) {
    field.push_back(
        Must(core::Device::Enroll(root / fmt::format("dev{}", d), url, codes[d], pass, Options()),
             "device enroll"));
  }
  ByteCounts office_bytes;
  auto office = Must(
      core::Device::Enroll(root / "office", url, office_code, pass, CountedOptions(&office_bytes)),
      "office enroll");
  std::vector<std::unique_ptr<core::Device>> staff;
  for (int d = 0; d < conflict_devices; ++d) {
    staff.push_back(Must(
        core::Device::Enroll(root / fmt::format("staf{}", d), url, staff_codes[d], pass, Options()),
        "staff enroll"));
    Must(admin->ApproveDevice(core::ToHex(staff.back()->info().device_id)), "approve");
  }
  for (auto& d : field) Must(admin->ApproveDevice(core::ToHex(d->info().device_id)), "approve");
  Must(admin->ApproveDevice(core::ToHex(office->info().device_id)), "approve");
  for (auto& d : field) Must(d->Sync(), "first sync");
  Must(office->Sync(), "first sync");

  // 1. Offline recording (not part of the server figures).
  auto t0 = Clock::now();
  {
    std::vector<std::thread> workers;
    for (int d = 0; d < devices; ++d) {
      workers.emplace_back([&, d] {
        for (int i = 0; i < cases; ++i) Must(field[d]->NewCase(CaseFields(d, i)), "case new");
      });
    }
    for (auto& w : workers) w.join();
  }
  const double prepare_s = Seconds(Clock::now() - t0);
  std::size_t to_push = 0;
  for (auto& d : field) to_push += Must(d->Status(), "status").counts.pending;

  // 2. Everyone syncs at once; the push phase ends at each device's last ack.
  std::vector<Clock::time_point> push_end(devices);
  std::vector<std::size_t> pushed(devices);
  const auto start = Clock::now();
  {
    std::vector<std::thread> workers;
    for (int d = 0; d < devices; ++d) {
      workers.emplace_back([&, d] {
        // Push only: on real tablets each device has its own processor, so the
        // devices' pulls must not compete with the server for these two cores.
        auto report = Must(field[d]->Sync({}, /*push_only=*/true), "sync");
        // The last batch was acknowledged (after the server's commit) and recorded.
        push_end[d] = Clock::now();
        pushed[d] = report.pushed;
      });
    }
    for (auto& w : workers) w.join();
  }
  Clock::time_point last_ack = start;
  std::size_t total_pushed = 0;
  for (int d = 0; d < devices; ++d) {
    last_ack = std::max(last_ack, push_end[d]);
    total_pushed += pushed[d];
  }
  const double push_s = Seconds(last_ack - start);
  if (total_pushed != to_push)
    Die(fmt::format("pushed {} changes, expected {}", total_pushed, to_push));
  for (auto& d : field) Must(d->Sync(), "catching up");  // not timed

  // 3. A fresh office device pulls everything.
  auto t1 = Clock::now();
  auto pulled = Must(office->Sync(), "office pull");
  const double pull_s = Seconds(Clock::now() - t1);
  auto listed = Must(office->ListCases(), "list");
  if (listed.size() != static_cast<std::size_t>(devices * cases))
    Die(fmt::format("office holds {} cases, expected {}", listed.size(), devices * cases));
  auto t2 = Clock::now();
  std::size_t sealed_opened = 0;
  for (const auto& c : listed) {
    auto view = Must(office->ShowCase(core::ToHex(c.case_id)), "show");
    for (const auto& f : view.fields) {
      if (!f.sealed) continue;
      if (f.readability != core::Readability::kReadable)
        Die(fmt::format("sealed field {} of case {} did not open: {}", f.name,
                        core::ToHex(c.case_id), core::ReadabilityName(f.readability)));
      ++sealed_opened;
    }
  }
  const double decrypt_s = Seconds(Clock::now() - t2);

  // 4. Conflict-heavy: office staff edit the same cases at the same time
  // (risk level MAX, violence types UNION, route LWW, chronology REVIEW: every
  // push after the first of each case is a merge, and each chronology a
  // conflict record). Timed like the push above.
  // 4a first lets the same devices make the same edits without concurrency
  // (each its own cases): the baseline the conflict-heavy push compares with.
  struct EditRound {
    std::size_t pushed = 0, merged = 0, conflicts = 0;
    double push_s = 0, prepare_s = 0;
  };
  // Device d edits cases case_of(d, i) for i < n, all at once offline, then
  // all push at once (timed like the push above).
  auto edit_round = [&](std::size_t n, auto case_of, const char* what) {
    static const char* kRisk[] = {"rendah", "sedang", "tinggi"};
    static const char* kType[] = {"seksual", "penelantaran", "ekonomi", "psikis"};
    static const char* kRoute[] = {"mediasi", "kekeluargaan", "rehabilitasi", "proses hukum"};
    EditRound round;
    for (auto& d : staff) Must(d->Sync(), "staff pull");  // untimed
    auto tp = Clock::now();
    {
      std::vector<std::thread> workers;
      for (std::size_t d = 0; d < staff.size(); ++d) {
        workers.emplace_back([&, d] {
          for (std::size_t i = 0; i < n; ++i) {
            const std::size_t c = case_of(d, i);
            Must(staff[d]->SetCaseFields(
                     core::ToHex(listed[c].case_id),
                     {fmt::format("risk_level={}", kRisk[(i + d) % 3]),
                      fmt::format("violence_types=fisik,{}", kType[d % 4]),
                      fmt::format("route={}", kRoute[d % 4]),
                      fmt::format("chronology=Kronologi diperbarui oleh staf {} untuk kasus {}", d,
                                  c)}),
                 what);
          }
        });
      }
      for (auto& w : workers) w.join();
    }
    round.prepare_s = Seconds(Clock::now() - tp);
    std::vector<Clock::time_point> ends(staff.size());
    std::vector<core::SyncReport> reports(staff.size());
    const auto cs = Clock::now();
    {
      std::vector<std::thread> workers;
      for (std::size_t d = 0; d < staff.size(); ++d) {
        workers.emplace_back([&, d] {
          reports[d] = Must(staff[d]->Sync({}, /*push_only=*/true), what);
          ends[d] = Clock::now();
        });
      }
      for (auto& w : workers) w.join();
    }
    Clock::time_point last = cs;
    for (std::size_t d = 0; d < staff.size(); ++d) {
      last = std::max(last, ends[d]);
      round.pushed += reports[d].pushed;
      round.merged += reports[d].merged;
      round.conflicts += reports[d].conflict;
    }
    round.push_s = Seconds(last - cs);
    if (round.pushed != n * 4 * staff.size())
      Die(fmt::format("{}: pushed {} changes, expected {}", what, round.pushed,
                      n * 4 * staff.size()));
    return round;
  };
  auto per_s = [](const EditRound& r) {
    return r.push_s > 0 ? static_cast<std::int64_t>(r.pushed / r.push_s) : 0;
  };
  // Changes the server decided by a merge rule against a concurrent value
  // (answered merged or in conflict), per second of the push.
  auto merges_per_s = [](const EditRound& r) {
    return r.push_s > 0 ? static_cast<std::int64_t>((r.merged + r.conflicts) / r.push_s) : 0;
  };
  // How many times slower the conflict-heavy push ran than a baseline.
  auto slower = [](double baseline_per_s, double per_s) {
    return per_s > 0 ? baseline_per_s / per_s : 0.0;
  };

  // 4. Conflict-heavy: office staff edit the same cases at the same time
  // (risk level MAX, violence types UNION, route LWW, chronology REVIEW: every
  // push after the first of each case is a merge, and each chronology a
  // conflict record), after 4a.
  EditRound solo, conflict;
  if (!staff.empty()) {
    const std::size_t n = std::min<std::size_t>(listed.size(), conflict_cases);
    const std::size_t k = staff.size();
    const std::size_t solo_n = std::min(n, listed.size() / k);
    solo = edit_round(
        solo_n, [&](std::size_t d, std::size_t i) { return d * solo_n + i; }, "solo edit push");
    if (solo.merged != 0 || solo.conflicts != 0)
      Die("edits of different cases were merged: the workload is not conflict-free");
    conflict = edit_round(
        n, [](std::size_t, std::size_t i) { return i; }, "conflict push");
  }

  // 5. Rotation of the general key. Field devices first record small cases
  // (a chronology each: one case key) until the unit has the asked number of
  // case keys; the admin device pulls the keys (not the content) and rotates,
  // timed in CPU of this process (the server is a child: its time is its
  // own); then the office device, which holds every case, catches up and the
  // bytes it receives are counted.
  std::size_t rot_case_keys = 0, rot_rewrapped = 0, rot_catch_up_values = 0;
  double rot_cpu_s = 0, rot_wall_s = 0, rot_prepare_s = 0;
  std::size_t rot_sent = 0, rot_catch_up_received = 0, rot_catch_up_sent = 0;
  if (rotation_case_keys > 0) {
    const std::size_t have = static_cast<std::size_t>(devices) * cases;
    const std::size_t more =
        static_cast<std::size_t>(rotation_case_keys) > have ? rotation_case_keys - have : 0;
    auto tp = Clock::now();
    {
      std::vector<std::thread> workers;
      for (int d = 0; d < devices; ++d) {
        workers.emplace_back([&, d] {
          for (std::size_t i = d; i < more; i += devices)
            Must(field[d]->NewCase({fmt::format("chronology=Kasus tambahan {}", i)}), "case new");
          Must(field[d]->Sync({}, /*push_only=*/true), "push");
        });
      }
      for (auto& w : workers) w.join();
    }
    rot_prepare_s = Seconds(Clock::now() - tp);
    rot_case_keys = have + more;
    Must(admin->Sync(), "admin pulls the case keys");
    Must(office->Sync(), "office pulls everything");
    const double cpu0 = CpuSeconds();
    const auto w0 = Clock::now();
    auto rotated = Must(admin->RotateClassKey(teduh::ACCESS_CLASS_GENERAL), "rotate");
    rot_wall_s = Seconds(Clock::now() - w0);
    rot_cpu_s = CpuSeconds() - cpu0;
    rot_rewrapped = rotated.rewrapped;
    rot_sent = rotated.bytes_sent;
    if (rot_rewrapped != rot_case_keys)
      Die(fmt::format("rotation re-wrapped {} case keys, expected {}", rot_rewrapped,
                      rot_case_keys));
    office_bytes.sent = 0;
    office_bytes.received = 0;
    auto caught = Must(office->Sync(), "office catches up");
    rot_catch_up_values = caught.pulled;
    rot_catch_up_received = office_bytes.received;
    rot_catch_up_sent = office_bytes.sent;
    // Only each case key's epoch and wrap: no case content moves.
    if (rot_catch_up_values != 2 * rot_rewrapped)
      Die(fmt::format("catching up pulled {} values, expected {} (two per case key)",
                      rot_catch_up_values, 2 * rot_rewrapped));
  }

  // 6. The first field device is lost: revoke, rotate, re-key what it held.
  nlohmann::json rekey_out;
  if (rekey) {
    const std::string lost = core::ToHex(field[0]->info().device_id);
    Must(admin->RevokeDevice(lost), "revoke");
    Must(admin->Sync(), "admin sync before the rotation");
    Must(office->Sync(), "office sync before the rotation");
    const auto r0 = Clock::now();
    Must(admin->RotateClassKey(teduh::ACCESS_CLASS_GENERAL), "rotate before the re-key");
    const double rotate_s = Seconds(Clock::now() - r0);
    Must(office->Sync(), "office takes the new epoch");
    const double cpu0 = CpuSeconds();
    const auto w0 = Clock::now();
    auto rk = Must(admin->RekeyCases(lost, false), "rekey");
    const double wall = Seconds(Clock::now() - w0);
    const double cpu = CpuSeconds() - cpu0;
    office_bytes.sent = 0;
    office_bytes.received = 0;
    auto caught = Must(office->Sync(), "office catches up after the re-key");
    if (caught.rekeyed != rk.cases)
      Die(fmt::format("the office device applied {} re-keyed cases, expected {}", caught.rekeyed,
                      rk.cases));
    rekey_out = {{"rekey_cases", rk.cases},
                 {"rekey_values", rk.values},
                 {"rekey_keys_dropped", rk.keys_dropped},
                 {"rekey_rotation_s", rotate_s},
                 {"rekey_admin_cpu_s", cpu},
                 {"rekey_wall_s", wall},
                 {"rekey_bytes_sent", rk.bytes_sent},
                 {"rekey_catch_up_values", caught.pulled},
                 {"rekey_catch_up_bytes_received", office_bytes.received.load()}};
  }

  nlohmann::json backup_out;
  if (backup) {
    const std::string token = Must(admin->BackupKey(false), "backup key").token;
    Must(server::SetBackupKey(data, token), "backup-key");
    // One sync per edit, every field device in a loop; each sync timed.
    struct Sample {
      Clock::time_point at;
      double ms;
    };
    std::vector<std::vector<Sample>> samples(devices);
    std::atomic<bool> stop{false};
    std::vector<std::thread> pushers;
    for (int d = 0; d < devices; ++d) {
      pushers.emplace_back([&, d] {
        static const char* kRisk[] = {"rendah", "sedang", "tinggi"};
        auto mine = Must(field[d]->ListCases(), "list");
        for (std::size_t i = 0; !stop.load() && !mine.empty(); ++i) {
          Must(field[d]->SetCaseFields(core::ToHex(mine[i % mine.size()].case_id),
                                       {fmt::format("risk_level={}", kRisk[i % 3])}),
               "edit");
          const auto t = Clock::now();
          Must(field[d]->Sync({}, /*push_only=*/true), "push");
          samples[d].push_back(
              {t, std::chrono::duration<double, std::milli>(Clock::now() - t).count()});
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(backup_baseline_s));
    const auto backup_start = Clock::now();
    const std::string file = (root / "unit.tbk").string();
    const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    const std::string server_bin =
        (std::filesystem::path(self).parent_path() / "teduh-server").string();
    const std::string cmd = fmt::format("'{}' backup --data '{}' --to '{}' --json > '{}' 2>&1",
                                        server_bin, data, file, (root / "backup.json").string());
    if (std::system(cmd.c_str()) != 0) Die("teduh-server backup failed");
    const auto backup_end = Clock::now();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    stop = true;
    for (auto& t : pushers) t.join();
    std::vector<double> before, during;
    for (const auto& per : samples) {
      for (const auto& sm : per) {
        if (sm.at < backup_start) {
          before.push_back(sm.ms);
        } else if (sm.at < backup_end) {
          during.push_back(sm.ms);
        }
      }
    }
    auto pct = [](std::vector<double> v, double q) {
      if (v.empty()) return 0.0;
      std::sort(v.begin(), v.end());
      return v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))];
    };
    std::ifstream bj(root / "backup.json");
    auto report = nlohmann::json::parse(bj, nullptr, false);
    backup_out = {{"backup_s", Seconds(backup_end - backup_start)},
                  {"backup_file_bytes", report.value("file_bytes", 0)},
                  {"backup_store_bytes", report.value("store_bytes", 0)},
                  {"backup_snapshot_ms", report.value("snapshot_ms", 0)},
                  {"backup_pushes_before", before.size()},
                  {"backup_pushes_during", during.size()},
                  {"backup_push_p99_ms_before", pct(before, 0.99)},
                  {"backup_push_max_ms_before", pct(before, 1.0)},
                  {"backup_push_p99_ms_during", pct(during, 0.99)},
                  {"backup_push_max_ms_during", pct(during, 1.0)}};
    std::fprintf(stderr, "backup: %s\n", backup_out.dump().c_str());
  }

  const std::int64_t rss = PeakRssBytes(server_pid);
  kill(server_pid, SIGTERM);
  int status = 0;
  waitpid(server_pid, &status, 0);
  nlohmann::json restore_out;
  if (backup) {
    // The server's disk fails: the backup goes back over its store.
    const std::string secret = Must(admin->BackupKey(true), "backup secret").secret;
    setenv("TEDUH_BACKUP_SECRET", secret.c_str(), 1);
    const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    const std::string server_bin =
        (std::filesystem::path(self).parent_path() / "teduh-server").string();
    const auto restore_start = Clock::now();
    const std::string cmd =
        fmt::format("'{}' restore --from '{}' --data '{}' --json > '{}' 2>&1", server_bin,
                    (root / "unit.tbk").string(), data, (root / "restore.json").string());
    if (std::system(cmd.c_str()) != 0) Die("teduh-server restore failed");
    const double restore_s = Seconds(Clock::now() - restore_start);
    unsetenv("TEDUH_BACKUP_SECRET");
    std::ifstream rj(root / "restore.json");
    auto restored = nlohmann::json::parse(rj, nullptr, false);
    std::uint64_t to_come_back = 0;
    if (restored.is_object())
      for (const auto& d : restored["devices"]) to_come_back += d.value("changes_to_come_back", 0);
    auto [pid2, port2] = ForkServer(data, threads, port);
    server_pid = pid2;
    g_server_pid = pid2;
    (void)port2;
    // Every field device syncs at once: each re-sends what the backup lacks.
    const auto resend_start = Clock::now();
    std::vector<std::size_t> resent(devices, 0);
    std::vector<std::thread> syncers;
    for (int d = 0; d < devices; ++d)
      syncers.emplace_back([&, d] { resent[d] = Must(field[d]->Sync(), "re-send").pushed; });
    for (auto& t : syncers) t.join();
    const double resend_s = Seconds(Clock::now() - resend_start);
    const auto pull_start = Clock::now();
    const auto caught = Must(office->Sync(), "office pull after the restore");
    const double office_pull_s = Seconds(Clock::now() - pull_start);
    std::uint64_t shown_lost = 0, shown_resent = 0;
    for (const auto& r : Must(admin->ListRemoteDevices(), "device list")) {
      shown_lost += r.restore_lost;
      shown_resent += r.resent;
    }
    if (shown_resent != shown_lost || shown_lost < to_come_back)
      Die(fmt::format("device list shows {} of {} lost changes sent again ({} to come back)",
                      shown_resent, shown_lost, to_come_back));
    if (Must(office->ListCases(), "list").size() != listed.size())
      Die("the office device lacks cases after the restore");
    std::size_t resent_total = 0;
    for (auto n : resent) resent_total += n;
    restore_out = {{"restore_s", restore_s},
                   {"restore_changes_to_come_back", to_come_back},
                   {"restore_resend_s", resend_s},
                   {"restore_changes_resent", resent_total},
                   {"restore_office_pull_s", office_pull_s},
                   {"restore_office_values_pulled", caught.pulled},
                   {"restore_device_list_resent", shown_resent}};
    std::fprintf(stderr, "restore: %s\n", restore_out.dump().c_str());
    kill(server_pid, SIGTERM);
    waitpid(server_pid, &status, 0);
  }
  if (!keep) std::filesystem::remove_all(root);

  const double rate = push_s > 0 ? static_cast<double>(total_pushed) / push_s : 0;
  nlohmann::json out = {
      {"push_field_changes_per_s", static_cast<std::int64_t>(rate)},
      {"pull_10k_cases_s", pull_s},
      {"server_peak_rss_bytes", rss},
      {"devices", devices},
      {"cases_per_device", cases},
      {"field_changes_pushed", total_pushed},
      {"push_s", push_s},
      {"prepare_s", prepare_s},
      {"cases_pulled", listed.size()},
      {"field_changes_pulled", pulled.pulled},
      {"decrypt_all_cases_s", decrypt_s},
      {"sealed_values_opened", sealed_opened},
      {"server_threads", threads},
      {"conflict_devices", conflict_devices},
      {"edit_changes_pushed", solo.pushed},
      {"edit_push_s", solo.push_s},
      {"edit_push_changes_per_s", per_s(solo)},
      {"conflict_changes_pushed", conflict.pushed},
      {"conflict_push_s", conflict.push_s},
      {"conflict_prepare_s", conflict.prepare_s},
      {"conflict_merged", conflict.merged},
      {"conflict_conflicts", conflict.conflicts},
      {"conflict_push_changes_per_s", per_s(conflict)},
      {"conflict_merges_per_s", merges_per_s(conflict)},
      {"conflict_slower_than_push", slower(rate, per_s(conflict))},
      {"conflict_slower_than_edit_push", slower(per_s(solo), per_s(conflict))},
      {"server_exit_status", WIFEXITED(status) ? WEXITSTATUS(status) : -1},
  };
  if (rotation_case_keys > 0) {
    out["rotation_case_keys"] = rot_case_keys;
    out["rotation_rewrapped"] = rot_rewrapped;
    out["rotation_admin_cpu_s"] = rot_cpu_s;
    out["rotation_wall_s"] = rot_wall_s;
    out["rotation_bytes_sent"] = rot_sent;
    out["rotation_prepare_s"] = rot_prepare_s;
    out["rotation_catch_up_values"] = rot_catch_up_values;
    out["rotation_catch_up_bytes_received"] = rot_catch_up_received;
    out["rotation_catch_up_bytes_sent"] = rot_catch_up_sent;
  }
  if (rekey) out.update(rekey_out);
  if (backup) out.update(backup_out);
  if (backup) out.update(restore_out);
  if (json) {
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf(
        "push: %zu field changes from %d devices in %.2f s = %.0f changes/s\n"
        "pull: %zu cases (%zu field values) into a fresh device in %.2f s\n"
        "open every case and decrypt %zu sealed values: %.2f s\n"
        "edit push without concurrency: %zu changes from %d devices, each its own cases, in "
        "%.2f s = %lld changes/s\n"
        "conflict-heavy push: %zu changes from %d devices editing the same cases in %.2f s = "
        "%lld changes/s (%zu merged, %zu conflicts: %lld merges applied/s); %.2f x slower than "
        "the push, %.2f x slower than the edit push without concurrency\n"
        "server peak RSS: %.1f MiB\n",
        total_pushed, devices, push_s, rate, listed.size(), pulled.pulled, pull_s, sealed_opened,
        decrypt_s, solo.pushed, conflict_devices, solo.push_s, static_cast<long long>(per_s(solo)),
        conflict.pushed, conflict_devices, conflict.push_s, static_cast<long long>(per_s(conflict)),
        conflict.merged, conflict.conflicts, static_cast<long long>(merges_per_s(conflict)),
        slower(rate, per_s(conflict)), slower(per_s(solo), per_s(conflict)), rss / 1048576.0);
  }
  return 0;
}
