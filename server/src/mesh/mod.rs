//! Messages between the shards of different nodes: their wire form (`wire`, `request`, from
//! `protocol/proto/mesh.proto`) and a shard's end of the link (`link`). The NATS side of the
//! link runs on the cluster thread (`crate::cluster::mesh`).

pub(crate) mod link;
mod request;
pub mod wire;
