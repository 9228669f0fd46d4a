//! The per-process debug socket: this test binary serves its own state and reads it
//! back as `dmabuf bufinfo --pid` would (its own binary: it points the socket directory
//! at a fresh folder through the environment).

use dmabuf::debug::server::{self, Query};
use dmabuf::heap::{heaps, AllocData};
use dmabuf::sync_file::{sw_sync, SyncFile};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;

#[test]
fn a_process_serves_its_buffers_fences_and_lockdep_state() {
    let dir = std::env::temp_dir().join(format!("dmabuf-debug-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The only test in this binary: set before any thread reads the variable.
    std::env::set_var("XDG_RUNTIME_DIR", &dir);
    let me = std::process::id();
    assert!(matches!(
        server::query(me, Query::Bufinfo),
        Err(dmabuf::Error::NoEntry(_))
    ));
    let path = server::serve().unwrap();
    assert_eq!(path, server::socket_path(me));
    assert_eq!(server::serve().unwrap(), path, "idempotent");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("dmabuf-rs")), 0o700);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(server::serving(), vec![me]);

    let b = heaps().alloc("system", &AllocData::new(8192)).unwrap();
    b.set_name("served-buffer").unwrap();
    let tl = sw_sync::open().unwrap();
    let sf: SyncFile = sw_sync::create_fence(std::os::fd::AsFd::as_fd(&tl), 3).unwrap();
    let bufinfo = server::query(me, Query::Bufinfo).unwrap();
    assert!(
        bufinfo.contains("Dma-buf Objects:") && bufinfo.contains("served-buffer"),
        "{bufinfo}"
    );
    let fences = server::query(me, Query::Fences).unwrap();
    assert!(
        fences.starts_with("objs:\n") && fences.contains("fences:\n"),
        "{fences}"
    );
    assert!(fences.contains(": 0 (1 pending)"), "{fences}");
    assert!(fences.contains(&format!("{}: 0", sf.name())), "{fences}");
    let ld = server::query(me, Query::Lockdep).unwrap();
    assert!(
        ld.starts_with("lock classes:") || ld.contains("compiled out"),
        "{ld}"
    );
    // An unknown word gets a one-line answer.
    let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
    c.write_all(b"nonsense\n").unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert_eq!(out, "unknown query\n");
    // A pid that serves nothing: NoEntry, not a hang.
    assert!(matches!(
        server::query(u32::MAX, Query::Fences),
        Err(dmabuf::Error::NoEntry(_))
    ));
    drop(sf);
}
