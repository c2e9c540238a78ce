//! `weft-api`: the gRPC contract between the proxies and the control plane,
//! generated at build time from `proto/weft/*.proto`. Those files are the
//! mesh's public interface and document every message and field.

#![allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]

pub mod discovery {
    tonic::include_proto!("weft.discovery.v1");
}

pub mod policy {
    tonic::include_proto!("weft.policy.v1");
}

pub mod registry {
    tonic::include_proto!("weft.registry.v1");
}

pub mod identity {
    tonic::include_proto!("weft.identity.v1");
}

pub mod tap {
    tonic::include_proto!("weft.tap.v1");
}

pub mod config {
    tonic::include_proto!("weft.config.v1");
}
