//! Decoding routing by client from a file: `[routing]`, a service's
//! `zone_priority`, `[services.canary]` and `[[services.paths]]`. As for
//! the rest, only what cannot be put in the model is reported here (a
//! prefix that is not `ADDR/LEN`, a number the model's type cannot hold);
//! the validator judges the rest.

use toml::Spanned;

use super::super::parse;
use super::super::place::{Item, Place};
use super::super::raw::{RawRouting, RawService};
use super::super::validate::{of_service, CANARY_SHARE, SUBSET_MEMORY};
use super::super::{
    Canary, ClientClass, ClientPrefix, DistributionPath, RoutingSettings, ServiceRouting,
    DEFAULT_SUBSET_MEMORY_LIMIT,
};
use super::Decoder;

/// The strings of a list.
fn strings(list: &Spanned<Vec<Spanned<String>>>) -> Vec<String> {
    list.get_ref().iter().map(|s| s.get_ref().clone()).collect()
}

/// What stands in for a prefix that could not be read.
fn no_prefix() -> ClientPrefix {
    ClientPrefix::host([0, 0, 0, 0].into())
}

impl Decoder {
    /// A prefix at `place`, described as `what`.
    fn prefix(&mut self, place: Place, value: &Spanned<String>, what: &str) -> ClientPrefix {
        self.read(place, value, |t| parse::client_prefix(t, what))
            .unwrap_or_else(no_prefix)
    }

    /// `[routing]`.
    pub(super) fn routing(&mut self, raw: &RawRouting) -> RoutingSettings {
        let classes = raw
            .classes
            .iter()
            .enumerate()
            .map(|(i, class)| {
                let place = Place::field(Item::ClientClass(i), "prefix");
                ClientClass {
                    prefix: self.prefix(place, &class.prefix, "client class prefix"),
                    set: class.set.as_ref().map(|s| s.get_ref().clone()),
                    zone: class.zone.as_ref().map(|s| s.get_ref().clone()),
                }
            })
            .collect();
        let limit = raw.subset_memory_limit.as_ref().and_then(|value| {
            let place = Place::field(Item::Routing, "subset_memory_limit");
            let key = "routing.subset_memory_limit";
            self.int(value, place, SUBSET_MEMORY, key, String::new)
        });
        RoutingSettings {
            classes,
            zone_priority: raw.zone_priority.as_ref().map(strings).unwrap_or_default(),
            subset_memory_limit: limit.unwrap_or(DEFAULT_SUBSET_MEMORY_LIMIT),
        }
    }

    /// Service `i`'s part of routing by client.
    pub(super) fn service_routing(&mut self, i: usize, raw: &RawService) -> ServiceRouting {
        let name = raw.name.get_ref();
        let canary = raw.canary.as_ref().map(|canary| {
            let item = Item::Canary(i);
            let share = canary.share.as_ref().and_then(|value| {
                let place = Place::field(item, "share");
                self.int(value, place, CANARY_SHARE, "canary.share", || {
                    of_service(name)
                })
            });
            let clients = canary
                .clients
                .iter()
                .enumerate()
                .map(|(k, client)| {
                    let place = Place::element(item, "clients", k);
                    self.prefix(place, client, "canary client prefix")
                })
                .collect();
            Canary {
                group: canary.group.get_ref().clone(),
                share_bp: share.unwrap_or(0),
                clients,
            }
        });
        let paths = raw
            .paths
            .iter()
            .enumerate()
            .map(|(p, path)| {
                let place = Place::field(
                    Item::Path {
                        service: i,
                        path: p,
                    },
                    "client",
                );
                DistributionPath {
                    client: self.prefix(place, &path.client, "path client prefix"),
                    backends: strings(&path.backends),
                }
            })
            .collect();
        ServiceRouting {
            zone_priority: raw.zone_priority.as_ref().map(strings),
            canary,
            paths,
        }
    }
}
