//! The local HTTP API: files of the mounted share over HTTP, for scripts and
//! services that would rather not touch a mount.
//!
//! ```text
//! GET    /shares/{share}/files/{path}     the file's bytes
//! PUT    /shares/{share}/files/{path}     writes it (parents made), atomically
//! DELETE /shares/{share}/files/{path}     removes it
//! GET    /shares/{share}/files?prefix=P   JSON list of files under P
//! ```
//!
//! `{share}` is the share's name in this home or its id. Every request needs
//! `Authorization: Bearer lattice_...` (see `tokens.rs`): 401 without a valid,
//! unexpired, unrevoked token; 403 when the token is for another share or
//! lacks the permission; 429 past its rate (a bucket of 100 requests that
//! refills at 50 per second per token).
//!
//! Requests go through the mount itself, so a write through the API is a
//! write like any other: same checks (a read-only mount gives 403 too), same
//! group commit, same replication. The server binds 127.0.0.1 unless told
//! otherwise (`--api`), and stops before the mount is released.
//!
//! Paths never leave the share: `.`, `..` and absolute paths are refused,
//! and so is a path through a symbolic link (403), since a member can make a
//! link point anywhere on this machine. (A link made between that check and
//! the request's own file call is not caught: the API is as safe as a local
//! program that checks before it opens.) A PUT is streamed to disk after the
//! token is checked, never held in memory; at most 32 requests run at once
//! (503 past that).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Component, Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use n0_future::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::tokens::{self, Perm};

/// Largest body a PUT takes.
const MAX_BODY: u64 = 1 << 30;
/// Requests under way at most.
const SLOTS: usize = 32;
/// Most files a listing returns.
const MAX_LISTED: usize = 10_000;
const BUCKET: f64 = 100.0;
const REFILL_PER_S: f64 = 50.0;

pub struct Api {
    pub home: PathBuf,
    /// The share's name in this home, and its id.
    pub name: String,
    pub share_id: String,
    /// The mount point.
    pub dir: PathBuf,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    slots: Arc<tokio::sync::Semaphore>,
    /// The token file as last read, with its mtime and length.
    tokens: Mutex<Option<(SystemTime, u64, Vec<tokens::Record>)>>,
}

impl Api {
    pub fn new(home: PathBuf, name: String, share_id: String, dir: PathBuf) -> Api {
        Api {
            home,
            name,
            share_id,
            dir,
            buckets: Mutex::new(HashMap::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(SLOTS)),
            tokens: Mutex::new(None),
        }
    }

    /// The token records, read again only when the file changed.
    fn records(&self) -> anyhow::Result<Vec<tokens::Record>> {
        let meta = match std::fs::metadata(tokens::file(&self.home)) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let stamp = (meta.modified()?, meta.len());
        let mut cached = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, len, records)) = cached.as_ref()
            && (*t, *len) == stamp
        {
            return Ok(records.clone());
        }
        let records = tokens::load(&self.home)?;
        *cached = Some((stamp.0, stamp.1, records.clone()));
        Ok(records)
    }

    /// The token's record if it may do `need` on `share`, else the answer.
    fn admit(&self, headers: &HeaderMap, share: &str, need: fn(Perm) -> bool) -> Result<(), Response> {
        let records = self.records().map_err(|e| {
            answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot read the tokens: {e:#}"),
            )
        })?;
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| answer(StatusCode::UNAUTHORIZED, "an Authorization: Bearer token is needed"))?;
        let r =
            tokens::check(&records, presented.trim()).map_err(|e| answer(StatusCode::UNAUTHORIZED, &e.to_string()))?;
        if share != self.name && share != self.share_id {
            return Err(answer(StatusCode::NOT_FOUND, "no such share here"));
        }
        if r.share != self.name {
            return Err(answer(StatusCode::FORBIDDEN, "the token is for another share"));
        }
        if !need(r.perm) {
            return Err(answer(StatusCode::FORBIDDEN, "the token does not allow this"));
        }
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (level, at) = b.entry(r.id).or_insert((BUCKET, Instant::now()));
        *level = (*level + at.elapsed().as_secs_f64() * REFILL_PER_S).min(BUCKET);
        *at = Instant::now();
        if *level < 1.0 {
            return Err(answer(
                StatusCode::TOO_MANY_REQUESTS,
                "slow down: this token's rate is used up",
            ));
        }
        *level -= 1.0;
        Ok(())
    }

    /// `path` under the mount, refusing anything that would leave it.
    fn place(&self, path: &str) -> Result<PathBuf, Response> {
        let p = FsPath::new(path);
        if path.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(answer(
                StatusCode::BAD_REQUEST,
                "the path must be relative, without . or ..",
            ));
        }
        Ok(self.dir.join(p))
    }
}

/// Refuses a path through a symbolic link: walks `full` down from `root`
/// and fails with `PermissionDenied` at the first link (what does not exist
/// yet is fine: a PUT makes it).
fn no_links(root: &FsPath, full: &FsPath) -> std::io::Result<()> {
    let mut p = root.to_path_buf();
    for c in full.strip_prefix(root).unwrap_or(full).components() {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the path goes through a symbolic link",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What every request goes through first: a slot (503 when 32 run), then
/// the token (401, 403, 404, 429).
fn enter(
    api: &Api,
    h: &HeaderMap,
    share: &str,
    need: fn(Perm) -> bool,
) -> Result<tokio::sync::OwnedSemaphorePermit, Response> {
    let slot = api.slots.clone().try_acquire_owned().map_err(|_| {
        answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests under way; try again",
        )
    })?;
    api.admit(h, share, need)?;
    Ok(slot)
}

/// [`enter`], then the file `path` names under the mount.
fn enter_at(
    api: &Api,
    h: &HeaderMap,
    share: &str,
    need: fn(Perm) -> bool,
    path: &str,
) -> Result<(tokio::sync::OwnedSemaphorePermit, PathBuf), Response> {
    let slot = enter(api, h, share, need)?;
    Ok((slot, api.place(path)?))
}

fn answer(code: StatusCode, why: &str) -> Response {
    (code, format!("{why}\n")).into_response()
}

fn io_answer(e: std::io::Error) -> Response {
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => StatusCode::NOT_FOUND,
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => StatusCode::FORBIDDEN,
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => StatusCode::INSUFFICIENT_STORAGE,
        std::io::ErrorKind::IsADirectory | std::io::ErrorKind::NotADirectory | std::io::ErrorKind::InvalidInput => {
            StatusCode::CONFLICT
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    answer(code, &e.to_string())
}

/// Runs blocking file work off the async workers; an I/O error becomes its answer.
async fn blocking(f: impl FnOnce() -> std::io::Result<Response> + Send + 'static) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => io_answer(e),
        Err(_) => answer(StatusCode::INTERNAL_SERVER_ERROR, "the request failed"),
    }
}

async fn get_file(State(api): State<Arc<Api>>, Path((share, path)): Path<(String, String)>, h: HeaderMap) -> Response {
    let (_slot, p) = match enter_at(&api, &h, &share, Perm::reads, &path) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let root = api.dir.clone();
    blocking(move || {
        no_links(&root, &p)?;
        Ok(([(header::CONTENT_TYPE, "application/octet-stream")], std::fs::read(p)?).into_response())
    })
    .await
}

async fn put_file(
    State(api): State<Arc<Api>>,
    Path((share, path)): Path<(String, String)>,
    h: HeaderMap,
    body: Body,
) -> Response {
    // The token is checked before a byte of the body is read.
    let (_slot, p) = match enter_at(&api, &h, &share, Perm::writes, &path) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let root = api.dir.clone();
    let (parent, name) = match (p.parent(), p.file_name()) {
        (Some(d), Some(n)) => (d.to_path_buf(), n.to_string_lossy().into_owned()),
        _ => return answer(StatusCode::BAD_REQUEST, "no file name"),
    };
    // Written beside it, then renamed over it: a reader never sees half.
    let tmp = parent.join(format!(".{name}.lattice-api-{}", rand::random::<u32>()));
    let (r2, d2) = (root.clone(), parent.clone());
    let ready = blocking(move || {
        no_links(&r2, &d2)?;
        std::fs::create_dir_all(&d2)?;
        Ok(answer(StatusCode::OK, ""))
    })
    .await;
    if ready.status() != StatusCode::OK {
        return ready;
    }
    let streamed = async {
        let mut f = tokio::fs::File::create(&tmp).await?;
        let mut stream = body.into_data_stream();
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(std::io::Error::other)?;
            total += chunk.len() as u64;
            if total > MAX_BODY {
                return Ok(Some(answer(StatusCode::PAYLOAD_TOO_LARGE, "the body is over 1 GiB")));
            }
            f.write_all(&chunk).await?;
        }
        f.sync_all().await?;
        std::io::Result::Ok(None)
    }
    .await;
    let refused = match streamed {
        Ok(None) => None,
        Ok(Some(r)) => Some(r),
        Err(e) => Some(io_answer(e)),
    };
    if let Some(r) = refused {
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(tmp)).await;
        return r;
    }
    blocking(move || {
        let renamed = no_links(&root, &p).and_then(|_| std::fs::rename(&tmp, &p));
        if renamed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        renamed?;
        Ok(answer(StatusCode::OK, "written"))
    })
    .await
}

async fn delete_file(
    State(api): State<Arc<Api>>,
    Path((share, path)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    let (_slot, p) = match enter_at(&api, &h, &share, Perm::writes, &path) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let root = api.dir.clone();
    blocking(move || {
        no_links(&root, &p)?;
        std::fs::remove_file(p)?;
        Ok(answer(StatusCode::OK, "deleted"))
    })
    .await
}

async fn list(
    State(api): State<Arc<Api>>,
    Path(share): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
) -> Response {
    let _slot = match enter(&api, &h, &share, Perm::reads) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    // Walk from the deepest folder the prefix names.
    let start = prefix.rsplit_once('/').map_or("", |(d, _)| d).to_string();
    let from = if start.is_empty() {
        api.dir.clone()
    } else {
        match api.place(&start) {
            Ok(p) => p,
            Err(r) => return r,
        }
    };
    let root = api.dir.clone();
    blocking(move || {
        no_links(&root, &from)?;
        let mut files = Vec::new();
        let mut todo = vec![from];
        while let Some(d) = todo.pop() {
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for e in entries.flatten() {
                let path = e.path();
                let rel = path.strip_prefix(&root).unwrap_or(&path).to_string_lossy().into_owned();
                let Ok(meta) = e.metadata() else { continue };
                if meta.is_dir() {
                    if rel.starts_with(&prefix) || prefix.starts_with(&format!("{rel}/")) {
                        todo.push(path);
                    }
                } else if rel.starts_with(&prefix) && files.len() < MAX_LISTED {
                    files.push(serde_json::json!({ "path": rel, "size": meta.len() }));
                }
            }
        }
        files.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
        let body = serde_json::json!({ "files": files, "truncated": files.len() >= MAX_LISTED });
        Ok(([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response())
    })
    .await
}

fn router(api: Api) -> Router {
    Router::new()
        .route("/shares/{share}/files", get(list))
        .route(
            "/shares/{share}/files/{*path}",
            get(get_file).put(put_file).delete(delete_file),
        )
        .layer(DefaultBodyLimit::disable())
        .with_state(Arc::new(api))
}

/// A running API server: stop it with [`Server::stop`] before the mount is
/// released (requests under way go through the mount).
pub struct Server {
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Serves the share mounted at `dir` on `want`; port 0 takes the port
    /// kept in `port_file` (chosen at the first start and kept, so scripts
    /// find it again), or a new one when that is taken (said in the log).
    pub async fn open(api: Api, want: SocketAddr, port_file: &FsPath) -> anyhow::Result<Server> {
        let kept: Option<u16> = std::fs::read_to_string(port_file)
            .ok()
            .and_then(|p| p.trim().parse().ok());
        let first = match (want.port(), kept) {
            (0, Some(p)) => SocketAddr::new(want.ip(), p),
            _ => want,
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stop = async move {
            let _ = rx.await;
        };
        let app = router(api);
        let listener = match tokio::net::TcpListener::bind(first).await {
            Ok(l) => l,
            Err(e) if first != want => {
                tracing::warn!("the API's kept address {first} is taken ({e}); taking another port");
                tokio::net::TcpListener::bind(want).await?
            }
            Err(e) => return Err(e.into()),
        };
        let addr = listener.local_addr()?;
        if want.port() == 0 && kept != Some(addr.port()) {
            std::fs::write(port_file, format!("{}\n", addr.port()))?;
        }
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
                tracing::warn!("the HTTP API stopped: {e}");
            }
        });
        tracing::info!("HTTP API on http://{addr}");
        Ok(Server { addr, stop: tx, task })
    }

    /// Stops taking requests and waits for those under way, 5 s at most
    /// (a client that never finishes its upload must not hold the unmount).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(std::time::Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            tracing::warn!("the HTTP API did not finish its requests within 5 s; cut them off");
            task.abort();
        }
    }
}
