//! A trace of the demo pipeline, opened as a trace viewer would: the JSON parses, every
//! engine and fence context has a named track, and every frame's chain camera → isp →
//! encoder is there, in order, with the flows from each stage's fence.

use dmabuf::heap::{heaps, AllocData};
use dmabuf_tools::demo::{self, DemoConfig};
use serde_json::Value;
use std::collections::HashMap;

#[test]
fn a_demo_trace_has_every_frames_chain() {
    let cfg = DemoConfig {
        frames: 12,
        frame_bytes: 64 * 1024,
        ring: 3,
        inspect_every: 2,
        isp_coherent: false,
    };
    dmabuf::trace::start(1 << 20).unwrap();
    let alloc = |b: usize| heaps().alloc("system", &AllocData::new(b as u64));
    let r = demo::run(&cfg, &alloc, &|_, _| {});
    let trace = dmabuf::trace::stop().unwrap();
    let r = r.unwrap();
    assert!(r.is_clean());
    assert_eq!(trace.dropped(), 0);
    let v: Value = serde_json::from_str(&trace.to_json()).expect("the trace is JSON");
    let events = v["traceEvents"].as_array().expect("traceEvents");
    // Named tracks: the three engines and their fence contexts.
    let names: HashMap<u64, String> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| {
            (
                e["tid"].as_u64().unwrap(),
                e["args"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let track = |n: &str| {
        names
            .iter()
            .find(|(_, v)| v.as_str() == n)
            .map(|(k, _)| *k)
            .unwrap_or_else(|| panic!("no track {n:?} in {names:?}"))
    };
    let engines = ["camera", "isp", "encoder"].map(|e| track(&format!("engine {e}")));
    for e in ["camera", "isp", "encoder"] {
        assert!(
            names
                .values()
                .any(|n| n.starts_with("fences dmabuf-engine") && n.contains(e)),
            "a fence track for {e}: {names:?}"
        );
    }
    // Jobs per engine, in order: (start, end, fence).
    let jobs = |tid: u64| -> Vec<(f64, f64, String)> {
        let mut j: Vec<_> = events
            .iter()
            .filter(|e| e["ph"] == "X" && e["cat"] == "job" && e["tid"].as_u64() == Some(tid))
            .map(|e| {
                let ts = e["ts"].as_f64().unwrap();
                (
                    ts,
                    ts + e["dur"].as_f64().unwrap(),
                    e["args"]["fence"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        j.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        j
    };
    let [cam, isp, enc] = engines.map(jobs);
    assert_eq!((cam.len(), isp.len(), enc.len()), (12, 12, 12));
    // Each job's fence has its slice, from its creation to its signal, on its
    // context's track: (end, name "ctx:seqno").
    let fence_end: HashMap<String, f64> = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] == "fence")
        .map(|e| {
            let name = format!(
                "{}:{}",
                e["args"]["context"].as_str().unwrap(),
                e["name"].as_str().unwrap().trim_start_matches("seqno ")
            );
            (name, e["ts"].as_f64().unwrap() + e["dur"].as_f64().unwrap())
        })
        .collect();
    // The chain, frame by frame: each stage's job starts after the previous stage's
    // fence signalled, and the fences of every stage are there.
    for k in 0..12 {
        let (c, i, n) = (&cam[k].2, &isp[k].2, &enc[k].2);
        let (cs, is) = (fence_end[c], fence_end[i]);
        assert!(fence_end.contains_key(n), "frame {k}: the encoder's fence");
        assert!(
            cs <= isp[k].0,
            "frame {k}: the isp after the camera's fence"
        );
        assert!(
            is <= enc[k].0,
            "frame {k}: the encoder after the isp's fence"
        );
    }
    // Flows start at a fence's signal (one per wait or job it released) and end after.
    let starts: Vec<&Value> = events.iter().filter(|e| e["ph"] == "s").collect();
    let ends: HashMap<u64, f64> = events
        .iter()
        .filter(|e| e["ph"] == "f")
        .map(|e| (e["id"].as_u64().unwrap(), e["ts"].as_f64().unwrap()))
        .collect();
    assert!(!starts.is_empty(), "some fence released a wait");
    assert_eq!(starts.len(), ends.len());
    for s in starts {
        assert!(fence_end.contains_key(s["name"].as_str().unwrap()));
        assert!(ends[&s["id"].as_u64().unwrap()] >= s["ts"].as_f64().unwrap());
    }
    // Fence slices, waits and lock holds are there too.
    for cat in ["fence", "wait", "lock"] {
        assert!(
            events.iter().any(|e| e["ph"] == "X" && e["cat"] == cat),
            "no {cat} slice"
        );
    }
}
