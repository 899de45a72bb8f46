// Concurrent edits of REVIEW fields between real devices (the field-core
// Device API over WebSocket) and the real server: the conflict reaches office
// devices, is shown with both values decrypted, and is resolved offline.
#include <gtest/gtest.h>

#include <algorithm>
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

  // teduh status: Tono's change shows as in conflict, saying with whom; Ani's
  // accepted one is listed only with --all.
  auto listed = [](core::Device& d, bool all, core::OutboxState state) {
    auto st = d.Status(all);
    EXPECT_TRUE(st) << (st ? "" : st.error().message);
    std::vector<core::OutboxItem> out;
    if (st)
      for (const auto& item : st->outbox)
        if (item.entry.state == state && item.field_name == "chronology") out.push_back(item);
    return out;
  };
  auto in_conflict = listed(*tono, false, core::OutboxState::kConflict);
  ASSERT_EQ(in_conflict.size(), 1u);
  EXPECT_NE(in_conflict[0].message.find("ani"), std::string::npos) << in_conflict[0].message;
  EXPECT_NE(in_conflict[0].entry.detail.find("ani"), std::string::npos);
  EXPECT_EQ(listed(*ani, true, core::OutboxState::kAccepted).size(), 2u);  // created, edited

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
  // The later resolution (Tono's: the provisional value, his own) is the one
  // everywhere, in the field and in the Conflict record alike; Ani's text is
  // in the field's history.
  EXPECT_EQ(Value(*ani, *case_id, "safety_plan"), "Rencana T");
  for (auto* d : {ani.get(), tono.get()}) {
    auto all = d->ListConflicts(/*include_resolved=*/true);
    ASSERT_TRUE(all);
    ASSERT_EQ(all->size(), 1u);
    EXPECT_EQ((*all)[0].state, "resolved");
    EXPECT_EQ((*all)[0].resolved_by, "tono");
    EXPECT_EQ((*all)[0].resolution, "kept");
  }
  auto history = ani->CaseHistory(core::ToHex(*case_id), "safety_plan", "en");
  ASSERT_TRUE(history) << history.error().message;
  bool kept_in_history = false;
  for (const auto& e : *history)
    kept_in_history = kept_in_history || e.value.display == "Rencana gabungan dari Ani";
  EXPECT_TRUE(kept_in_history);
}

// The queue lists the oldest conflict first, with its case, field and both
// authors; an office user who wrote neither side cannot take "mine" or
// "theirs" and names the side instead.
TEST_F(ReconcileTest, TheQueueIsOldestFirstAndMineNeedsAnAuthor) {
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto tono = Staff("tono", v1::ROLE_SUPERVISOR);
  auto sri = Staff("sri", v1::ROLE_OFFICE);
  auto first = ani->NewCase({"chronology=Kasus pertama"});
  auto second = ani->NewCase({"safety_plan=Rencana kedua"});
  ASSERT_TRUE(first && second);
  Sync(*ani);
  Sync(*tono);
  // The second case's conflict is detected first.
  ASSERT_TRUE(ani->SetCaseFields(core::ToHex(*second), {"safety_plan=Rencana Ani"}));
  ASSERT_TRUE(tono->SetCaseFields(core::ToHex(*second), {"safety_plan=Rencana Tono"}));
  Sync(*ani);
  EXPECT_EQ(Sync(*tono).conflict, 1u);
  env_.Advance(60'000);
  ASSERT_TRUE(tono->SetCaseFields(core::ToHex(*first), {"chronology=Versi Tono"}));
  ASSERT_TRUE(ani->SetCaseFields(core::ToHex(*first), {"chronology=Versi Ani"}));
  Sync(*tono);
  EXPECT_EQ(Sync(*ani).conflict, 1u);
  Sync(*sri);
  auto list = sri->ListConflicts();
  ASSERT_TRUE(list) << list.error().message;
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].case_id, *second);
  EXPECT_EQ((*list)[0].field, "safety_plan");
  EXPECT_EQ((*list)[1].case_id, *first);
  EXPECT_EQ((*list)[1].field, "chronology");
  EXPECT_LE((*list)[0].detected_ms, (*list)[1].detected_ms);
  std::vector<std::string> authors{(*list)[1].kept.author, (*list)[1].other.author};
  std::sort(authors.begin(), authors.end());
  EXPECT_EQ(authors, (std::vector<std::string>{"ani", "tono"}));

  const std::string id = core::ToHex((*list)[0].conflict_id);
  for (const char* side : {"mine", "theirs"}) {
    auto refused = sri->ResolveConflict(id, side, std::nullopt);
    ASSERT_FALSE(refused) << side;
    EXPECT_EQ(refused.error().code, core::errc::invalid_argument);
  }
  EXPECT_EQ(sri->ListConflicts()->size(), 2u);  // nothing changed
  ASSERT_TRUE(sri->ResolveConflict(id, "other", std::nullopt));
  EXPECT_EQ(sri->ListConflicts()->size(), 1u);
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

// The same tablet, a year ahead, records a case offline and edits it again
// before it syncs: one push carries both edits of each field. The server
// re-stamps the first; the second, made over it, is no concurrent edit:
// no conflict with itself, and a lowered risk stays lowered.
TEST_F(ReconcileTest, ADeviceAYearAheadEditingItsOwnChangeAgainConflictsWithNoOne) {
  constexpr std::int64_t kYearMs = 365LL * 24 * 3600 * 1000;
  TestEnv ahead(env_.NowMs());
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto budi = Staff("budi", v1::ROLE_SUPERVISOR, &ahead);
  ahead.Advance(kYearMs);
  auto case_id = budi->NewCase({"chronology=Versi pertama", "risk_level=tinggi"});
  ASSERT_TRUE(case_id);
  ahead.Advance(60'000);
  ASSERT_TRUE(
      budi->SetCaseFields(core::ToHex(*case_id), {"chronology=Versi kedua", "risk_level=rendah"}));
  auto first = Sync(*budi);
  EXPECT_LT(first.clock_offset_ms, -kYearMs + 120'000);  // it was re-stamped
  EXPECT_EQ(first.conflict, 0u);
  EXPECT_EQ(first.merged, 0u);
  EXPECT_EQ(first.rejected, 0u);
  Sync(*ani);
  Sync(*budi);
  auto conflicts = ani->ListConflicts();
  ASSERT_TRUE(conflicts);
  EXPECT_TRUE(conflicts->empty());
  for (auto* d : {ani.get(), budi.get()}) {
    EXPECT_EQ(Value(*d, *case_id, "risk_level"), "rendah");  // the value, as shown in Indonesian
    EXPECT_EQ(Value(*d, *case_id, "chronology"), "Versi kedua");
  }
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

// A person's fields keep their history too: the victim's address that lost a
// merge (a conflict) and an occupation overwritten are shown,
// decrypted, with who wrote them, and one comes back as a new edit.
TEST_F(ReconcileTest, APersonsFieldsHaveTheirHistoryAndRestore) {
  auto ani = Staff("ani", v1::ROLE_OFFICE);
  auto tono = Staff("tono", v1::ROLE_SUPERVISOR);
  auto case_id = ani->NewCase({"route=mediasi"});
  ASSERT_TRUE(case_id);
  auto person = ani->AddPerson(core::ToHex(*case_id), "victim",
                               {"name=Sari", "address=Jl. Melati 1", "occupation=pedagang"});
  ASSERT_TRUE(person) << person.error().message;
  const std::string ref = core::ToHex(*person);
  Sync(*ani);
  Sync(*tono);
  // Both change the address offline; Tono's is the later one.
  ASSERT_TRUE(ani->SetPersonFields(ref, {"address=Jl. Mawar 2"}));
  env_.Advance(1000);
  ASSERT_TRUE(tono->SetPersonFields(ref, {"address=Jl. Kenanga 3", "occupation=buruh"}));
  Sync(*ani);
  EXPECT_EQ(Sync(*tono).conflict, 1u);
  Sync(*ani);

  auto address = ani->PersonHistory(ref, "address", "en");
  ASSERT_TRUE(address) << address.error().message;
  ASSERT_EQ(address->size(), 3u);
  EXPECT_EQ((*address)[0].value.display, "Jl. Melati 1");
  EXPECT_EQ((*address)[0].reason, "overwritten");
  EXPECT_EQ((*address)[1].value.display, "Jl. Mawar 2");
  EXPECT_EQ((*address)[1].author, "ani");
  EXPECT_EQ((*address)[1].reason, "lost_merge");
  EXPECT_EQ((*address)[2].value.display, "Jl. Kenanga 3");
  EXPECT_EQ((*address)[2].reason, "current");
  EXPECT_EQ((*address)[2].stamp.device, tono->info().device_id);
  // Every field, each one's values together.
  auto all = tono->PersonHistory(ref.substr(0, 8), "", "en");
  ASSERT_TRUE(all) << all.error().message;
  std::vector<std::string> order;
  for (const auto& e : *all)
    if (order.empty() || order.back() != e.field) order.push_back(e.field);
  std::vector<std::string> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::unique(sorted.begin(), sorted.end()), sorted.end()) << "a field listed twice";
  EXPECT_FALSE(ani->PersonHistory(ref, "no_such_field", "en"));
  EXPECT_FALSE(ani->PersonHistory(core::ToHex(*case_id), "address", "en"));  // not a person

  ASSERT_TRUE(ani->RestorePersonField(ref, "occupation", 1));
  EXPECT_FALSE(ani->RestorePersonField(ref, "occupation", 3));
  Sync(*ani);
  Sync(*tono);
  auto occupation = tono->PersonHistory(ref, "occupation", "en");
  ASSERT_TRUE(occupation) << occupation.error().message;
  ASSERT_EQ(occupation->size(), 3u);
  EXPECT_EQ(occupation->back().value.display, "pedagang");
  EXPECT_EQ(occupation->back().author, "ani");
}

}  // namespace
}  // namespace teduh::server::testing
