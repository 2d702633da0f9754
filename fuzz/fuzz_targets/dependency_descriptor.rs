#![no_main]
//! Fuzz target `dependency_descriptor`: see `checks::dependency_descriptor` (fuzz/checks.rs) for the input format and invariants.

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::dependency_descriptor(data));
