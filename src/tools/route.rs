//! Which questions of a live conversation are asked with the tools described. The descriptions
//! add about 700 tokens to the prompt (about 8 s of prefill on 2 cores), so in a conversation
//! they go only with a question whose words point at a tool (the clock, a timer, the notebook,
//! the camera's text, a picture); any other question is read against the prompt prefilled while
//! nobody spoke. A question sent with the tools needlessly costs time, never a wrong answer.

/// Starts of words that point at a tool.
const CUES: [&str; 31] = [
    // the clock
    "time",
    "clock",
    "date",
    "day",
    "today",
    "tomorrow",
    "yesterday",
    "week",
    "month",
    "year",
    "o'clock", // timers
    "timer",
    "alarm",
    "remind",
    "minute",
    "second",
    "hour",
    "cancel", // the notebook
    "remember",
    "note",
    "forget",
    "recall",
    "memor",
    "wrote", // the camera's text, a look
    "read",
    "written",
    "look",
    "sign", // pictures
    "picture",
    "draw",
    "paint",
];

/// Whether `question` may need a tool.
pub fn may_need_tools(question: &str) -> bool {
    question
        .to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .any(|w| CUES.iter().any(|cue| w.starts_with(cue)))
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
        ] {
            assert!(may_need_tools(q), "{q}");
        }
        for q in [
            "What is the capital of France?",
            "Tell me about the history of France.",
            "What do bees make?",
            "Did you see a cat?",
            "How are you?",
        ] {
            assert!(!may_need_tools(q), "{q}");
        }
    }
}
