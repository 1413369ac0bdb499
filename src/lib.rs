//! seesay: a local voice-and-vision assistant.
//!
//! The pipeline, stage by stage (`stages/`, one home each):
//!
//! ```text
//! mic / recording / WebSocket ─► vad (Silero) ─► asr (Whisper) ─┐
//!                                                               ├─► llm (candle GGUF, or a remote server)
//! camera / images / snapshots ─► caption (EfficientNet, BLIP) ──┘      │
//!                                      splitter ─► tts (Piper) ─► speaker / WAV file / WebSocket
//! ```
//!
//! The layers, each using only those below it:
//!
//! | module | takes in | sends out |
//! |---|---|---|
//! | `server` | HTTP, WebSocket and Wyoming requests | transcripts, speech, answers, conversations |
//! | `pipeline` | audio frames and pictures | spoken answers, per-turn figures; wires the stages |
//! | `config` | a TOML file | every section's settings |
//! | `tools` | the model's tool calls | the clock, timers, notes, the camera, pictures, as text for the model |
//! | `memory` | things seen, said and noted | a SQLite store searched by meaning; recalled lines |
//! | `stages` | audio, text, images | what each stage makes (VAD, ASR, LLM, TTS, captions, devices) |
//! | `store` | `models/manifest.toml`, registry packages | verified, converted model files |
//! | `media`, `text`, `host` | files, buffers, text, the machine | PCM, images, sentences, transcripts, paths, threads |
//!
//! The command line (`src/cli/`) is part of the binary, not of this library.

pub mod config;
pub mod host;
pub mod media;
pub mod memory;
pub mod pipeline;
pub mod server;
pub mod stages;
pub mod store;
pub mod text;
pub mod tools;
