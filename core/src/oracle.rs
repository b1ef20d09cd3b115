//! The quantized accuracy oracle: a holdout answers "how accurate are these predictions?" with one
//! of `N` buckets, never the raw accuracy, so each answer leaks at most log2(N) bits.
//!
//! Buckets travel as canonical symbols: big-endian, `ceil(bit_width / 8)` bytes, unused high bits
//! zero. A heavy lane adds hysteresis so that flipping a single prediction cannot walk the answer
//! across a bucket boundary.

use serde::{Deserialize, Serialize};

use crate::hash::{Hash, sha256};

/// Hysteresis width of the fast lane: `|Δraw| < 0.0` never holds, so hysteresis never triggers.
pub const DELTA_SIGMA_FAST: f64 = 0.0;
/// Hysteresis width of the heavy lane.
pub const DELTA_SIGMA_HEAVY: f64 = 0.25;
/// Name of the symbol codec; its SHA-256 is the `codec_hash_hex` of every resolution.
pub const CODEC_ID: &str = "evidenceos.oracle.codec.v1";
/// Tie-breaking rule of [`quantize`], as recorded in an [`OracleResolution`].
pub const TIE_BREAKER: &str = "round_half_even";
/// Locality policy recorded in an [`OracleResolution`].
pub const LOCALITY_POLICY: &str = "none";

/// `ceil(log2 N)`, computed with integers. Meaningful for `N >= 2`; `N` of 0 or 1 gives 0.
pub fn bit_width(num_symbols: u32) -> u32 {
    u32::BITS - num_symbols.saturating_sub(1).leading_zeros()
}

/// `log2 N`: the most one answer of an `N`-symbol oracle can leak.
pub fn leakage_bits(num_symbols: u32) -> f64 {
    f64::from(num_symbols).log2()
}

/// `round(raw · (N − 1))` with ties to even, clamped to `0..=N−1`.
///
/// The caller guarantees `raw` in `[0, 1]`; out-of-range values clamp, NaN maps to bucket 0.
pub fn quantize(raw: f64, num_symbols: u32) -> u32 {
    let max = num_symbols.saturating_sub(1);
    if max == 0 || raw.is_nan() {
        return 0;
    }
    let x = raw * f64::from(max);
    if x <= 0.0 {
        return 0;
    }
    if x >= f64::from(max) {
        return max;
    }
    let floor = x.floor();
    // Exact: the fractional part of a finite f64 is representable.
    let frac = x - floor;
    // 0 <= floor < max <= u32::MAX, so the cast is exact.
    let below = floor as u32;
    let round_up = frac > 0.5 || (frac == 0.5 && below % 2 == 1);
    if round_up { (below + 1).min(max) } else { below }
}

/// Length in bytes of a canonical symbol: `ceil(bit_width(N) / 8)`.
pub fn symbol_len(num_symbols: u32) -> usize {
    bit_width(num_symbols).div_ceil(8) as usize
}

/// Canonical symbol of `bucket`: big-endian, [`symbol_len`] bytes.
///
/// `bucket` must be `< N` (every [`quantize`] output is); a larger value is clamped to `N − 1`
/// so that the output always decodes.
pub fn encode_symbol(bucket: u32, num_symbols: u32) -> Vec<u8> {
    let len = symbol_len(num_symbols);
    let bucket = bucket.min(num_symbols.saturating_sub(1));
    bucket.to_be_bytes()[4 - len..].to_vec()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolError {
    /// `N < 2`: no symbol alphabet.
    BadNumSymbols,
    /// The symbol is not exactly [`symbol_len`] bytes.
    WrongLength { expected: usize, got: usize },
    /// A bit above `bit_width` is set in the high byte.
    HighBitsSet,
    /// The decoded value is `>= N`.
    OutOfRange { value: u32 },
}

impl std::fmt::Display for SymbolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::BadNumSymbols => "bad number of symbols",
            Self::WrongLength { .. } => "wrong symbol length",
            Self::HighBitsSet => "unused high bits set",
            Self::OutOfRange { .. } => "symbol out of range",
        })
    }
}

impl std::error::Error for SymbolError {}

/// Parses a canonical symbol, rejecting every non-canonical encoding.
pub fn decode_symbol(bytes: &[u8], num_symbols: u32) -> Result<u32, SymbolError> {
    if num_symbols < 2 {
        return Err(SymbolError::BadNumSymbols);
    }
    let len = symbol_len(num_symbols);
    if bytes.len() != len {
        return Err(SymbolError::WrongLength { expected: len, got: bytes.len() });
    }
    let unused = len as u32 * 8 - bit_width(num_symbols);
    if unused > 0 && bytes[0] >> (8 - unused) != 0 {
        return Err(SymbolError::HighBitsSet);
    }
    let value = bytes.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
    if value >= num_symbols {
        return Err(SymbolError::OutOfRange { value });
    }
    Ok(value)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OracleError {
    /// `N < 2`.
    BadNumSymbols,
    /// `delta_sigma` is negative or not finite.
    BadDeltaSigma,
    /// Labels are empty or contain a byte other than 0/1.
    BadLabels,
    /// Predictions are not exactly one 0/1 byte per label. Nothing was recorded.
    BadPredictions,
    /// `max_calls` answers were already given. Nothing was recorded.
    TooManyCalls,
}

impl std::fmt::Display for OracleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::BadNumSymbols => "bad number of symbols",
            Self::BadDeltaSigma => "bad delta sigma",
            Self::BadLabels => "bad labels",
            Self::BadPredictions => "bad predictions",
            Self::TooManyCalls => "too many calls",
        })
    }
}

impl std::error::Error for OracleError {}

/// Everything that fixes how raw accuracies become symbols; its hash is bound into NullSpecs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OracleResolution {
    pub num_symbols: u32,
    pub bit_width: u32,
    pub codec_hash_hex: String,
    pub calibration_manifest_hash_hex: Option<String>,
    pub calibrated_at_epoch: u64,
    pub ttl_epochs: u64,
    pub delta_sigma: f64,
    pub tie_breaker: String,
    pub locality_policy: String,
}

/// SHA-256 of [`CODEC_ID`].
pub fn codec_hash() -> Hash {
    sha256(CODEC_ID.as_bytes())
}

impl OracleResolution {
    /// Fails on `N < 2` or a negative/non-finite `delta_sigma` (which canonical JSON could not
    /// represent faithfully: serde_json writes NaN as `null`).
    pub fn new(
        num_symbols: u32,
        calibration_manifest_hash: Option<Hash>,
        calibrated_at_epoch: u64,
        ttl_epochs: u64,
        delta_sigma: f64,
    ) -> Result<Self, OracleError> {
        if num_symbols < 2 {
            return Err(OracleError::BadNumSymbols);
        }
        if !delta_sigma.is_finite() || delta_sigma < 0.0 {
            return Err(OracleError::BadDeltaSigma);
        }
        Ok(Self {
            num_symbols,
            bit_width: bit_width(num_symbols),
            codec_hash_hex: hex::encode(codec_hash()),
            calibration_manifest_hash_hex: calibration_manifest_hash.map(hex::encode),
            calibrated_at_epoch,
            ttl_epochs,
            delta_sigma,
            tie_breaker: TIE_BREAKER.to_owned(),
            locality_policy: LOCALITY_POLICY.to_owned(),
        })
    }

    /// Canonical JSON bytes (keys sorted, compact).
    pub fn canonical_json(&self) -> Vec<u8> {
        // Strings, integers, an f64 and an Option: always representable as JSON.
        crate::canonical::to_vec(self).expect("OracleResolution is always representable as JSON")
    }

    /// SHA-256 of the canonical JSON.
    pub fn hash(&self) -> Hash {
        sha256(&self.canonical_json())
    }
}

struct PreviousCall {
    predictions: Vec<u8>,
    raw: f64,
}

/// Answers accuracy queries against holdout labels with quantized buckets.
pub struct AccuracyOracle {
    labels: Vec<u8>,
    num_symbols: u32,
    delta_sigma: f64,
    max_calls: u32,
    buckets: Vec<u32>,
    previous: Option<PreviousCall>,
}

impl std::fmt::Debug for AccuracyOracle {
    // Never print the holdout labels or predictions.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccuracyOracle")
            .field("num_labels", &self.labels.len())
            .field("num_symbols", &self.num_symbols)
            .field("delta_sigma", &self.delta_sigma)
            .field("max_calls", &self.max_calls)
            .field("buckets", &self.buckets)
            .finish_non_exhaustive()
    }
}

impl AccuracyOracle {
    /// `labels` must be non-empty and all 0/1; `N >= 2`; `delta_sigma` finite and `>= 0`.
    pub fn new(labels: Vec<u8>, num_symbols: u32, delta_sigma: f64, max_calls: u32) -> Result<Self, OracleError> {
        if labels.is_empty() || labels.iter().any(|&l| l > 1) {
            return Err(OracleError::BadLabels);
        }
        if num_symbols < 2 {
            return Err(OracleError::BadNumSymbols);
        }
        if !delta_sigma.is_finite() || delta_sigma < 0.0 {
            return Err(OracleError::BadDeltaSigma);
        }
        Ok(Self { labels, num_symbols, delta_sigma, max_calls, buckets: Vec::new(), previous: None })
    }

    /// One oracle call. Predictions are validated before the call budget, and a refused call
    /// changes nothing.
    ///
    /// Hysteresis: when there is a previous call, the predictions differ from that call's in at
    /// most one position and `|raw − previous raw| < delta_sigma`, the previous *returned* bucket
    /// is returned again. The comparison always uses the previous call's actual predictions and
    /// raw accuracy, not the raw accuracy that produced the repeated bucket.
    pub fn query(&mut self, predictions: &[u8]) -> Result<u32, OracleError> {
        if predictions.len() != self.labels.len() || predictions.iter().any(|&p| p > 1) {
            return Err(OracleError::BadPredictions);
        }
        if self.buckets.len() >= self.max_calls as usize {
            return Err(OracleError::TooManyCalls);
        }
        let matches = predictions.iter().zip(&self.labels).filter(|(p, l)| p == l).count();
        let raw = matches as f64 / self.labels.len() as f64;
        let mut bucket = quantize(raw, self.num_symbols);
        if let (Some(previous), Some(&previous_bucket)) = (&self.previous, self.buckets.last()) {
            let differing = predictions.iter().zip(&previous.predictions).filter(|(a, b)| a != b).count();
            if differing <= 1 && (raw - previous.raw).abs() < self.delta_sigma {
                bucket = previous_bucket;
            }
        }
        self.buckets.push(bucket);
        self.previous = Some(PreviousCall { predictions: predictions.to_vec(), raw });
        Ok(bucket)
    }

    /// Buckets returned so far, in call order.
    pub fn buckets(&self) -> &[u32] {
        &self.buckets
    }

    /// Number of answered calls.
    pub fn calls(&self) -> u32 {
        // buckets.len() <= max_calls, a u32.
        self.buckets.len() as u32
    }

    pub fn num_symbols(&self) -> u32 {
        self.num_symbols
    }

    pub fn delta_sigma(&self) -> f64 {
        self.delta_sigma
    }

    pub fn max_calls(&self) -> u32 {
        self.max_calls
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bit_width_is_ceil_log2() {
        let cases = [
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (8, 3),
            (9, 4),
            (256, 8),
            (257, 9),
            (1 << 31, 31),
            ((1 << 31) + 1, 32),
            (u32::MAX, 32),
        ];
        for (n, w) in cases {
            assert_eq!(bit_width(n), w, "N = {n}");
        }
    }

    #[test]
    fn leakage_bits_is_log2() {
        assert_eq!(leakage_bits(2), 1.0);
        assert_eq!(leakage_bits(8), 3.0);
        assert!((leakage_bits(3) - 1.584_962_500_721_156).abs() < 1e-15);
    }

    #[test]
    fn quantize_rounds_half_to_even() {
        // raw · (N − 1) lands exactly on .5 in each of these.
        assert_eq!(quantize(0.5, 2), 0); // 0.5 -> 0
        assert_eq!(quantize(0.5, 4), 2); // 1.5 -> 2
        assert_eq!(quantize(0.25, 3), 0); // 0.5 -> 0
        assert_eq!(quantize(0.75, 3), 2); // 1.5 -> 2
        assert_eq!(quantize(0.125, 5), 0); // 0.5 -> 0
        assert_eq!(quantize(0.375, 5), 2); // 1.5 -> 2
        assert_eq!(quantize(0.625, 5), 2); // 2.5 -> 2
        assert_eq!(quantize(0.875, 5), 4); // 3.5 -> 4
    }

    #[test]
    fn quantize_rounds_non_ties_to_nearest_and_clamps() {
        assert_eq!(quantize(0.3, 2), 0);
        assert_eq!(quantize(0.7, 2), 1);
        assert_eq!(quantize(0.26, 3), 1); // 0.52
        assert_eq!(quantize(0.74, 3), 1); // 1.48
        assert_eq!(quantize(0.0, 10), 0);
        assert_eq!(quantize(1.0, 10), 9);
        assert_eq!(quantize(1.0, u32::MAX), u32::MAX - 1);
        assert_eq!(quantize(-0.1, 10), 0);
        assert_eq!(quantize(1.1, 10), 9);
        assert_eq!(quantize(f64::NAN, 10), 0);
        assert_eq!(quantize(0.7, 1), 0);
        assert_eq!(quantize(0.7, 0), 0);
    }

    #[test]
    fn symbols_are_big_endian_and_minimal() {
        assert_eq!(encode_symbol(1, 2), vec![1]);
        assert_eq!(encode_symbol(255, 256), vec![255]);
        assert_eq!(encode_symbol(256, 257), vec![1, 0]);
        assert_eq!(encode_symbol(0x0102_0304, u32::MAX), vec![1, 2, 3, 4]);
        assert_eq!(encode_symbol(0x0001_0203, 1 << 24), vec![1, 2, 3]);
        // Out-of-range buckets clamp so the output still decodes.
        assert_eq!(encode_symbol(9, 5), vec![4]);
    }

    #[test]
    fn decode_rejects_non_canonical_symbols() {
        assert_eq!(decode_symbol(&[], 5), Err(SymbolError::WrongLength { expected: 1, got: 0 }));
        assert_eq!(decode_symbol(&[0, 1], 5), Err(SymbolError::WrongLength { expected: 1, got: 2 }));
        // N = 5: 3 bits used, so 0x08 sets an unused bit; 5..=7 fit the width but are >= N.
        assert_eq!(decode_symbol(&[0x08], 5), Err(SymbolError::HighBitsSet));
        assert_eq!(decode_symbol(&[0x80], 5), Err(SymbolError::HighBitsSet));
        assert_eq!(decode_symbol(&[5], 5), Err(SymbolError::OutOfRange { value: 5 }));
        assert_eq!(decode_symbol(&[4], 5), Ok(4));
        // N = 257: 9 bits in 2 bytes, so the high byte may only be 0 or 1.
        assert_eq!(decode_symbol(&[2, 0], 257), Err(SymbolError::HighBitsSet));
        assert_eq!(decode_symbol(&[1, 1], 257), Err(SymbolError::OutOfRange { value: 257 }));
        assert_eq!(decode_symbol(&[1, 0], 257), Ok(256));
        // N = 256: all 8 bits used, nothing to check but the range.
        assert_eq!(decode_symbol(&[255], 256), Ok(255));
        assert_eq!(decode_symbol(&[0], 1), Err(SymbolError::BadNumSymbols));
        assert_eq!(decode_symbol(&[], 0), Err(SymbolError::BadNumSymbols));
        assert_eq!(SymbolError::HighBitsSet.to_string(), "unused high bits set");
    }

    #[test]
    fn resolution_canonical_json_is_pinned() {
        let resolution = OracleResolution::new(5, Some([0xab; 32]), 7, 100, DELTA_SIGMA_HEAVY).unwrap();
        assert_eq!(resolution.bit_width, 3);
        let json = String::from_utf8(resolution.canonical_json()).unwrap();
        assert_eq!(json, RESOLUTION_SNAPSHOT);
        assert_eq!(resolution.hash(), sha256(RESOLUTION_SNAPSHOT.as_bytes()));
        let back: OracleResolution = serde_json::from_str(&json).unwrap();
        assert_eq!(back, resolution);

        let fast = OracleResolution::new(2, None, 0, 1, DELTA_SIGMA_FAST).unwrap();
        assert_eq!(
            String::from_utf8(fast.canonical_json()).unwrap(),
            concat!(
                r#"{"bit_width":1,"calibrated_at_epoch":0,"calibration_manifest_hash_hex":null,"#,
                r#""codec_hash_hex":"#,
                r#""0661b541914d3228f6b967c83f817a19bff9065037f405d3e5cdcc0d424cb790","#,
                r#""delta_sigma":0.0,"locality_policy":"none","num_symbols":2,"#,
                r#""tie_breaker":"round_half_even","ttl_epochs":1}"#
            )
        );
    }

    // Generated once; must never change (the hash is bound into signed NullSpecs).
    const RESOLUTION_SNAPSHOT: &str = concat!(
        r#"{"bit_width":3,"calibrated_at_epoch":7,"#,
        r#""calibration_manifest_hash_hex":"abababababababababababababababababababababababababababababababab","#,
        r#""codec_hash_hex":"0661b541914d3228f6b967c83f817a19bff9065037f405d3e5cdcc0d424cb790","#,
        r#""delta_sigma":0.25,"locality_policy":"none","num_symbols":5,"#,
        r#""tie_breaker":"round_half_even","ttl_epochs":100}"#
    );

    #[test]
    fn codec_hash_is_sha256_of_the_codec_id() {
        // `printf %s evidenceos.oracle.codec.v1 | sha256sum`
        assert_eq!(hex::encode(codec_hash()), "0661b541914d3228f6b967c83f817a19bff9065037f405d3e5cdcc0d424cb790");
    }

    #[test]
    fn resolution_rejects_bad_parameters() {
        assert_eq!(OracleResolution::new(1, None, 0, 0, 0.0), Err(OracleError::BadNumSymbols));
        assert_eq!(OracleResolution::new(4, None, 0, 0, -0.1), Err(OracleError::BadDeltaSigma));
        assert_eq!(OracleResolution::new(4, None, 0, 0, f64::NAN), Err(OracleError::BadDeltaSigma));
        assert_eq!(OracleResolution::new(4, None, 0, 0, f64::INFINITY), Err(OracleError::BadDeltaSigma));
    }

    fn flip(predictions: &[u8], positions: &[usize]) -> Vec<u8> {
        let mut out = predictions.to_vec();
        for &i in positions {
            out[i] ^= 1;
        }
        out
    }

    #[test]
    fn bad_predictions_change_nothing() {
        let mut oracle = AccuracyOracle::new(vec![0, 1, 1, 0], 5, DELTA_SIGMA_HEAVY, 1).unwrap();
        for bad in [&[0u8, 1, 1][..], &[0, 1, 1, 0, 0], &[0, 1, 2, 0], &[]] {
            assert_eq!(oracle.query(bad), Err(OracleError::BadPredictions));
        }
        assert_eq!(oracle.calls(), 0);
        assert!(oracle.buckets().is_empty());
        assert_eq!(oracle.query(&[0, 1, 1, 0]), Ok(4));
        // Budget exhausted: refused, and still nothing recorded.
        assert_eq!(oracle.query(&[0, 1, 1, 0]), Err(OracleError::TooManyCalls));
        assert_eq!(oracle.query(&[0, 1, 1]), Err(OracleError::BadPredictions));
        assert_eq!(oracle.calls(), 1);
        assert_eq!(oracle.buckets(), &[4]);
    }

    #[test]
    fn zero_max_calls_answers_nothing() {
        let mut oracle = AccuracyOracle::new(vec![1], 2, DELTA_SIGMA_FAST, 0).unwrap();
        assert_eq!(oracle.query(&[1]), Err(OracleError::TooManyCalls));
        assert_eq!(oracle.calls(), 0);
    }

    #[test]
    fn constructor_validates() {
        assert_eq!(AccuracyOracle::new(vec![], 2, 0.0, 1).unwrap_err(), OracleError::BadLabels);
        assert_eq!(AccuracyOracle::new(vec![0, 2], 2, 0.0, 1).unwrap_err(), OracleError::BadLabels);
        assert_eq!(AccuracyOracle::new(vec![0], 1, 0.0, 1).unwrap_err(), OracleError::BadNumSymbols);
        assert_eq!(AccuracyOracle::new(vec![0], 2, f64::NAN, 1).unwrap_err(), OracleError::BadDeltaSigma);
        assert_eq!(AccuracyOracle::new(vec![0], 2, -1.0, 1).unwrap_err(), OracleError::BadDeltaSigma);
    }

    #[test]
    fn heavy_lane_hysteresis_uses_the_previous_actual_call() {
        let labels = vec![1, 1, 1, 1, 1, 1, 1, 1];
        let mut oracle = AccuracyOracle::new(labels.clone(), 5, DELTA_SIGMA_HEAVY, 10).unwrap();
        let p1 = flip(&labels, &[0, 1, 2]); // raw 5/8 = 0.625 -> 2.5 -> 2
        assert_eq!(oracle.query(&p1), Ok(2));
        let p2 = flip(&labels, &[0, 1]); // raw 0.75 -> 3, but 1 flip and |Δ| = 0.125 < 0.25
        assert_eq!(oracle.query(&p2), Ok(2));
        let p3 = flip(&labels, &[0]); // raw 0.875 -> 3.5 -> 4; Δ vs call 2's actual raw (0.75) = 0.125
        assert_eq!(oracle.query(&p3), Ok(2));
        let p4 = flip(&labels, &[0, 1, 2]); // 2 positions differ from p3: no hysteresis, 0.625 -> 2
        assert_eq!(oracle.query(&p4), Ok(2));
        let p5 = labels.clone(); // 3 positions differ: raw 1.0 -> 4
        assert_eq!(oracle.query(&p5), Ok(4));
        let p6 = p5.clone(); // identical predictions: Δ = 0 < 0.25, previous bucket (4)
        assert_eq!(oracle.query(&p6), Ok(4));
        assert_eq!(oracle.buckets(), &[2, 2, 2, 2, 4, 4]);
        assert_eq!(oracle.calls(), 6);
    }

    #[test]
    fn heavy_lane_hysteresis_needs_a_small_raw_change() {
        // 2 labels: one flip moves raw by 0.5 >= 0.25, so no hysteresis.
        let mut oracle = AccuracyOracle::new(vec![1, 1], 3, DELTA_SIGMA_HEAVY, 10).unwrap();
        assert_eq!(oracle.query(&[1, 1]), Ok(2));
        assert_eq!(oracle.query(&[0, 1]), Ok(1)); // raw 0.5 -> 1.0 -> 1
        assert_eq!(oracle.buckets(), &[2, 1]);
    }

    #[test]
    fn fast_lane_never_applies_hysteresis() {
        let labels = vec![1, 1, 1, 1, 1, 1, 1, 1];
        let mut oracle = AccuracyOracle::new(labels.clone(), 5, DELTA_SIGMA_FAST, 10).unwrap();
        assert_eq!(oracle.query(&flip(&labels, &[0, 1, 2])), Ok(2));
        assert_eq!(oracle.query(&flip(&labels, &[0, 1])), Ok(3));
        assert_eq!(oracle.query(&flip(&labels, &[0, 1])), Ok(3));
        assert_eq!(oracle.query(&flip(&labels, &[0])), Ok(4));
        assert_eq!(oracle.buckets(), &[2, 3, 3, 4]);
    }

    #[test]
    fn debug_never_prints_labels() {
        let oracle = AccuracyOracle::new(vec![1, 0, 1, 1, 0, 1, 0, 0, 1], 4, 0.0, 3).unwrap();
        let text = format!("{oracle:?}");
        assert!(text.contains("num_labels: 9"));
        assert!(!text.contains("[1, 0"));
    }

    proptest! {
        #[test]
        fn quantize_matches_std_round_ties_even(raw in 0.0f64..=1.0, n in 2u32..100_000) {
            let expected = (raw * f64::from(n - 1)).round_ties_even().clamp(0.0, f64::from(n - 1)) as u32;
            prop_assert_eq!(quantize(raw, n), expected);
        }

        #[test]
        fn quantize_returns_k_for_grid_points(k in 0u32..1000, n in 2u32..1001) {
            let k = k % n;
            prop_assert_eq!(quantize(f64::from(k) / f64::from(n - 1), n), k);
        }

        #[test]
        fn symbols_round_trip(n in 2u32.., bucket in any::<u32>()) {
            let bucket = bucket % n;
            let bytes = encode_symbol(bucket, n);
            prop_assert_eq!(bytes.len(), symbol_len(n));
            prop_assert_eq!(decode_symbol(&bytes, n), Ok(bucket));
        }

        #[test]
        fn decode_never_panics_and_accepts_only_canonical(n in any::<u32>(), bytes in proptest::collection::vec(any::<u8>(), 0..6)) {
            if let Ok(value) = decode_symbol(&bytes, n) {
                prop_assert!(value < n);
                prop_assert_eq!(encode_symbol(value, n), bytes);
            }
        }

        #[test]
        fn bad_predictions_are_never_recorded(labels in proptest::collection::vec(0u8..=1, 1..20), predictions in proptest::collection::vec(any::<u8>(), 0..20)) {
            let mut oracle = AccuracyOracle::new(labels.clone(), 7, DELTA_SIGMA_HEAVY, 5).unwrap();
            let valid = predictions.len() == labels.len() && predictions.iter().all(|&p| p <= 1);
            let result = oracle.query(&predictions);
            prop_assert_eq!(result.is_ok(), valid);
            prop_assert_eq!(oracle.calls(), u32::from(valid));
        }
    }
}
