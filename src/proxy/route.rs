//! `x-edge-route`: the PoPs a request passed through, in order. The first is
//! where the client landed, the last produced the response.

use crate::domain::PopId;

pub const HEADER: &str = "x-edge-route";

#[derive(Debug, Clone, Default)]
pub struct EdgeRoute {
    hops: Vec<String>,
}

impl EdgeRoute {
    /// The route of a request that landed here from a client. Whatever the
    /// client claimed is discarded: only a peer PoP may extend a route.
    pub fn landed(pop: &PopId) -> Self {
        EdgeRoute {
            hops: vec![pop.to_string()],
        }
    }

    pub fn render(&self) -> String {
        self.hops.join(", ")
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
