//! Configuration: TOML file in, typed settings out. The built-in defaults are a complete working config.
//!
//! Lookup order: `--config FILE`, else `$SEESAY_CONFIG`, else `~/.config/seesay/config.toml` when it
//! exists, else the defaults. `seesay config show` prints the effective result.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::asr::AsrConfig;
use crate::caption::VisionConfig;
use crate::llm::LlmConfig;
use crate::pipeline::PipelineConfig;
use crate::server::ServerConfig;
use crate::tts::TtsConfig;
use crate::vad::VadConfig;

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
    /// Speech recognition (Whisper through whisper.cpp).
    pub asr: AsrConfig,
    /// The language model (local GGUF through candle, or an OpenAI-compatible server).
    pub llm: LlmConfig,
    /// Speech synthesis (Piper voices through onnxruntime).
    pub tts: TtsConfig,
    /// Image description (camera frames and image files).
    pub vision: VisionConfig,
    /// Voice activity detection: when the user starts and stops speaking.
    pub vad: VadConfig,
    /// The live pipeline (`seesay run`): barge-in, devices, streaming.
    pub pipeline: PipelineConfig,
    /// `seesay serve`: addresses, authentication, limits.
    pub server: ServerConfig,
}

/// Model storage.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Folder that holds fetched and converted models. Empty: `$SEESAY_MODELS_DIR`, else
    /// `~/.cache/seesay/models`.
    pub dir: String,
    /// Folder for downloaded registry packages. Empty: `$SEESAY_CACHE_DIR/downloads`, else
    /// `~/.cache/seesay/downloads`.
    pub download_dir: String,
}

impl ModelsConfig {
    /// The models folder this config resolves to.
    pub fn dir(&self) -> PathBuf {
        if !self.dir.is_empty() {
            return expand_home(&self.dir);
        }
        if let Some(dir) = std::env::var_os("SEESAY_MODELS_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        cache_root().join("models")
    }

    /// The download cache this config resolves to.
    pub fn download_dir(&self) -> PathBuf {
        if !self.download_dir.is_empty() {
            return expand_home(&self.download_dir);
        }
        cache_root().join("downloads")
    }
}

/// `$SEESAY_CACHE_DIR`, else `$XDG_CACHE_HOME/seesay`, else `~/.cache/seesay`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("SEESAY_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("seesay");
    }
    home().join(".cache").join("seesay")
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A configured thread count, where 0 means every core.
pub fn thread_count(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Expands a leading `~/` to the home folder.
pub fn expand_home(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home().join(rest),
        None => PathBuf::from(path),
    }
}

impl Config {
    /// Loads the config from `explicit`, `$SEESAY_CONFIG` or the user config file; defaults otherwise.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let from_env = std::env::var_os("SEESAY_CONFIG")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let user = home().join(".config").join("seesay").join("config.toml");
        match explicit.map(Path::to_path_buf).or(from_env) {
            Some(path) => Self::from_file(&path),
            None if user.is_file() => Self::from_file(&user),
            None => Ok(Config::default()),
        }
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
    fn partial_file_keeps_other_defaults() {
        let cfg = Config::from_toml("[tts]\nrate = 1.5\n").unwrap();
        assert_eq!(cfg.tts.rate, 1.5);
        assert_eq!(cfg.asr.model, Config::default().asr.model);
    }
}
