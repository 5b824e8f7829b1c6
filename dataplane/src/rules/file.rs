//! The provenance of a config read from a file: every place of the model at
//! a line and column of the text.
//!
//! The raw TOML shape keeps the position of every value it read
//! (`toml::Spanned`), and model indices are raw indices, so the raw config
//! *is* the map: a place is located by following it into the raw config
//! when a problem is reported, and loading a valid file builds nothing
//! extra. Line starts are indexed once, on the first lookup, so that any
//! number of problems is located in time linear in the text.

mod routing;

use hashbrown::HashMap;
use std::cell::OnceCell;

use toml::Spanned;

use super::place::{Item, Place};
use super::provenance::{Location, Provenance};
use super::raw::RawConfig;

/// Where each part of a model read from a config file came from.
pub struct FileProvenance<'t> {
    file: String,
    lines: LineIndex<'t>,
    raw: RawConfig,
    stand_ins: HashMap<Place, String>,
}

impl<'t> FileProvenance<'t> {
    /// The provenance of the model decoded from `raw`, read from `text`
    /// (called `file`), with its stand-ins.
    pub(super) fn new(
        text: &'t str,
        file: &str,
        raw: RawConfig,
        stand_ins: HashMap<Place, String>,
    ) -> Self {
        FileProvenance {
            file: file.to_owned(),
            lines: LineIndex::new(text),
            raw,
            stand_ins,
        }
    }

    /// The byte offset where the text of `place` starts: its field's value
    /// if the file sets it, otherwise the value that names its item.
    fn offset(&self, place: Place) -> Option<usize> {
        let raw = &self.raw;
        let key = place.key.unwrap_or("");
        match place.item {
            Item::Gateway => match key {
                "maglev_table_size" => start(raw.gateway.maglev_table_size.as_ref()),
                _ => None,
            },
            Item::Daemon => self.daemon_offset(key, place.element),
            Item::Flows => {
                let flows = &raw.flows;
                start(match key {
                    "capacity" => flows.capacity.as_ref(),
                    "tcp_syn_timeout" => flows.tcp_syn_timeout.as_ref(),
                    "tcp_established_timeout" => flows.tcp_established_timeout.as_ref(),
                    "tcp_closing_timeout" => flows.tcp_closing_timeout.as_ref(),
                    "udp_timeout" => flows.udp_timeout.as_ref(),
                    _ => None,
                })
            }
            Item::Health => match key {
                "initial" => start(raw.health.initial.as_ref()),
                key => raw.health.check().offset(key),
            },
            Item::Interface(i) => self.interface_offset(i, key, place.element),
            Item::Neighbour(i) => {
                let neighbour = raw.neighbours.get(i)?;
                match key {
                    "mac" => start(Some(&neighbour.mac)),
                    "interface" => start(neighbour.interface.as_ref()),
                    _ => None,
                }
                .or_else(|| start(Some(&neighbour.address)))
            }
            Item::Service(i) => {
                let service = raw.services.get(i)?;
                match key {
                    "protocol" => start(Some(&service.protocol)),
                    "vip" => start(Some(&service.vip)),
                    "port" => start(Some(&service.port)),
                    "scheduler" => start(service.scheduler.as_ref()),
                    "fanout_replies" => start(service.fanout_replies.as_ref()),
                    "maglev_table_size" => start(service.maglev_table_size.as_ref()),
                    "on_backend_down" => start(service.on_backend_down.as_ref()),
                    "panic_threshold" => start(service.panic_threshold.as_ref()),
                    "when_all_down" => start(service.when_all_down.as_ref()),
                    "announce" => start(service.announce.as_ref()),
                    "syn_proxy" => start(service.syn_proxy.as_ref()),
                    "syn_proxy_auto_syns_per_s" => {
                        start(service.syn_proxy_auto_syns_per_s.as_ref())
                    }
                    "heartbeat_ttl" => start(service.heartbeat_ttl.as_ref()),
                    "heartbeat_token" => start(service.heartbeat_token.as_ref()),
                    "health.port" => start(service.health.as_ref().and_then(|h| h.port.as_ref())),
                    "health.source" => {
                        start(service.health.as_ref().and_then(|h| h.source.as_ref()))
                    }
                    key if key.starts_with("limits.") => {
                        service.limits.as_ref().and_then(|l| l.offset(key))
                    }
                    key if key.starts_with("health.") => key
                        .strip_prefix("health.")
                        .zip(service.health.as_ref())
                        .and_then(|(key, health)| health.check().offset(key)),
                    _ => routing::service_offset(service, place),
                }
                .or_else(|| start(Some(&service.name)))
            }
            Item::Backend { service, backend } => {
                let backend = raw.services.get(service)?.backends.get(backend)?;
                match key {
                    "port" => start(Some(&backend.port)),
                    "weight" => start(backend.weight.as_ref()),
                    "zone" => start(backend.zone.as_ref()),
                    "set" => start(backend.set.as_ref()),
                    "group" => start(backend.group.as_ref()),
                    "heartbeat_ttl" => start(backend.heartbeat_ttl.as_ref()),
                    "health.kind" => start(backend.health.as_ref().and_then(|h| h.kind.as_ref())),
                    "health.port" => start(backend.health.as_ref().and_then(|h| h.port.as_ref())),
                    "name" => start(backend.name.as_ref()),
                    "max_connections" => start(backend.max_connections.as_ref()),
                    "resume_connections" => start(backend.resume_connections.as_ref())
                        .or(start(backend.max_connections.as_ref())),
                    _ => None,
                }
                .or_else(|| start(Some(&backend.address)))
            }
            Item::Routing | Item::ClientClass(_) | Item::Canary(_) | Item::Path { .. } => {
                self.routing_offset(place)
            }
            Item::Ingress => {
                let bogons = raw.ingress.bogons.as_ref()?;
                match place.element {
                    Some(k) => start(bogons.get_ref().get(k)).or_else(|| start(Some(bogons))),
                    None => start(Some(bogons)),
                }
            }
        }
    }

    /// The offset of an `[[interfaces]]` value; the entry's name for a
    /// value it does not set.
    fn interface_offset(&self, i: usize, key: &str, element: Option<usize>) -> Option<usize> {
        let interface = self.raw.interfaces.get(i)?;
        match key {
            "mac" => start(interface.mac.as_ref()),
            "vlans" => interface.vlans.as_ref().and_then(|list| {
                element
                    .and_then(|k| start(list.get_ref().get(k)))
                    .or_else(|| start(Some(list)))
            }),
            "untagged" => start(interface.untagged.as_ref()),
            "egress_vlan" => start(interface.egress_vlan.as_ref()),
            _ => None,
        }
        .or_else(|| start(Some(&interface.name)))
    }

    /// The offset of a `[daemon]` value.
    fn daemon_offset(&self, key: &str, element: Option<usize>) -> Option<usize> {
        let daemon = &self.raw.daemon;
        if key == "cores" {
            let cores = daemon.cores.as_ref()?;
            return match element {
                Some(i) => start(cores.get_ref().get(i)),
                None => start(Some(cores)),
            };
        }
        let number = match key {
            "batch" => daemon.batch.as_ref(),
            "frame_size" => daemon.frame_size.as_ref(),
            "frame_count" => daemon.frame_count.as_ref(),
            "rx_ring_size" => daemon.rx_ring_size.as_ref(),
            "tx_ring_size" => daemon.tx_ring_size.as_ref(),
            "fill_ring_size" => daemon.fill_ring_size.as_ref(),
            "completion_ring_size" => daemon.completion_ring_size.as_ref(),
            "control_idle_timeout" => daemon.control_idle_timeout.as_ref(),
            "heartbeat_rate" => daemon.heartbeat_rate.as_ref(),
            "heartbeat_burst" => daemon.heartbeat_burst.as_ref(),
            "health_max_in_flight" => daemon.health_max_in_flight.as_ref(),
            "metrics_socket_mode" => daemon.metrics_socket_mode.as_ref(),
            _ => None,
        };
        let text = match key {
            "idle" => daemon.idle.as_ref(),
            "bind_mode" => daemon.bind_mode.as_ref(),
            "xdp_mode" => daemon.xdp_mode.as_ref(),
            "fast_path" => daemon.fast_path.as_ref(),
            "control_socket" => daemon.control_socket.as_ref(),
            "metrics_address" => daemon.metrics_address.as_ref(),
            "metrics_socket_group" => daemon.metrics_socket_group.as_ref(),
            "log_format" => daemon.log_format.as_ref(),
            "log_level" => daemon.log_level.as_ref(),
            "heartbeat_address" => daemon.heartbeat_address.as_ref(),
            _ => None,
        };
        start(number).or_else(|| start(text))
    }
}

impl Provenance for FileProvenance<'_> {
    /// A place at its line and column; a section's value the file does not
    /// set (a default) at the top of the file.
    fn locate(&self, place: Place) -> Location {
        let (line, column) = self
            .offset(place)
            .map_or((1, 1), |offset| self.lines.position(offset));
        Location::File {
            file: self.file.clone(),
            line,
            column,
        }
    }

    fn stand_in(&self, place: Place) -> Option<&str> {
        // A loadable file has no stand-ins: no lookups on that path.
        if self.stand_ins.is_empty() {
            return None;
        }
        self.stand_ins.get(&place).map(String::as_str)
    }
}

/// Where a value's text starts.
fn start<T>(value: Option<&Spanned<T>>) -> Option<usize> {
    value.map(|v| v.span().start)
}

/// Line and column of byte offsets into a text, by an index of line starts
/// built on first use.
pub(super) struct LineIndex<'t> {
    text: &'t str,
    starts: OnceCell<Vec<usize>>,
}

impl<'t> LineIndex<'t> {
    /// An index of `text` (built on first use).
    pub(super) fn new(text: &'t str) -> Self {
        LineIndex {
            text,
            starts: OnceCell::new(),
        }
    }

    /// Line and column (both from 1, the column in characters) of a byte
    /// offset. An offset past the end, or inside a character, counts as far
    /// as the text goes.
    pub(super) fn position(&self, offset: usize) -> (usize, usize) {
        let text = self.text;
        let mut end = offset.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let starts = self.starts.get_or_init(|| {
            std::iter::once(0)
                .chain(
                    text.bytes()
                        .enumerate()
                        .filter(|&(_, b)| b == b'\n')
                        .map(|(i, _)| i + 1),
                )
                .collect()
        });
        // The number of lines starting at or before `end`; the first always does.
        let line = starts.partition_point(|&s| s <= end);
        let line_start = starts.get(line.saturating_sub(1)).copied().unwrap_or(0);
        let column = text.get(line_start..end).map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_counts_lines_and_characters() {
        let lines = LineIndex::new("ab\ncdé\nf");
        assert_eq!(lines.position(0), (1, 1));
        assert_eq!(lines.position(2), (1, 3));
        assert_eq!(lines.position(3), (2, 1));
        // 'é' is two bytes: the newline after it is byte 7, 'f' byte 8.
        assert_eq!(lines.position(7), (2, 4));
        assert_eq!(lines.position(8), (3, 1));
        // Inside 'é' (byte 6) counts up to its start.
        assert_eq!(lines.position(6), (2, 3));
        assert_eq!(lines.position(1000), (3, 2));
        assert_eq!(LineIndex::new("").position(0), (1, 1));
        assert_eq!(LineIndex::new("a\n").position(2), (2, 1));
    }
}
