//! Modbus coalescing benchmark (issue 6): a 200-tag map over 2000 registers with gaps,
//! polled with the planner and with one request per tag against the same simulator over
//! loopback TCP in one run. Prints requests per cycle, cycles per second and the computed
//! wire time per cycle at 9600 baud RTU, then runs criterion on one poll cycle of each.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use criterion::Criterion;
use iiot_protocols::modbus::plan::{Plan, PlanConfig};
use iiot_protocols::modbus::sim::Simulator;
use iiot_protocols::modbus::{Poller, PollerConfig, RegisterMap, RtuConfig, TcpConnector};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// 200 tags, ~10 registers apart with varying gaps, types of 1, 2 and 4 registers.
fn bench_map() -> RegisterMap {
    let mut toml = String::new();
    for i in 0u32..200 {
        let (ty, extra) = match i % 4 {
            0 => ("u16", ""),
            1 => ("f32", "order = \"CDAB\"\n"),
            2 => ("i32", ""),
            _ => ("f64", ""),
        };
        // Mostly small gaps that coalescing bridges, every 7th a long hole that it must not.
        let address = i * 9 + (i % 3) + if i % 7 == 0 { 5 } else { 0 } + i / 7 * 3;
        write!(
            toml,
            "[[tags]]\nname = \"t{i}\"\narea = \"holding_register\"\naddress = {address}\ntype = \"{ty}\"\n{extra}"
        )
        .unwrap_or_default();
    }
    let map = RegisterMap::from_toml_str(&toml).unwrap_or_default();
    assert_eq!(map.tags().len(), 200);
    assert!(map.tags().iter().all(|t| t.address < 2000));
    map
}

struct Setup {
    rt: Runtime,
    sim: Simulator,
    addr: std::net::SocketAddr,
    _stop: tokio_util::sync::DropGuard,
}

fn setup(map: &RegisterMap) -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let sim = Simulator::new(map.clone());
    let cancel = CancellationToken::new();
    let addr = rt.block_on(async {
        let server = sim
            .bind("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")))
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = server.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(server.run(cancel.clone()));
        addr
    });
    Setup {
        rt,
        sim,
        addr,
        _stop: cancel.drop_guard(),
    }
}

fn poller(s: &Setup, map: &RegisterMap, plan: PlanConfig) -> Poller<TcpConnector> {
    let mut cfg = PollerConfig::default();
    cfg.set_plan(plan);
    let _guard = s.rt.enter();
    let (_h, p, mut rx) = Poller::new(cfg, map.clone(), TcpConnector::new(s.addr));
    s.rt.spawn(async move { while rx.recv().await.is_some() {} });
    p
}

fn summary() {
    let map = bench_map();
    let s = setup(&map);
    let rtu = RtuConfig::new("/dev/null", 9600);
    println!("\nModbus coalescing, 200 tags over 2000 registers, loopback TCP simulator:");
    println!(
        "{:<22} {:>14} {:>12} {:>22}",
        "plan", "requests/cycle", "cycles/s", "RTU 9600 wire/cycle"
    );
    let rows = [
        ("planner, gap 8", PlanConfig::default()),
        (
            "planner, gap 0",
            PlanConfig {
                max_register_gap: 0,
                ..PlanConfig::default()
            },
        ),
        (
            "one request per tag",
            PlanConfig {
                one_request_per_tag: true,
                ..PlanConfig::default()
            },
        ),
    ];
    // Interleave short slices of each plan and take the median rate, so load from other
    // processes hits every plan alike.
    let mut pollers: Vec<_> = rows.iter().map(|(_, cfg)| poller(&s, &map, *cfg)).collect();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    let mut served = vec![(0u64, 0u32); rows.len()];
    for _round in 0..15 {
        for (i, p) in pollers.iter_mut().enumerate() {
            let before = s.sim.requests();
            let start = Instant::now();
            let mut cycles = 0u32;
            s.rt.block_on(async {
                while start.elapsed() < Duration::from_millis(200) {
                    p.poll_once().await;
                    cycles += 1;
                }
            });
            rates[i].push(f64::from(cycles) / start.elapsed().as_secs_f64());
            served[i].0 += s.sim.requests() - before;
            served[i].1 += cycles;
        }
    }
    for (i, (name, plan_cfg)) in rows.iter().enumerate() {
        let plan = Plan::new(&map, *plan_cfg);
        rates[i].sort_by(f64::total_cmp);
        println!(
            "{:<22} {:>14.1} {:>12.1} {:>19.0} ms",
            name,
            served[i].0 as f64 / f64::from(served[i].1),
            rates[i][rates[i].len() / 2],
            rtu.cycle_wire_time(plan.requests()).as_secs_f64() * 1000.0
        );
    }
    println!();
}

fn bench(c: &mut Criterion) {
    let map = bench_map();
    let s = setup(&map);
    let mut g = c.benchmark_group("modbus_poll_cycle_200_tags");
    for (name, per_tag) in [("planner", false), ("per_tag", true)] {
        let plan = PlanConfig {
            one_request_per_tag: per_tag,
            ..PlanConfig::default()
        };
        let mut p = poller(&s, &map, plan);
        g.bench_function(name, |b| b.iter(|| s.rt.block_on(p.poll_once())));
    }
    g.finish();
}

fn main() {
    summary();
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
