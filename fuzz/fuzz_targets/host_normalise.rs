#![no_main]
//! Host normalisation never panics, and what it accepts is already normal:
//! normalising it again gives the same name.
use edgepop::domain::Hostname;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(host) = Hostname::from_authority(data) {
        let again = Hostname::parse(host.as_str()).expect("a normalised name parses");
        assert_eq!(again, host);
        assert!(host.as_str().bytes().all(|b| !b.is_ascii_uppercase()));
    }
});
