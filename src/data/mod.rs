//! Datasets: IDX (MNIST / Fashion-MNIST, raw or `.gz`), CIFAR-10 binary batches, text
//! (`text`: the embedded King James Bible subset or any UTF-8 file), and the
//! Fashion-MNIST subset compiled into the binary; normalization, seeded shuffling, batching
//! and CIFAR augmentation.
//!
//! May import only the core; nothing of the engine.

pub mod cifar;
pub mod idx;
pub mod text;

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// Errors from reading or locating data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read.
    #[error("{file}: cannot read ({source})")]
    Io {
        /// The file.
        file: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file was read but its content is not what the format requires.
    #[error("{file}: {what}")]
    Corrupt {
        /// The file.
        file: String,
        /// What is wrong, with the value seen and the value expected.
        what: String,
    },
    /// No dataset could be found where one was asked for.
    #[error("--data {spec}: {what}")]
    NotFound {
        /// The `--data` value.
        spec: String,
        /// Where we looked.
        what: String,
    },
}

impl normwd_core::exit::ExitCode for DataError {
    /// Data is the run's input.
    fn exit_code(&self) -> i32 {
        2
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| DataError::Io { file: path.display().to_string(), source })
}

/// One split (train or test): `n` images of `channels x height x width` bytes (CHW) and labels.
#[derive(Debug, Clone)]
pub struct Split {
    /// Pixel bytes, image after image, CHW.
    pub pixels: Vec<u8>,
    /// Class labels, `0..10`.
    pub labels: Vec<u8>,
}

impl Split {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the split holds no example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// A dataset with its train and test splits and per-channel normalization constants.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Human-readable name (`embedded`, `fashion-mnist`, `cifar10`, or a path).
    pub name: String,
    /// Channels, height, width of one image.
    pub shape: [usize; 3],
    /// Training split.
    pub train: Split,
    /// Test split.
    pub test: Split,
    /// Per-channel mean of pixels scaled to [0, 1] (the usual published constants).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation of pixels scaled to [0, 1].
    pub std: Vec<f32>,
    /// Whether random-crop (pad 4) + horizontal-flip augmentation is applied to training batches.
    pub augment: bool,
}

const FMNIST_MEAN: f32 = 0.2860;
const FMNIST_STD: f32 = 0.3530;
const CIFAR_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
const CIFAR_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];
/// Where Debian's `dataset-fashion-mnist` package installs Fashion-MNIST.
pub const DEBIAN_FMNIST: &str = "/usr/share/datasets/fashion-mnist";

const EMB_TRAIN_IMAGES: &[u8] = include_bytes!("../../data/embedded/train-images-idx3-ubyte.gz");
const EMB_TRAIN_LABELS: &[u8] = include_bytes!("../../data/embedded/train-labels-idx1-ubyte.gz");
const EMB_TEST_IMAGES: &[u8] = include_bytes!("../../data/embedded/t10k-images-idx3-ubyte.gz");
const EMB_TEST_LABELS: &[u8] = include_bytes!("../../data/embedded/t10k-labels-idx1-ubyte.gz");

/// An images file, its labels file, and their names for messages.
type IdxPair = (idx::IdxImages, Vec<u8>, [String; 2]);

fn idx_split((images, labels, [images_file, labels_file]): IdxPair) -> Result<Split, DataError> {
    if images.n == 0 || images.rows == 0 || images.cols == 0 {
        return Err(DataError::Corrupt {
            file: images_file,
            what: format!("holds {} images of {}x{}, expected at least one non-empty image", images.n, images.rows, images.cols),
        });
    }
    if images.n != labels.len() {
        return Err(DataError::Corrupt {
            file: labels_file,
            what: format!("{} labels for {} images, expected equal counts", labels.len(), images.n),
        });
    }
    Ok(Split { pixels: images.pixels, labels })
}

fn gray_dataset(name: String, train: IdxPair, test: IdxPair) -> Result<Dataset, DataError> {
    let shape = [1, train.0.rows, train.0.cols];
    if [1, test.0.rows, test.0.cols] != shape {
        return Err(DataError::Corrupt {
            file: test.2[0].clone(),
            what: format!("images are {}x{}, expected {}x{} as in the training file", test.0.rows, test.0.cols, shape[1], shape[2]),
        });
    }
    Ok(Dataset {
        name,
        shape,
        train: idx_split(train)?,
        test: idx_split(test)?,
        mean: vec![FMNIST_MEAN],
        std: vec![FMNIST_STD],
        augment: false,
    })
}

/// The Fashion-MNIST subset compiled into the binary: 10,000 train + 2,000 test images,
/// class-balanced (see `data/embedded/` and `scripts/make_embedded.py`).
pub fn embedded() -> Dataset {
    let files = [
        ("embedded train images", EMB_TRAIN_IMAGES),
        ("embedded train labels", EMB_TRAIN_LABELS),
        ("embedded test images", EMB_TEST_IMAGES),
        ("embedded test labels", EMB_TEST_LABELS),
    ];
    idx_dataset("embedded", files).expect("the embedded dataset is compiled in and checked by tests")
}

/// Builds a grayscale dataset from the bytes of the four IDX files (train images, train
/// labels, test images, test labels; raw or gzip), each named for error messages.
pub fn idx_dataset(name: &str, files: [(&str, &[u8]); 4]) -> Result<Dataset, DataError> {
    let pair = |img: (&str, &[u8]), lab: (&str, &[u8])| -> Result<IdxPair, DataError> {
        Ok((idx::parse_images(img.0, img.1)?, idx::parse_labels(lab.0, lab.1, 10)?, [img.0.to_string(), lab.0.to_string()]))
    };
    gray_dataset(name.to_string(), pair(files[0], files[1])?, pair(files[2], files[3])?)
}

fn find_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")].into_iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// Loads MNIST-style IDX files (`train-images-idx3-ubyte[.gz]`, ...) from a folder.
pub fn load_idx_dir(dir: &Path) -> Result<Dataset, DataError> {
    let need = |stem: &str| {
        find_file(dir, stem).ok_or_else(|| DataError::NotFound {
            spec: dir.display().to_string(),
            what: format!("missing {stem} (or {stem}.gz) in {}", dir.display()),
        })
    };
    let paths = [
        need("train-images-idx3-ubyte")?,
        need("train-labels-idx1-ubyte")?,
        need("t10k-images-idx3-ubyte")?,
        need("t10k-labels-idx1-ubyte")?,
    ];
    let names = paths.each_ref().map(|p| p.display().to_string());
    let bytes = paths.iter().map(|p| read_file(p)).collect::<Result<Vec<_>, _>>()?;
    idx_dataset(&dir.display().to_string(), std::array::from_fn(|i| (names[i].as_str(), bytes[i].as_slice())))
}

/// Loads CIFAR-10 binary batches (`data_batch_1..5.bin`, `test_batch.bin`) from a folder.
/// Training batches that are absent are skipped, but at least `data_batch_1.bin` must exist.
pub fn load_cifar_dir(dir: &Path) -> Result<Dataset, DataError> {
    let mut train = Split { pixels: Vec::new(), labels: Vec::new() };
    for (i, f) in cifar::TRAIN_FILES.iter().enumerate() {
        let p = dir.join(f);
        if !p.is_file() {
            if i == 0 {
                return Err(DataError::NotFound { spec: dir.display().to_string(), what: format!("missing {f} in {}", dir.display()) });
            }
            continue;
        }
        let (px, lab) = cifar::read_batch(&p)?;
        train.pixels.extend(px);
        train.labels.extend(lab);
    }
    let tp = dir.join(cifar::TEST_FILE);
    if !tp.is_file() {
        return Err(DataError::NotFound {
            spec: dir.display().to_string(),
            what: format!("missing {} in {}", cifar::TEST_FILE, dir.display()),
        });
    }
    let (pixels, labels) = cifar::read_batch(&tp)?;
    Ok(Dataset {
        name: dir.display().to_string(),
        shape: [3, 32, 32],
        train,
        test: Split { pixels, labels },
        mean: CIFAR_MEAN.to_vec(),
        std: CIFAR_STD.to_vec(),
        augment: false,
    })
}

/// Loads a folder of IDX or CIFAR-10 files, whichever it holds (also `cifar-10-batches-bin/`).
pub fn load_dir(dir: &Path) -> Result<Dataset, DataError> {
    if !dir.is_dir() {
        return Err(DataError::NotFound { spec: dir.display().to_string(), what: "no such folder".into() });
    }
    if dir.join("data_batch_1.bin").is_file() {
        return load_cifar_dir(dir);
    }
    let sub = dir.join("cifar-10-batches-bin");
    if sub.join("data_batch_1.bin").is_file() {
        return load_cifar_dir(&sub);
    }
    if find_file(dir, "train-images-idx3-ubyte").is_some() {
        return load_idx_dir(dir);
    }
    Err(DataError::NotFound {
        spec: dir.display().to_string(),
        what: "folder holds neither IDX files (train-images-idx3-ubyte[.gz], ...) nor CIFAR-10 batches (data_batch_1.bin, ...)".into(),
    })
}

/// Resolves a `--data` value for a language model: `embedded` (the King James Bible subset) or
/// a UTF-8 file or folder of `.txt` files.
pub fn load_text(spec: &str, tokens: text::Tokens) -> Result<text::Text, DataError> {
    match spec {
        "embedded" => Ok(text::embedded(tokens)),
        "fashion-mnist" | "cifar10" => Err(DataError::NotFound {
            spec: spec.into(),
            what: "images, not text: --model gpt reads `embedded` or a text file or folder".into(),
        }),
        path => {
            let p = Path::new(path);
            if !p.exists() {
                return Err(DataError::NotFound { spec: path.into(), what: "no such file or folder (expected UTF-8 text)".into() });
            }
            text::load(p, tokens)
        }
    }
}

/// Resolves a `--data` value: `embedded`, `fashion-mnist` (in `$NORMWD_DATA`,
/// `$NORMWD_DATA/fashion-mnist` or Debian's folder), `cifar10` (in `$NORMWD_DATA`,
/// `$NORMWD_DATA/cifar10` or `$NORMWD_DATA/cifar-10-batches-bin`), or a folder path.
pub fn load(spec: &str) -> Result<Dataset, DataError> {
    let env = std::env::var_os("NORMWD_DATA").map(PathBuf::from);
    match spec {
        "embedded" => Ok(embedded()),
        "fashion-mnist" => {
            let mut tried = Vec::new();
            let mut candidates: Vec<PathBuf> = env.iter().flat_map(|e| [e.clone(), e.join("fashion-mnist")]).collect();
            candidates.push(PathBuf::from(DEBIAN_FMNIST));
            for c in candidates {
                if find_file(&c, "train-images-idx3-ubyte").is_some() {
                    let mut d = load_idx_dir(&c)?;
                    d.name = "fashion-mnist".into();
                    return Ok(d);
                }
                tried.push(c.display().to_string());
            }
            Err(DataError::NotFound {
                spec: spec.into(),
                what: format!(
                    "no Fashion-MNIST IDX files in {} (install with `apt-get install dataset-fashion-mnist` or set NORMWD_DATA)",
                    tried.join(", ")
                ),
            })
        }
        "cifar10" => {
            let mut tried = Vec::new();
            for c in env.iter().flat_map(|e| [e.clone(), e.join("cifar10"), e.join("cifar-10-batches-bin")]) {
                if c.join("data_batch_1.bin").is_file() {
                    let mut d = load_cifar_dir(&c)?;
                    d.name = "cifar10".into();
                    return Ok(d);
                }
                tried.push(c.display().to_string());
            }
            Err(DataError::NotFound {
                spec: spec.into(),
                what: if tried.is_empty() {
                    "set NORMWD_DATA to the folder holding data_batch_1.bin ... test_batch.bin, or pass the folder as --data PATH".into()
                } else {
                    format!("no data_batch_1.bin in {}", tried.join(", "))
                },
            })
        }
        path => load_dir(Path::new(path)),
    }
}

impl Dataset {
    /// Number of input features of one image (`c*h*w`).
    pub fn features(&self) -> usize {
        self.shape.iter().product()
    }

    /// Keeps only the first `n_train` / `n_test` examples (for quick runs and tests).
    pub fn truncate(&mut self, n_train: usize, n_test: usize) {
        let f = self.features();
        for (s, n) in [(&mut self.train, n_train), (&mut self.test, n_test)] {
            let n = n.min(s.len());
            s.labels.truncate(n);
            s.pixels.truncate(n * f);
        }
    }

    /// Builds a normalized NCHW batch and its labels from the given example indices.
    /// With `augment = Some(rng)` (training, CIFAR), applies random crop with 4-pixel zero
    /// padding and random horizontal flip, drawn from `rng`.
    pub fn batch(
        &self,
        split: &Split,
        indices: &[usize],
        augment: Option<&mut ChaCha8Rng>,
        device: &Device,
    ) -> (Tensor<4>, Tensor<1, Int>) {
        let [c, h, w] = self.shape;
        let f = c * h * w;
        let mut x = vec![0f32; indices.len() * f];
        let lut: Vec<Vec<f32>> = (0..c).map(|ch| (0..256).map(|p| (p as f32 / 255.0 - self.mean[ch]) / self.std[ch]).collect()).collect();
        let mut rng = augment;
        for (b, &i) in indices.iter().enumerate() {
            let src = &split.pixels[i * f..(i + 1) * f];
            let dst = &mut x[b * f..(b + 1) * f];
            match rng.as_deref_mut() {
                Some(r) => {
                    let (dy, dx, flip) =
                        (r.random_range(0..9usize) as isize - 4, r.random_range(0..9usize) as isize - 4, r.random_bool(0.5));
                    for ch in 0..c {
                        let zero = -self.mean[ch] / self.std[ch];
                        for y in 0..h {
                            for xx in 0..w {
                                let sy = y as isize + dy;
                                let sx0 = if flip { (w - 1 - xx) as isize } else { xx as isize };
                                let sx = sx0 + dx;
                                dst[ch * h * w + y * w + xx] = if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                                    zero
                                } else {
                                    lut[ch][src[ch * h * w + sy as usize * w + sx as usize] as usize]
                                };
                            }
                        }
                    }
                }
                None => {
                    for ch in 0..c {
                        for k in 0..h * w {
                            dst[ch * h * w + k] = lut[ch][src[ch * h * w + k] as usize];
                        }
                    }
                }
            }
        }
        let labels: Vec<i32> = indices.iter().map(|&i| split.labels[i] as i32).collect();
        let xt = Tensor::<4>::from_data(TensorData::new(x, [indices.len(), c, h, w]), device);
        let yt = Tensor::<1, Int>::from_data(TensorData::new(labels, [indices.len()]), device);
        (xt, yt)
    }
}

/// What a run trains on: labelled images, or a text cut into windows of `block` tokens.
#[derive(Debug, Clone)]
pub enum Data {
    /// Images and their classes (the image models).
    Images(Dataset),
    /// A text (`gpt`); an example is a window of `block` inputs and their next tokens.
    Text {
        /// The tokens.
        text: text::Text,
        /// Tokens per window (the model's context).
        block: usize,
    },
}

/// One batch as tensors: the inputs (images or token ids) and the flat targets.
pub enum Batch {
    /// `[n, c, h, w]` images and `[n]` classes.
    Images(Tensor<4>, Tensor<1, Int>),
    /// `[n, block]` token ids and `[n * block]` next tokens.
    Tokens(Tensor<2, Int>, Tensor<1, Int>),
}

impl Data {
    /// Human-readable name.
    pub fn name(&self) -> &str {
        match self {
            Data::Images(d) => &d.name,
            Data::Text { text, .. } => &text.name,
        }
    }

    /// Training examples per epoch: the images, or the windows that cover the training text once.
    pub fn train_len(&self) -> usize {
        match self {
            Data::Images(d) => d.train.len(),
            Data::Text { text, block } => (text.train.len() - 1) / block,
        }
    }

    /// The held-out loss of the unigram model (text), the baseline a language model must beat.
    pub fn baseline_loss(&self) -> Option<f64> {
        match self {
            Data::Images(_) => None,
            Data::Text { text, .. } => Some(text.unigram_nats()),
        }
    }

    /// Keeps only the first `n_train` / `n_test` examples (windows of text).
    pub fn truncate(&mut self, n_train: usize, n_test: usize) {
        match self {
            Data::Images(d) => d.truncate(n_train, n_test),
            Data::Text { text, block } => {
                for (part, n) in [(&mut text.train, n_train), (&mut text.test, n_test)] {
                    part.truncate(n.saturating_mul(*block).saturating_add(1));
                }
            }
        }
    }

    /// The examples of `epoch`, in order: a permutation of the images, or window starts drawn
    /// uniformly from the training text; both depend only on `(seed, epoch)`.
    pub fn epoch_order(&self, seed: u64, epoch: usize) -> Vec<usize> {
        match self {
            Data::Images(d) => epoch_order(d.train.len(), seed, epoch),
            Data::Text { text, block } => text::Text::starts(&text.train, *block, self.train_len(), &mut epoch_rng(seed, epoch, 0x5eed)),
        }
    }

    /// The held-out examples: every test image, or the held-out text as back-to-back windows.
    pub fn test_items(&self) -> Vec<usize> {
        match self {
            Data::Images(d) => (0..d.test.len()).collect(),
            Data::Text { text, block } => (0..(text.test.len() - 1) / block).map(|i| i * block).collect(),
        }
    }

    /// Examples evaluated per forward pass (about 500 images or 32k tokens).
    pub fn eval_chunk(&self) -> usize {
        match self {
            Data::Images(_) => 500,
            Data::Text { block, .. } => (32_768 / block).max(1),
        }
    }

    /// The batch of `items` (indices or window starts) of the training or the held-out part;
    /// `augment` applies to training images.
    pub fn batch(&self, train: bool, items: &[usize], augment: Option<&mut ChaCha8Rng>, device: &Device) -> Batch {
        match self {
            Data::Images(d) => {
                let (x, y) = d.batch(if train { &d.train } else { &d.test }, items, augment, device);
                Batch::Images(x, y)
            }
            Data::Text { text, block } => {
                let part = if train { &text.train } else { &text.test };
                let (x, y) = text::Text::windows(part, *block, items);
                let ids = |v: Vec<u32>| v.into_iter().map(|t| t as i32).collect::<Vec<i32>>();
                let n = items.len();
                Batch::Tokens(
                    Tensor::from_data(TensorData::new(ids(x), [n, *block]), device),
                    Tensor::from_data(TensorData::new(ids(y), [n * block]), device),
                )
            }
        }
    }
}

/// The order of training examples in `epoch`: a permutation that depends only on
/// `(seed, epoch)`, so a resumed run sees exactly the batches an uninterrupted one would.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut epoch_rng(seed, epoch, 0x5eed));
    order
}

/// A generator for `(seed, epoch, stream)`; different streams (shuffling, augmentation) are
/// independent and reproducible.
pub fn epoch_rng(seed: u64, epoch: usize, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_is_balanced_and_sized() {
        let d = embedded();
        assert_eq!(d.shape, [1, 28, 28]);
        assert_eq!((d.train.len(), d.test.len()), (10_000, 2_000));
        for c in 0..10u8 {
            assert_eq!(d.train.labels.iter().filter(|&&l| l == c).count(), 1000);
            assert_eq!(d.test.labels.iter().filter(|&&l| l == c).count(), 200);
        }
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(100, 7, 3);
        assert_eq!(a, epoch_order(100, 7, 3));
        assert_ne!(a, epoch_order(100, 7, 4));
        assert_ne!(a, epoch_order(100, 8, 3));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn batch_normalizes_pixels() {
        let d = embedded();
        let (x, y) = d.batch(&d.train, &[0, 1], None, &Device::flex());
        assert_eq!(x.dims(), [2, 1, 28, 28]);
        let v = x.into_data().try_to_vec::<f32>().unwrap();
        let p = d.train.pixels[5] as f32 / 255.0;
        assert!((v[5] - (p - FMNIST_MEAN) / FMNIST_STD).abs() < 1e-6);
        assert_eq!(y.into_data().convert::<i64>().try_to_vec::<i64>().unwrap()[0], d.train.labels[0] as i64);
    }

    #[test]
    fn missing_folder_is_a_clear_error() {
        let e = load("/nonexistent/normwd-data").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/normwd-data") && e.contains("no such folder"), "{e}");
    }
}
