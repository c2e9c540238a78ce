//! The injector's serving certificate, swapped without a restart.
//!
//! ```text
//!  Secret weft-injector-tls (--tls-secret: watched) ─┐
//!  --cert / --key files (read every 5 s)  ───────────┴─► load: the chain parses, the key is the
//!                                                           leaf's, the leaf is valid now
//!                                                        ├─ good: ServingCert.set ─► every new handshake
//!                                                        └─ bad:  logged; the last good one stays
//! ```
//!
//! The Secret is what the control plane (or cert-manager) writes: `tls.crt`
//! (the leaf, then its chain), `tls.key` (PKCS#8, SEC1 or PKCS#1 PEM);
//! `ca.crt` is not read here (the webhook's caBundle carries it).
//!
//! Until a certificate is loaded, [`ServingCert`] hands out a self-signed
//! placeholder, so that `GET /ready` can answer 503 and say why instead of
//! failing the handshake; nothing trusts the placeholder, so the API server
//! refuses it exactly as it would refuse no answer. Connections made
//! under an older certificate are closed gracefully when a new one is
//! served (`server.rs`: HTTP/2 GOAWAY, requests in flight finish), so
//! clients such as the API server, which keep their connections for long,
//! shake hands again with the new certificate.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer as _, X509Certificate};

pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
/// How often `--cert`/`--key` are read again. The kubelet swaps a mounted
/// Secret's files in one rename, so a read never sees half an update.
pub const FILE_POLL: Duration = Duration::from_secs(5);

/// The placeholder could not be made (the system's randomness failed).
#[derive(Debug, thiserror::Error)]
#[error("cannot make the placeholder certificate: {0}")]
pub struct PlaceholderError(String);

/// Why a certificate was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{TLS_CRT}: {0}")]
    Chain(String),
    #[error("{TLS_KEY}: {0}")]
    Key(String),
    #[error("{TLS_KEY} does not belong to the certificate in {TLS_CRT} ({0})")]
    Mismatch(rustls::Error),
    #[error("the certificate (serial {serial}) is not valid before {not_before}")]
    NotYetValid { serial: String, not_before: String },
    #[error("the certificate (serial {serial}) expired at {not_after}")]
    Expired { serial: String, not_after: String },
}

/// A certificate that passed [`load`].
#[derive(Debug)]
pub struct Loaded {
    key: Arc<CertifiedKey>,
    /// Upper-case hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    pub not_after: SystemTime,
}

impl Loaded {
    fn leaf(&self) -> &[u8] {
        self.key.cert.first().map_or(&[], |c| c.as_ref())
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn from_unix(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(s) => SystemTime::UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

/// Checks a chain and its key and makes them servable: the chain parses
/// (leaf first), the key is the leaf's, and the leaf is valid at `now`.
pub fn load(chain_pem: &[u8], key_pem: &[u8], now: SystemTime) -> Result<Loaded, LoadError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError::Chain(format!("not a PEM certificate chain ({e})")))?;
    let Some(leaf) = chain.first() else {
        return Err(LoadError::Chain("no `-----BEGIN CERTIFICATE-----` block found".into()));
    };
    let (not_before, not_after, serial) = match X509Certificate::from_der(leaf) {
        Ok((_, c)) => (
            from_unix(c.validity().not_before.timestamp()),
            from_unix(c.validity().not_after.timestamp()),
            c.raw_serial().iter().map(|b| format!("{b:02X}")).collect::<String>(),
        ),
        Err(e) => return Err(LoadError::Chain(format!("the first certificate does not parse ({e})"))),
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| LoadError::Key(format!("no private key ({e})")))?;
    let provider = rustls::crypto::ring::default_provider();
    let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => LoadError::Mismatch(e),
        e => LoadError::Key(format!("unusable key ({e})")),
    })?;
    if now < not_before {
        return Err(LoadError::NotYetValid { serial, not_before: rfc3339(not_before) });
    }
    if now >= not_after {
        return Err(LoadError::Expired { serial, not_after: rfc3339(not_after) });
    }
    Ok(Loaded { key: Arc::new(key), serial, not_after })
}

/// The certificate served to each new handshake.
#[derive(Debug)]
pub struct ServingCert {
    current: RwLock<Option<Arc<Loaded>>>,
    placeholder: Arc<CertifiedKey>,
    /// Where certificates come from, for `/ready` and logs.
    source: String,
    /// Bumped at each new certificate: connections follow it to close.
    generation: tokio::sync::watch::Sender<u64>,
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().map_or_else(|| self.placeholder.clone(), |c| c.key.clone()))
    }
}

impl ServingCert {
    /// Nothing loaded yet: the placeholder is served. `source` names where
    /// certificates come from (`Secret weft-system/weft-injector-tls`).
    pub fn new(source: String) -> Result<Arc<Self>, PlaceholderError> {
        let fail = |e: &dyn std::fmt::Display| PlaceholderError(e.to_string());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| fail(&e))?;
        let params = rcgen::CertificateParams::new(vec!["weft-injector-placeholder.invalid".to_owned()])
            .map_err(|e| fail(&e))?;
        let cert = params.self_signed(&key).map_err(|e| fail(&e))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = rustls::crypto::ring::default_provider();
        let placeholder = CertifiedKey::from_der(vec![cert.der().clone()], der, &provider).map_err(|e| fail(&e))?;
        Ok(Arc::new(Self {
            current: RwLock::new(None),
            placeholder: Arc::new(placeholder),
            source,
            generation: tokio::sync::watch::Sender::new(0),
        }))
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes whenever a new certificate is served.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Serves `next` from now on; false if it is the certificate served
    /// already (nothing changes).
    pub fn set(&self, next: Loaded) -> bool {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|c| c.leaf() == next.leaf()) {
            return false;
        }
        *current = Some(Arc::new(next));
        drop(current);
        self.generation.send_modify(|g| *g += 1);
        true
    }

    /// `Ok` when a certificate valid at `now` is served; else why not.
    pub fn readiness(&self, now: SystemTime) -> Result<(), String> {
        match self.current() {
            None => Err(format!("no serving certificate yet: waiting for {} (tls.crt, tls.key)", self.source)),
            Some(c) if now >= c.not_after => Err(format!(
                "the serving certificate (serial {}) expired at {}; nothing newer came from {}",
                c.serial,
                rfc3339(c.not_after),
                self.source
            )),
            Some(_) => Ok(()),
        }
    }

    /// Loads `chain_pem` and `key_pem` and serves them if they are good;
    /// else logs why and keeps what is served.
    pub fn offer(&self, chain_pem: &[u8], key_pem: &[u8]) {
        match load(chain_pem, key_pem, SystemTime::now()) {
            Ok(next) => {
                let (serial, not_after) = (next.serial.clone(), rfc3339(next.not_after));
                if self.set(next) {
                    tracing::info!(source = %self.source, %serial, %not_after, "serving a new certificate");
                }
            }
            Err(e) => self.refuse(&e.to_string()),
        }
    }

    fn refuse(&self, why: &str) {
        match self.current() {
            Some(c) => tracing::warn!(
                source = %self.source,
                error = %why,
                serial = %c.serial,
                "refused a new serving certificate; still serving the current one"
            ),
            None => tracing::warn!(source = %self.source, error = %why, "refused the serving certificate; not ready"),
        }
    }
}

/// TLS 1.2 and 1.3 (the API server speaks both), ALPN h2 and http/1.1,
/// the certificate from `cert` at each handshake.
pub fn server_config(cert: Arc<ServingCert>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Follows Secret `namespace/name` until the task is dropped: each version
/// that holds a good certificate is served. The watch lists and watches
/// with `metadata.name=NAME`, which RBAC authorizes against
/// `resourceNames` (the injector may read this one Secret only).
pub async fn follow_secret(client: kube::Client, namespace: String, name: String, cert: Arc<ServingCert>) {
    let api: kube::Api<Secret> = kube::Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher::watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut listed = false;
    let mut failing = false;
    while let Some(event) = stream.next().await {
        let secret = match event {
            Ok(Event::Init) => {
                listed = false;
                continue;
            }
            Ok(Event::InitDone) => {
                if !listed && cert.current().is_none() {
                    tracing::info!(source = %cert.source(), "the Secret does not exist yet; waiting for it");
                }
                continue;
            }
            Ok(Event::Delete(_)) => {
                tracing::warn!(source = %cert.source(), "the Secret was deleted; still serving the current certificate");
                continue;
            }
            Ok(Event::InitApply(s)) => {
                listed = true;
                s
            }
            Ok(Event::Apply(s)) => s,
            Err(e) => {
                if !failing {
                    tracing::warn!(source = %cert.source(), error = %e, "watch failed; retrying with backoff, serving the current certificate");
                }
                failing = true;
                continue;
            }
        };
        if failing {
            tracing::info!(source = %cert.source(), "watch recovered");
            failing = false;
        }
        let data = secret.data.unwrap_or_default();
        match (data.get(TLS_CRT), data.get(TLS_KEY)) {
            (Some(crt), Some(key)) => cert.offer(&crt.0, &key.0),
            _ => cert.refuse(&format!("the Secret has no {TLS_CRT} or no {TLS_KEY}")),
        }
    }
    tracing::error!(source = %cert.source(), "the Secret's watch ended; the certificate is no longer renewed");
}

/// Reads `cert_path` and `key_path` every [`FILE_POLL`] until the task is
/// dropped, and serves what they hold when it changes and is good.
pub async fn follow_files(cert_path: std::path::PathBuf, key_path: std::path::PathBuf, cert: Arc<ServingCert>) {
    let mut last: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut tick = tokio::time::interval(FILE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Two small files every few seconds: a blocking read is cheaper
        // than a trip to the blocking pool.
        let read = (std::fs::read(&cert_path), std::fs::read(&key_path));
        let (crt, key) = match read {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) => {
                cert.refuse(&format!("cannot read {}: {e}", cert_path.display()));
                continue;
            }
            (_, Err(e)) => {
                cert.refuse(&format!("cannot read {}: {e}", key_path.display()));
                continue;
            }
        };
        if last.as_ref().is_some_and(|(c, k)| *c == crt && *k == key) {
            continue;
        }
        cert.offer(&crt, &key);
        last = Some((crt, key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate for 127.0.0.1, valid from `from` for `secs`: (chain, key) PEM.
    fn cert(from: SystemTime, secs: u64) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        params.not_before = from.into();
        params.not_after = (from + Duration::from_secs(secs)).into();
        (params.self_signed(&key).expect("cert").pem(), key.serialize_pem())
    }

    #[test]
    fn what_is_loaded() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (crt, key) = cert(now - Duration::from_secs(60), 3600);
        let (other_crt, other_key) = cert(now - Duration::from_secs(60), 3600);
        let (old_crt, old_key) = cert(now - Duration::from_secs(7200), 3600);
        let (new_crt, new_key) = cert(now + Duration::from_secs(600), 3600);
        let sec1 = {
            // The same key as SEC1 (`BEGIN EC PRIVATE KEY`), as cert-manager
            // writes ECDSA keys by default: accepted.
            let out = std::process::Command::new("openssl")
                .args(["ec", "-outform", "PEM"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write as _;
                    child.stdin.take().expect("stdin").write_all(key.as_bytes())?;
                    child.wait_with_output()
                })
                .expect("openssl ec (apt-get install -y openssl)");
            String::from_utf8(out.stdout).expect("PEM")
        };
        assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"), "{sec1}");
        let both = format!("{crt}{key}");
        let rows: Vec<(&str, &str, &str, Result<(), &str>)> = vec![
            ("good", &crt, &key, Ok(())),
            ("SEC1 key", &crt, &sec1, Ok(())),
            ("chain and key in one file", &crt, &both, Ok(())),
            ("not PEM", "junk", &key, Err("tls.crt: no `-----BEGIN CERTIFICATE-----` block found")),
            ("no key", &crt, "", Err("tls.key: no private key")),
            ("another key", &crt, &other_key, Err("tls.key does not belong to the certificate in tls.crt")),
            ("expired", &old_crt, &old_key, Err("expired at 2027-01-15T07:00:00Z")),
            ("not yet valid", &new_crt, &new_key, Err("is not valid before 2027-01-15T08:10:00Z")),
            ("another chain", &other_crt, &key, Err("does not belong")),
        ];
        for (what, crt, key, want) in rows {
            match (load(crt.as_bytes(), key.as_bytes(), now), want) {
                (Ok(l), Ok(())) => assert_eq!(l.serial.len() % 2, 0, "{what}: hex bytes"),
                (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{what}: {e}"),
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_bad_certificate_keeps_the_last_good_one() {
        let now = SystemTime::now();
        let served = ServingCert::new("Secret weft-system/weft-injector-tls".into()).expect("placeholder");
        let e = served.readiness(now).expect_err("nothing loaded");
        assert_eq!(
            e,
            "no serving certificate yet: waiting for Secret weft-system/weft-injector-tls (tls.crt, tls.key)"
        );
        let placeholder = served.resolve_current();
        assert!(placeholder.is_some(), "the placeholder is served meanwhile");

        let mut changes = served.changes();
        let (crt, key) = cert(now - Duration::from_secs(60), 3600);
        served.offer(crt.as_bytes(), key.as_bytes());
        served.readiness(now).expect("ready");
        assert!(changes.has_changed().expect("open"), "connections are told");
        changes.borrow_and_update();
        let first = served.current().expect("loaded").serial.clone();
        assert!(!served.set(load(crt.as_bytes(), key.as_bytes(), now).expect("same")), "the same leaf changes nothing");

        let (_, other_key) = cert(now, 3600);
        served.offer(crt.as_bytes(), other_key.as_bytes());
        served.offer(b"junk", key.as_bytes());
        assert_eq!(served.current().expect("kept").serial, first, "refused rewrites keep the last good one");
        assert!(!changes.has_changed().expect("open"), "nothing new: connections stay");

        let (crt2, key2) = cert(now - Duration::from_secs(60), 3600);
        served.offer(crt2.as_bytes(), key2.as_bytes());
        let second = served.current().expect("swapped").serial.clone();
        assert_ne!(second, first, "a good rewrite is served");
        assert_eq!(served.resolve_current().map(|k| k.cert[0].to_vec()), Some(pem_der(&crt2)));

        let e = served.readiness(now + Duration::from_secs(7200)).expect_err("expired");
        assert!(e.starts_with(&format!("the serving certificate (serial {second}) expired at")), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn files_are_read_again_when_they_change() {
        let dir = std::env::temp_dir().join(format!("weft-injector-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory");
        let (crt_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
        let write = |crt: &str, key: &str| {
            std::fs::write(&crt_path, crt).expect("tls.crt");
            std::fs::write(&key_path, key).expect("tls.key");
        };
        let now = SystemTime::now();
        let (a, a_key) = cert(now - Duration::from_secs(60), 3600);
        let (b, b_key) = cert(now - Duration::from_secs(60), 3600);
        write(&a, &a_key);
        let served = ServingCert::new("files".into()).expect("placeholder");
        let task = tokio::spawn(follow_files(crt_path.clone(), key_path.clone(), served.clone()));
        // Waits (in paused time) up to three polls for `want` to be served.
        let serves = |want: String| {
            let served = served.clone();
            async move {
                for _ in 0..3 {
                    tokio::time::sleep(FILE_POLL).await;
                    if served.resolve_current().map(|k| k.cert[0].to_vec()) == Some(pem_der(&want)) {
                        return true;
                    }
                }
                false
            }
        };
        assert!(serves(a.clone()).await, "the first certificate");
        write(&b, &b_key);
        assert!(serves(b.clone()).await, "a rewrite is served");
        write("junk", &b_key);
        assert!(serves(b.clone()).await, "a bad rewrite keeps the last good one");
        write(&a, &a_key);
        assert!(serves(a).await, "and a good one after it is served");
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        CertificateDer::pem_slice_iter(pem.as_bytes()).next().expect("one").expect("PEM").to_vec()
    }

    impl ServingCert {
        /// What a handshake gets now.
        fn resolve_current(&self) -> Option<Arc<CertifiedKey>> {
            Some(self.current().map_or_else(|| self.placeholder.clone(), |c| c.key.clone()))
        }
    }
}
