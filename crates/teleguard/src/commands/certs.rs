//! `teleguard certs`: a development CA, a broker certificate and per-device client
//! certificates for MQTT over mutual TLS (the common name is the device's identity).

use anyhow::{Context as _, bail};
use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Folder for the files: ca.crt/ca.key (kept and reused when present), server.crt/.key,
    /// and NAME.crt/NAME.key per --client.
    #[arg(long, value_name = "DIR", default_value = "certs")]
    out: PathBuf,
    /// Names the broker's certificate is valid for (DNS names or IP addresses).
    #[arg(long = "server-name", value_name = "NAME", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    server_names: Vec<String>,
    /// A client certificate with this common name, e.g. a device id or `teleguard` (repeatable).
    #[arg(long = "client", value_name = "NAME")]
    clients: Vec<String>,
    /// Validity of the new certificates, in days.
    #[arg(long, value_name = "N", default_value_t = 365)]
    days: u32,
}

/// The CA's subject; with the CA's key it is all that signing needs, so a CA made by an
/// earlier run is reused from its key file.
const CA_NAME: &str = "teleguard development CA";

pub fn certs(args: CertsArgs) -> anyhow::Result<()> {
    if args.days == 0 {
        bail!("--days must be at least 1");
    }
    for name in &args.clients {
        if name.is_empty() || name.contains(['/', '+', '#']) || name.starts_with('.') {
            bail!("--client {name:?}: a client name is one MQTT topic level (no /, + or #) and not a path");
        }
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create folder {}", args.out.display()))?;
    let (ca_params, ca_key) = certificate_authority(&args.out, args.days)?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let mut server = leaf_params(args.server_names.clone(), "teleguard MQTT broker", args.days)?;
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    write_signed(&args.out, "server", &server, &issuer)?;
    for name in &args.clients {
        let mut client = leaf_params(Vec::new(), name, args.days)?;
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        write_signed(&args.out, name, &client, &issuer)?;
    }
    println!(
        "certificates in {}: ca.crt, server.crt ({}){}",
        args.out.display(),
        args.server_names.join(", "),
        args.clients.iter().map(|c| format!(", {c}.crt")).collect::<String>()
    );
    Ok(())
}

/// The CA of `dir`: its key is read if present, else a new CA is made and written.
fn certificate_authority(dir: &Path, days: u32) -> anyhow::Result<(CertificateParams, KeyPair)> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key_path = dir.join("ca.key");
    if key_path.exists() && dir.join("ca.crt").exists() {
        let pem = std::fs::read_to_string(&key_path).with_context(|| format!("cannot read {}", key_path.display()))?;
        let key = KeyPair::from_pem(&pem).with_context(|| {
            format!("{} is not a PEM private key; move it away to make a new CA", key_path.display())
        })?;
        return Ok((params, key));
    }
    set_validity(&mut params, days.max(3650));
    let key = KeyPair::generate()?;
    let certificate = params.self_signed(&key)?;
    write(dir, "ca.crt", &certificate.pem())?;
    write(dir, "ca.key", &key.serialize_pem())?;
    Ok((params, key))
}

fn leaf_params(names: Vec<String>, common_name: &str, days: u32) -> anyhow::Result<CertificateParams> {
    let mut params =
        CertificateParams::new(names).context("a --server-name is neither a DNS name nor an IP address")?;
    params.distinguished_name = distinguished_name(common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, days);
    Ok(params)
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(now_secs());
    params.not_before = now - std::time::Duration::from_secs(3600);
    params.not_after = now + std::time::Duration::from_secs(u64::from(days) * 86_400);
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn write_signed(
    dir: &Path,
    name: &str,
    params: &CertificateParams,
    issuer: &Issuer<'_, &KeyPair>,
) -> anyhow::Result<()> {
    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, issuer)?;
    write(dir, &format!("{name}.crt"), &certificate.pem())?;
    write(dir, &format!("{name}.key"), &key.serialize_pem())
}

fn write(dir: &Path, file: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    if file.ends_with(".key") {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make {} private", path.display()))?;
    }
    Ok(())
}
