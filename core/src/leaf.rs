//! Where a leaf is in `etl.log`. Replies carry this instead of capsule bytes, which the kernel
//! does not keep; the runtime reads them (`etl::read_capsule`). A leaf module, so `request` can
//! name it without depending on the log.

use crate::hash::Hash;

/// Where a durable leaf is in `etl.log`, and the capsule hash its payload must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafLocation {
    pub index: u64,
    /// Offset of the leaf's frame (its length field).
    pub offset: u64,
    /// Payload bytes; the frame adds its length field and checksum.
    pub len: u32,
    pub capsule_hash: Hash,
}
