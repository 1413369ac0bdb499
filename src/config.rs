//! Configuration: TOML file in, typed settings out. The built-in defaults are a complete working config.
//!
//! Lookup order: `--config FILE`, else `$SEESAY_CONFIG`, else `~/.config/seesay/config.toml` when it
//! exists, else the defaults. `seesay config show` prints the effective result.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::home;
use crate::memory::MemoryConfig;
use crate::stages::asr::AsrConfig;
use crate::stages::caption::VisionConfig;
use crate::stages::embed::EmbedConfig;
use crate::stages::llm::LlmConfig;
use crate::stages::read::ReadConfig;
use crate::stages::tts::TtsConfig;
use crate::stages::turn::TurnConfig;
use crate::stages::vad::VadConfig;
use crate::store::ModelsConfig;
use crate::tools::{ImagesConfig, ToolsConfig};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
}

/// The whole configuration. Every section has complete defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where models live and where downloads are cached.
    pub models: ModelsConfig,
    /// Speech recognition (Whisper through whisper.cpp, or an OpenAI-compatible server).
    pub asr: AsrConfig,
    /// The language model (local GGUF through candle, or an OpenAI-compatible server).
    pub llm: LlmConfig,
    /// Speech synthesis (Piper voices through onnxruntime, or an OpenAI-compatible server).
    pub tts: TtsConfig,
    /// Image description (camera frames and image files).
    pub vision: VisionConfig,
    /// Reading text in pictures (OCR): `seesay read`, and "Text in view" in descriptions.
    pub read: ReadConfig,
    /// Voice activity detection: when the user starts and stops speaking.
    pub vad: VadConfig,
    /// End of turn: whether a pause ends the user's turn (Smart Turn + the language model).
    pub turn: TurnConfig,
    /// The live pipeline (`seesay run`): barge-in, devices, streaming.
    pub pipeline: PipelineConfig,
    /// `seesay serve`: addresses, authentication, limits.
    pub server: ServerConfig,
    /// Text embeddings (all-MiniLM-L6-v2): memory search and `POST /v1/embeddings`.
    pub embed: EmbedConfig,
    /// What seesay remembers (seen, said, noted) and recalls into conversations.
    pub memory: MemoryConfig,
    /// The tools the language model may call (clock, timers, notes, camera, pictures).
    pub tools: ToolsConfig,
    /// Making pictures on request (any service with OpenAI's images API).
    pub images: ImagesConfig,
}

/// Pipeline settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Let the user interrupt: speech (with words) while seesay talks stops it and starts a new
    /// turn. "auto": on where seesay cancels its own echo (a microphone and a speaker with
    /// `echo_cancel`), off elsewhere; true; or false (half duplex: a question asked during an
    /// answer is answered after it, so seesay never answers its own voice).
    pub barge_in: BargeIn,
    /// Take seesay's own voice out of the microphone (WebRTC AEC3), with a live microphone and
    /// speaker.
    pub echo_cancel: bool,
    /// Speak the first clause of an answer on its own once it has this many words, or without
    /// a comma its first phrase ("The capital of Italy | is Rome.": a subject this long, cut
    /// before its verb) (0: whole sentences only). Speech starts sooner: on two cores 3 words
    /// put the first audio 258 ms after the first token against 336 ms with 4 (the pipeline
    /// bench, 20 espeak-ng questions, side by side).
    pub first_clause_words: usize,
    /// At a pause judged not over, but maybe over, write the answer (and synthesise its first
    /// sentences) ahead, held back: if the turn ends there it plays at once; if the user goes
    /// on it is dropped unheard. Costs the cores some work at such pauses.
    pub preemptive_answer: bool,
    /// Microphone name (empty: the default input device).
    pub input_device: String,
    /// Speaker name (empty: the default output device).
    pub output_device: String,
    /// Seconds between camera / image-folder frames.
    pub frame_interval_s: f32,
    /// The V4L2 camera `seesay run` watches: a device path (/dev/video0) or an index (0); empty:
    /// none. `--camera` sets it.
    pub camera: String,
    /// How different a frame must be from the last described one to be described again: the
    /// mean absolute difference of 32x24 grey thumbnails, 0 to 1 of full brightness (0.03: a
    /// tenth of the view changing by a third of full brightness). 0 describes every frame.
    pub scene_change: f32,
    /// Wake word (empty: off): alexa, hey_jarvis, hey_mycroft, hey_rhasspy, okay_nabu or an
    /// openWakeWord .tflite path. seesay then answers only what follows it, and follow-ups.
    pub wake_word: String,
    /// Wake-word probability that counts as a detection.
    pub wake_threshold: f32,
    /// Seconds after the wake word (and after each answer) in which a question is heard.
    pub follow_up_s: f32,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            barge_in: BargeIn::Auto,
            echo_cancel: true,
            first_clause_words: 3,
            preemptive_answer: true,
            input_device: String::new(),
            output_device: String::new(),
            frame_interval_s: 2.0,
            camera: String::new(),
            scene_change: 0.03,
            wake_word: String::new(),
            wake_threshold: 0.5,
            follow_up_s: 6.0,
        }
    }
}

/// Whether the user may interrupt answers (`pipeline.barge_in`): true, false or "auto".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BargeIn {
    /// On where echo is cancelled, off elsewhere.
    #[default]
    Auto,
    On,
    Off,
}

impl BargeIn {
    /// Whether interrupting is allowed, given whether seesay's echo is cancelled.
    pub fn allowed(self, echo_cancelled: bool) -> bool {
        match self {
            BargeIn::Auto => echo_cancelled,
            BargeIn::On => true,
            BargeIn::Off => false,
        }
    }
}

impl From<bool> for BargeIn {
    fn from(on: bool) -> BargeIn {
        if on {
            BargeIn::On
        } else {
            BargeIn::Off
        }
    }
}

impl Serialize for BargeIn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BargeIn::Auto => s.serialize_str("auto"),
            BargeIn::On => s.serialize_bool(true),
            BargeIn::Off => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for BargeIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BargeIn, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(b) => Ok(b.into()),
            Raw::Text(t) if t == "auto" => Ok(BargeIn::Auto),
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "barge_in = {t:?}: use true, false or \"auto\""
            ))),
        }
    }
}

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
    /// Requests being served at once; more get 429. 0 (the default): two for each core (4 on
    /// two cores; each request uses every core while it runs, so more only wait in line).
    pub max_concurrent: usize,
    /// Seconds a request may take before it fails with 504; also how long a conversation may
    /// go without a message from its client before it is closed.
    pub request_timeout_s: u64,
    /// Conversations over WebSocket at once; more get 429. Each has its own VAD and history
    /// and shares the models with everything else. 0 (the default): one for every two cores
    /// (two cores measured in ten-minute soaks: one conversation beside API traffic, first
    /// audio 0.8-0.9 s at the median, 1.1-1.4 s at p95; two at once, 2.1 s at the median; see
    /// the README's capacity curve). One alone gets every core for each step; several share
    /// them out.
    pub max_sessions: usize,
    /// Largest message a WebSocket client may send (audio or a camera snapshot), in MB.
    pub max_message_mb: usize,
    /// Seconds that work in progress (answers being spoken, requests) may take to finish after
    /// SIGINT or SIGTERM before the server exits anyway.
    pub shutdown_timeout_s: u64,
    /// Web origins whose pages may call the API from a browser (CORS), e.g.
    /// ["https://app.example.com"]; ["*"] allows any; empty (the default) allows none.
    pub cors_origins: Vec<String>,
    /// Wyoming connections at once (Home Assistant opens one per request, and one for each
    /// satellite's wake-word stream); more are told `error` (code "busy") and closed.
    pub wyoming_max_connections: usize,
    /// Seconds a Wyoming connection may go without an event from its client before it is
    /// closed (an `error` event with code "idle"); a wake-word stream sends audio all along.
    pub wyoming_idle_timeout_s: u64,
    /// Announce the Wyoming port over zeroconf (mDNS, `_wyoming._tcp`), so that Home Assistant
    /// discovers seesay by itself. Off by default.
    pub zeroconf: bool,
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
            max_concurrent: 0,
            request_timeout_s: 120,
            max_sessions: 0,
            max_message_mb: 4,
            shutdown_timeout_s: 10,
            cors_origins: Vec::new(),
            wyoming_max_connections: 16,
            wyoming_idle_timeout_s: 300,
            zeroconf: false,
        }
    }
}

impl ServerConfig {
    /// Conversations at once: `max_sessions`, or one for every two of `cores` when it is 0.
    pub fn sessions(&self, cores: usize) -> usize {
        match self.max_sessions {
            0 => (cores / 2).max(1),
            n => n,
        }
    }

    /// Requests at once: `max_concurrent`, or two for each of `cores` when it is 0.
    pub fn concurrent(&self, cores: usize) -> usize {
        match self.max_concurrent {
            0 => (cores * 2).max(2),
            n => n,
        }
    }
}

impl Config {
    /// Loads the config from `explicit`, `$SEESAY_CONFIG` or the user config file; defaults otherwise.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        match Self::source(explicit) {
            Some(path) => Self::from_file(&path),
            None => Ok(Config::default()),
        }
    }

    /// The file `load` reads: `explicit`, else `$SEESAY_CONFIG`, else
    /// `$XDG_CONFIG_HOME/seesay/config.toml` (`~/.config/...` when unset) if it exists; `None`
    /// means the built-in defaults.
    pub fn source(explicit: Option<&Path>) -> Option<PathBuf> {
        let from_env = std::env::var_os("SEESAY_CONFIG")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        explicit
            .map(Path::to_path_buf)
            .or(from_env)
            .or_else(|| Some(user_config_file()).filter(|p| p.is_file()))
    }

    /// Parses one TOML file; unknown keys are errors.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// The effective config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// The effective config as TOML with every secret (a non-empty `api_key`, `token` or
    /// `password`, in any section) replaced by asterisks, for showing on a screen or in a log.
    pub fn to_toml_masked(&self) -> String {
        let mut value = toml::Value::try_from(self).expect("config serialises");
        mask_secrets(&mut value);
        toml::to_string_pretty(&value).expect("config serialises")
    }
}

/// The user's config file: `$XDG_CONFIG_HOME/seesay/config.toml`, `~/.config/...` when unset
/// (or not an absolute path, as the XDG spec asks).
pub fn user_config_file() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home().join(".config"));
    base.join("seesay").join("config.toml")
}

fn mask_secrets(value: &mut toml::Value) {
    let secret = |key: &str| key == "api_key" || key.ends_with("token") || key == "password";
    if let toml::Value::Table(t) = value {
        for (key, v) in t.iter_mut() {
            match v {
                toml::Value::String(s) if secret(key) && !s.is_empty() => *s = "********".into(),
                _ => mask_secrets(v),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() {
        let text = Config::default().to_toml();
        let back = Config::from_toml(&text).unwrap();
        assert_eq!(back.to_toml(), text);
        assert_eq!(back.asr.model, "whisper-tiny.en");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("[asr]\nmodle = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("modle"), "{err}");
    }

    #[test]
    fn secrets_are_masked_and_only_secrets() {
        let mut cfg = Config::default();
        cfg.server.api_key = "sk-very-secret".into();
        cfg.llm.api_key = "sk-other".into();
        let shown = cfg.to_toml_masked();
        assert!(
            !shown.contains("sk-very-secret") && !shown.contains("sk-other"),
            "{shown}"
        );
        assert_eq!(shown.matches("\"********\"").count(), 2, "{shown}");
        // Everything else is as it is, and an empty key stays empty (nothing to hide).
        let plain = Config::default().to_toml();
        let back = Config::from_toml(&Config::default().to_toml_masked()).unwrap();
        assert_eq!(back.to_toml(), plain);
    }

    #[test]
    fn capacity_follows_the_cores_unless_set() {
        let auto = ServerConfig::default();
        assert_eq!(
            (auto.sessions(1), auto.sessions(2), auto.sessions(16)),
            (1, 1, 8)
        );
        assert_eq!((auto.concurrent(1), auto.concurrent(2)), (2, 4));
        let set = Config::from_toml("[server]\nmax_sessions = 3\nmax_concurrent = 5\n").unwrap();
        assert_eq!((set.server.sessions(2), set.server.concurrent(2)), (3, 5));
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let cfg = Config::from_toml("[tts]\nrate = 1.5\n").unwrap();
        assert_eq!(cfg.tts.rate, 1.5);
        assert_eq!(cfg.asr.model, Config::default().asr.model);
    }
}
