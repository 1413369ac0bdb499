//! Remote language model: any OpenAI-compatible `/v1/chat/completions` server (vLLM, llama.cpp
//! server, Ollama, ...), streamed over server-sent events.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use crate::llm::{Cancel, ChatModel, Finish, LlmConfig, LlmError, Message, WordChunker};

pub struct RemoteModel {
    endpoint: Endpoint,
    model: String,
    cfg: LlmConfig,
}

/// An OpenAI-compatible `/chat/completions` URL with its API key and an HTTP agent with timeouts;
/// shared by the remote language model and the remote vision model.
pub struct Endpoint {
    agent: ureq::Agent,
    pub url: String,
    api_key: Option<String>,
}

pub(crate) fn env_or(name: &str, fallback: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| fallback.to_string())
}

impl Endpoint {
    /// `prefix` names the overrides: `{prefix}_BASE_URL`, then `{prefix}_API_KEY` and
    /// `OPENAI_API_KEY` when `api_key` is empty. `setting` names the config field in errors.
    /// An error is (url, detail).
    pub fn new(
        base_url: &str,
        api_key: &str,
        prefix: &str,
        setting: &str,
        timeout_s: u64,
    ) -> Result<Endpoint, (String, String)> {
        let base = env_or(&format!("{prefix}_BASE_URL"), base_url);
        let url = format!("{}/chat/completions", base.trim_end_matches('/'));
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err((
                url,
                format!("{setting} must start with http:// or https://"),
            ));
        }
        let api_key = Some(api_key.to_string())
            .filter(|k| !k.is_empty())
            .or_else(|| std::env::var(format!("{prefix}_API_KEY")).ok())
            .or_else(|| std::env::var("OPENAI_API_KEY").ok())
            .filter(|k| !k.is_empty());
        let timeout = Duration::from_secs(timeout_s.max(1));
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(timeout)
            .timeout_read(timeout)
            .build();
        Ok(Endpoint {
            agent,
            url,
            api_key,
        })
    }

    /// Posts a JSON body; an HTTP error status becomes "HTTP 500: <the server's message>".
    pub fn post(&self, body: &serde_json::Value) -> Result<ureq::Response, String> {
        let mut req = self
            .agent
            .post(&self.url)
            .set("Content-Type", "application/json");
        if let Some(key) = &self.api_key {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        match req.send_string(&body.to_string()) {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                Err(format!("HTTP {code}: {}", error_text(&text)))
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

impl RemoteModel {
    pub fn new(cfg: &LlmConfig) -> Result<RemoteModel, LlmError> {
        let endpoint = Endpoint::new(
            &cfg.base_url,
            &cfg.api_key,
            "SEESAY_LLM",
            "llm.base_url",
            cfg.timeout_s,
        )
        .map_err(|(url, detail)| LlmError::Remote { url, detail })?;
        Ok(RemoteModel {
            endpoint,
            model: env_or("SEESAY_LLM_MODEL", &cfg.remote_model),
            cfg: cfg.clone(),
        })
    }

    fn remote_err(&self, detail: impl Into<String>) -> LlmError {
        LlmError::Remote {
            url: self.endpoint.url.clone(),
            detail: detail.into(),
        }
    }
}

/// The text of an OpenAI-style error body, or the body itself.
pub(crate) fn error_text(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

impl ChatModel for RemoteModel {
    fn generate(
        &mut self,
        messages: &[Message],
        cancel: &Cancel,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<(String, Finish), LlmError> {
        let body = serde_json::json!({
            "model": self.model,
            "messages": messages.iter().map(|m| serde_json::json!({"role": m.role, "content": m.content})).collect::<Vec<_>>(),
            "stream": true,
            "temperature": self.cfg.temperature,
            "top_p": self.cfg.top_p,
            "max_tokens": self.cfg.max_tokens,
            "seed": self.cfg.seed,
        });
        let resp = self.endpoint.post(&body).map_err(|e| self.remote_err(e))?;
        let mut text = String::new();
        let mut chunker = WordChunker::default();
        let mut finish = Finish::Stop;
        for line in BufReader::new(resp.into_reader()).lines() {
            if cancel.is_cancelled() {
                finish = Finish::Cancelled;
                break;
            }
            let line = line.map_err(|e| self.remote_err(format!("reading the stream: {e}")))?;
            let Some(data) = line.strip_prefix("data:").map(str::trim) else {
                continue;
            };
            if data == "[DONE]" {
                break;
            }
            let event: serde_json::Value = serde_json::from_str(data)
                .map_err(|e| self.remote_err(format!("bad stream event {data:?}: {e}")))?;
            if let Some(msg) = event["error"]["message"].as_str() {
                return Err(self.remote_err(msg.to_string()));
            }
            let choice = &event["choices"][0];
            if let Some(delta) = choice["delta"]["content"].as_str() {
                text.push_str(delta);
                if let Some(chunk) = chunker.push(&text) {
                    on_text(chunk);
                }
            }
            if choice["finish_reason"].as_str() == Some("length") {
                finish = Finish::Length;
            }
        }
        if let Some(rest) = chunker.finish(&text) {
            on_text(rest);
        }
        Ok((text.trim().to_string(), finish))
    }

    /// Servers count tokens themselves; this estimate (4 characters a token) only trims memory.
    fn count_tokens(&mut self, messages: &[Message]) -> Result<usize, LlmError> {
        Ok(messages.iter().map(|m| m.content.len() / 4 + 4).sum())
    }

    fn set_config(&mut self, cfg: &LlmConfig) {
        self.cfg = cfg.clone();
    }

    fn describe(&self) -> String {
        format!("{} at {}", self.model, self.endpoint.url)
    }
}
