//! `Registry.Register/Heartbeat/Deregister`: the lease table behind a
//! gRPC face. Errors map here: an invalid workload is INVALID_ARGUMENT, an
//! unknown lease NOT_FOUND (the client registers again).

use std::time::Duration;

use tonic::{Request, Response, Status};
use weft_api::registry::registry_server::Registry as RegistryApi;
use weft_api::registry::{DeregisterResponse, HeartbeatRequest, Lease, RegisterRequest};

use crate::source::registry::{Grant, Registry, RegistryError, workload_from_api};

#[derive(Debug)]
pub struct RegistryService {
    pub registry: Registry,
}

fn status(e: RegistryError) -> Status {
    match e {
        RegistryError::Invalid(_) => Status::invalid_argument(e.to_string()),
        RegistryError::UnknownLease(_) => Status::not_found(e.to_string()),
    }
}

fn lease(g: Grant) -> Lease {
    Lease { id: g.id, ttl_ms: u64::try_from(g.ttl.as_millis()).unwrap_or(u64::MAX), version: g.version }
}

#[tonic::async_trait]
impl RegistryApi for RegistryService {
    async fn register(&self, req: Request<RegisterRequest>) -> Result<Response<Lease>, Status> {
        let RegisterRequest { workload, ttl_ms } = req.into_inner();
        let workload = workload.ok_or_else(|| Status::invalid_argument("workload is required"))?;
        let workload = workload_from_api(workload).map_err(status)?;
        Ok(Response::new(lease(self.registry.register(workload, Duration::from_millis(ttl_ms)))))
    }

    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> Result<Response<Lease>, Status> {
        let HeartbeatRequest { lease_id, ready } = req.into_inner();
        self.registry.heartbeat(&lease_id, ready).map(|g| Response::new(lease(g))).map_err(status)
    }

    async fn deregister(&self, req: Request<HeartbeatRequest>) -> Result<Response<DeregisterResponse>, Status> {
        self.registry.deregister(&req.into_inner().lease_id);
        Ok(Response::new(DeregisterResponse {}))
    }
}
