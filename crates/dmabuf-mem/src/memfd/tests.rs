//! Unit tests of memfds, mappings and the pool.

use super::*;

#[test]
fn create_is_zero_sealed_and_sized() {
    let m = Memfd::create("t", 3, false).unwrap();
    assert_eq!(m.len(), 3 * page_size());
    let mut b = vec![1u8; m.len()];
    m.map().read_at(0, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 0));
    // Sealed: resizing fails with EPERM, size unchanged.
    let e = rustix::fs::ftruncate(m.fd(), 0).unwrap_err();
    assert_eq!(e, rustix::io::Errno::PERM);
    let e = rustix::fs::ftruncate(m.fd(), (4 * page_size()) as u64).unwrap_err();
    assert_eq!(e, rustix::io::Errno::PERM);
    assert_eq!(rustix::fs::fstat(m.fd()).unwrap().st_size as usize, m.len());
}

#[test]
fn bad_ranges_are_refused_and_change_nothing() {
    let m = Memfd::create("t", 1, false).unwrap();
    let p = page_size();
    assert!(matches!(
        m.map().write_at(p - 1, &[7, 7]),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        m.map().fill(usize::MAX, 2, 7),
        Err(Error::Overflow(_))
    ));
    let mut b = [9u8; 2];
    assert!(matches!(m.map().read_at(p, &mut b), Err(Error::Invalid(_))));
    assert_eq!(b, [9, 9]);
    assert!(m.data_ranges().unwrap().is_empty(), "nothing was written");
    assert!(matches!(
        Memfd::create("t", 0, false),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn data_ranges_follow_writes_and_zero_clears_them() {
    let m = Memfd::create("t", 8, false).unwrap();
    let p = page_size();
    m.map().write_at(2 * p + 5, b"hello").unwrap();
    m.map().fill(6 * p, p, 0xAA).unwrap();
    let r = m.data_ranges().unwrap();
    let covered: usize = r.iter().map(|x| x.1).sum();
    assert!(r.iter().any(|&(o, l)| o <= 2 * p && o + l > 2 * p + 5));
    assert!(r.iter().any(|&(o, l)| o <= 6 * p && o + l >= 7 * p));
    assert!(covered <= 8 * p);
    m.zero().unwrap();
    let mut b = vec![1u8; m.len()];
    m.map().read_at(0, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 0));
}

#[test]
fn pool_reuses_and_never_leaks_data() {
    let pool = MemfdPool::new(1 << 20);
    let a = pool.get("a", 2, false).unwrap();
    a.map().write_at(10, b"secret").unwrap();
    let ino = rustix::fs::fstat(a.fd()).unwrap().st_ino;
    pool.put(a);
    assert_eq!(pool.pooled_bytes(), 2 * page_size());
    let b = pool.get("b", 2, false).unwrap();
    assert_eq!(rustix::fs::fstat(b.fd()).unwrap().st_ino, ino, "reused");
    assert_eq!(pool.pooled_bytes(), 0);
    let mut buf = [1u8; 6];
    b.map().read_at(10, &mut buf).unwrap();
    assert_eq!(buf, [0; 6]);
    // A different size is a fresh memfd.
    let c = pool.get("c", 3, true).unwrap();
    assert_ne!(rustix::fs::fstat(c.fd()).unwrap().st_ino, ino);
}

#[test]
fn pool_limit_is_kept() {
    let pool = MemfdPool::new(3 * page_size());
    pool.put(Memfd::create("a", 2, false).unwrap());
    pool.put(Memfd::create("b", 2, false).unwrap());
    assert_eq!(pool.pooled_bytes(), 2 * page_size());
    pool.put(Memfd::create("c", 4, false).unwrap());
    assert_eq!(pool.pooled_bytes(), 2 * page_size());
}

#[test]
fn round_to_pages_wraps_to_none() {
    let p = page_size() as u64;
    assert_eq!(round_to_pages(1), Some(p));
    assert_eq!(round_to_pages(p), Some(p));
    assert_eq!(round_to_pages(0), Some(0));
    assert_eq!(round_to_pages(u64::MAX), None);
}

#[test]
fn another_object_of_the_same_file_makes_it_shared_for_the_pool() {
    let pool = MemfdPool::new(1 << 20);
    let m = pool.get("t", 2, false).unwrap();
    assert!(!m.is_shared());
    // A second object of the same file (as udmabuf or an import makes): the original
    // is shared while it lives, and the pool refuses it.
    let dup = Memfd::from_fd(m.fd().try_clone_to_owned().unwrap()).unwrap();
    assert!(dup.is_shared() && m.is_shared());
    pool.put(m);
    assert_eq!(
        pool.pooled_bytes(),
        0,
        "a memfd another object holds is never pooled"
    );
    drop(dup);
    // Once no other object of the file is left, a fresh memfd is not shared.
    let n = pool.get("t", 2, false).unwrap();
    assert!(!n.is_shared());
    pool.put(n);
    assert_eq!(pool.pooled_bytes(), 2 * page_size());
}
