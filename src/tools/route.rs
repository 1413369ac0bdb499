//! Which questions of a live conversation are asked with the tools described. The descriptions
//! add about 700 tokens to the prompt (about 8 s of prefill on 2 cores), so in a conversation
//! they go only with a question whose words point at a tool (the clock, a timer, the notebook,
//! the camera's text, a picture); any other question is read against the prompt prefilled while
//! nobody spoke. A question sent with the tools needlessly costs time, never a wrong answer.

use super::registry::Registry;
use super::tool::ToolsConfig;

/// The tools, and the choice of them per question: a question that may need one is asked with
/// them described (in the system prompt `system_prompt` gives); any other, without.
pub struct Routed {
    pub tools: Registry,
    none: Registry,
    system_prompt: String,
}

impl Routed {
    pub fn new(tools: Registry, cfg: &ToolsConfig) -> Routed {
        Routed {
            tools,
            none: Registry::new(cfg),
            system_prompt: cfg.system_prompt.clone(),
        }
    }

    /// Whether `question` is asked with the tools described.
    pub fn with_tools(&self, question: &str) -> bool {
        !self.tools.is_empty() && may_need_tools(question)
    }

    /// The tools the answer to `question` may call (none unless `with_tools`).
    pub fn for_question(&self, question: &str) -> &Registry {
        match self.with_tools(question) {
            true => &self.tools,
            false => &self.none,
        }
    }

    /// The system prompt of questions asked with the tools (`None`: there are none).
    pub fn system_prompt(&self) -> Option<String> {
        (!self.tools.is_empty()).then(|| self.tools.system_prompt(&self.system_prompt))
    }
}

/// Words that point at a tool: the clock, the notebook, the camera.
const WORDS: [&str; 17] = [
    "time",
    "date",
    "today",
    "tonight",
    "tomorrow",
    "yesterday",
    "morning",
    "afternoon",
    "evening",
    "clock",
    "o'clock",
    "cancel",
    "mind",
    "told",
    "sign",
    "written",
    "front",
];

/// Starts of words that point at a tool: timers, the notebook, the camera, pictures. ("times",
/// as in "seven times eight", is not "time".)
const STARTS: [&str; 17] = [
    "timer", "alarm", "remind", "minute", "second", "hour", "remember", "forget", "recall",
    "memor", "note", "look", "read", "describ", "picture", "draw", "paint",
];

/// Calendar words point at the clock only where the question asks which one ("what day is it",
/// "next week"): "the sky on a clear day" and "days in a week" are not about the calendar, and
/// were asked with the tools for nothing (seconds of prefill on two cores).
const CALENDAR: [&str; 4] = ["day", "week", "month", "year"];
const WHICH: [&str; 6] = ["what", "which", "this", "next", "last", "that"];

/// Whether `question` may need a tool.
pub fn may_need_tools(question: &str) -> bool {
    let lower = question.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_end_matches("'s"))
        .filter(|w| !w.is_empty())
        .collect();
    words
        .iter()
        .enumerate()
        .any(|(i, w)| match CALENDAR.contains(w) {
            true => i > 0 && WHICH.contains(&words[i - 1]),
            false => WORDS.contains(w) || STARTS.iter().any(|s| w.starts_with(s)),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_for_tools_are_told_from_the_rest() {
        for q in [
            "What time is it?",
            "What's today's date?",
            "Set a timer for five seconds.",
            "Wake me in 10 minutes.",
            "Remember that the key is under the pot.",
            "What does the sign say?",
            "Make a picture of a white cat.",
            "Cancel my timer.",
            "What day is it?",
            "Which day of the week is it?",
            "What's on next week?",
        ] {
            assert!(may_need_tools(q), "{q}");
        }
        for q in [
            "What is the capital of France?",
            "Tell me about the history of France.",
            "What do bees make?",
            "Did you see a cat?",
            "How are you?",
            "What is seven times eight?",
            "Who wrote Romeo and Juliet?",
            "What color is the sky on a clear day?",
            "How many days are in a week?",
            "How many months have 31 days?",
        ] {
            assert!(!may_need_tools(q), "{q}");
        }
    }
}
