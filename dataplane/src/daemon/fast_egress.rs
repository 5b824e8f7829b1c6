//! Which ports the kernel fast path may send frames out of, kept equal to
//! what the kernel says its devices can transmit.
//!
//! In native mode the kernel drops a frame that an XDP program sends to a
//! device that cannot transmit XDP frames (`xdp::features`), after the
//! program returned and counted it forwarded: a veth whose peer has
//! neither an XDP program nor GRO on is such a device, and a connection
//! whose packets the fast path sends there loses them all, retransmissions
//! included. So each program instance sends only out of the ports its
//! `egress_ready` bits name (every port in generic mode, where frames go
//! out as socket buffers), and hands the rest to the workers; an instance
//! with no such port has its fast path off. The bits are set before the
//! fast path is turned on and read again every second by the main loop,
//! so a peer that gains or loses GRO or a program is followed within
//! about a second.

use crate::neigh::LinkInfo;
use crate::xdp::features::{egress_ready, FeatureReader};
use crate::xdp::{XdpFilter, XdpMode};

/// What a warning says a device needs to take XDP frames.
const NEEDS: &str = "a veth needs an XDP program or GRO on its peer";

/// The ports' devices, what was last read of them, and the reader.
pub(super) struct FastEgress {
    names: Vec<String>,
    ifindex: Vec<u32>,
    reader: Option<FeatureReader>,
    /// Why the reader could not be opened, said once.
    reader_error_said: bool,
    /// Per port: whether its device transmitted XDP frames when last
    /// read (`None`: not read yet).
    transmits: Vec<Option<bool>>,
}

impl FastEgress {
    /// For the interfaces `links`, in port order.
    pub(super) fn new(links: &[LinkInfo]) -> FastEgress {
        FastEgress {
            names: links.iter().map(|l| l.name.clone()).collect(),
            ifindex: links.iter().map(|l| l.ifindex).collect(),
            reader: None,
            reader_error_said: false,
            transmits: vec![None; links.len()],
        }
    }

    /// Reads every port's device; a device that cannot be read counts as
    /// one that does not transmit (its connections stay with the
    /// workers). Logs each change after the first reading
    /// ([`Self::log_start`] tells that one).
    pub(super) fn read(&mut self, any_native: bool) -> Vec<bool> {
        if self.reader.is_none() {
            match FeatureReader::open() {
                Ok(reader) => self.reader = Some(reader),
                Err(e) if any_native && !self.reader_error_said => {
                    self.reader_error_said = true;
                    tracing::warn!(
                        error = %e,
                        "cannot tell which interfaces transmit XDP frames; the kernel fast path sends none out in native mode"
                    );
                }
                Err(_) => {}
            }
        }
        let mut now = Vec::with_capacity(self.ifindex.len());
        for port in 0..self.ifindex.len() {
            let ifindex = self.ifindex.get(port).copied().unwrap_or(0);
            let transmits = match self.reader.as_mut().map(|r| r.read(ifindex)) {
                Some(Ok(features)) => features.can_transmit(),
                Some(Err(e)) => {
                    tracing::debug!(ifindex, error = %e, "reading XDP features");
                    false
                }
                None => false,
            };
            self.note(port, transmits, any_native);
            now.push(transmits);
        }
        now
    }

    /// Records port `port`'s reading; logs it when it changed.
    fn note(&mut self, port: usize, transmits: bool, any_native: bool) {
        let Some(last) = self.transmits.get_mut(port) else {
            return;
        };
        let before = last.replace(transmits);
        if before.is_none() || before == Some(transmits) || !any_native {
            return;
        }
        let interface = self.names.get(port).map_or("?", String::as_str);
        if transmits {
            tracing::info!(
                interface,
                "interface transmits XDP frames now; the kernel fast path sends through it"
            );
        } else {
            tracing::warn!(
                interface,
                "interface cannot transmit XDP frames any more ({NEEDS}); the kernel fast path hands its packets to the workers"
            );
        }
    }

    /// Says, once at start, where the fast path sends frames and, for the
    /// interfaces it does not, why.
    pub(super) fn log_start(&self, filters: &[XdpFilter]) {
        if !filters.iter().any(|f| f.mode() == XdpMode::Native) {
            tracing::info!("kernel fast path sends through every interface (generic XDP)");
            return;
        }
        let (ready, not): (Vec<_>, Vec<_>) = self
            .names
            .iter()
            .zip(&self.transmits)
            .partition(|(_, transmits)| **transmits == Some(true));
        let names = |v: Vec<(&String, &Option<bool>)>| {
            v.into_iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if ready.is_empty() {
            tracing::warn!(
                interfaces = names(not),
                "kernel fast path off: no interface can transmit XDP frames ({NEEDS}); every packet goes to the workers"
            );
        } else if !not.is_empty() {
            tracing::warn!(
                sends_through = names(ready),
                hands_up_for = names(not),
                "kernel fast path on for some interfaces only: the others cannot transmit XDP frames ({NEEDS}); their packets go to the workers"
            );
        } else {
            tracing::info!(
                sends_through = names(ready),
                "kernel fast path sends through every interface"
            );
        }
    }

    /// Reads the devices again and gives every filter (in port order) the
    /// ports it may send out of.
    pub(super) fn apply(&mut self, filters: &mut [XdpFilter]) {
        let any_native = filters.iter().any(|f| f.mode() == XdpMode::Native);
        let transmits = self.read(any_native);
        for filter in filters.iter_mut() {
            let ready = egress_ready(filter.mode(), &transmits);
            if let Err(e) = filter.set_fast_egress_ready(ready) {
                tracing::warn!(interface = filter.interface(), error = %e, "kernel fast path's egress ports");
            }
        }
    }
}
