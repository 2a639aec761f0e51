//! A real PostgreSQL server for tests: a new cluster in a temporary folder on a loopback port
//! (recipe: ../shared/SERVICES.md's PostgreSQL 15 notes).

use super::installed_or_skip;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The folder with Debian's `initdb` and `pg_ctl`, newest version first.
pub fn postgres_binaries() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

/// The binaries, or `None` (test skipped) when PostgreSQL is not installed outside CI.
pub fn postgres_or_skip(test: &str) -> Option<PathBuf> {
    installed_or_skip(postgres_binaries(), test, "PostgreSQL", "postgresql")
}

pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A PostgreSQL server with its data in a temporary folder. initdb refuses root, so as root
/// the folder belongs to `postgres` and the server runs as that user.
pub struct Postgres {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub port: u16,
    _folder: tempfile::TempDir,
}

impl Postgres {
    /// A new cluster in a temporary folder of its own (the server user must own the folder).
    pub fn new(bin: PathBuf, port: u16) -> Postgres {
        let folder = tempfile::tempdir().unwrap();
        let postgres = Postgres { bin, dir: folder.path().to_path_buf(), port, _folder: folder };
        if is_root() {
            run(Command::new("chown").args(["-R", "postgres"]).arg(&postgres.dir));
        }
        let data = postgres.dir.join("data");
        run(postgres.as_server_user("initdb").arg("-D").arg(&data).args(["-A", "trust", "-U", "postgres"]));
        postgres
    }

    pub fn as_server_user(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        match is_root() {
            true => {
                let mut command = Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(path);
                command
            }
            false => Command::new(path),
        }
    }

    pub fn start(&self) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.display());
        run(self
            .as_server_user("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-o", &options, "-l"])
            .arg(self.dir.join("log"))
            .args(["-w", "start"]));
    }

    pub fn stop(&self) {
        run(self.as_server_user("pg_ctl").arg("-D").arg(self.dir.join("data")).args(["-m", "fast", "-w", "stop"]));
    }

    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/teleguard", self.port)
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(connection);
        client
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.client().await.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
    }

    /// [`Postgres::count`], or `None` while the database or table does not exist yet.
    pub async fn count_if_there(&self, sql: &str) -> Option<i64> {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls).await.ok()?;
        tokio::spawn(connection);
        client.query_one(sql, &[]).await.ok().map(|row| row.get(0))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .as_server_user("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
