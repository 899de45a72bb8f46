// Re-keying the cases of a lost device (ARCHITECTURE §4, PROTOCOL §8d): after
// `teduh case rekey --held-by DEVICE`, no sealed value of those cases on the
// server (current, past, inside conflicts) opens with any case key the lost
// device held; other devices keep reading everything, and an edit one of
// them made offline under the old key is sealed again and accepted.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <map>

#include "server/device_fixture.h"
#include "teduh/case/v1/case.pb.h"
#include "teduh/core/schema.h"
#include "teduh/core/sealing.h"
#include "teduh/core/vault.h"
#include "teduh/keys/v1/keys.pb.h"
#include "teduh/server/store.h"

namespace teduh::server::testing {
namespace {

using core::errc;
namespace cw = teduh::casework::v1;

// A sealed value as the server stores it, with the context it is bound to.
struct ServerSealed {
  core::SealContext ctx;
  std::string kind;
  std::string value;
  std::string where;  // for messages
};

class RekeyTest : public DeviceServerTest {
 protected:
  std::vector<std::vector<std::string>> Query(const std::string& sql, const core::Id& case_id) {
    std::vector<std::vector<std::string>> rows;
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2(StorePath(data_dir_).c_str(), &db, SQLITE_OPEN_READONLY, nullptr),
              SQLITE_OK);
    sqlite3_stmt* s = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr), SQLITE_OK) << sql;
    sqlite3_bind_blob(s, 1, case_id.data(), static_cast<int>(case_id.size()), SQLITE_STATIC);
    while (sqlite3_step(s) == SQLITE_ROW) {
      std::vector<std::string> row;
      for (int c = 0; c < sqlite3_column_count(s); ++c) {
        const void* p = sqlite3_column_blob(s, c);
        row.emplace_back(p ? static_cast<const char*>(p) : "",
                         static_cast<std::size_t>(sqlite3_column_bytes(s, c)));
      }
      rows.push_back(std::move(row));
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return rows;
  }

  static std::uint64_t U64(const std::string& s) { return std::stoull(s); }
  static core::Id IdOf(const std::string& s) { return *core::IdFromBytes(s); }

  // The device is lost: the admin device revokes it, rotates the general key
  // past the epoch it held, and re-keys every case it held.
  core::RekeyReport LoseAndRekey(core::Device& lost) {
    const std::string id = core::ToHex(lost.info().device_id);
    EXPECT_TRUE(admin_dev_->RevokeDevice(id));
    Sync(*admin_dev_);
    auto rotated = admin_dev_->RotateClassKey(teduh::ACCESS_CLASS_GENERAL);
    EXPECT_TRUE(rotated) << (rotated ? "" : rotated.error().message);
    auto report = admin_dev_->RekeyCases(id, false);
    EXPECT_TRUE(report) << (report ? "" : report.error().message);
    return report ? *report : core::RekeyReport{};
  }

  // Rina edits a case offline; meanwhile the office gives it to budi, and
  // dewi's laptop (which held it) is lost and its cases re-keyed. Rina's
  // edit, sealed under the old key, is sealed again and arrives.
  void LeavingWorkerSendsHerEditAfterTheRekey() {
    auto rina = Staff("rina", v1::ROLE_PENDAMPING);
    auto budi = Staff("budi", v1::ROLE_PENDAMPING);
    auto ani = Staff("ani", v1::ROLE_OFFICE);
    auto dewi = Staff("dewi", v1::ROLE_OFFICE);
    auto c = rina->NewCase({"chronology=Awal"});
    ASSERT_TRUE(c);
    const std::string id = core::ToHex(*c);
    Sync(*rina);
    Sync(*ani);
    Sync(*dewi);
    ASSERT_TRUE(rina->SetCaseFields(id, {"chronology=Catatan terakhir Rina"}));
    ASSERT_TRUE(ani->AssignCase(id, "budi", "", ""));
    Sync(*ani);
    EXPECT_EQ(LoseAndRekey(*dewi).cases, 1u);
    auto rs = Sync(*rina);
    EXPECT_EQ(rs.resealed, 1u);
    EXPECT_EQ(rs.rejected, 0u);
    EXPECT_EQ(rs.accepted, 1u);
    EXPECT_EQ(rina->Status()->counts.pending, 0u);
    Sync(*budi);
    EXPECT_EQ(Value(*budi, *c, "chronology"), "Catatan terakhir Rina");
  }

  // What the first frame of an interrupted re-key leaves on the server: the
  // case's next key version, wrapped under epoch 1 of the general key by the
  // admin device, recorded as the re-key's target. Returns the key.
  crypto::SecureBuffer PlantTarget(const core::Id& case_id, std::uint32_t version) {
    auto vault = core::Vault::Unlock(dir_ + "/admin/vault", Pass(), core::VaultOptions{});
    EXPECT_TRUE(vault) << vault.error().message;
    const crypto::SecureBuffer* k1 = (*vault)->class_key(teduh::ACCESS_CLASS_GENERAL, 1);
    EXPECT_NE(k1, nullptr);
    auto ck = crypto::RandomSecret(crypto::kAeadKeyBytes);
    auto wrapped = core::WrapCaseKey(*k1, case_id, teduh::ACCESS_CLASS_GENERAL, version, 1, *ck);
    EXPECT_TRUE(wrapped);
    auto store = OpenSqliteStore(StorePath(data_dir_), StoreOptions{});
    EXPECT_TRUE(store);
    auto unit = (*store)->LoadUnit();
    EXPECT_FALSE((*store)->Begin());
    const core::Id rec_id = core::NewId();
    RecordRow rec;
    rec.record_id = rec_id;
    rec.kind = std::string(core::kCaseKeyKind);
    rec.parent_id = case_id;
    rec.case_id = case_id;
    rec.created_by_user = "admin";
    rec.created_seq = (*store)->AllocateSeq();
    EXPECT_FALSE((*store)->InsertRecord(rec));
    teduh::keys::v1::CaseKey parts[4];
    parts[0].set_key_class(teduh::ACCESS_CLASS_GENERAL);
    parts[1].set_version(version);
    parts[2].set_epoch(1);
    parts[3].set_wrapped(*wrapped);
    const std::uint64_t txn = (*store)->AllocateTxn();
    for (int i = 0; i < 4; ++i) {
      const std::string value = parts[i].SerializeAsString();
      FieldRow row;
      row.record_id = rec_id;
      row.field = static_cast<std::uint32_t>(i + 1);
      row.value = value;
      row.stamp = core::Stamp{(unit->hlc_last + 1) << 16, unit->server_id};
      row.author = "admin";
      row.seq = (*store)->AllocateSeq();
      row.txn = txn;
      EXPECT_FALSE((*store)->PutField(row));
    }
    EXPECT_FALSE((*store)->PutRekeyTarget(case_id, {teduh::ACCESS_CLASS_GENERAL, version, 1}));
    EXPECT_FALSE((*store)->Commit());
    return std::move(*ck);
  }

  // Every sealed value of the case on the server: current, past, and both
  // sides of its conflict records.
  std::vector<ServerSealed> SealedOnServer(const core::Id& case_id) {
    std::vector<ServerSealed> out;
    const std::string cols =
        "x.record_id, r.kind, x.field, x.value, x.key_class, x.key_version, x.stamp_hlc, "
        "x.stamp_device, x.origin_hlc";
    for (const char* table : {"fields", "field_history"}) {
      for (auto& row : Query("SELECT " + cols + " FROM " + table +
                                 " x JOIN records r ON r.record_id = x.record_id WHERE "
                                 "r.case_id = ?1 AND x.sealed = 1",
                             case_id)) {
        ServerSealed v;
        v.ctx.record_id = IdOf(row[0]);
        v.kind = row[1];
        v.ctx.field = static_cast<std::uint32_t>(U64(row[2]));
        v.value = row[3];
        v.ctx.key_class = static_cast<teduh::AccessClass>(U64(row[4]));
        v.ctx.key_version = static_cast<std::uint32_t>(U64(row[5]));
        v.ctx.writer_hlc = U64(row[8]) != 0 ? U64(row[8]) : U64(row[6]);
        v.ctx.writer_device = IdOf(row[7]);
        v.where = table;
        out.push_back(std::move(v));
      }
    }
    for (auto& row :
         Query("SELECT f.value FROM fields f JOIN records r ON r.record_id = f.record_id WHERE "
               "r.case_id = ?1 AND r.kind = 'teduh.casework.v1.Conflict' AND f.field = 1",
               case_id)) {
      cw::Conflict c;
      EXPECT_TRUE(c.ParseFromString(row[0]));
      for (const auto* side : {&c.detection().kept(), &c.detection().other()}) {
        if (!side->sealed()) continue;
        ServerSealed v;
        v.ctx.record_id = IdOf(c.detection().record_id());
        v.kind = c.detection().record_kind();
        v.ctx.field = c.detection().field();
        v.value = side->value();
        v.ctx.key_class = side->key_class();
        v.ctx.key_version = side->key_version();
        v.ctx.writer_hlc = side->origin_hlc() != 0 ? side->origin_hlc() : side->stamp_hlc();
        v.ctx.writer_device = IdOf(side->stamp_device());
        v.where = "conflict";
        out.push_back(std::move(v));
      }
    }
    return out;
  }

  // The case keys of the case that a device's vault opens, from the key
  // records the server holds now: what a thief with the device and its
  // passphrase has.
  std::vector<std::pair<core::SealContext, crypto::SecureBuffer>> KeysOf(const core::Vault& vault,
                                                                         const core::Id& case_id) {
    std::map<std::string, teduh::keys::v1::CaseKey> records;
    for (auto& row : Query("SELECT f.record_id, f.value FROM fields f JOIN records r ON "
                           "r.record_id = f.record_id WHERE r.parent_id = ?1 AND r.kind = "
                           "'teduh.keys.v1.CaseKey'",
                           case_id))
      records[row[0]].MergeFromString(row[1]);
    std::vector<std::pair<core::SealContext, crypto::SecureBuffer>> out;
    for (const auto& [id, k] : records) {
      const auto cls = k.key_class() == teduh::ACCESS_CLASS_UNSPECIFIED
                           ? teduh::ACCESS_CLASS_GENERAL
                           : k.key_class();
      const crypto::SecureBuffer* class_key = vault.class_key(cls, k.epoch());
      if (class_key == nullptr) continue;
      auto ck = core::UnwrapCaseKey(*class_key, case_id, cls, k.version(), k.epoch(), k.wrapped());
      if (!ck) continue;
      core::SealContext ctx;
      ctx.key_class = cls;
      ctx.key_version = k.version();
      out.emplace_back(ctx, std::move(*ck));
    }
    return out;
  }

  // How many of `values` open with any of `keys` (under the version the
  // value claims, or the version of the key).
  static int OpenedBy(const std::vector<ServerSealed>& values,
                      const std::vector<std::pair<core::SealContext, crypto::SecureBuffer>>& keys) {
    int opened = 0;
    for (const auto& v : values) {
      bool any = false;
      for (const auto& [kctx, key] : keys) {
        for (std::uint32_t version : {v.ctx.key_version, kctx.key_version}) {
          core::SealContext ctx = v.ctx;
          ctx.kind = v.kind;
          ctx.key_version = version;
          if (auto plain = core::OpenField(key, ctx, v.value)) {
            crypto::Wipe(*plain);
            any = true;
          }
        }
      }
      opened += any;
    }
    return opened;
  }
};

TEST_F(RekeyTest, NoSealedValueOfALostDevicesCasesOpensWithTheKeysItHeld) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto held = rina->NewCase({"chronology=Versi pertama"});
  ASSERT_TRUE(held);
  const std::string id = core::ToHex(*held);
  ASSERT_TRUE(rina->AddPerson(id, "victim", {"name=Siti Rahmawati", "address=Jalan Cempaka 3"}));
  Sync(*rina);
  // A past value, and a conflict whose sides are sealed.
  ASSERT_TRUE(rina->SetCaseFields(id, {"chronology=Versi kedua"}));
  Sync(*rina);
  Sync(*ani);
  ASSERT_TRUE(ani->SetCaseFields(id, {"chronology=Versi Ani"}));
  env_.Advance(1000);
  ASSERT_TRUE(rina->SetCaseFields(id, {"chronology=Versi Rina"}));
  Sync(*ani);
  EXPECT_EQ(Sync(*rina).conflict, 1u);
  Sync(*ani);
  // A case rina never held stays as it is.
  auto other = ani->NewCase({"chronology=Kasus kantor"});
  ASSERT_TRUE(other);
  Sync(*ani);
  // Ani edits the case offline: her edit is sealed under the key rina held.
  ASSERT_TRUE(ani->SetCaseFields(id, {"incident_details=Dicatat di kantor"}));

  // Rina's tablet is lost: a thief has it and her passphrase.
  const core::Id lost = rina->info().device_id;
  rina->Lock();
  auto thief = core::Vault::Unlock(dir_ + "/rina/vault", Pass(), core::VaultOptions{});
  ASSERT_TRUE(thief) << thief.error().message;
  const auto stolen = KeysOf(**thief, *held);
  ASSERT_FALSE(stolen.empty());
  const auto before = SealedOnServer(*held);
  ASSERT_GE(before.size(), 6u);  // name, address, chronology, its past values, conflict sides
  // The control: today the stolen keys open every sealed value of the case.
  EXPECT_EQ(OpenedBy(before, stolen), static_cast<int>(before.size()));
  const auto other_before = SealedOnServer(*other);

  // Only the admin device re-keys; it needs a device or --all.
  EXPECT_EQ(ani->RekeyCases(core::ToHex(lost), false).error().code, errc::forbidden);
  ASSERT_TRUE(admin_dev_->RevokeDevice(core::ToHex(lost)));
  // The lost device still holds the current class key epoch: a new case key
  // wrapped under it would be no better. The re-key is refused until the
  // class key is rotated past it.
  auto early = admin_dev_->RekeyCases(core::ToHex(lost), false);
  ASSERT_FALSE(early);
  EXPECT_NE(early.error().message.find("rotate"), std::string::npos) << early.error().message;
  for (const auto& v : SealedOnServer(*held)) EXPECT_EQ(v.ctx.key_version, 1u);
  Sync(*admin_dev_);
  auto rotated = admin_dev_->RotateClassKey(teduh::ACCESS_CLASS_GENERAL);
  ASSERT_TRUE(rotated) << rotated.error().message;
  std::vector<std::size_t> progress;
  auto report =
      admin_dev_->RekeyCases(core::ToHex(lost).substr(0, 8), false,
                             [&](std::size_t done, std::size_t) { progress.push_back(done); });
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->cases, 1u);
  EXPECT_EQ(report->held_by, lost);
  EXPECT_EQ(report->values, before.size());
  EXPECT_EQ(report->keys_dropped, 1u);
  EXPECT_EQ(progress.back(), 1u);

  // No sealed value of the case opens with anything the lost device held.
  const auto after = SealedOnServer(*held);
  EXPECT_EQ(after.size(), before.size());
  EXPECT_EQ(OpenedBy(after, stolen), 0);
  for (const auto& v : after) EXPECT_EQ(v.ctx.key_version, 2u) << v.where;
  // Nor with what the lost vault unwraps from the server's key records now.
  EXPECT_TRUE(KeysOf(**thief, *held).empty());
  EXPECT_EQ(Query("SELECT COUNT(*) FROM records WHERE parent_id = ?1 AND kind = "
                  "'teduh.keys.v1.CaseKey'",
                  *held)[0][0],
            "1");  // only the new version is left
  // The case rina never held was not touched.
  const auto other_after = SealedOnServer(*other);
  ASSERT_EQ(other_after.size(), other_before.size());
  for (std::size_t i = 0; i < other_after.size(); ++i)
    EXPECT_EQ(other_after[i].value, other_before[i].value);

  // Ani's offline edit was sealed under the old key: it is sealed again,
  // sent again and accepted; everything reads as before.
  auto as = Sync(*ani);
  EXPECT_EQ(as.rekeyed, 1u);
  EXPECT_EQ(as.resealed, 1u);
  EXPECT_EQ(as.rejected, 0u);
  EXPECT_EQ(as.unreadable, 0u);
  EXPECT_EQ(as.accepted, 1u);
  auto st = ani->Status();
  ASSERT_TRUE(st);
  EXPECT_EQ(st->counts.pending, 0u);
  EXPECT_EQ(Value(*ani, *held, "chronology"), "Versi Rina");
  EXPECT_EQ(Value(*ani, *held, "incident_details"), "Dicatat di kantor");
  auto view = ani->ShowCase(id);
  ASSERT_TRUE(view);
  ASSERT_EQ(view->persons.size(), 1u);
  for (const auto& f : view->persons[0].fields) {
    if (f.name == "name") {
      EXPECT_EQ(f.display, "Siti Rahmawati");
    }
  }
  auto conflicts = ani->ListConflicts();
  ASSERT_TRUE(conflicts);
  ASSERT_EQ(conflicts->size(), 1u);
  auto shown = ani->ShowConflict(core::ToHex((*conflicts)[0].conflict_id));
  ASSERT_TRUE(shown) << shown.error().message;
  EXPECT_EQ(shown->kept.value.display, "Versi Rina");
  EXPECT_EQ(shown->other.value.display, "Versi Ani");
  auto history = ani->CaseHistory(id, "chronology");
  ASSERT_TRUE(history) << history.error().message;
  std::vector<std::string> seen;
  for (const auto& h : *history) seen.push_back(h.value.display);
  EXPECT_EQ(seen,
            (std::vector<std::string>{"Versi pertama", "Versi kedua", "Versi Ani", "Versi Rina"}));
  // The new edit is under the new key too.
  EXPECT_EQ(OpenedBy(SealedOnServer(*held), stolen), 0);

  // The lost device, if it connects, is erased.
  auto lost_dev = core::Device::Open(dir_ + "/rina", Pass(), Options("rina"));
  ASSERT_TRUE(lost_dev);
  EXPECT_EQ((*lost_dev)->Sync().error().code, errc::device_revoked);

  auto audit = ReadAudit(data_dir_, 1000);
  ASSERT_TRUE(audit);
  int rekeys = 0;
  for (const auto& r : *audit) {
    if (r.entry.kind() != teduh::audit::v1::ENTRY_KIND_REKEY) continue;
    ++rekeys;
    EXPECT_EQ(r.entry.case_id(), std::string(core::AsBytes(*held)));
    EXPECT_EQ(r.entry.subject_device_id(), std::string(core::AsBytes(lost)));
    EXPECT_EQ(r.entry.user(), "admin");
  }
  EXPECT_EQ(rekeys, 1);
  EXPECT_TRUE(VerifyAudit(data_dir_)->intact());
}

TEST_F(RekeyTest, AnInterruptedRekeyResumesWithItsKeyAndAllRekeysTheWholeUnit) {
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto a = ani->NewCase({"chronology=Satu"});
  auto b = ani->NewCase({"chronology=Dua"});
  ASSERT_TRUE(a && b);
  Sync(*ani);

  // A re-key of case a was cut off after its first frame: its new key
  // (version 2) is on the server, no value is re-encrypted yet.
  auto ck = PlantTarget(*a, 2);
  // Run again (--all): case a is finished with the key it had, case b gets one.
  auto report = admin_dev_->RekeyCases("", true);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->cases, 2u);
  EXPECT_EQ(report->keys_dropped, 2u);
  for (const auto& v : SealedOnServer(*a)) {
    EXPECT_EQ(v.ctx.key_version, 2u);
    core::SealContext ctx = v.ctx;
    ctx.kind = v.kind;
    auto plain = core::OpenField(ck, ctx, v.value);
    EXPECT_TRUE(plain) << "case a was not finished with the key of the interrupted re-key";
  }
  for (const auto& v : SealedOnServer(*b)) EXPECT_EQ(v.ctx.key_version, 2u);

  auto sync = Sync(*ani);
  EXPECT_EQ(sync.rekeyed, 2u);
  EXPECT_EQ(Value(*ani, *a, "chronology"), "Satu");
  EXPECT_EQ(Value(*ani, *b, "chronology"), "Dua");
  // New edits use the new version; an admin device that did not sync since
  // can still re-key again (its keys come from the server).
  ASSERT_TRUE(ani->SetCaseFields(core::ToHex(*a), {"chronology=Satu lagi"}));
  EXPECT_EQ(Sync(*ani).accepted, 1u);
  for (const auto& v : SealedOnServer(*a)) EXPECT_EQ(v.ctx.key_version, 2u);
  auto third = admin_dev_->RekeyCases("", true);
  ASSERT_TRUE(third) << third.error().message;
  for (const auto& v : SealedOnServer(*a)) EXPECT_EQ(v.ctx.key_version, 3u);
  Sync(*ani);
  EXPECT_EQ(Value(*ani, *a, "chronology"), "Satu lagi");
}

TEST_F(RekeyTest, AWorkerLeavingTheCaseStillSendsHerEditAfterTheRekey) {
  LeavingWorkerSendsHerEditAfterTheRekey();
}

// A server whose fetches and list pages hold three values or cases.
class RekeyPagingTest : public RekeyTest {
 protected:
  void SetUp() override {
    config_.limits.max_pull_changes = 3;
    RekeyTest::SetUp();
  }
};

TEST_F(RekeyPagingTest, AWorkerWhoseEvictionPassedStillSendsHerEditAfterTheRekey) {
  // With pulls of three changes the leaving device's pull passes its
  // eviction before the re-key's drop, so the server forgets the eviction
  // before her re-sealed edit comes back.
  LeavingWorkerSendsHerEditAfterTheRekey();
}

TEST_F(RekeyPagingTest, ACaseLargerThanOneFrameIsRekeyedInPages) {
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  std::vector<core::Id> cases;
  for (int i = 0; i < 4; ++i) {
    auto c = ani->NewCase({"chronology=Kasus " + std::to_string(i)});
    ASSERT_TRUE(c);
    cases.push_back(*c);
  }
  const std::string big = core::ToHex(cases[0]);
  ASSERT_TRUE(ani->AddPerson(big, "victim", {"name=Siti", "address=Jalan Melati", "phone=0812"}));
  for (int n = 0; n < 4; ++n)
    ASSERT_TRUE(ani->AddNote(big, "Catatan " + std::to_string(n), "visit"));
  Sync(*ani);
  std::size_t sealed = 0;
  for (const auto& c : cases) sealed += SealedOnServer(c).size();
  ASSERT_GE(SealedOnServer(cases[0]).size(), 8u);

  auto report = admin_dev_->RekeyCases("", true);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->cases, 4u);
  EXPECT_EQ(report->values, sealed);
  for (const auto& c : cases)
    for (const auto& v : SealedOnServer(c)) EXPECT_EQ(v.ctx.key_version, 2u);
  Sync(*ani);
  auto view = ani->ShowCase(big);
  ASSERT_TRUE(view);
  ASSERT_EQ(view->notes.size(), 4u);
  for (const auto& n : view->notes) EXPECT_EQ(n.readability, core::Readability::kReadable);
  EXPECT_EQ(Value(*ani, cases[3], "chronology"), "Kasus 3");
}

TEST_F(RekeyTest, AKeyDropTheDeviceCannotFollowDeletesNothing) {
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto c = ani->NewCase({"chronology=Tetap terbaca"});
  ASSERT_TRUE(c);
  Sync(*ani);
  {  // someone with write access to the server's store plants a drop of every version
    auto store = OpenSqliteStore(StorePath(data_dir_), StoreOptions{});
    ASSERT_TRUE(store);
    ASSERT_FALSE((*store)->Begin());
    ASSERT_FALSE(
        (*store)->PutKeyDrop((*store)->AllocateSeq(), *c, teduh::ACCESS_CLASS_GENERAL, 99));
    ASSERT_FALSE((*store)->Commit());
  }
  auto r = Sync(*ani);
  EXPECT_EQ(r.rekeyed, 0u);
  EXPECT_EQ(Value(*ani, *c, "chronology"), "Tetap terbaca");
  // Its offline edits stay readable on the device too.
  ASSERT_TRUE(ani->SetCaseFields(core::ToHex(*c), {"chronology=Masih terbaca"}));
  EXPECT_EQ(Value(*ani, *c, "chronology"), "Masih terbaca");
}

TEST_F(RekeyTest, AnIncompleteKeyRecordDoesNotStopTheRun) {
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto a = ani->NewCase({"chronology=Satu"});
  auto b = ani->NewCase({"chronology=Dua"});
  ASSERT_TRUE(a && b);
  Sync(*ani);
  {  // half a key record, as a push cut between its fields would leave
    auto store = OpenSqliteStore(StorePath(data_dir_), StoreOptions{});
    ASSERT_TRUE(store);
    auto unit = (*store)->LoadUnit();
    ASSERT_TRUE(unit);
    ASSERT_FALSE((*store)->Begin());
    RecordRow rec;
    rec.record_id = core::NewId();
    rec.kind = std::string(core::kCaseKeyKind);
    rec.parent_id = *a;
    rec.case_id = *a;
    rec.created_by_user = "ani";
    rec.created_seq = (*store)->AllocateSeq();
    ASSERT_FALSE((*store)->InsertRecord(rec));
    teduh::keys::v1::CaseKey version_only;
    version_only.set_version(1);
    const std::string value = version_only.SerializeAsString();
    FieldRow row;
    row.record_id = rec.record_id;
    row.field = 2;
    row.value = value;
    row.stamp = core::Stamp{(unit->hlc_last + 1) << 16, unit->server_id};
    row.author = "ani";
    row.seq = (*store)->AllocateSeq();
    row.txn = (*store)->AllocateTxn();
    ASSERT_FALSE((*store)->PutField(row));
    ASSERT_FALSE((*store)->Commit());
  }
  auto report = admin_dev_->RekeyCases("", true);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->cases, 2u);
  Sync(*ani);
  EXPECT_EQ(Value(*ani, *a, "chronology"), "Satu");
  EXPECT_EQ(Value(*ani, *b, "chronology"), "Dua");
}

TEST_F(RekeyTest, AnInterruptedRekeyIsNotResumedWithAKeyADeviceRevokedSinceCouldReach) {
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto dewi = Staff("dewi", v1::ROLE_OFFICE);
  auto a = ani->NewCase({"chronology=Satu"});
  ASSERT_TRUE(a);
  Sync(*ani);
  Sync(*dewi);
  // The re-key's target was made under epoch 1, which dewi's laptop holds;
  // then the laptop is lost, and the general key rotated past it.
  auto ck = PlantTarget(*a, 2);
  Sync(*dewi);  // it may have pulled the target's key record
  EXPECT_EQ(LoseAndRekey(*dewi).cases, 1u);
  for (const auto& v : SealedOnServer(*a)) {
    EXPECT_EQ(v.ctx.key_version, 3u);
    core::SealContext ctx = v.ctx;
    ctx.kind = v.kind;
    ctx.key_version = 2;
    EXPECT_FALSE(core::OpenField(ck, ctx, v.value));
  }
  Sync(*ani);
  EXPECT_EQ(Value(*ani, *a, "chronology"), "Satu");
}

TEST_F(RekeyTest, BadRequestsAreRefusedWithAClearReason) {
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto bad = admin_dev_->RekeyCases("zz", false);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::invalid_argument);
  auto unknown = admin_dev_->RekeyCases("abcdef", false);
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, errc::not_found);
  // A device that held nothing: nothing to do, and that is not an error.
  auto none = admin_dev_->RekeyCases(core::ToHex(ani->info().device_id), false);
  ASSERT_TRUE(none) << none.error().message;
  EXPECT_EQ(none->cases, 0u);
}

}  // namespace
}  // namespace teduh::server::testing

namespace teduh::server::testing {
namespace {

// The server's side, with raw frames (it never decrypts: the values here are
// random bytes): a value edited between the admin device's fetch and its
// re-encryption is never overwritten, the case is finished only once nothing
// is left under the old version, and a later push under it is answered
// `key_replaced` until it is sent again under the new one.
class RekeyRaceTest : public ServerTest {
 protected:
  std::optional<v1::Frame> Ask(TestClient& client, v1::Frame f) {
    f.set_request_id(next_request_++);
    return client.Call(f);
  }
  v1::RekeySet Fetch(TestClient& admin, const Id& case_id) {
    v1::Frame f;
    f.mutable_rekey_fetch()->set_case_id(std::string(core::AsBytes(case_id)));
    auto reply = Ask(admin, f);
    EXPECT_TRUE(reply && reply->has_rekey_set()) << (reply ? reply->DebugString() : "no reply");
    return reply && reply->has_rekey_set() ? reply->rekey_set() : v1::RekeySet();
  }
  v1::RekeyResult Send(TestClient& admin, const v1::RekeyCase& r) {
    v1::Frame f;
    *f.mutable_rekey_case() = r;
    auto reply = Ask(admin, f);
    EXPECT_TRUE(reply && reply->has_rekey_result()) << (reply ? reply->DebugString() : "no reply");
    return reply && reply->has_rekey_result() ? reply->rekey_result() : v1::RekeyResult();
  }
  static std::string Random(std::size_t n) {
    std::string s(n, '\0');
    crypto::RandomBytes(std::span(reinterpret_cast<std::uint8_t*>(s.data()), s.size()));
    return s;
  }
  // Re-encrypted stand-ins for every value of a fetch.
  static void ResealAll(const v1::RekeySet& set, v1::RekeyCase* r) {
    for (const auto& v : set.values()) {
      v1::Reseal* s = r->add_reseals();
      *s->mutable_ref() = v.ref();
      s->set_value(Random(v.value().size()));
    }
  }
};

TEST_F(RekeyRaceTest, AnEditMadeDuringTheRekeyIsNeverOverwrittenAndLatePushesAreResealed) {
  EnrollBootstrapAdmin();
  TestDevice ani = EnrollApproved(v1::ROLE_OFFICE, "ani");
  auto client = Login(ani);
  const Id case_id = core::NewId();
  const Id key_id = core::NewId();
  constexpr std::uint32_t kChronology = 30;
  std::vector<v1::FieldChange> first = {
      OpenChange(ani, case_id, core::kCaseKind, {}, 1, CaseText(1, "K-1")),
      SealedChange(ani, case_id, core::kCaseKind, {}, kChronology)};
  teduh::keys::v1::CaseKey parts[4];
  parts[0].set_key_class(teduh::ACCESS_CLASS_GENERAL);
  parts[1].set_version(1);
  parts[2].set_epoch(1);
  parts[3].set_wrapped(Random(72));
  for (std::uint32_t i = 0; i < 4; ++i)
    first.push_back(
        OpenChange(ani, key_id, core::kCaseKeyKind, case_id, i + 1, parts[i].SerializeAsString()));
  const v1::PushResult pushed = Push(*client, first);
  for (const auto& r : pushed.results())
    ASSERT_EQ(r.status(), v1::ChangeResult::STATUS_APPLIED) << r.DebugString();

  // Only admin devices re-key: every re-key frame from another is refused.
  {
    v1::Frame list, fetch, rekey;
    list.mutable_rekey_list()->set_all(true);
    fetch.mutable_rekey_fetch()->set_case_id(std::string(core::AsBytes(case_id)));
    rekey.mutable_rekey_case()->set_case_id(std::string(core::AsBytes(case_id)));
    rekey.mutable_rekey_case()->set_finish(true);
    for (const v1::Frame& f : {list, fetch, rekey}) {
      auto reply = Ask(*client, f);
      ASSERT_TRUE(reply && reply->has_error());
      EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_FORBIDDEN);
    }
  }
  {  // and a device may only make the first version of a case key
    teduh::keys::v1::CaseKey v9;
    v9.set_version(9);
    const v1::PushResult forged = Push(*client, {OpenChange(ani, core::NewId(), core::kCaseKeyKind,
                                                            case_id, 2, v9.SerializeAsString())});
    EXPECT_EQ(forged.results(0).status(), v1::ChangeResult::STATUS_REJECTED);
    EXPECT_EQ(forged.results(0).reason(), "bad_value");
  }
  auto admin = Login(admin_);
  {
    v1::Frame f;
    f.mutable_rekey_list()->set_held_by(std::string(core::AsBytes(ani.device_id)));
    auto reply = Ask(*admin, f);
    ASSERT_TRUE(reply && reply->has_rekey_cases()) << reply->DebugString();
    ASSERT_EQ(reply->rekey_cases().case_ids_size(), 1);
    EXPECT_EQ(reply->rekey_cases().case_ids(0), std::string(core::AsBytes(case_id)));
  }
  auto set = Fetch(*admin, case_id);
  ASSERT_EQ(set.keys_size(), 1);
  ASSERT_EQ(set.values_size(), 1);
  EXPECT_EQ(set.values(0).ref().place(), v1::SealedRef::PLACE_CURRENT);

  // Ani edits the chronology before the admin device's answer arrives.
  auto edit = SealedChange(ani, case_id, core::kCaseKind, {}, kChronology);
  *edit.mutable_base() = first[1].stamp();
  const std::string anis_value = edit.value();
  const v1::PushResult edited = Push(*client, {edit});
  ASSERT_EQ(edited.results(0).status(), v1::ChangeResult::STATUS_APPLIED);

  v1::RekeyCase r;
  r.set_case_id(std::string(core::AsBytes(case_id)));
  v1::CaseKeyInfo* nk = r.add_new_keys();
  nk->set_record_id(std::string(core::AsBytes(core::NewId())));
  nk->set_key_class(teduh::ACCESS_CLASS_GENERAL);
  nk->set_version(2);
  nk->set_epoch(1);
  nk->set_wrapped(Random(72));
  ResealAll(set, &r);
  r.set_finish(true);
  {  // a key wrapped under an epoch that is not current is refused
    v1::RekeyCase stale = r;
    stale.mutable_new_keys(0)->set_epoch(7);
    v1::Frame f;
    *f.mutable_rekey_case() = stale;
    auto reply = Ask(*admin, f);
    ASSERT_TRUE(reply && reply->has_error());
    EXPECT_EQ(reply->error().code(), v1::ERROR_CODE_BAD_REQUEST);
    EXPECT_NE(reply->error().message().find("sync"), std::string::npos);
  }
  auto result = Send(*admin, r);
  EXPECT_EQ(result.resealed(), 0u);
  EXPECT_EQ(result.stale(), 1u);
  EXPECT_FALSE(result.finished());
  EXPECT_EQ(result.remaining(), 2u);  // ani's value, and the one it replaced (history)

  // Her value is still the current one.
  bool found = false;
  for (const auto& c : PullAll(*client))
    if (c.record_id() == std::string(core::AsBytes(case_id)) && c.field() == kChronology) {
      EXPECT_EQ(c.value(), anis_value);
      EXPECT_EQ(c.key_version(), 1u);
      found = true;
    }
  EXPECT_TRUE(found);

  // Fetched again: both, with the target the first frame made.
  set = Fetch(*admin, case_id);
  ASSERT_EQ(set.values_size(), 2);
  ASSERT_EQ(set.targets_size(), 1);
  EXPECT_EQ(set.targets(0).version(), 2u);
  v1::RekeyCase again;
  again.set_case_id(r.case_id());
  ResealAll(set, &again);
  again.set_finish(true);
  result = Send(*admin, again);
  EXPECT_EQ(result.resealed(), 2u);
  EXPECT_TRUE(result.finished());
  EXPECT_EQ(result.keys_dropped(), 1u);
  // Only version 2 is left; a new re-key would start from it.
  auto done = Fetch(*admin, case_id);
  ASSERT_EQ(done.keys_size(), 1);
  EXPECT_EQ(done.keys(0).version(), 2u);
  EXPECT_EQ(done.targets_size(), 0);
  for (const auto& v : done.values()) EXPECT_EQ(v.ref().key_version(), 2u);

  // A push sealed under version 1 is answered key_replaced, not final...
  auto late = SealedChange(ani, case_id, core::kCaseKind, {}, kChronology);
  *late.mutable_base() = edit.stamp();
  const v1::PushResult replaced = Push(*client, {late});
  const v1::ChangeResult& answer = replaced.results(0);
  EXPECT_EQ(answer.status(), v1::ChangeResult::STATUS_REJECTED);
  EXPECT_EQ(answer.reason(), core::kKeyReplacedReason);
  // ...and decided anew when sent again, sealed under version 2.
  late.set_key_version(2);
  const v1::PushResult resent = Push(*client, {late});
  EXPECT_EQ(resent.results(0).status(), v1::ChangeResult::STATUS_APPLIED);
  // Resent once more, it is answered from the record like any resend.
  const v1::PushResult twice = Push(*client, {late});
  EXPECT_EQ(twice.results(0).status(), v1::ChangeResult::STATUS_APPLIED);

  // Devices are told which versions went, and the old key record is gone.
  bool dropped = false, old_key = false, new_key = false;
  std::uint64_t after = 0;
  for (int i = 0; i < 20; ++i) {
    auto reply = PullFrame(*client, after);
    ASSERT_TRUE(reply && reply->has_changes());
    for (const auto& d : reply->changes().key_drops()) {
      EXPECT_EQ(d.case_id(), std::string(core::AsBytes(case_id)));
      EXPECT_EQ(d.below_version(), 2u);
      dropped = true;
    }
    for (const auto& c : reply->changes().changes()) {
      old_key |= c.record_id() == std::string(core::AsBytes(key_id));
      new_key |= c.record_id() == nk->record_id();
    }
    after = reply->changes().last_seq();
    if (!reply->changes().has_more()) break;
  }
  EXPECT_TRUE(dropped);
  EXPECT_FALSE(old_key);
  EXPECT_TRUE(new_key);
}

}  // namespace
}  // namespace teduh::server::testing
