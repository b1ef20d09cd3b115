//! The ETL in the transparency-log ecosystem's formats (C2SP): signed notes, checkpoints,
//! witness cosignatures, tiles and entry bundles, proofs from tiles, and the witness protocol's
//! messages.
//!
//! Pure: no files, sockets or clocks; time is passed in and tiles are read through
//! [`TileReader`], which the caller implements over a directory, a bucket or HTTP.
#![forbid(unsafe_code)]

pub mod builder;
pub mod checkpoint;
pub mod cosignature;
pub mod note;
pub mod proof;
pub mod tile;
pub mod witness;

pub use evidenceos_core::merkle::Hash;
pub use tile::{BundleId, TileId, TilePath, TileReader};

/// ASCII decimal without leading zeros ("0" alone for zero) that fits in 64 bits: the one
/// spelling of sizes, levels and widths in every format here.
pub(crate) fn parse_canonical_decimal(s: &str) -> Option<u64> {
    let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if !canonical {
        return None;
    }
    s.parse().ok()
}
