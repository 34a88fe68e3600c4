//! The coalescing planner: tags → as few read requests as the rules allow.
//!
//! [`coalesce`] is the pure core. Tags of one unit id, one area and one poll group,
//! sorted by address, are merged greedily into a request while the request stays within
//! the item limit (125 registers, 2000 coils, or less where a device taught us so) and no
//! hole between covered items is longer than the allowed gap. Every tag lands in exactly
//! one request. Greedy is minimal: a request is an address interval, any set of
//! requests can be rearranged so each covers a run of tags consecutive in address
//! order, and among such partitions extending each run as far as the rules allow never
//! needs more runs (the usual exchange argument for interval covering; the proptests
//! check it against a dynamic program).
//!
//! [`Plan`] adds adaptivity. When a device refuses a coalesced read, [`Plan::refused`]
//! learns from the exception, re-plans and returns the requests that replace the refused
//! one:
//! - "illegal data address" (02) on a request that reads through holes: the holes'
//!   addresses are remembered as unreadable and never bridged again (sparse devices);
//! - "illegal data address" without new holes, or "illegal data value" (03, the
//!   spec's answer to a quantity it does not accept): the item limit remembered for the
//!   unit and area is halved, never below the widest tag of the request.
//!
//! A request of a single tag is never split: the tag itself is at fault and is Bad.

use std::collections::{BTreeMap, BTreeSet};

use super::error::ExceptionCode;
use super::map::{Area, RegisterMap, Tag};

/// Planner settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanConfig {
    /// Longest run of unused registers one request may read through. Default 8.
    pub max_register_gap: u16,
    /// Longest run of unused coils/inputs one request may read through. Default 64.
    pub max_bit_gap: u16,
    /// Read every tag on its own (the naive plan; for comparison and broken devices).
    pub one_request_per_tag: bool,
}

impl Default for PlanConfig {
    fn default() -> Self {
        Self {
            max_register_gap: 8,
            max_bit_gap: 64,
            one_request_per_tag: false,
        }
    }
}

/// One read request of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    /// Unit id.
    pub unit_id: u8,
    /// Area (picks FC1, FC2, FC3 or FC4).
    pub area: Area,
    /// Poll group index.
    pub group: usize,
    /// First address.
    pub start: u16,
    /// Items to read.
    pub count: u16,
    /// Indexes of the tags it covers, into [`RegisterMap::tags`].
    pub tags: Vec<usize>,
}

/// An address interval to cover: `(start, width)`, width ≥ 1.
pub type Span = (u16, u16);

/// Merges spans into requests: returns `(start, count, span indexes)` per request.
///
/// Spans are taken in address order (ties by width); a span joins the current request
/// when the hole before it is at most `max_gap` items and the request then stays within
/// `max_count` items. A span wider than `max_count` gets a request of its own.
pub fn coalesce(spans: &[Span], max_count: u16, max_gap: u16) -> Vec<(u16, u16, Vec<usize>)> {
    coalesce_with(spans, max_count, max_gap, |_, _| true)
}

/// [`coalesce`] with a veto: a hole `[from, to)` is bridged only when `bridge(from, to)`.
pub fn coalesce_with(
    spans: &[Span],
    max_count: u16,
    max_gap: u16,
    bridge: impl Fn(u32, u32) -> bool,
) -> Vec<(u16, u16, Vec<usize>)> {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| (spans[i].0, spans[i].1, i));
    let mut out: Vec<(u16, u16, Vec<usize>)> = Vec::new();
    // Current request as (start, end exclusive) in u32 to avoid overflow at 65535.
    let mut cur: Option<(u32, u32, Vec<usize>)> = None;
    for i in order {
        let (s, w) = (u32::from(spans[i].0), u32::from(spans[i].1.max(1)));
        let e = s + w;
        cur = match cur.take() {
            Some((cs, ce, mut idx))
                if (s <= ce || (s <= ce + u32::from(max_gap) && bridge(ce, s)))
                    && e.max(ce) - cs <= u32::from(max_count) =>
            {
                idx.push(i);
                Some((cs, ce.max(e), idx))
            }
            Some((cs, ce, idx)) => {
                out.push((cs as u16, (ce - cs) as u16, idx));
                Some((s, e, vec![i]))
            }
            None => Some((s, e, vec![i])),
        };
    }
    if let Some((cs, ce, idx)) = cur {
        out.push((cs as u16, (ce - cs) as u16, idx));
    }
    out
}

/// What the planner learned about one unit and area.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Largest item count the device answers, when below the protocol's.
    pub max_count: Option<u16>,
    /// Addresses no tag covers that the device refuses to read: never bridged.
    pub unreadable: BTreeSet<u16>,
}

/// Learned limits per unit id and area.
pub type Learned = BTreeMap<(u8, Area), DeviceLimits>;

/// Plans the whole map: per poll group, unit id and area.
pub fn plan(map: &RegisterMap, cfg: PlanConfig, learned: &Learned) -> Vec<ReadRequest> {
    let mut buckets: BTreeMap<(usize, u8, Area), Vec<usize>> = BTreeMap::new();
    for (i, t) in map.tags().iter().enumerate() {
        buckets
            .entry((t.group, t.unit_id, t.area))
            .or_default()
            .push(i);
    }
    let mut out = Vec::new();
    for ((group, unit_id, area), idx) in buckets {
        out.extend(plan_bucket(
            map.tags(),
            &idx,
            (group, unit_id, area),
            cfg,
            learned,
        ));
    }
    out
}

fn plan_bucket(
    tags: &[Tag],
    idx: &[usize],
    (group, unit_id, area): (usize, u8, Area),
    cfg: PlanConfig,
    learned: &Learned,
) -> Vec<ReadRequest> {
    // Indexes that name no tag (a hand-made request) are dropped, never a panic.
    let idx: Vec<usize> = idx.iter().copied().filter(|&i| i < tags.len()).collect();
    let spans: Vec<Span> = idx
        .iter()
        .filter_map(|&i| tags.get(i))
        .map(|t| (t.address, t.width))
        .collect();
    let limits = learned.get(&(unit_id, area));
    let max_count = limits
        .and_then(|l| l.max_count)
        .unwrap_or(u16::MAX)
        .min(area.max_read());
    let (max_count, max_gap) = if cfg.one_request_per_tag {
        (1, 0)
    } else if area.is_bits() {
        (max_count, cfg.max_bit_gap)
    } else {
        (max_count, cfg.max_register_gap)
    };
    let bridge = |from: u32, to: u32| {
        limits.is_none_or(|l| {
            l.unreadable
                .range(from.min(65_535) as u16..=to.saturating_sub(1).min(65_535) as u16)
                .next()
                .is_none()
        })
    };
    coalesce_with(&spans, max_count, max_gap, bridge)
        .into_iter()
        .map(|(start, count, members)| ReadRequest {
            unit_id,
            area,
            group,
            start,
            count,
            tags: members.into_iter().map(|m| idx[m]).collect(),
        })
        .collect()
}

/// A plan that learns device limits.
#[derive(Debug, Clone)]
pub struct Plan {
    cfg: PlanConfig,
    learned: Learned,
    requests: Vec<ReadRequest>,
}

impl Plan {
    /// Plans `map` with nothing learned.
    pub fn new(map: &RegisterMap, cfg: PlanConfig) -> Self {
        Self::with_learned(map, cfg, Learned::new())
    }

    /// Plans `map` with limits learned earlier (e.g. kept across restarts).
    pub fn with_learned(map: &RegisterMap, cfg: PlanConfig, learned: Learned) -> Self {
        let requests = plan(map, cfg, &learned);
        Self {
            cfg,
            learned,
            requests,
        }
    }

    /// All requests.
    pub fn requests(&self) -> &[ReadRequest] {
        &self.requests
    }

    /// What was learned per unit and area.
    pub fn learned(&self) -> &Learned {
        &self.learned
    }

    /// Requests of one poll group.
    pub fn group(&self, group: usize) -> impl Iterator<Item = &ReadRequest> {
        self.requests.iter().filter(move |r| r.group == group)
    }

    /// The device refused `req` with `exception`. For a request of several tags and an
    /// "illegal data address" or "illegal data value" answer, learns (see the module
    /// docs), re-plans, and returns the requests that now cover `req`'s tags. `None`
    /// when `req` covers a single tag or the exception says nothing about addressing.
    pub fn refused(
        &mut self,
        map: &RegisterMap,
        req: &ReadRequest,
        exception: ExceptionCode,
    ) -> Option<Vec<ReadRequest>> {
        if req.tags.len() < 2
            || !matches!(
                exception,
                ExceptionCode::IllegalDataAddress | ExceptionCode::IllegalDataValue
            )
        {
            return None;
        }
        let members: Vec<&Tag> = req.tags.iter().filter_map(|&i| map.tags().get(i)).collect();
        let limits = self.learned.entry((req.unit_id, req.area)).or_default();
        let end = u32::from(req.start) + u32::from(req.count);
        let holes: Vec<u16> = (u32::from(req.start)..end)
            .filter(|&a| {
                !members.iter().any(|t| {
                    (u32::from(t.address)..u32::from(t.address) + u32::from(t.width)).contains(&a)
                })
            })
            .filter_map(|a| u16::try_from(a).ok())
            .filter(|a| !limits.unreadable.contains(a))
            .collect();
        if exception == ExceptionCode::IllegalDataAddress && !holes.is_empty() {
            tracing::info!(
                unit = req.unit_id,
                area = ?req.area,
                start = req.start,
                count = req.count,
                holes = holes.len(),
                "device refused reading through holes; not bridging them again"
            );
            limits.unreadable.extend(holes);
        } else {
            let widest = members.iter().map(|t| t.width).max().unwrap_or(1);
            // Two tags that fit in `widest` items overlap, so halving down to `widest`
            // always ends with answerable requests or single tags.
            let limit = (req.count / 2).max(widest);
            let limit = limits.max_count.map_or(limit, |m| m.min(limit));
            limits.max_count = Some(limit);
            tracing::info!(
                unit = req.unit_id,
                area = ?req.area,
                start = req.start,
                count = req.count,
                limit,
                "device refused a coalesced read; lowering its request limit"
            );
        }
        self.requests = plan(map, self.cfg, &self.learned);
        Some(plan_bucket(
            map.tags(),
            &req.tags,
            (req.group, req.unit_id, req.area),
            self.cfg,
            &self.learned,
        ))
    }
}

#[cfg(test)]
mod tests;
