//! The exception hierarchy, created here once and re-exported by `mistralvllm`,
//! and `Error`: what every function of the crate returns, turned into the
//! matching Python exception at the boundary (`From<Error> for PyErr`).

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

/// An error of this crate; each kind becomes one Python exception class.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting (session argument, topology, device, dtype) is invalid: `ConfigError`.
    #[error("{0}")]
    Config(String),
    /// A model could not be found, read or loaded: `ModelLoadError`.
    #[error("{0}")]
    ModelLoad(String),
    /// A request was rejected or failed inside the engine: `RequestError`.
    #[error("{0}")]
    Request(String),
    /// A prompt does not fit the context window: `ContextOverflowError`,
    /// with `prompt_tokens` and `context_length` as attributes.
    #[error("{message}")]
    ContextOverflow {
        message: String,
        prompt_tokens: usize,
        context_length: usize,
    },
    /// An error raised by Python itself (a failed attribute read), passed on as is.
    #[error(transparent)]
    Python(#[from] PyErr),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn config(message: impl Into<String>) -> Self {
        Self::Config(message.into())
    }

    pub fn model_load(message: impl Into<String>) -> Self {
        Self::ModelLoad(message.into())
    }

    pub fn request(message: impl Into<String>) -> Self {
        Self::Request(message.into())
    }
}

impl From<Error> for PyErr {
    fn from(error: Error) -> Self {
        match error {
            Error::Config(message) => ConfigError::new_err(message),
            Error::ModelLoad(message) => ModelLoadError::new_err(message),
            Error::Request(message) => RequestError::new_err(message),
            Error::Python(error) => error,
            Error::ContextOverflow {
                message,
                prompt_tokens,
                context_length,
            } => Python::attach(|py| {
                let error = ContextOverflowError::new_err(message);
                let value = error.value(py);
                match value
                    .setattr("prompt_tokens", prompt_tokens)
                    .and_then(|()| value.setattr("context_length", context_length))
                {
                    Ok(()) => error,
                    Err(e) => e,
                }
            }),
        }
    }
}

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
