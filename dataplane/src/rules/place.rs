//! Positions in the model: which item of a [`Config`](super::Config), and
//! which of its fields. The validator reports every problem at a place,
//! and a source's [`Provenance`](super::Provenance) says where that place
//! came from.

use std::fmt;

/// One item of the model: a section, or an entry of a list, by its index
/// in the model (`Service(2)` is `config.services[2]`).
///
/// New kinds of item (health checks) become new variants; a source's
/// provenance learns to locate them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Item {
    /// `[gateway]`.
    Gateway,
    /// `[daemon]`.
    Daemon,
    /// `[flows]`.
    Flows,
    /// `[health]`.
    Health,
    /// `interfaces[i]`.
    Interface(usize),
    /// `neighbours[i]`.
    Neighbour(usize),
    /// `services[i]`.
    Service(usize),
    /// `services[service].backends[backend]`.
    Backend {
        /// The service's index.
        service: usize,
        /// The backend's index in its service.
        backend: usize,
    },
    /// `[routing]`: routing by client, gateway-wide.
    Routing,
    /// `[ingress]`: the bogon prefixes.
    Ingress,
    /// `routing.classes[i]`: a client class.
    ClientClass(usize),
    /// `services[i].canary`: a service's gated launch.
    Canary(usize),
    /// `services[service].paths[path]`: a distribution path.
    Path {
        /// The service's index.
        service: usize,
        /// The path's index in its service.
        path: usize,
    },
}

/// An item, or one field of it: the field is named by its key in a config
/// file (`weight`, `maglev_table_size`), and for a list-valued field
/// (`daemon.cores`) may name one element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Place {
    /// The item.
    pub item: Item,
    /// The field's key; none for the item as a whole.
    pub key: Option<&'static str>,
    /// The element of a list-valued field, from 0.
    pub element: Option<usize>,
}

impl Place {
    /// The item as a whole.
    pub const fn item(item: Item) -> Place {
        Place {
            item,
            key: None,
            element: None,
        }
    }

    /// The field `key` of `item`.
    pub const fn field(item: Item, key: &'static str) -> Place {
        Place {
            item,
            key: Some(key),
            element: None,
        }
    }

    /// Element `element` of the list-valued field `key` of `item`.
    pub const fn element(item: Item, key: &'static str, element: usize) -> Place {
        Place {
            item,
            key: Some(key),
            element: Some(element),
        }
    }

    /// The field `key` of service `i`.
    pub const fn service(i: usize, key: &'static str) -> Place {
        Place::field(Item::Service(i), key)
    }

    /// The field `key` of backend `backend` of service `service`.
    pub const fn backend(service: usize, backend: usize, key: &'static str) -> Place {
        Place::field(Item::Backend { service, backend }, key)
    }
}

impl fmt::Display for Place {
    /// `services[2].backends[0].weight`, `daemon.cores[1]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.item {
            Item::Gateway => f.write_str("gateway")?,
            Item::Daemon => f.write_str("daemon")?,
            Item::Flows => f.write_str("flows")?,
            Item::Health => f.write_str("health")?,
            Item::Interface(i) => write!(f, "interfaces[{i}]")?,
            Item::Neighbour(i) => write!(f, "neighbours[{i}]")?,
            Item::Service(i) => write!(f, "services[{i}]")?,
            Item::Backend { service, backend } => {
                write!(f, "services[{service}].backends[{backend}]")?;
            }
            Item::Routing => f.write_str("routing")?,
            Item::Ingress => f.write_str("ingress")?,
            Item::ClientClass(i) => write!(f, "routing.classes[{i}]")?,
            Item::Canary(i) => write!(f, "services[{i}].canary")?,
            Item::Path { service, path } => write!(f, "services[{service}].paths[{path}]")?,
        }
        if let Some(key) = self.key {
            write!(f, ".{key}")?;
        }
        if let Some(element) = self.element {
            write!(f, "[{element}]")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_a_path_into_the_model() {
        assert_eq!(
            Place::backend(2, 0, "weight").to_string(),
            "services[2].backends[0].weight"
        );
        assert_eq!(
            Place::element(Item::Daemon, "cores", 1).to_string(),
            "daemon.cores[1]"
        );
        assert_eq!(Place::item(Item::Neighbour(3)).to_string(), "neighbours[3]");
        assert_eq!(
            Place::element(Item::ClientClass(4), "prefix", 0).to_string(),
            "routing.classes[4].prefix[0]"
        );
        assert_eq!(
            Place::element(
                Item::Path {
                    service: 1,
                    path: 2
                },
                "backends",
                3
            )
            .to_string(),
            "services[1].paths[2].backends[3]"
        );
        assert_eq!(
            Place::field(Item::Canary(0), "share").to_string(),
            "services[0].canary.share"
        );
    }
}
