//! The conversation over WebSocket (`GET /v1/conversation`): the same pipeline as `seesay run`,
//! with the client as microphone, camera and speaker. One pipeline per connection (its own VAD,
//! turns and history) over the server's shared models. `?memory=NAME` keeps what it sees and
//! hears in that store of `/v1/memory` and recalls from it; without it, nothing is kept.
//!
//! Client → server: binary messages of 16 kHz mono 16-bit little-endian PCM, any length;
//! text messages `{"type": "image", "data": "data:image/jpeg;base64,..."}` (a camera snapshot)
//! and `{"type": "text", "text": "..."}` (a typed question, answered as a turn of its own).
//! Both ways, the messages are read and written in `client.rs`.
//!
//! Server → client: text messages `ready`, `speech_started` (stop playing older turns: barge-in),
//! `transcript`, `answer` (pieces of the answer as it is written), `caption`, `turn_done` (the
//! turn's latency figures), `turn_dropped`, `speech_ignored` (speech during an answer let go),
//! `error`; binary messages of answer audio: a 4-byte
//! little-endian turn number, then 16-bit little-endian PCM at `ready.output_sample_rate`.
//!
//! A message the server cannot read closes that connection (code 1003 or 1007) with the reason;
//! the others go on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::client::{bad, incoming, outgoing, Bad, Inputs, FAILED, GOING_AWAY, POLICY, PROTOCOL};

use super::priority::Urgency;
use super::state::{ApiError, Shared};
use crate::config::Config;
use crate::media::audio::SAMPLE_RATE;
use crate::memory::Memory;
use crate::pipeline::{Input, Output, PipelineError, RunOptions, RunSummary, Update};
use crate::stages::camera::{self, FrameReceiver};
use crate::stages::mic::{AudioFrame, Framer};

#[derive(Deserialize)]
pub struct ConversationQuery {
    /// Let the user interrupt answers (default: `pipeline.barge_in`). Browsers cancel their own
    /// echo, so the web page turns it on.
    barge_in: Option<bool>,
    /// Answer only what follows this wake word (default: `pipeline.wake_word`; empty: off).
    wake_word: Option<String>,
    /// The memory store the conversation keeps what it sees and hears in, and recalls from
    /// (`/v1/memory`'s named stores). Without it, nothing is kept.
    memory: Option<String>,
    /// The ticket a refusal (429) gave this client (`Seesay-Ticket`): shown when it calls again,
    /// it keeps the client's place in line (`admission`).
    ticket: Option<u64>,
}

/// Gives a conversation slot back when the session ends (or never starts).
struct Slot(Shared);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.sessions.add_permits(1);
    }
}

/// How long a new conversation waits for a place when `server.max_sessions` are taken.
const ADMIT_WAIT: Duration = Duration::from_secs(1);

/// Takes a conversation's place for the client with `ticket`, or refuses it (429, with
/// `Retry-After` and its ticket to come back with).
async fn admit(st: &Shared, ticket: Option<u64>) -> Result<(), Response> {
    // A conversation that just ended (a page reloading, a client reconnecting at once) frees
    // its place as its stages wind down: a new one waits that long before it is refused.
    let mut why = "too many conversations at once (server.max_sessions)";
    if let Ok(Ok(permit)) = tokio::time::timeout(ADMIT_WAIT, st.sessions.acquire()).await {
        let free = st.sessions.available_permits() + 1;
        if st.line.may_enter(ticket, free, Instant::now()) {
            permit.forget();
            st.line.admitted(ticket);
            st.admitted("server.max_sessions");
            return Ok(());
        }
        why = "the free place is held for a client refused before you (server.max_sessions)";
    }
    st.refused("a conversation", "server.max_sessions");
    let n = st.line.refused(ticket, Instant::now());
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("{why}; call again after Retry-After with ?ticket={n} to keep your place in line"),
    )
    .into_response();
    resp.headers_mut()
        .insert("seesay-ticket", axum::http::HeaderValue::from(n));
    Err(resp)
}

pub async fn conversation(
    State(st): State<Shared>,
    Query(q): Query<ConversationQuery>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                format!("/v1/conversation is a WebSocket: {e}"),
            )
            .into_response()
        }
    };
    if let Err(refused) = admit(&st, q.ticket).await {
        return refused;
    }
    let slot = Slot(st.clone());
    // A client's own echo is its business (the web page relies on the browser's echo
    // cancellation and asks for barge-in); unasked, "auto" means off.
    let barge_in = q
        .barge_in
        .unwrap_or(st.cfg.pipeline.barge_in.allowed(false));
    let wake_word = q
        .wake_word
        .unwrap_or_else(|| st.cfg.pipeline.wake_word.clone());
    if !wake_word.is_empty() && !crate::stages::wake::BUILT_IN.contains(&wake_word.as_str()) {
        // A client may not name files on the server.
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown wake word {wake_word:?}: use one of {:?}",
                crate::stages::wake::BUILT_IN
            ),
        )
        .into_response();
    }
    let memory = match q.memory.filter(|n| !n.is_empty()) {
        Some(name) => {
            let st2 = st.clone();
            let opened =
                tokio::task::spawn_blocking(move || super::memory::open(&st2, Some(&name), true))
                    .await;
            match opened {
                Ok(Ok(m)) => Some(Arc::new(Mutex::new(m))),
                Ok(Err(e)) => return e.into_response(),
                Err(e) => return ApiError::internal(e).into_response(),
            }
        }
        None => None,
    };
    let limit = st.cfg.server.max_message_mb.max(1) << 20;
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            let st = slot.0.clone();
            let _busy = super::Busy::new(&st);
            st.metrics.conversations.fetch_add(1, Ordering::Relaxed);
            session(socket, st.clone(), barge_in, wake_word, memory).await;
            st.metrics.conversations.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        })
}

async fn session(
    mut socket: WebSocket,
    st: Shared,
    barge_in: bool,
    wake_word: String,
    memory: Option<Arc<Mutex<Memory>>>,
) {
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let abort = Arc::new(AtomicBool::new(false));
    // Pipeline → client: crossbeam from the stage threads, bridged to tokio by one thread.
    let (tx_up, rx_up) = crossbeam_channel::bounded::<Update>(64);
    let (tx_out, mut rx_out) = tokio::sync::mpsc::channel::<Update>(64);
    // Client → pipeline: audio through a source thread that cuts it into VAD frames.
    let (tx_audio, rx_audio) = tokio::sync::mpsc::channel::<Vec<f32>>(64);
    let (tx_frames, rx_frames) = crossbeam_channel::bounded(64);
    let (tx_pictures, rx_pictures) = camera::frame_slot();
    if let Err(e) = spawn_bridges(rx_up, tx_out, rx_audio, tx_frames) {
        let _ = close(&mut socket, bad(FAILED, format!("cannot start: {e}"))).await;
        return;
    }
    let mut cfg = st.cfg.clone();
    cfg.pipeline.barge_in = barge_in.into();
    cfg.pipeline.wake_word = wake_word;
    let cfg_wake = cfg.pipeline.wake_word.clone();
    // Taken up at once unless the recogniser is busy; a client that types faster than that
    // sixteen times over is closed.
    let (tx_typed, rx_typed) = crossbeam_channel::bounded::<String>(16);
    let opts = client_run_options(rx_frames, rx_pictures, rx_typed, tx_up, memory);
    let runner = start_pipeline(cfg, &st, opts, &stop, &abort);
    tracing::info!(barge_in, "conversation started");

    let ready = ready_message(&st, barge_in, cfg_wake);
    let mut exchange = Exchange::new(&st);
    // What the client sends into the pipeline (dropped: the input has ended).
    let mut inputs = Some(Inputs {
        audio: tx_audio,
        pictures: tx_pictures,
        typed: tx_typed,
    });
    if socket.send(ready).await.is_ok() {
        exchange
            .run(&mut socket, &st, &mut inputs, &mut rx_out)
            .await;
    }
    // Stop everything: no more input, cancel the answer in flight, nobody reads updates.
    abort.store(true, Ordering::Release);
    stop.store(true, Ordering::Release);
    drop(inputs);
    drop(rx_out);
    let failed = pipeline_failure(runner.await);
    crate::host::give_back_freed_memory();
    let mut closing = exchange.closing;
    if let Some(e) = &failed {
        tracing::error!("conversation failed: {e}");
        closing.get_or_insert(bad(FAILED, e.clone()));
    }
    if let Some(b) = closing {
        let _ = close(&mut socket, b).await;
    }
    tracing::info!(secs = t0.elapsed().as_secs_f64(), "conversation ended");
}

/// Starts the two bridge threads: pipeline updates to the tokio side (`ws-out`), and the
/// client's audio cut into VAD frames (`ws-source`).
fn spawn_bridges(
    rx_up: crossbeam_channel::Receiver<Update>,
    tx_out: tokio::sync::mpsc::Sender<Update>,
    mut rx_audio: tokio::sync::mpsc::Receiver<Vec<f32>>,
    tx_frames: crossbeam_channel::Sender<AudioFrame>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ws-out".into())
        .spawn(move || {
            for u in rx_up {
                if tx_out.blocking_send(u).is_err() {
                    break;
                }
            }
        })
        .and_then(|_| {
            std::thread::Builder::new()
                .name("ws-source".into())
                .spawn(move || {
                    let mut framer = Framer::new(tx_frames);
                    while let Some(samples) = rx_audio.blocking_recv() {
                        if !framer.push(&samples, |_| Instant::now()) {
                            break;
                        }
                    }
                })
        })
        .map(|_| ())
}

/// The `ready` message: the sample rates both ways, and the settings this conversation has.
fn ready_message(st: &Shared, barge_in: bool, wake_word: String) -> Message {
    let ready = json!({
        "type": "ready",
        "input_sample_rate": SAMPLE_RATE,
        "output_sample_rate": st.models.voice_rate,
        "barge_in": barge_in,
        "wake_word": wake_word,
    });
    Message::Text(ready.to_string().into())
}

/// The pipeline's options for a client: its frames, pictures and typed questions in, updates out.
fn client_run_options(
    rx_frames: crossbeam_channel::Receiver<AudioFrame>,
    rx_pictures: FrameReceiver,
    rx_typed: crossbeam_channel::Receiver<String>,
    tx_up: crossbeam_channel::Sender<Update>,
    memory: Option<Arc<Mutex<Memory>>>,
) -> RunOptions {
    RunOptions {
        input: Input::Frames(rx_frames),
        output: Output::Client,
        image: None,
        camera: Some(rx_pictures),
        frames: None,
        metrics: None,
        max_turns: None,
        updates: Some(tx_up),
        // Only a store the client named (`memory=NAME`).
        memory,
        typed: Some(rx_typed),
        on_listening: None,
    }
}

/// Runs the pipeline on a blocking thread over the server's shared models.
fn start_pipeline(
    cfg: Config,
    st: &Shared,
    opts: RunOptions,
    stop: &Arc<AtomicBool>,
    abort: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<RunSummary, PipelineError>> {
    let models = st.models.clone();
    let (stop2, abort2) = (stop.clone(), abort.clone());
    tokio::task::spawn_blocking(move || {
        crate::pipeline::run_with(&cfg, &models, opts, stop2, abort2)
    })
}

/// Why the pipeline failed, if it did (or panicked).
fn pipeline_failure(
    result: Result<Result<RunSummary, PipelineError>, tokio::task::JoinError>,
) -> Option<String> {
    match result {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(e) => Some(format!("the pipeline panicked: {e}")),
    }
}

/// The messages to and from one client, and what ends them.
struct Exchange {
    /// Why the socket is to be closed, once that is known.
    closing: Option<Bad>,
    stopping: tokio::sync::watch::Receiver<bool>,
    /// Shutting down: no more input; the turn in progress is answered, then the socket closes.
    draining: bool,
    /// A client that goes quiet (a browser streams audio all the time) gives its slot back.
    idle: Duration,
    deadline: tokio::time::Instant,
    /// Requests wait while this conversation's turn is under way.
    urgency: Urgency,
}

impl Exchange {
    /// Nothing closing yet; the client's idle time counts from now.
    fn new(st: &Shared) -> Exchange {
        let idle = std::time::Duration::from_secs(st.cfg.server.request_timeout_s.max(1));
        Exchange {
            closing: None,
            stopping: st.stopping.subscribe(),
            draining: false,
            idle,
            deadline: tokio::time::Instant::now() + idle,
            urgency: Urgency::new(st.urgent.clone()),
        }
    }

    /// Passes messages both ways until the client, the pipeline or the server ends them.
    async fn run(
        &mut self,
        socket: &mut WebSocket,
        st: &Shared,
        inputs: &mut Option<Inputs>,
        rx_out: &mut tokio::sync::mpsc::Receiver<Update>,
    ) {
        loop {
            let go_on = tokio::select! {
                msg = socket.recv() => self.take_message(st, msg, inputs).await,
                _ = super::state::stopped(&mut self.stopping), if !self.draining => {
                    self.drain(socket, inputs).await
                }
                _ = tokio::time::sleep_until(self.deadline), if !self.draining => self.quiet(),
                up = rx_out.recv() => {
                    if let Some(up) = &up {
                        self.urgency.update(up);
                    }
                    send_update(socket, st, up, self.idle).await
                }
            };
            if !go_on {
                break;
            }
        }
    }

    /// A message from the client, passed into the pipeline; false: the conversation ends.
    async fn take_message(
        &mut self,
        st: &Shared,
        msg: Option<Result<Message, axum::Error>>,
        inputs: &Option<Inputs>,
    ) -> bool {
        self.deadline = tokio::time::Instant::now() + self.idle;
        let msg = match msg {
            None | Some(Ok(Message::Close(_))) => return false,
            Some(Err(e)) => {
                // A broken frame, or one over server.max_message_mb.
                tracing::warn!("closing a conversation: {e}");
                let limit = st.cfg.server.max_message_mb;
                let reason = format!("{e} (server.max_message_mb = {limit})");
                self.closing = Some(bad(PROTOCOL, reason));
                return false;
            }
            Some(Ok(m)) => m,
        };
        let Some(inputs) = inputs else {
            return true;
        };
        if let Err(b) = incoming(st, msg, inputs).await {
            tracing::warn!(code = b.code, "closing a conversation: {}", b.reason);
            self.closing = Some(b);
            return false;
        }
        true
    }

    /// The server is shutting down: the input ends and the client is told; false if it is gone.
    async fn drain(&mut self, socket: &mut WebSocket, inputs: &mut Option<Inputs>) -> bool {
        self.draining = true;
        // The end of the input: an utterance under way is answered, then the
        // pipeline ends, and with it this loop.
        inputs.take();
        let note = json!({"type": "shutting_down", "message": "the server is shutting down: the answer in progress finishes, then the conversation closes"});
        if socket
            .send(Message::Text(note.to_string().into()))
            .await
            .is_err()
        {
            return false;
        }
        self.closing = Some(bad(GOING_AWAY, "the server is shutting down"));
        true
    }

    /// The client has been quiet too long: the conversation ends.
    fn quiet(&mut self) -> bool {
        self.closing = Some(bad(
            POLICY,
            format!(
                "nothing from the client for {} s (server.request_timeout_s)",
                self.idle.as_secs()
            ),
        ));
        false
    }
}

/// An update from the pipeline, sent to the client; false: the conversation ends.
async fn send_update(
    socket: &mut WebSocket,
    st: &Shared,
    up: Option<Update>,
    idle: Duration,
) -> bool {
    let Some(up) = up else { return false }; // the pipeline ended
    observe(st, &up);
    // A client that stops reading (its buffers full) holds the conversation
    // for `request_timeout_s` at most.
    match tokio::time::timeout(idle, socket.send(outgoing(up))).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::warn!("closing a conversation: its client stopped reading");
            false
        }
    }
}

/// Sends an `error` message, then closes with `b`'s code.
async fn close(socket: &mut WebSocket, b: Bad) -> Result<(), axum::Error> {
    let msg = json!({"type": "error", "message": b.reason});
    socket.send(Message::Text(msg.to_string().into())).await?;
    let reason: String = b.reason.chars().take(120).collect();
    socket
        .send(Message::Close(Some(CloseFrame {
            code: b.code,
            reason: reason.into(),
        })))
        .await
}

/// What ended a user's turn, as a metric's label (the pipeline's `ended_by`).
fn ending(by: &str) -> &'static str {
    match by {
        "model" => "model",
        "silence" => "silence",
        "unsure" => "unsure",
        "length" => "length",
        "typed" => "typed",
        "input end" => "input end",
        _ => "other",
    }
}

/// Records how each turn ended (and speech let go) and a finished turn's figures in the
/// server's metrics.
fn observe(st: &Shared, up: &Update) {
    match up {
        Update::TurnDone(m) if m.interrupted => st.metrics.count("turns", "cut"),
        Update::TurnDone(_) => st.metrics.count("turns", "answered"),
        Update::TurnDropped { reason, .. } => st.metrics.count("turns", reason),
        Update::TurnFailed { .. } => st.metrics.count("turns", "failed"),
        Update::SpeechIgnored { why, .. } => st.metrics.count("speech_ignored", why),
        _ => {}
    }
    if let Update::TurnDone(m) = up {
        st.metrics.count("turn_endings", ending(&m.ended_by));
        st.metrics
            .observe("conversation_transcript", m.transcript_ms / 1000.0);
        st.metrics
            .observe("conversation_first_token", m.first_token_ms / 1000.0);
        st.metrics
            .observe("conversation_voice_to_voice", m.voice_to_voice_ms / 1000.0);
    }
}
