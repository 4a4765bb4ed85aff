//! Text for language modelling: the King James Bible subset compiled into the binary (see
//! `data/embedded/LICENSE-kjv.txt` and `scripts/make_text.py`) or any UTF-8 file or folder of
//! `.txt` files; character- or byte-level tokens; the last tenth held out; seeded windows of
//! `block + 1` tokens; the unigram model's held-out loss as the baseline a model must beat.
//!
//! May import only the core; nothing of the engine.

use super::{read_file, DataError};
pub use normwd_core::kinds::Tokens;
use rand::Rng;
use std::io::Read;
use std::path::Path;

/// The embedded text: Genesis 1:1 to Judges 19:17 of the King James Version, one verse a line.
pub const EMBEDDED_TEXT: &[u8] = include_bytes!("../../data/embedded/kjv.txt.gz");

/// The share of the text held out for evaluation (its end).
pub const HELD_OUT: f64 = 0.1;

/// A text as tokens, split into a training part and a held-out part.
#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    /// Human-readable name (`embedded`, or the path).
    pub name: String,
    /// How the text was tokenized.
    pub tokens: Tokens,
    /// The characters of a character-level vocabulary, in token order (empty for bytes).
    pub chars: Vec<char>,
    /// Training tokens (the first nine tenths).
    pub train: Vec<u32>,
    /// Held-out tokens (the last tenth).
    pub test: Vec<u32>,
}

fn corrupt(file: &str, what: String) -> DataError {
    DataError::Corrupt { file: file.to_string(), what }
}

impl Text {
    /// Tokenizes `bytes` (read from `file`, named in errors) and splits off the held-out tenth.
    pub fn new(file: &str, bytes: &[u8], tokens: Tokens) -> Result<Text, DataError> {
        if bytes.is_empty() {
            return Err(corrupt(file, "holds no text: expected a non-empty text file".into()));
        }
        let (chars, ids): (Vec<char>, Vec<u32>) = match tokens {
            Tokens::Byte => (Vec::new(), bytes.iter().map(|&b| b as u32).collect()),
            Tokens::Char => {
                let s = std::str::from_utf8(bytes).map_err(|e| {
                    corrupt(file, format!("byte {} is not UTF-8: expected UTF-8 text (or --tokens byte for any file)", e.valid_up_to()))
                })?;
                let mut chars: Vec<char> = s.chars().collect();
                chars.sort_unstable();
                chars.dedup();
                let ids = s.chars().map(|c| chars.binary_search(&c).expect("every char is in the vocabulary") as u32).collect();
                (chars, ids)
            }
        };
        if ids.len() < 2 {
            return Err(corrupt(
                file,
                format!("holds {} token(s): expected enough text for a training part and a held-out tenth", ids.len()),
            ));
        }
        let cut = ids.len() - ((ids.len() as f64 * HELD_OUT).round() as usize).clamp(1, ids.len() - 1);
        Ok(Text { name: file.to_string(), tokens, chars, train: ids[..cut].to_vec(), test: ids[cut..].to_vec() })
    }

    /// Number of distinct tokens the model must embed: the text's characters, or 256 bytes.
    pub fn vocab_size(&self) -> usize {
        match self.tokens {
            Tokens::Byte => 256,
            Tokens::Char => self.chars.len(),
        }
    }

    /// Checks that both parts hold at least one window of `block + 1` tokens and that the
    /// vocabulary fits an embedding of `max_vocab` rows, naming the text and what was expected.
    pub fn check(&self, block: usize, max_vocab: usize) -> Result<(), DataError> {
        for (part, n) in [("training part", self.train.len()), ("held-out tenth", self.test.len())] {
            if n < block + 1 {
                return Err(corrupt(&self.name, format!("its {part} holds {n} tokens: expected at least one block of {block} + 1")));
            }
        }
        if self.vocab_size() > max_vocab {
            return Err(corrupt(
                &self.name,
                format!("{} distinct tokens: expected at most {max_vocab} (the model's embedding)", self.vocab_size()),
            ));
        }
        Ok(())
    }

    /// The text of `ids` (characters, or bytes read as UTF-8 where they are).
    pub fn decode(&self, ids: &[u32]) -> String {
        match self.tokens {
            Tokens::Char => ids.iter().map(|&i| self.chars.get(i as usize).copied().unwrap_or('\u{fffd}')).collect(),
            Tokens::Byte => String::from_utf8_lossy(&ids.iter().map(|&i| i as u8).collect::<Vec<u8>>()).into_owned(),
        }
    }

    /// `n` random window starts in `part` (training windows), drawn from `rng`; each window
    /// holds `block + 1` tokens (inputs and their next-token targets).
    pub fn starts(part: &[u32], block: usize, n: usize, rng: &mut impl Rng) -> Vec<usize> {
        let last = part.len() - block - 1;
        (0..n).map(|_| rng.random_range(0..=last)).collect()
    }

    /// Inputs and targets, `[starts.len() * block]` each, of the windows at `starts` in `part`.
    pub fn windows(part: &[u32], block: usize, starts: &[usize]) -> (Vec<u32>, Vec<u32>) {
        let mut x = Vec::with_capacity(starts.len() * block);
        let mut y = Vec::with_capacity(starts.len() * block);
        for &s in starts {
            x.extend_from_slice(&part[s..s + block]);
            y.extend_from_slice(&part[s + 1..s + block + 1]);
        }
        (x, y)
    }

    /// The held-out loss (nats per token) of the unigram model fitted to the training part,
    /// with add-one smoothing: the baseline a language model has to beat.
    pub fn unigram_nats(&self) -> f64 {
        let v = self.vocab_size();
        let mut counts = vec![1.0f64; v];
        for &t in &self.train {
            counts[t as usize] += 1.0;
        }
        let total: f64 = counts.iter().sum();
        -self.test.iter().map(|&t| (counts[t as usize] / total).ln()).sum::<f64>() / self.test.len() as f64
    }
}

/// Bits per token of a loss in nats.
pub fn bits(nats: f64) -> f64 {
    nats / std::f64::consts::LN_2
}

/// The embedded text, tokenized.
pub fn embedded(tokens: Tokens) -> Text {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(EMBEDDED_TEXT).read_to_end(&mut raw).expect("the embedded text is compiled in and checked by tests");
    let mut t = Text::new("embedded", &raw, tokens).expect("the embedded text is UTF-8");
    t.name = "embedded".into();
    t
}

/// A text file, or a folder whose `.txt` files (in name order) are read as one text, each
/// checked on its own in character mode so an error names the file.
pub fn load(path: &Path, tokens: Tokens) -> Result<Text, DataError> {
    let name = path.display().to_string();
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(|source| DataError::Io { file: name.clone(), source })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "txt") && p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(DataError::NotFound { spec: name, what: "a folder without .txt files: expected UTF-8 text files".into() });
        }
        let mut all = Vec::new();
        for f in &files {
            let bytes = read_file(f)?;
            if tokens == Tokens::Char {
                Text::new(&f.display().to_string(), &bytes, tokens)?;
            }
            all.extend_from_slice(&bytes);
        }
        return Text::new(&name, &all, tokens);
    }
    Text::new(&name, &read_file(path)?, tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use sha2::{Digest, Sha256};

    #[test]
    fn the_embedded_text_is_the_recorded_one() {
        let sums = include_str!("../../data/embedded/SHA256SUMS");
        let want = sums.lines().find(|l| l.ends_with("  kjv.txt.gz")).expect("kjv.txt.gz is in SHA256SUMS").split("  ").next().unwrap();
        let got: String = Sha256::digest(EMBEDDED_TEXT).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, want);
        let t = embedded(Tokens::Char);
        assert_eq!(t.vocab_size(), 62);
        assert_eq!(t.train.len() + t.test.len(), 999_808, "ASCII: one character per byte");
        assert_eq!(t.test.len(), 99_981);
        assert!(t.decode(&t.train[..31]).starts_with("In the beginning God created"));
        let b = embedded(Tokens::Byte);
        assert_eq!((b.vocab_size(), b.train.len()), (256, t.train.len()));
        // A unigram model of English letters: about 3 nats (4.4 bits) per character, far
        // from uniform over 62 (4.1 nats).
        let u = t.unigram_nats();
        assert!(u > 2.5 && u < 3.5 && u < (62f64).ln(), "{u}");
        assert!((bits(u) - u / 2f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn bad_text_is_refused_naming_the_file() {
        let e = Text::new("a.txt", b"", Tokens::Char).unwrap_err().to_string();
        assert!(e.contains("a.txt") && e.contains("holds no text"), "{e}");
        let e = Text::new("b.txt", b"abc\xff\xfe", Tokens::Char).unwrap_err().to_string();
        assert!(e.contains("b.txt: byte 3 is not UTF-8") && e.contains("--tokens byte"), "{e}");
        assert_eq!(Text::new("b.txt", b"abc\xff\xfe", Tokens::Byte).unwrap().train.len(), 4);
        let short = Text::new("c.txt", "hello world, hello".as_bytes(), Tokens::Char).unwrap();
        let e = short.check(8, 64).unwrap_err().to_string();
        assert!(e.contains("c.txt: its held-out tenth holds 2 tokens: expected at least one block of 8 + 1"), "{e}");
        let e = embedded(Tokens::Char).check(64, 32).unwrap_err().to_string();
        assert!(e.contains("62 distinct tokens: expected at most 32"), "{e}");
        assert!(embedded(Tokens::Char).check(128, 64).is_ok());
    }

    #[test]
    fn windows_are_next_token_pairs_and_seeded() {
        let t = Text::new("t", "abcdefghijklmnopqrstuvwxyz".as_bytes(), Tokens::Char).unwrap();
        let (x, y) = Text::windows(&t.train, 4, &[0, 10]);
        assert_eq!(t.decode(&x), "abcdklmn");
        assert_eq!(t.decode(&y), "bcdelmno");
        let draw = |seed| Text::starts(&t.train, 4, 8, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        assert_eq!(draw(1), draw(1));
        assert!(draw(1).iter().all(|&s| s + 5 <= t.train.len()));
    }

    #[test]
    fn a_folder_is_its_txt_files_in_order() {
        let dir = std::env::temp_dir().join(format!("normwd-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("b.txt"), "world\n".repeat(20)).unwrap();
        std::fs::write(dir.join("a.txt"), "hello\n".repeat(20)).unwrap();
        std::fs::write(dir.join("notes.md"), "ignored").unwrap();
        let t = load(&dir, Tokens::Char).unwrap();
        assert!(t.decode(&t.train).starts_with("hello\nhello"));
        assert!(t.decode(&t.test).ends_with("world\n"));
        std::fs::write(dir.join("c.txt"), b"\xc3").unwrap();
        let e = load(&dir, Tokens::Char).unwrap_err().to_string();
        assert!(e.contains("c.txt: byte 0 is not UTF-8"), "{e}");
        let e = load(&dir.join("missing.txt"), Tokens::Char).unwrap_err().to_string();
        assert!(e.contains("missing.txt: cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
