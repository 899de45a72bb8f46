// Revoking a lost or taken device (ARCHITECTURE §4, PROTOCOL §7): the server
// refuses it at once; an admin device signs a wipe order with the unit root
// key; the device checks the order, erases its vault and store, and returns a
// signed receipt; a copy of the device is erased the same way; an order the
// unit did not sign erases nothing.
#include <gtest/gtest.h>

#include <filesystem>

#include "server/device_fixture.h"
#include "teduh/core/sealing.h"
#include "teduh/server/store.h"

namespace teduh::server::testing {
namespace {

namespace fs = std::filesystem;
using core::errc;

class RevokeTest : public DeviceServerTest {
 protected:
  std::string Home(const std::string& name) const { return dir_ + "/" + name; }
  static std::string Prefix(core::Device& d) {
    return core::ToHex(d.info().device_id).substr(0, 8);
  }

  std::optional<core::RemoteDevice> Remote(const core::Id& id) {
    auto list = admin_dev_->ListRemoteDevices();
    EXPECT_TRUE(list) << (list ? "" : list.error().message);
    if (!list) return std::nullopt;
    for (const auto& r : *list)
      if (r.device_id == id) return r;
    return std::nullopt;
  }

  void ExpectErased(const std::string& name) {
    EXPECT_FALSE(fs::exists(Home(name) + "/vault"));
    EXPECT_FALSE(fs::exists(Home(name) + "/store.db"));
    EXPECT_FALSE(fs::exists(Home(name) + "/store.db-wal"));
    EXPECT_FALSE(fs::exists(Home(name) + "/device.json"));
    EXPECT_TRUE(fs::exists(Home(name) + "/erased"));
    auto reopened = core::Device::Open(Home(name), Pass(), Options(name));
    ASSERT_FALSE(reopened);
    EXPECT_EQ(reopened.error().code, errc::device_revoked);
    EXPECT_NE(reopened.error().message.find("erased"), std::string::npos);
  }

  std::vector<AuditRecord> Audit() {
    auto records = ReadAudit(data_dir_, 1000);
    EXPECT_TRUE(records);
    return records ? *records : std::vector<AuditRecord>{};
  }
};

TEST_F(RevokeTest, ARevokedDeviceErasesItselfAtItsNextConnectionAndSoDoesACopyOfIt) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto case_id = rina->NewCase({"chronology=Korban dipukul di rumah"});
  ASSERT_TRUE(case_id);
  Sync(*rina);
  const core::Id rina_id = rina->info().device_id;

  // Whoever took the tablet copied its folder first.
  rina.reset();
  fs::copy(Home("rina"), Home("rina-copy"), fs::copy_options::recursive);
  auto reopened = core::Device::Open(Home("rina"), Pass(), Options("rina"));
  ASSERT_TRUE(reopened) << reopened.error().message;
  rina = std::move(*reopened);

  auto revoked = admin_dev_->RevokeDevice(Prefix(*rina));
  ASSERT_TRUE(revoked) << revoked.error().message;
  EXPECT_EQ(revoked->state, "revoked");
  EXPECT_TRUE(revoked->wipe_ordered);
  EXPECT_GT(revoked->revoked_ms, 0);
  EXPECT_EQ(revoked->wiped_ms, 0);

  auto sync = rina->Sync();
  ASSERT_FALSE(sync);
  EXPECT_EQ(sync.error().code, errc::device_revoked);
  EXPECT_NE(sync.error().message.find("erased"), std::string::npos) << sync.error().message;
  EXPECT_FALSE(rina->ShowCase(core::ToHex(*case_id)));  // nothing left in memory either
  ExpectErased("rina");
  auto after = Remote(rina_id);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->state, "revoked");
  EXPECT_GT(after->wiped_ms, 0);

  // The copy opens with the passphrase, but its first connection erases it.
  auto copy = core::Device::Open(Home("rina-copy"), Pass(), Options("rina-copy"));
  ASSERT_TRUE(copy) << copy.error().message;
  EXPECT_TRUE((*copy)->ShowCase(core::ToHex(*case_id)));
  auto copy_sync = (*copy)->Sync();
  ASSERT_FALSE(copy_sync);
  EXPECT_EQ(copy_sync.error().code, errc::device_revoked);
  ExpectErased("rina-copy");

  // Signed, audited: the revocation by the admin and the erasures.
  auto check = VerifyAudit(data_dir_);
  ASSERT_TRUE(check);
  EXPECT_TRUE(check->intact());
  int revokes = 0, receipts = 0;
  for (const auto& r : Audit()) {
    if (r.entry.kind() == teduh::audit::v1::ENTRY_KIND_REVOKE) {
      ++revokes;
      EXPECT_EQ(r.entry.user(), "admin");
      EXPECT_EQ(r.entry.subject_user(), "rina");
      EXPECT_TRUE(r.entry.wipe_ordered());
      EXPECT_EQ(r.entry.signature().size(), crypto::kSignatureBytes);
    }
    if (r.entry.kind() == teduh::audit::v1::ENTRY_KIND_WIPE_RECEIPT) {
      ++receipts;
      EXPECT_EQ(r.entry.device_id(), std::string(core::AsBytes(rina_id)));
    }
  }
  EXPECT_EQ(revokes, 1);
  EXPECT_EQ(receipts, 2);

  // The tablet, once returned, is enrolled again with a new code.
  auto code = CreateEnrollment(data_dir_, v1::ROLE_PENDAMPING, "rina", std::chrono::hours(1), env_);
  ASSERT_TRUE(code);
  auto again = Enroll("rina", code->code);
  ASSERT_TRUE(again);
  EXPECT_FALSE(fs::exists(Home("rina") + "/erased"));
  EXPECT_NE(again->info().device_id, rina_id);
}

TEST_F(RevokeTest, TheServerHostRefusesAtOnceAndTheAdminDevicesOrderErasesLater) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto case_id = rina->NewCase({"chronology=Kronologi"});
  ASSERT_TRUE(case_id);
  Sync(*rina);

  EXPECT_EQ(RevokeDeviceOnServer(data_dir_, "abc", env_).error(),
            core::make_error_code(errc::invalid_argument));
  EXPECT_EQ(RevokeDeviceOnServer(data_dir_, "ffffffffffff", env_).error(),
            core::make_error_code(errc::not_found));
  auto on_server = RevokeDeviceOnServer(data_dir_, Prefix(*rina), env_);
  ASSERT_TRUE(on_server) << on_server.error().message();
  EXPECT_TRUE(on_server->revocation.wipe_order.empty());
  EXPECT_EQ(on_server->revocation.by_user, "server operator");

  // Refused, but nothing erased: the host holds no unit root key.
  ASSERT_TRUE(rina->SetCaseFields(core::ToHex(*case_id), {"route=mediasi"}));
  auto refused = rina->Sync();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::device_revoked);
  EXPECT_TRUE(fs::exists(Home("rina") + "/vault"));
  EXPECT_EQ(Value(*rina, *case_id, "chronology"), "Kronologi");
  auto listed = Remote(rina->info().device_id);
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->state, "revoked");
  EXPECT_FALSE(listed->wipe_ordered);

  // An admin device signs the order for the already revoked device.
  auto ordered = admin_dev_->RevokeDevice(Prefix(*rina));
  ASSERT_TRUE(ordered) << ordered.error().message;
  EXPECT_TRUE(ordered->wipe_ordered);
  EXPECT_EQ(ordered->revoked_ms, on_server->revocation.revoked_ms);  // revoked since then
  auto erased = rina->Sync();
  ASSERT_FALSE(erased);
  EXPECT_EQ(erased.error().code, errc::device_revoked);
  ExpectErased("rina");
  auto check = VerifyAudit(data_dir_);
  ASSERT_TRUE(check);
  EXPECT_TRUE(check->intact());
}

TEST_F(RevokeTest, OnlyAnAdminDeviceWithTheRootKeyRevokesAndNeverItself) {
  auto tono = Staff("tono", v1::ROLE_SUPERVISOR);
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto by_supervisor = tono->RevokeDevice(Prefix(*rina));
  ASSERT_FALSE(by_supervisor);
  EXPECT_EQ(by_supervisor.error().code, errc::forbidden);
  auto self = admin_dev_->RevokeDevice(Prefix(*admin_dev_));
  ASSERT_FALSE(self);
  EXPECT_EQ(self.error().code, errc::invalid_argument);
  EXPECT_EQ(admin_dev_->RevokeDevice("xyz").error().code, errc::invalid_argument);
  EXPECT_EQ(admin_dev_->RevokeDevice("0000000000").error().code, errc::not_found);
  Sync(*rina);  // still active
  Sync(*tono);
}

TEST_F(RevokeTest, AnOrderTheUnitDidNotSignErasesNothing) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto case_id = rina->NewCase({"chronology=Kronologi"});
  ASSERT_TRUE(case_id);
  Sync(*rina);
  const core::Id rina_id = rina->info().device_id;

  // Someone with write access to the server's store plants a revocation
  // with an order signed by another key.
  auto forger = crypto::GenerateSignKeyPair();
  ASSERT_TRUE(forger);
  {
    auto store = OpenSqliteStore(StorePath(data_dir_), StoreOptions{});
    ASSERT_TRUE(store);
    auto unit = (*store)->LoadUnit();
    ASSERT_TRUE(unit);
    teduh::keys::v1::WipeOrder order;
    order.set_device_id(std::string(core::AsBytes(rina_id)));
    order.set_unit_id(unit->unit_id);
    order.set_issued_ms(env_.NowMs());
    order.set_admin_device_id(std::string(core::AsBytes(admin_dev_->info().device_id)));
    auto sig = crypto::Sign(forger->secret_key, core::AsSpan(core::WipeOrderMessage(
                                                    order.device_id(), order.unit_id(),
                                                    order.issued_ms(), order.admin_device_id())));
    ASSERT_TRUE(sig);
    order.set_signature(std::string(reinterpret_cast<const char*>(sig->data()), sig->size()));
    ASSERT_FALSE((*store)->Begin());
    auto device = (*store)->FindDevice(rina_id);
    ASSERT_TRUE(device && *device);
    RevocationRow row;
    row.device_id = rina_id;
    row.revoked_ms = env_.NowMs();
    row.by_user = "intruder";
    row.wipe_order = order.SerializeAsString();
    ASSERT_FALSE((*store)->SetDeviceState(rina_id, v1::DEVICE_STATE_REVOKED));
    ASSERT_FALSE((*store)->PutRevocation(row));
    ASSERT_FALSE((*store)->Commit());
  }
  auto sync = rina->Sync();
  ASSERT_FALSE(sync);
  EXPECT_EQ(sync.error().code, errc::integrity);
  EXPECT_NE(sync.error().message.find("nothing was erased"), std::string::npos);
  EXPECT_TRUE(fs::exists(Home("rina") + "/vault"));
  EXPECT_TRUE(fs::exists(Home("rina") + "/store.db"));
  EXPECT_EQ(Value(*rina, *case_id, "chronology"), "Kronologi");
}

// The server's side, with raw frames.
class RevokeFrameTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    EnrollBootstrapAdmin();
    auto store = OpenSqliteStore(StorePath(data_dir_), StoreOptions{.read_only = true});
    ASSERT_TRUE(store);
    unit_id_ = (*store)->LoadUnit()->unit_id;
  }

  teduh::keys::v1::WipeOrder Order(const TestDevice& target, const crypto::SecureBuffer& signer,
                                   const TestDevice* admin = nullptr) {
    teduh::keys::v1::WipeOrder o;
    o.set_device_id(std::string(core::AsBytes(target.device_id)));
    o.set_unit_id(unit_id_);
    o.set_issued_ms(env_.NowMs());
    o.set_admin_device_id(std::string(core::AsBytes((admin ? *admin : admin_).device_id)));
    auto sig =
        crypto::Sign(signer, core::AsSpan(core::WipeOrderMessage(
                                 o.device_id(), o.unit_id(), o.issued_ms(), o.admin_device_id())));
    o.set_signature(std::string(reinterpret_cast<const char*>(sig->data()), sig->size()));
    return o;
  }

  std::optional<v1::Frame> Revoke(TestClient& client, const TestDevice& target,
                                  std::optional<teduh::keys::v1::WipeOrder> order) {
    v1::Frame f;
    f.set_request_id(next_request_++);
    f.mutable_revoke_device()->set_device_id(std::string(core::AsBytes(target.device_id)));
    if (order) *f.mutable_revoke_device()->mutable_wipe_order() = *order;
    return client.Call(f);
  }

  teduh::keys::v1::WipeReceipt Receipt(const TestDevice& device,
                                       const teduh::keys::v1::WipeOrder& order,
                                       const crypto::SecureBuffer& signer) {
    teduh::keys::v1::WipeReceipt r;
    r.set_device_id(order.device_id());
    r.set_order_signature(order.signature());
    r.set_erased_ms(env_.NowMs());
    auto sig = crypto::Sign(signer, core::AsSpan(core::WipeReceiptMessage(
                                        r.device_id(), r.order_signature(), r.erased_ms())));
    r.set_signature(std::string(reinterpret_cast<const char*>(sig->data()), sig->size()));
    return r;
  }

  DeviceState StateOf(const TestDevice& d) {
    for (const auto& row : *ListDevices(data_dir_))
      if (row.device_id == d.device_id) return row.state;
    return v1::DEVICE_STATE_UNSPECIFIED;
  }

  static v1::ErrorCode ErrorOf(const std::optional<v1::Frame>& f) {
    return f && f->has_error() ? f->error().code() : v1::ERROR_CODE_UNSPECIFIED;
  }

  std::string unit_id_;
};

TEST_F(RevokeFrameTest, RevocationsAreCheckedAsTheDeviceWillCheckThem) {
  TestDevice rina = EnrollApproved(v1::ROLE_PENDAMPING, "rina");
  TestDevice tono = EnrollApproved(v1::ROLE_SUPERVISOR, "tono");
  auto supervisor = Login(tono);
  EXPECT_EQ(ErrorOf(Revoke(*supervisor, rina, Order(rina, root_.secret_key))),
            v1::ERROR_CODE_FORBIDDEN);

  auto admin = Login(admin_);
  auto other_key = crypto::GenerateSignKeyPair();
  EXPECT_EQ(ErrorOf(Revoke(*admin, rina, Order(rina, other_key->secret_key))),
            v1::ERROR_CODE_BAD_SIGNATURE);
  EXPECT_EQ(ErrorOf(Revoke(*admin, rina, Order(tono, root_.secret_key))),
            v1::ERROR_CODE_BAD_REQUEST);  // the order names another device
  EXPECT_EQ(ErrorOf(Revoke(*admin, rina, Order(rina, root_.secret_key, &tono))),
            v1::ERROR_CODE_BAD_REQUEST);  // signed for another admin device
  EXPECT_EQ(ErrorOf(Revoke(*admin, rina, std::nullopt)), v1::ERROR_CODE_BAD_REQUEST);
  EXPECT_EQ(ErrorOf(Revoke(*admin, admin_, Order(admin_, root_.secret_key))),
            v1::ERROR_CODE_BAD_REQUEST);  // not itself
  EXPECT_EQ(StateOf(rina), v1::DEVICE_STATE_ACTIVE);

  // A live connection of the device ends when it is revoked.
  auto live = Login(rina);
  const auto order = Order(rina, root_.secret_key);
  auto ok = Revoke(*admin, rina, order);
  ASSERT_TRUE(ok && ok->has_revoke_result()) << (ok ? ok->DebugString() : "no reply");
  EXPECT_EQ(ok->revoke_result().device().state(), v1::DEVICE_STATE_REVOKED);
  EXPECT_TRUE(ok->revoke_result().device().wipe_ordered());
  EXPECT_TRUE(live->WaitClosed());
  EXPECT_EQ(StateOf(rina), v1::DEVICE_STATE_REVOKED);
}

TEST_F(RevokeFrameTest, ARevokedDeviceGetsItsOrderInsteadOfAWelcomeAndOnlyItsReceiptCounts) {
  TestDevice rina = EnrollApproved(v1::ROLE_PENDAMPING, "rina");
  auto admin = Login(admin_);
  const auto order = Order(rina, root_.secret_key);
  ASSERT_TRUE(Revoke(*admin, rina, order)->has_revoke_result());

  auto wiping = [&]() {
    auto c = TestClient::Connect(server_->port());
    auto reply = Authenticate(*c, rina);
    EXPECT_TRUE(reply && reply->has_wipe()) << (reply ? reply->DebugString() : "no reply");
    if (reply && reply->has_wipe()) {
      EXPECT_EQ(reply->wipe().order().signature(), order.signature());
    }
    return c;
  };
  auto wiped_ms = [&] {
    auto rows = ListRevocations(data_dir_);
    return rows && rows->size() == 1 ? (*rows)[0].wiped_ms : -1;
  };

  // Nothing but the receipt is accepted.
  auto c1 = wiping();
  v1::Frame pull;
  pull.set_request_id(next_request_++);
  pull.mutable_pull();
  EXPECT_EQ(ErrorOf(c1->Call(pull)), v1::ERROR_CODE_UNEXPECTED_FRAME);

  // A receipt signed by another key is refused and not recorded.
  auto c2 = wiping();
  auto stranger = crypto::GenerateSignKeyPair();
  v1::Frame forged;
  forged.set_request_id(next_request_++);
  *forged.mutable_wipe_receipt() = Receipt(rina, order, stranger->secret_key);
  EXPECT_EQ(ErrorOf(c2->Call(forged)), v1::ERROR_CODE_BAD_SIGNATURE);
  EXPECT_TRUE(c2->WaitClosed());
  EXPECT_EQ(wiped_ms(), 0);

  auto c3 = wiping();
  v1::Frame good;
  good.set_request_id(next_request_++);
  *good.mutable_wipe_receipt() = Receipt(rina, order, rina.sign.secret_key);
  EXPECT_EQ(ErrorOf(c3->Call(good)), v1::ERROR_CODE_DEVICE_REVOKED);
  EXPECT_TRUE(c3->WaitClosed());
  EXPECT_GT(wiped_ms(), 0);
  auto check = VerifyAudit(data_dir_);
  ASSERT_TRUE(check);
  EXPECT_TRUE(check->intact());
}

}  // namespace
}  // namespace teduh::server::testing
