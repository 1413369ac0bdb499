//! `seesay serve`: the models, loaded once, behind OpenAI-compatible HTTP endpoints
//! (`openai.rs`: `/v1/audio/transcriptions`, `/v1/audio/speech`, `/v1/chat/completions`), the
//! spoken conversation over WebSocket with its web page (`conversation.rs`, `web/`),
//! `/v1/models`, `/healthz` and Prometheus `/metrics` (`metrics.rs`), plus the Wyoming protocol
//! on its own port (`wyoming.rs`). Requests in, JSON / audio / server-sent events out. Inference
//! runs on blocking threads, one request per model at a time; tokio does the network.

pub mod admission;
pub mod client;
pub mod conversation;
pub mod handle;
pub mod memory;
pub mod metrics;
pub mod openai;
pub mod priority;
pub mod state;
pub mod tool_calls;
pub mod transcribe;
pub mod wyoming;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio_stream::StreamExt;

use self::state::{ApiError, AppState, Shared};
use crate::config::{Config, ServerConfig};
use crate::pipeline::PipelineError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(transparent)]
    Load(#[from] PipelineError),
    #[error("cannot listen on {addr}{what}: {error}")]
    Bind {
        addr: String,
        what: &'static str,
        error: std::io::Error,
    },
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The paths the server answers; metrics count any other as "other" (a scanner's junk paths
/// must not grow the metrics without bound).
const ROUTES: [&str; 14] = [
    "/healthz",
    "/",
    "/capture.js",
    "/metrics",
    "/v1/models",
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
    "/v1/audio/speech",
    "/v1/chat/completions",
    "/v1/conversation",
    "/v1/embeddings",
    "/v1/memory",
    "/v1/memory/search",
    "/v1/memory/{id}",
];

/// Every request: CORS, then the guard, then one access-log line (info level) with the method,
/// the path (never its query, which may hold a token), the status and the time taken.
async fn edge(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed = origin.filter(|o| cors_allows(&st.cfg.server.cors_origins, o));
    let mut resp = match (&allowed, method == axum::http::Method::OPTIONS) {
        // A browser's preflight: answered here, before authentication (it carries no token).
        (Some(_), true) => StatusCode::NO_CONTENT.into_response(),
        _ => guard(st.clone(), req, next).await,
    };
    if let Some(o) = allowed {
        add_cors_headers(resp.headers_mut(), o);
    }
    tracing::info!(
        target: "seesay::access",
        %method,
        path = %path,
        status = resp.status().as_u16(),
        ms = start.elapsed().as_millis() as u64,
        "request"
    );
    resp
}

/// Whether `origin` may call the API from a browser (`server.cors_origins`: exact origins, or
/// "*" for any).
fn cors_allows(allowed: &[String], origin: &axum::http::HeaderValue) -> bool {
    let origin = origin.to_str().unwrap_or_default();
    allowed.iter().any(|a| a == "*" || a == origin)
}

fn add_cors_headers(h: &mut axum::http::HeaderMap, origin: axum::http::HeaderValue) {
    use axum::http::HeaderValue;
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
}

async fn guard(st: Shared, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let route = ROUTES
        .iter()
        .find(|r| **r == path || memory::is_item_path(r, path))
        .copied()
        .unwrap_or("other")
        .to_string();
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
    // Health and metrics answer even when every slot is taken: that is when they matter.
    let watching = matches!(route.as_str(), "/healthz" | "/metrics");
    let permit = match st.slots.clone().try_acquire_owned() {
        Ok(p) => {
            st.admitted("server.max_concurrent");
            Some(p)
        }
        Err(_) if watching => None,
        Err(_) => {
            st.refused("a request", "server.max_concurrent");
            st.metrics.request(&route, 429);
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests at once (server.max_concurrent)",
            )
            .into_response();
        }
    };
    let busy = Busy::new(&st);
    let resp = next.run(req).await;
    st.metrics.request(&route, resp.status().as_u16());
    // A streamed answer (speech, chat chunks) keeps its permit until its last byte is sent or
    // its client hangs up, so `server.max_concurrent` counts streams too, and shutdown waits.
    if resp.body().size_hint().exact().is_none() && route != "/v1/conversation" {
        let keep = (permit, busy);
        return resp.map(|body| {
            Body::from_stream(body.into_data_stream().map(move |chunk| {
                let _ = &keep;
                chunk
            }))
        });
    }
    drop((permit, busy));
    resp
}

/// A request, stream or connection in progress: counted in the metrics (`active`) and waited
/// for at shutdown, until dropped.
pub struct Busy(Shared);

impl Busy {
    pub fn new(st: &Shared) -> Busy {
        st.metrics.active.fetch_add(1, Ordering::Relaxed);
        st.busy.send_modify(|n| *n += 1);
        Busy(st.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.metrics.active.fetch_sub(1, Ordering::Relaxed);
        self.0.busy.send_modify(|n| *n -= 1);
    }
}

pub fn router(st: Shared) -> Router {
    let limit = st.cfg.server.max_upload_mb.max(1) << 20;
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(page))
        .route("/capture.js", get(capture_js))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/audio/transcriptions", post(transcribe::transcriptions))
        .route("/v1/audio/translations", post(transcribe::translations))
        .route("/v1/audio/speech", post(openai::speech))
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/conversation", get(conversation::conversation))
        .route("/v1/embeddings", post(memory::embeddings))
        .route(
            "/v1/memory",
            get(memory::list)
                .post(memory::add)
                .delete(memory::forget_many),
        )
        .route("/v1/memory/search", get(memory::search))
        .route("/v1/memory/{id}", axum::routing::delete(memory::forget))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(st.clone(), edge))
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

/// Where the server listens, once it does.
pub struct Listening {
    pub http: SocketAddr,
    pub wyoming: Option<SocketAddr>,
}

/// Serves HTTP (and Wyoming, if configured) until SIGINT or SIGTERM; `ready` hears the addresses
/// once the models are loaded and the ports are open. At the signal it stops accepting, tells
/// every conversation and Wyoming connection, lets work in progress finish for up to
/// `server.shutdown_timeout_s`, and returns; a second signal exits the process at once.
pub fn serve(cfg: Config, ready: impl FnOnce(&Listening)) -> Result<(), ServerError> {
    // The ports are taken first: a port in use fails at once, not after the models load, and
    // no connection made while they load (to llama-server) can land on one of them.
    let (listener, wyoming) = bind_ports(&cfg.server)?;
    let t = Instant::now();
    let st: Shared = Arc::new(AppState::load(cfg)?);
    tracing::info!(ms = t.elapsed().as_millis() as u64, "models loaded");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let wyoming = wyoming.map(tokio::net::TcpListener::from_std).transpose()?;
        let mut signals = Signals::new()?;
        ready(&Listening {
            http: listener.local_addr()?,
            wyoming: wyoming.as_ref().map(|w| w.local_addr()).transpose()?,
        });
        if let Some(w) = wyoming {
            tokio::spawn(wyoming::serve(w, st.clone()));
        }
        tokio::spawn(give_back_memory(st.clone()));
        let mut stopping = st.stopping.subscribe();
        let http = tokio::spawn(
            axum::serve(listener, router(st.clone()))
                .with_graceful_shutdown(async move {
                    state::stopped(&mut stopping).await;
                })
                .into_future(),
        );
        signals.next().await;
        let grace = std::time::Duration::from_secs(st.cfg.server.shutdown_timeout_s);
        tracing::warn!(
            "shutting down: finishing what is in progress (up to {} s; a second signal exits now)",
            grace.as_secs()
        );
        st.stopping.send_replace(true);
        tokio::spawn(async move {
            signals.next().await;
            eprintln!("seesay: a second signal; exiting now");
            std::process::exit(130);
        });
        let mut busy = st.busy.subscribe();
        let finished = tokio::time::timeout(grace, async {
            let _ = http.await;
            let _ = busy.wait_for(|n| *n == 0).await;
        })
        .await;
        match finished {
            Ok(()) => tracing::info!("everything in progress finished; goodbye"),
            Err(_) => tracing::warn!(
                busy = *st.busy.borrow(),
                "server.shutdown_timeout_s passed with work in progress; exiting anyway"
            ),
        }
        Ok(())
    });
    // Work still running on blocking threads (an answer past the deadline) is not waited for.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

/// The HTTP listener and, if configured, Wyoming's (non-blocking, for tokio).
fn bind_ports(
    cfg: &ServerConfig,
) -> Result<(std::net::TcpListener, Option<std::net::TcpListener>), ServerError> {
    let bind = |addr: &str, what: &'static str| {
        std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|error| ServerError::Bind {
                addr: addr.to_string(),
                what,
                error,
            })
    };
    let http = bind(&cfg.listen, "")?;
    let wyoming = match cfg.wyoming_listen.as_str() {
        "" => None,
        addr => Some(bind(addr, " (Wyoming)")?),
    };
    Ok((http, wyoming))
}

/// SIGINT (Ctrl-C) and SIGTERM (a service manager's stop), as one stream.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Hands memory freed since back to the system (glibc keeps freed pages in its arenas for
/// later) every half minute, and once the server has been idle for a second: its RSS follows what
/// it holds, not what its busiest moment held. (Between trims the RSS of `scripts/soak` swung
/// between 338 and 449 MB, so where it ended was chance.) Ends when the server's state is gone.
async fn give_back_memory(st: Shared) {
    let mut busy = st.busy.subscribe();
    drop(st);
    let mut every = tokio::time::interval(std::time::Duration::from_secs(30));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut trimmed = false;
    loop {
        let idle = *busy.borrow_and_update() == 0 && !trimmed;
        tokio::select! {
            _ = every.tick() => {}
            changed = busy.changed() => {
                if changed.is_err() {
                    return;
                }
                trimmed = false;
                continue;
            }
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)), if idle => {}
        }
        trimmed = true;
        // malloc_trim holds each arena while it walks it: not on one of the two async workers.
        let _ = tokio::task::spawn_blocking(crate::host::give_back_freed_memory).await;
    }
}
