//! The name each live HTTPS connection asked for in its ClientHello (SNI),
//! by the connection's client address, so the request path can hold each
//! request's Host against it (domain fronting).

use crate::domain::Hostname;
use crate::locked;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct SniBook {
    by_connection: Mutex<HashMap<SocketAddr, Hostname>>,
}

impl SniBook {
    /// Notes `connection`'s name until the returned entry is dropped.
    pub fn enter(self: &Arc<Self>, connection: SocketAddr, name: Hostname) -> SniEntry {
        locked(&self.by_connection).insert(connection, name);
        SniEntry {
            book: self.clone(),
            connection,
        }
    }

    /// The name `connection` was opened for, when it is not `host` (a copy
    /// is made only then).
    pub fn other_than(&self, connection: &SocketAddr, host: &Hostname) -> Option<Hostname> {
        let book = locked(&self.by_connection);
        book.get(connection).filter(|sni| *sni != host).cloned()
    }
}

/// One connection's line in the book, struck out when the connection ends.
pub struct SniEntry {
    book: Arc<SniBook>,
    connection: SocketAddr,
}

impl Drop for SniEntry {
    fn drop(&mut self) {
        locked(&self.book.by_connection).remove(&self.connection);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_known_while_its_connection_lives() {
        let book = Arc::new(SniBook::default());
        let conn: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let (shop, other) = (
            Hostname::parse("shop.test").unwrap(),
            Hostname::parse("other.test").unwrap(),
        );
        let entry = book.enter(conn, shop.clone());
        assert!(book.other_than(&conn, &shop).is_none());
        assert_eq!(book.other_than(&conn, &other), Some(shop));
        drop(entry);
        assert!(book.other_than(&conn, &other).is_none());
    }
}
