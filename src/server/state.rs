//! What every handler of `seesay serve` shares: the loaded models and settings (`AppState`),
//! errors in OpenAI's shape (`ApiError`), blocking model work under the request time limit, and
//! request-body readers (JSON, multipart) with clear errors.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Multipart;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::metrics::Metrics;
use crate::config::Config;
use crate::pipeline::{lock, Models, PipelineError};
use crate::stages::tts::{self, TtsError};
use crate::text::splitter::split_sentences;

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status.as_u16() {
            401 => "authentication_error",
            413 => "request_too_large",
            429 => "rate_limit_exceeded",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        };
        let body = serde_json::json!({"error": {"message": self.message, "type": kind, "param": null, "code": null}});
        (self.status, Json(body)).into_response()
    }
}

impl ApiError {
    /// A failure of the server's own (a model erred): 500 with the error's text.
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

pub struct AppState {
    pub cfg: Config,
    /// Loaded once; every request and every conversation shares them, one step at a time.
    pub models: Models,
    pub metrics: Metrics,
    pub api_key: Option<String>,
    pub slots: tokio::sync::Semaphore,
    /// Conversations (WebSockets) open at once.
    pub sessions: tokio::sync::Semaphore,
}

impl AppState {
    /// Loads every model (conversations load their own VAD; `Models::load` checks it now, so a
    /// broken file fails at start, not at the first conversation).
    pub fn load(mut cfg: Config) -> Result<AppState, PipelineError> {
        // Conversations and requests run at once: the stages share the cores (unless the
        // config says otherwise).
        let share = crate::host::Budget::serving(crate::host::cores());
        for (threads, n) in [
            (&mut cfg.asr.threads, share.asr),
            (&mut cfg.llm.threads, share.llm),
            (&mut cfg.tts.threads, share.tts),
        ] {
            if *threads == 0 {
                *threads = n;
            }
        }
        // A slot for each conversation, and two for API requests.
        let models = Models::load(&cfg, true, cfg.server.max_sessions + 2)?;
        let api_key = Some(cfg.server.api_key.clone())
            .filter(|k| !k.is_empty())
            .or_else(|| std::env::var("SEESAY_API_KEY").ok())
            .filter(|k| !k.is_empty());
        Ok(AppState {
            slots: tokio::sync::Semaphore::new(cfg.server.max_concurrent.max(1)),
            sessions: tokio::sync::Semaphore::new(cfg.server.max_sessions.max(1)),
            models,
            cfg,
            metrics: Metrics::default(),
            api_key,
        })
    }
}

pub type Shared = Arc<AppState>;

/// Runs blocking model work with the request time limit.
pub async fn blocking<T: Send + 'static>(
    st: &Shared,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let limit = Duration::from_secs(st.cfg.server.request_timeout_s.max(1));
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("worker failed: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the request took longer than {} s (server.request_timeout_s)",
                limit.as_secs()
            ),
        )),
    }
}

/// Speaks `text` sentence by sentence on the shared voice, at `speed` if given, handing each
/// sentence's audio (with the configured pause after it) to `out` as soon as it is synthesised;
/// `out` returns false to stop. The voice is locked for one sentence at a time and never while
/// `out` waits on a client, so a slow client holds up nobody else. Text with nothing to say gives
/// no audio.
pub fn speak(
    st: &Shared,
    text: &str,
    speed: Option<f32>,
    mut out: impl FnMut(Vec<f32>) -> bool,
) -> Result<(), TtsError> {
    let gap_ms = st.cfg.tts.sentence_silence_ms;
    for sentence in split_sentences(text) {
        let t = std::time::Instant::now();
        let pcm = {
            let mut voice = lock(&st.models.voice);
            let previous = speed.map(|s| voice.set_rate(s));
            let pcm = tts::speak_all(voice.as_mut(), &sentence, gap_ms);
            if let Some(r) = previous {
                voice.set_rate(r);
            }
            pcm
        };
        st.metrics.observe("tts", t.elapsed().as_secs_f64());
        if !out(pcm?) {
            break;
        }
    }
    Ok(())
}

/// Reads a multipart form into (field name, file name, bytes), with a clear error for a broken one.
pub async fn read_form(
    mut form: Multipart,
) -> Result<Vec<(String, Option<String>, Vec<u8>)>, ApiError> {
    let mut out = Vec::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(out),
            Err(e) => {
                let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                };
                return Err(ApiError::new(
                    status,
                    format!("bad multipart body: {}", e.body_text()),
                ));
            }
        };
        let name = field.name().unwrap_or_default().to_string();
        let file = field.file_name().map(str::to_string);
        let bytes = field.bytes().await.map_err(|e| {
            let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            ApiError::new(status, format!("bad multipart body: {}", e.body_text()))
        })?;
        out.push((name, file, bytes.to_vec()));
    }
}

/// Whether a request's content type is the expected one.
pub fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with(want))
}

/// A JSON request body: 415 for another content type, 400 for JSON that does not parse.
pub fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    if !content_type_is(headers, "application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send a JSON body (Content-Type: application/json)",
        ));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("bad JSON: {e}")))
}
