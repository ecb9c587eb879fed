//! CRI `runtime.v1` ImageService messages, as far as pullgate reads them.
//!
//! pullgate forwards every RPC as raw bytes; these types only decode *copies* of the
//! messages it must inspect. Fields not declared here are skipped by prost on decode,
//! which is harmless because the decoded value is never re-encoded towards containerd.

pub mod runtime {
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}

pub use runtime::v1 as cri;
