//! The LLM stage: transcripts in, sentences out while the answer is being written. Between
//! questions it prefills the prompt's fixed start and speaks announcements (timers); at a pause
//! it prefills the question heard so far and reads how likely the turn is to end there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::error::PipelineError;
use super::hands::{announce, Hands};
use super::messages::{Feedback, Heard, Say, ToolCall, What};
use super::models::{lock, Locked};
use super::turns::Context;
use crate::stages::asr::Transcriber;
use crate::stages::llm::{open_ended, ChatModel, Conversation, Finish, Message};
use crate::stages::Cancel;
use crate::text::splitter::{ends_sentence, SentenceSplitter};
use crate::tools;

mod ahead;
use ahead::Writing;

/// Tokens of a prompt prefilled at a time while nobody speaks (about 0.3 s on two cores).
const WARM_PIECE_TOKENS: usize = 32;

/// What the LLM stage is given.
pub(crate) struct Answering {
    pub llm: Box<dyn ChatModel>,
    pub hands: Hands,
    /// Held while the model reads or prefills the user's words (short steps), so the recogniser
    /// and the model never compute at once: on the same cores both thread pools spin while they
    /// wait for each other, and each step took up to 8 times as long (a 90 ms transcript and a
    /// 50 ms reading both took 750 ms).
    pub cores: Locked<Box<dyn Transcriber>>,
    pub conv: Conversation,
    pub first_clause_words: usize,
    /// Write the answer ahead at a doubted pause (`pipeline.preemptive_answer`).
    pub answer_ahead: bool,
    /// Whether pauses are judged with the model's reading of the words (`turn.semantic`).
    pub judge_turns: bool,
    pub tx: Sender<Say>,
    pub hints: Sender<Feedback>,
    pub cx: Arc<Context>,
}

/// The stage's state between messages.
struct Stage {
    a: Answering,
    rx: Receiver<Heard>,
    /// A transcript taken while an answer was written ahead, to be handled next.
    next: Option<Heard>,
    /// The last pause read ahead: its turn, speech end and words.
    pause: Option<(u64, u64, String)>,
    /// The prompt's fixed start (the system prompt with what the camera shows, and the turns so
    /// far) is computed before anyone speaks, and again when the picture changes while nobody
    /// speaks, so a question waits only for its own tokens.
    scene: Option<String>,
    warmed: bool,
    /// The same start with the tools described (`Conversation::tools_preamble`) is prefilled in
    /// its own slot too, a piece at a time while nobody speaks, so the first question that may
    /// need a tool (and each one after some turns without) does not wait for it: on two cores
    /// its 700 tokens took 7 s, and the end of that turn was missed while they were read.
    tools_warmed: bool,
    /// The last reading of the user's words (turn, words, probability): a pause whose words were
    /// all heard by the last reading made while the user spoke needs no new one.
    last_read: Option<(u64, String, f32)>,
}

/// Whether the stage goes on, or the stage after it is gone.
type Going = bool;

/// The LLM stage's loop.
pub(crate) fn llm_loop(mut a: Answering, rx: Receiver<Heard>) -> Result<(), PipelineError> {
    let _stage = tracing::info_span!("llm").entered();
    // With memory, the system prompt says how recalled lines come (the same words for every
    // question): prefilled with the rest before anyone speaks.
    if a.cx.memory.is_some() {
        a.conv.set_recalled(Some(Vec::new()));
    }
    let mut s = Stage {
        a,
        rx,
        next: None,
        pause: None,
        scene: None,
        warmed: false,
        tools_warmed: false,
        last_read: None,
    };
    loop {
        let msg = match s.next.take() {
            Some(h) => Ok(h),
            // Short, so that an answer wanted ahead is begun soon after the verdict.
            None => s.rx.recv_timeout(Duration::from_millis(20)),
        };
        let going = match msg {
            Ok(h) => s.heard(h),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => s.between_questions(),
        };
        if !going {
            return Ok(());
        }
    }
    Ok(())
}

impl Stage {
    /// Nobody speaks: an announcement is said, or the prompt's start is prefilled.
    fn between_questions(&mut self) -> Going {
        let cx = self.a.cx.clone();
        if let Some((h, stop)) = self.wanted_ahead() {
            return self.answer_ahead(h, stop);
        }
        if cx.turns.idle() {
            if let Ok(text) = self.a.hands.announcements.try_recv() {
                return announce(text, &self.a.tx, &cx);
            }
        }
        let now = lock(&cx.scene).clone();
        if (!self.warmed || now != self.scene) && cx.turns.idle() {
            self.scene = now;
            self.a.conv.set_scene(self.scene.clone());
            self.warmed = true;
            let cores = self.a.cores.clone();
            let _cores = lock(&cores);
            if let Err(e) = self.a.llm.warm_up(&self.a.conv.preamble()) {
                tracing::warn!("could not prefill the system prompt: {e}");
            }
            self.tools_warmed = false;
        } else if !self.tools_warmed && cx.turns.idle() {
            self.tools_warmed = self.warm_tools_piece();
        }
        true
    }

    /// Prefills one piece more of the prompt with the tools described; true when it is all
    /// prefilled (or there are no tools, or it failed: tried again after the next answer). A
    /// piece at a time, so that a user who starts to speak waits for one piece at most.
    fn warm_tools_piece(&mut self) -> bool {
        let Some(msgs) = self.a.conv.tools_preamble() else {
            return true;
        };
        let cores = self.a.cores.clone();
        let _cores = lock(&cores);
        self.a
            .llm
            .warm_up_piece(&msgs, WARM_PIECE_TOKENS)
            .unwrap_or_else(|e| {
                tracing::debug!("could not prefill the prompt with the tools: {e}");
                true
            })
    }

    /// A transcript: at a pause, read it ahead; at the end of a turn, answer it.
    fn heard(&mut self, h: Heard) -> Going {
        let cx = self.a.cx.clone();
        let _turn = tracing::debug_span!("turn", turn = h.turn).entered();
        if cx.turns.is_stale(h.turn) {
            match h.speculative {
                true => self.no_reading(&h),
                false => {
                    cx.event(h.turn, What::Dropped("interrupted"));
                    cx.turns.finish(h.turn);
                }
            }
            return true;
        }
        let asked = self.as_read(&h);
        self.scene = lock(&cx.scene).clone();
        let conv = &mut self.a.conv;
        conv.set_scene(self.scene.clone());
        conv.set_picture(lock(&cx.picture).clone());
        conv.set_recalled(self.a.hands.recall(&cx, &h.text));
        conv.with_tools(self.a.hands.tools.with_tools(&h.text));
        if h.speculative {
            self.read_ahead(&Heard {
                text: asked,
                turn: h.turn,
                speculative: true,
                speech_end: h.speech_end,
            });
            self.pause = Some((h.turn, h.speech_end, h.text));
            return true;
        }
        // The turn is over: no answer is written ahead for its pauses any more.
        self.pause = None;
        let msgs = match self.a.conv.prompt_for(self.a.llm.as_mut(), &asked) {
            Ok(m) => m,
            Err(e) => {
                cx.event(h.turn, What::Failed(format!("language model: {e}")));
                cx.turns.finish(h.turn);
                return true;
            }
        };
        self.answer(&h, &msgs)
    }

    /// The words the model is given for a transcript: as the last reading read them, where they
    /// differ from the transcript only in case ("which planet is known as the red planet" then
    /// "Which planet ..."), so that the reading and the model's prefill of them are reused (read
    /// again from the first word, they took 244 ms more at the end of the turn). The
    /// conversation, the memory and the client keep the transcript as heard.
    fn as_read(&self, h: &Heard) -> String {
        match &self.last_read {
            Some((turn, read, _)) if *turn == h.turn => in_case_of(&h.text, read),
            _ => None,
        }
        .unwrap_or_else(|| h.text.clone())
    }

    /// Tells the VAD stage there is no reading of this pause.
    fn no_reading(&self, h: &Heard) {
        let _ = self.a.hints.try_send(Feedback::EndOfTurn {
            turn: h.turn,
            speech_end: h.speech_end,
            text_p: None,
        });
    }

    /// The user paused: prefill the question as heard so far (if they go on, the next prompt
    /// shares less of it and the work is simply not reused) and, when the turn is being judged,
    /// read how likely it is to end there.
    fn read_ahead(&mut self, h: &Heard) {
        let cores = self.a.cores.clone();
        let cores = lock(&cores);
        let t = Instant::now();
        let text_p = self.reading(h);
        self.last_read = text_p.map(|p| (h.turn, open_ended(&h.text).to_string(), p));
        if text_p.is_none() {
            let a = &mut self.a;
            match a
                .conv
                .prompt_for(a.llm.as_mut(), &h.text)
                .and_then(|msgs| a.llm.warm_up(&msgs))
            {
                Ok(()) => {}
                Err(e) => tracing::debug!("speculative prefill failed: {e}"),
            }
        }
        tracing::debug!(
            ms = t.elapsed().as_millis() as u64,
            text = %h.text,
            ?text_p,
            "prefilled the question heard so far"
        );
        drop(cores);
        let _ = self.a.hints.try_send(Feedback::EndOfTurn {
            turn: h.turn,
            speech_end: h.speech_end,
            text_p,
        });
    }

    /// The model's probability that the turn ends after the words heard so far (the last
    /// reading, when it read these very words), if turns are judged.
    fn reading(&mut self, h: &Heard) -> Option<f32> {
        let words = open_ended(&h.text);
        let a = &mut self.a;
        match &self.last_read {
            Some((turn, read, p)) if a.judge_turns && *turn == h.turn && read == words => Some(*p),
            _ if a.judge_turns => a
                .conv
                .prompt_for(a.llm.as_mut(), words)
                .and_then(|msgs| a.llm.end_of_turn(&msgs))
                .unwrap_or_else(|e| {
                    tracing::debug!("no end-of-turn reading: {e}");
                    None
                }),
            _ => None,
        }
    }

    /// Writes the answer, sending each sentence to the voice as soon as it is complete.
    fn answer(&mut self, h: &Heard, msgs: &[Message]) -> Going {
        let cx = self.a.cx.clone();
        let cancel = Cancel::for_turn(cx.turns.clock.clone(), h.turn);
        let mut w = Writing::live(h.turn, self.a.first_clause_words, &cx);
        let a = &mut self.a;
        let registry = a.hands.tools.for_question(&h.text);
        let tx = &a.tx;
        let result = tools::answer(a.llm.as_mut(), msgs, registry, &cancel, &mut |chunk| {
            w.push(chunk, &cx, tx)
        });
        if w.gone {
            return false;
        }
        match result {
            Ok(answer) => self.answered(h, answer, w.splitter, w.spoken),
            Err(e) => cx.event(h.turn, What::Failed(format!("language model: {e}"))),
        }
        self.a.tx.send(Say::End { turn: h.turn }).is_ok()
    }

    /// The answer is written: its last sentences go to the voice, the conversation keeps it,
    /// and the turn's record gets it.
    fn answered(
        &mut self,
        h: &Heard,
        answer: tools::Answer,
        mut splitter: SentenceSplitter,
        mut spoken: Vec<String>,
    ) {
        let cx = self.a.cx.clone();
        let tools::Answer {
            text: mut answer,
            finish,
            calls,
        } = answer;
        let cancelled = finish == Finish::Cancelled;
        let rest = splitter.finish();
        // An answer cut by llm.max_tokens ends with its last whole sentence: the words after it
        // are not spoken (unless no whole sentence was spoken: a first phrase or clause alone
        // is finished with what was written of its sentence).
        let cut = finish == Finish::Length && spoken.last().is_some_and(|s| ends_sentence(s));
        if !cancelled && !cut {
            for text in rest {
                spoken.push(text.clone());
                let _ = self.a.tx.send(Say::Sentence { turn: h.turn, text });
            }
        }
        if cut {
            answer = spoken.join(" ");
        }
        if !answer.is_empty() {
            self.a.conv.record(&h.text, &answer);
            self.a.hands.keep_said(&cx, &h.text);
            // The history as the template writes it is prefilled again once nobody speaks (the
            // cache holds the answer as generated, whose tokens may differ), so the next
            // question pays only for its own words.
            self.warmed = false;
        }
        let calls = calls
            .into_iter()
            .map(|c| ToolCall {
                at_s: c.ended.saturating_duration_since(cx.t0).as_secs_f64(),
                name: c.name,
                arguments: c.arguments,
                result: c.result,
                ms: c.ms,
                ok: c.ok,
            })
            .collect();
        cx.event(
            h.turn,
            What::Answer {
                text: answer,
                cancelled,
                calls,
            },
        );
    }
}

/// `text` with its words written as in `read`, if they differ from them only in case (its
/// closing punctuation kept).
fn in_case_of(text: &str, read: &str) -> Option<String> {
    let text = text.trim();
    let words = open_ended(text);
    (words != read && words.to_lowercase() == read.to_lowercase())
        .then(|| format!("{read}{}", &text[words.len()..]))
}

#[cfg(test)]
mod tests {
    use super::in_case_of;

    #[test]
    fn words_read_in_another_case_are_taken_as_read() {
        let read = "which planet is known as the red planet";
        let heard = " Which planet is known as the red planet.";
        assert_eq!(
            in_case_of(heard, read).as_deref(),
            Some(&*format!("{read}."))
        );
        assert_eq!(
            in_case_of("which planet is known as the red planet?", read),
            None
        );
        assert_eq!(
            in_case_of("Which planet is known as the blue planet.", read),
            None
        );
    }
}
