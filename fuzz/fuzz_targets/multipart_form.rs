#![no_main]
#![allow(dead_code)] // the other targets in targets.rs
include!("../targets.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| multipart_form(data));
