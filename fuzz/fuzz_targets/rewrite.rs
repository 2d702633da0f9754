#![no_main]
//! Fuzz target `rewrite`: see `checks::rewrite` (fuzz/checks.rs) for the input format and invariants.

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::rewrite(data));
