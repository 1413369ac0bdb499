//! The captioner stage: an image (a camera frame or a file) in, one or two sentences of text out,
//! which the language model then sees as "The camera currently shows: ...".
//!
//! Backends behind one trait (`captioner.rs`): EfficientNet-Lite0 labels (offline default,
//! `effnet.rs`), BLIP from a user's weights folder (`blip.rs`), or any OpenAI-compatible vision
//! model (`remote.rs`: `image_url` content parts with a base64 data URI, as GPT-4V-style APIs
//! take them).

pub mod blip;
pub mod captioner;
pub mod effnet;
pub mod remote;

use std::path::Path;

pub use self::captioner::{CaptionError, Captioner, VisionConfig};
use crate::host;
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
