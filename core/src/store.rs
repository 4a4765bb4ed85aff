//! Files of a run directory, written so a crash never leaves a half-written one: whole files
//! go to a temporary name and are renamed; metrics are appended one complete line at a time,
//! and a torn last line (from a crash mid-write) is dropped on resume. Checkpoints are
//! safetensors files of f32 tensors with a metadata map.

use crate::records::Record;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors reading or writing run files.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An OS-level failure (disk full, permissions, missing file).
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file's content is not what normwd writes.
    #[error("{file}: {what}")]
    Corrupt {
        /// The file.
        file: String,
        /// What is wrong.
        what: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { file: path.display().to_string(), source }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename.
/// On failure (e.g. disk full) the previous file at `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp: PathBuf = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        let (head, tail) = bytes.split_at(bytes.len() / 2);
        f.write_all(head).map_err(io(path))?;
        if crate::fault::is_armed() {
            let _ = f.sync_all();
            crate::fault::point("mid-write", name);
        }
        f.write_all(tail).map_err(io(path))?;
        f.sync_all().map_err(io(path))?;
        crate::fault::point("before-rename", name);
        std::fs::rename(&tmp, path).map_err(io(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Whether a file name is one of [`write_atomic`]'s temporary files (`.{name}.tmp-{pid}`), so a
/// resumed run can remove the ones a crash left behind.
pub fn is_temporary(file_name: &str) -> bool {
    file_name.starts_with('.') && file_name.contains(".tmp-")
}

/// Removes temporary files that crashed writers left in `dir` (never the finished files).
pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if is_temporary(&e.file_name().to_string_lossy()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Appends JSON lines to `metrics.jsonl`, one whole line per write.
pub struct MetricsLog {
    file: File,
    path: PathBuf,
    /// Lines in the file.
    pub lines: usize,
}

impl MetricsLog {
    /// Opens (creating) the log; keeps only its first `keep` complete lines (all when `None`),
    /// rewriting the file atomically when something is dropped.
    pub fn open(path: &Path, keep: Option<usize>) -> Result<Self, StoreError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(path)(e)),
        };
        // Complete lines end with '\n' and parse as JSON; anything after the first bad one goes.
        let mut good: Vec<&str> = Vec::new();
        for line in text.split_inclusive('\n') {
            if !line.ends_with('\n') || serde_json::from_str::<serde_json::Value>(line).is_err() {
                break;
            }
            good.push(line);
        }
        if let Some(k) = keep {
            good.truncate(k);
        }
        let kept: String = good.concat();
        if kept.len() != text.len() {
            write_atomic(path, kept.as_bytes())?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(io(path))?;
        Ok(MetricsLog { file, path: path.to_path_buf(), lines: good.len() })
    }

    /// Appends one record.
    pub fn write(&mut self, record: &Record) -> Result<(), StoreError> {
        let mut line = record.to_line();
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(io(&self.path))?;
        self.lines += 1;
        Ok(())
    }

    /// Flushes to the OS.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.file.flush().map_err(io(&self.path))
    }
}

fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Serializes named f32 tensors with a metadata map to safetensors bytes.
pub fn to_safetensors(named: &[(String, Vec<usize>, Vec<f32>)], metadata: HashMap<String, String>) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = named.iter().map(|(_, _, v)| le_bytes(v)).collect();
    let views: Vec<(String, TensorView)> = named
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).expect("shape matches data")))
        .collect();
    safetensors::serialize(views, &Some(metadata)).expect("f32 tensors serialize")
}

/// A safetensors file read into memory: f32 tensors by name, and its metadata.
#[derive(Debug)]
pub struct Loaded {
    /// Tensors by name: shape and values.
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    /// The `__metadata__` map.
    pub metadata: HashMap<String, String>,
}

/// Reads a safetensors file of f32 tensors, with errors naming the file and tensor.
pub fn read_safetensors(path: &Path) -> Result<Loaded, StoreError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    parse_safetensors(&path.display().to_string(), &bytes)
}

/// Parses safetensors bytes (see [`read_safetensors`]).
pub fn parse_safetensors(file: &str, bytes: &[u8]) -> Result<Loaded, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt { file: file.to_string(), what };
    let st = SafeTensors::deserialize(bytes).map_err(|e| corrupt(format!("not a valid safetensors file ({e})")))?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(format!("bad header ({e})")))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let d = view.data();
        let v: Vec<f32> = match view.dtype() {
            Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F64 => d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
            Dtype::BF16 => d.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect(),
            Dtype::F16 => d.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
            // Integer tensors are counters such as PyTorch's `num_batches_tracked`: not weights.
            Dtype::I64 | Dtype::I32 | Dtype::I16 | Dtype::I8 | Dtype::U8 | Dtype::U16 | Dtype::U32 | Dtype::U64 | Dtype::BOOL => continue,
            other => return Err(corrupt(format!("tensor {name} has dtype {other:?}, expected a float type"))),
        };
        tensors.insert(name, (view.shape().to_vec(), v));
    }
    Ok(Loaded { tensors, metadata: meta.metadata().clone().unwrap_or_default() })
}

/// IEEE half to single precision.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalize.
            let shift = f.leading_zeros() - 21;
            sign | ((127 - 15 - shift + 1) << 23) | (((f << shift) & 0x3ff) << 13)
        }
        (31, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Summary;

    #[test]
    fn metrics_log_drops_torn_line_and_truncates() {
        let dir = std::env::temp_dir().join(format!("normwd-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("metrics.jsonl");
        std::fs::write(&p, "{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        let log = MetricsLog::open(&p, None).unwrap();
        assert_eq!(log.lines, 2);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n{\"a\":2}\n");
        drop(log);
        let mut log = MetricsLog::open(&p, Some(1)).unwrap();
        let done = Summary {
            epochs: 1,
            steps: 3,
            test_acc: 0.5,
            test_loss: 1.0,
            train_loss: 1.0,
            images_per_sec: 1.0,
            wall_s: 1.0,
            baseline_loss: None,
        };
        log.write(&Record::Done(done.clone())).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("{{\"a\":1}}\n{}\n", Record::Done(done).to_line()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn half_precision_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.33325195);
        assert_eq!(f16_to_f32(0x0001), 5.9604645e-8);
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    #[test]
    fn safetensors_round_trip_and_corrupt_input() {
        let named = vec![("a.w".to_string(), vec![2, 2], vec![1.0, 2.0, 3.0, 4.0])];
        let bytes = to_safetensors(&named, HashMap::from([("k".into(), "v".into())]));
        let l = parse_safetensors("c", &bytes).unwrap();
        assert_eq!(l.tensors["a.w"], (vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]));
        assert_eq!(l.metadata["k"], "v");
        let e = parse_safetensors("ckpt.safetensors", &bytes[..bytes.len() - 3]).unwrap_err().to_string();
        assert!(e.contains("ckpt.safetensors") && e.contains("not a valid safetensors"), "{e}");
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(parse_safetensors("c", &huge).is_err());
    }
}
