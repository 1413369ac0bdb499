//! `seesay serve`: the models, loaded once, behind OpenAI-compatible HTTP endpoints
//! (`/v1/audio/transcriptions`, `/v1/audio/speech`, `/v1/chat/completions`, `/v1/models`),
//! `/healthz` and Prometheus `/metrics`, plus the Wyoming protocol on its own port (`wyoming.rs`).
//! Requests in, JSON / audio / server-sent events out. Inference runs on blocking threads, one
//! request per model at a time; tokio does the network.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Multipart, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// Server settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// HTTP address. 127.0.0.1 keeps it on this machine; 0.0.0.0 opens it to the network.
    pub listen: String,
    /// Wyoming (Home Assistant) address; empty turns it off.
    pub wyoming_listen: String,
    /// Bearer token every endpoint but /healthz requires; empty reads `$SEESAY_API_KEY`; both
    /// empty: no authentication.
    pub api_key: String,
    /// Largest request body, in MB (audio uploads, images in chat requests).
    pub max_upload_mb: usize,
    /// Longest audio accepted for transcription, in seconds.
    pub max_audio_s: f64,
    /// Longest text accepted for speech, in characters.
    pub max_speech_chars: usize,
    /// Requests being served at once; more get 429.
    pub max_concurrent: usize,
    /// Seconds a request may take before it fails with 504; also how long a conversation may
    /// go without a message from its client before it is closed.
    pub request_timeout_s: u64,
    /// Conversations over WebSocket at once; more get 429. Each has its own VAD and history
    /// and shares the models with everything else.
    pub max_sessions: usize,
    /// Largest message a WebSocket client may send (audio or a camera snapshot), in MB.
    pub max_message_mb: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8000".into(),
            wyoming_listen: "127.0.0.1:10300".into(),
            api_key: String::new(),
            max_upload_mb: 25,
            max_audio_s: 600.0,
            max_speech_chars: 4096,
            max_concurrent: 16,
            request_timeout_s: 120,
            max_sessions: 4,
            max_message_mb: 4,
        }
    }
}

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

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

/// Counters and latency histograms, rendered in Prometheus' text format.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<std::collections::BTreeMap<(String, u16), u64>>,
    stages: Mutex<std::collections::BTreeMap<&'static str, Histogram>>,
    pub active: AtomicU64,
    /// WebSocket conversations open now.
    pub conversations: AtomicU64,
}

const BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    n: u64,
}

impl Metrics {
    fn request(&self, route: &str, status: u16) {
        let mut r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *r.entry((route.to_string(), status)).or_default() += 1;
    }

    pub fn observe(&self, stage: &'static str, secs: f64) {
        let mut s = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        let h = s.entry(stage).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.n += 1;
    }

    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        out += "# HELP seesay_requests_total HTTP requests by route and status.\n# TYPE seesay_requests_total counter\n";
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "seesay_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out += "# HELP seesay_errors_total HTTP requests that failed (status 400 or above).\n# TYPE seesay_errors_total counter\n";
        let errors: u64 = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((_, s), _)| *s >= 400)
            .map(|(_, n)| n)
            .sum();
        let _ = writeln!(out, "seesay_errors_total {errors}");
        out += "# HELP seesay_active_sessions Requests and connections being served now.\n# TYPE seesay_active_sessions gauge\n";
        let _ = writeln!(
            out,
            "seesay_active_sessions {}",
            self.active.load(Ordering::Relaxed)
        );
        out += "# HELP seesay_conversations Conversations (WebSockets) open now.\n# TYPE seesay_conversations gauge\n";
        let _ = writeln!(
            out,
            "seesay_conversations {}",
            self.conversations.load(Ordering::Relaxed)
        );
        out += "# HELP seesay_stage_seconds Time spent in each model stage.\n# TYPE seesay_stage_seconds histogram\n";
        for (stage, h) in self.stages.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "seesay_stage_seconds_bucket{{stage=\"{stage}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "seesay_stage_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {}",
                h.n
            );
            let _ = writeln!(
                out,
                "seesay_stage_seconds_sum{{stage=\"{stage}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "seesay_stage_seconds_count{{stage=\"{stage}\"}} {}",
                h.n
            );
        }
        out
    }
}

pub struct AppState {
    pub cfg: Config,
    /// Loaded once; every request and every conversation shares them, one step at a time.
    pub models: crate::pipeline::Models,
    pub metrics: Metrics,
    pub api_key: Option<String>,
    pub slots: tokio::sync::Semaphore,
    /// Conversations (WebSockets) open at once.
    pub sessions: tokio::sync::Semaphore,
}

impl AppState {
    pub fn load(cfg: Config) -> anyhow::Result<AppState> {
        let models = crate::pipeline::Models::load(&cfg, true)?;
        // Conversations load their own VAD; a broken file fails here, not at the first one.
        crate::vad::SileroVad::load(&models.vad)?;
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

pub use crate::pipeline::lock;

async fn guard(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let route = req.uri().path().to_string();
    // The page and its script hold no secrets; the conversation they open asks for the token.
    if !matches!(route.as_str(), "/healthz" | "/" | "/capture.js") {
        if let Some(key) = &st.api_key {
            let header_token = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            // Browsers cannot set headers on a WebSocket: the conversation also takes ?token=.
            let query_token = (route == "/v1/conversation")
                .then(|| req.uri().query())
                .flatten()
                .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
                .and_then(|kv| kv.into_iter().find(|(k, _)| k == "token").map(|(_, v)| v));
            let ok = header_token
                .map(str::to_string)
                .or(query_token)
                .is_some_and(|t| t == *key);
            if !ok {
                st.metrics.request(&route, 401);
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong bearer token (Authorization: Bearer ...)",
                )
                .into_response();
            }
        }
    }
    let _permit = match st.slots.try_acquire() {
        Ok(p) => p,
        Err(_) => {
            st.metrics.request(&route, 429);
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests at once (server.max_concurrent)",
            )
            .into_response();
        }
    };
    st.metrics.active.fetch_add(1, Ordering::Relaxed);
    let resp = next.run(req).await;
    st.metrics.active.fetch_sub(1, Ordering::Relaxed);
    st.metrics.request(&route, resp.status().as_u16());
    resp
}

pub fn router(st: Shared) -> Router {
    let limit = st.cfg.server.max_upload_mb.max(1) << 20;
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(page))
        .route("/capture.js", get(capture_js))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route(
            "/v1/audio/transcriptions",
            post(crate::server_api::transcriptions),
        )
        .route("/v1/audio/speech", post(crate::server_api::speech))
        .route("/v1/chat/completions", post(crate::server_api::chat))
        .route("/v1/conversation", get(crate::server_ws::conversation))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(st.clone(), guard))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(st)
}

/// The web page: microphone, camera, playback and the conversation, in one file (no build step).
async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("web/index.html"),
    )
}

/// The page's AudioWorklet (a worklet module must be a script of its own).
async fn capture_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("web/capture.js"),
    )
}

async fn metrics(State(st): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
}

async fn models(State(st): State<Shared>) -> Json<serde_json::Value> {
    let created = 1_700_000_000u64;
    let ids = [
        st.cfg.asr.model.clone(),
        st.cfg.tts.voice.clone(),
        st.cfg.llm.model.clone(),
        "whisper-1".to_string(),
        "tts-1".to_string(),
    ];
    Json(serde_json::json!({
        "object": "list",
        "data": ids.iter().map(|id| serde_json::json!({"id": id, "object": "model", "created": created, "owned_by": "seesay"})).collect::<Vec<_>>(),
    }))
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

/// Serves HTTP (and Wyoming, if configured) until Ctrl-C.
pub fn serve(cfg: Config) -> anyhow::Result<()> {
    let t = Instant::now();
    let st: Shared = Arc::new(AppState::load(cfg)?);
    tracing::info!(ms = t.elapsed().as_millis() as u64, "models loaded");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&st.cfg.server.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", st.cfg.server.listen))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "seesay serving http://{addr} (open it in a browser to talk; the API is under /v1)"
        );
        if !st.cfg.server.wyoming_listen.is_empty() {
            let w = tokio::net::TcpListener::bind(&st.cfg.server.wyoming_listen)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot listen on {} (Wyoming): {e}",
                        st.cfg.server.wyoming_listen
                    )
                })?;
            eprintln!("seesay serving Wyoming on tcp://{}", w.local_addr()?);
            tokio::spawn(crate::wyoming::serve(w, st.clone()));
        }
        axum::serve(listener, router(st))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(())
    })
}
