#include "teduh/core/device.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/fake_server.h"
#include "core/store_damage.h"
#include "teduh/core/row_sum.h"
#include "teduh/core/schema.h"
#include "teduh/core/sealing.h"

namespace teduh::core {
namespace {

namespace fs = std::filesystem;
namespace pb = teduh::sync::v1;

crypto::SecureBuffer Pass(std::string_view s) {
  return std::move(*crypto::SecureBuffer::CopyOf(AsSpan(s)));
}

std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

class DeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(crypto::Init());
    root_ = fs::temp_directory_path() / ("teduh-device-" + ToHex(NewId()));
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  DeviceOptions Options() {
    DeviceOptions o;
    o.vault.kdf = KdfMode::kInteractive;
    o.connector = server_.connector();
    o.label = "test";
    return o;
  }
  std::unique_ptr<Device> Enroll(const std::string& name, const std::string& code) {
    auto d = Device::Enroll(root_ / name, "ws://fake", code, Pass("kata sandi " + name), Options());
    EXPECT_TRUE(d) << (d ? "" : d.error().message);
    return d ? std::move(*d) : nullptr;
  }
  std::unique_ptr<Device> Reopen(const std::string& name) {
    auto d = Device::Open(root_ / name, Pass("kata sandi " + name), Options());
    EXPECT_TRUE(d) << (d ? "" : d.error().message);
    return d ? std::move(*d) : nullptr;
  }
  // Admin + an approved field officer of `role`.
  std::unique_ptr<Device> Officer(const std::string& name, pb::Role role) {
    if (!admin_) admin_ = Enroll("admin", server_.BootstrapCode());
    auto d = Enroll(name, server_.AddCode(role, name));
    EXPECT_EQ(d->info().state, "pending");
    auto approved = admin_->ApproveDevice(ToHex(d->info().device_id).substr(0, 8));
    EXPECT_TRUE(approved) << (approved ? "" : approved.error().message);
    auto s = d->Sync();
    EXPECT_TRUE(s) << (s ? "" : s.error().message);
    return d;
  }
  const FieldView* Field(const std::vector<FieldView>& fields, std::string_view name) {
    for (const auto& f : fields) {
      if (f.name == name) return &f;
    }
    return nullptr;
  }

  fs::path root_;
  testing::FakeServer server_;
  std::unique_ptr<Device> admin_;
};

TEST_F(DeviceTest, BootstrapAdminIsActiveAndHoldsTheUnitKeys) {
  auto admin = Enroll("admin", server_.BootstrapCode());
  ASSERT_TRUE(admin);
  EXPECT_EQ(admin->info().state, "active");
  EXPECT_EQ(admin->info().role, "admin");
  auto st = admin->Status();
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->holds_unit_root_key);
  EXPECT_EQ(st->keys.size(), 2u);
  EXPECT_EQ(admin->info().unit_fingerprint, KeyFingerprint(server_.unit_root_pk));
}

TEST_F(DeviceTest, EnrollmentWithAWrongUnitFingerprintSavesNothing) {
  auto admin = Enroll("admin", server_.BootstrapCode());
  std::string code = server_.AddCode(pb::ROLE_PENDAMPING, "rina");
  code = code.substr(0, code.size() - 8) + "00000000";
  auto d = Device::Enroll(root_ / "rina", "ws://fake", code, Pass("kata sandi pw"), Options());
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code, errc::wrong_unit);
  EXPECT_FALSE(Device::Exists(root_ / "rina"));
  EXPECT_FALSE(fs::exists(root_ / "rina" / "store.db"));
}

TEST_F(DeviceTest, AUsedCodeIsRefused) {
  std::string code = server_.BootstrapCode();
  ASSERT_TRUE(Enroll("admin", code));
  auto again = Device::Enroll(root_ / "other", "ws://fake", code, Pass("kata sandi pw"), Options());
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, errc::enrollment_refused);
}

TEST_F(DeviceTest, PendingDeviceIsToldToWaitForApproval) {
  auto admin = Enroll("admin", server_.BootstrapCode());
  auto d = Enroll("rina", server_.AddCode(pb::ROLE_PENDAMPING, "rina"));
  auto s = d->Sync();
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, errc::device_pending);
  EXPECT_NE(s.error().message.find("approve"), std::string::npos);
  auto created = d->NewCase({});
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().code, errc::key_missing);
}

TEST_F(DeviceTest, WrongPassphraseIsRefusedAndChangesNothing) {
  auto admin = Enroll("admin", server_.BootstrapCode());
  admin.reset();
  std::string vault_before = ReadAll(root_ / "admin" / "device.json");
  auto d = Device::Open(root_ / "admin", Pass("wrong"), Options());
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code, errc::wrong_passphrase);
  EXPECT_EQ(ReadAll(root_ / "admin" / "device.json"), vault_before);
  EXPECT_TRUE(Reopen("admin"));
}

TEST_F(DeviceTest, NewCaseIsAssignedToItsCreatorWithDefaults) {
  auto rina = Officer("rina", pb::ROLE_PENDAMPING);
  auto id = rina->NewCase({"risk_level=tinggi", "violence_types=physical,psychological",
                           "chronology=Dipukul suaminya pada malam hari"});
  ASSERT_TRUE(id) << id.error().message;
  auto view = rina->ShowCase(ToHex(*id));
  ASSERT_TRUE(view) << view.error().message;
  EXPECT_EQ(Field(view->fields, "assigned_pendamping")->value, "rina");
  EXPECT_EQ(Field(view->fields, "stage")->value, "PENGADUAN");
  EXPECT_EQ(Field(view->fields, "risk_level")->value, "HIGH");
  EXPECT_EQ(Field(view->fields, "violence_types")->value,
            nlohmann::json({"PHYSICAL", "PSYCHOLOGICAL"}));
  EXPECT_EQ(Field(view->fields, "chronology")->value, "Dipukul suaminya pada malam hari");
  std::string number = Field(view->fields, "case_number")->value.get<std::string>();
  EXPECT_TRUE(number.starts_with("DUMAI-")) << number;
  EXPECT_NE(Field(view->fields, "created_at"), nullptr);
  EXPECT_NE(Field(view->fields, "received_at"), nullptr);
}

// Papua: the unit's zone comes with the Welcome; times are shown in it and
// the case number carries the unit's calendar day.
TEST_F(DeviceTest, TimesAreShownInTheUnitsTimeZone) {
  server_.time_zone = "WIT";
  auto rina = Officer("rina", pb::ROLE_PENDAMPING);
  EXPECT_EQ(rina->info().time_zone, TimeZone::kWit);
  auto id = rina->NewCase({"risk_level=sedang"});
  ASSERT_TRUE(id) << id.error().message;
  auto view = rina->ShowCase(ToHex(*id));
  ASSERT_TRUE(view) << view.error().message;
  // Received now, by the server's clock: "YYYY-MM-DD HH:MM WIT".
  const std::string received = Field(view->fields, "received_at")->display;
  ASSERT_EQ(received.size(), 20u) << received;
  EXPECT_TRUE(received.ends_with(" WIT")) << received;
  const std::string day = received.substr(0, 4) + received.substr(5, 2) + received.substr(8, 2);
  std::string number = Field(view->fields, "case_number")->value.get<std::string>();
  EXPECT_NE(number.find("-" + day + "-"), std::string::npos) << number << " " << received;
  // A Welcome without a zone (an older server) keeps the one the device has.
  server_.time_zone.clear();
  ASSERT_TRUE(rina->Sync());
  EXPECT_EQ(rina->info().time_zone, TimeZone::kWit);
}

TEST_F(DeviceTest, UnknownFieldErrorListsTheValidFields) {
  auto rina = Officer("rina", pb::ROLE_PENDAMPING);
  auto r = rina->NewCase({"colour=blue"});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::unknown_field);
  EXPECT_NE(r.error().message.find("risk_level"), std::string::npos);
  EXPECT_EQ(rina->Status()->counts.pending, 0u);
}

TEST_F(DeviceTest, BadEnumValueErrorListsTheValidValues) {
  auto rina = Officer("rina", pb::ROLE_PENDAMPING);
  auto r = rina->NewCase({"risk_level=extreme"});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::bad_value);
  EXPECT_NE(Lower(r.error().message).find("high"), std::string::npos) << r.error().message;
}

TEST_F(DeviceTest, CaseIdsResolveFromAUniquePrefix) {
  auto rina = Officer("rina", pb::ROLE_PENDAMPING);
  auto id = rina->NewCase({});
  ASSERT_TRUE(id);
  std::string hex = ToHex(*id);
  EXPECT_EQ(*rina->ResolveCase(hex.substr(0, 6)), *id);
  EXPECT_EQ(*rina->ResolveCase(hex), *id);
  EXPECT_EQ(rina->ResolveCase(hex.substr(0, 5)).error().code, errc::invalid_argument);
  std::string other = hex[0] == '0' ? "1" + hex.substr(1, 7) : "0" + hex.substr(1, 7);
  EXPECT_EQ(rina->ResolveCase(other).error().code, errc::not_found);
}

TEST_F(DeviceTest, StolenLaptopYieldsNoNamesNotesOrRiskReasons) {
  auto rina = Officer("rina", pb::ROLE_PENDAMPING);
  auto id = rina->NewCase({"risk_rationale=ANCAMAN-PEMBUNUHAN-MARKER", "region_code=REGION-7731"});
  ASSERT_TRUE(id);
  ASSERT_TRUE(rina->AddPerson(ToHex(*id), "korban", {"name=Siti Aminah Marker"}));
  ASSERT_TRUE(rina->AddNote(ToHex(*id), "Catatan kunjungan rahasia marker", "visit"));
  ASSERT_TRUE(rina->Sync());
  auto cases = rina->ListCases();
  ASSERT_TRUE(cases);
  ASSERT_EQ(cases->size(), 1u);
  EXPECT_EQ(cases->front().victim_initials, "S.A.M.");
  std::string all;
  for (const auto& e : fs::recursive_directory_iterator(root_ / "rina")) {
    if (e.is_regular_file()) all += ReadAll(e.path());
  }
  for (const char* secret :
       {"ANCAMAN-PEMBUNUHAN-MARKER", "REGION-7731", "Siti Aminah", "kunjungan rahasia"}) {
    EXPECT_EQ(all.find(secret), std::string::npos) << secret;
  }
  // The server holds ciphertext for sealed fields too.
  std::string server_bytes;
  for (const auto& c : server_.log) server_bytes += c.value();
  EXPECT_EQ(server_bytes.find("Siti Aminah"), std::string::npos);
  EXPECT_EQ(server_bytes.find("kunjungan rahasia"), std::string::npos);
}

TEST_F(DeviceTest, AlteredSealedValueIsAnIntegrityErrorNotData) {
  auto rina = Officer("rina", pb::ROLE_PENDAMPING);
  auto id = rina->NewCase({"chronology=Kronologi asli"});
  ASSERT_TRUE(id);
  rina.reset();
  // Flip one byte in the middle of every sealed value, the row's checksum
  // recomputed: what the case key's seal catches is shown as unreadable.
  store_damage::RewriteRows(root_ / "rina" / "store.db",
                            "UPDATE fields SET value = substr(value, 1, 30) || "
                            "CASE WHEN substr(value, 31, 1) = x'00' THEN x'01' ELSE x'00' END || "
                            "substr(value, 32) WHERE sealed = 1",
                            &RegisterRowSum);
  rina = Reopen("rina");
  auto view = rina->ShowCase(ToHex(*id));
  ASSERT_TRUE(view) << view.error().message;
  const FieldView* f = Field(view->fields, "chronology");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->readability, Readability::kIntegrity);
  EXPECT_TRUE(f->value.is_null());
  EXPECT_TRUE(f->display.empty());
}

TEST_F(DeviceTest, SyncCarriesCasesBetweenDevicesAndKeepsClinicalNotesFromPendamping) {
  auto rina = Officer("rina", pb::ROLE_PENDAMPING);
  auto dewi = Officer("dewi", pb::ROLE_KONSELOR);
  auto id = rina->NewCase({"chronology=Kronologi kasus", "risk_level=medium"});
  ASSERT_TRUE(id);
  ASSERT_TRUE(rina->AddNote(ToHex(*id), "Kunjungan pertama", "visit"));
  auto pushed = rina->Sync();
  ASSERT_TRUE(pushed) << pushed.error().message;
  EXPECT_GT(pushed->accepted, 7u);  // more than one batch (max_push_changes = 7)
  EXPECT_EQ(rina->Status()->counts.pending, 0u);

  ASSERT_TRUE(dewi->Sync());
  auto seen = dewi->ShowCase(ToHex(*id));
  ASSERT_TRUE(seen) << seen.error().message;
  EXPECT_EQ(Field(seen->fields, "chronology")->value, "Kronologi kasus");
  EXPECT_EQ(Field(seen->fields, "risk_level")->value, "MEDIUM");
  ASSERT_EQ(seen->notes.size(), 1u);
  EXPECT_EQ(seen->notes[0].text, "Kunjungan pertama");
  EXPECT_EQ(seen->notes[0].author, "rina");
  ASSERT_TRUE(dewi->AddNote(ToHex(*id), "Sesi konseling: rahasia klinis", "counselling"));
  ASSERT_TRUE(dewi->Sync());

  ASSERT_TRUE(rina->Sync());
  auto back = rina->ShowCase(ToHex(*id));
  ASSERT_TRUE(back);
  ASSERT_EQ(back->notes.size(), 2u);
  const NoteView* clinical = nullptr;
  for (const auto& n : back->notes) {
    if (n.clinical) clinical = &n;
  }
  ASSERT_NE(clinical, nullptr);
  EXPECT_EQ(clinical->readability, Readability::kNoKey);
  EXPECT_TRUE(clinical->text.empty());
  EXPECT_EQ(clinical->kind, "COUNSELLING");
}

// An office device opens thousands of cases; only a few case keys stay
// unwrapped at once, and evicted ones are unwrapped again when needed.
TEST_F(DeviceTest, CasesOpenWhenMoreCaseKeysAreUsedThanTheCacheHolds) {
  auto rina = Officer("rina", pb::ROLE_PENDAMPING);
  std::vector<Id> ids;
  for (int i = 0; i < 9; ++i) {
    auto id = rina->NewCase({"chronology=Kronologi " + std::to_string(i)});
    ASSERT_TRUE(id) << id.error().message;
    ids.push_back(*id);
  }
  ASSERT_TRUE(rina->Sync());
  auto options = Options();
  options.case_key_cache = 3;
  auto office =
      Device::Enroll(root_ / "office", "ws://fake", server_.AddCode(pb::ROLE_OFFICE, "office"),
                     Pass("kata sandi office"), options);
  ASSERT_TRUE(office) << office.error().message;
  ASSERT_TRUE(admin_->ApproveDevice(ToHex((*office)->info().device_id)));
  ASSERT_TRUE((*office)->Sync());
  for (int round = 0; round < 2; ++round) {  // the second round finds most keys evicted
    for (int i = 0; i < 9; ++i) {
      auto seen = (*office)->ShowCase(ToHex(ids[i]));
      ASSERT_TRUE(seen) << seen.error().message;
      const FieldView* chronology = Field(seen->fields, "chronology");
      ASSERT_NE(chronology, nullptr);
      EXPECT_EQ(chronology->readability, Readability::kReadable);
      EXPECT_EQ(chronology->value, "Kronologi " + std::to_string(i));
    }
  }
  // Editing a case whose key was evicted seals under the same case key.
  ASSERT_TRUE((*office)->SetCaseFields(ToHex(ids[0]), {"chronology=Diperbarui"}));
  auto again = (*office)->ShowCase(ToHex(ids[0]));
  ASSERT_TRUE(again);
  EXPECT_EQ(Field(again->fields, "chronology")->value, "Diperbarui");
}

// A sealed value altered on the server is reported by the sync that brings it
// (and stored, shown as unreadable); a value for a key class the device may
// not hold is counted apart, not as damage.
TEST_F(DeviceTest, PullVerifiesEverySealedValueAndReportsDamage) {
  auto rina = Officer("rina", pb::ROLE_PENDAMPING);
  auto dewi = Officer("dewi", pb::ROLE_KONSELOR);
  auto id = rina->NewCase({"chronology=Kronologi asli", "safety_plan=Rencana"});
  ASSERT_TRUE(id);
  ASSERT_TRUE(rina->Sync());
  ASSERT_TRUE(dewi->Sync());
  ASSERT_TRUE(dewi->AddNote(ToHex(*id), "Sesi konseling", "counselling"));
  ASSERT_TRUE(dewi->Sync());
  const FieldPolicy* chronology = nullptr;
  for (const auto& f : Schema::Get().FindKind(kCaseKind)->fields) {
    if (f.name == "chronology") chronology = &f;
  }
  ASSERT_NE(chronology, nullptr);
  bool altered = false;
  for (auto& ch : server_.log) {
    if (ch.sealed() && ch.kind() == kCaseKind && ch.field() == chronology->number) {
      (*ch.mutable_value())[30] ^= 1;
      altered = true;
    }
  }
  ASSERT_TRUE(altered);

  // A second device of the konselor pulls everything from scratch.
  auto konselor = Enroll("konselor2", server_.AddCode(pb::ROLE_KONSELOR, "dewi"));
  ASSERT_TRUE(admin_->ApproveDevice(ToHex(konselor->info().device_id)));
  auto pulled = konselor->Sync();
  ASSERT_TRUE(pulled) << pulled.error().message;
  EXPECT_EQ(pulled->unreadable, 1u);  // the altered chronology
  EXPECT_GE(pulled->verified, 2u);    // safety plan and the counselling note
  EXPECT_EQ(pulled->not_for_this_device, 0u);
  auto view = konselor->ShowCase(ToHex(*id));
  ASSERT_TRUE(view);
  EXPECT_EQ(Field(view->fields, "chronology")->readability, Readability::kIntegrity);
  EXPECT_EQ(Field(view->fields, "safety_plan")->value, "Rencana");

  auto pendamping = Enroll("rina2", server_.AddCode(pb::ROLE_PENDAMPING, "rina"));
  ASSERT_TRUE(admin_->ApproveDevice(ToHex(pendamping->info().device_id)));
  auto field = pendamping->Sync();
  ASSERT_TRUE(field) << field.error().message;
  EXPECT_EQ(field->not_for_this_device, 1u);  // the CLINICAL counselling note
  EXPECT_EQ(field->unreadable, 1u);
}

TEST_F(DeviceTest, PushOnlySendsWorkAndLeavesReceivingForLater) {
  auto rina = Officer("rina", pb::ROLE_PENDAMPING);
  auto office = Officer("office", pb::ROLE_OFFICE);
  auto theirs = office->NewCase({"chronology=Kasus kantor"});
  ASSERT_TRUE(theirs);
  ASSERT_TRUE(office->Sync());
  ASSERT_TRUE(office->SetCaseFields(ToHex(*theirs), {"assigned_pendamping=rina"}));
  ASSERT_TRUE(office->Sync());
  auto mine = rina->NewCase({"chronology=Kasus lapangan"});
  ASSERT_TRUE(mine);
  auto sent = rina->Sync({}, /*push_only=*/true);
  ASSERT_TRUE(sent) << sent.error().message;
  EXPECT_GT(sent->accepted, 0u);
  EXPECT_EQ(sent->pulled, 0u);
  EXPECT_EQ(rina->Status()->counts.pending, 0u);
  EXPECT_EQ(rina->ListCases()->size(), 1u);  // the office's case comes with the next sync
  auto full = rina->Sync();
  ASSERT_TRUE(full) << full.error().message;
  EXPECT_GT(full->pulled, 0u);
  EXPECT_EQ(rina->ListCases()->size(), 2u);
}

TEST_F(DeviceTest, PassphraseChangeKeepsKeysAndDataAndRetiresTheOldOne) {
  auto rina = Officer("rina", pb::ROLE_PENDAMPING);
  auto id = rina->NewCase({"chronology=Kronologi tetap"});
  ASSERT_TRUE(id);
  EXPECT_FALSE(rina->ChangePassphrase(crypto::SecureBuffer()));  // empty: refused
  ASSERT_TRUE(rina->ChangePassphrase(Pass("kata sandi baru")));
  rina.reset();
  EXPECT_EQ(Device::Open(root_ / "rina", Pass("kata sandi rina"), Options()).error().code,
            errc::wrong_passphrase);
  auto again = Device::Open(root_ / "rina", Pass("kata sandi baru"), Options());
  ASSERT_TRUE(again) << again.error().message;
  auto view = (*again)->ShowCase(ToHex(*id));
  ASSERT_TRUE(view);
  EXPECT_EQ(Field(view->fields, "chronology")->value, "Kronologi tetap");
  EXPECT_TRUE((*again)->Sync());  // device keys unchanged: the server still knows it
}

// A server presenting another unit key is refused, and the sync ends with an
// error the officer sees in `teduh status` (it does not hang or save anything).
TEST_F(DeviceTest, SyncRefusesAServerWithAnotherUnitKeyAndRecordsWhy) {
  auto rina = Officer("rina", pb::ROLE_PENDAMPING);
  ASSERT_TRUE(rina->NewCase({"chronology=Kronologi"}));
  server_.unit_root_pk = std::string(32, 'x');
  auto r = rina->Sync();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::wrong_unit);
  auto st = rina->Status();
  ASSERT_TRUE(st);
  EXPECT_GT(st->counts.pending, 0u);  // nothing was sent
  EXPECT_NE(st->last_sync_result.find("unit key"), std::string::npos);
}

TEST_F(DeviceTest, InterruptedPushResumesWithoutDuplicates) {
  auto rina = Officer("rina", pb::ROLE_PENDAMPING);
  auto id = rina->NewCase({"risk_level=low"});
  ASSERT_TRUE(id);
  std::size_t before = server_.applied_count;
  server_.drop_after_push = true;  // the server commits, the answer is lost
  auto first = rina->Sync();
  ASSERT_FALSE(first);
  EXPECT_GT(rina->Status()->counts.pending, 0u);
  std::size_t after_first = server_.applied_count;
  EXPECT_GT(after_first, before);
  auto second = rina->Sync();
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_EQ(rina->Status()->counts.pending, 0u);
  auto total = rina->Status()->counts;
  // Every change applied exactly once.
  EXPECT_EQ(server_.applied_count - before, total.accepted + total.merged);
}

TEST_F(DeviceTest, RejectedChangeStaysVisibleWithItsReason) {
  auto rina = Officer("rina", pb::ROLE_PENDAMPING);
  server_.reject_fields.insert(14);  // region_code
  auto id = rina->NewCase({"region_code=1472"});
  ASSERT_TRUE(id);
  auto s = rina->Sync();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->rejected, 1u);
  auto st = rina->Status();
  ASSERT_TRUE(st);
  EXPECT_EQ(st->counts.rejected, 1u);
  bool found = false;
  for (const auto& item : st->outbox) {
    if (item.entry.state == OutboxState::kRejected) {
      found = true;
      EXPECT_EQ(item.field_name, "region_code");
      EXPECT_EQ(item.entry.reason, "forbidden");
    }
  }
  EXPECT_TRUE(found);
  // Not resent.
  auto again = rina->Sync();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->pushed, 0u);
}

TEST_F(DeviceTest, OnlyTheRootKeyHolderApprovesDevices) {
  auto rina = Officer("rina", pb::ROLE_PENDAMPING);
  auto r = rina->ApproveDevice(ToHex(rina->info().device_id));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::forbidden);
}

TEST_F(DeviceTest, NotesAreAppendOnlyAndImmutableFieldsStaySet) {
  auto rina = Officer("rina", pb::ROLE_PENDAMPING);
  auto id = rina->NewCase({});
  ASSERT_TRUE(id);
  auto r = rina->SetCaseFields(ToHex(*id), {"case_number=X-1"});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  ASSERT_TRUE(rina->SetCaseFields(ToHex(*id), {"stage=asesmen"}));
  EXPECT_EQ(Field(rina->ShowCase(ToHex(*id))->fields, "stage")->value, "ASESMEN");
}

TEST_F(DeviceTest, InitialsAreMadeFromEachWord) {
  EXPECT_EQ(Initials("siti  aminah"), "S.A.");
  EXPECT_EQ(Initials(""), "");
}

TEST_F(DeviceTest, AShortPassphraseIsRefusedAtInitAndAtChangeWithTheReason) {
  auto admin = Enroll("admin", server_.BootstrapCode());
  const std::string code = server_.AddCode(pb::ROLE_PENDAMPING, "rina");
  auto d = Device::Enroll(root_ / "rina", "ws://fake", code, Pass("sebelas kar"), Options());
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code, errc::invalid_argument);
  EXPECT_NE(d.error().message.find("12"), std::string::npos) << d.error().message;
  EXPECT_FALSE(Device::Exists(root_ / "rina"));
  // Twelve characters, some of them more than one byte: accepted.
  auto ok = Device::Enroll(root_ / "rina", "ws://fake", code, Pass("kata sandí é"), Options());
  ASSERT_TRUE(ok) << ok.error().message;
  auto change = admin->ChangePassphrase(Pass("pendek"));
  ASSERT_FALSE(change);
  EXPECT_EQ(change.error().code, errc::invalid_argument);
  EXPECT_TRUE(Reopen("admin")) << "the old passphrase still opens it";
}

TEST_F(DeviceTest, FieldDevicesEraseAfterTenWrongPassphrasesOfficeDevicesDoNotUnlessSet) {
  auto admin = Enroll("admin", server_.BootstrapCode());
  EXPECT_EQ(admin->info().max_failed_unlocks, 0u);
  auto rina = Enroll("rina", server_.AddCode(pb::ROLE_PENDAMPING, "rina"));
  EXPECT_EQ(rina->info().max_failed_unlocks, kFieldRoleFailedUnlocks);
  auto options = Options();
  options.max_failed_unlocks = 4;
  auto office =
      Device::Enroll(root_ / "office", "ws://fake", server_.AddCode(pb::ROLE_OFFICE, "budi"),
                     Pass("kata sandi office"), options);
  ASSERT_TRUE(office);
  EXPECT_EQ((*office)->info().max_failed_unlocks, 4u);
  rina.reset();
  for (std::uint32_t i = 1; i < kFieldRoleFailedUnlocks; ++i) {
    auto r = Device::Open(root_ / "rina", Pass("salah sekali"), Options());
    ASSERT_FALSE(r);
    ASSERT_EQ(r.error().code, errc::wrong_passphrase) << i;
  }
  EXPECT_EQ(Device::Open(root_ / "rina", Pass("salah sekali"), Options()).error().code,
            errc::vault_wiped);
  EXPECT_FALSE(Device::Exists(root_ / "rina"));
}

TEST_F(DeviceTest, BeforeTheLastThreeTriesAnOfficerIsWarnedOfUnsentEdits) {
  auto rina = Officer("rina", pb::ROLE_PENDAMPING);
  ASSERT_TRUE(rina->NewCase({"chronology=Belum terkirim"}));
  rina.reset();
  auto risk = Device::UnlockRiskOf(root_ / "rina");
  EXPECT_EQ(risk.limit, kFieldRoleFailedUnlocks);
  EXPECT_GT(risk.unsent, 0u);
  EXPECT_TRUE(risk.Warning().empty()) << "no warning while many tries are left";
  for (std::uint32_t i = 0; i + 3 < kFieldRoleFailedUnlocks; ++i)
    ASSERT_EQ(Device::Open(root_ / "rina", Pass("salah sekali"), Options()).error().code,
              errc::wrong_passphrase);
  risk = Device::UnlockRiskOf(root_ / "rina");
  EXPECT_EQ(risk.failed, kFieldRoleFailedUnlocks - 3);
  EXPECT_NE(risk.Warning().find("3 wrong passphrase"), std::string::npos) << risk.Warning();
  EXPECT_NE(risk.Warning().find("unsent"), std::string::npos);
  // The right passphrase resets the count; the warning goes.
  ASSERT_TRUE(Reopen("rina"));
  EXPECT_TRUE(Device::UnlockRiskOf(root_ / "rina").Warning().empty());
}

}  // namespace
}  // namespace teduh::core
