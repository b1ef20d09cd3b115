//! E-values of a run of oracle buckets against a null distribution over buckets.
//!
//! Both e-processes are test martingales under the null: each factor has null expectation at
//! most 1 given the past (`Σ alt ≤ 1` for the fixed alternative; the Dirichlet-multinomial
//! predictive distribution sums to exactly 1). Products are accumulated as sums of logarithms
//! (compensated), so long runs neither overflow nor underflow before the end.

use serde::{Deserialize, Serialize};

/// Tolerance on `Σ p0 = 1` and on `Σ alt ≤ 1`.
pub const PROBABILITY_SUM_TOLERANCE: f64 = 1e-9;

/// The null hypothesis over bucket values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum NullKind {
    /// Null probability of each bucket `0..p0.len()`.
    DiscreteBuckets { p0: Vec<f64> },
    /// Buckets are 0/1 with `P(1) = p`.
    ParametricBernoulli { p: f64 },
}

/// How the bucket sequence is turned into evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum EProcess {
    /// Likelihood ratio against a fixed alternative distribution `alt` over buckets.
    LikelihoodRatioFixedAlt { alt: Vec<f64> },
    /// Likelihood ratio of the Dirichlet(`alpha`)-multinomial mixture (sequential predictive).
    DirichletMultinomialMixture { alpha: Vec<f64> },
}

impl EProcess {
    /// The variant's name, as recorded in capsules (`eprocess_kind`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::LikelihoodRatioFixedAlt { .. } => "LikelihoodRatioFixedAlt",
            Self::DirichletMultinomialMixture { .. } => "DirichletMultinomialMixture",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EValueError {
    /// `p0` empty, an entry non-finite or `<= 0`, or not summing to 1; or `p` not in (0, 1).
    InvalidNull,
    /// An `alt` entry non-finite or negative or `Σ alt > 1`; or an `alpha` entry non-finite or
    /// `<= 0`, or `Σ alpha` not finite.
    InvalidEProcess,
    /// `alt`/`alpha` length differs from the number of null buckets.
    ShapeMismatch,
    /// A bucket is not below the number of null buckets.
    BucketOutOfRange,
    /// `ParametricBernoulli` with `DirichletMultinomialMixture`.
    UnsupportedCombination,
    /// The e-value (or one of its factors) is not finite.
    NumericGuard,
}

impl std::fmt::Display for EValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::InvalidNull => "invalid null",
            Self::InvalidEProcess => "invalid e-process",
            Self::ShapeMismatch => "shape mismatch",
            Self::BucketOutOfRange => "bucket out of range",
            Self::UnsupportedCombination => "unsupported combination",
            Self::NumericGuard => "numeric guard",
        })
    }
}

impl std::error::Error for EValueError {}

impl NullKind {
    /// Number of bucket values the null covers: `p0.len()`, or 2 for Bernoulli.
    pub fn num_buckets(&self) -> usize {
        match self {
            Self::DiscreteBuckets { p0 } => p0.len(),
            Self::ParametricBernoulli { .. } => 2,
        }
    }

    /// Null probability of `bucket` (`bucket < num_buckets()`, else 0).
    fn probability(&self, bucket: usize) -> f64 {
        match self {
            Self::DiscreteBuckets { p0 } => p0.get(bucket).copied().unwrap_or(0.0),
            Self::ParametricBernoulli { p } => match bucket {
                0 => 1.0 - p,
                1 => *p,
                _ => 0.0,
            },
        }
    }

    fn validate(&self) -> Result<(), EValueError> {
        let ok = match self {
            Self::DiscreteBuckets { p0 } => {
                !p0.is_empty()
                    && p0.iter().all(|&x| x.is_finite() && x > 0.0)
                    && (p0.iter().sum::<f64>() - 1.0).abs() <= PROBABILITY_SUM_TOLERANCE
            }
            Self::ParametricBernoulli { p } => p.is_finite() && *p > 0.0 && *p < 1.0,
        };
        if ok { Ok(()) } else { Err(EValueError::InvalidNull) }
    }
}

/// Checks a null/e-process pair on its own (everything [`e_value`] checks except the buckets).
pub fn validate(kind: &NullKind, eprocess: &EProcess) -> Result<(), EValueError> {
    if matches!((kind, eprocess), (NullKind::ParametricBernoulli { .. }, EProcess::DirichletMultinomialMixture { .. }))
    {
        return Err(EValueError::UnsupportedCombination);
    }
    kind.validate()?;
    let (weights, ok) = match eprocess {
        EProcess::LikelihoodRatioFixedAlt { alt } => (
            alt,
            alt.iter().all(|&x| x.is_finite() && x >= 0.0)
                && alt.iter().sum::<f64>() <= 1.0 + PROBABILITY_SUM_TOLERANCE,
        ),
        EProcess::DirichletMultinomialMixture { alpha } => {
            (alpha, alpha.iter().all(|&x| x.is_finite() && x > 0.0) && alpha.iter().sum::<f64>().is_finite())
        }
    };
    if weights.len() != kind.num_buckets() {
        return Err(EValueError::ShapeMismatch);
    }
    if ok { Ok(()) } else { Err(EValueError::InvalidEProcess) }
}

/// Neumaier-compensated sum of logarithms.
#[derive(Default)]
struct LogSum {
    sum: f64,
    compensation: f64,
}

impl LogSum {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

/// E-value of the run `buckets` (oldest first). See the module docs and the variant docs.
///
/// The null/e-process pair is validated even for an empty run (an invalid pair never yields an
/// e-value); an empty valid run gives exactly 1.
pub fn e_value(kind: &NullKind, eprocess: &EProcess, buckets: &[u32]) -> Result<f64, EValueError> {
    validate(kind, eprocess)?;
    let num_buckets = kind.num_buckets();
    if buckets.iter().any(|&b| b as usize >= num_buckets) {
        return Err(EValueError::BucketOutOfRange);
    }
    let mut log_e = LogSum::default();
    match eprocess {
        EProcess::LikelihoodRatioFixedAlt { alt } => {
            for &b in buckets {
                let b = b as usize;
                let factor = alt[b] / kind.probability(b);
                if factor == 0.0 {
                    return Ok(0.0);
                }
                if !factor.is_finite() {
                    return Err(EValueError::NumericGuard);
                }
                log_e.add(factor.ln());
            }
        }
        EProcess::DirichletMultinomialMixture { alpha } => {
            let alpha_total: f64 = alpha.iter().sum();
            let mut counts = vec![0u64; num_buckets];
            for (seen, &b) in buckets.iter().enumerate() {
                let b = b as usize;
                let predictive = (counts[b] as f64 + alpha[b]) / (seen as f64 + alpha_total);
                let factor = predictive / kind.probability(b);
                if !factor.is_finite() || factor <= 0.0 {
                    return Err(EValueError::NumericGuard);
                }
                log_e.add(factor.ln());
                counts[b] += 1;
            }
        }
    }
    let e = log_e.value().exp();
    if e.is_finite() { Ok(e) } else { Err(EValueError::NumericGuard) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn assert_rel(actual: f64, expected: f64) {
        let rel = ((actual - expected) / expected).abs();
        assert!(rel <= 1e-12, "{actual} vs {expected} (rel {rel})");
    }

    fn discrete(p0: &[f64]) -> NullKind {
        NullKind::DiscreteBuckets { p0: p0.to_vec() }
    }

    fn lr(alt: &[f64]) -> EProcess {
        EProcess::LikelihoodRatioFixedAlt { alt: alt.to_vec() }
    }

    fn dmm(alpha: &[f64]) -> EProcess {
        EProcess::DirichletMultinomialMixture { alpha: alpha.to_vec() }
    }

    #[test]
    fn bernoulli_likelihood_ratio() {
        // p = 0.25, alt = [0.5, 0.5], buckets 1, 1, 0:
        // (0.5/0.25) · (0.5/0.25) · (0.5/0.75) = 2 · 2 · 2/3 = 8/3
        let kind = NullKind::ParametricBernoulli { p: 0.25 };
        assert_rel(e_value(&kind, &lr(&[0.5, 0.5]), &[1, 1, 0]).unwrap(), 8.0 / 3.0);
        assert_eq!(e_value(&kind, &lr(&[0.5, 0.5]), &[2]), Err(EValueError::BucketOutOfRange));
        assert_eq!(e_value(&kind, &lr(&[0.5, 0.25, 0.25]), &[1]), Err(EValueError::ShapeMismatch));
    }

    #[test]
    fn discrete_likelihood_ratio() {
        // p0 = [0.5, 0.25, 0.25], alt = [0.25, 0.25, 0.5], buckets 2, 2, 0:
        // (0.5/0.25) · (0.5/0.25) · (0.25/0.5) = 2 · 2 · 0.5 = 2
        let e = e_value(&discrete(&[0.5, 0.25, 0.25]), &lr(&[0.25, 0.25, 0.5]), &[2, 2, 0]).unwrap();
        assert_rel(e, 2.0);
        // A bucket the alternative gives probability 0 kills the e-value.
        let e = e_value(&discrete(&[0.5, 0.5]), &lr(&[1.0, 0.0]), &[0, 1, 0]).unwrap();
        assert_eq!(e, 0.0);
    }

    #[test]
    fn dirichlet_multinomial_mixture_uniform_prior() {
        // p0 = [0.5, 0.25, 0.25], alpha = [1, 1, 1] (Σ = 3), buckets 1, 1, 2:
        // t=1, b=1, n=0: ((0+1)/(0+3)) / 0.25 = 4/3
        // t=2, b=1, n=1: ((1+1)/(1+3)) / 0.25 = 2
        // t=3, b=2, n=0: ((0+1)/(2+3)) / 0.25 = 4/5
        // e = 4/3 · 2 · 4/5 = 32/15
        // (closed form: (1·2)·(1) / (3·4·5) / 0.25³ = (2/60)·64 = 32/15)
        let e = e_value(&discrete(&[0.5, 0.25, 0.25]), &dmm(&[1.0, 1.0, 1.0]), &[1, 1, 2]).unwrap();
        assert_rel(e, 32.0 / 15.0);
    }

    #[test]
    fn dirichlet_multinomial_mixture_skewed_prior() {
        // p0 = [0.5, 0.5], alpha = [0.5, 1.5] (Σ = 2), buckets 0, 0, 1:
        // t=1, b=0, n=0: ((0+0.5)/(0+2)) / 0.5 = 0.5
        // t=2, b=0, n=1: ((1+0.5)/(1+2)) / 0.5 = 1
        // t=3, b=1, n=0: ((0+1.5)/(2+2)) / 0.5 = 0.75
        // e = 0.5 · 1 · 0.75 = 0.375
        let e = e_value(&discrete(&[0.5, 0.5]), &dmm(&[0.5, 1.5]), &[0, 0, 1]).unwrap();
        assert_rel(e, 0.375);
    }

    #[test]
    fn empty_run_is_one() {
        let cases = [
            (NullKind::ParametricBernoulli { p: 0.3 }, lr(&[0.1, 0.9])),
            (discrete(&[0.2, 0.8]), lr(&[0.5, 0.5])),
            (discrete(&[0.2, 0.8]), dmm(&[1.0, 1.0])),
        ];
        for (kind, eprocess) in cases {
            assert_eq!(e_value(&kind, &eprocess, &[]), Ok(1.0));
        }
        // An invalid pair is refused even on an empty run.
        assert_eq!(e_value(&discrete(&[0.2, 0.7]), &lr(&[0.5, 0.5]), &[]), Err(EValueError::InvalidNull));
    }

    #[test]
    fn invalid_nulls() {
        let alt = lr(&[0.5, 0.5]);
        for p0 in [&[][..], &[0.5, 0.4], &[1.0, 0.0], &[1.5, -0.5], &[f64::NAN, 1.0], &[f64::INFINITY, 0.0]] {
            let kind = discrete(p0);
            assert_eq!(e_value(&kind, &alt, &[]), Err(EValueError::InvalidNull), "{p0:?}");
        }
        for p in [0.0, 1.0, -0.5, 2.0, f64::NAN, f64::INFINITY] {
            let kind = NullKind::ParametricBernoulli { p };
            assert_eq!(e_value(&kind, &alt, &[]), Err(EValueError::InvalidNull), "{p}");
        }
        // Within tolerance of 1 is fine.
        assert!(e_value(&discrete(&[0.5, 0.5 + 1e-10]), &alt, &[0]).is_ok());
    }

    #[test]
    fn invalid_eprocesses() {
        let kind = discrete(&[0.5, 0.5]);
        for alt in [&[0.5, -0.1][..], &[f64::NAN, 0.5], &[f64::INFINITY, 0.0], &[0.6, 0.6]] {
            assert_eq!(e_value(&kind, &lr(alt), &[]), Err(EValueError::InvalidEProcess), "{alt:?}");
        }
        assert_eq!(e_value(&kind, &lr(&[1.0]), &[]), Err(EValueError::ShapeMismatch));
        assert_eq!(e_value(&kind, &lr(&[0.3, 0.3, 0.4]), &[]), Err(EValueError::ShapeMismatch));
        for alpha in [&[1.0, 0.0][..], &[1.0, -1.0], &[f64::NAN, 1.0], &[f64::INFINITY, 1.0], &[f64::MAX, f64::MAX]] {
            assert_eq!(e_value(&kind, &dmm(alpha), &[]), Err(EValueError::InvalidEProcess), "{alpha:?}");
        }
        assert_eq!(e_value(&kind, &dmm(&[1.0]), &[]), Err(EValueError::ShapeMismatch));
        // A sub-probability alternative is still an e-value.
        assert!(e_value(&kind, &lr(&[0.2, 0.2]), &[0]).is_ok());
    }

    #[test]
    fn unsupported_combination_and_bucket_range() {
        let bernoulli = NullKind::ParametricBernoulli { p: 0.5 };
        assert_eq!(e_value(&bernoulli, &dmm(&[1.0, 1.0]), &[]), Err(EValueError::UnsupportedCombination));
        assert_eq!(e_value(&bernoulli, &dmm(&[f64::NAN]), &[0]), Err(EValueError::UnsupportedCombination));
        let kind = discrete(&[0.25, 0.25, 0.5]);
        assert_eq!(e_value(&kind, &dmm(&[1.0; 3]), &[0, 3]), Err(EValueError::BucketOutOfRange));
        assert_eq!(e_value(&kind, &lr(&[0.0, 0.5, 0.5]), &[0, u32::MAX]), Err(EValueError::BucketOutOfRange));
        assert_eq!(EValueError::UnsupportedCombination.to_string(), "unsupported combination");
    }

    #[test]
    fn overflow_is_a_numeric_guard() {
        // 1 − 1e-200 rounds to 1, so p0 sums to 1 within tolerance; each factor is 1e200.
        let kind = discrete(&[1e-200, 1.0]);
        let alt = lr(&[1.0, 0.0]);
        assert_rel(e_value(&kind, &alt, &[0]).unwrap(), 1e200);
        assert_eq!(e_value(&kind, &alt, &[0, 0]), Err(EValueError::NumericGuard));
        // A single factor overflowing is caught too.
        let kind = discrete(&[1e-320, 1.0]);
        assert_eq!(e_value(&kind, &alt, &[0]), Err(EValueError::NumericGuard));
        // Long runs whose running product would underflow midway still come out right.
        let kind = discrete(&[0.5, 0.5]);
        let alt = lr(&[1.0 / 64.0, 63.0 / 64.0]);
        let mut run = vec![0u32; 300]; // (1/32)^300 = 2^-1500
        run.extend(vec![1u32; 1000]); // (63/32)^1000 ≈ 2^977.6
        let expected = (-1500.0 + 1000.0 * (63.0f64 / 32.0).log2()).exp2();
        let e = e_value(&kind, &alt, &run).unwrap();
        assert!(((e - expected) / expected).abs() < 1e-10, "{e} vs {expected}");
    }

    #[test]
    fn serde_shapes_are_externally_tagged() {
        let kind = discrete(&[0.5, 0.5]);
        assert_eq!(serde_json::to_string(&kind).unwrap(), r#"{"DiscreteBuckets":{"p0":[0.5,0.5]}}"#);
        let kind = NullKind::ParametricBernoulli { p: 0.25 };
        assert_eq!(serde_json::to_string(&kind).unwrap(), r#"{"ParametricBernoulli":{"p":0.25}}"#);
        assert_eq!(
            serde_json::to_string(&lr(&[1.0, 0.0])).unwrap(),
            r#"{"LikelihoodRatioFixedAlt":{"alt":[1.0,0.0]}}"#
        );
        assert_eq!(serde_json::to_string(&dmm(&[0.5])).unwrap(), r#"{"DirichletMultinomialMixture":{"alpha":[0.5]}}"#);
        assert!(serde_json::from_str::<NullKind>(r#"{"ParametricBernoulli":{"p":0.25,"q":1}}"#).is_err());
        assert!(serde_json::from_str::<NullKind>(r#"{"Other":{"p":0.25}}"#).is_err());
        assert!(serde_json::from_str::<EProcess>(r#"{"LikelihoodRatioFixedAlt":{"alt":[1e999]}}"#).is_err());
    }

    /// Closed form of the Dirichlet-multinomial mixture from the counts alone:
    /// `Π_b a_b^(n_b) / A^(m) / Π_b p0_b^(n_b)`, with `x^(n) = x(x+1)…(x+n−1)` the rising
    /// factorial (= Γ(x+n)/Γ(x)). Independent of the order of the run.
    fn closed_form(p0: &[f64], alpha: &[f64], buckets: &[u32]) -> f64 {
        let mut counts = vec![0u32; p0.len()];
        for &b in buckets {
            counts[b as usize] += 1;
        }
        let total: f64 = alpha.iter().sum();
        let mut e = 1.0;
        for (b, &n) in counts.iter().enumerate() {
            for j in 0..n {
                e *= (alpha[b] + f64::from(j)) / p0[b];
            }
        }
        for j in 0..buckets.len() {
            e /= total + j as f64;
        }
        e
    }

    fn distribution(len: usize) -> impl Strategy<Value = Vec<f64>> {
        proptest::collection::vec(1u32..100, len).prop_map(|w| {
            let total: u32 = w.iter().sum();
            w.iter().map(|&x| f64::from(x) / f64::from(total)).collect()
        })
    }

    fn dmm_case() -> impl Strategy<Value = (Vec<f64>, Vec<f64>, Vec<u32>)> {
        (1usize..6).prop_flat_map(|k| {
            (
                distribution(k),
                proptest::collection::vec(0.05f64..5.0, k),
                proptest::collection::vec(0u32..k as u32, 0..25),
            )
        })
    }

    proptest! {
        #[test]
        fn mixture_equals_the_rising_factorial_closed_form((p0, alpha, run) in dmm_case()) {
            let e = e_value(&discrete(&p0), &dmm(&alpha), &run).unwrap();
            let expected = closed_form(&p0, &alpha, &run);
            prop_assert!(((e - expected) / expected).abs() < 1e-11, "{} vs {}", e, expected);
        }

        #[test]
        fn mixture_is_exchangeable((p0, alpha, run) in dmm_case(), seed in any::<u64>()) {
            let mut shuffled = run.clone();
            // Deterministic Fisher–Yates from the seed.
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let a = e_value(&discrete(&p0), &dmm(&alpha), &run).unwrap();
            let b = e_value(&discrete(&p0), &dmm(&alpha), &shuffled).unwrap();
            prop_assert!(((a - b) / a).abs() < 1e-11, "{} vs {}", a, b);
        }

        #[test]
        fn likelihood_ratio_equals_the_direct_product(
            (p0, alt, run) in (1usize..6).prop_flat_map(|k| (distribution(k), distribution(k), proptest::collection::vec(0u32..k as u32, 0..25)))
        ) {
            let e = e_value(&discrete(&p0), &lr(&alt), &run).unwrap();
            let direct: f64 = run.iter().map(|&b| alt[b as usize] / p0[b as usize]).product();
            prop_assert!(((e - direct) / direct).abs() < 1e-12, "{} vs {}", e, direct);
        }

        #[test]
        fn likelihood_ratio_is_multiplicative_over_concatenation(
            p in 0.01f64..0.99, a in 0.0f64..1.0, x in proptest::collection::vec(0u32..2, 0..15), y in proptest::collection::vec(0u32..2, 0..15)
        ) {
            let kind = NullKind::ParametricBernoulli { p };
            let alt = lr(&[1.0 - a, a]);
            let whole: Vec<u32> = x.iter().chain(&y).copied().collect();
            let e_xy = e_value(&kind, &alt, &whole).unwrap();
            let product = e_value(&kind, &alt, &x).unwrap() * e_value(&kind, &alt, &y).unwrap();
            prop_assert!(e_xy == product || ((e_xy - product) / product).abs() < 1e-12, "{} vs {}", e_xy, product);
        }

        #[test]
        fn mixture_factors_have_null_mean_one((p0, alpha, run) in dmm_case()) {
            // Σ_b p0_b · factor_b = Σ_b predictive_b = 1 after any history: a test martingale.
            let kind = discrete(&p0);
            let base = e_value(&kind, &dmm(&alpha), &run).unwrap();
            let mean: f64 = (0..p0.len() as u32)
                .map(|b| {
                    let mut next = run.clone();
                    next.push(b);
                    p0[b as usize] * e_value(&kind, &dmm(&alpha), &next).unwrap() / base
                })
                .sum();
            prop_assert!((mean - 1.0).abs() < 1e-10, "{}", mean);
        }
    }
}
