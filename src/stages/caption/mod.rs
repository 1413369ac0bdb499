//! The captioner stage: an image (a camera frame or a file) in, one or two sentences of text out,
//! which the language model then sees as "The camera currently shows: ...".
//!
//! Backends behind one trait (`captioner.rs`): EfficientNet-Lite0 labels (offline default,
//! `effnet.rs`), BLIP from a user's weights folder (`blip.rs`), or any OpenAI-compatible vision
//! model (`remote.rs`: `image_url` content parts with a base64 data URI, as GPT-4V-style APIs
//! take them). With `read.enabled`, `open_with_reading` adds the text read in the picture
//! (`reading.rs`).

pub mod blip;
pub mod captioner;
pub mod effnet;
pub mod reading;
pub mod remote;

use std::path::Path;

pub use self::captioner::{CaptionError, Captioner, VisionConfig};
use crate::host;
use crate::stages::read::{ReadConfig, Reader};
use crate::store::Store;

/// Opens the configured captioner.
pub fn open(cfg: &VisionConfig, store: &Store) -> Result<Box<dyn Captioner>, CaptionError> {
    match cfg.backend.as_str() {
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
        "openai" => Ok(Box::new(remote::RemoteCaptioner::new(cfg)?)),
        other => Err(CaptionError::Backend(other.to_string())),
    }
}

/// Opens the configured captioner and, when `read.enabled`, wraps it so its descriptions end
/// with the text in view (`reading.rs`). `onnxruntime` is the `tts.onnxruntime` setting.
pub fn open_with_reading(
    cfg: &VisionConfig,
    read: &ReadConfig,
    onnxruntime: &str,
    store: &Store,
) -> Result<Box<dyn Captioner>, CaptionError> {
    let inner = open(cfg, store)?;
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
