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

    /// The name `connection` was opened for.
    pub fn name(&self, connection: &SocketAddr) -> Option<Hostname> {
        locked(&self.by_connection).get(connection).cloned()
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
        let entry = book.enter(conn, Hostname::parse("shop.test").unwrap());
        assert_eq!(book.name(&conn).unwrap().as_str(), "shop.test");
        drop(entry);
        assert!(book.name(&conn).is_none());
    }
}
