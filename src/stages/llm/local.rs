//! Local language model: a GGUF chat model run by candle (llama, qwen2, phi3, gemma3).
//!
//! The tokenizer is built from the GGUF metadata and the chat template the file carries is
//! rendered with minijinja. The KV cache is kept between calls: when a new prompt extends the
//! tokens already in the cache (the same conversation, one turn later), only the new tokens are
//! computed.

use std::fs::File;
use std::path::Path;
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use candle_core::{Device, Tensor};
use candle_transformers::generation::LogitsProcessor;
use candle_transformers::models::{
    quantized_gemma3, quantized_llama, quantized_phi3, quantized_qwen2,
};
use tokenizers::Tokenizer;

use super::chat::{ChatModel, Finish, GenStats, LlmConfig, LlmError, Message, WordChunker};
use crate::stages::Cancel;

/// End-of-turn markers of the common chat formats; whichever exist in the vocabulary stop generation.
const END_OF_TURN: [&str; 6] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "<|end|>",
    "<|endoftext|>",
    "</s>",
];

const SUPPORTED: [&str; 4] = ["llama", "qwen2", "phi3", "gemma3"];

enum Weights {
    Llama(quantized_llama::ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
    Phi3(quantized_phi3::ModelWeights),
    Gemma3(quantized_gemma3::ModelWeights),
}

impl Weights {
    /// Logits for the last position; `pos` 0 starts a fresh KV cache.
    fn forward(&mut self, x: &Tensor, pos: usize) -> candle_core::Result<Tensor> {
        match self {
            Weights::Llama(m) => m.forward(x, pos),
            Weights::Qwen2(m) => m.forward(x, pos),
            Weights::Phi3(m) => m.forward(x, pos),
            Weights::Gemma3(m) => m.forward(x, pos),
        }
    }
}

pub struct LocalModel {
    weights: Weights,
    tokenizer: Tokenizer,
    template: minijinja::Environment<'static>,
    bos: String,
    eos: String,
    stop: Vec<u32>,
    device: Device,
    cfg: LlmConfig,
    /// Tokens whose keys and values are in the model's cache, in order.
    cached: Vec<u32>,
    name: String,
    last: Option<GenStats>,
}

fn meta_str(ct: &gguf_file::Content, key: &str) -> Option<String> {
    ct.metadata
        .get(key)
        .and_then(|v| v.to_string().ok())
        .cloned()
}

fn meta_u32(ct: &gguf_file::Content, key: &str) -> Option<u32> {
    ct.metadata.get(key).and_then(|v| v.to_u32().ok())
}

impl LocalModel {
    pub fn load(path: &Path, cfg: &LlmConfig) -> Result<LocalModel, LlmError> {
        let err = |detail: String| LlmError::Load {
            path: path.display().to_string(),
            detail,
        };
        if cfg.threads > 0 && std::env::var_os("RAYON_NUM_THREADS").is_none() {
            // candle runs on rayon's global pool: sized here, unless something started it
            // already (then it keeps its size).
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(cfg.threads)
                .build_global();
        }
        let mut file = File::open(path).map_err(|e| err(e.to_string()))?;
        let ct = gguf_file::Content::read(&mut file)
            .map_err(|e| err(format!("not a GGUF file ({e})")))?;
        let arch = meta_str(&ct, "general.architecture")
            .ok_or_else(|| err("no general.architecture".into()))?;
        if !SUPPORTED.contains(&arch.as_str()) {
            return Err(LlmError::Architecture(arch));
        }
        let tokenizer = Tokenizer::from_gguf(&ct).map_err(|e| err(format!("tokenizer: {e}")))?;
        let token = |key: &str| {
            meta_u32(&ct, key)
                .and_then(|id| tokenizer.id_to_token(id))
                .unwrap_or_default()
        };
        let (bos, eos) = (
            token("tokenizer.ggml.bos_token_id"),
            token("tokenizer.ggml.eos_token_id"),
        );
        let mut stop: Vec<u32> = END_OF_TURN
            .iter()
            .filter_map(|t| tokenizer.token_to_id(t))
            .collect();
        stop.extend(meta_u32(&ct, "tokenizer.ggml.eos_token_id"));
        let source = meta_str(&ct, "tokenizer.chat_template").ok_or_else(|| {
            err(
                "the file carries no chat template (tokenizer.chat_template): is it a chat model?"
                    .into(),
            )
        })?;
        let mut template = minijinja::Environment::new();
        template.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        template.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        template
            .add_template_owned("chat", source)
            .map_err(|e| LlmError::Template(e.to_string()))?;
        let device = crate::host::compute_device().map_err(|e| err(e.to_string()))?;
        let load = |e: candle_core::Error| err(e.to_string());
        let weights = match arch.as_str() {
            "llama" => Weights::Llama(
                quantized_llama::ModelWeights::from_gguf(ct, &mut file, &device).map_err(load)?,
            ),
            "qwen2" => Weights::Qwen2(
                quantized_qwen2::ModelWeights::from_gguf(ct, &mut file, &device).map_err(load)?,
            ),
            "phi3" => Weights::Phi3(
                quantized_phi3::ModelWeights::from_gguf(false, ct, &mut file, &device)
                    .map_err(load)?,
            ),
            "gemma3" => Weights::Gemma3(
                quantized_gemma3::ModelWeights::from_gguf(ct, &mut file, &device).map_err(load)?,
            ),
            other => unreachable!("architecture {other} passed the SUPPORTED check"),
        };
        Ok(LocalModel {
            weights,
            tokenizer,
            template,
            bos,
            eos,
            stop,
            device,
            cfg: cfg.clone(),
            cached: Vec::new(),
            last: None,
            name: path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string(),
        })
    }

    /// The prompt text for `messages`, as the model's own chat template writes it.
    pub fn render(&self, messages: &[Message]) -> Result<String, LlmError> {
        self.render_with(messages, true)
    }

    fn render_with(
        &self,
        messages: &[Message],
        generation_prompt: bool,
    ) -> Result<String, LlmError> {
        let tmpl = self
            .template
            .get_template("chat")
            .map_err(|e| LlmError::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages.iter().map(|m| minijinja::context! { role => m.role, content => m.content.clone() }).collect::<Vec<_>>(),
            add_generation_prompt => generation_prompt,
            bos_token => self.bos.clone(),
            eos_token => self.eos.clone(),
        })
        .map_err(|e| LlmError::Template(e.to_string()))
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(|e| LlmError::Inference(format!("tokenizer: {e}")))?
            .get_ids()
            .to_vec())
    }

    /// Runs `prompt` through the model, reusing the cache when the prompt extends what it
    /// holds; returns the last position's logits and where computing began.
    fn prefill(&mut self, prompt: &[u32]) -> Result<(Tensor, usize), LlmError> {
        let shared = self
            .cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        let start = if shared > 0 && shared == self.cached.len() && shared < prompt.len() {
            shared
        } else {
            0
        };
        Ok((self.forward(&prompt[start..], start)?, start))
    }

    /// Runs `tokens` through the model at position `pos`; returns the last position's logits.
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Tensor, LlmError> {
        let inf = |e: candle_core::Error| LlmError::Inference(e.to_string());
        let x = Tensor::new(tokens, &self.device)
            .and_then(|t| t.unsqueeze(0))
            .map_err(inf)?;
        let logits = self.weights.forward(&x, pos).map_err(inf)?;
        let logits = logits.squeeze(0).map_err(inf)?;
        if pos == 0 {
            self.cached.clear();
        }
        self.cached.extend_from_slice(tokens);
        Ok(logits)
    }
}

impl ChatModel for LocalModel {
    fn warm_up(&mut self, messages: &[Message]) -> Result<(), LlmError> {
        let tokens = self.encode(&self.render_with(messages, false)?)?;
        if tokens.is_empty() || self.cached.starts_with(&tokens) {
            return Ok(());
        }
        let t = Instant::now();
        self.forward(&tokens, 0)?;
        tracing::debug!(
            tokens = tokens.len(),
            ms = t.elapsed().as_millis() as u64,
            "system prompt prefilled"
        );
        Ok(())
    }

    fn generate(
        &mut self,
        messages: &[Message],
        cancel: &Cancel,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<(String, Finish), LlmError> {
        let inf = |e: candle_core::Error| LlmError::Inference(e.to_string());
        let prompt = self.encode(&self.render(messages)?)?;
        if prompt.len() + 1 > self.cfg.context_tokens {
            return Err(LlmError::PromptTooLong {
                needed: prompt.len(),
                limit: self.cfg.context_tokens,
            });
        }
        let t0 = Instant::now();
        let (mut logits, start) = self.prefill(&prompt)?;
        let prefill = t0.elapsed();
        let mut sampler = LogitsProcessor::new(
            self.cfg.seed,
            Some(self.cfg.temperature),
            (self.cfg.top_p < 1.0).then_some(self.cfg.top_p),
        );
        let mut generated: Vec<u32> = Vec::new();
        let mut chunker = WordChunker::default();
        let mut text = String::new();
        let finish = loop {
            if cancel.is_cancelled() {
                break Finish::Cancelled;
            }
            if generated.len() >= self.cfg.max_tokens {
                break Finish::Length;
            }
            if self.cfg.repeat_penalty != 1.0 {
                let recent: Vec<u32> = prompt
                    .iter()
                    .chain(&generated)
                    .rev()
                    .take(self.cfg.repeat_last_n)
                    .copied()
                    .collect();
                logits = candle_transformers::utils::apply_repeat_penalty(
                    &logits,
                    self.cfg.repeat_penalty,
                    &recent,
                )
                .map_err(inf)?;
            }
            let next = sampler.sample(&logits).map_err(inf)?;
            if self.stop.contains(&next) {
                break Finish::Stop;
            }
            generated.push(next);
            text = self
                .tokenizer
                .decode(&generated, true)
                .map_err(|e| LlmError::Inference(format!("tokenizer: {e}")))?;
            if let Some(chunk) = chunker.push(&text) {
                on_text(chunk);
            }
            let pos = self.cached.len();
            logits = self.forward(&[next], pos)?;
        };
        if let Some(rest) = chunker.finish(&text) {
            on_text(rest);
        }
        let stats = GenStats {
            prompt_tokens: prompt.len(),
            prefilled: prompt.len() - start,
            prefill_s: prefill.as_secs_f64(),
            generated: generated.len(),
            generate_s: (t0.elapsed() - prefill).as_secs_f64(),
        };
        tracing::debug!(
            model = %self.name,
            prompt_tokens = stats.prompt_tokens,
            prefilled = stats.prefilled,
            prefill_ms = prefill.as_millis() as u64,
            prefill_tok_s = stats.prefilled as f64 / stats.prefill_s.max(1e-9),
            generated = stats.generated,
            gen_tok_s = stats.generated as f64 / stats.generate_s.max(1e-9),
            ?finish,
            "generation done"
        );
        self.last = Some(stats);
        Ok((text.trim().to_string(), finish))
    }

    fn count_tokens(&mut self, messages: &[Message]) -> Result<usize, LlmError> {
        Ok(self.encode(&self.render(messages)?)?.len())
    }

    fn reads_turns(&self) -> bool {
        true
    }

    /// The prompt cut after the user's text, prefilled (reusing the cache where it extends
    /// it), and the next token's distribution read.
    fn end_of_turn(&mut self, messages: &[Message]) -> Result<Option<f32>, LlmError> {
        let inf = |e: candle_core::Error| LlmError::Inference(e.to_string());
        let rendered = self.render(messages)?;
        let Some(cut) = super::chat::cut_after_user(&rendered, messages) else {
            return Ok(None);
        };
        let Some(&eot) = self.encode(&rendered[cut..])?.first() else {
            return Ok(None);
        };
        let prompt = self.encode(&rendered[..cut])?;
        if prompt.len() + 1 > self.cfg.context_tokens {
            return Ok(None);
        }
        let (logits, _) = self.prefill(&prompt)?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)
            .and_then(|p| p.to_dtype(candle_core::DType::F32))
            .and_then(|p| p.to_vec1::<f32>())
            .map_err(inf)?;
        let mut top: Vec<(u32, f32)> = probs
            .iter()
            .enumerate()
            .map(|(i, &p)| (i as u32, p))
            .collect();
        top.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        top.truncate(20);
        let pieces: Vec<(u32, String, f32)> = top
            .into_iter()
            .map(|(id, p)| {
                let text = self.tokenizer.decode(&[id], true).unwrap_or_default();
                (id, text, p)
            })
            .collect();
        Ok(Some(super::chat::end_mass(
            eot,
            pieces.iter().map(|(id, t, p)| (*id, t.as_str(), *p)),
        )))
    }

    fn set_config(&mut self, cfg: &LlmConfig) {
        self.cfg = cfg.clone();
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn stats(&self) -> Option<GenStats> {
        self.last
    }
}
