//! `pullgate serve`: load everything, take the socket (systemd's, or bind one) and the metrics
//! port, drop privileges, serve until SIGTERM, reload on SIGHUP, tell systemd when it is ready,
//! and keep `/readyz` saying whether a pull can be served now: the policy and trust loaded
//! (before serving began), containerd answering, the audit log writable.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::signal::unix::{signal, SignalKind};

use crate::{
    audit::AuditError,
    containerd::NamespaceError,
    policy::PolicyErrors,
    registry::{DockerConfigError, RegistriesError},
};

use crate::{
    audit::AuditLog,
    config::Config,
    containerd::Containerd,
    cri::{self, ImageGate, Upstream},
    gate::{Gate, Judge},
    metrics::{self, endpoint::Readiness, Metrics},
    node,
    policy::Policy,
    prefetch::Prefetcher,
    registry::{DockerConfig, Registries},
    state::StateDir,
};

/// Why `pullgate serve` could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Policy(#[from] PolicyErrors),
    #[error("{0}")]
    Audit(#[from] AuditError),
    /// The registry clients could not be built (an unreadable CA file, a hosts.toml that does
    /// not parse).
    #[error("{0}")]
    Registries(#[from] RegistriesError),
    #[error("{0}")]
    Namespace(#[from] NamespaceError),
    /// `dockerConfig` could not be read.
    #[error("dockerConfig: {0}")]
    DockerConfig(#[from] DockerConfigError),
    /// An operating-system resource `serve` needs: a signal handler, a socket, a port.
    #[error("{what}: {source}")]
    Os { what: String, source: std::io::Error },
    #[error("dropping privileges: {0}")]
    Privileges(std::io::Error),
}

fn os(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.into();
    move |source| ServeError::Os { what, source }
}

/// Opens a new audit file whenever the current one was moved away, as SIGHUP does; a failure is
/// logged once until a reopen succeeds again.
async fn reopen_moved_audit(gate: Arc<Gate>) {
    let mut tick = tokio::time::interval(AUDIT_REOPEN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match gate.reopen_audit() {
            Ok(reopened) => {
                if reopened {
                    tracing::info!("audit log moved away: a new file continues the chain");
                }
                failing = false;
            }
            Err(error) => {
                if !failing {
                    tracing::error!(%error, "audit log not reopened; records keep going to the moved file");
                }
                failing = true;
            }
        }
    }
}

/// How often readiness is checked once the first check ran.
const READINESS_INTERVAL: Duration = Duration::from_secs(1);

/// How often the audit log's path is checked for a rotation that SIGHUP did not announce: a
/// reload that failed (pullgate restarting when logrotate signalled) or a reopen that failed
/// would otherwise leave records going to the moved file for good, which logrotate, finding no
/// file at the path, never rotates again.
const AUDIT_REOPEN_INTERVAL: Duration = Duration::from_secs(5);

/// How long containerd has to answer CRI Version in a readiness check.
const VERSION_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the proxy described by `config` until SIGTERM or SIGINT; returns after draining. It
/// serves on `inherited`, the socket systemd passed ([`node::inherited_listener`]), if there
/// is one, and binds `config.listen` otherwise.
pub async fn run(config: Config, inherited: Option<std::os::unix::net::UnixListener>) -> Result<(), ServeError> {
    // Before anything is created: the audit log and state are not for other users.
    node::restrict_umask();
    let policy = Policy::load(&config.policy)?;
    tracing::info!(policy = %config.policy.display(), name = policy.name(), hash = policy.hash(), "policy loaded");
    let audit = AuditLog::open(&config.audit.path)?;
    let metrics = Arc::new(Metrics::new());
    let registries = Registries::new(&config, metrics.clone())?;
    log_hosts(&registries);
    let docker_config = DockerConfig::read(&config.docker_config)?;
    tracing::info!(keys = docker_config.len(), "docker config loaded");
    let upstream = Upstream::connect_lazy(&config.upstream);
    let containerd = Containerd::new(upstream.own_channel(), &config.containerd_namespace)?;
    // ImageStatus trusts what it remembers of containerd's names only while these are followed.
    tokio::spawn(containerd.follow_image_events());
    let mut judge = Judge::new(registries.clone(), config.verify_timeout, metrics.clone());
    if config.prefetch {
        judge = judge.with_prefetcher(Prefetcher::new(containerd.content().clone(), registries.clone()));
    }
    judge.set_docker_config(docker_config);
    let state = open_state(config.state_dir.as_deref());
    let gate = Arc::new(Gate::new(
        policy,
        judge,
        audit,
        upstream,
        containerd,
        metrics.clone(),
        state,
    ));

    let mut terminate = signal(SignalKind::terminate()).map_err(os("SIGTERM handler"))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(os("SIGINT handler"))?;
    let mut hangup = signal(SignalKind::hangup()).map_err(os("SIGHUP handler"))?;
    // A write past RLIMIT_FSIZE would otherwise kill the process by SIGXFSZ; handled, it fails
    // with EFBIG, and the audit log's failed write is dealt with like a full disk.
    let mut file_too_large =
        signal(SignalKind::from_raw(nix::sys::signal::Signal::SIGXFSZ as i32)).map_err(os("SIGXFSZ handler"))?;
    let bound_here = inherited.is_none();
    let listener = match inherited {
        Some(listener) => {
            tracing::info!("using the socket systemd passed (socket activation)");
            tokio::net::UnixListener::from_std(listener).map_err(os("socket activation"))?
        }
        None => node::bind_socket(&config.listen, config.socket.mode)
            .map_err(os(format!("listen {}", config.listen.display())))?,
    };
    let metrics_listener = match &config.metrics {
        Some(m) => Some(
            tokio::net::TcpListener::bind(m.listen)
                .await
                .map_err(os(format!("metrics.listen {}", m.listen)))?,
        ),
        None => None,
    };
    // Everything that needed privilege (the sockets, the audit log) is done.
    match node::drop_privileges() {
        Ok(0) => tracing::debug!("capabilities dropped, no_new_privs set"),
        Ok(left) => tracing::warn!(
            left,
            "capabilities dropped, but without CAP_SETPCAP the bounding set keeps {left}; no_new_privs keeps them out of reach"
        ),
        Err(error) => return Err(ServeError::Privileges(error)),
    }
    tracing::info!(listen = %config.listen.display(), upstream = %config.upstream.display(), "serving");
    let readiness = Arc::new(Readiness::new(format!(
        "not ready: containerd at {} has not answered CRI Version yet",
        config.upstream.display()
    )));
    // Set once systemd was told READY=1.
    let announced = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_readiness(
        gate.clone(),
        readiness.clone(),
        announced.clone(),
        config.upstream.display().to_string(),
    ));
    let metrics_endpoint =
        metrics_listener.map(|listener| tokio::spawn(metrics::endpoint::serve(listener, metrics.clone(), readiness)));
    let size_limit = tokio::spawn(async move {
        while file_too_large.recv().await.is_some() {
            tracing::error!("SIGXFSZ: a write went past the file size limit (RLIMIT_FSIZE)");
        }
    });

    let reload = {
        let gate = gate.clone();
        let metrics = metrics.clone();
        let path = config.policy.clone();
        let docker_config = config.docker_config.clone();
        let announced = announced.clone();
        async move {
            while hangup.recv().await.is_some() {
                let announced = announced.load(Ordering::SeqCst);
                if announced {
                    node::notify::reloading();
                }
                match gate.reopen_audit() {
                    Ok(true) => tracing::info!("audit log moved away: a new file continues the chain"),
                    Ok(false) => {}
                    Err(error) => {
                        tracing::error!(%error, "audit log not reopened; records keep going to the moved file")
                    }
                }
                // containerd's hosts.toml files and dockerConfig: a broken one keeps the last
                // good one in use, and counts as a refused reload.
                match registries.reload_hosts() {
                    Ok(true) => log_hosts(&registries),
                    Ok(false) => {}
                    Err(error) => {
                        metrics.policy_reload(false);
                        tracing::error!(%error, "registryHosts reload refused; the last good registry host configuration stays in force")
                    }
                }
                match gate.reload_docker_config(&docker_config) {
                    Ok(()) => tracing::info!("docker config reloaded"),
                    Err(error) => {
                        metrics.policy_reload(false);
                        tracing::error!(%error, "docker config reload refused; the last good one stays in force")
                    }
                }
                match gate.reload_policy(&path) {
                    Ok(()) => tracing::info!(policy = %path.display(), hash = gate.policy().hash(), "policy reloaded"),
                    Err(error) => {
                        tracing::error!(policy = %path.display(), %error, "policy reload refused; the last good policy stays in force")
                    }
                }
                if announced {
                    node::notify::ready(&format!("serving; policy {}", gate.policy().hash()));
                }
            }
        }
    };
    let reloader = tokio::spawn(reload);
    let reopener = tokio::spawn(reopen_moved_audit(gate.clone()));
    let shutdown = async {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
        }
        node::notify::stopping();
    };
    cri::serve(listener, gate.clone(), config.socket.allowed_uids.clone(), shutdown).await;
    gate.flush_peer_refusals().await;
    // Blocking, once, at exit: what the background writer had not reached yet.
    gate.flush_admitted();
    reloader.abort();
    reopener.abort();
    watcher.abort();
    size_limit.abort();
    if let Some(endpoint) = metrics_endpoint {
        endpoint.abort();
    }
    // A socket systemd passed stays: it holds the next pulls while pullgate restarts.
    if bound_here {
        let _ = std::fs::remove_file(&config.listen);
    }
    Ok(())
}

/// The state directory, if configured and fit to hold what vouches for images. One that is not
/// (another owner, writable by others, not creatable) is logged and not used: pullgate then
/// verifies again after each restart, as without one; it does not refuse to start.
fn open_state(dir: Option<&std::path::Path>) -> Option<StateDir> {
    let Some(dir) = dir else {
        tracing::info!("stateDir disabled: verifications are kept in memory only");
        return None;
    };
    match StateDir::open(dir) {
        Ok(state) => Some(state),
        Err(error) => {
            tracing::error!(%error, "stateDir not used: verifications are kept in memory only");
            None
        }
    }
}

/// Logs the registry host configuration in use: each directory and its hosts in order.
fn log_hosts(registries: &Registries) {
    let hosts = registries.hosts();
    let Some(root) = hosts.root() else {
        return tracing::info!("registryHosts disabled: registries are reached directly");
    };
    if !hosts.exists() {
        return tracing::info!(registry_hosts = %root.display(), "registryHosts does not exist: registries are reached directly");
    }
    for (name, namespace) in hosts.namespaces() {
        let order = crate::registry::hosts::describe(&namespace.hosts);
        tracing::info!(registry_hosts = %root.display(), registry = name, hosts = %order, "registry host configuration");
    }
}

/// Checks, now and then every [`READINESS_INTERVAL`], whether a pull can be served: containerd
/// answers CRI Version, and an audit record could be written. `/readyz` follows each check,
/// both ways; systemd is told READY=1 the first time. Calls are served throughout, and fail as
/// containerd or the audit log make them.
async fn watch_readiness(gate: Arc<Gate>, readiness: Arc<Readiness>, announced: Arc<AtomicBool>, upstream: String) {
    loop {
        // What is missing: for systemd's one-word status, and the reason `/readyz` gives.
        let state = match gate.upstream().version(VERSION_TIMEOUT).await {
            Err(status) => Err((
                "waiting for containerd",
                format!(
                    "not ready: containerd at {upstream} does not answer CRI Version: {}",
                    status.message()
                ),
            )),
            Ok(version) => match gate.check_audit().await {
                Err(error) => Err(("audit log not writable", format!("not ready: {error}"))),
                Ok(()) => {
                    if !announced.load(Ordering::SeqCst) {
                        tracing::info!(
                            runtime = %version.runtime_name,
                            version = %version.runtime_version,
                            cri = %version.runtime_api_version,
                            "containerd answers"
                        );
                    }
                    Ok(())
                }
            },
        };
        let changed = readiness.set(state.as_ref().map(|_| ()).map_err(|(_, reason)| reason.clone()));
        match &state {
            Ok(()) if !announced.swap(true, Ordering::SeqCst) => {
                tracing::info!("ready: containerd answers and the audit log is writable");
                node::notify::ready(&format!("serving; policy {}", gate.policy().hash()));
            }
            Ok(()) if changed => {
                tracing::info!("ready again: containerd answers and the audit log is writable");
                node::notify::status(&format!("serving; policy {}", gate.policy().hash()));
            }
            Err((status, reason)) if changed => {
                tracing::warn!(%reason, "not ready");
                node::notify::status(status);
            }
            _ => {}
        }
        tokio::time::sleep(READINESS_INTERVAL).await;
    }
}
