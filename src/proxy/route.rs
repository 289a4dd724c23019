//! `x-edge-route`: the PoPs a request passed through, in order. The first is
//! where the client landed, the last produced the response.

use crate::domain::PopId;

pub const HEADER: &str = "x-edge-route";

/// Kept rendered: it is written on every request and response.
#[derive(Debug, Clone, Default)]
pub struct EdgeRoute {
    rendered: String,
}

impl EdgeRoute {
    /// The route of a request that landed here from a client. Whatever the
    /// client claimed is discarded: only a peer PoP may extend a route.
    pub fn landed(pop: &PopId) -> Self {
        EdgeRoute {
            rendered: pop.to_string(),
        }
    }

    pub fn render(&self) -> &str {
        &self.rendered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_single_hop() {
        let pop = PopId::parse("bom1").unwrap();
        assert_eq!(EdgeRoute::landed(&pop).render(), "bom1");
    }
}
