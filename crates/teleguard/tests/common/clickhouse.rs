//! A real ClickHouse server for tests: a minimal config on free loopback ports, its data in a
//! folder the test gives it (recipe: ../shared/SERVICES.md's ClickHouse 18.16 notes).

use super::{client, free_port, installed_or_skip, wait_for_within};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn clickhouse_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("clickhouse-server")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path.into_iter().chain([PathBuf::from("/usr/sbin/clickhouse-server")]).find(|path| path.is_file())
}

/// The server binary, or `None` (test skipped) when it is not installed outside CI.
pub fn clickhouse_or_skip(test: &str) -> Option<PathBuf> {
    installed_or_skip(clickhouse_binary(), test, "clickhouse-server", "clickhouse-server")
}

/// A ClickHouse server with a minimal config and its data in a temporary folder.
pub struct ClickHouse {
    pub binary: PathBuf,
    pub dir: PathBuf,
    pub http_port: u16,
    pub child: Option<Child>,
}

impl ClickHouse {
    pub fn new(binary: PathBuf, dir: &Path) -> ClickHouse {
        std::fs::create_dir_all(dir).unwrap();
        let (http_port, tcp_port) = (free_port(), free_port());
        let d = dir.display();
        let config = format!(
            "<yandex>\n<logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog></logger>\n\
             <listen_host>127.0.0.1</listen_host><http_port>{http_port}</http_port><tcp_port>{tcp_port}</tcp_port>\n\
             <path>{d}/data/</path><tmp_path>{d}/tmp/</tmp_path><user_files_path>{d}/user_files/</user_files_path>\n\
             <users_config>{d}/users.xml</users_config><default_profile>default</default_profile>\n\
             <default_database>default</default_database><timezone>UTC</timezone>\n\
             <mark_cache_size>536870912</mark_cache_size>\n</yandex>\n"
        );
        std::fs::write(dir.join("config.xml"), config).unwrap();
        let users = "<yandex><profiles><default></default></profiles><users><default><password></password>\
                     <networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile>\
                     <quota>default</quota></default></users><quotas><default></default></quotas></yandex>\n";
        std::fs::write(dir.join("users.xml"), users).unwrap();
        ClickHouse { binary, dir: dir.to_path_buf(), http_port, child: None }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub async fn start(&mut self) {
        let child = Command::new(&self.binary)
            .arg(format!("--config-file={}", self.dir.join("config.xml").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start clickhouse-server");
        self.child = Some(child);
        let ping = format!("{}/ping", self.url());
        let http = client();
        wait_for_within("clickhouse-server to answer /ping", Duration::from_secs(60), || async {
            http.get(&ping).send().await.ok().filter(|r| r.status().is_success()).map(drop)
        })
        .await;
    }

    /// SIGTERM, waiting until it has exited.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "clickhouse-server did not stop within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub async fn query(&self, sql: &str) -> String {
        let response = client().post(self.url()).body(sql.to_string()).send().await.expect("query ClickHouse");
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{sql}: {status}: {text}");
        text
    }

    pub async fn number(&self, sql: &str) -> i64 {
        let text = self.query(sql).await;
        text.trim().parse().unwrap_or_else(|e| panic!("{sql}: {text:?}: {e}"))
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
