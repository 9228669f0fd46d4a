//! Each device self-test scenario as its own test, so a failure names the case.

mod common;

use common::case_tests;

case_tests! {
    "device/",
    jobs_coherent => "device/jobs-coherent",
    jobs_non_coherent => "device/jobs-non-coherent",
    implicit_sync => "device/implicit-sync-producer-consumer",
    explicit_sync => "device/explicit-sync-sync-file",
    timeout => "device/timeout-error-fence-engine-continues",
    iommu_fault => "device/iommu-fault-error-fence",
    seqno_ordered => "device/fences-seqno-ordered",
    failed_dependency => "device/failed-dependency-cancels",
    bad_input => "device/submit-bad-input",
    ownership_cpu_access_outside_bracket => "device/ownership-cpu-access-outside-bracket",
    ownership_job_while_cpu_owns => "device/ownership-job-while-cpu-owns",
    ownership_unmap_while_busy => "device/ownership-unmap-while-busy",
    ownership_free_while_busy => "device/ownership-free-while-busy",
    ownership_sync_direction_mismatch => "device/ownership-sync-direction-mismatch",
    non_coherent_missing_end_cpu_access => "device/non-coherent-missing-end-cpu-access",
    pipeline => "device/pipeline",
}

/// Threads submit copies and inverts between shared buffers to several engines at once
/// (multi-buffer locking with back-off, implicit sync across engines), bounded by
/// iterations and time: every fence signals without error, each engine's fences in
/// seqno order, lockdep silent, the data consistent.
#[test]
fn stress_engines_on_shared_buffers() {
    use dmabuf::buf::simple::SimpleExporter;
    use dmabuf::buf::Direction;
    use dmabuf::device::engine::{Engine, EngineConfig};
    use dmabuf::device::job::{Job, Operand};
    use dmabuf::device::Device;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let cap = lockdep::Capture::new();
    let _g = cap.install();
    let cfg = EngineConfig {
        lockdep_capture: Some(cap.clone()),
        ..EngineConfig::default()
    };
    let devs: Vec<_> = (0..3)
        .map(|i| Device::new(&format!("d{i}"), u32::MAX as u64, i != 1, false).unwrap())
        .collect();
    let engines: Vec<Arc<Engine>> = devs
        .iter()
        .enumerate()
        .map(|(i, d)| Arc::new(Engine::with_config(d, &format!("e{i}"), cfg.clone()).unwrap()))
        .collect();
    let bufs: Vec<_> = (0..4)
        .map(|_| {
            let e = SimpleExporter::new(1).unwrap();
            (e.export().unwrap(), e)
        })
        .collect();
    // Every device maps every buffer bidirectionally; coherent devices only, for the
    // copies (the non-coherent one only checksums its own snapshot).
    let maps: Arc<Vec<Vec<_>>> = Arc::new(
        devs.iter()
            .map(|d| {
                bufs.iter()
                    .map(|(b, _)| {
                        let a = b.attach(d).unwrap();
                        let m = a.map_unlocked(Direction::Bidirectional).unwrap();
                        (m, a) // the mapping drops before its attachment
                    })
                    .collect::<Vec<_>>()
            })
            .collect(),
    );
    let start = Instant::now();
    let threads: Vec<_> = (0..3usize)
        .map(|t| {
            let (maps, engines, cap) = (maps.clone(), engines.clone(), cap.clone());
            std::thread::spawn(move || {
                let _g = cap.install();
                let mut handles = Vec::new();
                for i in 0..60usize {
                    if start.elapsed() > Duration::from_secs(3) {
                        break;
                    }
                    let e = [0, 2][(t + i) % 2];
                    let (src, dst) = ((t + i) % 4, (t + 2 * i + 1) % 4);
                    let m = &maps[e];
                    let job = if src == dst {
                        Job::invert(Operand::new(&m[src].0), Operand::new(&m[dst].0))
                    } else {
                        Job::copy(Operand::new(&m[src].0), Operand::new(&m[dst].0))
                    };
                    handles.push(engines[e].submit(job).unwrap());
                    if i % 7 == 0 {
                        let ck = Job::checksum(Operand::new(&maps[1][dst].0));
                        handles.push(engines[1].submit(ck).unwrap());
                    }
                }
                handles
            })
        })
        .collect();
    let handles: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    for h in &handles {
        assert!(h.wait().is_ok(), "job failed: {:?}", h.record());
    }
    for e in engines.iter() {
        let recs = e.records();
        assert!(recs.windows(2).all(|w| w[1].seqno == w[0].seqno + 1));
        assert!(recs
            .windows(2)
            .all(|w| w[1].signalled_ns >= w[0].signalled_ns));
    }
    assert!(cap.is_empty(), "lockdep: {:?}", cap.take());
    assert!(start.elapsed() < Duration::from_secs(10));
}
