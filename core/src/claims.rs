//! The claim lifecycle (SPEC §5): create → commit → freeze/seal → execute → capsule, revocation
//! and taint. Every rule that depends on a claim's state lives here; `State::apply` dispatches.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::canary::{Canary, canary_key};
use crate::capsule::{Capsule, CodeManifest, LedgerSnapshot, RevocationLeaf, capsule_hash};
use crate::claim::{
    ArtifactRecord, ClaimState, DEPENDENCY_ARTIFACT_KIND, Decision, Lane, TopicInputs, WASM_ARTIFACT_KIND, reason,
};
use crate::environment::{Environment, ResolvedNullSpec};
use crate::error::{ErrorCode, KernelError};
use crate::guest::{GuestError, GuestLimits};
use crate::hash::sha256;
use crate::holdout::{Holdout, PoolScope};
use crate::ids::{CapsuleHash, ClaimId, TopicId};
use crate::io::Timestamp;
use crate::ledger::Ledger;
use crate::oracle::{AccuracyOracle, OracleResolution};
use crate::pool::{Holder, Pool, PoolKey};
use crate::request::{ArtifactInput, CreateClaimV2, Execution, Principal, Response};
use crate::table::Table;
use crate::totals::LedgerTotals;
use crate::validate::{parse_id, validate_artifact_count, validate_name, validate_reason};

/// Claims not yet settled (no capsule): each may still hold its wasm module and a reservation.
pub const MAX_LIVE_CLAIMS: usize = 1_000_000;
/// Resident memory one settled claim costs, indexes included, rounded up from the measurement
/// (2.95 GB resident after restarting on 10^6 settled claims, `evidenceos-grow`; README).
pub const SETTLED_CLAIM_RESIDENT_BYTES: usize = 3_072;
/// Memory the settled claims may take in all (64 GiB).
pub const SETTLED_CLAIMS_MEMORY_BYTES: usize = 64 << 30;
/// Settled claims kept: what [`SETTLED_CLAIMS_MEMORY_BYTES`] holds (22,369,621).
pub const MAX_SETTLED_CLAIMS: usize = SETTLED_CLAIMS_MEMORY_BYTES / SETTLED_CLAIM_RESIDENT_BYTES;
/// Bounds on what one claim may carry (artifacts: `validate::MAX_ARTIFACTS`).
pub const MAX_NUM_SYMBOLS: u32 = 1 << 16;

/// What freezing pins for the claim's lifetime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    pub resolution_hash_hex: String,
    pub epoch: u64,
    pub ttl_epochs: u64,
    pub delta_sigma: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapsuleRecord {
    #[serde(rename = "hash_hex")]
    pub hash: CapsuleHash,
    pub etl_index: u64,
    /// The copy of the capsule that checkpoints of format v1 carry. `etl.log` holds the capsule
    /// and replies read it from there, so the copy is checked against the hash and dropped at
    /// recovery ([`Claims::settle_loaded`]); it is never written.
    #[serde(rename = "bytes", default, skip_serializing)]
    pub v1_copy: Option<Box<str>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    #[serde(rename = "claim_id_hex")]
    pub claim_id: ClaimId,
    #[serde(rename = "topic_id_hex")]
    pub topic_id: TopicId,
    pub owner: String,
    pub claim_name: String,
    pub holdout_ref: String,
    pub oracle_id: String,
    /// NullSpec id the client asked for ("" = whatever is active).
    pub requested_nullspec_id: String,
    pub lane: Lane,
    pub output_schema_id: String,
    pub num_symbols: u32,
    pub access_credit: u64,
    pub state: ClaimState,
    pub ledger: Ledger,
    pub artifacts: Vec<ArtifactRecord>,
    pub dependencies: Vec<CapsuleHash>,
    #[serde(with = "crate::hexbytes")]
    pub wasm: Vec<u8>,
    pub pin: Option<Pin>,
    /// Worst-case charge R this claim reserves in its topic and holdout pools (0 only for v1
    /// claims created before v1 claims were pooled). Kept after settling: a re-freeze renews it.
    pub reserved_bits: f64,
    /// Keys of the holdout pools holding this claim's reservation.
    pub pools: Vec<PoolKey>,
    /// End of the reservation. Settling (an execution, failed or not) releases it at once and
    /// sets this to that moment, so a claim whose execution failed is STALE until re-frozen.
    pub reservation_expires_at_ms: u64,
    pub capsule: Option<CapsuleRecord>,
    /// Set by RevokeClaim (REJECT also ends in REVOKED, without a revocation record).
    pub revoked: bool,
}

impl Claim {
    /// Whether the claim has a capsule: it is history and can never execute again (FreezeGates
    /// refuses every state a capsule leaves; a failed execution leaves no capsule and may re-freeze).
    pub fn is_settled(&self) -> bool {
        self.capsule.is_some()
    }

    /// Drops what only a future execution would need: the wasm module and the artifact list (the
    /// capsule's `wasm_hash_hex` and `code_ir_manifests` record both). Returns whether anything
    /// was dropped.
    fn settle(&mut self) -> bool {
        debug_assert!(self.is_settled(), "only a settled claim drops its code");
        let had_code = !self.wasm.is_empty() || !self.artifacts.is_empty();
        self.wasm = Vec::new();
        self.artifacts = Vec::new();
        had_code
    }

    /// The state as seen at `now`: a claim whose reservation expired unused is STALE.
    pub fn effective_state(&self, now: Timestamp, epoch: u64) -> ClaimState {
        let pre_execution = matches!(self.state, ClaimState::Uncommitted | ClaimState::Committed | ClaimState::Sealed);
        let reservation_expired = self.reserved_bits > 0.0 && now.0 >= self.reservation_expires_at_ms;
        let ttl_passed = self.state == ClaimState::Sealed
            && self.pin.as_ref().is_some_and(|pin| epoch.saturating_sub(pin.epoch) > pin.ttl_epochs);
        if pre_execution && (reservation_expired || ttl_passed) { ClaimState::Stale } else { self.state }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    #[serde(rename = "capsule_hash_hex")]
    pub capsule_hash: CapsuleHash,
    #[serde(rename = "claim_id_hex")]
    pub claim_id: ClaimId,
    pub timestamp_unix: u64,
    pub reason: String,
    pub etl_index: u64,
}

/// Everything the claim lifecycle keeps (part of the checkpoint).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub claims: Table<ClaimId, Claim>,
    pub topic_pools: Table<TopicId, Pool>,
    pub holdout_pools: Table<PoolKey, Pool>,
    pub canaries: Table<String, Canary>,
    pub revocations: Vec<RevocationRecord>,
    /// Capsule hash → claim id, for dependencies and revocation. Derived from `claims` at
    /// recovery; checkpoints of format v3 do not carry it.
    #[serde(default, skip_serializing)]
    pub capsule_claims: BTreeMap<CapsuleHash, ClaimId>,
    /// Claims with a capsule; counted as they settle, recounted when a checkpoint is loaded.
    #[serde(skip)]
    pub settled_claims: usize,
    /// Capsule hash → the claims that committed it as a dependency, so a revocation taints
    /// them without walking every claim. Derived from `claims`, like `capsule_claims`.
    #[serde(skip)]
    pub dependants: BTreeMap<CapsuleHash, BTreeSet<ClaimId>>,
}

/// What loading a checkpoint of an older format dropped from settled claims.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettledMigration {
    /// Capsule copies the checkpoint carried (now read from `etl.log`).
    pub capsule_copies_dropped: u64,
    /// Settled claims whose wasm module and artifact list were dropped.
    pub code_dropped: u64,
}

/// What an accepted command produced: its reply and the ETL leaves it appends. An accepted
/// command may still answer with an error: e.g. claim code that queried the oracle and then
/// trapped is refused, but the bits it saw are charged, so the change is journaled.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub response: Result<Response, KernelError>,
    pub leaves: Vec<Vec<u8>>,
}

impl Applied {
    pub fn reply(response: Response) -> Self {
        Self { response: Ok(response), leaves: Vec::new() }
    }
}

/// Execution context a command needs beyond the claim state.
#[derive(Debug)]
pub struct Context<'a> {
    pub env: &'a Environment,
    /// Most of a shared holdout pool one principal's open reservations may total (percent).
    pub max_principal_share_percent: u8,
    pub principal: &'a Principal,
    pub now: Timestamp,
    pub next_leaf_index: u64,
    /// The caller's access-credit balance when credit is enforced.
    pub credit_balance: Option<u64>,
}

/// Principal credit an execution costs: ΔC = ceil(Δk) + fuel + 1000 · memory pages (SPEC §5.3).
fn credit_cost(charge: f64, fuel: u64, pages: u32) -> u64 {
    (charge.ceil() as u64).saturating_add(fuel).saturating_add(1000 * u64::from(pages))
}

/// Refuses a new claim when `live` or `settled` claims are at their limit (a new claim is live
/// and settles later, so both must have room).
fn capacity(live: usize, settled: usize) -> Result<(), KernelError> {
    if live >= MAX_LIVE_CLAIMS {
        Err(KernelError::resource_exhausted("too many claims not yet executed; execute or let some expire first"))
    } else if settled + live >= MAX_SETTLED_CLAIMS {
        Err(KernelError::resource_exhausted("the settled claim table is full"))
    } else {
        Ok(())
    }
}

fn precondition(message: impl Into<String>) -> KernelError {
    KernelError::new(ErrorCode::FailedPrecondition, message)
}

fn owner_or_operator(claim: &Claim, principal: &Principal) -> Result<(), KernelError> {
    if claim.owner == principal.id || principal.is_operator() {
        Ok(())
    } else {
        Err(KernelError::permission_denied("only the claim's owner or an operator may do this"))
    }
}

/// A create whose inputs derive an existing claim's id is a retry for its owner (or an operator)
/// and gets that claim back; anyone else learns only that it exists, not its state.
fn repeat_create_by(claim: &Claim, principal: &Principal) -> Result<(), KernelError> {
    if claim.owner == principal.id || principal.is_operator() {
        Ok(())
    } else {
        Err(KernelError::new(
            ErrorCode::AlreadyExists,
            "a claim with these inputs already exists and belongs to another principal",
        ))
    }
}

fn holdout_pool_keys(holdout: &Holdout, principal: &str) -> Vec<PoolKey> {
    let global = PoolKey::global(&holdout.holdout_ref);
    let personal = PoolKey::principal(&holdout.holdout_ref, principal);
    match holdout.pool_scope {
        PoolScope::Global => vec![global],
        PoolScope::PerPrincipal => vec![personal],
        PoolScope::Both => vec![global, personal],
    }
}

/// What a create reserved: R, in which holdout pools, until when.
struct Reservation {
    bits: f64,
    pools: Vec<PoolKey>,
    expires_at_ms: u64,
}

/// Worst-case bits one execution of this claim can be charged: R = ceil(log2 N · C_max · τ).
fn worst_case_bits(num_symbols: u32, lane: Lane, tax: f64) -> f64 {
    (crate::oracle::leakage_bits(num_symbols) * f64::from(lane.max_oracle_calls()) * tax).ceil()
}

fn validate_num_symbols(num_symbols: u32) -> Result<(), KernelError> {
    if (2..=MAX_NUM_SYMBOLS).contains(&num_symbols) {
        Ok(())
    } else {
        Err(KernelError::invalid_argument(format!("oracle_num_symbols must be 2..{MAX_NUM_SYMBOLS}")))
    }
}

impl Claims {
    /// Asserts the cross-references between claims, capsules, revocations and pools. Walks all
    /// of them: callers run it in debug builds only.
    pub fn check_invariants(&self) {
        let settled = self.claims.values().filter(|claim| claim.is_settled()).count();
        assert_eq!(settled, self.settled_claims, "settled claims miscounted");
        assert!(settled <= MAX_SETTLED_CLAIMS, "more than {MAX_SETTLED_CLAIMS} settled claims");
        assert!(self.claims.len() - settled <= MAX_LIVE_CLAIMS, "more than {MAX_LIVE_CLAIMS} live claims");
        for (id, claim) in &self.claims {
            assert_eq!(id, &claim.claim_id, "claim stored under another claim's id");
            if let Some(capsule) = &claim.capsule {
                assert_eq!(self.capsule_claims.get(&capsule.hash), Some(id), "capsule of {id} not indexed");
                assert!(capsule.v1_copy.is_none(), "settled claim {id} keeps a copy of its capsule");
                assert!(claim.wasm.is_empty() && claim.artifacts.is_empty(), "settled claim {id} keeps its code");
            }
        }
        for (hash, id) in &self.capsule_claims {
            let capsule = self.claims.get(id).and_then(|claim| claim.capsule.as_ref());
            assert!(capsule.is_some_and(|c| &c.hash == hash), "capsule {hash} indexed to {id}, which lacks it");
        }
        let mut dependencies = 0;
        for (id, claim) in &self.claims {
            for hash in &claim.dependencies {
                assert!(self.dependants.get(hash).is_some_and(|ids| ids.contains(id)), "{id} not indexed under {hash}");
                dependencies += 1;
            }
        }
        assert_eq!(self.dependants.values().map(BTreeSet::len).sum::<usize>(), dependencies, "stale dependants");
        for record in &self.revocations {
            let claim = self.claims.get(&record.claim_id);
            assert!(claim.is_some_and(|c| c.revoked), "revocation of {} names no revoked claim", record.claim_id);
            assert_eq!(self.capsule_claims.get(&record.capsule_hash), Some(&record.claim_id));
        }
        for pool in self.topic_pools.values().chain(self.holdout_pools.values()) {
            pool.check_invariants();
            assert!(pool.reservations.keys().all(|id| self.claims.contains_key(id)), "reservation of no claim");
        }
    }

    /// The ETL index and hash of every settled claim's capsule, in index order: what recovery
    /// checks the leaves of `etl.log` against as it streams it.
    pub fn capsule_leaves(&self) -> Vec<(u64, CapsuleHash)> {
        let mut leaves: Vec<(u64, CapsuleHash)> =
            self.claims.values().filter_map(|claim| claim.capsule.as_ref().map(|c| (c.etl_index, c.hash))).collect();
        leaves.sort_unstable();
        leaves
    }

    /// Drops from the settled claims a checkpoint loaded what older formats kept: the v1 copy of
    /// the capsule (it must hash to the capsule hash, which the leaf was checked against) and
    /// the code. Recovery only.
    pub fn settle_loaded(&mut self) -> Result<SettledMigration, String> {
        let mut migration = SettledMigration::default();
        for (id, claim) in self.claims.iter_mut_unrecorded() {
            let Some(record) = claim.capsule.as_mut() else { continue };
            if let Some(copy) = record.v1_copy.take() {
                if capsule_hash(copy.as_bytes()) != record.hash.0 {
                    return Err(format!(
                        "the checkpoint's copy of the capsule of {id} differs from capsule {} in the log",
                        record.hash
                    ));
                }
                migration.capsule_copies_dropped += 1;
            }
            migration.code_dropped += u64::from(claim.settle());
        }
        Ok(migration)
    }

    /// After every capsule is attached: counts the settled claims and rebuilds the indexes
    /// derived from the claims (capsules, dependants).
    pub fn index_settled(&mut self) {
        self.capsule_claims.clear();
        self.dependants.clear();
        for (id, claim) in &self.claims {
            if let Some(record) = &claim.capsule {
                self.capsule_claims.insert(record.hash, *id);
            }
            for hash in &claim.dependencies {
                self.dependants.entry(*hash).or_default().insert(*id);
            }
        }
        self.settled_claims = self.capsule_claims.len();
    }

    pub fn totals(&self, now: Timestamp) -> LedgerTotals {
        let mut totals = LedgerTotals { revocations: self.revocations.len() as u64, ..LedgerTotals::default() };
        for claim in self.claims.values() {
            *totals.claims_by_state.entry(claim.state.name()).or_default() += 1;
            totals.k_bits_charged += claim.ledger.k_bits_total;
            totals.frozen_ledgers += u64::from(claim.ledger.frozen);
        }
        for (key, pool) in &self.holdout_pools {
            let entry = totals.pool_reservations.entry(key.holdout_ref().to_string()).or_default();
            entry.open += pool.active_reservations(now.0) as u64;
            entry.expired += pool.expired_total(now.0);
        }
        totals
    }

    /// Canary keys whose latest signed reset (`resets`: key → event id) is not applied yet.
    pub fn pending_canary_resets<'a>(&self, resets: &'a BTreeMap<String, String>) -> Vec<(&'a String, &'a String)> {
        resets
            .iter()
            .filter(|(key, id)| self.canaries.get(*key).and_then(|c| c.last_reset_event_id.as_ref()) != Some(*id))
            .collect()
    }

    /// Applies every pending signed reset: drift back to 1, unfrozen, check interval restarted.
    /// Returns how many canaries were reset.
    pub fn apply_canary_resets(&mut self, resets: &BTreeMap<String, String>) -> usize {
        let pending: Vec<(String, String)> =
            self.pending_canary_resets(resets).into_iter().map(|(k, id)| (k.clone(), id.clone())).collect();
        for (key, event_id) in &pending {
            // A reset clears drift and the freeze; the name stays established (SPEC §5.8).
            let baseline_set = self.canaries.get(key).is_some_and(|c| c.baseline_set);
            let canary = Canary { baseline_set, last_reset_event_id: Some(event_id.clone()), ..Canary::default() };
            self.canaries.insert(key.clone(), canary);
        }
        pending.len()
    }

    fn claim(&self, claim_id: &[u8]) -> Result<&Claim, KernelError> {
        let id = parse_id("claim_id", claim_id)?;
        self.claims.get(&ClaimId(id)).ok_or_else(|| KernelError::not_found("unknown claim"))
    }

    fn claim_mut(&mut self, claim_id: &[u8]) -> Result<&mut Claim, KernelError> {
        let id = parse_id("claim_id", claim_id)?;
        self.claims.get_mut(&ClaimId(id)).ok_or_else(|| KernelError::not_found("unknown claim"))
    }

    /// Room for one more claim: live claims have their own cap, so a long history of settled
    /// ones never stops new work before memory does.
    fn check_capacity(&self) -> Result<(), KernelError> {
        capacity(self.claims.len() - self.settled_claims, self.settled_claims)
    }

    /// v1 CreateClaim: the holdout is named by its handle; the claim's own budget is
    /// `access_credit`; the topic and holdout pools are reserved exactly as for CreateClaimV2.
    #[allow(clippy::too_many_arguments)]
    pub fn create_v1(
        &mut self,
        cx: &Context<'_>,
        topic_id: &[u8],
        holdout_handle: &[u8],
        phys_hir_hash: &[u8],
        epoch_size: u64,
        num_symbols: u32,
        alpha: f64,
        access_credit: u64,
    ) -> Result<Applied, KernelError> {
        let topic = parse_id("topic_id", topic_id)?;
        let handle = parse_id("holdout_handle_id", holdout_handle)?;
        let phys = parse_id("phys_hir_hash", phys_hir_hash)?;
        validate_num_symbols(num_symbols)?;
        if !(alpha.is_finite() && alpha > 0.0 && alpha < 1.0) {
            return Err(KernelError::invalid_argument("alpha must be in (0, 1)"));
        }
        if access_credit == 0 {
            return Err(KernelError::invalid_argument("access_credit must be positive"));
        }
        let holdout =
            cx.env.holdout_by_handle(&handle).ok_or_else(|| KernelError::not_found("unknown holdout handle"))?;
        let id = crate::claim::claim_id(&topic, &handle, &phys, epoch_size, num_symbols);
        let key = ClaimId(id);
        if let Some(existing) = self.claims.get(&key) {
            repeat_create_by(existing, cx.principal)?;
            let state = existing.effective_state(cx.now, cx.env.epoch);
            return Ok(Applied::reply(Response::ClaimCreated { claim_id: id, topic_id: topic, state }));
        }
        self.check_capacity()?;
        let budget = access_credit as f64;
        let ledger =
            Ledger::new(alpha, Some(budget), Some(budget)).map_err(|e| KernelError::invalid_argument(e.to_string()))?;
        // v1 has no lane field: the kernel runs v1 claims on the fast lane, and reserves for it.
        let reservation = self.reserve_pools(cx, &key, &TopicId(topic), holdout, Lane::Fast, num_symbols)?;
        let claim = Claim {
            claim_id: key,
            topic_id: TopicId(topic),
            owner: cx.principal.id.clone(),
            claim_name: key.to_string(),
            holdout_ref: holdout.holdout_ref.clone(),
            oracle_id: "default".into(),
            requested_nullspec_id: String::new(),
            lane: Lane::Fast,
            output_schema_id: "legacy/v1".into(),
            num_symbols,
            access_credit,
            state: ClaimState::Uncommitted,
            ledger,
            artifacts: Vec::new(),
            dependencies: Vec::new(),
            wasm: Vec::new(),
            pin: None,
            reserved_bits: reservation.bits,
            pools: reservation.pools,
            reservation_expires_at_ms: reservation.expires_at_ms,
            capsule: None,
            revoked: false,
        };
        self.claims.insert(key, claim);
        Ok(Applied::reply(Response::ClaimCreated { claim_id: id, topic_id: topic, state: ClaimState::Uncommitted }))
    }

    /// CreateClaimV2: topic derived server-side; the worst case is reserved in the topic and
    /// holdout pools up front, or the claim is refused without touching them.
    pub fn create_v2(&mut self, cx: &Context<'_>, request: &CreateClaimV2) -> Result<Applied, KernelError> {
        validate_name("claim_name", &request.claim_name)?;
        validate_name("holdout_ref", &request.holdout_ref)?;
        if !request.epoch_config_ref.is_empty() {
            validate_name("epoch_config_ref", &request.epoch_config_ref)?;
        }
        let oracle_id = if request.oracle_id.is_empty() { "default" } else { request.oracle_id.as_str() };
        validate_name("oracle_id", oracle_id)?;
        if !request.nullspec_id.is_empty() && crate::hash::parse_hash_hex(&request.nullspec_id).is_none() {
            return Err(KernelError::invalid_argument("nullspec_id must be 64 hex characters"));
        }
        let lane = Lane::parse(&request.lane)?;
        crate::claim::validate_output_schema(&request.output_schema_id)?;
        validate_num_symbols(request.oracle_num_symbols)?;
        if !(1..1_000_000).contains(&request.alpha_micros) {
            return Err(KernelError::invalid_argument("alpha_micros must be 1..999999"));
        }
        if request.access_credit == 0 {
            return Err(KernelError::invalid_argument("access_credit must be positive"));
        }
        for budget in [request.dp_epsilon_budget, request.dp_delta_budget].into_iter().flatten() {
            if !budget.is_finite() || budget < 0.0 {
                return Err(KernelError::invalid_argument("dp budgets must be finite and >= 0"));
            }
        }
        let holdout =
            cx.env.holdouts.get(&request.holdout_ref).ok_or_else(|| KernelError::not_found("unknown holdout_ref"))?;
        let topic = crate::claim::topic_id(&TopicInputs {
            claim_name: &request.claim_name,
            epoch_config_ref: &request.epoch_config_ref,
            output_schema_id: &request.output_schema_id,
            holdout_ref: &request.holdout_ref,
            holdout_handle: &holdout.handle,
            oracle_num_symbols: request.oracle_num_symbols,
            epoch_size: request.epoch_size,
        });
        let signals = crate::claim::signals_hash(
            &request.semantic_hash,
            &request.phys_hir_signature_hash,
            &request.dependency_merkle_root,
        );
        let id =
            crate::claim::claim_id(&topic, &holdout.handle, &signals, request.epoch_size, request.oracle_num_symbols);
        let key = ClaimId(id);
        if let Some(existing) = self.claims.get(&key) {
            repeat_create_by(existing, cx.principal)?;
            let state = existing.effective_state(cx.now, cx.env.epoch);
            return Ok(Applied::reply(Response::ClaimCreated { claim_id: id, topic_id: topic, state }));
        }
        self.check_capacity()?;

        let alpha = f64::from(request.alpha_micros) / 1e6;
        let budget = request.access_credit as f64;
        let ledger =
            Ledger::new(alpha, Some(budget), Some(budget)).map_err(|e| KernelError::invalid_argument(e.to_string()))?;
        let reservation = self.reserve_pools(cx, &key, &TopicId(topic), holdout, lane, request.oracle_num_symbols)?;
        let claim = Claim {
            claim_id: key,
            topic_id: TopicId(topic),
            owner: cx.principal.id.clone(),
            claim_name: request.claim_name.clone(),
            holdout_ref: request.holdout_ref.clone(),
            oracle_id: oracle_id.to_string(),
            requested_nullspec_id: request.nullspec_id.to_ascii_lowercase(),
            lane,
            output_schema_id: request.output_schema_id.clone(),
            num_symbols: request.oracle_num_symbols,
            access_credit: request.access_credit,
            state: ClaimState::Uncommitted,
            ledger,
            artifacts: Vec::new(),
            dependencies: Vec::new(),
            wasm: Vec::new(),
            pin: None,
            reserved_bits: reservation.bits,
            pools: reservation.pools,
            reservation_expires_at_ms: reservation.expires_at_ms,
            capsule: None,
            revoked: false,
        };
        self.claims.insert(key, claim);
        Ok(Applied::reply(Response::ClaimCreated { claim_id: id, topic_id: topic, state: ClaimState::Uncommitted }))
    }

    /// Reserves the worst case R of one execution in the topic pool and every holdout pool the
    /// claim draws on, or refuses without touching any of them (SPEC §5.3). The one place v1
    /// and v2 creates and re-freezes reserve.
    fn reserve_pools(
        &mut self,
        cx: &Context<'_>,
        claim_id: &ClaimId,
        topic: &TopicId,
        holdout: &Holdout,
        lane: Lane,
        num_symbols: u32,
    ) -> Result<Reservation, KernelError> {
        let bits = worst_case_bits(num_symbols, lane, cx.env.settings.dependence_tax);
        let pools = holdout_pool_keys(holdout, &cx.principal.id);
        self.reserve_in(cx, claim_id, topic, holdout, &pools, bits)?;
        Ok(Reservation { bits, pools, expires_at_ms: cx.now.0.saturating_add(cx.env.settings.reservation_ttl_ms) })
    }

    /// Checks every pool first, then reserves `bits` in all of them (all or nothing). Only the
    /// shared (global) holdout pool caps one principal's share; a per-principal pool is its own.
    fn reserve_in(
        &mut self,
        cx: &Context<'_>,
        claim_id: &ClaimId,
        topic: &TopicId,
        holdout: &Holdout,
        pool_keys: &[PoolKey],
        bits: f64,
    ) -> Result<(), KernelError> {
        let (now, ttl) = (cx.now.0, cx.env.settings.reservation_ttl_ms);
        let share = cx.max_principal_share_percent;
        let principal = cx.principal.id.as_str();
        let topic_holder = Holder { claim: *claim_id, principal, share_cap: None };
        let topic_pool = self.topic_pools.get(topic).cloned().unwrap_or_else(default_pool);
        topic_pool.check_reserve(&topic_holder, bits, now)?;
        let mut holders = Vec::with_capacity(pool_keys.len());
        for key in pool_keys {
            let pool = self.holdout_pools.get(key).cloned().unwrap_or_else(|| holdout_pool(holdout));
            let share_cap = if key.is_shared() { pool.share_cap(share) } else { None };
            let holder = Holder { claim: *claim_id, principal, share_cap };
            pool.check_reserve(&holder, bits, now)?;
            holders.push((key, holder));
        }
        self.topic_pools.get_or_insert_with(*topic, default_pool).reserve(&topic_holder, bits, now, ttl);
        for (key, holder) in holders {
            self.holdout_pools
                .get_or_insert_with(key.clone(), || holdout_pool(holdout))
                .reserve(&holder, bits, now, ttl);
        }
        Ok(())
    }

    pub fn commit(
        &mut self,
        cx: &Context<'_>,
        claim_id: &[u8],
        artifacts: &[ArtifactInput],
        wasm_module: &[u8],
    ) -> Result<Applied, KernelError> {
        validate_artifact_count(artifacts.len())?;
        let mut records = Vec::with_capacity(artifacts.len());
        for artifact in artifacts {
            validate_name("artifact kind", &artifact.kind)?;
            let hash = parse_id("artifact_hash", &artifact.hash)?;
            records.push(ArtifactRecord { kind: artifact.kind.clone(), hash_hex: hex::encode(hash) });
        }
        let wasm_hash = hex::encode(sha256(wasm_module));
        if !records.iter().any(|a| a.kind == WASM_ARTIFACT_KIND && a.hash_hex == wasm_hash) {
            return Err(KernelError::invalid_argument("an artifact of kind wasm must carry SHA-256 of wasm_module"));
        }
        crate::guest::validate_module(wasm_module)
            .map_err(|e| KernelError::invalid_argument(format!("wasm_module: {e}")))?;
        let mut dependencies = BTreeSet::new();
        for artifact in records.iter().filter(|a| a.kind == DEPENDENCY_ARTIFACT_KIND) {
            let hash = CapsuleHash(crate::hash::parse_hash_hex(&artifact.hash_hex).expect("hex encoded above"));
            if !self.capsule_claims.contains_key(&hash) {
                return Err(KernelError::not_found("dependency capsule is not in the log"));
            }
            dependencies.insert(hash);
        }
        let (now, epoch) = (cx.now, cx.env.epoch);
        let claim = self.claim_mut(claim_id)?;
        owner_or_operator(claim, cx.principal)?;
        let state = claim.effective_state(now, epoch);
        if state != ClaimState::Uncommitted {
            return Err(precondition(format!("claim is {}; CommitArtifacts needs UNCOMMITTED", state.name())));
        }
        records.sort();
        records.dedup();
        claim.artifacts = records;
        claim.dependencies = dependencies.iter().copied().collect();
        claim.wasm = wasm_module.to_vec();
        claim.state = ClaimState::Committed;
        let id = claim.claim_id;
        for hash in dependencies {
            self.dependants.entry(hash).or_default().insert(id);
        }
        Ok(Applied::reply(Response::ClaimState { state: ClaimState::Committed }))
    }

    /// FreezeGates: pins the oracle resolution and epoch. Also re-freezes a STALE claim,
    /// renewing its reservation if the pools still have room.
    pub fn freeze(&mut self, cx: &Context<'_>, claim_id: &[u8]) -> Result<Applied, KernelError> {
        let (now, env) = (cx.now, cx.env);
        let claim = self.claim(claim_id)?.clone();
        owner_or_operator(&claim, cx.principal)?;
        let state = claim.effective_state(now, env.epoch);
        let renewing = match state {
            ClaimState::Committed => claim.reserved_bits > 0.0 && now.0 >= claim.reservation_expires_at_ms,
            ClaimState::Stale if !claim.wasm.is_empty() => claim.reserved_bits > 0.0,
            ClaimState::Sealed => return Ok(Applied::reply(Response::ClaimState { state })),
            _ => return Err(precondition(format!("claim is {}; FreezeGates needs COMMITTED or STALE", state.name()))),
        };
        if renewing {
            let holdout = env.holdouts.get(&claim.holdout_ref).ok_or_else(|| precondition("holdout is not loaded"))?;
            // The claim's owner holds the reservation, whoever renews it.
            let owner = Principal::new(claim.owner.clone(), crate::request::Role::Agent);
            let owner_cx = Context { principal: &owner, ..*cx };
            self.reserve_in(&owner_cx, &claim.claim_id, &claim.topic_id, holdout, &claim.pools, claim.reserved_bits)?;
        }
        let lane_delta = match claim.lane {
            Lane::Fast => crate::oracle::DELTA_SIGMA_FAST,
            Lane::Heavy => crate::oracle::DELTA_SIGMA_HEAVY,
        };
        // TTL and calibration come from the oracle's signed operator record, when there is one.
        let record = env.oracles.get(&claim.oracle_id);
        let ttl_epochs = record.map_or(env.settings.default_oracle_ttl_epochs, |r| r.ttl_epochs);
        let calibration = record.and_then(crate::operator::OracleRecord::calibration_hash);
        let calibrated_at = record.and_then(|r| r.calibration_epoch).unwrap_or(env.epoch);
        let resolution = OracleResolution::new(claim.num_symbols, calibration, calibrated_at, ttl_epochs, lane_delta)
            .map_err(|e| KernelError::new(ErrorCode::Internal, format!("oracle resolution: {e}")))?;
        let claim = self.claim_mut(claim_id)?;
        if renewing {
            claim.reservation_expires_at_ms = now.0.saturating_add(env.settings.reservation_ttl_ms);
        }
        claim.pin = Some(Pin {
            resolution_hash_hex: hex::encode(resolution.hash()),
            epoch: env.epoch,
            ttl_epochs,
            delta_sigma: lane_delta,
        });
        claim.state = ClaimState::Sealed;
        Ok(Applied::reply(Response::ClaimState { state: ClaimState::Sealed }))
    }

    /// ExecuteClaimV2: runs the claim's code against the holdout through the oracle, charges the
    /// ledger, decides, and appends the capsule. Also returns the principal credit it used.
    pub fn execute(&mut self, cx: &Context<'_>, claim_id: &[u8]) -> Result<(Applied, u64), KernelError> {
        let env = cx.env;
        let claim = self.claim(claim_id)?.clone();
        owner_or_operator(&claim, cx.principal)?;
        let state = claim.effective_state(cx.now, env.epoch);
        if state != ClaimState::Sealed {
            return Err(precondition(format!("claim is {}; ExecuteClaimV2 needs SEALED", state.name())));
        }
        let pin = claim.pin.clone().ok_or_else(|| precondition("claim has no pinned oracle resolution"))?;
        let holdout = env.holdouts.get(&claim.holdout_ref).ok_or_else(|| precondition("holdout is not loaded"))?;
        let nullspec = self.nullspec(env, &claim, holdout, &pin)?;

        let limits = match claim.lane {
            Lane::Fast => GuestLimits::FAST,
            Lane::Heavy => GuestLimits::HEAVY,
        };
        let tax = env.settings.dependence_tax;
        let worst_charge = worst_case_bits(claim.num_symbols, claim.lane, tax);
        let worst_credit = credit_cost(worst_charge, limits.fuel, limits.memory_pages);
        if cx.credit_balance.is_some_and(|balance| balance < worst_credit) {
            return Err(KernelError::resource_exhausted("insufficient access credit for this execution"));
        }
        let mut oracle =
            AccuracyOracle::new(holdout.labels.clone(), claim.num_symbols, pin.delta_sigma, limits.max_oracle_calls)
                .map_err(|e| KernelError::new(ErrorCode::Internal, format!("oracle: {e}")))?;
        // A frozen ledger grants no more oracle access: the claim DEFERs without running.
        let run = if claim.ledger.frozen {
            Ok(crate::guest::GuestRun {
                output: crate::oracle::encode_symbol(0, claim.num_symbols),
                oracle_calls: 0,
                fuel_used: 0,
                memory_pages: 0,
            })
        } else {
            crate::guest::execute(&claim.wasm, &limits, &mut OracleAdapter(&mut oracle))
        };
        let calls = oracle.calls();
        let charge = crate::ledger::execution_charge(tax, claim.num_symbols, calls, 0.0)
            .map_err(|e| KernelError::new(ErrorCode::Internal, e.to_string()))?;

        // Output must be one canonical symbol; anything else is refused.
        let output = run.and_then(|run| {
            crate::oracle::decode_symbol(&run.output, claim.num_symbols)
                .map(|_| run)
                .map_err(|_| GuestError::Trap("output is not a canonical oracle symbol".into()))
        });
        let run = match output {
            Ok(run) => run,
            Err(error) => {
                let credit = if calls == 0 { 0 } else { worst_credit };
                return Ok((self.fail_execution(cx, &claim.claim_id, &error, charge, calls), credit));
            }
        };

        let mut ledger = claim.ledger.clone();
        if !ledger.frozen {
            // Over budget freezes the ledger (handled below); any other refusal is a bug.
            let refused = ledger.charge(charge, charge).is_err();
            if refused && !ledger.frozen {
                return Err(KernelError::new(ErrorCode::Internal, "ledger refused a finite charge"));
            }
        }
        let frozen_now = ledger.frozen && !claim.ledger.frozen;
        let mut numeric_guard = false;
        let e_value = match crate::evalue::e_value(&nullspec.kind, &nullspec.eprocess, oracle.buckets()) {
            Ok(e) => e,
            Err(_) => {
                numeric_guard = true;
                1.0
            }
        };
        if !ledger.frozen && ledger.apply_e_value(e_value).is_err() {
            numeric_guard = true;
        }
        if frozen_now {
            // The charge exceeded the claim's budget: the ledger is now frozen (sticky) and this
            // execution fails; later ones DEFER.
            let stored = self.claims.get_mut(&claim.claim_id).expect("claim exists");
            stored.ledger = ledger;
            // The bits the code saw are settled in the pools too; the rest is released.
            self.settle_pools(&claim.claim_id, charge, cx.now);
            let refusal = KernelError::resource_exhausted("charge exceeds the claim's budget; ledger frozen");
            return Ok((
                Applied { response: Err(refusal), leaves: Vec::new() },
                credit_cost(charge, run.fuel_used, run.memory_pages),
            ));
        }

        // Canary: decided on its state before this execution, then updated (SPEC §5.8).
        let key = canary_key(&claim.claim_name, &claim.holdout_ref);
        let mut canary = self.canaries.get(&key).cloned().unwrap_or_default();
        let mut reason_codes = Vec::new();
        let decision = if ledger.frozen || numeric_guard || claim.lane == Lane::Heavy {
            if numeric_guard {
                reason_codes.push(reason::NUMERIC_GUARD);
            }
            Decision::Defer
        } else if canary.frozen {
            reason_codes.push(reason::CANARY_FROZEN);
            Decision::Reject
        } else if ledger.certifies() {
            Decision::Approve
        } else {
            Decision::Reject
        };
        let barrier = 1e6 / f64::from(env.settings.canary_alpha_drift_micros.max(1));
        let mut leaves = Vec::new();
        let mut capsule_index = cx.next_leaf_index;
        if let Some(reason) = canary.observe(e_value, decision == Decision::Approve, env.epoch, barrier) {
            let incident = serde_json::json!({
                "kind": "canary_incident",
                "claim_name": claim.claim_name,
                "holdout_ref": claim.holdout_ref,
                "e_drift": if canary.e_drift.is_finite() { canary.e_drift } else { 0.0 },
                "barrier": barrier,
                "epoch": env.epoch,
                "reason": reason,
            });
            leaves.push(crate::canonical::value_to_vec(&incident).expect("plain JSON"));
            capsule_index += 1;
        }
        reason_codes.insert(0, decision.wire());
        let reported_e = if decision == Decision::Approve { e_value } else { e_value.min(1.0) };
        self.canaries.insert(key, canary);
        self.settle_pools(&claim.claim_id, charge, cx.now);
        let verdict = Verdict {
            decision,
            reason_codes,
            e_value: reported_e,
            nullspec_id_hex: nullspec.id_hex.clone(),
            eprocess_kind: nullspec.eprocess.kind_name().to_string(),
            resolution_hash_hex: pin.resolution_hash_hex.clone(),
        };
        let execution =
            self.record_execution(&claim, holdout, ledger, verdict, run.output, env.epoch, capsule_index, &mut leaves);
        let credit = credit_cost(charge, run.fuel_used, run.memory_pages);
        Ok((Applied { response: Ok(Response::Executed(Box::new(execution))), leaves }, credit))
    }

    /// An execution whose code failed (fuel, memory, trap, too many oracle calls, no or bad
    /// output). What it saw of the oracle is charged to the ledger and settled in the pools (fail
    /// closed, or a failing probe could be retried for free), and the rest of the reservation is
    /// released at once so a failing agent cannot hold the pool. The claim stays SEALED with its
    /// reservation ended, so it reads STALE: it executes again only after a re-freeze has
    /// reserved R anew (never against an unreserved pool).
    fn fail_execution(
        &mut self,
        cx: &Context<'_>,
        claim_id: &ClaimId,
        error: &GuestError,
        charge: f64,
        calls: u32,
    ) -> Applied {
        let settled = if calls == 0 { 0.0 } else { charge };
        if calls > 0 {
            let stored = self.claims.get_mut(claim_id).expect("claim exists");
            // Over budget this freezes the ledger, which is the intended outcome here too.
            let _ = stored.ledger.charge(charge, charge);
        }
        self.settle_pools(claim_id, settled, cx.now);
        Applied { response: Err(guest_refusal(error)), leaves: Vec::new() }
    }

    /// Writes an execution down: the capsule (appended to `leaves`), the claim's new state and
    /// ledger, and the capsule index. One place for V2 and the legacy client-decided path.
    #[allow(clippy::too_many_arguments)]
    fn record_execution(
        &mut self,
        claim: &Claim,
        holdout: &Holdout,
        ledger: Ledger,
        verdict: Verdict,
        output: Vec<u8>,
        epoch: u64,
        capsule_index: u64,
        leaves: &mut Vec<Vec<u8>>,
    ) -> Execution {
        let new_state = match verdict.decision {
            Decision::Approve => ClaimState::Certified,
            Decision::Reject => ClaimState::Revoked,
            Decision::Defer => ClaimState::Frozen,
        };
        let certified = verdict.decision == Decision::Approve;
        let capsule = Capsule {
            schema: crate::capsule::CAPSULE_SCHEMA.into(),
            claim_id_hex: claim.claim_id.to_string(),
            topic_id_hex: claim.topic_id.to_string(),
            output_schema_id: claim.output_schema_id.clone(),
            code_ir_manifests: claim
                .artifacts
                .iter()
                .map(|a| CodeManifest { kind: a.kind.clone(), hash_hex: a.hash_hex.clone() })
                .collect(),
            dependency_capsule_hashes: claim.dependencies.iter().map(CapsuleHash::to_string).collect(),
            canonical_output_hash_hex: hex::encode(sha256(&output)),
            wasm_hash_hex: hex::encode(sha256(&claim.wasm)),
            holdout_ref: claim.holdout_ref.clone(),
            holdout_commitment_hex: hex::encode(holdout.commitment()),
            ledger: LedgerSnapshot {
                alpha: ledger.alpha,
                alpha_prime: ledger.alpha_prime(),
                k_bits_total: ledger.k_bits_total,
                barrier: ledger.barrier(),
                wealth: ledger.wealth,
                w_max: ledger.w_max,
                access_credit_spent: ledger.access_credit_spent,
            },
            e_value: verdict.e_value,
            certified,
            decision: format!("{:?}", verdict.decision).to_ascii_uppercase(),
            reason_codes: verdict.reason_codes.clone(),
            nullspec_id_hex: verdict.nullspec_id_hex,
            oracle_resolution_hash_hex: verdict.resolution_hash_hex,
            eprocess_kind: verdict.eprocess_kind,
            epoch,
            state: new_state.name().to_string(),
        };
        let bytes = capsule.to_bytes();
        let hash = capsule_hash(&bytes);
        let capsule_hash = CapsuleHash(hash);
        leaves.push(bytes);
        self.capsule_claims.insert(capsule_hash, claim.claim_id);
        let stored = self.claims.get_mut(&claim.claim_id).expect("claim exists");
        stored.ledger = ledger;
        stored.state = new_state;
        stored.capsule = Some(CapsuleRecord { hash: capsule_hash, etl_index: capsule_index, v1_copy: None });
        // A claim with a capsule never executes again: its code is history (the capsule names it).
        stored.settle();
        self.settled_claims += 1;
        Execution {
            state: new_state,
            decision: verdict.decision,
            reason_codes: verdict.reason_codes,
            canonical_output: output,
            e_value: verdict.e_value,
            certified,
            capsule_hash: hash,
            etl_index: capsule_index,
        }
    }

    /// Legacy ExecuteClaim: the client supplies the decision. Served only when insecure v1 is
    /// enabled; nothing reaches the oracle and nothing is charged. The capsule says so in
    /// `eprocess_kind`, so auditors can always tell these apart.
    pub fn execute_client_decided(
        &mut self,
        cx: &Context<'_>,
        claim_id: &[u8],
        decision: u32,
        reason_codes: &[u32],
        canonical_output: &[u8],
    ) -> Result<Applied, KernelError> {
        if !cx.env.settings.insecure_v1 || cx.env.settings.production {
            return Err(precondition(
                "ExecuteClaim (client-supplied decision) needs --enable-insecure-v1; use ExecuteClaimV2",
            ));
        }
        let decision = match decision {
            1 => Decision::Approve,
            2 => Decision::Reject,
            3 => Decision::Defer,
            _ => return Err(KernelError::invalid_argument("decision must be APPROVE, REJECT or DEFER")),
        };
        if reason_codes.len() > 64 || canonical_output.len() > crate::guest::MAX_OUTPUT_BYTES {
            return Err(KernelError::invalid_argument("too many reason codes or output too large"));
        }
        let claim = self.claim(claim_id)?.clone();
        owner_or_operator(&claim, cx.principal)?;
        let state = claim.effective_state(cx.now, cx.env.epoch);
        if state != ClaimState::Sealed {
            return Err(precondition(format!("claim is {}; ExecuteClaim needs SEALED", state.name())));
        }
        let pin = claim.pin.clone().ok_or_else(|| precondition("claim has no pinned oracle resolution"))?;
        let holdout = cx.env.holdouts.get(&claim.holdout_ref).ok_or_else(|| precondition("holdout is not loaded"))?;
        self.settle_pools(&claim.claim_id, 0.0, cx.now);
        let verdict = Verdict {
            decision,
            reason_codes: reason_codes.to_vec(),
            e_value: 1.0,
            nullspec_id_hex: String::new(),
            eprocess_kind: "client_decision_v1".into(),
            resolution_hash_hex: pin.resolution_hash_hex,
        };
        let mut leaves = Vec::new();
        let ledger = claim.ledger.clone();
        let execution = self.record_execution(
            &claim,
            holdout,
            ledger,
            verdict,
            canonical_output.to_vec(),
            cx.env.epoch,
            cx.next_leaf_index,
            &mut leaves,
        );
        Ok(Applied { response: Ok(Response::Executed(Box::new(execution))), leaves })
    }

    fn nullspec(
        &self,
        env: &Environment,
        claim: &Claim,
        holdout: &Holdout,
        pin: &Pin,
    ) -> Result<ResolvedNullSpec, KernelError> {
        let resolution = crate::hash::parse_hash_hex(&pin.resolution_hash_hex).expect("stored as hex");
        let resolved =
            env.nullspec_for(&claim.oracle_id, holdout, claim.num_symbols, &resolution).map_err(precondition)?;
        if !claim.requested_nullspec_id.is_empty() && claim.requested_nullspec_id != resolved.id_hex {
            return Err(precondition("the requested NullSpec is not the one active for this oracle and holdout"));
        }
        Ok(resolved)
    }

    /// Books the actual charge of an execution in every pool the claim draws on and releases
    /// the rest of its reservation at once, successful or not (SPEC §5.3). The claim keeps R:
    /// a re-freeze reserves it again before any further execution.
    fn settle_pools(&mut self, claim_id: &ClaimId, charge: f64, now: Timestamp) {
        let Some(claim) = self.claims.get_mut(claim_id) else { return };
        if claim.reserved_bits <= 0.0 {
            return;
        }
        if let Some(pool) = self.topic_pools.get_mut(&claim.topic_id) {
            pool.settle(claim_id, charge, charge, now.0);
        }
        for key in &claim.pools {
            if let Some(pool) = self.holdout_pools.get_mut(key) {
                pool.settle(claim_id, charge, charge, now.0);
            }
        }
        claim.reservation_expires_at_ms = claim.reservation_expires_at_ms.min(now.0);
    }

    /// RevokeClaim: marks the claim REVOKED, logs the revocation, and taints every claim whose
    /// capsule depends on it, transitively.
    pub fn revoke(&mut self, cx: &Context<'_>, claim_id: &[u8], reason: &str) -> Result<Applied, KernelError> {
        validate_reason(reason)?;
        let claim = self.claim(claim_id)?.clone();
        owner_or_operator(&claim, cx.principal)?;
        let Some(capsule) = &claim.capsule else {
            return Err(precondition("claim has no capsule to revoke"));
        };
        if claim.revoked {
            return Err(precondition("claim is already revoked"));
        }
        let leaf = RevocationLeaf {
            capsule_hash_hex: capsule.hash.to_string(),
            reason: reason.to_string(),
            revoked_at_index: cx.next_leaf_index,
        };
        let timestamp_unix = cx.now.0 / 1000;
        self.revocations.push(RevocationRecord {
            capsule_hash: capsule.hash,
            claim_id: claim.claim_id,
            timestamp_unix,
            reason: reason.to_string(),
            etl_index: cx.next_leaf_index,
        });
        let stored = self.claims.get_mut(&claim.claim_id).expect("claim exists");
        stored.state = ClaimState::Revoked;
        stored.revoked = true;
        self.taint_dependents(capsule.hash);
        Ok(Applied {
            response: Ok(Response::Revoked { state: ClaimState::Revoked, timestamp_unix }),
            leaves: vec![leaf.to_bytes()],
        })
    }

    fn taint_dependents(&mut self, revoked_capsule: CapsuleHash) {
        let mut frontier = vec![revoked_capsule];
        let mut seen = BTreeSet::new();
        while let Some(capsule) = frontier.pop() {
            if !seen.insert(capsule) {
                continue;
            }
            let dependants: Vec<ClaimId> = self.dependants.get(&capsule).into_iter().flatten().copied().collect();
            for id in dependants {
                // Revoked claims stay revoked; only the claims that change are written again.
                if self.claims.get(&id).is_none_or(|claim| claim.state == ClaimState::Revoked) {
                    continue;
                }
                let claim = self.claims.get_mut(&id).expect("checked above");
                claim.state = ClaimState::Tainted;
                if let Some(record) = &claim.capsule {
                    frontier.push(record.hash);
                }
            }
        }
    }

    pub fn set_pool_budgets(
        &mut self,
        env: &Environment,
        holdout_id: &str,
        scope: &str,
        k_bits_budget: Option<f64>,
        access_credit_budget: Option<f64>,
    ) -> Result<Applied, KernelError> {
        let key = self.pool_key(env, holdout_id, scope)?;
        for budget in [k_bits_budget, access_credit_budget].into_iter().flatten() {
            if !budget.is_finite() || budget < 0.0 {
                return Err(KernelError::invalid_argument("budgets must be finite and >= 0"));
            }
        }
        let holdout = &env.holdouts[holdout_id];
        let pool = self.holdout_pools.get_or_insert_with(key, || holdout_pool(holdout));
        if let Some(k) = k_bits_budget {
            pool.k_bits_budget = k;
        }
        if let Some(access) = access_credit_budget {
            pool.access_credit_budget = access;
        }
        Ok(Applied::reply(Response::PoolBudgets {
            holdout_id: holdout_id.to_string(),
            scope: scope.to_string(),
            k_bits_budget: Some(pool.k_bits_budget),
            access_credit_budget: Some(pool.access_credit_budget),
        }))
    }

    /// Pool key for (holdout, scope): `global`, or `principal:<id>` for one principal's pool.
    /// The pool a (holdout, scope) names. A scope the holdout does not use is refused: a budget
    /// set on it would never be consulted.
    pub fn pool_key(&self, env: &Environment, holdout_id: &str, scope: &str) -> Result<PoolKey, KernelError> {
        validate_name("holdout_id", holdout_id)?;
        let holdout = env.holdouts.get(holdout_id).ok_or_else(|| KernelError::not_found("unknown holdout"))?;
        let uses = |wanted: PoolScope| holdout.pool_scope == wanted || holdout.pool_scope == PoolScope::Both;
        match scope {
            "" | "global" if uses(PoolScope::Global) => Ok(PoolKey::global(holdout_id)),
            "" | "global" => Err(precondition("this holdout has only per-principal pools")),
            other => match other.strip_prefix("principal:") {
                Some(principal) if validate_name("scope principal", principal).is_ok() => {
                    if uses(PoolScope::PerPrincipal) {
                        Ok(PoolKey::principal(holdout_id, principal))
                    } else {
                        Err(precondition("this holdout has only a global pool"))
                    }
                }
                _ => Err(KernelError::invalid_argument("scope must be global or principal:<principal id>")),
            },
        }
    }

    pub fn pool_budgets(&self, env: &Environment, holdout_id: &str, scope: &str) -> Result<Response, KernelError> {
        let key = self.pool_key(env, holdout_id, scope)?;
        let default = holdout_pool(&env.holdouts[holdout_id]);
        let pool = self.holdout_pools.get(&key).unwrap_or(&default);
        Ok(Response::PoolBudgets {
            holdout_id: holdout_id.to_string(),
            scope: scope.to_string(),
            k_bits_budget: Some(pool.k_bits_budget),
            access_credit_budget: Some(pool.access_credit_budget),
        })
    }

    /// The capsule of a claim, if its leaf is within `durable_size`.
    pub fn durable_capsule(
        &self,
        principal: &Principal,
        claim_id: &[u8],
        durable_size: u64,
    ) -> Result<&CapsuleRecord, KernelError> {
        let claim = self.claim(claim_id)?;
        let owner_auditor = claim.owner == principal.id && principal.role == crate::request::Role::Auditor;
        if !(owner_auditor || principal.is_auditor_or_operator()) {
            return Err(KernelError::permission_denied("auditor or operator role required"));
        }
        let record = claim
            .capsule
            .as_ref()
            .filter(|c| c.etl_index < durable_size)
            .ok_or_else(|| KernelError::not_found("claim has no capsule yet"))?;
        Ok(record)
    }
}

/// What an execution concluded, before it is written down.
#[derive(Debug)]
struct Verdict {
    decision: Decision,
    reason_codes: Vec<u32>,
    /// As reported: the e-value if approved, else min(e, 1).
    e_value: f64,
    nullspec_id_hex: String,
    eprocess_kind: String,
    resolution_hash_hex: String,
}

fn default_pool() -> Pool {
    Pool::new(crate::pool::DEFAULT_POOL_K_BITS, crate::pool::DEFAULT_POOL_ACCESS_CREDIT)
}

fn holdout_pool(holdout: &Holdout) -> Pool {
    Pool::new(
        holdout.k_bits_budget.unwrap_or(crate::pool::DEFAULT_POOL_K_BITS),
        holdout.access_credit_budget.unwrap_or(crate::pool::DEFAULT_POOL_ACCESS_CREDIT),
    )
}

fn guest_refusal(error: &GuestError) -> KernelError {
    let code = if error.is_resource_exhausted() { ErrorCode::ResourceExhausted } else { ErrorCode::FailedPrecondition };
    KernelError::new(code, format!("claim code: {error}"))
}

/// Lets the guest ask the accuracy oracle; malformed submissions get a negative ABI code.
struct OracleAdapter<'a>(&'a mut AccuracyOracle);

impl crate::guest::Oracle for OracleAdapter<'_> {
    fn query(&mut self, predictions: &[u8]) -> i32 {
        match self.0.query(predictions) {
            Ok(bucket) => i32::try_from(bucket).unwrap_or(i32::MAX),
            Err(crate::oracle::OracleError::TooManyCalls) => crate::guest::abi_error::TOO_MANY_CALLS,
            Err(_) => crate::guest::abi_error::BAD_PREDICTIONS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_claims_never_count_against_the_live_cap() {
        assert!(capacity(0, 1_500_000).is_ok(), "a history beyond a million claims still takes new ones");
        assert!(capacity(MAX_LIVE_CLAIMS - 1, 0).is_ok());
        assert_eq!(capacity(MAX_LIVE_CLAIMS, 0).unwrap_err().code, ErrorCode::ResourceExhausted);
        assert!(capacity(1, MAX_SETTLED_CLAIMS - 2).is_ok());
        assert_eq!(capacity(1, MAX_SETTLED_CLAIMS - 1).unwrap_err().code, ErrorCode::ResourceExhausted);
        assert_eq!(MAX_SETTLED_CLAIMS, 22_369_621);
    }

    #[test]
    fn a_reset_clears_drift_and_freeze_but_keeps_the_baseline() {
        let mut claims = Claims::default();
        let frozen = Canary { e_drift: 2000.0, frozen: true, baseline_set: true, ..Canary::default() };
        claims.canaries.insert("name/demo".into(), frozen);
        let resets = BTreeMap::from([("name/demo".to_string(), "ab".repeat(32))]);
        assert_eq!(claims.apply_canary_resets(&resets), 1);
        let canary = &claims.canaries["name/demo"];
        assert!(!canary.frozen && canary.e_drift == 1.0 && canary.baseline_set);
    }
}
