//! The Wyoming protocol (Home Assistant's voice services) on its own TCP port: events in, events
//! out. Each event is one JSON header line, then `data_length` bytes of JSON data, then
//! `payload_length` bytes of payload. seesay answers `describe` with `info`, transcribes
//! (`transcribe`, `audio-start`/`audio-chunk`/`audio-stop` → `transcript`, with the streaming
//! `transcript-start`/`-chunk`/`-stop`) and synthesises (`synthesize`, or the streaming
//! `synthesize-start`/`-chunk`/`-stop`) into `audio-start`/`audio-chunk`/`audio-stop`, and listens
//! for wake words (`detect`, then audio → `detection`, or `not-detected` at `audio-stop`), and
//! is Home Assistant's conversation agent (`transcript` → `handled-start`/`-chunk`/`-stop` as the
//! answer is written, then `handled` with the whole answer, or `not-handled`).
//! A malformed event gets an `error` event and closes that connection only.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpListener;

mod events;
pub mod zeroconf;

use events::protocol;
pub use events::{read_event, write_event, Event, WyomingError};

use super::openai::transcribe_pcm;
use super::state::{self, Shared};
use crate::media::audio::{pcm16, resample, StreamResampler, SAMPLE_RATE};
use crate::stages::wake::{WakeDetector, BUILT_IN};
use crate::stages::Cancel;
use crate::text::splitter::SentenceSplitter;
use crate::text::transcript::plain_text;

fn info(st: &Shared) -> Value {
    let attribution = json!({"name": "seesay", "url": "https://github.com/seesay"});
    json!({
        "asr": [{
            "name": "seesay-whisper", "description": "Whisper (whisper.cpp) in seesay",
            "attribution": attribution, "installed": true, "version": env!("CARGO_PKG_VERSION"),
            "models": [{
                "name": st.cfg.asr.model, "description": "Whisper", "attribution": attribution,
                "installed": true, "version": env!("CARGO_PKG_VERSION"),
                "languages": [st.cfg.asr.language],
            }],
            "supports_transcript_streaming": true,
        }],
        "tts": [{
            "name": "seesay-piper", "description": "Piper voices in seesay",
            "attribution": attribution, "installed": true, "version": env!("CARGO_PKG_VERSION"),
            "voices": [{
                "name": st.cfg.tts.voice, "description": "Piper voice", "attribution": attribution,
                "installed": true, "version": env!("CARGO_PKG_VERSION"), "languages": ["en"],
                "speakers": null,
            }],
            "supports_synthesize_streaming": true,
        }],
        "wake": [{
            "name": "seesay-openwakeword", "description": "openWakeWord in seesay",
            "attribution": attribution, "installed": true, "version": env!("CARGO_PKG_VERSION"),
            "models": BUILT_IN.iter().map(|w| json!({
                "name": w, "description": w.replace('_', " "), "phrase": w.replace('_', " "),
                "attribution": attribution, "installed": true,
                "version": env!("CARGO_PKG_VERSION"), "languages": ["en"],
            })).collect::<Vec<_>>(),
        }],
        "handle": [{
            "name": "seesay-chat", "description": "seesay's language model as a conversation agent",
            "attribution": attribution, "installed": true, "version": env!("CARGO_PKG_VERSION"),
            "models": [{
                "name": st.cfg.llm.model, "description": "language model",
                "attribution": attribution, "installed": true,
                "version": env!("CARGO_PKG_VERSION"), "languages": [st.cfg.asr.language],
            }],
            "supports_handled_streaming": true,
        }],
        "intent": [], "mic": [], "snd": [],
    })
}

/// The setting that limits Wyoming connections, named in the log and the metrics.
const LIMIT: &str = "server.wyoming_max_connections";

/// Accepts connections until the process ends; past `server.wyoming_max_connections` a new one
/// is told it is refused (`error`, code "busy") and closed.
pub async fn serve(listener: TcpListener, st: Shared) {
    let mut stopping = st.stopping.subscribe();
    let most = st.cfg.server.wyoming_max_connections.max(1);
    let slots = Arc::new(tokio::sync::Semaphore::new(most));
    // Withdrawn when this loop ends (the server stops).
    let _announced = match (st.cfg.server.zeroconf, listener.local_addr()) {
        (false, _) => None,
        (true, Ok(addr)) => zeroconf::announce(addr)
            .inspect_err(|e| tracing::warn!("server.zeroconf: cannot announce Wyoming: {e}"))
            .ok(),
        (true, Err(e)) => {
            tracing::warn!("server.zeroconf: the Wyoming address is unknown: {e}");
            None
        }
    };
    loop {
        let (sock, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("wyoming accept failed: {e}");
                    // Out of file descriptors, say: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = super::state::stopped(&mut stopping) => return,
        };
        let permit = slots.clone().try_acquire_owned().ok();
        tokio::spawn(serve_one(sock, peer, permit, most, st.clone()));
    }
}

/// One accepted connection, served if it got a place (`permit`); the client hears why it closes.
async fn serve_one(
    sock: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    most: usize,
    st: Shared,
) {
    let _busy = super::Busy::new(&st);
    let (r, mut w) = sock.into_split();
    let result = match permit {
        Some(_place) => {
            st.admitted(LIMIT);
            st.metrics.count("wyoming_connections", "admitted");
            connection(BufReader::new(r), &mut w, &st).await
        }
        None => {
            st.refused("a Wyoming connection", LIMIT);
            st.metrics.count("wyoming_connections", "refused");
            Err(WyomingError::Busy(most))
        }
    };
    if let Err(e) = result {
        tracing::info!(%peer, "wyoming connection closed: {e:#}");
        // The client hears why (Wyoming's `error` event), unless the connection is gone.
        if !matches!(e, WyomingError::Io(_)) {
            let error = json!({"text": e.to_string(), "code": e.code()});
            let _ = write_event(&mut w, "error", error, &[]).await;
        }
    }
}

/// Longest text accepted for synthesis (a streamed one grows chunk by chunk).
const MAX_TEXT: usize = 64 << 10;

/// The `rate` and `channels` of an `audio-start`, checked: 16-bit PCM (`width` 2), 1–8 channels,
/// 1–192 kHz (a rate of 0 or one cut to 32 bits would otherwise poison the resampler).
pub fn audio_format(data: &Value) -> Result<(u32, usize), WyomingError> {
    let field = |name: &str, default: u64, ok: std::ops::RangeInclusive<u64>| {
        let v = &data[name];
        match v {
            Value::Null => Ok(default),
            _ => v
                .as_u64()
                .filter(|n| ok.contains(n))
                .ok_or_else(|| protocol(format!("audio-start: {name} {v} is not in {ok:?}"))),
        }
    };
    let rate = field("rate", 16_000, 1_000..=192_000)? as u32;
    field("width", 2, 2..=2)?;
    let channels = field("channels", 1, 1..=8)? as usize;
    Ok((rate, channels))
}

/// 16-bit PCM frames of `channels` channels as mono f32.
fn mono(payload: &[u8], channels: usize) -> Vec<f32> {
    payload
        .chunks_exact(2 * channels)
        .map(|f| {
            f.chunks_exact(2)
                .map(|s| i16::from_le_bytes([s[0], s[1]]) as f32 / 32768.0)
                .sum::<f32>()
                / channels as f32
        })
        .collect()
}

/// Wake-word detection (`detect`, then audio): one openWakeWord detector per word listened for.
/// A `detection` event each time one is heard; `not-detected` at `audio-stop` if none was.
struct Wake {
    detectors: Vec<(String, Box<dyn WakeDetector>)>,
    /// The stream's format, once `audio-start` has come: channels and the way to 16 kHz.
    format: Option<(usize, StreamResampler)>,
    /// 16 kHz samples heard since `audio-start`.
    heard: u64,
    detected: bool,
}

impl Wake {
    /// Detectors for `names` (default: every built-in word), loaded off the async threads.
    async fn start(st: &Shared, data: &Value) -> Result<Wake, WyomingError> {
        let names: Vec<String> = match data["names"].as_array() {
            Some(list) if !list.is_empty() => list
                .iter()
                .map(|n| n.as_str().unwrap_or_default().to_string())
                .collect(),
            _ => BUILT_IN.iter().map(|w| w.to_string()).collect(),
        };
        if let Some(bad) = names.iter().find(|n| !BUILT_IN.contains(&n.as_str())) {
            return Err(protocol(format!(
                "detect: unknown wake word {bad:?} (known: {})",
                BUILT_IN.join(", ")
            )));
        }
        let make = st.models.wake.clone();
        let detectors = tokio::task::spawn_blocking(move || {
            names
                .into_iter()
                .map(|n| make(&n).map(|d| (n, d)))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| WyomingError::Failed(e.to_string()))?
        .map_err(|e| WyomingError::Failed(e.to_string()))?;
        Ok(Wake {
            detectors,
            format: None,
            heard: 0,
            detected: false,
        })
    }

    /// Feeds a chunk; returns the words heard in it (and when, in ms from `audio-start`).
    fn push(&mut self, payload: &[u8], threshold: f32) -> Result<Vec<(String, u64)>, WyomingError> {
        let (channels, resampler) = self
            .format
            .as_mut()
            .ok_or_else(|| protocol("audio-chunk before audio-start"))?;
        let pcm = resampler
            .push(&mono(payload, *channels))
            .map_err(|e| WyomingError::Failed(e.to_string()))?;
        self.heard += pcm.len() as u64;
        let at = self.heard * 1000 / SAMPLE_RATE as u64;
        let mut heard = Vec::new();
        for (name, d) in &mut self.detectors {
            let p = d
                .push(&pcm)
                .map_err(|e| WyomingError::Failed(e.to_string()))?;
            if p >= threshold {
                d.reset();
                heard.push((name.clone(), at));
            }
        }
        self.detected |= !heard.is_empty();
        Ok(heard)
    }
}

/// Audio being received for transcription.
struct Incoming {
    rate: u32,
    channels: usize,
    pcm: Vec<f32>,
    language: Option<String>,
}

async fn connection(
    mut r: BufReader<OwnedReadHalf>,
    w: &mut OwnedWriteHalf,
    st: &Shared,
) -> Result<(), WyomingError> {
    let mut conn = Connection {
        st,
        w,
        audio: None,
        language: None,
        streaming_text: None,
        streamed: 0,
        wake: None,
    };
    let mut stopping = st.stopping.subscribe();
    let idle_s = st.cfg.server.wyoming_idle_timeout_s.max(1);
    let idle = std::time::Duration::from_secs(idle_s);
    loop {
        // Shutting down: the event being handled was finished; the client is told (an
        // `error` event with code "shutdown") and the connection closes.
        let ev = tokio::select! {
            ev = tokio::time::timeout(idle, read_event(&mut r)) => match ev {
                Err(_) => return Err(WyomingError::Idle(idle_s)),
                Ok(ev) => match ev? {
                    Some(ev) => ev,
                    None => break,
                },
            },
            _ = super::state::stopped(&mut stopping) => return Err(WyomingError::ShuttingDown),
        };
        conn.event(ev).await?;
    }
    Ok(())
}

/// One connection: where it answers, and what it keeps between events.
struct Connection<'a> {
    st: &'a Shared,
    w: &'a mut OwnedWriteHalf,
    audio: Option<Incoming>,
    /// The language a `transcribe` asked for, until its audio starts.
    language: Option<String>,
    /// Text being streamed for synthesis (`synthesize-start` to `-stop`), and its length so far.
    streaming_text: Option<SentenceSplitter>,
    streamed: usize,
    /// Wake-word detection, from `detect` to `audio-stop`.
    wake: Option<Wake>,
}

impl Connection<'_> {
    /// Handles one event.
    async fn event(&mut self, ev: Event) -> Result<(), WyomingError> {
        match ev.kind.as_str() {
            "describe" => write_event(self.w, "info", info(self.st), &[]).await?,
            "transcribe" => self.language = ev.data["language"].as_str().map(str::to_string),
            "detect" => self.wake = Some(Wake::start(self.st, &ev.data).await?),
            "audio-start" if self.wake.is_some() => self.wake_audio_start(&ev.data)?,
            "audio-chunk" if self.wake.is_some() => self.wake_audio_chunk(&ev.payload).await?,
            "audio-stop" if self.wake.is_some() => {
                if !self.wake.take().expect("checked").detected {
                    write_event(self.w, "not-detected", json!({}), &[]).await?;
                }
            }
            "audio-start" => {
                let (rate, channels) = audio_format(&ev.data)?;
                self.audio = Some(Incoming {
                    rate,
                    channels,
                    pcm: Vec::new(),
                    language: self.language.take(),
                })
            }
            "audio-chunk" => self.audio_chunk(&ev.payload)?,
            "audio-stop" => self.audio_stop().await?,
            "synthesize" => self.synthesize_whole(&ev.data).await?,
            "synthesize-start" => {
                (self.streaming_text, self.streamed) = (Some(SentenceSplitter::new(0)), 0)
            }
            "synthesize-chunk" => self.synthesize_chunk(&ev.data).await?,
            "synthesize-stop" => self.synthesize_stop().await?,
            "transcript" => {
                let text = ev.data["text"].as_str().unwrap_or_default();
                if text.len() > MAX_TEXT {
                    return Err(protocol(format!("transcript longer than {MAX_TEXT} bytes")));
                }
                handle(self.st, self.w, text).await?;
            }
            "ping" => write_event(self.w, "pong", json!({}), &[]).await?,
            other => tracing::debug!("wyoming: ignoring event {other}"),
        }
        Ok(())
    }

    /// `audio-start` while listening for wake words: the stream's format, counting from zero.
    fn wake_audio_start(&mut self, data: &Value) -> Result<(), WyomingError> {
        let (rate, channels) = audio_format(data)?;
        let resampler = StreamResampler::new(rate, SAMPLE_RATE)
            .map_err(|e| WyomingError::Failed(e.to_string()))?;
        let listening = self.wake.as_mut().expect("checked");
        (listening.format, listening.heard) = (Some((channels, resampler)), 0);
        Ok(())
    }

    /// `audio-chunk` while listening for wake words: a `detection` for each word heard.
    async fn wake_audio_chunk(&mut self, payload: &[u8]) -> Result<(), WyomingError> {
        let listening = self.wake.as_mut().expect("checked");
        for (name, at) in listening.push(payload, self.st.cfg.pipeline.wake_threshold)? {
            tracing::info!(word = %name, ms = at, "wyoming: wake word heard");
            let data = json!({"name": name, "timestamp": at});
            write_event(self.w, "detection", data, &[]).await?;
        }
        Ok(())
    }

    /// `audio-chunk` for transcription: kept, up to `server.max_audio_s`.
    fn audio_chunk(&mut self, payload: &[u8]) -> Result<(), WyomingError> {
        let a = self
            .audio
            .as_mut()
            .ok_or_else(|| protocol("audio-chunk before audio-start"))?;
        a.pcm.extend(mono(payload, a.channels));
        if a.pcm.len() as f64 / a.rate as f64 > self.st.cfg.server.max_audio_s {
            return Err(protocol("audio longer than server.max_audio_s"));
        }
        Ok(())
    }

    /// `audio-stop` for transcription: the audio transcribed (off the async threads), the text
    /// sent streamed (in one chunk), then whole.
    async fn audio_stop(&mut self) -> Result<(), WyomingError> {
        let a = self
            .audio
            .take()
            .ok_or_else(|| protocol("audio-stop before audio-start"))?;
        let st2 = self.st.clone();
        let text = tokio::task::spawn_blocking(move || -> Result<String, WyomingError> {
            let pcm = resample(&a.pcm, a.rate, SAMPLE_RATE)
                .map_err(|e| WyomingError::Failed(e.to_string()))?;
            let segments = transcribe_pcm(&st2, &pcm, a.language.as_deref(), &Cancel::new())
                .map_err(|e| WyomingError::Failed(e.message))?;
            Ok(plain_text(&segments))
        })
        .await
        .map_err(|e| WyomingError::Failed(e.to_string()))??;
        write_event(self.w, "transcript-start", json!({}), &[]).await?;
        write_event(self.w, "transcript-chunk", json!({"text": text}), &[]).await?;
        write_event(self.w, "transcript-stop", json!({}), &[]).await?;
        write_event(self.w, "transcript", json!({"text": text}), &[]).await?;
        Ok(())
    }

    /// `synthesize`: the whole text spoken, unless it was streamed.
    async fn synthesize_whole(&mut self, data: &Value) -> Result<(), WyomingError> {
        // A client that streams sends the whole text here too; it was spoken already.
        if self.streaming_text.is_none() {
            let text = data["text"].as_str().unwrap_or_default().to_string();
            if text.len() > MAX_TEXT {
                return Err(protocol(format!("text longer than {MAX_TEXT} bytes")));
            }
            synthesize(self.st, self.w, text).await?;
        }
        Ok(())
    }

    /// `synthesize-chunk`: the text so far split into sentences, each whole one spoken.
    async fn synthesize_chunk(&mut self, data: &Value) -> Result<(), WyomingError> {
        let text = data["text"].as_str().unwrap_or_default();
        self.streamed += text.len();
        if self.streamed > MAX_TEXT {
            return Err(protocol(format!(
                "streamed text longer than {MAX_TEXT} bytes"
            )));
        }
        let splitter = self
            .streaming_text
            .as_mut()
            .ok_or_else(|| protocol("synthesize-chunk before synthesize-start"))?;
        // Each sentence is spoken as soon as it is whole: one audio group a sentence.
        for sentence in splitter.push(text) {
            synthesize(self.st, self.w, sentence).await?;
        }
        Ok(())
    }

    /// `synthesize-stop`: the rest of the streamed text spoken, then `synthesize-stopped`.
    async fn synthesize_stop(&mut self) -> Result<(), WyomingError> {
        let rest = self
            .streaming_text
            .take()
            .map(|mut s| s.finish())
            .unwrap_or_default();
        for sentence in rest {
            synthesize(self.st, self.w, sentence).await?;
        }
        write_event(self.w, "synthesize-stopped", json!({}), &[]).await?;
        Ok(())
    }
}

/// Answers the user's words (`transcript`) as the conversation agent: the answer streamed in
/// `handled-chunk`s between `handled-start` and `handled-stop`, then whole in `handled`; a
/// failure (or nothing to answer) is `not-handled` with the reason.
async fn handle(
    st: &Shared,
    w: &mut (impl AsyncWriteExt + Unpin),
    text: &str,
) -> Result<(), WyomingError> {
    if text.trim().is_empty() {
        let why = json!({"text": "nothing was said"});
        return write_event(w, "not-handled", why, &[])
            .await
            .map_err(Into::into);
    }
    tracing::info!(%text, "wyoming: handling a transcript");
    let mut pieces = super::handle::answer(st, text);
    let mut answer = String::new();
    let mut started = false;
    while let Some(piece) = pieces.recv().await {
        match piece {
            Ok(p) => {
                if !started {
                    started = true;
                    write_event(w, "handled-start", json!({}), &[]).await?;
                }
                write_event(w, "handled-chunk", json!({"text": p}), &[]).await?;
                answer.push_str(&p);
            }
            Err(e) => {
                tracing::warn!("wyoming: could not answer: {e}");
                if started {
                    write_event(w, "handled-stop", json!({}), &[]).await?;
                }
                return write_event(w, "not-handled", json!({"text": e}), &[])
                    .await
                    .map_err(Into::into);
            }
        }
    }
    if started {
        write_event(w, "handled-stop", json!({}), &[]).await?;
    }
    let answer = answer.trim();
    write_event(w, "handled", json!({"text": answer}), &[]).await?;
    Ok(())
}

/// Synthesises `text` sentence by sentence into audio-start / audio-chunk / audio-stop.
async fn synthesize(
    st: &Shared,
    w: &mut (impl AsyncWriteExt + Unpin),
    text: String,
) -> Result<(), WyomingError> {
    let rate = st.models.voice_rate;
    let fmt = json!({"rate": rate, "width": 2, "channels": 1});
    write_event(w, "audio-start", fmt.clone(), &[]).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, String>>(4);
    let st2 = st.clone();
    tokio::task::spawn_blocking(move || {
        let spoken = state::speak(&st2, &text, None, |pcm| {
            tx.blocking_send(Ok(pcm16(&pcm))).is_ok()
        });
        if let Err(e) = spoken {
            let _ = tx.blocking_send(Err(e.to_string()));
        }
    });
    while let Some(chunk) = rx.recv().await {
        for piece in chunk.map_err(WyomingError::Failed)?.chunks(4096) {
            write_event(w, "audio-chunk", fmt.clone(), piece).await?;
        }
    }
    write_event(w, "audio-stop", json!({}), &[]).await?;
    Ok(())
}
