// Fuzz target for a device's local store file as a failing disk leaves it
// (docs/SECURITY.md, "Faults"). A store holding a case pulled from the server
// and an edit of this device waiting to be sent is made once; each input is a
// list of changes to its bytes (4 bytes of offset, then a byte to XOR there,
// again and again), and the changed file is opened and read as a device reads
// it: the check, every record and its values, the outbox, what a push would
// send, then the repair and the reads again. Nothing may crash or read out of
// bounds (AddressSanitizer and UBSan), whatever SQLite and the row checksums
// make of the damage. Built like frame_fuzz (libFuzzer with clang; a replay
// driver otherwise).
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include "teduh/case/v1/case.pb.h"
#include "teduh/core/env.h"
#include "teduh/core/frame_codec.h"
#include "teduh/core/hlc.h"
#include "teduh/core/local_store.h"
#include "teduh/core/schema.h"
#include "teduh/crypto/crypto.h"
#include "teduh/sync/v1/sync.pb.h"

namespace {

namespace core = teduh::core;
namespace crypto = teduh::crypto;
namespace fs = std::filesystem;
namespace cw = teduh::casework::v1;
namespace pb = teduh::sync::v1;

core::Id FixedId(std::uint8_t b) {
  core::Id id{};
  id.fill(b);
  return id;
}

// The scratch folder, the store's key and device, and the intact file.
struct Pristine {
  fs::path dir;
  crypto::SecureBuffer key;
  core::Id device = FixedId(0xd1);
  core::FakeEnv env{1'700'000'000'000};
  std::string bytes;
  bool ok = false;
};

void SetCase(cw::Case& m, std::uint32_t field, const char* text) {
  if (field == cw::Case::kRegionCodeFieldNumber) m.set_region_code(text);
  if (field == cw::Case::kCaseNumberFieldNumber) m.set_case_number(text);
  if (field == cw::Case::kAssignedPendampingFieldNumber) m.set_assigned_pendamping(text);
}

// A case pulled from the server (three values) and an edit of its region
// left pending, in a fresh store; its file's bytes once closed.
Pristine* MakePristine() {
  auto* p = new Pristine;
  if (crypto::Init()) return p;
  p->dir = fs::temp_directory_path() /
           ("teduh-store-fuzz-" + std::to_string(static_cast<long>(getpid())));
  fs::remove_all(p->dir);
  fs::create_directories(p->dir);
  auto key = crypto::SecureBuffer::CopyOf(std::span<const std::uint8_t>(
      reinterpret_cast<const std::uint8_t*>("fuzz-store-key-fuzz-store-key-32"), 32));
  if (!key) return p;
  p->key = std::move(*key);
  const fs::path path = p->dir / "store.db";
  {
    auto store = core::LocalStore::Open(path, p->key, p->device, p->env);
    if (!store) return p;
    core::Hlc hlc(p->env, 0);
    const core::Id case_id = FixedId(0xca);
    pb::Changes batch;
    batch.set_generation(1);
    std::uint64_t seq = 0;
    for (auto [field, text] : {std::pair{cw::Case::kRegionCodeFieldNumber, "1472"},
                               std::pair{cw::Case::kCaseNumberFieldNumber, "K-9"},
                               std::pair{cw::Case::kAssignedPendampingFieldNumber, "rina"}}) {
      cw::Case m;
      SetCase(m, static_cast<std::uint32_t>(field), text);
      pb::FieldChange* c = batch.add_changes();
      c->set_record_id(std::string(core::AsBytes(case_id)));
      c->set_kind(std::string(core::kCaseKind));
      c->set_field(static_cast<std::uint32_t>(field));
      c->set_value(m.SerializeAsString());
      c->mutable_stamp()->set_hlc(
          core::HlcPack(1'700'000'100'000, static_cast<std::uint32_t>(seq)));
      c->mutable_stamp()->set_device_id(std::string(core::AsBytes(FixedId(0x5e))));
      c->set_seq(++seq);
    }
    batch.set_last_seq(seq);
    if (!(*store)->ApplyPulled(hlc, batch)) return p;
    cw::Case m;
    m.set_region_code("1473");
    auto edited = (*store)->Edit(hlc, [&](core::LocalStore::EditTxn& txn) -> core::Outcome<void> {
      core::LocalChange c;
      c.record_id = case_id;
      c.kind = std::string(core::kCaseKind);
      c.field = cw::Case::kRegionCodeFieldNumber;
      c.value = m.SerializeAsString();
      c.stamp = txn.NextStamp();
      return txn.Put(c);
    });
    if (!edited) return p;
  }
  std::ifstream in(path, std::ios::binary);
  p->bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  p->ok = !p->bytes.empty();
  return p;
}

// Everything a device reads of its store.
void ReadAll(core::LocalStore& store) {
  (void)store.CountOutbox();
  (void)store.ListOutbox(true, 100);
  (void)store.PendingChanges(100);
  (void)store.Cursor();
  (void)store.CountSetAside();
  (void)store.PersistedHlc();
  auto cases = store.ListRecords(core::kCaseKind, std::nullopt);
  if (!cases) return;
  for (const auto& r : *cases) {
    (void)store.GetRecord(r.record_id);
    (void)store.GetFields(r.record_id);
    (void)store.CaseHasPending(r.record_id);
    (void)store.ServerCopies({{r.record_id, cw::Case::kRegionCodeFieldNumber}});
  }
  (void)store.ForEachRecordOpenFields(
      core::kCaseKind,
      [](const core::RecordInfo&, std::vector<core::StoredValue>&) -> core::Outcome<void> {
        return {};
      });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool quiet = (core::SilenceProtobufLog(), true);
  (void)quiet;
  static Pristine* const p = MakePristine();
  if (!p->ok) {
    std::fprintf(stderr, "store_fuzz: the intact store could not be made\n");
    std::abort();  // a harness that reads nothing must not pass
  }
  std::string bytes = p->bytes;
  for (std::size_t i = 0; i + 5 <= size && i < 5 * 64; i += 5) {
    const std::uint32_t at = static_cast<std::uint32_t>(data[i]) << 24 |
                             static_cast<std::uint32_t>(data[i + 1]) << 16 |
                             static_cast<std::uint32_t>(data[i + 2]) << 8 | data[i + 3];
    bytes[at % bytes.size()] ^= static_cast<char>(data[i + 4]);
  }
  const fs::path path = p->dir / "damaged.db";
  std::error_code ignored;
  for (const char* extra : {"-wal", "-shm", "-journal"})
    fs::remove(p->dir / (std::string("damaged.db") + extra), ignored);
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  {
    auto store = core::LocalStore::Open(path, p->key, p->device, p->env);
    if (store) {
      (void)(*store)->Check();
      ReadAll(**store);
      (void)(*store)->RepairDue(0);
      if ((*store)->Repair()) ReadAll(**store);
    }
  }
  fs::remove(path, ignored);
  return 0;
}
