//! What a TLS handshake learnt about each live connection, by the
//! connection's client address, for the request path: the name an HTTPS
//! connection asked for (SNI, held against each request's Host: domain
//! fronting), or the PoP a peer connection's certificate names.

use crate::domain::{Hostname, PopId};
use crate::locked;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub struct ConnectionBook<T> {
    by_connection: Mutex<HashMap<SocketAddr, T>>,
}

/// Each HTTPS connection's SNI.
pub type SniBook = ConnectionBook<Hostname>;
/// Each peer connection's PoP, from its client certificate.
pub type PeerBook = ConnectionBook<PopId>;

impl<T> Default for ConnectionBook<T> {
    fn default() -> Self {
        ConnectionBook {
            by_connection: Mutex::default(),
        }
    }
}

impl<T: Clone + PartialEq> ConnectionBook<T> {
    /// Notes `connection`'s fact until the returned entry is dropped.
    pub fn enter(self: &Arc<Self>, connection: SocketAddr, fact: T) -> BookEntry<T> {
        locked(&self.by_connection).insert(connection, fact);
        BookEntry {
            book: self.clone(),
            connection,
        }
    }

    /// `connection`'s fact, when it is not `expected` (a copy is made only
    /// then).
    pub fn other_than(&self, connection: &SocketAddr, expected: &T) -> Option<T> {
        let book = locked(&self.by_connection);
        book.get(connection)
            .filter(|fact| *fact != expected)
            .cloned()
    }

    pub fn get(&self, connection: &SocketAddr) -> Option<T> {
        locked(&self.by_connection).get(connection).cloned()
    }
}

/// One connection's line in the book, struck out when the connection ends.
pub struct BookEntry<T> {
    book: Arc<ConnectionBook<T>>,
    connection: SocketAddr,
}

impl<T> Drop for BookEntry<T> {
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
