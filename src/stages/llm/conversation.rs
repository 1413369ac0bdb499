//! The conversation's memory: the system prompt (with what the camera shows), the turns so far
//! and the next question in; the messages the model sees out, trimmed to the token budget (the
//! oldest turns go first; a question that cannot fit is refused, never cut).

use std::sync::Arc;

use super::chat::{ChatModel, LlmConfig, LlmError, Message, Role};

/// How a caption is put before the user's words for the language model.
pub fn context_line(caption: &str) -> String {
    format!("The camera currently shows: {}", caption.trim())
}

/// How recalled memories are told to the model: one per line, or that there are none (so it
/// says it has not seen or heard of something rather than inventing it).
pub fn recalled_text(lines: &[String]) -> String {
    let mut text = String::from("Your memory (what you saw and heard earlier):");
    for l in lines {
        text.push_str("\n- ");
        text.push_str(l.trim());
    }
    text
}

/// Told with the system prompt whenever memory is in use (the same words every time, so the
/// prompt's prefix stays cached): what memory recalls comes with the question, and when nothing
/// comes the model has not seen or heard of the thing. A note with every question that nothing
/// was recalled made the small default model answer "What time is it?" with a made-up time
/// instead of asking the clock.
pub const MEMORY_RULE: &str = "When something you remember is relevant, it comes before the \
     question, marked \"Your memory\"; answer from it. When no memory comes with a question \
     about what you saw or heard, you did not see or hear it: say so.";

/// A conversation with memory: the system prompt stays, the oldest turns go first when the
/// token budget is exceeded.
pub struct Conversation {
    system: Option<Message>,
    /// The system prompt with the tools described (`set_tools`), used while `with_tools`.
    tools_system: Option<Message>,
    with_tools: bool,
    turns: Vec<Message>,
    /// The newest camera caption, told to the model with the system prompt (small models use it
    /// far better there than inside the question) and never kept in memory.
    scene: Option<String>,
    /// The newest camera frame itself (a data URI), for a model that takes images: it comes
    /// with the next question (never kept in memory).
    picture: Option<Arc<str>>,
    /// What memory recalled for the next question (`Some(empty)`: nothing relevant), told
    /// before the question in its message; `None` when no memory is in use.
    recalled: Option<Vec<String>>,
    budget: usize,
    reserve: usize,
}

impl Conversation {
    pub fn new(cfg: &LlmConfig) -> Conversation {
        let system = (!cfg.system_prompt.trim().is_empty())
            .then(|| Message::new(Role::System, cfg.system_prompt.trim()));
        Conversation {
            system,
            tools_system: None,
            with_tools: false,
            turns: Vec::new(),
            scene: None,
            picture: None,
            recalled: None,
            budget: cfg.context_tokens,
            reserve: cfg.max_tokens,
        }
    }

    /// The messages the model sees for `user`'s next question, after trimming to the budget.
    pub fn prompt_for(
        &mut self,
        model: &mut dyn ChatModel,
        user: &str,
    ) -> Result<Vec<Message>, LlmError> {
        if user.trim().is_empty() {
            return Err(LlmError::EmptyPrompt);
        }
        let limit = self.budget.saturating_sub(self.reserve);
        // What memory recalled goes with the question, not the system prompt: the system prompt
        // and the turns so far stay the same from question to question, so the model's cache
        // of them (prefilled while nobody speaks) is used, and only the question is read.
        let question = match &self.recalled {
            Some(lines) if !lines.is_empty() => {
                format!("{}\n\n{}", recalled_text(lines), user.trim())
            }
            _ => user.trim().to_string(),
        };
        let system = self.system_message(self.with_tools);
        // Counting can cost a round trip (llama.cpp): the usual case, a prompt that fits with its
        // whole memory, is counted once.
        let mut checked_alone = false;
        loop {
            let mut msgs: Vec<Message> = system.iter().cloned().collect();
            msgs.extend(self.turns.iter().cloned());
            msgs.push(Message::new(Role::User, question.as_str()).with_image(self.picture.clone()));
            if model.fits(&msgs, limit)? {
                return Ok(msgs);
            }
            if !checked_alone {
                checked_alone = true;
                let mut alone: Vec<Message> = system.iter().cloned().collect();
                alone.push(
                    Message::new(Role::User, question.as_str()).with_image(self.picture.clone()),
                );
                let needed = model.count_tokens(&alone)?;
                if needed > limit {
                    // Refused whole: memory is kept, nothing is truncated silently.
                    return Err(LlmError::PromptTooLong { needed, limit });
                }
            }
            // Drop the oldest exchange (user + assistant).
            let n = self.turns.len().min(2);
            self.turns.drain(..n);
            tracing::debug!(limit, "conversation over budget; dropped the oldest turn");
        }
    }

    /// Records a finished exchange.
    pub fn record(&mut self, user: &str, answer: &str) {
        self.turns.push(Message::new(Role::User, user.trim()));
        self.turns
            .push(Message::new(Role::Assistant, answer.trim()));
    }

    /// What the next prompt starts with: the system prompt with the current scene, and the
    /// turns remembered so far (to prefill while nobody speaks).
    /// Without the tools: most questions are asked without them.
    pub fn preamble(&self) -> Vec<Message> {
        let mut msgs: Vec<Message> = self.system_message(false).into_iter().collect();
        msgs.extend(self.turns.iter().cloned());
        msgs
    }

    /// The same with the tools described in the system prompt, if there are tools: the start
    /// of the prompt for a question that may need one.
    pub fn tools_preamble(&self) -> Option<Vec<Message>> {
        self.tools_system.as_ref()?;
        let mut msgs: Vec<Message> = self.system_message(true).into_iter().collect();
        msgs.extend(self.turns.iter().cloned());
        Some(msgs)
    }

    /// The system prompt (with the tools described, if asked and there are any), with what the
    /// camera shows now.
    fn system_message(&self, tools: bool) -> Option<Message> {
        let system = match tools {
            true => self.tools_system.as_ref().or(self.system.as_ref()),
            false => self.system.as_ref(),
        };
        let mut text = system.map(|m| m.content.clone());
        let mut add = |part: String| {
            text = Some(match text.take() {
                Some(t) => format!("{t} {part}"),
                None => part,
            })
        };
        if let Some(scene) = &self.scene {
            add(format!(
                "You can see through a camera. {}",
                context_line(scene)
            ));
        }
        if self.recalled.is_some() {
            add(MEMORY_RULE.to_string());
        }
        text.map(|t| Message::new(Role::System, t))
    }

    /// Sets (or clears, with `None`) what memory recalled for the next question; an empty list
    /// tells the model that nothing relevant is remembered.
    pub fn set_recalled(&mut self, lines: Option<Vec<String>>) {
        self.recalled = lines;
    }

    /// Sets (or clears) the system prompt with the tools described, for questions asked
    /// `with_tools`.
    pub fn set_tools(&mut self, system: Option<String>) {
        self.tools_system = system.map(|s| Message::new(Role::System, s.trim()));
    }

    /// Whether the next question is asked with the tools described (the preamble never is).
    pub fn with_tools(&mut self, on: bool) {
        self.with_tools = on;
    }

    /// Sets (or clears) what the camera shows now: the next question is asked with it.
    pub fn set_scene(&mut self, caption: Option<String>) {
        self.scene = caption.filter(|c| !c.trim().is_empty());
    }

    /// Sets (or clears) the picture that comes with the next questions: the camera's frame
    /// itself, for a model that takes images.
    pub fn set_picture(&mut self, picture: Option<Arc<str>>) {
        self.picture = picture;
    }

    pub fn turns(&self) -> usize {
        self.turns.len() / 2
    }
}

#[cfg(test)]
mod tests {
    use super::super::chat::Finish;
    use super::*;
    use crate::stages::Cancel;

    /// Counts one token per character, so budgets are easy to reason about.
    struct CharModel;
    impl ChatModel for CharModel {
        fn generate(
            &mut self,
            _: &[Message],
            _: &Cancel,
            _: &mut dyn FnMut(&str),
        ) -> Result<(String, Finish), LlmError> {
            Ok((String::new(), Finish::Stop))
        }
        fn count_tokens(&mut self, m: &[Message]) -> Result<usize, LlmError> {
            Ok(m.iter().map(|m| m.content.len()).sum())
        }
        fn set_config(&mut self, _: &LlmConfig) {}
        fn describe(&self) -> String {
            "chars".into()
        }
    }

    #[test]
    fn only_questions_asked_with_tools_have_them_described() {
        let mut conv = Conversation::new(&LlmConfig {
            system_prompt: "sys".into(),
            ..LlmConfig::default()
        });
        conv.set_tools(Some("sys with tools".into()));
        conv.set_scene(Some("a cat".into()));
        let mut m = CharModel;
        let plain = conv.prompt_for(&mut m, "q").unwrap();
        assert!(
            plain[0].content.starts_with("sys You can see"),
            "{}",
            plain[0].content
        );
        conv.with_tools(true);
        let tools = conv.prompt_for(&mut m, "q").unwrap();
        assert!(
            tools[0].content.starts_with("sys with tools You can see"),
            "{}",
            tools[0].content
        );
        // What is prefilled while nobody speaks is the prompt without them.
        assert_eq!(conv.preamble()[0].content, plain[0].content);
    }

    #[test]
    fn memory_drops_oldest_turns_and_refuses_what_cannot_fit() {
        let cfg = LlmConfig {
            system_prompt: "sys".into(),
            context_tokens: 40,
            max_tokens: 10,
            ..LlmConfig::default()
        };
        let mut conv = Conversation::new(&cfg);
        let mut m = CharModel;
        conv.record("aaaaaaaaaa", "bbbbbbbbbb");
        conv.record("cccc", "dddd");
        // sys(3) + 10 + 10 + 4 + 4 + q(5) = 36 > 30: the first exchange goes, the second stays.
        let msgs = conv.prompt_for(&mut m, "qqqqq").unwrap();
        assert_eq!(msgs[0].content, "sys");
        assert_eq!(msgs[1].content, "cccc");
        assert_eq!(msgs.len(), 4);
        assert_eq!(conv.turns(), 1);
        let err = conv.prompt_for(&mut m, &"x".repeat(40)).unwrap_err();
        assert!(
            matches!(
                err,
                LlmError::PromptTooLong {
                    needed: 43,
                    limit: 30
                }
            ),
            "{err}"
        );
        assert_eq!(conv.turns(), 1, "a refused prompt keeps the memory");
        assert!(matches!(
            conv.prompt_for(&mut m, "  "),
            Err(LlmError::EmptyPrompt)
        ));
    }

    #[test]
    fn the_scene_joins_the_system_prompt_and_is_not_remembered() {
        let mut conv = Conversation::new(&LlmConfig {
            system_prompt: "Be brief.".into(),
            ..LlmConfig::default()
        });
        conv.set_scene(Some("a cat.".into()));
        let msgs = conv.prompt_for(&mut CharModel, "What is this?").unwrap();
        assert_eq!(
            msgs[0].content,
            "Be brief. You can see through a camera. The camera currently shows: a cat."
        );
        assert_eq!(msgs[1].content, "What is this?");
        conv.record("What is this?", "A cat.");
        conv.set_scene(None);
        let msgs = conv.prompt_for(&mut CharModel, "And now?").unwrap();
        assert_eq!(msgs[0].content, "Be brief.");
        assert!(msgs.iter().all(|m| !m.content.contains("camera")));
    }

    #[test]
    fn recalled_memories_come_with_the_question_and_leave_the_prefix_alone() {
        let mut conv = Conversation::new(&LlmConfig {
            system_prompt: "Be brief.".into(),
            ..LlmConfig::default()
        });
        conv.set_scene(Some("a desk.".into()));
        conv.set_recalled(Some(Vec::new()));
        let before = conv.preamble();
        conv.set_recalled(Some(vec!["a note kept just now: keys in the bowl".into()]));
        let msgs = conv
            .prompt_for(&mut CharModel, "Where are my keys?")
            .unwrap();
        assert_eq!(conv.preamble(), before, "the cached prefix is unchanged");
        assert_eq!(
            msgs[0].content,
            format!(
                "Be brief. You can see through a camera. The camera currently shows: a desk. \
                 {MEMORY_RULE}"
            )
        );
        assert_eq!(
            msgs.last().unwrap().content,
            "Your memory (what you saw and heard earlier):\n\
             - a note kept just now: keys in the bowl\n\nWhere are my keys?"
        );
        conv.record("Where are my keys?", "In the bowl.");
        assert_eq!(
            conv.preamble()[1].content,
            "Where are my keys?",
            "kept without the recall"
        );
        // Nothing relevant: the question alone, under the same system prompt.
        conv.set_recalled(Some(Vec::new()));
        let msgs = conv
            .prompt_for(&mut CharModel, "Did you see a cat?")
            .unwrap();
        assert_eq!(msgs[0], before[0]);
        assert_eq!(msgs.last().unwrap().content, "Did you see a cat?");
        conv.set_recalled(None);
        conv.set_scene(None);
        let msgs = conv.prompt_for(&mut CharModel, "Hi").unwrap();
        assert_eq!(msgs[0].content, "Be brief.");
        assert_eq!(msgs.last().unwrap().content, "Hi");
    }
}
