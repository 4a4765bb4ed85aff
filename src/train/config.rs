//! A run's settings are the core's ([`normwd_core::config`]); the engine adds the one check
//! the core cannot make: whether this build can open the device named.

pub use normwd_core::config::*;

/// Resolves `c` as the core does, and checks its `--device` against this build.
pub fn resolve(c: &RunConfig) -> Result<Resolved, ConfigError> {
    let r = c.resolve()?;
    crate::device::validate(&c.device).map_err(|expected| ConfigError::Invalid {
        key: "device".into(),
        value: c.device.clone(),
        expected,
    })?;
    Ok(r)
}
