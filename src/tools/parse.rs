//! The model's tool calls, read from its text in every form small models write them: Qwen's
//! `<tool_call>{...}</tool_call>`, fenced JSON (```` ```json {...} ``` ````), doubled braces
//! (`{{"name": ...}}`) and bare JSON; text in, the calls (name and arguments) out. Also the
//! gate that holds back the start of an answer until it is clear it is not a call, so a call
//! is never spoken aloud.

use serde_json::{json, Value};

/// One call the model asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCall {
    pub name: String,
    pub arguments: Value,
}

impl ParsedCall {
    /// The call as Qwen's template writes it in an assistant message.
    pub fn to_qwen(&self) -> String {
        let call = json!({"name": self.name, "arguments": self.arguments});
        format!("<tool_call>\n{call}\n</tool_call>")
    }
}

/// Every tool call in `text`, in order; none for a plain answer.
pub fn parse_calls(text: &str) -> Vec<ParsedCall> {
    let mut calls = Vec::new();
    let mut i = 0;
    while let Some(off) = text[i..].find('{') {
        let start = i + off;
        match balanced(&text[start..]).and_then(|obj| call_in(obj).map(|c| (c, obj.len()))) {
            Some((call, len)) => {
                calls.push(call);
                i = start + len;
            }
            // Not a call from here (prose, doubled braces): try the next brace.
            None => i = start + 1,
        }
    }
    calls
}

/// The call that a JSON object `obj` (text) is, if it is one.
fn call_in(obj: &str) -> Option<ParsedCall> {
    let v: Value = serde_json::from_str(obj).ok()?;
    call_of(&v)
}

fn call_of(v: &Value) -> Option<ParsedCall> {
    // OpenAI's shape: {"type": "function", "function": {"name": ..., "arguments": "..."}}.
    if let Some(f) = v.get("function").filter(|f| f.is_object()) {
        return call_of(f);
    }
    let name = ["name", "tool", "tool_name"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))?
        .trim()
        .to_string();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    let raw = ["arguments", "parameters", "args"]
        .iter()
        .find_map(|k| v.get(*k))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let arguments = match raw {
        // Some write the arguments as a JSON string, as OpenAI's API does.
        Value::String(s) => serde_json::from_str(&s).unwrap_or_else(|_| json!({ "text": s })),
        Value::Null => json!({}),
        other => other,
    };
    Some(ParsedCall { name, arguments })
}

/// The balanced `{...}` at the start of `text` (braces inside strings do not count).
fn balanced(text: &str) -> Option<&str> {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_str {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' => depth += 1,
            '}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(&text[..=i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// Where a call starts inside an answer that began as plain words.
const MARKERS: [&str; 4] = ["<tool_call>", "```", "{\"name\"", "{{"];

/// Passes an answer's text on as it streams, except what may be a tool call: an answer that
/// starts like one (`{`, `[`, a code fence, `<tool_call>`) is held back whole until the end, and
/// an answer that turns into one midway is passed on only up to where the call starts.
#[derive(Debug, Default)]
pub struct Gate {
    text: String,
    /// Bytes of `text` passed on.
    sent: usize,
    state: GateState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum GateState {
    #[default]
    Undecided,
    Held,
    Passing,
    /// A call began after plain words: nothing more is passed on.
    Stopped,
}

impl Gate {
    /// Takes the next chunk of the answer; passes on what can be said.
    pub fn push(&mut self, chunk: &str, on_text: &mut dyn FnMut(&str)) {
        self.text.push_str(chunk);
        if self.state == GateState::Undecided {
            self.state = opening(&self.text);
        }
        if self.state != GateState::Passing {
            return;
        }
        let upto = MARKERS
            .iter()
            .filter_map(|m| self.text[self.sent..].find(m).map(|i| self.sent + i))
            .min();
        let end = upto.unwrap_or(self.text.len());
        if end > self.sent {
            on_text(&self.text[self.sent..end]);
            self.sent = end;
        }
        if upto.is_some() {
            self.state = GateState::Stopped;
        }
    }

    /// The answer is over and was no call: passes on what was held back.
    pub fn flush(&mut self, on_text: &mut dyn FnMut(&str)) {
        if matches!(self.state, GateState::Held | GateState::Undecided)
            && self.sent < self.text.len()
        {
            on_text(&self.text[self.sent..]);
            self.sent = self.text.len();
        }
    }

    /// What was passed on so far.
    pub fn said(&self) -> &str {
        &self.text[..self.sent]
    }
}

/// Whether the start of an answer may be a call (held) or is plain words (passing), or
/// (nothing but spaces yet) cannot tell.
fn opening(text: &str) -> GateState {
    let t = text.trim_start();
    let Some(first) = t.chars().next() else {
        return GateState::Undecided;
    };
    match first {
        // Also `<tools>{...}</tools>`, which the model writes after reading the prompt's tags.
        '{' | '[' | '`' | '<' => GateState::Held,
        _ => GateState::Passing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> ParsedCall {
        let calls = parse_calls(text);
        assert_eq!(calls.len(), 1, "{text}: {calls:?}");
        calls.into_iter().next().unwrap()
    }

    #[test]
    fn every_form_the_model_writes_is_read() {
        let want = ParsedCall {
            name: "set_timer".into(),
            arguments: json!({"seconds": 300, "label": "tea"}),
        };
        for text in [
            "<tool_call>\n{\"name\": \"set_timer\", \"arguments\": {\"seconds\": 300, \"label\": \"tea\"}}\n</tool_call>",
            "```json\n{\"name\": \"set_timer\", \"arguments\": {\"seconds\": 300, \"label\": \"tea\"}}\n```",
            "```\n{\"name\": \"set_timer\", \"arguments\": {\"seconds\": 300, \"label\": \"tea\"}}\n```",
            "{{\"name\": \"set_timer\", \"arguments\": {\"seconds\": 300, \"label\": \"tea\"}}}",
            "{\"name\": \"set_timer\", \"arguments\": {\"seconds\": 300, \"label\": \"tea\"}}",
            "Sure. {\"name\": \"set_timer\", \"parameters\": {\"seconds\": 300, \"label\": \"tea\"}}",
            "{\"type\": \"function\", \"function\": {\"name\": \"set_timer\", \"arguments\": \"{\\\"seconds\\\": 300, \\\"label\\\": \\\"tea\\\"}\"}}",
            // A call cut off before its closing tag still counts.
            "<tool_call>\n{\"name\": \"set_timer\", \"arguments\": {\"seconds\": 300, \"label\": \"tea\"}}",
        ] {
            assert_eq!(one(text), want, "{text}");
        }
        assert_eq!(one("{\"name\": \"get_time\"}").arguments, json!({}));
    }

    #[test]
    fn plain_answers_and_odd_json_are_no_calls() {
        for text in [
            "It is sunny today.",
            "Use braces like { and } in code.",
            "{\"answer\": 42}",
            "{\"name\": \"two words\", \"arguments\": {}}",
            "{\"name\": \"get_time\", \"arguments\": {",
            "",
        ] {
            assert!(parse_calls(text).is_empty(), "{text}");
        }
    }

    #[test]
    fn several_calls_are_read_in_order_with_braces_in_strings() {
        let text = "<tool_call>{\"name\": \"remember\", \"arguments\": {\"text\": \"keys {in} the drawer\"}}</tool_call>\n<tool_call>{\"name\": \"list_timers\", \"arguments\": {}}</tool_call>";
        let calls = parse_calls(text);
        let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["remember", "list_timers"]);
        assert_eq!(calls[0].arguments["text"], "keys {in} the drawer");
        // What the assistant message records is read back as the same call.
        assert_eq!(one(&calls[0].to_qwen()), calls[0]);
    }

    fn gate_run(chunks: &[&str]) -> (String, String) {
        let mut gate = Gate::default();
        let mut out = String::new();
        for c in chunks {
            gate.push(c, &mut |t| out.push_str(t));
        }
        let streamed = out.clone();
        gate.flush(&mut |t| out.push_str(t));
        (streamed, out)
    }

    #[test]
    fn a_call_is_never_passed_on_and_words_are() {
        // Plain words stream through as they come.
        let (streamed, all) = gate_run(&["It is ", "ten past ", "two."]);
        assert_eq!(streamed, "It is ten past two.");
        assert_eq!(all, streamed);
        // Calls in each form are held back.
        for chunks in [
            &["```json\n", "{\"name\": ", "\"get_time\"}\n```"][..],
            &["{{\"name\": ", "\"get_time\"}}"],
            &["<tool", "_call>\n", "{\"name\": \"get_time\"}"],
            &[" \n", "{\"name\": \"get_time\"}"],
        ] {
            let (streamed, _) = gate_run(chunks);
            assert_eq!(streamed, "", "{chunks:?}");
        }
        // Words before a call are said; the call is not.
        let (streamed, all) = gate_run(&[
            "Let me check. ",
            "<tool_call>\n",
            "{\"name\": \"get_time\"}",
        ]);
        assert_eq!(streamed, "Let me check. ");
        assert_eq!(all, streamed);
        // Held text that was no call after all is said at the end.
        let (streamed, all) = gate_run(&["`ls` ", "lists files."]);
        assert_eq!((streamed.as_str(), all.as_str()), ("", "`ls` lists files."));
        // Tags of another name are held too.
        let (streamed, _) = gate_run(&["<tools>\n", "{\"name\": \"get_time\"}\n</tools>"]);
        assert_eq!(streamed, "");
    }
}
