//! What a tool is: a name, a description, the JSON schema of its arguments and a time limit;
//! arguments in, text for the model out (`Tool`), with the errors (`ToolError`) and settings
//! (`ToolsConfig`) of the tools.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    #[error("there is no tool named '{0}'")]
    Unknown(String),
    #[error("bad arguments for {tool}: {detail}")]
    Arguments { tool: String, detail: String },
    #[error("{tool} took longer than {seconds} s and was given up; raise tools.limits.{tool} if it needs more time")]
    TimedOut { tool: String, seconds: f64 },
    #[error("{0}")]
    Failed(String),
    #[error("the picture service at {url}: {detail}")]
    Images { url: String, detail: String },
}

impl ToolError {
    /// Bad arguments for `tool`, saying what was wrong.
    pub fn arguments(tool: &str, detail: impl Into<String>) -> ToolError {
        ToolError::Arguments {
            tool: tool.to_string(),
            detail: detail.into(),
        }
    }
}

/// One tool the model can call.
pub trait Tool: Send + Sync {
    /// The name the model calls it by.
    fn name(&self) -> &str;
    /// What it does, for the model.
    fn description(&self) -> &str;
    /// The JSON schema of its arguments (an object schema).
    fn parameters(&self) -> serde_json::Value;
    /// How long a call may take before it is given up (`tools.limits` overrides).
    fn limit(&self) -> Duration {
        Duration::from_secs(5)
    }
    /// Runs the tool: the text the model reads as its result.
    fn call(&self, args: serde_json::Value) -> Result<String, ToolError>;
}

/// Tool settings (`[tools]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolsConfig {
    /// Let the language model call tools (the clock, timers, memory, the camera, pictures) in
    /// `seesay chat`. Never with the candle engine: its small models cannot call them.
    pub enabled: bool,
    /// Tools in live conversations too (`seesay run`, and conversations served over
    /// WebSocket). Everywhere the tools are described only with questions whose words point at
    /// one (`tools::route`): the descriptions add about 700 tokens to the prompt, about 8 s of
    /// prefill on 2 cores, which with every prompt made a question asked in the first seconds
    /// of a run wait behind it (tests/echo.rs) and four served conversations starting at once
    /// wait 40 s (tests/load.rs); and with tools described, the 1.5B model called one for
    /// questions that need none ("Who wrote Romeo and Juliet?" became a note).
    pub live: bool,
    /// The system prompt of questions asked with the tools described (in place of
    /// `llm.system_prompt`, the voice prompt, whose "no code" kept the 1.5B model from calling
    /// them: `seesay bench --stage tools` had it call the right tool for 9 of 24 requests with
    /// the voice prompt, 21 of 24 with this one). After a tool's result the model is asked to
    /// answer in plain spoken words.
    pub system_prompt: String,
    /// Most tool calls the model may make for one answer before it must answer in words.
    pub max_rounds: usize,
    /// Seconds a tool may take, by tool name (e.g. `make_picture = 90`); tools not named keep
    /// their own limit.
    pub limits: BTreeMap<String, f64>,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        ToolsConfig {
            enabled: true,
            live: true,
            system_prompt: "You are a helpful assistant.".into(),
            max_rounds: 3,
            limits: BTreeMap::new(),
        }
    }
}

impl ToolsConfig {
    /// The settings as they apply to a model of `llm`'s: none with the candle engine, whose
    /// models (SmolLM2-135M and the like) answer a tool list with prose about functions.
    pub fn for_model(&self, llm: &crate::stages::llm::LlmConfig) -> ToolsConfig {
        let mut c = self.clone();
        c.enabled &= !(llm.backend == "local" && llm.engine == "candle");
        c
    }

    /// The settings for a live conversation: tools only when `live` is on too.
    pub fn for_live(&self, llm: &crate::stages::llm::LlmConfig) -> ToolsConfig {
        let mut c = self.for_model(llm);
        c.enabled &= self.live;
        c
    }
}

/// A string argument, trimmed; `None` when absent or empty.
pub(crate) fn text_arg<'a>(args: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    args.get(key)
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// A JSON object schema with these string properties (name, description), the first `required`
/// of them required.
pub(crate) fn string_schema(props: &[(&str, &str)], required: usize) -> serde_json::Value {
    let properties: serde_json::Map<String, serde_json::Value> = props
        .iter()
        .map(|(k, d)| {
            (
                k.to_string(),
                serde_json::json!({"type": "string", "description": d}),
            )
        })
        .collect();
    let required: Vec<&str> = props.iter().take(required).map(|(k, _)| *k).collect();
    serde_json::json!({"type": "object", "properties": properties, "required": required})
}
