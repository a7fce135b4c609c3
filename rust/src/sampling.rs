//! Sampling options of one request, turned into the engine's sampling
//! parameters, and the seeded sampler that gives a request its own random
//! stream.

use std::collections::HashMap;
use std::sync::Arc;

use mistralrs::core::ReasoningEffort;
use mistralrs::{Constraint, CustomLogitsProcessor, DType, SamplingParams, StopTokens, Tensor};
use pyo3::FromPyObject;

use crate::errors::{Error, Result};

/// Logits processors a request runs before the engine samples.
pub type LogitsProcessors = Vec<Arc<dyn CustomLogitsProcessor>>;

/// How the engine writes one answer: a Python `mistralvllm.SamplingParams`,
/// read by its attribute names. That type checks every bound; this one only
/// converts.
#[derive(Clone, Debug, Default, FromPyObject)]
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
    /// Log-probabilities of each chosen token, and of `top_logprobs` top tokens.
    pub logprobs: bool,
    pub top_logprobs: Option<usize>,
    /// Added to the logits of these token ids before sampling.
    pub logit_bias: Option<HashMap<u32, f32>>,
    /// Constrained decoding (llguidance inside mistral.rs): the answer is JSON
    /// that validates against the schema (JSON text), matches the regex, or
    /// is a sentence of the Lark grammar. At most one of the three.
    #[pyo3(attribute("json_schema_text"))]
    pub json_schema: Option<String>,
    pub regex: Option<String>,
    pub grammar: Option<String>,
    /// Whether a thinking model thinks (its template's `enable_thinking`;
    /// unset: the template's default), and how hard (`reasoning_effort`:
    /// low, medium or high, for templates that read it).
    pub think: Option<bool>,
    pub reasoning_effort: Option<String>,
}

/// What the engine takes of a request's sampling options.
pub struct EngineSampling {
    pub params: SamplingParams,
    /// For a seeded request, the processor that does the random draw.
    pub processors: Option<LogitsProcessors>,
    pub constraint: Constraint,
    pub logprobs: bool,
    /// What the chat template is told: `enable_thinking` and `reasoning_effort`.
    pub think: Option<bool>,
    pub reasoning_effort: Option<ReasoningEffort>,
}

impl Sampling {
    /// The engine's sampling parameters, logits processors and constraint.
    ///
    /// mistral.rs 0.8.1 has one RNG per engine, shared by all sequences, so a
    /// per-request seed cannot be passed to it. A seeded request instead draws
    /// its token in [`SeededSampler`] (from the penalized logits, with the
    /// request's temperature/top-k/top-p/min-p) and hands the engine a
    /// one-hot distribution that its greedy path then picks.
    pub fn into_engine(self) -> Result<EngineSampling> {
        let constraint = self.constraint()?;
        let reasoning_effort = self.reasoning_effort()?;
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
            top_n_logprobs: if self.logprobs {
                self.top_logprobs.unwrap_or(0)
            } else {
                0
            },
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
        Ok(EngineSampling {
            params,
            processors,
            constraint,
            logprobs: self.logprobs,
            think: self.think,
            reasoning_effort,
        })
    }

    /// `reasoning_effort` as the engine takes it.
    pub fn reasoning_effort(&self) -> Result<Option<ReasoningEffort>> {
        match self.reasoning_effort.as_deref() {
            None => Ok(None),
            Some("low") => Ok(Some(ReasoningEffort::Low)),
            Some("medium") => Ok(Some(ReasoningEffort::Medium)),
            Some("high") => Ok(Some(ReasoningEffort::High)),
            Some(other) => Err(Error::request(format!(
                "reasoning_effort: '{other}' is not one of low, medium, high"
            ))),
        }
    }

    fn constraint(&self) -> Result<Constraint> {
        match (&self.json_schema, &self.regex, &self.grammar) {
            (None, None, None) => Ok(Constraint::None),
            (Some(text), None, None) => Ok(Constraint::JsonSchema(
                serde_json::from_str(text)
                    .map_err(|e| Error::request(format!("json_schema: not valid JSON ({e})")))?,
            )),
            (None, Some(pattern), None) => Ok(Constraint::Regex(pattern.clone())),
            (None, None, Some(lark)) => Ok(Constraint::Lark(lark.clone())),
            _ => Err(Error::request(
                "give at most one of json_schema, regex and grammar",
            )),
        }
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
pub fn only_choice(logits: &Tensor, vocab: usize, chosen: usize) -> mistralrs::Result<Tensor> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
