//! A local vision-language model through llama.cpp: a GGUF model and its projector (`mmproj`,
//! e.g. SmolVLM, Qwen2.5-VL, Gemma 3, moondream2) served by a private, supervised `llama-server`
//! (the language model's own server code: health check, restart, dies with seesay), asked like
//! any OpenAI-compatible vision model (`remote.rs`).

use std::sync::Arc;

use image::RgbImage;

use super::captioner::{CaptionError, Captioner, VisionConfig};
use super::remote::RemoteCaptioner;
use crate::stages::llm::server::{Files, LlamaServer, START_LIMIT};
use crate::stages::llm::{LlmConfig, LlmError};
use crate::stages::openai::Endpoint;
use crate::store::Store;

/// A vision-language model in a llama-server of its own, or in the language model's server
/// when that model has a projector (`llm.mmproj`).
pub struct LlamaCaptioner {
    server: Arc<LlamaServer>,
    cfg: VisionConfig,
}

impl LlamaCaptioner {
    /// Starts a server for `vision.model` with `vision.mmproj` and waits until it answers.
    pub fn start(cfg: &VisionConfig, store: &Store) -> Result<LlamaCaptioner, CaptionError> {
        let load = |detail: String| CaptionError::Load {
            path: cfg.model.clone(),
            detail,
        };
        if cfg.model == VisionConfig::default().model {
            return Err(load(
                "vision.backend = \"llama.cpp\" needs vision.model, a vision-language GGUF \
                 model (or an empty vision.model, to use the language model's server with \
                 llm.mmproj)"
                    .into(),
            ));
        }
        if cfg.mmproj.is_empty() {
            return Err(load(
                "vision.backend = \"llama.cpp\" needs vision.mmproj, the model's projector \
                 (a GGUF file, often named mmproj-*.gguf, published with the model)"
                    .into(),
            ));
        }
        let model = store.resolve(&cfg.model)?;
        let mmproj = store.resolve(&cfg.mmproj)?;
        let server_cfg = LlmConfig {
            llama_server: cfg.llama_server.clone(),
            context_tokens: cfg.context_tokens,
            max_tokens: cfg.max_tokens,
            ..LlmConfig::default()
        };
        let files = Files {
            mmproj: Some(mmproj),
            ..Files::model(model)
        };
        let server = LlamaServer::start(&server_cfg, &files, 1).map_err(|e| match e {
            LlmError::Load { path, detail } => CaptionError::Load { path, detail },
            other => load(other.to_string()),
        })?;
        Ok(LlamaCaptioner::on(server, cfg))
    }

    /// A captioner on a server that already runs a model with a projector.
    pub fn on(server: Arc<LlamaServer>, cfg: &VisionConfig) -> LlamaCaptioner {
        LlamaCaptioner {
            server,
            cfg: cfg.clone(),
        }
    }
}

impl Captioner for LlamaCaptioner {
    fn caption(&mut self, img: &RgbImage) -> Result<String, CaptionError> {
        // The server's port changes when it restarts: ask for it at each frame.
        self.server
            .wait_ready(START_LIMIT)
            .map_err(|detail| CaptionError::Remote {
                url: self.server.base_url(),
                detail,
            })?;
        let endpoint = Endpoint::fixed(
            &format!("{}/v1", self.server.base_url()),
            self.cfg.timeout_s,
        );
        RemoteCaptioner::at(endpoint, self.server.name(), &self.cfg).caption(img)
    }

    fn describe(&self) -> String {
        format!("{} (llama.cpp)", self.server.name())
    }
}
