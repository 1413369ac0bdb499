//! Function calling through `/v1/chat/completions`: the request's `tools` are described to the
//! model as its chat template describes them (Qwen's `<tools>` block, `tools::registry::describe`),
//! the conversation's earlier calls and `tool` results are written as the template writes them,
//! and calls in the answer come back as `tool_calls` with `finish_reason: "tool_calls"`. The
//! client runs its tools; seesay only says which to call, with what.

use serde_json::{json, Value};

use super::state::ApiError;
use crate::tools::{parse_calls, ParsedCall};

/// The system prompt when a request with tools has none (Qwen's template's default, less its
/// name).
pub const DEFAULT_SYSTEM: &str = "You are a helpful assistant.";

/// The tools a request offers, and whether (and which) the model must call.
#[derive(Debug, Default)]
pub struct Offered {
    pub schemas: Vec<Value>,
    /// `tool_choice` "required", or the name of the one function to call.
    pub must: Option<String>,
}

impl Offered {
    /// From the request's `tools` and `tool_choice` (`"none"`: no tools offered).
    pub fn from_request(
        tools: Option<&Value>,
        choice: Option<&Value>,
    ) -> Result<Offered, ApiError> {
        let Some(tools) = tools.filter(|t| !t.is_null()) else {
            return Ok(Offered::default());
        };
        let list = tools
            .as_array()
            .ok_or_else(|| ApiError::bad("tools must be a list"))?;
        for (i, t) in list.iter().enumerate() {
            let name = t["function"]["name"].as_str().unwrap_or_default();
            if t["type"] != "function" || name.is_empty() {
                return Err(ApiError::bad(format!(
                    "tools[{i}]: expected {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                )));
            }
        }
        let must = match choice {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s == "auto" => None,
            Some(Value::String(s)) if s == "none" => return Ok(Offered::default()),
            Some(Value::String(s)) if s == "required" => Some(String::new()),
            Some(v) => match v["function"]["name"].as_str() {
                Some(n) if list.iter().any(|t| t["function"]["name"] == n) => Some(n.to_string()),
                _ => return Err(ApiError::bad(
                    "tool_choice must be \"auto\", \"none\", \"required\" or name one of the tools",
                )),
            },
        };
        Ok(Offered {
            schemas: list.clone(),
            must,
        })
    }

    pub fn any(&self) -> bool {
        !self.schemas.is_empty()
    }

    /// The system prompt with the tools described (and, with `tool_choice`, what to call).
    pub fn system_prompt(&self, base: &str) -> String {
        let mut s = crate::tools::registry::describe(base, &self.schemas);
        match self.must.as_deref() {
            Some("") => s.push_str("\n\nCall one of these functions."),
            Some(name) => s.push_str(&format!("\n\nCall the function {name}.")),
            None => {}
        }
        s
    }

    /// The calls in an answer of functions that were offered (a small model also calls
    /// functions it made up: "What's 2+2?" became a call of `add`).
    pub fn calls_in(&self, answer: &str) -> Vec<ParsedCall> {
        let offered = |c: &ParsedCall| self.schemas.iter().any(|t| t["function"]["name"] == c.name);
        parse_calls(answer).into_iter().filter(offered).collect()
    }
}

/// An assistant message's `tool_calls` written as the model writes them, after its text.
pub fn assistant_text(text: String, message: &Value) -> Result<String, ApiError> {
    let Some(calls) = message["tool_calls"].as_array() else {
        return Ok(text);
    };
    let mut parts: Vec<String> = vec![text].into_iter().filter(|t| !t.is_empty()).collect();
    for c in calls {
        let f = &c["function"];
        let name = f["name"]
            .as_str()
            .ok_or_else(|| ApiError::bad("a tool call without a function name"))?;
        // OpenAI sends the arguments as a JSON string.
        let arguments = match &f["arguments"] {
            Value::String(s) => serde_json::from_str(s)
                .map_err(|e| ApiError::bad(format!("tool call {name}: arguments: {e}")))?,
            v => v.clone(),
        };
        parts.push(
            ParsedCall {
                name: name.to_string(),
                arguments,
            }
            .to_qwen(),
        );
    }
    Ok(parts.join("\n"))
}

/// The answer's calls in OpenAI's `tool_calls` form (`id` unique within the response).
pub fn tool_calls_json(id: &str, calls: &[ParsedCall]) -> Value {
    Value::Array(
        calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({
                    "index": i,
                    "id": format!("call_{}_{i}", id.trim_start_matches("chatcmpl-")),
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments.to_string()},
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(tools: Value, choice: Option<Value>) -> Result<Offered, ApiError> {
        Offered::from_request(Some(&tools), choice.as_ref())
    }

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
    }

    #[test]
    fn tools_are_described_and_calls_found() {
        let o = offered(weather(), None).unwrap();
        let prompt = o.system_prompt("Be brief.");
        assert!(prompt.starts_with("Be brief.\n\n# Tools"), "{prompt}");
        assert!(prompt.contains("\"name\": \"get_weather\""), "{prompt}");
        let calls = o.calls_in(
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        );
        assert_eq!(calls.len(), 1);
        let j = tool_calls_json("chatcmpl-ab", &calls);
        assert_eq!(j[0]["function"]["name"], "get_weather");
        assert_eq!(j[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(j[0]["id"], "call_ab_0");
    }

    #[test]
    fn none_offers_nothing_and_bad_tools_are_refused() {
        assert!(!offered(weather(), Some(json!("none"))).unwrap().any());
        assert!(offered(json!({"a": 1}), None).is_err());
        assert!(offered(json!([{"type": "function"}]), None).is_err());
        assert!(offered(weather(), Some(json!({"function": {"name": "other"}}))).is_err());
        let o = offered(
            weather(),
            Some(json!({"type": "function", "function": {"name": "get_weather"}})),
        );
        assert!(o
            .unwrap()
            .system_prompt("")
            .ends_with("Call the function get_weather."));
    }

    #[test]
    fn earlier_calls_are_written_as_the_model_writes_them() {
        let m = json!({"role": "assistant", "content": null, "tool_calls": [{"id": "x", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]});
        let text = assistant_text(String::new(), &m).unwrap();
        assert_eq!(parse_calls(&text)[0].arguments["city"], "Paris");
        let bad = json!({"tool_calls": [{"function": {"name": "f", "arguments": "{"}}]});
        assert!(assistant_text(String::new(), &bad).is_err());
    }
}
