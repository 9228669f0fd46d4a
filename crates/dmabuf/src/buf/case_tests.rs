use super::selftest::cases;

#[test]
fn every_dma_buf_case_passes() {
    let mut failed = Vec::new();
    for c in cases() {
        match std::panic::catch_unwind(c.run) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(format!("{}: {e}", c.name)),
            Err(_) => failed.push(format!("{}: panicked", c.name)),
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}
