//! `normwd audit`: one row per tensor with its role, scale-invariance, decay and lr group.

use super::{choice, fail, table, Failure};
use burn::tensor::Device;
use clap::Args;
use normwd::data::text::{Text, Tokens};
use normwd::model::{GptShape, Input, ModelKind, Net, NormKind};
use normwd::params::{describe, DecayPolicy, DecayRule};
use normwd::train::config::RunConfig;

/// Flags of `audit`.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Architecture.
    #[arg(long, default_value = "convnet", value_parser = choice::<ModelKind>())]
    pub model: ModelKind,
    /// Normalization after each linear layer (default: bn; gpt: ln).
    #[arg(long, value_parser = choice::<NormKind>())]
    pub norm: Option<NormKind>,
    /// Which tensors are decayed.
    #[arg(long, default_value = "exclude-norm-bias", value_parser = choice::<DecayPolicy>())]
    pub decay_policy: DecayPolicy,
    /// Decay embeddings and position embeddings (true/false; default: only under --decay-policy all).
    #[arg(long)]
    pub decay_embeddings: Option<bool>,
    /// gpt: transformer blocks (4).
    #[arg(long, default_value_t = 4)]
    pub n_layer: usize,
    /// gpt: attention heads (4).
    #[arg(long, default_value_t = 4)]
    pub n_head: usize,
    /// gpt: width (128).
    #[arg(long, default_value_t = 128)]
    pub n_embd: usize,
    /// gpt: context length (64).
    #[arg(long, default_value_t = 64)]
    pub block_size: usize,
    /// gpt: QK-norm.
    #[arg(long)]
    pub qk_norm: bool,
    /// gpt: output head tied to the token embedding (true/false, default true).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub tie_embeddings: bool,
    /// Input shape as C,H,W (default 1,28,28; 3,32,32 for resnet20).
    #[arg(long)]
    pub input: Option<String>,
    /// Also detect scale-invariance numerically (AdamP's cosine test and a direct rescaling
    /// test) on one batch and compare with the structural flag.
    #[arg(long)]
    pub check: bool,
}

/// The input shape for model `m` from `--input`.
pub fn input_shape(m: ModelKind, input: &Option<String>) -> Result<[usize; 3], Failure> {
    let shape = match input {
        Some(s) => {
            let v: Vec<usize> = s
                .split(',')
                .map(|x| x.trim().parse().map_err(|_| fail(2, format!("--input {s:?}: expected C,H,W"))))
                .collect::<Result<_, _>>()?;
            match v[..] {
                [c, h, w] if c > 0 && h >= 8 && w >= 8 => [c, h, w],
                _ => return Err(fail(2, format!("--input {s:?}: expected C,H,W with C >= 1 and H, W >= 8"))),
            }
        }
        None if m == ModelKind::Resnet20 => [3, 32, 32],
        None => [1, 28, 28],
    };
    Ok(shape)
}

/// The model `audit` describes: an image model for `shape`, or a `gpt` for the characters of
/// `text` (the embedded text, loaded once by [`run`]).
fn build(m: ModelKind, n: NormKind, gpt: Option<(GptShape, &Text)>, shape: [usize; 3], device: &Device) -> Net {
    match gpt {
        Some((g, text)) => Net::gpt(g, n, text.vocab_size(), 0, device),
        None => Net::new(m, n, shape, 0.1, 0, device),
    }
}

/// Runs `normwd audit`.
pub fn run(a: AuditArgs) -> Result<(), Failure> {
    // The settings are a run's, checked as `train` checks them.
    let c = RunConfig {
        model: a.model,
        norm: a.norm,
        decay_policy: Some(a.decay_policy),
        decay_embeddings: a.decay_embeddings,
        n_layer: a.n_layer,
        n_head: a.n_head,
        n_embd: a.n_embd,
        block_size: a.block_size,
        qk_norm: a.qk_norm,
        tie_embeddings: a.tie_embeddings,
        ..Default::default()
    };
    let r = c.resolve()?;
    let (m, n, policy): (ModelKind, NormKind, DecayRule) = (r.model, r.norm, r.policy);
    let shape = input_shape(m, &a.input)?;
    let text = r.gpt.map(|_| normwd::data::text::embedded(Tokens::Char));
    let gpt = r.gpt.zip(text.as_ref());
    let net = build(m, n, gpt, shape, &Device::flex());
    let infos = describe(&net, policy);
    let rows: Vec<Vec<String>> = infos
        .iter()
        .map(|p| {
            vec![
                p.path.clone(),
                format!("{:?}", p.shape),
                p.role.name().to_string(),
                if p.scale_invariant { format!("yes ({})", p.granularity.name()) } else { "no".into() },
                if p.decayed { "yes".into() } else { "no".into() },
                if p.role == normwd::params::Role::Buffer { "-".into() } else { p.group.name().to_string() },
            ]
        })
        .collect();
    let input = match r.gpt {
        Some(g) => format!(
            "{} layers, {} heads, width {}, block {}{}",
            g.n_layer,
            g.n_head,
            g.n_embd,
            g.block_size,
            if g.qk_norm { ", QK-norm" } else { "" }
        ),
        None => format!("input {shape:?}"),
    };
    println!("{} with --norm {}, --decay-policy {}, {input}", m.name(), n.name(), policy.policy.name());
    println!("{}", table(&["path", "shape", "role", "scale-invariant", "decayed", "lr group"], &rows));
    let trainable: usize = infos.iter().filter(|p| p.role != normwd::params::Role::Buffer).map(|p| p.numel()).sum();
    let decayed: usize = infos.iter().filter(|p| p.decayed).map(|p| p.numel()).sum();
    println!("{trainable} trainable parameters, {decayed} decayed");
    if a.check {
        check(m, n, gpt, shape, &infos)?;
    }
    Ok(())
}

fn check(
    m: ModelKind,
    n: NormKind,
    gpt: Option<(GptShape, &Text)>,
    shape: [usize; 3],
    infos: &[normwd::params::ParamInfo],
) -> Result<(), Failure> {
    let device = Device::flex().autodiff();
    let mut net = build(m, n, gpt, shape, &device);
    // Embedded images when the shape fits them, a seeded Gaussian batch otherwise; embedded text
    // for a gpt, after a few steps (at its start attention is nearly uniform, see `warm_up`).
    let (x, y): (Input, _) = if let Some((g, text)) = gpt {
        let data = normwd::data::Data::Text { text: text.clone(), block: g.block_size };
        let starts: Vec<usize> = (0..16).map(|i| 997 * i).collect();
        let (x, y) = normwd::train::model_batch(&data, true, &starts, None, &device);
        net = normwd::check::warm_up(net, infos, x.clone(), y.clone(), 40);
        println!("\n(gpt: checked after 40 AdamW steps on 16 windows of the embedded text)");
        (x, y)
    } else if shape == [1, 28, 28] {
        let d = normwd::data::embedded();
        let (x, y) = d.batch(&d.train, &(0..64).collect::<Vec<_>>(), None, &device);
        (x.into(), y)
    } else {
        let mut init = normwd::model::init::Init::new(1);
        let x = init.uniform::<4, _>([32, shape[0], shape[1], shape[2]], 1.0, &device);
        let y = burn::tensor::Tensor::<1, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new((0..32).map(|i| i % 10).collect::<Vec<i32>>(), [32]),
            &device,
        );
        (x.into(), y)
    };
    let checks = normwd::check::check(&net, infos, x, y);
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            vec![
                c.path.clone(),
                if c.structural { "yes".into() } else { "no".into() },
                c.cosine.name().to_string(),
                format!("{:.1e}", c.output_change),
                if c.direct() { "yes".into() } else { "no".into() },
                if c.agree() { "yes".into() } else { "NO".into() },
            ]
        })
        .collect();
    println!();
    println!(
        "numerical check on one batch: AdamP's test |cos(g, w)| < {}/sqrt(dim) per channel, then per tensor; direct test: relative change of the logits when the tensor is scaled by {} (invariant below {:.0e})",
        normwd::check::DELTA,
        normwd::check::SCALE,
        normwd::check::OUTPUT_TOL
    );
    println!("{}", table(&["path", "structural", "cosine test", "logits change x3", "direct test", "agree"], &rows));
    // The direct test decides: AdamP's cosine test can pass by chance on a tensor that is not
    // invariant (unrelated vectors of dimension d have |cos| ~ 1/sqrt(d)), and says so above.
    let bad = checks.iter().filter(|c| c.structural != c.direct()).count();
    if bad > 0 {
        return Err(fail(1, format!("{bad} tensors where the structural flag and the direct test disagree")));
    }
    let chance = checks.iter().filter(|c| !c.agree()).count();
    if chance > 0 {
        println!("{chance} tensors pass AdamP's cosine test by chance (not invariant by the direct test)");
    }
    println!("structural and numerical scale-invariance agree on all {} weight tensors", checks.len());
    Ok(())
}
