//! `x-edge-route`: the PoPs a request passed through, in order. The first is
//! where the client landed, the last produced the response.

use crate::domain::PopId;

pub const HEADER: &str = "x-edge-route";

/// Kept rendered: it is written on every request and response.
#[derive(Debug, Clone, Default)]
pub struct EdgeRoute {
    rendered: String,
}

/// Why a relayed request's route is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteRefusal {
    /// The chain already passed through this PoP.
    Loop(String),
    /// The chain's last hop is not the peer that sent it.
    NotFromSender { chain: String, sender: PopId },
    /// Not a list of PoP ids.
    Malformed(String),
}

impl std::fmt::Display for RouteRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteRefusal::Loop(chain) => {
                write!(f, "loop: the route {chain} passed through here already")
            }
            RouteRefusal::NotFromSender { chain, sender } => {
                write!(
                    f,
                    "the route {chain} does not end with {sender}, the peer that sent it"
                )
            }
            RouteRefusal::Malformed(why) => write!(f, "malformed x-edge-route: {why}"),
        }
    }
}

impl EdgeRoute {
    /// The route of a request that landed here from a client. Whatever the
    /// client claimed is discarded: only a peer PoP may extend a route.
    pub fn landed(pop: &PopId) -> Self {
        EdgeRoute {
            rendered: pop.to_string(),
        }
    }

    /// The route of a request relayed in by the authenticated peer
    /// `sender`: its chain, which must end with `sender` and must not hold
    /// `here` yet, then `here`.
    pub fn relayed(chain: &str, sender: &PopId, here: &PopId) -> Result<Self, RouteRefusal> {
        let hops = chain
            .split(',')
            .map(|hop| PopId::parse(hop.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(RouteRefusal::Malformed)?;
        let shown = hops
            .iter()
            .map(PopId::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if hops.contains(here) {
            return Err(RouteRefusal::Loop(shown));
        }
        if hops.last() != Some(sender) {
            return Err(RouteRefusal::NotFromSender {
                chain: shown,
                sender: sender.clone(),
            });
        }
        Ok(EdgeRoute {
            rendered: format!("{shown}, {here}"),
        })
    }

    pub fn contains(&self, pop: &PopId) -> bool {
        self.rendered.split(", ").any(|hop| hop == pop.as_str())
    }

    pub fn render(&self) -> &str {
        &self.rendered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pop(s: &str) -> PopId {
        PopId::parse(s).unwrap()
    }

    #[test]
    fn renders_single_hop() {
        assert_eq!(EdgeRoute::landed(&pop("bom1")).render(), "bom1");
    }

    #[test]
    fn a_relay_extends_the_chain_of_its_sender() {
        let route = EdgeRoute::relayed("fra1", &pop("fra1"), &pop("ams1")).unwrap();
        assert_eq!(route.render(), "fra1, ams1");
        assert!(route.contains(&pop("fra1")) && route.contains(&pop("ams1")));
        assert!(!route.contains(&pop("fra")));
        let longer = EdgeRoute::relayed("fra1,ams1", &pop("ams1"), &pop("lhr1")).unwrap();
        assert_eq!(longer.render(), "fra1, ams1, lhr1");
    }

    #[test]
    fn loops_forgeries_and_garbage_are_refused() {
        let here = pop("ams1");
        assert!(matches!(
            EdgeRoute::relayed("ams1, fra1", &pop("fra1"), &here),
            Err(RouteRefusal::Loop(_))
        ));
        assert!(matches!(
            EdgeRoute::relayed("lhr1", &pop("fra1"), &here),
            Err(RouteRefusal::NotFromSender { .. })
        ));
        for bad in ["", "fra1,,ams2", "FRA 1", "fra1\r\nx: y"] {
            assert!(
                matches!(
                    EdgeRoute::relayed(bad, &pop("fra1"), &here),
                    Err(RouteRefusal::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }
}
