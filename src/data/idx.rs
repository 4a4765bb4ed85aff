//! Readers for the IDX format of MNIST / Fashion-MNIST (raw or gzip-compressed).
//!
//! Header dimensions come from the file and cannot be trusted: a file that declares
//! a billion images must not make us allocate gigabytes. So we never allocate from
//! the declared size; we read what is there (bounded by the declared size + 1 byte)
//! and compare.

use super::DataError;
use flate2::read::GzDecoder;
use std::io::Read;

/// Magic number of an IDX file holding `u8` images with 3 dimensions (n, rows, cols).
pub const IMAGES_MAGIC: u32 = 2051;
/// Magic number of an IDX file holding `u8` labels (1 dimension).
pub const LABELS_MAGIC: u32 = 2049;

/// Images read from an IDX file: `n` images of `rows x cols` bytes, row-major.
#[derive(Debug, Clone)]
pub struct IdxImages {
    /// Number of images.
    pub n: usize,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// `n * rows * cols` pixel bytes.
    pub pixels: Vec<u8>,
}

fn is_gzip(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
}

/// Decompresses (if gzip) and returns the payload, reading at most `limit` bytes
/// so a corrupt or hostile file cannot exhaust memory.
fn payload(file: &str, raw: &[u8], limit: u64) -> Result<Vec<u8>, DataError> {
    if is_gzip(raw) {
        let mut out = Vec::new();
        GzDecoder::new(raw)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| DataError::Corrupt { file: file.to_string(), what: format!("gzip stream is invalid ({e})") })?;
        Ok(out)
    } else {
        Ok(raw[..raw.len().min(limit as usize)].to_vec())
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses the header of an IDX file with the expected magic and number of dimensions,
/// and returns the dimensions and the body (everything after the header), checked to
/// hold exactly `prod(dims)` bytes.
fn parse(file: &str, raw: &[u8], magic: u32, ndim: usize) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let header_len = 4 + 4 * ndim;
    let head = payload(file, raw, header_len as u64)?;
    if head.len() < header_len {
        return Err(DataError::Corrupt {
            file: file.to_string(),
            what: format!("file is {} bytes, shorter than the {header_len}-byte IDX header", head.len()),
        });
    }
    let seen = be_u32(&head, 0);
    if seen != magic {
        return Err(DataError::Corrupt { file: file.to_string(), what: format!("magic number is {seen}, expected {magic}") });
    }
    let dims: Vec<usize> = (0..ndim).map(|i| be_u32(&head, 4 + 4 * i) as usize).collect();
    let body_len = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| DataError::Corrupt { file: file.to_string(), what: format!("declared dimensions {dims:?} overflow") })?;
    // Read one byte more than declared so trailing garbage is detected.
    let all = payload(file, raw, header_len as u64 + body_len + 1)?;
    let got = all.len() as u64 - header_len as u64;
    if got != body_len {
        return Err(DataError::Corrupt {
            file: file.to_string(),
            what: format!(
                "header declares dimensions {dims:?} = {body_len} data bytes, file holds {}{got}",
                if got > body_len { "more than " } else { "" }
            ),
        });
    }
    Ok((dims, all[header_len..].to_vec()))
}

/// Parses IDX label bytes (magic 2049, raw or gzip); every label must be < `classes`;
/// `file` names the source in errors.
pub fn parse_labels(file: &str, raw: &[u8], classes: u8) -> Result<Vec<u8>, DataError> {
    let (_, labels) = parse(file, raw, LABELS_MAGIC, 1)?;
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
        return Err(DataError::Corrupt { file: file.to_string(), what: format!("label {i} is {l}, expected 0..{classes}") });
    }
    Ok(labels)
}

/// Parses IDX image bytes (magic 2051, raw or gzip); `file` names the source in errors.
pub fn parse_images(file: &str, raw: &[u8]) -> Result<IdxImages, DataError> {
    let (dims, pixels) = parse(file, raw, IMAGES_MAGIC, 3)?;
    Ok(IdxImages { n: dims[0], rows: dims[1], cols: dims[2], pixels })
}

/// The bytes of a raw IDX file: magic, big-endian dimensions, body. The inverse of the parsers,
/// for tests, fuzz seeds and small synthetic datasets.
pub fn encode(magic: u32, dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(body);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use encode as idx;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        use flate2::write::GzEncoder;
        use std::io::Write;
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn reads_raw_and_gzip_images() {
        let body: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let raw = idx(IMAGES_MAGIC, &[2, 3, 4], &body);
        for bytes in [raw.clone(), gz(&raw)] {
            let im = parse_images("x", &bytes).unwrap();
            assert_eq!((im.n, im.rows, im.cols), (2, 3, 4));
            assert_eq!(im.pixels, body);
        }
    }

    #[test]
    fn rejects_wrong_magic_and_length() {
        let raw = idx(LABELS_MAGIC, &[2, 3, 4], &[0; 24]);
        let e = parse_images("f.idx", &raw).unwrap_err().to_string();
        assert!(e.contains("f.idx") && e.contains("magic number is 2049, expected 2051"), "{e}");
        let short = idx(IMAGES_MAGIC, &[2, 3, 4], &[0; 23]);
        let e = parse_images("f", &short).unwrap_err().to_string();
        assert!(e.contains("24 data bytes, file holds 23"), "{e}");
        let long = idx(IMAGES_MAGIC, &[2, 3, 4], &[0; 25]);
        let e = parse_images("f", &long).unwrap_err().to_string();
        assert!(e.contains("more than"), "{e}");
        let e = parse_images("f", &[0, 0]).unwrap_err().to_string();
        assert!(e.contains("shorter than"), "{e}");
    }

    #[test]
    fn huge_declared_dims_do_not_allocate() {
        // 4 billion x 4 billion x 4 billion would overflow; 60000 x 60000 x 60000 would be
        // 2e14 bytes: both must fail fast from a tiny file.
        let raw = idx(IMAGES_MAGIC, &[u32::MAX, u32::MAX, u32::MAX], &[1, 2, 3]);
        assert!(parse_images("f", &raw).is_err());
        let raw = gz(&idx(IMAGES_MAGIC, &[60000, 60000, 60000], &[1, 2, 3]));
        let e = parse_images("f", &raw).unwrap_err().to_string();
        assert!(e.contains("file holds 3"), "{e}");
    }

    #[test]
    fn labels_out_of_range_and_corrupt_gzip() {
        let raw = idx(LABELS_MAGIC, &[3], &[0, 9, 10]);
        let e = parse_labels("l", &raw, 10).unwrap_err().to_string();
        assert!(e.contains("label 2 is 10"), "{e}");
        let mut bad = gz(&idx(LABELS_MAGIC, &[3], &[0, 1, 2]));
        let n = bad.len();
        bad.truncate(n - 10);
        assert!(parse_labels("l", &bad, 10).is_err());
    }
}
