use super::*;
use crate::modbus::error::ExceptionCode;
use proptest::prelude::*;
use std::fmt::Write as _;

/// Minimal number of requests over runs of tags consecutive in sorted order (DP).
fn optimum(spans: &[Span], max_count: u16, max_gap: u16) -> usize {
    let mut s: Vec<Span> = spans.to_vec();
    s.sort_by_key(|&(a, w)| (a, w.max(1)));
    let n = s.len();
    let mut dp = vec![usize::MAX; n + 1];
    dp[0] = 0;
    for j in 1..=n {
        // run i..j
        for i in (0..j).rev() {
            let start = u32::from(s[i].0);
            let mut end = start;
            let mut ok = true;
            for &(a, w) in &s[i..j] {
                let (a, e) = (u32::from(a), u32::from(a) + u32::from(w.max(1)));
                if a > end + u32::from(max_gap) && end != start {
                    ok = false;
                    break;
                }
                end = end.max(e);
            }
            let single = j - i == 1;
            if ok && (single || end - start <= u32::from(max_count)) && dp[i] != usize::MAX {
                dp[j] = dp[j].min(dp[i] + 1);
            }
        }
    }
    dp[n]
}

fn spans() -> impl Strategy<Value = Vec<Span>> {
    prop::collection::vec(
        (0u16..3000, prop::sample::select(vec![1u16, 1, 2, 4, 10])),
        0..120,
    )
}

proptest! {
    #[test]
    fn every_tag_exactly_once_within_limit(sp in spans(), max_count in 10u16..=125, gap in 0u16..20) {
        let reqs = coalesce(&sp, max_count, gap);
        let mut seen = vec![0u32; sp.len()];
        for (start, count, idx) in &reqs {
            prop_assert!(*count <= max_count, "request of {count} > {max_count}");
            for &i in idx {
                seen[i] += 1;
                let (a, w) = sp[i];
                prop_assert!(a >= *start && u32::from(a) + u32::from(w) <= u32::from(*start) + u32::from(*count));
            }
        }
        prop_assert!(seen.iter().all(|&c| c == 1), "{seen:?}");
    }

    #[test]
    fn request_count_is_minimal(sp in prop::collection::vec((0u16..400, prop::sample::select(vec![1u16, 2, 4])), 0..40), max_count in 4u16..=125, gap in 0u16..12) {
        let reqs = coalesce(&sp, max_count, gap);
        prop_assert_eq!(reqs.len(), optimum(&sp, max_count, gap));
    }

    #[test]
    fn no_hole_longer_than_gap(sp in spans(), gap in 0u16..20) {
        for (_, _, idx) in coalesce(&sp, 125, gap) {
            let mut members: Vec<Span> = idx.iter().map(|&i| sp[i]).collect();
            members.sort_unstable();
            let mut end = u32::from(members[0].0);
            for (a, w) in members {
                prop_assert!(u32::from(a) <= end + u32::from(gap));
                end = end.max(u32::from(a) + u32::from(w));
            }
        }
    }
}

#[test]
fn bits_use_2000_and_registers_125() {
    let sp: Vec<Span> = (0..3000).map(|a| (a, 1)).collect();
    let r = coalesce(&sp, 2000, 0);
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].0, r[0].1), (0, 2000));
    let r = coalesce(&sp, 125, 0);
    assert_eq!(r.len(), 24);
}

#[test]
fn end_of_address_space_does_not_overflow() {
    let r = coalesce(&[(65532, 4), (65535, 1)], 125, 3);
    assert_eq!(r, vec![(65532, 4, vec![0, 1])]);
}

fn map_of(toml: &str) -> RegisterMap {
    RegisterMap::from_toml_str(toml).unwrap()
}

#[test]
fn plan_splits_by_unit_area_and_group() {
    let map = map_of(
        r#"
        [poll_groups.fast]
        interval = "100ms"
        [[tags]]
        name = "a"
        address = "40001"
        type = "u16"
        [[tags]]
        name = "b"
        address = "40003"
        type = "u32"
        [[tags]]
        name = "c"
        address = "40005"
        type = "u16"
        unit_id = 2
        [[tags]]
        name = "d"
        address = "30001"
        type = "u16"
        [[tags]]
        name = "e"
        address = "40006"
        type = "u16"
        poll_group = "fast"
        "#,
    );
    let p = Plan::new(&map, PlanConfig::default());
    assert_eq!(p.requests().len(), 4);
    let hr1 = p
        .requests()
        .iter()
        .find(|r| r.unit_id == 1 && r.area == Area::HoldingRegister && r.tags.len() == 2)
        .unwrap();
    assert_eq!((hr1.start, hr1.count), (0, 4));
}

fn spaced_map(n: u16, step: u16) -> RegisterMap {
    let mut toml = String::new();
    for i in 0..n {
        writeln!(
            toml,
            "[[tags]]\nname = \"t{i}\"\narea = \"holding_register\"\naddress = {}\ntype = \"u16\"",
            i * step
        )
        .unwrap();
    }
    map_of(&toml)
}

#[test]
fn refused_for_size_halves_the_remembered_limit() {
    let map = spaced_map(100, 1);
    let mut p = Plan::new(&map, PlanConfig::default());
    assert_eq!(p.requests().len(), 1);
    let req = p.requests()[0].clone();
    assert_eq!(req.count, 100);
    let rep = p
        .refused(&map, &req, ExceptionCode::IllegalDataValue)
        .unwrap();
    assert_eq!(rep.len(), 2);
    assert!(rep.iter().all(|r| r.count == 50));
    let learned = &p.learned()[&(1, Area::HoldingRegister)];
    assert_eq!(learned.max_count, Some(50));
    assert_eq!(p.requests().len(), 2);
    // Without holes, "illegal data address" also halves.
    let rep = p
        .refused(&map, &rep[0], ExceptionCode::IllegalDataAddress)
        .unwrap();
    assert_eq!(rep.len(), 2);
    assert_eq!(p.learned()[&(1, Area::HoldingRegister)].max_count, Some(25));
    // Single tags and unrelated exceptions are not split.
    let single = ReadRequest {
        tags: vec![0],
        count: 1,
        ..req.clone()
    };
    assert!(
        p.refused(&map, &single, ExceptionCode::IllegalDataAddress)
            .is_none()
    );
    assert!(
        p.refused(&map, &req, ExceptionCode::ServerDeviceBusy)
            .is_none()
    );
}

#[test]
fn refused_through_holes_stops_bridging_them() {
    let map = spaced_map(10, 10);
    let mut p = Plan::new(
        &map,
        PlanConfig {
            max_register_gap: 20,
            ..PlanConfig::default()
        },
    );
    assert_eq!(p.requests().len(), 1);
    let req = p.requests()[0].clone();
    assert_eq!(req.count, 91);
    let rep = p
        .refused(&map, &req, ExceptionCode::IllegalDataAddress)
        .unwrap();
    assert_eq!(rep.len(), 10);
    assert!(rep.iter().all(|r| r.count == 1));
    let learned = &p.learned()[&(1, Area::HoldingRegister)];
    assert_eq!(learned.max_count, None, "holes are not a size limit");
    assert_eq!(learned.unreadable.len(), 81);
    assert_eq!(p.requests().len(), 10);
}

proptest! {
    /// Whatever the device refuses, re-planning keeps every tag covered exactly once.
    #[test]
    fn adaptive_plans_still_cover_every_tag_once(n in 2u16..60, step in 1u16..12, refusals in prop::collection::vec((any::<prop::sample::Index>(), any::<bool>()), 0..8)) {
        let map = spaced_map(n, step);
        let mut p = Plan::new(&map, PlanConfig::default());
        for (pick, by_address) in refusals {
            let req = pick.get(p.requests()).clone();
            let exc = if by_address { ExceptionCode::IllegalDataAddress } else { ExceptionCode::IllegalDataValue };
            if let Some(rep) = p.refused(&map, &req, exc) {
                let mut covered: Vec<usize> = rep.iter().flat_map(|r| r.tags.clone()).collect();
                covered.sort_unstable();
                let mut want = req.tags.clone();
                want.sort_unstable();
                prop_assert_eq!(covered, want);
            }
            let mut seen = vec![0; map.tags().len()];
            for r in p.requests() {
                prop_assert!(r.count <= 125);
                for &t in &r.tags { seen[t] += 1; }
            }
            prop_assert!(seen.iter().all(|&c| c == 1));
        }
    }
}
