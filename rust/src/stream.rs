//! `ChatStream`: a Python iterator over the chunks of one streaming request.
//!
//! Dropping the receiver (`close()`, leaving a `for` loop and letting the
//! stream be collected) makes the engine's next send fail, which is how
//! mistral.rs cancels a sequence.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use mistralrs::core::{ResponseLogprob, ToolCallResponse, TopLogprob};
use mistralrs::Response;
use pyo3::prelude::*;
use tokio::sync::mpsc::Receiver;
use tokio::sync::Notify;

use crate::counts::CountGuard;
use crate::errors::{ContextOverflowError, RequestError};
use crate::loader::RUNTIME;

/// Token counts and timings of one finished request.
#[pyclass(module = "mistralvllm._core", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    /// Seconds from sending the request to the first generated text.
    pub time_to_first_token_s: f64,
    /// Seconds the engine spent on the prompt (less when the prefix cache hit).
    pub prompt_time_s: f64,
    pub prompt_tok_per_s: f64,
    pub decode_tok_per_s: f64,
    pub total_time_s: f64,
    /// Prompt tokens whose KV cache came from the prefix cache (not recomputed).
    pub cached_prompt_tokens: usize,
}

#[pymethods]
impl Usage {
    fn __repr__(&self) -> String {
        format!(
            "Usage(prompt_tokens={}, completion_tokens={}, total_tokens={}, time_to_first_token_s={:.3}, prompt_time_s={:.3}, prompt_tok_per_s={:.1}, decode_tok_per_s={:.1}, total_time_s={:.3}, cached_prompt_tokens={})",
            self.prompt_tokens,
            self.completion_tokens,
            self.total_tokens,
            self.time_to_first_token_s,
            self.prompt_time_s,
            self.prompt_tok_per_s,
            self.decode_tok_per_s,
            self.total_time_s,
            self.cached_prompt_tokens
        )
    }
}

/// A call of one of the request's tools, as the model asked for it.
#[pyclass(module = "mistralvllm._core", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as a JSON object in text, as OpenAI's API carries them.
    pub arguments: String,
}

#[pymethods]
impl ToolCall {
    fn __repr__(&self) -> String {
        format!(
            "ToolCall(id={:?}, name={:?}, arguments={:?})",
            self.id, self.name, self.arguments
        )
    }
}

impl From<ToolCallResponse> for ToolCall {
    fn from(call: ToolCallResponse) -> Self {
        Self {
            id: call.id,
            name: call.function.name,
            arguments: call.function.arguments,
        }
    }
}

/// One of the most likely tokens at a position, with its log-probability.
#[pyclass(module = "mistralvllm._core", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct TopTokenLogprob {
    pub token_id: u32,
    /// The token's text (undecodable bytes of a partial character as U+FFFD).
    pub token: String,
    /// Natural log of the token's probability under the model.
    pub logprob: f64,
}

impl From<TopLogprob> for TopTokenLogprob {
    fn from(top: TopLogprob) -> Self {
        Self {
            token_id: top.token,
            token: top.bytes.unwrap_or_default(),
            logprob: top.logprob as f64,
        }
    }
}

/// A generated token's log-probability and the most likely tokens at its
/// position (as many as `top_logprobs` asked for).
#[pyclass(module = "mistralvllm._core", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct TokenLogprob {
    /// The token's text (undecodable bytes of a partial character as U+FFFD).
    pub token: String,
    /// Natural log of the token's probability under the model.
    pub logprob: f64,
    pub top_logprobs: Vec<TopTokenLogprob>,
}

impl From<ResponseLogprob> for TokenLogprob {
    fn from(chosen: ResponseLogprob) -> Self {
        let token = match chosen.bytes {
            Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            None => chosen.token,
        };
        Self {
            token,
            logprob: chosen.logprob as f64,
            top_logprobs: chosen.top_logprobs.into_iter().map(Into::into).collect(),
        }
    }
}

#[pymethods]
impl TokenLogprob {
    fn __repr__(&self) -> String {
        format!(
            "TokenLogprob(token={:?}, logprob={:.4}, top_logprobs={})",
            self.token,
            self.logprob,
            self.top_logprobs.len()
        )
    }
}

/// A piece of generated text; the last chunk carries `finish_reason` and `usage`,
/// `tool_calls` when the model called tools instead of answering, and
/// `stop_sequence`, the request's stop string the answer ended on, if any.
/// `logprobs` has one entry per token generated since the previous chunk
/// when the request asked for log-probabilities.
#[pyclass(module = "mistralvllm._core", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct ChatChunk {
    pub text: String,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    pub tool_calls: Vec<ToolCall>,
    pub stop_sequence: Option<String>,
    pub logprobs: Vec<TokenLogprob>,
}

#[pymethods]
impl ChatChunk {
    fn __repr__(&self) -> String {
        format!(
            "ChatChunk(text={:?}, finish_reason={:?}, usage={}, tool_calls={:?}, stop_sequence={:?}, logprobs={})",
            self.text,
            self.finish_reason,
            self.usage.as_ref().map_or("None".into(), |u| u.__repr__()),
            self.tool_calls,
            self.stop_sequence,
            self.logprobs.len()
        )
    }
}

/// Cuts the answer before the first stop string. mistral.rs stops on it but
/// its stream still carries the stop text; OpenAI's API (and users) expect it
/// left out. Text that may be the start of a stop string is held back until
/// the next chunk shows whether it is. mistral.rs's finish reason is "stop"
/// for a stop string and for the end of the answer alike; `matched` tells
/// them apart (Anthropic's API answers which stop string it was).
#[derive(Default)]
struct StopTrimmer {
    stops: Vec<String>,
    pending: String,
    /// The stop string the answer ended on, once it appeared.
    matched: Option<String>,
}

impl StopTrimmer {
    fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            ..Self::default()
        }
    }

    /// The part of `text` that can be shown now; nothing once a stop string matched.
    fn push(&mut self, text: &str) -> String {
        if self.matched.is_some() {
            return String::new();
        }
        self.pending.push_str(text);
        // The stop string that ends first: the earliest, and of those the shortest.
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, s)| (*at, s.len()))
            .map(|(at, s)| (at, s.clone()));
        if let Some((at, stop)) = first {
            self.matched = Some(stop);
            self.pending.truncate(at);
            return std::mem::take(&mut self.pending);
        }
        let held = self
            .stops
            .iter()
            .map(|stop| held_back_len(&self.pending, stop))
            .max()
            .unwrap_or(0);
        self.pending.drain(..self.pending.len() - held).collect()
    }

    /// Whatever was held back, at the end of the answer.
    fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// Length of the longest end of `text` that is a proper start of `stop`.
fn held_back_len(text: &str, stop: &str) -> usize {
    (1..stop.len())
        .rev()
        .find(|&n| {
            n <= text.len()
                && stop.is_char_boundary(n)
                && text.is_char_boundary(text.len() - n)
                && text.ends_with(&stop[..n])
        })
        .unwrap_or(0)
}

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

/// The engine's own words for a prompt longer than the context window.
const ENGINE_OVERFLOW: &str = "Prompt sequence length is greater than";

fn request_error(message: String) -> PyErr {
    if message.contains(ENGINE_OVERFLOW) {
        ContextOverflowError::new_err(message)
    } else {
        RequestError::new_err(message)
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
    pub fn next_chunk(&self) -> PyResult<Option<ChatChunk>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::new();
        let mut logprobs = Vec::new();
        loop {
            let Some(rx) = state.rx.as_mut() else {
                return Ok(None);
            };
            let Some(response) = self.receive(rx) else {
                state.end();
                return Ok(None);
            };
            let (delta, engine_finish, engine_usage, tool_calls, logprob) = match response {
                Some(Response::Chunk(chunk)) => {
                    let Some(choice) = chunk.choices.into_iter().next() else {
                        continue;
                    };
                    (
                        choice.delta.content.unwrap_or_default(),
                        choice.finish_reason,
                        chunk.usage,
                        choice.delta.tool_calls.unwrap_or_default(),
                        choice.logprobs,
                    )
                }
                Some(Response::CompletionChunk(chunk)) => {
                    let Some(choice) = chunk.choices.into_iter().next() else {
                        continue;
                    };
                    (
                        choice.text,
                        choice.finish_reason,
                        chunk.usage,
                        Vec::new(),
                        choice.logprobs,
                    )
                }
                other => {
                    state.end();
                    return Err(match other {
                        Some(Response::ModelError(message, _))
                        | Some(Response::CompletionModelError(message, _)) => {
                            RequestError::new_err(format!("model error: {message}"))
                        }
                        Some(Response::InternalError(e)) | Some(Response::ValidationError(e)) => {
                            request_error(e.to_string())
                        }
                        Some(_) => {
                            RequestError::new_err("unexpected response kind from the engine")
                        }
                        None => RequestError::new_err(
                            "the engine closed the stream before the answer finished",
                        ),
                    });
                }
            };
            logprobs.extend(logprob.map(TokenLogprob::from));
            let shown = state.stops.push(&delta);
            text.push_str(&shown);
            let mut finish_reason = engine_finish;
            let mut stop_sequence = None;
            if finish_reason.is_some() {
                state.end();
                stop_sequence = state.stops.matched.clone();
                if stop_sequence.is_some() {
                    finish_reason = Some("stop".to_string());
                } else {
                    text.push_str(&state.stops.flush());
                }
            } else if text.is_empty() && tool_calls.is_empty() {
                continue;
            }
            let elapsed = self.sent_at.elapsed().as_secs_f64();
            let first_token_s = *state.first_token_s.get_or_insert(elapsed);
            let usage = engine_usage.map(|u| Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                total_tokens: u.total_tokens,
                time_to_first_token_s: first_token_s,
                prompt_time_s: u.total_prompt_time_sec as f64,
                prompt_tok_per_s: u.avg_prompt_tok_per_sec as f64,
                decode_tok_per_s: u.avg_compl_tok_per_sec as f64,
                total_time_s: elapsed,
                cached_prompt_tokens: u.cached_prompt_tokens,
            });
            return Ok(Some(ChatChunk {
                text,
                finish_reason,
                usage,
                tool_calls: tool_calls.into_iter().map(ToolCall::from).collect(),
                stop_sequence,
                logprobs,
            }));
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
        py.detach(|| self.next_chunk())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The text shown for `pieces`, and the stop string it ended on.
    fn shown(stops: &[&str], pieces: &[&str]) -> (String, Option<String>) {
        let mut trimmer = StopTrimmer::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out: String = pieces.iter().map(|p| trimmer.push(p)).collect();
        if trimmer.matched.is_none() {
            out.push_str(&trimmer.flush());
        }
        (out, trimmer.matched)
    }

    fn stop(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn stop_text_is_cut_even_across_chunks() {
        assert_eq!(
            shown(&["Rome"], &["The capital is", " Ro", "me."]),
            ("The capital is ".into(), stop("Rome"))
        );
        assert_eq!(
            shown(&["\n\n"], &["a\n", "\nb"]),
            ("a".into(), stop("\n\n"))
        );
    }

    #[test]
    fn held_back_text_comes_out_when_it_is_not_a_stop() {
        assert_eq!(shown(&["Rome"], &["Ro", "ad"]), ("Road".into(), None));
        assert_eq!(shown(&["Rome"], &["It is Ro"]), ("It is Ro".into(), None));
    }

    #[test]
    fn no_stops_passes_everything() {
        assert_eq!(shown(&[], &["a", "b"]), ("ab".into(), None));
        assert_eq!(shown(&[""], &["a"]), ("a".into(), None));
    }

    #[test]
    fn earliest_stop_wins_and_multibyte_text_is_safe() {
        assert_eq!(shown(&["b", "a"], &["xab"]), ("x".into(), stop("a")));
        assert_eq!(
            shown(&["Rome", "Ro"], &["It is Rome"]),
            ("It is ".into(), stop("Ro"))
        );
        assert_eq!(shown(&["é!"], &["caf", "é", "?"]), ("café?".into(), None));
    }
}
