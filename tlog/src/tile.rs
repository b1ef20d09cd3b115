//! Tile and entry-bundle coordinates and their paths (c2sp.org/tlog-tiles, not the Go sumdb layout):
//! `tile/<L>/<N>[.p/<W>]` and `tile/entries/<N>[.p/<W>]`, with `<N>` in 3-digit elements, all but
//! the last prefixed `x` (1234067 → `x001/x234/067`).

use std::fmt::Write as _;

/// Tile height in levels of the Merkle tree: a tile holds 2^8 hashes.
pub const TILE_HEIGHT: u32 = 8;
/// Hashes in a full tile (entries in a full bundle).
pub const FULL_WIDTH: u16 = 1 << TILE_HEIGHT;
/// Highest level a tile path may name (the spec's bound; a u64-sized log uses levels 0..=7).
pub const MAX_LEVEL: u8 = 63;
/// 3-digit path elements needed for any u64 index (u64::MAX has 20 digits).
const MAX_INDEX_ELEMENTS: usize = 7;

/// Why tile coordinates or a path were rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TileError {
    /// Level above [`MAX_LEVEL`].
    LevelOutOfRange(u8),
    /// Width outside 1..=256.
    WidthOutOfRange(u16),
    /// A path not of the form `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]` in canonical spelling.
    MalformedPath,
}

impl std::fmt::Display for TileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TileError::LevelOutOfRange(l) => write!(f, "tile level {l} exceeds {MAX_LEVEL}"),
            TileError::WidthOutOfRange(w) => write!(f, "tile width {w} outside 1..={FULL_WIDTH}"),
            TileError::MalformedPath => f.write_str("not a canonical tile path"),
        }
    }
}

impl std::error::Error for TileError {}

fn check_width(width: u16) -> Result<u16, TileError> {
    if width == 0 || width > FULL_WIDTH {
        return Err(TileError::WidthOutOfRange(width));
    }
    Ok(width)
}

/// A hash tile: level, index within the level, width (256 = full, less = the right edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TileId {
    level: u8,
    index: u64,
    width: u16,
}

impl TileId {
    pub fn new(level: u8, index: u64, width: u16) -> Result<Self, TileError> {
        if level > MAX_LEVEL {
            return Err(TileError::LevelOutOfRange(level));
        }
        Ok(Self { level, index, width: check_width(width)? })
    }

    pub fn level(&self) -> u8 {
        self.level
    }

    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn width(&self) -> u16 {
        self.width
    }

    pub fn is_full(&self) -> bool {
        self.width == FULL_WIDTH
    }

    /// Size of the tile's contents: 32 bytes per hash.
    pub fn byte_len(&self) -> usize {
        usize::from(self.width) * 32
    }

    /// The object path, e.g. `tile/0/x001/x234/067.p/5`.
    pub fn path(&self) -> String {
        let mut path = format!("tile/{}/", self.level);
        push_index_and_width(&mut path, self.index, self.width);
        path
    }
}

/// An entry bundle: index (same numbering as level-0 tiles) and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BundleId {
    index: u64,
    width: u16,
}

impl BundleId {
    pub fn new(index: u64, width: u16) -> Result<Self, TileError> {
        Ok(Self { index, width: check_width(width)? })
    }

    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn width(&self) -> u16 {
        self.width
    }

    pub fn is_full(&self) -> bool {
        self.width == FULL_WIDTH
    }

    /// The object path, e.g. `tile/entries/x001/x234/067`.
    pub fn path(&self) -> String {
        let mut path = String::from("tile/entries/");
        push_index_and_width(&mut path, self.index, self.width);
        path
    }
}

/// Any object under `tile/`, as a server resolving a request path sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TilePath {
    Hashes(TileId),
    Entries(BundleId),
}

impl TilePath {
    /// Parses a path relative to the log prefix (no leading `/`), accepting only the canonical
    /// spelling so that one object has one path.
    pub fn parse(path: &str) -> Result<Self, TileError> {
        let rest = path.strip_prefix("tile/").ok_or(TileError::MalformedPath)?;
        let (head, rest) = rest.split_once('/').ok_or(TileError::MalformedPath)?;
        let (index, width) = parse_index_and_width(rest)?;
        if head == "entries" {
            return Ok(TilePath::Entries(BundleId::new(index, width)?));
        }
        let level = crate::parse_canonical_decimal(head).ok_or(TileError::MalformedPath)?;
        let level = u8::try_from(level).map_err(|_| TileError::MalformedPath)?;
        Ok(TilePath::Hashes(TileId::new(level, index, width)?))
    }

    pub fn path(&self) -> String {
        match self {
            TilePath::Hashes(tile) => tile.path(),
            TilePath::Entries(bundle) => bundle.path(),
        }
    }
}

/// Appends `<N>[.p/<W>]`.
fn push_index_and_width(out: &mut String, index: u64, width: u16) {
    let mut groups = [0u64; MAX_INDEX_ELEMENTS];
    let (mut n, mut count) = (index, 0);
    loop {
        groups[count] = n % 1000;
        count += 1;
        n /= 1000;
        if n == 0 {
            break;
        }
    }
    for (i, group) in groups[..count].iter().rev().enumerate() {
        let prefix = if i + 1 < count { "x" } else { "" };
        let separator = if i + 1 < count { "/" } else { "" };
        write!(out, "{prefix}{group:03}{separator}").expect("tile: writing to a String cannot fail");
    }
    if width != FULL_WIDTH {
        write!(out, ".p/{width}").expect("tile: writing to a String cannot fail");
    }
}

/// Parses `<N>[.p/<W>]`; a full tile has width 256, which is never spelled out.
fn parse_index_and_width(s: &str) -> Result<(u64, u16), TileError> {
    let (index, width) = match s.split_once(".p/") {
        Some((index, width)) => {
            let width = crate::parse_canonical_decimal(width).ok_or(TileError::MalformedPath)?;
            if width == 0 || width >= u64::from(FULL_WIDTH) {
                return Err(TileError::MalformedPath);
            }
            (index, width as u16)
        }
        None => (s, FULL_WIDTH),
    };
    Ok((parse_index(index).ok_or(TileError::MalformedPath)?, width))
}

/// Parses `x001/x234/067`: 3-digit groups, all but the last prefixed `x`, no leading zero group.
fn parse_index(s: &str) -> Option<u64> {
    let elements: Vec<&str> = s.split('/').collect();
    if elements.len() > MAX_INDEX_ELEMENTS {
        return None;
    }
    let (last, prefixed) = elements.split_last()?;
    let mut index: u64 = 0;
    for (i, element) in prefixed.iter().enumerate() {
        let group = three_digits(element.strip_prefix('x')?)?;
        if i == 0 && group == 0 {
            return None;
        }
        index = index.checked_mul(1000)?.checked_add(group)?;
    }
    index.checked_mul(1000)?.checked_add(three_digits(last)?)
}

fn three_digits(s: &str) -> Option<u64> {
    (s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
}

/// Reads tile contents (`width` × 32 bytes) from wherever the caller keeps them: a directory, a
/// bucket, an HTTP server or memory. Contents are untrusted until a proof built from them
/// verifies against a signed root.
pub trait TileReader {
    type Error;

    fn read_tile(&mut self, tile: TileId) -> Result<Vec<u8>, Self::Error>;
}

/// Splits a tile's bytes into its hashes; `Err((tile, len))` when the length is not width × 32.
pub(crate) fn hashes_of(id: TileId, data: &[u8]) -> Result<Vec<crate::Hash>, (TileId, usize)> {
    if data.len() != id.byte_len() {
        return Err((id, data.len()));
    }
    Ok(data.chunks_exact(32).map(|c| c.try_into().expect("tile: chunks are 32 bytes")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tile(level: u8, index: u64, width: u16) -> TileId {
        TileId::new(level, index, width).unwrap()
    }

    #[test]
    fn paths_follow_the_spec_examples() {
        assert_eq!(tile(0, 1234067, 256).path(), "tile/0/x001/x234/067");
        assert_eq!(tile(4, 1234067, 1).path(), "tile/4/x001/x234/067.p/1");
        assert_eq!(tile(0, 0, 256).path(), "tile/0/000");
        assert_eq!(tile(1, 999, 255).path(), "tile/1/999.p/255");
        assert_eq!(tile(2, 1000, 256).path(), "tile/2/x001/000");
        assert_eq!(tile(63, u64::MAX, 256).path(), "tile/63/x018/x446/x744/x073/x709/x551/615");
        assert_eq!(BundleId::new(1234067, 256).unwrap().path(), "tile/entries/x001/x234/067");
        assert_eq!(BundleId::new(5, 112).unwrap().path(), "tile/entries/005.p/112");
    }

    #[test]
    fn coordinates_are_bounded() {
        assert_eq!(TileId::new(64, 0, 256), Err(TileError::LevelOutOfRange(64)));
        assert_eq!(TileId::new(0, 0, 0), Err(TileError::WidthOutOfRange(0)));
        assert_eq!(TileId::new(0, 0, 257), Err(TileError::WidthOutOfRange(257)));
        assert_eq!(BundleId::new(0, 0), Err(TileError::WidthOutOfRange(0)));
    }

    #[test]
    fn parse_accepts_only_canonical_paths() {
        assert_eq!(TilePath::parse("tile/0/x001/x234/067"), Ok(TilePath::Hashes(tile(0, 1234067, 256))));
        assert_eq!(
            TilePath::parse("tile/entries/x001/x234/067.p/9"),
            Ok(TilePath::Entries(BundleId::new(1234067, 9).unwrap()))
        );
        for bad in [
            "tile/0/x000/005",  // leading zero group
            "tile/00/005",      // leading zero level
            "tile/0/005.p/256", // a full tile is never spelled partial
            "tile/0/005.p/0",
            "tile/0/005.p/05",
            "tile/0/001/234",   // first group lacks its x
            "tile/0/x001/x234", // last group has an x
            "tile/0/1234",      // not 3-digit groups
            "tile/0/12",
            "tile/0/",
            "tile/8/0/x001/x234/067", // the Go sumdb layout (height element)
            "tile/data/000",
            "/tile/0/000",
            "tile/0/x018/x446/x744/x073/x709/x551/616", // u64::MAX + 1
            "tile/0/x001/x001/x001/x001/x001/x001/x001/000",
            "tile/0/000/",
            "checkpoint",
        ] {
            assert_eq!(TilePath::parse(bad), Err(TileError::MalformedPath), "{bad}");
        }
        assert_eq!(TilePath::parse("tile/64/005"), Err(TileError::LevelOutOfRange(64)));
    }

    proptest! {
        #[test]
        fn tile_paths_round_trip(level in 0u8..=MAX_LEVEL, index in any::<u64>(), width in 1u16..=FULL_WIDTH) {
            let id = tile(level, index, width);
            prop_assert_eq!(TilePath::parse(&id.path()), Ok(TilePath::Hashes(id)));
            let bundle = BundleId::new(index, width).unwrap();
            prop_assert_eq!(TilePath::parse(&bundle.path()), Ok(TilePath::Entries(bundle)));
        }

        #[test]
        fn parse_never_panics(path in "tile/[0-9a-z./x]{0,40}") {
            if let Ok(parsed) = TilePath::parse(&path) {
                prop_assert_eq!(parsed.path(), path);
            }
        }
    }
}
