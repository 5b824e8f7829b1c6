//! VLAN tags, by each interface's setting (`table::PortVlans`): a frame
//! tagged with an id its interface accepts is handled as its untagged
//! frame would be, and a frame leaving an interface carries that
//! interface's `egress_vlan` or no tag. So a tag received on one segment
//! never reaches another, and the reply to a tagged client is tagged with
//! its interface's id again.
//!
//! Per frame, only while some interface has a VLAN setting (otherwise a
//! batch takes the plain path, and a tagged frame is refused where it
//! would be forwarded, as before):
//! - one tag with an accepted id: the tag is taken out (the bytes after it
//!   move up four), the frame decided untagged; if it goes to the kernel
//!   after all (not the gateway's, e.g. the kernel's own VLAN device's
//!   traffic) the tag is put back, so the kernel sees the frame it was
//!   sent;
//! - one tag with another id, or two tags (QinQ: never the gateway's):
//!   decided as is, so refused where it would be forwarded
//!   (`vlan_not_configured`) and passed otherwise;
//! - no tag on an interface with `untagged = false`: refused the same way;
//! - a frame sent out of an interface with an `egress_vlan` gets that tag
//!   (the bytes after the MACs move down four): it needs four bytes of
//!   room past its end, which every frame memory has for frames of an
//!   Ethernet MTU; one that has none is dropped (`vlan_no_room`).
//!
//! The moves cost a copy of the frame's bytes: a few instructions per
//! 32 bytes (docs/benchmarks.md has the count).

use super::{Context, DropReason, Parsed, Pipeline, Verdict};
use crate::wire::ethernet::ethertype;
use crate::wire::L3;

/// Where a frame's (first) tag starts: after the two MACs.
const TAG_AT: usize = 12;
/// An 802.1Q tag: TPID and TCI.
const VLAN_TAG_LEN: usize = 4;

impl Pipeline {
    /// Decides one frame of a gateway with VLAN settings and counts it:
    /// `room[..len]` is the frame, `room` the bytes it may grow into.
    /// Returns the verdict and the length of what is to be sent (the
    /// frame, or the answer written over it).
    pub(super) fn count_vlan(
        &mut self,
        room: &mut [u8],
        len: usize,
        parsed: Parsed,
        cx: &mut Context<'_>,
    ) -> (Verdict, usize) {
        let accepted = match &parsed.meta {
            Some(Ok(meta)) if meta.vlan_tags == 1 && meta.l3 != L3::Arp => {
                tci(room).is_some_and(|tci| cx.snapshot.vlans().port(cx.ingress).accepts(tci))
            }
            _ => false,
        };
        // Untagged, or a tag that is refused (or passed) as it is.
        let untagged = if accepted {
            strip(room, len, parsed)
        } else {
            None
        };
        let Some(untagged) = untagged else {
            let (verdict, out) = self.count_answered(room, len, parsed, cx);
            return self.tag_egress(room, out, verdict, cx);
        };
        // `strip` moved the tag's bytes to the end: kept to put back.
        let mut tag = [0u8; VLAN_TAG_LEN];
        tag.copy_from_slice(&room[len - VLAN_TAG_LEN..len]);
        let refuse_untagged = std::mem::replace(&mut cx.refuse_untagged, false);
        let (verdict, out) = self.count_answered(room, len - VLAN_TAG_LEN, untagged, cx);
        cx.refuse_untagged = refuse_untagged;
        if verdict == Verdict::Pass {
            // The kernel gets the frame it was sent, tag and all.
            room.copy_within(TAG_AT..len - VLAN_TAG_LEN, TAG_AT + VLAN_TAG_LEN);
            room[TAG_AT..TAG_AT + VLAN_TAG_LEN].copy_from_slice(&tag);
            return (verdict, len);
        }
        self.tag_egress(room, out, verdict, cx)
    }

    /// [`count`](Self::count) of `room[..len]`, and the length of what is
    /// to be sent: the frame's, or the answer's written over it.
    fn count_answered(
        &mut self,
        room: &mut [u8],
        len: usize,
        parsed: Parsed,
        cx: &mut Context<'_>,
    ) -> (Verdict, usize) {
        let answers = self.answers.len();
        let frame = &mut room[..len];
        let at = frame.as_ptr() as usize;
        let verdict = self.count(frame, &parsed, cx);
        let mut out = len;
        if self.answers.len() > answers {
            if let Some(&(answered, answer_len)) = self.answers.last() {
                if answered == at {
                    out = answer_len as usize;
                    self.answers.pop();
                }
            }
        }
        (verdict, out)
    }

    /// Tags a frame `room[..len]` sent out of a port with an
    /// `egress_vlan`; returns the verdict and the length to send.
    fn tag_egress(
        &mut self,
        room: &mut [u8],
        len: usize,
        verdict: Verdict,
        cx: &Context<'_>,
    ) -> (Verdict, usize) {
        let Verdict::Transmit(port) = verdict else {
            return (verdict, len);
        };
        let Some(id) = cx.snapshot.vlans().port(port).egress() else {
            return (verdict, len);
        };
        if !push_tag(room, len, id) {
            let reason = DropReason::VlanNoRoom;
            // Counted as forwarded by `count`: taken back (wrapping add).
            self.counters.forwarded.add(u64::MAX);
            self.counters.drop_for(reason);
            return (Verdict::Drop(reason), len);
        }
        (verdict, len + VLAN_TAG_LEN)
    }
}

/// Puts an 802.1Q tag of `id` into the frame `room[..len]`, after its
/// MACs; false (nothing changed) without four bytes of room past it.
pub(super) fn push_tag(room: &mut [u8], len: usize, id: u16) -> bool {
    if len < TAG_AT + 2 || room.len() < len + VLAN_TAG_LEN {
        return false;
    }
    room.copy_within(TAG_AT..len, TAG_AT + VLAN_TAG_LEN);
    room[TAG_AT..TAG_AT + 2].copy_from_slice(&ethertype::VLAN.to_be_bytes());
    room[TAG_AT + 2..TAG_AT + 4].copy_from_slice(&(id & 0xfff).to_be_bytes());
    true
}

/// Takes the tag the frame `bytes` was sent with out again, if it has one
/// its parse `meta` does not know of (a fan-out original tagged for its
/// own egress port): its copies are rewritten by that parse.
pub(super) fn untag_sent(bytes: &mut Vec<u8>, meta: &crate::wire::PacketMeta) {
    let tagged = bytes
        .get(TAG_AT..TAG_AT + 2)
        .is_some_and(|t| ethertype::is_vlan_tag(u16::from_be_bytes([t[0], t[1]])));
    if tagged && meta.vlan_tags == 0 && bytes.len() >= TAG_AT + VLAN_TAG_LEN {
        bytes.drain(TAG_AT..TAG_AT + VLAN_TAG_LEN);
    }
}

/// The TCI of the frame's tag.
#[inline]
fn tci(frame: &[u8]) -> Option<u16> {
    let bytes = frame.get(TAG_AT + 2..TAG_AT + 4)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// Takes the one tag out of the frame `room[..len]` whose parse is
/// `parsed`: the bytes after it move up, the tag's four bytes land at
/// the frame's old end (`room[len - 4..len]`), and the parse of the
/// untagged frame is returned. `None` (nothing changed) if the parse does
/// not describe a tagged frame of that length.
fn strip(room: &mut [u8], len: usize, parsed: Parsed) -> Option<Parsed> {
    let Some(Ok(mut meta)) = parsed.meta else {
        return None;
    };
    let tag_end = TAG_AT + VLAN_TAG_LEN;
    if meta.vlan_tags != 1 || len < tag_end || room.len() < len {
        return None;
    }
    let mut tag = [0u8; VLAN_TAG_LEN];
    tag.copy_from_slice(&room[TAG_AT..tag_end]);
    room.copy_within(tag_end..len, TAG_AT);
    room[len - VLAN_TAG_LEN..len].copy_from_slice(&tag);
    let shift = VLAN_TAG_LEN as u16;
    meta.vlan_tags = 0;
    meta.l3_offset -= shift;
    meta.l4_offset = meta.l4_offset.saturating_sub(shift);
    meta.ip_end -= shift;
    Some(Parsed {
        meta: Some(Ok(meta)),
        ..parsed
    })
}
