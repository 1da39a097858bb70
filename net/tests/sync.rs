//! Two nodes on 127.0.0.1, real iroh endpoints, real stores with membership
//! enforced: invite and join, live push both ways (content included),
//! catch-up after a pause, and refusals.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use net::{Config, Directory, Net, Ticket};
use prost::Message;
use store::membership::{Invite, invite_key, peer_key, secret_hash};
use store::{AuthorId, Identity, Location, Op, Role, Store};

/// A directory over the store, as the daemon keeps one.
struct Dir(Arc<Store>);

impl Directory for Dir {
    fn role(&self, id: &AuthorId) -> Option<Role> {
        self.0.get(&peer_key(id)).ok().flatten().and_then(|v| Role::parse(&v))
    }
    fn members(&self) -> Vec<(AuthorId, Vec<String>)> {
        let me = self.0.author();
        let mut out = Vec::new();
        for (k, _) in self.0.scan(b"peers/").unwrap() {
            let Some(id) = std::str::from_utf8(&k[6..]).ok().and_then(AuthorId::parse_hex) else {
                continue;
            };
            if id == me {
                continue;
            }
            let addrs = self
                .0
                .get(format!("addrs/{id}").as_bytes())
                .ok()
                .flatten()
                .map(|v| {
                    String::from_utf8_lossy(&v)
                        .split(',')
                        .filter(|a| !a.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            out.push((id, addrs));
        }
        out
    }
    fn admit(&self, joiner: &AuthorId, secret: &[u8]) -> Result<Role, String> {
        let key = invite_key(&secret_hash(secret));
        let inv = self
            .0
            .get(&key)
            .ok()
            .flatten()
            .ok_or("this ticket is not valid (used already, or never issued)")?;
        let inv = Invite::decode(inv.as_slice()).map_err(|e| e.to_string())?;
        if inv.expires_ms <= store::hlc::wall_ms() {
            return Err("this ticket has expired".into());
        }
        let role = Role::parse(inv.role.as_bytes()).ok_or("bad invite")?;
        self.0
            .write(vec![Op::put(peer_key(joiner), inv.role.clone()), Op::delete(key)])
            .map_err(|e| e.to_string())?;
        Ok(role)
    }
}

fn cfg() -> Config {
    Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        anti_entropy: Duration::from_secs(2),
        ..Config::default()
    }
}

fn enforcing() -> store::Config {
    store::Config {
        enforce_membership: true,
        ..store::Config::default()
    }
}

struct Node {
    store: Arc<Store>,
    net: Net,
}

async fn start(store: Store, id: &Identity) -> Node {
    let store = Arc::new(store);
    let net = Net::start(id.secret_bytes(), store.clone(), Arc::new(Dir(store.clone())), cfg())
        .await
        .unwrap();
    Node { store, net }
}

/// A new share's first node, its owner.
async fn owner() -> Node {
    let id = Identity::generate();
    let s = Store::create_share(
        Location::Memory,
        id.clone(),
        enforcing(),
        vec![Op::put(peer_key(&id.author()), "owner")],
    )
    .unwrap();
    start(s, &id).await
}

/// An endpoint of its own (key `secret`, bound to `bind`), with no address
/// book and no hooks: a dialer that knows only what it is given.
async fn dialer(secret: [u8; 32], bind: &str) -> iroh::Endpoint {
    let lookup = iroh::address_lookup::MemoryLookup::new();
    net::endpoint::bind(secret, bind.parse().unwrap(), &Default::default(), &lookup, NoHooks)
        .await
        .unwrap()
}

fn publish_addrs(n: &Node) {
    let addrs: Vec<String> = n.net.addrs().iter().map(|a| a.to_string()).collect();
    n.store
        .write(vec![Op::put(format!("addrs/{}", n.store.author()), addrs.join(","))])
        .unwrap();
}

fn invite(owner: &Node, role: &str, ttl_ms: u64) -> Ticket {
    let secret: [u8; 32] = rand::random();
    let inv = Invite {
        role: role.into(),
        expires_ms: store::hlc::wall_ms() + ttl_ms,
        by: vec![],
    };
    owner
        .store
        .write(vec![Op::put(invite_key(&secret_hash(&secret)), inv.encode_to_vec())])
        .unwrap();
    Ticket {
        share: owner.store.share_id().0,
        inviter: owner.store.author().0,
        addrs: owner.net.addrs(),
        secret,
        others: Vec::new(),
    }
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn joiner(owner: &Node, t: &Ticket) -> (Node, Identity) {
    let id = Identity::generate();
    let s = Store::create_for_share(Location::Memory, id.clone(), owner.store.share_id(), enforcing()).unwrap();
    let n = start(s, &id).await;
    n.net.join(t).await.unwrap();
    (n, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_join_live_push_and_refusals() {
    let a = owner().await;
    publish_addrs(&a);
    let data = vec![9u8; 300_000];
    let m = a.store.put_content(&mut data.as_slice()).unwrap();
    a.store
        .write(vec![Op::put_with_refs("file", m.encode(), m.chunks())])
        .unwrap();

    // Join with a ticket: admitted, backfilled (content included).
    let t = invite(&a, "writer", 60_000);
    let (b, _bid) = joiner(&a, &t).await;
    assert_eq!(b.store.frontier().unwrap(), a.store.frontier().unwrap());
    let got = store::Manifest::decode(&b.store.get(b"file").unwrap().unwrap()).unwrap();
    let mut buf = vec![0u8; data.len()];
    b.store.read_content(&got, 0, &mut buf).unwrap();
    assert_eq!(buf, data);
    publish_addrs(&b);

    // The same ticket again: refused, with the reason.
    let cid = Identity::generate();
    let cs = Store::create_for_share(Location::Memory, cid.clone(), a.store.share_id(), enforcing()).unwrap();
    let c = start(cs, &cid).await;
    let err = c.net.join(&t).await.unwrap_err().to_string();
    assert!(err.contains("not valid"), "{err}");
    // An uninvited node: refused.
    let err = c.net.sync_with(a.store.author()).await.unwrap_err().to_string();
    assert!(err.contains("not a member"), "{err}");
    // An expired ticket: refused.
    let old = invite(&a, "writer", 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let err = c.net.join(&old).await.unwrap_err().to_string();
    assert!(err.contains("expired"), "{err}");
    assert_eq!(c.store.frontier().unwrap().len(), 0, "nothing applied");

    // Live push, both ways.
    let t0 = Instant::now();
    a.store.write(vec![Op::put("live/a", "1")]).unwrap();
    eventually("a's write on b", || b.store.get(b"live/a").unwrap().is_some()).await;
    let lat = t0.elapsed();
    b.store.write(vec![Op::put("live/b", "2")]).unwrap();
    eventually("b's write on a", || a.store.get(b"live/b").unwrap().is_some()).await;
    eprintln!("a -> b live latency: {lat:?}");

    // A pause (partition): writes on both sides, then catch-up by anti-entropy.
    b.net.set_paused(true);
    a.store.write(vec![Op::put("p/a", "x")]).unwrap();
    b.store.write(vec![Op::put("p/b", "y")]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.store.get(b"p/a").unwrap().is_none(), "nothing crosses while paused");
    b.net.set_paused(false);
    eventually("catch-up", || {
        a.store.get(b"p/b").unwrap().is_some() && b.store.get(b"p/a").unwrap().is_some()
    })
    .await;
    eventually("same frontier", || {
        a.store.frontier().unwrap() == b.store.frontier().unwrap()
    })
    .await;

    // A reader's entries are refused everywhere.
    let rt = invite(&a, "reader", 60_000);
    let (r, rid) = joiner(&a, &rt).await;
    r.store.write(vec![Op::put("from-reader", "no")]).unwrap_err();
    let _ = rid;

    for n in [a, b, c, r] {
        n.net.shutdown().await;
    }
}

#[derive(Debug)]
struct NoHooks;
impl iroh::endpoint::EndpointHooks for NoHooks {}

/// Bound to all interfaces, a node advertises each interface's address and
/// loopback (never 0.0.0.0), and a peer reaches it through every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_interfaces_advertise_dialable_addresses() {
    let id = Identity::generate();
    let s = Arc::new(
        Store::create_share(
            Location::Memory,
            id.clone(),
            enforcing(),
            vec![Op::put(peer_key(&id.author()), "owner")],
        )
        .unwrap(),
    );
    let all = Config {
        bind: "0.0.0.0:0".parse().unwrap(),
        ..cfg()
    };
    let a = Net::start(id.secret_bytes(), s.clone(), Arc::new(Dir(s.clone())), all)
        .await
        .unwrap();
    let addrs: Vec<SocketAddr> = a.addrs().iter().map(|a| a.parse().unwrap()).collect();
    assert!(addrs.iter().all(|a| !a.ip().is_unspecified()), "{addrs:?}");
    assert!(addrs.iter().any(|a| a.ip().is_loopback()), "{addrs:?}");
    for ip in interface_ipv4s() {
        assert!(
            addrs.iter().any(|a| a.ip() == ip),
            "{ip} (an interface of this machine) is not advertised: {addrs:?}"
        );
    }

    let key = iroh::PublicKey::from_bytes(&s.author().0).unwrap();
    for addr in &addrs {
        // A fresh dialer per address: one that knew another path could use it.
        let ep = dialer(rand::random(), "0.0.0.0:0").await;
        let to = iroh::EndpointAddr::new(key).with_ip_addr(*addr);
        let conn = tokio::time::timeout(Duration::from_secs(5), ep.connect(to, net::SYNC_ALPN))
            .await
            .unwrap_or_else(|_| panic!("no answer on {addr}"))
            .unwrap_or_else(|e| panic!("cannot reach {addr}: {e}"));
        conn.close(0u32.into(), b"bye");
        ep.close().await;
    }
    a.shutdown().await;
}

/// The IPv4 addresses of this machine's interfaces that are up, loopback and link-local aside.
fn interface_ipv4s() -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, which is walked read-only and freed once.
    unsafe {
        assert_eq!(libc::getifaddrs(&mut list), 0, "getifaddrs failed");
        let mut cur = list;
        while !cur.is_null() {
            let i = &*cur;
            let up = i.ifa_flags & libc::IFF_UP as u32 != 0;
            if up && !i.ifa_addr.is_null() && (*i.ifa_addr).sa_family as i32 == libc::AF_INET {
                let sin = &*(i.ifa_addr as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                // iroh leaves link-local out when there is a routable address.
                if !ip.is_loopback() && !ip.is_link_local() {
                    out.push(ip.into());
                }
            }
            cur = i.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

/// What a stranger on the sync protocol gets: refused at the handshake or cut
/// off, never an answer, never a crash; meanwhile the honest member keeps
/// syncing (its latency is measured during the attack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_garbage_are_cut_off_while_members_keep_syncing() {
    let a = Arc::new(owner().await);
    publish_addrs(&a);
    let t = invite(&a, "writer", 60_000);
    let (b, _) = joiner(&a, &t).await;
    publish_addrs(&b);

    let key = iroh::PublicKey::from_bytes(&a.store.author().0).unwrap();
    let addr: SocketAddr = a.net.addrs()[0].parse().unwrap();
    // One attacker's connection: random bytes, then an oversize frame, then
    // a frame that claims far more than it sends. Returns whether it ever
    // got a byte back.
    let attack = move |kind: u8| async move {
        let ep = dialer(rand::random(), "127.0.0.1:0").await;
        let to = iroh::EndpointAddr::new(key).with_ip_addr(addr);
        let mut answered = false;
        if let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(5), ep.connect(to, net::SYNC_ALPN)).await
            && let Ok(Ok((mut tx, mut rx))) = tokio::time::timeout(Duration::from_secs(5), conn.open_bi()).await
        {
            let junk: Vec<u8> = match kind {
                0 => (0..4096).map(|_| rand::random()).collect(),
                1 => ((32u32 << 20) + 1).to_be_bytes().to_vec(),
                _ => [((30u32 << 20).to_be_bytes()).as_slice(), b"short"].concat(),
            };
            let _ = tx.write_all(&junk).await;
            let _ = tx.finish();
            let mut buf = [0u8; 64];
            // A refusal frame is an answer too: only data the protocol would
            // send a member counts, and none may come.
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), rx.read(&mut buf)).await {
                answered = n.unwrap_or(0) > 4 && !String::from_utf8_lossy(&buf).contains("member");
            }
        }
        ep.close().await;
        answered
    };
    let mut attackers = tokio::task::JoinSet::new();
    for i in 0..60u8 {
        attackers.spawn(attack(i % 3));
    }
    // The honest member during the attack: each write on A reaches B.
    let mut worst = Duration::ZERO;
    for i in 0..10 {
        let t0 = Instant::now();
        let k = format!("during-{i}");
        a.store.write(vec![Op::put(k.clone(), "v")]).unwrap();
        eventually("a write reaches the member during the attack", || {
            b.store.get(k.as_bytes()).ok().flatten().is_some()
        })
        .await;
        worst = worst.max(t0.elapsed());
    }
    let mut answered = 0;
    while let Some(r) = attackers.join_next().await {
        answered += r.unwrap() as usize;
    }
    assert_eq!(answered, 0, "a stranger was served");
    eprintln!("honest member during 60 hostile connections: worst write-to-visible {worst:?}");
    assert!(a.store.frontier().is_ok(), "the store still answers");
    b.net.shutdown().await;
}

/// A member that breaks the protocol (garbage where a hello belongs, then
/// a frame far over the limit) gets its link cut and nothing else: the store
/// is untouched and the node goes on syncing with its honest members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_speaking_garbage_is_cut_off_and_nothing_changes() {
    let a = owner().await;
    publish_addrs(&a);
    let (b, _) = joiner(&a, &invite(&a, "writer", 60_000)).await;
    publish_addrs(&b);
    let (_c, cid) = joiner(&a, &invite(&a, "writer", 60_000)).await;
    let before = a.store.frontier().unwrap();

    // C's own key, C's protocol, C's garbage.
    let key = iroh::PublicKey::from_bytes(&a.store.author().0).unwrap();
    let addr: SocketAddr = a.net.addrs()[0].parse().unwrap();
    for junk in [
        (0..2048).map(|_| rand::random::<u8>()).collect::<Vec<u8>>(),
        ((64u32 << 20).to_be_bytes()).to_vec(),
    ] {
        let ep = dialer(cid.secret_bytes(), "127.0.0.1:0").await;
        let to = iroh::EndpointAddr::new(key).with_ip_addr(addr);
        let conn = tokio::time::timeout(Duration::from_secs(5), ep.connect(to, net::SYNC_ALPN))
            .await
            .expect("a member is let in")
            .expect("a member is let in");
        let (mut tx, mut rx) = conn.open_bi().await.unwrap();
        let _ = tx.write_all(&junk).await;
        let _ = tx.finish();
        let mut buf = vec![0u8; 1 << 16];
        let got = tokio::time::timeout(Duration::from_secs(10), rx.read(&mut buf)).await;
        // Cut off: the stream or the connection ends; no hello, no entries.
        assert!(
            matches!(got, Ok(Ok(None)) | Ok(Err(_))),
            "the node answered garbage: {got:?}"
        );
        ep.close().await;
    }
    assert_eq!(a.store.frontier().unwrap(), before, "garbage changed the store");
    // The honest member still gets every write.
    a.store.write(vec![Op::put("after", "garbage")]).unwrap();
    eventually("a write reaches B after the garbage", || {
        b.store.get(b"after").ok().flatten().is_some()
    })
    .await;
}
