//! Checks made when a Whisper model is loaded: the language it is asked for, and how it is to
//! decode (`asr.beam_size`).

use whisper_rs::WhisperContext;

use super::{AsrConfig, AsrError};

/// `asr.beam_size` checked.
pub(super) fn decoding(cfg: &AsrConfig) -> Result<(), AsrError> {
    if !(1..=8).contains(&cfg.beam_size) {
        return Err(AsrError::Setting {
            name: "beam_size",
            value: cfg.beam_size.to_string(),
            why: "use 1 (greedy) to 8",
        });
    }
    Ok(())
}

pub(super) fn language(ctx: &WhisperContext, model: &str, language: &str) -> Result<(), AsrError> {
    if language != "auto" && whisper_rs::get_lang_id(language).is_none() {
        return Err(AsrError::Language(language.to_string()));
    }
    if !ctx.is_multilingual() && language != "en" {
        return Err(AsrError::EnglishOnly {
            model: model.to_string(),
            language: language.to_string(),
        });
    }
    Ok(())
}
