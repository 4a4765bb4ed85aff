//! `normwd audit`: one row per tensor with its role, scale-invariance, decay and lr group.

use super::{choice, fail, table, Failure};
use burn::tensor::Device;
use clap::Args;
use normwd::model::{ModelKind, Net, NormKind};
use normwd::params::{describe, DecayPolicy};

/// Flags of `audit`.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Architecture.
    #[arg(long, default_value = "convnet", value_parser = choice::<ModelKind>())]
    pub model: ModelKind,
    /// Normalization after each linear layer.
    #[arg(long, default_value = "bn", value_parser = choice::<NormKind>())]
    pub norm: NormKind,
    /// Which tensors are decayed.
    #[arg(long, default_value = "exclude-norm-bias", value_parser = choice::<DecayPolicy>())]
    pub decay_policy: DecayPolicy,
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

/// Runs `normwd audit`.
pub fn run(a: AuditArgs) -> Result<(), Failure> {
    let (m, n, policy) = (a.model, a.norm, a.decay_policy);
    let shape = input_shape(m, &a.input)?;
    let net = Net::new(m, n, shape, 0.1, 0, &Device::flex());
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
    println!("{} with --norm {}, --decay-policy {}, input {:?}", m.name(), n.name(), policy.name(), shape);
    println!("{}", table(&["path", "shape", "role", "scale-invariant", "decayed", "lr group"], &rows));
    let trainable: usize = infos.iter().filter(|p| p.role != normwd::params::Role::Buffer).map(|p| p.numel()).sum();
    let decayed: usize = infos.iter().filter(|p| p.decayed).map(|p| p.numel()).sum();
    println!("{trainable} trainable parameters, {decayed} decayed");
    if a.check {
        check(m, n, shape, &infos)?;
    }
    Ok(())
}

fn check(m: ModelKind, n: NormKind, shape: [usize; 3], infos: &[normwd::params::ParamInfo]) -> Result<(), Failure> {
    let device = Device::flex().autodiff();
    let net = Net::new(m, n, shape, 0.1, 0, &device);
    // Embedded images when the shape fits them, a seeded Gaussian batch otherwise.
    let (x, y) = if shape == [1, 28, 28] {
        let d = normwd::data::embedded();
        d.batch(&d.train, &(0..64).collect::<Vec<_>>(), None, &device)
    } else {
        let mut init = normwd::model::init::Init::new(1);
        let x = init.uniform::<4, _>([32, shape[0], shape[1], shape[2]], 1.0, &device);
        let y = burn::tensor::Tensor::<1, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new((0..32).map(|i| i % 10).collect::<Vec<i32>>(), [32]),
            &device,
        );
        (x, y)
    };
    let checks = normwd::check::check(&net, infos, x, y);
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            vec![
                c.path.clone(),
                if c.structural { "yes".into() } else { "no".into() },
                c.cosine.name().to_string(),
                format!("{:.1e}", c.loss_change),
                if c.direct() { "yes".into() } else { "no".into() },
                if c.agree() { "yes".into() } else { "NO".into() },
            ]
        })
        .collect();
    println!();
    println!(
        "numerical check on one batch: AdamP's test |cos(g, w)| < {}/sqrt(dim) per channel, then per tensor; direct test: loss change when the tensor is scaled by {} (invariant below {:.0e})",
        normwd::check::DELTA,
        normwd::check::SCALE,
        normwd::check::LOSS_TOL
    );
    println!("{}", table(&["path", "structural", "cosine test", "loss change x3", "direct test", "agree"], &rows));
    let bad = checks.iter().filter(|c| !c.agree()).count();
    if bad > 0 {
        return Err(fail(1, format!("{bad} tensors where the structural and numerical flags disagree")));
    }
    println!("structural and numerical scale-invariance agree on all {} weight tensors", checks.len());
    Ok(())
}
