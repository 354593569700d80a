//! Throughput benchmark: 1,000 ConfigMaps; list throughput with and without
//! pagination; watch fan-out to 100 concurrent watches.
//!
//! Run with `cargo bench -p kube-sim`. Prints a small table.

use std::time::{Duration, Instant};

use kube_sim::{SimConfig, Simulator};
use serde_json::{Value, json};

const OBJECTS: usize = 1_000;
const WATCHES: usize = 100;
const WATCH_WRITES: usize = 200;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::start(SimConfig {
        deployment_controller: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let base = sim.base_url();
    let t = Instant::now();
    for i in 0..OBJECTS {
        sim.create_object(
            "v1",
            "ConfigMap",
            json!({"metadata": {"name": format!("cm-{i:04}"), "namespace": "default", "labels": {"app": "bench"}}, "data": {"key": "x".repeat(64)}}),
        )
        .unwrap();
    }
    let create_rate = OBJECTS as f64 / t.elapsed().as_secs_f64();

    let url = format!("{base}/api/v1/namespaces/default/configmaps");
    let run_for = Duration::from_secs(3);
    // Full lists.
    let t = Instant::now();
    let mut lists = 0u64;
    while t.elapsed() < run_for {
        let v: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(v["items"].as_array().unwrap().len(), OBJECTS);
        lists += 1;
    }
    let full_rate = lists as f64 / t.elapsed().as_secs_f64();
    // Paginated lists (limit=100 -> 10 pages per list).
    let t = Instant::now();
    let mut plists = 0u64;
    let mut pages = 0u64;
    while t.elapsed() < run_for {
        let mut cont = String::new();
        let mut n = 0;
        loop {
            let v: Value = client
                .get(format!("{url}?limit=100&continue={cont}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            n += v["items"].as_array().unwrap().len();
            pages += 1;
            match v["metadata"]["continue"].as_str() {
                Some(c) => cont = c.to_string(),
                None => break,
            }
        }
        assert_eq!(n, OBJECTS);
        plists += 1;
    }
    let paged_rate = plists as f64 / t.elapsed().as_secs_f64();
    let page_rate = pages as f64 / t.elapsed().as_secs_f64();

    // Watch fan-out.
    let rv = {
        let v: Value = client
            .get(format!("{url}?limit=1"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut handles = vec![];
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(WATCHES);
    for _ in 0..WATCHES {
        let client = client.clone();
        let url = format!("{url}?watch=1&resourceVersion={rv}");
        let ready = ready_tx.clone();
        handles.push(tokio::spawn(async move {
            let mut resp = client.get(&url).send().await.unwrap();
            ready.send(()).await.unwrap();
            let mut seen = 0usize;
            let mut buf = Vec::new();
            while seen < WATCH_WRITES {
                match resp.chunk().await.unwrap() {
                    Some(c) => {
                        buf.extend_from_slice(&c);
                        while let Some(p) = buf.iter().position(|b| *b == b'\n') {
                            buf.drain(..=p);
                            seen += 1;
                        }
                    }
                    None => break,
                }
            }
            seen
        }));
    }
    for _ in 0..WATCHES {
        ready_rx.recv().await.unwrap();
    }
    let t = Instant::now();
    for i in 0..WATCH_WRITES {
        client
            .patch(format!("{url}/cm-{:04}", i % OBJECTS))
            .header("content-type", "application/merge-patch+json")
            .body(format!(r#"{{"data":{{"n":"{i}"}}}}"#))
            .send()
            .await
            .unwrap();
    }
    let mut delivered = 0usize;
    for h in handles {
        delivered += h.await.unwrap();
    }
    let elapsed = t.elapsed().as_secs_f64();
    let fanout_rate = delivered as f64 / elapsed;

    println!(
        "kube-sim throughput ({OBJECTS} ConfigMaps, {} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("| measurement                                   | result            |");
    println!("|-----------------------------------------------|-------------------|");
    println!("| direct creates                                | {create_rate:>9.0} obj/s    |");
    println!("| full lists (1,000 items, no pagination)       | {full_rate:>9.1} lists/s  |");
    println!("| paginated lists (limit=100, 10 pages)         | {paged_rate:>9.1} lists/s  |");
    println!("| pages                                         | {page_rate:>9.1} pages/s  |");
    println!(
        "| watch fan-out ({WATCHES} watches x {WATCH_WRITES} patches)       | {fanout_rate:>9.0} events/s |"
    );
    println!("| watch events delivered                        | {delivered:>9}         |");
    sim.shutdown().await;
}
