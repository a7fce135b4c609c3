//! Talking to a running engine: handing it requests and waiting for the
//! answers of the quick ones (tokenize, detokenize). Every call blocks; call
//! with the GIL released.

use mistralrs::core::{DetokenizationRequest, ReasoningEffort, TokenizationRequest};
use mistralrs::{Model, Request};
use tokio::sync::mpsc::channel;

use crate::errors::{Error, Result};
use crate::request::RequestInput;

/// Hand a request to the engine's queue.
pub fn send_to_engine(model: &Model, request: Request) -> Result<()> {
    let sender = model
        .inner()
        .get_sender(None)
        .map_err(|e| Error::request(format!("engine unavailable: {e}")))?;
    sender
        .blocking_send(request)
        .map_err(|_| Error::request("the engine has stopped"))
}

/// Tokenize with the engine's tokenizer. Special tokens (e.g. a BOS) are
/// added by default to a raw prompt only: a chat template writes its own.
/// `thinking` is what the template is told (`enable_thinking`,
/// `reasoning_effort`), as a chat request tells it.
pub fn tokenize_input(
    model: &Model,
    input: RequestInput,
    add_generation_prompt: bool,
    add_special_tokens: Option<bool>,
    thinking: (Option<bool>, Option<ReasoningEffort>),
) -> Result<Vec<u32>> {
    let (tx, mut rx) = channel(1);
    let add_special_tokens = add_special_tokens.unwrap_or(input.is_right());
    let request = Request::Tokenize(TokenizationRequest {
        text: input.map_left(|conversation| conversation.messages),
        tools: None,
        add_generation_prompt,
        add_special_tokens,
        enable_thinking: thinking.0,
        reasoning_effort: thinking.1,
        response: tx,
    });
    send_to_engine(model, request)?;
    rx.blocking_recv()
        .ok_or_else(|| Error::request("the engine dropped the tokenize request"))?
        .map_err(|e| Error::request(format!("tokenize: {e:#}")))
}

/// The text of `tokens` with the engine's tokenizer.
pub fn detokenize_tokens(
    model: &Model,
    tokens: Vec<u32>,
    skip_special_tokens: bool,
) -> Result<String> {
    let (tx, mut rx) = channel(1);
    let request = Request::Detokenize(DetokenizationRequest {
        tokens,
        skip_special_tokens,
        response: tx,
    });
    send_to_engine(model, request)?;
    rx.blocking_recv()
        .ok_or_else(|| Error::request("the engine dropped the detokenize request"))?
        .map_err(|e| Error::request(format!("detokenize: {e:#}")))
}
