//! A remote captioner: any OpenAI-compatible vision model, one non-streaming chat completion per
//! frame with a text part and an `image_url` part holding a JPEG data URI; the reply's text out.

use image::RgbImage;

use super::captioner::{CaptionError, Captioner, VisionConfig};
use crate::media::image::jpeg_data_uri;
use crate::stages::openai::{env_or, Endpoint};

/// An OpenAI-compatible vision model: one non-streaming chat completion per frame.
pub struct RemoteCaptioner {
    endpoint: Endpoint,
    model: String,
    prompt: String,
    max_tokens: usize,
}

impl RemoteCaptioner {
    pub fn new(cfg: &VisionConfig) -> Result<RemoteCaptioner, CaptionError> {
        let endpoint = Endpoint::new(
            &cfg.base_url,
            &cfg.api_key,
            "SEESAY_VISION",
            "vision.base_url",
            cfg.timeout_s,
        )
        .map_err(|(url, detail)| CaptionError::Remote { url, detail })?;
        Ok(RemoteCaptioner::at(
            endpoint,
            &env_or("SEESAY_VISION_MODEL", &cfg.remote_model),
            cfg,
        ))
    }

    /// A captioner on `endpoint` (a server seesay runs itself), asking for `model` with the
    /// prompt and caption length of `cfg`.
    pub fn at(endpoint: Endpoint, model: &str, cfg: &VisionConfig) -> RemoteCaptioner {
        RemoteCaptioner {
            endpoint,
            model: model.to_string(),
            prompt: cfg.prompt.clone(),
            max_tokens: cfg.max_tokens,
        }
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
