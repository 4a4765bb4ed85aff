//! Checkpoints written by `flax.serialization.to_bytes` (`.msgpack`): the files of
//! `flax.training.checkpoints` in msgpack form and Hugging Face's `flax_model.msgpack`. A
//! msgpack tree of dictionaries whose leaves are arrays, each an extension value (type 1)
//! holding the msgpack triple `(shape, dtype name, C-order bytes)`. Names are the tree's keys
//! joined with `/` (`params/Conv_0/kernel`), as `flax.traverse_util.flatten_dict` gives them.
//! Every length is checked against the bytes left before anything is allocated.

use super::{at, Array, InspectError, Tensors};
use std::path::Path;

/// A decoded msgpack value (the kinds a Flax checkpoint holds).
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Nil,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Bin(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Ext(i8, Vec<u8>),
}

/// Flax's extension type for an ndarray.
const NDARRAY: i8 = 1;
/// Nesting deeper than this is refused (a model tree is a few levels; hostile input is not).
const MAX_DEPTH: usize = 64;

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.b.len() - self.at < n {
            return Err(format!("truncated: {n} bytes declared at offset {}, {} left", self.at, self.b.len() - self.at));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> Result<u64, String> {
        Ok(self.take(n)?.iter().fold(0u64, |v, &b| (v << 8) | b as u64))
    }

    fn len(&mut self, n: usize) -> Result<usize, String> {
        usize::try_from(self.uint(n)?).map_err(|_| "length beyond memory".to_string())
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let t = self.take(1)?[0];
        let str_of = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| "a key or name that is not UTF-8".to_string());
        Ok(match t {
            0x00..=0x7f => Value::Int(t as i128),
            0xe0..=0xff => Value::Int(t as i8 as i128),
            0x80..=0x8f => self.map((t & 0x0f) as usize, depth)?,
            0x90..=0x9f => self.array((t & 0x0f) as usize, depth)?,
            0xa0..=0xbf => Value::Str(str_of(self.take((t & 0x1f) as usize)?)?),
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let n = self.len(1 << (t - 0xc4))?;
                Value::Bin(self.take(n)?.to_vec())
            }
            0xc7..=0xc9 => {
                let n = self.len(1 << (t - 0xc7))?;
                let kind = self.take(1)?[0] as i8;
                Value::Ext(kind, self.take(n)?.to_vec())
            }
            0xca => Value::Float(f32::from_bits(self.uint(4)? as u32) as f64),
            0xcb => Value::Float(f64::from_bits(self.uint(8)?)),
            0xcc..=0xcf => Value::Int(self.uint(1 << (t - 0xcc))? as i128),
            0xd0..=0xd3 => {
                let n = 1 << (t - 0xd0);
                let v = self.uint(n)?;
                let shift = 64 - 8 * n as u32;
                Value::Int((((v << shift) as i64) >> shift) as i128)
            }
            0xd4..=0xd8 => {
                let kind = self.take(1)?[0] as i8;
                Value::Ext(kind, self.take(1 << (t - 0xd4))?.to_vec())
            }
            0xd9..=0xdb => {
                let n = self.len(1 << (t - 0xd9))?;
                Value::Str(str_of(self.take(n)?)?)
            }
            0xdc | 0xdd => {
                let n = self.len(if t == 0xdc { 2 } else { 4 })?;
                self.array(n, depth)?
            }
            0xde | 0xdf => {
                let n = self.len(if t == 0xde { 2 } else { 4 })?;
                self.map(n, depth)?
            }
            0xc1 => return Err(format!("byte 0xc1 at offset {} is not msgpack", self.at - 1)),
        })
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<Value, String> {
        // Each element takes at least a byte: a count beyond the bytes left is a lie.
        if n > self.b.len() - self.at {
            return Err(format!("truncated: an array of {n} declared with {} bytes left", self.b.len() - self.at));
        }
        (0..n).map(|_| self.value(depth + 1)).collect::<Result<_, _>>().map(Value::Array)
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value, String> {
        if n > (self.b.len() - self.at) / 2 {
            return Err(format!("truncated: a map of {n} declared with {} bytes left", self.b.len() - self.at));
        }
        (0..n).map(|_| Ok((self.value(depth + 1)?, self.value(depth + 1)?))).collect::<Result<_, String>>().map(Value::Map)
    }
}

fn decode(bytes: &[u8]) -> Result<Value, String> {
    let mut r = Reader { b: bytes, at: 0 };
    let v = r.value(0)?;
    if r.at != bytes.len() {
        return Err(format!("{} bytes after the end of the msgpack value", bytes.len() - r.at));
    }
    Ok(v)
}

/// [`parse`] of the file at `path`, the error naming it.
pub fn read(path: &Path) -> Result<Tensors, InspectError> {
    let bytes = std::fs::read(path).map_err(|e| at(path, format!("cannot read ({e})")))?;
    parse(&bytes).map_err(|what| at(path, format!("not a Flax msgpack checkpoint: {what}")))
}

/// The float arrays of a Flax msgpack checkpoint by `/`-joined path; integer arrays (step
/// counters) are left out, as for the other formats. The error says what is wrong and where.
pub fn parse(bytes: &[u8]) -> Result<Tensors, String> {
    let root = decode(bytes)?;
    if !matches!(root, Value::Map(_)) {
        return Err("expected a dictionary at the root (flax.serialization.to_bytes of a state dict)".into());
    }
    let mut out = Tensors::new();
    walk(&root, "", &mut out)?;
    if out.is_empty() {
        return Err("no float arrays: expected the output of flax.serialization.to_bytes".into());
    }
    Ok(out)
}

fn walk(v: &Value, path: &str, out: &mut Tensors) -> Result<(), String> {
    match v {
        Value::Map(entries) => {
            if entries.iter().any(|(k, _)| *k == Value::Str("__msgpack_chunked_array__".into())) {
                return Err(format!("{path}: an array saved in chunks (over 1 GiB) is not read"));
            }
            for (k, child) in entries {
                let key = match k {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    other => return Err(format!("{path}: a key that is not a string ({other:?})")),
                };
                let p = if path.is_empty() { key } else { format!("{path}/{key}") };
                walk(child, &p, out)?;
            }
            Ok(())
        }
        Value::Ext(NDARRAY, payload) => {
            if let Some(t) = array(payload).map_err(|e| format!("{path}: {e}"))? {
                out.insert(path.to_string(), t);
            }
            Ok(())
        }
        // Scalars, strings, lists (an optimizer's step count, hyperparameters): not weights.
        _ => Ok(()),
    }
}

/// One ndarray: shape and values, or `None` for a non-float dtype.
fn array(payload: &[u8]) -> Result<Option<Array>, String> {
    let Value::Array(parts) = decode(payload)? else { return Err("an array that is not (shape, dtype, bytes)".into()) };
    let [Value::Array(dims), Value::Str(dtype), Value::Bin(data)] = parts.as_slice() else {
        return Err("an array that is not (shape, dtype, bytes)".into());
    };
    let shape: Vec<usize> = dims
        .iter()
        .map(|d| match d {
            Value::Int(n) => usize::try_from(*n).map_err(|_| format!("dimension {n}")),
            other => Err(format!("dimension {other:?}")),
        })
        .collect::<Result<_, _>>()?;
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("shape overflows")?;
    let size = match dtype.as_str() {
        "float32" => 4,
        "float64" => 8,
        "float16" | "bfloat16" => 2,
        d if ["int", "uint", "bool"].iter().any(|p| d.starts_with(p)) => return Ok(None),
        d => return Err(format!("dtype {d:?}, expected a float or integer type")),
    };
    if count.checked_mul(size) != Some(data.len()) {
        return Err(format!("{} bytes for shape {shape:?} of {dtype}", data.len()));
    }
    let v: Vec<f32> = match dtype.as_str() {
        "float32" => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        "float64" => data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
        "bfloat16" => data.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect(),
        _ => data.chunks_exact(2).map(|c| normwd_core::store::f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
    };
    Ok(Some((shape, v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{"a": {"k": <float32 array [2]>}, "step": 3}` in msgpack, by hand.
    fn sample() -> Vec<u8> {
        let mut inner = vec![0x93, 0x91, 0x02, 0xa7];
        inner.extend(b"float32");
        inner.extend([0xc4, 8]);
        inner.extend(1.5f32.to_le_bytes());
        inner.extend((-2f32).to_le_bytes());
        let mut b = vec![0x82, 0xa1, b'a', 0x81, 0xa1, b'k', 0xc7, inner.len() as u8, 0x01];
        b.extend(inner);
        b.extend([0xa4, b's', b't', b'e', b'p', 0x03]);
        b
    }

    #[test]
    fn arrays_come_out_by_path_and_damage_is_an_error() {
        let t = parse(&sample()).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t["a/k"], (vec![2], vec![1.5, -2.0]));
        let b = sample();
        for cut in 0..b.len() {
            assert!(parse(&b[..cut]).is_err(), "cut at {cut}");
        }
        // A map declaring 2^32-1 entries in a few bytes is refused before it allocates.
        assert!(parse(&[0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1]).unwrap_err().contains("truncated"));
        // Nesting without end.
        assert!(parse(&vec![0x91; 10_000]).unwrap_err().contains("nested deeper"));
    }
}
