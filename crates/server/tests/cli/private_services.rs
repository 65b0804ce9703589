//! A Redis and a PostgreSQL of one test's own, in a temporary directory on a free port, so
//! that a test can stop and restart them without touching the machine's shared servers
//! (other tests use those in parallel). Both are stopped and removed on drop.
//!
//! PostgreSQL's `initdb` refuses to run as root: as root, the cluster belongs to the
//! `postgres` user and its commands run through `runuser`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::support::{free_port, path_str};

/// A missing server binary fails the test in CI and skips it (with a notice) elsewhere.
fn missing(what: &str) -> Option<std::convert::Infallible> {
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is not installed but CI is set"
    );
    eprintln!("notice: {what} not found, skipping a test that needs a private one");
    None
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

pub struct PrivateRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    /// Starts `redis-server` on a free port and waits until it answers PING.
    pub async fn start() -> Option<PrivateRedis> {
        if !on_path("redis-server") {
            match missing("redis-server")? {}
        }
        let mut redis = PrivateRedis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.restart().await;
        Some(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts it on the same port, empty (nothing is saved).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", &path_str(self.dir.path())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..200 {
            if self.pings() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "the private redis-server on port {} never answered",
            self.port
        );
    }

    /// Kills it at once, as a crash or a network cut would look to its clients.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: its connections stay open but nothing answers, as in a network partition.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`Self::freeze`].
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    fn pings(&self) -> bool {
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct PrivatePostgres {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    sockets: PathBuf,
    log: PathBuf,
    as_postgres: bool,
    running: bool,
    // Last, so the directory goes after the server is stopped.
    dir: tempfile::TempDir,
}

impl PrivatePostgres {
    /// `initdb` a fresh cluster (trust authentication, superuser `postgres`) and start it
    /// on 127.0.0.1 and a free port.
    pub async fn start() -> Option<PrivatePostgres> {
        let Some(bin) = postgres_bin() else {
            match missing("PostgreSQL (/usr/lib/postgresql/<version>/bin)")? {}
        };
        let as_postgres = is_root();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let sockets = dir.path().join("sockets");
        std::fs::create_dir_all(&sockets).unwrap();
        if as_postgres {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres", &path_str(dir.path())])
                .status()
                .unwrap();
            assert!(status.success(), "chown of the private cluster's directory");
        }
        let mut pg = PrivatePostgres {
            port: free_port(),
            bin,
            log: dir.path().join("postgres.log"),
            data,
            sockets,
            as_postgres,
            running: false,
            dir,
        };
        let data = path_str(&pg.data);
        pg.command(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )
        .await;
        pg.restart().await;
        Some(pg)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// (Re)starts the cluster on its port and waits until it accepts connections.
    pub async fn restart(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            path_str(&self.sockets)
        );
        let (data, log) = (path_str(&self.data), path_str(&self.log));
        self.command(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
            ],
        )
        .await;
        self.running = true;
    }

    /// `pg_ctl stop -m fast`: sessions are ended and the port closes.
    pub async fn stop(&mut self) {
        let data = path_str(&self.data);
        self.command(
            "pg_ctl",
            &["-D", &data, "-w", "-t", "60", "-m", "fast", "stop"],
        )
        .await;
        self.running = false;
    }

    async fn command(&self, program: &str, args: &[&str]) {
        let program = path_str(&self.bin.join(program));
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &program]);
            c
        } else {
            Command::new(&program)
        };
        // Output goes to files, not pipes: the server started by `pg_ctl` would otherwise
        // hold the pipes open after `pg_ctl` exits.
        let out_path = self.dir.path().join("command.out");
        let out = std::fs::File::create(&out_path).unwrap();
        let status = tokio::time::timeout(
            Duration::from_secs(90),
            cmd.args(args)
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .kill_on_drop(true)
                .status(),
        )
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish"))
        .unwrap();
        assert!(
            status.success(),
            "{program} {args:?}: {status}\n{}\n{}",
            std::fs::read_to_string(&out_path).unwrap_or_default(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        let program = path_str(&self.bin.join("pg_ctl"));
        let data = path_str(&self.data);
        let args = ["-D", data.as_str(), "-w", "-m", "immediate", "stop"];
        let mut cmd = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", &program]);
            c
        } else {
            std::process::Command::new(&program)
        };
        let _ = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb` and `pg_ctl`.
fn postgres_bin() -> Option<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    // No libc among the dev-dependencies: the owner of `/proc/self` is our effective uid.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
