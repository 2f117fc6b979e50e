//! The cluster CA and node certificates (rcgen), and the rustls/quinn configurations built on them.
//!
//! Every node certificate carries two DNS names: `node-N.stoa.cluster`, which peers check so one node
//! cannot pose as another, and `stoa.cluster`, which clients (who do not know node ids) check.

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use stoa_proto::{node_server_name, NodeId, ALPN_CLIENT, ALPN_PEER, CLUSTER_SERVER_NAME};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no usable {what}: {reason}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Config(String),
}

/// PEM texts of a freshly made CA and its node certificates.
pub struct GeneratedCerts {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    /// (node, certificate PEM, key PEM)
    pub nodes: Vec<(NodeId, String, String)>,
}

/// Make a new cluster CA and a certificate for each node.
pub fn generate(nodes: &[NodeId]) -> Result<GeneratedCerts, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Stoa cluster CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    let mut out = Vec::new();
    for &node in nodes {
        let mut p = CertificateParams::new(vec![
            node_server_name(node),
            CLUSTER_SERVER_NAME.to_string(),
        ])?;
        p.distinguished_name
            .push(DnType::CommonName, format!("stoa node {node}"));
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &ca, &ca_key)?;
        out.push((node, cert.pem(), key.serialize_pem()));
    }
    Ok(GeneratedCerts {
        ca_cert_pem: ca.pem(),
        ca_key_pem: ca_key.serialize_pem(),
        nodes: out,
    })
}

/// File names used by `stoa-node certs` and the dev cluster.
pub fn node_cert_file(node: NodeId) -> String {
    format!("node-{}.pem", node.0)
}

pub fn node_key_file(node: NodeId) -> String {
    format!("node-{}.key", node.0)
}

/// Write a CA and node certificates into `dir` (ca.pem, ca.key, node-N.pem, node-N.key).
pub fn write_generated(dir: &Path, certs: &GeneratedCerts) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| TlsError::Write { path, source })
    };
    write("ca.pem", &certs.ca_cert_pem)?;
    write("ca.key", &certs.ca_key_pem)?;
    for (node, cert, key) in &certs.nodes {
        write(&node_cert_file(*node), cert)?;
        write(&node_key_file(*node), key)?;
    }
    Ok(())
}

/// What a node needs to speak TLS: the CA to trust and its own certificate and key.
pub struct NodeTls {
    pub ca: Vec<CertificateDer<'static>>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for NodeTls {
    fn clone(&self) -> Self {
        NodeTls {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl NodeTls {
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<NodeTls, TlsError> {
        Ok(NodeTls {
            ca: read_certs(ca)?,
            chain: read_certs(cert)?,
            key: read_key(key)?,
        })
    }

    pub fn from_pem(ca: &str, cert: &str, key: &str) -> Result<NodeTls, TlsError> {
        let p = PathBuf::from("<memory>");
        let certs = |text: &str, what| {
            CertificateDer::pem_slice_iter(text.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::Pem {
                    path: p.clone(),
                    what,
                    reason: e.to_string(),
                })
        };
        Ok(NodeTls {
            ca: certs(ca, "CA certificate")?,
            chain: certs(cert, "certificate")?,
            key: PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| TlsError::Pem {
                path: p.clone(),
                what: "private key",
                reason: e.to_string(),
            })?,
        })
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        for c in &self.ca {
            roots
                .add(c.clone())
                .map_err(|e| TlsError::Config(format!("CA certificate: {e}")))?;
        }
        Ok(roots)
    }

    /// The endpoint's server side: both ALPNs; a client certificate is optional for clients and
    /// required (checked in [`peer_node_id`]) for peers.
    pub fn server_config(&self, idle_timeout: Duration) -> Result<quinn::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        cfg.alpn_protocols = vec![ALPN_CLIENT.to_vec(), ALPN_PEER.to_vec()];
        let crypto =
            QuicServerConfig::try_from(cfg).map_err(|e| TlsError::Config(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        // Whoever connects starts with a client's one stream; the accept loop raises the limit
        // once the connection has proved to be a peer.
        server.transport_config(Arc::new(transport(idle_timeout, CLIENT_STREAMS_MAX)));
        Ok(server)
    }

    /// The endpoint's client side, used to dial peers with this node's certificate. Peer links
    /// use their own short idle timeout, so a dead peer's connection is noticed and dropped in
    /// seconds whatever the client timeout is.
    pub fn peer_client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let idle_timeout = PEER_IDLE_TIMEOUT;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        cfg.alpn_protocols = vec![ALPN_PEER.to_vec()];
        let crypto =
            QuicClientConfig::try_from(cfg).map_err(|e| TlsError::Config(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        // The node a peer link dials only answers on streams the dialer opens.
        client.transport_config(Arc::new(transport(idle_timeout, 0)));
        Ok(client)
    }
}

/// Idle timeout of node-to-node connections (keep-alives every third of it).
pub const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Streams a client may have open: it uses one. Quinn keeps state for every stream the other
/// side may open from the start (about 64 bytes each, 1024 of them were two thirds of a client
/// connection's memory), and each may buffer up to its flow-control window.
pub const CLIENT_STREAMS_MAX: u32 = 1;
/// Streams a peer may have open at once: one per RPC in flight.
pub const PEER_STREAMS_MAX: u32 = 1024;

/// Packets the other side of a connection may receive before it must acknowledge.
const ACK_AFTER_PACKETS: u32 = 16;
/// How long the other side of a connection may delay an acknowledgement.
const ACK_DELAY_MAX: Duration = Duration::from_millis(50);

fn transport(idle_timeout: Duration, streams: u32) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(quinn::IdleTimeout::try_from(idle_timeout).ok());
    t.keep_alive_interval(Some(idle_timeout / 3));
    t.max_concurrent_bidi_streams(streams.into());
    t.max_concurrent_uni_streams(0u32.into());
    // Ask the other side to acknowledge after 16 packets or 50 ms rather than every second
    // packet (QUIC's ACK-frequency extension; peers that lack it ignore the request). A node
    // mostly sends: fan-out to clients is one packet per connection per entry, and each
    // acknowledgement costs a packet, a syscall and a decryption on both ends. At W1 saturation
    // clients sent half as many packets and the cluster took about 5 % more posts
    // (docs/BENCHMARKS.md). Loss of the last packet of a burst is detected up to 50 ms later.
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(ACK_AFTER_PACKETS.into())
        .max_ack_delay(Some(ACK_DELAY_MAX));
    t.ack_frequency_config(Some(acks));
    t
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: "certificate",
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "certificate",
            reason: "none found".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: "private key",
        reason: e.to_string(),
    })
}

/// Which of `candidates` the peer's (already CA-verified) certificate names, if any.
pub fn peer_node_id(
    conn: &quinn::Connection,
    candidates: impl IntoIterator<Item = NodeId>,
) -> Option<NodeId> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let leaf = webpki::EndEntityCert::try_from(certs.first()?).ok()?;
    candidates.into_iter().find(|&id| {
        ServerName::try_from(node_server_name(id))
            .map(|name| leaf.verify_is_valid_for_subject_name(&name).is_ok())
            .unwrap_or(false)
    })
}

/// The ALPN the connection negotiated.
pub fn alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    let data = conn.handshake_data()?;
    let data = data
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?;
    data.protocol
}
