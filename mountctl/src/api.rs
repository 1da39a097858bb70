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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Component, Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::tokens::{self, Perm};

/// Largest body a PUT takes.
const MAX_BODY: usize = 1 << 30;
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
}

impl Api {
    pub fn new(home: PathBuf, name: String, share_id: String, dir: PathBuf) -> Api {
        Api {
            home,
            name,
            share_id,
            dir,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The token's record if it may do `need` on `share`, else the answer.
    fn admit(&self, headers: &HeaderMap, share: &str, need: fn(Perm) -> bool) -> Result<(), Response> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| answer(StatusCode::UNAUTHORIZED, "an Authorization: Bearer token is needed"))?;
        let r = tokens::check(&self.home, presented.trim())
            .map_err(|e| answer(StatusCode::UNAUTHORIZED, &e.to_string()))?;
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
    if let Err(r) = api.admit(&h, &share, Perm::reads) {
        return r;
    }
    let p = match api.place(&path) {
        Ok(p) => p,
        Err(r) => return r,
    };
    blocking(move || Ok(([(header::CONTENT_TYPE, "application/octet-stream")], std::fs::read(p)?).into_response()))
        .await
}

async fn put_file(
    State(api): State<Arc<Api>>,
    Path((share, path)): Path<(String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = api.admit(&h, &share, Perm::writes) {
        return r;
    }
    let p = match api.place(&path) {
        Ok(p) => p,
        Err(r) => return r,
    };
    blocking(move || {
        let parent = p.parent().expect("a placed path has a parent");
        std::fs::create_dir_all(parent)?;
        // Written beside it, then renamed over it: a reader never sees half.
        let name = p.file_name().expect("a placed path has a name").to_string_lossy();
        let tmp = parent.join(format!(".{name}.lattice-api-{}", rand::random::<u32>()));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &p)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        Ok(answer(StatusCode::OK, "written"))
    })
    .await
}

async fn delete_file(
    State(api): State<Arc<Api>>,
    Path((share, path)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    if let Err(r) = api.admit(&h, &share, Perm::writes) {
        return r;
    }
    let p = match api.place(&path) {
        Ok(p) => p,
        Err(r) => return r,
    };
    blocking(move || {
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
    if let Err(r) = api.admit(&h, &share, Perm::reads) {
        return r;
    }
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
        .layer(DefaultBodyLimit::max(MAX_BODY))
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

    /// Stops taking requests and waits for those under way.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
