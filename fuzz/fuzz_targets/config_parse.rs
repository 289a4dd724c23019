#![no_main]
//! Any config text gives a config or an error naming a place, never a panic.
use edgepop::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(src) = std::str::from_utf8(data) {
        let _ = Config::parse(src, std::path::Path::new("fuzz.toml"));
    }
});
