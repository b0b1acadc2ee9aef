#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bigfoot_fuzz::request_path(data);
});
