//! One chat or completion request for the engine: Python messages or a
//! prompt, the sampling options, tools and constraints, assembled into the
//! mistral.rs request in one place (`ChatRequest::into_engine`).

use either::Either;
use image::DynamicImage;
use indexmap::IndexMap;
use mistralrs::core::{RequestMessage, Tool, ToolChoice};
use mistralrs::{
    Constraint, MessageContent, ModelCategory, NormalRequest, Request, Response, SamplingParams,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use serde_json::Value;
use tokio::sync::mpsc::Sender;

use crate::errors::{Error, Result};
use crate::sampling::{LogitsProcessors, Sampling};

pub const ROLES: &[&str] = &["system", "user", "assistant", "tool"];

/// The engine's list of messages, each a map of role and content.
pub type EngineMessages = Vec<IndexMap<String, MessageContent>>;

/// A content part's image, still encoded, with where it was given
/// (`messages[i].content[j]`) for the error if it does not decode.
struct EncodedImage {
    location: String,
    bytes: Vec<u8>,
}

/// A conversation for the engine: its messages, and the images their
/// content parts carry, in order of appearance.
pub struct Conversation {
    pub messages: EngineMessages,
    images: Vec<EncodedImage>,
    /// Per message that holds images: its index and its images' indices.
    image_messages: Vec<(usize, Vec<usize>)>,
}

impl Conversation {
    pub fn has_images(&self) -> bool {
        !self.images.is_empty()
    }

    /// The engine's multimodal message list: each image decoded (a file that
    /// is not an image is the request's error, naming its part), and the
    /// model's image prefix (e.g. `<image>` for LLaVA; nothing where the chat
    /// template places the images) put before the text of each message that
    /// holds images, as mistral.rs's own `MultimodalMessages` does.
    fn into_multimodal(
        mut self,
        category: &ModelCategory,
    ) -> Result<(EngineMessages, Vec<DynamicImage>)> {
        let ModelCategory::Multimodal { prefixer } = category else {
            return Err(Error::request(
                "this model reads text only; images cannot be given to it",
            ));
        };
        let images = self
            .images
            .iter()
            .map(|image| {
                image::load_from_memory(&image.bytes).map_err(|e| {
                    Error::request(format!(
                        "{}: not an image the engine can read (PNG, JPEG, WebP, GIF, BMP, TIFF, ...): {e}",
                        image.location
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        for (message, indices) in self.image_messages {
            let Some(Either::Right(parts)) = self.messages[message].get_mut("content") else {
                continue;
            };
            let text_part = parts
                .iter_mut()
                .find(|part| part.get("type") == Some(&Value::from("text")));
            match text_part.and_then(|part| part.get_mut("text")) {
                Some(Value::String(text)) => *text = prefixer.prefix_image(indices, text),
                _ => parts.push(IndexMap::from([
                    ("type".to_string(), Value::from("text")),
                    (
                        "text".to_string(),
                        Value::from(prefixer.prefix_image(indices, "")),
                    ),
                ])),
            }
        }
        Ok((self.messages, images))
    }
}

/// `[{"role": "user", "content": "..."}]` → the engine's message list. A
/// content may also be a list of parts: `{"type": "text", "text": "..."}`
/// and `{"type": "image", "image": b"<encoded image>"}`.
pub fn convert_messages(messages: &Bound<'_, PyList>) -> Result<Conversation> {
    if messages.is_empty() {
        return Err(Error::request("messages: expected at least one message"));
    }
    let mut conversation = Conversation {
        messages: Vec::with_capacity(messages.len()),
        images: Vec::new(),
        image_messages: Vec::new(),
    };
    for (i, item) in messages.iter().enumerate() {
        let message: &Bound<'_, PyDict> = item.downcast().map_err(|_| {
            Error::request(format!(
                "messages[{i}]: expected a dict with 'role' and 'content'"
            ))
        })?;
        let field = |name: &str| -> Result<Bound<'_, PyAny>> {
            message
                .get_item(name)?
                .ok_or_else(|| Error::request(format!("messages[{i}].{name}: missing")))
        };
        let role = field("role")?
            .extract::<String>()
            .map_err(|_| Error::request(format!("messages[{i}].role: expected a string")))?;
        if !ROLES.contains(&role.as_str()) {
            return Err(Error::request(format!(
                "messages[{i}].role: '{role}' is not one of {}",
                ROLES.join(", ")
            )));
        }
        let content = field("content")?;
        let content = match content.extract::<String>() {
            Ok(text) => Either::Left(text),
            Err(_) => {
                let parts = content.downcast::<PyList>().map_err(|_| {
                    Error::request(format!(
                        "messages[{i}].content: expected a string or a list of parts"
                    ))
                })?;
                let first_image = conversation.images.len();
                let parts = convert_parts(i, parts, &mut conversation.images)?;
                if conversation.images.len() > first_image {
                    let indices = (first_image..conversation.images.len()).collect();
                    conversation.image_messages.push((i, indices));
                }
                Either::Right(parts)
            }
        };
        let mut converted = IndexMap::new();
        converted.insert("role".to_string(), Either::Left(role));
        converted.insert("content".to_string(), content);
        conversation.messages.push(converted);
    }
    Ok(conversation)
}

/// The content parts of message `i`, as the chat templates read them
/// (`{"type": "text", "text": ...}`, `{"type": "image"}`); the images' bytes
/// go to `images`.
fn convert_parts(
    i: usize,
    parts: &Bound<'_, PyList>,
    images: &mut Vec<EncodedImage>,
) -> Result<Vec<IndexMap<String, Value>>> {
    parts
        .iter()
        .enumerate()
        .map(|(j, part)| {
            let location = format!("messages[{i}].content[{j}]");
            let part: &Bound<'_, PyDict> = part
                .downcast()
                .map_err(|_| Error::request(format!("{location}: expected a dict with 'type'")))?;
            let field = |name: &str| -> Result<Bound<'_, PyAny>> {
                part.get_item(name)?
                    .ok_or_else(|| Error::request(format!("{location}.{name}: missing")))
            };
            let kind = field("type")?
                .extract::<String>()
                .map_err(|_| Error::request(format!("{location}.type: expected a string")))?;
            match kind.as_str() {
                "text" => {
                    let text = field("text")?.extract::<String>().map_err(|_| {
                        Error::request(format!("{location}.text: expected a string"))
                    })?;
                    Ok(IndexMap::from([
                        ("type".to_string(), Value::from("text")),
                        ("text".to_string(), Value::from(text)),
                    ]))
                }
                "image" => {
                    let bytes = field("image")?
                        .downcast::<PyBytes>()
                        .map_err(|_| {
                            Error::request(format!("{location}.image: expected the image's bytes"))
                        })?
                        .as_bytes()
                        .to_vec();
                    images.push(EncodedImage { location, bytes });
                    Ok(IndexMap::from([("type".to_string(), Value::from("image"))]))
                }
                other => Err(Error::request(format!(
                    "{location}.type: '{other}' is not one of text, image"
                ))),
            }
        })
        .collect()
}

/// What a request asks about: a conversation (chat template applied) or raw
/// text to continue (a completion).
pub type RequestInput = Either<Conversation, String>;

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
    /// The engine's request to a model of `category`, answering on `response`.
    pub fn into_engine(
        self,
        response: Sender<Response>,
        category: &ModelCategory,
    ) -> Result<Request> {
        let tools = self.tools.as_deref().map(parse_tools).transpose()?;
        let tool_choice = parse_tool_choice(self.tool_choice.as_deref())?;
        let sampling = self.sampling.into_engine()?;
        let messages = match self.input {
            Either::Left(conversation) if conversation.has_images() => {
                let (messages, images) = conversation.into_multimodal(category)?;
                RequestMessage::MultimodalChat {
                    images,
                    audios: Vec::new(),
                    videos: Vec::new(),
                    messages,
                    enable_thinking: sampling.think,
                    reasoning_effort: sampling.reasoning_effort,
                }
            }
            Either::Left(conversation) => RequestMessage::Chat {
                messages: conversation.messages,
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
