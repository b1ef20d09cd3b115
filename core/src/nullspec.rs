//! Signed NullSpec contracts: which null hypothesis and e-process a holdout's oracle answers are
//! tested against, bound to an oracle resolution and signed by a trusted key.
//!
//! JSON shape (a compatibility requirement; byte arrays are JSON arrays of numbers):
//!
//! ```text
//! { "schema": "evidenceos.nullspec.v1", "nullspec_id": [32 numbers], "oracle_id": "...",
//!   "oracle_resolution_hash": [32 numbers], "holdout_handle": "...", "epoch_created": u64,
//!   "ttl_epochs": u64, "kind": {"DiscreteBuckets":{"p0":[..]}} | {"ParametricBernoulli":{"p":x}},
//!   "eprocess": {"LikelihoodRatioFixedAlt":{"alt":[..]}} | {"DirichletMultinomialMixture":{"alpha":[..]}},
//!   "calibration_manifest_hash": [32 numbers] | null, "created_by": "<key id>",
//!   "signature_ed25519": [64 numbers] }
//! ```
//!
//! Signing payload = canonical JSON of the contract with `signature_ed25519 = []` and
//! `nullspec_id` = 32 zero bytes; `nullspec_id = SHA-256(payload)`; the signature is Ed25519 over
//! the payload by the key that `created_by` names in the verifier's trusted key map.

use std::collections::BTreeMap;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::evalue::{self, EProcess, EValueError, NullKind};
use crate::hash::{Hash, sha256};
use crate::keys::verify_signature;

pub const SCHEMA: &str = "evidenceos.nullspec.v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullSpecContract {
    pub schema: String,
    pub nullspec_id: Hash,
    pub oracle_id: String,
    pub oracle_resolution_hash: Hash,
    pub holdout_handle: String,
    pub epoch_created: u64,
    pub ttl_epochs: u64,
    pub kind: NullKind,
    pub eprocess: EProcess,
    /// Required in JSON (`null` when absent): `deserialize_with` turns off serde's implicit
    /// "missing Option = None".
    #[serde(deserialize_with = "Option::deserialize")]
    pub calibration_manifest_hash: Option<Hash>,
    pub created_by: String,
    /// 64 bytes once signed; empty in the signing payload.
    pub signature_ed25519: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullSpecError {
    /// Not JSON of the contract's shape (unknown or missing field, wrong type or length).
    Malformed,
    /// A float in `kind` or `eprocess` is NaN or infinite.
    NonFiniteFloat,
    /// `schema` is not [`SCHEMA`].
    WrongSchema,
    /// `nullspec_id` is not SHA-256 of the signing payload.
    IdMismatch,
    /// `created_by` is not in the trusted key map.
    UnknownSigner,
    /// The signature is not 64 bytes or does not verify under the named key.
    BadSignature,
    /// The null/e-process parameters are invalid (see [`evalue::validate`]).
    InvalidParameters(EValueError),
}

impl std::fmt::Display for NullSpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed => f.write_str("malformed nullspec"),
            Self::NonFiniteFloat => f.write_str("non-finite float"),
            Self::WrongSchema => f.write_str("wrong schema"),
            Self::IdMismatch => f.write_str("nullspec id mismatch"),
            Self::UnknownSigner => f.write_str("unknown signer"),
            Self::BadSignature => f.write_str("bad signature"),
            Self::InvalidParameters(e) => write!(f, "invalid parameters: {e}"),
        }
    }
}

impl std::error::Error for NullSpecError {}

impl NullSpecContract {
    /// Parses JSON bytes, rejecting unknown fields and non-finite floats. Does not verify.
    pub fn from_json(bytes: &[u8]) -> Result<Self, NullSpecError> {
        let contract: Self = serde_json::from_slice(bytes).map_err(|_| NullSpecError::Malformed)?;
        if !contract.floats_are_finite() {
            return Err(NullSpecError::NonFiniteFloat);
        }
        Ok(contract)
    }

    /// Canonical JSON bytes of the whole contract (signature and id included).
    pub fn to_json(&self) -> Vec<u8> {
        // Strings, integers, byte arrays and f64s: always representable (non-finite floats become
        // `null`, and are refused by `from_json` and `verify`).
        crate::canonical::to_vec(self).expect("NullSpecContract is always representable as JSON")
    }

    /// Canonical JSON with `signature_ed25519 = []` and `nullspec_id` = 32 zero bytes.
    pub fn signing_payload(&self) -> Vec<u8> {
        let blank = Self { nullspec_id: [0; 32], signature_ed25519: Vec::new(), ..self.clone() };
        blank.to_json()
    }

    /// SHA-256 of the signing payload.
    pub fn compute_id(&self) -> Hash {
        sha256(&self.signing_payload())
    }

    /// Fills `nullspec_id` and `signature_ed25519` (Ed25519 over the payload with `seed`).
    /// Everything else, `created_by` included, is kept as given: it must name the seed's public
    /// key in the verifiers' trusted key maps.
    pub fn sign(unsigned: NullSpecContract, seed: &[u8; 32]) -> NullSpecContract {
        let payload = unsigned.signing_payload();
        let signature = SigningKey::from_bytes(seed).sign(&payload).to_bytes().to_vec();
        Self { nullspec_id: sha256(&payload), signature_ed25519: signature, ..unsigned }
    }

    /// Checks, in order: schema, finite floats, id, signer trusted, signature, parameters.
    pub fn verify(&self, trusted: &BTreeMap<String, [u8; 32]>) -> Result<(), NullSpecError> {
        if self.schema != SCHEMA {
            return Err(NullSpecError::WrongSchema);
        }
        if !self.floats_are_finite() {
            return Err(NullSpecError::NonFiniteFloat);
        }
        let payload = self.signing_payload();
        if sha256(&payload) != self.nullspec_id {
            return Err(NullSpecError::IdMismatch);
        }
        let public_key = trusted.get(&self.created_by).ok_or(NullSpecError::UnknownSigner)?;
        if self.signature_ed25519.len() != 64 || !verify_signature(public_key, &payload, &self.signature_ed25519) {
            return Err(NullSpecError::BadSignature);
        }
        evalue::validate(&self.kind, &self.eprocess).map_err(NullSpecError::InvalidParameters)
    }

    /// Expired iff `epoch > epoch_created + ttl_epochs` (the sum saturates: never wraps).
    pub fn is_expired(&self, epoch: u64) -> bool {
        epoch > self.epoch_created.saturating_add(self.ttl_epochs)
    }

    fn floats_are_finite(&self) -> bool {
        let kind_ok = match &self.kind {
            NullKind::DiscreteBuckets { p0 } => p0.iter().all(|x| x.is_finite()),
            NullKind::ParametricBernoulli { p } => p.is_finite(),
        };
        let eprocess_ok = match &self.eprocess {
            EProcess::LikelihoodRatioFixedAlt { alt: v } | EProcess::DirichletMultinomialMixture { alpha: v } => {
                v.iter().all(|x| x.is_finite())
            }
        };
        kind_ok && eprocess_ok
    }
}

/// Null and e-process from calibration bucket counts: Laplace-smoothed
/// `p0_i = (c_i + 1) / Σ_j (c_j + 1)` and a Dirichlet-multinomial mixture with every
/// `alpha_i = alpha`. Not validated here (empty counts or a bad `alpha` give a pair that
/// [`evalue::validate`] and [`NullSpecContract::verify`] refuse).
pub fn from_calibration_buckets(counts: &[u64], alpha: f64) -> (NullKind, EProcess) {
    // u64 + 1 fits u128, and so does the sum of up to 2^64 of them.
    let total: u128 = counts.iter().map(|&c| u128::from(c) + 1).sum();
    let p0 = counts.iter().map(|&c| (u128::from(c) + 1) as f64 / total as f64).collect();
    let alpha = vec![alpha; counts.len()];
    (NullKind::DiscreteBuckets { p0 }, EProcess::DirichletMultinomialMixture { alpha })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyId, public_key_for_seed};

    const SEED: [u8; 32] = [7; 32];

    fn signer_id(seed: &[u8; 32]) -> String {
        KeyId::of_public_key(&public_key_for_seed(seed)).to_hex()
    }

    fn trusted() -> BTreeMap<String, [u8; 32]> {
        BTreeMap::from([(signer_id(&SEED), public_key_for_seed(&SEED))])
    }

    fn unsigned() -> NullSpecContract {
        let (kind, eprocess) = from_calibration_buckets(&[3, 1, 0], 0.5);
        NullSpecContract {
            schema: SCHEMA.to_owned(),
            nullspec_id: [0; 32],
            oracle_id: "oracle-1".to_owned(),
            oracle_resolution_hash: [0x11; 32],
            holdout_handle: "holdout-a".to_owned(),
            epoch_created: 10,
            ttl_epochs: 5,
            kind,
            eprocess,
            calibration_manifest_hash: Some([0x22; 32]),
            created_by: signer_id(&SEED),
            signature_ed25519: Vec::new(),
        }
    }

    fn signed() -> NullSpecContract {
        NullSpecContract::sign(unsigned(), &SEED)
    }

    fn json_bytes(values: &[u8]) -> String {
        format!("[{}]", values.iter().map(u8::to_string).collect::<Vec<_>>().join(","))
    }

    #[test]
    fn calibration_buckets_are_laplace_smoothed() {
        let (kind, eprocess) = from_calibration_buckets(&[3, 1, 0], 0.5);
        assert_eq!(kind, NullKind::DiscreteBuckets { p0: vec![4.0 / 7.0, 2.0 / 7.0, 1.0 / 7.0] });
        assert_eq!(eprocess, EProcess::DirichletMultinomialMixture { alpha: vec![0.5; 3] });
        assert_eq!(evalue::validate(&kind, &eprocess), Ok(()));
        let (kind, _) = from_calibration_buckets(&[u64::MAX, u64::MAX], 1.0);
        assert_eq!(kind, NullKind::DiscreteBuckets { p0: vec![0.5, 0.5] });
        let (kind, eprocess) = from_calibration_buckets(&[], 1.0);
        assert_eq!(evalue::validate(&kind, &eprocess), Err(EValueError::InvalidNull));
    }

    #[test]
    fn signing_payload_is_pinned() {
        let contract = signed();
        let payload = String::from_utf8(contract.signing_payload()).unwrap();
        let zeros = json_bytes(&[0; 32]);
        let expected = format!(
            concat!(
                r#"{{"calibration_manifest_hash":{cal},"created_by":"{signer}","epoch_created":10,"#,
                r#""eprocess":{{"DirichletMultinomialMixture":{{"alpha":[0.5,0.5,0.5]}}}},"#,
                r#""holdout_handle":"holdout-a","#,
                r#""kind":{{"DiscreteBuckets":{{"p0":[0.5714285714285714,0.2857142857142857,0.14285714285714285]}}}},"#,
                r#""nullspec_id":{zeros},"oracle_id":"oracle-1","oracle_resolution_hash":{res},"#,
                r#""schema":"evidenceos.nullspec.v1","signature_ed25519":[],"ttl_epochs":5}}"#
            ),
            cal = json_bytes(&[0x22; 32]),
            signer = signer_id(&SEED),
            zeros = zeros,
            res = json_bytes(&[0x11; 32]),
        );
        assert_eq!(payload, expected);
        assert_eq!(contract.nullspec_id, sha256(expected.as_bytes()));
        assert_eq!(hex::encode(contract.nullspec_id), PINNED_ID_HEX);
        // The payload does not depend on the id or signature already present.
        assert_eq!(unsigned().signing_payload(), contract.signing_payload());
    }

    // SHA-256 of the payload above; must never change.
    const PINNED_ID_HEX: &str = "4984d21bf4660ae7156a9ce99c9a9c4bc6fa7b67f134bcdf25d58e189d556dfc";

    #[test]
    fn sign_then_verify() {
        let contract = signed();
        assert_eq!(contract.nullspec_id, contract.compute_id());
        assert_eq!(contract.signature_ed25519.len(), 64);
        assert_eq!(contract.created_by, unsigned().created_by);
        assert_eq!(contract.verify(&trusted()), Ok(()));
        // Ed25519 is deterministic: signing twice gives the same bytes.
        assert_eq!(signed().to_json(), contract.to_json());
        // Re-signing an already signed contract is the same as signing it fresh.
        assert_eq!(NullSpecContract::sign(contract.clone(), &SEED), contract);
    }

    #[test]
    fn tampering_with_any_field_breaks_verify() {
        type Tamper = fn(&mut NullSpecContract);
        let tampers: [(&str, Tamper); 14] = [
            ("schema", |c| c.schema = "evidenceos.nullspec.v2".into()),
            ("nullspec_id", |c| c.nullspec_id[0] ^= 1),
            ("oracle_id", |c| c.oracle_id.push('x')),
            ("oracle_resolution_hash", |c| c.oracle_resolution_hash[31] ^= 0x80),
            ("holdout_handle", |c| c.holdout_handle = "holdout-b".into()),
            ("epoch_created", |c| c.epoch_created += 1),
            ("ttl_epochs", |c| c.ttl_epochs = u64::MAX),
            ("kind", |c| c.kind = NullKind::DiscreteBuckets { p0: vec![0.5, 0.25, 0.25] }),
            ("eprocess", |c| c.eprocess = EProcess::DirichletMultinomialMixture { alpha: vec![0.5, 0.5, 0.6] }),
            ("calibration_manifest_hash", |c| c.calibration_manifest_hash = None),
            ("created_by", |c| c.created_by = signer_id(&[8; 32])),
            ("signature bit", |c| c.signature_ed25519[10] ^= 4),
            ("signature length", |c| c.signature_ed25519.push(0)),
            ("signature empty", |c| c.signature_ed25519.clear()),
        ];
        for (name, tamper) in tampers {
            let mut contract = signed();
            tamper(&mut contract);
            assert!(contract.verify(&trusted()).is_err(), "{name}");
            if name == "nullspec_id" {
                continue; // recomputing the id would just undo this tamper
            }
            // An attacker who also recomputes the id is stopped by the signature.
            contract.nullspec_id = contract.compute_id();
            assert!(contract.verify(&trusted()).is_err(), "{name} (id recomputed)");
        }
    }

    #[test]
    fn verify_reports_the_failing_check() {
        let mut contract = signed();
        contract.holdout_handle.push('!');
        assert_eq!(contract.verify(&trusted()), Err(NullSpecError::IdMismatch));
        contract.nullspec_id = contract.compute_id();
        assert_eq!(contract.verify(&trusted()), Err(NullSpecError::BadSignature));
    }

    #[test]
    fn unknown_signer_and_wrong_key() {
        let contract = signed();
        assert_eq!(contract.verify(&BTreeMap::new()), Err(NullSpecError::UnknownSigner));
        // The name is trusted but bound to a different key.
        let other = BTreeMap::from([(signer_id(&SEED), public_key_for_seed(&[9; 32]))]);
        assert_eq!(contract.verify(&other), Err(NullSpecError::BadSignature));
        // Signed by an untrusted key under its own name.
        let rogue =
            NullSpecContract::sign(NullSpecContract { created_by: signer_id(&[9; 32]), ..unsigned() }, &[9; 32]);
        assert_eq!(rogue.verify(&trusted()), Err(NullSpecError::UnknownSigner));
        // Signed with another seed while naming the trusted key.
        let forged = NullSpecContract::sign(unsigned(), &[9; 32]);
        assert_eq!(forged.verify(&trusted()), Err(NullSpecError::BadSignature));
        // A malformed trusted public key never verifies (and never panics).
        let junk = BTreeMap::from([(signer_id(&SEED), [0xff; 32])]);
        assert_eq!(contract.verify(&junk), Err(NullSpecError::BadSignature));
    }

    #[test]
    fn wrong_schema_even_when_properly_signed() {
        let contract =
            NullSpecContract::sign(NullSpecContract { schema: "evidenceos.nullspec.v2".into(), ..unsigned() }, &SEED);
        assert_eq!(contract.verify(&trusted()), Err(NullSpecError::WrongSchema));
    }

    #[test]
    fn invalid_parameters_even_when_properly_signed() {
        let cases = [
            (
                NullKind::DiscreteBuckets { p0: vec![0.5, 0.4] },
                EProcess::LikelihoodRatioFixedAlt { alt: vec![0.5, 0.5] },
            ),
            (NullKind::DiscreteBuckets { p0: vec![0.5, 0.5] }, EProcess::LikelihoodRatioFixedAlt { alt: vec![1.0] }),
            (
                NullKind::DiscreteBuckets { p0: vec![0.5, 0.5] },
                EProcess::DirichletMultinomialMixture { alpha: vec![0.0, 1.0] },
            ),
            (NullKind::ParametricBernoulli { p: 0.5 }, EProcess::DirichletMultinomialMixture { alpha: vec![1.0, 1.0] }),
            (NullKind::ParametricBernoulli { p: 1.0 }, EProcess::LikelihoodRatioFixedAlt { alt: vec![0.5, 0.5] }),
        ];
        for (kind, eprocess) in cases {
            let expected = evalue::validate(&kind, &eprocess).unwrap_err();
            let contract = NullSpecContract::sign(NullSpecContract { kind, eprocess, ..unsigned() }, &SEED);
            assert_eq!(contract.verify(&trusted()), Err(NullSpecError::InvalidParameters(expected)));
        }
        let contract = NullSpecContract::sign(
            NullSpecContract { kind: NullKind::ParametricBernoulli { p: f64::NAN }, ..unsigned() },
            &SEED,
        );
        assert_eq!(contract.verify(&trusted()), Err(NullSpecError::NonFiniteFloat));
        let contract = NullSpecContract::sign(
            NullSpecContract { eprocess: EProcess::LikelihoodRatioFixedAlt { alt: vec![f64::INFINITY] }, ..unsigned() },
            &SEED,
        );
        assert_eq!(contract.verify(&trusted()), Err(NullSpecError::NonFiniteFloat));
        assert_eq!(
            NullSpecError::InvalidParameters(EValueError::ShapeMismatch).to_string(),
            "invalid parameters: shape mismatch"
        );
    }

    #[test]
    fn expiry_boundary() {
        let contract = signed(); // created 10, ttl 5
        assert!(!contract.is_expired(0));
        assert!(!contract.is_expired(15));
        assert!(contract.is_expired(16));
        let forever = NullSpecContract { epoch_created: u64::MAX - 1, ttl_epochs: 10, ..unsigned() };
        assert!(!forever.is_expired(u64::MAX));
        let zero = NullSpecContract { epoch_created: 0, ttl_epochs: 0, ..unsigned() };
        assert!(!zero.is_expired(0));
        assert!(zero.is_expired(1));
    }

    #[test]
    fn json_round_trip_is_byte_identical() {
        let contract = signed();
        let bytes = contract.to_json();
        let back = NullSpecContract::from_json(&bytes).unwrap();
        assert_eq!(back, contract);
        assert_eq!(back.to_json(), bytes);
        assert_eq!(back.verify(&trusted()), Ok(()));
    }

    #[test]
    fn json_round_trip_keeps_floats_that_need_17_digits() {
        // 1/11 prints as 0.09090909090909091; serde_json's default parser reads that back one ULP
        // off, which changes the payload and fails verification. Needs `float_roundtrip`.
        let (kind, eprocess) = from_calibration_buckets(&[0; 11], 1.0 / 3.0);
        let contract = NullSpecContract::sign(NullSpecContract { kind, eprocess, ..unsigned() }, &SEED);
        let back = NullSpecContract::from_json(&contract.to_json()).unwrap();
        assert_eq!(back.to_json(), contract.to_json());
        assert_eq!(back.verify(&trusted()), Ok(()));
    }

    #[test]
    fn json_shape_is_exact() {
        let contract = signed();
        let value: serde_json::Value = serde_json::from_slice(&contract.to_json()).unwrap();
        assert_eq!(value["nullspec_id"].as_array().unwrap().len(), 32);
        assert_eq!(value["signature_ed25519"].as_array().unwrap().len(), 64);
        assert_eq!(value["oracle_resolution_hash"][0], 0x11);
        assert_eq!(value["kind"]["DiscreteBuckets"]["p0"][2], 1.0 / 7.0);
        assert_eq!(value["eprocess"]["DirichletMultinomialMixture"]["alpha"][0], 0.5);
        assert_eq!(value["created_by"], signer_id(&SEED));
        let none = NullSpecContract { calibration_manifest_hash: None, ..contract.clone() };
        let value: serde_json::Value = serde_json::from_slice(&none.to_json()).unwrap();
        assert!(value["calibration_manifest_hash"].is_null());
        assert_eq!(NullSpecContract::from_json(&none.to_json()), Ok(none));
    }

    #[test]
    fn parse_rejects_bad_shapes() {
        let good: serde_json::Value = serde_json::from_slice(&signed().to_json()).unwrap();
        let edit = |f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
            let mut value = good.clone();
            f(value.as_object_mut().unwrap());
            NullSpecContract::from_json(&serde_json::to_vec(&value).unwrap())
        };
        assert!(edit(&|_| {}).is_ok());
        assert_eq!(edit(&|m| drop(m.insert("extra".into(), 1.into()))), Err(NullSpecError::Malformed));
        assert_eq!(edit(&|m| drop(m.remove("calibration_manifest_hash"))), Err(NullSpecError::Malformed));
        assert_eq!(edit(&|m| drop(m.remove("created_by"))), Err(NullSpecError::Malformed));
        assert_eq!(
            edit(&|m| drop(m.insert("nullspec_id".into(), vec![0u8; 31].into()))),
            Err(NullSpecError::Malformed)
        );
        assert_eq!(
            edit(&|m| drop(m.insert("nullspec_id".into(), vec![256u32; 32].into()))),
            Err(NullSpecError::Malformed)
        );
        assert_eq!(edit(&|m| drop(m.insert("epoch_created".into(), (-1).into()))), Err(NullSpecError::Malformed));
        assert_eq!(
            edit(&|m| drop(m.insert("kind".into(), serde_json::json!({"DiscreteBuckets": {"p0": [1.0], "x": 1}})))),
            Err(NullSpecError::Malformed)
        );
        assert_eq!(
            edit(&|m| drop(m.insert("kind".into(), serde_json::json!({"Uniform": {}})))),
            Err(NullSpecError::Malformed)
        );
        assert_eq!(
            edit(&|m| drop(m.insert("kind".into(), serde_json::json!({"ParametricBernoulli": {"p": null}})))),
            Err(NullSpecError::Malformed)
        );
        // Out-of-range float literals and garbage never panic.
        let text = String::from_utf8(signed().to_json()).unwrap().replace("0.5,0.5,0.5", "0.5,1e999,0.5");
        assert_eq!(NullSpecContract::from_json(text.as_bytes()), Err(NullSpecError::Malformed));
        assert_eq!(NullSpecContract::from_json(b"\xff{"), Err(NullSpecError::Malformed));
        assert_eq!(NullSpecContract::from_json(b""), Err(NullSpecError::Malformed));
    }
    proptest::proptest! {
        #[test]
        fn random_contracts_survive_json(
            weights in proptest::collection::vec(1e-6f64..1.0, 1..8),
            alpha in 1e-3f64..10.0,
            epoch_created in proptest::prelude::any::<u64>(),
            ttl_epochs in proptest::prelude::any::<u64>(),
        ) {
            let total: f64 = weights.iter().sum();
            let p0: Vec<f64> = weights.iter().map(|w| w / total).collect();
            let alpha = vec![alpha; p0.len()];
            let contract = NullSpecContract::sign(
                NullSpecContract {
                    kind: NullKind::DiscreteBuckets { p0 },
                    eprocess: EProcess::DirichletMultinomialMixture { alpha },
                    epoch_created,
                    ttl_epochs,
                    ..unsigned()
                },
                &SEED,
            );
            let bytes = contract.to_json();
            let back = NullSpecContract::from_json(&bytes).unwrap();
            proptest::prop_assert_eq!(back.to_json(), bytes);
            proptest::prop_assert_eq!(back.verify(&trusted()), Ok(()));
        }

        #[test]
        fn flipped_bytes_never_panic_or_verify(position in proptest::prelude::any::<usize>(), flip in 1u8..=255) {
            let original = signed();
            let mut bytes = original.to_json();
            let i = position % bytes.len();
            bytes[i] ^= flip;
            if let Ok(parsed) = NullSpecContract::from_json(&bytes)
                && parsed.verify(&trusted()).is_ok()
            {
                proptest::prop_assert_eq!(parsed, original);
            }
        }
    }
}
