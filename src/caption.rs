//! The captioner stage: an image (a camera frame or a file) in, one or two sentences of text out,
//! which the language model then sees as "The camera currently shows: ...".
//!
//! Backends behind one trait: EfficientNet-Lite0 labels (offline default, `caption_effnet.rs`),
//! BLIP from a user's weights folder (`caption_blip.rs`), or any OpenAI-compatible vision model
//! (`image_url` content parts with a base64 data URI, as GPT-4V-style APIs take them).

use std::io::Cursor;
use std::path::Path;

use base64::Engine;
use image::RgbImage;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptionError {
    #[error("{what}: {detail}")]
    Image { what: String, detail: String },
    #[error("{what} is {width}x{height} pixels; the limit is {limit}x{limit} (vision.max_side)")]
    TooLarge {
        what: String,
        width: u32,
        height: u32,
        limit: u32,
    },
    #[error("cannot load vision model {path}: {detail}")]
    Load { path: String, detail: String },
    #[error("captioning failed: {0}")]
    Inference(String),
    #[error("remote vision model at {url}: {detail}")]
    Remote { url: String, detail: String },
    #[error("unknown vision.backend '{0}': use efficientnet, blip or openai")]
    Backend(String),
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
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
    /// `efficientnet` (offline ImageNet labels), `blip` (BLIP captioning weights in `blip_dir`)
    /// or `openai` (an OpenAI-compatible vision model).
    pub backend: String,
    /// efficientnet: a name from `seesay models list` or a safetensors path.
    pub model: String,
    /// efficientnet: the class names (torchvision's `_meta.py`), a model name or a path.
    pub labels: String,
    /// efficientnet: how many classes the description may mention.
    pub top_k: usize,
    /// blip: a folder with `config.json`, `model.safetensors` and `tokenizer.json` (the layout of
    /// Salesforce/blip-image-captioning-base or -large).
    pub blip_dir: String,
    /// blip and openai: longest caption, in tokens.
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
    /// openai: the instruction sent with the image.
    pub prompt: String,
    /// openai: seconds to wait for the server.
    pub timeout_s: u64,
}

impl Default for VisionConfig {
    fn default() -> Self {
        VisionConfig {
            backend: "efficientnet".into(),
            model: "efficientnet-lite0".into(),
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

/// How a caption is put before the user's words for the language model.
pub fn context_line(caption: &str) -> String {
    format!("The camera currently shows: {}", caption.trim())
}

/// Largest image file read, in bytes.
const MAX_FILE_BYTES: u64 = 64 << 20;

/// Reads and decodes an image file, refusing non-images and oversized images before decoding.
pub fn load_image(path: &Path, max_side: u32) -> Result<RgbImage, CaptionError> {
    let what = path.display().to_string();
    let err = |detail: String| CaptionError::Image {
        what: what.clone(),
        detail,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.is_dir() {
        return Err(err("is a folder, not an image".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(err(format!(
            "is {} MB; images over {} MB are refused",
            meta.len() >> 20,
            MAX_FILE_BYTES >> 20
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    decode_image(&bytes, &what, max_side)
}

/// Decodes image bytes (PNG, JPEG, WebP, BMP, GIF). The header is read first: an image larger
/// than `max_side` is refused without allocating its pixels.
pub fn decode_image(bytes: &[u8], what: &str, max_side: u32) -> Result<RgbImage, CaptionError> {
    let err = |detail: String| CaptionError::Image {
        what: what.to_string(),
        detail,
    };
    if bytes.is_empty() {
        return Err(err("is empty".into()));
    }
    let reader = || {
        image::ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| err(e.to_string()))
    };
    if reader()?.format().is_none() {
        return Err(err(
            "is not an image seesay can read (PNG, JPEG, WebP, BMP or GIF)".into(),
        ));
    }
    let (width, height) = reader()?
        .into_dimensions()
        .map_err(|e| err(format!("unreadable image header: {e}")))?;
    if width > max_side || height > max_side {
        return Err(CaptionError::TooLarge {
            what: what.to_string(),
            width,
            height,
            limit: max_side,
        });
    }
    if width == 0 || height == 0 {
        return Err(err("has no pixels".into()));
    }
    let mut r = reader()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(max_side);
    limits.max_image_height = Some(max_side);
    r.limits(limits);
    let img = r.decode().map_err(|e| {
        err(format!(
            "cannot decode the image (truncated or corrupt?): {e}"
        ))
    })?;
    Ok(img.to_rgb8())
}

/// Encodes an image as a `data:image/jpeg;base64,...` URI (quality 85), for remote models.
pub fn jpeg_data_uri(img: &RgbImage) -> Result<String, CaptionError> {
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
        .encode_image(img)
        .map_err(CaptionError::inference)?;
    Ok(format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&jpeg)
    ))
}

/// The bytes of a `data:...;base64,...` URI (the only image URLs seesay takes: it fetches
/// nothing from the network).
pub fn data_uri_bytes(uri: &str) -> Result<Vec<u8>, String> {
    let Some((_, b64)) = uri
        .strip_prefix("data:")
        .and_then(|u| u.split_once(";base64,"))
    else {
        return Err("the image must be a data: URI (data:image/jpeg;base64,...); seesay fetches nothing from the network".into());
    };
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("bad base64: {e}"))
}

/// Opens the configured captioner.
pub fn open(
    cfg: &VisionConfig,
    store: &crate::models::Store,
) -> Result<Box<dyn Captioner>, CaptionError> {
    match cfg.backend.as_str() {
        "efficientnet" => {
            let weights = store.resolve(&cfg.model)?;
            let labels = store.resolve(&cfg.labels)?;
            Ok(Box::new(crate::caption_effnet::EffnetCaptioner::load(
                &weights, &labels, cfg.top_k,
            )?))
        }
        "blip" => Ok(Box::new(crate::caption_blip::BlipCaptioner::load(
            Path::new(&crate::config::expand_home(&cfg.blip_dir)),
            cfg.max_tokens,
        )?)),
        "openai" => Ok(Box::new(RemoteCaptioner::new(cfg)?)),
        other => Err(CaptionError::Backend(other.to_string())),
    }
}

/// An OpenAI-compatible vision model: one non-streaming chat completion per frame.
pub struct RemoteCaptioner {
    endpoint: crate::llm_remote::Endpoint,
    model: String,
    prompt: String,
    max_tokens: usize,
}

impl RemoteCaptioner {
    pub fn new(cfg: &VisionConfig) -> Result<RemoteCaptioner, CaptionError> {
        let endpoint = crate::llm_remote::Endpoint::new(
            &cfg.base_url,
            &cfg.api_key,
            "SEESAY_VISION",
            "vision.base_url",
            cfg.timeout_s,
        )
        .map_err(|(url, detail)| CaptionError::Remote { url, detail })?;
        Ok(RemoteCaptioner {
            endpoint,
            model: crate::llm_remote::env_or("SEESAY_VISION_MODEL", &cfg.remote_model),
            prompt: cfg.prompt.clone(),
            max_tokens: cfg.max_tokens,
        })
    }

    /// The request body: one user message with a text part and an `image_url` part.
    pub fn request_body(&self, img: &RgbImage) -> Result<serde_json::Value, CaptionError> {
        Ok(serde_json::json!({
            "model": self.model,
            "messages": [{
                "role": "user",
                "content": [
                    {"type": "text", "text": self.prompt},
                    {"type": "image_url", "image_url": {"url": jpeg_data_uri(img)?}},
                ],
            }],
            "max_tokens": self.max_tokens,
            "temperature": 0.0,
            "stream": false,
        }))
    }
}

impl Captioner for RemoteCaptioner {
    fn caption(&mut self, img: &RgbImage) -> Result<String, CaptionError> {
        let remote = |detail: String| CaptionError::Remote {
            url: self.endpoint.url.clone(),
            detail,
        };
        let body = self.request_body(img)?;
        let resp = self.endpoint.post(&body).map_err(remote)?;
        let reply: serde_json::Value = resp
            .into_string()
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            .map_err(|e| remote(format!("bad reply: {e}")))?;
        let text = reply["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| remote(format!("no message in the reply: {reply}")))?
            .trim()
            .to_string();
        if text.is_empty() {
            return Err(remote("the model returned an empty caption".into()));
        }
        Ok(text)
    }

    fn describe(&self) -> String {
        format!("{} at {}", self.model, self.endpoint.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_pixel(w, h, image::Rgb([10, 200, 30]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn decodes_png_and_refuses_bad_images() {
        let ok = decode_image(&png(8, 6), "x.png", 100).unwrap();
        assert_eq!(ok.dimensions(), (8, 6));
        let e = decode_image(b"hello, I am text", "t.txt", 100).unwrap_err();
        assert!(e.to_string().contains("not an image"), "{e}");
        let full = png(64, 64);
        let e = decode_image(&full[..full.len() / 2], "half.png", 100).unwrap_err();
        assert!(e.to_string().contains("truncated or corrupt"), "{e}");
        let e = decode_image(&png(120, 10), "wide.png", 100).unwrap_err();
        assert!(
            matches!(
                e,
                CaptionError::TooLarge {
                    width: 120,
                    height: 10,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn data_uri_is_a_jpeg() {
        let uri = jpeg_data_uri(&RgbImage::new(4, 4)).unwrap();
        let b64 = uri.strip_prefix("data:image/jpeg;base64,").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(&bytes[..2], &[0xFF, 0xD8]);
    }
}
