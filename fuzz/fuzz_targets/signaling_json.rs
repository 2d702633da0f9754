#![no_main]
//! Fuzz target `signaling_json`: see `checks::signaling_json` (fuzz/checks.rs) for the input format and invariants.

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::signaling_json(data));
