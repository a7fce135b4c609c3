//! `ChatStream`: a Python iterator over the chunks of one streaming request.
//!
//! Dropping the receiver (`close()`, leaving a `for` loop and letting the
//! stream be collected) makes the engine's next send fail, which is how
//! mistral.rs cancels a sequence.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use mistralrs::core::{PromptTooLong, ResponseLogprob, ToolCallResponse};
use mistralrs::Response;
use pyo3::prelude::*;
use tokio::sync::mpsc::Receiver;
use tokio::sync::Notify;

use crate::chunk::{ChatChunk, TokenLogprob, ToolCall, Usage};
use crate::counts::CountGuard;
use crate::errors::{Error, Result};
use crate::loader::RUNTIME;
use crate::stop_trimmer::StopTrimmer;

struct StreamState {
    rx: Option<Receiver<Response>>,
    running: Option<CountGuard>,
    first_token_s: Option<f64>,
    stops: StopTrimmer,
}

impl StreamState {
    /// Drop the receiver (which cancels an unfinished sequence).
    fn end(&mut self) {
        self.rx = None;
        self.running = None;
    }
}

/// Iterator over `ChatChunk`s; `close()` (or dropping it) aborts the request.
#[pyclass(module = "mistralvllm._core", frozen)]
pub struct ChatStream {
    state: Mutex<StreamState>,
    sent_at: Instant,
    /// Set by `close()`, which must not wait for a thread that is waiting
    /// for the next chunk (it holds `state`): `wake` interrupts that wait.
    cancelled: AtomicBool,
    wake: Notify,
}

/// One engine response's share of the answer.
struct EngineDelta {
    text: String,
    reasoning: String,
    finish_reason: Option<String>,
    usage: Option<mistralrs::Usage>,
    tool_calls: Vec<ToolCallResponse>,
    logprob: Option<ResponseLogprob>,
}

/// What the engine sent: a delta (`Ok(None)` for a chunk without choices)
/// or the error that ends the request.
fn engine_delta(response: Option<Response>) -> Result<Option<EngineDelta>> {
    match response {
        Some(Response::Chunk(chunk)) => {
            Ok(chunk.choices.into_iter().next().map(|choice| EngineDelta {
                text: choice.delta.content.unwrap_or_default(),
                reasoning: choice.delta.reasoning_content.unwrap_or_default(),
                finish_reason: choice.finish_reason,
                usage: chunk.usage,
                tool_calls: choice.delta.tool_calls.unwrap_or_default(),
                logprob: choice.logprobs,
            }))
        }
        Some(Response::CompletionChunk(chunk)) => {
            Ok(chunk.choices.into_iter().next().map(|choice| EngineDelta {
                text: choice.text,
                reasoning: String::new(),
                finish_reason: choice.finish_reason,
                usage: chunk.usage,
                tool_calls: Vec::new(),
                logprob: choice.logprobs,
            }))
        }
        Some(other) => Err(engine_failure(other)),
        None => Err(Error::request(
            "the engine closed the stream before the answer finished",
        )),
    }
}

/// The error an engine response that is not an answer stands for.
pub fn engine_failure(response: Response) -> Error {
    match response {
        Response::ModelError(message, _) | Response::CompletionModelError(message, _) => {
            Error::request(format!("model error: {message}"))
        }
        Response::ValidationError(e) => match e.downcast_ref::<PromptTooLong>() {
            Some(too_long) => Error::ContextOverflow {
                message: e.to_string(),
                prompt_tokens: too_long.prompt_tokens,
                context_length: too_long.context_length,
            },
            None => Error::request(e.to_string()),
        },
        Response::InternalError(e) => Error::request(e.to_string()),
        _ => Error::request("unexpected response kind from the engine"),
    }
}

impl ChatStream {
    pub fn new(
        rx: Receiver<Response>,
        running: CountGuard,
        sent_at: Instant,
        stops: Vec<String>,
    ) -> Self {
        Self {
            state: Mutex::new(StreamState {
                rx: Some(rx),
                running: Some(running),
                first_token_s: None,
                stops: StopTrimmer::new(stops),
            }),
            sent_at,
            cancelled: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// The engine's next response; `None` once `close()` was called.
    fn receive(&self, rx: &mut Receiver<Response>) -> Option<Option<Response>> {
        if self.cancelled.load(Ordering::SeqCst) {
            return None;
        }
        RUNTIME.block_on(async {
            tokio::select! {
                response = rx.recv() => Some(response),
                () = self.wake.notified() => None,
            }
        })
    }

    /// Wait for the next chunk; `Ok(None)` once the answer is complete.
    /// Engine responses that show nothing yet (text held back as a possible
    /// stop string, empty deltas) are gathered into the next chunk.
    pub fn next_chunk(&self) -> Result<Option<ChatChunk>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut logprobs = Vec::new();
        loop {
            let Some(rx) = state.rx.as_mut() else {
                return Ok(None);
            };
            let Some(response) = self.receive(rx) else {
                state.end();
                return Ok(None);
            };
            let mut delta = match engine_delta(response) {
                Ok(Some(delta)) => delta,
                Ok(None) => continue,
                Err(error) => {
                    state.end();
                    return Err(error);
                }
            };
            logprobs.extend(delta.logprob.take().map(TokenLogprob::from));
            text.push_str(&state.stops.push(&delta.text));
            reasoning.push_str(&delta.reasoning);
            if delta.finish_reason.is_none()
                && text.is_empty()
                && reasoning.is_empty()
                && delta.tool_calls.is_empty()
            {
                continue;
            }
            return Ok(Some(
                self.chunk(&mut state, text, reasoning, logprobs, delta),
            ));
        }
    }

    /// The chunk that shows `text`; the last one (the engine's finish reason
    /// or a stop string) ends the stream and carries the usage.
    fn chunk(
        &self,
        state: &mut StreamState,
        mut text: String,
        reasoning: String,
        logprobs: Vec<TokenLogprob>,
        delta: EngineDelta,
    ) -> ChatChunk {
        let mut finish_reason = delta.finish_reason;
        let mut stop_sequence = None;
        if finish_reason.is_some() {
            state.end();
            stop_sequence = state.stops.matched.clone();
            if stop_sequence.is_some() {
                finish_reason = Some("stop".to_string());
            } else {
                text.push_str(&state.stops.flush());
            }
        }
        let elapsed = self.sent_at.elapsed().as_secs_f64();
        let first_token_s = *state.first_token_s.get_or_insert(elapsed);
        ChatChunk {
            text,
            reasoning,
            finish_reason,
            usage: delta
                .usage
                .map(|u| Usage::from_engine(u, first_token_s, elapsed)),
            tool_calls: delta.tool_calls.into_iter().map(ToolCall::from).collect(),
            stop_sequence,
            logprobs,
        }
    }
}

#[pymethods]
impl ChatStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Next chunk, waiting with the GIL released.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<ChatChunk>> {
        Ok(py.detach(|| self.next_chunk())?)
    }

    /// Abort the request in the engine; further iteration stops. Returns at
    /// once, also while another thread waits for the next chunk.
    fn close(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        if let Ok(mut state) = self.state.try_lock() {
            state.end();
        }
    }

    /// Whether the stream has finished or was closed.
    #[getter]
    fn closed(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
            || self.state.try_lock().is_ok_and(|state| state.rx.is_none())
    }
}
