// Damage to a device's local store, through a real sync (docs/SECURITY.md
// "Faults"): a damaged value is left out of what the device shows and named;
// the next sync removes it, pulls the server's copy again, and sends again an
// unsent edit whose outbox entry was damaged, so nothing is lost.
#include <gtest/gtest.h>

#include <vector>

#include "core/store_damage.h"
#include "server/device_fixture.h"
#include "teduh/core/schema.h"

namespace teduh::server::testing {
namespace {

using store_damage::DamageRows;

class DeviceDamageTest : public DeviceServerTest {
 protected:
  std::unique_ptr<core::Device> Reopen(const std::string& name) {
    auto o = Options(name);
    o.store.on_damage = [this](const core::DamagedRow& row) { met_.push_back(row); };
    auto d = core::Device::Open(dir_ + "/" + name, Pass(), o);
    EXPECT_TRUE(d) << (d ? "" : d.error().message);
    return d ? std::move(*d) : nullptr;
  }
  std::string StoreOf(const std::string& name) const { return dir_ + "/" + name + "/store.db"; }

  std::vector<core::DamagedRow> met_;
};

TEST_F(DeviceDamageTest, DamageIsLeftOutThenRepairedBySyncWithNothingLost) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto c = rina->NewCase({"chronology=Kronologi awal", "route=mediasi"});
  ASSERT_TRUE(c);
  const std::string id = core::ToHex(*c);
  Sync(*rina);
  ASSERT_TRUE(rina->SetCaseFields(id, {"route=proses hukum"}));  // not sent yet
  rina.reset();

  // The chronology's row (sealed) changes behind its checksum, and the unsent
  // edit's outbox entry reads as if the server had accepted it.
  DamageRows(
      StoreOf("rina"),
      "UPDATE fields SET stamp_hlc = stamp_hlc + 1 WHERE sealed = 1 AND record_id = x'" + id + "'");
  DamageRows(StoreOf("rina"), "UPDATE outbox SET state = 1 WHERE state = 0");

  rina = Reopen("rina");
  ASSERT_TRUE(rina);
  EXPECT_EQ(Value(*rina, *c, "chronology"), "") << "a damaged value is never shown";
  ASSERT_FALSE(met_.empty());
  EXPECT_EQ(met_[0].table, "fields");
  EXPECT_EQ(met_[0].record_id, *c);
  auto check = rina->CheckStore();
  ASSERT_TRUE(check) << check.error().message;
  EXPECT_FALSE(check->intact());
  EXPECT_EQ(check->rows.size(), 2u) << "the chronology and the outbox entry";

  auto report = Sync(*rina);
  EXPECT_EQ(report.store_damaged_rows, 2u);
  EXPECT_EQ(report.store_unsendable, 0u);
  EXPECT_TRUE(report.store_damage_left.empty());
  EXPECT_EQ(report.accepted, 1u) << "the unsent edit went after all";
  EXPECT_EQ(Value(*rina, *c, "chronology"), "Kronologi awal") << "pulled again";
  check = rina->CheckStore();
  ASSERT_TRUE(check);
  EXPECT_TRUE(check->intact());

  Sync(*ani);
  EXPECT_EQ(Value(*ani, *c, "route"), "proses hukum");
}

}  // namespace
}  // namespace teduh::server::testing
