//! mistralvllm's native core: a thin PyO3 layer over the mistral.rs engine.

mod counts;
mod device;
mod errors;
// Public for rust/benches/direct.rs, which loads a model the same way and
// drives mistral.rs without Python to measure the binding's overhead.
pub mod loader;
pub mod model_files;
#[cfg(test)]
mod quantized_kernels;
mod request;
mod session;
mod stream;
mod topology;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<session::Session>()?;
    m.add_class::<stream::ChatStream>()?;
    m.add_class::<stream::ChatChunk>()?;
    m.add_class::<stream::Usage>()?;
    m.add_class::<stream::ToolCall>()?;
    m.add_class::<stream::TokenLogprob>()?;
    m.add_class::<stream::TopTokenLogprob>()?;
    m.add_class::<topology::Topology>()?;
    m.add_class::<topology::TopologyRange>()?;
    m.add_function(wrap_pyfunction!(model_files::inspect_model, m)?)?;
    m.add("ISQ_NAMES", topology::ISQ_NAMES.to_vec())?;
    m.add("BUILD_FEATURES", loader::build_features())?;
    m.add("MISTRALRS_VERSION", MISTRALRS_VERSION)?;
    Ok(())
}

/// The mistral.rs release this extension links (pinned in rust/Cargo.toml).
const MISTRALRS_VERSION: &str = "0.8.1";
