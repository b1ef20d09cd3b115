//! Record framing shared by `etl.log` and `journal.log` (SPEC §3):
//! `le32 len ‖ payload ‖ le32 CRC-32(IEEE)(len bytes ‖ payload)`, no file header.
//!
//! A damaged *final* record is a torn tail (an append that a crash cut short): it is reported so
//! recovery can truncate it. A damaged record with any intact record after it is corruption:
//! acknowledged data would be lost by truncating, so the scan refuses and names the offset.

/// Largest payload a record may carry. Capsules and journal entries are far smaller; the bound
/// keeps a corrupted length field from being trusted for a huge allocation or CRC run.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// Bytes of framing around each payload.
pub const FRAME_OVERHEAD: usize = 8;

/// Appends one framed record to `out`.
pub fn encode_into(payload: &[u8], out: &mut Vec<u8>) {
    assert!(payload.len() <= MAX_PAYLOAD_BYTES, "record payload over limit");
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(payload);
    out.reserve(payload.len() + FRAME_OVERHEAD);
    out.extend_from_slice(&len);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
}

/// One framed record.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + FRAME_OVERHEAD);
    encode_into(payload, &mut out);
    out
}

/// A record found by [`scan`], borrowing its payload from the scanned buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Byte offset of the record's length field.
    pub offset: u64,
    pub payload: &'a [u8],
}

/// The intact prefix of a log and what follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan<'a> {
    pub records: Vec<Record<'a>>,
    /// Length of the intact prefix: where the file must be truncated to if a tail was torn.
    pub valid_len: u64,
    /// Bytes after `valid_len` that belong to a torn final record (0 when the log is clean).
    pub torn_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// A damaged record is followed by an intact one: truncating would drop acknowledged data.
    Corrupt { offset: u64, reason: DamageReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageReason {
    BadChecksum,
    LengthOverLimit,
    Truncated,
}

impl std::fmt::Display for DamageReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::BadChecksum => "bad checksum",
            Self::LengthOverLimit => "length over limit",
            Self::Truncated => "truncated record",
        })
    }
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Corrupt { offset, reason } => write!(
                f,
                "corrupt record at byte offset {offset} ({reason}) followed by intact records; refusing to truncate acknowledged data"
            ),
        }
    }
}

impl std::error::Error for ScanError {}

/// Decodes the record at the start of `bytes` (a leaf read back by its offset).
pub fn decode_record(bytes: &[u8]) -> Result<&[u8], DamageReason> {
    record_at(bytes, 0)
}

/// Decodes the record at `offset`, or says why it is damaged.
fn record_at(bytes: &[u8], offset: usize) -> Result<&[u8], DamageReason> {
    let rest = &bytes[offset..];
    if rest.len() < FRAME_OVERHEAD {
        return Err(DamageReason::Truncated);
    }
    let len_bytes: [u8; 4] = rest[..4].try_into().expect("slice of 4");
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > MAX_PAYLOAD_BYTES {
        return Err(DamageReason::LengthOverLimit);
    }
    if rest.len() < FRAME_OVERHEAD + len {
        return Err(DamageReason::Truncated);
    }
    let payload = &rest[4..4 + len];
    let stored: [u8; 4] = rest[4 + len..8 + len].try_into().expect("slice of 4");
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len_bytes);
    crc.update(payload);
    if crc.finalize() != u32::from_le_bytes(stored) {
        return Err(DamageReason::BadChecksum);
    }
    Ok(payload)
}

/// Reads one record from `reader` into `payload` (replacing its contents): the streaming
/// counterpart of [`scan`] for a prefix known to be whole (nothing there may be torn).
/// `Ok(false)` at a clean end of input.
pub fn read_record(reader: &mut impl std::io::Read, payload: &mut Vec<u8>) -> Result<bool, ReadError> {
    let mut len_bytes = [0u8; 4];
    // The first byte tells a clean end (nothing more) from a record.
    loop {
        match reader.read(&mut len_bytes[..1]) {
            Ok(0) => return Ok(false),
            Ok(_) => break,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(ReadError::Io(error)),
        }
    }
    reader.read_exact(&mut len_bytes[1..]).map_err(ReadError::from_read)?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > MAX_PAYLOAD_BYTES {
        return Err(ReadError::Damaged(DamageReason::LengthOverLimit));
    }
    payload.resize(len, 0);
    reader.read_exact(payload).map_err(ReadError::from_read)?;
    let mut stored = [0u8; 4];
    reader.read_exact(&mut stored).map_err(ReadError::from_read)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len_bytes);
    crc.update(payload);
    if crc.finalize() != u32::from_le_bytes(stored) {
        return Err(ReadError::Damaged(DamageReason::BadChecksum));
    }
    Ok(true)
}

/// Why [`read_record`] found no record where one had to be.
#[derive(Debug)]
pub enum ReadError {
    Damaged(DamageReason),
    Io(std::io::Error),
}

impl ReadError {
    fn from_read(error: std::io::Error) -> Self {
        match error.kind() {
            std::io::ErrorKind::UnexpectedEof => Self::Damaged(DamageReason::Truncated),
            _ => Self::Io(error),
        }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Damaged(reason) => write!(f, "{reason}"),
            Self::Io(error) => write!(f, "read failed: {error}"),
        }
    }
}

/// What [`scan_stream`] found: as [`Scan`], the records having gone to the visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamScan {
    pub records: u64,
    pub valid_len: u64,
    pub torn_bytes: u64,
}

#[derive(Debug)]
pub enum StreamScanError<E> {
    Scan(ScanError),
    Io(std::io::Error),
    /// The visitor refused a record.
    Visit(E),
}

/// Buffer for streaming a log: large reads, small memory.
const STREAM_BUFFER: usize = 1 << 20;

/// [`scan`] over a log read from `input` record by record, handing each intact record to
/// `visit` (its index and payload) instead of holding the log. The same rule for the end: a
/// damaged tail of at most `max_torn_tail` bytes with no intact record after it is torn; any other
/// damage is corruption.
pub fn scan_stream<E>(
    input: crate::io::FileInput,
    max_torn_tail: usize,
    mut visit: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<StreamScan, StreamScanError<E>> {
    use std::io::{Read, Seek};
    let len = input.len();
    let mut reader = std::io::BufReader::with_capacity(STREAM_BUFFER, input.into_reader());
    let (mut payload, mut offset, mut records) = (Vec::new(), 0u64, 0u64);
    let damage = loop {
        match read_record(&mut reader, &mut payload) {
            Ok(false) => return Ok(StreamScan { records, valid_len: offset, torn_bytes: 0 }),
            Ok(true) => {
                visit(records, &payload).map_err(StreamScanError::Visit)?;
                records += 1;
                offset += (payload.len() + FRAME_OVERHEAD) as u64;
            }
            Err(ReadError::Io(error)) => return Err(StreamScanError::Io(error)),
            Err(ReadError::Damaged(reason)) => break reason,
        }
    };
    // Damage at `offset`: judge the rest as `scan` judges a tail (it is small, or corruption).
    // Fewer bytes than a frame's overhead read as truncated, whatever the length field says.
    let damage = if len - offset < FRAME_OVERHEAD as u64 { DamageReason::Truncated } else { damage };
    if len - offset > max_torn_tail as u64 {
        return Err(StreamScanError::Scan(ScanError::Corrupt { offset, reason: damage }));
    }
    let mut tail = Vec::new();
    reader.seek(std::io::SeekFrom::Start(offset)).map_err(StreamScanError::Io)?;
    reader.read_to_end(&mut tail).map_err(StreamScanError::Io)?;
    let judged = scan(&tail, max_torn_tail).map_err(|ScanError::Corrupt { offset: at, reason }| {
        StreamScanError::Scan(ScanError::Corrupt { offset: offset + at, reason })
    })?;
    debug_assert!(judged.records.is_empty(), "the tail starts with the damaged record");
    Ok(StreamScan { records, valid_len: offset + judged.valid_len, torn_bytes: judged.torn_bytes })
}

/// True if an intact record starts anywhere in `bytes[from..]`. Used only on a damaged tail,
/// which a crash leaves at most one batch long, so the quadratic worst case stays small.
fn intact_record_after(bytes: &[u8], from: usize) -> bool {
    (from..bytes.len()).any(|offset| record_at(bytes, offset).is_ok())
}

/// Scans a whole log. `max_torn_tail` bounds how many damaged trailing bytes may be treated as
/// torn (the largest write the kernel ever issues); a longer damaged tail is corruption.
pub fn scan(bytes: &[u8], max_torn_tail: usize) -> Result<Scan<'_>, ScanError> {
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        match record_at(bytes, offset) {
            Ok(payload) => {
                records.push(Record { offset: offset as u64, payload });
                offset += FRAME_OVERHEAD + payload.len();
            }
            Err(reason) => {
                let tail = bytes.len() - offset;
                // An intact record later on, or more damage than one write could leave, means
                // this is not a cut-short append (zero-filled tails still count as torn).
                if tail > max_torn_tail || intact_record_after(bytes, offset + 1) {
                    return Err(ScanError::Corrupt { offset: offset as u64, reason });
                }
                return Ok(Scan { records, valid_len: offset as u64, torn_bytes: tail as u64 });
            }
        }
    }
    Ok(Scan { records, valid_len: offset as u64, torn_bytes: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_all(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, ReadError> {
        let mut records = Vec::new();
        let mut payload = Vec::new();
        while read_record(&mut bytes, &mut payload)? {
            records.push(payload.clone());
        }
        Ok(records)
    }

    proptest! {
        #[test]
        fn a_streamed_scan_agrees_with_scan_on_any_damage(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6),
            cut in any::<proptest::sample::Index>(),
            flip in any::<proptest::sample::Index>(),
            max_tail in 0usize..120,
        ) {
            let mut bytes = Vec::new();
            for payload in &payloads {
                encode_into(payload, &mut bytes);
            }
            let mut damaged = bytes[..cut.index(bytes.len()) + 1].to_vec();
            let at = flip.index(damaged.len());
            damaged[at] ^= 0x10;
            for input in [bytes, damaged] {
                let whole = scan(&input, max_tail);
                let mut seen = Vec::new();
                let streamed = scan_stream(crate::io::FileInput::Bytes(input.clone()), max_tail, |index, payload| {
                    seen.push((index, payload.to_vec()));
                    Ok::<(), ()>(())
                });
                match (whole, streamed) {
                    (Ok(whole), Ok(streamed)) => {
                        prop_assert_eq!((whole.valid_len, whole.torn_bytes), (streamed.valid_len, streamed.torn_bytes));
                        let expected: Vec<(u64, Vec<u8>)> =
                            whole.records.iter().enumerate().map(|(i, r)| (i as u64, r.payload.to_vec())).collect();
                        prop_assert_eq!(seen, expected);
                    }
                    (Err(whole), Err(StreamScanError::Scan(streamed))) => prop_assert_eq!(whole, streamed),
                    (whole, streamed) => prop_assert!(false, "scan {:?} but streamed {:?}", whole, streamed),
                }
            }
        }

        #[test]
        fn streamed_records_read_back_and_any_cut_or_flip_is_damage(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6),
            cut in any::<proptest::sample::Index>(),
            flip in any::<proptest::sample::Index>(),
        ) {
            let mut bytes = Vec::new();
            for payload in &payloads {
                encode_into(payload, &mut bytes);
            }
            prop_assert_eq!(read_all(&bytes).unwrap(), payloads);
            let cut = cut.index(bytes.len() - 1) + 1;
            let whole_records = scan(&bytes[..cut], usize::MAX).unwrap().torn_bytes == 0;
            prop_assert_eq!(read_all(&bytes[..cut]).is_ok(), whole_records);
            let mut flipped = bytes.clone();
            flipped[flip.index(bytes.len())] ^= 0x01;
            prop_assert!(read_all(&flipped).is_err());
        }
    }

    const VECTOR_LOG_HEX: &str = "180000007b226b696e64223a226578616d706c65222c226e223a307d055fa6db180000007b226b696e64223a226578616d706c65222c226e223a317d446ebdc2180000007b226b696e64223a226578616d706c65222c226e223a327d873d90e9";

    fn vector_payloads() -> Vec<Vec<u8>> {
        (0..3).map(|n| format!(r#"{{"kind":"example","n":{n}}}"#).into_bytes()).collect()
    }

    #[test]
    fn encodes_the_etl_vector_bytes() {
        let mut log = Vec::new();
        for payload in vector_payloads() {
            encode_into(&payload, &mut log);
        }
        assert_eq!(hex::encode(&log), VECTOR_LOG_HEX);
        let scan = scan(&log, 1 << 20).unwrap();
        assert_eq!(scan.records.len(), 3);
        assert_eq!(scan.torn_bytes, 0);
        assert_eq!(scan.records[1].offset, 32);
    }

    #[test]
    fn every_cut_of_the_final_record_is_a_torn_tail() {
        let log = hex::decode(VECTOR_LOG_HEX).unwrap();
        let last_start = 64;
        for cut in last_start + 1..log.len() {
            let scan = scan(&log[..cut], 1 << 20).unwrap();
            assert_eq!(scan.records.len(), 2, "cut at {cut}");
            assert_eq!(scan.valid_len, last_start as u64);
            assert_eq!(scan.torn_bytes, (cut - last_start) as u64);
        }
    }

    #[test]
    fn damage_before_an_intact_record_is_corruption() {
        let mut log = hex::decode(VECTOR_LOG_HEX).unwrap();
        log[40] ^= 0x01; // inside the second record's payload
        let err = scan(&log, 1 << 20).unwrap_err();
        assert_eq!(err, ScanError::Corrupt { offset: 32, reason: DamageReason::BadChecksum });
        assert!(err.to_string().contains("offset 32"));
    }

    #[test]
    fn corrupted_length_in_the_middle_is_not_mistaken_for_a_tear() {
        let mut log = hex::decode(VECTOR_LOG_HEX).unwrap();
        log[32] = 0xff; // second record now claims to run past the end of the file
        assert!(matches!(scan(&log, 1 << 20), Err(ScanError::Corrupt { offset: 32, .. })));
    }

    #[test]
    fn bad_checksum_on_the_complete_final_record_is_torn() {
        let mut log = hex::decode(VECTOR_LOG_HEX).unwrap();
        let last = log.len() - 1;
        log[last] ^= 0x80;
        let scan = scan(&log, 1 << 20).unwrap();
        assert_eq!(scan.records.len(), 2);
        assert_eq!(scan.torn_bytes, 32);
    }

    #[test]
    fn a_zero_filled_tail_is_torn() {
        let mut log = hex::decode(VECTOR_LOG_HEX).unwrap();
        log.extend_from_slice(&[0u8; 40]);
        let scan = scan(&log, 1 << 20).unwrap();
        assert_eq!((scan.records.len(), scan.torn_bytes), (3, 40));
    }

    #[test]
    fn a_damaged_tail_longer_than_any_write_is_corruption() {
        let mut log = hex::decode(VECTOR_LOG_HEX).unwrap();
        log.truncate(70);
        assert!(scan(&log, 4).is_err());
    }

    proptest! {
        #[test]
        fn round_trip_and_torn_tail_at_every_offset(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8)) {
            let mut log = Vec::new();
            let mut ends = Vec::new();
            for payload in &payloads {
                encode_into(payload, &mut log);
                ends.push(log.len());
            }
            let full = scan(&log, 1 << 20).unwrap();
            let decoded: Vec<&[u8]> = full.records.iter().map(|r| r.payload).collect();
            let expected: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(decoded, expected);
            for cut in 0..=log.len() {
                let partial = scan(&log[..cut], 1 << 20).unwrap();
                let whole = ends.iter().filter(|&&end| end <= cut).count();
                prop_assert_eq!(partial.records.len(), whole);
                let valid = if whole == 0 { 0 } else { ends[whole - 1] };
                prop_assert_eq!(partial.valid_len as usize, valid);
                prop_assert_eq!(partial.torn_bytes as usize, cut - valid);
            }
        }
    }
}
