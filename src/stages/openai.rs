//! An OpenAI-compatible endpoint (`{base_url}/chat/completions`, `/audio/transcriptions`,
//! `/audio/speech`): a URL, an API key and an HTTP agent with timeouts; a request body in, the
//! server's response (or its error message) out. Shared by the remote language model, vision,
//! speech recognition and voice.

use std::time::Duration;

/// An OpenAI-compatible URL (`/chat/completions` unless made `at` another path) with its API key
/// and an HTTP agent with timeouts; shared by the remote backends.
pub struct Endpoint {
    agent: ureq::Agent,
    pub url: String,
    /// The base URL, without a trailing slash.
    base: String,
    api_key: Option<String>,
}

const CHAT: &str = "/chat/completions";

pub fn env_or(name: &str, fallback: &str) -> String {
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
        let url = format!("{}{CHAT}", base.trim_end_matches('/'));
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
        Ok(Endpoint {
            api_key,
            ..Endpoint::fixed(&base, timeout_s)
        })
    }

    /// The same server and key at another path of its API (`/audio/speech`).
    pub fn at(mut self, path: &str) -> Endpoint {
        self.url = format!("{}{path}", self.base);
        self
    }

    /// An endpoint at `base_url` exactly (no overrides, no key): a server seesay runs itself.
    pub fn fixed(base_url: &str, timeout_s: u64) -> Endpoint {
        let base = base_url.trim_end_matches('/').to_string();
        let url = format!("{base}{CHAT}");
        let timeout = Duration::from_secs(timeout_s.max(1));
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(timeout)
            .timeout_read(timeout)
            .build();
        Endpoint {
            agent,
            url,
            base,
            api_key: None,
        }
    }

    /// Posts a JSON body; an HTTP error status becomes "HTTP 500: <the server's message>".
    pub fn post(&self, body: &serde_json::Value) -> Result<ureq::Response, String> {
        self.post_bytes("application/json", body.to_string().as_bytes())
    }

    /// Posts `body` as `content_type` (a multipart form); errors as `post`'s.
    pub fn post_bytes(&self, content_type: &str, body: &[u8]) -> Result<ureq::Response, String> {
        let mut req = self.agent.post(&self.url).set("Content-Type", content_type);
        if let Some(key) = &self.api_key {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        match req.send_bytes(body) {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                Err(format!("HTTP {code}: {}", error_text(&text)))
            }
            // ureq names the URL first; the errors that carry this say it already.
            Err(e) => {
                let e = e.to_string();
                match e.strip_prefix(&format!("{}: ", self.url)) {
                    Some(rest) => Err(rest.to_string()),
                    None => Err(e),
                }
            }
        }
    }
}

/// The text of an OpenAI-style error body, or the body itself.
pub fn error_text(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect())
}
