//! Mesh identity for a local mesh: the control plane's CA, one bootstrap
//! token per proxy start, and the trust anchors the proxies pin.
//!
//! ```text
//!   STATE/ca/            (0700)  the CA: ca.crt, ca.key, token-state.json — the control plane's alone
//!   STATE/tokens.yaml    (0600)  hashes of the bootstrap tokens: the control plane's --tokens (reloaded)
//!   STATE/anchors.pem    (0644)  a copy of ca.crt: the proxies' --trust-anchors
//!   STATE/identity/      (0711)  <pod>.token (0600, owned by the proxy's UID): --identity-token-file
//! ```
//!
//! Before every start of a proxy (the first and each restart: tokens are
//! single use) [`Tokens::mint`] makes a fresh token, adds its hash to the
//! tokens file (rewritten atomically, expired entries dropped) and writes
//! the token itself where only the proxy's UID can read it. The token is
//! never logged nor put on a command line. The proxy spends it on its
//! first certificate, then renews with the renewal tokens the CA hands it.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use weft_control::ca::tokens::{TokenEntry, new_bootstrap_token, render_tokens_file};

use crate::plan::PodPlan;

/// How long a bootstrap token stays valid: a proxy spends it within
/// seconds of starting; this leaves room for a control plane that is
/// restarting meanwhile.
pub const TOKEN_TTL: Duration = Duration::from_secs(10 * 60);
/// How long the control plane may take to notice a rewritten tokens file:
/// it polls every 250 ms. A proxy starts this long after its token's hash
/// was written, so that its first request is not refused as unknown (it
/// would retry, but the refusal would show in the logs and metrics).
pub const TOKENS_RELOAD: Duration = Duration::from_millis(600);

/// The CA's state directory under a run's state directory.
pub fn ca_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("ca")
}

/// The bootstrap tokens of one run, and where they go.
#[derive(Debug)]
pub struct Tokens {
    /// The control plane's `--tokens` file.
    file: PathBuf,
    /// Where each proxy's token file is written.
    dir: PathBuf,
    /// Owner of the token files (the proxy's UID).
    owner: u32,
    ttl: Duration,
    /// Every entry still in the file, with its expiry.
    entries: Mutex<Vec<(SystemTime, TokenEntry)>>,
}

impl Tokens {
    /// `file` and `dir` as in the module's table; token files are owned by `owner`.
    pub fn new(file: PathBuf, dir: PathBuf, owner: u32, ttl: Duration) -> Tokens {
        Tokens { file, dir, owner, ttl, entries: Mutex::default() }
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Where `pod`'s proxy reads its token.
    pub fn token_path(&self, pod: &str) -> PathBuf {
        self.dir.join(format!("{pod}.token"))
    }

    /// Creates the token directory and an empty tokens file (the control
    /// plane needs the file to exist when it starts).
    pub fn create(&self) -> anyhow::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        // Exactly 0711 whatever the umask: the proxies may enter, not list.
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o711))?;
        self.write_file(&[])
    }

    /// Mints a bootstrap token for `pod` at `now`: its hash goes into the
    /// tokens file (expired entries are dropped), the token into
    /// [`Tokens::token_path`]. Returns that path.
    pub fn mint(&self, pod: &PodPlan, now: SystemTime) -> anyhow::Result<PathBuf> {
        let token = new_bootstrap_token().context("cannot make a bootstrap token")?;
        let expires = now + self.ttl;
        let entry = TokenEntry::new(&token, &pod.namespace, &pod.service_account, &pod.name, expires);
        {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.retain(|(expires, _)| *expires > now);
            entries.push((expires, entry));
            let current: Vec<TokenEntry> = entries.iter().map(|(_, e)| e.clone()).collect();
            // Under the lock: concurrent mints land in order, none is lost.
            self.write_file(&current)?;
        }
        let path = self.token_path(&pod.name);
        write_secret(&path, token.as_bytes(), self.owner)
            .with_context(|| format!("writing {}'s bootstrap token to {}", pod.name, path.display()))?;
        Ok(path)
    }

    /// The entries in the file now (tests and diagnostics).
    pub fn entries(&self) -> Vec<TokenEntry> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(_, e)| e.clone()).collect()
    }

    fn write_file(&self, entries: &[TokenEntry]) -> anyhow::Result<()> {
        // Hashes only, yet nobody else's business: 0600, written atomically
        // (a temporary file renamed over), so the control plane never reads
        // half a file.
        weft_control::ca::write_private_file(&self.file, render_tokens_file(entries).as_bytes())
            .with_context(|| format!("writing the tokens file {}", self.file.display()))
    }
}

/// Writes `bytes` to `path`, readable by `owner` alone (mode 0600), with
/// the same guarantees as the tokens file: created 0600 from the start,
/// chowned before a byte is written, then renamed into place.
pub fn write_secret(path: &Path, bytes: &[u8], owner: u32) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    std::os::unix::fs::fchown(&file, Some(owner), Some(owner))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Copies the CA's certificate out of its 0700 directory to `to` (0644),
/// for the proxies' `--trust-anchors`. Waits up to `within` for the
/// control plane to have written it.
pub async fn copy_anchors(ca_dir: &Path, to: &Path, within: Duration) -> anyhow::Result<()> {
    let from = ca_dir.join(weft_control::ca::issuer::CA_CERT_FILE);
    let deadline = std::time::Instant::now() + within;
    let pem = loop {
        match std::fs::read(&from) {
            Ok(pem) if !pem.is_empty() => break pem,
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("reading the CA certificate {}", from.display()));
            }
            _ if std::time::Instant::now() >= deadline => {
                anyhow::bail!("the control plane did not write its CA certificate {} within {within:?}", from.display())
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    weft_control::ca::write_file(to, &pem, 0o644).with_context(|| format!("writing the trust anchors {}", to.display()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt as _;

    use weft_control::ca::tokens::{parse_tokens, token_sha256};

    use super::*;

    fn pod(name: &str, namespace: &str, sa: &str) -> PodPlan {
        PodPlan {
            name: name.into(),
            workload: name.rsplit_once('-').map_or(name, |(w, _)| w).into(),
            namespace: namespace.into(),
            service_account: sa.into(),
            labels: BTreeMap::new(),
            ports: Vec::new(),
            ip: std::net::Ipv4Addr::LOCALHOST,
            netns: String::new(),
            veth: String::new(),
            command: Vec::new(),
            env: BTreeMap::new(),
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn each_mint_is_a_fresh_token_whose_hash_alone_is_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let tokens =
            Tokens::new(dir.path().join("tokens.yaml"), dir.path().join("identity"), uid, Duration::from_secs(600));
        tokens.create().unwrap();
        assert_eq!(std::fs::read_to_string(tokens.file()).unwrap().lines().last(), Some("tokens: []"));
        assert_eq!(std::fs::metadata(dir.path().join("identity")).unwrap().mode() & 0o777, 0o711);

        let web = pod("web-0", "shop", "web");
        let path = tokens.mint(&web, at(0)).unwrap();
        assert_eq!(path, dir.path().join("identity/web-0.token"));
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(first.starts_with("weft-bootstrap.") && first.len() == "weft-bootstrap.".len() + 64, "{first}");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.mode() & 0o777, meta.uid(), meta.gid()), (0o600, uid, uid));

        // A restart: a new token in the same place; both hashes are listed.
        let second = std::fs::read_to_string(tokens.mint(&web, at(1)).unwrap()).unwrap();
        assert_ne!(first, second);
        let text = std::fs::read_to_string(tokens.file()).unwrap();
        assert!(!text.contains(&first) && !text.contains(&second), "a token leaked into the file:\n{text}");
        assert_eq!(std::fs::metadata(tokens.file()).unwrap().mode() & 0o777, 0o600);
        let parsed = parse_tokens(&text, "cluster.local").expect("the control plane accepts the file");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].identity.to_string(), "spiffe://cluster.local/ns/shop/sa/web");
        assert_eq!(parsed[0].workload, "web-0");
        assert_eq!(parsed[0].expires, at(600));
        assert_eq!(tokens.entries()[1].sha256, token_sha256(&second));
        assert!(!dir.path().join("identity/web-0.token.tmp").exists());
    }

    #[test]
    fn expired_entries_are_pruned_when_the_file_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let tokens = Tokens::new(dir.path().join("t.yaml"), dir.path().join("id"), uid, Duration::from_secs(60));
        tokens.create().unwrap();
        tokens.mint(&pod("a-0", "default", "a"), at(0)).unwrap();
        tokens.mint(&pod("b-0", "default", "b"), at(30)).unwrap();
        assert_eq!(tokens.entries().len(), 2);
        // a-0's expired at 60; b-0's lives until 90.
        tokens.mint(&pod("c-0", "default", "c"), at(60)).unwrap();
        let workloads: Vec<String> = tokens.entries().into_iter().map(|e| e.workload).collect();
        assert_eq!(workloads, ["b-0", "c-0"]);
        let text = std::fs::read_to_string(tokens.file()).unwrap();
        let parsed = parse_tokens(&text, "cluster.local").unwrap();
        assert_eq!(parsed.iter().map(|t| t.workload.as_str()).collect::<Vec<_>>(), ["b-0", "c-0"]);
        assert!(text.contains("expires: 2023-11-14T22:14:50Z"), "RFC 3339, UTC:\n{text}");
        assert!(text.contains("serviceAccount: c"), "{text}");
    }

    #[test]
    fn secrets_replace_whatever_was_there() {
        let dir = tempfile::tempdir().unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let path = dir.path().join("s");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        // A leftover temporary file from a crash, with loose permissions.
        std::fs::write(dir.path().join("s.tmp"), "junk").unwrap();
        write_secret(&path, b"new", uid).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }

    #[tokio::test]
    async fn anchors_are_copied_once_the_ca_wrote_them() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        let to = dir.path().join("anchors.pem");
        let e = copy_anchors(&ca, &to, Duration::from_millis(100)).await.unwrap_err();
        assert!(e.to_string().contains("did not write its CA certificate"), "{e}");

        std::fs::create_dir(&ca).unwrap();
        let writer = {
            let ca = ca.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                std::fs::write(ca.join("ca.crt"), "-----BEGIN CERTIFICATE-----\n").unwrap();
            })
        };
        copy_anchors(&ca, &to, Duration::from_secs(5)).await.unwrap();
        writer.await.unwrap();
        assert_eq!(std::fs::read_to_string(&to).unwrap(), "-----BEGIN CERTIFICATE-----\n");
        assert_eq!(std::fs::metadata(&to).unwrap().mode() & 0o777, 0o644);
    }
}
