//! In-memory caches in front of the replica (moka, shared by all workers):
//! pages bounded in bytes, domains bounded in entries, both with brief
//! negative caching. Change events push new rows in (the next request is a
//! hit with fresh content) and deletes take them out.

mod slot;
mod storefront;

pub use slot::{domain_cache, page_cache, CachedPage, DomainCache, PageCache, Slot, SlotCache};
pub use storefront::{Lookup, Storefront};
