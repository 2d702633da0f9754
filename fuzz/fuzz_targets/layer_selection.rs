#![no_main]
//! Fuzz target `layer_selection`: see `checks::layer_selection` (fuzz/checks.rs) for the
//! input format and invariants.

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::layer_selection(data));
