#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshgate_fuzz::entries::resolution(data));
