//! Converting Python chat messages and sampling options into mistral.rs request data.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use either::Either;
use indexmap::IndexMap;
use mistralrs::{CustomLogitsProcessor, DType, MessageContent, SamplingParams, StopTokens, Tensor};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::errors::RequestError;

pub const ROLES: &[&str] = &["system", "user", "assistant", "tool"];

/// `[{"role": "user", "content": "..."}]` → the engine's message list.
pub fn convert_messages(
    messages: &Bound<'_, PyList>,
) -> PyResult<Vec<IndexMap<String, MessageContent>>> {
    if messages.is_empty() {
        return Err(RequestError::new_err(
            "messages: expected at least one message",
        ));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let message: &Bound<'_, PyDict> = item.downcast().map_err(|_| {
                RequestError::new_err(format!(
                    "messages[{i}]: expected a dict with 'role' and 'content'"
                ))
            })?;
            let text_field = |name: &str| -> PyResult<String> {
                message
                    .get_item(name)?
                    .ok_or_else(|| RequestError::new_err(format!("messages[{i}].{name}: missing")))?
                    .extract::<String>()
                    .map_err(|_| {
                        RequestError::new_err(format!("messages[{i}].{name}: expected a string"))
                    })
            };
            let role = text_field("role")?;
            if !ROLES.contains(&role.as_str()) {
                return Err(RequestError::new_err(format!(
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
) -> PyResult<RequestInput> {
    match (messages, prompt) {
        (Some(messages), None) => Ok(Either::Left(convert_messages(messages)?)),
        (None, Some(prompt)) if !prompt.is_empty() => Ok(Either::Right(prompt)),
        (None, Some(_)) => Err(RequestError::new_err("prompt: expected a non-empty string")),
        _ => Err(RequestError::new_err("give either messages or prompt")),
    }
}

/// Sampling options of one request, as Python passes them.
#[derive(Clone, Debug, Default)]
pub struct Sampling {
    pub max_tokens: Option<usize>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub min_p: Option<f64>,
    pub seed: Option<u64>,
    pub stop: Option<Vec<String>>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    /// Log-probabilities of each chosen token and of this many top tokens
    /// (`None`: no log-probabilities).
    pub top_logprobs: Option<usize>,
    /// Added to the logits of these token ids before sampling.
    pub logit_bias: Option<HashMap<u32, f32>>,
}

impl Sampling {
    /// Engine sampling parameters plus, for a seeded request, the logits
    /// processor that does the random draw.
    ///
    /// mistral.rs 0.8.1 has one RNG per engine, shared by all sequences, so a
    /// per-request seed cannot be passed to it. A seeded request instead draws
    /// its token in [`SeededSampler`] (from the penalized logits, with the
    /// request's temperature/top-k/top-p/min-p) and hands the engine a
    /// one-hot distribution that its greedy path then picks.
    pub fn into_engine(
        self,
    ) -> PyResult<(SamplingParams, Option<Vec<Arc<dyn CustomLogitsProcessor>>>)> {
        if let Some(t) = self.temperature.filter(|t| !(0.0..=100.0).contains(t)) {
            return Err(RequestError::new_err(format!(
                "temperature: {t} is outside 0..100"
            )));
        }
        if let Some(p) = self.top_p.filter(|p| !(0.0..=1.0).contains(p)) {
            return Err(RequestError::new_err(format!("top_p: {p} is outside 0..1")));
        }
        if let Some(p) = self.min_p.filter(|p| !(0.0..=1.0).contains(p)) {
            return Err(RequestError::new_err(format!("min_p: {p} is outside 0..1")));
        }
        if self.max_tokens == Some(0) {
            return Err(RequestError::new_err("max_tokens: expected at least 1"));
        }
        // Temperature 0 (or none) is greedy decoding, as in OpenAI's API.
        let temperature = self.temperature.filter(|t| *t > 1e-7);
        let seeded = match (self.seed, temperature) {
            (Some(seed), Some(temperature)) => Some(SeededSampler {
                seed,
                temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
            }),
            _ => None,
        };
        // mistral.rs reads an unset temperature as 1.0; 0.0 is its greedy path.
        let engine_temperature = if seeded.is_some() { None } else { temperature };
        let params = SamplingParams {
            temperature: Some(engine_temperature.unwrap_or(0.0)),
            top_k: if seeded.is_some() { None } else { self.top_k },
            top_p: if seeded.is_some() { None } else { self.top_p },
            min_p: if seeded.is_some() { None } else { self.min_p },
            top_n_logprobs: self.top_logprobs.unwrap_or(0),
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            repetition_penalty: self.repetition_penalty,
            stop_toks: self.stop.filter(|s| !s.is_empty()).map(StopTokens::Seqs),
            max_len: self.max_tokens,
            logits_bias: self.logit_bias.filter(|bias| !bias.is_empty()),
            n_choices: 1,
            dry_params: None,
        };
        let processors = seeded.map(|s| vec![Arc::new(s) as Arc<dyn CustomLogitsProcessor>]);
        Ok((params, processors))
    }
}

/// Draws the next token from a per-request random stream keyed by the seed
/// and the position, so the same seed gives the same text whatever else the
/// engine is batching.
struct SeededSampler {
    seed: u64,
    temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
    min_p: Option<f64>,
}

/// SplitMix64: a well-mixed 64-bit value from a 64-bit key.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl SeededSampler {
    /// Index of the drawn token, given logits and the sequence length so far.
    fn draw(&self, logits: &[f32], position: usize) -> usize {
        let mut order: Vec<usize> = (0..logits.len())
            .filter(|&i| logits[i].is_finite())
            .collect();
        if order.is_empty() {
            return 0;
        }
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        if let Some(k) = self.top_k.filter(|k| *k > 0) {
            order.truncate(k);
        }
        let max = logits[order[0]] as f64;
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i] as f64 - max) / self.temperature).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        let mut keep = probs.len();
        if let Some(top_p) = self.top_p.filter(|p| *p > 0.0 && *p < 1.0) {
            let mut cumulative = 0.0;
            keep = probs
                .iter()
                .position(|p| {
                    cumulative += p;
                    cumulative >= top_p
                })
                .map_or(keep, |i| i + 1);
        }
        if let Some(min_p) = self.min_p.filter(|p| *p > 0.0) {
            let floor = probs[0] * min_p;
            keep = keep.min(probs.iter().take_while(|p| **p >= floor).count().max(1));
        }
        let kept = &probs[..keep];
        let mass: f64 = kept.iter().sum();
        let key = splitmix64(self.seed) ^ (position as u64);
        let uniform = (splitmix64(key) >> 11) as f64 / (1u64 << 53) as f64 * mass;
        let mut cumulative = 0.0;
        for (j, p) in kept.iter().enumerate() {
            cumulative += p;
            if uniform < cumulative {
                return order[j];
            }
        }
        order[keep - 1]
    }
}

/// Logits like `logits` that leave `chosen` as the only token the engine can pick.
fn only_choice(logits: &Tensor, vocab: usize, chosen: usize) -> mistralrs::Result<Tensor> {
    let mut one_hot = vec![f32::NEG_INFINITY; vocab];
    one_hot[chosen] = 0.0;
    Tensor::from_vec(one_hot, logits.shape(), logits.device())?.to_dtype(logits.dtype())
}

impl CustomLogitsProcessor for SeededSampler {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> mistralrs::Result<Tensor> {
        let values = logits.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let chosen = self.draw(&values, context.len());
        only_choice(logits, values.len(), chosen)
    }
}

/// Scores a fixed text: at each step it records the log-probability of the
/// text's next token and then makes that token the only choice, so the
/// engine's greedy path walks through the text (teacher forcing).
pub struct ForcedScorer {
    tokens: Vec<u32>,
    logprobs: Mutex<Vec<f64>>,
    /// Each position's whole log-softmax row, when kept (`keeping_distributions`).
    distributions: Option<Mutex<Vec<Vec<f32>>>>,
}

impl ForcedScorer {
    pub fn new(tokens: Vec<u32>) -> Self {
        Self {
            tokens,
            logprobs: Mutex::new(Vec::new()),
            distributions: None,
        }
    }

    /// A scorer that also keeps every position's whole next-token distribution.
    pub fn keeping_distributions(tokens: Vec<u32>) -> Self {
        Self {
            distributions: Some(Mutex::new(Vec::new())),
            ..Self::new(tokens)
        }
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// One log-probability per token after the first, once the request is done.
    pub fn logprobs(&self) -> PyResult<Vec<f64>> {
        let logprobs = self
            .logprobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.check_complete(logprobs.len())?;
        Ok(logprobs)
    }

    /// One log-softmax row per token after the first, once the request is done.
    pub fn distributions(&self) -> PyResult<Vec<Vec<f32>>> {
        let rows = match &self.distributions {
            Some(rows) => std::mem::take(&mut *rows.lock().unwrap_or_else(|e| e.into_inner())),
            None => Vec::new(),
        };
        self.check_complete(rows.len())?;
        Ok(rows)
    }

    fn check_complete(&self, scored: usize) -> PyResult<()> {
        if scored + 1 != self.tokens.len() {
            return Err(RequestError::new_err(format!(
                "score: the engine stopped after {} of {} tokens",
                scored,
                self.tokens.len() - 1
            )));
        }
        Ok(())
    }
}

/// Log-softmax of `logits` (summed in f64).
fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let total: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let log_total = max + total.ln();
    logits
        .iter()
        .map(|&l| (l as f64 - log_total) as f32)
        .collect()
}

/// Log-softmax of `logits` at `target`.
fn log_probability(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let total: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    logits[target] as f64 - max - total.ln()
}

impl CustomLogitsProcessor for ForcedScorer {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> mistralrs::Result<Tensor> {
        let values = logits.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let Some(&target) = self.tokens.get(context.len()) else {
            return Ok(logits.clone());
        };
        let target = target as usize;
        if target >= values.len() {
            return Err(candle_core::Error::Msg(format!(
                "token id {target} is outside the vocabulary ({} tokens)",
                values.len()
            )));
        }
        self.logprobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(log_probability(&values, target));
        if let Some(rows) = &self.distributions {
            rows.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(log_softmax(&values));
        }
        only_choice(logits, values.len(), target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_probability_matches_a_hand_computed_softmax() {
        let logits = [1.0f32, 2.0, 3.0];
        let total: f64 = [1.0f64, 2.0, 3.0].iter().map(|l| l.exp()).sum();
        for target in 0..3 {
            let expected = ((target + 1) as f64).exp().ln() - total.ln();
            assert!((log_probability(&logits, target) - expected).abs() < 1e-9);
        }
        // Large logits do not overflow.
        assert!((log_probability(&[1000.0, 1000.0], 0) - 0.5f64.ln()).abs() < 1e-9);
    }

    #[test]
    fn a_log_softmax_row_holds_each_tokens_log_probability() {
        let logits = [1.0f32, -2.0, 3.5, 1000.0, 999.0];
        let row = log_softmax(&logits);
        for (target, value) in row.iter().enumerate() {
            // f32 holds ~7 significant digits (-1002.0 to within ~6e-5).
            let expected = log_probability(&logits, target);
            assert!((*value as f64 - expected).abs() <= 1e-6 * expected.abs().max(1.0));
        }
        let mass: f64 = row.iter().map(|v| (*v as f64).exp()).sum();
        assert!((mass - 1.0).abs() < 1e-6);
    }

    fn sampler(seed: u64) -> SeededSampler {
        SeededSampler {
            seed,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            min_p: None,
        }
    }

    #[test]
    fn same_seed_and_position_draw_the_same_token() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        for position in 0..20 {
            assert_eq!(
                sampler(7).draw(&logits, position),
                sampler(7).draw(&logits, position)
            );
        }
    }

    #[test]
    fn different_seeds_draw_different_sequences() {
        let logits = vec![0.0f32; 1000];
        let a: Vec<_> = (0..10).map(|p| sampler(1).draw(&logits, p)).collect();
        let b: Vec<_> = (0..10).map(|p| sampler(2).draw(&logits, p)).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let s = SeededSampler {
            top_k: Some(1),
            ..sampler(3)
        };
        let logits = vec![0.1f32, 2.0, 0.5, f32::NEG_INFINITY];
        assert!((0..20).all(|p| s.draw(&logits, p) == 1));
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        let s = SeededSampler {
            top_p: Some(0.5),
            ..sampler(9)
        };
        let logits = vec![5.0f32, 0.0, 0.0, 0.0];
        assert!((0..50).all(|p| s.draw(&logits, p) == 0));
    }
}
