//! `dockerConfig`: the Docker config.json whose credentials pullgate uses for a registry the
//! pull carried none for. One that does not load keeps `serve` from starting.

use super::Check;
use crate::{config::DockerConfigFile, registry::DockerConfig};

/// The Docker config loads, or there is none to load.
pub(super) fn docker_config(file: &DockerConfigFile) -> Check {
    let anonymous = "registries other than an image's own are asked anonymously";
    match (file, DockerConfig::read(file)) {
        (DockerConfigFile::Disabled, _) => Check::ok(format!("dockerConfig is \"\": {anonymous}")),
        (DockerConfigFile::Default(path), Ok(config)) if config.is_empty() && !path.exists() => {
            Check::ok(format!("dockerConfig {} does not exist: {anonymous}", path.display()))
        }
        (DockerConfigFile::Default(path) | DockerConfigFile::Path(path), Ok(config)) => Check::ok(format!(
            "dockerConfig {} loads: {} key{}",
            path.display(),
            config.len(),
            if config.len() == 1 { "" } else { "s" }
        )),
        (_, Err(error)) => Check::fail(
            format!("dockerConfig does not load: {error}"),
            "correct it (or set dockerConfig: \"\"), then reload pullgate (SIGHUP); a running pullgate keeps its last good one, a starting one refuses to start",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_a_missing_default_a_loaded_file_and_a_broken_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let missing = docker_config(&DockerConfigFile::Default(path.clone())).to_string();
        assert!(
            missing.starts_with("ok") && missing.contains("does not exist"),
            "{missing}"
        );
        assert!(docker_config(&DockerConfigFile::Path(path.clone()))
            .to_string()
            .starts_with("FAIL"));
        std::fs::write(&path, r#"{"auths": {"ghcr.io": {"username": "u", "password": "p"}}}"#).unwrap();
        let loaded = docker_config(&DockerConfigFile::Path(path.clone())).to_string();
        assert!(loaded.starts_with("ok") && loaded.ends_with("loads: 1 key"), "{loaded}");
        std::fs::write(&path, "{\n  \"auths\": 1\n}").unwrap();
        let broken = docker_config(&DockerConfigFile::Default(path.clone())).to_string();
        assert!(broken.starts_with("FAIL"), "{broken}");
        assert!(
            broken.contains(&format!("{}:2: not a Docker config.json", path.display())),
            "{broken}"
        );
        assert!(docker_config(&DockerConfigFile::Disabled).to_string().starts_with("ok"));
    }
}
