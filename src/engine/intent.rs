//! Intent classification with a quantized instruct LLM (llama.cpp through
//! `llama-cpp-2`), constrained to the flow's labels.
//!
//! * [`IntentModel`] holds the GGUF weights, loaded once and shared.
//! * [`IntentClassifier`] owns one llama context. At construction it evaluates
//!   the flow's system prompt and few-shot examples once and keeps them in the
//!   KV cache (sequence 0, the *prefix*). A turn then evaluates only the
//!   caller's words and the assistant header, reads the next-token logits and
//!   scores the labels through a [`LabelTrie`]: no free generation, no parsing
//!   of model text. Where labels share leading tokens, the deeper branch
//!   points are evaluated in the same batch on copies of the sequence.
//! * After the turn the KV cache is cut back to the prefix.
//! * Warm drafts: while a caller is still speaking, [`IntentClassifier::warm`]
//!   evaluates their words so far (a partial transcript) on a sequence of
//!   their own, keyed by call. Their turn's classification then evaluates
//!   only what differs from the draft (the tokens after the longest common
//!   prefix) plus the assistant header. Up to [`MAX_WARM`] calls keep a
//!   draft; the least recently warmed one gives way.
//!
//! Prompts use the ChatML layout (`<|im_start|>role ... <|im_end|>`), which
//! the Qwen2.5 and SmolLM2 families use; models with another chat template
//! are refused at load with a message saying so.
//!
//! Blocking and CPU-heavy: run it on an engine thread.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use serde::Deserialize;

use super::label_trie::{LabelTrie, LabelTrieError, TokenId};
use crate::flow::Flow;

#[derive(Debug, thiserror::Error)]
pub enum IntentError {
    #[error("llama.cpp backend failed to initialise: {0}")]
    Backend(String),
    #[error("cannot load intent model {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("intent model {path} uses a chat template other than ChatML, which voice-edge does not support yet")]
    UnsupportedTemplate { path: PathBuf },
    #[error("cannot create llama context: {0}")]
    Context(String),
    #[error("flow labels cannot be scored: {0}")]
    Labels(#[from] LabelTrieError),
    #[error("prompt of {tokens} tokens does not fit the context of {n_ctx} tokens (intent.context_tokens)")]
    PromptTooLong { tokens: usize, n_ctx: u32 },
    #[error("llama decode failed: {0}")]
    Decode(String),
    #[error("llama KV cache: {0}")]
    KvCache(String),
}

/// `[intent]` in the config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IntentConfig {
    /// A model name from `models/manifest.toml`, or a path to a GGUF file.
    pub model: String,
    /// CPU threads for one decode.
    pub threads: u32,
    /// KV cache size in tokens: the cached prefix plus one turn.
    pub context_tokens: u32,
    /// Callers' words beyond this many tokens are cut (hostile or runaway input).
    pub max_utterance_tokens: u32,
    /// Softmax temperature over the label scores, for calibration.
    pub temperature: f32,
}

impl Default for IntentConfig {
    fn default() -> Self {
        IntentConfig {
            model: "qwen2.5-coder-1.5b-instruct-q4_k_m".into(),
            threads: 2,
            context_tokens: 4096,
            max_utterance_tokens: 128,
            temperature: 1.0,
        }
    }
}

impl IntentConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=64).contains(&self.threads) {
            return Err(format!("intent.threads: {} is outside 1..=64", self.threads));
        }
        if !(256..=131_072).contains(&self.context_tokens) {
            return Err(format!("intent.context_tokens: {} is outside 256..=131072", self.context_tokens));
        }
        if !(8..=2048).contains(&self.max_utterance_tokens) {
            return Err(format!("intent.max_utterance_tokens: {} is outside 8..=2048", self.max_utterance_tokens));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0 && self.temperature <= 10.0) {
            return Err(format!("intent.temperature: {} must be in (0, 10]", self.temperature));
        }
        Ok(())
    }
}

/// The result of classifying one utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentDecision {
    pub label: String,
    /// Probability of `label` among the flow's labels.
    pub confidence: f32,
    /// `confidence` minus the runner-up's probability.
    pub margin: f32,
    /// Every label with its probability, most likely first.
    pub ranking: Vec<(String, f32)>,
    /// Tokens evaluated for this turn (the caller's words and the headers).
    pub tokens_evaluated: usize,
    pub elapsed: Duration,
}

fn backend() -> Result<&'static LlamaBackend, IntentError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| LlamaBackend::init().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| IntentError::Backend(e.clone()))
}

/// GGUF weights, shared by every classifier.
pub struct IntentModel {
    model: LlamaModel,
    cfg: IntentConfig,
}

impl IntentModel {
    pub fn load(path: &Path, cfg: IntentConfig) -> Result<Self, IntentError> {
        let backend = backend()?;
        let params = LlamaModelParams::default();
        let model = LlamaModel::load_from_file(backend, path, &params)
            .map_err(|e| IntentError::Load { path: path.to_path_buf(), reason: e.to_string() })?;
        let template = model.meta_val_str("tokenizer.chat_template").unwrap_or_default();
        if !template.contains("<|im_start|>") {
            return Err(IntentError::UnsupportedTemplate { path: path.to_path_buf() });
        }
        Ok(IntentModel { model, cfg })
    }

    pub fn config(&self) -> &IntentConfig {
        &self.cfg
    }

    /// A classifier for `flow`'s intents, with its prompt prefix evaluated.
    pub fn classifier(&self, flow: &Flow) -> Result<IntentClassifier<'_>, IntentError> {
        IntentClassifier::new(self, flow)
    }

    fn tokenize(&self, text: &str, parse_special: bool) -> Vec<LlamaToken> {
        self.model.vocab().tokenize(text.as_bytes(), false, parse_special)
    }
}

/// The prompt before the caller's words: system prompt and few-shot turns.
pub fn prompt_prefix(flow: &Flow) -> String {
    let mut p = String::new();
    p.push_str("<|im_start|>system\n");
    p.push_str(flow.classifier.instructions.trim());
    p.push_str("\n\nIntents:\n");
    for intent in &flow.intents {
        p.push_str(&format!("- {}: {}\n", intent.name, intent.description.trim()));
    }
    p.push_str("\nAnswer with one intent name and nothing else.<|im_end|>\n");
    for (text, label) in flow.interleaved_examples() {
        p.push_str(&format!("<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n{}<|im_end|>\n", text.trim(), label));
    }
    p.push_str("<|im_start|>user\n");
    p
}

/// What follows the caller's words, up to where the label starts.
const TURN_SUFFIX: &str = "<|im_end|>\n<|im_start|>assistant\n";
/// What ends every label, so no label is a prefix of another.
const LABEL_END: &str = "<|im_end|>";
/// Prefix evaluation chunk.
const PREFIX_BATCH: usize = 512;
/// Utterances classified together in one decode, at most.
pub const MAX_BATCH: usize = 8;
/// Calls whose words so far are kept warm in the cache, at most.
pub const MAX_WARM: usize = 8;

/// What identifies a caller's warm draft (the engine uses the call id).
pub type DraftKey = u64;

/// A caller's words so far, evaluated on their own sequence after the prefix.
struct Draft {
    key: DraftKey,
    seq: i32,
    tokens: Vec<LlamaToken>,
    last_used: u64,
}

pub struct IntentClassifier<'m> {
    model: &'m IntentModel,
    ctx: LlamaContext<'m>,
    labels: Vec<String>,
    trie: LabelTrie,
    prefix_len: usize,
    drafts: Vec<Draft>,
    /// The first of the [`MAX_WARM`] sequences kept for drafts.
    first_draft_seq: i32,
    uses: u64,
}

impl<'m> IntentClassifier<'m> {
    fn new(model: &'m IntentModel, flow: &Flow) -> Result<Self, IntentError> {
        let cfg = &model.cfg;
        let labels: Vec<String> = flow.intents.iter().map(|i| i.name.clone()).collect();
        let label_tokens: Vec<Vec<TokenId>> = labels
            .iter()
            .map(|l| model.tokenize(&format!("{l}{LABEL_END}"), true).iter().map(|t| t.0).collect())
            .collect();
        let trie = LabelTrie::new(label_tokens)?;
        // the prompt's sequence, then per batched request its own and one per
        // deeper branch point, then the drafts
        let per_request = 1 + trie.branch_points().iter().filter(|b| !b.path.is_empty()).count();
        let first_draft_seq = (1 + MAX_BATCH * per_request) as i32;
        let n_seq = 1 + MAX_BATCH * per_request + MAX_WARM;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(cfg.context_tokens))
            .with_n_batch(PREFIX_BATCH as u32)
            .with_n_ubatch(PREFIX_BATCH as u32)
            .with_n_seq_max(n_seq as u32)
            .with_kv_unified(true)
            .with_n_threads(cfg.threads as i32)
            .with_n_threads_batch(cfg.threads as i32);
        let ctx = model.model.new_context(backend()?, params).map_err(|e| IntentError::Context(e.to_string()))?;
        let n_ctx = ctx.n_ctx();

        let mut prefix = model.model.vocab().tokenize(prompt_prefix(flow).as_bytes(), true, true);
        prefix.shrink_to_fit();
        let needed = prefix.len() + (MAX_BATCH + MAX_WARM) * (cfg.max_utterance_tokens as usize + 64);
        if needed > n_ctx as usize {
            return Err(IntentError::PromptTooLong { tokens: needed, n_ctx });
        }
        let mut clf = IntentClassifier { model, ctx, labels, trie, prefix_len: prefix.len(), drafts: Vec::new(), first_draft_seq, uses: 0 };
        clf.eval_prefix(&prefix)?;
        Ok(clf)
    }

    fn eval_prefix(&mut self, prefix: &[LlamaToken]) -> Result<(), IntentError> {
        let mut batch = LlamaBatch::new(PREFIX_BATCH, 1);
        for (chunk_no, chunk) in prefix.chunks(PREFIX_BATCH).enumerate() {
            batch.clear();
            for (i, tok) in chunk.iter().enumerate() {
                let pos = (chunk_no * PREFIX_BATCH + i) as i32;
                batch.add(*tok, pos, &[0], false).map_err(|e| IntentError::Decode(e.to_string()))?;
            }
            self.ctx.decode(&mut batch).map_err(|e| IntentError::Decode(e.to_string()))?;
        }
        Ok(())
    }

    /// Tokens of the cached prompt prefix.
    pub fn prefix_tokens(&self) -> usize {
        self.prefix_len
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Classifies what the caller said.
    pub fn classify(&mut self, utterance: &str) -> Result<IntentDecision, IntentError> {
        let mut decisions = self.classify_batch(&[utterance])?;
        Ok(decisions.remove(0))
    }

    /// Classifies several utterances (from concurrent calls) in one decode:
    /// each gets its own sequence, a copy of the cached prefix, and all their
    /// tokens go through the model together. At most [`MAX_BATCH`].
    pub fn classify_batch(&mut self, utterances: &[&str]) -> Result<Vec<IntentDecision>, IntentError> {
        let requests: Vec<(Option<DraftKey>, &str)> = utterances.iter().map(|u| (None, *u)).collect();
        self.classify_drafted(&requests)
    }

    /// [`classify_batch`](Self::classify_batch), each utterance starting
    /// from its caller's warm draft where there is one.
    pub fn classify_drafted(&mut self, requests: &[(Option<DraftKey>, &str)]) -> Result<Vec<IntentDecision>, IntentError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let utterances = &requests[..requests.len().min(MAX_BATCH)];
        let result = self.score_batch(utterances);
        // Whatever happened, leave only the prefix in the cache.
        let reset = self.reset_to_prefix(utterances.len());
        let scored = result?;
        reset?;
        let elapsed = started.elapsed();
        Ok(scored
            .into_iter()
            .map(|(probs, tokens_evaluated)| {
                let mut ranking: Vec<(String, f32)> = self.labels.iter().cloned().zip(probs).collect();
                ranking.sort_by(|a, b| b.1.total_cmp(&a.1));
                let (label, confidence) = ranking[0].clone();
                let margin = confidence - ranking.get(1).map(|r| r.1).unwrap_or(0.0);
                IntentDecision { label, confidence, margin, ranking, tokens_evaluated, elapsed }
            })
            .collect())
    }

    /// Sequences per request: its own, plus one per deeper branch point.
    fn seqs_per_request(&self) -> i32 {
        1 + self.trie.branch_points().iter().filter(|b| !b.path.is_empty()).count() as i32
    }

    /// The caller's words as tokens: plain text (special-token syntax in
    /// them is not parsed), cut at `max_utterance_tokens`.
    fn words(&self, utterance: &str) -> Vec<LlamaToken> {
        let mut words = self.model.tokenize(utterance.trim(), false);
        words.truncate(self.model.cfg.max_utterance_tokens as usize);
        words
    }

    /// Evaluates a caller's words so far (a partial transcript) on their
    /// draft, reusing what the draft already holds. Returns the tokens
    /// evaluated. On failure the draft is dropped.
    pub fn warm(&mut self, key: DraftKey, partial: &str) -> Result<usize, IntentError> {
        let words = self.words(partial);
        let d = self.draft_for(key)?;
        let (seq, held) = (self.drafts[d].seq, self.drafts[d].tokens.len());
        let common = common_prefix(&self.drafts[d].tokens, &words);
        let result = self.extend_draft(seq, held, common, &words);
        match result {
            Ok(()) => {
                self.drafts[d].tokens = words;
                Ok(self.drafts[d].tokens.len() - common)
            }
            Err(e) => {
                let gone = self.drafts.swap_remove(d);
                let _ = self.ctx.kv_cache_seq_rm(gone.seq, None, None);
                Err(e)
            }
        }
    }

    /// Drops `key`'s draft, if it has one.
    pub fn forget(&mut self, key: DraftKey) -> Result<(), IntentError> {
        if let Some(d) = self.drafts.iter().position(|d| d.key == key) {
            let gone = self.drafts.swap_remove(d);
            self.ctx.kv_cache_seq_rm(gone.seq, None, None).map_err(|e| IntentError::KvCache(e.to_string()))?;
        }
        Ok(())
    }

    /// Runs a draft and a drafted classification once, so the first caller
    /// does not pay for first use (buffers sized, cache pages touched).
    pub fn warm_up(&mut self, utterance: &str) -> Result<(), IntentError> {
        const WARM_UP: DraftKey = DraftKey::MAX;
        let half: String = utterance.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
        let result = self.warm(WARM_UP, &half).and_then(|_| self.classify_drafted(&[(Some(WARM_UP), utterance)]));
        self.forget(WARM_UP)?;
        result.map(drop)
    }

    fn extend_draft(&mut self, seq: i32, held: usize, common: usize, words: &[LlamaToken]) -> Result<(), IntentError> {
        let kv = |e: llama_cpp_2::context::kv_cache::KvCacheConversionError| IntentError::KvCache(e.to_string());
        if common < held {
            self.ctx.kv_cache_seq_rm(seq, Some((self.prefix_len + common) as u32), None).map_err(kv)?;
        }
        let new = &words[common..];
        if new.is_empty() {
            return Ok(());
        }
        let mut batch = LlamaBatch::new(new.len(), 1);
        for (k, tok) in new.iter().enumerate() {
            let pos = (self.prefix_len + common + k) as i32;
            batch.add(*tok, pos, &[seq], k + 1 == new.len()).map_err(|e| IntentError::Decode(e.to_string()))?;
        }
        self.ctx.decode(&mut batch).map_err(|e| IntentError::Decode(e.to_string()))
    }

    /// The index of `key`'s draft, claiming a sequence (the least recently
    /// used one when all are taken) with only the prefix in it.
    fn draft_for(&mut self, key: DraftKey) -> Result<usize, IntentError> {
        self.uses += 1;
        if let Some(d) = self.drafts.iter().position(|d| d.key == key) {
            self.drafts[d].last_used = self.uses;
            return Ok(d);
        }
        let kv = |e: llama_cpp_2::context::kv_cache::KvCacheConversionError| IntentError::KvCache(e.to_string());
        let d = if self.drafts.len() < MAX_WARM {
            // the lowest sequence no draft holds (a failed draft gives its own back)
            let seq = (self.first_draft_seq..)
                .find(|s| self.drafts.iter().all(|d| d.seq != *s))
                .expect("fewer drafts than sequences");
            self.drafts.push(Draft { key, seq, tokens: Vec::new(), last_used: self.uses });
            self.drafts.len() - 1
        } else {
            let d = (0..self.drafts.len()).min_by_key(|&d| self.drafts[d].last_used).expect("MAX_WARM > 0");
            self.ctx.kv_cache_seq_rm(self.drafts[d].seq, None, None).map_err(kv)?;
            let seq = self.drafts[d].seq;
            self.drafts[d] = Draft { key, seq, tokens: Vec::new(), last_used: self.uses };
            d
        };
        self.ctx.kv_cache_seq_cp(0, self.drafts[d].seq, None, None).map_err(kv)?;
        Ok(d)
    }

    fn score_batch(&mut self, requests: &[(Option<DraftKey>, &str)]) -> Result<Vec<(Vec<f32>, usize)>, IntentError> {
        let cfg = &self.model.cfg;
        let per = self.seqs_per_request();
        let suffix = self.model.tokenize(TURN_SUFFIX, true);
        let turns: Vec<Vec<LlamaToken>> = requests
            .iter()
            .map(|(_, u)| {
                let mut words = self.words(u);
                words.extend(suffix.iter().copied());
                words
            })
            .collect();

        // One decode for every request's words, each on a copy of the prefix
        // (and of its caller's draft as far as the draft agrees).
        let mut starts = Vec::with_capacity(turns.len());
        for (i, ((key, _), turn)) in requests.iter().zip(&turns).enumerate() {
            let seq = 1 + i as i32 * per;
            let draft = key.and_then(|k| self.drafts.iter().find(|d| d.key == k));
            let (source, start) = match draft {
                Some(d) => (d.seq, common_prefix(&d.tokens, &turn[..turn.len() - suffix.len()])),
                None => (0, 0),
            };
            self.ctx
                .kv_cache_seq_cp(source, seq, None, Some((self.prefix_len + start) as u32))
                .map_err(|e| IntentError::KvCache(e.to_string()))?;
            starts.push(start);
        }
        let total: usize = turns.iter().zip(&starts).map(|(t, s)| t.len() - s).sum();
        let mut batch = LlamaBatch::new(total.max(1), 1);
        let mut last_index = Vec::with_capacity(turns.len());
        for (i, (turn, &start)) in turns.iter().zip(&starts).enumerate() {
            let seq = 1 + i as i32 * per;
            for (k, tok) in turn.iter().enumerate().skip(start) {
                let pos = (self.prefix_len + k) as i32;
                batch.add(*tok, pos, &[seq], k + 1 == turn.len()).map_err(|e| IntentError::Decode(e.to_string()))?;
            }
            last_index.push(batch.n_tokens() - 1);
        }
        self.ctx.decode(&mut batch).map_err(|e| IntentError::Decode(e.to_string()))?;

        // Logit rows per request and branch point: the root reads the turn's
        // last token; deeper points are evaluated in one more decode.
        let branch_points = self.trie.branch_points().to_vec();
        let mut rows: Vec<Vec<Vec<f32>>> = vec![vec![Vec::new(); branch_points.len()]; turns.len()];
        let deeper: usize = branch_points.iter().map(|b| b.path.len()).sum::<usize>() * turns.len();
        let mut branch_batch = LlamaBatch::new(deeper.max(1), 1);
        let mut pending: Vec<(usize, usize, i32)> = Vec::new();
        for (i, turn) in turns.iter().enumerate() {
            let own = 1 + i as i32 * per;
            let end_pos = (self.prefix_len + turn.len()) as i32;
            let mut seq = own;
            for (b, bp) in branch_points.iter().enumerate() {
                if bp.path.is_empty() {
                    rows[i][b] = self.ctx.get_logits_ith(last_index[i]).to_vec();
                    continue;
                }
                seq += 1;
                self.ctx.kv_cache_seq_cp(own, seq, None, None).map_err(|e| IntentError::KvCache(e.to_string()))?;
                for (k, &tok) in bp.path.iter().enumerate() {
                    let last = k + 1 == bp.path.len();
                    branch_batch
                        .add(LlamaToken(tok), end_pos + k as i32, &[seq], last)
                        .map_err(|e| IntentError::Decode(e.to_string()))?;
                    if last {
                        pending.push((i, b, branch_batch.n_tokens() - 1));
                    }
                }
            }
        }
        if !pending.is_empty() {
            self.ctx.decode(&mut branch_batch).map_err(|e| IntentError::Decode(e.to_string()))?;
            for (i, b, idx) in pending {
                rows[i][b] = self.ctx.get_logits_ith(idx).to_vec();
            }
        }
        let deeper_per_turn: usize = branch_points.iter().map(|b| b.path.len()).sum();
        Ok(turns
            .iter()
            .zip(&starts)
            .enumerate()
            .map(|(i, (turn, start))| {
                let probs = self
                    .trie
                    .probabilities(cfg.temperature, |b, tok| rows[i][b].get(tok as usize).copied().unwrap_or(f32::NEG_INFINITY));
                (probs, turn.len() - start + deeper_per_turn)
            })
            .collect())
    }

    /// Drops every request sequence; sequence 0 (the prefix) is never written.
    fn reset_to_prefix(&mut self, requests: usize) -> Result<(), IntentError> {
        let used = requests as i32 * self.seqs_per_request();
        for seq in 1..=used {
            self.ctx.kv_cache_seq_rm(seq, None, None).map_err(|e| IntentError::KvCache(e.to_string()))?;
        }
        Ok(())
    }
}

/// How many leading tokens two sequences share.
fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
