//! Reader for the CIFAR-10 binary format: records of 1 label byte + 3072 pixel bytes
//! (1024 red, 1024 green, 1024 blue, each 32x32 row-major).

use super::DataError;
use std::path::Path;

/// Bytes of one CIFAR-10 record.
pub const RECORD: usize = 1 + 3 * 32 * 32;
/// Training batch file names, in order.
pub const TRAIN_FILES: [&str; 5] = ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
/// Test batch file name.
pub const TEST_FILE: &str = "test_batch.bin";

/// Parses the bytes of one CIFAR-10 batch file into (CHW pixels, labels).
pub fn parse_batch(file: &str, raw: &[u8]) -> Result<(Vec<u8>, Vec<u8>), DataError> {
    if raw.is_empty() || !raw.len().is_multiple_of(RECORD) {
        return Err(DataError::Corrupt {
            file: file.to_string(),
            what: format!("file is {} bytes, expected a positive multiple of {RECORD} (1 label + 3072 pixel bytes per record)", raw.len()),
        });
    }
    let n = raw.len() / RECORD;
    let mut pixels = Vec::with_capacity(n * (RECORD - 1));
    let mut labels = Vec::with_capacity(n);
    for (i, rec) in raw.chunks_exact(RECORD).enumerate() {
        if rec[0] >= 10 {
            return Err(DataError::Corrupt { file: file.to_string(), what: format!("record {i} has label {}, expected 0..10", rec[0]) });
        }
        labels.push(rec[0]);
        pixels.extend_from_slice(&rec[1..]);
    }
    Ok((pixels, labels))
}

/// Reads one CIFAR-10 batch file.
pub fn read_batch(path: &Path) -> Result<(Vec<u8>, Vec<u8>), DataError> {
    let raw = super::read_file(path)?;
    parse_batch(&path.display().to_string(), &raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_and_rejects_bad_lengths_and_labels() {
        let mut raw = vec![3u8];
        raw.extend((0..3072).map(|i| (i % 251) as u8));
        raw.push(7);
        raw.extend(vec![1u8; 3072]);
        let (px, lab) = parse_batch("b", &raw).unwrap();
        assert_eq!(lab, vec![3, 7]);
        assert_eq!(px.len(), 2 * 3072);
        assert_eq!(px[5], 5);
        let e = parse_batch("b.bin", &raw[..raw.len() - 1]).unwrap_err().to_string();
        assert!(e.contains("b.bin") && e.contains("multiple of 3073"), "{e}");
        raw[0] = 10;
        let e = parse_batch("b", &raw).unwrap_err().to_string();
        assert!(e.contains("record 0 has label 10"), "{e}");
    }
}
