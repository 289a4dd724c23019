#![no_main]
//! The change-event decoder never panics on any record value, and whatever
//! it accepts names a valid key.
use edgepop::change::Change;
use edgepop::sync::event::{decode, Decoded};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Decoded::Event(e)) = decode("cdc.public.pages", Some(data)) {
        match e.change {
            Change::UpsertDomain(d) => assert!(!d.hostname.as_str().is_empty()),
            Change::DeleteDomain { hostname, .. } => assert!(!hostname.as_str().is_empty()),
            Change::UpsertPage(_) | Change::DeletePage { .. } => {}
        }
    }
});
