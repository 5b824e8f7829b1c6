//! What routing by client means over the model: a client's *profile* (the
//! SET and zone of its class), and for each service the *subsets* of its
//! backends that a profile's new flows can be placed on, in the order they
//! are tried (a *plan*).
//!
//! This is the one statement of the policies' order and fallbacks (issue
//! 10, points 3 to 6) that the rest reads: the validator counts the
//! subsets' memory against the cap, and the snapshot compiles a scheduler
//! table for each subset and a plan for each profile. A new flow then only
//! walks its plan.
//!
//! For a client of profile `(set, zone)` of a service:
//!
//! 1. **SET** ([`set_candidates`]): with no SET, or if no backend of the
//!    service has a SET, every backend. A client of `name.area.group` gets
//!    the backends of exactly that SET if there are any (alive or not);
//!    else those of `name.area.*`; else those of no SET; else none (its
//!    flows fail closed). A client of `name.area.*` gets every backend of
//!    `name.area` (any group, `*` included), else those of no SET, else
//!    none. The candidates never include another SET's backends.
//! 2. **Canary**: with a canary, the candidates split into the canary
//!    group's and the rest. A flow drawn for the canary tries the canary
//!    side first and the rest after; any other flow tries the rest first
//!    and the canary side only when nothing else is alive.
//! 3. **Zone** ([`zone_steps`]), within each side: a client with no zone
//!    (or a service with no zoned backend) takes the side whole; a client
//!    of zone `Z` tries `Z`, then each zone of the priority list in order,
//!    then backends of no zone, then any.
//!
//! Subsets are sets of backends (indices into `Service::backends`,
//! ascending), deduplicated: two steps or plans that name the same backends
//! share one subset, and a step that repeats an earlier step's subset is
//! dropped from a plan. Empty subsets are never steps.

use hashbrown::HashMap;

use super::{Config, Scheduler, Service, SetName};

/// What a client is, for routing: the SET and zone of its class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Profile<'a> {
    /// Its SET name (as configured; a [`SetName`] once validated).
    pub set: Option<&'a str>,
    /// Its zone.
    pub zone: Option<&'a str>,
}

/// The distinct profiles of a config's client classes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profiles<'a> {
    /// Profile 0 is a client with no class (no SET, no zone); then each
    /// other (SET, zone) pair of the classes, in order of first use.
    pub list: Vec<Profile<'a>>,
    /// The profile of each class, by its index in
    /// [`RoutingSettings::classes`](super::RoutingSettings::classes).
    pub of_class: Vec<u32>,
}

/// The profiles of `config`'s classes.
pub fn profiles(config: &Config) -> Profiles<'_> {
    let mut list = vec![Profile::default()];
    let mut index: HashMap<Profile<'_>, u32> = HashMap::new();
    index.insert(Profile::default(), 0);
    let of_class = config
        .routing
        .classes
        .iter()
        .map(|class| {
            let profile = Profile {
                set: class.set.as_deref(),
                zone: class.zone.as_deref(),
            };
            *index.entry(profile).or_insert_with(|| {
                list.push(profile);
                u32::try_from(list.len() - 1).unwrap_or(u32::MAX)
            })
        })
        .collect();
    Profiles { list, of_class }
}

/// How the SET stage chose a client's candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetStage {
    /// No SET applies: the client has none, or no backend of the service
    /// has one. Every backend is a candidate.
    None,
    /// The client's own SET (for `name.area.*`, every group of its area).
    Own,
    /// No backend in the client's SET: those of `name.area.*`.
    Area,
    /// Neither: the backends of no SET.
    Unset,
    /// None of those exist: the client's flows fail closed.
    Closed,
}

impl SetStage {
    /// `none`, `own`, `area`, `unset` or `closed`.
    pub const fn name(self) -> &'static str {
        match self {
            SetStage::None => "none",
            SetStage::Own => "own",
            SetStage::Area => "area",
            SetStage::Unset => "unset",
            SetStage::Closed => "closed",
        }
    }
}

/// Which side of a canary split a step is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The backends outside the canary group (all of them, without a
    /// canary).
    Stable,
    /// The canary group's backends.
    Canary,
}

/// What a step is, in the zone order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ZoneStep {
    /// No zone preference (the client has no zone, or the service no
    /// zoned backend): the side whole.
    All,
    /// The client's own zone.
    Local,
    /// The zone at this index of the priority list.
    Next(u16),
    /// Backends of no zone.
    NoZone,
    /// Any backend of the side: the last resort.
    Any,
}

/// One step of a plan: a subset to schedule over if any of it is alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Step {
    /// Index into [`ServiceSubsets::subsets`].
    pub subset: u32,
    /// The side it is on.
    pub side: Side,
    /// Where it is in the zone order.
    pub zone: ZoneStep,
}

/// The steps a profile's new flows try, in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PlanSpec {
    /// How the SET stage chose the candidates.
    pub set: SetStage,
    /// Whether the candidates leave out some backend of the service: then
    /// a flow that finds nothing alive in its steps fails closed rather
    /// than fall to the service's `when_all_down` (which would pick from
    /// every backend, another SET's included).
    pub restricted: bool,
    /// The steps of a flow not drawn for the canary.
    pub stable: Vec<Step>,
    /// The steps of a flow drawn for the canary; `None` when the service
    /// has no canary or none of the candidates is in its group (the draw
    /// then changes nothing).
    pub canary: Option<Vec<Step>>,
}

/// A service's subsets and plans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSubsets {
    /// Distinct, non-empty sets of backends, each ascending.
    pub subsets: Vec<Vec<u32>>,
    /// Distinct plans.
    pub plans: Vec<PlanSpec>,
    /// The plan of each profile, by profile index; empty when the plan
    /// does not depend on the client (no backend has a SET or zone), and
    /// every client has plan 0.
    pub profile_plan: Vec<u32>,
}

impl ServiceSubsets {
    /// The plan of profile `profile`.
    pub fn plan_of(&self, profile: u32) -> Option<&PlanSpec> {
        let plan = if self.profile_plan.is_empty() {
            0
        } else {
            *self.profile_plan.get(profile as usize)?
        };
        self.plans.get(plan as usize)
    }
}

/// Whether any backend of `service` has a SET.
fn has_sets(service: &Service) -> bool {
    service.backends.iter().any(|b| b.set.is_some())
}

/// Whether any backend of `service` has a zone.
fn has_zones(service: &Service) -> bool {
    service.backends.iter().any(|b| b.zone.is_some())
}

/// Whether `service` routes by client at all: a backend has a SET or a
/// zone, or the service has a canary. (Distribution paths are looked up
/// beside the snapshot, for every service.)
pub fn routes_by_client(service: &Service) -> bool {
    has_sets(service) || has_zones(service) || service.routing.canary.is_some()
}

/// The SET stage for a client of SET `set` (as configured) of `service`:
/// how its candidates were chosen, and the candidates (backend indices,
/// ascending; empty only when closed).
pub fn set_candidates(service: &Service, set: Option<&str>) -> (SetStage, Vec<u32>) {
    let all = || (0..service.backends.len() as u32).collect();
    let Some(client) = set.filter(|_| has_sets(service)) else {
        return (SetStage::None, all());
    };
    let Some(client) = SetName::parse(client) else {
        // Refused by the validator; the safe reading is "no backend".
        return (SetStage::Closed, Vec::new());
    };
    let backends_where = |keep: &dyn Fn(Option<SetName<'_>>, bool) -> bool| -> Vec<u32> {
        service
            .backends
            .iter()
            .enumerate()
            .filter(|(_, b)| {
                let labelled = b.set.is_some();
                keep(b.set.as_deref().and_then(SetName::parse), labelled)
            })
            .map(|(j, _)| j as u32)
            .collect()
    };
    let own: Vec<u32> = if client.is_area_wide() {
        backends_where(&|s, _| s.is_some_and(|s| s.same_area(&client)))
    } else {
        backends_where(&|s, _| s == Some(client))
    };
    if !own.is_empty() {
        return (SetStage::Own, own);
    }
    if !client.is_area_wide() {
        let area =
            backends_where(&|s, _| s.is_some_and(|s| s.same_area(&client) && s.is_area_wide()));
        if !area.is_empty() {
            return (SetStage::Area, area);
        }
    }
    let unset = backends_where(&|_, labelled| !labelled);
    if unset.is_empty() {
        (SetStage::Closed, Vec::new())
    } else {
        (SetStage::Unset, unset)
    }
}

/// The zone order over `members` (one side) for a client of `zone`: the
/// (members, step) pairs to try, empty ones left out and repeats of an
/// earlier set dropped.
pub fn zone_steps(
    service: &Service,
    members: &[u32],
    zone: Option<&str>,
    priority: &[String],
) -> Vec<(Vec<u32>, ZoneStep)> {
    if members.is_empty() {
        return Vec::new();
    }
    let Some(zone) = zone else {
        return vec![(members.to_vec(), ZoneStep::All)];
    };
    let zone_of = |j: u32| {
        service
            .backends
            .get(j as usize)
            .and_then(|b| b.zone.as_deref())
    };
    let in_zone = |z: Option<&str>| -> Vec<u32> {
        members
            .iter()
            .copied()
            .filter(|&j| zone_of(j) == z)
            .collect()
    };
    let mut steps = vec![(in_zone(Some(zone)), ZoneStep::Local)];
    for (k, next) in priority.iter().enumerate() {
        if next != zone {
            let k = u16::try_from(k).unwrap_or(u16::MAX);
            steps.push((in_zone(Some(next)), ZoneStep::Next(k)));
        }
    }
    steps.push((in_zone(None), ZoneStep::NoZone));
    steps.push((members.to_vec(), ZoneStep::Any));
    let mut kept: Vec<(Vec<u32>, ZoneStep)> = Vec::with_capacity(steps.len());
    for (set, step) in steps {
        if !set.is_empty() && !kept.iter().any(|(s, _)| *s == set) {
            kept.push((set, step));
        }
    }
    kept
}

/// The subsets and plans of `service` for clients of `profiles`, with the
/// gateway's zone priority `gateway_priority`; `None` when the service
/// does not route by client ([`routes_by_client`]), so that every flow is
/// its scheduler's over the whole service.
pub fn service_subsets(
    service: &Service,
    profiles: &[Profile<'_>],
    gateway_priority: &[String],
) -> Option<ServiceSubsets> {
    if !routes_by_client(service) {
        return None;
    }
    let priority = service.zone_priority(gateway_priority);
    let by_class = has_sets(service) || has_zones(service);
    let zoned = has_zones(service);
    let any_set = has_sets(service);
    let mut build = Builder {
        service,
        priority,
        subsets: Vec::new(),
        subset_index: HashMap::new(),
        plans: Vec::new(),
        plan_index: HashMap::new(),
    };
    if !by_class {
        build.plan(Profile::default());
        return Some(build.finish(Vec::new()));
    }
    // Profiles that differ only in what the service ignores share a plan.
    let mut memo: HashMap<Profile<'_>, u32> = HashMap::new();
    let profile_plan = profiles
        .iter()
        .map(|p| {
            let key = Profile {
                set: p.set.filter(|_| any_set),
                zone: p.zone.filter(|_| zoned),
            };
            if let Some(&plan) = memo.get(&key) {
                return plan;
            }
            let plan = build.plan(key);
            memo.insert(key, plan);
            plan
        })
        .collect();
    Some(build.finish(profile_plan))
}

/// State of one [`service_subsets`].
struct Builder<'a> {
    service: &'a Service,
    priority: &'a [String],
    subsets: Vec<Vec<u32>>,
    subset_index: HashMap<Vec<u32>, u32>,
    plans: Vec<PlanSpec>,
    plan_index: HashMap<PlanSpec, u32>,
}

impl Builder<'_> {
    /// The plan of `profile` (the parts the service ignores cleared), its
    /// index.
    fn plan(&mut self, profile: Profile<'_>) -> u32 {
        let (set, candidates) = set_candidates(self.service, profile.set);
        let restricted = candidates.len() != self.service.backends.len();
        let spec = match &self.service.routing.canary {
            None => PlanSpec {
                set,
                restricted,
                stable: self.steps(&[(&candidates, Side::Stable)], profile.zone),
                canary: None,
            },
            Some(canary) => {
                let in_group = |j: &u32| {
                    self.service
                        .backends
                        .get(*j as usize)
                        .and_then(|b| b.group.as_deref())
                        == Some(canary.group.as_str())
                };
                let (canary_side, stable_side): (Vec<u32>, Vec<u32>) =
                    candidates.iter().copied().partition(in_group);
                let stable = self.steps(
                    &[(&stable_side, Side::Stable), (&canary_side, Side::Canary)],
                    profile.zone,
                );
                let canary = (!canary_side.is_empty()).then(|| {
                    self.steps(
                        &[(&canary_side, Side::Canary), (&stable_side, Side::Stable)],
                        profile.zone,
                    )
                });
                PlanSpec {
                    set,
                    restricted,
                    stable,
                    canary,
                }
            }
        };
        if let Some(&index) = self.plan_index.get(&spec) {
            return index;
        }
        let index = u32::try_from(self.plans.len()).unwrap_or(u32::MAX);
        self.plan_index.insert(spec.clone(), index);
        self.plans.push(spec);
        index
    }

    /// The steps over `sides` in order, each in the zone order, a subset
    /// seen on an earlier step left out.
    fn steps(&mut self, sides: &[(&Vec<u32>, Side)], zone: Option<&str>) -> Vec<Step> {
        let mut steps: Vec<Step> = Vec::new();
        for &(members, side) in sides {
            for (set, step) in zone_steps(self.service, members, zone, self.priority) {
                let subset = self.subset(set);
                if !steps.iter().any(|s| s.subset == subset) {
                    steps.push(Step {
                        subset,
                        side,
                        zone: step,
                    });
                }
            }
        }
        steps
    }

    fn subset(&mut self, members: Vec<u32>) -> u32 {
        if let Some(&index) = self.subset_index.get(&members) {
            return index;
        }
        let index = u32::try_from(self.subsets.len()).unwrap_or(u32::MAX);
        self.subset_index.insert(members.clone(), index);
        self.subsets.push(members);
        index
    }

    fn finish(self, profile_plan: Vec<u32>) -> ServiceSubsets {
        ServiceSubsets {
            subsets: self.subsets,
            plans: self.plans,
            profile_plan,
        }
    }
}

/// Longest weighted round-robin cycle a table holds, before its weights
/// are scaled down (`table::MAX_SCHEDULE_LEN` is this value).
pub const MAX_WRR_CYCLE: usize = 65_536;

/// Bytes a subset's scheduler table and member lists take at most (with
/// every member alive): a Maglev table of the service's size (`maglev`,
/// `sh`) or a weighted round-robin cycle (`wrr`), 4 bytes an entry, and
/// 12 bytes per weighted member (its id in the skip rule's walk, and its
/// id and weight as the table was built over). A subset of every backend
/// of the service is the service's own table and costs nothing more.
pub fn subset_bytes(service: &Service, members: &[u32]) -> u64 {
    if members.len() == service.backends.len() {
        return 0;
    }
    let weights: Vec<u32> = members
        .iter()
        .filter_map(|&j| service.backends.get(j as usize))
        .map(|b| b.weight)
        .filter(|&w| w > 0)
        .collect();
    if weights.is_empty() {
        return 0;
    }
    let entries = match service.scheduler {
        Scheduler::Maglev | Scheduler::Sh => u64::from(service.maglev_table_size),
        Scheduler::Wrr => wrr_cycle_bound(&weights),
        // Fan-out walks the subset's members; its table goes unused.
        Scheduler::Fanout(_) => 0,
    };
    4 * entries + 12 * weights.len() as u64
}

/// The longest weighted round-robin cycle `weights` (all > 0) can make:
/// their sum over their greatest common divisor; above
/// [`MAX_WRR_CYCLE`] the weights are scaled down, and the cycle is then at
/// most that long (or one entry per member, if there are more).
fn wrr_cycle_bound(weights: &[u32]) -> u64 {
    let sum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let cap = MAX_WRR_CYCLE as u64;
    if sum > cap {
        return cap.max(weights.len() as u64);
    }
    let gcd = weights.iter().fold(0u64, |g, &w| gcd(g, u64::from(w)));
    sum / gcd.max(1)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests;
