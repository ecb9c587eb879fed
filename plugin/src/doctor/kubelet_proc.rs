//! The kubelet that runs, as /proc shows it: its command line, when it started, and the
//! KubeletConfiguration files it was started with, read as it reads them (through its own root
//! and working directory). Files on disk say what kubelet will do after its next restart; only
//! the process says what it does now — `kubeadm upgrade node` rewrites the file under it.

use std::{
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use crate::file::{read_bounded, ReadError};

/// Where the processes are.
pub(super) const PROC: &str = "/proc";

/// kubelet's command line is a few kilobytes; the kernel allows far more, so the read is bounded.
const MAX_CMDLINE: u64 = 256 * 1024;

/// A KubeletConfiguration file (kubeadm's is a few kilobytes).
const MAX_CONFIG: u64 = 1024 * 1024;

/// Files read from kubelet's `--config-dir`.
const MAX_DROPINS: usize = 64;

/// At most this many kubelet processes are judged; a node has one. More is no node doctor can
/// judge: any user can start processes named `kubelet`, and judging only some of them could
/// pass on decoys while the real one goes unread.
pub(super) const MAX_KUBELETS: usize = 8;

/// A file changed less than this after kubelet started may have been read by it: the start time
/// /proc gives is in clock ticks since boot, and a write just before a restart must not count.
const START_SLACK: Duration = Duration::from_secs(1);

/// The flags of kubelet's command line that decide where it pulls from.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct KubeletArgs {
    /// `--image-service-endpoint`, which wins over the configuration files.
    pub image_service_endpoint: Option<String>,
    /// `--config`: the KubeletConfiguration file.
    pub config: Option<String>,
    /// `--config-dir`: KubeletConfiguration drop-ins (`*.conf`), merged over `--config`.
    pub config_dir: Option<String>,
}

/// One kubelet process of this node.
#[derive(Debug, Clone)]
pub(super) struct RunningKubelet {
    pub pid: u32,
    pub args: KubeletArgs,
    pub started: SystemTime,
}

/// One KubeletConfiguration file as the running kubelet names it, read now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ConfigFile {
    /// The path as kubelet sees it.
    pub path: PathBuf,
    /// Its `imageServiceEndpoint`, if it sets one.
    pub endpoint: Option<String>,
    pub state: FileState,
}

/// Whether a configuration file is still what kubelet read when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileState {
    /// Not modified, nor replaced, since kubelet started.
    AsStarted,
    /// Modified or replaced after kubelet started (its later mtime or ctime).
    ChangedAt(SystemTime),
    /// Gone since kubelet started: kubelet would not start again as it is.
    Removed,
}

/// What kept a kubelet process or its files from being read.
#[derive(Debug, thiserror::Error)]
pub(super) enum InspectError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: ReadError },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a /proc stat line")]
    Stat { path: PathBuf },
    #[error("{path}: not YAML: {source}")]
    Yaml {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("{path}: imageServiceEndpoint is not a string")]
    NotAString { path: PathBuf },
    #[error("{path}: more than {MAX_DROPINS} drop-ins")]
    TooManyDropins { path: PathBuf },
}

// === impl InspectError ===

impl InspectError {
    /// The process was gone before its own /proc files could be read (kubelet restarting).
    pub(super) fn process_gone(&self) -> bool {
        let (Self::Read {
            path,
            source: ReadError::Io(e),
        }
        | Self::Io { path, source: e }) = self
        else {
            return false;
        };
        let own = ["cmdline", "stat", "cwd"]
            .iter()
            .any(|name| path.file_name().is_some_and(|f| f == *name));
        // ESRCH: the process exited and its /proc directory is going.
        own && (e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(3))
    }
}

/// The kubelet processes of the node /proc belongs to: those in the PID namespace the proc file
/// system was mounted for. A kubelet in a namespace below it (a kind node's, seen from its host)
/// is another node's; doctor chrooted into the host from a pod still finds the host's kubelet.
/// Stops after [`MAX_KUBELETS`] + 1, so the caller can tell there are too many.
pub(super) fn kubelet_pids(proc: &Path) -> io::Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in fs::read_dir(proc)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let dir = entry.path();
        if !is_kubelet(&dir) {
            continue;
        }
        // Unreadable: the process cannot be placed, so it is judged (and fails to be read).
        let status = read_bounded(&dir.join("status"), 64 * 1024).unwrap_or_default();
        if namespace_depth(&String::from_utf8_lossy(&status)).is_some_and(|depth| depth > 1) {
            continue;
        }
        pids.push(pid);
        if pids.len() > MAX_KUBELETS {
            break;
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

/// How many PID namespaces, from /proc's own down, a process is in: the count of its `NSpid`
/// ids in `/proc/PID/status` (one for a process of /proc's own namespace). None before Linux 4.1.
pub(super) fn namespace_depth(status: &str) -> Option<usize> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .map(|ids| ids.split_whitespace().count())
}

/// A process is kubelet when its name (`comm`) or its executable's file name is `kubelet`.
/// An executable replaced by a package upgrade reads `… (deleted)`.
fn is_kubelet(dir: &Path) -> bool {
    let comm = read_bounded(&dir.join("comm"), 64).unwrap_or_default();
    if comm.strip_suffix(b"\n").unwrap_or(&comm) == b"kubelet" {
        return true;
    }
    fs::read_link(dir.join("exe")).is_ok_and(|exe| {
        let exe = exe.to_string_lossy();
        let exe = exe.strip_suffix(" (deleted)").unwrap_or(&exe);
        Path::new(exe).file_name().is_some_and(|name| name == "kubelet")
    })
}

/// Reads process `pid`'s command line and start time.
pub(super) fn read_kubelet(proc: &Path, pid: u32) -> Result<RunningKubelet, InspectError> {
    let dir = proc.join(pid.to_string());
    let cmdline = read(&dir.join("cmdline"), MAX_CMDLINE)?;
    let stat_path = dir.join("stat");
    let stat = read(&stat_path, 4096)?;
    let ticks = start_ticks(&String::from_utf8_lossy(&stat)).ok_or(InspectError::Stat { path: stat_path })?;
    let uptime_path = proc.join("uptime");
    let uptime = read(&uptime_path, 256)?;
    let uptime = uptime_seconds(&String::from_utf8_lossy(&uptime)).ok_or(InspectError::Stat { path: uptime_path })?;
    Ok(RunningKubelet {
        pid,
        args: parse_cmdline(&cmdline),
        started: start_time(SystemTime::now(), uptime, ticks, clock_ticks_per_second()),
    })
}

/// The configuration files `kubelet` was started with, in the order kubelet merges them:
/// `--config`, then `--config-dir`'s `*.conf` by name. A relative path is kubelet's working
/// directory's, and every path is read through kubelet's own root.
pub(super) fn config_files(proc: &Path, kubelet: &RunningKubelet) -> Result<Vec<ConfigFile>, InspectError> {
    let dir = proc.join(kubelet.pid.to_string());
    let mut files = Vec::new();
    if let Some(config) = &kubelet.args.config {
        let path = as_kubelet_sees(&dir, config)?;
        files.push(config_file(&dir, path, kubelet.started)?);
    }
    if let Some(config_dir) = &kubelet.args.config_dir {
        let path = as_kubelet_sees(&dir, config_dir)?;
        let on_node = through_root(&dir, &path);
        let entries = match fs::read_dir(&on_node) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                files.push(ConfigFile {
                    path,
                    endpoint: None,
                    state: FileState::Removed,
                });
                return Ok(files);
            }
            Err(source) => return Err(InspectError::Io { path, source }),
        };
        let mut names: Vec<PathBuf> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| InspectError::Io {
                path: path.clone(),
                source,
            })?;
            let name = PathBuf::from(entry.file_name());
            if name.extension().is_some_and(|ext| ext == "conf") {
                names.push(name);
                if names.len() > MAX_DROPINS {
                    return Err(InspectError::TooManyDropins { path });
                }
            }
        }
        names.sort();
        // A drop-in removed since kubelet started leaves only the directory's mtime behind.
        let state = changed_since(&on_node, kubelet.started)?;
        if state != FileState::AsStarted {
            files.push(ConfigFile {
                path: path.clone(),
                endpoint: None,
                state,
            });
        }
        for name in names {
            files.push(config_file(&dir, path.join(name), kubelet.started)?);
        }
    }
    Ok(files)
}

/// One configuration file: its endpoint now, and whether it changed since `started`.
fn config_file(dir: &Path, path: PathBuf, started: SystemTime) -> Result<ConfigFile, InspectError> {
    let on_node = through_root(dir, &path);
    let text = match read_bounded(&on_node, MAX_CONFIG) {
        Ok(text) => text,
        Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(ConfigFile {
                path,
                endpoint: None,
                state: FileState::Removed,
            })
        }
        Err(source) => return Err(InspectError::Read { path, source }),
    };
    let endpoint = endpoint_in_yaml(&text).map_err(|e| match e {
        YamlEndpoint::NotYaml(source) => InspectError::Yaml {
            path: path.clone(),
            source,
        },
        YamlEndpoint::NotAString => InspectError::NotAString { path: path.clone() },
    })?;
    let state = changed_since(&on_node, started)?;
    Ok(ConfigFile { path, endpoint, state })
}

/// Why a KubeletConfiguration names no endpoint that can be read.
pub(super) enum YamlEndpoint {
    NotYaml(serde_yaml_ng::Error),
    NotAString,
}

/// `imageServiceEndpoint` in a KubeletConfiguration (YAML or JSON); empty is unset, as in kubelet.
pub(super) fn endpoint_in_yaml(text: &[u8]) -> Result<Option<String>, YamlEndpoint> {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_slice(text).map_err(YamlEndpoint::NotYaml)?;
    match doc.get("imageServiceEndpoint") {
        None | Some(serde_yaml_ng::Value::Null) => Ok(None),
        Some(serde_yaml_ng::Value::String(s)) if s.is_empty() => Ok(None),
        Some(serde_yaml_ng::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(YamlEndpoint::NotAString),
    }
}

/// Whether `path` was modified or replaced (mtime or ctime) after `started`, with slack.
fn changed_since(path: &Path, started: SystemTime) -> Result<FileState, InspectError> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(FileState::Removed),
        Err(source) => {
            return Err(InspectError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let changed = [(meta.mtime(), meta.mtime_nsec()), (meta.ctime(), meta.ctime_nsec())]
        .into_iter()
        .filter_map(|(secs, nanos)| {
            let secs = u64::try_from(secs).ok()?;
            let nanos = u32::try_from(nanos).ok()?;
            SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
        })
        .max();
    Ok(match changed {
        Some(at) if at > started + START_SLACK => FileState::ChangedAt(at),
        _ => FileState::AsStarted,
    })
}

/// `path` made absolute against kubelet's working directory.
fn as_kubelet_sees(dir: &Path, path: &str) -> Result<PathBuf, InspectError> {
    let path = PathBuf::from(path);
    if path.is_absolute() {
        return Ok(path);
    }
    let cwd_link = dir.join("cwd");
    let cwd = fs::read_link(&cwd_link).map_err(|source| InspectError::Io { path: cwd_link, source })?;
    Ok(cwd.join(path))
}

/// An absolute path of kubelet's, reached through its root (`/proc/PID/root`), so a kubelet in
/// another mount namespace (doctor in a pod) is read as it reads its files.
fn through_root(dir: &Path, path: &Path) -> PathBuf {
    dir.join("root").join(path.strip_prefix("/").unwrap_or(path))
}

fn read(path: &Path, limit: u64) -> Result<Vec<u8>, InspectError> {
    read_bounded(path, limit).map_err(|source| InspectError::Read {
        path: path.to_owned(),
        source,
    })
}

/// kubelet's flags from its NUL-separated command line, read as its flag parser (pflag) reads
/// them: `--flag=value` or `--flag value`, the last one wins, nothing after `--`.
pub(super) fn parse_cmdline(cmdline: &[u8]) -> KubeletArgs {
    let mut args = KubeletArgs::default();
    let words: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let mut words = words.into_iter().skip(1);
    while let Some(word) = words.next() {
        if word == "--" {
            break;
        }
        let Some(flag) = word.strip_prefix("--") else {
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (flag, None),
        };
        let slot = match name {
            "image-service-endpoint" => &mut args.image_service_endpoint,
            "config" => &mut args.config,
            "config-dir" => &mut args.config_dir,
            _ => continue,
        };
        let value = match inline {
            Some(value) => Some(value),
            None => words.next(),
        };
        // An empty value is kubelet's default: unset.
        *slot = value.filter(|v| !v.is_empty());
    }
    args
}

/// Field 22 of `/proc/PID/stat`, the start time in clock ticks after boot. The name in field 2
/// may hold spaces and parentheses, so fields are counted from the last `)`.
pub(super) fn start_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The first field of `/proc/uptime`: seconds since boot.
pub(super) fn uptime_seconds(uptime: &str) -> Option<f64> {
    uptime
        .split_whitespace()
        .next()?
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
}

/// When a process that started `ticks` after boot started, given the uptime read `now`.
pub(super) fn start_time(now: SystemTime, uptime: f64, ticks: u64, per_second: u64) -> SystemTime {
    let age = (uptime - ticks as f64 / per_second.max(1) as f64).max(0.0);
    now.checked_sub(Duration::from_secs_f64(age))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The kernel's user-visible clock tick (USER_HZ), 100 where it cannot be read.
fn clock_ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}
