//! `seesay bench --stage tools`: how well the configured language model calls tools. Thirty
//! requests written for this bench (24 that need a tool, 6 that need none), asked one by one as
//! `seesay run` with a camera asks them: with every standard tool described when the request's
//! words point at one (`tools::route`), else without; the model's first reply is parsed as the
//! answer loop parses it and scored: the right tool with the right arguments, or no call at
//! all. The tools are not run. `--all-tools` describes the tools with every request.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use super::bench_common::median;
use seesay::config::Config;
use seesay::stages::llm::{self, Message, Role};
use seesay::stages::Cancel;
use seesay::store::Store;
use seesay::tools::{self, parse_calls, Eyes, Notebook, Reach, Routed, Timers};

/// What an argument must be: a number, or text holding these words (lower case).
enum Arg {
    Num(f64),
    Has(&'static str),
}

/// A request, the tool it needs (`None`: no tool) and what its arguments must be.
type Case = (
    &'static str,
    Option<&'static str>,
    &'static [(&'static str, Arg)],
);

const CASES: [Case; 30] = [
    ("What time is it right now?", Some("get_time"), &[]),
    ("What's the date today?", Some("get_time"), &[]),
    ("Which day of the week is it?", Some("get_time"), &[]),
    ("Is it morning or afternoon now?", Some("get_time"), &[]),
    (
        "Set a timer for ten minutes.",
        Some("set_timer"),
        &[("seconds", Arg::Num(600.0))],
    ),
    (
        "Start a three minute timer for the eggs.",
        Some("set_timer"),
        &[("seconds", Arg::Num(180.0))],
    ),
    (
        "Time me for thirty seconds.",
        Some("set_timer"),
        &[("seconds", Arg::Num(30.0))],
    ),
    (
        "Set a timer for one hour.",
        Some("set_timer"),
        &[("seconds", Arg::Num(3600.0))],
    ),
    (
        "Remind me in two minutes to check the oven.",
        Some("set_timer"),
        &[("seconds", Arg::Num(120.0))],
    ),
    ("How many timers are running?", Some("list_timers"), &[]),
    ("What timers do I have?", Some("list_timers"), &[]),
    ("Cancel the timer.", Some("cancel_timer"), &[]),
    ("Stop the egg timer.", Some("cancel_timer"), &[]),
    (
        "Remember that my locker code is 4512.",
        Some("remember"),
        &[("text", Arg::Has("4512"))],
    ),
    (
        "Please note that the plumber comes on Tuesday.",
        Some("remember"),
        &[("text", Arg::Has("plumber"))],
    ),
    (
        "Keep in mind that Sam is allergic to peanuts.",
        Some("remember"),
        &[("text", Arg::Has("peanut"))],
    ),
    (
        "What did I tell you about the plumber?",
        Some("recall"),
        &[("query", Arg::Has("plumber"))],
    ),
    (
        "Do you remember my locker code?",
        Some("recall"),
        &[("query", Arg::Has("locker"))],
    ),
    (
        "Forget the note about the plumber.",
        Some("forget"),
        &[("what", Arg::Has("plumber"))],
    ),
    ("What do you see right now?", Some("look"), &[]),
    ("Describe what is in front of you.", Some("look"), &[]),
    (
        "Read the text on the page I'm holding up.",
        Some("read"),
        &[],
    ),
    ("What does the sign say?", Some("read"), &[]),
    (
        "Make a picture of a red bicycle on a beach.",
        Some("make_picture"),
        &[("prompt", Arg::Has("bicycle"))],
    ),
    (
        "Draw me a cartoon dog wearing a hat.",
        Some("make_picture"),
        &[("prompt", Arg::Has("dog"))],
    ),
    ("What is the capital of Japan?", None, &[]),
    ("How many legs does a spider have?", None, &[]),
    ("Tell me a fun fact about octopuses.", None, &[]),
    ("What is seven times eight?", None, &[]),
    ("Who wrote Romeo and Juliet?", None, &[]),
];

/// A notebook and a camera that are never asked (the tools are described, not run).
struct Unused;

impl Notebook for Unused {
    fn remember(&self, _: &str) -> Result<String, String> {
        Err("not in the bench".into())
    }
    fn recall(&self, _: &str, _: usize) -> Result<Vec<String>, String> {
        Err("not in the bench".into())
    }
    fn forget(&self, _: &str) -> Result<String, String> {
        Err("not in the bench".into())
    }
}

impl Eyes for Unused {
    fn look(&self) -> Result<String, String> {
        Err("not in the bench".into())
    }
    fn read(&self) -> Result<String, String> {
        Err("not in the bench".into())
    }
}

/// Whether the reply calls `want` (or nothing, for `None`) with arguments that pass `args`.
fn right(reply: &str, want: Option<&str>, args: &[(&str, Arg)]) -> bool {
    let calls = parse_calls(reply);
    let Some(want) = want else {
        return calls.is_empty();
    };
    let Some(call) = calls.first().filter(|c| c.name == want) else {
        return false;
    };
    args.iter().all(|(key, check)| {
        let v = &call.arguments[*key];
        match check {
            Arg::Num(n) => {
                v.as_f64() == Some(*n) || v.as_str().and_then(|s| s.parse().ok()) == Some(*n)
            }
            Arg::Has(w) => v.as_str().is_some_and(|s| s.to_lowercase().contains(w)),
        }
    })
}

pub fn run(cfg: &Config, all_tools: bool) -> Result<serde_json::Value> {
    let store = Store::from_config(&cfg.models)?;
    let mut images = cfg.images.clone();
    if images.base_url.is_empty() {
        // Listed like any tool; never called here.
        images.base_url = "http://127.0.0.1:9/v1".into();
    }
    let reach = Reach {
        timers: Some(Timers::new(|_| {})),
        notebook: Some(Arc::new(Unused)),
        eyes: Some(Arc::new(Unused)),
        reads: true,
    };
    let usable = cfg.tools.for_model(&cfg.llm);
    let tools = Routed::new(tools::standard(&usable, &images, reach), &usable);
    let Some(with_tools) = tools.system_prompt() else {
        anyhow::bail!("no tools for this model ([tools] enabled is off, or the candle engine)");
    };
    let mut model = llm::open(&cfg.llm, &store)?;
    let cancel = Cancel::new();
    let (mut right_tool, mut right_all, mut routed, mut ms) = (0, 0, 0, Vec::new());
    let mut wrong = Vec::new();
    for (question, want, args) in CASES {
        let described = all_tools || tools.with_tools(question);
        routed += usize::from(described);
        let system = match described {
            true => with_tools.as_str(),
            false => cfg.llm.system_prompt.as_str(),
        };
        let msgs = [
            Message::new(Role::System, system),
            Message::new(Role::User, question),
        ];
        let t = Instant::now();
        let (reply, _) = model.generate(&msgs, &cancel, &mut |_| {})?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let called: Vec<String> = parse_calls(&reply).into_iter().map(|c| c.name).collect();
        right_tool += usize::from(called.first().map(String::as_str) == want);
        if right(&reply, want, args) {
            right_all += 1;
        } else {
            tracing::info!(question, ?want, reply = %reply.trim(), "tool bench: wrong");
            wrong.push(
                serde_json::json!({"request": question, "want": want, "reply": reply.trim()}),
            );
        }
    }
    outln!(
        "tools: {right_all}/{} right (tool and arguments), {right_tool} with the right tool or none, {routed} asked with the tools; median {:.0} ms a request ({})",
        CASES.len(),
        median(&mut ms),
        cfg.llm.model
    );
    Ok(serde_json::json!({
        "model": cfg.llm.model, "requests": CASES.len(), "right": right_all,
        "right_tool": right_tool, "with_tools": routed, "median_ms": median(&mut ms),
        "wrong": wrong,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_scored_by_tool_and_arguments() {
        let call = |j: &str| format!("<tool_call>\n{j}\n</tool_call>");
        let timer = [("seconds", Arg::Num(600.0))];
        let ten = call(r#"{"name": "set_timer", "arguments": {"seconds": 600}}"#);
        assert!(right(&ten, Some("set_timer"), &timer));
        let five = call(r#"{"name": "set_timer", "arguments": {"seconds": "300"}}"#);
        assert!(!right(&five, Some("set_timer"), &timer));
        assert!(!right(&ten, Some("get_time"), &[]));
        assert!(!right("Ten minutes, done.", Some("set_timer"), &timer));
        assert!(right("Tokyo.", None, &[]));
        assert!(!right(&ten, None, &[]));
        let note = call(r#"{"name": "remember", "arguments": {"text": "Locker code 4512"}}"#);
        assert!(right(
            &note,
            Some("remember"),
            &[("text", Arg::Has("4512"))]
        ));
    }
}
