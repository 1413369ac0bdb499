//! Text embeddings: sentences in, one L2-normalised vector per sentence out (all-MiniLM-L6-v2
//! through candle's BERT, mean-pooled over the real tokens), so that the cosine of two vectors is
//! their dot product. Memory search and `POST /v1/embeddings` use it.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use serde::{Deserialize, Serialize};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::host;
use crate::store::{ModelError, Store};

/// The files a model folder must hold.
const FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("cannot load the embedding model from {path}: {detail} (run `seesay models fetch all-minilm-l6-v2`, or point embed.model at a folder with config.json, model.safetensors and tokenizer.json)")]
    Load { path: String, detail: String },
    #[error("cannot tokenize the text to embed: {0}")]
    Tokenize(String),
    #[error("embedding failed: {0}")]
    Compute(#[from] candle_core::Error),
    #[error("thread settings: {0}")]
    Host(#[from] host::HostError),
}

/// Embedding settings (`[embed]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedConfig {
    /// A name from `seesay models list` (kind embed), or a folder with a BERT sentence model's
    /// `config.json`, `model.safetensors` and `tokenizer.json`.
    pub model: String,
    /// Longest text in tokens; longer text is cut there (all-MiniLM-L6-v2 was trained on 256).
    pub max_tokens: usize,
    /// Sentences embedded together in one batch (memory use grows with it).
    pub batch: usize,
    /// CPU threads for the model (0: every core). candle shares one pool per process: the first
    /// model loaded sizes it.
    pub threads: usize,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        EmbedConfig {
            model: "all-minilm-l6-v2".into(),
            max_tokens: 256,
            batch: 32,
            threads: 0,
        }
    }
}

/// A sentence-embedding model. `embed` takes `&self`: one model serves several threads.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dims: usize,
    batch: usize,
    name: String,
}

impl Embedder {
    /// Loads `cfg.model`: a manifest name resolved (and verified) through `store`, or a folder.
    pub fn open(cfg: &EmbedConfig, store: &Store) -> Result<Embedder, EmbedError> {
        let own = host::expand_home(&cfg.model);
        let dir = if own.is_dir() {
            own
        } else {
            let weights = store.resolve(&cfg.model)?;
            weights
                .parent()
                .map_or_else(PathBuf::new, Path::to_path_buf)
        };
        let mut e = Embedder::load(&dir, cfg)?;
        e.name = cfg.model.clone();
        Ok(e)
    }

    /// Loads the model in `dir` (`config.json`, `model.safetensors`, `tokenizer.json`).
    pub fn load(dir: &Path, cfg: &EmbedConfig) -> Result<Embedder, EmbedError> {
        let err = |detail: String| EmbedError::Load {
            path: dir.display().to_string(),
            detail,
        };
        if let Some(missing) = FILES.iter().find(|f| !dir.join(f).is_file()) {
            return Err(err(format!("{missing} is missing")));
        }
        if cfg.threads > 0 && std::env::var_os("RAYON_NUM_THREADS").is_none() {
            // candle runs on rayon's global pool; sized here unless something started it already.
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(host::thread_count(cfg.threads, host::cores()))
                .build_global();
        }
        let text =
            std::fs::read_to_string(dir.join("config.json")).map_err(|e| err(e.to_string()))?;
        let config: BertConfig =
            serde_json::from_str(&text).map_err(|e| err(format!("config.json: {e}")))?;
        let device = host::compute_device()?;
        // SAFETY: the weights file is mapped read-only; the models folder is not rewritten while
        // seesay runs (fetches write a new file and rename it).
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                DType::F32,
                &device,
            )
        }
        .map_err(|e| err(e.to_string()))?;
        let model = BertModel::load(vb, &config).map_err(|e| err(e.to_string()))?;
        let mut tokenizer =
            Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| err(e.to_string()))?;
        let max_length = cfg.max_tokens.clamp(8, config.max_position_embeddings);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| err(e.to_string()))?;
        // The shipped tokenizer pads every text to 128 tokens; a batch needs only its longest.
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id: config.pad_token_id as u32,
            ..Default::default()
        }));
        Ok(Embedder {
            model,
            tokenizer,
            device,
            dims: config.hidden_size,
            batch: cfg.batch.max(1),
            name: dir.display().to_string(),
        })
    }

    /// One unit-length vector per text, in order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.batch) {
            out.extend(self.embed_batch(chunk)?);
        }
        Ok(out)
    }

    /// One text's vector.
    pub fn embed_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        Ok(self.embed(&[text])?.remove(0))
    }

    /// How many tokens the model reads for `texts` (after cutting each to `max_tokens`).
    pub fn count_tokens(&self, texts: &[&str]) -> Result<usize, EmbedError> {
        let mut n = 0;
        for t in texts {
            let enc = self
                .tokenizer
                .encode(*t, true)
                .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
            n += enc.get_attention_mask().iter().filter(|&&m| m == 1).count();
        }
        Ok(n)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        let rows = encodings.len();
        let len = encodings[0].get_ids().len();
        let flat = |f: fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings.iter().flat_map(|e| f(e).to_vec()).collect()
        };
        let ids = Tensor::from_vec(
            flat(tokenizers::Encoding::get_ids),
            (rows, len),
            &self.device,
        )?;
        let types = ids.zeros_like()?;
        let mask = Tensor::from_vec(
            flat(tokenizers::Encoding::get_attention_mask),
            (rows, len),
            &self.device,
        )?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        let pooled = mean_pool(&hidden, &mask)?;
        let norm = pooled
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12, f32::MAX)?;
        Ok(pooled.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }

    /// Length of every vector (384 for all-MiniLM-L6-v2).
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The model's name as configured (or its folder).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The mean of the token vectors `hidden` (rows, len, dims) over the tokens `mask` (rows, len)
/// marks as real, so padding does not pull a short text's vector.
fn mean_pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
    let sum = hidden.broadcast_mul(&mask)?.sum(1)?;
    let count = mask.sum(1)?.clamp(1e-9, f32::MAX)?;
    sum.broadcast_div(&count)
}

/// Cosine similarity of two unit vectors (their dot product).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_does_not_change_the_mean() {
        let dev = Device::Cpu;
        // Two rows: the second has a padded last token with a huge value that must not count.
        let hidden =
            Tensor::new(&[[[1f32, 3.], [3., 5.]], [[2., 2.], [100., 100.]]], &dev).unwrap();
        let mask = Tensor::new(&[[1u32, 1], [1, 0]], &dev).unwrap();
        let pooled = mean_pool(&hidden, &mask).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(pooled, vec![vec![2., 4.], vec![2., 2.]]);
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = Embedder::load(dir.path(), &EmbedConfig::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("config.json is missing"), "{err}");
        assert!(err.to_string().contains("models fetch all-minilm-l6-v2"));
    }
}
