//! The exception hierarchy, created here once and re-exported by `mistralvllm`.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    mistralvllm,
    MistralVllmError,
    PyException,
    "Base class of every error raised by mistralvllm."
);
create_exception!(
    mistralvllm,
    ModelLoadError,
    MistralVllmError,
    "A model could not be found, read or loaded by the engine."
);
create_exception!(
    mistralvllm,
    ConfigError,
    MistralVllmError,
    "A setting (session argument, topology, config file) is invalid."
);
create_exception!(
    mistralvllm,
    RequestError,
    MistralVllmError,
    "A chat request was rejected or failed inside the engine."
);
create_exception!(
    mistralvllm,
    ContextOverflowError,
    RequestError,
    "A prompt (plus the tokens asked for) does not fit the model's context window."
);

/// Text of a panic payload, for turning a caught panic into a Python error.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("MistralVllmError", py.get_type::<MistralVllmError>())?;
    m.add("ModelLoadError", py.get_type::<ModelLoadError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("RequestError", py.get_type::<RequestError>())?;
    m.add(
        "ContextOverflowError",
        py.get_type::<ContextOverflowError>(),
    )?;
    Ok(())
}
