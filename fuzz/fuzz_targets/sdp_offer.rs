#![no_main]
//! Fuzz target `sdp_offer`: see `checks::sdp_offer` (fuzz/checks.rs) for the input format and invariants.

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::sdp_offer(data));
