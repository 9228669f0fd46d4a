//! sw_sync timelines.
