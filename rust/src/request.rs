//! One chat or completion request for the engine: Python messages or a
//! prompt, the sampling options, tools and constraints, assembled into the
//! mistral.rs request in one place (`ChatRequest::into_engine`).

use either::Either;
use indexmap::IndexMap;
use mistralrs::core::{RequestMessage, Tool, ToolChoice};
use mistralrs::{Constraint, MessageContent, NormalRequest, Request, Response, SamplingParams};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use tokio::sync::mpsc::Sender;

use crate::errors::{Error, Result};
use crate::sampling::{LogitsProcessors, Sampling};

pub const ROLES: &[&str] = &["system", "user", "assistant", "tool"];

/// `[{"role": "user", "content": "..."}]` → the engine's message list.
pub fn convert_messages(
    messages: &Bound<'_, PyList>,
) -> Result<Vec<IndexMap<String, MessageContent>>> {
    if messages.is_empty() {
        return Err(Error::request("messages: expected at least one message"));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let message: &Bound<'_, PyDict> = item.downcast().map_err(|_| {
                Error::request(format!(
                    "messages[{i}]: expected a dict with 'role' and 'content'"
                ))
            })?;
            let text_field = |name: &str| -> Result<String> {
                message
                    .get_item(name)?
                    .ok_or_else(|| Error::request(format!("messages[{i}].{name}: missing")))?
                    .extract::<String>()
                    .map_err(|_| Error::request(format!("messages[{i}].{name}: expected a string")))
            };
            let role = text_field("role")?;
            if !ROLES.contains(&role.as_str()) {
                return Err(Error::request(format!(
                    "messages[{i}].role: '{role}' is not one of {}",
                    ROLES.join(", ")
                )));
            }
            let content = text_field("content")?;
            let mut converted = IndexMap::new();
            converted.insert("role".to_string(), Either::Left(role));
            converted.insert("content".to_string(), Either::Left(content));
            Ok(converted)
        })
        .collect()
}

/// What a request asks about: a conversation (chat template applied) or raw
/// text to continue (a completion).
pub type RequestInput = Either<Vec<IndexMap<String, MessageContent>>, String>;

/// Exactly one of `messages` and `prompt`.
pub fn convert_input(
    messages: Option<&Bound<'_, PyList>>,
    prompt: Option<String>,
) -> Result<RequestInput> {
    match (messages, prompt) {
        (Some(messages), None) => Ok(Either::Left(convert_messages(messages)?)),
        (None, Some(prompt)) if !prompt.is_empty() => Ok(Either::Right(prompt)),
        (None, Some(_)) => Err(Error::request("prompt: expected a non-empty string")),
        _ => Err(Error::request("give either messages or prompt")),
    }
}

/// A chat or completion request as Python gave it.
pub struct ChatRequest {
    pub input: RequestInput,
    pub sampling: Sampling,
    /// Tools in OpenAI's shape (JSON text); mistral.rs renders them with the
    /// chat template and parses calls from the answer.
    pub tools: Option<String>,
    pub tool_choice: Option<String>,
}

impl ChatRequest {
    /// The engine's request, answering on `response`.
    pub fn into_engine(self, response: Sender<Response>) -> Result<Request> {
        let tools = self.tools.as_deref().map(parse_tools).transpose()?;
        let tool_choice = parse_tool_choice(self.tool_choice.as_deref())?;
        let sampling = self.sampling.into_engine()?;
        let messages = match self.input {
            Either::Left(messages) => RequestMessage::Chat {
                messages,
                enable_thinking: sampling.think,
                reasoning_effort: sampling.reasoning_effort,
            },
            Either::Right(text) => RequestMessage::Completion {
                text,
                echo_prompt: false,
                best_of: None,
            },
        };
        Ok(engine_request(EngineRequest {
            messages,
            params: sampling.params,
            processors: sampling.processors,
            constraint: sampling.constraint,
            tools,
            tool_choice,
            logprobs: sampling.logprobs,
            response,
        }))
    }
}

fn parse_tools(text: &str) -> Result<Vec<Tool>> {
    serde_json::from_str(text).map_err(|e| {
        Error::request(format!(
            "tools: expected a list of {{\"type\": \"function\", \"function\": {{\"name\": ..., \"parameters\": ...}}}} ({e})"
        ))
    })
}

fn parse_tool_choice(choice: Option<&str>) -> Result<Option<ToolChoice>> {
    match choice {
        None => Ok(None),
        Some("auto") => Ok(Some(ToolChoice::Auto)),
        Some("none") => Ok(Some(ToolChoice::None)),
        Some(other) => Err(Error::request(format!(
            "tool_choice: '{other}' is not one of auto, none"
        ))),
    }
}

/// The parts of a streamed engine request that differ between requests.
pub struct EngineRequest {
    pub messages: RequestMessage,
    pub params: SamplingParams,
    pub processors: Option<LogitsProcessors>,
    pub constraint: Constraint,
    pub tools: Option<Vec<Tool>>,
    pub tool_choice: Option<ToolChoice>,
    pub logprobs: bool,
    pub response: Sender<Response>,
}

/// The one place a mistral.rs request is assembled: always streamed, never
/// truncated (a prompt that does not fit is an error), one model.
pub fn engine_request(parts: EngineRequest) -> Request {
    Request::Normal(Box::new(NormalRequest {
        messages: parts.messages,
        sampling_params: parts.params,
        response: parts.response,
        return_logprobs: parts.logprobs,
        is_streaming: true,
        id: 0,
        constraint: parts.constraint,
        suffix: None,
        tools: parts.tools,
        tool_choice: parts.tool_choice,
        logits_processors: parts.processors,
        return_raw_logits: false,
        web_search_options: None,
        model_id: None,
        truncate_sequence: false,
    }))
}
