//! Where routing by client's places are in a config file.

use toml::Spanned;

use super::super::place::{Item, Place};
use super::super::raw::RawService;
use super::{start, FileProvenance};

/// The element `element` of a list, or the list itself.
fn in_list(list: Option<&Spanned<Vec<Spanned<String>>>>, element: Option<usize>) -> Option<usize> {
    let list = list?;
    match element {
        Some(k) => start(list.get_ref().get(k)).or_else(|| start(Some(list))),
        None => start(Some(list)),
    }
}

impl FileProvenance<'_> {
    /// The offset of a place of routing by client; `None` for places of
    /// other items.
    pub(super) fn routing_offset(&self, place: Place) -> Option<usize> {
        let raw = &self.raw;
        let key = place.key.unwrap_or("");
        match place.item {
            Item::Routing => {
                let routing = &raw.routing;
                match key {
                    "zone_priority" => in_list(routing.zone_priority.as_ref(), place.element),
                    "subset_memory_limit" => start(routing.subset_memory_limit.as_ref()),
                    _ => None,
                }
            }
            Item::ClientClass(i) => {
                let class = raw.routing.classes.get(i)?;
                match key {
                    "set" => start(class.set.as_ref()),
                    "zone" => start(class.zone.as_ref()),
                    _ => None,
                }
                .or_else(|| start(Some(&class.prefix)))
            }
            Item::Canary(i) => {
                let canary = raw.services.get(i)?.canary.as_ref()?;
                match key {
                    "share" => start(canary.share.as_ref()),
                    "clients" => start(place.element.and_then(|k| canary.clients.get(k))),
                    _ => None,
                }
                .or_else(|| start(Some(&canary.group)))
            }
            Item::Path { service, path } => {
                let path = raw.services.get(service)?.paths.get(path)?;
                match key {
                    "backends" => in_list(Some(&path.backends), place.element),
                    _ => None,
                }
                .or_else(|| start(Some(&path.client)))
            }
            _ => None,
        }
    }
}

/// The offset of a service's routing key: its `zone_priority` (or an
/// element of it), or its first path for `paths`.
pub(super) fn service_offset(service: &RawService, place: Place) -> Option<usize> {
    match place.key? {
        "zone_priority" => in_list(service.zone_priority.as_ref(), place.element),
        "paths" => start(service.paths.first().map(|p| &p.client)),
        _ => None,
    }
}
