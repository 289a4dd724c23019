//! In-memory caches in front of the replica (moka, shared by all workers):
//! pages bounded in bytes, domains bounded in entries, both with brief
//! negative caching. Change events push new rows in (the next request is a
//! hit with fresh content) and deletes take them out.

mod press;
mod slot;
mod storefront;

pub use press::{Press, PressSettings};
pub use slot::{
    domain_cache, page_cache, CachedPage, DomainCache, PageCache, Slot, SlotCache, Variant,
};
pub use storefront::{Lookup, Storefront};
