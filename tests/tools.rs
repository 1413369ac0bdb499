//! Tools with the real default model: through `seesay chat`, the time and the date from the
//! system clock, and a picture asked of a fake images service written here (its request shape
//! checked, the saved file named in the answer); through `seesay run`, a spoken timer.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::*;

/// `date +FORMAT`: the system clock as the C library's `date` tells it.
fn date(format: &str) -> String {
    let out = Command::new("date")
        .arg(format!("+{format}"))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Every H:MM (or HH:MM) in `text`, as minutes of the day (and of a 12-hour clock).
fn clock_times(text: &str) -> Vec<u32> {
    let b = text.as_bytes();
    let mut found = Vec::new();
    for (i, _) in text.match_indices(':') {
        let h: String = text[..i]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        let h: String = h.chars().rev().collect();
        let m = text
            .get(i + 1..i + 3)
            .filter(|m| m.bytes().all(|c| c.is_ascii_digit()));
        if let (Ok(h), Some(m)) = (h.parse::<u32>(), m) {
            if h < 24 && i + 3 <= b.len() {
                found.push(h * 60 + m.parse::<u32>().unwrap());
            }
        }
    }
    found
}

#[test]
fn the_time_is_read_from_the_system_clock() {
    let before = date("%H:%M");
    let out = ok(seesay(&["chat", "What time is it?"]));
    let after = date("%H:%M");
    let times = clock_times(&out);
    assert!(!times.is_empty(), "no time in the answer: {out}");
    let minutes = |t: &str| clock_times(t)[0];
    let (a, b) = (minutes(&before), minutes(&after));
    // Within a minute of the clock while seesay answered, told on a 24- or 12-hour clock.
    let near = |t: u32| {
        [a, b].iter().any(|c| {
            let d = (t as i64 - *c as i64).rem_euclid(720);
            d <= 1 || d >= 719
        })
    };
    assert!(
        times.iter().any(|t| near(*t)),
        "{out} (clock: {before} .. {after})"
    );
    assert!(
        !out.contains("get_time") && !out.contains('{'),
        "the call was printed: {out}"
    );
}

#[test]
fn todays_date_is_read_from_the_system_clock() {
    let out = ok(seesay(&["chat", "What is today's date?"]));
    let (day, month, iso) = (date("%-d"), date("%B"), date("%F"));
    let says_day = out.split(|c: char| !c.is_ascii_digit()).any(|n| n == day);
    assert!(
        out.contains(&iso) || (says_day && out.contains(&month)),
        "{out} (today: {iso})"
    );
}

/// A 1x1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D, 0x49, 0x48, 0x44, 0x52, 0, 0, 0,
    1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1F, 0x15, 0xC4, 0x89,
];

#[test]
fn a_picture_is_asked_of_the_images_service_and_its_file_named() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let pictures = dir.path().join("pictures");
    let (tx, rx) = std::sync::mpsc::channel();
    let b64 = base64::engine::general_purpose::STANDARD.encode(PNG);
    let base = fake_server(move |sock, body| {
        tx.send(body).unwrap();
        let reply = serde_json::json!({"created": 1, "data": [{"b64_json": b64, "revised_prompt": "A white cat sitting on a windowsill."}]}).to_string();
        write!(
            sock,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        )
        .unwrap();
    });
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[images]\nbase_url = \"{base}\"\napi_key = \"sk-test\"\nmodel = \"gpt-image-1\"\ndir = \"{}\"\n",
            pictures.display()
        ),
    )
    .unwrap();
    let out = ok(seesay_env(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "chat",
            "Make a picture of a white cat",
        ],
        &[],
        None,
        Duration::from_secs(180),
    ));
    let body: serde_json::Value =
        serde_json::from_str(&rx.recv_timeout(Duration::from_secs(1)).unwrap()).unwrap();
    assert_eq!(body["model"], "gpt-image-1");
    assert_eq!(body["n"], 1);
    assert_eq!(body["size"], "1024x1024");
    assert_eq!(body["response_format"], "b64_json");
    let prompt = body["prompt"].as_str().unwrap().to_lowercase();
    assert!(prompt.contains("white cat"), "prompt: {prompt}");
    let saved: Vec<_> = std::fs::read_dir(&pictures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(saved.len(), 1);
    assert_eq!(std::fs::read(&saved[0]).unwrap(), PNG);
    let name = saved[0].file_name().unwrap().to_str().unwrap();
    assert!(
        out.contains(name),
        "the answer does not say where the picture is: {out}"
    );
}

#[test]
fn a_timer_set_in_run_is_confirmed_and_its_end_spoken_five_seconds_later() {
    let dir = tempfile::tempdir().unwrap();
    // Long enough after the question for a slow machine to answer and the timer to end.
    let (input, _) = questions(dir.path(), &[("Set a timer for five seconds.", 1.0)], 25.0);
    let (_, _, turns) = run_file(dir.path(), &input, "", &[]);
    assert_eq!(turns.len(), 2, "{turns:?}");
    let (asked, ended) = (&turns[0], &turns[1]);
    let call = &asked["tool_calls"][0];
    assert_eq!(call["name"], "set_timer", "{asked}");
    assert_eq!(call["arguments"]["seconds"].as_f64(), Some(5.0), "{asked}");
    assert!(
        asked["answer_audio_s"].as_f64().unwrap() > 0.5,
        "not confirmed: {asked}"
    );
    assert_eq!(ended["announcement"], true, "{ended}");
    // Spoken 5 +/- 1 s after the timer was set, or, if the confirmation was still playing
    // then, at most a second after it ended (seesay does not talk over itself).
    let set = call["at_s"].as_f64().unwrap();
    let confirmed =
        asked["said_at_s"].as_f64().unwrap() + asked["answer_audio_s"].as_f64().unwrap();
    let said = ended["said_at_s"].as_f64().unwrap();
    assert!(
        said - set >= 4.0 && said <= (set + 6.0).max(confirmed + 1.0),
        "set at {set:.2} s, confirmation over at {confirmed:.2} s, end said at {said:.2} s"
    );
}
