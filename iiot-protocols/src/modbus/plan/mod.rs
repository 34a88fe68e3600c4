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
//! [`Plan`] adds adaptivity: when a device answers a coalesced read with
//! "illegal data address", [`Plan::refused`] halves the limit it remembers for that unit
//! and area (never below the widest tag of the request), re-plans and returns the
//! requests that replace the refused one.

use std::collections::BTreeMap;

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
                if s <= ce + u32::from(max_gap) && e.max(ce) - cs <= u32::from(max_count) =>
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

/// Plans the whole map: per poll group, unit id and area.
pub fn plan(
    map: &RegisterMap,
    cfg: PlanConfig,
    limits: &BTreeMap<(u8, Area), u16>,
) -> Vec<ReadRequest> {
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
            group,
            unit_id,
            area,
            cfg,
            limits,
        ));
    }
    out
}

fn plan_bucket(
    tags: &[Tag],
    idx: &[usize],
    group: usize,
    unit_id: u8,
    area: Area,
    cfg: PlanConfig,
    limits: &BTreeMap<(u8, Area), u16>,
) -> Vec<ReadRequest> {
    let spans: Vec<Span> = idx
        .iter()
        .map(|&i| (tags[i].address, tags[i].width))
        .collect();
    let max_count = limits
        .get(&(unit_id, area))
        .copied()
        .unwrap_or(u16::MAX)
        .min(area.max_read());
    let (max_count, max_gap) = if cfg.one_request_per_tag {
        (1, 0)
    } else if area.is_bits() {
        (max_count, cfg.max_bit_gap)
    } else {
        (max_count, cfg.max_register_gap)
    };
    coalesce(&spans, max_count, max_gap)
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
    limits: BTreeMap<(u8, Area), u16>,
    requests: Vec<ReadRequest>,
}

impl Plan {
    /// Plans `map` with no learned limits.
    pub fn new(map: &RegisterMap, cfg: PlanConfig) -> Self {
        let limits = BTreeMap::new();
        let requests = plan(map, cfg, &limits);
        Self {
            cfg,
            limits,
            requests,
        }
    }

    /// All requests.
    pub fn requests(&self) -> &[ReadRequest] {
        &self.requests
    }

    /// The item limits learned per unit and area.
    pub fn learned_limits(&self) -> &BTreeMap<(u8, Area), u16> {
        &self.limits
    }

    /// Requests of one poll group.
    pub fn group(&self, group: usize) -> impl Iterator<Item = &ReadRequest> {
        self.requests.iter().filter(move |r| r.group == group)
    }

    /// The device refused `req` with "illegal data address". When `req` covers more than
    /// one tag, remembers a smaller limit for its unit and area, re-plans, and returns the
    /// requests that now cover `req`'s tags. `None` when `req` is a single tag (the tag
    /// itself is at fault).
    pub fn refused(&mut self, map: &RegisterMap, req: &ReadRequest) -> Option<Vec<ReadRequest>> {
        if req.tags.len() < 2 {
            return None;
        }
        let widest = req
            .tags
            .iter()
            .filter_map(|&i| map.tags().get(i))
            .map(|t| t.width)
            .max()
            .unwrap_or(1);
        // Two tags that fit in `widest` items overlap, so no hole separates them: halving
        // down to `widest` always ends with requests the device can answer or single tags.
        let limit = (req.count / 2).max(widest);
        let entry = self.limits.entry((req.unit_id, req.area)).or_insert(limit);
        *entry = (*entry).min(limit);
        let limit = *entry;
        tracing::info!(
            unit = req.unit_id,
            area = ?req.area,
            start = req.start,
            count = req.count,
            limit,
            "device refused a coalesced read; splitting"
        );
        self.requests = plan(map, self.cfg, &self.limits);
        let replacement = plan_bucket(
            map.tags(),
            &req.tags,
            req.group,
            req.unit_id,
            req.area,
            self.cfg,
            &self.limits,
        );
        Some(replacement)
    }
}

#[cfg(test)]
mod tests;
