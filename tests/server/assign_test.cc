// Scope moves with assignment (ARCHITECTURE §2.4, PROTOCOL §5): the new
// worker's devices receive the whole case with its keys; the previous
// worker's device first pushes the edits it made offline (accepted, though
// the case is no longer hers), then deletes the case.
#include <gtest/gtest.h>

#include "server/device_fixture.h"

namespace teduh::server::testing {
namespace {

using core::errc;
using AssignTest = DeviceServerTest;

TEST_F(AssignTest, ACaseMovesToAnotherWorkerAndLeavesTheFirstWithoutLosingHerEdits) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto budi = Staff("budi", v1::ROLE_PENDAMPING);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto c = rina->NewCase({"chronology=Kronologi awal"});
  ASSERT_TRUE(c);
  Sync(*rina);
  Sync(*ani);
  const std::string id = core::ToHex(*c);
  EXPECT_EQ(budi->ShowCase(id).error().code, errc::not_found);

  // Rina edits offline; meanwhile the office gives the case to Budi.
  ASSERT_TRUE(rina->SetCaseFields(id, {"route=mediasi"}));
  EXPECT_EQ(rina->AssignCase(id, "budi", "", "").error().code, errc::forbidden);
  EXPECT_EQ(ani->AssignCase(id, "", "", "").error().code, errc::invalid_argument);
  auto assigned = ani->AssignCase(id.substr(0, 8), "budi", "", "");
  ASSERT_TRUE(assigned) << assigned.error().message;
  Sync(*ani);

  auto bs = Sync(*budi);
  EXPECT_GT(bs.pulled, 0u);
  EXPECT_EQ(Value(*budi, *c, "chronology"), "Kronologi awal");  // with its key

  auto rs = rina->Sync();
  ASSERT_TRUE(rs) << rs.error().message;
  EXPECT_EQ(rs->rejected, 0u);  // her edit made while she held it is kept
  EXPECT_EQ(rs->accepted, 1u);
  EXPECT_EQ(rs->evicted, 1u);
  EXPECT_EQ(rina->ShowCase(id).error().code, errc::not_found);
  auto again = Sync(*rina);  // nothing more to evict, nothing refused
  EXPECT_EQ(again.evicted, 0u);

  Sync(*budi);
  Sync(*ani);
  EXPECT_EQ(Value(*budi, *c, "route"), "mediasi");
  EXPECT_EQ(Value(*ani, *c, "route"), "mediasi");

  // Now out of her scope: a new edit from her device would be refused by the
  // server, and her device no longer holds the case to make one.
  EXPECT_EQ(rina->SetCaseFields(id, {"route=proses hukum"}).error().code, errc::not_found);

  // Given back, it returns whole.
  ASSERT_TRUE(ani->AssignCase(id, "rina", "", ""));
  Sync(*ani);
  Sync(*rina);
  EXPECT_EQ(Value(*rina, *c, "route"), "mediasi");
  auto bs2 = Sync(*budi);
  EXPECT_EQ(bs2.evicted, 1u);
  EXPECT_EQ(budi->ShowCase(id).error().code, errc::not_found);
}

TEST_F(AssignTest, ASendOnlySyncKeepsTheCaseUntilTheNextPull) {
  auto rina = Staff("rina", v1::ROLE_PENDAMPING);
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto c = rina->NewCase({"chronology=Kronologi"});
  ASSERT_TRUE(c);
  Sync(*rina);
  Sync(*ani);
  const std::string id = core::ToHex(*c);
  ASSERT_TRUE(ani->AssignCase(id, "budi", "", ""));
  Sync(*ani);
  // On a weak connection Rina only sends; the case stays on her tablet.
  ASSERT_TRUE(rina->SetCaseFields(id, {"route=mediasi"}));
  auto r = rina->Sync({}, /*push_only=*/true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->accepted, 1u);
  EXPECT_EQ(Value(*rina, *c, "route"), "mediasi");
  auto pulled = Sync(*rina);
  EXPECT_EQ(pulled.evicted, 1u);
  EXPECT_EQ(rina->ShowCase(id).error().code, errc::not_found);
  Sync(*ani);
  EXPECT_EQ(Value(*ani, *c, "route"), "mediasi");
}

}  // namespace
}  // namespace teduh::server::testing
