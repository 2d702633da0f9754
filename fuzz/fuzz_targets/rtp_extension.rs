#![no_main]
//! Fuzz target `rtp_extension`: see `checks::rtp_extension` (fuzz/checks.rs) for the input format and invariants.

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::rtp_extension(data));
