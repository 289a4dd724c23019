//! Where certificates and the ACME account are kept (`CertStore`, as
//! certmagic's Storage) and who may order a name now (`IssuanceLock`, its
//! Locker). `file`: one box, with the lock in memory (`MemoryLock`).
//! `postgres`: the central database every PoP shares, so a name is ordered
//! once for the whole network; it is also the challenge board
//! (`challenge::ChallengeBoard`) from which any PoP answers the CA.

mod file;
mod lock;
mod postgres;
mod storage;

pub use file::{write_private, FileStore};
pub use lock::{IssuanceLock, Lock, MemoryLock};
pub use postgres::PostgresStore;
pub use storage::CertStore;
