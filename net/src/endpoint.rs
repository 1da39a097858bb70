//! The iroh endpoint of a node: its Ed25519 identity is the store's. How far
//! it reaches is [`Reach`]: for real use `mountctl` turns on iroh's public
//! relays, DNS address lookup and local-network discovery (mDNS); tests turn everything off and dial
//! explicit addresses, kept in a [`MemoryLookup`] fed from the share's
//! `addrs/` keys, from tickets and from handshakes.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use iroh::address_lookup::{DnsAddressLookup, MemoryLookup, PkarrPublisher, PkarrResolver};
use iroh::endpoint::{NetReportConfig, PortmapperConfig, QuicTransportConfig, presets};
use iroh::{Endpoint, EndpointAddr, RelayMode, RelayUrl, SecretKey};
use iroh_mdns_address_lookup::MdnsAddressLookup;

/// Which relay servers a node uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Relay {
    /// None: peers must reach each other directly.
    #[default]
    Off,
    /// The public relays iroh ships with.
    Public,
    /// These relay servers (URLs).
    Custom(Vec<String>),
}

/// How a node finds and reaches its peers beyond the addresses the share
/// records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    pub relay: Relay,
    /// Publish this node's addresses to, and look peers up in, iroh's DNS
    /// (pkarr) service, so a peer whose address changed is found again.
    pub dns: bool,
    /// Find machines of the same local network by multicast DNS.
    pub lan: bool,
    /// Direct UDP paths. Off only in tests that show relayed sync.
    pub direct: bool,
}

impl Default for Reach {
    fn default() -> Self {
        Reach {
            relay: Relay::Off,
            dns: false,
            lan: false,
            direct: true,
        }
    }
}

/// Binds the endpoint; `hooks` see every connection once the peer is known.
pub async fn bind(
    secret: [u8; 32],
    addr: SocketAddr,
    reach: &Reach,
    lookup: &MemoryLookup,
    hooks: impl iroh::endpoint::EndpointHooks + 'static,
) -> Result<Endpoint> {
    let transport = QuicTransportConfig::builder()
        .max_idle_timeout(Some(Duration::from_secs(20).try_into()?))
        .keep_alive_interval(Duration::from_secs(5))
        .build();
    let relay_mode = match &reach.relay {
        Relay::Off => RelayMode::Disabled,
        Relay::Public => RelayMode::Default,
        Relay::Custom(urls) => RelayMode::custom(
            urls.iter()
                .map(|u| {
                    u.parse::<RelayUrl>()
                        .with_context(|| format!("{u:?} is not a relay URL"))
                })
                .collect::<Result<Vec<_>>>()?,
        ),
    };
    let mut b = Endpoint::builder(presets::Minimal)
        .secret_key(SecretKey::from_bytes(&secret))
        .relay_mode(relay_mode)
        .clear_ip_transports();
    if reach.direct {
        b = b
            .bind_addr(addr)
            .map_err(|e| anyhow::anyhow!("cannot bind {addr}: {e}"))?;
    }
    if reach.relay == Relay::Off {
        b = b.net_report_config(NetReportConfig::minimal());
    }
    if reach.dns {
        b = b
            .address_lookup(PkarrPublisher::n0_dns())
            .address_lookup(PkarrResolver::n0_dns())
            .address_lookup(DnsAddressLookup::n0_dns());
    }
    if reach.lan {
        b = b.address_lookup(MdnsAddressLookup::builder().service_name("lattice"));
    }
    b.portmapper_config(PortmapperConfig::Disabled)
        .address_lookup(lookup.clone())
        .transport_config(transport)
        .hooks(hooks)
        .bind()
        .await
        .with_context(|| format!("cannot bind the peer endpoint on {addr}"))
}

/// Addresses other peers can dial: "IP:PORT" of each interface (an endpoint
/// bound to all interfaces advertises each interface's address as iroh sees
/// them, and loopback, so peers on other machines and on this one can both
/// reach it; one bound to one address advertises just that), then the home
/// relay's URL when there is one.
pub fn advertised(ep: &Endpoint) -> Vec<String> {
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
    let mut out: Vec<String> = out.into_iter().map(|a| a.to_string()).collect();
    out.extend(ep.addr().relay_urls().map(|u| u.to_string()));
    out
}

/// Adds `addrs` ("IP:PORT" or relay URLs; others are ignored) to what the
/// address book knows of `id`.
pub fn remember(lookup: &MemoryLookup, id: [u8; 32], addrs: &[String]) {
    let Ok(id) = iroh::PublicKey::from_bytes(&id) else {
        return;
    };
    let mut a = EndpointAddr::new(id);
    for s in addrs {
        if let Ok(ip) = s.parse::<SocketAddr>() {
            a = a.with_ip_addr(ip);
        } else if s.contains("://")
            && let Ok(u) = s.parse::<RelayUrl>()
        {
            a = a.with_relay_url(u);
        }
    }
    if !a.is_empty() {
        lookup.add_endpoint_info(a);
    }
}
