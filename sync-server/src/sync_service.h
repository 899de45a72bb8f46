// The sync rules of the server (docs/PROTOCOL.md §2–§6), written against the
// Store interface so that every backend enforces the same ones: enrollment,
// approval, authentication, push (idempotency, validation, scope, merge,
// clock skew) and pull (scope, batching by server transaction).
//
// Each operation turns one request frame into one reply frame (the caller sets
// request_id). A returned error_code means the store failed; the caller then
// answers ERROR_CODE_INTERNAL and must not acknowledge anything.
//
// Thread safety: write operations take a WriterState and run only on the store
// writer thread, inside its group transaction; read operations take a
// read-only Store and run only on the reader thread.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "teduh/core/env.h"
#include "teduh/core/hlc.h"
#include "teduh/server/server.h"
#include "teduh/server/store.h"
#include "teduh/sync/v1/sync.pb.h"

namespace teduh::server {

namespace v1 = teduh::sync::v1;

// Who is on the other end of an authenticated connection.
struct Identity {
  Id device_id{};
  std::string user;
  Role role = v1::ROLE_UNSPECIFIED;
};

// What the writer thread keeps between requests. Reloaded after a rollback.
struct WriterState {
  WriterState(Store& s, core::Env& e, const ServerConfig& c, UnitInfo u)
      : store(s), env(e), config(c), unit(std::move(u)), hlc(e, unit.hlc_last) {}
  Store& store;
  core::Env& env;
  const ServerConfig& config;
  UnitInfo unit;
  core::Hlc hlc;                       // re-stamps changes from clocks that run ahead
  std::int64_t usage_pruned_day = -1;  // the day whose earlier usage rows were last pruned
};

struct Outcome {
  v1::Frame reply;
  bool close = false;  // close the connection after the reply
};

struct PushOutcome : Outcome {
  std::uint64_t applied = 0;            // changes that became current values
  bool touched = false;                 // some case content changed
  std::vector<std::string> poke_users;  // users assigned to a touched case
  std::vector<int> repaired;            // changes (by index) that replaced a damaged value
};

// ---- Writer side ----------------------------------------------------------------
core::error_code ApplyPush(WriterState& ws, const Identity& who, const v1::Push& push,
                           PushOutcome* out);
core::error_code Enroll(WriterState& ws, const v1::EnrollRequest& request, Outcome* out);
core::error_code Approve(WriterState& ws, const Identity& who, const v1::ApproveDevice& request,
                         Outcome* out);
// An admin device revokes a device with a wipe order signed by the unit root
// key (checked here as the device will check it).
core::error_code Revoke(WriterState& ws, const Identity& who, const v1::RevokeDevice& request,
                        Outcome* out);
// Offboards a user (admin devices): revokes every one of their devices (a
// wipe order each, checked as for Revoke) and assigns their cases to
// `reassign_to`, all at once; users to poke go to `poke_users`.
core::error_code Offboard(WriterState& ws, const Identity& who, const v1::OffboardUser& request,
                          Outcome* out, std::vector<std::string>* poke_users);
// Revokes `device` in the current transaction: state, revocation row (an
// earlier one keeps its time and receipt; `order` replaces its order if set)
// and audit entry. `by` is the admin device, or unset for the server host's
// operator named `by_user`. Shared with `teduh-server device revoke`.
core::error_code RevokeInStore(Store& store, std::int64_t now_ms, const DeviceRow& device,
                               const std::optional<Identity>& by, std::string_view by_user,
                               const teduh::keys::v1::WipeOrder* order, RevocationRow* out);
// A revoked device's receipt for its wipe order (after a Wipe frame): checked
// against its key and order, recorded once, answered with DEVICE_REVOKED.
core::error_code RecordWipeReceipt(WriterState& ws, const Id& device_id,
                                   const teduh::keys::v1::WipeReceipt& receipt, Outcome* out);
// Class key rotation (PROTOCOL §8b), from an admin device: stages
// re-wrapped case keys; with `commit`, applies them and the new epoch's
// grants in this transaction if they cover every case key and device.
// `committed` is set when it did (the caller pokes every device).
core::error_code Rotate(WriterState& ws, const Identity& who, const v1::RotateKeys& request,
                        Outcome* out, bool* committed);
// Retires old class key epochs (signed by the unit root key), each only if
// nothing references it any more.
core::error_code RetireKeys(WriterState& ws, const Identity& who, const v1::RetireKeys& request,
                            Outcome* out);
// Crypto-shredding (PROTOCOL §8c): a supervisor asks; an admin device's
// signed order purges the case (`shredded` set: the caller pokes everyone).
core::error_code RequestShred(WriterState& ws, const Identity& who, const v1::ShredRequest& request,
                              Outcome* out);
core::error_code Shred(WriterState& ws, const Identity& who, const v1::ShredCase& request,
                       Outcome* out, bool* shredded);
// Re-keying (PROTOCOL §8d), from an admin device: the cases to re-key, one
// case's keys and sealed values, and the re-encrypted values (with
// `finish`, the old versions are deleted if nothing is left under them;
// `finished` is set when they were: the caller pokes every device).
core::error_code RekeyListFor(Store& store, const ServerConfig& config, const Identity& who,
                              const v1::RekeyList& request, Outcome* out);
core::error_code RekeyFetchFor(Store& store, const ServerConfig& config, const Identity& who,
                               const v1::RekeyFetch& request, Outcome* out);
core::error_code Rekey(WriterState& ws, const Identity& who, const v1::RekeyCase& request,
                       Outcome* out, bool* finished);
// A device reports the class key epochs it holds.
core::error_code AckKeys(WriterState& ws, const Identity& who, const v1::AckKeys& request,
                         Outcome* out);
// Records that `device` received these cases (case id, first seq), and that
// it committed every eviction up to `evictions_received_upto` (its cursor).
core::error_code RecordHoldings(WriterState& ws, const Id& device,
                                const std::vector<std::pair<Id, std::uint64_t>>& cases,
                                std::uint64_t evictions_received_upto = 0);
core::error_code TouchDevice(WriterState& ws, const Id& device);
// A device's copies of values the server found damaged (Welcome.repair): each
// one whose checksum is the damaged row's is stored again with a new seq and
// audited (ENTRY_KIND_REPAIR); `repaired` gets their fields and `poke_users`
// the users assigned to their cases (sorted, once each).
core::error_code RepairValues(WriterState& ws, const Identity& who, const v1::RepairOffer& request,
                              Outcome* out, std::vector<FieldKey>* repaired,
                              std::vector<std::string>* poke_users);

// ---- Reader side -----------------------------------------------------------------
struct AuthOutcome : Outcome {
  std::optional<Identity> identity;  // set with a Welcome
  std::optional<Id> wiping;          // set with a Wipe: the connection waits for the receipt
  // Values the server wanted re-sent that were found intact (replaced since) or gone.
  std::vector<FieldKey> repairs_gone;
};
core::error_code Authenticate(Store& store, const ServerConfig& config, core::Env& env,
                              const Id& device_id, std::string_view nonce,
                              std::string_view server_id, std::string_view signature,
                              AuthOutcome* out,
                              const std::function<std::vector<FieldKey>()>& repairs_wanted = {});

struct PullOutcome : Outcome {
  std::vector<std::pair<Id, std::uint64_t>> new_holdings;  // cases new to this device
  std::uint64_t evictions_received_upto = 0;  // the request's cursor, which the device committed
};
// `generation` is the store's now (StoreWorker::generation).
core::error_code Pull(Store& store, const ServerConfig& config, const UnitInfo& unit,
                      std::uint64_t generation, const Identity& who, const v1::Pull& request,
                      PullOutcome* out);

// A device says it has seen newer data under this generation than the store
// holds (Pull.rolled_back): the store was put back from a file-level copy.
// The claim is checked (its cursor beyond the store's head, or changes of its
// acknowledged beyond its mark); if it holds and the generation is still the
// one the device names, the store gets a new one, written in `*generation`
// (left unchanged otherwise). Logged and audited by the caller.
core::error_code RollGeneration(WriterState& ws, const Identity& who, const v1::Pull& request,
                                std::uint64_t* generation, bool* rolled);

// The unit's devices (admin devices), those whose hex id starts with
// `id_prefix` when it is not empty.
core::error_code ListDevicesFor(Store& store, const Identity& who, std::string_view id_prefix,
                                Outcome* out);
// Epochs per class, what references them and who holds them (admin devices).
core::error_code KeyStatusFor(Store& store, const Identity& who, Outcome* out);

// Every value a field (or every field) of a record has had, for a device whose
// scope holds the record's case (PROTOCOL §6a).
core::error_code FieldHistory(Store& store, const ServerConfig& config, const UnitInfo& unit,
                              const Identity& who, const v1::HistoryRequest& request, Outcome* out);

// Helpers shared with the session and the key operations.
// A value the server itself writes (a conflict record, a re-wrap, a
// reassignment): a fresh server stamp and sequence number in transaction
// `txn`. `value` and `author` must outlive the row.
FieldRow ServerFieldRow(WriterState& ws, const Id& record_id, std::uint32_t field,
                        std::string_view value, std::string_view author, std::uint64_t txn);
void SetError(Outcome* out, v1::ErrorCode code, std::string message, bool close);
// The admin-device check of every key operation (false: the refusal is in
// `out`, or the store failed and `ec` says so).
bool AdminOnly(Store& store, const Identity& who, const char* action, Outcome* out,
               core::error_code* ec);
// The device-state checks every authenticated request starts with (false:
// the refusal is in `out`).
bool CheckActive(const std::optional<DeviceRow>& device, Outcome* out);
v1::DeviceInfo ToDeviceInfo(const DeviceRow& row);
v1::DeviceInfo ToDeviceInfo(const DeviceRow& row, const std::optional<RevocationRow>& revocation);
PullScope ScopeFor(const Identity& who);

}  // namespace teduh::server
