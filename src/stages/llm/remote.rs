//! Remote language model: any OpenAI-compatible `/v1/chat/completions` server (vLLM, llama.cpp
//! server, Ollama, ...), streamed over server-sent events.

use std::io::{BufRead, BufReader};

use super::chat::{ChatModel, Finish, GenStats, LlmConfig, LlmError, Message, WordChunker};
use crate::stages::openai::{env_or, Endpoint};
use crate::stages::Cancel;

pub struct RemoteModel {
    endpoint: Endpoint,
    model: String,
    cfg: LlmConfig,
    /// Fields added to every request (llama-server: the slot, prompt caching, repeat penalty).
    extra: serde_json::Value,
    last: Option<GenStats>,
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
        Ok(RemoteModel::at(
            endpoint,
            env_or("SEESAY_LLM_MODEL", &cfg.remote_model),
            cfg,
            serde_json::json!({}),
        ))
    }

    /// A client of `endpoint`, asking for `model`, with `extra` fields in every request.
    pub fn at(
        endpoint: Endpoint,
        model: String,
        cfg: &LlmConfig,
        extra: serde_json::Value,
    ) -> RemoteModel {
        RemoteModel {
            endpoint,
            model,
            cfg: cfg.clone(),
            extra,
            last: None,
        }
    }

    fn remote_err(&self, detail: impl Into<String>) -> LlmError {
        LlmError::Remote {
            url: self.endpoint.url.clone(),
            detail: detail.into(),
        }
    }
}

impl ChatModel for RemoteModel {
    fn generate(
        &mut self,
        messages: &[Message],
        cancel: &Cancel,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<(String, Finish), LlmError> {
        let mut body = serde_json::json!({
            "model": self.model,
            "messages": messages.iter().map(Message::to_json).collect::<Vec<_>>(),
            "stream": true,
            "temperature": self.cfg.temperature,
            "top_p": self.cfg.top_p,
            "max_tokens": self.cfg.max_tokens,
            "seed": self.cfg.seed,
        });
        if let (Some(b), Some(extra)) = (body.as_object_mut(), self.extra.as_object()) {
            b.extend(extra.clone());
        }
        self.last = None;
        let resp = self.endpoint.post(&body).map_err(|e| self.remote_err(e))?;
        let mut text = String::new();
        let mut chunker = WordChunker::default();
        let mut finish = Finish::Stop;
        // A stream that stops with neither `[DONE]` nor a finish reason was cut off (the server
        // went away mid-answer): an error, not a short answer.
        let mut ended = false;
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
                ended = true;
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
            match choice["finish_reason"].as_str() {
                Some("length") => finish = Finish::Length,
                Some(_) => ended = true,
                None => {}
            }
            // llama-server reports its token counts and timings with the last chunk.
            if let Some(t) = event.get("timings") {
                let n = |k: &str| t[k].as_f64().unwrap_or(0.0);
                self.last = Some(GenStats {
                    prompt_tokens: (n("prompt_n") + n("cache_n")) as usize,
                    prefilled: n("prompt_n") as usize,
                    prefill_s: n("prompt_ms") / 1000.0,
                    generated: n("predicted_n") as usize,
                    generate_s: n("predicted_ms") / 1000.0,
                });
            }
        }
        if !ended && finish == Finish::Stop {
            return Err(self.remote_err("the answer stopped short: the stream ended unfinished"));
        }
        if let Some(rest) = chunker.finish(&text) {
            on_text(rest);
        }
        Ok((text.trim().to_string(), finish))
    }

    /// Servers count tokens themselves; this estimate (4 characters a token) only trims memory.
    fn count_tokens(&mut self, messages: &[Message]) -> Result<usize, LlmError> {
        Ok(messages
            .iter()
            .map(|m| m.content.len() / 4 + 4 + m.image_tokens())
            .sum())
    }

    fn set_config(&mut self, cfg: &LlmConfig) {
        self.cfg = cfg.clone();
    }

    fn describe(&self) -> String {
        format!("{} at {}", self.model, self.endpoint.url)
    }

    fn stats(&self) -> Option<GenStats> {
        self.last
    }
}
