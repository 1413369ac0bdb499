//! What every handler of `seesay serve` shares: the loaded models and settings (`AppState`),
//! errors in OpenAI's shape (`ApiError`), blocking model work under the request time limit, and
//! request-body readers (JSON, multipart) with clear errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Multipart;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::metrics::Metrics;
use super::priority::Urgent;
use crate::config::Config;
use crate::pipeline::{lock, Locked, Models, PipelineError};
use crate::stages::asr::{self, AsrError, Transcriber};
use crate::stages::embed::{EmbedError, Embedder};
use crate::stages::tts::{self, TtsError};
use crate::stages::Cancel;
use crate::text::splitter::split_sentences;
use tokio::sync::mpsc::error::TrySendError;

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

/// Seconds a refused client is told to wait (`Retry-After`): about one answer.
const RETRY_AFTER_S: &str = "2";

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
        let mut resp = (self.status, Json(body)).into_response();
        if matches!(self.status.as_u16(), 429 | 503) {
            // Work is refused when the server is full, so what is admitted stays fast; a
            // client may come back once some of it is done.
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(RETRY_AFTER_S),
            );
        }
        resp
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
    /// Requests and streams at once (`server.max_concurrent`).
    pub slots: Arc<tokio::sync::Semaphore>,
    /// Conversations (WebSockets) open at once.
    pub sessions: tokio::sync::Semaphore,
    /// Refused conversations' clients in line for the next free place (`admission`).
    pub line: super::admission::Line,
    /// Requests, streams, conversations and Wyoming connections in progress (`Busy`).
    pub busy: tokio::sync::watch::Sender<usize>,
    /// True once the server is shutting down: conversations and connections finish what they
    /// are doing and close.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// The embedding model, loaded by the first request that needs it.
    pub embedder: std::sync::Mutex<Option<Arc<Embedder>>>,
    /// The multilingual model translations use (`asr.translate_model`), loaded on first use.
    pub translator: std::sync::Mutex<Option<Locked<Box<dyn Transcriber>>>>,
    /// The limits (`server.max_sessions`, `server.max_concurrent`) at which work is being
    /// refused: the log says so once, until work is admitted under that limit again.
    pub over: std::sync::Mutex<std::collections::HashSet<&'static str>>,
    /// Conversations' turns under way, which requests wait for (`priority`).
    pub urgent: Arc<Urgent>,
}

impl AppState {
    /// Work was refused for want of room under `setting`: logged once, not per refusal.
    pub fn refused(&self, what: &str, setting: &'static str) {
        if lock(&self.over).insert(setting) {
            tracing::warn!(
                "over capacity: {what} refused ({setting}); said once until one is admitted again"
            );
        }
    }

    /// Work was admitted under `setting`: its next refusal is logged again.
    pub fn admitted(&self, setting: &'static str) {
        if lock(&self.over).remove(setting) {
            tracing::info!("back under capacity ({setting}): work is admitted again");
        }
    }

    /// Loads every model (conversations load their own VAD; `Models::load` checks it now, so a
    /// broken file fails at start, not at the first conversation).
    pub fn load(mut cfg: Config) -> Result<AppState, PipelineError> {
        // Past these, new work is refused (429) so that what was admitted stays fast.
        let cores = crate::host::cores();
        let (sessions, concurrent) = (cfg.server.sessions(cores), cfg.server.concurrent(cores));
        // Several conversations run at once: their stages share the cores (unless the config
        // says otherwise). One alone (the default on two cores) gets every core for each step,
        // as in `seesay run`: its recogniser and model take turns, and requests wait for its
        // turns (`priority`).
        let share = match sessions {
            1 => crate::host::Budget::for_cores(cores),
            _ => crate::host::Budget::serving(cores),
        };
        for (threads, n) in [
            (&mut cfg.asr.threads, share.asr),
            (&mut cfg.llm.threads, share.llm),
            (&mut cfg.tts.threads, share.tts),
        ] {
            if *threads == 0 {
                *threads = n;
            }
        }
        tracing::info!(
            conversations = sessions,
            requests = concurrent,
            cores,
            "capacity (server.max_sessions, server.max_concurrent)"
        );
        // A slot for each conversation, and two for API requests.
        let models = Models::load(&cfg, true, sessions + 2)?;
        let api_key = Some(cfg.server.api_key.clone())
            .filter(|k| !k.is_empty())
            .or_else(|| std::env::var("SEESAY_API_KEY").ok())
            .filter(|k| !k.is_empty());
        Ok(AppState {
            slots: Arc::new(tokio::sync::Semaphore::new(concurrent)),
            busy: tokio::sync::watch::Sender::new(0),
            stopping: tokio::sync::watch::Sender::new(false),
            sessions: tokio::sync::Semaphore::new(sessions),
            models,
            cfg,
            metrics: Metrics::default(),
            api_key,
            embedder: Default::default(),
            translator: Default::default(),
            over: Default::default(),
            urgent: Default::default(),
            line: Default::default(),
        })
    }

    /// The embedding model (`[embed]`), loaded on first use; a failed load is tried again by
    /// the next request.
    pub fn embedder(&self) -> Result<Arc<Embedder>, EmbedError> {
        let mut slot = lock(&self.embedder);
        if let Some(e) = &*slot {
            return Ok(e.clone());
        }
        let store = crate::store::Store::from_config(&self.cfg.models)?;
        let e = Arc::new(Embedder::open(&self.cfg.embed, &store)?);
        *slot = Some(e.clone());
        Ok(e)
    }

    /// The model that translates: the recogniser itself when it is `asr.translate_model`, else
    /// that model, loaded on first use (a failed load is tried again by the next request).
    pub fn translator(&self) -> Result<Locked<Box<dyn Transcriber>>, ApiError> {
        let cfg = &self.cfg.asr;
        let english_only = || {
            ApiError::bad(format!(
                "asr.translate_model {:?} is English-only and cannot translate: set it to a multilingual model such as whisper-base",
                cfg.translate_model
            ))
        };
        if cfg.translate_model == cfg.model {
            let m = self.models.asr.clone();
            let multilingual = lock(&m).is_multilingual();
            return match multilingual {
                true => Ok(m),
                false => Err(english_only()),
            };
        }
        let mut slot = lock(&self.translator);
        if let Some(m) = &*slot {
            return Ok(m.clone());
        }
        let store =
            crate::store::Store::from_config(&self.cfg.models).map_err(ApiError::internal)?;
        let mut c = cfg.clone();
        c.model = cfg.translate_model.clone();
        c.language = "auto".into();
        let m = match asr::open_whisper(&c, &store) {
            Ok(m) => m,
            Err(AsrError::EnglishOnly { .. }) => return Err(english_only()),
            Err(e) => return Err(ApiError::internal(e)),
        };
        tracing::info!(model = m.name(), "translation model loaded");
        let m: Locked<Box<dyn Transcriber>> = Arc::new(std::sync::Mutex::new(Box::new(m)));
        *slot = Some(m.clone());
        Ok(m)
    }
}

pub type Shared = Arc<AppState>;

/// Runs blocking model work with the request time limit, once conversations' turns under way
/// have their first audio (`priority`). The work gets a cancel token: when the limit passes
/// (504) or the client goes away, it is cancelled, so it stops at its next check instead of
/// running on for nobody. A panic in it is logged and answered with 500.
pub async fn blocking<T: Send + 'static>(
    st: &Shared,
    f: impl FnOnce(&Cancel) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    gave_way(st, st.urgent.give_way().await);
    within(
        Duration::from_secs(st.cfg.server.request_timeout_s.max(1)),
        f,
    )
    .await
}

/// `blocking` with the time limit given.
async fn within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce(&Cancel) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let cancel = Cancel::new();
    // Dropped (the request is over, or its client hung up): the work is cancelled.
    let on_drop = CancelOnDrop(cancel.clone());
    let task = tokio::task::spawn_blocking(move || f(&cancel));
    let result = match tokio::time::timeout(limit, task).await {
        Ok(Ok(r)) => r,
        // The details go to the log only (a panic's message may name server paths).
        Ok(Err(e)) => {
            panic_text(e);
            Err(ApiError::internal(
                "the server failed on this request (its log says why)",
            ))
        }
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the request took longer than {} s (server.request_timeout_s)",
                limit.as_secs()
            ),
        )),
    };
    drop(on_drop);
    result
}

struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// What a failed blocking task says (a panic's message), logged as an error.
fn panic_text(e: tokio::task::JoinError) -> String {
    let text = match e.try_into_panic() {
        Ok(payload) => format!("a panic: {}", payload_text(payload.as_ref())),
        Err(e) => e.to_string(),
    };
    tracing::error!("a request's worker failed: {text}");
    text
}

/// Returns once the server is shutting down (`AppState::stopping`).
pub async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// A panic's message.
fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// The sending end of a streamed response, fed from a blocking thread.
pub struct Feed<T> {
    tx: tokio::sync::mpsc::Sender<T>,
    cancel: Cancel,
    deadline: Instant,
}

impl<T> Feed<T> {
    /// Hands `item` to the client, waiting while its reader is behind. False (and the work
    /// cancelled) once the client has gone or the request's time (`server.request_timeout_s`)
    /// is up: a slow reader slows its own stream and holds nothing else.
    pub fn send(&self, mut item: T) -> bool {
        loop {
            if self.cancel.is_cancelled() || self.timed_out() {
                self.cancel.cancel();
                return false;
            }
            match self.tx.try_send(item) {
                Ok(()) => return true,
                Err(TrySendError::Full(back)) => {
                    item = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Closed(_)) => {
                    self.cancel.cancel();
                    return false;
                }
            }
        }
    }

    /// Sends `item` even after a timeout (the error that says so), if there is room.
    pub fn last(&self, item: T) {
        let _ = self.tx.try_send(item);
    }

    pub fn cancel(&self) -> &Cancel {
        &self.cancel
    }

    pub fn timed_out(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

/// How long a request waited for conversations, in the metrics (`request_gave_way`).
pub fn gave_way(st: &AppState, waited: Duration) {
    st.metrics.observe("request_gave_way", waited.as_secs_f64());
}

/// Runs `f` on a blocking thread that feeds the returned stream (`capacity` items ahead of the
/// client at most) within the request time limit, once conversations' turns under way have
/// their first audio. A panic in `f` is logged and, as `on_panic`'s item, the stream's last word.
pub fn stream_blocking<T: Send + 'static>(
    st: &Shared,
    capacity: usize,
    f: impl FnOnce(&Feed<T>) + Send + 'static,
    on_panic: impl FnOnce(String) -> T + Send + 'static,
) -> tokio_stream::wrappers::ReceiverStream<T> {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
    let feed = Feed {
        tx,
        cancel: Cancel::new(),
        deadline: Instant::now() + Duration::from_secs(st.cfg.server.request_timeout_s.max(1)),
    };
    let st = st.clone();
    tokio::task::spawn_blocking(move || {
        gave_way(&st, st.urgent.give_way_blocking());
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&feed))) {
            let m = payload_text(payload.as_ref());
            tracing::error!("a streamed response's worker panicked: {m}");
            feed.last(on_panic(m));
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Speaks `text` sentence by sentence on the shared voice, at `speed` if given, handing each
/// sentence's audio (with the configured pause after it) to `out` as soon as it is synthesised;
/// `out` returns false to stop. The voice is locked for one sentence at a time and never while
/// `out` waits on a client, so a slow client holds up nobody else; before each sentence it waits
/// for conversations' turns under way (`priority`). Text with nothing to say gives no audio.
pub fn speak(
    st: &Shared,
    text: &str,
    speed: Option<f32>,
    mut out: impl FnMut(Vec<f32>) -> bool,
) -> Result<(), TtsError> {
    let gap_ms = st.cfg.tts.sentence_silence_ms;
    for sentence in split_sentences(text) {
        st.urgent.give_way_blocking();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_timeout_cancels_the_work_and_a_panic_is_a_500() {
        let (tx, rx) = std::sync::mpsc::channel();
        let slow = within(Duration::from_millis(100), move |cancel: &Cancel| {
            let t = std::time::Instant::now();
            while !cancel.is_cancelled() && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(5));
            }
            tx.send(cancel.is_cancelled()).unwrap();
            Ok(())
        })
        .await
        .unwrap_err();
        assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT);
        // The work saw the cancellation and stopped, well before its own 10 s.
        assert!(rx.recv_timeout(Duration::from_secs(2)).unwrap());
        let panicked = within(
            Duration::from_secs(5),
            |_: &Cancel| -> Result<(), ApiError> { panic!("the model broke") },
        )
        .await
        .unwrap_err();
        assert_eq!(panicked.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            !panicked.message.contains("the model broke"),
            "{}",
            panicked.message
        );
    }
}
