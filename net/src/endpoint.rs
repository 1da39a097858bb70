//! The iroh endpoint of a node: its Ed25519 identity is the store's, relays
//! and public address lookup are off (peers carry explicit addresses, kept in
//! a [`MemoryLookup`] fed from the share's `addrs/` keys and from tickets).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use iroh::address_lookup::MemoryLookup;
use iroh::endpoint::{NetReportConfig, PortmapperConfig, QuicTransportConfig, presets};
use iroh::{Endpoint, EndpointAddr, RelayMode, SecretKey};

/// Binds the endpoint; `hooks` see every connection once the peer is known.
pub async fn bind(
    secret: [u8; 32],
    addr: SocketAddr,
    lookup: &MemoryLookup,
    hooks: impl iroh::endpoint::EndpointHooks + 'static,
) -> Result<Endpoint> {
    let transport = QuicTransportConfig::builder()
        .max_idle_timeout(Some(Duration::from_secs(20).try_into()?))
        .keep_alive_interval(Duration::from_secs(5))
        .build();
    Endpoint::builder(presets::Minimal)
        .secret_key(SecretKey::from_bytes(&secret))
        .relay_mode(RelayMode::Disabled)
        .clear_ip_transports()
        .bind_addr(addr)
        .map_err(|e| anyhow::anyhow!("cannot bind {addr}: {e}"))?
        .portmapper_config(PortmapperConfig::Disabled)
        .net_report_config(NetReportConfig::minimal())
        .address_lookup(lookup.clone())
        .transport_config(transport)
        .hooks(hooks)
        .bind()
        .await
        .with_context(|| format!("cannot bind the peer endpoint on {addr}"))
}

/// Addresses other peers can dial. An endpoint bound to all interfaces
/// advertises each interface's address (as iroh sees them) and loopback, so
/// peers on other machines and on this one can both reach it; an endpoint
/// bound to one address advertises just that.
pub fn advertised(ep: &Endpoint) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for bound in ep.bound_sockets() {
        if !bound.ip().is_unspecified() {
            out.push(bound);
            continue;
        }
        let mut local: Vec<SocketAddr> = ep
            .addr()
            .ip_addrs()
            .copied()
            .filter(|a| a.port() == bound.port() && a.is_ipv4() == bound.is_ipv4())
            .collect();
        local.sort();
        out.extend(local);
        let lo: std::net::IpAddr = match bound {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        out.push(SocketAddr::new(lo, bound.port()));
    }
    out.dedup();
    out
}

pub fn remember(lookup: &MemoryLookup, id: [u8; 32], addrs: &[SocketAddr]) {
    let Ok(id) = iroh::PublicKey::from_bytes(&id) else {
        return;
    };
    let mut a = EndpointAddr::new(id);
    for s in addrs {
        a = a.with_ip_addr(*s);
    }
    lookup.add_endpoint_info(a);
}
