//! The captioner stage: an image (a camera frame or a file) in, one or two sentences of text out,
//! which the language model then sees as "The camera currently shows: ...".
//!
//! Backends behind one trait (`captioner.rs`): EfficientNet-Lite0 labels (offline default,
//! `effnet.rs`), BLIP from a user's weights folder (`blip.rs`), a vision-language GGUF model and
//! its projector in a private llama-server (`llama.rs`), or any OpenAI-compatible vision model
//! (`remote.rs`: `image_url` content parts with a base64 data URI, as GPT-4V-style APIs take
//! them). With `read.enabled`, `open_with_reading` adds the text read in the picture
//! (`reading.rs`).

pub mod blip;
pub mod captioner;
pub mod effnet;
pub mod llama;
pub mod reading;
pub mod remote;

use std::path::Path;
use std::sync::Arc;

pub use self::captioner::{CaptionError, Captioner, VisionConfig};
use crate::host;
use crate::stages::llm::server::LlamaServer;
use crate::stages::llm::Engine;
use crate::stages::read::{ReadConfig, Reader};
use crate::store::Store;

/// Whether the captioner runs in the language model's server: `vision.backend = "llama.cpp"`
/// with no `vision.model` of its own (the language model has a projector, `llm.mmproj`).
pub fn in_llm_server(cfg: &VisionConfig) -> bool {
    cfg.backend == "llama.cpp" && cfg.model.is_empty()
}

/// Opens the configured captioner. `llm` is the language model's engine where one is loaded: a
/// captioner `in_llm_server` needs it.
pub fn open(
    cfg: &VisionConfig,
    store: &Store,
    llm: Option<&Engine>,
) -> Result<Box<dyn Captioner>, CaptionError> {
    match cfg.backend.as_str() {
        "llama.cpp" if in_llm_server(cfg) => {
            Ok(Box::new(llama::LlamaCaptioner::on(llm_server(llm)?, cfg)))
        }
        "efficientnet" => {
            let weights = store.resolve(&cfg.model)?;
            let labels = store.resolve(&cfg.labels)?;
            Ok(Box::new(effnet::EffnetCaptioner::load(
                &weights, &labels, cfg.top_k,
            )?))
        }
        "blip" => Ok(Box::new(blip::BlipCaptioner::load(
            Path::new(&host::expand_home(&cfg.blip_dir)),
            cfg.max_tokens,
        )?)),
        "llama.cpp" => Ok(Box::new(llama::LlamaCaptioner::start(cfg, store)?)),
        "openai" => Ok(Box::new(remote::RemoteCaptioner::new(cfg)?)),
        other => Err(CaptionError::Backend(other.to_string())),
    }
}

/// The language model's server, which must take images.
fn llm_server(llm: Option<&Engine>) -> Result<Arc<LlamaServer>, CaptionError> {
    match llm.and_then(Engine::vision_server) {
        Some(server) => Ok(server.clone()),
        None => Err(CaptionError::Load {
            path: "vision.model".into(),
            detail: "it is empty, which asks the language model's llama.cpp server to read \
                     images, but that model has no projector: set llm.mmproj, or give \
                     vision.model and vision.mmproj"
                .into(),
        }),
    }
}

/// Opens the configured captioner and, when `read.enabled`, wraps it so its descriptions end
/// with the text in view (`reading.rs`). `onnxruntime` is the `tts.onnxruntime` setting.
pub fn open_with_reading(
    cfg: &VisionConfig,
    read: &ReadConfig,
    onnxruntime: &str,
    store: &Store,
    llm: Option<&Engine>,
) -> Result<Box<dyn Captioner>, CaptionError> {
    let inner = open(cfg, store, llm)?;
    if !read.enabled {
        return Ok(inner);
    }
    let reader = Reader::open(read, onnxruntime, store).map_err(|e| CaptionError::Load {
        path: read.model.clone(),
        detail: format!("{e} (or set read.enabled = false)"),
    })?;
    Ok(Box::new(reading::ReadingCaptioner::new(
        inner,
        reader,
        read.describe_chars,
    )))
}
