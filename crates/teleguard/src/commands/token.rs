//! `teleguard token`: make a bearer token for HTTP ingest and the config entry that grants it,
//! or hash a token that exists; the config only ever holds the hash.

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use std::io::Read as _;
use std::path::PathBuf;
use teleguard_pipeline::auth::{RawToken, Tokens, new_token, token_hash_hex};
use teleguard_pipeline::config::{Config, Overrides};

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a new random token (once: it is stored nowhere) and the `[[server.tokens]]` entry,
    /// holding only its hash, to paste into the config.
    New(NewArgs),
    /// Read a token on standard input and print its SHA-256, as the config's `sha256` holds it.
    Hash,
}

#[derive(Debug, Args)]
struct NewArgs {
    /// The token's name, shown in logs, metrics and dead letters (letters, digits, - _ .).
    #[arg(long, value_name = "NAME")]
    name: String,
    /// Profiles the token may send to, comma-separated; every profile when left out.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    profiles: Option<Vec<String>>,
    /// Only entities whose id starts with this.
    #[arg(long, value_name = "PREFIX")]
    entity_prefix: Option<String>,
    /// The TOML config file whose profiles --profiles may name (built-in profiles otherwise).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub fn token(args: TokenArgs) -> anyhow::Result<()> {
    match args.command {
        TokenCommand::New(args) => print_new(args),
        TokenCommand::Hash => print_hash(),
    }
}

fn print_new(args: NewArgs) -> anyhow::Result<()> {
    let overrides = Overrides { simulate: Some("none".into()), ..Default::default() };
    let config = Config::load(args.config.as_deref(), overrides)?;
    let token = new_token().map_err(|_| anyhow::anyhow!("the operating system's random generator failed"))?;
    let raw = RawToken {
        name: args.name,
        sha256: token_hash_hex(&token),
        profiles: args.profiles.map(|list| list.into_iter().map(|p| p.trim().to_string()).collect()),
        entity_prefix: args.entity_prefix,
    };
    let mut errors = Vec::new();
    Tokens::validate(vec![raw.clone()], Some(&config.profiles), &mut errors);
    if !errors.is_empty() {
        bail!("cannot make this token:\n  {}", errors.join("\n  "));
    }
    println!("# The token for {:?}; it is shown only now, give it to the client that sends with it:", raw.name);
    println!("{token}");
    println!();
    println!("# Add this to the config file (it holds only the token's hash), then restart teleguard:");
    println!("[[server.tokens]]");
    println!("name = {}", toml_string(&raw.name));
    println!("sha256 = {}", toml_string(&raw.sha256));
    if let Some(profiles) = &raw.profiles {
        let list: Vec<String> = profiles.iter().map(|p| toml_string(p)).collect();
        println!("profiles = [{}]", list.join(", "));
    }
    if let Some(prefix) = &raw.entity_prefix {
        println!("entity_prefix = {}", toml_string(prefix));
    }
    Ok(())
}

fn print_hash() -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).context("cannot read the token from standard input")?;
    let token = input.trim();
    if token.is_empty() {
        bail!("no token on standard input: pipe one in, e.g. `printf %s \"$TOKEN\" | teleguard token hash`");
    }
    if token.contains(char::is_whitespace) {
        bail!("standard input holds more than one word; a token is one (send only the token)");
    }
    println!("{}", token_hash_hex(token));
    Ok(())
}

/// A TOML basic string: JSON's string escapes are all valid in TOML.
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}
