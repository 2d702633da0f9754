#![no_main]
//! Fuzz target `rtp_payload`: see `checks::rtp_payload` (fuzz/checks.rs) for the input format and invariants.

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::rtp_payload(data));
