// Concurrent edits of REVIEW fields between real devices (the field-core
// Device API over WebSocket) and the real server: the conflict reaches office
// devices, is shown with both values decrypted, and is resolved offline.
#include <gtest/gtest.h>

#include <chrono>

#include "server/device_fixture.h"
#include "teduh/core/device.h"
#include "teduh/server/admin.h"

namespace teduh::server::testing {
namespace {

using ReconcileTest = DeviceServerTest;

TEST_F(ReconcileTest, ConcurrentChronologyEditsAreQueuedShownAndResolvedEverywhere) {
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto tono = Staff("tono", v1::ROLE_SUPERVISOR);
  auto case_id = ani->NewCase({"chronology=Versi awal"});
  ASSERT_TRUE(case_id);
  Sync(*ani);
  Sync(*tono);

  // Both edit offline over the same value; tono's edit is the later one.
  ASSERT_TRUE(ani->SetCaseFields(core::ToHex(*case_id), {"chronology=Versi Ani"}));
  env_.Advance(1000);
  ASSERT_TRUE(tono->SetCaseFields(core::ToHex(*case_id), {"chronology=Versi Tono"}));
  EXPECT_EQ(Sync(*ani).accepted, 1u);
  auto second = Sync(*tono);
  EXPECT_EQ(second.conflict, 1u);
  Sync(*ani);

  for (auto* d : {ani.get(), tono.get()}) {
    auto list = d->ListConflicts();
    ASSERT_TRUE(list) << list.error().message;
    ASSERT_EQ(list->size(), 1u);
    EXPECT_EQ((*list)[0].field, "chronology");
    EXPECT_EQ((*list)[0].case_id, *case_id);
    EXPECT_EQ((*list)[0].kept.author, "tono");  // the later stamp, provisionally
    EXPECT_EQ((*list)[0].other.author, "ani");
    EXPECT_EQ(Value(*d, *case_id, "chronology"), "Versi Tono");
  }
  auto list = ani->ListConflicts();
  const std::string id = core::ToHex((*list)[0].conflict_id);
  auto shown = ani->ShowConflict(id);
  ASSERT_TRUE(shown) << shown.error().message;
  EXPECT_EQ(shown->kept.value.display, "Versi Tono");
  EXPECT_EQ(shown->other.value.display, "Versi Ani");

  // Bad choices change nothing.
  EXPECT_FALSE(ani->ResolveConflict(id, "", std::nullopt));
  EXPECT_FALSE(ani->ResolveConflict(id, "sideways", std::nullopt));
  auto pendamping = Staff("rina", v1::ROLE_PENDAMPING);
  EXPECT_EQ(pendamping->ResolveConflict(id, "kept", std::nullopt).error().code,
            core::errc::forbidden);

  // Ani keeps her own version, offline; it syncs and closes the conflict everywhere.
  ASSERT_TRUE(ani->ResolveConflict(id, "mine", std::nullopt));
  EXPECT_TRUE(ani->ListConflicts()->empty());
  EXPECT_EQ(Value(*ani, *case_id, "chronology"), "Versi Ani");
  auto resolved = Sync(*ani);
  EXPECT_EQ(resolved.conflict, 0u);
  EXPECT_EQ(resolved.rejected, 0u);
  Sync(*tono);
  EXPECT_TRUE(tono->ListConflicts()->empty());
  EXPECT_EQ(Value(*tono, *case_id, "chronology"), "Versi Ani");
  auto all = tono->ListConflicts(/*include_resolved=*/true);
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].resolved_by, "ani");
  EXPECT_EQ((*all)[0].resolution, "other");  // ani's side was the one set aside
}

TEST_F(ReconcileTest, TwoDifferentResolutionsEndTheSameWayWithoutANewConflict) {
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto tono = Staff("tono", v1::ROLE_SUPERVISOR);
  auto case_id = ani->NewCase({"safety_plan=Rencana awal"});
  ASSERT_TRUE(case_id);
  Sync(*ani);
  Sync(*tono);
  ASSERT_TRUE(ani->SetCaseFields(core::ToHex(*case_id), {"safety_plan=Rencana A"}));
  env_.Advance(1000);
  ASSERT_TRUE(tono->SetCaseFields(core::ToHex(*case_id), {"safety_plan=Rencana T"}));
  Sync(*ani);
  Sync(*tono);
  Sync(*ani);
  auto list = ani->ListConflicts();
  ASSERT_EQ(list->size(), 1u);
  const std::string id = core::ToHex((*list)[0].conflict_id);
  // Both resolve offline, differently.
  ASSERT_TRUE(ani->ResolveConflict(id, "", std::string("Rencana gabungan dari Ani")));
  env_.Advance(1000);
  ASSERT_TRUE(tono->ResolveConflict(id, "kept", std::nullopt));
  Sync(*ani);
  auto late = Sync(*tono);
  EXPECT_EQ(late.conflict, 0u);  // a resolution never opens a new conflict
  Sync(*ani);
  Sync(*tono);
  EXPECT_EQ(Value(*ani, *case_id, "safety_plan"), Value(*tono, *case_id, "safety_plan"));
  EXPECT_TRUE(ani->ListConflicts()->empty());
  EXPECT_TRUE(tono->ListConflicts()->empty());
  EXPECT_EQ(ani->ListConflicts(true)->size(), 1u);
}

// A tablet whose clock is a year ahead does not win every last-writer-wins
// merge: the server re-stamps its changes and tells it the offset.
TEST_F(ReconcileTest, ADeviceAYearAheadDoesNotWinAgainstCorrectClocks) {
  constexpr std::int64_t kYearMs = 365LL * 24 * 3600 * 1000;
  TestEnv ahead(env_.NowMs());
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto budi = Staff("budi", v1::ROLE_SUPERVISOR, &ahead);
  auto case_id = ani->NewCase({"route=mediasi"});
  ASSERT_TRUE(case_id);
  Sync(*ani);
  Sync(*budi);
  // Budi's tablet clock is set a year ahead, then it edits offline (stamped a
  // year ahead); Ani edits a minute later.
  ahead.Advance(kYearMs);
  ASSERT_TRUE(budi->SetCaseFields(core::ToHex(*case_id), {"route=proses hukum"}));
  auto first = Sync(*budi);
  EXPECT_LT(first.clock_offset_ms, -kYearMs + 60'000);  // told it runs a year ahead
  env_.Advance(60'000);
  ahead.Advance(60'000);
  ASSERT_TRUE(ani->SetCaseFields(core::ToHex(*case_id), {"route=kekeluargaan"}));
  Sync(*ani);
  Sync(*budi);
  EXPECT_EQ(Value(*ani, *case_id, "route"), Value(*budi, *case_id, "route"));
  auto view = ani->ShowCase(core::ToHex(*case_id));
  ASSERT_TRUE(view);
  for (const auto& f : view->fields)
    if (f.name == "route") {
      EXPECT_EQ(f.value, "FAMILY_SETTLEMENT");
    }
  // Budi's next edit carries the corrected clock: it is not re-stamped again.
  env_.Advance(60'000);
  ahead.Advance(60'000);
  ASSERT_TRUE(budi->SetCaseFields(core::ToHex(*case_id), {"route=proses hukum"}));
  auto again = Sync(*budi);
  EXPECT_EQ(again.accepted, 1u);
  EXPECT_EQ(again.clock_offset_ms, 0);
  Sync(*ani);
  EXPECT_EQ(Value(*ani, *case_id, "route"), Value(*budi, *case_id, "route"));
}

// Nothing is lost: every value a field had, including one that lost a merge,
// is in its history (decrypted on the device), and an old one can come back.
TEST_F(ReconcileTest, HistoryShowsEveryValueAndRestoreBringsOneBack) {
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto tono = Staff("tono", v1::ROLE_SUPERVISOR);
  auto case_id = ani->NewCase({"chronology=Versi satu", "route=mediasi"});
  ASSERT_TRUE(case_id);
  Sync(*ani);
  Sync(*tono);
  env_.Advance(1000);
  ASSERT_TRUE(ani->SetCaseFields(core::ToHex(*case_id), {"chronology=Versi dua"}));
  Sync(*ani);
  // Concurrent LWW edit of the route: tono's later one wins, ani's is kept.
  ASSERT_TRUE(ani->SetCaseFields(core::ToHex(*case_id), {"route=proses hukum"}));
  env_.Advance(1000);
  ASSERT_TRUE(tono->SetCaseFields(core::ToHex(*case_id), {"route=kekeluargaan"}));
  Sync(*tono);
  auto merged = Sync(*ani);
  EXPECT_EQ(merged.merged, 1u);

  auto chronology = ani->CaseHistory(core::ToHex(*case_id), "chronology", "en");
  ASSERT_TRUE(chronology) << chronology.error().message;
  ASSERT_EQ(chronology->size(), 2u);
  EXPECT_EQ((*chronology)[0].value.display, "Versi satu");
  EXPECT_EQ((*chronology)[0].reason, "overwritten");
  EXPECT_EQ((*chronology)[1].value.display, "Versi dua");
  EXPECT_EQ((*chronology)[1].reason, "current");
  auto route = tono->CaseHistory(core::ToHex(*case_id), "route", "en");
  ASSERT_TRUE(route) << route.error().message;
  ASSERT_EQ(route->size(), 3u);
  EXPECT_EQ((*route)[1].author, "ani");
  EXPECT_EQ((*route)[1].reason, "lost_merge");
  EXPECT_EQ((*route)[2].author, "tono");
  EXPECT_FALSE(ani->CaseHistory(core::ToHex(*case_id), "no_such_field"));

  ASSERT_TRUE(tono->RestoreCaseField(core::ToHex(*case_id), "chronology", 1));
  EXPECT_FALSE(tono->RestoreCaseField(core::ToHex(*case_id), "chronology", 9));
  EXPECT_FALSE(tono->RestoreCaseField(core::ToHex(*case_id), "case_number", 1));
  Sync(*tono);
  Sync(*ani);
  EXPECT_EQ(Value(*ani, *case_id, "chronology"), "Versi satu");
  EXPECT_EQ(ani->CaseHistory(core::ToHex(*case_id), "chronology", "en")->size(), 3u);
}

}  // namespace
}  // namespace teduh::server::testing
