//! The records of `metrics.jsonl`: one JSON object per line, told apart by its `kind`
//! (`epoch`, `probe`, `done`). Anything that reads or writes normwd runs uses these types.

use serde::{Deserialize, Serialize};

/// One line of `metrics.jsonl`.
// A record lives only while its line is read or written, one at a time: boxing the probe
// would cost an allocation per line for no memory saved.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    /// The end of an epoch.
    Epoch(EpochRecord),
    /// A per-layer measurement.
    Probe(Probe),
    /// The end of the run.
    Done(Summary),
}

impl Record {
    /// Parses one line; `None` for a line that is not a record (a torn last line, another tool's).
    pub fn parse(line: &str) -> Option<Record> {
        serde_json::from_str(line).ok()
    }

    /// The record as one line of JSON, without the newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("records serialize")
    }
}

/// Per-epoch record (`{"kind":"epoch", ...}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number (1-based).
    pub epoch: usize,
    /// Updates so far.
    pub step: u64,
    /// Base learning rate at the end of the epoch (schedule applied).
    pub lr: f64,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Training accuracy over the epoch (model in training mode).
    pub train_acc: f64,
    /// Test loss.
    pub test_loss: f64,
    /// Test accuracy.
    pub test_acc: f64,
    /// Training throughput of the epoch.
    pub images_per_sec: f64,
}

/// What a finished run reports (`{"kind":"done", ...}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Epochs trained.
    pub epochs: usize,
    /// Updates taken.
    pub steps: u64,
    /// Final test accuracy.
    pub test_acc: f64,
    /// Final test loss.
    pub test_loss: f64,
    /// Final training loss.
    pub train_loss: f64,
    /// Mean training throughput over the epochs run in this process.
    pub images_per_sec: f64,
    /// Wall time of the epochs run in this process.
    pub wall_s: f64,
    /// Text: the held-out loss of the unigram model fitted to the training text, the baseline
    /// a language model must beat (nats per token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_loss: Option<f64>,
}

/// One probe record (`{"kind":"probe", ...}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    /// Update number (1-based) the measurement belongs to.
    pub step: u64,
    /// Parameter path.
    pub path: String,
    /// `||w||` before the update.
    pub norm: f64,
    /// `||g||`.
    pub grad_norm: f64,
    /// Effective learning rate: `lr/||w||^2` (SGD) or `lr/||w||` (Adam family); NaN (`null`
    /// in the file) where it is not known (an optimizer normwd does not know, a zero norm).
    #[serde(deserialize_with = "null_is_nan")]
    pub eff_lr: f64,
    /// Angle between `w` before and after the update (radians).
    pub angle: f64,
    /// `cos(w, g)`.
    pub cos_wg: f64,
    /// Predicted equilibrium angle (radians), where the theory gives one.
    pub pred_angle: Option<f64>,
    /// Predicted equilibrium norm (F5, plain SGD only).
    pub pred_norm: Option<f64>,
    /// Predicted equilibrium `||g||/||w||` (F13, SGD on scale-invariant weights; the measured
    /// one is `grad_norm / norm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pred_ratio: Option<f64>,
    /// What the predictions stand on ([`crate::probe::Basis`]: `scale-invariant` or
    /// `approximate`); absent without a prediction, and in runs written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pred_basis: Option<String>,
    /// Whether the tensor is scale-invariant.
    pub scale_invariant: bool,
    /// Learning rate used for this tensor at this step.
    pub lr: f64,
    /// Per output channel norms (scale-invariant tensors only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channel_norm: Vec<f64>,
    /// Per output channel angular updates (scale-invariant tensors only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channel_angle: Vec<f64>,
    /// The channel norms' quantiles `[min, 10%, median, 90%, max]`, in place of
    /// `channel_norm` where a writer keeps records bounded ([`crate::probe::Channels`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channel_norm_q: Vec<f64>,
    /// The channel angles' quantiles, as `channel_norm_q`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channel_angle_q: Vec<f64>,
    /// The tensor's role ([`crate::roles::Role::name`]: `weight`, `norm-scale`, ...); absent in
    /// runs written before it was recorded, whose norm scales are known by their names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// JSON has no NaN: serde writes it as `null`, which reads back as NaN.
fn null_is_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_their_kind_first_and_round_trip() {
        let s = Summary {
            epochs: 2,
            steps: 10,
            test_acc: 0.5,
            test_loss: 1.0,
            train_loss: 1.2,
            images_per_sec: 100.0,
            wall_s: 3.0,
            baseline_loss: None,
        };
        let line = Record::Done(s).to_line();
        assert!(line.starts_with("{\"kind\":\"done\",\"epochs\":2,"), "{line}");
        assert!(matches!(Record::parse(&line), Some(Record::Done(d)) if d.steps == 10));
        // A line written before records were one type reads the same.
        let old = r#"{"kind":"epoch","epoch":1,"step":5,"lr":0.1,"train_loss":1.0,"train_acc":0.5,"test_loss":1.1,"test_acc":0.4,"images_per_sec":9.0}"#;
        assert!(matches!(Record::parse(old), Some(Record::Epoch(e)) if e.step == 5));
        assert!(Record::parse(r#"{"kind":"other"}"#).is_none());
        assert!(Record::parse(r#"{"kind":"done","epochs":2"#).is_none(), "a torn line is no record");
    }
}
