//! `pullgate::fuzz::dsse` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pullgate::fuzz::dsse(data));
