//! What a stream yields: `ChatChunk`s of text, with the finished request's
//! `Usage`, its `ToolCall`s and per-token `TokenLogprob`s, converted from the
//! engine's response types.

use mistralrs::core::{ResponseLogprob, ToolCallResponse, TopLogprob};
use pyo3::prelude::*;

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

impl Usage {
    /// The engine's usage of a finished request, with the times measured here.
    pub fn from_engine(usage: mistralrs::Usage, first_token_s: f64, total_s: f64) -> Self {
        Self {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total_tokens,
            time_to_first_token_s: first_token_s,
            prompt_time_s: usage.total_prompt_time_sec as f64,
            prompt_tok_per_s: usage.avg_prompt_tok_per_sec as f64,
            decode_tok_per_s: usage.avg_compl_tok_per_sec as f64,
            total_time_s: total_s,
            cached_prompt_tokens: usage.cached_prompt_tokens,
        }
    }
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

/// A piece of generated text, and of a thinking model's reasoning (what its
/// template's think tags enclose, kept out of `text`); the last chunk carries `finish_reason` and `usage`,
/// `tool_calls` when the model called tools instead of answering, and
/// `stop_sequence`, the request's stop string the answer ended on, if any.
/// `logprobs` has one entry per token generated since the previous chunk
/// when the request asked for log-probabilities.
#[pyclass(module = "mistralvllm._core", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct ChatChunk {
    pub text: String,
    pub reasoning: String,
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
            "ChatChunk(text={:?}, reasoning={:?}, finish_reason={:?}, usage={}, tool_calls={:?}, stop_sequence={:?}, logprobs={})",
            self.text,
            self.reasoning,
            self.finish_reason,
            self.usage.as_ref().map_or("None".into(), |u| u.__repr__()),
            self.tool_calls,
            self.stop_sequence,
            self.logprobs.len()
        )
    }
}
