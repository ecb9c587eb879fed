//! `pullgate::fuzz::simple_signing` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pullgate::fuzz::simple_signing(data));
