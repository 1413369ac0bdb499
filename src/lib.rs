//! seesay: a local voice-and-vision assistant.
//!
//! The pipeline, stage by stage (one file each):
//!
//! ```text
//! mic / recording / WebSocket ─► vad (Silero) ─► asr (Whisper) ─┐
//!                                                               ├─► llm (candle GGUF, or a remote server)
//! camera / images / snapshots ─► caption (EfficientNet, BLIP) ──┘      │
//!                                      splitter ─► tts (Piper) ─► speaker / WAV file / WebSocket
//! ```
//!
//! `pipeline` wires the stages with threads and bounded channels; `server` (with `server_api`,
//! `server_ws` and `wyoming`) serves them over HTTP, WebSocket and Wyoming. Around the stages:
//! `config` (TOML settings), `models` (fetching and verifying model files), `import` and
//! `import_pth` (model conversions), `audio` (decoding, resampling, WAV), `transcript` (output
//! formats), `bench` (speed measurements) and `cli` (the commands).

pub mod asr;
pub mod audio;
pub mod bench;
pub mod camera;
pub mod caption;
pub mod caption_blip;
pub mod caption_effnet;
pub mod cli;
pub mod config;
pub mod import;
pub mod import_pth;
pub mod llm;
pub mod llm_local;
pub mod llm_remote;
pub mod mic;
pub mod models;
pub mod pipeline;
pub mod server;
pub mod server_api;
pub mod server_ws;
pub mod speaker;
pub mod splitter;
pub mod transcript;
pub mod tts;
pub mod vad;
pub mod wyoming;
