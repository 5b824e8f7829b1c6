//! Routing by client, compiled: each service's subsets with their own
//! scheduler tables, a plan (ordered subsets) per client profile, the
//! canary draw, and the client-class table — what a new flow of a routed
//! service walks, once, when it is placed.
//!
//! What the policies mean (which backends a profile may use, in what
//! order) is [`crate::rules::routing`]'s; this module turns it into
//! endpoint ids and tables. A subset's table is built over its members
//! that take new flows at the build (alive and weighted in a healthy
//! service, every weighted one in panic mode or failing open), so a step
//! whose members are all down has an empty table and is passed over
//! without a look at liveness; a member that died since the build is
//! skipped by the skip rule within its subset ([`super::skip`]).
//!
//! Established flows never come here: the decision is made when a flow
//! is created, and its endpoint is then held by the flow table.

use std::sync::Arc;

use hashbrown::HashMap;

use super::maglev::{reduce, MaglevBackend, MaglevTable};
use super::skip::{next_alive, Lookup};
use super::subset_slots::PackedSlots;
use super::wrr::build_schedule;
use super::EndpointId;
use crate::route::{ClassId, ClientAddr, ClientClasses, Prefix};
use crate::rules::routing::{PlanSpec, ServiceSubsets, SetStage, Side, ZoneStep};
use crate::rules::{ClientPrefix, Config, Scheduler};

/// One subset of a service's backends, with its own scheduler table.
#[derive(Clone, Debug)]
pub struct SubsetTable {
    /// Every member (weight 0 included), in identity order.
    members: Arc<[EndpointId]>,
    /// The members with weight > 0, in identity order: the skip rule's
    /// walk.
    weighted: Arc<[EndpointId]>,
    /// The (endpoint, weight) pairs the table was built over.
    scheduled: Arc<[(EndpointId, u32)]>,
    /// A Maglev table (`maglev`, `sh`) or a weighted round-robin cycle
    /// (`wrr`), looked up by hash within a subset.
    table: SubsetLookup,
}

#[derive(Clone, Debug)]
enum SubsetLookup {
    Maglev(MaglevTable),
    /// A Maglev table of at most 256 endpoints whose slots are indices
    /// into `ids`, packed in as few bits as they need
    /// ([`PackedSlots`]): the same pick as the full table for every hash,
    /// in 1/32 to 1/4 of its memory, so that the tables of a service's many
    /// subsets stay in cache between new flows.
    Indexed {
        slots: PackedSlots,
        ids: Arc<[EndpointId]>,
    },
    Schedule(Arc<[EndpointId]>),
}

impl SubsetLookup {
    /// `table` as a subset keeps it: indexed when its endpoints fit in a
    /// byte.
    fn maglev(table: MaglevTable) -> SubsetLookup {
        let mut ids: Vec<EndpointId> = table.slots().to_vec();
        ids.sort_unstable();
        ids.dedup();
        let indices: Vec<u8> = table
            .slots()
            .iter()
            // Found, and below 256 when packed: `ids` holds every slot's
            // id once.
            .map(|id| ids.binary_search(id).unwrap_or(0) as u8)
            .collect();
        match PackedSlots::pack(&indices, ids.len()) {
            Some(slots) => SubsetLookup::Indexed {
                slots,
                ids: Arc::from(ids),
            },
            None => SubsetLookup::Maglev(table),
        }
    }
}

impl SubsetTable {
    #[inline]
    fn lookup(&self) -> Lookup<'_> {
        match &self.table {
            SubsetLookup::Maglev(t) => Lookup::Maglev(t),
            SubsetLookup::Indexed { slots, ids } => Lookup::Indexed { slots, ids },
            SubsetLookup::Schedule(s) => Lookup::Schedule(s),
        }
    }

    /// The scheduler's pick for `hash`; `None` when no member took new
    /// flows at the build.
    #[inline]
    pub fn pick(&self, hash: u64) -> Option<EndpointId> {
        match &self.table {
            SubsetLookup::Maglev(t) => t.lookup(hash),
            SubsetLookup::Indexed { slots, ids } => {
                let index = slots.get(reduce(hash, slots.len()))?;
                ids.get(index).copied()
            }
            SubsetLookup::Schedule(s) => s.get(reduce(hash, s.len())).copied(),
        }
    }

    /// The skip rule within the subset.
    pub fn next_alive(
        &self,
        hash: u64,
        alive: impl FnMut(EndpointId) -> bool,
    ) -> Option<EndpointId> {
        next_alive(self.lookup(), &self.weighted, hash, alive)
    }

    /// Every member, in identity order.
    pub fn members(&self) -> &[EndpointId] {
        &self.members
    }

    /// The members the table was built over, with their weights.
    pub fn scheduled(&self) -> &[(EndpointId, u32)] {
        &self.scheduled
    }

    /// Bytes its table and lists take.
    pub fn heap_bytes(&self) -> usize {
        let table = match &self.table {
            SubsetLookup::Maglev(t) => 4 * t.size(),
            SubsetLookup::Indexed { slots, ids } => slots.heap_bytes() + 4 * ids.len(),
            SubsetLookup::Schedule(s) => 4 * s.len(),
        };
        table + 4 * (self.members.len() + self.weighted.len()) + 8 * self.scheduled.len()
    }
}

/// One step of a plan: a subset, and what it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteStep {
    /// Index into the service's subsets.
    pub subset: u32,
    /// Canary or stable side.
    pub side: Side,
    /// Its place in the zone order.
    pub zone: ZoneStep,
}

/// The steps a profile's new flows try, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePlan {
    /// How the SET stage chose the candidates.
    pub set: SetStage,
    /// Whether the candidates leave out some backend of the service: then
    /// finding nothing alive fails closed.
    pub restricted: bool,
    /// Steps of a flow not drawn for the canary.
    pub stable: Box<[RouteStep]>,
    /// Steps of a flow drawn for the canary; `None` without one.
    pub canary: Option<Box<[RouteStep]>>,
    /// Whether the plan is the service whole, in one step, with no
    /// canary: then the service's own scheduler places the flow, exactly
    /// as for a service that does not route by client (for `wrr`, the
    /// worker's cycle).
    pub plain: bool,
}

/// A service's gated launch, compiled.
#[derive(Clone, Debug)]
pub struct CanaryDraw {
    /// The canary group's name.
    pub group: String,
    /// Share of new flows, in basis points.
    pub share_bp: u32,
    /// Clients that always go to the canary (the table's classes are
    /// indices into the configured list).
    pub clients: ClientClasses,
}

impl CanaryDraw {
    /// The draw of a flow, 0..10 000: from the flow hash's low 32 bits,
    /// which the schedulers' tables (indexed by the hash's high bits, a
    /// table of at most 2^17 slots) do not use; so the draw and the pick
    /// are independent, and every gateway with the same rules draws the
    /// same. Raising the share from p to q sends to the canary exactly the
    /// flows whose draw lies in p..q.
    #[inline]
    pub fn draw(hash: u64) -> u32 {
        (((hash & 0xFFFF_FFFF) * 10_000) >> 32) as u32
    }

    /// Whether a flow of `client` with flow hash `hash` goes to the
    /// canary, and why: `Some(true)` by its client prefix, `Some(false)`
    /// by the draw, `None` not.
    #[inline]
    pub fn drawn(&self, client: ClientAddr, hash: u64) -> Option<bool> {
        if !self.clients.is_empty() && self.clients.lookup(client).is_some() {
            return Some(true);
        }
        (Self::draw(hash) < self.share_bp).then_some(false)
    }
}

/// A service's routing by client, compiled.
#[derive(Clone, Debug)]
pub struct ServiceRoutes {
    subsets: Box<[SubsetTable]>,
    plans: Box<[RoutePlan]>,
    /// The plan of each profile; empty when every profile has plan 0.
    profile_plan: Box<[u32]>,
    canary: Option<CanaryDraw>,
    /// The zone priority its plans were made with, for `explain`.
    zone_priority: Box<[String]>,
}

impl ServiceRoutes {
    /// The zone priority its plans were made with.
    pub fn zone_priority(&self) -> &[String] {
        &self.zone_priority
    }

    /// The plan of client profile `profile`.
    #[inline]
    pub fn plan(&self, profile: u32) -> Option<&RoutePlan> {
        let plan = if self.profile_plan.is_empty() {
            0
        } else {
            *self.profile_plan.get(profile as usize)?
        };
        self.plans.get(plan as usize)
    }

    /// Subset `index`.
    #[inline]
    pub fn subset(&self, index: u32) -> Option<&SubsetTable> {
        self.subsets.get(index as usize)
    }

    /// Every subset.
    pub fn subsets(&self) -> &[SubsetTable] {
        &self.subsets
    }

    /// The gated launch, if any.
    #[inline]
    pub fn canary(&self) -> Option<&CanaryDraw> {
        self.canary.as_ref()
    }

    /// Bytes its subsets' tables take.
    pub fn heap_bytes(&self) -> usize {
        self.subsets.iter().map(SubsetTable::heap_bytes).sum()
    }
}

/// One backend of a service as the routing build sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Member {
    pub address: [u8; 16],
    pub port: u16,
    pub weight: u32,
    pub id: EndpointId,
    /// Whether it takes new flows at the build, in the service's mode.
    pub scheduled: bool,
}

/// Compiles `spec` for a service whose config backend `j` is
/// `members[j]` (`None` for a duplicate dropped by the build), reusing the
/// tables of `previous` where a subset schedules the same endpoints.
pub(super) fn compile_routes(
    spec: &ServiceSubsets,
    members: &[Option<Member>],
    scheduler: Scheduler,
    table_size: u32,
    canary: Option<&crate::rules::Canary>,
    zone_priority: &[String],
    previous: Option<&ServiceRoutes>,
) -> ServiceRoutes {
    let reusable: HashMap<&[(EndpointId, u32)], &SubsetTable> = previous
        .map(|p| p.subsets.iter().map(|s| (&*s.scheduled, s)).collect())
        .unwrap_or_default();
    let subsets = spec
        .subsets
        .iter()
        .map(|indices| {
            let mut list: Vec<Member> = indices
                .iter()
                .filter_map(|&j| members.get(j as usize).copied().flatten())
                .collect();
            list.sort_unstable_by_key(|m| (m.address, m.port));
            list.dedup_by_key(|m| m.id);
            let scheduled: Arc<[(EndpointId, u32)]> = list
                .iter()
                .filter(|m| m.weight > 0 && m.scheduled)
                .map(|m| (m.id, m.weight))
                .collect();
            let members: Arc<[EndpointId]> = list.iter().map(|m| m.id).collect();
            let weighted: Arc<[EndpointId]> =
                list.iter().filter(|m| m.weight > 0).map(|m| m.id).collect();
            if let Some(old) = reusable.get(&*scheduled) {
                if old.members == members && same_kind(&old.table, scheduler, table_size) {
                    return (*old).clone();
                }
            }
            let table = match scheduler {
                Scheduler::Wrr => SubsetLookup::Schedule(build_schedule(&scheduled)),
                // Fan-out sends to every member: no table to pick by.
                Scheduler::Fanout(_) => SubsetLookup::Schedule(Arc::from([])),
                Scheduler::Maglev | Scheduler::Sh => {
                    let backends: Vec<MaglevBackend> = list
                        .iter()
                        .filter(|m| m.weight > 0 && m.scheduled)
                        .map(|m| MaglevBackend {
                            address: m.address,
                            port: m.port,
                            weight: m.weight,
                            id: m.id,
                        })
                        .collect();
                    SubsetLookup::maglev(MaglevTable::build(&backends, table_size))
                }
            };
            SubsetTable {
                members,
                weighted,
                scheduled,
                table,
            }
        })
        .collect();
    let plans = spec.plans.iter().map(compile_plan).collect();
    ServiceRoutes {
        subsets,
        plans,
        profile_plan: spec.profile_plan.clone().into_boxed_slice(),
        canary: canary.map(|c| CanaryDraw {
            group: c.group.clone(),
            share_bp: c.share_bp,
            clients: prefix_table(c.clients.iter().copied()),
        }),
        zone_priority: zone_priority.into(),
    }
}

/// Whether a kept table is of the kind and size the service wants now.
fn same_kind(table: &SubsetLookup, scheduler: Scheduler, size: u32) -> bool {
    match (table, scheduler) {
        (SubsetLookup::Schedule(_), Scheduler::Wrr | Scheduler::Fanout(_)) => true,
        (SubsetLookup::Maglev(t), Scheduler::Maglev | Scheduler::Sh) => {
            t.size() == size as usize || t.size() == 0
        }
        (SubsetLookup::Indexed { slots, .. }, Scheduler::Maglev | Scheduler::Sh) => {
            slots.len() == size as usize || slots.is_empty()
        }
        _ => false,
    }
}

fn compile_plan(spec: &PlanSpec) -> RoutePlan {
    let steps = |steps: &[crate::rules::routing::Step]| -> Box<[RouteStep]> {
        steps
            .iter()
            .map(|s| RouteStep {
                subset: s.subset,
                side: s.side,
                zone: s.zone,
            })
            .collect()
    };
    let plain = spec.canary.is_none()
        && !spec.restricted
        && matches!(spec.stable.as_slice(), [only] if only.zone == ZoneStep::All);
    RoutePlan {
        set: spec.set,
        restricted: spec.restricted,
        stable: steps(&spec.stable),
        canary: spec.canary.as_deref().map(steps),
        plain,
    }
}

/// A prefix of the model as the lookup tables take it; `None` for one the
/// validator refuses.
pub fn table_prefix(prefix: ClientPrefix) -> Option<Prefix> {
    Prefix::new(prefix.address, prefix.len).ok()
}

/// A longest-match table of `prefixes`, each's class its position. A
/// prefix given twice keeps its first entry (the validator refuses that).
fn prefix_table(prefixes: impl Iterator<Item = ClientPrefix>) -> ClientClasses {
    let mut seen = hashbrown::HashSet::new();
    let entries: Vec<(Prefix, ClassId)> = prefixes
        .enumerate()
        .filter_map(|(i, p)| Some((table_prefix(p)?, ClassId::new(u32::try_from(i).ok()?)?)))
        .filter(|(p, _)| seen.insert(*p))
        .collect();
    ClientClasses::build(entries).unwrap_or_default()
}

/// The gateway's client classes, compiled: a client's class by longest
/// prefix, and each class's profile.
#[derive(Clone, Debug, Default)]
pub struct ClientRouting {
    classes: ClientClasses,
    /// The profile of each configured class.
    class_profile: Box<[u32]>,
    /// Each profile's (SET, zone), profile 0 being no class.
    profiles: Box<[(Option<String>, Option<String>)]>,
    /// Each configured class's prefix.
    prefixes: Box<[ClientPrefix]>,
}

impl ClientRouting {
    /// The classes of `config`.
    pub fn build(config: &Config) -> ClientRouting {
        let profiles = crate::rules::routing::profiles(config);
        let classes = &config.routing.classes;
        ClientRouting {
            classes: prefix_table(classes.iter().map(|c| c.prefix)),
            class_profile: profiles.of_class.clone().into_boxed_slice(),
            profiles: profiles
                .list
                .iter()
                .map(|p| (p.set.map(String::from), p.zone.map(String::from)))
                .collect(),
            prefixes: classes.iter().map(|c| c.prefix).collect(),
        }
    }

    /// The class of `client` (its index among the configured classes),
    /// and its profile (0 for none).
    #[inline]
    pub fn classify(&self, client: ClientAddr) -> (Option<u32>, u32) {
        if self.classes.is_empty() {
            return (None, 0);
        }
        match self.classes.lookup(client) {
            Some(class) => {
                let profile = self.class_profile.get(class.get() as usize).copied();
                (Some(class.get()), profile.unwrap_or(0))
            }
            None => (None, 0),
        }
    }

    /// The prefix of configured class `class`.
    pub fn prefix(&self, class: u32) -> Option<ClientPrefix> {
        self.prefixes.get(class as usize).copied()
    }

    /// The SET and zone of profile `profile`.
    pub fn profile(&self, profile: u32) -> Option<(Option<&str>, Option<&str>)> {
        self.profiles
            .get(profile as usize)
            .map(|(s, z)| (s.as_deref(), z.as_deref()))
    }

    /// How many classes there are.
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maglev(ids: impl Iterator<Item = EndpointId>, size: u32) -> MaglevTable {
        let backends: Vec<MaglevBackend> = ids
            .map(|id| MaglevBackend {
                address: [
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0xff,
                    0xff,
                    198,
                    18,
                    (id >> 8) as u8,
                    id as u8,
                ],
                port: 8080,
                weight: 1 + id % 3,
                id: 1_000 + id,
            })
            .collect();
        MaglevTable::build(&backends, size)
    }

    #[test]
    fn an_indexed_subset_table_picks_as_its_maglev_table_does() {
        let cases = [
            (3u32, 1_009u32),
            (1, 1_009),
            (2, 65_537),
            (5, 1_009),
            (17, 65_537),
            (256, 65_537),
            (257, 65_537),
            (0, 1_009),
        ];
        for (count, size) in cases {
            let table = maglev(0..count, size);
            let lookup = SubsetLookup::maglev(table.clone());
            assert_eq!(
                matches!(lookup, SubsetLookup::Indexed { .. }),
                count <= 256,
                "{count} endpoints"
            );
            let subset = SubsetTable {
                members: Arc::from([]),
                weighted: Arc::from([]),
                scheduled: Arc::from([]),
                table: lookup,
            };
            for h in 0..20_000u64 {
                let hash = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                assert_eq!(subset.pick(hash), table.lookup(hash), "{count}: {hash}");
                // The skip rule's derived lookups read the same table.
                let dead = |id: EndpointId| id.is_multiple_of(2);
                assert_eq!(
                    next_alive(subset.lookup(), &[], hash, dead),
                    next_alive(Lookup::Maglev(&table), &[], hash, dead)
                );
            }
        }
    }

    #[test]
    fn the_canary_draw_reads_the_low_32_bits_only_and_spans_0_to_9999() {
        assert_eq!(CanaryDraw::draw(0), 0);
        assert_eq!(CanaryDraw::draw(0xFFFF_FFFF), 9_999);
        assert_eq!(CanaryDraw::draw(1 << 31), 5_000);
        // The high bits (those the tables index by) change nothing.
        for low in [0u64, 1, 0x1234_5678, 0xFFFF_FFFF] {
            for high in [0u64, 1, 0xDEAD_BEEF] {
                assert_eq!(CanaryDraw::draw(high << 32 | low), CanaryDraw::draw(low));
            }
        }
        // Monotone in the low bits: raising a share only adds flows.
        let mut last = 0;
        for low in (0..=0xFFFF_FFFFu64).step_by(0x0100_0001) {
            let d = CanaryDraw::draw(low);
            assert!(d >= last && d < 10_000);
            last = d;
        }
    }
}
