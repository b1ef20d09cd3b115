//! EvidenceOS command-line binaries; see `src/bin/`.
#![forbid(unsafe_code)]
