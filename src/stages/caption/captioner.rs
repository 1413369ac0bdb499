//! What a captioner is: an RGB image in, a short description out (`Captioner`), with the
//! vision settings (`VisionConfig`) and errors (`CaptionError`).

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::media::image::ImageError;
use crate::store::ModelError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptionError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("cannot load vision model {path}: {detail}")]
    Load { path: String, detail: String },
    #[error("captioning failed: {0}")]
    Inference(String),
    #[error("remote vision model at {url}: {detail}")]
    Remote { url: String, detail: String },
    #[error("unknown vision.backend '{0}': use efficientnet, blip, llama.cpp or openai")]
    Backend(String),
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl CaptionError {
    pub(crate) fn inference(e: impl std::fmt::Display) -> CaptionError {
        CaptionError::Inference(e.to_string())
    }
}

/// Vision settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VisionConfig {
    /// `efficientnet` (offline ImageNet labels), `blip` (BLIP captioning weights in `blip_dir`),
    /// `llama.cpp` (a vision-language GGUF model and its projector, run by a private
    /// llama-server) or `openai` (an OpenAI-compatible vision model).
    pub backend: String,
    /// efficientnet: a name from `seesay models list` or a safetensors path. llama.cpp: the
    /// vision-language model's GGUF file (a name or a path); empty: the language model's
    /// server, when `llm.mmproj` gives it a projector.
    pub model: String,
    /// llama.cpp: the model's vision projector (its `mmproj` GGUF file, a name or a path).
    pub mmproj: String,
    /// llama.cpp: the llama-server binary; empty: `$SEESAY_LLAMA_SERVER`, else the one
    /// scripts/setup builds.
    pub llama_server: String,
    /// llama.cpp: the server's context, in tokens (an image takes from 64 to a few thousand).
    pub context_tokens: usize,
    /// efficientnet: the class names (torchvision's `_meta.py`), a model name or a path.
    pub labels: String,
    /// efficientnet: how many classes the description may mention.
    pub top_k: usize,
    /// blip: a folder with `config.json`, `model.safetensors` and `tokenizer.json` (the layout of
    /// Salesforce/blip-image-captioning-base or -large).
    pub blip_dir: String,
    /// blip, llama.cpp and openai: longest caption, in tokens.
    pub max_tokens: usize,
    /// Images wider or taller than this many pixels are refused before they are decoded.
    pub max_side: u32,
    /// openai: base URL of the server, e.g. http://127.0.0.1:8080/v1 (`$SEESAY_VISION_BASE_URL`
    /// overrides).
    pub base_url: String,
    /// openai: model name (`$SEESAY_VISION_MODEL` overrides).
    pub remote_model: String,
    /// openai: API key; empty reads `$SEESAY_VISION_API_KEY`, then `$OPENAI_API_KEY`.
    pub api_key: String,
    /// llama.cpp and openai: the instruction sent with the image.
    pub prompt: String,
    /// llama.cpp and openai: seconds to wait for the server.
    pub timeout_s: u64,
}

impl Default for VisionConfig {
    fn default() -> Self {
        VisionConfig {
            backend: "efficientnet".into(),
            model: "efficientnet-lite0".into(),
            mmproj: String::new(),
            llama_server: String::new(),
            context_tokens: 4096,
            labels: "imagenet-labels".into(),
            top_k: 3,
            blip_dir: String::new(),
            max_tokens: 40,
            max_side: 8192,
            base_url: "http://127.0.0.1:8080/v1".into(),
            remote_model: "default".into(),
            api_key: String::new(),
            prompt: "Describe this image in one or two short sentences.".into(),
            timeout_s: 60,
        }
    }
}

/// A captioner: an RGB image in, a short description out.
pub trait Captioner: Send {
    fn caption(&mut self, img: &RgbImage) -> Result<String, CaptionError>;
    /// The model or server, for logs.
    fn describe(&self) -> String;
}
