//! The answer loop: the conversation's messages in; the model's answer out, streamed as it is
//! written, with the tools it called run in between. A call is never passed on as text: the
//! start of each generation is held back until it is clear it is no call (`parse::Gate`).

use crate::stages::llm::{ChatModel, Finish, LlmError, Message, Role};
use crate::stages::Cancel;

use super::parse::{parse_calls, Gate};
use super::registry::{CallRecord, Registry};

/// An answer and the tool calls made for it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The words passed on (what was said), trimmed.
    pub text: String,
    pub finish: Finish,
    pub calls: Vec<CallRecord>,
}

/// Told the model after the tools' results.
const AFTER_RESULTS: &str = "Answer the user's question with this result, in plain spoken words.";

/// Said when the model is still calling tools after `tools.max_rounds` rounds.
const TOO_MANY: &str = "Sorry, I could not finish that with my tools.";

/// Answers `messages` with `model`, running the tools of `registry` the model calls (at most
/// `registry.max_rounds()` rounds) and generating again with their results, until it answers
/// in words. `on_text` gets the answer's words as they come; calls are never passed to it.
/// The tools must already be described in the system prompt (`Registry::system_prompt`).
pub fn answer(
    model: &mut dyn ChatModel,
    messages: &[Message],
    registry: &Registry,
    cancel: &Cancel,
    on_text: &mut dyn FnMut(&str),
) -> Result<Answer, LlmError> {
    if registry.is_empty() {
        let (text, finish) = model.generate(messages, cancel, on_text)?;
        return Ok(Answer {
            text,
            finish,
            calls: Vec::new(),
        });
    }
    let mut msgs = messages.to_vec();
    let mut calls = Vec::new();
    let mut said = String::new();
    for round in 0..=registry.max_rounds() {
        let mut gate = Gate::default();
        let (text, finish) = model.generate(&msgs, cancel, &mut |c| gate.push(c, on_text))?;
        let found = parse_calls(&text);
        if finish == Finish::Cancelled || found.is_empty() {
            if finish != Finish::Cancelled {
                gate.flush(on_text);
            }
            said.push_str(gate.said());
            return Ok(done(said, finish, calls));
        }
        said.push_str(gate.said());
        if round == registry.max_rounds() {
            on_text(TOO_MANY);
            said.push_str(TOO_MANY);
            return Ok(done(said, Finish::Stop, calls));
        }
        let mut asked = Vec::new();
        let mut results = Vec::new();
        for call in found {
            if cancel.is_cancelled() {
                return Ok(done(said, Finish::Cancelled, calls));
            }
            let record = match unasked(&call.name, messages) {
                Some(refusal) => refused(&call.name, call.arguments.clone(), refusal),
                None => registry.call(&call.name, call.arguments.clone()),
            };
            asked.push(call.to_qwen());
            results.push(record.result.clone());
            calls.push(record);
        }
        msgs.push(Message::new(Role::Assistant, asked.join("\n")));
        msgs.push(Message::new(Role::User, results_message(&results)));
    }
    unreachable!("the last round returns")
}

/// The message that gives the model the results of its calls. Qwen's template writes a tool's
/// result as a user message in these tags; without the line after them, Qwen2.5-Coder-1.5B
/// called the same tool again instead of answering.
pub fn results_message(results: &[String]) -> String {
    let tagged: Vec<String> = results
        .iter()
        .map(|r| format!("<tool_response>\n{r}\n</tool_response>"))
        .collect();
    format!("{}\n{AFTER_RESULTS}", tagged.join("\n"))
}

/// Tools that change what is kept, and the words of which one must be in the user's own
/// message for a call to run: a small model reaches for `remember` when asked "Did you see a
/// cat?", which would fill the memory with its own guesses.
const ONLY_WHEN_ASKED: [(&str, &[&str]); 2] = [
    (
        "remember",
        &[
            "remember", "note", "keep", "save", "write", "forget", "remind", "memor",
        ],
    ),
    ("forget", &["forget", "delete", "erase", "remove", "clear"]),
];

/// Why a call to `name` is refused, when the user's last message does not ask for it. The
/// words recalled from memory that may precede the question (after a blank line) don't count.
fn unasked(name: &str, messages: &[Message]) -> Option<String> {
    let (_, words) = ONLY_WHEN_ASKED.iter().find(|(n, _)| *n == name)?;
    let asked = messages.iter().rev().find(|m| m.role == Role::User)?;
    let own = asked
        .content
        .rsplit("\n\n")
        .next()
        .unwrap_or_default()
        .to_lowercase();
    match words.iter().any(|w| own.contains(w)) {
        true => None,
        false => Some(format!(
            "Not done: the user did not ask you to {name} anything. Answer their question."
        )),
    }
}

fn refused(name: &str, arguments: serde_json::Value, why: String) -> CallRecord {
    tracing::info!(tool = name, %arguments, "tool call refused: not asked for");
    CallRecord {
        name: name.to_string(),
        arguments,
        result: why,
        ms: 0.0,
        ok: false,
        ended: std::time::Instant::now(),
    }
}

fn done(said: String, finish: Finish, calls: Vec<CallRecord>) -> Answer {
    Answer {
        text: said.trim().to_string(),
        finish,
        calls,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::stages::llm::{LlmConfig, WordChunker};
    use crate::tools::fakes::Fake;
    use crate::tools::ToolsConfig;

    /// Replies with the scripted texts in turn, streamed word by word; keeps what it was asked.
    struct Scripted {
        replies: Vec<&'static str>,
        seen: Vec<Vec<Message>>,
    }

    impl ChatModel for Scripted {
        fn generate(
            &mut self,
            messages: &[Message],
            cancel: &Cancel,
            on_text: &mut dyn FnMut(&str),
        ) -> Result<(String, Finish), LlmError> {
            self.seen.push(messages.to_vec());
            let text = self.replies.remove(0);
            let mut chunker = WordChunker::default();
            for end in (1..=text.len()).filter(|i| text.is_char_boundary(*i)) {
                if let Some(c) = chunker.push(&text[..end]) {
                    on_text(c);
                }
            }
            if let Some(c) = chunker.finish(text) {
                on_text(c);
            }
            let finish = match cancel.is_cancelled() {
                true => Finish::Cancelled,
                false => Finish::Stop,
            };
            Ok((text.to_string(), finish))
        }
        fn count_tokens(&mut self, _: &[Message]) -> Result<usize, LlmError> {
            Ok(0)
        }
        fn describe(&self) -> String {
            "scripted".into()
        }
        fn set_config(&mut self, _: &LlmConfig) {}
    }

    fn tools() -> Registry {
        let mut r = Registry::new(&ToolsConfig::default());
        r.add(Arc::new(Fake {
            name: "quick",
            sleep: Duration::ZERO,
            fail: false,
        }));
        r.add(Arc::new(Fake {
            name: "broken",
            sleep: Duration::ZERO,
            fail: true,
        }));
        r
    }

    fn run(replies: Vec<&'static str>) -> (Answer, String, Scripted) {
        let mut model = Scripted {
            replies,
            seen: Vec::new(),
        };
        let mut heard = String::new();
        let q = [Message::new(Role::User, "Go.")];
        let a = answer(&mut model, &q, &tools(), &Cancel::new(), &mut |t| {
            heard.push_str(t)
        })
        .unwrap();
        (a, heard, model)
    }

    #[test]
    fn a_call_is_run_and_its_result_answered_without_speaking_the_call() {
        let (a, heard, model) = run(vec![
            "```json\n{\"name\": \"quick\", \"arguments\": {\"n\": 7}}\n```",
            "The answer is seven.",
        ]);
        assert_eq!(heard, "The answer is seven.");
        assert_eq!(a.text, "The answer is seven.");
        assert_eq!(a.calls.len(), 1);
        assert!(a.calls[0].ok && a.calls[0].name == "quick");
        // The second generation saw the call and its result.
        let second = &model.seen[1];
        assert_eq!(second.len(), 3);
        assert_eq!(second[1].role, Role::Assistant);
        assert!(second[1].content.contains("<tool_call>"));
        assert_eq!(
            second[2].content,
            format!("<tool_response>\necho {{\"n\":7}}\n</tool_response>\n{AFTER_RESULTS}")
        );
    }

    #[test]
    fn remember_runs_only_when_the_user_asked_to_remember() {
        let asked = |q: &str| unasked("remember", &[Message::new(Role::User, q)]);
        assert!(asked("Did you see a cat?").is_some());
        assert!(asked("Please remember that my keys are in the bowl.").is_none());
        assert!(asked("Note that the bins go out on Tuesday").is_none());
        // What memory recalled before the question is not the user's asking.
        let recalled = "What you remember that may be relevant:\n- a cat\n\nDid you see a cat?";
        assert!(asked(recalled).is_some());
        let forget = |q: &str| unasked("forget", &[Message::new(Role::User, q)]);
        assert!(forget("Where are my keys?").is_some());
        assert!(forget("Delete the note about my keys.").is_none());
        assert!(unasked("get_time", &[Message::new(Role::User, "Hi")]).is_none());
    }

    #[test]
    fn a_failing_tool_gives_the_model_an_error_to_say() {
        let (a, heard, model) = run(vec![
            "<tool_call>{\"name\": \"broken\", \"arguments\": {}}</tool_call>",
            "Sorry, that did not work.",
        ]);
        assert_eq!(heard, "Sorry, that did not work.");
        assert!(!a.calls[0].ok);
        assert!(model.seen[1][2].content.contains("Error: the fake broke"));
    }

    #[test]
    fn plain_answers_pass_and_endless_calls_stop() {
        let (a, heard, _) = run(vec!["Paris is the capital."]);
        assert_eq!(
            (a.text.as_str(), heard.as_str()),
            ("Paris is the capital.", "Paris is the capital.")
        );
        assert!(a.calls.is_empty());
        let call = "{\"name\": \"quick\", \"arguments\": {}}";
        let (a, heard, model) = run(vec![call, call, call, call]);
        assert_eq!(model.seen.len(), 4);
        assert_eq!(a.calls.len(), 3);
        assert_eq!(heard, TOO_MANY);
    }
}
