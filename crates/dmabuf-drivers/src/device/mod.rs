//! Simulated devices: a name, DMA through an IOMMU (coherent or bounce-buffered),
//! peer-to-peer ability, and DMA engines that run jobs on mapped attachments
//! ([`engine`], [`job`]).

pub mod cpu;
pub mod engine;
pub mod job;
pub mod pipeline;

pub use cpu::CpuView;
pub use dmabuf_mem::{dma, iommu, Device};
pub use engine::{Engine, EngineConfig, JobHandle};
pub use job::{checksum, Job, JobKind, JobOp, JobRecord, Operand};
