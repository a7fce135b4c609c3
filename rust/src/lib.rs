//! mistralvllm's native core: a thin PyO3 layer over the mistral.rs engine.

mod chunk;
mod counts;
mod device;
mod embeddings;
mod engine;
mod errors;
mod layer_settings;
// Public for rust/benches/direct.rs, which loads a model the same way and
// drives mistral.rs without Python to measure the binding's overhead.
pub mod loader;
pub mod model_files;
#[cfg(test)]
mod quantized_kernels;
mod request;
mod sampling;
mod scorer;
mod session;
mod session_info;
mod session_settings;
mod stop_trimmer;
mod stream;
mod topology;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<session::Session>()?;
    m.add_class::<stream::ChatStream>()?;
    m.add_class::<chunk::ChatChunk>()?;
    m.add_class::<chunk::Usage>()?;
    m.add_class::<chunk::ToolCall>()?;
    m.add_class::<chunk::TokenLogprob>()?;
    m.add_class::<chunk::TopTokenLogprob>()?;
    m.add_class::<topology::Topology>()?;
    m.add_class::<topology::TopologyRange>()?;
    m.add_function(wrap_pyfunction!(model_files::inspect_model, m)?)?;
    m.add_function(wrap_pyfunction!(device::check_device, m)?)?;
    m.add("ISQ_NAMES", layer_settings::ISQ_NAMES.to_vec())?;
    m.add("BUILD_FEATURES", loader::build_features())?;
    m.add("MISTRALRS_VERSION", MISTRALRS_VERSION)?;
    Ok(())
}

/// The mistral.rs release this extension links (pinned in rust/Cargo.toml).
const MISTRALRS_VERSION: &str = "0.8.1";
