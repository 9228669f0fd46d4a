//! Benchmark workloads (shared by `dmabuf bench` and the criterion benches).
