#![no_main]
//! Fuzz target `relay_frame`: see `checks::relay_frame` (fuzz/checks.rs) for the input format and invariants.

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::relay_frame(data));
