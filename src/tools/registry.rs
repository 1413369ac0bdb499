//! The registry of tools: a call's name and arguments in, a `CallRecord` (the result text for
//! the model, how long it took, whether it worked) out. Each call runs on a worker thread with
//! the tool's time limit; one that fails or overruns becomes an error text for the model.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use super::tool::{Tool, ToolError, ToolsConfig};

/// One tool call of a turn, for the per-turn figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    pub name: String,
    pub arguments: Value,
    /// What the model was told: the tool's text, or the error.
    pub result: String,
    pub ms: f64,
    pub ok: bool,
    /// When the call ended (for figures relative to a run's start).
    #[serde(skip)]
    pub ended: Instant,
}

/// The tools the model may call, with their time limits.
#[derive(Clone, Default)]
pub struct Registry {
    tools: Vec<Arc<dyn Tool>>,
    limits: BTreeMap<String, f64>,
    max_rounds: usize,
}

impl Registry {
    /// An empty registry with `cfg`'s limits; `add` the tools.
    pub fn new(cfg: &ToolsConfig) -> Registry {
        Registry {
            tools: Vec::new(),
            limits: cfg.limits.clone(),
            max_rounds: cfg.max_rounds,
        }
    }

    /// Adds a tool (a later one of the same name replaces it).
    pub fn add(&mut self, tool: Arc<dyn Tool>) -> &mut Registry {
        self.tools.retain(|t| t.name() != tool.name());
        self.tools.push(tool);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    pub fn names(&self) -> Vec<&str> {
        self.tools.iter().map(|t| t.name()).collect()
    }

    /// Most rounds of calls for one answer.
    pub fn max_rounds(&self) -> usize {
        self.max_rounds
    }

    fn find(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.iter().find(|t| t.name() == name)
    }

    /// How long `tool` may take.
    pub fn limit_of(&self, tool: &dyn Tool) -> Duration {
        match self.limits.get(tool.name()) {
            Some(s) if s.is_finite() && *s > 0.0 => Duration::from_secs_f64(*s),
            _ => tool.limit(),
        }
    }

    /// Runs one call within its time limit; failures become the error text the model reads.
    pub fn call(&self, name: &str, arguments: Value) -> CallRecord {
        let began = Instant::now();
        let result = match self.find(name) {
            Some(tool) => run_limited(
                tool.clone(),
                self.limit_of(tool.as_ref()),
                arguments.clone(),
            ),
            None => Err(ToolError::Unknown(name.to_string())),
        };
        let ms = began.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(tool = name, %arguments, ok = result.is_ok(), ms, "tool call");
        let (result, ok) = match result {
            Ok(text) => (text, true),
            Err(e) => (format!("Error: {e}"), false),
        };
        CallRecord {
            name: name.to_string(),
            arguments,
            result,
            ms,
            ok,
            ended: Instant::now(),
        }
    }

    /// The tools in OpenAI's `tools` form (`{"type": "function", "function": {...}}`).
    pub fn schemas(&self) -> Vec<Value> {
        self.tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name(),
                    "description": t.description(),
                    "parameters": t.parameters(),
                }})
            })
            .collect()
    }

    /// `base` (the system prompt) with these tools described (`describe`); `base` alone when
    /// there are none.
    pub fn system_prompt(&self, base: &str) -> String {
        describe(base, &self.schemas())
    }
}

/// `base` (the system prompt) with the tools of `schemas` (OpenAI's `tools` form) described
/// exactly as Qwen's chat template does (its JSON spacing included, but one pair of braces
/// around the call: the template's doubled ones are copied by the model); `base` alone when
/// there are none. Said any other way (an added sentence on when to call, compact JSON),
/// Qwen2.5-Coder-1.5B called fewer tools.
pub fn describe(base: &str, schemas: &[Value]) -> String {
    if schemas.is_empty() {
        return base.to_string();
    }
    let mut s = format!(
        "{}\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\
         \n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>",
        base.trim()
    );
    for schema in schemas {
        s.push('\n');
        s.push_str(&spaced_json(schema));
    }
    s.push_str(
        "\n</tools>\n\nFor each function call, return a json object with function name and \
         arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": \
         <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    s
}

/// JSON on one line with a space after each `,` and `:`, as Python's `json.dumps` (and so the
/// chat templates' `tojson`) writes it.
fn spaced_json(v: &Value) -> String {
    struct Spaced;
    impl serde_json::ser::Formatter for Spaced {
        fn begin_array_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            if first {
                Ok(())
            } else {
                w.write_all(b", ")
            }
        }
        fn begin_object_key<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            self.begin_array_value(w, first)
        }
        fn begin_object_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
        ) -> std::io::Result<()> {
            w.write_all(b": ")
        }
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Spaced);
    match v.serialize(&mut ser) {
        Ok(()) => String::from_utf8(out).unwrap_or_else(|_| v.to_string()),
        Err(_) => v.to_string(),
    }
}

/// Runs `tool` on a worker thread, giving up after `limit` (the thread is left to finish on
/// its own; its late result is dropped).
fn run_limited(tool: Arc<dyn Tool>, limit: Duration, args: Value) -> Result<String, ToolError> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let name = tool.name().to_string();
    std::thread::Builder::new()
        .name(format!("tool {name}"))
        .spawn(move || {
            let _ = tx.send(tool.call(args));
        })
        .map_err(|e| ToolError::Failed(format!("cannot start a thread for {name}: {e}")))?;
    match rx.recv_timeout(limit) {
        Ok(result) => result,
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(ToolError::TimedOut {
            tool: name,
            seconds: limit.as_secs_f64(),
        }),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(ToolError::Failed(format!(
            "{name} stopped without a result (it panicked)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::fakes::Fake;

    fn registry(limits: &[(&str, f64)]) -> Registry {
        let cfg = ToolsConfig {
            limits: limits.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..ToolsConfig::default()
        };
        let mut r = Registry::new(&cfg);
        for (name, ms, fail) in [
            ("quick", 0, false),
            ("slow", 3000, false),
            ("broken", 0, true),
        ] {
            r.add(Arc::new(Fake {
                name,
                sleep: Duration::from_millis(ms),
                fail,
            }));
        }
        r
    }

    #[test]
    fn calls_give_results_and_failures_give_error_texts() {
        let r = registry(&[]);
        let ok = r.call("quick", json!({"a": 1}));
        assert!(ok.ok);
        assert_eq!(ok.result, "echo {\"a\":1}");
        let broken = r.call("broken", json!({}));
        assert!(!broken.ok);
        assert_eq!(broken.result, "Error: the fake broke");
        let unknown = r.call("teleport", json!({}));
        assert!(!unknown.ok && unknown.result.contains("no tool named 'teleport'"));
    }

    #[test]
    fn a_slow_tool_is_given_up_at_its_limit() {
        let r = registry(&[]);
        let t = Instant::now();
        let slow = r.call("slow", json!({}));
        assert!(
            t.elapsed() < Duration::from_millis(2500),
            "the call waited for the tool"
        );
        assert!(!slow.ok);
        assert!(slow.result.contains("longer than 0.5 s"), "{}", slow.result);
        // A configured limit replaces the tool's own.
        let r = registry(&[("quick", 0.001), ("slow", 0.2)]);
        assert!(r.call("slow", json!({})).result.contains("0.2 s"));
    }

    #[test]
    fn the_prompt_describes_every_tool_in_qwens_form() {
        let r = registry(&[]);
        let p = r.system_prompt("Be brief.");
        assert!(p.starts_with("Be brief.\n\n"));
        for name in ["quick", "slow", "broken"] {
            assert!(p.contains(&format!("\"name\": \"{name}\"")), "{p}");
        }
        assert!(p.contains("\n{\"function\": {\"description\": \"A test tool.\", \"name\": \"quick\", \"parameters\": {\"properties\": {}, \"type\": \"object\"}}, \"type\": \"function\"}\n"), "{p}");
        assert!(p.contains("<tools>") && p.contains("<tool_call>"));
        assert_eq!(
            Registry::new(&ToolsConfig::default()).system_prompt("Hi."),
            "Hi."
        );
    }
}
