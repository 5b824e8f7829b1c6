//! Where each part of rules read from etcd came from: its key and the
//! revision its value was written at.

use crate::rules::{Item, Location, Place, Provenance, Unrecorded};

/// Where one part came from: an etcd key and the revision its value was
/// written at (the key's `mod_revision`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Origin {
    /// The key.
    pub key: String,
    /// The revision the value was written at.
    pub revision: i64,
}

impl Origin {
    /// The origin as the validator's location.
    pub fn location(&self) -> Location {
        Location::Etcd {
            key: self.key.clone(),
            revision: self.revision,
        }
    }
}

/// The provenance of a config whose first `base` services, and its other
/// sections, came from elsewhere (a file: `base_provenance` locates them)
/// and whose gateway settings (if `gateway` is given) and remaining
/// services came from etcd.
///
/// Services from etcd follow the base's in the model, in key order, so a
/// service in etcd that repeats a name or a listener of the base is the
/// one reported, at its key.
pub struct EtcdProvenance<'a> {
    base_provenance: &'a dyn Provenance,
    base: usize,
    gateway: Option<&'a Origin>,
    services: Services<'a>,
    /// Other parts from etcd (client classes, distribution paths), found
    /// when asked for; `None` for a part that is not etcd's.
    parts: Option<&'a dyn Fn(Item) -> Option<Origin>>,
}

/// The origins of the services from etcd.
enum Services<'a> {
    /// Listed, in order.
    Listed(&'a [Origin]),
    /// This many, each found when it is asked for.
    LookedUp {
        count: usize,
        origin: &'a dyn Fn(usize) -> Option<Origin>,
    },
}

impl<'a> EtcdProvenance<'a> {
    /// Services `base..` of the model came from `services`, in order; the
    /// gateway settings from `gateway`, if given; everything else is
    /// located by `base_provenance`.
    pub fn new(
        base_provenance: &'a dyn Provenance,
        base: usize,
        gateway: Option<&'a Origin>,
        services: &'a [Origin],
    ) -> Self {
        EtcdProvenance {
            base_provenance,
            base,
            gateway,
            services: Services::Listed(services),
            parts: None,
        }
    }

    /// The same, with the `count` services from etcd located by
    /// `origin(i)` (`i`, the index in the model) only when a problem is
    /// located at one: so that rules of many services cost nothing to
    /// locate until something is wrong.
    pub fn looked_up(
        base_provenance: &'a dyn Provenance,
        base: usize,
        gateway: Option<&'a Origin>,
        count: usize,
        origin: &'a dyn Fn(usize) -> Option<Origin>,
    ) -> Self {
        EtcdProvenance {
            base_provenance,
            base,
            gateway,
            services: Services::LookedUp { count, origin },
            parts: None,
        }
    }

    /// The same, with the other parts from etcd (client classes and
    /// distribution paths) located by `parts`, which answers `None` for
    /// one that is not etcd's.
    pub fn with_parts(mut self, parts: &'a dyn Fn(Item) -> Option<Origin>) -> Self {
        self.parts = Some(parts);
        self
    }

    /// The origin of another part, if it came from etcd.
    fn part(&self, item: Item) -> Option<Origin> {
        self.parts.and_then(|parts| parts(item))
    }

    /// The same, with nothing recorded for the base.
    pub fn over_unrecorded(
        base: usize,
        gateway: Option<&'a Origin>,
        services: &'a [Origin],
    ) -> Self {
        EtcdProvenance::new(&Unrecorded, base, gateway, services)
    }

    /// Whether service `i` of the model came from etcd.
    fn is_from_etcd(&self, i: usize) -> bool {
        i.checked_sub(self.base)
            .is_some_and(|n| match &self.services {
                Services::Listed(origins) => n < origins.len(),
                Services::LookedUp { count, .. } => n < *count,
            })
    }

    /// The origin of service `i` of the model, if it came from etcd.
    fn service(&self, i: usize) -> Option<Origin> {
        let n = i.checked_sub(self.base)?;
        match &self.services {
            Services::Listed(origins) => origins.get(n).cloned(),
            Services::LookedUp { count, origin } => (n < *count).then(|| origin(i)).flatten(),
        }
    }
}

impl Provenance for EtcdProvenance<'_> {
    fn locate(&self, place: Place) -> Location {
        let origin = match place.item {
            Item::Gateway => self.gateway.cloned(),
            Item::Service(i) | Item::Backend { service: i, .. } | Item::Canary(i) => {
                self.service(i)
            }
            other => self.part(other),
        };
        match origin {
            Some(origin) => origin.location(),
            None => self.base_provenance.locate(place),
        }
    }

    fn stand_in(&self, place: Place) -> Option<&str> {
        // A part from etcd is in the model only once it was read whole.
        let from_etcd = match place.item {
            Item::Gateway => self.gateway.is_some(),
            Item::Service(i) | Item::Backend { service: i, .. } | Item::Canary(i) => {
                self.is_from_etcd(i)
            }
            // Asked of every class and path the validator reads: finding
            // the part would cost what the rules hold, each time. The
            // base has no stand-in at a place it did not record.
            _ => false,
        };
        if from_etcd {
            None
        } else {
            self.base_provenance.stand_in(place)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_parts_are_located_at_their_keys_and_the_rest_by_the_base() {
        let gateway = Origin {
            key: "/fg/v1/rules/gateway".into(),
            revision: 3,
        };
        let services = [Origin {
            key: "/fg/v1/rules/services/web".into(),
            revision: 7,
        }];
        let provenance = EtcdProvenance::over_unrecorded(2, Some(&gateway), &services);
        assert_eq!(
            provenance
                .locate(Place::backend(2, 1, "weight"))
                .to_string(),
            "etcd key /fg/v1/rules/services/web at revision 7"
        );
        assert_eq!(
            provenance.locate(Place::service(2, "port")),
            services[0].location()
        );
        assert_eq!(
            provenance.locate(Place::service(1, "port")),
            Location::Unrecorded
        );
        assert_eq!(
            provenance.locate(Place::service(3, "port")),
            Location::Unrecorded
        );
        assert_eq!(
            provenance.locate(Place::field(Item::Gateway, "maglev_table_size")),
            gateway.location()
        );
        assert_eq!(
            provenance.locate(Place::item(Item::Flows)),
            Location::Unrecorded
        );
        assert_eq!(provenance.stand_in(Place::service(2, "port")), None);
    }
}
